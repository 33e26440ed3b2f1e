//! The labelled-row store: predictions joined with their actuals, per model, time-ordered.
//!
//! Keys (in the runtime's `state` column family, so every change commits with the
//! offsets that caused it):
//!
//! | key | value |
//! | --- | --- |
//! | `row/<model>\0<event time, 8 bytes order-preserving><request id>` | a joined row |
//! | `pred/<model>\0<request id>` | a prediction still waiting for its actual |
//! | `act/<model>\0<request id>` | an actual that arrived before its prediction |
//! | `job/<model>\0<trigger>` | a pending training job ([`Job`]) |
//! | `done/<model>\0<trigger>` | a trigger that was coalesced into another job |
//! | `sched/<model>` | the optional schedule's counters |
//!
//! Row keys sort by event time, so a training window is one prefix scan and eviction of
//! the oldest rows is a walk from the front of an in-memory index of the keys.
//!
//! A half that waits too long for its other half (a prediction whose actual never comes)
//! is evicted once the other topic has moved past it, in event time, by a bound
//! ([`Unjoined`]), so the waiting keys do not grow without limit while ground truth flows.
//!
//! Each half remembers the partition and offset it was read from, so a training set can
//! say which messages it reflects ([`end_offsets`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use driftline_model::{LabelledRow, Target};
use driftline_runtime::{Store, Txn};
use driftline_schemas::events::{FeatureValue, Features};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub fn row_prefix(model: &str) -> Vec<u8> {
    prefixed("row/", model)
}

pub fn job_prefix_all() -> &'static [u8] {
    b"job/"
}

fn prefixed(kind: &str, model: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(kind.len() + model.len() + 1);
    k.extend_from_slice(kind.as_bytes());
    k.extend_from_slice(model.as_bytes());
    k.push(0);
    k
}

/// `row/<model>\0<time><request id>`; the time's sign bit is flipped so byte order is
/// numeric order for negative times too.
pub fn row_key(model: &str, event_time: i64, request_id: &str) -> Vec<u8> {
    let mut k = row_prefix(model);
    k.extend_from_slice(&((event_time as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(request_id.as_bytes());
    k
}

pub fn pred_key(model: &str, request_id: &str) -> Vec<u8> {
    let mut k = prefixed("pred/", model);
    k.extend_from_slice(request_id.as_bytes());
    k
}

pub fn act_key(model: &str, request_id: &str) -> Vec<u8> {
    let mut k = prefixed("act/", model);
    k.extend_from_slice(request_id.as_bytes());
    k
}

pub fn job_key(model: &str, trigger: &str) -> Vec<u8> {
    let mut k = prefixed("job/", model);
    k.extend_from_slice(trigger.as_bytes());
    k
}

pub fn done_key(model: &str, trigger: &str) -> Vec<u8> {
    let mut k = prefixed("done/", model);
    k.extend_from_slice(trigger.as_bytes());
    k
}

pub fn sched_key(model: &str) -> Vec<u8> {
    prefixed("sched/", model)
}

/// A feature value as stored (JSON: a number, a string or null).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Cell {
    Number(f64),
    Category(String),
}

fn cells(features: &Features) -> BTreeMap<String, Option<Cell>> {
    features
        .iter()
        .map(|(k, v)| {
            let cell = match v {
                FeatureValue::Missing => None,
                FeatureValue::Number(x) if x.is_finite() => Some(Cell::Number(*x)),
                FeatureValue::Number(_) => None,
                FeatureValue::Category(c) => Some(Cell::Category(c.clone())),
            };
            (k.clone(), cell)
        })
        .collect()
}

fn features(cells: BTreeMap<String, Option<Cell>>) -> Features {
    cells
        .into_iter()
        .map(|(k, c)| {
            let v = match c {
                None => FeatureValue::Missing,
                Some(Cell::Number(x)) => FeatureValue::Number(x),
                Some(Cell::Category(c)) => FeatureValue::Category(c),
            };
            (k, v)
        })
        .collect()
}

/// Where a message was read: a partition of the topic its half comes from (predictions
/// or actuals) and its offset there. Short names: one is stored with every half.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    #[serde(rename = "n")]
    pub partition: i32,
    #[serde(rename = "o")]
    pub offset: i64,
}

/// The prediction half of a row.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingPrediction {
    t: i64,
    f: BTreeMap<String, Option<Cell>>,
    /// Absent in halves stored before positions were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<Position>,
}

