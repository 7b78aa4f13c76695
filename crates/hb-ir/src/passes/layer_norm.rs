//! The LayerNorm that exporters spell out op by op, fused back into one
//! `LayerNormalization` (as ONNX Runtime's LayerNormFusion does).
//!
//! torch below opset 17 (and paddle2onnx, and hand-written norms) emit
//!
//! ```text
//! m = ReduceMean(x, axes)        d = Sub(x, m)
//! v = ReduceMean(Pow(d, 2) | Mul(d, d), axes)
//! n = Div(d, Sqrt(Add(v, eps)))  |  Mul(d, Reciprocal(Sqrt(Add(v, eps))))
//! y = Add(Mul(n, gamma), beta)   (the affine part optional)
//! ```
//!
//! Quantized op by op, that chain puts a rounding on the squared deviations,
//! the variance and the standard deviation; fused, the integer LayerNorm
//! (docs/integer-semantics.md §12) keeps those exact, and the model runs
//! one node instead of nine.
//!
//! `LayerNormalization` exists from opset 17, so the pass raises an opset
//! 13–16 model to 17 (no operator the pipeline runs changed meaning between
//! them; `RoiAlign`'s default changed in 16, so a model holding one is left
//! alone) and leaves models below 13 unchanged (Softmax, Split, Squeeze and
//! the reductions changed meaning at 13).

use crate::attr::Attr;
use crate::graph::{Graph, Model, Node};
use crate::{IrError, Result};
use hb_tensor::Tensor;
use std::sync::Arc;

/// The opset that introduced `LayerNormalization`.
const LAYER_NORM_OPSET: i64 = 17;

/// Fuses every decomposed LayerNorm of `model` whose opset allows it;
/// returns how many were fused.
pub fn fuse_layer_norms(model: &mut Model) -> Result<usize> {
    let opset = model.onnx_opset();
    let holds_roi_align = model.graph.nodes.iter().any(|n| n.op_type == "RoiAlign");
    if opset < 13 || (opset < LAYER_NORM_OPSET && holds_roi_align) {
        return Ok(0);
    }
    let mut fused = 0;
    let mut k = 0;
    while k < model.graph.nodes.len() {
        match match_layer_norm(&model.graph, k)? {
            Some(m) => {
                apply(&mut model.graph, m)?;
                fused += 1;
            }
            None => k += 1,
        }
    }
    if fused > 0 && opset < LAYER_NORM_OPSET {
        let key = if model.opsets.contains_key("ai.onnx") {
            "ai.onnx"
        } else {
            ""
        };
        model.opsets.insert(key.to_string(), LAYER_NORM_OPSET);
    }
    Ok(fused)
}

/// One matched chain.
struct Match {
    /// Every node of the chain (indices into the graph).
    nodes: Vec<usize>,
    /// The normalised input.
    x: String,
    /// The value the chain ends in (kept as the fused node's output).
    y: String,
    /// First normalised axis (negative, counted from the end).
    axis: i64,
    eps: f32,
    /// Scale and bias shaped as the normalised dims.
    gamma: Option<Tensor>,
    beta: Option<Tensor>,
}

/// The only node reading `value`, when exactly one does and it is not a
/// graph output.
fn sole_reader(g: &Graph, value: &str) -> Option<usize> {
    let readers = g.consumers(value);
    (readers.len() == 1 && !g.is_output(value)).then(|| readers[0])
}

/// The single f32 value of a one-element initializer.
fn scalar(g: &Graph, name: &str) -> Option<f32> {
    let t = g.initializer(name)?.as_f32().ok()?;
    (t.len() == 1).then(|| t.iter().copied().next()).flatten()
}

/// `n` is `op` in the default domain.
fn is(n: &Node, op: &str) -> bool {
    n.op_type == op && n.domain.is_empty()
}

/// The other input of binary node `n` when one of its inputs is `value`.
fn other_input<'a>(n: &'a Node, value: &str) -> Option<&'a str> {
    match (n.input(0), n.input(1)) {
        (Some(a), Some(b)) if a == value => Some(b),
        (Some(a), Some(b)) if b == value => Some(a),
        _ => None,
    }
}

