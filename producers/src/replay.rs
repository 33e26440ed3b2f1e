//! The replay loop: rows from the reader thread, paced, each request followed by its ground
//! truth once the label delay has passed in event time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use driftline_schemas::codec::Codec;
use driftline_schemas::spec::{FeatureSpec, format_time};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::pace::{Pace, Pacer};
use crate::progress::Progress;
use crate::schedule::LabelQueue;
use crate::sink::{Sink, Topic};
use crate::source::{self, Item, Message, ReadPlan, TimeRange};
use crate::{Error, Result};
use driftline_dataset::rows::BadRow;

/// Bad rows logged one by one; past this they are only counted.
const MAX_WARNINGS: usize = 20;
/// Bad rows kept in the summary.
const MAX_KEPT: usize = 100;

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub spec: FeatureSpec,
    /// A CSV or gzip-compressed CSV with a header row.
    pub data: PathBuf,
    pub window: TimeRange,
    /// Stop after this many rows (requests) sent.
    pub rows: Option<u64>,
    pub pace: Pace,
    /// How long after its event the ground truth is known, in event time.
    pub label_delay: Duration,
    /// Send ground truth at all.
    pub actuals: bool,
    /// Stop at the first bad row instead of skipping it.
    pub strict: bool,
    /// After the last row, start over: each pass later in event time by the data's span
    /// (in whole weeks) and with its own request ids (`<id>~<pass>`), until `rows`.
    pub looped: bool,
    /// Continue an earlier replay of the same data: what it sent is not sent again. The
    /// window must start early enough to re-read the rows whose ground truth is still owed
    /// (see [`Resume::window_from`]).
    pub resume: Option<Resume>,
    /// Save the position every so often while replaying, not only at the end.
    pub checkpoint: Option<Checkpoint>,
}

/// Where a running replay got to, saved every `every` once all it sent is acknowledged, so
/// a replay killed outright (kill -9, power) resumes from there, not from its last clean
/// stop, and sends again only what came after.
#[derive(Clone)]
pub struct Checkpoint {
    pub every: Duration,
    pub save: SavePosition,
}

/// Stores a position where the next replay will find it.
pub type SavePosition = std::sync::Arc<dyn Fn(&Resume) -> std::io::Result<()> + Send + Sync>;

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// How far a stream of messages in time order got: everything before `time`, and the
/// first `count` at `time` (rows are read in file order, so "the first" is well defined).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    pub time: i64,
    pub count: u64,
}

impl Cursor {
    /// Moves past one more message at `time` (times never go back).
    fn advance(&mut self, time: i64) {
        if time == self.time {
            self.count += 1;
        } else {
            *self = Cursor { time, count: 1 };
        }
    }

    /// Whether the next message at `time` was already sent; counts it when it was.
    fn already_sent(&self, time: i64, seen_at_time: &mut u64) -> bool {
        if time < self.time {
            return true;
        }
        if time == self.time && *seen_at_time < self.count {
            *seen_at_time += 1;
            return true;
        }
        false
    }
}

/// Where a replay stopped: requests by event time, ground truth by the time it fell due.
/// An interrupted replay owes the ground truth of its last `label_delay` of rows; resuming
/// from this sends exactly the rest, with neither a gap nor a repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resume {
    pub requests: Cursor,
    pub actuals: Cursor,
}

impl Resume {
    /// The earliest event time a resumed replay must read from.
    pub fn window_from(&self, label_delay: Duration) -> i64 {
        let delay = i64::try_from(label_delay.as_millis()).unwrap_or(i64::MAX);
        self.requests
            .time
            .min(self.actuals.time.saturating_sub(delay))
    }

    /// `requests <time> <count>` and `actuals <time> <count>` lines.
    pub fn to_text(&self) -> String {
        format!(
            "requests {} {}\nactuals {} {}\n",
            self.requests.time, self.requests.count, self.actuals.time, self.actuals.count
        )
    }

