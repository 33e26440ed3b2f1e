//! RocksDB state with the consumed offsets beside it.
//!
//! Two column families: `state` (the processor's keys) and `offsets`
//! (`topic\0partition` -> next offset to read). [`Store::commit`] writes a transaction's
//! state changes and its offsets in one `WriteBatch`, so they are durable together or not
//! at all.
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

/// State changes staged by one transaction, by key; `None` deletes.
pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

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

impl Store {
    /// Opens (or creates) the store. `sync` fsyncs the WAL on every commit: needed to
    /// survive a power cut, not a process kill (the WAL is in the OS cache by then).
    pub fn open(path: &Path, sync: bool) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
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

    /// The next offset to read, per topic and partition, as last committed.
    pub fn offsets(&self) -> Result<HashMap<TopicPartition, i64>> {
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
        }
    }

    /// Writes the transaction's state and the offsets in one atomic batch.
    pub fn commit(&self, txn: Txn<'_>, offsets: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        self.commit_writes(&txn.pending, offsets)
    }

    /// Writes staged state changes and the offsets in one atomic batch.
    pub fn commit_writes(
        &self,
        writes: &Writes,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        let state = self.cf(STATE)?;
        for (k, v) in writes {
            match v {
                Some(v) => batch.put_cf(state, k, v),
                None => batch.delete_cf(state, k),
            }
        }
        let off = self.cf(OFFSETS)?;
        for ((topic, partition), next) in offsets {
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
}

impl Txn<'_> {
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let staged = std::iter::once(&self.pending)
            .chain(self.uncommitted.iter().rev().map(|w| &**w))
            .find_map(|w| w.get(key));
        match staged {
            Some(v) => Ok(v.clone()),
            None => self.store.get(key),
        }
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.pending.insert(key.into(), Some(value.into()));
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.pending.insert(key.into(), None);
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
    fn state_and_offsets_survive_reopen_together() {
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
            store.offsets().unwrap().get(&("t".to_string(), 3)),
            Some(&42)
        );
    }

    #[test]
    fn an_uncommitted_transaction_leaves_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let mut txn = store.txn();
        txn.put(b"k".to_vec(), b"v".to_vec());
        drop(txn);
        assert_eq!(store.get(b"k").unwrap(), None);
        assert!(store.offsets().unwrap().is_empty());
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
