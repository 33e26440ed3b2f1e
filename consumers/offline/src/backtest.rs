//! `driftline backtest`: a data file replayed through the monitor's window and policy
//! without Kafka; with `--retrain`, through the whole loop (a retrain on the policy's
//! window, the holdout gate, the rollout as `--rollout` says: at once, or a shadow judged
//! by the trainer's live gate on the labelled rows that follow; the new version's
//! reference), with the error beside that of the first model kept throughout.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use driftline_dataset::rows::{Mapped, RowMapper};
use driftline_model::{
    Joined, LabelledRow, Target, TrainedModel, feature_profiles, holdout_start, primary_metric,
};
use driftline_monitor::cli::PolicyArgs;
use driftline_monitor::monitor::{Evaluation, Holdout, ModelMonitor, MonitorConfig};
use driftline_schemas::events::{
    Actual, DriftDecision, EstimatedPerformance, FeatureValue, Features, Labelled, ModelPublished,
    ModelStatus, Prediction, PredictionLogged, PredictionSource, RetrainRequested,
};
use driftline_schemas::spec::{FeatureSpec, format_time, parse_time};
use driftline_trainer::rollout::{self, Action, Gate, Rollout, Serving};
use driftline_trainer::service::{RolloutArgs, RolloutMode};
use driftline_trainer::train::{Context, TrainOptions, train};

use crate::{Error, Result, load_spec};

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
    /// Act on each retrain request as the trainer would: fit on the labelled rows of the
    /// monitor's window, keep it only if it beats production on the same holdout, start it
    /// as `--rollout` says (direct or shadow), and monitor each new production version
    /// against its own reference.
    #[arg(long)]
    pub retrain: bool,
    /// With --retrain: how a version that wins on the holdout starts, and the live gate,
    /// with the trainer's flags and defaults. A shadow predicts every following row beside
    /// production and is promoted or rejected on the same rows once both have
    /// --live-min-rows.
    #[command(flatten)]
    pub rollout: RolloutArgs,
    /// A documented change in the data, e.g. 2013-06-01 (repeatable): the summary counts
    /// retrain requests before the first as false alarms and times the first warning and
    /// the first request after each.
    #[arg(long = "change-at")]
    pub change_at: Vec<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: BacktestFormat,
    /// Also write each labelled row with the first model's prediction to this CSV: its
    /// event time, period (train, holdout or analysis: the trainer's split of the
    /// reference, then the replay), features, prediction and label. The peer scripts read
    /// it to run on exactly these rows and predictions.
    #[arg(long)]
    pub predictions_out: Option<PathBuf>,
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

/// A retrain the backtest ran (`--retrain`).
#[derive(Debug, Clone, PartialEq)]
pub struct Retrained {
    pub row: usize,
    pub event_time: i64,
    pub version: i64,
    /// It beat production on the holdout.
    pub promoted: bool,
    /// ...and started as a shadow, for the live gate to judge ([`Backtest::live`]).
    pub shadow: bool,
    /// The primary metric on the holdout: the candidate's and the incumbent's.
    pub candidate: Option<f64>,
    pub incumbent: Option<f64>,
}

/// The labelled rows' mean error (absolute error; 1 for a wrong class).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Errors {
    pub rows: u64,
    /// The version serving at the time.
    pub served: f64,
    /// The first version, kept throughout.
    pub first: f64,
}

/// A decision of the live gate (`--retrain` with `--rollout shadow`, or a rollback watch).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveDecision {
    pub row: usize,
    pub event_time: i64,
    pub version: i64,
    pub action: Action,
    pub reason: String,
}

/// What a backtest did.
#[derive(Debug, Clone, PartialEq)]
pub struct Backtest {
    pub reference_rows: usize,
    pub replayed_rows: usize,
    /// Rows skipped: unparseable event time, target or feature.
    pub skipped_rows: usize,
    pub evaluations: Vec<BacktestEvaluation>,
    pub retrained: Vec<Retrained>,
    pub live: Vec<LiveDecision>,
    pub errors: Errors,
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
    if args.rollout.mode == RolloutMode::Canary {
        return Err(Error::Config(
            "backtest simulates --rollout direct and shadow; a canary's share of the traffic is not simulated".into(),
        ));
    }
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

