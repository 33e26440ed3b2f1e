//! Per-feature incremental state of a window: what one event adds or removes, and the
//! statistics of the whole window computed from it without re-reading the window.
//!
//! A numeric feature keeps, besides its PSI bins, one cell per distinct reference value
//! (values equal to it) and one per gap between two of them (values strictly inside).
//! Both empirical CDFs are then known at every reference value, and inside a gap the
//! reference CDF is flat, so the Kolmogorov-Smirnov D is exact from the cell counts in
//! O(k) for k distinct reference values (at most the profile's 10,000), whatever the
//! window size. The Wasserstein distance (the area between the CDFs) needs, per gap, the
//! count and the sum of the values' distances to one edge; only in a gap where the current
//! CDF crosses the reference's flat level does it need the values themselves, so each
//! inner gap keeps its values sorted: a short vector (a few values a gap when the window
//! resembles the reference), a counted `BTreeMap` once a gap holds many. The outer gaps,
//! where the CDFs cannot cross, keep none. A gap's counters and values share one cache
//! line, so an update touches the search path and two lines.
//!
//! Sums are fixed-point integers ([`Fixed`]): adding and removing is exact, so the state
//! rebuilt from the stored window after a crash is bit for bit the state of a run that
//! never stopped, and so are its reports.

use std::collections::{BTreeMap, HashMap};

use driftline_drift::calibrate::NullCurve;
use driftline_drift::categorical::{self, CategoryCounts};
use driftline_drift::numeric::{self, Bins};
use driftline_drift::{SortedSample, kstwo, quality};
use driftline_schemas::events::{FeatureKind, FeatureProfile};

/// A fixed-point sum with 40 fractional bits: exact under addition and subtraction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fixed(i128);

const FRACTION_BITS: i32 = 40;

impl Fixed {
    pub fn of(x: f64) -> Self {
        Fixed((x * 2f64.powi(FRACTION_BITS)).round() as i128)
    }

    pub fn add(&mut self, x: f64) {
        self.0 += Fixed::of(x).0;
    }

    pub fn sub(&mut self, x: f64) {
        self.0 -= Fixed::of(x).0;
    }

    pub fn value(self) -> f64 {
        self.0 as f64 / 2f64.powi(FRACTION_BITS)
    }
}

/// Statistics of one feature over the window, before any decision.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FeatureStats {
    pub psi: Option<f64>,
    pub ks_d: Option<f64>,
    pub ks_p: Option<f64>,
    pub wasserstein_norm: Option<f64>,
    pub jensen_shannon: Option<f64>,
    pub chi2_p: Option<f64>,
    pub reference_count: u64,
    pub current_count: u64,
    pub reference_missing_share: f64,
    pub current_missing_share: f64,
    /// The data quality checks' counts.
    pub quality: Vec<quality::Count>,
    /// How the distance varies between windows of the reference (from its profile).
    pub null: Option<NullCurve>,
}

/// An f64 as a key ordered like the number (finite values only; -0 is stored as 0).
fn order_key(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 { !b } else { b | 1 << 63 }
}

