//! Fit time and holdout quality of every algorithm on the flights data, beside
//! scikit-learn's fit of the same model on the same rows in the same run.
//!
//! ```sh
//! python3 -m venv /tmp/model-venv && /tmp/model-venv/bin/pip install numpy pandas scikit-learn
//! SKLEARN_PYTHON=/tmp/model-venv/bin/python cargo bench -p driftline-model --bench fit
//! ```
//!
//! Rows: the first `BENCH_ROWS / 0.8` rows of `data/flights.csv.gz` (the file is sorted by
//! scheduled departure), split by time: the older 80% (`BENCH_ROWS`, default 100,000)
//! train, the newest 20% are the holdout. Without the data file a synthetic set of the
//! same shape (13 features, 5 with missing values, 2 categorical) stands in. Regression
//! models use `data/flights.toml` (arr_delay), classifiers `data/flights-late.toml`.
//! Times are wall-clock seconds of `fit` (encoder included), the best of `BENCH_REPS`
//! (default 3) runs; the forest uses `BENCH_THREADS` threads (default 2), and so does
//! scikit-learn's (`n_jobs`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use driftline_model::{LabelledRow, Target, evaluate, fit_with, split_by_time};
use driftline_schemas::events::{FeatureValue, Features};
use driftline_schemas::spec::{FeatureSpec, TargetKind, parse_time};

struct Case {
    /// The row's name here and in sklearn_fit.py's output.
    label: &'static str,
    algorithm: &'static str,
    spec: &'static str,
    hyper_parameters: Vec<(&'static str, String)>,
}

/// driftline's numbers for one algorithm.
struct Measured {
    fit_seconds: f64,
    metrics: BTreeMap<String, f64>,
    predict_us: f64,
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    let train_rows = env_or("BENCH_ROWS", 100_000);
    let reps = env_or("BENCH_REPS", 3).max(1);
    let threads = env_or("BENCH_THREADS", 2).max(1);
    let total = (train_rows as f64 / 0.8).round() as usize;
    let data_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../data");
    let csv_path = data_dir.join("flights.csv.gz");
    let have_data = csv_path.exists();

    // Fixed hyper-parameters, as the peers get them (no search).
    let boosted = vec![
        ("iterations", "200".to_string()),
        ("learning_rate", "0.1".to_string()),
        ("max_depth", "6".to_string()),
        ("search_seconds", "0".to_string()),
        ("threads", threads.to_string()),
    ];
    let cases = [
        Case {
            label: "linear",
            algorithm: "linear",
            spec: "flights.toml",
            hyper_parameters: vec![],
        },
        Case {
            label: "ridge",
            algorithm: "ridge",
            spec: "flights.toml",
            hyper_parameters: vec![],
        },
        Case {
            label: "lasso",
            algorithm: "lasso",
            spec: "flights.toml",
            hyper_parameters: vec![],
        },
        Case {
            label: "elastic-net",
            algorithm: "elastic-net",
            spec: "flights.toml",
            hyper_parameters: vec![],
        },
        Case {
            label: "logistic",
            algorithm: "logistic",
            spec: "flights-late.toml",
            hyper_parameters: vec![],
        },
        Case {
            label: "random-forest",
            algorithm: "random-forest",
            spec: "flights-late.toml",
            hyper_parameters: vec![("threads", threads.to_string())],
        },
        Case {
            label: "boosted-regression",
            algorithm: "boosted-trees",
            spec: "flights.toml",
            hyper_parameters: boosted.clone(),
        },
        Case {
            label: "boosted-classification",
            algorithm: "boosted-trees",
            spec: "flights-late.toml",
            hyper_parameters: boosted,
        },
        // What the trainer does by default: the time-bounded search, then a refit.
        Case {
            label: "boosted-searched",
            algorithm: "boosted-trees",
            spec: "flights.toml",
            hyper_parameters: vec![("threads", threads.to_string())],
        },
    ];

