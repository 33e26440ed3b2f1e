//! Imported models give onnxruntime's answers: the scikit-learn pipeline (one-hot, scaling,
//! gradient boosting: the custom TreeEnsembleRegressor, Scaler and OneHotEncoder) and the
//! LightGBM classifier (tract's TreeEnsembleClassifier) on the 10,000 rows of
//! tests/fixtures/onnx/rows.csv.gz, whose expected columns onnxruntime wrote
//! (tests/fixtures/onnx/make_fixtures.py).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use driftline_dataset::rows::RowMapper;
use driftline_onnx::OnnxModel;
use driftline_schemas::events::Features;
use driftline_schemas::spec::FeatureSpec;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../tests/fixtures/onnx")
        .join(name)
}

/// Each row's features by `spec`, and its `expected` columns as onnxruntime wrote them.
fn rows(spec: &FeatureSpec, expected: &[&str]) -> Result<Vec<(Features, Vec<String>)>> {
    let mut reader = driftline_dataset::csv_reader(&fixture("rows.csv.gz"))?;
    let header = reader.headers()?.clone();
    let mapper = RowMapper::new(spec, &header).map_err(|m| anyhow::anyhow!("missing {m:?}"))?;
    let columns: Vec<usize> = expected
        .iter()
        .map(|c| {
            header
                .iter()
                .position(|h| h == *c)
                .context("no such column")
        })
        .collect::<Result<_>>()?;
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record?;
        let t = mapper.event_time(&record).map_err(anyhow::Error::msg)?;
        let mapped = mapper.map(&record, t, 0).map_err(anyhow::Error::msg)?;
        let values = columns.iter().map(|i| record[*i].to_string()).collect();
        out.push((mapped.request.features, values));
    }
    Ok(out)
}

/// Within 1e-5 relative, of at least 1: below 1 (small probabilities, a regression near
/// 0) float32 rounding dominates. onnxruntime sums float32 leaves and approximates the
/// logistic: the same trees summed in float32 or float64 with an exact logistic (NumPy)
/// differ from it by up to 3.7e-5 relative on probabilities under 0.01, about 1e-7
/// absolute.
fn close(ours: f64, theirs: f64) -> bool {
    (ours - theirs).abs() <= 1e-5 * theirs.abs().max(1.0)
}

#[test]
fn a_scikit_learn_pipeline_predicts_what_onnxruntime_predicts_on_every_row() -> Result<()> {
    let spec = FeatureSpec::load(&fixture("flights-gbr.toml"))?;
    let model = OnnxModel::load(&std::fs::read(fixture("flights-gbr.onnx"))?, &spec)?;
    let rows = rows(&spec, &["gbr"])?;
    ensure!(rows.len() == 10_000, "{} rows", rows.len());
    let features: Vec<&Features> = rows.iter().map(|(f, _)| f).collect();
    let predicted = model.predict_batch(&features)?;
    let mut worst = 0f64;
    for ((_, expected), p) in rows.iter().zip(&predicted) {
        let (ours, theirs) = (p.value.context("no value")?, expected[0].parse::<f64>()?);
        ensure!(close(ours, theirs), "ours {ours} vs onnxruntime {theirs}");
        worst = worst.max((ours - theirs).abs() / theirs.abs().max(1.0));
    }
    // One row at a time too, as single requests are served.
    for (f, expected) in rows.iter().take(100) {
        let p = model.predict_batch(&[f])?;
        let theirs: f64 = expected[0].parse()?;
        ensure!(close(p[0].value.unwrap_or(f64::NAN), theirs));
    }
    println!("largest difference from onnxruntime, relative: {worst:e}");
    Ok(())
}

#[test]
fn a_lightgbm_classifier_gives_onnxruntime_labels_and_probabilities_on_every_row() -> Result<()> {
    let spec = FeatureSpec::load(&fixture("flights-lgbm.toml"))?;
    let model = OnnxModel::load(&std::fs::read(fixture("flights-lgbm.onnx"))?, &spec)?;
    let rows = rows(&spec, &["lgbm_label", "lgbm_p1"])?;
    let features: Vec<&Features> = rows.iter().map(|(f, _)| f).collect();
    let predicted = model.predict_batch(&features)?;
    ensure!(predicted.len() == 10_000);
    for ((_, expected), p) in rows.iter().zip(&predicted) {
        ensure!(
            p.class.as_deref() == Some(expected[0].as_str()),
            "{p:?} vs {expected:?}"
        );
        let (ours, theirs) = (p.probabilities["1"], expected[1].parse::<f64>()?);
        ensure!(
            close(ours, theirs),
            "p(1) ours {ours} vs onnxruntime {theirs}"
        );
        ensure!((p.probabilities["0"] + ours - 1.0).abs() < 1e-6);
    }
    Ok(())
}

#[test]
fn a_model_whose_inputs_do_not_fit_the_spec_is_a_clear_error() -> Result<()> {
    // The pipeline's string input `carrier` read as a numeric feature.
    let text = std::fs::read_to_string(fixture("flights-gbr.toml"))?.replace(
        "name = \"carrier\"\nkind = \"categorical\"",
        "name = \"carrier\"\nkind = \"numeric\"",
    );
    let spec = FeatureSpec::from_toml(&text)?;
    let err = OnnxModel::load(&std::fs::read(fixture("flights-gbr.onnx"))?, &spec).unwrap_err();
    ensure!(
        err.to_string().contains("input `carrier` is a string"),
        "{err}"
    );
    // The classifier's one input takes the spec's features in order: all numeric.
    let text = std::fs::read_to_string(fixture("flights-lgbm.toml"))?.replace(
        "name = \"hour\"\nkind = \"numeric\"",
        "name = \"hour\"\nkind = \"categorical\"",
    );
    let spec = FeatureSpec::from_toml(&text)?;
    let err = OnnxModel::load(&std::fs::read(fixture("flights-lgbm.onnx"))?, &spec).unwrap_err();
    ensure!(err.to_string().contains("`hour` is not numeric"), "{err}");
    Ok(())
}
