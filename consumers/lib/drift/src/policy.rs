//! When a feature, and a data set, has drifted.
//!
//! A feature drifts when the statistic its policy names crosses its threshold; the data
//! set drifts when the share of drifted features reaches [`DriftPolicy::share`].
//!
//! # Defaults, and why
//!
//! Windows here are large (a monitor evaluates thousands to hundreds of thousands of
//! events), and with that many rows every p-value is tiny: a KS test on 100k rows flags a
//! shift of 0.01 standard deviations that no model notices. So the default decision rests
//! on effect sizes, whose value does not grow with the window, and p-values are only
//! reported. The choices follow Evidently's defaults for data sets above 1,000 rows, so the
//! two tools' decisions can be compared:
//!
//! - numeric: [`Statistic::WassersteinNorm`] >= 0.1, i.e. the distributions are 0.1
//!   reference standard deviations apart (a mean shift of 0.1 sd scores about 0.1);
//! - categorical: [`Statistic::JensenShannon`] >= 0.1 (natural log, so the range is
//!   [0, 0.83]);
//! - when that statistic cannot be computed (a constant reference has no standard
//!   deviation), [`Statistic::Psi`] >= 0.2, the usual "significant shift" line of PSI;
//! - small windows, where histograms and distances are noisy but p-values are calibrated:
//!   when either side has at most 1,000 values, KS p < 0.05 (numeric) and chi-square
//!   p < 0.05 (categorical), again as Evidently does;
//! - data quality ([`crate::quality`]): a feature whose share of missing values, of numbers
//!   outside the reference's range or of categories the reference never saw is higher
//!   than the reference allows has drifted whatever its values do (a feature going null
//!   is the most common real-world drift, and the statistics, which only see non-missing
//!   values, would miss it). Each check's threshold comes from the reference and the
//!   window's size at a false-alarm rate of 1% per evaluation over all the checks of all
//!   features (Bonferroni: each of the two checks of each of F features at 0.01 / 2F).
//!   The old fixed rule, a missing share grown by 0.1 (absolute), is an option;
//! - calibrated distances ([`crate::calibrate`]): when the profile carries how the
//!   distance varied between sub-windows of the reference, the line is the distance a
//!   window of this size exceeds by chance at the same false-alarm rate, split over the
//!   checks with the quality checks, and it decides at every window size; the fixed lines
//!   above stay for profiles without sub-windows and as an option;
//! - the data set has drifted when at least half of its features have.

use driftline_schemas::events::{FeatureKind, Signal};
use serde::{Deserialize, Serialize};

/// The default thresholds, named once; the module doc gives their reasons.
pub mod defaults {
    /// Normalised Wasserstein distance at which a numeric feature drifts.
    pub const WASSERSTEIN_NORM: f64 = 0.1;
    /// Jensen-Shannon distance at which a categorical feature drifts.
    pub const JENSEN_SHANNON: f64 = 0.1;
    /// PSI's "significant shift" line, when the distance above cannot be computed.
    pub const PSI: f64 = 0.2;
    /// Largest side of a small window, where p-values decide.
    pub const SMALL_SAMPLE_MAX_VALUES: u64 = 1_000;
    /// p-value below which a small window's test drifts.
    pub const P_VALUE: f64 = 0.05;
    /// The chance of any calibrated check firing on an evaluation of unchanged data.
    pub const FALSE_ALARM_RATE: f64 = 0.01;
    /// Data quality checks per feature: missing share, and out of range (numeric) or unseen
    /// category (categorical); the false-alarm rate is split over them.
    pub const QUALITY_CHECKS_PER_FEATURE: usize = 2;
    /// Share of drifted features at which the data set drifts.
    pub const SHARE: f64 = 0.5;
}

use crate::calibrate::NullCurve;
use crate::quality::{self, Check};
use crate::{Error, Result};

/// A statistic a rule can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    Psi,
    WassersteinNorm,
    JensenShannon,
    /// Kolmogorov-Smirnov p-value (numeric).
    KsP,
    /// Chi-square p-value (categorical).
    Chi2P,
}

