//! The model registry, materialised from the compacted `driftline.models` topic.
//!
//! The topic alone is the registry: each record is the latest state of one version (key
//! `model/version`). [`Registry`] is the pure fold of those records; [`follow`] keeps one
//! up to date from Kafka.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use driftline_schemas::codec::Codec;
use driftline_schemas::events::{ModelPublished, ModelStatus};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use driftline_kafka::KafkaArgs;

use crate::signing::Trust;
use crate::{Error, Result};

/// Every version of every model, by its latest record.
///
/// Memory stays bounded as versions pile up (a busy loop retrains every few minutes): only
/// the production version and the newest [`KEEP_WHOLE`] versions of each model keep their
/// bytes and reference profile; an older version keeps the rest of its record (enough to
/// list, show and match triggers) and is read whole again from the models topic when an
/// operation needs it ([`read_whole`]).
#[derive(Debug, Clone)]
pub struct Registry {
    versions: BTreeMap<String, BTreeMap<i64, ModelPublished>>,
    /// Versions whose bytes and profile were dropped.
    thin: BTreeSet<(String, i64)>,
    keep_whole: usize,
    thinned: u64,
}

/// Versions of each model kept whole besides production: the candidates a rollout or a
/// promotion is likely to want, with room for a burst of rejected retrains.
pub const KEEP_WHOLE: usize = 16;

impl Default for Registry {
    fn default() -> Self {
        Self::keeping(KEEP_WHOLE)
    }
}

/// What a record changed in what serves a model: its production version (`from` →
/// `to`), its canary or its shadow.
#[derive(Debug, Clone, PartialEq)]
pub struct ServingChange {
    pub model: String,
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// The canary after the record: version and traffic share.
    pub canary: Option<(i64, f64)>,
    /// The shadow version after the record.
    pub shadow: Option<i64>,
}

impl Registry {
    /// A registry that keeps the newest `keep_whole` versions of each model whole (and
    /// production).
    pub fn keeping(keep_whole: usize) -> Self {
        Self {
            versions: BTreeMap::new(),
            thin: BTreeSet::new(),
            keep_whole,
            thinned: 0,
        }
    }

    /// Applies one record; says whether the model's production version or canary changed.
    pub fn apply(&mut self, record: ModelPublished) -> Option<ServingChange> {
        let model = record.model.clone();
        let before = self.production(&model).map(|m| m.version);
        let canary_before = self.canary_share(&model);
        let shadow_before = self.shadow(&model).map(|m| m.version);
        self.thin.remove(&(model.clone(), record.version));
        self.versions
            .entry(model.clone())
            .or_default()
            .insert(record.version, record);
        let after = self.production(&model).map(|m| m.version);
        let canary = self.canary_share(&model);
        let shadow = self.shadow(&model).map(|m| m.version);
        self.thin_out(&model);
        (before != after || canary_before != canary || shadow_before != shadow).then_some(
            ServingChange {
                model,
                from: before,
                to: after,
                canary,
                shadow,
            },
        )
    }

    fn canary_share(&self, model: &str) -> Option<(i64, f64)> {
        self.canary(model).map(|m| (m.version, m.traffic_share))
    }

    /// Drops the bytes and profile of every version of `model` that is neither production,
    /// the canary, the shadow, nor among the newest `keep_whole`.
    fn thin_out(&mut self, model: &str) {
        let production = self.production(model).map(|m| m.version);
        let canary = self.canary(model).map(|m| m.version);
        let shadow = self.shadow(model).map(|m| m.version);
        let Some(versions) = self.versions.get_mut(model) else {
            return;
        };
        let keep_from = versions
            .keys()
            .rev()
            .nth(self.keep_whole.saturating_sub(1))
            .copied()
            .unwrap_or(i64::MIN);
        for (version, record) in versions.range_mut(..keep_from) {
            if Some(*version) == production
                || Some(*version) == canary
                || Some(*version) == shadow
                || self.thin.contains(&(model.to_string(), *version))
            {
                continue;
            }
            record.model_bytes = Vec::new();
            record.reference_profile = Vec::new();
            self.thin.insert((model.to_string(), *version));
            self.thinned += 1;
        }
    }

