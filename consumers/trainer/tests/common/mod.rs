//! Shared by the trainer's broker tests: a toy data set and spec, topics, producers and
//! readers. The toy world: y = 3x + 1 in the bootstrap months, then it changes.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use driftline_joiner::service::JoinerArgs;
use driftline_runtime::registry::Registry;
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{
    Actual, Event, FeatureValue, ModelPublished, ModelStatus, Prediction, PredictionLogged,
    PredictionSource, RetrainRequested, RetrainTrigger, TrainingWindow,
};
use driftline_schemas::spec::FeatureSpec;
use driftline_tests::{create_topics, kafka, produce, unique};
use driftline_trainer::service::TrainerArgs;
use rdkafka::producer::FutureProducer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// 2013-01-01T00:00:00Z.
pub const T0: i64 = 1_356_998_400_000;
pub const HOUR: i64 = 3_600_000;
/// Bootstrap cut-off: 2013-04-01.
pub const CUTOFF: i64 = 1_364_774_400_000;
/// The toy feature spec shared by the workspace's tests.
const TOY_SPEC: &str = include_str!("../../../../tests/fixtures/toy.toml");

pub struct World {
    pub dir: tempfile::TempDir,
    /// The first model and its spec (the only one of [`World::new`]).
    pub spec_path: PathBuf,
    pub model: String,
    /// Every model and its spec.
    pub specs: Vec<(String, PathBuf)>,
    pub requests: String,
    pub predictions: String,
    pub actuals: String,
    pub labelled: String,
    pub retrain: String,
    pub models: String,
    pub dlq: String,
}

pub fn x_of(i: i64) -> f64 {
    (i % 23) as f64
}

impl World {
    pub async fn new() -> Result<Self> {
        Self::with_models(1, 1).await
    }

