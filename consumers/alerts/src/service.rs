//! The alerts service: the drift-topic consumer and its /metrics, until shutdown
//! (`driftline alerts`, and `driftline up` when a webhook is set).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use driftline_kafka::KafkaArgs;
use driftline_runtime::metrics::Metrics;
use driftline_runtime::service::{Health, Service};
use driftline_runtime::{RunOptions, Store};
use driftline_schemas::duration::parse_duration_ms;
use driftline_schemas::events::DriftDecision;
use driftline_schemas::topics;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::metrics::AlertsMetrics;
use crate::processor::AlertsProcessor;
use crate::webhook::{Format, Poster, Retry, Target};
use crate::{Error, Result};

#[derive(Debug, Clone, Args)]
pub struct AlertsArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// A webhook that takes the generic JSON body (the change, the drifted features and
    /// the whole report). Repeat the flag, or separate URLs by commas in the variable.
    #[arg(
        long = "webhook",
        env = "DRIFTLINE_WEBHOOKS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub webhooks: Vec<String>,
    /// A Slack incoming webhook (or any that takes Slack's `{"text": ...}`).
    #[arg(
        long = "slack-webhook",
        env = "DRIFTLINE_SLACK_WEBHOOKS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub slack_webhooks: Vec<String>,
    /// The least decision that raises an alert: `drift`, or `warning` for both. Below it a
    /// report counts as no drift, so its fall back below is a resolved alert.
    #[arg(long, env = "DRIFTLINE_ALERT_ON", default_value = "drift", value_parser = parse_min)]
    pub alert_on: DriftDecision,
    /// Posts per alert and target before it goes to the dead-letter topic (timeouts,
    /// refused connections, 408, 429 and 5xx are tried again; other 4xx are not).
    #[arg(long, env = "DRIFTLINE_WEBHOOK_ATTEMPTS", default_value_t = 5)]
    pub webhook_attempts: u32,
    /// How long one post may take. The pauses between attempts start at 0.5 s and double,
    /// up to 8 s: five attempts give up after about 33 s at worst.
    #[arg(long, env = "DRIFTLINE_WEBHOOK_TIMEOUT", default_value = "5s", value_parser = parse_duration_ms)]
    pub webhook_timeout: i64,
    /// Where the /metrics endpoint listens.
    #[arg(
        long,
        env = "DRIFTLINE_ALERTS_HTTP_ADDR",
        default_value = "127.0.0.1:8084"
    )]
    pub http_addr: SocketAddr,
    /// Where each model's last level and the offsets live (RocksDB).
    #[arg(long, env = "DRIFTLINE_ALERTS_STATE", default_value = "state/alerts")]
    pub state_dir: PathBuf,
    #[arg(
        long,
        env = "DRIFTLINE_ALERTS_GROUP",
        default_value = "driftline-alerts"
    )]
    pub group: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_DRIFT", default_value = topics::DRIFT)]
    pub drift_topic: String,
    #[arg(long, env = "DRIFTLINE_TOPIC_DLQ", default_value = topics::DLQ)]
    pub dlq_topic: String,
    /// Stop once the input is read to its end (backfills and tests).
    #[arg(long, env = "DRIFTLINE_ALERTS_EXIT_ON_EOF")]
    pub exit_on_eof: bool,
}

fn parse_min(s: &str) -> std::result::Result<DriftDecision, String> {
    match s.to_ascii_lowercase().as_str() {
        "drift" => Ok(DriftDecision::Drift),
        "warning" => Ok(DriftDecision::Warning),
        _ => Err(format!("expected drift or warning, not {s:?}")),
    }
}

impl AlertsArgs {
    /// Whether any webhook is set (`driftline up` starts the service only then).
    pub fn any_target(&self) -> bool {
        !(self.webhooks.is_empty() && self.slack_webhooks.is_empty())
    }

    pub fn targets(&self) -> Result<Vec<Target>> {
        if !self.any_target() {
            return Err(Error::Config(
                "no webhook: pass --webhook URL (generic JSON) or --slack-webhook URL".into(),
            ));
        }
        let json = self.webhooks.iter().map(|u| Target::new(u, Format::Json));
        let slack = self
            .slack_webhooks
            .iter()
            .map(|u| Target::new(u, Format::Slack));
        json.chain(slack).collect()
    }

    pub fn retry(&self) -> Result<Retry> {
        if self.webhook_timeout <= 0 {
            return Err(Error::Config("--webhook-timeout must be positive".into()));
        }
        Ok(Retry {
            attempts: self.webhook_attempts,
            timeout: Duration::from_millis(self.webhook_timeout as u64),
            ..Retry::default()
        })
    }
}

/// Runs until `shutdown` fires (or, with `--exit-on-eof`, the drift topic is drained).
pub async fn run(args: AlertsArgs, shutdown: CancellationToken, health: Health) -> Result<()> {
    let targets = args.targets()?;
    let retry = args.retry()?;
    let poster = Poster::new(retry)?;
    let runtime_metrics = Metrics::new("alerts");
    let metrics = AlertsMetrics::new(&runtime_metrics.registry);
    let mut service =
        Service::start_without_registry(runtime_metrics, &args.kafka, shutdown, health).await?;
    let app = driftline_process::metrics::router(service.metrics.registry.clone());
    service
        .serve("metrics", args.http_addr, app, Default::default())
        .await?;
    info!(targets = ?targets, alert_on = %args.alert_on, "posting drift alerts");

    let result = async {
        let store = Arc::new(Store::open(&args.state_dir, false)?);
        let processor = AlertsProcessor::new(
            service.codec.clone(),
            poster,
            targets,
            args.alert_on,
            metrics,
        );
        let mut opts = RunOptions::new(args.group.clone(), vec![args.drift_topic.clone()]);
        opts.dlq_topic = args.dlq_topic.clone();
        // One report per transaction: a commit that fails re-posts one alert, not a batch.
        opts.max_batch = 1;
        opts.exit_on_eof = args.exit_on_eof;
        service.consume(&opts, store, processor).await?;
        Ok(())
    }
    .await;
    service.stop().await;
    result
}
