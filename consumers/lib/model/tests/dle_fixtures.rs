//! DLE's mean-absolute-error estimate against NannyML 0.13.1 on its car-price data
//! (tests/fixtures/dle.json, written by tests/fixtures/make_dle_fixtures.py). NannyML's error
//! model is LightGBM, ours forust's boosted trees: the estimates can agree only within their
//! sampling error, so each chunk's estimate must be within one sampling error of NannyML's,
//! follow the data set's change as NannyML's does, and miss the realised value by no more.

use std::collections::BTreeMap;
use std::path::PathBuf;

use driftline_model::{Encoder, EncoderOptions, ErrorModel};
use driftline_schemas::events::{FeatureValue, Features};
use driftline_schemas::spec::FeatureSpec;
use serde_json::Value;

fn fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dle.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// The rows of one side of the fixture: features, prediction, truth.
fn rows(side: &Value, numeric: &[String], categorical: &[String]) -> Vec<(Features, f64, f64)> {
    let column = |c: &str| side[c].as_array().unwrap().clone();
    let (pred, truth) = (column("y_pred"), column("y_true"));
    (0..pred.len())
        .map(|i| {
            let mut f: Features = BTreeMap::new();
            for c in numeric {
                f.insert(
                    c.clone(),
                    FeatureValue::Number(side[c][i].as_f64().unwrap()),
                );
            }
            for c in categorical {
                let v = side[c][i].as_str().unwrap().to_string();
                f.insert(c.clone(), FeatureValue::Category(v));
            }
            (f, pred[i].as_f64().unwrap(), truth[i].as_f64().unwrap())
        })
        .collect()
}

fn spec(numeric: &[String], categorical: &[String]) -> FeatureSpec {
    let mut toml = String::from(
        "[dataset]\nname = \"car_price\"\ntime_column = \"timestamp\"\n\
         [model]\nname = \"car_price\"\nalgorithm = \"linear\"\n\
         [target]\ncolumn = \"y_true\"\nkind = \"regression\"\n",
    );
    for (kind, cols) in [("numeric", numeric), ("categorical", categorical)] {
        for c in cols {
            toml.push_str(&format!(
                "[[features]]\nname = \"{c}\"\nkind = \"{kind}\"\n"
            ));
        }
    }
    FeatureSpec::from_toml(&toml).unwrap()
}

#[test]
fn estimated_mae_agrees_with_nannyml_dle_within_a_sampling_error() {
    let f = fixture();
    let (numeric, categorical) = (names(&f["numeric"]), names(&f["categorical"]));
    let reference = rows(&f["reference"], &numeric, &categorical);
    let analysis = rows(&f["analysis"], &numeric, &categorical);
    let features: Vec<&Features> = reference.iter().map(|r| &r.0).collect();
    let (encoder, _) = Encoder::fit_transform(
        &spec(&numeric, &categorical),
        &features,
        EncoderOptions::default(),
    )
    .unwrap();
    let fitted: Vec<(&Features, f64, f64)> =
        reference.iter().map(|(f, p, y)| (f, *p, *y)).collect();
    let model = ErrorModel::fit(&encoder, &fitted).unwrap();
    // What the monitor loads is what was fitted.
    let model = ErrorModel::from_bytes(&model.to_bytes()).unwrap();

    let size = f["chunk_size"].as_u64().unwrap() as usize;
    let chunks = f["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), analysis.len() / size);
    let (mut ours_gap, mut theirs_gap) = (0.0, 0.0);
    let mut ours = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let rows = &analysis[i * size..(i + 1) * size];
        let estimated = rows
            .iter()
            .map(|(f, p, _)| model.expected_error(f, *p))
            .sum::<f64>()
            / size as f64;
        let realised = rows.iter().map(|(_, p, y)| (y - p).abs()).sum::<f64>() / size as f64;
        let want = |k: &str| chunk[k].as_f64().unwrap();
        assert!(
            (realised - want("realised")).abs() < 1e-9,
            "chunk {i}: realised {realised}"
        );
        // A third of NannyML's band: one sampling error of its estimate.
        let sampling_error = (want("upper") - want("lower")) / 6.0;
        assert!(
            (estimated - want("estimated")).abs() <= sampling_error,
            "chunk {i}: estimated {estimated:.1}, NannyML {:.1} ± {sampling_error:.1}",
            want("estimated")
        );
        eprintln!(
            "chunk {i}: ours {estimated:.1}, NannyML {:.1}, realised {realised:.1}",
            want("estimated")
        );
        ours_gap += (estimated - realised).abs();
        theirs_gap += (want("estimated") - realised).abs();
        ours.push(estimated);
    }
    let n = chunks.len() as f64;
    let (ours_gap, theirs_gap) = (ours_gap / n, theirs_gap / n);
    eprintln!("mean gap to the realised MAE: ours {ours_gap:.1}, NannyML {theirs_gap:.1}");
    // Within one sampling error of a chunk (error_sd / √size) of NannyML's own miss.
    let sampling_error = f["error_sd"].as_f64().unwrap() / (size as f64).sqrt();
    assert!(
        ours_gap <= theirs_gap + sampling_error,
        "mean gap {ours_gap:.1} vs NannyML's {theirs_gap:.1}"
    );
    // The change at row 30,000 (chunk 5): the estimate falls with the realised error.
    let before = ours[..5].iter().sum::<f64>() / 5.0;
    let after = ours[5..].iter().sum::<f64>() / 5.0;
    assert!(
        before - after > 3.0 * sampling_error,
        "estimate {before:.1} before the change, {after:.1} after"
    );
}
