//! `driftline up` twice on the real broker: the first is stopped with Ctrl-C (SIGINT) in the
//! middle of its replay, the second resumes and runs to the end. Every request, every
//! ground truth and every prediction of the replayed rows is then in its topic exactly once.
//!
//! The rows are a slice of data/flights.csv.gz whose ids carry a fresh prefix, so runs
//! against a broker that already holds earlier runs' messages only count their own.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Result, ensure};
use common::{count_ids, exactly_once, exit_within, lines, wait_for, write_data};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Actual, PredictionLogged, PredictionRequest};
use driftline_schemas::topics;
use driftline_tests::{free_port, kafka, reader_from_start, unique};

mod common;

const FROM: &str = "2013-01-22";
const UNTIL: &str = "2013-01-24";

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

#[test]
fn up_stopped_mid_replay_then_run_again_sends_every_row_exactly_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let prefix = format!("{}-", unique("up"));
    let slice = write_data(dir.path(), &prefix, FROM, UNTIL)?;
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
    let requests = count_ids(
        &reader_from_start(topics::REQUESTS)?,
        &prefix,
        slice.rows,
        |b| Ok(codec.decode::<PredictionRequest>(b)?.request_id),
    )?;
    exactly_once("requests", &requests, slice.rows)?;
    let actuals = count_ids(
        &reader_from_start(topics::ACTUALS)?,
        &prefix,
        slice.with_target,
        |b| Ok(codec.decode::<Actual>(b)?.request_id),
    )?;
    exactly_once("ground truth", &actuals, slice.with_target)?;
    let predictions = count_ids(
        &reader_from_start(topics::PREDICTIONS)?,
        &prefix,
        slice.rows,
        |b| Ok(codec.decode::<PredictionLogged>(b)?.request_id),
    )?;
    exactly_once("predictions", &predictions, slice.rows)?;
    Ok(())
}
