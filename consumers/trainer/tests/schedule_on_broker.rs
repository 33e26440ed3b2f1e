//! The optional schedule end to end on the real broker: with `--retrain-every-rows`, the
//! trainer publishes a version after that many labelled rows, with no retrain event.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{World, summary};
use driftline_schemas::events::ModelStatus;
use driftline_tests::producer;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread")]
async fn retrains_every_n_labelled_rows_without_a_retrain_event() -> Result<()> {
    let w = World::new().await?;
    let state = tempfile::tempdir()?;
    let mut args = w.trainer_args(state.path());
    args.retrain_every_rows = 100;
    let shutdown = CancellationToken::new();
    let joiner = w.spawn_joiner(state.path(), &shutdown);
    let trainer = w.spawn_trainer(args, &shutdown);

    w.wait_registry("bootstrap v1", Duration::from_secs(90), |r| {
        r.production(&w.model).is_some()
    })
    .await?;
    // The world changes (y = 5 - 2x); ground truth arrives; nobody asks for a retrain.
    let p = producer()?;
    w.send_labelled(&p, 0, 120, |x| 5.0 - 2.0 * x).await?;
    let reg = w
        .wait_registry("a scheduled v2", Duration::from_secs(90), |r| {
            r.latest_version(&w.model) >= 2
        })
        .await?;
    let v2 = reg.version(&w.model, 2).unwrap();
    assert_eq!(v2.trigger, "schedule:100", "{:?}", summary(&reg, &w.model));
    assert_eq!(
        v2.status,
        ModelStatus::Production,
        "it learnt the new world"
    );
    assert!(v2.training_window.train_rows + v2.training_window.holdout_rows >= 100);
    assert_eq!(reg.latest_version(&w.model), 2, "one run per 100 rows");

    shutdown.cancel();
    trainer.await??;
    joiner.await??;
    Ok(())
}
