//! What the consumer loop does when producing its outputs fails: a broker that is away
//! is waited for (not ready meanwhile, never ended; the transaction aborted and its
//! batches processed again), an output the broker refuses goes to
//! the dead-letter topic, a missing dead-letter topic is one clear error at start, an idle
//! consumer is not ready while no broker is reachable, and a batch that never finishes
//! makes the service not live.
//!
//! Real broker (the test command's, or one of the test's own where it is killed), real
//! RocksDB, topics of their own per test.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use driftline_kafka::KafkaArgs;
use driftline_kafka::topics::{TopicDef, TopicSpec, apply};
use driftline_runtime::health::Health;
use driftline_runtime::metrics::Metrics;
use driftline_runtime::{Output, Processor, Record, Rejection, RunOptions, Store, Txn};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::DeadLetter;
use driftline_tests::{OwnBroker, kafka, payload, read_all_on, unique};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

/// Echoes each input to `out`, except `big` (2 MB to `out`, more than the producer takes)
/// and `wide` (5 KB to `small`, more than that topic takes). Holds its first batch until
/// the gate opens.
#[derive(Clone)]
struct Gate {
    out: String,
    small: String,
    busy: Arc<AtomicBool>,
    open: Arc<AtomicBool>,
    /// Each message takes this long (a model stuck on a batch).
    per_message: Duration,
}

impl Gate {
    fn new(out: &str, small: &str) -> Self {
        Self {
            out: out.into(),
            small: small.into(),
            busy: Arc::default(),
            open: Arc::new(AtomicBool::new(true)),
            per_message: Duration::ZERO,
        }
    }
}

