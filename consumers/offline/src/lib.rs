//! The offline commands, on the same code as the services.
//!
//! - `driftline drift`: two data files compared column by column ([`drift::drift`]);
//! - `driftline backtest`: a data file replayed in event-time order through the monitor's
//!   window and policy without Kafka, printing every evaluation ([`backtest::backtest`]),
//!   so thresholds can be tuned on history before going live. The first rows (or those
//!   before a date) are the reference; unless `--no-model`, the trainer's own training
//!   (split, fit, holdout, reference profile) runs on them, so the prediction and the
//!   error metrics are monitored too.
//!
//! Files are read through driftline-dataset, as send_data reads them.

pub mod backtest;
pub mod drift;

/// Errors of the offline commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config: {0}")]
    Config(String),
    #[error("{path}: {message}")]
    Data { path: String, message: String },
    #[error(transparent)]
    Drift(#[from] driftline_drift::Error),
    #[error(transparent)]
    Model(#[from] driftline_model::Error),
    #[error(transparent)]
    Monitor(#[from] driftline_monitor::Error),
    #[error(transparent)]
    Train(#[from] driftline_trainer::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A data file, plain or gzip.
fn open(path: &std::path::Path) -> Result<Box<dyn std::io::Read + Send>> {
    driftline_dataset::open(path).map_err(|e| Error::Data {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn load_spec(path: &std::path::Path) -> Result<driftline_schemas::spec::FeatureSpec> {
    driftline_schemas::spec::FeatureSpec::load(path).map_err(|e| Error::Config(e.to_string()))
}
