//! Constant folding: nodes whose inputs are all constants are run once and
//! replaced by initializers; with fixed input shapes, `Shape` / `Size` of
//! values whose shape cannot depend on the data become constants too
//! ([`fold_static_shapes`]), so the shape arithmetic exporters emit
//! (`x.size(-1) ** 0.5`, `torch.chunk`, `F.interpolate(size=x.shape[2:])`)
//! folds away.

use crate::error::FloatError;
use crate::registry::{OpCtx, Registry};
use hb_ir::{Model, Node};
use hb_tensor::Tensor;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Ops never folded (non-deterministic or with side effects).
const NEVER_FOLD: &[&str] = &[
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
];

/// Folds constant subgraphs; returns the number of nodes folded. Nodes
/// without a kernel or whose kernel fails are left in place.
pub fn fold_constants(model: &mut Model, registry: &Registry) -> Result<usize, FloatError> {
    let mut folded = 0;
    let model_opsets = &model.opsets;
    let g = &mut model.graph;
    let mut k = 0;
    while k < g.nodes.len() {
        let n = &g.nodes[k];
        let all_const = n
            .inputs
            .iter()
            .all(|i| i.is_empty() || g.initializers.contains_key(i));
        let foldable =
            all_const && !NEVER_FOLD.contains(&n.op_type.as_str()) && !n.inputs.is_empty();
        if foldable {
            if let Some(outs) = evaluate(model_opsets, n, &g.initializers, registry) {
                replace_by_constants(g, k, outs);
                folded += 1;
                continue;
            }
        }
        k += 1;
    }
    // Graph outputs that became initializers stay reachable through the initializer map.
    g.prune_unused_initializers();
    Ok(folded)
}

/// Runs node `n` on constant inputs (`None` when it has no kernel, fails,
/// or gives fewer outputs than it names).
fn evaluate(
    opsets: &std::collections::BTreeMap<String, i64>,
    n: &Node,
    initializers: &std::collections::BTreeMap<String, Arc<Tensor>>,
    registry: &Registry,
) -> Option<Vec<Tensor>> {
    let kernel = registry.get(&n.domain, &n.op_type)?;
    let args: Vec<Option<&Tensor>> = n
        .inputs
        .iter()
        .map(|i| {
            if i.is_empty() {
                None
            } else {
                initializers.get(i).map(|t| t.as_ref())
            }
        })
        .collect();
    let opset = opsets.get(&n.domain).copied().unwrap_or(1);
    let ctx = OpCtx { node: n, opset };
    kernel(&ctx, &args)
        .ok()
        .filter(|o| o.len() >= n.outputs.iter().filter(|x| !x.is_empty()).count())
}

/// Replaces node `k` by initializers holding `outs`.
fn replace_by_constants(g: &mut hb_ir::Graph, k: usize, outs: Vec<Tensor>) {
    let names = g.nodes[k].outputs.clone();
    for (name, t) in names.iter().zip(outs) {
        if !name.is_empty() {
            g.initializers.insert(name.clone(), Arc::new(t));
        }
    }
    g.nodes.remove(k);
}

/// Ops whose output shape follows from shape arguments (inputs after the
/// first): static once those are constants.
const SHAPE_FROM_ARGUMENTS: &[&str] = &[
    "TopK",
    "Range",
    "ConstantOfShape",
    "Expand",
    "Reshape",
    "Tile",
    "Slice",
    "Resize",
    "Upsample",
    "Pad",
    "OneHot",
];

