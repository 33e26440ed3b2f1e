//! What the `driftline up` tests share: a slice of the flights data with fresh ids, the
//! child's stderr line by line, and counting ids on a topic.

#![allow(dead_code)] // each test file uses its own part

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Actual, PredictionLogged, PredictionRequest};
use driftline_schemas::topics;
use rdkafka::Message;
use rdkafka::consumer::BaseConsumer;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Rows to replay and how many of them have ground truth.
pub struct Slice {
    pub rows: usize,
    pub with_target: usize,
}

/// The flights from January 1 to `until` (exclusive), ids prefixed, beside a copy of the
/// spec; counts the rows from `from` on (the replay: `up` bootstraps on what is before).
pub fn write_data(dir: &Path, prefix: &str, from: &str, until: &str) -> Result<Slice> {
    let file = std::fs::File::open(repo().join("data/flights.csv.gz"))?;
    let mut lines = BufReader::new(flate2::read::MultiGzDecoder::new(file)).lines();
    let header = lines.next().context("empty data")??;
    let mut out = flate2::write::GzEncoder::new(
        std::fs::File::create(dir.join("flights.csv.gz"))?,
        flate2::Compression::fast(),
    );
    writeln!(out, "{header}")?;
    let mut slice = Slice {
        rows: 0,
        with_target: 0,
    };
    for line in lines {
        let line = line?;
        let cells: Vec<&str> = line.splitn(4, ',').collect();
        let time = cells.get(1).copied().unwrap_or_default();
        if time >= until {
            break;
        }
        if time >= from {
            slice.rows += 1;
            if cells.get(2).is_some_and(|t| !t.is_empty()) {
                slice.with_target += 1;
            }
        }
        writeln!(out, "{prefix}{line}")?;
    }
    out.finish()?;
    std::fs::copy(repo().join("data/flights.toml"), dir.join("flights.toml"))?;
    Ok(slice)
}

/// `driftline up --no-broker` replaying the slice written to `dir` from `from` at a day in
/// ten seconds, every port free, its log on a pipe (see [`lines`]).
pub fn up(dir: &Path, state: &Path, bootstrap: &str, from: &str) -> Result<Child> {
    Ok(up_command(dir, state, bootstrap, from)?.spawn()?)
}

/// [`up`] before it is spawned.
pub fn up_command(dir: &Path, state: &Path, bootstrap: &str, from: &str) -> Result<Command> {
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let free = driftline_tests::free_port;
    let mut command = Command::new(env!("CARGO_BIN_EXE_driftline"));
    command
        .args(["up", "--no-broker", "--bootstrap-servers", bootstrap])
        .arg("--spec")
        .arg(dir.join("flights.toml"))
        .args(["--from", from, "--speedup", "8640"])
        .arg("--state-dir")
        .arg(state)
        .args(["--http-addr", &addr(free()?)])
        .args(["--dashboard-addr", &addr(free()?)])
        .env("DRIFTLINE_MONITOR_HTTP_ADDR", addr(free()?))
        .env("DRIFTLINE_TRAINER_HTTP_ADDR", addr(free()?))
        .env("DRIFTLINE_JOINER_HTTP_ADDR", addr(free()?))
        // Warnings, and the runtime's assignments, restores and transactions.
        .env("RUST_LOG", "warn,driftline_runtime=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Ok(command)
}

/// The child's stderr, line by line, echoed into the test's output.
pub fn lines(child: &mut Child) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("  | {line}");
            // The receiver may be gone; keep draining so the child never blocks on a pipe.
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits for a line containing `needle`; returns the lines read on the way, with it.
pub fn wait_for(rx: &Receiver<String>, needle: &str, timeout: Duration) -> Result<Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => {
                seen.push(line);
                return Ok(seen);
            }
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    bail!("the child never printed {needle:?}")
}

