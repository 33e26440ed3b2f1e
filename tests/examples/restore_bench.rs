//! How long a stateful service on an empty disk takes to restore its state from its
//! changelog (issue 14): the monitor with a full window, the trainer with a full row store,
//! each beside a plain read of the same changelog.
//!
//! ```sh
//! bash infra/broker.sh start
//! cargo run -p driftline-tests --example restore_bench
//! ```
//! Env: BENCH_WINDOW (100000: the monitor's `--window`, and the predictions sent),
//! BENCH_ROWS (200000: the trainer's `--max-rows`, and the labelled rows sent),
//! BENCH_ROUNDS (3), DRIFTLINE_BOOTSTRAP_SERVERS.
//!
//! Per service, on topics and a group of its own: the inputs are produced, the real
//! service consumes them all (its group commits at their end), and is stopped. Then, each
//! round: its state directory is deleted, the changelog is read to its end by a plain
//! read_committed consumer that does nothing with the records (the baseline), and the
//! service is started again on the same group. The times come from the runtime's own log
//! events (caught by this binary's tracing subscriber) and the restored records from its
//! `driftline_restored_records_total` on /metrics.

use std::collections::HashSet;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use driftline_monitor::cli::PolicyArgs;
use driftline_monitor::service::MonitorArgs;
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{
    Actual, FeatureKind, FeatureProfile, FeatureValue, Labelled, ModelPublished, ModelStatus,
    Prediction, PredictionLogged, PredictionSource, TrainingWindow,
};
use driftline_tests::{create_topics, free_port, kafka, producer, unique};
use driftline_trainer::service::TrainerArgs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing::{Level, Metadata, span};

const MODEL: &str = "toy";
/// The runtime's log messages this bench times (consumers/lib/runtime/src/consumer.rs and
/// consumer/restore.rs).
const ASSIGNED: &str = "assigned; restoring state before reading";
const RESTORING: &str = "restoring state from the changelog";
const RESTORED: &str = "restored";
const READING: &str = "state restored; reading from the committed offsets";
const PATIENCE: Duration = Duration::from_secs(1200);

