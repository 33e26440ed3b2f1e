//! The live summary `driftline up` prints: what the loop is doing, read off the topics
//! like any other subscriber would.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driftline_kafka::KafkaArgs;
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{
    DriftDecision, DriftReport, Labelled, ModelPublished, PredictionLogged, RetrainRequested,
};
use driftline_schemas::spec::format_time;
use driftline_schemas::topics;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// What has been seen since `up` started.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub predictions: u64,
    pub last_event_time: Option<i64>,
    pub serving_version: Option<i64>,
    pub latest_report: Option<DriftReport>,
    pub reports: u64,
    pub drift_decisions: u64,
    pub retrains: Vec<RetrainRequested>,
    /// version -> latest record
    pub models: BTreeMap<i64, ModelPublished>,
    /// The monitor's minimum sample: below it a report cannot say DRIFT, and the summary
    /// says it is warming up rather than NO_DRIFT beside a high drifted share.
    pub min_samples: u64,
}

impl Seen {
    pub fn line(&self, rate: f64) -> String {
        let when = self
            .last_event_time
            .map(format_time)
            .unwrap_or_else(|| "-".into());
        let mut s = format!(
            "{} | {} predictions ({rate:.0}/s) | serving v{}",
            &when[..10.min(when.len())],
            self.predictions,
            self.serving_version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into())
        );
        if let Some(r) = &self.latest_report {
            // The drifted features with the largest PSI, each with the signal that fired.
            let mut top: Vec<_> = r.features.iter().filter(|f| f.drifted).collect();
            top.sort_by(|a, b| b.psi.unwrap_or(0.0).total_cmp(&a.psi.unwrap_or(0.0)));
            let names: Vec<String> = top
                .iter()
                .take(3)
                .map(|f| match f.deciding_signal() {
                    Some(s) => format!("{} {s}", f.name),
                    None => format!("{} psi {:.2}", f.name, f.psi.unwrap_or(f64::NAN)),
                })
                .collect();
            let decision = if (r.window.count as u64) < self.min_samples {
                format!(
                    "warming up ({}/{} events)",
                    r.window.count, self.min_samples
                )
            } else {
                r.decision.to_string()
            };
            s.push_str(&format!(
                " | drift {} share {:.2}{}",
                decision,
                r.share_drifted,
                if names.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", names.join(", "))
                }
            ));
        }
        s.push_str(&format!(" | retrains {}", self.retrains.len()));
        s
    }

    /// The model timeline: one line per version.
    pub fn timeline(&self) -> Vec<String> {
        // A superseded version keeps its last record (production); the serving one is the
        // most recently published production record.
        let serving = self
            .models
            .values()
            .filter(|m| m.status == driftline_schemas::events::ModelStatus::Production)
            .max_by_key(|m| (m.published_at, m.version))
            .map(|m| m.version);
        self.models
            .values()
            .map(|m| {
                let status = match m.status {
                    driftline_schemas::events::ModelStatus::Production
                        if Some(m.version) == serving =>
                    {
                        "PRODUCTION (serving)".to_string()
                    }
                    driftline_schemas::events::ModelStatus::Production => {
                        "promoted, since superseded".to_string()
                    }
                    other => other.to_string(),
                };
                let metrics: Vec<String> = m
                    .metrics
                    .iter()
                    .filter(|(k, _)| *k == "mae" || *k == "rmse" || *k == "accuracy")
                    .map(|(k, v)| format!("{k} {v:.3}"))
                    .collect();
                let incumbent: Vec<String> = m
                    .incumbent_metrics
                    .iter()
                    .filter(|(k, _)| *k == "mae" || *k == "rmse" || *k == "accuracy")
                    .map(|(k, v)| format!("{k} {v:.3}"))
                    .collect();
                format!(
                    "v{} {} ({}, trigger {}): holdout {}{}",
                    m.version,
                    status,
                    m.algorithm,
                    m.trigger,
                    metrics.join(", "),
                    if incumbent.is_empty() {
                        String::new()
                    } else {
                        format!(" vs incumbent {}", incumbent.join(", "))
                    }
                )
            })
            .collect()
    }
}

