//! The monitor service: registry follower, HTTP API and the predictions + labelled
//! consumer, run together until shutdown (`driftline monitor`, and `driftline up`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use driftline_kafka::KafkaArgs;
use driftline_runtime::metrics::Metrics;
use driftline_runtime::service::{Health, Service};
use driftline_runtime::{EventTime, RunOptions, Store};
use driftline_schemas::codec::Codec;
use driftline_schemas::duration::parse_duration;
use driftline_schemas::events::{Labelled, PredictionLogged};
use driftline_schemas::topics;
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::cli::PolicyArgs;
use crate::metrics::MonitorMetrics;
use crate::monitor::MonitorConfig;
use crate::processor::{LatestReports, MonitorProcessor, Topics};

#[derive(Debug, Clone, Args)]
pub struct MonitorArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Where the HTTP API (/models/{model}/drift, /metrics) listens.
    #[arg(
        long,
        env = "DRIFTLINE_MONITOR_HTTP_ADDR",
        default_value = "127.0.0.1:8081"
    )]
    pub http_addr: SocketAddr,
    /// Where the windows and offsets live (RocksDB).
    #[arg(long, env = "DRIFTLINE_MONITOR_STATE", default_value = "state/monitor")]
    pub state_dir: PathBuf,
    #[arg(
        long,
        env = "DRIFTLINE_MONITOR_GROUP",
        default_value = "driftline-monitor"
    )]
    pub group: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_PREDICTIONS", default_value = topics::PREDICTIONS)]
    pub predictions_topic: String,
    /// The joiner's predictions paired with their actuals (performance).
    #[arg(long, env = "DRIFTLINE_TOPIC_LABELLED", default_value = topics::LABELLED)]
    pub labelled_topic: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_DRIFT", default_value = topics::DRIFT)]
    pub drift_topic: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_RETRAIN", default_value = topics::RETRAIN)]
    pub retrain_topic: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_MODELS", default_value = topics::MODELS)]
    pub models_topic: String,
    #[command(flatten)]
    pub trust: driftline_runtime::signing::TrustArgs,
    #[arg(long, env = "DRIFTLINE_TOPIC_DLQ", default_value = topics::DLQ)]
    pub dlq_topic: String,
    /// Most messages per state commit.
    #[arg(long, env = "DRIFTLINE_MONITOR_MAX_BATCH", default_value_t = 2000)]
    pub max_batch: usize,
    /// Stop once the input is read to its end (backfills and tests).
    #[arg(long, env = "DRIFTLINE_MONITOR_EXIT_ON_EOF")]
    pub exit_on_eof: bool,
    /// Take each partition's predictions and labelled pairs in event-time order (a pair's
    /// time: its actual's or its prediction's, the later), and let either wait up to this
    /// long for the other when the other has nothing to offer (Kafka Streams'
    /// max.task.idle.ms), e.g. `10s`. Reports then follow from the two logs' contents,
    /// equal in a replay, after a crash and on any instance, whenever no input stalls
    /// longer than this and each partition holds one model's events. The price: a
    /// prediction waits for pairs to pass its event time, up to this long [default: in
    /// produce-time order, without waiting].
    #[arg(long, env = "DRIFTLINE_MONITOR_MAX_TASK_IDLE", value_parser = parse_duration)]
    pub max_task_idle: Option<Duration>,
}

/// Runs until `shutdown` fires (or, with `--exit-on-eof`, the input is drained); `ready`
/// once the windows are restored.
pub async fn run(args: MonitorArgs, shutdown: CancellationToken, health: Health) -> Result<()> {
    let config = args.policy.config()?;
    let runtime_metrics = Metrics::new("monitor");
    let metrics = MonitorMetrics::new(&runtime_metrics.registry);
    let latest = LatestReports::default();
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
    let app = crate::http::router(latest.clone(), service.metrics.registry.clone());
    service
        .serve("HTTP API", args.http_addr, app, Default::default())
        .await?;

    let result = consume(&args, &service, config, latest, metrics).await;
    service.stop().await;
    result
}

/// Restores the windows and consumes until shutdown.
async fn consume(
    args: &MonitorArgs,
    service: &Service,
    config: MonitorConfig,
    latest: LatestReports,
    metrics: MonitorMetrics,
) -> Result<()> {
    // The windows refer to registry versions: load the registry before restoring them.
    if service.registry_loaded(Some(REGISTRY_PATIENCE)).await? {
        let store = Arc::new(Store::open(&args.state_dir, false)?);
        let topics = Topics {
            predictions: args.predictions_topic.clone(),
            labelled: args.labelled_topic.clone(),
            drift: args.drift_topic.clone(),
            retrain: args.retrain_topic.clone(),
        };
        // The runtime restores the windows from the store on every assignment (`reload`).
        let mut processor = MonitorProcessor::new(
            service.codec.clone(),
            service.registry.clone(),
            config,
            topics,
            latest,
            metrics,
        );
        let (kafka, models, codec, trust) = (
            service.kafka.clone(),
            args.models_topic.clone(),
            service.codec.clone(),
            service.trust.clone(),
        );
        processor.read_whole = Some(Arc::new(move |model: &str, version| {
            driftline_runtime::registry::read_whole(&kafka, &models, &codec, &trust, model, version)
                .unwrap_or_else(|e| {
                    tracing::warn!(%model, version, error = %e, "cannot read a version back from the models topic");
                    None
                })
        }));
        let mut opts = RunOptions::new(
            args.group.clone(),
            vec![args.predictions_topic.clone(), args.labelled_topic.clone()],
        );
        opts.dlq_topic = args.dlq_topic.clone();
        opts.max_batch = args.max_batch;
        opts.exit_on_eof = args.exit_on_eof;
        // Which labelled pairs an evaluation has scored then follows the two logs, not
        // how the fetches interleaved them.
        opts.in_timestamp_order = true;
        opts.event_time_order = args
            .max_task_idle
            .map(|max_idle| event_time_order(&service.codec, args, max_idle));
        service.consume(&opts, store, processor).await?;
    }
    Ok(())
}

/// A prediction's event time, and a pair's: the later of its two halves' (when it could
/// first be known). An undecodable message goes by its timestamp, and on to the
/// dead-letter topic from the processor.
fn event_time_order(codec: &Codec, args: &MonitorArgs, max_idle: Duration) -> EventTime {
    let codec = codec.clone();
    let (predictions, labelled) = (args.predictions_topic.clone(), args.labelled_topic.clone());
    let time_of = move |topic: &str, payload: &[u8]| {
        if topic == predictions {
            codec
                .decode::<PredictionLogged>(payload)
                .ok()
                .map(|p| p.event_time)
        } else if topic == labelled {
            codec
                .decode::<Labelled>(payload)
                .ok()
                .map(|l| l.prediction.event_time.max(l.actual.event_time))
        } else {
            None
        }
    };
    EventTime {
        time_of: Arc::new(time_of),
        max_idle,
        gate: None,
    }
}

/// How long the registry may take to load before the monitor gives up.
const REGISTRY_PATIENCE: Duration = Duration::from_secs(60);
