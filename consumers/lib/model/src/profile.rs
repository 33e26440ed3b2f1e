//! Reference profiles: what the monitor compares live traffic with, computed from the rows a
//! model version was trained on and shipped with it in `ModelPublished.reference_profile`.

use std::collections::BTreeMap;

use driftline_schemas::events::{FeatureKind, FeatureProfile, FeatureValue, Features, Prediction};
use driftline_schemas::spec::{FeatureSpec, Kind};

use crate::data::{LabelledRow, category_label};
use crate::model::{Raw, Scratch, TrainedModel};

/// The most values a numeric profile keeps.
pub const SAMPLE_CAP: usize = 10_000;

/// The name of the pseudo-feature profiling the model's own predictions.
pub const PREDICTION: &str = "prediction";

/// One profile per spec feature (in spec order) over `rows`, then one named
/// [`PREDICTION`] for the model's predictions on those rows: numeric (the predicted value)
/// for regression, categorical (predicted class counts) for classification.
///
/// Numeric: `count` is the number of rows with a finite value, `missing` the others, and
/// `sample` the sorted values, or when there are more than [`SAMPLE_CAP`], `SAMPLE_CAP` evenly
/// spaced order statistics (the value at rank ⌊(i + ½)·n / cap⌋ for each i), which keeps the
/// quantiles and is deterministic. Categorical: `categories` counts each label (numbers read
/// as labels, `7.0` → `"7"`), `count` is their total and `missing` the rest.
pub fn reference_profile(
    spec: &FeatureSpec,
    model: &TrainedModel,
    rows: &[LabelledRow],
) -> Vec<FeatureProfile> {
    let features: Vec<&Features> = rows.iter().map(|r| &r.features).collect();
    let mut profiles = feature_profiles(spec, &features);
    profiles.push(prediction_profile(model, &features));
    profiles
}

/// The per-feature part of [`reference_profile`], for rows without a model.
pub fn feature_profiles(spec: &FeatureSpec, rows: &[&Features]) -> Vec<FeatureProfile> {
    spec.features
        .iter()
        .map(|def| match def.kind {
            Kind::Numeric => numeric_profile(
                &def.name,
                rows.iter().map(|f| match f.get(&def.name) {
                    Some(FeatureValue::Number(x)) if x.is_finite() => Some(*x),
                    Some(FeatureValue::Category(c)) => {
                        c.trim().parse().ok().filter(|x: &f64| x.is_finite())
                    }
                    _ => None,
                }),
            ),
            Kind::Categorical => {
                let mut categories: BTreeMap<String, i64> = BTreeMap::new();
                let mut missing = 0;
                for f in rows {
                    match f.get(&def.name).and_then(category_label) {
                        Some(c) => {
                            if let Some(k) = categories.get_mut(c.as_ref()) {
                                *k += 1;
                            } else {
                                categories.insert(c.into_owned(), 1);
                            }
                        }
                        None => missing += 1,
                    }
                }
                FeatureProfile {
                    name: def.name.clone(),
                    kind: FeatureKind::Categorical,
                    count: categories.values().sum(),
                    missing,
                    sample: Vec::new(),
                    categories,
                }
            }
        })
        .collect()
}

/// The [`PREDICTION`] profile of a model on some rows.
pub fn prediction_profile(model: &TrainedModel, rows: &[&Features]) -> FeatureProfile {
    let mut scratch = Scratch::default();
    if model.classes().is_empty() {
        numeric_profile(
            PREDICTION,
            rows.iter().map(|f| match model.raw(&mut scratch, f) {
                Raw::Value(v) if v.is_finite() => Some(v),
                _ => None,
            }),
        )
    } else {
        let mut counts = vec![0i64; model.classes().len()];
        for f in rows {
            if let Raw::Class(c) = model.raw(&mut scratch, f) {
                counts[c] += 1;
            }
        }
        let categories: BTreeMap<String, i64> = model
            .classes()
            .iter()
            .cloned()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .collect();
        FeatureProfile {
            name: PREDICTION.into(),
            kind: FeatureKind::Categorical,
            count: categories.values().sum(),
            missing: 0,
            sample: Vec::new(),
            categories,
        }
    }
}

/// The [`PREDICTION`] profile of predictions already made (an imported model's):
/// numeric values, or counts of the predicted classes.
pub fn prediction_profile_of(predictions: &[Prediction]) -> FeatureProfile {
    if predictions.iter().any(|p| p.class.is_some()) {
        let mut categories: BTreeMap<String, i64> = BTreeMap::new();
        for c in predictions.iter().filter_map(|p| p.class.as_ref()) {
            *categories.entry(c.clone()).or_default() += 1;
        }
        let count = categories.values().sum();
        return FeatureProfile {
            name: PREDICTION.into(),
            kind: FeatureKind::Categorical,
            count,
            missing: predictions.len() as i64 - count,
            sample: Vec::new(),
            categories,
        };
    }
    numeric_profile(
        PREDICTION,
        predictions
            .iter()
            .map(|p| p.value.filter(|v| v.is_finite())),
    )
}

fn numeric_profile(name: &str, values: impl Iterator<Item = Option<f64>>) -> FeatureProfile {
    let mut sample = Vec::new();
    let mut missing = 0;
    for v in values {
        match v {
            Some(x) => sample.push(x),
            None => missing += 1,
        }
    }
    sample.sort_by(f64::total_cmp);
    let count = sample.len() as i64;
    FeatureProfile {
        name: name.to_string(),
        kind: FeatureKind::Numeric,
        count,
        missing,
        sample: even_subsample(sample, SAMPLE_CAP),
        categories: BTreeMap::new(),
    }
}

/// `cap` evenly spaced order statistics of a sorted sample (all of it when it is smaller).
pub fn even_subsample(sorted: Vec<f64>, cap: usize) -> Vec<f64> {
    let n = sorted.len();
    if n <= cap {
        return sorted;
    }
    (0..cap)
        .map(|i| sorted[((2 * i + 1) * n) / (2 * cap)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsample_keeps_quantiles_and_is_sorted() {
        let sorted: Vec<f64> = (0..100_000).map(f64::from).collect();
        let s = even_subsample(sorted, 10_000);
        assert_eq!(s.len(), 10_000);
        assert!(s.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(s[0], 5.0);
        assert_eq!(s[5_000], 50_005.0);
        assert_eq!(s[9_999], 99_995.0);
        assert_eq!(even_subsample(vec![1.0, 2.0], 10), [1.0, 2.0]);
    }
}
