//! The scale suite (issue 14): the whole loop on the three-node cluster
//! (`infra/cluster.sh`), topics of 6 partitions, two models, and two instances of every
//! service in the consumer groups a user would run them in. Mid-replay a third instance of
//! each joins; later one instance of each leaves (SIGTERM); then ten kill -9 of random
//! instances, each started again at once. When every group has read everything it reads
//! the topics as a read_committed reader would and accounts for every event: each request
//! predicted once and each model's predictions in its requests' order, each actual joined
//! once, each report, retrain request and model version published once, and between any
//! two reports of a monitor window exactly the predictions the log holds between them
//! (none counted twice, none missed). Before that, the same replay runs on a cluster of
//! its own with one instance of each service and no faults (the reference); the outputs
//! are compared by content and the table printed. It exits non-zero on any loss,
//! duplicate, hang, or prediction out of the reference's order, and (with the swap lag,
//! the monitors' max task idle and the predictors' max swap wait all on, as by default)
//! on any prediction served by another version, report or model version that differs
//! from the reference's.
//!
//! `bash infra/scale.sh` runs it (20k requests per model over 4 minutes); `--short` is the
//! form CI runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use driftline_kafka::KafkaArgs;
use driftline_kafka::topics::TopicSpec;
use driftline_schemas::codec::Codec;
use driftline_schemas::duration::parse_duration;
use driftline_schemas::events::{
    Actual, DriftReport, Labelled, ModelPublished, PredictionLogged, PredictionRequest,
    RetrainRequested, RetrainTrigger,
};
use driftline_schemas::topics;
use driftline_tests::cluster::Cluster;
use driftline_tests::whole_loop::{Loop, SERVICES, binaries, replay, repo};
use driftline_tests::{Flow, read_committed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::message::Message;

#[derive(Debug, Parser)]
#[command(
    about = "Run the whole loop on three brokers with several instances per service; add, \
             remove and kill -9 instances mid-replay; account for every event",
    long_about = None
)]
struct Args {
    /// Requests to replay per model (each with its actual).
    #[arg(long, env = "DRIFTLINE_SCALE_REQUESTS", default_value_t = 20_000)]
    requests: u64,
    /// The replay is spread over about this long.
    #[arg(long, env = "DRIFTLINE_SCALE_SPAN", default_value = "4m", value_parser = parse_duration)]
    span: Duration,
    /// kill -9 of a random instance, this many times, after the join and the leave.
    #[arg(long, env = "DRIFTLINE_SCALE_KILLS", default_value_t = 10)]
    kills: u32,
    /// Partitions of every keyed topic (requests, predictions, actuals, labelled, retrain).
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Instances of each service at the start.
    #[arg(long, default_value_t = 2)]
    instances: usize,
    /// The CI form: 4,000 requests per model over about 80 s.
    #[arg(long)]
    short: bool,
    /// Seed of the kill schedule (which instance, when).
    #[arg(long, env = "DRIFTLINE_SCALE_SEED", default_value_t = 1)]
    seed: u64,
    /// Keep the services' state and logs here [default: a temporary directory].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Skip the reference run (one instance of each service, no faults) that this run's
    /// outputs are compared with.
    #[arg(long)]
    no_reference: bool,
    /// The trainers' swap lag: a version answers from its newest training row's event
    /// time plus this, so which version answers a request follows from the log whenever
    /// the version arrives in time ("none": from arrival).
    #[arg(long, default_value = "1d")]
    swap_lag: String,
    /// The monitors' --max-task-idle: each partition's predictions and pairs go in
    /// event-time order, either waiting up to this long for the other ("none": in
    /// produce-time order).
    #[arg(long, default_value = "10s")]
    max_task_idle: String,
    /// The predictors' --max-swap-wait: a request waits, up to this long, until the
    /// trainer has decided the versions in effect at its event time ("none": no wait).
    #[arg(long, default_value = "60s")]
    max_swap_wait: String,
    /// Replay from this event time; the trainers bootstrap from what comes before.
    #[arg(long, default_value = "2013-04-01")]
    from: String,
}

/// The models: two on the flights data, so their keys spread over the partitions.
const SPECS: [&str; 2] = ["data/flights.toml", "data/flights-late.toml"];

