//! Multivariate drift as NannyML measures it: the PCA reconstruction error.
//!
//! A change in how features move together (two features that used to rise together now
//! moving apart) can leave every feature's own distribution where it was, so no
//! per-feature distance sees it. Fitted on the reference ([`fit`]): missing values are
//! imputed (a numeric column's mean, a categorical column's most frequent label),
//! categories become their share of the reference (count encoding, an unseen category 0),
//! each column is standardised (mean 0, population sd 1), and a PCA keeps the fewest
//! components that explain more than [`VARIANCE_KEPT`] of the variance. A row's error is
//! the Euclidean distance between its standardised vector and its projection back from
//! those components ([`Reconstructor::error`]); a window's value is the mean error of its
//! rows. When the features' joint structure changes, rows leave the reference's subspace
//! and the mean rises.
//!
//! Each step is NannyML 0.13.1's `DataReconstructionDriftCalculator` with its defaults
//! (SimpleImputer mean / most_frequent, CountEncoder(normalize=True), StandardScaler,
//! PCA(n_components=0.65)); tests/reconstruction_fixtures.rs checks the chunk values and
//! thresholds against it on its own car-loan data. The line: NannyML puts it at the
//! reference chunks' mean plus 3 standard deviations ([`three_sigma`]); the monitor reads
//! the mean and sd for its window's size off the reference's sub-windows ([`fit`] ships
//! them), so the same rule or a calibrated gamma tail applies at any window size.

use std::borrow::Cow;
use std::collections::BTreeMap;

use driftline_schemas::events::{FeatureKind, FeatureValue, Reconstruction, ReconstructionColumn};
use linfa_linalg::eigh::{EigSort, Eigh};
use ndarray::Array2;
use rustc_hash::FxHashMap;

use crate::calibrate;
use crate::frame::{as_label, as_number};

/// The share of the variance the components keep (NannyML's default `n_components`).
pub const VARIANCE_KEPT: f64 = 0.65;

/// Fits the reconstruction on `rows` reference rows in time order: `columns` names each
/// column and its kind, `cell(row, column)` reads a value. `None` with fewer than two
/// rows or no column; the fitted record also carries the per-row error's mean over the
/// reference's sub-windows (for the monitor's line).
pub fn fit<'a>(
    columns: &[(&str, FeatureKind)],
    rows: usize,
    cell: impl Fn(usize, usize) -> &'a FeatureValue,
) -> Option<Reconstruction> {
    let d = columns.len();
    if rows < 2 || d == 0 {
        return None;
    }
    let mut cols = Vec::with_capacity(d);
    let mut z = Array2::<f64>::zeros((rows, d));
    for (j, (name, kind)) in columns.iter().enumerate() {
        let (fill, frequencies, encoded) = match kind {
            FeatureKind::Numeric => encode_numeric(rows, |i| as_number(cell(i, j))),
            FeatureKind::Categorical => encode_categorical(rows, |i| as_label(cell(i, j))),
        };
        let mean = encoded.iter().sum::<f64>() / rows as f64;
        let var = encoded.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / rows as f64;
        // A constant column: scaled by 1, as scikit-learn's StandardScaler does.
        let scale = if var > 0.0 { var.sqrt() } else { 1.0 };
        for (i, x) in encoded.iter().enumerate() {
            z[[i, j]] = (x - mean) / scale;
        }
        cols.push(ReconstructionColumn {
            name: name.to_string(),
            kind: *kind,
            fill,
            frequencies,
            mean,
            scale,
        });
    }
    let center: Vec<f64> = z
        .columns()
        .into_iter()
        .map(|c| c.mean().unwrap_or(0.0))
        .collect();
    for mut row in z.rows_mut() {
        row.iter_mut().zip(&center).for_each(|(x, m)| *x -= m);
    }
    let cov = z.t().dot(&z) / (rows - 1) as f64;
    let (values, vectors) = cov.eigh().ok()?.sort_eig_desc();
    let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    // As scikit-learn: the first k whose cumulative share exceeds the target.
    let mut kept = 0.0;
    let mut k = 0;
    while k < d {
        kept += values[k].max(0.0) / total;
        k += 1;
        if kept > VARIANCE_KEPT {
            break;
        }
    }
    let mut r = Reconstruction {
        columns: cols,
        center,
        components: (0..k).map(|c| vectors.column(c).to_vec()).collect(),
        explained_variance: kept,
        sub_windows: Vec::new(),
    };
    let errors = {
        let rec = Reconstructor::new(&r);
        let mut scratch = Vec::new();
        (0..rows)
            .map(|i| rec.error(&mut scratch, |j| Some(cell(i, j))))
            .collect::<Vec<f64>>()
    };
    r.sub_windows = calibrate::mean_sub_windows(&errors);
    Some(r)
}

