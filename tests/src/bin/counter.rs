//! A consumer built on the runtime that counts PredictionRequests and keeps a checksum of
//! their ids in RocksDB. The crash tests kill it with SIGKILL and restart it; exactly-once
//! application shows as a final checksum equal to the input's. Undecodable messages go to
//! the dead-letter topic.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use driftline_kafka::KafkaArgs;
use driftline_runtime::metrics::Metrics;
use driftline_runtime::{Output, Processor, Record, Rejection, RunOptions, Store, Txn};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::PredictionRequest;
use driftline_tests::{CHECKSUM_KEY, Checksum};
use rdkafka::producer::FutureProducer;

#[derive(Debug, Parser)]
#[command(
    about = "Count PredictionRequests exactly once (a test process for the consumer runtime)"
)]
struct Args {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[arg(long)]
    topic: String,
    #[arg(long)]
    group: String,
    #[arg(long)]
    dlq_topic: String,
    #[arg(long)]
    state_dir: PathBuf,
    #[arg(long, default_value_t = 500)]
    max_batch: usize,
    /// Stop once every partition is read to its end.
    #[arg(long)]
    exit_on_eof: bool,
    /// Sleep this long after each batch, so a test can kill it mid-stream.
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
}

struct Counter {
    codec: Codec,
    last: Checksum,
    pause: Duration,
}

impl Processor for Counter {
    fn process(
        &mut self,
        record: &Record<'_>,
        txn: &mut Txn<'_>,
    ) -> Result<Vec<Output>, Rejection> {
        let request: PredictionRequest = self
            .codec
            .decode(record.payload.unwrap_or_default())
            .map_err(Rejection::decode)?;
        let current = txn
            .get(CHECKSUM_KEY)
            .map_err(|e| Rejection {
                kind: "state",
                error: e.to_string(),
            })?
            .and_then(|b| Checksum::from_bytes(&b))
            .unwrap_or_default();
        let mut next = current;
        next.add(request.request_id.as_bytes());
        txn.put(CHECKSUM_KEY.to_vec(), next.to_bytes());
        self.last = next;
        Ok(Vec::new())
    }

    fn committed(&mut self) {
        // The test reads these lines to know how far a run got before it kills it.
        println!("committed count={}", self.last.count);
        if !self.pause.is_zero() {
            std::thread::sleep(self.pause);
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let _telemetry = driftline_process::telemetry::init_from_env()?;
    let args = Args::parse();
    let store = Arc::new(Store::open(&args.state_dir, false).context("opening state")?);
    let codec = Codec::single_object();
    let producer: FutureProducer = args.kafka.producer_config().create()?;
    let mut opts = RunOptions::new(args.group.clone(), vec![args.topic.clone()]);
    opts.dlq_topic = args.dlq_topic.clone();
    opts.max_batch = args.max_batch;
    opts.exit_on_eof = args.exit_on_eof;
    let counter = Counter {
        codec: codec.clone(),
        last: Checksum::default(),
        pause: Duration::from_millis(args.pause_ms),
    };
    let shutdown = driftline_process::shutdown::on_signal();
    driftline_runtime::run(
        &args.kafka,
        &opts,
        store,
        counter,
        producer,
        codec,
        Metrics::new("counter"),
        shutdown,
    )
    .await?;
    Ok(())
}
