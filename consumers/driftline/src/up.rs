//! `driftline up`: the embedded default, for a newcomer's first run.
//!
//! Starts the local broker (through infra/broker.sh) if it is not running, applies the
//! topic spec, runs the services in this process (each with its own consumer group and
//! state, as they would run apart), waits for a model in production, then replays the
//! data set at a speed-up that shows months in minutes, printing a live summary.
//! A second `up` resumes the replay where the first stopped (the position is kept beside
//! the services' state): the rows not yet sent, and the ground truth the first still owed
//! for rows it had sent, so nothing is sent twice and nothing is left out. The state
//! directory belongs to the broker's data it was written against (its cluster id, kept in
//! the directory): against a broker whose data is new, `up` moves the old state aside and
//! starts afresh rather than resume a replay whose messages are gone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use driftline_alerts::service::AlertsArgs;
use driftline_joiner::service::JoinerArgs;
use driftline_kafka::KafkaArgs;
use driftline_monitor::service::MonitorArgs;
use driftline_predictor::service::PredictorArgs;
use driftline_producers::pace::Pace;
use driftline_producers::progress::Progress;
use driftline_producers::replay::{Checkpoint, Cursor, Outcome, ReplayOptions, Resume, replay};
use driftline_producers::sink::KafkaSink;
use driftline_producers::source::TimeRange;
use driftline_runtime::service::Health;
use driftline_runtime::signing::{self, SigningArgs, TrustArgs};
use driftline_schemas::spec::{FeatureSpec, format_time, parse_time};
use driftline_schemas::topics;
use driftline_trainer::service::TrainerArgs;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::watch::{self, Seen};

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The feature spec of the model to run [default: data/flights.toml].
    #[arg(long, env = "DRIFTLINE_SPEC")]
    spec: Option<PathBuf>,
    /// The data to replay [default: the spec's dataset.path].
    #[arg(long, env = "DRIFTLINE_DATA")]
    data: Option<PathBuf>,
    /// Replay from this event time (the bootstrap model is trained on what comes before).
    #[arg(long, env = "DRIFTLINE_REPLAY_FROM", default_value = "2013-04-01")]
    from: String,
    /// Event time runs this many times faster than the clock (86400: a day a second).
    #[arg(long, env = "DRIFTLINE_SPEEDUP", default_value_t = 86_400.0)]
    speedup: f64,
    /// How long after a flight its arrival delay is known, in event time.
    #[arg(long, env = "DRIFTLINE_LABEL_DELAY", default_value = "6h", value_parser = driftline_schemas::duration::parse_duration)]
    label_delay: Duration,
    /// Only run the services; do not replay data.
    #[arg(long, env = "DRIFTLINE_NO_REPLAY")]
    no_replay: bool,
    /// Keep the services running after the replay ends (until Ctrl-C).
    #[arg(long, env = "DRIFTLINE_KEEP_RUNNING")]
    keep_running: bool,
    /// Do not start the embedded broker (use the one at --bootstrap-servers).
    #[arg(long, env = "DRIFTLINE_NO_BROKER")]
    no_broker: bool,
    /// Leave the embedded broker running at the end if this run started it (by default
    /// `up` stops what it started; a broker that was already running is left alone).
    #[arg(long, env = "DRIFTLINE_KEEP_BROKER")]
    keep_broker: bool,
    /// Where the predictor's HTTP API listens.
    #[arg(long, env = "DRIFTLINE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// Where the services keep their state (RocksDB) and the replay position.
    #[arg(long, env = "DRIFTLINE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Where the key pair that signs model versions is kept (made on the first start)
    /// [default: ~/.cache/driftline/keys]. DRIFTLINE_SIGNING_KEY and DRIFTLINE_TRUSTED_KEYS
    /// override it.
    #[arg(long, env = "DRIFTLINE_KEYS_DIR")]
    keys_dir: Option<PathBuf>,
    /// Where the web dashboard listens.
    #[arg(
        long,
        env = "DRIFTLINE_DASHBOARD_ADDR",
        default_value = "127.0.0.1:8090"
    )]
    dashboard_addr: SocketAddr,
    /// Seconds between live summary lines.
    #[arg(long, env = "DRIFTLINE_SUMMARY_EVERY", default_value_t = 5)]
    summary_every: u64,
}

fn repo() -> PathBuf {
    crate::infra_dir().join("..")
}

