//! One model version's monitor: its window, its joined actuals, its policy state; events
//! in, [`DriftReport`]s and [`RetrainRequested`] out. Pure: the service persists what
//! each call reports as changed ([`Observed`], [`JoinedActual`], [`ModelMeta`]), the
//! backtest keeps nothing.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use driftline_model::{PREDICTION, lower_is_better};
use driftline_schemas::events::{
    Actual, DriftReport, FeatureDrift, FeatureKind, FeatureProfile, FeatureValue, PredictionLogged,
    ReportWindow, RetrainRequested, RetrainTrigger,
};
use serde::{Deserialize, Serialize};

use crate::performance::{Joined, PerformanceWindow};
use crate::policy::{Findings, MonitorPolicy, PolicyState};
use crate::tracker::FeatureStats;
use crate::window::{Observation, Window, WindowConfig, number_label};
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
    /// Most predictions kept waiting for their actual (the oldest is dropped).
    pub max_pending: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            window: WindowConfig::default(),
            evaluate_every: 1_000,
            evaluate_interval_ms: None,
            policy: MonitorPolicy::default(),
            max_pending: 100_000,
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

/// A prediction waiting for its actual.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub request_id: String,
    pub value: Option<f64>,
    pub class: Option<String>,
    pub probabilities: BTreeMap<String, f64>,
}

/// The small state of a monitor, persisted after every event beside the window's slots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub model: String,
    pub version: i64,
    pub first_seq: u64,
    pub newest_time: i64,
    pub perf_first_seq: u64,
    pub pending_next: u64,
    pub state: PolicyState,
    pub last_eval_seq: u64,
    pub last_eval_time: Option<i64>,
    pub end_offsets: BTreeMap<String, i64>,
}

/// What [`ModelMonitor::observe`] changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The window slot the event went to.
    pub seq: u64,
    pub evicted: Range<u64>,
    /// The pending slot of the prediction, and pending slots dropped to stay bounded.
    pub pending: Option<u64>,
    pub pending_evicted: Vec<u64>,
}

/// What [`ModelMonitor::join`] changed.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinedActual {
    pub pending_removed: u64,
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

pub struct ModelMonitor {
    model: String,
    version: i64,
    profiles: Vec<FeatureProfile>,
    prediction: Option<usize>,
    holdout: BTreeMap<String, f64>,
    config: MonitorConfig,
    window: Window,
    perf: PerformanceWindow,
    pending: BTreeMap<u64, Pending>,
    pending_ids: HashMap<String, u64>,
    pending_next: u64,
    state: PolicyState,
    last_eval_seq: u64,
    last_eval_time: Option<i64>,
    end_offsets: BTreeMap<String, i64>,
}

