//! Fitting: encode the training rows, run the linfa algorithm, keep its parameters in our
//! own representation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use driftline_schemas::spec::{FeatureSpec, TargetKind};
use linfa::prelude::*;
use linfa_elasticnet::ElasticNet;
use linfa_linear::LinearRegression;
use linfa_logistic::{LogisticRegression, MultiLogisticRegression};
use linfa_trees::DecisionTree;
use ndarray::{Array1, Array2, Axis, Slice};

use crate::algorithm::{self, Algorithm, ForestParams, Params, Parsed};
use crate::data::LabelledRow;
use crate::encoder::Encoder;
use crate::model::{Fitted, TrainedModel, Tree};
use crate::{Error, Result};

/// Fits the spec's algorithm (`model.algorithm`) with its `model.hyper_parameters` on the
/// training rows. The encoder is fitted on these rows only.
pub fn fit(spec: &FeatureSpec, train: &[LabelledRow]) -> Result<TrainedModel> {
    fit_with(
        spec,
        &spec.model.algorithm,
        &spec.model.hyper_parameters,
        train,
    )
}

/// Fits a named algorithm with explicit hyper-parameters (see [`crate::algorithm`] for the
/// names, defaults and which target each algorithm fits).
pub fn fit_with(
    spec: &FeatureSpec,
    algorithm: &str,
    hyper_parameters: &BTreeMap<String, String>,
    train: &[LabelledRow],
) -> Result<TrainedModel> {
    let algorithm = Algorithm::from_name(algorithm)?;
    let rows: Vec<&LabelledRow> = train.iter().collect();
    fit_rows(spec, algorithm, hyper_parameters, &rows)
}

pub(crate) fn fit_rows(
    spec: &FeatureSpec,
    algorithm: Algorithm,
    hyper_parameters: &BTreeMap<String, String>,
    rows: &[&LabelledRow],
) -> Result<TrainedModel> {
    if algorithm.target_kind() != spec.target.kind {
        return Err(Error::WrongTarget {
            algorithm: algorithm.name(),
            target: spec.target.kind,
        });
    }
    let Parsed {
        encoder: options,
        params,
        effective,
    } = algorithm::parse(algorithm, hyper_parameters)?;
    if rows.len() < 2 {
        return Err(Error::NotEnoughRows {
            rows: rows.len(),
            needed: 2,
        });
    }
    let encoder = Encoder::fit(spec, rows.iter().map(|r| &r.features), options)?;
    let p = encoder.n_columns();
    if p == 0 {
        return Err(Error::Fit(
            "the training rows give no feature columns: every feature is constant or missing"
                .into(),
        ));
    }
    let mut x = Array2::<f64>::zeros((rows.len(), p));
    for (r, mut out) in rows.iter().zip(x.rows_mut()) {
        // Rows of a fresh standard-layout array are contiguous.
        if let Some(slice) = out.as_slice_mut() {
            encoder.encode_into(&r.features, slice);
        }
    }
    let mut diagnostics = BTreeMap::new();
    let fitted = match &params {
        Params::Linear | Params::ElasticNet { .. } => {
            let y = regression_targets(rows)?;
            fit_regression(&params, x, y, &mut diagnostics)?
        }
        Params::Logistic { .. } | Params::Forest(_) => {
            let (classes, y) = class_targets(rows)?;
            fit_classifier(&params, x, classes, y)?
        }
    };
    let model = TrainedModel {
        algorithm,
        hyper_parameters: effective,
        trained_rows: rows.len() as u64,
        diagnostics,
        encoder,
        fitted,
    };
    // What we built is what a loader would accept: non-finite weights (e.g. OLS on collinear
    // columns) are caught here, not in the predictor.
    model.validate().map_err(|e| match spec.target.kind {
        TargetKind::Regression if algorithm == Algorithm::Linear => Error::Fit(format!(
            "{e}: the least-squares problem is ill-conditioned (collinear features?); try `ridge`"
        )),
        _ => Error::Fit(e.to_string()),
    })?;
    Ok(model)
}

fn regression_targets(rows: &[&LabelledRow]) -> Result<Array1<f64>> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            r.target.value().ok_or_else(|| Error::Row {
                row: i,
                message: format!("target {:?} is not a finite number", r.target),
            })
        })
        .collect()
}

