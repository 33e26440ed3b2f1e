//! The predictor: serves each model's production version and logs every prediction.
//!
//! Reads `driftline.requests` (a consumer group) and `driftline.models` (the registry,
//! followed from the start); writes `driftline.predictions` (every prediction, from Kafka
//! or HTTP) and `driftline.dlq` (requests that fail validation). The HTTP API
//! ([`http`]) speaks the Open Inference Protocol v2 and a plain JSON `/predict`.
//!
//! Hot swap: a model is an `Arc` in a slot; a new production version replaces the `Arc`
//! atomically once fully loaded, so a request is served wholly by one version and in-flight
//! requests finish on the old one.

pub mod http;
pub mod metrics;
pub mod processor;
pub mod service;
pub mod slots;
pub mod swap_wait;

pub use slots::{ModelSlots, Served};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model {model} v{version}: {error}")]
    Load {
        model: String,
        version: i64,
        error: String,
    },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Runtime(#[from] driftline_runtime::Error),
    #[error(transparent)]
    Cluster(#[from] driftline_kafka::Error),
    #[error(transparent)]
    Process(#[from] driftline_process::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