impl Statistic {
    /// p-values drift when *below* the threshold, effect sizes when at or above it.
    pub fn is_p_value(self) -> bool {
        matches!(self, Statistic::KsP | Statistic::Chi2P)
    }

    pub fn name(self) -> &'static str {
        match self {
            Statistic::Psi => "psi",
            Statistic::WassersteinNorm => "wasserstein_norm",
            Statistic::JensenShannon => "jensen_shannon",
            Statistic::KsP => "ks_p",
            Statistic::Chi2P => "chi2_p",
        }
    }
}

/// "Drifted when `statistic` crosses `threshold`."
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub statistic: Statistic,
    pub threshold: f64,
}

impl Rule {
    pub const fn new(statistic: Statistic, threshold: f64) -> Self {
        Self {
            statistic,
            threshold,
        }
    }

    /// Whether `value` crosses the threshold.
    pub fn crossed(&self, value: f64) -> bool {
        if self.statistic.is_p_value() {
            value < self.threshold
        } else {
            value >= self.threshold
        }
    }
}

/// The rules for windows with few values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmallSample {
    /// Applies when either side has at most this many non-missing values.
    pub max_values: u64,
    pub numeric: Rule,
    pub categorical: Rule,
}

/// Per-feature rules and the data set's share threshold (see the module doc for the
/// defaults and their reasons).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftPolicy {
    /// Tried in order; the first whose statistic is available decides.
    pub numeric: Vec<Rule>,
    pub categorical: Vec<Rule>,
    pub small_sample: Option<SmallSample>,
    /// Thresholds from the reference: the data quality checks, and the distances when
    /// asked; `None`: fixed lines only.
    #[serde(default, alias = "quality")]
    pub calibration: Option<Calibration>,
    /// A fixed rule, off by default: a feature drifts when its missing share grows by at
    /// least this much.
    pub missing_share_increase: Option<f64>,
    /// The data set drifts when the share of drifted features reaches this.
    pub share: f64,
}

impl Default for DriftPolicy {
    fn default() -> Self {
        Self {
            numeric: Self::numeric_rules(defaults::WASSERSTEIN_NORM),
            categorical: Self::categorical_rules(defaults::JENSEN_SHANNON),
            small_sample: Some(SmallSample {
                max_values: defaults::SMALL_SAMPLE_MAX_VALUES,
                numeric: Rule::new(Statistic::KsP, defaults::P_VALUE),
                categorical: Rule::new(Statistic::Chi2P, defaults::P_VALUE),
            }),
            calibration: Some(Calibration::default()),
            missing_share_increase: None,
            share: defaults::SHARE,
        }
    }
}

/// How the checks with thresholds from the reference decide.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The chance that any calibrated check (of any feature, or the error's rise) fires on
    /// one evaluation of unchanged data.
    pub false_alarm_rate: f64,
    /// Whether the distances (and the error's rise) take their lines from the reference's
    /// sub-windows when it has them; false: the fixed lines.
    #[serde(default = "yes")]
    pub distances: bool,
}

fn yes() -> bool {
    true
}

impl Default for Calibration {
    fn default() -> Self {
        Self {
            false_alarm_rate: defaults::FALSE_ALARM_RATE,
            distances: true,
        }
    }
}

impl Calibration {
    /// Each check's rate in an evaluation of `features` features (Bonferroni over the
    /// quality checks and the distance of each feature, the error's rise and the
    /// multivariate check).
    pub fn per_check(&self, features: usize) -> f64 {
        let per_feature = defaults::QUALITY_CHECKS_PER_FEATURE + usize::from(self.distances);
        self.false_alarm_rate / (features.max(1) * per_feature + 2) as f64
    }
}

impl DriftPolicy {
    /// The numeric rules with this Wasserstein threshold, PSI behind it.
    pub fn numeric_rules(wasserstein_norm: f64) -> Vec<Rule> {
        vec![
            Rule::new(Statistic::WassersteinNorm, wasserstein_norm),
            Rule::new(Statistic::Psi, defaults::PSI),
        ]
    }