#[tokio::main]
async fn main() -> Result<()> {
    let window = env_usize("BENCH_WINDOW", 100_000);
    let rows = env_usize("BENCH_ROWS", 200_000);
    let rounds = env_usize("BENCH_ROUNDS", 3);
    let (tx, mut log) = unbounded_channel();
    tracing::subscriber::set_global_default(Watch(tx))?;
    let dir = tempfile::tempdir()?;

    let mut results = Vec::new();
    for subject in [
        monitor(window, &dir.path().join("monitor")).await?,
        trainer(rows, dir.path()).await?,
    ] {
        fill(&subject).await?;
        for round in 1..=rounds {
            let r = restore_round(&subject, &mut log).await?;
            eprintln!("{} round {round}: {r:?}", subject.name);
            results.push((subject.name, round, r));
        }
    }
    print_table(&results);
    Ok(())
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A stateful service under test: its group, its input topics, its state directory, and
/// how to start it (HTTP on the given address) until the token fires.
struct Subject {
    name: &'static str,
    group: String,
    inputs: Vec<String>,
    state: PathBuf,
    start: Box<dyn Fn(SocketAddr, CancellationToken) -> JoinHandle<Result<()>>>,
}

/// The monitor with a window of `window` events, and as many predictions of one model on
/// its predictions topic.
async fn monitor(window: usize, state: &Path) -> Result<Subject> {
    let [predictions, labelled, models, drift, retrain, dlq] = names([
        "predictions",
        "labelled",
        "models",
        "drift",
        "retrain",
        "dlq",
    ]);
    create_topics(&[
        (&predictions, 1),
        (&labelled, 1),
        (&models, 1),
        (&drift, 1),
        (&retrain, 1),
        (&dlq, 1),
    ])
    .await?;
    let codec = Codec::single_object();
    let model = model_record();
    send_all(&models, 1, |_| codec.encode(&model)).await?;
    eprintln!("monitor: producing {window} predictions");
    send_all(&predictions, window, |i| codec.encode(&prediction(i))).await?;

    let args = MonitorArgs {
        kafka: kafka(),
        policy: PolicyArgs {
            window,
            // Reports are part of the state but not what is measured: a few, not 100.
            evaluate_every: 10_000,
            ..PolicyArgs::default()
        },
        http_addr: "127.0.0.1:0".parse()?,
        state_dir: state.to_path_buf(),
        group: unique("restore-monitor"),
        predictions_topic: predictions.clone(),
        labelled_topic: labelled.clone(),
        drift_topic: drift,
        retrain_topic: retrain,
        models_topic: models,
        trust: Default::default(),
        dlq_topic: dlq,
        max_batch: 2000,
        exit_on_eof: false,
        max_task_idle: None,
    };
    Ok(Subject {
        name: "monitor",
        group: args.group.clone(),
        inputs: vec![predictions, labelled],
        state: state.to_path_buf(),
        start: Box::new(move |http_addr, shutdown| {
            let args = MonitorArgs {
                http_addr,
                ..args.clone()
            };
            tokio::spawn(async move {
                Ok(driftline_monitor::service::run(args, shutdown, Default::default()).await?)
            })
        }),
    })
}

/// The trainer keeping up to `rows` rows of one model, and as many labelled rows on its
/// labelled topic.
async fn trainer(rows: usize, dir: &Path) -> Result<Subject> {
    let [labelled, retrain, models, dlq] = names(["labelled", "retrain", "models", "dlq"]);
    create_topics(&[(&labelled, 1), (&retrain, 1), (&models, 1), (&dlq, 1)]).await?;
    let spec = dir.join("toy.toml");
    std::fs::write(&spec, include_str!("../fixtures/toy.toml"))?;
    let codec = Codec::single_object();
    eprintln!("trainer: producing {rows} labelled rows");
    send_all(&labelled, rows, |i| {
        let prediction = prediction(i);
        let actual = Actual {
            request_id: prediction.request_id.clone(),
            model: MODEL.into(),
            event_time: prediction.event_time,
            value: prediction.prediction.value.map(|v| v + 0.5),
            class: None,
            observed_at: prediction.event_time + 60_000,
        };
        codec.encode(&Labelled {
            prediction,
            actual,
            prediction_read_at: Default::default(),
            actual_read_at: Default::default(),
        })
    })
    .await?;

    let state = dir.join("trainer");
    let args = TrainerArgs {
        kafka: kafka(),
        specs: vec![spec],
        state_dir: state.clone(),
        group: unique("restore-trainer"),
        http_addr: "127.0.0.1:0".parse()?,
        trust: Default::default(),
        signing: Default::default(),
        admin_token: None,
        max_rows: rows,
        holdout_fraction: 0.2,
        promotion_margin: 0.01,
        min_rows: 50,
        // No first version from a data set and no schedule: the store is only rows.
        swap_lag: None,
        no_bootstrap: true,
        bootstrap_until: None,
        retrain_every_rows: 0,
        retrain_every_hours: 0.0,
        labelled_topic: labelled.clone(),
        retrain_topic: retrain.clone(),
        models_topic: models,
        progress_topic: driftline_schemas::topics::PROGRESS.into(),
        dlq_topic: dlq,
        rollout: Default::default(),
        phase_pause_ms: 0,
    };
    Ok(Subject {
        name: "trainer",
        group: args.group.clone(),
        inputs: vec![labelled, retrain],
        state,
        start: Box::new(move |http_addr, shutdown| {
            let args = TrainerArgs {
                http_addr,
                ..args.clone()
            };
            tokio::spawn(async move {
                Ok(driftline_trainer::service::run(args, shutdown, Default::default()).await?)
            })
        }),
    })
}

/// Topic names of this run's own: `restore-<name>-<unique>`.
fn names<const N: usize>(names: [&str; N]) -> [String; N] {
    names.map(|t| unique(&format!("restore-{t}")))
}

/// Prediction `i` of the toy model: x in [0, 10), c in {a, b, c}, one second apart.
fn prediction(i: usize) -> PredictionLogged {
    let x = ((i * 7919) % 1000) as f64 / 100.0;
    PredictionLogged {
        request_id: format!("r{i}"),
        model: MODEL.into(),
        model_version: 1,
        event_time: 1_000 * i as i64,
        features: [
            ("x".to_string(), FeatureValue::Number(x)),
            (
                "c".to_string(),
                FeatureValue::Category(["a", "b", "c"][i % 3].into()),
            ),
        ]
        .into(),
        prediction: Prediction {
            value: Some(2.0 * x),
            ..Default::default()
        },
        served_at: 0,
        latency_us: 1,
        source: PredictionSource::Kafka,
        shadow: None,
    }
}

/// Version 1 of the toy model, its reference drawn like the predictions.
fn model_record() -> ModelPublished {
    let numeric = |name: &str, f: fn(f64) -> f64| {
        let mut sample: Vec<f64> = (0..1000).map(|i| f(i as f64 / 100.0)).collect();
        sample.sort_by(f64::total_cmp);
        FeatureProfile {
            name: name.into(),
            kind: FeatureKind::Numeric,
            count: 1000,
            missing: 0,
            sample,
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
        trigger: "bench".into(),
        training_window: TrainingWindow::default(),
        reference_profile: vec![
            numeric("x", |x| x),
            FeatureProfile {
                name: "c".into(),
                kind: FeatureKind::Categorical,
                count: 999,
                missing: 0,
                sample: vec![],
                categories: [("a", 333), ("b", 333), ("c", 333)]
                    .map(|(k, n)| (k.to_string(), n))
                    .into(),
                sub_windows: Vec::new(),
            },
            numeric("prediction", |x| 2.0 * x),
        ],
        model_format: "bench".into(),
        model_bytes: vec![],
        status: ModelStatus::Production,
        published_at: 1,
        traffic_share: 0.0,
        error_sub_windows: Vec::new(),
        feature_importance: Default::default(),
        multivariate: None,
        performance_estimator: None,
        error_estimator: None,
        effective_from: None,
    }
}

/// Sends `n` messages keyed by the model, payload `i` from `payload(i)`, and waits for
/// every delivery.
async fn send_all<E: Into<anyhow::Error>>(
    topic: &str,
    n: usize,
    payload: impl Fn(usize) -> Result<Vec<u8>, E>,
) -> Result<()> {
    let producer = producer()?;
    let mut deliveries = Vec::with_capacity(n);
    for i in 0..n {
        let bytes = payload(i).map_err(Into::into)?;
        loop {
            match producer.send_result(FutureRecord::to(topic).key(MODEL).payload(&bytes)) {
                Ok(d) => {
                    deliveries.push(d);
                    break;
                }
                // The local queue is full: let librdkafka send some.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
    for d in deliveries {
        d.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Runs the service until its group has committed the end of every input, then stops it.
async fn fill(s: &Subject) -> Result<()> {
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    let mut task = (s.start)(
        SocketAddr::from(([127, 0, 0, 1], free_port()?)),
        shutdown.clone(),
    );
    let (group, inputs) = (s.group.clone(), s.inputs.clone());
    let watcher: BaseConsumer = kafka().consumer_config(&group).create()?;
    loop {
        if caught_up(&watcher, &inputs)? {
            break;
        }
        if started.elapsed() > PATIENCE {
            bail!("{} did not consume its input within {PATIENCE:?}", s.name);
        }
        tokio::select! {
            r = &mut task => bail!("{} stopped while consuming its input: {r:?}", s.name),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    let consumed = started.elapsed();
    shutdown.cancel();
    task.await??;
    let changelog = format!("{}-changelog", s.group);
    let (_, high) = watcher.fetch_watermarks(&changelog, 0, Duration::from_secs(10))?;
    eprintln!(
        "{}: input consumed in {:.1} s; {changelog} partition 0 ends at offset {high}",
        s.name,
        consumed.as_secs_f64()
    );
    Ok(())
}

/// Whether `consumer`'s group has committed offsets at the end of every partition of
/// `topics` (an empty partition needs none).
fn caught_up(consumer: &BaseConsumer, topics: &[String]) -> Result<bool> {
    let timeout = Duration::from_secs(10);
    for topic in topics {
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions(consumer, topic)? {
            tpl.add_partition(topic, p);
        }
        for e in consumer.committed_offsets(tpl, timeout)?.elements() {
            let (_, high) = consumer.fetch_watermarks(topic, e.partition(), timeout)?;
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            if at < high {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<i32> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let n = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    ensure!(n > 0, "topic {topic} has no partitions");
    Ok(n as i32)
}

/// One restore of a service on an empty disk, beside a plain read of its changelog.
#[derive(Debug)]
struct Round {
    /// Records the service restored (its counter) and their key + value bytes (the plain read).
    records: u64,
    bytes: u64,
    /// The plain read's records, its time from assignment to the end of every partition,
    /// and to its last record (the rest is the wait for the end of partition).
    plain_records: u64,
    plain: Duration,
    plain_last: Duration,
    /// The restore's own time as the runtime logs it (assignment of its reader to the end).
    restore: Duration,
    /// From the service's start to its partitions assigned, the restore's reader assigned,
    /// restored, and to reading input (the processor's memory rebuilt from the store).
    to_assigned: Duration,
    to_restoring: Duration,
    to_restored: Duration,
    to_reading: Duration,
}

async fn restore_round(s: &Subject, log: &mut UnboundedReceiver<Logged>) -> Result<Round> {
    if s.state.exists() {
        std::fs::remove_dir_all(&s.state)?;
    }
    let changelog = format!("{}-changelog", s.group);
    let (plain_records, bytes, plain, plain_last) =
        tokio::task::spawn_blocking(move || read_to_end(&changelog)).await??;

    while log.try_recv().is_ok() {}
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let mut task = (s.start)(addr, shutdown.clone());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (mut assigned, mut restoring, mut restored) = (None, None, None);
    let reading = loop {
        let e = tokio::select! {
            e = log.recv() => e.context("the log channel closed")?,
            r = &mut task => bail!("{} stopped before reading its input: {r:?}", s.name),
            _ = tokio::time::sleep_until(deadline) => bail!("{} not restored within {PATIENCE:?}", s.name),
        };
        match e.message.as_str() {
            ASSIGNED => assigned = Some(e.at),
            RESTORING => restoring = Some(e.at),
            RESTORED => restored = Some(e),
            READING => break e.at,
            _ => {}
        }
    };
    let records = restored_metric(addr).await?;
    shutdown.cancel();
    task.await??;

    let restored = restored.context("the service read its input without restoring anything")?;
    let assigned = assigned.context("no assignment logged")?;
    let restoring = restoring.context("no restore start logged")?;
    ensure!(
        restored.records == Some(records),
        "the restore logged {:?} records, its counter says {records}",
        restored.records
    );
    Ok(Round {
        records,
        bytes,
        plain_records,
        plain,
        plain_last,
        restore: Duration::from_secs_f64(restored.seconds.unwrap_or_default()),
        to_assigned: assigned - started,
        to_restoring: restoring - started,
        to_restored: restored.at - started,
        to_reading: reading - started,
    })
}

/// Reads every partition of `topic` to its end as the restore does (read_committed, from
/// the beginning) and drops the records: their count, key + value bytes, and the times
/// from assignment to the last end of partition and to the last record.
fn read_to_end(topic: &str) -> Result<(u64, u64, Duration, Duration)> {
    let mut config = kafka().consumer_config(&unique("plain-read"));
    config.set("enable.partition.eof", "true");
    let consumer: BaseConsumer = config.create()?;
    let mut tpl = TopicPartitionList::new();
    let mut behind = HashSet::new();
    for p in 0..partitions(&consumer, topic)? {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        behind.insert(p);
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let (mut records, mut bytes, mut last) = (0u64, 0u64, Duration::ZERO);
    while !behind.is_empty() {
        if started.elapsed() > PATIENCE {
            bail!("{topic} not read to its end within {PATIENCE:?}");
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                records += 1;
                bytes += (m.key_len() + m.payload_len()) as u64;
                last = started.elapsed();
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                behind.remove(&p);
            }
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            None => {}
        }
    }
    Ok((records, bytes, started.elapsed(), last))
}

/// `driftline_restored_records_total` summed over its labels, from the service's /metrics.
async fn restored_metric(addr: SocketAddr) -> Result<u64> {
    let (status, body) = driftline_tests::http(addr, "GET", "/metrics", None).await?;
    ensure!(status == 200, "/metrics answered {status}");
    let total: f64 = body
        .lines()
        .filter(|l| l.starts_with("driftline_restored_records_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    Ok(total as u64)
}

fn print_table(results: &[(&str, usize, Round)]) {
    let secs = |d: Duration| format!("{:.2}", d.as_secs_f64());
    let rate = |n: u64, d: Duration| thousands((n as f64 / d.as_secs_f64()) as u64);
    println!(
        "| state | round | changelog records | MiB | plain read (s) | of which to its last record (s) | plain read (records/s) | restore (s) | restore (records/s) | restore / plain read | start → assigned (s) | start → restore begins (s) | start → restored (s) | start → reading input (s) |"
    );
    println!(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (name, round, r) in results {
        println!(
            "| {name} | {round} | {} | {:.1} | {} | {} | {} | {} | {} | {:.1}× | {} | {} | {} | {} |",
            thousands(r.records),
            r.bytes as f64 / (1 << 20) as f64,
            secs(r.plain),
            secs(r.plain_last),
            rate(r.plain_records, r.plain),
            secs(r.restore),
            rate(r.records, r.restore),
            r.restore.as_secs_f64() / r.plain.as_secs_f64(),
            secs(r.to_assigned),
            secs(r.to_restoring),
            secs(r.to_restored),
            secs(r.to_reading),
        );
    }
    for (name, round, r) in results {
        if r.plain_records != r.records {
            println!(
                "note: {name} round {round}: the plain read saw {} records, the restore {}",
                r.plain_records, r.records
            );
        }
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A runtime log event the bench times, when it was logged.
#[derive(Debug)]
struct Logged {
    at: Instant,
    message: String,
    records: Option<u64>,
    seconds: Option<f64>,
}

/// The bench's tracing subscriber: passes the consumer runtime's events on with the time
/// they were logged, prints warnings and errors, and drops the rest (spans included).
struct Watch(UnboundedSender<Logged>);

const RUNTIME: &str = "driftline_runtime::consumer";

impl tracing::Subscriber for Watch {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.is_event() && (*m.level() <= Level::WARN || m.target().starts_with(RUNTIME))
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let at = Instant::now();
        let mut f = Fields::default();
        event.record(&mut f);
        let m = event.metadata();
        if *m.level() <= Level::WARN {
            eprintln!("{} {}: {}{}", m.level(), m.target(), f.message, f.rest);
        }
        if m.target().starts_with(RUNTIME) {
            let _ = self.0.send(Logged {
                at,
                message: f.message,
                records: f.records,
                seconds: f.seconds,
            });
        }
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

#[derive(Default)]
struct Fields {
    message: String,
    records: Option<u64>,
    seconds: Option<f64>,
    rest: String,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "records" => self.records = Some(value),
            _ => self.record_debug(field, &value),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        match field.name() {
            "seconds" => self.seconds = Some(value),
            _ => self.record_debug(field, &value),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            name => self.rest.push_str(&format!(" {name}={value:?}")),
        }
    }
}