fn key_value(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// Spacing of [`NumericTracker`]'s search index (16 values: two cache lines).
const STRIDE: usize = 16;

/// A numeric feature: PSI/JS bins, the KS/Wasserstein cells and the order structure.
#[derive(Debug, Clone)]
pub struct NumericTracker {
    reference: SortedSample,
    reference_missing: u64,
    /// The profile's (missing, non-missing) counts, before any subsampling.
    profile_counts: (u64, u64),
    reference_std: Option<f64>,
    bins: Option<Bins>,
    reference_bins: Vec<u64>,
    current_bins: Vec<u64>,
    /// Distinct reference values, ascending (k of them).
    distinct: Vec<f64>,
    /// Every [`STRIDE`]th of `distinct`: a search in this small index, then in one short
    /// run of `distinct`, touches two or three cache lines instead of a dozen.
    index: Vec<f64>,
    /// Reference values at or below `distinct[i]`.
    reference_le: Vec<u64>,
    /// Gap i, (-inf, d0), (d0, d1), ..., (d(k-1), inf), and `distinct[i]`: k + 1 cells.
    cells: Vec<Cell>,
    count: u64,
    missing: u64,
    null: Option<NullCurve>,
}

impl NumericTracker {
    pub fn new(profile: &FeatureProfile, bins: usize) -> Self {
        let reference = SortedSample::from_unsorted(profile.sample.clone());
        let mut distinct: Vec<f64> = reference.as_slice().to_vec();
        distinct.dedup();
        let reference_le: Vec<u64> = distinct
            .iter()
            .map(|d| reference.as_slice().partition_point(|v| v <= d) as u64)
            .collect();
        let binned = Bins::quantile(reference.view(), bins);
        let reference_bins = binned
            .as_ref()
            .map(|b| b.counts(reference.view()))
            .unwrap_or_default();
        let k = distinct.len();
        let index = distinct.iter().step_by(STRIDE).copied().collect();
        Self {
            index,
            reference_std: numeric::std_dev(reference.as_slice()).filter(|s| *s > 0.0),
            // The profile's sample may be a subsample; its missing share is the profile's.
            reference_missing: scale_missing(profile, reference.len()),
            profile_counts: (profile.missing.max(0) as u64, profile.count.max(0) as u64),
            current_bins: vec![0; reference_bins.len()],
            reference_bins,
            bins: binned,
            reference,
            cells: vec![Cell::default(); k + 1],
            distinct,
            reference_le,
            count: 0,
            missing: 0,
            null: NullCurve::fit(&profile.sub_windows),
        }
    }

    /// Where a value goes: `Ok(i)` equal to `distinct[i]`, `Err(g)` inside gap g.
    fn locate(&self, x: f64) -> Result<usize, usize> {
        // index[j] = distinct[j * STRIDE]: the answer lies in the run after the last index
        // entry below x.
        let j = self.index.partition_point(|d| *d < x);
        let start = j.saturating_sub(1) * STRIDE;
        let end = (j * STRIDE).min(self.distinct.len());
        let g = start + self.distinct[start..end].partition_point(|d| *d < x);
        if self.distinct.get(g) == Some(&x) {
            Ok(g)
        } else {
            Err(g)
        }
    }

    fn gap_distance_of(&self, g: usize, x: f64) -> f64 {
        let k = self.distinct.len();
        if g == k {
            // The last gap (or the only one, with an empty reference): from its left edge.
            self.distinct.last().map_or(0.0, |d| x - d)
        } else {
            self.distinct[g] - x
        }
    }

    /// Adds (`add`) or removes one value; `None` is a missing value.
    pub fn update(&mut self, x: Option<f64>, add: bool) {
        let Some(x) = x.filter(|x| x.is_finite()) else {
            if add {
                self.missing += 1
            } else {
                self.missing -= 1
            }
            return;
        };
        let x = if x == 0.0 { 0.0 } else { x };
        let step = |c: &mut u64| if add { *c += 1 } else { *c -= 1 };
        step(&mut self.count);
        if let Some(b) = self.bins.as_ref().and_then(|b| b.bin_of(x)) {
            step(&mut self.current_bins[b]);
        }
        match self.locate(x) {
            Ok(i) => step(&mut self.cells[i].at),
            Err(g) => {
                let dist = self.gap_distance_of(g, x);
                let inner = g > 0 && g < self.distinct.len();
                let cell = &mut self.cells[g];
                step(&mut cell.count);
                if add {
                    cell.distance.add(dist);
                    if inner {
                        cell.values.insert(order_key(x));
                    }
                } else {
                    cell.distance.sub(dist);
                    if inner {
                        cell.values.remove(order_key(x));
                    }
                }
            }
        }
    }

    /// Missing values, and values in the outer gaps: below or above every reference value.
    fn quality(&self) -> Vec<quality::Count> {
        let mut out = vec![quality::Count::missing(
            self.profile_counts,
            (self.missing, self.count),
        )];
        let outer = self.cells[0].count + self.cells[self.distinct.len()].count;
        out.extend(quality::Count::outside_range(
            self.reference.len() as u64,
            outer,
            self.count,
        ));
        out
    }

    /// The window's statistics against the reference.
    pub fn stats(&self) -> FeatureStats {
        let (n, m) = (self.reference.len() as u64, self.count);
        let mut s = FeatureStats {
            reference_count: n,
            current_count: m,
            reference_missing_share: share(self.reference_missing, n),
            current_missing_share: share(self.missing, m),
            quality: self.quality(),
            null: self.null,
            ..Default::default()
        };
        if n == 0 || m == 0 {
            return s;
        }
        if self.bins.is_some() {
            s.psi = numeric::psi(&self.reference_bins, &self.current_bins);
            s.jensen_shannon = numeric::jensen_shannon(&self.reference_bins, &self.current_bins);
        }
        let (d, area) = self.ks_and_area();
        s.ks_d = Some(d);
        // SciPy's own p-value at every size: since the Smirnov sum runs in log space it
        // costs at most ~0.3 ms a feature (effective size <= the 10k-value reference).
        s.ks_p = Some(kstwo::ks_2samp_pvalue(d, n, m));
        s.wasserstein_norm = self.reference_std.map(|sd| area / sd);
        s
    }

    /// KS D (as SciPy computes it) and the area between the two CDFs, in one pass over the
    /// reference's cells (plus, for the gaps where the current CDF crosses the reference's
    /// level, the values in them).
    fn ks_and_area(&self) -> (f64, f64) {
        let (nf, mf) = (self.reference.len() as f64, self.count as f64);
        let k = self.distinct.len();
        let mut d: f64 = 0.0;
        let mut area = 0.0;
        let mut crossings = Vec::new();
        let mut cum = 0u64; // current values at or below the previous reference value
        for g in 0..=k {
            let level = if g == 0 {
                0.0
            } else {
                self.reference_le[g - 1] as f64 / nf
            };
            let inside = self.cells[g].count;
            // Inside the gap the reference CDF is flat at `level`; the current one climbs
            // from cum/m to (cum + inside)/m.
            let (lo, hi) = (cum as f64 / mf, (cum + inside) as f64 / mf);
            d = d.max((level - lo).abs()).max((level - hi).abs());
            match self.gap_area(g, level, cum, inside) {
                Some(a) => area += a,
                None => crossings.push((g, level, cum)),
            }
            cum += inside;
            if g < k {
                cum += self.cells[g].at;
                let r = self.reference_le[g] as f64 / nf;
                d = d.max((r - cum as f64 / mf).abs());
            }
        }
        (d, area + self.crossing_area(&crossings))
    }

    /// The area between the CDFs inside gap g, or `None` when the current CDF crosses the
    /// reference's flat level there (then the values in the gap are needed).
    fn gap_area(&self, g: usize, level: f64, cum: u64, inside: u64) -> Option<f64> {
        let k = self.distinct.len();
        let mf = self.count as f64;
        let dist = self.cells[g].distance.value();
        if g == 0 || g == k {
            // Below the reference the CDFs are 0 and rising (each value v adds (d0 - v)/m);
            // above it 1 and rising to 1 (each value adds (v - d(k-1))/m): no crossing.
            return Some(dist / mf);
        }
        let width = self.distinct[g] - self.distinct[g - 1];
        // Integral of the current CDF over the gap.
        let integral = cum as f64 / mf * width + dist / mf;
        if cum as f64 / mf >= level {
            Some(integral - level * width)
        } else if (cum + inside) as f64 / mf <= level {
            Some(level * width - integral)
        } else {
            None
        }
    }

    /// The area in the (inner) gaps where the CDFs cross, walking the values in them.
    fn crossing_area(&self, crossings: &[(usize, f64, u64)]) -> f64 {
        let mf = self.count as f64;
        crossings
            .iter()
            .map(|&(g, level, cum)| {
                let (mut x, mut c, mut a) = (self.distinct[g - 1], cum, 0.0);
                self.cells[g].values.for_each(|v, n| {
                    a += (c as f64 / mf - level).abs() * (v - x);
                    x = v;
                    c += u64::from(n);
                });
                a + (c as f64 / mf - level).abs() * (self.distinct[g] - x)
            })
            .sum()
    }
}

/// One gap's share of the window (see the module doc).
#[derive(Debug, Clone, Default)]
struct Cell {
    /// Current values equal to the reference value that closes the gap.
    at: u64,
    /// Current values strictly inside the gap.
    count: u64,
    /// The sum of each inside value's distance to the gap's finite edge: the right edge for
    /// every gap but the last, the left edge for the last.
    distance: Fixed,
    /// The inside values (inner gaps only).
    values: GapValues,
}

/// Above this many values a gap's sorted vector becomes a tree (inserting into a vector
/// moves its tail: cheap while short, O(n) when a drifted window piles into one gap).
const FEW: usize = 128;

/// Order keys ([`order_key`]) of the values in one gap, as a sorted multiset.
#[derive(Debug, Clone)]
enum GapValues {
    Few(Vec<u64>),
    Many(BTreeMap<u64, u32>),
}

impl Default for GapValues {
    fn default() -> Self {
        GapValues::Few(Vec::new())
    }
}

impl GapValues {
    fn insert(&mut self, key: u64) {
        match self {
            GapValues::Few(v) => {
                let i = v.partition_point(|k| *k <= key);
                v.insert(i, key);
                if v.len() > FEW {
                    let mut tree = BTreeMap::new();
                    for k in v.drain(..) {
                        *tree.entry(k).or_insert(0) += 1;
                    }
                    *self = GapValues::Many(tree);
                }
            }
            GapValues::Many(tree) => *tree.entry(key).or_insert(0) += 1,
        }
    }

    fn remove(&mut self, key: u64) {
        match self {
            GapValues::Few(v) => {
                if let Ok(i) = v.binary_search(&key) {
                    v.remove(i);
                }
            }
            GapValues::Many(tree) => {
                if let Some(c) = tree.get_mut(&key) {
                    *c -= 1;
                    if *c == 0 {
                        tree.remove(&key);
                    }
                }
            }
        }
    }

    /// Each distinct value, ascending, with its multiplicity (equal values may come as
    /// separate calls).
    fn for_each(&self, mut f: impl FnMut(f64, u32)) {
        match self {
            GapValues::Few(v) => v.iter().for_each(|k| f(key_value(*k), 1)),
            GapValues::Many(tree) => tree.iter().for_each(|(k, n)| f(key_value(*k), *n)),
        }
    }
}

/// The missing count scaled to a (sub)sample of `kept` values, so the share is the
/// profile's.
fn scale_missing(profile: &FeatureProfile, kept: usize) -> u64 {
    if profile.count <= 0 || kept as i64 == profile.count {
        return profile.missing.max(0) as u64;
    }
    let share = profile.missing.max(0) as f64 / (profile.count + profile.missing.max(0)) as f64;
    // missing / (kept + missing) = share
    if share >= 1.0 {
        return profile.missing.max(0) as u64;
    }
    (share * kept as f64 / (1.0 - share)).round() as u64
}

fn share(missing: u64, count: u64) -> f64 {
    let all = missing + count;
    if all == 0 {
        0.0
    } else {
        missing as f64 / all as f64
    }
}

/// Labels beyond this many per feature are counted under [`OTHER`], so a feature flooded
/// with unique strings cannot grow the state without bound.
pub const MAX_LABELS: usize = 10_000;
pub const OTHER: &str = "<other>";

/// A categorical feature: counts per label.
#[derive(Debug, Clone)]
pub struct CategoricalTracker {
    reference: CategoryCounts,
    labels: Vec<String>,
    index: HashMap<String, u32>,
    counts: Vec<u64>,
    count: u64,
    missing: u64,
    null: Option<NullCurve>,
}

impl CategoricalTracker {
    pub fn new(profile: &FeatureProfile) -> Self {
        let reference = CategoryCounts {
            counts: profile
                .categories
                .iter()
                .map(|(k, v)| (k.clone(), (*v).max(0) as u64))
                .collect(),
            missing: profile.missing.max(0) as u64,
        };
        Self {
            reference,
            labels: Vec::new(),
            index: HashMap::new(),
            counts: Vec::new(),
            count: 0,
            missing: 0,
            null: NullCurve::fit(&profile.sub_windows),
        }
    }

    fn id(&mut self, label: &str) -> u32 {
        if let Some(i) = self.index.get(label) {
            return *i;
        }
        let label = if self.labels.len() >= MAX_LABELS {
            OTHER
        } else {
            label
        };
        if let Some(i) = self.index.get(label) {
            return *i;
        }
        let i = self.labels.len() as u32;
        self.labels.push(label.to_string());
        self.index.insert(label.to_string(), i);
        self.counts.push(0);
        i
    }

    /// Adds one value; returns its label id (`None` for a missing value), which is what
    /// the window keeps to remove it later.
    pub fn add(&mut self, label: Option<&str>) -> Option<u32> {
        match label {
            None => {
                self.missing += 1;
                None
            }
            Some(l) => {
                let i = self.id(l);
                self.counts[i as usize] += 1;
                self.count += 1;
                Some(i)
            }
        }
    }

    /// The labels by id (as [`CategoricalTracker::add`] numbers them).
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Removes a value added before, by the id [`CategoricalTracker::add`] returned.
    pub fn remove(&mut self, id: Option<u32>) {
        match id {
            None => self.missing -= 1,
            Some(i) => {
                self.counts[i as usize] -= 1;
                self.count -= 1;
            }
        }
    }

    pub fn stats(&self) -> FeatureStats {
        let current = CategoryCounts {
            counts: self
                .labels
                .iter()
                .zip(&self.counts)
                .filter(|(_, c)| **c > 0)
                .map(|(l, c)| (l.clone(), *c))
                .collect(),
            missing: self.missing,
        };
        let st = categorical::compare(&self.reference, &current);
        let quality = std::iter::once(quality::Count::missing(
            (self.reference.missing, self.reference.total()),
            (self.missing, self.count),
        ))
        .chain(quality::Count::unseen(&self.reference, &current))
        .collect();
        FeatureStats {
            quality,
            psi: st.psi,
            jensen_shannon: st.jensen_shannon,
            chi2_p: st.chi2.map(|c| c.p),
            reference_count: self.reference.total(),
            current_count: self.count,
            reference_missing_share: share(self.reference.missing, self.reference.total()),
            current_missing_share: share(self.missing, self.count),
            null: self.null,
            ..Default::default()
        }
    }
}

/// One feature's tracker.
#[derive(Debug, Clone)]
pub enum Tracker {
    Numeric(Box<NumericTracker>),
    Categorical(CategoricalTracker),
}

impl Tracker {
    pub fn new(profile: &FeatureProfile, bins: usize) -> Self {
        match profile.kind {
            FeatureKind::Numeric => Tracker::Numeric(Box::new(NumericTracker::new(profile, bins))),
            FeatureKind::Categorical => Tracker::Categorical(CategoricalTracker::new(profile)),
        }
    }

    pub fn kind(&self) -> FeatureKind {
        match self {
            Tracker::Numeric(_) => FeatureKind::Numeric,
            Tracker::Categorical(_) => FeatureKind::Categorical,
        }
    }

    pub fn stats(&self) -> FeatureStats {
        match self {
            Tracker::Numeric(t) => t.stats(),
            Tracker::Categorical(t) => t.stats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftline_drift::numeric::Binning;
    use rand::{Rng, SeedableRng};

    fn profile(sample: Vec<f64>) -> FeatureProfile {
        let mut sample = sample;
        sample.sort_by(f64::total_cmp);
        FeatureProfile {
            name: "x".into(),
            kind: FeatureKind::Numeric,
            count: sample.len() as i64,
            missing: 0,
            sample,
            categories: Default::default(),
            sub_windows: Vec::new(),
        }
    }

    fn batch(reference: &[f64], current: &[f64]) -> numeric::NumericStats {
        let r = SortedSample::from_unsorted(reference.to_vec());
        let c = SortedSample::from_unsorted(current.to_vec());
        numeric::compare(r.view(), c.view(), Binning::default())
    }

    fn close(a: Option<f64>, b: Option<f64>, tol: f64) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= tol * (1.0 + b.abs()),
            (None, None) => true,
            _ => false,
        }
    }

    #[test]
    fn order_keys_sort_like_numbers_and_round_trip() {
        let xs = [-1e300, -2.5, -1e-300, 0.0, 1e-300, 3.0, 1e300];
        for w in xs.windows(2) {
            assert!(order_key(w[0]) < order_key(w[1]));
        }
        for x in xs {
            assert_eq!(key_value(order_key(x)), x);
        }
    }

    #[test]
    fn incremental_statistics_equal_the_batch_ones_after_adds_and_removes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for case in 0..30 {
            // Discrete and continuous data, shifted or not, with ties with the reference.
            let discrete = case % 2 == 0;
            let draw = |rng: &mut rand::rngs::StdRng, shift: f64| {
                let x: f64 = rng.random::<f64>() * 10.0 + shift;
                if discrete { x.round() } else { x }
            };
            let reference: Vec<f64> = (0..500).map(|_| draw(&mut rng, 0.0)).collect();
            let shift = (case % 5) as f64 * 0.7;
            let all: Vec<f64> = (0..900).map(|_| draw(&mut rng, shift)).collect();
            let mut t = NumericTracker::new(&profile(reference.clone()), 10);
            for x in &all {
                t.update(Some(*x), true);
            }
            // A window is what stays after evicting the oldest 300.
            for x in &all[..300] {
                t.update(Some(*x), false);
            }
            t.update(None, true);
            let want = batch(&reference, &all[300..]);
            let got = t.stats();
            assert_eq!(got.ks_d, want.ks_d, "case {case}: KS D is exact");
            assert_eq!(got.ks_p, want.ks_p, "case {case}");
            assert_eq!(got.psi, want.psi, "case {case}");
            assert_eq!(got.jensen_shannon, want.jensen_shannon, "case {case}");
            assert!(
                close(got.wasserstein_norm, want.wasserstein_norm, 1e-9),
                "case {case}: {:?} vs {:?}",
                got.wasserstein_norm,
                want.wasserstein_norm
            );
            assert_eq!(got.current_count, 600);
            assert!((got.current_missing_share - 1.0 / 601.0).abs() < 1e-15);
            // The outer gaps' counts are the values outside the reference's range.
            let mut window = all[300..].to_vec();
            window.sort_by(f64::total_cmp);
            let mut sorted = reference.clone();
            sorted.sort_by(f64::total_cmp);
            assert_eq!(
                got.quality[1],
                quality::Count::out_of_range(&sorted, &window).unwrap(),
                "case {case}"
            );
            assert_eq!((got.quality[0].hits, got.quality[0].total), (1, 601));
        }
    }

    #[test]
    fn unseen_categories_and_missing_values_are_counted_for_the_quality_checks() {
        let profile = FeatureProfile {
            name: "c".into(),
            kind: FeatureKind::Categorical,
            count: 4,
            missing: 1,
            sample: vec![],
            categories: [
                ("a".to_string(), 2),
                ("b".to_string(), 1),
                ("c".to_string(), 1),
            ]
            .into(),
            sub_windows: Vec::new(),
        };
        let mut t = CategoricalTracker::new(&profile);
        let z = t.add(Some("z"));
        for label in [Some("a"), Some("z"), Some("y"), None] {
            t.add(label);
        }
        t.remove(z);
        let q = t.stats().quality;
        assert_eq!(q[0], quality::Count::missing((1, 4), (1, 3)));
        assert_eq!(
            q[1],
            quality::Count {
                check: quality::Check::UnseenCategory,
                // Two of the four reference values are in a category seen once.
                null: quality::Null::unseen(2, 4).unwrap(),
                hits: 2,
                total: 3,
            }
        );
    }

    #[test]
    fn values_outside_the_reference_range_count_in_every_statistic() {
        let reference: Vec<f64> = (0..100).map(f64::from).collect();
        let current: Vec<f64> = (0..100).map(|i| f64::from(i) * 3.0 - 100.0).collect();
        let mut t = NumericTracker::new(&profile(reference.clone()), 10);
        current.iter().for_each(|x| t.update(Some(*x), true));
        let want = batch(&reference, &current);
        let got = t.stats();
        assert_eq!(got.ks_d, want.ks_d);
        assert!(close(got.wasserstein_norm, want.wasserstein_norm, 1e-9));
    }

    #[test]
    fn an_empty_window_or_reference_has_no_statistics() {
        let t = NumericTracker::new(&profile(vec![1.0, 2.0]), 10);
        assert_eq!(t.stats().ks_d, None);
        let mut t = NumericTracker::new(&profile(vec![]), 10);
        t.update(Some(1.0), true);
        let s = t.stats();
        assert_eq!((s.ks_d, s.psi, s.wasserstein_norm), (None, None, None));
    }

    #[test]
    fn categorical_counts_follow_adds_and_removes() {
        let p = FeatureProfile {
            name: "c".into(),
            kind: FeatureKind::Categorical,
            count: 4,
            missing: 0,
            sample: vec![],
            categories: [("a".to_string(), 2), ("b".to_string(), 2)].into(),
            sub_windows: Vec::new(),
        };
        let mut t = CategoricalTracker::new(&p);
        let ids: Vec<_> = ["a", "b", "z", "z"]
            .iter()
            .map(|l| t.add(Some(l)))
            .collect();
        t.remove(ids[2]);
        t.remove(ids[3]);
        let s = t.stats();
        assert_eq!(s.psi, Some(0.0));
        assert_eq!(s.current_count, 2);
    }

    #[test]
    fn a_window_piled_into_one_gap_of_the_reference_keeps_exact_statistics() {
        // Twenty reference values 5 apart; the window lands between two of them, so that
        // gap's values outgrow the short vector and its CDFs cross (Wasserstein walks them).
        let reference: Vec<f64> = (0..20).map(|i| i as f64 * 5.0).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let all: Vec<f64> = (0..2_000)
            .map(|_| 40.0 + rng.random::<f64>() * 5.0)
            .collect();
        let mut t = NumericTracker::new(&profile(reference.clone()), 10);
        all.iter().for_each(|x| t.update(Some(*x), true));
        all[..700].iter().for_each(|x| t.update(Some(*x), false));
        assert!(matches!(t.cells[9].values, GapValues::Many(_)));
        let want = batch(&reference, &all[700..]);
        let got = t.stats();
        assert_eq!(got.ks_d, want.ks_d);
        assert!(close(got.wasserstein_norm, want.wasserstein_norm, 1e-9));
        // Back below the threshold the tree still answers.
        all[700..1_950]
            .iter()
            .for_each(|x| t.update(Some(*x), false));
        let want = batch(&reference, &all[1_950..]);
        assert!(close(
            t.stats().wasserstein_norm,
            want.wasserstein_norm,
            1e-9
        ));
    }

    #[test]
    fn fixed_point_sums_undo_exactly() {
        let mut s = Fixed::default();
        let xs = [0.1, 1e6 + 0.3, -7.25, 1e-9];
        xs.iter().for_each(|x| s.add(*x));
        xs.iter().rev().for_each(|x| s.sub(*x));
        assert_eq!(s, Fixed::default());
    }
}
