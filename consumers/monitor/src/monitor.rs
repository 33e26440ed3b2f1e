//! One model version's monitor: its window, its labelled predictions, its policy state;
//! events in, [`DriftReport`]s and [`RetrainRequested`] out. Pure: the service persists what
//! each call reports as changed ([`Observed`], [`JoinedActual`], [`ModelMeta`]), the
//! backtest keeps nothing.

use std::collections::BTreeMap;
use std::ops::Range;

use driftline_drift::calibrate::{self, NullCurve};
use driftline_drift::concept::ErrorWatch;
use driftline_drift::estimate::{self, Estimator};
use driftline_drift::policy::FeatureVerdict;
use driftline_model::loss::ERROR_MODEL_FORMAT;
use driftline_model::{ErrorModel, PREDICTION, lower_is_better};
use driftline_schemas::events::{
    DriftReport, ErrorEstimator, EstimatedPerformance, FeatureDrift, FeatureKind, FeatureProfile,
    FeatureValue, Labelled, ModelPublished, PerformanceEstimator, PredictionLogged, Reconstruction,
    ReportWindow, RetrainRequested, RetrainTrigger, Signal, SubWindows, offsets_key,
};
use serde::{Deserialize, Serialize};

use crate::performance::{Joined, PerformanceWindow};
use crate::policy::{Findings, MonitorPolicy, PolicyState};
use crate::tracker::FeatureStats;
use crate::window::{Observation, Window, WindowConfig};
use crate::{Error, Result};

/// Everything configurable about a monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorConfig {
    pub window: WindowConfig,
    /// Evaluate after this many new events...
    pub evaluate_every: u64,
    /// ...or once this much event time has passed since the last evaluation. Event time,
    /// not wall-clock time, so a replay evaluates at the same points.
    pub evaluate_interval_ms: Option<i64>,
    pub policy: MonitorPolicy,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            window: WindowConfig::default(),
            evaluate_every: 1_000,
            evaluate_interval_ms: None,
            policy: MonitorPolicy::default(),
        }
    }
}

impl MonitorConfig {
    pub fn validate(&self) -> Result<()> {
        self.policy.validate()?;
        if self.window.max_events == 0 || self.evaluate_every == 0 || self.window.bins == 0 {
            return Err(Error::Config(
                "window size, evaluation interval and bins must be at least 1".into(),
            ));
        }
        if self.policy.min_samples > self.window.max_events as u64 {
            return Err(Error::Config(format!(
                "minimum sample {} is larger than the window ({} events): the monitor could never decide",
                self.policy.min_samples, self.window.max_events
            )));
        }
        Ok(())
    }
}

/// What a version's record says beside its profiles: the holdout's metrics, how its mean
/// error varied between sub-windows of it (where the line for a rise of the error comes
/// from), and the reference's PCA for the multivariate check.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Holdout {
    pub metrics: BTreeMap<String, f64>,
    pub error_sub_windows: Vec<SubWindows>,
    /// Permutation importance per feature (what a drifted feature's weight in the
    /// decision's "why" is).
    pub feature_importance: BTreeMap<String, f64>,
    pub multivariate: Option<Reconstruction>,
    /// CBPE's calibration, for a classifier's accuracy before labels.
    pub performance_estimator: Option<PerformanceEstimator>,
    /// DLE's error model, for a regressor's mean absolute error before labels.
    pub error_estimator: Option<ErrorEstimator>,
}

impl Holdout {
    pub fn of(published: &ModelPublished) -> Self {
        Self {
            metrics: published.metrics.clone(),
            error_sub_windows: published.error_sub_windows.clone(),
            feature_importance: published.feature_importance.clone(),
            multivariate: published.multivariate.clone(),
            performance_estimator: published.performance_estimator.clone(),
            error_estimator: published.error_estimator.clone(),
        }
    }
}

/// Metrics alone: the fixed rise decides.
impl From<BTreeMap<String, f64>> for Holdout {
    fn from(metrics: BTreeMap<String, f64>) -> Self {
        Self {
            metrics,
            error_sub_windows: Vec::new(),
            feature_importance: Default::default(),
            multivariate: None,
            performance_estimator: None,
            error_estimator: None,
        }
    }
}

/// The small state of a monitor, persisted after every event beside the window's slots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub model: String,
    pub version: i64,
    pub first_seq: u64,
    pub newest_time: i64,
    pub perf_first_seq: u64,
    pub state: PolicyState,
    pub last_eval_seq: u64,
    pub last_eval_time: Option<i64>,
    pub end_offsets: BTreeMap<String, i64>,
    /// The detector on this version's errors (absent in state written before there was one).
    #[serde(default)]
    pub errors: Option<ErrorWatch>,
    /// What it said since the last evaluation.
    #[serde(default)]
    pub error_rise: Option<String>,
}

/// What [`ModelMonitor::observe`] changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The window slot the event went to.
    pub seq: u64,
    pub evicted: Range<u64>,
}

/// What [`ModelMonitor::label`] changed.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinedActual {
    pub seq: u64,
    pub joined: Joined,
    pub evicted: Range<u64>,
}

/// One evaluation's output.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub report: DriftReport,
    pub retrain: Option<RetrainRequested>,
}

/// How a version's performance is estimated before labels.
#[derive(Debug, Clone)]
enum BeforeLabels {
    /// CBPE: each prediction's chance of being right; the window's mean is its accuracy.
    Accuracy(Estimator),
    /// DLE: each prediction's expected absolute error; the window's mean is its MAE.
    Mae { errors: ErrorModel, error_sd: f64 },
}

impl BeforeLabels {
    /// The version's estimator with the null curve of its line, if its record has one:
    /// CBPE's from its estimated error over the holdout's sub-windows, DLE's the realised
    /// error's (as NannyML). An error model that does not load is logged and left out: the
    /// monitor still watches everything else.
    fn of(holdout: &Holdout, model: &str, version: i64) -> Option<(Self, Option<NullCurve>)> {
        if let Some(e) = &holdout.performance_estimator {
            return Some((
                Self::Accuracy(Estimator::new(e)),
                NullCurve::fit(&e.sub_windows),
            ));
        }
        let e = holdout.error_estimator.as_ref()?;
        let loaded = if e.model_format == ERROR_MODEL_FORMAT {
            ErrorModel::from_bytes(&e.model_bytes).map_err(|err| err.to_string())
        } else {
            Err(format!("unknown format {:?}", e.model_format))
        };
        match loaded {
            Ok(errors) => Some((
                Self::Mae {
                    errors,
                    error_sd: e.error_sd,
                },
                NullCurve::fit(&holdout.error_sub_windows),
            )),
            Err(err) => {
                tracing::warn!(
                    model,
                    version,
                    "the error estimator does not load ({err}): no estimate before labels"
                );
                None
            }
        }
    }
}