/// The mean of the present values, and every value with the missing ones set to it.
fn encode_numeric(
    rows: usize,
    value: impl Fn(usize) -> Option<f64>,
) -> (f64, BTreeMap<String, f64>, Vec<f64>) {
    let present: Vec<Option<f64>> = (0..rows).map(value).collect();
    let (sum, n) = present
        .iter()
        .flatten()
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    let fill = if n > 0 { sum / n as f64 } else { 0.0 };
    let encoded = present.iter().map(|x| x.unwrap_or(fill)).collect();
    (fill, BTreeMap::new(), encoded)
}

/// Each label's share of the rows, missing ones counted as the most frequent label (the
/// first in label order on a tie, as SimpleImputer's `most_frequent`); the encoded
/// value of a missing cell; every row encoded.
fn encode_categorical<'a>(
    rows: usize,
    label: impl Fn(usize) -> Option<Cow<'a, str>>,
) -> (f64, BTreeMap<String, f64>, Vec<f64>) {
    let labels: Vec<Option<Cow<'a, str>>> = (0..rows).map(label).collect();
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for l in labels.iter().flatten() {
        *counts.entry(l.as_ref()).or_default() += 1;
    }
    let mode = counts
        .iter()
        .fold(None, |best: Option<(&str, u64)>, (l, c)| match best {
            Some((_, b)) if b >= *c => best,
            _ => Some((l, *c)),
        })
        .map(|(l, _)| l);
    let missing = labels.iter().filter(|l| l.is_none()).count() as u64;
    if let Some(m) = mode {
        *counts.entry(m).or_default() += missing;
    }
    let frequencies: BTreeMap<String, f64> = counts
        .iter()
        .map(|(l, c)| (l.to_string(), *c as f64 / rows as f64))
        .collect();
    let fill = mode.map_or(0.0, |m| frequencies[m]);
    let encoded = labels
        .iter()
        .map(|l| l.as_ref().map_or(fill, |l| frequencies[l.as_ref()]))
        .collect();
    (fill, frequencies, encoded)
}

/// A fitted reconstruction ready to score rows.
#[derive(Debug, Clone)]
pub struct Reconstructor {
    columns: Vec<Encoding>,
    center: Vec<f64>,
    /// k × d, row-major.
    components: Vec<f64>,
    k: usize,
}

#[derive(Debug, Clone)]
struct Encoding {
    kind: FeatureKind,
    fill: f64,
    frequencies: FxHashMap<String, f64>,
    mean: f64,
    scale: f64,
}

impl Reconstructor {
    pub fn new(r: &Reconstruction) -> Self {
        Self {
            columns: r
                .columns
                .iter()
                .map(|c| Encoding {
                    kind: c.kind,
                    fill: c.fill,
                    frequencies: c.frequencies.iter().map(|(l, f)| (l.clone(), *f)).collect(),
                    mean: c.mean,
                    scale: if c.scale > 0.0 { c.scale } else { 1.0 },
                })
                .collect(),
            center: r.center.clone(),
            components: r.components.iter().flatten().copied().collect(),
            k: r.components.len(),
        }
    }

