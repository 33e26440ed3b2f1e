//! The trainer's consumer logic: the joiner's labelled rows into the row store, retrain
//! events (and the optional schedule) into pending jobs. Nothing here trains: a job is a
//! key in the store, committed with the offset of the event that asked for it, and the
//! [`crate::jobs`] runner picks it up. Consuming therefore never waits for a fit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use driftline_model::{Joined, LabelledRow, Target, primary_metric};
use driftline_runtime::registry::SharedRegistry;
use driftline_runtime::store::TopicPartition;
use driftline_runtime::{Output, Processor, Record, Rejection, Store, Txn};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Labelled, RetrainRequested, RetrainTrigger, offsets_key};
use driftline_schemas::spec::{FeatureSpec, TargetKind};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{debug, info};

use crate::jobs::Ownership;
use crate::labelled::{
    Job, RowIndex, decision_key, done_key, job_key, record_read, rollout_key, sched_key,
};
use crate::metrics::TrainerMetrics;
use crate::rollout::{Action, Decision, Gate, Rollout, Row, Serving};

/// Retrain without drift, every N labelled rows and/or every T hours of event time. Off
/// (both zero) by default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Schedule {
    pub every_rows: u64,
    pub every_hours: f64,
}

impl Schedule {
    pub fn is_on(&self) -> bool {
        self.every_rows > 0 || self.every_hours > 0.0
    }
}

/// The schedule's counters for one model, kept in the store (`sched/<model>`).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    rows_since: u64,
    total_rows: u64,
    last_time: Option<i64>,
}

/// A scheduled run that is due.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    /// `schedule:<labelled rows so far>`: deterministic, so a replay of the same rows
    /// names the same job.
    pub trigger: String,
    pub reason: String,
}

impl ScheduleState {
    /// Counts one new labelled row at `event_time`; says whether a run is due.
    pub fn on_row(&mut self, schedule: &Schedule, event_time: i64) -> Option<Due> {
        self.rows_since += 1;
        self.total_rows += 1;
        let last = *self.last_time.get_or_insert(event_time);
        let by_rows = schedule.every_rows > 0 && self.rows_since >= schedule.every_rows;
        let by_time = schedule.every_hours > 0.0
            && (event_time - last) as f64 >= schedule.every_hours * 3_600_000.0;
        if !(by_rows || by_time) {
            return None;
        }
        let reason = if by_rows {
            format!(
                "schedule: {} labelled rows since the last scheduled run",
                self.rows_since
            )
        } else {
            format!("schedule: {} hours of event time", schedule.every_hours)
        };
        self.rows_since = 0;
        self.last_time = Some(event_time);
        Some(Due {
            trigger: format!("schedule:{}", self.total_rows),
            reason,
        })
    }
}

/// The topics this processor reads.
#[derive(Debug, Clone)]
pub struct Topics {
    pub labelled: String,
    pub retrain: String,
}

pub struct TrainerProcessor {
    pub specs: HashMap<String, Arc<FeatureSpec>>,
    pub index: RowIndex,
    pub topics: Topics,
    pub codec: Codec,
    pub registry: SharedRegistry,
    pub schedule: Schedule,
    /// Woken after each commit that queued a job.
    pub wake: Arc<Notify>,
    pub metrics: TrainerMetrics,
    /// Tells the job runner which partitions' jobs are this instance's to run.
    pub ownership: Ownership,
    /// The live rollout gate's settings.
    pub gate: Gate,
    queued: bool,
}

