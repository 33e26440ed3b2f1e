//! The typed events, one per topic, and their mapping to the Avro schemas in `schemas/`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use apache_avro::{Schema, types::Value};

use crate::binary::{self, Reader};
use crate::value::{
    Fields, as_double, as_long, as_string, field_err, map, opt, record, s, ts, unwrap_union,
};
use crate::{Result, topics};

/// An event that travels on one topic with one schema.
pub trait Event: Sized {
    /// The topic this event is produced to by default.
    const TOPIC: &'static str;
    /// The schema's JSON, as committed in `schemas/<topic>.avsc`.
    const SCHEMA_JSON: &'static str;
    /// The parsed schema (parsed once).
    fn schema() -> &'static Schema;
    /// The schema's single-object fingerprint (computed once).
    fn fingerprint() -> u64;
    fn to_value(&self) -> Value;
    fn from_value(value: Value) -> Result<Self>;
    /// The Avro binary body written directly, for the events on the hot path (see
    /// [`crate::binary`]); `false` for the rest, which go through [`Event::to_value`].
    fn write_body(&self, _out: &mut Vec<u8>) -> bool {
        false
    }
    /// The body read directly when the writer's schema is this one; `None` for events
    /// read through [`Event::from_value`].
    fn read_body(_body: &mut Reader<'_>) -> Option<Result<Self>> {
        None
    }
    /// The Kafka message key (see the topic table in ARCHITECTURE.md).
    fn key(&self) -> String;
}

macro_rules! schema_of {
    ($file:literal) => {
        const SCHEMA_JSON: &'static str = include_str!(concat!("../", $file));
        fn schema() -> &'static Schema {
            static SCHEMA: OnceLock<Schema> = OnceLock::new();
            // The schema files are part of this crate and checked by its tests.
            SCHEMA.get_or_init(|| {
                Schema::parse_str(Self::SCHEMA_JSON).expect(concat!($file, " is a valid schema"))
            })
        }
        fn fingerprint() -> u64 {
            static FINGERPRINT: OnceLock<u64> = OnceLock::new();
            *FINGERPRINT.get_or_init(|| crate::codec::fingerprint(Self::schema()))
        }
    };
}

/// Enums mirror Avro enums symbol for symbol.
macro_rules! avro_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $symbol:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const SYMBOLS: &'static [&'static str] = &[$($symbol),+];

            pub fn symbol(self) -> &'static str {
                match self { $(Self::$variant => $symbol),+ }
            }

            pub fn from_symbol(symbol: &str) -> Option<Self> {
                match symbol { $($symbol => Some(Self::$variant),)+ _ => None }
            }

            fn to_value(self) -> Value {
                Value::Enum(self.index() as u32, self.symbol().to_string())
            }

            /// The symbol's position: its Avro encoding.
            fn index(self) -> i64 {
                Self::SYMBOLS.iter().position(|s| *s == self.symbol()).unwrap_or(0) as i64
            }

            #[allow(dead_code)]
            fn from_index(index: i64, field: &str) -> Result<Self> {
                usize::try_from(index)
                    .ok()
                    .and_then(|i| Self::SYMBOLS.get(i))
                    .and_then(|s| Self::from_symbol(s))
                    .ok_or_else(|| field_err(field, format!("unknown symbol index {index}")))
            }

            fn parse(symbol: String, field: &str) -> Result<Self> {
                Self::from_symbol(&symbol)
                    .ok_or_else(|| field_err(field, format!("unknown symbol {symbol:?}")))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.symbol())
            }
        }

        /// JSON views show the Avro symbol.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.symbol())
            }
        }
    };
}

/// One feature's value: the `["null", "double", "string"]` union.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureValue {
    Missing,
    Number(f64),
    Category(String),
}

pub type Features = BTreeMap<String, FeatureValue>;

fn feature_to_value(v: &FeatureValue) -> Value {
    match v {
        FeatureValue::Missing => Value::Union(0, Box::new(Value::Null)),
        FeatureValue::Number(x) => Value::Union(1, Box::new(Value::Double(*x))),
        FeatureValue::Category(c) => Value::Union(2, Box::new(s(c))),
    }
}

fn feature_from_value(v: Value, field: &str) -> Result<FeatureValue> {
    match unwrap_union(v) {
        Value::Null => Ok(FeatureValue::Missing),
        Value::Double(x) => Ok(FeatureValue::Number(x)),
        Value::Float(x) => Ok(FeatureValue::Number(x.into())),
        Value::Long(x) => Ok(FeatureValue::Number(x as f64)),
        Value::Int(x) => Ok(FeatureValue::Number(x.into())),
        Value::String(c) => Ok(FeatureValue::Category(c)),
        other => Err(field_err(
            field,
            format!("unsupported feature value {other:?}"),
        )),
    }
}

fn features_value(f: &Features) -> Value {
    map(f, feature_to_value)
}

/// driftline.requests
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionRequest {
    pub request_id: String,
    pub model: String,
    /// Milliseconds since the Unix epoch, in the source data's time.
    pub event_time: i64,
    pub features: Features,
}

impl Event for PredictionRequest {
    const TOPIC: &'static str = topics::REQUESTS;
    schema_of!("driftline.requests.avsc");

    fn to_value(&self) -> Value {
        record(vec![
            ("request_id", s(&self.request_id)),
            ("model", s(&self.model)),
            ("event_time", ts(self.event_time)),
            ("features", features_value(&self.features)),
        ])
    }

    fn from_value(value: Value) -> Result<Self> {
        let mut f = Fields::new(value, "PredictionRequest")?;
        Ok(Self {
            request_id: f.string("request_id")?,
            model: f.string("model")?,
            event_time: f.long("event_time")?,
            features: f.map("features", feature_from_value)?,
        })
    }

    fn write_body(&self, out: &mut Vec<u8>) -> bool {
        binary::string(out, &self.request_id);
        binary::string(out, &self.model);
        binary::long(out, self.event_time);
        binary::features(out, &self.features);
        true
    }

