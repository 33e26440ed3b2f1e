//! The predictor's work per message, without Kafka: decode a request, validate it,
//! predict, encode the logged prediction; the codec's direct Avro beside apache-avro's
//! `Value` path for the same bytes. Best of five rounds (the machine is shared).
//!
//! ```sh
//! cargo run -p driftline-predictor --example hot_path
//! ```
//! Env: BENCH_MESSAGES (100000).

use std::io::Cursor;
use std::path::PathBuf;
use std::time::Instant;

use driftline_schemas::codec::Codec;
use driftline_schemas::events::{
    Event, FeatureValue, PredictionLogged, PredictionRequest, PredictionSource,
};
use driftline_schemas::spec::{FeatureSpec, Kind};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The best of five rounds of `f` over `n` items, in µs per item.
fn best(n: usize, mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> Result<(), BoxError> {
    let n: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let spec_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/flights.toml");
    let spec = FeatureSpec::load(&spec_path)?;
    // The same synthetic rows and model as kafka_bench.
    let rows: Vec<driftline_model::LabelledRow> = (0..500)
        .map(|i| driftline_model::LabelledRow {
            event_time: i64::from(i),
            features: spec
                .features
                .iter()
                .zip(3..)
                .map(|(f, k)| {
                    let v = match f.kind {
                        Kind::Numeric => FeatureValue::Number(f64::from(i * k % 37)),
                        Kind::Categorical => FeatureValue::Category(format!("c{}", i * k % 5)),
                    };
                    (f.name.clone(), v)
                })
                .collect(),
            target: driftline_model::Target::Value(f64::from(i % 11)),
        })
        .collect();
    let trained = driftline_model::fit(&spec, &rows)?;
    let codec = Codec::single_object();
    let requests: Vec<PredictionRequest> = rows
        .iter()
        .cycle()
        .take(n)
        .enumerate()
        .map(|(i, r)| PredictionRequest {
            request_id: format!("b-{i}"),
            model: spec.model.name.clone(),
            event_time: i as i64,
            features: r.features.clone(),
        })
        .collect();
    let encoded = requests
        .iter()
        .map(|r| codec.encode(r))
        .collect::<Result<Vec<_>, _>>()?;
    let logged: Vec<PredictionLogged> = requests
        .iter()
        .map(|r| PredictionLogged {
            request_id: r.request_id.clone(),
            model: r.model.clone(),
            model_version: 1,
            event_time: r.event_time,
            features: r.features.clone(),
            prediction: trained.predict(&r.features),
            served_at: 1_700_000_000_000,
            latency_us: 12,
            source: PredictionSource::Kafka,
            shadow: None,
        })
        .collect();

    let decode = best(n, || {
        for b in &encoded {
            std::hint::black_box(codec.decode::<PredictionRequest>(b).expect("decodes"));
        }
    });
    let decode_value = best(n, || {
        for b in &encoded {
            let value = driftline_schemas::codec::read_datum(
                PredictionRequest::schema(),
                None,
                &mut Cursor::new(&b[10..]),
            )
            .expect("decodes");
            std::hint::black_box(PredictionRequest::from_value(value).expect("maps"));
        }
    });
    let validate = best(n, || {
        for r in &requests {
            std::hint::black_box(spec.validate(&r.features).is_ok());
        }
    });
    let predict = best(n, || {
        for r in &requests {
            std::hint::black_box(trained.predict(&r.features));
        }
    });
    let encode = best(n, || {
        for l in &logged {
            std::hint::black_box(codec.encode(l).expect("encodes"));
        }
    });
    let encode_value = best(n, || {
        for l in &logged {
            std::hint::black_box(
                driftline_schemas::codec::write_datum(PredictionLogged::schema(), l.to_value())
                    .expect("encodes"),
            );
        }
    });
    println!("predictor work per message, flights spec, best of 5 rounds of {n} (µs)");
    println!("| step | driftline codec | apache-avro Value |");
    println!("| --- | ---: | ---: |");
    println!("| decode PredictionRequest | {decode:.2} | {decode_value:.2} |");
    println!("| validate against the spec | {validate:.2} | |");
    println!("| predict | {predict:.2} | |");
    println!("| encode PredictionLogged | {encode:.2} | {encode_value:.2} |");
    println!(
        "| total | {:.2} | {:.2} |",
        decode + validate + predict + encode,
        decode_value + validate + predict + encode_value
    );
    Ok(())
}
