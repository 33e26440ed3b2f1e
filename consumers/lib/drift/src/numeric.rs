//! Drift statistics of a numeric feature: PSI, two-sample Kolmogorov-Smirnov, Wasserstein
//! distance normalised by the reference's standard deviation, Jensen-Shannon distance.
//!
//! Every function reads sorted samples ([`Sorted`]) or per-bin count vectors, so an online
//! window that keeps an order structure or incremental histograms can feed them without
//! copying rows around: bins come from the reference alone in the default
//! [`Binning::Quantile`] mode, so a window only has to bump one counter per event
//! ([`Bins::bin_of`]). Nothing here does I/O.

use std::str::FromStr;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, kstwo};

/// A borrowed sample sorted ascending with only finite values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sorted<'a>(&'a [f64]);

impl<'a> Sorted<'a> {
    /// Checks that `values` is finite and sorted ascending (O(n)).
    pub fn new(values: &'a [f64]) -> Result<Self> {
        if let Some(i) = values.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFinite(i));
        }
        if let Some(i) = values.windows(2).position(|w| w[0] > w[1]) {
            return Err(Error::Unsorted(i + 1));
        }
        Ok(Self(values))
    }

    pub fn as_slice(&self) -> &'a [f64] {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many values are `< x`.
    fn below(&self, x: f64) -> usize {
        self.0.partition_point(|v| *v < x)
    }

    /// How many values are `<= x`.
    fn at_or_below(&self, x: f64) -> usize {
        self.0.partition_point(|v| *v <= x)
    }
}

/// An owned sorted sample of finite values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SortedSample {
    values: Vec<f64>,
}

impl SortedSample {
    /// Sorts `values`; NaN and infinities are dropped (they are missing values, counted by
    /// whoever read them).
    pub fn from_unsorted(mut values: Vec<f64>) -> Self {
        if !values.iter().all(|x| x.is_finite()) {
            values.retain(|x| x.is_finite());
        }
        if let Some(distinct) = count_distinct(&values) {
            return Self::from_counts(distinct);
        }
        // Sorting integer keys is about twice as fast as `sort_by(f64::total_cmp)`, and the
        // key (total_cmp's own bit trick) orders the same way and maps back exactly.
        let key = |b: i64| b ^ (((b >> 63) as u64) >> 1) as i64;
        let mut keys: Vec<i64> = values.iter().map(|x| key(x.to_bits() as i64)).collect();
        keys.sort_unstable();
        for (v, k) in values.iter_mut().zip(keys) {
            *v = f64::from_bits(key(k) as u64);
        }
        Self { values }
    }

    /// Values given as (value, how many times); non-finite values are dropped.
    pub fn from_counts(mut distinct: Vec<(f64, u64)>) -> Self {
        distinct.retain(|(x, _)| x.is_finite());
        distinct.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mut values = Vec::with_capacity(distinct.iter().map(|(_, n)| *n as usize).sum());
        for (x, n) in distinct {
            values.extend(std::iter::repeat_n(x, n as usize));
        }
        Self { values }
    }

    /// Takes values already sorted ascending; checks it.
    pub fn from_sorted(values: Vec<f64>) -> Result<Self> {
        Sorted::new(&values)?;
        Ok(Self { values })
    }

    pub fn view(&self) -> Sorted<'_> {
        Sorted(&self.values)
    }

    pub fn as_slice(&self) -> &[f64] {
        &self.values
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// How PSI and Jensen-Shannon bin a numeric feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum Binning {
    /// Bins between the reference's quantiles (numpy's default "linear" quantiles at
    /// 1/bins, ..., (bins-1)/bins; repeated edges merged), open at both ends so current
    /// values outside the reference's range still land in a bin; a value equal to an edge
    /// goes to the bin below it. The edges depend on the reference alone, so a streaming
    /// window keeps one counter per bin. The default, with 10 bins.
    Quantile { bins: usize },
    /// Evidently's binning (0.7): equal-width bins by numpy's "sturges" rule over
    /// reference and current together when the reference has more than 20 distinct
    /// values, otherwise one bin per distinct value of either sample. Offered so numbers
    /// can be compared with Evidently's; the edges depend on the current window too.
    Sturges,
}

