//! The soak: the whole loop on Apache Kafka (a broker of its own, each service its own
//! process) under steady traffic for a long time, sampled every interval: requests in and
//! predictions out per second, end-to-end latency (a request produced to its prediction
//! readable by a read_committed reader: p50, p99, max), every group's lag, every process's
//! RSS and every state directory's size. It writes the samples as CSV, prints a summary,
//! and says whether memory and state level off: the last third of the run against the
//! middle third.
//!
//! `bash infra/soak.sh` runs it (30 minutes) and plots the CSV as `docs/soak.png`; it is a
//! bench run, not part of CI.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use driftline_kafka::KafkaArgs;
use driftline_kafka::topics::TopicSpec;
use driftline_schemas::codec::Codec;
use driftline_schemas::duration::parse_duration;
use driftline_schemas::events::PredictionLogged;
use driftline_schemas::topics;
use driftline_tests::whole_loop::{GROUPS, Loop, binaries, lags, last_line, repo, start_broker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::process::Command;

#[derive(Debug, Parser)]
#[command(
    about = "Run the whole loop on Apache Kafka under steady traffic for a long time; sample \
             throughput, end-to-end latency, RSS and state size",
    long_about = None
)]
struct Args {
    /// Requests per second (each with its actual), replayed in a loop over the data.
    #[arg(long, env = "DRIFTLINE_SOAK_RATE", default_value_t = 1500.0)]
    rate: f64,
    /// How long the traffic runs.
    #[arg(long, env = "DRIFTLINE_SOAK_DURATION", default_value = "30m", value_parser = parse_duration)]
    duration: Duration,
    /// How often to sample.
    #[arg(long, env = "DRIFTLINE_SOAK_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    interval: Duration,
    /// Write the samples here, as CSV.
    #[arg(long, default_value = "soak.csv")]
    csv: PathBuf,
    /// Keep the broker's data, the services' state and logs here [default: a temporary
    /// directory, removed at the end].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Replay from this event time; the trainer bootstraps from what comes before.
    #[arg(long, default_value = "2013-04-01")]
    from: String,
    /// Run nothing: judge the sizes in an earlier run's CSV and print the table.
    #[arg(long, value_name = "CSV")]
    judge: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.judge {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        size_table(&series_of_csv(&text)?);
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

/// One sample: the interval's rates and latencies, and sizes at its end.
struct Sample {
    t_s: f64,
    requests_per_s: f64,
    predictions_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    lag: BTreeMap<String, i64>,
    /// By process (the services and the broker).
    rss_mb: BTreeMap<String, f64>,
    /// By state directory (the services' and the broker's data).
    state_mb: BTreeMap<String, f64>,
}

async fn run(args: Args) -> Result<()> {
    let temp = tempfile::tempdir()?;
    let work = args.work_dir.clone().unwrap_or_else(|| temp.path().into());
    std::fs::create_dir_all(&work)?;
    let repo = repo();
    let (bin, send_data) = binaries("infra/soak.sh")?;
    let (broker, kafka) = start_broker(&work, "soak")?;
    driftline_kafka::topics::apply(&kafka, &TopicSpec::load(&repo.join("infra/topics.toml"))?)
        .await?;
    let spec_file = repo.join("data/flights.toml");
    let mut the_loop = Loop::new(
        bin,
        &work,
        &kafka,
        std::slice::from_ref(&spec_file),
        &args.from,
    )?;
    eprintln!("[soak] waiting for the bootstrap model");
    the_loop
        .wait_ready(Duration::from_secs(600))
        .await
        .with_context(|| format!("logs in {}", work.display()))?;

    let tail = Tail::start(&kafka)?;
    let rows = (args.rate * args.duration.as_secs_f64()).round() as u64;
    eprintln!(
        "[soak] {rows} requests at {:.0}/s for {} s, sampled every {} s",
        args.rate,
        args.duration.as_secs(),
        args.interval.as_secs()
    );
    let mut replay = Command::new(&send_data)
        .args(["--spec", &spec_file.display().to_string()])
        .args(["--from", &args.from])
        .args(["--rows", &rows.to_string()])
        .args(["--rate", &args.rate.to_string()])
        .args(["--label-delay", "1h", "--loop"])
        .env("DRIFTLINE_BOOTSTRAP_SERVERS", &kafka.bootstrap_servers)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(
            work.join("send_data.log"),
        )?))
        .kill_on_drop(true)
        .spawn()?;