    /// Whether `version` holds its bytes and reference profile (false for a thinned one,
    /// and for one the registry does not have).
    pub fn is_whole(&self, model: &str, version: i64) -> bool {
        self.version(model, version).is_some() && !self.thin.contains(&(model.to_string(), version))
    }

    /// How many versions have been thinned since the registry started.
    pub fn thinned(&self) -> u64 {
        self.thinned
    }

    /// The version serving traffic: of the versions whose latest status is production,
    /// the most recently published (a rollback re-publishes an older version).
    pub fn production(&self, model: &str) -> Option<&ModelPublished> {
        self.versions
            .get(model)?
            .values()
            .filter(|m| m.status == ModelStatus::Production)
            .max_by_key(|m| (m.published_at, m.version))
    }

    /// The production versions a request may still meet, newest first: production, then,
    /// while the newer ones take effect from an event time (`effective_from`), the
    /// production version before each, as long as it can still answer some event time
    /// (it takes effect before every newer one) and is held whole. At most `depth`.
    ///
    /// A request with event time `t` is answered by the first whose `effective_from` is
    /// unset or at most `t` ([`answering`]), and the oldest answers any earlier request.
    pub fn production_history(&self, model: &str, depth: usize) -> Vec<&ModelPublished> {
        let Some(versions) = self.versions.get(model) else {
            return Vec::new();
        };
        let mut productions: Vec<&ModelPublished> = versions
            .values()
            .filter(|m| m.status == ModelStatus::Production)
            .collect();
        productions.sort_by_key(|m| std::cmp::Reverse((m.published_at, m.version)));
        let mut history: Vec<&ModelPublished> = Vec::new();
        // The earliest event time a newer version takes over from.
        let mut taken_from = i64::MAX;
        for m in productions {
            if history.len() == depth || !self.is_whole(model, m.version) {
                break;
            }
            let from = m.effective_from.unwrap_or(i64::MIN);
            if from < taken_from {
                history.push(m);
                taken_from = from;
            }
            if m.effective_from.is_none() {
                break;
            }
        }
        history
    }

    /// The version answering a share of the requests beside production: of the versions
    /// whose latest status is canary, the most recently published, if it was published
    /// after the production record (a promotion or rollback since ends a canary) and is
    /// not production itself.
    pub fn canary(&self, model: &str) -> Option<&ModelPublished> {
        self.beside_production(model, ModelStatus::Canary)
    }

    /// The version predicting every request beside production, logged and never
    /// returned: as [`Registry::canary`], for status shadow.
    pub fn shadow(&self, model: &str) -> Option<&ModelPublished> {
        self.beside_production(model, ModelStatus::Shadow)
    }

    fn beside_production(&self, model: &str, status: ModelStatus) -> Option<&ModelPublished> {
        let production = self.production(model)?;
        self.versions
            .get(model)?
            .values()
            .filter(|m| m.status == status && m.version != production.version)
            .filter(|m| m.published_at > production.published_at)
            .max_by_key(|m| (m.published_at, m.version))
    }

    pub fn version(&self, model: &str, version: i64) -> Option<&ModelPublished> {
        self.versions.get(model)?.get(&version)
    }

    /// Every version of a model, oldest first.
    pub fn versions(&self, model: &str) -> impl Iterator<Item = &ModelPublished> {
        self.versions
            .get(model)
            .into_iter()
            .flat_map(|v| v.values())
    }

    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.versions.keys().map(String::as_str)
    }

    /// The highest version number of a model (0 when it has none).
    pub fn latest_version(&self, model: &str) -> i64 {
        self.versions
            .get(model)
            .and_then(|v| v.keys().next_back().copied())
            .unwrap_or(0)
    }

    /// The version a trigger (e.g. `drift:<report id>`) already produced, if any: a
    /// trainer that crashed after publishing must not publish it again.
    pub fn by_trigger(&self, model: &str, trigger: &str) -> Option<&ModelPublished> {
        self.versions(model).find(|m| m.trigger == trigger)
    }
}

/// Production versions a model keeps for requests older than the newest one's
/// `effective_from` (the predictor's answers, the monitor's serving version): a request
/// older than all of them meets the oldest.
pub const PRODUCTION_HISTORY: usize = 8;