/// Where infra/env.sh keeps the broker, state and builds: `$DRIFTLINE_CACHE`.
fn cache_dir() -> PathBuf {
    std::env::var_os("DRIFTLINE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/driftline")))
        .unwrap_or_else(|| PathBuf::from(".driftline"))
}

fn default_state_dir() -> PathBuf {
    cache_dir().join("state")
}

/// The embedded broker's data, as infra/env.sh computes it.
fn broker_dir() -> PathBuf {
    std::env::var_os("DRIFTLINE_BROKER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("broker"))
}

pub async fn run(args: UpArgs) -> Result<()> {
    args.kafka.validate()?;
    let spec_path = args
        .spec
        .clone()
        .unwrap_or_else(|| repo().join("data/flights.toml"));
    let spec = FeatureSpec::load(&spec_path)?;
    let data = match (&args.data, &spec.dataset.path) {
        (Some(d), _) => d.clone(),
        (None, Some(p)) => spec_path.parent().unwrap_or(Path::new(".")).join(p),
        (None, None) => bail!("{} names no dataset.path; pass --data", spec_path.display()),
    };
    let from = parse_time(&args.from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;

    let broker = if args.no_broker {
        Broker::External
    } else {
        start_broker()?
    };
    let cluster = cluster_id(&args.kafka).await?;
    if let Claim::MovedAside { from, to, was } = claim_state(&state_dir, &cluster)? {
        eprintln!(
            "[up] {} was written against another broker's data (cluster {was}; this one is {cluster}): moved it to {} and starting afresh",
            from.display(),
            to.display()
        );
    }
    let created = crate::apply_topics(&args.kafka, &crate::infra_dir().join("topics.toml")).await?;
    info!(created = created.len(), "topics ready");

    let (signing, trust) = model_keys(&args)?;
    let shutdown = driftline_process::shutdown::on_signal();
    let mut services = Services::new(shutdown.clone());
    let predictor_health = Health::default();
    let (mut predictor, _) = service_settings::<PredictorArgs>()?;
    predictor.kafka = args.kafka.clone();
    predictor.trust = trust.clone();
    predictor.specs = vec![spec_path.clone()];
    predictor.http_addr = args.http_addr;
    predictor.state_dir = state_dir.join("predictor");
    predictor.group = PREDICTOR_GROUP.into();
    services.spawn(
        "predictor",
        driftline_predictor::service::run(predictor, shutdown.clone(), predictor_health.clone()),
    );
    // The one join of predictions with their ground truth, which the trainer, the monitor
    // and the dashboard read.
    let (mut joiner, _) = service_settings::<JoinerArgs>()?;
    joiner.kafka = args.kafka.clone();
    joiner.state_dir = state_dir.join("joiner");
    services.spawn(
        "joiner",
        driftline_joiner::service::run(joiner, shutdown.clone(), Health::default()),
    );
    // Alerts only when a webhook is set (DRIFTLINE_WEBHOOKS, DRIFTLINE_SLACK_WEBHOOKS).
    let (mut alerts, _) = service_settings::<AlertsArgs>()?;
    if alerts.any_target() {
        alerts.kafka = args.kafka.clone();
        alerts.state_dir = state_dir.join("alerts");
        services.spawn(
            "alerts",
            driftline_alerts::service::run(alerts, shutdown.clone(), Health::default()),
        );
    }
    // The trainer and monitor take their defaults from their own flag definitions, except
    // three that suit a replay of seasonal data: decide only on a full window (10k events,
    // about ten days of flights), train on at least that many rows, and wait about a month
    // of new events between retrain requests (weather always differs from a few days ago;
    // what matters is the season). Environment variables still override them.
    let (mut trainer, set) = service_settings::<TrainerArgs>()?;
    trainer.kafka = args.kafka.clone();
    trainer.specs = vec![spec_path.clone()];
    trainer.state_dir = state_dir.join("trainer");
    trainer.bootstrap_until = Some(args.from.clone());
    trainer.trust = trust.clone();
    trainer.signing = signing;
    if !set.contains("min_rows") {
        trainer.min_rows = UP_MIN_ROWS;
    }
    services.spawn(
        "trainer",
        driftline_trainer::service::run(trainer, shutdown.clone(), Health::default()),
    );
    let (mut monitor, set) = service_settings::<MonitorArgs>()?;
    monitor.kafka = args.kafka.clone();
    monitor.state_dir = state_dir.join("monitor");
    monitor.trust = trust.clone();
    if !set.contains("min_samples") {
        monitor.policy.min_samples = UP_MIN_SAMPLES;
    }
    if !set.contains("cooldown") {
        monitor.policy.cooldown = Some(UP_COOLDOWN);
    }
    if !set.contains("share") && !set.contains("release_share") {
        (monitor.policy.share, monitor.policy.release_share) = UP_SHARE;
    }
    let monitor_thresholds = (
        (monitor.policy.thresholds == driftline_monitor::cli::Thresholds::Fixed)
            .then_some(monitor.policy.numeric_threshold),
        driftline_drift::policy::defaults::PSI,
    );
    let monitor_min_samples = monitor.policy.min_samples;
    services.spawn(
        "monitor",
        driftline_monitor::service::run(monitor, shutdown.clone(), Health::default()),
    );

    let seen = Arc::new(Mutex::new(Seen {
        min_samples: monitor_min_samples,
        ..Seen::default()
    }));
    let mut history = crate::dashboard::History::default();
    history.set_thresholds(monitor_thresholds.0, monitor_thresholds.1);
    let history = Arc::new(Mutex::new(history));
    tokio::spawn(watch::follow(
        args.kafka.clone(),
        signing::Trust::load(&trust)?,
        seen.clone(),
        history.clone(),
        shutdown.clone(),
    ));
    let app = crate::dashboard::router(history);
    driftline_process::http::serve(
        "dashboard",
        args.dashboard_addr,
        app,
        Default::default(),
        &shutdown,
    )
    .await?;
    eprintln!("[up] dashboard on http://{}/", args.dashboard_addr);
    tokio::spawn(watch::print_every(
        seen.clone(),
        Duration::from_secs(args.summary_every),
        shutdown.clone(),
    ));

    eprintln!(
        "[up] waiting for a model in production (the trainer bootstraps one from data before {})",
        args.from
    );
    tokio::select! {
        _ = predictor_health.wait() => {}
        _ = shutdown.cancelled() => {}
    }
    if !shutdown.is_cancelled() {
        eprintln!(
            "[up] model ready; HTTP API on http://{}/v2 (try POST /predict)",
            args.http_addr
        );
    }

    if !args.no_replay && !shutdown.is_cancelled() {
        let position = state_dir.join("up-replay-position");
        let resume = read_position(&position, from);
        let start = resume.map_or(from, |r| r.window_from(args.label_delay).max(from));
        if let Some(r) = resume {
            eprintln!(
                "[up] resuming the replay after {} (requests) and {} (ground truth)",
                format_time(r.requests.time),
                format_time(r.actuals.time)
            );
        }
        let mut opts = ReplayOptions::new(spec.clone(), &data);
        opts.window = TimeRange {
            from: Some(start),
            to: None,
        };
        opts.resume = resume;
        // Saved as deliveries are acknowledged too, so a kill -9 resends seconds, not all.
        let saved_at = position.clone();
        opts.checkpoint = Some(Checkpoint {
            every: Duration::from_secs(2),
            save: Arc::new(move |r: &Resume| write_position(&saved_at, r)),
        });
        opts.pace = Pace::Speedup(args.speedup);
        opts.label_delay = args.label_delay;
        let mut sink = KafkaSink::new(&args.kafka, topics::REQUESTS, topics::ACTUALS).await?;
        let summary = replay(&opts, &mut sink, &Progress::hidden(), &shutdown).await?;
        // Next time, continue exactly where this one stopped: the rows not yet sent and
        // the ground truth still owed for the rows that were.
        if summary.resume != Resume::default() {
            write_position(&position, &summary.resume)?;
        }
        eprintln!("[up] replay: {summary}");
        if matches!(summary.outcome, Outcome::Completed) && !args.keep_running {
            settle(&args.kafka, PREDICTOR_GROUP, &seen, &shutdown).await;
            shutdown.cancel();
        }
    }
    if (args.keep_running || args.no_replay) && !shutdown.is_cancelled() {
        eprintln!("[up] services running; Ctrl-C to stop");
    }
    shutdown.cancelled().await;
    let failed = services.stop(Duration::from_secs(15)).await;
    let s = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    eprintln!("[up] done: {}", s.line(0.0));
    for line in s.timeline() {
        eprintln!("[up]   {line}");
    }
    broker.leave(args.keep_broker);
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The id of the cluster at `kafka`. Formatting a broker's storage gives it a fresh one
/// (infra/kafka/node.sh), so a new id means new data.
async fn cluster_id(kafka: &KafkaArgs) -> Result<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let config = kafka.client_config();
    let servers = kafka.bootstrap_servers.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        consumer
            .client()
            .fetch_cluster_id(Duration::from_secs(30))
            .with_context(|| format!("the broker at {servers} did not say its cluster id"))
    })
    .await?
}

