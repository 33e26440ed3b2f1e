//! On the real broker: a retrain request that names the labelled offsets it was asked at
//! trains on exactly the rows below them: not the rows stored after, and not fewer when
//! the trainer has not read that far yet (it waits). So the same request yields the same
//! training set whenever, and on whichever instance, it runs.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::{World, retrain_of};
use driftline_schemas::events::{ModelPublished, RetrainRequested};
use driftline_tests::{kafka, producer};
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

/// The offsets of the labelled rows on partition 0, oldest first.
fn labelled_offsets(w: &World) -> Result<Vec<i64>> {
    let mut offsets = Vec::new();
    driftline_tests::read_committed(&kafka(), &w.labelled, |m| offsets.push(m.offset()))?;
    Ok(offsets)
}

/// `r` naming labelled partition 0 up to `until`.
fn naming(w: &World, mut r: RetrainRequested, until: i64) -> RetrainRequested {
    r.end_offsets = [(format!("{}/0", w.labelled), until)].into();
    r
}

async fn version_of(w: &World, report: &str) -> Result<ModelPublished> {
    let trigger = format!("drift:{report}");
    let reg = w
        .wait_registry(&trigger, Duration::from_secs(120), |r| {
            r.by_trigger(&w.model, &trigger).is_some()
        })
        .await?;
    Ok(reg.by_trigger(&w.model, &trigger).unwrap().clone())
}

fn rows_of(m: &ModelPublished) -> i64 {
    m.training_window.train_rows + m.training_window.holdout_rows
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retrain_trains_on_exactly_the_labelled_rows_its_request_names() -> Result<()> {
    let w = World::new().await?;
    let state = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let joiner = w.spawn_joiner(state.path(), &shutdown);
    let trainer = w.spawn_trainer(w.trainer_args(state.path()), &shutdown);
    let p = producer()?;
    w.wait_registry("bootstrap v1", Duration::from_secs(90), |r| {
        r.production(&w.model).is_some()
    })
    .await?;

    // 200 rows stored; the request names the first 150 (a monitor that had read those).
    w.send_labelled(&p, 0, 200, |x| 5.0 - 2.0 * x).await?;
    w.wait_labelled(200).await?;
    let offsets = labelled_offsets(&w)?;
    let r1 = naming(&w, retrain_of(&w.model, "r1", 0, 400), offsets[149] + 1);
    w.send_request(&p, &r1).await?;
    let v = version_of(&w, "report-r1").await?;
    ensure!(
        rows_of(&v) == 150,
        "trained on {} rows, not the 150 named",
        rows_of(&v)
    );

    // A request naming rows not written yet: the trainer has 200 and waits for the rest.
    let end = offsets.last().unwrap() + 1;
    let r2 = naming(&w, retrain_of(&w.model, "r2", 0, 400), end + 150);
    w.send_request(&p, &r2).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    w.send_labelled(&p, 200, 400, |x| 5.0 - 2.0 * x).await?;
    w.wait_labelled(400).await?;
    let named = labelled_offsets(&w)?
        .iter()
        .filter(|o| **o < end + 150)
        .count() as i64;
    let v = version_of(&w, "report-r2").await?;
    ensure!(named > 200 && named < 400, "{named} rows below the offset");
    ensure!(
        rows_of(&v) == named,
        "trained on {} rows, not the {named} named",
        rows_of(&v)
    );

    shutdown.cancel();
    trainer.await??;
    joiner.await??;
    Ok(())
}
