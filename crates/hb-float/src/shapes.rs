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
    session.run_with_hook(&inputs, &mut rec)?;
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