/// The reduced axes of a keepdims ReduceMean as a negative range ending at
/// −1, e.g. `[-2, -1]` → −2; `rank` resolves non-negative axes.
fn reduced_tail(g: &Graph, n: &Node, rank: Option<usize>) -> Result<Option<i64>> {
    if n.int_or("keepdims", 1)? != 1 {
        return Ok(None);
    }
    let axes: Vec<i64> = match (n.get_ints("axes")?, n.input(1)) {
        (Some(a), _) => a,
        (None, Some(name)) => match g.initializer(name) {
            Some(t) => match t.to_i64_vec() {
                Ok(v) => v,
                Err(_) => return Ok(None),
            },
            None => return Ok(None),
        },
        (None, None) => return Ok(None),
    };
    let mut neg: Vec<i64> = Vec::with_capacity(axes.len());
    for a in axes {
        if a < 0 {
            neg.push(a);
        } else if let Some(r) = rank {
            neg.push(a - r as i64);
        } else {
            return Ok(None);
        }
    }
    neg.sort_unstable();
    let k = neg.len() as i64;
    let contiguous = neg.iter().enumerate().all(|(i, &a)| a == i as i64 - k);
    Ok((k > 0 && contiguous).then_some(-k))
}

/// The rank of value `v` when declared.
fn rank_of(g: &Graph, v: &str) -> Option<usize> {
    g.inputs
        .iter()
        .find(|i| i.name == v)
        .or_else(|| g.value_info.get(v))
        .and_then(|i| i.shape.as_ref())
        .map(Vec::len)
}

/// An affine parameter shaped exactly as the `k` normalised dims: its
/// leading 1s dropped, it must have rank `k` (a broadcast along a normalised
/// dim would need that dim's size, which the graph may not declare).
fn affine_param(g: &Graph, name: &str, k: usize) -> Option<Tensor> {
    let t = g.initializer(name)?;
    t.as_f32().ok()?;
    let shape = t.shape();
    let lead = shape.len().checked_sub(k)?;
    if shape[..lead].iter().any(|&d| d != 1) {
        return None;
    }
    t.reshape(&shape[lead..]).ok()
}

/// The sole reader of `y` when it is `op` (Mul for the scale, Add for the
/// bias) with a constant affine parameter, and that parameter.
fn affine_step(g: &Graph, y: &str, op: &str, dims: usize) -> Option<(usize, Tensor)> {
    let r = sole_reader(g, y)?;
    let n = &g.nodes[r];
    let p = is(n, op).then(|| other_input(n, y)).flatten()?;
    Some((r, affine_param(g, p, dims)?))
}