    fn read_body(r: &mut Reader<'_>) -> Option<Result<Self>> {
        let read = |r: &mut Reader<'_>| {
            Ok(Self {
                request_id: r.string("request_id")?,
                model: r.string("model")?,
                event_time: r.long("event_time")?,
                features: r.features()?,
            })
        };
        Some(read(r))
    }

    /// The model, like its prediction's: one model's requests are in one partition, so one
    /// predictor at a time serves them, in order, and its predictions follow its requests'
    /// order through rebalances and crashes (ARCHITECTURE.md, "Keying for scale").
    fn key(&self) -> String {
        self.model.clone()
    }
}

/// A model's output for one record.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Prediction {
    pub value: Option<f64>,
    pub class: Option<String>,
    pub probabilities: BTreeMap<String, f64>,
}

avro_enum!(
    /// Where a prediction was asked for.
    PredictionSource { Kafka = "KAFKA", Http = "HTTP" }
);

/// A shadow version's answer to a request: logged beside the served prediction, never
/// returned (see `ModelStatus::Shadow`).
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowPrediction {
    pub model_version: i64,
    pub prediction: Prediction,
}

fn prediction_value(p: &Prediction) -> Value {
    record(vec![
        ("value", opt(p.value, Value::Double)),
        ("class", opt(p.class.as_deref(), s)),
        (
            "probabilities",
            map(&p.probabilities, |x| Value::Double(*x)),
        ),
    ])
}

fn prediction_from_value(value: Value, name: &str) -> Result<Prediction> {
    let mut p = Fields::new(value, name)?;
    Ok(Prediction {
        value: p.optional("value", as_double)?,
        class: p.optional("class", as_string)?,
        probabilities: p.map("probabilities", as_double)?,
    })
}

fn write_prediction(out: &mut Vec<u8>, p: &Prediction) {
    binary::optional(out, p.value, binary::double);
    binary::optional(out, p.class.as_deref(), binary::string);
    binary::map(out, p.probabilities.iter(), |out, x| {
        binary::double(out, *x)
    });
}

fn read_prediction(r: &mut Reader<'_>) -> Result<Prediction> {
    Ok(Prediction {
        value: r.optional("value", Reader::double)?,
        class: r.optional("class", Reader::string)?,
        probabilities: r.map("probabilities", |r, _| r.double("probabilities"))?,
    })
}

/// driftline.predictions
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionLogged {
    pub request_id: String,
    pub model: String,
    pub model_version: i64,
    pub event_time: i64,
    pub features: Features,
    pub prediction: Prediction,
    pub served_at: i64,
    pub latency_us: i64,
    pub source: PredictionSource,
    /// The shadow version's prediction, when one was shadowing production.
    pub shadow: Option<ShadowPrediction>,
}

impl Event for PredictionLogged {
    const TOPIC: &'static str = topics::PREDICTIONS;
    schema_of!("driftline.predictions.avsc");

    fn to_value(&self) -> Value {
        record(vec![
            ("request_id", s(&self.request_id)),
            ("model", s(&self.model)),
            ("model_version", Value::Long(self.model_version)),
            ("event_time", ts(self.event_time)),
            ("features", features_value(&self.features)),
            ("prediction", prediction_value(&self.prediction)),
            ("served_at", ts(self.served_at)),
            ("latency_us", Value::Long(self.latency_us)),
            ("source", self.source.to_value()),
            (
                "shadow",
                opt(self.shadow.as_ref(), |sh| {
                    record(vec![
                        ("model_version", Value::Long(sh.model_version)),
                        ("prediction", prediction_value(&sh.prediction)),
                    ])
                }),
            ),
        ])
    }

    fn from_value(value: Value) -> Result<Self> {
        let mut f = Fields::new(value, "PredictionLogged")?;
        Ok(Self {
            request_id: f.string("request_id")?,
            model: f.string("model")?,
            model_version: f.long("model_version")?,
            event_time: f.long("event_time")?,
            features: f.map("features", feature_from_value)?,
            prediction: prediction_from_value(f.take("prediction")?, "prediction")?,
            served_at: f.long("served_at")?,
            latency_us: f.long("latency_us")?,
            source: PredictionSource::parse(f.symbol("source")?, "source")?,
            shadow: f.optional("shadow", |v, name| {
                let mut sh = Fields::new(v, name)?;
                Ok(ShadowPrediction {
                    model_version: sh.long("model_version")?,
                    prediction: prediction_from_value(sh.take("prediction")?, "shadow.prediction")?,
                })
            })?,
        })
    }

    fn write_body(&self, out: &mut Vec<u8>) -> bool {
        binary::string(out, &self.request_id);
        binary::string(out, &self.model);
        binary::long(out, self.model_version);
        binary::long(out, self.event_time);
        binary::features(out, &self.features);
        write_prediction(out, &self.prediction);
        binary::long(out, self.served_at);
        binary::long(out, self.latency_us);
        binary::long(out, self.source.index());
        binary::optional(out, self.shadow.as_ref(), |out, sh| {
            binary::long(out, sh.model_version);
            write_prediction(out, &sh.prediction);
        });
        true
    }

    fn read_body(r: &mut Reader<'_>) -> Option<Result<Self>> {
        let read = |r: &mut Reader<'_>| {
            Ok(Self {
                request_id: r.string("request_id")?,
                model: r.string("model")?,
                model_version: r.long("model_version")?,
                event_time: r.long("event_time")?,
                features: r.features()?,
                prediction: read_prediction(r)?,
                served_at: r.long("served_at")?,
                latency_us: r.long("latency_us")?,
                source: PredictionSource::from_index(r.long("source")?, "source")?,
                shadow: r.optional("shadow", |r, _| {
                    Ok(ShadowPrediction {
                        model_version: r.long("shadow.model_version")?,
                        prediction: read_prediction(r)?,
                    })
                })?,
            })
        };
        Some(read(r))
    }

    fn key(&self) -> String {
        self.model.clone()
    }
}

/// driftline.actuals
#[derive(Debug, Clone, PartialEq)]
pub struct Actual {
    pub request_id: String,
    pub model: String,
    pub event_time: i64,
    pub value: Option<f64>,
    pub class: Option<String>,
    pub observed_at: i64,
}

impl Event for Actual {
    const TOPIC: &'static str = topics::ACTUALS;
    schema_of!("driftline.actuals.avsc");

    fn to_value(&self) -> Value {
        record(vec![
            ("request_id", s(&self.request_id)),
            ("model", s(&self.model)),
            ("event_time", ts(self.event_time)),
            ("value", opt(self.value, Value::Double)),
            ("class", opt(self.class.as_deref(), s)),
            ("observed_at", ts(self.observed_at)),
        ])
    }

