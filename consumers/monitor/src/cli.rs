//! The offline commands, on the same code as the service.
//!
//! - `driftline drift`: two CSV files compared column by column ([`drift`]);
//! - `driftline backtest`: a CSV replayed in event-time order through the monitor's window
//!   and policy without Kafka, printing every evaluation ([`backtest`]), so thresholds can
//!   be tuned on history before going live. The first rows (or those before a date) are
//!   the reference; unless `--no-model`, the spec's model is fitted on them exactly as the
//!   trainer would, so the prediction and the error metrics are monitored too.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use driftline_drift::numeric::Binning;
use driftline_drift::policy::defaults;
use driftline_drift::{CompareOptions, DriftPolicy, Frame};
use driftline_model::{
    LabelledRow, Target, evaluate, feature_profiles, fit, reference_profile, split_by_time,
};
use driftline_schemas::duration::parse_duration;
use driftline_schemas::events::{
    Actual, DriftDecision, Features, PredictionLogged, PredictionSource, RetrainRequested,
};
use driftline_schemas::spec::{FeatureSpec, format_time, parse_time};

use driftline_dataset::rows::{Mapped, RowMapper};

use crate::monitor::{Evaluation, ModelMonitor, MonitorConfig, Pending};
use crate::policy::{Correction, MonitorPolicy};
use crate::window::WindowConfig;
use crate::{Error, Result};

/// The window and decision policy (shared by the service and `backtest`).
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Events per window (count-based window; also its memory bound).
    #[arg(
        long = "window",
        env = "DRIFTLINE_MONITOR_WINDOW",
        default_value_t = 10_000
    )]
    pub window: usize,
    /// Also keep only events this recent, in event time, e.g. `7d`, `12h` (time-based window).
    #[arg(long, env = "DRIFTLINE_MONITOR_WINDOW_TIME", value_parser = parse_duration_ms)]
    pub window_time: Option<i64>,
    /// Evaluate after this many new events.
    #[arg(
        long,
        env = "DRIFTLINE_MONITOR_EVALUATE_EVERY",
        default_value_t = 1_000
    )]
    pub evaluate_every: u64,
    /// ...or after this much event time, e.g. `1h`.
    #[arg(long, env = "DRIFTLINE_MONITOR_EVALUATE_INTERVAL", value_parser = parse_duration_ms)]
    pub evaluate_interval: Option<i64>,
    /// Quantile bins of the reference for PSI and Jensen-Shannon.
    #[arg(long, env = "DRIFTLINE_MONITOR_BINS", default_value_t = 10)]
    pub bins: usize,
    /// Fewest events in the window for any decision.
    #[arg(long, env = "DRIFTLINE_MONITOR_MIN_SAMPLES", default_value_t = 1_000)]
    pub min_samples: u64,
    /// Consecutive drifting evaluations before a drift is confirmed.
    #[arg(long, env = "DRIFTLINE_MONITOR_CONFIRMATIONS", default_value_t = 3)]
    pub confirmations: u32,
    /// New events after a retrain request before another [default: the window size].
    #[arg(long, env = "DRIFTLINE_MONITOR_COOLDOWN")]
    pub cooldown: Option<u64>,
    /// Share of drifted features at which the model drifts.
    #[arg(long, env = "DRIFTLINE_MONITOR_SHARE", default_value_t = defaults::SHARE)]
    pub share: f64,
    /// Once confirmed, the drift holds until the share falls below this.
    #[arg(long, env = "DRIFTLINE_MONITOR_RELEASE_SHARE", default_value_t = 0.4)]
    pub release_share: f64,
    /// A numeric feature drifts at this normalised Wasserstein distance (reference sds).
    #[arg(
        long,
        env = "DRIFTLINE_MONITOR_NUMERIC_THRESHOLD",
        default_value_t = defaults::WASSERSTEIN_NORM
    )]
    pub numeric_threshold: f64,
    /// A categorical feature drifts at this Jensen-Shannon distance.
    #[arg(
        long,
        env = "DRIFTLINE_MONITOR_CATEGORICAL_THRESHOLD",
        default_value_t = defaults::JENSEN_SHANNON
    )]
    pub categorical_threshold: f64,
    /// Multiple-testing correction of p-values: none, bonferroni, bh.
    #[arg(long, env = "DRIFTLINE_MONITOR_CORRECTION", default_value = "none")]
    pub correction: Correction,
    /// Relative worsening of MAE (or log-loss) over the holdout that counts as drift.
    #[arg(
        long,
        env = "DRIFTLINE_MONITOR_MAX_ERROR_INCREASE",
        default_value_t = 0.25
    )]
    pub max_error_increase: f64,
    /// Do not let performance decide (it is still reported).
    #[arg(long, env = "DRIFTLINE_MONITOR_IGNORE_PERFORMANCE")]
    pub ignore_performance: bool,
    /// Most predictions waiting for their actual.
    #[arg(long, env = "DRIFTLINE_MONITOR_MAX_PENDING", default_value_t = 100_000)]
    pub max_pending: usize,
}

