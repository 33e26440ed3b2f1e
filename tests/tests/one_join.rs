//! One join, three readers: predictions and actuals arrive in a hostile order (ground truth
//! before its prediction, late, twice, never, or for a request never predicted) with the
//! joiner restarted between the halves on the real broker. The monitor's performance, the
//! trainer's store and the dashboard then read the joiner's `driftline.labelled`, and each
//! gives the error (or the rows) per event-time day that the raw traffic implies, computed
//! here by hand.

// The dashboard lives in the `driftline` binary crate; the test compiles the same file.
#[path = "../../consumers/driftline/src/dashboard.rs"]
#[allow(dead_code)]
mod dashboard;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use driftline_joiner::service::JoinerArgs;
use driftline_monitor::performance::{Joined, PerformanceWindow};
use driftline_runtime::registry::Registry;
use driftline_runtime::{Processor, Record, Store};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{
    Actual, Event, FeatureValue, Labelled, Prediction, PredictionLogged, PredictionSource,
};
use driftline_schemas::spec::FeatureSpec;
use driftline_tests::{create_topics, kafka, payload, produce, producer, read_all, unique};
use driftline_trainer::labelled::{RowIndex, newest_first};
use driftline_trainer::metrics::TrainerMetrics;
use driftline_trainer::processor::{Schedule, Topics as TrainerTopics, TrainerProcessor};
use tokio_util::sync::CancellationToken;

const MODEL: &str = "toy";
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// 2024-01-01T00:00:00Z
const T0: i64 = 1_704_067_200_000;
const N: i64 = 300;

/// Request i: predicted at T0 + 2h·i (12 a day, 25 days), the prediction and its truth.
fn prediction(i: i64) -> PredictionLogged {
    PredictionLogged {
        request_id: format!("r{i}"),
        model: MODEL.into(),
        model_version: 1,
        event_time: T0 + 2 * HOUR * i,
        features: [("x".to_string(), FeatureValue::Number((i % 7) as f64))].into(),
        prediction: Prediction {
            value: Some((i % 7) as f64),
            ..Default::default()
        },
        served_at: T0 + 2 * HOUR * i,
        latency_us: 1,
        source: PredictionSource::Kafka,
        shadow: None,
    }
}

fn actual(i: i64) -> Actual {
    Actual {
        request_id: format!("r{i}"),
        model: MODEL.into(),
        event_time: T0 + 2 * HOUR * i,
        value: Some((i % 7) as f64 + (i % 5) as f64 - 2.0),
        class: None,
        observed_at: T0 + 2 * HOUR * i + 6 * HOUR,
    }
}

/// Request i never gets its ground truth.
fn unlabelled(i: i64) -> bool {
    i % 17 == 0
}

/// Per event-time day: (pairs, sum of absolute errors, sum of actual values), by hand from
/// the raw traffic.
fn expected() -> BTreeMap<i64, (u64, f64, f64)> {
    let mut days = BTreeMap::new();
    for i in (0..N).filter(|i| !unlabelled(*i)) {
        let (p, a) = (prediction(i), actual(i));
        let (p, a_value) = (p.prediction.value.unwrap(), a.value.unwrap());
        let d: &mut (u64, f64, f64) = days.entry((T0 + 2 * HOUR * i).div_euclid(DAY)).or_default();
        d.0 += 1;
        d.1 += (p - a_value).abs();
        d.2 += a_value;
    }
    days
}

struct Topics {
    predictions: String,
    actuals: String,
    labelled: String,
    dlq: String,
}

