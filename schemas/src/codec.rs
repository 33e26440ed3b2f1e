//! The wire codec: typed events to Avro bytes and back.
//!
//! Single-object encoding (the default) puts the writer schema's Rabin fingerprint in every
//! message, so a reader resolves old writers' bytes with its own schema (see
//! `schemas/EVOLUTION.md`). The Confluent format carries a registry id instead; the ids
//! are configuration, because driftline does not talk to a registry itself.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;

use crate::binary::Reader;
use crate::events::{Event, all_schemas};
use crate::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/history.rs"));

const MAGIC: [u8; 2] = [0xC3, 0x01];
const SINGLE_OBJECT_HEADER: usize = 10;
const CONFLUENT_HEADER: usize = 5;

/// The bound on any one allocation while decoding: a corrupt length prefix must not make us
/// reserve gigabytes. Our largest event (a model with its bytes) is far below it.
pub const MAX_ALLOCATION_BYTES: usize = 64 * 1024 * 1024;

/// How messages are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireFormat {
    #[default]
    SingleObject,
    Confluent,
}

impl std::str::FromStr for WireFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "single-object" => Ok(Self::SingleObject),
            "confluent" => Ok(Self::Confluent),
            other => Err(Error::Spec(format!(
                "unknown wire format {other:?} (expected single-object or confluent)"
            ))),
        }
    }
}

/// The schema's Parsing Canonical Form, as the Avro specification defines it.
///
/// apache-avro 0.21 leaves a primitive that carried a logical type as `{"type":"long"}`;
/// the spec's [PRIMITIVES] rule (and Java, fastavro) make it `"long"`. Other clients
/// compute the fingerprint from the spec's form, so we repair that one case.
pub fn canonical_form(schema: &Schema) -> String {
    let mut form = schema.canonical_form();
    for p in [
        "null", "boolean", "int", "long", "float", "double", "bytes", "string",
    ] {
        form = form.replace(&format!("{{\"type\":\"{p}\"}}"), &format!("\"{p}\""));
    }
    form
}

/// The 64-bit Rabin fingerprint (CRC-64-AVRO) of a schema's Parsing Canonical Form, as the
/// spec's single-object header carries it (little-endian).
/// An Avro datum's body read with its `writer` schema, resolved to `reader` when given
/// (apache-avro's generic reader, with the allocation bound [`Codec`] sets).
pub fn read_datum(
    writer: &Schema,
    reader: Option<&Schema>,
    body: &mut impl std::io::Read,
) -> Result<Value> {
    Ok(GenericDatumReader::builder(writer)
        .maybe_reader_schema(reader)
        .build()?
        .read_value(body)?)
}

/// `value` as the body of an Avro datum of `schema`.
pub fn write_datum(schema: &Schema, value: Value) -> Result<Vec<u8>> {
    Ok(GenericDatumWriter::builder(schema)
        .build()?
        .write_value_to_vec(value)?)
}

pub fn fingerprint(schema: &Schema) -> u64 {
    rabin(canonical_form(schema).as_bytes())
}

/// The specification's reference algorithm.
fn rabin(bytes: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
            }
            *slot = fp;
        }
        t
    });
    bytes.iter().fold(EMPTY, |fp, b| {
        (fp >> 8) ^ table[((fp ^ u64::from(*b)) & 0xff) as usize]
    })
}

#[derive(Debug, Clone)]
struct Writer {
    schema: Arc<Schema>,
    name: String,
}

impl Writer {
    fn new(schema: Schema) -> Self {
        Self {
            name: full_name(&schema),
            schema: Arc::new(schema),
        }
    }
}

/// Encodes and decodes events. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Codec {
    format: WireFormat,
    /// Writer schemas (and their full names) by fingerprint: the current ones and any
    /// older ones registered.
    writers: HashMap<u64, Writer>,
    /// Confluent: schema full name -> id, and id -> schema.
    ids_by_name: HashMap<String, u32>,
    schemas_by_id: HashMap<u32, Writer>,
}

impl Default for Codec {
    fn default() -> Self {
        Self::single_object()
    }
}

impl Codec {
    /// Single-object encoding with every current and historical schema known as a writer.
    pub fn single_object() -> Self {
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        // History files are checked by the tests; one that does not parse is skipped
        // rather than taking every consumer down.
        let history = HISTORY.iter().filter_map(|s| Schema::parse_str(s).ok());
        let writers = all_schemas()
            .into_iter()
            .map(|(_, s)| s.clone())
            .chain(history)
            .map(|s| (fingerprint(&s), Writer::new(s)))
            .collect();
        Self {
            format: WireFormat::SingleObject,
            writers,
            ids_by_name: HashMap::new(),
            schemas_by_id: HashMap::new(),
        }
    }