    let labelled = labelled_rows(reference);
    // As the trainer trains, without its minimum: a backtest's windows may be small.
    let options = TrainOptions {
        min_rows: 2,
        start: args.rollout.start(),
        ..TrainOptions::default()
    };
    let gate = args.rollout.gate(options.promotion_margin);
    let metric = primary_metric(spec.target.kind);
    let (model, profiles, holdout, record) = if args.no_model {
        let refs: Vec<&Features> = reference.iter().map(|r| &r.features).collect();
        (
            None,
            feature_profiles(&spec, &refs),
            Default::default(),
            None,
        )
    } else {
        // The trainer's own training: fit on the older rows, judge on the newest (the
        // holdout), profile the rows it learnt from.
        let context = Context {
            version: 1,
            trigger: "BACKTEST",
            incumbent: None,
            published_at: 0,
            end_offsets: Default::default(),
        };
        let trained = train(&spec, labelled, &context, &options, &mut |_| {})?;
        let model = TrainedModel::from_bytes(&trained.record.model_bytes)?;
        let holdout = Holdout::of(&trained.record);
        let profiles = trained.record.reference_profile.clone();
        (Some(model), profiles, holdout, Some(trained.record))
    };
    if let (Some(path), Some(model)) = (&args.predictions_out, &model) {
        let replayed = until.map_or(replay.len(), |u| {
            replay.partition_point(|r| r.event_time < u)
        });
        write_predictions(
            path,
            &spec,
            model,
            reference,
            &replay[..replayed],
            options.holdout_fraction,
        )?;
    }
    let first = model.clone();
    let mut versions = Versions {
        serving: model.zip(record),
        since: 0,
        shadow: None,
        replaced: None,
        live: Rollout::default(),
        gate,
        metric,
    };
    // Every retrain takes the next number, as the trainer numbers rejected versions too.
    let mut next_version = 2;
    let changes = args
        .change_at
        .iter()
        .map(|t| parse_time(t).map_err(Error::Config))
        .collect::<Result<Vec<i64>>>()?;

    let mut monitor = ModelMonitor::new(&spec.model.name, 1, &profiles, holdout, config.clone());
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
    let mut retrained = Vec::new();
    let mut decisions = Vec::new();
    let mut errors = Errors::default();
    let mut replayed = 0;
    for (i, row) in replay.iter().enumerate() {
        if until.is_some_and(|u| row.event_time >= u) {
            break;
        }
        replayed += 1;
        let request_id = format!("row-{}", split + i);
        let prediction = versions
            .serving
            .as_ref()
            .map(|(m, _)| m.predict(&row.features))
            .unwrap_or_default();
        let version = versions.serving.as_ref().map_or(1, |(_, r)| r.version);
        let logged = PredictionLogged {
            request_id: request_id.clone(),
            model: spec.model.name.clone(),
            model_version: version,
            event_time: row.event_time,
            features: row.features.clone(),
            prediction,
            served_at: row.event_time,
            latency_us: 0,
            source: PredictionSource::Kafka,
            shadow: None,
        };
        monitor.observe(&monitor.event_of(&logged));
        if let (Some(_), Some(target)) = (&versions.serving, &row.target) {
            // The label joins at once (the joiner's pair, without the bus): a backtest
            // judges what the model would have seen.
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
            // Until a retrain is promoted the first model is the one serving: its
            // prediction is the one just made.
            let baseline = first.as_ref().map(|m| match version {
                1 => logged.prediction.clone(),
                _ => m.predict(&row.features),
            });
            if let (Some(served), Some(first)) = (
                Joined::of(&logged.prediction, &actual),
                baseline.and_then(|p| Joined::of(&p, &actual)),
            ) {
                errors.rows += 1;
                errors.served += served.error();
                errors.first += first.error();
            }
            for (v, action, reason) in versions.judge(&row.features, &logged.prediction, &actual) {
                let decision = LiveDecision {
                    row: split + i,
                    event_time: row.event_time,
                    version: v,
                    action,
                    reason,
                };
                print_live(out, args.format, &decision).map_err(io)?;
                decisions.push(decision);
                if let Some(record) = versions.act(action, row.event_time) {
                    monitor = monitor_for(&spec, record, &config, &monitor);
                }
            }
            monitor.label(&Labelled {
                prediction: logged,
                actual,
                prediction_read_at: Default::default(),
                actual_read_at: Default::default(),
            });
        }
        if monitor.due() {
            let evaluation = monitor.evaluate(row.event_time, None);
            print_evaluation(out, args.format, split + i, &evaluation).map_err(io)?;
            let request = evaluation.retrain.clone();
            evaluations.push(BacktestEvaluation {
                row: split + i,
                evaluation,
            });
            if let (true, Some(request), Some((_, incumbent))) =
                (args.retrain, request, &versions.serving)
            {
                // The trainer's rows: the labelled rows of the monitor's window.
                let from = (i + 1).saturating_sub(config.window.max_events);
                let rows = labelled_rows(&replay[from..=i]);
                let context = Context {
                    version: next_version,
                    trigger: &request.retrain_id,
                    incumbent: Some(incumbent),
                    published_at: row.event_time,
                    end_offsets: Default::default(),
                };
                let trained = train(&spec, rows, &context, &options, &mut |_| {})?;
                next_version += 1;
                let r = &trained.record;
                let outcome = Retrained {
                    row: split + i,
                    event_time: row.event_time,
                    version: r.version,
                    promoted: trained.promoted,
                    shadow: r.status == ModelStatus::Shadow,
                    candidate: r.metrics.get(trained.metric).copied(),
                    incumbent: r.incumbent_metrics.get(trained.metric).copied(),
                };
                print_retrained(out, args.format, &outcome, trained.metric).map_err(io)?;
                retrained.push(outcome);
                if trained.promoted {
                    let model = TrainedModel::from_bytes(&r.model_bytes)?;
                    if let Some(record) = versions.start(model, trained.record, row.event_time) {
                        monitor = monitor_for(&spec, record, &config, &monitor);
                    }
                }
            }
        }
    }
    let bt = Backtest {
        reference_rows: split,
        replayed_rows: replayed,
        skipped_rows,
        evaluations,
        retrained,
        live: decisions,
        errors,
    };
    if args.format == BacktestFormat::Table {
        print_summary(out, &bt, &changes).map_err(io)?;
    }
    Ok(bt)
}

