//! When the monitor says a model has drifted, and when it asks for a retrain.
//!
//! Per feature, [`DriftPolicy`] (driftline-drift) decides on effect sizes (normalised
//! Wasserstein for numbers, Jensen-Shannon for categories), because on large windows every
//! p-value is tiny: at a line set from how the distance varied between sub-windows of the
//! reference (docs/DETECTION.md), or at fixed lines (PSI as a fallback; p-values for
//! windows of at most 1,000 values) when the profile has no sub-windows or when asked. On
//! top of it, per evaluation:
//!
//! - **the model is drifting** when the share of drifted features reaches
//!   `drift.share` (0.5), or the prediction itself drifted, or the primary error metric
//!   (MAE for regression, log-loss for classification) rose, on at least `min_samples`
//!   joined actuals, above the line set from the holdout's sub-windows at the same
//!   false-alarm rate (or, without them or when asked, by more than `max_error_increase`,
//!   25% relative, over the holdout's value);
//! - **minimum sample** (`min_samples`, 1,000): with fewer events in the window the
//!   statistics are noise, so the decision is NO_DRIFT, whatever they say;
//! - **confirmation** (`confirmations`, 3): a drift must be seen on that many consecutive
//!   evaluations before it is DRIFT (WARNING before), so one odd batch triggers nothing;
//! - **hysteresis** (`release_share`, 0.4): once confirmed, the state stays drifting until
//!   the share falls below this lower line, so a share hovering at 0.5 does not flap;
//! - **cooldown and new data** (`cooldown_events`, the window size by default): after a
//!   RetrainRequested no other is emitted until that many new events arrived, so the next
//!   request is judged on data the previous one had not seen and the trainer has time to
//!   publish (a new production version resets the window and this state anyway);
//! - **concept drift on the errors** (`error_watch`, off): ADWIN, Page-Hinkley or DDM
//!   (driftline-drift's `concept`, River's definitions and defaults) fed each joined
//!   error of the version; a rise it signals is a cause at the next evaluation and needs
//!   no confirmations (the detector has its own confidence). Off by default until the
//!   detection benchmarks of issue #16 say which default raises no false alarms;
//! - **multivariate drift** (`multivariate`, on): the window's mean PCA reconstruction
//!   error (NannyML's multivariate check, driftline-drift's `multivariate`) above the line
//!   from the reference's sub-windows: the calibrated gamma tail, or with fixed lines
//!   NannyML's mean + 3 sd; it sees a change in how features move together that no
//!   feature's own distance shows;
//! - **performance before labels** (`estimate`, on): for a binary classifier, the window's
//!   accuracy estimated from its calibrated probabilities (NannyML's CBPE,
//!   driftline-drift's `estimate`), its error (1 − the estimate) above the line from the
//!   holdout's sub-windows: a drop of accuracy seen before any label arrives. It shares
//!   the error's rise's share of the false-alarm rate: both are the window's error, the
//!   estimate standing in until the labels come;
//! - **multiple testing** (`correction`, none): with Bonferroni or Benjamini-Hochberg the
//!   p-values of the features are adjusted before rules that test p-values use them (the
//!   small-window rules); reports keep the raw p-values.

use std::str::FromStr;

use driftline_drift::DriftPolicy;
use driftline_drift::concept::Watch;
use driftline_drift::policy::{FeatureEvidence, FeatureVerdict};
use driftline_schemas::events::{DriftDecision, FeatureKind};
use serde::{Deserialize, Serialize};

use crate::tracker::FeatureStats;
use crate::{Error, Result};

/// A multiple-testing correction of the features' p-values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Correction {
    #[default]
    None,
    Bonferroni,
    /// Benjamini-Hochberg (false discovery rate).
    BenjaminiHochberg,
}

impl FromStr for Correction {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Correction::None),
            "bonferroni" => Ok(Correction::Bonferroni),
            "bh" | "benjamini-hochberg" => Ok(Correction::BenjaminiHochberg),
            other => Err(Error::Config(format!(
                "correction {other:?}: expected none, bonferroni or bh"
            ))),
        }
    }
}