    let mut specs: BTreeMap<&str, (FeatureSpec, Vec<LabelledRow>, Vec<LabelledRow>)> =
        BTreeMap::new();
    for name in ["flights.toml", "flights-late.toml"] {
        let spec = if have_data {
            FeatureSpec::load(&data_dir.join(name))?
        } else {
            synthetic_spec(name.contains("late"))
        };
        let rows = if have_data {
            load_rows(&csv_path, &spec, total)?
        } else {
            synthetic_rows(&spec, total)
        };
        let (train, holdout) = split_by_time(rows, 0.2);
        specs.insert(name, (spec, train, holdout));
    }
    let (_, train, holdout) = &specs["flights.toml"];
    println!(
        "data: {} ({} train rows, {} holdout rows), best of {reps} fits",
        if have_data {
            csv_path.display().to_string()
        } else {
            "synthetic (data/flights.csv.gz absent)".into()
        },
        train.len(),
        holdout.len()
    );

    let mut ours: BTreeMap<&str, Measured> = BTreeMap::new();
    for case in &cases {
        let (spec, train, holdout) = &specs[case.spec];
        let hp: BTreeMap<String, String> = case
            .hyper_parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let mut best = f64::INFINITY;
        let mut model = None;
        // The search runs for its time budget: once is enough.
        let reps = if case.label == "boosted-searched" {
            1
        } else {
            reps
        };
        for _ in 0..reps {
            let started = Instant::now();
            let m = fit_with(spec, case.algorithm, &hp, train)
                .with_context(|| format!("fitting {}", case.algorithm))?;
            best = best.min(started.elapsed().as_secs_f64());
            model = Some(m);
        }
        let model = model.context("no fit")?;
        let metrics = evaluate(&model, holdout);
        // Per-row prediction, one call per row as the predictor serves a request.
        let started = Instant::now();
        let mut sink = 0.0;
        for r in holdout.iter() {
            let p = model.predict(&r.features);
            sink += p.value.unwrap_or(0.0) + p.probabilities.len() as f64;
        }
        let per_row_us = started.elapsed().as_secs_f64() * 1e6 / holdout.len() as f64;
        std::hint::black_box(sink);
        let bytes = model.to_bytes().len();
        println!(
            "rust    {:<22} fit {:>8.3} s  {}  predict {:>6.2} µs/row  model {} bytes  {:?} {:?}",
            case.label,
            best,
            quality(spec.target.kind, &metrics),
            per_row_us,
            bytes,
            model.hyper_parameters(),
            model.diagnostics()
        );
        ours.insert(
            case.label,
            Measured {
                fit_seconds: best,
                metrics,
                predict_us: per_row_us,
            },
        );
    }