/// What [`claim_state`] found.
#[derive(Debug, PartialEq)]
enum Claim {
    /// The state is this cluster's (or new: now it is).
    Ours,
    /// The state was another cluster's: moved from `from` to `to`, a fresh one in its place.
    MovedAside {
        from: PathBuf,
        to: PathBuf,
        was: String,
    },
}

/// Claims `state_dir` for `cluster`: its `cluster-id` file names the cluster whose data
/// the state (services' stores, replay position) was written against. State of another
/// cluster is moved to a sibling named after it, never deleted; state from before the
/// file existed is taken as this cluster's.
fn claim_state(state_dir: &Path, cluster: &str) -> Result<Claim> {
    let file = state_dir.join("cluster-id");
    let written = std::fs::read_to_string(&file).ok();
    let claim = match written.as_deref().map(str::trim) {
        Some(was) if was != cluster => {
            let name = state_dir.file_name().unwrap_or_default().to_string_lossy();
            let to = state_dir.with_file_name(format!("{name}.cluster-{was}"));
            if to.exists() {
                bail!(
                    "{} holds the state of cluster {was}, not of this broker ({cluster}), and {} is taken: move one of them",
                    state_dir.display(),
                    to.display()
                );
            }
            std::fs::rename(state_dir, &to)
                .with_context(|| format!("moving {} aside", state_dir.display()))?;
            std::fs::create_dir_all(state_dir)
                .with_context(|| format!("creating {}", state_dir.display()))?;
            Claim::MovedAside {
                from: state_dir.to_path_buf(),
                to,
                was: was.to_string(),
            }
        }
        _ => Claim::Ours,
    };
    std::fs::write(&file, cluster).with_context(|| format!("writing {}", file.display()))?;
    Ok(claim)
}

