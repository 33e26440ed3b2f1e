//! The Kafka path: predictions (the window) and labelled predictions (the joiner's
//! pairs, for performance) in, one consumer group, co-partitioned by model; reports and
//! retrain requests out, every state change staged in the runtime's
//! transaction so it commits with the offsets.
//!
//! Memory mirrors RocksDB: the monitors live in memory for speed, every change is also
//! written through the transaction, and [`MonitorProcessor::restore`] rebuilds the
//! monitors from the store on start, in exactly the state the last commit left.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use driftline_runtime::registry::{PRODUCTION_HISTORY, SharedRegistry, answering};
use driftline_runtime::{Output, Processor, Record, Rejection, Store, Txn, now_ms};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{DriftReport, Labelled, ModelPublished, PredictionLogged};
use tracing::{debug, info, warn};

use crate::metrics::MonitorMetrics;
use crate::monitor::{Holdout, JoinedActual, ModelMonitor, MonitorConfig};
use crate::state::{self, prefix};
use crate::{Error, Result};

/// How long after a production record a predictor may still serve the version before it
/// while it swaps (loading a model takes well under a second; a busy registry follower
/// a few). A prediction of that version served later means the swap failed.
pub const SWAP_GRACE_MS: i64 = 60_000;

/// The latest report of each model, shared with the HTTP API.
pub type LatestReports = Arc<RwLock<BTreeMap<String, DriftReport>>>;

/// Reads a version whole (with its reference profile) from the models topic, for one the
/// registry keeps thin ([`driftline_runtime::registry::read_whole`] in the service).
pub type ReadWhole = Arc<dyn Fn(&str, i64) -> Option<ModelPublished> + Send + Sync>;

/// Where the processor reads and writes.
#[derive(Debug, Clone)]
pub struct Topics {
    pub predictions: String,
    pub labelled: String,
    pub drift: String,
    pub retrain: String,
}

pub struct MonitorProcessor {
    pub codec: Codec,
    pub registry: SharedRegistry,
    pub config: MonitorConfig,
    pub topics: Topics,
    pub latest: LatestReports,
    pub metrics: MonitorMetrics,
    /// How long a prediction of a version the registry does not know yet waits for it.
    pub registry_wait: Duration,
    /// Stamps reports and retrain requests (ms); the service uses the wall clock.
    pub clock: fn() -> i64,
    /// Where a thin version's reference profile comes from; without it such a version
    /// counts as unknown.
    pub read_whole: Option<ReadWhole>,
    monitors: HashMap<String, ModelMonitor>,
}

/// Persists a joined prediction and actual (and drops the evicted pairs).
fn write_joined(txn: &mut Txn<'_>, model: &str, j: &JoinedActual) {
    txn.put(
        state::joined_key(model, j.seq),
        state::encode_joined(&j.joined),
    );
    j.evicted
        .clone()
        .for_each(|s| txn.delete(state::joined_key(model, s)));
}

fn state_err(e: impl std::fmt::Display) -> Rejection {
    Rejection {
        kind: "state",
        error: e.to_string(),
    }
}

impl MonitorProcessor {
    pub fn new(
        codec: Codec,
        registry: SharedRegistry,
        config: MonitorConfig,
        topics: Topics,
        latest: LatestReports,
        metrics: MonitorMetrics,
    ) -> Self {
        Self {
            codec,
            registry,
            config,
            topics,
            latest,
            metrics,
            registry_wait: Duration::from_secs(30),
            clock: now_ms,
            read_whole: None,
            monitors: HashMap::new(),
        }
    }

