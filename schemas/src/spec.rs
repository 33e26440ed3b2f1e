//! The feature spec: a TOML file that says what a tabular data set's columns mean.
//!
//! Every part of driftline reads the spec instead of assuming a data set: send_data uses it
//! to turn CSV rows into requests and ground truth, the predictor validates requests with
//! it, the monitor and trainer know the kinds of the features from it.
//!
//! ```toml
//! [dataset]
//! name = "flights"
//! id_column = "id"            # optional; without it ids are derived from row content
//! time_column = "time_hour"   # RFC 3339, "YYYY-MM-DD HH:MM[:SS]" or epoch milliseconds
//!
//! [model]
//! name = "flights-delay"
//! algorithm = "linear"
//!
//! [target]
//! column = "arr_delay"
//! kind = "regression"         # or "classification"
//!
//! [[features]]
//! name = "dep_delay"
//! kind = "numeric"
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use crate::events::{FeatureKind, FeatureValue, Features};
use crate::{Error, Result};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub dataset: DatasetSpec,
    pub model: ModelSpec,
    pub target: TargetSpec,
    pub features: Vec<FeatureDef>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub name: String,
    #[serde(default)]
    pub id_column: Option<String>,
    pub time_column: String,
    /// Where the data set lives, relative to the spec file (used by `up` and bootstrap).
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    pub algorithm: String,
    #[serde(default)]
    pub hyper_parameters: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Regression,
    Classification,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub column: String,
    pub kind: TargetKind,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Numeric,
    Categorical,
}

impl From<Kind> for FeatureKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Numeric => FeatureKind::Numeric,
            Kind::Categorical => FeatureKind::Categorical,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeatureDef {
    pub name: String,
    pub kind: Kind,
    /// The CSV column, when it differs from the feature's name.
    #[serde(default)]
    pub column: Option<String>,
    /// Whether a request may omit it or send null.
    #[serde(default = "yes")]
    pub nullable: bool,
}

fn yes() -> bool {
    true
}

impl FeatureDef {
    pub fn column(&self) -> &str {
        self.column.as_deref().unwrap_or(&self.name)
    }
}

/// Why a request's features do not fit the spec; names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub problem: String,
}

impl std::fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "feature `{}`: {}", self.field, self.problem)
    }
}

impl FeatureSpec {
    pub fn from_toml(text: &str) -> Result<Self> {
        let spec: Self = toml::from_str(text).map_err(|e| Error::Spec(e.to_string()))?;
        spec.check()?;
        Ok(spec)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Spec(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| Error::Spec(format!("{}: {e}", path.display())))
    }

    fn check(&self) -> Result<()> {
        if self.features.is_empty() {
            return Err(Error::Spec("no [[features]]".into()));
        }
        let mut seen = HashSet::new();
        for f in &self.features {
            if !seen.insert(f.name.as_str()) {
                return Err(Error::Spec(format!("feature `{}` is listed twice", f.name)));
            }
            if f.column() == self.target.column {
                return Err(Error::Spec(format!(
                    "feature `{}` reads the target column `{}`",
                    f.name, self.target.column
                )));
            }
        }
        Ok(())
    }

    pub fn feature(&self, name: &str) -> Option<&FeatureDef> {
        self.features.iter().find(|f| f.name == name)
    }

