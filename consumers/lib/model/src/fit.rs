//! Fitting: encode the training rows, run the algorithm (our own solvers in `solve`, or
//! linfa), keep its parameters in our own representation.

use std::collections::{BTreeMap, BTreeSet};

use driftline_schemas::events::Features;
use driftline_schemas::spec::{FeatureSpec, TargetKind};
use linfa::prelude::*;
use linfa_linear::LinearRegression;
use linfa_logistic::{LogisticRegression, MultiLogisticRegression};
use ndarray::{Array1, Array2};

use crate::algorithm::{self, Algorithm, BoostParams, Params, Parsed};
use crate::data::LabelledRow;
use crate::data::holdout_start_of_times;
use crate::encoder::Encoder;
use crate::model::{Fitted, TrainedModel};
use crate::{Error, Result};
use crate::{boost, forest, solve};

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
    if !algorithm.fits(spec.target.kind) {
        return Err(Error::WrongTarget {
            algorithm: algorithm.name(),
            target: spec.target.kind,
        });
    }
    let Parsed {
        encoder: options,
        params,
        mut effective,
    } = algorithm::parse(algorithm, hyper_parameters)?;
    if rows.len() < 2 {
        return Err(Error::NotEnoughRows {
            rows: rows.len(),
            needed: 2,
        });
    }
    // The boosted search validates on the newest rows: encode them in time order.
    let in_time_order: Vec<&LabelledRow>;
    let rows = match &params {
        Params::Boosted(b) if b.search_seconds > 0.0 => {
            let mut sorted = rows.to_vec();
            sorted.sort_by_key(|r| r.event_time);
            in_time_order = sorted;
            &in_time_order[..]
        }
        _ => rows,
    };
    let features: Vec<&Features> = rows.iter().map(|r| &r.features).collect();
    let (encoder, x) = Encoder::fit_transform(spec, &features, options)?;
    let p = encoder.n_columns();
    if p == 0 {
        return Err(Error::Fit(
            "the training rows give no feature columns: every feature is constant or missing"
                .into(),
        ));
    }
    let mut diagnostics = BTreeMap::new();
    let fitted = match &params {
        Params::Linear | Params::ElasticNet { .. } => {
            let y = regression_targets(rows)?;
            fit_regression(&params, x, y, &mut diagnostics)?
        }
        Params::Logistic { .. } | Params::Forest(_) => {
            let (classes, y) = class_targets(rows)?;
            fit_classifier(&params, x, classes, y, &mut diagnostics)?
        }
        Params::Boosted(b) => {
            let kind = spec.target.kind;
            fit_boosted(b, kind, &x, rows, &mut diagnostics, &mut effective)?
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

/// Boosted trees; what the search chose replaces the given hyper-parameters on the card.
fn fit_boosted(
    p: &BoostParams,
    kind: TargetKind,
    x: &Array2<f64>,
    rows: &[&LabelledRow],
    diagnostics: &mut BTreeMap<String, f64>,
    effective: &mut BTreeMap<String, String>,
) -> Result<Fitted> {
    let (classes, y): (Vec<String>, Vec<f64>) = match kind {
        TargetKind::Regression => (Vec::new(), regression_targets(rows)?.to_vec()),
        TargetKind::Classification => {
            let (classes, y) = class_targets(rows)?;
            if classes.len() != 2 {
                return Err(Error::Fit(format!(
                    "boosted trees classify two classes, the rows have {}; use `logistic` or `random-forest`",
                    classes.len()
                )));
            }
            (classes, y.iter().map(|&c| c as f64).collect())
        }
    };
    let times: Vec<i64> = rows.iter().map(|r| r.event_time).collect();
    let at = holdout_start_of_times(&times, 0.2);
    let fit = boost::fit(x.view(), &y, !classes.is_empty(), p, at)?;
    effective.insert("learning_rate".into(), fit.chosen.learning_rate.to_string());
    effective.insert("max_depth".into(), fit.chosen.max_depth.to_string());
    effective.insert("iterations".into(), fit.chosen.iterations.to_string());
    diagnostics.insert("search_trials".into(), fit.trials as f64);
    if let Some(loss) = fit.validation_loss {
        diagnostics.insert("validation_loss".into(), loss);
    }
    Ok(Fitted::Boosted {
        classes,
        base: fit.base,
        trees: fit.trees,
    })
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
    let mut x = x;
    let centred = solve::Centred::of(&mut x, &y).ok_or_else(|| Error::Fit("no rows".into()))?;
    let (weights, intercept) = match *params {
        Params::Linear => match solve::least_squares(&centred, 0.0) {
            Some((w, b)) => (w.to_vec(), b),
            None => {
                // Too ill-conditioned for the normal equations (collinear columns): QR on
                // the rows themselves, which finds a finite fit or lets validation say so.
                // `x` is centred by now, so the intercept comes from the means.
                diagnostics.insert("qr_fallback".into(), 1.0);
                let model = LinearRegression::new()
                    .fit(&Dataset::new(x, y))
                    .map_err(|e| Error::Fit(format!("linear regression: {e}")))?;
                let w = model.params().to_owned();
                let b = centred.intercept(&w);
                (w.to_vec(), b)
            }
        },
        Params::ElasticNet {
            penalty,
            l1_ratio: 0.0,
            ..
        } => {
            let (w, b) = solve::least_squares(&centred, penalty).ok_or_else(|| {
                Error::Fit(format!(
                    "ridge regression: the penalty {penalty} is too small to make the problem well-conditioned"
                ))
            })?;
            (w.to_vec(), b)
        }
        Params::ElasticNet {
            penalty,
            l1_ratio,
            max_iterations,
            tolerance,
        } => {
            let fit = solve::elastic_net(&centred, penalty, l1_ratio, max_iterations, tolerance);
            diagnostics.insert("iterations".into(), f64::from(fit.iterations));
            diagnostics.insert("duality_gap".into(), fit.duality_gap);
            (fit.weights.to_vec(), fit.intercept)
        }
        _ => unreachable!("regression parameters"),
    };
    Ok(Fitted::Linear { weights, intercept })
}

fn fit_classifier(
    params: &Params,
    x: Array2<f64>,
    classes: Vec<String>,
    y: Array1<usize>,
    diagnostics: &mut BTreeMap<String, f64>,
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
            let positive: Vec<bool> = y.iter().map(|&class| class == 1).collect();
            if let Some(fit) =
                solve::logistic(&x, &positive, alpha, max_iterations, gradient_tolerance)
            {
                diagnostics.insert("iterations".into(), fit.iterations as f64);
                // Newton's weights are the log-odds of classes[1], as we keep them.
                return Ok(Fitted::Logistic {
                    classes,
                    weights: fit.weights.to_vec(),
                    intercept: fit.intercept,
                });
            }
            // No penalty and separable or collinear rows: L-BFGS finds a finite point.
            diagnostics.insert("lbfgs_fallback".into(), 1.0);
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
        Params::Forest(params) => {
            let trees = forest::fit(
                &x,
                y.as_slice().unwrap_or(&y.to_vec()),
                classes.len(),
                params,
            )?;
            Ok(Fitted::Forest { classes, trees })
        }
        _ => unreachable!("classification parameters"),
    }
}
