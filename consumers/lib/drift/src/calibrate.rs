//! Thresholds from the reference: how much a drift distance, or a mean error, varies
//! between windows of a given size when nothing has changed.
//!
//! The trainer cuts the reference, in time order, into consecutive sub-windows of 100,
//! 200, 400, ... values (while at least [`MIN_SUB_WINDOWS`] fit), measures the statistic of
//! each sub-window against the rest of the reference, and ships each size's mean and
//! standard deviation ([`SubWindows`]). Sub-windows in time order keep the data's own
//! autocorrelation (a weather spell, a weekly rhythm), which resampling rows would
//! destroy: on such streams the variation between windows is far above the sampling noise
//! of independent rows, and a line set from resamples would raise alarms on ordinary days.
//!
//! The monitor fits the mean and the standard deviation as power laws of the window size
//! ([`NullCurve`], the exponent kept in [-1/2, 0]: -1/2 is independent rows, 0 a stream
//! whose windows never average out), reads both at its window's size, and sets the line at
//! the upper α-quantile of the gamma distribution with that mean and standard deviation
//! (distances and errors are positive and skewed to the right).

use driftline_schemas::events::SubWindows;
use statrs::distribution::{ContinuousCDF, Normal};

use crate::numeric::{self, Sorted};

/// The smallest sub-window.
pub const FIRST_SIZE: usize = 100;
/// A size is measured only when this many sub-windows fit in the reference.
pub const MIN_SUB_WINDOWS: usize = 5;
/// At most this many sub-windows of one size are measured, evenly spread over the
/// reference (bounds the trainer's work on a long reference).
pub const MAX_SUB_WINDOWS: usize = 500;

/// The sub-window sizes for a reference of `len` values: 100, 200, 400, ...
pub fn sizes(len: usize) -> impl Iterator<Item = usize> {
    std::iter::successors(Some(FIRST_SIZE), |s| s.checked_mul(2))
        .take_while(move |s| len / s >= MIN_SUB_WINDOWS)
}

/// The start of each measured sub-window of `size` in `len` values: every one, or
/// [`MAX_SUB_WINDOWS`] of them evenly spread.
fn starts(len: usize, size: usize) -> impl Iterator<Item = usize> {
    let fit = len / size;
    let take = fit.min(MAX_SUB_WINDOWS);
    (0..take).map(move |i| i * fit / take * size)
}

/// The mean and sample standard deviation of one size's values (`None` for fewer than
/// two finite ones).
fn summarise(size: usize, values: &[f64]) -> Option<SubWindows> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.len() < 2 {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)).sqrt();
    Some(SubWindows {
        window: size as i64,
        count: v.len() as i64,
        mean,
        sd,
    })
}

/// The normalised Wasserstein distance of each sub-window of `values` (a numeric feature's
/// non-missing values in time order) against the rest of them, per size. `reference` is
/// the sorted sample the monitor compares with (all of `values`, or evenly spaced order
/// statistics of them). Empty when the reference is constant (the distance is undefined).
///
/// The distance to the rest needs no second sort: with F the CDF of all N values and Fₛ
/// that of a sub-window of s, the rest's CDF is (N·F − s·Fₛ)/(N − s), so
/// W₁(sub-window, rest) = N/(N − s) · W₁(sub-window, all).
pub fn numeric_sub_windows(values: &[f64], reference: Sorted<'_>) -> Vec<SubWindows> {
    let Some(sd) = numeric::std_dev(reference.as_slice()).filter(|s| *s > 0.0) else {
        return Vec::new();
    };
    let n = values.len() as f64;
    let mut buf = Vec::new();
    sizes(values.len())
        .filter_map(|size| {
            let d: Vec<f64> = starts(values.len(), size)
                .filter_map(|at| {
                    buf.clear();
                    buf.extend_from_slice(&values[at..at + size]);
                    buf.sort_by(f64::total_cmp);
                    let w = numeric::wasserstein(reference, Sorted::new(&buf).ok()?)?;
                    Some(w * n / (n - size as f64) / sd)
                })
                .collect();
            summarise(size, &d)
        })
        .collect()
}

