//! The web dashboard `driftline up` serves: drift per feature over time, the prediction
//! and its error over time, the model timeline and the latest report.
//!
//! It reads nothing itself: `watch` feeds it the events it follows on the topics, and the
//! page polls `GET /api/dashboard` every two seconds. The page and its script are compiled
//! into the binary, so nothing is fetched from anywhere else.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use driftline_monitor::performance::Joined;
use driftline_schemas::events::{
    DriftReport, FeatureDrift, Labelled, ModelPublished, ModelStatus, PredictionLogged,
};
use serde::Serialize;

/// Drift reports kept for the charts.
const MAX_REPORTS: usize = 500;
/// Registry steps kept for the rollout table.
const MAX_STEPS: usize = 200;
/// Event-time days kept for the prediction and error charts.
const MAX_DAYS: usize = 1000;
const DAY_MS: i64 = 86_400_000;

const PAGE: &str = include_str!("../assets/dashboard.html");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const STYLE: &str = include_str!("../assets/dashboard.css");

/// One feature's statistics in one report.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct FeaturePoint {
    psi: Option<f64>,
    ks_d: Option<f64>,
    wasserstein_norm: Option<f64>,
    jensen_shannon: Option<f64>,
    drifted: bool,
}

impl From<&FeatureDrift> for FeaturePoint {
    fn from(f: &FeatureDrift) -> Self {
        Self {
            psi: f.psi,
            ks_d: f.ks_d,
            wasserstein_norm: f.wasserstein_norm,
            jensen_shannon: f.jensen_shannon,
            drifted: f.drifted,
        }
    }
}

/// One report, reduced to what the drift chart draws.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct ReportPoint {
    window_end: i64,
    model_version: i64,
    decision: String,
    share_drifted: f64,
    features: BTreeMap<String, FeaturePoint>,
}

/// Predictions and joined errors of one event-time day.
#[derive(Debug, Clone, Default, PartialEq)]
struct DayBucket {
    predictions: u64,
    prediction_sum: f64,
    errors: u64,
    abs_error_sum: f64,
}

/// Everything the page draws, bounded so a long replay cannot grow it without limit.
#[derive(Debug, Default)]
pub struct History {
    reports: VecDeque<ReportPoint>,
    latest: Option<DriftReport>,
    /// event-time day (ms since the epoch / 86 400 000) -> bucket
    days: BTreeMap<i64, DayBucket>,
    /// version -> latest record
    models: BTreeMap<i64, ModelPublished>,
    /// Every record of the models topic as it arrived (newest last): a canary started,
    /// a shadow, a promotion, a rejection, a rollback.
    steps: VecDeque<Step>,
    numeric_wasserstein: Option<f64>,
    psi: Option<f64>,
    /// Bumped on every change, so the page can tell when to redraw.
    revision: u64,
}

impl History {
    /// The lines the charts draw: the Wasserstein line only when it is one for every
    /// feature (fixed thresholds; calibrated lines differ by feature and window size).
    pub fn set_thresholds(&mut self, numeric_wasserstein: Option<f64>, psi: f64) {
        self.numeric_wasserstein = numeric_wasserstein;
        self.psi = Some(psi);
        self.revision += 1;
    }

    pub fn record_report(&mut self, r: &DriftReport) {
        // A replayed report (same id) replaces nothing and adds nothing.
        if self
            .latest
            .as_ref()
            .is_some_and(|l| l.report_id == r.report_id)
        {
            return;
        }
        self.reports.push_back(ReportPoint {
            window_end: r.window.end_time,
            model_version: r.model_version,
            decision: r.decision.to_string(),
            share_drifted: r.share_drifted,
            features: r
                .features
                .iter()
                .map(|f| (f.name.clone(), f.into()))
                .collect(),
        });
        while self.reports.len() > MAX_REPORTS {
            self.reports.pop_front();
        }
        self.latest = Some(r.clone());
        self.revision += 1;
    }

