//! `driftline up` twice on the real broker: the first is stopped with Ctrl-C (SIGINT) in the
//! middle of its replay, the second resumes and runs to the end. Every request, every
//! ground truth and every prediction of the replayed rows is then in its topic exactly once.
//!
//! The rows are a slice of data/flights.csv.gz whose ids carry a fresh prefix, so runs
//! against a broker that already holds earlier runs' messages only count their own.

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use common::{OnTheBus, exit_within, lines, up, wait_for, write_data};
use driftline_tests::{kafka, reader_from_start, unique};

mod common;

const FROM: &str = "2013-01-22";
const UNTIL: &str = "2013-01-24";

#[test]
fn up_stopped_mid_replay_then_run_again_sends_every_row_exactly_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let prefix = format!("{}-", unique("up"));
    let slice = write_data(dir.path(), &prefix, FROM, UNTIL)?;

    let mut first = up(dir.path(), &state, &kafka().bootstrap_servers, FROM)?;
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

    let mut second = up(dir.path(), &state, &kafka().bootstrap_servers, FROM)?;
    let out = lines(&mut second);
    wait_for(&out, "resuming the replay", Duration::from_secs(300))?;
    let status = exit_within(&mut second, Duration::from_secs(300))?;
    ensure!(status.success(), "the second `up` stopped with {status}");

    OnTheBus::read(reader_from_start, &prefix, &slice)?.exactly_once(&slice)
}
