//! The algorithms a spec's `model.algorithm` can name, and their hyper-parameters.
//!
//! | algorithm | target | solver | hyper-parameters (default) |
//! | --- | --- | --- | --- |
//! | `linear` | regression | least squares in closed form (normal equations, Cholesky); `linfa_linear::LinearRegression` (QR) when too ill-conditioned for that | — |
//! | `ridge` | regression | the elastic-net objective with `l1_ratio` 0, solved exactly in closed form (see below) | `penalty` (0.01) |
//! | `lasso` | regression | coordinate descent on the Gram matrix (scikit-learn's `precompute=True`), `l1_ratio` 1 | `penalty` (0.01) |
//! | `elastic-net` | regression | coordinate descent on the Gram matrix | `penalty` (0.01), `l1_ratio` (0.5) |
//! | `logistic` | classification | Newton's method (2 classes; `linfa_logistic::LogisticRegression`'s L-BFGS when the Hessian is singular) or `linfa_logistic::MultiLogisticRegression` (more) | `alpha` (1.0) |
//! | `random-forest` | classification | bagged CART trees (Gini) of our own on columns binned at 256 quantiles (see `forest`) | `trees` (20), `max_depth` (10), `feature_fraction` (1.0), `sample_fraction` (0.5), `min_samples_leaf` (5), `seed` (42), `threads` (all cores) |
//! | `boosted-trees` | regression, or classification of two classes | gradient boosting by forust-ml (XGBoost's algorithm), with a time-bounded search (see `boost`) | `iterations` (200), `learning_rate` (0.1), `max_depth` (6), `l2` (1.0), `min_leaf_weight` (1.0), `seed` (0), `search_seconds` (30; 0 for none), `threads` (all cores) |
//!
//! Every algorithm also takes the encoder's `max_categories` (30) and `missing_indicators`
//! (true). `lasso` and `elastic-net` take `max_iterations` (1000) and `tolerance` (1e-4);
//! logistic takes `max_iterations` (200) and `gradient_tolerance` (1e-4).
//!
//! The elastic-net objective is scikit-learn's (`penalty` is its `alpha`):
//! `1/(2n)·‖y − Xw‖² + penalty·l1_ratio·‖w‖₁ + ½·penalty·(1 − l1_ratio)·‖w‖²`. The default
//! penalty is 0.01 rather than scikit-learn's 1.0: with standardised features a ridge
//! penalty p shrinks every weight by about 1/(1 + p), so 1.0 would halve them. (scikit-learn's
//! `Ridge` writes the same objective as `‖y − Xw‖² + alpha·‖w‖²`: its alpha is penalty × n.)
//! An `l1_ratio` of 0 (`ridge`, or `elastic-net` with `l1_ratio = "0"`) is solved in closed
//! form instead of linfa's coordinate descent, which never meets its stopping rule without
//! an L1 term (1,000 iterations, still off the optimum, on the flights data).
//! Lasso and elastic net stop as scikit-learn does: a sweep's largest weight change below
//! `tolerance` times the largest weight, and a duality gap below `tolerance·‖y − ȳ‖²`.
//! Logistic `alpha` is linfa's L2 weight on the summed log loss, i.e. scikit-learn's `1/C`;
//! its `gradient_tolerance` is per training row: the fit stops when the gradient of the
//! summed loss has a norm of at most that times the row count.
//!
//! The forest's `feature_fraction` is the share of columns each *tree* sees (not per split,
//! as scikit-learn's `max_features`). It defaults to
//! all columns: a tree without the one strong column votes nearly at random, which costs
//! more accuracy and calibration than the decorrelation gains. `sample_fraction` is the
//! bootstrap sample size as a share of the rows (drawn with replacement).
//!
//! `boosted-trees`' search picks `learning_rate`, `max_depth` and the number of trees on
//! the newest 20% of the training rows; what it picked is on the model card. Bounded by
//! time, it may try fewer points on a slower machine: set `search_seconds` to 0 (and the
//! three parameters) for a fit that depends on the rows alone.
//!
//! An unknown hyper-parameter name is an error, so a typo in a spec does not silently fall
//! back to a default.

