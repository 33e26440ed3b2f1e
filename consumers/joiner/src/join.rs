//! The join itself, pure: predictions and actuals in, [`Labelled`] rows out, with the one
//! rule for how long a half waits for its other half.
//!
//! A half waits (keyed by model and request id) until its other half arrives, whichever
//! comes first. It is given up on when
//! - **age** (predictions only): its model's actuals have moved past it, in event time, by
//!   more than [`Limits::max_wait_ms`]: the ground truth has moved on without it. Event
//!   time, not the wall clock, so a replay of last year ages on its own clock and a stopped
//!   stream evicts nothing; the actuals' clock, so a joiner catching up on a backlog, which
//!   may read the predictions far ahead of the actuals, does not evict predictions whose
//!   actuals it has not read yet. The predictions' clock evicts no actual: predictions of
//!   one model come from every partition of the requests, served in parallel, and after a
//!   predictor restart one partition's predictions can run days of event time ahead of
//!   another's (the fault suite lost 21,331 of 100,000 pairs that way). A waiting actual
//!   goes only by the count bound.
//! - **count**: more than [`Limits::max_waiting`] halves wait from one input partition (the
//!   oldest in event time goes first), so memory is bounded whatever the input. Per
//!   partition, so that an eviction changes only the partition whose message caused it:
//!   its changelog record goes to that partition, and the state moves with it to whichever
//!   instance owns it next.
//!
//! A request joins once: the ids of the newest [`Limits::max_waiting`] joined rows are
//! remembered, and a half that arrives again for one of them (a re-sent prediction, a
//! duplicated actual) is a counted duplicate, not a second row.
//!
//! Nothing here does I/O: [`Join::add`] says what changed ([`Step`]) and the processor
//! persists exactly that, so [`Join::restore`] rebuilds this state after a crash.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use driftline_schemas::events::{
    Actual, Labelled, PredictionLogged, PredictionSource, SourcePosition,
};

/// One side of the join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Half {
    Prediction,
    Actual,
}

impl Half {
    fn index(self) -> usize {
        self as usize
    }

    fn other(self) -> Half {
        match self {
            Half::Prediction => Half::Actual,
            Half::Actual => Half::Prediction,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Half::Prediction => "prediction",
            Half::Actual => "actual",
        }
    }
}

/// A half read from its topic, with where it was read.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Prediction(PredictionLogged, SourcePosition),
    Actual(Actual, SourcePosition),
}

impl Input {
    pub fn half(&self) -> Half {
        match self {
            Input::Prediction(..) => Half::Prediction,
            Input::Actual(..) => Half::Actual,
        }
    }

    pub fn model(&self) -> &str {
        match self {
            Input::Prediction(p, _) => &p.model,
            Input::Actual(a, _) => &a.model,
        }
    }

    pub fn request_id(&self) -> &str {
        match self {
            Input::Prediction(p, _) => &p.request_id,
            Input::Actual(a, _) => &a.request_id,
        }
    }

    pub fn event_time(&self) -> i64 {
        match self {
            Input::Prediction(p, _) => p.event_time,
            Input::Actual(a, _) => a.event_time,
        }
    }

    /// The input partition it was read from (a model's predictions and actuals share it).
    fn partition(&self) -> i32 {
        match self {
            Input::Prediction(_, at) | Input::Actual(_, at) => at.partition,
        }
    }

    /// Whether this half's event time is the data's clock (see the module docs).
    fn moves_clock(&self) -> bool {
        match self {
            Input::Prediction(p, _) => p.source == PredictionSource::Kafka,
            Input::Actual(..) => true,
        }
    }
}

/// How long and how many halves wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Event time (ms) the other topic may run past a waiting half before it is evicted.
    pub max_wait_ms: i64,
    /// Most halves waiting per input partition, and most joined ids remembered.
    pub max_waiting: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_wait_ms: defaults::MAX_WAIT_MS,
            max_waiting: defaults::MAX_WAITING,
        }
    }
}

pub mod defaults {
    /// A week of event time: well above the label delays the seed data sets have.
    pub const MAX_WAIT_MS: i64 = 7 * 24 * 3_600_000;
    pub const MAX_WAITING: usize = 200_000;
}

/// A model and request id: what pairs two halves.
pub type Key = (String, String);

/// Why a waiting half was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Eviction {
    Age,
    Count,
    /// A newer copy of the same half replaced it.
    Replaced,
}

impl Eviction {
    pub fn name(self) -> &'static str {
        match self {
            Eviction::Age => "age",
            Eviction::Count => "count",
            Eviction::Replaced => "replaced",
        }
    }
}

