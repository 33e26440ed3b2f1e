//! The consume → process → produce → commit loop.
//!
//! One async task polls the consumer, produces, awaits acknowledgements and commits; the
//! processor runs beside it on tokio's blocking pool, one batch at a time, so a slow model
//! stalls neither polling (rebalances, group membership) nor delivery handling, shutdown
//! or the service's HTTP. At most one batch waits, collected, for the processor; when it
//! has waited full for a quarter of `max.poll.interval.ms` the consumer pauses fetching
//! and goes on polling. With [`RunOptions::pipeline`] above 1 the next batches are
//! processed while earlier ones wait for their acknowledgements.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driftline_schemas::codec::Codec;
use driftline_schemas::events::{DeadLetter, Event};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, Producer};
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
mod positions;

use deliver::Deliveries;
use positions::Positions;

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

/// A message to emit. Emitted before the batch's state commits.
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
/// commits them with the offsets once the batch's outputs are acknowledged.
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
    /// Most batches processed but not yet committed. At 1 a batch is processed once the
    /// previous one has committed. Above 1 the next batches are processed while earlier
    /// ones wait for their outputs' acknowledgements (seeing their uncommitted state), and
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
            pipeline: 1,
            health: Health::default(),
        }
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

/// Seeks every newly assigned partition to the offset stored beside the state.
struct SeekOnAssign {
    store: Arc<Store>,
    assigned: Arc<Mutex<HashSet<TopicPartition>>>,
}

impl ClientContext for SeekOnAssign {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(error, reason);
    }
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

