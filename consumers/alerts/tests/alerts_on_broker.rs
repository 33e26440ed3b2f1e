//! The alerts service on the real broker, posting to real HTTP servers on loopback sockets:
//! one alert per change of a model's level in both formats, no repeat across a restart
//! under the same group, and a target that keeps failing (or a report that cannot be read)
//! sends the message to the dead-letter topic with its reason while the consumer moves on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, ensure};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use driftline_alerts::service::AlertsArgs;
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{DeadLetter, DriftDecision, DriftReport, Event};
use driftline_tests::{
    create_topics, kafka, payload, produce, producer, read_all, samples, unique,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Each post a server took: its idempotency key and body.
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook on a loopback socket that answers every post with `status`.
async fn webhook(status: u16) -> Result<(String, Seen)> {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route(
            "/services/{token}",
            axum::routing::post(
                move |State(seen): State<Seen>, headers: HeaderMap, body: String| async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    seen.lock()
                        .unwrap()
                        .push((key, serde_json::from_str(&body).unwrap_or(Value::Null)));
                    StatusCode::from_u16(status).unwrap()
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/services/SECRET-TOKEN"), seen))
}

fn args(drift: &str, dlq: &str, state: &std::path::Path, group: &str) -> AlertsArgs {
    AlertsArgs {
        kafka: kafka(),
        webhooks: vec![],
        slack_webhooks: vec![],
        alert_on: DriftDecision::Drift,
        webhook_attempts: 2,
        webhook_timeout: 5_000,
        http_addr: "127.0.0.1:0".parse().unwrap(),
        state_dir: state.to_path_buf(),
        group: group.to_string(),
        drift_topic: drift.to_string(),
        dlq_topic: dlq.to_string(),
        exit_on_eof: true,
    }
}

fn report(model: &str, n: u32, decision: DriftDecision) -> DriftReport {
    DriftReport {
        report_id: format!("{model}-{n}"),
        model: model.into(),
        decision,
        ..samples::drift()
    }
}

/// The (id, change) of each JSON alert a server took, in order.
fn changes(seen: &Seen) -> Vec<(String, String)> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(_, body)| {
            (
                body["id"].as_str().unwrap_or_default().to_string(),
                body["change"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_go_out_once_per_change_and_a_failing_webhook_leaves_a_dead_letter() -> Result<()> {
    use DriftDecision::{Drift, NoDrift, Warning};
    let (drift, dlq) = (unique("alerts-drift"), unique("alerts-dlq"));
    create_topics(&[(&drift, 2), (&dlq, 1)]).await?;
    let codec = Codec::single_object();
    let p = producer()?;
    let send = |r: DriftReport| {
        let bytes = codec.encode(&r);
        let (p, topic) = (&p, &drift);
        async move { produce(p, topic, &r.key(), &bytes?).await }
    };
    let dir = tempfile::tempdir()?;
    let group = unique("alerts");
    let (json_url, json_seen) = webhook(200).await?;
    let (slack_url, slack_seen) = webhook(200).await?;
    let mut settings = args(&drift, &dlq, dir.path(), &group);
    settings.webhooks = vec![json_url];
    settings.slack_webhooks = vec![slack_url];

    // a: quiet, drifting for three reports (a warning is below --alert-on drift); b: drifting.
    for (model, n, d) in [
        ("a", 1, NoDrift),
        ("a", 2, Drift),
        ("a", 3, Warning),
        ("b", 1, Drift),
        ("a", 4, Drift),
    ] {
        send(report(model, n, d)).await?;
    }
    driftline_alerts::service::run(
        settings.clone(),
        CancellationToken::new(),
        Default::default(),
    )
    .await?;
    let mut first = changes(&json_seen);
    first.sort();
    ensure!(
        first
            == [
                ("a-2".into(), "raised".into()),
                ("a-3".into(), "resolved".into()),
                ("a-4".into(), "raised".into()),
                ("b-1".into(), "raised".into()),
            ],
        "first run: {first:?}"
    );
    {
        let slack = slack_seen.lock().unwrap();
        ensure!(slack.len() == 4, "slack got {} posts", slack.len());
        let texts: Vec<&str> = slack
            .iter()
            .filter_map(|(_, b)| b["text"].as_str())
            .collect();
        ensure!(
            texts
                .iter()
                .any(|t| t.contains("*b* v3 is DRIFT (was NO_DRIFT)")),
            "{texts:?}"
        );
        ensure!(
            slack.iter().all(|(key, _)| !key.is_empty()),
            "every post carries an Idempotency-Key"
        );
    }

    // Restarted under the same group: a drifting model stays quiet, a recovery resolves.
    send(report("a", 5, Drift)).await?;
    send(report("b", 2, Drift)).await?;
    send(report("b", 3, NoDrift)).await?;
    driftline_alerts::service::run(
        settings.clone(),
        CancellationToken::new(),
        Default::default(),
    )
    .await?;
    let second = changes(&json_seen)[4..].to_vec();
    ensure!(
        second == [("b-3".into(), "resolved".into())],
        "after the restart: {second:?}"
    );

    // A webhook that always fails, and a message that is not a report: both become dead
    // letters with their reason, and the report after them is still read.
    let (failing_url, failing_seen) = webhook(503).await?;
    settings.webhooks = vec![failing_url];
    settings.slack_webhooks = vec![];
    send(report("a", 6, NoDrift)).await?;
    produce(&p, &drift, "a", b"not a report").await?;
    send(report("a", 7, Drift)).await?;
    driftline_alerts::service::run(settings, CancellationToken::new(), Default::default()).await?;
    ensure!(
        failing_seen.lock().unwrap().len() == 4,
        "two alerts, two attempts each"
    );
    let letters: Vec<DeadLetter> = read_all(&dlq, 3, Duration::from_secs(60))?
        .iter()
        .map(|m| codec.decode(payload(m)))
        .collect::<Result<_, _>>()?;
    let kinds: Vec<&str> = letters.iter().map(|l| l.error_kind.as_str()).collect();
    ensure!(kinds == ["webhook", "decode", "webhook"], "{kinds:?}");
    for l in letters.iter().filter(|l| l.error_kind == "webhook") {
        ensure!(
            l.error
                .contains("HTTP 503 Service Unavailable (after 2 attempts)")
                && l.error.contains("http://127.0.0.1:")
                && !l.error.contains("SECRET"),
            "{}",
            l.error
        );
        let r: DriftReport = codec.decode(l.payload.as_deref().unwrap_or_default())?;
        ensure!(r.model == "a", "the letter carries the report");
    }
    Ok(())
}