impl Default for Binning {
    fn default() -> Self {
        Binning::Quantile { bins: 10 }
    }
}

impl FromStr for Binning {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "quantile" => Ok(Binning::default()),
            "sturges" => Ok(Binning::Sturges),
            other => Err(Error::Binning(other.to_string())),
        }
    }
}

impl std::fmt::Display for Binning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Binning::Quantile { bins } => write!(f, "quantile({bins})"),
            Binning::Sturges => f.write_str("sturges"),
        }
    }
}

/// Bin boundaries for one feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Bins {
    /// Bins (-inf, e1], (e1, e2], ..., (ek, inf) between strictly increasing inner edges.
    Quantile { inner_edges: Vec<f64> },
    /// numpy's histogram bins: [e0, e1), [e1, e2), ..., [e(k-1), ek]; values outside
    /// [e0, ek] fall in no bin.
    EqualWidth { edges: Vec<f64> },
    /// One bin per value, strictly increasing; other values fall in no bin.
    Distinct { values: Vec<f64> },
}

impl Bins {
    /// The bins `binning` gives these samples; `None` when there is nothing to bin (an
    /// empty reference, or both samples empty for Sturges) or `bins == 0`.
    pub fn new(binning: Binning, reference: Sorted<'_>, current: Sorted<'_>) -> Option<Bins> {
        match binning {
            Binning::Quantile { bins } => Bins::quantile(reference, bins),
            Binning::Sturges => Bins::sturges(reference, current),
        }
    }

    /// Quantile bins of the reference.
    pub fn quantile(reference: Sorted<'_>, bins: usize) -> Option<Bins> {
        if reference.is_empty() || bins == 0 {
            return None;
        }
        let mut inner_edges: Vec<f64> = (1..bins)
            .map(|i| quantile_linear(reference.0, i as f64 / bins as f64))
            .collect();
        inner_edges.dedup();
        Some(Bins::Quantile { inner_edges })
    }

    /// Evidently's bins (see [`Binning::Sturges`]).
    pub fn sturges(reference: Sorted<'_>, current: Sorted<'_>) -> Option<Bins> {
        if reference.is_empty() && current.is_empty() {
            return None;
        }
        if distinct_count(reference.0) > 20 {
            return Some(Bins::EqualWidth {
                edges: sturges_edges(reference.0, current.0),
            });
        }
        let mut values: Vec<f64> = distinct(reference.0);
        values.extend(distinct(current.0));
        values.sort_unstable_by(f64::total_cmp);
        values.dedup();
        Some(Bins::Distinct { values })
    }

