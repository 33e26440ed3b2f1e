//! Alerts: the monitor's decisions, from `driftline.drift`, posted to webhooks.
//!
//! The monitor publishes a report at every evaluation; this consumer turns changes of a
//! model's state (drift raised, changed, resolved) into one HTTP post per webhook, as
//! generic JSON or a Slack-compatible body. A target that keeps failing after its retries
//! sends the report to the dead-letter topic with the reason, and the consumer moves on.
//!
//! - [`alert`]: when a report is an alert and what it says (pure);
//! - [`webhook`]: targets and posting with retries;
//! - [`processor`]: the runtime `Processor`: the last level per model in the store;
//! - [`service`]: settings, /metrics, start and stop.

pub mod alert;
pub mod metrics;
pub mod processor;
pub mod service;
pub mod webhook;

/// Errors of the alerts service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Runtime(#[from] driftline_runtime::Error),
    #[error(transparent)]
    Process(#[from] driftline_process::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
