//! The random forest: bagged CART classification trees (Gini), grown on binned columns.
//!
//! Every column is cut once, for all trees, into at most 256 bins at quantiles of its
//! values, as scikit-learn's `HistGradientBoosting*` and LightGBM do. A node then picks its
//! split from per-bin class counts of its rows: one pass over the rows per node, where
//! linfa-trees 0.8.1 sorted them per column and node (22 s for 20 trees on 100,000
//! flights rows, 11× scikit-learn). Thresholds lie halfway between neighbouring values; a
//! column with at most 256 distinct values loses nothing to binning, so the tree is exact
//! CART there.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::Array2;

use crate::algorithm::ForestParams;
use crate::model::Tree;
use crate::{Error, Result};

const MAX_BINS: usize = 256;

/// Each tree sees a bootstrap sample of the rows (with replacement) and a random subset of
/// the columns (without replacement). linfa-ensemble 0.8.1's `RandomForest` drew columns
/// with replacement and unwrapped each tree's fit. Trees are grown on `threads` threads,
/// each from its own seed, so the forest is the same whatever the thread count.
pub(crate) fn fit(
    x: &Array2<f64>,
    y: &[usize],
    n_classes: usize,
    p: &ForestParams,
) -> Result<Vec<Tree>> {
    let (n, cols) = x.dim();
    if n > u32::MAX as usize {
        return Err(Error::Fit(format!("{n} rows are too many for a forest")));
    }
    let n_rows = (((n as f64) * p.sample_fraction).ceil() as usize).clamp(1, n);
    let n_cols = (((cols as f64) * p.feature_fraction).ceil() as usize).clamp(1, cols);
    let binned = Binned::of(x);
    let seeds = tree_seeds(p.seed, p.trees);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Tree>>> = Mutex::new(vec![None; p.trees]);
    std::thread::scope(|s| {
        for _ in 0..p.threads.clamp(1, p.trees.max(1)) {
            s.spawn(|| {
                loop {
                    let t = next.fetch_add(1, Ordering::Relaxed);
                    if t >= p.trees {
                        break;
                    }
                    let mut rng = SplitMix64(seeds[t]);
                    let weight = bootstrap(&mut rng, n, n_rows);
                    let mut features: Vec<usize> = (0..cols).collect();
                    for i in 0..n_cols {
                        let j = i + rng.below(cols - i);
                        features.swap(i, j);
                    }
                    features.truncate(n_cols);
                    features.sort_unstable();
                    // In row order, a node's rows are read front to back.
                    let mut rows: Vec<u32> =
                        (0..n as u32).filter(|&r| weight[r as usize] > 0).collect();
                    let tree = grow(&binned, y, &weight, n_classes, p, &mut rows, &features);
                    if let Ok(mut r) = results.lock() {
                        r[t] = Some(tree);
                    }
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| Error::Fit("a tree fit panicked".into()))?;
    results
        .into_iter()
        .map(|t| t.ok_or_else(|| Error::Fit("a tree was not fitted".into())))
        .collect()
}

/// One seed per tree, drawn from a generator seeded with `seed`. Seeds must not be
/// `seed` plus or xor a multiple of SplitMix64's increment: two trees would then walk the
/// same sequence a few steps apart and draw nearly the same bootstrap sample (a first try
/// did, and its 20 trees had about 8 distinct samples between them).
fn tree_seeds(seed: u64, trees: usize) -> Vec<u64> {
    let mut seeder = SplitMix64(seed);
    (0..trees).map(|_| seeder.next()).collect()
}

/// A bootstrap sample of `n_rows` draws from `n` rows, with replacement, as a weight per
/// row (how scikit-learn keeps it).
fn bootstrap(rng: &mut SplitMix64, n: usize, n_rows: usize) -> Vec<u32> {
    let mut weight = vec![0u32; n];
    for _ in 0..n_rows {
        weight[rng.below(n)] += 1;
    }
    weight
}

/// Every row's bin code per column, and every column's bin edges.
struct Binned {
    /// `codes[row * cols + col]`: how many of the column's edges are ≤ the value.
    codes: Vec<u8>,
    /// Per column, ascending: a value v is in bin k when `edges[k-1] ≤ v < edges[k]`.
    edges: Vec<Vec<f64>>,
    cols: usize,
}

impl Binned {
    fn of(x: &Array2<f64>) -> Binned {
        let (n, cols) = x.dim();
        // Quantiles need no more than 100,000 rows, evenly spread.
        let stride = n.div_ceil(100_000).max(1);
        let edges: Vec<Vec<f64>> = (0..cols)
            .map(|c| {
                let mut values: Vec<f64> = x
                    .column(c)
                    .iter()
                    .step_by(stride)
                    .copied()
                    .filter(|v| v.is_finite())
                    .collect();
                values.sort_by(f64::total_cmp);
                edges_of(&values)
            })
            .collect();
        let mut codes = vec![0u8; n * cols];
        for (row, out) in x
            .rows()
            .into_iter()
            .zip(codes.chunks_exact_mut(cols.max(1)))
        {
            for ((v, code), edges) in row.iter().zip(out).zip(&edges) {
                // At most 255 edges, so the count fits.
                *code = edges.partition_point(|e| e <= v) as u8;
            }
        }
        Binned { codes, edges, cols }
    }
}

/// Thresholds for sorted values: between every two neighbouring distinct values when
/// there are at most 256 of them, else just above 255 evenly spaced quantiles.
fn edges_of(sorted: &[f64]) -> Vec<f64> {
    let mut distinct = sorted.to_vec();
    distinct.dedup();
    if distinct.len() <= MAX_BINS {
        return distinct.windows(2).map(|w| between(w[0], w[1])).collect();
    }
    let mut edges: Vec<f64> = (1..MAX_BINS)
        .filter_map(|k| {
            let v = sorted[k * sorted.len() / MAX_BINS];
            let above = distinct.partition_point(|d| *d <= v);
            (above < distinct.len()).then(|| between(distinct[above - 1], distinct[above]))
        })
        .collect();
    edges.dedup();
    edges
}

/// Halfway, or `b` when the two are neighbouring floats (then `a < t ≤ b` still holds).
fn between(a: f64, b: f64) -> f64 {
    let m = a + (b - a) / 2.0;
    if m > a { m } else { b }
}

/// Grows one tree on `rows` (reordered so that each node's rows are contiguous), each
/// counted `weight` times, splitting only on `features`. A leaf keeps the weighted class
/// frequencies of its rows; `min_samples_leaf` counts distinct rows, as scikit-learn's
/// does for a bootstrap sample.
fn grow(
    binned: &Binned,
    y: &[usize],
    weight: &[u32],
    n_classes: usize,
    p: &ForestParams,
    rows: &mut [u32],
    features: &[usize],
) -> Tree {
    let min_leaf = p.min_samples_leaf.max(1);
    let mut tree = Tree::default();
    let node = |tree: &mut Tree| {
        tree.feature.push(0);
        tree.threshold.push(0.0);
        tree.left.push(0);
        tree.right.push(0);
        tree.leaf.push(0);
        (tree.left.len() - 1) as u32
    };
    node(&mut tree);
    let mut histogram = vec![0u32; features.len() * MAX_BINS * (n_classes + 1)];
    let mut right_rows = Vec::with_capacity(rows.len());
    let mut stack = vec![(0usize, 0usize, rows.len(), 0usize)];
    while let Some((at, start, end, depth)) = stack.pop() {
        let here = &mut rows[start..end];
        let mut totals = vec![0u32; n_classes];
        for &r in here.iter() {
            totals[y[r as usize]] += weight[r as usize];
        }
        let mixed = totals.iter().filter(|&&c| c > 0).count() > 1;
        let split = (depth < p.max_depth && here.len() >= 2 * min_leaf && mixed)
            .then(|| {
                let node = Node {
                    rows: here,
                    totals: &totals,
                };
                best_split(binned, y, weight, node, features, min_leaf, &mut histogram)
            })
            .flatten();
        let Some((col, bin)) = split else {
            tree.leaf[at] = (tree.proba.len() / n_classes) as u32;
            let count = f64::from(totals.iter().sum::<u32>());
            tree.proba
                .extend(totals.iter().map(|&c| f64::from(c) / count));
            continue;
        };
        // A stable partition: rows with a code below `bin` go left.
        right_rows.clear();
        let mut left = 0;
        for i in 0..here.len() {
            let r = here[i];
            if usize::from(binned.codes[r as usize * binned.cols + col]) < bin {
                here[left] = r;
                left += 1;
            } else {
                right_rows.push(r);
            }
        }
        here[left..].copy_from_slice(&right_rows);
        let (l, r) = (node(&mut tree), node(&mut tree));
        tree.feature[at] = col as u32;
        tree.threshold[at] = binned.edges[col][bin - 1];
        tree.left[at] = l;
        tree.right[at] = r;
        stack.push((r as usize, start + left, end, depth + 1));
        stack.push((l as usize, start, start + left, depth + 1));
    }
    tree
}

/// The rows of a node and their weighted class counts.
struct Node<'a> {
    rows: &'a [u32],
    totals: &'a [u32],
}

/// The split of a node's rows with the lowest weighted Gini impurity that leaves
/// `min_leaf` distinct rows on each side and is better than no split: `(column, bin)`,
/// meaning codes below `bin` go left. Ties go to the first column, then the lowest
/// threshold.
fn best_split(
    binned: &Binned,
    y: &[usize],
    weight: &[u32],
    node: Node<'_>,
    features: &[usize],
    min_leaf: usize,
    histogram: &mut [u32],
) -> Option<(usize, usize)> {
    let Node { rows, totals } = node;
    let k = totals.len();
    // Per column and bin: k class weights, then the number of distinct rows.
    let stride = k + 1;
    histogram.fill(0);
    for &r in rows {
        let r = r as usize;
        let codes = &binned.codes[r * binned.cols..(r + 1) * binned.cols];
        let (class, w) = (y[r], weight[r]);
        for (f, &col) in features.iter().enumerate() {
            let at = (f * MAX_BINS + usize::from(codes[col])) * stride;
            histogram[at + class] += w;
            histogram[at + k] += 1;
        }
    }
    // Maximising Σ left_c²/left_w + Σ right_c²/right_w minimises the weighted Gini.
    fn purity(counts: impl Iterator<Item = u32>) -> f64 {
        let (mut squares, mut total) = (0.0, 0.0);
        for c in counts {
            squares += f64::from(c) * f64::from(c);
            total += f64::from(c);
        }
        squares / total
    }
    let parent = purity(totals.iter().copied());
    let mut best: Option<(f64, usize, usize)> = None;
    let mut left = vec![0u32; k];
    for (f, &col) in features.iter().enumerate() {
        left.fill(0);
        let mut left_rows = 0usize;
        // The last non-empty bin on the left, whose split is scored once the next
        // non-empty bin is known: the threshold goes to the edge halfway between them,
        // as CART's goes halfway between the two values.
        let mut pending: Option<(usize, f64)> = None;
        for code in 0..=binned.edges[col].len() {
            let at = (f * MAX_BINS + code) * stride;
            let added = histogram[at + k] as usize;
            if added == 0 {
                continue;
            }
            if let Some((last, score)) = pending.take()
                && best.is_none_or(|(b, _, _)| score > b)
            {
                best = Some((score, col, (last + code) / 2 + 1));
            }
            left.iter_mut()
                .zip(&histogram[at..at + k])
                .for_each(|(l, c)| *l += c);
            left_rows += added;
            if rows.len() - left_rows < min_leaf {
                break;
            }
            if left_rows >= min_leaf {
                let score = purity(left.iter().copied())
                    + purity(left.iter().zip(totals).map(|(l, t)| t - l));
                pending = Some((code, score));
            }
        }
    }
    best.filter(|(score, _, _)| *score > parent * (1.0 + 1e-12))
        .map(|(_, col, bin)| (col, bin))
}

/// Sebastiano Vigna's SplitMix64: a few lines, good enough to draw bootstrap samples, and
/// the same on every platform.
pub(crate) struct SplitMix64(pub u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2⁻³² for our sizes).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(max_depth: usize, min_samples_leaf: usize) -> ForestParams {
        ForestParams {
            trees: 1,
            max_depth,
            feature_fraction: 1.0,
            sample_fraction: 1.0,
            min_samples_leaf,
            seed: 1,
            threads: 1,
        }
    }

    /// On columns of at most 256 distinct values binning loses nothing, so one tree on all
    /// rows is CART as scikit-learn grows it: the same class frequencies for every row
    /// (tests/fixtures/make_sklearn_tree.py made the fixture).
    #[test]
    fn a_tree_on_few_distinct_values_is_scikit_learns_cart() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/sklearn_tree.json")).unwrap();
        let numbers = |v: &serde_json::Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_f64().unwrap())
                .collect()
        };
        let rows: Vec<Vec<f64>> = fixture["x"]
            .as_array()
            .unwrap()
            .iter()
            .map(numbers)
            .collect();
        let (n, cols) = (rows.len(), rows[0].len());
        let x = Array2::from_shape_fn((n, cols), |(i, j)| rows[i][j]);
        let y: Vec<usize> = numbers(&fixture["y"]).iter().map(|c| *c as usize).collect();
        let binned = Binned::of(&x);
        for case in fixture["cases"].as_array().unwrap() {
            let depth = case["max_depth"].as_u64().unwrap() as usize;
            let leaf = case["min_samples_leaf"].as_u64().unwrap() as usize;
            let mut sample: Vec<u32> = (0..n as u32).collect();
            let features: Vec<usize> = (0..cols).collect();
            let weight = vec![1; n];
            let ours = grow(
                &binned,
                &y,
                &weight,
                3,
                &params(depth, leaf),
                &mut sample,
                &features,
            );
            ours.validate_for_test(cols, 3);
            for (i, expected) in case["proba"].as_array().unwrap().iter().enumerate() {
                let at = ours.leaf_for(&rows[i]);
                let got = &ours.proba[at * 3..at * 3 + 3];
                for (g, e) in got.iter().zip(numbers(expected)) {
                    assert!(
                        (g - e).abs() < 1e-12,
                        "depth {depth}, leaf {leaf}, row {i}: {got:?} vs scikit-learn's {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_trees_of_a_forest_draw_unrelated_bootstrap_samples() {
        let (n, trees) = (10_000, 20);
        let samples: Vec<Vec<u32>> = tree_seeds(42, trees)
            .into_iter()
            .map(|s| bootstrap(&mut SplitMix64(s), n, n / 2))
            .collect();
        // Independent samples of n/2 draws agree on a row drawn (equally often) in both for
        // about Σₖ≥₁ Poisson(½)ₖ² ≈ 9.8% of the rows; copies a few draws apart for ~39%.
        for a in 0..trees {
            for b in a + 1..trees {
                let same = (0..n)
                    .filter(|&r| samples[a][r] > 0 && samples[a][r] == samples[b][r])
                    .count();
                let share = same as f64 / n as f64;
                assert!((0.08..0.12).contains(&share), "trees {a} and {b}: {share}");
            }
        }
    }

    #[test]
    fn many_distinct_values_are_cut_at_quantiles_into_at_most_256_bins() {
        // A skewed column: half zeros, the rest spread over 10,000 values.
        let sorted: Vec<f64> = std::iter::repeat_n(0.0, 10_000)
            .chain((1..=10_000).map(f64::from))
            .collect();
        let edges = edges_of(&sorted);
        assert!(edges.len() <= 255 && edges.len() > 100, "{}", edges.len());
        assert!(edges.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(edges[0], 0.5, "the zeros are one bin of their own");
        // Quantiles of the values, not of the distinct values: the tail is cut evenly.
        let widths: Vec<f64> = edges[1..].windows(2).map(|w| w[1] - w[0]).collect();
        let (lo, hi) = widths
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), w| (lo.min(*w), hi.max(*w)));
        assert!(hi - lo <= 1.0, "{lo}..{hi}");
        let few = edges_of(&[1.0, 1.0, 2.0, 4.0]);
        assert_eq!(few, vec![1.5, 3.0]);
    }
}