    /// How many bins.
    pub fn len(&self) -> usize {
        match self {
            Bins::Quantile { inner_edges } => inner_edges.len() + 1,
            Bins::EqualWidth { edges } => edges.len().saturating_sub(1),
            Bins::Distinct { values } => values.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bin of one value (O(log bins)), for windows that count incrementally.
    pub fn bin_of(&self, x: f64) -> Option<usize> {
        if x.is_nan() {
            return None;
        }
        match self {
            Bins::Quantile { inner_edges } => Some(inner_edges.partition_point(|e| *e < x)),
            Bins::EqualWidth { edges } => {
                let (first, last) = (*edges.first()?, *edges.last()?);
                if x < first || x > last {
                    return None;
                }
                let i = edges.partition_point(|e| *e <= x).saturating_sub(1);
                Some(i.min(edges.len() - 2))
            }
            Bins::Distinct { values } => values.binary_search_by(|v| v.total_cmp(&x)).ok(),
        }
    }

    /// Counts per bin of a sorted sample (O(bins log n)).
    pub fn counts(&self, sample: Sorted<'_>) -> Vec<u64> {
        match self {
            Bins::Quantile { inner_edges } => {
                let mut out = Vec::with_capacity(inner_edges.len() + 1);
                let mut prev = 0;
                for e in inner_edges {
                    let upto = sample.at_or_below(*e);
                    out.push((upto - prev) as u64);
                    prev = upto;
                }
                out.push((sample.len() - prev) as u64);
                out
            }
            Bins::EqualWidth { edges } => {
                let k = edges.len().saturating_sub(1);
                (0..k)
                    .map(|i| {
                        let lo = sample.below(edges[i]);
                        let hi = if i + 1 == k {
                            sample.at_or_below(edges[i + 1])
                        } else {
                            sample.below(edges[i + 1])
                        };
                        (hi - lo) as u64
                    })
                    .collect()
            }
            Bins::Distinct { values } => values
                .iter()
                .map(|v| (sample.at_or_below(*v) - sample.below(*v)) as u64)
                .collect(),
        }
    }
}

/// Each distinct value of `values` and how often it occurs, when there are few: hours,
/// visibilities and rounded readings repeat a few hundred values over thousands of rows,
/// and counting them in a hash table then sorting only the distinct ones
/// ([`SortedSample::from_counts`]) takes about 90 µs for 25,000 flights values where
/// sorting them all takes 130-190 µs. `None` when they are too varied (judged on a prefix
/// first, so a varied column costs little).
fn count_distinct(values: &[f64]) -> Option<Vec<(f64, u64)>> {
    const PREFIX: usize = 2048;
    if values.len() < 2 * PREFIX {
        return None;
    }
    // At most one distinct value per 16 values overall, and per 8 in the prefix.
    let limit = values.len() / 16;
    let mut counts: FxHashMap<u64, (f64, u64)> = FxHashMap::default();
    for (i, x) in values.iter().enumerate() {
        // Keyed by a bijective mix of the bits: integers' bits differ only at the top, which
        // left alone crowd a few buckets.
        let k = x.to_bits().wrapping_mul(0x9e37_79b9_7f4a_7c15);
        counts.entry(k ^ (k >> 32)).or_insert((*x, 0)).1 += 1;
        if counts.len() > limit || (i == PREFIX && counts.len() > PREFIX / 8) {
            return None;
        }
    }
    Some(counts.into_values().collect())
}

/// numpy's `np.quantile(a, q)` with the default "linear" method, on a sorted slice.
fn quantile_linear(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let vi = (n as f64 - 1.0) * q;
    if vi >= (n - 1) as f64 {
        return sorted[n - 1];
    }
    if vi < 0.0 {
        return sorted[0];
    }
    let prev = vi.floor();
    let gamma = vi - prev;
    let a = sorted[prev as usize];
    let b = sorted[prev as usize + 1];
    let diff = b - a;
    // numpy's _lerp: from the nearer end, so the result is monotone in gamma.
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

fn distinct(sorted: &[f64]) -> Vec<f64> {
    let mut v = sorted.to_vec();
    v.dedup();
    v
}

fn distinct_count(sorted: &[f64]) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    1 + sorted.windows(2).filter(|w| w[0] != w[1]).count()
}

/// `np.histogram_bin_edges(concat(a, b), bins="sturges")` for two sorted samples.
fn sturges_edges(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mins = a.first().into_iter().chain(b.first()).copied();
    let maxs = a.last().into_iter().chain(b.last()).copied();
    let min = mins.fold(f64::INFINITY, f64::min);
    let max = maxs.fold(f64::NEG_INFINITY, f64::max);
    let size = (a.len() + b.len()) as f64;
    let ptp = max - min;
    let (mut first, mut last) = (min, max);
    if first == last {
        first -= 0.5;
        last += 0.5;
    }
    let width = ptp / (size.log2() + 1.0);
    let n_bins = if width != 0.0 {
        ((last - first) / width).ceil() as usize
    } else {
        1
    };
    // np.linspace(first, last, n_bins + 1): i * step + start, the last edge exact.
    let step = (last - first) / n_bins as f64;
    let mut edges: Vec<f64> = (0..=n_bins).map(|i| i as f64 * step + first).collect();
    edges[n_bins] = last;
    edges
}

/// The share used for an empty bin, as Evidently's `get_binned_data(feel_zeroes=True)`
/// fills it: 0.0001, or the smallest non-zero share / 10^6 when that share is itself at
/// most 0.0001 (so the filler stays below every observed share).
fn fill_empty(shares: &mut [f64]) {
    let min_nonzero = shares
        .iter()
        .copied()
        .filter(|s| *s != 0.0)
        .fold(f64::INFINITY, f64::min);
    if !min_nonzero.is_finite() {
        return;
    }
    let fill = if min_nonzero <= 0.0001 {
        min_nonzero / 1e6
    } else {
        0.0001
    };
    for s in shares.iter_mut().filter(|s| **s == 0.0) {
        *s = fill;
    }
}

fn shares(counts: &[u64]) -> Option<Vec<f64>> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    Some(counts.iter().map(|c| *c as f64 / total as f64).collect())
}

/// Population stability index over aligned bin counts:
/// `sum((cur - ref) * ln(cur / ref))` over the shares, empty shares filled as Evidently
/// does (see [`Binning::Sturges`]). `None` when the lengths differ or either side has no
/// values. 0 means identical; by the usual reading < 0.1 is stable, 0.1 to 0.2 a moderate
/// shift, > 0.2 a significant one.
pub fn psi(reference_counts: &[u64], current_counts: &[u64]) -> Option<f64> {
    if reference_counts.len() != current_counts.len() {
        return None;
    }
    let mut r = shares(reference_counts)?;
    let mut c = shares(current_counts)?;
    fill_empty(&mut r);
    fill_empty(&mut c);
    Some(r.iter().zip(&c).map(|(r, c)| (c - r) * (c / r).ln()).sum())
}

/// Jensen-Shannon distance (natural log, like `scipy.spatial.distance.jensenshannon`'s
/// default base, so it lies in [0, sqrt(ln 2)] ~ [0, 0.8326]) between two aligned count
/// vectors. `None` when the lengths differ or either side has no values.
pub fn jensen_shannon(reference_counts: &[u64], current_counts: &[u64]) -> Option<f64> {
    if reference_counts.len() != current_counts.len() {
        return None;
    }
    let p = shares(reference_counts)?;
    let q = shares(current_counts)?;
    let rel_entr = |x: f64, y: f64| if x > 0.0 { x * (x / y).ln() } else { 0.0 };
    let (mut left, mut right) = (0.0, 0.0);
    for (p, q) in p.iter().zip(&q) {
        let m = (p + q) / 2.0;
        left += rel_entr(*p, m);
        right += rel_entr(*q, m);
    }
    Some(((left + right) / 2.0).max(0.0).sqrt())
}

/// A two-sample Kolmogorov-Smirnov test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ks {
    /// max |F_ref(x) - F_cur(x)|, exactly as `scipy.stats.ks_2samp` computes it.
    pub d: f64,
    /// The asymptotic two-sided p-value (SciPy's `method="asymp"`, see [`kstwo`]).
    pub p: f64,
}

