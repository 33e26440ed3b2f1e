//! A registry follower started while its broker cannot be reached waits for it instead
//! of giving up: once the broker is up, the registry loads and the service becomes ready.
//! Uses a broker of its own (infra/broker.sh on free ports), since the test stops it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Result, ensure};
use driftline_kafka::topics::{BROKER_DEFAULT_REPLICATION, TopicDef, TopicSpec, apply};
use driftline_runtime::registry::{Registry, follow};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::Event;
use driftline_tests::{OwnBroker, samples};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_follower_started_before_its_broker_loads_once_the_broker_is_up() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = OwnBroker::new(dir.path())?;
    let kafka = broker.kafka();
    let registry = Arc::new(RwLock::new(Registry::default()));
    let (ready, shutdown) = (CancellationToken::new(), CancellationToken::new());
    let follower = tokio::spawn(follow(
        kafka.clone(),
        "models".into(),
        registry.clone(),
        Codec::single_object(),
        driftline_runtime::signing::Trust::none(),
        |_, _| {},
        None,
        ready.clone(),
        tokio::sync::mpsc::unbounded_channel().1,
        shutdown.clone(),
    ));

    // Nobody listens yet: the first metadata request times out after 10 s.
    tokio::time::sleep(Duration::from_secs(13)).await;
    ensure!(
        !follower.is_finished(),
        "the follower gave up while the broker was down: {:?}",
        follower.await
    );

    // The broker comes up with one model record on the registry topic.
    broker.start()?;
    apply(
        &kafka,
        &TopicSpec {
            topics: vec![TopicDef {
                name: "models".into(),
                partitions: 1,
                replication: BROKER_DEFAULT_REPLICATION,
                config: Default::default(),
            }],
        },
    )
    .await?;
    let record = samples::model();
    let producer: FutureProducer = kafka.producer_config().create()?;
    producer
        .send(
            FutureRecord::to("models")
                .key(&record.key())
                .payload(&Codec::single_object().encode(&record)?),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;

    // Loaded (read to the end; the follower may have got there before the record was
    // produced), then following: the record arrives.
    tokio::time::timeout(Duration::from_secs(60), ready.cancelled()).await?;
    let holds = || {
        registry
            .read()
            .unwrap()
            .production(&record.model)
            .is_some_and(|m| m.version == record.version)
    };
    for _ in 0..300 {
        if holds() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(holds(), "the registry holds the record");
    shutdown.cancel();
    follower.await??;
    Ok(())
}
