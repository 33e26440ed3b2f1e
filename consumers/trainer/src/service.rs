//! The trainer service: registry follower, registry HTTP API, the consumer of labelled
//! rows and retrain events, and the job runner, together until shutdown
//! (`driftline trainer`, and `driftline up`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use driftline_kafka::KafkaArgs;
use driftline_runtime::metrics::Metrics;
use driftline_runtime::now_ms;
use driftline_runtime::service::{Health, Service};
use driftline_runtime::signing::{SigningArgs, TrustArgs};
use driftline_runtime::{RunOptions, Store};
use driftline_schemas::duration::parse_duration_ms;
use driftline_schemas::events::Event;
use driftline_schemas::spec::{FeatureSpec, parse_time};
use driftline_schemas::topics;
use rdkafka::producer::FutureRecord;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bootstrap;
use crate::http::{self, RegistryApi};
use crate::jobs::{Owned, Ownership, Runner};
use crate::labelled::RowIndex;
use crate::metrics::TrainerMetrics;
use crate::processor::{Schedule, Topics, TrainerProcessor};
use crate::rollout::Gate;
use crate::train::{Start, TrainOptions, defaults};
use crate::{Error, Result};

#[derive(Debug, Clone, Args)]
pub struct TrainerArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Feature spec of a model to train (repeat for several models).
    #[arg(
        long = "spec",
        env = "DRIFTLINE_SPEC",
        value_delimiter = ',',
        required = true
    )]
    pub specs: Vec<PathBuf>,
    /// Where the labelled rows, pending jobs and offsets live (RocksDB).
    #[arg(long, env = "DRIFTLINE_TRAINER_STATE", default_value = "state/trainer")]
    pub state_dir: PathBuf,
    #[arg(
        long,
        env = "DRIFTLINE_TRAINER_GROUP",
        default_value = "driftline-trainer"
    )]
    pub group: String,
    /// Where the registry API (and /metrics) listens.
    #[arg(
        long,
        env = "DRIFTLINE_TRAINER_HTTP_ADDR",
        default_value = "127.0.0.1:8082"
    )]
    pub http_addr: SocketAddr,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub signing: SigningArgs,
    /// Bearer token for promote and rollback over HTTP; without one they are refused.
    #[arg(long, env = "DRIFTLINE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Labelled rows kept per model (the oldest are evicted).
    #[arg(long, env = "DRIFTLINE_TRAINER_MAX_ROWS", default_value_t = 200_000)]
    pub max_rows: usize,
    /// Share of a training window's newest rows held out to judge candidate and incumbent.
    #[arg(long, env = "DRIFTLINE_TRAINER_HOLDOUT", default_value_t = defaults::HOLDOUT_FRACTION)]
    pub holdout_fraction: f64,
    /// Relative improvement on the primary metric (MAE, or log loss) a candidate needs
    /// over the production model to be promoted: 0.01 = 1% better; 0 = strictly better.
    #[arg(long, env = "DRIFTLINE_PROMOTION_MARGIN", default_value_t = defaults::PROMOTION_MARGIN)]
    pub promotion_margin: f64,
    /// Fewest labelled rows to train on (a shorter retrain window is widened backwards).
    #[arg(long, env = "DRIFTLINE_TRAINER_MIN_ROWS", default_value_t = defaults::MIN_ROWS)]
    pub min_rows: usize,
    /// A promoted version answers requests whose event time is at least its training
    /// window's newest plus this lag (e.g. 2d), and the version before it answers earlier
    /// ones, so which version answers a request follows from the log alone: equal in a
    /// replay, after a crash and on any instance, whenever the version arrives before
    /// the predictor reaches that time (after: from arrival, counted by the predictor's
    /// driftline_late_swaps_total) [default: from arrival].
    #[arg(long, env = "DRIFTLINE_SWAP_LAG", value_parser = parse_duration_ms)]
    pub swap_lag: Option<i64>,
    /// Do not train a first version from the spec's data set for models without one.
    #[arg(long, env = "DRIFTLINE_NO_BOOTSTRAP")]
    pub no_bootstrap: bool,
    /// Bootstrap on rows before this time (RFC 3339 or date) [default: the first three
    /// calendar months of the data set].
    #[arg(long, env = "DRIFTLINE_BOOTSTRAP_UNTIL")]
    pub bootstrap_until: Option<String>,
    /// Retrain every N labelled rows even without drift (0 = off).
    #[arg(long, env = "DRIFTLINE_RETRAIN_EVERY_ROWS", default_value_t = 0)]
    pub retrain_every_rows: u64,
    /// Retrain every T hours of event time even without drift (0 = off).
    #[arg(long, env = "DRIFTLINE_RETRAIN_EVERY_HOURS", default_value_t = 0.0)]
    pub retrain_every_hours: f64,
    #[arg(long, env = "DRIFTLINE_TOPIC_LABELLED", default_value = topics::LABELLED)]
    pub labelled_topic: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_RETRAIN", default_value = topics::RETRAIN)]
    pub retrain_topic: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_MODELS", default_value = topics::MODELS)]
    pub models_topic: String,
    /// With `--swap-lag`: where how far each model's versions are decided goes (the
    /// predictor's `--max-swap-wait` reads it).
    #[arg(long, env = "DRIFTLINE_TOPIC_PROGRESS", default_value = topics::PROGRESS)]
    pub progress_topic: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_DLQ", default_value = topics::DLQ)]
    pub dlq_topic: String,
    #[command(flatten)]
    pub rollout: RolloutArgs,
    /// Test hook: announce each job phase on stdout and pause in it this long.
    #[arg(long, hide = true, default_value_t = 0)]
    pub phase_pause_ms: u64,
}

