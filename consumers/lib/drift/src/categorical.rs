//! Drift statistics of a categorical feature: chi-square test of homogeneity, Jensen-Shannon
//! distance and PSI over categories.
//!
//! Inputs are category counts ([`CategoryCounts`]), which an online window can keep
//! incrementally. Categories are the union of both sides: a category the reference never
//! saw ("unseen") is a bin with a reference count of 0, and one that vanished from the
//! current window a bin with a current count of 0; both are listed in the result. Missing
//! values are counted apart and excluded from every statistic (their share is reported, and
//! the decision policy can act on its change). Nothing here does I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};

use crate::numeric;

/// How often each category occurred, and how many values were missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryCounts {
    pub counts: BTreeMap<String, u64>,
    pub missing: u64,
}

impl CategoryCounts {
    /// Counts labels; `None` is a missing value.
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = Option<&'a str>>) -> Self {
        let mut c = Self::default();
        for label in labels {
            c.add(label);
        }
        c
    }

    pub fn add(&mut self, label: Option<&str>) {
        self.add_n(label, 1);
    }

    pub fn add_n(&mut self, label: Option<&str>, n: u64) {
        match label {
            Some(l) => match self.counts.get_mut(l) {
                Some(c) => *c += n,
                None => {
                    self.counts.insert(l.to_string(), n);
                }
            },
            None => self.missing += n,
        }
    }

    /// Non-missing values.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Both sides' counts over the union of their categories (sorted by label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aligned {
    pub categories: Vec<String>,
    pub reference: Vec<u64>,
    pub current: Vec<u64>,
}

/// Aligns two count tables on the union of their categories.
pub fn align(reference: &CategoryCounts, current: &CategoryCounts) -> Aligned {
    let mut union: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (k, v) in &reference.counts {
        union.entry(k).or_default().0 += v;
    }
    for (k, v) in &current.counts {
        union.entry(k).or_default().1 += v;
    }
    // A category listed with a zero count on both sides is no category.
    union.retain(|_, (r, c)| *r + *c > 0);
    let mut a = Aligned {
        categories: Vec::new(),
        reference: Vec::new(),
        current: Vec::new(),
    };
    for (k, (r, c)) in union {
        a.categories.push(k.to_string());
        a.reference.push(r);
        a.current.push(c);
    }
    a
}

/// A chi-square test of homogeneity of the 2 x k table [reference; current].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Chi2 {
    pub statistic: f64,
    pub dof: u64,
    pub p: f64,
}

/// `scipy.stats.chi2_contingency([reference, current])` with SciPy's default
/// `correction=True`: Pearson's statistic against the expected counts
/// `row_total * column_total / total`, with Yates' continuity correction (each observed
/// count moved up to 0.5 toward its expected count) only when dof == 1, i.e. with two
/// categories. One category gives dof 0, statistic 0 and p 1, as in SciPy. `None` when the
/// lengths differ, there are no categories, or a side has no values (SciPy raises: an
/// expected count would be 0).
pub fn chi2_contingency(reference: &[u64], current: &[u64]) -> Option<Chi2> {
    if reference.len() != current.len() || reference.is_empty() {
        return None;
    }
    // Columns empty on both sides carry nothing (and would make an expected count 0).
    let cols: Vec<(f64, f64)> = reference
        .iter()
        .zip(current)
        .filter(|(r, c)| **r + **c > 0)
        .map(|(r, c)| (*r as f64, *c as f64))
        .collect();
    let row_r: f64 = cols.iter().map(|c| c.0).sum();
    let row_c: f64 = cols.iter().map(|c| c.1).sum();
    let total = row_r + row_c;
    if row_r == 0.0 || row_c == 0.0 || cols.is_empty() {
        return None;
    }
    let dof = (cols.len() - 1) as u64;
    if dof == 0 {
        return Some(Chi2 {
            statistic: 0.0,
            dof,
            p: 1.0,
        });
    }
    let mut statistic = 0.0;
    for (r, c) in &cols {
        let col = r + c;
        for (obs, row) in [(*r, row_r), (*c, row_c)] {
            let exp = row * col / total;
            let obs = if dof == 1 {
                let diff = exp - obs;
                obs + diff.abs().min(0.5) * diff.signum()
            } else {
                obs
            };
            statistic += (obs - exp) * (obs - exp) / exp;
        }
    }
    Some(Chi2 {
        statistic,
        dof,
        p: chi2_sf(statistic, dof as f64),
    })
}

