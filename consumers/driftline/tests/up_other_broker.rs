//! `driftline up` with a state directory written against another broker's data (the
//! cluster id it recorded is not the broker's): it moves that state aside and replays from
//! the start, rather than "resume" a replay whose messages this broker never had. Every
//! row then reaches its topic exactly once.

use std::time::Duration;

use anyhow::{Result, ensure};
use common::{OnTheBus, exit_within, lines, up, wait_for, write_data};
use driftline_tests::{kafka, reader_from_start, unique};

mod common;

const FROM: &str = "2013-01-22";
const UNTIL: &str = "2013-01-24";

#[test]
fn state_of_another_brokers_data_is_moved_aside_and_every_row_is_sent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state)?;
    // A run against a broker whose data is gone: it had sent everything (a position past
    // the data's end).
    std::fs::write(state.join("cluster-id"), "a-cluster-long-gone")?;
    std::fs::write(state.join("up-replay-position"), "4102444800000")?;
    let prefix = format!("{}-", unique("up-other"));
    let slice = write_data(dir.path(), &prefix, FROM, UNTIL)?;

    let mut child = up(dir.path(), &state, &kafka().bootstrap_servers, FROM)?;
    let out = lines(&mut child);
    wait_for(&out, "starting afresh", Duration::from_secs(120))?;
    let status = exit_within(&mut child, Duration::from_secs(400))?;
    ensure!(status.success(), "`up` stopped with {status}");
    let rest: Vec<String> = out.try_iter().collect();
    ensure!(
        !rest.iter().any(|l| l.contains("resuming the replay")),
        "it resumed the old position"
    );
    let aside = dir.path().join("state.cluster-a-cluster-long-gone");
    ensure!(
        aside.join("up-replay-position").exists(),
        "the old state is kept aside"
    );

    OnTheBus::read(reader_from_start, &prefix, &slice)?.exactly_once(&slice)
}
