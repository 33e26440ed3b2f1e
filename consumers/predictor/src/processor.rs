//! The Kafka path: requests in, predictions out.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::IntCounter;

use driftline_runtime::{Output, Processor, Record, Rejection, Txn, now_ms};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{PredictionLogged, PredictionRequest, PredictionSource};

use crate::metrics::PredictorMetrics;
use crate::slots::ModelSlots;

pub struct PredictProcessor {
    slots: Arc<ModelSlots>,
    codec: Codec,
    predictions_topic: String,
    metrics: PredictorMetrics,
    /// Each model's `predictions_total{source="kafka"}`, looked up once rather than per
    /// message.
    counters: HashMap<String, IntCounter>,
}

impl PredictProcessor {
    pub fn new(
        slots: Arc<ModelSlots>,
        codec: Codec,
        predictions_topic: String,
        metrics: PredictorMetrics,
    ) -> Self {
        Self {
            slots,
            codec,
            predictions_topic,
            metrics,
            counters: HashMap::new(),
        }
    }

    fn counted(&mut self, model: &str) {
        match self.counters.get(model) {
            Some(c) => c.inc(),
            None => {
                let c = self
                    .metrics
                    .predictions
                    .with_label_values(&[model, "kafka"]);
                c.inc();
                self.counters.insert(model.to_string(), c);
            }
        }
    }
}

impl Processor for PredictProcessor {
    fn process(
        &mut self,
        record: &Record<'_>,
        _txn: &mut Txn<'_>,
    ) -> Result<Vec<Output>, Rejection> {
        let started = std::time::Instant::now();
        let request: PredictionRequest = self
            .codec
            .decode(record.payload.unwrap_or_default())
            .map_err(Rejection::decode)?;
        let Some(pick) =
            self.slots
                .for_request(&request.model, &request.request_id, request.event_time)
        else {
            return Err(Rejection::validation(format!(
                "unknown model {:?} (or none in production)",
                request.model
            )));
        };
        let served = &pick.served;
        if let Err(problems) = served.spec.validate(&request.features) {
            let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(Rejection::validation(text.join("; ")));
        }
        let prediction = served
            .predict(&request.features)
            .map_err(|error| Rejection {
                kind: "model",
                error: format!(
                    "{} v{} could not predict: {error}",
                    served.model, served.version
                ),
            })?;
        self.counted(&request.model);
        let latency_us = started.elapsed().as_micros() as i64;
        let shadow = match pick.shadow_batch(&[&request.features]) {
            Ok(s) => s.and_then(|mut s| s.pop()),
            Err(error) => {
                let v = pick.shadow.as_ref().map_or(0, |s| s.version);
                self.metrics.shadowed(&request.model, v, 1, Some(&error));
                None
            }
        };
        if let Some(s) = &shadow {
            self.metrics
                .shadowed(&request.model, s.model_version, 1, None);
        }
        let logged = PredictionLogged {
            request_id: request.request_id,
            model: request.model,
            model_version: served.version,
            event_time: request.event_time,
            features: request.features,
            prediction,
            served_at: now_ms(),
            latency_us,
            source: PredictionSource::Kafka,
            shadow,
        };
        Output::event(&self.codec, &self.predictions_topic, &logged)
            .map(|o| vec![o])
            .map_err(|e| Rejection {
                kind: "encode",
                error: e.to_string(),
            })
    }
}
