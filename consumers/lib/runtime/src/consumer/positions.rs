//! Which messages the consumer has already taken, so a re-delivery is not applied twice.

use std::collections::HashMap;

/// The next offset per topic and partition that the loop has taken for processing,
/// committed or not.
///
/// Guards against librdkafka handing out a message twice between two resyncs (each
/// resync starts afresh from the committed offsets): such a message is dropped here
/// rather than applied twice.
#[derive(Debug, Default)]
pub(crate) struct Positions(HashMap<String, HashMap<i32, i64>>);

impl Positions {
    /// Whether the message at `offset` is new; if it is, it counts as taken.
    pub(crate) fn admit(&mut self, topic: &str, partition: i32, offset: i64) -> bool {
        let partitions = match self.0.get_mut(topic) {
            Some(p) => p,
            None => self.0.entry(topic.to_string()).or_default(),
        };
        let next = partitions.entry(partition).or_insert(offset);
        if offset < *next {
            return false;
        }
        *next = offset + 1;
        true
    }

    /// The offset after the last message taken from this partition, if any was.
    pub(crate) fn next(&self, topic: &str, partition: i32) -> Option<i64> {
        self.0.get(topic)?.get(&partition).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_messages_redelivered_after_a_seek_back() {
        let mut taken = Positions::default();
        assert!((10..15).all(|o| taken.admit("t", 0, o)));
        // Re-assigned and sought back to the stored offset 12 while 12..15 were in flight.
        assert!((12..15).all(|o| !taken.admit("t", 0, o)));
        assert!(taken.admit("t", 0, 15));
    }

    #[test]
    fn tracks_each_partition_on_its_own() {
        let mut taken = Positions::default();
        assert!(taken.admit("t", 0, 100));
        assert!(
            taken.admit("t", 1, 3),
            "another partition starts where it starts"
        );
        assert!(taken.admit("u", 0, 0), "another topic too");
        assert!(!taken.admit("t", 1, 3));
        assert!(
            taken.admit("t", 0, 105),
            "a gap (compaction, aborted records) is fine"
        );
        assert!(!taken.admit("t", 0, 101));
    }
}
