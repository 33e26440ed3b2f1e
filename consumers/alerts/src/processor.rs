//! The Kafka path: reports from `driftline.drift` in, alerts out to the webhooks.
//!
//! State (the runtime's store, changelogged with the drift topic's partitions, which are
//! keyed by model): `l<model>` holds the symbol of the model's last level. It moves with
//! every report, delivered or not: an alert that no target took goes to the dead-letter
//! topic with its report and each target's reason, and is not sent again at the next
//! report (a replay of the dead letters re-sends it).
//!
//! Delivery is at least once: the post happens before the offset commits, so a crash in
//! between posts the alert again on restart, with the same `Idempotency-Key`.

use driftline_runtime::{Output, Processor, Record, Rejection, Txn};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{DriftDecision, DriftReport};
use tracing::info;

use crate::alert::{self, Alert};
use crate::metrics::AlertsMetrics;
use crate::webhook::{Poster, Target};

pub struct AlertsProcessor {
    codec: Codec,
    poster: Poster,
    targets: Vec<Target>,
    min: DriftDecision,
    metrics: AlertsMetrics,
}

fn level_key(model: &str) -> Vec<u8> {
    let mut k = vec![b'l'];
    k.extend_from_slice(model.as_bytes());
    k
}

impl AlertsProcessor {
    pub fn new(
        codec: Codec,
        poster: Poster,
        targets: Vec<Target>,
        min: DriftDecision,
        metrics: AlertsMetrics,
    ) -> Self {
        Self {
            codec,
            poster,
            targets,
            min,
            metrics,
        }
    }
}

impl Processor for AlertsProcessor {
    fn process(
        &mut self,
        record: &Record<'_>,
        txn: &mut Txn<'_>,
    ) -> Result<Vec<Output>, Rejection> {
        let report: DriftReport = self
            .codec
            .decode(record.payload.unwrap_or_default())
            .map_err(Rejection::decode)?;
        let key = level_key(&report.model);
        let previous = txn
            .get(&key)
            .map_err(|e| Rejection {
                kind: "state",
                error: e.to_string(),
            })?
            .and_then(|b| {
                std::str::from_utf8(&b)
                    .ok()
                    .and_then(DriftDecision::from_symbol)
            });
        let now = alert::level(&report, self.min);
        let Some(change) = alert::change(previous, now) else {
            return Ok(vec![]);
        };
        txn.put(key, now.symbol());
        let alert = Alert {
            change,
            previous: previous.unwrap_or(DriftDecision::NoDrift),
            report: &report,
        };
        info!(model = %report.model, version = report.model_version, ?change, from = %alert.previous, to = %now, "alert");
        let mut failed = Vec::new();
        for target in &self.targets {
            let format = target.format.name();
            let posted = self.poster.post(target, &alert);
            let attempts = match &posted {
                Ok(attempts) => *attempts,
                Err(f) => f.attempts,
            };
            self.metrics
                .attempts
                .with_label_values(&[format])
                .inc_by(u64::from(attempts));
            match posted {
                Ok(_) => self.metrics.delivered.with_label_values(&[format]).inc(),
                Err(f) => {
                    self.metrics.failed.with_label_values(&[format]).inc();
                    failed.push(format!("{target}: {f}"));
                }
            }
        }
        if failed.is_empty() {
            Ok(vec![])
        } else {
            Err(Rejection {
                kind: "webhook",
                error: format!(
                    "alert {} ({change:?}) not delivered to {}",
                    alert.id(),
                    failed.join("; ")
                ),
            })
        }
    }
}
