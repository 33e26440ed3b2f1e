//! send_data `--max` throughput beside the broker's raw produce rate, measured in one run.
//!
//! The raw figure is a plain rdkafka `BaseProducer` (same producer settings as send_data)
//! sending the very bytes send_data would send, encoded beforehand, with nothing else to
//! do. The send_data figure is the library's `replay` at `Pace::Max` into a `KafkaSink`,
//! timed from opening the CSV to the last delivery report: reading, gzip, parsing, Avro
//! encoding and producing. Rounds alternate which goes first, each on fresh topics.
//!
//! ```sh
//! infra/broker.sh start      # or any broker; DRIFTLINE_BOOTSTRAP_SERVERS points at it
//! cargo bench -p driftline-producers --bench throughput --profile dev
//! ```
//! Settings (environment): `BENCH_ROWS` (default 100000), `BENCH_ROUNDS` (default 3),
//! `DRIFTLINE_KAFKA_OPTIONS` (extra producer settings for both sides, `KEY=VALUE,...`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use driftline_kafka::KafkaArgs;
use driftline_kafka::topics::{TopicDef, TopicSpec, apply};
use driftline_producers::sink::{Delivered, KafkaSink, Sink, Topic, producer_config};
use driftline_producers::source::Message;
use driftline_producers::{Progress, ReplayOptions, replay};
use driftline_schemas::spec::FeatureSpec;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use tokio_util::sync::CancellationToken;

