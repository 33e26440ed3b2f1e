//! The live rollout gate: a canary judged on the labelled rows of live traffic, and a
//! promotion watched until its live error is known. Pure: the processor gives it what
//! serves the model (by the registry) and each labelled row's loss; it answers with the
//! decisions the job runner publishes on the models topic.
//!
//! - **Trial.** While a version is a canary, its live error and production's over the
//!   same time (rows served since the canary's record) are summed. Once both have
//!   [`Gate::min_rows`] labelled rows, the canary is promoted if its mean loss beats
//!   production's by the margin (the holdout gate's rule, [`better`]), else rejected.
//!   A shadow is judged the same way on the rows production served since the shadow's
//!   record, each of which carries the shadow's prediction of the same request: the two
//!   sides are the very same requests.
//! - **Watch.** When a newer version replaces production (promoted by the trial or by
//!   hand) and the version it replaced has a live error over at least `min_rows` rows,
//!   the newcomer's first [`Gate::watch_rows`] rows are compared with it: if the
//!   predecessor beats the newcomer by the margin, production is rolled back. The
//!   predecessor's error is the one measured beside the canary when there was a trial
//!   (same traffic, same time), else its error over its own time in production: on a
//!   drifting stream that older figure flatters it, which is why the watch is off unless
//!   asked for (`--rollback-watch-rows`, on with `--rollout canary`).
//!
//! Only the primary metric's per-row loss is counted (absolute error for regression,
//! log loss for classification), so live and holdout figures read the same.

use driftline_model::better;
use serde::{Deserialize, Serialize};

use crate::train::absolute_margin;

/// The gate's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gate {
    /// Labelled rows the canary and production each need before a canary is judged.
    pub min_rows: u64,
    /// Relative improvement the better side needs (as the holdout gate's margin).
    pub margin: f64,
    /// Rows of a newly promoted version compared with its predecessor; 0 = no watch.
    pub watch_rows: u64,
}

/// The sum of a version's per-row losses over labelled rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Live {
    pub rows: u64,
    pub loss: f64,
}

impl Live {
    fn add(&mut self, loss: f64) {
        self.rows += 1;
        self.loss += loss;
    }

    pub fn mean(&self) -> Option<f64> {
        (self.rows > 0).then(|| self.loss / self.rows as f64)
    }
}

/// A version's time in production, from the record that put it there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Term {
    pub version: i64,
    /// `published_at` of that record.
    pub since: i64,
    pub live: Live,
}

/// A canary on trial beside production.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub version: i64,
    pub since: i64,
    pub live: Live,
    /// Production's live error over the same time.
    pub production: Live,
    pub decided: bool,
}

/// A newly promoted version under watch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watch {
    pub previous: i64,
    /// The previous version's live error, which the newcomer's is compared with.
    pub reference: Live,
    pub decided: bool,
}

/// One model's rollout state (kept in the store, committed with the labelled offsets;
/// a field missing from an older state is empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rollout {
    pub production: Option<Term>,
    pub canary: Option<Trial>,
    pub shadow: Option<Trial>,
    pub watch: Option<Watch>,
}

/// What serves a model now, by the registry: (version, `published_at`) of production,
/// of the canary and of the shadow.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Serving {
    pub production: Option<(i64, i64)>,
    pub canary: Option<(i64, i64)>,
    pub shadow: Option<(i64, i64)>,
}

/// One labelled row as the gate sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// The version that served the prediction.
    pub version: i64,
    pub served_at: i64,
    /// Its loss on the primary metric.
    pub loss: f64,
    /// The shadow's version and its loss on the same request, when one was logged.
    pub shadow: Option<(i64, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The canary won its trial.
    Promote,
    /// The canary lost its trial.
    Reject,
    /// The watched production version is worse than its predecessor.
    Rollback,
    /// The watched production version holds up: nothing to publish.
    Keep,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::Reject => "reject",
            Action::Rollback => "rollback",
            Action::Keep => "keep",
        }
    }
}

/// A decision of the gate, for `version` of `model`, with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub model: String,
    pub version: i64,
    pub action: Action,
    pub reason: String,
    /// The labelled partition whose owner publishes it.
    pub partition: i32,
}