/// What one [`Join::add`] changed, for the processor to persist and count.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Step {
    /// The row made, when this half found its other half.
    pub joined: Option<Labelled>,
    /// Whether the input now waits (under its half and key).
    pub waits: bool,
    /// The input's request was joined before: nothing else changed.
    pub duplicate: bool,
    /// Waiting halves removed: the one that joined, or those evicted (with why).
    pub removed: Vec<(Half, Key, Option<Eviction>)>,
    /// Joined ids no longer remembered.
    pub forgotten: Vec<Key>,
    /// A clock moved: (model, newest event time per half).
    pub clock: Option<(String, Clocks)>,
}

/// The newest event time seen per half of one model (indexed by [`Half`]).
pub type Clocks = [Option<i64>; 2];

#[derive(Debug, Default)]
pub struct Join {
    limits: Limits,
    waiting: HashMap<(Half, Key), Input>,
    /// Per model and half, the waiting keys by event time (for the age rule).
    by_model: HashMap<String, [BTreeSet<(i64, String)>; 2]>,
    /// Per input partition, its waiting halves by event time (for the count rule).
    by_time: HashMap<i32, BTreeSet<(i64, Half, Key)>>,
    clocks: HashMap<String, Clocks>,
    joined: HashMap<Key, u64>,
    joined_order: BTreeMap<u64, Key>,
    next_joined: u64,
}

