//! `driftline backtest` on the flights data: a model fitted on the winter months raises
//! drift as summer arrives, and the reports name the weather features.

use std::path::PathBuf;

use driftline_monitor::cli::{PolicyArgs, Thresholds};
use driftline_offline::backtest::{Backtest, BacktestArgs, BacktestFormat, backtest};
use driftline_schemas::events::DriftDecision;
use driftline_schemas::spec::parse_time;
use driftline_trainer::rollout::Action;
use driftline_trainer::service::{RolloutArgs, RolloutMode};

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data")
}

/// The flights file with January and February as the reference, the defaults otherwise;
/// `None` (the test skips) when the data file is not there.
fn flights() -> Option<BacktestArgs> {
    if !data().join("flights.csv.gz").exists() {
        eprintln!("data/flights.csv.gz is not there; skipping");
        return None;
    }
    Some(BacktestArgs {
        spec: data().join("flights.toml"),
        data: None,
        reference_until: Some("2013-03-01".into()),
        reference_rows: 0,
        until: None,
        no_model: false,
        retrain: false,
        change_at: Vec::new(),
        format: BacktestFormat::Table,
        predictions_out: None,
        rollout: RolloutArgs::default(),
        policy: PolicyArgs::default(),
    })
}

/// Runs the backtest; what it did and the table it printed (shown, for a failing test).
fn run(args: &BacktestArgs) -> (Backtest, String) {
    let mut out = Vec::new();
    let bt = backtest(args, &mut out).unwrap();
    let table = String::from_utf8(out).unwrap();
    println!("{table}");
    (bt, table)
}

#[test]
fn a_winter_model_drifts_as_summer_arrives_and_the_weather_is_named() {
    let Some(flights) = flights() else {
        return;
    };
    let predictions = tempfile::tempdir().unwrap();
    let args = BacktestArgs {
        until: Some("2013-08-01".into()),
        predictions_out: Some(predictions.path().join("predictions.csv")),
        // Weather is autocorrelated: a week (10k flights) of it sits 0.1 reference sd from two
        // months of it most of the time, past the fixed line. The calibrated lines come from
        // the reference's own sub-windows, which hold that variation: no line is set here.
        policy: PolicyArgs {
            evaluate_every: 5_000,
            share: 0.15,
            release_share: 0.1,
            ..PolicyArgs::default()
        },
        ..flights
    };
    let (bt, _) = run(&args);
    assert!(
        bt.reference_rows > 45_000,
        "January and February are the reference: {}",
        bt.reference_rows
    );

    let at =
        |e: &driftline_offline::backtest::BacktestEvaluation| e.evaluation.report.window.end_time;
    let spring = parse_time("2013-04-01").unwrap();
    let summer = parse_time("2013-06-01").unwrap();
    let first = bt.retrains().next().expect("a retrain request");
    assert!(
        first.window_end > spring,
        "no retrain while March still looks like winter"
    );
    let summer_reports: Vec<_> = bt.evaluations.iter().filter(|e| at(e) >= summer).collect();
    assert!(!summer_reports.is_empty());
    for e in &summer_reports {
        let r = &e.evaluation.report;
        assert_eq!(r.decision, DriftDecision::Drift, "{}", r.reason);
        let drifted: Vec<&str> = r
            .features
            .iter()
            .filter(|f| f.drifted)
            .map(|f| f.name.as_str())
            .collect();
        for weather in ["temp", "dewp"] {
            assert!(
                drifted.contains(&weather),
                "{weather} not named in summer: {drifted:?}"
            );
        }
    }

    // The rows for the peer scripts: the reference split as the trainer splits it (the
    // newest fifth held out), then every replayed row, each with the first model's
    // prediction beside its label.
    let mut rdr = csv::Reader::from_path(predictions.path().join("predictions.csv")).unwrap();
    let header = rdr.headers().unwrap().clone();
    assert_eq!(&header[0], "event_time");
    assert_eq!(&header[header.len() - 2], "prediction");
    let mut periods = std::collections::BTreeMap::<String, usize>::new();
    for record in rdr.records() {
        let record = record.unwrap();
        *periods.entry(record[1].to_string()).or_default() += 1;
        let number = |i: usize| record[i].parse::<f64>().unwrap();
        assert!(number(record.len() - 2).is_finite() && number(record.len() - 1).is_finite());
    }
    let (train, holdout) = (periods["train"], periods["holdout"]);
    // Every flight in the file has its delay: every row is labelled.
    assert_eq!(train + holdout, bt.reference_rows);
    assert!(
        (holdout as f64 / (train + holdout) as f64 - 0.2).abs() < 0.01,
        "{periods:?}"
    );
    assert_eq!(periods["analysis"], bt.replayed_rows, "{periods:?}");
}

