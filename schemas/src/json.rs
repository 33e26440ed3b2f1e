//! The JSON bodies the predictor's HTTP API accepts, read into rows of features: pure (no
//! I/O), so they are unit-tested and fuzzed (`fuzz/`) on their own. Every error names
//! what was wrong, for a 4xx.
//!
//! - `/predict`: `{"model"?, "features": {...}}` or `{"model"?, "instances": [{...}, ...]}`;
//!   the row limit applies while the rows are read, so a list past it stops the parse
//!   there, before the rest of the body becomes a JSON tree.
//! - Open Inference Protocol `/v2/models/{m}/infer`: `{"id"?, "inputs": [{"name", "shape",
//!   "datatype"?, "data"}]}`, one input per feature, every input with the same rows.

use serde::Deserialize;
use serde_json::Value;

use crate::events::{FeatureValue, Features};

/// Why a body cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    #[error("request body is not valid JSON: {0}")]
    BadJson(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidFeatures(String),
}

/// A `/predict` body.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictBody {
    /// The model named, if any.
    pub model: Option<String>,
    /// One record (`features`) rather than a list (`instances`).
    pub single: bool,
    pub rows: Vec<Features>,
}

/// Reads a `/predict` body of at most `max_rows` instances.
pub fn predict_body(body: &[u8], max_rows: usize) -> Result<PredictBody, BodyError> {
    let over = std::cell::Cell::new(false);
    let seed = PredictSeed {
        max_rows,
        over: &over,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw = serde::de::DeserializeSeed::deserialize(seed, &mut de)
        .and_then(|req| de.end().map(|()| req))
        .map_err(|e| {
            if over.get() {
                BodyError::BadRequest(format!(
                    "more than the limit of {max_rows} rows in `instances`"
                ))
            } else {
                BodyError::BadJson(e.to_string())
            }
        })?;
    let model = match raw.model {
        Some(Value::String(m)) => Some(m),
        Some(_) => return Err(BodyError::BadRequest("`model` must be a string".into())),
        None => None,
    };
    let (single, records) = match (raw.features, raw.instances) {
        (Some(f), None) => (true, vec![f]),
        (None, Some(list)) => (false, list),
        _ => {
            return Err(BodyError::BadRequest(
                "send exactly one of `features` (one record) or `instances` (a list)".into(),
            ));
        }
    };
    let mut rows = Vec::with_capacity(records.len());
    for (row, r) in records.into_iter().enumerate() {
        let Value::Object(fields) = r else {
            return Err(BodyError::BadRequest(format!(
                "instance {row} is not an object"
            )));
        };
        let mut features = Features::new();
        for (k, v) in fields {
            let value = feature_value(&v).map_err(|why| {
                let at = if single {
                    String::new()
                } else {
                    format!("instance {row}: ")
                };
                BodyError::InvalidFeatures(format!("{at}feature `{k}` {why}"))
            })?;
            features.insert(k, value);
        }
        rows.push(features);
    }
    Ok(PredictBody {
        model,
        single,
        rows,
    })
}

/// An Open Inference Protocol request, read into rows.
#[derive(Debug, Clone, PartialEq)]
pub struct InferBody {
    /// The client's id for the request.
    pub id: Option<String>,
    pub rows: Vec<Features>,
}

#[derive(Debug, Deserialize)]
struct InferInput {
    name: String,
    shape: Vec<i64>,
    #[serde(default)]
    datatype: Option<String>,
    data: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InferInput>,
}

/// Reads an OIP infer body of at most `max_rows` rows.
pub fn infer_body(body: &[u8], max_rows: usize) -> Result<InferBody, BodyError> {
    let req: InferRequest =
        serde_json::from_slice(body).map_err(|e| BodyError::BadJson(e.to_string()))?;
    if req.inputs.is_empty() {
        return Err(BodyError::BadRequest("`inputs` is empty".into()));
    }
    let rows = req.inputs[0].data.len();
    if rows > max_rows {
        return Err(BodyError::BadRequest(format!(
            "{rows} rows is more than the limit of {max_rows}"
        )));
    }
    let mut batch: Vec<Features> = vec![Features::new(); rows];
    for input in &req.inputs {
        // A shape whose product overflows is as wrong as any other mismatch.
        let declared = input.shape.iter().try_fold(1i64, |n, d| n.checked_mul(*d));
        if input.data.len() != rows || declared != Some(rows as i64) {
            return Err(BodyError::BadRequest(format!(
                "input `{}` has shape {:?} and {} values; every input needs the same {rows} rows",
                input.name,
                input.shape,
                input.data.len()
            )));
        }
        if let Some(dt) = &input.datatype
            && !matches!(dt.as_str(), "FP64" | "FP32" | "INT64" | "INT32" | "BYTES")
        {
            return Err(BodyError::BadRequest(format!(
                "input `{}`: unsupported datatype {dt}",
                input.name
            )));
        }
        for (row, v) in input.data.iter().enumerate() {
            let value = feature_value(v).map_err(|why| {
                BodyError::InvalidFeatures(format!("input `{}` row {row} {why}", input.name))
            })?;
            batch[row].insert(input.name.clone(), value);
        }
    }
    Ok(InferBody {
        id: req.id,
        rows: batch,
    })
}

/// A JSON value as a feature value, or why it cannot be one.
fn feature_value(v: &Value) -> Result<FeatureValue, &'static str> {
    match v {
        Value::Null => Ok(FeatureValue::Missing),
        Value::Number(n) => n
            .as_f64()
            .map(FeatureValue::Number)
            .ok_or("is not a finite number"),
        Value::String(s) => Ok(FeatureValue::Category(s.clone())),
        Value::Bool(_) => Err("is a boolean; send a number or a string"),
        Value::Array(_) | Value::Object(_) => Err("must be a number, a string or null"),
    }
}

