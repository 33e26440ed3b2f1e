//! The labelled-row store: the joiner's rows (driftline.labelled), per model, time-ordered.
//!
//! Keys (in the runtime's `state` column family, so every change commits with the
//! offsets that caused it):
//!
//! | key | value |
//! | --- | --- |
//! | `row/<model>\0<event time, 8 bytes order-preserving><request id>` | a labelled row |
//! | `job/<model>\0<trigger>` | a pending training job ([`Job`]) |
//! | `done/<model>\0<trigger>` | a trigger coalesced into another job (by trainers before jobs ran one by one; still honoured) |
//! | `sched/<model>` | the optional schedule's counters |
//! | `read/<partition>` | the next offset of that labelled partition: the rows reflect every message below it |
//! | `rollout/<model>` | the live rollout gate's state ([`crate::rollout::Rollout`]) |
//! | `decision/<model>\0<version>/<action>` | a gate decision waiting to be published ([`Decision`]) |
//!
//! Row keys sort by event time, so a training window is one prefix scan and eviction of
//! the oldest rows is a walk from the front of an in-memory index of the keys.
//!
//! Each row remembers where its prediction and its actual were read, so a training set can
//! say which messages it reflects ([`end_offsets`]), and the labelled offset it came from,
//! so a retrain request can name exactly the rows it trains on ([`Job::rows_until`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use driftline_model::{LabelledRow, Target};
use driftline_runtime::{Store, Txn};
use driftline_schemas::events::{FeatureValue, Features, SourcePosition, offsets_key};
use serde::{Deserialize, Serialize};

use crate::rollout::Decision;
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

pub fn rollout_key(model: &str) -> Vec<u8> {
    prefixed("rollout/", model)
}

pub fn decision_key(d: &Decision) -> Vec<u8> {
    let mut k = prefixed("decision/", &d.model);
    k.extend_from_slice(format!("{}/{}", d.version, d.action.as_str()).as_bytes());
    k
}

pub fn read_key(partition: i32) -> Vec<u8> {
    format!("read/{partition}").into_bytes()
}

/// How far the committed rows reach into labelled partition `partition`: the next offset
/// (`None` before any labelled message of it was stored).
pub fn read_upto(store: &Store, partition: i32) -> Result<Option<i64>> {
    Ok(store
        .get(&read_key(partition))?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(i64::from_be_bytes))
}

/// Records in `txn` that labelled partition `partition` was read up to `next_offset`.
pub fn record_read(txn: &mut Txn<'_>, partition: i32, next_offset: i64) {
    txn.put(read_key(partition), next_offset.to_be_bytes().to_vec());
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

/// Where a half was read, as stored with every row (short names: one per half).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    /// Absent in rows stored before rows came from the joiner.
    #[serde(rename = "t", default)]
    topic: String,
    #[serde(rename = "n")]
    partition: i32,
    #[serde(rename = "o")]
    offset: i64,
}

impl From<&SourcePosition> for Position {
    fn from(p: &SourcePosition) -> Self {
        Self {
            topic: p.topic.clone(),
            partition: p.partition,
            offset: p.offset,
        }
    }
}

impl From<Position> for SourcePosition {
    fn from(p: Position) -> Self {
        Self {
            topic: p.topic,
            partition: p.partition,
            offset: p.offset,
        }
    }
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
    /// The offset of the labelled message (absent in rows stored before rows kept it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    l: Option<i64>,
}

/// A stored row with where its two halves were read.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcedRow {
    pub row: LabelledRow,
    pub prediction: Option<SourcePosition>,
    pub actual: Option<SourcePosition>,
    /// Where in its labelled partition the row was read.
    pub labelled: Option<i64>,
}

/// Per source partition, the offset after the newest message behind any of `rows`
/// (`"topic/partition"` -> next offset, as drift report windows name offsets). Every row
/// of the set was built from messages below these offsets.
pub fn end_offsets(rows: &[SourcedRow]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for at in rows
        .iter()
        .flat_map(|r| [&r.prediction, &r.actual])
        .flatten()
    {
        if at.topic.is_empty() {
            continue;
        }
        let next = out.entry(offsets_key(&at.topic, at.partition)).or_insert(0);
        *next = (*next).max(at.offset + 1);
    }
    out
}

fn stored(
    row: &LabelledRow,
    (p, a): (&SourcePosition, &SourcePosition),
    labelled: i64,
) -> StoredRow {
    let (y, c) = match &row.target {
        Target::Value(x) => (Some(*x), None),
        Target::Class(c) => (None, Some(c.clone())),
    };
    StoredRow {
        t: row.event_time,
        f: cells(&row.features),
        y,
        c,
        p: Some(p.into()),
        a: Some(a.into()),
        l: Some(labelled),
    }
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
        prediction: s.p.map(Into::into),
        actual: s.a.map(Into::into),
        labelled: s.l,
    })
}

