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
//!
//! Tract's tree ensemble op (which both tree ensembles run on) is replaced after typing by
//! [`Trees`], the same packed trees walked over plain slices: tract's walk steps an
//! n-dimensional iterator from the first leaf to each tree's leaf and builds an error
//! value at every leaf it reaches, about 1.7 ms a row for 100 trees; it also reads a
//! `BRANCH_GTE` node as a leaf.

use std::iter;

use tract_hir::internal::*;
use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::pb_helpers::AttrTVecType;
use tract_onnx_opl::ml::ReverseLookup;
use tract_onnx_opl::ml::tree::{Aggregate, Cmp, TreeEnsemble, TreeEnsembleData};
use tract_onnx_opl::ml::tree_ensemble_classifier::TreeEnsembleClassifier;
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

/// Replaces every tree ensemble of `model` by [`Trees`] (same inputs, same output).
pub fn fast_trees(model: &mut TypedModel) -> TractResult<()> {
    for id in 0..model.nodes().len() {
        let trees = model
            .node(id)
            .op_as::<TreeEnsembleClassifier>()
            .map(|op| Trees::of(&op.ensemble))
            .transpose()?;
        if let Some(trees) = trees {
            model.node_mut(id).op = Box::new(trees);
        }
    }
    Ok(())
}

/// A tree ensemble in tract's packed layout (see [`TreeEnsembleData`]), walked over
/// plain slices: `[N, features]` in, `[N, classes]` scores out, as tract's op.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Trees {
    /// Each tree's root row in `nodes`.
    roots: Vec<u32>,
    /// Five words a node: feature, true row, false row, threshold bits, flags (the low
    /// byte the comparison, 0 for a leaf; 0x100 when NaN goes the true way). A leaf's
    /// first two words are its range in `leaves`.
    nodes: Vec<u32>,
    /// Two words a leaf entry: class, weight bits.
    leaves: Vec<u32>,
    n_classes: usize,
    max_feature: usize,
    aggregate: Aggregate,
}

impl Trees {
    fn of(e: &TreeEnsemble) -> TractResult<Self> {
        let words = |t: &Tensor| -> TractResult<Vec<u32>> {
            Ok(t.cast_to::<u32>()?
                .to_plain_array_view::<u32>()?
                .iter()
                .copied()
                .collect())
        };
        Ok(Self {
            roots: words(&e.data.trees)?,
            nodes: words(&e.data.nodes)?,
            leaves: words(&e.data.leaves)?,
            n_classes: e.n_classes,
            max_feature: e.max_used_feature,
            aggregate: e.aggregate_fn,
        })
    }

    /// Adds each tree's leaf entries for row `x` into `out`, counting them in `counts`.
    fn score(&self, x: &[f32], out: &mut [f32], counts: &mut [u32]) -> TractResult<()> {
        for &root in &self.roots {
            let mut at = root as usize;
            loop {
                let node = self
                    .nodes
                    .get(at * 5..at * 5 + 5)
                    .ok_or_else(|| format_err!("tree node {at} out of range"))?;
                let flags = node[4];
                let cmp = (flags & 0xFF) as u8;
                if cmp == 0 {
                    let (from, to) = (node[0] as usize, node[1] as usize);
                    let entries = self
                        .leaves
                        .get(from * 2..to * 2)
                        .ok_or_else(|| format_err!("leaf entries {from}..{to} out of range"))?;
                    for e in entries.chunks_exact(2) {
                        let class = e[0] as usize;
                        let (total, w) = (&mut out[class], f32::from_bits(e[1]));
                        *total = match self.aggregate {
                            Aggregate::Sum | Aggregate::Avg => *total + w,
                            Aggregate::Max => total.max(w),
                            Aggregate::Min => total.min(w),
                        };
                        counts[class] += 1;
                    }
                    break;
                }
                let v = x[node[0] as usize];
                let t = f32::from_bits(node[3]);
                let goes_true = if v.is_nan() {
                    flags & 0x100 != 0
                } else {
                    match cmp {
                        1 => v == t,
                        2 => v != t,
                        3 => v < t,
                        4 => v > t,
                        5 => v <= t,
                        6 => v >= t,
                        _ => bail!("tree node {at} has comparison {cmp}"),
                    }
                };
                at = if goes_true { node[1] } else { node[2] } as usize;
            }
        }
        Ok(())
    }
}

impl Op for Trees {
    fn name(&self) -> StaticName {
        "Trees".into()
    }

    op_as_typed_op!();
}

impl EvalOp for Trees {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext<'_>, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let input = input.cast_to::<f32>()?;
        let x = input.to_plain_array_view::<f32>()?;
        let (n, width) = match *x.shape() {
            [n, width] => (n, width),
            [width] => (1, width),
            _ => bail!("tree ensemble input of shape {:?}", x.shape()),
        };
        ensure!(
            width > self.max_feature,
            "tree ensemble input has {width} features and uses feature #{}",
            self.max_feature
        );
        let x: Vec<f32> = x.iter().copied().collect();
        let c = self.n_classes;
        let mut out = vec![0f32; n * c];
        let mut counts = vec![0u32; c];
        for (row, scores) in x.chunks_exact(width).zip(out.chunks_exact_mut(c)) {
            counts.iter_mut().for_each(|k| *k = 0);
            self.score(row, scores, &mut counts)?;
            if self.aggregate == Aggregate::Avg {
                for (total, k) in scores.iter_mut().zip(&counts) {
                    if *k > 1 {
                        *total /= *k as f32;
                    }
                }
            }
        }
        Ok(tvec!(Tensor::from_shape(&[n, c], &out)?.into_tvalue()))
    }
}

impl TypedOp for Trees {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let n = &inputs[0].shape[0];
        Ok(tvec!(f32::fact(&[n.clone(), self.n_classes.into()])))
    }

    as_op!();
}
