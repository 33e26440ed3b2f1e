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

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

use driftline_schemas::events::{FeatureKind, FeatureValue};
use driftline_schemas::spec::{FeatureSpec, Kind};

use rustc_hash::FxHashMap;

use crate::categorical::CategoryCounts;
use crate::numeric::SortedSample;
use crate::{Error, Result, plain};

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
    /// Reads a CSV file (see the module doc) in one read.
    pub fn from_path(path: &Path, spec: Option<&FeatureSpec>) -> Result<Frame> {
        let text = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&text, spec, &path.display().to_string())
    }

    /// Reads CSV text with a header row held in memory; `source` names it in errors.
    ///
    /// Split by [`plain::Lines`] when the text has no quote or carriage return, by the
    /// `csv` crate otherwise.
    pub fn from_bytes(text: &[u8], spec: Option<&FeatureSpec>, source: &str) -> Result<Frame> {
        let mut reading = Reading::new(spec, source);
        let text = without_bom(text);
        if reading.plain_lines(text, true)?.is_none() {
            reading.csv_records(text)?;
        }
        reading.finish()
    }

    /// Reads CSV text with a header row from a stream; `source` names it in errors.
    ///
    /// The text is read in chunks of whole lines, split as [`Frame::from_bytes`] does; from
    /// the first chunk with a quote or carriage return, the `csv` crate reads the rest.
    /// Memory holds one chunk, not the file.
    pub fn from_reader<R: Read>(
        reader: R,
        spec: Option<&FeatureSpec>,
        source: &str,
    ) -> Result<Frame> {
        Self::from_chunks(reader, spec, source, CHUNK)
    }

    /// [`Frame::from_reader`], reading `chunk` bytes at a time.
    fn from_chunks<R: Read>(
        mut reader: R,
        spec: Option<&FeatureSpec>,
        source: &str,
        chunk: u64,
    ) -> Result<Frame> {
        let io_err = |e: std::io::Error| Error::Io {
            path: source.to_string(),
            source: e,
        };
        let mut reading = Reading::new(spec, source);
        let mut buf = Vec::new();
        let mut eof = fill(&mut reader, &mut buf, chunk).map_err(io_err)?;
        let bom = buf.len() - without_bom(&buf).len();
        buf.drain(..bom);
        loop {
            match reading.plain_lines(&buf, eof)? {
                None => {
                    reading.csv_records(std::io::Cursor::new(buf).chain(reader))?;
                    break;
                }
                Some(taken) => {
                    buf.drain(..taken);
                }
            }
            if eof {
                break;
            }
            eof = fill(&mut reader, &mut buf, chunk).map_err(io_err)?;
        }
        reading.finish()
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Bytes read from the input at a time.
const CHUNK: u64 = 1 << 22;

/// Appends up to `chunk` bytes to `buf`; true when the input has ended.
fn fill(reader: &mut impl Read, buf: &mut Vec<u8>, chunk: u64) -> std::io::Result<bool> {
    buf.reserve(chunk as usize);
    let n = reader.by_ref().take(chunk).read_to_end(buf)?;
    Ok((n as u64) < chunk)
}

/// The header, then every record, into per-column builders.
struct Reading<'s> {
    spec: Option<&'s FeatureSpec>,
    source: &'s str,
    header: Vec<String>,
    /// (name, index in the record, builder), set up by the header.
    cols: Option<Vec<(String, usize, Builder)>>,
    rows: u64,
}

/// The text after a UTF-8 byte order mark, which the csv crate drops too.
fn without_bom(text: &[u8]) -> &[u8] {
    text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text)
}

impl<'s> Reading<'s> {
    fn new(spec: Option<&'s FeatureSpec>, source: &'s str) -> Self {
        Self {
            spec,
            source,
            header: Vec::new(),
            cols: None,
            rows: 0,
        }
    }