/// The Jensen-Shannon distance of each sub-window of `labels` (a categorical feature's
/// non-missing values in time order, as category numbers `0..categories`) against the
/// rest of them, per size.
pub fn categorical_sub_windows(labels: &[u32], categories: usize) -> Vec<SubWindows> {
    let mut all = vec![0u64; categories];
    for l in labels {
        all[*l as usize] += 1;
    }
    let (mut sub, mut rest) = (vec![0u64; categories], vec![0u64; categories]);
    sizes(labels.len())
        .filter_map(|size| {
            let d: Vec<f64> = starts(labels.len(), size)
                .filter_map(|at| {
                    sub.iter_mut().for_each(|c| *c = 0);
                    for l in &labels[at..at + size] {
                        sub[*l as usize] += 1;
                    }
                    rest.iter_mut()
                        .zip(&all)
                        .zip(&sub)
                        .for_each(|((r, a), s)| *r = a - s);
                    numeric::jensen_shannon(&rest, &sub)
                })
                .collect();
            summarise(size, &d)
        })
        .collect()
}

/// The mean of each sub-window of `errors` (per-row errors in time order), per size.
pub fn mean_sub_windows(errors: &[f64]) -> Vec<SubWindows> {
    sizes(errors.len())
        .filter_map(|size| {
            let means: Vec<f64> = starts(errors.len(), size)
                .map(|at| errors[at..at + size].iter().sum::<f64>() / size as f64)
                .collect();
            summarise(size, &means)
        })
        .collect()
}

/// y = a·n^b, fitted in log-log space.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PowerLaw {
    ln_a: f64,
    b: f64,
}

impl PowerLaw {
    /// Weighted least squares of ln y on ln n, the slope kept in [-1/2, 0] (one point: -1/2).
    fn fit(points: &[(f64, f64, f64)]) -> Self {
        let w: f64 = points.iter().map(|p| p.2).sum();
        let mx = points.iter().map(|p| p.2 * p.0.ln()).sum::<f64>() / w;
        let my = points.iter().map(|p| p.2 * p.1.ln()).sum::<f64>() / w;
        let sxx: f64 = points.iter().map(|p| p.2 * (p.0.ln() - mx).powi(2)).sum();
        let sxy: f64 = points
            .iter()
            .map(|p| p.2 * (p.0.ln() - mx) * (p.1.ln() - my))
            .sum();
        let b = if sxx > 0.0 { sxy / sxx } else { -0.5 }.clamp(-0.5, 0.0);
        Self {
            ln_a: my - b * mx,
            b,
        }
    }

    fn at(self, n: f64) -> f64 {
        (self.ln_a + self.b * n.ln()).exp()
    }
}

/// A statistic's null distribution as a function of the window's size, fitted from the
/// reference's sub-windows (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NullCurve {
    mean: PowerLaw,
    sd: PowerLaw,
    /// The smallest and largest sub-window measured.
    sizes: (i64, i64),
}

impl NullCurve {
    /// `None` without a usable size (two or more sub-windows, a positive mean and sd).
    pub fn fit(sub_windows: &[SubWindows]) -> Option<Self> {
        let usable: Vec<&SubWindows> = sub_windows
            .iter()
            .filter(|w| {
                w.window > 0
                    && w.count >= 2
                    && w.mean.is_finite()
                    && w.sd.is_finite()
                    && w.mean > 0.0
                    && w.sd > 0.0
            })
            .collect();
        let first = usable.first()?;
        let weight = |w: &SubWindows| (w.count - 1) as f64;
        let points = |y: fn(&SubWindows) -> f64| -> Vec<(f64, f64, f64)> {
            usable
                .iter()
                .map(|w| (w.window as f64, y(w), weight(w)))
                .collect()
        };
        Some(Self {
            mean: PowerLaw::fit(&points(|w| w.mean)),
            sd: PowerLaw::fit(&points(|w| w.sd)),
            sizes: (
                first.window,
                usable
                    .iter()
                    .map(|w| w.window)
                    .max()
                    .unwrap_or(first.window),
            ),
        })
    }

    /// The statistic's mean and standard deviation over windows of `n` values.
    pub fn at(&self, n: u64) -> (f64, f64) {
        let n = n.max(1) as f64;
        (self.mean.at(n), self.sd.at(n))
    }

