//! A client nobody here wrote (Python confluent-kafka + fastavro, from the .avsc alone)
//! reads what Rust produced and produces what Rust reads.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Event, FeatureValue, PredictionRequest};
use driftline_tests::{
    create_topics, payload, produce, producer, python, read_all, samples, unique,
};

#[tokio::test(flavor = "multi_thread")]
async fn python_client_reads_and_writes_our_avro_from_the_avsc_alone() -> Result<()> {
    let (to_py, from_py) = (unique("interop-to-py"), unique("interop-from-py"));
    create_topics(&[(&to_py, 1), (&from_py, 1)]).await?;
    let codec = Codec::single_object();
    let ours = samples::request();
    produce(&producer()?, &to_py, &ours.key(), &codec.encode(&ours)?).await?;

    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(python()?)
        .arg(repo.join("tests/interop/interop.py"))
        .args(["--bootstrap", &driftline_tests::kafka().bootstrap_servers])
        .arg("--schema")
        .arg(repo.join("schemas/driftline.requests.avsc"))
        .args(["--read-topic", &to_py, "--write-topic", &from_py])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "interop.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // What Python decoded is what we sent.
    let line = stdout.lines().next().context("no record printed")?;
    let seen: serde_json::Value = serde_json::from_str(line)?;
    assert_eq!(seen["request_id"], ours.request_id.as_str());
    assert_eq!(seen["model"], ours.model.as_str());
    assert_eq!(seen["event_time"], ours.event_time);
    assert_eq!(seen["features"]["carrier"], "UA");
    assert_eq!(seen["features"]["dep_delay"], -3.5);
    assert!(seen["features"]["wind_gust"].is_null(), "{line}");
    assert_eq!(seen["features"].as_object().map(|o| o.len()), Some(3));

    // What Python wrote, we decode.
    let messages = read_all(&from_py, 1, Duration::from_secs(30))?;
    let theirs: PredictionRequest = codec.decode(payload(&messages[0]))?;
    let expected = PredictionRequest {
        request_id: "from-python-1".into(),
        model: "flights".into(),
        event_time: 1_357_016_400_000,
        features: [
            ("dep_delay".to_string(), FeatureValue::Number(12.5)),
            ("carrier".to_string(), FeatureValue::Category("B6".into())),
            ("wind_gust".to_string(), FeatureValue::Missing),
        ]
        .into(),
    };
    assert_eq!(theirs, expected);
    Ok(())
}
