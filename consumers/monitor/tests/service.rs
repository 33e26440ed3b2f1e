//! The monitor against the real broker: a shifted stream raises drift and one retrain
//! request, served over HTTP and /metrics, while its mean absolute error estimated before
//! labels stays where the labels put it; a classifier's unsure answers lower its accuracy
//! estimated before labels; and kill -9 at random points changes nothing in what
//! it emits, estimates included (after removing the re-emitted duplicates, which carry the
//! same ids).
//!
//! Needs the broker: `DRIFTLINE_BOOTSTRAP_SERVERS` (default 127.0.0.1:9092).

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use driftline_monitor::service::{self, MonitorArgs};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{
    Actual, DriftDecision, DriftReport, Event, FeatureKind, FeatureProfile, FeatureValue, Labelled,
    ModelPublished, ModelStatus, Prediction, PredictionLogged, PredictionSource, RetrainRequested,
    RetrainTrigger, TrainingWindow,
};
use driftline_tests::{create_topics, kafka, payload, producer, read_all, unique};
use rand::{Rng, SeedableRng};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

const MODEL: &str = "toy";
/// A classifier beside it, whose reports carry its accuracy estimated before labels.
const CLASSIFIER: &str = "toy-class";

struct Topics {
    predictions: String,
    labelled: String,
    models: String,
    dlq: String,
}

impl Topics {
    fn new() -> Self {
        Self {
            predictions: unique("mon-predictions"),
            labelled: unique("mon-labelled"),
            models: unique("mon-models"),
            dlq: unique("mon-dlq"),
        }
    }

    async fn create(&self) -> Result<()> {
        create_topics(&[
            (&self.predictions, 1),
            (&self.labelled, 1),
            (&self.models, 1),
            (&self.dlq, 1),
        ])
        .await
    }
}

/// x ~ U(0, 10) (shifted by `shift`), c in {a, b, c} (mostly `a` once drifted).
fn draw(rng: &mut rand::rngs::StdRng, drifted: bool) -> (f64, f64, &'static str) {
    let shift = if drifted { 4.0 } else { 0.0 };
    let x = rng.random::<f64>() * 10.0 + shift;
    let y = rng.random::<f64>() * 5.0;
    let c = if drifted && rng.random::<f64>() < 0.7 {
        "a"
    } else {
        ["a", "b", "c"][rng.random_range(0..3)]
    };
    (x, y, c)
}

/// The regression's record: its reference profiles, and DLE fitted on 5,000 labelled rows
/// of the stream's kind (errors of U(−1, 1) whatever the inputs: an MAE of 0.5).
fn model_record() -> ModelPublished {
    use driftline_model::{LabelledRow, Target, error_estimator, evaluate_with_errors, fit};
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let (mut xs, mut ys, mut preds) = (Vec::new(), Vec::new(), Vec::new());
    let mut cats = std::collections::BTreeMap::new();
    let mut rows = Vec::new();
    for i in 0..5_000 {
        let (x, y, c) = draw(&mut rng, false);
        xs.push(x);
        ys.push(y);
        preds.push(2.0 * x + y);
        *cats.entry(c.to_string()).or_insert(0i64) += 1;
        rows.push(LabelledRow {
            event_time: i,
            features: features(x, y, c),
            target: Target::Value(2.0 * x + y + rng.random::<f64>() * 2.0 - 1.0),
        });
    }
    let spec = driftline_schemas::spec::FeatureSpec::from_toml(
        "[dataset]\nname = \"toy\"\ntime_column = \"t\"\n\
         [model]\nname = \"toy\"\nalgorithm = \"linear\"\n\
         [target]\ncolumn = \"v\"\nkind = \"regression\"\n\
         [[features]]\nname = \"x\"\nkind = \"numeric\"\n\
         [[features]]\nname = \"y\"\nkind = \"numeric\"\n\
         [[features]]\nname = \"c\"\nkind = \"categorical\"\n",
    )
    .expect("the toy spec");
    let model = fit(&spec, &rows).expect("a linear fit");
    let estimator = error_estimator(&model, &rows);
    assert!(estimator.is_some());
    // The line of the estimate, as of the realised error: how the MAE varies between
    // sub-windows of the rows.
    let (_, errors) = evaluate_with_errors(&model, &rows);
    let numeric = |name: &str, mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        FeatureProfile {
            name: name.into(),
            kind: FeatureKind::Numeric,
            count: v.len() as i64,
            missing: 0,
            sample: v,
            categories: Default::default(),
            sub_windows: Vec::new(),
        }
    };
    ModelPublished {
        model: MODEL.into(),
        version: 1,
        algorithm: "linear".into(),
        hyper_parameters: Default::default(),
        metrics: [("mae".to_string(), 1.0)].into(),
        incumbent_metrics: Default::default(),
        parent_version: None,
        trigger: "bootstrap".into(),
        training_window: TrainingWindow::default(),
        reference_profile: vec![
            numeric("x", xs),
            numeric("y", ys),
            FeatureProfile {
                name: "c".into(),
                kind: FeatureKind::Categorical,
                count: 5_000,
                missing: 0,
                sample: vec![],
                categories: cats,
                sub_windows: Vec::new(),
            },
            numeric("prediction", preds),
        ],
        model_format: "test".into(),
        model_bytes: vec![],
        status: ModelStatus::Production,
        published_at: 1,
        traffic_share: 0.0,
        error_sub_windows: driftline_drift::calibrate::mean_sub_windows(&errors),
        feature_importance: Default::default(),
        multivariate: None,
        performance_estimator: None,
        error_estimator: estimator,
        effective_from: None,
    }
}