    /// The whole lines of `text` (all of it when `end`), if it is plain: how many bytes
    /// were taken, or `None` (nothing read) when the text has a quote or carriage return.
    fn plain_lines(&mut self, text: &[u8], end: bool) -> Result<Option<usize>> {
        if !plain::is_plain(text) {
            return Ok(None);
        }
        let complete = match (end, memchr::memrchr(b'\n', text)) {
            (true, _) => text.len(),
            (false, Some(i)) => i + 1,
            (false, None) => 0,
        };
        let mut lines = plain::Lines::new(&text[..complete]);
        if self.cols.is_none() {
            let mut cells = Vec::new();
            if lines.next_record(&mut cells) {
                self.record(cells.len(), |i| cells[i])?;
            }
        }
        let Some(mut cols) = self.cols.take() else {
            return Ok(Some(complete));
        };
        // After the header, each cell goes straight to the builder of the column that
        // reads its field, with no record assembled in between.
        let mut target = vec![None; self.header.len()];
        for (c, (_, idx, _)) in cols.iter().enumerate() {
            target[*idx] = Some(c);
        }
        let mut result = Ok(());
        while result.is_ok() {
            let mut failed = None;
            let n = lines.next_record_each(|field, cell| {
                if let Some(&Some(c)) = target.get(field)
                    && let Err(message) = cols[c].2.push(cell)
                {
                    failed.get_or_insert((field, message));
                }
            });
            let Some(n) = n else { break };
            self.rows += 1;
            result = self.check_length(n).and_then(|()| match failed {
                Some((field, message)) => Err(self.cell_error(field, message)),
                None => Ok(()),
            });
        }
        self.cols = Some(cols);
        result?;
        Ok(Some(complete))
    }

    /// Every record of `text` by the csv crate. Record lengths are checked against the
    /// header by [`Reading::record`], whichever reader split the header.
    fn csv_records(&mut self, text: impl Read) -> Result<()> {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text);
        let mut record = csv::ByteRecord::new();
        while rdr.read_byte_record(&mut record).map_err(|e| Error::Csv {
            source_name: self.source.to_string(),
            message: e.to_string(),
        })? {
            self.record(record.len(), |i| &record[i])?;
        }
        Ok(())
    }

    /// One record of `n` cells.
    fn record<'c>(&mut self, n: usize, cell: impl Fn(usize) -> &'c [u8]) -> Result<()> {
        if self.cols.is_none() {
            self.header = (0..n)
                .map(|i| String::from_utf8_lossy(cell(i)).trim().to_string())
                .collect();
            self.cols = Some(self.columns()?);
            return Ok(());
        }
        self.rows += 1;
        self.check_length(n)?;
        let cols = self.cols.as_mut().expect("the header was read");
        let failed = cols
            .iter_mut()
            .find_map(|(_, idx, b)| b.push(cell(*idx)).err().map(|m| (*idx, m)));
        match failed {
            Some((field, message)) => Err(self.cell_error(field, message)),
            None => Ok(()),
        }
    }

    /// The current row has `n` fields: an error unless the header has as many.
    fn check_length(&self, n: usize) -> Result<()> {
        if n == self.header.len() {
            return Ok(());
        }
        Err(Error::Csv {
            source_name: self.source.to_string(),
            message: format!(
                "row {}: {n} fields where the header has {}",
                self.rows,
                self.header.len()
            ),
        })
    }

    /// A bad cell in field `field` of the current row.
    fn cell_error(&self, field: usize, message: String) -> Error {
        Error::Cell {
            source_name: self.source.to_string(),
            row: self.rows,
            column: self.header[field].clone(),
            message,
        }
    }

    /// The columns to read: the spec's features by their CSV column, or every column.
    fn columns(&self) -> Result<Vec<(String, usize, Builder)>> {
        let header = &self.header;
        match self.spec {
            Some(spec) => spec
                .features
                .iter()
                .map(|def| {
                    let idx = header
                        .iter()
                        .position(|h| h == def.column())
                        .ok_or_else(|| Error::MissingColumn {
                            source_name: self.source.to_string(),
                            column: def.column().to_string(),
                        })?;
                    Ok((
                        def.name.clone(),
                        idx,
                        Builder::new(Mode::Declared(def.clone())),
                    ))
                })
                .collect(),
            None => Ok(header
                .iter()
                .enumerate()
                .map(|(i, h)| (h.clone(), i, Builder::new(Mode::Inferred)))
                .collect()),
        }
    }

    fn finish(mut self) -> Result<Frame> {
        if self.cols.is_none() {
            // No header at all: an empty file.
            self.cols = Some(self.columns()?);
        }
        let columns = self
            .cols
            .unwrap_or_default()
            .into_iter()
            .map(|(name, _, b)| Column {
                name,
                data: b.finish(),
            })
            .collect();
        Ok(Frame {
            columns,
            rows: self.rows,
        })
    }
}

