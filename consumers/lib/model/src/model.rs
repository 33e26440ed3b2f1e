//! A trained model: the encoder plus fitted parameters in driftline's own representation,
//! its bytes, and prediction.
//!
//! # Bytes
//!
//! [`FORMAT`] is `driftline-model/1+json`: a UTF-8 JSON object
//!
//! ```json
//! {"format": "driftline-model/1+json", "algorithm": "elastic-net",
//!  "hyper_parameters": {"penalty": "0.01", ...}, "trained_rows": 100000,
//!  "diagnostics": {"iterations": 12, "duality_gap": 0.003},
//!  "encoder": {"n_columns": 31, "features": [...]},
//!  "fitted": {"kind": "linear", "weights": [...], "intercept": 7.1}}
//! ```
//!
//! with `fitted` one of `linear` (weights, intercept: the value), `logistic` (classes,
//! weights, intercept: the log-odds of `classes[1]`), `multinomial` (classes, weights as a
//! row-major classes × columns matrix, intercepts: softmax scores) or `forest` (classes and
//! trees as parallel node arrays: `feature`, `threshold`, `left`, `right`, `leaf`, plus
//! `proba`, the class frequencies of each leaf (leaves × classes, row-major); a node whose
//! `left` is 0 is a leaf whose frequencies are row `leaf` of `proba`, otherwise a row goes
//! left when its column `feature` is `< threshold`; children always come after their
//! parent) or `boosted` (classes, empty for regression or two, `base` and trees as the
//! forest's, `proba` holding one value per leaf: the prediction, or the log-odds of
//! `classes[1]`, is `base` plus the leaf value of every tree). Floats are
//! written with enough digits to load bit-identical. Loading checks the format string
//! first, then every index and dimension, so bad bytes are an error, never a panic.

use std::cell::RefCell;
use std::collections::BTreeMap;

use driftline_schemas::events::{Features, Prediction};
use driftline_schemas::spec::TargetKind;
use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::encoder::Encoder;
use crate::{Error, Result};

/// The format of [`TrainedModel::to_bytes`], for `ModelPublished.model_format`.
pub const FORMAT: &str = "driftline-model/1+json";

/// Fitted parameters, independent of linfa's types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum Fitted {
    Linear {
        weights: Vec<f64>,
        intercept: f64,
    },
    Logistic {
        classes: Vec<String>,
        weights: Vec<f64>,
        intercept: f64,
    },
    Multinomial {
        classes: Vec<String>,
        weights: Vec<f64>,
        intercepts: Vec<f64>,
    },
    Forest {
        classes: Vec<String>,
        trees: Vec<Tree>,
    },
    Boosted {
        classes: Vec<String>,
        base: f64,
        trees: Vec<Tree>,
    },
}

/// What a tree's leaves hold.
#[derive(Debug, Clone, Copy)]
enum Leaves {
    /// A forest's: the class frequencies of `n` classes, summing to 1.
    Probabilities(usize),
    /// A boosted ensemble's: one finite value each.
    Values,
}

/// One decision tree as parallel node arrays (see the module docs).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(crate) struct Tree {
    pub feature: Vec<u32>,
    pub threshold: Vec<f64>,
    pub left: Vec<u32>,
    pub right: Vec<u32>,
    /// For a leaf, its row in `proba`; 0 for a split.
    pub leaf: Vec<u32>,
    /// Class frequencies of the training rows in each leaf: leaves × classes, row-major.
    pub proba: Vec<f64>,
}

impl Tree {
    /// The row of `proba` a row of features lands in.
    #[inline]
    pub(crate) fn leaf_for(&self, row: &[f64]) -> usize {
        let mut i = 0usize;
        loop {
            let left = self.left[i] as usize;
            if left == 0 {
                return self.leaf[i] as usize;
            }
            i = if row[self.feature[i] as usize] < self.threshold[i] {
                left
            } else {
                self.right[i] as usize
            };
        }
    }

