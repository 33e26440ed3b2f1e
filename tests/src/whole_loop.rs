//! The whole loop as separate processes on a broker of its own: the predictor, joiner,
//! monitor and trainer, each a `driftline <service>` under a small supervisor that restarts
//! it when it exits, one instance each or more. The fault suite kills them; the soak watches
//! them; the scale suite adds and removes instances.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use driftline_kafka::KafkaArgs;
use driftline_schemas::topics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::process::{Child, Command};

use crate::{OwnBroker, free_port, http};

pub const SERVICES: [&str; 4] = ["predictor", "joiner", "monitor", "trainer"];

/// The groups the services consume in, and what each reads.
pub const GROUPS: [(&str, &[&str]); 4] = [
    ("driftline-predictor", &[topics::REQUESTS]),
    ("driftline-joiner", &[topics::PREDICTIONS, topics::ACTUALS]),
    (
        "driftline-monitor",
        &[topics::PREDICTIONS, topics::LABELLED],
    ),
    ("driftline-trainer", &[topics::LABELLED, topics::RETRAIN]),
];

/// The repository's root (for `infra/topics.toml` and the data).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `driftline` and `send_data` binaries beside the running one; `script` is what
/// builds them, named in the error when they are missing.
pub fn binaries(script: &str) -> Result<(PathBuf, PathBuf)> {
    let dir = std::env::current_exe()?
        .parent()
        .context("no directory of the executable")?
        .to_path_buf();
    let (bin, send_data) = (dir.join("driftline"), dir.join("send_data"));
    for b in [&bin, &send_data] {
        if !b.exists() {
            bail!(
                "{} is not built; run `cargo build --bin driftline --bin send_data` ({script} does)",
                b.display()
            );
        }
    }
    Ok((bin, send_data))
}

/// A broker of its own under `work`, started; `tag` prefixes what it says.
pub fn start_broker(work: &Path, tag: &str) -> Result<(OwnBroker, KafkaArgs)> {
    let broker = OwnBroker::new(work)?;
    broker.start()?;
    let kafka = broker.kafka();
    eprintln!(
        "[{tag}] broker on {}; work in {}",
        kafka.bootstrap_servers,
        work.display()
    );
    Ok((broker, kafka))
}

/// One service process, restarted by the supervisor when it exits.
pub struct Proc {
    pub name: &'static str,
    /// 0 for a service's first instance, then 1, 2, ...
    pub instance: usize,
    /// Stopped for good ([`Loop::leave`]): the supervisor leaves it alone.
    pub left: bool,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    /// Its state directory.
    pub state: PathBuf,
    child: Option<Child>,
    /// Exits nobody asked for, with the last line each wrote.
    pub exits: Vec<String>,
    started: Instant,
    backoff: Duration,
}

impl Proc {
    async fn spawn(&mut self, bin: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(bin)
            .arg(self.name)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} {}", bin.display(), self.name))?;
        self.child = Some(child);
        self.started = Instant::now();
        Ok(())
    }

    async fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.start_kill()?;
            c.wait().await?;
        }
        Ok(())
    }

    /// `monitor`, then `monitor-1`, `monitor-2`, ...: its log's and state's name.
    pub fn label(&self) -> String {
        match self.instance {
            0 => self.name.to_string(),
            i => format!("{}-{i}", self.name),
        }
    }

    /// SIGTERM (a graceful stop, as an orchestrator would), kill after 20 s.
    async fn stop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Some(pid) = c.id() {
                let _ = std::process::Command::new("kill")
                    .arg(pid.to_string())
                    .status();
            }
            let _ = tokio::time::timeout(Duration::from_secs(20), c.wait()).await;
        }
        let _ = self.kill().await;
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Restarts the process if it exited on its own: at once the first time, then with a
    /// doubling wait (up to 10 s) while it keeps exiting within 30 s of its start.
    async fn supervise(&mut self, bin: &Path) -> Result<()> {
        if self.left {
            return Ok(());
        }
        let Some(child) = self.child.as_mut() else {
            return self.spawn(bin).await;
        };
        let Some(status) = child.try_wait()? else {
            return Ok(());
        };
        let last = last_line(&self.log);
        eprintln!("[loop] the {} exited ({status}): {last}", self.label());
        self.exits.push(format!("{status}: {last}"));
        self.backoff = if self.started.elapsed() < Duration::from_secs(30) {
            (self.backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(10))
        } else {
            Duration::from_secs(1)
        };
        self.child = None;
        tokio::time::sleep(self.backoff).await;
        self.spawn(bin).await
    }
}

