//! send_data against the real broker: a slice of the flights data replayed and read back,
//! and a CSV with broken lines.
//!
//! The expected rows come from the data file itself, split on commas here (the flights CSV
//! has no quoting), not from send_data's own row mapping.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use driftline_producers::sink::KafkaSink;
use driftline_producers::{Outcome, Pace, Progress, ReplayOptions, Summary, TimeRange, replay};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Actual, FeatureValue, Features, PredictionRequest};
use driftline_schemas::spec::{FeatureSpec, Kind, parse_time};
use driftline_tests::{create_topics, kafka, payload, read_all, unique};
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data")
}

/// A data row as the test reads it.
struct Row {
    id: String,
    event_time: i64,
    features: Features,
    arr_delay: f64,
}

/// The flights file's header and data lines, decompressed.
fn flights_lines() -> Result<Vec<String>> {
    let mut text = String::new();
    driftline_dataset::open(&data_dir().join("flights.csv.gz"))?.read_to_string(&mut text)?;
    Ok(text.lines().map(str::to_string).collect())
}

fn parse_row(spec: &FeatureSpec, header: &[&str], line: &str) -> Result<Row> {
    let cells: HashMap<&str, &str> = header.iter().copied().zip(line.split(',')).collect();
    let features = spec
        .features
        .iter()
        .map(|f| {
            let cell = cells[f.column()];
            let value = match (cell, f.kind) {
                ("", _) => FeatureValue::Missing,
                (c, Kind::Numeric) => FeatureValue::Number(c.parse()?),
                (c, Kind::Categorical) => FeatureValue::Category(c.to_string()),
            };
            Ok((f.name.clone(), value))
        })
        .collect::<Result<_>>()?;
    Ok(Row {
        id: format!("{}:{}", spec.model.name, cells["id"]),
        event_time: parse_time(cells["scheduled_departure"]).map_err(anyhow::Error::msg)?,
        features,
        arr_delay: cells["arr_delay"].parse()?,
    })
}

async fn topics() -> Result<(String, String)> {
    let (requests, actuals) = (unique("send-data-requests"), unique("send-data-actuals"));
    // Partitions as in infra/topics.toml.
    create_topics(&[(&requests, 3), (&actuals, 3)]).await?;
    Ok((requests, actuals))
}

async fn run(opts: &ReplayOptions, requests: &str, actuals: &str) -> Result<Summary> {
    let mut sink = KafkaSink::new(&kafka(), requests, actuals).await?;
    Ok(replay(
        opts,
        &mut sink,
        &Progress::hidden(),
        &CancellationToken::new(),
    )
    .await?)
}

