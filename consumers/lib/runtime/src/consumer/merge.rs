//! Co-partitioned inputs taken in timestamp order, so what a processor makes of two topics
//! depends on their logs, not on how the consumer's fetches happened to interleave them.
//!
//! Kafka orders each partition, not two against each other: after a crash, a rebalance or a
//! replay the consumer hands out partition n of one topic and of another in a different
//! interleaving. Kafka Streams picks, among a task's partitions, the head with the lowest
//! timestamp, and waits while a partition has nothing buffered (max.task.idle.ms). This does
//! the same for partition n of each merged topic: heads go in (timestamp, topic, offset)
//! order, and while one of them has nothing held, the others wait, unless that partition is
//! read to its end (`ended`: nothing more to read there now). On a log that is all written
//! (a replay, or a restart after a crash) that order is the log's own. Live, a partition
//! counts as ended once the consumer has read up to its high watermark, so a record
//! committed later with an older timestamp still goes after what was released before it.
//!
//! Produce times differ from run to run, so the interleaving above is the log's, not the
//! data's. With an [`EventTime`] order, heads go by the event time in their payloads
//! instead, and an ended partition still holds the others back for up to its `max_idle`
//! (Kafka Streams' max.task.idle.ms): live, where the inputs are always at their end,
//! the slower one (labelled pairs run behind predictions by the label delay) is waited
//! for, so what the processor sees follows from the two logs' contents whenever no input
//! stalls longer than that.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::message::OwnedMessage;

use super::TopicPartition;

/// A message's event time from its topic and payload (`None`: go by its timestamp).
pub type TimeOf = Arc<dyn Fn(&str, &[u8]) -> Option<i64> + Send + Sync>;

/// Whether a partition's next message may go now, from its topic, payload, event time
/// and how long it has been held; `false` holds it (and what comes after it in its
/// partition) until a later look. The gate bounds its own waits.
pub type Gate = Arc<dyn Fn(&str, &[u8], i64, Duration) -> bool + Send + Sync>;

/// Heads in the order of their event times, and how long to wait for a silent input.
#[derive(Clone)]
pub struct EventTime {
    pub time_of: TimeOf,
    /// How long a held message waits for an ended partition of its number to offer more.
    pub max_idle: Duration,
    /// Holds a head until something outside the inputs has caught up with its event time
    /// (the predictor waits for the versions in effect then).
    pub gate: Option<Gate>,
}

impl fmt::Debug for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventTime")
            .field("max_idle", &self.max_idle)
            .field("gate", &self.gate.is_some())
            .finish_non_exhaustive()
    }
}

/// A held message, the time it goes by and when it came.
#[derive(Debug, Clone)]
struct Held {
    m: OwnedMessage,
    time: i64,
    since: Instant,
}

/// Messages held back until every merged topic's partition has a head or has ended.
#[derive(Debug, Default)]
pub(crate) struct Merge {
    /// The merged topics, in the order ties go.
    topics: Vec<String>,
    /// Per partition number, a queue per merged topic.
    queues: BTreeMap<i32, Vec<VecDeque<Held>>>,
    held: usize,
    /// `None`: by timestamp, an ended partition holds nothing back.
    event_time: Option<EventTime>,
}

