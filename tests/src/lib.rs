//! Helpers for driftline's end-to-end tests, and the checksum the counter keeps.
//!
//! The tests talk to the real broker the test command starts (`DRIFTLINE_BOOTSTRAP_SERVERS`,
//! default 127.0.0.1:9092). Each test makes its own random topic names and group ids, so
//! tests never see each other's data.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use driftline_kafka::KafkaArgs;
use driftline_kafka::topics::{TopicDef, TopicSpec, apply};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

pub mod cluster;
pub mod whole_loop;

/// What became of a stage's ids between its input and its output, each id with how often
/// it was seen there.
#[derive(Debug, Default, PartialEq)]
pub struct Flow {
    /// In the input, never in the output.
    pub lost: u64,
    /// In the output, never in the input.
    pub stray: u64,
    /// Records past the first of each id, in the input and in the output.
    pub copies_in: u64,
    pub copies_out: u64,
}

impl Flow {
    pub fn of(
        input: &std::collections::HashMap<String, u32>,
        output: &std::collections::HashMap<String, u32>,
    ) -> Self {
        let missing = |from: &std::collections::HashMap<String, u32>,
                       to: &std::collections::HashMap<String, u32>| {
            from.keys().filter(|id| !to.contains_key(*id)).count() as u64
        };
        let copies = |m: &std::collections::HashMap<String, u32>| {
            m.values().map(|n| u64::from(n.saturating_sub(1))).sum()
        };
        Self {
            lost: missing(input, output),
            stray: missing(output, input),
            copies_in: copies(input),
            copies_out: copies(output),
        }
    }
}

/// An order-independent checksum that a duplicate or a loss changes: the wrapping sums of
/// the FNV-1a hash of each id and of its square.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checksum {
    pub count: u64,
    pub sum: u64,
    pub sum_sq: u64,
}

impl Checksum {
    pub fn add(&mut self, id: &[u8]) {
        let h = fnv1a(id);
        self.count += 1;
        self.sum = self.sum.wrapping_add(h);
        self.sum_sq = self.sum_sq.wrapping_add(h.wrapping_mul(h));
    }

    /// The checksum of both sets of ids.
    pub fn merge(&mut self, other: Checksum) {
        self.count += other.count;
        self.sum = self.sum.wrapping_add(other.sum);
        self.sum_sq = self.sum_sq.wrapping_add(other.sum_sq);
    }

    pub fn to_bytes(self) -> Vec<u8> {
        [self.count, self.sum, self.sum_sq]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect()
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != 24 {
            return None;
        }
        let n = |i: usize| u64::from_be_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        Some(Self {
            count: n(0),
            sum: n(1),
            sum_sq: n(2),
        })
    }
}

/// How a whole-loop suite ends: a line when every event is accounted for, else an error
/// naming what failed and where the services' logs are.
pub fn verdict(suite: &str, failures: &[String], work: &std::path::Path) -> Result<()> {
    if failures.is_empty() {
        eprintln!("[{suite}] all accounted for");
        Ok(())
    } else {
        bail!(
            "{}; logs in {} (use --work-dir to keep them)",
            failures.join("; "),
            work.display()
        )
    }
}

pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The key under which the counter keeps the checksum of one input partition: state is
/// kept per partition, so that each partition's moves to its changelog partition.
pub fn checksum_key(partition: i32) -> Vec<u8> {
    format!("checksum/{partition}").into_bytes()
}

/// The counter's checksums of every partition, combined, as its store holds them.
pub fn stored_checksum(state: &std::path::Path) -> Result<Checksum> {
    let store = driftline_runtime::Store::open_read_only(state)?;
    let mut total = Checksum::default();
    for (_, bytes) in store.scan_prefix(b"checksum/")? {
        total.merge(Checksum::from_bytes(&bytes).context("bad checksum bytes")?);
    }
    Ok(total)
}

pub fn kafka() -> KafkaArgs {
    let bootstrap =
        std::env::var("DRIFTLINE_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    KafkaArgs::with_bootstrap(bootstrap)
}

/// A fresh name: `prefix-<random>`.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates the topics (partitions given) on the test broker.
pub async fn create_topics(topics: &[(&str, i32)]) -> Result<()> {
    let spec = TopicSpec {
        topics: topics
            .iter()
            .map(|(name, partitions)| TopicDef {
                name: name.to_string(),
                partitions: *partitions,
                replication: driftline_kafka::topics::BROKER_DEFAULT_REPLICATION,
                config: Default::default(),
            })
            .collect(),
    };
    apply(&kafka(), &spec)
        .await
        .context("creating test topics (is the broker running? use the README's test command)")?;
    Ok(())
}

pub fn producer() -> Result<FutureProducer> {
    Ok(kafka().producer_config().create()?)
}

pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
) -> Result<()> {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("produce to {topic}: {e}"))?;
    Ok(())
}