/// How a number reads as a category or class label, everywhere in driftline: integral
/// values without a decimal point (`7.0` → `"7"`), others as Rust prints them.
pub fn number_label(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// A cell as a numeric column reads it: a finite number, or a category that parses as one.
pub fn as_number(v: &FeatureValue) -> Option<f64> {
    match v {
        FeatureValue::Number(x) if x.is_finite() => Some(*x),
        FeatureValue::Category(c) => c.trim().parse().ok().filter(|x: &f64| x.is_finite()),
        _ => None,
    }
}

/// A cell as a categorical column reads it: its label (a number by its shortest form).
pub fn as_label(v: &FeatureValue) -> Option<Cow<'_, str>> {
    match v {
        FeatureValue::Category(c) => Some(Cow::Borrowed(c)),
        FeatureValue::Number(x) if x.is_finite() => Some(Cow::Owned(number_label(*x))),
        _ => None,
    }
}

/// Exact powers of ten as `f64` (10^22 is the last one a double holds exactly).
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The common shape of a number cell, `[+-]digits[.digits]` with at most 15 digits, without
/// the general parser; `None` for anything else (which `str::parse` then decides).
///
/// Exact: the digits are an integer below 2^53 and the divisor a power of ten up to 10^15,
/// both exactly representable, and one IEEE division is correctly rounded, so the result
/// is the double nearest the decimal, as `str::parse` gives (Clinger's fast path).
fn parse_decimal(cell: &[u8]) -> Option<f64> {
    let (negative, digits) = match cell.first()? {
        b'-' => (true, &cell[1..]),
        b'+' => (false, &cell[1..]),
        _ => (false, cell),
    };
    // The digit runs before and after the point, each in a tight loop (no per-byte
    // dispatch): (index past the run, mantissa with the run's digits appended).
    let run = |mut i: usize, mut mantissa: u64| {
        while let Some(d) = digits
            .get(i)
            .map(|b| b.wrapping_sub(b'0'))
            .filter(|d| *d < 10)
        {
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
            i += 1;
        }
        (i, mantissa)
    };
    let (mut i, mut mantissa) = run(0, 0);
    let whole = i;
    if digits.get(i) == Some(&b'.') {
        (i, mantissa) = run(i + 1, mantissa);
    }
    let decimals = i.saturating_sub(whole + 1);
    let count = whole + decimals;
    if i != digits.len() || count == 0 || count > 15 {
        return None;
    }
    let x = mantissa as f64 / POW10[decimals];
    Some(if negative { -x } else { x })
}

/// Numbers the fast path leaves to `str::parse` (17-digit shortest forms such as
/// `12.658579999999999` are common), remembered by their text: such columns repeat a few
/// hundred values, and a lookup is cheaper than a parse.
#[derive(Default)]
struct SlowNumbers(FxHashMap<Box<[u8]>, f64>);

impl SlowNumbers {
    /// Enough for the repeating values of a column; past it, cells are parsed every time.
    const CAPACITY: usize = 4096;

    fn get(&self, cell: &[u8]) -> Option<f64> {
        self.0.get(cell).copied()
    }

    fn remember(&mut self, cell: &[u8], x: f64) {
        if self.0.len() < Self::CAPACITY {
            self.0.insert(cell.into(), x);
        }
    }
}

/// A cell of at most seven bytes as one nonzero word: its bytes, and its length with the
/// top bit set in the top byte; mixed so that texts differing in any byte spread out.
#[inline]
fn short_key(cell: &[u8]) -> Option<u64> {
    let n = cell.len();
    // Assembled from (possibly overlapping) reads, not by copying into a buffer and
    // reading it back, which stalls the load behind the byte stores.
    let bytes = match n {
        0 => 0,
        1..=3 => {
            u64::from(cell[0])
                | u64::from(cell[n / 2]) << (8 * (n / 2))
                | u64::from(cell[n - 1]) << (8 * (n - 1))
        }
        4..=7 => {
            let word = |at: usize| {
                u64::from(u32::from_le_bytes(
                    cell[at..at + 4].try_into().expect("four bytes"),
                ))
            };
            word(0) | word(n - 4) << (8 * (n - 4))
        }
        _ => return None,
    };
    let k = (bytes | (0x80 | n as u64) << 56).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    Some(k ^ (k >> 29))
}

