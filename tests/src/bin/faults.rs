//! The fault suite: the whole loop on Apache Kafka (a broker of its own), each service its
//! own process under a small supervisor, a data replay as traffic, and faults injected
//! while it runs: kill -9 of random services, a broker kill -9 and restart, a broker
//! outage, a full disk under the monitor's state, and a 10 MB message on every input
//! topic. Then it waits until every consumer group has read everything and accounts for
//! every event: each request predicted once, each actual joined once, each bad message in
//! the dead-letter topic, and each output's content what an undisturbed run makes of the
//! same input ([`Undisturbed`]). It prints the table and exits non-zero on any loss,
//! duplicate, difference, hang or unaccounted message.
//!
//! `bash infra/faults.sh` runs the full form (100k requests, 20 kills, a 60 s outage);
//! `--short` is the form CI runs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use driftline_kafka::KafkaArgs;
use driftline_kafka::topics::TopicSpec;
use driftline_model::TrainedModel;
use driftline_schemas::codec::Codec;
use driftline_schemas::duration::parse_duration;
use driftline_schemas::events::{
    Actual, DeadLetter, FeatureValue, Labelled, ModelPublished, PredictionLogged, PredictionRequest,
};
use driftline_schemas::spec::{FeatureSpec, Kind};
use driftline_schemas::topics;
use driftline_tests::Flow;
use driftline_tests::whole_loop::{Loop, SERVICES, binaries, replay, repo, start_broker};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[derive(Debug, Parser)]
#[command(
    about = "Run the whole loop on Apache Kafka under kill -9, broker loss, a full disk and \
             huge messages; account for every event",
    long_about = None
)]
struct Args {
    /// Requests to replay (each with its actual).
    #[arg(long, env = "DRIFTLINE_FAULTS_REQUESTS", default_value_t = 100_000)]
    requests: u64,
    /// kill -9 of a random service, this many times.
    #[arg(long, env = "DRIFTLINE_FAULTS_KILLS", default_value_t = 20)]
    kills: u32,
    /// How long the broker stays down in the outage.
    #[arg(long, env = "DRIFTLINE_FAULTS_OUTAGE", default_value = "60s", value_parser = parse_duration)]
    outage: Duration,
    /// How long the disk under the monitor's state stays full.
    #[arg(long, env = "DRIFTLINE_FAULTS_DISK_FULL", default_value = "20s", value_parser = parse_duration)]
    disk_full: Duration,
    /// The replay and the faults are spread over about this long.
    #[arg(long, env = "DRIFTLINE_FAULTS_SPAN", default_value = "5m", value_parser = parse_duration)]
    span: Duration,
    /// Bad messages, as a share of the requests, spread over the replay: every kind of
    /// garbage on the requests, actuals and predictions topics.
    #[arg(long, env = "DRIFTLINE_FAULTS_GARBAGE", default_value_t = 0.1)]
    garbage: f64,
    /// The CI form: 10k requests, 5 kills, a 15 s outage, over about a minute.
    #[arg(long)]
    short: bool,
    /// Seed of the fault schedule (which service, when).
    #[arg(long, env = "DRIFTLINE_FAULTS_SEED", default_value_t = 1)]
    seed: u64,
    /// Keep the broker's data, the services' state and logs here [default: a temporary
    /// directory, removed at the end].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Replay from this event time; the trainer bootstraps from what comes before.
    #[arg(long, default_value = "2013-04-01")]
    from: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Kill(usize),
    BrokerKill,
    BrokerOutage,
    DiskFull,
    HugeMessages,
}

/// Input topics that get a 10 MB message, and how many dead letters each makes (one per
/// group that reads it; the registry followers skip a bad model record without one).
const HUGE_TARGETS: [(&str, u64); 6] = [
    (topics::REQUESTS, 1),
    (topics::PREDICTIONS, 2),
    (topics::ACTUALS, 1),
    (topics::LABELLED, 2),
    (topics::RETRAIN, 1),
    (topics::MODELS, 0),
];

const HUGE_BYTES: usize = 10 * 1024 * 1024;

/// The monitor's place in [`SERVICES`]: its state is on the disk that fills up.
const MONITOR: usize = 2;

/// The monitor's state directory on a small tmpfs, so the suite can fill it.
struct SmallDisk {
    dir: PathBuf,
    mounted: bool,
}