    pub fn record_model(&mut self, m: &ModelPublished) {
        // The bytes and the reference profile are not drawn; keep the record small.
        let mut m = m.clone();
        m.model_bytes = Vec::new();
        m.reference_profile = Vec::new();
        let step = Step {
            version: m.version,
            status: m.status,
            traffic_share: (m.status == ModelStatus::Canary).then_some(m.traffic_share),
            published_at: m.published_at,
        };
        // The same record read twice (a restart re-reads the topic) is one step.
        if !self.steps.contains(&step) {
            self.steps.push_back(step);
            while self.steps.len() > MAX_STEPS {
                self.steps.pop_front();
            }
        }
        self.models.insert(m.version, m);
        self.revision += 1;
    }

    pub fn record_prediction(&mut self, p: &PredictionLogged) {
        let day = self.day(p.event_time);
        day.predictions += 1;
        if let Some(v) = p.prediction.value.filter(|v| v.is_finite()) {
            day.prediction_sum += v;
        }
        self.revision += 1;
    }

    /// Scores a prediction the joiner paired with its actual, on the prediction's
    /// event-time day, as the monitor scores it: the absolute error of a value, 0 or 1 for
    /// a class.
    pub fn record_labelled(&mut self, l: &Labelled) {
        let error = match Joined::of(&l.prediction.prediction, &l.actual) {
            Some(Joined::Regression { predicted, actual })
                if predicted.is_finite() && actual.is_finite() =>
            {
                (predicted - actual).abs()
            }
            Some(Joined::Classification { correct, .. }) => f64::from(u8::from(!correct)),
            _ => return,
        };
        let day = self.day(l.prediction.event_time);
        day.errors += 1;
        day.abs_error_sum += error;
        self.revision += 1;
    }

    fn day(&mut self, event_time: i64) -> &mut DayBucket {
        let key = event_time.div_euclid(DAY_MS);
        if !self.days.contains_key(&key) {
            while self.days.len() >= MAX_DAYS {
                self.days.pop_first();
            }
        }
        self.days.entry(key).or_default()
    }

    /// What `GET /api/dashboard` returns.
    fn view(&self) -> View<'_> {
        View {
            revision: self.revision,
            thresholds: Thresholds {
                psi: self.psi,
                wasserstein_norm: self.numeric_wasserstein,
            },
            reports: &self.reports,
            days: self
                .days
                .iter()
                .map(|(day, b)| DayView {
                    day: day * DAY_MS,
                    predictions: b.predictions,
                    prediction_mean: (b.predictions > 0)
                        .then(|| b.prediction_sum / b.predictions as f64),
                    errors: b.errors,
                    mean_abs_error: (b.errors > 0).then(|| b.abs_error_sum / b.errors as f64),
                })
                .collect(),
            models: self
                .models
                .values()
                .map(|m| ModelView {
                    version: m.version,
                    model: &m.model,
                    status: m.status,
                    algorithm: &m.algorithm,
                    trigger: &m.trigger,
                    parent_version: m.parent_version,
                    published_at: m.published_at,
                    train_rows: m.training_window.train_rows,
                    holdout_rows: m.training_window.holdout_rows,
                    metrics: &m.metrics,
                    incumbent_metrics: &m.incumbent_metrics,
                })
                .collect(),
            steps: &self.steps,
            latest: self.latest.as_ref(),
        }
    }

    /// The JSON `GET /api/dashboard` returns. serde_json writes a non-finite number as null.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.view()).expect("strings, numbers and string-keyed maps")
    }
}

#[derive(Serialize)]
struct View<'a> {
    revision: u64,
    thresholds: Thresholds,
    reports: &'a VecDeque<ReportPoint>,
    days: Vec<DayView>,
    models: Vec<ModelView<'a>>,
    steps: &'a VecDeque<Step>,
    /// The latest report in its one JSON view (the monitor's API shows the same).
    latest: Option<&'a DriftReport>,
}

#[derive(Serialize)]
struct Thresholds {
    psi: Option<f64>,
    wasserstein_norm: Option<f64>,
}

#[derive(Serialize)]
struct DayView {
    day: i64,
    predictions: u64,
    prediction_mean: Option<f64>,
    errors: u64,
    mean_abs_error: Option<f64>,
}

