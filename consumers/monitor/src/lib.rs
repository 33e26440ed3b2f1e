//! The drift monitor: it reads `driftline.predictions` and `driftline.labelled`, keeps a
//! window of recent traffic per model version in RocksDB, compares it with the reference
//! profile that version shipped with, and writes a `DriftReport` to `driftline.drift` on
//! every evaluation and a `RetrainRequested` to `driftline.retrain` when the policy
//! confirms a drift.
//!
//! The logic is pure and shared with the offline `backtest` (consumers/offline):
//!
//! - [`tracker`]: per-feature incremental statistics (PSI and Jensen-Shannon bins, exact
//!   KS and Wasserstein from cells of the reference's values plus an order structure,
//!   category counts), O(log n) per event and O(reference) per evaluation;
//! - [`window`]: the count- or time-bounded ring of events feeding the trackers;
//! - [`performance`]: error metrics over the joiner's labelled predictions;
//! - [`policy`]: the decision (minimum sample, confirmation, hysteresis, cooldown,
//!   multiple-testing correction) with its defaults justified;
//! - [`monitor`]: one model version's monitor, producing the events with deterministic
//!   ids (a report is named by model, version and window position; a retrain by its
//!   report), so an emission replayed after a crash is recognised downstream.
//!
//! Around it: [`processor`] (the runtime `Processor`: state and offsets in one RocksDB
//! WriteBatch, rebuilt exactly after kill -9), [`service`] (registry, HTTP, metrics) and
//! [`cli`] (the policy flags the service and `backtest` share).

pub mod cli;
pub mod http;
pub mod metrics;
pub mod monitor;
pub mod performance;
pub mod policy;
pub mod processor;
pub mod service;
pub mod state;
pub mod tracker;
pub mod window;

pub use monitor::{Evaluation, ModelMonitor, MonitorConfig};
pub use policy::{Correction, MonitorPolicy};
pub use window::{Observation, Window, WindowConfig};

/// Errors of the monitor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Drift(#[from] driftline_drift::Error),
    #[error(transparent)]
    Model(#[from] driftline_model::Error),
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