/// What happened to the instances of each service.
#[derive(Default)]
struct Moves {
    joined: u32,
    left: u32,
    killed: u32,
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.short {
        args.requests = 4_000;
        args.span = Duration::from_secs(80);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let temp = tempfile::tempdir()?;
    let work = args.work_dir.clone().unwrap_or_else(|| temp.path().into());
    let reference = if args.no_reference {
        None
    } else {
        eprintln!("[scale] the reference: one instance of each service, no faults");
        Some(one_run(&args, &work.join("reference"), false).await?)
    };
    eprintln!(
        "[scale] {} instances of each service, joining, leaving and killed",
        args.instances
    );
    let run = one_run(&args, &work.join("scaled"), true).await?;

    print_moves(&args, &run.moves, args.instances);
    let mut failures = run.seen.report(&args);
    println!("\nService exits nobody asked for (restarted by the supervisor)");
    for (label, list) in &run.exits {
        println!("  {label:<12} {}", list.len());
        for e in list {
            println!("               {e}");
        }
    }
    if !run.hung.is_empty() {
        failures.push(format!(
            "not drained within 10 minutes: {}",
            run.hung.join(", ")
        ));
    }
    if let Some(reference) = &reference {
        if !reference.hung.is_empty() {
            failures.push(format!(
                "the reference not drained within 10 minutes: {}",
                reference.hung.join(", ")
            ));
        }
        failures.extend(
            compare(&reference.seen, &run.seen, expects_equal(&args))
                .into_iter()
                .map(|f| format!("against the reference: {f}")),
        );
        println!(
            "  versions that reached a predictor after their effective time: {} in the \
             reference, {} in this run (they answer from arrival)",
            reference.late_swaps, run.late_swaps
        );
        println!(
            "  predictor waits for the trainer's progress given up at --max-swap-wait: {} in \
             the reference, {} in this run",
            reference.waits_given_up, run.waits_given_up
        );
    }
    println!();
    driftline_tests::verdict("scale", &failures, &work)
}

/// What a predictor logs when a version arrives after its effective time.
const LATE_SWAP: &str = "the version arrived after requests from its effective time on";
/// What a predictor logs when it gives up waiting for the trainer's progress.
const WAIT_GIVEN_UP: &str = "the trainer has not decided the versions in effect";

/// What one run of the loop left behind.
struct Outcome {
    seen: Seen,
    moves: BTreeMap<&'static str, Moves>,
    /// Per instance, the exits nobody asked for.
    exits: Vec<(String, Vec<String>)>,
    /// Groups not drained in time.
    hung: Vec<String>,
    /// Versions that reached a predictor after its requests had passed their
    /// `effective_from` (they answer from arrival), from the predictors' logs.
    late_swaps: usize,
    /// Waits for the trainer's progress the predictors gave up at the bound.
    waits_given_up: usize,
}

/// One run on a cluster of its own: the replay of both models through the loop, with
/// `faults` the instances joining, leaving and killed; without, one instance of each
/// service and nothing done to it (the reference).
async fn one_run(args: &Args, work: &std::path::Path, faults: bool) -> Result<Outcome> {
    std::fs::create_dir_all(work)?;
    let repo = repo();
    let (bin, send_data) = binaries("infra/scale.sh")?;
    let cluster = Cluster::start()?;
    let kafka = cluster.kafka();
    eprintln!(
        "[scale] three brokers on {}; work in {}",
        kafka.bootstrap_servers,
        work.display()
    );
    let mut spec = TopicSpec::load(&repo.join("infra/topics.toml"))?;
    for t in spec.topics.iter_mut().filter(|t| t.partitions > 1) {
        t.partitions = args.partitions;
    }
    driftline_kafka::topics::apply(&kafka, &spec).await?;

    let specs: Vec<PathBuf> = SPECS.iter().map(|s| repo.join(s)).collect();
    let mut the_loop = Loop::new(bin, work, &kafka, &specs, &args.from)?;
    // Reports often enough to hold many pairs against the log, and new versions all
    // through the replay (a scheduled retrain every 1,000 labelled rows of a model, beside
    // the monitor's), so versions are numbered while trainers come and go.
    the_loop.procs[2].env.extend([
        ("DRIFTLINE_MONITOR_EVALUATE_EVERY".into(), "250".into()),
        ("DRIFTLINE_MONITOR_MIN_SAMPLES".into(), "1000".into()),
    ]);
    if args.max_task_idle != "none" {
        the_loop.procs[2].env.push((
            "DRIFTLINE_MONITOR_MAX_TASK_IDLE".into(),
            args.max_task_idle.clone(),
        ));
    }
    the_loop.procs[3]
        .env
        .push(("DRIFTLINE_RETRAIN_EVERY_ROWS".into(), "1000".into()));
    if args.swap_lag != "none" {
        the_loop.procs[3]
            .env
            .push(("DRIFTLINE_SWAP_LAG".into(), args.swap_lag.clone()));
    }
    if args.max_swap_wait != "none" {
        the_loop.procs[0]
            .env
            .push(("DRIFTLINE_MAX_SWAP_WAIT".into(), args.max_swap_wait.clone()));
    }
    let mut moves: BTreeMap<&'static str, Moves> =
        SERVICES.iter().map(|s| (*s, Moves::default())).collect();
    let instances = if faults { args.instances } else { 1 };
    for _ in 1..instances {
        for s in SERVICES {
            the_loop.add(s)?;
        }
    }
    eprintln!("[scale] {instances} instances of each service; waiting for the bootstrap models");
    the_loop
        .wait_ready(Duration::from_secs(600))
        .await
        .with_context(|| format!("logs in {}", work.display()))?;

    let rate = (args.requests as f64 / args.span.as_secs_f64()).max(1.0);
    eprintln!(
        "[scale] replaying {} requests per model at {rate:.0}/s each",
        args.requests
    );
    let mut replays = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        replays.push(replay(
            &send_data,
            s,
            &args.from,
            args.requests,
            rate,
            &kafka,
            &work.join(format!("send_data-{i}.log")),
        )?);
    }
    if faults {
        disturb(args, &mut the_loop, &mut moves).await?;
    }

