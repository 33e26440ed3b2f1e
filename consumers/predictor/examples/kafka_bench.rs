//! The Kafka path, in one run on one broker with the same messages: the raw produce and
//! raw consume rates, a passthrough (consume and re-produce the same bytes), the
//! predictor's requests → predictions throughput, and then its end-to-end latency (request
//! produced → prediction readable, and its two halves either side of the predictor's
//! served_at) at half that throughput. Last, each path's CPU seconds per 100k messages, in
//! this process and in the broker's JVM, and the rate that cost allows on this machine's
//! cores: whether a path is bound by the machine or waits on something.
//!
//! ```sh
//! bash infra/broker.sh start && driftline topics apply
//! DRIFTLINE_BROKER_DIR=~/.cache/driftline/broker cargo run -p driftline-predictor --example kafka_bench
//! ```
//! Env: BENCH_MESSAGES (100000), BENCH_LATENCY_SECS (20), BENCH_LATENCY_RATE (half the
//! predictor's rate), DRIFTLINE_BOOTSTRAP_SERVERS, DRIFTLINE_BROKER_DIR (the broker's
//! directory, for its pid; without it the broker's CPU is not counted).
//!
//! The predictor's rate is messages / (the time the last prediction could be read from
//! the predictions topic - the first prediction's served_at): the consumer group's join
//! time is not counted against it, and every prediction counts only once the broker has
//! it (the predictor stamps served_at before producing, and may predict several batches
//! ahead of the broker's acknowledgements).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use driftline_kafka::KafkaArgs;
use driftline_predictor::service::run;
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Event, FeatureValue, PredictionLogged, PredictionRequest};
use driftline_schemas::spec::FeatureSpec;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

#[path = "common/mod.rs"]
mod common;

use common::{Bench, BoxError};