/// How a version that wins on the holdout reaches production.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RolloutMode {
    /// It becomes production at once.
    Direct,
    /// It becomes a canary answering `--canary-share` of the requests, and the live gate
    /// promotes or rejects it once labels join.
    Canary,
    /// It becomes a shadow: it predicts every request beside production, logged and
    /// never returned, and the live gate promotes or rejects it on the same requests.
    Shadow,
}

/// The rollout mode and the live gate (which judges every canary and shadow, however it
/// was made).
#[derive(Debug, Clone, Args)]
pub struct RolloutArgs {
    #[arg(long = "rollout", env = "DRIFTLINE_ROLLOUT", value_enum, default_value_t = RolloutMode::Direct)]
    pub mode: RolloutMode,
    /// Share of the requests (by a hash of the request id) a new canary answers.
    #[arg(long, env = "DRIFTLINE_CANARY_SHARE", default_value_t = 0.2)]
    pub canary_share: f64,
    /// Labelled rows of live traffic the canary and production each need before the live
    /// gate judges the canary (by the mean loss on the primary metric, with
    /// --promotion-margin).
    #[arg(long, env = "DRIFTLINE_LIVE_MIN_ROWS", default_value_t = 500)]
    pub live_min_rows: u64,
    /// After a newer version replaces production, roll back if its first N labelled rows
    /// are worse than the replaced version's live error by --promotion-margin (0 = off)
    /// [default: --live-min-rows with --rollout canary or shadow, else 0].
    #[arg(long, env = "DRIFTLINE_ROLLBACK_WATCH_ROWS")]
    pub rollback_watch_rows: Option<u64>,
}

impl Default for RolloutArgs {
    fn default() -> Self {
        Self {
            mode: RolloutMode::Direct,
            canary_share: 0.2,
            live_min_rows: 500,
            rollback_watch_rows: None,
        }
    }
}

impl RolloutArgs {
    pub fn gate(&self, margin: f64) -> Gate {
        let watch = match self.mode {
            RolloutMode::Canary | RolloutMode::Shadow => self.live_min_rows,
            RolloutMode::Direct => 0,
        };
        Gate {
            min_rows: self.live_min_rows.max(1),
            margin,
            watch_rows: self.rollback_watch_rows.unwrap_or(watch),
        }
    }

    /// How a retrained winner starts.
    pub fn start(&self) -> Start {
        match self.mode {
            RolloutMode::Direct => Start::Production,
            RolloutMode::Canary => Start::Canary(self.canary_share),
            RolloutMode::Shadow => Start::Shadow,
        }
    }
}

