//! Behaviour of the model runtime on synthetic data where the right answer is known.

use std::collections::BTreeMap;

use driftline_model::{
    Algorithm, Error, LabelledRow, PREDICTION, Target, TrainedModel, better, elastic_net_grid,
    evaluate, fit, fit_with, primary_metric, reference_profile, search, split_by_time,
};
use driftline_schemas::events::{FeatureKind, FeatureValue, Features};
use driftline_schemas::spec::FeatureSpec;

/// Deterministic noise for test data (SplitMix64 → uniform and roughly normal).
struct Noise(u64);

impl Noise {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Sum of 12 uniforms − 6: mean 0, standard deviation 1.
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
    }
}

fn spec(algorithm: &str, kind: &str) -> FeatureSpec {
    FeatureSpec::from_toml(&format!(
        r#"
        [dataset]
        name = "synthetic"
        time_column = "t"
        [model]
        name = "synthetic"
        algorithm = "{algorithm}"
        [target]
        column = "y"
        kind = "{kind}"
        [[features]]
        name = "x1"
        kind = "numeric"
        [[features]]
        name = "x2"
        kind = "numeric"
        [[features]]
        name = "colour"
        kind = "categorical"
        "#
    ))
    .unwrap()
}

const COLOURS: [&str; 4] = ["red", "green", "blue", "grey"];

fn features(x1: f64, x2: Option<f64>, colour: Option<&str>) -> Features {
    let mut f = Features::new();
    f.insert("x1".into(), FeatureValue::Number(x1));
    f.insert(
        "x2".into(),
        x2.map_or(FeatureValue::Missing, FeatureValue::Number),
    );
    if let Some(c) = colour {
        f.insert("colour".into(), FeatureValue::Category(c.into()));
    }
    f
}

/// y = 3·x1 − 2·x2 + 4·[colour = blue] + 5 + noise·N(0, 1); x1 ~ N(10, 2), x2 ~ N(−3, 5),
/// 5% of x2 missing (then y uses x2 = its mean −3).
fn regression_rows(n: usize, noise: f64, seed: u64) -> Vec<LabelledRow> {
    let mut r = Noise(seed);
    (0..n)
        .map(|i| {
            let x1 = 10.0 + 2.0 * r.normal();
            let x2 = (r.uniform() >= 0.05).then(|| -3.0 + 5.0 * r.normal());
            let colour = COLOURS[(r.uniform() * 4.0) as usize % 4];
            let blue = if colour == "blue" { 4.0 } else { 0.0 };
            let y = 3.0 * x1 - 2.0 * x2.unwrap_or(-3.0) + blue + 5.0 + noise * r.normal();
            LabelledRow {
                event_time: i as i64 * 1000,
                features: features(x1, x2, Some(colour)),
                target: Target::Value(y),
            }
        })
        .collect()
}

/// Class "a" when x1 > 0 (separable; x2 and colour are noise); `minority` puts "a" on ~17%
/// of rows instead of half.
fn classification_rows(n: usize, seed: u64, minority: bool) -> Vec<LabelledRow> {
    let mut r = Noise(seed);
    (0..n)
        .map(|i| {
            let x1 = r.normal();
            let x2 = r.normal();
            let colour = COLOURS[(r.uniform() * 4.0) as usize % 4];
            let threshold = if minority { 0.95 } else { 0.0 };
            let class = if x1 > threshold { "a" } else { "b" };
            LabelledRow {
                event_time: i as i64,
                features: features(x1, Some(x2), Some(colour)),
                target: Target::Class(class.into()),
            }
        })
        .collect()
}

fn predict_value(model: &TrainedModel, x1: f64, x2: f64, colour: &str) -> f64 {
    model
        .predict(&features(x1, Some(x2), Some(colour)))
        .value
        .unwrap()
}

