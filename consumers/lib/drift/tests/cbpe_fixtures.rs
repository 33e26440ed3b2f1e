//! CBPE's accuracy estimate against NannyML 0.13.1 on its car-loan data
//! (tests/fixtures/cbpe.json, written by tests/fixtures/make_cbpe_fixtures.py): the isotonic
//! calibration fitted on the reference, read on a grid of probabilities, and each analysis
//! chunk's estimated accuracy, to 1e-12.

use std::path::PathBuf;

use driftline_drift::estimate::{Isotonic, calibration_error, expected_correct, needs_calibration};
use serde_json::Value;

fn fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cbpe.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-12 * want.abs().max(1.0)
}

#[test]
fn calibration_and_estimated_accuracy_match_nannyml_cbpe() {
    let f = fixture();
    assert!(f["needs_calibration"].as_bool().unwrap());
    let reference = &f["reference"];
    let calibration =
        Isotonic::fit(&floats(&reference["proba"]), &floats(&reference["target"])).unwrap();
    for (x, want) in floats(&f["grid"]).iter().zip(floats(&f["calibrated"])) {
        let got = calibration.predict(*x);
        assert!(close(got, want), "calibrated {x}: {got} vs NannyML {want}");
    }
    let analysis = &f["analysis"];
    let (proba, pred, target) = (
        floats(&analysis["proba"]),
        floats(&analysis["pred"]),
        floats(&analysis["target"]),
    );
    let size = f["chunk_size"].as_u64().unwrap() as usize;
    let chunks = f["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), proba.len() / size);
    for (i, chunk) in chunks.iter().enumerate() {
        let rows = i * size..(i + 1) * size;
        let estimated = rows
            .clone()
            .map(|r| expected_correct(pred[r] == 1.0, calibration.predict(proba[r])))
            .sum::<f64>()
            / size as f64;
        let want = chunk["estimated"].as_f64().unwrap();
        assert!(
            close(estimated, want),
            "chunk {i}: {estimated} vs NannyML {want}"
        );
        // And the realised accuracy NannyML reports beside it, from the labels.
        let realized = rows.filter(|r| pred[*r] == target[*r]).count() as f64 / size as f64;
        assert!(close(realized, chunk["realized"].as_f64().unwrap()));
    }
}

#[test]
fn calibration_error_matches_nannyml_and_the_car_loan_scores_need_calibration() {
    let f = fixture();
    let ece = &f["ece"];
    let got = calibration_error(&floats(&ece["target"]), &floats(&ece["proba"]), 10);
    let want = ece["value"].as_f64().unwrap();
    assert!(close(got, want), "{got} vs NannyML {want}");
    // NannyML decided to calibrate its model's scores; the interleaved folds agree.
    let reference = &f["reference"];
    assert!(needs_calibration(
        &floats(&reference["proba"]),
        &floats(&reference["target"])
    ));
}