impl Default for PolicyArgs {
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            p: PolicyArgs,
        }
        Wrap::parse_from(["policy"]).p
    }
}

impl PolicyArgs {
    /// The monitor's configuration, checked.
    pub fn config(&self) -> Result<MonitorConfig> {
        let base = DriftPolicy::default();
        let drift = DriftPolicy {
            numeric: DriftPolicy::numeric_rules(self.numeric_threshold),
            categorical: DriftPolicy::categorical_rules(self.categorical_threshold),
            share: self.share,
            ..base
        };
        let config = MonitorConfig {
            window: WindowConfig {
                max_events: self.window,
                max_age_ms: self.window_time,
                bins: self.bins,
            },
            evaluate_every: self.evaluate_every,
            evaluate_interval_ms: self.evaluate_interval,
            policy: MonitorPolicy {
                drift,
                correction: self.correction,
                min_samples: self.min_samples,
                confirmations: self.confirmations,
                release_share: self.release_share,
                cooldown_events: self.cooldown.unwrap_or(self.window as u64),
                max_error_increase: (!self.ignore_performance).then_some(self.max_error_increase),
                prediction_drift: true,
            },
            max_pending: self.max_pending,
        };
        config.validate()?;
        Ok(config)
    }
}

/// A positive duration (see [`parse_duration`]), in milliseconds.
pub fn parse_duration_ms(text: &str) -> std::result::Result<i64, String> {
    let d = parse_duration(text)?;
    i64::try_from(d.as_millis())
        .ok()
        .filter(|ms| *ms > 0)
        .ok_or_else(|| format!("{text:?} must be at least 1ms"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriftFormat {
    Json,
    Table,
}

/// `driftline drift`: compare two CSV files.
#[derive(Debug, Clone, Args)]
pub struct DriftArgs {
    /// The reference CSV (or .csv.gz).
    #[arg(long)]
    pub reference: PathBuf,
    /// The current CSV (or .csv.gz).
    #[arg(long)]
    pub current: PathBuf,
    /// Feature spec: which columns, and their kinds [default: every shared column, kinds inferred].
    #[arg(long, env = "DRIFTLINE_SPEC")]
    pub spec: Option<PathBuf>,
    /// PSI and Jensen-Shannon bins: `quantile` (10 quantile bins of the reference) or
    /// `sturges` (Evidently's equal-width bins).
    #[arg(long, default_value = "quantile")]
    pub binning: Binning,
    #[arg(long, value_enum, default_value = "table")]
    pub format: DriftFormat,
}

fn open(path: &Path) -> Result<Box<dyn Read + Send>> {
    driftline_dataset::open(path).map_err(|e| Error::Data {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn load_spec(path: &Path) -> Result<FeatureSpec> {
    FeatureSpec::load(path).map_err(|e| Error::Config(e.to_string()))
}

/// Runs `driftline drift` and returns what it prints.
pub fn drift(args: &DriftArgs) -> Result<String> {
    let spec = args.spec.as_deref().map(load_spec).transpose()?;
    // A plain file is read whole in one call; a gzipped one is decompressed as a stream.
    let frame = |p: &Path| {
        let gzip = driftline_dataset::is_gzip(p).map_err(|e| Error::Data {
            path: p.display().to_string(),
            message: e.to_string(),
        })?;
        if gzip {
            Frame::from_reader(open(p)?, spec.as_ref(), &p.display().to_string())
        } else {
            Frame::from_path(p, spec.as_ref())
        }
        .map_err(Error::from)
    };
    // The two files are independent: read them on two threads.
    let (reference, current) = std::thread::scope(|s| {
        let reference = s.spawn(|| frame(&args.reference));
        let current = frame(&args.current);
        (
            reference.join().expect("reading the reference panicked"),
            current,
        )
    });
    let (reference, current) = (reference?, current?);
    let options = CompareOptions {
        binning: args.binning,
        ..Default::default()
    };
    let report = driftline_drift::compare(&reference, &current, &options)?;
    Ok(match args.format {
        DriftFormat::Json => report.to_json(),
        DriftFormat::Table => report.render_table(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BacktestFormat {
    /// One JSON object per evaluation.
    Jsonl,
    /// One line per evaluation.
    Table,
}

/// `driftline backtest`: replay a CSV through the monitor without Kafka.
#[derive(Debug, Clone, Args)]
pub struct BacktestArgs {
    /// The feature spec (its dataset.path is the default data).
    #[arg(long, env = "DRIFTLINE_SPEC")]
    pub spec: PathBuf,
    /// The CSV (or .csv.gz) to replay [default: the spec's dataset.path].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Rows before this event time are the reference (e.g. 2013-03-01).
    #[arg(long)]
    pub reference_until: Option<String>,
    /// Without --reference-until: the first this many rows (in event time) are the reference.
    #[arg(long, default_value_t = 20_000)]
    pub reference_rows: usize,
    /// Stop the replay at this event time.
    #[arg(long)]
    pub until: Option<String>,
    /// Monitor the features only: fit no model, so no prediction drift or error metrics.
    #[arg(long)]
    pub no_model: bool,
    #[arg(long, value_enum, default_value = "table")]
    pub format: BacktestFormat,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// One evaluation of a backtest.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestEvaluation {
    /// Index of the row that triggered it, among the data rows in event-time order.
    pub row: usize,
    pub evaluation: Evaluation,
}

/// What a backtest did.
#[derive(Debug, Clone, PartialEq)]
pub struct Backtest {
    pub reference_rows: usize,
    pub replayed_rows: usize,
    /// Rows skipped: unparseable event time, target or feature.
    pub skipped_rows: usize,
    pub evaluations: Vec<BacktestEvaluation>,
}

impl Backtest {
    pub fn retrains(&self) -> impl Iterator<Item = &RetrainRequested> {
        self.evaluations
            .iter()
            .filter_map(|e| e.evaluation.retrain.as_ref())
    }
}

struct Row {
    event_time: i64,
    features: Features,
    target: Option<Target>,
}

/// The file's rows by the spec, as send_data would send them: a row it would refuse (bad
/// time, feature or target, wrong field count) is skipped and counted.
fn read_rows(spec: &FeatureSpec, path: &Path) -> Result<(Vec<Row>, usize)> {
    let data_err = |m: String| Error::Data {
        path: path.display().to_string(),
        message: m,
    };
    let mut rdr = driftline_dataset::csv_reader(path).map_err(|e| data_err(e.to_string()))?;
    let header = rdr.headers().map_err(|e| data_err(e.to_string()))?.clone();
    let mapper = RowMapper::new(spec, &header)
        .map_err(|missing| data_err(format!("no column named {}", missing.join(", "))))?;
    let mut rows = Vec::new();
    let mut skipped = 0;
    let mut record = csv::StringRecord::new();
    while rdr
        .read_record(&mut record)
        .map_err(|e| data_err(e.to_string()))?
    {
        let mapped = mapper
            .event_time(&record)
            .and_then(|t| mapper.map(&record, t, 0));
        let Ok(Mapped { request, actual }) = mapped else {
            skipped += 1;
            continue;
        };
        let target = actual.and_then(|a| match (a.value, a.class) {
            (Some(v), _) => Some(Target::Value(v)),
            (None, Some(c)) => Some(Target::Class(c)),
            (None, None) => None,
        });
        rows.push(Row {
            event_time: request.event_time,
            features: request.features,
            target,
        });
    }
    // Event-time order; ties keep the file's order.
    rows.sort_by_key(|r| r.event_time);
    Ok((rows, skipped))
}

/// Runs `driftline backtest`, writing each evaluation to `out` as it happens.
pub fn backtest(args: &BacktestArgs, out: &mut dyn Write) -> Result<Backtest> {
    let spec = load_spec(&args.spec)?;
    let config = args.policy.config()?;
    let data = match &args.data {
        Some(d) => d.clone(),
        None => {
            let rel = spec.dataset.path.as_deref().ok_or_else(|| {
                Error::Config("no --data and the spec has no dataset.path".into())
            })?;
            args.spec.parent().unwrap_or(Path::new(".")).join(rel)
        }
    };
    let time = |t: &Option<String>| {
        t.as_deref()
            .map(parse_time)
            .transpose()
            .map_err(Error::Config)
    };
    let (reference_until, until) = (time(&args.reference_until)?, time(&args.until)?);
    let (rows, skipped_rows) = read_rows(&spec, &data)?;
    let split = match reference_until {
        Some(t) => rows.partition_point(|r| r.event_time < t),
        None => args.reference_rows.min(rows.len()),
    };
    let (reference, replay) = rows.split_at(split);
    if reference.is_empty() {
        return Err(Error::Config(
            "the reference is empty: check --reference-until / --reference-rows".into(),
        ));
    }

    let labelled: Vec<LabelledRow> = reference
        .iter()
        .filter_map(|r| {
            Some(LabelledRow {
                event_time: r.event_time,
                features: r.features.clone(),
                target: r.target.clone()?,
            })
        })
        .collect();
    let (model, profiles, holdout) = if args.no_model {
        let refs: Vec<&Features> = reference.iter().map(|r| &r.features).collect();
        (None, feature_profiles(&spec, &refs), Default::default())
    } else {
        // As the trainer does: fit on the older rows, judge on the newest (the holdout).
        let (train, test) = split_by_time(labelled.clone(), 0.2);
        let model = fit(&spec, &train)?;
        let holdout = evaluate(&model, &test);
        let profiles = reference_profile(&spec, &model, &labelled);
        (Some(model), profiles, holdout)
    };

    let mut monitor = ModelMonitor::new(&spec.model.name, 1, &profiles, holdout, config);
    let io = |e: std::io::Error| Error::Data {
        path: "output".into(),
        message: e.to_string(),
    };
    if args.format == BacktestFormat::Table {
        writeln!(
            out,
            "{:>7}  {:<20}  {:>6}  {:>6}  {:<8}  {:>9}  {:<7}  drifted features",
            "row", "event time", "window", "share", "decision", "mae/hold", "retrain"
        )
        .map_err(io)?;
    }
    let mut evaluations = Vec::new();
    let mut replayed = 0;
    for (i, row) in replay.iter().enumerate() {
        if until.is_some_and(|u| row.event_time >= u) {
            break;
        }
        replayed += 1;
        let request_id = format!("row-{}", split + i);
        let prediction = model
            .as_ref()
            .map(|m| m.predict(&row.features))
            .unwrap_or_default();
        let logged = PredictionLogged {
            request_id: request_id.clone(),
            model: spec.model.name.clone(),
            model_version: 1,
            event_time: row.event_time,
            features: row.features.clone(),
            prediction,
            served_at: row.event_time,
            latency_us: 0,
            source: PredictionSource::Kafka,
        };
        let event = monitor.event_of(&logged);
        let pending = model.is_some().then(|| Pending {
            request_id: request_id.clone(),
            value: logged.prediction.value,
            class: logged.prediction.class.clone(),
            probabilities: logged.prediction.probabilities.clone(),
        });
        monitor.observe(&event, pending);
        if let (Some(_), Some(target)) = (&model, &row.target) {
            // The label joins at once: a backtest judges what the model would have seen.
            let (value, class) = match target {
                Target::Value(v) => (Some(*v), None),
                Target::Class(c) => (None, Some(c.clone())),
            };
            let actual = Actual {
                request_id,
                model: spec.model.name.clone(),
                event_time: row.event_time,
                value,
                class,
                observed_at: row.event_time,
            };
            monitor.join(&actual);
        }
        if monitor.due() {
            let evaluation = monitor.evaluate(row.event_time);
            print_evaluation(out, args.format, split + i, &evaluation).map_err(io)?;
            evaluations.push(BacktestEvaluation {
                row: split + i,
                evaluation,
            });
        }
    }
    Ok(Backtest {
        reference_rows: split,
        replayed_rows: replayed,
        skipped_rows,
        evaluations,
    })
}

fn print_evaluation(
    out: &mut dyn Write,
    format: BacktestFormat,
    row: usize,
    e: &Evaluation,
) -> std::io::Result<()> {
    let r = &e.report;
    match format {
        BacktestFormat::Jsonl => {
            let line = serde_json::json!({
                "row": row,
                "event_time": format_time(r.window.end_time),
                "report": r,
                "retrain_id": e.retrain.as_ref().map(|x| x.retrain_id.clone()),
            });
            writeln!(out, "{line}")
        }
        BacktestFormat::Table => {
            let mae = r
                .performance
                .iter()
                .find(|m| m.metric == "mae" || m.metric == "log_loss");
            let perf = mae.map_or("-".to_string(), |m| match m.reference {
                Some(h) => format!("{:.1}/{:.1}", m.current, h),
                None => format!("{:.1}/-", m.current),
            });
            let mut drifted: Vec<String> = r
                .features
                .iter()
                .filter(|f| f.drifted)
                .map(|f| f.name.clone())
                .collect();
            if r.prediction.as_ref().is_some_and(|p| p.drifted) {
                drifted.push("(prediction)".into());
            }
            writeln!(
                out,
                "{row:>7}  {:<20}  {:>6}  {:>6.2}  {:<8}  {perf:>9}  {:<7}  {}",
                format_time(r.window.end_time),
                r.window.count,
                r.share_drifted,
                match r.decision {
                    DriftDecision::NoDrift => "-",
                    DriftDecision::Warning => "warning",
                    DriftDecision::Drift => "DRIFT",
                },
                if e.retrain.is_some() { "yes" } else { "" },
                drifted.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_units() {
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("7d"), Ok(7 * 86_400_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert!(
            parse_duration_ms("250").is_err(),
            "a bare number needs a unit"
        );
        assert!(parse_duration_ms("5w").is_err());
        assert!(parse_duration_ms("0s").is_err());
    }

    #[test]
    fn the_default_policy_flags_give_the_documented_defaults() {
        let c = PolicyArgs::default().config().unwrap();
        assert_eq!(c.policy.drift, DriftPolicy::default());
        assert_eq!(
            (c.window.max_events, c.evaluate_every, c.policy.min_samples),
            (10_000, 1_000, 1_000)
        );
        assert_eq!(c.policy.cooldown_events, 10_000);
    }
}