    /// A row's reconstruction error; `cell(column)` reads its value (`None`: missing), the
    /// columns in the fitted record's order. `scratch` is reused between rows and left
    /// holding the row's residual, column by column.
    pub fn error<'a>(
        &self,
        scratch: &mut Vec<f64>,
        cell: impl Fn(usize) -> Option<&'a FeatureValue>,
    ) -> f64 {
        scratch.clear();
        for (j, c) in self.columns.iter().enumerate() {
            let v = cell(j);
            scratch.push(match c.kind {
                FeatureKind::Numeric => self.encode_number(j, v.and_then(as_number)),
                FeatureKind::Categorical => self.encode_label(j, v.and_then(as_label).as_deref()),
            });
        }
        self.residual(scratch);
        scratch.iter().map(|r| r * r).sum::<f64>().sqrt()
    }

    /// Column `j`'s encoded value of a number (`None`: missing, the fill).
    pub fn encode_number(&self, j: usize, x: Option<f64>) -> f64 {
        x.unwrap_or(self.columns[j].fill)
    }

    /// Column `j`'s encoded value of a label: its share of the reference, 0 when unseen (as
    /// CountEncoder's handle_unknown="value"), the fill when missing.
    pub fn encode_label(&self, j: usize, label: Option<&str>) -> f64 {
        let c = &self.columns[j];
        label.map_or(c.fill, |l| c.frequencies.get(l).copied().unwrap_or(0.0))
    }

    /// Adds each column's squared residual of a row given its encoded values (in column
    /// order) to `sums`: what [`Self::error`] squares and sums, kept apart by column, to
    /// say which columns carry a window's error. `encoded` is left as the residual.
    pub fn add_squared_residuals(&self, encoded: &mut [f64], sums: &mut [f64]) {
        self.residual(encoded);
        sums.iter_mut()
            .zip(encoded.iter())
            .for_each(|(s, r)| *s += r * r);
    }

    /// Encoded values in place → standardised, centred → the part the components do not
    /// reconstruct: z − Vᵀ(V z), computed as the residual itself (|z|² − |V z|² would
    /// lose it to cancellation).
    fn residual(&self, z: &mut [f64]) {
        let d = self.columns.len();
        for (j, (x, c)) in z.iter_mut().zip(&self.columns).enumerate() {
            *x = (*x - c.mean) / c.scale - self.center.get(j).copied().unwrap_or(0.0);
        }
        let mut projected = [0.0f64; 64];
        let mut heap;
        let proj: &mut [f64] = if self.k <= projected.len() {
            &mut projected[..self.k]
        } else {
            heap = vec![0.0; self.k];
            &mut heap
        };
        for (p, v) in proj.iter_mut().zip(self.components.chunks_exact(d)) {
            *p = v.iter().zip(z.iter()).map(|(a, b)| a * b).sum();
        }
        for (j, x) in z.iter_mut().enumerate() {
            let back: f64 = proj
                .iter()
                .enumerate()
                .map(|(c, p)| p * self.components[c * d + j])
                .sum();
            *x -= back;
        }
    }

    /// Column `j`'s kind.
    pub fn kind(&self, j: usize) -> FeatureKind {
        self.columns[j].kind
    }
}

/// The multivariate check of a whole data set against a fitted reconstruction: the mean
/// reconstruction error of its rows against the line for its size, and each column's share
/// of the squared error (largest first), which says what carries it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Check {
    pub signal: driftline_schemas::events::Signal,
    pub carried_by: Vec<(String, f64)>,
}