    /// The line a window of `n` values crosses with chance `alpha` when nothing has
    /// changed: the upper `alpha`-quantile of the gamma distribution with [`Self::at`]'s
    /// mean and sd, by the Wilson-Hilferty cube-root normal approximation (at rates below
    /// 1% it is above SciPy's exact quantile, by under 1.2% from shape 10 and at most 15%
    /// at shape 1/2: tests/scipy_fixtures.rs).
    pub fn threshold(&self, n: u64, alpha: f64) -> f64 {
        let (mean, sd) = self.at(n);
        gamma_upper_quantile(mean, sd, alpha)
    }

    /// The smallest and largest sub-window the curve was fitted on.
    pub fn sizes(&self) -> (i64, i64) {
        self.sizes
    }
}

/// The line of a window-wide statistic over `n` events from its null curve (fitted on
/// the `whose` sub-windows), and how it was set: with calibrated distances, the gamma tail
/// at one check's share of the false-alarm rate in an evaluation of `features` features;
/// otherwise NannyML's mean + 3 sd.
pub fn line(
    null: &NullCurve,
    n: u64,
    calibration: Option<crate::policy::Calibration>,
    features: usize,
    whose: &str,
) -> (f64, String) {
    let (small, large) = null.sizes();
    let from = format!("from the {whose} sub-windows of {small} to {large} rows");
    match calibration {
        Some(c) if c.distances => {
            let alpha = c.per_check(features);
            let line = null.threshold(n, alpha);
            (line, format!("{from}: a gamma tail of {alpha:.1e}"))
        }
        _ => {
            let (mean, sd) = null.at(n);
            (
                mean + 3.0 * sd,
                format!("{from}: mean + 3 sd (NannyML's rule)"),
            )
        }
    }
}

