//! Registry operations, pure over a [`Registry`] (the fold of the compacted models topic):
//! what to show, and which records to publish to promote or roll back. The CLI and the
//! HTTP API both publish what these return, so the registry stays derivable from the
//! topic alone.
//!
//! - promote v: publish v again with status production (and a new `published_at`): the
//!   registry's production is the latest-published production record.
//! - rollback: publish the current production version as rolled back, then the version
//!   that was production before it again as production.
//! - canary v share: publish v with status canary and its traffic share: predictors send
//!   it that share of the requests (by request id) until a later production record
//!   (promote v, or any other) or `reject v` ends it.
//! - shadow v: publish v with status shadow: predictors predict every request with it too
//!   and log its answer beside the served one, never returning it, until a later
//!   production record or `reject v` ends it.
//! - import: a model trained elsewhere (ONNX) as the next version, production, a canary
//!   or a shadow.

use std::collections::BTreeMap;

use driftline_runtime::registry::Registry;
use driftline_schemas::events::{FeatureProfile, ModelPublished, ModelStatus, TrainingWindow};
use serde_json::{Value, json};

pub use crate::train::Start;
use crate::{Error, Result};

/// A version without its bytes and profile samples: what list and show print.
pub fn version_view(m: &ModelPublished) -> Value {
    let w = &m.training_window;
    json!({
        "model": m.model,
        "version": m.version,
        "status": m.status.symbol().to_ascii_lowercase(),
        "traffic_share": (m.status == ModelStatus::Canary).then_some(m.traffic_share),
        "algorithm": m.algorithm,
        "hyper_parameters": m.hyper_parameters,
        "metrics": m.metrics,
        "incumbent_metrics": m.incumbent_metrics,
        "parent_version": m.parent_version,
        "trigger": m.trigger,
        "training_window": {
            "start_time": driftline_schemas::spec::format_time(w.start_time),
            "end_time": driftline_schemas::spec::format_time(w.end_time),
            "train_rows": w.train_rows,
            "holdout_rows": w.holdout_rows,
            "end_offsets": w.end_offsets,
        },
        "profiled_features": m.reference_profile.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        "model_format": m.model_format,
        "model_bytes": m.model_bytes.len(),
        "published_at": driftline_schemas::spec::format_time(m.published_at),
    })
}

/// Every model with its production version and version count.
pub fn list(reg: &Registry) -> Value {
    let models: Vec<Value> = reg
        .models()
        .map(|name| {
            json!({
                "model": name,
                "production": reg.production(name).map(|m| m.version),
                "canary": reg.canary(name).map(|m| m.version),
                "shadow": reg.shadow(name).map(|m| m.version),
                "latest": reg.latest_version(name),
                "versions": reg.versions(name).count(),
            })
        })
        .collect();
    json!({ "models": models })
}

/// One model: production and every version, oldest first.
pub fn show(reg: &Registry, model: &str) -> Result<Value> {
    if reg.latest_version(model) == 0 {
        return Err(Error::UnknownModel(model.to_string()));
    }
    Ok(json!({
        "model": model,
        "production": reg.production(model).map(|m| m.version),
        "canary": reg.canary(model).map(|m| m.version),
        "shadow": reg.shadow(model).map(|m| m.version),
        "versions": reg.versions(model).map(version_view).collect::<Vec<_>>(),
    }))
}

pub fn show_version(reg: &Registry, model: &str, version: i64) -> Result<Value> {
    lookup(reg, model, version).map(version_view)
}

fn lookup<'a>(reg: &'a Registry, model: &str, version: i64) -> Result<&'a ModelPublished> {
    if reg.latest_version(model) == 0 {
        return Err(Error::UnknownModel(model.to_string()));
    }
    reg.version(model, version)
        .ok_or_else(|| Error::UnknownVersion {
            model: model.to_string(),
            version,
        })
}

