//! Prediction time of the imported fixture models (tests/fixtures/onnx), driftline's tract
//! plan beside onnxruntime in the same run: a 10,000-row batch (µs a row) and single rows
//! one call at a time (the median of 1,000 calls), as the predictor serves them.
//!
//! ONNX_PYTHON=<venv>/bin/python cargo bench --profile dev -p driftline-onnx --bench predict
//!
//! The peer is benches/onnxruntime_predict.py (`pip install onnxruntime numpy pandas`); without
//! ONNX_PYTHON only driftline's figures are printed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use driftline_dataset::rows::RowMapper;
use driftline_onnx::OnnxModel;
use driftline_schemas::events::Features;
use driftline_schemas::spec::FeatureSpec;

const SINGLE_CALLS: usize = 1_000;
const BATCH_REPS: usize = 5;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../tests/fixtures/onnx")
        .join(name)
}

fn rows(spec: &FeatureSpec) -> Result<Vec<Features>> {
    let mut reader = driftline_dataset::csv_reader(&fixture("rows.csv.gz"))?;
    let header = reader.headers()?.clone();
    let mapper = RowMapper::new(spec, &header).map_err(|m| anyhow::anyhow!("missing {m:?}"))?;
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record?;
        let t = mapper.event_time(&record).map_err(anyhow::Error::msg)?;
        out.push(
            mapper
                .map(&record, t, 0)
                .map_err(anyhow::Error::msg)?
                .request
                .features,
        );
    }
    Ok(out)
}

/// (µs a row over the whole batch, best of `BATCH_REPS`; median µs of one single-row call).
fn time(model: &OnnxModel, rows: &[Features]) -> Result<(f64, f64)> {
    let all: Vec<&Features> = rows.iter().collect();
    let mut best = f64::INFINITY;
    for _ in 0..BATCH_REPS {
        let t = Instant::now();
        let p = model.predict_batch(&all)?;
        best = best.min(t.elapsed().as_secs_f64());
        assert_eq!(p.len(), all.len());
    }
    let mut single: Vec<f64> = Vec::with_capacity(SINGLE_CALLS);
    for row in all.iter().cycle().take(SINGLE_CALLS) {
        let t = Instant::now();
        model.predict_batch(&[*row])?;
        single.push(t.elapsed().as_secs_f64());
    }
    single.sort_by(f64::total_cmp);
    Ok((
        best * 1e6 / all.len() as f64,
        single[SINGLE_CALLS / 2] * 1e6,
    ))
}

fn main() -> Result<()> {
    let mut ours = Vec::new();
    for name in ["flights-gbr", "flights-lgbm"] {
        let spec = FeatureSpec::load(&fixture(&format!("{name}.toml")))?;
        let model = OnnxModel::load(&std::fs::read(fixture(&format!("{name}.onnx")))?, &spec)?;
        let rows = rows(&spec)?;
        let (batch, single) = time(&model, &rows)?;
        ours.push((name, rows.len(), batch, single));
    }
    let peer = match std::env::var("ONNX_PYTHON") {
        Ok(python) => {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/onnxruntime_predict.py");
            let out = Command::new(&python)
                .arg(&script)
                .arg(fixture(""))
                .arg(SINGLE_CALLS.to_string())
                .arg(BATCH_REPS.to_string())
                .output()
                .with_context(|| format!("running {python}"))?;
            if !out.status.success() {
                bail!("{}", String::from_utf8_lossy(&out.stderr));
            }
            // Lines: `<model> <batch µs a row> <single µs>`.
            let text = String::from_utf8(out.stdout)?;
            let mut peer = Vec::new();
            for line in text.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if let [name, batch, single] = f[..] {
                    peer.push((
                        name.to_string(),
                        batch.parse::<f64>()?,
                        single.parse::<f64>()?,
                    ));
                } else {
                    println!("{line}");
                }
            }
            Some(peer)
        }
        Err(_) => {
            println!("(set ONNX_PYTHON to a python with onnxruntime to run the comparison)");
            None
        }
    };
    println!(
        "| model | rows | driftline batch (µs/row) | onnxruntime batch (µs/row) | driftline 1-row call (µs) | onnxruntime 1-row call (µs) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, n, batch, single) in ours {
        let theirs = peer
            .as_ref()
            .and_then(|p| p.iter().find(|(m, ..)| m == name))
            .map(|(_, b, s)| (format!("{b:.2}"), format!("{s:.1}")))
            .unwrap_or_else(|| ("-".into(), "-".into()));
        println!(
            "| {name} | {n} | {batch:.2} | {} | {single:.1} | {} |",
            theirs.0, theirs.1
        );
    }
    Ok(())
}