pub struct ModelMonitor {
    model: String,
    version: i64,
    profiles: Vec<FeatureProfile>,
    prediction: Option<usize>,
    holdout: BTreeMap<String, f64>,
    importance: BTreeMap<String, f64>,
    error_null: Option<NullCurve>,
    /// The mean reconstruction error's null curve, from the reference's sub-windows.
    multivariate_null: Option<NullCurve>,
    /// Each prediction's share of the estimate before labels.
    before_labels: Option<BeforeLabels>,
    /// The mean estimated error's null curve, from the holdout's sub-windows.
    estimate_null: Option<NullCurve>,
    config: MonitorConfig,
    window: Window,
    perf: PerformanceWindow,
    state: PolicyState,
    last_eval_seq: u64,
    last_eval_time: Option<i64>,
    end_offsets: BTreeMap<String, i64>,
    errors: Option<ErrorWatch>,
    error_rise: Option<String>,
}

impl ModelMonitor {
    /// A fresh monitor of `version`, compared with its reference `profiles` (the
    /// [`PREDICTION`] profile, when present, monitors the model's output) and `holdout`.
    pub fn new(
        model: &str,
        version: i64,
        profiles: &[FeatureProfile],
        holdout: impl Into<Holdout>,
        config: MonitorConfig,
    ) -> Self {
        let holdout = holdout.into();
        let before_labels = BeforeLabels::of(&holdout, model, version);
        Self {
            model: model.to_string(),
            version,
            prediction: profiles.iter().position(|p| p.name == PREDICTION),
            profiles: profiles.to_vec(),
            error_null: NullCurve::fit(&holdout.error_sub_windows),
            holdout: holdout.metrics,
            importance: holdout.feature_importance,
            window: Window::new(profiles, config.window)
                .with_multivariate(holdout.multivariate.as_ref())
                .with_estimate(before_labels.is_some()),
            multivariate_null: holdout
                .multivariate
                .as_ref()
                .and_then(|r| NullCurve::fit(&r.sub_windows)),
            estimate_null: before_labels.as_ref().and_then(|(_, null)| *null),
            before_labels: before_labels.map(|(b, _)| b),
            perf: PerformanceWindow::new(config.window.max_events, 0),
            errors: ErrorWatch::new(config.policy.error_watch),
            error_rise: None,
            config,
            state: PolicyState::default(),
            last_eval_seq: 0,
            last_eval_time: None,
            end_offsets: BTreeMap::new(),
        }
    }

    /// Rebuilds a monitor from its persisted parts (in sequence order); it is then in
    /// exactly the state of the monitor that persisted them.
    pub fn restore(
        meta: &ModelMeta,
        profiles: &[FeatureProfile],
        holdout: impl Into<Holdout>,
        config: MonitorConfig,
        events: impl IntoIterator<Item = Observation>,
        joined: impl IntoIterator<Item = Joined>,
    ) -> Self {
        let mut m = Self::new(&meta.model, meta.version, profiles, holdout, config);
        // The new monitor's empty window (its reconstruction built once), moved to where
        // the persisted one stood.
        let empty = Window::new(&[], m.config.window);
        m.window =
            std::mem::replace(&mut m.window, empty).resumed_at(meta.first_seq, meta.newest_time);
        for e in events {
            m.window.push(&e);
        }
        m.perf = PerformanceWindow::new(m.config.window.max_events, meta.perf_first_seq);
        for j in joined {
            m.perf.push(j);
        }
        m.state = meta.state;
        m.last_eval_seq = meta.last_eval_seq;
        m.last_eval_time = meta.last_eval_time;
        m.end_offsets = meta.end_offsets.clone();
        // The persisted detector, unless the configuration now names another (or none).
        if let (Some(now), Some(saved)) = (&m.errors, &meta.errors)
            && std::mem::discriminant(now) == std::mem::discriminant(saved)
        {
            m.errors = Some(saved.clone());
        }
        m.error_rise = meta.error_rise.clone();
        m
    }

