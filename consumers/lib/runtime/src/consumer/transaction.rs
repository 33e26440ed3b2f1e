//! The instance's transactional producer: one Kafka transaction at a time holds the
//! outputs of some processed batches, a changelog record per state change and the
//! consumed offsets.
//!
//! A failed transaction is aborted (by a new producer with the same transactional id,
//! which fences the old one) and the loop resyncs ([`super::Resync`]): its batches
//! are read and processed again. What a failure means is decided by its kind
//! ([`deliver::classify`]): a transient one (broker away, leader moving) backs off, doubling
//! up to 30 s, with the service not ready meanwhile; an output the broker refuses is
//! remembered and, processed again, goes to the dead-letter topic instead (`undeliverable`);
//! a fatal one (fenced by a newer instance with the same transactional id, not
//! authorised) ends the loop with one line.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::deliver::{self, Fault};
use super::{BatchContext, Output, Processed, RunOptions};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::store::{Store, TopicPartition, Writes};
use crate::{Error, Result};
use driftline_kafka::KafkaArgs;

/// How long one transactional call may take before it counts as failed (and the
/// transaction is aborted and tried again). Short, so that a stop is not held up by a
/// call in flight either.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A transaction that takes longer is logged with where the time went.
const SLOW: Duration = Duration::from_secs(1);

/// Most refused outputs remembered.
const MAX_REFUSED: usize = 10_000;

/// The health entry transactions report under.
const HEALTH_KEY: &str = "kafka transactions";

/// A committed transaction: its batches, and where the changelog now ends for the local
/// copy.
pub(crate) struct Committed {
    pub(crate) batches: Vec<Processed>,
    pub(crate) positions: BTreeMap<TopicPartition, i64>,
    pub(crate) offsets: BTreeMap<TopicPartition, i64>,
}

/// Why a transaction did not commit.
struct Failure {
    fault: Fault,
    error: String,
    /// The output the broker refused, to go to the dead-letter topic next time.
    refused: Option<[u8; 32]>,
}

struct Open {
    batches: Vec<Processed>,
    offsets: BTreeMap<TopicPartition, i64>,
    task: JoinHandle<std::result::Result<BTreeMap<TopicPartition, i64>, Failure>>,
}

pub(crate) struct Transactions {
    producer: FutureProducer,
    /// To make the producer again, with the same transactional id, after a failure.
    config: ClientConfig,
    id: String,
    changelog: String,
    open: Option<Open>,
    /// A transaction failed: the loop must resync before anything else.
    failed: bool,
    /// Failures in a row; the next transaction waits [`deliver::backoff`] of it.
    attempt: u32,
    retry_at: Option<tokio::time::Instant>,
    /// Outputs the broker refused (topic, key and payload hashed), with its reason.
    refused: HashMap<[u8; 32], String>,
    health: Health,
    metrics: Metrics,
}

impl Transactions {
    /// Makes the transactional producer and fences any older instance with the same id:
    /// the group and this store's path, so a restart on the same disk is the same
    /// instance, and its unfinished transaction is aborted.
    pub(crate) async fn start(
        kafka: &KafkaArgs,
        opts: &RunOptions,
        store: &Store,
        changelog: &str,
        metrics: &Metrics,
    ) -> Result<Self> {
        let id = transactional_id(&opts.group_id, store);
        let mut config = kafka.producer_config();
        config.set("transactional.id", &id);
        config.set(
            "transaction.timeout.ms",
            config
                .get("transaction.timeout.ms")
                .unwrap_or("60000")
                .to_string(),
        );
        let producer = start_producer(&config, &id, &opts.health).await?;
        opts.health.problem(HEALTH_KEY, None);
        info!(transactional_id = %id, "transactions started");
        Ok(Self {
            producer,
            config,
            id,
            changelog: changelog.to_string(),
            open: None,
            failed: false,
            attempt: 0,
            retry_at: None,
            refused: HashMap::new(),
            health: opts.health.clone(),
            metrics: metrics.clone(),
        })
    }

    /// Whether a failed transaction asks the loop to resync.
    pub(crate) fn must_resync(&self) -> bool {
        self.failed
    }

    /// No transaction is committing.
    pub(crate) fn is_idle(&self) -> bool {
        self.open.is_none()
    }

    /// Batches in the committing transaction.
    pub(crate) fn uncommitted(&self) -> usize {
        self.open.as_ref().map_or(0, |o| o.batches.len())
    }