    fn from_value(value: Value) -> Result<Self> {
        let mut f = Fields::new(value, "Actual")?;
        Ok(Self {
            request_id: f.string("request_id")?,
            model: f.string("model")?,
            event_time: f.long("event_time")?,
            value: f.optional("value", as_double)?,
            class: f.optional("class", as_string)?,
            observed_at: f.long("observed_at")?,
        })
    }

    fn write_body(&self, out: &mut Vec<u8>) -> bool {
        binary::string(out, &self.request_id);
        binary::string(out, &self.model);
        binary::long(out, self.event_time);
        binary::optional(out, self.value, binary::double);
        binary::optional(out, self.class.as_deref(), binary::string);
        binary::long(out, self.observed_at);
        true
    }

    fn read_body(r: &mut Reader<'_>) -> Option<Result<Self>> {
        let read = |r: &mut Reader<'_>| {
            Ok(Self {
                request_id: r.string("request_id")?,
                model: r.string("model")?,
                event_time: r.long("event_time")?,
                value: r.optional("value", Reader::double)?,
                class: r.optional("class", Reader::string)?,
                observed_at: r.long("observed_at")?,
            })
        };
        Some(read(r))
    }

    fn key(&self) -> String {
        self.model.clone()
    }
}

/// Where a message was read: its topic, partition and offset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourcePosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl SourcePosition {
    fn to_value(&self) -> Value {
        record(vec![
            ("topic", s(&self.topic)),
            ("partition", Value::Int(self.partition)),
            ("offset", Value::Long(self.offset)),
        ])
    }

    fn from_value(value: Value, name: &str) -> Result<Self> {
        let mut f = Fields::new(value, name)?;
        Ok(Self {
            topic: f.string("topic")?,
            partition: f.int("partition")?,
            offset: f.long("offset")?,
        })
    }

    fn read(r: &mut Reader<'_>, what: &str) -> Result<Self> {
        let topic = r.string(what)?;
        let partition = r.long(what)?;
        Ok(Self {
            topic,
            partition: i32::try_from(partition)
                .map_err(|_| field_err(what, format!("partition {partition} is not an int")))?,
            offset: r.long(what)?,
        })
    }
}

/// A nested event's body, read directly (both nested events have a direct reader).
fn nested<E: Event>(r: &mut Reader<'_>, what: &str) -> Result<E> {
    E::read_body(r).unwrap_or_else(|| Err(field_err(what, "no direct reader")))
}

/// driftline.labelled: a prediction joined with its ground truth (see the joiner).
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    pub prediction: PredictionLogged,
    pub actual: Actual,
    pub prediction_read_at: SourcePosition,
    pub actual_read_at: SourcePosition,
}

impl Event for Labelled {
    const TOPIC: &'static str = topics::LABELLED;
    schema_of!("driftline.labelled.avsc");

    fn to_value(&self) -> Value {
        record(vec![
            ("prediction", self.prediction.to_value()),
            ("actual", self.actual.to_value()),
            ("prediction_read_at", self.prediction_read_at.to_value()),
            ("actual_read_at", self.actual_read_at.to_value()),
        ])
    }

    fn from_value(value: Value) -> Result<Self> {
        let mut f = Fields::new(value, "Labelled")?;
        Ok(Self {
            prediction: PredictionLogged::from_value(f.take("prediction")?)?,
            actual: Actual::from_value(f.take("actual")?)?,
            prediction_read_at: SourcePosition::from_value(
                f.take("prediction_read_at")?,
                "prediction_read_at",
            )?,
            actual_read_at: SourcePosition::from_value(
                f.take("actual_read_at")?,
                "actual_read_at",
            )?,
        })
    }

    // A nested record's binary body is its fields' bodies in order.
    fn write_body(&self, out: &mut Vec<u8>) -> bool {
        self.prediction.write_body(out);
        self.actual.write_body(out);
        for at in [&self.prediction_read_at, &self.actual_read_at] {
            binary::string(out, &at.topic);
            binary::long(out, at.partition.into());
            binary::long(out, at.offset);
        }
        true
    }

    fn read_body(r: &mut Reader<'_>) -> Option<Result<Self>> {
        let read = |r: &mut Reader<'_>| {
            Ok(Self {
                prediction: nested::<PredictionLogged>(r, "prediction")?,
                actual: nested::<Actual>(r, "actual")?,
                prediction_read_at: SourcePosition::read(r, "prediction_read_at")?,
                actual_read_at: SourcePosition::read(r, "actual_read_at")?,
            })
        };
        Some(read(r))
    }

    fn key(&self) -> String {
        self.prediction.model.clone()
    }
}

avro_enum!(
    /// Numeric or categorical (used by drift reports and reference profiles).
    FeatureKind { Numeric = "NUMERIC", Categorical = "CATEGORICAL" }
);

avro_enum!(
    /// What an evaluation concluded.
    DriftDecision { NoDrift = "NO_DRIFT", Warning = "WARNING", Drift = "DRIFT" }
);

/// The span of data an evaluation looked at.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct ReportWindow {
    pub start_time: i64,
    pub end_time: i64,
    pub count: i64,
    /// "topic/partition" -> next offset.
    pub end_offsets: BTreeMap<String, i64>,
}

/// One feature's statistics in one evaluation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FeatureDrift {
    pub name: String,
    pub kind: FeatureKind,
    pub psi: Option<f64>,
    pub ks_d: Option<f64>,
    pub ks_p: Option<f64>,
    pub wasserstein_norm: Option<f64>,
    pub jensen_shannon: Option<f64>,
    pub chi2_p: Option<f64>,
    pub missing_share: f64,
    pub drifted: bool,
    /// The checks behind `drifted`.
    pub signals: Vec<Signal>,
}

/// One check behind a feature's verdict: what was measured, where it fires, how that line
/// was set.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Signal {
    pub name: String,
    pub value: f64,
    pub threshold: f64,
    pub fired: bool,
    pub method: String,
}

impl Signal {
    /// A signal whose line is a fixed setting of the policy.
    pub fn fixed(name: &str, value: f64, threshold: f64, fired: bool) -> Self {
        Self {
            name: name.into(),
            value,
            threshold,
            fired,
            method: "fixed".into(),
        }
    }

