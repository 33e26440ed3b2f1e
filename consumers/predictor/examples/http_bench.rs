//! HTTP predict throughput and latency: driftline's predictor against a FastAPI +
//! scikit-learn endpoint serving the same linear model on the same features, in one run,
//! with the same load generator (wrk) on loopback.
//!
//! ```sh
//! apt-get install wrk
//! python3 -m venv ~/.cache/driftline/bench-venv
//! ~/.cache/driftline/bench-venv/bin/pip install fastapi uvicorn scikit-learn pandas numpy
//! bash infra/broker.sh start   # or DRIFTLINE_BOOTSTRAP_SERVERS pointing at a broker
//! cargo run -p driftline-predictor --example http_bench
//! ```
//! Env: BENCH_ROWS (training rows, 50000), BENCH_SECONDS (per run, 15),
//! BENCH_CONNECTIONS (64), PEER_PYTHON (the venv's python).

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use driftline_model::{LabelledRow, Target};
use driftline_predictor::service::run;
use driftline_schemas::events::{FeatureValue, Features};
use driftline_schemas::spec::{FeatureSpec, parse_time};
use tokio_util::sync::CancellationToken;

#[path = "common/mod.rs"]
mod common;

use common::{Bench, BoxError};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load_rows(spec: &FeatureSpec, path: &Path, limit: usize) -> Result<Vec<LabelledRow>, BoxError> {
    let file = std::fs::File::open(path)?;
    let reader: Box<dyn Read> = Box::new(flate2::read::GzDecoder::new(file));
    let mut csv = csv::Reader::from_reader(reader);
    let headers = csv.headers()?.clone();
    let idx = |c: &str| {
        headers
            .iter()
            .position(|h| h == c)
            .ok_or(format!("no column {c}"))
    };
    let time = idx(&spec.dataset.time_column)?;
    let target = idx(&spec.target.column)?;
    let cols: Vec<usize> = spec
        .features
        .iter()
        .map(|f| idx(f.column()))
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    for record in csv.records().take(limit) {
        let record = record?;
        let Ok(y) = record[target].parse::<f64>() else {
            continue;
        };
        let mut features = Features::new();
        for (def, c) in spec.features.iter().zip(&cols) {
            features.insert(def.name.clone(), FeatureSpec::parse_cell(def, &record[*c])?);
        }
        rows.push(LabelledRow {
            event_time: parse_time(&record[time])?,
            features,
            target: Target::Value(y),
        });
    }
    Ok(rows)
}

struct Load {
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: String,
}

/// Runs wrk against `url` with `body`, parses its summary.
fn wrk(url: &str, body: &str, seconds: u64, connections: u32) -> Result<Load, BoxError> {
    let script = std::env::temp_dir().join(format!("driftline-wrk-{}.lua", std::process::id()));
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [[{body}]]\n"
        ),
    )?;
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .map(|l| l.trim().to_string())
    };
    let ms = |s: &str| -> f64 {
        let v = s.split_whitespace().nth(1).unwrap_or("0");
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let x: f64 = num.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => x / 1000.0,
            "ms" => x,
            "s" => x * 1000.0,
            _ => f64::NAN,
        }
    };
    let rps = field("Requests/sec:")
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .ok_or(format!("wrk said: {text}"))?;
    Ok(Load {
        requests_per_s: rps,
        p50_ms: field("50%").map(|l| ms(&l)).unwrap_or(f64::NAN),
        p99_ms: field("99%").map(|l| ms(&l)).unwrap_or(f64::NAN),
        errors: field("Non-2xx")
            .or_else(|| field("Socket errors"))
            .unwrap_or_else(|| "none".into()),
    })
}

async fn wait_for(addr: SocketAddr, path: &str) -> Result<(), BoxError> {
    for _ in 0..600 {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            use std::io::Write;
            let _ = write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200")
                || buf.starts_with("HTTP/1.1 405")
                || buf.starts_with("HTTP/1.1 422")
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("{addr}{path} never answered").into())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let rows_n: usize = env_or("BENCH_ROWS", 50_000);
    let seconds: u64 = env_or("BENCH_SECONDS", 15);
    let connections: u32 = env_or("BENCH_CONNECTIONS", 64);
    let spec_path = repo().join("data/flights.toml");
    let data = repo().join("data/flights.csv.gz");
    let spec = FeatureSpec::load(&spec_path)?;

    // Train and publish the model on a fresh topic.
    let rows = load_rows(&spec, &data, rows_n)?;
    let trained = driftline_model::fit(&spec, &rows)?;
    let bench = Bench::new("bench");
    bench
        .create_topics(&["requests", "predictions", "models", "dlq"])
        .await?;
    bench.publish_v1(&spec, &trained).await?;

    let ours: SocketAddr = "127.0.0.1:18180".parse()?;
    let shutdown = CancellationToken::new();
    let state = tempfile::tempdir()?;
    let service = tokio::spawn(run(
        bench.predictor_args(spec_path.clone(), ours, state.path().to_path_buf(), 1024),
        shutdown.clone(),
        Default::default(),
    ));
    wait_for(ours, "/v2/health/ready").await?;

    // One real row as the request body, the same for both servers.
    let features: serde_json::Map<String, serde_json::Value> = rows[rows.len() / 2]
        .features
        .iter()
        .map(|(k, v)| {
            let j = match v {
                FeatureValue::Missing => serde_json::Value::Null,
                FeatureValue::Number(x) => serde_json::json!(x),
                FeatureValue::Category(c) => serde_json::json!(c),
            };
            (k.clone(), j)
        })
        .collect();
    let body = serde_json::json!({ "features": features }).to_string();

    let python = std::env::var("PEER_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/driftline/bench-venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let peer_addr: SocketAddr = "127.0.0.1:18181".parse()?;
    let mut peer = Command::new(python)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/fastapi_peer.py"))
        .arg("--spec")
        .arg(&spec_path)
        .arg("--data")
        .arg(&data)
        .args([
            "--rows",
            &rows_n.to_string(),
            "--port",
            &peer_addr.port().to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()?;
    wait_for(peer_addr, "/predict").await?;

    // Warm both, then measure both in this run, alternating.
    let _ = wrk(&format!("http://{ours}/predict"), &body, 2, connections)?;
    let _ = wrk(
        &format!("http://{peer_addr}/predict"),
        &body,
        2,
        connections,
    )?;
    let d = wrk(
        &format!("http://{ours}/predict"),
        &body,
        seconds,
        connections,
    )?;
    let p = wrk(
        &format!("http://{peer_addr}/predict"),
        &body,
        seconds,
        connections,
    )?;
    let _ = peer.kill();
    shutdown.cancel();
    let _ = service.await;

    println!(
        "HTTP /predict, one record per request, {connections} connections, {seconds} s each, wrk -t2, loopback"
    );
    println!("| server | requests/s | p50 ms | p99 ms | errors |");
    println!("| --- | ---: | ---: | ---: | --- |");
    println!(
        "| driftline predictor | {:.0} | {:.3} | {:.3} | {} |",
        d.requests_per_s, d.p50_ms, d.p99_ms, d.errors
    );
    println!(
        "| FastAPI + scikit-learn (uvicorn, 1 worker) | {:.0} | {:.3} | {:.3} | {} |",
        p.requests_per_s, p.p50_ms, p.p99_ms, p.errors
    );
    println!(
        "ratio: {:.1}x requests/s",
        d.requests_per_s / p.requests_per_s
    );
    Ok(())
}
