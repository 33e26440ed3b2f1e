//! Reference profiles: what the monitor compares live traffic with, computed from the rows a
//! model version was trained on and shipped with it in `ModelPublished.reference_profile`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use driftline_drift::frame::{as_label, as_number};
use driftline_drift::numeric::Sorted;
use driftline_drift::{calibrate, multivariate};

use driftline_schemas::events::{
    FeatureKind, FeatureProfile, FeatureValue, Features, Prediction, Reconstruction,
};
use driftline_schemas::spec::{FeatureDef, FeatureSpec, Kind};

use crate::data::LabelledRow;
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
///
/// `rows` are in time order: each profile's `sub_windows` measure the drift distance of
/// consecutive sub-windows of them against the rest ([`calibrate`]), which is where the
/// monitor's calibrated thresholds come from.
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

/// The multivariate drift check's reference ([`multivariate::fit`]) on the spec's features
/// over `rows` in time order; `None` when it cannot be fitted (fewer than two rows, no
/// variance).
pub fn multivariate_reference(spec: &FeatureSpec, rows: &[LabelledRow]) -> Option<Reconstruction> {
    static MISSING: FeatureValue = FeatureValue::Missing;
    multivariate_of(spec, rows.len(), |i, j| {
        rows[i]
            .features
            .get(&spec.features[j].name)
            .unwrap_or(&MISSING)
    })
}

/// [`multivariate_reference`] of any `rows` rows in time order: `cell(row, j)` reads the
/// value of the spec's `j`-th feature.
pub fn multivariate_of<'a>(
    spec: &FeatureSpec,
    rows: usize,
    cell: impl Fn(usize, usize) -> &'a FeatureValue,
) -> Option<Reconstruction> {
    let columns: Vec<(&str, FeatureKind)> = spec
        .features
        .iter()
        .map(|def| {
            let kind = match def.kind {
                Kind::Numeric => FeatureKind::Numeric,
                Kind::Categorical => FeatureKind::Categorical,
            };
            (def.name.as_str(), kind)
        })
        .collect();
    multivariate::fit(&columns, rows, cell)
}

/// The per-feature part of [`reference_profile`], for rows without a model.
pub fn feature_profiles(spec: &FeatureSpec, rows: &[&Features]) -> Vec<FeatureProfile> {
    spec.features
        .iter()
        .map(|def| feature_profile(def, rows.iter().map(|f| f.get(&def.name))))
        .collect()
}

/// One feature's profile from its values in time order (`None`: missing).
pub fn feature_profile<'a>(
    def: &FeatureDef,
    values: impl Iterator<Item = Option<&'a FeatureValue>>,
) -> FeatureProfile {
    match def.kind {
        Kind::Numeric => numeric_profile(&def.name, values.map(|v| v.and_then(as_number))),
        Kind::Categorical => categorical_profile(&def.name, values.map(|v| v.and_then(as_label))),
    }
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
        let classes = model.classes();
        let mut profile = categorical_profile(
            PREDICTION,
            rows.iter().map(|f| match model.raw(&mut scratch, f) {
                Raw::Class(c) => Some(classes[c].as_str().into()),
                _ => None,
            }),
        );
        // A row the model cannot classify is not a missing prediction.
        profile.missing = 0;
        profile
    }
}

/// The [`PREDICTION`] profile of predictions already made (an imported model's):
/// numeric values, or counts of the predicted classes.
pub fn prediction_profile_of(predictions: &[Prediction]) -> FeatureProfile {
    if predictions.iter().any(|p| p.class.is_some()) {
        return categorical_profile(
            PREDICTION,
            predictions
                .iter()
                .map(|p| p.class.as_deref().map(Into::into)),
        );
    }
    numeric_profile(
        PREDICTION,
        predictions
            .iter()
            .map(|p| p.value.filter(|v| v.is_finite())),
    )
}

/// Values in time order; the sub-windows are measured against the sample the monitor gets.
fn numeric_profile(name: &str, values: impl Iterator<Item = Option<f64>>) -> FeatureProfile {
    let mut in_order = Vec::new();
    let mut missing = 0;
    for v in values {
        match v {
            Some(x) => in_order.push(x),
            None => missing += 1,
        }
    }
    let mut sorted = in_order.clone();
    sorted.sort_by(f64::total_cmp);
    let count = sorted.len() as i64;
    let sample = even_subsample(sorted, SAMPLE_CAP);
    let sub_windows = Sorted::new(&sample)
        .map(|s| calibrate::numeric_sub_windows(&in_order, s))
        .unwrap_or_default();
    FeatureProfile {
        name: name.to_string(),
        kind: FeatureKind::Numeric,
        count,
        missing,
        sample,
        categories: BTreeMap::new(),
        sub_windows,
    }
}

/// Labels in time order (`None`: missing).
fn categorical_profile<'a>(
    name: &str,
    labels: impl Iterator<Item = Option<Cow<'a, str>>>,
) -> FeatureProfile {
    let mut numbers: BTreeMap<String, u32> = BTreeMap::new();
    let mut in_order = Vec::new();
    let mut missing = 0;
    for label in labels {
        let Some(c) = label else {
            missing += 1;
            continue;
        };
        let next = numbers.len() as u32;
        let i = match numbers.get(c.as_ref()) {
            Some(i) => *i,
            None => *numbers.entry(c.into_owned()).or_insert(next),
        };
        in_order.push(i);
    }
    let mut counts = vec![0i64; numbers.len()];
    for i in &in_order {
        counts[*i as usize] += 1;
    }
    let sub_windows = calibrate::categorical_sub_windows(&in_order, numbers.len());
    FeatureProfile {
        name: name.to_string(),
        kind: FeatureKind::Categorical,
        count: in_order.len() as i64,
        missing,
        sample: Vec::new(),
        categories: numbers
            .into_iter()
            .map(|(label, i)| (label, counts[i as usize]))
            .collect(),
        sub_windows,
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
    fn each_profile_says_how_its_distance_varies_between_sub_windows_in_time_order() {
        let spec =
            FeatureSpec::from_toml(include_str!("../../../../tests/fixtures/toy.toml")).unwrap();
        // x drifts slowly upward; the colour changes every 200 rows.
        let rows: Vec<Features> = (0..2_000)
            .map(|i| {
                let colour = if i / 200 % 2 == 0 { "red" } else { "blue" };
                Features::from([
                    ("x".to_string(), FeatureValue::Number(f64::from(i))),
                    ("colour".to_string(), FeatureValue::Category(colour.into())),
                ])
            })
            .collect();
        let refs: Vec<&Features> = rows.iter().collect();
        let profiles = feature_profiles(&spec, &refs);
        for p in &profiles {
            let sizes: Vec<i64> = p.sub_windows.iter().map(|w| w.window).collect();
            assert_eq!(sizes, [100, 200, 400], "{}", p.name);
        }
        // Windows of 100 of a steady ramp, taken in time order, sit far from the rest
        // (shuffled rows would put them about 0.13 sd from it).
        let x = &profiles[0].sub_windows[0];
        assert_eq!(x.count, 20);
        assert!(x.mean > 0.5, "{x:?}");
        // Windows of 100 and 200 hold one colour; 400 holds both.
        let c = &profiles[1].sub_windows;
        assert!(c[0].mean > 0.4 && c[0].sd < 1e-12, "{c:?}");
        assert!(c[2].mean < 1e-9, "{c:?}");
        assert_eq!(profiles[1].categories.len(), 2);
        assert_eq!(profiles[1].count, 2_000);
    }

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
