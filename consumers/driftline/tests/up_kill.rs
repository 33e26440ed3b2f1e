//! `driftline up` killed with SIGKILL in the middle of its replay and started again, as a
//! crashed process would be: the services come back in the same consumer groups (they get
//! their partitions once the killed members' sessions have expired) and every replayed row
//! ends up with its request, its ground truth and its prediction on the bus.
//!
//! A killed `up` has not saved its replay position, so the second run sends the slice again:
//! duplicates are expected until the position is saved as deliveries are acknowledged.
//! They are counted and printed here; what must not happen is a loss.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Result, ensure};
use common::{count_ids, exit_within, lines, wait_for, write_data};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Actual, PredictionLogged, PredictionRequest};
use driftline_schemas::topics;
use driftline_tests::{free_port, kafka, reader_from_start, unique};

mod common;

const FROM: &str = "2013-01-22";
const UNTIL: &str = "2013-01-24";

fn up(dir: &Path, state: &Path) -> Result<Child> {
    let addr = |p: u16| format!("127.0.0.1:{p}");
    Ok(Command::new(env!("CARGO_BIN_EXE_driftline"))
        .args([
            "up",
            "--no-broker",
            "--bootstrap-servers",
            &kafka().bootstrap_servers,
        ])
        .arg("--spec")
        .arg(dir.join("flights.toml"))
        .args(["--from", FROM, "--speedup", "8640"])
        .arg("--state-dir")
        .arg(state)
        .args(["--http-addr", &addr(free_port()?)])
        .args(["--dashboard-addr", &addr(free_port()?)])
        .env("DRIFTLINE_MONITOR_HTTP_ADDR", addr(free_port()?))
        .env("DRIFTLINE_TRAINER_HTTP_ADDR", addr(free_port()?))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?)
}

#[test]
fn up_killed_mid_replay_resumes_in_the_same_groups_and_loses_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let prefix = format!("{}-", unique("upkill"));
    let slice = write_data(dir.path(), &prefix, FROM, UNTIL)?;

    let mut first = up(dir.path(), &state)?;
    let out = lines(&mut first);
    wait_for(&out, "model ready", Duration::from_secs(300))?;
    // Two days at 8640x take 20 s: a third of the way in.
    std::thread::sleep(Duration::from_secs(7));
    first.kill()?; // SIGKILL: no shutdown path runs
    first.wait()?;

    let mut second = up(dir.path(), &state)?;
    let out = lines(&mut second);
    wait_for(&out, "model ready", Duration::from_secs(300))?;
    let status = exit_within(&mut second, Duration::from_secs(300))?;
    ensure!(status.success(), "the second `up` stopped with {status}");

    let codec = Codec::single_object();
    let requests = count_ids(
        &reader_from_start(topics::REQUESTS)?,
        &prefix,
        slice.rows,
        |b| Ok(codec.decode::<PredictionRequest>(b)?.request_id),
    )?;
    let actuals = count_ids(
        &reader_from_start(topics::ACTUALS)?,
        &prefix,
        slice.with_target,
        |b| Ok(codec.decode::<Actual>(b)?.request_id),
    )?;
    let predictions = count_ids(
        &reader_from_start(topics::PREDICTIONS)?,
        &prefix,
        slice.rows,
        |b| Ok(codec.decode::<PredictionLogged>(b)?.request_id),
    )?;
    eprintln!(
        "{:<12} {:>8} {:>8} {:>10}",
        "topic", "expected", "distinct", "duplicates"
    );
    for (what, counts, expected) in [
        ("requests", &requests, slice.rows),
        ("actuals", &actuals, slice.with_target),
        ("predictions", &predictions, slice.rows),
    ] {
        let duplicates: usize = counts.values().map(|n| n - 1).sum();
        eprintln!(
            "{what:<12} {expected:>8} {:>8} {duplicates:>10}",
            counts.len()
        );
    }
    ensure!(
        requests.len() == slice.rows,
        "requests lost: {} of {}",
        requests.len(),
        slice.rows
    );
    ensure!(
        actuals.len() == slice.with_target,
        "ground truth lost: {} of {}",
        actuals.len(),
        slice.with_target
    );
    let unanswered: Vec<_> = requests
        .keys()
        .filter(|id| !predictions.contains_key(*id))
        .take(5)
        .collect();
    ensure!(
        unanswered.is_empty(),
        "requests without a prediction, e.g. {unanswered:?}"
    );
    Ok(())
}
