//! Solvers of our own where linfa 0.8.1 is slow or inexact for the problem: least squares
//! and ridge in closed form, the elastic net by coordinate descent on the Gram matrix, and
//! binary logistic regression by Newton's method. Each reduces the n rows to p×p
//! cross-products with one matrix product, so an iteration costs O(p²) (coordinate descent)
//! or one pass over the rows (Newton) instead of linfa's passes per coordinate or per
//! L-BFGS step. Pure functions of the encoded rows.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::{Array1, Array2, ArrayView2, Axis, Slice};

use crate::model::sigmoid;

/// The rows reduced to centred cross-products: the intercept is never penalised, so it is
/// solved by centring and recovered as `ȳ − x̄·w`.
pub(crate) struct Centred {
    /// `XcᵀXc`, p×p.
    gram: Array2<f64>,
    /// `Xcᵀyc`.
    xty: Array1<f64>,
    /// `ycᵀyc`.
    yty: f64,
    x_means: Array1<f64>,
    y_mean: f64,
    rows: usize,
}

impl Centred {
    /// Centres `x` in place (the rows are the largest thing a fit holds; a centred copy
    /// would double it). `None` without rows.
    pub fn of(x: &mut Array2<f64>, y: &Array1<f64>) -> Option<Centred> {
        let x_means = x.mean_axis(Axis(0))?;
        let y_mean = y.mean()?;
        *x -= &x_means;
        let xc = &*x;
        let yc = (y - y_mean).insert_axis(Axis(1));
        // Both as matrix products: `Xcᵀ·yc` as a matrix-vector product would walk Xc's
        // columns with a stride, several times slower.
        let xty = cross_products(xc.view(), yc.view()).remove_axis(Axis(1));
        Some(Centred {
            gram: cross_products(xc.view(), xc.view()),
            xty,
            yty: yc.t().dot(&yc)[[0, 0]],
            x_means,
            y_mean,
            rows: x.nrows(),
        })
    }

    pub fn intercept(&self, w: &Array1<f64>) -> f64 {
        self.y_mean - w.dot(&self.x_means)
    }
}

/// Least squares with a ridge `penalty` (0 for none) on scikit-learn's scale, the
/// elastic-net objective with `l1_ratio` 0: the normal equations
/// `(XcᵀXc + n·penalty·I) w = Xcᵀyc`, solved by Cholesky. `None` when the system is too
/// ill-conditioned for that (collinear columns without enough penalty).
pub(crate) fn least_squares(c: &Centred, penalty: f64) -> Option<(Array1<f64>, f64)> {
    let mut a = c.gram.clone();
    let ridge = c.rows as f64 * penalty;
    for j in 0..a.nrows() {
        a[[j, j]] += ridge;
    }
    let w = cholesky_solve(a, c.xty.clone())?;
    let intercept = c.intercept(&w);
    Some((w, intercept))
}

/// An elastic-net solution and how the descent ended.
pub(crate) struct ElasticNetFit {
    pub weights: Array1<f64>,
    pub intercept: f64,
    /// Full sweeps over the coordinates.
    pub iterations: u32,
    /// The duality gap at the end, on the objective's own (per-row) scale, as
    /// scikit-learn's `dual_gap_`.
    pub duality_gap: f64,
}