/// Of a production history, newest first ([`Registry::production_history`]), the one
/// answering a request with event time `t`: the first in effect at `t`, else the oldest.
pub fn answering<T>(
    history: &[T],
    effective_from: impl Fn(&T) -> Option<i64>,
    t: i64,
) -> Option<&T> {
    history
        .iter()
        .find(|v| effective_from(v).is_none_or(|from| from <= t))
        .or(history.last())
}

pub type SharedRegistry = Arc<RwLock<Registry>>;

/// Asks a registry follower to catch up: [`RegistrySync::wait`] returns once the registry
/// holds every record committed to the models topic before the call (the follower has
/// read past the end the topic had then).
#[derive(Debug, Clone)]
pub struct RegistrySync(Option<mpsc::UnboundedSender<oneshot::Sender<()>>>);

impl RegistrySync {
    /// A registry with no follower (a service that needs none): always in step.
    pub fn none() -> Self {
        Self(None)
    }

    pub(crate) fn new(requests: mpsc::UnboundedSender<oneshot::Sender<()>>) -> Self {
        Self(Some(requests))
    }

    /// Waits until the registry has caught up, or `patience` runs out (an error: the
    /// models topic cannot be read to its end now).
    pub async fn wait(&self, patience: Duration) -> Result<()> {
        let Some(tx) = &self.0 else { return Ok(()) };
        let (done, caught_up) = oneshot::channel();
        let behind = || {
            Error::Config(format!(
                "the model registry did not catch up within {patience:?}"
            ))
        };
        tx.send(done).map_err(|_| behind())?;
        match tokio::time::timeout(patience, caught_up).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(behind()),
        }
    }
}

type Ends = Vec<(i32, i64)>;

/// Catch-up requests waiting for the follower to reach the end the topic had when each
/// was made.
#[derive(Default)]
struct Syncs {
    /// Per request: where each partition ended, and whom to tell.
    waiting: Vec<(Ends, oneshot::Sender<()>)>,
    /// A read_uncommitted client, to ask for the high watermarks.
    watermarks: Option<BaseConsumer<crate::consumer::QuietContext>>,
}

impl Syncs {
    /// Notes where the topic ends now for `done` (it is answered when the follower gets
    /// there); a request whose end cannot be read is dropped (its waiter sees an error).
    /// The end is the high watermark, asked by a read_uncommitted client: a read_committed
    /// one is told the last stable offset, which stays before a transaction that has
    /// committed until the broker has written its markers.
    fn add(
        &mut self,
        kafka: &KafkaArgs,
        topic: &str,
        partitions: usize,
        done: oneshot::Sender<()>,
    ) {
        // Made at the first request: most followers are never asked.
        if self.watermarks.is_none() {
            let mut config =
                kafka.consumer_config(&format!("driftline-registry-{}", std::process::id()));
            config.set("isolation.level", "read_uncommitted");
            match config.create_with_context(crate::consumer::QuietContext) {
                Ok(c) => self.watermarks = Some(c),
                Err(e) => {
                    warn!(error = %e, "cannot make a client to read where the models topic ends");
                    return;
                }
            }
        }
        let Some(watermarks) = &self.watermarks else {
            return;
        };
        let mut ends = Vec::with_capacity(partitions);
        for p in 0..partitions as i32 {
            match watermarks.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                Ok((_, high)) => ends.push((p, high)),
                Err(e) => {
                    warn!(error = %e, "cannot read where the models topic ends");
                    return;
                }
            }
        }
        self.waiting.push((ends, done));
    }

    /// Answers every request whose end the consumer has reached (its position steps past
    /// transaction markers too).
    fn answer(&mut self, consumer: &StreamConsumer<crate::consumer::QuietContext>) {
        if self.waiting.is_empty() {
            return;
        }
        let Ok(position) = consumer.position() else {
            return;
        };
        let at = |p: i32| {
            position
                .elements()
                .iter()
                .find(|e| e.partition() == p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
        };
        let reached = |ends: &[(i32, i64)]| {
            ends.iter()
                .all(|(p, end)| *end == 0 || at(*p).is_some_and(|o| o >= *end))
        };
        let (done, waiting) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition::<Vec<_>, _>(|(ends, _)| reached(ends));
        self.waiting = waiting;
        for (_, tx) in done {
            let _ = tx.send(());
        }
    }
}

