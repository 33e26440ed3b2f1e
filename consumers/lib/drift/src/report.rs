//! Two frames compared column by column: the statistics, the policy's verdicts, and a
//! report that serialises to the `driftline drift --format json` shape or renders as a
//! plain table.
//!
//! ```text
//! {"columns": {"<name>": {"kind": "numeric"|"categorical", "psi": x, "ks_d": x, "ks_p": x,
//!   "wasserstein_norm": x, "jensen_shannon": x, "chi2_p": x, "drifted": bool, ...}, ...},
//!  "share_drifted": x, "drifted": bool, ...,
//!  "multivariate": {"signal": {"name": "reconstruction_error", "value": x, "threshold": x,
//!    "fired": bool, "method": "..."}, "carried_by": [["<name>", share], ...]}}
//! ```
//!
//! The multivariate part is there when the caller ran the check ([`DriftReport::with_multivariate`]:
//! `driftline drift` with a spec).
//!
//! A statistic that does not apply to the column's kind (KS and Wasserstein for a
//! categorical column, chi-square for a numeric one) or cannot be computed (an empty or
//! all-missing side, a constant reference for Wasserstein) is `null`.

use driftline_schemas::events::{FeatureDrift, FeatureKind};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::calibrate::NullCurve;
use crate::frame::{ColumnData, Frame};
use crate::multivariate;
use crate::numeric::{Binning, SortedSample};
use crate::policy::{DriftPolicy, FeatureEvidence, Reason};
use crate::quality::Count;
use crate::{Error, Result, categorical, numeric};
use driftline_schemas::events::Signal;

/// How to compare.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CompareOptions {
    pub binning: Binning,
    pub policy: DriftPolicy,
    /// Per column, how its distance varies between sub-windows of the reference (from its
    /// rows in order): its line at the current side's size. A column without one is
    /// judged by the policy's fixed lines.
    #[serde(skip)]
    pub nulls: BTreeMap<String, NullCurve>,
}

/// One column's statistics and verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnReport {
    #[serde(skip)]
    pub name: String,
    #[serde(serialize_with = "kind_lowercase")]
    pub kind: FeatureKind,
    pub psi: Option<f64>,
    pub ks_d: Option<f64>,
    pub ks_p: Option<f64>,
    pub wasserstein_norm: Option<f64>,
    pub jensen_shannon: Option<f64>,
    pub chi2_p: Option<f64>,
    pub drifted: bool,
    /// What decided `drifted`.
    pub reason: Reason,
    pub reference_count: u64,
    pub current_count: u64,
    pub reference_missing_share: f64,
    /// The current window's share of missing values.
    pub missing_share: f64,
    /// Categorical: current categories the reference never saw, and their share of the
    /// current window's non-missing values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unseen_categories: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unseen_share: Option<f64>,
    /// The checks behind `drifted`: data quality, then the rule that decided.
    pub signals: Vec<Signal>,
}

impl ColumnReport {
    /// The column as it goes into a `DriftReport` event on driftline.drift.
    pub fn to_feature_drift(&self) -> FeatureDrift {
        FeatureDrift {
            name: self.name.clone(),
            kind: self.kind,
            psi: self.psi,
            ks_d: self.ks_d,
            ks_p: self.ks_p,
            wasserstein_norm: self.wasserstein_norm,
            jensen_shannon: self.jensen_shannon,
            chi2_p: self.chi2_p,
            missing_share: self.missing_share,
            drifted: self.drifted,
            signals: self.signals.clone(),
        }
    }
}

fn kind_lowercase<S: Serializer>(kind: &FeatureKind, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(match kind {
        FeatureKind::Numeric => "numeric",
        FeatureKind::Categorical => "categorical",
    })
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReport {
    /// In column order; serialised as a JSON object keyed by column name.
    #[serde(serialize_with = "columns_as_map")]
    pub columns: Vec<ColumnReport>,
    pub share_drifted: f64,
    pub drifted: bool,
    pub binning: Binning,
    /// Columns present in only one of the two files (compared without a spec).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unmatched_columns: Vec<String>,
    /// The features together: the PCA reconstruction error (with a spec).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multivariate: Option<multivariate::Check>,
}

fn columns_as_map<S: Serializer>(
    cols: &[ColumnReport],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(cols.len()))?;
    for c in cols {
        m.serialize_entry(&c.name, c)?;
    }
    m.end()
}

