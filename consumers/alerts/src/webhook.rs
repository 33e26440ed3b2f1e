//! Posting an alert to a webhook, with retries.
//!
//! A target that answers 2xx has it. A timeout, a refused connection, 408, 429 or a 5xx
//! is tried again after a doubling pause (a 429's `Retry-After` when it asks for longer),
//! up to the configured attempts; any other 4xx means the request itself is wrong (a
//! revoked Slack URL answers 404) and is not repeated. Every attempt carries the alert's
//! id in `Idempotency-Key`, so a receiver can drop a repeat.
//!
//! A webhook URL is a secret (Slack's carries its token in the path): logs, errors and
//! metrics name a target by scheme, host and port only.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::Value;
use tokio::runtime::Handle;
use tracing::{debug, warn};

use crate::alert::Alert;
use crate::{Error, Result};

/// The body a target takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// [`Alert::json`].
    Json,
    /// [`Alert::slack`].
    Slack,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
        }
    }

    pub fn body(self, alert: &Alert<'_>) -> Value {
        match self {
            Format::Json => alert.json(),
            Format::Slack => alert.slack(),
        }
    }
}

/// One webhook: where, and in which format. Debug and Display hide the URL's path.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    url: reqwest::Url,
    pub format: Format,
}

impl Target {
    pub fn new(url: &str, format: Format) -> Result<Self> {
        let parsed = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                Error::Config(format!(
                    "a webhook must be an http or https URL with a host, not {:?}",
                    redact_str(url)
                ))
            })?;
        Ok(Self {
            url: parsed,
            format,
        })
    }

    /// Scheme, host and port: what a log may show of the URL.
    pub fn redacted(&self) -> String {
        let port = self.url.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "{}://{}{port}/…",
            self.url.scheme(),
            self.url.host_str().unwrap_or("")
        )
    }
}

/// What can be shown of a string that failed to parse as a URL: its scheme at most.
fn redact_str(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, _)) => format!("{scheme}://…"),
        None => "…".into(),
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.redacted(), self.format.name())
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How hard to try one target.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub timeout: Duration,
    /// The first pause; each next one doubles, up to [`Retry::max_backoff`].
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 5,
            timeout: Duration::from_secs(5),
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
        }
    }
}

/// Why a target did not take an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub attempts: u32,
    pub last: String,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.attempts == 1 { "" } else { "s" };
        write!(f, "{} (after {} attempt{s})", self.last, self.attempts)
    }
}

/// Posts alerts; one HTTP client (its connection pool) for every target.
pub struct Poster {
    client: Client,
    /// The runtime the client's connections live on; [`Poster::post`] blocks on it.
    runtime: Handle,
    retry: Retry,
}

/// One attempt's outcome.
enum Attempt {
    Delivered,
    /// Worth trying again, after at least this long.
    Transient(String, Option<Duration>),
    Permanent(String),
}

impl Poster {
    /// Call it inside the tokio runtime whose blocking pool will call [`Poster::post`].
    pub fn new(retry: Retry) -> Result<Self> {
        if retry.attempts == 0 {
            return Err(Error::Config(
                "--webhook-attempts must be at least 1".into(),
            ));
        }
        let client = Client::builder()
            .timeout(retry.timeout)
            .user_agent(concat!("driftline-alerts/", env!("CARGO_PKG_VERSION")))
            // A redirect could carry the alert somewhere the operator never named.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        let runtime = Handle::try_current()
            .map_err(|_| Error::Config("the webhook client needs a tokio runtime".into()))?;
        Ok(Self {
            client,
            runtime,
            retry,
        })
    }