impl TrainerProcessor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        specs: HashMap<String, Arc<FeatureSpec>>,
        index: RowIndex,
        topics: Topics,
        codec: Codec,
        registry: SharedRegistry,
        schedule: Schedule,
        wake: Arc<Notify>,
        metrics: TrainerMetrics,
        ownership: Ownership,
        gate: Gate,
    ) -> Self {
        Self {
            specs,
            index,
            topics,
            codec,
            registry,
            schedule,
            wake,
            metrics,
            ownership,
            gate,
            queued: false,
        }
    }

    /// Counts a new labelled row in its model's live rollout gate; a decision it makes
    /// is left in the store for the job runner to publish, committed with this row.
    fn rollout(
        &mut self,
        txn: &mut Txn<'_>,
        l: &Labelled,
        kind: TargetKind,
        partition: i32,
    ) -> Result<(), Rejection> {
        let model = &l.prediction.model;
        let key = rollout_key(model);
        let before: Rollout = match txn.get(&key).map_err(state_err)? {
            Some(b) => serde_json::from_slice(&b).unwrap_or_default(),
            None => Rollout::default(),
        };
        let serving = {
            let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
            Serving {
                production: reg.production(model).map(|m| (m.version, m.published_at)),
                canary: reg.canary(model).map(|m| (m.version, m.published_at)),
                shadow: reg.shadow(model).map(|m| (m.version, m.published_at)),
            }
        };
        let mut state = before.clone();
        state.follow(serving, &self.gate);
        let metric = primary_metric(kind);
        let loss = |p| {
            Joined::of(p, &l.actual)
                .and_then(|j| j.loss(metric))
                .filter(|x| x.is_finite())
        };
        if let Some(row_loss) = loss(&l.prediction.prediction) {
            let shadow = l
                .prediction
                .shadow
                .as_ref()
                .and_then(|sh| loss(&sh.prediction).map(|x| (sh.model_version, x)));
            let row = Row {
                version: l.prediction.model_version,
                served_at: l.prediction.served_at,
                loss: row_loss,
                shadow,
            };
            for (version, action, reason) in state.count(row, &self.gate, metric) {
                info!(%model, version, action = action.as_str(), %reason, "live rollout gate");
                self.metrics
                    .rollout_decisions
                    .with_label_values(&[action.as_str()])
                    .inc();
                if action == Action::Keep {
                    continue;
                }
                let d = Decision {
                    model: model.clone(),
                    version,
                    action,
                    reason,
                    partition,
                };
                txn.put(decision_key(&d), serde_json::to_vec(&d).unwrap_or_default());
                self.queued = true;
            }
        }
        for (role, live) in [
            ("production", state.production.as_ref().map(|t| t.live)),
            ("canary", state.canary.as_ref().map(|t| t.live)),
            ("shadow", state.shadow.as_ref().map(|t| t.live)),
        ] {
            let gauge = self.metrics.live_error.with_label_values(&[model, role]);
            gauge.set(live.and_then(|l| l.mean()).unwrap_or(f64::NAN));
        }
        if state != before {
            txn.put(key, serde_json::to_vec(&state).unwrap_or_default());
        }
        Ok(())
    }

    /// After a new row (read at `offset` of labelled `partition`): the gauge, and the
    /// schedule's count.
    fn row_added(
        &mut self,
        txn: &mut Txn<'_>,
        model: &str,
        event_time: i64,
        (partition, offset): (i32, i64),
    ) -> Result<(), Rejection> {
        self.metrics
            .labelled_rows
            .with_label_values(&[model])
            .set(self.index.rows(model) as i64);
        let imported = self
            .specs
            .get(model)
            .is_some_and(|s| s.model.algorithm == crate::ops::IMPORTED);
        if !self.schedule.is_on() || imported {
            return Ok(());
        }
        let key = sched_key(model);
        let mut s: ScheduleState = match txn.get(&key).map_err(state_err)? {
            Some(b) => serde_json::from_slice(&b).unwrap_or_default(),
            None => ScheduleState::default(),
        };
        if let Some(due) = s.on_row(&self.schedule, event_time) {
            let job = Job {
                model: model.to_string(),
                trigger: due.trigger,
                window_start: i64::MIN,
                window_end: i64::MAX,
                requested_at: event_time,
                reason: due.reason,
                partition: Some(partition),
                // Up to and with the row that made it due.
                rows_until: Some(offset + 1),
            };
            self.queue(txn, job, None)?;
        }
        txn.put(key, serde_json::to_vec(&s).unwrap_or_default());
        Ok(())
    }

    /// Records a job unless its trigger (or the name an older trainer gave the same
    /// event, `legacy`) already produced a version or was coalesced.
    fn queue(
        &mut self,
        txn: &mut Txn<'_>,
        job: Job,
        legacy: Option<String>,
    ) -> Result<(), Rejection> {
        for trigger in std::iter::once(&job.trigger).chain(legacy.as_ref()) {
            let published = self
                .registry
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .by_trigger(&job.model, trigger)
                .map(|m| m.version);
            if let Some(version) = published {
                info!(model = %job.model, %trigger, version, "retrain already produced a version; ignored");
                return Ok(());
            }
            if txn
                .get(&done_key(&job.model, trigger))
                .map_err(state_err)?
                .is_some()
            {
                info!(model = %job.model, %trigger, "retrain already coalesced into another run; ignored");
                return Ok(());
            }
        }
        info!(model = %job.model, trigger = %job.trigger, "training job queued");
        txn.put(job_key(&job.model, &job.trigger), job.encode());
        self.queued = true;
        Ok(())
    }
}