/// One record of the models topic: what happened to a version, when.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Step {
    version: i64,
    status: ModelStatus,
    /// A canary's share of the requests.
    traffic_share: Option<f64>,
    published_at: i64,
}

/// A model record without its bytes and reference profile.
#[derive(Serialize)]
struct ModelView<'a> {
    version: i64,
    model: &'a str,
    status: ModelStatus,
    algorithm: &'a str,
    trigger: &'a str,
    parent_version: Option<i64>,
    published_at: i64,
    train_rows: i64,
    holdout_rows: i64,
    metrics: &'a BTreeMap<String, f64>,
    incumbent_metrics: &'a BTreeMap<String, f64>,
}

/// `GET /` (the page and its assets) and `GET /api/dashboard` (what it draws).
pub fn router(history: Arc<Mutex<History>>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }),
        )
        .route(
            "/assets/dashboard.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    SCRIPT,
                )
            }),
        )
        .route(
            "/assets/dashboard.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }),
        )
        .route(
            "/api/dashboard",
            get(move || {
                let history = history.clone();
                async move {
                    let json = history.lock().unwrap_or_else(|e| e.into_inner()).to_json();
                    (
                        [
                            (header::CONTENT_TYPE, "application/json"),
                            (header::CACHE_CONTROL, "no-store"),
                        ],
                        json,
                    )
                        .into_response()
                }
            }),
        )
}

/// A History filled with plausible events: two months of traffic with drift setting in
/// after day 30 and a retrained model. Shared by the unit tests and the browser test.
#[cfg(test)]
pub(crate) mod sample {
    use std::collections::BTreeMap;

    use driftline_schemas::events::{
        Actual, DriftDecision, DriftReport, FeatureDrift, FeatureKind, Labelled, MetricComparison,
        ModelPublished, ModelStatus, Prediction, PredictionLogged, PredictionSource, ReportWindow,
        Signal, TrainingWindow,
    };

    use super::{DAY_MS, History};

    /// 2024-01-01T00:00:00Z
    pub const START: i64 = 1_704_067_200_000;

    pub fn feature(name: &str, psi: f64, drifted: bool) -> FeatureDrift {
        FeatureDrift {
            name: name.into(),
            kind: FeatureKind::Numeric,
            psi: Some(psi),
            ks_d: Some(psi / 2.0),
            ks_p: Some((-psi * 20.0).exp()),
            wasserstein_norm: Some(psi / 1.5),
            jensen_shannon: Some(psi / 4.0),
            chi2_p: None,
            missing_share: 0.0,
            drifted,
            signals: vec![],
        }
    }

    pub fn report(day: i64, version: i64) -> DriftReport {
        let shift = if day > 30 {
            (day - 30) as f64 * 0.03
        } else {
            0.0
        };
        let features = vec![
            feature("dep_delay", 0.02 + shift, 0.02 + shift > 0.2),
            feature("distance", 0.01 + (day % 3) as f64 * 0.005, false),
            FeatureDrift {
                kind: FeatureKind::Categorical,
                psi: None,
                ks_d: None,
                wasserstein_norm: None,
                chi2_p: Some(0.4),
                ..feature("carrier", 0.03, false)
            },
        ];
        let drifted = features.iter().filter(|f| f.drifted).count();
        DriftReport {
            report_id: format!("report-{day}"),
            model: "flights".into(),
            model_version: version,
            evaluated_at: START + day * DAY_MS + 1000,
            window: ReportWindow {
                start_time: START + (day - 1) * DAY_MS,
                end_time: START + day * DAY_MS,
                count: 500,
                end_offsets: BTreeMap::new(),
            },
            prediction: Some(feature("prediction", 0.01 + shift / 2.0, false)),
            performance: vec![MetricComparison {
                metric: "mae".into(),
                current: 11.0 + shift * 10.0,
                reference: Some(10.5),
            }],
            share_drifted: drifted as f64 / features.len() as f64,
            decision: if drifted > 0 {
                DriftDecision::Drift
            } else {
                DriftDecision::NoDrift
            },
            reason: if drifted > 0 {
                "dep_delay drifted (psi above 0.2)".into()
            } else {
                "no feature drifted".into()
            },
            multivariate: Some(Signal {
                name: "reconstruction_error".into(),
                value: 1.1 + shift,
                threshold: 1.3,
                fired: 1.1 + shift >= 1.3,
                method:
                    "from the reference's sub-windows of 100 to 3200 rows: a gamma tail of 1.0e-3"
                        .into(),
            }),
            estimated: None,
            features,
        }
    }

