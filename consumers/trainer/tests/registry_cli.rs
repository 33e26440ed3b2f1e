//! `driftline models list|show|promote|rollback` against the real broker: the registry is
//! the models topic, and promote/rollback are records on it.

mod common;

use anyhow::Result;
use common::{World, record};
use driftline_schemas::events::ModelStatus;
use driftline_tests::{kafka, producer};
use driftline_trainer::cli::{ModelsArgs, ModelsCommand, execute};

#[tokio::test(flavor = "multi_thread")]
async fn promote_and_rollback_from_the_cli_are_records_on_the_models_topic() -> Result<()> {
    let w = World::new().await?;
    let p = producer()?;
    let codec = driftline_schemas::codec::Codec::single_object();
    let records = [
        record(&w.model, 1, ModelStatus::Production, 10),
        record(&w.model, 2, ModelStatus::Rejected, 20),
    ];
    driftline_trainer::jobs::publish(&p, &w.models, &codec, None, &records).await?;
    let args = |command| ModelsArgs {
        kafka: kafka(),
        models_topic: w.models.clone(),
        trust: Default::default(),
        signing: Default::default(),
        command,
    };

    let list = execute(&args(ModelsCommand::List)).await?;
    assert_eq!(list["models"][0]["production"], 1);
    let show = execute(&args(ModelsCommand::Show {
        model: w.model.clone(),
        version: Some(2),
    }))
    .await?;
    assert_eq!(show["status"], "rejected");

    execute(&args(ModelsCommand::Promote {
        model: w.model.clone(),
        version: 2,
    }))
    .await?;
    assert_eq!(
        w.registry().await?.production(&w.model).map(|m| m.version),
        Some(2)
    );

    execute(&args(ModelsCommand::Rollback {
        model: w.model.clone(),
    }))
    .await?;
    let reg = w.registry().await?;
    assert_eq!(reg.production(&w.model).map(|m| m.version), Some(1));
    assert_eq!(
        reg.version(&w.model, 2).map(|m| m.status),
        Some(ModelStatus::RolledBack)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_to_a_version_kept_thin_in_memory_publishes_it_whole() -> Result<()> {
    use driftline_runtime::registry::KEEP_WHOLE;
    let w = World::new().await?;
    let p = producer()?;
    let codec = driftline_schemas::codec::Codec::single_object();
    // v1 production, then v2 production, then enough rejected retrains that v1 (no longer
    // production) is thin in every registry that reads the topic.
    let mut records = vec![
        record(&w.model, 1, ModelStatus::Production, 10),
        record(&w.model, 2, ModelStatus::Production, 20),
    ];
    let last = 3 + KEEP_WHOLE as i64;
    records.extend((3..=last).map(|v| record(&w.model, v, ModelStatus::Rejected, 20 + v)));
    driftline_trainer::jobs::publish(&p, &w.models, &codec, None, &records).await?;
    let reg = w.registry().await?;
    assert!(!reg.is_whole(&w.model, 1), "v1 should be thin");
    assert!(
        reg.version(&w.model, 1)
            .is_some_and(|m| m.model_bytes.is_empty())
    );

    execute(&ModelsArgs {
        kafka: kafka(),
        models_topic: w.models.clone(),
        trust: Default::default(),
        signing: Default::default(),
        command: ModelsCommand::Rollback {
            model: w.model.clone(),
        },
    })
    .await?;
    let restored = w
        .model_records()?
        .into_iter()
        .rev()
        .find(|m| m.version == 1)
        .expect("v1 republished");
    assert_eq!(restored.status, ModelStatus::Production);
    assert_eq!(restored.model_bytes, [1, 2, 3], "published whole");
    Ok(())
}