fn features(x: f64, y: f64, c: &str) -> driftline_schemas::events::Features {
    [
        ("x".to_string(), FeatureValue::Number(x)),
        ("y".to_string(), FeatureValue::Number(y)),
        ("c".to_string(), FeatureValue::Category(c.into())),
    ]
    .into()
}

async fn send(producer: &FutureProducer, topic: &str, key: &str, bytes: Vec<u8>) -> Result<()> {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(&bytes),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("produce to {topic}: {e}"))?;
    Ok(())
}

/// The classifier's answer for `x`: "yes" with probability p = sigmoid(2 (x − 5)), or,
/// once `unsure`, p in [0.45, 0.55] whatever x; and its true class, drawn from p.
fn classify(rng: &mut rand::rngs::StdRng, x: f64, unsure: bool) -> (Prediction, String) {
    let p = if unsure {
        0.45 + 0.1 * rng.random::<f64>()
    } else {
        1.0 / (1.0 + (-2.0 * (x - 5.0)).exp())
    };
    let said = if p >= 0.5 { "yes" } else { "no" };
    let truth = if rng.random::<f64>() < p { "yes" } else { "no" };
    let prediction = Prediction {
        value: None,
        class: Some(said.into()),
        probabilities: [("yes".to_string(), p), ("no".to_string(), 1.0 - p)].into(),
    };
    (prediction, truth.into())
}

/// The classifier's record: x's profile and CBPE fitted on 5,000 confident answers.
fn classifier_record() -> ModelPublished {
    use driftline_drift::estimate::{Scored, fit_estimator};
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let (mut xs, mut rows) = (Vec::new(), Vec::new());
    for _ in 0..5_000 {
        let (x, _, _) = draw(&mut rng, false);
        let (p, truth) = classify(&mut rng, x, false);
        let yes = p.probabilities["yes"];
        xs.push(x);
        rows.push(Scored {
            probabilities: vec![1.0 - yes, yes],
            predicted: usize::from(yes >= 0.5),
            truth: usize::from(truth == "yes"),
        });
    }
    let classes = ["no".to_string(), "yes".to_string()];
    let mut r = model_record();
    xs.sort_by(f64::total_cmp);
    r.model = CLASSIFIER.into();
    r.algorithm = "logistic".into();
    // Accuracy alone: no realised log-loss to rise, so decisions do not depend on how
    // the labelled topic interleaves with the predictions.
    r.metrics = [("accuracy".to_string(), 0.8)].into();
    r.error_estimator = None;
    r.reference_profile.retain(|p| p.name == "x");
    r.reference_profile[0].sample = xs;
    r.performance_estimator = fit_estimator(&classes, &rows);
    assert!(r.performance_estimator.is_some());
    r
}