/// A training job waiting in the store. One per trigger; a model's run one at a time,
/// the oldest first.
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
    /// The input partition of the event that asked for it: only that partition's owner
    /// runs it (absent in jobs written before jobs named one).
    #[serde(default)]
    pub partition: Option<i32>,
    /// The rows to train on are those read from the labelled partition below this offset
    /// (the monitor's position when it asked), and the job waits until the store reaches
    /// it: the same request trains on the same rows whenever and wherever it runs.
    /// `None`: the rows the store holds when the job runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_until: Option<i64>,
}

impl Job {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::State(format!("job: {e}")))
    }
}

/// The in-memory index of row keys per model, loaded from the store (at every assignment)
/// and kept in step by the processor (it is the only writer), so eviction needs no scan.
#[derive(Debug, Default)]
pub struct RowIndex {
    keys: HashMap<String, BTreeSet<Vec<u8>>>,
    max_rows: usize,
}

impl RowIndex {
    /// Keeps at most `max_rows` rows per model (the oldest in event time are evicted).
    pub fn load(
        store: &Store,
        models: impl IntoIterator<Item = String>,
        max_rows: usize,
    ) -> Result<Self> {
        let mut keys = HashMap::new();
        for model in models {
            let set: BTreeSet<Vec<u8>> = store
                .scan_prefix(&row_prefix(&model))?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            keys.insert(model, set);
        }
        Ok(Self {
            keys,
            max_rows: max_rows.max(1),
        })
    }

    pub fn rows(&self, model: &str) -> usize {
        self.keys.get(model).map_or(0, BTreeSet::len)
    }

    /// The same index read again from `store` (after a restore or an aborted transaction).
    pub fn reloaded(&self, store: &Store) -> Result<Self> {
        Self::load(store, self.keys.keys().cloned(), self.max_rows)
    }

    /// Stores `row` of `model` (its halves read at `read_at`, itself read at offset
    /// `labelled` of its labelled partition) and evicts the oldest rows beyond the bound,
    /// in the same transaction; returns how many were evicted, or `None` when this
    /// request's row is already stored (a re-delivered message).
    pub fn add(
        &mut self,
        txn: &mut Txn<'_>,
        model: &str,
        request_id: &str,
        row: &LabelledRow,
        read_at: (&SourcePosition, &SourcePosition),
        labelled: i64,
    ) -> Option<u64> {
        let key = row_key(model, row.event_time, request_id);
        let set = self.keys.entry(model.to_string()).or_default();
        if !set.insert(key.clone()) {
            return None;
        }
        txn.put(
            key,
            serde_json::to_vec(&stored(row, read_at, labelled)).unwrap_or_default(),
        );
        let mut evicted = 0;
        while set.len() > self.max_rows {
            if let Some(oldest) = set.pop_first() {
                txn.delete(oldest);
                evicted += 1;
            }
        }
        Some(evicted)
    }
}

/// Every committed labelled row of a model with event time at most `end`, newest first,
/// decoded as it is read (one consistent snapshot; see [`Store::scan_prefix_rev`]).
pub fn newest_first<'a>(
    store: &'a Store,
    model: &str,
    end: i64,
) -> Result<impl Iterator<Item = Result<SourcedRow>> + use<'a>> {
    // The smallest key after every row of `end`: rows of one time sort by request id.
    let upto = row_key(model, end.saturating_add(1), "");
    Ok(store
        .scan_prefix_rev(row_prefix(model), &upto)?
        .map(|item| decode_row(&item?.1)))
}

/// Whether a job with [`Job::rows_until`] `until` may train on a row: only rows read below
/// it (and rows stored before rows kept their labelled offset).
pub fn named_by(row: &SourcedRow, until: Option<i64>) -> bool {
    match (until, row.labelled) {
        (Some(until), Some(at)) => at < until,
        _ => true,
    }
}

/// Every pending job, by key.
pub fn pending_jobs(store: &Store) -> Result<Vec<(Vec<u8>, Job)>> {
    store
        .scan_prefix(job_prefix_all())?
        .into_iter()
        .map(|(k, v)| Ok((k, Job::decode(&v)?)))
        .collect()
}