#[test]
fn linear_models_recover_known_weights() {
    let rows = regression_rows(5_000, 0.5, 1);
    for (algorithm, tolerance) in [
        ("linear", 0.05),
        ("ridge", 0.1),
        ("lasso", 0.1),
        ("elastic-net", 0.1),
    ] {
        let hp: BTreeMap<String, String> = if algorithm == "linear" {
            BTreeMap::new()
        } else {
            [("penalty".to_string(), "0.001".to_string())].into()
        };
        let model = fit_with(&spec(algorithm, "regression"), algorithm, &hp, &rows).unwrap();
        let base = predict_value(&model, 10.0, -3.0, "red");
        let d1 = predict_value(&model, 11.0, -3.0, "red") - base;
        let d2 = predict_value(&model, 10.0, -2.0, "red") - base;
        let blue = predict_value(&model, 10.0, -3.0, "blue") - base;
        assert!((d1 - 3.0).abs() < tolerance, "{algorithm}: x1 weight {d1}");
        assert!((d2 + 2.0).abs() < tolerance, "{algorithm}: x2 weight {d2}");
        assert!(
            (blue - 4.0).abs() < 2.0 * tolerance,
            "{algorithm}: blue effect {blue}"
        );
        // The intercept must be right too: linfa's elastic net does not centre X, we do.
        assert!(
            (base - 41.0).abs() < 2.0 * tolerance,
            "{algorithm}: y at the means {base}"
        );
    }
}

#[test]
fn holdout_error_is_the_noise_level() {
    let (train, holdout) = split_by_time(regression_rows(5_000, 2.0, 2), 0.2);
    let model = fit(&spec("linear", "regression"), &train).unwrap();
    let m = evaluate(&model, &holdout);
    // Noise N(0, 2): MAE ≈ 2·sqrt(2/π) ≈ 1.6, RMSE ≈ 2.
    assert!((m["mae"] - 1.6).abs() < 0.15, "{m:?}");
    assert!((m["rmse"] - 2.0).abs() < 0.15, "{m:?}");
    assert!(m["r2"] > 0.9, "{m:?}");
    assert_eq!(m["rows"], 1_000.0);
    assert!(m.contains_key("mape"));
}

#[test]
fn evaluation_metrics_match_a_hand_computation() {
    // Exact y = 3·x1 − 2·x2 + 5 (+4 for blue): predictions are exact, so shifting the
    // targets by known errors gives known metrics.
    let train = regression_rows(500, 0.0, 3);
    let model = fit(&spec("linear", "regression"), &train).unwrap();
    let errors = [1.0, -3.0, 0.5, -0.5];
    let holdout: Vec<LabelledRow> = train[..4]
        .iter()
        .zip(errors)
        .map(|(r, e)| {
            let Target::Value(y) = r.target else {
                unreachable!()
            };
            LabelledRow {
                target: Target::Value(y + e),
                ..r.clone()
            }
        })
        .collect();
    let m = evaluate(&model, &holdout);
    assert!((m["mae"] - 5.0 / 4.0).abs() < 1e-9, "{m:?}");
    assert!((m["rmse"] - (10.5f64 / 4.0).sqrt()).abs() < 1e-9, "{m:?}");
}