/// Counts delivery reports: all a plain producer needs.
#[derive(Default)]
struct Counting {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() {
            &self.delivered
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Keeps what a replay would send, in order.
#[derive(Default)]
struct Collect {
    messages: Vec<(Topic, Message)>,
}

impl Sink for Collect {
    async fn send(&mut self, topic: Topic, message: &Message) -> driftline_producers::Result<()> {
        self.messages.push((topic, message.clone()));
        Ok(())
    }
    async fn flush(&mut self) -> driftline_producers::Result<Delivered> {
        Ok(Delivered::default())
    }
}

struct Run {
    messages: u64,
    bytes: u64,
    elapsed: Duration,
}

impl Run {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

fn raw(kafka: &KafkaArgs, topics: &[String; 2], messages: &[(Topic, Message)]) -> Result<Run> {
    let producer: BaseProducer<Counting> =
        producer_config(kafka).create_with_context(Counting::default())?;
    let started = Instant::now();
    let mut bytes = 0;
    for (i, (topic, m)) in messages.iter().enumerate() {
        let name = match topic {
            Topic::Requests => &topics[0],
            Topic::Actuals => &topics[1],
        };
        let mut record = BaseRecord::to(name).key(&m.key).payload(&m.payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => bail!("produce: {e}"),
            }
        }
        bytes += (m.key.len() + m.payload.len()) as u64;
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO); // serve delivery reports as we go
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let elapsed = started.elapsed();
    let ctx = producer.context();
    let (ok, failed) = (
        ctx.delivered.load(Ordering::Relaxed),
        ctx.failed.load(Ordering::Relaxed),
    );
    if failed > 0 || ok != messages.len() as u64 {
        bail!(
            "raw producer: {ok} delivered, {failed} failed of {}",
            messages.len()
        );
    }
    Ok(Run {
        messages: ok,
        bytes,
        elapsed,
    })
}

async fn send_data(
    kafka: &KafkaArgs,
    topics: &[String; 2],
    opts: &ReplayOptions,
    bytes: u64,
) -> Result<Run> {
    let mut sink = KafkaSink::new(kafka, &topics[0], &topics[1]).await?;
    let summary = replay(
        opts,
        &mut sink,
        &Progress::hidden(),
        &CancellationToken::new(),
    )
    .await?;
    if !summary.is_clean() {
        bail!("send_data run was not clean:\n{summary}");
    }
    Ok(Run {
        messages: summary.messages(),
        bytes,
        elapsed: summary.elapsed,
    })
}

async fn fresh_topics(kafka: &KafkaArgs, prefix: &str) -> Result<[String; 2]> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let names = [
        format!("bench-{prefix}-requests-{nanos:x}"),
        format!("bench-{prefix}-actuals-{nanos:x}"),
    ];
    // Partitions as in infra/topics.toml.
    let topics = names
        .iter()
        .map(|name| TopicDef {
            name: name.clone(),
            partitions: 3,
            replication: 1,
            config: Default::default(),
        })
        .collect();
    apply(kafka, &TopicSpec { topics })
        .await
        .context("creating topics (is the broker running?)")?;
    Ok(names)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rows = env("BENCH_ROWS", 100_000);
    let rounds = env("BENCH_ROUNDS", 3);
    let mut kafka = KafkaArgs::with_bootstrap(
        std::env::var("DRIFTLINE_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
    );
    // Extra producer settings for both sides, as send_data takes them (KEY=VALUE,...).
    if let Ok(options) = std::env::var("DRIFTLINE_KAFKA_OPTIONS") {
        kafka.options = options.split(',').map(str::to_string).collect();
    }
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
    let spec = FeatureSpec::load(&data.join("flights.toml"))?;
    let opts = ReplayOptions {
        rows: Some(rows),
        ..ReplayOptions::new(spec, data.join("flights.csv.gz"))
    };

    // The exact messages send_data sends for these rows, encoded once, up front. Timed too:
    // what reading, parsing and encoding cost alone, with no broker.
    let mut collect = Collect::default();
    let no_broker = replay(
        &opts,
        &mut collect,
        &Progress::hidden(),
        &CancellationToken::new(),
    )
    .await?;
    let messages = collect.messages;
    let encode_rate = messages.len() as f64 / no_broker.elapsed.as_secs_f64();
    let bytes: u64 = messages
        .iter()
        .map(|(_, m)| (m.key.len() + m.payload.len()) as u64)
        .sum();
    println!(
        "{rows} rows of data/flights.csv.gz -> {} messages, {:.1} MB (keys + values, {:.0} bytes each on average), broker {}, options {:?}",
        messages.len(),
        bytes as f64 / 1e6,
        bytes as f64 / messages.len() as f64,
        kafka.bootstrap_servers,
        kafka.options
    );
    println!("read + parse + encode alone (no broker): {encode_rate:.0} msg/s");

    let (mut raw_rates, mut sd_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    println!(
        "| round | raw rdkafka (msg/s) | raw MB/s | send_data --max (msg/s) | send_data MB/s | send_data / raw |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for round in 1..=rounds {
        let raw_first = round % 2 == 1;
        let mut r = None;
        let mut s = None;
        for turn in 0..2 {
            if (turn == 0) == raw_first {
                let topics = fresh_topics(&kafka, "raw").await?;
                let (kafka, messages) = (kafka.clone(), messages.clone());
                r = Some(
                    tokio::task::spawn_blocking(move || raw(&kafka, &topics, &messages)).await??,
                );
            } else {
                let topics = fresh_topics(&kafka, "send-data").await?;
                s = Some(send_data(&kafka, &topics, &opts, bytes).await?);
            }
        }
        let (r, s) = (r.context("raw run")?, s.context("send_data run")?);
        let ratio = s.rate() / r.rate();
        println!(
            "| {round} | {:.0} | {:.1} | {:.0} | {:.1} | {:.0}% |",
            r.rate(),
            r.mb_per_s(),
            s.rate(),
            s.mb_per_s(),
            ratio * 100.0
        );
        raw_rates.push(r.rate());
        sd_rates.push(s.rate());
        ratios.push(ratio);
    }
    println!(
        "median: raw {:.0} msg/s, send_data {:.0} msg/s, send_data / raw {:.0}%",
        median(raw_rates),
        median(sd_rates),
        median(ratios) * 100.0
    );
    Ok(())
}
