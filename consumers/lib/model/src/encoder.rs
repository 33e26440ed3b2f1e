//! Feature encoding: the spec's features → one dense row of `f64`, fitted on training rows
//! only and shipped inside the model so serving encodes exactly as training did.
//!
//! - Numeric: standardised, `(x − mean) / std` with the training mean and population
//!   standard deviation. A missing value (absent, null, non-finite, or a string that does
//!   not parse as a number) encodes as the mean (0), and sets the feature's missing
//!   indicator column when it has one. A feature gets an indicator when some but not all
//!   training rows missed it and its missing rows are not exactly those of an earlier
//!   feature's indicator (`temp`, `dewp` and `humid` missing together share `dewp`'s: the
//!   features are taken in name order). A feature constant in training gets no value
//!   column: there is nothing to learn from it.
//! - Categorical: one-hot over the `max_categories` most frequent training categories (ties
//!   broken by name), with the most frequent one as the reference level that has no column
//!   (all zeros), so the columns are not collinear with a model's intercept. Categories
//!   beyond the cap share an `<other>` column (present when training saw such categories),
//!   and so do categories never seen in training; without an `<other>` column an unseen
//!   category encodes as the reference level. A missing value sets a `<missing>` column when
//!   training saw missing values, and otherwise also encodes as the reference level. A
//!   number sent for a categorical feature is its label (`7.0` → `"7"`).
//!
//! [`Encoder::encode_into`] writes into a caller's buffer and allocates nothing.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};

use driftline_schemas::events::{FeatureValue, Features};
use driftline_schemas::spec::{FeatureDef, FeatureSpec, Kind};
use ndarray::{Array2, Axis};
use serde::{Deserialize, Serialize};

use crate::data::number_label;
use crate::{Error, Result};
use driftline_drift::frame::as_label;

/// Encoder settings (also read from a spec's hyper-parameters, see [`crate::fit_with`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderOptions {
    /// Categories kept per categorical feature, the reference level included; the rest
    /// share the `<other>` column. Default 30.
    pub max_categories: usize,
    /// Whether numeric features get missing-indicator columns. Default true.
    pub missing_indicators: bool,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        Self {
            max_categories: 30,
            missing_indicators: true,
        }
    }
}