fn state_err(e: driftline_runtime::Error) -> Rejection {
    // A RocksDB read failing is not the message's fault, but the runtime's contract has no
    // retry path for it; the message goes to the DLQ with the reason rather than vanish.
    Rejection {
        kind: "state",
        error: e.to_string(),
    }
}

/// The training row of a labelled record: its features and the actual as the spec's
/// target kind reads it.
fn training_row(l: &Labelled, kind: TargetKind) -> Result<LabelledRow, Rejection> {
    let a = &l.actual;
    let target = match kind {
        TargetKind::Regression => match a.value.filter(|v| v.is_finite()) {
            Some(v) => Target::Value(v),
            None => {
                return Err(Rejection::validation(format!(
                    "actual for {} has no finite value (model {} is a regression)",
                    a.request_id, a.model
                )));
            }
        },
        TargetKind::Classification => match (&a.class, a.value) {
            (Some(c), _) => Target::Class(c.clone()),
            // A numeric label: the model's encoder names it as it names numeric classes.
            (None, Some(v)) if v.is_finite() => Target::Value(v),
            _ => {
                return Err(Rejection::validation(format!(
                    "actual for {} has neither a class nor a value",
                    a.request_id
                )));
            }
        },
    };
    Ok(LabelledRow {
        event_time: l.prediction.event_time,
        features: l.prediction.features.clone(),
        target,
    })
}

/// The trigger string a retrain event yields (stored in `ModelPublished.trigger`, and the
/// key that makes one event one version). Drift and performance retrains name the drift
/// report that asked for them, so a version can be traced to its evidence; the monitor
/// emits one retrain per report, so the report id is as unique as the retrain id. An
/// event without a report falls back to its retrain id.
pub fn trigger_of(event: &RetrainRequested) -> String {
    let report = || {
        event
            .report_id
            .as_deref()
            .filter(|r| !r.is_empty())
            .unwrap_or(&event.retrain_id)
    };
    match event.trigger {
        RetrainTrigger::Bootstrap => "bootstrap".to_string(),
        RetrainTrigger::Drift => format!("drift:{}", report()),
        RetrainTrigger::Performance => format!("performance:{}", report()),
        RetrainTrigger::Schedule => format!("schedule:{}", event.retrain_id),
        RetrainTrigger::Manual => format!("manual:{}", event.retrain_id),
    }
}

/// The trigger trainers before report ids were recorded gave the same event (by retrain
/// id), if it differs: a version published under that name must still count as done.
fn legacy_trigger_of(event: &RetrainRequested) -> Option<String> {
    let kind = match event.trigger {
        RetrainTrigger::Drift => "drift",
        RetrainTrigger::Performance => "performance",
        _ => return None,
    };
    let legacy = format!("{kind}:{}", event.retrain_id);
    (legacy != trigger_of(event)).then_some(legacy)
}

impl Processor for TrainerProcessor {
    fn reload(&mut self, store: &Store) -> Result<(), String> {
        self.index = self.index.reloaded(store).map_err(|e| e.to_string())?;
        // The runner reads the row counts from the gauge: restored rows count too.
        for model in self.specs.keys() {
            self.metrics
                .labelled_rows
                .with_label_values(&[model])
                .set(self.index.rows(model) as i64);
        }
        // A restore can bring jobs with it: the runner looks at the store again.
        self.queued = false;
        self.wake.notify_one();
        Ok(())
    }

