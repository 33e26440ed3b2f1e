//! The alerts' Prometheus metrics, by body format (never by URL: a webhook URL is a secret).

use prometheus::{IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct AlertsMetrics {
    /// Alerts a target took.
    pub delivered: IntCounterVec,
    /// Alerts a target did not take after its retries (each also a dead letter).
    pub failed: IntCounterVec,
    /// HTTP attempts, retries included.
    pub attempts: IntCounterVec,
}

impl AlertsMetrics {
    pub fn new(registry: &Registry) -> Self {
        let vec = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["format"]).expect("valid metric");
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        Self {
            delivered: vec(
                "alerts_delivered_total",
                "Alerts a webhook took, by body format.",
            ),
            failed: vec(
                "alerts_failed_total",
                "Alerts a webhook did not take after its retries, by body format (each also a dead letter).",
            ),
            attempts: vec(
                "webhook_attempts_total",
                "HTTP posts to webhooks, retries included, by body format.",
            ),
        }
    }
}
