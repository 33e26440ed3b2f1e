//! The joiner's Prometheus metrics: one set of counters for the one join.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct JoinerMetrics {
    /// Labelled rows emitted.
    pub joined: IntCounter,
    /// Halves waiting for their other half, by half.
    pub waiting: IntGaugeVec,
    /// Halves given up on, by half and reason (age, count, replaced).
    pub evicted: IntCounterVec,
    /// Halves of a request already joined, by half.
    pub duplicates: IntCounterVec,
    /// Joined request ids no longer remembered for the duplicate check.
    pub forgotten: IntCounter,
}

impl JoinerMetrics {
    pub fn new(registry: &Registry) -> Self {
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            let _ = r.register(Box::new(c.clone()));
            c
        }
        let vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        Self {
            joined: reg(
                registry,
                IntCounter::new("joined_total", "Labelled rows emitted.").expect("valid metric"),
            ),
            waiting: reg(
                registry,
                IntGaugeVec::new(
                    Opts::new("waiting", "Halves waiting for their other half."),
                    &["half"],
                )
                .expect("valid metric"),
            ),
            evicted: vec(
                "evicted_total",
                "Halves given up on before their other half came, by reason (age, count, replaced).",
                &["half", "reason"],
            ),
            duplicates: vec(
                "duplicates_total",
                "Halves of a request that was already joined.",
                &["half"],
            ),
            forgotten: reg(
                registry,
                IntCounter::new(
                    "forgotten_joined_total",
                    "Joined request ids no longer remembered for the duplicate check (the oldest past --max-waiting).",
                )
                .expect("valid metric"),
            ),
        }
    }
}