/// A consumer assigned every partition of `topic` from its first message: no group join
/// to wait for.
pub fn reader_from_start(topic: &str) -> Result<BaseConsumer> {
    reader_on(&kafka(), topic)
}

/// [`reader_from_start`] on a cluster of its own (e.g. with security settings).
pub fn reader_on(kafka: &KafkaArgs, topic: &str) -> Result<BaseConsumer> {
    let consumer: BaseConsumer = kafka.consumer_config(&unique("reader")).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .context("topic has no metadata")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// Reads every message of a topic (all partitions, from the start) until `expected` have
/// arrived or `timeout` passes. Assigns partitions directly: no group join to wait for.
pub fn read_all(topic: &str, expected: usize, timeout: Duration) -> Result<Vec<OwnedMessage>> {
    read_all_on(&kafka(), topic, expected, timeout)
}

/// [`read_all`] on a cluster of its own.
pub fn read_all_on(
    kafka: &KafkaArgs,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Result<Vec<OwnedMessage>> {
    let consumer = reader_on(kafka, topic)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < expected {
        if std::time::Instant::now() > deadline {
            bail!(
                "read {} of {expected} messages from {topic} before the timeout",
                out.len()
            );
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(e)) => bail!("consume {topic}: {e}"),
            None => {}
        }
    }
    // Anything beyond `expected` is a duplicate or a stray: give it a moment to show up.
    let settle = std::time::Instant::now() + Duration::from_millis(500);
    while std::time::Instant::now() < settle {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.detach());
        }
    }
    Ok(out)
}