impl Correction {
    /// Adjusted p-values, in input order (`None` stays `None` and does not count as a test).
    pub fn adjust(self, p: &[Option<f64>]) -> Vec<Option<f64>> {
        let m = p.iter().flatten().count();
        match self {
            Correction::None => p.to_vec(),
            Correction::Bonferroni => p
                .iter()
                .map(|x| x.map(|x| (x * m as f64).min(1.0)))
                .collect(),
            Correction::BenjaminiHochberg => {
                let mut idx: Vec<(usize, f64)> = p
                    .iter()
                    .enumerate()
                    .filter_map(|(i, x)| x.map(|x| (i, x)))
                    .collect();
                idx.sort_by(|a, b| a.1.total_cmp(&b.1));
                let mut out = p.to_vec();
                let mut running = 1.0f64;
                // From the largest p down: q_(i) = min over j >= i of m/j * p_(j).
                for (rank, (i, x)) in idx.iter().enumerate().rev() {
                    running = running.min(x * m as f64 / (rank + 1) as f64);
                    out[*i] = Some(running.min(1.0));
                }
                out
            }
        }
    }
}

/// The whole decision policy (see the module doc for the defaults and why).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorPolicy {
    pub drift: DriftPolicy,
    pub correction: Correction,
    pub min_samples: u64,
    pub confirmations: u32,
    pub release_share: f64,
    pub cooldown_events: u64,
    /// Relative worsening of the primary error metric that counts as drift; `None` to
    /// ignore performance.
    pub max_error_increase: Option<f64>,
    /// Whether a drifted prediction alone makes the model drift.
    pub prediction_drift: bool,
    /// The detector on each version's joined errors; a rise it signals is a drift at once,
    /// without confirmations (the detector has its own confidence).
    #[serde(default)]
    pub error_watch: Watch,
    /// Whether the multivariate check (the window's PCA reconstruction error) decides; it
    /// is reported either way when the version's record carries its reference.
    #[serde(default = "yes")]
    pub multivariate: bool,
    /// Whether a drop of the performance estimated before labels (a classifier's accuracy
    /// by CBPE, a regressor's MAE by DLE) decides; it is reported either way when the
    /// version has an estimator.
    #[serde(default = "yes")]
    pub estimate: bool,
}

fn yes() -> bool {
    true
}

impl Default for MonitorPolicy {
    fn default() -> Self {
        Self {
            drift: DriftPolicy::default(),
            correction: Correction::None,
            min_samples: 1_000,
            confirmations: 3,
            release_share: 0.4,
            cooldown_events: 10_000,
            max_error_increase: Some(0.25),
            prediction_drift: true,
            error_watch: Watch::Off,
            multivariate: true,
            estimate: true,
        }
    }
}

impl MonitorPolicy {
    pub fn validate(&self) -> Result<()> {
        self.drift
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        if self.confirmations == 0 {
            return Err(Error::Config("confirmations must be at least 1".into()));
        }
        if !(0.0..=self.drift.share).contains(&self.release_share) {
            return Err(Error::Config(format!(
                "release share {} must be in [0, share threshold {}]",
                self.release_share, self.drift.share
            )));
        }
        if let Some(x) = self.max_error_increase
            && !(x.is_finite() && x >= 0.0)
        {
            return Err(Error::Config(format!(
                "max error increase {x} must be a number >= 0"
            )));
        }
        Ok(())
    }

    /// Judges every feature (the prediction included), with the correction applied to
    /// the p-values the rules may test.
    pub fn features(&self, kinds: &[FeatureKind], stats: &[FeatureStats]) -> Vec<FeatureVerdict> {
        let ks = self
            .correction
            .adjust(&stats.iter().map(|s| s.ks_p).collect::<Vec<_>>());
        let chi = self
            .correction
            .adjust(&stats.iter().map(|s| s.chi2_p).collect::<Vec<_>>());
        kinds
            .iter()
            .zip(stats)
            .enumerate()
            .map(|(i, (kind, s))| {
                let e = FeatureEvidence {
                    psi: s.psi,
                    ks_p: ks[i],
                    wasserstein_norm: s.wasserstein_norm,
                    jensen_shannon: s.jensen_shannon,
                    chi2_p: chi[i],
                    reference_count: s.reference_count,
                    current_count: s.current_count,
                    reference_missing_share: s.reference_missing_share,
                    current_missing_share: s.current_missing_share,
                    quality: s.quality.clone(),
                    null: s.null,
                };
                self.drift.feature(*kind, &e, kinds.len())
            })
            .collect()
    }
}

