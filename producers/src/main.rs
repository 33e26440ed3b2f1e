//! send_data: replays a CSV data set as prediction requests on driftline.requests and
//! delayed ground truth on driftline.actuals (or as Avro files, offline).
//!
//! ```sh
//! send_data --spec data/flights.toml --from 2013-06-01 --rows 50000 --speedup 3600 --label-delay 3h
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use driftline_schemas::duration::parse_duration;

use anyhow::{Context, Result};
use clap::{ArgGroup, Parser};
use driftline_kafka::KafkaArgs;
use driftline_process::{shutdown, telemetry};
use driftline_producers::avro_file::AvroFileSink;
use driftline_producers::sink::KafkaSink;
use driftline_producers::{Outcome, Pace, Progress, ReplayOptions, Summary, TimeRange, replay};
use driftline_schemas::spec::{FeatureSpec, parse_time};
use driftline_schemas::topics;
use tracing::info;

#[derive(Debug, Parser)]
#[command(name = "send_data", version, about, long_about = None)]
#[command(group(ArgGroup::new("pace").args(["rate", "speedup", "max"]).multiple(false)))]
struct Args {
    /// The feature spec (TOML) that says what the data's columns mean.
    #[arg(long, env = "DRIFTLINE_SPEC")]
    spec: PathBuf,

    /// The data: CSV or gzip-compressed CSV with a header row. Default: the spec's
    /// dataset.path, relative to the spec file.
    #[arg(long, env = "SEND_DATA_DATA")]
    data: Option<PathBuf>,

    /// Replay rows from this event time on (inclusive): a date, `YYYY-MM-DD HH:MM[:SS]` (UTC)
    /// or RFC 3339.
    #[arg(long, env = "SEND_DATA_FROM", value_parser = parse_time)]
    from: Option<i64>,

    /// Replay rows before this event time (exclusive).
    #[arg(long, env = "SEND_DATA_TO", value_parser = parse_time)]
    to: Option<i64>,

    /// Stop after this many rows (with --to too: whichever comes first).
    #[arg(long, env = "SEND_DATA_ROWS")]
    rows: Option<u64>,

    /// Send this many rows per second, whatever their event times.
    #[arg(long, env = "SEND_DATA_RATE")]
    rate: Option<f64>,

    /// Run event time this many times faster than real time (3600: an hour a second).
    #[arg(long, env = "SEND_DATA_SPEEDUP")]
    speedup: Option<f64>,

    /// As fast as the broker takes them (the default).
    #[arg(long, env = "SEND_DATA_MAX")]
    max: bool,

    /// How long after its event the ground truth is known, in event time (e.g. 3h, 30m);
    /// scaled by --speedup like everything else.
    #[arg(long, env = "SEND_DATA_LABEL_DELAY", default_value = "0s", value_parser = parse_duration)]
    label_delay: Duration,

    /// Send requests only.
    #[arg(long, env = "SEND_DATA_NO_ACTUALS")]
    no_actuals: bool,

    /// Stop at the first bad row instead of reporting and skipping it.
    #[arg(long, env = "SEND_DATA_STRICT")]
    strict: bool,

    /// Start over after the last row, for traffic as long as you like (soak tests): each
    /// pass is moved later in event time by the data's span (in whole weeks) and its
    /// request ids end in `~<pass>`, so it is new traffic. Stops at --rows or Ctrl-C.
    #[arg(long = "loop", env = "SEND_DATA_LOOP")]
    looped: bool,

    /// Where requests go (the topic must exist).
    #[arg(long, env = "DRIFTLINE_TOPIC_REQUESTS", default_value = topics::REQUESTS)]
    topic_requests: String,

    /// Where ground truth goes (the topic must exist).
    #[arg(long, env = "DRIFTLINE_TOPIC_ACTUALS", default_value = topics::ACTUALS)]
    topic_actuals: String,

    /// Write the events as Avro container files into this directory (`<topic>.avro`)
    /// instead of producing them to Kafka.
    #[arg(long, env = "SEND_DATA_AVRO_DIR")]
    avro_dir: Option<PathBuf>,

    #[command(flatten)]
    kafka: KafkaArgs,

    #[command(flatten)]
    telemetry: telemetry::TelemetryArgs,
}

impl Args {
    fn pace(&self) -> Pace {
        match (self.rate, self.speedup) {
            (Some(r), _) => Pace::Rate(r),
            (_, Some(x)) => Pace::Speedup(x),
            _ => Pace::Max,
        }
    }