/// [`Check`] of `rows` rows (`cell(row, column)` reads a value, `None`: missing, in the
/// record's column order) against `record`, with the line [`crate::calibrate::line`] draws
/// for an evaluation of `features` features. `None` without rows or a usable null curve.
pub fn check<'a>(
    record: &Reconstruction,
    rows: usize,
    cell: impl Fn(usize, usize) -> Option<&'a FeatureValue>,
    calibration: Option<crate::policy::Calibration>,
    features: usize,
) -> Option<Check> {
    let null = calibrate::NullCurve::fit(&record.sub_windows)?;
    if rows == 0 {
        return None;
    }
    let r = Reconstructor::new(record);
    let d = record.columns.len();
    let (mut sums, mut residual, mut total) = (vec![0.0; d], Vec::with_capacity(d), 0.0);
    for i in 0..rows {
        total += r.error(&mut residual, |j| cell(i, j));
        sums.iter_mut()
            .zip(&residual)
            .for_each(|(s, x)| *s += x * x);
    }
    let value = total / rows as f64;
    let (threshold, method) =
        calibrate::line(&null, rows as u64, calibration, features, "reference's");
    let all: f64 = sums.iter().sum();
    let mut carried_by: Vec<(String, f64)> = record
        .columns
        .iter()
        .zip(&sums)
        .map(|(c, s)| (c.name.clone(), if all > 0.0 { s / all } else { 0.0 }))
        .collect();
    carried_by.sort_by(|a, b| b.1.total_cmp(&a.1));
    Some(Check {
        signal: driftline_schemas::events::Signal {
            name: "reconstruction_error".into(),
            value,
            threshold,
            fired: value >= threshold,
            method,
        },
        carried_by,
    })
}

/// NannyML's default line over chunk values: their mean minus and plus 3 population
/// standard deviations.
pub fn three_sigma(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sd = (values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    (mean - 3.0 * sd, mean + 3.0 * sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(x: f64) -> FeatureValue {
        FeatureValue::Number(x)
    }

    #[test]
    fn rows_off_the_reference_plane_have_a_larger_error() {
        // y follows x closely in the reference; one component explains nearly all of it.
        let rows: Vec<[FeatureValue; 2]> = (0..1_000)
            .map(|i| {
                let x = f64::from(i % 100);
                [num(x), num(x + f64::from(i % 7) * 0.1)]
            })
            .collect();
        let r = fit(
            &[("x", FeatureKind::Numeric), ("y", FeatureKind::Numeric)],
            rows.len(),
            |i, j| &rows[i][j],
        )
        .unwrap();
        assert_eq!(r.components.len(), 1);
        let rec = Reconstructor::new(&r);
        let mut s = Vec::new();
        let on = [num(50.0), num(50.3)];
        let off = [num(10.0), num(90.0)];
        let e_on = rec.error(&mut s, |j| Some(&on[j]));
        let e_off = rec.error(&mut s, |j| Some(&off[j]));
        assert!(e_on < 0.05 && e_off > 1.0, "{e_on} {e_off}");
        assert!(!r.sub_windows.is_empty());
        // Kept apart by column, the squared residuals sum to the error's square.
        let mut encoded = [
            rec.encode_number(0, Some(10.0)),
            rec.encode_number(1, Some(90.0)),
        ];
        let mut sums = [0.0; 2];
        rec.add_squared_residuals(&mut encoded, &mut sums);
        assert!((sums.iter().sum::<f64>() - e_off * e_off).abs() < 1e-9);
    }

    #[test]
    fn categories_are_their_share_and_missing_cells_are_imputed() {
        let labels = ["a", "a", "a", "b"];
        let rows: Vec<[FeatureValue; 1]> = labels
            .iter()
            .map(|l| [FeatureValue::Category(l.to_string())])
            .chain([[FeatureValue::Missing]])
            .collect();
        let r = fit(&[("c", FeatureKind::Categorical)], rows.len(), |i, j| {
            &rows[i][j]
        })
        .unwrap();
        let c = &r.columns[0];
        // The missing row counts as the most frequent label.
        assert_eq!(c.frequencies["a"], 0.8);
        assert_eq!(c.frequencies["b"], 0.2);
        assert_eq!(c.fill, 0.8);
    }

    #[test]
    fn three_sigma_is_mean_plus_minus_three_population_sd() {
        let (lo, hi) = three_sigma(&[1.0, 3.0]);
        assert_eq!((lo, hi), (-1.0, 5.0));
    }
}