fn class_targets(rows: &[&LabelledRow]) -> Result<(Vec<String>, Array1<usize>)> {
    let labels: Vec<_> = rows.iter().map(|r| r.target.class_label()).collect();
    let classes: Vec<String> = labels
        .iter()
        .map(|l| l.as_ref())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(String::from)
        .collect();
    if classes.len() < 2 {
        return Err(Error::Fit(format!(
            "classification needs at least two classes in the training rows, found {classes:?}"
        )));
    }
    // `classes` is sorted, so a label's index is its binary-search position.
    let y = labels
        .iter()
        .map(|l| classes.binary_search_by(|c| c.as_str().cmp(l)).unwrap_or(0))
        .collect();
    Ok((classes, y))
}

fn fit_regression(
    params: &Params,
    x: Array2<f64>,
    y: Array1<f64>,
    diagnostics: &mut BTreeMap<String, f64>,
) -> Result<Fitted> {
    match *params {
        Params::Linear => {
            let model = LinearRegression::new()
                .fit(&Dataset::new(x, y))
                .map_err(|e| Error::Fit(format!("linear regression: {e}")))?;
            Ok(Fitted::Linear {
                weights: model.params().to_vec(),
                intercept: model.intercept(),
            })
        }
        Params::ElasticNet {
            penalty,
            l1_ratio: 0.0,
            ..
        } => {
            let (weights, intercept) = ridge(x, y, penalty)?;
            Ok(Fitted::Linear { weights, intercept })
        }
        Params::ElasticNet {
            penalty,
            l1_ratio,
            max_iterations,
            tolerance,
        } => {
            // linfa 0.8.1's elastic net centres y but not X, so with an intercept it fits the
            // wrong model on uncentred columns (one-hot columns are never centred). Centre X
            // here and fold the means back into the intercept, as scikit-learn does.
            let means = x
                .mean_axis(Axis(0))
                .ok_or_else(|| Error::Fit("no rows".into()))?;
            let centred = &x - &means;
            drop(x);
            let model = ElasticNet::<f64>::params()
                .penalty(penalty)
                .l1_ratio(l1_ratio)
                .max_iterations(max_iterations)
                .tolerance(tolerance)
                .fit(&Dataset::new(centred, y))
                .map_err(|e| Error::Fit(format!("elastic net: {e}")))?;
            let w = model.hyperplane();
            diagnostics.insert("iterations".into(), f64::from(model.n_steps()));
            diagnostics.insert("duality_gap".into(), model.duality_gap());
            Ok(Fitted::Linear {
                weights: w.to_vec(),
                intercept: model.intercept() - w.dot(&means),
            })
        }
        _ => unreachable!("regression parameters"),
    }
}

/// Ridge regression, the elastic-net objective with `l1_ratio` 0, solved exactly with
/// linfa-linear's least squares on the augmented system `[Xc; √(n·penalty)·I] w = [yc; 0]`
/// (Xc, yc centred, so the intercept is not penalised). linfa 0.8.1's coordinate descent
/// does not stop early without an L1 term: its duality gap stays large, and on 20,000
/// flights rows it ran all 1,000 iterations for 2 s and was still off the optimum.
fn ridge(x: Array2<f64>, y: Array1<f64>, penalty: f64) -> Result<(Vec<f64>, f64)> {
    let (n, p) = x.dim();
    let means = x
        .mean_axis(Axis(0))
        .ok_or_else(|| Error::Fit("no rows".into()))?;
    let y_mean = y.mean().unwrap_or(0.0);
    let mut augmented = Array2::<f64>::zeros((n + p, p));
    augmented
        .slice_axis_mut(Axis(0), Slice::from(..n))
        .assign(&(&x - &means));
    drop(x);
    let scale = (n as f64 * penalty).sqrt();
    for j in 0..p {
        augmented[[n + j, j]] = scale;
    }
    let mut target = Array1::<f64>::zeros(n + p);
    target
        .slice_axis_mut(Axis(0), Slice::from(..n))
        .assign(&(&y - y_mean));
    let model = LinearRegression::new()
        .with_intercept(false)
        .fit(&Dataset::new(augmented, target))
        .map_err(|e| Error::Fit(format!("ridge regression: {e}")))?;
    let w = model.params();
    Ok((w.to_vec(), y_mean - w.dot(&means)))
}