impl TrainerArgs {
    /// Cross-field rules, checked at start-up.
    pub fn validate(&self) -> Result<()> {
        self.kafka.validate()?;
        if !(self.holdout_fraction > 0.0 && self.holdout_fraction < 0.9) {
            return Err(Error::Config(format!(
                "--holdout-fraction {} must be in (0, 0.9)",
                self.holdout_fraction
            )));
        }
        if !(self.promotion_margin >= 0.0 && self.promotion_margin.is_finite()) {
            return Err(Error::Config(format!(
                "--promotion-margin {} must be >= 0",
                self.promotion_margin
            )));
        }
        if self.retrain_every_hours < 0.0 || !self.retrain_every_hours.is_finite() {
            return Err(Error::Config("--retrain-every-hours must be >= 0".into()));
        }
        let share = self.rollout.canary_share;
        if !(share > 0.0 && share <= 1.0) {
            return Err(Error::Config(format!(
                "--canary-share {share} must be in (0, 1]"
            )));
        }
        if self.min_rows > self.max_rows {
            return Err(Error::Config(format!(
                "--min-rows ({}) cannot exceed --max-rows ({})",
                self.min_rows, self.max_rows
            )));
        }
        Ok(())
    }

    fn bootstrap_until(&self) -> Result<Option<i64>> {
        self.bootstrap_until
            .as_deref()
            .map(|t| parse_time(t).map_err(|e| Error::Config(format!("--bootstrap-until: {e}"))))
            .transpose()
    }
}

/// Runs until `shutdown` fires; ready (`health`) while it consumes.
pub async fn run(args: TrainerArgs, shutdown: CancellationToken, health: Health) -> Result<()> {
    args.validate()?;
    let until = args.bootstrap_until()?;
    let mut owned = HashMap::new();
    for path in &args.specs {
        let spec = FeatureSpec::load(path).map_err(|e| Error::Config(e.to_string()))?;
        owned.insert(
            spec.model.name.clone(),
            Owned {
                spec: Arc::new(spec),
                spec_path: path.clone(),
            },
        );
    }
    let signer = args.signing.signer()?.map(Arc::new);
    match &signer {
        Some(s) => info!(
            key = s.id(),
            "the versions this trainer publishes are signed"
        ),
        None => warn!(
            "no signing key (--signing-key): versions go out unsigned, and followers that check signatures refuse them"
        ),
    }
    let runtime_metrics = Metrics::new("trainer");
    let metrics = TrainerMetrics::new(&runtime_metrics.registry);
    let mut service = Service::start(
        runtime_metrics,
        &args.kafka,
        &args.models_topic,
        &args.trust,
        |_, _| {},
        shutdown,
        health,
    )
    .await?;
    let store = Arc::new(Store::open(&args.state_dir, false)?);
    let api = RegistryApi {
        kafka: service.kafka.clone(),
        registry: service.registry.clone(),
        producer: service.producer.clone(),
        models_topic: args.models_topic.clone(),
        codec: service.codec.clone(),
        trust: service.trust.clone(),
        signer: signer.clone(),
        admin_token: args.admin_token.clone(),
    };
    let app = http::router(api, service.metrics.registry.clone());
    // A promote or rollback of a version kept thin reads the models topic (up to a minute).
    let limits = driftline_process::http::Limits {
        timeout: Duration::from_secs(120),
        ..Default::default()
    };
    service
        .serve("registry API", args.http_addr, app, limits)
        .await?;

    let result = consume(&args, &service, store, owned, until, metrics, signer).await;
    if let Err(e) = &result {
        warn!(error = %e, "trainer stopping");
    }
    service.stop().await;
    result
}

/// A model's labelled rows and its retrain events must be in the same partition number,
/// owned by one instance: its jobs, its rows and its version numbers are that partition's.
async fn check_copartitioned(args: &TrainerArgs) -> Result<()> {
    let topics = [args.labelled_topic.clone(), args.retrain_topic.clone()];
    let counts = driftline_kafka::topics::partition_counts(&args.kafka, &topics).await?;
    let (labelled, retrain) = (counts.get(&topics[0]), counts.get(&topics[1]));
    if let (Some(l), Some(r)) = (labelled, retrain)
        && l != r
    {
        return Err(Error::Config(format!(
            "{} has {l} partitions and {} has {r}: they must have as many (a model's rows and its retrain events in one partition number; see infra/topics.toml)",
            topics[0], topics[1]
        )));
    }
    Ok(())
}