/// The models, then `n` predictions of the regression (the second half drifted) each
/// followed by its pair with its actual, as the joiner would publish it; then `n / 2` of
/// the classifier (the second half unsure of every row), after them so the regression's
/// offsets are 0 to n − 1.
async fn produce_stream(t: &Topics, n: usize) -> Result<()> {
    let codec = Codec::single_object();
    let producer = producer()?;
    for model in [model_record(), classifier_record()] {
        send(&producer, &t.models, &model.key(), codec.encode(&model)?).await?;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut deliveries = Vec::new();
    let mut pairs = Vec::new();
    for i in 0..n {
        let (x, y, c) = draw(&mut rng, i >= n / 2);
        let predicted = 2.0 * x + y;
        let p = PredictionLogged {
            request_id: format!("r{i}"),
            model: MODEL.into(),
            model_version: 1,
            event_time: 1_000 * i as i64,
            features: features(x, y, c),
            prediction: Prediction {
                value: Some(predicted),
                ..Default::default()
            },
            served_at: 0,
            latency_us: 1,
            source: PredictionSource::Kafka,
            shadow: None,
        };
        let a = Actual {
            request_id: p.request_id.clone(),
            model: MODEL.into(),
            event_time: p.event_time,
            value: Some(predicted + rng.random::<f64>() * 2.0 - 1.0),
            class: None,
            observed_at: p.event_time,
        };
        pairs.push((p, a));
    }
    for i in 0..n / 2 {
        let (x, y, c) = draw(&mut rng, false);
        let (prediction, truth) = classify(&mut rng, x, i >= n / 4);
        let p = PredictionLogged {
            request_id: format!("c{i}"),
            model: CLASSIFIER.into(),
            model_version: 1,
            event_time: 1_000 * i as i64,
            features: features(x, y, c),
            prediction,
            served_at: 0,
            latency_us: 1,
            source: PredictionSource::Kafka,
            shadow: None,
        };
        let a = Actual {
            request_id: p.request_id.clone(),
            model: CLASSIFIER.into(),
            event_time: p.event_time,
            value: None,
            class: Some(truth),
            observed_at: p.event_time,
        };
        pairs.push((p, a));
    }
    for (p, a) in pairs {
        let key = p.model.clone();
        let prediction = codec.encode(&p)?;
        let labelled = Labelled {
            prediction: p,
            actual: a,
            prediction_read_at: Default::default(),
            actual_read_at: Default::default(),
        };
        for (topic, bytes) in [
            (&t.predictions, prediction),
            (&t.labelled, codec.encode(&labelled)?),
        ] {
            loop {
                match producer.send_result(FutureRecord::to(topic).key(&key).payload(&bytes)) {
                    Ok(f) => {
                        deliveries.push(f);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }
    }
    for d in deliveries {
        d.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

fn monitor_flags(
    t: &Topics,
    group: &str,
    state: &Path,
    drift: &str,
    retrain: &str,
    port: u16,
) -> Vec<String> {
    let mut v: Vec<String> = [
        "--predictions-topic",
        &t.predictions,
        "--labelled-topic",
        &t.labelled,
        "--models-topic",
        &t.models,
        "--dlq-topic",
        &t.dlq,
        "--drift-topic",
        drift,
        "--retrain-topic",
        retrain,
        "--group",
        group,
        "--window",
        "2000",
        "--evaluate-every",
        "250",
        "--min-samples",
        "500",
        "--confirmations",
        "2",
        "--max-batch",
        "100",
        "--http-addr",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!("127.0.0.1:{port}"));
    v.push("--state-dir".into());
    v.push(state.display().to_string());
    v
}

fn args(flags: &[String]) -> MonitorArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: MonitorArgs,
    }
    let mut argv = vec!["monitor".to_string()];
    argv.extend(flags.iter().cloned());
    argv.extend(["--bootstrap-servers".to_string(), kafka().bootstrap_servers]);
    Cli::parse_from(argv).a
}

fn decode_all<E: Event>(topic: &str, expected: usize) -> Result<Vec<E>> {
    let codec = Codec::single_object();
    read_all(topic, expected, Duration::from_secs(120))?
        .iter()
        .map(|m| codec.decode::<E>(payload(m)).map_err(Into::into))
        .collect()
}

async fn get(url: &str) -> Result<(u16, String)> {
    // A tiny HTTP/1.0 GET over a socket: the monitor's API is plain.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").context("url")?;
    let (host, path) = rest.split_once('/').context("path")?;
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    let status = buf.split_whitespace().nth(1).context("status")?.parse()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shifted_stream_raises_drift_and_one_retrain_request() -> Result<()> {
    let t = Topics::new();
    let (drift, retrain) = (unique("mon-drift"), unique("mon-retrain"));
    t.create().await?;
    create_topics(&[(&drift, 1), (&retrain, 1)]).await?;
    produce_stream(&t, 4_000).await?;

    let dir = tempfile::tempdir()?;
    let port = driftline_tests::free_port()?;
    let shutdown = CancellationToken::new();
    let flags = monitor_flags(
        &t,
        &unique("mon"),
        &dir.path().join("state"),
        &drift,
        &retrain,
        port,
    );
    let task = tokio::spawn(service::run(
        args(&flags),
        shutdown.clone(),
        Default::default(),
    ));

    let all: Vec<DriftReport> = decode_all(&drift, 4_000 / 250 + 2_000 / 250)?;
    let (reports, classified): (Vec<DriftReport>, Vec<DriftReport>) =
        all.into_iter().partition(|r| r.model == MODEL);
    let (retrains, class_retrains): (Vec<RetrainRequested>, Vec<RetrainRequested>) =
        decode_all::<RetrainRequested>(&retrain, 2)?
            .into_iter()
            .partition(|r| r.model == MODEL);

    // Over HTTP: the latest report, and the gauges per feature on /metrics.
    let (status, body) = get(&format!("http://127.0.0.1:{port}/models/{MODEL}/drift")).await?;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body)?;
    // The 4,000th prediction, at offset 3,999 of partition 0, made it due.
    assert_eq!(json["report_id"], format!("{MODEL}-v1-4000@0:3999"));
    let (_, metrics) = get(&format!("http://127.0.0.1:{port}/metrics")).await?;
    let gauge = metrics.lines().find(|l| {
        l.starts_with("driftline_drift_statistic{")
            && l.contains(r#"feature="x""#)
            && l.contains(r#"statistic="wasserstein_norm""#)
    });
    assert!(
        gauge.is_some_and(|l| l.contains(r#"model="toy""#)),
        "{metrics}"
    );
    assert!(
        metrics.contains("driftline_retrain_requests_total"),
        "{metrics}"
    );
    let (status, _) = get(&format!("http://127.0.0.1:{port}/models/nope/drift")).await?;
    assert_eq!(status, 404);
    shutdown.cancel();
    task.await??;

    assert_eq!(reports.len(), 16, "one report every 250 predictions");
    let first = &reports[0];
    assert_eq!(first.decision, DriftDecision::NoDrift, "{}", first.reason);
    assert!(
        first.features.iter().all(|f| !f.drifted),
        "the reference half does not drift"
    );
    let last = reports.last().context("reports")?;
    assert_eq!(last.decision, DriftDecision::Drift, "{}", last.reason);
    let x = last.features.iter().find(|f| f.name == "x").context("x")?;
    assert!(
        x.drifted && x.wasserstein_norm.unwrap_or(0.0) > 0.5,
        "{x:?}"
    );
    assert!(last.features.iter().any(|f| f.name == "c" && f.drifted));
    assert!(last.prediction.as_ref().is_some_and(|p| p.drifted));
    // Performance depends on which labelled pairs the consumer had read by then (two
    // partitions are not ordered against each other); the pure tests in monitor.rs check
    // its values.
    assert_eq!(
        retrains.len(),
        1,
        "one request, then the cooldown: {retrains:?}"
    );
    let r = &retrains[0];
    assert_eq!(
        r.retrain_id,
        format!("retrain-{}", r.report_id.clone().unwrap_or_default())
    );
    assert!(r.drifted_features.contains(&"x".to_string()));
    // Its MAE estimated before labels: the inputs moved, its errors did not, nor does the
    // estimate (DLE's model learnt errors that do not depend on them).
    for r in [first, last] {
        let e = r.estimated.as_ref().context("estimated")?;
        assert_eq!(e.metric, "mae");
        assert!(e.lower < 0.5 && 0.5 < e.upper, "{e:?}");
        assert!(e.signal.as_ref().is_some_and(|s| !s.fired), "{e:?}");
    }

    // The classifier's reports carry the accuracy estimated before labels: near the
    // holdout's while it is confident, then its drop is a cause.
    assert_eq!(classified.len(), 8, "{classified:?}");
    let e = classified[1].estimated.as_ref().context("estimated")?;
    let line = e.signal.as_ref().context("line")?;
    assert!(!line.fired && e.value > 0.75, "{e:?}");
    assert!(e.lower < e.value && e.value < e.upper);
    let last = classified.last().context("reports")?;
    let e = last.estimated.as_ref().context("estimated")?;
    assert!(e.signal.as_ref().is_some_and(|s| s.fired), "{e:?}");
    assert!(
        last.reason
            .contains("performance estimated before labels dropped"),
        "{}",
        last.reason
    );
    // Seen in the predictions alone: a performance request, before any label said so.
    assert_eq!(class_retrains.len(), 1, "{class_retrains:?}");
    assert_eq!(class_retrains[0].trigger, RetrainTrigger::Performance);
    Ok(())
}

fn spawn_monitor(flags: &[String]) -> Result<Child> {
    Ok(Command::new(env!("CARGO_BIN_EXE_driftline-monitor"))
        .args(flags)
        .env("DRIFTLINE_BOOTSTRAP_SERVERS", kafka().bootstrap_servers)
        .env(
            "RUST_LOG",
            std::env::var("MONITOR_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .spawn()?)
}

/// Counts messages on a topic without a group (for watching progress).
fn count(topic: &str) -> Result<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = kafka().consumer_config(&unique("watch")).create()?;
    let (lo, hi) = c.fetch_watermarks(topic, 0, Duration::from_secs(5))?;
    Ok(hi - lo)
}

/// Kills (SIGKILL) the monitor once `topic` holds at least `target` messages.
fn kill_when(mut child: Child, topic: &str, target: i64) -> Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = count(topic)?;
        if n >= target {
            eprintln!("killing at {n} reports (target {target})");
            child.kill()?;
            child.wait()?;
            return Ok(n);
        }
        if let Some(status) = child.try_wait()? {
            bail!("monitor exited ({status}) before {target} reports");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("no progress to {target} reports (at {n})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a run emitted, first occurrence of each id (a replayed emission is a duplicate),
/// with the wall-clock stamps set to 0. Everything else is the log's: the monitor takes
/// the predictions and labelled partitions in timestamp order, so which pairs an
/// evaluation had scored, its performance figures and the labelled offsets it names do
/// not depend on how the consumer's fetches interleaved the two.
fn emitted(
    drift: &str,
    retrain: &str,
    reports: usize,
) -> Result<(Vec<DriftReport>, Vec<RetrainRequested>)> {
    let mut seen = HashSet::new();
    let mut r: Vec<DriftReport> = decode_all(drift, reports)?;
    r.retain(|x| seen.insert(x.report_id.clone()));
    for x in r.iter_mut() {
        x.evaluated_at = 0;
    }
    let mut q: Vec<RetrainRequested> = decode_all(retrain, 1)?;
    q.retain(|x| seen.insert(x.retrain_id.clone()));
    for x in q.iter_mut() {
        x.requested_at = 0;
    }
    Ok((r, q))
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_points_changes_nothing_in_what_it_emits() -> Result<()> {
    const N: usize = 20_000;
    const REPORTS: usize = N / 250 + N / 2 / 250;
    let t = Topics::new();
    t.create().await?;
    produce_stream(&t, N).await?;
    let dir = tempfile::tempdir()?;

    // The uninterrupted run.
    let (drift_a, retrain_a) = (unique("mon-drift-a"), unique("mon-retrain-a"));
    create_topics(&[(&drift_a, 1), (&retrain_a, 1)]).await?;
    let mut flags = monitor_flags(
        &t,
        &unique("clean"),
        &dir.path().join("a"),
        &drift_a,
        &retrain_a,
        driftline_tests::free_port()?,
    );
    flags.push("--exit-on-eof".into());
    let status = spawn_monitor(&flags)?.wait()?;
    assert!(status.success(), "clean run: {status}");
    let clean = emitted(&drift_a, &retrain_a, REPORTS)?;
    assert_eq!(clean.0.len(), REPORTS);
    assert!(!clean.1.is_empty(), "the drifted half asks for a retrain");

    // Killed three times at random points, then run to the end, every start in the same
    // consumer group as a user's restarts would be (the restarted member gets the
    // partitions once the killed one's session has expired on the broker).
    let (drift_b, retrain_b) = (unique("mon-drift-b"), unique("mon-retrain-b"));
    create_topics(&[(&drift_b, 1), (&retrain_b, 1)]).await?;
    let state_b = dir.path().join("b");
    let group = unique("crash");
    let crash_flags = || -> Result<Vec<String>> {
        let port = driftline_tests::free_port()?;
        let mut f = monitor_flags(&t, &group, &state_b, &drift_b, &retrain_b, port);
        f.push("--exit-on-eof".into());
        Ok(f)
    };
    let mut rng = rand::rng();
    let mut at = 0;
    for round in 0..3 {
        // A kill is polled, so it can land well past its target (a restart replays and
        // re-emits quickly, duplicates included); once the run is near its end, stop.
        let last = REPORTS as i64 - 3 + round;
        if at + 1 >= last {
            eprintln!("kill {round} skipped: {at} reports already emitted");
            break;
        }
        let target = rng.random_range(at + 1..(at + 25).min(last));
        at = kill_when(spawn_monitor(&crash_flags()?)?, &drift_b, target)?;
    }
    let status = spawn_monitor(&crash_flags()?)?.wait()?;
    assert!(status.success(), "final run: {status}");
    let crashed = emitted(&drift_b, &retrain_b, REPORTS)?;

    assert_eq!(crashed.0.len(), clean.0.len());
    for (a, b) in clean.0.iter().zip(&crashed.0) {
        assert_eq!(a, b, "report {} differs after recovery", a.report_id);
    }
    assert_eq!(crashed.1, clean.1, "the same retrain requests, none twice");
    Ok(())
}
