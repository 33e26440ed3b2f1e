//! The consumer loop runs the processor on tokio's blocking pool: a slow model stalls
//! neither other tasks, nor the consumer's group membership, nor shutdown; and with
//! pipelining, a batch reads the state of earlier batches that are not committed yet.
//! Either way every message is applied exactly once.
//!
//! Real broker (`DRIFTLINE_BOOTSTRAP_SERVERS`, default 127.0.0.1:9092), real RocksDB, and
//! topics and groups of their own per test.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use driftline_kafka::KafkaArgs;
use driftline_kafka::topics::{TopicDef, TopicSpec, apply};
use driftline_runtime::metrics::Metrics;
use driftline_runtime::{Output, Processor, Record, Rejection, RunOptions, Store, Txn};
use driftline_schemas::codec::Codec;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const COUNT: &[u8] = b"count";
const SUM: &[u8] = b"sum";

fn kafka() -> KafkaArgs {
    KafkaArgs::with_bootstrap(
        std::env::var("DRIFTLINE_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
    )
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn read_u64(txn: &Txn<'_>, key: &[u8]) -> Result<u64, Rejection> {
    let bytes = txn.get(key).map_err(|e| Rejection {
        kind: "state",
        error: e.to_string(),
    })?;
    Ok(bytes
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}

fn stored_u64(store: &Store, key: &[u8]) -> Result<u64> {
    Ok(store
        .get(key)?
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}

/// Counts ids and sums their hashes in the state (a loss or a duplicate changes both), and
/// echoes each id to `out`; optionally slowly, like a heavy model.
struct Echo {
    out: String,
    per_message: Duration,
    /// Set while a message is being processed.
    busy: Arc<AtomicBool>,
}

impl Processor for Echo {
    fn process(
        &mut self,
        record: &Record<'_>,
        txn: &mut Txn<'_>,
    ) -> Result<Vec<Output>, Rejection> {
        self.busy.store(true, Ordering::SeqCst);
        std::thread::sleep(self.per_message);
        let id = record.payload.unwrap_or_default();
        let count = read_u64(txn, COUNT)?;
        let sum = read_u64(txn, SUM)?;
        txn.put(COUNT.to_vec(), (count + 1).to_be_bytes().to_vec());
        txn.put(
            SUM.to_vec(),
            sum.wrapping_add(fnv1a(id)).to_be_bytes().to_vec(),
        );
        self.busy.store(false, Ordering::SeqCst);
        Ok(vec![Output {
            topic: self.out.clone(),
            key: String::from_utf8_lossy(id).into_owned(),
            payload: id.to_vec(),
        }])
    }
}

struct Topics {
    input: String,
    out: String,
    dlq: String,
}

/// Creates the topics and produces `n` ids (`m-0`, `m-1`, ...) round-robin over the input's
/// partitions. Returns the ids' expected (count, sum).
async fn setup(partitions: i32, n: u64) -> Result<(Topics, (u64, u64))> {
    let topics = Topics {
        input: unique("off-loop-in"),
        out: unique("off-loop-out"),
        dlq: unique("off-loop-dlq"),
    };
    let def = |name: &str, partitions| TopicDef {
        name: name.to_string(),
        partitions,
        replication: 1,
        config: BTreeMap::new(),
    };
    let spec = TopicSpec {
        topics: vec![
            def(&topics.input, partitions),
            def(&topics.out, 1),
            def(&topics.dlq, 1),
        ],
    };
    apply(&kafka(), &spec)
        .await
        .context("creating topics (is the broker running?)")?;
    let producer: FutureProducer = kafka().producer_config().create()?;
    let mut deliveries = Vec::new();
    let mut sum = 0u64;
    for i in 0..n {
        let id = format!("m-{i}");
        sum = sum.wrapping_add(fnv1a(id.as_bytes()));
        let partition = (i % partitions as u64) as i32;
        let record = FutureRecord::<str, [u8]>::to(&topics.input)
            .partition(partition)
            .key(id.as_str())
            .payload(id.as_bytes());
        deliveries.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("enqueue: {e}"))?,
        );
    }
    for d in deliveries {
        d.await?.map_err(|(e, _)| e)?;
    }
    Ok((topics, (n, sum)))
}

/// Every key on `topic`, read from the start to the end of each partition.
fn read_keys(topic: &str) -> Result<Vec<String>> {
    let consumer: BaseConsumer = kafka()
        .consumer_config(&unique("reader"))
        .set("enable.partition.eof", "true")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut keys = Vec::new();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => keys.push(String::from_utf8_lossy(m.key().unwrap_or_default()).into()),
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(keys),
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            None => {}
        }
    }
    bail!("{topic} not read to its end in time")
}

