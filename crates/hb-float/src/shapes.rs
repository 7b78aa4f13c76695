//! Shape inference by execution: the graph is run on zero-filled inputs of
//! the declared (or given) shapes and every value's dtype and shape is
//! recorded in `value_info`. Exact for models whose shapes do not depend on
//! input values; dynamic dims must be given.

use crate::error::FloatError;
use crate::session::{NodeHook, Session};
use hb_ir::{Model, Node, ValueInfo};
use hb_tensor::{DType, Tensor};
use std::collections::HashMap;

struct Recorder(Vec<ValueInfo>);

impl NodeHook for Recorder {
    fn after_node(&mut self, _i: usize, node: &Node, outputs: &mut [Tensor]) -> Result<(), String> {
        for (name, t) in node.outputs.iter().zip(outputs.iter()) {
            if !name.is_empty() {
                self.0.push(ValueInfo::tensor(name, t.dtype(), t.shape()));
            }
        }
        Ok(())
    }
}

/// Infers every value's type and shape. `shapes` overrides input shapes
/// (needed for dynamic dims). Fills `model.graph.value_info` and the output
/// descriptions, and returns the inferred infos in execution order.
pub fn infer_shapes(
    model: &mut Model,
    shapes: &HashMap<String, Vec<usize>>,
) -> Result<Vec<ValueInfo>, FloatError> {
    let mut inputs = HashMap::new();
    for v in &model.graph.inputs {
        let shape = match shapes.get(&v.name) {
            Some(s) => s.clone(),
            None => v.fixed_shape().ok_or_else(|| FloatError::Input {
                name: v.name.clone(),
                msg: format!("has dynamic shape {}; give its shape", v.shape_text()),
            })?,
        };
        let dtype = v.dtype().unwrap_or(DType::F32);
        inputs.insert(v.name.clone(), Tensor::zeros(dtype, &shape));
    }
    let mut relaxed = model.clone();
    for v in &mut relaxed.graph.inputs {
        v.shape = None;
    }
    let session = Session::new(&relaxed)?;
    let mut rec = Recorder(Vec::new());
    crate::probe::shapes_only(|| session.run_with_hook(&inputs, &mut rec))?;
    for v in &rec.0 {
        model.graph.value_info.insert(v.name.clone(), v.clone());
    }
    for o in &mut model.graph.outputs {
        if let Some(v) = rec.0.iter().find(|v| v.name == o.name) {
            *o = v.clone();
        }
    }
    Ok(rec.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{ints, rand_vals, t};
    use crate::ValueDump;
    use hb_ir::{Attr, Graph};
    use std::sync::Arc;

    /// x → Conv (stride 2, pads) → ConvTranspose (stride 2, output_padding)
    /// → Flatten → MatMul → Gemm (transB, bias): the heavy kernels whose
    /// arithmetic the probe skips.
    fn heavy_model() -> Model {
        let mut g = Graph::default();
        g.inputs
            .push(ValueInfo::tensor("x", DType::F32, &[2, 3, 9, 7]));
        g.outputs.push(ValueInfo::tensor("y", DType::F32, &[0]));
        let mut init = |name: &str, shape: &[usize], seed: u64| {
            let n = shape.iter().product();
            g.initializers
                .insert(name.into(), Arc::new(t(shape, rand_vals(n, seed))));
        };
        init("w", &[4, 3, 3, 3], 1);
        init("wt", &[4, 2, 2, 3], 2);
        init("m", &[2 * 11 * 7, 6], 3);
        init("g", &[5, 6], 4);
        init("c", &[5], 5);
        let mut conv = Node::new("conv", "Conv", &["x", "w"], &["a"]);
        conv.set_attr("strides", ints(&[2, 2]));
        conv.set_attr("pads", ints(&[1, 0, 1, 0]));
        let mut up = Node::new("up", "ConvTranspose", &["a", "wt"], &["b"]);
        up.set_attr("strides", ints(&[2, 2]));
        up.set_attr("output_padding", ints(&[1, 0]));
        let mut flat = Node::new("flat", "Flatten", &["b"], &["f"]);
        flat.set_attr("axis", Attr::Int(1));
        let mm = Node::new("mm", "MatMul", &["f", "m"], &["p"]);
        let mut gemm = Node::new("gemm", "Gemm", &["p", "g", "c"], &["y"]);
        gemm.set_attr("transB", Attr::Int(1));
        g.nodes.extend([conv, up, flat, mm, gemm]);
        crate::kernels::testutil::model_of(g, 17)
    }

    #[test]
    fn shapes_skip_the_arithmetic_and_equal_a_real_run() {
        let mut m = heavy_model();
        let infos = infer_shapes(&mut m, &HashMap::new()).unwrap();
        let x_map = || {
            let x = t(&[2, 3, 9, 7], rand_vals(2 * 3 * 9 * 7, 9));
            HashMap::from([("x".to_string(), x)])
        };
        let mut dump = ValueDump::default();
        Session::new(&m)
            .unwrap()
            .run_with_hook(&x_map(), &mut dump)
            .unwrap();
        let real: Vec<(String, Vec<usize>)> = dump
            .values
            .iter()
            .map(|(_, name, t)| (name.clone(), t.shape().to_vec()))
            .collect();
        let inferred: Vec<(String, Vec<usize>)> = infos
            .iter()
            .map(|v| (v.name.clone(), v.fixed_shape().unwrap()))
            .collect();
        assert_eq!(inferred, real);
        assert_eq!(real.last().unwrap().1, vec![2, 5]);
        // The probe really skipped the products: on the same input those
        // of a real run vary, those under `shapes_only` are all FILL.
        let mut probed = ValueDump::default();
        crate::probe::shapes_only(|| {
            Session::new(&m)
                .unwrap()
                .run_with_hook(&x_map(), &mut probed)
        })
        .unwrap();
        let values = |d: &ValueDump, name: &str| -> Vec<f32> {
            let (_, _, t) = d.values.iter().find(|v| v.1 == name).unwrap();
            t.to_f32().unwrap().iter().copied().collect()
        };
        for name in ["a", "b", "p"] {
            let fill = crate::probe::FILL;
            assert!(values(&dump, name).iter().any(|&v| v != fill), "{name}");
            assert!(values(&probed, name).iter().all(|&v| v == fill), "{name}");
        }
        assert!(!crate::probe::skipping_arithmetic());
    }
}