fn fit_classifier(
    params: &Params,
    x: Array2<f64>,
    classes: Vec<String>,
    y: Array1<usize>,
) -> Result<Fitted> {
    // linfa's logistic loss is a sum over rows, so its gradient grows with the row count;
    // the tolerance is given per row (as for scikit-learn's mean loss) and scaled here.
    let rows = x.nrows() as f64;
    match params {
        &Params::Logistic {
            alpha,
            max_iterations,
            gradient_tolerance,
        } if classes.len() == 2 => {
            let model = LogisticRegression::default()
                .alpha(alpha)
                .max_iterations(max_iterations)
                .gradient_tolerance(gradient_tolerance * rows)
                .fit(&Dataset::new(x, y))
                .map_err(|e| Error::Fit(format!("logistic regression: {e}")))?;
            // linfa models P(its "positive" class), which is the more frequent one; we keep
            // the log-odds of classes[1].
            let sign = if model.labels().pos.class == 1 {
                1.0
            } else {
                -1.0
            };
            Ok(Fitted::Logistic {
                classes,
                weights: model.params().iter().map(|w| sign * w).collect(),
                intercept: sign * model.intercept(),
            })
        }
        &Params::Logistic {
            alpha,
            max_iterations,
            gradient_tolerance,
        } => {
            let model = MultiLogisticRegression::default()
                .alpha(alpha)
                .max_iterations(max_iterations)
                .gradient_tolerance(gradient_tolerance * rows)
                .fit(&Dataset::new(x, y))
                .map_err(|e| Error::Fit(format!("multinomial logistic regression: {e}")))?;
            // linfa's columns follow its sorted class list, which is 0..k here.
            let (w, b) = (model.params(), model.intercept());
            let k = classes.len();
            let mut weights = Vec::with_capacity(k * w.nrows());
            let mut intercepts = vec![0.0; k];
            for (col, &class) in model.classes().iter().enumerate() {
                debug_assert_eq!(class, col);
                weights.extend(w.column(col).iter());
                intercepts[class] = b[col];
            }
            Ok(Fitted::Multinomial {
                classes,
                weights,
                intercepts,
            })
        }
        Params::Forest(forest) => {
            let trees = fit_forest(
                &x,
                y.as_slice().unwrap_or(&y.to_vec()),
                classes.len(),
                forest,
            )?;
            Ok(Fitted::Forest { classes, trees })
        }
        _ => unreachable!("classification parameters"),
    }
}

