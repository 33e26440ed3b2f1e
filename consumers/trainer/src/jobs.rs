//! Runs the training jobs the processor leaves in the store, off the consume path.
//!
//! A job belongs to the partition of the event that asked for it (a model's labelled rows
//! and retrain events share a partition number), and only the instance that owns that
//! partition runs it, so with several trainers each model is trained and numbered by one.
//! A job is trained in `spawn_blocking` from a snapshot of the committed rows (a bootstrap
//! job from the spec's data set). A model's jobs run one at a time, the oldest trigger
//! (by event time) first, each on the rows it names: what a backlog publishes is the
//! versions the triggers would have made one by one, whatever the timing (folding a
//! backlog into one run, as before, made the versions depend on how fast the trainer
//! kept up). The cost is a fit per trigger in a burst; the monitor's cooldown and the
//! schedule's row count bound how many there are. A run that fails drops only its own job.
//!
//! Publishing goes through the partition's [`FencedWriter`] (transactional id
//! `<group>-publish-<partition>`): one transaction holds the model version and the
//! changelog records that clear its jobs. Exactly one version per trigger, and no version
//! number twice, across kill -9 at any point and across rebalances:
//! - a new owner makes the writer first, which fences the previous owner (its open
//!   transaction is aborted, its next commit fails), then catches the registry up with
//!   the models topic ([`RegistrySync`]): every version the previous owner committed is
//!   known before a number is chosen, and nobody else can commit one after;
//! - killed before the commit: nothing of the run is visible, the job is still in the
//!   changelog, and the next owner trains it again;
//! - after the commit: the version and the cleared jobs are visible together; a copy of
//!   the request delivered again meets the registry's record of the trigger
//!   (`Registry::by_trigger`) in the processor, or here, and trains nothing;
//! - a trainer that lost its partition during a fit drops the result unpublished.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftline_kafka::KafkaArgs;
use driftline_runtime::fenced::{FencedWriter, Write, WriteError, writer_id};
use driftline_runtime::health::Health;
use driftline_runtime::registry::{Registry, RegistrySync, SharedRegistry};
use driftline_runtime::signing::{self, Signer, Trust};
use driftline_runtime::{Store, now_ms};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Event, ModelProgress, ModelPublished};
use driftline_schemas::spec::FeatureSpec;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::labelled::{
    Job, end_offsets, named_by, newest_first, pending_decisions, pending_jobs, read_upto,
};
use crate::metrics::TrainerMetrics;
use crate::ops;
use crate::rollout::Action;
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