impl SmallDisk {
    fn mount(dir: &Path) -> Self {
        let _ = std::fs::create_dir_all(dir);
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512m", "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("[faults] cannot mount a tmpfs (needs root): the disk-full fault is skipped");
        }
        Self {
            dir: dir.to_path_buf(),
            mounted,
        }
    }

    /// Fills the disk to its last byte; returns the bytes written.
    fn fill(&self) -> Result<u64> {
        use std::io::Write;
        let mut f = std::fs::File::create(self.filler())?;
        let mut written = 0u64;
        for size in [1 << 20, 4096, 1] {
            let chunk = vec![0u8; size];
            while f.write_all(&chunk).is_ok() {
                written += size as u64;
            }
        }
        Ok(written)
    }

    fn free(&self) -> Result<()> {
        Ok(std::fs::remove_file(self.filler())?)
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
        }
    }
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.short {
        args.requests = 10_000;
        args.kills = 5;
        args.outage = Duration::from_secs(15);
        args.disk_full = Duration::from_secs(10);
        args.span = Duration::from_secs(60);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    assert_eq!(SERVICES[MONITOR], "monitor");
    let temp = tempfile::tempdir()?;
    let work = args.work_dir.clone().unwrap_or_else(|| temp.path().into());
    std::fs::create_dir_all(&work)?;
    let repo = repo();
    let (bin, send_data) = binaries("infra/faults.sh")?;
    let (broker, kafka) = start_broker(&work, "faults")?;
    // Every topic takes a 10 MB message, so the huge messages reach the consumers.
    let mut spec = TopicSpec::load(&repo.join("infra/topics.toml"))?;
    for t in &mut spec.topics {
        t.config
            .insert("max.message.bytes".into(), (16 << 20).to_string());
    }
    driftline_kafka::topics::apply(&kafka, &spec).await?;

    let disk = SmallDisk::mount(&work.join("monitor"));
    let spec_file = repo.join("data/flights.toml");
    let mut the_loop = Loop::new(
        bin,
        &work,
        &kafka,
        std::slice::from_ref(&spec_file),
        &args.from,
    )?;
    // Retrain requests early enough to land inside the short replay.
    the_loop.procs[2]
        .env
        .push(("DRIFTLINE_MONITOR_MIN_SAMPLES".into(), "2000".into()));
    eprintln!("[faults] waiting for the bootstrap model");
    the_loop
        .wait_ready(Duration::from_secs(600))
        .await
        .with_context(|| format!("logs in {}", work.display()))?;

    // Traffic: the replay at a rate that spreads it over the span. Its producer waits
    // through outages (message.timeout.ms=0: never give up a message).
    let rate = (args.requests as f64 / args.span.as_secs_f64()).max(1.0);
    eprintln!(
        "[faults] replaying {} requests at {rate:.0}/s while injecting faults",
        args.requests
    );
    let mut replaying = replay(
        &send_data,
        &spec_file,
        &args.from,
        args.requests,
        rate,
        &kafka,
        &work.join("send_data.log"),
    )?;

    let bad_count = (args.requests as f64 * args.garbage).round() as u64;
    let bad = tokio::spawn(send_garbage(
        kafka.clone(),
        FeatureSpec::load(&spec_file)?,
        bad_count,
        args.span,
        args.seed,
    ));

    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut schedule: Vec<Fault> = (0..args.kills)
        .map(|_| Fault::Kill(rng.random_range(0..SERVICES.len())))
        .chain([Fault::BrokerKill, Fault::BrokerOutage, Fault::HugeMessages])
        .chain(disk.mounted.then_some(Fault::DiskFull))
        .collect();
    for i in (1..schedule.len()).rev() {
        schedule.swap(i, rng.random_range(0..=i));
    }
    let gap = args.span / (schedule.len() as u32 + 1);
    let mut injected: BTreeMap<String, u32> = BTreeMap::new();
    for fault in &schedule {
        let wait = gap.mul_f64(rng.random_range(0.5..1.5));
        the_loop.supervise_until(Instant::now() + wait).await?;
        let label = match *fault {
            Fault::Kill(i) => {
                the_loop.kill_and_restart(i).await?;
                format!("kill -9 {}", SERVICES[i])
            }
            Fault::BrokerKill => {
                broker.kill()?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                broker.start()?;
                "broker kill -9, restarted".into()
            }
            Fault::BrokerOutage => {
                broker.kill()?;
                the_loop
                    .supervise_until(Instant::now() + args.outage)
                    .await?;
                broker.start()?;
                format!("broker outage {} s", args.outage.as_secs())
            }
            Fault::DiskFull => {
                // RocksDB writes into a preallocated log until its memtable flushes, so a
                // full disk alone may go unnoticed for minutes; a monitor that starts (after
                // a crash, kill -9 here) on a full disk meets it at once.
                let bytes = disk.fill()?;
                eprintln!("[faults] filled the monitor's disk with {} MB", bytes >> 20);
                the_loop.kill_and_restart(MONITOR).await?;
                the_loop
                    .supervise_until(Instant::now() + args.disk_full)
                    .await?;
                disk.free()?;
                format!(
                    "monitor disk full {} s, monitor kill -9 in it",
                    args.disk_full.as_secs()
                )
            }
            Fault::HugeMessages => {
                huge_messages(&kafka).await?;
                "10 MB message on each input topic".into()
            }
        };
        eprintln!("[faults] injected: {label}");
        *injected.entry(label).or_default() += 1;
    }

    eprintln!("[faults] waiting for the replay to finish");
    the_loop.finish(&mut replaying).await?;

    let bad_sent = bad.await??;
    eprintln!("[faults] waiting until every group has read everything");
    let hung = the_loop.drain(&kafka, Duration::from_secs(600)).await?;
    let drained = hung.is_empty();
    // Let the last batches' outputs land before reading them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let exits: Vec<(&str, Vec<String>)> = the_loop
        .procs
        .iter()
        .map(|p| (p.name, p.exits.clone()))
        .collect();
    the_loop.stop().await;

    let ledger = Ledger::read(&kafka).await?;
    let mut failures = report(&args, &injected, &bad_sent, &ledger, &exits, drained, &hung);
    if disk.mounted {
        // The fault must have bitten: the monitor saw the full disk and said so.
        let seen = std::fs::read_to_string(&the_loop.procs[MONITOR].log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("No space left on device"))
            .count();
        println!("The monitor's log names the full disk on {seen} lines\n");
        if seen == 0 {
            failures.push("the full disk never reached the monitor".into());
        }
    }
    drop(disk);
    drop(broker);
    driftline_tests::verdict("faults", &failures, &work)
}

