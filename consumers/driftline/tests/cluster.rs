//! `driftline up --no-broker` on a three-node Apache Kafka cluster (infra/cluster.sh:
//! replication factor 3, min.insync.replicas 2), one node killed with SIGKILL in the middle
//! of the replay and started again: every request still gets its prediction and no event
//! is lost. Duplicates are possible until the runtime commits through Kafka transactions;
//! they are counted and printed, not hidden.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{OnTheBus, exit_within, lines, up_command, wait_for, write_data};
use driftline_schemas::topics;
use driftline_tests::cluster::Cluster;
use driftline_tests::{reader_on, unique};
use rand::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer};

mod common;

fn driftline() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_driftline"))
}

#[test]
fn up_on_three_brokers_loses_nothing_when_one_is_killed_mid_replay() -> Result<()> {
    let cluster = Cluster::start()?;
    let out = Command::new(driftline())
        .args(["topics", "apply", "--bootstrap-servers", &cluster.bootstrap])
        .output()?;
    ensure!(
        out.status.success(),
        "topics apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The spec asks for the broker's default replication: 3 on this cluster.
    let probe: BaseConsumer = cluster.kafka().client_config().create()?;
    let metadata = probe.fetch_metadata(Some(topics::PREDICTIONS), Duration::from_secs(10))?;
    let replicas = metadata.topics()[0].partitions()[0].replicas().len();
    ensure!(
        replicas == 3,
        "{} has {replicas} replicas, not 3",
        topics::PREDICTIONS
    );

    let work = tempfile::tempdir()?;
    let prefix = format!("{}-", unique("cluster"));
    let slice = write_data(work.path(), &prefix, "2013-01-22", "2013-01-24")?;
    // Kept running after the replay: the services may still be catching up after the
    // broker's loss (a group whose coordinator died rejoins first), and the question is
    // whether every request gets its prediction, not how fast.
    let mut up = up_command(
        work.path(),
        &work.path().join("state"),
        &cluster.bootstrap,
        "2013-01-22",
    )?
    .env("DRIFTLINE_KEEP_RUNNING", "true")
    .spawn()?;
    let log = lines(&mut up);
    wait_for(&log, "model ready", Duration::from_secs(300))?;

    // Two days at 8640x take 20 s: a node dies a few seconds in and is back ten later.
    let node = rand::rng().random_range(1..=3).to_string();
    std::thread::sleep(Duration::from_secs(4));
    cluster.run(&["kill", &node])?;
    std::thread::sleep(Duration::from_secs(10));
    cluster.run(&["restart", &node])?;
    wait_for(&log, "[up] replay:", Duration::from_secs(300))
        .context("the replay after the kill")?;

    let k = cluster.kafka();
    let bus = OnTheBus::read(|topic: &str| reader_on(&k, topic), &prefix, &slice)?;
    eprintln!("node {node} killed with SIGKILL mid-replay and restarted");
    bus.print(&slice);
    bus.nothing_lost(&slice)?;
    ensure!(
        Command::new("kill")
            .args(["-INT", &up.id().to_string()])
            .status()?
            .success()
    );
    let status = exit_within(&mut up, Duration::from_secs(60)).context("`up` after Ctrl-C")?;
    ensure!(status.success(), "`up` stopped with {status}");
    Ok(())
}
