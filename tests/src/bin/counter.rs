//! A consumer built on the runtime that counts PredictionRequests and keeps a checksum of
//! their ids per partition in its state (optionally echoing each id to a topic). The crash tests kill it with SIGKILL and restart it; exactly-once
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
use driftline_tests::{Checksum, checksum_key};

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
    /// Echo each request id to this topic (in the same transaction as the count).
    #[arg(long)]
    echo_topic: Option<String>,
    /// Sleep this long after each batch, so a test can kill it mid-stream.
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
}

struct Counter {
    codec: Codec,
    store: Arc<Store>,
    /// Where each request id is echoed, if anywhere.
    echo: Option<String>,
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
        let key = checksum_key(record.partition);
        let current = txn
            .get(&key)
            .map_err(|e| Rejection {
                kind: "state",
                error: e.to_string(),
            })?
            .and_then(|b| Checksum::from_bytes(&b))
            .unwrap_or_default();
        let mut next = current;
        next.add(request.request_id.as_bytes());
        txn.put(key, next.to_bytes());
        Ok(self
            .echo
            .iter()
            .map(|topic| Output {
                topic: topic.clone(),
                key: request.request_id.clone(),
                payload: request.request_id.clone().into_bytes(),
            })
            .collect())
    }

    fn committed(&mut self) {
        // The test reads these lines to know how far a run got before it kills it.
        let mut total = Checksum::default();
        for (_, bytes) in self.store.scan_prefix(b"checksum/").unwrap_or_default() {
            total.merge(Checksum::from_bytes(&bytes).unwrap_or_default());
        }
        println!("committed count={}", total.count);
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
    let mut opts = RunOptions::new(args.group.clone(), vec![args.topic.clone()]);
    opts.dlq_topic = args.dlq_topic.clone();
    opts.max_batch = args.max_batch;
    opts.exit_on_eof = args.exit_on_eof;
    let counter = Counter {
        codec: codec.clone(),
        store: store.clone(),
        echo: args.echo_topic.clone(),
        pause: Duration::from_millis(args.pause_ms),
    };
    let shutdown = driftline_process::shutdown::on_signal();
    driftline_runtime::run(
        &args.kafka,
        &opts,
        store,
        counter,
        codec,
        Metrics::new("counter"),
        shutdown,
    )
    .await?;
    Ok(())
}