    /// Checks a request's features: every problem, not just the first.
    pub fn validate(&self, features: &Features) -> std::result::Result<(), Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let mut known = 0;
        for def in &self.features {
            let value = features.get(&def.name);
            known += usize::from(value.is_some());
            let problem = match (value, def.kind) {
                (None, _) if !def.nullable => Some("is required".to_string()),
                (Some(FeatureValue::Missing), _) if !def.nullable => {
                    Some("is required and may not be null".to_string())
                }
                (Some(FeatureValue::Number(x)), Kind::Numeric) if !x.is_finite() => {
                    Some(format!("must be a finite number, got {x}"))
                }
                (Some(FeatureValue::Category(_)), Kind::Numeric) => {
                    Some("must be a number, got a string".to_string())
                }
                _ => None,
            };
            if let Some(problem) = problem {
                problems.push(FieldProblem {
                    field: def.name.clone(),
                    problem,
                });
            }
        }
        // Names the spec does not know, looked for only when there are some.
        for name in features.keys().filter(|_| known < features.len()) {
            if self.feature(name).is_none() {
                problems.push(FieldProblem {
                    field: name.clone(),
                    problem: "is not a feature of this model".into(),
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Reads one feature's cell from a CSV. Empty and `NA` cells are missing values;
    /// categorical numbers stay strings (a carrier code "9E" or a month "7" is a label).
    pub fn parse_cell(def: &FeatureDef, cell: &str) -> std::result::Result<FeatureValue, String> {
        let cell = cell.trim();
        if Self::is_missing(cell) {
            return Ok(FeatureValue::Missing);
        }
        match def.kind {
            Kind::Numeric => Self::parse_number(def, cell).map(FeatureValue::Number),
            Kind::Categorical => Ok(FeatureValue::Category(cell.to_string())),
        }
    }

    /// Whether a (trimmed) cell is a missing value: empty, `NA`, `NaN` or `null`.
    pub fn is_missing(cell: &str) -> bool {
        matches!(cell, "" | "NA" | "NaN" | "null")
    }

    /// A present (trimmed) numeric cell: a finite number, or an error naming the column.
    pub fn parse_number(def: &FeatureDef, cell: &str) -> std::result::Result<f64, String> {
        cell.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("column `{}`: {cell:?} is not a number", def.column()))
    }
}

/// Parses a timestamp to milliseconds since the Unix epoch (UTC). Accepts RFC 3339
/// (`2013-01-01T05:00:00Z`, with an optional offset), `YYYY-MM-DD HH:MM[:SS]`, a plain date,
/// or an integer number of milliseconds.
pub fn parse_time(text: &str) -> std::result::Result<i64, String> {
    let t = text.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || format!("{t:?} is not a timestamp (expected e.g. 2013-01-01T05:00:00Z)");
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    if t.len() < 10 || t.as_bytes()[4] != b'-' || t.as_bytes()[7] != b'-' {
        return Err(bad());
    }
    let (y, m, d) = (num(&t[0..4])?, num(&t[5..7])?, num(&t[8..10])?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let mut rest = &t[10..];
    let (mut hh, mut mm, mut ss, mut offset_min) = (0, 0, 0, 0);
    if !rest.is_empty() {
        if !(rest.starts_with('T') || rest.starts_with(' ')) || rest.len() < 6 {
            return Err(bad());
        }
        hh = num(&rest[1..3])?;
        mm = num(&rest[4..6])?;
        rest = &rest[6..];
        if rest.starts_with(':') && rest.len() >= 3 {
            ss = num(&rest[1..3])?;
            rest = &rest[3..];
            if let Some(frac) = rest.strip_prefix('.') {
                let digits = frac.chars().take_while(|c| c.is_ascii_digit()).count();
                rest = &frac[digits..];
            }
        }
        match rest {
            "" | "Z" => {}
            tz if (tz.starts_with('+') || tz.starts_with('-')) && tz.len() == 6 => {
                let sign = if tz.starts_with('-') { -1 } else { 1 };
                offset_min = sign * (num(&tz[1..3])? * 60 + num(&tz[4..6])?);
            }
            _ => return Err(bad()),
        }
        if hh > 23 || mm > 59 || ss > 60 {
            return Err(bad());
        }
    }
    let days = days_from_civil(y, m, d);
    Ok(((days * 86_400 + hh * 3600 + mm * 60 + ss) - offset_min * 60) * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats milliseconds since the epoch as RFC 3339 UTC, for logs and reports.
pub fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_timestamp_forms_data_sets_use() {
        // 2013-01-01T05:00:00Z is 1357016400 s after the epoch (date -d @1357016400).
        assert_eq!(parse_time("2013-01-01T05:00:00Z"), Ok(1_357_016_400_000));
        assert_eq!(parse_time("2013-01-01 05:00:00"), Ok(1_357_016_400_000));
        assert_eq!(parse_time("2013-01-01 05:00"), Ok(1_357_016_400_000));
        assert_eq!(
            parse_time("2013-01-01T00:00:00-05:00"),
            Ok(1_357_016_400_000)
        );
        assert_eq!(parse_time("2013-01-01"), Ok(1_356_998_400_000));
        assert_eq!(parse_time("1357016400000"), Ok(1_357_016_400_000));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2013-13-01").is_err());
        assert_eq!(format_time(1_357_016_400_000), "2013-01-01T05:00:00Z");
        assert_eq!(format_time(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    /// Features `x` (numeric, required) and `colour` (categorical, read from column `c`).
    const SPEC: &str = include_str!("../../tests/fixtures/toy.toml");

    #[test]
    fn validation_names_every_bad_field() {
        let spec = FeatureSpec::from_toml(SPEC).unwrap();
        let features: Features = [
            ("x".to_string(), FeatureValue::Category("high".into())),
            ("z".to_string(), FeatureValue::Number(1.0)),
        ]
        .into();
        let problems = spec.validate(&features).unwrap_err();
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["x", "z"]);
        let ok: Features = [("x".to_string(), FeatureValue::Number(1.0))].into();
        assert!(spec.validate(&ok).is_ok());
    }

    #[test]
    fn rejects_a_spec_whose_feature_is_the_target() {
        let bad = SPEC.replace("column = \"c\"", "column = \"y\"");
        assert_ne!(bad, SPEC);
        let err = FeatureSpec::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("target column"), "{err}");
    }
}
