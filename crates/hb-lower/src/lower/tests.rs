//! Lowering tests on small hand-built calibrated graphs.

use super::{lower_model, LowerOptions};
use hb_bpu::program::pb::Placement;
use hb_ir::{Attr, Graph, Model, Node, ValueInfo};
use hb_tensor::{DType, Tensor};
use std::sync::Arc;

/// A symmetric int8 feature calibration node `x → y` with threshold `t`.
pub(crate) fn cal(name: &str, x: &str, y: &str, t: f32) -> Node {
    let mut n = Node::new(name, "HzCalibration", &[x], &[y]);
    n.domain = "horizon".into();
    n.set_attr("thresholds", Attr::Floats(vec![t]));
    n.set_attr("qtype", Attr::String("int8".into()));
    n
}

/// Wraps a graph into a model (IR 8, default-domain opset 13).
pub(crate) fn model_of(graph: Graph) -> Model {
    let mut m = Model {
        ir_version: 8,
        graph,
        ..Default::default()
    };
    m.opsets.insert(String::new(), 13);
    m
}

/// x → cal(4) → Sigmoid → s, where `s` is a model output and also read by
/// cal(0.6) → Mul(2) → y (BERT's last_hidden_state, also the pooler's
/// input). A consumer's threshold does not cover the output's range.
fn output_also_consumed() -> Model {
    let mut g = Graph::default();
    g.inputs.push(ValueInfo::tensor("x", DType::F32, &[1, 4]));
    g.outputs.push(ValueInfo::tensor("s", DType::F32, &[1, 4]));
    g.outputs.push(ValueInfo::tensor("y", DType::F32, &[1, 4]));
    g.initializers.insert(
        "two".into(),
        Arc::new(Tensor::from_vec(&[], vec![2f32]).unwrap()),
    );
    g.nodes.push(cal("xc", "x", "xq", 4.0));
    g.nodes.push(Node::new("sig", "Sigmoid", &["xq"], &["s"]));
    g.nodes.push(cal("sc", "s", "sq", 0.6));
    g.nodes.push(Node::new("m", "Mul", &["sq", "two"], &["y"]));
    model_of(g)
}

#[test]
fn a_model_output_keeps_its_float_value_when_also_consumed() {
    let l = lower_model(&output_also_consumed(), &LowerOptions::default()).unwrap();
    let sig = l.program.ops.iter().find(|o| o.name == "sig").unwrap();
    assert_eq!(sig.placement, Placement::Cpu as i32);
    // The consumer's calibration quantizes the float output.
    let s = sig.outputs[0] as i32;
    assert!(
        l.program
            .ops
            .iter()
            .any(|o| o.op_type == "Quantize" && o.inputs.first() == Some(&s)),
        "{:?}",
        l.program.ops.iter().map(|o| &o.op_type).collect::<Vec<_>>()
    );
}

/// scores → cal(0.5) and mask (0 / −inf) → cal(keep_masks, 0.05) → Add →
/// cal(keep_masks) → Softmax → cal → y (T5's position bias with the mask
/// selected in, CLIP's causal mask).
fn masked_scores() -> Model {
    let mut g = Graph::default();
    g.inputs.push(ValueInfo::tensor("s", DType::F32, &[1, 4]));
    g.inputs.push(ValueInfo::tensor("m", DType::F32, &[1, 4]));
    g.outputs.push(ValueInfo::tensor("y", DType::F32, &[1, 4]));
    let mut mc = cal("mc", "m", "mq", 0.05);
    mc.set_attr("keep_masks", Attr::Int(1));
    let mut ac = cal("ac", "a", "aq", 0.6);
    ac.set_attr("keep_masks", Attr::Int(1));
    g.nodes.push(cal("sc", "s", "sq", 0.5));
    g.nodes.push(mc);
    g.nodes.push(Node::new("add", "Add", &["sq", "mq"], &["a"]));
    g.nodes.push(ac);
    g.nodes.push(Node::new("sm", "Softmax", &["aq"], &["p"]));
    g.nodes.push(cal("pc", "p", "pq", 1.0));
    g.nodes.push(Node::new("relu", "Relu", &["pq"], &["y"]));
    model_of(g)
}

#[test]
fn a_masked_add_stays_in_float_and_the_softmax_still_masks() {
    let l = lower_model(&masked_scores(), &LowerOptions::default()).unwrap();
    let place = |name: &str| {
        l.program
            .ops
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.placement)
    };
    assert_eq!(place("add"), Some(Placement::Cpu as i32));
    assert_eq!(place("sm"), Some(Placement::Bpu as i32));
    let note = l.notes.iter().find(|n| n.node == "add").unwrap();
    assert!(note.reason.contains("mask"), "{note:?}");
    // The float Add reads the mask through the calibration node run in
    // float (−inf kept), not through a Dequantize of qmin.
    let add = l.program.ops.iter().find(|o| o.name == "add").unwrap();
    let m_in = add.inputs[1] as usize;
    let producer = l
        .program
        .ops
        .iter()
        .find(|o| o.outputs.iter().any(|&t| t as usize == m_in))
        .unwrap();
    assert_eq!(producer.op_type, "HzCalibration");
}

#[test]
fn given_value_infos_lower_as_inferred_ones_and_a_gap_falls_back() {
    for model in [output_also_consumed(), masked_scores()] {
        let plain = lower_model(&model, &LowerOptions::default()).unwrap();
        let mut probe = model.clone();
        let infos = hb_float::shapes::infer_shapes(&mut probe, &Default::default()).unwrap();
        let inferred = || -> std::collections::HashMap<String, (DType, Vec<usize>)> {
            model
                .graph
                .inputs
                .iter()
                .chain(&infos)
                .map(|v| {
                    (
                        v.name.clone(),
                        (v.dtype().unwrap(), v.fixed_shape().unwrap()),
                    )
                })
                .collect()
        };
        let mut given = inferred();
        let with = |given: &std::collections::HashMap<_, _>| {
            let opts = LowerOptions {
                value_infos: given.clone(),
                ..Default::default()
            };
            lower_model(&model, &opts).unwrap().program
        };
        assert_eq!(with(&given), plain.program);
        // A value the caller missed: the lowering infers every shape.
        let last = &model.graph.nodes.last().unwrap().outputs[0];
        given.remove(last);
        assert_eq!(with(&given), plain.program);
        // Shapes given are used as given (the caller vouches for them):
        // with every node output one axis longer the program differs.
        given = inferred();
        for n in &model.graph.nodes {
            given.get_mut(&n.outputs[0]).unwrap().1.push(1);
        }
        let opts = LowerOptions {
            value_infos: given,
            ..Default::default()
        };
        if let Ok(l) = lower_model(&model, &opts) {
            assert_ne!(l.program, plain.program);
        }
    }
}