    fn options(&self) -> Result<ReplayOptions> {
        let spec = FeatureSpec::load(&self.spec)?;
        let data = match (&self.data, &spec.dataset.path) {
            (Some(data), _) => data.clone(),
            (None, Some(path)) => self
                .spec
                .parent()
                .unwrap_or_else(|| ".".as_ref())
                .join(path),
            (None, None) => anyhow::bail!("no --data, and the spec has no dataset.path"),
        };
        if let (Some(from), Some(to)) = (self.from, self.to) {
            anyhow::ensure!(from < to, "--from must be before --to");
        }
        Ok(ReplayOptions {
            window: TimeRange {
                from: self.from,
                to: self.to,
            },
            rows: self.rows,
            pace: self.pace().validate().map_err(anyhow::Error::msg)?,
            label_delay: self.label_delay,
            actuals: !self.no_actuals,
            strict: self.strict,
            looped: self.looped,
            ..ReplayOptions::new(spec, data)
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Held to the end of main: dropping it exports the spans still queued.
    let _telemetry = match telemetry::init(&args.telemetry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("send_data: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<ExitCode> {
    let opts = args.options()?;
    let shutdown = shutdown::on_signal();
    let progress = Progress::stderr();
    info!(spec = %args.spec.display(), data = %opts.data.display(), model = %opts.spec.model.name, pace = ?opts.pace, "replaying");
    let summary = match &args.avro_dir {
        Some(dir) => {
            let mut sink = AvroFileSink::create(dir, &args.topic_requests, &args.topic_actuals)?;
            let summary = replay(&opts, &mut sink, &progress, &shutdown).await?;
            let [r, a] = sink.paths();
            info!(requests = %r.display(), actuals = %a.display(), "wrote Avro container files");
            summary
        }
        None => {
            let mut sink = KafkaSink::new(&args.kafka, &args.topic_requests, &args.topic_actuals)
                .await
                .with_context(|| format!("connecting to {}", args.kafka.bootstrap_servers))?;
            replay(&opts, &mut sink, &progress, &shutdown).await?
        }
    };
    eprint!("{summary}");
    Ok(exit_code(&summary))
}

fn exit_code(summary: &Summary) -> ExitCode {
    match summary.outcome {
        Outcome::Interrupted => ExitCode::from(130),
        Outcome::StoppedAtBadRow(_) => ExitCode::from(2),
        Outcome::Completed if summary.failed > 0 => ExitCode::FAILURE,
        Outcome::Completed => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_flags_are_mutually_exclusive() {
        let parse = |extra: &[&str]| {
            Args::try_parse_from([&["send_data", "--spec", "s.toml"], extra].concat())
        };
        assert_eq!(parse(&[]).unwrap().pace(), Pace::Max);
        assert_eq!(parse(&["--rate", "50"]).unwrap().pace(), Pace::Rate(50.0));
        assert_eq!(
            parse(&["--speedup", "60"]).unwrap().pace(),
            Pace::Speedup(60.0)
        );
        assert!(parse(&["--rate", "50", "--max"]).is_err());
        assert!(parse(&["--rate", "50", "--speedup", "2"]).is_err());
    }

    #[test]
    fn parses_dates_and_delays() {
        let a = Args::try_parse_from([
            "send_data",
            "--spec",
            "s.toml",
            "--from",
            "2013-07-01",
            "--to",
            "2013-07-02 06:00",
            "--label-delay",
            "3h",
        ])
        .unwrap();
        assert_eq!(a.from, Some(1_372_636_800_000));
        assert_eq!(a.to, Some(1_372_636_800_000 + 30 * 3_600_000));
        assert_eq!(a.label_delay, Duration::from_secs(3 * 3600));
        assert!(Args::try_parse_from(["send_data", "--spec", "s.toml", "--from", "July"]).is_err());
    }

    #[test]
    fn the_data_defaults_to_the_specs_path_beside_it() {
        let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/flights.toml");
        let a = Args::try_parse_from(["send_data", "--spec", spec.to_str().unwrap()]).unwrap();
        let opts = a.options().unwrap();
        assert!(
            opts.data.ends_with("data/flights.csv.gz"),
            "{}",
            opts.data.display()
        );
        assert!(opts.data.exists());
    }
}
