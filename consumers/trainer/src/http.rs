//! The registry over HTTP. Reads are open; promote and rollback change what serves
//! traffic, so they need `Authorization: Bearer <admin token>` (and are refused outright
//! when no token is configured).
//!
//! | method | path | |
//! | --- | --- | --- |
//! | GET | `/models` | every model, its production and latest version |
//! | GET | `/models/{model}` | one model, every version (no bytes) |
//! | GET | `/models/{model}/versions/{version}` | one version |
//! | POST | `/models/{model}/versions/{version}/promote` | make it production |
//! | POST | `/models/{model}/rollback` | back to the previous production version |
//! | GET | `/openapi.json` | this API described (OpenAPI 3.0) |
//! | GET | `/metrics` | Prometheus |

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use driftline_runtime::now_ms;
use driftline_runtime::registry::{Registry, SharedRegistry};
use driftline_runtime::signing::{Signer, Trust};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::ModelPublished;
use rdkafka::producer::FutureProducer;
use serde_json::{Value, json};
use std::sync::Arc;

use crate::{Error, jobs, ops};

#[derive(Clone)]
pub struct RegistryApi {
    /// To read a version the registry keeps thin back from the models topic.
    pub kafka: driftline_kafka::KafkaArgs,
    pub registry: SharedRegistry,
    pub producer: FutureProducer,
    pub models_topic: String,
    pub codec: Codec,
    /// Whose records a thin version may be read back from.
    pub trust: Trust,
    /// Signs the records promote and rollback publish.
    pub signer: Option<Arc<Signer>>,
    /// The bearer token promote and rollback need; `None` disables them.
    pub admin_token: Option<String>,
}

/// What was wrong with a request; shown to the client without internals.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("registry changes are disabled: no admin token is configured")]
    Disabled,
    #[error("{0:?} is not a version number")]
    BadVersion(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the registry could not be updated; try again")]
    Unavailable,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Disabled => StatusCode::FORBIDDEN,
            ApiError::BadVersion(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut response = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::UnknownModel(_) | Error::UnknownVersion { .. } => {
                ApiError::NotFound(e.to_string())
            }
            Error::Conflict(m) => ApiError::Conflict(m),
            other => {
                tracing::warn!(error = %other, "registry change failed");
                ApiError::Unavailable
            }
        }
    }
}

pub fn router(api: RegistryApi, prometheus: prometheus::Registry) -> Router {
    Router::new()
        .route("/models", get(list))
        .route("/models/{model}", get(show))
        .route("/models/{model}/versions/{version}", get(show_version))
        .route("/models/{model}/versions/{version}/promote", post(promote))
        .route("/models/{model}/rollback", post(rollback))
        .route("/openapi.json", get(openapi))
        .with_state(api)
        .merge(driftline_process::metrics::router(prometheus))
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../openapi.json"),
    )
}

fn authorize(api: &RegistryApi, headers: &HeaderMap) -> Result<(), ApiError> {
    let expected = api
        .admin_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Disabled)?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    if constant_time_eq(given.trim().as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn version_number(v: &str) -> Result<i64, ApiError> {
    v.trim_start_matches('v')
        .parse()
        .map_err(|_| ApiError::BadVersion(v.to_string()))
}

async fn list(State(api): State<RegistryApi>) -> Json<Value> {
    Json(ops::list(
        &api.registry.read().unwrap_or_else(|e| e.into_inner()),
    ))
}

async fn show(
    State(api): State<RegistryApi>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(ops::show(
        &api.registry.read().unwrap_or_else(|e| e.into_inner()),
        &model,
    )?))
}

async fn show_version(
    State(api): State<RegistryApi>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let version = version_number(&version)?;
    Ok(Json(ops::show_version(
        &api.registry.read().unwrap_or_else(|e| e.into_inner()),
        &model,
        version,
    )?))
}

async fn promote(
    State(api): State<RegistryApi>,
    headers: HeaderMap,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    authorize(&api, &headers)?;
    let version = version_number(&version)?;
    publish(&api, |registry| {
        ops::promote(registry, &model, version, now_ms())
    })
    .await
}

async fn rollback(
    State(api): State<RegistryApi>,
    headers: HeaderMap,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&api, &headers)?;
    publish(&api, |registry| ops::rollback(registry, &model, now_ms())).await
}

/// Publishes the records a registry operation makes (a thin version read whole first)
/// and answers with them.
async fn publish(
    api: &RegistryApi,
    op: impl FnOnce(&Registry) -> crate::Result<Vec<ModelPublished>>,
) -> Result<Json<Value>, ApiError> {
    // A copy: the lock cannot be held while a thin version is read back.
    let registry = api
        .registry
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let records = op(&registry)?;
    let records = jobs::made_whole(
        &api.kafka,
        &api.models_topic,
        &api.codec,
        &api.trust,
        &registry,
        records,
    )
    .await?;
    jobs::publish(
        &api.producer,
        &api.models_topic,
        &api.codec,
        api.signer.as_deref(),
        &records,
    )
    .await?;
    Ok(Json(
        json!({ "published": records.iter().map(ops::version_view).collect::<Vec<_>>() }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use std::sync::RwLock;
    use tower::ServiceExt;

    fn api(token: Option<&str>) -> Router {
        // A producer is created lazily by librdkafka; nothing is sent in these tests.
        let producer: FutureProducer = driftline_kafka::KafkaArgs::with_bootstrap("127.0.0.1:1")
            .producer_config()
            .create()
            .unwrap();
        let api = RegistryApi {
            kafka: driftline_kafka::KafkaArgs::with_bootstrap("127.0.0.1:1"),
            registry: Arc::new(RwLock::new(Registry::default())),
            producer,
            models_topic: "models".into(),
            codec: Codec::single_object(),
            trust: Trust::none(),
            signer: None,
            admin_token: token.map(str::to_string),
        };
        router(api, prometheus::Registry::new())
    }

    async fn status(app: Router, req: Request<Body>) -> StatusCode {
        app.oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn changes_need_the_bearer_token_and_reads_do_not() {
        let post = |auth: Option<&str>| {
            let mut b = Request::post("/models/m/rollback");
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            b.body(Body::empty()).unwrap()
        };
        assert_eq!(
            status(api(Some("s3cret")), post(None)).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(api(Some("s3cret")), post(Some("Bearer nope"))).await,
            StatusCode::UNAUTHORIZED
        );
        // With the token, the request reaches the registry (which has no such model).
        assert_eq!(
            status(api(Some("s3cret")), post(Some("Bearer s3cret"))).await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(api(None), post(Some("Bearer s3cret"))).await,
            StatusCode::FORBIDDEN
        );
        let get = Request::get("/models").body(Body::empty()).unwrap();
        assert_eq!(status(api(Some("s3cret")), get).await, StatusCode::OK);
        let bad = Request::get("/models/m/versions/x")
            .body(Body::empty())
            .unwrap();
        assert_eq!(status(api(None), bad).await, StatusCode::BAD_REQUEST);
    }
}
