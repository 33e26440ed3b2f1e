//! The ONNX-ML operators scikit-learn's and LightGBM's converters emit that tract 0.23
//! lacks, each an expansion into tract's own typed operators (so tract optimises and runs
//! them like the rest of the graph):
//!
//! - `TreeEnsembleRegressor`: tract's tree ensemble (the one its classifier uses) over the
//!   `target_*` leaves, then `base_values`;
//! - `Scaler`: `(x - offset) * scale`;
//! - `OneHotEncoder`: a category's index among `cats_strings` / `cats_int64s` one-hot
//!   encoded on a new last axis; an unknown category encodes as all zeros (the
//!   converters' `zeros = 1`, scikit-learn's `handle_unknown = "ignore"`).
//!
//! Checked against onnxruntime's output on the same models (tests/fixtures/onnx).

use std::iter;

use tract_hir::internal::*;
use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::pb_helpers::AttrTVecType;
use tract_onnx_opl::ml::ReverseLookup;
use tract_onnx_opl::ml::tree::{Cmp, TreeEnsemble, TreeEnsembleData};
use tract_onnx_opl::ml::tree_ensemble_classifier::parse_aggregate;

pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("TreeEnsembleRegressor", tree_regressor);
    reg.insert("Scaler", scaler);
    reg.insert("OneHotEncoder", one_hot_encoder);
}

