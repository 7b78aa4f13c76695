//! Load → save → load keeps a model; large initializers and external data load.

use hb_ir::{load_model, save_model, Graph, Model, Node, ValueInfo};
use hb_tensor::{DType, Tensor};
use std::path::PathBuf;
use std::sync::Arc;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

#[test]
fn fixture_models_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for m in [
        "digits_cnn/model.onnx",
        "resnet_tiny/model.onnx",
        "sem_decoder/model.onnx",
        "seg_head/model.onnx",
    ] {
        let a = load_model(&fixtures().join(m)).unwrap();
        let p = dir.path().join("m.onnx");
        save_model(&a, &p).unwrap();
        let b = load_model(&p).unwrap();
        assert_eq!(a.graph.nodes, b.graph.nodes, "{m}");
        assert_eq!(a.graph.initializers, b.graph.initializers, "{m}");
        assert_eq!(a.graph.inputs, b.graph.inputs, "{m}");
        assert_eq!(a.graph.outputs, b.graph.outputs, "{m}");
        assert_eq!(a.opsets, b.opsets, "{m}");
    }
}

#[test]
fn model_over_100_mb_loads() {
    let n = 28 * 1024 * 1024; // 112 MiB of f32
    let data: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.5).collect();
    let mut g = Graph::default();
    g.inputs.push(ValueInfo::tensor("x", DType::F32, &[n]));
    g.outputs.push(ValueInfo::tensor("y", DType::F32, &[n]));
    g.initializers
        .insert("w".into(), Arc::new(Tensor::from_vec(&[n], data).unwrap()));
    g.nodes.push(Node::new("add", "Add", &["x", "w"], &["y"]));
    let mut m = Model {
        ir_version: 8,
        graph: g,
        ..Default::default()
    };
    m.opsets.insert(String::new(), 13);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.onnx");
    save_model(&m, &p).unwrap();
    assert!(std::fs::metadata(&p).unwrap().len() > 100 * 1024 * 1024);
    let back = load_model(&p).unwrap();
    let w = back.graph.initializer("w").unwrap().as_f32().unwrap();
    assert_eq!(w.len(), n);
    assert_eq!(w[[999]], 499.5);
    assert_eq!(w[[n - 1]], ((n - 1) % 1000) as f32 * 0.5);
}
