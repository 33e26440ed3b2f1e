//! The consume → process → produce → commit loop, exactly once through Kafka transactions.
//!
//! One async task polls the consumer, produces and commits; the processor runs beside it
//! on tokio's blocking pool, one batch at a time, so a slow model stalls neither polling
//! (rebalances, group membership) nor commits, shutdown or the service's HTTP. At most one
//! batch waits, collected, for the processor; when it has waited full for a quarter of
//! `max.poll.interval.ms` the consumer pauses fetching and goes on polling.
//!
//! **Exactly once.** The outputs of processed batches, a changelog record for every state
//! change (topic `<group>-changelog`, partition for partition with the input) and the
//! consumed offsets commit in one Kafka transaction of the instance's transactional
//! producer (KIP-447: offsets go through `send_offsets_to_transaction` with the group's
//! metadata, so a zombie of an older generation is fenced). While one transaction commits
//! the next batches are processed, reading the uncommitted state, and go into the next
//! transaction together. Only after the commit is the state written to RocksDB, which is a
//! local copy of the changelog with its own restore position ([`crate::store`]).
//!
//! **Assignment and failure** take one path ([`resync`]): whatever is uncommitted is
//! dropped (an open transaction is aborted), each assigned partition's state is restored
//! from the changelog from the local position on, the processor reloads its memory from
//! the store, and every assigned partition is read again from the group's committed offset.
//! A rebalance, a crash and an aborted transaction therefore all end in the state and
//! position of the last committed transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driftline_schemas::codec::Codec;
use driftline_schemas::events::{DeadLetter, Event};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn};

use crate::health::Health;
use crate::metrics::Metrics;
use crate::store::{Store, TopicPartition, Txn, Writes};
use driftline_kafka::KafkaArgs;

use crate::{Error, Result, now_ms};

mod deliver;
mod merge;
pub use merge::{EventTime, Gate, TimeOf};
mod positions;
mod restore;
mod transaction;

pub(crate) use transaction::{CALL_TIMEOUT, off_thread, send, start_producer};

use positions::Positions;
use transaction::{Committed, Transactions};

/// One consumed message, without Kafka types, so processors are plain logic.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// Broker or producer timestamp, ms.
    pub timestamp: Option<i64>,
}

impl<'a> Record<'a> {
    /// The record of a message read from Kafka.
    pub fn of(m: &'a impl Message) -> Self {
        Self {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload: m.payload(),
            timestamp: m.timestamp().to_millis(),
        }
    }
}

/// A message to emit, in the same transaction as the batch's state and offsets.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
}

impl Output {
    pub fn event<E: Event>(codec: &Codec, topic: &str, event: &E) -> Result<Self> {
        Ok(Self {
            topic: topic.to_string(),
            key: event.key(),
            payload: codec.encode(event)?,
        })
    }
}

/// Why a message can never be processed; it goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// A short class for metrics: `decode`, `validation`, ...
    pub kind: &'static str,
    pub error: String,
}

impl Rejection {
    pub fn decode(e: impl std::fmt::Display) -> Self {
        Self {
            kind: "decode",
            error: e.to_string(),
        }
    }

    pub fn validation(e: impl std::fmt::Display) -> Self {
        Self {
            kind: "validation",
            error: e.to_string(),
        }
    }
}

/// The logic of one consumer. It stages state changes in the transaction; the runtime
/// commits them with the outputs and the offsets in one Kafka transaction.
///
/// A key belongs to the input partition of the message that writes it (its changelog
/// partition): state must be keyed by what the input is keyed by (driftline keys by
/// model), so that no key is written from two partitions.
///
/// Its methods run on tokio's blocking pool, one call at a time: they may take long or
/// block without stalling the consumer loop.
pub trait Processor: Send {
    fn process(
        &mut self,
        record: &Record<'_>,
        txn: &mut Txn<'_>,
    ) -> std::result::Result<Vec<Output>, Rejection>;

    /// After a commit that leaves no batch this processor has processed uncommitted (e.g.
    /// to wake a worker that reads the committed state). With [`RunOptions::pipeline`] at 1
    /// that is after every batch.
    fn committed(&mut self) {}

    /// Rebuilds whatever the processor keeps in memory from the committed state in
    /// `store`: after each (re)assignment and after an aborted transaction, whose
    /// processed batches are dropped and read again.
    fn reload(&mut self, _store: &Store) -> std::result::Result<(), String> {
        Ok(())
    }

    /// The partitions this instance now owns, once their state is restored and reloaded
    /// (empty after a revocation), for work that only the owner of a partition may do.
    fn assigned(&mut self, _partitions: &HashSet<TopicPartition>) {}
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub group_id: String,
    pub topics: Vec<String>,
    pub dlq_topic: String,
    /// Most messages in one state commit.
    pub max_batch: usize,
    /// How long to wait for more messages before committing a partial batch.
    pub linger: Duration,
    /// Stop once every assigned partition is read to its end (tests, backfills).
    pub exit_on_eof: bool,
    /// Take partition n of every input topic in timestamp order ([`merge`]), so the
    /// processor sees co-partitioned topics interleaved as their logs say, not as the
    /// fetches came: a restart, a rebalance or a replay gives the same sequence.
    pub in_timestamp_order: bool,
    /// With `in_timestamp_order`: go by the event times in the payloads instead, waiting
    /// for a silent input up to a bound ([`merge`]).
    pub event_time_order: Option<EventTime>,
    /// Most batches processed but not yet committed. At 1 a batch is processed once the
    /// previous one has committed. Above 1 the next batches are processed while earlier
    /// ones are in a committing transaction (seeing their uncommitted state), and
    /// [`Processor::committed`] waits until a commit leaves none behind.
    pub pipeline: usize,
    /// Where the loop reports that it turns (liveness) and that deliveries fail
    /// (readiness).
    pub health: Health,
}