    eprintln!("[scale] waiting for the replays to finish");
    for r in &mut replays {
        the_loop.finish(r).await?;
    }
    eprintln!("[scale] waiting until every group has read everything");
    let hung = the_loop.drain(&kafka, Duration::from_secs(600)).await?;
    // Let the last batches' outputs land before reading them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let exits = the_loop
        .procs
        .iter()
        .map(|p| (p.label(), p.exits.clone()))
        .collect();
    the_loop.stop().await;
    let predictor_lines = |text: &str| -> usize {
        the_loop
            .procs
            .iter()
            .filter(|p| p.name == "predictor")
            .filter_map(|p| std::fs::read_to_string(&p.log).ok())
            .map(|log| log.lines().filter(|l| l.contains(text)).count())
            .sum()
    };
    let late_swaps = predictor_lines(LATE_SWAP);
    let waits_given_up = predictor_lines(WAIT_GIVEN_UP);
    let seen = Seen::read(&kafka).await?;
    drop(cluster);
    Ok(Outcome {
        seen,
        moves,
        exits,
        hung,
        late_swaps,
        waits_given_up,
    })
}

/// A third instance of each service joins at a quarter of the span, one of each leaves at
/// a half, then the kills up to 95%.
async fn disturb(
    args: &Args,
    the_loop: &mut Loop,
    moves: &mut BTreeMap<&'static str, Moves>,
) -> Result<()> {
    let started = Instant::now();
    let at = |share: f64| started + args.span.mul_f64(share);
    the_loop.supervise_until(at(0.25)).await?;
    for s in SERVICES {
        let i = the_loop.add(s)?;
        moves.get_mut(s).expect("a service").joined += 1;
        eprintln!("[scale] {} joins", the_loop.procs[i].label());
    }
    the_loop.supervise_until(at(0.5)).await?;
    for s in SERVICES {
        // The first instance: the one with the most state behind it.
        let i = the_loop
            .procs
            .iter()
            .position(|p| p.name == s && !p.left)
            .expect("an instance");
        eprintln!("[scale] {} leaves", the_loop.procs[i].label());
        the_loop.leave(i).await;
        moves.get_mut(s).expect("a service").left += 1;
    }
    let mut rng = StdRng::seed_from_u64(args.seed);
    let gap = args.span.mul_f64(0.45) / (args.kills + 1);
    for _ in 0..args.kills {
        let until = Instant::now() + gap.mul_f64(rng.random_range(0.5..1.5));
        the_loop.supervise_until(until).await?;
        let running: Vec<usize> = (0..the_loop.procs.len())
            .filter(|i| !the_loop.procs[*i].left)
            .collect();
        let i = running[rng.random_range(0..running.len())];
        the_loop.kill_and_restart(i).await?;
        moves
            .get_mut(the_loop.procs[i].name)
            .expect("a service")
            .killed += 1;
        eprintln!(
            "[scale] kill -9 {}, started again",
            the_loop.procs[i].label()
        );
    }
    Ok(())
}

fn print_moves(args: &Args, moves: &BTreeMap<&'static str, Moves>, start: usize) {
    println!(
        "\nInstances in each service's consumer group ({} partitions per keyed topic, seed {})",
        args.partitions, args.seed
    );
    println!(
        "  {:<10} {:>6} {:>7} {:>5} {:>5} {:>8}",
        "service", "start", "joined", "left", "end", "kill -9"
    );
    for (s, m) in moves {
        let end = start as u32 + m.joined - m.left;
        println!(
            "  {s:<10} {start:>6} {:>7} {:>5} {end:>5} {:>8}",
            m.joined, m.left, m.killed
        );
    }
}

/// Where a report was made: the window's count (its id's sequence) and the prediction that
/// made it due.
struct ReportPoint {
    model: String,
    version: i64,
    seq: u64,
    partition: i32,
    offset: i64,
}