/// Each of `m-0` .. `m-{n-1}` exactly once.
fn assert_each_once(mut keys: Vec<String>, n: u64) {
    keys.sort();
    let mut expected: Vec<String> = (0..n).map(|i| format!("m-{i}")).collect();
    expected.sort();
    assert_eq!(keys.len() as u64, n, "as many outputs as inputs");
    assert_eq!(keys, expected, "every input echoed exactly once");
}

#[tokio::test(flavor = "current_thread")]
async fn a_slow_model_stalls_neither_the_loop_nor_group_membership_nor_shutdown() -> Result<()> {
    const N: u64 = 40;
    const BATCH: usize = 10;
    // 7 s a batch: longer than the max poll interval below, which librdkafka enforces
    // by making a consumer that has not polled for that long leave its group. (That
    // interval cannot be below the session timeout, nor that below the 6 s Kafka brokers
    // accept by default: group.min.session.timeout.ms.)
    const PER_MESSAGE: Duration = Duration::from_millis(700);
    let (topics, expected) = setup(1, N).await?;
    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::open(dir.path(), false)?);
    let codec = Codec::single_object();
    let mut consumer_kafka = kafka();
    consumer_kafka.session_timeout_ms = 6000;
    consumer_kafka.heartbeat_interval_ms = 2000;
    consumer_kafka
        .options
        .push("max.poll.interval.ms=6000".into());

    // On this single-threaded runtime a processor on the async loop would starve the ticker.
    let worst_gap = Arc::new(Mutex::new(Duration::ZERO));
    let ticker = tokio::spawn({
        let worst_gap = worst_gap.clone();
        async move {
            let mut last = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let gap = last.elapsed();
                last = Instant::now();
                let mut worst = worst_gap.lock().unwrap_or_else(|e| e.into_inner());
                *worst = (*worst).max(gap);
            }
        }
    });

    let busy = Arc::new(AtomicBool::new(false));
    let metrics = Metrics::new("slow");
    let shutdown = CancellationToken::new();
    let mut opts = RunOptions::new(unique("slow"), vec![topics.input.clone()]);
    opts.dlq_topic = topics.dlq.clone();
    opts.max_batch = BATCH;
    let slow = tokio::spawn({
        let (kafka, opts, store, codec, metrics, shutdown) = (
            consumer_kafka.clone(),
            opts.clone(),
            store.clone(),
            codec.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        let processor = Echo {
            out: topics.out.clone(),
            per_message: PER_MESSAGE,
            busy: busy.clone(),
        };
        async move {
            driftline_runtime::run(&kafka, &opts, store, processor, codec, metrics, shutdown).await
        }
    });

    // Two batches committed (14 s, more than twice the max poll interval), then stop in the middle of
    // the third.
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored_u64(&store, COUNT)? < 2 * BATCH as u64 {
        ensure!(
            Instant::now() < deadline,
            "two slow batches not committed in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(3 * PER_MESSAGE).await;
    ensure!(
        busy.load(Ordering::SeqCst) && stored_u64(&store, COUNT)? == 2 * BATCH as u64,
        "the third batch is being processed"
    );
    let asked = Instant::now();
    shutdown.cancel();
    let applied = slow.await??;
    let stop_took = asked.elapsed();
    ticker.abort();
    let worst_gap = *worst_gap.lock().unwrap_or_else(|e| e.into_inner());

    assert!(
        stop_took < Duration::from_millis(1000),
        "shutdown answered in {stop_took:?}, without waiting for the batch being processed"
    );
    assert!(
        worst_gap < Duration::from_millis(500),
        "other tasks ran every {worst_gap:?} at worst while batches took 7 s"
    );
    assert_eq!(
        metrics.consume_errors.get(),
        0,
        "the consumer kept polling, so it never exceeded the max poll interval"
    );
    assert_eq!(applied, stored_u64(&store, COUNT)?);
    assert!(applied >= 2 * BATCH as u64 && applied < N);

    // The rest, quickly, in the same group: it resumes at the offsets committed with the
    // state.
    let mut opts = opts.clone();
    opts.exit_on_eof = true;
    let processor = Echo {
        out: topics.out.clone(),
        per_message: Duration::ZERO,
        busy,
    };
    driftline_runtime::run(
        &kafka(),
        &opts,
        store.clone(),
        processor,
        codec,
        Metrics::new("fast"),
        CancellationToken::new(),
    )
    .await?;

    assert_eq!(
        (stored_u64(&store, COUNT)?, stored_u64(&store, SUM)?),
        expected,
        "every message applied exactly once"
    );
    assert_each_once(read_keys(&topics.out)?, N);
    Ok(())
}

/// Counts like [`Echo`], and checks on every message that the count it reads (through
/// the uncommitted batches) is the number of messages it has processed.
struct Audited {
    echo: Echo,
    store: Arc<Store>,
    processed: u64,
    misreads: Arc<AtomicU64>,
    /// Most messages processed but not yet in the store, seen at any one message.
    most_ahead: Arc<AtomicU64>,
}

impl Processor for Audited {
    fn process(
        &mut self,
        record: &Record<'_>,
        txn: &mut Txn<'_>,
    ) -> Result<Vec<Output>, Rejection> {
        if read_u64(txn, COUNT)? != self.processed {
            self.misreads.fetch_add(1, Ordering::Relaxed);
        }
        let committed = stored_u64(&self.store, COUNT).map_err(|e| Rejection {
            kind: "state",
            error: e.to_string(),
        })?;
        self.most_ahead
            .fetch_max(self.processed.saturating_sub(committed), Ordering::Relaxed);
        let outputs = self.echo.process(record, txn)?;
        self.processed += 1;
        Ok(outputs)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_batches_read_the_state_of_batches_not_yet_committed() -> Result<()> {
    const N: u64 = 3000;
    const BATCH: usize = 50;
    let (topics, expected) = setup(3, N).await?;
    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::open(dir.path(), false)?);
    let misreads = Arc::new(AtomicU64::new(0));
    let most_ahead = Arc::new(AtomicU64::new(0));
    let processor = Audited {
        echo: Echo {
            out: topics.out.clone(),
            per_message: Duration::ZERO,
            busy: Arc::new(AtomicBool::new(false)),
        },
        store: store.clone(),
        processed: 0,
        misreads: misreads.clone(),
        most_ahead: most_ahead.clone(),
    };
    let mut opts = RunOptions::new(unique("pipelined"), vec![topics.input.clone()]);
    opts.dlq_topic = topics.dlq.clone();
    opts.max_batch = BATCH;
    opts.pipeline = 4;
    opts.exit_on_eof = true;
    let applied = driftline_runtime::run(
        &kafka(),
        &opts,
        store.clone(),
        processor,
        Codec::single_object(),
        Metrics::new("pipelined"),
        CancellationToken::new(),
    )
    .await?;

    assert_eq!(applied, N);
    assert_eq!(
        misreads.load(Ordering::Relaxed),
        0,
        "every message read the count of all messages before it, committed or not"
    );
    let ahead = most_ahead.load(Ordering::Relaxed);
    assert!(
        ahead >= BATCH as u64,
        "some batch was processed while an earlier one awaited acknowledgement (at most {ahead} messages ahead of the store)"
    );
    assert_eq!(
        (stored_u64(&store, COUNT)?, stored_u64(&store, SUM)?),
        expected,
        "every message applied exactly once"
    );
    let group: BaseConsumer = kafka().consumer_config(&opts.group_id).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(&topics.input, p);
    }
    let committed = group.committed_offsets(tpl, Duration::from_secs(10))?;
    for p in 0..3 {
        assert_eq!(
            committed
                .find_partition(&topics.input, p)
                .map(|e| e.offset()),
            Some(Offset::Offset(N as i64 / 3)),
            "partition {p} committed to its end"
        );
    }
    assert_each_once(read_keys(&topics.out)?, N);
    Ok(())
}
