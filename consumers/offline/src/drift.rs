//! `driftline drift`: two data files compared column by column and, with a spec, as a
//! whole (the multivariate check), with the monitor's lines: each feature's from how its
//! distance varies between sub-windows of the reference, at the current file's size.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use driftline_drift::calibrate::NullCurve;
use driftline_drift::numeric::Binning;
use driftline_drift::policy::Calibration;
use driftline_drift::{CompareOptions, Frame, multivariate};
use driftline_model::{feature_profile, multivariate_of};
use driftline_monitor::cli::Thresholds;
use driftline_schemas::events::FeatureValue;
use driftline_schemas::spec::FeatureSpec;

use crate::{Error, Result, load_spec, open};

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
    /// Where the distances' lines come from. `calibrated` (with --spec): from how each
    /// feature's distance varies between sub-windows of the reference (its rows in file
    /// order, so a file in time order) at the current file's size, as the monitor draws
    /// them, and the multivariate check's from the same; `fixed`: Wasserstein 0.1,
    /// Jensen-Shannon 0.1, and NannyML's mean + 3 sd for the multivariate check. Without
    /// --spec the lines are fixed and there is no multivariate check.
    #[arg(long, value_enum, default_value = "calibrated")]
    pub thresholds: Thresholds,
    #[arg(long, value_enum, default_value = "table")]
    pub format: DriftFormat,
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
    // A file's frame and, with a spec, its values in file order (which the frame does not
    // keep).
    let load = |p: &Path| -> Result<(Frame, Option<Vec<Vec<FeatureValue>>>)> {
        let columns = spec.as_ref().map(|s| read_columns(s, p)).transpose()?;
        Ok((frame(p)?, columns))
    };
    // The two files are independent: read them on two threads.
    let (reference, current) = std::thread::scope(|s| {
        let reference = s.spawn(|| load(&args.reference));
        let current = load(&args.current);
        (
            reference.join().expect("reading the reference panicked"),
            current,
        )
    });
    let ((reference, reference_cols), (current, current_cols)) = (reference?, current?);
    let mut options = CompareOptions {
        binning: args.binning,
        ..Default::default()
    };
    let mut check = None;
    if let (Some(spec), Some(reference_cols), Some(current_cols)) =
        (&spec, reference_cols, current_cols)
    {
        if args.thresholds == Thresholds::Fixed {
            options.policy.calibration = options.policy.calibration.map(|c| Calibration {
                distances: false,
                ..c
            });
        } else {
            options.nulls = spec
                .features
                .iter()
                .zip(&reference_cols)
                .filter_map(|(def, values)| {
                    let p = feature_profile(def, values.iter().map(Some));
                    Some((p.name, NullCurve::fit(&p.sub_windows)?))
                })
                .collect();
        }
        let rows = |cols: &[Vec<FeatureValue>]| cols.first().map_or(0, Vec::len);
        check = multivariate_of(spec, rows(&reference_cols), |i, j| &reference_cols[j][i])
            .and_then(|record| {
                // The record's columns are the spec's features, in its order.
                multivariate::check(
                    &record,
                    rows(&current_cols),
                    |i, j| Some(&current_cols[j][i]),
                    options.policy.calibration,
                    spec.features.len(),
                )
            });
    }
    let report = driftline_drift::compare(&reference, &current, &options)?.with_multivariate(check);
    Ok(match args.format {
        DriftFormat::Json => report.to_json(),
        DriftFormat::Table => report.render_table(),
    })
}

/// Each spec feature's values (in spec order) over the rows of a CSV file, in file order,
/// each cell read by the spec's rule (one that does not read is missing here: the frame of
/// the same file names it as an error).
fn read_columns(spec: &FeatureSpec, path: &Path) -> Result<Vec<Vec<FeatureValue>>> {
    let data_err = |message: String| Error::Data {
        path: path.display().to_string(),
        message,
    };
    let mut rdr = driftline_dataset::csv_reader(path).map_err(|e| data_err(e.to_string()))?;
    let header = rdr.headers().map_err(|e| data_err(e.to_string()))?.clone();
    let columns = spec
        .features
        .iter()
        .map(|def| {
            let i = header.iter().position(|h| h.trim() == def.column());
            i.map(|i| (i, def))
                .ok_or_else(|| data_err(format!("no column named {}", def.column())))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut values = vec![Vec::new(); columns.len()];
    let mut record = csv::StringRecord::new();
    while rdr
        .read_record(&mut record)
        .map_err(|e| data_err(e.to_string()))?
    {
        for ((i, def), column) in columns.iter().zip(&mut values) {
            let cell = record.get(*i).unwrap_or_default();
            column.push(FeatureSpec::parse_cell(def, cell).unwrap_or(FeatureValue::Missing));
        }
    }
    Ok(values)
}
