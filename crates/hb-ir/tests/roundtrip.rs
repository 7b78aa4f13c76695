//! Load → save → load keeps a model; large initializers and external data load.

use hb_ir::{load_model, save_model, Graph, Model, Node, ValueInfo};
use hb_tensor::{DType, Tensor};
use std::path::PathBuf;
use std::sync::Arc;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// `g` as an IR-8 model of the default domain at opset 13.
fn opset13_model(g: Graph) -> Model {
    let mut m = Model {
        ir_version: 8,
        graph: g,
        ..Default::default()
    };
    m.opsets.insert(String::new(), 13);
    m
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
    let m = opset13_model(g);
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

/// `save_model` streams the encoding into the file and shares initializer
/// data instead of copying it: the file must hold exactly the bytes of the
/// copying encoder, for every dtype and for a non-contiguous tensor (which
/// takes the copying path), and load back equal.
#[test]
fn streamed_save_matches_the_copying_encoder_for_every_dtype() {
    use half::{bf16, f16};
    use prost::Message;
    let mut g = Graph::default();
    let n = 70_000; // tensor data larger than the sink's 64 KiB buffer
    let mut init = |name: &str, t: Tensor| {
        g.initializers.insert(name.into(), Arc::new(t));
    };
    init(
        "f32",
        Tensor::from_vec(&[n], (0..n).map(|i| i as f32 * 0.25 - 7.0).collect()).unwrap(),
    );
    init(
        "f64",
        Tensor::from_vec(&[3], vec![1.5f64, -2.0, 1e300]).unwrap(),
    );
    init(
        "f16",
        Tensor::from_vec(&[2], vec![f16::from_f32(0.5), f16::from_f32(-3.0)]).unwrap(),
    );
    init(
        "bf16",
        Tensor::from_vec(&[2], vec![bf16::from_f32(1.0), bf16::from_f32(-0.125)]).unwrap(),
    );
    init("i8", Tensor::from_vec(&[3], vec![-128i8, 0, 127]).unwrap());
    init("i16", Tensor::from_vec(&[2], vec![-300i16, 301]).unwrap());
    init("i32", Tensor::from_vec(&[2], vec![-70_000i32, 5]).unwrap());
    init("i64", Tensor::from_vec(&[2], vec![i64::MIN, 42]).unwrap());
    init("u8", Tensor::from_vec(&[2], vec![0u8, 255]).unwrap());
    init("u16", Tensor::from_vec(&[1], vec![65_535u16]).unwrap());
    init(
        "u32",
        Tensor::from_vec(&[1], vec![4_000_000_000u32]).unwrap(),
    );
    init("u64", Tensor::from_vec(&[1], vec![u64::MAX]).unwrap());
    init(
        "bool",
        Tensor::from_vec(&[3], vec![true, false, true]).unwrap(),
    );
    init("empty", Tensor::from_vec(&[0], Vec::<f32>::new()).unwrap());
    let square = ndarray::Array::from_shape_vec((3, 4), (0..12).map(|i| i as f32).collect())
        .unwrap()
        .reversed_axes()
        .into_dyn();
    assert!(
        square.as_slice().is_none(),
        "the test needs a non-contiguous tensor"
    );
    init("transposed", Tensor::F32(square));
    g.nodes.push(Node::new("id", "Identity", &["f32"], &["y"]));
    g.outputs.push(ValueInfo::tensor("y", DType::F32, &[n]));
    let m = opset13_model(g);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("all.onnx");
    save_model(&m, &p).unwrap();
    let mut copied = hb_ir::export::model_to_proto(&m);
    let graph = copied.graph.as_mut().unwrap();
    graph.initializer = m
        .graph
        .initializers
        .iter()
        .map(|(name, t)| hb_ir::export::tensor_to_proto(name, t))
        .collect();
    assert_eq!(std::fs::read(&p).unwrap(), copied.encode_to_vec());
    let back = load_model(&p).unwrap();
    assert_eq!(back.graph.initializers, m.graph.initializers);
}
