//! How far each model's versions are decided, followed from the compacted
//! `driftline.progress` topic (written by the trainer with `--swap-lag`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use driftline_kafka::KafkaArgs;
use driftline_schemas::codec::Codec;
use driftline_schemas::events::ModelProgress;
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Result;
use crate::registry::assign_from_start;

/// Each model's furthest progress: the largest `decided_until` read, with the newest
/// version named so far.
pub type SharedProgress = Arc<RwLock<HashMap<String, ModelProgress>>>;

/// `seen` folded into `known`: progress only goes forward (a record from an owner that
/// has since been replaced says less, never something false).
pub fn advance(known: &mut HashMap<String, ModelProgress>, seen: ModelProgress) {
    match known.get_mut(&seen.model) {
        Some(k) => {
            k.decided_until = k.decided_until.max(seen.decided_until);
            k.version = k.version.max(seen.version);
        }
        None => {
            known.insert(seen.model.clone(), seen);
        }
    }
}

/// Reads `topic` from its start into `progress` until `shutdown`, waiting for a broker
/// that cannot be reached yet; `loaded` fires once it has been read to its end. An
/// undecodable record is skipped with a warning: every reader reads the whole compacted
/// topic at every start, so a dead letter would be written again by each.
pub async fn follow(
    kafka: KafkaArgs,
    topic: String,
    codec: Codec,
    progress: SharedProgress,
    loaded: CancellationToken,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut backoff = Duration::from_millis(500);
    let (consumer, partitions) = loop {
        match assign_from_start(&kafka, &topic) {
            Ok(assigned) => break assigned,
            Err(e) => {
                warn!(%topic, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot read the progress topic yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(15));
            }
        }
    };
    let mut at_end = std::collections::HashSet::new();
    loop {
        let m = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = consumer.recv() => m,
        };
        match m {
            Ok(m) => {
                let Some(payload) = m.payload() else { continue };
                match codec.decode::<ModelProgress>(payload) {
                    Ok(p) => {
                        debug!(model = %p.model, decided_until = p.decided_until, version = p.version, "progress");
                        advance(&mut progress.write().unwrap_or_else(|e| e.into_inner()), p);
                    }
                    Err(e) => {
                        warn!(%topic, offset = m.offset(), error = %e, "undecodable progress record skipped")
                    }
                }
            }
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
                if at_end.len() >= partitions && !loaded.is_cancelled() {
                    info!(%topic, models = progress.read().unwrap_or_else(|e| e.into_inner()).len(), "progress loaded");
                    loaded.cancel();
                }
            }
            Err(e) => warn!(%topic, error = %e, "progress consume error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(decided_until: i64, version: i64) -> ModelProgress {
        ModelProgress {
            model: "m".into(),
            decided_until,
            version,
            published_at: 0,
        }
    }

    #[test]
    fn progress_only_goes_forward() {
        let mut known = HashMap::new();
        advance(&mut known, p(100, 3));
        advance(&mut known, p(50, 2));
        assert_eq!((known["m"].decided_until, known["m"].version), (100, 3));
        advance(&mut known, p(200, 4));
        assert_eq!((known["m"].decided_until, known["m"].version), (200, 4));
    }
}
