//! Judging models on a holdout, the promotion rule, and a small hyper-parameter search.

use std::collections::BTreeMap;
use std::time::Instant;

use driftline_drift::estimate::{Scored, fit_estimator};
use driftline_schemas::events::PerformanceEstimator;
use driftline_schemas::spec::{FeatureSpec, TargetKind};

use crate::algorithm::Algorithm;
use crate::data::{LabelledRow, holdout_start_of_times};
use crate::fit::fit_rows;
use crate::model::{Raw, Scratch, TrainedModel};
use crate::{Error, Result};

/// Probabilities are clipped to `[EPS, 1 − EPS]` in the log loss, as scikit-learn does.
use crate::joined::EPS;

/// Metrics of a model on labelled rows.
///
/// - Regression: `mae`, `rmse`, `r2`, and `mape` as a fraction (0.25 = 25%) over the rows
///   whose |target| ≥ 1e-9 (the others would divide by zero; `mape_rows` says how many
///   were used). Rows whose target is not a finite number are skipped.
/// - Classification: `accuracy` and `log_loss` (natural log, probabilities clipped at
///   1e-15 as scikit-learn does; a class the model never saw gets probability 1e-15).
///
/// Always `rows`: how many rows were scored. With no scorable rows only `rows` (0) is set.
pub fn evaluate(model: &TrainedModel, holdout: &[LabelledRow]) -> BTreeMap<String, f64> {
    evaluate_rows(model, holdout.iter(), &mut Vec::new())
}

/// [`evaluate`], and each scored row's error in the [`primary_metric`] (absolute error;
/// log-loss), in row order: how the error varies along the holdout.
pub fn evaluate_with_errors(
    model: &TrainedModel,
    holdout: &[LabelledRow],
) -> (BTreeMap<String, f64>, Vec<f64>) {
    let mut errors = Vec::with_capacity(holdout.len());
    let metrics = evaluate_rows(model, holdout.iter(), &mut errors);
    (metrics, errors)
}

pub(crate) fn evaluate_rows<'a>(
    model: &TrainedModel,
    rows: impl Iterator<Item = &'a LabelledRow>,
    errors: &mut Vec<f64>,
) -> BTreeMap<String, f64> {
    let mut scratch = Scratch::default();
    let mut out = BTreeMap::new();
    match model.target_kind() {
        TargetKind::Regression => {
            let (mut n, mut abs, mut sq, mut ape, mut ape_n) = (0usize, 0.0, 0.0, 0.0, 0usize);
            let (mut sum_y, mut sum_y2) = (0.0, 0.0);
            for r in rows {
                let Some(y) = r.target.value() else { continue };
                let Raw::Value(p) = model.raw(&mut scratch, &r.features) else {
                    continue;
                };
                let e = p - y;
                n += 1;
                errors.push(e.abs());
                abs += e.abs();
                sq += e * e;
                sum_y += y;
                sum_y2 += y * y;
                if y.abs() >= 1e-9 {
                    ape += (e / y).abs();
                    ape_n += 1;
                }
            }
            out.insert("rows".into(), n as f64);
            if n > 0 {
                let nf = n as f64;
                out.insert("mae".into(), abs / nf);
                out.insert("rmse".into(), (sq / nf).sqrt());
                let ss_tot = sum_y2 - sum_y * sum_y / nf;
                if ss_tot > 0.0 {
                    out.insert("r2".into(), 1.0 - sq / ss_tot);
                }
                out.insert("mape_rows".into(), ape_n as f64);
                if ape_n > 0 {
                    out.insert("mape".into(), ape / ape_n as f64);
                }
            }
        }
        TargetKind::Classification => {
            let (mut n, mut correct, mut loss) = (0usize, 0usize, 0.0);
            for r in rows {
                let Raw::Class(predicted) = model.raw(&mut scratch, &r.features) else {
                    continue;
                };
                let truth = model.class_index(&r.target.class_label());
                n += 1;
                correct += usize::from(truth == Some(predicted));
                let p = truth.map_or(0.0, |t| scratch_prob(&scratch, t));
                let e = -p.clamp(EPS, 1.0 - EPS).ln();
                errors.push(e);
                loss += e;
            }
            out.insert("rows".into(), n as f64);
            if n > 0 {
                out.insert("accuracy".into(), correct as f64 / n as f64);
                out.insert("log_loss".into(), loss / n as f64);
            }
        }
    }
    out
}

