//! Constant nodes → initializers.

use crate::attr::Attr;
use crate::graph::{Graph, Node};
use crate::{IrError, Result};
use hb_tensor::Tensor;
use std::sync::Arc;

/// The tensor a `Constant` node produces (any of its value attributes).
pub fn constant_value(n: &Node) -> Result<Tensor> {
    let err = |m: &str| IrError::Attribute {
        node: n.name.clone(),
        op: n.op_type.clone(),
        msg: m.to_string(),
    };
    let (key, a) = n
        .attrs
        .iter()
        .next()
        .ok_or_else(|| err("Constant without a value attribute"))?;
    let t = match (key.as_str(), a) {
        ("value" | "sparse_value", Attr::Tensor(t)) => t.clone(),
        ("value_float", Attr::Float(v)) => Tensor::scalar(*v),
        ("value_floats", Attr::Floats(v)) => {
            Tensor::from_vec(&[v.len()], v.clone()).map_err(|e| err(&e.to_string()))?
        }
        ("value_int", Attr::Int(v)) => Tensor::scalar(*v),
        ("value_ints", Attr::Ints(v)) => {
            Tensor::from_vec(&[v.len()], v.clone()).map_err(|e| err(&e.to_string()))?
        }
        ("value_string", Attr::String(v)) => Tensor::scalar(v.clone()),
        ("value_strings", Attr::Strings(v)) => {
            Tensor::from_vec(&[v.len()], v.clone()).map_err(|e| err(&e.to_string()))?
        }
        (k, _) => return Err(err(&format!("unsupported Constant attribute '{k}'"))),
    };
    Ok(t)
}

/// Replaces every `Constant` node by an initializer of the same name.
pub fn constants_to_initializers(g: &mut Graph) -> Result<usize> {
    let mut count = 0;
    let mut kept = Vec::with_capacity(g.nodes.len());
    for n in std::mem::take(&mut g.nodes) {
        let is_const = n.op_type == "Constant" && (n.domain.is_empty() || n.domain == "ai.onnx");
        match (is_const, n.outputs.first()) {
            (true, Some(out)) if !out.is_empty() => {
                let t = constant_value(&n)?;
                g.initializers.insert(out.clone(), Arc::new(t));
                count += 1;
            }
            _ => kept.push(n),
        }
    }
    g.nodes = kept;
    Ok(count)
}