pub fn exit_within(child: &mut Child, timeout: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            child.kill()?;
            bail!("the child did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many times each of our request ids is in the consumer's topic: read from the start
/// until `expected` distinct ids were seen (or two minutes pass), then two more seconds.
pub fn count_ids(
    consumer: &BaseConsumer,
    prefix: &str,
    expected: usize,
    id_of: impl Fn(&[u8]) -> Result<String>,
) -> Result<HashMap<String, usize>> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut settle: Option<Instant> = None;
    loop {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let id = id_of(m?.payload().unwrap_or_default())?;
            if id.contains(prefix) {
                *counts.entry(id).or_default() += 1;
            }
        }
        if counts.len() >= expected && settle.is_none() {
            settle = Some(Instant::now() + Duration::from_secs(2));
        }
        if settle.is_some_and(|s| Instant::now() > s) || Instant::now() > deadline {
            return Ok(counts);
        }
    }
}

pub fn exactly_once(what: &str, counts: &HashMap<String, usize>, expected: usize) -> Result<()> {
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    ensure!(
        repeated.is_empty(),
        "{what} sent more than once: {repeated:?}"
    );
    ensure!(
        counts.len() == expected,
        "{what}: {} of the {expected} expected",
        counts.len()
    );
    Ok(())
}

/// How many times each id of a replayed slice is on the three topics the replay reaches.
pub struct OnTheBus {
    pub requests: HashMap<String, usize>,
    pub actuals: HashMap<String, usize>,
    pub predictions: HashMap<String, usize>,
}

impl OnTheBus {
    /// Reads the three topics through `reader` (a consumer from the start of a topic).
    pub fn read(
        reader: impl Fn(&str) -> Result<BaseConsumer>,
        prefix: &str,
        slice: &Slice,
    ) -> Result<Self> {
        let codec = Codec::single_object();
        Ok(Self {
            requests: count_ids(&reader(topics::REQUESTS)?, prefix, slice.rows, |b| {
                Ok(codec.decode::<PredictionRequest>(b)?.request_id)
            })?,
            actuals: count_ids(&reader(topics::ACTUALS)?, prefix, slice.with_target, |b| {
                Ok(codec.decode::<Actual>(b)?.request_id)
            })?,
            predictions: count_ids(&reader(topics::PREDICTIONS)?, prefix, slice.rows, |b| {
                Ok(codec.decode::<PredictionLogged>(b)?.request_id)
            })?,
        })
    }

    fn topics(&self, slice: &Slice) -> [(&'static str, &HashMap<String, usize>, usize); 3] {
        [
            ("requests", &self.requests, slice.rows),
            ("ground truth", &self.actuals, slice.with_target),
            ("predictions", &self.predictions, slice.rows),
        ]
    }

    /// Expected, distinct and duplicated ids per topic, as a table on stderr.
    pub fn print(&self, slice: &Slice) {
        eprintln!(
            "{:<13} {:>8} {:>8} {:>10}",
            "topic", "expected", "distinct", "duplicates"
        );
        for (what, counts, expected) in self.topics(slice) {
            let duplicates: usize = counts.values().map(|n| n - 1).sum();
            eprintln!(
                "{what:<13} {expected:>8} {:>8} {duplicates:>10}",
                counts.len()
            );
        }
    }

    /// Every row's request and ground truth is there, and every request has a prediction.
    pub fn nothing_lost(&self, slice: &Slice) -> Result<()> {
        for (what, counts, expected) in self.topics(slice) {
            ensure!(
                counts.len() == expected,
                "{what} lost: {} of {expected}",
                counts.len()
            );
        }
        let unanswered: Vec<_> = self
            .requests
            .keys()
            .filter(|id| !self.predictions.contains_key(*id))
            .take(5)
            .collect();
        ensure!(
            unanswered.is_empty(),
            "requests without a prediction, e.g. {unanswered:?}"
        );
        Ok(())
    }

    /// Every row's request, ground truth and prediction, each exactly once.
    pub fn exactly_once(&self, slice: &Slice) -> Result<()> {
        for (what, counts, expected) in self.topics(slice) {
            exactly_once(what, counts, expected)?;
        }
        Ok(())
    }
}
