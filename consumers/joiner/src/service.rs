//! The joiner service: the predictions + actuals consumer and its /metrics, until shutdown
//! (`driftline joiner`, and `driftline up`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use driftline_kafka::KafkaArgs;
use driftline_runtime::metrics::Metrics;
use driftline_runtime::service::{Health, Service};
use driftline_runtime::{RunOptions, Store};
use driftline_schemas::duration::parse_duration_ms;
use driftline_schemas::topics;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::join::{Limits, defaults};
use crate::metrics::JoinerMetrics;
use crate::processor::{JoinProcessor, Topics};
use crate::{Error, Result};

#[derive(Debug, Clone, Args)]
pub struct JoinerArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// How far (event time) a model's actuals may run past a prediction still waiting for
    /// its actual before it is given up on. Keep it well above the label delay. A waiting
    /// actual goes only by --max-waiting (predictions, served from several partitions in
    /// parallel, are no clock for it).
    #[arg(long, env = "DRIFTLINE_JOINER_MAX_WAIT", default_value = "7d", value_parser = parse_duration_ms)]
    pub max_wait: i64,
    /// Most halves waiting from one input partition (the oldest in event time goes
    /// first), and most joined request ids remembered to recognise a duplicate.
    #[arg(long, env = "DRIFTLINE_JOINER_MAX_WAITING", default_value_t = defaults::MAX_WAITING)]
    pub max_waiting: usize,
    /// Where the /metrics endpoint listens.
    #[arg(
        long,
        env = "DRIFTLINE_JOINER_HTTP_ADDR",
        default_value = "127.0.0.1:8083"
    )]
    pub http_addr: SocketAddr,
    /// Where the waiting halves and offsets live (RocksDB).
    #[arg(long, env = "DRIFTLINE_JOINER_STATE", default_value = "state/joiner")]
    pub state_dir: PathBuf,
    #[arg(
        long,
        env = "DRIFTLINE_JOINER_GROUP",
        default_value = "driftline-joiner"
    )]
    pub group: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_PREDICTIONS", default_value = topics::PREDICTIONS)]
    pub predictions_topic: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_ACTUALS", default_value = topics::ACTUALS)]
    pub actuals_topic: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_LABELLED", default_value = topics::LABELLED)]
    pub labelled_topic: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_DLQ", default_value = topics::DLQ)]
    pub dlq_topic: String,
    /// Most messages per state commit.
    #[arg(long, env = "DRIFTLINE_JOINER_MAX_BATCH", default_value_t = 2000)]
    pub max_batch: usize,
    /// Stop once the input is read to its end (backfills and tests).
    #[arg(long, env = "DRIFTLINE_JOINER_EXIT_ON_EOF")]
    pub exit_on_eof: bool,
}

impl JoinerArgs {
    pub fn limits(&self) -> Result<Limits> {
        if self.max_waiting == 0 {
            return Err(Error::Config("--max-waiting must be at least 1".into()));
        }
        Ok(Limits {
            max_wait_ms: self.max_wait,
            max_waiting: self.max_waiting,
        })
    }
}

/// Runs until `shutdown` fires (or, with `--exit-on-eof`, the input is drained); `ready`
/// once the waiting halves are restored.
pub async fn run(args: JoinerArgs, shutdown: CancellationToken, health: Health) -> Result<()> {
    let limits = args.limits()?;
    let runtime_metrics = Metrics::new("joiner");
    let metrics = JoinerMetrics::new(&runtime_metrics.registry);
    let mut service =
        Service::start_without_registry(runtime_metrics, &args.kafka, shutdown, health).await?;
    let app = driftline_process::metrics::router(service.metrics.registry.clone());
    service
        .serve("metrics", args.http_addr, app, Default::default())
        .await?;

    let result = consume(&args, &service, limits, metrics).await;
    service.stop().await;
    result
}

async fn consume(
    args: &JoinerArgs,
    service: &Service,
    limits: Limits,
    metrics: JoinerMetrics,
) -> Result<()> {
    let store = Arc::new(Store::open(&args.state_dir, false)?);
    let topics = Topics {
        predictions: args.predictions_topic.clone(),
        actuals: args.actuals_topic.clone(),
        labelled: args.labelled_topic.clone(),
    };
    // The runtime restores the join from the store on every assignment (`reload`).
    let processor = JoinProcessor::new(service.codec.clone(), topics, limits, metrics);
    info!(
        max_wait_ms = limits.max_wait_ms,
        max_waiting = limits.max_waiting,
        "joining predictions with actuals"
    );
    let mut opts = RunOptions::new(
        args.group.clone(),
        vec![args.predictions_topic.clone(), args.actuals_topic.clone()],
    );
    opts.dlq_topic = args.dlq_topic.clone();
    opts.max_batch = args.max_batch;
    opts.exit_on_eof = args.exit_on_eof;
    service.consume(&opts, store, processor).await?;
    Ok(())
}
