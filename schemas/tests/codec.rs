//! The codec: round trips, framing, schema evolution, and garbage that must not panic.

use std::collections::HashMap;
use std::io::Cursor;

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use driftline_schemas::Error;
use driftline_schemas::codec::{Codec, WireFormat, fingerprint, read_datum, write_datum};
use driftline_schemas::events::*;
use proptest::prelude::*;

fn request() -> PredictionRequest {
    PredictionRequest {
        request_id: "r-1".into(),
        model: "flights".into(),
        event_time: 1_357_016_400_000,
        features: [
            ("dep_delay".to_string(), FeatureValue::Number(-3.5)),
            ("carrier".to_string(), FeatureValue::Category("UA".into())),
            ("wind_gust".to_string(), FeatureValue::Missing),
        ]
        .into(),
    }
}

#[test]
fn single_object_header_carries_the_schema_fingerprint() {
    let codec = Codec::single_object();
    let bytes = codec.encode(&request()).unwrap();
    assert_eq!(&bytes[..2], &[0xC3, 0x01]);
    let fp = u64::from_le_bytes(bytes[2..10].try_into().unwrap());
    assert_eq!(fp, fingerprint(PredictionRequest::schema()));
    // The body is plain Avro binary: any library decodes it with the .avsc alone.
    let value = read_datum(
        PredictionRequest::schema(),
        None,
        &mut Cursor::new(&bytes[10..]),
    )
    .unwrap();
    assert_eq!(PredictionRequest::from_value(value).unwrap(), request());
}

#[test]
fn fingerprints_match_an_independent_implementation() {
    // From fastavro 1.x: fingerprint(to_parsing_canonical_form(avsc), "CRC-64-AVRO").
    assert_eq!(
        fingerprint(PredictionRequest::schema()),
        0xb21f_109f_f636_04ed
    );
    assert_eq!(
        driftline_schemas::codec::canonical_form(PredictionRequest::schema()),
        r#"{"name":"io.driftline.PredictionRequest","type":"record","fields":[{"name":"request_id","type":"string"},{"name":"model","type":"string"},{"name":"event_time","type":"long"},{"name":"features","type":{"type":"map","values":["null","double","string"]}}]}"#
    );
}

#[test]
fn every_committed_avsc_parses_and_matches_its_topic() {
    for (topic, schema) in all_schemas() {
        let path = format!("{}/{topic}.avsc", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(&Schema::parse_str(&text).unwrap(), schema, "{path}");
    }
}

#[test]
fn confluent_format_round_trips_with_configured_ids() {
    let ids = HashMap::from([("driftline.requests".to_string(), 42u32)]);
    let codec = Codec::confluent(&ids).unwrap();
    assert_eq!(codec.format(), WireFormat::Confluent);
    let bytes = codec.encode(&request()).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, 42]);
    assert_eq!(
        codec.decode::<PredictionRequest>(&bytes).unwrap(),
        request()
    );
    // An event whose topic has no id configured is an error, not a guess.
    let actual = Actual {
        request_id: "r".into(),
        model: "m".into(),
        event_time: 0,
        value: Some(1.0),
        class: None,
        observed_at: 0,
    };
    assert!(matches!(codec.encode(&actual), Err(Error::NoSchemaId(_))));
}

#[test]
fn decoding_another_topics_event_is_a_type_error() {
    let codec = Codec::single_object();
    let actual = Actual {
        request_id: "r".into(),
        model: "m".into(),
        event_time: 0,
        value: None,
        class: Some("late".into()),
        observed_at: 1,
    };
    let bytes = codec.encode(&actual).unwrap();
    assert!(matches!(
        codec.decode::<PredictionRequest>(&bytes),
        Err(Error::WrongType { .. })
    ));
}

#[test]
fn trailing_bytes_are_rejected() {
    let codec = Codec::single_object();
    let mut bytes = codec.encode(&request()).unwrap();
    bytes.push(0);
    assert!(matches!(
        codec.decode::<PredictionRequest>(&bytes),
        Err(Error::Trailing(1))
    ));
}

