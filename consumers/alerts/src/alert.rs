//! When a report is worth an alert, and what the alert says. Pure: no I/O.
//!
//! The monitor publishes a report at every evaluation, so a drifting model would page
//! someone every few minutes. An alert goes out on a change of state instead: a model's
//! level (its decision, or NO_DRIFT when the decision is below the configured minimum)
//! rises from NO_DRIFT (raised), moves between WARNING and DRIFT (changed), or falls back
//! to NO_DRIFT (resolved). The level of the last report is the only state kept per model.

use driftline_schemas::events::{DriftDecision, DriftReport};
use serde::Serialize;
use serde_json::{Value, json};

/// How severe a decision is, for comparing it with the minimum.
fn rank(d: DriftDecision) -> u8 {
    match d {
        DriftDecision::NoDrift => 0,
        DriftDecision::Warning => 1,
        DriftDecision::Drift => 2,
    }
}

/// A report's level: its decision, or NO_DRIFT below `min`.
pub fn level(report: &DriftReport, min: DriftDecision) -> DriftDecision {
    if rank(report.decision) >= rank(min) {
        report.decision
    } else {
        DriftDecision::NoDrift
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// From NO_DRIFT to WARNING or DRIFT.
    Raised,
    /// Between WARNING and DRIFT.
    Changed,
    /// Back to NO_DRIFT.
    Resolved,
}

/// What the level of a model moved from and to, if it moved. `previous` is the level of
/// the model's last report (none before its first, which counts as NO_DRIFT).
pub fn change(previous: Option<DriftDecision>, now: DriftDecision) -> Option<Change> {
    let previous = previous.unwrap_or(DriftDecision::NoDrift);
    match (previous, now) {
        (p, n) if p == n => None,
        (DriftDecision::NoDrift, _) => Some(Change::Raised),
        (_, DriftDecision::NoDrift) => Some(Change::Resolved),
        _ => Some(Change::Changed),
    }
}

/// One alert: the change and the report that made it.
#[derive(Debug, Clone, Copy)]
pub struct Alert<'a> {
    pub change: Change,
    pub previous: DriftDecision,
    pub report: &'a DriftReport,
}

impl Alert<'_> {
    /// The id a receiver can drop a repeated delivery by: a crash between a delivery and
    /// the commit of its offset sends the same alert again.
    pub fn id(&self) -> &str {
        &self.report.report_id
    }

    fn drifted(&self) -> Vec<&str> {
        self.report
            .features
            .iter()
            .chain(self.report.prediction.as_ref())
            .filter(|f| f.drifted)
            .map(|f| f.name.as_str())
            .collect()
    }

    /// The generic body: the change in a few fields, then the whole report as the
    /// monitor's HTTP API shows it.
    pub fn json(&self) -> Value {
        let r = self.report;
        json!({
            "id": self.id(),
            "type": "driftline.alert",
            "change": self.change,
            "model": r.model,
            "model_version": r.model_version,
            "decision": r.decision.symbol(),
            "previous_decision": self.previous.symbol(),
            "reason": r.reason,
            "drifted": self.drifted(),
            "evaluated_at": r.evaluated_at,
            "report": r,
        })
    }

    /// A Slack incoming-webhook body (`text` in Slack's mrkdwn), also what Mattermost and
    /// Rocket.Chat accept.
    pub fn slack(&self) -> Value {
        json!({ "text": self.text() })
    }

    /// One paragraph for people: what changed, which features, the errors, why.
    pub fn text(&self) -> String {
        let r = self.report;
        let head = match self.change {
            Change::Raised | Change::Changed => format!(
                ":rotating_light: driftline: *{}* v{} is {} (was {})",
                escape(&r.model),
                r.model_version,
                r.decision,
                self.previous
            ),
            Change::Resolved => format!(
                ":white_check_mark: driftline: *{}* v{} is back to {} (was {})",
                escape(&r.model),
                r.model_version,
                r.decision,
                self.previous
            ),
        };
        let mut lines = vec![head];
        let drifted = self.drifted();
        if !drifted.is_empty() {
            lines.push(format!(
                "Drifted ({} of {} features): {}",
                drifted.len(),
                r.features.len() + usize::from(r.prediction.is_some()),
                escape(&drifted.join(", "))
            ));
        }
        for m in &r.performance {
            let reference = m
                .reference
                .map(|x| format!(" (holdout {x:.4})"))
                .unwrap_or_default();
            lines.push(format!(
                "{}: {:.4}{reference}",
                escape(&m.metric),
                m.current
            ));
        }
        if !r.reason.is_empty() {
            lines.push(format!("Why: {}", escape(&r.reason)));
        }
        lines.push(format!(
            "Window: {} events; report {}",
            r.window.count,
            escape(&r.report_id)
        ));
        lines.join("\n")
    }
}

