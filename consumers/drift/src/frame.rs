//! A CSV file read into per-column distributions: sorted values for numeric columns,
//! category counts for categorical ones, and missing values counted in both.
//!
//! With a feature spec, its features are read (by their CSV column) with the kinds it
//! declares, and a numeric cell that is not a number is an error naming row and column.
//! Without one, every column is read and its kind inferred: numeric when every non-missing
//! cell parses as a finite number, categorical otherwise. Missing cells are empty, `NA`,
//! `NaN` or `null` (the spec's rule). In an inferred categorical column a cell that reads
//! as a number is labelled by the number's shortest form (`7.0` and `7` are one category),
//! so labels do not depend on where in the file the first non-number appeared.
//!
//! This is the only module that reads files; the statistics never do.

use std::io::Read;
use std::path::Path;

use driftline_schemas::events::FeatureKind;
use driftline_schemas::spec::{FeatureSpec, Kind};

use crate::categorical::CategoryCounts;
use crate::numeric::SortedSample;
use crate::{Error, Result};

/// One column's values.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    Numeric { values: SortedSample, missing: u64 },
    Categorical(CategoryCounts),
}

impl ColumnData {
    pub fn kind(&self) -> FeatureKind {
        match self {
            ColumnData::Numeric { .. } => FeatureKind::Numeric,
            ColumnData::Categorical(_) => FeatureKind::Categorical,
        }
    }

    /// Non-missing values.
    pub fn count(&self) -> u64 {
        match self {
            ColumnData::Numeric { values, .. } => values.len() as u64,
            ColumnData::Categorical(c) => c.total(),
        }
    }

    pub fn missing(&self) -> u64 {
        match self {
            ColumnData::Numeric { missing, .. } => *missing,
            ColumnData::Categorical(c) => c.missing,
        }
    }

    /// The same values as categories (numbers labelled by their shortest form).
    pub fn to_categorical(&self) -> CategoryCounts {
        match self {
            ColumnData::Categorical(c) => c.clone(),
            ColumnData::Numeric { values, missing } => {
                let mut c = CategoryCounts {
                    missing: *missing,
                    ..Default::default()
                };
                let v = values.as_slice();
                let mut i = 0;
                while i < v.len() {
                    let j = i + v[i..].partition_point(|x| *x == v[i]);
                    c.add_n(Some(&number_label(v[i])), (j - i) as u64);
                    i = j;
                }
                c
            }
        }
    }
}

/// A named column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub data: ColumnData,
}

/// A CSV file's columns, in file (or spec) order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Frame {
    pub columns: Vec<Column>,
    pub rows: u64,
}

