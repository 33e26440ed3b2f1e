//! Every event's decoder on arbitrary bytes: an error is fine, a panic, an abort or an
//! allocation past the codec's cap is a bug. The first byte picks the event; the second
//! says whether the rest is framed as the event's current schema (so the fuzzer reaches
//! the body decoders at once) or taken as it is (framing, unknown writers). What decodes
//! is encoded again, which must not panic either.
#![no_main]

use driftline_schemas::codec::Codec;
use driftline_schemas::events::*;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn codec() -> &'static Codec {
    static CODEC: OnceLock<Codec> = OnceLock::new();
    CODEC.get_or_init(Codec::single_object)
}

fn check<E: Event>(framed: bool, body: &[u8]) {
    let bytes = if framed {
        let mut b = vec![0xC3, 0x01];
        b.extend_from_slice(&E::fingerprint().to_le_bytes());
        b.extend_from_slice(body);
        b
    } else {
        body.to_vec()
    };
    if let Ok(event) = codec().decode::<E>(&bytes) {
        let _ = codec().encode(&event);
    }
}

fuzz_target!(|data: &[u8]| {
    let [which, framing, body @ ..] = data else {
        return;
    };
    let framed = framing % 2 == 0;
    match which % 8 {
        0 => check::<PredictionRequest>(framed, body),
        1 => check::<PredictionLogged>(framed, body),
        2 => check::<Actual>(framed, body),
        3 => check::<Labelled>(framed, body),
        4 => check::<DriftReport>(framed, body),
        5 => check::<RetrainRequested>(framed, body),
        6 => check::<ModelPublished>(framed, body),
        _ => check::<DeadLetter>(framed, body),
    }
});