fn joiner_args(t: &Topics, state: &std::path::Path, group: &str) -> JoinerArgs {
    JoinerArgs {
        kafka: kafka(),
        // Nothing here is given up on: the halves come up to 25 days apart.
        max_wait: 365 * DAY,
        max_waiting: 10_000,
        http_addr: "127.0.0.1:0".parse().unwrap(),
        state_dir: state.to_path_buf(),
        group: group.to_string(),
        predictions_topic: t.predictions.clone(),
        actuals_topic: t.actuals.clone(),
        labelled_topic: t.labelled.clone(),
        dlq_topic: t.dlq.clone(),
        max_batch: 50,
        exit_on_eof: true,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn monitor_trainer_and_dashboard_give_the_same_error_per_day_from_the_one_join() -> Result<()>
{
    let t = Topics {
        predictions: unique("join-predictions"),
        actuals: unique("join-actuals"),
        labelled: unique("join-labelled"),
        dlq: unique("join-dlq"),
    };
    create_topics(&[
        (&t.predictions, 1),
        (&t.actuals, 1),
        (&t.labelled, 1),
        (&t.dlq, 1),
    ])
    .await?;
    let codec = Codec::single_object();
    let p = producer()?;
    let send_prediction = |i: i64| {
        let m = prediction(i);
        let bytes = codec.encode(&m);
        let (p, topic) = (&p, &t.predictions);
        async move { produce(p, topic, &m.key(), &bytes?).await }
    };
    let send_actual = |a: Actual| {
        let bytes = codec.encode(&a);
        let (p, topic) = (&p, &t.actuals);
        async move { produce(p, topic, &a.key(), &bytes?).await }
    };

    // First half: the even predictions, and the ground truth of every third request, which
    // for the odd ones arrives before its prediction; truth for a request never predicted.
    for i in (0..N).step_by(2) {
        send_prediction(i).await?;
    }
    for i in (0..N).filter(|i| i % 3 == 0 && !unlabelled(*i)) {
        send_actual(actual(i)).await?;
    }
    send_actual(Actual {
        request_id: "ghost".into(),
        ..actual(5)
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let group = unique("joiner");
    driftline_joiner::service::run(
        joiner_args(&t, dir.path(), &group),
        CancellationToken::new(),
        Default::default(),
    )
    .await?;

    // A restart, then the other halves: the odd predictions, the remaining truth (late
    // for the even ones), and some truth sent again after its pair was published.
    for i in (1..N).step_by(2) {
        send_prediction(i).await?;
    }
    for i in (0..N).filter(|i| i % 3 != 0 && !unlabelled(*i)) {
        send_actual(actual(i)).await?;
    }
    for i in (0..N).filter(|i| i % 10 == 0 && !unlabelled(*i)) {
        send_actual(actual(i)).await?;
    }
    driftline_joiner::service::run(
        joiner_args(&t, dir.path(), &group),
        CancellationToken::new(),
        Default::default(),
    )
    .await?;

    let expected = expected();
    let pairs: usize = expected.values().map(|d| d.0 as usize).sum();
    let records = read_all(&t.labelled, pairs, Duration::from_secs(60))?;
    let labelled: Vec<Labelled> = records
        .iter()
        .map(|m| codec.decode(payload(m)))
        .collect::<Result<_, _>>()?;
    let ids: HashSet<&str> = labelled
        .iter()
        .map(|l| l.prediction.request_id.as_str())
        .collect();
    ensure!(
        ids.len() == labelled.len() && labelled.len() == pairs,
        "each labelled request once: {} records, {} ids, {pairs} expected",
        labelled.len(),
        ids.len()
    );

    // The dashboard, fed as `up` feeds it.
    let mut history = dashboard::History::default();
    (0..N).for_each(|i| history.record_prediction(&prediction(i)));
    labelled.iter().for_each(|l| history.record_labelled(l));
    let view: serde_json::Value = serde_json::from_str(&history.to_json())?;
    let dashboard: BTreeMap<i64, (u64, f64)> = view["days"]
        .as_array()
        .context("days")?
        .iter()
        .map(|d| {
            (
                d["day"].as_i64().unwrap_or_default() / DAY,
                (
                    d["errors"].as_u64().unwrap_or_default(),
                    d["mean_abs_error"].as_f64().unwrap_or(f64::NAN),
                ),
            )
        })
        .collect();

    // The monitor's performance window, one per day.
    let mut monitor: BTreeMap<i64, PerformanceWindow> = BTreeMap::new();
    for l in &labelled {
        let joined =
            Joined::of(&l.prediction.prediction, &l.actual).context("a regression pair")?;
        monitor
            .entry(l.prediction.event_time.div_euclid(DAY))
            .or_insert_with(|| PerformanceWindow::new(usize::MAX, 0))
            .push(joined);
    }

    // The trainer's store, filled by its processor from the labelled records.
    let store_dir = tempfile::tempdir()?;
    let store = Store::open(store_dir.path(), false)?;
    let mut spec = FeatureSpec::from_toml(include_str!("../fixtures/toy.toml"))?;
    spec.features.retain(|f| f.name == "x");
    let mut trainer = TrainerProcessor::new(
        [(MODEL.to_string(), Arc::new(spec))].into(),
        RowIndex::load(&store, [MODEL.to_string()], 100_000)?,
        TrainerTopics {
            labelled: t.labelled.clone(),
            retrain: "unused".into(),
        },
        codec.clone(),
        Arc::new(RwLock::new(Registry::default())),
        Schedule::default(),
        Default::default(),
        TrainerMetrics::new(&prometheus::Registry::new()),
        Default::default(),
        driftline_trainer::service::RolloutArgs::default().gate(0.01),
    );
    for m in &records {
        let mut txn = store.txn();
        trainer
            .process(&Record::of(m), &mut txn)
            .map_err(|r| anyhow::anyhow!("trainer rejected a labelled row: {r:?}"))?;
        store.commit(txn, &BTreeMap::new())?;
    }
    let mut rows: HashMap<i64, (u64, f64)> = HashMap::new();
    for r in newest_first(&store, MODEL, i64::MAX)? {
        let r = r?;
        let y = match r.row.target {
            driftline_model::Target::Value(y) => y,
            other => anyhow::bail!("a class target {other:?}"),
        };
        let d = rows.entry(r.row.event_time.div_euclid(DAY)).or_default();
        d.0 += 1;
        d.1 += y;
    }

    ensure!(expected.len() == 25, "25 days of traffic");
    for (day, (n, abs_sum, actual_sum)) in &expected {
        let mae = abs_sum / *n as f64;
        let (d_n, d_mae) = dashboard.get(day).copied().unwrap_or_default();
        ensure!(
            d_n == *n && close(d_mae, mae),
            "dashboard day {day}: {d_n} errors, MAE {d_mae}; expected {n}, {mae}"
        );
        let w = &monitor[day];
        let m_mae = w.metrics()["mae"];
        ensure!(
            w.len() as u64 == *n && close(m_mae, mae),
            "monitor day {day}: {} pairs, MAE {m_mae}; expected {n}, {mae}",
            w.len()
        );
        let (t_n, t_sum) = rows.get(day).copied().unwrap_or_default();
        ensure!(
            t_n == *n && close(t_sum, *actual_sum),
            "trainer day {day}: {t_n} rows, targets summing to {t_sum}; expected {n}, {actual_sum}"
        );
    }
    Ok(())
}
