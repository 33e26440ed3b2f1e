//! The runtime every driftline consumer is built on.
//!
//! It reads topics with an rdkafka consumer group, hands each message to a [`Processor`]
//! (pure logic: bytes and a state transaction in, messages to emit out), and commits the
//! emitted messages, a changelog record per state change and the consumed offsets in one
//! Kafka transaction. RocksDB is a local copy of the changelog; on every assignment the
//! partitions' state is restored from the changelog before a message is read. A kill -9
//! at any point, a rebalance or a move to another machine therefore neither loses nor
//! double-applies a message, and a read_committed reader sees each output once.
//!
//! A message that can never be processed goes to the dead-letter topic with its reason,
//! is counted, and its offset is committed like any other.

pub mod consumer;
pub mod dead_letter;
pub mod fenced;
pub mod health;
pub mod metrics;
pub mod progress;
pub mod read;
pub mod registry;
pub mod service;
pub mod signing;
pub mod store;

pub use consumer::{EventTime, Gate, Output, Processor, Record, Rejection, RunOptions, run};
pub use store::{Store, Txn};

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("schema: {0}")]
    Schema(#[from] driftline_schemas::Error),
    #[error("config: {0}")]
    Config(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot write to topic {topic}: {error}")]
    Delivery { topic: String, error: String },
    #[error(transparent)]
    Cluster(#[from] driftline_kafka::Error),
    #[error(transparent)]
    Process(#[from] driftline_process::Error),
}

impl Error {
    /// Whether trying again (e.g. after a restart) can succeed. Configuration errors and
    /// corrupt state cannot; broker and delivery trouble usually can.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Kafka(_)
                | Error::Delivery { .. }
                | Error::Io(_)
                | Error::Cluster(driftline_kafka::Error::Kafka(_))
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
