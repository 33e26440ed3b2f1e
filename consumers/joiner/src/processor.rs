//! The Kafka path: predictions and actuals in, [`Labelled`] rows out, every change of the
//! join staged in the runtime's transaction so it commits with the offsets that caused it.
//!
//! State keys (in the runtime's state column family):
//!
//! | key | value |
//! | --- | --- |
//! | `w` `p`/`a` `<model>\0<request id>` | a waiting half: partition (4 bytes) and offset (8) in its topic, the event as read |
//! | `c<model>` | the model's clocks (JSON) |
//! | `j<model>\0<request id>` | a remembered joined id: its sequence number (8 bytes) |
//!
//! Memory mirrors the store: [`JoinProcessor::restore`] rebuilds the [`Join`] from it in
//! exactly the state the last commit left, so a crash between the two halves of a request
//! loses neither.

use driftline_runtime::{Output, Processor, Record, Rejection, Store, Txn};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Actual, Labelled, PredictionLogged, SourcePosition};
use tracing::{debug, warn};

use crate::join::{Clocks, Half, Input, Join, Key, Limits, Step};
use crate::metrics::JoinerMetrics;
use crate::{Error, Result};

/// Where the processor reads and writes.
#[derive(Debug, Clone)]
pub struct Topics {
    pub predictions: String,
    pub actuals: String,
    pub labelled: String,
}

pub struct JoinProcessor {
    codec: Codec,
    topics: Topics,
    metrics: JoinerMetrics,
    join: Join,
}

fn half_byte(half: Half) -> u8 {
    match half {
        Half::Prediction => b'p',
        Half::Actual => b'a',
    }
}

fn keyed(kind: &[u8], model: &str, request_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(kind.len() + model.len() + 1 + request_id.len());
    k.extend_from_slice(kind);
    k.extend_from_slice(model.as_bytes());
    k.push(0);
    k.extend_from_slice(request_id.as_bytes());
    k
}

fn waiting_key(half: Half, (model, id): &Key) -> Vec<u8> {
    keyed(&[b'w', half_byte(half)], model, id)
}

fn joined_key((model, id): &Key) -> Vec<u8> {
    keyed(b"j", model, id)
}

fn clock_key(model: &str) -> Vec<u8> {
    let mut k = vec![b'c'];
    k.extend_from_slice(model.as_bytes());
    k
}

/// The part of a key after its kind, split at the first NUL: (model, request id).
fn key_of(rest: &[u8]) -> Option<Key> {
    let at = rest.iter().position(|b| *b == 0)?;
    Some((
        String::from_utf8(rest[..at].to_vec()).ok()?,
        String::from_utf8(rest[at + 1..].to_vec()).ok()?,
    ))
}

impl JoinProcessor {
    pub fn new(codec: Codec, topics: Topics, limits: Limits, metrics: JoinerMetrics) -> Self {
        Self {
            codec,
            topics,
            metrics,
            join: Join::new(limits),
        }
    }

    /// Rebuilds the join from the store.
    pub fn restore(&mut self, store: &Store) -> Result<()> {
        let state = |what: &str, e: &dyn std::fmt::Display| Error::State(format!("{what}: {e}"));
        let mut waiting = Vec::new();
        for (key, value) in store.scan_prefix(b"w")? {
            if value.len() < 12 {
                return Err(Error::State(format!("waiting half {key:?} is too short")));
            }
            let at = |topic: &str| SourcePosition {
                topic: topic.to_string(),
                partition: i32::from_be_bytes(value[..4].try_into().expect("4 bytes")),
                offset: i64::from_be_bytes(value[4..12].try_into().expect("8 bytes")),
            };
            let body = &value[12..];
            let input = match key.get(1) {
                Some(b'p') => Input::Prediction(
                    self.codec
                        .decode::<PredictionLogged>(body)
                        .map_err(|e| state("waiting prediction", &e))?,
                    at(&self.topics.predictions),
                ),
                Some(b'a') => Input::Actual(
                    self.codec
                        .decode::<Actual>(body)
                        .map_err(|e| state("waiting actual", &e))?,
                    at(&self.topics.actuals),
                ),
                _ => return Err(Error::State(format!("unknown waiting key {key:?}"))),
            };
            waiting.push(input);
        }
        let mut clocks = Vec::new();
        for (key, value) in store.scan_prefix(b"c")? {
            let model = String::from_utf8(key[1..].to_vec()).map_err(|e| state("clock key", &e))?;
            let c: Clocks = serde_json::from_slice(&value).map_err(|e| state("clocks", &e))?;
            clocks.push((model, c));
        }
        let mut joined = Vec::new();
        for (key, value) in store.scan_prefix(b"j")? {
            let k = key_of(&key[1..]).ok_or_else(|| Error::State(format!("joined key {key:?}")))?;
            let seq: [u8; 8] = value
                .as_slice()
                .try_into()
                .map_err(|_| Error::State(format!("joined seq of {k:?}")))?;
            joined.push((u64::from_be_bytes(seq), k));
        }
        self.join = Join::restore(self.join.limits(), waiting, clocks, joined);
        self.set_waiting();
        Ok(())
    }