    pub fn meta(&self) -> ModelMeta {
        ModelMeta {
            model: self.model.clone(),
            version: self.version,
            first_seq: self.window.first_seq(),
            newest_time: self.window.newest_time(),
            perf_first_seq: self.perf.first_seq(),
            state: self.state,
            last_eval_seq: self.last_eval_seq,
            last_eval_time: self.last_eval_time,
            end_offsets: self.end_offsets.clone(),
            errors: self.errors.clone(),
            error_rise: self.error_rise.clone(),
        }
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    pub fn window(&self) -> &Window {
        &self.window
    }

    /// Sequence numbers of the window's slots and of the joined pairs' slots (for deleting
    /// them when the version changes).
    pub fn slots(&self) -> (Range<u64>, Range<u64>) {
        (
            self.window.first_seq()..self.window.next_seq(),
            self.perf.first_seq()..self.perf.next_seq(),
        )
    }

    /// The window event of a logged prediction (features in reference order).
    pub fn event_of(&self, p: &PredictionLogged) -> Observation {
        let values = self
            .profiles
            .iter()
            .enumerate()
            .map(|(i, prof)| {
                if Some(i) == self.prediction {
                    match (&p.prediction.value, &p.prediction.class) {
                        (Some(v), _) => FeatureValue::Number(*v),
                        (None, Some(c)) => FeatureValue::Category(c.clone()),
                        _ => FeatureValue::Missing,
                    }
                } else {
                    p.features
                        .get(&prof.name)
                        .cloned()
                        .unwrap_or(FeatureValue::Missing)
                }
            })
            .collect();
        Observation {
            event_time: p.event_time,
            values,
            expected: match &self.before_labels {
                Some(BeforeLabels::Accuracy(e)) => e.chance(&p.prediction),
                Some(BeforeLabels::Mae { errors, .. }) => (p.prediction.value)
                    .filter(|v| v.is_finite())
                    .map(|v| errors.expected_error(&p.features, v)),
                None => None,
            },
        }
    }

    /// Records where the input stands ("topic/partition" -> next offset) for reports.
    pub fn position(&mut self, topic: &str, partition: i32, next_offset: i64) {
        self.end_offsets
            .insert(offsets_key(topic, partition), next_offset);
    }

    /// Where the input stood for `older`, the window this one replaces: positions are the
    /// model's, not a version's, and a retrain request names them.
    pub fn continue_positions(&mut self, older: &ModelMonitor) {
        for (k, v) in &older.end_offsets {
            self.end_offsets.entry(k.clone()).or_insert(*v);
        }
    }

    /// Adds a prediction's event to the window.
    pub fn observe(&mut self, event: &Observation) -> Observed {
        let seq = self.window.next_seq();
        if self.last_eval_time.is_none() {
            self.last_eval_time = Some(event.event_time);
        }
        let evicted = self.window.push(event);
        Observed { seq, evicted }
    }

    /// Adds a prediction joined with its actual (by the joiner) to the performance window;
    /// `None` when it is of another version or its actual does not fit the prediction.
    pub fn label(&mut self, labelled: &Labelled) -> Option<JoinedActual> {
        if labelled.prediction.model_version != self.version {
            return None;
        }
        let joined = Joined::of(&labelled.prediction.prediction, &labelled.actual)?;
        if let Some(w) = &mut self.errors
            && let Some(why) = w.update(joined.error())
        {
            self.error_rise = Some(why);
        }
        let seq = self.perf.next_seq();
        let evicted = self.perf.push(joined.clone());
        Some(JoinedActual {
            seq,
            joined,
            evicted,
        })
    }

    /// Whether an evaluation is due: enough new events, or enough event time, or the
    /// error's detector signalled a rise since the last one (it tests every labelled row,
    /// and its delay is not made to wait for the cadence).
    pub fn due(&self) -> bool {
        let new = self.window.next_seq().saturating_sub(self.last_eval_seq);
        if new == 0 {
            return false;
        }
        if new >= self.config.evaluate_every || self.error_rise.is_some() {
            return true;
        }
        match (self.config.evaluate_interval_ms, self.last_eval_time) {
            (Some(every), Some(last)) => self.window.newest_time() - last >= every,
            _ => false,
        }
    }

    /// Evaluates the window now (`now` stamps the events, ms). `at`, the partition and
    /// offset of the prediction that made the evaluation due, goes into the report id: the
    /// same message gives the same id after a crash (so a re-emitted report is recognised),
    /// and a monitor that starts on empty state, whose window count starts again at 0,
    /// cannot reuse the id of an earlier report (which the trainer would take for a
    /// retrain it has already handled). Offline there is no offset: `None`.
    pub fn evaluate(&mut self, now: i64, at: Option<(i32, i64)>) -> Evaluation {
        let policy = &self.config.policy;
        let stats = self.window.stats();
        let kinds: Vec<FeatureKind> = self.window.kinds().collect();
        let verdicts = policy.features(&kinds, &stats);
        let mut features = Vec::new();
        let mut prediction = None;
        for (i, ((prof, s), v)) in self.profiles.iter().zip(&stats).zip(&verdicts).enumerate() {
            let fd = feature_drift(&prof.name, kinds[i], s, v);
            if Some(i) == self.prediction {
                prediction = Some(fd);
            } else {
                features.push(fd);
            }
        }
        let mut by_contribution: Vec<&FeatureDrift> =
            features.iter().filter(|f| f.drifted).collect();
        by_contribution.sort_by(|a, b| {
            let c = |f: &FeatureDrift| contribution(f, &self.importance);
            c(b).total_cmp(&c(a))
        });
        let drifted: Vec<String> = by_contribution.iter().map(|f| f.name.clone()).collect();
        let (share, _) = policy.drift.dataset(drifted.len(), features.len());
        let performance = self.perf.compare(&self.holdout);
        let performance_drop = self.performance_drop();
        let estimated = self.estimated();
        let multivariate = self.multivariate();
        let seq = self.window.next_seq();
        let findings = Findings {
            window_events: self.window.len() as u64,
            seen: seq,
            share_drifted: share,
            drifted_features: by_contribution
                .iter()
                .map(|f| why(f, self.importance.get(&f.name)))
                .collect(),
            prediction_drifted: prediction.as_ref().is_some_and(|p| p.drifted),
            performance_drop: performance_drop.clone(),
            error_rise: self.error_rise.take(),
            multivariate: multivariate
                .as_ref()
                .filter(|s| s.fired)
                .map(|s| self.multivariate_why(s)),
            // From the predictions alone (not the realised value beside it, which depends
            // on how the labels interleaved), so a replay gives the same reason.
            estimated_drop: estimated.as_ref().and_then(|e| {
                let s = e.signal.as_ref().filter(|s| s.fired)?;
                Some(format!("{s}: {} {:.3}", e.metric, e.value))
            }),
        };
        let decision = self.state.decide(policy, &findings);
        self.last_eval_seq = seq;
        self.last_eval_time = Some(self.window.newest_time());
        let mut report_id = format!("{}-v{}-{}", self.model, self.version, seq);
        if let Some((partition, offset)) = at {
            report_id.push_str(&format!("@{partition}:{offset}"));
        }
        let window = ReportWindow {
            start_time: self.window.start_time().unwrap_or(0),
            end_time: if self.window.is_empty() {
                0
            } else {
                self.window.newest_time()
            },
            count: self.window.len() as i64,
            end_offsets: self.end_offsets.clone(),
        };
        let retrain = decision.retrain.then(|| RetrainRequested {
            retrain_id: format!("retrain-{report_id}"),
            model: self.model.clone(),
            model_version: self.version,
            trigger: if drifted.is_empty()
                && !findings.prediction_drifted
                && (performance_drop.is_some()
                    || findings.error_rise.is_some()
                    || (findings.estimated_drop.is_some() && policy.estimate))
            {
                RetrainTrigger::Performance
            } else {
                RetrainTrigger::Drift
            },
            reason: decision.reason.clone(),
            report_id: Some(report_id.clone()),
            drifted_features: drifted,
            window_start: window.start_time,
            window_end: window.end_time,
            requested_at: now,
            // The labelled rows the trainer uses: those this monitor had read.
            end_offsets: window.end_offsets.clone(),
        });
        let report = DriftReport {
            report_id,
            model: self.model.clone(),
            model_version: self.version,
            evaluated_at: now,
            window,
            features,
            prediction,
            performance,
            share_drifted: share,
            decision: decision.decision,
            reason: decision.reason,
            multivariate,
            estimated,
        };
        Evaluation { report, retrain }
    }

    /// The multivariate check: the window's mean reconstruction error against the line for
    /// its size from the reference's sub-windows (the calibrated gamma tail, or NannyML's
    /// mean + 3 sd with fixed lines); `None` without a multivariate reference.
    fn multivariate(&self) -> Option<Signal> {
        let value = self.window.reconstruction_error()?;
        let null = self.multivariate_null?;
        let (threshold, method) = self.line(null, self.window.len() as u64, "reference's");
        Some(Signal {
            name: "reconstruction_error".into(),
            value,
            threshold,
            fired: value >= threshold,
            method,
        })
    }

    /// The line of a window-wide mean over `n` events from its null curve (fitted on the
    /// `whose` sub-windows), and how it was set: the calibrated gamma tail at the check's
    /// share, or NannyML's mean + 3 sd with fixed lines.
    fn line(&self, null: NullCurve, n: u64, whose: &str) -> (f64, String) {
        calibrate::line(
            &null,
            n,
            self.config.policy.drift.calibration,
            self.profiles.len(),
            whose,
        )
    }

    /// The window's performance estimated before labels (a classifier's accuracy by CBPE,
    /// a regressor's mean absolute error by DLE), NannyML's band, the realised value beside
    /// it once labels arrived, and its check: the estimated error (1 − accuracy, or the
    /// MAE) against the line for the window's size from the holdout's sub-windows (the
    /// calibrated gamma tail at the error's share, or mean + 3 sd with fixed lines).
    /// `None` without an estimator or an event with an expected value.
    fn estimated(&self) -> Option<EstimatedPerformance> {
        let before = self.before_labels.as_ref()?;
        let (value, n) = self.window.estimated_mean()?;
        let (metric, (lower, upper), error) = match before {
            BeforeLabels::Accuracy(e) => ("accuracy", e.band(value, n), 1.0 - value),
            BeforeLabels::Mae { error_sd, .. } => {
                ("mae", estimate::band(value, *error_sd, n), value)
            }
        };
        let signal = self.estimate_null.map(|null| {
            let (threshold, method) = self.line(null, n as u64, "holdout's");
            Signal {
                name: "estimated_error".into(),
                value: error,
                threshold,
                fired: error >= threshold,
                method,
            }
        });
        Some(EstimatedPerformance {
            metric: metric.into(),
            value,
            lower,
            upper,
            reference: self.holdout.get(metric).copied(),
            realised: self.perf.metrics().get(metric).copied(),
            signal,
        })
    }

    /// A fired multivariate check and the columns carrying most of the window's error:
    /// "reconstruction_error 1.250 >= 1.161; carried by car_value 41%, salary_range 22%,
    /// loan_length 15%".
    fn multivariate_why(&self, signal: &Signal) -> String {
        let top: Vec<String> = self
            .window
            .reconstruction_contributions()
            .unwrap_or_default()
            .into_iter()
            .take(3)
            .map(|(name, share)| format!("{name} {:.0}%", share * 100.0))
            .collect();
        if top.is_empty() {
            signal.to_string()
        } else {
            format!("{signal}; carried by {}", top.join(", "))
        }
    }

    /// The primary error metric, on enough joined actuals, when it rose above the line
    /// from the holdout's sub-windows (calibrated), or by more than the allowed share of
    /// the holdout's value (fixed, or without sub-windows): what it is and against what.
    fn performance_drop(&self) -> Option<String> {
        let policy = &self.config.policy;
        let bound = policy.max_error_increase?;
        let rows = self.perf.rows();
        if rows < policy.min_samples {
            return None;
        }
        let metrics = self.perf.metrics();
        let metric = ["mae", "log_loss"]
            .into_iter()
            .find(|m| metrics.contains_key(m))?;
        let (cur, reference) = (metrics[metric], *self.holdout.get(metric)?);
        let calibrated = policy.drift.calibration.filter(|c| c.distances);
        if let (Some(c), Some(null)) = (calibrated, self.error_null) {
            // Both are means of the same per-row error (the metric is lower-is-better).
            let alpha = c.per_check(self.profiles.len());
            let line = null.threshold(rows, alpha);
            let (small, large) = null.sizes();
            return (cur >= line).then(|| {
                format!(
                    "{metric} {cur:.4} >= {line:.4} (holdout {reference:.4}; from its sub-windows of {small} to {large} rows: a gamma tail of {alpha:.1e})"
                )
            });
        }
        let lower = lower_is_better(metric).unwrap_or(true);
        let worse = if lower {
            cur - reference
        } else {
            reference - cur
        };
        (reference.abs() > 0.0 && worse / reference.abs() > bound)
            .then(|| format!("{metric} {cur:.4} vs {reference:.4} on the holdout"))
    }
}

/// A drifted feature with the signal that decided it and the feature's importance:
/// "temp (out_of_range 12.0% >= 0.9%; importance 0.310)".
fn why(f: &FeatureDrift, importance: Option<&f64>) -> String {
    let importance = importance.map(|i| format!("importance {i:.3}"));
    let parts: Vec<String> = f
        .deciding_signal()
        .map(|s| s.to_string())
        .into_iter()
        .chain(importance)
        .collect();
    if parts.is_empty() {
        f.name.clone()
    } else {
        format!("{} ({})", f.name, parts.join("; "))
    }
}

/// How much a drifted feature weighs in the decision: how far its deciding signal is past
/// its line (value over threshold; threshold over value for a p-value), times the
/// feature's importance to the model (taken as 1 for all when the version has none, and
/// as 0 when negative: a feature whose shuffling helped does not matter to the model).
fn contribution(f: &FeatureDrift, importance: &BTreeMap<String, f64>) -> f64 {
    let past = f.deciding_signal().map_or(1.0, |s| {
        let ratio = if s.is_p_value() {
            s.threshold / s.value
        } else {
            s.value / s.threshold
        };
        if ratio.is_finite() { ratio } else { f64::MAX }
    });
    let weight = if importance.is_empty() {
        1.0
    } else {
        importance.get(&f.name).copied().unwrap_or(0.0).max(0.0)
    };
    weight * past
}

fn feature_drift(
    name: &str,
    kind: FeatureKind,
    s: &FeatureStats,
    v: &FeatureVerdict,
) -> FeatureDrift {
    FeatureDrift {
        name: name.to_string(),
        kind,
        psi: s.psi,
        ks_d: s.ks_d,
        ks_p: s.ks_p,
        wasserstein_norm: s.wasserstein_norm,
        jensen_shannon: s.jensen_shannon,
        chi2_p: s.chi2_p,
        missing_share: s.current_missing_share,
        drifted: v.drifted,
        signals: v.signals(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftline_schemas::events::{Actual, DriftDecision, Prediction, PredictionSource, Signal};

    #[test]
    fn drifted_features_are_ranked_by_how_far_past_their_line_times_their_importance() {
        let drifted = |name: &str, signal: Signal| FeatureDrift {
            name: name.into(),
            kind: FeatureKind::Numeric,
            psi: None,
            ks_d: None,
            ks_p: None,
            wasserstein_norm: None,
            jensen_shannon: None,
            chi2_p: None,
            missing_share: 0.0,
            drifted: true,
            signals: vec![signal],
        };
        // Far past its line but unimportant, against just past it and important.
        let far = drifted("hour", Signal::fixed("wasserstein_norm", 0.9, 0.1, true));
        let near = drifted("temp", Signal::fixed("wasserstein_norm", 0.15, 0.1, true));
        let p = drifted("carrier", Signal::fixed("chi2_p", 1e-4, 0.05, true));
        let importance: BTreeMap<String, f64> = [
            ("hour".into(), 0.01),
            ("temp".into(), 2.0),
            ("carrier".into(), -0.5),
        ]
        .into();
        assert!((contribution(&far, &importance) - 0.09).abs() < 1e-12);
        assert!((contribution(&near, &importance) - 3.0).abs() < 1e-12);
        assert_eq!(contribution(&p, &importance), 0.0, "negative importance: 0");
        // Without importance, how far past the line alone (500 times for the p-value).
        let none = BTreeMap::new();
        assert!((contribution(&p, &none) - 500.0).abs() < 1e-9);
        assert_eq!(
            why(&near, importance.get("temp")),
            "temp (wasserstein_norm 0.150 >= 0.1; importance 2.000)"
        );
        assert_eq!(why(&far, None), "hour (wasserstein_norm 0.900 >= 0.1)");
    }

    /// A numeric profile of a sorted sample, without sub-windows (fixed lines).
    fn numeric(name: &str, sample: Vec<f64>) -> FeatureProfile {
        FeatureProfile {
            name: name.into(),
            kind: FeatureKind::Numeric,
            count: sample.len() as i64,
            missing: 0,
            sample,
            categories: Default::default(),
            sub_windows: Vec::new(),
        }
    }

    fn profiles() -> Vec<FeatureProfile> {
        vec![
            numeric("x", (0..1000).map(|i| f64::from(i % 100)).collect()),
            numeric(PREDICTION, (0..1000).map(|i| f64::from(i % 100)).collect()),
        ]
    }

    fn config() -> MonitorConfig {
        let mut c = MonitorConfig {
            evaluate_every: 100,
            ..Default::default()
        };
        c.window.max_events = 500;
        c.policy.min_samples = 200;
        c.policy.confirmations = 2;
        c.policy.cooldown_events = 500;
        c
    }

    fn logged(i: usize, x: f64) -> PredictionLogged {
        PredictionLogged {
            request_id: format!("r{i}"),
            model: "m".into(),
            model_version: 3,
            event_time: i as i64,
            features: [("x".to_string(), FeatureValue::Number(x))].into(),
            prediction: Prediction {
                value: Some(x),
                ..Default::default()
            },
            served_at: 0,
            latency_us: 0,
            source: PredictionSource::Kafka,
            shadow: None,
        }
    }

    /// Observes `event(m, i)` for each `i` of `range`, unlabelled; returns each report with
    /// the `i` it was made at.
    fn reports_over(
        m: &mut ModelMonitor,
        range: std::ops::Range<usize>,
        event: impl Fn(&ModelMonitor, usize) -> Observation,
    ) -> Vec<(usize, DriftReport)> {
        let mut out = Vec::new();
        for i in range {
            m.observe(&event(m, i));
            if m.due() {
                out.push((i, m.evaluate(0, None).report));
            }
        }
        out
    }

    /// Runs `n` events (shifted after `shift_at`), actuals joined at once with an error of
    /// `error`; returns every evaluation.
    fn run(
        m: &mut ModelMonitor,
        range: std::ops::Range<usize>,
        shift_at: usize,
        error: f64,
    ) -> Vec<Evaluation> {
        run_with(m, range, shift_at, &|_| error)
    }

    /// [`run`] with the error of event `i` given by `error(i)`.
    fn run_with(
        m: &mut ModelMonitor,
        range: std::ops::Range<usize>,
        shift_at: usize,
        error: &dyn Fn(usize) -> f64,
    ) -> Vec<Evaluation> {
        let mut out = Vec::new();
        for i in range {
            let x = f64::from((i % 100) as u32) + if i >= shift_at { 40.0 } else { 0.0 };
            let p = logged(i, x);
            m.observe(&m.event_of(&p));
            let actual = Actual {
                request_id: p.request_id.clone(),
                model: "m".into(),
                event_time: i as i64,
                value: Some(x + error(i)),
                class: None,
                observed_at: 0,
            };
            let labelled = Labelled {
                prediction: p,
                actual,
                prediction_read_at: Default::default(),
                actual_read_at: Default::default(),
            };
            assert!(m.label(&labelled).is_some());
            m.position("labelled", 0, i as i64 + 1);
            if m.due() {
                out.push(m.evaluate(0, None));
            }
        }
        out
    }

    #[test]
    fn a_report_states_each_signal_with_its_threshold_and_how_it_was_set() {
        let mut m = ModelMonitor::new(
            "m",
            3,
            &profiles(),
            BTreeMap::from([("mae".to_string(), 2.0)]),
            config(),
        );
        let evals = run(&mut m, 0..1500, 600, 2.0);
        let x = |e: &Evaluation| {
            let f = e.report.features.iter().find(|f| f.name == "x").cloned();
            f.expect("x in the report")
        };
        let calm = x(&evals[3]);
        let names: Vec<_> = calm.signals.iter().map(|s| s.name.as_str()).collect();
        // Small windows: the KS p-value rule decides (see DriftPolicy).
        assert_eq!(names, ["missing_share", "out_of_range", "ks_p"]);
        assert!(calm.signals.iter().all(|s| !s.fired), "{calm:?}");
        assert!(calm.signals[1].method.starts_with("from the reference"));
        assert_eq!(calm.signals[2].method, "fixed");
        // Shifted by 40 on a reference of 0..99: 40% of the values past its largest.
        let last = evals.last().expect("evaluations");
        let shifted = x(last);
        let out = &shifted.signals[1];
        assert!(
            out.fired && out.value == 0.4 && out.threshold < 0.05,
            "{out:?}"
        );
        assert!(shifted.drifted);
        // The decision says which signal fired, and where its line was.
        assert!(
            last.report.reason.contains("x (out_of_range 40.0% >= "),
            "{}",
            last.report.reason
        );
    }

    #[test]
    fn a_shift_is_confirmed_then_asks_for_one_retrain_with_a_deterministic_id() {
        let mut m = ModelMonitor::new(
            "m",
            3,
            &profiles(),
            BTreeMap::from([("mae".to_string(), 2.0)]),
            config(),
        );
        let evals = run(&mut m, 0..1500, 600, 2.0);
        let decisions: Vec<_> = evals.iter().map(|e| e.report.decision).collect();
        assert_eq!(decisions[..6], [DriftDecision::NoDrift; 6][..]);
        let retrains: Vec<_> = evals.iter().filter_map(|e| e.retrain.as_ref()).collect();
        assert_eq!(
            retrains.len(),
            2,
            "one, then one more after the 500-event cooldown"
        );
        assert_eq!(retrains[0].retrain_id, "retrain-m-v3-800");
        assert_eq!(retrains[0].drifted_features, ["x"]);
        // It names the labelled rows read when it asked: the trainer trains on those.
        assert_eq!(
            retrains[0].end_offsets,
            BTreeMap::from([("labelled/0".to_string(), 800)])
        );
        let last = &evals.last().unwrap().report;
        assert_eq!(last.report_id, "m-v3-1500");
        assert!(last.prediction.as_ref().unwrap().drifted);
        let mae = last.performance.iter().find(|p| p.metric == "mae").unwrap();
        assert_eq!((mae.current, mae.reference), (2.0, Some(2.0)));
    }

    #[test]
    fn a_new_version_window_continues_from_where_the_input_was_read() {
        let mut v3 = ModelMonitor::new("m", 3, &profiles(), BTreeMap::new(), config());
        v3.position("labelled", 0, 41);
        v3.position("predictions", 0, 90);
        let mut v4 = ModelMonitor::new("m", 4, &profiles(), BTreeMap::new(), config());
        v4.position("predictions", 0, 91);
        v4.continue_positions(&v3);
        assert_eq!(
            v4.meta().end_offsets,
            BTreeMap::from([
                ("labelled/0".to_string(), 41),
                ("predictions/0".to_string(), 91)
            ])
        );
    }

    #[test]
    fn an_error_detector_asks_for_a_retrain_as_it_fires_and_survives_a_restart() {
        let mut c = config();
        c.policy.error_watch = driftline_drift::concept::Watch::Adwin;
        // The holdout's MAE is far above both error levels: only the detector can speak.
        let holdout = BTreeMap::from([("mae".to_string(), 50.0)]);
        let error = |i: usize| {
            if i < 700 {
                1.0 + (i % 3) as f64 * 0.1
            } else {
                4.0
            }
        };
        let mut m = ModelMonitor::new("m", 3, &profiles(), holdout.clone(), c.clone());
        let before = run_with(&mut m, 0..650, usize::MAX, &error);
        assert!(before.iter().all(|e| e.retrain.is_none()));
        // A restart: the detector's state comes back with the meta.
        let meta = crate::state::decode_meta(&crate::state::encode_meta(&m.meta())).unwrap();
        let restored = ModelMonitor::restore(&meta, &profiles(), holdout, c.clone(), [], []);
        assert!(meta.errors.is_some());
        assert_eq!(restored.meta().errors, m.meta().errors);
        let mut off = c.clone();
        off.policy.error_watch = driftline_drift::concept::Watch::Off;
        let restored_off = ModelMonitor::restore(&meta, &profiles(), BTreeMap::new(), off, [], []);
        assert_eq!(
            restored_off.meta().errors,
            None,
            "turned off by configuration"
        );
        let evals = run_with(&mut m, 650..900, usize::MAX, &error);
        let (at, r) = evals
            .iter()
            .enumerate()
            .find_map(|(k, e)| e.retrain.as_ref().map(|r| (k, r)))
            .expect("a retrain");
        assert_eq!(r.trigger, RetrainTrigger::Performance);
        assert!(
            r.reason.contains("ADWIN: the mean error rose"),
            "{}",
            r.reason
        );
        // The evaluation at 699 by the cadence, then the one the detector asked for, soon
        // after the rise at 700 and before the cadence's next (799); unconfirmed.
        assert_eq!(at, 1);
        let when = evals[at].report.window.end_time;
        assert!((700..799).contains(&when), "evaluated at {when}");
        assert_eq!(evals[at].report.decision, DriftDecision::Drift);
    }

    #[test]
    fn a_rising_error_alone_is_a_performance_drift() {
        let mut m = ModelMonitor::new(
            "m",
            3,
            &profiles(),
            BTreeMap::from([("mae".to_string(), 2.0)]),
            config(),
        );
        let evals = run(&mut m, 0..600, usize::MAX, 3.0);
        let r = evals
            .iter()
            .find_map(|e| e.retrain.as_ref())
            .expect("a retrain");
        assert_eq!(r.trigger, RetrainTrigger::Performance);
        assert!(r.reason.contains("mae 3.0000 vs 2.0000"), "{}", r.reason);
    }

    #[test]
    fn a_restored_monitor_continues_exactly_like_the_original() {
        let mut a = ModelMonitor::new("m", 3, &profiles(), Holdout::default(), config());
        let first = run(&mut a, 0..700, 400, 1.0);
        assert!(!first.is_empty());
        // What the service would have stored: the meta and the slots in order.
        let mut events = Vec::new();
        let (w, _) = a.slots();
        for i in w {
            let p = logged(
                i as usize,
                f64::from((i % 100) as u32) + if i >= 400 { 40.0 } else { 0.0 },
            );
            events.push(a.event_of(&p));
        }
        let joined = (700 - 500..700).map(|i| {
            let x = f64::from((i % 100) as u32) + if i >= 400 { 40.0 } else { 0.0 };
            Joined::Regression {
                predicted: x,
                actual: x + 1.0,
            }
        });
        let mut b = ModelMonitor::restore(
            &a.meta(),
            &profiles(),
            Holdout::default(),
            config(),
            events,
            joined,
        );
        let rest_a = run(&mut a, 700..1400, 400, 1.0);
        let rest_b = run(&mut b, 700..1400, 400, 1.0);
        assert_eq!(rest_a, rest_b);
    }

    /// A reference where y follows x, and live traffic where it no longer does: each
    /// feature keeps its own distribution, only how they move together changes.
    fn paired(i: usize, together: bool) -> (f64, f64) {
        // SplitMix64's finaliser: independent-looking uniform draws without a generator.
        let h = |k: u64| {
            let mut z = k.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as f64 / u64::MAX as f64
        };
        let x = (h(i as u64 * 2 + 1) * 100.0).floor();
        let noise = h(i as u64 * 2 + 2) * 3.0;
        let other = (h(i as u64 * 2 + 1_000_003) * 100.0).floor();
        (x, if together { x + noise } else { other + noise })
    }

    fn pair_event(i: usize, together: bool) -> Observation {
        let (x, y) = paired(i, together);
        Observation {
            event_time: i as i64,
            values: vec![FeatureValue::Number(x), FeatureValue::Number(y)],
            expected: None,
        }
    }

    #[test]
    fn a_change_in_how_features_move_together_is_seen_by_the_multivariate_check_alone() {
        let reference: Vec<[FeatureValue; 2]> = (0..4_000)
            .map(|i| {
                let (x, y) = paired(i, true);
                [FeatureValue::Number(x), FeatureValue::Number(y)]
            })
            .collect();
        let pca = driftline_drift::multivariate::fit(
            &[("x", FeatureKind::Numeric), ("y", FeatureKind::Numeric)],
            reference.len(),
            |i, j| &reference[i][j],
        );
        let profile = |j: usize, name: &str| {
            let mut sample: Vec<f64> = reference
                .iter()
                .map(|r| match r[j] {
                    FeatureValue::Number(v) => v,
                    _ => f64::NAN,
                })
                .collect();
            sample.sort_by(f64::total_cmp);
            numeric(name, sample)
        };
        let holdout = Holdout {
            multivariate: pca.clone(),
            ..Default::default()
        };
        // Windows past 1,000 events, where the distances decide (not the p-values).
        let mut cfg = config();
        cfg.window.max_events = 2_000;
        cfg.evaluate_every = 500;
        cfg.policy.min_samples = 1_000;
        let mut m = ModelMonitor::new(
            "m",
            3,
            &[profile(0, "x"), profile(1, "y")],
            holdout,
            cfg.clone(),
        );
        let evaluations = reports_over(&mut m, 10_000..18_000, |_, i| pair_event(i, i < 14_000));
        let (before, after): (Vec<_>, Vec<_>) = evaluations.iter().partition(|(i, _)| *i < 14_000);
        for (_, r) in &before {
            let s = r.multivariate.as_ref().unwrap();
            assert!(!s.fired, "{s}");
            assert_eq!(r.decision, DriftDecision::NoDrift, "{}", r.reason);
        }
        // Once the window holds only the new pairing, the check fires, no feature does.
        let settled: Vec<_> = after.iter().filter(|(i, _)| *i >= 16_000).collect();
        assert!(!settled.is_empty());
        for (_, r) in settled {
            let s = r.multivariate.as_ref().unwrap();
            assert!(s.fired && s.value > 2.0 * s.threshold, "{s}");
            assert!(r.features.iter().all(|f| !f.drifted), "{:?}", r.features);
            assert_eq!(r.decision, DriftDecision::Drift);
            assert!(r.reason.contains("joint distribution"), "{}", r.reason);
            // Both features carry the error of a broken pairing, about equally.
            assert!(r.reason.contains("carried by "), "{}", r.reason);
            let shares = m.window().reconstruction_contributions().unwrap();
            assert_eq!(shares.len(), 2);
            assert!((shares[0].1 + shares[1].1 - 1.0).abs() < 1e-9);
            assert!(shares.iter().all(|(_, s)| *s > 0.3), "{shares:?}");
        }
        // Off in the policy: still reported, no longer deciding.
        let mut quiet = cfg;
        quiet.policy.multivariate = false;
        let mut q = ModelMonitor::new(
            "m",
            3,
            &[profile(0, "x"), profile(1, "y")],
            Holdout {
                multivariate: pca,
                ..Default::default()
            },
            quiet,
        );
        for i in 14_000..16_000 {
            q.observe(&pair_event(i, false));
        }
        let r = q.evaluate(0, None).report;
        assert!(r.multivariate.unwrap().fired);
        assert_eq!(r.decision, DriftDecision::NoDrift);
    }

    /// A binary classifier's prediction of row `i`: its probability of "yes" spread over
    /// [0.05, 0.95] (`confident`) or over [0.4, 0.6], and the label, drawn from it.
    fn classified(i: usize, confident: bool) -> (PredictionLogged, bool) {
        let (x, y) = paired(i, true);
        let (u, v) = (x / 100.0, (y - x) / 3.0);
        let p = if confident {
            0.05 + 0.9 * u
        } else {
            0.4 + 0.2 * u
        };
        let class = if p >= 0.5 { "yes" } else { "no" };
        let mut logged = logged(i, x);
        logged.prediction = Prediction {
            value: None,
            class: Some(class.into()),
            probabilities: [("yes".to_string(), p), ("no".to_string(), 1.0 - p)].into(),
        };
        (logged, v < p)
    }

    #[test]
    fn an_accuracy_drop_is_seen_by_the_estimate_before_any_label() {
        use driftline_drift::estimate::{Scored, fit_estimator};
        let holdout_rows: Vec<Scored> = (0..4_000)
            .map(|i| {
                let (p, positive) = classified(i, true);
                let yes = p.prediction.probabilities["yes"];
                Scored {
                    probabilities: vec![1.0 - yes, yes],
                    predicted: usize::from(yes >= 0.5),
                    truth: usize::from(positive),
                }
            })
            .collect();
        let classes = ["no".to_string(), "yes".to_string()];
        let estimator = fit_estimator(&classes, &holdout_rows).unwrap();
        let holdout = Holdout {
            metrics: [("accuracy".to_string(), 0.72)].into(),
            performance_estimator: Some(estimator),
            ..Default::default()
        };
        let same = holdout.clone();
        let x = numeric("x", (0..4_000).map(|i| paired(i, true).0).collect());
        let mut cfg = config();
        // Windows past 1,000 events, where the distances decide (not the p-values).
        cfg.window.max_events = 2_000;
        cfg.evaluate_every = 500;
        cfg.policy.min_samples = 1_000;
        let mut m = ModelMonitor::new("m", 3, std::slice::from_ref(&x), holdout, cfg.clone());
        // The same inputs throughout; from 14,000 the model is unsure of every row.
        let reports = reports_over(&mut m, 10_000..18_000, |m, i| {
            m.event_of(&classified(i, i < 14_000).0)
        });
        assert!(reports.iter().any(|(i, _)| *i >= 16_000));
        for (i, r) in &reports {
            let e = r.estimated.as_ref().unwrap();
            let s = e.signal.as_ref().unwrap();
            assert!(e.lower <= e.value && e.value <= e.upper);
            assert_eq!(e.realised, None, "no label has arrived");
            assert!(r.features.iter().all(|f| !f.drifted), "{:?}", r.features);
            if *i < 14_000 {
                assert!((e.value - 0.72).abs() < 0.05, "{e:?}");
                assert!(!s.fired, "{s}");
                assert_eq!(r.decision, DriftDecision::NoDrift, "{}", r.reason);
            } else if *i >= 16_000 {
                // The window holds only unsure predictions: about 55% right.
                assert!((e.value - 0.55).abs() < 0.05, "{e:?}");
                assert!(s.fired, "{s}");
                assert_eq!(r.decision, DriftDecision::Drift);
                assert!(
                    r.reason
                        .contains("performance estimated before labels dropped"),
                    "{}",
                    r.reason
                );
            }
        }
        // Off in the policy: still reported, no longer deciding.
        let mut quiet = cfg;
        quiet.policy.estimate = false;
        let mut q = ModelMonitor::new("m", 3, &[x], same, quiet);
        for i in 14_000..16_000 {
            let (p, _) = classified(i, false);
            q.observe(&q.event_of(&p));
        }
        let r = q.evaluate(0, None).report;
        assert!(r.estimated.unwrap().signal.unwrap().fired);
        assert_eq!(r.decision, DriftDecision::NoDrift);
    }

    #[test]
    fn a_rise_of_the_error_is_seen_by_the_estimate_before_any_label() {
        use driftline_model::{LabelledRow, Target, error_estimator, evaluate_with_errors, fit};
        use driftline_schemas::spec::FeatureSpec;
        let spec = FeatureSpec::from_toml(
            "[dataset]\nname = \"m\"\ntime_column = \"t\"\n\
             [model]\nname = \"m\"\nalgorithm = \"linear\"\n\
             [target]\ncolumn = \"y\"\nkind = \"regression\"\n\
             [[features]]\nname = \"x\"\nkind = \"numeric\"\n",
        )
        .unwrap();
        // y = x, wrong by x / 10 either way: the model errs more on larger inputs.
        let rows: Vec<LabelledRow> = (0..6_000)
            .map(|i| {
                let x = paired(i, true).0;
                let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
                LabelledRow {
                    event_time: i as i64,
                    features: [("x".to_string(), FeatureValue::Number(x))].into(),
                    target: Target::Value(x + sign * x / 10.0),
                }
            })
            .collect();
        let (train, holdout_rows) = rows.split_at(2_000);
        let model = fit(&spec, train).unwrap();
        // The line: how the realised MAE varies between the holdout's sub-windows.
        let (_, errors) = evaluate_with_errors(&model, holdout_rows);
        let holdout = Holdout {
            metrics: [("mae".to_string(), 5.0)].into(),
            error_sub_windows: driftline_drift::calibrate::mean_sub_windows(&errors),
            error_estimator: error_estimator(&model, holdout_rows),
            ..Default::default()
        };
        assert!(holdout.error_estimator.is_some());
        let x = numeric("x", (0..4_000).map(|i| paired(i, true).0).collect());
        let mut cfg = config();
        cfg.window.max_events = 2_000;
        cfg.evaluate_every = 500;
        cfg.policy.min_samples = 1_000;
        let mut m = ModelMonitor::new("m", 3, &[x], holdout, cfg);
        let reports = reports_over(&mut m, 10_000..18_000, |m, i| {
            // From 14,000 the inputs move to the top fifth of their range.
            let x = paired(i, true).0;
            let x = if i < 14_000 { x } else { 80.0 + x / 5.0 };
            let features = [("x".to_string(), FeatureValue::Number(x))].into();
            let mut p = logged(i, model.predict(&features).value.unwrap());
            p.features = features;
            m.event_of(&p)
        });
        assert!(reports.iter().any(|(i, _)| *i >= 16_000));
        for (i, r) in &reports {
            let e = r.estimated.as_ref().unwrap();
            let s = e.signal.as_ref().unwrap();
            assert_eq!(e.metric, "mae");
            assert!(e.lower <= e.value && e.value <= e.upper);
            assert_eq!(e.realised, None, "no label has arrived");
            if *i < 14_000 {
                assert!((e.value - 5.0).abs() < 0.5, "{e:?}");
                assert!(!s.fired, "{s}");
            } else if *i >= 16_000 {
                // Inputs of 80 to 100: errors of 8 to 10.
                assert!((e.value - 9.0).abs() < 0.5, "{e:?}");
                assert!(s.fired, "{s}");
                assert!(
                    r.reason
                        .contains("performance estimated before labels dropped"),
                    "{}",
                    r.reason
                );
            }
        }
    }
}