    fn to_value(&self) -> Value {
        record(vec![
            ("name", s(&self.name)),
            ("value", Value::Double(self.value)),
            ("threshold", Value::Double(self.threshold)),
            ("fired", Value::Boolean(self.fired)),
            ("method", s(&self.method)),
        ])
    }

    fn from_value(v: Value) -> Result<Self> {
        let mut x = Fields::new(v, "Signal")?;
        Ok(Signal {
            name: x.string("name")?,
            value: x.double("value")?,
            threshold: x.double("threshold")?,
            fired: x.boolean("fired")?,
            method: x.string("method")?,
        })
    }

    /// p-values fire below their line; every other signal at or above it.
    pub fn is_p_value(&self) -> bool {
        self.name.ends_with("_p")
    }
}

/// "out_of_range 40.0% >= 0.8%", "ks_p 1.2e-7 < 0.05", "wasserstein_norm 0.310 >= 0.1",
/// "jensen_shannon 0.052 < 0.087" (a line from the reference) ("<" and ">=" turn to ">=" and "<" when it did not fire).
impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (value, threshold) = match self.name.as_str() {
            "missing_share" | "out_of_range" | "unseen_category" => (
                format!("{:.1}%", self.value * 100.0),
                format!("{:.1}%", self.threshold * 100.0),
            ),
            _ if self.is_p_value() => (format!("{:.1e}", self.value), self.threshold.to_string()),
            // A fixed line reads as it was set; one from the reference has many digits.
            _ if self.method == "fixed" => {
                (format!("{:.3}", self.value), self.threshold.to_string())
            }
            _ => (
                format!("{:.3}", self.value),
                format!("{:.3}", self.threshold),
            ),
        };
        let op = match (self.is_p_value(), self.fired) {
            (true, true) | (false, false) => "<",
            (true, false) | (false, true) => ">=",
        };
        write!(f, "{} {value} {op} {threshold}", self.name)
    }
}

impl FeatureDrift {
    /// The signal that decided a drifted feature: the first that fired, in the policy's
    /// order (data quality, then the statistic's rule).
    pub fn deciding_signal(&self) -> Option<&Signal> {
        self.signals.iter().find(|s| s.fired)
    }

    fn to_value(&self) -> Value {
        record(vec![
            ("name", s(&self.name)),
            ("kind", self.kind.to_value()),
            ("psi", opt(self.psi, Value::Double)),
            ("ks_d", opt(self.ks_d, Value::Double)),
            ("ks_p", opt(self.ks_p, Value::Double)),
            (
                "wasserstein_norm",
                opt(self.wasserstein_norm, Value::Double),
            ),
            ("jensen_shannon", opt(self.jensen_shannon, Value::Double)),
            ("chi2_p", opt(self.chi2_p, Value::Double)),
            ("missing_share", Value::Double(self.missing_share)),
            ("drifted", Value::Boolean(self.drifted)),
            (
                "signals",
                Value::Array(self.signals.iter().map(Signal::to_value).collect()),
            ),
        ])
    }

    fn from_value(value: Value, _field: &str) -> Result<Self> {
        let mut f = Fields::new(value, "FeatureDrift")?;
        Ok(Self {
            name: f.string("name")?,
            kind: FeatureKind::parse(f.symbol("kind")?, "kind")?,
            psi: f.optional("psi", as_double)?,
            ks_d: f.optional("ks_d", as_double)?,
            ks_p: f.optional("ks_p", as_double)?,
            wasserstein_norm: f.optional("wasserstein_norm", as_double)?,
            jensen_shannon: f.optional("jensen_shannon", as_double)?,
            chi2_p: f.optional("chi2_p", as_double)?,
            missing_share: f.double("missing_share")?,
            drifted: f.boolean("drifted")?,
            signals: f.array("signals", |v, _| Signal::from_value(v))?,
        })
    }
}

/// An error metric now, beside the model's holdout value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MetricComparison {
    pub metric: String,
    pub current: f64,
    pub reference: Option<f64>,
}

/// driftline.drift. Its serde form (field names and symbols as in the Avro schema) is the
/// one JSON view of a report: the monitor's HTTP API, `backtest` and the dashboard.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DriftReport {
    pub report_id: String,
    pub model: String,
    pub model_version: i64,
    pub evaluated_at: i64,
    pub window: ReportWindow,
    pub features: Vec<FeatureDrift>,
    pub prediction: Option<FeatureDrift>,
    pub performance: Vec<MetricComparison>,
    pub share_drifted: f64,
    pub decision: DriftDecision,
    pub reason: String,
    /// The multivariate check (the window's mean PCA reconstruction error), when the
    /// version's record carries its reference.
    pub multivariate: Option<Signal>,
    /// The window's performance estimated before labels, when the version has an estimator.
    pub estimated: Option<EstimatedPerformance>,
}

/// A performance metric estimated from the predictions alone (NannyML's CBPE), with its
/// band, the realised value when labels have arrived, and the check on a drop.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EstimatedPerformance {
    pub metric: String,
    pub value: f64,
    pub lower: f64,
    pub upper: f64,
    /// The holdout's realised value.
    pub reference: Option<f64>,
    /// Over the labelled predictions, when there are any.
    pub realised: Option<f64>,
    /// The estimated error against its line (absent without the holdout's sub-windows).
    pub signal: Option<Signal>,
}

impl EstimatedPerformance {
    fn to_value(&self) -> Value {
        record(vec![
            ("metric", s(&self.metric)),
            ("value", Value::Double(self.value)),
            ("lower", Value::Double(self.lower)),
            ("upper", Value::Double(self.upper)),
            ("reference", opt(self.reference, Value::Double)),
            ("realised", opt(self.realised, Value::Double)),
            ("signal", opt(self.signal.as_ref(), Signal::to_value)),
        ])
    }

    fn from_value(v: Value) -> Result<Self> {
        let mut e = Fields::new(v, "EstimatedPerformance")?;
        Ok(Self {
            metric: e.string("metric")?,
            value: e.double("value")?,
            lower: e.double("lower")?,
            upper: e.double("upper")?,
            reference: e.optional("reference", as_double)?,
            realised: e.optional("realised", as_double)?,
            signal: e.optional("signal", |v, _| Signal::from_value(v))?,
        })
    }
}