/// The ground-truth half of a row.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingActual {
    t: i64,
    #[serde(default)]
    y: Option<f64>,
    #[serde(default)]
    c: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<Position>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredRow {
    t: i64,
    f: BTreeMap<String, Option<Cell>>,
    #[serde(default)]
    y: Option<f64>,
    #[serde(default)]
    c: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<Position>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<Position>,
}

/// A stored row with where its two halves were read.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcedRow {
    pub row: LabelledRow,
    pub prediction: Option<Position>,
    pub actual: Option<Position>,
}

/// Per source partition, the offset after the newest message behind any of `rows`
/// (`"topic/partition"` -> next offset, as drift report windows name offsets). Every row
/// of the set was built from messages below these offsets.
pub fn end_offsets(
    rows: &[SourcedRow],
    predictions_topic: &str,
    actuals_topic: &str,
) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for r in rows {
        for (topic, at) in [(predictions_topic, r.prediction), (actuals_topic, r.actual)] {
            if let Some(at) = at {
                let next = out.entry(format!("{topic}/{}", at.partition)).or_insert(0);
                *next = (*next).max(at.offset + 1);
            }
        }
    }
    out
}

pub fn encode_row(row: &LabelledRow) -> Vec<u8> {
    let (y, c) = match &row.target {
        Target::Value(x) => (Some(*x), None),
        Target::Class(c) => (None, Some(c.clone())),
    };
    let stored = StoredRow {
        t: row.event_time,
        f: cells(&row.features),
        y,
        c,
        p: None,
        a: None,
    };
    serde_json::to_vec(&stored).unwrap_or_default()
}

pub fn decode_row(bytes: &[u8]) -> Result<SourcedRow> {
    let s: StoredRow =
        serde_json::from_slice(bytes).map_err(|e| Error::State(format!("labelled row: {e}")))?;
    let target = match (s.y, s.c) {
        (_, Some(c)) => Target::Class(c),
        (Some(y), None) => Target::Value(y),
        (None, None) => Target::Value(f64::NAN),
    };
    Ok(SourcedRow {
        row: LabelledRow {
            event_time: s.t,
            features: features(s.f),
            target,
        },
        prediction: s.p,
        actual: s.a,
    })
}

/// A training job waiting in the store. One per trigger; several for one model are
/// coalesced into one run (the newest request wins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub model: String,
    /// `bootstrap`, `drift:<report id>`, `performance:<report id>`, `schedule:<n>`,
    /// `manual:<retrain id>` (see [`crate::processor::trigger_of`]): stored in
    /// `ModelPublished.trigger`, which makes publishing idempotent.
    pub trigger: String,
    /// Event-time bounds of the rows to train on (inclusive); `i64::MIN..=i64::MAX` = all.
    pub window_start: i64,
    pub window_end: i64,
    pub requested_at: i64,
    pub reason: String,
}

impl Job {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::State(format!("job: {e}")))
    }
}

/// Where a row came from: the join outcome, for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// Both halves present: a labelled row was added.
    Row,
    /// Waiting for the other half.
    Pending,
    /// This request's row is already stored (a re-delivered message).
    Duplicate,
}

/// How many halves an [`RowIndex::expire`] call evicted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evicted {
    pub predictions: u64,
    pub actuals: u64,
}

/// One side of the join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Prediction,
    Actual,
}

impl Half {
    fn index(self) -> usize {
        match self {
            Half::Prediction => 0,
            Half::Actual => 1,
        }
    }

    fn other(self) -> Half {
        match self {
            Half::Prediction => Half::Actual,
            Half::Actual => Half::Prediction,
        }
    }
}