    let Ok(python) = std::env::var("SKLEARN_PYTHON") else {
        println!("(set SKLEARN_PYTHON to a python with scikit-learn to run the comparison)");
        return Ok(());
    };
    if !have_data {
        println!("(scikit-learn comparison needs data/flights.csv.gz)");
        return Ok(());
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/sklearn_fit.py");
    let out = Command::new(&python)
        .arg(&script)
        .args(["--data", &csv_path.display().to_string()])
        .args(["--rows", &total.to_string(), "--reps", &reps.to_string()])
        .args(["--threads", &threads.to_string()])
        .output()
        .with_context(|| format!("running {python} {}", script.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "sklearn_fit.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let theirs: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&out.stdout)
        .with_context(|| {
            format!(
                "sklearn_fit.py output: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
    // One table per peer; sklearn_fit.py names LightGBM's rows `lightgbm-<label>`.
    for (peer, prefix) in [("scikit-learn", ""), ("LightGBM", "lightgbm-")] {
        println!(
            "\n| algorithm | driftline fit (s) | {peer} fit (s) | driftline holdout | {peer} holdout | driftline predict (µs/row) | {peer} predict, one row per call (µs) |"
        );
        println!("| --- | ---: | ---: | --- | --- | ---: | ---: |");
        for case in &cases {
            if let Some(t) = theirs.get(&format!("{prefix}{}", case.label)) {
                let kind = specs[case.spec].0.target.kind;
                println!("{}", table_row(case.label, kind, &ours[case.label], t));
            }
        }
    }
    println!(
        "\nscikit-learn {} (boosted rows beside HistGradientBoosting*), LightGBM {} (rows {}/{})",
        theirs["_meta"]["sklearn"],
        theirs["_meta"]["lightgbm"],
        theirs["_meta"]["train_rows"],
        theirs["_meta"]["holdout_rows"]
    );
    Ok(())
}

/// One line of a comparison table: ours beside one peer's JSON entry.
fn table_row(label: &str, kind: TargetKind, ours: &Measured, theirs: &serde_json::Value) -> String {
    let their_metrics: BTreeMap<String, f64> = theirs["metrics"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "| {label} | {:.3} | {:.3} | {} | {} | {:.2} | {:.0} |",
        ours.fit_seconds,
        theirs["fit_seconds"].as_f64().unwrap_or(f64::NAN),
        quality(kind, &ours.metrics),
        quality(kind, &their_metrics),
        ours.predict_us,
        theirs["predict_one_us"].as_f64().unwrap_or(f64::NAN),
    )
}

fn quality(kind: TargetKind, m: &BTreeMap<String, f64>) -> String {
    let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
    match kind {
        TargetKind::Regression => format!("MAE {:.3} RMSE {:.3}", get("mae"), get("rmse")),
        TargetKind::Classification => format!(
            "accuracy {:.4} log-loss {:.4}",
            get("accuracy"),
            get("log_loss")
        ),
    }
}

fn load_rows(path: &Path, spec: &FeatureSpec, limit: usize) -> Result<Vec<LabelledRow>> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path)?).read_to_string(&mut text)?;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers()?.clone();
    let index = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("no column {name}"))
    };
    let time = index(&spec.dataset.time_column)?;
    let target = index(&spec.target.column)?;
    let columns: Vec<usize> = spec
        .features
        .iter()
        .map(|f| index(f.column()))
        .collect::<Result<_>>()?;
    let mut rows = Vec::with_capacity(limit);
    for record in reader.records().take(limit) {
        let record = record?;
        let mut features = Features::new();
        for (def, &c) in spec.features.iter().zip(&columns) {
            let value = FeatureSpec::parse_cell(def, &record[c]).map_err(anyhow::Error::msg)?;
            features.insert(def.name.clone(), value);
        }
        let cell = &record[target];
        let target = match spec.target.kind {
            TargetKind::Regression => {
                Target::Value(cell.parse().with_context(|| format!("target {cell:?}"))?)
            }
            TargetKind::Classification => Target::Class(cell.to_string()),
        };
        rows.push(LabelledRow {
            event_time: parse_time(&record[time]).map_err(anyhow::Error::msg)?,
            features,
            target,
        });
    }
    Ok(rows)
}

fn synthetic_spec(classification: bool) -> FeatureSpec {
    let mut text = format!(
        "[dataset]\nname = \"synthetic\"\ntime_column = \"t\"\n[model]\nname = \"s\"\nalgorithm = \"linear\"\n\
         [target]\ncolumn = \"y\"\nkind = \"{}\"\n",
        if classification {
            "classification"
        } else {
            "regression"
        }
    );
    for i in 0..11 {
        text += &format!("[[features]]\nname = \"x{i}\"\nkind = \"numeric\"\n");
    }
    text += "[[features]]\nname = \"carrier\"\nkind = \"categorical\"\n[[features]]\nname = \"origin\"\nkind = \"categorical\"\n";
    FeatureSpec::from_toml(&text).expect("synthetic spec")
}

fn synthetic_rows(spec: &FeatureSpec, n: usize) -> Vec<LabelledRow> {
    let mut state = 1u64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|i| {
            let mut features = Features::new();
            let mut y = 0.0;
            for k in 0..11 {
                let x = uniform() * 10.0;
                y += (k as f64 - 5.0) * x;
                let v = if k >= 6 && uniform() < 0.1 {
                    FeatureValue::Missing
                } else {
                    FeatureValue::Number(x)
                };
                features.insert(format!("x{k}"), v);
            }
            let carrier = (uniform() * 16.0) as u32;
            y += carrier as f64;
            features.insert(
                "carrier".into(),
                FeatureValue::Category(format!("C{carrier}")),
            );
            features.insert(
                "origin".into(),
                FeatureValue::Category(format!("O{}", (uniform() * 3.0) as u32)),
            );
            y += 20.0 * (uniform() - 0.5);
            let target = match spec.target.kind {
                TargetKind::Regression => Target::Value(y),
                TargetKind::Classification => Target::Class(if y > 0.0 { "1" } else { "0" }.into()),
            };
            LabelledRow {
                event_time: i as i64,
                features,
                target,
            }
        })
        .collect()
}