/// Replaces `Shape` and `Size` nodes by constants where the shape is known
/// and static, folding the constant arithmetic that follows as it goes.
/// Needs every graph input to have a fixed shape (else does nothing). One
/// sweep in graph order: a value counts as static unless it lies downstream
/// of an op whose output shape depends on the data
/// ([`ALWAYS_DATA_DEPENDENT`]) or of a [`SHAPE_FROM_ARGUMENTS`] op with a
/// shape argument that is still not a constant when the sweep reaches it; shapes come from shape inference by execution (one run on
/// zero inputs). Returns the number of nodes removed. A model whose shape
/// inference fails is left unchanged.
pub fn fold_static_shapes(model: &mut Model, registry: &Registry) -> Result<usize, FloatError> {
    let has_shape_op = model
        .graph
        .nodes
        .iter()
        .any(|n| n.domain.is_empty() && matches!(n.op_type.as_str(), "Shape" | "Size"));
    // Nothing to replace: skip the shape inference run.
    if !has_shape_op || model.graph.inputs.iter().any(|v| v.fixed_shape().is_none()) {
        return Ok(0);
    }
    let mut probe = model.clone();
    // Shapes are inferred by running the graph: stop before the first node
    // without a kernel (an `If` whose condition these shapes may decide).
    let g = &mut probe.graph;
    if let Some(cut) = g
        .nodes
        .iter()
        .position(|n| registry.get(&n.domain, &n.op_type).is_none())
    {
        g.nodes.truncate(cut);
        g.outputs = g
            .nodes
            .iter()
            .flat_map(|n| n.outputs.iter().filter(|o| !o.is_empty()))
            .map(|o| hb_ir::ValueInfo {
                name: o.clone(),
                elem_type: 0,
                shape: None,
                non_tensor: false,
            })
            .collect();
    }
    let Ok(infos) = crate::shapes::infer_shapes(&mut probe, &HashMap::new()) else {
        return Ok(0);
    };
    let shapes: HashMap<String, Vec<i64>> = infos
        .iter()
        .chain(&model.graph.inputs)
        .filter_map(|v| {
            let dims: Option<Vec<i64>> = v
                .shape
                .as_ref()?
                .iter()
                .map(|d| match d {
                    hb_ir::Dim::Fixed(x) => Some(*x as i64),
                    _ => None,
                })
                .collect();
            Some((v.name.clone(), dims?))
        })
        .collect();
    let opsets = model.opsets.clone();
    let g = &mut model.graph;
    let mut dynamic: HashSet<String> = HashSet::new();
    let mut removed = 0;
    let mut k = 0;
    while k < g.nodes.len() {
        let n = &g.nodes[k];
        let is_const = |i: &String| i.is_empty() || g.initializers.contains_key(i);
        let mut outs: Option<Vec<Tensor>> = None;
        if matches!(n.op_type.as_str(), "Shape" | "Size")
            && n.domain.is_empty()
            && !dynamic.contains(&n.inputs[0])
        {
            let dims = match g.initializers.get(&n.inputs[0]) {
                Some(t) => Some(t.shape().iter().map(|&d| d as i64).collect::<Vec<_>>()),
                None => shapes.get(&n.inputs[0]).cloned(),
            };
            outs = dims.and_then(|d| shape_constant(n, &d)).map(|t| vec![t]);
        } else if n.inputs.iter().all(is_const)
            && !n.inputs.is_empty()
            && !NEVER_FOLD.contains(&n.op_type.as_str())
        {
            outs = evaluate(&opsets, n, &g.initializers, registry);
        }
        if let Some(outs) = outs {
            replace_by_constants(g, k, outs);
            removed += 1;
            continue;
        }
        let op = n.op_type.as_str();
        let own = ALWAYS_DATA_DEPENDENT.contains(&op)
            || (SHAPE_FROM_ARGUMENTS.contains(&op)
                && n.inputs.iter().skip(1).any(|i| !is_const(i)));
        let inherited = n.op_type != "Shape" && n.inputs.iter().any(|i| dynamic.contains(i));
        if own || inherited {
            dynamic.extend(n.outputs.iter().filter(|o| !o.is_empty()).cloned());
        }
        k += 1;
    }
    if removed > 0 {
        g.prune_unused_initializers();
    }
    Ok(removed)
}

/// Ops whose output shape depends on the data whatever their arguments (or
/// that run subgraphs): values downstream of them never have their `Shape`
/// folded.
const ALWAYS_DATA_DEPENDENT: &[&str] = &[
    "NonZero",
    "Unique",
    "NonMaxSuppression",
    "Compress",
    "Loop",
    "If",
    "Scan",
    "StringSplit",
];

