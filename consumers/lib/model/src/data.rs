//! Labelled rows and the time-ordered train/holdout split.

use std::borrow::Cow;

use driftline_schemas::events::Features;

/// One training example: the features a prediction saw and the ground truth that arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledRow {
    /// Milliseconds since the Unix epoch, in the source data's time.
    pub event_time: i64,
    pub features: Features,
    pub target: Target,
}

/// Ground truth: a number for a regression target, a label for a classification target.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Value(f64),
    Class(String),
}

impl Target {
    /// The class label of this target. A number is read as a label the way a CSV cell would
    /// be (`driftline.actuals` carries doubles): an integral value prints without a decimal
    /// point, so `1.0` is the class `"1"`.
    pub fn class_label(&self) -> Cow<'_, str> {
        match self {
            Target::Class(c) => Cow::Borrowed(c),
            Target::Value(x) => Cow::Owned(number_label(*x)),
        }
    }

    /// The numeric value of this target; a class label is parsed as a number.
    pub fn value(&self) -> Option<f64> {
        match self {
            Target::Value(x) => Some(*x).filter(|x| x.is_finite()),
            Target::Class(c) => c.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        }
    }
}

pub(crate) use driftline_drift::frame::number_label;

/// Splits rows by event time: the oldest rows train, the newest `holdout_fraction` of them
/// are the holdout, so a model is judged on data from after everything it learnt from.
///
/// Rows are sorted by event time (stably: ties keep their order). The boundary moves back
/// so that rows sharing the first holdout row's timestamp are all in the holdout (no
/// timestamp is on both sides), unless that would leave nothing to train on. A fraction
/// that is not in `(0, 1)` (or NaN) gives an empty holdout for `<= 0` and an empty
/// training set for `>= 1`.
pub fn split_by_time(
    mut rows: Vec<LabelledRow>,
    holdout_fraction: f64,
) -> (Vec<LabelledRow>, Vec<LabelledRow>) {
    rows.sort_by_key(|r| r.event_time);
    let at = holdout_start(&rows, holdout_fraction);
    let holdout = rows.split_off(at);
    (rows, holdout)
}

/// The index where the holdout starts in rows already sorted by event time (see
/// [`split_by_time`]), for callers that keep the rows in one vector.
pub fn holdout_start(sorted: &[LabelledRow], holdout_fraction: f64) -> usize {
    let times: Vec<i64> = sorted.iter().map(|r| r.event_time).collect();
    holdout_start_of_times(&times, holdout_fraction)
}

pub(crate) fn holdout_start_of_times(times: &[i64], holdout_fraction: f64) -> usize {
    let n = times.len();
    if holdout_fraction.is_nan() || holdout_fraction <= 0.0 {
        return n;
    }
    if holdout_fraction >= 1.0 {
        return 0;
    }
    let holdout = ((n as f64) * holdout_fraction).ceil() as usize;
    let start = n - holdout.min(n);
    if start == 0 || start == n {
        return start;
    }
    let mut at = start;
    while at > 0 && times[at - 1] == times[at] {
        at -= 1;
    }
    if at == 0 { start } else { at }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: i64) -> LabelledRow {
        LabelledRow {
            event_time: t,
            features: Features::new(),
            target: Target::Value(t as f64),
        }
    }

    #[test]
    fn holdout_is_the_newest_rows_whatever_the_input_order() {
        let rows: Vec<_> = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10]
            .into_iter()
            .map(row)
            .collect();
        let (train, holdout) = split_by_time(rows, 0.2);
        let t: Vec<_> = train.iter().map(|r| r.event_time).collect();
        let h: Vec<_> = holdout.iter().map(|r| r.event_time).collect();
        assert_eq!(t, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(h, [9, 10]);
    }

    #[test]
    fn a_timestamp_is_never_on_both_sides_of_the_split() {
        let rows: Vec<_> = [1, 2, 3, 3, 3, 4].into_iter().map(row).collect();
        let (train, holdout) = split_by_time(rows, 0.34); // 3 rows asked for
        assert_eq!(train.len(), 2);
        assert!(holdout.iter().all(|r| r.event_time >= 3));
        // All rows at one time: the split falls back to the row count.
        let same: Vec<_> = [7, 7, 7, 7].into_iter().map(row).collect();
        let (train, holdout) = split_by_time(same, 0.25);
        assert_eq!((train.len(), holdout.len()), (3, 1));
    }

    #[test]
    fn out_of_range_fractions_do_not_panic() {
        let rows: Vec<_> = (0..4).map(row).collect();
        assert_eq!(split_by_time(rows.clone(), 0.0).1.len(), 0);
        assert_eq!(split_by_time(rows.clone(), f64::NAN).1.len(), 0);
        assert_eq!(split_by_time(rows.clone(), 1.5).0.len(), 0);
        assert_eq!(split_by_time(Vec::new(), 0.2).0.len(), 0);
    }

    #[test]
    fn numeric_targets_read_as_class_labels() {
        assert_eq!(Target::Value(1.0).class_label(), "1");
        assert_eq!(Target::Value(0.5).class_label(), "0.5");
        assert_eq!(Target::Class("late".into()).class_label(), "late");
        assert_eq!(Target::Class(" 2.5".into()).value(), Some(2.5));
    }
}
