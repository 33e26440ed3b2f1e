//! A served prediction scored against its actual, one row at a time: what the monitor's
//! performance window and the trainer's live rollout gate both count.

use driftline_schemas::events::{Actual, Prediction};

use crate::data::number_label;

/// Probabilities are clipped like the holdout's log loss (scikit-learn's 1e-15).
pub const EPS: f64 = 1e-15;

/// One prediction joined with its actual.
#[derive(Debug, Clone, PartialEq)]
pub enum Joined {
    Regression {
        predicted: f64,
        actual: f64,
    },
    /// Whether the predicted class was right, and the probability given to the true class.
    Classification {
        correct: bool,
        p_true: f64,
    },
}

impl Joined {
    /// What the error detectors watch: the absolute error, or 1 for a wrong class.
    pub fn error(&self) -> f64 {
        match self {
            Joined::Regression { predicted, actual } => (predicted - actual).abs(),
            Joined::Classification { correct, .. } => {
                if *correct {
                    0.0
                } else {
                    1.0
                }
            }
        }
    }

    /// A prediction scored against its actual: regression when both are numbers, or
    /// classification when a class was predicted (a numeric actual is read as its label);
    /// `None` when the actual does not fit the prediction.
    pub fn of(prediction: &Prediction, actual: &Actual) -> Option<Self> {
        match (prediction.value, actual.value, &prediction.class) {
            (Some(predicted), Some(truth), None) => Some(Joined::Regression {
                predicted,
                actual: truth,
            }),
            (_, _, Some(class)) => {
                let truth = actual
                    .class
                    .clone()
                    .or_else(|| actual.value.map(number_label))?;
                Some(Joined::Classification {
                    correct: *class == truth,
                    p_true: prediction
                        .probabilities
                        .get(&truth)
                        .copied()
                        .unwrap_or(if *class == truth { 1.0 } else { 0.0 }),
                })
            }
            _ => None,
        }
    }
}

impl Joined {
    /// This row's share of `metric` (`mae`: the absolute error; `log_loss`: minus the log
    /// of the probability given to the true class), so that a mean of losses is the
    /// metric over the rows; `None` for a metric that is not a mean of per-row losses or
    /// does not fit the row.
    pub fn loss(&self, metric: &str) -> Option<f64> {
        match (self, metric) {
            (Joined::Regression { predicted, actual }, "mae") => Some((predicted - actual).abs()),
            (Joined::Classification { p_true, .. }, "log_loss") => {
                Some(-p_true.clamp(EPS, 1.0 - EPS).ln())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_loss_is_its_share_of_the_holdout_metric() {
        let r = Joined::Regression {
            predicted: 3.0,
            actual: 5.5,
        };
        assert_eq!(r.loss("mae"), Some(2.5));
        assert_eq!(r.loss("log_loss"), None);
        let c = Joined::Classification {
            correct: false,
            p_true: 0.25,
        };
        assert!((c.loss("log_loss").unwrap() - 4f64.ln()).abs() < 1e-12);
        let sure = Joined::Classification {
            correct: true,
            p_true: 1.0,
        };
        assert!(
            sure.loss("log_loss").unwrap() > 0.0,
            "clipped like scikit-learn"
        );
    }
}
