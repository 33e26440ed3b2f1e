//! The current window of one model version: the last N events (and, optionally, only those
//! within T of the newest event time), with one [`Tracker`] per reference feature updated
//! as events enter and leave. Memory is the ring (one f64 per event and feature) plus the
//! trackers, bounded by N whatever happens.

use std::collections::VecDeque;
use std::ops::Range;

use driftline_drift::frame::{as_label, as_number};
use driftline_drift::multivariate::Reconstructor;
use driftline_schemas::events::{FeatureKind, FeatureProfile, FeatureValue, Reconstruction};
use serde::{Deserialize, Serialize};

use crate::tracker::{FeatureStats, Fixed, Tracker};

/// How big the window is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowConfig {
    /// Most events in the window (count-based window; also the memory bound).
    pub max_events: usize,
    /// Also drop events older than this, in event time, behind the newest event seen
    /// (time-based window).
    pub max_age_ms: Option<i64>,
    /// Quantile bins of the reference for PSI and Jensen-Shannon.
    pub bins: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            max_events: 10_000,
            max_age_ms: None,
            bins: 10,
        }
    }
}

/// One prediction as the window keeps it: its event time, a value per window feature, in
/// [`Window::names`] order, and its share of the estimate before labels when the version
/// has an estimator: its chance of being right (accuracy, CBPE) or its expected absolute
/// error (mae, DLE).
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub event_time: i64,
    pub values: Vec<FeatureValue>,
    pub expected: Option<f64>,
}

/// The current window.
#[derive(Debug, Clone)]
pub struct Window {
    config: WindowConfig,
    names: Vec<String>,
    trackers: Vec<Tracker>,
    times: VecDeque<i64>,
    /// Flat: one f64 per feature per event (a categorical's label id; NaN when missing).
    cells: VecDeque<f64>,
    first_seq: u64,
    newest_time: i64,
    multivariate: Option<Multivariate>,
    estimate: Option<Expected>,
}

/// The estimate's part of the window: each event's expected value (NaN when it had none) and their sum in fixed point, exact as the reconstruction errors'.
#[derive(Debug, Clone, Default)]
struct Expected {
    values: VecDeque<f64>,
    sum: Fixed,
    count: usize,
}

/// The multivariate check's part of the window: each event's reconstruction error, and
/// their sum in fixed point so that it is exact whatever the order of adds and removes
/// (a restored window sums to the same bits).
#[derive(Debug, Clone)]
struct Multivariate {
    reconstructor: Reconstructor,
    /// The reconstruction's column names, in its order.
    names: Vec<String>,
    /// For each reconstruction column, the window feature it reads (`None`: not in the
    /// profiles, read as missing).
    columns: Vec<Option<usize>>,
    errors: VecDeque<f64>,
    sum: Fixed,
    scratch: Vec<f64>,
}

impl Window {
    /// An empty window over the reference `profiles` (features in their order).
    pub fn new(profiles: &[FeatureProfile], config: WindowConfig) -> Self {
        Self {
            names: profiles.iter().map(|p| p.name.clone()).collect(),
            trackers: profiles
                .iter()
                .map(|p| Tracker::new(p, config.bins))
                .collect(),
            config,
            times: VecDeque::new(),
            cells: VecDeque::new(),
            first_seq: 0,
            newest_time: i64::MIN,
            multivariate: None,
            estimate: None,
        }
    }

    /// The same window, also keeping each event's reconstruction error against
    /// `reference` (none: no multivariate check). Set before the first push.
    pub fn with_multivariate(mut self, reference: Option<&Reconstruction>) -> Self {
        self.multivariate = reference.map(|r| Multivariate {
            reconstructor: Reconstructor::new(r),
            names: r.columns.iter().map(|c| c.name.clone()).collect(),
            columns: r
                .columns
                .iter()
                .map(|c| self.names.iter().position(|n| *n == c.name))
                .collect(),
            errors: VecDeque::new(),
            sum: Fixed::default(),
            scratch: Vec::new(),
        });
        self
    }

    /// The same window, also keeping each event's expected value (for the estimate before
    /// labels) when `estimate`. Set before the first push.
    pub fn with_estimate(mut self, estimate: bool) -> Self {
        self.estimate = estimate.then(Expected::default);
        self
    }

    /// The same empty window, its first stored event numbered `first_seq` and the newest
    /// event time seen `newest_time` (a restored window); fill it with [`Window::push`] in
    /// order.
    pub fn resumed_at(mut self, first_seq: u64, newest_time: i64) -> Self {
        debug_assert!(self.is_empty(), "a window resumes before its first push");
        self.first_seq = first_seq;
        self.newest_time = newest_time;
        self
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn kinds(&self) -> impl Iterator<Item = FeatureKind> + '_ {
        self.trackers.iter().map(Tracker::kind)
    }

    pub fn config(&self) -> &WindowConfig {
        &self.config
    }

    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Sequence number of the oldest event in the window.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Sequence number the next event gets (events ever pushed, for a fresh window).
    pub fn next_seq(&self) -> u64 {
        self.first_seq + self.times.len() as u64
    }