impl ReportPoint {
    /// From an id `<model>-v<version>-<seq>@<partition>:<offset>`.
    fn of(r: &DriftReport) -> Option<Self> {
        let (head, at) = r.report_id.rsplit_once('@')?;
        let (partition, offset) = at.split_once(':')?;
        let (_, seq) = head.rsplit_once('-')?;
        Some(Self {
            model: r.model.clone(),
            version: r.model_version,
            seq: seq.parse().ok()?,
            partition: partition.parse().ok()?,
            offset: offset.parse().ok()?,
        })
    }
}

/// What the topics hold at the end, as a read_committed reader sees them.
#[derive(Default)]
struct Seen {
    requests: HashMap<String, u32>,
    predictions: HashMap<String, u32>,
    actuals: HashMap<String, u32>,
    labelled: HashMap<String, u32>,
    /// The offsets of each version's predictions, by (model, version, partition).
    predicted_at: HashMap<(String, i64, i32), Vec<i64>>,
    reports: HashMap<String, u32>,
    points: Vec<ReportPoint>,
    /// Retrain requests by model and id.
    retrains: HashMap<String, u32>,
    /// Bootstrap asks: every trainer that starts asks for a model without a version; the
    /// trigger makes one version of them.
    bootstrap_asks: u64,
    /// The contents (a hash of the model's bytes) each version was published with.
    versions: BTreeMap<(String, i64), BTreeSet<u64>>,
    /// The versions each trigger made.
    triggers: BTreeMap<(String, String), BTreeSet<i64>>,
    /// Each model's request ids in the order its requests' log holds them, and in the
    /// order its predictions' log does.
    request_order: BTreeMap<String, Vec<String>>,
    prediction_order: BTreeMap<String, Vec<String>>,
    /// Each model's predictions' versions, in the same order.
    served: BTreeMap<String, Vec<i64>>,
    /// Each model's pairs' request ids, in the order the labelled log holds them.
    labelled_order: BTreeMap<String, Vec<String>>,
    /// Reports by (model, version, window count), first copy, with what depends on the
    /// run rather than the data blanked (see [`comparable`]).
    report_contents: BTreeMap<(String, i64, u64), DriftReport>,
}

impl Seen {
    async fn read(kafka: &KafkaArgs) -> Result<Self> {
        let kafka = kafka.clone();
        tokio::task::spawn_blocking(move || {
            let codec = Codec::single_object();
            let mut s = Seen::default();
            read_committed(&kafka, topics::REQUESTS, |m| {
                if let Ok(r) = codec.decode::<PredictionRequest>(m.payload().unwrap_or_default()) {
                    s.request_order
                        .entry(r.model)
                        .or_default()
                        .push(r.request_id.clone());
                    *s.requests.entry(r.request_id).or_default() += 1;
                }
            })?;
            read_committed(&kafka, topics::PREDICTIONS, |m| {
                if let Ok(p) = codec.decode::<PredictionLogged>(m.payload().unwrap_or_default()) {
                    s.prediction_order
                        .entry(p.model.clone())
                        .or_default()
                        .push(p.request_id.clone());
                    s.served
                        .entry(p.model.clone())
                        .or_default()
                        .push(p.model_version);
                    s.predicted_at
                        .entry((p.model, p.model_version, m.partition()))
                        .or_default()
                        .push(m.offset());
                    *s.predictions.entry(p.request_id).or_default() += 1;
                }
            })?;
            read_committed(&kafka, topics::ACTUALS, |m| {
                if let Ok(a) = codec.decode::<Actual>(m.payload().unwrap_or_default()) {
                    *s.actuals.entry(a.request_id).or_default() += 1;
                }
            })?;
            read_committed(&kafka, topics::LABELLED, |m| {
                if let Ok(l) = codec.decode::<Labelled>(m.payload().unwrap_or_default()) {
                    s.labelled_order
                        .entry(l.prediction.model.clone())
                        .or_default()
                        .push(l.prediction.request_id.clone());
                    *s.labelled.entry(l.prediction.request_id).or_default() += 1;
                }
            })?;
            read_committed(&kafka, topics::DRIFT, |m| {
                if let Ok(r) = codec.decode::<DriftReport>(m.payload().unwrap_or_default()) {
                    if let Some(p) = ReportPoint::of(&r) {
                        s.report_contents
                            .entry((p.model.clone(), p.version, p.seq))
                            .or_insert_with(|| comparable(r.clone()));
                        s.points.push(p);
                    }
                    *s.reports.entry(r.report_id).or_default() += 1;
                }
            })?;
            read_committed(&kafka, topics::RETRAIN, |m| {
                if let Ok(r) = codec.decode::<RetrainRequested>(m.payload().unwrap_or_default()) {
                    if r.trigger == RetrainTrigger::Bootstrap {
                        s.bootstrap_asks += 1;
                    } else {
                        *s.retrains
                            .entry(format!("{}/{}", r.model, r.retrain_id))
                            .or_default() += 1;
                    }
                }
            })?;
            read_committed(&kafka, topics::MODELS, |m| {
                if let Ok(v) = codec.decode::<ModelPublished>(m.payload().unwrap_or_default()) {
                    s.versions
                        .entry((v.model.clone(), v.version))
                        .or_default()
                        .insert(driftline_tests::fnv1a(&v.model_bytes));
                    s.triggers
                        .entry((v.model, v.trigger))
                        .or_default()
                        .insert(v.version);
                }
            })?;
            Ok(s)
        })
        .await?
    }