fn old_predictions_schema() -> Schema {
    Schema::parse_str(include_str!("fixtures/driftline.predictions.v0.avsc")).unwrap()
}

#[test]
fn reads_bytes_written_with_an_older_schema() {
    let old = old_predictions_schema();
    // Bytes as an older producer wrote them.
    let value = Value::Record(vec![
        ("request_id".into(), Value::String("r-7".into())),
        ("model".into(), Value::String("flights".into())),
        ("model_version".into(), Value::Long(2)),
        ("event_time".into(), Value::TimestampMillis(5)),
        (
            "features".into(),
            Value::Map(HashMap::from([(
                "x".to_string(),
                Value::Union(1, Box::new(Value::Double(1.5))),
            )])),
        ),
        (
            "prediction".into(),
            Value::Record(vec![
                (
                    "value".into(),
                    Value::Union(1, Box::new(Value::Double(9.0))),
                ),
                ("class".into(), Value::Union(0, Box::new(Value::Null))),
            ]),
        ),
        ("served_at".into(), Value::TimestampMillis(6)),
        ("latency_us".into(), Value::Long(40)),
    ]);
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&fingerprint(&old).to_le_bytes());
    bytes.extend(write_datum(&old, value).unwrap());

    // Unknown writer: a clear error, not a guess.
    let mut codec = Codec::single_object();
    assert!(matches!(
        codec.decode::<PredictionLogged>(&bytes),
        Err(Error::UnknownFingerprint(_))
    ));

    codec.register_writer(old);
    let logged: PredictionLogged = codec.decode(&bytes).unwrap();
    assert_eq!(logged.request_id, "r-7");
    assert_eq!(logged.prediction.value, Some(9.0));
    // Fields the old writer did not have take the new schema's defaults.
    assert_eq!(logged.source, PredictionSource::Kafka);
    assert!(logged.prediction.probabilities.is_empty());
}

fn model_published() -> ModelPublished {
    ModelPublished {
        model: "flights".into(),
        version: 2,
        algorithm: "linear".into(),
        hyper_parameters: Default::default(),
        metrics: [("mae".to_string(), 11.5)].into(),
        incumbent_metrics: [("mae".to_string(), 14.0)].into(),
        parent_version: Some(1),
        trigger: "drift:flights-v1-800".into(),
        training_window: TrainingWindow {
            start_time: 10,
            end_time: 20,
            train_rows: 80,
            holdout_rows: 20,
            end_offsets: [
                ("driftline.predictions/0".to_string(), 101),
                ("driftline.actuals/0".to_string(), 99),
            ]
            .into(),
        },
        reference_profile: vec![],
        model_format: "x".into(),
        model_bytes: vec![1, 2, 3],
        status: ModelStatus::Production,
        published_at: 30,
        traffic_share: 0.0,
        error_sub_windows: Vec::new(),
        feature_importance: Default::default(),
        multivariate: None,
        performance_estimator: None,
        error_estimator: None,
        effective_from: None,
    }
}

/// A canary record read by a v2 consumer (before canaries) is a candidate, which serves
/// nothing; a v2 record read today has no traffic share.
#[test]
fn canary_records_are_candidates_to_consumers_from_before_canaries() {
    let v2 = Schema::parse_str(include_str!("../history/driftline.models.v2.avsc")).unwrap();
    let canary = ModelPublished {
        status: ModelStatus::Canary,
        traffic_share: 0.2,
        ..model_published()
    };
    let now = Codec::single_object().encode(&canary).unwrap();
    let old = read_datum(
        ModelPublished::schema(),
        Some(&v2),
        &mut Cursor::new(&now[10..]),
    )
    .unwrap();
    let Value::Record(fields) = old else {
        panic!("not a record: {old:?}")
    };
    let status = fields.iter().find(|(n, _)| n == "status").map(|(_, v)| v);
    assert_eq!(status, Some(&Value::Enum(0, "CANDIDATE".into())));
    assert!(fields.iter().all(|(n, _)| n != "traffic_share"));

    let mut value = model_published().to_value();
    without_v4_fields(&mut value);
    if let Value::Record(fields) = &mut value {
        fields.retain(|(n, _)| n != "traffic_share");
    }
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&fingerprint(&v2).to_le_bytes());
    bytes.extend(write_datum(&v2, value).unwrap());
    let read: ModelPublished = Codec::single_object().decode(&bytes).unwrap();
    assert_eq!(read, model_published());
}