impl Event for DriftReport {
    const TOPIC: &'static str = topics::DRIFT;
    schema_of!("driftline.drift.avsc");

    fn to_value(&self) -> Value {
        let w = &self.window;
        record(vec![
            ("report_id", s(&self.report_id)),
            ("model", s(&self.model)),
            ("model_version", Value::Long(self.model_version)),
            ("evaluated_at", ts(self.evaluated_at)),
            (
                "window",
                record(vec![
                    ("start_time", ts(w.start_time)),
                    ("end_time", ts(w.end_time)),
                    ("count", Value::Long(w.count)),
                    ("end_offsets", map(&w.end_offsets, |x| Value::Long(*x))),
                ]),
            ),
            (
                "features",
                Value::Array(self.features.iter().map(FeatureDrift::to_value).collect()),
            ),
            (
                "prediction",
                opt(self.prediction.as_ref(), FeatureDrift::to_value),
            ),
            (
                "performance",
                Value::Array(
                    self.performance
                        .iter()
                        .map(|m| {
                            record(vec![
                                ("metric", s(&m.metric)),
                                ("current", Value::Double(m.current)),
                                ("reference", opt(m.reference, Value::Double)),
                            ])
                        })
                        .collect(),
                ),
            ),
            ("share_drifted", Value::Double(self.share_drifted)),
            ("decision", self.decision.to_value()),
            ("reason", s(&self.reason)),
            (
                "multivariate",
                opt(self.multivariate.as_ref(), Signal::to_value),
            ),
            (
                "estimated",
                opt(self.estimated.as_ref(), EstimatedPerformance::to_value),
            ),
        ])
    }

    fn from_value(value: Value) -> Result<Self> {
        let mut f = Fields::new(value, "DriftReport")?;
        let mut w = Fields::new(f.take("window")?, "window")?;
        Ok(Self {
            report_id: f.string("report_id")?,
            model: f.string("model")?,
            model_version: f.long("model_version")?,
            evaluated_at: f.long("evaluated_at")?,
            window: ReportWindow {
                start_time: w.long("start_time")?,
                end_time: w.long("end_time")?,
                count: w.long("count")?,
                end_offsets: w.map("end_offsets", as_long)?,
            },
            features: f.array("features", FeatureDrift::from_value)?,
            prediction: f.optional("prediction", FeatureDrift::from_value)?,
            performance: f.array("performance", |v, _| {
                let mut m = Fields::new(v, "MetricComparison")?;
                Ok(MetricComparison {
                    metric: m.string("metric")?,
                    current: m.double("current")?,
                    reference: m.optional("reference", as_double)?,
                })
            })?,
            share_drifted: f.double("share_drifted")?,
            decision: DriftDecision::parse(f.symbol("decision")?, "decision")?,
            reason: f.string("reason")?,
            multivariate: f.optional("multivariate", |v, _| Signal::from_value(v))?,
            estimated: f.optional("estimated", |v, _| EstimatedPerformance::from_value(v))?,
        })
    }

    fn key(&self) -> String {
        self.model.clone()
    }
}

avro_enum!(
    /// Why a retrain was asked for.
    RetrainTrigger {
        Bootstrap = "BOOTSTRAP",
        Drift = "DRIFT",
        Performance = "PERFORMANCE",
        Schedule = "SCHEDULE",
        Manual = "MANUAL",
    }
);

/// driftline.retrain
#[derive(Debug, Clone, PartialEq)]
pub struct RetrainRequested {
    pub retrain_id: String,
    pub model: String,
    pub model_version: i64,
    pub trigger: RetrainTrigger,
    pub reason: String,
    pub report_id: Option<String>,
    pub drifted_features: Vec<String>,
    pub window_start: i64,
    pub window_end: i64,
    pub requested_at: i64,
    /// `topic/partition` -> next offset: the labelled rows to train on are those below
    /// (the monitor's position when it asked); empty = what the trainer holds when it runs.
    pub end_offsets: BTreeMap<String, i64>,
}

impl Event for RetrainRequested {
    const TOPIC: &'static str = topics::RETRAIN;
    schema_of!("driftline.retrain.avsc");

    fn to_value(&self) -> Value {
        record(vec![
            ("retrain_id", s(&self.retrain_id)),
            ("model", s(&self.model)),
            ("model_version", Value::Long(self.model_version)),
            ("trigger", self.trigger.to_value()),
            ("reason", s(&self.reason)),
            ("report_id", opt(self.report_id.as_deref(), s)),
            (
                "drifted_features",
                Value::Array(self.drifted_features.iter().map(|x| s(x)).collect()),
            ),
            ("window_start", ts(self.window_start)),
            ("window_end", ts(self.window_end)),
            ("requested_at", ts(self.requested_at)),
            ("end_offsets", map(&self.end_offsets, |x| Value::Long(*x))),
        ])
    }

    fn from_value(value: Value) -> Result<Self> {
        let mut f = Fields::new(value, "RetrainRequested")?;
        Ok(Self {
            retrain_id: f.string("retrain_id")?,
            model: f.string("model")?,
            model_version: f.long("model_version")?,
            trigger: RetrainTrigger::parse(f.symbol("trigger")?, "trigger")?,
            reason: f.string("reason")?,
            report_id: f.optional("report_id", as_string)?,
            drifted_features: f.array("drifted_features", as_string)?,
            window_start: f.long("window_start")?,
            window_end: f.long("window_end")?,
            requested_at: f.long("requested_at")?,
            end_offsets: f.map("end_offsets", as_long)?,
        })
    }

    fn key(&self) -> String {
        self.model.clone()
    }
}

avro_enum!(
    /// A version's place in the registry.
    ModelStatus {
        Candidate = "CANDIDATE",
        Production = "PRODUCTION",
        Rejected = "REJECTED",
        RolledBack = "ROLLED_BACK",
        Canary = "CANARY",
        Shadow = "SHADOW",
    }
);

/// The rows a version was fitted and judged on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrainingWindow {
    pub start_time: i64,
    pub end_time: i64,
    pub train_rows: i64,
    pub holdout_rows: i64,
    /// "topic/partition" -> next offset, past the newest message behind any of the rows
    /// (as in [`ReportWindow::end_offsets`]); empty when the rows did not come from topics.
    pub end_offsets: BTreeMap<String, i64>,
}

