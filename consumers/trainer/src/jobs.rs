//! Runs the training jobs the processor leaves in the store, off the consume path.
//!
//! A job is trained in `spawn_blocking` from a snapshot of the committed rows, published,
//! and removed from the store only once the registry (the models topic read back) shows
//! the version. Several jobs for one model are coalesced: the newest request is trained
//! and the others are marked done, so a retrain arriving while one runs is folded into the
//! next run instead of queueing a fit per event. A run that fails drops only its own job;
//! the others are tried next, the newest first.
//!
//! Exactly one version per trigger, across kill -9 at any point:
//! - before the retrain event's batch commits: the event is consumed again, the job is
//!   written once (the key is the trigger);
//! - during training: the job is still in the store; on restart the registry (read to
//!   its end before any job runs) has no version with this trigger, so it trains again
//!   and publishes once;
//! - after publishing, before the job is removed: on restart the registry has the trigger
//!   (`Registry::by_trigger`), so the job is dropped without training;
//! - a record the broker never acknowledged is not in the topic, so the retry is the only
//!   version. The version number is read from the registry just before training, and this
//!   runner is the only writer of new versions, so numbers stay monotonic.
//!
//! The same event delivered twice (a monitor re-emitting after its own crash) meets the
//! same check in the processor: a trigger already published or coalesced is ignored.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftline_runtime::registry::SharedRegistry;
use driftline_runtime::{Store, now_ms};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Event, ModelPublished};
use driftline_schemas::spec::FeatureSpec;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::labelled::{Job, done_key, end_offsets, pending_jobs, snapshot};
use crate::metrics::TrainerMetrics;
use crate::train::{Context, TrainOptions, Trained, select_window, train};
use crate::{Error, Result, bootstrap};

/// The largest model record the trainer publishes: inside the 1 MB that the broker
/// (`message.max.bytes`) and librdkafka accept by default, with room for the envelope.
pub const MAX_RECORD_BYTES: usize = 900 * 1024;

/// The fewest reference values a numeric profile is thinned to before a record is given up.
const MIN_PROFILE_SAMPLE: usize = 500;

/// `record` encoded to fit [`MAX_RECORD_BYTES`]: a reference profile too large for one
/// message (many features, each with up to 10,000 reference values) keeps fewer evenly
/// spaced order statistics of each sample, halving until it fits (the monitor reads a
/// profile's sample as a subsample; counts and missing shares stay the profile's). A
/// record whose model bytes alone are too large is an error, not a crash at every restart.
pub fn fit_to_message(codec: &Codec, record: &ModelPublished) -> Result<Vec<u8>> {
    let mut payload = codec.encode(record)?;
    if payload.len() <= MAX_RECORD_BYTES {
        return Ok(payload);
    }
    let mut thinned = record.clone();
    let mut cap = thinned
        .reference_profile
        .iter()
        .map(|p| p.sample.len())
        .max()
        .unwrap_or(0);
    while payload.len() > MAX_RECORD_BYTES && cap > MIN_PROFILE_SAMPLE {
        cap = (cap / 2).max(MIN_PROFILE_SAMPLE);
        for p in &mut thinned.reference_profile {
            p.sample = driftline_model::profile::even_subsample(std::mem::take(&mut p.sample), cap);
        }
        payload = codec.encode(&thinned)?;
    }
    if payload.len() > MAX_RECORD_BYTES {
        return Err(Error::TooLarge(format!(
            "model {} v{}: its record is {} bytes with a reference profile of {} values per feature, over the {} a message may hold ({} bytes of model)",
            record.model,
            record.version,
            payload.len(),
            cap,
            MAX_RECORD_BYTES,
            record.model_bytes.len()
        )));
    }
    warn!(model = %record.model, version = record.version, sample = cap, bytes = payload.len(), "reference profile thinned to fit one message");
    Ok(payload)
}

/// Publishes records to the models topic and waits for the broker's acknowledgements.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    codec: &Codec,
    records: &[ModelPublished],
) -> Result<()> {
    for r in records {
        let payload = fit_to_message(codec, r)?;
        let key = r.key();
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| driftline_runtime::Error::Delivery {
                topic: topic.to_string(),
                error: e.to_string(),
            })?;
    }
    Ok(())
}