impl RunOptions {
    pub fn new(group_id: impl Into<String>, topics: Vec<String>) -> Self {
        Self {
            group_id: group_id.into(),
            topics,
            dlq_topic: driftline_schemas::topics::DLQ.to_string(),
            max_batch: 2000,
            linger: Duration::from_millis(5),
            exit_on_eof: false,
            in_timestamp_order: false,
            event_time_order: None,
            pipeline: 1,
            health: Health::default(),
        }
    }

    /// The compacted topic the state's changes go to, partition for partition with the
    /// input (Kafka Streams names its changelogs the same way).
    pub fn changelog_topic(&self) -> String {
        format!("{}-changelog", self.group_id)
    }

    fn validate(&self) -> Result<()> {
        if self.max_batch == 0 || self.pipeline == 0 {
            return Err(Error::Config(format!(
                "max_batch ({}) and pipeline ({}) must be at least 1",
                self.max_batch, self.pipeline
            )));
        }
        Ok(())
    }
}

/// What the rebalance callback tells the loop: the current assignment, and that it changed.
#[derive(Default)]
struct Assignment {
    partitions: HashSet<TopicPartition>,
    changed: bool,
}

type SharedAssignment = Arc<Mutex<Assignment>>;

fn lock(a: &SharedAssignment) -> std::sync::MutexGuard<'_, Assignment> {
    a.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes the group's assignments paused: the loop restores their state first and then
/// seeks them to the committed offsets ([`resync`]).
struct PauseOnAssign {
    assignment: SharedAssignment,
    /// Wakes the loop: with the new partitions paused, no message would.
    changed: Arc<tokio::sync::Notify>,
    /// Told when no broker is reachable: an idle consumer has no failing delivery to say so.
    health: Health,
}

/// How often librdkafka reports its brokers' states (and so how soon an idle service
/// notices that none is reachable, and that one is back).
const STATS_INTERVAL_MS: &str = "2000";
const BROKER_HEALTH_KEY: &str = "kafka brokers";

impl ClientContext for PauseOnAssign {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        let problem = unreachable_brokers(statistics.brokers.values().map(|b| b.state.as_str()));
        self.health.problem(BROKER_HEALTH_KEY, problem);
    }
}

/// Why no broker can be used, from the states of the client's connections; `None` while
/// one is up.
fn unreachable_brokers<'a>(states: impl Iterator<Item = &'a str>) -> Option<String> {
    let states: BTreeSet<&str> = states.collect();
    (!states.contains("UP")).then(|| {
        format!(
            "no broker is reachable (connections: {})",
            states.into_iter().collect::<Vec<_>>().join(", ")
        )
    })
}

/// librdkafka reports end-of-partition through the error callback when we ask for it;
/// that is information, not an error.
pub(crate) fn log_client_error(error: KafkaError, reason: &str) {
    match error {
        KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {
            debug!(reason, "end of partition")
        }
        e => tracing::error!(error = %e, reason, "kafka client error"),
    }
}

/// A consumer context that only tames the error log (for readers without state).
pub struct QuietContext;

impl ClientContext for QuietContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(error, reason);
    }
}

impl ConsumerContext for QuietContext {}

impl ConsumerContext for PauseOnAssign {
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut assignment = lock(&self.assignment);
        assignment.changed = true;
        self.changed.notify_one();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts: Vec<TopicPartition> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                info!(partitions = ?parts, "assigned; restoring state before reading");
                assignment.partitions = parts.into_iter().collect();
                if let Err(e) = base.assign(tpl).and_then(|()| base.pause(tpl)) {
                    warn!(error = %e, "assign failed");
                }
            }
            _ => {
                info!("partitions revoked; what is not committed is dropped");
                assignment.partitions.clear();
                if let Err(e) = base.unassign() {
                    warn!(error = %e, "unassign failed");
                }
            }
        }
    }
}