/// Calls `f` with every message of `topic`, from the start to the end of every partition,
/// as a read_committed reader sees them. Reads until each partition reports its end: with
/// transactions, offsets also count commit markers and aborted records, which are never
/// handed out, so a count of offsets is not a count of messages.
pub fn read_committed(
    kafka: &KafkaArgs,
    topic: &str,
    mut f: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<()> {
    use driftline_runtime::read::{from_beginning, read_to_end};
    let mut config = kafka.consumer_config(&unique("reader"));
    config.set("enable.partition.eof", "true");
    let consumer: BaseConsumer = config.create()?;
    let starts = from_beginning(&consumer, topic)?;
    read_to_end(
        &consumer,
        topic,
        &starts,
        Some(Duration::from_secs(30)),
        |m| {
            if let Some(m) = m {
                f(m);
            }
            Ok(())
        },
    )?;
    Ok(())
}

pub fn payload(m: &OwnedMessage) -> &[u8] {
    m.payload().unwrap_or_default()
}

/// One example of every event type, with optional fields both set and unset, so a round
/// trip exercises every branch of every schema.
pub mod samples {
    use driftline_schemas::events::*;

    pub fn request() -> PredictionRequest {
        PredictionRequest {
            request_id: "req-1".into(),
            model: "flights".into(),
            event_time: 1_357_016_400_000,
            features: [
                ("dep_delay".to_string(), FeatureValue::Number(-3.5)),
                ("carrier".to_string(), FeatureValue::Category("UA".into())),
                ("wind_gust".to_string(), FeatureValue::Missing),
            ]
            .into(),
        }
    }

    pub fn prediction() -> PredictionLogged {
        PredictionLogged {
            request_id: "req-1".into(),
            model: "flights".into(),
            model_version: 3,
            event_time: 1_357_016_400_000,
            features: request().features,
            prediction: Prediction {
                value: None,
                class: Some("late".into()),
                probabilities: [("late".to_string(), 0.7), ("on_time".to_string(), 0.3)].into(),
            },
            served_at: 1_700_000_000_123,
            latency_us: 87,
            source: PredictionSource::Http,
            shadow: None,
        }
    }

    pub fn actual() -> Actual {
        Actual {
            request_id: "req-1".into(),
            model: "flights".into(),
            event_time: 1_357_016_400_000,
            value: Some(12.0),
            class: None,
            observed_at: 1_357_020_000_000,
        }
    }

    pub fn drift() -> DriftReport {
        let temp = FeatureDrift {
            name: "temp".into(),
            kind: FeatureKind::Numeric,
            psi: Some(0.31),
            ks_d: Some(0.2),
            ks_p: Some(1e-200),
            wasserstein_norm: Some(0.9),
            jensen_shannon: Some(0.12),
            chi2_p: None,
            missing_share: 0.0,
            drifted: true,
            signals: vec![
                Signal {
                    name: "missing_share".into(),
                    value: 0.0,
                    threshold: 0.0032,
                    fired: false,
                    method: "from the reference: a beta-binomial tail of 2.5e-3".into(),
                },
                Signal {
                    name: "wasserstein_norm".into(),
                    value: 0.9,
                    threshold: 0.1,
                    fired: true,
                    method: "fixed".into(),
                },
            ],
        };
        DriftReport {
            report_id: "flights-3-abc".into(),
            model: "flights".into(),
            model_version: 3,
            evaluated_at: 1_700_000_000_000,
            window: ReportWindow {
                start_time: 1_357_016_400_000,
                end_time: 1_359_016_400_000,
                count: 5000,
                end_offsets: [("driftline.predictions/0".to_string(), 5000)].into(),
            },
            features: vec![
                temp.clone(),
                FeatureDrift {
                    name: "origin".into(),
                    kind: FeatureKind::Categorical,
                    psi: Some(0.01),
                    ks_d: None,
                    ks_p: None,
                    wasserstein_norm: None,
                    jensen_shannon: Some(0.01),
                    chi2_p: Some(0.4),
                    missing_share: 0.02,
                    drifted: false,
                    signals: vec![],
                },
            ],
            prediction: Some(FeatureDrift {
                name: "prediction".into(),
                ..temp
            }),
            performance: vec![MetricComparison {
                metric: "mae".into(),
                current: 14.2,
                reference: Some(11.0),
            }],
            share_drifted: 0.5,
            decision: DriftDecision::Drift,
            reason: "1 of 2 features drifted".into(),
            multivariate: Some(Signal {
                name: "reconstruction_error".into(),
                value: 1.31,
                threshold: 1.21,
                fired: true,
                method:
                    "from the reference's sub-windows of 100 to 6400 rows: a gamma tail of 1.0e-3"
                        .into(),
            }),
            estimated: Some(EstimatedPerformance {
                metric: "accuracy".into(),
                value: 0.87,
                lower: 0.84,
                upper: 0.9,
                reference: Some(0.93),
                realised: None,
                signal: Some(Signal {
                    name: "estimated_error".into(),
                    value: 0.13,
                    threshold: 0.09,
                    fired: true,
                    method:
                        "from the holdout's sub-windows of 100 to 1600 rows: a gamma tail of 1.0e-3"
                            .into(),
                }),
            }),
        }
    }

    pub fn retrain() -> RetrainRequested {
        RetrainRequested {
            retrain_id: "retrain-flights-3-abc".into(),
            model: "flights".into(),
            model_version: 3,
            trigger: RetrainTrigger::Drift,
            reason: "share drifted 0.5 >= 0.5".into(),
            report_id: Some("flights-3-abc".into()),
            drifted_features: vec!["temp".into()],
            window_start: 1_357_016_400_000,
            window_end: 1_359_016_400_000,
            requested_at: 1_700_000_000_000,
            end_offsets: [("driftline.labelled/0".to_string(), 120)].into(),
        }
    }

    pub fn model() -> ModelPublished {
        ModelPublished {
            model: "flights".into(),
            version: 4,
            algorithm: "elastic-net".into(),
            hyper_parameters: [("penalty".to_string(), "0.1".to_string())].into(),
            metrics: [("mae".to_string(), 10.5)].into(),
            incumbent_metrics: [("mae".to_string(), 14.2)].into(),
            parent_version: Some(3),
            trigger: "drift:flights-3-abc".into(),
            training_window: TrainingWindow {
                start_time: 1_357_016_400_000,
                end_time: 1_359_016_400_000,
                train_rows: 40_000,
                holdout_rows: 10_000,
                end_offsets: [("driftline.predictions/0".to_string(), 50_000)].into(),
            },
            reference_profile: vec![
                FeatureProfile {
                    name: "temp".into(),
                    kind: FeatureKind::Numeric,
                    count: 3,
                    missing: 1,
                    sample: vec![30.0, 41.5, 55.2],
                    categories: Default::default(),
                    sub_windows: vec![SubWindows {
                        window: 100,
                        count: 5,
                        mean: 0.12,
                        sd: 0.03,
                    }],
                },
                FeatureProfile {
                    name: "origin".into(),
                    kind: FeatureKind::Categorical,
                    count: 4,
                    missing: 0,
                    sample: vec![],
                    categories: [("EWR".to_string(), 3), ("JFK".to_string(), 1)].into(),
                    sub_windows: Vec::new(),
                },
            ],
            model_format: "driftline-linear/1".into(),
            model_bytes: vec![0, 1, 2, 255],
            status: ModelStatus::Production,
            published_at: 1_700_000_000_500,
            traffic_share: 0.0,
            error_sub_windows: vec![SubWindows {
                window: 200,
                count: 7,
                mean: 11.5,
                sd: 1.25,
            }],
            feature_importance: [("distance".to_string(), 0.4)].into(),
            multivariate: None,
            performance_estimator: None,
            error_estimator: None,
            effective_from: None,
        }
    }

    pub fn dead_letter() -> DeadLetter {
        DeadLetter {
            source_topic: "driftline.requests".into(),
            source_partition: 2,
            source_offset: 41,
            key: Some(b"req-9".to_vec()),
            payload: Some(vec![0xde, 0xad]),
            error_kind: "decode".into(),
            error: "not Avro single-object encoding".into(),
            consumer: "predictor".into(),
            payload_size: None,
            payload_sha256: None,
            failed_at: 1_700_000_000_000,
        }
    }
}

/// A minimal HTTP/1.1 client over a real socket, so tests exercise the server as any
/// client would. Returns the status code and the body.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, String)> {
    http_as(addr, method, path, "application/json", body).await
}