/// A model this trainer owns: its spec and where the spec file is (for `dataset.path`).
#[derive(Debug, Clone)]
pub struct Owned {
    pub spec: Arc<FeatureSpec>,
    pub spec_path: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct BootstrapOptions {
    pub enabled: bool,
    /// Train on rows before this event time (default: three months after the first row).
    pub until: Option<i64>,
}

/// The rows a job trains on, and the source offsets they reflect.
#[derive(Debug, Default)]
pub struct TrainingSet {
    pub rows: Vec<driftline_model::LabelledRow>,
    pub end_offsets: BTreeMap<String, i64>,
}

type Loader = Box<dyn FnOnce() -> Result<TrainingSet> + Send>;

pub struct Runner {
    pub store: Arc<Store>,
    pub registry: SharedRegistry,
    pub models: HashMap<String, Owned>,
    pub producer: FutureProducer,
    pub codec: Codec,
    pub models_topic: String,
    pub options: TrainOptions,
    pub bootstrap: BootstrapOptions,
    pub metrics: TrainerMetrics,
    pub wake: Arc<Notify>,
    /// Test hook: print each phase on stdout and pause this long in it (0 = off), so a
    /// test can kill the process mid-training or mid-publishing.
    pub phase_pause: Duration,
    /// Models whose newest job had too few rows, with the row count then: it waits until
    /// the consumer has stored more (after a restart the job can run before the consumer
    /// has its partitions back; a retrain request can be read before the rows behind it).
    pub waiting_for_rows: std::sync::Mutex<HashMap<String, i64>>,
}

enum Outcome {
    Published,
    Skipped,
}

impl Runner {
    /// Bootstraps models without a version, then runs jobs until shutdown. Start it once the
    /// registry has read the models topic to its end.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        if self.bootstrap.enabled {
            let mut names: Vec<String> = self.models.keys().cloned().collect();
            names.sort();
            for model in names {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                if let Err(e) = self.bootstrap_model(&model, &shutdown).await {
                    if !e.is_retryable() {
                        error!(%model, error = %e, "bootstrap failed");
                    } else {
                        return Err(e);
                    }
                }
            }
        }
        loop {
            self.run_pending(&shutdown).await?;
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn phase(&self, phase: &str, model: &str, trigger: &str) {
        info!(%model, %trigger, phase, "training job phase");
        if !self.phase_pause.is_zero() {
            println!("phase={phase} model={model} trigger={trigger}");
            tokio::time::sleep(self.phase_pause).await;
        }
    }

    async fn bootstrap_model(&self, model: &str, shutdown: &CancellationToken) -> Result<()> {
        let owned = &self.models[model];
        let has_version = {
            let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
            reg.latest_version(model) > 0
        };
        if has_version {
            return Ok(());
        }
        let Some(path) = bootstrap::dataset_path(&owned.spec, &owned.spec_path) else {
            warn!(%model, "no version and no dataset.path in the spec: waiting for a retrain event");
            return Ok(());
        };
        info!(%model, path = %path.display(), "bootstrapping the first version");
        let spec = owned.spec.clone();
        let until = self.bootstrap.until;
        let job = Job {
            model: model.to_string(),
            trigger: bootstrap::TRIGGER.to_string(),
            window_start: i64::MIN,
            window_end: i64::MAX,
            requested_at: now_ms(),
            reason: format!("bootstrap from {}", path.display()),
        };
        let load = move || {
            let (rows, skipped) = bootstrap::read_rows(&spec, &path, None, until)?;
            info!(model = %spec.model.name, rows = rows.len(), skipped, "bootstrap rows read");
            // From a file: no topic offsets to name.
            Ok(TrainingSet {
                rows,
                end_offsets: BTreeMap::new(),
            })
        };
        self.train_and_publish(&job, Box::new(load), shutdown)
            .await?;
        Ok(())
    }

    /// Runs one coalesced job per model with pending jobs.
    async fn run_pending(&self, shutdown: &CancellationToken) -> Result<()> {
        let pending = pending_jobs(&self.store)?;
        self.metrics.pending_jobs.set(pending.len() as i64);
        let mut by_model: BTreeMap<String, Vec<(Vec<u8>, Job)>> = BTreeMap::new();
        for (key, job) in pending {
            by_model
                .entry(job.model.clone())
                .or_default()
                .push((key, job));
        }
        for (model, jobs) in by_model {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if !self.models.contains_key(&model) {
                continue;
            }
            let rows_now = self
                .metrics
                .labelled_rows
                .with_label_values(&[&model])
                .get();
            let waited = self
                .waiting_for_rows
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&model)
                .copied();
            if waited.is_some_and(|rows| rows_now <= rows) {
                continue;
            }
            let Some((_, job)) = jobs.iter().max_by_key(|(k, j)| (j.requested_at, k.clone()))
            else {
                continue;
            };
            let job = job.clone();
            if jobs.len() > 1 {
                info!(%model, trigger = %job.trigger, coalesced = jobs.len() - 1, "coalescing retrain requests into one run");
            }
            let store = self.store.clone();
            let (m, start, end, min) = (
                model.clone(),
                job.window_start,
                job.window_end,
                self.options.min_rows,
            );
            let load = move || {
                let rows = select_window(snapshot(&store, &m)?, start, end, min);
                Ok(TrainingSet {
                    end_offsets: end_offsets(&rows),
                    rows: rows.into_iter().map(|r| r.row).collect(),
                })
            };
            let ran = match self.train_and_publish(&job, Box::new(load), shutdown).await {
                Ok(Outcome::Skipped) if shutdown.is_cancelled() => return Ok(()),
                Ok(_) => jobs.as_slice(),
                // Broker trouble, or a registry that does not show what we published: stop
                // rather than number the next version from a stale registry.
                Err(e @ Error::State(_)) => return Err(e),
                Err(e) if e.is_retryable() && !matches!(e, Error::NotEnoughRows { .. }) => {
                    return Err(e);
                }
                Err(e @ Error::NotEnoughRows { .. }) => {
                    // Kept: it runs again once more labelled rows are stored.
                    warn!(%model, trigger = %job.trigger, error = %e, "too few rows to train yet; the job waits for more");
                    self.waiting_for_rows
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(model.clone(), rows_now);
                    continue;
                }
                Err(e) => {
                    // The inputs cannot make a model (too few rows, a fit error): drop the
                    // job so it does not spin; the next retrain event tries again. The
                    // jobs coalesced into it did not run: they stay, and the next round
                    // runs the newest of them on its own window.
                    self.metrics.trainings.with_label_values(&["failed"]).inc();
                    error!(%model, trigger = %job.trigger, error = %e, waiting = jobs.len() - 1, "training failed; job dropped");
                    let newest = jobs
                        .iter()
                        .position(|(_, j)| j.trigger == job.trigger)
                        .unwrap_or_default();
                    &jobs[newest..=newest]
                }
            };
            self.waiting_for_rows
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&model);
            if !shutdown.is_cancelled() {
                self.clear(ran, &job.trigger)?;
            }
        }
        Ok(())
    }

    /// Removes jobs in one write: the one that ran, and those coalesced into its run, marked
    /// done so a re-delivered copy does not queue them again.
    fn clear(&self, jobs: &[(Vec<u8>, Job)], ran: &str) -> Result<()> {
        let mut txn = self.store.txn();
        for (key, job) in jobs {
            txn.delete(key.clone());
            if job.trigger != ran {
                txn.put(done_key(&job.model, &job.trigger), ran.as_bytes().to_vec());
            }
        }
        self.store.commit(txn, &BTreeMap::new())?;
        Ok(())
    }

    async fn train_and_publish(
        &self,
        job: &Job,
        load: Loader,
        shutdown: &CancellationToken,
    ) -> Result<Outcome> {
        let model = job.model.clone();
        let trigger = job.trigger.clone();
        let (incumbent, version, published_at) = {
            let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
            if let Some(done) = reg.by_trigger(&model, &trigger) {
                info!(%model, %trigger, version = done.version, "already published; nothing to train");
                self.metrics
                    .trainings
                    .with_label_values(&["already_published"])
                    .inc();
                return Ok(Outcome::Published);
            }
            let latest_published = reg
                .versions(&model)
                .map(|m| m.published_at)
                .max()
                .unwrap_or(0);
            (
                reg.production(&model).cloned(),
                reg.latest_version(&model) + 1,
                now_ms().max(latest_published + 1),
            )
        };
        let spec = self.models[&model].spec.clone();
        let options = self.options;
        let started = Instant::now();
        info!(%model, %trigger, version, reason = %job.reason, "training started");
        let (m, t) = (model.clone(), trigger.clone());
        let pause = self.phase_pause;
        let mut handle = tokio::task::spawn_blocking(move || -> Result<Trained> {
            let set = load()?;
            // Too few rows is known before any fit (train checks it again, with the rows
            // it can use): the job waits for more without a training phase.
            let needed = options.min_rows.max(2);
            if set.rows.len() < needed {
                return Err(Error::NotEnoughRows {
                    model: m.clone(),
                    rows: set.rows.len(),
                    needed,
                });
            }
            if !pause.is_zero() {
                println!("phase=training model={m} trigger={t}");
                std::thread::sleep(pause);
            }
            info!(model = %m, trigger = %t, rows = set.rows.len(), end_offsets = ?set.end_offsets, "training set snapshot");
            let ctx = Context {
                version,
                trigger: &t,
                incumbent: incumbent.as_ref(),
                published_at,
                end_offsets: set.end_offsets,
            };
            train(
                &spec,
                set.rows,
                &ctx,
                &options,
                &mut |msg| info!(model = %m, trigger = %t, "{msg}"),
            )
        });
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        let trained = loop {
            tokio::select! {
                r = &mut handle => break r.map_err(|e| Error::State(format!("training task: {e}")))??,
                _ = tick.tick() => info!(%model, %trigger, elapsed_s = started.elapsed().as_secs(), "still training"),
                _ = shutdown.cancelled() => {
                    // The fit cannot be interrupted; the job stays in the store and runs
                    // again after the restart.
                    warn!(%model, %trigger, "shutdown during training; the job will run again on restart");
                    return Ok(Outcome::Skipped);
                }
            }
        };
        self.metrics
            .training_seconds
            .observe(started.elapsed().as_secs_f64());
        let record = trained.record;
        publish(
            &self.producer,
            &self.models_topic,
            &self.codec,
            std::slice::from_ref(&record),
        )
        .await?;
        let outcome = if trained.promoted {
            "promoted"
        } else {
            "rejected"
        };
        self.metrics.trainings.with_label_values(&[outcome]).inc();
        info!(
            %model, %trigger, version, outcome,
            metric = trained.metric,
            candidate = ?record.metrics.get(trained.metric),
            incumbent = ?record.incumbent_metrics.get(trained.metric),
            seconds = started.elapsed().as_secs_f64(),
            "version published"
        );
        self.phase("published", &model, &trigger).await;
        // The next version number comes from the registry: wait until it has this one.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let seen = self
                .registry
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .by_trigger(&model, &trigger)
                .is_some();
            if seen {
                break;
            }
            if Instant::now() > deadline || shutdown.is_cancelled() {
                return Err(Error::State(format!(
                    "{model} v{version} was acknowledged but the registry has not shown it"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Outcome::Published)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::RwLock;

    use driftline_runtime::registry::Registry;
    use rdkafka::ClientConfig;

    use crate::labelled::job_key;

    fn runner(store: Arc<Store>) -> Runner {
        let mut spec =
            FeatureSpec::from_toml(include_str!("../../../tests/fixtures/toy.toml")).unwrap();
        spec.model.name = "m".into();
        Runner {
            store,
            registry: Arc::new(RwLock::new(Registry::default())),
            models: [(
                "m".to_string(),
                Owned {
                    spec: Arc::new(spec),
                    spec_path: PathBuf::from("toy.toml"),
                },
            )]
            .into(),
            // Never reached: no run gets as far as publishing.
            producer: ClientConfig::new()
                .set("bootstrap.servers", "127.0.0.1:1")
                .create()
                .unwrap(),
            codec: Codec::single_object(),
            models_topic: "models".into(),
            options: TrainOptions::default(),
            bootstrap: BootstrapOptions::default(),
            metrics: TrainerMetrics::new(&prometheus::Registry::new()),
            wake: Arc::new(Notify::new()),
            phase_pause: Duration::ZERO,
            waiting_for_rows: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_job_with_too_few_rows_waits_for_more_rows_instead_of_being_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), false).unwrap());
        let mut txn = store.txn();
        for (trigger, at) in [("drift:a", 1), ("drift:b", 2), ("drift:c", 3)] {
            let job = Job {
                model: "m".into(),
                trigger: trigger.into(),
                window_start: i64::MIN,
                window_end: i64::MAX,
                requested_at: at,
                reason: "test".into(),
            };
            txn.put(job_key("m", trigger), job.encode());
        }
        store.commit(txn, &BTreeMap::new()).unwrap();
        let r = runner(store.clone());
        let triggers = || -> Vec<String> {
            pending_jobs(&store)
                .unwrap()
                .into_iter()
                .map(|(_, j)| j.trigger)
                .collect()
        };
        let waiting = || r.waiting_for_rows.lock().unwrap().get("m").copied();
        let shutdown = CancellationToken::new();

        // No labelled rows yet (a restart before the consumer has its partitions back):
        // nothing is dropped, nothing is marked done; the model waits for rows.
        r.run_pending(&shutdown).await.unwrap();
        assert_eq!(triggers(), ["drift:a", "drift:b", "drift:c"]);
        assert!(store.get(&done_key("m", "drift:a")).unwrap().is_none());
        assert_eq!(waiting(), Some(0));
        // The consumer stores rows (here, the gauge it keeps says so): the job runs again.
        r.metrics.labelled_rows.with_label_values(&["m"]).set(3);
        r.run_pending(&shutdown).await.unwrap();
        assert_eq!(waiting(), Some(3), "tried again with the rows there were");
        assert_eq!(triggers().len(), 3, "and still waits: 3 rows are too few");
    }

    fn wide_record(features: usize, model_bytes: usize) -> ModelPublished {
        use driftline_schemas::events::{FeatureKind, FeatureProfile, ModelStatus};
        ModelPublished {
            model: "m".into(),
            version: 2,
            algorithm: "linear".into(),
            hyper_parameters: Default::default(),
            metrics: Default::default(),
            incumbent_metrics: Default::default(),
            parent_version: Some(1),
            trigger: "drift:r".into(),
            training_window: Default::default(),
            reference_profile: (0..features)
                .map(|f| FeatureProfile {
                    name: format!("f{f}"),
                    kind: FeatureKind::Numeric,
                    count: 50_000,
                    missing: 10,
                    sample: (0..10_000).map(|i| f64::from(i) * 0.5).collect(),
                    categories: Default::default(),
                })
                .collect(),
            model_format: "x".into(),
            model_bytes: vec![7; model_bytes],
            status: ModelStatus::Production,
            published_at: 1,
        }
    }

    #[test]
    fn a_record_too_large_for_a_message_keeps_a_thinner_profile() {
        let codec = Codec::single_object();
        // 20 numeric features of 10,000 reference values: 1.6 MB, over the broker's 1 MB.
        let record = wide_record(20, 1000);
        assert!(codec.encode(&record).unwrap().len() > 1_500_000);
        let payload = fit_to_message(&codec, &record).unwrap();
        assert!(payload.len() <= MAX_RECORD_BYTES, "{}", payload.len());
        let sent: ModelPublished = codec.decode(&payload).unwrap();
        for p in &sent.reference_profile {
            assert_eq!(p.sample.len(), 5_000, "halved once");
            assert!(p.sample.is_sorted());
            assert_eq!((p.count, p.missing), (50_000, 10), "the profile's totals");
        }
        assert_eq!(sent.model_bytes, record.model_bytes);
        // A record that fits goes as it is.
        let small = wide_record(2, 1000);
        assert_eq!(
            fit_to_message(&codec, &small).unwrap(),
            codec.encode(&small).unwrap()
        );
    }

    #[test]
    fn model_bytes_too_large_for_a_message_are_an_error_that_drops_the_job() {
        let codec = Codec::single_object();
        let e = fit_to_message(&codec, &wide_record(1, 2_000_000)).unwrap_err();
        assert!(matches!(e, Error::TooLarge(_)), "{e}");
        assert!(!e.is_retryable(), "dropped, not retried at every restart");
        assert!(e.to_string().contains("2000000 bytes of model"), "{e}");
    }
}
