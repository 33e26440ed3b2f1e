//! driftline's drift statistics, shared by the monitor service and the offline
//! `driftline drift` and `driftline backtest` commands.
//!
//! It compares a reference sample of each feature with a current one:
//!
//! - numeric features ([`numeric`]): PSI over quantile bins of the reference (default, 10
//!   bins) or over Evidently's equal-width "sturges" bins; the two-sample
//!   Kolmogorov-Smirnov statistic D with SciPy's asymptotic p-value ([`kstwo`], a port of
//!   `scipy.stats.kstwo`); the Wasserstein distance divided by the reference's standard
//!   deviation; the Jensen-Shannon distance over the same bins as PSI;
//! - categorical features ([`categorical`]): the chi-square test of the reference-vs-current
//!   contingency table (as `scipy.stats.chi2_contingency`), Jensen-Shannon and PSI over
//!   categories, with unseen categories and missing values counted, never a crash;
//! - multivariate drift ([`multivariate`]): NannyML's PCA reconstruction error, which sees a
//!   change in how features move together that no single feature shows;
//! - performance before labels ([`estimate`]): NannyML's CBPE of a classifier's accuracy
//!   from isotonic-calibrated probabilities;
//! - a decision ([`policy`]): per-feature thresholds on effect sizes by default (large
//!   windows make every p-value tiny), and a share of drifted features for the data set.
//!
//! The statistics modules do no I/O and take sorted slices and count vectors, so a
//! streaming window (incremental histograms, sorted runs) feeds them directly. [`frame`]
//! reads a CSV file into per-column distributions and [`report`] compares two frames into
//! the JSON and table the offline command prints. Values are checked against SciPy in
//! `tests/scipy_fixtures.rs`, with the script that computed them beside the fixtures.
//!
//! ```
//! use driftline_drift::numeric::{self, Binning, SortedSample};
//!
//! let reference = SortedSample::from_unsorted((0..1000).map(|i| (i % 100) as f64).collect());
//! let current = SortedSample::from_unsorted((0..1000).map(|i| (i % 100 + 10) as f64).collect());
//! let stats = numeric::compare(reference.view(), current.view(), Binning::default());
//! assert!((stats.ks_d.unwrap() - 0.1).abs() < 1e-12);
//! assert!(stats.ks_p.unwrap() < 1e-4);
//! // Shifted by 10 with a standard deviation of about 28.9: about 0.35 sd.
//! assert!((stats.wasserstein_norm.unwrap() - 10.0 / 28.866).abs() < 1e-3);
//! ```

pub mod calibrate;
pub mod categorical;
pub mod concept;
pub mod estimate;
pub mod frame;
pub mod kstwo;
pub mod multivariate;
pub mod numeric;
mod plain;
pub mod policy;
pub mod quality;
pub mod report;

pub use categorical::CategoryCounts;
pub use frame::{Column, ColumnData, Frame};
pub use numeric::{Binning, SortedSample};
pub use policy::DriftPolicy;
pub use report::{ColumnReport, CompareOptions, DriftReport, compare};

/// Errors of the drift library. Statistics never fail on data (they return `None` for
/// what cannot be computed); errors come from reading files, malformed inputs to the
/// checked constructors, and invalid options.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{source_name}: CSV: {message}")]
    Csv {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: no column `{column}`")]
    MissingColumn { source_name: String, column: String },
    #[error("{source_name}, row {row}, column `{column}`: {message}")]
    Cell {
        source_name: String,
        row: u64,
        column: String,
        message: String,
    },
    #[error("sample is not sorted ascending at index {0}")]
    Unsorted(usize),
    #[error("sample has a non-finite value at index {0}")]
    NonFinite(usize),
    #[error("binning {0:?}: expected `quantile` or `sturges`")]
    Binning(String),
    #[error("drift policy: {0}")]
    Policy(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
