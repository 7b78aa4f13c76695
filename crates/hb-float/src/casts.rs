//! No-op `Cast` removal. Exporters keep the dtype conversions of the source
//! (`hidden_states.to(torch.float32)` in T5's and LLaMA's RMSNorm, `.float()`
//! before a Softmax, paddle's `astype`) even when the value already has that
//! type; such a Cast is an identity, but as a node of its own it cuts a
//! chain the quantizer would otherwise keep in integers (docs/wild-models.md).

use crate::error::FloatError;
use hb_ir::{passes::remove_identities, Model};
use hb_tensor::DType;
use std::collections::HashMap;

/// Turns every `Cast` (and `CastLike`) whose input already has the target
/// type into an `Identity` and removes it. Types come from the graph inputs,
/// initializers and shape inference by execution (needs fixed input shapes;
/// else nothing changes). Returns the number of Casts removed.
pub fn remove_noop_casts(model: &mut Model) -> Result<usize, FloatError> {
    let has_cast = |m: &Model| {
        m.graph
            .nodes
            .iter()
            .any(|n| n.domain.is_empty() && matches!(n.op_type.as_str(), "Cast" | "CastLike"))
    };
    if !has_cast(model) || model.graph.inputs.iter().any(|v| v.fixed_shape().is_none()) {
        return Ok(0);
    }
    let mut probe = model.clone();
    let Ok(infos) = crate::shapes::infer_shapes(&mut probe, &HashMap::new()) else {
        return Ok(0);
    };
    let mut dtypes: HashMap<&str, DType> = HashMap::new();
    for v in infos.iter().chain(&model.graph.inputs) {
        if let Some(dt) = v.dtype() {
            dtypes.insert(v.name.as_str(), dt);
        }
    }
    let g = &model.graph;
    let dtype_of = |v: &str| {
        g.initializer(v)
            .map(|t| t.dtype())
            .or_else(|| dtypes.get(v).copied())
    };
    let noop: Vec<usize> = g
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.domain.is_empty())
        .filter(|(_, n)| {
            let Some(from) = n.input(0).and_then(dtype_of) else {
                return false;
            };
            let to = match n.op_type.as_str() {
                "Cast" => n
                    .int_or("to", 0)
                    .ok()
                    .and_then(|c| DType::from_onnx_code(c as i32)),
                "CastLike" => n.input(1).and_then(dtype_of),
                _ => None,
            };
            to == Some(from)
        })
        .map(|(k, _)| k)
        .collect();
    let g = &mut model.graph;
    for &k in &noop {
        let n = &mut g.nodes[k];
        n.op_type = "Identity".into();
        n.inputs.truncate(1);
        n.attrs.clear();
    }
    let before = g.nodes.len();
    remove_identities(g);
    Ok(before - g.nodes.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hb_ir::{Attr, Graph, Node, ValueInfo};

    fn model(to: i64) -> Model {
        let mut g = Graph::default();
        g.inputs.push(ValueInfo::tensor("x", DType::F32, &[1, 4]));
        g.outputs.push(ValueInfo::tensor("y", DType::F32, &[1, 4]));
        g.nodes.push(Node::new("r", "Relu", &["x"], &["a"]));
        let mut c = Node::new("c", "Cast", &["a"], &["b"]);
        c.set_attr("to", Attr::Int(to));
        g.nodes.push(c);
        g.nodes.push(Node::new("s", "Sigmoid", &["b"], &["y"]));
        let mut m = Model {
            ir_version: 8,
            graph: g,
            ..Default::default()
        };
        m.opsets.insert(String::new(), 13);
        m
    }

    #[test]
    fn a_cast_to_the_same_type_goes() {
        let mut m = model(1); // float32 → float32
        assert_eq!(remove_noop_casts(&mut m).unwrap(), 1);
        let ops: Vec<&str> = m.graph.nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Relu", "Sigmoid"]);
        assert_eq!(m.graph.nodes[1].inputs, ["a"]);
    }

    #[test]
    fn a_real_conversion_stays() {
        let mut m = model(10); // float32 → float16
        assert_eq!(remove_noop_casts(&mut m).unwrap(), 0);
        assert_eq!(m.graph.nodes.len(), 3);
    }
}
