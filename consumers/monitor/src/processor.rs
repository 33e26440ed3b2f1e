//! The Kafka path: predictions and actuals in (one consumer group, co-partitioned by
//! model), reports and retrain requests out, every state change staged in the runtime's
//! transaction so it commits with the offsets.
//!
//! Memory mirrors RocksDB: the monitors live in memory for speed, every change is also
//! written through the transaction, and [`MonitorProcessor::restore`] rebuilds the
//! monitors from the store on start, in exactly the state the last commit left.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use driftline_runtime::registry::SharedRegistry;
use driftline_runtime::{Output, Processor, Record, Rejection, Store, Txn, now_ms};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Actual, DriftReport, ModelPublished, PredictionLogged};
use tracing::{info, warn};

use crate::early::EarlyActuals;
use crate::metrics::MonitorMetrics;
use crate::monitor::{JoinedActual, ModelMonitor, MonitorConfig, Pending};
use crate::state::{self, prefix};
use crate::{Error, Result};

/// The latest report of each model, shared with the HTTP API.
pub type LatestReports = Arc<RwLock<BTreeMap<String, DriftReport>>>;

/// Where the processor reads and writes.
#[derive(Debug, Clone)]
pub struct Topics {
    pub predictions: String,
    pub actuals: String,
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
    monitors: HashMap<String, ModelMonitor>,
    early: EarlyActuals,
}