/// `--predictions-out`: the labelled rows of the reference (split as the trainer splits
/// them) and of the replay, each with `model`'s prediction.
fn write_predictions(
    path: &Path,
    spec: &FeatureSpec,
    model: &TrainedModel,
    reference: &[Row],
    replay: &[Row],
    holdout_fraction: f64,
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| Error::Data {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut w = csv::Writer::from_path(path).map_err(|e| err(&e))?;
    let names: Vec<&str> = spec.features.iter().map(|f| f.name.as_str()).collect();
    let header = ["event_time", "period"]
        .into_iter()
        .chain(names.iter().copied())
        .chain(["prediction", "label"]);
    w.write_record(header).map_err(|e| err(&e))?;
    // The trainer's split of the reference's labelled rows (already in event-time order).
    let (labelled, analysis) = (labelled_rows(reference), labelled_rows(replay));
    let holdout = holdout_start(&labelled, holdout_fraction);
    let periods = labelled
        .iter()
        .enumerate()
        .map(|(i, r)| (if i < holdout { "train" } else { "holdout" }, r))
        .chain(analysis.iter().map(|r| ("analysis", r)));
    for (period, row) in periods {
        let p = model.predict(&row.features);
        let prediction = match (p.value, p.class) {
            (Some(v), _) => v.to_string(),
            (None, Some(c)) => c,
            _ => String::new(),
        };
        let label = match &row.target {
            Target::Value(v) => v.to_string(),
            Target::Class(c) => c.clone(),
        };
        let features = names.iter().map(|n| match row.features.get(*n) {
            Some(FeatureValue::Number(x)) => x.to_string(),
            Some(FeatureValue::Category(c)) => c.clone(),
            _ => String::new(),
        });
        let record = [format_time(row.event_time), period.to_string()]
            .into_iter()
            .chain(features)
            .chain([prediction, label]);
        w.write_record(record).map_err(|e| err(&e))?;
    }
    w.flush().map_err(|e| err(&e))
}

/// The versions of a replay: what serves and since when, the shadow on trial, the version
/// production replaced (for a rollback), and the trainer's live gate over them.
struct Versions {
    serving: Option<(TrainedModel, ModelPublished)>,
    since: i64,
    shadow: Option<(TrainedModel, ModelPublished)>,
    replaced: Option<(TrainedModel, ModelPublished)>,
    live: Rollout,
    gate: Gate,
    metric: &'static str,
}

impl Versions {
    /// Counts a labelled row in the live gate as the trainer's processor does (production's
    /// loss, and the shadow's on the same request); the decisions it makes.
    fn judge(
        &mut self,
        features: &Features,
        served: &Prediction,
        actual: &Actual,
    ) -> Vec<(i64, Action, String)> {
        let Some((_, production)) = &self.serving else {
            return Vec::new();
        };
        let version = production.version;
        self.live.follow(
            Serving {
                production: Some((version, self.since)),
                canary: None,
                shadow: self
                    .shadow
                    .as_ref()
                    .map(|(_, r)| (r.version, r.published_at)),
            },
            &self.gate,
        );
        let loss = |p: &Prediction| {
            Joined::of(p, actual)
                .and_then(|j| j.loss(self.metric))
                .filter(|x| x.is_finite())
        };
        let Some(production_loss) = loss(served) else {
            return Vec::new();
        };
        let shadow = self
            .shadow
            .as_ref()
            .and_then(|(m, r)| Some((r.version, loss(&m.predict(features))?)));
        let row = rollout::Row {
            version,
            served_at: actual.event_time,
            loss: production_loss,
            shadow,
        };
        self.live.count(row, &self.gate, self.metric)
    }

    /// Carries out a decision at `at`; the record of a new production version.
    fn act(&mut self, action: Action, at: i64) -> Option<&ModelPublished> {
        let next = match action {
            Action::Promote => self.shadow.take(),
            Action::Reject => {
                self.shadow = None;
                None
            }
            Action::Rollback => self.replaced.take(),
            Action::Keep => None,
        }?;
        let replaced = self.serving.replace(next);
        if action == Action::Promote {
            self.replaced = replaced;
        }
        self.since = at;
        self.serving.as_ref().map(|(_, r)| r)
    }

    /// Starts a version that won on its holdout as its record says: a shadow (a newer one
    /// replaces the one on trial, as in the registry) or production at once; the record of
    /// a new production version.
    fn start(
        &mut self,
        model: TrainedModel,
        record: ModelPublished,
        at: i64,
    ) -> Option<&ModelPublished> {
        if record.status == ModelStatus::Shadow {
            self.shadow = Some((model, record));
            return None;
        }
        self.replaced = self.serving.replace((model, record));
        self.since = at;
        self.serving.as_ref().map(|(_, r)| r)
    }
}

/// The monitor of a version that now serves: its own reference and holdout, the input
/// positions carried over from the window it replaces.
fn monitor_for(
    spec: &FeatureSpec,
    record: &ModelPublished,
    config: &MonitorConfig,
    older: &ModelMonitor,
) -> ModelMonitor {
    let mut next = ModelMonitor::new(
        &spec.model.name,
        record.version,
        &record.reference_profile,
        Holdout::of(record),
        config.clone(),
    );
    next.continue_positions(older);
    next
}

fn labelled_rows(rows: &[Row]) -> Vec<LabelledRow> {
    rows.iter()
        .filter_map(|r| {
            Some(LabelledRow {
                event_time: r.event_time,
                features: r.features.clone(),
                target: r.target.clone()?,
            })
        })
        .collect()
}

fn print_retrained(
    out: &mut dyn Write,
    format: BacktestFormat,
    r: &Retrained,
    metric: &str,
) -> std::io::Result<()> {
    let num = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.3}"));
    match format {
        BacktestFormat::Jsonl => writeln!(
            out,
            "{}",
            serde_json::json!({
                "row": r.row,
                "event_time": format_time(r.event_time),
                "retrained": {"version": r.version, "promoted": r.promoted, "shadow": r.shadow,
                    "metric": metric, "candidate": r.candidate, "incumbent": r.incumbent},
            })
        ),
        BacktestFormat::Table => writeln!(
            out,
            "{:>7}  {:<20}  retrained: v{} {} ({metric} on its holdout {} vs the incumbent's {})",
            r.row,
            format_time(r.event_time),
            r.version,
            match (r.promoted, r.shadow) {
                (true, true) => "a shadow",
                (true, false) => "promoted",
                (false, _) => "rejected",
            },
            num(r.candidate),
            num(r.incumbent),
        ),
    }
}

