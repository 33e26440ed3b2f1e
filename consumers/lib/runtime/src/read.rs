//! Reading partitions of a topic to their end, as the consumer's isolation level sees them:
//! the one loop behind the changelog restore, the registry's read of a thin version and
//! the tests' readers.
//!
//! The end is where the broker says it is (`enable.partition.eof`), not an offset
//! computed beforehand: with transactions, commit markers and aborted records take offsets
//! but are never handed out, so a read_committed reader never sees a message at the high
//! watermark minus one.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use crate::{Error, Result};

/// Reads `starts` (partition, first offset) of `topic` with `consumer` (made with
/// `enable.partition.eof=true`) until every partition reports its end. `f` sees each
/// message, and `None` after each poll that brought nothing (for a caller that checks
/// for shutdown or logs progress); an error from it ends the read. A consume error is
/// logged and the read goes on; `idle`, when given, is how long the read may go without a
/// message or an end before it fails. Returns, per partition, the position at its end:
/// past any transaction markers after its last record.
pub fn read_to_end<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    starts: &[(i32, Offset)],
    idle: Option<Duration>,
    mut f: impl FnMut(Option<&BorrowedMessage<'_>>) -> Result<()>,
) -> Result<BTreeMap<i32, i64>> {
    let mut ends = BTreeMap::new();
    if starts.is_empty() {
        return Ok(ends);
    }
    let mut tpl = TopicPartitionList::new();
    for (p, offset) in starts {
        tpl.add_partition_offset(topic, *p, *offset)?;
    }
    consumer.assign(&tpl)?;
    let mut open: HashSet<i32> = starts.iter().map(|(p, _)| *p).collect();
    let mut heard = Instant::now();
    while !open.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                heard = Instant::now();
                f(Some(&m))?;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                heard = Instant::now();
                if let Ok(position) = consumer.position()
                    && let Some(Offset::Offset(at)) =
                        position.find_partition(topic, p).map(|e| e.offset())
                {
                    ends.insert(p, at);
                }
                open.remove(&p);
            }
            Some(Err(e)) => {
                warn!(%topic, error = %e, "reading to the end: consume error");
                f(None)?;
            }
            None => {
                if idle.is_some_and(|idle| heard.elapsed() > idle) {
                    let mut open: Vec<i32> = open.into_iter().collect();
                    open.sort_unstable();
                    return Err(Error::Config(format!(
                        "reading {topic}: partitions {open:?} sent neither a message nor their end for {:?}",
                        heard.elapsed()
                    )));
                }
                f(None)?;
            }
        }
    }
    Ok(ends)
}

/// Every partition of `topic`, from its beginning.
pub fn from_beginning<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> Result<Vec<(i32, Offset)>> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .map(|p| (p.id(), Offset::Beginning))
        .collect())
}
