//! A model record no trainer could have made (published a day or more ahead of the
//! reader's clock, or without a version) is refused by every registry follower: counted,
//! logged, and the version serving stays the one it was. Before, a record published at
//! `i64::MAX` won every "latest" comparison for good. On the shared test broker.

use std::time::Duration;

use anyhow::{Result, ensure};
use driftline_runtime::registry::FollowerMetrics;
use driftline_runtime::service::follow_registry;
use driftline_runtime::signing::Trust;
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Event, ModelPublished};
use driftline_tests::{create_topics, kafka, samples, unique};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread")]
async fn a_record_from_far_ahead_is_refused_and_counted_and_production_stays() -> Result<()> {
    let topic = unique("models");
    create_topics(&[(&topic, 1)]).await?;
    let codec = Codec::single_object();
    let now = driftline_runtime::now_ms();
    let producer: FutureProducer = kafka().producer_config().create()?;
    for (version, published_at) in [(4, now - 10), (5, i64::MAX), (6, now), (0, now + 1)] {
        let record = ModelPublished {
            version,
            published_at,
            ..samples::model()
        };
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&record.key())
                    .payload(&codec.encode(&record)?),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)?;
    }

    let metrics = FollowerMetrics {
        thinned: prometheus::IntCounter::new("thinned", "t")?,
        refused: prometheus::IntCounter::new("refused", "r")?,
    };
    let shutdown = CancellationToken::new();
    let follower = follow_registry(
        &kafka(),
        &topic,
        &codec,
        Trust::none(),
        |_, _| {},
        Some(metrics.clone()),
        &shutdown,
    );
    tokio::time::timeout(Duration::from_secs(60), follower.loaded.cancelled()).await?;
    let (production, known) = {
        let registry = follower.registry.read().unwrap();
        (
            registry.production("flights").map(|m| m.version),
            registry
                .versions("flights")
                .map(|m| m.version)
                .collect::<Vec<_>>(),
        )
    };
    shutdown.cancel();
    ensure!(production == Some(6), "production is {production:?}");
    ensure!(known == [4, 6], "the registry holds {known:?}");
    ensure!(
        metrics.refused.get() == 2,
        "{} refused",
        metrics.refused.get()
    );
    Ok(())
}