impl ModelMonitor {
    /// A fresh monitor of `version`, compared with its reference `profiles` (the
    /// [`PREDICTION`] profile, when present, monitors the model's output) and `holdout`
    /// metrics.
    pub fn new(
        model: &str,
        version: i64,
        profiles: &[FeatureProfile],
        holdout: BTreeMap<String, f64>,
        config: MonitorConfig,
    ) -> Self {
        Self {
            model: model.to_string(),
            version,
            prediction: profiles.iter().position(|p| p.name == PREDICTION),
            profiles: profiles.to_vec(),
            holdout,
            window: Window::new(profiles, config.window),
            perf: PerformanceWindow::new(config.window.max_events, 0),
            config,
            pending: BTreeMap::new(),
            pending_ids: HashMap::new(),
            pending_next: 0,
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
        holdout: BTreeMap<String, f64>,
        config: MonitorConfig,
        events: impl IntoIterator<Item = Observation>,
        pending: impl IntoIterator<Item = (u64, Pending)>,
        joined: impl IntoIterator<Item = Joined>,
    ) -> Self {
        let mut m = Self::new(&meta.model, meta.version, profiles, holdout, config);
        m.window = Window::resume(profiles, m.config.window, meta.first_seq, meta.newest_time);
        for e in events {
            m.window.push(&e);
        }
        m.perf = PerformanceWindow::new(m.config.window.max_events, meta.perf_first_seq);
        for j in joined {
            m.perf.push(j);
        }
        for (seq, p) in pending {
            m.pending_ids.insert(p.request_id.clone(), seq);
            m.pending.insert(seq, p);
        }
        m.pending_next = meta.pending_next;
        m.state = meta.state;
        m.last_eval_seq = meta.last_eval_seq;
        m.last_eval_time = meta.last_eval_time;
        m.end_offsets = meta.end_offsets.clone();
        m
    }

    pub fn meta(&self) -> ModelMeta {
        ModelMeta {
            model: self.model.clone(),
            version: self.version,
            first_seq: self.window.first_seq(),
            newest_time: self.window.newest_time(),
            perf_first_seq: self.perf.first_seq(),
            pending_next: self.pending_next,
            state: self.state,
            last_eval_seq: self.last_eval_seq,
            last_eval_time: self.last_eval_time,
            end_offsets: self.end_offsets.clone(),
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

    /// Sequence numbers of the window's slots, of the joined pairs' slots, and of the
    /// pending predictions (for deleting them when the version changes).
    pub fn slots(&self) -> (Range<u64>, Range<u64>, Vec<u64>) {
        (
            self.window.first_seq()..self.window.next_seq(),
            self.perf.first_seq()..self.perf.next_seq(),
            self.pending.keys().copied().collect(),
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
        }
    }

    /// Records where the input stands ("topic/partition" -> next offset) for reports.
    pub fn position(&mut self, topic: &str, partition: i32, next_offset: i64) {
        self.end_offsets
            .insert(format!("{topic}/{partition}"), next_offset);
    }

    /// Adds a prediction's event to the window, and the prediction (when given) to those
    /// waiting for their actual.
    pub fn observe(&mut self, event: &Observation, prediction: Option<Pending>) -> Observed {
        let seq = self.window.next_seq();
        if self.last_eval_time.is_none() {
            self.last_eval_time = Some(event.event_time);
        }
        let evicted = self.window.push(event);
        let mut out = Observed {
            seq,
            evicted,
            pending: None,
            pending_evicted: Vec::new(),
        };
        if let Some(p) = prediction {
            if let Some(old) = self
                .pending_ids
                .insert(p.request_id.clone(), self.pending_next)
            {
                // The same request logged again: the newer prediction waits instead.
                self.pending.remove(&old);
                out.pending_evicted.push(old);
            }
            self.pending.insert(self.pending_next, p);
            out.pending = Some(self.pending_next);
            self.pending_next += 1;
            while self.pending.len() > self.config.max_pending {
                if let Some((seq, p)) = self.pending.pop_first() {
                    self.pending_ids.remove(&p.request_id);
                    out.pending_evicted.push(seq);
                }
            }
        }
        out
    }

    /// Joins an actual with its waiting prediction; `None` when there is none (unknown,
    /// already joined, dropped, or of another version).
    pub fn join(&mut self, actual: &Actual) -> Option<JoinedActual> {
        let seq = self.pending_ids.remove(&actual.request_id)?;
        let p = self.pending.remove(&seq)?;
        let joined = match (p.value, actual.value, &p.class) {
            (Some(predicted), Some(truth), None) => Joined::Regression {
                predicted,
                actual: truth,
            },
            (_, _, Some(class)) => {
                let truth = actual
                    .class
                    .clone()
                    .or_else(|| actual.value.map(number_label))?;
                Joined::Classification {
                    correct: *class == truth,
                    p_true: p
                        .probabilities
                        .get(&truth)
                        .copied()
                        .unwrap_or(if *class == truth { 1.0 } else { 0.0 }),
                }
            }
            _ => return None,
        };
        let perf_seq = self.perf.next_seq();
        let evicted = self.perf.push(joined.clone());
        Some(JoinedActual {
            pending_removed: seq,
            seq: perf_seq,
            joined,
            evicted,
        })
    }

    /// Whether an evaluation is due: enough new events, or enough event time.
    pub fn due(&self) -> bool {
        let new = self.window.next_seq().saturating_sub(self.last_eval_seq);
        if new == 0 {
            return false;
        }
        if new >= self.config.evaluate_every {
            return true;
        }
        match (self.config.evaluate_interval_ms, self.last_eval_time) {
            (Some(every), Some(last)) => self.window.newest_time() - last >= every,
            _ => false,
        }
    }

    /// Evaluates the window now (`now` stamps the events, ms).
    pub fn evaluate(&mut self, now: i64) -> Evaluation {
        let policy = &self.config.policy;
        let stats = self.window.stats();
        let kinds: Vec<FeatureKind> = self.window.kinds().collect();
        let verdicts = policy.features(&kinds, &stats);
        let mut features = Vec::new();
        let mut prediction = None;
        for (i, ((prof, s), v)) in self.profiles.iter().zip(&stats).zip(&verdicts).enumerate() {
            let fd = feature_drift(&prof.name, kinds[i], s, v.drifted);
            if Some(i) == self.prediction {
                prediction = Some(fd);
            } else {
                features.push(fd);
            }
        }
        let drifted: Vec<String> = features
            .iter()
            .filter(|f| f.drifted)
            .map(|f| f.name.clone())
            .collect();
        let (share, _) = policy.drift.dataset(drifted.len(), features.len());
        let performance = self.perf.compare(&self.holdout);
        let performance_drop = self.performance_drop();
        let seq = self.window.next_seq();
        let findings = Findings {
            window_events: self.window.len() as u64,
            seen: seq,
            share_drifted: share,
            drifted_features: drifted.clone(),
            prediction_drifted: prediction.as_ref().is_some_and(|p| p.drifted),
            performance_drop: performance_drop.clone(),
        };
        let decision = self.state.decide(policy, &findings);
        self.last_eval_seq = seq;
        self.last_eval_time = Some(self.window.newest_time());
        let report_id = format!("{}-v{}-{}", self.model, self.version, seq);
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
                && performance_drop.is_some()
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
        };
        Evaluation { report, retrain }
    }

    /// The primary error metric when it is worse than the holdout's by more than allowed
    /// on enough joined actuals.
    fn performance_drop(&self) -> Option<(String, f64, f64)> {
        let bound = self.config.policy.max_error_increase?;
        if self.perf.rows() < self.config.policy.min_samples {
            return None;
        }
        let metrics = self.perf.metrics();
        let metric = ["mae", "log_loss"]
            .into_iter()
            .find(|m| metrics.contains_key(m))?;
        let (cur, reference) = (metrics[metric], *self.holdout.get(metric)?);
        let lower = lower_is_better(metric).unwrap_or(true);
        let worse = if lower {
            cur - reference
        } else {
            reference - cur
        };
        (reference.abs() > 0.0 && worse / reference.abs() > bound)
            .then(|| (metric.to_string(), cur, reference))
    }
}

fn feature_drift(name: &str, kind: FeatureKind, s: &FeatureStats, drifted: bool) -> FeatureDrift {
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
        drifted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftline_schemas::events::{DriftDecision, Prediction, PredictionSource};

    fn profiles() -> Vec<FeatureProfile> {
        let numeric = |name: &str, sample: Vec<f64>| FeatureProfile {
            name: name.into(),
            kind: FeatureKind::Numeric,
            count: sample.len() as i64,
            missing: 0,
            sample,
            categories: Default::default(),
        };
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
        }
    }

    /// Runs `n` events (shifted after `shift_at`), actuals joined at once with an error of
    /// `error`; returns every evaluation.
    fn run(
        m: &mut ModelMonitor,
        range: std::ops::Range<usize>,
        shift_at: usize,
        error: f64,
    ) -> Vec<Evaluation> {
        let mut out = Vec::new();
        for i in range {
            let x = f64::from((i % 100) as u32) + if i >= shift_at { 40.0 } else { 0.0 };
            let p = logged(i, x);
            let pending = Pending {
                request_id: p.request_id.clone(),
                value: Some(x),
                class: None,
                probabilities: Default::default(),
            };
            m.observe(&m.event_of(&p), Some(pending));
            let actual = Actual {
                request_id: p.request_id.clone(),
                model: "m".into(),
                event_time: i as i64,
                value: Some(x + error),
                class: None,
                observed_at: 0,
            };
            assert!(m.join(&actual).is_some());
            if m.due() {
                out.push(m.evaluate(0));
            }
        }
        out
    }

    #[test]
    fn a_shift_is_confirmed_then_asks_for_one_retrain_with_a_deterministic_id() {
        let mut m = ModelMonitor::new(
            "m",
            3,
            &profiles(),
            [("mae".to_string(), 2.0)].into(),
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
        let last = &evals.last().unwrap().report;
        assert_eq!(last.report_id, "m-v3-1500");
        assert!(last.prediction.as_ref().unwrap().drifted);
        let mae = last.performance.iter().find(|p| p.metric == "mae").unwrap();
        assert_eq!((mae.current, mae.reference), (2.0, Some(2.0)));
    }

    #[test]
    fn a_rising_error_alone_is_a_performance_drift() {
        let mut m = ModelMonitor::new(
            "m",
            3,
            &profiles(),
            [("mae".to_string(), 2.0)].into(),
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
        let mut a = ModelMonitor::new("m", 3, &profiles(), Default::default(), config());
        let first = run(&mut a, 0..700, 400, 1.0);
        assert!(!first.is_empty());
        // What the service would have stored: the meta and the slots in order.
        let mut events = Vec::new();
        let (w, _, _) = a.slots();
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
            Default::default(),
            config(),
            events,
            vec![],
            joined,
        );
        let rest_a = run(&mut a, 700..1400, 400, 1.0);
        let rest_b = run(&mut b, 700..1400, 400, 1.0);
        assert_eq!(rest_a, rest_b);
    }
}
