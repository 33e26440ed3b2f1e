//! The bootstrap model: a model with no version yet is trained from the data set its spec
//! names (`dataset.path`, relative to the spec file), on the rows before a cut-off (by
//! default the first three calendar months of the data), and published as v1 in
//! production with the trigger `bootstrap`.

use std::path::{Path, PathBuf};

use driftline_dataset::csv_reader;
use driftline_dataset::rows::RowMapper;
use driftline_model::{LabelledRow, Target};
use driftline_schemas::events::{RetrainRequested, RetrainTrigger};
use driftline_schemas::spec::{FeatureSpec, format_time, parse_time};

use crate::{Error, Result};

/// The trigger of every bootstrap version.
pub const TRIGGER: &str = "bootstrap";

/// The event that asks for a model's first version: a `BOOTSTRAP` retrain, keyed by the
/// model like its labelled rows, so the owner of the model's partition runs it (and
/// numbers it). The cut-off travels as the window's end (`i64::MAX`: the default, three
/// months). Trainers that start together each ask; the trigger makes it one version.
pub fn request(model: &str, path: &Path, until: Option<i64>, now: i64) -> RetrainRequested {
    RetrainRequested {
        retrain_id: TRIGGER.to_string(),
        model: model.to_string(),
        model_version: 0,
        trigger: RetrainTrigger::Bootstrap,
        reason: format!("bootstrap from {}", path.display()),
        report_id: None,
        drifted_features: Vec::new(),
        window_start: i64::MIN,
        window_end: until.unwrap_or(i64::MAX),
        requested_at: now,
        end_offsets: Default::default(),
    }
}

/// The data set a spec names, resolved against the spec file's folder.
pub fn dataset_path(spec: &FeatureSpec, spec_path: &Path) -> Option<PathBuf> {
    let rel = spec.dataset.path.as_deref()?;
    let base = spec_path.parent().unwrap_or_else(|| Path::new("."));
    Some(base.join(rel))
}

/// The first instant of the month `months` after the month of `t` (UTC).
pub fn months_after(t: i64, months: u32) -> i64 {
    let s = format_time(t);
    let (y, m): (i64, i64) = (
        s[0..4].parse().unwrap_or(1970),
        s[5..7].parse().unwrap_or(1),
    );
    let total = y * 12 + (m - 1) + i64::from(months);
    let (y, m) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    parse_time(&format!("{y:04}-{m:02}-01T00:00:00Z")).unwrap_or(i64::MAX)
}

/// Labelled rows of a CSV (or .csv.gz) by the spec, in file order. Rows the spec cannot
/// read or that have no ground truth are skipped (counted in the second value). With
/// `until`, only rows before it; without, rows before the start of the fourth month of the
/// data. `from` keeps rows at or after it.
pub fn read_rows(
    spec: &FeatureSpec,
    path: &Path,
    from: Option<i64>,
    until: Option<i64>,
) -> Result<(Vec<LabelledRow>, u64)> {
    let mut reader = csv_reader(path).map_err(|e| Error::Data(e.to_string()))?;
    let header = reader
        .headers()
        .map_err(|e| Error::Data(format!("{}: {e}", path.display())))?
        .clone();
    let mapper = RowMapper::new(spec, &header).map_err(|missing| {
        Error::Data(format!(
            "{}: no column named {} (the spec needs it)",
            path.display(),
            missing.join(", ")
        ))
    })?;
    let mut until = until;
    let mut rows = Vec::new();
    let mut skipped = 0u64;
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(Error::Data(format!("{}: {e}", path.display()))),
        }
        let Ok(t) = mapper.event_time(&record) else {
            skipped += 1;
            continue;
        };
        let cut = *until.get_or_insert_with(|| months_after(t, 3));
        if t >= cut || from.is_some_and(|f| t < f) {
            continue;
        }
        match mapper.map(&record, t, 0) {
            Ok(m) => match m.actual {
                Some(a) => rows.push(LabelledRow {
                    event_time: t,
                    features: m.request.features,
                    target: match (a.value, a.class) {
                        (_, Some(c)) => Target::Class(c),
                        (Some(v), None) => Target::Value(v),
                        (None, None) => continue,
                    },
                }),
                None => skipped += 1,
            },
            Err(_) => skipped += 1,
        }
    }
    Ok((rows, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cut_off_is_three_calendar_months_after_the_first_row() {
        let jan_5 = parse_time("2013-01-05T10:00:00Z").unwrap();
        assert_eq!(
            months_after(jan_5, 3),
            parse_time("2013-04-01T00:00:00Z").unwrap()
        );
        let nov = parse_time("2013-11-30T23:00:00Z").unwrap();
        assert_eq!(
            months_after(nov, 3),
            parse_time("2014-02-01T00:00:00Z").unwrap()
        );
    }
}
