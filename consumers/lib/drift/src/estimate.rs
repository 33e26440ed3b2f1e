//! Performance before labels: NannyML's confidence-based performance estimation (CBPE)
//! of a binary classifier's accuracy.
//!
//! A prediction whose calibrated probability of the positive class is p is right with
//! chance p when it says positive and 1 − p when it says negative, so a window's expected
//! accuracy is the mean of those chances ([`expected_correct`]), known before any label
//! arrives. It is only as good as the probabilities, so they are first calibrated on the
//! reference's labelled rows by isotonic regression ([`Isotonic`], scikit-learn's
//! `IsotonicRegression(out_of_bounds="clip")`, as NannyML's `IsotonicCalibrator`).
//! `tests/cbpe_fixtures.rs` checks the calibration and the per-chunk estimates against
//! NannyML 0.13.1 on its car-loan data. (NannyML calibrates only when cross-validated
//! calibration lowers the expected calibration error on every fold; on that data it does.)

/// A monotone increasing step function fitted by pool-adjacent-violators, read between its
/// points by linear interpolation and clipped outside them (scikit-learn's
/// `IsotonicRegression(increasing=True, out_of_bounds="clip")`).
#[derive(Debug, Clone, PartialEq)]
pub struct Isotonic {
    /// Distinct inputs, ascending.
    x: Vec<f64>,
    /// The fitted value at each.
    y: Vec<f64>,
}

impl Isotonic {
    /// Fits `y` on `x` (pairs with a non-finite value are skipped); `None` without any.
    pub fn fit(x: &[f64], y: &[f64]) -> Option<Self> {
        let mut pairs: Vec<(f64, f64)> = x
            .iter()
            .zip(y)
            .filter(|(a, b)| a.is_finite() && b.is_finite())
            .map(|(a, b)| (*a, *b))
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        // Equal inputs pooled first: their mean with their count as weight.
        let mut xs: Vec<f64> = Vec::new();
        let mut sums: Vec<(f64, f64)> = Vec::new();
        for (a, b) in pairs {
            match (xs.last(), sums.last_mut()) {
                (Some(last), Some(s)) if *last == a => {
                    s.0 += b;
                    s.1 += 1.0;
                }
                _ => {
                    xs.push(a);
                    sums.push((b, 1.0));
                }
            }
        }
        if xs.is_empty() {
            return None;
        }
        // Pool adjacent violators: blocks of (weighted sum, weight, points).
        let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(sums.len());
        for (s, w) in sums {
            blocks.push((s, w, 1));
            while blocks.len() >= 2 {
                let (s2, w2, n2) = blocks[blocks.len() - 1];
                let (s1, w1, n1) = blocks[blocks.len() - 2];
                if s1 / w1 <= s2 / w2 {
                    break;
                }
                blocks.pop();
                let last = blocks.len() - 1;
                blocks[last] = (s1 + s2, w1 + w2, n1 + n2);
            }
        }
        let y = blocks
            .iter()
            .flat_map(|(s, w, n)| std::iter::repeat_n(s / w, *n))
            .collect();
        Some(Self { x: xs, y })
    }

    /// The fitted function at `x`: interpolated between the fitted points, the end value
    /// outside them.
    pub fn predict(&self, x: f64) -> f64 {
        let n = self.x.len();
        if x <= self.x[0] || n == 1 {
            return self.y[0];
        }
        if x >= self.x[n - 1] {
            return self.y[n - 1];
        }
        let i = self.x.partition_point(|v| *v <= x);
        let (x0, x1, y0, y1) = (self.x[i - 1], self.x[i], self.y[i - 1], self.y[i]);
        y0 + (x - x0) * (y1 - y0) / (x1 - x0)
    }
}

/// The chance a prediction is right: `p` (the calibrated probability of the positive
/// class) when it said positive, 1 − `p` when it said negative.
pub fn expected_correct(said_positive: bool, p: f64) -> f64 {
    if said_positive { p } else { 1.0 - p }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violators_are_pooled_and_read_by_interpolation() {
        let f = Isotonic::fit(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!(f.y, [1.0, 2.5, 2.5, 4.0]);
        assert_eq!(f.predict(0.0), 1.0);
        assert_eq!(f.predict(1.5), 1.75);
        assert_eq!(f.predict(9.0), 4.0);
        // Equal inputs are one point: their mean.
        let g = Isotonic::fit(&[0.5, 0.5, 0.9], &[0.0, 1.0, 1.0]).unwrap();
        assert_eq!((g.x.len(), g.y[0]), (2, 0.5));
        assert_eq!(expected_correct(false, 0.2), 0.8);
    }
}
