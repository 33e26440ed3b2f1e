//! Ground truth that arrived before its prediction.
//!
//! Predictions and actuals are separate topics read by one consumer; nothing orders one
//! topic's messages against the other's, so after a lag, a restart or a rebalance an actual
//! can be read before the prediction it belongs to. It waits here (bounded, the oldest
//! dropped first) until that prediction arrives. Slots are numbered so the processor can
//! keep each one in RocksDB beside the offsets and this set is rebuilt exactly after a
//! crash.

use std::collections::{BTreeMap, HashMap};

use driftline_schemas::events::Actual;

#[derive(Debug, Default)]
pub struct EarlyActuals {
    slots: BTreeMap<u64, Actual>,
    /// (model, request id) -> slot
    index: HashMap<(String, String), u64>,
    next: u64,
    max: usize,
}

/// What [`EarlyActuals::hold`] changed.
#[derive(Debug, PartialEq)]
pub struct Held {
    pub slot: u64,
    /// Slots dropped: a replaced copy of the same actual, or the oldest beyond the bound.
    pub dropped: Vec<u64>,
}

impl EarlyActuals {
    /// Holds at most `max` actuals.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            ..Default::default()
        }
    }

    /// Rebuilds the set from its persisted slots.
    pub fn restore(max: usize, slots: impl IntoIterator<Item = (u64, Actual)>) -> Self {
        let mut s = Self::new(max);
        for (slot, a) in slots {
            s.index
                .insert((a.model.clone(), a.request_id.clone()), slot);
            s.slots.insert(slot, a);
            s.next = s.next.max(slot + 1);
        }
        s
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Keeps `actual` until its prediction comes.
    pub fn hold(&mut self, actual: Actual) -> Held {
        let slot = self.next;
        self.next += 1;
        let mut dropped = Vec::new();
        let key = (actual.model.clone(), actual.request_id.clone());
        if let Some(old) = self.index.insert(key, slot) {
            self.slots.remove(&old);
            dropped.push(old);
        }
        self.slots.insert(slot, actual);
        while self.slots.len() > self.max {
            if let Some((old, a)) = self.slots.pop_first() {
                self.index.remove(&(a.model, a.request_id));
                dropped.push(old);
            }
        }
        Held { slot, dropped }
    }

    /// The actual waiting for this prediction, with its slot.
    pub fn take(&mut self, model: &str, request_id: &str) -> Option<(u64, Actual)> {
        let slot = self
            .index
            .remove(&(model.to_string(), request_id.to_string()))?;
        self.slots.remove(&slot).map(|a| (slot, a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actual(id: &str) -> Actual {
        Actual {
            request_id: id.into(),
            model: "m".into(),
            event_time: 0,
            value: Some(1.0),
            class: None,
            observed_at: 0,
        }
    }

    #[test]
    fn an_actual_waits_for_its_prediction_and_is_taken_once() {
        let mut e = EarlyActuals::new(10);
        let held = e.hold(actual("a"));
        assert_eq!(held.dropped, Vec::<u64>::new());
        assert_eq!(
            e.take("m", "a").map(|(s, a)| (s, a.request_id)),
            Some((held.slot, "a".into()))
        );
        assert!(e.take("m", "a").is_none());
        assert!(e.take("other", "a").is_none());
    }

    #[test]
    fn the_oldest_is_dropped_past_the_bound_and_a_copy_replaces_its_twin() {
        let mut e = EarlyActuals::new(2);
        let a = e.hold(actual("a")).slot;
        let b = e.hold(actual("b")).slot;
        let c = e.hold(actual("c"));
        assert_eq!(c.dropped, vec![a]);
        let b2 = e.hold(actual("b"));
        assert_eq!(b2.dropped, vec![b]);
        assert_eq!(e.len(), 2);
        assert!(e.take("m", "a").is_none());
    }

    #[test]
    fn a_restored_set_continues_numbering_after_its_slots() {
        let e = EarlyActuals::restore(5, [(3, actual("x")), (7, actual("y"))]);
        let mut e = e;
        assert_eq!(e.hold(actual("z")).slot, 8);
        assert_eq!(e.take("m", "x").map(|(s, _)| s), Some(3));
    }
}