impl Join {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits: Limits {
                max_wait_ms: limits.max_wait_ms.max(0),
                max_waiting: limits.max_waiting.max(1),
            },
            ..Self::default()
        }
    }

    /// Rebuilds the state the persisted changes describe.
    pub fn restore(
        limits: Limits,
        waiting: impl IntoIterator<Item = Input>,
        clocks: impl IntoIterator<Item = (String, Clocks)>,
        joined: impl IntoIterator<Item = (u64, Key)>,
    ) -> Self {
        let mut j = Self::new(limits);
        for input in waiting {
            j.wait(input);
        }
        j.clocks = clocks.into_iter().collect();
        for (seq, key) in joined {
            j.joined.insert(key.clone(), seq);
            j.joined_order.insert(seq, key);
            j.next_joined = j.next_joined.max(seq + 1);
        }
        j
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Halves waiting, per half.
    pub fn waiting(&self) -> [usize; 2] {
        let mut n = [0, 0];
        for (half, _) in self.waiting.keys() {
            n[half.index()] += 1;
        }
        n
    }

    /// Adds one half: joins it with its waiting other half, or makes it wait.
    pub fn add(&mut self, input: Input) -> Step {
        let half = input.half();
        let key: Key = (input.model().to_string(), input.request_id().to_string());
        let mut step = Step::default();
        if self.joined.contains_key(&key) {
            step.duplicate = true;
            return step;
        }
        if input.moves_clock() {
            self.tick(&key.0, half, input.event_time(), &mut step);
        }
        match self.take(half.other(), &key) {
            Some(other) => {
                step.removed.push((half.other(), key.clone(), None));
                let (prediction, actual) = match (input, other) {
                    (Input::Prediction(p, pa), Input::Actual(a, aa))
                    | (Input::Actual(a, aa), Input::Prediction(p, pa)) => ((p, pa), (a, aa)),
                    _ => unreachable!("a half is paired only with the other half"),
                };
                step.joined = Some(Labelled {
                    prediction: prediction.0,
                    actual: actual.0,
                    prediction_read_at: prediction.1,
                    actual_read_at: actual.1,
                });
                self.remember(key, &mut step);
            }
            None => {
                if self.take(half, &key).is_some() {
                    step.removed
                        .push((half, key.clone(), Some(Eviction::Replaced)));
                }
                let partition = input.partition();
                self.wait(input);
                step.waits = true;
                while let Some(waiting) = self.by_time.get(&partition)
                    && waiting.len() > self.limits.max_waiting
                {
                    let Some((_, h, k)) = waiting.first().cloned() else {
                        break;
                    };
                    self.take(h, &k);
                    step.removed.push((h, k, Some(Eviction::Count)));
                }
            }
        }
        step
    }

    /// Moves `half`'s clock of `model` and evicts the other half's entries it has passed.
    fn tick(&mut self, model: &str, half: Half, event_time: i64, step: &mut Step) {
        let clocks = self.clocks.entry(model.to_string()).or_default();
        let clock = &mut clocks[half.index()];
        if clock.is_some_and(|c| c >= event_time) {
            return;
        }
        *clock = Some(event_time);
        step.clock = Some((model.to_string(), *clocks));
        if half == Half::Prediction {
            // See the module's doc: the predictions' clock is no watermark.
            return;
        }
        let cutoff = event_time.saturating_sub(self.limits.max_wait_ms);
        let Some(sets) = self.by_model.get_mut(model) else {
            return;
        };
        let waiting = &mut sets[half.other().index()];
        // Strictly older than the cutoff: everything before (cutoff, "").
        let keep = waiting.split_off(&(cutoff, String::new()));
        let old = std::mem::replace(waiting, keep);
        for (_, id) in old {
            let key = (model.to_string(), id);
            self.take(half.other(), &key);
            step.removed.push((half.other(), key, Some(Eviction::Age)));
        }
    }

    fn wait(&mut self, input: Input) {
        let half = input.half();
        let t = input.event_time();
        let key: Key = (input.model().to_string(), input.request_id().to_string());
        self.by_model.entry(key.0.clone()).or_default()[half.index()].insert((t, key.1.clone()));
        self.by_time
            .entry(input.partition())
            .or_default()
            .insert((t, half, key.clone()));
        self.waiting.insert((half, key), input);
    }

    fn take(&mut self, half: Half, key: &Key) -> Option<Input> {
        let input = self.waiting.remove(&(half, key.clone()))?;
        let t = input.event_time();
        if let Some(sets) = self.by_model.get_mut(&key.0) {
            sets[half.index()].remove(&(t, key.1.clone()));
        }
        if let Some(waiting) = self.by_time.get_mut(&input.partition()) {
            waiting.remove(&(t, half, key.clone()));
        }
        Some(input)
    }

    fn remember(&mut self, key: Key, step: &mut Step) {
        let seq = self.next_joined;
        self.next_joined += 1;
        self.joined.insert(key.clone(), seq);
        self.joined_order.insert(seq, key);
        while self.joined.len() > self.limits.max_waiting {
            let Some((_, old)) = self.joined_order.pop_first() else {
                break;
            };
            self.joined.remove(&old);
            step.forgotten.push(old);
        }
    }

    /// The sequence number a joined id is remembered under (for persisting it).
    pub fn joined_seq(&self, key: &Key) -> Option<u64> {
        self.joined.get(key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftline_schemas::events::Prediction;

    const HOUR: i64 = 3_600_000;

    fn prediction(id: &str, t: i64) -> Input {
        Input::Prediction(
            PredictionLogged {
                request_id: id.into(),
                model: "m".into(),
                model_version: 1,
                event_time: t,
                features: Default::default(),
                prediction: Prediction {
                    value: Some(1.0),
                    ..Default::default()
                },
                served_at: t,
                latency_us: 0,
                source: PredictionSource::Kafka,
                shadow: None,
            },
            SourcePosition {
                topic: "p".into(),
                partition: 0,
                offset: t,
            },
        )
    }

    fn actual(id: &str, t: i64) -> Input {
        Input::Actual(
            Actual {
                request_id: id.into(),
                model: "m".into(),
                event_time: t,
                value: Some(2.0),
                class: None,
                observed_at: t,
            },
            SourcePosition {
                topic: "a".into(),
                partition: 0,
                offset: t,
            },
        )
    }

    fn limits(max_wait_ms: i64, max_waiting: usize) -> Limits {
        Limits {
            max_wait_ms,
            max_waiting,
        }
    }

    #[test]
    fn a_late_actual_joins_its_waiting_prediction() {
        let mut j = Join::new(Limits::default());
        assert!(j.add(prediction("a", 0)).waits);
        let step = j.add(actual("a", 0));
        let row = step.joined.expect("joined");
        assert_eq!(row.prediction.request_id, "a");
        assert_eq!(row.actual.value, Some(2.0));
        assert_eq!(row.prediction_read_at.topic, "p");
        assert_eq!(row.actual_read_at.topic, "a");
        assert_eq!(
            step.removed,
            vec![(Half::Prediction, ("m".into(), "a".into()), None)]
        );
        assert_eq!(j.waiting(), [0, 0]);
    }

    #[test]
    fn an_early_actual_waits_for_its_prediction() {
        let mut j = Join::new(Limits::default());
        assert!(j.add(actual("a", 0)).waits);
        assert_eq!(j.waiting(), [0, 1]);
        let row = j.add(prediction("a", 0)).joined.expect("joined");
        assert_eq!(row.actual.request_id, "a");
        assert_eq!(j.waiting(), [0, 0]);
    }

    #[test]
    fn a_request_joins_once_and_a_repeat_is_a_duplicate() {
        let mut j = Join::new(Limits::default());
        j.add(prediction("a", 0));
        assert!(j.add(actual("a", 0)).joined.is_some());
        let again = j.add(prediction("a", 0));
        assert!(again.duplicate && again.joined.is_none() && !again.waits);
        assert!(j.add(actual("a", 0)).duplicate);
        assert_eq!(j.waiting(), [0, 0]);
    }

    #[test]
    fn a_prediction_is_evicted_once_the_actuals_move_past_it_by_the_bound() {
        let mut j = Join::new(limits(24 * HOUR, 100));
        j.add(prediction("old", 0));
        // The predictions' own clock running ahead evicts nothing (a backlog).
        j.add(prediction("new", 100 * HOUR));
        assert_eq!(j.waiting(), [2, 0]);
        let step = j.add(actual("x", 24 * HOUR));
        assert!(
            step.removed.is_empty(),
            "exactly the bound is still in time"
        );
        let step = j.add(actual("y", 24 * HOUR + 1));
        assert_eq!(
            step.removed,
            vec![(
                Half::Prediction,
                ("m".into(), "old".into()),
                Some(Eviction::Age)
            )]
        );
    }

    #[test]
    fn an_actual_waits_however_far_the_predictions_run_ahead() {
        let mut j = Join::new(limits(24 * HOUR, 100));
        j.add(actual("slow-partition", 0));
        let step = j.add(prediction("fast-partition", 100 * 24 * HOUR));
        assert!(step.removed.is_empty(), "{:?}", step.removed);
        assert!(j.add(prediction("slow-partition", 0)).joined.is_some());
    }

    #[test]
    fn an_http_prediction_moves_no_clock() {
        let mut j = Join::new(limits(HOUR, 100));
        j.add(actual("a", 0));
        let Input::Prediction(mut p, at) = prediction("h", 10 * HOUR) else {
            unreachable!()
        };
        p.source = PredictionSource::Http;
        let step = j.add(Input::Prediction(p, at));
        assert!(step.removed.is_empty() && step.clock.is_none());
        assert_eq!(j.waiting(), [1, 1]);
    }

    #[test]
    fn past_the_count_bound_the_oldest_half_goes_first() {
        let mut j = Join::new(limits(HOUR, 2));
        j.add(prediction("a", 5));
        j.add(actual("b", 1));
        let step = j.add(prediction("c", 9));
        assert_eq!(
            step.removed,
            vec![(
                Half::Actual,
                ("m".into(), "b".into()),
                Some(Eviction::Count)
            )]
        );
        assert_eq!(j.waiting(), [2, 0]);
    }

    /// The same half read from input partition `partition`.
    fn on(partition: i32, mut input: Input) -> Input {
        match &mut input {
            Input::Prediction(_, at) | Input::Actual(_, at) => at.partition = partition,
        }
        input
    }

    #[test]
    fn the_count_bound_evicts_only_from_the_partition_that_went_past_it() {
        let mut j = Join::new(limits(HOUR, 2));
        j.add(on(0, prediction("old", 1)));
        j.add(on(0, actual("older", 0)));
        j.add(on(3, prediction("x", 5)));
        let step = j.add(on(3, actual("y", 6)));
        assert!(
            step.removed.is_empty(),
            "two per partition: {:?}",
            step.removed
        );
        let step = j.add(on(3, prediction("z", 7)));
        assert_eq!(
            step.removed,
            vec![(
                Half::Prediction,
                ("m".into(), "x".into()),
                Some(Eviction::Count)
            )],
            "partition 3's oldest, not partition 0's older halves"
        );
        assert_eq!(j.waiting(), [2, 2]);
    }

    #[test]
    fn a_copy_of_a_waiting_half_replaces_it() {
        let mut j = Join::new(Limits::default());
        j.add(prediction("a", 0));
        let step = j.add(prediction("a", 3));
        assert!(step.waits);
        assert_eq!(
            step.removed,
            vec![(
                Half::Prediction,
                ("m".into(), "a".into()),
                Some(Eviction::Replaced)
            )]
        );
        assert_eq!(j.waiting(), [1, 0]);
        let row = j.add(actual("a", 3)).joined.unwrap();
        assert_eq!(row.prediction.event_time, 3);
    }

    #[test]
    fn joined_ids_are_remembered_up_to_the_bound() {
        let mut j = Join::new(limits(HOUR, 1));
        j.add(prediction("a", 0));
        j.add(actual("a", 0));
        j.add(prediction("b", 0));
        let step = j.add(actual("b", 0));
        assert_eq!(step.forgotten, vec![("m".to_string(), "a".to_string())]);
        assert!(!j.add(prediction("a", 0)).duplicate);
    }

    #[test]
    fn a_restored_join_continues_where_the_persisted_one_stood() {
        let mut j = Join::restore(
            limits(HOUR, 10),
            [prediction("a", 0)],
            [("m".to_string(), [Some(0), Some(0)])],
            [(4, ("m".to_string(), "z".to_string()))],
        );
        assert!(j.add(actual("a", 0)).joined.is_some());
        assert!(j.add(actual("z", 0)).duplicate);
        assert_eq!(j.joined_seq(&("m".into(), "a".into())), Some(5));
    }
}