    pub fn from_text(text: &str) -> Option<Resume> {
        let mut r = Resume::default();
        let mut seen = 0;
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(what), Some(time), Some(count), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let cursor = Cursor {
                time: time.parse().ok()?,
                count: count.parse().ok()?,
            };
            match what {
                "requests" => r.requests = cursor,
                "actuals" => r.actuals = cursor,
                _ => return None,
            }
            seen += 1;
        }
        (seen == 2).then_some(r)
    }
}

impl ReplayOptions {
    /// Defaults for everything but the spec and the data: all rows, as fast as possible,
    /// ground truth right after each request, bad rows skipped.
    pub fn new(spec: FeatureSpec, data: impl Into<PathBuf>) -> Self {
        Self {
            spec,
            data: data.into(),
            window: TimeRange::default(),
            rows: None,
            pace: Pace::Max,
            label_delay: Duration::ZERO,
            actuals: true,
            strict: false,
            looped: false,
            resume: None,
            checkpoint: None,
        }
    }
}

/// How a replay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// Ctrl-C (the shutdown token): what was produced was flushed.
    Interrupted,
    /// `strict` and a bad row: what was produced before it was flushed.
    StoppedAtBadRow(BadRow),
}

/// What a replay did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub outcome: Outcome,
    /// Requests and ground truth delivered (acknowledged by the broker, or written).
    pub requests: u64,
    pub actuals: u64,
    /// Messages the sink could not deliver.
    pub failed: u64,
    pub delivery_errors: Vec<String>,
    /// Rows skipped as bad, and the first of them.
    pub bad_rows: u64,
    pub bad_examples: Vec<BadRow>,
    pub outside_window: u64,
    /// Rows sent without ground truth (an empty target cell).
    pub without_target: u64,
    /// Ground truth still waiting for its time when the replay stopped early.
    pub pending_actuals: u64,
    pub first_event_time: Option<i64>,
    pub last_event_time: Option<i64>,
    /// Where this replay (and the ones it resumed) got to.
    pub resume: Resume,
    pub elapsed: Duration,
}

impl Summary {
    pub fn messages(&self) -> u64 {
        self.requests + self.actuals
    }

    /// Messages delivered per second of the whole run, final flush included.
    pub fn rate(&self) -> f64 {
        self.messages() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// True when every row was good and every message delivered.
    pub fn is_clean(&self) -> bool {
        self.outcome == Outcome::Completed && self.failed == 0 && self.bad_rows == 0
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "sent {} requests and {} actuals, {} failed, in {secs:.1} s: {:.0} messages/s ({:.0} rows/s)",
            self.requests,
            self.actuals,
            self.failed,
            self.rate(),
            self.requests as f64 / secs.max(1e-9),
        )?;
        if let (Some(a), Some(b)) = (self.first_event_time, self.last_event_time) {
            writeln!(f, "event time {} .. {}", format_time(a), format_time(b))?;
        }
        let stopped = matches!(self.outcome, Outcome::StoppedAtBadRow(_));
        if self.bad_rows > 0 && !stopped {
            let first = self
                .bad_examples
                .first()
                .map(|b| format!(" (first at {b})"));
            writeln!(
                f,
                "bad rows skipped: {}{}",
                self.bad_rows,
                first.unwrap_or_default()
            )?;
        }
        for (n, what) in [
            (self.outside_window, "rows outside --from/--to"),
            (
                self.without_target,
                "rows without ground truth (empty target)",
            ),
            (
                self.pending_actuals,
                "actuals not sent (stopped before they were due)",
            ),
        ] {
            if n > 0 {
                writeln!(f, "{what}: {n}")?;
            }
        }
        for e in &self.delivery_errors {
            writeln!(f, "delivery error: {e}")?;
        }
        match &self.outcome {
            Outcome::Completed => Ok(()),
            Outcome::Interrupted => {
                writeln!(f, "interrupted: stopped early, flushed what was produced")
            }
            Outcome::StoppedAtBadRow(b) => writeln!(f, "stopped at the bad row on {b} (--strict)"),
        }
    }
}

