//! Bad bytes go to the dead-letter topic with the reason; the good messages around them
//! are processed.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{DeadLetter, Event, FeatureValue, PredictionRequest};
use driftline_tests::{
    Checksum, create_topics, payload, produce, producer, read_all, stored_checksum, unique,
};

#[tokio::test(flavor = "multi_thread")]
async fn routes_undecodable_message_to_dlq() -> Result<()> {
    let topic = unique("dlq-input");
    let dlq = unique("dlq");
    create_topics(&[(&topic, 1), (&dlq, 1)]).await?;
    let codec = Codec::single_object();
    let producer = producer()?;

    let good = |i: usize| PredictionRequest {
        request_id: format!("ok-{i}"),
        model: "m".into(),
        event_time: 0,
        features: [("x".to_string(), FeatureValue::Number(1.0))].into(),
    };
    let valid = codec.encode(&good(999))?;
    // Three kinds of bad: not Avro at all, a truncated body, and a known schema that is
    // not this topic's type.
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"{\"json\": \"is not avro\"}".to_vec()),
        ("truncated", valid[..valid.len() - 4].to_vec()),
        (
            "wrong type",
            codec.encode(&driftline_tests::samples::actual())?,
        ),
    ];
    let mut expected = Checksum::default();
    let mut offset = 0i64;
    let mut bad_offsets = Vec::new();
    for (chunk, (label, bytes)) in bad.iter().enumerate() {
        for i in 0..20 {
            let r = good(chunk * 100 + i);
            expected.add(r.request_id.as_bytes());
            produce(&producer, &topic, &r.key(), &codec.encode(&r)?).await?;
            offset += 1;
        }
        produce(&producer, &topic, label, bytes).await?;
        bad_offsets.push(offset);
        offset += 1;
    }

    let state = tempfile::tempdir()?;
    let status = Command::new(env!("CARGO_BIN_EXE_driftline-counter"))
        .args([
            "--topic",
            &topic,
            "--group",
            &unique("dlq-group"),
            "--dlq-topic",
            &dlq,
            "--exit-on-eof",
        ])
        .arg("--state-dir")
        .arg(state.path())
        .env(
            "DRIFTLINE_BOOTSTRAP_SERVERS",
            driftline_tests::kafka().bootstrap_servers,
        )
        .status()?;
    assert!(status.success());

    let counted = stored_checksum(state.path())?;
    assert_eq!(
        counted, expected,
        "every good message applied once, the bad ones not"
    );

    let letters = read_all(&dlq, 3, Duration::from_secs(30))?;
    assert_eq!(letters.len(), 3, "one dead letter per bad message, no more");
    let letters: Vec<DeadLetter> = letters
        .iter()
        .map(|m| codec.decode(payload(m)))
        .collect::<Result<_, _>>()?;
    for ((letter, (label, bytes)), offset) in letters.iter().zip(&bad).zip(&bad_offsets) {
        assert_eq!(letter.source_topic, topic);
        assert_eq!(letter.source_offset, *offset, "{label}");
        assert_eq!(
            letter.payload.as_deref(),
            Some(bytes.as_slice()),
            "{label}: raw bytes kept"
        );
        assert_eq!(letter.key.as_deref(), Some(label.as_bytes()));
        assert_eq!(letter.error_kind, "decode");
    }
    assert!(
        letters[0].error.contains("not Avro single-object encoding"),
        "{}",
        letters[0].error
    );
    assert!(!letters[1].error.is_empty());
    assert!(
        letters[2]
            .error
            .contains("cannot be read as io.driftline.PredictionRequest"),
        "{}",
        letters[2].error
    );
    Ok(())
}