/// The upper `alpha`-quantile of the gamma distribution with this mean and standard
/// deviation (Wilson-Hilferty: for shape k, Gamma(k, 1)'s quantile is about
/// k·(1 − 1/(9k) + z/(3√k))³ with z the normal quantile).
pub fn gamma_upper_quantile(mean: f64, sd: f64, alpha: f64) -> f64 {
    let k = (mean / sd).powi(2);
    let scale = sd * sd / mean;
    let z = Normal::standard().inverse_cdf(1.0 - alpha);
    let c = (1.0 - 1.0 / (9.0 * k) + z / (3.0 * k.sqrt())).max(0.0);
    k * scale * c * c * c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic standard normal stream (Box-Muller on a xorshift).
    fn normals(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        let mut u = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        move || {
            let (a, b) = (u().max(1e-300), u());
            (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
        }
    }

    /// An AR(1) stream: x[t] = φ·x[t-1] + noise, stationary sd 1.
    fn ar1(phi: f64, len: usize, seed: u64) -> Vec<f64> {
        let mut z = normals(seed);
        let mut x = z();
        (0..len)
            .map(|_| {
                x = phi * x + (1.0 - phi * phi).sqrt() * z();
                x
            })
            .collect()
    }

    fn sorted(v: &[f64]) -> Vec<f64> {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s
    }

    #[test]
    fn sizes_double_while_five_sub_windows_fit() {
        assert_eq!(sizes(1_000).collect::<Vec<_>>(), [100, 200]);
        assert_eq!(sizes(499).count(), 0);
        assert_eq!(
            starts(1_000, 200).collect::<Vec<_>>(),
            [0, 200, 400, 600, 800]
        );
        let spread: Vec<usize> = starts(1_000_000, 100).collect();
        assert_eq!(spread.len(), MAX_SUB_WINDOWS);
        assert_eq!((spread[0], spread[1]), (0, 2_000));
    }

    #[test]
    fn a_window_of_independent_rows_varies_like_one_over_root_n() {
        let mut z = normals(7);
        let values: Vec<f64> = (0..50_000).map(|_| z()).collect();
        let reference = sorted(&values);
        let w = numeric_sub_windows(&values, Sorted::new(&reference).unwrap());
        assert_eq!(w.first().map(|w| w.window), Some(100));
        assert_eq!(w.last().map(|w| w.window), Some(6_400));
        let curve = NullCurve::fit(&w).unwrap();
        // The Wasserstein distance of n independent normal values to their distribution
        // falls like 1/sqrt(n): about 0.92/sqrt(n) sd (sqrt(2/pi) times the integral of
        // sqrt(F(1 - F))), here a little more, against a 10,000-value sample of the rest.
        assert!((-0.5..=-0.45).contains(&curve.mean.b), "{curve:?}");
        assert!((-0.5..=-0.4).contains(&curve.sd.b), "{curve:?}");
        let (mean, _) = curve.at(1_000);
        assert!((0.92 / 1_000f64.sqrt()..0.05).contains(&mean), "{mean}");
    }

    #[test]
    fn an_autocorrelated_stream_gets_a_wider_line_than_independent_rows() {
        // Slow swings (φ = 0.999: about 1,000 rows between independent values) are normal
        // for this stream: a window of 5,000 rows can sit a whole sd from the overall mean.
        let values = ar1(0.999, 100_000, 11);
        let reference = sorted(&values);
        let calm = NullCurve::fit(&numeric_sub_windows(
            &values,
            Sorted::new(&reference).unwrap(),
        ))
        .unwrap();
        let mut z = normals(11);
        let iid: Vec<f64> = (0..100_000).map(|_| z()).collect();
        let iid_ref = sorted(&iid);
        let noise =
            NullCurve::fit(&numeric_sub_windows(&iid, Sorted::new(&iid_ref).unwrap())).unwrap();
        let (a, b) = (calm.threshold(5_000, 1e-3), noise.threshold(5_000, 1e-3));
        assert!(a > 5.0 * b, "autocorrelated {a}, independent {b}");
        assert!(b < 0.1 && a > 0.3, "the fixed 0.1 fits neither: {a}, {b}");
        // The continuation of the same stream crosses its line rarely.
        let later = ar1(0.999, 200_000, 12);
        let fired = later
            .chunks(5_000)
            .filter(|w| {
                let d = numeric::wasserstein(
                    Sorted::new(&reference).unwrap(),
                    Sorted::new(&sorted(w)).unwrap(),
                )
                .unwrap()
                    / numeric::std_dev(&reference).unwrap();
                d >= a
            })
            .count();
        assert!(fired <= 1, "{fired} of 40 windows");
    }

    #[test]
    fn categories_measure_against_the_rest() {
        // Alternating runs of 500 of each category: windows of 100 are all one category.
        let labels: Vec<u32> = (0..10_000).map(|i| (i / 500 % 2) as u32).collect();
        let w = categorical_sub_windows(&labels, 2);
        let small = w.iter().find(|w| w.window == 100).unwrap();
        // A window of one category against the rest, half of each.
        let want = numeric::jensen_shannon(&[4_900, 5_000], &[100, 0]).unwrap();
        assert!((small.mean - want).abs() < 1e-12, "{small:?} {want}");
        assert!(small.sd < 1e-12);
    }

    #[test]
    fn mean_errors_keep_their_level_and_narrow_with_size() {
        let mut z = normals(3);
        let errors: Vec<f64> = (0..20_000).map(|_| z().abs()).collect();
        let w = mean_sub_windows(&errors);
        let curve = NullCurve::fit(&w).unwrap();
        assert!(curve.mean.b.abs() < 0.01, "{curve:?}");
        assert!((-0.5..=-0.4).contains(&curve.sd.b), "{curve:?}");
    }

    #[test]
    fn unusable_sub_windows_give_no_curve() {
        assert_eq!(NullCurve::fit(&[]), None);
        let flat = SubWindows {
            window: 100,
            count: 10,
            mean: 0.0,
            sd: 0.0,
        };
        assert_eq!(NullCurve::fit(&[flat]), None);
        let one = NullCurve::fit(&[SubWindows {
            mean: 0.1,
            sd: 0.02,
            ..flat
        }])
        .unwrap();
        assert_eq!(one.mean.b, -0.5, "one size: independent rows assumed");
        assert!((one.at(400).0 - 0.05).abs() < 1e-12);
    }
}
