//! End to end on the real broker: the trainer bootstraps v1, a retrain event produces v2
//! which the predictor switches to, a worse candidate is published as rejected and the
//! predictor keeps v2, and a retrain event delivered twice yields one version.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::{CUTOFF, HOUR, World, summary};
use driftline_predictor::service::PredictorArgs;
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{
    Event, FeatureValue, ModelStatus, PredictionLogged, PredictionRequest,
};
use driftline_tests::{kafka, produce, producer, unique};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

/// Sends one request to the predictor and returns (version, prediction) it was served with.
async fn probe(
    w: &World,
    p: &rdkafka::producer::FutureProducer,
    n: u32,
    x: f64,
) -> Result<(i64, f64)> {
    let codec = Codec::single_object();
    let id = format!("probe-{}-{n}", w.model);
    let req = PredictionRequest {
        request_id: id.clone(),
        model: w.model.clone(),
        // Before the labelled traffic: a probe never gets an actual, so it waits in the
        // joiner (until evicted) like any unlabelled prediction.
        event_time: CUTOFF - HOUR,
        features: [("x".to_string(), FeatureValue::Number(x))].into(),
    };
    produce(p, &w.requests, &req.key(), &codec.encode(&req)?).await?;
    let reader: BaseConsumer = kafka().consumer_config(&unique("probe")).create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&w.predictions, 0, rdkafka::Offset::Beginning)?;
    reader.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(m) = reader.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m?;
        let logged: PredictionLogged = codec.decode(m.payload().context("empty")?)?;
        if logged.request_id == id {
            return Ok((
                logged.model_version,
                logged.prediction.value.context("no value")?,
            ));
        }
    }
    bail!("no prediction for {id}")
}

#[tokio::test(flavor = "multi_thread")]
async fn retrain_event_publishes_a_version_the_predictor_serves_and_a_worse_one_is_rejected()
-> Result<()> {
    let w = World::new().await?;
    let state = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let joiner = w.spawn_joiner(state.path(), &shutdown);
    let trainer = w.spawn_trainer(w.trainer_args(state.path()), &shutdown);
    let predictor = tokio::spawn(driftline_predictor::service::run(
        PredictorArgs {
            kafka: kafka(),
            specs: vec![w.spec_path.clone()],
            http_addr: "127.0.0.1:0".parse()?,
            state_dir: state.path().join("predictor"),
            group: unique("predictor"),
            requests_topic: w.requests.clone(),
            predictions_topic: w.predictions.clone(),
            models_topic: w.models.clone(),
            max_swap_wait: None,
            progress_topic: driftline_schemas::topics::PROGRESS.into(),
            trust: Default::default(),
            dlq_topic: w.dlq.clone(),
            body_limit: 1 << 20,
            concurrency: 16,
            timeout_ms: 5_000,
            max_rows: 10_000,
        },
        shutdown.clone(),
        Default::default(),
    ));
    let p = producer()?;

    // Bootstrap: v1 from the data set's rows before April (y = 3x + 1).
    let reg = w
        .wait_registry("bootstrap v1", Duration::from_secs(90), |r| {
            r.production(&w.model).is_some()
        })
        .await?;
    let v1 = reg.production(&w.model).unwrap();
    assert_eq!((v1.version, v1.trigger.as_str()), (1, "bootstrap"));
    assert!(
        v1.training_window.end_time < CUTOFF,
        "bootstrap used only rows before the cut-off"
    );
    assert!(v1.metrics["mae"] < 1e-6);
    let (version, y) = probe(&w, &p, 0, 2.0).await?;
    assert_eq!(version, 1);
    assert!((y - 7.0).abs() < 1e-6);

    // The world changes (y = 5 - 2x); ground truth arrives; the monitor asks for a retrain.
    w.send_labelled(&p, 0, 300, |x| 5.0 - 2.0 * x).await?;
    w.wait_labelled(300).await?;
    w.send_retrain(&p, "r1", 0, 300).await?;
    let reg = w
        .wait_registry("v2 in production", Duration::from_secs(90), |r| {
            r.production(&w.model).is_some_and(|m| m.version == 2)
        })
        .await?;
    let v2 = reg.version(&w.model, 2).unwrap();
    assert_eq!(
        v2.trigger, "drift:report-r1",
        "the trigger names the drift report"
    );
    // The window reflects predictions 2..=301 (offset 0 is the first probe, never
    // labelled, and offset 1 the commit marker of the predictor's transaction) and
    // actuals 0..300.
    assert_eq!(
        v2.training_window.end_offsets,
        [
            (format!("{}/0", w.predictions), 302),
            (format!("{}/0", w.actuals), 300)
        ]
        .into()
    );
    assert_eq!(v2.parent_version, Some(1));
    assert_eq!(
        (
            v2.training_window.train_rows,
            v2.training_window.holdout_rows
        ),
        (240, 60)
    );
    assert!(
        v2.metrics["mae"] < 1e-6 && v2.incumbent_metrics["mae"] > 1.0,
        "{:?}",
        v2.incumbent_metrics
    );
    assert!(!v2.reference_profile.is_empty() && !v2.model_bytes.is_empty());

    // The predictor switches without a restart.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 1;
    loop {
        let (version, y) = probe(&w, &p, n, 2.0).await?;
        if version == 2 {
            assert!((y - 1.0).abs() < 1e-6);
            break;
        }
        n += 1;
        if Instant::now() > deadline {
            bail!("the predictor still serves v{version}");
        }
    }

    // A transient anomaly (y = 10x) in the older part of the next window, normal (y = 5 -
    // 2x) in its newest rows: the candidate learns the anomaly and loses on the holdout.
    w.send_labelled(&p, 300, 540, |x| 10.0 * x).await?;
    w.send_labelled(&p, 540, 600, |x| 5.0 - 2.0 * x).await?;
    w.wait_labelled(600).await?;
    w.send_retrain(&p, "r2", 300, 600).await?;
    let reg = w
        .wait_registry("v3 published", Duration::from_secs(90), |r| {
            r.latest_version(&w.model) == 3
        })
        .await?;
    let v3 = reg.version(&w.model, 3).unwrap();
    assert_eq!(v3.status, ModelStatus::Rejected);
    assert!(
        v3.metrics["mae"] > v3.incumbent_metrics["mae"],
        "numbers are published with the rejection"
    );
    assert_eq!(reg.production(&w.model).map(|m| m.version), Some(2));
    let (version, _) = probe(&w, &p, 1000, 2.0).await?;
    assert_eq!(version, 2, "the predictor keeps v2");

    // The same retrain event again (a monitor re-emitting after a crash): no new version.
    w.send_retrain(&p, "r1", 0, 300).await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let reg = w.registry().await?;
    assert_eq!(
        reg.latest_version(&w.model),
        3,
        "{:?}",
        summary(&reg, &w.model)
    );

    shutdown.cancel();
    trainer.await??;
    predictor.await??;
    joiner.await??;
    Ok(())
}