    pub fn start_time(&self) -> Option<i64> {
        self.times.front().copied()
    }

    pub fn newest_time(&self) -> i64 {
        self.newest_time
    }

    /// Adds an event and evicts what falls out; returns the evicted sequence numbers
    /// (always the oldest ones, so a range).
    pub fn push(&mut self, event: &Observation) -> Range<u64> {
        if let Some(m) = &mut self.multivariate {
            let cols = &m.columns;
            let e = m.reconstructor.error(&mut m.scratch, |j| {
                cols[j].and_then(|i| event.values.get(i))
            });
            m.errors.push_back(e);
            m.sum.add(e);
        }
        if let Some(c) = &mut self.estimate {
            let expected = event.expected.filter(|x| x.is_finite());
            if let Some(x) = expected {
                c.sum.add(x);
                c.count += 1;
            }
            c.values.push_back(expected.unwrap_or(f64::NAN));
        }
        for (i, t) in self.trackers.iter_mut().enumerate() {
            let v = event.values.get(i).unwrap_or(&FeatureValue::Missing);
            let cell = match t {
                Tracker::Numeric(n) => {
                    let x = as_number(v);
                    n.update(x, true);
                    x.unwrap_or(f64::NAN)
                }
                Tracker::Categorical(c) => {
                    let id = c.add(as_label(v).as_deref());
                    id.map_or(f64::NAN, f64::from)
                }
            };
            self.cells.push_back(cell);
        }
        self.times.push_back(event.event_time);
        self.newest_time = self.newest_time.max(event.event_time);
        let start = self.first_seq;
        while self.times.len() > self.config.max_events || self.too_old() {
            self.evict_oldest();
        }
        start..self.first_seq
    }

    fn too_old(&self) -> bool {
        match (self.config.max_age_ms, self.times.front()) {
            (Some(age), Some(t)) => *t < self.newest_time.saturating_sub(age),
            _ => false,
        }
    }

    fn evict_oldest(&mut self) {
        if self.times.pop_front().is_none() {
            return;
        }
        if let Some(m) = &mut self.multivariate
            && let Some(e) = m.errors.pop_front()
        {
            m.sum.sub(e);
        }
        if let Some(c) = &mut self.estimate
            && let Some(x) = c.values.pop_front()
            && !x.is_nan()
        {
            c.sum.sub(x);
            c.count -= 1;
        }
        for t in self.trackers.iter_mut() {
            let cell = self.cells.pop_front().unwrap_or(f64::NAN);
            let present = (!cell.is_nan()).then_some(cell);
            match t {
                Tracker::Numeric(n) => n.update(present, false),
                Tracker::Categorical(c) => c.remove(present.map(|x| x as u32)),
            }
        }
        self.first_seq += 1;
    }

    /// The mean reconstruction error of the window's events, when it keeps them and is
    /// not empty.
    pub fn reconstruction_error(&self) -> Option<f64> {
        let m = self.multivariate.as_ref()?;
        (!m.errors.is_empty()).then(|| m.sum.value() / m.errors.len() as f64)
    }

    /// The window's estimate before labels (the mean expected value of the events that
    /// have one: accuracy or mean absolute error) and how many events it is over; `None`
    /// when the window keeps none or none of its events has one.
    pub fn estimated_mean(&self) -> Option<(f64, usize)> {
        let c = self.estimate.as_ref()?;
        (c.count > 0).then(|| (c.sum.value() / c.count as f64, c.count))
    }