/// The halves waiting for their other half, by event time, so the ones too old to join
/// are found without a scan. Pure bookkeeping: the caller deletes the keys it is given.
///
/// A half is given up on once the *other* topic has moved past it, in event time, by
/// more than the bound: a prediction when the actuals seen for its model are that much
/// newer (the ground truth has moved on without it), an actual when the predictions are.
/// Event time, not the wall clock, so a replay of last year ages on its own clock and a
/// stopped stream evicts nothing; the other topic's clock, not the newest event of either,
/// so a trainer catching up on a backlog, which may read the predictions far ahead of
/// the actuals, does not evict predictions whose actuals it has not read yet. The caller
/// decides which events move a clock (see [`crate::processor`]: HTTP predictions,
/// stamped with the wall clock, do not).
#[derive(Debug, Default)]
pub struct Unjoined {
    max_age_ms: i64,
    models: HashMap<String, Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    /// The newest event time seen, per half.
    newest: [Option<i64>; 2],
    /// Waiting keys by event time, per half.
    by_time: [BTreeSet<(i64, Vec<u8>)>; 2],
    times: HashMap<Vec<u8>, i64>,
}

impl Unjoined {
    pub fn new(max_age_ms: i64) -> Self {
        Self {
            max_age_ms: max_age_ms.max(0),
            models: HashMap::new(),
        }
    }

    /// A half starts waiting (or waits again, re-delivered, with its latest time).
    pub fn insert(&mut self, model: &str, half: Half, key: Vec<u8>, event_time: i64) {
        let w = self.models.entry(model.to_string()).or_default();
        let set = &mut w.by_time[half.index()];
        if let Some(old) = w.times.insert(key.clone(), event_time) {
            set.remove(&(old, key.clone()));
        }
        set.insert((event_time, key));
    }

    /// A half found its other half.
    pub fn remove(&mut self, model: &str, half: Half, key: &[u8]) {
        if let Some(w) = self.models.get_mut(model)
            && let Some(t) = w.times.remove(key)
        {
            w.by_time[half.index()].remove(&(t, key.to_vec()));
        }
    }

    pub fn waiting(&self, model: &str) -> usize {
        self.models.get(model).map_or(0, |w| w.times.len())
    }

    /// Notes an event of `seen`'s half at `event_time` and returns the keys of the other
    /// half's waiting entries now older than that half's newest time by more than the
    /// bound, forgetting them.
    pub fn expire(&mut self, model: &str, seen: Half, event_time: i64) -> Vec<Vec<u8>> {
        let w = self.models.entry(model.to_string()).or_default();
        let clock = &mut w.newest[seen.index()];
        let newest = *clock.insert(clock.map_or(event_time, |n| n.max(event_time)));
        let cutoff = newest.saturating_sub(self.max_age_ms);
        let waiting = &mut w.by_time[seen.other().index()];
        // Strictly older than the cutoff: everything before (cutoff, empty key).
        let keep = waiting.split_off(&(cutoff, Vec::new()));
        let old = std::mem::replace(waiting, keep);
        old.into_iter()
            .map(|(_, key)| {
                w.times.remove(&key);
                key
            })
            .collect()
    }
}

/// What the store keeps per model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Labelled rows kept per model (the oldest are evicted).
    pub max_rows: usize,
    /// How far (event time, ms) behind the other topic's newest event a half may wait for
    /// its other half.
    pub max_unjoined_age_ms: i64,
}

/// The in-memory index of row keys and waiting halves per model, loaded once from the
/// store and kept in step by the processor (it is the only writer of both), so eviction
/// needs no scan.
#[derive(Debug, Default)]
pub struct RowIndex {
    keys: HashMap<String, BTreeSet<Vec<u8>>>,
    unjoined: Unjoined,
    max_rows: usize,
}

impl RowIndex {
    pub fn load(
        store: &Store,
        models: impl IntoIterator<Item = String>,
        limits: Limits,
    ) -> Result<Self> {
        let mut keys = HashMap::new();
        let mut unjoined = Unjoined::new(limits.max_unjoined_age_ms);
        for model in models {
            let set: BTreeSet<Vec<u8>> = store
                .scan_prefix(&row_prefix(&model))?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            // The clocks are not restored: stored times include HTTP predictions' serve
            // times, which must not move them. The next events set them again.
            for (key, value) in store.scan_prefix(&prefixed("pred/", &model))? {
                let p: PendingPrediction = serde_json::from_slice(&value)
                    .map_err(|e| Error::State(format!("pending prediction: {e}")))?;
                unjoined.insert(&model, Half::Prediction, key, p.t);
            }
            for (key, value) in store.scan_prefix(&prefixed("act/", &model))? {
                let a: PendingActual = serde_json::from_slice(&value)
                    .map_err(|e| Error::State(format!("pending actual: {e}")))?;
                unjoined.insert(&model, Half::Actual, key, a.t);
            }
            keys.insert(model, set);
        }
        Ok(Self {
            keys,
            unjoined,
            max_rows: limits.max_rows.max(1),
        })
    }