/// Permutation importance on a holdout: per spec feature, how much the [`primary_metric`]
/// worsens when the feature's values are moved to other rows, each row taking the value
/// of the row half the holdout away (a fixed permutation: it keeps the column's values
/// and breaks their link to the target, and the same rows give the same figures). About 0
/// for a feature the model does not use; negative only by chance.
pub fn permutation_importance(
    model: &TrainedModel,
    spec: &FeatureSpec,
    holdout: &[LabelledRow],
) -> BTreeMap<String, f64> {
    let metric = primary_metric(model.target_kind());
    let Some(base) = evaluate(model, holdout).get(metric).copied() else {
        return BTreeMap::new();
    };
    let n = holdout.len();
    let mut rows = holdout.to_vec();
    let set = |row: &mut LabelledRow, name: &str, from: &LabelledRow| match from.features.get(name)
    {
        Some(v) => {
            row.features.insert(name.to_string(), v.clone());
        }
        None => {
            row.features.remove(name);
        }
    };
    spec.features
        .iter()
        .filter_map(|def| {
            for (i, row) in rows.iter_mut().enumerate() {
                set(row, &def.name, &holdout[(i + n / 2) % n]);
            }
            let permuted = evaluate(model, &rows).get(metric).copied();
            for (row, original) in rows.iter_mut().zip(holdout) {
                set(row, &def.name, original);
            }
            Some((def.name.clone(), permuted? - base))
        })
        .collect()
}

/// The metrics of [`evaluate`] for predictions already made, one per row (an imported
/// model's, on a data file): `rows` and `mae`, `rmse` for regression; `rows`, `accuracy`
/// and `log_loss` for classification. Rows without a fitting prediction are skipped.
pub fn evaluate_predictions(
    kind: TargetKind,
    rows: &[LabelledRow],
    predictions: &[driftline_schemas::events::Prediction],
) -> BTreeMap<String, f64> {
    let (mut n, mut first, mut second) = (0usize, 0.0, 0.0);
    for (r, p) in rows.iter().zip(predictions) {
        match kind {
            TargetKind::Regression => {
                let (Some(y), Some(v)) = (r.target.value(), p.value) else {
                    continue;
                };
                n += 1;
                first += (v - y).abs();
                second += (v - y) * (v - y);
            }
            TargetKind::Classification => {
                let Some(class) = &p.class else { continue };
                let truth = r.target.class_label();
                n += 1;
                first += f64::from(u8::from(*class == *truth));
                let p_true = p.probabilities.get(truth.as_ref()).copied().unwrap_or(0.0);
                second -= p_true.clamp(EPS, 1.0 - EPS).ln();
            }
        }
    }
    let mut out = BTreeMap::from([("rows".to_string(), n as f64)]);
    if n > 0 {
        let nf = n as f64;
        match kind {
            TargetKind::Regression => {
                out.insert("mae".into(), first / nf);
                out.insert("rmse".into(), (second / nf).sqrt());
            }
            TargetKind::Classification => {
                out.insert("accuracy".into(), first / nf);
                out.insert("log_loss".into(), second / nf);
            }
        }
    }
    out
}

/// CBPE's estimator of a classifier's accuracy before labels, fitted on its holdout (rows
/// in time order: the line for a drop comes from its sub-windows); `None` for regressors
/// or a holdout without two classes. Rows whose label the model never saw are left out.
pub fn performance_estimator(
    model: &TrainedModel,
    holdout: &[LabelledRow],
) -> Option<PerformanceEstimator> {
    let classes = model.classes();
    let mut scratch = Scratch::default();
    let rows: Vec<Scored> = holdout
        .iter()
        .filter_map(|r| {
            let Raw::Class(predicted) = model.raw(&mut scratch, &r.features) else {
                return None;
            };
            Some(Scored {
                probabilities: scratch.scores().to_vec(),
                predicted,
                truth: model.class_index(&r.target.class_label())?,
            })
        })
        .collect();
    fit_estimator(classes, &rows)
}

fn scratch_prob(scratch: &Scratch, class: usize) -> f64 {
    scratch.scores().get(class).copied().unwrap_or(0.0)
}