/// Statistics of one feature from its two sides, judged as one of `features` compared
/// together. A numeric column compared with a categorical one is compared as categorical.
pub fn compare_column(
    name: &str,
    reference: &ColumnData,
    current: &ColumnData,
    options: &CompareOptions,
    features: usize,
) -> ColumnReport {
    let share = |missing: u64, count: u64| {
        let all = missing + count;
        if all == 0 {
            0.0
        } else {
            missing as f64 / all as f64
        }
    };
    let mut e = FeatureEvidence {
        reference_count: reference.count(),
        current_count: current.count(),
        reference_missing_share: share(reference.missing(), reference.count()),
        current_missing_share: share(current.missing(), current.count()),
        quality: vec![Count::missing(
            (reference.missing(), reference.count()),
            (current.missing(), current.count()),
        )],
        null: options.nulls.get(name).copied(),
        ..Default::default()
    };
    let mut ks_d = None;
    let mut unseen = None;
    let kind = match (reference, current) {
        (ColumnData::Numeric { values: r, .. }, ColumnData::Numeric { values: c, .. }) => {
            let st = numeric::compare(r.view(), c.view(), options.binning);
            e.psi = st.psi;
            e.ks_p = st.ks_p;
            e.wasserstein_norm = st.wasserstein_norm;
            e.jensen_shannon = st.jensen_shannon;
            ks_d = st.ks_d;
            e.quality
                .extend(Count::out_of_range(r.as_slice(), c.as_slice()));
            FeatureKind::Numeric
        }
        _ => {
            let (r, c) = (reference.to_categorical(), current.to_categorical());
            let st = categorical::compare(&r, &c);
            e.quality.extend(Count::unseen(&r, &c));
            e.psi = st.psi;
            e.jensen_shannon = st.jensen_shannon;
            e.chi2_p = st.chi2.map(|c| c.p);
            unseen = Some((st.unseen, st.unseen_share));
            FeatureKind::Categorical
        }
    };
    let verdict = options.policy.feature(kind, &e, features);
    let (unseen_categories, unseen_share) = match unseen {
        Some((names, share)) => (Some(names), Some(share)),
        None => (None, None),
    };
    ColumnReport {
        name: name.to_string(),
        kind,
        psi: e.psi,
        ks_d,
        ks_p: e.ks_p,
        wasserstein_norm: e.wasserstein_norm,
        jensen_shannon: e.jensen_shannon,
        chi2_p: e.chi2_p,
        drifted: verdict.drifted,
        reason: verdict.reason,
        signals: verdict.signals(),
        reference_count: e.reference_count,
        current_count: e.current_count,
        reference_missing_share: e.reference_missing_share,
        missing_share: e.current_missing_share,
        unseen_categories,
        unseen_share,
    }
}