/// The gate's decisions waiting to be published, with their keys.
pub fn pending_decisions(store: &Store) -> Result<Vec<(Vec<u8>, Decision)>> {
    store
        .scan_prefix(b"decision/")?
        .into_iter()
        .map(|(k, v)| {
            serde_json::from_slice(&v)
                .map(|d| (k, d))
                .map_err(|e| Error::State(format!("a stored rollout decision: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed row of `model`, oldest first.
    fn oldest_first(store: &Store, model: &str) -> Vec<SourcedRow> {
        let mut rows: Vec<SourcedRow> = newest_first(store, model, i64::MAX)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        rows.reverse();
        rows
    }
    use std::collections::BTreeMap as Offsets;

    fn x(v: f64) -> Features {
        [("x".to_string(), FeatureValue::Number(v))].into()
    }

    fn at(topic: &str, partition: i32, offset: i64) -> SourcePosition {
        SourcePosition {
            topic: topic.into(),
            partition,
            offset,
        }
    }

    fn row(t: i64, y: f64) -> LabelledRow {
        LabelledRow {
            event_time: t,
            features: x(y),
            target: Target::Value(y),
        }
    }

    #[test]
    fn a_row_is_stored_once_with_where_its_halves_were_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let mut index = RowIndex::load(&store, ["m".to_string()], 100).unwrap();
        let mut txn = store.txn();
        let read = (&at("p", 0, 4), &at("a", 1, 9));
        assert_eq!(
            index.add(&mut txn, "m", "r", &row(10, 2.0), read, 7),
            Some(0)
        );
        assert_eq!(
            index.add(&mut txn, "m", "r", &row(10, 2.0), read, 8),
            None,
            "re-delivered"
        );
        store.commit(txn, &Offsets::new()).unwrap();
        let rows = oldest_first(&store, "m");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].row, row(10, 2.0));
        assert_eq!(
            (rows[0].prediction.clone(), rows[0].actual.clone()),
            (Some(at("p", 0, 4)), Some(at("a", 1, 9)))
        );
        assert_eq!(rows[0].labelled, Some(7), "the first copy's offset");
    }

    #[test]
    fn a_job_naming_an_offset_takes_only_the_rows_read_below_it() {
        let at = |labelled| SourcedRow {
            row: row(0, 0.0),
            prediction: None,
            actual: None,
            labelled,
        };
        let rows = [at(Some(3)), at(Some(9)), at(None), at(Some(10))];
        let offsets = |until| -> Vec<_> {
            rows.iter()
                .filter(|r| named_by(r, until))
                .map(|r| r.labelled)
                .collect()
        };
        assert_eq!(
            offsets(Some(10)),
            [Some(3), Some(9), None],
            "rows stored before rows kept their offset count as read before"
        );
        assert_eq!(offsets(None).len(), 4);
    }

    #[test]
    fn end_offsets_are_one_past_the_newest_message_behind_any_row() {
        let sourced = |p: SourcePosition, a: Option<SourcePosition>| SourcedRow {
            row: row(0, 0.0),
            prediction: Some(p),
            actual: a,
            labelled: None,
        };
        let rows = [
            sourced(at("preds", 0, 7), Some(at("acts", 0, 3))),
            sourced(at("preds", 2, 40), Some(at("acts", 0, 9))),
            sourced(at("preds", 0, 5), None),
            // A row stored before rows named their topics counts for none.
            sourced(at("", 0, 99), None),
        ];
        assert_eq!(
            end_offsets(&rows),
            Offsets::from([
                ("acts/0".to_string(), 10),
                ("preds/0".to_string(), 8),
                ("preds/2".to_string(), 41),
            ])
        );
        assert!(end_offsets(&[]).is_empty());
    }

    #[test]
    fn keeps_only_the_newest_rows_per_model() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let mut index = RowIndex::load(&store, ["m".to_string()], 3).unwrap();
        let mut txn = store.txn();
        // Out of order in time: eviction goes by event time, not arrival.
        let mut evicted = 0;
        for (i, t) in [5, 1, 4, 2, 3, -7].into_iter().enumerate() {
            let read = (&at("p", 0, i as i64), &at("a", 0, i as i64));
            evicted += index
                .add(&mut txn, "m", &format!("r{t}"), &row(t, t as f64), read, t)
                .unwrap();
        }
        assert_eq!(evicted, 3);
        store.commit(txn, &Offsets::new()).unwrap();
        let times: Vec<i64> = oldest_first(&store, "m")
            .iter()
            .map(|r| r.row.event_time)
            .collect();
        assert_eq!(times, [3, 4, 5]);
        // A restart rebuilds the same index from the store.
        assert_eq!(
            RowIndex::load(&store, ["m".to_string()], 3)
                .unwrap()
                .rows("m"),
            3
        );
    }

    #[test]
    fn a_row_stored_before_rows_named_their_topics_still_reads() {
        let old = br#"{"t":5,"f":{"x":1.0},"y":2.0,"p":{"n":0,"o":3},"a":{"n":1,"o":4}}"#;
        let r = decode_row(old).unwrap();
        assert_eq!(r.row.target, Target::Value(2.0));
        assert_eq!(r.prediction, Some(at("", 0, 3)));
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
