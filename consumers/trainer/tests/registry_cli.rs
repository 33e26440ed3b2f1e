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
    driftline_trainer::jobs::publish(&p, &w.models, &codec, &records).await?;
    let args = |command| ModelsArgs {
        kafka: kafka(),
        models_topic: w.models.clone(),
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