    fn set_waiting(&self) {
        for (half, n) in [Half::Prediction, Half::Actual]
            .into_iter()
            .zip(self.join.waiting())
        {
            self.metrics
                .waiting
                .with_label_values(&[half.name()])
                .set(n as i64);
        }
    }

    fn input(&self, record: &Record<'_>) -> Result<Input, Rejection> {
        let payload = record.payload.unwrap_or_default();
        let at = SourcePosition {
            topic: record.topic.to_string(),
            partition: record.partition,
            offset: record.offset,
        };
        if record.topic == self.topics.predictions {
            let p: PredictionLogged = self.codec.decode(payload).map_err(Rejection::decode)?;
            Ok(Input::Prediction(p, at))
        } else {
            let a: Actual = self.codec.decode(payload).map_err(Rejection::decode)?;
            if a.class.is_none() && !a.value.is_some_and(f64::is_finite) {
                return Err(Rejection::validation(format!(
                    "actual for {} (model {}) has neither a class nor a finite value",
                    a.request_id, a.model
                )));
            }
            Ok(Input::Actual(a, at))
        }
    }

    /// Stages what `step` changed; `input` is the half that made it.
    fn persist(&self, txn: &mut Txn<'_>, input: &Input, step: &Step) -> Result<(), Rejection> {
        for (half, key, why) in &step.removed {
            txn.delete(waiting_key(*half, key));
            if let Some(why) = why {
                self.metrics
                    .evicted
                    .with_label_values(&[half.name(), why.name()])
                    .inc();
            }
        }
        let key: Key = (input.model().to_string(), input.request_id().to_string());
        if step.waits {
            let (at, body) = match input {
                Input::Prediction(p, at) => (at, self.codec.encode(p)),
                Input::Actual(a, at) => (at, self.codec.encode(a)),
            };
            let body = body.map_err(|e| Rejection {
                kind: "encode",
                error: e.to_string(),
            })?;
            let mut value = Vec::with_capacity(12 + body.len());
            value.extend_from_slice(&at.partition.to_be_bytes());
            value.extend_from_slice(&at.offset.to_be_bytes());
            value.extend_from_slice(&body);
            txn.put(waiting_key(input.half(), &key), value);
        }
        if step.joined.is_some()
            && let Some(seq) = self.join.joined_seq(&key)
        {
            txn.put(joined_key(&key), seq.to_be_bytes().to_vec());
        }
        for old in &step.forgotten {
            txn.delete(joined_key(old));
        }
        self.metrics.forgotten.inc_by(step.forgotten.len() as u64);
        if let Some((model, clocks)) = &step.clock {
            txn.put(
                clock_key(model),
                serde_json::to_vec(clocks).unwrap_or_default(),
            );
        }
        Ok(())
    }
}

impl Processor for JoinProcessor {
    fn reload(&mut self, store: &Store) -> std::result::Result<(), String> {
        self.restore(store).map_err(|e| e.to_string())
    }

