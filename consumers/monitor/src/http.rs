//! The monitor's HTTP API: the latest report per model as JSON, health, and /metrics.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use driftline_schemas::events::DriftReport;
use serde_json::json;

use crate::processor::LatestReports;

/// What was wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no drift report for model {0:?} yet")]
    NoReport(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::NoReport(_) => StatusCode::NOT_FOUND,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

async fn drift(
    State(latest): State<LatestReports>,
    Path(model): Path<String>,
) -> Result<Json<DriftReport>, ApiError> {
    let reports = latest.read().unwrap_or_else(|e| e.into_inner());
    let report = reports.get(&model).ok_or(ApiError::NoReport(model))?;
    Ok(Json(report.clone()))
}

async fn models(State(latest): State<LatestReports>) -> Json<serde_json::Value> {
    let reports = latest.read().unwrap_or_else(|e| e.into_inner());
    let summary: Vec<_> = reports
        .values()
        .map(|r| json!({"model": r.model, "model_version": r.model_version, "decision": r.decision.symbol(), "share_drifted": r.share_drifted, "report_id": r.report_id}))
        .collect();
    Json(json!({ "models": summary }))
}

/// `GET /models`, `GET /models/{model}/drift`, `GET /health`, `GET /metrics`.
pub fn router(latest: LatestReports, prometheus: prometheus::Registry) -> Router {
    Router::new()
        .route("/models", get(models))
        .route("/models/{model}/drift", get(drift))
        .route("/health", get(|| async { "ok" }))
        .with_state(latest)
        .merge(driftline_process::metrics::router(prometheus))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use driftline_schemas::events::{DriftDecision, DriftReport, ReportWindow};
    use tower::ServiceExt;

    fn report() -> DriftReport {
        DriftReport {
            report_id: "m-v1-1000".into(),
            model: "m".into(),
            model_version: 1,
            evaluated_at: 5,
            window: ReportWindow::default(),
            features: vec![],
            prediction: None,
            performance: vec![],
            share_drifted: 0.25,
            decision: DriftDecision::Warning,
            reason: "r".into(),
            multivariate: None,
            estimated: None,
        }
    }

    #[tokio::test]
    async fn serves_the_latest_report_and_404s_an_unknown_model() {
        let latest = LatestReports::default();
        latest.write().unwrap().insert("m".into(), report());
        let app = router(latest, prometheus::Registry::new());
        let res = app
            .clone()
            .oneshot(Request::get("/models/m/drift").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (v["decision"].as_str(), v["share_drifted"].as_f64()),
            (Some("WARNING"), Some(0.25))
        );
        let res = app
            .oneshot(Request::get("/models/x/drift").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
}
