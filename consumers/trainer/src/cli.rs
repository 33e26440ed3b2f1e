//! `driftline models list|show|promote|canary|reject|rollback`: the registry from the
//! command line.
//! It reads the compacted models topic to its end (the registry is nothing else), prints
//! JSON, and for promote/rollback publishes the records [`crate::ops`] computes.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use clap::{Args, Subcommand};
use driftline_kafka::KafkaArgs;
use driftline_runtime::now_ms;
use driftline_runtime::registry::{Registry, SharedRegistry, follow};
use driftline_runtime::signing::{SigningArgs, Trust, TrustArgs};
use driftline_schemas::codec::Codec;
use driftline_schemas::topics;
use rdkafka::producer::FutureProducer;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{Error, Result, jobs, ops};

#[derive(Debug, Clone, Args)]
pub struct ModelsArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[arg(long, env = "DRIFTLINE_TOPIC_MODELS", default_value = topics::MODELS)]
    pub models_topic: String,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub signing: SigningArgs,
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ModelsCommand {
    /// Every model with its production and latest version.
    List,
    /// One model's versions (or one version) with metrics, trigger and training window.
    Show { model: String, version: Option<i64> },
    /// Make a version production (e.g. a rejected candidate, by hand; ends a canary).
    Promote { model: String, version: i64 },
    /// Let a version answer a share of the requests beside production, chosen by a hash
    /// of the request id (so an id always meets the same version).
    Canary {
        model: String,
        version: i64,
        /// The share of requests, in (0, 1].
        #[arg(long, default_value_t = 0.1)]
        share: f64,
    },
    /// Reject a version that is not in production (ends its canary).
    Reject { model: String, version: i64 },
    /// Put the previous production version back.
    Rollback { model: String },
}

/// Reads the whole models topic into a registry, of the records `trust` accepts.
pub async fn load_registry(kafka: &KafkaArgs, topic: &str, trust: &Trust) -> Result<Registry> {
    let registry: SharedRegistry = Arc::new(RwLock::new(Registry::default()));
    let (loaded, stop) = (CancellationToken::new(), CancellationToken::new());
    let task = tokio::spawn(follow(
        kafka.clone(),
        topic.to_string(),
        registry.clone(),
        Codec::single_object(),
        trust.clone(),
        |_, _| {},
        None,
        loaded.clone(),
        tokio::sync::mpsc::unbounded_channel().1,
        stop.clone(),
    ));
    let waited = tokio::time::timeout(Duration::from_secs(30), loaded.cancelled()).await;
    stop.cancel();
    let followed = task
        .await
        .map_err(|e| Error::State(format!("registry reader: {e}")))?;
    followed?;
    if waited.is_err() {
        return Err(Error::Config(format!(
            "could not read {topic} to its end on {} within 30 s",
            kafka.bootstrap_servers
        )));
    }
    let reg = registry.read().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(reg)
}

/// Runs the command; returns what it prints.
pub async fn execute(args: &ModelsArgs) -> Result<Value> {
    args.kafka.validate()?;
    let trust = Trust::load(&args.trust)?;
    let signer = args.signing.signer()?;
    args.kafka.check_connection().await?;
    let reg = load_registry(&args.kafka, &args.models_topic, &trust).await?;
    let records = match &args.command {
        ModelsCommand::List => return Ok(ops::list(&reg)),
        ModelsCommand::Show {
            model,
            version: None,
        } => return ops::show(&reg, model),
        ModelsCommand::Show {
            model,
            version: Some(v),
        } => return ops::show_version(&reg, model, *v),
        ModelsCommand::Promote { model, version } => ops::promote(&reg, model, *version, now_ms())?,
        ModelsCommand::Canary {
            model,
            version,
            share,
        } => ops::canary(&reg, model, *version, *share, now_ms())?,
        ModelsCommand::Reject { model, version } => ops::reject(&reg, model, *version, now_ms())?,
        ModelsCommand::Rollback { model } => ops::rollback(&reg, model, now_ms())?,
    };
    let codec = Codec::single_object();
    let records = jobs::made_whole(
        &args.kafka,
        &args.models_topic,
        &codec,
        &trust,
        &reg,
        records,
    )
    .await?;
    let producer: FutureProducer = args
        .kafka
        .producer_config()
        .create()
        .map_err(driftline_runtime::Error::from)?;
    jobs::publish(
        &producer,
        &args.models_topic,
        &codec,
        signer.as_ref(),
        &records,
    )
    .await?;
    Ok(json!({ "published": records.iter().map(ops::version_view).collect::<Vec<_>>() }))
}

/// `driftline models ...`: prints the result as pretty JSON.
pub async fn run(args: ModelsArgs) -> Result<()> {
    let out = execute(&args).await?;
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}