/// Where the last `up` stopped its replay. A position file from before ground truth was
/// tracked holds one event time: everything before it was sent.
fn read_position(path: &Path, from: i64) -> Option<Resume> {
    let text = std::fs::read_to_string(path).ok()?;
    Resume::from_text(&text).or_else(|| {
        let time = text.trim().parse::<i64>().ok()?.max(from);
        let cursor = Cursor { time, count: 0 };
        Some(Resume {
            requests: cursor,
            actuals: cursor,
        })
    })
}

/// Replaces the position file whole (a kill -9 mid-write leaves the old one).
fn write_position(path: &Path, resume: &Resume) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, resume.to_text())?;
    std::fs::rename(&tmp, path)
}

/// The key the trainer signs with and the keys the services trust: those the environment
/// names, else a pair made in --keys-dir on the first start. A signing key given without
/// trusted keys is trusted (its public half is written beside the pair).
fn model_keys(args: &UpArgs) -> Result<(SigningArgs, TrustArgs)> {
    let (mut signing, _) = service_settings::<SigningArgs>()?;
    let (mut trust, _) = service_settings::<TrustArgs>()?;
    let dir = args
        .keys_dir
        .clone()
        .unwrap_or_else(|| cache_dir().join("keys"));
    let (signer, public) = match signing.signer()? {
        Some(given) => {
            std::fs::create_dir_all(&dir)?;
            let public = dir.join(format!("{}.pub.pem", given.id()));
            std::fs::write(&public, given.public_pem()?)?;
            (given, public)
        }
        None => {
            let (signer, private, public) = signing::key_pair_in(&dir)?;
            signing.signing_key = Some(private.to_string_lossy().into_owned());
            eprintln!("[up] model versions are signed with {}", private.display());
            (signer, public)
        }
    };
    if trust.trusted_keys.is_empty() {
        trust.trusted_keys.push(public);
    }
    eprintln!(
        "[up] the trainer signs with key {}; the services apply versions signed by {}",
        signer.id(),
        trust
            .trusted_keys
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok((signing, trust))
}

/// A service's settings from its own flag definitions, with no command line: their
/// defaults and environment variables. Also returns the ids of the settings the
/// environment gave, which `up` leaves alone.
fn service_settings<A: clap::Args + clap::FromArgMatches>()
-> Result<(A, std::collections::HashSet<String>)> {
    let command = A::augment_args(clap::Command::new("driftline").no_binary_name(true))
        // `up` sets the required ones (the spec) itself.
        .mut_args(|a| a.required(false));
    let matches = command.try_get_matches_from(std::iter::empty::<String>())?;
    let set = matches
        .ids()
        .filter(|id| {
            matches.value_source(id.as_str()) == Some(clap::parser::ValueSource::EnvVariable)
        })
        .map(|id| id.to_string())
        .collect();
    Ok((A::from_arg_matches(&matches)?, set))
}

/// The services `up` runs in this process. The first to end before shutdown was asked
/// for (an error, say) stops the rest, and `up` then fails.
struct Services {
    tasks: JoinSet<(&'static str, Result<()>)>,
    shutdown: CancellationToken,
}

impl Services {
    fn new(shutdown: CancellationToken) -> Self {
        Self {
            tasks: JoinSet::new(),
            shutdown,
        }
    }

    fn spawn<E: Into<anyhow::Error>>(
        &mut self,
        name: &'static str,
        service: impl std::future::Future<Output = std::result::Result<(), E>> + Send + 'static,
    ) {
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            let result = service.await.map_err(Into::into);
            let result = match result {
                Ok(()) if !shutdown.is_cancelled() => Err(anyhow::anyhow!("stopped on its own")),
                r => r,
            };
            if let Err(e) = &result
                && !shutdown.is_cancelled()
            {
                eprintln!("[up] the {name} failed: {e:#}; stopping everything");
                shutdown.cancel();
            }
            (name, result)
        });
    }

    /// Waits up to `patience` for every service to stop (then aborts the rest); returns the
    /// first failure.
    async fn stop(mut self, patience: Duration) -> Option<anyhow::Error> {
        let mut failed = None;
        let deadline = tokio::time::sleep(patience);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => {
                    warn!("services did not stop in {} s; aborting them", patience.as_secs());
                    self.tasks.abort_all();
                    break;
                }
                next = self.tasks.join_next() => match next {
                    None => break,
                    Some(Ok((name, Err(e)))) => {
                        warn!(service = name, error = %e, "a service stopped with an error");
                        failed.get_or_insert(e.context(format!("the {name} failed")));
                    }
                    Some(_) => {}
                },
            }
        }
        failed
    }
}

