//! How a monitor's state is laid out in RocksDB (the runtime's `state` column family).
//!
//! Per model: `m` its [`ModelMeta`] (JSON, rewritten with every event), `w` one slot per
//! window event, `e` one per labelled prediction (scored), `r` the latest report. The join
//! itself lives in the joiner, not here. Slot keys end in the big-endian sequence number, so a prefix
//! scan returns them in order. Written through the runtime's transaction, with the
//! offsets, in one WriteBatch.

use driftline_schemas::events::FeatureValue;

use crate::monitor::ModelMeta;
use crate::performance::Joined;
use crate::window::Observation;
use crate::{Error, Result};

pub fn meta_key(model: &str) -> Vec<u8> {
    key(b'm', model, None)
}

pub fn report_key(model: &str) -> Vec<u8> {
    key(b'r', model, None)
}

pub fn window_key(model: &str, seq: u64) -> Vec<u8> {
    key(b'w', model, Some(seq))
}

pub fn joined_key(model: &str, seq: u64) -> Vec<u8> {
    key(b'e', model, Some(seq))
}

/// The prefix of every key of one kind (`b'm'`, `b'w'`, ...) for one model, or for all
/// models when `model` is `None`.
pub fn prefix(kind: u8, model: Option<&str>) -> Vec<u8> {
    let mut k = vec![kind, 0];
    if let Some(m) = model {
        k.extend_from_slice(m.as_bytes());
        k.push(0);
    }
    k
}

fn key(kind: u8, model: &str, seq: Option<u64>) -> Vec<u8> {
    let mut k = prefix(kind, Some(model));
    if let Some(s) = seq {
        k.extend_from_slice(&s.to_be_bytes());
    }
    k
}

fn corrupt(what: &str) -> Error {
    Error::State(format!("corrupt {what} record"))
}

pub fn encode_meta(m: &ModelMeta) -> Vec<u8> {
    serde_json::to_vec(m).unwrap_or_default()
}

pub fn decode_meta(b: &[u8]) -> Result<ModelMeta> {
    serde_json::from_slice(b).map_err(|e| Error::State(format!("model meta: {e}")))
}

/// An event: time, value count, then per value a tag (0 missing, 1 number, 2 label), then,
/// when it has one, its expected value for the estimate before labels (absent in events
/// written before there was one: they read as none).
pub fn encode_event(e: &Observation) -> Vec<u8> {
    let mut b = Vec::with_capacity(12 + e.values.len() * 9);
    b.extend_from_slice(&e.event_time.to_be_bytes());
    b.extend_from_slice(&(e.values.len() as u32).to_be_bytes());
    for v in &e.values {
        match v {
            FeatureValue::Missing => b.push(0),
            FeatureValue::Number(x) => {
                b.push(1);
                b.extend_from_slice(&x.to_bits().to_be_bytes());
            }
            FeatureValue::Category(c) => {
                b.push(2);
                b.extend_from_slice(&(c.len() as u32).to_be_bytes());
                b.extend_from_slice(c.as_bytes());
            }
        }
    }
    if let Some(c) = e.expected {
        b.extend_from_slice(&c.to_bits().to_be_bytes());
    }
    b
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(corrupt("window event"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().map_err(|_| corrupt("u32"))?,
        ))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().map_err(|_| corrupt("u64"))?,
        ))
    }
}

pub fn decode_event(b: &[u8]) -> Result<Observation> {
    let mut r = Reader(b);
    let event_time = r.u64()? as i64;
    let n = r.u32()? as usize;
    let mut values = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        values.push(match r.u8()? {
            0 => FeatureValue::Missing,
            1 => FeatureValue::Number(f64::from_bits(r.u64()?)),
            2 => {
                let len = r.u32()? as usize;
                let s = std::str::from_utf8(r.take(len)?).map_err(|_| corrupt("label"))?;
                FeatureValue::Category(s.to_string())
            }
            _ => return Err(corrupt("window event")),
        });
    }
    let expected = match r.0.len() {
        0 => None,
        _ => Some(f64::from_bits(r.u64()?)),
    };
    if !r.0.is_empty() {
        return Err(corrupt("window event"));
    }
    Ok(Observation {
        event_time,
        values,
        expected,
    })
}

/// A joined pair: tag 0 regression (predicted, actual), 1 classification (correct, p).
pub fn encode_joined(j: &Joined) -> Vec<u8> {
    let mut b = Vec::with_capacity(17);
    match j {
        Joined::Regression { predicted, actual } => {
            b.push(0);
            b.extend_from_slice(&predicted.to_bits().to_be_bytes());
            b.extend_from_slice(&actual.to_bits().to_be_bytes());
        }
        Joined::Classification { correct, p_true } => {
            b.push(1);
            b.push(u8::from(*correct));
            b.extend_from_slice(&p_true.to_bits().to_be_bytes());
        }
    }
    b
}

pub fn decode_joined(b: &[u8]) -> Result<Joined> {
    let mut r = Reader(b);
    match r.u8()? {
        0 => Ok(Joined::Regression {
            predicted: f64::from_bits(r.u64()?),
            actual: f64::from_bits(r.u64()?),
        }),
        1 => Ok(Joined::Classification {
            correct: r.u8()? == 1,
            p_true: f64::from_bits(r.u64()?),
        }),
        _ => Err(corrupt("joined actual")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let e = Observation {
            event_time: -5,
            values: vec![
                FeatureValue::Missing,
                FeatureValue::Number(-0.25),
                FeatureValue::Category("UA".into()),
            ],
            expected: None,
        };
        assert_eq!(decode_event(&encode_event(&e)).unwrap(), e);
        let scored = Observation {
            expected: Some(0.875),
            ..e.clone()
        };
        assert_eq!(decode_event(&encode_event(&scored)).unwrap(), scored);
        for j in [
            Joined::Regression {
                predicted: 1.5,
                actual: -2.0,
            },
            Joined::Classification {
                correct: true,
                p_true: 0.75,
            },
        ] {
            assert_eq!(decode_joined(&encode_joined(&j)).unwrap(), j);
        }
        assert!(decode_event(&[1, 2, 3]).is_err());
    }

    #[test]
    fn slot_keys_sort_by_sequence_within_a_model() {
        assert!(window_key("m", 255) < window_key("m", 256));
        assert!(window_key("m", u64::MAX).starts_with(&prefix(b'w', Some("m"))));
        assert!(!window_key("m2", 0).starts_with(&prefix(b'w', Some("m"))));
    }
}