/// The policy's memory between evaluations (persisted with the window).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PolicyState {
    /// Consecutive drifting evaluations.
    pub consecutive: u32,
    /// Whether the last decision was a confirmed drift (for hysteresis).
    pub confirmed: bool,
    /// Events seen (sequence number) when the last retrain was requested.
    pub last_retrain_seq: Option<u64>,
}

/// What one evaluation found, for [`PolicyState::decide`].
#[derive(Debug, Clone, PartialEq)]
pub struct Findings {
    pub window_events: u64,
    /// Events ever seen by this window (its next sequence number).
    pub seen: u64,
    pub share_drifted: f64,
    /// The drifted features, each with the signal that fired (see `monitor::why`).
    pub drifted_features: Vec<String>,
    pub prediction_drifted: bool,
    /// The primary metric, when it is worse than allowed: what it is and against what.
    pub performance_drop: Option<String>,
    /// What the error detector said since the last evaluation, when the errors rose.
    pub error_rise: Option<String>,
    /// The multivariate check, when it fired: its value against its line.
    pub multivariate: Option<String>,
    /// The performance estimated before labels, when its error rose past its line.
    pub estimated_drop: Option<String>,
}

/// The decision and whether to ask for a retrain now.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub decision: DriftDecision,
    pub reason: String,
    pub retrain: bool,
}