/// Replays `opts.data` into `sink`: each row as a request, and its ground truth after the
/// label delay. Returns when the rows run out, at the first bad row with `strict`, or when
/// `shutdown` fires; in every case what was produced is flushed and counted. Errors are for
/// what stops a replay from starting or going on: an unreadable file, a missing column, a
/// sink that fails.
pub async fn replay<S: Sink + Send>(
    opts: &ReplayOptions,
    sink: &mut S,
    progress: &Progress,
    shutdown: &CancellationToken,
) -> Result<Summary> {
    let pace = opts.pace.validate().map_err(Error::Options)?;
    let label_delay_ms = i64::try_from(opts.label_delay.as_millis())
        .map_err(|_| Error::Options("label delay is too long".into()))?;
    let plan = ReadPlan {
        path: opts.data.clone(),
        spec: opts.spec.clone(),
        window: opts.window,
        limit: opts.rows,
        label_delay_ms,
        actuals: opts.actuals,
        strict: opts.strict,
        looped: opts.looped,
    };
    if opts.looped && opts.resume.is_some() {
        return Err(Error::Options(
            "a looped replay cannot resume an earlier one".into(),
        ));
    }
    let started = Instant::now();
    let (tx, mut rx) = mpsc::channel::<Vec<Item>>(16);
    let reader = {
        let plan = plan.clone();
        tokio::task::spawn_blocking(move || source::read(&plan, &Codec::single_object(), &tx))
    };
    if let Some(n) = opts.rows {
        progress.set_total(n);
    }
    // Stops the counting pass below when the replay ends first.
    let counting = shutdown.child_token();
    let _stop_counting = counting.clone().drop_guard();
    if !progress.is_hidden() && !opts.looped {
        // A second, cheaper pass for the bar's length (and so its ETA).
        let (plan, progress) = (plan.clone(), progress.clone());
        tokio::task::spawn_blocking(move || {
            if let Ok(Some(n)) = source::count(&plan, &counting) {
                progress.set_total(n);
            }
        });
    }

    let mut pacer = Pacer::new(pace);
    let mut labels: LabelQueue<Message> = LabelQueue::default();
    let mut summary = Summary {
        outcome: Outcome::Completed,
        requests: 0,
        actuals: 0,
        failed: 0,
        delivery_errors: Vec::new(),
        bad_rows: 0,
        bad_examples: Vec::new(),
        outside_window: 0,
        without_target: 0,
        pending_actuals: 0,
        first_event_time: None,
        last_event_time: None,
        resume: opts.resume.unwrap_or_default(),
        elapsed: Duration::ZERO,
    };
    let mut sent = 0u64;
    // What a resumed replay skips: (cursor it resumes from, how many seen at its time).
    let skip = opts.resume;
    let (mut requests_seen, mut actuals_seen) = (0u64, 0u64);
    let mut saved = Instant::now();

    'rows: loop {
        let batch = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                summary.outcome = Outcome::Interrupted;
                break;
            }
            batch = rx.recv() => match batch {
                Some(batch) => batch,
                None => break,
            },
        };
        for item in batch {
            let row = match item {
                Item::Row(row) => row,
                Item::Bad(bad) => {
                    report_bad(&mut summary, &bad, opts, progress);
                    if opts.strict {
                        summary.outcome = Outcome::StoppedAtBadRow(bad);
                        break 'rows;
                    }
                    continue;
                }
            };
            if skip.is_some_and(|r| r.requests.already_sent(row.event_time, &mut requests_seen)) {
                // Sent by the replay this one resumes; its ground truth may still be owed.
                if let Some((due, actual)) = row.actual {
                    labels.push(due, actual);
                }
                continue;
            }
            let at = pacer.row_at(sent, row.event_time);
            // Ground truth that fell due before this row's event time goes first.
            while let Some(due) = labels.next_due().filter(|due| *due <= row.event_time) {
                if skip.is_some_and(|r| r.actuals.already_sent(due, &mut actuals_seen)) {
                    labels.pop();
                    continue;
                }
                let when = match pacer.event_at(due) {
                    Some(t) => Some(at.map_or(t, |at| t.min(at))),
                    None => at,
                };
                if !wait(started, when, shutdown).await {
                    summary.outcome = Outcome::Interrupted;
                    break 'rows;
                }
                if let Some((due, actual)) = labels.pop() {
                    sink.send(Topic::Actuals, &actual).await?;
                    summary.resume.actuals.advance(due);
                }
            }
            if !wait(started, at, shutdown).await {
                summary.outcome = Outcome::Interrupted;
                break 'rows;
            }
            sink.send(Topic::Requests, &row.request).await?;
            summary.resume.requests.advance(row.event_time);
            sent += 1;
            if let Some(c) = opts
                .checkpoint
                .as_ref()
                .filter(|c| saved.elapsed() >= c.every)
            {
                // Only a position whose messages are all acknowledged is safe to resume from.
                if sink.flush().await?.failed == 0 {
                    (c.save)(&summary.resume).map_err(Error::Checkpoint)?;
                }
                saved = Instant::now();
            }
            summary.first_event_time.get_or_insert(row.event_time);
            summary.last_event_time = Some(row.event_time);
            if let Some((due, actual)) = row.actual {
                labels.push(due, actual);
            }
            // A paced replay may take seconds per row: show each; at full speed, every so often.
            progress.inc(1);
            if at.is_some() || sent % 1024 == 1 {
                progress.set_event_time(row.event_time);
            }
        }
    }

    // Stop the reader (if it is still going) and learn how it ended.
    drop(rx);
    let read = reader
        .await
        .map_err(|e| Error::Options(format!("reader thread failed: {e}")))?;
    let stats = match read {
        Ok(stats) => stats,
        Err(e) => {
            sink.flush().await?;
            progress.finish();
            return Err(e);
        }
    };
    summary.outside_window = stats.outside_window;
    summary.without_target = stats.without_target;

    // The rows are done; the ground truth still pending comes due in event time. A replay
    // stopped early still sends what was already due (the rows had got past it).
    if summary.outcome == Outcome::Completed {
        while let Some(due) = labels.next_due() {
            if skip.is_some_and(|r| r.actuals.already_sent(due, &mut actuals_seen)) {
                labels.pop();
                continue;
            }
            if !wait(started, pacer.event_at(due), shutdown).await {
                summary.outcome = Outcome::Interrupted;
                break;
            }
            if let Some((due, actual)) = labels.pop() {
                sink.send(Topic::Actuals, &actual).await?;
                summary.resume.actuals.advance(due);
            }
        }
    } else if let Some(now) = summary.last_event_time {
        while let Some((due, actual)) = labels.pop_due(now) {
            if skip.is_some_and(|r| r.actuals.already_sent(due, &mut actuals_seen)) {
                continue;
            }
            sink.send(Topic::Actuals, &actual).await?;
            summary.resume.actuals.advance(due);
        }
    }
    summary.pending_actuals = labels.len() as u64;

    let delivered = sink.flush().await?;
    progress.finish();
    summary.requests = delivered.requests;
    summary.actuals = delivered.actuals;
    summary.failed = delivered.failed;
    summary.delivery_errors = delivered.errors;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Sleeps until `at` after `started` (no sleep for `None` or a time already past). False if