/// Runs `processor` until `shutdown` fires (or, with `exit_on_eof`, the input is drained).
/// Returns the number of messages applied.
///
/// The processor runs on tokio's blocking pool, one batch at a time, while this task goes
/// on polling the consumer, collecting the next batch and committing transactions. On
/// shutdown the batch being processed and the transaction not yet committing are dropped
/// (read again on restart); a committing one is awaited.
pub async fn run<P: Processor + 'static>(
    kafka: &KafkaArgs,
    opts: &RunOptions,
    store: Arc<Store>,
    processor: P,
    codec: Codec,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<u64> {
    kafka.validate()?;
    opts.validate()?;
    let mut config = kafka.consumer_config(&opts.group_id);
    if opts.exit_on_eof || opts.in_timestamp_order {
        config.set("enable.partition.eof", "true");
    }
    config.set("statistics.interval.ms", STATS_INTERVAL_MS);
    let pause_after = pause_after(&config);
    let changelog = opts.changelog_topic();
    prepare_topics(kafka, opts, &changelog).await?;
    let mut txns = tokio::select! {
        _ = shutdown.cancelled() => return Ok(0),
        t = Transactions::start(kafka, opts, &store, &changelog, &metrics) => t?,
    };

    let assignment: SharedAssignment = Arc::default();
    let changed = Arc::new(tokio::sync::Notify::new());
    let context = PauseOnAssign {
        assignment: assignment.clone(),
        changed: changed.clone(),
        health: opts.health.clone(),
    };
    let consumer: StreamConsumer<PauseOnAssign> = config.create_with_context(context)?;
    let topics: Vec<&str> = opts.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    info!(group = %opts.group_id, topics = ?opts.topics, %changelog, pipeline = opts.pipeline, "consuming");

    let ctx = Arc::new(BatchContext {
        group_id: opts.group_id.clone(),
        dlq_topic: opts.dlq_topic.clone(),
        codec,
        metrics: metrics.clone(),
    });
    let health = &opts.health;
    // The loop turns at least this often, idle or not, so liveness sees it alive.
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut looped = Looped {
        idle: Some(processor),
        busy: None,
        pending: VecDeque::new(),
        next: Next::default(),
        merge: merge::Merge::new(
            if opts.in_timestamp_order {
                opts.topics.clone()
            } else {
                Vec::new()
            },
            opts.event_time_order.clone(),
        ),
        verified_end: HashMap::new(),
        taken: Positions::default(),
        at_eof: HashSet::new(),
        committed: HashMap::new(),
        paused: false,
        hook_owed: false,
        applied: 0,
    };

    let stopped: Result<()> = loop {
        health.beat(true);
        if std::mem::take(&mut lock(&assignment).changed) || txns.must_resync() {
            let parts = lock(&assignment).partitions.clone();
            let s = Resync {
                kafka,
                consumer: &consumer,
                store: &store,
                changelog: &changelog,
                metrics: &metrics,
                shutdown: &shutdown,
            };
            // The broker can be away for as long as it likes; a stop is not kept waiting.
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                resynced = s.run(&mut looped, &mut txns, &parts) => {
                    if let Err(e) = resynced {
                        break Err(e);
                    }
                }
            }
            // A rebalance during the resync (its own polls) starts another.
            continue;
        }
        if !looped.merge.is_empty() && !looped.next.is_full(opts.max_batch) {
            release_merged(&consumer, &mut looped, &assignment, opts.max_batch);
        }
        if let Some(mut p) = looped.idle.take() {
            if looped.hook_owed && txns.is_idle() && looped.pending.is_empty() {
                looped.hook_owed = false;
                looped.busy = Some(tokio::task::spawn_blocking(move || {
                    p.committed();
                    (p, None)
                }));
            } else if txns.uncommitted() + looped.pending.len() < opts.pipeline
                && looped.next.ready(opts)
            {
                let batch = looped.next.take(opts.max_batch);
                if looped.paused && !looped.next.is_full(opts.max_batch) {
                    set_paused(&consumer, false);
                    looped.paused = false;
                }
                health.busy(true);
                let uncommitted = txns
                    .writes()
                    .chain(looped.pending.iter().map(|b| b.writes.clone()))
                    .collect();
                looped.busy = Some(spawn_process(p, batch, &store, uncommitted, &ctx));
            } else {
                looped.idle = Some(p);
            }
        }
        // Processed batches go into the next transaction as soon as none is committing.
        if txns.can_begin() && !looped.pending.is_empty() {
            let batches: Vec<Processed> = looped.pending.drain(..).collect();
            let offsets = offsets_to_commit(&consumer, &batches, &looped.taken);
            if let Err(e) = txns.begin(batches, offsets, &consumer, &ctx).await {
                break Err(e);
            }
        }
        if opts.exit_on_eof
            && looped.idle.is_some()
            && !looped.hook_owed
            && txns.is_idle()
            && looped.pending.is_empty()
            && looped.next.messages.is_empty()
            && looped.merge.is_empty()
            && all_at_eof(&assignment, &looped.at_eof)
            && read_to_end(
                &consumer,
                &looped.committed,
                &looped.taken,
                &assignment,
                &mut looped.at_eof,
            )
        {
            info!(applied = looped.applied, "all partitions read to the end");
            break Ok(());
        }

        let full = looped.next.is_full(opts.max_batch);
        let can_start =
            looped.idle.is_some() && txns.uncommitted() + looped.pending.len() < opts.pipeline;
        let now = tokio::time::Instant::now();
        let linger_at = looped.next.since.map_or(now, |t| t + opts.linger);
        let pause_at = looped.next.full_since.map_or(now, |t| t + pause_after);
        let retry_at = txns.retry_at();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            job = finished(&mut looped.busy) => {
                looped.busy = None;
                health.busy(false);
                let (p, processed) = match job {
                    Ok(done) => done,
                    Err(e) => match e.try_into_panic() {
                        Ok(panic) => std::panic::resume_unwind(panic),
                        // Cancelled: the tokio runtime itself is shutting down.
                        Err(_) => break Ok(()),
                    },
                };
                looped.idle = Some(p);
                if let Some(processed) = processed {
                    count_emitted(&processed.outputs, &metrics);
                    looped.pending.push_back(processed);
                }
            }
            done = txns.finished() => {
                let committed = match done {
                    Ok(Some(c)) => looped.commit_locally(&store, c, &metrics),
                    // Aborted: the next turn resyncs.
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                };
                if let Err(e) = committed {
                    break Err(e);
                }
            }
            m = consumer.recv(), if !full || looped.paused => {
                let mut intake = Intake {
                    next: &mut looped.next,
                    merge: &mut looped.merge,
                    taken: &mut looped.taken,
                    at_eof: &mut looped.at_eof,
                    assignment: &assignment,
                    metrics: &metrics,
                    max_batch: opts.max_batch,
                };
                intake.accept(m);
                // What librdkafka already holds is taken now, not one turn of this loop
                // (and of every branch above) per message.
                while !intake.next.is_full(opts.max_batch) {
                    match ready_now(consumer.recv()) {
                        Some(m) => intake.accept(m),
                        None => break,
                    }
                }
                // Only while paused: a partition assigned since the pause fetches again.
                if looped.paused && looped.next.is_full(opts.max_batch) {
                    set_paused(&consumer, true);
                }
            }
            _ = tokio::time::sleep_until(linger_at), if can_start && !full && looped.next.since.is_some() => {}
            _ = tokio::time::sleep_until(retry_at.unwrap_or(now)), if retry_at.is_some() => {}
            _ = beat.tick() => {}
            _ = changed.notified() => {}
            _ = tokio::time::sleep_until(pause_at), if full && !looped.paused => {
                debug!(buffered = looped.next.messages.len(), "next batch full: pausing fetch, still polling");
                set_paused(&consumer, true);
                looped.paused = true;
            }
        }
    };
    health.beat(false);
    health.busy(false);
    stopped?;

    if looped.busy.take().is_some() {
        // A batch being processed has nothing produced and nothing committed: a restart
        // reads it again.
        info!("shutting down without waiting for the processor");
    }
    // A committing transaction is awaited, so that a restart does not process it again;
    // unless the broker cannot finish it in time, and then it is aborted (by this
    // instance's successor, which fences it).
    match tokio::time::timeout(SHUTDOWN_DRAIN, txns.finish()).await {
        Ok(Ok(Some(c))) => looped.commit_locally(&store, c, &metrics)?,
        Ok(Ok(None)) => {}
        Ok(Err(e)) => {
            warn!(error = %e, "the last transaction did not commit; a restart reads its batches again")
        }
        Err(_) => warn!(
            "the last transaction did not commit within {} s; a restart reads its batches again",
            SHUTDOWN_DRAIN.as_secs()
        ),
    }
    if let Some(mut p) = looped.idle.take().filter(|_| looped.hook_owed) {
        let _ = tokio::task::spawn_blocking(move || p.committed()).await;
    }
    info!(applied = looped.applied, "consumer stopped");
    Ok(looped.applied)
}

