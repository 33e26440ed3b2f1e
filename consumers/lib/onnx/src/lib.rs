//! Imported models: an ONNX graph from a team's own training (scikit-learn pipelines by
//! skl2onnx, LightGBM or XGBoost by onnxmltools), run by tract, pure Rust. The ONNX-ML
//! operators those converters emit and tract lacks are in [`ml`].
//!
//! How a row's features feed the graph, by the model's feature spec:
//! - an input named after a feature takes that feature as a `[N, 1]` column: `float` for a
//!   numeric feature (missing is NaN), `string` for a categorical one (missing is the
//!   empty string, which no category matches);
//! - an input of width `k` not named after a feature (a converter's single `input`)
//!   takes the spec's features in order, which must then all be numeric (`k` of them).
//!
//! What comes out, by the spec's target kind: a regression's first output (`[N]` or
//! `[N, 1]`); a classifier's `[N, C]` probabilities (the converters' `zipmap=False`),
//! named by the class labels of the graph's classifier node, and its winning label.

pub mod ml;

use driftline_schemas::events::{FeatureValue, Features, Prediction};
use driftline_schemas::spec::{FeatureSpec, Kind, TargetKind};
use tract_onnx::pb::ModelProto;
use tract_onnx::pb_helpers::AttrTVecType;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::internal::InferenceFact;

/// What goes wrong with an imported model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the ONNX model cannot be loaded: {0}")]
    Load(String),
    #[error("the ONNX model does not fit the feature spec: {0}")]
    Spec(String),
    #[error("running the ONNX model: {0}")]
    Run(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The `model_format` of an imported model's record.
pub const FORMAT: &str = "onnx";

/// How one graph input is fed.
#[derive(Debug, Clone)]
enum Feed {
    /// One feature as a `[N, 1]` column.
    Column { feature: String, text: bool },
    /// Several numeric features side by side, `[N, k]`.
    Numbers(Vec<String>),
}

#[derive(Debug, Clone)]
enum Output {
    Value,
    /// Probability columns, named by the class labels.
    Classes(Vec<String>),
}

/// An ONNX model, optimised for batches of any size, ready to predict.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    plan: Arc<TypedSimplePlan>,
    feeds: Vec<Feed>,
    output: Output,
}

fn load_err(e: impl std::fmt::Display) -> Error {
    Error::Load(format!("{e:#}"))
}

/// Tract's ONNX reader with the ONNX-ML operators it lacks.
fn reader() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    ml::register(&mut onnx.op_register);
    onnx
}

impl OnnxModel {
    /// Loads `bytes` (an ONNX `ModelProto`) for rows of `spec`'s features.
    pub fn load(bytes: &[u8], spec: &FeatureSpec) -> Result<Self> {
        let onnx = reader();
        let proto = onnx.proto_model_for_read(&mut &*bytes).map_err(load_err)?;
        let output = output_of(&proto, spec.target.kind)?;
        let model = onnx.model_for_proto_model(&proto).map_err(load_err)?;
        let mut feeds = Vec::new();
        for outlet in model.input_outlets().map_err(load_err)? {
            let name = model.node(outlet.node).name.clone();
            let fact = model.outlet_fact(*outlet).map_err(load_err)?;
            let text = fact.datum_type.concretize() == Some(String::datum_type());
            feeds.push(feed_of(spec, &name, text)?);
        }
        // One plan for batches of any size (a plan for single rows alone, with a fixed
        // size, measured no faster).
        let batch = model.symbols.sym("N").to_dim();
        let plan = planned(model, &feeds, batch)?;
        Ok(Self {
            plan,
            feeds,
            output,
        })
    }

    /// One prediction per row.
    pub fn predict_batch(&self, rows: &[&Features]) -> Result<Vec<Prediction>> {
        let n = rows.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let run_err = |e: TractError| Error::Run(format!("{e:#}"));
        let mut inputs: TVec<TValue> = tvec![];
        for feed in &self.feeds {
            let tensor = match feed {
                Feed::Column {
                    feature,
                    text: true,
                } => {
                    let v: Vec<String> = rows.iter().map(|r| text(r.get(feature))).collect();
                    tract_ndarray::Array2::from_shape_vec((n, 1), v)
                        .map_err(|e| Error::Run(e.to_string()))?
                        .into_tensor()
                }
                Feed::Column { feature, .. } => {
                    let v: Vec<f32> = rows.iter().map(|r| number(r.get(feature))).collect();
                    Tensor::from_shape(&[n, 1], &v).map_err(run_err)?
                }
                Feed::Numbers(features) => {
                    let v: Vec<f32> = rows
                        .iter()
                        .flat_map(|r| features.iter().map(|f| number(r.get(f))))
                        .collect();
                    Tensor::from_shape(&[n, features.len()], &v).map_err(run_err)?
                }
            };
            inputs.push(tensor.into_tvalue());
        }
        let outputs = self.plan.run(inputs).map_err(run_err)?;
        match &self.output {
            Output::Value => {
                let values = outputs
                    .first()
                    .ok_or_else(|| Error::Run("the model has no output".into()))?
                    .cast_to::<f64>()
                    .map_err(run_err)?;
                let values = values.try_as_plain_ram().map_err(run_err)?;
                let values = values.as_slice::<f64>().map_err(run_err)?;
                if values.len() != n {
                    return Err(Error::Run(format!(
                        "{} values for {n} rows (one target is supported)",
                        values.len()
                    )));
                }
                Ok(values
                    .iter()
                    .map(|v| Prediction {
                        value: Some(*v),
                        ..Default::default()
                    })
                    .collect())
            }
            Output::Classes(labels) => {
                let c = labels.len();
                let proba = outputs
                    .iter()
                    .find(|t| t.rank() == 2 && t.shape() == [n, c])
                    .ok_or_else(|| {
                        Error::Run(format!(
                            "no [{n}, {c}] probabilities among the outputs (export with zipmap=False)"
                        ))
                    })?
                    .cast_to::<f64>()
                    .map_err(run_err)?;
                let proba = proba.try_as_plain_ram().map_err(run_err)?;
                let proba = proba.as_slice::<f64>().map_err(run_err)?;
                Ok(proba
                    .chunks(c)
                    .map(|p| {
                        let best = (0..c).fold(0, |b, j| if p[j] > p[b] { j } else { b });
                        Prediction {
                            value: None,
                            class: Some(labels[best].clone()),
                            probabilities: labels.iter().cloned().zip(p.iter().copied()).collect(),
                        }
                    })
                    .collect())
            }
        }
    }
}