    fn process(
        &mut self,
        record: &Record<'_>,
        txn: &mut Txn<'_>,
    ) -> Result<Vec<Output>, Rejection> {
        let payload = record.payload.unwrap_or_default();
        if record.topic == self.topics.labelled {
            // Read, whatever it holds: a retrain request waiting for this offset can run.
            record_read(txn, record.partition, record.offset + 1);
            let l: Labelled = self.codec.decode(payload).map_err(Rejection::decode)?;
            let model = l.prediction.model.clone();
            let Some(spec) = self.specs.get(&model) else {
                return Ok(Vec::new());
            };
            let kind = spec.target.kind;
            let row = training_row(&l, kind)?;
            let read_at = (&l.prediction_read_at, &l.actual_read_at);
            if let Some(evicted) = self.index.add(
                txn,
                &model,
                &l.prediction.request_id,
                &row,
                read_at,
                record.offset,
            ) {
                self.metrics
                    .evicted_rows
                    .with_label_values(&[&model])
                    .inc_by(evicted);
                self.row_added(
                    txn,
                    &model,
                    row.event_time,
                    (record.partition, record.offset),
                )?;
                self.rollout(txn, &l, kind, record.partition)?;
            }
        } else if record.topic == self.topics.retrain {
            let r: RetrainRequested = self.codec.decode(payload).map_err(Rejection::decode)?;
            let Some(spec) = self.specs.get(&r.model) else {
                debug!(model = %r.model, "retrain for a model this trainer does not own");
                return Ok(Vec::new());
            };
            if spec.model.algorithm == crate::ops::IMPORTED {
                info!(model = %r.model, retrain = %r.retrain_id, "an imported model: its retrain request is for the trainer that made it");
                return Ok(Vec::new());
            }
            let job = Job {
                model: r.model.clone(),
                trigger: trigger_of(&r),
                window_start: r.window_start,
                window_end: r.window_end,
                requested_at: r.requested_at,
                reason: r.reason.clone(),
                partition: Some(record.partition),
                // The monitor reads the same labelled partition number (co-partitioned).
                rows_until: r
                    .end_offsets
                    .get(&offsets_key(&self.topics.labelled, record.partition))
                    .copied(),
            };
            self.queue(txn, job, legacy_trigger_of(&r))?;
        }
        Ok(Vec::new())
    }

    fn committed(&mut self) {
        if std::mem::take(&mut self.queued) {
            self.wake.notify_one();
        }
    }

