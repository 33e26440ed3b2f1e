//! `driftline drift`: two data files compared column by column.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use driftline_drift::numeric::Binning;
use driftline_drift::{CompareOptions, Frame};

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
