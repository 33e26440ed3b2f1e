//! Bringing the local store up to the changelog's end for the partitions just assigned.
//!
//! The store knows, per changelog partition, the next offset it does not hold; reading
//! from there to the end (read_committed: aborted changes are skipped) and writing each
//! chunk with its new position makes the local copy equal to the committed state. A new
//! instance on an empty disk reads the whole partition; one that restarts on its own disk
//! reads only what others (or its last transaction) wrote since. Applying a suffix again is
//! harmless: every record is the key's latest value or its deletion.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::QuietContext;
use crate::metrics::Metrics;
use crate::read::read_to_end;
use crate::store::Store;
use crate::{Error, Result};
use driftline_kafka::KafkaArgs;

/// Records written to RocksDB in one batch while restoring.
const CHUNK: usize = 10_000;

/// Restores `partitions` of `changelog` into `store`; returns the records applied.
pub(crate) async fn restore(
    kafka: &KafkaArgs,
    store: &Arc<Store>,
    changelog: &str,
    partitions: &BTreeSet<i32>,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<u64> {
    let (kafka, store, changelog, partitions, metrics, shutdown) = (
        kafka.clone(),
        store.clone(),
        changelog.to_string(),
        partitions.clone(),
        metrics.clone(),
        shutdown.clone(),
    );
    tokio::task::spawn_blocking(move || {
        restore_blocking(&kafka, &store, &changelog, &partitions, &metrics, &shutdown)
    })
    .await
    .map_err(|e| Error::Config(format!("restore panicked: {e}")))?
}

fn restore_blocking(
    kafka: &KafkaArgs,
    store: &Store,
    changelog: &str,
    partitions: &BTreeSet<i32>,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<u64> {
    let positions = store.positions()?;
    let mut config = kafka.consumer_config(&format!("{changelog}-restore"));
    config.set("enable.partition.eof", "true");
    // At the end the broker would hold the empty fetch for fetch.wait.max.ms (500 ms)
    // before the end is known; nothing more is coming, so ask it not to wait.
    config.set("fetch.wait.max.ms", "10");
    let consumer: BaseConsumer<QuietContext> = config.create_with_context(QuietContext)?;
    let mut behind = Vec::new();
    for p in partitions {
        let from = positions.get(&(changelog.to_string(), *p)).copied();
        let (low, high) = consumer.fetch_watermarks(changelog, *p, Duration::from_secs(30))?;
        if from.unwrap_or(low).max(low) >= high {
            continue;
        }
        behind.push((*p, from.map_or(Offset::Beginning, Offset::Offset)));
    }
    if behind.is_empty() {
        return Ok(0);
    }
    let restoring: Vec<i32> = behind.iter().map(|(p, _)| *p).collect();
    info!(%changelog, partitions = ?restoring, "restoring state from the changelog");
    let counter = metrics.restored.with_label_values(&[changelog]);
    let started = Instant::now();
    let mut last_log = Instant::now();
    let mut chunk: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut total = 0u64;
    let flush = |chunk: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>,
                 next: &BTreeMap<(String, i32), i64>|
     -> Result<()> {
        store.write(
            chunk.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
            next,
        )?;
        counter.inc_by(chunk.len() as u64);
        chunk.clear();
        Ok(())
    };
    // No idle limit: while the broker is away the restore waits for it (the service is
    // not ready meanwhile), and a shutdown ends it.
    let ends = read_to_end(&consumer, changelog, &behind, None, |m| {
        if shutdown.is_cancelled() {
            return Err(Error::Config("stopped while restoring".into()));
        }
        if let Some(m) = m
            && let Some(key) = m.key()
        {
            chunk.push((key.to_vec(), m.payload().map(<[u8]>::to_vec)));
            next.insert((changelog.to_string(), m.partition()), m.offset() + 1);
            total += 1;
            if chunk.len() >= CHUNK {
                flush(&mut chunk, &next)?;
            }
        }
        if last_log.elapsed() >= Duration::from_secs(5) {
            info!(%changelog, records = total, "restoring");
            last_log = Instant::now();
        }
        Ok(())
    })?;
    // Past the transaction markers after the last record too, so the next assignment
    // finds nothing left to read.
    for (p, at) in ends {
        let e = next.entry((changelog.to_string(), p)).or_insert(at);
        *e = (*e).max(at);
    }
    flush(&mut chunk, &next)?;
    info!(%changelog, records = total, seconds = started.elapsed().as_secs_f64(), "restored");
    Ok(total)
}
