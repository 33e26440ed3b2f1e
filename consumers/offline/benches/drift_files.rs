//! Wall time of `driftline drift` (the [`drift`] function the subcommand calls) on two
//! CSV files, best of N runs: reading and parsing both files, every statistic, the report.
//!
//! `cargo bench -p driftline-offline --bench drift_files -- REF.csv CUR.csv [SPEC.toml] [RUNS]`;
//! `benches/offline.py` times Evidently and a SciPy loop on the same files.

use std::path::PathBuf;
use std::time::Instant;

use driftline_monitor::cli::Thresholds;
use driftline_offline::drift::{DriftArgs, DriftFormat, drift};

/// `BENCH_THRESHOLDS=fixed` for the fixed lines (the command's default is calibrated,
/// which with a spec also reads each file's values in order for the reference's lines).
fn thresholds() -> Thresholds {
    match std::env::var("BENCH_THRESHOLDS").as_deref() {
        Ok("fixed") => Thresholds::Fixed,
        _ => Thresholds::Calibrated,
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [reference, current, rest @ ..] = args.as_slice() else {
        eprintln!("usage: drift_files REF.csv CUR.csv [SPEC.toml] [RUNS]");
        return;
    };
    let spec = rest
        .first()
        .filter(|s| s.ends_with(".toml"))
        .map(PathBuf::from);
    let runs: usize = rest.iter().find_map(|s| s.parse().ok()).unwrap_or(10);
    let args = DriftArgs {
        reference: reference.into(),
        current: current.into(),
        spec,
        binning: Default::default(),
        thresholds: thresholds(),
        format: DriftFormat::Json,
    };
    let mut best = f64::INFINITY;
    let mut out = String::new();
    for _ in 0..runs {
        let t = Instant::now();
        out = drift(&args).expect("drift");
        best = best.min(t.elapsed().as_secs_f64());
    }
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let columns = v["columns"].as_object().map_or(0, |c| c.len());
    println!(
        "driftline drift: {columns} columns, best of {runs}: {:.1} ms",
        best * 1_000.0
    );
}
