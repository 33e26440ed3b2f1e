//! The trainer: turns the prediction log and late ground truth into new model versions.
//!
//! Reads `driftline.labelled` (the joiner's rows, kept in a bounded, time-ordered store
//! per model, in RocksDB with the consumed offsets in the same `WriteBatch`), `driftline.retrain` (a retrain becomes a pending job
//! in the same store) and `driftline.models` (the registry, followed from the start).
//! Writes `driftline.models`: every trained version, promoted to production only when it
//! beats the incumbent on the same time-ordered holdout by a margin, else as rejected with
//! both sets of numbers.
//!
//! - [`labelled`]: the store's keys and its bounded row index.
//! - [`processor`]: the runtime [`Processor`](driftline_runtime::Processor): rows, jobs,
//!   the optional schedule.
//! - [`train`]: pure training: window → split → fit → evaluate → the `ModelPublished`.
//! - [`bootstrap`]: the first version of a model, from the data set its spec names.
//! - [`jobs`]: runs pending jobs off the consume path (`spawn_blocking`), exactly one
//!   version per trigger across crashes (see its docs for the argument).
//! - [`ops`]: registry operations (list, show, promote, rollback), shared by [`cli`] and
//!   [`http`].
//! - [`service`]: all of it together (`driftline trainer`).

pub mod bootstrap;
pub mod cli;
pub mod http;
pub mod jobs;
pub mod labelled;
pub mod metrics;
pub mod ops;
pub mod processor;
pub mod rollout;
pub mod service;
pub mod train;

/// Errors of the trainer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("model {model}: {rows} usable labelled rows, at least {needed} needed to train")]
    NotEnoughRows {
        model: String,
        rows: usize,
        needed: usize,
    },
    #[error(transparent)]
    Model(#[from] driftline_model::Error),
    #[error("data set: {0}")]
    Data(String),
    #[error("state: {0}")]
    State(String),
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    #[error("model {model:?} has no version {version}")]
    UnknownVersion { model: String, version: i64 },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Runtime(#[from] driftline_runtime::Error),
    #[error(transparent)]
    Cluster(#[from] driftline_kafka::Error),
    #[error(transparent)]
    Process(#[from] driftline_process::Error),
    #[error(transparent)]
    Schema(#[from] driftline_schemas::Error),
}

impl Error {
    /// Whether trying again later can succeed (broker trouble, more rows arriving), as
    /// opposed to a problem with the inputs or the request.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Runtime(e) => e.is_retryable(),
            Error::NotEnoughRows { .. } => true,
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
