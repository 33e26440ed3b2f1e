//! The predictor service: registry follower, HTTP API and the requests consumer, run
//! together until shutdown (`driftline predictor`, and `driftline up`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::http::{self, AppState, Limits, PredictionLog};
use crate::metrics::PredictorMetrics;
use crate::processor::PredictProcessor;
use crate::swap_wait::SwapWait;
use crate::{Error, ModelSlots, Result};
use clap::Args;
use driftline_kafka::KafkaArgs;
use driftline_runtime::metrics::Metrics;
use driftline_runtime::progress::{self, SharedProgress};
use driftline_runtime::registry::{Registry, ServingChange};
use driftline_runtime::service::{Health, Service};
use driftline_runtime::{EventTime, RunOptions, Store};
use driftline_schemas::duration::parse_duration;
use driftline_schemas::spec::FeatureSpec;
use driftline_schemas::topics;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Batches predicted ahead while earlier ones wait for the broker's acknowledgements, so
/// predicting (about 30 ms a batch of 2,000) overlaps the wait. Bounded: on a crash the
/// uncommitted batches' predictions are logged again (4 × 2,000 at most).
pub const PIPELINE: usize = 4;

#[derive(Debug, Clone, Args)]
pub struct PredictorArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Feature spec of a model to serve (repeat for several models).
    #[arg(
        long = "spec",
        env = "DRIFTLINE_SPEC",
        value_delimiter = ',',
        required = true
    )]
    pub specs: Vec<PathBuf>,
    /// Where the HTTP API listens.
    #[arg(long, env = "DRIFTLINE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Where the consumer keeps its offsets (RocksDB).
    #[arg(
        long,
        env = "DRIFTLINE_PREDICTOR_STATE",
        default_value = "state/predictor"
    )]
    pub state_dir: PathBuf,
    #[arg(
        long,
        env = "DRIFTLINE_PREDICTOR_GROUP",
        default_value = "driftline-predictor"
    )]
    pub group: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_REQUESTS", default_value = topics::REQUESTS)]
    pub requests_topic: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_PREDICTIONS", default_value = topics::PREDICTIONS)]
    pub predictions_topic: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_MODELS", default_value = topics::MODELS)]
    pub models_topic: String,
    /// A request from Kafka waits, up to this long, until the trainer (with
    /// `--swap-lag`) has decided every version in effect at its event time, so the
    /// version that answers it follows from the log even when a version is published
    /// late; a wait given up is counted in driftline_swap_waits_given_up_total, e.g.
    /// `60s` [default: no wait: a late version answers from arrival].
    #[arg(long, env = "DRIFTLINE_MAX_SWAP_WAIT", value_parser = parse_duration)]
    pub max_swap_wait: Option<Duration>,
    /// Where the trainer writes how far it has decided each model's versions.
    #[arg(long, env = "DRIFTLINE_TOPIC_PROGRESS", default_value = topics::PROGRESS)]
    pub progress_topic: String,
    #[command(flatten)]
    pub trust: driftline_runtime::signing::TrustArgs,
    #[arg(long, env = "DRIFTLINE_TOPIC_DLQ", default_value = topics::DLQ)]
    pub dlq_topic: String,
    /// HTTP: largest request body, bytes.
    #[arg(long, env = "DRIFTLINE_HTTP_BODY_LIMIT", default_value_t = 2 * 1024 * 1024)]
    pub body_limit: usize,
    /// HTTP: requests handled at once (more wait).
    #[arg(long, env = "DRIFTLINE_HTTP_CONCURRENCY", default_value_t = 512)]
    pub concurrency: usize,
    /// HTTP: time limit per request, milliseconds.
    #[arg(long, env = "DRIFTLINE_HTTP_TIMEOUT_MS", default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// HTTP: most rows in one request (checked while the body is parsed).
    #[arg(long, env = "DRIFTLINE_HTTP_MAX_ROWS", default_value_t = 10_000)]
    pub max_rows: usize,
}