/// A models record as writers before version 4 wrote it: no sub-windows, no importance
/// (nor the later multivariate reference, performance estimators and effective time).
fn without_v4_fields(value: &mut Value) {
    let Value::Record(fields) = value else {
        return;
    };
    fields.retain(|(n, _)| {
        ![
            "error_sub_windows",
            "feature_importance",
            "multivariate",
            "performance_estimator",
            "error_estimator",
            "effective_from",
        ]
        .contains(&n.as_str())
    });
    for (name, field) in fields.iter_mut() {
        if let (true, Value::Array(profiles)) = (name == "reference_profile", field) {
            for p in profiles {
                if let Value::Record(p) = p {
                    p.retain(|(n, _)| n != "sub_windows");
                }
            }
        }
    }
}

fn models_v1_schema() -> Schema {
    Schema::parse_str(include_str!("../history/driftline.models.v1.avsc")).unwrap()
}

#[test]
fn reads_model_records_written_before_training_window_had_offsets() {
    let v1 = models_v1_schema();
    // The record as a v1 producer wrote it: the same fields, no `end_offsets`.
    let mut value = model_published().to_value();
    without_v4_fields(&mut value);
    if let Value::Record(fields) = &mut value {
        // Nor the fields v2 and later added.
        fields.retain(|(n, _)| n != "traffic_share");
        for (name, field) in fields.iter_mut() {
            if let (true, Value::Record(window)) = (name == "training_window", field) {
                window.retain(|(n, _)| n != "end_offsets");
            }
        }
    }
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&fingerprint(&v1).to_le_bytes());
    bytes.extend(write_datum(&v1, value).unwrap());

    // No registration needed: schemas/history is built into every codec.
    let read: ModelPublished = Codec::single_object().decode(&bytes).unwrap();
    let mut expected = model_published();
    expected.training_window.end_offsets.clear();
    assert_eq!(read, expected);

    // And a v1 reader reads today's bytes, dropping the new field.
    let now = Codec::single_object().encode(&model_published()).unwrap();
    let old = read_datum(
        ModelPublished::schema(),
        Some(&v1),
        &mut Cursor::new(&now[10..]),
    )
    .unwrap();
    let Value::Record(fields) = old else {
        panic!("not a record: {old:?}")
    };
    let window = fields
        .iter()
        .find(|(n, _)| n == "training_window")
        .map(|(_, v)| v.clone());
    let Some(Value::Record(window)) = window else {
        panic!("no training window")
    };
    assert!(window.iter().all(|(n, _)| n != "end_offsets"));
    assert!(window.contains(&("train_rows".to_string(), Value::Long(80))));
}

#[test]
fn model_records_round_trip_with_their_offsets() {
    let codec = Codec::single_object();
    let m = model_published();
    assert_eq!(
        codec
            .decode::<ModelPublished>(&codec.encode(&m).unwrap())
            .unwrap(),
        m
    );
}

