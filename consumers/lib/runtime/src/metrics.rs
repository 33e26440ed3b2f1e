//! Prometheus metrics of the runtime, defined in one place (served by
//! `driftline_process::metrics`).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

/// Cheap to clone: the collectors are shared handles.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Messages consumed, by topic and outcome (applied, dead_letter).
    pub messages: IntCounterVec,
    /// Dead letters, by source topic and kind (decode, validation, ...).
    pub dead_letters: IntCounterVec,
    /// Messages emitted, by topic.
    pub emitted: IntCounterVec,
    pub consume_errors: IntCounter,
    /// Kafka transactions, by outcome (committed, aborted).
    pub transactions: IntCounterVec,
    /// Changelog records read back into the local store, by changelog topic.
    pub restored: IntCounterVec,
    /// Seconds to process and commit one batch.
    pub batch_seconds: Histogram,
    /// Messages per committed batch.
    pub batch_size: Histogram,
    /// The registry follower's counters: versions kept thin, records refused.
    pub model_registry: crate::registry::FollowerMetrics,
}

impl Metrics {
    /// `service` becomes a constant label, so several services can share one scrape.
    pub fn new(service: &str) -> Self {
        let registry = Registry::new_custom(
            Some("driftline".into()),
            Some([("service".into(), service.into())].into()),
        )
        .unwrap_or_default();
        let messages = IntCounterVec::new(
            Opts::new("messages_total", "Messages consumed, by topic and outcome."),
            &["topic", "outcome"],
        )
        .expect("valid metric");
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "dead_letters_total",
                "Messages sent to the dead-letter topic.",
            ),
            &["topic", "kind"],
        )
        .expect("valid metric");
        let emitted = IntCounterVec::new(
            Opts::new("emitted_total", "Messages produced, by topic."),
            &["topic"],
        )
        .expect("valid metric");
        let transactions = IntCounterVec::new(
            Opts::new("transactions_total", "Kafka transactions, by outcome."),
            &["outcome"],
        )
        .expect("valid metric");
        let restored = IntCounterVec::new(
            Opts::new(
                "restored_records_total",
                "Changelog records read back into the local store.",
            ),
            &["topic"],
        )
        .expect("valid metric");
        let consume_errors =
            IntCounter::new("consume_errors_total", "Errors from the Kafka consumer.")
                .expect("valid metric");
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "batch_seconds",
                "Time to process and commit a batch, seconds.",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.0, 14).expect("valid buckets")),
        )
        .expect("valid metric");
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("batch_messages", "Messages per committed batch.")
                .buckets(prometheus::exponential_buckets(1.0, 4.0, 8).expect("valid buckets")),
        )
        .expect("valid metric");
        let registry_thinned = IntCounter::new(
            "registry_thinned_versions_total",
            "Model versions whose bytes and reference profile were dropped from memory \
             (neither production nor among the newest kept whole).",
        )
        .expect("valid metric");
        let registry_refused = IntCounter::new(
            "registry_refused_records_total",
            "Model records refused by the registry follower: undecodable, unsigned or not \
             signed by a trusted key (when keys are configured), a version below 1, or \
             published before 1970 or more than a day ahead of this service's clock.",
        )
        .expect("valid metric");
        for c in [
            Box::new(messages.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(registry_thinned.clone()),
            Box::new(registry_refused.clone()),
            Box::new(dead_letters.clone()),
            Box::new(emitted.clone()),
            Box::new(consume_errors.clone()),
            Box::new(transactions.clone()),
            Box::new(restored.clone()),
            Box::new(batch_seconds.clone()),
            Box::new(batch_size.clone()),
        ] {
            let _ = registry.register(c);
        }
        Self {
            registry,
            messages,
            dead_letters,
            emitted,
            consume_errors,
            transactions,
            restored,
            batch_seconds,
            batch_size,
            model_registry: crate::registry::FollowerMetrics {
                thinned: registry_thinned,
                refused: registry_refused,
            },
        }
    }

    pub fn render(&self) -> String {
        driftline_process::metrics::render(&self.registry)
    }
}