    /// The committing transaction's state changes, oldest first.
    pub(crate) fn writes(&self) -> impl Iterator<Item = Arc<Writes>> + '_ {
        self.open
            .iter()
            .flat_map(|o| o.batches.iter().map(|b| b.writes.clone()))
    }

    /// Whether a new transaction may begin: none is committing, none failed, no backoff.
    pub(crate) fn can_begin(&self) -> bool {
        self.open.is_none()
            && !self.failed
            && self
                .retry_at
                .is_none_or(|t| t <= tokio::time::Instant::now())
    }

    /// When the backoff after a failure ends (the loop wakes then).
    pub(crate) fn retry_at(&self) -> Option<tokio::time::Instant> {
        self.retry_at.filter(|t| *t > tokio::time::Instant::now())
    }

    /// Begins a transaction with `batches`: their outputs and changelog records are
    /// produced now, the offsets and the commit follow in the background.
    pub(crate) async fn begin<C: ConsumerContext + 'static>(
        &mut self,
        mut batches: Vec<Processed>,
        offsets: BTreeMap<TopicPartition, i64>,
        consumer: &StreamConsumer<C>,
        ctx: &Arc<BatchContext>,
    ) -> Result<()> {
        let Some(group) = consumer.group_metadata() else {
            return Err(Error::Config("the consumer has no group metadata".into()));
        };
        if let Err(e) = self.producer.begin_transaction() {
            return Err(Error::Delivery {
                topic: self.changelog.clone(),
                error: format!("cannot begin a transaction: {e}"),
            });
        }
        let mut sent: Vec<(String, DeliveryFuture)> = Vec::new();
        let mut failure = None;
        'produce: for b in &mut batches {
            for o in std::mem::take(&mut b.outputs) {
                // Hashing every output costs; only worth it once something was refused.
                let refused = match self.refused.is_empty() {
                    true => None,
                    false => self.refused.get(&fingerprint(&o)),
                };
                let o = match refused {
                    Some(reason) => deliver::undeliverable(o, reason, ctx)?,
                    None => o,
                };
                match self.send_output(o, ctx).await {
                    Ok(s) => sent.push(s),
                    Err(f) => {
                        failure = Some(f);
                        break 'produce;
                    }
                }
            }
            for (key, staged) in b.writes.iter() {
                let Some(partition) = staged.partition else {
                    continue;
                };
                let mut rec = FutureRecord::<[u8], [u8]>::to(&self.changelog)
                    .key(key.as_slice())
                    .partition(partition);
                if let Some(v) = &staged.value {
                    rec = rec.payload(v.as_slice());
                }
                match send(&self.producer, rec).await {
                    Ok(f) => sent.push((self.changelog.clone(), f)),
                    Err(e) => {
                        failure = Some(Failure {
                            fault: deliver::classify(&e),
                            error: format!("changelog {}: {e}", self.changelog),
                            refused: None,
                        });
                        break 'produce;
                    }
                }
            }
        }
        let producer = self.producer.clone();
        let changelog = self.changelog.clone();
        let dlq = ctx.dlq_topic.clone();
        let tpl = offsets_tpl(&offsets);
        let started = std::time::Instant::now();
        let task = tokio::spawn(async move {
            if let Some(f) = failure {
                return Err(f);
            }
            let mut positions = BTreeMap::new();
            for (topic, future) in sent {
                match future.await {
                    Ok(Ok(d)) => {
                        if topic == changelog {
                            let next = positions.entry((topic, d.partition)).or_insert(0);
                            *next = (*next).max(d.offset + 1);
                        }
                    }
                    Ok(Err((e, m))) => {
                        let fault = match deliver::classify(&e) {
                            // The changelog and the dead-letter topic have nowhere else to go.
                            Fault::Poison if topic == changelog || topic == dlq => Fault::Fatal,
                            f => f,
                        };
                        let refused = (fault == Fault::Poison).then(|| {
                            fingerprint_of(
                                m.topic(),
                                m.key().unwrap_or_default(),
                                m.payload().unwrap_or_default(),
                            )
                        });
                        return Err(Failure {
                            fault,
                            error: format!("{topic}: {e}"),
                            refused,
                        });
                    }
                    Err(_) => {
                        return Err(Failure {
                            fault: Fault::Transient,
                            error: format!("{topic}: delivery cancelled"),
                            refused: None,
                        });
                    }
                }
            }
            let delivered = started.elapsed();
            let committed = off_thread(2 * CALL_TIMEOUT, move || {
                producer.send_offsets_to_transaction(&tpl, &group, CALL_TIMEOUT)?;
                let offsets_sent = started.elapsed();
                producer.commit_transaction(CALL_TIMEOUT)?;
                if started.elapsed() > SLOW {
                    info!(
                        delivered_ms = delivered.as_millis() as u64,
                        offsets_sent_ms = offsets_sent.as_millis() as u64,
                        committed_ms = started.elapsed().as_millis() as u64,
                        "slow transaction"
                    );
                }
                Ok(())
            })
            .await;
            match committed {
                Some(Ok(())) => Ok(positions),
                Some(Err(e)) => Err(Failure {
                    fault: if is_fatal(&e) {
                        Fault::Fatal
                    } else {
                        Fault::Transient
                    },
                    error: format!("commit: {e}"),
                    refused: None,
                }),
                None => Err(Failure {
                    fault: Fault::Transient,
                    error: format!(
                        "commit: no answer within {} s",
                        (2 * CALL_TIMEOUT).as_secs()
                    ),
                    refused: None,
                }),
            }
        });
        self.open = Some(Open {
            batches,
            offsets,
            task,
        });
        Ok(())
    }

    async fn send_output(
        &self,
        o: Output,
        ctx: &BatchContext,
    ) -> std::result::Result<(String, DeliveryFuture), Failure> {
        let rec = FutureRecord::to(&o.topic)
            .key(o.key.as_bytes())
            .payload(o.payload.as_slice());
        match send(&self.producer, rec).await {
            Ok(f) => Ok((o.topic, f)),
            Err(e) => match deliver::classify(&e) {
                // Refused before it reached the transaction (too large for the producer):
                // a dead letter instead, in this same transaction.
                Fault::Poison if o.topic != ctx.dlq_topic => {
                    let letter =
                        deliver::undeliverable(o, &e.to_string(), ctx).map_err(|e| Failure {
                            fault: Fault::Fatal,
                            error: e.to_string(),
                            refused: None,
                        })?;
                    let rec = FutureRecord::to(&letter.topic)
                        .key(letter.key.as_bytes())
                        .payload(letter.payload.as_slice());
                    send(&self.producer, rec)
                        .await
                        .map(|f| (letter.topic.clone(), f))
                        .map_err(|e| Failure {
                            fault: Fault::Fatal,
                            error: format!("{}: {e}", letter.topic),
                            refused: None,
                        })
                }
                // The dead-letter topic has nowhere else to go, as in a delivery report.
                Fault::Poison => Err(Failure {
                    fault: Fault::Fatal,
                    error: format!("{}: {e}", o.topic),
                    refused: None,
                }),
                fault => Err(Failure {
                    fault,
                    error: format!("{}: {e}", o.topic),
                    refused: None,
                }),
            },
        }
    }

    /// Awaits the committing transaction; pending while none is. `None` when it failed and
    /// was aborted (the loop resyncs next). Cancel-safe.
    pub(crate) async fn finished(&mut self) -> Result<Option<Committed>> {
        let Some(open) = self.open.as_mut() else {
            return std::future::pending().await;
        };
        let result = (&mut open.task).await;
        let open = self.open.take().expect("an open transaction");
        let outcome = result.unwrap_or_else(|e| {
            Err(Failure {
                fault: Fault::Fatal,
                error: format!("transaction task failed: {e}"),
                refused: None,
            })
        });
        match outcome {
            Ok(positions) => {
                if self.attempt > 0 {
                    info!(failures = self.attempt, "transactions commit again");
                    self.health.problem(HEALTH_KEY, None);
                }
                self.attempt = 0;
                self.retry_at = None;
                self.metrics
                    .transactions
                    .with_label_values(&["committed"])
                    .inc();
                Ok(Some(Committed {
                    batches: open.batches,
                    positions,
                    offsets: open.offsets,
                }))
            }
            Err(f) => {
                self.metrics
                    .transactions
                    .with_label_values(&["aborted"])
                    .inc();
                self.fail(f)?;
                Ok(None)
            }
        }
    }

    /// Awaits the committing transaction if there is one; after a failure, ends it with a
    /// new producer. The loop's resync starts here.
    pub(crate) async fn settle(&mut self) -> Result<Option<Committed>> {
        let c = if self.open.is_some() {
            self.finished().await?
        } else {
            None
        };
        if self.failed {
            self.replace_producer().await?;
            self.failed = false;
        }
        Ok(c)
    }

    /// The committing transaction's outcome, at shutdown.
    /// (A failed one is left to the next instance, which fences it.)
    pub(crate) async fn finish(&mut self) -> Result<Option<Committed>> {
        if self.open.is_none() {
            return Ok(None);
        }
        self.finished().await
    }

    /// Notes a failure: sets the backoff and asks for a resync, which ends the transaction
    /// ([`Self::settle`]). Nothing here awaits, so [`Self::finished`] stays cancel-safe.
    fn fail(&mut self, f: Failure) -> Result<()> {
        if f.fault == Fault::Fatal {
            return Err(Error::Delivery {
                topic: f.error.split(':').next().unwrap_or_default().to_string(),
                error: f.error,
            });
        }
        if let Some(print) = f.refused {
            warn!(error = %f.error, "the broker refuses an output; processed again, it goes to the dead-letter topic");
            // Bounded: refused outputs are rare; were they not, forgetting one only costs
            // another aborted transaction.
            if self.refused.len() >= MAX_REFUSED {
                self.refused.clear();
            }
            self.refused.insert(print, f.error.clone());
        } else {
            self.attempt += 1;
            let wait = deliver::backoff(self.attempt);
            self.retry_at = Some(tokio::time::Instant::now() + wait);
            warn!(error = %f.error, failures = self.attempt, retry_in_ms = wait.as_millis() as u64,
                "transaction failed; aborting it and processing its batches again after a backoff");
            self.health
                .problem(HEALTH_KEY, Some(format!("transactions fail: {}", f.error)));
        }
        self.failed = true;
        Ok(())
    }

    /// Ends the failed transaction by making the producer again with the same
    /// transactional id: `init_transactions` aborts whatever the old one left open and
    /// fences it. Unlike `abort_transaction`, this works also when a call of the old
    /// producer never returns (seen in librdkafka's `send_offsets_to_transaction` while
    /// a cluster's coordinator moves).
    async fn replace_producer(&mut self) -> Result<()> {
        let new = start_producer(&self.config, &self.id, &self.health).await?;
        let old = std::mem::replace(&mut self.producer, new);
        // Dropping purges and flushes: not on the loop, and not on tokio's blocking pool,
        // whose threads a stopping runtime waits for.
        std::thread::spawn(move || drop(old));
        Ok(())
    }
}