/// The longest wait between two attempts to reach the models topic.
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// A consumer of every partition of `topic` from its first message (no group: every reader
/// needs the whole registry), and the partition count.
pub(crate) fn assign_from_start(
    kafka: &KafkaArgs,
    topic: &str,
) -> Result<(StreamConsumer<crate::consumer::QuietContext>, usize)> {
    let mut config = kafka.consumer_config(&format!("driftline-registry-{}", std::process::id()));
    config.set("enable.partition.eof", "true");
    let consumer: StreamConsumer<crate::consumer::QuietContext> =
        config.create_with_context(crate::consumer::QuietContext)?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(1)
        .max(1);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok((consumer, partitions))
}

/// Reads the latest record of `model` version `version` from the models topic (blocking:
/// a scan of the compacted topic, for the rare operation on a version the registry keeps
/// thin). `None` when the topic has no record of it. The record is the latest on the
/// topic that a follower would apply (trusted, possible), which may itself lack the
/// bytes: a caller that needs them checks.
pub fn read_whole(
    kafka: &KafkaArgs,
    topic: &str,
    codec: &Codec,
    trust: &Trust,
    model: &str,
    version: i64,
) -> Result<Option<ModelPublished>> {
    let key = format!("{model}/{version}");
    let mut config = kafka.consumer_config(&format!("driftline-registry-{}", std::process::id()));
    config.set("enable.partition.eof", "true");
    let consumer: BaseConsumer<crate::consumer::QuietContext> =
        config.create_with_context(crate::consumer::QuietContext)?;
    let starts = crate::read::from_beginning(&consumer, topic)?;
    let mut found = None;
    crate::read::read_to_end(
        &consumer,
        topic,
        &starts,
        Some(Duration::from_secs(60)),
        |m| {
            if let Some(m) = m
                && m.key() == Some(key.as_bytes())
                && let Some(payload) = m.payload()
                && let Verdict::Apply(record) = judge(m, payload, trust, codec, crate::now_ms())
            {
                found = Some(*record);
            }
            Ok(())
        },
    )?;
    Ok(found)
}

/// How far ahead of this service's clock a record's `published_at` may be: clocks disagree
/// by seconds, not by a day. A record from further ahead would be "the latest" for good,
/// so nothing promoted after it could ever serve (and promoting after it overflowed).
pub const MAX_CLOCK_SKEW_MS: i64 = 24 * 60 * 60 * 1000;

/// Why a model record cannot be applied, if it cannot: a version below 1, or a
/// `published_at` before 1970 or more than [`MAX_CLOCK_SKEW_MS`] after `now_ms`.
pub fn refusal(record: &ModelPublished, now_ms: i64) -> Option<String> {
    if record.version < 1 {
        return Some(format!("version {} is below 1", record.version));
    }
    if record.status == ModelStatus::Canary
        && !(record.traffic_share > 0.0 && record.traffic_share <= 1.0)
    {
        return Some(format!(
            "a canary's traffic share {} is not in (0, 1]",
            record.traffic_share
        ));
    }
    let latest = now_ms.saturating_add(MAX_CLOCK_SKEW_MS);
    if !(0..=latest).contains(&record.published_at) {
        return Some(format!(
            "published_at {} is not between 1970 and a day from now ({now_ms})",
            record.published_at
        ));
    }
    None
}

/// The follower's counters.
#[derive(Clone)]
pub struct FollowerMetrics {
    /// Versions thinned ([`Registry::thinned`]).
    pub thinned: prometheus::IntCounter,
    /// Records refused ([`refusal`], a signature the follower's [`Trust`] does not
    /// accept, or a record that does not decode).
    pub refused: prometheus::IntCounter,
}