impl ConsumerContext for SeekOnAssign {
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let stored = match self.store.offsets() {
                    Ok(o) => o,
                    Err(e) => {
                        // Without our offsets we must not start at the group's: stay idle.
                        warn!(error = %e, "cannot read stored offsets; not assigning");
                        return;
                    }
                };
                let parts: Vec<TopicPartition> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                for (topic, partition) in &parts {
                    if let Some(next) = stored.get(&(topic.clone(), *partition)) {
                        let _ = tpl.set_partition_offset(topic, *partition, Offset::Offset(*next));
                    }
                }
                info!(partitions = ?parts, "assigned; resuming from stored offsets");
                assigned.clear();
                assigned.extend(parts);
                if let Err(e) = base.assign(tpl) {
                    warn!(error = %e, "assign failed");
                }
            }
            _ => {
                info!("partitions revoked");
                assigned.clear();
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
/// on polling the consumer, collecting the next batch, awaiting acknowledgements and
/// committing. Batches commit in order, each once all its outputs are acknowledged. On
/// shutdown the batch being processed is abandoned (it is read again on restart); batches
/// already produced are acknowledged and committed.
// Each argument is a separately owned piece a service builds (and tests swap); bundling
// them would only move the list into a struct literal at every call site.
#[allow(clippy::too_many_arguments)]
pub async fn run<P: Processor + 'static>(
    kafka: &KafkaArgs,
    opts: &RunOptions,
    store: Arc<Store>,
    processor: P,
    producer: FutureProducer,
    codec: Codec,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<u64> {
    kafka.validate()?;
    opts.validate()?;
    let mut config = kafka.consumer_config(&opts.group_id);
    if opts.exit_on_eof {
        config.set("enable.partition.eof", "true");
    }
    let pause_after = pause_after(&config);
    let mut needed = opts.topics.clone();
    needed.push(opts.dlq_topic.clone());
    let missing = driftline_kafka::topics::missing(kafka, &needed).await?;
    if !missing.is_empty() {
        return Err(Error::Config(format!(
            "topic(s) {} do not exist; create them first (`driftline topics apply`)",
            missing.join(", ")
        )));
    }
    let assigned = Arc::new(Mutex::new(HashSet::new()));
    let context = SeekOnAssign {
        store: store.clone(),
        assigned: assigned.clone(),
    };
    let consumer: StreamConsumer<SeekOnAssign> = config.create_with_context(context)?;
    let topics: Vec<&str> = opts.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    info!(group = %opts.group_id, topics = ?opts.topics, pipeline = opts.pipeline, "consuming");

    let ctx = Arc::new(BatchContext {
        group_id: opts.group_id.clone(),
        dlq_topic: opts.dlq_topic.clone(),
        codec,
        metrics: metrics.clone(),
        health: opts.health.clone(),
    });
    let health = &opts.health;
    // The loop turns at least this often, idle or not, so liveness sees it alive.
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The processor is either here (idle) or on the blocking pool (busy).
    let mut idle = Some(processor);
    let mut busy: Option<JoinHandle<Job<P>>> = None;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut hook_owed = false;
    // Outputs of the newest batch in flight, not yet handed to the producer.
    let mut unproduced: Option<Vec<Output>> = None;
    let mut next = Next::default();
    let mut paused = false;
    let mut taken = Positions::default();
    let mut at_eof: HashSet<TopicPartition> = HashSet::new();
    let mut applied = 0u64;

    let stopped: Result<()> = loop {
        health.beat(true);
        if let Some(mut p) = idle.take() {
            if hook_owed && in_flight.is_empty() {
                hook_owed = false;
                busy = Some(tokio::task::spawn_blocking(move || {
                    p.committed();
                    (p, None)
                }));
            } else if in_flight.len() < opts.pipeline && next.ready(opts) {
                let batch = next.take(opts.max_batch);
                if paused && !next.is_full(opts.max_batch) {
                    set_paused(&consumer, false);
                    paused = false;
                }
                health.busy(true);
                busy = Some(spawn_process(p, batch, &store, &in_flight, &ctx));
            } else {
                idle = Some(p);
            }
        }
        // The batch that just came back is produced only now, while the processor already
        // works on the next one: producing 2,000 outputs takes a few milliseconds.
        if let Some(outputs) = unproduced.take() {
            let Some(batch) = in_flight.back_mut() else {
                unreachable!("a processed batch is in flight before it is produced")
            };
            count_emitted(&outputs, &metrics);
            match batch.deliveries.send(&producer, outputs, &ctx).await {
                Ok(()) => batch.produced = Instant::now(),
                Err(e) => break Err(e),
            }
        }
        if opts.exit_on_eof
            && idle.is_some()
            && !hook_owed
            && in_flight.is_empty()
            && next.messages.is_empty()
            && all_at_eof(&assigned, &at_eof)
            && read_to_end(&consumer, &store, &taken, &assigned, &mut at_eof)
        {
            info!(applied, "all partitions read to the end");
            break Ok(());
        }

        let full = next.is_full(opts.max_batch);
        let can_start = idle.is_some() && in_flight.len() < opts.pipeline;
        let now = tokio::time::Instant::now();
        let linger_at = next.since.map_or(now, |t| t + opts.linger);
        let pause_at = next.full_since.map_or(now, |t| t + pause_after);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            job = finished(&mut busy) => {
                busy = None;
                health.busy(false);
                let (p, processed) = match job {
                    Ok(done) => done,
                    Err(e) => match e.try_into_panic() {
                        Ok(panic) => std::panic::resume_unwind(panic),
                        // Cancelled: the tokio runtime itself is shutting down.
                        Err(_) => break Ok(()),
                    },
                };
                idle = Some(p);
                if let Some(processed) = processed {
                    // In flight at once, so the next batch reads its state; produced at the
                    // top of the loop, once the processor has its next batch.
                    let (batch, outputs) = InFlight::new(processed);
                    in_flight.push_back(batch);
                    unproduced = Some(outputs);
                }
            }
            acked = front_acked(&mut in_flight, &producer, &ctx) => {
                let Some(batch) = in_flight.pop_front() else { continue };
                match acked.and_then(|()| commit(&store, &consumer, batch, &metrics)) {
                    Ok(n) => applied += n,
                    Err(e) => break Err(e),
                }
                hook_owed = true;
            }
            m = consumer.recv(), if !full || paused => {
                let mut intake = Intake {
                    next: &mut next,
                    taken: &mut taken,
                    at_eof: &mut at_eof,
                    assigned: &assigned,
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
                if paused && next.is_full(opts.max_batch) {
                    set_paused(&consumer, true);
                }
            }
            _ = tokio::time::sleep_until(linger_at), if can_start && !full && next.since.is_some() => {}
            _ = beat.tick() => {}
            _ = tokio::time::sleep_until(pause_at), if full && !paused => {
                debug!(buffered = next.messages.len(), "next batch full: pausing fetch, still polling");
                set_paused(&consumer, true);
                paused = true;
            }
        }
    };
    health.beat(false);
    health.busy(false);
    stopped?;

    if busy.take().is_some() {
        // A batch it is processing has neither outputs produced nor state committed: a
        // restart reads it again.
        info!("shutting down without waiting for the processor");
    }
    // Outputs already produced: acknowledged and committed, so a restart does not re-emit
    // them; unless the broker cannot take them in time, and then a restart sends them again.
    let drain = async {
        while !in_flight.is_empty() {
            let acked = front_acked(&mut in_flight, &producer, &ctx).await;
            let Some(batch) = in_flight.pop_front() else {
                break;
            };
            applied += acked.and_then(|()| commit(&store, &consumer, batch, &metrics))?;
            hook_owed = true;
        }
        Ok::<_, Error>(())
    };
    match tokio::time::timeout(SHUTDOWN_DRAIN, drain).await {
        Ok(drained) => drained?,
        Err(_) => warn!(
            "outputs still unacknowledged after {} s; stopping without committing them (a restart processes their batches again)",
            SHUTDOWN_DRAIN.as_secs()
        ),
    }
    if let Some(mut p) = idle.take().filter(|_| hook_owed) {
        let _ = tokio::task::spawn_blocking(move || p.committed()).await;
    }
    let _ = producer.flush(Duration::from_secs(5));
    info!(applied, "consumer stopped");
    Ok(applied)
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

/// How long a stopping loop waits for the outputs it has produced.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// What every batch shares besides the processor.
struct BatchContext {
    group_id: String,
    dlq_topic: String,
    codec: Codec,
    metrics: Metrics,
    health: Health,
}

/// The processor back from the blocking pool, with its batch's results (none after the
/// commit hook).
type Job<P> = (P, Option<Processed>);

/// A batch's results, computed on the blocking pool.
struct Processed {
    writes: Writes,
    outputs: Vec<Output>,
    offsets: BTreeMap<TopicPartition, i64>,
    messages: usize,
    started: Instant,
    took: Duration,
}

/// A processed batch whose outputs are enqueued; its state and offsets commit once they
/// are all acknowledged.
struct InFlight {
    /// Also read by later batches until this one commits.
    writes: Arc<Writes>,
    offsets: BTreeMap<TopicPartition, i64>,
    messages: usize,
    started: Instant,
    took: Duration,
    produced: Instant,
    /// Not yet acknowledged.
    deliveries: Deliveries,
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
    taken: &'a mut Positions,
    at_eof: &'a mut HashSet<TopicPartition>,
    assigned: &'a Mutex<HashSet<TopicPartition>>,
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
                self.next.push(m.detach(), self.max_batch);
            }
            Err(KafkaError::PartitionEOF(p)) => {
                // rdkafka names only the partition, not its topic: every assigned topic's
                // partition `p` becomes a candidate, which `read_to_end` then checks.
                debug!(partition = p, "end of partition");
                for (t, part) in self
                    .assigned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                {
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

/// Processes `batch` on the blocking pool, reading the state of the batches still in
/// flight as if committed.
fn spawn_process<P: Processor + 'static>(
    mut processor: P,
    batch: Vec<OwnedMessage>,
    store: &Arc<Store>,
    in_flight: &VecDeque<InFlight>,
    ctx: &Arc<BatchContext>,
) -> JoinHandle<Job<P>> {
    let uncommitted: Vec<Arc<Writes>> = in_flight.iter().map(|b| b.writes.clone()).collect();
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
        writes: txn.into_writes(),
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

impl InFlight {
    /// A processed batch, its outputs apart: they are produced next.
    fn new(processed: Processed) -> (Self, Vec<Output>) {
        let batch = Self {
            writes: Arc::new(processed.writes),
            offsets: processed.offsets,
            messages: processed.messages,
            started: processed.started,
            took: processed.took,
            produced: Instant::now(),
            deliveries: Deliveries::default(),
        };
        (batch, processed.outputs)
    }
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

/// Waits until every output of the oldest batch in flight is acknowledged (sending failed
/// ones again, see [`deliver`]); pending while none is in flight. Cancel-safe.
async fn front_acked(
    in_flight: &mut VecDeque<InFlight>,
    producer: &FutureProducer,
    ctx: &BatchContext,
) -> Result<()> {
    let Some(batch) = in_flight.front_mut() else {
        return std::future::pending().await;
    };
    batch.deliveries.acked(producer, ctx).await
}

/// Outputs first, then the state: a crash in between re-emits, never loses.
fn commit<C: ConsumerContext>(
    store: &Store,
    consumer: &StreamConsumer<C>,
    batch: InFlight,
    metrics: &Metrics,
) -> Result<u64> {
    let acked = Instant::now();
    store.commit_writes(&batch.writes, &batch.offsets)?;
    report_progress(consumer, &batch.offsets);
    debug!(
        messages = batch.messages,
        process_ms = batch.took.as_secs_f64() * 1e3,
        deliver_ms = (acked - batch.produced).as_secs_f64() * 1e3,
        commit_ms = acked.elapsed().as_secs_f64() * 1e3,
        "batch committed"
    );
    metrics
        .batch_seconds
        .observe(batch.started.elapsed().as_secs_f64());
    metrics.batch_size.observe(batch.messages as f64);
    Ok(batch.messages as u64)
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

/// Whether every partition marked at its end really is: the offset after the last message
/// taken (or the stored one, before any was) reaches the broker's high watermark. A
/// partition still behind loses its mark; its own end of partition marks it again. Asks
/// the broker, so only for `exit_on_eof`, once the marks say everything is read.
fn read_to_end(
    consumer: &impl Consumer<SeekOnAssign>,
    store: &Store,
    taken: &Positions,
    assigned: &Mutex<HashSet<TopicPartition>>,
    at_eof: &mut HashSet<TopicPartition>,
) -> bool {
    let stored = store.offsets().unwrap_or_default();
    let assigned = assigned.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut all = true;
    for (topic, partition) in assigned {
        let next = taken
            .next(&topic, partition)
            .or_else(|| stored.get(&(topic.clone(), partition)).copied());
        let at_end = match consumer.fetch_watermarks(&topic, partition, Duration::from_secs(5)) {
            Ok((low, high)) => next.unwrap_or(low) >= high,
            Err(e) => {
                warn!(%topic, partition, error = %e, "cannot read the high watermark");
                false
            }
        };
        if !at_end {
            at_eof.remove(&(topic, partition));
            all = false;
        }
    }
    all
}

fn all_at_eof(assigned: &Mutex<HashSet<TopicPartition>>, at_eof: &HashSet<TopicPartition>) -> bool {
    let assigned = assigned.lock().unwrap_or_else(|e| e.into_inner());
    !assigned.is_empty() && assigned.iter().all(|tp| at_eof.contains(tp))
}

/// Tells the group how far we are (monitoring only: the truth is in RocksDB).
fn report_progress<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    offsets: &BTreeMap<TopicPartition, i64>,
) {
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in offsets {
        let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        debug!(error = %e, "progress commit failed (harmless)");
    }
}