    pub fn model(
        version: i64,
        status: ModelStatus,
        trigger: &str,
        mae: f64,
        incumbent: Option<f64>,
    ) -> ModelPublished {
        ModelPublished {
            model: "flights".into(),
            version,
            algorithm: "linear".into(),
            hyper_parameters: BTreeMap::new(),
            metrics: [("mae".to_string(), mae), ("rmse".to_string(), mae * 1.4)].into(),
            incumbent_metrics: incumbent
                .map(|m| [("mae".to_string(), m)].into())
                .unwrap_or_default(),
            parent_version: (version > 1).then_some(version - 1),
            trigger: trigger.into(),
            training_window: TrainingWindow {
                start_time: START,
                end_time: START + version * 20 * DAY_MS,
                train_rows: 8000,
                holdout_rows: 2000,
                end_offsets: BTreeMap::new(),
            },
            reference_profile: Vec::new(),
            model_format: "driftline-linfa-json".into(),
            model_bytes: vec![1, 2, 3],
            status,
            published_at: START + version * 20 * DAY_MS,
            traffic_share: 0.0,
            error_sub_windows: Vec::new(),
            feature_importance: Default::default(),
            multivariate: None,
            performance_estimator: None,
            error_estimator: None,
            effective_from: None,
        }
    }

    pub fn prediction(id: &str, event_time: i64, value: f64) -> PredictionLogged {
        PredictionLogged {
            request_id: id.into(),
            model: "flights".into(),
            model_version: 1,
            event_time,
            features: BTreeMap::new(),
            prediction: Prediction {
                value: Some(value),
                class: None,
                probabilities: BTreeMap::new(),
            },
            served_at: event_time,
            latency_us: 150,
            source: PredictionSource::Kafka,
            shadow: None,
        }
    }

    /// The joiner's pair of `prediction` with an actual of `value`.
    pub fn labelled(prediction: &PredictionLogged, value: f64) -> Labelled {
        Labelled {
            prediction: prediction.clone(),
            actual: Actual {
                request_id: prediction.request_id.clone(),
                model: prediction.model.clone(),
                event_time: prediction.event_time,
                value: Some(value),
                class: None,
                observed_at: prediction.event_time + 3_600_000,
            },
            prediction_read_at: Default::default(),
            actual_read_at: Default::default(),
        }
    }

    /// One day of traffic: predictions, their actuals, the day's report, and the model
    /// versions published that day (v1 on day 1, v2 rejected on day 20, v3 on day 55).
    pub fn feed_day(h: &mut History, day: i64) {
        match day {
            1 => h.record_model(&model(1, ModelStatus::Production, "BOOTSTRAP", 10.5, None)),
            20 => h.record_model(&model(2, ModelStatus::Rejected, "DRIFT", 12.0, Some(11.0))),
            55 => h.record_model(&model(3, ModelStatus::Production, "DRIFT", 9.8, Some(13.1))),
            _ => {}
        }
        for i in 0..20 {
            let id = format!("r-{day}-{i}");
            let t = START + day * DAY_MS + i * 60_000;
            let truth = 10.0 + (day as f64 / 10.0) + i as f64 % 5.0;
            let drift = if day > 30 {
                (day - 30) as f64 * 0.4
            } else {
                0.0
            };
            let p = prediction(&id, t, truth + 1.0);
            h.record_prediction(&p);
            h.record_labelled(&labelled(
                &p,
                truth + drift + if i % 2 == 0 { 0.5 } else { -0.5 },
            ));
        }
        h.record_report(&report(day, if day >= 55 { 3 } else { 1 }));
    }