/// What the short cells of a column read as (a number or a label; missing included) and
/// how often each text occurred. Columns repeat a few hundred short texts (`1400`, `39.02`,
/// `UA`, `NA`) over thousands of rows, so after its first sight a cell costs one probe of
/// this table: no parse, no UTF-8 check, no string hashing, and at the end only the
/// distinct values are sorted. An open-addressing table of its own, keyed by one word:
/// with hashbrown in its place `driftline drift` took 8% longer.
struct ShortCells<T> {
    slots: Vec<Slot<T>>,
    len: usize,
}

#[derive(Default)]
struct Slot<T> {
    /// 0 for an empty slot ([`short_key`] is never 0).
    key: u64,
    count: u64,
    value: T,
}

impl<T: Default> Default for ShortCells<T> {
    fn default() -> Self {
        Self {
            slots: Self::empty(64),
            len: 0,
        }
    }
}

impl<T: Default> ShortCells<T> {
    /// Beyond this many distinct texts, new ones are read each time they occur.
    const CAPACITY: usize = 4096;

    fn empty(n: usize) -> Vec<Slot<T>> {
        (0..n).map(|_| Slot::default()).collect()
    }

    /// The slot holding `key`, or the empty one where it would go.
    #[inline]
    fn find(&self, key: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = key as usize & mask;
        loop {
            let k = self.slots[i].key;
            if k == key || k == 0 {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    /// Counts one more of a text seen before; false for a new text.
    #[inline]
    fn bump(&mut self, key: u64) -> bool {
        let i = self.find(key);
        let slot = &mut self.slots[i];
        slot.count += u64::from(slot.key == key);
        slot.key == key
    }

    /// Whether a new text can be remembered.
    fn has_room(&self) -> bool {
        self.len < Self::CAPACITY
    }

    /// Remembers a new text's reading (the caller checked [`ShortCells::has_room`]).
    fn insert(&mut self, key: u64, value: T) {
        if 2 * (self.len + 1) > self.slots.len() {
            let grown = Self::empty(2 * self.slots.len());
            let old = std::mem::replace(&mut self.slots, grown);
            for slot in old.into_iter().filter(|s| s.key != 0) {
                let i = self.find(slot.key);
                self.slots[i] = slot;
            }
        }
        let i = self.find(key);
        self.slots[i] = Slot {
            key,
            count: 1,
            value,
        };
        self.len += 1;
    }

    /// Each distinct reading and how many cells had it.
    fn into_counts(self) -> impl Iterator<Item = (T, u64)> {
        self.slots
            .into_iter()
            .filter(|s| s.key != 0)
            .map(|s| (s.value, s.count))
    }
}

/// A cell as text, or why it is not.
fn text(cell: &[u8]) -> std::result::Result<&str, String> {
    std::str::from_utf8(cell)
        .map_err(|_| format!("{:?} is not UTF-8", String::from_utf8_lossy(cell)))
}

/// Category counts while reading: hashed by label, sorted once at the end.
#[derive(Default)]
struct Tally(FxHashMap<String, u64>);

impl Tally {
    fn add(&mut self, label: &str, n: u64) {
        match self.0.get_mut(label) {
            Some(count) => *count += n,
            None => {
                self.0.insert(label.to_string(), n);
            }
        }
    }

    fn into_counts(self, missing: u64) -> CategoryCounts {
        CategoryCounts {
            counts: self.0.into_iter().collect(),
            missing,
        }
    }
}

/// What a cell reads as, borrowing its text.
#[derive(Clone, Copy)]
enum Value<'c> {
    Missing,
    Number(f64),
    Text(&'c str),
}

/// A [`Value`] kept in the cell table (owning its text).
#[derive(Default)]
enum Kept {
    #[default]
    Missing,
    Number(f64),
    Text(Box<str>),
}

impl From<Value<'_>> for Kept {
    fn from(r: Value<'_>) -> Self {
        match r {
            Value::Missing => Kept::Missing,
            Value::Number(x) => Kept::Number(x),
            Value::Text(t) => Kept::Text(t.into()),
        }
    }
}

/// How a column's cells are read.
enum Mode {
    /// As the spec declares: numbers (a non-number is an error) or labels.
    Declared(driftline_schemas::spec::FeatureDef),
    /// Numbers and labels as they come; the column is categorical if any present cell is
    /// not a number, numeric otherwise.
    Inferred,
}

/// One column while it is read.
struct Builder {
    mode: Mode,
    /// Short cells, by their text.
    short: ShortCells<Kept>,
    /// Long cells (and short ones past the table's capacity), as read.
    numbers: Vec<f64>,
    labels: Tally,
    missing: u64,
    slow: SlowNumbers,
}

impl Builder {
    fn new(mode: Mode) -> Self {
        Self {
            mode,
            short: ShortCells::default(),
            numbers: Vec::new(),
            labels: Tally::default(),
            missing: 0,
            slow: SlowNumbers::default(),
        }
    }

    /// One cell: a text seen before is only counted; a new one is read and kept.
    fn push(&mut self, cell: &[u8]) -> std::result::Result<(), String> {
        let cell = cell.trim_ascii();
        let key = short_key(cell);
        if key.is_some_and(|k| self.short.bump(k)) {
            return Ok(());
        }
        let value = self.read(cell)?;
        if let Some(k) = key
            && self.short.has_room()
        {
            self.short.insert(k, value.into());
            return Ok(());
        }
        match value {
            Value::Missing => self.missing += 1,
            Value::Number(x) => self.numbers.push(x),
            Value::Text(t) => self.labels.add(t, 1),
        }
        Ok(())
    }

    /// What a cell reads as, by the column's mode and the spec's missing rule. A cell of the
    /// common number shape is parsed without being checked as UTF-8 (it is ASCII).
    fn read<'c>(&mut self, cell: &'c [u8]) -> std::result::Result<Value<'c>, String> {
        let def = match &self.mode {
            Mode::Declared(def) if def.kind == Kind::Categorical => {
                let text = text(cell)?;
                return Ok(if FeatureSpec::is_missing(text) {
                    Value::Missing
                } else {
                    Value::Text(text)
                });
            }
            Mode::Declared(def) => Some(def),
            Mode::Inferred => None,
        };
        if let Some(x) = parse_decimal(cell).or_else(|| self.slow.get(cell)) {
            return Ok(Value::Number(x));
        }
        let text = text(cell)?;
        if FeatureSpec::is_missing(text) {
            return Ok(Value::Missing);
        }
        let x = match def {
            Some(def) => FeatureSpec::parse_number(def, text)?,
            None => match text.parse::<f64>().ok().filter(|x| x.is_finite()) {
                Some(x) => x,
                None => return Ok(Value::Text(text)),
            },
        };
        self.slow.remember(cell, x);
        Ok(Value::Number(x))
    }