/// A 10 MB message of garbage on each input topic.
async fn huge_messages(kafka: &KafkaArgs) -> Result<()> {
    let producer: FutureProducer = kafka
        .producer_config()
        .set("message.max.bytes", (16 << 20).to_string())
        .create()?;
    let garbage: Vec<u8> = (0..HUGE_BYTES).map(|i| (i * 31 % 251) as u8).collect();
    for (topic, _) in HUGE_TARGETS {
        producer
            .send(
                FutureRecord::to(topic).key("huge").payload(&garbage),
                Duration::from_secs(60),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("producing 10 MB to {topic}: {e}"))?;
    }
    Ok(())
}

/// What the topics hold at the end.
#[derive(Default)]
struct Ledger {
    /// Request ids sent, and how often each was sent.
    requests: HashMap<String, u32>,
    actuals: HashMap<String, u32>,
    /// Predicted request ids, and how many records each has.
    predictions: HashMap<String, u32>,
    labelled: HashMap<String, u32>,
    /// Dead letters by source topic, what was sent (the key's label) and error kind.
    dead_letters: BTreeMap<(String, String), BTreeMap<String, u64>>,
    /// Outputs whose content is not what an undisturbed run makes of the same input, by
    /// stage: how many, and the first few.
    differences: BTreeMap<&'static str, (u64, Vec<String>)>,
}

/// What an undisturbed run makes of each input, to hold the outputs against: the
/// features each request was sent with, the actual sent for it, and every model version
/// the models topic holds. A prediction is what its version predicts for the request's
/// features, whenever and however often it was made; a labelled pair is the logged
/// prediction beside the sent actual.
#[derive(Default)]
struct Undisturbed {
    features: HashMap<String, String>,
    actuals: HashMap<String, String>,
    models: HashMap<(String, i64), TrainedModel>,
    /// Each request's logged predictions (one per time it was sent).
    predictions: HashMap<String, Vec<String>>,
}