/// A random forest from linfa's decision trees: each tree sees a bootstrap sample of the rows
/// (with replacement) and a random subset of the columns (without replacement).
///
/// linfa-ensemble 0.8.1's `RandomForest` does the same with two flaws for a service: it
/// draws feature indices with replacement (a tree can get the same column twice) and it
/// unwraps each tree's fit (a panic instead of an error); it also fits one tree at a time.
/// Here trees are fitted on `threads` threads, each from its own seed, so the forest is
/// the same whatever the thread count.
fn fit_forest(
    x: &Array2<f64>,
    y: &[usize],
    n_classes: usize,
    p: &ForestParams,
) -> Result<Vec<Tree>> {
    let (n, cols) = x.dim();
    let n_rows = (((n as f64) * p.sample_fraction).ceil() as usize).clamp(1, n);
    let n_cols = (((cols as f64) * p.feature_fraction).ceil() as usize).clamp(1, cols);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Tree>>>> =
        Mutex::new((0..p.trees).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..p.threads.min(p.trees) {
            s.spawn(|| {
                loop {
                    let t = next.fetch_add(1, Ordering::Relaxed);
                    if t >= p.trees {
                        break;
                    }
                    let tree = fit_tree(x, y, n_classes, p, t, n_rows, n_cols);
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
        .map(|t| t.unwrap_or_else(|| Err(Error::Fit("a tree was not fitted".into()))))
        .collect()
}

fn fit_tree(
    x: &Array2<f64>,
    y: &[usize],
    n_classes: usize,
    p: &ForestParams,
    t: usize,
    n_rows: usize,
    n_cols: usize,
) -> Result<Tree> {
    let (n, cols) = x.dim();
    let mut rng = SplitMix64(p.seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let rows: Vec<usize> = (0..n_rows).map(|_| rng.below(n)).collect();
    let mut features: Vec<usize> = (0..cols).collect();
    for i in 0..n_cols {
        let j = i + rng.below(cols - i);
        features.swap(i, j);
    }
    features.truncate(n_cols);
    features.sort_unstable();
    let records = Array2::from_shape_fn((n_rows, n_cols), |(i, j)| x[[rows[i], features[j]]]);
    let targets: Array1<usize> = rows.iter().map(|&r| y[r]).collect();
    let leaf = p.min_samples_leaf as f32;
    let tree = DecisionTree::params()
        .max_depth(Some(p.max_depth))
        .min_weight_leaf(leaf)
        .min_weight_split(2.0 * leaf)
        .fit(&Dataset::new(records, targets))
        .map_err(|e| Error::Fit(format!("decision tree {t}: {e}")))?;
    extract_tree(&tree, &features, x, &rows, y, n_classes)
}

/// Copies a linfa tree into node arrays, mapping its columns back to the encoded row's
/// (`features[j]` is the encoded column of the tree's column `j`).
///
/// linfa's leaves keep only their majority class; the class frequencies of each leaf are
/// counted here by sending the tree's own training rows (`x` rows `rows`, labels `y`)
/// through it, so the forest can average probabilities as scikit-learn does. A leaf no
/// training row reaches (possible only through rounding at a threshold) keeps linfa's
/// class with probability 1.
pub(crate) fn extract_tree(
    tree: &DecisionTree<f64, usize>,
    features: &[usize],
    x: &Array2<f64>,
    rows: &[usize],
    y: &[usize],
    n_classes: usize,
) -> Result<Tree> {
    let mut out = Tree::default();
    let mut modal = Vec::new();
    let push = |out: &mut Tree| {
        out.feature.push(0);
        out.threshold.push(0.0);
        out.left.push(0);
        out.right.push(0);
        out.leaf.push(0);
        (out.left.len() - 1) as u32
    };
    push(&mut out);
    let mut stack = vec![(tree.root_node(), 0usize)];
    while let Some((node, i)) = stack.pop() {
        if let Some(class) = node.prediction() {
            out.leaf[i] = modal.len() as u32;
            modal.push(class);
            continue;
        }
        let children = node.children();
        let (Some(left), Some(right)) = (children[0].as_deref(), children[1].as_deref()) else {
            return Err(Error::Fit(
                "a decision tree split has a missing child".into(),
            ));
        };
        let (column, threshold, _) = node.split();
        let (l, r) = (push(&mut out), push(&mut out));
        out.feature[i] = features[column] as u32;
        out.threshold[i] = threshold;
        out.left[i] = l;
        out.right[i] = r;
        stack.push((left, l as usize));
        stack.push((right, r as usize));
    }
    let mut counts = vec![0.0; modal.len() * n_classes];
    let mut row = vec![0.0; x.ncols()];
    for &r in rows {
        row.iter_mut().zip(x.row(r)).for_each(|(a, b)| *a = *b);
        counts[out.leaf_for(&row) * n_classes + y[r]] += 1.0;
    }
    for (leaf, c) in counts.chunks_exact_mut(n_classes).enumerate() {
        let total: f64 = c.iter().sum();
        if total > 0.0 {
            c.iter_mut().for_each(|v| *v /= total);
        } else if let Some(slot) = c.get_mut(modal[leaf]) {
            *slot = 1.0;
        }
    }
    out.proba = counts;
    Ok(out)
}

/// Sebastiano Vigna's SplitMix64: a few lines, good enough to draw bootstrap samples, and
/// the same on every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2⁻³² for our sizes).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracted_trees_predict_like_linfa() {
        let mut rng = SplitMix64(7);
        let (n, cols) = (600, 6);
        let x = Array2::from_shape_fn((n, cols), |_| (rng.below(1000) as f64) / 100.0 - 5.0);
        // A class that depends on columns 1 and 4 with some label noise.
        let y: Array1<usize> = x
            .rows()
            .into_iter()
            .map(|r| usize::from(r[1] + 0.5 * r[4] > 0.3) + usize::from(rng.below(10) == 0))
            .collect();
        // Fit on columns [1, 3, 4] only, as a forest tree would.
        let features = [1usize, 3, 4];
        let sub = x.select(Axis(1), &features);
        let tree = DecisionTree::params()
            .max_depth(Some(6))
            .fit(&Dataset::new(sub.clone(), y.clone()))
            .unwrap();
        let all: Vec<usize> = (0..n).collect();
        let ours = extract_tree(&tree, &features, &x, &all, y.as_slice().unwrap(), 3).unwrap();
        ours.validate_for_test(cols, 3);
        let theirs = tree.predict(&sub);
        for (row, expected) in x.rows().into_iter().zip(theirs.iter()) {
            let leaf = ours.leaf_for(&row.to_vec());
            let p = &ours.proba[leaf * 3..leaf * 3 + 3];
            // linfa's leaf class is the most frequent one in the leaf (ties aside).
            let most = p.iter().copied().fold(0.0, f64::max);
            assert_eq!(p[*expected], most, "{p:?} vs linfa's {expected}");
        }
    }
}
