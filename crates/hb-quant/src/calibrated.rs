//! The calibrated model: the optimized float model with `HzCalibration`
//! nodes (see docs/calibrated-model.md), and reading them back.

use crate::calib::candidate::Thresholds;
use crate::plan::{CalibPoint, TensorKind};
use crate::qtype::QType;
use hb_ir::{Attr, IrError, Model, Node};

/// Domain of hbkit's custom ops.
pub const DOMAIN: &str = "horizon";
/// Op type of calibration nodes.
pub const CALIBRATION_OP: &str = "HzCalibration";
/// Op type of preprocess nodes.
pub const PREPROCESS_OP: &str = "HzPreprocess";
/// Op type of bias-correction nodes (`bias_correction`).
pub const BIAS_CORRECTION_OP: &str = "HzBiasCorrection";

/// True for a calibration node.
pub fn is_calibration(n: &Node) -> bool {
    n.op_type == CALIBRATION_OP && n.domain == DOMAIN
}

fn point_suffix(p: &CalibPoint, shared: bool) -> String {
    if !shared {
        return String::new();
    }
    let mut s = format!("_{}", p.qtype);
    if p.ec {
        s.push_str("_ec");
    }
    s
}

/// The calibration node for `p` with thresholds `t`.
fn calibration_node(p: &CalibPoint, t: &Thresholds, input: &str, name: &str, output: &str) -> Node {
    let mut n = Node::new(name, CALIBRATION_OP, &[input], &[output]);
    n.domain = DOMAIN.to_string();
    n.set_attr("thresholds", Attr::Floats(t.values.clone()));
    n.set_attr("qtype", Attr::String(p.qtype.to_string()));
    let (tensor_type, axis) = match p.kind {
        TensorKind::Feature => ("feature", t.axis),
        TensorKind::Weight { axis } => ("weight", axis),
    };
    n.set_attr("tensor_type", Attr::String(tensor_type.into()));
    n.set_attr("axis", Attr::Int(axis as i64));
    n.set_attr("switch", Attr::String("ON".into()));
    n.set_attr("constant", Attr::Int(0));
    n.set_attr("asymmetric", Attr::Int(i64::from(t.asymmetric)));
    n.set_attr("method", Attr::String(t.method.clone()));
    if p.ec {
        n.set_attr("ec", Attr::Int(1));
    }
    if t.keep_masks {
        n.set_attr("keep_masks", Attr::Int(1));
        if t.mask_limit != crate::masks::MASK_LIMIT {
            n.set_attr("mask_limit", Attr::Float(t.mask_limit));
        }
    }
    n
}

/// Inserts one calibration node per point (thresholds in the same order as
/// `points`) and returns the calibrated model, topologically sorted.
pub fn insert_calibration(
    model: &Model,
    points: &[CalibPoint],
    thresholds: &[Thresholds],
) -> Result<Model, IrError> {
    let mut m = model.clone();
    let g = &mut m.graph;
    let count = |t: &str| {
        points
            .iter()
            .filter(|p| p.tensor == t && !p.model_output)
            .count()
    };
    let mut new_nodes: Vec<Node> = Vec::new();
    for (p, t) in points.iter().zip(thresholds) {
        let suffix = point_suffix(p, count(&p.tensor) > 1);
        if p.model_output {
            // Rename the producer's output; the calibration node produces the
            // output under its original name.
            let float_name = g.fresh_name(&format!("{}_float", p.tensor));
            for n in g.nodes.iter_mut() {
                for o in n.outputs.iter_mut() {
                    if o == &p.tensor {
                        *o = float_name.clone();
                    }
                }
            }
            let name = g.fresh_name(&format!("{}_output_HzCalibration", p.tensor));
            new_nodes.push(calibration_node(p, t, &float_name, &name, &p.tensor));
            continue;
        }
        let name = g.fresh_name(&format!("{}{suffix}_HzCalibration", p.tensor));
        let out = g.fresh_name(&format!("{}{suffix}_calibrated", p.tensor));
        for &(node, input) in &p.consumers {
            g.nodes[node].inputs[input] = out.clone();
        }
        new_nodes.push(calibration_node(p, t, &p.tensor, &name, &out));
    }
    g.nodes.extend(new_nodes);
    hb_ir::topo::sort(g)?;
    m.opsets.insert(DOMAIN.to_string(), 1);
    Ok(m)
}

/// True for a bias-correction node.
pub fn is_bias_correction(n: &Node) -> bool {
    n.op_type == BIAS_CORRECTION_OP && n.domain == DOMAIN
}

/// Sets every calibration and bias-correction node's switch (`ON` =
/// fake-quantize / correct; all OFF = the float model).
pub fn set_switch(model: &mut Model, on: bool) {
    let value = if on { "ON" } else { "OFF" };
    for n in model
        .graph
        .nodes
        .iter_mut()
        .filter(|n| is_calibration(n) || is_bias_correction(n))
    {
        n.set_attr("switch", Attr::String(value.into()));
    }
}

/// A calibration node as read back from a calibrated model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CalibrationInfo {
    /// Node name.
    pub name: String,
    /// The tensor it quantizes.
    pub tensor: String,
    /// Its qtype.
    pub qtype: Option<QType>,
    /// `feature` or `weight`.
    pub tensor_type: String,
    /// Thresholds.
    pub thresholds: Vec<f32>,
    /// Switch ON.
    pub on: bool,
    /// Asymmetric thresholds.
    pub asymmetric: bool,
    /// Method.
    pub method: String,
}

/// The calibration nodes of a model, in graph order.
pub fn calibration_infos(model: &Model) -> Vec<CalibrationInfo> {
    model
        .graph
        .nodes
        .iter()
        .filter(|n| is_calibration(n))
        .map(|n| CalibrationInfo {
            name: n.name.clone(),
            tensor: n.inputs.first().cloned().unwrap_or_default(),
            qtype: n
                .string_or("qtype", "int8")
                .ok()
                .and_then(|q| QType::parse(&q)),
            tensor_type: n.string_or("tensor_type", "feature").unwrap_or_default(),
            thresholds: n
                .get_floats("thresholds")
                .ok()
                .flatten()
                .unwrap_or_default(),
            on: n
                .string_or("switch", "ON")
                .map(|s| s.eq_ignore_ascii_case("on"))
                .unwrap_or(true),
            asymmetric: n.int_or("asymmetric", 0).unwrap_or(0) != 0,
            method: n.string_or("method", "").unwrap_or_default(),
        })
        .collect()
}