impl Frame {
    /// Reads a CSV file (see the module doc).
    pub fn from_path(path: &Path, spec: Option<&FeatureSpec>) -> Result<Frame> {
        let file = std::fs::File::open(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_reader(
            std::io::BufReader::new(file),
            spec,
            &path.display().to_string(),
        )
    }

    /// Reads CSV text with a header row; `source` names it in errors.
    pub fn from_reader<R: Read>(
        reader: R,
        spec: Option<&FeatureSpec>,
        source: &str,
    ) -> Result<Frame> {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(reader);
        let csv_err = |e: csv::Error| Error::Csv {
            source_name: source.to_string(),
            message: e.to_string(),
        };
        let header: Vec<String> = rdr
            .headers()
            .map_err(csv_err)?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();

        // (name, index in the row, builder)
        let mut cols: Vec<(String, usize, Builder)> = match spec {
            Some(spec) => spec
                .features
                .iter()
                .map(|def| {
                    let idx = header
                        .iter()
                        .position(|h| h == def.column())
                        .ok_or_else(|| Error::MissingColumn {
                            source_name: source.to_string(),
                            column: def.column().to_string(),
                        })?;
                    Ok((
                        def.name.clone(),
                        idx,
                        Builder::Declared(def.clone(), Declared::default()),
                    ))
                })
                .collect::<Result<_>>()?,
            None => header
                .iter()
                .enumerate()
                .map(|(i, h)| (h.clone(), i, Builder::Inferred(Inferred::default())))
                .collect(),
        };

        // Byte records: only the cells a column is read from are checked for UTF-8.
        let mut record = csv::ByteRecord::new();
        let mut rows = 0u64;
        while rdr.read_byte_record(&mut record).map_err(csv_err)? {
            rows += 1;
            for (_, idx, b) in &mut cols {
                let cell = record.get(*idx).unwrap_or(b"");
                b.push(cell).map_err(|message| Error::Cell {
                    source_name: source.to_string(),
                    row: rows,
                    column: header[*idx].clone(),
                    message,
                })?;
            }
        }
        let columns = cols
            .into_iter()
            .map(|(name, _, b)| Column {
                name,
                data: b.finish(),
            })
            .collect();
        Ok(Frame { columns, rows })
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// A number's label when it sits in a categorical column.
fn number_label(x: f64) -> String {
    format!("{x}")
}

enum Builder {
    Declared(driftline_schemas::spec::FeatureDef, Declared),
    Inferred(Inferred),
}

#[derive(Default)]
struct Declared {
    numbers: Vec<f64>,
    categories: CategoryCounts,
    missing: u64,
}

/// Numeric until a cell says otherwise.
#[derive(Default)]
struct Inferred {
    numbers: Vec<f64>,
    categories: Option<CategoryCounts>,
    missing: u64,
}

impl Builder {
    fn push(&mut self, cell: &[u8]) -> std::result::Result<(), String> {
        let cell = std::str::from_utf8(cell.trim_ascii())
            .map_err(|_| format!("{:?} is not UTF-8", String::from_utf8_lossy(cell)))?;
        match self {
            // `FeatureSpec::parse_cell`'s rules, without its allocation and second trim.
            Builder::Declared(def, d) => {
                if FeatureSpec::is_missing(cell) {
                    d.missing += 1;
                } else if def.kind == Kind::Categorical {
                    d.categories.add(Some(cell));
                } else {
                    d.numbers.push(FeatureSpec::parse_number(def, cell)?);
                }
            }
            Builder::Inferred(b) => {
                if FeatureSpec::is_missing(cell) {
                    b.missing += 1;
                    return Ok(());
                }
                let number = cell.parse::<f64>().ok().filter(|x| x.is_finite());
                match (&mut b.categories, number) {
                    (None, Some(x)) => b.numbers.push(x),
                    (Some(c), Some(x)) => c.add(Some(&number_label(x))),
                    (Some(c), None) => c.add(Some(cell)),
                    (None, None) => {
                        // The first non-number: the column is categorical after all.
                        let mut c = CategoryCounts::default();
                        for x in b.numbers.drain(..) {
                            c.add(Some(&number_label(x)));
                        }
                        c.add(Some(cell));
                        b.categories = Some(c);
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> ColumnData {
        match self {
            Builder::Declared(def, d) => match FeatureKind::from(def.kind) {
                FeatureKind::Numeric => ColumnData::Numeric {
                    values: SortedSample::from_unsorted(d.numbers),
                    missing: d.missing,
                },
                FeatureKind::Categorical => ColumnData::Categorical(CategoryCounts {
                    missing: d.missing,
                    ..d.categories
                }),
            },
            Builder::Inferred(b) => match b.categories {
                Some(c) => ColumnData::Categorical(CategoryCounts {
                    missing: b.missing,
                    ..c
                }),
                None => ColumnData::Numeric {
                    values: SortedSample::from_unsorted(b.numbers),
                    missing: b.missing,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
        [dataset]
        name = "toy"
        time_column = "t"
        [model]
        name = "toy"
        algorithm = "linear"
        [target]
        column = "y"
        kind = "regression"
        [[features]]
        name = "distance"
        kind = "numeric"
        [[features]]
        name = "month"
        kind = "categorical"
        column = "m"
    "#;

    #[test]
    fn infers_numeric_and_categorical_columns_and_counts_missing_cells() {
        let csv = "a,b,c,d\n1,x,7,\n2.5,y,NA,\nNA,x,07.0,\n,z,hello,\n";
        let f = Frame::from_reader(csv.as_bytes(), None, "t.csv").unwrap();
        assert_eq!(f.rows, 4);
        let a = &f.column("a").unwrap().data;
        assert_eq!(
            a,
            &ColumnData::Numeric {
                values: SortedSample::from_unsorted(vec![1.0, 2.5]),
                missing: 2
            }
        );
        let ColumnData::Categorical(b) = &f.column("b").unwrap().data else {
            panic!()
        };
        assert_eq!(b.counts["x"], 2);
        let ColumnData::Categorical(c) = &f.column("c").unwrap().data else {
            panic!()
        };
        // "7" and "07.0" are one category; "hello" made the column categorical.
        assert_eq!(c.counts["7"], 2);
        assert_eq!(c.counts["hello"], 1);
        assert_eq!(c.missing, 1);
        let d = &f.column("d").unwrap().data;
        assert_eq!(
            (d.kind(), d.count(), d.missing()),
            (FeatureKind::Numeric, 0, 4)
        );
    }

    #[test]
    fn a_spec_picks_columns_kinds_and_names() {
        let spec = FeatureSpec::from_toml(SPEC).unwrap();
        let csv = "t,distance,m,y\n1,100,7,3\n2,,8,4\n";
        let f = Frame::from_reader(csv.as_bytes(), Some(&spec), "t.csv").unwrap();
        let names: Vec<_> = f.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["distance", "month"]);
        assert_eq!(f.columns[1].data.kind(), FeatureKind::Categorical);
        assert_eq!(f.columns[0].data.missing(), 1);
    }

    #[test]
    fn a_bad_cell_or_absent_column_is_an_error_naming_it() {
        let spec = FeatureSpec::from_toml(SPEC).unwrap();
        let err = Frame::from_reader("distance,m\nfar,7\n".as_bytes(), Some(&spec), "c.csv")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.csv") && err.contains("row 1") && err.contains("distance"),
            "{err}"
        );
        let err = Frame::from_reader("distance\n1\n".as_bytes(), Some(&spec), "c.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`m`"), "{err}");
        let err = Frame::from_reader("a,b\n1\n".as_bytes(), None, "c.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.csv"), "{err}");
    }

    #[test]
    fn numeric_columns_convert_to_categories_by_value() {
        let data = ColumnData::Numeric {
            values: SortedSample::from_unsorted(vec![2.0, 1.0, 2.0]),
            missing: 1,
        };
        let c = data.to_categorical();
        assert_eq!((c.counts["1"], c.counts["2"], c.missing), (1, 2, 1));
    }
}