    pub fn history() -> History {
        let mut h = History::default();
        h.set_thresholds(Some(0.1), 0.2);
        for day in 1..=60 {
            feed_day(&mut h, day);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use super::sample::{self, START};
    use super::{DAY_MS, History, MAX_REPORTS, router};

    async fn get(history: History, path: &str) -> (StatusCode, String, String) {
        let app = router(Arc::new(Mutex::new(history)));
        let res = app
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = res.status();
        let ctype = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = to_bytes(res.into_body(), usize::MAX).await.expect("body");
        (
            status,
            ctype,
            String::from_utf8(body.to_vec()).expect("utf-8"),
        )
    }

    #[tokio::test]
    async fn serves_the_page_and_its_assets_from_the_binary() {
        let (status, ctype, body) = get(History::default(), "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ctype.starts_with("text/html"));
        assert!(body.contains("id=\"chart-drift\""));
        // Nothing is fetched from another host.
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "the page must not load from a CDN"
        );
        for asset in ["/assets/dashboard.js", "/assets/dashboard.css"] {
            let (status, _, body) = get(History::default(), asset).await;
            assert_eq!(status, StatusCode::OK, "{asset}");
            assert!(
                !body.contains("https://"),
                "{asset} must not load from a CDN"
            );
        }
    }

    #[tokio::test]
    async fn api_returns_everything_the_page_draws() {
        let (status, ctype, body) = get(sample::history(), "/api/dashboard").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype, "application/json");
        let v: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(v["thresholds"]["psi"], 0.2);
        assert_eq!(v["thresholds"]["wasserstein_norm"], 0.1);
        assert_eq!(v["reports"].as_array().map(Vec::len), Some(60));
        let last = &v["reports"][59];
        assert_eq!(last["window_end"], START + 60 * DAY_MS);
        assert!((last["features"]["dep_delay"]["psi"].as_f64().unwrap() - 0.92).abs() < 1e-9);
        // A statistic that does not apply to a feature is null, not 0.
        assert!(last["features"]["carrier"]["psi"].is_null());
        assert_eq!(v["days"].as_array().map(Vec::len), Some(60));
        assert_eq!(v["days"][0]["predictions"], 20);
        assert_eq!(v["days"][0]["errors"], 20);
        let statuses: Vec<&str> = v["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["PRODUCTION", "REJECTED", "PRODUCTION"]);
        assert_eq!(v["models"][2]["incumbent_metrics"]["mae"], 13.1);
        assert_eq!(v["latest"]["report_id"], "report-60");
        assert_eq!(v["latest"]["features"].as_array().map(Vec::len), Some(3));
        assert_eq!(v["latest"]["prediction"]["name"], "prediction");
        assert_eq!(v["latest"]["performance"][0]["metric"], "mae");
    }

    #[test]
    fn scores_labelled_predictions_on_the_prediction_event_time_day() {
        let mut h = History::default();
        let (a, b, c) = (
            sample::prediction("a", START, 10.0),
            sample::prediction("b", START + 1000, 20.0),
            sample::prediction("c", START + DAY_MS, 5.0),
        );
        for p in [&a, &b, &c] {
            h.record_prediction(p);
        }
        // Ground truth observed a day later still counts on the prediction's day.
        let mut late = sample::labelled(&b, 19.0);
        late.actual.observed_at += DAY_MS;
        h.record_labelled(&sample::labelled(&a, 13.0));
        h.record_labelled(&late);
        let v: serde_json::Value = serde_json::from_str(&h.to_json()).expect("valid JSON");
        assert_eq!(v["days"][0]["day"], START);
        assert_eq!(v["days"][0]["prediction_mean"], 15.0);
        assert_eq!(v["days"][0]["errors"], 2);
        assert_eq!(v["days"][0]["mean_abs_error"], 2.0);
        assert_eq!(v["days"][1]["errors"], 0);
        assert!(v["days"][1]["mean_abs_error"].is_null());
    }

    #[test]
    fn a_class_is_scored_0_or_1_and_an_actual_that_does_not_fit_is_not_scored() {
        let mut h = History::default();
        let mut p = sample::prediction("a", START, 0.0);
        p.prediction.value = None;
        p.prediction.class = Some("late".into());
        let mut right = sample::labelled(&p, 0.0);
        right.actual.value = None;
        right.actual.class = Some("late".into());
        let mut wrong = right.clone();
        wrong.actual.class = Some("on_time".into());
        let mut none = right.clone();
        none.actual.class = None;
        for l in [&right, &wrong, &none] {
            h.record_labelled(l);
        }
        let v: serde_json::Value = serde_json::from_str(&h.to_json()).expect("valid JSON");
        assert_eq!(v["days"][0]["errors"], 2);
        assert_eq!(v["days"][0]["mean_abs_error"], 0.5);
    }

    #[test]
    fn keeps_a_bounded_history_and_ignores_a_replayed_report() {
        let mut h = History::default();
        for day in 0..(MAX_REPORTS as i64 + 50) {
            h.record_report(&sample::report(day, 1));
            h.record_report(&sample::report(day, 1));
        }
        let v: serde_json::Value = serde_json::from_str(&h.to_json()).expect("valid JSON");
        let reports = v["reports"].as_array().unwrap();
        assert_eq!(reports.len(), MAX_REPORTS);
        assert_eq!(
            reports[0]["window_end"],
            START + 50 * DAY_MS,
            "the oldest are dropped first"
        );
    }

    #[test]
    fn model_records_drop_the_bytes_and_a_new_status_replaces_the_old() {
        let mut h = History::default();
        h.record_model(&sample::model(
            1,
            driftline_schemas::events::ModelStatus::Candidate,
            "BOOTSTRAP",
            1.0,
            None,
        ));
        h.record_model(&sample::model(
            1,
            driftline_schemas::events::ModelStatus::Production,
            "BOOTSTRAP",
            1.0,
            None,
        ));
        assert!(h.models[&1].model_bytes.is_empty());
        let v: serde_json::Value = serde_json::from_str(&h.to_json()).expect("valid JSON");
        assert_eq!(v["models"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["models"][0]["status"], "PRODUCTION");
    }

    #[test]
    fn every_rollout_step_is_listed_once_in_the_order_it_happened() {
        use driftline_schemas::events::ModelStatus::*;
        let mut h = History::default();
        let mut at = 0;
        let mut step = |h: &mut History, version, status, share: f64| {
            at += 1;
            let mut m = sample::model(version, status, "DRIFT", 1.0, None);
            m.traffic_share = share;
            m.published_at = at;
            h.record_model(&m);
            m
        };
        step(&mut h, 1, Production, 0.0);
        let canary = step(&mut h, 2, Canary, 0.2);
        step(&mut h, 2, Production, 0.0);
        step(&mut h, 3, Shadow, 0.0);
        step(&mut h, 3, Rejected, 0.0);
        step(&mut h, 2, RolledBack, 0.0);
        h.record_model(&canary);
        let v: serde_json::Value = serde_json::from_str(&h.to_json()).expect("valid JSON");
        let steps: Vec<(i64, &str, Option<f64>)> = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["version"].as_i64().unwrap(),
                    s["status"].as_str().unwrap(),
                    s["traffic_share"].as_f64(),
                )
            })
            .collect();
        assert_eq!(
            steps,
            [
                (1, "PRODUCTION", None),
                (2, "CANARY", Some(0.2)),
                (2, "PRODUCTION", None),
                (3, "SHADOW", None),
                (3, "REJECTED", None),
                (2, "ROLLED_BACK", None),
            ]
        );
    }

    #[test]
    fn json_keeps_odd_names_and_writes_null_for_non_finite_numbers() {
        let mut h = History::default();
        let mut r = sample::report(1, 1);
        r.features[0].name = "a \"quoted\" \\ </script>\n".into();
        r.features[0].psi = Some(f64::INFINITY);
        r.share_drifted = f64::NAN;
        h.record_report(&r);
        let v: serde_json::Value = serde_json::from_str(&h.to_json()).expect("valid JSON");
        assert!(v["reports"][0]["features"]["a \"quoted\" \\ </script>\n"]["psi"].is_null());
        assert!(v["latest"]["share_drifted"].is_null());
        assert!(v["thresholds"]["psi"].is_null());
    }
}