#[test]
fn current_schemas_are_fully_compatible_with_their_history() {
    let old = old_predictions_schema();
    SchemaCompatibility::mutual_read(&old, PredictionLogged::schema()).unwrap();
    let history = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("history");
    for entry in std::fs::read_dir(history).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "avsc") {
            let old = Schema::parse_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let topic = path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .split(".v")
                .next()
                .unwrap()
                .to_string();
            let (_, current) = all_schemas()
                .into_iter()
                .find(|(t, _)| *t == topic)
                .unwrap();
            SchemaCompatibility::mutual_read(&old, current)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // build.rs embedded it: the codec knows it as a writer without being told.
            let mut header = vec![0xC3, 0x01];
            header.extend_from_slice(&fingerprint(&old).to_le_bytes());
            let err = Codec::single_object()
                .decode::<ModelPublished>(&header)
                .unwrap_err();
            assert!(
                !matches!(err, Error::UnknownFingerprint(_)),
                "{} is not a known writer",
                path.display()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let codec = Codec::single_object();
        let _ = codec.decode::<PredictionRequest>(&bytes);
        let _ = codec.decode::<ModelPublished>(&bytes);
        let _ = codec.decode::<DriftReport>(&bytes);
    }

    #[test]
    fn a_valid_header_with_a_garbage_body_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let codec = Codec::single_object();
        for (_, schema) in all_schemas() {
            let mut bytes = vec![0xC3, 0x01];
            bytes.extend_from_slice(&fingerprint(schema).to_le_bytes());
            bytes.extend_from_slice(&body);
            let _ = codec.decode::<PredictionRequest>(&bytes);
            let _ = codec.decode::<PredictionLogged>(&bytes);
            let _ = codec.decode::<Actual>(&bytes);
            let _ = codec.decode::<DriftReport>(&bytes);
            let _ = codec.decode::<RetrainRequested>(&bytes);
            let _ = codec.decode::<ModelPublished>(&bytes);
            let _ = codec.decode::<DeadLetter>(&bytes);
        }
    }

    #[test]
    fn a_corrupted_valid_message_never_panics(pos in 10usize..64, byte in any::<u8>(), cut in 10usize..64) {
        let codec = Codec::single_object();
        let mut bytes = codec.encode(&request()).unwrap();
        let pos = pos % bytes.len();
        bytes[pos] = byte;
        let _ = codec.decode::<PredictionRequest>(&bytes);
        bytes.truncate(cut.min(bytes.len()));
        let _ = codec.decode::<PredictionRequest>(&bytes);
    }

    #[test]
    fn requests_round_trip(
        id in "[a-z0-9-]{1,20}",
        t in any::<i64>(),
        xs in proptest::collection::btree_map("[a-z_]{1,8}", prop_oneof![
            Just(FeatureValue::Missing),
            (-1e12f64..1e12).prop_map(FeatureValue::Number),
            "[A-Za-z0-9]{0,6}".prop_map(FeatureValue::Category),
        ], 0..12),
    ) {
        let codec = Codec::single_object();
        let r = PredictionRequest { request_id: id, model: "m".into(), event_time: t, features: xs };
        prop_assert_eq!(codec.decode::<PredictionRequest>(&codec.encode(&r).unwrap()).unwrap(), r);
    }
}

// The busiest events are written and read without apache-avro's `Value` (see
// `driftline_schemas::binary`); apache-avro is the reference they must agree with.

/// The body as apache-avro writes it from the event's `Value`.
fn body_via_value<E: Event>(event: &E) -> Vec<u8> {
    write_datum(E::schema(), event.to_value()).unwrap()
}

/// What apache-avro makes of a body written with the current schema.
fn read_via_value<E: Event>(body: &[u8]) -> Result<E, String> {
    let mut cursor = Cursor::new(body);
    let value = read_datum(E::schema(), None, &mut cursor).map_err(|e| e.to_string())?;
    if cursor.position() as usize != body.len() {
        return Err("trailing bytes".into());
    }
    E::from_value(value).map_err(|e| e.to_string())
}

/// The same body read by the codec (the direct path).
fn read_direct<E: Event>(body: &[u8]) -> Result<E, String> {
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&E::fingerprint().to_le_bytes());
    bytes.extend_from_slice(body);
    Codec::single_object()
        .decode::<E>(&bytes)
        .map_err(|e| e.to_string())
}

