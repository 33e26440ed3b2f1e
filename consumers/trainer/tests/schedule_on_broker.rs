//! The optional schedule end to end on the real broker: with `--retrain-every-rows`, the
//! trainer publishes a version after that many labelled rows, with no retrain event.

mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use common::{CUTOFF, HOUR, World, summary};
use driftline_runtime::registry::Registry;
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{ModelProgress, ModelStatus};
use driftline_tests::{create_topics, kafka, producer};
use driftline_trainer::service::TrainerArgs;
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

/// A joiner and a trainer retraining every 100 rows (`args` changed by `with`): once the
/// bootstrap v1 is out, 120 labelled rows of a changed world (y = 5 - 2x), nobody asking
/// for a retrain; returns the registry once the scheduled v2 is in it.
async fn until_scheduled_v2(
    w: &World,
    state: &Path,
    with: impl FnOnce(&mut TrainerArgs),
    shutdown: &CancellationToken,
) -> Result<(
    Registry,
    Task<driftline_joiner::Error>,
    Task<driftline_trainer::Error>,
)> {
    let mut args = w.trainer_args(state);
    args.retrain_every_rows = 100;
    with(&mut args);
    let joiner = w.spawn_joiner(state, shutdown);
    let trainer = w.spawn_trainer(args, shutdown);
    w.wait_registry("bootstrap v1", Duration::from_secs(90), |r| {
        r.production(&w.model).is_some()
    })
    .await?;
    w.send_labelled(&producer()?, 0, 120, |x| 5.0 - 2.0 * x)
        .await?;
    let reg = w
        .wait_registry("a scheduled v2", Duration::from_secs(90), |r| {
            r.latest_version(&w.model) >= 2
        })
        .await?;
    Ok((reg, joiner, trainer))
}

type Task<E> = tokio::task::JoinHandle<Result<(), E>>;

#[tokio::test(flavor = "multi_thread")]
async fn retrains_every_n_labelled_rows_without_a_retrain_event() -> Result<()> {
    let w = World::new().await?;
    let state = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let (reg, joiner, trainer) = until_scheduled_v2(&w, state.path(), |_| {}, &shutdown).await?;
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

/// With `--swap-lag`, the trainer writes how far it has decided the model's versions: the
/// newest row it holds plus the lag, only once no job waits, and naming the newest
/// version; it never says a time is decided before the version in effect then is out.
#[tokio::test(flavor = "multi_thread")]
async fn the_trainers_progress_follows_its_rows_and_never_passes_a_version_not_yet_published()
-> Result<()> {
    const DAY: i64 = 24 * HOUR;
    let w = World::new().await?;
    let state = tempfile::tempdir()?;
    let progress_topic = w.trainer_args(state.path()).progress_topic;
    create_topics(&[(&progress_topic, 1)]).await?;
    let shutdown = CancellationToken::new();
    let (reg, joiner, trainer) = until_scheduled_v2(
        &w,
        state.path(),
        |args| args.swap_lag = Some(DAY),
        &shutdown,
    )
    .await?;
    let v2 = reg.version(&w.model, 2).unwrap().clone();
    let effective = v2.effective_from.expect("a swap lag sets it");

    // Row i is at CUTOFF + 6h * i: the newest of 120 is row 119.
    let last = CUTOFF + 119 * 6 * HOUR + DAY - 1;
    let codec = Codec::single_object();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let records = loop {
        let mut records = Vec::new();
        driftline_tests::read_committed(&kafka(), &progress_topic, |m| {
            records.push(codec.decode::<ModelProgress>(m.payload().unwrap_or_default()));
        })?;
        let records: Vec<ModelProgress> = records.into_iter().collect::<Result<_, _>>()?;
        if records.last().is_some_and(|r| r.decided_until == last) {
            break records;
        }
        if std::time::Instant::now() > deadline {
            bail!("no progress up to row 119 after 60 s: {records:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(records.last().unwrap().version, 2, "it names v2");
    for r in &records {
        assert!(
            r.decided_until < effective || r.version >= 2,
            "{r:?} says v2's time ({effective}) is decided before naming v2"
        );
    }
    assert!(
        records
            .windows(2)
            .all(|p| p[0].decided_until <= p[1].decided_until),
        "it only goes forward: {records:?}"
    );

    shutdown.cancel();
    trainer.await??;
    joiner.await??;
    Ok(())
}