/// Makes a transactional producer and registers its id, trying again while the cluster
/// cannot answer.
pub(crate) async fn start_producer(
    config: &ClientConfig,
    id: &str,
    health: &Health,
) -> Result<FutureProducer> {
    let producer: FutureProducer = config.create()?;
    let mut attempt = 0;
    loop {
        let p = producer.clone();
        let error =
            match off_thread(2 * CALL_TIMEOUT, move || p.init_transactions(CALL_TIMEOUT)).await {
                Some(Ok(())) => break,
                Some(Err(e)) if is_fatal(&e) => {
                    return Err(Error::Delivery {
                        topic: id.to_string(),
                        error: format!("cannot start transactions as {id}: {e}"),
                    });
                }
                Some(Err(e)) => e.to_string(),
                None => "no answer".to_string(),
            };
        attempt += 1;
        let wait = deliver::backoff(attempt);
        warn!(transactional_id = %id, %error, retry_in_ms = wait.as_millis() as u64, "cannot start transactions yet");
        health.problem(
            HEALTH_KEY,
            Some(format!("cannot start transactions: {error}")),
        );
        tokio::time::sleep(wait).await;
    }
    health.problem(HEALTH_KEY, None);
    Ok(producer)
}

/// Runs a blocking librdkafka call on a thread of its own and waits for it at most
/// `limit`: `None` when it has not returned by then (the thread is left to finish, and a
/// stopping process does not wait for it).
pub(crate) async fn off_thread<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    tokio::time::timeout(limit, rx).await.ok()?.ok()
}

