//! Data quality, with thresholds from the reference: a window's share of missing values,
//! of numbers outside the reference's range, and of categories the reference never saw.
//!
//! Each check counts hits among a window's n values. When nothing has changed, each value
//! is a hit with some chance p that the reference only estimates; [`Null`] is what the
//! reference says about p, as a Beta(a, b) distribution. The window's count then follows
//! a beta-binomial distribution, which holds both the window's sampling noise and the
//! reference's own uncertainty, and the threshold is the smallest count whose upper tail
//! under it is at most the test's false-alarm rate ([`threshold`]). So a window of 500
//! tolerates a larger share than one of 50,000, and a reference of 200 rows is trusted
//! less than one of 200,000, with no hand-set line. The nulls:
//!
//! - missing share: x of the reference's N values missing gives Beta(x + 1, N - x + 1),
//!   the posterior of p from a uniform prior;
//! - out of range: for exchangeable continuous values, the chance that a new value falls
//!   outside the range of m reference values is distributed Beta(2, m - 1) (the two outer
//!   spacings of m uniform order statistics). Ties only make a hit rarer, and a reference
//!   that is a spread subsample of a larger one has extremes inside the full range, so
//!   both err toward no alarm;
//! - unseen category: Good-Turing, the chance of a category the reference never saw is
//!   about the share of reference values whose category was seen once (N1 of N), so
//!   Beta(N1 + 1, N - N1 + 1).
//!
//! Checked against `scipy.stats.betabinom` in `tests/scipy_fixtures.rs`.

use serde::{Deserialize, Serialize};

use crate::categorical::CategoryCounts;
use statrs::function::beta::ln_beta;
use statrs::function::gamma::ln_gamma;

/// What a check counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Missing values among all values.
    MissingShare,
    /// Numbers below the reference's smallest or above its largest value.
    OutOfRange,
    /// Categories absent from the reference.
    UnseenCategory,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::MissingShare => "missing_share",
            Check::OutOfRange => "out_of_range",
            Check::UnseenCategory => "unseen_category",
        }
    }
}

/// Beta(a, b): what the reference says about the chance that one value is a hit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Null {
    pub a: f64,
    pub b: f64,
}

impl Null {
    /// `missing` of `values` reference values (missing ones included) were missing.
    pub fn missing(missing: u64, values: u64) -> Self {
        Self {
            a: missing as f64 + 1.0,
            b: values.saturating_sub(missing) as f64 + 1.0,
        }
    }

    /// The range of `values` reference numbers; none below two (no range to speak of).
    pub fn out_of_range(values: u64) -> Option<Self> {
        (values >= 2).then_some(Self {
            a: 2.0,
            b: values as f64 - 1.0,
        })
    }

    /// `values` non-missing reference values, `singletons` of them in a category seen
    /// once; none without values.
    pub fn unseen(singletons: u64, values: u64) -> Option<Self> {
        (values > 0).then_some(Self {
            a: singletons as f64 + 1.0,
            b: values.saturating_sub(singletons) as f64 + 1.0,
        })
    }

    /// The expected share of hits.
    pub fn mean(self) -> f64 {
        self.a / (self.a + self.b)
    }
}

/// A check's count in one window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Count {
    pub check: Check,
    pub null: Null,
    pub hits: u64,
    /// Values the check looked at.
    pub total: u64,
}

impl Count {
    /// Missing values: `missing` of `missing + values` on each side.
    pub fn missing(reference: (u64, u64), current: (u64, u64)) -> Self {
        let ((rm, rv), (cm, cv)) = (reference, current);
        Self {
            check: Check::MissingShare,
            null: Null::missing(rm, rm + rv),
            hits: cm,
            total: cm + cv,
        }
    }

    /// Numbers of `current` outside the range of `reference` (both sorted, no NaN); none
    /// for a reference of fewer than two.
    pub fn out_of_range(reference: &[f64], current: &[f64]) -> Option<Self> {
        let (lo, hi) = (reference.first()?, reference.last()?);
        let below = current.partition_point(|x| x < lo);
        let above = current.len() - current.partition_point(|x| x <= hi);
        Self::outside_range(
            reference.len() as u64,
            (below + above) as u64,
            current.len() as u64,
        )
    }

    /// `hits` of `total` numbers outside the range of `reference` reference values, counted
    /// elsewhere (the monitor's tracker knows them from its outer cells); none for a
    /// reference of fewer than two.
    pub fn outside_range(reference: u64, hits: u64, total: u64) -> Option<Self> {
        Some(Self {
            check: Check::OutOfRange,
            null: Null::out_of_range(reference)?,
            hits,
            total,
        })
    }

    /// Values of `current` in a category `reference` never saw; none for an empty
    /// reference.
    pub fn unseen(reference: &CategoryCounts, current: &CategoryCounts) -> Option<Self> {
        let singletons = reference.counts.values().filter(|c| **c == 1).count() as u64;
        let null = Null::unseen(singletons, reference.total())?;
        let hits = current
            .counts
            .iter()
            .filter(|(label, _)| !reference.counts.contains_key(*label))
            .map(|(_, c)| c)
            .sum();
        Some(Self {
            check: Check::UnseenCategory,
            null,
            hits,
            total: current.total(),
        })
    }
}

/// A check's outcome: shares of the window, and the false-alarm rate the threshold was
/// set for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub check: Check,
    pub value: f64,
    pub threshold: f64,
    pub fired: bool,
    pub false_alarm_rate: f64,
}