    /// Between two consecutive reports of one window (same model and version, the count
    /// rising), the window must have taken exactly the version's predictions that the log
    /// holds between the two predictions that made them due. Returns the pairs compared,
    /// the events between them, and how many were counted twice and missed.
    fn windows(&self) -> (u64, u64, u64, u64) {
        let mut by_model: BTreeMap<(&str, i32), Vec<&ReportPoint>> = BTreeMap::new();
        for p in &self.points {
            by_model
                .entry((p.model.as_str(), p.partition))
                .or_default()
                .push(p);
        }
        let (mut pairs, mut events, mut twice, mut missed) = (0, 0, 0, 0);
        for ((model, partition), mut points) in by_model {
            points.sort_by_key(|p| p.offset);
            points.dedup_by_key(|p| p.offset);
            for w in points.windows(2) {
                let (a, b) = (w[0], w[1]);
                if a.version != b.version || b.seq <= a.seq {
                    continue; // another window began between them
                }
                let logged = self
                    .predicted_at
                    .get(&(model.to_string(), a.version, partition))
                    .map_or(0, |offsets| {
                        offsets
                            .iter()
                            .filter(|o| **o > a.offset && **o <= b.offset)
                            .count() as u64
                    });
                let counted = b.seq - a.seq;
                pairs += 1;
                events += logged;
                twice += counted.saturating_sub(logged);
                missed += logged.saturating_sub(counted);
            }
        }
        (pairs, events, twice, missed)
    }

    /// Predictions that are not where their request's place in the model's request log puts
    /// them: the first index at which the two orders differ counts the rest of the
    /// shorter. Each model's requests are one partition (keyed by model) and so are its
    /// predictions, so these are equal whatever instances served them; keyed by request
    /// id they were not.
    fn out_of_order(&self) -> u64 {
        self.request_order
            .iter()
            .map(|(model, requests)| {
                let predictions = self.prediction_order.get(model).map_or(&[][..], |v| v);
                let same = requests
                    .iter()
                    .zip(predictions)
                    .take_while(|(a, b)| a == b)
                    .count();
                (requests.len().min(predictions.len()) - same) as u64
            })
            .sum()
    }