/// Minimises scikit-learn's elastic-net objective
/// `1/(2n)·‖y − Xw − b‖² + penalty·l1_ratio·‖w‖₁ + penalty·(1 − l1_ratio)/2·‖w‖²` by cyclic
/// coordinate descent on the Gram matrix (scikit-learn's `precompute=True` path). Stops as
/// scikit-learn does: when the largest weight change of a sweep is below `tolerance` times
/// the largest weight, and the duality gap is below `tolerance·‖yc‖²`; or after
/// `max_iterations` sweeps.
pub(crate) fn elastic_net(
    c: &Centred,
    penalty: f64,
    l1_ratio: f64,
    max_iterations: u32,
    tolerance: f64,
) -> ElasticNetFit {
    let n = c.rows as f64;
    // Multiplied through by n: ½‖r‖² + l1·‖w‖₁ + l2/2·‖w‖².
    let (l1, l2) = (penalty * l1_ratio * n, penalty * (1.0 - l1_ratio) * n);
    let (q, gram) = (&c.xty, &c.gram);
    let p = q.len();
    let mut w = Array1::<f64>::zeros(p);
    // Always `gram · w`.
    let mut h = Array1::<f64>::zeros(p);
    let gap_tolerance = tolerance * c.yty;
    let mut gap = f64::INFINITY;
    let mut iterations = 0;
    for sweep in 0..max_iterations {
        iterations = sweep + 1;
        let (mut w_max, mut change_max) = (0.0f64, 0.0f64);
        for j in 0..p {
            let diagonal = gram[[j, j]];
            if diagonal == 0.0 {
                continue;
            }
            let old = w[j];
            // The correlation of column j with the residual of every other column.
            let rho = q[j] - h[j] + diagonal * old;
            let new = rho.signum() * (rho.abs() - l1).max(0.0) / (diagonal + l2);
            if new != old {
                h.scaled_add(new - old, &gram.row(j));
                w[j] = new;
            }
            change_max = change_max.max((new - old).abs());
            w_max = w_max.max(new.abs());
        }
        if w_max == 0.0 || change_max / w_max < tolerance || iterations == max_iterations {
            gap = duality_gap(c, &w, &h, l1, l2);
            if gap < gap_tolerance {
                break;
            }
        }
    }
    let intercept = c.intercept(&w);
    ElasticNetFit {
        weights: w,
        intercept,
        iterations,
        duality_gap: gap / n,
    }
}

/// The gap between the primal objective at `w` and the dual objective at the rescaled
/// residual (scikit-learn's formula, written with the Gram matrix: `r·r = yᵀy − 2qᵀw + wᵀGw`,
/// `Xᵀr = q − Gw`, `rᵀy = yᵀy − qᵀw`).
fn duality_gap(c: &Centred, w: &Array1<f64>, h: &Array1<f64>, l1: f64, l2: f64) -> f64 {
    let qw = c.xty.dot(w);
    let r_norm2 = (c.yty + w.dot(h) - 2.0 * qw).max(0.0);
    let dual_norm = c
        .xty
        .iter()
        .zip(h)
        .zip(w)
        .map(|((q, h), w)| (q - h - l2 * w).abs())
        .fold(0.0, f64::max);
    let (scale, mut gap) = if dual_norm > l1 {
        let scale = l1 / dual_norm;
        (scale, 0.5 * r_norm2 * (1.0 + scale * scale))
    } else {
        (1.0, r_norm2)
    };
    let l1_norm: f64 = w.iter().map(|v| v.abs()).sum();
    gap += l1 * l1_norm - scale * (c.yty - qw) + 0.5 * l2 * (1.0 + scale * scale) * w.dot(w);
    gap
}

/// A binary logistic regression and the Newton steps it took.
pub(crate) struct LogisticFit {
    /// The log-odds of the positive class are `x·weights + intercept`.
    pub weights: Array1<f64>,
    pub intercept: f64,
    pub iterations: u64,
}