    fn finish(self) -> ColumnData {
        let Builder {
            mode,
            short,
            mut numbers,
            mut labels,
            mut missing,
            ..
        } = self;
        let counts: Vec<(Kept, u64)> = short.into_counts().collect();
        let categorical = match &mode {
            Mode::Declared(def) => def.kind == Kind::Categorical,
            Mode::Inferred => {
                !labels.0.is_empty() || counts.iter().any(|(v, _)| matches!(v, Kept::Text(_)))
            }
        };
        if categorical {
            // Numbers in a categorical column are labelled by their shortest form.
            for x in numbers {
                labels.add(&number_label(x), 1);
            }
            for (value, n) in counts {
                match value {
                    Kept::Missing => missing += n,
                    Kept::Number(x) => labels.add(&number_label(x), n),
                    Kept::Text(t) => labels.add(&t, n),
                }
            }
            return ColumnData::Categorical(labels.into_counts(missing));
        }
        let mut distinct = Vec::with_capacity(counts.len());
        for (value, n) in counts {
            match value {
                Kept::Number(x) => distinct.push((x, n)),
                Kept::Missing | Kept::Text(_) => missing += n,
            }
        }
        let values = if numbers.is_empty() {
            SortedSample::from_counts(distinct)
        } else {
            for (x, n) in distinct {
                numbers.extend(std::iter::repeat_n(x, n as usize));
            }
            SortedSample::from_unsorted(numbers)
        };
        ColumnData::Numeric { values, missing }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Features `x` (numeric) and `colour` (categorical, read from column `c`).
    const SPEC: &str = include_str!("../../../../tests/fixtures/toy.toml");

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
        let csv = "t,x,c,y\n1,100,7,3\n2,,8,4\n";
        let f = Frame::from_reader(csv.as_bytes(), Some(&spec), "t.csv").unwrap();
        let names: Vec<_> = f.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["x", "colour"]);
        assert_eq!(f.columns[1].data.kind(), FeatureKind::Categorical);
        assert_eq!(f.columns[0].data.missing(), 1);
    }

    #[test]
    fn a_bad_cell_or_absent_column_is_an_error_naming_it() {
        let spec = FeatureSpec::from_toml(SPEC).unwrap();
        let err = Frame::from_reader("x,c\nfar,7\n".as_bytes(), Some(&spec), "c.csv")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.csv") && err.contains("row 1") && err.contains("column `x`"),
            "{err}"
        );
        let err = Frame::from_reader("x\n1\n".as_bytes(), Some(&spec), "c.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no column `c`"), "{err}");
        let err = Frame::from_reader("a,b\n1\n".as_bytes(), None, "c.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.csv"), "{err}");
    }

    /// What the `csv` crate alone reads (a carriage return sends the whole text to it).
    fn via_csv_crate(text: &str, spec: Option<&FeatureSpec>) -> Frame {
        let crlf = text.replace('\n', "\r\n");
        Frame::from_reader(crlf.as_bytes(), spec, "t.csv").unwrap()
    }

    #[test]
    fn the_plain_splitter_and_the_csv_crate_read_the_same_frame() {
        let spec = FeatureSpec::from_toml(SPEC).unwrap();
        let text = "t,x,c,y\n1,100,7,3\n2,,8,4\n\n3,-0.25,x,5\n4, 12.658579999999999 ,NA,6\n";
        for chunk in [1, 2, 7, 64, CHUNK] {
            for spec in [None, Some(&spec)] {
                let plain = Frame::from_chunks(text.as_bytes(), spec, "t.csv", chunk).unwrap();
                assert_eq!(plain, via_csv_crate(text, spec), "chunk {chunk}");
                assert_eq!(plain.rows, 4);
            }
        }
        // A quote in a later chunk hands the rest to the csv crate mid-file.
        let quoted = format!("{text}5,\"1,000\",\"a, b\",7\n6,3,y,8\n");
        let f = Frame::from_chunks(quoted.as_bytes(), None, "t.csv", 16).unwrap();
        assert_eq!(f, via_csv_crate(&quoted, None));
        let ColumnData::Categorical(m) = &f.column("c").unwrap().data else {
            panic!()
        };
        assert_eq!(m.counts["a, b"], 1);
        // A byte order mark is not part of the first column's name.
        let f = Frame::from_reader("\u{feff}a,b\n1,2\n".as_bytes(), None, "t.csv").unwrap();
        assert_eq!(f.columns[0].name, "a");
    }

    #[test]
    fn a_record_with_the_wrong_number_of_fields_is_an_error_naming_its_row() {
        for text in ["a,b\n1,2\n3\n", "a,b\r\n1,2\r\n3,4,5\r\n"] {
            let err = Frame::from_chunks(text.as_bytes(), None, "t.csv", 4)
                .unwrap_err()
                .to_string();
            assert!(err.contains("t.csv") && err.contains("row 2"), "{err}");
        }
    }

    #[test]
    fn the_number_fast_path_agrees_with_the_standard_parser() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut fast = 0;
        for _ in 0..200_000 {
            let r = next();
            let digits = 1 + (r % 18) as usize;
            let mut cell: String = (0..digits)
                .map(|i| char::from(b'0' + (next() >> (i % 8)) as u8 % 10))
                .collect();
            if r & 0x100 != 0 {
                let dot = (r >> 9) as usize % (digits + 1);
                cell.insert(dot, '.');
            }
            match (r >> 20) % 4 {
                0 => cell.insert(0, '-'),
                1 => cell.insert(0, '+'),
                _ => {}
            }
            let expected = cell.parse::<f64>().ok();
            if let Some(x) = parse_decimal(cell.as_bytes()) {
                fast += 1;
                assert_eq!(Some(x.to_bits()), expected.map(f64::to_bits), "{cell}");
            }
        }
        assert!(fast > 100_000, "the fast path took only {fast} cells");
        for cell in [
            "", "-", "+", ".", "1e5", "1.2.3", "inf", "NaN", "0x10", "1_000", "--1",
        ] {
            assert_eq!(parse_decimal(cell.as_bytes()), None, "{cell}");
        }
    }

    #[test]
    fn short_cell_keys_are_distinct_and_never_zero() {
        // Every text of up to five bytes over a number-like alphabet, and some others.
        let alphabet = b"0129.-";
        let mut texts: Vec<Vec<u8>> = vec![Vec::new()];
        let mut frontier = texts.clone();
        for _ in 0..5 {
            frontier = frontier
                .iter()
                .flat_map(|t| {
                    alphabet.iter().map(move |&b| {
                        let mut t = t.clone();
                        t.push(b);
                        t
                    })
                })
                .collect();
            texts.extend(frontier.iter().cloned());
        }
        texts.extend([
            b"\0".to_vec(),
            b"\0\0".to_vec(),
            b"1234567".to_vec(),
            b"\xff\xff\xff\xff\xff\xff\xff".to_vec(),
        ]);
        let keys: std::collections::HashSet<u64> =
            texts.iter().map(|t| short_key(t).unwrap()).collect();
        assert_eq!(keys.len(), texts.len());
        assert!(!keys.contains(&0));
        assert_eq!(short_key(b"12345678"), None);
    }

    #[test]
    fn columns_with_more_distinct_texts_than_the_table_holds_read_the_same() {
        // 6,000 distinct short numbers and labels, each twice, with missing cells: past
        // the table's capacity cells are read one by one, and nothing is lost or doubled.
        let spec = FeatureSpec::from_toml(SPEC).unwrap();
        let mut csv = String::from("t,x,c,y\n");
        for round in 0..2 {
            for i in 0..6_000 {
                csv.push_str(&format!("{round},{},c{i},0\n", i as f64 / 4.0));
            }
            csv.push_str(&format!("{round},NA,,0\n"));
        }
        let mut expected: Vec<f64> = (0..6_000).flat_map(|i| [i as f64 / 4.0; 2]).collect();
        expected.sort_by(f64::total_cmp);
        // With the spec's kinds, and inferred (the labels' column is read as text).
        for (spec, labels) in [(Some(&spec), "colour"), (None, "c")] {
            let f = Frame::from_reader(csv.as_bytes(), spec, "t.csv").unwrap();
            assert_eq!(
                f.column("x").unwrap().data,
                ColumnData::Numeric {
                    values: SortedSample::from_unsorted(expected.clone()),
                    missing: 2
                }
            );
            let ColumnData::Categorical(m) = &f.column(labels).unwrap().data else {
                panic!()
            };
            assert_eq!((m.counts.len(), m.total(), m.missing), (6_000, 12_000, 2));
            assert!(m.counts.values().all(|n| *n == 2));
        }
        // A column of numbers that ends in one long text is categorical, with every cell.
        let mut csv = String::from("a\n");
        for i in 0..5_000 {
            csv.push_str(&format!("{}\n", i % 4_500));
        }
        csv.push_str("not a number at all\n");
        let f = Frame::from_reader(csv.as_bytes(), None, "t.csv").unwrap();
        let ColumnData::Categorical(a) = &f.columns[0].data else {
            panic!()
        };
        assert_eq!((a.counts.len(), a.total()), (4_501, 5_001));
        assert_eq!((a.counts["0"], a.counts["4499"]), (2, 1));
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
