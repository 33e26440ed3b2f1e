//! The predictor's metrics, in one place.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct PredictorMetrics {
    /// Predictions served, by model and source (kafka, http).
    pub predictions: IntCounterVec,
    /// HTTP requests, by route and status class.
    pub http_requests: IntCounterVec,
    /// HTTP errors, by kind (bad_json, unknown_model, invalid_features, not_ready, ...).
    pub http_errors: IntCounterVec,
    /// HTTP request latency, seconds, by route.
    pub http_latency: HistogramVec,
    /// The version each model serves.
    pub model_version: IntGaugeVec,
    /// Hot swaps, by model.
    pub swaps: IntCounterVec,
    /// Versions that arrived after requests from their `effective_from` on were answered
    /// (they answer from arrival instead), by model.
    pub late_swaps: IntCounterVec,
    /// A shadow's predictions, by model and outcome (logged, failed).
    pub shadow: IntCounterVec,
    /// `--max-swap-wait`: requests held until the trainer had decided the versions in
    /// effect at their event time, and waits given up at the bound, by model.
    pub swap_waits: IntCounterVec,
    pub swap_waits_given_up: IntCounterVec,
}

impl PredictorMetrics {
    pub fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let predictions = counter(
            "predictions_total",
            "Predictions served.",
            &["model", "source"],
        );
        let http_requests = counter(
            "http_requests_total",
            "HTTP requests.",
            &["route", "status"],
        );
        let http_errors = counter("http_errors_total", "HTTP errors by kind.", &["kind"]);
        let swaps = counter(
            "model_swaps_total",
            "Production versions swapped in.",
            &["model"],
        );
        let late_swaps = counter(
            "late_swaps_total",
            "Production versions that arrived after their effective_from had been passed.",
            &["model"],
        );
        let shadow = counter(
            "shadow_predictions_total",
            "Shadow versions' predictions, logged or failed.",
            &["model", "outcome"],
        );
        let swap_waits = counter(
            "swap_waits_total",
            "Requests held until the trainer had decided the versions in effect at their event time (--max-swap-wait).",
            &["model"],
        );
        let swap_waits_given_up = counter(
            "swap_waits_given_up_total",
            "Waits for the trainer's progress given up at --max-swap-wait; requests go on with the versions held until its progress moves.",
            &["model"],
        );
        let http_latency = HistogramVec::new(
            HistogramOpts::new("http_request_seconds", "HTTP request latency, seconds.")
                .buckets(prometheus::exponential_buckets(0.00005, 2.0, 16).expect("valid buckets")),
            &["route"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(http_latency.clone()));
        let model_version = IntGaugeVec::new(
            Opts::new("model_version", "Model version in use."),
            &["model"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(model_version.clone()));
        Self {
            predictions,
            http_requests,
            http_errors,
            http_latency,
            model_version,
            swaps,
            late_swaps,
            shadow,
            swap_waits,
            swap_waits_given_up,
        }
    }

    /// Counts `n` shadow predictions of `model` and whether they failed. A failing
    /// shadow never touches the served answer; it is counted, and logged at the 1st,
    /// 2nd, 4th, 8th... failure so that a shadow failing on every request cannot flood
    /// the log.
    pub fn shadowed(&self, model: &str, version: i64, n: usize, failure: Option<&str>) {
        let outcome = if failure.is_some() {
            "failed"
        } else {
            "logged"
        };
        let c = self.shadow.with_label_values(&[model, outcome]);
        c.inc_by(n as u64);
        if let Some(error) = failure
            && c.get().is_power_of_two()
        {
            tracing::warn!(%model, version, failures = c.get(), %error, "the shadow version could not predict; served predictions are not affected");
        }
    }
}