fn print_live(
    out: &mut dyn Write,
    format: BacktestFormat,
    d: &LiveDecision,
) -> std::io::Result<()> {
    match format {
        BacktestFormat::Jsonl => writeln!(
            out,
            "{}",
            serde_json::json!({
                "row": d.row,
                "event_time": format_time(d.event_time),
                "live_gate": {"version": d.version, "action": d.action.as_str(), "reason": d.reason},
            })
        ),
        BacktestFormat::Table => writeln!(
            out,
            "{:>7}  {:<20}  live gate: {}",
            d.row,
            format_time(d.event_time),
            d.reason
        ),
    }
}

/// The retrain requests beside the documented changes, the retrains, and the error.
fn print_summary(out: &mut dyn Write, bt: &Backtest, changes: &[i64]) -> std::io::Result<()> {
    let requests: Vec<i64> = bt
        .evaluations
        .iter()
        .filter(|e| e.evaluation.retrain.is_some())
        .map(|e| e.evaluation.report.window.end_time)
        .collect();
    // Evaluations that said anything (a warning or a drift), confirmed or not.
    let alarms: Vec<i64> = bt
        .evaluations
        .iter()
        .filter(|e| e.evaluation.report.decision != DriftDecision::NoDrift)
        .map(|e| e.evaluation.report.window.end_time)
        .collect();
    writeln!(out)?;
    writeln!(out, "retrain requests: {}", requests.len())?;
    let mut sorted = changes.to_vec();
    sorted.sort_unstable();
    if let Some(first) = sorted.first() {
        let before = requests.iter().filter(|t| *t < first).count();
        let warned = alarms.iter().filter(|t| *t < first).count();
        writeln!(
            out,
            "  before the first change ({}): {before} (false alarms); evaluations with a warning or drift: {warned}",
            format_time(*first)
        )?;
    }
    let first_in = |times: &[i64], c: i64, next: i64| -> String {
        match times.iter().find(|t| **t >= c && **t < next) {
            Some(t) => format!(
                "{} ({:.1} days later)",
                format_time(*t),
                (t - c) as f64 / 86_400_000.0
            ),
            None => "none before the next change or the end".to_string(),
        }
    };
    for (k, c) in sorted.iter().enumerate() {
        let next = sorted.get(k + 1).copied().unwrap_or(i64::MAX);
        writeln!(
            out,
            "  change at {}: first warning or drift {}; first request {}",
            format_time(*c),
            first_in(&alarms, *c, next),
            first_in(&requests, *c, next)
        )?;
    }
    // The estimate before labels (CBPE's accuracy, DLE's MAE) beside the labels: how close
    // it was to the realised value over the same window, and when its own line was first
    // crossed after each change.
    let estimates: Vec<(i64, &EstimatedPerformance)> = bt
        .evaluations
        .iter()
        .filter_map(|e| {
            let r = &e.evaluation.report;
            r.estimated.as_ref().map(|x| (r.window.end_time, x))
        })
        .collect();
    let gaps: Vec<f64> = estimates
        .iter()
        .filter_map(|(_, x)| x.realised.map(|r| (x.value - r).abs()))
        .collect();
    if !gaps.is_empty() {
        let within = estimates
            .iter()
            .filter(|(_, x)| x.realised.is_some_and(|r| x.lower <= r && r <= x.upper))
            .count();
        writeln!(
            out,
            "{} estimated before labels: mean |estimate - realised| {:.4} over {} evaluations, the realised value within the band in {within}",
            estimates[0].1.metric,
            gaps.iter().sum::<f64>() / gaps.len() as f64,
            gaps.len()
        )?;
        let fired: Vec<i64> = estimates
            .iter()
            .filter(|(_, x)| x.signal.as_ref().is_some_and(|s| s.fired))
            .map(|(t, _)| *t)
            .collect();
        if let Some(first) = sorted.first() {
            let before = fired.iter().filter(|t| *t < first).count();
            writeln!(out, "  its line crossed before the first change: {before}")?;
        }
        for (k, c) in sorted.iter().enumerate() {
            let next = sorted.get(k + 1).copied().unwrap_or(i64::MAX);
            writeln!(
                out,
                "  change at {}: its line first crossed {}",
                format_time(*c),
                first_in(&fired, *c, next)
            )?;
        }
    }
    if !bt.retrained.is_empty() {
        let promoted: Vec<String> = bt
            .retrained
            .iter()
            .filter(|r| r.promoted)
            .map(|r| format!("v{} at {}", r.version, format_time(r.event_time)))
            .collect();
        let won = match bt.retrained.iter().any(|r| r.shadow) {
            true => "won on the holdout and became shadows",
            false => "promoted",
        };
        writeln!(
            out,
            "retrained {} times: {} {won} ({}), {} rejected",
            bt.retrained.len(),
            promoted.len(),
            promoted.join(", "),
            bt.retrained.len() - promoted.len()
        )?;
    }
    if !bt.live.is_empty() {
        let count = |a: Action| bt.live.iter().filter(|d| d.action == a).count();
        writeln!(
            out,
            "the live gate: {} shadows promoted, {} rejected; {} promotions kept, {} rolled back",
            count(Action::Promote),
            count(Action::Reject),
            count(Action::Keep),
            count(Action::Rollback)
        )?;
    }
    let e = bt.errors;
    if e.rows > 0 {
        let n = e.rows as f64;
        writeln!(
            out,
            "mean error over {} labelled rows: {:.3} as served, {:.3} with the first model throughout",
            e.rows,
            e.served / n,
            e.first / n
        )?;
    }
    Ok(())
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
