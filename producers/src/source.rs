//! Reading a data set: a CSV or gzip-compressed CSV with a header row, turned into encoded
//! events on a blocking thread so parsing and Avro encoding overlap with producing.

use std::io::Read;
use std::path::{Path, PathBuf};

use csv::StringRecord;
use driftline_schemas::codec::Codec;
use driftline_schemas::events::Event;
use driftline_schemas::spec::FeatureSpec;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use driftline_dataset::csv_reader;
use driftline_dataset::rows::{BadRow, RowMapper};

use crate::{Error, Result};

/// Rows handed from the reader to the replay loop per channel message: enough to make the
/// channel's cost vanish, few enough that a paced replay does not read far ahead.
const BATCH: usize = 256;
/// Rows between checks whether the replay still wants them.
const CHECK_EVERY: u64 = 4096;

/// One Kafka-ready message: key and encoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub key: String,
    pub payload: Vec<u8>,
}

/// What the reader hands to the replay loop.
#[derive(Debug)]
pub(crate) enum Item {
    Row(Row),
    Bad(BadRow),
}

#[derive(Debug)]
pub(crate) struct Row {
    pub event_time: i64,
    pub request: Message,
    /// The ground truth and the event time it is due at.
    pub actual: Option<(i64, Message)>,
}

/// Event-time bounds: `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl TimeRange {
    pub fn contains(&self, t: i64) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|end| t < end)
    }
}

/// What to read and how to turn it into events.
#[derive(Debug, Clone)]
pub(crate) struct ReadPlan {
    pub path: PathBuf,
    pub spec: FeatureSpec,
    pub window: TimeRange,
    /// Stop after this many good rows in the window.
    pub limit: Option<u64>,
    pub label_delay_ms: i64,
    pub actuals: bool,
    pub strict: bool,
    /// Start over after the last row (see [`Pass`]) until `limit`.
    pub looped: bool,
}

/// Event times move forward by whole weeks per pass, so weekly patterns stay aligned.
const WEEK_MS: i64 = 7 * 24 * 3_600_000;

/// One pass over the data in a looped replay. Pass 0 is the data as it is; pass `n` moves
/// every event time forward by `n` times the data's span (rounded up to whole weeks) and
/// tags every request id with `~n`, so each pass is new traffic after the one before.
#[derive(Debug, Clone, Copy, Default)]
struct Pass {
    n: u64,
    shift_ms: i64,
}

impl Pass {
    fn next(self, span: (i64, i64)) -> Self {
        let weeks = (span.1 - span.0) / WEEK_MS + 1;
        Pass {
            n: self.n + 1,
            shift_ms: self.shift_ms + weeks * WEEK_MS,
        }
    }

    fn apply(
        &self,
        mut mapped: driftline_dataset::rows::Mapped,
    ) -> driftline_dataset::rows::Mapped {
        if self.n == 0 {
            return mapped;
        }
        let tag = |id: &mut String| id.push_str(&format!("~{}", self.n));
        tag(&mut mapped.request.request_id);
        mapped.request.event_time += self.shift_ms;
        if let Some(a) = &mut mapped.actual {
            tag(&mut a.request_id);
            a.event_time += self.shift_ms;
            a.observed_at += self.shift_ms;
        }
        mapped
    }
}

/// Counts the reader keeps, for the summary.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ReadStats {
    pub outside_window: u64,
    pub without_target: u64,
}

/// Reads the file and sends its rows, encoded, in batches. Returns when the file ends (a
/// looped plan starts it over), the limit is reached, the receiver goes away, or (with
/// `strict`) at the first bad row.
pub(crate) fn read(
    plan: &ReadPlan,
    codec: &Codec,
    tx: &mpsc::Sender<Vec<Item>>,
) -> Result<ReadStats> {
    let mut stats = ReadStats::default();
    let mut good = 0u64;
    let mut pass = Pass::default();
    loop {
        let before = good;
        let span = read_pass(plan, codec, tx, pass, &mut good, &mut stats)?;
        let done = plan.limit.is_some_and(|n| good >= n) || tx.is_closed();
        match span {
            // A pass that sent nothing would loop for ever.
            Some(span) if plan.looped && !done && good > before => pass = pass.next(span),
            _ => return Ok(stats),
        }
    }
}