impl Undisturbed {
    /// Why a prediction differs from the undisturbed one, if it does.
    fn prediction(&mut self, p: &PredictionLogged) -> Option<String> {
        let id = &p.request_id;
        let Some(sent) = self.features.get(id) else {
            return None; // never sent: counted as stray
        };
        if *sent != format!("{:?}", p.features) {
            return Some(format!("{id}: features are not the request's"));
        }
        let Some(model) = self.models.get(&(p.model.clone(), p.model_version)) else {
            return Some(format!(
                "{id}: {} version {} is not on the models topic",
                p.model, p.model_version
            ));
        };
        let (made, expected) = (
            format!("{:?}", p.prediction),
            format!("{:?}", model.predict(&p.features)),
        );
        if made != expected {
            return Some(format!(
                "{id}: predicted {made}, version {} predicts {expected}",
                p.model_version
            ));
        }
        self.predictions
            .entry(id.clone())
            .or_default()
            .push(format!("{p:?}"));
        None
    }

    /// Why a labelled pair differs from the logged prediction and the sent actual, if it does.
    fn labelled(&self, l: &Labelled) -> Option<String> {
        let id = &l.prediction.request_id;
        let logged = self.predictions.get(id)?;
        if !logged.contains(&format!("{:?}", l.prediction)) {
            return Some(format!("{id}: its prediction is not the one logged"));
        }
        let sent = self.actuals.get(id)?;
        (*sent != format!("{:?}", l.actual))
            .then(|| format!("{id}: its actual is not the one sent"))
    }
}

fn differed(l: &mut Ledger, stage: &'static str, why: Option<String>) {
    let entry = l.differences.entry(stage).or_default();
    if let Some(why) = why {
        entry.0 += 1;
        if entry.1.len() < 3 {
            entry.1.push(why);
        }
    }
}

impl Ledger {
    async fn read(kafka: &KafkaArgs) -> Result<Self> {
        let kafka = kafka.clone();
        tokio::task::spawn_blocking(move || {
            let codec = Codec::single_object();
            let mut l = Ledger::default();
            let mut undisturbed = Undisturbed::default();
            for_each(&kafka, topics::MODELS, |b| {
                if let Ok(m) = codec.decode::<ModelPublished>(b)
                    && let Ok(model) = TrainedModel::from_bytes(&m.model_bytes)
                {
                    undisturbed.models.insert((m.model, m.version), model);
                }
            })?;
            for_each(&kafka, topics::REQUESTS, |b| {
                if let Ok(r) = codec.decode::<PredictionRequest>(b) {
                    undisturbed
                        .features
                        .entry(r.request_id.clone())
                        .or_insert_with(|| format!("{:?}", r.features));
                    *l.requests.entry(r.request_id).or_default() += 1;
                }
            })?;
            for_each(&kafka, topics::ACTUALS, |b| {
                if let Ok(a) = codec.decode::<Actual>(b) {
                    undisturbed
                        .actuals
                        .entry(a.request_id.clone())
                        .or_insert_with(|| format!("{a:?}"));
                    *l.actuals.entry(a.request_id).or_default() += 1;
                }
            })?;
            for_each(&kafka, topics::PREDICTIONS, |b| {
                if let Ok(p) = codec.decode::<PredictionLogged>(b) {
                    let why = undisturbed.prediction(&p);
                    differed(&mut l, "predictions", why);
                    *l.predictions.entry(p.request_id).or_default() += 1;
                }
            })?;
            for_each(&kafka, topics::LABELLED, |b| {
                if let Ok(p) = codec.decode::<Labelled>(b) {
                    let why = undisturbed.labelled(&p);
                    differed(&mut l, "labelled pairs", why);
                    *l.labelled.entry(p.prediction.request_id).or_default() += 1;
                }
            })?;
            for_each(&kafka, topics::DLQ, |b| {
                if let Ok(d) = codec.decode::<DeadLetter>(b) {
                    let key =
                        String::from_utf8_lossy(d.key.as_deref().unwrap_or_default()).into_owned();
                    *l.dead_letters
                        .entry((d.source_topic, label_of(&key).to_string()))
                        .or_default()
                        .entry(d.error_kind)
                        .or_default() += 1;
                }
            })?;
            Ok(l)
        })
        .await?
    }
}