/// Hands a record to the producer, waiting while its local queue is full.
pub(crate) async fn send(
    producer: &FutureProducer,
    rec: FutureRecord<
        '_,
        impl rdkafka::message::ToBytes + ?Sized,
        impl rdkafka::message::ToBytes + ?Sized,
    >,
) -> std::result::Result<DeliveryFuture, KafkaError> {
    let mut rec = rec;
    loop {
        match producer.send_result(rec) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

fn is_fatal(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => t.is_fatal(),
        other => deliver::classify(other) == Fault::Fatal,
    }
}

fn offsets_tpl(offsets: &BTreeMap<TopicPartition, i64>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in offsets {
        let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
    }
    tpl
}

fn fingerprint(o: &Output) -> [u8; 32] {
    fingerprint_of(&o.topic, o.key.as_bytes(), &o.payload)
}

fn fingerprint_of(topic: &str, key: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [topic.as_bytes(), key, payload] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// The group and a hash of the store's path: stable across restarts on the same disk,
/// different for every instance (RocksDB lets one process open a path at a time).
fn transactional_id(group: &str, store: &Store) -> String {
    let path = store.path();
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{group}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_is_recognised_by_topic_key_and_payload() {
        let o = |t: &str, k: &str, p: &[u8]| Output {
            topic: t.into(),
            key: k.into(),
            payload: p.to_vec(),
        };
        let a = fingerprint(&o("t", "k", b"v"));
        assert_eq!(a, fingerprint(&o("t", "k", b"v")));
        assert_ne!(a, fingerprint(&o("u", "k", b"v")));
        assert_ne!(
            a,
            fingerprint(&o("t", "kv", b"")),
            "parts do not run together"
        );
    }
}