    /// Which columns carry the window's reconstruction error: each column's share of the
    /// summed squared residuals, largest first. Rescores every event from the cells the
    /// window keeps (about 10 ms for 100k events of 13 features), so the monitor asks
    /// only when the check fired.
    pub fn reconstruction_contributions(&self) -> Option<Vec<(String, f64)>> {
        let m = self.multivariate.as_ref()?;
        let rec = &m.reconstructor;
        let width = self.trackers.len();
        // A categorical column's encoded value per tracker label id.
        let by_id: Vec<Vec<f64>> = m
            .columns
            .iter()
            .enumerate()
            .map(|(j, source)| match source.map(|i| &self.trackers[i]) {
                Some(Tracker::Categorical(c)) => c
                    .labels()
                    .iter()
                    .map(|l| rec.encode_label(j, Some(l)))
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        let mut sums = vec![0.0; m.columns.len()];
        let mut encoded = vec![0.0; m.columns.len()];
        for event in 0..self.len() {
            for (j, source) in m.columns.iter().enumerate() {
                let cell = source
                    .map(|i| self.cells[event * width + i])
                    .filter(|x| !x.is_nan());
                encoded[j] = match rec.kind(j) {
                    FeatureKind::Numeric => rec.encode_number(j, cell),
                    FeatureKind::Categorical => match cell {
                        Some(id) => by_id[j].get(id as usize).copied().unwrap_or(0.0),
                        None => rec.encode_label(j, None),
                    },
                };
            }
            rec.add_squared_residuals(&mut encoded, &mut sums);
        }
        let total: f64 = sums.iter().sum();
        let mut out: Vec<(String, f64)> = m
            .names
            .iter()
            .cloned()
            .zip(
                sums.iter()
                    .map(|s| if total > 0.0 { s / total } else { 0.0 }),
            )
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        Some(out)
    }

    /// Every feature's statistics against its reference, in [`Window::names`] order.
    pub fn stats(&self) -> Vec<FeatureStats> {
        self.trackers.iter().map(Tracker::stats).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles() -> Vec<FeatureProfile> {
        vec![
            FeatureProfile {
                name: "x".into(),
                kind: FeatureKind::Numeric,
                count: 100,
                missing: 0,
                sample: (0..100).map(f64::from).collect(),
                categories: Default::default(),
                sub_windows: Vec::new(),
            },
            FeatureProfile {
                name: "c".into(),
                kind: FeatureKind::Categorical,
                count: 2,
                missing: 0,
                sample: vec![],
                categories: [("a".to_string(), 1), ("b".to_string(), 1)].into(),
                sub_windows: Vec::new(),
            },
        ]
    }

    fn event(t: i64, x: f64, c: &str) -> Observation {
        Observation {
            event_time: t,
            values: vec![FeatureValue::Number(x), FeatureValue::Category(c.into())],
            expected: None,
        }
    }

    #[test]
    fn count_window_keeps_the_last_n_events() {
        let mut w = Window::new(
            &profiles(),
            WindowConfig {
                max_events: 3,
                ..Default::default()
            },
        );
        for i in 0..3 {
            assert_eq!(w.push(&event(i, i as f64, "a")), 0..0);
        }
        assert_eq!(w.push(&event(3, 3.0, "b")), 0..1);
        assert_eq!((w.len(), w.first_seq(), w.next_seq()), (3, 1, 4));
        assert_eq!(w.stats()[0].current_count, 3);
    }

    #[test]
    fn the_estimate_is_the_mean_expected_value_of_the_events_in_the_window() {
        let mut w = Window::new(
            &profiles(),
            WindowConfig {
                max_events: 3,
                ..Default::default()
            },
        )
        .with_estimate(true);
        assert_eq!(w.estimated_mean(), None);
        let scored = |t: i64, expected: Option<f64>| Observation {
            expected,
            ..event(t, 1.0, "a")
        };
        for (t, c) in [(0, Some(0.1)), (1, Some(0.9)), (2, None), (3, Some(0.6))] {
            w.push(&scored(t, c));
        }
        // 0.1 left with the first event; the one without a value does not count.
        assert_eq!(w.estimated_mean(), Some((0.75, 2)));
        let plain = Window::new(&profiles(), WindowConfig::default());
        assert_eq!(plain.estimated_mean(), None);
    }

    #[test]
    fn time_window_drops_events_older_than_the_age_behind_the_newest() {
        let cfg = WindowConfig {
            max_events: 100,
            max_age_ms: Some(10),
            bins: 10,
        };
        let mut w = Window::new(&profiles(), cfg);
        for t in [0, 5, 9] {
            w.push(&event(t, 1.0, "a"));
        }
        assert_eq!(w.push(&event(16, 1.0, "a")), 0..2);
        assert_eq!(w.start_time(), Some(9));
    }

    #[test]
    fn a_resumed_window_has_the_same_statistics() {
        let cfg = WindowConfig {
            max_events: 50,
            ..Default::default()
        };
        let events: Vec<Observation> = (0..120)
            .map(|i| {
                event(
                    i,
                    (i * 7 % 130) as f64,
                    ["a", "a", "b", "z"][i as usize % 4],
                )
            })
            .collect();
        // x twice: one component (2/3 of the variance) is kept, so rows have an error.
        let pca = driftline_drift::multivariate::fit(
            &[
                ("x", FeatureKind::Numeric),
                ("x", FeatureKind::Numeric),
                ("c", FeatureKind::Categorical),
            ],
            events.len(),
            |i, j| &events[i].values[j.saturating_sub(1)],
        );
        assert!(pca.is_some());
        let mut w = Window::new(&profiles(), cfg).with_multivariate(pca.as_ref());
        events.iter().for_each(|e| {
            w.push(e);
        });
        let mut r = Window::new(&profiles(), cfg)
            .with_multivariate(pca.as_ref())
            .resumed_at(w.first_seq(), w.newest_time());
        events[w.first_seq() as usize..].iter().for_each(|e| {
            r.push(e);
        });
        assert_eq!(r.stats(), w.stats());
        assert_eq!(r.next_seq(), w.next_seq());
        // The same events in the window, the same bits (fixed point, not a running float).
        let e = w.reconstruction_error().unwrap();
        assert!(e > 0.0);
        assert_eq!(r.reconstruction_error().unwrap().to_bits(), e.to_bits());
    }
}