/// Minimises linfa's binary logistic objective `Σ −log P(yᵢ | xᵢ) + α/2·‖w‖²` (intercept
/// unpenalised) by Newton's method with a backtracking line search, stopping when the
/// gradient's norm is at most `gradient_tolerance` per row. Each step solves the
/// (p+1)×(p+1) Hessian system, so it needs a handful of passes over the rows where
/// L-BFGS needs dozens. `None` when a Hessian is not positive definite (no penalty, and
/// separable or collinear rows): the caller has a solver for that.
pub(crate) fn logistic(
    x: &Array2<f64>,
    positive: &[bool],
    alpha: f64,
    max_iterations: u64,
    gradient_tolerance: f64,
) -> Option<LogisticFit> {
    let (n, p) = x.dim();
    let mut w = Array1::<f64>::zeros(p);
    let mut b = 0.0;
    let mut z = Array1::<f64>::zeros(n);
    let mut loss = logistic_loss(&z, positive, alpha, &w);
    // Per row: the residual and the curvature, as two columns so that `xᵀ·` both is one
    // matrix product (a matrix-vector product would walk x's columns with a stride).
    let mut per_row = Array2::<f64>::zeros((n, 2));
    for iteration in 0..max_iterations {
        for (i, mut r) in per_row.rows_mut().into_iter().enumerate() {
            let probability = sigmoid(z[i]);
            r[0] = probability - f64::from(u8::from(positive[i]));
            r[1] = probability * (1.0 - probability);
        }
        let (residual, curvature) = (per_row.column(0), per_row.column(1));
        let products = cross_products(x.view(), per_row.view());
        let mut gradient = Array1::<f64>::zeros(p + 1);
        gradient
            .slice_axis_mut(Axis(0), Slice::from(..p))
            .assign(&(&products.column(0) + &(alpha * &w)));
        gradient[p] = residual.sum();
        if gradient.dot(&gradient).sqrt() <= gradient_tolerance * n as f64 {
            return Some(LogisticFit {
                weights: w,
                intercept: b,
                iterations: iteration,
            });
        }
        let root = curvature.mapv(f64::sqrt).insert_axis(Axis(1));
        let weighted = x * &root;
        let product = cross_products(weighted.view(), weighted.view());
        drop(weighted);
        let mut hessian = Array2::<f64>::zeros((p + 1, p + 1));
        for ((i, j), v) in product.indexed_iter() {
            hessian[[i, j]] = *v;
        }
        let cross = products.column(1);
        for j in 0..p {
            hessian[[j, j]] += alpha;
            hessian[[j, p]] = cross[j];
            hessian[[p, j]] = cross[j];
        }
        hessian[[p, p]] = curvature.sum();
        let step = cholesky_solve(hessian, gradient.clone())?;
        let (step_w, step_b) = (step.slice_axis(Axis(0), Slice::from(..p)), step[p]);
        let dz = x.dot(&step_w) + step_b;
        // Armijo backtracking; Newton's full step is taken near the optimum.
        let slope = gradient.dot(&step);
        let mut t = 1.0;
        loop {
            let z_new = &z - &(t * &dz);
            let w_new = &w - &(t * &step_w);
            let loss_new = logistic_loss(&z_new, positive, alpha, &w_new);
            if loss_new <= loss - 1e-4 * t * slope {
                (z, w, b, loss) = (z_new, w_new, b - t * step_b, loss_new);
                break;
            }
            t *= 0.5;
            if t < 1e-10 {
                // No descent left at this precision: as close to the optimum as it gets.
                return Some(LogisticFit {
                    weights: w,
                    intercept: b,
                    iterations: iteration + 1,
                });
            }
        }
    }
    Some(LogisticFit {
        weights: w,
        intercept: b,
        iterations: max_iterations,
    })
}

fn logistic_loss(z: &Array1<f64>, positive: &[bool], alpha: f64, w: &Array1<f64>) -> f64 {
    let log_loss: f64 = z
        .iter()
        .zip(positive)
        .map(|(&z, &pos)| softplus(if pos { -z } else { z }))
        .sum();
    log_loss + 0.5 * alpha * w.dot(w)
}

/// `ln(1 + eᵘ)` without overflow.
pub(crate) fn softplus(u: f64) -> f64 {
    u.max(0.0) + (-u.abs()).exp().ln_1p()
}

/// `aᵀ·b` for two matrices of the same rows, on every core: blocks of rows in parallel,
/// their products summed in block order, so the result does not depend on the core count.
pub(crate) fn cross_products(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> Array2<f64> {
    const BLOCK: usize = 16_384;
    let blocks = a.nrows().div_ceil(BLOCK);
    if blocks <= 1 {
        return a.t().dot(&b);
    }
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<Array2<f64>>>> = Mutex::new(vec![None; blocks]);
    std::thread::scope(|s| {
        for _ in 0..threads.min(blocks) {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= blocks {
                        break;
                    }
                    let rows = Slice::from(k * BLOCK..((k + 1) * BLOCK).min(a.nrows()));
                    let product = a
                        .slice_axis(Axis(0), rows)
                        .t()
                        .dot(&b.slice_axis(Axis(0), rows));
                    if let Ok(mut done) = done.lock() {
                        done[k] = Some(product);
                    }
                }
            });
        }
    });
    let mut sum = Array2::<f64>::zeros((a.ncols(), b.ncols()));
    // Every block is there: a thread that panicked would have re-raised it in `scope`.
    for product in done
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
    {
        sum += &product;
    }
    sum
}