impl Merge {
    /// Merges `topics` (none: the loop takes messages as they come), by timestamp or by
    /// `event_time`.
    pub(crate) fn new(topics: Vec<String>, event_time: Option<EventTime>) -> Self {
        Self {
            topics,
            event_time,
            ..Self::default()
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.held == 0
    }

    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Drops everything held (a resync reads it again from the committed offsets).
    pub(crate) fn clear(&mut self) {
        self.queues.clear();
        self.held = 0;
    }

    /// Holds `m` if its topic is merged; hands it back otherwise.
    pub(crate) fn hold(&mut self, m: OwnedMessage) -> Option<OwnedMessage> {
        let Some(i) = self.topics.iter().position(|t| t == m.topic()) else {
            return Some(m);
        };
        let n = self.topics.len();
        let time = self
            .event_time
            .as_ref()
            .and_then(|e| (e.time_of)(&self.topics[i], m.payload().unwrap_or_default()))
            .unwrap_or_else(|| timestamp(&m));
        self.queues
            .entry(m.partition())
            .or_insert_with(|| vec![VecDeque::new(); n])[i]
            .push_back(Held {
                m,
                time,
                since: Instant::now(),
            });
        self.held += 1;
        None
    }

    /// The partitions that hold the others back: empty while a partition of the same
    /// number has messages waiting.
    pub(crate) fn blocking(&self) -> Vec<TopicPartition> {
        let mut out = Vec::new();
        for (p, queues) in &self.queues {
            if queues.iter().any(|q| !q.is_empty()) {
                for (i, q) in queues.iter().enumerate() {
                    if q.is_empty() {
                        out.push((self.topics[i].clone(), *p));
                    }
                }
            }
        }
        out
    }

    /// Releases up to `room` messages into `out`, in (time, topic, offset) order per
    /// partition number, while no empty queue of that number holds them back. An empty
    /// queue holds nothing back once `ended` says its partition is read to its end (by
    /// event time: and the oldest message held with it has waited `max_idle`). A head the
    /// gate holds stops its partition. `force` releases the oldest heads whatever is empty
    /// or gated (the bound on what is held).
    pub(crate) fn release(
        &mut self,
        ended: impl Fn(&str, i32) -> bool,
        force: bool,
        room: usize,
        out: &mut Vec<OwnedMessage>,
    ) {
        let mut released = 0;
        let max_idle = self.event_time.as_ref().map(|e| e.max_idle);
        let gate = self.event_time.as_ref().and_then(|e| e.gate.as_ref());
        for (p, queues) in self.queues.iter_mut() {
            while released < room {
                let waited = max_idle.is_none_or(|idle| {
                    queues
                        .iter()
                        .filter_map(|q| q.front())
                        .any(|h| h.since.elapsed() >= idle)
                });
                let held_back = queues
                    .iter()
                    .enumerate()
                    .any(|(i, q)| q.is_empty() && !(waited && ended(&self.topics[i], *p)));
                if held_back && !force {
                    break;
                }
                let Some(i) = (0..queues.len())
                    .filter(|i| !queues[*i].is_empty())
                    .min_by_key(|i| {
                        let h = &queues[*i][0];
                        (h.time, *i, h.m.offset())
                    })
                else {
                    break;
                };
                if let Some(gate) = gate {
                    let h = &queues[i][0];
                    let payload = h.m.payload().unwrap_or_default();
                    if !force && !gate(&self.topics[i], payload, h.time, h.since.elapsed()) {
                        break;
                    }
                }
                out.extend(queues[i].pop_front().map(|h| h.m));
                released += 1;
            }
        }
        self.held -= released;
        self.queues
            .retain(|_, queues| queues.iter().any(|q| !q.is_empty()));
    }
}

/// A message's timestamp (ms); one without goes first.
fn timestamp(m: &OwnedMessage) -> i64 {
    m.timestamp().to_millis().unwrap_or(i64::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn msg(topic: &str, partition: i32, offset: i64, ts: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            topic.into(),
            Timestamp::CreateTime(ts),
            partition,
            offset,
            None,
        )
    }

    fn merge() -> Merge {
        Merge::new(vec!["p".into(), "l".into()], None)
    }

    fn order(out: &[OwnedMessage]) -> Vec<(String, i64)> {
        out.iter()
            .map(|m| (m.topic().to_string(), m.offset()))
            .collect()
    }

    #[test]
    fn heads_go_in_timestamp_order_whatever_order_they_were_fetched_in() {
        let fetches = [
            vec![
                msg("p", 0, 0, 10),
                msg("p", 0, 1, 30),
                msg("l", 0, 0, 20),
                msg("l", 0, 1, 40),
            ],
            vec![
                msg("l", 0, 0, 20),
                msg("l", 0, 1, 40),
                msg("p", 0, 0, 10),
                msg("p", 0, 1, 30),
            ],
        ];
        let mut orders = Vec::new();
        for fetched in fetches {
            let mut m = merge();
            let mut out = Vec::new();
            for x in fetched {
                assert!(m.hold(x).is_none());
                m.release(|_, _| false, false, usize::MAX, &mut out);
            }
            // The last head waits for what may come after it on the other topic.
            assert_eq!(m.held(), 1);
            m.release(|_, _| true, false, usize::MAX, &mut out);
            orders.push(order(&out));
        }
        assert_eq!(orders[0], orders[1]);
        assert_eq!(
            orders[0],
            [
                ("p".into(), 0),
                ("l".into(), 0),
                ("p".into(), 1),
                ("l".into(), 1)
            ]
        );
    }

    #[test]
    fn by_event_time_heads_go_by_their_payloads_and_an_ended_input_is_waited_for() {
        let time_of: TimeOf =
            Arc::new(|_, payload| std::str::from_utf8(payload).ok()?.parse().ok());
        let order_by = EventTime {
            time_of,
            max_idle: Duration::from_millis(300),
            gate: None,
        };
        let mut m = Merge::new(vec!["p".into(), "l".into()], Some(order_by));
        let at = |topic: &str, offset, produced, time: i64| {
            OwnedMessage::new(
                Some(time.to_string().into_bytes()),
                None,
                topic.into(),
                Timestamp::CreateTime(produced),
                0,
                offset,
                None,
            )
        };
        // Produced l first, but p's event time is earlier.
        m.hold(at("p", 0, 50, 10));
        m.hold(at("l", 0, 5, 20));
        m.hold(at("p", 1, 60, 30));
        let mut out = Vec::new();
        m.release(|_, _| true, false, usize::MAX, &mut out);
        assert_eq!(
            order(&out),
            [("p".into(), 0), ("l".into(), 0)],
            "p at 30 waits: l has ended, but not for long"
        );
        std::thread::sleep(Duration::from_millis(350));
        m.release(|_, _| true, false, usize::MAX, &mut out);
        assert_eq!(out.len(), 3, "after max_idle it goes without l");
    }

    #[test]
    fn a_gated_head_holds_its_partition_until_the_gate_opens_and_other_partitions_go_on() {
        let open_until = Arc::new(std::sync::atomic::AtomicI64::new(10));
        let gate: Gate = {
            let open_until = open_until.clone();
            Arc::new(move |_, _, time, _| {
                time <= open_until.load(std::sync::atomic::Ordering::SeqCst)
            })
        };
        let time_of: TimeOf =
            Arc::new(|_, payload| std::str::from_utf8(payload).ok()?.parse().ok());
        let mut m = Merge::new(
            vec!["r".into()],
            Some(EventTime {
                time_of,
                max_idle: Duration::ZERO,
                gate: Some(gate),
            }),
        );
        let at = |partition, offset, time: i64| {
            OwnedMessage::new(
                Some(time.to_string().into_bytes()),
                None,
                "r".into(),
                Timestamp::CreateTime(0),
                partition,
                offset,
                None,
            )
        };
        // Partition 0: 5 may go, 20 is held, and 8 behind it waits with it (its order).
        m.hold(at(0, 0, 5));
        m.hold(at(0, 1, 20));
        m.hold(at(0, 2, 8));
        m.hold(at(1, 0, 9));
        let mut out = Vec::new();
        m.release(|_, _| true, false, usize::MAX, &mut out);
        let taken = |out: &[OwnedMessage]| -> Vec<(i32, i64)> {
            out.iter().map(|m| (m.partition(), m.offset())).collect()
        };
        assert_eq!(taken(&out), [(0, 0), (1, 0)]);
        open_until.store(20, std::sync::atomic::Ordering::SeqCst);
        m.release(|_, _| true, false, usize::MAX, &mut out);
        assert_eq!(taken(&out), [(0, 0), (1, 0), (0, 1), (0, 2)]);
        assert!(m.is_empty());
        // The bound on what is held overrides the gate.
        m.hold(at(0, 3, 99));
        m.release(|_, _| true, true, usize::MAX, &mut out);
        assert!(m.is_empty());
    }

    #[test]
    fn a_tie_goes_to_the_first_topic_then_the_lower_offset() {
        let mut m = merge();
        let mut out = Vec::new();
        for x in [msg("l", 0, 7, 5), msg("p", 0, 3, 5), msg("p", 0, 4, 5)] {
            m.hold(x);
        }
        m.release(|_, _| true, false, usize::MAX, &mut out);
        assert_eq!(
            order(&out),
            [("p".into(), 3), ("p".into(), 4), ("l".into(), 7)]
        );
    }

    #[test]
    fn an_empty_partition_holds_back_only_its_own_number_until_it_has_ended() {
        let mut m = merge();
        let mut out = Vec::new();
        m.hold(msg("p", 0, 0, 10));
        m.hold(msg("p", 1, 0, 10));
        m.hold(msg("l", 1, 0, 20));
        m.release(|_, _| false, false, usize::MAX, &mut out);
        assert_eq!(
            order(&out),
            [("p".into(), 0)],
            "partition 1's p goes, 0's waits"
        );
        assert_eq!(out[0].partition(), 1);
        assert_eq!(m.blocking(), [("l".to_string(), 0), ("p".to_string(), 1)]);
        m.release(|t, p| t == "l" && p == 0, false, usize::MAX, &mut out);
        assert_eq!(
            out.len(),
            2,
            "l 0 has ended: p 0 goes; l 1 still waits for p 1"
        );
        assert_eq!(m.held(), 1);
    }

    #[test]
    fn forced_the_oldest_heads_go_and_room_bounds_a_release() {
        let mut m = merge();
        let mut out = Vec::new();
        for o in 0..5 {
            m.hold(msg("p", 0, o, o));
        }
        m.release(|_, _| false, true, 3, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(m.held(), 2);
        m.hold(msg("x", 0, 0, 0))
            .expect("a topic not merged is handed back");
        m.clear();
        assert!(m.is_empty() && m.blocking().is_empty());
    }
}