/// What `up` changes from the trainer's and monitor's defaults (see `run`).
const UP_MIN_ROWS: usize = 10_000;
const UP_MIN_SAMPLES: u64 = 10_000;
const UP_COOLDOWN: u64 = 30_000;
/// The share of drifted features that makes the model drift, and its release. With the
/// calibrated lines half of the flights features drift together only once in the
/// April-December replay (docs/DETECTION.md); a quarter shows the loop at work.
const UP_SHARE: (f64, f64) = (0.25, 0.2);

/// The consumer group of the predictor `up` runs.
const PREDICTOR_GROUP: &str = "driftline-predictor";

/// How long the predictor may make no progress on its backlog before `up` stops anyway.
const SETTLE_PATIENCE: Duration = Duration::from_secs(60);

/// Waits until the predictor has answered every request on the bus (its group's committed
/// offsets reach the end of the requests topic), then until the watcher has counted the
/// last predictions. A predictor that makes no progress for a minute (the broker gone, say)
/// is reported and left, not waited for.
async fn settle(
    kafka: &KafkaArgs,
    group: &str,
    seen: &Arc<Mutex<Seen>>,
    shutdown: &CancellationToken,
) {
    let mut fewest = i64::MAX;
    let mut progress_at = tokio::time::Instant::now();
    let mut warned = false;
    loop {
        let (k, g) = (kafka.clone(), group.to_string());
        match tokio::task::spawn_blocking(move || requests_unanswered(&k, &g)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) if n < fewest => {
                fewest = n;
                progress_at = tokio::time::Instant::now();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) if !warned => {
                warned = true;
                warn!(error = %e, "cannot read the predictor's progress; trying again");
            }
            Ok(Err(_)) => {}
            Err(e) => warn!(error = %e, "the progress check failed"),
        }
        if progress_at.elapsed() >= SETTLE_PATIENCE {
            let owed = match fewest {
                i64::MAX => "an unknown number of".to_string(),
                n => n.to_string(),
            };
            eprintln!(
                "[up] the predictor still owes {owed} predictions and made no progress in {} s; stopping without them",
                SETTLE_PATIENCE.as_secs()
            );
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    // Every prediction is on the bus; the watcher reads them a moment later.
    let mut last = u64::MAX;
    for _ in 0..20 {
        let now = seen.lock().unwrap_or_else(|e| e.into_inner()).predictions;
        if now == last {
            return;
        }
        last = now;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3)) => {}
        }
    }
}

