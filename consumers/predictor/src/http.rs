//! The HTTP inference API: Open Inference Protocol v2 and a plain JSON `/predict`.
//!
//! Every prediction served here is also logged to `driftline.predictions` (source HTTP),
//! so the monitor sees HTTP traffic like Kafka traffic. A request meets the canary when
//! its first logged id falls in the canary's share (a client's `id` is stable, so its
//! requests always meet the same version; `/predict` ids are fresh, so it is a draw);
//! all its rows meet one version.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use driftline_runtime::health::Health;
use driftline_runtime::now_ms;
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Event, Features, Prediction, PredictionLogged, PredictionSource};
use driftline_schemas::json::{self, BodyError};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use crate::metrics::PredictorMetrics;
use crate::slots::{ModelSlots, Pick, Served};

/// Where HTTP predictions are logged.
#[derive(Clone)]
pub struct PredictionLog {
    pub producer: FutureProducer,
    pub topic: String,
    pub codec: Codec,
}

#[derive(Clone)]
pub struct AppState {
    pub slots: Arc<ModelSlots>,
    pub log: Option<PredictionLog>,
    pub metrics: PredictorMetrics,
    pub prometheus: prometheus::Registry,
    /// The service's health: OIP's live and ready answer from it too.
    pub health: Health,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most rows in one request. (Bodies, concurrency and time are the server's limits:
    /// driftline_process::http::Limits.)
    pub batch_rows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { batch_rows: 10_000 }
    }
}

/// What was wrong with a request; shown to the client, with no internals.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request body is not valid JSON: {0}")]
    BadJson(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    #[error("model {model:?} has no version {version}")]
    UnknownVersion { model: String, version: String },
    #[error("{0}")]
    InvalidFeatures(String),
    #[error("model {0:?} is not ready: no version in production yet")]
    NotReady(String),
    #[error("the body must be JSON, sent as Content-Type: application/json (got {0:?})")]
    NotJson(String),
    /// An imported model that failed to run on valid rows: not the client's fault.
    #[error("the model could not predict: {0}")]
    ModelFailed(String),
}