#[test]
fn separable_classes_are_learned_with_probabilities() {
    for algorithm in ["logistic", "random-forest", "boosted-trees"] {
        for minority in [false, true] {
            let (train, holdout) = split_by_time(classification_rows(4_000, 4, minority), 0.25);
            let model = fit(&spec(algorithm, "classification"), &train).unwrap();
            assert_eq!(model.classes(), ["a", "b"]);
            let m = evaluate(&model, &holdout);
            assert!(
                m["accuracy"] > 0.95,
                "{algorithm} minority={minority}: {m:?}"
            );
            assert!(
                m["log_loss"].is_finite() && m["log_loss"] < 0.4,
                "{algorithm}: {m:?}"
            );
            let p = model.predict(&features(3.0, Some(3.0), Some("red")));
            assert_eq!(
                p.class.as_deref(),
                Some("a"),
                "{algorithm} minority={minority}"
            );
            assert!(p.probabilities["a"] > 0.8, "{algorithm}: {p:?}");
            assert!((p.probabilities.values().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }
}

#[test]
fn more_than_two_classes_use_multinomial_logistic() {
    let mut r = Noise(5);
    let rows: Vec<LabelledRow> = (0..3_000)
        .map(|i| {
            let x1 = 3.0 * r.normal();
            let class = if x1 < -2.0 {
                "low"
            } else if x1 < 2.0 {
                "mid"
            } else {
                "high"
            };
            LabelledRow {
                event_time: i,
                features: features(x1, Some(r.normal()), Some("red")),
                target: Target::Class(class.into()),
            }
        })
        .collect();
    let (train, holdout) = split_by_time(rows, 0.2);
    let model = fit(&spec("logistic", "classification"), &train).unwrap();
    assert_eq!(model.classes(), ["high", "low", "mid"]);
    let m = evaluate(&model, &holdout);
    assert!(m["accuracy"] > 0.9, "{m:?}");
    let p = model.predict(&features(-6.0, None, None));
    assert_eq!(p.class.as_deref(), Some("low"));
    assert_eq!(p.probabilities.len(), 3);
}

#[test]
fn boosted_trees_fit_a_nonlinear_regression_and_refuse_three_classes() {
    // y = 10·|x1 − 10| (x1 is centred on 10): no linear model can follow it, trees can.
    let rows: Vec<LabelledRow> = regression_rows(4_000, 0.1, 9)
        .into_iter()
        .map(|r| {
            let x1 = match r.features["x1"] {
                FeatureValue::Number(x) => x,
                _ => unreachable!("x1 is numeric"),
            };
            LabelledRow {
                target: Target::Value(10.0 * (x1 - 10.0).abs()),
                ..r
            }
        })
        .collect();
    let (train, holdout) = split_by_time(rows, 0.2);
    let boosted = fit(&spec("boosted-trees", "regression"), &train).unwrap();
    let linear = fit(&spec("linear", "regression"), &train).unwrap();
    let (b, l) = (
        evaluate(&boosted, &holdout)["mae"],
        evaluate(&linear, &holdout)["mae"],
    );
    assert!(b < l / 5.0, "boosted MAE {b}, linear {l}");
    // The search ran and its choice is on the card.
    assert!(boosted.diagnostics()["search_trials"] >= 1.0);
    let trees: usize = boosted.hyper_parameters()["iterations"].parse().unwrap();
    assert!((1..=200).contains(&trees));

    let three: Vec<LabelledRow> = (0..300)
        .map(|i| LabelledRow {
            event_time: i,
            features: features(i as f64, Some(0.0), Some("red")),
            target: Target::Class(["x", "y", "z"][i as usize % 3].into()),
        })
        .collect();
    let err = fit(&spec("boosted-trees", "classification"), &three)
        .unwrap_err()
        .to_string();
    assert!(err.contains("two classes"), "{err}");
}

#[test]
fn numeric_targets_are_class_labels_for_classification() {
    let rows: Vec<LabelledRow> = classification_rows(1_000, 6, false)
        .into_iter()
        .map(|r| {
            let y = if r.target == Target::Class("a".into()) {
                1.0
            } else {
                0.0
            };
            LabelledRow {
                target: Target::Value(y),
                ..r
            }
        })
        .collect();
    let model = fit(&spec("logistic", "classification"), &rows).unwrap();
    assert_eq!(model.classes(), ["0", "1"]);
    assert!(evaluate(&model, &rows)["accuracy"] > 0.95);
}

fn every_model() -> Vec<TrainedModel> {
    let reg = regression_rows(2_000, 1.0, 7);
    let cls = classification_rows(2_000, 8, false);
    Algorithm::ALL
        .iter()
        .map(
            |a| match a.fits(driftline_schemas::spec::TargetKind::Regression) {
                true => fit_with(
                    &spec(a.name(), "regression"),
                    a.name(),
                    &BTreeMap::new(),
                    &reg,
                )
                .unwrap(),
                false => fit_with(
                    &spec(a.name(), "classification"),
                    a.name(),
                    &BTreeMap::new(),
                    &cls,
                )
                .unwrap(),
            },
        )
        .collect()
}

fn awkward_requests() -> Vec<Features> {
    let mut odd = features(0.5, Some(1.0), Some("ultraviolet"));
    odd.insert("not_a_feature".into(), FeatureValue::Number(1.0));
    let mut strings = Features::new();
    strings.insert("x1".into(), FeatureValue::Category("2.5".into()));
    strings.insert("x2".into(), FeatureValue::Category("n/a".into()));
    strings.insert("colour".into(), FeatureValue::Number(7.0));
    vec![
        features(10.0, Some(-3.0), Some("red")),
        odd,
        features(f64::NAN, None, None),
        features(f64::INFINITY, Some(1e300), Some("")),
        Features::new(),
        strings,
    ]
}

#[test]
fn bytes_round_trip_gives_identical_predictions() {
    for model in every_model() {
        let bytes = model.to_bytes();
        let loaded = TrainedModel::from_bytes(&bytes).unwrap();
        assert_eq!(loaded, model, "{}", model.algorithm());
        assert_eq!(loaded.to_bytes(), bytes);
        for f in awkward_requests() {
            let (a, b) = (model.predict(&f), loaded.predict(&f));
            assert_eq!(a, b, "{}", model.algorithm());
            assert_eq!(a.value.map(f64::to_bits), b.value.map(f64::to_bits));
        }
    }
}

#[test]
fn unseen_categories_and_missing_values_do_not_crash() {
    for model in every_model() {
        for f in awkward_requests() {
            let p = model.predict(&f);
            match model.classes() {
                [] => assert!(p.value.unwrap().is_finite(), "{}: {f:?}", model.algorithm()),
                classes => {
                    assert!(classes.contains(p.class.as_ref().unwrap()));
                    assert!(p.probabilities.values().all(|x| x.is_finite()));
                }
            }
        }
    }
}

#[test]
fn batch_predictions_equal_single_predictions() {
    let requests = awkward_requests();
    let refs: Vec<&Features> = requests.iter().collect();
    for model in every_model() {
        let batch = model.predict_batch(&refs);
        let single: Vec<_> = requests.iter().map(|f| model.predict(f)).collect();
        assert_eq!(batch, single);
    }
}

#[test]
fn bad_bytes_are_errors_not_panics() {
    let model = every_model().remove(5); // random forest: the richest structure
    let good = String::from_utf8(model.to_bytes()).unwrap();
    let json: serde_json::Value = serde_json::from_str(&good).unwrap();
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        b"not json".to_vec(),
        vec![0xff, 0xfe, 0x00],
        good.as_bytes()[..good.len() / 2].to_vec(),
        good.replace("driftline-model/1+json", "driftline-model/9+json")
            .into_bytes(),
        good.replace("random-forest", "xgboost").into_bytes(),
        // A known algorithm that does not make forests.
        good.replace("random-forest", "boosted-trees").into_bytes(),
    ];
    let first_leaf = json["fitted"]["trees"][0]["left"]
        .as_array()
        .and_then(|l| l.iter().position(|v| v == 0))
        .unwrap()
        .to_string();
    let mut tamper = |path: &[&str], value: serde_json::Value| {
        let mut j = json.clone();
        let mut at = &mut j;
        for key in path {
            at = match key.parse::<usize>() {
                Ok(i) => &mut at[i],
                Err(_) => &mut at[*key],
            };
        }
        *at = value;
        cases.push(serde_json::to_vec(&j).unwrap());
    };
    tamper(&["fitted", "trees", "0", "left", "0"], 999_999.into());
    tamper(&["fitted", "trees", "0", "feature", "0"], 999_999.into());
    tamper(&["fitted", "trees", "0", "left"], serde_json::json!([]));
    tamper(&["fitted", "classes"], serde_json::json!(["b", "a"]));
    tamper(&["fitted", "trees"], serde_json::json!([]));
    tamper(&["fitted", "trees", "0", "proba", "0"], 5.0.into());
    tamper(
        &["fitted", "trees", "0", "leaf", &first_leaf],
        999_999.into(),
    );
    tamper(&["encoder", "n_columns"], 1.into());
    tamper(&["encoder", "features", "1", "std"], 0.into());
    tamper(&["fitted", "kind"], "linear".into());
    for (i, bytes) in cases.iter().enumerate() {
        assert!(TrainedModel::from_bytes(bytes).is_err(), "case {i} loaded");
    }
    let linear = every_model().remove(0);
    let mut j: serde_json::Value = serde_json::from_slice(&linear.to_bytes()).unwrap();
    j["fitted"]["weights"] = serde_json::json!([1.0]);
    assert!(matches!(
        TrainedModel::from_bytes(&serde_json::to_vec(&j).unwrap()),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn spec_mistakes_are_errors() {
    let rows = regression_rows(100, 1.0, 9);
    let err = fit(&spec("logistic", "regression"), &rows).unwrap_err();
    assert!(matches!(err, Error::WrongTarget { .. }), "{err}");
    assert!(matches!(
        fit(&spec("xgboost", "regression"), &rows),
        Err(Error::UnknownAlgorithm(_))
    ));
    let hp = [("penalty".to_string(), "-1".to_string())].into();
    assert!(matches!(
        fit_with(&spec("ridge", "regression"), "ridge", &hp, &rows),
        Err(Error::HyperParameter { .. })
    ));
    let one_class: Vec<_> = classification_rows(100, 10, false)
        .into_iter()
        .map(|r| LabelledRow {
            target: Target::Class("a".into()),
            ..r
        })
        .collect();
    assert!(fit(&spec("logistic", "classification"), &one_class).is_err());
    assert!(matches!(
        fit(&spec("linear", "regression"), &rows[..1]),
        Err(Error::NotEnoughRows { .. })
    ));
    let mut bad = rows.clone();
    bad[7].target = Target::Value(f64::NAN);
    assert!(matches!(
        fit(&spec("linear", "regression"), &bad),
        Err(Error::Row { row: 7, .. })
    ));
}

#[test]
fn search_records_every_trial_and_refits_the_best() {
    let train = regression_rows(3_000, 1.0, 11);
    let grid = elastic_net_grid();
    let s = search(
        &spec("elastic-net", "regression"),
        "elastic-net",
        &train,
        0.25,
        &grid,
    )
    .unwrap();
    assert_eq!(s.trials.len(), 16);
    assert_eq!(s.metric, "mae");
    let best = s.trials[s.best].metrics["mae"];
    assert!(
        s.trials
            .iter()
            .all(|t| t.metrics["mae"] >= best && t.error.is_none())
    );
    // The strongest penalty over-shrinks: it must not win.
    assert_ne!(s.trials[s.best].hyper_parameters["penalty"], "1");
    assert_eq!(s.model.trained_rows(), 3_000);
    assert_eq!(
        s.model.hyper_parameters()["penalty"],
        s.trials[s.best].hyper_parameters["penalty"]
    );
}

#[test]
fn candidate_and_incumbent_compare_on_the_same_holdout() {
    let (train, holdout) = split_by_time(regression_rows(3_000, 1.0, 12), 0.2);
    let good = fit(&spec("linear", "regression"), &train).unwrap();
    let hp = [("penalty".to_string(), "5".to_string())].into();
    let poor = fit_with(&spec("ridge", "regression"), "ridge", &hp, &train).unwrap();
    let metric = primary_metric(driftline_schemas::spec::TargetKind::Regression);
    let (g, p) = (evaluate(&good, &holdout), evaluate(&poor, &holdout));
    assert!(better(&g, &p, metric, 0.0));
    assert!(!better(&p, &g, metric, 0.0));
}

#[test]
fn reference_profile_covers_every_feature_and_the_predictions() {
    let rows = regression_rows(12_000, 1.0, 13);
    let spec = spec("linear", "regression");
    let model = fit(&spec, &rows).unwrap();
    let profiles = reference_profile(&spec, &model, &rows);
    let names: Vec<_> = profiles.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["x1", "x2", "colour", PREDICTION]);
    let x2 = &profiles[1];
    assert_eq!(x2.count + x2.missing, 12_000);
    assert!(
        x2.missing > 400 && x2.missing < 800,
        "about 5% missing: {}",
        x2.missing
    );
    assert_eq!(x2.sample.len(), 10_000, "capped");
    let x1 = &profiles[0];
    assert_eq!((x1.count, x1.sample.len()), (12_000, 10_000), "capped");
    let small = reference_profile(&spec, &model, &rows[..100]);
    assert_eq!(small[0].sample.len(), 100, "under the cap: every value");
    assert!(x1.sample.windows(2).all(|w| w[0] <= w[1]));
    let median = x1.sample[5_000];
    assert!((median - 10.0).abs() < 0.1, "median of N(10, 2): {median}");
    let colour = &profiles[2];
    assert_eq!(colour.kind, FeatureKind::Categorical);
    assert_eq!(colour.categories.values().sum::<i64>(), 12_000);
    assert_eq!(colour.categories.len(), 4);
    let prediction = &profiles[3];
    assert_eq!(prediction.kind, FeatureKind::Numeric);
    assert_eq!(prediction.count, 12_000);

    let cls = classification_rows(1_000, 14, false);
    let cspec = self::spec("logistic", "classification");
    let model = fit(&cspec, &cls).unwrap();
    let p = reference_profile(&cspec, &model, &cls).pop().unwrap();
    assert_eq!(
        (p.name.as_str(), p.kind),
        (PREDICTION, FeatureKind::Categorical)
    );
    assert_eq!(p.categories.values().sum::<i64>(), 1_000);
}

#[test]
fn forest_fits_agree_whatever_the_thread_count() {
    // The bootstrap samples and column subsets depend on the seed only. linfa's trees break
    // exact ties (equal class counts in a leaf) in HashMap order, so two fits may differ on
    // a few rows; they must agree on nearly all.
    let rows = classification_rows(2_000, 15, true);
    let spec = spec("random-forest", "classification");
    let with = |threads: &str, seed: &str| {
        let hp = [
            ("threads".to_string(), threads.to_string()),
            ("seed".to_string(), seed.to_string()),
            ("trees".to_string(), "7".to_string()),
        ]
        .into();
        fit_with(&spec, "random-forest", &hp, &rows).unwrap()
    };
    let (one, three) = (with("1", "3"), with("3", "3"));
    let agree = rows
        .iter()
        .filter(|r| one.predict(&r.features) == three.predict(&r.features))
        .count();
    assert!(
        agree as f64 >= 0.98 * rows.len() as f64,
        "{agree} of {}",
        rows.len()
    );
}

#[test]
fn collinear_features_fail_plain_least_squares_clearly_or_fit_finitely() {
    // x2 duplicates x1: least squares has no unique answer. Either linfa reports it or the
    // weights are finite; never NaN in a published model.
    let rows: Vec<LabelledRow> = regression_rows(500, 1.0, 16)
        .into_iter()
        .map(|mut r| {
            let x1 = r.features["x1"].clone();
            r.features.insert("x2".into(), x1);
            r
        })
        .collect();
    match fit(&spec("linear", "regression"), &rows) {
        Ok(model) => assert!(predict_value(&model, 10.0, 10.0, "red").is_finite()),
        Err(e) => assert!(
            e.to_string().contains("ridge") || matches!(e, Error::Fit(_)),
            "{e}"
        ),
    }
    // Ridge always has an answer.
    assert!(
        fit_with(
            &spec("ridge", "regression"),
            "ridge",
            &BTreeMap::new(),
            &rows
        )
        .is_ok()
    );
}