use std::collections::BTreeMap;

use driftline_schemas::spec::TargetKind;

use crate::encoder::EncoderOptions;
use crate::{Error, Result};

/// A model family by the name a spec uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Linear,
    Ridge,
    Lasso,
    ElasticNet,
    Logistic,
    RandomForest,
    BoostedTrees,
}

impl Algorithm {
    pub const ALL: [Algorithm; 7] = [
        Algorithm::Linear,
        Algorithm::Ridge,
        Algorithm::Lasso,
        Algorithm::ElasticNet,
        Algorithm::Logistic,
        Algorithm::RandomForest,
        Algorithm::BoostedTrees,
    ];

    /// Reads a spec's `model.algorithm` (a few spellings are accepted).
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(
            match name.trim().to_ascii_lowercase().replace('_', "-").as_str() {
                "linear" | "linear-regression" | "ols" => Algorithm::Linear,
                "ridge" => Algorithm::Ridge,
                "lasso" => Algorithm::Lasso,
                "elastic-net" | "elasticnet" => Algorithm::ElasticNet,
                "logistic" | "logistic-regression" => Algorithm::Logistic,
                "random-forest" | "randomforest" | "forest" => Algorithm::RandomForest,
                "boosted-trees" | "gradient-boosting" | "gbt" | "gbm" => Algorithm::BoostedTrees,
                _ => return Err(Error::UnknownAlgorithm(name.to_string())),
            },
        )
    }

    /// The canonical name, as written into model bytes and `ModelPublished.algorithm`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Linear => "linear",
            Algorithm::Ridge => "ridge",
            Algorithm::Lasso => "lasso",
            Algorithm::ElasticNet => "elastic-net",
            Algorithm::Logistic => "logistic",
            Algorithm::RandomForest => "random-forest",
            Algorithm::BoostedTrees => "boosted-trees",
        }
    }

    /// Whether this algorithm fits targets of `kind`.
    pub fn fits(self, kind: TargetKind) -> bool {
        match self {
            Algorithm::Logistic | Algorithm::RandomForest => kind == TargetKind::Classification,
            Algorithm::BoostedTrees => true,
            _ => kind == TargetKind::Regression,
        }
    }

    fn allowed(self) -> &'static [&'static str] {
        match self {
            Algorithm::Linear => &[],
            Algorithm::Ridge => &["penalty"],
            Algorithm::Lasso => &["penalty", "max_iterations", "tolerance"],
            Algorithm::ElasticNet => &["penalty", "l1_ratio", "max_iterations", "tolerance"],
            Algorithm::Logistic => &["alpha", "max_iterations", "gradient_tolerance"],
            Algorithm::RandomForest => &[
                "trees",
                "max_depth",
                "feature_fraction",
                "sample_fraction",
                "min_samples_leaf",
                "seed",
                "threads",
            ],
            Algorithm::BoostedTrees => &[
                "iterations",
                "learning_rate",
                "max_depth",
                "l2",
                "min_leaf_weight",
                "seed",
                "search_seconds",
                "threads",
            ],
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Parsed hyper-parameters with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Params {
    Linear,
    ElasticNet {
        penalty: f64,
        l1_ratio: f64,
        max_iterations: u32,
        tolerance: f64,
    },
    Logistic {
        alpha: f64,
        max_iterations: u64,
        gradient_tolerance: f64,
    },
    Forest(ForestParams),
    Boosted(BoostParams),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BoostParams {
    pub iterations: usize,
    pub learning_rate: f64,
    pub max_depth: usize,
    pub l2: f64,
    pub min_leaf_weight: f64,
    pub seed: u64,
    pub threads: usize,
    pub search_seconds: f64,
    /// Whether the search goes on past the given point to the grid; without it the
    /// search only picks the number of trees by early stopping.
    pub search_grid: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ForestParams {
    pub trees: usize,
    pub max_depth: usize,
    pub feature_fraction: f64,
    pub sample_fraction: f64,
    pub min_samples_leaf: usize,
    pub seed: u64,
    pub threads: usize,
}

#[derive(Debug)]
pub(crate) struct Parsed {
    pub encoder: EncoderOptions,
    pub params: Params,
    /// Every hyper-parameter with its effective value, for the model card.
    pub effective: BTreeMap<String, String>,
}

struct Reader<'a> {
    given: &'a BTreeMap<String, String>,
    effective: BTreeMap<String, String>,
}

impl Reader<'_> {
    fn get<T: std::str::FromStr + ToString>(
        &mut self,
        name: &str,
        default: T,
        check: impl Fn(&T) -> bool,
        rule: &str,
    ) -> Result<T> {
        let value = match self.given.get(name) {
            None => default,
            Some(text) => text
                .trim()
                .parse::<T>()
                .ok()
                .filter(&check)
                .ok_or_else(|| Error::HyperParameter {
                    name: name.into(),
                    message: format!("{text:?} is not {rule}"),
                })?,
        };
        self.effective.insert(name.to_string(), value.to_string());
        Ok(value)
    }
}

pub(crate) fn parse(algorithm: Algorithm, given: &BTreeMap<String, String>) -> Result<Parsed> {
    const COMMON: [&str; 2] = ["max_categories", "missing_indicators"];
    for name in given.keys() {
        if !COMMON.contains(&name.as_str()) && !algorithm.allowed().contains(&name.as_str()) {
            let mut known: Vec<&str> = algorithm.allowed().to_vec();
            known.extend(COMMON);
            return Err(Error::HyperParameter {
                name: name.clone(),
                message: format!(
                    "not a hyper-parameter of `{algorithm}` (known: {})",
                    known.join(", ")
                ),
            });
        }
    }
    let mut r = Reader {
        given,
        effective: BTreeMap::new(),
    };
    let positive = |x: &f64| x.is_finite() && *x > 0.0;
    let non_negative = |x: &f64| x.is_finite() && *x >= 0.0;
    let fraction = |x: &f64| *x > 0.0 && *x <= 1.0;
    let encoder = EncoderOptions {
        max_categories: r.get("max_categories", 30usize, |n| *n >= 1, "an integer ≥ 1")?,
        missing_indicators: r.get("missing_indicators", true, |_| true, "true or false")?,
    };
    let elastic = |r: &mut Reader<'_>, l1: Option<f64>| -> Result<Params> {
        let penalty = r.get("penalty", 0.01, non_negative, "a number ≥ 0")?;
        let l1_ratio = match l1 {
            Some(l1) => l1,
            None => r.get(
                "l1_ratio",
                0.5,
                |x| (0.0..=1.0).contains(x),
                "a number in [0, 1]",
            )?,
        };
        Ok(Params::ElasticNet {
            penalty,
            l1_ratio,
            max_iterations: r.get("max_iterations", 1000u32, |n| *n >= 1, "an integer ≥ 1")?,
            tolerance: r.get("tolerance", 1e-4, positive, "a number > 0")?,
        })
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let params = match algorithm {
        Algorithm::Linear => Params::Linear,
        // Solved by least squares: no iterations to configure.
        Algorithm::Ridge => Params::ElasticNet {
            penalty: r.get("penalty", 0.01, non_negative, "a number ≥ 0")?,
            l1_ratio: 0.0,
            max_iterations: 1,
            tolerance: 1e-4,
        },
        Algorithm::Lasso => elastic(&mut r, Some(1.0))?,
        Algorithm::ElasticNet => elastic(&mut r, None)?,
        Algorithm::Logistic => Params::Logistic {
            alpha: r.get("alpha", 1.0, non_negative, "a number ≥ 0")?,
            max_iterations: r.get("max_iterations", 200u64, |n| *n >= 1, "an integer ≥ 1")?,
            gradient_tolerance: r.get("gradient_tolerance", 1e-4, positive, "a number > 0")?,
        },
        Algorithm::RandomForest => Params::Forest(ForestParams {
            trees: r.get(
                "trees",
                20usize,
                |n| (1..=10_000).contains(n),
                "an integer in 1..=10000",
            )?,
            max_depth: r.get(
                "max_depth",
                10usize,
                |n| (1..=64).contains(n),
                "an integer in 1..=64",
            )?,
            feature_fraction: r.get("feature_fraction", 1.0, fraction, "a number in (0, 1]")?,
            sample_fraction: r.get("sample_fraction", 0.5, fraction, "a number in (0, 1]")?,
            min_samples_leaf: r.get("min_samples_leaf", 5usize, |n| *n >= 1, "an integer ≥ 1")?,
            seed: r.get("seed", 42u64, |_| true, "an unsigned integer")?,
            threads: r.get("threads", cores, |n| *n >= 1, "an integer ≥ 1")?,
        }),
        Algorithm::BoostedTrees => Params::Boosted(BoostParams {
            search_grid: true,
            iterations: r.get(
                "iterations",
                200usize,
                |n| (1..=100_000).contains(n),
                "an integer in 1..=100000",
            )?,
            learning_rate: r.get(
                "learning_rate",
                0.1,
                |x| *x > 0.0 && *x <= 1.0,
                "a number in (0, 1]",
            )?,
            max_depth: r.get(
                "max_depth",
                6usize,
                |n| (1..=32).contains(n),
                "an integer in 1..=32",
            )?,
            l2: r.get("l2", 1.0, non_negative, "a number ≥ 0")?,
            min_leaf_weight: r.get("min_leaf_weight", 1.0, non_negative, "a number ≥ 0")?,
            seed: r.get("seed", 0u64, |_| true, "an unsigned integer")?,
            threads: r.get("threads", cores, |n| *n >= 1, "an integer ≥ 1")?,
            search_seconds: r.get(
                "search_seconds",
                30.0,
                |x: &f64| x.is_finite() && (0.0..=86_400.0).contains(x),
                "a number of seconds in [0, 86400]",
            )?,
        }),
    };
    // The thread count changes how fast, never what is fitted: keep it off the model card.
    r.effective.remove("threads");
    Ok(Parsed {
        encoder,
        params,
        effective: r.effective,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_in_documented_defaults() {
        let p = parse(Algorithm::ElasticNet, &BTreeMap::new()).unwrap();
        assert_eq!(
            p.params,
            Params::ElasticNet {
                penalty: 0.01,
                l1_ratio: 0.5,
                max_iterations: 1000,
                tolerance: 1e-4
            }
        );
        assert_eq!(p.effective["l1_ratio"], "0.5");
        assert_eq!(p.encoder, EncoderOptions::default());
    }

    #[test]
    fn rejects_typos_and_out_of_range_values() {
        let given = [("penalti".to_string(), "0.1".to_string())].into();
        let err = parse(Algorithm::ElasticNet, &given)
            .unwrap_err()
            .to_string();
        assert!(err.contains("penalti") && err.contains("l1_ratio"), "{err}");
        let given = [("l1_ratio".to_string(), "1.5".to_string())].into();
        assert!(parse(Algorithm::ElasticNet, &given).is_err());
        let given = [("l1_ratio".to_string(), "0.5".to_string())].into();
        assert!(
            parse(Algorithm::Ridge, &given).is_err(),
            "ridge fixes l1_ratio"
        );
    }

    #[test]
    fn reads_algorithm_spellings() {
        assert_eq!(
            Algorithm::from_name("Elastic_Net").unwrap(),
            Algorithm::ElasticNet
        );
        assert!(
            !Algorithm::from_name("random-forest")
                .unwrap()
                .fits(TargetKind::Regression)
        );
        let boosted = Algorithm::from_name("gradient_boosting").unwrap();
        assert!(boosted.fits(TargetKind::Regression) && boosted.fits(TargetKind::Classification));
        assert!(Algorithm::from_name("xgboost").is_err());
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name()).unwrap(), a);
        }
    }
}