/// The record that makes `version` production.
pub fn promote(reg: &Registry, model: &str, version: i64, now: i64) -> Result<Vec<ModelPublished>> {
    let record = lookup(reg, model, version)?;
    if reg.production(model).is_some_and(|p| p.version == version) {
        return Err(Error::Conflict(format!(
            "{model} v{version} is already in production"
        )));
    }
    Ok(vec![restated(
        reg,
        record,
        ModelStatus::Production,
        0.0,
        now,
    )])
}

/// `record` again with a new status and share, published after every record of its model
/// so that it is the latest.
fn restated(
    reg: &Registry,
    record: &ModelPublished,
    status: ModelStatus,
    traffic_share: f64,
    now: i64,
) -> ModelPublished {
    ModelPublished {
        status,
        traffic_share,
        published_at: now.max(latest_published(reg, &record.model) + 1),
        // An operator's change takes effect now, whatever the training run asked for.
        effective_from: None,
        ..record.clone()
    }
}

/// The record that makes `version` a canary answering `share` of the requests.
pub fn canary(
    reg: &Registry,
    model: &str,
    version: i64,
    share: f64,
    now: i64,
) -> Result<Vec<ModelPublished>> {
    let record = lookup(reg, model, version)?;
    check_share(share)?;
    beside_production(reg, model, version, "a canary to share traffic with")?;
    Ok(vec![restated(reg, record, ModelStatus::Canary, share, now)])
}

/// The record that makes `version` a shadow of production.
pub fn shadow(reg: &Registry, model: &str, version: i64, now: i64) -> Result<Vec<ModelPublished>> {
    let record = lookup(reg, model, version)?;
    beside_production(reg, model, version, "a shadow to run beside")?;
    Ok(vec![restated(reg, record, ModelStatus::Shadow, 0.0, now)])
}

fn check_share(share: f64) -> Result<()> {
    if share > 0.0 && share <= 1.0 {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "a canary's share must be in (0, 1], not {share}"
        )))
    }
}

/// Refuses a canary or shadow (`what`) when there is no production, or it is production.
fn beside_production(reg: &Registry, model: &str, version: i64, what: &str) -> Result<()> {
    match reg.production(model) {
        None => Err(Error::Conflict(format!(
            "{model} has no version in production for {what}"
        ))),
        Some(p) if p.version == version => Err(Error::Conflict(format!(
            "{model} v{version} is in production"
        ))),
        Some(_) => Ok(()),
    }
}

/// The record that rejects `version` (ending its canary or shadow, if it is one).
pub fn reject(reg: &Registry, model: &str, version: i64, now: i64) -> Result<Vec<ModelPublished>> {
    let record = lookup(reg, model, version)?;
    if reg.production(model).is_some_and(|p| p.version == version) {
        return Err(Error::Conflict(format!(
            "{model} v{version} is in production: roll it back instead"
        )));
    }
    Ok(vec![restated(reg, record, ModelStatus::Rejected, 0.0, now)])
}

/// The `algorithm` of an imported model's spec and versions: the trainer never fits it.
pub const IMPORTED: &str = "onnx";

/// A model trained elsewhere, as ONNX bytes, scored and profiled on a data file.
#[derive(Debug, Clone)]
pub struct Import {
    pub model: String,
    pub bytes: Vec<u8>,
    /// Names the bytes (a digest): importing the same file again is a repeat, refused.
    pub digest: String,
    pub metrics: BTreeMap<String, f64>,
    pub reference_profile: Vec<FeatureProfile>,
    pub window: TrainingWindow,
    pub start: Start,
}