    /// Confluent wire format. `ids` maps a topic (e.g. `driftline.requests`) to the id its
    /// current schema was registered under.
    pub fn confluent(ids: &HashMap<String, u32>) -> Result<Self> {
        let mut codec = Self::single_object();
        codec.format = WireFormat::Confluent;
        for (topic, schema) in all_schemas() {
            if let Some(id) = ids.get(topic) {
                codec.ids_by_name.insert(full_name(schema), *id);
                codec.schemas_by_id.insert(*id, Writer::new(schema.clone()));
            }
        }
        Ok(codec)
    }

    pub fn format(&self) -> WireFormat {
        self.format
    }

    /// Make an older (or foreign) writer schema readable: its bytes are resolved against the
    /// reader's current schema by Avro's rules.
    pub fn register_writer(&mut self, schema: Schema) -> u64 {
        let fp = fingerprint(&schema);
        self.writers.insert(fp, Writer::new(schema));
        fp
    }

    /// Confluent: make a registry id readable.
    pub fn register_confluent_id(&mut self, id: u32, schema: Schema) {
        self.schemas_by_id.insert(id, Writer::new(schema));
    }

    pub fn encode<E: Event>(&self, event: &E) -> Result<Vec<u8>> {
        let schema = E::schema();
        let mut out = Vec::with_capacity(512);
        match self.format {
            WireFormat::SingleObject => {
                out.extend_from_slice(&MAGIC);
                out.extend_from_slice(&E::fingerprint().to_le_bytes());
            }
            WireFormat::Confluent => {
                let name = full_name(schema);
                let id = *self.ids_by_name.get(&name).ok_or(Error::NoSchemaId(name))?;
                out.push(0);
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        if !event.write_body(&mut out) {
            out.extend_from_slice(&write_datum(schema, event.to_value())?);
        }
        Ok(out)
    }

    pub fn decode<E: Event>(&self, bytes: &[u8]) -> Result<E> {
        let (fp, body) = self.frame(bytes)?;
        let reader = E::schema();
        // The common case, writer == reader, skips schema resolution, and the busiest
        // events skip apache-avro's Value too.
        if fp == Some(E::fingerprint()) {
            let mut direct = Reader::new(body);
            if let Some(event) = E::read_body(&mut direct) {
                let event = event?;
                return match direct.remaining() {
                    0 => Ok(event),
                    rest => Err(Error::Trailing(rest)),
                };
            }
        }
        let mut cursor = Cursor::new(body);
        let value = if fp == Some(E::fingerprint()) {
            read_datum(reader, None, &mut cursor)?
        } else {
            let writer = match (fp, self.format) {
                (Some(fp), _) => self.writers.get(&fp).ok_or(Error::UnknownFingerprint(fp))?,
                (None, _) => self.confluent_writer(bytes)?,
            };
            let reader_name = full_name(reader);
            if writer.name != reader_name {
                return Err(Error::WrongType {
                    writer: writer.name.clone(),
                    reader: reader_name,
                });
            }
            read_datum(&writer.schema, Some(reader), &mut cursor)?
        };
        let rest = body.len() - cursor.position() as usize;
        if rest != 0 {
            return Err(Error::Trailing(rest));
        }
        E::from_value(value)
    }

    /// Splits the header from the body: the writer's fingerprint (single-object) or
    /// `None` for Confluent framing, whose id is resolved by `confluent_writer`.
    fn frame<'a>(&self, bytes: &'a [u8]) -> Result<(Option<u64>, &'a [u8])> {
        match self.format {
            WireFormat::SingleObject => {
                if bytes.len() < SINGLE_OBJECT_HEADER {
                    return Err(Error::TooShort(bytes.len()));
                }
                if bytes[..2] != MAGIC {
                    return Err(Error::BadMagic(bytes[0], bytes[1]));
                }
                let mut fp = [0u8; 8];
                fp.copy_from_slice(&bytes[2..SINGLE_OBJECT_HEADER]);
                Ok((Some(u64::from_le_bytes(fp)), &bytes[SINGLE_OBJECT_HEADER..]))
            }
            WireFormat::Confluent => {
                if bytes.len() < CONFLUENT_HEADER {
                    return Err(Error::TooShort(bytes.len()));
                }
                if bytes[0] != 0 {
                    return Err(Error::BadConfluentMagic(bytes[0]));
                }
                Ok((None, &bytes[CONFLUENT_HEADER..]))
            }
        }
    }

    fn confluent_writer(&self, bytes: &[u8]) -> Result<&Writer> {
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        self.schemas_by_id
            .get(&id)
            .ok_or(Error::UnknownSchemaId(id))
    }
}

fn full_name(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => r.name.fullname(None),
        other => format!("{other:?}"),
    }
}