/// Calls `f` with every message's payload as a read_committed reader sees them
/// ([`driftline_tests::read_committed`]).
fn for_each(kafka: &KafkaArgs, topic: &str, mut f: impl FnMut(&[u8])) -> Result<()> {
    driftline_tests::read_committed(kafka, topic, |m| f(m.payload().unwrap_or_default()))
}

/// Prints the table; returns what failed.
fn report(
    args: &Args,
    injected: &BTreeMap<String, u32>,
    bad: &BTreeMap<(String, String), u64>,
    l: &Ledger,
    exits: &[(&str, Vec<String>)],
    drained: bool,
    hung: &[String],
) -> Vec<String> {
    let mut failures = Vec::new();
    println!("\nFaults injected (seed {})", args.seed);
    for (fault, n) in injected {
        println!("  {n:>4}  {fault}");
    }
    println!("  {:>4}  total\n", injected.values().sum::<u32>());

    // "differ": outputs whose content is not what an undisturbed run makes of the same
    // input (see `Undisturbed`).
    println!(
        "{:<34} {:>9} {:>9} {:>6} {:>7} {:>18} {:>7}",
        "stage", "in", "out", "lost", "stray", "duplicated", "differ"
    );
    // The replay's events; the bad messages are accounted for below.
    let real = |m: &HashMap<String, u32>| -> HashMap<String, u32> {
        m.iter()
            .filter(|(id, _)| !id.starts_with(GARBAGE))
            .map(|(id, n)| (id.clone(), *n))
            .collect()
    };
    let (requests, predictions) = (real(&l.requests), real(&l.predictions));
    let (actuals, labelled) = (real(&l.actuals), real(&l.labelled));
    let rows = [
        (
            "requests -> predictions",
            "predictions",
            &requests,
            &predictions,
        ),
        (
            "actuals -> labelled pairs",
            "labelled pairs",
            &actuals,
            &labelled,
        ),
    ];
    let mut examples = Vec::new();
    for (stage, output, from, to) in rows {
        let (differ, some) = l.differences.get(output).cloned().unwrap_or_default();
        examples.extend(some);
        if differ > 0 {
            failures.push(format!("{stage}: {differ} differ from an undisturbed run"));
        }
        let Flow {
            lost,
            stray,
            copies_in,
            copies_out,
        } = Flow::of(from, to);
        // A request sent twice is predicted twice; an actual sent twice is joined once.
        let allowed = if stage.starts_with("requests") {
            copies_in
        } else {
            0
        };
        let duplicated = copies_out.saturating_sub(allowed);
        println!(
            "{stage:<34} {:>9} {:>9} {lost:>6} {stray:>7} {duplicated:>18} {differ:>7}",
            from.len(),
            to.len(),
        );
        if duplicated > 0 {
            failures.push(format!("{stage}: {duplicated} duplicated"));
        }
        if lost > 0 {
            failures.push(format!("{stage}: {lost} lost"));
        }
        if stray > 0 {
            failures.push(format!("{stage}: {stray} ids never sent"));
        }
    }
    for e in examples {
        println!("  differs: {e}");
    }
    let sent_twice = Flow::of(&requests, &HashMap::new()).copies_in
        + Flow::of(&actuals, &HashMap::new()).copies_in;
    println!("{:<34} {:>9}", "replay messages sent twice", sent_twice);
    if requests.len() as u64 != args.requests {
        failures.push(format!(
            "the replay sent {} distinct requests, not {}",
            requests.len(),
            args.requests
        ));
    }
    // Bad requests that are valid all the same (an unknown category, a huge value) are
    // predicted; a bad message is never joined (its actual is never sent, or it is one).
    let served: u64 = bad
        .iter()
        .filter(|((topic, label), _)| {
            topic == topics::REQUESTS
                && GARBAGE_KINDS
                    .iter()
                    .any(|g| g.topic == topic && g.label == label && g.letters == 0)
        })
        .map(|(_, n)| n)
        .sum();
    let predicted_bad = (l.predictions.len() - predictions.len()) as u64;
    let joined_bad = (l.labelled.len() - labelled.len()) as u64;
    println!(
        "{:<34} {served:>9} {predicted_bad:>9}",
        "bad but valid requests -> predicted"
    );
    if predicted_bad != served || joined_bad != 0 {
        failures.push(format!(
            "{predicted_bad} bad requests predicted (expected {served}), {joined_bad} joined (expected 0)"
        ));
    }

    println!("\nDead letters: what was sent, and what came back");
    println!(
        "  {:<24} {:<22} {:>6} {:>9} {:>9}  reasons",
        "topic", "sent", "count", "expected", "letters"
    );
    let injected_huge = injected.keys().any(|k| k.starts_with("10 MB"));
    let mut expected: Vec<(String, String, u64, u64, Option<&str>)> = HUGE_TARGETS
        .iter()
        .map(|(t, per)| {
            let n = u64::from(injected_huge);
            (
                t.to_string(),
                "huge".to_string(),
                n,
                n * per,
                Some("decode"),
            )
        })
        .collect();
    for ((topic, label), n) in bad {
        let g = GARBAGE_KINDS
            .iter()
            .find(|g| g.label == label && g.topic == topic)
            .expect("a known kind");
        expected.push((topic.clone(), label.clone(), *n, n * g.letters, g.reason));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (topic, label, n, want, reason) in &expected {
        let reasons = l
            .dead_letters
            .get(&(topic.clone(), label.clone()))
            .cloned()
            .unwrap_or_default();
        seen.insert((topic.clone(), label.clone()));
        let got: u64 = reasons.values().sum();
        let shown: Vec<String> = reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "  {topic:<24} {label:<22} {n:>6} {want:>9} {got:>9}  {}",
            shown.join(", ")
        );
        if got != *want {
            failures.push(format!(
                "{got} dead letters for {label} on {topic}, expected {want}"
            ));
        }
        if let Some(r) = reason
            && reasons.keys().any(|k| k != r)
        {
            failures.push(format!(
                "{label} on {topic}: reasons {shown:?}, expected {r}"
            ));
        }
    }
    for ((topic, label), reasons) in &l.dead_letters {
        if !seen.contains(&(topic.clone(), label.clone())) {
            let n: u64 = reasons.values().sum();
            println!(
                "  {topic:<24} {label:<22} {:>6} {:>9} {n:>9}  {reasons:?}",
                "-", 0
            );
            failures.push(format!(
                "{n} unexpected dead letters ({label}) from {topic}"
            ));
        }
    }

    println!("\nService exits nobody asked for (restarted by the supervisor)");
    for (name, list) in exits {
        println!("  {name:<10} {}", list.len());
        for e in list {
            println!("             {e}");
        }
    }
    if !drained {
        failures.push(format!(
            "not drained within 10 minutes: {}",
            hung.join(", ")
        ));
    }
    println!();
    failures
}

