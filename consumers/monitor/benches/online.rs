//! The monitor's online costs, without Kafka: the update cost per event and feature
//! (without and with the multivariate check, and with the accuracy or MAE estimate), the evaluation time of a 100k-event window, and the resident memory over a long replay.
//!
//! `cargo bench -p driftline-monitor --bench online` (add `-- --events 5000000` for the
//! long replay). Continuous values (every value distinct) are the worst case of the order
//! structure; 13 features as in the flights spec (10 numeric, 3 categorical).

use std::time::Instant;

use driftline_drift::estimate::{Estimator, Scored, fit_estimator};
use driftline_drift::numeric::Sorted;
use driftline_drift::{calibrate, multivariate};
use driftline_model::{Encoder, EncoderOptions, ErrorModel};
use driftline_monitor::MonitorPolicy;
use driftline_monitor::window::{Observation, Window, WindowConfig};
use driftline_schemas::events::{FeatureKind, FeatureProfile, FeatureValue, Features, Prediction};
use driftline_schemas::spec::FeatureSpec;
use rand::{Rng, SeedableRng};

const NUMERIC: usize = 10;
const CATEGORICAL: usize = 3;

/// Profiles with sub-windows as the trainer measures them, so the decision uses the
/// calibrated lines.
fn profiles(rng: &mut rand::rngs::StdRng) -> Vec<FeatureProfile> {
    let mut out = Vec::new();
    for f in 0..NUMERIC {
        let values: Vec<f64> = (0..10_000).map(|_| rng.random::<f64>() * 100.0).collect();
        let mut sample = values.clone();
        sample.sort_by(f64::total_cmp);
        let sub_windows = calibrate::numeric_sub_windows(&values, Sorted::new(&sample).unwrap());
        out.push(FeatureProfile {
            name: format!("n{f}"),
            kind: FeatureKind::Numeric,
            count: 10_000,
            missing: 0,
            sample,
            categories: Default::default(),
            sub_windows,
        });
    }
    let labels: Vec<u32> = (0..10_000).map(|i| i % 16).collect();
    let categorical = calibrate::categorical_sub_windows(&labels, 16);
    for f in 0..CATEGORICAL {
        out.push(FeatureProfile {
            name: format!("c{f}"),
            kind: FeatureKind::Categorical,
            count: 10_000,
            missing: 0,
            sample: vec![],
            categories: (0..16).map(|i| (format!("k{i}"), 625)).collect(),
            sub_windows: categorical.clone(),
        });
    }
    out
}