    /// Whether the registry knows `version` of `model`, waiting up to `registry_wait` for
    /// the follower to catch up with a version the predictor already serves.
    fn await_version(&self, model: &str, version: i64) -> bool {
        let deadline = Instant::now() + self.registry_wait;
        loop {
            let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
            if registry.version(model, version).is_some() {
                return true;
            }
            drop(registry);
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The registry's whole record of a version ([`Self::await_version`] first). A version
    /// the registry keeps thin is read whole from the models topic.
    fn published(&self, model: &str, version: i64) -> Option<ModelPublished> {
        if !self.await_version(model, version) {
            return None;
        }
        let (record, whole) = {
            let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
            let record = registry.version(model, version)?.clone();
            (record, registry.is_whole(model, version))
        };
        if whole {
            return Some(record);
        }
        info!(%model, version, "reading a thin version whole from the models topic");
        self.read_whole
            .as_ref()
            .and_then(|read| read(model, version))
    }

    /// Rebuilds every monitor from the store (call once the registry is loaded).
    pub fn restore(&mut self, store: &Store) -> Result<()> {
        self.monitors.clear();
        for (_, bytes) in store.scan_prefix(&prefix(b'm', None))? {
            let meta = state::decode_meta(&bytes)?;
            let published = self.published(&meta.model, meta.version).ok_or_else(|| {
                Error::State(format!(
                    "model {} version {} is not in the registry",
                    meta.model, meta.version
                ))
            })?;
            let events = store
                .scan_prefix(&prefix(b'w', Some(&meta.model)))?
                .iter()
                .map(|(_, v)| state::decode_event(v))
                .collect::<Result<Vec<_>>>()?;
            let joined = store
                .scan_prefix(&prefix(b'e', Some(&meta.model)))?
                .iter()
                .map(|(_, v)| state::decode_joined(v))
                .collect::<Result<Vec<_>>>()?;
            info!(model = %meta.model, version = meta.version, events = events.len(), labelled = joined.len(), "window restored");
            let monitor = ModelMonitor::restore(
                &meta,
                &published.reference_profile,
                Holdout::of(&published),
                self.config.clone(),
                events,
                joined,
            );
            if let Some(bytes) = store.get(&state::report_key(&meta.model))?
                && let Ok(report) = self.codec.decode::<DriftReport>(&bytes)
            {
                self.latest
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(meta.model.clone(), report);
            }
            self.monitors.insert(meta.model.clone(), monitor);
        }
        Ok(())
    }

    /// Whether `version` is the one serving `model` now, by the registry. A version newer
    /// than the window's that the registry does not know yet is waited for
    /// ([`Self::await_version`]: the predictor may have swapped it in before this
    /// registry follower read it); `None` when it never shows. One older than the
    /// window's that the registry does not know is a late message, not serving: a
    /// rollback re-publishes a version, so the registry knows it first.
    ///
    /// Serving means in effect at the prediction's `event_time`: with a swap lag the
    /// predictor answers requests before a version's `effective_from` with the one before
    /// it, and so does this, whatever this registry has read by now.
    ///
    /// A failed swap (production that the predictor could not load) leaves the version
    /// before it serving. A monitor that has a window keeps it, as its version's
    /// predictions go on; one without a window (a new monitor) takes an older version as
    /// serving when its prediction was served more than [`SWAP_GRACE_MS`] after the
    /// production record was published: in-flight predictions of the version replaced,
    /// and the history a new monitor reads, were served before that. A canary or shadow
    /// is never taken for it. `served_at` comes from the log, so a replay decides alike.
    fn serving(
        &self,
        model: &str,
        version: i64,
        current: Option<i64>,
        (served_at, event_time): (i64, i64),
    ) -> Option<bool> {
        let newer = current.is_none_or(|c| version > c);
        if newer && !self.await_version(model, version) {
            return None;
        }
        let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
        if registry.version(model, version).is_none() {
            return Some(false);
        }
        let history = registry.production_history(model, PRODUCTION_HISTORY);
        let Some(production) = answering(&history, |m| m.effective_from, event_time) else {
            return Some(false);
        };
        let candidate = |r: Option<&ModelPublished>| r.is_some_and(|r| r.version == version);
        Some(
            production.version == version
                || (current.is_none()
                    && version < production.version
                    && !candidate(registry.canary(model))
                    && !candidate(registry.shadow(model))
                    && served_at > production.published_at + SWAP_GRACE_MS),
        )
    }

    /// Makes sure `model` has a monitor for a prediction of `version`. Only the version
    /// serving now gets a window, with its own reference: a promotion brings the new
    /// version's, a rollback the restored older version's. A late prediction of a version
    /// no longer serving is ignored (false), so in-flight predictions of the version
    /// replaced cannot pull the window back to it.
    fn monitor_for(&mut self, p: &PredictionLogged, txn: &mut Txn<'_>) -> Result<bool, Rejection> {
        let (model, version) = (p.model.as_str(), p.model_version);
        let current = self.monitors.get(model).map(ModelMonitor::version);
        if current == Some(version) {
            return Ok(true);
        }
        let unknown = || {
            Rejection::validation(format!(
                "model {model:?} version {version} is not in the registry"
            ))
        };
        if !self
            .serving(model, version, current, (p.served_at, p.event_time))
            .ok_or_else(unknown)?
        {
            return Ok(false);
        }
        let published = self.published(model, version).ok_or_else(unknown)?;
        let mut monitor = ModelMonitor::new(
            model,
            version,
            &published.reference_profile,
            Holdout::of(&published),
            self.config.clone(),
        );
        if let Some(old) = self.monitors.remove(model) {
            info!(%model, from = old.version(), to = version, "the serving version changed: new window and reference");
            let (window, joined) = old.slots();
            window.for_each(|s| txn.delete(state::window_key(model, s)));
            joined.for_each(|s| txn.delete(state::joined_key(model, s)));
            monitor.continue_positions(&old);
        }
        self.monitors.insert(model.to_string(), monitor);
        Ok(true)
    }

    fn prediction(
        &mut self,
        record: &Record<'_>,
        txn: &mut Txn<'_>,
    ) -> Result<Vec<Output>, Rejection> {
        let p: PredictionLogged = self
            .codec
            .decode(record.payload.unwrap_or_default())
            .map_err(Rejection::decode)?;
        if !self.monitor_for(&p, txn)? {
            return Ok(Vec::new());
        }
        let Some(monitor) = self.monitors.get_mut(&p.model) else {
            return Err(state_err("monitor vanished"));
        };
        let model = p.model.clone();
        let event = monitor.event_of(&p);
        let obs = monitor.observe(&event);
        monitor.position(record.topic, record.partition, record.offset + 1);
        txn.put(
            state::window_key(&model, obs.seq),
            state::encode_event(&event),
        );
        obs.evicted
            .for_each(|s| txn.delete(state::window_key(&model, s)));
        let mut outputs = Vec::new();
        if monitor.due() {
            let started = Instant::now();
            let evaluation =
                monitor.evaluate((self.clock)(), Some((record.partition, record.offset)));
            self.metrics
                .evaluation_seconds
                .observe(started.elapsed().as_secs_f64());
            let report = &evaluation.report;
            self.metrics.record(report, evaluation.retrain.is_some());
            let encode = |e| Rejection {
                kind: "encode",
                error: format!("{e}"),
            };
            outputs.push(Output::event(&self.codec, &self.topics.drift, report).map_err(encode)?);
            if let Some(r) = &evaluation.retrain {
                info!(model = %r.model, retrain_id = %r.retrain_id, reason = %r.reason, "retrain requested");
                outputs.push(Output::event(&self.codec, &self.topics.retrain, r).map_err(encode)?);
            }
            txn.put(
                state::report_key(&model),
                self.codec.encode(report).map_err(state_err)?,
            );
            self.latest
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(model.clone(), evaluation.report);
        }
        let monitor = self
            .monitors
            .get(&model)
            .ok_or_else(|| state_err("monitor vanished"))?;
        txn.put(state::meta_key(&model), state::encode_meta(&monitor.meta()));
        Ok(outputs)
    }

    /// A prediction joined with its actual: scored into the performance window of the
    /// version that made it. A pair of a version not serving is counted and left out.
    fn labelled(
        &mut self,
        record: &Record<'_>,
        txn: &mut Txn<'_>,
    ) -> Result<Vec<Output>, Rejection> {
        let l: Labelled = self
            .codec
            .decode(record.payload.unwrap_or_default())
            .map_err(Rejection::decode)?;
        let model = l.prediction.model.clone();
        let current = self.monitor_for(&l.prediction, txn)?;
        let Some(monitor) = self.monitors.get_mut(&model) else {
            // No window yet, and this pair's version is not the one serving.
            self.metrics
                .labelled_other_version
                .with_label_values(&[&model])
                .inc();
            return Ok(Vec::new());
        };
        if current {
            match monitor.label(&l) {
                Some(j) => write_joined(txn, &model, &j),
                None => {
                    return Err(Rejection::validation(format!(
                        "the actual of {:?} does not fit its prediction (value {:?}, class {:?})",
                        l.actual.request_id, l.actual.value, l.actual.class
                    )));
                }
            }
        } else {
            debug!(%model, version = l.prediction.model_version, "labelled prediction of a version not serving");
            self.metrics
                .labelled_other_version
                .with_label_values(&[&model])
                .inc();
        }
        // Scored or not, read: a retrain request's rows include it.
        monitor.position(record.topic, record.partition, record.offset + 1);
        txn.put(state::meta_key(&model), state::encode_meta(&monitor.meta()));
        Ok(Vec::new())
    }
}

impl Processor for MonitorProcessor {
    fn reload(&mut self, store: &Store) -> std::result::Result<(), String> {
        self.restore(store).map_err(|e| e.to_string())
    }

    fn process(
        &mut self,
        record: &Record<'_>,
        txn: &mut Txn<'_>,
    ) -> Result<Vec<Output>, Rejection> {
        if record.topic == self.topics.predictions {
            self.prediction(record, txn)
        } else if record.topic == self.topics.labelled {
            self.labelled(record, txn)
        } else {
            warn!(
                topic = record.topic,
                "message from a topic the monitor does not read"
            );
            Ok(Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftline_runtime::registry::Registry;
    use driftline_schemas::events::ModelStatus;
    use driftline_tests::samples;

    fn processor() -> MonitorProcessor {
        let mut registry = Registry::default();
        registry.apply(samples::model());
        MonitorProcessor::new(
            Codec::single_object(),
            Arc::new(RwLock::new(registry)),
            MonitorConfig::default(),
            Topics {
                predictions: "p".into(),
                labelled: "l".into(),
                drift: "d".into(),
                retrain: "r".into(),
            },
            LatestReports::default(),
            MonitorMetrics::new(&prometheus::Registry::new()),
        )
    }

    fn record<'a>(topic: &'a str, payload: &'a [u8]) -> Record<'a> {
        Record {
            topic,
            partition: 0,
            offset: 0,
            key: None,
            payload: Some(payload),
            timestamp: None,
        }
    }

    fn labelled_bytes(version: i64, value: f64) -> Vec<u8> {
        let prediction = PredictionLogged {
            model_version: version,
            ..samples::prediction()
        };
        let actual = driftline_schemas::events::Actual {
            value: Some(value),
            ..samples::actual()
        };
        Codec::single_object()
            .encode(&Labelled {
                prediction,
                actual,
                prediction_read_at: Default::default(),
                actual_read_at: Default::default(),
            })
            .unwrap()
    }

    fn prediction_bytes(version: i64) -> Vec<u8> {
        Codec::single_object()
            .encode(&PredictionLogged {
                model_version: version,
                ..samples::prediction()
            })
            .unwrap()
    }

    #[test]
    fn a_window_restored_for_a_version_the_registry_keeps_thin_reads_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let mut txn = store.txn();
        processor()
            .process(&record("p", &prediction_bytes(4)), &mut txn)
            .unwrap();
        store.commit(txn, &BTreeMap::new()).unwrap();

        // While it was down, v5 became production and v4 was kept thin.
        let mut registry = Registry::keeping(1);
        registry.apply(samples::model());
        registry.apply(ModelPublished {
            version: 5,
            ..samples::model()
        });
        assert!(!registry.is_whole("flights", 4));
        let mut p = processor();
        p.registry = Arc::new(RwLock::new(registry));
        p.registry_wait = Duration::ZERO;
        let refused = p.restore(&store).unwrap_err();
        assert!(
            refused.to_string().contains("not in the registry"),
            "{refused}"
        );

        let reads = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = reads.clone();
        p.read_whole = Some(Arc::new(move |_: &str, version| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Some(ModelPublished {
                version,
                ..samples::model()
            })
        }));
        p.restore(&store).unwrap();
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(p.monitors["flights"].version(), 4);
    }

    #[test]
    fn a_new_monitor_follows_the_version_a_failed_swap_left_serving_but_not_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let v4 = samples::model();
        // v5 is production, but the predictor could not load it and serves v4 still.
        let promoted_at = v4.published_at + 1;
        let mut p = processor();
        p.registry.write().unwrap().apply(ModelPublished {
            version: 5,
            published_at: promoted_at,
            ..samples::model()
        });
        let window_of = |p: &mut MonitorProcessor, version: i64, served_at: i64| {
            let bytes = Codec::single_object()
                .encode(&PredictionLogged {
                    model_version: version,
                    served_at,
                    ..samples::prediction()
                })
                .unwrap();
            let mut txn = store.txn();
            p.process(&record("p", &bytes), &mut txn).unwrap();
            p.monitors.get("flights").map(ModelMonitor::version)
        };
        assert_eq!(window_of(&mut p, 4, promoted_at - 1), None, "history");
        assert_eq!(
            window_of(&mut p, 4, promoted_at + SWAP_GRACE_MS),
            None,
            "in flight during the swap"
        );
        assert_eq!(
            window_of(&mut p, 4, promoted_at + SWAP_GRACE_MS + 1),
            Some(4),
            "still served after the swap should have happened"
        );
        assert_eq!(
            window_of(&mut p, 4, promoted_at + 2 * SWAP_GRACE_MS),
            Some(4)
        );
        assert_eq!(
            window_of(&mut p, 5, promoted_at + 3 * SWAP_GRACE_MS),
            Some(5),
            "the swap succeeds at last"
        );
        assert_eq!(
            window_of(&mut p, 4, promoted_at + 3 * SWAP_GRACE_MS),
            Some(5),
            "a straggler of v4 does not pull the window back"
        );
    }

    #[test]
    fn a_canary_is_never_taken_for_a_version_left_serving() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let mut p = processor();
        let at = samples::model().published_at;
        p.registry.write().unwrap().apply(ModelPublished {
            version: 5,
            published_at: at + 1,
            ..samples::model()
        });
        p.registry.write().unwrap().apply(ModelPublished {
            version: 3,
            published_at: at + 2,
            status: ModelStatus::Canary,
            ..samples::model()
        });
        let bytes = Codec::single_object()
            .encode(&PredictionLogged {
                model_version: 3,
                served_at: at + 10 * SWAP_GRACE_MS,
                ..samples::prediction()
            })
            .unwrap();
        let mut txn = store.txn();
        p.process(&record("p", &bytes), &mut txn).unwrap();
        assert!(p.monitors.is_empty());
    }

    #[test]
    fn the_window_follows_the_serving_version_through_a_rollback_and_ignores_late_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let mut p = processor();
        let publish = |p: &MonitorProcessor, version: i64, published_at: i64| {
            p.registry.write().unwrap().apply(ModelPublished {
                version,
                published_at,
                ..samples::model()
            });
        };
        let serving = |p: &mut MonitorProcessor, version: i64| {
            let mut txn = store.txn();
            p.process(&record("p", &prediction_bytes(version)), &mut txn)
                .unwrap();
            p.monitors["flights"].version()
        };
        let at = samples::model().published_at;
        publish(&p, 5, at + 1);
        assert_eq!(serving(&mut p, 5), 5, "promoted");
        assert_eq!(serving(&mut p, 4), 5, "a late prediction of v4 is ignored");
        // Rolled back: v4 is published again as production, later than v5.
        publish(&p, 4, at + 2);
        assert_eq!(serving(&mut p, 4), 4, "the restored version is monitored");
        assert_eq!(serving(&mut p, 5), 4, "a late prediction of v5 is ignored");
    }