/// Compares every column the two frames share (by name, in the reference's order).
pub fn compare(
    reference: &Frame,
    current: &Frame,
    options: &CompareOptions,
) -> Result<DriftReport> {
    options.policy.validate()?;
    if let Binning::Quantile { bins: 0 } = options.binning {
        return Err(Error::Binning("quantile with 0 bins".into()));
    }
    let mut pairs = Vec::new();
    let mut unmatched = Vec::new();
    for rc in &reference.columns {
        match current.column(&rc.name) {
            Some(cc) => pairs.push((rc, cc)),
            None => unmatched.push(rc.name.clone()),
        }
    }
    // Columns are independent: spread them over the cores (a numeric KS p-value on large
    // samples is the costliest part).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Each thread takes the next column not yet taken: a column's cost depends on its data
    // (the p-value's series is long only for moderate drift), so a fixed split leaves one
    // thread waiting on another.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut columns: Vec<(usize, ColumnReport)> = std::thread::scope(|s| {
        let (pairs, next) = (&pairs, &next);
        let handles: Vec<_> = (0..threads.min(pairs.len()))
            .map(|_| {
                s.spawn(move || {
                    std::iter::from_fn(|| {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let (rc, cc) = pairs.get(i)?;
                        Some((
                            i,
                            compare_column(&rc.name, &rc.data, &cc.data, options, pairs.len()),
                        ))
                    })
                    .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a column comparison panicked"))
            .collect()
    });
    columns.sort_by_key(|(i, _)| *i);
    let columns: Vec<ColumnReport> = columns.into_iter().map(|(_, c)| c).collect();
    for cc in &current.columns {
        if reference.column(&cc.name).is_none() {
            unmatched.push(cc.name.clone());
        }
    }
    let drifted = columns.iter().filter(|c| c.drifted).count();
    let (share_drifted, drifted) = options.policy.dataset(drifted, columns.len());
    Ok(DriftReport {
        columns,
        share_drifted,
        drifted,
        binning: options.binning,
        unmatched_columns: unmatched,
        multivariate: None,
    })
}

/// A numeric column's data from raw values (NaN and infinities count as missing), for
/// callers that hold values rather than a CSV file.
pub fn numeric_column(values: Vec<f64>) -> ColumnData {
    let n = values.len();
    let values = SortedSample::from_unsorted(values);
    let missing = (n - values.len()) as u64;
    ColumnData::Numeric { values, missing }
}

impl DriftReport {
    /// With the multivariate check: the data set has drifted when it fires, whatever the
    /// share of drifted columns (as the monitor decides).
    pub fn with_multivariate(mut self, check: Option<multivariate::Check>) -> Self {
        self.drifted |= check.as_ref().is_some_and(|c| c.signal.fired);
        self.multivariate = check;
        self
    }

    /// The JSON that `driftline drift --format json` prints.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// A plain-text table, one row per column, and a summary line.
    pub fn render_table(&self) -> String {
        let header = [
            "column",
            "kind",
            "psi",
            "ks_d",
            "ks_p",
            "wass_norm",
            "js",
            "chi2_p",
            "missing",
            "drifted",
        ];
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
        let num = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
        let p = |v: Option<f64>| {
            v.map_or("-".to_string(), |x| {
                if x != 0.0 && x < 1e-3 {
                    format!("{x:.2e}")
                } else {
                    format!("{x:.4}")
                }
            })
        };
        for c in &self.columns {
            rows.push(vec![
                c.name.clone(),
                match c.kind {
                    FeatureKind::Numeric => "numeric".into(),
                    FeatureKind::Categorical => "categorical".into(),
                },
                num(c.psi),
                num(c.ks_d),
                p(c.ks_p),
                num(c.wasserstein_norm),
                num(c.jensen_shannon),
                p(c.chi2_p),
                format!("{:.1}%", c.missing_share * 100.0),
                if c.drifted {
                    format!("yes ({})", reason_text(&c.reason))
                } else {
                    "no".into()
                },
            ]);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for (ri, r) in rows.iter().enumerate() {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (cell, w))| {
                    if i < 2 || i + 1 == r.len() {
                        format!("{cell:<w$}")
                    } else {
                        format!("{cell:>w$}")
                    }
                })
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
            if ri == 0 {
                out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
                out.push('\n');
            }
        }
        let n_drifted = self.columns.iter().filter(|c| c.drifted).count();
        out.push_str(&format!(
            "\n{n_drifted} of {} columns drifted ({:.1}%); data set drifted: {} (binning: {})\n",
            self.columns.len(),
            self.share_drifted * 100.0,
            if self.drifted { "yes" } else { "no" },
            self.binning,
        ));
        if let Some(m) = &self.multivariate {
            let carried: Vec<String> = m
                .carried_by
                .iter()
                .take(3)
                .map(|(name, share)| format!("{name} {:.0}%", share * 100.0))
                .collect();
            out.push_str(&format!(
                "multivariate: {} {:.4} {} {:.4} ({}){}\n",
                m.signal.name,
                m.signal.value,
                if m.signal.fired { ">=" } else { "<" },
                m.signal.threshold,
                m.signal.method,
                if m.signal.fired {
                    format!("; drifted, carried by {}", carried.join(", "))
                } else {
                    String::new()
                }
            ));
        }
        if !self.unmatched_columns.is_empty() {
            out.push_str(&format!(
                "not compared (in one file only): {}\n",
                self.unmatched_columns.join(", ")
            ));
        }
        out
    }
}

fn reason_text(r: &Reason) -> String {
    match r {
        Reason::Rule {
            statistic,
            threshold,
            from_reference,
            ..
        } => {
            let op = if statistic.is_p_value() { "<" } else { ">=" };
            match from_reference {
                Some(_) => format!(
                    "{} {op} {threshold:.4}, from the reference",
                    statistic.name()
                ),
                None => format!("{} {op} {threshold}", statistic.name()),
            }
        }
        Reason::MissingShare { increase, .. } => format!("missing +{:.1}%", increase * 100.0),
        Reason::Quality {
            check, threshold, ..
        } => format!("{} >= {:.2}%", check.name(), threshold * 100.0),
        Reason::NoEvidence => "no evidence".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(csv: &str) -> Frame {
        Frame::from_reader(csv.as_bytes(), None, "t.csv").unwrap()
    }

    fn rows(f: impl Fn(usize) -> String, n: usize) -> String {
        (0..n).map(|i| f(i) + "\n").collect()
    }

    #[test]
    fn json_has_the_documented_shape_with_nulls_for_what_does_not_apply() {
        let r = frame(
            &("x,c,k,gone\n".to_string()
                + &rows(
                    |i| format!("{},{},5,{}", i % 50, ["a", "b"][i % 2], i),
                    2000,
                )),
        );
        let c = frame(
            &("x,c,k,gone\n".to_string()
                + &rows(
                    |i| format!("{},{},5,", i % 50 + 20, ["a", "b", "new"][i % 3]),
                    2000,
                )),
        );
        let report = compare(&r, &c, &CompareOptions::default()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        let x = &v["columns"]["x"];
        assert_eq!(x["kind"], "numeric");
        for k in ["psi", "ks_d", "ks_p", "wasserstein_norm", "jensen_shannon"] {
            assert!(x[k].is_f64(), "{k}: {x}");
        }
        assert!(x["chi2_p"].is_null());
        assert_eq!(x["drifted"], true);
        let cat = &v["columns"]["c"];
        assert_eq!(cat["kind"], "categorical");
        assert!(cat["ks_d"].is_null() && cat["wasserstein_norm"].is_null());
        assert!(cat["chi2_p"].is_f64());
        assert_eq!(cat["unseen_categories"], serde_json::json!(["new"]));
        // Constant column: no normalised Wasserstein, decided by PSI instead.
        let k = &v["columns"]["k"];
        assert!(k["wasserstein_norm"].is_null());
        assert_eq!(k["drifted"], false);
        // A column that went all-missing has drifted and has no statistics.
        let gone = &v["columns"]["gone"];
        assert_eq!(gone["missing_share"], 1.0);
        assert_eq!(gone["drifted"], true);
        assert!(gone["ks_d"].is_null() && gone["psi"].is_null());
        assert!(v["share_drifted"].is_f64());
        assert_eq!(v["drifted"], true);
        // Column order is the file's.
        let names: Vec<_> = v["columns"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(names.len(), 4);
        assert_eq!(
            report
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["x", "c", "k", "gone"]
        );
    }

    #[test]
    fn a_column_numeric_in_one_file_and_text_in_the_other_is_compared_as_categorical() {
        let r = frame("v\n1\n2\n2\n");
        let c = frame("v\n1\nunknown\n2\n");
        let report = compare(&r, &c, &CompareOptions::default()).unwrap();
        let col = &report.columns[0];
        assert_eq!(col.kind, FeatureKind::Categorical);
        assert_eq!(
            col.unseen_categories.as_deref(),
            Some(&["unknown".to_string()][..])
        );
    }

    #[test]
    fn columns_in_one_file_only_are_listed_not_compared() {
        let report = compare(
            &frame("a,b\n1,2\n"),
            &frame("a,c\n1,2\n"),
            &CompareOptions::default(),
        )
        .unwrap();
        assert_eq!(report.columns.len(), 1);
        assert_eq!(report.unmatched_columns, ["b", "c"]);
        assert!(report.render_table().contains("(in one file only): b, c"));
    }

    #[test]
    fn empty_files_compare_without_panicking() {
        let report = compare(&frame("a,b\n"), &frame("a,b\n"), &CompareOptions::default()).unwrap();
        assert_eq!((report.share_drifted, report.drifted), (0.0, false));
        assert!(report.columns.iter().all(|c| c.psi.is_none() && !c.drifted));
        let table = report.render_table();
        assert!(table.contains("0 of 2 columns drifted"), "{table}");
    }

    #[test]
    fn table_shows_one_row_per_column_and_the_verdict() {
        let r = frame(&("x\n".to_string() + &rows(|i| format!("{}", i % 100), 3000)));
        let c = frame(&("x\n".to_string() + &rows(|i| format!("{}", i % 100 + 30), 3000)));
        let t = compare(&r, &c, &CompareOptions::default())
            .unwrap()
            .render_table();
        let lines: Vec<_> = t.lines().collect();
        assert!(
            lines[0].starts_with("column") && lines[2].starts_with("x "),
            "{t}"
        );
        // A third of the values lie past the reference's largest: the quality check
        // decides before any distance is looked at.
        assert!(lines[2].contains("yes (out_of_range >= 0."), "{t}");
        assert!(t.contains("data set drifted: yes"), "{t}");
        // Squeezed inside the reference's range: the distance decides.
        let c = frame(&("x\n".to_string() + &rows(|i| format!("{}", 30 + i % 70), 3000)));
        let t = compare(&r, &c, &CompareOptions::default())
            .unwrap()
            .render_table();
        assert!(t.contains("yes (wasserstein_norm >= 0.1)"), "{t}");
    }

    #[test]
    fn converts_to_the_drift_event_shape() {
        let r = compare_column(
            "f",
            &numeric_column(vec![1.0, 2.0, f64::NAN]),
            &numeric_column(vec![1.0, 3.0]),
            &CompareOptions::default(),
            1,
        );
        let e = r.to_feature_drift();
        assert_eq!(
            (e.name.as_str(), e.kind, e.missing_share),
            ("f", FeatureKind::Numeric, 0.0)
        );
        assert_eq!(r.reference_missing_share, 1.0 / 3.0);
    }
}