/// The last non-empty line of a file (a log), at most 300 characters.
pub fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
}

/// The loop's processes.
pub struct Loop {
    bin: PathBuf,
    pub procs: Vec<Proc>,
    /// The predictor's HTTP address.
    pub predictor: SocketAddr,
}

impl Loop {
    /// The four services of `bin` (the `driftline` binary) on `kafka`, each with its state
    /// and log under `work`, serving the models of `specs`; the trainer bootstraps from the
    /// data before `bootstrap_until`.
    /// The trainer signs the versions it publishes with a key made under `work`, and the
    /// others trust only that key, as `driftline up` runs them. Nothing runs until the
    /// first [`Loop::supervise`].
    pub fn new(
        bin: PathBuf,
        work: &Path,
        kafka: &KafkaArgs,
        specs: &[PathBuf],
        bootstrap_until: &str,
    ) -> Result<Self> {
        let specs: Vec<String> = specs.iter().map(|s| s.display().to_string()).collect();
        let port = |var: &str| -> Result<(String, String)> {
            Ok((var.to_string(), format!("127.0.0.1:{}", free_port()?)))
        };
        let predictor_http = port("DRIFTLINE_HTTP_ADDR")?;
        let predictor = predictor_http.1.parse()?;
        let (_, private_key, public_key) =
            driftline_runtime::signing::key_pair_in(&work.join("keys"))?;
        let own = [
            vec![predictor_http],
            vec![port("DRIFTLINE_JOINER_HTTP_ADDR")?],
            vec![port("DRIFTLINE_MONITOR_HTTP_ADDR")?],
            vec![
                port("DRIFTLINE_TRAINER_HTTP_ADDR")?,
                ("DRIFTLINE_BOOTSTRAP_UNTIL".into(), bootstrap_until.into()),
                (
                    "DRIFTLINE_SIGNING_KEY".into(),
                    private_key.display().to_string(),
                ),
            ],
        ];
        let procs = SERVICES
            .iter()
            .zip(own)
            .map(|(name, own)| {
                let state = work.join(name);
                let common = [
                    (
                        "DRIFTLINE_BOOTSTRAP_SERVERS".to_string(),
                        kafka.bootstrap_servers.clone(),
                    ),
                    ("DRIFTLINE_SPEC".into(), specs.join(",")),
                    (
                        format!("DRIFTLINE_{}_STATE", name.to_uppercase()),
                        state.display().to_string(),
                    ),
                    // Restarted during an outage, a service waits for the broker this long.
                    ("DRIFTLINE_CONNECT_TIMEOUT_MS".into(), "120000".into()),
                    (
                        "DRIFTLINE_TRUSTED_KEYS".into(),
                        public_key.display().to_string(),
                    ),
                ];
                Proc {
                    name,
                    instance: 0,
                    left: false,
                    env: [common.to_vec(), own].concat(),
                    log: work.join(format!("{name}.log")),
                    state,
                    child: None,
                    exits: Vec::new(),
                    started: Instant::now(),
                    backoff: Duration::from_secs(1),
                }
            })
            .collect();
        Ok(Self {
            bin,
            procs,
            predictor,
        })
    }

    /// Starts what is not running, restarts what exited.
    pub async fn supervise(&mut self) -> Result<()> {
        for p in &mut self.procs {
            p.supervise(&self.bin).await?;
        }
        Ok(())
    }