    fn assigned(&mut self, partitions: &HashSet<TopicPartition>) {
        // Labelled rows and retrain events of a model share a partition number (the
        // topics are co-partitioned), so the number is what is owned.
        self.ownership.set(partitions.iter().map(|(_, p)| *p));
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::RwLock;

    use driftline_runtime::Store;
    use driftline_runtime::registry::Registry;
    use driftline_schemas::events::{
        Actual, FeatureValue, ModelPublished, ModelStatus, Prediction, PredictionLogged,
        PredictionSource, SourcePosition, TrainingWindow,
    };

    use crate::labelled::pending_jobs;

    const HOUR: i64 = 3_600_000;

    /// The shared toy spec with its one numeric feature, `x`, for model `m`.
    fn spec() -> FeatureSpec {
        let mut spec =
            FeatureSpec::from_toml(include_str!("../../../tests/fixtures/toy.toml")).unwrap();
        spec.model.name = "m".into();
        spec.features.retain(|f| f.name == "x");
        spec
    }

    struct Harness {
        _dir: tempfile::TempDir,
        store: Store,
        processor: TrainerProcessor,
        registry: SharedRegistry,
        codec: Codec,
        offset: i64,
    }

    impl Harness {
        fn new(schedule: Schedule) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), false).unwrap();
            let index = RowIndex::load(&store, ["m".to_string()], 1000).unwrap();
            let registry: SharedRegistry = Arc::new(RwLock::new(Registry::default()));
            let processor = TrainerProcessor::new(
                [("m".to_string(), Arc::new(spec()))].into(),
                index,
                Topics {
                    labelled: "l".into(),
                    retrain: "r".into(),
                },
                Codec::single_object(),
                registry.clone(),
                schedule,
                Arc::new(Notify::new()),
                TrainerMetrics::new(&prometheus::Registry::new()),
                Ownership::default(),
                Gate {
                    min_rows: 3,
                    margin: 0.01,
                    watch_rows: 3,
                },
            );
            Self {
                _dir: dir,
                store,
                processor,
                registry,
                codec: Codec::single_object(),
                offset: 0,
            }
        }

        /// Processes one event read from `topic` and commits it.
        fn feed(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), Rejection> {
            let record = Record {
                topic,
                partition: 0,
                offset: self.offset,
                key: None,
                payload: Some(&payload),
                timestamp: None,
            };
            self.offset += 1;
            let mut txn = self.store.txn();
            self.processor.process(&record, &mut txn)?;
            self.store.commit(txn, &BTreeMap::new()).unwrap();
            Ok(())
        }

        /// A row of the joiner, its actual `value`.
        fn labelled(&mut self, id: &str, t: i64, value: Option<f64>) -> Result<(), Rejection> {
            self.served(id, t, (1, None), value)
        }

        /// A row of the joiner whose prediction `(version, value)` was served at `t`.
        fn served(
            &mut self,
            id: &str,
            t: i64,
            (version, predicted): (i64, Option<f64>),
            value: Option<f64>,
        ) -> Result<(), Rejection> {
            let p = PredictionLogged {
                request_id: id.into(),
                model: "m".into(),
                model_version: version,
                event_time: t,
                features: [("x".to_string(), FeatureValue::Number(1.0))].into(),
                prediction: Prediction {
                    value: predicted,
                    ..Prediction::default()
                },
                served_at: t,
                latency_us: 1,
                source: PredictionSource::Kafka,
                shadow: None,
            };
            let a = Actual {
                request_id: id.into(),
                model: "m".into(),
                event_time: t,
                value,
                class: None,
                observed_at: t,
            };
            let at = |topic: &str| SourcePosition {
                topic: topic.into(),
                partition: 0,
                offset: self.offset,
            };
            let l = Labelled {
                prediction: p,
                actual: a,
                prediction_read_at: at("p"),
                actual_read_at: at("a"),
            };
            let bytes = self.codec.encode(&l).unwrap();
            self.feed("l", bytes)
        }

        fn retrain(&mut self, r: &RetrainRequested) {
            let bytes = self.codec.encode(r).unwrap();
            self.feed("r", bytes).unwrap();
        }

        fn jobs(&self) -> Vec<String> {
            pending_jobs(&self.store)
                .unwrap()
                .into_iter()
                .map(|(_, j)| j.trigger)
                .collect()
        }

        /// What the job runner does once a version is on the models topic.
        fn published(&mut self, trigger: &str) {
            let version = self.registry.read().unwrap().latest_version("m") + 1;
            self.registry.write().unwrap().apply(ModelPublished {
                trigger: trigger.into(),
                ..version_record(version, ModelStatus::Production, version)
            });
            let mut txn = self.store.txn();
            for (key, _) in pending_jobs(&self.store).unwrap() {
                txn.delete(key);
            }
            self.store.commit(txn, &BTreeMap::new()).unwrap();
        }
    }

    /// A record of `m` v`version`.
    fn version_record(version: i64, status: ModelStatus, published_at: i64) -> ModelPublished {
        ModelPublished {
            model: "m".into(),
            version,
            algorithm: "linear".into(),
            hyper_parameters: Default::default(),
            metrics: Default::default(),
            incumbent_metrics: Default::default(),
            parent_version: None,
            trigger: format!("manual:{version}"),
            training_window: TrainingWindow::default(),
            reference_profile: vec![],
            model_format: "x".into(),
            model_bytes: vec![],
            status,
            published_at,
            traffic_share: if status == ModelStatus::Canary {
                0.2
            } else {
                0.0
            },
            error_sub_windows: Vec::new(),
            feature_importance: Default::default(),
            multivariate: None,
            performance_estimator: None,
            error_estimator: None,
            effective_from: None,
        }
    }

    fn drift_retrain(report: &str) -> RetrainRequested {
        RetrainRequested {
            retrain_id: format!("retrain-{report}"),
            model: "m".into(),
            model_version: 1,
            trigger: RetrainTrigger::Drift,
            reason: "drift".into(),
            report_id: Some(report.into()),
            drifted_features: vec!["x".into()],
            window_start: 0,
            window_end: 10,
            requested_at: 5,
            end_offsets: Default::default(),
        }
    }

    #[test]
    fn a_drift_retrain_is_recorded_under_its_report_id() {
        assert_eq!(trigger_of(&drift_retrain("m-v1-800")), "drift:m-v1-800");
        let performance = RetrainRequested {
            trigger: RetrainTrigger::Performance,
            ..drift_retrain("m-v1-900")
        };
        assert_eq!(trigger_of(&performance), "performance:m-v1-900");
        // No report to name: the retrain id still makes it one version per event.
        let bare = RetrainRequested {
            report_id: None,
            ..drift_retrain("x")
        };
        assert_eq!(trigger_of(&bare), "drift:retrain-x");
        let manual = RetrainRequested {
            trigger: RetrainTrigger::Manual,
            ..drift_retrain("m-v1-1000")
        };
        assert_eq!(trigger_of(&manual), "manual:retrain-m-v1-1000");
    }

    #[test]
    fn a_retrain_event_delivered_again_after_its_version_queues_nothing() {
        let mut h = Harness::new(Schedule::default());
        h.retrain(&drift_retrain("m-v1-800"));
        h.retrain(&drift_retrain("m-v1-800"));
        assert_eq!(h.jobs(), ["drift:m-v1-800"], "one job for the event");
        h.published("drift:m-v1-800");
        h.retrain(&drift_retrain("m-v1-800"));
        assert!(h.jobs().is_empty());
        // Another report is another version.
        h.retrain(&drift_retrain("m-v1-900"));
        assert_eq!(h.jobs(), ["drift:m-v1-900"]);
    }

    #[test]
    fn a_version_published_under_the_old_retrain_id_trigger_still_counts() {
        // A trainer from before report ids were recorded published this event's version
        // as `drift:<retrain id>`; the monitor re-emits the event after a crash.
        let mut h = Harness::new(Schedule::default());
        h.published("drift:retrain-m-v1-800");
        h.retrain(&drift_retrain("m-v1-800"));
        assert!(h.jobs().is_empty());
    }

    #[test]
    fn the_schedule_is_due_every_n_rows() {
        let schedule = Schedule {
            every_rows: 3,
            every_hours: 0.0,
        };
        let mut s = ScheduleState::default();
        let due: Vec<Option<String>> = (0..7)
            .map(|i| s.on_row(&schedule, i * HOUR).map(|d| d.trigger))
            .collect();
        assert_eq!(
            due,
            [
                None,
                None,
                Some("schedule:3".to_string()),
                None,
                None,
                Some("schedule:6".to_string()),
                None
            ]
        );
    }

    #[test]
    fn the_schedule_is_due_every_t_hours_of_event_time() {
        let schedule = Schedule {
            every_rows: 0,
            every_hours: 24.0,
        };
        let mut s = ScheduleState::default();
        let times = [0, 10 * HOUR, 23 * HOUR, 24 * HOUR, 30 * HOUR, 48 * HOUR];
        let due: Vec<bool> = times
            .iter()
            .map(|t| s.on_row(&schedule, *t).is_some())
            .collect();
        assert_eq!(due, [false, false, false, true, false, true]);
    }

    #[test]
    fn the_schedule_is_off_by_default() {
        let off = Schedule::default();
        assert!(!off.is_on());
        let mut s = ScheduleState::default();
        assert!((0..10_000).all(|i| s.on_row(&off, i * HOUR).is_none()));
    }

    #[test]
    fn a_scheduled_retrain_is_queued_from_labelled_rows_without_any_retrain_event() {
        let mut h = Harness::new(Schedule {
            every_rows: 2,
            every_hours: 0.0,
        });
        for i in 0..5 {
            h.labelled(&format!("r{i}"), i * HOUR, Some(2.0)).unwrap();
        }
        // A re-delivered row counts once.
        h.labelled("r4", 4 * HOUR, Some(2.0)).unwrap();
        assert_eq!(h.jobs(), ["schedule:2", "schedule:4"]);
    }

    #[test]
    fn live_labels_of_a_canary_and_production_leave_one_decision_for_the_runner() {
        let mut h = Harness::new(Schedule::default());
        {
            let mut reg = h.registry.write().unwrap();
            reg.apply(version_record(1, ModelStatus::Production, 10));
            reg.apply(version_record(2, ModelStatus::Canary, 20));
        }
        // Served before the canary began: not part of the trial.
        h.served("early", 15, (1, Some(0.0)), Some(5.0)).unwrap();
        for i in 0..4 {
            h.served(&format!("p{i}"), 30 + i, (1, Some(2.0)), Some(5.0))
                .unwrap();
            h.served(&format!("c{i}"), 30 + i, (2, Some(4.5)), Some(5.0))
                .unwrap();
        }
        // A re-delivered row is not counted again.
        h.served("c0", 30, (2, Some(4.5)), Some(5.0)).unwrap();
        let decisions = crate::labelled::pending_decisions(&h.store).unwrap();
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        let d = &decisions[0].1;
        assert_eq!((d.version, d.action), (2, Action::Promote));
        assert!(
            d.reason
                .contains("mae 0.5000 over 3 live rows vs production v1 3.0000 over 3"),
            "{}",
            d.reason
        );
        let state: Rollout =
            serde_json::from_slice(&h.store.get(&rollout_key("m")).unwrap().unwrap()).unwrap();
        assert_eq!(state.canary.map(|t| t.live.rows), Some(4));
    }

    #[test]
    fn a_row_whose_actual_does_not_fit_the_target_is_rejected_with_the_reason() {
        let mut h = Harness::new(Schedule::default());
        let err = h.labelled("r", 0, None).unwrap_err();
        assert_eq!(err.kind, "validation");
        assert!(err.error.contains("no finite value"), "{}", err.error);
        assert_eq!(h.processor.index.rows("m"), 0);
    }
}