    /// Prints the accounting; returns what failed.
    fn report(&self, args: &Args) -> Vec<String> {
        let mut failures = Vec::new();
        println!(
            "\n{:<38} {:>9} {:>9} {:>6} {:>7} {:>11}",
            "stage", "in", "out", "lost", "stray", "duplicated"
        );
        let stages = [
            ("requests -> predictions", &self.requests, &self.predictions),
            ("actuals -> labelled pairs", &self.actuals, &self.labelled),
        ];
        for (stage, from, to) in stages {
            let f = Flow::of(from, to);
            // A request sent twice is predicted twice; an actual sent twice is joined once.
            let allowed = if stage.starts_with("requests") {
                f.copies_in
            } else {
                0
            };
            let duplicated = f.copies_out.saturating_sub(allowed);
            println!(
                "{stage:<38} {:>9} {:>9} {:>6} {:>7} {duplicated:>11}",
                from.len(),
                to.len(),
                f.lost,
                f.stray
            );
            for (n, what) in [
                (f.lost, "lost"),
                (f.stray, "ids never sent"),
                (duplicated, "duplicated"),
            ] {
                if n > 0 {
                    failures.push(format!("{stage}: {n} {what}"));
                }
            }
        }
        let expected = args.requests * SPECS.len() as u64;
        if self.requests.len() as u64 != expected {
            failures.push(format!(
                "the replays sent {} distinct requests, not {expected}",
                self.requests.len()
            ));
        }
        for (what, ids) in [
            ("drift reports", &self.reports),
            ("retrain requests", &self.retrains),
        ] {
            let twice = ids.values().map(|n| u64::from(n - 1)).sum::<u64>();
            println!(
                "{what:<38} {:>9} {:>9} {:>6} {:>7} {twice:>11}",
                "-",
                ids.len(),
                "-",
                "-"
            );
            if twice > 0 {
                failures.push(format!("{what}: {twice} published more than once"));
            }
        }
        println!(
            "{:<38} {:>9}   one version from them: {}",
            "bootstrap asks (one per trainer start)",
            self.bootstrap_asks,
            self.triggers
                .iter()
                .filter(|((_, t), _)| t == "bootstrap")
                .all(|(_, v)| v.len() == 1)
        );
        let clashes = self.versions.values().filter(|c| c.len() > 1).count();
        let remade = self.triggers.values().filter(|v| v.len() > 1).count();
        println!(
            "{:<38} {:>9} {:>9}   {clashes} with two contents, {remade} triggers made two",
            "model versions",
            "-",
            self.versions.len()
        );
        if clashes + remade > 0 {
            failures.push(format!(
                "model versions: {clashes} numbers published with two contents, {remade} triggers made two versions"
            ));
        }
        let mut per_model: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for (model, version) in self.versions.keys() {
            per_model.entry(model).or_default().push(*version);
        }
        for (model, versions) in per_model {
            let numbered = versions.iter().zip(1..).all(|(v, n)| *v == n);
            println!(
                "  {model:<36} v1..v{}, every number once{}",
                versions.len(),
                if numbered {
                    ""
                } else {
                    ", NOT one after another"
                }
            );
            if !numbered {
                failures.push(format!("{model}: versions {versions:?} skip a number"));
            }
        }
        let out_of_order = self.out_of_order();
        println!(
            "{:<38} {:>9}   predictions not in their requests' order (a model's, in its partition)",
            "prediction order", out_of_order
        );
        if out_of_order > 0 {
            failures.push(format!(
                "{out_of_order} predictions not in their requests' order"
            ));
        }
        let (pairs, events, twice, missed) = self.windows();
        println!(
            "{:<38} {pairs:>9} report pairs, {events} predictions between them: {twice} counted twice, {missed} missed",
            "monitor windows"
        );
        if pairs == 0 {
            failures.push("no two reports of one window to compare".into());
        }
        if twice + missed > 0 {
            failures.push(format!(
                "monitor windows: {twice} predictions counted twice, {missed} missed"
            ));
        }
        failures
    }
}

/// A report with what tells two runs apart without being about the data blanked: the
/// wall-clock stamp, and the offsets (where a model's events sit in a partition shared with
/// another model's depends on how the two interleaved).
fn comparable(mut r: DriftReport) -> DriftReport {
    if let Some((head, _)) = r.report_id.rsplit_once('@') {
        r.report_id = head.to_string();
    }
    r.evaluated_at = 0;
    r.window.end_offsets.clear();
    r
}

/// The lengths of two runs' per-model sequences, and how many of their places hold the
/// same thing in both, model by model.
fn in_order<T: PartialEq>(
    a: &BTreeMap<String, Vec<T>>,
    b: &BTreeMap<String, Vec<T>>,
) -> (u64, u64, u64) {
    let total = |m: &BTreeMap<String, Vec<T>>| m.values().map(|v| v.len() as u64).sum();
    let equal = a
        .iter()
        .filter_map(|(model, x)| Some(x.iter().zip(b.get(model)?).filter(|(p, q)| p == q)))
        .map(|same| same.count() as u64)
        .sum();
    (total(a), total(b), equal)
}

/// Whether the run is set up to publish what the reference does: a version takes effect
/// from an event time, the predictors wait for the trainers' progress and the monitors
/// take their inputs in event-time order (ARCHITECTURE.md, "Equal across runs").
fn expects_equal(args: &Args) -> bool {
    [&args.swap_lag, &args.max_task_idle, &args.max_swap_wait]
        .iter()
        .all(|v| v.as_str() != "none")
}

