//! The monitor's policy flags, shared by the service and the offline `backtest`
//! (consumers/offline).

use clap::{Args, ValueEnum};
use driftline_drift::DriftPolicy;
use driftline_drift::concept::Watch;
use driftline_drift::policy::{Calibration, defaults};
use driftline_schemas::duration::parse_duration_ms;

use crate::Result;
use crate::monitor::MonitorConfig;
use crate::policy::{Correction, MonitorPolicy};
use crate::window::WindowConfig;

/// Where the lines of the distances and of the error's rise come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Thresholds {
    /// From how they varied between sub-windows of the reference and of the holdout.
    Calibrated,
    /// The fixed lines (`--numeric-threshold`, `--categorical-threshold`,
    /// `--max-error-increase`).
    Fixed,
}

/// The window and decision policy (shared by the service and `backtest`).
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Events per window (count-based window; also its memory bound).
    #[arg(
        long = "window",
        env = "DRIFTLINE_MONITOR_WINDOW",
        default_value_t = 10_000
    )]
    pub window: usize,
    /// Also keep only events this recent, in event time, e.g. `7d`, `12h` (time-based window).
    #[arg(long, env = "DRIFTLINE_MONITOR_WINDOW_TIME", value_parser = parse_duration_ms)]
    pub window_time: Option<i64>,
    /// Evaluate after this many new events.
    #[arg(
        long,
        env = "DRIFTLINE_MONITOR_EVALUATE_EVERY",
        default_value_t = 1_000
    )]
    pub evaluate_every: u64,
    /// ...or after this much event time, e.g. `1h`.
    #[arg(long, env = "DRIFTLINE_MONITOR_EVALUATE_INTERVAL", value_parser = parse_duration_ms)]
    pub evaluate_interval: Option<i64>,
    /// Quantile bins of the reference for PSI and Jensen-Shannon.
    #[arg(long, env = "DRIFTLINE_MONITOR_BINS", default_value_t = 10)]
    pub bins: usize,
    /// Fewest events in the window for any decision.
    #[arg(long, env = "DRIFTLINE_MONITOR_MIN_SAMPLES", default_value_t = 1_000)]
    pub min_samples: u64,
    /// Consecutive drifting evaluations before a drift is confirmed.
    #[arg(long, env = "DRIFTLINE_MONITOR_CONFIRMATIONS", default_value_t = 3)]
    pub confirmations: u32,
    /// New events after a retrain request before another [default: the window size].
    #[arg(long, env = "DRIFTLINE_MONITOR_COOLDOWN")]
    pub cooldown: Option<u64>,
    /// Share of drifted features at which the model drifts.
    #[arg(long, env = "DRIFTLINE_MONITOR_SHARE", default_value_t = defaults::SHARE)]
    pub share: f64,
    /// Once confirmed, the drift holds until the share falls below this.
    #[arg(long, env = "DRIFTLINE_MONITOR_RELEASE_SHARE", default_value_t = 0.4)]
    pub release_share: f64,
    /// Where the lines of the distances and of the error's rise come from: `calibrated`,
    /// from how they varied between sub-windows of the reference and the holdout, at
    /// `--false-alarm-rate` (the fixed lines below for a model without them); `fixed`, the
    /// lines below.
    #[arg(
        long,
        env = "DRIFTLINE_MONITOR_THRESHOLDS",
        value_enum,
        default_value = "calibrated"
    )]
    pub thresholds: Thresholds,
    /// A numeric feature drifts at this normalised Wasserstein distance (reference sds),
    /// with fixed thresholds.
    #[arg(
        long,
        env = "DRIFTLINE_MONITOR_NUMERIC_THRESHOLD",
        default_value_t = defaults::WASSERSTEIN_NORM
    )]
    pub numeric_threshold: f64,
    /// A categorical feature drifts at this Jensen-Shannon distance, with fixed thresholds.
    #[arg(
        long,
        env = "DRIFTLINE_MONITOR_CATEGORICAL_THRESHOLD",
        default_value_t = defaults::JENSEN_SHANNON
    )]
    pub categorical_threshold: f64,
    /// The chance of a false alarm per evaluation over every check whose line comes from
    /// the reference: data quality (missing share, numbers outside the reference's range,
    /// unseen categories), calibrated distances and the error's rise. 0 turns the data
    /// quality checks off and the thresholds fixed.
    #[arg(
        long,
        alias = "quality-false-alarm-rate",
        env = "DRIFTLINE_MONITOR_FALSE_ALARM_RATE",
        default_value_t = defaults::FALSE_ALARM_RATE
    )]
    pub false_alarm_rate: f64,
    /// A fixed rule, off by default: a feature drifts when its missing share grows by
    /// this much (absolute, e.g. 0.1).
    #[arg(long, env = "DRIFTLINE_MONITOR_MISSING_SHARE_INCREASE")]
    pub missing_share_increase: Option<f64>,
    /// Multiple-testing correction of p-values: none, bonferroni, bh.
    #[arg(long, env = "DRIFTLINE_MONITOR_CORRECTION", default_value = "none")]
    pub correction: Correction,
    /// Relative worsening of MAE (or log-loss) over the holdout that counts as drift, with
    /// fixed thresholds.
    #[arg(
        long,
        env = "DRIFTLINE_MONITOR_MAX_ERROR_INCREASE",
        default_value_t = 0.25
    )]
    pub max_error_increase: f64,
    /// Do not let performance decide (it is still reported).
    #[arg(long, env = "DRIFTLINE_MONITOR_IGNORE_PERFORMANCE")]
    pub ignore_performance: bool,
    /// A concept-drift detector on each version's joined errors (River's defaults): off,
    /// adwin, page-hinkley (rises only) or ddm (classifiers). A rise it signals makes an
    /// evaluation due at the next prediction and asks for a retrain without waiting for
    /// confirmations.
    #[arg(long, env = "DRIFTLINE_MONITOR_ERROR_DETECTOR", default_value = "off")]
    pub error_detector: Watch,
    /// Do not let the multivariate check (PCA reconstruction error) decide (it is still
    /// reported).
    #[arg(long, env = "DRIFTLINE_MONITOR_IGNORE_MULTIVARIATE")]
    pub ignore_multivariate: bool,
    /// Do not let a drop of the performance estimated before labels (accuracy by CBPE for
    /// classifiers, MAE by DLE for regressors) decide (it is still reported).
    #[arg(long, env = "DRIFTLINE_MONITOR_IGNORE_ESTIMATE")]
    pub ignore_estimate: bool,
}