    /// `models` toy models (each with its spec, all on one data set) on topics of
    /// `partitions` partitions; with several partitions the models are named so that they
    /// spread over all of them (one per partition as far as they go), as the producers'
    /// partitioner places their keys.
    pub async fn with_models(models: usize, partitions: i32) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        // One row every 6 hours through the first half of the year; the trainer must read
        // only those before April.
        let mut csv = String::from("t,x,y\n");
        let mut i = 0i64;
        while T0 + i * 6 * HOUR < T0 + 180 * 24 * HOUR {
            let x = x_of(i);
            csv.push_str(&format!("{},{x},{}\n", T0 + i * 6 * HOUR, 3.0 * x + 1.0));
            i += 1;
        }
        std::fs::write(dir.path().join("toy.csv"), csv)?;
        let names = spread_names(models, partitions).await?;
        let mut specs = Vec::new();
        for model in names {
            // The shared toy spec, for this test's model and data set, without its last
            // feature (the categorical `colour`): only `x` is in the data.
            let (spec, _colour) = TOY_SPEC.rsplit_once("[[features]]").unwrap();
            let spec = spec
                .replacen("[dataset]\n", "[dataset]\npath = \"toy.csv\"\n", 1)
                .replacen(
                    "[model]\nname = \"toy\"",
                    &format!("[model]\nname = \"{model}\""),
                    1,
                );
            let parsed = FeatureSpec::from_toml(&spec)?;
            ensure!(
                parsed.model.name == model
                    && parsed.dataset.path.as_deref() == Some("toy.csv")
                    && parsed.features.len() == 1,
                "the toy spec did not take this test's changes: {parsed:?}"
            );
            let spec_path = dir.path().join(format!("{model}.toml"));
            std::fs::write(&spec_path, spec)?;
            specs.push((model, spec_path));
        }
        let w = Self {
            dir,
            spec_path: specs[0].1.clone(),
            model: specs[0].0.clone(),
            specs,
            requests: unique("requests"),
            predictions: unique("predictions"),
            actuals: unique("actuals"),
            labelled: unique("labelled"),
            retrain: unique("retrain"),
            models: unique("models"),
            dlq: unique("dlq"),
        };
        create_topics(&[
            (&w.requests, partitions),
            (&w.predictions, partitions),
            (&w.actuals, partitions),
            (&w.labelled, partitions),
            (&w.retrain, partitions),
            (&w.models, 1),
            (&w.dlq, 1),
        ])
        .await?;
        Ok(w)
    }

    pub fn trainer_args(&self, state: &Path) -> TrainerArgs {
        TrainerArgs {
            kafka: kafka(),
            specs: vec![self.spec_path.clone()],
            state_dir: state.to_path_buf(),
            group: unique("trainer"),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            trust: Default::default(),
            signing: Default::default(),
            admin_token: Some("token".into()),
            max_rows: 10_000,
            holdout_fraction: 0.2,
            promotion_margin: 0.01,
            min_rows: 50,
            swap_lag: None,
            no_bootstrap: false,
            bootstrap_until: Some("2013-04-01".into()),
            retrain_every_rows: 0,
            retrain_every_hours: 0.0,
            labelled_topic: self.labelled.clone(),
            retrain_topic: self.retrain.clone(),
            models_topic: self.models.clone(),
            progress_topic: format!("{}-progress", self.models),
            dlq_topic: self.dlq.clone(),
            rollout: Default::default(),
            phase_pause_ms: 0,
        }
    }

    /// The joiner that turns this world's predictions and actuals into the labelled rows
    /// the trainer reads, running until `shutdown`.
    pub fn spawn_joiner(
        &self,
        state: &Path,
        shutdown: &CancellationToken,
    ) -> JoinHandle<driftline_joiner::Result<()>> {
        let args = JoinerArgs {
            kafka: kafka(),
            max_wait: 7 * 24 * HOUR,
            max_waiting: driftline_joiner::join::defaults::MAX_WAITING,
            http_addr: "127.0.0.1:0".parse().unwrap(),
            state_dir: state.join("joiner"),
            group: unique("joiner"),
            predictions_topic: self.predictions.clone(),
            actuals_topic: self.actuals.clone(),
            labelled_topic: self.labelled.clone(),
            dlq_topic: self.dlq.clone(),
            max_batch: 2000,
            exit_on_eof: false,
        };
        tokio::spawn(driftline_joiner::service::run(
            args,
            shutdown.clone(),
            Default::default(),
        ))
    }

    /// A predictor in-process for this world's models, answering HTTP on `http_addr`,
    /// running until `shutdown`.
    pub fn spawn_predictor(
        &self,
        state: &Path,
        http_addr: std::net::SocketAddr,
        shutdown: &CancellationToken,
    ) -> JoinHandle<driftline_predictor::Result<()>> {
        let args = driftline_predictor::service::PredictorArgs {
            kafka: kafka(),
            specs: self.specs.iter().map(|(_, spec)| spec.clone()).collect(),
            http_addr,
            state_dir: state.join("predictor"),
            group: unique("predictor"),
            requests_topic: self.requests.clone(),
            predictions_topic: self.predictions.clone(),
            models_topic: self.models.clone(),
            max_swap_wait: None,
            progress_topic: driftline_schemas::topics::PROGRESS.into(),
            trust: Default::default(),
            dlq_topic: self.dlq.clone(),
            body_limit: 1 << 20,
            concurrency: 16,
            timeout_ms: 5_000,
            max_rows: 10_000,
        };
        tokio::spawn(driftline_predictor::service::run(
            args,
            shutdown.clone(),
            Default::default(),
        ))
    }

    /// A trainer in-process with `args` (usually `trainer_args`), running until `shutdown`.
    pub fn spawn_trainer(
        &self,
        args: TrainerArgs,
        shutdown: &CancellationToken,
    ) -> JoinHandle<driftline_trainer::Result<()>> {
        tokio::spawn(driftline_trainer::service::run(
            args,
            shutdown.clone(),
            Default::default(),
        ))
    }

    pub async fn registry(&self) -> Result<Registry> {
        Ok(
            driftline_trainer::cli::load_registry(&kafka(), &self.models, &Default::default())
                .await?,
        )
    }

    /// Waits until `check` holds on the registry.
    pub async fn wait_registry(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Registry) -> bool,
    ) -> Result<Registry> {
        let deadline = Instant::now() + timeout;
        loop {
            let reg = self.registry().await?;
            if check(&reg) {
                return Ok(reg);
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for: {what}; registry: {:?}",
                    summary(&reg, &self.model)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Labelled traffic straight onto predictions and actuals (as a predictor would log
    /// it), rows `from..to` six hours apart after the cut-off, target `f(x)`.
    pub async fn send_labelled(
        &self,
        p: &FutureProducer,
        from: i64,
        to: i64,
        f: impl Fn(f64) -> f64,
    ) -> Result<()> {
        let codec = Codec::single_object();
        for i in from..to {
            let (logged, actual) = row(&self.model, i, &f);
            produce(p, &self.predictions, &logged.key(), &codec.encode(&logged)?).await?;
            produce(p, &self.actuals, &actual.key(), &codec.encode(&actual)?).await?;
        }
        Ok(())
    }

    /// Waits until the joiner has published `n` labelled rows in all, so a retrain request
    /// sent next finds them (the joiner is a consumer of its own, a little behind). Rows
    /// are counted, not offsets: the joiner's transaction markers take offsets too.
    pub async fn wait_labelled(&self, n: i64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut rows = 0i64;
            driftline_tests::read_committed(&kafka(), &self.labelled, |_| rows += 1)?;
            if rows >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{rows} of {n} labelled rows after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn send_retrain(
        &self,
        p: &FutureProducer,
        id: &str,
        from: i64,
        to: i64,
    ) -> Result<()> {
        self.send_retrain_for(p, &self.model, id, from, to).await
    }

    /// A drift retrain of `model` (report `report-<id>`) over rows `from..to`.
    pub async fn send_retrain_for(
        &self,
        p: &FutureProducer,
        model: &str,
        id: &str,
        from: i64,
        to: i64,
    ) -> Result<()> {
        self.send_request(p, &retrain_of(model, id, from, to)).await
    }

    pub async fn send_request(&self, p: &FutureProducer, r: &RetrainRequested) -> Result<()> {
        produce(
            p,
            &self.retrain,
            &r.key(),
            &Codec::single_object().encode(r)?,
        )
        .await
    }

    /// Every record on the models topic (not just the latest per key), as a
    /// read_committed reader sees them.
    pub fn model_records(&self) -> Result<Vec<ModelPublished>> {
        let codec = Codec::single_object();
        let mut out = Vec::new();
        let mut bad = None;
        driftline_tests::read_committed(&kafka(), &self.models, |m| {
            use rdkafka::Message;
            match codec.decode(m.payload().unwrap_or_default()) {
                Ok(r) => out.push(r),
                Err(e) => bad = Some(e),
            }
        })?;
        if let Some(e) = bad {
            bail!("undecodable model record: {e}");
        }
        Ok(out)
    }
}

/// A drift retrain request of `model` (report `report-<id>`) over rows `from..to`, naming
/// no offsets.
pub fn retrain_of(model: &str, id: &str, from: i64, to: i64) -> RetrainRequested {
    RetrainRequested {
        retrain_id: id.to_string(),
        model: model.to_string(),
        model_version: 1,
        trigger: RetrainTrigger::Drift,
        reason: "test".into(),
        report_id: Some(format!("report-{id}")),
        drifted_features: vec!["x".into()],
        window_start: CUTOFF + from * 6 * HOUR,
        window_end: CUTOFF + (to - 1) * 6 * HOUR,
        requested_at: driftline_runtime::now_ms(),
        end_offsets: Default::default(),
    }
}

/// The lines a child process prints on its (piped) stdout, as they come (a trainer's
/// `--phase-pause-ms` phase lines).
pub fn stdout_lines(child: &mut std::process::Child) -> Result<std::sync::mpsc::Receiver<String>> {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().context("stdout is not piped")?;
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(lines)
}

/// Row `i` of `model`'s labelled traffic: six hours apart after the cut-off, the
/// prediction as a predictor logs it and its actual, target `f(x)`.
pub fn row(model: &str, i: i64, f: impl Fn(f64) -> f64) -> (PredictionLogged, Actual) {
    let (t, x) = (CUTOFF + i * 6 * HOUR, x_of(i));
    let id = format!("{model}-{i}");
    let logged = PredictionLogged {
        request_id: id.clone(),
        model: model.to_string(),
        model_version: 1,
        event_time: t,
        features: [("x".to_string(), FeatureValue::Number(x))].into(),
        prediction: Prediction {
            value: Some(0.0),
            ..Default::default()
        },
        served_at: t,
        latency_us: 1,
        source: PredictionSource::Kafka,
        shadow: None,
    };
    let actual = Actual {
        request_id: id,
        model: model.to_string(),
        event_time: t,
        value: Some(f(x)),
        class: None,
        observed_at: t + HOUR,
    };
    (logged, actual)
}

/// `n` fresh toy model names that the producers' partitioner puts on distinct partitions
/// of a `partitions`-partition topic, as far as they go (probed on a topic of its own).
async fn spread_names(n: usize, partitions: i32) -> Result<Vec<String>> {
    if partitions <= 1 {
        return Ok((0..n).map(|_| unique("toy")).collect());
    }
    let probe = unique("probe");
    create_topics(&[(&probe, partitions)]).await?;
    let p = driftline_tests::producer()?;
    let mut names: Vec<(i32, String)> = Vec::new();
    for _ in 0..200 {
        if names.len() == n {
            break;
        }
        let name = unique("toy");
        let delivery = p
            .send(
                rdkafka::producer::FutureRecord::to(&probe)
                    .key(&name)
                    .payload("probe"),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("probe: {e}"))?;
        let taken = names
            .iter()
            .filter(|(q, _)| *q == delivery.partition)
            .count();
        // Fill every partition once before any gets a second model.
        if taken * partitions as usize <= names.len() {
            names.push((delivery.partition, name));
        }
    }
    ensure!(
        names.len() == n,
        "could not spread {n} names over {partitions} partitions"
    );
    Ok(names.into_iter().map(|(_, name)| name).collect())
}

pub fn summary(reg: &Registry, model: &str) -> Vec<(i64, String, String)> {
    reg.versions(model)
        .map(|m| (m.version, m.status.to_string(), m.trigger.clone()))
        .collect()
}

/// A registry record of `model` v`version` (metrics that improve with the version).
pub fn record(model: &str, version: i64, status: ModelStatus, published_at: i64) -> ModelPublished {
    ModelPublished {
        model: model.into(),
        version,
        algorithm: "linear".into(),
        hyper_parameters: Default::default(),
        metrics: [("mae".to_string(), 1.0 / version as f64)].into(),
        incumbent_metrics: Default::default(),
        parent_version: (version > 1).then_some(version - 1),
        trigger: format!("manual:{version}"),
        training_window: TrainingWindow::default(),
        reference_profile: vec![],
        model_format: "x".into(),
        model_bytes: vec![1, 2, 3],
        status,
        published_at,
        traffic_share: 0.0,
        error_sub_windows: Vec::new(),
        feature_importance: Default::default(),
        multivariate: None,
        performance_estimator: None,
        error_estimator: None,
        effective_from: None,
    }
}
