//! `driftline models list|show|promote|canary|shadow|reject|rollback|import`: the registry from the
//! command line.
//! It reads the compacted models topic to its end (the registry is nothing else), prints
//! JSON, and for promote/rollback publishes the records [`crate::ops`] computes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use clap::{Args, Subcommand};
use driftline_kafka::KafkaArgs;
use driftline_runtime::now_ms;
use driftline_runtime::registry::{Registry, SharedRegistry, follow};
use driftline_runtime::signing::{SigningArgs, Trust, TrustArgs};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Features, ModelPublished, TrainingWindow};
use driftline_schemas::spec::FeatureSpec;
use driftline_schemas::topics;
use rdkafka::producer::FutureProducer;
use serde_json::{Value, json};
use sha2::Digest;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{Error, Result, bootstrap, jobs, ops};

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
    /// Let a version predict every request beside production: its predictions are
    /// logged (the `shadow` field of driftline.predictions) and never returned.
    Shadow { model: String, version: i64 },
    /// Reject a version that is not in production (ends its canary or shadow).
    Reject { model: String, version: i64 },
    /// Put the previous production version back.
    Rollback { model: String },
    /// Publish a model trained elsewhere, exported to ONNX (scikit-learn by skl2onnx,
    /// LightGBM or XGBoost by onnxmltools, with zipmap=False), as the model's next
    /// version; its reference profile and metrics come from a data file. The spec says
    /// `algorithm = "onnx"`: the trainer never fits it, and its retrain requests stay on
    /// driftline.retrain for the trainer that made it.
    Import {
        /// The model's feature spec: each ONNX input is named after a feature, or one
        /// numeric input takes the spec's features in order.
        #[arg(long)]
        spec: PathBuf,
        #[arg(long)]
        onnx: PathBuf,
        /// Rows to profile and score it on (CSV, .csv.gz) [default: the spec's dataset.path].
        #[arg(long)]
        data: Option<PathBuf>,
        /// Start as a canary answering this share of the requests (else production).
        #[arg(long)]
        canary: Option<f64>,
        /// Start as a shadow of production (else production).
        #[arg(long, conflicts_with = "canary")]
        shadow: bool,
    },
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
        ModelsCommand::Shadow { model, version } => ops::shadow(&reg, model, *version, now_ms())?,
        ModelsCommand::Reject { model, version } => ops::reject(&reg, model, *version, now_ms())?,
        ModelsCommand::Rollback { model } => ops::rollback(&reg, model, now_ms())?,
        ModelsCommand::Import {
            spec,
            onnx,
            data,
            canary,
            shadow,
        } => {
            let start = match (canary, shadow) {
                (Some(share), _) => ops::Start::Canary(*share),
                (None, true) => ops::Start::Shadow,
                (None, false) => ops::Start::Production,
            };
            import(&reg, spec, onnx, data.as_deref(), start)?
        }
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

/// The record of an ONNX model imported for `spec_path`'s model, scored and profiled on
/// `data` (or the spec's data set).
fn import(
    reg: &Registry,
    spec_path: &Path,
    onnx: &Path,
    data: Option<&Path>,
    start: ops::Start,
) -> Result<Vec<ModelPublished>> {
    let spec = FeatureSpec::load(spec_path).map_err(|e| Error::Config(e.to_string()))?;
    if spec.model.algorithm != ops::IMPORTED {
        return Err(Error::Config(format!(
            "{}: an imported model's spec says algorithm = \"{}\" (so the trainer never fits it), not {:?}",
            spec_path.display(),
            ops::IMPORTED,
            spec.model.algorithm
        )));
    }
    let bytes =
        std::fs::read(onnx).map_err(|e| Error::Config(format!("{}: {e}", onnx.display())))?;
    let model = driftline_onnx::OnnxModel::load(&bytes, &spec)
        .map_err(|e| Error::Config(format!("{}: {e}", onnx.display())))?;
    let path = data
        .map(Path::to_path_buf)
        .or_else(|| bootstrap::dataset_path(&spec, spec_path))
        .ok_or_else(|| Error::Config("--data, or a dataset.path in the spec".into()))?;
    let (rows, skipped) = bootstrap::read_rows(&spec, &path, None, None)?;
    if rows.is_empty() {
        return Err(Error::Config(format!(
            "{}: no usable rows to profile the model on ({skipped} skipped)",
            path.display()
        )));
    }
    info!(path = %path.display(), rows = rows.len(), skipped, "scoring the imported model");
    let features: Vec<&Features> = rows.iter().map(|r| &r.features).collect();
    let mut predictions = Vec::with_capacity(rows.len());
    for chunk in features.chunks(10_000) {
        predictions.extend(
            model
                .predict_batch(chunk)
                .map_err(|e| Error::Config(format!("{}: {e}", onnx.display())))?,
        );
    }
    let metrics = driftline_model::evaluate_predictions(spec.target.kind, &rows, &predictions);
    let mut reference_profile = driftline_model::feature_profiles(&spec, &features);
    reference_profile.push(driftline_model::prediction_profile_of(&predictions));
    let times = rows.iter().map(|r| r.event_time);
    let window = TrainingWindow {
        start_time: times.clone().min().unwrap_or(0),
        end_time: times.max().unwrap_or(0),
        train_rows: 0,
        holdout_rows: rows.len() as i64,
        end_offsets: Default::default(),
    };
    let digest = format!("{:x}", sha2::Sha256::digest(&bytes));
    let import = ops::Import {
        model: spec.model.name.clone(),
        bytes,
        digest: digest[..16].to_string(),
        metrics,
        reference_profile,
        window,
        start,
    };
    ops::imported(reg, import, now_ms())
}

/// `driftline models ...`: prints the result as pretty JSON.
pub async fn run(args: ModelsArgs) -> Result<()> {
    let out = execute(&args).await?;
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}