impl Rollout {
    /// Follows what serves the model now. A change of production starts a new term, and
    /// a watch when a newer version replaced one with a known live error; a new canary
    /// record starts a new trial.
    pub fn follow(&mut self, serving: Serving, gate: &Gate) {
        let term = self.production.as_ref().map(|t| (t.version, t.since));
        if term != serving.production {
            let old = self.production.take();
            self.watch = None;
            if let Some((version, since)) = serving.production {
                if let Some(old) = old
                    && gate.watch_rows > 0
                    && version > old.version
                {
                    // Beside the canary or shadow, the same traffic at the same time; else
                    // its term.
                    let trial = [&self.canary, &self.shadow]
                        .into_iter()
                        .flatten()
                        .find(|t| t.version == version);
                    let reference = trial.map_or(old.live, |t| t.production);
                    self.watch = (reference.rows >= gate.min_rows).then_some(Watch {
                        previous: old.version,
                        reference,
                        decided: false,
                    });
                }
                self.production = Some(Term {
                    version,
                    since,
                    live: Live::default(),
                });
            }
        }
        for (trial, now) in [
            (&mut self.canary, serving.canary),
            (&mut self.shadow, serving.shadow),
        ] {
            if trial.as_ref().map(|t| (t.version, t.since)) != now {
                *trial = now.map(|(version, since)| Trial {
                    version,
                    since,
                    live: Live::default(),
                    production: Live::default(),
                    decided: false,
                });
            }
        }
    }

    /// Counts one labelled row of the model (loss on `metric`); the decisions it makes
    /// due, each made once.
    pub fn count(&mut self, row: Row, gate: &Gate, metric: &str) -> Vec<(i64, Action, String)> {
        if let Some(t) = &mut self.production
            && row.version == t.version
            && row.served_at >= t.since
        {
            t.live.add(row.loss);
            if let Some(c) = &mut self.canary
                && row.served_at >= c.since
            {
                c.production.add(row.loss);
            }
        }
        if let Some(c) = &mut self.canary
            && row.version == c.version
            && row.served_at >= c.since
        {
            c.live.add(row.loss);
        }
        // The shadow's trial pairs each request production answered with the shadow's
        // answer to it.
        if let (Some(sh), Some(p), Some((version, loss))) =
            (&mut self.shadow, &self.production, row.shadow)
            && version == sh.version
            && row.version == p.version
            && row.served_at >= sh.since
            && row.served_at >= p.since
        {
            sh.live.add(loss);
            sh.production.add(row.loss);
        }
        let mut decisions = Vec::new();
        for (trial, role) in [(&mut self.canary, "canary"), (&mut self.shadow, "shadow")] {
            if let (Some(c), Some(p)) = (trial, &self.production)
                && let Some(decision) = c.judge(p.version, role, gate, metric)
            {
                decisions.push(decision);
            }
        }
        if let (Some(w), Some(p)) = (&mut self.watch, &self.production)
            && !w.decided
            && p.live.rows >= gate.watch_rows
        {
            w.decided = true;
            let worse = beats(w.reference, p.live, gate.margin, metric);
            let action = if worse {
                Action::Rollback
            } else {
                Action::Keep
            };
            let reason = format!(
                "v{} {metric} {} over its first {} live rows vs v{} before it {} over {}: {}",
                p.version,
                fmt(p.live),
                p.live.rows,
                w.previous,
                fmt(w.reference),
                w.reference.rows,
                action.as_str()
            );
            decisions.push((p.version, action, reason));
        }
        decisions
    }
}

impl Trial {
    /// Promotes or rejects the version once both sides have `gate.min_rows` rows; once.
    fn judge(
        &mut self,
        production: i64,
        role: &str,
        gate: &Gate,
        metric: &str,
    ) -> Option<(i64, Action, String)> {
        if self.decided || self.live.rows < gate.min_rows || self.production.rows < gate.min_rows {
            return None;
        }
        self.decided = true;
        let action = if beats(self.live, self.production, gate.margin, metric) {
            Action::Promote
        } else {
            Action::Reject
        };
        let reason = format!(
            "{role} v{} {metric} {} over {} live rows vs production v{production} {} over {}: {}",
            self.version,
            fmt(self.live),
            self.live.rows,
            fmt(self.production),
            self.production.rows,
            action.as_str()
        );
        Some((self.version, action, reason))
    }
}

/// Whether `a`'s mean loss beats `b`'s by the relative margin (the holdout gate's rule).
fn beats(a: Live, b: Live, margin: f64, metric: &str) -> bool {
    let of = |l: Live| {
        l.mean()
            .map(|m| [(metric.to_string(), m)].into())
            .unwrap_or_default()
    };
    let (a, b) = (of(a), of(b));
    better(&a, &b, metric, absolute_margin(&b, metric, margin))
}