    let mut csv = std::fs::File::create(&args.csv)
        .with_context(|| format!("creating {}", args.csv.display()))?;
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut all_latencies: Vec<f32> = Vec::new();
    let mut next = started + args.interval;
    loop {
        while Instant::now() < next {
            the_loop.supervise().await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        next += args.interval;
        let (requests, predictions, mut latencies) = tail.take();
        let secs = args.interval.as_secs_f64();
        latencies.sort_by(f32::total_cmp);
        all_latencies.extend_from_slice(&latencies);
        let mut rss_mb = BTreeMap::new();
        let mut state_mb = BTreeMap::new();
        for p in &the_loop.procs {
            rss_mb.insert(p.name.to_string(), p.pid().map_or(0.0, rss_of));
            state_mb.insert(p.name.to_string(), size_of(&p.state));
        }
        rss_mb.insert("broker".into(), broker.pid().map_or(0.0, rss_of));
        state_mb.insert("broker".into(), size_of(broker.dir()));
        let sample = Sample {
            t_s: started.elapsed().as_secs_f64(),
            requests_per_s: requests as f64 / secs,
            predictions_per_s: predictions as f64 / secs,
            p50_ms: quantile(&latencies, 0.5),
            p99_ms: quantile(&latencies, 0.99),
            max_ms: latencies.last().map_or(f64::NAN, |l| f64::from(*l)),
            lag: lags(&kafka).await.unwrap_or_default(),
            rss_mb,
            state_mb,
        };
        if samples.is_empty() {
            writeln!(csv, "{}", header(&sample))?;
        }
        writeln!(csv, "{}", row(&sample))?;
        csv.flush()?;
        eprintln!(
            "[soak] {:>5.0} s: {:>6.0} requests/s, {:>6.0} predictions/s, p99 {:>7.1} ms, predictor lag {}, RSS {:.0} MB, state {:.0} MB",
            sample.t_s,
            sample.requests_per_s,
            sample.predictions_per_s,
            sample.p99_ms,
            sample.lag.get(GROUPS[0].0).copied().unwrap_or(-1),
            sample.rss_mb.values().sum::<f64>(),
            sample.state_mb.values().sum::<f64>(),
        );
        samples.push(sample);
        if let Some(status) = replay.try_wait()? {
            if !status.success() {
                bail!(
                    "send_data failed ({status}): {}",
                    last_line(&work.join("send_data.log"))
                );
            }
            break;
        }
    }
    let exits: Vec<String> = the_loop
        .procs
        .iter()
        .flat_map(|p| p.exits.iter().map(move |e| format!("{}: {e}", p.name)))
        .collect();
    the_loop.stop().await;
    drop(tail);
    all_latencies.sort_by(f32::total_cmp);
    summarise(&args, &samples, &all_latencies, &exits);
    if !exits.is_empty() {
        bail!(
            "{} service exits nobody asked for; logs in {}",
            exits.len(),
            work.display()
        );
    }
    Ok(())
}

fn quantile(sorted: &[f32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[i])
}

fn header(s: &Sample) -> String {
    let mut cols = vec![
        "t_s",
        "requests_per_s",
        "predictions_per_s",
        "p50_ms",
        "p99_ms",
        "max_ms",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    cols.extend(s.lag.keys().map(|g| format!("lag_{g}")));
    cols.extend(s.rss_mb.keys().map(|p| format!("rss_mb_{p}")));
    cols.extend(s.state_mb.keys().map(|p| format!("state_mb_{p}")));
    cols.join(",")
}

fn row(s: &Sample) -> String {
    let mut cols = vec![
        format!("{:.1}", s.t_s),
        format!("{:.1}", s.requests_per_s),
        format!("{:.1}", s.predictions_per_s),
        format!("{:.2}", s.p50_ms),
        format!("{:.2}", s.p99_ms),
        format!("{:.2}", s.max_ms),
    ];
    cols.extend(s.lag.values().map(i64::to_string));
    cols.extend(s.rss_mb.values().map(|v| format!("{v:.1}")));
    cols.extend(s.state_mb.values().map(|v| format!("{v:.1}")));
    cols.join(",")
}

/// Prints the run's figures and, per process and state directory, its peak in each third
/// of the run and whether it levels off ([`levels_off`]).
fn summarise(args: &Args, samples: &[Sample], latencies: &[f32], exits: &[String]) {
    let n = samples.len();
    let mean = |f: &dyn Fn(&Sample) -> f64| samples.iter().map(f).sum::<f64>() / n.max(1) as f64;
    println!(
        "\nsoak: {:.0} s at {:.0} requests/s offered; {:.0} requests/s and {:.0} predictions/s on average",
        samples.last().map_or(0.0, |s| s.t_s),
        args.rate,
        mean(&|s| s.requests_per_s),
        mean(&|s| s.predictions_per_s),
    );
    println!(
        "end-to-end latency over {} predictions: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        quantile(latencies, 0.5),
        quantile(latencies, 0.99),
        quantile(latencies, 1.0),
    );
    let mut series: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for s in samples {
        for (name, mb) in &s.rss_mb {
            series
                .entry(format!("RSS MB {name}"))
                .or_default()
                .push(*mb);
        }
        for (name, mb) in &s.state_mb {
            series
                .entry(format!("state MB {name}"))
                .or_default()
                .push(*mb);
        }
    }
    size_table(&series);
    println!("\nservice exits nobody asked for: {}", exits.len());
    for e in exits {
        println!("  {e}");
    }
    eprintln!("[soak] samples in {}", args.csv.display());
}

/// Prints, per size, its median in each third of the run, its peak and whether it
/// levels off ([`levels_off`]).
fn size_table(series: &BTreeMap<String, Vec<f64>>) {
    println!(
        "\n| what | median, first third | median, middle third | median, last third | peak | verdict |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (what, values) in series {
        if values.len() < 3 {
            continue;
        }
        let [first, middle, last] = third_medians(values);
        let peak = values.iter().copied().fold(0.0, f64::max);
        let verdict = if levels_off(values) {
            "levels off"
        } else {
            "GROWS"
        };
        println!("| {what} | {first:.0} | {middle:.0} | {last:.0} | {peak:.0} | {verdict} |");
    }
}

/// The sizes in a CSV the soak wrote, by column (`rss_mb_<process>`, `state_mb_<dir>`).
fn series_of_csv(text: &str) -> Result<BTreeMap<String, Vec<f64>>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("an empty CSV")?.split(',').collect();
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for line in lines {
        for (name, cell) in header.iter().zip(line.split(',')) {
            let what = if let Some(p) = name.strip_prefix("rss_mb_") {
                format!("RSS MB {p}")
            } else if let Some(d) = name.strip_prefix("state_mb_") {
                format!("state MB {d}")
            } else {
                continue;
            };
            let mb: f64 = cell
                .parse()
                .with_context(|| format!("{name}: {cell:?} is not a number"))?;
            out.entry(what).or_default().push(mb);
        }
    }
    Ok(out)
}

/// The median of each third of a series.
fn third_medians(series: &[f64]) -> [f64; 3] {
    let n = series.len();
    let median = |r: std::ops::Range<usize>| {
        let mut v = series[r].to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    [
        median(0..n / 3),
        median(n / 3..2 * n / 3),
        median(2 * n / 3..n),
    ]
}

/// Whether a size levels off: its median over the last third of the run is at most a
/// tenth (or 5 MB) above its median over the middle third. Medians, not single samples or
/// peaks, because RocksDB's compactions and the allocator make sizes a sawtooth: one
/// sample on the top of a tooth (a flush just landed) against one at the bottom of
/// another says nothing about a trend, while a leak lifts the whole band.
fn levels_off(series: &[f64]) -> bool {
    let [_, middle, last] = third_medians(series);
    last - middle < (middle * 0.1).max(5.0)
}

/// A process's resident set, in MB (0 when it is gone).
fn rss_of(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The disk space every file under `dir` takes, in MB (allocated blocks: the broker's
/// index files are preallocated sparse files, far larger than what they hold).
fn size_of(dir: &Path) -> f64 {
    use std::os::unix::fs::MetadataExt;
    fn walk(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.blocks() * 512,
                Err(_) => 0,
            })
            .sum()
    }
    walk(dir) as f64 / (1 << 20) as f64
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Tails the requests and predictions topics from their ends (read_committed) on a thread
/// of its own and pairs them by request id: a request's latency runs from its Kafka
/// timestamp (set by send_data's producer) to the moment its prediction is read here.
struct Tail {
    counts: Arc<Mutex<(u64, u64, Vec<f32>)>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Requests or predictions that found no partner within this long are forgotten (bad
/// requests go to the dead-letter topic and have no prediction).
const FORGET_AFTER_MS: i64 = 300_000;

impl Tail {
    fn start(kafka: &KafkaArgs) -> Result<Self> {
        let mut config = kafka.consumer_config("driftline-soak-tail");
        config.set("fetch.wait.max.ms", "10");
        let consumer: BaseConsumer = config.create()?;
        let mut tpl = TopicPartitionList::new();
        for topic in [topics::REQUESTS, topics::PREDICTIONS] {
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            for t in metadata.topics() {
                for p in t.partitions() {
                    tpl.add_partition_offset(topic, p.id(), Offset::End)?;
                }
            }
        }
        consumer.assign(&tpl)?;
        let counts = Arc::new(Mutex::new((0, 0, Vec::new())));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counts.clone(), stop.clone());
        let thread = std::thread::spawn(move || tail(&consumer, &c, &s));
        Ok(Self {
            counts,
            stop,
            thread: Some(thread),
        })
    }

    /// Requests and predictions read, and the latencies (ms) measured, since the last call.
    fn take(&self) -> (u64, u64, Vec<f32>) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *c)
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tail(consumer: &BaseConsumer, counts: &Mutex<(u64, u64, Vec<f32>)>, stop: &AtomicBool) {
    let codec = Codec::single_object();
    // Whichever half comes first waits for the other: request id -> when (ms).
    let mut requested: HashMap<String, i64> = HashMap::new();
    let mut predicted: HashMap<String, i64> = HashMap::new();
    let mut swept = now_ms();
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let now = now_ms();
        let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
        if m.topic() == topics::REQUESTS {
            c.0 += 1;
            let (Some(key), Some(sent)) = (m.key(), m.timestamp().to_millis()) else {
                continue;
            };
            let id = String::from_utf8_lossy(key).into_owned();
            match predicted.remove(&id) {
                Some(read) => c.2.push((read - sent) as f32),
                None => {
                    requested.insert(id, sent);
                }
            }
        } else if let Ok(p) = codec.decode::<PredictionLogged>(m.payload().unwrap_or_default()) {
            c.1 += 1;
            match requested.remove(&p.request_id) {
                Some(sent) => c.2.push((now - sent) as f32),
                None => {
                    predicted.insert(p.request_id, now);
                }
            }
        }
        drop(c);
        if now - swept > FORGET_AFTER_MS / 10 {
            requested.retain(|_, t| now - *t < FORGET_AFTER_MS);
            predicted.retain(|_, t| now - *t < FORGET_AFTER_MS);
            swept = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sawtooth_levels_off_even_when_the_last_sample_is_a_new_peak() {
        let tooth = [90.0, 120.0, 150.0, 180.0];
        let mut series: Vec<f64> = tooth.iter().cycle().take(30).copied().collect();
        series.push(215.0);
        assert!(levels_off(&series));
    }

    #[test]
    fn a_csv_is_read_back_by_column() {
        let csv = "t_s,rss_mb_trainer,state_mb_joiner,lag_x\n10,500.5,74,3\n20,510,80,0\n";
        let s = series_of_csv(csv).unwrap();
        assert_eq!(s["RSS MB trainer"], [500.5, 510.0]);
        assert_eq!(s["state MB joiner"], [74.0, 80.0]);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_steady_climb_grows() {
        let series: Vec<f64> = (0..30).map(|i| 100.0 + 3.0 * f64::from(i)).collect();
        assert!(!levels_off(&series));
    }

    #[test]
    fn a_climb_under_a_sawtooth_grows() {
        let series: Vec<f64> = (0..30)
            .map(|i| 100.0 + 2.0 * f64::from(i) + [0.0, 30.0, 60.0][i as usize % 3])
            .collect();
        assert!(!levels_off(&series));
    }
}