/// The two-sample KS statistic and its asymptotic p-value; `None` if either is empty.
pub fn ks_2samp(reference: Sorted<'_>, current: Sorted<'_>) -> Option<Ks> {
    let d = ks_statistic(reference, current)?;
    let p = kstwo::ks_2samp_pvalue(d, reference.len() as u64, current.len() as u64);
    Some(Ks { d, p })
}

/// The two-sided KS statistic D; `None` if either sample is empty. Ties are handled like
/// SciPy (empirical CDFs evaluated after every copy of a value).
pub fn ks_statistic(reference: Sorted<'_>, current: Sorted<'_>) -> Option<f64> {
    let (a, b) = (reference.0, current.0);
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let (mut max, mut min) = (f64::NEG_INFINITY, f64::INFINITY);
    while i < a.len() || j < b.len() {
        let x = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.min(*y),
            (Some(x), None) => *x,
            (None, Some(y)) => *y,
            (None, None) => break,
        };
        (i, j) = (past(a, i, x), past(b, j, x));
        let diff = i as f64 / na - j as f64 / nb;
        max = max.max(diff);
        min = min.min(diff);
    }
    let min_s = (-min).clamp(0.0, 1.0);
    Some(if min_s > max { min_s } else { max })
}

/// The first index at or after `i` whose value is above `x` (`s` ascending). Runs of equal
/// values are crossed by galloping, so the merges of [`ks_statistic`] and [`wasserstein`]
/// cost O(distinct values * log) on a column of few distinct values instead of O(n).
#[inline]
fn past(s: &[f64], i: usize, x: f64) -> usize {
    if i >= s.len() || s[i] > x {
        return i;
    }
    // s[i..lo] are all <= x.
    let (mut lo, mut step) = (i + 1, 1);
    loop {
        let hi = lo + step;
        if hi > s.len() || s[hi - 1] > x {
            let hi = hi.min(s.len());
            return lo + s[lo..hi].partition_point(|v| *v <= x);
        }
        lo = hi;
        step *= 2;
    }
}