    /// The categorical rules with this Jensen-Shannon threshold, PSI behind it.
    pub fn categorical_rules(jensen_shannon: f64) -> Vec<Rule> {
        vec![
            Rule::new(Statistic::JensenShannon, jensen_shannon),
            Rule::new(Statistic::Psi, defaults::PSI),
        ]
    }
}

/// What the policy needs to know about one feature.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FeatureEvidence {
    pub psi: Option<f64>,
    pub ks_p: Option<f64>,
    pub wasserstein_norm: Option<f64>,
    pub jensen_shannon: Option<f64>,
    pub chi2_p: Option<f64>,
    /// Non-missing values on each side.
    pub reference_count: u64,
    pub current_count: u64,
    pub reference_missing_share: f64,
    pub current_missing_share: f64,
    /// The data quality checks' counts (see [`crate::quality`]).
    pub quality: Vec<quality::Count>,
    /// How the feature's distance (normalised Wasserstein; Jensen-Shannon for categories)
    /// varies between windows of the reference, when the profile says.
    pub null: Option<NullCurve>,
}

impl FeatureEvidence {
    pub fn get(&self, s: Statistic) -> Option<f64> {
        match s {
            Statistic::Psi => self.psi,
            Statistic::WassersteinNorm => self.wasserstein_norm,
            Statistic::JensenShannon => self.jensen_shannon,
            Statistic::KsP => self.ks_p,
            Statistic::Chi2P => self.chi2_p,
        }
        .filter(|v| !v.is_nan())
    }
}

/// Why a feature was judged as it was.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum Reason {
    /// A rule's statistic decided (whether or not it crossed).
    Rule {
        statistic: Statistic,
        threshold: f64,
        value: f64,
        /// Set when the threshold came from the reference's sub-windows.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_reference: Option<FromReference>,
    },
    /// The missing share grew by at least the policy's fixed limit.
    MissingShare { increase: f64, limit: f64 },
    /// A data quality check fired: the window's share against the reference's threshold.
    Quality {
        check: Check,
        value: f64,
        threshold: f64,
    },
    /// No rule's statistic was available (e.g. an empty side): not drifted.
    NoEvidence,
}

/// How a calibrated distance's line was set: its false-alarm rate and the sub-window
/// sizes the null was fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FromReference {
    pub alpha: f64,
    pub sizes: (i64, i64),
}

impl FromReference {
    pub fn method(&self) -> String {
        format!(
            "from the reference's sub-windows of {} to {} values: a gamma tail of {:.1e}",
            self.sizes.0, self.sizes.1, self.alpha
        )
    }
}

/// One feature's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureVerdict {
    pub drifted: bool,
    pub reason: Reason,
    /// Every data quality check, fired or not.
    pub quality: Vec<quality::Signal>,
}

impl FeatureVerdict {
    /// The checks behind the verdict as the report states them: every data quality check,
    /// then the rule that decided.
    pub fn signals(&self) -> Vec<Signal> {
        let mut out: Vec<Signal> = self
            .quality
            .iter()
            .map(|q| Signal {
                name: q.check.name().into(),
                value: q.value,
                threshold: q.threshold,
                fired: q.fired,
                method: format!(
                    "from the reference: a beta-binomial tail of {:.1e}",
                    q.false_alarm_rate
                ),
            })
            .collect();
        match self.reason {
            Reason::Rule {
                statistic,
                threshold,
                value,
                from_reference,
            } => out.push(match from_reference {
                Some(r) => Signal {
                    name: statistic.name().into(),
                    value,
                    threshold,
                    fired: self.drifted,
                    method: r.method(),
                },
                None => Signal::fixed(statistic.name(), value, threshold, self.drifted),
            }),
            Reason::MissingShare { increase, limit } => out.push(Signal::fixed(
                "missing_share_increase",
                increase,
                limit,
                true,
            )),
            Reason::Quality { .. } | Reason::NoEvidence => {}
        }
        out
    }
}

