//! ADWIN, Page-Hinkley and DDM against River's own verdicts on the same streams
//! (tests/fixtures/river.json, written by tests/fixtures/make_river_fixtures.py with River
//! 0.26.1). Verdicts must match index for index; ADWIN's window bookkeeping (width, sum,
//! squared deviations, mean) must match at every checkpoint to 1e-9 relative.

use std::path::PathBuf;

use driftline_drift::concept::{
    Adwin, AdwinParams, Ddm, DdmParams, PageHinkley, PageHinkleyParams, Signal,
};
use serde_json::Value;

fn fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/river.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Each case of one detector: its label, its settings as River took them, its stream
/// and the case itself.
fn cases(detector: &str) -> Vec<(String, Value, Vec<f64>, Value)> {
    let f = fixture();
    let out: Vec<_> = f["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["detector"] == detector)
        .map(|c| {
            let name = c["stream"].as_str().unwrap();
            let stream = f["streams"][name]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            (
                format!("{name} {}", c["params"]),
                c["params"].clone(),
                stream,
                c.clone(),
            )
        })
        .collect();
    assert!(!out.is_empty(), "no {detector} cases");
    out
}

fn indices(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn close(got: f64, want: f64) -> bool {
    got == want || (got - want).abs() <= 1e-9 * want.abs().max(1e-300)
}

#[test]
fn adwin_cuts_where_river_cuts_and_keeps_the_same_window() {
    let mut detections = 0;
    for (label, params, stream, case) in cases("adwin") {
        let params: AdwinParams = serde_json::from_value(params).unwrap();
        let mut a = Adwin::new(params);
        let mut drifts = Vec::new();
        let mut points = case["checkpoints"].as_array().unwrap().iter().peekable();
        for (i, x) in stream.iter().enumerate() {
            if a.update(*x) {
                drifts.push(i);
            }
            if points
                .peek()
                .is_some_and(|p| p[0].as_u64() == Some(i as u64))
            {
                let p = points.next().unwrap();
                let want: Vec<f64> = (1..5).map(|j| p[j].as_f64().unwrap()).collect();
                let got = [a.width(), a.total(), a.variance(), a.estimation()];
                assert!(
                    got.iter().zip(&want).all(|(g, w)| close(*g, *w)),
                    "{label} at {i}: width, total, variance, mean {got:?}, River {want:?}"
                );
            }
        }
        assert_eq!(drifts, indices(&case["drifts"]), "{label}");
        detections += drifts.len();
    }
    assert!(detections > 10, "the fixtures exercise cuts: {detections}");
}

#[test]
fn page_hinkley_signals_where_river_does() {
    for (label, params, stream, case) in cases("page_hinkley") {
        let params: PageHinkleyParams = serde_json::from_value(params).unwrap();
        let mut ph = PageHinkley::new(params);
        let drifts: Vec<usize> = stream
            .iter()
            .enumerate()
            .filter_map(|(i, x)| ph.update(*x).then_some(i))
            .collect();
        assert_eq!(drifts, indices(&case["drifts"]), "{label}");
    }
}

#[test]
fn ddm_warns_and_signals_where_river_does() {
    for (label, params, stream, case) in cases("ddm") {
        let params: DdmParams = serde_json::from_value(params).unwrap();
        let mut d = Ddm::new(params);
        let (mut drifts, mut warnings) = (Vec::new(), Vec::new());
        for (i, x) in stream.iter().enumerate() {
            match d.update(*x != 0.0) {
                Signal::Drift => drifts.push(i),
                Signal::Warning => warnings.push(i),
                Signal::Stable => {}
            }
        }
        assert_eq!(drifts, indices(&case["drifts"]), "{label}");
        assert_eq!(warnings, indices(&case["warnings"]), "{label}");
    }
}
