//! The Kafka path, in one run on one broker with the same messages: the raw produce and
//! raw consume rates, a passthrough (consume and re-produce the same bytes), the
//! predictor's requests → predictions throughput, and then its end-to-end latency (request
//! produced → prediction readable) at half that throughput.
//!
//! ```sh
//! bash infra/broker.sh start
//! cargo run -p driftline-predictor --example kafka_bench
//! ```
//! Env: BENCH_MESSAGES (100000), BENCH_LATENCY_SECS (20), BENCH_LATENCY_RATE (half the
//! predictor's rate), DRIFTLINE_BOOTSTRAP_SERVERS.
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
                .map(|f| {
                    let v = match f.kind {
                        driftline_schemas::spec::Kind::Numeric => {
                            FeatureValue::Number(f64::from(i % 37))
                        }
                        driftline_schemas::spec::Kind::Categorical => {
                            FeatureValue::Category(format!("c{}", i % 5))
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

    // The peer: a plain consumer reading the same messages.
    let (raw, raw_time, _) = read_n(&kafka, &topic("requests"), n, false)?;
    let raw_rate = raw.len() as f64 / raw_time.as_secs_f64();

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

    let runtime_rate = runtime_passthrough(&bench, raw.len()).await?;

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
    let pct = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];

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
        latencies.len(),
        100.0 * rate / predictor_rate,
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or_default()
    );
    Ok(())
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
) -> Result<Vec<f64>, BoxError> {
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
                    .and_then(|p| p.request_id.strip_prefix("lat-")?.parse::<usize>().ok());
                if let Some(i) = probe {
                    seen.insert(i, now);
                }
            }
        }
        seen
    });
    tokio::time::sleep(Duration::from_secs(1)).await; // the reader's assignment settles
    let started = Instant::now();
    let mut sent = Vec::with_capacity(total);
    let mut pending = Vec::with_capacity(total);
    for (i, row) in rows.iter().cycle().take(total).enumerate() {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let r = request(spec, "lat", i, row);
        let bytes = codec.encode(&r)?;
        sent.push(Instant::now());
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
    let mut ms: Vec<f64> = seen
        .iter()
        .filter_map(|(i, at)| Some(at.duration_since(*sent.get(*i)?).as_secs_f64() * 1000.0))
        .collect();
    if ms.len() < total {
        return Err(format!("only {} of {total} latency probes came back", ms.len()).into());
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}
