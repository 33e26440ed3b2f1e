//! What a service's probes answer, shared by everything that knows part of it.
//!
//! - **Ready**: the service does its work (models loaded, consuming) and no dependency it
//!   needs is failing. A dependency's trouble (a broker that refuses deliveries) makes it
//!   not ready while it lasts, without stopping the service.
//! - **Live**: its consumer loop turns. A loop that has not turned, or a batch that has been
//!   processing, for longer than the stuck limit means the process needs a restart.
//!
//! Every service serves both on `/health/ready` and `/health/live` (503 when false, with
//! the reasons in the body).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::watch;

use crate::now_ms;

/// How long a consumer loop may go without turning, or a batch may process, before the
/// service counts as stuck: librdkafka's default `max.poll.interval.ms`, after which the
/// group would evict the member anyway.
pub const STUCK_AFTER: Duration = Duration::from_secs(300);

/// Cheap to clone; every clone sees the same state. Whoever starts a service keeps a
/// clone: `driftline up` waits on the predictor's.
#[derive(Clone, Debug)]
pub struct Health(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    ready: watch::Sender<bool>,
    /// Failing dependencies, by name, with what is wrong.
    problems: Mutex<BTreeMap<String, String>>,
    /// When the consumer loop last turned (ms since the epoch); 0 while no loop runs.
    beat: AtomicI64,
    /// When the batch being processed started (ms); 0 while none is.
    busy_since: AtomicI64,
    stuck_after_ms: i64,
}

impl Default for Health {
    fn default() -> Self {
        Self::with_stuck_after(STUCK_AFTER)
    }
}

impl Health {
    pub fn with_stuck_after(stuck_after: Duration) -> Self {
        Self(Arc::new(Inner {
            ready: watch::Sender::new(false),
            problems: Mutex::default(),
            beat: AtomicI64::new(0),
            busy_since: AtomicI64::new(0),
            stuck_after_ms: i64::try_from(stuck_after.as_millis()).unwrap_or(i64::MAX),
        }))
    }

    /// The service's own part: it does its work.
    pub fn set(&self, ready: bool) {
        self.0.ready.send_replace(ready);
    }

    /// Ready: doing its work, with no failing dependency.
    pub fn is_ready(&self) -> bool {
        *self.0.ready.borrow() && self.problems().is_empty()
    }

    /// Returns once the service does its work (dependencies aside: `up` waits on this).
    pub async fn wait(&self) {
        let mut rx = self.0.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Marks `dependency` as failing with `reason`, or (`None`) as working again.
    pub fn problem(&self, dependency: &str, reason: Option<String>) {
        let mut problems = self.0.problems.lock().unwrap_or_else(|e| e.into_inner());
        match reason {
            Some(r) => {
                problems.insert(dependency.to_string(), r);
            }
            None => {
                problems.remove(dependency);
            }
        }
    }

    pub fn problems(&self) -> BTreeMap<String, String> {
        self.0
            .problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The consumer loop turned (or, with `running` false, stopped: no longer watched).
    pub fn beat(&self, running: bool) {
        self.0
            .beat
            .store(if running { now_ms() } else { 0 }, Ordering::Relaxed);
    }

    /// A batch started (`true`) or finished processing.
    pub fn busy(&self, busy: bool) {
        self.0
            .busy_since
            .store(if busy { now_ms() } else { 0 }, Ordering::Relaxed);
    }

    /// Why the service is stuck, if it is.
    pub fn stuck(&self) -> Option<String> {
        self.stuck_at(now_ms())
    }

    fn stuck_at(&self, now: i64) -> Option<String> {
        let limit = self.0.stuck_after_ms;
        let beat = self.0.beat.load(Ordering::Relaxed);
        let busy = self.0.busy_since.load(Ordering::Relaxed);
        if beat > 0 && now - beat > limit {
            Some(format!(
                "the consumer loop has not turned for {} s",
                (now - beat) / 1000
            ))
        } else if busy > 0 && now - busy > limit {
            Some(format!(
                "one batch has been processing for {} s",
                (now - busy) / 1000
            ))
        } else {
            None
        }
    }
}

/// `GET /health/live` and `GET /health/ready`, to merge into a service's HTTP API.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(health)
}

/// The answer to a liveness probe: 200, or 503 with why.
pub async fn live(State(health): State<Health>) -> Response {
    match health.stuck() {
        None => Json(serde_json::json!({ "live": true })).into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "live": false, "reason": why })),
        )
            .into_response(),
    }
}

/// The answer to a readiness probe: 200, or 503 with the failing dependencies.
pub async fn ready(State(health): State<Health>) -> Response {
    let ready = health.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ready": ready, "problems": health.problems() });
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_dependency_makes_a_ready_service_not_ready_until_it_recovers() {
        let h = Health::default();
        h.set(true);
        assert!(h.is_ready());
        h.problem("kafka", Some("deliveries to x fail".into()));
        assert!(!h.is_ready());
        h.problem("kafka", None);
        assert!(h.is_ready());
    }

    #[test]
    fn a_loop_that_stops_turning_or_a_batch_that_never_ends_is_stuck() {
        let h = Health::with_stuck_after(Duration::from_secs(10));
        let now = now_ms();
        assert_eq!(h.stuck_at(now), None, "no loop running is not stuck");
        h.beat(true);
        assert_eq!(h.stuck_at(now + 5_000), None);
        assert!(h.stuck_at(now + 11_000).unwrap().contains("not turned"));
        h.beat(true);
        h.busy(true);
        h.0.beat.store(now + 20_000, Ordering::Relaxed);
        assert!(h.stuck_at(now + 20_000).unwrap().contains("processing"));
        h.busy(false);
        assert_eq!(h.stuck_at(now + 20_000), None);
        h.beat(false);
        assert_eq!(
            h.stuck_at(now + 1_000_000),
            None,
            "a stopped loop is not watched"
        );
    }
}
