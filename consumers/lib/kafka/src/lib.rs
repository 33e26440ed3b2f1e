//! Kafka client settings and topic admin: what every driftline binary needs to talk to the
//! cluster, and nothing else (no consumer loop, no RocksDB), so a producer-only tool like
//! send_data links only this.

pub mod config;
pub mod topics;

pub use config::KafkaArgs;

/// Errors reaching or configuring the Kafka cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("config: {0}")]
    Config(String),
    #[error("cannot use the Kafka cluster at {bootstrap}: {reason}")]
    Connect { bootstrap: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
