//! RocksDB state: a local copy of the service's changelog topic.
//!
//! Two column families: `state` (the processor's keys) and `offsets`
//! (`topic\0partition` -> the next changelog offset the local copy does not hold yet, its
//! restore position). [`Store::commit_writes`] writes a transaction's state changes and
//! those positions in one `WriteBatch`, so they are durable together or not at all. The
//! consumed offsets live in Kafka, committed in the same Kafka transaction as the outputs
//! and the changelog records (see [`crate::consumer`]).
//!
//! Each staged change remembers the input partition whose message made it: that is the
//! changelog partition it is written to, so a partition's state moves with it.
//!
//! A [`Txn`] can also read through the changes of earlier batches that are not committed
//! yet ([`Store::txn_after`]), so the consumer can process the next batch while the last
//! one's outputs are still being acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};

use crate::{Error, Result};

const STATE: &str = "state";
const OFFSETS: &str = "offsets";

pub type TopicPartition = (String, i32);

/// A key and its value as RocksDB hands them out.
pub type Entry = (Box<[u8]>, Box<[u8]>);

/// A staged change to one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Staged {
    /// The new value; `None` deletes.
    pub value: Option<Vec<u8>>,
    /// The input partition of the message that made the change, which is the changelog
    /// partition it goes to; `None` for a change made outside the consumer loop (it stays
    /// local).
    pub partition: Option<i32>,
}

/// State changes staged by one transaction, by key.
pub type Writes = BTreeMap<Vec<u8>, Staged>;

pub struct Store {
    db: DB,
    sync: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.db.path())
            .finish()
    }
}

/// The write-ahead logs' total size past which RocksDB flushes the column family that
/// holds the oldest one back: two memtables' worth.
const MAX_WAL_BYTES: u64 = 128 << 20;

impl Store {
    /// Opens (or creates) the store. `sync` fsyncs the WAL on every commit: needed to
    /// survive a power cut, not a process kill (the WAL is in the OS cache by then).
    pub fn open(path: &Path, sync: bool) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // A log file can go only once every column family has flushed past it, and the
        // offsets' few keys never fill a memtable: without a cap RocksDB kept every log
        // up to its default (4x all write buffers, about 1.5 GB). The soak saw each
        // service's directory grow by a 50 MB log a minute.
        opts.set_max_total_wal_size(MAX_WAL_BYTES);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let cfs = [STATE, OFFSETS].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Self { db, sync })
    }

    /// Opens a store read-only, e.g. to inspect a stopped consumer's state.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        let opts = Options::default();
        let db = DB::open_cf_for_read_only(&opts, path, [STATE, OFFSETS], false)?;
        Ok(Self { db, sync: false })
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| Error::Config(format!("column family {name} is missing")))
    }

    /// Where the store is on disk.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(STATE)?, key)?)
    }

    /// Every state entry whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(STATE)?, prefix) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// The state entries whose key starts with `prefix` and is at most `upto`, newest key
    /// first, read lazily from one RocksDB snapshot taken now (so the whole walk sees one
    /// consistent state, however long it takes).
    pub fn scan_prefix_rev<'s>(
        &'s self,
        prefix: Vec<u8>,
        upto: &[u8],
    ) -> Result<impl Iterator<Item = Result<Entry>> + use<'s>> {
        let from = rocksdb::IteratorMode::From(upto, rocksdb::Direction::Reverse);
        let after = prefix.clone();
        Ok(self
            .db
            .iterator_cf(self.cf(STATE)?, from)
            // Keys past the prefix's range sort after it; the first key before it ends it.
            .skip_while(move |item| {
                item.as_ref()
                    .is_ok_and(|(k, _)| !k.starts_with(&after) && **k > *after)
            })
            .take_while(move |item| item.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
            .map(|item| item.map_err(Error::from)))
    }

    /// Per changelog topic and partition, the next offset the local copy does not hold.
    pub fn positions(&self) -> Result<HashMap<TopicPartition, i64>> {
        let mut out = HashMap::new();
        for item in self
            .db
            .iterator_cf(self.cf(OFFSETS)?, rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            if let Some(tp) = decode_tp(&k) {
                let mut b = [0u8; 8];
                if v.len() == 8 {
                    b.copy_from_slice(&v);
                    out.insert(tp, i64::from_be_bytes(b));
                }
            }
        }
        Ok(out)
    }

    pub fn txn(&self) -> Txn<'_> {
        self.txn_after(&[])
    }

    /// A transaction that reads `uncommitted` (earlier transactions' changes, oldest first)
    /// as if they were already committed. They must be committed before this one.
    pub fn txn_after<'a>(&'a self, uncommitted: &'a [Arc<Writes>]) -> Txn<'a> {
        Txn {
            store: self,
            uncommitted,
            pending: Writes::new(),
            partition: None,
        }
    }

    /// Writes the transaction's state and the positions in one atomic batch.
    pub fn commit(&self, txn: Txn<'_>, positions: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        self.commit_writes(&txn.pending, positions)
    }

    /// Writes staged state changes and the positions in one atomic batch.
    pub fn commit_writes(
        &self,
        writes: &Writes,
        positions: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        self.write(
            writes
                .iter()
                .map(|(k, s)| (k.as_slice(), s.value.as_deref())),
            positions,
        )
    }

    /// Writes changes (`None` deletes) and positions in one atomic batch: a restore from the
    /// changelog.
    pub fn write<'k>(
        &self,
        changes: impl IntoIterator<Item = (&'k [u8], Option<&'k [u8]>)>,
        positions: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        let state = self.cf(STATE)?;
        for (k, v) in changes {
            match v {
                Some(v) => batch.put_cf(state, k, v),
                None => batch.delete_cf(state, k),
            }
        }
        let off = self.cf(OFFSETS)?;
        for ((topic, partition), next) in positions {
            batch.put_cf(off, encode_tp(topic, *partition), next.to_be_bytes());
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }
}