/// Solves `a·w = b` for a symmetric positive-definite `a` (its lower triangle is read and
/// overwritten by the Cholesky factor). `None` when a pivot is not clearly positive (below
/// 1e-10 of the largest diagonal entry) or the solution is not finite.
pub(crate) fn cholesky_solve(mut a: Array2<f64>, mut b: Array1<f64>) -> Option<Array1<f64>> {
    let p = a.nrows();
    let largest = (0..p).map(|i| a[[i, i]]).fold(0.0, f64::max);
    for j in 0..p {
        let d = a[[j, j]] - (0..j).map(|k| a[[j, k]] * a[[j, k]]).sum::<f64>();
        // Written so a NaN pivot is refused too.
        if d.is_nan() || d <= largest * 1e-10 {
            return None;
        }
        let d = d.sqrt();
        a[[j, j]] = d;
        for i in j + 1..p {
            let s = a[[i, j]] - (0..j).map(|k| a[[i, k]] * a[[j, k]]).sum::<f64>();
            a[[i, j]] = s / d;
        }
    }
    for i in 0..p {
        let s = b[i] - (0..i).map(|k| a[[i, k]] * b[k]).sum::<f64>();
        b[i] = s / a[[i, i]];
    }
    for i in (0..p).rev() {
        let s = b[i] - (i + 1..p).map(|k| a[[k, i]] * b[k]).sum::<f64>();
        b[i] = s / a[[i, i]];
    }
    b.iter().all(|v| v.is_finite()).then_some(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use linfa::prelude::*;
    use linfa_elasticnet::ElasticNet;
    use linfa_linear::LinearRegression;
    use linfa_logistic::LogisticRegression;

    /// Uniform in [0, 1), deterministic (a 64-bit LCG's high bits).
    fn uniform(state: &mut u64) -> f64 {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (*state >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Five columns on different scales, one of them a 0/1 indicator (as one-hot columns
    /// are), and a target that ignores columns 1 and 2.
    fn rows(n: usize, seed: u64) -> (Array2<f64>, Array1<f64>) {
        let mut s = seed;
        let x = Array2::from_shape_fn((n, 5), |(_, j)| match j {
            4 => f64::from(u8::from(uniform(&mut s) < 0.3)),
            _ => uniform(&mut s) * 10.0 * (j + 1) as f64 + 3.0 * j as f64,
        });
        let y = x
            .rows()
            .into_iter()
            .map(|r| 2.0 * r[0] - 0.3 * r[3] + 4.0 * r[4] + 7.0 + 2.0 * uniform(&mut s))
            .collect();
        (x, y)
    }

    fn assert_close(ours: &[f64], theirs: &[f64], tolerance: f64) {
        for (a, b) in ours.iter().zip(theirs) {
            assert!(
                (a - b).abs() <= tolerance * (1.0 + b.abs()),
                "{ours:?} vs {theirs:?}"
            );
        }
    }

    /// The closed form is the least-squares solution QR finds: plain, and for ridge the
    /// augmented system `[Xc; √(n·penalty)·I] w = [yc; 0]`.
    #[test]
    fn closed_form_least_squares_matches_qr_with_and_without_a_ridge_penalty() {
        let (x, y) = rows(500, 11);
        let n = x.nrows();
        let centred = Centred::of(&mut x.clone(), &y).unwrap();
        let (w, b) = least_squares(&centred, 0.0).unwrap();
        let qr = LinearRegression::new()
            .fit(&Dataset::new(x.clone(), y.clone()))
            .unwrap();
        assert_close(w.as_slice().unwrap(), qr.params().as_slice().unwrap(), 1e-9);
        assert_close(&[b], &[qr.intercept()], 1e-9);

        let penalty = 0.3;
        let (w, b) = least_squares(&centred, penalty).unwrap();
        let means = x.mean_axis(Axis(0)).unwrap();
        let y_mean = y.mean().unwrap();
        let mut augmented = Array2::<f64>::zeros((n + 5, 5));
        augmented
            .slice_axis_mut(Axis(0), Slice::from(..n))
            .assign(&(&x - &means));
        for j in 0..5 {
            augmented[[n + j, j]] = (n as f64 * penalty).sqrt();
        }
        let mut target = Array1::<f64>::zeros(n + 5);
        target
            .slice_axis_mut(Axis(0), Slice::from(..n))
            .assign(&(&y - y_mean));
        let qr = LinearRegression::new()
            .with_intercept(false)
            .fit(&Dataset::new(augmented, target))
            .unwrap();
        assert_close(w.as_slice().unwrap(), qr.params().as_slice().unwrap(), 1e-9);
        assert_close(&[b], &[y_mean - qr.params().dot(&means)], 1e-9);
    }

    #[test]
    fn collinear_columns_are_too_ill_conditioned_for_the_closed_form_without_a_penalty() {
        let x = Array2::from_shape_fn((50, 3), |(i, j)| match j {
            0 => i as f64,
            1 => 2.0 * i as f64 + 1.0,
            _ => ((i * 7) % 5) as f64,
        });
        let y: Array1<f64> = (0..50).map(|i| i as f64 * 0.5).collect();
        let centred = Centred::of(&mut x.clone(), &y).unwrap();
        assert!(least_squares(&centred, 0.0).is_none());
        assert!(
            least_squares(&centred, 0.01).is_some(),
            "a penalty makes it solvable"
        );
    }

    /// Run to a tight gap, the Gram descent and linfa's descent on the rows (centred, as the
    /// trainer fed linfa) reach the same optimum, zeros included.
    #[test]
    fn gram_coordinate_descent_finds_linfas_elastic_net_and_lasso_optimum() {
        let (x, y) = rows(2_000, 5);
        let means = x.mean_axis(Axis(0)).unwrap();
        let centred = Centred::of(&mut x.clone(), &y).unwrap();
        for (penalty, l1_ratio) in [(0.05, 1.0), (0.5, 1.0), (0.2, 0.5), (1.0, 0.3)] {
            let ours = elastic_net(&centred, penalty, l1_ratio, 100_000, 1e-12);
            assert!(ours.iterations < 100_000, "converged");
            assert!(ours.duality_gap >= -1e-9 && ours.duality_gap < 1e-6);
            let linfa = ElasticNet::<f64>::params()
                .penalty(penalty)
                .l1_ratio(l1_ratio)
                .max_iterations(100_000)
                .tolerance(1e-12)
                .fit(&Dataset::new(&x - &means, y.clone()))
                .unwrap();
            let theirs = linfa.hyperplane();
            assert_close(
                ours.weights.as_slice().unwrap(),
                theirs.as_slice().unwrap(),
                1e-6,
            );
            assert_close(
                &[ours.intercept],
                &[linfa.intercept() - theirs.dot(&means)],
                1e-6,
            );
            for (w, t) in ours.weights.iter().zip(theirs) {
                assert_eq!(*w == 0.0, *t == 0.0, "the same columns are dropped");
            }
        }
        let strong = elastic_net(&centred, 0.5, 1.0, 1_000, 1e-4);
        assert_eq!(strong.weights[1], 0.0, "an irrelevant column is dropped");
    }

    /// Newton and linfa's L-BFGS minimise the same objective: the same weights, and ours
    /// at least as low.
    #[test]
    fn newton_finds_linfas_logistic_optimum() {
        let (x, y) = rows(3_000, 9);
        let median = {
            let mut sorted = y.to_vec();
            sorted.sort_by(f64::total_cmp);
            sorted[sorted.len() / 2]
        };
        let positive: Vec<bool> = y.iter().map(|v| *v > median).collect();
        for alpha in [1.0, 0.01] {
            let ours = logistic(&x, &positive, alpha, 100, 1e-10).unwrap();
            assert!(ours.iterations < 30, "{} Newton steps", ours.iterations);
            let labels: Array1<usize> = positive.iter().map(|&p| usize::from(p)).collect();
            let linfa = LogisticRegression::default()
                .alpha(alpha)
                .max_iterations(10_000)
                .gradient_tolerance(1e-9)
                .fit(&Dataset::new(x.clone(), labels))
                .unwrap();
            let sign = if linfa.labels().pos.class == 1 {
                1.0
            } else {
                -1.0
            };
            let theirs: Vec<f64> = linfa.params().iter().map(|w| sign * w).collect();
            assert_close(ours.weights.as_slice().unwrap(), &theirs, 1e-4);
            assert_close(&[ours.intercept], &[sign * linfa.intercept()], 1e-4);
            let loss =
                |w: &Array1<f64>, b: f64| logistic_loss(&(x.dot(w) + b), &positive, alpha, w);
            let theirs = Array1::from(theirs);
            assert!(
                loss(&ours.weights, ours.intercept)
                    <= loss(&theirs, sign * linfa.intercept()) + 1e-9
            );
        }
    }

    #[test]
    fn a_perfectly_separable_unpenalised_problem_is_left_to_the_caller_or_finite() {
        let x = Array2::from_shape_fn((40, 1), |(i, _)| i as f64);
        let positive: Vec<bool> = (0..40).map(|i| i >= 20).collect();
        if let Some(fit) = logistic(&x, &positive, 0.0, 200, 1e-4) {
            assert!(fit.weights.iter().all(|w| w.is_finite()) && fit.intercept.is_finite());
        }
    }
}