impl Processor for Gate {
    fn process(&mut self, record: &Record<'_>, _: &mut Txn<'_>) -> Result<Vec<Output>, Rejection> {
        self.busy.store(true, Ordering::SeqCst);
        while !self.open.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(self.per_message);
        let id = String::from_utf8_lossy(record.payload.unwrap_or_default()).into_owned();
        let (topic, payload) = match id.as_str() {
            "big" => (self.out.clone(), vec![7u8; 2_000_000]),
            // Bytes lz4 cannot shrink below the topic's limit.
            "wide" => (
                self.small.clone(),
                (0..5000u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect(),
            ),
            _ => (self.out.clone(), id.clone().into_bytes()),
        };
        Ok(vec![Output {
            topic,
            key: id,
            payload,
        }])
    }
}

struct Topics {
    input: String,
    out: String,
    small: String,
    dlq: String,
}

async fn topics(kafka: &KafkaArgs) -> Result<Topics> {
    let t = Topics {
        input: unique("faults-in"),
        out: unique("faults-out"),
        small: unique("faults-small"),
        dlq: unique("faults-dlq"),
    };
    let def = |name: &str, config: &[(&str, &str)]| TopicDef {
        name: name.into(),
        partitions: 1,
        replication: 1,
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    let spec = TopicSpec {
        topics: vec![
            def(&t.input, &[]),
            def(&t.out, &[]),
            def(&t.small, &[("max.message.bytes", "1000")]),
            def(&t.dlq, &[]),
        ],
    };
    apply(kafka, &spec).await.context("creating topics")?;
    Ok(t)
}

async fn produce_ids(kafka: &KafkaArgs, topic: &str, ids: &[String]) -> Result<()> {
    let producer: FutureProducer = kafka.producer_config().create()?;
    for id in ids {
        producer
            .send(
                FutureRecord::to(topic).key(id).payload(id),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Starts the loop on its own task.
fn start(
    kafka: &KafkaArgs,
    opts: RunOptions,
    state: &std::path::Path,
    processor: Gate,
    shutdown: &CancellationToken,
) -> Result<tokio::task::JoinHandle<driftline_runtime::Result<u64>>> {
    let store = Arc::new(Store::open(state, false)?);
    let (kafka, shutdown) = (kafka.clone(), shutdown.clone());
    Ok(tokio::spawn(async move {
        driftline_runtime::run(
            &kafka,
            &opts,
            store,
            processor,
            Codec::single_object(),
            Metrics::new("test"),
            shutdown,
        )
        .await
    }))
}

async fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn outputs_produced_while_the_broker_is_down_are_delivered_once_it_is_back() -> Result<()> {
    let _t = driftline_process::telemetry::init_from_env()?;
    let dir = tempfile::tempdir()?;
    let broker = OwnBroker::new(dir.path())?;
    broker.start()?;
    let mut kafka = broker.kafka();
    // Deliveries give up after 10 s instead of 30, so the outage is short.
    kafka.options = vec!["message.timeout.ms=10000".into()];
    let t = topics(&kafka).await?;
    let ids: Vec<String> = (0..300).map(|i| format!("m-{i}")).collect();
    produce_ids(&kafka, &t.input, &ids).await?;

    let gate = Gate::new(&t.out, &t.small);
    gate.open.store(false, Ordering::SeqCst);
    let health = Health::default();
    health.set(true);
    let mut opts = RunOptions::new(unique("faults"), vec![t.input.clone()]);
    opts.dlq_topic = t.dlq.clone();
    opts.health = health.clone();
    let shutdown = CancellationToken::new();
    let running = start(
        &kafka,
        opts,
        &dir.path().join("state"),
        gate.clone(),
        &shutdown,
    )?;

    // The first batch is being processed; the broker dies before its outputs go out.
    wait_until(
        "the first batch is processing",
        Duration::from_secs(60),
        || gate.busy.load(Ordering::SeqCst),
    )
    .await?;
    broker.kill()?;
    gate.open.store(true, Ordering::SeqCst);
    wait_until(
        "not ready while deliveries fail",
        Duration::from_secs(30),
        || !health.is_ready(),
    )
    .await?;
    // Several failed rounds later, the loop still runs.
    tokio::time::sleep(Duration::from_secs(8)).await;
    ensure!(
        !running.is_finished(),
        "the loop ended while the broker was away: {:?}",
        running.await?
    );
    ensure!(
        health.stuck().is_none(),
        "waiting for a broker is not being stuck"
    );

    broker.start()?;
    wait_until(
        "ready again once the broker is back",
        Duration::from_secs(120),
        || health.is_ready(),
    )
    .await
    .with_context(|| format!("still failing: {:?}", health.problems()))?;
    let out = read_all_on(&kafka, &t.out, ids.len(), Duration::from_secs(60))?;
    let got: Vec<String> = out
        .iter()
        .map(|m| String::from_utf8_lossy(payload(m)).into_owned())
        .collect();
    let distinct: BTreeSet<&String> = got.iter().collect();
    ensure!(
        got.len() == ids.len() && distinct.len() == ids.len(),
        "{} outputs, {} distinct, for {} inputs",
        got.len(),
        distinct.len(),
        ids.len()
    );
    shutdown.cancel();
    let applied = running.await??;
    ensure!(applied == ids.len() as u64, "applied {applied}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_consumer_is_not_ready_while_no_broker_is_reachable_and_ready_once_one_is()
-> Result<()> {
    let _t = driftline_process::telemetry::init_from_env()?;
    let dir = tempfile::tempdir()?;
    let broker = OwnBroker::new(dir.path())?;
    broker.start()?;
    let kafka = broker.kafka();
    let t = topics(&kafka).await?;
    let health = Health::default();
    health.set(true);
    let mut opts = RunOptions::new(unique("idle"), vec![t.input.clone()]);
    opts.dlq_topic = t.dlq.clone();
    opts.health = health.clone();
    let shutdown = CancellationToken::new();
    let gate = Gate::new(&t.out, &t.small);
    let running = start(&kafka, opts, &dir.path().join("state"), gate, &shutdown)?;
    // One message through, then nothing to read: no delivery can fail while the broker is
    // down, only the connections tell.
    produce_ids(&kafka, &t.input, &["one".to_string()]).await?;
    read_all_on(&kafka, &t.out, 1, Duration::from_secs(60))?;
    ensure!(health.is_ready(), "{:?}", health.problems());
    broker.kill()?;
    wait_until(
        "not ready with the broker down",
        Duration::from_secs(30),
        || !health.is_ready(),
    )
    .await?;
    let problems = health.problems();
    ensure!(
        problems
            .values()
            .any(|p| p.contains("no broker is reachable")),
        "{problems:?}"
    );
    broker.start()?;
    wait_until(
        "ready once the broker is back",
        Duration::from_secs(120),
        || health.is_ready(),
    )
    .await
    .with_context(|| format!("still failing: {:?}", health.problems()))?;
    ensure!(!running.is_finished(), "the loop ended");
    shutdown.cancel();
    running.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_the_broker_refuses_goes_to_the_dead_letter_topic_and_the_loop_goes_on()
-> Result<()> {
    let _t = driftline_process::telemetry::init_from_env()?;
    let kafka = kafka();
    let t = topics(&kafka).await?;
    let ids: Vec<String> = ["a", "big", "wide", "b"].map(String::from).to_vec();
    produce_ids(&kafka, &t.input, &ids).await?;
    let dir = tempfile::tempdir()?;
    let mut opts = RunOptions::new(unique("faults"), vec![t.input.clone()]);
    opts.dlq_topic = t.dlq.clone();
    opts.exit_on_eof = true;
    let shutdown = CancellationToken::new();
    let gate = Gate::new(&t.out, &t.small);
    let applied = start(&kafka, opts, dir.path(), gate, &shutdown)?.await??;
    ensure!(applied == 4, "applied {applied} of 4");

    let out = read_all_on(&kafka, &t.out, 2, Duration::from_secs(30))?;
    let keys: Vec<&[u8]> = out.iter().map(|m| m.key().unwrap_or_default()).collect();
    ensure!(keys == [b"a", b"b"], "out holds {keys:?}");
    let codec = Codec::single_object();
    let letters: Vec<DeadLetter> = read_all_on(&kafka, &t.dlq, 2, Duration::from_secs(30))?
        .iter()
        .map(|m| codec.decode(payload(m)))
        .collect::<Result<_, _>>()?;
    let by_topic: BTreeMap<&str, &DeadLetter> = letters
        .iter()
        .map(|l| (l.source_topic.as_str(), l))
        .collect();
    ensure!(letters.len() == 2, "{} dead letters", letters.len());
    let big = by_topic.get(t.out.as_str()).context("no letter for big")?;
    let wide = by_topic
        .get(t.small.as_str())
        .context("no letter for wide")?;
    for (letter, size) in [(big, 2_000_000), (wide, 5000)] {
        ensure!(letter.error_kind == "undeliverable", "{letter:?}");
        ensure!(letter.error.contains("too large"), "{}", letter.error);
        let stored = letter.payload_size.unwrap_or(
            letter
                .payload
                .as_ref()
                .map_or(0, |p| i64::try_from(p.len()).unwrap_or(i64::MAX)),
        );
        ensure!(stored == size, "payload size {stored}, expected {size}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_whose_dead_letter_topic_is_missing_refuses_to_start_with_one_clear_error()
-> Result<()> {
    let kafka = kafka();
    let t = topics(&kafka).await?;
    let dir = tempfile::tempdir()?;
    let missing = unique("no-such-dlq");
    let mut opts = RunOptions::new(unique("faults"), vec![t.input.clone()]);
    opts.dlq_topic = missing.clone();
    let shutdown = CancellationToken::new();
    let gate = Gate::new(&t.out, &t.small);
    let running = start(&kafka, opts, dir.path(), gate, &shutdown)?;
    let ended = tokio::time::timeout(Duration::from_secs(60), running).await??;
    let error = ended
        .expect_err("started without its dead-letter topic")
        .to_string();
    ensure!(
        error.contains(&missing) && error.contains("do not exist"),
        "{error}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_that_takes_longer_than_the_stuck_limit_makes_the_service_not_live() -> Result<()> {
    let kafka = kafka();
    let t = topics(&kafka).await?;
    produce_ids(&kafka, &t.input, &["slow".to_string()]).await?;
    let dir = tempfile::tempdir()?;
    let health = Health::with_stuck_after(Duration::from_secs(1));
    let mut opts = RunOptions::new(unique("faults"), vec![t.input.clone()]);
    opts.dlq_topic = t.dlq.clone();
    opts.health = health.clone();
    let shutdown = CancellationToken::new();
    let mut gate = Gate::new(&t.out, &t.small);
    gate.per_message = Duration::from_secs(4);
    let running = start(&kafka, opts, dir.path(), gate.clone(), &shutdown)?;
    wait_until("processing", Duration::from_secs(60), || {
        gate.busy.load(Ordering::SeqCst)
    })
    .await?;
    ensure!(
        health.stuck().is_none(),
        "not stuck at the start of a batch"
    );
    wait_until("stuck", Duration::from_secs(3), || health.stuck().is_some()).await?;
    wait_until(
        "live again once the batch is done",
        Duration::from_secs(10),
        || health.stuck().is_none(),
    )
    .await?;
    shutdown.cancel();
    running.await??;
    Ok(())
}
