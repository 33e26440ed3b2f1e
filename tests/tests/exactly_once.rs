//! The consumer runtime applies every event exactly once across SIGKILLs: outputs, the
//! state's changelog records and the offsets commit in one Kafka transaction, and an
//! instance restores its partitions' state from the changelog, on its own disk or on a
//! new one.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Event, FeatureValue, PredictionRequest};
use driftline_tests::{Checksum, create_topics, producer, read_all, stored_checksum, unique};
use rand::Rng;
use rdkafka::producer::FutureRecord;

const EVENTS: usize = 100_000;

fn counter(
    topic: &str,
    group: &str,
    dlq: &str,
    echo: &str,
    state: &Path,
    pause_ms: u64,
) -> Result<Child> {
    Ok(Command::new(env!("CARGO_BIN_EXE_driftline-counter"))
        .args([
            "--topic",
            topic,
            "--group",
            group,
            "--dlq-topic",
            dlq,
            "--echo-topic",
            echo,
            "--exit-on-eof",
        ])
        .arg("--state-dir")
        .arg(state)
        .args(["--pause-ms", &pause_ms.to_string(), "--max-batch", "500"])
        .env(
            "DRIFTLINE_BOOTSTRAP_SERVERS",
            driftline_tests::kafka().bootstrap_servers,
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()?)
}

/// Waits until the counter reports at least `target` committed events, then SIGKILLs it.
/// Returns the count it had reported.
fn kill_after(mut child: Child, target: u64) -> Result<u64> {
    let stdout = child.stdout.take().context("stdout")?;
    // Lines arrive on a thread so a stalled child cannot hang the test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(n) = line.strip_prefix("committed count=") {
            let n: u64 = n.parse()?;
            if n >= target {
                child.kill()?; // SIGKILL: no shutdown path runs
                child.wait()?;
                return Ok(n);
            }
        }
    }
    let _ = child.kill();
    bail!("the counter finished or stalled before reaching {target}")
}

fn finish(mut child: Child) -> Result<()> {
    let status = child.wait()?;
    if !status.success() {
        bail!("counter exited with {status}");
    }
    Ok(())
}

/// How many ids the echo topic holds more than once, as a read_committed reader sees it.
fn echoed_twice(echo: &str) -> Result<(usize, usize)> {
    let messages = read_all(echo, EVENTS, Duration::from_secs(120))?;
    let mut seen = std::collections::HashSet::new();
    let twice = messages
        .iter()
        .filter(|m| !seen.insert(rdkafka::message::Message::key(*m).map(<[u8]>::to_vec)))
        .count();
    Ok((seen.len(), twice))
}

#[tokio::test(flavor = "multi_thread")]
async fn resumes_without_double_counting_after_kill() -> Result<()> {
    let topic = unique("exactly-once");
    let dlq = unique("exactly-once-dlq");
    let (clean_echo, crash_echo) = (unique("echo-clean"), unique("echo-crash"));
    create_topics(&[(&topic, 3), (&dlq, 1), (&clean_echo, 3), (&crash_echo, 3)]).await?;

    // 100k requests spread over 3 partitions.
    let codec = Codec::single_object();
    let producer = producer()?;
    let mut expected = Checksum::default();
    let mut deliveries = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let request = PredictionRequest {
            request_id: format!("req-{i}"),
            model: "m".into(),
            event_time: i as i64,
            features: [("x".to_string(), FeatureValue::Number(i as f64))].into(),
        };
        expected.add(request.request_id.as_bytes());
        let bytes = codec.encode(&request)?;
        loop {
            match producer.send_result(FutureRecord::to(&topic).key(&request.key()).payload(&bytes))
            {
                Ok(f) => {
                    deliveries.push(f);
                    break;
                }
                Err((_, _)) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
    for d in deliveries {
        d.await?.map_err(|(e, _)| e)?;
    }

    let dir = tempfile::tempdir()?;
    let (clean_state, crash_state) = (dir.path().join("clean"), dir.path().join("crash"));

    // The uninterrupted run.
    finish(counter(
        &topic,
        &unique("clean"),
        &dlq,
        &clean_echo,
        &clean_state,
        0,
    )?)?;
    let clean = stored_checksum(&clean_state)?;
    assert_eq!(
        clean, expected,
        "the uninterrupted run applies every event once"
    );

    // The same stream, killed twice at random points, then run to the end, every start in
    // the same consumer group as a user's restarts would be: the restarted member gets the
    // partitions once the killed one's session has expired on the broker.
    let group = unique("crash");
    let mut rng = rand::rng();
    let first = kill_after(
        counter(&topic, &group, &dlq, &crash_echo, &crash_state, 10)?,
        rng.random_range(5_000..40_000),
    )?;
    let second = kill_after(
        counter(&topic, &group, &dlq, &crash_echo, &crash_state, 10)?,
        rng.random_range(first + 5_000..60_000),
    )?;
    assert!(
        second > first,
        "the restarted counter resumed ({first} then {second})"
    );
    // Killed a third time, then finished by an instance on a new, empty disk: the state
    // follows the partitions through the changelog.
    let third = kill_after(
        counter(&topic, &group, &dlq, &crash_echo, &crash_state, 10)?,
        rng.random_range(second + 5_000..90_000),
    )?;
    let moved_state = dir.path().join("moved");
    finish(counter(&topic, &group, &dlq, &crash_echo, &moved_state, 0)?)?;
    let crashed = stored_checksum(&moved_state)?;

    assert!(third > second, "resumed again ({second} then {third})");
    assert_eq!(
        crashed.count, EVENTS as u64,
        "no event lost or counted twice"
    );
    assert_eq!(
        crashed, clean,
        "killed and moved run equals the uninterrupted run"
    );
    assert_eq!(echoed_twice(&clean_echo)?, (EVENTS, 0));
    assert_eq!(
        echoed_twice(&crash_echo)?,
        (EVENTS, 0),
        "a read_committed reader sees every output once, across three kills"
    );
    Ok(())
}
