//! `driftline up` twice on the real broker: the first is stopped with Ctrl-C (SIGINT) in the
//! middle of its replay, the second resumes and runs to the end. Every request, every
//! ground truth and every prediction of the replayed rows is then in its topic exactly once.
//!
//! The rows are a slice of data/flights.csv.gz whose ids carry a fresh prefix, so runs
//! against a broker that already holds earlier runs' messages only count their own.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Actual, PredictionLogged, PredictionRequest};
use driftline_schemas::topics;
use driftline_tests::{free_port, kafka, reader_from_start, unique};

use rdkafka::Message;

const FROM: &str = "2013-01-22";
const UNTIL: &str = "2013-01-24";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Rows to replay and how many of them have ground truth.
struct Slice {
    rows: usize,
    with_target: usize,
}

/// January 1-23 of the flights (the bootstrap trains on the first three weeks, the replay
/// sends the last two days, about 1,800 rows), ids prefixed, beside a copy of the spec.
fn write_data(dir: &Path, prefix: &str) -> Result<Slice> {
    let file = std::fs::File::open(repo().join("data/flights.csv.gz"))?;
    let mut lines = BufReader::new(flate2::read::MultiGzDecoder::new(file)).lines();
    let header = lines.next().context("empty data")??;
    let mut out = flate2::write::GzEncoder::new(
        std::fs::File::create(dir.join("flights.csv.gz"))?,
        flate2::Compression::fast(),
    );
    writeln!(out, "{header}")?;
    let mut slice = Slice {
        rows: 0,
        with_target: 0,
    };
    for line in lines {
        let line = line?;
        let cells: Vec<&str> = line.splitn(4, ',').collect();
        let time = cells.get(1).copied().unwrap_or_default();
        if time >= UNTIL {
            break;
        }
        if time >= FROM {
            slice.rows += 1;
            if cells.get(2).is_some_and(|t| !t.is_empty()) {
                slice.with_target += 1;
            }
        }
        writeln!(out, "{prefix}{line}")?;
    }
    out.finish()?;
    std::fs::copy(repo().join("data/flights.toml"), dir.join("flights.toml"))?;
    Ok(slice)
}

fn up(dir: &Path, state: &Path, ports: &[u16; 4]) -> Result<Child> {
    let addr = |p: u16| format!("127.0.0.1:{p}");
    Ok(Command::new(env!("CARGO_BIN_EXE_driftline"))
        .arg("up")
        .args([
            "--no-broker",
            "--bootstrap-servers",
            &kafka().bootstrap_servers,
        ])
        .args(["--spec", &dir.join("flights.toml").display().to_string()])
        .args(["--from", FROM, "--speedup", "8640"])
        .args(["--state-dir", &state.display().to_string()])
        .args(["--http-addr", &addr(ports[0])])
        .args(["--dashboard-addr", &addr(ports[1])])
        .env("DRIFTLINE_MONITOR_HTTP_ADDR", addr(ports[2]))
        .env("DRIFTLINE_TRAINER_HTTP_ADDR", addr(ports[3]))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?)
}

/// The child's stderr, line by line, echoed into the test's output.
fn lines(child: &mut Child) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("  | {line}");
            // The receiver may be gone; keep draining so the child never blocks on a pipe.
            let _ = tx.send(line);
        }
    });
    rx
}

fn wait_for(rx: &Receiver<String>, needle: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Ok(()),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    bail!("`up` never printed {needle:?}")
}

fn exit_within(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            child.kill()?;
            bail!("`up` did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many times each of our request ids is in `topic`: read from the start until
/// `expected` distinct ids were seen (or two minutes pass), then two more seconds.
fn count_ids(
    topic: &str,
    prefix: &str,
    expected: usize,
    id_of: impl Fn(&[u8]) -> Result<String>,
) -> Result<HashMap<String, usize>> {
    let consumer = reader_from_start(topic)?;
    let mut counts: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut settle: Option<Instant> = None;
    loop {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let id = id_of(m?.payload().unwrap_or_default())?;
            if id.contains(prefix) {
                *counts.entry(id).or_default() += 1;
            }
        }
        if counts.len() >= expected && settle.is_none() {
            settle = Some(Instant::now() + Duration::from_secs(2));
        }
        if settle.is_some_and(|s| Instant::now() > s) || Instant::now() > deadline {
            return Ok(counts);
        }
    }
}

fn exactly_once(what: &str, counts: &HashMap<String, usize>, expected: usize) -> Result<()> {
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    ensure!(
        repeated.is_empty(),
        "{what} sent more than once: {repeated:?}"
    );
    ensure!(
        counts.len() == expected,
        "{what}: {} of the {expected} expected",
        counts.len()
    );
    Ok(())
}

#[test]
fn up_stopped_mid_replay_then_run_again_sends_every_row_exactly_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let prefix = format!("{}-", unique("up"));
    let slice = write_data(dir.path(), &prefix)?;
    let ports = [free_port()?, free_port()?, free_port()?, free_port()?];

    let mut first = up(dir.path(), &state, &ports)?;
    let out = lines(&mut first);
    wait_for(&out, "model ready", Duration::from_secs(300))?;
    // Two days at 8640x take 20 s: stop about a third of the way in.
    std::thread::sleep(Duration::from_secs(7));
    ensure!(
        Command::new("kill")
            .args(["-INT", &first.id().to_string()])
            .status()?
            .success()
    );
    let status = exit_within(&mut first, Duration::from_secs(60))?;
    ensure!(status.success(), "the first `up` stopped with {status}");

    let mut second = up(dir.path(), &state, &ports)?;
    let out = lines(&mut second);
    wait_for(&out, "resuming the replay", Duration::from_secs(300))?;
    let status = exit_within(&mut second, Duration::from_secs(300))?;
    ensure!(status.success(), "the second `up` stopped with {status}");

    let codec = Codec::single_object();
    let requests = count_ids(topics::REQUESTS, &prefix, slice.rows, |b| {
        Ok(codec.decode::<PredictionRequest>(b)?.request_id)
    })?;
    exactly_once("requests", &requests, slice.rows)?;
    let actuals = count_ids(topics::ACTUALS, &prefix, slice.with_target, |b| {
        Ok(codec.decode::<Actual>(b)?.request_id)
    })?;
    exactly_once("ground truth", &actuals, slice.with_target)?;
    let predictions = count_ids(topics::PREDICTIONS, &prefix, slice.rows, |b| {
        Ok(codec.decode::<PredictionLogged>(b)?.request_id)
    })?;
    exactly_once("predictions", &predictions, slice.rows)?;
    Ok(())
}