/// The record that publishes `import` as its model's next version (trigger
/// `import:<digest>`).
pub fn imported(reg: &Registry, import: Import, now: i64) -> Result<Vec<ModelPublished>> {
    let trigger = format!("import:{}", import.digest);
    if let Some(m) = reg.by_trigger(&import.model, &trigger) {
        return Err(Error::Conflict(format!(
            "{} v{} is already this file",
            import.model, m.version
        )));
    }
    let production = reg.production(&import.model).map(|m| m.version);
    let version = reg.latest_version(&import.model) + 1;
    let (status, traffic_share) = match import.start {
        Start::Production => (ModelStatus::Production, 0.0),
        Start::Canary(share) => {
            check_share(share)?;
            let what = "a canary to share traffic with";
            beside_production(reg, &import.model, version, what)?;
            (ModelStatus::Canary, share)
        }
        Start::Shadow => {
            beside_production(reg, &import.model, version, "a shadow to run beside")?;
            (ModelStatus::Shadow, 0.0)
        }
    };
    Ok(vec![ModelPublished {
        version,
        algorithm: IMPORTED.to_string(),
        hyper_parameters: BTreeMap::new(),
        metrics: import.metrics,
        incumbent_metrics: BTreeMap::new(),
        parent_version: production,
        trigger,
        training_window: import.window,
        reference_profile: import.reference_profile,
        model_format: driftline_onnx::FORMAT.to_string(),
        model_bytes: import.bytes,
        status,
        published_at: now.max(latest_published(reg, &import.model) + 1),
        traffic_share,
        model: import.model,
        error_sub_windows: Vec::new(),
        feature_importance: Default::default(),
        multivariate: None,
        performance_estimator: None,
        error_estimator: None,
        effective_from: None,
    }])
}

/// The records that put the previous production version back.
pub fn rollback(reg: &Registry, model: &str, now: i64) -> Result<Vec<ModelPublished>> {
    if reg.latest_version(model) == 0 {
        return Err(Error::UnknownModel(model.to_string()));
    }
    let current = reg
        .production(model)
        .ok_or_else(|| Error::Conflict(format!("{model} has no version in production")))?;
    // The previous production version: the latest-published production record other than
    // the current one (a superseded version keeps its production record).
    let previous = reg
        .versions(model)
        .filter(|m| m.status == ModelStatus::Production && m.version != current.version)
        .max_by_key(|m| (m.published_at, m.version))
        .ok_or_else(|| {
            Error::Conflict(format!(
                "{model} v{} has no earlier production version to roll back to",
                current.version
            ))
        })?;
    let at = now.max(latest_published(reg, model) + 1);
    let mut retired = current.clone();
    retired.status = ModelStatus::RolledBack;
    retired.published_at = at;
    let mut restored = previous.clone();
    restored.status = ModelStatus::Production;
    restored.published_at = at + 1;
    Ok(vec![retired, restored])
}