/// Requests on the bus the predictor's group has not committed past, over every partition
/// of the requests topic. The group commits after a batch's predictions are acknowledged.
fn requests_unanswered(kafka: &KafkaArgs, group: &str) -> Result<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let timeout = Duration::from_secs(5);
    // Not subscribed: it only asks for the group's offsets and never joins it.
    let consumer: BaseConsumer = kafka.consumer_config(group).create()?;
    let metadata = consumer.fetch_metadata(Some(topics::REQUESTS), timeout)?;
    let mut tpl = TopicPartitionList::new();
    for topic in metadata.topics() {
        for p in topic.partitions() {
            tpl.add_partition(topics::REQUESTS, p.id());
        }
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut owed = 0;
    for e in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(topics::REQUESTS, e.partition(), timeout)?;
        let answered = match e.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        owed += (high - answered).max(0);
    }
    Ok(owed)
}

/// The broker `up` runs against, and so what it leaves behind.
enum Broker {
    /// `--no-broker`: someone else's.
    External,
    /// The embedded broker was running before `up`.
    WasRunning,
    /// `up` started the embedded broker.
    Started,
}

impl Broker {
    /// Stops the broker if `up` started it (unless kept), and says what is left running.
    fn leave(&self, keep: bool) {
        let dir = broker_dir().display().to_string();
        match self {
            Broker::External => {}
            Broker::Started if !keep => match broker_script("stop") {
                Ok(true) => {
                    eprintln!("[up] stopped the broker it started (its data stays in {dir})")
                }
                Ok(false) => eprintln!("[up] infra/broker.sh stop failed; see {dir}/broker.log"),
                Err(e) => eprintln!("[up] could not stop the broker: {e:#}"),
            },
            Broker::Started | Broker::WasRunning => eprintln!(
                "[up] the embedded broker is still running (data in {dir}); stop it with `bash infra/broker.sh stop`"
            ),
        }
    }
}

/// Starts the embedded broker through infra/broker.sh unless it is running.
fn start_broker() -> Result<Broker> {
    if broker_script("status")? {
        return Ok(Broker::WasRunning);
    }
    if !broker_script("start")? {
        bail!("infra/broker.sh start failed; run infra/setup.sh first");
    }
    Ok(Broker::Started)
}

/// Runs infra/broker.sh with one command; whether it succeeded.
fn broker_script(command: &str) -> Result<bool> {
    let script: PathBuf = crate::infra_dir().join("broker.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg(command)
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {} {command}", script.display()))?;
    Ok(status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_of_another_cluster_is_moved_aside_and_the_directory_claimed_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("up-replay-position"), "1388534400000").unwrap();
        // State from before the cluster was recorded: taken as this cluster's.
        assert_eq!(claim_state(&state, "abc").unwrap(), Claim::Ours);
        assert_eq!(claim_state(&state, "abc").unwrap(), Claim::Ours);
        assert!(state.join("up-replay-position").exists());
        // The broker's data was made anew: the old state goes aside, whole.
        let claim = claim_state(&state, "xyz").unwrap();
        let aside = dir.path().join("state.cluster-abc");
        assert_eq!(
            claim,
            Claim::MovedAside {
                from: state.clone(),
                to: aside.clone(),
                was: "abc".into()
            }
        );
        assert!(aside.join("up-replay-position").exists());
        assert!(!state.join("up-replay-position").exists());
        assert_eq!(
            std::fs::read_to_string(state.join("cluster-id")).unwrap(),
            "xyz"
        );
        // State of cluster abc again, its aside name taken: a clear error, nothing moved.
        std::fs::write(state.join("cluster-id"), "abc").unwrap();
        std::fs::write(state.join("marker"), "").unwrap();
        let e = claim_state(&state, "xyz").unwrap_err().to_string();
        assert!(e.contains("is taken"), "{e}");
        assert!(state.join("marker").exists());
    }
}