/// Encoded by the codec and by apache-avro, each read back by the other. (Not compared
/// byte for byte: apache-avro writes a map's entries in its HashMap's order.)
fn agrees_with_apache_avro<E: Event + PartialEq + std::fmt::Debug>(event: &E) {
    let bytes = Codec::single_object().encode(event).unwrap();
    let (direct, reference) = (&bytes[10..], body_via_value(event));
    assert_eq!(direct.len(), reference.len());
    assert_eq!(&read_via_value::<E>(direct).unwrap(), event);
    assert_eq!(&read_direct::<E>(&reference).unwrap(), event);
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn features() -> impl Strategy<Value = Features> {
    proptest::collection::btree_map(
        text(),
        prop_oneof![
            Just(FeatureValue::Missing),
            any::<f64>()
                .prop_filter("NaN is not equal to itself", |x| !x.is_nan())
                .prop_map(FeatureValue::Number),
            text().prop_map(FeatureValue::Category),
        ],
        0..20,
    )
}

fn prediction() -> impl Strategy<Value = Prediction> {
    (
        proptest::option::of(-1e300f64..1e300),
        proptest::option::of(text()),
        proptest::collection::btree_map(text(), 0.0f64..1.0, 0..5),
    )
        .prop_map(|(value, class, probabilities)| Prediction {
            value,
            class,
            probabilities,
        })
}

fn prediction_logged() -> impl Strategy<Value = PredictionLogged> {
    (
        (text(), text(), any::<i64>(), any::<i64>(), features()),
        prediction(),
        (any::<i64>(), any::<i64>(), any::<bool>()),
        proptest::option::of((any::<i64>(), prediction())),
    )
        .prop_map(
            |(
                (request_id, model, model_version, event_time, features),
                prediction,
                (served_at, latency_us, http),
                shadow,
            )| {
                PredictionLogged {
                    request_id,
                    model,
                    model_version,
                    event_time,
                    features,
                    prediction,
                    served_at,
                    latency_us,
                    source: if http {
                        PredictionSource::Http
                    } else {
                        PredictionSource::Kafka
                    },
                    shadow: shadow.map(|(model_version, prediction)| ShadowPrediction {
                        model_version,
                        prediction,
                    }),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn requests_are_written_and_read_as_apache_avro_does(
        request_id in text(), model in text(), event_time in any::<i64>(), features in features(),
    ) {
        agrees_with_apache_avro(&PredictionRequest { request_id, model, event_time, features });
    }

    #[test]
    fn predictions_are_written_and_read_as_apache_avro_does(p in prediction_logged()) {
        agrees_with_apache_avro(&p);
    }

    #[test]
    fn actuals_are_written_and_read_as_apache_avro_does(
        request_id in text(), model in text(), event_time in any::<i64>(),
        value in proptest::option::of(any::<f64>().prop_filter("NaN", |x| !x.is_nan())),
        class in proptest::option::of(text()), observed_at in any::<i64>(),
    ) {
        agrees_with_apache_avro(&Actual { request_id, model, event_time, value, class, observed_at });
    }

    #[test]
    fn labelled_rows_are_written_and_read_as_apache_avro_does(
        prediction in prediction_logged(),
        value in proptest::option::of(any::<f64>().prop_filter("NaN", |x| !x.is_nan())),
        class in proptest::option::of(text()), observed_at in any::<i64>(),
        at in (any::<i32>(), any::<i64>(), any::<i32>(), any::<i64>()), topic in text(),
    ) {
        let actual = Actual {
            request_id: prediction.request_id.clone(),
            model: prediction.model.clone(),
            event_time: prediction.event_time,
            value,
            class,
            observed_at,
        };
        agrees_with_apache_avro(&Labelled {
            prediction,
            actual,
            prediction_read_at: SourcePosition { topic: topic.clone(), partition: at.0, offset: at.1 },
            actual_read_at: SourcePosition { topic, partition: at.2, offset: at.3 },
        });
    }

    /// Damaged bodies: the direct reader refuses what apache-avro refuses and reads what
    /// it reads, the same way. Compared by their debug form: a damaged double may read as
    /// NaN, which never equals itself.
    #[test]
    fn a_damaged_body_is_judged_as_apache_avro_judges_it(
        p in prediction_logged(), edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4), cut in any::<usize>(),
    ) {
        let request = PredictionRequest {
            request_id: p.request_id.clone(), model: p.model.clone(), event_time: p.event_time, features: p.features.clone(),
        };
        let actual = Actual {
            request_id: p.request_id.clone(), model: p.model.clone(), event_time: p.event_time,
            value: p.prediction.value, class: p.prediction.class.clone(), observed_at: p.served_at,
        };
        for mut body in [body_via_value(&request), body_via_value(&p), body_via_value(&actual)] {
            for (pos, byte) in &edits {
                let at = pos % body.len();
                body[at] = *byte;
            }
            for body in [&body[..], &body[..cut % (body.len() + 1)]] {
                let (d, v) = (read_direct::<PredictionRequest>(body), read_via_value::<PredictionRequest>(body));
                prop_assert_eq!(format!("{:?}", d.as_ref().ok()), format!("{:?}", v.as_ref().ok()), "{:?} {:?} {:?}", body, d.as_ref().err(), v.as_ref().err());
                let (d, v) = (read_direct::<PredictionLogged>(body), read_via_value::<PredictionLogged>(body));
                prop_assert_eq!(format!("{:?}", d.as_ref().ok()), format!("{:?}", v.as_ref().ok()), "{:?} {:?} {:?}", body, d.as_ref().err(), v.as_ref().err());
                let (d, v) = (read_direct::<Actual>(body), read_via_value::<Actual>(body));
                prop_assert_eq!(format!("{:?}", d.as_ref().ok()), format!("{:?}", v.as_ref().ok()), "{:?} {:?} {:?}", body, d.as_ref().err(), v.as_ref().err());
            }
        }
    }
}

#[test]
fn a_map_in_blocks_with_sizes_reads_as_apache_avro_reads_it() {
    // Writers may split a map into blocks and give a block's byte size (negative count).
    let mut body = Vec::new();
    let long = |out: &mut Vec<u8>, n: i64| {
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    };
    for s in ["r-1", "m"] {
        long(&mut body, s.len() as i64);
        body.extend_from_slice(s.as_bytes());
    }
    long(&mut body, 7);
    long(&mut body, -1); // one entry, then its size
    long(&mut body, 3);
    long(&mut body, 2);
    body.extend_from_slice(b"ab");
    long(&mut body, 0);
    long(&mut body, 1); // one more entry, plain
    long(&mut body, 1);
    body.extend_from_slice(b"c");
    long(&mut body, 1);
    body.extend_from_slice(&2.5f64.to_le_bytes());
    long(&mut body, 0);
    let direct = read_direct::<PredictionRequest>(&body).unwrap();
    assert_eq!(direct, read_via_value::<PredictionRequest>(&body).unwrap());
    assert_eq!(direct.features.len(), 2);
}

#[test]
fn a_key_written_twice_keeps_its_last_value_as_in_apache_avro() {
    let mut first = request();
    first.features = [("a".to_string(), FeatureValue::Number(1.0))].into();
    let mut body = body_via_value(&first);
    // Splice a second block with the same key before the map's end marker.
    body.pop();
    body.extend_from_slice(&[2, 2, b'a', 2, 0, 0, 0, 0, 0, 0, 0x00, 0x40, 0]);
    let direct = read_direct::<PredictionRequest>(&body).unwrap();
    assert_eq!(direct, read_via_value::<PredictionRequest>(&body).unwrap());
    assert_eq!(direct.features["a"], FeatureValue::Number(2.0));
}

/// Found by `infra/fuzz.sh` (avro_decode, kept in its corpus): 17 bytes of a drift report
/// whose map claims a huge block count. apache-avro 0.21 reserved room for every claimed
/// entry first (a 5.4 GB allocation, an abort under any memory limit: a consumer would die
/// on the message at every restart); 0.22 bounds a collection by the codec's allocation
/// limit, and the message is an error like any other.
#[test]
fn a_message_claiming_a_huge_map_is_an_error_not_an_allocation() {
    let body = [
        0, 4, 0, 0, 0, 2, 0, 0, 0, 0xb1, 0xb1, 0xb1, 0xb1, 0, 0, 2, 0,
    ];
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend(DriftReport::fingerprint().to_le_bytes());
    bytes.extend(body);
    assert!(
        Codec::single_object()
            .decode::<DriftReport>(&bytes)
            .is_err()
    );
}

#[test]
fn a_version_s_effective_time_survives_the_wire() {
    let m = ModelPublished {
        effective_from: Some(1_364_774_400_000),
        ..model_published()
    };
    let codec = Codec::single_object();
    let read: ModelPublished = codec.decode(&codec.encode(&m).unwrap()).unwrap();
    assert_eq!(read, m);
}
