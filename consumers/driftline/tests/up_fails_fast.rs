//! `driftline up` runs its services in one process: when one of them fails, `up` stops the
//! others and exits non-zero with a line naming it, instead of running on half-broken.

use std::time::Duration;

use anyhow::{Result, ensure};
use common::{exit_within, lines, up_command, wait_for, write_data};
use driftline_tests::kafka;

mod common;

#[test]
fn a_service_that_fails_stops_up_with_an_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let slice_from = "2013-01-22";
    write_data(dir.path(), "fails-fast-", slice_from, "2013-01-23")?;
    // The monitor cannot listen: its address is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let mut command = up_command(
        dir.path(),
        &dir.path().join("state"),
        &kafka().bootstrap_servers,
        slice_from,
    )?;
    command.arg("--no-replay").env(
        "DRIFTLINE_MONITOR_HTTP_ADDR",
        taken.local_addr()?.to_string(),
    );
    let mut up = command.spawn()?;
    let out = lines(&mut up);
    wait_for(&out, "the monitor failed", Duration::from_secs(120))?;
    // With --no-replay `up` would otherwise serve until Ctrl-C.
    let status = exit_within(&mut up, Duration::from_secs(60))?;
    ensure!(
        !status.success(),
        "up exited with {status} after a service failed"
    );
    Ok(())
}
