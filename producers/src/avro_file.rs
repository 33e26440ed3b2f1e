//! Offline output: the events as Avro object container files, one per topic
//! (`<dir>/<topic>.avro`), each carrying its topic's `.avsc` schema, deflate-compressed.
//! Any Avro tool reads them (`fastavro`, `avro-tools tojson`, apache-avro's `Reader`).
//!
//! The events arrive already encoded for Kafka (single-object encoding: `C3 01`, the
//! schema fingerprint, the datum). A container block is a run of bare datums, so the writer
//! strips the 10-byte header and copies the rest: no decoding, no second encoding.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use driftline_schemas::events::{Actual, Event, PredictionRequest};

use crate::sink::{Delivered, Sink, Topic};
use crate::source::Message;
use crate::{Error, Result};
use driftline_schemas::binary::long as write_long;

const SINGLE_OBJECT_HEADER: usize = 10;
/// Uncompressed bytes per block: large enough for deflate to do well.
const BLOCK_BYTES: usize = 256 * 1024;

/// Writes requests and actuals to two container files.
pub struct AvroFileSink {
    requests: ContainerWriter<BufWriter<File>>,
    actuals: ContainerWriter<BufWriter<File>>,
    paths: [PathBuf; 2],
    delivered: Delivered,
}

impl AvroFileSink {
    /// Creates (or truncates) `<dir>/<requests_topic>.avro` and `<dir>/<actuals_topic>.avro`.
    pub fn create(dir: &Path, requests_topic: &str, actuals_topic: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Write {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let paths = [
            dir.join(format!("{requests_topic}.avro")),
            dir.join(format!("{actuals_topic}.avro")),
        ];
        let open = |path: &Path, schema: &str| {
            let file = File::create(path).map_err(|e| Error::Write {
                path: path.to_path_buf(),
                source: e,
            })?;
            ContainerWriter::new(BufWriter::new(file), schema, true).map_err(|e| Error::Write {
                path: path.to_path_buf(),
                source: e,
            })
        };
        Ok(Self {
            requests: open(&paths[0], PredictionRequest::SCHEMA_JSON)?,
            actuals: open(&paths[1], Actual::SCHEMA_JSON)?,
            paths,
            delivered: Delivered::default(),
        })
    }

    /// The requests file and the actuals file.
    pub fn paths(&self) -> &[PathBuf; 2] {
        &self.paths
    }
}

impl Sink for AvroFileSink {
    async fn send(&mut self, topic: Topic, message: &Message) -> Result<()> {
        let (writer, path) = match topic {
            Topic::Requests => (&mut self.requests, &self.paths[0]),
            Topic::Actuals => (&mut self.actuals, &self.paths[1]),
        };
        let datum = strip_header(&message.payload).ok_or_else(|| {
            Error::Options("the Avro file sink needs single-object encoded events".into())
        })?;
        writer.append(datum).map_err(|e| Error::Write {
            path: path.clone(),
            source: e,
        })?;
        self.delivered.ok(topic);
        Ok(())
    }

    async fn flush(&mut self) -> Result<Delivered> {
        self.requests.flush().map_err(|e| Error::Write {
            path: self.paths[0].clone(),
            source: e,
        })?;
        self.actuals.flush().map_err(|e| Error::Write {
            path: self.paths[1].clone(),
            source: e,
        })?;
        Ok(self.delivered.clone())
    }
}

fn strip_header(payload: &[u8]) -> Option<&[u8]> {
    (payload.len() >= SINGLE_OBJECT_HEADER && payload[..2] == [0xC3, 0x01])
        .then(|| &payload[SINGLE_OBJECT_HEADER..])
}

/// An Avro object container file writer over bare datums (Avro 1.11 spec, "Object
/// Container Files"): header with the schema and codec, then blocks of
/// (count, byte size, datums, sync marker).
pub struct ContainerWriter<W: Write> {
    out: W,
    sync: [u8; 16],
    deflate: bool,
    block: Vec<u8>,
    count: i64,
}

impl<W: Write> ContainerWriter<W> {
    pub fn new(mut out: W, schema_json: &str, deflate: bool) -> std::io::Result<Self> {
        // The spec asks for a random marker; one derived from the schema keeps the output of a
        // replay reproducible, and readers only compare it with the header's.
        let mut sync = [0u8; 16];
        sync[..8].copy_from_slice(&fnv1a(schema_json.as_bytes(), 0).to_le_bytes());
        sync[8..].copy_from_slice(&fnv1a(schema_json.as_bytes(), 1).to_le_bytes());
        let mut header = b"Obj\x01".to_vec();
        let codec: &[u8] = if deflate { b"deflate" } else { b"null" };
        write_long(&mut header, 2);
        for (key, value) in [
            (&b"avro.schema"[..], schema_json.as_bytes()),
            (b"avro.codec", codec),
        ] {
            write_bytes(&mut header, key);
            write_bytes(&mut header, value);
        }
        write_long(&mut header, 0);
        header.extend_from_slice(&sync);
        out.write_all(&header)?;
        Ok(Self {
            out,
            sync,
            deflate,
            block: Vec::with_capacity(BLOCK_BYTES + 4096),
            count: 0,
        })
    }

