//! The PCA reconstruction error against NannyML's `DataReconstructionDriftCalculator` on
//! a slice of NannyML's own synthetic car-loan data (tests/fixtures/reconstruction.json,
//! written by tests/fixtures/make_reconstruction_fixtures.py with NannyML 0.13.1): the same
//! number of components, each chunk's value to 1e-9 relative, the same thresholds and
//! the same alerts.

use std::path::PathBuf;

use driftline_drift::multivariate::{self, Reconstructor};
use driftline_schemas::events::{FeatureKind, FeatureValue};
use serde_json::Value;

struct Data {
    columns: Vec<(String, FeatureKind)>,
    reference: Vec<Vec<FeatureValue>>,
    analysis: Vec<Vec<FeatureValue>>,
    fixture: Value,
}

fn data() -> Data {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reconstruction.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let fixture: Value = serde_json::from_str(&text).unwrap();
    let cols = fixture["columns"].as_object().unwrap();
    let columns: Vec<(String, FeatureKind)> = cols
        .iter()
        .map(|(name, c)| {
            let kind = match c["kind"].as_str().unwrap() {
                "numeric" => FeatureKind::Numeric,
                _ => FeatureKind::Categorical,
            };
            (name.clone(), kind)
        })
        .collect();
    let rows = |period: &str| -> Vec<Vec<FeatureValue>> {
        let series: Vec<&Vec<Value>> = columns
            .iter()
            .map(|(name, _)| cols[name][period].as_array().unwrap())
            .collect();
        (0..series[0].len())
            .map(|i| {
                series
                    .iter()
                    .map(|s| match &s[i] {
                        Value::Null => FeatureValue::Missing,
                        Value::String(l) => FeatureValue::Category(l.clone()),
                        v => FeatureValue::Number(v.as_f64().unwrap()),
                    })
                    .collect()
            })
            .collect()
    };
    Data {
        reference: rows("reference"),
        analysis: rows("analysis"),
        columns,
        fixture,
    }
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs()
}

fn chunk_means(rec: &Reconstructor, rows: &[Vec<FeatureValue>], size: usize) -> Vec<f64> {
    let mut scratch = Vec::new();
    let errors: Vec<f64> = rows
        .iter()
        .map(|r| rec.error(&mut scratch, |j| Some(&r[j])))
        .collect();
    errors
        .chunks(size)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect()
}

fn values(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_f64().unwrap())
        .collect()
}

#[test]
fn reconstruction_error_per_chunk_matches_nannyml_on_its_car_loan_data() {
    let d = data();
    let kinds: Vec<(&str, FeatureKind)> = d.columns.iter().map(|(n, k)| (n.as_str(), *k)).collect();
    let r = multivariate::fit(&kinds, d.reference.len(), |i, j| &d.reference[i][j]).unwrap();
    assert_eq!(
        r.components.len() as u64,
        d.fixture["n_components"].as_u64().unwrap()
    );
    let explained = d.fixture["explained_variance"].as_f64().unwrap();
    assert!(
        close(r.explained_variance, explained),
        "{} vs NannyML {explained}",
        r.explained_variance
    );
    let rec = Reconstructor::new(&r);
    let size = d.fixture["chunk_size"].as_u64().unwrap() as usize;
    for (period, rows) in [("reference", &d.reference), ("analysis", &d.analysis)] {
        let got = chunk_means(&rec, rows, size);
        let want = values(&d.fixture[format!("{period}_chunks")]);
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(close(*g, *w), "{period} chunk {i}: {g} vs NannyML {w}");
        }
    }
}

#[test]
fn thresholds_and_alerts_match_nannyml() {
    let d = data();
    let kinds: Vec<(&str, FeatureKind)> = d.columns.iter().map(|(n, k)| (n.as_str(), *k)).collect();
    let r = multivariate::fit(&kinds, d.reference.len(), |i, j| &d.reference[i][j]).unwrap();
    let rec = Reconstructor::new(&r);
    let size = d.fixture["chunk_size"].as_u64().unwrap() as usize;
    let (lower, upper) = multivariate::three_sigma(&chunk_means(&rec, &d.reference, size));
    let want = (
        d.fixture["lower_threshold"].as_f64().unwrap(),
        d.fixture["upper_threshold"].as_f64().unwrap(),
    );
    assert!(
        close(lower, want.0) && close(upper, want.1),
        "{:?} vs NannyML {want:?}",
        (lower, upper)
    );
    let alerts: Vec<bool> = chunk_means(&rec, &d.analysis, size)
        .iter()
        .map(|v| !(lower < *v && *v < upper))
        .collect();
    let want: Vec<bool> = d.fixture["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_bool().unwrap())
        .collect();
    assert_eq!(alerts, want);
    assert!(
        alerts.iter().any(|a| *a) && !alerts[0],
        "the slice holds the change"
    );
}

#[test]
fn a_whole_data_set_checked_at_once_has_nannymls_chunk_value() {
    // `driftline drift` checks a whole file as one chunk: each analysis chunk checked alone
    // gives NannyML's value for it.
    let d = data();
    let kinds: Vec<(&str, FeatureKind)> = d.columns.iter().map(|(n, k)| (n.as_str(), *k)).collect();
    let r = multivariate::fit(&kinds, d.reference.len(), |i, j| &d.reference[i][j]).unwrap();
    let size = d.fixture["chunk_size"].as_u64().unwrap() as usize;
    let want = values(&d.fixture["analysis_chunks"]);
    for (i, (chunk, w)) in d.analysis.chunks(size).zip(&want).enumerate() {
        let c = multivariate::check(&r, chunk.len(), |row, j| Some(&chunk[row][j]), None, 1)
            .expect("a null curve from the reference");
        assert!(
            close(c.signal.value, *w),
            "chunk {i}: {} vs NannyML {w}",
            c.signal.value
        );
        let shares: f64 = c.carried_by.iter().map(|(_, s)| s).sum();
        assert!((shares - 1.0).abs() < 1e-9, "{:?}", c.carried_by);
    }
}