    /// Halves of `model` waiting for their other half.
    pub fn unjoined(&self, model: &str) -> usize {
        self.unjoined.waiting(model)
    }

    /// Notes a `seen` half of `model` at `event_time` and deletes (in the same
    /// transaction) the other half's entries that have waited longer than the bound.
    pub fn expire(
        &mut self,
        txn: &mut Txn<'_>,
        model: &str,
        seen: Half,
        event_time: i64,
    ) -> Evicted {
        let keys = self.unjoined.expire(model, seen, event_time);
        let n = keys.len() as u64;
        for key in keys {
            txn.delete(key);
        }
        match seen {
            Half::Actual => Evicted {
                predictions: n,
                actuals: 0,
            },
            Half::Prediction => Evicted {
                predictions: 0,
                actuals: n,
            },
        }
    }

    pub fn rows(&self, model: &str) -> usize {
        self.keys.get(model).map_or(0, BTreeSet::len)
    }

    fn contains(&self, key: &[u8], model: &str) -> bool {
        self.keys.get(model).is_some_and(|s| s.contains(key))
    }

    /// Adds a row; evicts the oldest beyond the bound (in the same transaction).
    fn insert(&mut self, txn: &mut Txn<'_>, model: &str, key: Vec<u8>, value: Vec<u8>) {
        txn.put(key.clone(), value);
        let set = self.keys.entry(model.to_string()).or_default();
        set.insert(key);
        while set.len() > self.max_rows {
            if let Some(oldest) = set.pop_first() {
                txn.delete(oldest);
            }
        }
    }

    /// The prediction half arrives, read at `at` of the predictions topic.
    pub fn add_prediction(
        &mut self,
        txn: &mut Txn<'_>,
        model: &str,
        request_id: &str,
        event_time: i64,
        features: &Features,
        at: Position,
    ) -> Result<Joined> {
        let rk = row_key(model, event_time, request_id);
        if self.contains(&rk, model) {
            return Ok(Joined::Duplicate);
        }
        let ak = act_key(model, request_id);
        match txn.get(&ak)? {
            Some(bytes) => {
                let a: PendingActual = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::State(format!("pending actual: {e}")))?;
                let row = StoredRow {
                    t: event_time,
                    f: cells(features),
                    y: a.y,
                    c: a.c,
                    p: Some(at),
                    a: a.a,
                };
                self.unjoined.remove(model, Half::Actual, &ak);
                txn.delete(ak);
                let value = serde_json::to_vec(&row).unwrap_or_default();
                self.insert(txn, model, rk, value);
                Ok(Joined::Row)
            }
            None => {
                let p = PendingPrediction {
                    t: event_time,
                    f: cells(features),
                    p: Some(at),
                };
                let pk = pred_key(model, request_id);
                txn.put(pk.clone(), serde_json::to_vec(&p).unwrap_or_default());
                self.unjoined
                    .insert(model, Half::Prediction, pk, event_time);
                Ok(Joined::Pending)
            }
        }
    }

    /// The ground-truth half arrives (`value` for regression, `class` for classification),
    /// read at `at` of the actuals topic.
    #[allow(clippy::too_many_arguments)]
    pub fn add_actual(
        &mut self,
        txn: &mut Txn<'_>,
        model: &str,
        request_id: &str,
        event_time: i64,
        value: Option<f64>,
        class: Option<String>,
        at: Position,
    ) -> Result<Joined> {
        let rk = row_key(model, event_time, request_id);
        if self.contains(&rk, model) {
            return Ok(Joined::Duplicate);
        }
        let pk = pred_key(model, request_id);
        match txn.get(&pk)? {
            Some(bytes) => {
                let p: PendingPrediction = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::State(format!("pending prediction: {e}")))?;
                // The prediction's event time is the one the features belong to.
                let rk = row_key(model, p.t, request_id);
                let row = StoredRow {
                    t: p.t,
                    f: p.f,
                    y: value,
                    c: class,
                    p: p.p,
                    a: Some(at),
                };
                self.unjoined.remove(model, Half::Prediction, &pk);
                txn.delete(pk);
                let value = serde_json::to_vec(&row).unwrap_or_default();
                self.insert(txn, model, rk, value);
                Ok(Joined::Row)
            }
            None => {
                let a = PendingActual {
                    t: event_time,
                    y: value,
                    c: class,
                    a: Some(at),
                };
                let ak = act_key(model, request_id);
                txn.put(ak.clone(), serde_json::to_vec(&a).unwrap_or_default());
                self.unjoined.insert(model, Half::Actual, ak, event_time);
                Ok(Joined::Pending)
            }
        }
    }
}

