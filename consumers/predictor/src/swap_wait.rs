//! `--max-swap-wait`: a request from Kafka waits until the trainer has decided every
//! version in effect at its event time, so which version answers it follows from the
//! log even when a version is published late (a trainer killed mid-backlog, restoring,
//! or training the triggers one by one).
//!
//! The trainer (with `--swap-lag`) writes each model's progress to `driftline.progress`:
//! every version still to come takes effect after `decided_until`, and `version` is the
//! newest published then. A request at event time t goes once `t <= decided_until` and
//! the registry holds that version. Live, the trainer runs seconds behind and the lag is
//! a day: nothing waits. In a replay, event time outruns training, and a request waits
//! for it: that is the price. A model without progress records is not held (no trainer
//! with `--swap-lag`), and a wait is given up at the bound, counted, after which the
//! model's requests go on with what the predictor holds until the trainer's progress
//! moves again, so a stopped trainer slows serving by one bound, not for good.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use driftline_runtime::Gate;
use driftline_runtime::progress::SharedProgress;
use driftline_runtime::registry::SharedRegistry;
use driftline_schemas::codec::Codec;
use driftline_schemas::events::PredictionRequest;
use tracing::warn;

use crate::metrics::PredictorMetrics;

/// What to do with a held request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Go,
    Wait,
    /// Waited the bound: go, and do not wait again until the progress moves.
    GiveUp,
}

/// The model's progress as (`decided_until`, version named), the newest version the
/// registry holds, the request's event time, how long it has been held, the bound, and
/// the `decided_until` a wait was last given up at.
pub fn verdict(
    progress: Option<(i64, i64)>,
    held_version: i64,
    event_time: i64,
    held_for: Duration,
    max_wait: Duration,
    given_up_at: Option<i64>,
) -> Verdict {
    let Some((decided_until, version)) = progress else {
        return Verdict::Go;
    };
    let decided = event_time <= decided_until && held_version >= version;
    // Given up at this progress: the trainer has not moved since, nothing to wait for.
    if decided || given_up_at == Some(decided_until) {
        Verdict::Go
    } else if held_for >= max_wait {
        Verdict::GiveUp
    } else {
        Verdict::Wait
    }
}

/// The gate the predictor's consumer puts before each request partition's next message.
pub struct SwapWait {
    pub progress: SharedProgress,
    pub registry: SharedRegistry,
    pub codec: Codec,
    pub max_wait: Duration,
    pub metrics: PredictorMetrics,
    /// Per model: the `decided_until` a wait was given up at.
    given_up: Mutex<HashMap<String, i64>>,
    /// Per model: the request held now (to count each held request once).
    holding: Mutex<HashMap<String, String>>,
}

impl SwapWait {
    pub fn new(
        progress: SharedProgress,
        registry: SharedRegistry,
        codec: Codec,
        max_wait: Duration,
        metrics: PredictorMetrics,
    ) -> Self {
        Self {
            progress,
            registry,
            codec,
            max_wait,
            metrics,
            given_up: Mutex::default(),
            holding: Mutex::default(),
        }
    }

    /// Whether the request in `payload`, held for `held_for`, may go. One that does not
    /// decode goes: the processor dead-letters it.
    pub fn may_go(&self, payload: &[u8], held_for: Duration) -> bool {
        let Ok(request) = self.codec.decode::<PredictionRequest>(payload) else {
            return true;
        };
        let model = &request.model;
        let progress = self
            .progress
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(model)
            .map(|p| (p.decided_until, p.version));
        let held_version = self
            .registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .latest_version(model);
        let given_up_at = self
            .given_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(model)
            .copied();
        let v = verdict(
            progress,
            held_version,
            request.event_time,
            held_for,
            self.max_wait,
            given_up_at,
        );
        let mut holding = self.holding.lock().unwrap_or_else(|e| e.into_inner());
        match v {
            Verdict::Go => {
                holding.remove(model);
                true
            }
            Verdict::Wait => {
                if holding.get(model) != Some(&request.request_id) {
                    holding.insert(model.clone(), request.request_id.clone());
                    self.metrics.swap_waits.with_label_values(&[model]).inc();
                }
                false
            }
            Verdict::GiveUp => {
                holding.remove(model);
                let (decided_until, version) = progress.unwrap_or_default();
                warn!(%model, event_time = request.event_time, decided_until, version, held_version, waited_ms = held_for.as_millis() as u64, "the trainer has not decided the versions in effect at this request's event time; going on with what is held until its progress moves");
                self.given_up
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(model.clone(), decided_until);
                self.metrics
                    .swap_waits_given_up
                    .with_label_values(&[model])
                    .inc();
                true
            }
        }
    }

    /// As the consumer's gate.
    pub fn gate(self: Arc<Self>) -> Gate {
        Arc::new(move |_, payload, _, held_for| self.may_go(payload, held_for))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(30);

    #[test]
    fn a_request_goes_once_the_trainer_has_decided_its_time_and_the_registry_holds_the_version() {
        let at = |progress, held, t| verdict(progress, held, t, Duration::ZERO, BOUND, None);
        assert_eq!(at(None, 1, 500), Verdict::Go, "no progress: not held");
        assert_eq!(at(Some((400, 2)), 2, 500), Verdict::Wait, "not decided yet");
        assert_eq!(at(Some((500, 2)), 2, 500), Verdict::Go);
        assert_eq!(
            at(Some((500, 3)), 2, 500),
            Verdict::Wait,
            "decided, but v3 is not read yet"
        );
        assert_eq!(at(Some((500, 3)), 3, 500), Verdict::Go);
    }

    #[test]
    fn a_wait_is_given_up_at_the_bound_and_not_taken_again_until_the_progress_moves() {
        let held = |held_for, given_up_at, decided_until| {
            verdict(
                Some((decided_until, 1)),
                1,
                500,
                held_for,
                BOUND,
                given_up_at,
            )
        };
        assert_eq!(held(BOUND, None, 400), Verdict::GiveUp);
        assert_eq!(held(Duration::ZERO, Some(400), 400), Verdict::Go);
        assert_eq!(
            held(Duration::ZERO, Some(400), 450),
            Verdict::Wait,
            "the trainer moved: wait again"
        );
    }
}