/// What the monitor compares live traffic with, per feature.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureProfile {
    pub name: String,
    pub kind: FeatureKind,
    pub count: i64,
    pub missing: i64,
    /// Sorted sample of the reference values (numeric features).
    pub sample: Vec<f64>,
    /// Category counts (categorical features).
    pub categories: BTreeMap<String, i64>,
    /// How the feature's drift distance varies between sub-windows of the reference (empty:
    /// fixed thresholds).
    pub sub_windows: Vec<SubWindows>,
}

/// A statistic over the consecutive sub-windows of one size of time-ordered rows.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SubWindows {
    /// Rows per sub-window.
    pub window: i64,
    /// Sub-windows measured.
    pub count: i64,
    pub mean: f64,
    /// Sample standard deviation over the sub-windows.
    pub sd: f64,
}

impl SubWindows {
    fn to_value(self) -> Value {
        record(vec![
            ("window", Value::Long(self.window)),
            ("count", Value::Long(self.count)),
            ("mean", Value::Double(self.mean)),
            ("sd", Value::Double(self.sd)),
        ])
    }

    fn from_value(v: Value) -> Result<Self> {
        let mut x = Fields::new(v, "SubWindows")?;
        Ok(Self {
            window: x.long("window")?,
            count: x.long("count")?,
            mean: x.double("mean")?,
            sd: x.double("sd")?,
        })
    }
}

fn sub_windows_value(w: &[SubWindows]) -> Value {
    Value::Array(w.iter().map(|x| x.to_value()).collect())
}

/// The PCA of a reference behind the multivariate drift check (see `driftline_drift::multivariate`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reconstruction {
    pub columns: Vec<ReconstructionColumn>,
    /// The standardised columns' means.
    pub center: Vec<f64>,
    /// The principal axes kept, each over the columns.
    pub components: Vec<Vec<f64>>,
    pub explained_variance: f64,
    /// The mean per-row error over sub-windows of the reference in time order.
    pub sub_windows: Vec<SubWindows>,
}

/// How one column is encoded and standardised.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconstructionColumn {
    pub name: String,
    pub kind: FeatureKind,
    /// The encoded value of a missing cell.
    pub fill: f64,
    /// Each label's share of the reference (categorical).
    pub frequencies: BTreeMap<String, f64>,
    pub mean: f64,
    pub scale: f64,
}

impl Reconstruction {
    fn to_value(&self) -> Value {
        let doubles = |xs: &[f64]| Value::Array(xs.iter().map(|x| Value::Double(*x)).collect());
        let columns = self
            .columns
            .iter()
            .map(|c| {
                record(vec![
                    ("name", s(&c.name)),
                    ("kind", c.kind.to_value()),
                    ("fill", Value::Double(c.fill)),
                    ("frequencies", map(&c.frequencies, |x| Value::Double(*x))),
                    ("mean", Value::Double(c.mean)),
                    ("scale", Value::Double(c.scale)),
                ])
            })
            .collect();
        record(vec![
            ("columns", Value::Array(columns)),
            ("center", doubles(&self.center)),
            (
                "components",
                Value::Array(self.components.iter().map(|c| doubles(c)).collect()),
            ),
            ("explained_variance", Value::Double(self.explained_variance)),
            ("sub_windows", sub_windows_value(&self.sub_windows)),
        ])
    }

    fn from_value(v: Value) -> Result<Self> {
        let mut r = Fields::new(v, "Reconstruction")?;
        Ok(Self {
            columns: r.array("columns", |v, _| {
                let mut c = Fields::new(v, "ReconstructionColumn")?;
                Ok(ReconstructionColumn {
                    name: c.string("name")?,
                    kind: FeatureKind::parse(c.symbol("kind")?, "kind")?,
                    fill: c.double("fill")?,
                    frequencies: c.map("frequencies", as_double)?,
                    mean: c.double("mean")?,
                    scale: c.double("scale")?,
                })
            })?,
            center: r.array("center", as_double)?,
            components: r.array("components", |v, name| match unwrap_union(v) {
                Value::Array(xs) => xs.into_iter().map(|x| as_double(x, name)).collect(),
                _ => Err(field_err(name, "expected an array of doubles")),
            })?,
            explained_variance: r.double("explained_variance")?,
            sub_windows: r.array("sub_windows", |v, _| SubWindows::from_value(v))?,
        })
    }
}

/// driftline.progress (compacted; key `model`): every version of `model` still to come
/// takes effect after `decided_until` (event time), and `version` is the newest published
/// when this was written, so a predictor that holds it may answer any request up to
/// `decided_until` with what it has.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelProgress {
    pub model: String,
    pub decided_until: i64,
    pub version: i64,
    pub published_at: i64,
}

impl Event for ModelProgress {
    const TOPIC: &'static str = topics::PROGRESS;
    schema_of!("driftline.progress.avsc");

    fn to_value(&self) -> Value {
        record(vec![
            ("model", s(&self.model)),
            ("decided_until", ts(self.decided_until)),
            ("version", Value::Long(self.version)),
            ("published_at", ts(self.published_at)),
        ])
    }

    fn from_value(value: Value) -> Result<Self> {
        let mut f = Fields::new(value, "ModelProgress")?;
        Ok(Self {
            model: f.string("model")?,
            decided_until: f.long("decided_until")?,
            version: f.long("version")?,
            published_at: f.long("published_at")?,
        })
    }

    fn key(&self) -> String {
        self.model.clone()
    }
}

/// driftline.models (compacted; key `model/version`)
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPublished {
    pub model: String,
    pub version: i64,
    pub algorithm: String,
    pub hyper_parameters: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, f64>,
    pub incumbent_metrics: BTreeMap<String, f64>,
    pub parent_version: Option<i64>,
    pub trigger: String,
    pub training_window: TrainingWindow,
    pub reference_profile: Vec<FeatureProfile>,
    pub model_format: String,
    pub model_bytes: Vec<u8>,
    pub status: ModelStatus,
    pub published_at: i64,
    /// For [`ModelStatus::Canary`]: the share of requests, in (0, 1], it answers.
    pub traffic_share: f64,
    /// How the holdout's mean error varies between its sub-windows (empty: the fixed rise).
    pub error_sub_windows: Vec<SubWindows>,
    /// Permutation importance on the holdout, per feature.
    pub feature_importance: BTreeMap<String, f64>,
    /// The PCA of the reference behind the multivariate drift check.
    pub multivariate: Option<Reconstruction>,
    /// A classifier's accuracy before labels (CBPE).
    pub performance_estimator: Option<PerformanceEstimator>,
    /// A regressor's mean absolute error before labels (DLE).
    pub error_estimator: Option<ErrorEstimator>,
    /// For [`ModelStatus::Production`]: the event time from which it answers requests
    /// (earlier ones go to the production version before it); `None`: from arrival.
    pub effective_from: Option<i64>,
}

