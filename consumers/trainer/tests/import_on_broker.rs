//! Bring your own model, end to end on the real broker: a scikit-learn pipeline (one-hot,
//! scaling, GradientBoostingRegressor) and a LightGBM classifier, exported to ONNX in
//! Python (tests/fixtures/onnx/make_fixtures.py), are imported with `driftline models
//! import`; the predictor serves them, and for every one of 10,000 rows its answers over
//! HTTP and over Kafka are onnxruntime's (within 1e-5 of max(|value|, 1): see
//! consumers/lib/onnx/tests/onnxruntime_parity.rs for why not below 1).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use driftline_dataset::rows::RowMapper;
use driftline_predictor::service::PredictorArgs;
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{
    Event, FeatureValue, Features, ModelStatus, Prediction, PredictionLogged, PredictionRequest,
    PredictionSource,
};
use driftline_schemas::spec::FeatureSpec;
use driftline_tests::{create_topics, free_port, http, kafka, producer, unique};
use driftline_trainer::cli::{ModelsArgs, ModelsCommand};
use rdkafka::producer::FutureRecord;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/onnx")
        .join(name)
}

/// One model of the fixtures: its spec and what onnxruntime answered for each row.
struct Case {
    spec: PathBuf,
    model: String,
    rows: Vec<(String, i64, Features, Expected)>,
}

#[derive(Debug, Clone)]
enum Expected {
    Value(f64),
    Class(String, f64),
}

impl Case {
    fn load(spec_file: &str) -> Result<Self> {
        let spec_path = fixture(spec_file);
        let spec = FeatureSpec::load(&spec_path)?;
        let mut reader = driftline_dataset::csv_reader(&fixture("rows.csv.gz"))?;
        let header = reader.headers()?.clone();
        let mapper = RowMapper::new(&spec, &header).map_err(|m| anyhow::anyhow!("{m:?}"))?;
        let col = |name: &str| header.iter().position(|h| h == name).context("column");
        let (gbr, label, p1) = (col("gbr")?, col("lgbm_label")?, col("lgbm_p1")?);
        let mut rows = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let record = record?;
            let t = mapper.event_time(&record).map_err(anyhow::Error::msg)?;
            let mapped = mapper.map(&record, t, 0).map_err(anyhow::Error::msg)?;
            let expected = match spec.target.kind {
                driftline_schemas::spec::TargetKind::Regression => {
                    Expected::Value(record[gbr].parse()?)
                }
                driftline_schemas::spec::TargetKind::Classification => {
                    Expected::Class(record[label].to_string(), record[p1].parse()?)
                }
            };
            let id = format!("{}-{i}", spec.model.name);
            rows.push((id, t, mapped.request.features, expected));
        }
        ensure!(rows.len() == 10_000);
        Ok(Self {
            spec: spec_path,
            model: spec.model.name.clone(),
            rows,
        })
    }
}

fn close(ours: f64, theirs: f64) -> bool {
    (ours - theirs).abs() <= 1e-5 * theirs.abs().max(1.0)
}

fn check(p: &Prediction, expected: &Expected, how: &str) -> Result<()> {
    match expected {
        Expected::Value(y) => {
            let v = p.value.context("no value")?;
            ensure!(close(v, *y), "{how}: {v} vs onnxruntime {y}");
        }
        Expected::Class(label, p1) => {
            ensure!(
                p.class.as_deref() == Some(label.as_str()),
                "{how}: {p:?} vs {label}"
            );
            let ours = p.probabilities.get("1").copied().unwrap_or(f64::NAN);
            ensure!(close(ours, *p1), "{how}: p(1) {ours} vs onnxruntime {p1}");
        }
    }
    Ok(())
}