/// The constant a `Shape` (with opset-15 `start` / `end`) or `Size` node
/// gives for an input of shape `dims`.
fn shape_constant(n: &Node, dims: &[i64]) -> Option<Tensor> {
    if n.op_type == "Size" {
        return Some(Tensor::scalar(dims.iter().product::<i64>()));
    }
    let rank = dims.len() as i64;
    let clamp = |v: i64| {
        let v = if v < 0 { v + rank } else { v };
        v.clamp(0, rank) as usize
    };
    let start = clamp(n.int_or("start", 0).ok()?);
    let end = clamp(n.int_or("end", rank).ok()?);
    let v: Vec<i64> = if start < end {
        dims[start..end].to_vec()
    } else {
        Vec::new()
    };
    Tensor::from_vec(&[v.len()], v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Session;
    use hb_ir::{Attr, Graph, ValueInfo};
    use hb_tensor::DType;

    /// y = Reshape(x, Concat(Shape(x)[0:1], [-1])) / sqrt(Shape(x)[2] as
    /// float): the shape arithmetic torch's TorchScript exporter emits.
    pub(super) fn model() -> Model {
        let mut g = Graph::default();
        g.inputs
            .push(ValueInfo::tensor("x", DType::F32, &[2, 3, 4]));
        g.outputs.push(ValueInfo::tensor("y", DType::F32, &[2, 12]));
        let i64s = |v: Vec<i64>| Arc::new(Tensor::from_vec(&[v.len()], v).unwrap());
        g.initializers.insert("zero".into(), i64s(vec![0]));
        g.initializers.insert("one".into(), i64s(vec![1]));
        g.initializers.insert("minus1".into(), i64s(vec![-1]));
        g.initializers
            .insert("two".into(), Arc::new(Tensor::scalar(2i64)));
        g.nodes.push(Node::new("shape", "Shape", &["x"], &["s"]));
        g.nodes
            .push(Node::new("head", "Slice", &["s", "zero", "one"], &["n"]));
        g.nodes
            .push(Node::new("cat", "Concat", &["n", "minus1"], &["target"]));
        g.nodes[2].set_attr("axis", Attr::Int(0));
        g.nodes
            .push(Node::new("rs", "Reshape", &["x", "target"], &["r"]));
        g.nodes
            .push(Node::new("dim", "Gather", &["s", "two"], &["d"]));
        let mut cast = Node::new("cast", "Cast", &["d"], &["df"]);
        cast.set_attr("to", Attr::Int(1));
        g.nodes.push(cast);
        g.nodes.push(Node::new("sqrt", "Sqrt", &["df"], &["scale"]));
        g.nodes
            .push(Node::new("div", "Div", &["r", "scale"], &["y"]));
        crate::kernels::testutil::model_of(g, 17)
    }

    fn run(m: &Model) -> Tensor {
        let x = Tensor::from_f32(&[2, 3, 4], (0..24).map(|v| v as f32 - 7.0).collect()).unwrap();
        let inputs = HashMap::from([("x".to_string(), x)]);
        Session::new(m).unwrap().run(&inputs).unwrap().remove(0).1
    }

    #[test]
    fn static_shape_arithmetic_folds_away_and_results_stay() {
        let m = model();
        let want = run(&m);
        let mut f = m.clone();
        let removed = fold_static_shapes(&mut f, &Registry::standard()).unwrap();
        let ops: Vec<&str> = f.graph.nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Reshape", "Div"], "{removed} removed");
        assert_eq!(run(&f), want);
    }

    #[test]
    fn data_dependent_shapes_and_dynamic_inputs_are_left_alone() {
        // Shape of NonZero's output depends on the data.
        let mut m = model();
        m.graph
            .nodes
            .insert(0, Node::new("nz", "NonZero", &["x"], &["idx"]));
        m.graph.nodes[1].inputs[0] = "idx".into();
        m.graph.nodes.truncate(2);
        m.graph.outputs = vec![ValueInfo::tensor("s", DType::I64, &[2])];
        let before = m.graph.nodes.len();
        fold_static_shapes(&mut m, &Registry::standard()).unwrap();
        assert_eq!(m.graph.nodes.len(), before);
        // Without fixed input shapes nothing is folded.
        let mut d = model();
        d.graph.inputs[0].shape = None;
        assert_eq!(
            fold_static_shapes(&mut d, &Registry::standard()).unwrap(),
            0
        );
    }
}