/// Every committed labelled row of a model, oldest first (a consistent snapshot of what
/// the consumer had committed when the scan ran), with where its halves were read.
pub fn snapshot(store: &Store, model: &str) -> Result<Vec<SourcedRow>> {
    store
        .scan_prefix(&row_prefix(model))?
        .into_iter()
        .map(|(_, v)| decode_row(&v))
        .collect()
}

/// Every pending job, by key.
pub fn pending_jobs(store: &Store) -> Result<Vec<(Vec<u8>, Job)>> {
    store
        .scan_prefix(job_prefix_all())?
        .into_iter()
        .map(|(k, v)| Ok((k, Job::decode(&v)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap as Offsets;

    const HOUR: i64 = 3_600_000;

    fn x(v: f64) -> Features {
        [("x".to_string(), FeatureValue::Number(v))].into()
    }

    fn at(offset: i64) -> Position {
        Position {
            partition: 0,
            offset,
        }
    }

    fn limits(max_rows: usize) -> Limits {
        Limits {
            max_rows,
            max_unjoined_age_ms: 24 * HOUR,
        }
    }

    #[test]
    fn joins_whichever_half_arrives_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let mut index = RowIndex::load(&store, ["m".to_string()], limits(100)).unwrap();
        let mut txn = store.txn();
        assert_eq!(
            index
                .add_prediction(&mut txn, "m", "a", 10, &x(1.0), at(0))
                .unwrap(),
            Joined::Pending
        );
        assert_eq!(
            index
                .add_actual(&mut txn, "m", "b", 20, Some(4.0), None, at(0))
                .unwrap(),
            Joined::Pending
        );
        assert_eq!(index.unjoined("m"), 2);
        assert_eq!(
            index
                .add_actual(&mut txn, "m", "a", 10, Some(2.0), None, at(1))
                .unwrap(),
            Joined::Row
        );
        assert_eq!(
            index
                .add_prediction(&mut txn, "m", "b", 20, &x(3.0), at(1))
                .unwrap(),
            Joined::Row
        );
        assert_eq!(index.unjoined("m"), 0);
        // Re-delivered halves of joined rows change nothing.
        assert_eq!(
            index
                .add_actual(&mut txn, "m", "a", 10, Some(2.0), None, at(1))
                .unwrap(),
            Joined::Duplicate
        );
        assert_eq!(
            index
                .add_prediction(&mut txn, "m", "b", 20, &x(3.0), at(1))
                .unwrap(),
            Joined::Duplicate
        );
        store.commit(txn, &Offsets::new()).unwrap();
        let rows = snapshot(&store, "m").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].row.event_time, &rows[0].row.target),
            (10, &Target::Value(2.0))
        );
        assert_eq!(rows[1].row.features, x(3.0));
        // Each row knows the messages it was built from.
        assert_eq!(
            (rows[0].prediction, rows[0].actual),
            (Some(at(0)), Some(at(1)))
        );
        assert_eq!(
            (rows[1].prediction, rows[1].actual),
            (Some(at(1)), Some(at(0)))
        );
        assert!(store.scan_prefix(b"pred/").unwrap().is_empty());
        assert!(store.scan_prefix(b"act/").unwrap().is_empty());
    }

    #[test]
    fn end_offsets_are_one_past_the_newest_message_behind_any_row() {
        let row = |p: Option<Position>, a: Option<Position>| SourcedRow {
            row: LabelledRow {
                event_time: 0,
                features: x(0.0),
                target: Target::Value(0.0),
            },
            prediction: p,
            actual: a,
        };
        let rows = [
            row(Some(at(7)), Some(at(3))),
            row(
                Some(Position {
                    partition: 2,
                    offset: 40,
                }),
                Some(at(9)),
            ),
            row(Some(at(5)), None),
        ];
        assert_eq!(
            end_offsets(&rows, "preds", "acts"),
            Offsets::from([
                ("acts/0".to_string(), 10),
                ("preds/0".to_string(), 8),
                ("preds/2".to_string(), 41),
            ])
        );
        assert!(end_offsets(&[], "preds", "acts").is_empty());
    }

    #[test]
    fn keeps_only_the_newest_rows_per_model() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let mut index = RowIndex::load(&store, ["m".to_string()], limits(3)).unwrap();
        let mut txn = store.txn();
        // Out of order in time: eviction goes by event time, not arrival.
        for (i, t) in [5, 1, 4, 2, 3, -7].into_iter().enumerate() {
            let id = format!("r{t}");
            index
                .add_prediction(&mut txn, "m", &id, t, &x(t as f64), at(i as i64))
                .unwrap();
            index
                .add_actual(&mut txn, "m", &id, t, Some(t as f64), None, at(i as i64))
                .unwrap();
        }
        store.commit(txn, &Offsets::new()).unwrap();
        let times: Vec<i64> = snapshot(&store, "m")
            .unwrap()
            .iter()
            .map(|r| r.row.event_time)
            .collect();
        assert_eq!(times, [3, 4, 5]);
        // A restart rebuilds the same index from the store.
        assert_eq!(
            RowIndex::load(&store, ["m".to_string()], limits(3))
                .unwrap()
                .rows("m"),
            3
        );
    }

    #[test]
    fn a_prediction_waits_until_the_actuals_are_more_than_the_bound_ahead() {
        use Half::{Actual, Prediction};
        let mut u = Unjoined::new(10 * HOUR);
        u.insert("m", Prediction, b"pred/m\0a".to_vec(), 0);
        u.insert("m", Actual, b"act/m\0b".to_vec(), 5 * HOUR);
        u.insert("other", Prediction, b"pred/other\0c".to_vec(), 0);
        // Predictions far ahead age the waiting actuals, never a waiting prediction.
        assert_eq!(
            u.expire("m", Prediction, 100 * HOUR),
            [b"act/m\0b".to_vec()]
        );
        assert!(
            u.expire("m", Actual, 10 * HOUR).is_empty(),
            "exactly at the bound: kept"
        );
        assert_eq!(
            u.expire("m", Actual, 10 * HOUR + 1),
            [b"pred/m\0a".to_vec()]
        );
        // An older actual does not move the clock back.
        assert!(u.expire("m", Actual, 0).is_empty());
        assert_eq!(u.waiting("m"), 0);
        // Another model's clocks are its own.
        assert_eq!(u.waiting("other"), 1);
    }

    #[test]
    fn an_actual_waits_until_the_predictions_are_more_than_the_bound_ahead() {
        use Half::{Actual, Prediction};
        let mut u = Unjoined::new(10 * HOUR);
        u.insert("m", Actual, b"act/m\0b".to_vec(), 5 * HOUR);
        // Actuals far ahead (ground truth read before its predictions) age no actual.
        assert!(u.expire("m", Actual, 100 * HOUR).is_empty());
        assert!(u.expire("m", Prediction, 15 * HOUR).is_empty());
        assert_eq!(u.expire("m", Prediction, 16 * HOUR), [b"act/m\0b".to_vec()]);
    }

    #[test]
    fn a_backlog_of_predictions_read_ahead_of_its_actuals_is_not_evicted() {
        // A trainer catching up reads a week of predictions before the first actual.
        use Half::{Actual, Prediction};
        let mut u = Unjoined::new(10 * HOUR);
        for h in 0..168 {
            u.insert(
                "m",
                Prediction,
                format!("pred/m\0{h}").into_bytes(),
                h * HOUR,
            );
            assert!(u.expire("m", Prediction, h * HOUR).is_empty());
        }
        assert_eq!(u.waiting("m"), 168);
        // The actuals follow in time order; each removes its prediction, and the
        // ones never labelled (every 10th) go once the actuals are 10 hours past them.
        let mut evicted = 0;
        for h in 0..168 {
            if h % 10 != 0 {
                u.remove("m", Prediction, format!("pred/m\0{h}").as_bytes());
            }
            evicted += u.expire("m", Actual, h * HOUR).len();
        }
        assert_eq!(
            evicted, 16,
            "hours 0, 10, .., 150: the last two are within the bound"
        );
        assert_eq!(u.waiting("m"), 1);
    }

    #[test]
    fn a_joined_or_re_delivered_half_is_not_evicted_by_its_old_time() {
        use Half::{Actual, Prediction};
        let mut u = Unjoined::new(10 * HOUR);
        u.insert("m", Prediction, b"pred/m\0a".to_vec(), 0);
        u.insert("m", Prediction, b"pred/m\0b".to_vec(), 0);
        u.remove("m", Prediction, b"pred/m\0a");
        // Re-delivered with a later event time: it waits from that time.
        u.insert("m", Prediction, b"pred/m\0b".to_vec(), 8 * HOUR);
        assert!(u.expire("m", Actual, 12 * HOUR).is_empty());
        assert_eq!(u.waiting("m"), 1);
    }

    #[test]
    fn predictions_that_never_get_an_actual_are_evicted_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let mut index = RowIndex::load(&store, ["m".to_string()], limits(100)).unwrap();
        let mut txn = store.txn();
        // Two predictions whose actuals never come, then a day and more of joined traffic.
        for (id, t) in [("lost-1", 0), ("lost-2", HOUR)] {
            index
                .add_prediction(&mut txn, "m", id, t, &x(0.0), at(0))
                .unwrap();
            assert_eq!(
                index.expire(&mut txn, "m", Half::Prediction, t),
                Evicted::default()
            );
        }
        let mut evicted = Evicted::default();
        for h in 2..=26 {
            let (id, t) = (format!("ok-{h}"), h * HOUR);
            index
                .add_prediction(&mut txn, "m", &id, t, &x(1.0), at(h))
                .unwrap();
            let e = index.expire(&mut txn, "m", Half::Prediction, t);
            evicted.actuals += e.actuals;
            index
                .add_actual(&mut txn, "m", &id, t, Some(1.0), None, at(h))
                .unwrap();
            let e = index.expire(&mut txn, "m", Half::Actual, t);
            evicted.predictions += e.predictions;
        }
        assert_eq!(
            evicted,
            Evicted {
                predictions: 2,
                actuals: 0
            }
        );
        assert_eq!(index.unjoined("m"), 0);
        store.commit(txn, &Offsets::new()).unwrap();
        assert!(store.scan_prefix(b"pred/").unwrap().is_empty());
        assert_eq!(snapshot(&store, "m").unwrap().len(), 25);

        // A prediction still within the bound survives a restart and is found once the
        // actuals (their clock set again by the next ones) put it out of bounds.
        let mut txn = store.txn();
        index
            .add_prediction(&mut txn, "m", "late", 20 * HOUR, &x(0.0), at(30))
            .unwrap();
        store.commit(txn, &Offsets::new()).unwrap();
        let mut index = RowIndex::load(&store, ["m".to_string()], limits(100)).unwrap();
        assert_eq!(index.unjoined("m"), 1);
        let mut txn = store.txn();
        assert_eq!(
            index
                .expire(&mut txn, "m", Half::Actual, 30 * HOUR)
                .predictions,
            0
        );
        assert_eq!(
            index
                .expire(&mut txn, "m", Half::Actual, 44 * HOUR + 1)
                .predictions,
            1
        );
        store.commit(txn, &Offsets::new()).unwrap();
        assert!(store.scan_prefix(b"pred/").unwrap().is_empty());
    }

    #[test]
    fn row_keys_sort_by_event_time_including_negative_times() {
        let mut keys = [
            row_key("m", 3, "a"),
            row_key("m", -5, "b"),
            row_key("m", 0, "c"),
        ];
        keys.sort();
        assert_eq!(keys[0], row_key("m", -5, "b"));
        assert_eq!(keys[2], row_key("m", 3, "a"));
    }
}