fn scaler(
    _: &ParsingContext<'_>,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let offset: Vec<f32> = node
        .get_attr_opt_vec("offset")?
        .unwrap_or_else(|| vec![0.0]);
    let scale: Vec<f32> = node.get_attr_opt_vec("scale")?.unwrap_or_else(|| vec![1.0]);
    Ok((
        expand(Scaler {
            offset: rctensor1(&offset),
            scale: rctensor1(&scale),
        }),
        vec![],
    ))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Scaler {
    offset: Arc<Tensor>,
    scale: Arc<Tensor>,
}

impl Expansion for Scaler {
    fn name(&self) -> StaticName {
        "Scaler".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let x = model.wire_node(
            format!("{prefix}.cast"),
            tract_core::ops::cast::cast(f32::datum_type()),
            inputs,
        )?;
        let rank = model.outlet_fact(x[0])?.rank();
        let offset = (*self.offset).clone().broadcast_into_rank(rank)?;
        let offset = model.add_const(format!("{prefix}.offset"), offset.into_arc_tensor())?;
        let scale = (*self.scale).clone().broadcast_into_rank(rank)?;
        let scale = model.add_const(format!("{prefix}.scale"), scale.into_arc_tensor())?;
        let centred = model.wire_node(
            format!("{prefix}.centre"),
            tract_core::ops::math::sub(),
            &[x[0], offset],
        )?;
        model.wire_node(
            format!("{prefix}.times"),
            tract_core::ops::math::mul(),
            &[centred[0], scale],
        )
    }
}

fn one_hot_encoder(
    _: &ParsingContext<'_>,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let strings: Option<Vec<String>> = node.get_attr_opt_vec("cats_strings")?;
    let ints: Option<Vec<i64>> = node.get_attr_opt_vec("cats_int64s")?;
    let cats = match (strings, ints) {
        (Some(s), None) => rctensor1(&s),
        (None, Some(i)) => rctensor1(&i),
        _ => bail!("OneHotEncoder needs exactly one of cats_strings and cats_int64s"),
    };
    Ok((expand(OneHotEncoder { cats }), vec![]))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct OneHotEncoder {
    cats: Arc<Tensor>,
}

impl Expansion for OneHotEncoder {
    fn name(&self) -> StaticName {
        "OneHotEncoder".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(inputs[0].rank.bex() + 1, &outputs[0].rank)?;
        let n = self.cats.len();
        s.given(&inputs[0].rank, move |s, rank| {
            let rank = rank as usize;
            for ix in 0..rank {
                s.equals(&inputs[0].shape[ix], &outputs[0].shape[ix])?;
            }
            s.equals(&outputs[0].shape[rank], n.to_dim())
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let rank = model.outlet_fact(inputs[0])?.rank();
        let n = self.cats.len();
        // Index among the categories, -1 when unknown; shifted by one so that an unknown
        // category lands in a first column that is then cut off.
        let index = model.wire_node(
            format!("{prefix}.index"),
            ReverseLookup::new(self.cats.clone(), -1)?,
            inputs,
        )?;
        let one = tensor0(1i32).broadcast_into_rank(rank)?;
        let one = model.add_const(format!("{prefix}.one"), one.into_arc_tensor())?;
        let shifted = model.wire_node(
            format!("{prefix}.shift"),
            tract_core::ops::math::add(),
            &[index[0], one],
        )?;
        let hot = model.wire_node(
            format!("{prefix}.onehot"),
            tract_core::ops::array::OneHot {
                axis: rank,
                dim: n + 1,
                off: rctensor0(0f32),
                on: rctensor0(1f32),
            },
            &shifted,
        )?;
        model.wire_node(
            format!("{prefix}.known"),
            tract_core::ops::array::Slice::new(rank, 1, n + 1),
            &hot,
        )
    }
}

fn tree_regressor(
    _: &ParsingContext<'_>,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let post: Option<&str> = node.get_attr_opt("post_transform")?;
    if post.is_some_and(|p| p != "NONE") {
        bail!("TreeEnsembleRegressor: post_transform {post:?} is not supported (NONE is)");
    }
    let ensemble = parse_trees(node)?;
    let targets = ensemble.n_classes();
    let base: Option<Vec<f32>> = node.get_attr_opt_vec("base_values")?;
    if let Some(b) = &base {
        node.expect_attr("base_values", b.len() == targets, "one per target")?;
    }
    Ok((
        expand(TreeEnsembleRegressor {
            ensemble,
            base: base.map(|b| rctensor1(&b)),
        }),
        vec![],
    ))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct TreeEnsembleRegressor {
    ensemble: TreeEnsemble,
    base: Option<Arc<Tensor>>,
}

impl Expansion for TreeEnsembleRegressor {
    fn name(&self) -> StaticName {
        "TreeEnsembleRegressor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[0].shape[1], self.ensemble.n_classes().to_dim())?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let x = model.wire_node(
            format!("{prefix}.cast"),
            tract_core::ops::cast::cast(f32::datum_type()),
            inputs,
        )?;
        let mut scores = model.wire_node(
            format!("{prefix}.trees"),
            tract_onnx_opl::ml::tree_ensemble_classifier::TreeEnsembleClassifier {
                ensemble: self.ensemble.clone(),
            },
            &x,
        )?;
        if let Some(base) = &self.base {
            let base = (**base).clone().broadcast_into_rank(2)?.into_arc_tensor();
            let base = model.add_const(format!("{prefix}.base"), base)?;
            scores = model.wire_node(
                format!("{prefix}.plus_base"),
                tract_core::ops::math::add(),
                &[scores[0], base],
            )?;
        }
        Ok(scores)
    }
}

fn mode(s: &str) -> TractResult<Option<Cmp>> {
    Ok(Some(match s {
        "BRANCH_LEQ" => Cmp::LessEqual,
        "BRANCH_LT" => Cmp::Less,
        "BRANCH_GTE" => Cmp::GreaterEqual,
        "BRANCH_GT" => Cmp::Greater,
        "BRANCH_EQ" => Cmp::Equal,
        "BRANCH_NEQ" => Cmp::NotEqual,
        "LEAF" => return Ok(None),
        _ => bail!("unsupported tree node mode {s}"),
    }))
}

fn attr_of_len<'a, T: AttrTVecType<'a>>(
    node: &'a NodeProto,
    name: &str,
    n: usize,
) -> TractResult<Vec<T>> {
    let v: Vec<T> = node.get_attr_vec(name)?;
    node.expect_attr(name, v.len() == n, || {
        format!("length {n}, got {}", v.len())
    })?;
    Ok(v)
}

/// The regressor's trees in tract's packed layout (as tract-onnx packs a classifier's,
/// with the `target_*` leaves and `aggregate_function`).
fn parse_trees(node: &NodeProto) -> TractResult<TreeEnsemble> {
    let n_targets: usize = node.get_attr_opt("n_targets")?.unwrap_or(1);
    let n = node.get_attr_slice::<i64>("nodes_featureids")?.len();
    node.expect_attr("nodes_featureids", n != 0, "at least one node")?;
    let node_ids = attr_of_len::<usize>(node, "nodes_nodeids", n)?;
    let tree_ids = attr_of_len::<usize>(node, "nodes_treeids", n)?;
    let feature_ids = attr_of_len::<usize>(node, "nodes_featureids", n)?;
    let true_ids = attr_of_len::<usize>(node, "nodes_truenodeids", n)?;
    let false_ids = attr_of_len::<usize>(node, "nodes_falsenodeids", n)?;
    let values = attr_of_len::<f32>(node, "nodes_values", n)?;
    let nan_is_true: Vec<bool> = match node.get_attr_opt_vec("nodes_missing_value_tracks_true")? {
        Some(v) => v,
        None => iter::repeat_n(false, n).collect(),
    };
    let modes = attr_of_len::<&str>(node, "nodes_modes", n)?
        .into_iter()
        .map(mode)
        .collect::<TractResult<Vec<_>>>()?;
    let aggregate = parse_aggregate(node.get_attr_opt("aggregate_function")?.unwrap_or("SUM"))?;

    let leaves_n = node.get_attr_slice::<i64>("target_ids")?.len();
    node.expect_attr("target_ids", leaves_n != 0, "at least one leaf")?;
    let leaf_nodes = attr_of_len::<usize>(node, "target_nodeids", leaves_n)?;
    let leaf_trees = attr_of_len::<usize>(node, "target_treeids", leaves_n)?;
    let leaf_targets = attr_of_len::<usize>(node, "target_ids", leaves_n)?;
    let leaf_weights = attr_of_len::<f32>(node, "target_weights", leaves_n)?;

    let mut node_order: Vec<usize> = (0..n).collect();
    node_order.sort_by_key(|&i| (tree_ids[i], node_ids[i]));
    let mut leaf_order: Vec<usize> = (0..leaves_n).collect();
    leaf_order.sort_by_key(|&i| (leaf_trees[i], leaf_nodes[i]));

    let (mut trees, mut nodes, mut leaves) =
        (Vec::<u32>::new(), Vec::<u32>::new(), Vec::<u32>::new());
    let (mut current, mut next_leaf) = (None, 0);
    for i in node_order {
        let (id, tree) = (node_ids[i], tree_ids[i]);
        if Some(tree) != current {
            current = Some(tree);
            trees.push(nodes.len() as u32 / 5);
        }
        // Child ids are node ids within the tree, which start at 0 and go up by 1.
        let root = *trees.last().unwrap_or(&0);
        let mut row = [0u32; 5];
        if let Some(cmp) = modes[i] {
            row[0] = feature_ids[i] as u32;
            row[1] = true_ids[i] as u32 + root;
            row[2] = false_ids[i] as u32 + root;
            row[3] = values[i].to_bits();
            row[4] = (0x0100u32 * nan_is_true[i] as u32) | cmp as u32;
        } else {
            row[0] = leaves.len() as u32 / 2;
            while next_leaf < leaf_order.len()
                && leaf_trees[leaf_order[next_leaf]] == tree
                && leaf_nodes[leaf_order[next_leaf]] == id
            {
                let l = leaf_order[next_leaf];
                leaves.push(leaf_targets[l] as u32);
                leaves.push(leaf_weights[l].to_bits());
                next_leaf += 1;
            }
            row[1] = leaves.len() as u32 / 2;
        }
        nodes.extend(row);
    }
    let max_feature = feature_ids.iter().max().copied().unwrap_or(0);
    let data = TreeEnsembleData {
        trees: rctensor1(&trees),
        nodes: tensor1(&nodes)
            .into_shape(&[nodes.len() / 5, 5])?
            .into_arc_tensor(),
        leaves: tensor1(&leaves)
            .into_shape(&[leaves.len() / 2, 2])?
            .into_arc_tensor(),
    };
    TreeEnsemble::build(data, max_feature, n_targets, aggregate)
}