/// The prefix of every bad message's key and id.
const GARBAGE: &str = "garbage-";

/// What a dead letter's key says was sent: a garbage kind, the 10 MB message, or else.
fn label_of(key: &str) -> &str {
    if key == "huge" {
        return "huge";
    }
    key.strip_prefix(GARBAGE)
        .and_then(|rest| rest.rsplit_once('-'))
        .map_or("other", |(label, _)| label)
}

/// A kind of bad message: where it goes, and what driftline must do with it.
struct GarbageKind {
    label: &'static str,
    topic: &'static str,
    /// Dead letters each makes (one per consumer group that reads the topic; 0: accepted).
    letters: u64,
    /// The dead letters' kind.
    reason: Option<&'static str>,
}

const fn kind(
    label: &'static str,
    topic: &'static str,
    letters: u64,
    reason: Option<&'static str>,
) -> GarbageKind {
    GarbageKind {
        label,
        topic,
        letters,
        reason,
    }
}

const GARBAGE_KINDS: [GarbageKind; 15] = [
    kind("random-bytes", topics::REQUESTS, 1, Some("decode")),
    kind("truncated-avro", topics::REQUESTS, 1, Some("decode")),
    kind("unknown-fingerprint", topics::REQUESTS, 1, Some("decode")),
    kind("nan", topics::REQUESTS, 1, Some("validation")),
    kind("infinity", topics::REQUESTS, 1, Some("validation")),
    kind("missing-feature", topics::REQUESTS, 1, Some("validation")),
    kind("extra-feature", topics::REQUESTS, 1, Some("validation")),
    kind("mistyped-feature", topics::REQUESTS, 1, Some("validation")),
    kind("unknown-model", topics::REQUESTS, 1, Some("validation")),
    // Served: a category the model has not seen is a value like any other.
    kind("unknown-category", topics::REQUESTS, 0, None),
    kind("huge-value", topics::REQUESTS, 0, None),
    kind("random-bytes", topics::ACTUALS, 1, Some("decode")),
    kind("truncated-avro", topics::ACTUALS, 1, Some("decode")),
    // Waits for a prediction that never comes, and is given up on after --max-wait.
    kind("unknown-request", topics::ACTUALS, 0, None),
    // Read by the joiner and the monitor.
    kind("random-bytes", topics::PREDICTIONS, 2, Some("decode")),
];