/// This run's outputs against the reference's, by content; prints the table and returns
/// what failed. Each model's predictions in the same order always; with `equal` (see
/// [`expects_equal`]) also the version that served each, the reports and the versions.
/// The pairs' order is measured, not asserted: the joiner keeps it only by keeping up.
fn compare(reference: &Seen, run: &Seen, equal: bool) -> Vec<String> {
    let mut failures = Vec::new();
    println!("\nAgainst a single-instance run without faults (the reference), by content");
    println!(
        "  {:<40} {:>9} {:>9} {:>9} {:>9}",
        "what", "reference", "this run", "equal", "not"
    );
    let row = |what: &str, a: u64, b: u64, equal: u64| {
        println!(
            "  {what:<40} {a:>9} {b:>9} {equal:>9} {:>9}",
            a.max(b) - equal
        );
    };
    let (a, b, ordered) = in_order(&reference.prediction_order, &run.prediction_order);
    row("predictions, each model's in order", a, b, ordered);
    if ordered != a || a != b {
        failures.push(format!(
            "{} predictions not where the reference has them",
            a.max(b) - ordered
        ));
    }
    let expect_equal = equal;
    let mut unequal = |what: &str, a: u64, b: u64, equal: u64| {
        if expect_equal && (equal != a || a != b) {
            failures.push(format!("{} {what} not equal", a.max(b) - equal));
        }
    };
    let (a, b, served) = in_order(&reference.served, &run.served);
    row("  ... served by the same version number", a, b, served);
    unequal("predictions' serving versions", a, b, served);
    let (a, b, equal) = in_order(&reference.labelled_order, &run.labelled_order);
    row("labelled pairs, each model's in order", a, b, equal);
    let (a, b, equal) = same(&reference.report_contents, &run.report_contents);
    row("drift reports (model, version, count)", a, b, equal);
    unequal("drift reports", a, b, equal);
    let differing = differing_fields(&reference.report_contents, &run.report_contents);
    if !differing.is_empty() {
        let list: Vec<String> = differing.iter().map(|(f, n)| format!("{f} {n}")).collect();
        println!("    ... the others differ in: {}", list.join(", "));
    }
    let only = |a: &BTreeMap<(String, i64, u64), DriftReport>,
                b: &BTreeMap<(String, i64, u64), DriftReport>| {
        a.keys()
            .filter(|k| !b.contains_key(*k))
            .map(|(m, v, n)| format!("{m} v{v} at {n}"))
            .collect::<Vec<_>>()
    };
    for (whose, keys) in [
        (
            "the reference",
            only(&reference.report_contents, &run.report_contents),
        ),
        (
            "this run",
            only(&run.report_contents, &reference.report_contents),
        ),
    ] {
        if !keys.is_empty() {
            println!("    ... only in {whose}: {}", keys.join(", "));
        }
    }
    let (a, b, equal) = same(&reference.versions, &run.versions);
    row("model versions (number, model bytes)", a, b, equal);
    unequal("model versions", a, b, equal);
    failures
}

/// Of the reports two runs hold under one key, how many differ in each field (an object's
/// fields one level down, e.g. `window.count`).
fn differing_fields<K: Ord>(
    a: &BTreeMap<K, DriftReport>,
    b: &BTreeMap<K, DriftReport>,
) -> BTreeMap<String, u64> {
    use serde_json::Value;
    let mut counts = BTreeMap::new();
    for (k, x) in a {
        let Some(y) = b.get(k) else {
            continue;
        };
        let (Ok(Value::Object(x)), Ok(Value::Object(y))) =
            (serde_json::to_value(x), serde_json::to_value(y))
        else {
            continue;
        };
        for (name, u) in &x {
            match (u, y.get(name)) {
                (_, Some(v)) if v == u => {}
                (Value::Object(u), Some(Value::Object(v))) => {
                    for (inner, w) in u {
                        if v.get(inner) != Some(w) {
                            *counts.entry(format!("{name}.{inner}")).or_default() += 1;
                        }
                    }
                }
                _ => *counts.entry(name.clone()).or_default() += 1,
            }
        }
    }
    counts
}