/// One pass over the file; returns the first and last event time it sent, or `None` when
/// it sent nothing or must not go on (the replay stopped, a bad row with `strict`).
fn read_pass(
    plan: &ReadPlan,
    codec: &Codec,
    tx: &mpsc::Sender<Vec<Item>>,
    pass: Pass,
    good: &mut u64,
    stats: &mut ReadStats,
) -> Result<Option<(i64, i64)>> {
    let mut reader = csv_reader(&plan.path)?;
    let mapper = mapper(plan, &mut reader)?;
    let mut batch = Vec::with_capacity(BATCH);
    let mut span: Option<(i64, i64)> = None;
    let mut record = StringRecord::new();
    let encode_err = |source| Error::Encode {
        path: plan.path.clone(),
        source,
    };
    for seen in 0u64.. {
        if plan.limit.is_some_and(|n| *good >= n) {
            break;
        }
        // Rows outside the window send nothing, so notice a stopped replay here too.
        if seen % CHECK_EVERY == 0 && tx.is_closed() {
            return Ok(None);
        }
        let line = match next(&mut reader, &mut record, &plan.path)? {
            Next::End => break,
            Next::Record(line) => line,
            Next::Bad(bad) => {
                batch.push(Item::Bad(bad));
                if plan.strict {
                    break;
                }
                continue;
            }
        };
        let item = match mapper.event_time(&record) {
            Ok(t) if !plan.window.contains(t) => {
                stats.outside_window += 1;
                continue;
            }
            Ok(t) => match mapper.map(&record, t, plan.label_delay_ms) {
                Ok(mapped) => {
                    *good += 1;
                    span = Some(span.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
                    let mapped = pass.apply(mapped);
                    if mapped.actual.is_none() {
                        stats.without_target += 1;
                    }
                    let request = Message {
                        key: mapped.request.key(),
                        payload: codec.encode(&mapped.request).map_err(encode_err)?,
                    };
                    let actual = match mapped.actual.filter(|_| plan.actuals) {
                        Some(a) => Some((
                            a.observed_at,
                            Message {
                                key: a.key(),
                                payload: codec.encode(&a).map_err(encode_err)?,
                            },
                        )),
                        None => None,
                    };
                    Item::Row(Row {
                        event_time: t + pass.shift_ms,
                        request,
                        actual,
                    })
                }
                Err(reason) => Item::Bad(BadRow { line, reason }),
            },
            Err(reason) => Item::Bad(BadRow { line, reason }),
        };
        let stop = plan.strict && matches!(item, Item::Bad(_));
        batch.push(item);
        if stop {
            let _ = tx.blocking_send(batch);
            return Ok(None);
        }
        let full = batch.len() >= BATCH;
        if full
            && tx
                .blocking_send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                .is_err()
        {
            return Ok(None); // the replay stopped (Ctrl-C or an error): nothing to do
        }
    }
    if !batch.is_empty() && tx.blocking_send(batch).is_err() {
        return Ok(None);
    }
    Ok(span)
}

/// How many rows a replay will send (for the progress bar): rows in the window, up to the
/// limit; bad rows are not counted.
/// Gives up (returning `None`) once `stop` is cancelled.
pub(crate) fn count(plan: &ReadPlan, stop: &CancellationToken) -> Result<Option<u64>> {
    let mut reader = csv_reader(&plan.path)?;
    let mapper = mapper(plan, &mut reader)?;
    let mut record = StringRecord::new();
    let mut n = 0;
    for seen in 0u64.. {
        if plan.limit.is_some_and(|limit| n >= limit) {
            break;
        }
        if seen % CHECK_EVERY == 0 && stop.is_cancelled() {
            return Ok(None);
        }
        match next(&mut reader, &mut record, &plan.path)? {
            Next::End => break,
            Next::Record(_)
                if mapper
                    .event_time(&record)
                    .is_ok_and(|t| plan.window.contains(t)) =>
            {
                n += 1
            }
            _ => {}
        }
    }
    Ok(Some(n))
}

fn mapper(plan: &ReadPlan, reader: &mut csv::Reader<Box<dyn Read + Send>>) -> Result<RowMapper> {
    let header = reader
        .headers()
        .map_err(|e| read_error(&plan.path, 1, e))?
        .clone();
    RowMapper::new(&plan.spec, &header).map_err(|columns| Error::MissingColumns {
        path: plan.path.clone(),
        columns,
    })
}

enum Next {
    End,
    /// A record was read into the buffer; it starts on this line.
    Record(u64),
    Bad(BadRow),
}

fn next(
    reader: &mut csv::Reader<Box<dyn Read + Send>>,
    record: &mut StringRecord,
    path: &Path,
) -> Result<Next> {
    match reader.read_record(record) {
        Ok(false) => Ok(Next::End),
        Ok(true) => Ok(Next::Record(record.position().map_or(0, |p| p.line()))),
        Err(e) => {
            let line = e
                .position()
                .map_or_else(|| reader.position().line(), |p| p.line());
            match e.kind() {
                // The record was consumed: report it and read on.
                csv::ErrorKind::Utf8 { .. } => Ok(Next::Bad(BadRow {
                    line,
                    reason: "is not valid UTF-8".to_string(),
                })),
                // A broken file (truncated gzip, a read error): nothing after it can be trusted.
                _ => Err(read_error(path, line, e)),
            }
        }
    }
}

fn read_error(path: &Path, line: u64, e: csv::Error) -> Error {
    Error::Read {
        path: path.to_path_buf(),
        line,
        msg: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_from_inclusive_to_exclusive() {
        let w = TimeRange {
            from: Some(10),
            to: Some(20),
        };
        assert!(!w.contains(9) && w.contains(10) && w.contains(19) && !w.contains(20));
        assert!(TimeRange::default().contains(i64::MIN));
    }
}