/// The `n`th message of a garbage kind.
fn garbage(g: &GarbageKind, spec: &FeatureSpec, n: u64, codec: &Codec) -> Result<Vec<u8>> {
    let id = format!("{GARBAGE}{}-{n}", g.label);
    // 2013-04-01, where the replay starts.
    let event_time = 1_364_774_400_000;
    let mut features: driftline_schemas::events::Features = spec
        .features
        .iter()
        .map(|f| {
            let v = match f.kind {
                Kind::Numeric => FeatureValue::Number(1.0),
                Kind::Categorical => FeatureValue::Category("UA".into()),
            };
            (f.name.clone(), v)
        })
        .collect();
    let numeric = spec.features.iter().find(|f| f.kind == Kind::Numeric);
    let categorical = spec.features.iter().find(|f| f.kind == Kind::Categorical);
    let required = spec.features.iter().find(|f| !f.nullable);
    let set = |features: &mut driftline_schemas::events::Features, f: Option<_>, v| {
        if let Some(f) = f {
            let f: &driftline_schemas::spec::FeatureDef = f;
            features.insert(f.name.clone(), v);
        }
    };
    let mut model = spec.model.name.clone();
    let mut bytes_of_request = true;
    match (g.topic, g.label) {
        (_, "random-bytes") => {
            let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            return Ok((0..64 + n % 200)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect());
        }
        (_, "nan") => set(&mut features, numeric, FeatureValue::Number(f64::NAN)),
        (_, "infinity") => set(&mut features, numeric, FeatureValue::Number(f64::INFINITY)),
        (_, "missing-feature") => {
            if let Some(f) = required {
                features.remove(&f.name);
            }
        }
        (_, "extra-feature") => {
            features.insert("no_such_feature".into(), FeatureValue::Number(1.0));
        }
        (_, "mistyped-feature") => {
            set(&mut features, numeric, FeatureValue::Category("one".into()))
        }
        (_, "unknown-model") => model = "no-such-model".into(),
        (_, "unknown-category") => set(
            &mut features,
            categorical,
            FeatureValue::Category("never-seen".into()),
        ),
        (_, "huge-value") => set(
            &mut features,
            categorical,
            FeatureValue::Category("x".repeat(32 * 1024)),
        ),
        (t, _) if t == topics::ACTUALS => bytes_of_request = false,
        _ => {}
    }
    let mut bytes = if bytes_of_request {
        codec.encode(&PredictionRequest {
            request_id: id,
            model,
            event_time,
            features,
        })?
    } else {
        codec.encode(&Actual {
            request_id: id,
            model,
            event_time,
            value: Some(1.0),
            class: None,
            observed_at: event_time,
        })?
    };
    match g.label {
        "truncated-avro" => bytes.truncate(bytes.len() / 2),
        // The single-object header's schema fingerprint (bytes 2..10) of no known schema.
        "unknown-fingerprint" => bytes[2..10].iter_mut().for_each(|b| *b ^= 0xa5),
        _ => {}
    }
    Ok(bytes)
}