#[test]
fn a_backtest_with_retraining_runs_the_trainer_and_monitors_each_promoted_version() {
    let Some(flights) = flights() else {
        return;
    };
    // Fixed lines: they ask for retrains on this data within weeks (see docs/DETECTION.md).
    let policy = PolicyArgs {
        thresholds: Thresholds::Fixed,
        ..PolicyArgs::default()
    };
    let args = BacktestArgs {
        until: Some("2013-05-01".into()),
        retrain: true,
        change_at: vec!["2013-04-01".into()],
        policy,
        ..flights
    };
    let (bt, table) = run(&args);
    assert_eq!(
        bt.retrained.len(),
        bt.retrains().count(),
        "each request trains once"
    );
    let promoted: Vec<_> = bt.retrained.iter().filter(|r| r.promoted).collect();
    assert!(!promoted.is_empty(), "{table}");
    // Every retrain takes the next version, rejected ones too (as the trainer numbers
    // them), and each promoted one is what the monitor watches next.
    for (k, r) in bt.retrained.iter().enumerate() {
        assert_eq!(r.version, 2 + k as i64);
        assert!(!r.shadow, "--rollout direct makes no shadows");
    }
    assert!(
        bt.live.is_empty(),
        "no live gate without shadows or a watch"
    );
    let first = promoted[0];
    let next = bt.evaluations.iter().find(|e| e.row > first.row).unwrap();
    assert_eq!(next.evaluation.report.model_version, first.version);
    assert!(bt.errors.rows > 50_000);
    assert!(table.contains("retrained") && table.contains("false alarms"));
}

#[test]
fn with_a_shadow_rollout_only_the_live_gate_changes_what_serves() {
    let Some(flights) = flights() else {
        return;
    };
    let args = BacktestArgs {
        until: Some("2013-10-01".into()),
        retrain: true,
        change_at: vec!["2013-04-01".into()],
        rollout: RolloutArgs {
            mode: RolloutMode::Shadow,
            live_min_rows: 1_000,
            ..RolloutArgs::default()
        },
        ..flights
    };
    let (bt, table) = run(&args);
    let shadows: Vec<_> = bt.retrained.iter().filter(|r| r.shadow).collect();
    assert!(!shadows.is_empty(), "{table}");
    assert!(bt.retrained.iter().all(|r| r.shadow == r.promoted));
    // Each shadow is judged once on the rows after it, unless a newer shadow replaced it
    // first or the replay ended.
    for (k, s) in shadows.iter().enumerate() {
        let judged: Vec<_> = bt
            .live
            .iter()
            .filter(|d| d.version == s.version && d.action != Action::Keep)
            .filter(|d| d.action != Action::Rollback)
            .collect();
        let replaced = shadows
            .get(k + 1)
            .is_some_and(|n| judged.first().is_none_or(|d| d.row > n.row));
        assert!(judged.len() <= 1, "{table}");
        assert!(
            judged.len() == 1
                || replaced
                || s.row + 2 * 1_000 > bt.reference_rows + bt.replayed_rows,
            "v{} never judged:\n{table}",
            s.version
        );
        if let Some(d) = judged.first() {
            assert!(d.row > s.row && d.reason.starts_with("shadow v"), "{table}");
        }
    }
    // What the monitor watches changes only on the live gate's word: at each evaluation it
    // is the version the last promote or rollback before it put in production.
    let mut serving = 1;
    let mut changes = bt
        .live
        .iter()
        .filter(|d| matches!(d.action, Action::Promote | Action::Rollback))
        .peekable();
    let mut previous = vec![];
    for e in &bt.evaluations {
        while let Some(d) = changes.next_if(|d| d.row <= e.row) {
            serving = match d.action {
                Action::Promote => {
                    previous.push(serving);
                    d.version
                }
                _ => previous
                    .pop()
                    .expect("a rollback has a version to go back to"),
            };
        }
        assert_eq!(
            e.evaluation.report.model_version, serving,
            "row {}:\n{table}",
            e.row
        );
    }
    assert!(
        bt.live.iter().any(|d| d.action == Action::Promote),
        "some shadow wins on flights in summer:\n{table}"
    );
    assert!(table.contains("the live gate:"), "{table}");
}
