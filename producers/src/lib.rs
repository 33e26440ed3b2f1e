//! send_data: replays a tabular data set as live traffic.
//!
//! Reads a CSV (plain or gzip) and its feature spec (`data/*.toml`), and writes each row as a
//! `PredictionRequest` to `driftline.requests` (key: model) and, once the label delay
//! has passed in event time, its ground truth as an `Actual` to `driftline.actuals` (key:
//! model). Or, offline, writes both streams as Avro container files ([`avro_file`]).
//!
//! The pieces, from the file to the broker:
//! - [`source`] reads and decompresses the file on a blocking thread; [`rows`] turns each row
//!   into events by the spec (nothing here knows any particular data set) and names what is
//!   wrong with a bad row, by line number;
//! - [`replay`] paces the rows ([`pace`]: as fast as possible, rows per second, or event time
//!   sped up) and holds ground truth back until it is due ([`schedule`]);
//! - a [`sink::Sink`] takes the encoded messages: [`sink::KafkaSink`] awaits deliveries in
//!   bulk, so the broker, not the tool, sets the pace at `--max`.
//!
//! Request ids are deterministic (`<model>:<id column>`, or a hash of the row), so replaying
//! the same rows again makes the same ids and downstream consumers can recognise them.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use driftline_producers::{Progress, ReplayOptions, replay, sink::KafkaSink};
//! use driftline_schemas::spec::FeatureSpec;
//!
//! let spec = FeatureSpec::load("data/flights.toml".as_ref())?;
//! let opts = ReplayOptions { rows: Some(1000), ..ReplayOptions::new(spec, "data/flights.csv.gz") };
//! let kafka = driftline_kafka::KafkaArgs::default();
//! let mut sink = KafkaSink::new(&kafka, "driftline.requests", "driftline.actuals").await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let summary = replay(&opts, &mut sink, &Progress::hidden(), &shutdown).await?;
//! println!("{summary}");
//! # Ok(()) }
//! ```

use std::path::PathBuf;

pub mod avro_file;
pub mod pace;
pub mod progress;
pub mod replay;
pub mod schedule;
pub mod sink;
pub mod source;

pub use pace::Pace;
pub use progress::Progress;
pub use replay::{Outcome, ReplayOptions, Summary, replay};
pub use source::TimeRange;

/// What stops a replay from starting or going on. Bad rows are not errors: they are
/// reported and skipped (or, with `--strict`, end the replay with
/// [`Outcome::StoppedAtBadRow`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Options(String),
    #[error(transparent)]
    Dataset(#[from] driftline_dataset::Error),
    #[error("{} line {line}: cannot read on: {msg}", path.display())]
    Read {
        path: PathBuf,
        line: u64,
        msg: String,
    },
    #[error("{}: no column named {} (the spec needs it)", path.display(), columns.join(", "))]
    MissingColumns { path: PathBuf, columns: Vec<String> },
    #[error("{}: encoding an event: {source}", path.display())]
    Encode {
        path: PathBuf,
        source: driftline_schemas::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot save the replay position: {0}")]
    Checkpoint(std::io::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic {0} does not exist on the broker: create it first (infra/topics.toml)")]
    MissingTopic(String),
}

impl Error {
    /// Whether running again unchanged may succeed (the broker was away), as opposed to
    /// something that needs fixing first (a file, a spec, an option).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Kafka(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
