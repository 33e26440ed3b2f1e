//! One training run, pure: rows in, a `ModelPublished` out (no Kafka, no RocksDB).
//!
//! The rows of the job's window are split by time (older rows train, the newest
//! `holdout_fraction` are the holdout); the spec's algorithm is fitted on the training
//! part; the candidate *and* the current production model are scored on the same holdout;
//! the candidate becomes production only when it beats the incumbent by the promotion
//! margin, else it is published as rejected with both sets of numbers.

use std::collections::BTreeMap;
use std::time::Instant;

use driftline_drift::calibrate;
use driftline_model::{
    FORMAT, LabelledRow, TrainedModel, better, error_estimator, evaluate, evaluate_with_errors,
    fit, lower_is_better, multivariate_reference, performance_estimator, permutation_importance,
    primary_metric, reference_profile, split_by_time,
};
use driftline_schemas::events::{ModelPublished, ModelStatus, TrainingWindow};
use driftline_schemas::spec::{FeatureSpec, TargetKind};

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainOptions {
    /// Share of the window's newest rows held out for evaluation.
    pub holdout_fraction: f64,
    /// Relative improvement on the primary metric the candidate needs over the incumbent
    /// (0.01 = 1% lower MAE / log loss; 0 = any strict improvement).
    pub promotion_margin: f64,
    /// Fewest usable rows a window must have (a smaller window is widened backwards).
    pub min_rows: usize,
    /// How a candidate that beats production starts: production, a canary or a shadow
    /// (the live gate decides the rest).
    pub start: Start,
    /// A promoted version answers requests from its window's newest event time plus this
    /// many milliseconds (`effective_from`); `None`: from when it arrives.
    pub swap_lag: Option<i64>,
}

/// How a new version starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Start {
    Production,
    /// A canary answering this share of the requests.
    Canary(f64),
    /// Predicting every request beside production, logged, never returned.
    Shadow,
}

/// The trainer's defaults, in one place for its flags and [`TrainOptions::default`].
pub mod defaults {
    pub const HOLDOUT_FRACTION: f64 = 0.2;
    pub const PROMOTION_MARGIN: f64 = 0.01;
    pub const MIN_ROWS: usize = 200;
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            holdout_fraction: defaults::HOLDOUT_FRACTION,
            promotion_margin: defaults::PROMOTION_MARGIN,
            min_rows: defaults::MIN_ROWS,
            start: Start::Production,
            swap_lag: None,
        }
    }
}

/// What the run is publishing as.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub version: i64,
    pub trigger: &'a str,
    /// The production version now, judged on the same holdout.
    pub incumbent: Option<&'a ModelPublished>,
    pub published_at: i64,
    /// The source offsets the rows reflect (see [`crate::labelled::end_offsets`]).
    pub end_offsets: BTreeMap<String, i64>,
}

#[derive(Debug, Clone)]
pub struct Trained {
    pub record: ModelPublished,
    pub promoted: bool,
    pub metric: &'static str,
    pub fit_seconds: f64,
}

/// Whether a row can be learnt from: a regression target must be a finite number.
pub fn usable(kind: TargetKind, row: &LabelledRow) -> bool {
    match kind {
        TargetKind::Regression => row.target.value().is_some(),
        TargetKind::Classification => !row.target.class_label().is_empty(),
    }
}

/// A row with an event time: a labelled row, or one with where it was read.
pub trait Timed {
    fn event_time(&self) -> i64;
}

impl Timed for LabelledRow {
    fn event_time(&self) -> i64 {
        self.event_time
    }
}

impl Timed for crate::labelled::SourcedRow {
    fn event_time(&self) -> i64 {
        self.row.event_time
    }
}

/// The rows of `[start, end]` (event time, inclusive), oldest first, from rows read
/// newest first. When fewer than `min_rows` fall inside, the window is widened backwards
/// to the newest `min_rows` rows up to `end`: a short drift window still gets a trainable
/// set, and it stays "recent". It stops reading once it has them, and holds only what it
/// keeps: the trainer's store may hold many more rows than a window.
pub fn select_window<R: Timed, E>(
    newest_first: impl IntoIterator<Item = Result<R, E>>,
    start: i64,
    end: i64,
    min_rows: usize,
) -> Result<Vec<R>, E> {
    let mut kept = Vec::new();
    for row in newest_first {
        let row = row?;
        let t = row.event_time();
        if t > end {
            continue;
        }
        if t < start && kept.len() >= min_rows {
            break;
        }
        kept.push(row);
    }
    kept.reverse();
    Ok(kept)
}

