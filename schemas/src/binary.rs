//! Avro binary bodies of the busiest events, written and read without apache-avro's
//! `Value` tree.
//!
//! Requests, predictions and actuals cross the bus once per record; through `Value` each
//! cost 7-10 µs to decode or encode, most of the predictor's time per message. Their
//! schemas are small and fixed, so [`crate::events`] writes and reads their fields here in
//! schema order. The tests check every one against apache-avro byte for byte, so a changed
//! `.avsc` fails them until the mapping follows it. Reading is as strict as apache-avro:
//! bounded lengths, valid UTF-8, known union branches, no reading past the end.

use crate::codec::MAX_ALLOCATION_BYTES;
use crate::events::{FeatureValue, Features};
use crate::{Error, Result};

/// Avro's long: zig-zag, then base-128 varint.
pub fn long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

pub(crate) fn double(out: &mut Vec<u8>, x: f64) {
    out.extend_from_slice(&x.to_le_bytes());
}

pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// A `["null", T]` union.
pub(crate) fn optional<T>(out: &mut Vec<u8>, v: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        None => long(out, 0),
        Some(v) => {
            long(out, 1);
            write(out, v);
        }
    }
}

/// A map as one block (entries in the map's order), then the empty block that ends it.
pub(crate) fn map<'a, V: 'a>(
    out: &mut Vec<u8>,
    entries: impl ExactSizeIterator<Item = (&'a String, &'a V)>,
    write: impl Fn(&mut Vec<u8>, &V),
) {
    if entries.len() > 0 {
        long(out, entries.len() as i64);
        for (k, v) in entries {
            string(out, k);
            write(out, v);
        }
    }
    long(out, 0);
}

/// The `["null", "double", "string"]` union of a feature.
pub(crate) fn feature(out: &mut Vec<u8>, v: &FeatureValue) {
    match v {
        FeatureValue::Missing => long(out, 0),
        FeatureValue::Number(x) => {
            long(out, 1);
            double(out, *x);
        }
        FeatureValue::Category(c) => {
            long(out, 2);
            string(out, c);
        }
    }
}

pub(crate) fn features(out: &mut Vec<u8>, f: &Features) {
    map(out, f.iter(), feature);
}

/// Reads a body front to back; the codec checks that nothing is left after the record.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

fn malformed(what: &str, msg: impl std::fmt::Display) -> Error {
    Error::Avro(format!("{what}: {msg}"))
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.bytes.len() {
            return Err(malformed(
                what,
                format!("needs {n} bytes, {} left", self.bytes.len()),
            ));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// Up to ten bytes; bits past the 64th are dropped, as apache-avro drops them.
    pub(crate) fn long(&mut self, what: &str) -> Result<i64> {
        let mut z = 0u64;
        for shift in (0..70).step_by(7) {
            let [b] = self.take(1, what)? else {
                unreachable!("took one byte")
            };
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err(malformed(what, "varint longer than 10 bytes"))
    }

    pub(crate) fn double(&mut self, what: &str) -> Result<f64> {
        let b = self.take(8, what)?;
        Ok(f64::from_le_bytes(b.try_into().expect("took 8 bytes")))
    }

    /// A length prefix: not negative, not past the allocation bound.
    fn len(&mut self, what: &str) -> Result<usize> {
        let n = self.long(what)?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= MAX_ALLOCATION_BYTES)
            .ok_or_else(|| malformed(what, format!("bad length {n}")))
    }

    pub(crate) fn string(&mut self, what: &str) -> Result<String> {
        let n = self.len(what)?;
        let b = self.take(n, what)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|e| malformed(what, e))
    }

    /// A union's branch index, checked against the number of branches.
    pub(crate) fn branch(&mut self, branches: i64, what: &str) -> Result<i64> {
        // apache-avro reads an index that runs out of bytes (within a varint's ten) as the
        // first branch, null in all of ours: a body cut before a last optional field reads
        // as that field null. Judged the same way here, as the codec test demands.
        if self.bytes.len() < 10 && self.bytes.iter().all(|b| b & 0x80 != 0) {
            self.bytes = &[];
            return Ok(0);
        }
        let i = self.long(what)?;
        if !(0..branches).contains(&i) {
            return Err(malformed(what, format!("union branch {i} of {branches}")));
        }
        Ok(i)
    }

    /// A `["null", T]` union.
    pub(crate) fn optional<T>(
        &mut self,
        what: &str,
        read: impl FnOnce(&mut Self, &str) -> Result<T>,
    ) -> Result<Option<T>> {
        match self.branch(2, what)? {
            0 => Ok(None),
            _ => read(self, what).map(Some),
        }
    }

    /// A map's blocks: a count, negated when the block's size in bytes follows it.
    pub(crate) fn map<V>(
        &mut self,
        what: &str,
        mut read: impl FnMut(&mut Self, &str) -> Result<V>,
    ) -> Result<std::collections::BTreeMap<String, V>> {
        let mut entries = Vec::new();
        loop {
            let count = self.long(what)?;
            if count == 0 {
                // Built at once from entries usually already in order (ours are written
                // sorted), rather than searched for one insert at a time. A key seen twice
                // keeps its last value, as apache-avro's map does.
                return Ok(entries.into_iter().collect());
            }
            if count < 0 {
                self.len(what)?; // the block's size: only for skipping
            }
            let count = count.unsigned_abs();
            // Every entry takes at least two bytes: a corrupt count cannot make us loop on.
            if count > self.remaining() as u64 {
                return Err(malformed(
                    what,
                    format!("{count} entries in {} bytes", self.remaining()),
                ));
            }
            entries.reserve(count as usize);
            for _ in 0..count {
                let k = self.string(what)?;
                let v = read(self, &k)?;
                entries.push((k, v));
            }
        }
    }

    pub(crate) fn feature(&mut self, name: &str) -> Result<FeatureValue> {
        match self.branch(3, name)? {
            0 => Ok(FeatureValue::Missing),
            1 => self.double(name).map(FeatureValue::Number),
            _ => self.string(name).map(FeatureValue::Category),
        }
    }

    pub(crate) fn features(&mut self) -> Result<Features> {
        self.map("features", Self::feature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_round_trip_at_their_edges() {
        for n in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            i64::from(i32::MAX),
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            long(&mut out, n);
            let mut r = Reader::new(&out);
            assert_eq!(r.long("n").unwrap(), n);
            assert_eq!(r.remaining(), 0);
        }
    }

    #[test]
    fn refuses_a_varint_past_ten_bytes() {
        let mut r = Reader::new(&[0xff; 11]);
        assert!(r.long("n").is_err());
    }

    #[test]
    fn refuses_a_length_past_the_end_or_negative() {
        let mut out = Vec::new();
        long(&mut out, 5);
        out.extend_from_slice(b"abc");
        assert!(Reader::new(&out).string("s").is_err());
        let mut out = Vec::new();
        long(&mut out, -3);
        assert!(Reader::new(&out).string("s").is_err());
    }

    #[test]
    fn refuses_a_map_count_the_bytes_cannot_hold() {
        let mut out = Vec::new();
        long(&mut out, i64::MAX);
        assert!(Reader::new(&out).features().is_err());
    }
}