    /// Supervises until the predictor is ready (it has a model), or fails after `within`.
    pub async fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok((200, _)) = http(self.predictor, "GET", "/v2/health/ready", None).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the predictor was not ready within {within:?}");
            }
            self.supervise().await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Supervises until `until`.
    pub async fn supervise_until(&mut self, until: Instant) -> Result<()> {
        while Instant::now() < until {
            self.supervise().await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Supervises until `replay` exits; an error when it failed, with the last line of its
    /// log.
    pub async fn finish(&mut self, replay: &mut Replay) -> Result<()> {
        loop {
            if let Some(status) = replay.child.try_wait()? {
                if !status.success() {
                    bail!("send_data failed ({status}): {}", last_line(&replay.log));
                }
                return Ok(());
            }
            self.supervise().await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Supervises until every group has read everything, or `within` has passed; returns
    /// the groups still behind then ("<group> behind by <n>"), none when all caught up.
    pub async fn drain(&mut self, kafka: &KafkaArgs, within: Duration) -> Result<Vec<String>> {
        let started = Instant::now();
        loop {
            self.supervise().await?;
            let lags = lags(kafka).await?;
            if lags.values().all(|l| *l == 0) {
                return Ok(Vec::new());
            }
            if started.elapsed() > within {
                return Ok(lags
                    .into_iter()
                    .filter(|(_, l)| *l > 0)
                    .map(|(g, l)| format!("{g} behind by {l}"))
                    .collect());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// kill -9 of process `i`, started again at once.
    pub async fn kill_and_restart(&mut self, i: usize) -> Result<()> {
        let p = &mut self.procs[i];
        p.kill().await?;
        p.spawn(&self.bin).await
    }

    /// One more instance of `service`, in the same consumer group, with a state directory,
    /// log and HTTP port of its own; it starts at the next [`Loop::supervise`]. Returns its
    /// place in `procs`.
    pub fn add(&mut self, service: &str) -> Result<usize> {
        let first = self
            .procs
            .iter()
            .find(|p| p.name == service)
            .with_context(|| format!("no {service} in the loop"))?;
        let instance = self.procs.iter().filter(|p| p.name == service).count();
        let (dir, name) = (
            first.state.parent().context("state has no parent")?,
            first.name,
        );
        let mut p = Proc {
            name,
            instance,
            left: false,
            env: Vec::new(),
            log: PathBuf::new(),
            state: PathBuf::new(),
            child: None,
            exits: Vec::new(),
            started: Instant::now(),
            backoff: Duration::from_secs(1),
        };
        p.state = dir.join(p.label());
        p.log = dir.join(format!("{}.log", p.label()));
        p.env = first
            .env
            .iter()
            .map(|(k, v)| {
                let v = if k.ends_with("_HTTP_ADDR") {
                    format!("127.0.0.1:{}", free_port()?)
                } else if *v == first.state.display().to_string() {
                    p.state.display().to_string()
                } else {
                    v.clone()
                };
                Ok((k.clone(), v))
            })
            .collect::<Result<_>>()?;
        self.procs.push(p);
        Ok(self.procs.len() - 1)
    }

    /// Process `i` leaves its group for good: stopped gracefully, never restarted.
    pub async fn leave(&mut self, i: usize) {
        let p = &mut self.procs[i];
        p.left = true;
        p.stop().await;
    }

    /// Stops each gracefully ([`Proc::stop`]).
    pub async fn stop(&mut self) {
        for p in &mut self.procs {
            p.stop().await;
        }
    }
}

/// A running send_data and the file its output goes to.
pub struct Replay {
    child: Child,
    log: PathBuf,
}

/// `send_data` replaying `rows` rows of `spec` from `from` at `rate` rows/s, each actual an
/// hour of event time after its request. Its producer waits through a broker's loss
/// (message.timeout.ms=0: it never gives a message up); what it says goes to `log`.
pub fn replay(
    send_data: &Path,
    spec: &Path,
    from: &str,
    rows: u64,
    rate: f64,
    kafka: &KafkaArgs,
    log: &Path,
) -> Result<Replay> {
    let child = Command::new(send_data)
        .args(["--spec", &spec.display().to_string()])
        .args(["--from", from])
        .args(["--rows", &rows.to_string()])
        .args(["--rate", &format!("{rate}")])
        .args(["--label-delay", "1h"])
        .env("DRIFTLINE_BOOTSTRAP_SERVERS", &kafka.bootstrap_servers)
        .env("DRIFTLINE_KAFKA_OPTIONS", "message.timeout.ms=0")
        .env("DRIFTLINE_CONNECT_TIMEOUT_MS", "120000")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log)?))
        .kill_on_drop(true)
        .spawn()?;
    Ok(Replay {
        child,
        log: log.to_path_buf(),
    })
}

/// Messages each group has yet to read, by group.
pub async fn lags(kafka: &KafkaArgs) -> Result<BTreeMap<String, i64>> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = BTreeMap::new();
        for (group, topics) in GROUPS {
            let consumer: BaseConsumer = kafka.consumer_config(group).create()?;
            let mut tpl = TopicPartitionList::new();
            let mut highs = HashMap::new();
            for topic in topics {
                let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
                for t in metadata.topics() {
                    for p in t.partitions() {
                        tpl.add_partition(topic, p.id());
                        let (_, high) =
                            consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
                        highs.insert((topic.to_string(), p.id()), high);
                    }
                }
            }
            let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
            let mut lag = 0;
            for e in committed.elements() {
                let at = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                };
                let high = highs
                    .get(&(e.topic().to_string(), e.partition()))
                    .copied()
                    .unwrap_or(0);
                lag += (high - at).max(0);
            }
            out.insert(group.to_string(), lag);
        }
        Ok(out)
    })
    .await?
}
