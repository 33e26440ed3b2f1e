//! The monitor service: registry follower, HTTP API and the predictions + actuals
//! consumer, run together until shutdown (`driftline monitor`, and `driftline up`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use driftline_kafka::KafkaArgs;
use driftline_runtime::metrics::Metrics;
use driftline_runtime::{RunOptions, Store};
use driftline_schemas::codec::Codec;
use driftline_schemas::topics;
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

use crate::cli::PolicyArgs;
use crate::metrics::MonitorMetrics;
use crate::processor::{LatestReports, MonitorProcessor, Topics};
use crate::{Error, Result};

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
    #[arg(long, env = "DRIFTLINE_TOPIC_ACTUALS", default_value = topics::ACTUALS)]
    pub actuals_topic: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_DRIFT", default_value = topics::DRIFT)]
    pub drift_topic: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_RETRAIN", default_value = topics::RETRAIN)]
    pub retrain_topic: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_MODELS", default_value = topics::MODELS)]
    pub models_topic: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_DLQ", default_value = topics::DLQ)]
    pub dlq_topic: String,
    /// Most messages per state commit.
    #[arg(long, env = "DRIFTLINE_MONITOR_MAX_BATCH", default_value_t = 2000)]
    pub max_batch: usize,
    /// Stop once the input is read to its end (backfills and tests).
    #[arg(long, env = "DRIFTLINE_MONITOR_EXIT_ON_EOF")]
    pub exit_on_eof: bool,
}

/// Runs until `shutdown` fires (or, with `--exit-on-eof`, the input is drained).
pub async fn run(args: MonitorArgs, shutdown: CancellationToken) -> Result<()> {
    args.kafka.validate()?;
    args.kafka.check_connection().await?;
    let config = args.policy.config()?;
    let codec = Codec::single_object();
    let runtime_metrics = Metrics::new("monitor");
    let metrics = MonitorMetrics::new(&runtime_metrics.registry);
    let producer: FutureProducer = args
        .kafka
        .producer_config()
        .create()
        .map_err(driftline_runtime::Error::from)?;
    let latest = LatestReports::default();

    let follower = driftline_runtime::serve::follow_registry(
        &args.kafka,
        &args.models_topic,
        &codec,
        |_, _| {},
        &shutdown,
    );
    let (registry, loaded) = (follower.registry.clone(), follower.loaded.clone());
    let app = crate::http::router(latest.clone(), runtime_metrics.registry.clone());
    let (_, http_task) =
        driftline_process::http::serve("HTTP API", args.http_addr, app, &shutdown).await?;

    // The windows refer to registry versions: load the registry before restoring them.
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = loaded.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_secs(60)) => {
            return Err(Error::Config(format!("the model registry ({}) did not load within 60 s", args.models_topic)));
        }
    }
    let mut result = Ok(());
    if !shutdown.is_cancelled() {
        let store = Arc::new(Store::open(&args.state_dir, false)?);
        let topics = Topics {
            predictions: args.predictions_topic.clone(),
            actuals: args.actuals_topic.clone(),
            drift: args.drift_topic.clone(),
            retrain: args.retrain_topic.clone(),
        };
        let mut processor =
            MonitorProcessor::new(codec.clone(), registry, config, topics, latest, metrics);
        // Restoring reads the whole window: blocking work, off the async workers.
        let processor = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || processor.restore(&store).map(|_| processor))
                .await
                .map_err(|e| Error::State(format!("restore task: {e}")))??
        };
        let mut opts = RunOptions::new(
            args.group.clone(),
            vec![args.predictions_topic.clone(), args.actuals_topic.clone()],
        );
        opts.dlq_topic = args.dlq_topic.clone();
        opts.max_batch = args.max_batch;
        opts.exit_on_eof = args.exit_on_eof;
        result = driftline_runtime::run(
            &args.kafka,
            &opts,
            store,
            processor,
            producer,
            codec,
            runtime_metrics,
            shutdown.clone(),
        )
        .await
        .map(|_| ())
        .map_err(Error::from);
    }
    shutdown.cancel();
    let _ = http_task.await;
    let _ = follower.task.await;
    result
}