fn json_features(f: &Features) -> Value {
    f.iter()
        .map(|(k, v)| {
            let v = match v {
                FeatureValue::Number(x) => json!(x),
                FeatureValue::Category(c) => json!(c),
                FeatureValue::Missing => Value::Null,
            };
            (k.clone(), v)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn prediction_of(v: &Value) -> Prediction {
    Prediction {
        value: v["value"].as_f64(),
        class: v["class"].as_str().map(str::to_string),
        probabilities: v["probabilities"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, p)| Some((k.clone(), p.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn imported_onnx_models_answer_as_onnxruntime_over_http_and_kafka_on_every_row() -> Result<()>
{
    let cases = [
        Case::load("flights-gbr.toml")?,
        Case::load("flights-lgbm.toml")?,
    ];
    let (requests, predictions, models, dlq) = (
        unique("onnx-requests"),
        unique("onnx-predictions"),
        unique("onnx-models"),
        unique("onnx-dlq"),
    );
    create_topics(&[(&requests, 2), (&predictions, 2), (&models, 1), (&dlq, 1)]).await?;
    let models_args = |command| ModelsArgs {
        kafka: kafka(),
        models_topic: models.clone(),
        trust: Default::default(),
        signing: Default::default(),
        command,
    };
    let import = |c: &Case| ModelsCommand::Import {
        spec: c.spec.clone(),
        onnx: fixture(&format!("{}.onnx", c.model)),
        data: Some(fixture("rows.csv.gz")),
        canary: None,
        shadow: false,
    };
    for c in &cases {
        driftline_trainer::cli::execute(&models_args(import(c))).await?;
    }
    // The same file again is a repeat, not a new version.
    let again = driftline_trainer::cli::execute(&models_args(import(&cases[0]))).await;
    ensure!(
        again.is_err_and(|e| e.to_string().contains("already this file")),
        "a second import of one file is refused"
    );
    let reg = driftline_trainer::cli::load_registry(&kafka(), &models, &Default::default()).await?;
    let gbr = reg.production("flights-gbr").context("gbr imported")?;
    assert_eq!((gbr.version, gbr.algorithm.as_str()), (1, "onnx"));
    assert_eq!(gbr.status, ModelStatus::Production);
    assert!(gbr.trigger.starts_with("import:"));
    // Scored on the data file: the pipeline's MAE on these rows, and a profile per feature
    // and of its predictions, for the monitor.
    assert!(gbr.metrics["mae"] > 1.0 && gbr.metrics["rows"] == 10_000.0);
    assert_eq!(gbr.reference_profile.len(), 6);
    let lgbm = reg.production("flights-lgbm").context("lgbm imported")?;
    assert!(lgbm.metrics["accuracy"] > 0.5, "{:?}", lgbm.metrics);

    let dir = tempfile::tempdir()?;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let shutdown = CancellationToken::new();
    let predictor = tokio::spawn(driftline_predictor::service::run(
        PredictorArgs {
            kafka: kafka(),
            specs: cases.iter().map(|c| c.spec.clone()).collect(),
            http_addr: addr,
            state_dir: dir.path().join("predictor"),
            group: unique("predictor"),
            requests_topic: requests.clone(),
            predictions_topic: predictions.clone(),
            models_topic: models.clone(),
            max_swap_wait: None,
            progress_topic: driftline_schemas::topics::PROGRESS.into(),
            trust: Default::default(),
            dlq_topic: dlq.clone(),
            body_limit: 1 << 20,
            concurrency: 16,
            timeout_ms: 30_000,
            max_rows: 1_000,
        },
        shutdown.clone(),
        Default::default(),
    ));
    let mut ready = false;
    for _ in 0..600 {
        if let Ok((200, _)) = http(addr, "GET", "/v2/health/ready", None).await {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(ready, "the predictor never became ready");

    // HTTP: every row, 500 to a request.
    for c in &cases {
        for chunk in c.rows.chunks(500) {
            let instances: Vec<Value> = chunk.iter().map(|r| json_features(&r.2)).collect();
            let body = json!({ "model": c.model, "instances": instances }).to_string();
            let (status, text) = http(addr, "POST", "/predict", Some(body.as_bytes())).await?;
            ensure!(status == 200, "{status}: {text}");
            let out: Value = serde_json::from_str(&text)?;
            let answers = out["predictions"].as_array().context("predictions")?;
            ensure!(answers.len() == chunk.len());
            for (row, answer) in chunk.iter().zip(answers) {
                check(&prediction_of(answer), &row.3, &format!("HTTP {}", row.0))?;
            }
        }
    }

    // Kafka: every row as a request; each prediction as logged.
    let codec = Codec::single_object();
    let p = producer()?;
    let mut expected = BTreeMap::new();
    for c in &cases {
        for (id, t, features, e) in &c.rows {
            let req = PredictionRequest {
                request_id: id.clone(),
                model: c.model.clone(),
                event_time: *t,
                features: features.clone(),
            };
            let payload = codec.encode(&req)?;
            let key = req.key();
            loop {
                match p.send_result(FutureRecord::to(&requests).key(&key).payload(&payload)) {
                    Ok(_) => break,
                    Err((e, _)) if e.to_string().contains("full") => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => bail!("produce: {e}"),
                }
            }
            expected.insert(id.clone(), e.clone());
        }
    }
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(30))?;
    // The HTTP answers were logged too, under ids of their own: only the Kafka path counts.
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let answered = loop {
        let mut answered = BTreeMap::new();
        driftline_tests::read_committed(&kafka(), &predictions, |m| {
            use rdkafka::Message;
            if let Ok(l) = codec.decode::<PredictionLogged>(m.payload().unwrap_or_default())
                && l.source == PredictionSource::Kafka
            {
                answered.insert(l.request_id, l.prediction);
            }
        })?;
        if answered.len() >= expected.len() || std::time::Instant::now() > deadline {
            break answered;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    ensure!(
        answered.len() == expected.len(),
        "{} of {} requests predicted",
        answered.len(),
        expected.len()
    );
    for (id, e) in &expected {
        check(&answered[id], e, &format!("Kafka {id}"))?;
    }

    shutdown.cancel();
    predictor.await??;
    Ok(())
}