impl DriftPolicy {
    /// Checks thresholds are meaningful.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Policy(m));
        if !(self.share > 0.0 && self.share <= 1.0) {
            return bad(format!("share threshold {} is not in (0, 1]", self.share));
        }
        if let Some(m) = self.missing_share_increase
            && !(m > 0.0 && m <= 1.0)
        {
            return bad(format!("missing share increase {m} is not in (0, 1]"));
        }
        if let Some(q) = self.calibration
            && !(q.false_alarm_rate > 0.0 && q.false_alarm_rate < 1.0)
        {
            return bad(format!(
                "false-alarm rate {} is not in (0, 1)",
                q.false_alarm_rate
            ));
        }
        let small = self
            .small_sample
            .iter()
            .flat_map(|s| [s.numeric, s.categorical]);
        for r in self
            .numeric
            .iter()
            .chain(&self.categorical)
            .copied()
            .chain(small)
        {
            if !r.threshold.is_finite() || r.threshold < 0.0 {
                return bad(format!(
                    "{} threshold {} is not a finite number >= 0",
                    r.statistic.name(),
                    r.threshold
                ));
            }
            if r.statistic.is_p_value() && r.threshold > 1.0 {
                return bad(format!(
                    "{} threshold {} is above 1",
                    r.statistic.name(),
                    r.threshold
                ));
            }
        }
        Ok(())
    }

    /// Judges one feature of an evaluation of `features` features (the data quality
    /// checks' false-alarm rate is split over all of them).
    pub fn feature(
        &self,
        kind: FeatureKind,
        e: &FeatureEvidence,
        features: usize,
    ) -> FeatureVerdict {
        let alpha = self.calibration.map(|c| c.per_check(features));
        let quality: Vec<quality::Signal> = alpha
            .map(|alpha| e.quality.iter().filter_map(|c| c.judge(alpha)).collect())
            .unwrap_or_default();
        let verdict = |drifted, reason| FeatureVerdict {
            drifted,
            reason,
            quality: quality.clone(),
        };
        if let Some(q) = quality.iter().find(|q| q.fired) {
            return verdict(
                true,
                Reason::Quality {
                    check: q.check,
                    value: q.value,
                    threshold: q.threshold,
                },
            );
        }
        if let Some(limit) = self.missing_share_increase {
            let increase = e.current_missing_share - e.reference_missing_share;
            if increase >= limit {
                return verdict(true, Reason::MissingShare { increase, limit });
            }
        }
        // A line from the reference's sub-windows, at this window's size, decides first.
        let statistic = match kind {
            FeatureKind::Numeric => Statistic::WassersteinNorm,
            FeatureKind::Categorical => Statistic::JensenShannon,
        };
        if let (Some(c), Some(alpha), Some(null)) = (self.calibration, alpha, e.null)
            && c.distances
            && e.current_count > 0
            && let Some(value) = e.get(statistic)
        {
            let threshold = null.threshold(e.current_count, alpha);
            return verdict(
                value >= threshold,
                Reason::Rule {
                    statistic,
                    threshold,
                    value,
                    from_reference: Some(FromReference {
                        alpha,
                        sizes: null.sizes(),
                    }),
                },
            );
        }
        let small = self
            .small_sample
            .as_ref()
            .filter(|s| e.reference_count.min(e.current_count) <= s.max_values)
            .map(|s| match kind {
                FeatureKind::Numeric => s.numeric,
                FeatureKind::Categorical => s.categorical,
            });
        let rules = match kind {
            FeatureKind::Numeric => &self.numeric,
            FeatureKind::Categorical => &self.categorical,
        };
        for rule in small.iter().chain(rules) {
            if let Some(value) = e.get(rule.statistic) {
                return verdict(
                    rule.crossed(value),
                    Reason::Rule {
                        statistic: rule.statistic,
                        threshold: rule.threshold,
                        value,
                        from_reference: None,
                    },
                );
            }
        }
        verdict(false, Reason::NoEvidence)
    }

    /// The share of drifted features and whether it reaches the threshold (no features:
    /// share 0, not drifted).
    pub fn dataset(&self, drifted: usize, features: usize) -> (f64, bool) {
        if features == 0 {
            return (0.0, false);
        }
        let share = drifted as f64 / features as f64;
        (share, share >= self.share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big(e: FeatureEvidence) -> FeatureEvidence {
        FeatureEvidence {
            reference_count: 50_000,
            current_count: 50_000,
            ..e
        }
    }

    #[test]
    fn large_windows_decide_on_effect_size_not_p_value() {
        let p = DriftPolicy::default();
        let tiny_p_small_effect = big(FeatureEvidence {
            ks_p: Some(1e-30),
            wasserstein_norm: Some(0.03),
            psi: Some(0.01),
            ..Default::default()
        });
        let v = p.feature(FeatureKind::Numeric, &tiny_p_small_effect, 1);
        assert!(!v.drifted);
        assert!(matches!(
            v.reason,
            Reason::Rule {
                statistic: Statistic::WassersteinNorm,
                ..
            }
        ));
        let shifted = big(FeatureEvidence {
            wasserstein_norm: Some(0.1),
            ..Default::default()
        });
        assert!(p.feature(FeatureKind::Numeric, &shifted, 1).drifted);
        let cat = big(FeatureEvidence {
            jensen_shannon: Some(0.12),
            chi2_p: Some(0.9),
            ..Default::default()
        });
        assert!(p.feature(FeatureKind::Categorical, &cat, 1).drifted);
    }

    #[test]
    fn small_windows_decide_on_p_values() {
        let p = DriftPolicy::default();
        let e = FeatureEvidence {
            ks_p: Some(0.2),
            wasserstein_norm: Some(0.3),
            reference_count: 5_000,
            current_count: 300,
            ..Default::default()
        };
        assert!(!p.feature(FeatureKind::Numeric, &e, 1).drifted);
        let e = FeatureEvidence {
            ks_p: Some(0.01),
            ..e
        };
        assert!(p.feature(FeatureKind::Numeric, &e, 1).drifted);
    }

    #[test]
    fn falls_back_to_psi_when_wasserstein_is_undefined() {
        let p = DriftPolicy::default();
        let e = big(FeatureEvidence {
            psi: Some(0.25),
            ..Default::default()
        });
        let v = p.feature(FeatureKind::Numeric, &e, 1);
        assert!(v.drifted);
        assert!(matches!(
            v.reason,
            Reason::Rule {
                statistic: Statistic::Psi,
                ..
            }
        ));
        let none = p.feature(FeatureKind::Numeric, &big(FeatureEvidence::default()), 1);
        assert_eq!(
            none,
            FeatureVerdict {
                drifted: false,
                reason: Reason::NoEvidence,
                quality: vec![],
            }
        );
    }

    fn missing(hits: u64, total: u64) -> quality::Count {
        quality::Count {
            check: Check::MissingShare,
            null: quality::Null::missing(100, 10_000),
            hits,
            total,
        }
    }

    #[test]
    fn a_feature_going_missing_has_drifted() {
        let p = DriftPolicy::default();
        let e = big(FeatureEvidence {
            wasserstein_norm: Some(0.0),
            quality: vec![missing(2_500, 5_000)],
            ..Default::default()
        });
        let v = p.feature(FeatureKind::Numeric, &e, 10);
        assert!(v.drifted);
        assert!(matches!(
            v.reason,
            Reason::Quality {
                check: Check::MissingShare,
                ..
            }
        ));
        // 1.3% against the reference's 1% in 5,000 values is ordinary noise.
        let e = FeatureEvidence {
            quality: vec![missing(65, 5_000)],
            ..e
        };
        let v = p.feature(FeatureKind::Numeric, &e, 10);
        assert!(!v.drifted);
        assert!(!v.quality[0].fired && v.quality[0].threshold > 0.013);
    }

    #[test]
    fn the_fixed_missing_rule_is_an_option() {
        let p = DriftPolicy {
            calibration: None,
            missing_share_increase: Some(0.1),
            ..Default::default()
        };
        let e = big(FeatureEvidence {
            wasserstein_norm: Some(0.0),
            reference_missing_share: 0.01,
            current_missing_share: 0.5,
            quality: vec![missing(2_500, 5_000)],
            ..Default::default()
        });
        let v = p.feature(FeatureKind::Numeric, &e, 1);
        assert!(matches!(v.reason, Reason::MissingShare { .. }));
        assert!(v.quality.is_empty());
    }

    #[test]
    fn the_false_alarm_rate_is_split_over_every_check_of_every_feature() {
        let q = Calibration::default();
        // Two quality checks and a distance per feature, the error's rise and the
        // multivariate check.
        assert_eq!(q.per_check(5), 0.01 / 17.0);
        let fixed = Calibration {
            distances: false,
            ..q
        };
        assert_eq!(fixed.per_check(5), 0.01 / 12.0);
        // More features, a stricter line for each: 1.6% of 5,000 (against 1% of 10,000)
        // fires alone, not among 100.
        let p = DriftPolicy::default();
        let e = big(FeatureEvidence {
            quality: vec![missing(80, 5_000)],
            ..Default::default()
        });
        assert!(p.feature(FeatureKind::Numeric, &e, 1).drifted);
        assert!(!p.feature(FeatureKind::Numeric, &e, 100).drifted);
    }

    #[test]
    fn a_line_from_the_reference_follows_the_window_size() {
        use driftline_schemas::events::SubWindows;
        // Between sub-windows of the reference the distance was 0.1 ± 0.02 at 100
        // values and half that at 400: it falls like 1/sqrt(n).
        let null = NullCurve::fit(&[
            SubWindows {
                window: 100,
                count: 50,
                mean: 0.1,
                sd: 0.02,
            },
            SubWindows {
                window: 400,
                count: 12,
                mean: 0.05,
                sd: 0.01,
            },
        ])
        .unwrap();
        let at = |n, value| FeatureEvidence {
            wasserstein_norm: Some(value),
            ks_p: Some(1e-9),
            reference_count: 10_000,
            current_count: n,
            null: Some(null),
            ..Default::default()
        };
        let p = DriftPolicy::default();
        // 0.08 is ordinary in 100 values (and decides there, not the p-value), a shift in
        // 10,000 (where the fixed line, 0.1, would miss it).
        let small = p.feature(FeatureKind::Numeric, &at(100, 0.08), 1);
        assert!(!small.drifted, "{small:?}");
        let large = p.feature(FeatureKind::Numeric, &at(10_000, 0.08), 1);
        assert!(large.drifted, "{large:?}");
        let Reason::Rule {
            statistic,
            threshold,
            from_reference: Some(r),
            ..
        } = large.reason
        else {
            panic!("{large:?}")
        };
        assert_eq!(statistic, Statistic::WassersteinNorm);
        assert_eq!(threshold, null.threshold(10_000, r.alpha));
        assert_eq!(r.alpha, Calibration::default().per_check(1));
        let signal = large.signals().pop().unwrap();
        assert!(signal.fired);
        assert_eq!(
            signal.method,
            "from the reference's sub-windows of 100 to 400 values: a gamma tail of 2.0e-3"
        );
        // Fixed thresholds on request: the reference's sub-windows are ignored.
        let fixed = DriftPolicy {
            calibration: Some(Calibration {
                distances: false,
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = fixed.feature(FeatureKind::Numeric, &at(10_000, 0.08), 1);
        assert!(!v.drifted);
        assert_eq!(v.signals().pop().unwrap().method, "fixed");
    }

    #[test]
    fn the_data_set_drifts_when_the_share_reaches_the_threshold() {
        let p = DriftPolicy::default();
        assert_eq!(p.dataset(2, 4), (0.5, true));
        assert_eq!(p.dataset(1, 4), (0.25, false));
        assert_eq!(p.dataset(0, 0), (0.0, false));
    }

    #[test]
    fn rejects_meaningless_thresholds() {
        assert!(DriftPolicy::default().validate().is_ok());
        let p = DriftPolicy {
            share: 0.0,
            ..Default::default()
        };
        assert!(p.validate().is_err());
        let p = DriftPolicy {
            numeric: vec![Rule::new(Statistic::KsP, 5.0)],
            ..Default::default()
        };
        assert!(p.validate().is_err());
        let p = DriftPolicy {
            categorical: vec![Rule::new(Statistic::Psi, f64::NAN)],
            ..Default::default()
        };
        assert!(p.validate().is_err());
    }
}