/// Slack's mrkdwn reads `<`, `>` and `&` as markup: they are sent as entities.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftline_schemas::events::{FeatureDrift, FeatureKind, MetricComparison, ReportWindow};

    fn report(decision: DriftDecision) -> DriftReport {
        let feature = |name: &str, drifted: bool| FeatureDrift {
            name: name.into(),
            kind: FeatureKind::Numeric,
            psi: Some(0.3),
            ks_d: None,
            ks_p: None,
            wasserstein_norm: None,
            jensen_shannon: None,
            chi2_p: None,
            missing_share: 0.0,
            drifted,
            signals: vec![],
        };
        DriftReport {
            report_id: "flights-3-7".into(),
            model: "flights<prod>".into(),
            model_version: 3,
            evaluated_at: 1_700_000_000_000,
            window: ReportWindow {
                count: 5000,
                ..Default::default()
            },
            features: vec![feature("temp", true), feature("dep_delay", false)],
            prediction: Some(feature("prediction", true)),
            performance: vec![MetricComparison {
                metric: "mae".into(),
                current: 14.25,
                reference: Some(11.0),
            }],
            share_drifted: 0.5,
            decision,
            reason: "mae 30% over holdout & 1 of 2 features drifted".into(),
            multivariate: None,
            estimated: None,
        }
    }

    use DriftDecision::{Drift, NoDrift, Warning};

    /// The alerts a sequence of decisions raises, from a model never seen.
    fn alerts(decisions: &[DriftDecision], min: DriftDecision) -> Vec<Option<Change>> {
        let mut previous = None;
        decisions
            .iter()
            .map(|d| {
                let now = level(&report(*d), min);
                let c = change(previous, now);
                previous = Some(now);
                c
            })
            .collect()
    }

    #[test]
    fn a_drifting_model_alerts_once_when_it_starts_and_once_when_it_ends() {
        assert_eq!(
            alerts(&[NoDrift, Drift, Drift, Drift, NoDrift, NoDrift], Drift),
            [
                None,
                Some(Change::Raised),
                None,
                None,
                Some(Change::Resolved),
                None
            ]
        );
    }

    #[test]
    fn a_first_report_alerts_only_if_it_is_at_or_above_the_minimum() {
        assert_eq!(alerts(&[Drift], Drift), [Some(Change::Raised)]);
        assert_eq!(alerts(&[NoDrift], Drift), [None]);
    }

    #[test]
    fn warnings_below_the_minimum_are_quiet_and_count_as_no_drift() {
        assert_eq!(
            alerts(&[Warning, Drift, Warning, Warning], Drift),
            [None, Some(Change::Raised), Some(Change::Resolved), None]
        );
    }

    #[test]
    fn with_warnings_on_a_move_between_warning_and_drift_is_a_change() {
        assert_eq!(
            alerts(&[Warning, Drift, Warning, NoDrift], Warning),
            [
                Some(Change::Raised),
                Some(Change::Changed),
                Some(Change::Changed),
                Some(Change::Resolved)
            ]
        );
    }

    #[test]
    fn the_json_body_names_the_change_the_drifted_features_and_carries_the_report() {
        let r = report(Drift);
        let alert = Alert {
            change: Change::Raised,
            previous: NoDrift,
            report: &r,
        };
        let body = alert.json();
        assert_eq!(body["id"], "flights-3-7");
        assert_eq!(body["change"], "raised");
        assert_eq!(body["decision"], "DRIFT");
        assert_eq!(body["previous_decision"], "NO_DRIFT");
        assert_eq!(body["drifted"], json!(["temp", "prediction"]));
        assert_eq!(body["report"]["window"]["count"], 5000);
        assert_eq!(body["report"]["features"][1]["name"], "dep_delay");
    }

    #[test]
    fn the_slack_text_says_what_changed_and_escapes_markup() {
        let r = report(NoDrift);
        let alert = Alert {
            change: Change::Resolved,
            previous: Drift,
            report: &r,
        };
        let text = alert.slack()["text"].as_str().unwrap().to_string();
        assert_eq!(
            text,
            ":white_check_mark: driftline: *flights&lt;prod&gt;* v3 is back to NO_DRIFT (was DRIFT)\n\
             Drifted (2 of 3 features): temp, prediction\n\
             mae: 14.2500 (holdout 11.0000)\n\
             Why: mae 30% over holdout &amp; 1 of 2 features drifted\n\
             Window: 5000 events; report flights-3-7"
        );
    }
}