/// The first `n` messages of `topic`, the time from the first to the last, and the wall
/// clock (ms) when the last arrived. `tailing`: the topic is still being written.
fn read_n(
    kafka: &KafkaArgs,
    topic: &str,
    n: usize,
    tailing: bool,
) -> Result<(Vec<Vec<u8>>, Duration, i64), BoxError> {
    let mut config = kafka.consumer_config(&format!("{topic}-reader"));
    if tailing {
        // Caught up with the writer, it asks again soon, so the last message is seen when
        // it lands rather than up to a long-poll later.
        config.set("fetch.wait.max.ms", "10");
    }
    let consumer: BaseConsumer = config.create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut out = Vec::with_capacity(n);
    let mut started = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while out.len() < n && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            started.get_or_insert_with(Instant::now);
            out.push(m.payload().unwrap_or_default().to_vec());
        }
    }
    Ok((
        out,
        started.map(|s| s.elapsed()).unwrap_or_default(),
        driftline_runtime::now_ms(),
    ))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let _telemetry = driftline_process::telemetry::init_from_env()?;
    let n: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let bench = Bench::new("kbench");
    let kafka = bench.kafka.clone();
    let spec_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/flights.toml");
    let spec = FeatureSpec::load(&spec_path)?;
    let topic = |t: &str| bench.topic(t);
    bench
        .create_topics(&[
            "requests",
            "predictions",
            "models",
            "dlq",
            "passthrough",
            "runtime-passthrough",
        ])
        .await?;

    // A model fitted on a few synthetic rows: the model's cost is not what this measures.
    let rows: Vec<driftline_model::LabelledRow> = (0..500)
        .map(|i| {
            let features = spec
                .features
                .iter()
                .zip(3..)
                .map(|(f, k)| {
                    // Each feature its own cycle, so no column repeats another (a
                    // linear fit refuses collinear columns).
                    let v = match f.kind {
                        driftline_schemas::spec::Kind::Numeric => {
                            FeatureValue::Number(f64::from(i * k % 37))
                        }
                        driftline_schemas::spec::Kind::Categorical => {
                            FeatureValue::Category(format!("c{}", i * k % 5))
                        }
                    };
                    (f.name.clone(), v)
                })
                .collect();
            driftline_model::LabelledRow {
                event_time: i64::from(i),
                features,
                target: driftline_model::Target::Value(f64::from(i % 11)),
            }
        })
        .collect();
    let trained = driftline_model::fit(&spec, &rows)?;
    let codec = Codec::single_object();
    let producer: FutureProducer = kafka.producer_config().create()?;
    bench.publish_v1(&spec, &trained).await?;

    // n requests, encoded first, then produced up front: the raw produce rate of these bytes.
    let encoded = rows
        .iter()
        .cycle()
        .take(n)
        .enumerate()
        .map(|(i, row)| {
            let r = request(&spec, "b", i, row);
            Ok((r.key(), codec.encode(&r)?))
        })
        .collect::<Result<Vec<_>, BoxError>>()?;
    let cpu_start = Cpu::now();
    let produce_started = Instant::now();
    let mut pending = Vec::with_capacity(n);
    for (key, bytes) in &encoded {
        loop {
            match producer.send_result(FutureRecord::to(&topic("requests")).key(key).payload(bytes))
            {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    }
    for f in pending {
        f.await?.map_err(|(e, _)| e)?;
    }
    let produce_rate = n as f64 / produce_started.elapsed().as_secs_f64();
    let cpu_produced = Cpu::now();

    // The peer: a plain consumer reading the same messages.
    let (raw, raw_time, _) = read_n(&kafka, &topic("requests"), n, false)?;
    let raw_rate = raw.len() as f64 / raw_time.as_secs_f64();
    let cpu_consumed = Cpu::now();

    // The ceiling of any consume → produce service on this broker: the same messages
    // re-produced unchanged, deliveries awaited in bulk (no decode, no model, no state).
    let passthrough_started = Instant::now();
    let mut pending = Vec::with_capacity(raw.len());
    for (i, bytes) in raw.iter().enumerate() {
        let key = i.to_string();
        loop {
            match producer.send_result(
                FutureRecord::to(&topic("passthrough"))
                    .key(&key)
                    .payload(bytes),
            ) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    for f in pending {
        f.await?.map_err(|(e, _)| e)?;
    }
    let passthrough_rate =
        raw.len() as f64 / (raw_time + passthrough_started.elapsed()).as_secs_f64();
    let cpu_passed = Cpu::now();

    let runtime_rate = runtime_passthrough(&bench, raw.len()).await?;
    let cpu_runtime = Cpu::now();

    let shutdown = CancellationToken::new();
    let state = tempfile::tempdir()?;
    let service = tokio::spawn(run(
        bench.predictor_args(
            spec_path,
            "127.0.0.1:0".parse()?,
            state.path().to_path_buf(),
            64,
        ),
        shutdown.clone(),
        Default::default(),
    ));
    let (logged, _, last_read) = read_n(&kafka, &topic("predictions"), n, true)?;
    let served: Vec<i64> = logged
        .iter()
        .filter_map(|b| codec.decode::<PredictionLogged>(b).ok())
        .map(|p| p.served_at)
        .collect();
    let first = served.iter().min().copied().unwrap_or(0);
    let last = last_read;
    let predictor_rate = served.len() as f64 / ((last - first).max(1) as f64 / 1000.0);
    let cpu_predicted = Cpu::now();

    // Latency at half the predictor's top rate, the same predictor still running.
    let secs: f64 = std::env::var("BENCH_LATENCY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20.0);
    // BENCH_LATENCY_RATE (requests/s) overrides half the top rate, to see the latency at
    // other loads.
    let rate = std::env::var("BENCH_LATENCY_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(predictor_rate / 2.0);
    let latencies = latency(&kafka, &topic, &codec, &producer, &rows, &spec, rate, secs).await?;
    shutdown.cancel();
    let _ = service.await;
    let cpu_rows = [
        ("raw produce", cpu_produced.since(cpu_start), produce_rate),
        ("raw consume", cpu_consumed.since(cpu_produced), raw_rate),
        (
            "passthrough (its consume and re-produce)",
            cpu_passed.since(cpu_produced),
            passthrough_rate,
        ),
        (
            "runtime passthrough (with its group join)",
            cpu_runtime.since(cpu_passed),
            runtime_rate,
        ),
        (
            "predictor (with its model load, group join and the reader of its predictions)",
            cpu_predicted.since(cpu_runtime),
            predictor_rate,
        ),
    ];

    println!("Kafka path, {n} PredictionRequests on 1 partition, one run");
    println!("| path | messages/s |");
    println!("| --- | ---: |");
    println!(
        "| raw produce (FutureProducer, the runtime's settings, deliveries awaited) | {produce_rate:.0} |"
    );
    println!("| raw consume (rdkafka BaseConsumer, no processing) | {raw_rate:.0} |");
    println!(
        "| passthrough (consume, then re-produce the same bytes, deliveries awaited) | {passthrough_rate:.0} |"
    );
    println!(
        "| runtime passthrough (the predictor's consumer runtime, re-producing the same bytes) | {runtime_rate:.0} |"
    );
    println!(
        "| predictor: consume, decode, validate, predict, produce PredictionLogged, commit state+offsets | {predictor_rate:.0} |"
    );
    println!(
        "ratio: {:.0}% of the passthrough rate",
        100.0 * predictor_rate / passthrough_rate
    );
    println!(
        "ratio: {:.0}% of the runtime passthrough rate",
        100.0 * predictor_rate / runtime_rate
    );
    println!(
        "ratio: {:.0}% of the raw consume rate ({} predictions in {} ms; raw {} in {} ms)",
        100.0 * predictor_rate / raw_rate,
        served.len(),
        last - first,
        raw.len(),
        raw_time.as_millis()
    );
    println!(
        "latency, request produced -> prediction readable, {} requests at {rate:.0}/s ({:.0}% of the predictor's rate) for {secs} s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.total.len(),
        100.0 * rate / predictor_rate,
        quantile(&latencies.total, 0.5),
        quantile(&latencies.total, 0.99),
        latencies.total.last().copied().unwrap_or_default()
    );
    println!(
        "of which produced -> served_at p50 {:.0} ms, p99 {:.0} ms; served_at -> readable p50 {:.0} ms, p99 {:.0} ms",
        quantile(&latencies.to_served, 0.5),
        quantile(&latencies.to_served, 0.99),
        quantile(&latencies.to_readable, 0.5),
        quantile(&latencies.to_readable, 0.99),
    );
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    println!();
    println!(
        "CPU seconds per 100,000 messages (this process, and the broker's JVM when DRIFTLINE_BROKER_DIR names its directory), and the rate that CPU cost allows on this machine's {cores} cores if nothing else ran"
    );
    println!(
        "| path | this process | broker | total | rate reached | rate the CPU allows | reached / allowed |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (path, cpu, rate) in cpu_rows {
        let per = |s: f64| s * 100_000.0 / n as f64;
        let total = per(cpu.process + cpu.broker.unwrap_or(0.0));
        let allowed = cores * 100_000.0 / total.max(1e-9);
        println!(
            "| {path} | {:.2} | {} | {total:.2} | {rate:.0} | {allowed:.0} | {:.0}% |",
            per(cpu.process),
            cpu.broker.map_or("-".into(), |b| format!("{:.2}", per(b))),
            100.0 * rate / allowed
        );
    }
    Ok(())
}

/// CPU seconds used so far by this process and by the broker's JVM (its pid in
/// `$DRIFTLINE_BROKER_DIR/broker.pid`, where infra/broker.sh writes it).
#[derive(Clone, Copy)]
struct Cpu {
    process: f64,
    broker: Option<f64>,
}

impl Cpu {
    fn now() -> Self {
        let broker = std::env::var("DRIFTLINE_BROKER_DIR")
            .ok()
            .and_then(|d| std::fs::read_to_string(PathBuf::from(d).join("broker.pid")).ok())
            .and_then(|pid| cpu_seconds(pid.trim()));
        Self {
            process: cpu_seconds("self").unwrap_or_default(),
            broker,
        }
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            process: self.process - before.process,
            broker: self.broker.zip(before.broker).map(|(a, b)| a - b),
        }
    }
}

/// User and system time of `/proc/<pid>/stat`, all threads, in seconds (Linux counts
/// them in USER_HZ, 100 a second).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces; utime and stime are the
    // 14th and 15th fields, the 12th and 13th after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// Re-emits every message unchanged: what the runtime costs without a processor's work.
struct Reemit {
    topic: String,
    first: std::sync::Arc<std::sync::OnceLock<Instant>>,
    /// The last commit: the end of the run (the runtime only notices the end of the
    /// partition a fetch later).
    last: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
}

impl driftline_runtime::Processor for Reemit {
    fn process(
        &mut self,
        record: &driftline_runtime::Record<'_>,
        _txn: &mut driftline_runtime::Txn<'_>,
    ) -> Result<Vec<driftline_runtime::Output>, driftline_runtime::Rejection> {
        self.first.get_or_init(Instant::now);
        Ok(vec![driftline_runtime::Output {
            topic: self.topic.clone(),
            key: String::from_utf8_lossy(record.key.unwrap_or_default()).into_owned(),
            payload: record.payload.unwrap_or_default().to_vec(),
        }])
    }

    fn committed(&mut self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }
}

/// The requests topic read to its end by the runtime, with the predictor's batch and
/// pipeline settings, every message re-produced unchanged; messages a second from the
/// first message processed to the last batch committed.
async fn runtime_passthrough(bench: &Bench, n: usize) -> Result<f64, BoxError> {
    let first = std::sync::Arc::new(std::sync::OnceLock::new());
    let last = std::sync::Arc::new(std::sync::Mutex::new(None));
    let processor = Reemit {
        topic: bench.topic("runtime-passthrough"),
        first: first.clone(),
        last: last.clone(),
    };
    let mut opts = driftline_runtime::RunOptions::new(
        bench.topic("runtime-group"),
        vec![bench.topic("requests")],
    );
    opts.exit_on_eof = true;
    opts.pipeline = driftline_predictor::service::PIPELINE;
    let state = tempfile::tempdir()?;
    let store = std::sync::Arc::new(driftline_runtime::Store::open(state.path(), false)?);
    let applied = driftline_runtime::run(
        &bench.kafka,
        &opts,
        store,
        processor,
        Codec::single_object(),
        driftline_runtime::metrics::Metrics::new("bench"),
        CancellationToken::new(),
    )
    .await?;
    let last = *last.lock().unwrap_or_else(|e| e.into_inner());
    let took = match (first.get(), last) {
        (Some(first), Some(last)) => last - *first,
        _ => return Err("the runtime passthrough processed nothing".into()),
    };
    if applied as usize != n {
        return Err(format!("the runtime passthrough applied {applied} of {n}").into());
    }
    Ok(n as f64 / took.as_secs_f64())
}

/// The `i`-th request of a phase: the row's features under the id `<phase>-<i>`.
fn request(
    spec: &FeatureSpec,
    phase: &str,
    i: usize,
    row: &driftline_model::LabelledRow,
) -> PredictionRequest {
    PredictionRequest {
        request_id: format!("{phase}-{i}"),
        model: spec.model.name.clone(),
        event_time: i as i64,
        features: row.features.clone(),
    }
}

/// Produces requests at `rate` per second for `secs` seconds while a reader tails the
/// predictions topic; returns each request's time from `send` to its prediction being
/// read, in milliseconds, sorted.
#[allow(clippy::too_many_arguments)]
async fn latency(
    kafka: &KafkaArgs,
    topic: &impl Fn(&str) -> String,
    codec: &Codec,
    producer: &FutureProducer,
    rows: &[driftline_model::LabelledRow],
    spec: &FeatureSpec,
    rate: f64,
    secs: f64,
) -> Result<Latencies, BoxError> {
    let total = (rate * secs) as usize;
    // The reader starts at the end of the topic and stamps each prediction as it lands.
    let mut config = kafka.consumer_config("latency-reader");
    config.set("fetch.wait.max.ms", "5");
    let reader: BaseConsumer = config.create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic("predictions"), 0, Offset::End)?;
    reader.assign(&tpl)?;
    let (codec_r, stop) = (
        codec.clone(),
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let stop_r = stop.clone();
    let read = std::thread::spawn(move || {
        let mut seen = std::collections::HashMap::new();
        while seen.len() < total && !stop_r.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(Ok(m)) = reader.poll(Duration::from_millis(5)) {
                let now = Instant::now();
                let probe = codec_r
                    .decode::<PredictionLogged>(m.payload().unwrap_or_default())
                    .ok()
                    .and_then(|p| {
                        let i = p.request_id.strip_prefix("lat-")?.parse::<usize>().ok()?;
                        Some((i, p.served_at))
                    });
                if let Some((i, served_at)) = probe {
                    seen.insert(i, (now, served_at, driftline_runtime::now_ms()));
                }
            }
        }
        seen
    });
    tokio::time::sleep(Duration::from_secs(1)).await; // the reader's assignment settles
    let started = Instant::now();
    // When each request was produced: an Instant for the whole, the wall clock (ms) to
    // compare with the predictor's served_at.
    let mut sent = Vec::with_capacity(total);
    let mut pending = Vec::with_capacity(total);
    for (i, row) in rows.iter().cycle().take(total).enumerate() {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let r = request(spec, "lat", i, row);
        let bytes = codec.encode(&r)?;
        sent.push((Instant::now(), driftline_runtime::now_ms()));
        let f = producer
            .send_result(
                FutureRecord::to(&topic("requests"))
                    .key(&r.key())
                    .payload(&bytes),
            )
            .map_err(|(e, _)| e)?;
        pending.push(f);
    }
    for f in pending {
        f.await?.map_err(|(e, _)| e)?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = read.join().map_err(|_| "latency reader panicked")?;
    let mut l = Latencies::default();
    for (i, (read, served_at, read_ms)) in seen {
        let Some((sent, sent_ms)) = sent.get(i) else {
            continue;
        };
        l.total
            .push(read.duration_since(*sent).as_secs_f64() * 1000.0);
        l.to_served.push((served_at - sent_ms) as f64);
        l.to_readable.push((read_ms - served_at) as f64);
    }
    if l.total.len() < total {
        return Err(format!("only {} of {total} latency probes came back", l.total.len()).into());
    }
    for v in [&mut l.total, &mut l.to_served, &mut l.to_readable] {
        v.sort_by(f64::total_cmp);
    }
    Ok(l)
}

/// Each probe's latency (ms), sorted, and its two halves: produced → the predictor's
/// served_at (delivered, fetched, batched, predicted) and served_at → readable (produced,
/// committed in a transaction, fetched by a read_committed reader). The halves are wall
/// clock milliseconds.
#[derive(Default)]
struct Latencies {
    total: Vec<f64>,
    to_served: Vec<f64>,
    to_readable: Vec<f64>,
}

/// The `q` quantile of sorted `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    v[((v.len() - 1) as f64 * q).round() as usize]
}
