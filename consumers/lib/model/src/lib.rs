//! driftline's model runtime, shared by the trainer and the predictor. Pure: no Kafka, no
//! RocksDB, no files; rows in, models and numbers out.
//!
//! The trainer builds [`LabelledRow`]s from its store, splits them by time
//! ([`split_by_time`]: older rows train, the newest are the holdout), [`fit`]s the spec's
//! algorithm, [`evaluate`]s the candidate and the production model on the same
//! holdout, decides with [`better`], and publishes [`TrainedModel::to_bytes`] (format
//! [`FORMAT`]) with a [`reference_profile`]. The predictor loads the bytes with
//! [`TrainedModel::from_bytes`] and calls [`TrainedModel::predict`] or
//! [`TrainedModel::predict_batch`], which encode into reused buffers: a regression
//! prediction allocates nothing.
//!
//! - [`encoder`]: features → a dense row (standardised numerics with missing indicators,
//!   one-hot categoricals with an `<other>` bucket), fitted on training rows only and
//!   shipped inside the model.
//! - [`algorithm`]: `linear`, `ridge`, `lasso`, `elastic-net` (regression), `logistic` and
//!   `random-forest` (classification), their hyper-parameters and defaults.
//! - [`model`]: the fitted parameters in driftline's own serialisable form, prediction.
//! - [`evaluate()`], [`better`], [`search`]: holdout metrics, the promotion rule, a small
//!   grid search on a time-ordered validation split.
//! - [`profile`]: per-feature reference profiles plus the model's own predictions.
//! - [`loss`]: a regressor's mean absolute error before labels (NannyML's DLE), and
//!   [`performance_estimator`] a classifier's accuracy (CBPE).
//!
//! ```
//! use driftline_model::{LabelledRow, Target, TrainedModel, evaluate, fit, split_by_time};
//! use driftline_schemas::events::FeatureValue;
//! use driftline_schemas::spec::FeatureSpec;
//!
//! let spec = FeatureSpec::from_toml(r#"
//!     [dataset]
//!     name = "toy"
//!     time_column = "t"
//!     [model]
//!     name = "toy"
//!     algorithm = "linear"
//!     [target]
//!     column = "y"
//!     kind = "regression"
//!     [[features]]
//!     name = "x"
//!     kind = "numeric"
//! "#).unwrap();
//! // y = 2x + 1
//! let rows: Vec<LabelledRow> = (0..100)
//!     .map(|i| LabelledRow {
//!         event_time: i,
//!         features: [("x".to_string(), FeatureValue::Number(i as f64))].into(),
//!         target: Target::Value(2.0 * i as f64 + 1.0),
//!     })
//!     .collect();
//! let (train, holdout) = split_by_time(rows, 0.2);
//! let model = fit(&spec, &train).unwrap();
//! assert!(evaluate(&model, &holdout)["mae"] < 1e-9);
//!
//! let served = TrainedModel::from_bytes(&model.to_bytes()).unwrap();
//! let p = served.predict(&[("x".to_string(), FeatureValue::Number(1000.0))].into());
//! assert!((p.value.unwrap() - 2001.0).abs() < 1e-6);
//! ```

pub mod algorithm;
mod boost;
mod data;
pub mod encoder;
mod evaluate;
mod fit;
mod forest;
pub mod joined;
pub mod loss;
pub mod model;
pub mod profile;
mod solve;

pub use algorithm::Algorithm;
pub use data::{LabelledRow, Target, holdout_start, split_by_time};
pub use encoder::{Encoder, EncoderOptions};
pub use evaluate::{
    Search, Trial, better, elastic_net_grid, evaluate, evaluate_predictions, evaluate_with_errors,
    lower_is_better, performance_estimator, permutation_importance, primary_metric, search,
};
pub use fit::{fit, fit_with};
pub use joined::Joined;
pub use loss::{ErrorModel, error_estimator};
pub use model::{FORMAT, Scratch, TrainedModel};
pub use profile::{
    PREDICTION, feature_profile, feature_profiles, multivariate_of, multivariate_reference,
    prediction_profile, prediction_profile_of, reference_profile,
};

use driftline_schemas::spec::TargetKind;

/// Errors of the model runtime. All are about the inputs (spec, hyper-parameters, rows,
/// bytes): retrying with the same inputs gives the same error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "unknown algorithm `{0}` (known: linear, ridge, lasso, elastic-net, logistic, random-forest)"
    )]
    UnknownAlgorithm(String),
    #[error("algorithm `{algorithm}` does not fit a {target:?} target")]
    WrongTarget {
        algorithm: &'static str,
        target: TargetKind,
    },
    #[error("hyper-parameter `{name}`: {message}")]
    HyperParameter { name: String, message: String },
    #[error("{rows} rows is not enough to fit (at least {needed})")]
    NotEnoughRows { rows: usize, needed: usize },
    #[error("training row {row}: {message}")]
    Row { row: usize, message: String },
    #[error("fit: {0}")]
    Fit(String),
    #[error("model bytes are not valid {FORMAT}: {0}")]
    Decode(String),
    #[error("model bytes are in format `{found}`, this build reads `{expected}`")]
    Format {
        found: String,
        expected: &'static str,
    },
    #[error("model bytes describe an inconsistent model: {0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