fn encode_tp(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = topic.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

fn decode_tp(k: &[u8]) -> Option<TopicPartition> {
    let split = k.iter().position(|b| *b == 0)?;
    let topic = std::str::from_utf8(&k[..split]).ok()?.to_string();
    let p: [u8; 4] = k.get(split + 1..split + 5)?.try_into().ok()?;
    Some((topic, i32::from_be_bytes(p)))
}

/// Staged state changes; reads see the transaction's own writes first, then those of
/// uncommitted earlier transactions (newest first), then the store.
pub struct Txn<'a> {
    store: &'a Store,
    uncommitted: &'a [Arc<Writes>],
    pending: Writes,
    /// The input partition of the message being processed.
    partition: Option<i32>,
}

impl Txn<'_> {
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let staged = std::iter::once(&self.pending)
            .chain(self.uncommitted.iter().rev().map(|w| &**w))
            .find_map(|w| w.get(key));
        match staged {
            Some(s) => Ok(s.value.clone()),
            None => self.store.get(key),
        }
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.stage(key.into(), Some(value.into()));
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.stage(key.into(), None);
    }

    fn stage(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let partition = self.partition;
        self.pending.insert(key, Staged { value, partition });
    }

    /// Changes staged from now on belong to input partition `partition`.
    pub(crate) fn set_partition(&mut self, partition: i32) {
        self.partition = Some(partition);
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The staged changes, to commit later with [`Store::commit_writes`].
    pub fn into_writes(self) -> Writes {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reverse_prefix_scan_reads_only_its_prefix_up_to_a_key_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let mut txn = store.txn();
        for k in ["a\x00", "b\x001", "b\x002", "b\x003", "b\x01", "c"] {
            txn.put(k.as_bytes().to_vec(), b"v".to_vec());
        }
        store.commit(txn, &BTreeMap::new()).unwrap();
        let keys = |upto: &str| -> Vec<String> {
            store
                .scan_prefix_rev(b"b\x00".to_vec(), upto.as_bytes())
                .unwrap()
                .map(|kv| String::from_utf8(kv.unwrap().0.into()).unwrap())
                .collect()
        };
        assert_eq!(keys("b\x0025"), ["b\x002", "b\x001"]);
        assert_eq!(keys("z"), ["b\x003", "b\x002", "b\x001"]);
        assert!(keys("b\x000").is_empty());
    }

    #[test]
    fn write_ahead_logs_stay_bounded_while_the_state_keeps_changing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let value = vec![7u8; 1024];
        // 400 MB of changes to a bounded state (the same 10k keys), a position each time.
        for round in 0..400u32 {
            let changes: Vec<(Vec<u8>, Option<&[u8]>)> = (0..1000u32)
                .map(|i| {
                    (
                        (round % 10 * 1000 + i).to_be_bytes().to_vec(),
                        Some(&value[..]),
                    )
                })
                .collect();
            let positions = BTreeMap::from([(("t".to_string(), 0), i64::from(round))]);
            store
                .write(changes.iter().map(|(k, v)| (k.as_slice(), *v)), &positions)
                .unwrap();
        }
        let logs: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(logs < 256 << 20, "{} MB of write-ahead logs", logs >> 20);
    }

    #[test]
    fn state_and_positions_survive_reopen_together() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), false).unwrap();
            let mut txn = store.txn();
            txn.put(b"count".to_vec(), 7u64.to_be_bytes().to_vec());
            assert_eq!(
                txn.get(b"count").unwrap(),
                Some(7u64.to_be_bytes().to_vec())
            );
            let offsets = BTreeMap::from([(("t".to_string(), 3), 42)]);
            store.commit(txn, &offsets).unwrap();
        }
        let store = Store::open(dir.path(), false).unwrap();
        assert_eq!(
            store.get(b"count").unwrap(),
            Some(7u64.to_be_bytes().to_vec())
        );
        assert_eq!(
            store.positions().unwrap().get(&("t".to_string(), 3)),
            Some(&42)
        );
    }

    #[test]
    fn each_change_remembers_the_input_partition_that_made_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let mut txn = store.txn();
        txn.put(b"outside".to_vec(), b"v".to_vec());
        txn.set_partition(2);
        txn.put(b"a".to_vec(), b"v".to_vec());
        txn.set_partition(0);
        txn.delete(b"b".to_vec());
        let writes = txn.into_writes();
        let partition = |k: &[u8]| writes[k].partition;
        assert_eq!(partition(b"outside"), None, "not on the changelog");
        assert_eq!(partition(b"a"), Some(2));
        assert_eq!(partition(b"b"), Some(0));
        assert_eq!(writes[&b"b"[..]].value, None);
    }

    #[test]
    fn an_uncommitted_transaction_leaves_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let mut txn = store.txn();
        txn.put(b"k".to_vec(), b"v".to_vec());
        drop(txn);
        assert_eq!(store.get(b"k").unwrap(), None);
        assert!(store.positions().unwrap().is_empty());
    }

    #[test]
    fn reads_see_uncommitted_transactions_newest_first_over_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let mut base = store.txn();
        for k in [b"a", b"b", b"c", b"d"] {
            base.put(k.to_vec(), b"committed".to_vec());
        }
        store.commit(base, &BTreeMap::new()).unwrap();

        let mut first = store.txn();
        first.put(b"a".to_vec(), b"first".to_vec());
        first.put(b"b".to_vec(), b"first".to_vec());
        first.delete(b"c".to_vec());
        let first = Arc::new(first.into_writes());
        let mut second = store.txn_after(std::slice::from_ref(&first));
        assert_eq!(second.get(b"c").unwrap(), None, "sees the earlier delete");
        second.put(b"b".to_vec(), b"second".to_vec());
        let second = Arc::new(second.into_writes());

        let uncommitted = [first.clone(), second.clone()];
        let mut third = store.txn_after(&uncommitted);
        third.put(b"e".to_vec(), b"third".to_vec());
        let read = |k: &[u8]| third.get(k).unwrap();
        assert_eq!(read(b"a"), Some(b"first".to_vec()));
        assert_eq!(read(b"b"), Some(b"second".to_vec()), "the newest wins");
        assert_eq!(read(b"c"), None);
        assert_eq!(read(b"d"), Some(b"committed".to_vec()));
        assert_eq!(read(b"e"), Some(b"third".to_vec()));
        assert_eq!(store.get(b"a").unwrap(), Some(b"committed".to_vec()));

        // Committed in order, the store ends where the last reader stood.
        let third = third.into_writes();
        for w in [&*first, &*second, &third] {
            store.commit_writes(w, &BTreeMap::new()).unwrap();
        }
        for (k, v) in [
            (&b"a"[..], Some(&b"first"[..])),
            (b"b", Some(b"second")),
            (b"c", None),
            (b"d", Some(b"committed")),
            (b"e", Some(b"third")),
        ] {
            assert_eq!(store.get(k).unwrap().as_deref(), v);
        }
    }
}