/// `/predict`'s body as read, before its fields are checked.
#[derive(Default)]
struct RawPredict {
    model: Option<Value>,
    features: Option<Value>,
    instances: Option<Vec<Value>>,
}

/// Reads a [`RawPredict`], at most `max_rows` instances; `over` says the limit stopped it.
struct PredictSeed<'a> {
    max_rows: usize,
    over: &'a std::cell::Cell<bool>,
}

impl<'de> serde::de::DeserializeSeed<'de> for PredictSeed<'_> {
    type Value = RawPredict;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<RawPredict, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PredictSeed<'_> {
    type Value = RawPredict;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object with `features` or `instances`")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RawPredict, A::Error> {
        let mut body = RawPredict::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "model" => body.model = Some(map.next_value()?),
                "features" => body.features = Some(map.next_value()?),
                "instances" => {
                    body.instances = Some(map.next_value_seed(Rows {
                        max: self.max_rows,
                        over: self.over,
                    })?)
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(body)
    }
}

/// A list of at most `max` rows.
struct Rows<'a> {
    max: usize,
    over: &'a std::cell::Cell<bool>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Rows<'_> {
    type Value = Vec<Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<Value>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Rows<'_> {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("`instances`: a list of objects")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        let mut rows = Vec::new();
        while let Some(row) = seq.next_element::<Value>()? {
            if rows.len() == self.max {
                self.over.set(true);
                return Err(serde::de::Error::custom("too many rows"));
            }
            rows.push(row);
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows `/predict` reads with a row limit, or the error.
    fn rows(body: &str, max_rows: usize) -> Result<usize, BodyError> {
        predict_body(body.as_bytes(), max_rows).map(|b| b.rows.len())
    }

    #[test]
    fn the_row_limit_stops_the_parse_at_the_first_row_past_it() {
        assert_eq!(rows(r#"{"instances": [{}, {}], "model": "m"}"#, 2), Ok(2));
        // Past the limit, the rest is never read: not even its syntax error.
        let over = rows(r#"{"instances": [{}, {}, {}, @@@ not json"#, 2).unwrap_err();
        assert!(over.to_string().contains("limit of 2 rows"), "{over}");
        assert!(
            matches!(
                rows(r#"{"instances": [{}, @@@"#, 2),
                Err(BodyError::BadJson(_))
            ),
            "a syntax error"
        );
        assert!(matches!(
            rows(r#"{"instances": 3}"#, 2),
            Err(BodyError::BadJson(_))
        ));
        assert_eq!(
            rows(r#"{"features": {"x": 1}, "extra": [1, 2, 3]}"#, 2),
            Ok(1)
        );
    }

    #[test]
    fn a_predict_body_names_what_is_wrong() {
        let body = predict_body(
            br#"{"model": "m", "features": {"x": 2, "c": "red", "n": null}}"#,
            5,
        )
        .unwrap();
        assert_eq!(body.model.as_deref(), Some("m"));
        assert!(body.single);
        assert_eq!(body.rows[0]["x"], FeatureValue::Number(2.0));
        assert_eq!(body.rows[0]["n"], FeatureValue::Missing);
        let cases: [(&str, &str); 5] = [
            (
                r#"{"model": 3, "features": {}}"#,
                "`model` must be a string",
            ),
            (r#"{"features": {}, "instances": []}"#, "exactly one of"),
            (r#"{"instances": [1]}"#, "instance 0 is not an object"),
            (
                r#"{"instances": [{}, {"x": true}]}"#,
                "instance 1: feature `x` is a boolean",
            ),
            (
                r#"{"features": {"x": [1]}}"#,
                "feature `x` must be a number",
            ),
        ];
        for (body, says) in cases {
            let e = predict_body(body.as_bytes(), 5).unwrap_err();
            assert!(e.to_string().contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn an_infer_body_needs_inputs_of_one_shape() {
        let ok = br#"{"id": "q", "inputs": [
            {"name": "x", "shape": [2], "datatype": "FP64", "data": [1, 2]},
            {"name": "c", "shape": [2, 1], "data": ["a", null]}]}"#;
        let body = infer_body(ok, 5).unwrap();
        assert_eq!(body.id.as_deref(), Some("q"));
        assert_eq!(body.rows.len(), 2);
        assert_eq!(body.rows[1]["c"], FeatureValue::Missing);
        let cases: [(&[u8], &str); 6] = [
            (br#"{"inputs": []}"#, "`inputs` is empty"),
            (
                br#"{"inputs": [{"name": "x", "shape": [3], "data": [1, 2, 3]}]}"#,
                "3 rows is more than the limit of 2",
            ),
            (
                br#"{"inputs": [{"name": "x", "shape": [2], "data": [1]}]}"#,
                "has shape [2] and 1 values",
            ),
            (
                br#"{"inputs": [{"name": "x", "shape": [9223372036854775807, 4], "data": [1]}]}"#,
                "has shape",
            ),
            (
                br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP16", "data": [1]}]}"#,
                "unsupported datatype FP16",
            ),
            (
                br#"{"inputs": [{"name": "x", "shape": [1], "data": [{}]}]}"#,
                "input `x` row 0 must be a number",
            ),
        ];
        for (body, says) in cases {
            let e = infer_body(body, 2).unwrap_err();
            assert!(
                e.to_string().contains(says),
                "{}: {e}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
