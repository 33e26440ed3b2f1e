//! The models being served, swapped atomically when the registry promotes a version or
//! starts, changes or ends a canary.
//!
//! A canary answers a share of the requests: those whose request id hashes below the
//! share ([`canary_bucket`]), so a request id always meets the same version, whichever
//! predictor instance serves it and however often it is sent. A shadow predicts every
//! request beside the version that answers; its prediction is logged in the served
//! prediction's `shadow` field and never returned.
//!
//! A production version that takes effect from an event time (`effective_from`, set by a
//! trainer with a swap lag) answers requests from then on; the production version before
//! it stays loaded for earlier requests. So the version that answers a request follows
//! from the log, not from when the record arrived, on every instance and after a restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use driftline_model::TrainedModel;
use driftline_onnx::OnnxModel;
use driftline_runtime::registry::{Registry, answering};
use driftline_schemas::events::{Features, ModelPublished, Prediction, ShadowPrediction};
use driftline_schemas::spec::FeatureSpec;

use crate::{Error, Result};

/// What computes a version's predictions: a model driftline's trainer fitted, or an
/// imported ONNX graph (`model_format` `onnx`).
pub enum Runner {
    Native(TrainedModel),
    Onnx(OnnxModel),
}

/// One loaded model version.
pub struct Served {
    pub model: String,
    pub version: i64,
    pub algorithm: String,
    pub spec: Arc<FeatureSpec>,
    pub runner: Runner,
}

impl Served {
    pub fn load(record: &ModelPublished, spec: Arc<FeatureSpec>) -> Result<Self> {
        let error = |error: String| Error::Load {
            model: record.model.clone(),
            version: record.version,
            error,
        };
        let runner = if record.model_format == driftline_onnx::FORMAT {
            Runner::Onnx(
                OnnxModel::load(&record.model_bytes, &spec).map_err(|e| error(e.to_string()))?,
            )
        } else {
            Runner::Native(
                TrainedModel::from_bytes(&record.model_bytes).map_err(|e| error(e.to_string()))?,
            )
        };
        Ok(Self {
            model: record.model.clone(),
            version: record.version,
            algorithm: record.algorithm.clone(),
            spec,
            runner,
        })
    }

    /// One prediction per row; an imported graph can fail to run (the reason).
    pub fn predict_batch(&self, rows: &[&Features]) -> Result<Vec<Prediction>, String> {
        match &self.runner {
            Runner::Native(m) => Ok(m.predict_batch(rows)),
            Runner::Onnx(m) => m.predict_batch(rows).map_err(|e| e.to_string()),
        }
    }

    pub fn predict(&self, features: &Features) -> Result<Prediction, String> {
        match &self.runner {
            Runner::Native(m) => Ok(m.predict(features)),
            Runner::Onnx(m) => m
                .predict_batch(&[features])
                .map_err(|e| e.to_string())?
                .pop()
                .ok_or_else(|| "no prediction".to_string()),
        }
    }
}

pub use driftline_runtime::registry::PRODUCTION_HISTORY;

/// What serves one model: production (newest first, each with the event time it answers
/// from), and perhaps a canary with its share and a shadow.
#[derive(Clone)]
struct Slot {
    production: Vec<(Option<i64>, Arc<Served>)>,
    canary: Option<(Arc<Served>, f64)>,
    shadow: Option<Arc<Served>>,
}

impl Slot {
    /// The loaded versions: production's, the canary, the shadow.
    fn versions(&self) -> impl Iterator<Item = &Arc<Served>> {
        self.production
            .iter()
            .map(|p| &p.1)
            .chain(self.canary.iter().map(|c| &c.0))
            .chain(self.shadow.iter())
    }

    fn newest(&self) -> &Arc<Served> {
        &self.production[0].1
    }
}

/// What a sync left serving.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Serving {
    /// The newest production version.
    pub production: i64,
    /// The event time it answers from (`None`: every request).
    pub effective_from: Option<i64>,
    /// It arrived after requests from its `effective_from` on had been answered by the
    /// version before it: it answers from now instead, and those stay as they were.
    pub late: bool,
    /// Production versions loaded for older requests besides the newest.
    pub earlier: usize,
    pub canary: Option<(i64, f64)>,
    pub shadow: Option<i64>,
}