fn events(rng: &mut rand::rngs::StdRng, n: usize, labels: &[String]) -> Vec<Observation> {
    (0..n)
        .map(|i| {
            let mut values = Vec::with_capacity(NUMERIC + CATEGORICAL);
            // Drifting slowly, so the window is never the reference.
            let shift = (i % 200_000) as f64 / 20_000.0;
            for _ in 0..NUMERIC {
                values.push(FeatureValue::Number(rng.random::<f64>() * 100.0 + shift));
            }
            for _ in 0..CATEGORICAL {
                values.push(FeatureValue::Category(
                    labels[rng.random_range(0..labels.len())].clone(),
                ));
            }
            Observation {
                event_time: i as i64,
                values,
                expected: None,
            }
        })
        .collect()
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let long: usize = std::env::args()
        .skip_while(|a| a != "--events")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let profiles = profiles(&mut rng);
    let labels: Vec<String> = (0..16).map(|i| format!("k{i}")).collect();
    let features = NUMERIC + CATEGORICAL;

    // Update cost: a full 100k window, then 200k more events (each one evicts one).
    let cfg = WindowConfig {
        max_events: 100_000,
        ..Default::default()
    };
    let mut window = Window::new(&profiles, cfg);
    let warm = events(&mut rng, 100_000, &labels);
    warm.iter().for_each(|e| {
        window.push(e);
    });
    let batch = events(&mut rng, 200_000, &labels);
    let started = Instant::now();
    for e in &batch {
        window.push(e);
    }
    let per = started.elapsed().as_nanos() as f64 / (batch.len() * features) as f64;
    println!(
        "update (insert + evict), 100k window, {features} features: {per:.0} ns per event and feature ({:.2} µs per event)",
        per * features as f64 / 1_000.0
    );

    // The same with the multivariate check: each event also scored by the reference's PCA.
    let reference = events(&mut rng, 10_000, &labels);
    let columns: Vec<(&str, FeatureKind)> =
        profiles.iter().map(|p| (p.name.as_str(), p.kind)).collect();
    let pca = multivariate::fit(&columns, reference.len(), |i, j| &reference[i].values[j]);
    let mut with_pca = Window::new(&profiles, cfg).with_multivariate(pca.as_ref());
    warm.iter().for_each(|e| {
        with_pca.push(e);
    });
    let started = Instant::now();
    for e in &batch {
        with_pca.push(e);
    }
    let per_pca = started.elapsed().as_nanos() as f64 / (batch.len() * features) as f64;
    println!(
        "update with the multivariate check ({} components): {per_pca:.0} ns per event and feature ({:.2} µs per event); mean reconstruction error {:.3}",
        pca.as_ref().map_or(0, |r| r.components.len()),
        per_pca * features as f64 / 1_000.0,
        with_pca.reconstruction_error().unwrap_or(f64::NAN)
    );
    drop(with_pca);

    // The same with the accuracy estimate: each prediction also given its chance of being
    // right (CBPE: an isotonic calibration read, as the monitor's `event_of` does), kept
    // in the window's fixed-point sum.
    let classes = ["no".to_string(), "yes".to_string()];
    let prediction = |p: f64| Prediction {
        value: None,
        class: Some(if p >= 0.5 { "yes" } else { "no" }.into()),
        probabilities: [("yes".to_string(), p), ("no".to_string(), 1.0 - p)].into(),
    };
    // Overconfident scores (the truth is drawn from p²), so the calibration is kept.
    let holdout: Vec<Scored> = (0..10_000)
        .map(|_| {
            let p: f64 = rng.random();
            Scored {
                probabilities: vec![1.0 - p, p],
                predicted: usize::from(p >= 0.5),
                truth: usize::from(rng.random::<f64>() < p * p),
            }
        })
        .collect();
    let record = fit_estimator(&classes, &holdout).expect("two classes");
    let estimator = Estimator::new(&record);
    let predictions: Vec<Prediction> = (0..batch.len()).map(|_| prediction(rng.random())).collect();
    let mut with_estimate = Window::new(&profiles, cfg).with_estimate(true);
    warm.iter().for_each(|e| {
        with_estimate.push(e);
    });
    let mut scored = batch.clone();
    let started = Instant::now();
    for (e, p) in scored.iter_mut().zip(&predictions) {
        e.expected = estimator.chance(p);
        with_estimate.push(e);
    }
    let per_estimate = started.elapsed().as_nanos() as f64 / (batch.len() * features) as f64;
    println!(
        "update with the accuracy estimate (calibration of {} points): {per_estimate:.0} ns per event and feature ({:.2} µs per event); estimated accuracy {:.3}",
        record.classes[0].x.len(),
        per_estimate * features as f64 / 1_000.0,
        with_estimate.estimated_mean().map_or(f64::NAN, |(a, _)| a)
    );
    drop(with_estimate);

    // The same with the MAE estimate: each prediction also given its expected absolute
    // error (DLE: the error model's trees over the encoded features and the prediction,
    // read as the monitor's `event_of` does), kept in the window's fixed-point sum.
    let names: Vec<String> = profiles.iter().map(|p| p.name.clone()).collect();
    let features_of = |e: &Observation| -> Features {
        names
            .iter()
            .cloned()
            .zip(e.values.iter().cloned())
            .collect()
    };
    let mut toml = String::from(
        "[dataset]\nname = \"b\"\ntime_column = \"t\"\n[model]\nname = \"b\"\nalgorithm = \"linear\"\n[target]\ncolumn = \"y\"\nkind = \"regression\"\n",
    );
    for p in &profiles {
        let kind = match p.kind {
            FeatureKind::Numeric => "numeric",
            FeatureKind::Categorical => "categorical",
        };
        toml.push_str(&format!(
            "[[features]]\nname = \"{}\"\nkind = \"{kind}\"\n",
            p.name
        ));
    }
    let spec = FeatureSpec::from_toml(&toml).expect("the bench spec");
    let holdout: Vec<Features> = reference.iter().map(features_of).collect();
    let (encoder, _) =
        Encoder::fit_transform(&spec, &holdout, EncoderOptions::default()).expect("an encoder");
    // The model's prediction n0 + n1, wrong by a share of n2.
    let number = |f: &Features, k: &str| match f.get(k) {
        Some(FeatureValue::Number(x)) => *x,
        _ => 0.0,
    };
    let rows: Vec<(&Features, f64, f64)> = holdout
        .iter()
        .map(|f| {
            let p = number(f, "n0") + number(f, "n1");
            (f, p, p + (rng.random::<f64>() - 0.5) * number(f, "n2"))
        })
        .collect();
    let errors = ErrorModel::fit(&encoder, &rows).expect("an error model");
    // The monitor reads a prediction's features just decoded, in cache: a thousand maps
    // in turn, not 200,000 scattered over the heap.
    let inputs: Vec<(Features, f64)> = batch
        .iter()
        .take(1_000)
        .map(|e| {
            let f = features_of(e);
            let p = number(&f, "n0") + number(&f, "n1");
            (f, p)
        })
        .collect();
    let mut with_dle = Window::new(&profiles, cfg).with_estimate(true);
    warm.iter().for_each(|e| {
        with_dle.push(e);
    });
    let started = Instant::now();
    for (e, (f, p)) in scored.iter_mut().zip(inputs.iter().cycle()) {
        e.expected = Some(errors.expected_error(f, *p));
        with_dle.push(e);
    }
    let per_dle = started.elapsed().as_nanos() as f64 / (batch.len() * features) as f64;
    println!(
        "update with the MAE estimate (error model of {} trees): {per_dle:.0} ns per event and feature ({:.2} µs per event); estimated MAE {:.3}",
        errors.trees(),
        per_dle * features as f64 / 1_000.0,
        with_dle.estimated_mean().map_or(f64::NAN, |(a, _)| a)
    );
    drop(with_dle);

    // Evaluation on the full 100k window.
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        std::hint::black_box(window.stats());
        times.push(t.elapsed().as_secs_f64() * 1_000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "evaluation, 100k window, {features} features (10k-value references, SciPy's exact KS p-value): median {:.2} ms, max {:.2} ms",
        times[times.len() / 2],
        times[times.len() - 1]
    );

    // The decision on those statistics: the default policy's rules for every feature.
    let (policy, kinds, stats) = (
        MonitorPolicy::default(),
        window.kinds().collect::<Vec<_>>(),
        window.stats(),
    );
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        std::hint::black_box(policy.features(&kinds, &stats));
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "decision on those statistics, default policy: median {:.1} µs, max {:.1} µs",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    drop(window);

    // RSS over a long replay through a 100k window: it must stay flat.
    let mut window = Window::new(&profiles, cfg);
    let chunk = 100_000;
    let mut samples = Vec::new();
    let mut done = 0;
    let started = Instant::now();
    while done < long {
        let evs = events(&mut rng, chunk, &labels);
        for e in &evs {
            window.push(e);
        }
        drop(evs);
        done += chunk;
        if done % 500_000 == 0 {
            samples.push((done, rss_kib().unwrap_or(0)));
            std::hint::black_box(window.stats());
        }
    }
    println!(
        "replay of {done} events through a 100k window in {:.1} s; RSS (MiB) by events: {}",
        started.elapsed().as_secs_f64(),
        samples
            .iter()
            .map(|(n, kib)| format!("{}k={:.0}", n / 1000, *kib as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(" ")
    );
}