/// Every categorical statistic of one feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalStats {
    pub psi: Option<f64>,
    pub jensen_shannon: Option<f64>,
    pub chi2: Option<Chi2>,
    /// Categories of either side.
    pub categories: usize,
    /// Categories in the current window the reference never saw.
    pub unseen: Vec<String>,
    /// Their share of the current window's non-missing values.
    pub unseen_share: f64,
    /// Reference categories absent from the current window.
    pub vanished: Vec<String>,
}

/// Compares two count tables (see the module doc for unseen categories and missing values).
pub fn compare(reference: &CategoryCounts, current: &CategoryCounts) -> CategoricalStats {
    let a = align(reference, current);
    let mut unseen = Vec::new();
    let mut vanished = Vec::new();
    let mut unseen_count = 0;
    for ((k, r), c) in a.categories.iter().zip(&a.reference).zip(&a.current) {
        if *r == 0 {
            unseen.push(k.clone());
            unseen_count += c;
        } else if *c == 0 {
            vanished.push(k.clone());
        }
    }
    let cur_total: u64 = a.current.iter().sum();
    CategoricalStats {
        psi: numeric::psi(&a.reference, &a.current),
        jensen_shannon: numeric::jensen_shannon(&a.reference, &a.current),
        chi2: chi2_contingency(&a.reference, &a.current),
        categories: a.categories.len(),
        unseen,
        unseen_share: if cur_total == 0 {
            0.0
        } else {
            unseen_count as f64 / cur_total as f64
        },
        vanished,
    }
}

/// The chi-square distribution's survival function, `scipy.stats.chi2.sf(x, k)`, from
/// statrs (its regularised upper incomplete gamma Q(k/2, x/2)); NaN for no degrees of
/// freedom, as SciPy.
pub fn chi2_sf(x: f64, k: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    match ChiSquared::new(k) {
        Ok(d) if x > 0.0 => d.sf(x),
        Ok(_) => 1.0,
        Err(_) => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chi2_sf_of_two_degrees_is_an_exponential() {
        // chi2 with 2 dof: sf(x) = exp(-x/2).
        for x in [0.1, 1.0, 5.0, 50.0, 500.0, 1300.0] {
            let want = (-x / 2.0f64).exp();
            let got = chi2_sf(x, 2.0);
            assert!(((got - want) / want).abs() < 1e-12, "{x}: {got} vs {want}");
        }
        assert_eq!(chi2_sf(0.0, 3.0), 1.0);
        assert!(chi2_sf(1.0, 0.0).is_nan());
    }

    #[test]
    fn a_single_category_has_no_degrees_of_freedom() {
        let c = chi2_contingency(&[10], &[20]).unwrap();
        assert_eq!((c.statistic, c.dof, c.p), (0.0, 0, 1.0));
    }

    #[test]
    fn an_empty_side_gives_no_chi2_instead_of_panicking() {
        assert_eq!(chi2_contingency(&[0, 0], &[3, 4]), None);
        assert_eq!(chi2_contingency(&[], &[]), None);
        assert_eq!(chi2_contingency(&[1], &[1, 2]), None);
        let empty = CategoryCounts::default();
        let some = CategoryCounts::from_labels([Some("a"), None]);
        let st = compare(&empty, &some);
        assert_eq!((st.psi, st.jensen_shannon, st.chi2), (None, None, None));
        assert_eq!(st.unseen, vec!["a".to_string()]);
    }

    #[test]
    fn unseen_and_vanished_categories_are_listed_and_missing_values_excluded() {
        let r = CategoryCounts::from_labels([Some("a"), Some("a"), Some("b"), None]);
        let c = CategoryCounts::from_labels([Some("a"), Some("c"), Some("c"), None, None]);
        assert_eq!((r.missing, c.missing), (1, 2));
        let st = compare(&r, &c);
        assert_eq!(st.categories, 3);
        assert_eq!(st.unseen, vec!["c".to_string()]);
        assert_eq!(st.vanished, vec!["b".to_string()]);
        assert!((st.unseen_share - 2.0 / 3.0).abs() < 1e-15);
        assert!(st.psi.unwrap() > 0.0 && st.jensen_shannon.unwrap() > 0.0);
        assert_eq!(st.chi2.unwrap().dof, 2);
    }
}