/// Sends `count` bad messages, the kinds in turn, spread over `span`; returns how many of
/// each went where.
async fn send_garbage(
    kafka: KafkaArgs,
    spec: FeatureSpec,
    count: u64,
    span: Duration,
    seed: u64,
) -> Result<BTreeMap<(String, String), u64>> {
    let mut producer_config = kafka.producer_config();
    // Through outages too: a bad message is never given up on.
    producer_config.set("message.timeout.ms", "0");
    let producer: FutureProducer = producer_config.create()?;
    let codec = Codec::single_object();
    let mut sent = BTreeMap::new();
    let every = span.div_f64(count.max(1) as f64);
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(1));
    let mut deliveries = Vec::new();
    for i in 0..count {
        let g = &GARBAGE_KINDS[rng.random_range(0..GARBAGE_KINDS.len())];
        let n = sent
            .entry((g.topic.to_string(), g.label.to_string()))
            .or_insert(0u64);
        let key = format!("{GARBAGE}{}-{n}", g.label);
        let payload = garbage(g, &spec, *n, &codec)?;
        *n += 1;
        let record = FutureRecord::to(g.topic).key(&key).payload(&payload);
        deliveries.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("sending garbage: {e}"))?,
        );
        if i % 100 == 99 {
            tokio::time::sleep(every * 100).await;
        }
    }
    for d in deliveries {
        d.await?
            .map_err(|(e, _)| anyhow::anyhow!("delivering garbage: {e}"))?;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use driftline_model::{LabelledRow, Target};
    use driftline_schemas::events::{Prediction, PredictionSource, SourcePosition};

    use super::*;

    /// y = 2x + 1, fitted exactly, as version 3 of `toy`.
    fn undisturbed() -> Undisturbed {
        let spec = FeatureSpec::from_toml(include_str!("../../fixtures/toy.toml")).unwrap();
        let rows: Vec<LabelledRow> = (0..100)
            .map(|i| LabelledRow {
                event_time: i64::from(i),
                features: features(f64::from(i) / 10.0),
                target: Target::Value(2.0 * f64::from(i) / 10.0 + 1.0),
            })
            .collect();
        let mut u = Undisturbed::default();
        let model = driftline_model::fit(&spec, &rows).unwrap();
        u.models.insert(("toy".into(), 3), model);
        u.features
            .insert("r1".into(), format!("{:?}", features(4.0)));
        u
    }

    fn features(x: f64) -> driftline_schemas::events::Features {
        [
            ("x".to_string(), FeatureValue::Number(x)),
            ("colour".to_string(), FeatureValue::Category("red".into())),
        ]
        .into()
    }

    fn logged(u: &Undisturbed, x: f64, version: i64) -> PredictionLogged {
        let prediction = u
            .models
            .get(&("toy".into(), 3))
            .map_or_else(Prediction::default, |m| m.predict(&features(4.0)));
        PredictionLogged {
            request_id: "r1".into(),
            model: "toy".into(),
            model_version: version,
            event_time: 0,
            features: features(x),
            prediction,
            served_at: 7,
            latency_us: 1,
            source: PredictionSource::Kafka,
            shadow: None,
        }
    }

    #[test]
    fn a_prediction_differs_when_its_version_would_not_make_it_or_its_features_changed() {
        let mut u = undisturbed();
        let good = logged(&u, 4.0, 3);
        assert_eq!(u.prediction(&good), None);
        let mut off = good.clone();
        off.prediction.value = off.prediction.value.map(|v| v + 1e-9);
        assert!(u.prediction(&off).unwrap().contains("version 3 predicts"));
        assert!(
            u.prediction(&logged(&u, 4.5, 3))
                .unwrap()
                .contains("features")
        );
        assert!(
            u.prediction(&logged(&u, 4.0, 9))
                .unwrap()
                .contains("not on the models topic")
        );
    }

    #[test]
    fn a_labelled_pair_differs_unless_it_holds_a_logged_prediction_and_the_sent_actual() {
        let mut u = undisturbed();
        let p = logged(&u, 4.0, 3);
        assert_eq!(u.prediction(&p), None);
        let actual = Actual {
            request_id: "r1".into(),
            model: "toy".into(),
            event_time: 0,
            value: Some(9.0),
            class: None,
            observed_at: 5,
        };
        u.actuals.insert("r1".into(), format!("{actual:?}"));
        let pair = |prediction: PredictionLogged, actual: Actual| Labelled {
            prediction,
            actual,
            prediction_read_at: SourcePosition::default(),
            actual_read_at: SourcePosition::default(),
        };
        assert_eq!(u.labelled(&pair(p.clone(), actual.clone())), None);
        let mut other = p.clone();
        other.served_at += 1;
        assert!(
            u.labelled(&pair(other, actual.clone()))
                .unwrap()
                .contains("prediction")
        );
        let mut wrong = actual;
        wrong.value = Some(9.5);
        assert!(u.labelled(&pair(p, wrong)).unwrap().contains("actual"));
    }
}