/// A fitted encoder: how each feature maps to columns of the encoded row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encoder {
    n_columns: usize,
    /// Sorted by name, so encoding walks a request's `BTreeMap` in one pass.
    features: Vec<EncodedFeature>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EncodedFeature {
    name: String,
    #[serde(flatten)]
    encoding: Encoding,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Encoding {
    Numeric {
        mean: f64,
        std: f64,
        value_column: Option<u32>,
        missing_column: Option<u32>,
    },
    Categorical {
        /// The most frequent training category; encodes as all zeros.
        reference: Option<String>,
        /// Kept categories (reference excluded) and their columns, sorted by category.
        levels: Vec<(String, u32)>,
        other_column: Option<u32>,
        missing_column: Option<u32>,
    },
}

impl Encoder {
    /// Fits the encoder on training rows only, and returns it with those rows encoded (row
    /// `i` is what [`Self::encode_into`] gives `rows[i]`). Both come from one pass over the
    /// rows: reading the feature maps costs more than a linear fit's arithmetic, so the
    /// training matrix is built from what fitting gathered rather than by reading them again.
    pub fn fit_transform<R: Borrow<Features> + Sync>(
        spec: &FeatureSpec,
        rows: &[R],
        options: EncoderOptions,
    ) -> Result<(Self, Array2<f64>)> {
        if options.max_categories == 0 {
            return Err(Error::HyperParameter {
                name: "max_categories".into(),
                message: "must be at least 1".into(),
            });
        }
        if rows.len() > u32::MAX as usize {
            return Err(Error::Fit(format!(
                "{} rows are too many to encode",
                rows.len()
            )));
        }
        let mut defs: Vec<_> = spec.features.iter().collect();
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        // One pass over the rows gathers what every feature needs (a lookup per row and
        // feature cost more than all the arithmetic: the rows are maps on the heap), a
        // slice of the rows per core, joined in row order so sums are bit for bit those of
        // one pass.
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let chunk = rows.len().div_ceil(threads).max(1);
        let parts: Vec<Vec<Seen>> = std::thread::scope(|s| {
            let defs = &defs;
            let handles: Vec<_> = rows
                .chunks(chunk)
                .enumerate()
                .map(|(i, part)| s.spawn(move || gather(defs, part, (i * chunk) as u32)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let mut seen: Vec<Seen> = defs.iter().map(|_| Seen::default()).collect();
        for part in parts {
            for (all, part) in seen.iter_mut().zip(part) {
                all.absorb(part);
            }
        }
        let n = rows.len() as u32;
        let mut features = Vec::with_capacity(defs.len());
        let mut next = 0u32;
        let mut column = || {
            next += 1;
            next - 1
        };
        // Missing-row patterns that already have an indicator column.
        let mut patterns: Vec<Vec<u32>> = Vec::new();
        let mut fills = Vec::with_capacity(defs.len());
        for (def, seen) in defs.into_iter().zip(seen) {
            let Seen {
                values,
                missing_rows,
                labels,
                counts,
                row_labels,
            } = seen;
            let encoding = match def.kind {
                Kind::Numeric => {
                    let count = values.len();
                    let mean = if count > 0 {
                        values.iter().sum::<f64>() / count as f64
                    } else {
                        0.0
                    };
                    let ss: f64 = values.iter().map(|x| (x - mean) * (x - mean)).sum();
                    let std = if count > 0 {
                        (ss / count as f64).sqrt()
                    } else {
                        0.0
                    };
                    let constant = !std.is_finite() || std <= 1e-12 * mean.abs().max(1.0);
                    let value_column = (!constant).then(&mut column);
                    let some_missing = !missing_rows.is_empty() && (missing_rows.len() as u32) < n;
                    let missing_column = if options.missing_indicators
                        && some_missing
                        && !patterns.contains(&missing_rows)
                    {
                        patterns.push(missing_rows.clone());
                        Some(column())
                    } else {
                        None
                    };
                    let (mean, std) = (
                        if mean.is_finite() { mean } else { 0.0 },
                        if constant { 1.0 } else { std },
                    );
                    fills.push(Fill::Numeric {
                        values,
                        missing_rows,
                        mean,
                        std,
                        value_column,
                        missing_column,
                    });
                    Encoding::Numeric {
                        mean,
                        std,
                        value_column,
                        missing_column,
                    }
                }
                Kind::Categorical => {
                    let missing = missing_rows.len() as u32;
                    let mut ranked: Vec<(String, u64)> = labels
                        .iter()
                        .map(|(label, &id)| (label.clone(), counts[id as usize]))
                        .collect();
                    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                    let others = ranked.len() > options.max_categories;
                    ranked.truncate(options.max_categories);
                    let mut kept = ranked.into_iter().map(|(c, _)| c);
                    let reference = kept.next();
                    let mut names: Vec<String> = kept.collect();
                    names.sort();
                    let levels: Vec<(String, u32)> =
                        names.into_iter().map(|c| (c, column())).collect();
                    let other_column = others.then(&mut column);
                    let missing_column = (missing > 0 && missing < n).then(&mut column);
                    let mut label_columns = vec![None; counts.len()];
                    for (label, id) in labels {
                        label_columns[id as usize] =
                            level_column(&label, &reference, &levels, other_column);
                    }
                    fills.push(Fill::Categorical {
                        row_labels,
                        label_columns,
                        missing_column,
                    });
                    Encoding::Categorical {
                        reference,
                        levels,
                        other_column,
                        missing_column,
                    }
                }
            };
            features.push(EncodedFeature {
                name: def.name.clone(),
                encoding,
            });
        }
        let encoder = Self {
            n_columns: next as usize,
            features,
        };
        let x = fill_matrix(&fills, rows.len(), encoder.n_columns, chunk);
        Ok((encoder, x))
    }

    /// How many columns an encoded row has.
    pub fn n_columns(&self) -> usize {
        self.n_columns
    }

    /// The features this encoder reads, sorted by name.
    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(|f| f.name.as_str())
    }

    /// A name for each column: `dep_delay`, `wind_gust=<missing>`, `carrier=UA`,
    /// `carrier=<other>`; reference levels have no column.
    pub fn column_names(&self) -> Vec<String> {
        let mut names = vec![String::new(); self.n_columns];
        let mut set = |col: Option<u32>, name: String| {
            if let Some(c) = col {
                names[c as usize] = name;
            }
        };
        for f in &self.features {
            match &f.encoding {
                Encoding::Numeric {
                    value_column,
                    missing_column,
                    ..
                } => {
                    set(*value_column, f.name.clone());
                    set(*missing_column, format!("{}=<missing>", f.name));
                }
                Encoding::Categorical {
                    levels,
                    other_column,
                    missing_column,
                    ..
                } => {
                    for (c, col) in levels {
                        set(Some(*col), format!("{}={c}", f.name));
                    }
                    set(*other_column, format!("{}=<other>", f.name));
                    set(*missing_column, format!("{}=<missing>", f.name));
                }
            }
        }
        names
    }

    /// Encodes one row into `row` (length [`Self::n_columns`]); allocates nothing. Features
    /// the encoder does not know are ignored (the predictor validates requests separately).
    pub fn encode_into(&self, features: &Features, row: &mut [f64]) {
        debug_assert_eq!(row.len(), self.n_columns);
        row.fill(0.0);
        let mut given = features.iter().peekable();
        for f in &self.features {
            let value = next_named(&mut given, &f.name);
            match &f.encoding {
                Encoding::Numeric {
                    mean,
                    std,
                    value_column,
                    missing_column,
                } => match numeric(value) {
                    Some(x) => {
                        if let Some(c) = value_column {
                            row[*c as usize] = (x - mean) / std;
                        }
                    }
                    None => {
                        if let Some(c) = missing_column {
                            row[*c as usize] = 1.0;
                        }
                    }
                },
                Encoding::Categorical {
                    reference,
                    levels,
                    other_column,
                    missing_column,
                } => {
                    let column = match value {
                        None | Some(FeatureValue::Missing) => *missing_column,
                        Some(FeatureValue::Category(c)) => {
                            level_column(c, reference, levels, *other_column)
                        }
                        Some(FeatureValue::Number(x)) if x.is_finite() => {
                            let mut buf = [0u8; 48];
                            match format_number(*x, &mut buf) {
                                Some(c) => level_column(c, reference, levels, *other_column),
                                None => *other_column,
                            }
                        }
                        Some(FeatureValue::Number(_)) => *missing_column,
                    };
                    if let Some(c) = column {
                        row[c as usize] = 1.0;
                    }
                }
            }
        }
    }

    /// Checks a decoded encoder: column indices in range and used once, finite statistics,
    /// sorted names. Loading never trusts the bytes.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(format!("encoder: {m}")));
        if self.n_columns > u32::MAX as usize {
            return bad("too many columns".into());
        }
        let mut used = vec![false; self.n_columns];
        let mut claim = |col: Option<u32>, what: &str| -> Result<()> {
            if let Some(c) = col {
                match used.get_mut(c as usize) {
                    Some(u) if !*u => *u = true,
                    Some(_) => return bad(format!("column {c} ({what}) is used twice")),
                    None => return bad(format!("column {c} ({what}) is out of range")),
                }
            }
            Ok(())
        };
        for (i, f) in self.features.iter().enumerate() {
            if i > 0 && self.features[i - 1].name >= f.name {
                return bad("features are not sorted and unique by name".into());
            }
            match &f.encoding {
                Encoding::Numeric {
                    mean,
                    std,
                    value_column,
                    missing_column,
                } => {
                    if !mean.is_finite() || !std.is_finite() || *std <= 0.0 {
                        return bad(format!("feature `{}` has mean {mean}, std {std}", f.name));
                    }
                    claim(*value_column, &f.name)?;
                    claim(*missing_column, &f.name)?;
                }
                Encoding::Categorical {
                    levels,
                    other_column,
                    missing_column,
                    ..
                } => {
                    if levels.windows(2).any(|w| w[0].0 >= w[1].0) {
                        return bad(format!("feature `{}`: levels are not sorted", f.name));
                    }
                    for (_, c) in levels {
                        claim(Some(*c), &f.name)?;
                    }
                    claim(*other_column, &f.name)?;
                    claim(*missing_column, &f.name)?;
                }
            }
        }
        if used.iter().any(|u| !u) {
            return bad("some columns belong to no feature".into());
        }
        Ok(())
    }

    /// Per-feature summary for logs and model cards: column counts by feature.
    pub fn summary(&self) -> BTreeMap<String, usize> {
        self.features
            .iter()
            .map(|f| {
                let n = match &f.encoding {
                    Encoding::Numeric {
                        value_column,
                        missing_column,
                        ..
                    } => {
                        usize::from(value_column.is_some()) + usize::from(missing_column.is_some())
                    }
                    Encoding::Categorical {
                        levels,
                        other_column,
                        missing_column,
                        ..
                    } => {
                        levels.len()
                            + usize::from(other_column.is_some())
                            + usize::from(missing_column.is_some())
                    }
                };
                (f.name.clone(), n)
            })
            .collect()
    }
}

/// What one pass over the training rows saw of one feature.
#[derive(Default)]
struct Seen {
    /// A numeric feature's values, in row order.
    values: Vec<f64>,
    /// Rows (by position) where the feature is missing.
    missing_rows: Vec<u32>,
    /// A categorical feature's labels, each with its number (in order of first sight)...
    labels: HashMap<String, u32>,
    /// ...how often each number was seen...
    counts: Vec<u64>,
    /// ...and each row's number ([`NO_LABEL`] where the feature is missing).
    row_labels: Vec<u32>,
}

/// A row without a label in [`Seen::row_labels`].
const NO_LABEL: u32 = u32::MAX;

impl Seen {
    fn see_label(&mut self, label: std::borrow::Cow<'_, str>) {
        let id = match self.labels.get(label.as_ref()) {
            Some(&id) => id,
            None => {
                let id = self.counts.len() as u32;
                self.labels.insert(label.into_owned(), id);
                self.counts.push(0);
                id
            }
        };
        self.counts[id as usize] += 1;
        self.row_labels.push(id);
    }

    /// Appends what the next slice of rows saw, renumbering its labels.
    fn absorb(&mut self, part: Seen) {
        self.values.extend(part.values);
        self.missing_rows.extend(part.missing_rows);
        let mut renumber = vec![0u32; part.counts.len()];
        for (label, id) in part.labels {
            let next = self.counts.len() as u32;
            let ours = *self.labels.entry(label).or_insert(next);
            if ours == next {
                self.counts.push(0);
            }
            self.counts[ours as usize] += part.counts[id as usize];
            renumber[id as usize] = ours;
        }
        self.row_labels
            .extend(part.row_labels.into_iter().map(|id| {
                if id == NO_LABEL {
                    NO_LABEL
                } else {
                    renumber[id as usize]
                }
            }));
    }
}

/// How one feature's gathered values become its columns of the training matrix.
enum Fill {
    Numeric {
        values: Vec<f64>,
        missing_rows: Vec<u32>,
        mean: f64,
        std: f64,
        value_column: Option<u32>,
        missing_column: Option<u32>,
    },
    Categorical {
        row_labels: Vec<u32>,
        /// The column of each label number; `None` for the reference level.
        label_columns: Vec<Option<u32>>,
        missing_column: Option<u32>,
    },
}

/// The training matrix from what [`gather`] saw, `chunk` rows per core: the same numbers
/// [`Encoder::encode_into`] writes, computed the same way.
fn fill_matrix(fills: &[Fill], n: usize, p: usize, chunk: usize) -> Array2<f64> {
    let mut x = Array2::<f64>::zeros((n, p));
    if p == 0 {
        return x;
    }
    std::thread::scope(|s| {
        for (i, mut out) in x.axis_chunks_iter_mut(Axis(0), chunk).enumerate() {
            s.spawn(move || {
                let first = i * chunk;
                // Where each numeric feature's values and missing rows stand at `first`.
                let mut cursors: Vec<(usize, usize)> = fills
                    .iter()
                    .map(|f| match f {
                        Fill::Numeric { missing_rows, .. } => {
                            let m = missing_rows.partition_point(|&r| (r as usize) < first);
                            (first - m, m)
                        }
                        Fill::Categorical { .. } => (0, 0),
                    })
                    .collect();
                let Some(out) = out.as_slice_mut() else {
                    return;
                };
                for (r, row) in (first..).zip(out.chunks_exact_mut(p)) {
                    for (fill, (v, m)) in fills.iter().zip(&mut cursors) {
                        match fill {
                            Fill::Numeric {
                                values,
                                missing_rows,
                                mean,
                                std,
                                value_column,
                                missing_column,
                            } => {
                                if missing_rows.get(*m).is_some_and(|&x| x as usize == r) {
                                    *m += 1;
                                    if let Some(c) = missing_column {
                                        row[*c as usize] = 1.0;
                                    }
                                } else {
                                    if let Some(c) = value_column {
                                        row[*c as usize] = (values[*v] - mean) / std;
                                    }
                                    *v += 1;
                                }
                            }
                            Fill::Categorical {
                                row_labels,
                                label_columns,
                                missing_column,
                            } => {
                                let id = row_labels[r];
                                let column = if id == NO_LABEL {
                                    *missing_column
                                } else {
                                    label_columns[id as usize]
                                };
                                if let Some(c) = column {
                                    row[c as usize] = 1.0;
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    x
}

/// What `defs` need from `rows`, the first of which is row number `first`.
fn gather<R: Borrow<Features>>(defs: &[&FeatureDef], rows: &[R], first: u32) -> Vec<Seen> {
    let mut seen: Vec<Seen> = defs.iter().map(|_| Seen::default()).collect();
    for (n, f) in (first..).zip(rows) {
        let mut given = f.borrow().iter().peekable();
        for (def, seen) in defs.iter().zip(&mut seen) {
            let value = next_named(&mut given, &def.name);
            match def.kind {
                Kind::Numeric => match numeric(value) {
                    Some(x) => seen.values.push(x),
                    None => seen.missing_rows.push(n),
                },
                Kind::Categorical => match value.and_then(as_label) {
                    Some(c) => seen.see_label(c),
                    None => {
                        seen.missing_rows.push(n);
                        seen.row_labels.push(NO_LABEL);
                    }
                },
            }
        }
    }
    seen
}

/// The value of `name` in a row's features, read in name order: callers ask for names in
/// ascending order, so both sides are walked once (a merge join, not a lookup per name).
fn next_named<'a>(
    given: &mut std::iter::Peekable<std::collections::btree_map::Iter<'a, String, FeatureValue>>,
    name: &str,
) -> Option<&'a FeatureValue> {
    while let Some((key, v)) = given.peek() {
        match key.as_str().cmp(name) {
            std::cmp::Ordering::Less => {
                given.next();
            }
            std::cmp::Ordering::Equal => {
                let v = *v;
                given.next();
                return Some(v);
            }
            std::cmp::Ordering::Greater => return None,
        }
    }
    None
}

fn numeric(value: Option<&FeatureValue>) -> Option<f64> {
    match value {
        Some(FeatureValue::Number(x)) if x.is_finite() => Some(*x),
        Some(FeatureValue::Category(c)) => c.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

fn level_column(
    c: &str,
    reference: &Option<String>,
    levels: &[(String, u32)],
    other: Option<u32>,
) -> Option<u32> {
    match levels.binary_search_by(|(l, _)| l.as_str().cmp(c)) {
        Ok(i) => Some(levels[i].1),
        Err(_) if reference.as_deref() == Some(c) => None,
        Err(_) => other,
    }
}

/// [`number_label`] into a stack buffer; `None` when it does not fit (then it is surely not
/// a kept category label of reasonable length).
fn format_number(x: f64, buf: &mut [u8; 48]) -> Option<&str> {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let ok = if x.fract() == 0.0 && x.abs() < 1e15 {
        write!(cursor, "{}", x as i64)
    } else {
        write!(cursor, "{x}")
    };
    let len = cursor.position() as usize;
    ok.ok()?;
    debug_assert_eq!(
        std::str::from_utf8(&buf[..len]).ok(),
        Some(number_label(x).as_str())
    );
    std::str::from_utf8(&buf[..len]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftline_schemas::spec::FeatureDef;

    /// The shared toy spec (`x` numeric, `colour` categorical) plus a numeric `k`.
    fn spec() -> FeatureSpec {
        let mut spec =
            FeatureSpec::from_toml(include_str!("../../../../tests/fixtures/toy.toml")).unwrap();
        spec.features.push(FeatureDef {
            name: "k".into(),
            kind: Kind::Numeric,
            column: None,
            nullable: true,
        });
        spec
    }

    fn features(x: Option<f64>, c: Option<&str>) -> Features {
        let mut f = Features::new();
        f.insert(
            "x".into(),
            x.map_or(FeatureValue::Missing, FeatureValue::Number),
        );
        if let Some(c) = c {
            f.insert("colour".into(), FeatureValue::Category(c.into()));
        }
        f.insert("k".into(), FeatureValue::Number(5.0));
        f
    }

    fn fitted(max_categories: usize) -> (Encoder, Vec<String>) {
        let rows = [
            features(Some(1.0), Some("a")),
            features(Some(3.0), Some("a")),
            features(None, Some("b")),
            features(Some(2.0), Some("c")),
            features(Some(2.0), None),
        ];
        let (e, _) = Encoder::fit_transform(
            &spec(),
            &rows,
            EncoderOptions {
                max_categories,
                ..Default::default()
            },
        )
        .unwrap();
        let names = e.column_names();
        (e, names)
    }

    #[test]
    fn standardises_numerics_and_flags_missing_values() {
        let (e, names) = fitted(30);
        // Constant `k` has no column; `x` has a value and a missing column.
        assert_eq!(
            names,
            [
                "colour=b",
                "colour=c",
                "colour=<missing>",
                "x",
                "x=<missing>"
            ]
        );
        let mut row = vec![9.0; e.n_columns()];
        e.encode_into(&features(Some(3.0), Some("a")), &mut row);
        // mean 2, population std sqrt(0.5)
        assert!((row[3] - 1.0 / 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(
            &row[..3],
            &[0.0, 0.0, 0.0],
            "the reference level `a` is all zeros"
        );
        e.encode_into(&features(None, None), &mut row);
        assert_eq!(row, [0.0, 0.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn unseen_and_overflow_categories_share_the_other_column() {
        let (e, names) = fitted(2);
        assert_eq!(
            names,
            [
                "colour=b",
                "colour=<other>",
                "colour=<missing>",
                "x",
                "x=<missing>"
            ]
        );
        let mut row = vec![0.0; e.n_columns()];
        for c in ["c", "never-seen"] {
            e.encode_into(&features(Some(2.0), Some(c)), &mut row);
            assert_eq!(row, [0.0, 1.0, 0.0, 0.0, 0.0], "{c}");
        }
        // Without an <other> column an unseen category is the reference level.
        let (e, _) = fitted(30);
        let mut row = vec![0.0; e.n_columns()];
        e.encode_into(&features(Some(2.0), Some("never-seen")), &mut row);
        assert!(row.iter().all(|x| *x == 0.0));
    }

    #[test]
    fn numbers_sent_for_categories_read_as_labels() {
        let rows: Vec<Features> = ["7", "7", "8"]
            .iter()
            .map(|c| [("colour".to_string(), FeatureValue::Category(c.to_string()))].into())
            .collect();
        let (e, _) = Encoder::fit_transform(&spec(), &rows, EncoderOptions::default()).unwrap();
        let mut row = vec![0.0; e.n_columns()];
        e.encode_into(
            &[("colour".to_string(), FeatureValue::Number(8.0))].into(),
            &mut row,
        );
        assert_eq!(e.column_names(), ["colour=8"]);
        assert_eq!(row, [1.0]);
    }

    #[test]
    fn features_missing_together_share_one_indicator() {
        let rows: Vec<Features> = (0..6)
            .map(|i| {
                let v = if i % 3 == 0 {
                    FeatureValue::Missing
                } else {
                    FeatureValue::Number(i as f64)
                };
                [("x".to_string(), v.clone()), ("k".to_string(), v)].into()
            })
            .collect();
        let (e, _) = Encoder::fit_transform(&spec(), &rows, EncoderOptions::default()).unwrap();
        assert_eq!(e.column_names(), ["k", "k=<missing>", "x"]);
    }

    #[test]
    fn the_training_matrix_is_what_encode_into_gives_each_row() {
        // Every case at once: missing and non-finite values, numbers in strings, numbers
        // for categories, overflow categories, `k` missing exactly where `x` is (one shared
        // indicator), and enough rows for a slice per core.
        let colours = ["a", "b", "c", "d", "e"];
        let rows: Vec<Features> = (0..1001usize)
            .map(|i| {
                let mut f = Features::new();
                let x = match i % 7 {
                    0 => FeatureValue::Missing,
                    1 => FeatureValue::Number(f64::NAN),
                    2 => FeatureValue::Category(format!(" {} ", i % 13)),
                    3 => FeatureValue::Category("n/a".into()),
                    _ => FeatureValue::Number((i as f64).sin() * 100.0),
                };
                f.insert("x".into(), x);
                if ![0, 1, 3].contains(&(i % 7)) {
                    f.insert("k".into(), FeatureValue::Number((i % 5) as f64));
                }
                let colour = match i % 11 {
                    0 => None,
                    1 => Some(FeatureValue::Number((i % 3) as f64)),
                    2 => Some(FeatureValue::Number(f64::INFINITY)),
                    3 => Some(FeatureValue::Missing),
                    _ => Some(FeatureValue::Category(colours[(i * i) % 5].into())),
                };
                if let Some(c) = colour {
                    f.insert("colour".into(), c);
                }
                f
            })
            .collect();
        for max_categories in [2, 30] {
            let options = EncoderOptions {
                max_categories,
                ..Default::default()
            };
            let (e, x) = Encoder::fit_transform(&spec(), &rows, options).unwrap();
            assert!(e.column_names().contains(&"k=<missing>".to_string()));
            assert!(!e.column_names().contains(&"x=<missing>".to_string()));
            let mut row = vec![f64::NAN; e.n_columns()];
            for (i, f) in rows.iter().enumerate() {
                e.encode_into(f, &mut row);
                assert_eq!(
                    x.row(i).to_vec(),
                    row,
                    "row {i}, max_categories {max_categories}"
                );
            }
        }
    }

    #[test]
    fn validation_rejects_overlapping_columns() {
        let (mut e, _) = fitted(30);
        assert!(e.validate().is_ok());
        if let Encoding::Numeric { missing_column, .. } = &mut e.features[2].encoding {
            *missing_column = Some(0);
        }
        assert!(e.validate().is_err());
    }
}