fn fmt(l: Live) -> String {
    l.mean().map_or("-".to_string(), |m| format!("{m:.4}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATE: Gate = Gate {
        min_rows: 10,
        margin: 0.01,
        watch_rows: 10,
    };

    fn row(version: i64, served_at: i64, loss: f64) -> Row {
        Row {
            version,
            served_at,
            loss,
            shadow: None,
        }
    }

    /// A row production v1 served at `served_at`, with shadow v2's answer beside it.
    fn shadowed(served_at: i64, loss: f64, shadow_loss: f64) -> Row {
        Row {
            shadow: Some((2, shadow_loss)),
            ..row(1, served_at, loss)
        }
    }

    /// Production v1 since t=0, shadow v2 since t=100.
    fn shadowing() -> Rollout {
        let mut r = Rollout::default();
        r.follow(
            Serving {
                production: Some((1, 0)),
                shadow: Some((2, 100)),
                canary: None,
            },
            &GATE,
        );
        r
    }

    /// Production v1 since t=0, canary v2 since t=100.
    fn on_trial() -> Rollout {
        let mut r = Rollout::default();
        r.follow(
            Serving {
                production: Some((1, 0)),
                canary: Some((2, 100)),
                shadow: None,
            },
            &GATE,
        );
        r
    }

    fn decisions(r: &mut Rollout, rows: impl IntoIterator<Item = Row>) -> Vec<(i64, Action)> {
        rows.into_iter()
            .flat_map(|x| r.count(x, &GATE, "mae"))
            .map(|(v, a, _)| (v, a))
            .collect()
    }

    #[test]
    fn a_canary_better_on_live_labels_is_promoted_once_both_sides_have_enough_rows() {
        let mut r = on_trial();
        // Production's rows before the canary began do not count in the trial.
        let before = (0..50).map(|i| row(1, 50 + i % 40, 0.1));
        assert!(decisions(&mut r, before).is_empty());
        let canary = (0..10).map(|i| row(2, 200 + i, 1.0));
        assert!(
            decisions(&mut r, canary).is_empty(),
            "production has no rows yet"
        );
        let production = (0..10).map(|i| row(1, 200 + i, 2.0));
        assert_eq!(decisions(&mut r, production), [(2, Action::Promote)]);
        // Decided once.
        let more = (0..30).map(|i| row(2, 300 + i, 1.0));
        assert!(decisions(&mut r, more).is_empty());
    }

    #[test]
    fn a_canary_not_better_by_the_margin_is_rejected() {
        let mut r = on_trial();
        let rows = (0..10).flat_map(|i| [row(1, 200 + i, 1.0), row(2, 200 + i, 0.995)]);
        let out: Vec<_> = rows.flat_map(|x| r.count(x, &GATE, "mae")).collect();
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0, out[0].1), (2, Action::Reject));
        assert!(
            out[0]
                .2
                .contains("canary v2 mae 0.9950 over 10 live rows vs production v1 1.0000"),
            "{}",
            out[0].2
        );
    }

    #[test]
    fn a_promoted_canary_worse_than_its_predecessor_beside_it_is_rolled_back() {
        let mut r = on_trial();
        let trial = (0..10).flat_map(|i| [row(1, 200 + i, 2.0), row(2, 200 + i, 1.0)]);
        assert_eq!(decisions(&mut r, trial), [(2, Action::Promote)]);
        r.follow(
            Serving {
                production: Some((2, 500)),
                canary: None,
                shadow: None,
            },
            &GATE,
        );
        let w = r.watch.clone().expect("watched");
        assert_eq!((w.previous, w.reference.rows), (1, 10));
        // Late rows of v1 and rows of v2 from its canary time are not its production term.
        let stale = [row(1, 600, 9.0), row(2, 300, 9.0)];
        assert!(decisions(&mut r, stale).is_empty());
        let after = (0..10).map(|i| row(2, 600 + i, 3.0));
        assert_eq!(decisions(&mut r, after), [(2, Action::Rollback)]);
    }

    #[test]
    fn a_promotion_that_holds_up_is_kept_and_a_rollback_starts_no_watch() {
        let mut r = Rollout::default();
        r.follow(
            Serving {
                production: Some((1, 0)),
                canary: None,
                shadow: None,
            },
            &GATE,
        );
        assert!(decisions(&mut r, (0..10).map(|i| row(1, i, 1.0))).is_empty());
        // Promoted by hand: watched against v1's term.
        r.follow(
            Serving {
                production: Some((3, 100)),
                canary: None,
                shadow: None,
            },
            &GATE,
        );
        assert_eq!(r.watch.as_ref().map(|w| w.previous), Some(1));
        let fine = (0..10).map(|i| row(3, 100 + i, 1.0));
        assert_eq!(decisions(&mut r, fine), [(3, Action::Keep)]);
        // Back to an older version: nothing to watch.
        r.follow(
            Serving {
                production: Some((1, 200)),
                canary: None,
                shadow: None,
            },
            &GATE,
        );
        assert!(r.watch.is_none());
    }

    #[test]
    fn no_watch_without_enough_rows_of_the_predecessor_or_when_it_is_off() {
        let mut r = Rollout::default();
        let v1 = Serving {
            production: Some((1, 0)),
            canary: None,
            shadow: None,
        };
        r.follow(v1, &GATE);
        decisions(&mut r, (0..5).map(|i| row(1, i, 1.0)));
        let v2 = Serving {
            production: Some((2, 100)),
            canary: None,
            shadow: None,
        };
        r.follow(v2, &GATE);
        assert!(
            r.watch.is_none(),
            "5 rows of v1 are too few to compare with"
        );

        let mut r = Rollout::default();
        let off = Gate {
            watch_rows: 0,
            ..GATE
        };
        r.follow(v1, &off);
        for i in 0..20 {
            r.count(row(1, i, 1.0), &off, "mae");
        }
        r.follow(v2, &off);
        assert!(r.watch.is_none());
    }

    #[test]
    fn a_new_canary_record_starts_a_new_trial() {
        let mut r = on_trial();
        decisions(&mut r, (0..5).map(|i| row(2, 200 + i, 1.0)));
        r.follow(
            Serving {
                production: Some((1, 0)),
                canary: Some((2, 300)),
                shadow: None,
            },
            &GATE,
        );
        assert_eq!(r.canary.as_ref().map(|t| t.live.rows), Some(0));
        r.follow(
            Serving {
                production: Some((1, 0)),
                canary: None,
                shadow: None,
            },
            &GATE,
        );
        assert!(r.canary.is_none());
    }

    #[test]
    fn a_shadow_is_judged_on_the_same_requests_production_answered() {
        let mut r = shadowing();
        // Rows from before the shadow's record, or without its answer, do not count.
        let before = (0..20).map(|i| shadowed(50 + i, 1.0, 0.1));
        let plain = (0..20).map(|i| row(1, 200 + i, 1.0));
        assert!(decisions(&mut r, before.chain(plain)).is_empty());
        assert_eq!(r.shadow.as_ref().map(|t| t.production.rows), Some(0));
        let better = (0..10).map(|i| shadowed(200 + i, 2.0, 1.0));
        assert_eq!(decisions(&mut r, better), [(2, Action::Promote)]);
        let t = r.shadow.clone().expect("on trial");
        assert_eq!((t.live.rows, t.production.rows), (10, 10));
        assert_eq!((t.live.mean(), t.production.mean()), (Some(1.0), Some(2.0)));

        // A worse shadow is rejected, with its role in the reason.
        let mut r = shadowing();
        let worse = (0..10).map(|i| shadowed(200 + i, 1.0, 1.5));
        let out: Vec<_> = worse.flat_map(|x| r.count(x, &GATE, "mae")).collect();
        assert_eq!((out.len(), out[0].1), (1, Action::Reject));
        assert!(out[0].2.starts_with("shadow v2 mae 1.5000"), "{}", out[0].2);
    }

    #[test]
    fn a_promoted_shadow_is_watched_against_production_beside_it() {
        let mut r = shadowing();
        let trial = (0..10).map(|i| shadowed(200 + i, 2.0, 1.0));
        assert_eq!(decisions(&mut r, trial), [(2, Action::Promote)]);
        r.follow(
            Serving {
                production: Some((2, 500)),
                canary: None,
                shadow: None,
            },
            &GATE,
        );
        let w = r.watch.clone().expect("watched");
        assert_eq!((w.previous, w.reference.mean()), (1, Some(2.0)));
        assert!(r.shadow.is_none());
        let after = (0..10).map(|i| row(2, 600 + i, 3.0));
        assert_eq!(decisions(&mut r, after), [(2, Action::Rollback)]);
    }

    #[test]
    fn a_state_saved_before_shadows_reads_back_with_none() {
        let saved = r#"{"production":{"version":1,"since":0,"live":{"rows":3,"loss":1.5}},"canary":null,"watch":null}"#;
        let r: Rollout = serde_json::from_str(saved).unwrap();
        assert_eq!(r.production.map(|t| t.live.rows), Some(3));
        assert!(r.shadow.is_none());
    }
}