/// Refuses to start without the input and dead-letter topics; creates the changelog (as
/// many partitions as the widest input) if it is missing.
async fn prepare_topics(kafka: &KafkaArgs, opts: &RunOptions, changelog: &str) -> Result<()> {
    let mut needed = opts.topics.clone();
    needed.push(opts.dlq_topic.clone());
    let missing = driftline_kafka::topics::missing(kafka, &needed).await?;
    if !missing.is_empty() {
        return Err(Error::Config(format!(
            "topic(s) {} do not exist; create them first (`driftline topics apply`)",
            missing.join(", ")
        )));
    }
    let counts = driftline_kafka::topics::partition_counts(kafka, &opts.topics).await?;
    let widest = counts.values().copied().max().unwrap_or(1);
    let spec = driftline_kafka::topics::changelog(changelog, widest);
    driftline_kafka::topics::apply(kafka, &spec).await?;
    // A topic just created may not be in the answering broker's metadata yet (on a
    // cluster the controller tells the others a moment later): ask again for a while
    // before calling it missing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let have = loop {
        let have =
            driftline_kafka::topics::partition_counts(kafka, &[changelog.to_string()]).await?;
        match have.get(changelog) {
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            n => break n.copied(),
        }
    };
    match have.as_ref() {
        Some(n) if *n >= widest => Ok(()),
        n => Err(Error::Config(format!(
            "changelog topic {changelog} has {n:?} partitions; it needs {widest}, as many as the widest input"
        ))),
    }
}

/// Everything the loop keeps between turns besides the consumer and the transactions.
struct Looped<P> {
    /// The processor is either here (idle) or on the blocking pool (busy).
    idle: Option<P>,
    busy: Option<JoinHandle<Job<P>>>,
    /// Processed, waiting for the next transaction.
    pending: VecDeque<Processed>,
    next: Next,
    /// Taken from the consumer, waiting for their turn in timestamp order.
    merge: merge::Merge,
    /// When the merge last found a partition at its high watermark (see [`release_merged`]).
    verified_end: HashMap<TopicPartition, Instant>,
    taken: Positions,
    at_eof: HashSet<TopicPartition>,
    /// The group's committed offsets as this instance last committed or read them.
    committed: HashMap<TopicPartition, i64>,
    paused: bool,
    hook_owed: bool,
    applied: u64,
}