/// Follows the models topic from its beginning, applying every record `trust` accepts to
/// `registry` and calling `on_change` when a production version or a canary changes. `ready` fires
/// once the topic has been read to its end at start-up, so callers can wait for the
/// registry to be whole;
/// each request on `sync` is answered once the follower has read past where the topic
/// ended when it came ([`RegistrySync`]).
#[allow(clippy::too_many_arguments)]
pub async fn follow(
    kafka: KafkaArgs,
    topic: String,
    registry: SharedRegistry,
    codec: Codec,
    trust: Trust,
    on_change: impl Fn(&ServingChange, &Registry) + Send + 'static,
    metrics: Option<FollowerMetrics>,
    ready: CancellationToken,
    mut sync: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    shutdown: CancellationToken,
) -> Result<()> {
    if trust.checks() {
        info!(keys = ?trust.ids(), "model records are applied only when signed by a trusted key");
    } else {
        warn!(
            "no trusted keys (--trusted-keys): model records are applied without checking who signed them"
        );
    }
    // A broker that cannot be reached yet (down, restarting, not started) is waited for:
    // a follower that gave up here would leave its service not ready for good.
    let mut backoff = Duration::from_millis(500);
    let (consumer, partitions) = loop {
        match assign_from_start(&kafka, &topic) {
            Ok(assigned) => break assigned,
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot read the model registry yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    let mut at_end = std::collections::HashSet::new();
    let mut syncs = Syncs::default();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        syncs.answer(&consumer);
        let m = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = consumer.recv() => m,
            Some(done) = sync.recv() => {
                syncs.add(&kafka, &topic, partitions, done);
                continue;
            }
            // Idle at the end, nothing arrives: look again at where the consumer is.
            _ = tick.tick(), if !syncs.waiting.is_empty() => continue,
        };
        match m {
            Ok(m) => {
                let Some(payload) = m.payload() else { continue };
                let record = match judge(&m, payload, &trust, &codec, crate::now_ms()) {
                    Verdict::Apply(record) => *record,
                    Verdict::Refuse(why) => {
                        let key = String::from_utf8_lossy(m.key().unwrap_or_default());
                        warn!(%key, offset = m.offset(), %why, "model record refused; the registry keeps what it had");
                        if let Some(c) = &metrics {
                            c.refused.inc();
                        }
                        continue;
                    }
                    Verdict::Undecodable(e) => {
                        warn!(offset = m.offset(), error = %e, "undecodable model record skipped");
                        if let Some(c) = &metrics {
                            c.refused.inc();
                        }
                        continue;
                    }
                };
                let (model, version, status) =
                    (record.model.clone(), record.version, record.status);
                let mut reg = registry.write().unwrap_or_else(|e| e.into_inner());
                let before = reg.thinned();
                let changed = reg.apply(record);
                if let Some(c) = &metrics {
                    c.thinned.inc_by(reg.thinned() - before);
                }
                if let Some(change) = changed {
                    info!(%model, from = ?change.from, to = ?change.to, canary = ?change.canary, shadow = ?change.shadow, "serving versions changed");
                    on_change(&change, &reg);
                } else {
                    info!(%model, version, %status, "model version recorded");
                }
            }
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
                if at_end.len() >= partitions && !ready.is_cancelled() {
                    info!("model registry loaded");
                    ready.cancel();
                }
            }
            Err(e) => warn!(error = %e, "registry consume error"),
        }
    }
}

/// What a follower does with one record of the models topic.
enum Verdict {
    // Boxed: a model record is large beside the refusal reasons.
    Apply(Box<ModelPublished>),
    /// Not signed by a trusted key, or impossible ([`refusal`]): counted, never applied.
    Refuse(String),
    Undecodable(String),
}