impl Default for PolicyArgs {
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            p: PolicyArgs,
        }
        Wrap::parse_from(["policy"]).p
    }
}

impl PolicyArgs {
    /// The monitor's configuration, checked.
    pub fn config(&self) -> Result<MonitorConfig> {
        let base = DriftPolicy::default();
        let drift = DriftPolicy {
            numeric: DriftPolicy::numeric_rules(self.numeric_threshold),
            categorical: DriftPolicy::categorical_rules(self.categorical_threshold),
            share: self.share,
            calibration: (self.false_alarm_rate > 0.0).then_some(Calibration {
                false_alarm_rate: self.false_alarm_rate,
                distances: self.thresholds == Thresholds::Calibrated,
            }),
            missing_share_increase: self.missing_share_increase,
            ..base
        };
        let config = MonitorConfig {
            window: WindowConfig {
                max_events: self.window,
                max_age_ms: self.window_time,
                bins: self.bins,
            },
            evaluate_every: self.evaluate_every,
            evaluate_interval_ms: self.evaluate_interval,
            policy: MonitorPolicy {
                drift,
                correction: self.correction,
                min_samples: self.min_samples,
                confirmations: self.confirmations,
                release_share: self.release_share,
                cooldown_events: self.cooldown.unwrap_or(self.window as u64),
                max_error_increase: (!self.ignore_performance).then_some(self.max_error_increase),
                prediction_drift: true,
                error_watch: self.error_detector,
                multivariate: !self.ignore_multivariate,
                estimate: !self.ignore_estimate,
            },
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_flags_give_the_documented_defaults() {
        let c = PolicyArgs::default().config().unwrap();
        assert_eq!(c.policy.drift, DriftPolicy::default());
        assert_eq!(
            (c.window.max_events, c.evaluate_every, c.policy.min_samples),
            (10_000, 1_000, 1_000)
        );
        assert_eq!(c.policy.cooldown_events, 10_000);
    }
}