/// [`http`] with the body sent as `content_type`.
pub async fn http_as(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<&[u8]>,
) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A free port on loopback (bound and released: a tiny race, fine for tests).
/// The Python of the test venv (infra/setup.sh makes it, with the peers the tests run):
/// `DRIFTLINE_PYTHON`, else the venv in the cache.
pub fn python() -> Result<std::path::PathBuf> {
    if let Ok(p) = std::env::var("DRIFTLINE_PYTHON") {
        return Ok(p.into());
    }
    let home = std::env::var("HOME").context("HOME")?;
    let venv = std::path::PathBuf::from(home).join(".cache/driftline/venv/bin/python");
    anyhow::ensure!(
        venv.exists(),
        "no test venv at {}: run the tests with infra/test.sh (it makes the venv)",
        venv.display()
    );
    Ok(venv)
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A broker of a test's own (infra/broker.sh on free ports, data in a temporary
/// directory), for tests that stop, kill or restart it. Stopped when dropped.
pub struct OwnBroker {
    dir: std::path::PathBuf,
    pub port: u16,
    controller: u16,
}

impl OwnBroker {
    /// Not started yet: see [`OwnBroker::start`].
    pub fn new(dir: &std::path::Path) -> Result<Self> {
        Ok(Self {
            dir: dir.join("broker"),
            port: free_port()?,
            controller: free_port()?,
        })
    }

    pub fn kafka(&self) -> KafkaArgs {
        KafkaArgs::with_bootstrap(format!("127.0.0.1:{}", self.port))
    }

    /// Starts it (formatting its storage the first time) and waits until it answers.
    pub fn start(&self) -> Result<()> {
        self.run("start")
    }

    /// Stops it cleanly.
    pub fn stop(&self) -> Result<()> {
        self.run("stop")
    }

    /// kill -9 of the broker's JVM.
    pub fn kill(&self) -> Result<()> {
        self.run("kill")
    }

    /// The broker JVM's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("broker.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Where its data (and log) are.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn run(&self, command: &str) -> Result<()> {
        let status = self.script(command).status()?;
        if !status.success() {
            bail!("infra/broker.sh {command} failed ({status})");
        }
        Ok(())
    }

    fn script(&self, command: &str) -> std::process::Command {
        let mut c = std::process::Command::new("bash");
        c.arg(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/broker.sh"))
            .arg(command)
            .env("DRIFTLINE_BROKER_PORT", self.port.to_string())
            .env("DRIFTLINE_CONTROLLER_PORT", self.controller.to_string())
            .env("DRIFTLINE_BROKER_DIR", &self.dir);
        c
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.script("stop").status();
    }
}