/// The signature first (it covers the exact bytes), then the content.
fn judge(m: &impl Message, payload: &[u8], trust: &Trust, codec: &Codec, now: i64) -> Verdict {
    if let Err(why) = trust.check_message(m, payload) {
        return Verdict::Refuse(format!("its signature is not trusted: {why}"));
    }
    match codec.decode::<ModelPublished>(payload) {
        Ok(record) => match refusal(&record, now) {
            Some(why) => Verdict::Refuse(why),
            None => Verdict::Apply(Box::new(record)),
        },
        Err(e) => Verdict::Undecodable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftline_schemas::events::TrainingWindow;

    fn record(version: i64, status: ModelStatus, published_at: i64) -> ModelPublished {
        ModelPublished {
            model: "m".into(),
            version,
            algorithm: "linear".into(),
            hyper_parameters: Default::default(),
            metrics: Default::default(),
            incumbent_metrics: Default::default(),
            parent_version: None,
            trigger: format!("t{version}"),
            training_window: TrainingWindow::default(),
            reference_profile: vec![],
            model_format: "x".into(),
            model_bytes: vec![],
            status,
            published_at,
            traffic_share: 0.0,
            error_sub_windows: Vec::new(),
            feature_importance: Default::default(),
            multivariate: None,
            performance_estimator: None,
            error_estimator: None,
            effective_from: None,
        }
    }

    fn whole(version: i64, status: ModelStatus, published_at: i64) -> ModelPublished {
        ModelPublished {
            model_bytes: vec![1; 100],
            ..record(version, status, published_at)
        }
    }

    #[test]
    fn a_record_from_far_in_the_future_or_without_a_version_is_refused() {
        let now = 1_800_000_000_000;
        let at = |published_at| ModelPublished {
            published_at,
            ..record(3, ModelStatus::Production, 0)
        };
        assert_eq!(refusal(&at(now), now), None);
        assert_eq!(
            refusal(&at(now + MAX_CLOCK_SKEW_MS), now),
            None,
            "a day of skew"
        );
        assert!(refusal(&at(now + MAX_CLOCK_SKEW_MS + 1), now).is_some());
        assert!(
            refusal(&at(i64::MAX), now)
                .unwrap()
                .contains("published_at")
        );
        assert!(refusal(&at(-1), now).is_some());
        let none = ModelPublished {
            version: 0,
            ..at(now)
        };
        assert!(refusal(&none, now).unwrap().contains("version 0"));
    }

    #[test]
    fn only_production_and_the_newest_versions_keep_their_bytes() {
        let mut r = Registry::keeping(3);
        r.apply(whole(1, ModelStatus::Production, 1));
        for v in 2..=10 {
            r.apply(whole(v, ModelStatus::Rejected, v));
        }
        let whole_ones: Vec<i64> = r
            .versions("m")
            .filter(|m| !m.model_bytes.is_empty())
            .map(|m| m.version)
            .collect();
        assert_eq!(whole_ones, [1, 8, 9, 10]);
        assert_eq!(r.thinned(), 6);
        assert!(r.is_whole("m", 1) && !r.is_whole("m", 2) && !r.is_whole("m", 99));
        // The thin ones keep what list, show and triggers need.
        assert_eq!(r.version("m", 2).map(|m| m.trigger.as_str()), Some("t2"));
        assert_eq!(r.latest_version("m"), 10);

        // Once a newer version takes over, the old production is thinned in turn; a whole
        // record of a thin version (a rollback re-publishes one) makes it whole again.
        r.apply(whole(11, ModelStatus::Production, 11));
        assert!(!r.is_whole("m", 1));
        r.apply(whole(1, ModelStatus::Production, 12));
        assert!(r.is_whole("m", 1));
        assert_eq!(r.production("m").map(|m| m.version), Some(1));
    }

    #[test]
    fn a_request_meets_the_production_version_in_effect_at_its_event_time() {
        let from = |version: i64, at: i64, from: Option<i64>| ModelPublished {
            effective_from: from,
            ..whole(version, ModelStatus::Production, at)
        };
        let mut r = Registry::default();
        r.apply(from(1, 1, None));
        r.apply(from(2, 2, Some(100)));
        // v3 takes effect before v2 ever would: v2 can answer nothing, so it is not kept.
        r.apply(from(3, 3, Some(300)));
        r.apply(from(4, 4, Some(250)));
        r.apply(whole(5, ModelStatus::Rejected, 5));
        let history = r.production_history("m", 8);
        let versions: Vec<i64> = history.iter().map(|m| m.version).collect();
        assert_eq!(versions, [4, 2, 1]);
        let at = |t| answering(&history, |m| m.effective_from, t).map(|m| m.version);
        assert_eq!(
            [at(i64::MIN), at(99), at(100), at(249), at(250), at(10_000)],
            [Some(1), Some(1), Some(2), Some(2), Some(4), Some(4)]
        );
        assert_eq!(r.production_history("m", 2).len(), 2, "at most depth");
        assert!(r.production_history("other", 8).is_empty());

        // A version in effect from arrival (a rollback, a promotion) ends the history.
        r.apply(from(2, 6, None));
        let versions: Vec<i64> = r
            .production_history("m", 8)
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(versions, [2]);
    }

    #[test]
    fn a_canary_serves_beside_production_until_a_later_production_record() {
        let canary = |version: i64, share: f64, at: i64| ModelPublished {
            traffic_share: share,
            ..record(version, ModelStatus::Canary, at)
        };
        let mut r = Registry::default();
        assert!(
            r.apply(canary(2, 0.2, 5)).is_none(),
            "no production to share with"
        );
        assert!(r.canary("m").is_none());
        r.apply(record(1, ModelStatus::Production, 10));
        assert!(
            r.canary("m").is_none(),
            "a canary from before production is over"
        );
        let change = r.apply(canary(2, 0.2, 20)).unwrap();
        assert_eq!(
            (change.from, change.to, change.canary),
            (Some(1), Some(1), Some((2, 0.2)))
        );
        // A new share is a change too; a rejection ends it.
        assert_eq!(r.apply(canary(2, 0.5, 21)).unwrap().canary, Some((2, 0.5)));
        assert_eq!(
            r.apply(record(2, ModelStatus::Rejected, 22))
                .unwrap()
                .canary,
            None
        );
        // Promoting the canary (or anything else) ends it.
        r.apply(canary(3, 0.1, 30));
        let change = r.apply(record(3, ModelStatus::Production, 31)).unwrap();
        assert_eq!((change.to, change.canary), (Some(3), None));
        // A share outside (0, 1] is refused before it gets here.
        assert!(refusal(&canary(4, 0.0, 40), 50).unwrap().contains("share"));
        assert!(refusal(&canary(4, 1.5, 40), 50).is_some());
        assert!(refusal(&canary(4, f64::NAN, 40), 50).is_some());
        assert!(refusal(&canary(4, 1.0, 40), 50).is_none());
    }

    #[test]
    fn a_shadow_runs_beside_production_and_a_canary_until_a_later_production_record() {
        let mut r = Registry::default();
        r.apply(record(1, ModelStatus::Production, 10));
        let change = r.apply(record(2, ModelStatus::Shadow, 20)).unwrap();
        assert_eq!(
            (change.to, change.canary, change.shadow),
            (Some(1), None, Some(2))
        );
        // A canary of another version does not end the shadow.
        let canary = ModelPublished {
            traffic_share: 0.2,
            ..record(3, ModelStatus::Canary, 21)
        };
        let change = r.apply(canary).unwrap();
        assert_eq!((change.canary, change.shadow), (Some((3, 0.2)), Some(2)));
        // Rejecting it ends it; a new shadow replaces an old one.
        assert_eq!(
            r.apply(record(2, ModelStatus::Rejected, 22))
                .unwrap()
                .shadow,
            None
        );
        r.apply(record(4, ModelStatus::Shadow, 23));
        assert_eq!(r.shadow("m").map(|m| m.version), Some(4));
        // Promoting it (or anything else) ends it.
        let change = r.apply(record(4, ModelStatus::Production, 30)).unwrap();
        assert_eq!((change.to, change.shadow), (Some(4), None));
    }

    #[test]
    fn a_rejected_candidate_leaves_production_alone() {
        let mut r = Registry::default();
        assert_eq!(
            r.apply(record(1, ModelStatus::Production, 10))
                .and_then(|c| c.to),
            Some(1)
        );
        assert_eq!(r.apply(record(2, ModelStatus::Rejected, 20)), None);
        assert_eq!(r.production("m").map(|m| m.version), Some(1));
        assert_eq!(r.latest_version("m"), 2);
    }

    #[test]
    fn promotion_and_rollback_follow_the_latest_records() {
        let mut r = Registry::default();
        r.apply(record(1, ModelStatus::Production, 10));
        r.apply(record(2, ModelStatus::Production, 20));
        assert_eq!(r.production("m").map(|m| m.version), Some(2));
        // Rollback: v2 marked rolled back, v1 re-published as production.
        r.apply(record(2, ModelStatus::RolledBack, 30));
        let change = r.apply(record(1, ModelStatus::Production, 31));
        assert_eq!(r.production("m").map(|m| m.version), Some(1));
        assert!(
            change.is_none(),
            "v1 already took over when v2 was rolled back"
        );
        assert_eq!(r.by_trigger("m", "t2").map(|m| m.version), Some(2));
    }
}