    #[cfg(test)]
    pub(crate) fn validate_for_test(&self, n_columns: usize, n_classes: usize) {
        self.validate(n_columns, Leaves::Probabilities(n_classes))
            .unwrap();
    }

    #[cfg(test)]
    pub(crate) fn validate_values_for_test(&self, n_columns: usize) {
        self.validate(n_columns, Leaves::Values).unwrap();
    }

    /// Checks a decoded boosted tree (one finite value per leaf) over `n_columns` columns.
    pub(crate) fn validate_values(&self, n_columns: usize) -> std::result::Result<(), String> {
        self.validate(n_columns, Leaves::Values)
    }

    fn validate(&self, n_columns: usize, holds: Leaves) -> std::result::Result<(), String> {
        let n_classes = match holds {
            Leaves::Probabilities(k) => k,
            Leaves::Values => 1,
        };
        let n = self.left.len();
        if n == 0 || n > u32::MAX as usize {
            return Err(format!("a tree has {n} nodes"));
        }
        if [
            self.feature.len(),
            self.threshold.len(),
            self.right.len(),
            self.leaf.len(),
        ]
        .iter()
        .any(|len| *len != n)
        {
            return Err("a tree's node arrays differ in length".into());
        }
        if n_classes == 0 || !self.proba.len().is_multiple_of(n_classes) {
            return Err(format!(
                "{} leaf probabilities for {n_classes} classes",
                self.proba.len()
            ));
        }
        let leaves = self.proba.len() / n_classes;
        for i in 0..n {
            let (l, r) = (self.left[i] as usize, self.right[i] as usize);
            if l == 0 {
                if self.leaf[i] as usize >= leaves {
                    return Err(format!(
                        "node {i} points at leaf {} of {leaves}",
                        self.leaf[i]
                    ));
                }
            } else if l <= i || r <= i || l >= n || r >= n {
                return Err(format!(
                    "node {i} has children {l}, {r} out of order or range"
                ));
            } else if self.feature[i] as usize >= n_columns || !self.threshold[i].is_finite() {
                return Err(format!(
                    "node {i} splits on column {} at {}",
                    self.feature[i], self.threshold[i]
                ));
            }
        }
        if let Leaves::Values = holds {
            return match self.proba.iter().position(|v| !v.is_finite()) {
                Some(j) => Err(format!("leaf {j} has the value {}", self.proba[j])),
                None => Ok(()),
            };
        }
        for (j, p) in self.proba.chunks_exact(n_classes).enumerate() {
            let sum: f64 = p.iter().sum();
            if p.iter().any(|x| !x.is_finite() || *x < 0.0) || (sum - 1.0).abs() > 1e-9 {
                return Err(format!("leaf {j} has probabilities {p:?}"));
            }
        }
        Ok(())
    }
}

/// A fitted model ready to predict, and what it was fitted with.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainedModel {
    pub(crate) algorithm: Algorithm,
    pub(crate) hyper_parameters: BTreeMap<String, String>,
    pub(crate) trained_rows: u64,
    pub(crate) diagnostics: BTreeMap<String, f64>,
    pub(crate) encoder: Encoder,
    pub(crate) fitted: Fitted,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    format: String,
    algorithm: String,
    hyper_parameters: BTreeMap<String, String>,
    trained_rows: u64,
    #[serde(default)]
    diagnostics: BTreeMap<String, f64>,
    encoder: Encoder,
    fitted: Fitted,
}

#[derive(Deserialize)]
struct Header {
    format: String,
}

/// Reusable buffers for prediction; [`TrainedModel::predict`] keeps one per thread.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    row: Vec<f64>,
    scores: Vec<f64>,
}

