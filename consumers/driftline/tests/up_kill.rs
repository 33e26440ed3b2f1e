//! `driftline up` killed with SIGKILL in the middle of its replay and started again, as a
//! crashed process would be: the services come back in the same consumer groups (they get
//! their partitions once the killed members' sessions have expired) and every replayed row
//! ends up with its request, its ground truth and its prediction on the bus.
//!
//! A killed `up` last saved its replay position at a checkpoint (every 2 s, once what it
//! sent was acknowledged), so the second run sends again what came after it: about 60
//! requests here, against 450 when the position was saved only at a clean stop. They are
//! counted and printed; what must not happen is a loss. (No duplicates at all needs the
//! replay's position and its messages committed together: issue 14.)

use std::time::Duration;

use anyhow::{Result, ensure};
use common::{OnTheBus, exit_within, lines, up, wait_for, write_data};
use driftline_tests::{kafka, reader_from_start, unique};

mod common;

const FROM: &str = "2013-01-22";
const UNTIL: &str = "2013-01-24";

#[test]
fn up_killed_mid_replay_resumes_in_the_same_groups_and_loses_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let prefix = format!("{}-", unique("upkill"));
    let slice = write_data(dir.path(), &prefix, FROM, UNTIL)?;

    let mut first = up(dir.path(), &state, &kafka().bootstrap_servers, FROM)?;
    let out = lines(&mut first);
    wait_for(&out, "model ready", Duration::from_secs(300))?;
    // Two days at 8640x take 20 s: a third of the way in.
    std::thread::sleep(Duration::from_secs(7));
    first.kill()?; // SIGKILL: no shutdown path runs
    first.wait()?;

    let mut second = up(dir.path(), &state, &kafka().bootstrap_servers, FROM)?;
    let out = lines(&mut second);
    wait_for(&out, "model ready", Duration::from_secs(300))?;
    let status = exit_within(&mut second, Duration::from_secs(300))?;
    ensure!(status.success(), "the second `up` stopped with {status}");

    let bus = OnTheBus::read(reader_from_start, &prefix, &slice)?;
    bus.print(&slice);
    bus.nothing_lost(&slice)
}