impl ApiError {
    fn kind(&self) -> &'static str {
        match self {
            ApiError::BadJson(_) => "bad_json",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::UnknownModel(_) | ApiError::UnknownVersion { .. } => "unknown_model",
            ApiError::InvalidFeatures(_) => "invalid_features",
            ApiError::NotReady(_) => "not_ready",
            ApiError::NotJson(_) => "not_json",
            ApiError::ModelFailed(_) => "model_failed",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadJson(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnknownModel(_) | ApiError::UnknownVersion { .. } => StatusCode::NOT_FOUND,
            ApiError::InvalidFeatures(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotJson(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::ModelFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::BadJson(m) => ApiError::BadJson(m),
            BodyError::BadRequest(m) => ApiError::BadRequest(m),
            BodyError::InvalidFeatures(m) => ApiError::InvalidFeatures(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status(),
            [("x-driftline-error", self.kind())],
            Json(json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

pub fn router(state: AppState, limits: Limits) -> Router {
    let prometheus = state.prometheus.clone();
    let api = Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(server_live))
        .route("/v2/health/ready", get(server_ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/infer",
            post(infer).layer(middleware::from_fn(json_only)),
        )
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_version_metadata),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(infer_version).layer(middleware::from_fn(json_only)),
        )
        .route(
            "/predict",
            post(predict).layer(middleware::from_fn(json_only)),
        )
        .route("/openapi.json", get(openapi))
        .with_state((state.clone(), limits))
        .layer(middleware::from_fn_with_state(state, observe));
    api.merge(driftline_process::metrics::router(prometheus))
}

type St = State<(AppState, Limits)>;

/// JSON endpoints take JSON only. A browser sends a `text/plain` POST to any origin without
/// asking it first (a CORS "simple request"), so without this check any web page its user
/// opened could feed predictions into monitoring and retraining.
async fn json_only(req: Request, next: Next) -> Response {
    let sent = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if is_json(&sent) {
        next.run(req).await
    } else {
        ApiError::NotJson(sent).into_response()
    }
}

/// `application/json` or `application/<something>+json`, with any parameters.
fn is_json(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = format!("{}xx", response.status().as_u16() / 100);
    state
        .metrics
        .http_requests
        .with_label_values(&[&route, &status])
        .inc();
    state
        .metrics
        .http_latency
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    if let Some(kind) = response
        .headers()
        .get("x-driftline-error")
        .and_then(|v| v.to_str().ok())
    {
        state.metrics.http_errors.with_label_values(&[kind]).inc();
    }
    response
}

async fn server_metadata(State((state, _)): St) -> Json<Value> {
    let models: Vec<&str> = state.slots.model_names().collect();
    Json(
        json!({ "name": "driftline", "version": env!("CARGO_PKG_VERSION"), "extensions": [], "models": models }),
    )
}

async fn server_live(State((state, _)): St) -> Response {
    driftline_runtime::health::live(State(state.health)).await
}

/// Ready when every model is loaded and the service has no failing dependency.
async fn server_ready(State((state, _)): St) -> Response {
    let problems = state.health.problems();
    let ready = state.slots.ready() && problems.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": ready, "problems": problems })),
    )
        .into_response()
}

fn served(state: &AppState, name: &str) -> Result<Arc<Served>, ApiError> {
    if state.slots.spec(name).is_none() {
        return Err(ApiError::UnknownModel(name.to_string()));
    }
    state
        .slots
        .get(name)
        .ok_or_else(|| ApiError::NotReady(name.to_string()))
}

/// The version that answers a request logged under `request_id` (production, or a
/// canary for the ids in its share), and the shadow. An HTTP request's event time is
/// now: it meets the production version in effect now.
fn served_for(state: &AppState, name: &str, request_id: &str) -> Result<Pick, ApiError> {
    if state.slots.spec(name).is_none() {
        return Err(ApiError::UnknownModel(name.to_string()));
    }
    state
        .slots
        .for_request(name, request_id, now_ms())
        .ok_or_else(|| ApiError::NotReady(name.to_string()))
}

fn served_version(state: &AppState, name: &str, version: &str) -> Result<Arc<Served>, ApiError> {
    served(state, name)?;
    // Only production, the canary and the shadow are loaded; older versions are in the
    // registry.
    version
        .parse()
        .ok()
        .and_then(|v| state.slots.loaded(name, v))
        .ok_or_else(|| ApiError::UnknownVersion {
            model: name.to_string(),
            version: version.to_string(),
        })
}

fn metadata(s: &Served) -> Value {
    let inputs: Vec<Value> = s
        .spec
        .features
        .iter()
        .map(|f| {
            let datatype = match f.kind {
                driftline_schemas::spec::Kind::Numeric => "FP64",
                driftline_schemas::spec::Kind::Categorical => "BYTES",
            };
            json!({ "name": f.name, "datatype": datatype, "shape": [-1] })
        })
        .collect();
    let outputs = match s.spec.target.kind {
        driftline_schemas::spec::TargetKind::Regression => {
            json!([{ "name": "prediction", "datatype": "FP64", "shape": [-1] }])
        }
        driftline_schemas::spec::TargetKind::Classification => {
            json!([{ "name": "class", "datatype": "BYTES", "shape": [-1] }])
        }
    };
    json!({
        "name": s.model,
        "versions": [s.version.to_string()],
        "platform": format!("driftline/{}", s.algorithm),
        "inputs": inputs,
        "outputs": outputs,
    })
}

async fn model_metadata(
    State((state, _)): St,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(metadata(&*served(&state, &name)?)))
}

async fn model_version_metadata(
    State((state, _)): St,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(metadata(&*served_version(&state, &name, &version)?)))
}

async fn model_ready(State((state, _)): St, Path(name): Path<String>) -> Response {
    match served(&state, &name) {
        Ok(_) => Json(json!({ "name": name, "ready": true })).into_response(),
        Err(ApiError::NotReady(_)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "name": name, "ready": false })),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn infer(
    State((state, limits)): St,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    infer_with(&state, &limits, |id| served_for(&state, &name, id), &body).await
}

async fn infer_version(
    State((state, limits)): St,
    Path((name, version)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    // A version asked for by name answers alone: no shadow beside it.
    let served = served_version(&state, &name, &version)?;
    let pick = Pick {
        served,
        shadow: None,
    };
    infer_with(&state, &limits, |_| Ok(pick), &body).await
}

/// Answers an OIP request with the version `pick` chooses for its first logged id: the
/// rows of one request meet one version.
async fn infer_with(
    state: &AppState,
    limits: &Limits,
    pick: impl FnOnce(&str) -> Result<Pick, ApiError>,
    body: &[u8],
) -> Result<Json<Value>, ApiError> {
    let req = json::infer_body(body, limits.batch_rows)?;
    let (rows, batch) = (req.rows.len(), req.rows);
    // A client's id is namespaced: it cannot take the id of a request that came by Kafka
    // (whose actual would then join this prediction instead of its own).
    let ids: Vec<String> = (0..rows)
        .map(|i| match &req.id {
            Some(id) if rows == 1 => format!("{HTTP_ID_PREFIX}{id}"),
            Some(id) => format!("{HTTP_ID_PREFIX}{id}-{i}"),
            None => fresh_id(),
        })
        .collect();
    let pick = pick(ids.first().map_or("", String::as_str))?;
    let predictions = predict_rows(state, &pick, &batch, &ids)?;
    let s = &pick.served;
    let mut outputs = Vec::new();
    match s.spec.target.kind {
        driftline_schemas::spec::TargetKind::Regression => {
            let data: Vec<Value> = predictions.iter().map(|p| json!(p.value)).collect();
            outputs.push(
                json!({ "name": "prediction", "datatype": "FP64", "shape": [rows], "data": data }),
            );
        }
        driftline_schemas::spec::TargetKind::Classification => {
            let data: Vec<Value> = predictions.iter().map(|p| json!(p.class)).collect();
            outputs.push(
                json!({ "name": "class", "datatype": "BYTES", "shape": [rows], "data": data }),
            );
            let classes: Vec<&String> = predictions
                .first()
                .map(|p| p.probabilities.keys().collect())
                .unwrap_or_default();
            for c in classes {
                let data: Vec<Value> = predictions
                    .iter()
                    .map(|p| json!(p.probabilities.get(c)))
                    .collect();
                outputs.push(json!({ "name": format!("probability:{c}"), "datatype": "FP64", "shape": [rows], "data": data }));
            }
        }
    }
    let mut out = json!({
        "model_name": s.model,
        "model_version": s.version.to_string(),
        "outputs": outputs,
        // The ids the predictions were logged under: an actual names one of these.
        "parameters": { "request_ids": ids },
    });
    if let Some(id) = req.id {
        out["id"] = json!(id);
    }
    Ok(Json(out))
}

/// `/predict`: `{"model"?, "features": {...}}` or `{"model"?, "instances": [{...}, ...]}`.
async fn predict(State((state, limits)): St, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req = json::predict_body(&body, limits.batch_rows)?;
    let name = match req.model {
        Some(m) => m,
        None => state
            .slots
            .only_model()
            .map(str::to_string)
            .ok_or_else(|| {
                ApiError::BadRequest("`model` is required when several models are served".into())
            })?,
    };
    let (single, batch) = (req.single, req.rows);
    let ids: Vec<String> = (0..batch.len()).map(|_| fresh_id()).collect();
    let pick = served_for(&state, &name, ids.first().map_or("", String::as_str))?;
    let predictions = predict_rows(&state, &pick, &batch, &ids)?;
    let s = &pick.served;
    let render = |p: &Prediction, id: &str| {
        let mut v = json!({ "request_id": id });
        if let Some(x) = p.value {
            v["value"] = json!(x);
        }
        if let Some(c) = &p.class {
            v["class"] = json!(c);
            v["probabilities"] = json!(p.probabilities);
        }
        v
    };
    let mut out = json!({ "model": s.model, "version": s.version });
    if single {
        out["prediction"] = render(&predictions[0], &ids[0]);
    } else {
        out["predictions"] = predictions
            .iter()
            .zip(&ids)
            .map(|(p, id)| render(p, id))
            .collect();
    }
    Ok(Json(out))
}

/// Validates every row (naming the field), predicts, and logs each prediction (with the
/// shadow's beside it).
fn predict_rows(
    state: &AppState,
    pick: &Pick,
    batch: &[Features],
    ids: &[String],
) -> Result<Vec<Prediction>, ApiError> {
    let s = &pick.served;
    for (row, features) in batch.iter().enumerate() {
        if let Err(problems) = s.spec.validate(features) {
            let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
            let at = if batch.len() > 1 {
                format!("row {row}: ")
            } else {
                String::new()
            };
            return Err(ApiError::InvalidFeatures(format!(
                "{at}{}",
                text.join("; ")
            )));
        }
    }
    let started = Instant::now();
    let refs: Vec<&Features> = batch.iter().collect();
    let predictions = s.predict_batch(&refs).map_err(ApiError::ModelFailed)?;
    let latency_us = (started.elapsed().as_micros() as i64) / batch.len().max(1) as i64;
    state
        .metrics
        .predictions
        .with_label_values(&[&s.model, "http"])
        .inc_by(batch.len() as u64);
    if let Some(log) = &state.log {
        let served_at = now_ms();
        // Only logged, so only predicted when there is a log.
        let mut shadows = match pick.shadow_batch(&refs) {
            Ok(Some(shadows)) => {
                let v = shadows.first().map_or(0, |sh| sh.model_version);
                state.metrics.shadowed(&s.model, v, shadows.len(), None);
                shadows.into_iter().map(Some).collect()
            }
            Ok(None) => Vec::new(),
            Err(error) => {
                let v = pick.shadow.as_ref().map_or(0, |sh| sh.version);
                state
                    .metrics
                    .shadowed(&s.model, v, batch.len(), Some(&error));
                Vec::new()
            }
        }
        .into_iter();
        for ((features, prediction), id) in batch.iter().zip(&predictions).zip(ids) {
            let logged = PredictionLogged {
                request_id: id.clone(),
                model: s.model.clone(),
                model_version: s.version,
                event_time: served_at,
                features: features.clone(),
                prediction: prediction.clone(),
                served_at,
                latency_us,
                source: PredictionSource::Http,
                shadow: shadows.next().flatten(),
            };
            match log.codec.encode(&logged) {
                Ok(bytes) => {
                    let key = logged.key();
                    // Fire and forget: the log must not slow the response; failures are counted.
                    if log
                        .producer
                        .send_result(FutureRecord::to(&log.topic).key(&key).payload(&bytes))
                        .is_err()
                    {
                        state
                            .metrics
                            .http_errors
                            .with_label_values(&["log_dropped"])
                            .inc();
                    }
                }
                Err(_) => state
                    .metrics
                    .http_errors
                    .with_label_values(&["log_encode"])
                    .inc(),
            }
        }
    }
    Ok(predictions)
}

/// What a request id given by an HTTP client is logged under (`http:<id>`).
pub const HTTP_ID_PREFIX: &str = "http:";

fn fresh_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "http-{}-{}-{}",
        std::process::id(),
        now_ms(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn openapi() -> impl IntoResponse {
    (
        [("content-type", "application/json")],
        include_str!("../openapi.json"),
    )
}