/// Whether a smaller value of the metric is better (errors) or a larger one (accuracy, r2);
/// `None` for a metric this crate does not define.
pub fn lower_is_better(metric: &str) -> Option<bool> {
    match metric {
        "mae" | "rmse" | "mape" | "log_loss" => Some(true),
        "accuracy" | "r2" => Some(false),
        _ => None,
    }
}

/// The metric the trainer ranks models by: `mae` for regression, `log_loss` for
/// classification (it sees probabilities, not just the winning class).
pub fn primary_metric(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Regression => "mae",
        TargetKind::Classification => "log_loss",
    }
}

/// The promotion rule: is the candidate better than the incumbent on `metric` by more than
/// `margin`, in the metric's own units (0.0 = strictly better)?
///
/// Lower is better for errors (`mae`, `rmse`, `mape`, `log_loss`): the candidate must be
/// below `incumbent − margin`; higher is better for `accuracy` and `r2`: above
/// `incumbent + margin`. A candidate without a finite value of the metric is never better;
/// an incumbent without one (e.g. it could not be scored) is beaten by any finite value.
/// An unknown metric never promotes: there is no way to know which way is better.
pub fn better(
    candidate: &BTreeMap<String, f64>,
    incumbent: &BTreeMap<String, f64>,
    metric: &str,
    margin: f64,
) -> bool {
    let Some(lower) = lower_is_better(metric) else {
        return false;
    };
    let Some(c) = candidate.get(metric).copied().filter(|x| x.is_finite()) else {
        return false;
    };
    let Some(i) = incumbent.get(metric).copied().filter(|x| x.is_finite()) else {
        return true;
    };
    let margin = if margin.is_finite() { margin } else { 0.0 };
    if lower {
        c < i - margin
    } else {
        c > i + margin
    }
}

/// One point of a hyper-parameter search and how it scored on the validation rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// The hyper-parameters as given to the fit (the grid point).
    pub hyper_parameters: BTreeMap<String, String>,
    /// Validation metrics (see [`evaluate`]); empty when the fit failed.
    pub metrics: BTreeMap<String, f64>,
    /// Why the fit failed, if it did.
    pub error: Option<String>,
    pub fit_seconds: f64,
}

/// The outcome of [`search`].
#[derive(Debug, Clone)]
pub struct Search {
    pub trials: Vec<Trial>,
    /// Index into `trials` of the winner.
    pub best: usize,
    /// The metric trials were ranked by ([`primary_metric`]).
    pub metric: &'static str,
    /// The winner refitted on all training rows (fitting and validation rows together).
    pub model: TrainedModel,
}

/// A small grid for the elastic net: `penalty` ∈ {0.001, 0.01, 0.1, 1} × `l1_ratio` ∈
/// {0.1, 0.5, 0.9, 1}.
pub fn elastic_net_grid() -> Vec<BTreeMap<String, String>> {
    let mut grid = Vec::new();
    for penalty in ["0.001", "0.01", "0.1", "1"] {
        for l1 in ["0.1", "0.5", "0.9", "1"] {
            grid.push(
                [
                    ("penalty".to_string(), penalty.to_string()),
                    ("l1_ratio".to_string(), l1.to_string()),
                ]
                .into(),
            );
        }
    }
    grid
}