/// Matches the chain whose first ReduceMean is node `k`.
fn match_layer_norm(g: &Graph, k: usize) -> Result<Option<Match>> {
    let mean_node = &g.nodes[k];
    if !is(mean_node, "ReduceMean") {
        return Ok(None);
    }
    let (Some(x), Some(mean)) = (mean_node.input(0), mean_node.outputs.first()) else {
        return Ok(None);
    };
    let Some(axis) = reduced_tail(g, mean_node, rank_of(g, x))? else {
        return Ok(None);
    };
    // d = x − mean, read by the square and the division.
    let Some(sub) = sole_reader(g, mean) else {
        return Ok(None);
    };
    let sub_node = &g.nodes[sub];
    if !is(sub_node, "Sub") || sub_node.input(0) != Some(x) || sub_node.input(1) != Some(mean) {
        return Ok(None);
    }
    let d = &sub_node.outputs[0];
    let readers = g.consumers(d);
    if g.is_output(d) || readers.len() != 2 {
        return Ok(None);
    }
    let square_of_d = |n: &Node| {
        (is(n, "Pow")
            && n.input(0) == Some(d)
            && n.input(1).and_then(|e| scalar(g, e)) == Some(2.0))
            || (is(n, "Mul") && n.input(0) == Some(d) && n.input(1) == Some(d))
    };
    let Some(&sq) = readers.iter().find(|&&r| square_of_d(&g.nodes[r])) else {
        return Ok(None);
    };
    let Some(&norm) = readers.iter().find(|&&r| r != sq) else {
        return Ok(None);
    };
    // var = ReduceMean(d²) over the same axes; s = Sqrt(var + eps).
    let Some(var) = sole_reader(g, &g.nodes[sq].outputs[0]) else {
        return Ok(None);
    };
    let var_node = &g.nodes[var];
    if !is(var_node, "ReduceMean") || reduced_tail(g, var_node, rank_of(g, x))? != Some(axis) {
        return Ok(None);
    }
    let Some(add_eps) = sole_reader(g, &var_node.outputs[0]) else {
        return Ok(None);
    };
    let add_node = &g.nodes[add_eps];
    let Some(eps) = (is(add_node, "Add"))
        .then(|| other_input(add_node, &var_node.outputs[0]))
        .flatten()
        .and_then(|e| scalar(g, e))
    else {
        return Ok(None);
    };
    let Some(sqrt) = sole_reader(g, &add_node.outputs[0]) else {
        return Ok(None);
    };
    if !is(&g.nodes[sqrt], "Sqrt") {
        return Ok(None);
    }
    let std_dev = &g.nodes[sqrt].outputs[0];
    // n = d / s, or d · (1 / s).
    let mut nodes = vec![k, sub, sq, var, add_eps, sqrt];
    let norm_node = &g.nodes[norm];
    let normalised = if is(norm_node, "Div")
        && norm_node.input(0) == Some(d)
        && norm_node.input(1) == Some(std_dev)
        && sole_reader(g, std_dev) == Some(norm)
    {
        nodes.push(norm);
        norm_node.outputs[0].clone()
    } else {
        let Some(recip) = sole_reader(g, std_dev) else {
            return Ok(None);
        };
        let recip_node = &g.nodes[recip];
        let inv = &recip_node.outputs[0];
        if !is(recip_node, "Reciprocal")
            || !is(norm_node, "Mul")
            || other_input(norm_node, d) != Some(inv)
            || sole_reader(g, inv) != Some(norm)
        {
            return Ok(None);
        }
        nodes.extend([recip, norm]);
        norm_node.outputs[0].clone()
    };
    // Optional y = n · gamma + beta with constant parameters.
    let dims = (-axis) as usize;
    let mut y = normalised;
    let mut gamma = None;
    let mut beta = None;
    for (op, param) in [("Mul", &mut gamma), ("Add", &mut beta)] {
        if let Some((r, t)) = affine_step(g, &y, op, dims) {
            *param = Some(t);
            nodes.push(r);
            y = g.nodes[r].outputs[0].clone();
        }
    }
    // Without a scale the node needs ones of the normalised shape, whose
    // sizes come from the bias (or nowhere: leave such a chain alone).
    if gamma.is_none() {
        match &beta {
            Some(b) => {
                let ones = Tensor::from_f32(b.shape(), vec![1.0; b.len()])
                    .map_err(|e| IrError::Graph(e.to_string()))?;
                gamma = Some(ones);
            }
            None => return Ok(None),
        }
    }
    if let (Some(gm), Some(b)) = (&gamma, &beta) {
        if gm.shape() != b.shape() {
            return Ok(None);
        }
    }
    Ok(Some(Match {
        nodes,
        x: x.to_string(),
        y,
        axis,
        eps,
        gamma,
        beta,
    }))
}