    /// Appends one datum (Avro binary, without any header).
    pub fn append(&mut self, datum: &[u8]) -> std::io::Result<()> {
        self.block.extend_from_slice(datum);
        self.count += 1;
        if self.block.len() >= BLOCK_BYTES {
            self.write_block()
        } else {
            Ok(())
        }
    }

    /// Ends the current block and flushes the output; appending may go on after it.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.write_block()?;
        self.out.flush()
    }

    pub fn into_inner(mut self) -> std::io::Result<W> {
        self.flush()?;
        Ok(self.out)
    }

    fn write_block(&mut self) -> std::io::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let compressed;
        let data = if self.deflate {
            // The Avro deflate codec is raw deflate (RFC 1951): no zlib or gzip framing.
            let mut enc =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&self.block)?;
            compressed = enc.finish()?;
            &compressed
        } else {
            &self.block
        };
        let mut head = Vec::with_capacity(20);
        write_long(&mut head, self.count);
        write_long(&mut head, data.len() as i64);
        self.out.write_all(&head)?;
        self.out.write_all(data)?;
        self.out.write_all(&self.sync)?;
        self.block.clear();
        self.count = 0;
        Ok(())
    }
}

fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

fn fnv1a(bytes: &[u8], salt: u8) -> u64 {
    std::iter::once(&salt)
        .chain(bytes)
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftline_schemas::codec::Codec;
    use driftline_schemas::events::FeatureValue;

    #[test]
    fn zigzag_longs_match_the_spec_examples() {
        // The Avro spec's table: 0 -> 00, -1 -> 01, 1 -> 02, -2 -> 03, 2 -> 04, -64 -> 7f, 64 -> 80 01.
        for (n, bytes) in [
            (0, vec![0x00]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
        ] {
            let mut out = Vec::new();
            write_long(&mut out, n);
            assert_eq!(out, bytes, "{n}");
        }
    }

    fn request(i: i64) -> PredictionRequest {
        PredictionRequest {
            request_id: format!("m:{i}"),
            model: "m".into(),
            event_time: 1_357_016_400_000 + i,
            features: [
                ("x".to_string(), FeatureValue::Number(i as f64 / 3.0)),
                (
                    "c".to_string(),
                    FeatureValue::Category(format!("c{}", i % 7)),
                ),
                ("gap".to_string(), FeatureValue::Missing),
            ]
            .into(),
        }
    }

    #[test]
    fn apache_avro_reads_back_what_the_container_writer_wrote() {
        let codec = Codec::single_object();
        let events: Vec<_> = (0..20_000).map(request).collect();
        for deflate in [true, false] {
            let mut w =
                ContainerWriter::new(Vec::new(), PredictionRequest::SCHEMA_JSON, deflate).unwrap();
            for e in &events {
                w.append(strip_header(&codec.encode(e).unwrap()).unwrap())
                    .unwrap();
            }
            let bytes = w.into_inner().unwrap();
            let reader = apache_avro::Reader::new(&bytes[..]).unwrap();
            let back: Vec<_> = reader
                .map(|v| PredictionRequest::from_value(v.unwrap()).unwrap())
                .collect();
            assert_eq!(back, events, "deflate={deflate}");
        }
    }

    #[tokio::test]
    async fn the_file_sink_writes_one_file_per_topic() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = AvroFileSink::create(dir.path(), "req", "act").unwrap();
        let codec = Codec::single_object();
        let actual = Actual {
            request_id: "m:1".into(),
            model: "m".into(),
            event_time: 5,
            value: Some(1.5),
            class: None,
            observed_at: 6,
        };
        let msg = |payload| Message {
            key: String::new(),
            payload,
        };
        sink.send(Topic::Requests, &msg(codec.encode(&request(1)).unwrap()))
            .await
            .unwrap();
        sink.send(Topic::Actuals, &msg(codec.encode(&actual).unwrap()))
            .await
            .unwrap();
        let delivered = sink.flush().await.unwrap();
        assert_eq!(
            (delivered.requests, delivered.actuals, delivered.failed),
            (1, 1, 0)
        );
        let read = |name: &str| {
            let file = File::open(dir.path().join(name)).unwrap();
            apache_avro::Reader::new(file)
                .unwrap()
                .map(|v| v.unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            PredictionRequest::from_value(read("req.avro").remove(0)).unwrap(),
            request(1)
        );
        assert_eq!(
            Actual::from_value(read("act.avro").remove(0)).unwrap(),
            actual
        );
        // Bytes that are not single-object encoded are refused, not written as garbage.
        assert!(
            sink.send(Topic::Requests, &msg(vec![1, 2, 3]))
                .await
                .is_err()
        );
    }
}
