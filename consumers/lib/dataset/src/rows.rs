//! CSV rows to events, by the feature spec: which column is the id, the time, the target and
//! each feature. Pure: no I/O, no Kafka.

use csv::StringRecord;
use driftline_schemas::events::{Actual, FeatureValue, Features, PredictionRequest};
use driftline_schemas::spec::{FeatureDef, FeatureSpec, TargetKind, parse_time};

/// A row that cannot be replayed, and why, with its line in the file (1-based, the header is
/// line 1; a quoted field spanning lines counts from where the record starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    pub line: u64,
    pub reason: String,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// One row as events: the request, and the ground truth when the target cell has a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub request: PredictionRequest,
    pub actual: Option<Actual>,
}

/// Where the spec's columns are in one file's header.
#[derive(Debug, Clone)]
pub struct RowMapper {
    model: String,
    target_kind: TargetKind,
    width: usize,
    id: Option<Column>,
    time: Column,
    target: Column,
    features: Vec<(usize, FeatureDef)>,
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    index: usize,
}

impl RowMapper {
    /// Finds the spec's columns in the header. Errs with the names of every column the spec
    /// needs that the header lacks.
    pub fn new(spec: &FeatureSpec, header: &StringRecord) -> Result<Self, Vec<String>> {
        let mut missing = Vec::new();
        let mut find = |name: &str| {
            let index = header.iter().position(|h| h.trim() == name);
            if index.is_none() {
                missing.push(name.to_string());
            }
            Column {
                name: name.to_string(),
                index: index.unwrap_or(0),
            }
        };
        let id = spec.dataset.id_column.as_deref().map(&mut find);
        let time = find(&spec.dataset.time_column);
        let target = find(&spec.target.column);
        let features = spec
            .features
            .iter()
            .map(|f| (find(f.column()).index, f.clone()))
            .collect();
        if !missing.is_empty() {
            return Err(missing);
        }
        Ok(Self {
            model: spec.model.name.clone(),
            target_kind: spec.target.kind,
            width: header.len(),
            id,
            time,
            target,
            features,
        })
    }

    /// The row's event time, after checking it has as many fields as the header (a row
    /// outside the replay window is skipped after this, without parsing the rest).
    pub fn event_time(&self, record: &StringRecord) -> Result<i64, String> {
        if record.len() != self.width {
            return Err(format!(
                "has {} fields, the header has {}",
                record.len(),
                self.width
            ));
        }
        parse_time(&record[self.time.index])
            .map_err(|e| format!("time column `{}`: {e}", self.time.name))
    }

    /// The row's events. Every problem in the row is named, not just the first. The ground
    /// truth is observed `label_delay_ms` after the event (in event time, so a replay of
    /// the same rows makes the same bytes).
    pub fn map(
        &self,
        record: &StringRecord,
        event_time: i64,
        label_delay_ms: i64,
    ) -> Result<Mapped, String> {
        let mut problems = Vec::new();
        let mut features = Features::new();
        for (index, def) in &self.features {
            match FeatureSpec::parse_cell(def, &record[*index]) {
                Ok(FeatureValue::Missing) if !def.nullable => {
                    problems.push(format!("column `{}` is required but empty", def.column()));
                }
                Ok(value) => {
                    features.insert(def.name.clone(), value);
                }
                Err(e) => problems.push(e),
            }
        }
        let request_id = match &self.id {
            Some(id) => {
                let value = record[id.index].trim();
                if value.is_empty() {
                    problems.push(format!("id column `{}` is empty", id.name));
                }
                request_id(&self.model, Some(value), record)
            }
            None => request_id(&self.model, None, record),
        };
        let target = self.target(&record[self.target.index]).unwrap_or_else(|e| {
            problems.push(e);
            None
        });
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let actual = target.map(|(value, class)| Actual {
            request_id: request_id.clone(),
            model: self.model.clone(),
            event_time,
            value,
            class,
            observed_at: event_time.saturating_add(label_delay_ms),
        });
        let request = PredictionRequest {
            request_id,
            model: self.model.clone(),
            event_time,
            features,
        };
        Ok(Mapped { request, actual })
    }

    /// The target as (value, class); `None` when the cell is empty (no ground truth).
    #[allow(clippy::type_complexity)]
    fn target(&self, cell: &str) -> Result<Option<(Option<f64>, Option<String>)>, String> {
        let cell = cell.trim();
        if matches!(cell, "" | "NA" | "NaN" | "null") {
            return Ok(None);
        }
        match self.target_kind {
            TargetKind::Regression => match cell.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(Some((Some(x), None))),
                _ => Err(format!(
                    "target column `{}`: {cell:?} is not a number",
                    self.target.name
                )),
            },
            TargetKind::Classification => Ok(Some((None, Some(cell.to_string())))),
        }
    }
}

/// A request id that a replay of the same row reproduces: `<model>:<id>` with an id column,
/// else `<model>:<16 hex digits>`, the FNV-1a hash of the row's cells. Without an id column,
/// two identical rows get the same id: downstream they are one event seen twice.
pub fn request_id(model: &str, id: Option<&str>, record: &StringRecord) -> String {
    match id {
        Some(id) => format!("{model}:{id}"),
        None => {
            let mut h = Fnv1a::default();
            h.write(model.as_bytes());
            for cell in record {
                // A separator that cannot occur in a cell keeps ("ab","c") apart from ("a","bc").
                h.write(&[0x1f]);
                h.write(cell.as_bytes());
            }
            format!("{model}:{:016x}", h.0)
        }
    }
}