    fn process(
        &mut self,
        record: &Record<'_>,
        txn: &mut Txn<'_>,
    ) -> Result<Vec<Output>, Rejection> {
        if record.topic != self.topics.predictions && record.topic != self.topics.actuals {
            warn!(
                topic = record.topic,
                "message from a topic the joiner does not read"
            );
            return Ok(Vec::new());
        }
        let input = self.input(record)?;
        let half = input.half();
        let step = self.join.add(input.clone());
        self.persist(txn, &input, &step)?;
        self.set_waiting();
        if step.duplicate {
            debug!(
                half = half.name(),
                request_id = input.request_id(),
                "already joined"
            );
            self.metrics
                .duplicates
                .with_label_values(&[half.name()])
                .inc();
        }
        let Some(row) = step.joined else {
            return Ok(Vec::new());
        };
        self.metrics.joined.inc();
        let output =
            Output::event::<Labelled>(&self.codec, &self.topics.labelled, &row).map_err(|e| {
                Rejection {
                    kind: "encode",
                    error: e.to_string(),
                }
            })?;
        Ok(vec![output])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use driftline_tests::samples;

    fn processor(limits: Limits) -> JoinProcessor {
        JoinProcessor::new(
            Codec::single_object(),
            Topics {
                predictions: "p".into(),
                actuals: "a".into(),
                labelled: "l".into(),
            },
            limits,
            JoinerMetrics::new(&prometheus::Registry::new()),
        )
    }

    fn record<'a>(topic: &'a str, offset: i64, payload: &'a [u8]) -> Record<'a> {
        Record {
            topic,
            partition: 2,
            offset,
            key: None,
            payload: Some(payload),
            timestamp: None,
        }
    }

    fn step(p: &mut JoinProcessor, store: &Store, r: Record<'_>) -> Result<Vec<Output>, Rejection> {
        let mut txn = store.txn();
        let out = p.process(&r, &mut txn)?;
        store.commit(txn, &BTreeMap::new()).unwrap();
        Ok(out)
    }

    #[test]
    fn halves_joined_across_restarts_make_one_row_with_both_positions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let codec = Codec::single_object();
        let (prediction, actual) = (samples::prediction(), samples::actual());
        let (pb, ab) = (
            codec.encode(&prediction).unwrap(),
            codec.encode(&actual).unwrap(),
        );

        let mut p = processor(Limits::default());
        assert!(
            step(&mut p, &store, record("a", 7, &ab))
                .unwrap()
                .is_empty()
        );

        // A restart between the two halves: the actual is still waiting.
        let mut p = processor(Limits::default());
        p.restore(&store).unwrap();
        let out = step(&mut p, &store, record("p", 3, &pb)).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, "l");
        let row: Labelled = codec.decode(&out[0].payload).unwrap();
        assert_eq!(row.prediction, prediction);
        assert_eq!(row.actual, actual);
        assert_eq!(
            row.prediction_read_at,
            SourcePosition {
                topic: "p".into(),
                partition: 2,
                offset: 3
            }
        );
        assert_eq!(
            row.actual_read_at,
            SourcePosition {
                topic: "a".into(),
                partition: 2,
                offset: 7
            }
        );
        assert!(store.scan_prefix(b"w").unwrap().is_empty(), "nothing waits");

        // Another restart: the joined id is remembered, a re-sent actual adds nothing.
        let mut p = processor(Limits::default());
        p.restore(&store).unwrap();
        assert!(
            step(&mut p, &store, record("a", 8, &ab))
                .unwrap()
                .is_empty()
        );
        assert!(store.scan_prefix(b"w").unwrap().is_empty());
    }

    #[test]
    fn an_actual_without_a_value_or_class_is_rejected_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let bad = Codec::single_object()
            .encode(&Actual {
                value: Some(f64::NAN),
                class: None,
                ..samples::actual()
            })
            .unwrap();
        let err = step(
            &mut processor(Limits::default()),
            &store,
            record("a", 0, &bad),
        )
        .unwrap_err();
        assert_eq!(err.kind, "validation");
        assert!(
            err.error.contains("neither a class nor a finite value"),
            "{}",
            err.error
        );
    }

    #[test]
    fn evicted_halves_leave_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let codec = Codec::single_object();
        let mut p = processor(Limits {
            max_wait_ms: 1_000,
            max_waiting: 100,
        });
        let old = PredictionLogged {
            request_id: "old".into(),
            event_time: 0,
            ..samples::prediction()
        };
        step(&mut p, &store, record("p", 0, &codec.encode(&old).unwrap())).unwrap();
        assert_eq!(store.scan_prefix(b"w").unwrap().len(), 1);
        let later = Actual {
            request_id: "other".into(),
            event_time: 5_000,
            ..samples::actual()
        };
        step(
            &mut p,
            &store,
            record("a", 1, &codec.encode(&later).unwrap()),
        )
        .unwrap();
        let waiting = store.scan_prefix(b"w").unwrap();
        assert_eq!(waiting.len(), 1, "only the new actual waits");
        assert_eq!(waiting[0].0[1], b'a');
    }
}