/// How the graph input `name` (a string input if `text`) is fed from `spec`'s features.
fn feed_of(spec: &FeatureSpec, name: &str, text: bool) -> Result<Feed> {
    match spec.features.iter().find(|f| f.name == name) {
        Some(f) => {
            if text != (f.kind == Kind::Categorical) {
                return Err(Error::Spec(format!(
                    "input `{name}` is {} but feature `{name}` is {:?}",
                    if text { "a string" } else { "a number" },
                    f.kind
                )));
            }
            Ok(Feed::Column {
                feature: name.to_string(),
                text,
            })
        }
        None if !text => {
            if let Some(f) = spec.features.iter().find(|f| f.kind != Kind::Numeric) {
                return Err(Error::Spec(format!(
                    "input `{name}` takes the spec's features in order, and `{}` is not numeric (name an input after each feature instead)",
                    f.name
                )));
            }
            Ok(Feed::Numbers(
                spec.features.iter().map(|f| f.name.clone()).collect(),
            ))
        }
        None => Err(Error::Spec(format!(
            "string input `{name}` is not a feature of the spec"
        ))),
    }
}

/// `model` with its inputs fed as `feeds` for `batch` rows, optimised and runnable.
fn planned(mut model: InferenceModel, feeds: &[Feed], batch: TDim) -> Result<Arc<TypedSimplePlan>> {
    for (i, feed) in feeds.iter().enumerate() {
        let (dt, width) = match feed {
            Feed::Column { text: true, .. } => (String::datum_type(), 1),
            Feed::Column { .. } => (f32::datum_type(), 1),
            Feed::Numbers(f) => (f32::datum_type(), f.len()),
        };
        let shape = tvec![batch.clone(), width.to_dim()];
        model
            .set_input_fact(i, InferenceFact::dt_shape(dt, shape))
            .map_err(load_err)?;
    }
    let mut typed = model.into_typed().map_err(load_err)?;
    ml::fast_trees(&mut typed).map_err(load_err)?;
    typed
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(load_err)
}

fn number(v: Option<&FeatureValue>) -> f32 {
    match v {
        Some(FeatureValue::Number(x)) => *x as f32,
        _ => f32::NAN,
    }
}

fn text(v: Option<&FeatureValue>) -> String {
    match v {
        Some(FeatureValue::Category(c)) => c.clone(),
        Some(FeatureValue::Number(x)) => format!("{x}"),
        _ => String::new(),
    }
}

/// What the graph's answer is read as: a classifier's labels come from its classifier
/// node (`classlabels_strings` or `classlabels_int64s`).
fn output_of(proto: &ModelProto, kind: TargetKind) -> Result<Output> {
    if kind == TargetKind::Regression {
        return Ok(Output::Value);
    }
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| Error::Load("no graph".into()))?;
    let node = graph
        .node
        .iter()
        .find(|n| n.op_type.ends_with("Classifier"))
        .ok_or_else(|| {
            Error::Spec(
                "the spec's target is a classification but the graph has no classifier node".into(),
            )
        })?;
    let strings: Option<Vec<String>> = attr(node, "classlabels_strings")?;
    let ints: Option<Vec<i64>> = attr(node, "classlabels_int64s")?;
    let labels = match (strings, ints) {
        (Some(s), _) => s,
        (None, Some(i)) => i.iter().map(i64::to_string).collect(),
        (None, None) => return Err(Error::Load(format!("{} has no class labels", node.op_type))),
    };
    Ok(Output::Classes(labels))
}

fn attr<'a, T: AttrTVecType<'a>>(
    node: &'a tract_onnx::pb::NodeProto,
    name: &str,
) -> Result<Option<Vec<T>>> {
    node.get_attr_opt_vec(name).map_err(load_err)
}