fn timestamp(m: &OwnedMessage) -> i64 {
    m.timestamp().to_millis().unwrap_or(i64::MIN)
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_a_slice_that_a_consumer_reads_back_in_event_time_order() -> Result<()> {
    const ROWS: usize = 300;
    const SPEEDUP: f64 = 36_000.0; // ten hours of flights in a second
    let label_delay = Duration::from_secs(3600); // 100 ms of wall time at that speed
    let spec = FeatureSpec::load(&data_dir().join("flights.toml"))?;
    let from = parse_time("2013-07-01").map_err(anyhow::Error::msg)?;

    let lines = flights_lines()?;
    let header: Vec<&str> = lines[0].split(',').collect();
    let expected: Vec<Row> = lines[1..]
        .iter()
        .map(|l| parse_row(&spec, &header, l))
        .filter(|r| r.as_ref().map_or(true, |r| r.event_time >= from))
        .take(ROWS)
        .collect::<Result<_>>()?;
    assert_eq!(expected.len(), ROWS);
    let position: HashMap<&str, usize> = expected
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();

    let (requests_topic, actuals_topic) = topics().await?;
    let opts = ReplayOptions {
        window: TimeRange {
            from: Some(from),
            to: None,
        },
        rows: Some(ROWS as u64),
        pace: Pace::Speedup(SPEEDUP),
        label_delay,
        ..ReplayOptions::new(spec.clone(), data_dir().join("flights.csv.gz"))
    };
    let summary = run(&opts, &requests_topic, &actuals_topic).await?;
    assert!(summary.is_clean(), "{summary}");
    assert_eq!(
        (summary.requests, summary.actuals),
        (ROWS as u64, ROWS as u64),
        "{summary}"
    );

    let codec = Codec::single_object();
    let requests = read_all(&requests_topic, ROWS, Duration::from_secs(60))?;
    assert_eq!(
        requests.len(),
        ROWS,
        "exactly the replayed rows, no duplicates"
    );
    let mut request_time = HashMap::new();
    let mut last_in_partition: BTreeMap<i32, usize> = BTreeMap::new();
    for m in &requests {
        let r: PredictionRequest = codec.decode(payload(m))?;
        let i = *position
            .get(r.request_id.as_str())
            .with_context(|| format!("unexpected {}", r.request_id))?;
        let want = &expected[i];
        assert_eq!(m.key(), Some(r.model.as_bytes()), "keyed by model");
        assert_eq!(
            (r.model.as_str(), r.event_time),
            (spec.model.name.as_str(), want.event_time)
        );
        assert_eq!(r.features, want.features, "features of {}", r.request_id);
        // Within a partition, rows arrive in file order, which is event-time order.
        if let Some(prev) = last_in_partition.insert(m.partition(), i) {
            assert!(
                prev < i && expected[prev].event_time <= want.event_time,
                "order in partition {}",
                m.partition()
            );
        }
        assert!(
            request_time.insert(r.request_id, timestamp(m)).is_none(),
            "duplicate request"
        );
    }
    assert_eq!(request_time.len(), ROWS);

    let actuals = read_all(&actuals_topic, ROWS, Duration::from_secs(60))?;
    assert_eq!(actuals.len(), ROWS);
    let scaled_delay = (label_delay.as_secs_f64() * 1000.0 / SPEEDUP) as i64;
    let mut gaps = Vec::new();
    let mut prev: Option<usize> = None;
    for m in &actuals {
        let a: Actual = codec.decode(payload(m))?;
        let i = position[a.request_id.as_str()];
        assert_eq!(m.key(), Some(spec.model.name.as_bytes()), "keyed by model");
        assert_eq!(
            (a.value, a.class.as_deref()),
            (Some(expected[i].arr_delay), None)
        );
        assert_eq!(a.observed_at, a.event_time + label_delay.as_millis() as i64);
        // One key, one partition: the ground truth arrives in event-time order.
        if let Some(p) = prev {
            assert!(p < i, "actuals in event-time order");
        }
        prev = Some(i);
        let gap = timestamp(m) - request_time[&a.request_id];
        assert!(
            gap >= 0,
            "the actual for {} was produced {gap} ms before its request",
            a.request_id
        );
        gaps.push(gap);
    }
    gaps.sort_unstable();
    let median = gaps[gaps.len() / 2];
    assert!(
        median >= scaled_delay / 2,
        "median gap {median} ms, label delay scaled to {scaled_delay} ms"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_line_is_reported_by_number_and_the_good_rows_are_sent() -> Result<()> {
    let spec = FeatureSpec::load(&data_dir().join("flights.toml"))?;
    let lines = flights_lines()?;
    let header: Vec<&str> = lines[0].split(',').collect();
    let dep_delay = header
        .iter()
        .position(|h| *h == "dep_delay")
        .context("dep_delay column")?;
    // Lines 2..=11 of a new file; line 5 gets a word for a number, line 8 loses its last
    // fields.
    let mut file = vec![lines[0].clone()];
    for (n, line) in (2..).zip(&lines[1..=10]) {
        let mut cells: Vec<&str> = line.split(',').collect();
        match n {
            5 => cells[dep_delay] = "late",
            8 => cells.truncate(cells.len() - 3),
            _ => {}
        }
        file.push(cells.join(","));
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("broken.csv");
    std::fs::write(&path, file.join("\n") + "\n")?;
    let good: Vec<String> = [2, 3, 4, 6, 7, 9, 10, 11]
        .iter()
        .map(|n| parse_row(&spec, &header, &lines[n - 1]).map(|r| r.id))
        .collect::<Result<_>>()?;

    let (requests_topic, actuals_topic) = topics().await?;
    let opts = ReplayOptions::new(spec.clone(), &path);
    let summary = run(&opts, &requests_topic, &actuals_topic).await?;
    assert_eq!(summary.outcome, Outcome::Completed);
    assert_eq!(
        (summary.requests, summary.actuals, summary.bad_rows),
        (8, 8, 2),
        "{summary}"
    );
    let bad: Vec<_> = summary.bad_examples.iter().map(|b| b.line).collect();
    assert_eq!(bad, [5, 8]);
    assert!(
        summary.bad_examples[0]
            .reason
            .contains("`dep_delay`: \"late\" is not a number"),
        "{summary}"
    );
    assert!(
        summary.bad_examples[1]
            .reason
            .contains("has 15 fields, the header has 18"),
        "{summary}"
    );
    let codec = Codec::single_object();
    let sent: Vec<String> = read_all(&requests_topic, 8, Duration::from_secs(60))?
        .iter()
        .map(|m| {
            codec
                .decode::<PredictionRequest>(payload(m))
                .map(|r| r.request_id)
        })
        .collect::<Result<_, _>>()?;
    let mut sorted = sent.clone();
    sorted.sort();
    let mut want = good.clone();
    want.sort();
    assert_eq!(sorted, want, "the good rows, each once");

    // --strict: the rows before the bad line are sent and flushed, then the replay stops.
    let (requests_topic, actuals_topic) = topics().await?;
    let strict = ReplayOptions {
        strict: true,
        ..opts
    };
    let summary = run(&strict, &requests_topic, &actuals_topic).await?;
    match &summary.outcome {
        Outcome::StoppedAtBadRow(b) => assert_eq!(b.line, 5),
        other => panic!("expected a stop at line 5, got {other:?}"),
    }
    assert_eq!(summary.requests, 3, "{summary}");
    assert_eq!(
        read_all(&requests_topic, 3, Duration::from_secs(60))?.len(),
        3
    );
    Ok(())
}