    /// Posts `alert` to `target` until it is taken, a permanent error, or the attempts run
    /// out. Blocks (the pauses too): call it on the runtime's blocking pool, where the
    /// consumer runs its processor. Returns the attempts it took.
    pub fn post(&self, target: &Target, alert: &Alert<'_>) -> Result<u32, Failed> {
        let body = serde_json::to_vec(&target.format.body(alert)).expect("JSON values serialize");
        let mut pause = self.retry.backoff;
        for attempt in 1..=self.retry.attempts {
            match self.attempt(target, alert.id(), &body) {
                Attempt::Delivered => {
                    debug!(%target, id = alert.id(), attempt, "alert delivered");
                    return Ok(attempt);
                }
                Attempt::Permanent(last) => {
                    return Err(Failed {
                        attempts: attempt,
                        last,
                    });
                }
                Attempt::Transient(last, _) if attempt == self.retry.attempts => {
                    return Err(Failed {
                        attempts: attempt,
                        last,
                    });
                }
                Attempt::Transient(last, asked) => {
                    let wait = asked
                        .unwrap_or(pause)
                        .max(pause)
                        .min(self.retry.max_backoff);
                    warn!(%target, id = alert.id(), attempt, error = %last, wait_ms = wait.as_millis() as u64, "webhook failed; trying again");
                    std::thread::sleep(wait);
                    pause = (pause * 2).min(self.retry.max_backoff);
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    fn attempt(&self, target: &Target, id: &str, body: &[u8]) -> Attempt {
        let request = self
            .client
            .post(target.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", id)
            .body(body.to_vec())
            .send();
        let sent = self.runtime.block_on(request);
        let response = match sent {
            Ok(r) => r,
            // reqwest's error text includes the URL: keep only what kind of failure it was.
            Err(e) => return Attempt::Transient(describe(&e), None),
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Delivered;
        }
        let asked = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| u64::from_str(v.trim()).ok())
            .map(Duration::from_secs);
        let text = format!("HTTP {status}");
        if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
        {
            Attempt::Transient(text, asked)
        } else {
            Attempt::Permanent(text)
        }
    }
}

/// A transport error without its URL.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_redirect() {
        "redirected"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut deepest = None;
    while let Some(s) = source {
        deepest = Some(s.to_string());
        source = s.source();
    }
    match deepest {
        Some(d) => format!("{kind}: {d}"),
        None => kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode as Status};
    use driftline_schemas::events::{DriftDecision, DriftReport, ReportWindow};

    use super::*;
    use crate::alert::Change;

    /// What the test server saw: each post's idempotency key and body.
    type Seen = Arc<Mutex<Vec<(String, Value)>>>;

    /// A real HTTP server on a loopback socket that answers the given statuses in turn
    /// (200 once they run out).
    async fn server(statuses: &[u16]) -> (String, Seen) {
        let script = Arc::new(Mutex::new(
            statuses.iter().copied().collect::<VecDeque<_>>(),
        ));
        let seen: Seen = Arc::default();
        let app = axum::Router::new()
            .route(
                "/hook/{secret}",
                axum::routing::post(
                    |State((script, seen)): State<(Arc<Mutex<VecDeque<u16>>>, Seen)>,
                     headers: HeaderMap,
                     body: String| async move {
                        let key = headers["idempotency-key"].to_str().unwrap().to_string();
                        seen.lock()
                            .unwrap()
                            .push((key, serde_json::from_str(&body).unwrap()));
                        let status = script.lock().unwrap().pop_front().unwrap_or(200);
                        let mut h = HeaderMap::new();
                        if status == 429 {
                            h.insert("retry-after", "0".parse().unwrap());
                        }
                        (Status::from_u16(status).unwrap(), h)
                    },
                ),
            )
            .with_state((script, seen.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/hook/SECRET"), seen)
    }

    fn report() -> DriftReport {
        DriftReport {
            report_id: "m-1-9".into(),
            model: "m".into(),
            model_version: 1,
            evaluated_at: 0,
            window: ReportWindow::default(),
            features: vec![],
            prediction: None,
            performance: vec![],
            share_drifted: 0.0,
            decision: DriftDecision::Drift,
            reason: String::new(),
            multivariate: None,
            estimated: None,
        }
    }

    fn quick() -> Retry {
        Retry {
            attempts: 3,
            timeout: Duration::from_secs(5),
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
        }
    }

    /// Posts the test report to `url` from the blocking pool, as the consumer does.
    async fn post(url: &str, format: Format, retry: Retry) -> Result<u32, Failed> {
        let target = Target::new(url, format).unwrap();
        let poster = Poster::new(retry).unwrap();
        tokio::task::spawn_blocking(move || {
            let r = report();
            let alert = Alert {
                change: Change::Raised,
                previous: DriftDecision::NoDrift,
                report: &r,
            };
            poster.post(&target, &alert)
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_target_that_fails_for_a_while_gets_the_alert_once_it_recovers() {
        let (url, seen) = server(&[503, 429]).await;
        assert_eq!(post(&url, Format::Slack, quick()).await, Ok(3));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        for (key, body) in seen.iter() {
            assert_eq!(key, "m-1-9", "every attempt carries the alert's id");
            assert!(body["text"].as_str().unwrap().contains("*m* v1 is DRIFT"));
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_target_that_keeps_failing_gives_up_after_the_attempts_with_the_last_status() {
        let (url, seen) = server(&[500, 502, 503, 504]).await;
        let failed = post(&url, Format::Json, quick()).await.unwrap_err();
        assert_eq!(
            failed.to_string(),
            "HTTP 503 Service Unavailable (after 3 attempts)"
        );
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_client_error_is_not_repeated() {
        let (url, seen) = server(&[404]).await;
        let failed = post(&url, Format::Json, quick()).await.unwrap_err();
        assert_eq!(failed.attempts, 1);
        assert_eq!(failed.last, "HTTP 404 Not Found");
        assert_eq!(seen.lock().unwrap()[0].1["id"], "m-1-9");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_unreachable_target_fails_without_naming_its_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/hook/SECRET");
        let failed = post(&url, Format::Json, quick()).await.unwrap_err();
        assert_eq!(failed.attempts, 3);
        assert!(failed.last.starts_with("connection failed"), "{failed}");
        assert!(!failed.to_string().contains("SECRET"), "{failed}");
    }

    #[test]
    fn a_target_shows_scheme_host_and_port_only() {
        let t = Target::new(
            "https://hooks.slack.com/services/T000/B000/SECRET",
            Format::Slack,
        )
        .unwrap();
        assert_eq!(t.to_string(), "https://hooks.slack.com/… (slack)");
        assert_eq!(format!("{t:?}"), "https://hooks.slack.com/… (slack)");
        let t = Target::new("http://127.0.0.1:9000/hook?token=SECRET", Format::Json).unwrap();
        assert_eq!(t.redacted(), "http://127.0.0.1:9000/…");
    }

    #[test]
    fn a_webhook_that_is_not_an_http_url_is_refused_without_echoing_it() {
        for bad in [
            "ftp://h/SECRET",
            "hooks.slack.com/SECRET",
            "mailto:SECRET@example.com",
        ] {
            let e = Target::new(bad, Format::Json).unwrap_err().to_string();
            assert!(e.contains("http or https URL"), "{e}");
            assert!(!e.contains("SECRET"), "{e}");
        }
    }
}