/// the replay is being shut down.
async fn wait(started: Instant, at: Option<Duration>, shutdown: &CancellationToken) -> bool {
    if let Some(at) = at {
        let deadline = started + at;
        if deadline > Instant::now() {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => {}
                _ = shutdown.cancelled() => return false,
            }
        }
    }
    !shutdown.is_cancelled()
}

fn report_bad(summary: &mut Summary, bad: &BadRow, opts: &ReplayOptions, progress: &Progress) {
    summary.bad_rows += 1;
    if summary.bad_examples.len() < MAX_KEPT {
        summary.bad_examples.push(bad.clone());
    }
    let n = summary.bad_rows as usize;
    if n <= MAX_WARNINGS {
        progress.suspend(|| {
            let file = opts.data.display();
            if opts.strict {
                warn!(%file, line = bad.line, reason = %bad.reason, "bad row: stopping (--strict)");
            } else {
                warn!(%file, line = bad.line, reason = %bad.reason, "bad row skipped");
            }
            if n == MAX_WARNINGS {
                warn!("further bad rows are counted in the summary, not logged");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Delivered;
    use driftline_schemas::codec::Codec;
    use driftline_schemas::events::{Actual, PredictionRequest};

    /// The shared toy spec with an id column and one numeric feature, `x`.
    fn spec() -> FeatureSpec {
        let mut spec =
            FeatureSpec::from_toml(include_str!("../../tests/fixtures/toy.toml")).unwrap();
        spec.dataset.id_column = Some("id".into());
        spec.features.retain(|f| f.name == "x");
        spec
    }

    /// Rows `r0, r1, ...` ten minutes apart.
    fn data(rows: usize) -> (tempfile::TempDir, ReplayOptions) {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("id,t,x,y\n");
        for i in 0..rows {
            csv += &format!("r{i},{},{i},{}\n", i as i64 * 600_000, i * 2);
        }
        let path = dir.path().join("toy.csv");
        std::fs::write(&path, csv).unwrap();
        let opts = ReplayOptions::new(spec(), path);
        (dir, opts)
    }

    /// Remembers what was sent, as "R<id>" for a request and "A<id>" for ground truth.
    #[derive(Default)]
    struct Record(Vec<String>);

    impl Sink for Record {
        async fn send(&mut self, topic: Topic, m: &Message) -> Result<()> {
            let codec = Codec::single_object();
            self.0.push(match topic {
                Topic::Requests => {
                    let r: PredictionRequest = codec.decode(&m.payload).unwrap();
                    format!("R{}", r.request_id.trim_start_matches("toy:"))
                }
                Topic::Actuals => {
                    let a: Actual = codec.decode(&m.payload).unwrap();
                    format!("A{}", a.request_id.trim_start_matches("toy:"))
                }
            });
            Ok(())
        }

        async fn flush(&mut self) -> Result<Delivered> {
            let count = |p: char| self.0.iter().filter(|s| s.starts_with(p)).count() as u64;
            Ok(Delivered {
                requests: count('R'),
                actuals: count('A'),
                ..Delivered::default()
            })
        }
    }

    async fn run(opts: &ReplayOptions) -> (Summary, Vec<String>) {
        let mut sink = Record::default();
        let summary = replay(
            opts,
            &mut sink,
            &Progress::hidden(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        (summary, sink.0)
    }

    #[tokio::test]
    async fn ground_truth_follows_its_request_after_the_label_delay_in_event_time() {
        let (_dir, opts) = data(5);
        // 25 minutes: each actual goes out just before the request 30 minutes after its own.
        let opts = ReplayOptions {
            label_delay: Duration::from_secs(25 * 60),
            ..opts
        };
        let (summary, sent) = run(&opts).await;
        assert_eq!(
            sent,
            [
                "Rr0", "Rr1", "Rr2", "Ar0", "Rr3", "Ar1", "Rr4", "Ar2", "Ar3", "Ar4"
            ]
        );
        assert!(summary.is_clean(), "{summary}");
        assert_eq!((summary.requests, summary.actuals), (5, 5));
    }

    #[tokio::test]
    async fn without_a_delay_each_actual_follows_its_request() {
        let (_dir, opts) = data(3);
        let (_, sent) = run(&opts).await;
        assert_eq!(sent, ["Rr0", "Ar0", "Rr1", "Ar1", "Rr2", "Ar2"]);
        let (_, sent) = run(&ReplayOptions {
            actuals: false,
            ..opts
        })
        .await;
        assert_eq!(sent, ["Rr0", "Rr1", "Rr2"]);
    }

    #[tokio::test]
    async fn the_window_and_the_row_limit_pick_the_rows() {
        let (_dir, opts) = data(10);
        let window = TimeRange {
            from: Some(2 * 600_000),
            to: Some(8 * 600_000),
        };
        let (summary, sent) = run(&ReplayOptions {
            window,
            rows: Some(3),
            ..opts.clone()
        })
        .await;
        assert_eq!(sent, ["Rr2", "Ar2", "Rr3", "Ar3", "Rr4", "Ar4"]);
        assert_eq!(summary.first_event_time, Some(2 * 600_000));
        let (summary, _) = run(&ReplayOptions { window, ..opts }).await;
        assert_eq!((summary.requests, summary.outside_window), (6, 4));
    }

    #[tokio::test]
    async fn a_looped_replay_starts_over_with_new_ids_later_in_event_time() {
        let (_dir, opts) = data(3);
        let (summary, sent) = run(&ReplayOptions {
            looped: true,
            rows: Some(8),
            actuals: false,
            ..opts
        })
        .await;
        assert_eq!(
            sent,
            [
                "Rr0", "Rr1", "Rr2", "Rr0~1", "Rr1~1", "Rr2~1", "Rr0~2", "Rr1~2"
            ]
        );
        let week = 7 * 24 * 3_600_000;
        assert_eq!(summary.first_event_time, Some(0));
        assert_eq!(summary.last_event_time, Some(2 * week + 600_000));
    }

    #[tokio::test]
    async fn interrupting_flushes_what_was_sent_and_says_so() {
        let (_dir, opts) = data(1000);
        let opts = ReplayOptions {
            pace: Pace::Rate(200.0),
            ..opts
        };
        // Interrupted by the sink rather than by a timer: on a loaded machine a timer may
        // fire only after a paced replay of 5 s has caught up and completed.
        let shutdown = CancellationToken::new();
        let mut sink = Unplugged {
            record: Record::default(),
            limit: 40,
            shutdown: shutdown.clone(),
        };
        let summary = replay(&opts, &mut sink, &Progress::hidden(), &shutdown)
            .await
            .unwrap();
        assert_eq!(summary.outcome, Outcome::Interrupted);
        // Each row's ground truth was due at once and went out before the next row: the
        // 40th message was row 19's, and none is left behind.
        assert_eq!(
            (summary.requests, summary.actuals, summary.pending_actuals),
            (20, 20, 0),
            "{summary}"
        );
        assert_eq!(sink.record.0.len() as u64, summary.messages());
    }

    /// Records like [`Record`], and pulls the plug after `limit` messages.
    struct Unplugged {
        record: Record,
        limit: usize,
        shutdown: CancellationToken,
    }

    impl Sink for Unplugged {
        async fn send(&mut self, topic: Topic, m: &Message) -> Result<()> {
            self.record.send(topic, m).await?;
            if self.record.0.len() >= self.limit {
                self.shutdown.cancel();
            }
            Ok(())
        }

        async fn flush(&mut self) -> Result<Delivered> {
            self.record.flush().await
        }
    }

    /// 90 rows, three a timestamp (ties at the cursor), ground truth 25 minutes late (owed
    /// at every interruption), written to `dir`.
    fn ties(dir: &std::path::Path) -> ReplayOptions {
        let mut csv = String::from("id,t,x,y\n");
        for i in 0..90 {
            csv += &format!("r{i},{},{i},{}\n", (i / 3) as i64 * 600_000, i * 2);
        }
        let path = dir.join("ties.csv");
        std::fs::write(&path, csv).unwrap();
        ReplayOptions {
            label_delay: Duration::from_secs(25 * 60),
            ..ReplayOptions::new(spec(), path)
        }
    }

    /// Records what it is sent, and fails (as a process killed outright would stop) once
    /// it has `limit` messages: the replay's own end-of-run position is never saved.
    struct Killed {
        record: Record,
        limit: usize,
    }

    impl Sink for Killed {
        async fn send(&mut self, topic: Topic, m: &Message) -> Result<()> {
            if self.record.0.len() >= self.limit {
                return Err(Error::Options("killed".into()));
            }
            self.record.send(topic, m).await
        }

        async fn flush(&mut self) -> Result<Delivered> {
            self.record.flush().await
        }
    }

    #[tokio::test]
    async fn a_replay_killed_outright_resumes_from_its_last_checkpoint_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let base = ties(dir.path());
        let (_, mut whole) = run(&base).await;
        whole.sort();
        let saved: std::sync::Arc<std::sync::Mutex<Option<Resume>>> = Default::default();
        let store = saved.clone();
        let checkpoint = Checkpoint {
            every: Duration::ZERO,
            save: std::sync::Arc::new(move |r: &Resume| {
                *store.lock().unwrap() = Some(*r);
                Ok(())
            }),
        };
        let (mut all, mut runs) = (Vec::new(), 0);
        loop {
            runs += 1;
            assert!(runs <= 100, "no progress");
            let resume = *saved.lock().unwrap();
            let opts = ReplayOptions {
                resume,
                window: TimeRange {
                    from: resume.map(|r| r.window_from(base.label_delay)),
                    to: None,
                },
                checkpoint: Some(checkpoint.clone()),
                ..base.clone()
            };
            let mut sink = Killed {
                record: Record::default(),
                limit: 17,
            };
            let result = replay(
                &opts,
                &mut sink,
                &Progress::hidden(),
                &CancellationToken::new(),
            )
            .await;
            all.extend(sink.record.0);
            if result.is_ok() {
                break;
            }
        }
        // Everything arrives; what is sent twice is at most what followed a checkpoint in
        // each killed run (actuals due before the next request, and that request).
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique, whole, "{runs} runs");
        let repeated = all.len() - whole.len();
        assert!(
            repeated < 3 * runs,
            "{repeated} sent twice over {runs} runs"
        );
    }

    #[tokio::test]
    async fn replays_interrupted_again_and_again_and_resumed_send_everything_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ties(dir.path());
        let (_, mut whole) = run(&opts).await;
        assert_eq!(whole.len(), 180);
        whole.sort();
        for every in [1, 2, 5, 13, 40, 179] {
            let mut all = Vec::new();
            let mut resume = None;
            let mut runs = 0;
            loop {
                runs += 1;
                assert!(runs <= 200, "every {every}: no progress");
                let resumed = ReplayOptions {
                    resume,
                    window: TimeRange {
                        from: resume.map(|r: Resume| r.window_from(opts.label_delay)),
                        to: None,
                    },
                    ..opts.clone()
                };
                let shutdown = CancellationToken::new();
                let mut sink = Unplugged {
                    record: Record::default(),
                    limit: every,
                    shutdown: shutdown.clone(),
                };
                let summary = replay(&resumed, &mut sink, &Progress::hidden(), &shutdown)
                    .await
                    .unwrap();
                // The cursor survives the position file.
                assert_eq!(
                    Resume::from_text(&summary.resume.to_text()),
                    Some(summary.resume)
                );
                all.extend(sink.record.0);
                resume = Some(summary.resume);
                if summary.outcome == Outcome::Completed {
                    break;
                }
            }
            all.sort();
            assert_eq!(
                all, whole,
                "interrupted every {every} messages ({runs} runs)"
            );
        }
    }

    #[tokio::test]
    async fn a_missing_column_is_an_error_before_anything_is_sent() {
        let (dir, opts) = data(3);
        std::fs::write(dir.path().join("toy.csv"), "id,t,y\nr0,0,1\n").unwrap();
        let mut sink = Record::default();
        let err = replay(
            &opts,
            &mut sink,
            &Progress::hidden(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, Error::MissingColumns { columns, .. } if columns == &["x"]),
            "{err}"
        );
        assert!(sink.0.is_empty());
    }
}