/// Asks for the first version of every owned model that has none ([`bootstrap::request`]).
async fn request_bootstraps(
    service: &Service,
    args: &TrainerArgs,
    owned: &HashMap<String, Owned>,
    until: Option<i64>,
) -> Result<()> {
    let mut models: Vec<&String> = owned.keys().collect();
    models.sort();
    for model in models {
        let versions = {
            let reg = service.registry.read().unwrap_or_else(|e| e.into_inner());
            reg.latest_version(model)
        };
        if versions > 0 {
            continue;
        }
        let o = &owned[model];
        if o.spec.model.algorithm == crate::ops::IMPORTED {
            warn!(%model, "an imported model without a version: publish one with `driftline models import`");
            continue;
        }
        let Some(path) = bootstrap::dataset_path(&o.spec, &o.spec_path) else {
            warn!(%model, "no version and no dataset.path in the spec: waiting for a retrain event");
            continue;
        };
        let event = bootstrap::request(model, &path, until, now_ms());
        let payload = service.codec.encode(&event)?;
        service
            .producer
            .send(
                FutureRecord::to(&args.retrain_topic)
                    .key(&event.key())
                    .payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| driftline_runtime::Error::Delivery {
                topic: args.retrain_topic.clone(),
                error: e.to_string(),
            })?;
        info!(%model, path = %path.display(), "first version requested from the data set");
    }
    Ok(())
}

/// Runs the job runner and the consumer until shutdown or until either fails.
async fn consume(
    args: &TrainerArgs,
    service: &Service,
    store: Arc<Store>,
    owned: HashMap<String, Owned>,
    until: Option<i64>,
    metrics: TrainerMetrics,
    signer: Option<Arc<driftline_runtime::signing::Signer>>,
) -> Result<()> {
    // Nothing is consumed or trained before the registry is whole: both decide by it.
    if !service.registry_loaded(None).await? {
        return Ok(());
    }
    let shutdown = &service.shutdown;
    check_copartitioned(args).await?;
    if !args.no_bootstrap {
        request_bootstraps(service, args, &owned, until).await?;
    }
    let mut opts = RunOptions::new(
        args.group.clone(),
        vec![args.labelled_topic.clone(), args.retrain_topic.clone()],
    );
    opts.dlq_topic = args.dlq_topic.clone();
    let wake = Arc::new(Notify::new());
    let ownership = Ownership::default();
    let runner = Runner {
        store: store.clone(),
        registry: service.registry.clone(),
        registry_sync: service.registry_sync.clone(),
        models: owned.clone(),
        kafka: args.kafka.clone(),
        group: args.group.clone(),
        changelog: opts.changelog_topic(),
        ownership: ownership.clone(),
        codec: service.codec.clone(),
        models_topic: args.models_topic.clone(),
        signer,
        trust: service.trust.clone(),
        options: TrainOptions {
            holdout_fraction: args.holdout_fraction,
            promotion_margin: args.promotion_margin,
            min_rows: args.min_rows,
            start: args.rollout.start(),
            swap_lag: args.swap_lag,
        },
        metrics: metrics.clone(),
        wake: wake.clone(),
        phase_pause: Duration::from_millis(args.phase_pause_ms),
        waiting_for_rows: Default::default(),
        writers: Default::default(),
        waiting_for_offset: Default::default(),
        progress_topic: args.progress_topic.clone(),
        progress_sent: Default::default(),
    };
    let mut runner_task = tokio::spawn(runner.run(shutdown.clone()));

    let specs: HashMap<String, Arc<FeatureSpec>> = owned
        .iter()
        .map(|(k, o)| (k.clone(), o.spec.clone()))
        .collect();
    let index = RowIndex::load(&store, specs.keys().cloned(), args.max_rows)?;
    for model in specs.keys() {
        metrics
            .labelled_rows
            .with_label_values(&[model])
            .set(index.rows(model) as i64);
    }
    let processor = TrainerProcessor::new(
        specs,
        index,
        Topics {
            labelled: args.labelled_topic.clone(),
            retrain: args.retrain_topic.clone(),
        },
        service.codec.clone(),
        service.registry.clone(),
        Schedule {
            every_rows: args.retrain_every_rows,
            every_hours: args.retrain_every_hours,
        },
        wake,
        metrics,
        ownership,
        args.rollout.gate(args.promotion_margin),
    );
    // Whichever of the consumer and the runner stops first (an error) stops the other.
    let result = tokio::select! {
        r = service.consume(&opts, store, processor) => r.map(|_| ()).map_err(Error::from),
        r = &mut runner_task => match r {
            Ok(r) => r,
            Err(e) => Err(Error::State(format!("job runner: {e}"))),
        },
    };
    shutdown.cancel();
    if !runner_task.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(10), runner_task).await;
    }
    result
}
