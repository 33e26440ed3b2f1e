//! End to end on the real broker, the live rollout gate: with `--rollout canary` a
//! retrained version that beats production on the holdout becomes a canary answering 20%
//! of the requests (each request id always the same version); once the labels of live
//! traffic join, it beats production on live error and the trainer promotes it. A worse
//! version promoted by hand is rolled back after its first labelled rows. With `--rollout
//! shadow` the winner predicts every request beside production, logged and never
//! returned, and is promoted on the very same requests. Every step is a record on the
//! models topic.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{CUTOFF, HOUR, World, summary, x_of};
use driftline_predictor::slots::canary_bucket;
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{
    Actual, Event, FeatureValue, ModelStatus, PredictionLogged, PredictionRequest,
};
use driftline_tests::{free_port, http, kafka, produce, producer};
use driftline_trainer::cli::{ModelsArgs, ModelsCommand};
use driftline_trainer::service::{RolloutArgs, RolloutMode};
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

const SHARE: f64 = 0.2;
const LIVE_ROWS: u64 = 60;

/// Live traffic: requests `from..to` through the predictor (ids `live-<i>`, event times
/// after every other row of the test), target y = 5 - 2x; once each has its prediction
/// the actuals follow. Returns each request's logged prediction.
async fn traffic(
    w: &World,
    p: &FutureProducer,
    from: i64,
    to: i64,
) -> Result<BTreeMap<String, PredictionLogged>> {
    let codec = Codec::single_object();
    let t = |i: i64| CUTOFF + (2_000 + i) * 6 * HOUR;
    for i in from..to {
        let req = PredictionRequest {
            request_id: format!("live-{i}"),
            model: w.model.clone(),
            event_time: t(i),
            features: [("x".to_string(), FeatureValue::Number(x_of(i)))].into(),
        };
        produce(p, &w.requests, &req.key(), &codec.encode(&req)?).await?;
    }
    let wanted = (to - from) as usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut served = BTreeMap::new();
    while served.len() < wanted {
        served.clear();
        driftline_tests::read_committed(&kafka(), &w.predictions, |m| {
            use rdkafka::Message;
            if let Ok(l) = codec.decode::<PredictionLogged>(m.payload().unwrap_or_default()) {
                let i = l
                    .request_id
                    .strip_prefix("live-")
                    .and_then(|i| i.parse().ok());
                if i.is_some_and(|i: i64| (from..to).contains(&i)) {
                    served.insert(l.request_id.clone(), l);
                }
            }
        })?;
        if Instant::now() > deadline {
            bail!("{} of {wanted} requests predicted after 60 s", served.len());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for i in from..to {
        let actual = Actual {
            request_id: format!("live-{i}"),
            model: w.model.clone(),
            event_time: t(i),
            value: Some(5.0 - 2.0 * x_of(i)),
            class: None,
            observed_at: t(i) + HOUR,
        };
        produce(p, &w.actuals, &actual.key(), &codec.encode(&actual)?).await?;
    }
    Ok(served)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_that_wins_on_live_labels_is_promoted_and_a_worse_promotion_rolled_back()
-> Result<()> {
    let w = World::new().await?;
    let state = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let joiner = w.spawn_joiner(state.path(), &shutdown);
    let mut args = w.trainer_args(state.path());
    args.rollout = RolloutArgs {
        mode: RolloutMode::Canary,
        canary_share: SHARE,
        live_min_rows: LIVE_ROWS,
        rollback_watch_rows: None,
    };
    let trainer = w.spawn_trainer(args, &shutdown);
    let predictor = w.spawn_predictor(state.path(), "127.0.0.1:0".parse()?, &shutdown);
    let p = producer()?;
    let model = w.model.clone();

    // v1 from the data set (y = 3x + 1) goes straight to production: nothing to share with.
    w.wait_registry("bootstrap v1", Duration::from_secs(90), |r| {
        r.production(&model).is_some()
    })
    .await?;

    // The world changes (y = 5 - 2x); a retrain's winner becomes a canary, not production.
    w.send_labelled(&p, 0, 300, |x| 5.0 - 2.0 * x).await?;
    w.wait_labelled(300).await?;
    w.send_retrain(&p, "r1", 0, 300).await?;
    let reg = w
        .wait_registry("v2 a canary", Duration::from_secs(90), |r| {
            r.canary(&model).is_some_and(|c| c.version == 2)
        })
        .await?;
    let v2 = reg.version(&model, 2).unwrap();
    assert_eq!((v2.status, v2.traffic_share), (ModelStatus::Canary, SHARE));
    assert_eq!(reg.production(&model).map(|m| m.version), Some(1));

    // Live traffic: a fifth of the ids meet v2, always the ones the hash picks. One batch:
    // its labels follow its predictions, so the gate cannot decide in the middle of it.
    let served: BTreeMap<String, i64> = traffic(&w, &p, 0, 500)
        .await?
        .into_iter()
        .map(|(id, l)| (id, l.model_version))
        .collect();
    let mut sent = 500;
    let picked = served.keys().filter(|id| canary_bucket(id) < SHARE).count();
    ensure!(
        picked as u64 >= LIVE_ROWS + 20,
        "only {picked} ids pick the canary"
    );
    // A request the predictor answered before it read the canary record met v1.
    let misplaced: Vec<_> = served
        .iter()
        .filter(|(id, v)| (canary_bucket(id) < SHARE) != (**v == 2))
        .collect();
    ensure!(
        misplaced.len() <= 5,
        "requests that met another version than their id picks: {misplaced:?}"
    );
    let share = served.values().filter(|v| **v == 2).count() as f64 / served.len() as f64;
    ensure!(
        (0.15..=0.25).contains(&share),
        "the canary answered {share:.3} of the requests"
    );

    // Labels joined: v2 beats v1 on live error and the gate promotes it.
    let reg = w
        .wait_registry(
            "v2 promoted by the live gate",
            Duration::from_secs(90),
            |r| r.production(&model).is_some_and(|m| m.version == 2),
        )
        .await?;
    assert!(reg.canary(&model).is_none());

    // v2 serves alone for a while, so its live error is known.
    let mut by_v2 = 0;
    while by_v2 < LIVE_ROWS as usize + 20 {
        by_v2 += traffic(&w, &p, sent, sent + 100)
            .await?
            .values()
            .filter(|l| l.model_version == 2)
            .count();
        sent += 100;
        ensure!(sent <= 4_000, "v2 does not serve alone");
    }

    // A worse candidate (it learnt a transient anomaly, y = 10x) is rejected by the holdout
    // gate; promoted by hand, it is rolled back once its first live rows are worse.
    w.send_labelled(&p, 300, 540, |x| 10.0 * x).await?;
    w.send_labelled(&p, 540, 600, |x| 5.0 - 2.0 * x).await?;
    w.wait_labelled(600 + sent).await?;
    w.send_retrain(&p, "r2", 300, 600).await?;
    let reg = w
        .wait_registry("v3 published", Duration::from_secs(90), |r| {
            r.latest_version(&model) == 3
        })
        .await?;
    assert_eq!(
        reg.version(&model, 3).map(|m| m.status),
        Some(ModelStatus::Rejected)
    );
    driftline_trainer::cli::execute(&ModelsArgs {
        kafka: kafka(),
        models_topic: w.models.clone(),
        trust: Default::default(),
        signing: Default::default(),
        command: ModelsCommand::Promote {
            model: model.clone(),
            version: 3,
        },
    })
    .await?;
    let mut by_v3 = 0;
    let reg = loop {
        by_v3 += traffic(&w, &p, sent, sent + 100)
            .await?
            .values()
            .filter(|l| l.model_version == 3)
            .count();
        sent += 100;
        let reg = w.registry().await?;
        if reg.production(&model).is_some_and(|m| m.version == 2) {
            break reg;
        }
        ensure!(
            by_v3 < 6 * LIVE_ROWS as usize,
            "v3 served {by_v3} requests and was not rolled back: {:?}",
            summary(&reg, &model)
        );
    };
    assert_eq!(
        reg.version(&model, 3).map(|m| m.status),
        Some(ModelStatus::RolledBack)
    );
    ensure!(by_v3 as u64 >= LIVE_ROWS, "rolled back after {by_v3} rows");

    // Every step is on the models topic: v2 canary, promoted; v3 rejected, promoted by
    // hand, rolled back; v2 restored.
    let steps: Vec<(i64, ModelStatus)> = w
        .model_records()?
        .into_iter()
        .map(|r| (r.version, r.status))
        .collect();
    assert_eq!(
        steps,
        [
            (1, ModelStatus::Production),
            (2, ModelStatus::Canary),
            (2, ModelStatus::Production),
            (3, ModelStatus::Rejected),
            (3, ModelStatus::Production),
            (3, ModelStatus::RolledBack),
            (2, ModelStatus::Production),
        ]
    );

    shutdown.cancel();
    trainer.await?.context("trainer")?;
    predictor.await??;
    joiner.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_predicts_every_request_unseen_and_is_promoted_on_the_same_requests() -> Result<()>
{
    let w = World::new().await?;
    let state = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let joiner = w.spawn_joiner(state.path(), &shutdown);
    let mut args = w.trainer_args(state.path());
    args.rollout = RolloutArgs {
        mode: RolloutMode::Shadow,
        live_min_rows: LIVE_ROWS,
        ..RolloutArgs::default()
    };
    let trainer = w.spawn_trainer(args, &shutdown);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let predictor = w.spawn_predictor(state.path(), addr, &shutdown);
    let p = producer()?;
    let model = w.model.clone();

    w.wait_registry("bootstrap v1", Duration::from_secs(90), |r| {
        r.production(&model).is_some()
    })
    .await?;

    // The world changes (y = 5 - 2x); a retrain's winner becomes a shadow.
    w.send_labelled(&p, 0, 300, |x| 5.0 - 2.0 * x).await?;
    w.wait_labelled(300).await?;
    w.send_retrain(&p, "r1", 0, 300).await?;
    let reg = w
        .wait_registry("v2 a shadow", Duration::from_secs(90), |r| {
            r.shadow(&model).is_some_and(|c| c.version == 2)
        })
        .await?;
    assert_eq!(reg.production(&model).map(|m| m.version), Some(1));

    // Over HTTP the client gets production's answer, and nothing of the shadow's.
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = http(addr, "POST", "/predict", Some(br#"{"features": {"x": 4}}"#))
            .await
            .unwrap_or((0, String::new()));
        if status == 200 {
            break body;
        }
        ensure!(
            Instant::now() < deadline,
            "the predictor never answered: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let answer: serde_json::Value = serde_json::from_str(&body)?;
    ensure!(answer["version"] == 1, "HTTP answered by {body}");
    ensure!(
        !body.contains("shadow"),
        "the shadow leaked into the answer: {body}"
    );

    // Every request is answered by v1 and carries v2's prediction of it beside (but for
    // a few the predictor answered before it read the shadow record).
    let served = traffic(&w, &p, 0, 200).await?;
    ensure!(
        served.values().all(|l| l.model_version == 1),
        "a request was answered by the shadow"
    );
    let unshadowed: Vec<&String> = served
        .iter()
        .filter(|(_, l)| l.shadow.as_ref().map(|s| s.model_version) != Some(2))
        .map(|(id, _)| id)
        .collect();
    ensure!(
        unshadowed.len() <= 5,
        "requests without the shadow's prediction: {unshadowed:?}"
    );
    // v2 learnt the new world: its logged answers are the new line's, v1's the old one's.
    let l = served.values().find(|l| l.shadow.is_some()).unwrap();
    let x = match l.features.get("x") {
        Some(FeatureValue::Number(x)) => *x,
        _ => bail!("no x in {l:?}"),
    };
    let shadow = l
        .shadow
        .as_ref()
        .unwrap()
        .prediction
        .value
        .unwrap_or(f64::NAN);
    ensure!(
        (shadow - (5.0 - 2.0 * x)).abs() < 0.5,
        "shadow predicted {shadow} at x={x}"
    );

    // Labels joined: on the same requests v2's error is far below v1's; promoted.
    let reg = w
        .wait_registry(
            "v2 promoted by the live gate",
            Duration::from_secs(90),
            |r| r.production(&model).is_some_and(|m| m.version == 2),
        )
        .await?;
    assert!(reg.shadow(&model).is_none());
    let steps: Vec<(i64, ModelStatus)> = w
        .model_records()?
        .into_iter()
        .map(|r| (r.version, r.status))
        .collect();
    assert_eq!(
        steps,
        [
            (1, ModelStatus::Production),
            (2, ModelStatus::Shadow),
            (2, ModelStatus::Production),
        ]
    );
    // Once the predictor has read the promotion, v2 answers and nothing shadows it.
    let mut sent = 200;
    loop {
        let after = traffic(&w, &p, sent, sent + 20).await?;
        sent += 20;
        if after
            .values()
            .all(|l| l.model_version == 2 && l.shadow.is_none())
        {
            break;
        }
        ensure!(
            sent < 300,
            "after the promotion: {:?}",
            after
                .values()
                .map(|l| (l.model_version, l.shadow.is_some()))
                .collect::<Vec<_>>()
        );
    }

    shutdown.cancel();
    trainer.await?.context("trainer")?;
    predictor.await??;
    joiner.await??;
    Ok(())
}
