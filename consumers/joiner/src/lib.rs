//! The joiner: the one place a prediction meets its ground truth. It reads
//! `driftline.predictions` and `driftline.actuals` (co-partitioned by model), pairs them by
//! model and request id, and publishes each pair once to `driftline.labelled`, which the
//! monitor's performance, the trainer's row store and the dashboard read instead of
//! joining on their own.
//!
//! - [`join`]: the pure join and its one eviction rule (a prediction ages on its model's
//!   actuals' event-time clock; a count bound over all waiting halves) and duplicate
//!   recognition;
//! - [`processor`]: the runtime `Processor`, every change of the join committed with the
//!   offsets that caused it, so kill -9 between two halves loses neither;
//! - [`service`]: settings, /metrics, start and stop.

pub mod join;
pub mod metrics;
pub mod processor;
pub mod service;

/// Errors of the joiner.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Runtime(#[from] driftline_runtime::Error),
    #[error(transparent)]
    Cluster(#[from] driftline_kafka::Error),
    #[error(transparent)]
    Process(#[from] driftline_process::Error),
    #[error("state: {0}")]
    State(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
