//! The monitor's Prometheus metrics, in one place: the latest statistics as gauges per
//! model and feature, and counters of evaluations and retrain requests.

use driftline_schemas::events::{DriftDecision, DriftReport, FeatureDrift};
use prometheus::{GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct MonitorMetrics {
    /// The latest value of each statistic, by model, feature and statistic.
    pub statistic: GaugeVec,
    /// 1 when the feature drifted at the latest evaluation.
    pub feature_drifted: IntGaugeVec,
    pub share_drifted: GaugeVec,
    /// The latest decision: 0 no drift, 1 warning, 2 drift.
    pub decision: IntGaugeVec,
    /// Error metrics, by model, metric and source (window, holdout).
    pub performance: GaugeVec,
    pub window_events: IntGaugeVec,
    pub model_version: IntGaugeVec,
    pub evaluations: IntCounterVec,
    pub retrains: IntCounterVec,
    /// Labelled predictions of a version other than the one serving (left out).
    pub labelled_other_version: IntCounterVec,
    /// Seconds per evaluation.
    pub evaluation_seconds: Histogram,
}

impl MonitorMetrics {
    pub fn new(registry: &Registry) -> Self {
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            let _ = r.register(Box::new(c.clone()));
            c
        }
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            reg(
                registry,
                GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let int_gauge = |name: &str, help: &str, labels: &[&str]| {
            reg(
                registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(
                registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        Self {
            statistic: gauge(
                "drift_statistic",
                "Latest drift statistic of a feature (psi, ks_d, ks_p, wasserstein_norm, jensen_shannon, chi2_p, missing_share, out_of_range, unseen_category).",
                &["model", "feature", "statistic"],
            ),
            feature_drifted: int_gauge(
                "feature_drifted",
                "1 if the feature drifted at the latest evaluation.",
                &["model", "feature"],
            ),
            share_drifted: gauge(
                "share_drifted",
                "Share of features drifted at the latest evaluation.",
                &["model"],
            ),
            decision: int_gauge(
                "drift_decision",
                "Latest decision: 0 no drift, 1 warning, 2 drift.",
                &["model"],
            ),
            performance: gauge(
                "performance",
                "Error metrics over the window and on the holdout.",
                &["model", "metric", "source"],
            ),
            window_events: int_gauge("window_events", "Events in the current window.", &["model"]),
            model_version: int_gauge(
                "monitored_version",
                "Model version the window belongs to.",
                &["model"],
            ),
            evaluations: counter(
                "evaluations_total",
                "Evaluations, by decision.",
                &["model", "decision"],
            ),
            retrains: counter(
                "retrain_requests_total",
                "RetrainRequested emitted.",
                &["model"],
            ),
            labelled_other_version: counter(
                "labelled_other_version_total",
                "Labelled predictions of a version other than the one serving, left out.",
                &["model"],
            ),
            evaluation_seconds: reg(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new("evaluation_seconds", "Time to evaluate a window, seconds.")
                        .buckets(
                            prometheus::exponential_buckets(0.00005, 2.0, 16)
                                .expect("valid buckets"),
                        ),
                )
                .expect("valid metric"),
            ),
        }
    }

    /// Sets the gauges from a report.
    pub fn record(&self, r: &DriftReport, retrain: bool) {
        let m = r.model.as_str();
        let mut set = |f: &FeatureDrift| {
            let stats = [
                ("psi", f.psi),
                ("ks_d", f.ks_d),
                ("ks_p", f.ks_p),
                ("wasserstein_norm", f.wasserstein_norm),
                ("jensen_shannon", f.jensen_shannon),
                ("chi2_p", f.chi2_p),
                ("missing_share", Some(f.missing_share)),
            ];
            for (name, v) in stats {
                if let Some(v) = v {
                    self.statistic.with_label_values(&[m, &f.name, name]).set(v);
                }
            }
            // The data quality shares the report carries as signals (missing_share is
            // set above already).
            for s in &f.signals {
                if matches!(s.name.as_str(), "out_of_range" | "unseen_category") {
                    self.statistic
                        .with_label_values(&[m, &f.name, &s.name])
                        .set(s.value);
                }
            }
            self.feature_drifted
                .with_label_values(&[m, &f.name])
                .set(i64::from(f.drifted));
        };
        r.features.iter().for_each(&mut set);
        if let Some(p) = &r.prediction {
            set(p);
        }
        self.share_drifted
            .with_label_values(&[m])
            .set(r.share_drifted);
        self.decision.with_label_values(&[m]).set(match r.decision {
            DriftDecision::NoDrift => 0,
            DriftDecision::Warning => 1,
            DriftDecision::Drift => 2,
        });
        for p in &r.performance {
            self.performance
                .with_label_values(&[m, &p.metric, "window"])
                .set(p.current);
            if let Some(h) = p.reference {
                self.performance
                    .with_label_values(&[m, &p.metric, "holdout"])
                    .set(h);
            }
        }
        self.window_events
            .with_label_values(&[m])
            .set(r.window.count);
        self.model_version
            .with_label_values(&[m])
            .set(r.model_version);
        self.evaluations
            .with_label_values(&[m, r.decision.symbol()])
            .inc();
        if retrain {
            self.retrains.with_label_values(&[m]).inc();
        }
    }
}
