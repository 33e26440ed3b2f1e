//! Writing as the owner of one partition, outside the consume loop.
//!
//! Some work belongs to a partition but does not fit in the loop's transactions: the
//! trainer fits a model for minutes and then publishes it. Its writer is a transactional
//! producer whose id names the partition (`<group>-<what>-<partition>`), made by whoever
//! owns the partition now. Making it fences every earlier writer with that id (an
//! instance that lost the partition and has not noticed yet): their unfinished
//! transaction is aborted and their next commit fails. What one commit holds (say, a
//! model version and the changelog records that clear its job) is visible to a
//! read_committed reader all at once or not at all.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tracing::info;

use crate::Result;
use crate::consumer::{CALL_TIMEOUT, off_thread, send, start_producer};
use crate::health::Health;
use driftline_kafka::KafkaArgs;

/// One record of a [`FencedWriter`] commit: a value, or a tombstone when `payload` is
/// `None`, to `partition` of `topic` (or wherever its key goes).
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub topic: String,
    pub partition: Option<i32>,
    pub key: Vec<u8>,
    pub payload: Option<Vec<u8>>,
    /// Kafka headers (name, value), e.g. a model record's signature.
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

/// Why a commit did not happen; nothing of it is visible either way.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Another instance made a writer with the same id: it owns the partition now.
    #[error("fenced by a newer owner of {id}: {error}")]
    Fenced { id: String, error: String },
    #[error("transaction of {id} failed: {error}")]
    Failed { id: String, error: String },
}

pub struct FencedWriter {
    producer: FutureProducer,
    id: String,
}

impl FencedWriter {
    /// Makes the writer `id`, fencing any earlier one; waits (with a backoff) while the
    /// broker cannot be reached. Only a refusal (not authorised) is an error.
    pub async fn start(kafka: &KafkaArgs, id: &str, health: &Health) -> Result<Self> {
        let mut config = kafka.producer_config();
        config.set("transactional.id", id);
        let producer = start_producer(&config, id, health).await?;
        info!(transactional_id = %id, "fenced writer started");
        Ok(Self {
            producer,
            id: id.to_string(),
        })
    }

    /// Writes `writes` in one transaction. After an error the writer is spent: make a new
    /// one (which aborts what this one left open), or give the partition up when fenced.
    pub async fn commit(&self, writes: &[Write]) -> std::result::Result<(), WriteError> {
        // Once fenced, librdkafka fails what is in flight with other codes (purged): the
        // producer's fatal error says what happened.
        let failed = |e: &dyn std::fmt::Display, fenced: bool| match fenced
            || self
                .producer
                .client()
                .fatal_error()
                .is_some_and(|(code, _)| is_fenced_code(code))
        {
            true => WriteError::Fenced {
                id: self.id.clone(),
                error: e.to_string(),
            },
            false => WriteError::Failed {
                id: self.id.clone(),
                error: e.to_string(),
            },
        };
        self.producer
            .begin_transaction()
            .map_err(|e| failed(&e, is_fenced(&e)))?;
        let mut sent = Vec::with_capacity(writes.len());
        for w in writes {
            let mut rec = FutureRecord::<[u8], [u8]>::to(&w.topic).key(w.key.as_slice());
            if let Some(p) = w.partition {
                rec = rec.partition(p);
            }
            if let Some(v) = &w.payload {
                rec = rec.payload(v.as_slice());
            }
            if !w.headers.is_empty() {
                rec = rec.headers(w.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
                    h.insert(rdkafka::message::Header {
                        key: k,
                        value: Some(v),
                    })
                }));
            }
            sent.push(
                send(&self.producer, rec)
                    .await
                    .map_err(|e| failed(&e, false))?,
            );
        }
        for delivery in sent {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(failed(&e, is_fenced(&e))),
                Err(_) => return Err(failed(&"delivery cancelled", false)),
            }
        }
        let producer = self.producer.clone();
        match off_thread(2 * CALL_TIMEOUT, move || {
            producer.commit_transaction(CALL_TIMEOUT)
        })
        .await
        {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(failed(&e, is_fenced(&e))),
            None => Err(failed(
                &format!("no answer to the commit within {:?}", 2 * CALL_TIMEOUT),
                false,
            )),
        }
    }
}

impl Drop for FencedWriter {
    /// Closing a producer waits for its queue: not on the async runtime's threads.
    fn drop(&mut self) {
        let producer = self.producer.clone();
        std::thread::spawn(move || drop(producer));
    }
}

/// Whether `e` says a newer writer with the same transactional id exists.
fn is_fenced(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => is_fenced_code(t.code()),
        KafkaError::MessageProduction(c) => is_fenced_code(*c),
        _ => false,
    }
}

fn is_fenced_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::Fenced | C::ProducerFenced | C::InvalidProducerEpoch
    )
}

/// The id of the writer for `partition` of `group`'s `what`.
pub fn writer_id(group: &str, what: &str, partition: i32) -> String {
    format!("{group}-{what}-{partition}")
}