/// Who answers a request: the version whose prediction is returned, and the shadow that
/// predicts it too (unless it is the same version).
pub struct Pick {
    pub served: Arc<Served>,
    pub shadow: Option<Arc<Served>>,
}

impl Pick {
    /// The shadow's predictions of `rows`, to log beside the served ones; `None` when
    /// there is no shadow or it failed (the reason).
    pub fn shadow_batch(
        &self,
        rows: &[&Features],
    ) -> Result<Option<Vec<ShadowPrediction>>, String> {
        let Some(shadow) = &self.shadow else {
            return Ok(None);
        };
        let predictions = shadow.predict_batch(rows)?;
        Ok(Some(
            predictions
                .into_iter()
                .map(|prediction| ShadowPrediction {
                    model_version: shadow.version,
                    prediction,
                })
                .collect(),
        ))
    }
}

/// Where a request id falls in [0, 1): FNV-1a over its bytes, then SplitMix64's
/// finaliser to spread nearby ids, top 53 bits as a fraction. Fixed here, never seeded,
/// so every instance and every restart routes an id the same way.
pub fn canary_bucket(request_id: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in request_id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Model name → what serves it. Readers clone the `Arc`s and let go of the lock at once,
/// so a swap never waits for predictions and never tears one.
#[derive(Default)]
pub struct ModelSlots {
    specs: HashMap<String, Arc<FeatureSpec>>,
    slots: RwLock<HashMap<String, Slot>>,
    /// Per model, the newest event time a request has been answered for.
    answered_to: HashMap<String, AtomicI64>,
}

impl ModelSlots {
    /// Serves the models these specs describe (by `model.name`).
    pub fn new(specs: impl IntoIterator<Item = FeatureSpec>) -> Self {
        let specs: HashMap<String, Arc<FeatureSpec>> = specs
            .into_iter()
            .map(|s| (s.model.name.clone(), Arc::new(s)))
            .collect();
        let answered_to = specs
            .keys()
            .map(|m| (m.clone(), AtomicI64::new(i64::MIN)))
            .collect();
        Self {
            specs,
            slots: RwLock::new(HashMap::new()),
            answered_to,
        }
    }

    pub fn spec(&self, model: &str) -> Option<&Arc<FeatureSpec>> {
        self.specs.get(model)
    }

    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.specs.keys().map(String::as_str)
    }

    /// The single model, when exactly one is configured (so `/predict` may omit it).
    pub fn only_model(&self) -> Option<&str> {
        (self.specs.len() == 1)
            .then(|| self.specs.keys().next().map(String::as_str))
            .flatten()
    }

    /// The newest production version of `model`.
    pub fn get(&self, model: &str) -> Option<Arc<Served>> {
        self.slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(model)
            .map(|s| s.newest().clone())
    }

    /// Version `version` of `model`, if it is loaded (a production version, the canary or
    /// the shadow).
    pub fn loaded(&self, model: &str, version: i64) -> Option<Arc<Served>> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots
            .get(model)?
            .versions()
            .find(|s| s.version == version)
            .cloned()
    }

    /// The version that answers `request_id` with event time `event_time` (the canary
    /// for ids below its share, else the production version in effect then) and the
    /// shadow.
    pub fn for_request(&self, model: &str, request_id: &str, event_time: i64) -> Option<Pick> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        let slot = slots.get(model)?;
        let served = match &slot.canary {
            Some((canary, share)) if canary_bucket(request_id) < *share => canary.clone(),
            _ => answering(&slot.production, |p| p.0, event_time)?.1.clone(),
        };
        if let Some(to) = self.answered_to.get(model) {
            to.fetch_max(event_time, Ordering::Relaxed);
        }
        let shadow = slot.shadow.clone().filter(|s| s.version != served.version);
        Some(Pick { served, shadow })
    }

    /// Ready when every configured model has a version loaded.
    pub fn ready(&self) -> bool {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        !self.specs.is_empty() && self.specs.keys().all(|m| slots.contains_key(m))
    }

    /// Loads the registry's production version, canary and shadow of `model` (if it is
    /// one we serve; versions already loaded are kept) and swaps them in. Returns what
    /// now serves. A canary or shadow that cannot be loaded is an error and production
    /// keeps serving without it.
    pub fn sync(&self, model: &str, registry: &Registry) -> Result<Option<Serving>> {
        let Some(spec) = self.specs.get(model) else {
            return Ok(None);
        };
        let history = registry.production_history(model, PRODUCTION_HISTORY);
        let Some(record) = history.first().copied() else {
            return Ok(None);
        };
        // What is loaded already is reused (a promoted canary is not decoded again).
        let have: Vec<Arc<Served>> = self
            .slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(model)
            .map(|s| s.versions().cloned().collect())
            .unwrap_or_default();
        // Load outside the lock: decoding a model must not stall predictions.
        let load = |record: &ModelPublished| -> Result<Arc<Served>> {
            match have.iter().find(|s| s.version == record.version) {
                Some(s) => Ok(s.clone()),
                None => Ok(Arc::new(Served::load(record, spec.clone())?)),
            }
        };
        let newest = load(record)?;
        let mut production = vec![(record.effective_from, newest.clone())];
        let mut failed = None;
        for earlier in &history[1..] {
            match load(earlier) {
                Ok(s) => production.push((earlier.effective_from, s)),
                Err(e) => {
                    // Older requests meet the oldest that loaded.
                    failed = Some(e);
                    break;
                }
            }
        }
        let canary = registry.canary(model).and_then(|c| match load(c) {
            Ok(s) => Some((s, c.traffic_share)),
            Err(e) => {
                failed = Some(e);
                None
            }
        });
        let shadow = registry.shadow(model).and_then(|c| match load(c) {
            Ok(s) => Some(s),
            Err(e) => {
                failed = Some(e);
                None
            }
        });
        // `versions()` yields the newest production version first.
        let before = have.first().map(|s| s.version);
        let answered_to = self
            .answered_to
            .get(model)
            .map_or(i64::MIN, |t| t.load(Ordering::Relaxed));
        let serving = Serving {
            production: newest.version,
            effective_from: record.effective_from,
            late: before != Some(newest.version)
                && record
                    .effective_from
                    .is_some_and(|from| from <= answered_to),
            earlier: production.len() - 1,
            canary: canary.as_ref().map(|(s, share)| (s.version, *share)),
            shadow: shadow.as_ref().map(|s| s.version),
        };
        self.slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                model.to_string(),
                Slot {
                    production,
                    canary,
                    shadow,
                },
            );
        match failed {
            Some(e) => Err(e),
            None => Ok(Some(serving)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids as send_data and upstream apps make them (sequential, or prefixed): the share
    /// that falls below a cut is the cut, in every run of 1,000 ids as over all.
    #[test]
    fn request_ids_spread_evenly_and_always_fall_in_the_same_place() {
        for prefix in ["r-", "http:", "flights-2013-01-01-"] {
            let buckets: Vec<f64> = (0..100_000)
                .map(|i| canary_bucket(&format!("{prefix}{i}")))
                .collect();
            assert!(buckets.iter().all(|b| (0.0..1.0).contains(b)));
            for cut in [0.05, 0.2, 0.5] {
                let share = buckets.iter().filter(|b| **b < cut).count() as f64 / 1e5;
                assert!((share - cut).abs() < 0.005, "{prefix} {cut}: {share}");
                for block in buckets.chunks(1_000) {
                    let share = block.iter().filter(|b| **b < cut).count() as f64 / 1e3;
                    assert!(
                        (share - cut).abs() < 0.06,
                        "{prefix} {cut}: a block at {share}"
                    );
                }
            }
        }
        assert_eq!(canary_bucket("r-42"), canary_bucket("r-42"));
        assert_ne!(canary_bucket("r-42"), canary_bucket("r-43"));
    }
}
