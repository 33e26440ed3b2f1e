//! On the real flights data (data/flights.csv.gz, no broker): the bootstrap model trained
//! on January–March goes stale in later months; retrained on recent months after the
//! drift, its holdout error is lower than the stale model's on the same rows. Run with
//! `--nocapture` for the table.

use std::path::PathBuf;

use anyhow::{Context, Result};
use driftline_model::evaluate;
use driftline_schemas::events::ModelStatus;
use driftline_schemas::spec::{FeatureSpec, parse_time};
use driftline_trainer::bootstrap::{dataset_path, read_rows};
use driftline_trainer::train::{Context as TrainContext, TrainOptions, train};

fn t(s: &str) -> i64 {
    parse_time(s).expect("valid time")
}

#[test]
fn flights_retrained_on_recent_months_beats_the_stale_bootstrap_model_on_the_same_rows()
-> Result<()> {
    let spec_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/flights.toml");
    let spec = FeatureSpec::load(&spec_path)?;
    let data = dataset_path(&spec, &spec_path).context("flights.toml names its data set")?;
    let opts = TrainOptions::default();

    // Bootstrap: the trainer's default cut-off, the first three calendar months.
    let (winter, skipped) = read_rows(&spec, &data, None, None)?;
    assert!(winter.iter().all(|r| r.event_time < t("2013-04-01")));
    let v1 = train(
        &spec,
        winter,
        &TrainContext {
            version: 1,
            trigger: "bootstrap",
            incumbent: None,
            end_offsets: Default::default(),
            published_at: 1,
        },
        &opts,
        &mut |_| {},
    )?;
    assert_eq!(v1.record.status, ModelStatus::Production);
    let stale = driftline_model::TrainedModel::from_bytes(&v1.record.model_bytes)?;
    println!(
        "bootstrap v1: {} train rows (Jan-Mar, {skipped} skipped), holdout MAE {:.2} min on {} rows",
        v1.record.training_window.train_rows,
        v1.record.metrics["mae"],
        v1.record.training_window.holdout_rows
    );

    // The stale model month by month.
    println!("month    rows  v1 MAE  v1 RMSE");
    let months = ["04", "05", "06", "07", "08", "09", "10", "11", "12"];
    for (i, m) in months.iter().enumerate() {
        let from = t(&format!("2013-{m}-01"));
        let until = months
            .get(i + 1)
            .map_or(t("2014-01-01"), |n| t(&format!("2013-{n}-01")));
        let (rows, _) = read_rows(&spec, &data, Some(from), Some(until))?;
        let e = evaluate(&stale, &rows);
        println!(
            "2013-{m} {:>6}  {:>6.2}  {:>7.2}",
            rows.len(),
            e["mae"],
            e["rmse"]
        );
    }

    // Retrain after the summer drift on the recent months, as a retrain event naming
    // June–July would: older rows train, the newest 20% are the holdout for both models.
    for (from, until) in [("2013-06-01", "2013-08-01"), ("2013-09-01", "2013-11-01")] {
        let (recent, _) = read_rows(&spec, &data, Some(t(from)), Some(t(until)))?;
        let v2 = train(
            &spec,
            recent,
            &TrainContext {
                version: 2,
                trigger: "drift:test",
                incumbent: Some(&v1.record),
                end_offsets: Default::default(),
                published_at: 2,
            },
            &opts,
            &mut |_| {},
        )?;
        let (new, old) = (v2.record.metrics["mae"], v2.record.incumbent_metrics["mae"]);
        println!(
            "retrained on {from}..{until}: {} train rows, holdout {} rows: MAE retrained {new:.2} vs stale {old:.2} \
             (RMSE {:.2} vs {:.2}) -> {:?}",
            v2.record.training_window.train_rows,
            v2.record.training_window.holdout_rows,
            v2.record.metrics["rmse"],
            v2.record.incumbent_metrics["rmse"],
            v2.record.status
        );
        assert!(
            new < old,
            "retraining on recent months lowers the holdout error ({new} vs {old})"
        );
        assert_eq!(v2.record.status, ModelStatus::Production);
    }
    Ok(())
}
