//! Error metrics over the last N predictions whose actuals have arrived, next to the
//! model's holdout metrics. Sums are fixed-point ([`Fixed`]) so eviction is exact.

use std::collections::{BTreeMap, VecDeque};

pub use driftline_model::Joined;
use driftline_schemas::events::MetricComparison;

use crate::tracker::Fixed;

use driftline_model::joined::EPS;

#[derive(Debug, Clone, Default)]
pub struct PerformanceWindow {
    max: usize,
    ring: VecDeque<Joined>,
    abs: Fixed,
    sq: Fixed,
    ape: Fixed,
    ape_n: u64,
    regression: u64,
    correct: u64,
    log_loss: Fixed,
    classification: u64,
    first_seq: u64,
}

impl PerformanceWindow {
    pub fn new(max: usize, first_seq: u64) -> Self {
        Self {
            max,
            first_seq,
            ..Default::default()
        }
    }

    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    pub fn next_seq(&self) -> u64 {
        self.first_seq + self.ring.len() as u64
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    fn apply(&mut self, j: &Joined, add: bool) {
        let step = |c: &mut u64| if add { *c += 1 } else { *c -= 1 };
        let acc = |f: &mut Fixed, x: f64| if add { f.add(x) } else { f.sub(x) };
        match *j {
            Joined::Regression { predicted, actual } => {
                let e = predicted - actual;
                step(&mut self.regression);
                acc(&mut self.abs, e.abs());
                acc(&mut self.sq, e * e);
                if actual.abs() >= 1e-9 {
                    step(&mut self.ape_n);
                    acc(&mut self.ape, (e / actual).abs());
                }
            }
            Joined::Classification { correct, p_true } => {
                step(&mut self.classification);
                if correct {
                    step(&mut self.correct);
                }
                acc(&mut self.log_loss, -p_true.clamp(EPS, 1.0 - EPS).ln());
            }
        }
    }

    /// Adds a joined pair; returns the evicted sequence numbers.
    pub fn push(&mut self, j: Joined) -> std::ops::Range<u64> {
        if let Joined::Regression { predicted, actual } = j
            && !(predicted.is_finite() && actual.is_finite())
        {
            return self.first_seq..self.first_seq;
        }
        self.apply(&j, true);
        self.ring.push_back(j);
        let start = self.first_seq;
        while self.ring.len() > self.max {
            if let Some(old) = self.ring.pop_front() {
                self.apply(&old, false);
                self.first_seq += 1;
            }
        }
        start..self.first_seq
    }

    /// Joined predictions in the window.
    pub fn rows(&self) -> u64 {
        self.regression + self.classification
    }

    /// `mae`, `rmse`, `mape` (a fraction) for regression; `accuracy`, `log_loss` for
    /// classification (the trainer's definitions).
    pub fn metrics(&self) -> BTreeMap<&'static str, f64> {
        let mut m = BTreeMap::new();
        if self.regression > 0 {
            let n = self.regression as f64;
            m.insert("mae", self.abs.value() / n);
            m.insert("rmse", (self.sq.value().max(0.0) / n).sqrt());
            if self.ape_n > 0 {
                m.insert("mape", self.ape.value() / self.ape_n as f64);
            }
        }
        if self.classification > 0 {
            let n = self.classification as f64;
            m.insert("accuracy", self.correct as f64 / n);
            m.insert("log_loss", self.log_loss.value() / n);
        }
        m
    }

    /// The metrics beside the holdout's.
    pub fn compare(&self, holdout: &BTreeMap<String, f64>) -> Vec<MetricComparison> {
        self.metrics()
            .into_iter()
            .map(|(k, v)| MetricComparison {
                metric: k.to_string(),
                current: v,
                reference: holdout.get(k).copied(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_metrics_cover_the_last_n_pairs() {
        let mut w = PerformanceWindow::new(2, 0);
        w.push(Joined::Regression {
            predicted: 100.0,
            actual: 0.0,
        });
        w.push(Joined::Regression {
            predicted: 1.0,
            actual: 2.0,
        });
        assert_eq!(
            w.push(Joined::Regression {
                predicted: 5.0,
                actual: 2.0
            }),
            0..1
        );
        let m = w.metrics();
        assert_eq!(m["mae"], 2.0);
        assert!((m["rmse"] - 5f64.sqrt()).abs() < 1e-12);
        assert_eq!(m["mape"], 1.0);
    }

    #[test]
    fn classification_metrics_match_the_trainers_definitions() {
        let mut w = PerformanceWindow::new(10, 0);
        w.push(Joined::Classification {
            correct: true,
            p_true: 0.8,
        });
        w.push(Joined::Classification {
            correct: false,
            p_true: 0.0,
        });
        let m = w.metrics();
        assert_eq!(m["accuracy"], 0.5);
        let want = (-(0.8f64).ln() - (1e-15f64).ln()) / 2.0;
        assert!((m["log_loss"] - want).abs() < 1e-9);
    }
}