    #[test]
    fn with_a_swap_lag_the_window_follows_the_version_in_effect_at_each_predictions_event_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let mut p = processor();
        let (base, at) = (samples::model().version, samples::model().published_at);
        let t0 = samples::prediction().event_time;
        let serving = |p: &mut MonitorProcessor, version: i64, event_time: i64| {
            let bytes = Codec::single_object()
                .encode(&PredictionLogged {
                    model_version: version,
                    event_time,
                    ..samples::prediction()
                })
                .unwrap();
            let mut txn = store.txn();
            p.process(&record("p", &bytes), &mut txn).unwrap();
            p.monitors["flights"].version()
        };
        assert_eq!(serving(&mut p, base, t0), base);
        // Two versions read before any of their predictions: v+1 in effect from t0 + 100,
        // v+2 from t0 + 200 (a monitor behind the predictor reads both first).
        for (v, from) in [(base + 1, t0 + 100), (base + 2, t0 + 200)] {
            p.registry.write().unwrap().apply(ModelPublished {
                version: v,
                published_at: at + v,
                effective_from: Some(from),
                ..samples::model()
            });
        }
        assert_eq!(serving(&mut p, base, t0 + 50), base);
        assert_eq!(
            serving(&mut p, base + 1, t0 + 150),
            base + 1,
            "in effect at its event time, though v+2 is the newest production"
        );
        assert_eq!(serving(&mut p, base + 2, t0 + 250), base + 2);
    }

    #[test]
    fn a_labelled_prediction_is_scored_even_before_the_monitor_reads_the_prediction() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let slots =
            |kind: u8, model: &str| store.scan_prefix(&prefix(kind, Some(model))).unwrap().len();

        let mut p = processor();
        let mut txn = store.txn();
        let version = samples::model().version;
        p.process(&record("l", &labelled_bytes(version, 12.0)), &mut txn)
            .unwrap();
        store.commit(txn, &BTreeMap::new()).unwrap();
        assert_eq!(slots(b'e', "flights"), 1, "scored");
        assert_eq!(slots(b'w', "flights"), 0, "not a window event");

        // After a restart the pair is still there, and a pair of an older version is not
        // scored against this version's holdout.
        let mut p = processor();
        p.restore(&store).unwrap();
        let mut txn = store.txn();
        p.process(&record("l", &labelled_bytes(version - 1, 12.0)), &mut txn)
            .unwrap();
        store.commit(txn, &BTreeMap::new()).unwrap();
        assert_eq!(slots(b'e', "flights"), 1);
        assert_eq!(
            p.metrics
                .labelled_other_version
                .with_label_values(&["flights"])
                .get(),
            1
        );
    }

    #[test]
    fn a_monitor_on_empty_state_does_not_reuse_the_report_ids_of_the_one_before() {
        let codec = Codec::single_object();
        // Reports (by id) of a monitor on an empty store that reads `offsets`.
        let reports = |offsets: std::ops::Range<i64>| -> Vec<String> {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), false).unwrap();
            let mut p = processor();
            p.config.evaluate_every = 10;
            let mut ids = Vec::new();
            for offset in offsets {
                let bytes = codec
                    .encode(&PredictionLogged {
                        request_id: format!("r{offset}"),
                        model_version: samples::model().version,
                        ..samples::prediction()
                    })
                    .unwrap();
                let mut txn = store.txn();
                let out = p
                    .process(
                        &Record {
                            offset,
                            ..record("p", &bytes)
                        },
                        &mut txn,
                    )
                    .unwrap();
                store.commit(txn, &BTreeMap::new()).unwrap();
                for o in out.iter().filter(|o| o.topic == "d") {
                    ids.push(codec.decode::<DriftReport>(&o.payload).unwrap().report_id);
                }
            }
            ids
        };
        let first = reports(0..30);
        assert_eq!(first.len(), 3);
        assert_eq!(first[0], "flights-v4-10@0:9");
        // The same messages again (a crash before the commit): the same ids.
        assert_eq!(reports(0..30), first);
        // A new instance on an empty disk, reading on from where the first stopped: its
        // window count starts again at 0, its report ids do not.
        let second = reports(30..60);
        assert!(
            second.iter().all(|id| !first.contains(id)),
            "{first:?} vs {second:?}"
        );
    }
}