impl<P> Looped<P> {
    /// Writes a committed transaction's state and changelog positions to RocksDB, in one
    /// write: the batches' changes in order, so a later batch's value of a key wins.
    fn commit_locally(&mut self, store: &Store, c: Committed, metrics: &Metrics) -> Result<()> {
        let changes = c.batches.iter().flat_map(|b| {
            b.writes
                .iter()
                .map(|(k, s)| (k.as_slice(), s.value.as_deref()))
        });
        store.write(changes, &c.positions)?;
        for ((t, p), o) in &c.offsets {
            self.committed.insert((t.clone(), *p), *o);
        }
        for b in &c.batches {
            debug!(
                messages = b.messages,
                process_ms = b.took.as_secs_f64() * 1e3,
                total_ms = b.started.elapsed().as_secs_f64() * 1e3,
                "batch committed"
            );
            metrics
                .batch_seconds
                .observe(b.started.elapsed().as_secs_f64());
            metrics.batch_size.observe(b.messages as f64);
            self.applied += b.messages as u64;
        }
        debug!(batches = c.batches.len(), "transaction committed");
        self.hook_owed = true;
        Ok(())
    }
}

/// The offsets a transaction commits for its batches: the next offset after each
/// partition's last message, or the consumer's position when nothing newer was taken and
/// the position is further on (past transaction markers, which take offsets but are never
/// handed out, so that a group's lag can reach 0).
fn offsets_to_commit<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    batches: &[Processed],
    taken: &Positions,
) -> BTreeMap<TopicPartition, i64> {
    let mut offsets = BTreeMap::new();
    for b in batches {
        for (tp, o) in &b.offsets {
            offsets.insert(tp.clone(), *o);
        }
    }
    if let Ok(position) = consumer.position() {
        for e in position.elements() {
            let tp = (e.topic().to_string(), e.partition());
            if let (Some(next), Offset::Offset(at)) = (offsets.get_mut(&tp), e.offset())
                && taken.next(&tp.0, tp.1) == Some(*next)
                && at > *next
            {
                *next = at;
            }
        }
    }
    offsets
}

/// The one way the loop gets to a consistent start: after an assignment, a revocation or
/// an aborted transaction.
struct Resync<'a, C: ConsumerContext + 'static> {
    kafka: &'a KafkaArgs,
    consumer: &'a StreamConsumer<C>,
    store: &'a Arc<Store>,
    changelog: &'a str,
    metrics: &'a Metrics,
    shutdown: &'a CancellationToken,
}

impl<C: ConsumerContext + 'static> Resync<'_, C> {
    async fn run<P: Processor + 'static>(
        &self,
        looped: &mut Looped<P>,
        txns: &mut Transactions,
        parts: &HashSet<TopicPartition>,
    ) -> Result<()> {
        // 1. Nothing uncommitted survives: the batch being processed, those waiting, the
        //    next one. A committing transaction is awaited (committed, it counts).
        if let Some(job) = looped.busy.take() {
            match job.await {
                Ok((p, _)) => looped.idle = Some(p),
                Err(e) => match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(_) => return Err(Error::Config("runtime shutting down".into())),
                },
            }
        }
        if let Some(c) = txns.settle().await? {
            looped.commit_locally(self.store, c, self.metrics)?;
        }
        looped.pending.clear();
        looped.next = Next::default();
        looped.merge.clear();
        looped.verified_end.clear();
        looped.taken = Positions::default();
        looped.at_eof.clear();
        if parts.is_empty() {
            if let Some(p) = looped.idle.as_mut() {
                p.assigned(parts);
            }
            return Ok(());
        }
        // 2. Where the group stands. With read_committed this waits for a transaction
        //    still open on these partitions (KIP-447's stable offsets), so the changelog
        //    read next holds everything those offsets count.
        let committed = committed_offsets(self.consumer, parts).await?;
        // 3. The state of these partitions, from the changelog.
        let partitions: BTreeSet<i32> = parts.iter().map(|(_, p)| *p).collect();
        let restored = restore::restore(
            self.kafka,
            self.store,
            self.changelog,
            &partitions,
            self.metrics,
            self.shutdown,
        )
        .await?;
        // 4. The processor's memory from the store.
        if let Some(mut p) = looped.idle.take() {
            let store = self.store.clone();
            let (p, reloaded) = tokio::task::spawn_blocking(move || {
                let r = p.reload(&store);
                (p, r)
            })
            .await
            .map_err(|e| Error::Config(format!("reload panicked: {e}")))?;
            looped.idle = Some(p);
            reloaded
                .map_err(|e| Error::Config(format!("cannot reload the processor's state: {e}")))?;
        }
        if let Some(p) = looped.idle.as_mut() {
            p.assigned(parts);
        }
        // 5. Read again from the committed offsets.
        for tp in parts {
            let offset = match committed.get(tp) {
                Some(o) => {
                    looped.committed.insert(tp.clone(), *o);
                    Offset::Offset(*o)
                }
                None => Offset::Beginning,
            };
            if let Err(e) = self
                .consumer
                .seek(&tp.0, tp.1, offset, Duration::from_secs(10))
            {
                warn!(topic = %tp.0, partition = tp.1, error = %e, "seek failed");
            }
        }
        set_paused(self.consumer, false);
        looped.paused = false;
        info!(
            partitions = parts.len(),
            restored, "state restored; reading from the committed offsets"
        );
        Ok(())
    }
}