/// The first Wasserstein distance between the two empirical distributions
/// (`scipy.stats.wasserstein_distance`): the area between their CDFs, in the feature's
/// units. `None` if either sample is empty.
pub fn wasserstein(reference: Sorted<'_>, current: Sorted<'_>) -> Option<f64> {
    let (a, b) = (reference.0, current.0);
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut x = a[0].min(b[0]);
    let mut sum = Neumaier::default();
    loop {
        (i, j) = (past(a, i, x), past(b, j, x));
        let next = match (a.get(i), b.get(j)) {
            (Some(p), Some(q)) => p.min(*q),
            (Some(p), None) => *p,
            (None, Some(q)) => *q,
            (None, None) => break,
        };
        sum.add((i as f64 / na - j as f64 / nb).abs() * (next - x));
        x = next;
    }
    Some(sum.total())
}

/// The population standard deviation (ddof = 0, like `np.std`); `None` if empty.
pub fn std_dev(sample: &[f64]) -> Option<f64> {
    if sample.is_empty() {
        return None;
    }
    let n = sample.len() as f64;
    let mut s = Neumaier::default();
    sample.iter().for_each(|x| s.add(*x));
    let mean = s.total() / n;
    let mut ss = Neumaier::default();
    sample.iter().for_each(|x| ss.add((x - mean) * (x - mean)));
    Some((ss.total() / n).sqrt())
}

/// [`std_dev`] of a sorted sample, summed over its runs of equal values (each value times
/// its run's length), which on a column of few distinct values is a few hundred terms
/// instead of one per row.
fn std_dev_sorted(sample: Sorted<'_>) -> Option<f64> {
    let s = sample.0;
    if s.is_empty() {
        return None;
    }
    let runs = || {
        let mut i = 0;
        std::iter::from_fn(move || {
            let x = *s.get(i)?;
            let end = past(s, i, x);
            let run = (end - i) as f64;
            i = end;
            Some((x, run))
        })
    };
    let n = s.len() as f64;
    let mut sum = Neumaier::default();
    runs().for_each(|(x, run)| sum.add(x * run));
    let mean = sum.total() / n;
    let mut ss = Neumaier::default();
    runs().for_each(|(x, run)| ss.add((x - mean) * (x - mean) * run));
    Some((ss.total() / n).sqrt())
}

/// [`wasserstein`] divided by the reference's population standard deviation, so it reads
/// in reference standard deviations whatever the feature's unit (a shift of the mean by
/// 0.1 sd gives about 0.1). `None` if either sample is empty or the reference is constant
/// (its standard deviation is 0: there is no scale to normalise by).
pub fn wasserstein_normalised(reference: Sorted<'_>, current: Sorted<'_>) -> Option<f64> {
    let std = std_dev_sorted(reference)?;
    if std <= 0.0 {
        return None;
    }
    Some(wasserstein(reference, current)? / std)
}

/// Every numeric statistic of one feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericStats {
    pub psi: Option<f64>,
    pub ks_d: Option<f64>,
    pub ks_p: Option<f64>,
    pub wasserstein_norm: Option<f64>,
    pub jensen_shannon: Option<f64>,
    /// How many bins PSI and Jensen-Shannon used.
    pub bins: usize,
}