/// Replaces the chain by one `LayerNormalization` where its last node was.
fn apply(g: &mut Graph, m: Match) -> Result<()> {
    let last = *m.nodes.iter().max().expect("a chain has nodes");
    let first_name = &g.nodes[m.nodes[0]].name;
    let prefix = first_name.rsplit_once('/').map_or("", |(p, _)| p);
    let name = g.fresh_name(&format!("{prefix}/LayerNormalization"));
    let mut inputs = vec![m.x.clone()];
    for (param, role) in [(m.gamma, "scale"), (m.beta, "bias")] {
        if let Some(t) = param {
            let pname = g.fresh_name(&format!("{name}.{role}"));
            g.initializers.insert(pname.clone(), Arc::new(t));
            inputs.push(pname);
        }
    }
    let input_refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let mut node = Node::new(&name, "LayerNormalization", &input_refs, &[&m.y]);
    node.set_attr("axis", Attr::Int(m.axis));
    node.set_attr("epsilon", Attr::Float(m.eps));
    g.nodes[last] = node;
    let mut drop: Vec<usize> = m.nodes.into_iter().filter(|&i| i != last).collect();
    drop.sort_unstable_by(|a, b| b.cmp(a));
    for i in drop {
        g.nodes.remove(i);
    }
    g.prune_unused_initializers();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ValueInfo;
    use hb_tensor::DType;

    /// The torch opset-13 export of `nn.LayerNorm(4)` on `[2, 3, 4]`.
    fn torch_style(opset: i64, with_affine: bool) -> Model {
        let mut g = Graph::default();
        g.inputs
            .push(ValueInfo::tensor("x", DType::F32, &[2, 3, 4]));
        let mut mean = Node::new("/ln/ReduceMean", "ReduceMean", &["x"], &["m"]);
        mean.set_attr("axes", Attr::Ints(vec![-1]));
        let mut var = Node::new("/ln/ReduceMean_1", "ReduceMean", &["p"], &["v"]);
        var.set_attr("axes", Attr::Ints(vec![2]));
        g.nodes.extend([
            mean,
            Node::new("/ln/Sub", "Sub", &["x", "m"], &["d"]),
            Node::new("/ln/Pow", "Pow", &["d", "two"], &["p"]),
            var,
            Node::new("/ln/Add", "Add", &["v", "eps"], &["ve"]),
            Node::new("/ln/Sqrt", "Sqrt", &["ve"], &["s"]),
            Node::new("/ln/Div", "Div", &["d", "s"], &["n"]),
        ]);
        let scalar = |v: f32| Arc::new(Tensor::from_f32(&[], vec![v]).unwrap());
        g.initializers.insert("two".into(), scalar(2.0));
        g.initializers.insert("eps".into(), scalar(1e-5));
        let out = if with_affine {
            g.nodes
                .push(Node::new("/ln/Mul", "Mul", &["n", "w"], &["a"]));
            g.nodes
                .push(Node::new("/ln/Add_1", "Add", &["b", "a"], &["y"]));
            let vec4 = |v: Vec<f32>| Arc::new(Tensor::from_f32(&[4], v).unwrap());
            g.initializers
                .insert("w".into(), vec4(vec![1.0, 2.0, 3.0, 4.0]));
            g.initializers.insert("b".into(), vec4(vec![0.5; 4]));
            "y"
        } else {
            "n"
        };
        g.nodes.push(Node::new("/after", "Relu", &[out], &["r"]));
        g.outputs
            .push(ValueInfo::tensor("r", DType::F32, &[2, 3, 4]));
        let mut model = Model {
            graph: g,
            ..Model::default()
        };
        model.opsets.insert(String::new(), opset);
        model
    }

    #[test]
    fn fuses_the_torch_export_and_raises_the_opset() {
        let mut m = torch_style(13, true);
        assert_eq!(fuse_layer_norms(&mut m).unwrap(), 1);
        let ops: Vec<&str> = m.graph.nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["LayerNormalization", "Relu"]);
        let ln = &m.graph.nodes[0];
        assert_eq!(ln.name, "/ln/LayerNormalization");
        assert_eq!(ln.outputs, ["y"]);
        assert_eq!(ln.int_or("axis", 0).unwrap(), -1);
        assert_eq!(ln.float_or("epsilon", 0.0).unwrap(), 1e-5);
        let scale = m.graph.initializer(&ln.inputs[1]).unwrap();
        assert_eq!(scale.shape(), &[4]);
        assert_eq!(m.onnx_opset(), 17);
        assert!(m.graph.initializer("two").is_none());
    }

    #[test]
    fn a_chain_without_affine_parameters_stays() {
        // The normalised shape's sizes are nowhere to be had for the scale.
        let mut m = torch_style(13, false);
        assert_eq!(fuse_layer_norms(&mut m).unwrap(), 0);
        assert_eq!(m.graph.nodes.len(), 8);
    }

    #[test]
    fn old_opsets_and_shared_values_are_left_alone() {
        let mut m = torch_style(12, true);
        assert_eq!(fuse_layer_norms(&mut m).unwrap(), 0);
        assert_eq!(m.onnx_opset(), 12);
        // The deviation also read elsewhere: not a private chain.
        let mut m = torch_style(13, true);
        m.graph
            .nodes
            .push(Node::new("/spy", "Relu", &["d"], &["spy"]));
        m.graph
            .outputs
            .push(ValueInfo::tensor("spy", DType::F32, &[2, 3, 4]));
        assert_eq!(fuse_layer_norms(&mut m).unwrap(), 0);
        // Another exponent is not a variance.
        let mut m = torch_style(13, true);
        m.graph.initializers.insert(
            "two".into(),
            Arc::new(Tensor::from_f32(&[], vec![3.0]).unwrap()),
        );
        assert_eq!(fuse_layer_norms(&mut m).unwrap(), 0);
    }

    #[test]
    fn the_reciprocal_form_fuses_too() {
        let mut m = torch_style(17, true);
        let g = &mut m.graph;
        let div = g.nodes.iter().position(|n| n.op_type == "Div").unwrap();
        g.nodes[div] = Node::new("/ln/Mul_0", "Mul", &["inv", "d"], &["n"]);
        g.nodes.insert(
            div,
            Node::new("/ln/Reciprocal", "Reciprocal", &["s"], &["inv"]),
        );
        assert_eq!(fuse_layer_norms(&mut m).unwrap(), 1);
        assert_eq!(m.graph.nodes.len(), 2);
        assert_eq!(m.onnx_opset(), 17);
    }
}
