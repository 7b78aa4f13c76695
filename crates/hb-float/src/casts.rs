//! No-op `Cast` removal. Exporters keep the dtype conversions of the source
//! (`hidden_states.to(torch.float32)` in T5's and LLaMA's RMSNorm, `.float()`
//! before a Softmax, paddle's `astype`) even when the value already has that
//! type; such a Cast is an identity, but as a node of its own it cuts a
//! chain the quantizer would otherwise keep in integers (docs/wild-models.md).

use crate::error::FloatError;
use hb_ir::{passes::remove_identities, Attr, Model, Node};
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

/// Rewrites a half-precision model (float16 / bfloat16 weights and
/// activations, as `onnxconverter_common.float16` and `.half()` exports
/// make them) to compute in float32, the precision the quantizer
/// calibrates against and the integer machine quantizes from: half
/// initializers become float32, `Cast`s and `dtype` attributes that target
/// a half type target float32, `ConstantOfShape` values are widened, and
/// half graph inputs / outputs keep their type through a `Cast` after /
/// before them. Run before [`remove_noop_casts`], which then drops the
/// Casts that became identities. Returns the number of changed items.
pub fn compute_in_float32(model: &mut Model) -> Result<usize, FloatError> {
    let half = |dt: DType| matches!(dt, DType::F16 | DType::BF16);
    let half_code = |c: i64| DType::from_onnx_code(c as i32).is_some_and(half);
    let f32_code = i64::from(DType::F32.onnx_code());
    let widen = |t: &hb_tensor::Tensor| {
        t.cast(DType::F32)
            .map_err(|e| FloatError::Graph(format!("widening a half constant: {e}")))
    };
    let g = &mut model.graph;
    let mut changed = 0;
    for t in g.initializers.values_mut() {
        if half(t.dtype()) {
            *t = std::sync::Arc::new(widen(t)?);
            changed += 1;
        }
    }
    for n in g.nodes.iter_mut().filter(|n| n.domain.is_empty()) {
        for key in ["to", "dtype"] {
            if n.get_int(key).ok().flatten().is_some_and(half_code) {
                n.set_attr(key, Attr::Int(f32_code));
                changed += 1;
            }
        }
        if n.op_type == "ConstantOfShape" {
            if let Some(Attr::Tensor(t)) = n.attrs.get("value") {
                if half(t.dtype()) {
                    let w = widen(t)?;
                    n.set_attr("value", Attr::Tensor(w));
                    changed += 1;
                }
            }
        }
    }
    // Half inputs: a Cast to float32 right after, read by every consumer.
    let mut head = Vec::new();
    let half_inputs: Vec<hb_ir::ValueInfo> = g
        .inputs
        .iter()
        .filter(|v| v.dtype().is_some_and(half))
        .cloned()
        .collect();
    for v in &half_inputs {
        let wide = format!("{}_float32", v.name);
        g.replace_uses(&v.name, &wide);
        let mut c = Node::new(
            &format!("{}_to_float32", v.name),
            "Cast",
            &[&v.name],
            &[&wide],
        );
        c.set_attr("to", Attr::Int(f32_code));
        head.push(c);
        changed += 1;
    }
    // Half outputs: computed in float32 under a new name, then cast back.
    let mut tail = Vec::new();
    let half_outputs: Vec<hb_ir::ValueInfo> = g
        .outputs
        .iter()
        .filter(|v| v.dtype().is_some_and(half))
        .cloned()
        .collect();
    for v in &half_outputs {
        let wide = format!("{}_float32", v.name);
        g.replace_uses(&v.name, &wide);
        for o in g.nodes.iter_mut().flat_map(|n| n.outputs.iter_mut()) {
            if *o == v.name {
                *o = wide.clone();
            }
        }
        let mut c = Node::new(&format!("{}_to_half", v.name), "Cast", &[&wide], &[&v.name]);
        c.set_attr("to", Attr::Int(i64::from(v.elem_type)));
        tail.push(c);
        changed += 1;
    }
    if !head.is_empty() || !tail.is_empty() {
        head.append(&mut g.nodes);
        head.append(&mut tail);
        g.nodes = head;
    }
    g.value_info.retain(|_, v| !v.dtype().is_some_and(half));
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hb_ir::{Graph, ValueInfo};
    use hb_tensor::Tensor;

    fn model(to: i64) -> Model {
        let mut g = Graph::default();
        g.inputs.push(ValueInfo::tensor("x", DType::F32, &[1, 4]));
        g.outputs.push(ValueInfo::tensor("y", DType::F32, &[1, 4]));
        g.nodes.push(Node::new("r", "Relu", &["x"], &["a"]));
        let mut c = Node::new("c", "Cast", &["a"], &["b"]);
        c.set_attr("to", Attr::Int(to));
        g.nodes.push(c);
        g.nodes.push(Node::new("s", "Sigmoid", &["b"], &["y"]));
        crate::kernels::testutil::model_of(g, 13)
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

    #[test]
    fn half_models_compute_in_float32() {
        // x (f16) -> Mul by an f16 weight -> Cast to f16 (a no-op) -> y (f16).
        let mut g = Graph::default();
        g.inputs.push(ValueInfo::tensor("x", DType::F16, &[1, 4]));
        g.outputs.push(ValueInfo::tensor("y", DType::F16, &[1, 4]));
        let w = Tensor::from_f32(&[4], vec![0.5, -1.0, 2.0, 0.25])
            .unwrap()
            .cast(DType::F16)
            .unwrap();
        g.initializers.insert("w".into(), std::sync::Arc::new(w));
        g.nodes.push(Node::new("m", "Mul", &["x", "w"], &["a"]));
        let mut c = Node::new("c", "Cast", &["a"], &["y"]);
        c.set_attr("to", Attr::Int(i64::from(DType::F16.onnx_code())));
        g.nodes.push(c);
        let mut m = crate::kernels::testutil::model_of(g, 13);
        let x = Tensor::from_f32(&[1, 4], vec![1.0, 2.0, 3.0, 4.0])
            .unwrap()
            .cast(DType::F16)
            .unwrap();
        let want = crate::Session::new(&m)
            .unwrap()
            .run(&[("x".to_string(), x.clone())].into_iter().collect())
            .unwrap();
        assert!(compute_in_float32(&mut m).unwrap() >= 4);
        remove_noop_casts(&mut m).unwrap();
        assert_eq!(m.graph.initializer("w").unwrap().dtype(), DType::F32);
        // The Mul now reads and writes float32; I/O types are kept.
        let got = crate::Session::new(&m)
            .unwrap()
            .run(&[("x".to_string(), x)].into_iter().collect())
            .unwrap();
        assert_eq!(got[0].1.dtype(), DType::F16);
        assert_eq!(
            got[0].1.to_f64_vec().unwrap(),
            want[0].1.to_f64_vec().unwrap()
        );
        let ops: Vec<&str> = m.graph.nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, vec!["Cast", "Mul", "Cast"]);
    }
}