/// Persists a joined prediction and actual (and drops the pending slot and evicted pairs).
fn write_joined(txn: &mut Txn<'_>, model: &str, j: &JoinedActual) {
    txn.delete(state::pending_key(model, j.pending_removed));
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
        let config_max_pending = config.max_pending;
        Self {
            codec,
            registry,
            config,
            topics,
            latest,
            metrics,
            registry_wait: Duration::from_secs(30),
            clock: now_ms,
            monitors: HashMap::new(),
            early: EarlyActuals::new(config_max_pending),
        }
    }

    /// The registry's record of a version, waiting a while for the registry follower to
    /// catch up with a version the predictor already serves.
    fn published(&self, model: &str, version: i64) -> Option<ModelPublished> {
        let deadline = Instant::now() + self.registry_wait;
        loop {
            if let Some(p) = self
                .registry
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .version(model, version)
            {
                return Some(p.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Rebuilds every monitor from the store (call once the registry is loaded).
    pub fn restore(&mut self, store: &Store) -> Result<()> {
        let early = store
            .scan_prefix(&prefix(b'a', Some("")))?
            .iter()
            .map(|(k, v)| {
                let actual = self
                    .codec
                    .decode::<Actual>(v)
                    .map_err(|e| Error::State(format!("early actual: {e}")))?;
                Ok((state::seq_of(k).unwrap_or_default(), actual))
            })
            .collect::<Result<Vec<_>>>()?;
        self.early = EarlyActuals::restore(self.config.max_pending, early);
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
            let pending = store
                .scan_prefix(&prefix(b'p', Some(&meta.model)))?
                .iter()
                .map(|(k, v)| {
                    Ok((
                        state::seq_of(k).unwrap_or_default(),
                        state::decode_pending(v)?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let joined = store
                .scan_prefix(&prefix(b'e', Some(&meta.model)))?
                .iter()
                .map(|(_, v)| state::decode_joined(v))
                .collect::<Result<Vec<_>>>()?;
            info!(model = %meta.model, version = meta.version, events = events.len(), pending = pending.len(), "window restored");
            let monitor = ModelMonitor::restore(
                &meta,
                &published.reference_profile,
                published.metrics.clone(),
                self.config.clone(),
                events,
                pending,
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

    /// Makes sure `model` has a monitor for a prediction of `version`: a new window when
    /// the version is newer than the window's (the new model brings the new reference);
    /// false for a late prediction of an older version, which is ignored.
    fn monitor_for(
        &mut self,
        model: &str,
        version: i64,
        txn: &mut Txn<'_>,
    ) -> Result<bool, Rejection> {
        let current = self.monitors.get(model).map(ModelMonitor::version);
        match current {
            Some(v) if v == version => {}
            Some(v) if v > version => return Ok(false),
            _ => {
                let published = self.published(model, version).ok_or_else(|| {
                    Rejection::validation(format!(
                        "model {model:?} version {version} is not in the registry"
                    ))
                })?;
                if let Some(old) = self.monitors.remove(model) {
                    info!(%model, from = old.version(), to = version, "new model version: new window and reference");
                    let (window, joined, pending) = old.slots();
                    window.for_each(|s| txn.delete(state::window_key(model, s)));
                    joined.for_each(|s| txn.delete(state::joined_key(model, s)));
                    pending
                        .into_iter()
                        .for_each(|s| txn.delete(state::pending_key(model, s)));
                }
                let monitor = ModelMonitor::new(
                    model,
                    version,
                    &published.reference_profile,
                    published.metrics.clone(),
                    self.config.clone(),
                );
                self.monitors.insert(model.to_string(), monitor);
            }
        }
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
        if !self.monitor_for(&p.model, p.model_version, txn)? {
            return Ok(Vec::new());
        }
        let Some(monitor) = self.monitors.get_mut(&p.model) else {
            return Err(state_err("monitor vanished"));
        };
        let model = p.model.clone();
        let event = monitor.event_of(&p);
        let pending_id = p.request_id.clone();
        let pending = Pending {
            request_id: p.request_id,
            value: p.prediction.value,
            class: p.prediction.class,
            probabilities: p.prediction.probabilities,
        };
        let encoded = state::encode_pending(&pending);
        let obs = monitor.observe(&event, Some(pending));
        monitor.position(record.topic, record.partition, record.offset + 1);
        txn.put(
            state::window_key(&model, obs.seq),
            state::encode_event(&event),
        );
        obs.evicted
            .for_each(|s| txn.delete(state::window_key(&model, s)));
        if let Some(s) = obs.pending {
            txn.put(state::pending_key(&model, s), encoded);
        }
        obs.pending_evicted
            .into_iter()
            .for_each(|s| txn.delete(state::pending_key(&model, s)));
        if let Some((slot, actual)) = self.early.take(&model, &pending_id) {
            txn.delete(state::early_key(slot));
            match monitor.join(&actual) {
                Some(j) => write_joined(txn, &model, &j),
                None => self
                    .metrics
                    .unmatched_actuals
                    .with_label_values(&[&model])
                    .inc(),
            }
        }
        let mut outputs = Vec::new();
        if monitor.due() {
            let started = Instant::now();
            let evaluation = monitor.evaluate((self.clock)());
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

    fn actual(&mut self, record: &Record<'_>, txn: &mut Txn<'_>) -> Result<Vec<Output>, Rejection> {
        let a: Actual = self
            .codec
            .decode(record.payload.unwrap_or_default())
            .map_err(Rejection::decode)?;
        let joined = self.monitors.get_mut(&a.model).and_then(|m| m.join(&a));
        match joined {
            Some(j) => write_joined(txn, &a.model, &j),
            None => {
                // Its prediction may not have been read yet (or was already joined, or
                // is of an older version): hold it until the prediction comes.
                let bytes = self.codec.encode(&a).map_err(state_err)?;
                let held = self.early.hold(a.clone());
                txn.put(state::early_key(held.slot), bytes);
                for slot in held.dropped {
                    txn.delete(state::early_key(slot));
                    self.metrics
                        .unmatched_actuals
                        .with_label_values(&[&a.model])
                        .inc();
                }
            }
        }
        let Some(monitor) = self.monitors.get_mut(&a.model) else {
            return Ok(Vec::new());
        };
        monitor.position(record.topic, record.partition, record.offset + 1);
        txn.put(
            state::meta_key(&a.model),
            state::encode_meta(&monitor.meta()),
        );
        Ok(Vec::new())
    }
}

impl Processor for MonitorProcessor {
    fn process(
        &mut self,
        record: &Record<'_>,
        txn: &mut Txn<'_>,
    ) -> Result<Vec<Output>, Rejection> {
        if record.topic == self.topics.predictions {
            self.prediction(record, txn)
        } else if record.topic == self.topics.actuals {
            self.actual(record, txn)
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
                actuals: "a".into(),
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

    #[test]
    fn an_actual_read_before_its_prediction_joins_it_even_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let codec = Codec::single_object();
        let actual = codec.encode(&samples::actual()).unwrap();
        let prediction = codec
            .encode(&PredictionLogged {
                model_version: samples::model().version,
                ..samples::prediction()
            })
            .unwrap();
        let slots =
            |kind: u8, model: &str| store.scan_prefix(&prefix(kind, Some(model))).unwrap().len();

        let mut p = processor();
        let mut txn = store.txn();
        p.process(&record("a", &actual), &mut txn).unwrap();
        store.commit(txn, &BTreeMap::new()).unwrap();
        assert_eq!(slots(b'a', ""), 1, "the actual waits");

        // A restart between the two.
        let mut p = processor();
        p.restore(&store).unwrap();
        let mut txn = store.txn();
        p.process(&record("p", &prediction), &mut txn).unwrap();
        store.commit(txn, &BTreeMap::new()).unwrap();
        assert_eq!(slots(b'a', ""), 0, "no longer waiting");
        assert_eq!(slots(b'e', "flights"), 1, "joined");
        assert_eq!(
            slots(b'p', "flights"),
            0,
            "the prediction is not left pending"
        );
    }
}
