//! The predictor's HTTP bodies on arbitrary bytes: `/predict` and the Open Inference
//! Protocol's infer. An error (a 4xx) is fine; a panic, an overflow or an abort is a bug.
//! A body read without error holds no more rows than the limit.
#![no_main]

use driftline_schemas::json::{infer_body, predict_body};
use libfuzzer_sys::fuzz_target;

const MAX_ROWS: usize = 8;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = predict_body(data, MAX_ROWS) {
        assert!(body.rows.len() <= MAX_ROWS);
        assert!(!body.single || body.rows.len() == 1);
    }
    if let Ok(body) = infer_body(data, MAX_ROWS) {
        assert!(body.rows.len() <= MAX_ROWS);
    }
});