/// Keeps `published_at` increasing even when clocks disagree, so the latest record wins.
fn latest_published(reg: &Registry, model: &str) -> i64 {
    reg.versions(model)
        .map(|m| m.published_at)
        .max()
        .unwrap_or(0)
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
            multivariate: None,
            performance_estimator: None,
            error_estimator: None,
            feature_importance: Default::default(),
            effective_from: None,
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::default();
        r.apply(record(1, ModelStatus::Production, 10));
        r.apply(record(2, ModelStatus::Production, 20));
        r.apply(record(3, ModelStatus::Rejected, 30));
        r
    }

    #[test]
    fn promoting_a_rejected_version_makes_it_production() {
        let mut r = registry();
        for m in promote(&r, "m", 3, 5).unwrap() {
            r.apply(m);
        }
        assert_eq!(r.production("m").map(|m| m.version), Some(3));
        assert!(matches!(promote(&r, "m", 3, 5), Err(Error::Conflict(_))));
        assert!(matches!(
            promote(&r, "m", 9, 5),
            Err(Error::UnknownVersion { .. })
        ));
        assert!(matches!(
            promote(&r, "x", 1, 5),
            Err(Error::UnknownModel(_))
        ));
    }

    #[test]
    fn a_canary_starts_on_a_candidate_and_ends_by_promotion_or_rejection() {
        let mut r = registry();
        assert!(matches!(canary(&r, "m", 3, 0.0, 40), Err(Error::Config(_))));
        assert!(matches!(
            canary(&r, "m", 2, 0.2, 40),
            Err(Error::Conflict(_))
        ));
        for m in canary(&r, "m", 3, 0.2, 40).unwrap() {
            r.apply(m);
        }
        assert_eq!(
            r.canary("m").map(|m| (m.version, m.traffic_share)),
            Some((3, 0.2))
        );
        for m in reject(&r, "m", 3, 41).unwrap() {
            r.apply(m);
        }
        assert!(r.canary("m").is_none());
        assert_eq!(r.production("m").map(|m| m.version), Some(2));
        for m in canary(&r, "m", 3, 0.5, 42).unwrap() {
            r.apply(m);
        }
        for m in promote(&r, "m", 3, 43).unwrap() {
            r.apply(m);
        }
        assert!(r.canary("m").is_none());
        assert_eq!(
            r.production("m").map(|m| (m.version, m.traffic_share)),
            Some((3, 0.0))
        );
        assert!(matches!(reject(&r, "m", 3, 44), Err(Error::Conflict(_))));
    }

    #[test]
    fn a_shadow_needs_a_production_beside_it_and_ends_by_promotion_or_rejection() {
        let mut r = registry();
        assert!(matches!(shadow(&r, "m", 2, 40), Err(Error::Conflict(_))));
        assert!(matches!(
            shadow(&r, "n", 1, 40),
            Err(Error::UnknownModel(_))
        ));
        for m in shadow(&r, "m", 3, 40).unwrap() {
            assert_eq!(m.status, ModelStatus::Shadow);
            r.apply(m);
        }
        assert_eq!(r.shadow("m").map(|m| m.version), Some(3));
        assert_eq!(list(&r)["models"][0]["shadow"], 3);
        for m in reject(&r, "m", 3, 41).unwrap() {
            r.apply(m);
        }
        assert!(r.shadow("m").is_none());
        for m in shadow(&r, "m", 3, 42).unwrap() {
            r.apply(m);
        }
        for m in promote(&r, "m", 3, 43).unwrap() {
            r.apply(m);
        }
        assert!(r.shadow("m").is_none());
        assert_eq!(r.production("m").map(|m| m.version), Some(3));
    }

    #[test]
    fn rollback_restores_the_previous_production_version() {
        let mut r = registry();
        for m in rollback(&r, "m", 40).unwrap() {
            r.apply(m);
        }
        assert_eq!(r.production("m").map(|m| m.version), Some(1));
        assert_eq!(
            r.version("m", 2).map(|m| m.status),
            Some(ModelStatus::RolledBack)
        );
        // Nothing left to roll back to.
        assert!(matches!(rollback(&r, "m", 50), Err(Error::Conflict(_))));
    }

    #[test]
    fn show_names_the_offsets_a_version_was_trained_up_to() {
        let mut r = registry();
        let mut v4 = record(4, ModelStatus::Candidate, 40);
        v4.training_window.end_offsets = [
            ("driftline.predictions/0".to_string(), 1200),
            ("driftline.actuals/0".to_string(), 1180),
        ]
        .into();
        r.apply(v4);
        let v = show_version(&r, "m", 4).unwrap();
        assert_eq!(
            v["training_window"]["end_offsets"],
            json!({ "driftline.predictions/0": 1200, "driftline.actuals/0": 1180 })
        );
        // A version from a file (or an older record) shows an empty map, not nothing.
        assert_eq!(
            show(&r, "m").unwrap()["versions"][0]["training_window"]["end_offsets"],
            json!({})
        );
    }

    #[test]
    fn views_leave_out_the_model_bytes() {
        let v = show(&registry(), "m").unwrap();
        assert_eq!(v["production"], 2);
        assert_eq!(v["versions"][2]["status"], "rejected");
        assert_eq!(v["versions"][0]["model_bytes"], 0);
        assert_eq!(list(&registry())["models"][0]["latest"], 3);
    }
}