/// What the monitor needs to estimate a classifier's accuracy before labels (see
/// `driftline_drift::estimate`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PerformanceEstimator {
    /// Binary: the positive class alone; multiclass: every class.
    pub classes: Vec<ClassCalibration>,
    /// Sample standard deviation of the holdout's 0/1 correctness.
    pub correct_sd: f64,
    /// The mean estimated error over sub-windows of the holdout in time order.
    pub sub_windows: Vec<SubWindows>,
}

/// A class's isotonic calibration (empty: its probability as it is).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClassCalibration {
    pub class: String,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

/// What the monitor needs to estimate a regressor's mean absolute error before labels (see
/// `driftline_model::loss`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ErrorEstimator {
    pub model_format: String,
    /// The error model, in `model_format`.
    pub model_bytes: Vec<u8>,
    /// Standard deviation of the holdout's absolute errors.
    pub error_sd: f64,
}

impl ErrorEstimator {
    fn to_value(&self) -> Value {
        record(vec![
            ("model_format", s(&self.model_format)),
            ("model_bytes", Value::Bytes(self.model_bytes.clone())),
            ("error_sd", Value::Double(self.error_sd)),
        ])
    }

    fn from_value(v: Value) -> Result<Self> {
        let mut e = Fields::new(v, "ErrorEstimator")?;
        Ok(Self {
            model_format: e.string("model_format")?,
            model_bytes: e.bytes("model_bytes")?,
            error_sd: e.double("error_sd")?,
        })
    }
}

impl PerformanceEstimator {
    fn to_value(&self) -> Value {
        let doubles = |xs: &[f64]| Value::Array(xs.iter().map(|x| Value::Double(*x)).collect());
        let classes = self
            .classes
            .iter()
            .map(|c| {
                record(vec![
                    ("class", s(&c.class)),
                    ("x", doubles(&c.x)),
                    ("y", doubles(&c.y)),
                ])
            })
            .collect();
        record(vec![
            ("classes", Value::Array(classes)),
            ("correct_sd", Value::Double(self.correct_sd)),
            ("sub_windows", sub_windows_value(&self.sub_windows)),
        ])
    }

    fn from_value(v: Value) -> Result<Self> {
        let mut e = Fields::new(v, "PerformanceEstimator")?;
        Ok(Self {
            classes: e.array("classes", |v, _| {
                let mut c = Fields::new(v, "ClassCalibration")?;
                Ok(ClassCalibration {
                    class: c.string("class")?,
                    x: c.array("x", as_double)?,
                    y: c.array("y", as_double)?,
                })
            })?,
            correct_sd: e.double("correct_sd")?,
            sub_windows: e.array("sub_windows", |v, _| SubWindows::from_value(v))?,
        })
    }
}

impl Event for ModelPublished {
    const TOPIC: &'static str = topics::MODELS;
    schema_of!("driftline.models.avsc");

    fn to_value(&self) -> Value {
        let w = &self.training_window;
        let profile = self
            .reference_profile
            .iter()
            .map(|p| {
                // ProfileKind has FeatureKind's symbols.
                record(vec![
                    ("name", s(&p.name)),
                    ("kind", p.kind.to_value()),
                    ("count", Value::Long(p.count)),
                    ("missing", Value::Long(p.missing)),
                    (
                        "sample",
                        Value::Array(p.sample.iter().map(|x| Value::Double(*x)).collect()),
                    ),
                    ("categories", map(&p.categories, |x| Value::Long(*x))),
                    ("sub_windows", sub_windows_value(&p.sub_windows)),
                ])
            })
            .collect();
        record(vec![
            ("model", s(&self.model)),
            ("version", Value::Long(self.version)),
            ("algorithm", s(&self.algorithm)),
            ("hyper_parameters", map(&self.hyper_parameters, |x| s(x))),
            ("metrics", map(&self.metrics, |x| Value::Double(*x))),
            (
                "incumbent_metrics",
                map(&self.incumbent_metrics, |x| Value::Double(*x)),
            ),
            ("parent_version", opt(self.parent_version, Value::Long)),
            ("trigger", s(&self.trigger)),
            (
                "training_window",
                record(vec![
                    ("start_time", ts(w.start_time)),
                    ("end_time", ts(w.end_time)),
                    ("train_rows", Value::Long(w.train_rows)),
                    ("holdout_rows", Value::Long(w.holdout_rows)),
                    ("end_offsets", map(&w.end_offsets, |x| Value::Long(*x))),
                ]),
            ),
            ("reference_profile", Value::Array(profile)),
            ("model_format", s(&self.model_format)),
            ("model_bytes", Value::Bytes(self.model_bytes.clone())),
            ("status", self.status.to_value()),
            ("published_at", ts(self.published_at)),
            ("traffic_share", Value::Double(self.traffic_share)),
            (
                "error_sub_windows",
                sub_windows_value(&self.error_sub_windows),
            ),
            (
                "feature_importance",
                map(&self.feature_importance, |x| Value::Double(*x)),
            ),
            (
                "multivariate",
                opt(self.multivariate.as_ref(), Reconstruction::to_value),
            ),
            (
                "performance_estimator",
                opt(
                    self.performance_estimator.as_ref(),
                    PerformanceEstimator::to_value,
                ),
            ),
            (
                "error_estimator",
                opt(self.error_estimator.as_ref(), ErrorEstimator::to_value),
            ),
            ("effective_from", opt(self.effective_from, ts)),
        ])
    }