/// Runs until `shutdown` fires; ready (`health`) while requests are consumed.
pub async fn run(args: PredictorArgs, shutdown: CancellationToken, health: Health) -> Result<()> {
    let specs = args
        .specs
        .iter()
        .map(|p| FeatureSpec::load(p).map_err(|e| Error::Config(e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    let slots = Arc::new(ModelSlots::new(specs));
    let runtime_metrics = Metrics::new("predictor");
    let metrics = PredictorMetrics::new(&runtime_metrics.registry);

    // The registry: loaded from the start of the models topic, then followed.
    let on_change = {
        let (slots, metrics) = (slots.clone(), metrics.clone());
        move |change: &ServingChange, reg: &Registry| match slots.sync(&change.model, reg) {
            Ok(Some(serving)) => {
                let v = serving.production;
                info!(model = %change.model, version = v, effective_from = ?serving.effective_from, earlier = serving.earlier, canary = ?serving.canary, shadow = ?serving.shadow, "now serving");
                if serving.late {
                    warn!(model = %change.model, version = v, effective_from = ?serving.effective_from, "the version arrived after requests from its effective time on were answered by the one before; it answers from now");
                    metrics.late_swaps.with_label_values(&[&change.model]).inc();
                }
                metrics
                    .model_version
                    .with_label_values(&[&change.model])
                    .set(v);
                metrics.swaps.with_label_values(&[&change.model]).inc();
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "cannot load a new version; what served before keeps serving")
            }
        }
    };
    let mut service = Service::start(
        runtime_metrics,
        &args.kafka,
        &args.models_topic,
        &args.trust,
        on_change,
        shutdown,
        health,
    )
    .await?;

    // HTTP from the start: it answers not-ready until a model is loaded.
    let state = AppState {
        slots: slots.clone(),
        log: Some(PredictionLog {
            producer: service.producer.clone(),
            topic: args.predictions_topic.clone(),
            codec: service.codec.clone(),
        }),
        metrics: metrics.clone(),
        prometheus: service.metrics.registry.clone(),
        health: service.health.clone(),
    };
    let limits = driftline_process::http::Limits {
        body_bytes: args.body_limit,
        concurrency: args.concurrency,
        timeout: Duration::from_millis(args.timeout_ms),
        ..Default::default()
    };
    service
        .serve(
            "HTTP API",
            args.http_addr,
            http::router(
                state,
                Limits {
                    batch_rows: args.max_rows,
                },
            ),
            limits,
        )
        .await?;

    let result = consume(&args, &service, slots, metrics).await;
    service.stop().await;
    result
}

/// Consumes requests until shutdown, once the registry has been read to its end (so a
/// request meets the version it met before a restart) and every model can be served (so
/// none is rejected for a model that is merely still loading).
async fn consume(
    args: &PredictorArgs,
    service: &Service,
    slots: Arc<ModelSlots>,
    metrics: PredictorMetrics,
) -> Result<()> {
    if !service.registry_loaded(None).await? {
        return Ok(());
    }
    while !slots.ready() {
        tokio::select! {
            _ = service.shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    if !service.shutdown.is_cancelled() {
        let store = Arc::new(Store::open(&args.state_dir, false)?);
        let mut opts = RunOptions::new(args.group.clone(), vec![args.requests_topic.clone()]);
        opts.dlq_topic = args.dlq_topic.clone();
        opts.pipeline = PIPELINE;
        if let Some(max_wait) = args.max_swap_wait {
            let Some(order) = swap_wait(args, service, max_wait, metrics.clone()).await? else {
                return Ok(());
            };
            opts.in_timestamp_order = true;
            opts.event_time_order = Some(order);
        }
        let processor = PredictProcessor::new(
            slots,
            service.codec.clone(),
            args.predictions_topic.clone(),
            metrics,
        );
        service.consume(&opts, store, processor).await?;
    }
    Ok(())
}

/// Follows the progress topic and holds each request partition's next request until the
/// trainer has decided its event time ([`crate::swap_wait`]), once the topic is read to
/// its end (so a restarted predictor does not answer before it knows); `None` on
/// shutdown. The requests topic is the only input, so the merge keeps each partition's
/// order and only the gate holds.
async fn swap_wait(
    args: &PredictorArgs,
    service: &Service,
    max_wait: Duration,
    metrics: PredictorMetrics,
) -> Result<Option<EventTime>> {
    let topic = [args.progress_topic.clone()];
    if !driftline_kafka::topics::missing(&args.kafka, &topic)
        .await?
        .is_empty()
    {
        return Err(Error::Config(format!(
            "--max-swap-wait reads topic {} and the cluster has none (driftline topics apply creates it)",
            args.progress_topic
        )));
    }
    let (progress, loaded) = (SharedProgress::default(), CancellationToken::new());
    tokio::spawn(progress::follow(
        args.kafka.clone(),
        args.progress_topic.clone(),
        service.codec.clone(),
        progress.clone(),
        loaded.clone(),
        service.shutdown.clone(),
    ));
    tokio::select! {
        _ = service.shutdown.cancelled() => return Ok(None),
        _ = loaded.cancelled() => {}
    }
    info!(max_wait_ms = max_wait.as_millis() as u64, topic = %args.progress_topic, "requests wait for the trainer's progress");
    let wait = SwapWait::new(
        progress,
        service.registry.clone(),
        service.codec.clone(),
        max_wait,
        metrics,
    );
    Ok(Some(EventTime {
        time_of: Arc::new(|_, _| None),
        max_idle: Duration::ZERO,
        gate: Some(Arc::new(wait).gate()),
    }))
}
