//! `driftline`: the services, the embedded `up`, and the offline tools, in one binary.
//!
//! Subcommands stay thin: they parse flags (every flag also an env var), build the
//! library pieces and run them until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use driftline_kafka::KafkaArgs;
use driftline_kafka::topics::TopicSpec;

mod dashboard;
mod up;
mod watch;

#[derive(Debug, Parser)]
#[command(
    name = "driftline",
    version,
    about = "Keep machine-learning models healthy in production, on Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    telemetry: driftline_process::telemetry::TelemetryArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole loop locally: the embedded broker, the services, and a replay of data/.
    Up(up::UpArgs),
    /// Serve the production models to driftline.requests and over HTTP.
    Predictor(driftline_predictor::service::PredictorArgs),
    /// Watch predictions and actuals for drift; publish reports and retrain requests.
    Monitor(driftline_monitor::service::MonitorArgs),
    /// Pair predictions with their actuals and publish them to driftline.labelled.
    Joiner(driftline_joiner::service::JoinerArgs),
    /// Post the monitor's drift decisions (raised, changed, resolved) to webhooks.
    Alerts(driftline_alerts::service::AlertsArgs),
    /// Train and publish model versions (bootstrap, retrain requests, schedule).
    Trainer(driftline_trainer::service::TrainerArgs),
    /// The model registry: list, show, promote, rollback.
    Models(driftline_trainer::cli::ModelsArgs),
    /// Compare two CSV files offline (no Kafka): per-column drift statistics.
    Drift(driftline_offline::drift::DriftArgs),
    /// Replay a CSV through the monitor's windows and policy offline, to tune thresholds.
    Backtest(driftline_offline::backtest::BacktestArgs),
    /// Make the ed25519 key pair that signs model versions (or show the one in --dir):
    /// give the trainer the private key (--signing-key), every service the public one
    /// (--trusted-keys).
    Keygen {
        /// Where model-signing.pem (private, mode 0600) and model-signing.pub.pem go.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Manage topics.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Create the topics of the spec that do not exist yet (existing ones are left alone).
    Apply {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// The topic spec [default: infra/topics.toml of this checkout].
        #[arg(long, env = "DRIFTLINE_TOPIC_SPEC")]
        spec: Option<PathBuf>,
    },
}

/// The repo's infra/ folder, where the binary was built from (overridable by env).
pub(crate) fn infra_dir() -> PathBuf {
    std::env::var_os("DRIFTLINE_INFRA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../infra"))
}

fn default_topic_spec() -> PathBuf {
    infra_dir().join("topics.toml")
}

pub(crate) async fn apply_topics(kafka: &KafkaArgs, spec: &std::path::Path) -> Result<Vec<String>> {
    let spec = TopicSpec::load(spec)?;
    driftline_kafka::topics::apply(kafka, &spec)
        .await
        .with_context(|| format!("applying topics on {}", kafka.bootstrap_servers))
}

// More workers than cores: each service's processor runs its batch synchronously on a
// worker, and `up` runs several of them plus HTTP and the replay in one process.
#[tokio::main(flavor = "multi_thread", worker_threads = 8)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end of main: dropping it exports the spans still queued.
    let result = match driftline_process::telemetry::init(&cli.telemetry) {
        Ok(_telemetry) => run(cli.command).await,
        Err(e) => Err(e.into()),
    };
    driftline_process::exit_code("driftline", result)
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Up(args) => up::run(args).await,
        Command::Predictor(args) => Ok(driftline_predictor::service::run(
            args,
            driftline_process::shutdown::on_signal(),
            Default::default(),
        )
        .await?),
        Command::Monitor(args) => Ok(driftline_monitor::service::run(
            args,
            driftline_process::shutdown::on_signal(),
            Default::default(),
        )
        .await?),
        Command::Joiner(args) => Ok(driftline_joiner::service::run(
            args,
            driftline_process::shutdown::on_signal(),
            Default::default(),
        )
        .await?),
        Command::Alerts(args) => Ok(driftline_alerts::service::run(
            args,
            driftline_process::shutdown::on_signal(),
            Default::default(),
        )
        .await?),
        Command::Trainer(args) => Ok(driftline_trainer::service::run(
            args,
            driftline_process::shutdown::on_signal(),
            Default::default(),
        )
        .await?),
        Command::Models(args) => Ok(driftline_trainer::cli::run(args).await?),
        Command::Keygen { dir } => {
            let (signer, private, public) = driftline_runtime::signing::key_pair_in(&dir)?;
            println!("private key: {} (key {})", private.display(), signer.id());
            println!("public key:  {}", public.display());
            Ok(())
        }
        Command::Drift(args) => {
            print!("{}", driftline_offline::drift::drift(&args)?);
            Ok(())
        }
        Command::Backtest(args) => {
            let mut out = std::io::stdout().lock();
            driftline_offline::backtest::backtest(&args, &mut out)?;
            Ok(())
        }
        Command::Topics {
            command: TopicsCommand::Apply { kafka, spec },
        } => {
            kafka.validate()?;
            let created = apply_topics(&kafka, &spec.unwrap_or_else(default_topic_spec)).await?;
            println!("{} topics created: {}", created.len(), created.join(", "));
            Ok(())
        }
    }
}
