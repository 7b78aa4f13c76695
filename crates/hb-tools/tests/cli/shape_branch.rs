//! A model with a shape-dependent `If` (what scripted modules and paddle's
//! `cond` export for `if x.shape[0] == 1`): with fixed input shapes the
//! condition folds, the `If` becomes its taken branch, and the model
//! calibrates and lowers like any other (before: "no kernel for If").

use crate::common::{calibrate, f32t, model_of, run_ok, write_model_and_samples};
use hb_bpu::program::pb::Placement;
use hb_ir::{Attr, Graph, Model, Node, ValueInfo};
use hb_tensor::{metrics, DType, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

/// y = MatMul(If(Shape(x)[0] == 2, then: Relu(x · w1), else: x), w2).
fn model() -> Model {
    let mut g = Graph {
        inputs: vec![ValueInfo::tensor("x", DType::F32, &[2, 16])],
        outputs: vec![ValueInfo::tensor("y", DType::F32, &[2, 8])],
        ..Graph::default()
    };
    g.initializers
        .insert("w2".into(), Arc::new(f32t(&[16, 8], 2, 0.4)));
    g.initializers
        .insert("zero".into(), Arc::new(Tensor::scalar(0i64)));
    g.initializers
        .insert("two".into(), Arc::new(Tensor::scalar(2i64)));
    // The branch reads w1 from the outer graph, as torch's exporter writes
    // it (the branch's own graph holds no weights): folding must keep it.
    g.initializers
        .insert("w1".into(), Arc::new(f32t(&[16, 16], 1, 0.4)));
    let then_g = Graph {
        nodes: vec![
            Node::new("mm1", "MatMul", &["x", "w1"], &["h"]),
            Node::new("relu", "Relu", &["h"], &["r"]),
        ],
        outputs: vec![ValueInfo::tensor("r", DType::F32, &[2, 16])],
        ..Graph::default()
    };
    let else_g = Graph {
        outputs: vec![ValueInfo::tensor("x", DType::F32, &[2, 16])],
        ..Graph::default()
    };
    let mut iff = Node::new("branch", "If", &["cond"], &["b"]);
    iff.set_attr("then_branch", Attr::Graph(Box::new(then_g)));
    iff.set_attr("else_branch", Attr::Graph(Box::new(else_g)));
    g.nodes = vec![
        Node::new("shape", "Shape", &["x"], &["s"]),
        Node::new("rows", "Gather", &["s", "zero"], &["n"]),
        Node::new("is_two", "Equal", &["n", "two"], &["cond"]),
        iff,
        Node::new("mm2", "MatMul", &["b", "w2"], &["y"]),
    ];
    model_of(g)
}

#[test]
fn a_static_shape_branch_calibrates_and_lowers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_model_and_samples(dir, &model(), 8, |k| {
        HashMap::from([("x".to_string(), f32t(&[2, 16], 30 + k, 1.0))])
    });
    let work = calibrate(dir, &["x"], "", 3);
    let optimized = hb_ir::load_model(&work.join("m_optimized_float_model.onnx")).unwrap();
    let ops: Vec<&str> = optimized
        .graph
        .nodes
        .iter()
        .map(|n| n.op_type.as_str())
        .collect();
    assert_eq!(ops, ["MatMul", "Relu", "MatMul"], "the If was not inlined");
    let bc = hb_bpu::program::load(&work.join("m_quantized_model.bc")).unwrap();
    let on_bpu = bc
        .ops
        .iter()
        .filter(|o| o.op_type == "MatMul" && o.placement == Placement::Bpu as i32)
        .count();
    assert_eq!(on_bpu, 2, "both MatMuls run on the BPU");
    // The calibrated model still computes the taken branch.
    let x = f32t(&[2, 16], 99, 1.0);
    let inputs = HashMap::from([("x".to_string(), x.clone())]);
    let calibrated = hb_ir::load_model(&work.join("m_calibrated_model.onnx")).unwrap();
    let sim = hb_float::Session::new(&calibrated)
        .unwrap()
        .run(&inputs)
        .unwrap();
    let mut reference = model();
    hb_tools::exec::optimize(&mut reference).unwrap();
    let float = hb_float::Session::new(&reference)
        .unwrap()
        .run(&inputs)
        .unwrap();
    let flat = |t: &Tensor| t.to_f32().unwrap().iter().copied().collect::<Vec<f32>>();
    let cos = metrics::cosine(&flat(&float[0].1), &flat(&sim[0].1));
    assert!(cos > 0.999, "cosine {cos}");
}

#[test]
fn hb_model_exec_fixes_dynamic_dims_from_the_inputs_and_runs_the_branch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut dynamic = model();
    dynamic.graph.inputs[0].shape =
        Some(vec![hb_ir::Dim::Param("n".into()), hb_ir::Dim::Fixed(16)]);
    hb_ir::save_model(&dynamic, &dir.join("model.onnx")).unwrap();
    let x = f32t(&[2, 16], 7, 1.0);
    hb_tensor::io::write_npy(&dir.join("x.npy"), &x).unwrap();
    run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_hb-model-exec"))
            .args(["infer", "--model-file"])
            .arg(dir.join("model.onnx"))
            .arg("--input-file")
            .arg(dir.join("x.npy"))
            .arg("--output-dir")
            .arg(dir.join("out")),
    );
    let got = hb_tensor::io::read_npy(&dir.join("out/y.npy")).unwrap();
    let mut reference = model();
    hb_tools::exec::optimize(&mut reference).unwrap();
    let inputs = HashMap::from([("x".to_string(), x)]);
    let want = hb_float::Session::new(&reference)
        .unwrap()
        .run(&inputs)
        .unwrap();
    assert_eq!(got, want[0].1);
}