/// The group's committed offsets for `parts` (absent: none committed yet).
async fn committed_offsets<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    parts: &HashSet<TopicPartition>,
) -> Result<HashMap<TopicPartition, i64>> {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        tpl.add_partition(t, *p);
    }
    let mut attempt = 0;
    let got = loop {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(got) => break got,
            Err(e) => {
                attempt += 1;
                let wait = deliver::backoff(attempt);
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot read the committed offsets; trying again");
                tokio::time::sleep(wait).await;
            }
        }
    };
    Ok(got
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect())
}
/// How long the next batch may wait, full, before the consumer pauses fetching to go back
/// to polling: a quarter of `max.poll.interval.ms`, so that it polls in time to stay in its
/// group and to join a rebalance. Not sooner: a pause drops what librdkafka has prefetched,
/// and the broker must serve it again (up to a whole fetch response).
fn pause_after(config: &ClientConfig) -> Duration {
    let max_poll_ms = config
        .get("max.poll.interval.ms")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(300_000u64);
    Duration::from_millis(max_poll_ms / 4)
}

/// How long a stopping loop waits for its committing transaction.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// What every batch shares besides the processor.
struct BatchContext {
    group_id: String,
    dlq_topic: String,
    codec: Codec,
    metrics: Metrics,
}

/// The processor back from the blocking pool, with its batch's results (none after the
/// commit hook).
type Job<P> = (P, Option<Processed>);

/// A batch's results, computed on the blocking pool.
pub(crate) struct Processed {
    /// Also read by later batches until this one commits.
    writes: Arc<Writes>,
    outputs: Vec<Output>,
    offsets: BTreeMap<TopicPartition, i64>,
    messages: usize,
    started: Instant,
    took: Duration,
}

/// The messages taken for the next batch.
#[derive(Default)]
struct Next {
    messages: Vec<OwnedMessage>,
    /// When the first of them arrived: the batch is ready `linger` later, or once full.
    since: Option<tokio::time::Instant>,
    /// When it became full.
    full_since: Option<tokio::time::Instant>,
}

impl Next {
    fn push(&mut self, m: OwnedMessage, max_batch: usize) {
        // The clock is read when the batch starts and when it fills, not per message.
        if self.since.is_none() {
            self.since = Some(tokio::time::Instant::now());
        }
        self.messages.push(m);
        if self.full_since.is_none() && self.is_full(max_batch) {
            self.full_since = Some(tokio::time::Instant::now());
        }
    }

    fn is_full(&self, max_batch: usize) -> bool {
        self.messages.len() >= max_batch
    }

    fn ready(&self, opts: &RunOptions) -> bool {
        self.is_full(opts.max_batch) || self.since.is_some_and(|t| t.elapsed() >= opts.linger)
    }

    /// Up to `max_batch` messages, oldest first. More than that were taken only while
    /// fetching was paused; they start the next batch.
    fn take(&mut self, max_batch: usize) -> Vec<OwnedMessage> {
        let rest = self.messages.split_off(self.messages.len().min(max_batch));
        let batch = std::mem::replace(&mut self.messages, rest);
        let now = tokio::time::Instant::now();
        self.since = (!self.messages.is_empty()).then_some(now);
        self.full_since = self.is_full(max_batch).then_some(now);
        batch
    }
}

/// Where the loop puts what the consumer hands it.
struct Intake<'a> {
    next: &'a mut Next,
    merge: &'a mut merge::Merge,
    taken: &'a mut Positions,
    at_eof: &'a mut HashSet<TopicPartition>,
    assignment: &'a SharedAssignment,
    metrics: &'a Metrics,
    max_batch: usize,
}

impl Intake<'_> {
    fn accept(&mut self, m: std::result::Result<BorrowedMessage<'_>, KafkaError>) {
        match m {
            Ok(m) => {
                let topic = m.topic(); // checked as UTF-8 at every call
                if !self.at_eof.is_empty() {
                    self.at_eof.remove(&(topic.to_string(), m.partition()));
                }
                if !self.taken.admit(topic, m.partition(), m.offset()) {
                    debug!(
                        topic,
                        partition = m.partition(),
                        offset = m.offset(),
                        "dropped a message already taken (re-delivered after a rebalance)"
                    );
                    return;
                }
                if let Some(m) = self.merge.hold(m.detach()) {
                    self.next.push(m, self.max_batch);
                }
            }
            Err(KafkaError::PartitionEOF(p)) => {
                // rdkafka names only the partition, not its topic: every assigned topic's
                // partition `p` becomes a candidate, which `read_to_end` then checks.
                debug!(partition = p, "end of partition");
                for (t, part) in lock(self.assignment).partitions.iter() {
                    if *part == p {
                        self.at_eof.insert((t.clone(), p));
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "consume error");
                self.metrics.consume_errors.inc();
            }
        }
    }
}