    fn from_value(value: Value) -> Result<Self> {
        let mut f = Fields::new(value, "ModelPublished")?;
        let mut w = Fields::new(f.take("training_window")?, "training_window")?;
        Ok(Self {
            model: f.string("model")?,
            version: f.long("version")?,
            algorithm: f.string("algorithm")?,
            hyper_parameters: f.map("hyper_parameters", as_string)?,
            metrics: f.map("metrics", as_double)?,
            incumbent_metrics: f.map("incumbent_metrics", as_double)?,
            parent_version: f.optional("parent_version", as_long)?,
            trigger: f.string("trigger")?,
            training_window: TrainingWindow {
                start_time: w.long("start_time")?,
                end_time: w.long("end_time")?,
                train_rows: w.long("train_rows")?,
                holdout_rows: w.long("holdout_rows")?,
                end_offsets: w.map("end_offsets", as_long)?,
            },
            reference_profile: f.array("reference_profile", |v, _| {
                let mut p = Fields::new(v, "FeatureProfile")?;
                Ok(FeatureProfile {
                    name: p.string("name")?,
                    kind: FeatureKind::parse(p.symbol("kind")?, "kind")?,
                    count: p.long("count")?,
                    missing: p.long("missing")?,
                    sample: p.array("sample", as_double)?,
                    categories: p.map("categories", as_long)?,
                    sub_windows: p.array("sub_windows", |v, _| SubWindows::from_value(v))?,
                })
            })?,
            model_format: f.string("model_format")?,
            model_bytes: f.bytes("model_bytes")?,
            status: ModelStatus::parse(f.symbol("status")?, "status")?,
            published_at: f.long("published_at")?,
            traffic_share: f.double("traffic_share")?,
            error_sub_windows: f.array("error_sub_windows", |v, _| SubWindows::from_value(v))?,
            feature_importance: f.map("feature_importance", as_double)?,
            multivariate: f.optional("multivariate", |v, _| Reconstruction::from_value(v))?,
            performance_estimator: f.optional("performance_estimator", |v, _| {
                PerformanceEstimator::from_value(v)
            })?,
            error_estimator: f.optional("error_estimator", |v, _| ErrorEstimator::from_value(v))?,
            effective_from: f.optional("effective_from", as_long)?,
        })
    }

    /// One key per version, so compaction keeps every version's latest status.
    fn key(&self) -> String {
        format!("{}/{}", self.model, self.version)
    }
}

/// driftline.dlq
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub error_kind: String,
    pub error: String,
    pub consumer: String,
    pub failed_at: i64,
    /// When `payload` holds only the first bytes of the source payload: its whole size...
    pub payload_size: Option<i64>,
    /// ...and its SHA-256 (hex).
    pub payload_sha256: Option<String>,
}

impl Event for DeadLetter {
    const TOPIC: &'static str = topics::DLQ;
    schema_of!("driftline.dlq.avsc");

    fn to_value(&self) -> Value {
        record(vec![
            ("source_topic", s(&self.source_topic)),
            ("source_partition", Value::Int(self.source_partition)),
            ("source_offset", Value::Long(self.source_offset)),
            ("key", opt(self.key.clone(), Value::Bytes)),
            ("payload", opt(self.payload.clone(), Value::Bytes)),
            ("error_kind", s(&self.error_kind)),
            ("error", s(&self.error)),
            ("consumer", s(&self.consumer)),
            ("failed_at", ts(self.failed_at)),
            ("payload_size", opt(self.payload_size, Value::Long)),
            (
                "payload_sha256",
                opt(self.payload_sha256.clone(), Value::String),
            ),
        ])
    }

    fn from_value(value: Value) -> Result<Self> {
        let mut f = Fields::new(value, "DeadLetter")?;
        Ok(Self {
            source_topic: f.string("source_topic")?,
            source_partition: f.int("source_partition")?,
            source_offset: f.long("source_offset")?,
            key: f.optional("key", crate::value::as_bytes)?,
            payload: f.optional("payload", crate::value::as_bytes)?,
            error_kind: f.string("error_kind")?,
            error: f.string("error")?,
            consumer: f.string("consumer")?,
            failed_at: f.long("failed_at")?,
            payload_size: f.optional("payload_size", crate::value::as_long)?,
            payload_sha256: f.optional("payload_sha256", crate::value::as_string)?,
        })
    }

    fn key(&self) -> String {
        self.key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default()
    }
}

/// Every current schema, for registering writers and for tooling.
/// The key of an `end_offsets` map (reports, retrain requests, training windows): the
/// writer of a position and its reader must spell it the same.
pub fn offsets_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

pub fn all_schemas() -> [(&'static str, &'static Schema); 9] {
    [
        (PredictionRequest::TOPIC, PredictionRequest::schema()),
        (PredictionLogged::TOPIC, PredictionLogged::schema()),
        (Actual::TOPIC, Actual::schema()),
        (Labelled::TOPIC, Labelled::schema()),
        (DriftReport::TOPIC, DriftReport::schema()),
        (RetrainRequested::TOPIC, RetrainRequested::schema()),
        (ModelPublished::TOPIC, ModelPublished::schema()),
        (DeadLetter::TOPIC, DeadLetter::schema()),
        (ModelProgress::TOPIC, ModelProgress::schema()),
    ]
}

#[cfg(test)]
mod tests {
    use super::Signal;

    #[test]
    fn a_signal_reads_as_its_value_against_its_line_in_the_direction_it_fires() {
        let cases = [
            (
                Signal::fixed("out_of_range", 0.4, 0.008, true),
                "out_of_range 40.0% >= 0.8%",
            ),
            (
                Signal::fixed("missing_share", 0.01, 0.02, false),
                "missing_share 1.0% < 2.0%",
            ),
            (
                Signal::fixed("ks_p", 1.2e-7, 0.05, true),
                "ks_p 1.2e-7 < 0.05",
            ),
            (
                Signal::fixed("chi2_p", 0.3, 0.05, false),
                "chi2_p 3.0e-1 >= 0.05",
            ),
            (
                Signal::fixed("wasserstein_norm", 0.31, 0.1, true),
                "wasserstein_norm 0.310 >= 0.1",
            ),
            (
                Signal {
                    method: "from the reference's sub-windows".into(),
                    ..Signal::fixed("jensen_shannon", 0.0523, 0.08712345, false)
                },
                "jensen_shannon 0.052 < 0.087",
            ),
        ];
        for (s, text) in cases {
            assert_eq!(s.to_string(), text);
        }
    }
}