/// The sizes of two maps and how many of the first's entries the second holds equal.
fn same<K: Ord, V: PartialEq>(a: &BTreeMap<K, V>, b: &BTreeMap<K, V>) -> (u64, u64, u64) {
    let equal = a.iter().filter(|(k, v)| b.get(*k) == Some(*v)).count();
    (a.len() as u64, b.len() as u64, equal as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(version: i64, seq: u64, offset: i64) -> ReportPoint {
        ReportPoint {
            model: "m".into(),
            version,
            seq,
            partition: 2,
            offset,
        }
    }

    /// The log: predictions of `version` at these offsets of partition 2.
    fn seen(points: Vec<ReportPoint>, logged: &[(i64, &[i64])]) -> Seen {
        let mut s = Seen {
            points,
            ..Seen::default()
        };
        for (version, offsets) in logged {
            s.predicted_at
                .insert(("m".into(), *version, 2), offsets.to_vec());
        }
        s
    }

    #[test]
    fn a_window_that_counts_the_log_between_its_reports_passes() {
        let s = seen(
            vec![point(1, 2, 11), point(1, 5, 20), point(1, 6, 21)],
            &[(1, &[10, 11, 12, 15, 20, 21])],
        );
        assert_eq!(s.windows(), (2, 4, 0, 0));
    }

    #[test]
    fn a_prediction_counted_twice_or_missed_is_found() {
        let twice = seen(
            vec![point(1, 2, 11), point(1, 6, 20)],
            &[(1, &[10, 11, 12, 15, 20])],
        );
        assert_eq!(twice.windows(), (1, 3, 1, 0));
        let missed = seen(
            vec![point(1, 2, 11), point(1, 3, 20)],
            &[(1, &[10, 11, 12, 15, 20])],
        );
        assert_eq!(missed.windows(), (1, 3, 0, 2));
    }

    #[test]
    fn reports_of_another_window_between_are_not_compared() {
        // v1's window, then v2's, then v1 again after a rollback (its count starts over):
        // no two neighbours belong to one window.
        let s = seen(
            vec![
                point(1, 4, 10),
                point(2, 3, 20),
                point(1, 9, 30),
                point(1, 2, 40),
            ],
            &[(1, &[1, 2, 10, 25, 30, 40]), (2, &[15, 20])],
        );
        assert_eq!(s.windows().0, 0);
    }

    #[test]
    fn predictions_out_of_their_requests_order_are_found() {
        let ids = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut s = Seen::default();
        s.request_order
            .insert("m".into(), ids(&["a", "b", "c", "d"]));
        s.prediction_order
            .insert("m".into(), ids(&["a", "b", "c", "d"]));
        assert_eq!(s.out_of_order(), 0);
        s.prediction_order
            .insert("m".into(), ids(&["a", "c", "b", "d"]));
        assert_eq!(s.out_of_order(), 3);
    }

    #[test]
    fn reports_compare_without_their_wall_clock_stamp_and_offsets() {
        let a = DriftReport {
            report_id: "m-v2-500@1:40".into(),
            evaluated_at: 5,
            ..driftline_tests::samples::drift()
        };
        let mut b = DriftReport {
            report_id: "m-v2-500@4:90".into(),
            evaluated_at: 9,
            ..a.clone()
        };
        b.window
            .end_offsets
            .insert("driftline.predictions/4".into(), 91);
        assert_eq!(comparable(a.clone()), comparable(b.clone()));
        b.share_drifted += 0.1;
        assert_ne!(comparable(a), comparable(b));
    }

    #[test]
    fn the_fields_two_runs_reports_differ_in_are_counted() {
        let a = driftline_tests::samples::drift();
        let mut b = a.clone();
        b.window.count += 1;
        b.share_drifted += 0.1;
        let only_a = DriftReport {
            share_drifted: 0.9,
            ..a.clone()
        };
        let reference = BTreeMap::from([(1, a.clone()), (2, a.clone()), (3, only_a)]);
        let run = BTreeMap::from([(1, a), (2, b)]);
        let counts: Vec<(String, u64)> = differing_fields(&reference, &run).into_iter().collect();
        assert_eq!(
            counts,
            [
                ("share_drifted".to_string(), 1),
                ("window.count".to_string(), 1)
            ]
        );
    }

    #[test]
    fn a_prediction_out_of_the_references_order_fails_the_comparison() {
        let ids = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut reference = Seen::default();
        reference
            .prediction_order
            .insert("m".into(), ids(&["a", "b", "c"]));
        let mut run = Seen::default();
        run.prediction_order
            .insert("m".into(), ids(&["a", "b", "c"]));
        assert!(compare(&reference, &run, true).is_empty());
        run.prediction_order
            .insert("m".into(), ids(&["b", "a", "c"]));
        assert_eq!(compare(&reference, &run, false).len(), 1);
    }

    #[test]
    fn a_version_or_report_unlike_the_references_fails_the_comparison_when_equality_is_set_up() {
        let mut reference = Seen::default();
        reference.served.insert("m".into(), vec![1, 1, 2]);
        let report = driftline_tests::samples::drift();
        reference
            .report_contents
            .insert(("m".into(), 2, 250), report.clone());
        let mut run = Seen::default();
        run.served.insert("m".into(), vec![1, 2, 2]);
        run.report_contents.insert(
            ("m".into(), 2, 250),
            DriftReport {
                share_drifted: report.share_drifted + 0.1,
                ..report
            },
        );
        let failures = compare(&reference, &run, true);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(
            compare(&reference, &run, false).is_empty(),
            "measured only when the run is not set up to be equal"
        );
        let mut args = Args::parse_from(["scale"]);
        assert!(expects_equal(&args), "the defaults are");
        args.max_swap_wait = "none".into();
        assert!(!expects_equal(&args));
    }

    #[test]
    fn a_report_id_gives_the_window_count_and_the_prediction_behind_it() {
        let r = DriftReport {
            report_id: "flights-delay-v3-1250@4:9876".into(),
            model: "flights-delay".into(),
            model_version: 3,
            ..driftline_tests::samples::drift()
        };
        let p = ReportPoint::of(&r).unwrap();
        assert_eq!(
            (p.version, p.seq, p.partition, p.offset),
            (3, 1250, 4, 9876)
        );
    }
}