/// Follows predictions, labelled predictions (the joiner's), drift, retrain and models, updating `seen` (the summary
/// lines) and `history` (the dashboard).
pub async fn follow(
    kafka: KafkaArgs,
    trust: driftline_runtime::signing::Trust,
    seen: Arc<Mutex<Seen>>,
    history: Arc<Mutex<crate::dashboard::History>>,
    shutdown: CancellationToken,
) {
    let run = async {
        let consumer: StreamConsumer = kafka.consumer_config("driftline-up-watch").create()?;
        let mut tpl = TopicPartitionList::new();
        for topic in [
            topics::PREDICTIONS,
            topics::LABELLED,
            topics::DRIFT,
            topics::RETRAIN,
            topics::MODELS,
        ] {
            let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            let parts = md
                .topics()
                .first()
                .map(|t| t.partitions().len())
                .unwrap_or(1);
            for p in 0..parts {
                // The registry from its start; the rest from now on.
                let from = if topic == topics::MODELS {
                    Offset::Beginning
                } else {
                    Offset::End
                };
                tpl.add_partition_offset(topic, p as i32, from)?;
            }
        }
        consumer.assign(&tpl)?;
        let codec = Codec::single_object();
        loop {
            let m = tokio::select! {
                _ = shutdown.cancelled() => return Ok::<_, rdkafka::error::KafkaError>(()),
                m = consumer.recv() => m,
            };
            let Ok(m) = m else { continue };
            let Some(payload) = m.payload() else { continue };
            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
            let mut h = history.lock().unwrap_or_else(|e| e.into_inner());
            match m.topic() {
                topics::PREDICTIONS => {
                    if let Ok(p) = codec.decode::<PredictionLogged>(payload) {
                        s.predictions += 1;
                        s.last_event_time =
                            Some(s.last_event_time.unwrap_or(p.event_time).max(p.event_time));
                        s.serving_version = Some(p.model_version);
                        h.record_prediction(&p);
                    }
                }
                topics::LABELLED => {
                    if let Ok(l) = codec.decode::<Labelled>(payload) {
                        h.record_labelled(&l);
                    }
                }
                topics::DRIFT => {
                    if let Ok(r) = codec.decode::<DriftReport>(payload) {
                        h.record_report(&r);
                        s.reports += 1;
                        if r.decision == DriftDecision::Drift {
                            s.drift_decisions += 1;
                        }
                        s.latest_report = Some(r);
                    }
                }
                topics::RETRAIN => {
                    if let Ok(r) = codec.decode::<RetrainRequested>(payload)
                        && !s.retrains.iter().any(|x| x.retrain_id == r.retrain_id)
                    {
                        s.retrains.push(r);
                    }
                }
                // Only the versions the services would apply: not a forged one.
                _ => {
                    if trust.check_message(&m, payload).is_ok()
                        && let Ok(model) = codec.decode::<ModelPublished>(payload)
                    {
                        h.record_model(&model);
                        s.models.insert(model.version, model);
                    }
                }
            }
        }
    };
    if let Err(e) = run.await {
        tracing::warn!(error = %e, "live summary stopped");
    }
}

/// Prints a summary line every `every` until shutdown.
pub async fn print_every(seen: Arc<Mutex<Seen>>, every: Duration, shutdown: CancellationToken) {
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let s = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let rate = (s.predictions - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), s.predictions);
        eprintln!("[up] {}", s.line(rate));
    }
}

#[cfg(test)]
mod tests {
    use driftline_schemas::events::{FeatureDrift, Signal};

    use super::Seen;
    use crate::dashboard::sample;

    #[test]
    fn the_summary_names_the_drifted_features_with_the_signal_that_fired() {
        let mut report = sample::report(60, 1);
        let with = |name: &str, psi: f64, signals: Vec<Signal>| FeatureDrift {
            signals,
            ..sample::feature(name, psi, true)
        };
        report.features = vec![
            with(
                "dewp",
                3.0,
                vec![
                    Signal::fixed("out_of_range", 0.001, 0.002, false),
                    Signal::fixed("wasserstein_norm", 0.12, 0.1, true),
                ],
            ),
            // Both fired: the data quality check is the policy's first.
            with(
                "temp",
                0.5,
                vec![
                    Signal::fixed("out_of_range", 0.029, 0.002, true),
                    Signal::fixed("wasserstein_norm", 0.2, 0.1, true),
                ],
            ),
            with("humid", 0.4, vec![Signal::fixed("ks_p", 1e-6, 0.05, true)]),
            // A record from before reports had signals.
            with("pressure", 1.0, vec![]),
            sample::feature("visib", 9.0, false),
        ];
        let seen = Seen {
            latest_report: Some(report),
            min_samples: 1,
            ..Seen::default()
        };
        let line = seen.line(10.0);
        assert!(
            line.contains(
                "(dewp wasserstein_norm 0.120 >= 0.1, pressure psi 1.00, temp out_of_range 2.9% >= 0.2%)"
            ),
            "{line}"
        );
        assert!(!line.contains("humid") && !line.contains("visib"), "{line}");
    }
}