/// Compares two sorted samples. Each statistic is `None` when it cannot be computed (an
/// empty side; Wasserstein also for a constant reference).
pub fn compare(reference: Sorted<'_>, current: Sorted<'_>, binning: Binning) -> NumericStats {
    let ks = ks_2samp(reference, current);
    let (psi_v, js, bins) = match Bins::new(binning, reference, current) {
        Some(bins) => {
            let (r, c) = (bins.counts(reference), bins.counts(current));
            (psi(&r, &c), jensen_shannon(&r, &c), bins.len())
        }
        None => (None, None, 0),
    };
    NumericStats {
        psi: psi_v,
        ks_d: ks.map(|k| k.d),
        ks_p: ks.map(|k| k.p),
        wasserstein_norm: wasserstein_normalised(reference, current),
        jensen_shannon: js,
        bins,
    }
}

/// Neumaier's compensated sum.
#[derive(Default)]
struct Neumaier {
    sum: f64,
    c: f64,
}

impl Neumaier {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.c += (self.sum - t) + x;
        } else {
            self.c += (x - t) + self.sum;
        }
        self.sum = t;
    }

    fn total(&self) -> f64 {
        self.sum + self.c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[f64]) -> SortedSample {
        SortedSample::from_unsorted(v.to_vec())
    }

    #[test]
    fn rejects_unsorted_and_non_finite_slices() {
        assert!(matches!(Sorted::new(&[1.0, 0.0]), Err(Error::Unsorted(1))));
        assert!(matches!(
            Sorted::new(&[0.0, f64::NAN]),
            Err(Error::NonFinite(1))
        ));
        assert!(Sorted::new(&[]).is_ok());
    }

    #[test]
    fn few_distinct_values_sort_by_counting_to_the_same_order() {
        let mut state = 7u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        // Rounded readings with both zeros, and a column of all-different values.
        let few: Vec<f64> = (0..10_000)
            .map(|i| match next() % 50 {
                0 => -0.0,
                1 => 0.0,
                k => (k as f64 - 25.0) * 0.1 + (i % 3) as f64,
            })
            .collect();
        let many: Vec<f64> = (0..10_000).map(|_| next() as f64 / 7.0).collect();
        for values in [few, many] {
            let mut expected = values.clone();
            expected.sort_by(f64::total_cmp);
            let got = SortedSample::from_unsorted(values.clone());
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(got.as_slice()), bits(&expected));
        }
        let few: Vec<f64> = (0..10_000).map(|i| (i % 24) as f64).collect();
        assert_eq!(count_distinct(&few).map(|d| d.len()), Some(24));
        let many: Vec<f64> = (0..10_000).map(f64::from).rev().collect();
        assert_eq!(count_distinct(&many), None);
    }

    #[test]
    fn standard_deviation_over_runs_equals_the_plain_one() {
        let values = s(&[1.0, 1.0, 1.0, 2.5, 2.5, 7.0, 7.0, 7.0, 7.0, -3.0, 0.1]);
        let plain = std_dev(values.as_slice()).unwrap();
        let runs = std_dev_sorted(values.view()).unwrap();
        assert!((plain - runs).abs() <= 1e-15 * plain, "{plain} vs {runs}");
        assert_eq!(std_dev_sorted(SortedSample::default().view()), None);
    }

    #[test]
    fn from_unsorted_drops_missing_values() {
        let x = s(&[3.0, f64::NAN, 1.0, f64::INFINITY, 2.0]);
        assert_eq!(x.as_slice(), &[1.0, 2.0, 3.0]);
    }

    #[test]
    fn empty_sides_give_no_statistics_instead_of_panicking() {
        let empty = SortedSample::default();
        let one = s(&[1.0, 2.0]);
        for binning in [Binning::default(), Binning::Sturges] {
            let st = compare(empty.view(), one.view(), binning);
            assert_eq!(
                (
                    st.psi,
                    st.ks_d,
                    st.ks_p,
                    st.wasserstein_norm,
                    st.jensen_shannon
                ),
                (None, None, None, None, None)
            );
            let st = compare(one.view(), empty.view(), binning);
            assert_eq!((st.psi, st.ks_d, st.wasserstein_norm), (None, None, None));
            let st = compare(empty.view(), empty.view(), binning);
            assert_eq!(st.bins, 0);
        }
    }

    #[test]
    fn constant_reference_has_no_normalised_wasserstein_but_other_statistics() {
        let r = s(&[5.0; 50]);
        let c = s(&[5.0, 6.0, 7.0]);
        let st = compare(r.view(), c.view(), Binning::default());
        assert_eq!(st.wasserstein_norm, None);
        assert!(st.psi.unwrap() > 0.0);
        assert!((st.ks_d.unwrap() - 2.0 / 3.0).abs() < 1e-15);
        let same = compare(r.view(), r.view(), Binning::Sturges);
        assert_eq!(same.psi, Some(0.0));
        assert_eq!(same.jensen_shannon, Some(0.0));
        assert_eq!(same.ks_d, Some(0.0));
        assert_eq!(same.ks_p, Some(1.0));
    }

    #[test]
    fn quantile_bins_hold_values_outside_the_reference_range() {
        let r = s(&(0..100).map(f64::from).collect::<Vec<_>>());
        let bins = Bins::quantile(r.view(), 10).unwrap();
        assert_eq!(bins.len(), 10);
        assert_eq!(bins.bin_of(-1e9), Some(0));
        assert_eq!(bins.bin_of(1e9), Some(9));
        let c = s(&[-5.0, 500.0]);
        assert_eq!(bins.counts(c.view()).iter().sum::<u64>(), 2);
        // Streaming and batch counting agree.
        let mut inc = vec![0u64; bins.len()];
        for x in r.as_slice() {
            inc[bins.bin_of(*x).unwrap()] += 1;
        }
        assert_eq!(inc, bins.counts(r.view()));
    }

    #[test]
    fn tied_quantile_edges_are_merged() {
        let mut v = vec![0.0; 90];
        v.extend((1..=10).map(f64::from));
        let bins = Bins::quantile(s(&v).view(), 10).unwrap();
        assert!(bins.len() < 10);
        assert_eq!(bins.counts(s(&v).view()).iter().sum::<u64>(), 100);
    }

    #[test]
    fn equal_width_bins_close_the_last_edge_like_numpy() {
        let r = s(&(0..=30).map(f64::from).collect::<Vec<_>>());
        let bins = Bins::sturges(r.view(), r.view()).unwrap();
        let Bins::EqualWidth { edges } = &bins else {
            panic!("{bins:?}")
        };
        assert_eq!(*edges.last().unwrap(), 30.0);
        assert_eq!(bins.bin_of(30.0), Some(bins.len() - 1));
        assert_eq!(bins.bin_of(30.5), None);
        assert_eq!(bins.counts(r.view()).iter().sum::<u64>(), 31);
        let mut inc = vec![0u64; bins.len()];
        for x in r.as_slice() {
            inc[bins.bin_of(*x).unwrap()] += 1;
        }
        assert_eq!(inc, bins.counts(r.view()));
    }

    #[test]
    fn psi_and_js_refuse_misaligned_or_empty_counts() {
        assert_eq!(psi(&[1, 2], &[1]), None);
        assert_eq!(psi(&[0, 0], &[1, 1]), None);
        assert_eq!(jensen_shannon(&[1, 2], &[0, 0]), None);
        // Disjoint supports: JS reaches its maximum sqrt(ln 2).
        let js = jensen_shannon(&[5, 0], &[0, 5]).unwrap();
        assert!((js - std::f64::consts::LN_2.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn binning_parses_from_the_command_line_words() {
        assert_eq!(
            "quantile".parse::<Binning>().unwrap(),
            Binning::Quantile { bins: 10 }
        );
        assert_eq!("sturges".parse::<Binning>().unwrap(), Binning::Sturges);
        assert!("deciles".parse::<Binning>().is_err());
    }
}