/// The future's output if it is ready at the first poll.
fn ready_now<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

/// Processes `batch` on the blocking pool, reading the state of the batches not yet
/// committed (oldest first) as if committed.
fn spawn_process<P: Processor + 'static>(
    mut processor: P,
    batch: Vec<OwnedMessage>,
    store: &Arc<Store>,
    uncommitted: Vec<Arc<Writes>>,
    ctx: &Arc<BatchContext>,
) -> JoinHandle<Job<P>> {
    let (store, ctx) = (store.clone(), ctx.clone());
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let txn = store.txn_after(&uncommitted);
        let processed = span.in_scope(|| process_batch(&mut processor, &batch, txn, &ctx));
        (processor, Some(processed))
    })
}

/// Awaits the processor's job; pending while the processor is idle.
async fn finished<T>(job: &mut Option<JoinHandle<T>>) -> std::result::Result<T, JoinError> {
    match job {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

fn process_batch<P: Processor>(
    processor: &mut P,
    batch: &[OwnedMessage],
    mut txn: Txn<'_>,
    ctx: &BatchContext,
) -> Processed {
    let started = Instant::now();
    let mut outputs = Vec::with_capacity(batch.len());
    let mut offsets: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    let mut applied: BTreeMap<&str, u64> = BTreeMap::new();
    // Logs show the batch's span; the one per message goes to OTLP only (see telemetry).
    let _batch = batch_span(batch).entered();
    for m in batch {
        let span = info_span!(
            "message",
            topic = m.topic(),
            partition = m.partition(),
            offset = m.offset()
        );
        let record = Record::of(m);
        txn.set_partition(m.partition());
        let emitted = span.in_scope(|| match processor.process(&record, &mut txn) {
            Ok(emitted) => {
                *applied.entry(m.topic()).or_default() += 1;
                emitted
            }
            Err(rejection) => dead_letter(m, rejection, ctx).into_iter().collect(),
        });
        outputs.extend(emitted);
        advance(&mut offsets, m.topic(), m.partition(), m.offset() + 1);
    }
    for (topic, n) in applied {
        ctx.metrics
            .messages
            .with_label_values(&[topic, "applied"])
            .inc_by(n);
    }
    Processed {
        writes: Arc::new(txn.into_writes()),
        outputs,
        offsets,
        messages: batch.len(),
        started,
        took: started.elapsed(),
    }
}

/// The span of one batch: its size and where it starts.
fn batch_span(batch: &[OwnedMessage]) -> tracing::Span {
    let first = batch.first();
    info_span!(
        "batch",
        messages = batch.len(),
        topic = first.map(|m| m.topic()),
        partition = first.map(|m| m.partition()),
        first_offset = first.map(|m| m.offset())
    )
}

/// Sets a partition's next offset, allocating its key only the first time.
fn advance(offsets: &mut BTreeMap<TopicPartition, i64>, topic: &str, partition: i32, next: i64) {
    match offsets
        .iter_mut()
        .find(|((t, p), _)| *p == partition && t == topic)
    {
        Some((_, o)) => *o = next,
        None => {
            offsets.insert((topic.to_string(), partition), next);
        }
    }
}

fn dead_letter(m: &OwnedMessage, rejection: Rejection, ctx: &BatchContext) -> Option<Output> {
    let letter = crate::dead_letter::bounded(DeadLetter {
        source_topic: m.topic().to_string(),
        source_partition: m.partition(),
        source_offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        error_kind: rejection.kind.to_string(),
        error: rejection.error,
        consumer: ctx.group_id.clone(),
        failed_at: now_ms(),
        payload_size: None,
        payload_sha256: None,
    });
    warn!(
        topic = m.topic(),
        partition = m.partition(),
        offset = m.offset(),
        kind = rejection.kind,
        error = %letter.error,
        "to the dead-letter topic"
    );
    let metrics = &ctx.metrics;
    metrics
        .messages
        .with_label_values(&[m.topic(), "dead_letter"])
        .inc();
    metrics
        .dead_letters
        .with_label_values(&[m.topic(), rejection.kind])
        .inc();
    Output::event(&ctx.codec, &ctx.dlq_topic, &letter)
        .inspect_err(|e| warn!(error = %e, "cannot encode dead letter"))
        .ok()
}

/// Counts a batch's outputs by topic.
fn count_emitted(outputs: &[Output], metrics: &Metrics) {
    let mut emitted: BTreeMap<&str, u64> = BTreeMap::new();
    for o in outputs {
        *emitted.entry(&o.topic).or_default() += 1;
    }
    for (topic, n) in emitted {
        metrics.emitted.with_label_values(&[topic]).inc_by(n);
    }
}

/// Stops or restarts fetching every assigned partition. Paused, the consumer still polls,
/// so rebalances are served; librdkafka resumes from the last message it handed out.
fn set_paused<C: ConsumerContext>(consumer: &StreamConsumer<C>, pause: bool) {
    let result = consumer.assignment().and_then(|tpl| {
        if pause {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        }
    });
    if let Err(e) = result {
        warn!(error = %e, pause, "cannot pause or resume fetching");
    }
}

/// Most messages the merge holds before it lets the oldest go whatever is missing: above
/// what one fetch brings per partition (1 MB), so a log all written never reaches it.
const MERGE_MAX_HELD: usize = 50_000;

/// How long a partition found at its high watermark counts as ended while nothing new
/// arrives on it, before the broker is asked again.
const VERIFIED_END_FOR: Duration = Duration::from_millis(100);

/// Moves what the merge can release into the next batch. A partition that holds the others
/// back counts as ended when it is not assigned here, or when it was marked at its end and
/// the broker's high watermark confirms it: a failed check drops the mark, so the broker is
/// asked once per end of partition, and a passed one holds for [`VERIFIED_END_FOR`].
fn release_merged<P>(
    consumer: &impl Consumer<PauseOnAssign>,
    looped: &mut Looped<P>,
    assignment: &SharedAssignment,
    max_batch: usize,
) {
    let blocking = looped.merge.blocking();
    let assigned = if blocking.is_empty() {
        HashSet::new()
    } else {
        lock(assignment).partitions.clone()
    };
    let mut ended = HashSet::new();
    for tp in blocking {
        let recent = looped
            .verified_end
            .get(&tp)
            .is_some_and(|at| at.elapsed() < VERIFIED_END_FOR);
        let done = !assigned.contains(&tp)
            || (looped.at_eof.contains(&tp)
                && (recent
                    || at_high_watermark(
                        consumer,
                        &tp,
                        &looped.committed,
                        &looped.taken,
                        Duration::from_secs(1),
                    )));
        if done {
            if !recent {
                looped.verified_end.insert(tp.clone(), Instant::now());
            }
            ended.insert(tp);
        } else {
            looped.at_eof.remove(&tp);
            looped.verified_end.remove(&tp);
        }
    }
    let force = looped.merge.held() > MERGE_MAX_HELD;
    if force {
        debug!(
            held = looped.merge.held(),
            "merge full: releasing the oldest without waiting"
        );
    }
    let mut out = Vec::new();
    let room = max_batch.saturating_sub(looped.next.messages.len());
    looped.merge.release(
        |t, p| ended.contains(&(t.to_string(), p)),
        force,
        room,
        &mut out,
    );
    for m in out {
        looped.next.push(m, max_batch);
    }
}

/// Whether this instance has read `tp` up to the broker's high watermark: the offset after
/// the last message taken (or the consumer's position past transaction markers after it),
/// or the committed one before any was. Asks the broker.
fn at_high_watermark(
    consumer: &impl Consumer<PauseOnAssign>,
    tp: &TopicPartition,
    committed: &HashMap<TopicPartition, i64>,
    taken: &Positions,
    timeout: Duration,
) -> bool {
    let (topic, partition) = (tp.0.as_str(), tp.1);
    // The position steps over transaction markers. Before a message is taken after a
    // resync it can still be where the consumer was before it sought back to the
    // committed offset, so then it only counts when there is a committed offset to step on
    // from (markers after it).
    let at = consumer.position().ok().and_then(|tpl| {
        tpl.find_partition(topic, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
    });
    let next = match (taken.next(topic, partition), committed.get(tp)) {
        (Some(t), _) => Some(at.map_or(t, |p| t.max(p))),
        (None, Some(c)) => Some(at.map_or(*c, |p| (*c).max(p))),
        (None, None) => None,
    };
    match consumer.fetch_watermarks(topic, partition, timeout) {
        Ok((low, high)) => next.unwrap_or(low) >= high,
        Err(e) => {
            warn!(%topic, partition, error = %e, "cannot read the high watermark");
            false
        }
    }
}

/// Whether every partition marked at its end really is ([`at_high_watermark`]). A
/// partition still behind loses its mark; its own end of partition marks it again. Asks the
/// broker, so only for `exit_on_eof`, once the marks say everything is read.
fn read_to_end(
    consumer: &impl Consumer<PauseOnAssign>,
    committed: &HashMap<TopicPartition, i64>,
    taken: &Positions,
    assignment: &SharedAssignment,
    at_eof: &mut HashSet<TopicPartition>,
) -> bool {
    let assigned = lock(assignment).partitions.clone();
    let mut all = true;
    for tp in assigned {
        if !at_high_watermark(consumer, &tp, committed, taken, Duration::from_secs(5)) {
            at_eof.remove(&tp);
            all = false;
        }
    }
    all
}

fn all_at_eof(assignment: &SharedAssignment, at_eof: &HashSet<TopicPartition>) -> bool {
    let a = lock(assignment);
    !a.partitions.is_empty() && a.partitions.iter().all(|tp| at_eof.contains(tp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_with_no_connection_up_has_no_reachable_broker() {
        assert_eq!(
            unreachable_brokers(["UP", "DOWN", "INIT"].into_iter()),
            None
        );
        let why = unreachable_brokers(["DOWN", "CONNECT", "DOWN"].into_iter()).unwrap();
        assert_eq!(why, "no broker is reachable (connections: CONNECT, DOWN)");
    }
}