impl Count {
    /// The check at false-alarm rate `alpha`; `None` for an empty window.
    pub fn judge(&self, alpha: f64) -> Option<Signal> {
        if self.total == 0 {
            return None;
        }
        let k = threshold(self.total, self.null, alpha);
        let n = self.total as f64;
        Some(Signal {
            check: self.check,
            value: self.hits as f64 / n,
            threshold: k as f64 / n,
            fired: self.hits >= k,
            false_alarm_rate: alpha,
        })
    }
}

/// ln P(K = k) for K ~ BetaBinomial(n, a, b).
pub fn ln_pmf(n: u64, k: u64, null: Null) -> f64 {
    if k > n {
        return f64::NEG_INFINITY;
    }
    let (n, k) = (n as f64, k as f64);
    let ln_choose = ln_gamma(n + 1.0) - ln_gamma(k + 1.0) - ln_gamma(n - k + 1.0);
    ln_choose + ln_beta(k + null.a, n - k + null.b) - ln_beta(null.a, null.b)
}

/// The smallest k with P(K >= k) <= `alpha` for K ~ BetaBinomial(n, a, b): the count of
/// hits at which a check fires. n + 1 when even n hits are not that rare.
pub fn threshold(n: u64, null: Null, alpha: f64) -> u64 {
    // Probabilities relative to P(K = start), walked outward with the ratio
    // P(k + 1) / P(k) = (n - k)(k + a) / ((k + 1)(n - k - 1 + b)): the mean is near the
    // mode, so nothing there underflows, and the walk stops where the terms no longer
    // matter to a tail of size alpha.
    let start = ((n as f64 * null.mean()).floor() as u64).min(n);
    let p_start = ln_pmf(n, start, null).exp();
    let negligible = alpha * 1e-12;
    let up = |k: u64| {
        let (n, k) = (n as f64, k as f64);
        (n - k) * (k + null.a) / ((k + 1.0) * (n - k - 1.0 + null.b))
    };
    let mut terms = vec![p_start];
    let mut k = start;
    while k < n {
        let next = terms[terms.len() - 1] * up(k);
        k += 1;
        terms.push(next);
        if next < terms[terms.len() - 2] && next < negligible {
            break;
        }
    }
    // From the top down: the first k whose tail exceeds alpha, plus one.
    let mut tail = 0.0;
    for (i, p) in terms.iter().enumerate().rev() {
        tail += p;
        if tail > alpha {
            return start + i as u64 + 1;
        }
    }
    // Even P(K >= start) <= alpha: walk down below the mean.
    let mut p = p_start;
    let mut k = start;
    while k > 0 {
        p /= up(k - 1);
        k -= 1;
        tail += p;
        if tail > alpha {
            return k + 1;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64, for a reproducible stream of uniforms without a dependency.
    fn uniforms(mut state: u64) -> impl FnMut() -> f64 {
        move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as f64 / u64::MAX as f64
        }
    }

    fn tail(n: u64, k: u64, null: Null) -> f64 {
        (k..=n).map(|j| ln_pmf(n, j, null).exp()).sum()
    }

    #[test]
    fn threshold_is_the_smallest_count_with_a_tail_at_most_alpha() {
        for (n, null, alpha) in [
            (1_000, Null::missing(10, 10_000), 1e-3),
            (50, Null::missing(0, 200), 0.01),
            (5_000, Null::out_of_range(10_000).unwrap(), 1e-4),
            (1, Null::missing(1, 100), 0.05),
            (300, Null::missing(150, 300), 0.2),
        ] {
            let k = threshold(n, null, alpha);
            assert!(tail(n, k, null) <= alpha, "{n} {null:?}: {k}");
            assert!(k == 0 || tail(n, k - 1, null) > alpha, "{n} {null:?}: {k}");
        }
    }

    #[test]
    fn a_window_like_the_reference_fires_at_about_the_false_alarm_rate() {
        // Reference: 2% missing of 5,000; windows of 2,000 drawn at a p that is itself
        // uncertain as the reference says (the beta-binomial's own story), so the rate
        // must come out at or below alpha.
        let null = Null::missing(100, 5_000);
        let alpha = 0.05;
        let k = threshold(2_000, null, alpha);
        let mut uniform = uniforms(7);
        let trials = 4_000;
        let fired = (0..trials)
            .filter(|_| {
                let hits = (0..2_000).filter(|_| uniform() < 0.02).count() as u64;
                hits >= k
            })
            .count();
        // With p fixed at the reference's 2%, the count is less spread than the
        // beta-binomial allows: fewer alarms than alpha, never more.
        assert!(
            (fired as f64 / trials as f64) <= alpha,
            "{fired} of {trials}"
        );
    }

    #[test]
    fn a_feature_going_null_fires_and_a_small_rise_in_a_small_window_does_not() {
        let null = Null::missing(50, 10_000); // 0.5%
        let count = |hits, total| Count {
            check: Check::MissingShare,
            null,
            hits,
            total,
        };
        assert!(count(100, 1_000).judge(1e-3).unwrap().fired); // 10%
        assert!(!count(8, 1_000).judge(1e-3).unwrap().fired); // 0.8%
        // The same 0.8% over 100,000 values is far outside what the reference allows.
        assert!(count(800, 100_000).judge(1e-3).unwrap().fired);
        assert_eq!(count(0, 0).judge(1e-3), None);
    }

    #[test]
    fn out_of_range_tolerates_a_few_values_past_the_reference_extremes() {
        let null = Null::out_of_range(10_000).unwrap();
        let k = threshold(10_000, null, 1e-3);
        // About 2 expected past the extremes of 10,000 values in 10,000 new ones.
        assert!((5..=20).contains(&k), "{k}");
        assert_eq!(Null::out_of_range(1), None);
    }
}
