//! The trainer's Prometheus metrics, defined in one place (beside the runtime's).

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Cheap to clone: the collectors are shared handles.
#[derive(Clone)]
pub struct TrainerMetrics {
    /// Labelled rows in the store, by model.
    pub labelled_rows: IntGaugeVec,
    /// Rows evicted past `--max-rows` (the oldest in event time), by model.
    pub evicted_rows: IntCounterVec,
    /// Training runs by outcome: promoted, rejected, failed, already_published.
    pub trainings: IntCounterVec,
    /// Wall time of one training run (snapshot, fit, evaluation), seconds.
    pub training_seconds: Histogram,
    /// Jobs waiting in the store.
    pub pending_jobs: IntGauge,
    /// The live rollout gate's decisions, by action: promote, reject, rollback, keep.
    pub rollout_decisions: IntCounterVec,
    /// Mean live loss on the primary metric, by model and role (production over its
    /// term, canary and shadow over their trials); NaN before a row.
    pub live_error: GaugeVec,
}

impl TrainerMetrics {
    pub fn new(registry: &Registry) -> Self {
        let labelled_rows = IntGaugeVec::new(
            Opts::new(
                "trainer_labelled_rows",
                "Labelled rows in the training store, by model.",
            ),
            &["model"],
        )
        .expect("valid metric");
        let evicted_rows = IntCounterVec::new(
            Opts::new(
                "trainer_evicted_rows_total",
                "Labelled rows evicted past --max-rows (the oldest in event time), by model.",
            ),
            &["model"],
        )
        .expect("valid metric");
        let trainings = IntCounterVec::new(
            Opts::new("trainer_trainings_total", "Training runs, by outcome."),
            &["outcome"],
        )
        .expect("valid metric");
        let training_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "trainer_training_seconds",
                "Time of one training run, seconds.",
            )
            .buckets(prometheus::exponential_buckets(0.05, 2.0, 14).expect("valid buckets")),
        )
        .expect("valid metric");
        let pending_jobs = IntGauge::new(
            "trainer_pending_jobs",
            "Training jobs waiting in the store.",
        )
        .expect("valid metric");
        let rollout_decisions = IntCounterVec::new(
            Opts::new(
                "trainer_rollout_decisions_total",
                "Decisions of the live rollout gate, by action.",
            ),
            &["action"],
        )
        .expect("valid metric");
        let live_error = GaugeVec::new(
            Opts::new(
                "trainer_live_error",
                "Mean live loss on the primary metric (MAE or log loss) over labelled rows, by model and role (production, canary, shadow).",
            ),
            &["model", "role"],
        )
        .expect("valid metric");
        for c in [
            Box::new(labelled_rows.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(evicted_rows.clone()),
            Box::new(trainings.clone()),
            Box::new(training_seconds.clone()),
            Box::new(pending_jobs.clone()),
            Box::new(rollout_decisions.clone()),
            Box::new(live_error.clone()),
        ] {
            let _ = registry.register(c);
        }
        Self {
            labelled_rows,
            evicted_rows,
            trainings,
            training_seconds,
            pending_jobs,
            rollout_decisions,
            live_error,
        }
    }
}