/// Publishes records to the models topic, signed by `signer` if there is one, and waits
/// for the broker's acknowledgements.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    codec: &Codec,
    signer: Option<&Signer>,
    records: &[ModelPublished],
) -> Result<()> {
    for r in records {
        let payload = fit_to_message(codec, r)?;
        let key = r.key();
        producer
            .send(
                FutureRecord::to(topic)
                    .key(&key)
                    .payload(&payload)
                    .headers(signing::headers(signer, key.as_bytes(), &payload)),
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

/// Gives back their bytes and profile to the records (from [`crate::ops`]) of versions
/// the registry keeps thin, read from the models topic: an operation never publishes a
/// thin record. Only a record `trust` accepts is taken: the operation signs what it
/// publishes.
pub async fn made_whole(
    kafka: &KafkaArgs,
    topic: &str,
    codec: &Codec,
    trust: &Trust,
    registry: &Registry,
    mut records: Vec<ModelPublished>,
) -> Result<Vec<ModelPublished>> {
    for r in &mut records {
        // Whole in the registry, or a new record (an import) that carries its bytes.
        if registry.is_whole(&r.model, r.version) || !r.model_bytes.is_empty() {
            continue;
        }
        let (kafka, topic, codec, trust, model) = (
            kafka.clone(),
            topic.to_string(),
            codec.clone(),
            trust.clone(),
            r.model.clone(),
        );
        let version = r.version;
        let whole = tokio::task::spawn_blocking(move || {
            driftline_runtime::registry::read_whole(&kafka, &topic, &codec, &trust, &model, version)
        })
        .await
        .map_err(|e| Error::State(format!("reading a version back: {e}")))??
        .filter(|whole| !whole.model_bytes.is_empty())
        .ok_or_else(|| {
            Error::Conflict(format!(
                "{} v{} has no whole record on the models topic any more",
                r.model, r.version
            ))
        })?;
        info!(model = %r.model, version = r.version, "read a thin version whole from the models topic");
        r.model_bytes = whole.model_bytes;
        r.reference_profile = whole.reference_profile;
    }
    Ok(records)
}

/// A model this trainer owns: its spec and where the spec file is (for `dataset.path`).
#[derive(Debug, Clone)]
pub struct Owned {
    pub spec: Arc<FeatureSpec>,
    pub spec_path: PathBuf,
}

/// The partitions this instance owns, each with the term it was taken in: a partition
/// given up and taken back is a new term (another instance may have published meanwhile),
/// so its writer is made again.
#[derive(Debug, Clone, Default)]
pub struct Ownership(Arc<std::sync::Mutex<Terms>>);

#[derive(Debug, Default)]
struct Terms {
    last: u64,
    of: BTreeMap<i32, u64>,
}

impl Ownership {
    /// The partitions owned from now on.
    pub fn set(&self, partitions: impl IntoIterator<Item = i32>) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now: BTreeSet<i32> = partitions.into_iter().collect();
        t.of.retain(|p, _| now.contains(p));
        for p in now {
            if !t.of.contains_key(&p) {
                t.last += 1;
                let term = t.last;
                t.of.insert(p, term);
            }
        }
    }

    /// The term `partition` is owned in, if it is.
    pub fn term(&self, partition: i32) -> Option<u64> {
        let t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        t.of.get(&partition).copied()
    }
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
    pub registry_sync: RegistrySync,
    pub models: HashMap<String, Owned>,
    pub kafka: KafkaArgs,
    /// The consumer group: writers are named after it, one per partition.
    pub group: String,
    /// The group's changelog, where clearing a job is written.
    pub changelog: String,
    pub ownership: Ownership,
    pub codec: Codec,
    pub models_topic: String,
    /// Signs the versions this trainer publishes (none: they go out unsigned).
    pub signer: Option<Arc<Signer>>,
    /// Whose records are taken when a thin version is read whole for a rollout decision.
    pub trust: Trust,
    pub options: TrainOptions,
    pub metrics: TrainerMetrics,
    pub wake: Arc<Notify>,
    /// Test hook: print each phase on stdout and pause this long in it (0 = off), so a
    /// test can kill the process mid-training or mid-publishing.
    pub phase_pause: Duration,
    /// Models whose newest job had too few rows, with the row count then: it waits until
    /// the consumer has stored more (after a restart the job can run before the consumer
    /// has its partitions back; a retrain request can be read before the rows behind it).
    pub waiting_for_rows: std::sync::Mutex<HashMap<String, i64>>,
    /// The writer of each owned partition, with the term it was made in.
    pub writers: std::sync::Mutex<HashMap<i32, (u64, Arc<FencedWriter>)>>,
    /// Jobs said to be waiting for their rows (to say it once).
    pub waiting_for_offset: std::sync::Mutex<HashSet<String>>,
    /// Where how far each model's versions are decided goes (with `--swap-lag`).
    pub progress_topic: String,
    /// What was last written there, per model: (`decided_until`, version).
    pub progress_sent: std::sync::Mutex<HashMap<String, (i64, i64)>>,
}

/// How far a model's versions are decided, with `newest` the event time of the newest
/// row stored and `pending` whether a job of the model waits: `None` while one does (its
/// version is not out yet) and before any row. With none pending, every version still to
/// come is triggered by a row not read yet and trains on every row stored now, so its
/// window ends at or after `newest`, and it takes effect at that plus `lag` or later.
/// (A retrain request the monitor sends later may name fewer rows: not covered; see
/// ARCHITECTURE.md, "Equal across runs".)
pub fn decided_until(newest: Option<i64>, pending: bool, lag: i64) -> Option<i64> {
    if pending {
        return None;
    }
    newest.map(|t| t.saturating_add(lag).saturating_sub(1))
}

/// What a run came to.
enum Outcome {
    /// A new version, and its record as it goes on the models topic.
    Trained {
        record: Box<ModelPublished>,
        payload: Vec<u8>,
        promoted: bool,
        metric: &'static str,
    },
    /// The trigger has a version already: nothing to publish, the jobs are cleared.
    Published,
    /// Not run to the end (shutdown, the partition moved): the jobs stay.
    Skipped,
}

/// The state changes that clear the jobs of a run: each removed. A re-delivered copy of
/// its request then meets the version it made (`Registry::by_trigger`).
fn clearing(jobs: &[(Vec<u8>, Job)]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    jobs.iter().map(|(key, _)| (key.clone(), None)).collect()
}

impl Runner {
    /// Runs the jobs of the partitions this instance owns until shutdown. Start it once
    /// the registry has read the models topic to its end.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
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

    /// The writer of `partition` for `term`: made (fencing the previous owner's) when the
    /// term is new, and then the registry is caught up, so that it holds every version the
    /// previous owner committed before a version number is chosen. `None` on shutdown.
    async fn writer(
        &self,
        partition: i32,
        term: u64,
        shutdown: &CancellationToken,
    ) -> Result<Option<Arc<FencedWriter>>> {
        let cached = {
            let writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
            writers.get(&partition).cloned()
        };
        if let Some((t, w)) = cached
            && t == term
        {
            return Ok(Some(w));
        }
        let id = writer_id(&self.group, "publish", partition);
        let health = Health::default();
        let started = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            w = FencedWriter::start(&self.kafka, &id, &health) => w?,
        };
        let writer = Arc::new(started);
        self.registry_sync.wait(REGISTRY_PATIENCE).await?;
        self.writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(partition, (term, writer.clone()));
        Ok(Some(writer))
    }

    /// Runs the oldest job of each model with pending jobs in an owned partition, after
    /// publishing the live gate's decisions; wakes the runner again while jobs remain.
    async fn run_pending(&self, shutdown: &CancellationToken) -> Result<()> {
        // Writers of partitions given up since are closed.
        self.writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p, (term, _)| self.ownership.term(*p) == Some(*term));
        self.run_decisions(shutdown).await?;
        let mut by_model: BTreeMap<String, Vec<(Vec<u8>, Job)>> = BTreeMap::new();
        for (key, job) in pending_jobs(&self.store)? {
            // A job belongs to the partition of the event that asked for it; jobs written
            // before jobs named one are taken as partition 0's.
            if self.ownership.term(job.partition.unwrap_or(0)).is_some() {
                by_model
                    .entry(job.model.clone())
                    .or_default()
                    .push((key, job));
            }
        }
        self.metrics
            .pending_jobs
            .set(by_model.values().map(Vec::len).sum::<usize>() as i64);
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
            let Some(oldest) = (0..jobs.len())
                .min_by_key(|i| (jobs[*i].1.requested_at, jobs[*i].1.rows_until, &jobs[*i].0))
            else {
                continue;
            };
            let job = jobs[oldest].1.clone();
            let partition = job.partition.unwrap_or(0);
            let Some(term) = self.ownership.term(partition) else {
                continue;
            };
            if let Some(until) = job.rows_until {
                let read = read_upto(&self.store, partition)?.unwrap_or(0);
                if read < until {
                    let first = self
                        .waiting_for_offset
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(job.trigger.clone());
                    if first {
                        info!(%model, trigger = %job.trigger, partition, until, read, "waiting until the store holds the labelled rows the request names");
                    }
                    continue;
                }
                self.waiting_for_offset
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&job.trigger);
            }
            if jobs.len() > 1 {
                info!(%model, trigger = %job.trigger, waiting = jobs.len() - 1, "training the oldest of the model's pending jobs");
            }
            // Too few rows stored for any window: known without the broker.
            let needed = self.options.min_rows.max(2);
            let trained = if job.trigger != bootstrap::TRIGGER && (rows_now as usize) < needed {
                Err(Error::NotEnoughRows {
                    model: model.clone(),
                    rows: rows_now as usize,
                    needed,
                })
            } else {
                match self.loader(&job) {
                    Ok(load) => self.train(&job, load, partition, term, shutdown).await,
                    Err(e) => Err(e),
                }
            };
            let (ran, outcome) = match trained {
                Ok(Outcome::Skipped) if shutdown.is_cancelled() => return Ok(()),
                Ok(Outcome::Skipped) => continue,
                Ok(outcome) => (&jobs[oldest..=oldest], outcome),
                // Broker trouble, or a registry that does not catch up: stop rather than
                // number the next version from a stale registry.
                Err(e @ Error::State(_)) => return Err(e),
                Err(e) if e.is_retryable() && !matches!(e, Error::NotEnoughRows { .. }) => {
                    return Err(e);
                }
                // More rows cannot change a set named by offsets: it fails like a fit.
                Err(e @ Error::NotEnoughRows { .. }) if job.rows_until.is_none() => {
                    // Kept: it runs again once more labelled rows are stored.
                    warn!(%model, trigger = %job.trigger, error = %e, "too few rows to train yet; the job waits for more");
                    self.waiting_for_rows
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(model.clone(), rows_now);
                    continue;
                }
                Err(e) => {
                    // The inputs cannot make a model (a fit error, a record too large):
                    // drop the job so it does not spin; the next retrain event tries
                    // again, and the model's other jobs run on their own rows.
                    self.metrics.trainings.with_label_values(&["failed"]).inc();
                    error!(%model, trigger = %job.trigger, error = %e, waiting = jobs.len() - 1, "training failed; job dropped");
                    (&jobs[oldest..=oldest], Outcome::Published)
                }
            };
            self.waiting_for_rows
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&model);
            if !shutdown.is_cancelled() {
                self.commit(&job, partition, term, ran, outcome, shutdown)
                    .await?;
                if jobs.len() > 1 {
                    // The next one now, not after the runner's idle second.
                    self.wake.notify_one();
                }
            }
        }
        self.publish_progress(shutdown).await
    }

    /// Writes how far each owned model's versions are decided ([`decided_until`]) when it
    /// moved, through the partition's writer, so an instance that lost the partition
    /// writes nothing. Best effort: a write that fails is tried again next round.
    async fn publish_progress(&self, shutdown: &CancellationToken) -> Result<()> {
        let Some(lag) = self.options.swap_lag else {
            return Ok(());
        };
        let pending: HashSet<String> = pending_jobs(&self.store)?
            .into_iter()
            .map(|(_, j)| j.model)
            .collect();
        for model in self.models.keys() {
            let Some(newest) = newest_first(&self.store, model, i64::MAX)?
                .next()
                .transpose()?
            else {
                continue;
            };
            // Labelled partition n holds the pairs of predictions partition n.
            let Some(partition) = newest.prediction.as_ref().map(|p| p.partition) else {
                continue;
            };
            let Some(term) = self.ownership.term(partition) else {
                continue;
            };
            let Some(until) =
                decided_until(Some(newest.row.event_time), pending.contains(model), lag)
            else {
                continue;
            };
            let version = self
                .registry
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .latest_version(model);
            let sent = self
                .progress_sent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(model)
                .copied();
            if sent == Some((until, version)) {
                continue;
            }
            let record = ModelProgress {
                model: model.clone(),
                decided_until: until,
                version,
                published_at: now_ms(),
            };
            let write = Write {
                topic: self.progress_topic.clone(),
                partition: None,
                key: record.key().into_bytes(),
                payload: Some(self.codec.encode(&record)?),
                headers: Vec::new(),
            };
            let Some(writer) = self.writer(partition, term, shutdown).await? else {
                return Ok(());
            };
            match writer.commit(&[write]).await {
                Ok(()) => {
                    self.progress_sent
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(model.clone(), (until, version));
                }
                Err(e) => {
                    self.writers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&partition);
                    warn!(%model, partition, error = %e, "progress not written; trying again next round");
                }
            }
        }
        Ok(())
    }

    /// What a job trains on: the bootstrap's data set, or the committed rows of its window.
    fn loader(&self, job: &Job) -> Result<Loader> {
        let owned = &self.models[&job.model];
        if job.trigger == bootstrap::TRIGGER {
            let path = bootstrap::dataset_path(&owned.spec, &owned.spec_path).ok_or_else(|| {
                Error::Config(format!(
                    "{}: a bootstrap needs the spec's dataset.path",
                    job.model
                ))
            })?;
            let spec = owned.spec.clone();
            // The request carries its cut-off as the window's end.
            let until = (job.window_end != i64::MAX).then_some(job.window_end);
            return Ok(Box::new(move || {
                let (rows, skipped) = bootstrap::read_rows(&spec, &path, None, until)?;
                info!(model = %spec.model.name, path = %path.display(), rows = rows.len(), skipped, "bootstrap rows read");
                // From a file: no topic offsets to name.
                Ok(TrainingSet {
                    rows,
                    end_offsets: BTreeMap::new(),
                })
            }));
        }
        let store = self.store.clone();
        let (m, start, end, min, until) = (
            job.model.clone(),
            job.window_start,
            job.window_end,
            self.options.min_rows,
            job.rows_until,
        );
        Ok(Box::new(move || {
            let rows = newest_first(&store, &m, end)?
                .filter(|r| r.as_ref().map_or(true, |r| named_by(r, until)));
            let rows = select_window(rows, start, end, min)?;
            Ok(TrainingSet {
                end_offsets: end_offsets(&rows),
                rows: rows.into_iter().map(|r| r.row).collect(),
            })
        }))
    }

    /// Publishes what a run came to and clears its jobs, in one transaction of the
    /// partition's writer; then the same changes go to the local store.
    async fn commit(
        &self,
        job: &Job,
        partition: i32,
        term: u64,
        jobs: &[(Vec<u8>, Job)],
        outcome: Outcome,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let (model, trigger) = (&job.model, &job.trigger);
        let changes = clearing(jobs);
        let records = match &outcome {
            Outcome::Trained {
                record, payload, ..
            } => vec![(record.key().into_bytes(), payload.clone())],
            _ => Vec::new(),
        };
        if !self
            .transact(partition, term, &changes, records, shutdown)
            .await?
        {
            info!(%model, %trigger, partition, "the partition moved during training; its new owner runs the job");
            return Ok(());
        }
        let Outcome::Trained {
            record,
            promoted,
            metric,
            ..
        } = outcome
        else {
            return Ok(());
        };
        let outcome = if promoted { "promoted" } else { "rejected" };
        self.metrics.trainings.with_label_values(&[outcome]).inc();
        info!(
            %model, %trigger, version = record.version, outcome, partition,
            metric,
            candidate = ?record.metrics.get(metric),
            incumbent = ?record.incumbent_metrics.get(metric),
            "version published"
        );
        self.phase("published", model, trigger).await;
        // The next version number comes from the registry: wait until it has this one.
        self.registry_sync.wait(REGISTRY_PATIENCE).await?;
        let seen = self
            .registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_trigger(model, trigger)
            .is_some();
        if !seen {
            return Err(Error::State(format!(
                "{model} v{} was committed but the registry does not show it",
                record.version
            )));
        }
        Ok(())
    }

    /// Commits `records` (key, payload) to the models topic, signed, and `changes` to the
    /// changelog in one transaction of `partition`'s writer, then `changes` to the local
    /// store. False when the partition is no longer this instance's (nothing committed).
    async fn transact(
        &self,
        partition: i32,
        term: u64,
        changes: &[(Vec<u8>, Option<Vec<u8>>)],
        records: Vec<(Vec<u8>, Vec<u8>)>,
        shutdown: &CancellationToken,
    ) -> Result<bool> {
        if self.ownership.term(partition) != Some(term) {
            return Ok(false);
        }
        let Some(writer) = self.writer(partition, term, shutdown).await? else {
            return Ok(false);
        };
        let mut writes: Vec<Write> = changes
            .iter()
            .map(|(key, value)| Write {
                topic: self.changelog.clone(),
                partition: Some(partition),
                key: key.clone(),
                payload: value.clone(),
                headers: Vec::new(),
            })
            .collect();
        for (key, payload) in records {
            writes.push(Write {
                topic: self.models_topic.clone(),
                partition: None,
                headers: self
                    .signer
                    .iter()
                    .map(|s| s.header(&key, &payload))
                    .collect(),
                key,
                payload: Some(payload),
            });
        }
        if let Err(e) = writer.commit(&writes).await {
            self.writers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&partition);
            if let WriteError::Fenced { .. } = e {
                warn!(partition, error = %e, "another trainer owns the partition now");
                return Ok(false);
            }
            return Err(driftline_runtime::Error::Delivery {
                topic: self.models_topic.clone(),
                error: e.to_string(),
            }
            .into());
        }
        self.store.write(
            changes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
            &BTreeMap::new(),
        )?;
        Ok(true)
    }

    /// Publishes the live gate's decisions of the partitions this instance owns, each as
    /// the registry operation it names, in one transaction with clearing it. A decision
    /// the registry has moved past (the trial ended, production changed) is cleared
    /// unpublished.
    async fn run_decisions(&self, shutdown: &CancellationToken) -> Result<()> {
        for (key, d) in pending_decisions(&self.store)? {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let Some(term) = self.ownership.term(d.partition) else {
                continue;
            };
            // Fenced and caught up before the registry is read.
            if self.writer(d.partition, term, shutdown).await?.is_none() {
                return Ok(());
            }
            let registry = self
                .registry
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let (model, version, action) = (&d.model, d.version, d.action.as_str());
            let on_trial = [registry.canary(model), registry.shadow(model)]
                .into_iter()
                .flatten()
                .any(|c| c.version == version);
            let made = match d.action {
                Action::Promote if on_trial => {
                    Some(ops::promote(&registry, model, version, now_ms()))
                }
                Action::Reject if on_trial => {
                    Some(ops::reject(&registry, model, version, now_ms()))
                }
                Action::Rollback
                    if registry.production(model).map(|p| p.version) == Some(version) =>
                {
                    Some(ops::rollback(&registry, model, now_ms()))
                }
                _ => None,
            };
            let records = match made {
                Some(Ok(records)) => {
                    let whole = made_whole(
                        &self.kafka,
                        &self.models_topic,
                        &self.codec,
                        &self.trust,
                        &registry,
                        records,
                    )
                    .await;
                    match whole {
                        Ok(records) => records,
                        Err(e) if e.is_retryable() => return Err(e),
                        Err(e) => {
                            warn!(%model, version, action, error = %e, "rollout decision cannot be carried out; cleared");
                            Vec::new()
                        }
                    }
                }
                Some(Err(e)) => {
                    warn!(%model, version, action, error = %e, "rollout decision cannot be carried out; cleared");
                    Vec::new()
                }
                None => {
                    info!(%model, version, action, "the registry moved past this rollout decision; cleared unpublished");
                    Vec::new()
                }
            };
            let payloads = records
                .iter()
                .map(|r| Ok((r.key().into_bytes(), fit_to_message(&self.codec, r)?)))
                .collect::<Result<Vec<_>>>()?;
            let published = !payloads.is_empty();
            if self
                .transact(d.partition, term, &[(key, None)], payloads, shutdown)
                .await?
                && published
            {
                info!(%model, version, action, reason = %d.reason, "rollout decision published");
                self.registry_sync.wait(REGISTRY_PATIENCE).await?;
            }
        }
        Ok(())
    }

    async fn train(
        &self,
        job: &Job,
        load: Loader,
        partition: i32,
        term: u64,
        shutdown: &CancellationToken,
    ) -> Result<Outcome> {
        let model = job.model.clone();
        let trigger = job.trigger.clone();
        // Fenced and caught up before the version number is read.
        if self.writer(partition, term, shutdown).await?.is_none() {
            return Ok(Outcome::Skipped);
        }
        let (incumbent, version, published_at) = {
            let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
            let done = reg
                .by_trigger(&model, &trigger)
                .map(|m| m.version)
                .or_else(|| {
                    // A model with versions needs no bootstrap, whoever published them.
                    (trigger == bootstrap::TRIGGER && reg.latest_version(&model) > 0)
                        .then(|| reg.latest_version(&model))
                });
            if let Some(version) = done {
                info!(%model, %trigger, version, "already published; nothing to train");
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
        info!(%model, %trigger, version, partition, reason = %job.reason, "training started");
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
        let payload = fit_to_message(&self.codec, &trained.record)?;
        Ok(Outcome::Trained {
            record: Box::new(trained.record),
            payload,
            promoted: trained.promoted,
            metric: trained.metric,
        })
    }
}

/// How long the registry may take to catch up with the models topic.
const REGISTRY_PATIENCE: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::RwLock;

    use driftline_runtime::registry::Registry;

    use crate::labelled::job_key;

    fn runner(store: Arc<Store>) -> Runner {
        let ownership = Ownership::default();
        ownership.set([0]);
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
            registry_sync: RegistrySync::none(),
            // Never reached: no run gets as far as making a writer.
            kafka: KafkaArgs::default(),
            group: "g".into(),
            changelog: "g-changelog".into(),
            ownership,
            codec: Codec::single_object(),
            models_topic: "models".into(),
            signer: None,
            trust: Trust::none(),
            options: TrainOptions::default(),
            metrics: TrainerMetrics::new(&prometheus::Registry::new()),
            wake: Arc::new(Notify::new()),
            phase_pause: Duration::ZERO,
            waiting_for_rows: Default::default(),
            writers: Default::default(),
            waiting_for_offset: Default::default(),
            progress_topic: "progress".into(),
            progress_sent: Default::default(),
        }
    }

    #[test]
    fn progress_is_the_newest_row_plus_the_lag_and_none_while_a_job_waits() {
        assert_eq!(decided_until(Some(1_000), false, 100), Some(1_099));
        assert_eq!(decided_until(Some(1_000), true, 100), None);
        assert_eq!(decided_until(None, false, 100), None);
        assert_eq!(
            decided_until(Some(i64::MAX), false, 100),
            Some(i64::MAX - 1)
        );
    }

    #[test]
    fn a_partition_taken_back_is_a_new_term_and_one_kept_is_not() {
        let o = Ownership::default();
        o.set([0, 1]);
        let (zero, one) = (o.term(0).unwrap(), o.term(1).unwrap());
        assert_ne!(zero, one);
        o.set([1]);
        assert_eq!((o.term(0), o.term(1)), (None, Some(one)));
        o.set([0, 1]);
        assert_eq!(o.term(1), Some(one), "kept through the rebalance");
        assert!(o.term(0).unwrap() > zero, "given up and taken back");
        o.set([]);
        assert_eq!((o.term(0), o.term(1)), (None, None));
    }

    /// A job of model `m` in partition 0, asked for at event time `at`.
    fn job(trigger: &str, at: i64, rows_until: Option<i64>) -> Job {
        Job {
            model: "m".into(),
            trigger: trigger.into(),
            window_start: i64::MIN,
            window_end: i64::MAX,
            requested_at: at,
            reason: "test".into(),
            partition: Some(0),
            rows_until,
        }
    }

    #[tokio::test]
    async fn a_job_with_too_few_rows_waits_for_more_rows_instead_of_being_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), false).unwrap());
        let mut txn = store.txn();
        for (trigger, at) in [("drift:a", 1), ("drift:b", 2), ("drift:c", 3)] {
            txn.put(job_key("m", trigger), job(trigger, at, None).encode());
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
        // nothing is dropped; the model waits for rows.
        r.run_pending(&shutdown).await.unwrap();
        assert_eq!(triggers(), ["drift:a", "drift:b", "drift:c"]);
        assert_eq!(waiting(), Some(0));
        // The consumer stores rows (here, the gauge it keeps says so): the job runs again.
        r.metrics.labelled_rows.with_label_values(&["m"]).set(3);
        r.run_pending(&shutdown).await.unwrap();
        assert_eq!(waiting(), Some(3), "tried again with the rows there were");
        assert_eq!(triggers().len(), 3, "and still waits: 3 rows are too few");
    }

    #[tokio::test]
    async fn a_job_naming_rows_the_store_has_not_read_yet_waits_for_them_and_the_newer_jobs_wait_behind_it()
     {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), false).unwrap());
        let mut txn = store.txn();
        // Queued newest first: the order they run in is the triggers' event times.
        for (trigger, at, until) in [("drift:b", 2, 12), ("drift:a", 1, 10)] {
            txn.put(
                job_key("m", trigger),
                job(trigger, at, Some(until)).encode(),
            );
        }
        crate::labelled::record_read(&mut txn, 0, 9);
        store.commit(txn, &BTreeMap::new()).unwrap();
        let r = runner(store.clone());
        r.metrics.labelled_rows.with_label_values(&["m"]).set(3);
        let shutdown = CancellationToken::new();

        r.run_pending(&shutdown).await.unwrap();
        assert_eq!(
            *r.waiting_for_offset.lock().unwrap(),
            HashSet::from(["drift:a".to_string()]),
            "the oldest trigger runs first, and nothing runs before it"
        );
        assert!(
            r.waiting_for_rows.lock().unwrap().is_empty(),
            "not tried: the rows it names are not all stored"
        );
        assert_eq!(pending_jobs(&store).unwrap().len(), 2);
        // What happens once the rows are read needs a broker: tests/named_rows.rs.
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
                    sub_windows: Vec::new(),
                })
                .collect(),
            model_format: "x".into(),
            model_bytes: vec![7; model_bytes],
            status: ModelStatus::Production,
            published_at: 1,
            traffic_share: 0.0,
            error_sub_windows: Vec::new(),
            feature_importance: Default::default(),
            multivariate: None,
            performance_estimator: None,
            error_estimator: None,
            effective_from: None,
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
