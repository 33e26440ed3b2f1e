//! driftline's events and how they look on the wire.
//!
//! Every topic has one Avro schema in `schemas/<topic>.avsc`; this crate embeds them, maps
//! each to a typed event ([`events`]) and encodes events as Avro binary in the spec's
//! single-object encoding (`C3 01`, the schema's 8-byte Rabin fingerprint, the body), so any
//! Avro library can decode a message with the `.avsc` files alone. The Confluent wire
//! format (`00` + 4-byte schema id) is an option for sites with a schema registry.
//!
//! It also holds the feature spec ([`spec`]): the TOML file that says what a data set's
//! columns mean, so nothing else in driftline assumes a particular data set.
//!
//! ```
//! use driftline_schemas::{codec::Codec, events::{PredictionRequest, FeatureValue}};
//! let codec = Codec::single_object();
//! let req = PredictionRequest {
//!     request_id: "r-1".into(),
//!     model: "flights".into(),
//!     event_time: 1_357_016_400_000,
//!     features: [("distance".to_string(), FeatureValue::Number(1400.0))].into(),
//! };
//! let bytes = codec.encode(&req).unwrap();
//! assert_eq!(&bytes[..2], &[0xC3, 0x01]);
//! assert_eq!(codec.decode::<PredictionRequest>(&bytes).unwrap(), req);
//! ```

pub mod binary;
pub mod codec;
pub mod duration;
pub mod events;
pub mod json;
pub mod spec;
pub mod topics;
mod value;

/// Errors from decoding, encoding and reading specs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("message of {0} bytes is too short for its header")]
    TooShort(usize),
    #[error("not Avro single-object encoding: first bytes are {0:02x} {1:02x}, expected c3 01")]
    BadMagic(u8, u8),
    #[error("not Confluent wire format: magic byte {0:02x}, expected 00")]
    BadConfluentMagic(u8),
    #[error("unknown writer schema fingerprint {0:016x}")]
    UnknownFingerprint(u64),
    #[error("unknown Confluent schema id {0}")]
    UnknownSchemaId(u32),
    #[error("no Confluent schema id configured for {0}")]
    NoSchemaId(String),
    #[error("writer schema {writer} cannot be read as {reader}")]
    WrongType { writer: String, reader: String },
    #[error("avro: {0}")]
    Avro(String),
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
    #[error("field `{field}`: {msg}")]
    Field { field: String, msg: String },
    #[error("schema {name}: {msg}")]
    Schema { name: String, msg: String },
    #[error("spec: {0}")]
    Spec(String),
}

impl From<apache_avro::Error> for Error {
    fn from(e: apache_avro::Error) -> Self {
        Error::Avro(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
