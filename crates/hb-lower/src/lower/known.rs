//! Values the lowering knows without computing them.
//!
//! Torch's `scaled_dot_product_attention` exports as
//! `Where(IsNaN(Softmax(s)), 0, Softmax(s))` (both exporters): float Softmax
//! gives NaN on a fully masked row and the `Where` turns it into 0. An
//! integer value is never NaN, and the integer Softmax already gives 0 on a
//! fully masked row (docs/integer-semantics.md §11), so:
//!
//! - `IsNaN` of a value that exists only as integers (no CPU op computed it
//!   in float) is a constant all-false tensor;
//! - `Where` on a constant condition that is all true or all false is its
//!   chosen branch (when that branch already has the output's shape).
//!
//! Neither emits an op: the pattern costs nothing and keeps the attention on
//! the BPU instead of dequantizing the Softmax for a float `IsNaN`.

use super::Lowerer;
use crate::{LowerError, Result};
use hb_ir::Node;
use hb_tensor::{DType, Tensor};
use std::sync::Arc;

/// Lowers `n` when its result is known; returns whether it did.
pub(crate) fn lower_known(lw: &mut Lowerer, n: &Node) -> Result<bool> {
    match n.op_type.as_str() {
        "IsNaN" => isnan_of_integers(lw, n),
        "Where" => where_on_constant(lw, n),
        _ => Ok(false),
    }
}

fn isnan_of_integers(lw: &mut Lowerer, n: &Node) -> Result<bool> {
    let (Some(x), Some(y)) = (n.inputs.first(), n.outputs.first()) else {
        return Ok(false);
    };
    if lw.cpu_made.contains(x) {
        return Ok(false);
    }
    let Some((_, id)) = lw.any_quant(x) else {
        return Ok(false);
    };
    let shape = lw.b.shape(id);
    let len = shape.iter().product();
    let f = Tensor::from_vec(&shape, vec![false; len])
        .map_err(|e| LowerError::Model(format!("node '{}': {e}", n.name)))?;
    lw.g.initializers.insert(y.clone(), Arc::new(f));
    Ok(true)
}

/// `Some(true)` / `Some(false)` when `v` is a constant bool tensor whose
/// elements are all true / all false.
fn uniform_bool(lw: &Lowerer, v: &str) -> Option<bool> {
    let t = lw.constant(v)?;
    if t.dtype() != DType::Bool {
        return None;
    }
    let b = t.to_f32().ok()?;
    let first = *b.iter().next()? != 0.0;
    b.iter().all(|&e| (e != 0.0) == first).then_some(first)
}

fn where_on_constant(lw: &mut Lowerer, n: &Node) -> Result<bool> {
    if n.inputs.len() != 3 || n.outputs.is_empty() {
        return Ok(false);
    }
    let Some(c) = uniform_bool(lw, &n.inputs[0]) else {
        return Ok(false);
    };
    let branch = n.inputs[if c { 1 } else { 2 }].clone();
    let out = n.outputs[0].clone();
    let (Ok((_, bs)), Ok((_, os))) = (lw.info(&branch), lw.info(&out)) else {
        return Ok(false);
    };
    if bs != os {
        return Ok(false);
    }
    let quant = lw.quant.get(&branch).cloned().unwrap_or_default();
    let host = lw.host.get(&branch).copied();
    let constant = lw.g.initializers.get(&branch).cloned();
    if quant.is_empty() && host.is_none() && constant.is_none() {
        return Ok(false);
    }
    for (q, id) in quant {
        lw.set_quant(&out, q, id);
    }
    if let Some(h) = host {
        lw.host.insert(out.clone(), h);
        if lw.cpu_made.contains(&branch) {
            lw.cpu_made.insert(out.clone());
        }
    }
    if let Some(t) = constant {
        lw.g.initializers.insert(out, t);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use crate::lower::tests::{cal, model_of};
    use crate::lower::{lower_model, LowerOptions};
    use hb_ir::{Graph, Model, Node, ValueInfo};
    use hb_tensor::{DType, Tensor};
    use std::sync::Arc;
    /// x → cal → Softmax → Where(IsNaN(sm), 0, sm) → cal → Mul(2) → y:
    /// the torch sdpa tail. `float_softmax` puts the Softmax on the CPU
    /// (no calibration node re-quantizes it), where NaN is possible.
    fn sdpa_tail(float_softmax: bool) -> Model {
        let mut g = Graph::default();
        g.inputs
            .push(ValueInfo::tensor("x", DType::F32, &[1, 2, 4]));
        g.outputs
            .push(ValueInfo::tensor("y", DType::F32, &[1, 2, 4]));
        g.initializers.insert(
            "zero".into(),
            Arc::new(Tensor::from_vec(&[1], vec![0f32]).unwrap()),
        );
        g.initializers.insert(
            "two".into(),
            Arc::new(Tensor::from_vec(&[], vec![2f32]).unwrap()),
        );
        g.nodes.push(cal("xc", "x", "xq", 4.0));
        g.nodes.push(Node::new("sm", "Softmax", &["xq"], &["s"]));
        g.nodes.push(Node::new("nan", "IsNaN", &["s"], &["isnan"]));
        g.nodes
            .push(Node::new("w", "Where", &["isnan", "zero", "s"], &["p"]));
        if float_softmax {
            g.nodes.push(Node::new("m", "Mul", &["p", "two"], &["y"]));
        } else {
            g.nodes.push(cal("pc", "p", "pq", 1.0));
            g.nodes.push(Node::new("m", "Mul", &["pq", "two"], &["y"]));
        }
        model_of(g)
    }

    #[test]
    fn isnan_of_an_integer_softmax_costs_nothing() {
        let l = lower_model(&sdpa_tail(false), &LowerOptions::default()).unwrap();
        let ops: Vec<&str> = l.program.ops.iter().map(|o| o.op_type.as_str()).collect();
        assert!(
            !ops.contains(&"IsNaN") && !ops.contains(&"Where"),
            "{ops:?}"
        );
        assert!(
            l.notes.iter().all(|n| n.op_type == "Mul" || !n.cpu),
            "{:?}",
            l.notes
        );
        assert!(l
            .program
            .ops
            .iter()
            .any(|o| o.op_type == "Softmax"
                && o.placement == hb_bpu::program::pb::Placement::Bpu as i32));
    }

    #[test]
    fn isnan_of_a_float_value_still_runs() {
        let l = lower_model(&sdpa_tail(true), &LowerOptions::default()).unwrap();
        let ops: Vec<&str> = l.program.ops.iter().map(|o| o.op_type.as_str()).collect();
        assert!(ops.contains(&"IsNaN") && ops.contains(&"Where"), "{ops:?}");
    }
}