/// Fits and judges a candidate. `progress` hears each phase (for the progress log).
pub fn train(
    spec: &FeatureSpec,
    rows: Vec<LabelledRow>,
    ctx: &Context<'_>,
    opts: &TrainOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Trained> {
    let rows: Vec<LabelledRow> = rows
        .into_iter()
        .filter(|r| usable(spec.target.kind, r))
        .collect();
    let needed = opts.min_rows.max(2);
    if rows.len() < needed {
        return Err(Error::NotEnoughRows {
            model: spec.model.name.clone(),
            rows: rows.len(),
            needed,
        });
    }
    let (train, holdout) = split_by_time(rows, opts.holdout_fraction);
    if train.is_empty() || holdout.is_empty() {
        return Err(Error::NotEnoughRows {
            model: spec.model.name.clone(),
            rows: train.len() + holdout.len(),
            needed,
        });
    }
    progress(&format!(
        "fitting {} on {} rows, holdout {} rows",
        spec.model.algorithm,
        train.len(),
        holdout.len()
    ));
    let started = Instant::now();
    let model = fit(spec, &train)?;
    let fit_seconds = started.elapsed().as_secs_f64();
    progress(&format!(
        "fitted in {fit_seconds:.2}s; evaluating candidate and incumbent"
    ));

    let (metrics, errors) = evaluate_with_errors(&model, &holdout);
    let incumbent_metrics = match ctx.incumbent {
        // An incumbent that no longer loads (format change) is scored as nothing: any
        // finite candidate beats it.
        Some(inc) => TrainedModel::from_bytes(&inc.model_bytes)
            .map(|m| evaluate(&m, &holdout))
            .unwrap_or_default(),
        None => BTreeMap::new(),
    };
    let metric = primary_metric(spec.target.kind);
    let promoted = match ctx.incumbent {
        None => metrics.get(metric).is_some_and(|x| x.is_finite()),
        Some(_) => {
            let margin = absolute_margin(&incumbent_metrics, metric, opts.promotion_margin);
            better(&metrics, &incumbent_metrics, metric, margin)
        }
    };
    progress(&format!(
        "{metric}: candidate {} vs incumbent {} → {}",
        fmt(metrics.get(metric)),
        fmt(incumbent_metrics.get(metric)),
        if promoted { "promote" } else { "reject" }
    ));
    // A first version has nothing to share traffic with or shadow.
    let (status, traffic_share) = match (promoted, opts.start, ctx.incumbent) {
        (false, _, _) => (ModelStatus::Rejected, 0.0),
        (true, Start::Canary(share), Some(_)) => (ModelStatus::Canary, share),
        (true, Start::Shadow, Some(_)) => (ModelStatus::Shadow, 0.0),
        (true, _, _) => (ModelStatus::Production, 0.0),
    };
    let reference_profile = reference_profile(spec, &model, &train);
    let window = TrainingWindow {
        start_time: train.first().map_or(0, |r| r.event_time),
        end_time: holdout.last().map_or(0, |r| r.event_time),
        train_rows: train.len() as i64,
        holdout_rows: holdout.len() as i64,
        end_offsets: ctx.end_offsets.clone(),
    };
    // Only production answers by event time: a canary's or shadow's own gate promotes it.
    let effective_from = match status {
        ModelStatus::Production => opts.swap_lag.map(|lag| window.end_time + lag),
        _ => None,
    };
    let record = ModelPublished {
        model: spec.model.name.clone(),
        version: ctx.version,
        algorithm: model.algorithm().name().to_string(),
        hyper_parameters: model.hyper_parameters().clone(),
        metrics,
        incumbent_metrics,
        parent_version: ctx.incumbent.map(|m| m.version),
        trigger: ctx.trigger.to_string(),
        training_window: window,
        reference_profile,
        model_format: FORMAT.to_string(),
        model_bytes: model.to_bytes(),
        status,
        published_at: ctx.published_at,
        traffic_share,
        error_sub_windows: calibrate::mean_sub_windows(&errors),
        feature_importance: permutation_importance(&model, spec, &holdout),
        multivariate: multivariate_reference(spec, &train),
        performance_estimator: performance_estimator(&model, &holdout),
        error_estimator: error_estimator(&model, &holdout),
        effective_from,
    };
    Ok(Trained {
        record,
        promoted,
        metric,
        fit_seconds,
    })
}

/// The relative margin in the metric's own units: `margin × |incumbent's value|`.
pub fn absolute_margin(incumbent: &BTreeMap<String, f64>, metric: &str, relative: f64) -> f64 {
    match (incumbent.get(metric), lower_is_better(metric)) {
        (Some(v), Some(_)) if v.is_finite() && relative.is_finite() => relative.max(0.0) * v.abs(),
        _ => 0.0,
    }
}

fn fmt(x: Option<&f64>) -> String {
    x.map_or_else(|| "-".to_string(), |x| format!("{x:.4}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftline_model::Target;
    use driftline_schemas::events::FeatureValue;

    /// The shared toy spec with its one numeric feature, `x`.
    pub(crate) fn spec() -> FeatureSpec {
        let mut spec =
            FeatureSpec::from_toml(include_str!("../../../tests/fixtures/toy.toml")).unwrap();
        spec.features.retain(|f| f.name == "x");
        spec
    }

    fn rows(range: std::ops::Range<i64>, f: impl Fn(f64) -> f64) -> Vec<LabelledRow> {
        range
            .map(|i| {
                let x = (i % 17) as f64;
                LabelledRow {
                    event_time: i,
                    features: [("x".to_string(), FeatureValue::Number(x))].into(),
                    target: Target::Value(f(x)),
                }
            })
            .collect()
    }

    fn ctx<'a>(version: i64, incumbent: Option<&'a ModelPublished>) -> Context<'a> {
        Context {
            version,
            trigger: "t",
            incumbent,
            published_at: 1,
            end_offsets: [("p/0".to_string(), 200)].into(),
        }
    }

    #[test]
    fn with_a_swap_lag_a_production_version_takes_effect_after_its_newest_row_and_a_canary_does_not_wait()
     {
        let with = |swap_lag, start, version, incumbent: Option<&ModelPublished>| {
            let opts = TrainOptions {
                swap_lag,
                start,
                ..TrainOptions::default()
            };
            let first = rows(0..200, |x| x);
            let later = rows(200..400, |x| 5.0 - 2.0 * x);
            let rows = if incumbent.is_some() { later } else { first };
            train(&spec(), rows, &ctx(version, incumbent), &opts, &mut |_| {})
                .unwrap()
                .record
        };
        let v1 = with(Some(1_000), Start::Production, 1, None);
        assert_eq!(v1.training_window.end_time, 199);
        assert_eq!(v1.effective_from, Some(1_199));
        let v2 = with(Some(1_000), Start::Canary(0.2), 2, Some(&v1));
        assert_eq!(v2.status, ModelStatus::Canary);
        assert_eq!(v2.effective_from, None, "its gate promotes it");
        let untimed = with(None, Start::Production, 1, None);
        assert_eq!(untimed.effective_from, None, "no lag: from arrival");
    }

    #[test]
    fn first_version_is_production_and_a_better_candidate_replaces_it() {
        let opts = TrainOptions::default();
        let v1 = train(
            &spec(),
            rows(0..200, |x| 3.0 * x + 1.0),
            &ctx(1, None),
            &opts,
            &mut |_| {},
        )
        .unwrap();
        assert!(v1.promoted);
        assert_eq!(v1.record.status, ModelStatus::Production);
        assert!(v1.record.incumbent_metrics.is_empty());
        // The world changes: y = -2x + 5. Trained on it, the candidate wins on its holdout.
        let v2 = train(
            &spec(),
            rows(200..400, |x| 5.0 - 2.0 * x),
            &ctx(2, Some(&v1.record)),
            &opts,
            &mut |_| {},
        )
        .unwrap();
        assert!(v2.promoted);
        assert_eq!(v2.record.parent_version, Some(1));
        assert!(v2.record.metrics["mae"] < 1e-6);
        assert!(v2.record.incumbent_metrics["mae"] > 1.0);
        assert_eq!(v2.record.training_window.train_rows, 160);
        assert_eq!(v2.record.training_window.holdout_rows, 40);
        assert_eq!(v2.record.training_window.end_offsets["p/0"], 200);
    }

    /// A spec can name boosted trees: the trainer fits them (search included), and the
    /// bytes it publishes load and predict in the predictor's runtime.
    #[test]
    fn a_boosted_trees_spec_publishes_a_version_the_runtime_serves() {
        let mut spec = spec();
        spec.model.algorithm = "boosted-trees".into();
        let bent = |x: f64| 10.0 * (x - 8.0).abs();
        let v1 = train(
            &spec,
            rows(0..2_000, bent),
            &ctx(1, None),
            &TrainOptions::default(),
            &mut |_| {},
        )
        .unwrap();
        assert!(v1.promoted);
        assert_eq!(v1.record.algorithm, "boosted-trees");
        assert!(v1.record.metrics["mae"] < 1.0, "{:?}", v1.record.metrics);
        assert!(v1.record.hyper_parameters.contains_key("learning_rate"));
        let served = driftline_model::TrainedModel::from_bytes(&v1.record.model_bytes).unwrap();
        for x in [0.0, 8.0, 16.0] {
            let p = served.predict(&[("x".to_string(), FeatureValue::Number(x))].into());
            assert!((p.value.unwrap() - bent(x)).abs() < 2.0, "x {x}: {p:?}");
        }
    }

    #[test]
    fn a_worse_candidate_is_rejected_with_both_numbers() {
        let opts = TrainOptions::default();
        let v1 = train(
            &spec(),
            rows(0..200, |x| 3.0 * x + 1.0),
            &ctx(1, None),
            &opts,
            &mut |_| {},
        )
        .unwrap();
        // A transient anomaly fills the older part of the window; the newest rows (the
        // holdout) are back to normal, where the incumbent is right.
        let mut window = rows(200..360, |x| 10.0 * x);
        window.extend(rows(360..400, |x| 3.0 * x + 1.0));
        let v2 = train(
            &spec(),
            window,
            &ctx(2, Some(&v1.record)),
            &opts,
            &mut |_| {},
        )
        .unwrap();
        assert!(!v2.promoted);
        assert_eq!(v2.record.status, ModelStatus::Rejected);
        assert!(v2.record.metrics["mae"] > v2.record.incumbent_metrics["mae"]);
    }

    #[test]
    fn the_margin_keeps_an_equal_candidate_out() {
        let v1 = train(
            &spec(),
            rows(0..200, |x| 3.0 * x + 1.0),
            &ctx(1, None),
            &TrainOptions::default(),
            &mut |_| {},
        )
        .unwrap();
        let noisy = |x: f64| 3.0 * x + 1.0 + if (x as i64) % 2 == 0 { 0.5 } else { -0.5 };
        let opts = TrainOptions {
            promotion_margin: 0.5,
            ..TrainOptions::default()
        };
        let v2 = train(
            &spec(),
            rows(200..400, noisy),
            &ctx(2, Some(&v1.record)),
            &opts,
            &mut |_| {},
        )
        .unwrap();
        assert!(
            !v2.promoted,
            "{:?} vs {:?}",
            v2.record.metrics, v2.record.incumbent_metrics
        );
    }

    #[test]
    fn with_a_canary_share_a_winner_becomes_a_canary_and_a_first_version_production() {
        let opts = TrainOptions {
            start: Start::Canary(0.2),
            ..TrainOptions::default()
        };
        let v1 = train(
            &spec(),
            rows(0..200, |x| x),
            &ctx(1, None),
            &opts,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(v1.record.status, ModelStatus::Production);
        let v2 = train(
            &spec(),
            rows(200..400, |x| 3.0 * x + 1.0),
            &ctx(2, Some(&v1.record)),
            &opts,
            &mut |_| {},
        )
        .unwrap();
        assert!(v2.promoted);
        assert_eq!(
            (v2.record.status, v2.record.traffic_share),
            (ModelStatus::Canary, 0.2)
        );
    }

    #[test]
    fn too_few_rows_is_an_error_not_a_version() {
        let err = train(
            &spec(),
            rows(0..10, |x| x),
            &ctx(1, None),
            &TrainOptions::default(),
            &mut |_| {},
        );
        assert!(matches!(err, Err(Error::NotEnoughRows { rows: 10, .. })));
        let mut nan = rows(0..200, |x| x);
        nan.iter_mut()
            .take(150)
            .for_each(|r| r.target = Target::Value(f64::NAN));
        assert!(matches!(
            train(
                &spec(),
                nan,
                &ctx(1, None),
                &TrainOptions::default(),
                &mut |_| {}
            ),
            Err(Error::NotEnoughRows { rows: 50, .. })
        ));
    }

    #[test]
    fn a_window_reads_no_further_back_than_it_keeps() {
        let all = rows(0..1000, |x| x);
        let mut read = 0;
        let newest_first = all
            .iter()
            .rev()
            .cloned()
            .inspect(|_| read += 1)
            .map(Ok::<_, ()>);
        let w = select_window(newest_first, 900, 949, 20).unwrap();
        assert_eq!(w.len(), 50);
        assert_eq!(
            read, 101,
            "the 50 newer rows, the 50 inside, one to see the start"
        );
    }

    #[test]
    fn a_short_window_is_widened_backwards() {
        let all = rows(0..100, |x| x);
        let newest_first =
            |rows: &Vec<LabelledRow>| rows.clone().into_iter().rev().map(Ok::<_, ()>);
        let w = select_window(newest_first(&all), 90, 95, 20).unwrap();
        assert_eq!(
            (w.first().unwrap().event_time, w.last().unwrap().event_time),
            (76, 95)
        );
        let w = select_window(newest_first(&all), 10, 60, 20).unwrap();
        assert_eq!(
            (w.first().unwrap().event_time, w.last().unwrap().event_time),
            (10, 60)
        );
    }
}