impl Scratch {
    /// Class probabilities of the last classification scored with this scratch.
    pub(crate) fn scores(&self) -> &[f64] {
        &self.scores
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A prediction before class names are attached: the value, or the winning class index
/// with per-class probabilities left in `Scratch::scores`.
pub(crate) enum Raw {
    Value(f64),
    Class(usize),
}

impl TrainedModel {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Every hyper-parameter with the value used (defaults filled in), for
    /// `ModelPublished.hyper_parameters`.
    pub fn hyper_parameters(&self) -> &BTreeMap<String, String> {
        &self.hyper_parameters
    }

    pub fn trained_rows(&self) -> u64 {
        self.trained_rows
    }

    /// What the solver reported, when it reports anything: for the elastic-net family
    /// `iterations` and `duality_gap` (an `iterations` equal to `max_iterations` means it
    /// stopped before converging).
    pub fn diagnostics(&self) -> &BTreeMap<String, f64> {
        &self.diagnostics
    }

    pub fn target_kind(&self) -> TargetKind {
        match &self.fitted {
            Fitted::Linear { .. } => TargetKind::Regression,
            Fitted::Boosted { classes, .. } if classes.is_empty() => TargetKind::Regression,
            _ => TargetKind::Classification,
        }
    }

    /// Class labels in the order of probabilities (sorted); empty for regression.
    pub fn classes(&self) -> &[String] {
        match &self.fitted {
            Fitted::Linear { .. } => &[],
            Fitted::Logistic { classes, .. }
            | Fitted::Multinomial { classes, .. }
            | Fitted::Forest { classes, .. }
            | Fitted::Boosted { classes, .. } => classes,
        }
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Weights of a linear model by encoded column name (with `(intercept)`), for logs and
    /// model cards; `None` for other models.
    pub fn coefficients(&self) -> Option<BTreeMap<String, f64>> {
        let (weights, intercept) = match &self.fitted {
            Fitted::Linear { weights, intercept }
            | Fitted::Logistic {
                weights, intercept, ..
            } => (weights, *intercept),
            _ => return None,
        };
        let mut out: BTreeMap<String, f64> = self
            .encoder
            .column_names()
            .into_iter()
            .zip(weights.iter().copied())
            .collect();
        out.insert("(intercept)".into(), intercept);
        Some(out)
    }

    /// The model as bytes in [`FORMAT`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let stored = StoredRef {
            format: FORMAT,
            algorithm: self.algorithm.name(),
            hyper_parameters: &self.hyper_parameters,
            trained_rows: self.trained_rows,
            diagnostics: &self.diagnostics,
            encoder: &self.encoder,
            fitted: &self.fitted,
        };
        // Serialising plain structs of finite floats, strings and maps cannot fail.
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// Loads and checks bytes written by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let header: Header =
            serde_json::from_slice(bytes).map_err(|e| Error::Decode(e.to_string()))?;
        if header.format != FORMAT {
            return Err(Error::Format {
                found: header.format,
                expected: FORMAT,
            });
        }
        let stored: Stored =
            serde_json::from_slice(bytes).map_err(|e| Error::Decode(e.to_string()))?;
        let model = TrainedModel {
            algorithm: Algorithm::from_name(&stored.algorithm)?,
            hyper_parameters: stored.hyper_parameters,
            trained_rows: stored.trained_rows,
            diagnostics: stored.diagnostics,
            encoder: stored.encoder,
            fitted: stored.fitted,
        };
        model.validate()?;
        Ok(model)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.encoder.validate()?;
        let p = self.encoder.n_columns();
        let bad = |m: String| Err(Error::Invalid(m));
        let finite = |xs: &[f64]| xs.iter().all(|x| x.is_finite());
        let classes_ok =
            |c: &[String], min: usize| c.len() >= min && c.windows(2).all(|w| w[0] < w[1]);
        // Each kind of parameters comes from its own algorithms only.
        let (made_by, what) = match &self.fitted {
            Fitted::Linear { .. } => (
                matches!(
                    self.algorithm,
                    Algorithm::Linear | Algorithm::Ridge | Algorithm::Lasso | Algorithm::ElasticNet
                ),
                "linear regression",
            ),
            Fitted::Logistic { .. } | Fitted::Multinomial { .. } => {
                (self.algorithm == Algorithm::Logistic, "logistic regression")
            }
            Fitted::Forest { .. } => (self.algorithm == Algorithm::RandomForest, "forest"),
            Fitted::Boosted { .. } => (self.algorithm == Algorithm::BoostedTrees, "boosted"),
        };
        if !made_by {
            return bad(format!(
                "`{}` cannot have {what} parameters",
                self.algorithm
            ));
        }
        match &self.fitted {
            Fitted::Linear { weights, intercept } => {
                if weights.len() != p || !finite(weights) || !intercept.is_finite() {
                    return bad(format!(
                        "linear: {} weights for {p} columns, or not finite",
                        weights.len()
                    ));
                }
            }
            Fitted::Logistic {
                classes,
                weights,
                intercept,
            } => {
                if classes.len() != 2 || !classes_ok(classes, 2) {
                    return bad("logistic: needs two sorted distinct classes".into());
                }
                if weights.len() != p || !finite(weights) || !intercept.is_finite() {
                    return bad(format!(
                        "logistic: {} weights for {p} columns, or not finite",
                        weights.len()
                    ));
                }
            }
            Fitted::Multinomial {
                classes,
                weights,
                intercepts,
            } => {
                if !classes_ok(classes, 2) {
                    return bad("multinomial: needs sorted distinct classes".into());
                }
                let k = classes.len();
                if weights.len() != k * p
                    || intercepts.len() != k
                    || !finite(weights)
                    || !finite(intercepts)
                {
                    return bad(format!(
                        "multinomial: shapes do not match {k} classes × {p} columns"
                    ));
                }
            }
            Fitted::Forest { classes, trees } => {
                if !classes_ok(classes, 1) || trees.is_empty() {
                    return bad(
                        "forest: needs sorted distinct classes and at least one tree".into(),
                    );
                }
                for (t, tree) in trees.iter().enumerate() {
                    tree.validate(p, Leaves::Probabilities(classes.len()))
                        .or_else(|m| bad(format!("forest tree {t}: {m}")))?;
                }
            }
            Fitted::Boosted {
                classes,
                base,
                trees,
            } => {
                if !(classes.is_empty() || classes_ok(classes, 2) && classes.len() == 2)
                    || trees.is_empty()
                    || !base.is_finite()
                {
                    return bad(
                        "boosted: needs no classes or two sorted ones, a finite base and a tree"
                            .into(),
                    );
                }
                for (t, tree) in trees.iter().enumerate() {
                    tree.validate(p, Leaves::Values)
                        .or_else(|m| bad(format!("boosted tree {t}: {m}")))?;
                }
            }
        }
        Ok(())
    }

    /// Predicts one row. Regression fills `value`; classification fills `class` and a
    /// probability per class (logistic: the model's; forest: the mean over trees of the
    /// class frequencies in the leaf the row lands in, as scikit-learn averages).
    /// Encoding reuses a per-thread buffer, so a regression prediction allocates nothing.
    pub fn predict(&self, features: &Features) -> Prediction {
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut scratch) => self.predict_with(&mut scratch, features),
            Err(_) => self.predict_with(&mut Scratch::default(), features),
        })
    }

    /// Predicts many rows with one set of buffers.
    pub fn predict_batch(&self, rows: &[&Features]) -> Vec<Prediction> {
        SCRATCH.with(|s| {
            let mut own = Scratch::default();
            let mut borrowed = s.try_borrow_mut();
            let scratch = match &mut borrowed {
                Ok(scratch) => &mut **scratch,
                Err(_) => &mut own,
            };
            rows.iter().map(|f| self.predict_with(scratch, f)).collect()
        })
    }

    /// [`Self::predict`] with caller-owned buffers.
    pub fn predict_with(&self, scratch: &mut Scratch, features: &Features) -> Prediction {
        match self.raw(scratch, features) {
            Raw::Value(v) => Prediction {
                value: Some(v),
                ..Prediction::default()
            },
            Raw::Class(c) => {
                let classes = self.classes();
                Prediction {
                    value: None,
                    class: Some(classes[c].clone()),
                    probabilities: classes
                        .iter()
                        .cloned()
                        .zip(scratch.scores.iter().copied())
                        .collect(),
                }
            }
        }
    }

    /// Encodes and scores a row; class probabilities are left in `scratch.scores`.
    pub(crate) fn raw(&self, scratch: &mut Scratch, features: &Features) -> Raw {
        let p = self.encoder.n_columns();
        scratch.row.resize(p, 0.0);
        self.encoder.encode_into(features, &mut scratch.row);
        let row = &scratch.row[..];
        let scores = &mut scratch.scores;
        match &self.fitted {
            Fitted::Linear { weights, intercept } => Raw::Value(intercept + dot(weights, row)),
            Fitted::Logistic {
                weights, intercept, ..
            } => {
                let p1 = sigmoid(intercept + dot(weights, row));
                scores.clear();
                scores.extend([1.0 - p1, p1]);
                Raw::Class(usize::from(p1 >= 0.5))
            }
            Fitted::Multinomial {
                classes,
                weights,
                intercepts,
            } => {
                scores.clear();
                scores.extend(
                    intercepts
                        .iter()
                        .zip(weights.chunks_exact(p.max(1)))
                        .map(|(b, w)| b + dot(w, row)),
                );
                if p == 0 {
                    scores.clone_from(intercepts);
                }
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0.0;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                scores.iter_mut().for_each(|s| *s /= sum);
                debug_assert_eq!(scores.len(), classes.len());
                Raw::Class(argmax(scores))
            }
            Fitted::Forest { classes, trees } => {
                let k = classes.len();
                scores.clear();
                scores.resize(k, 0.0);
                for tree in trees {
                    let at = tree.leaf_for(row) * k;
                    for (s, p) in scores.iter_mut().zip(&tree.proba[at..at + k]) {
                        *s += p;
                    }
                }
                let n = trees.len() as f64;
                scores.iter_mut().for_each(|s| *s /= n);
                Raw::Class(argmax(scores))
            }
            Fitted::Boosted {
                classes,
                base,
                trees,
            } => {
                // Summed in tree order from the base, as forust sums, so bit for bit its value.
                let mut z = *base;
                for tree in trees {
                    z += tree.proba[tree.leaf_for(row)];
                }
                if classes.is_empty() {
                    return Raw::Value(z);
                }
                let p1 = sigmoid(z);
                scores.clear();
                scores.extend([1.0 - p1, p1]);
                Raw::Class(usize::from(p1 >= 0.5))
            }
        }
    }

    /// The index of a class label in [`Self::classes`].
    pub(crate) fn class_index(&self, class: &str) -> Option<usize> {
        self.classes()
            .binary_search_by(|c| c.as_str().cmp(class))
            .ok()
    }
}

#[derive(Serialize)]
struct StoredRef<'a> {
    format: &'a str,
    algorithm: &'a str,
    hyper_parameters: &'a BTreeMap<String, String>,
    trained_rows: u64,
    diagnostics: &'a BTreeMap<String, f64>,
    encoder: &'a Encoder,
    fitted: &'a Fitted,
}

#[inline]
fn dot(w: &[f64], x: &[f64]) -> f64 {
    w.iter().zip(x).map(|(a, b)| a * b).sum()
}

/// The logistic function, without overflow for large |z|.
pub(crate) fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// The first index of the largest score (ties go to the earlier class).
fn argmax(scores: &[f64]) -> usize {
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
        }
    }
    best
}