/// Tries each grid point: fits on the older rows of `train` and scores on its newest
/// `validation_fraction` (split by time as [`crate::split_by_time`] does, without moving
/// the rows), ranks by [`primary_metric`] (ties go to the earlier grid point), then refits
/// the winner on all of `train`. The spec's own hyper-parameters are the base each grid
/// point overrides. Fails only when no grid point could be fitted.
pub fn search(
    spec: &FeatureSpec,
    algorithm: &str,
    train: &[LabelledRow],
    validation_fraction: f64,
    grid: &[BTreeMap<String, String>],
) -> Result<Search> {
    let algorithm = Algorithm::from_name(algorithm)?;
    let mut order: Vec<&LabelledRow> = train.iter().collect();
    order.sort_by_key(|r| r.event_time);
    let times: Vec<i64> = order.iter().map(|r| r.event_time).collect();
    let at = holdout_start_of_times(&times, validation_fraction);
    if at == 0 || at == order.len() {
        return Err(Error::NotEnoughRows {
            rows: train.len(),
            needed: 2,
        });
    }
    let (fit_part, validation) = order.split_at(at);
    let metric = primary_metric(spec.target.kind);
    let lower = lower_is_better(metric).unwrap_or(true);
    let mut trials = Vec::with_capacity(grid.len());
    let mut best: Option<(usize, f64)> = None;
    for point in grid {
        let mut hp = spec.model.hyper_parameters.clone();
        hp.extend(point.iter().map(|(k, v)| (k.clone(), v.clone())));
        let started = Instant::now();
        let fitted = fit_rows(spec, algorithm, &hp, fit_part);
        let fit_seconds = started.elapsed().as_secs_f64();
        let (metrics, error) = match fitted {
            Ok(m) => (
                evaluate_rows(&m, validation.iter().copied(), &mut Vec::new()),
                None,
            ),
            Err(e) => (BTreeMap::new(), Some(e.to_string())),
        };
        if let Some(score) = metrics.get(metric).copied().filter(|x| x.is_finite()) {
            let wins = match best {
                None => true,
                Some((_, b)) => {
                    if lower {
                        score < b
                    } else {
                        score > b
                    }
                }
            };
            if wins {
                best = Some((trials.len(), score));
            }
        }
        trials.push(Trial {
            hyper_parameters: point.clone(),
            metrics,
            error,
            fit_seconds,
        });
    }
    let Some((best, _)) = best else {
        let why = trials
            .iter()
            .find_map(|t| t.error.clone())
            .unwrap_or_else(|| "no trials".into());
        return Err(Error::Fit(format!("no grid point could be fitted: {why}")));
    };
    let mut hp = spec.model.hyper_parameters.clone();
    hp.extend(trials[best].hyper_parameters.clone());
    let model = fit_rows(spec, algorithm, &hp, &order)?;
    Ok(Search {
        trials,
        best,
        metric,
        model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn permutation_importance_ranks_the_feature_the_target_follows_first() {
        use crate::data::Target;
        use crate::fit;
        use driftline_schemas::events::FeatureValue;
        let spec =
            FeatureSpec::from_toml(include_str!("../../../../tests/fixtures/toy.toml")).unwrap();
        // y = 3x; the colour alternates and carries nothing.
        let rows: Vec<LabelledRow> = (0..400)
            .map(|i| {
                let x = f64::from((i * 37) % 101);
                let colour = if i % 2 == 0 { "red" } else { "blue" };
                LabelledRow {
                    event_time: i64::from(i),
                    features: [
                        ("x".to_string(), FeatureValue::Number(x)),
                        ("colour".to_string(), FeatureValue::Category(colour.into())),
                    ]
                    .into(),
                    target: Target::Value(3.0 * x),
                }
            })
            .collect();
        let (train, holdout) = crate::split_by_time(rows, 0.25);
        let model = fit(&spec, &train).unwrap();
        let imp = permutation_importance(&model, &spec, &holdout);
        assert!(imp["x"] > 30.0, "{imp:?}");
        assert!(imp["colour"].abs() < 1e-6, "{imp:?}");
        assert_eq!(
            imp,
            permutation_importance(&model, &spec, &holdout),
            "deterministic"
        );
    }

    #[test]
    fn promotes_only_a_clear_improvement_in_the_right_direction() {
        let inc = m(&[("mae", 10.0), ("accuracy", 0.8)]);
        assert!(better(&m(&[("mae", 9.0)]), &inc, "mae", 0.5));
        assert!(!better(&m(&[("mae", 9.8)]), &inc, "mae", 0.5));
        assert!(
            !better(&m(&[("mae", 10.0)]), &inc, "mae", 0.0),
            "a tie is not better"
        );
        assert!(better(&m(&[("accuracy", 0.85)]), &inc, "accuracy", 0.01));
        assert!(!better(&m(&[("accuracy", 0.75)]), &inc, "accuracy", 0.0));
    }

    #[test]
    fn missing_or_unknown_metrics_are_conservative() {
        let inc = m(&[("mae", 10.0)]);
        assert!(!better(&m(&[]), &inc, "mae", 0.0));
        assert!(!better(&m(&[("mae", f64::NAN)]), &inc, "mae", 0.0));
        assert!(better(&m(&[("mae", 50.0)]), &m(&[]), "mae", 0.0));
        assert!(!better(
            &m(&[("auc", 0.9)]),
            &m(&[("auc", 0.5)]),
            "auc",
            0.0
        ));
    }
}