impl PolicyState {
    pub fn decide(&mut self, policy: &MonitorPolicy, f: &Findings) -> Decision {
        if f.window_events < policy.min_samples {
            *self = PolicyState {
                last_retrain_seq: self.last_retrain_seq,
                ..Default::default()
            };
            return Decision {
                decision: DriftDecision::NoDrift,
                reason: format!(
                    "{} events in the window, fewer than the minimum {}",
                    f.window_events, policy.min_samples
                ),
                retrain: false,
            };
        }
        let line = if self.confirmed {
            policy.release_share
        } else {
            policy.drift.share
        };
        let mut causes = Vec::new();
        if f.share_drifted >= line && !f.drifted_features.is_empty() {
            causes.push(format!(
                "{:.0}% of features drifted ({})",
                f.share_drifted * 100.0,
                f.drifted_features.join(", ")
            ));
        }
        if f.prediction_drifted && policy.prediction_drift {
            causes.push("the prediction drifted".to_string());
        }
        if let Some(why) = f.multivariate.as_ref().filter(|_| policy.multivariate) {
            causes.push(format!("the features' joint distribution changed ({why})"));
        }
        if let Some(why) = f.estimated_drop.as_ref().filter(|_| policy.estimate) {
            causes.push(format!(
                "the performance estimated before labels dropped ({why})"
            ));
        }
        if let Some(why) = &f.performance_drop {
            causes.push(why.clone());
        }
        if let Some(why) = &f.error_rise {
            causes.push(why.clone());
        }
        if causes.is_empty() {
            *self = PolicyState {
                last_retrain_seq: self.last_retrain_seq,
                ..Default::default()
            };
            return Decision {
                decision: DriftDecision::NoDrift,
                reason: format!("{:.0}% of features drifted", f.share_drifted * 100.0),
                retrain: false,
            };
        }
        self.consecutive = self.consecutive.saturating_add(1);
        let reason = causes.join("; ");
        if self.consecutive < policy.confirmations && f.error_rise.is_none() {
            return Decision {
                decision: DriftDecision::Warning,
                reason: format!(
                    "{reason} (seen {} of {} times)",
                    self.consecutive, policy.confirmations
                ),
                retrain: false,
            };
        }
        self.confirmed = true;
        let cooled = self
            .last_retrain_seq
            .is_none_or(|s| f.seen >= s + policy.cooldown_events);
        if cooled {
            self.last_retrain_seq = Some(f.seen);
        }
        Decision {
            decision: DriftDecision::Drift,
            reason,
            retrain: cooled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(seen: u64, share: f64) -> Findings {
        Findings {
            window_events: 5_000,
            seen,
            share_drifted: share,
            drifted_features: if share > 0.0 {
                vec!["temp".into()]
            } else {
                vec![]
            },
            prediction_drifted: false,
            performance_drop: None,
            error_rise: None,
            multivariate: None,
            estimated_drop: None,
        }
    }

    #[test]
    fn drift_is_confirmed_after_consecutive_evaluations_then_cools_down() {
        let p = MonitorPolicy {
            cooldown_events: 3_000,
            ..Default::default()
        };
        let mut s = PolicyState::default();
        let d: Vec<_> = (1..=6)
            .map(|i| s.decide(&p, &findings(i * 1_000, 0.6)))
            .collect();
        let decisions: Vec<_> = d.iter().map(|d| d.decision).collect();
        use DriftDecision::*;
        assert_eq!(decisions, [Warning, Warning, Drift, Drift, Drift, Drift]);
        let retrains: Vec<_> = d.iter().map(|d| d.retrain).collect();
        // Requested at 3,000 events, then not before 6,000.
        assert_eq!(retrains, [false, false, true, false, false, true]);
    }

    #[test]
    fn one_clean_evaluation_resets_the_confirmation() {
        let p = MonitorPolicy::default();
        let mut s = PolicyState::default();
        s.decide(&p, &findings(1_000, 0.6));
        s.decide(&p, &findings(2_000, 0.6));
        assert_eq!(
            s.decide(&p, &findings(3_000, 0.1)).decision,
            DriftDecision::NoDrift
        );
        assert_eq!(
            s.decide(&p, &findings(4_000, 0.6)).decision,
            DriftDecision::Warning
        );
    }

    #[test]
    fn a_confirmed_drift_holds_until_the_share_falls_below_the_release_line() {
        let p = MonitorPolicy {
            confirmations: 1,
            ..Default::default()
        };
        let mut s = PolicyState::default();
        assert_eq!(
            s.decide(&p, &findings(1_000, 0.5)).decision,
            DriftDecision::Drift
        );
        assert_eq!(
            s.decide(&p, &findings(2_000, 0.45)).decision,
            DriftDecision::Drift
        );
        assert_eq!(
            s.decide(&p, &findings(3_000, 0.3)).decision,
            DriftDecision::NoDrift
        );
        assert_eq!(
            s.decide(&p, &findings(4_000, 0.45)).decision,
            DriftDecision::NoDrift
        );
    }

    #[test]
    fn too_few_events_never_drift() {
        let p = MonitorPolicy {
            confirmations: 1,
            ..Default::default()
        };
        let mut s = PolicyState::default();
        let f = Findings {
            window_events: 10,
            ..findings(10, 1.0)
        };
        let d = s.decide(&p, &f);
        assert_eq!((d.decision, d.retrain), (DriftDecision::NoDrift, false));
    }

    #[test]
    fn corrections_match_their_textbook_definitions() {
        let p = [Some(0.01), None, Some(0.04), Some(0.03), Some(0.2)];
        let b = Correction::Bonferroni.adjust(&p);
        assert_eq!(b, [Some(0.04), None, Some(0.16), Some(0.12), Some(0.8)]);
        // statsmodels multipletests(method="fdr_bh") on [0.01, 0.04, 0.03, 0.2]:
        // [0.04, 0.05333.., 0.05333.., 0.2]
        let bh = Correction::BenjaminiHochberg.adjust(&p);
        let want = [0.04, 0.16 / 3.0, 0.16 / 3.0, 0.2];
        for (got, want) in bh.iter().flatten().zip(want) {
            assert!((got - want).abs() < 1e-15, "{bh:?}");
        }
        assert_eq!(bh[1], None);
    }
}