/// FNV-1a, 64 bits: stable across Rust versions and platforms, unlike `DefaultHasher`.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared toy spec (`x` numeric and required, `colour` categorical from column
    /// `c`), its model named apart from its data set, with an id column or without.
    fn spec(id: bool, kind: TargetKind) -> FeatureSpec {
        let mut spec =
            FeatureSpec::from_toml(include_str!("../../../../tests/fixtures/toy.toml")).unwrap();
        spec.dataset.id_column = id.then(|| "id".to_string());
        spec.model.name = "toy-model".into();
        spec.target.kind = kind;
        spec
    }

    fn rec(cells: &[&str]) -> StringRecord {
        StringRecord::from(cells.to_vec())
    }

    fn mapper(id: bool, kind: TargetKind) -> RowMapper {
        RowMapper::new(&spec(id, kind), &rec(&["id", "t", "extra", "x", "y", "c"])).unwrap()
    }

    #[test]
    fn maps_a_row_to_a_request_and_its_ground_truth() {
        let m = mapper(true, TargetKind::Regression);
        let row = rec(&["f1", "2013-01-01T05:00:00Z", "ignored", "2.5", "-3", "7"]);
        let t = m.event_time(&row).unwrap();
        assert_eq!(t, 1_357_016_400_000);
        let mapped = m.map(&row, t, 3_600_000).unwrap();
        assert_eq!(mapped.request.request_id, "toy-model:f1");
        assert_eq!(mapped.request.model, "toy-model");
        assert_eq!(mapped.request.event_time, t);
        let expected: Features = [
            ("x".to_string(), FeatureValue::Number(2.5)),
            // A categorical number stays a label.
            ("colour".to_string(), FeatureValue::Category("7".into())),
        ]
        .into();
        assert_eq!(mapped.request.features, expected);
        let actual = mapped.actual.unwrap();
        assert_eq!(actual.request_id, "toy-model:f1");
        assert_eq!(actual.value, Some(-3.0));
        assert_eq!(actual.class, None);
        assert_eq!(actual.observed_at, t + 3_600_000);
    }

    #[test]
    fn classification_targets_are_class_labels() {
        let m = mapper(true, TargetKind::Classification);
        let row = rec(&["f1", "2013-01-01", "", "1", "1", "red"]);
        let actual = m.map(&row, 0, 0).unwrap().actual.unwrap();
        assert_eq!((actual.value, actual.class.as_deref()), (None, Some("1")));
    }

    #[test]
    fn a_row_without_a_target_value_has_no_ground_truth() {
        let m = mapper(true, TargetKind::Regression);
        let mapped = m
            .map(&rec(&["f1", "2013-01-01", "", "1", "NA", ""]), 0, 0)
            .unwrap();
        assert!(mapped.actual.is_none());
        assert_eq!(mapped.request.features["colour"], FeatureValue::Missing);
    }

    #[test]
    fn names_every_problem_in_a_bad_row() {
        let m = mapper(true, TargetKind::Regression);
        let err = m
            .map(&rec(&["", "2013-01-01", "", "abc", "x", ""]), 0, 0)
            .unwrap_err();
        assert!(err.contains("`x`: \"abc\" is not a number"), "{err}");
        assert!(err.contains("id column `id` is empty"), "{err}");
        assert!(err.contains("target column `y`"), "{err}");
        let err = m
            .map(&rec(&["f", "2013-01-01", "", "", "1", ""]), 0, 0)
            .unwrap_err();
        assert!(err.contains("column `x` is required but empty"), "{err}");
    }

    #[test]
    fn rejects_rows_with_the_wrong_number_of_fields_or_a_bad_time() {
        let m = mapper(true, TargetKind::Regression);
        let err = m.event_time(&rec(&["f1", "2013-01-01", "1"])).unwrap_err();
        assert_eq!(err, "has 3 fields, the header has 6");
        let err = m
            .event_time(&rec(&["f1", "soon", "", "1", "1", ""]))
            .unwrap_err();
        assert!(err.starts_with("time column `t`:"), "{err}");
    }

    #[test]
    fn reports_every_column_the_header_lacks() {
        let missing =
            RowMapper::new(&spec(true, TargetKind::Regression), &rec(&["t", "x"])).unwrap_err();
        assert_eq!(missing, ["id", "y", "c"]);
    }

    #[test]
    fn ids_without_an_id_column_come_from_the_row_content() {
        let m = mapper(false, TargetKind::Regression);
        let a = rec(&["f1", "2013-01-01", "", "1", "2", "red"]);
        let id = m.map(&a, 0, 0).unwrap().request.request_id;
        assert_eq!(id, m.map(&a.clone(), 0, 0).unwrap().request.request_id);
        assert!(
            id.starts_with("toy-model:") && id.len() == "toy-model:".len() + 16,
            "{id}"
        );
        let b = rec(&["f1", "2013-01-01", "", "1", "2", "blue"]);
        assert_ne!(id, m.map(&b, 0, 0).unwrap().request.request_id);
        // Cell boundaries count: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            request_id("m", None, &rec(&["ab", "c"])),
            request_id("m", None, &rec(&["a", "bc"]))
        );
        // FNV-1a of the empty input is its offset basis: the hash is the published one.
        assert_eq!(Fnv1a::default().0, 0xcbf2_9ce4_8422_2325);
        let mut h = Fnv1a::default();
        h.write(b"a");
        assert_eq!(h.0, 0xaf63_dc4c_8601_ec8c);
    }
}
