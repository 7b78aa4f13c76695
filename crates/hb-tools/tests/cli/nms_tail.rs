//! A detector tail with NonMaxSuppression through hb-calib, the `.bc` and
//! the `.hbm`: the number of selected boxes depends on the data, so the NMS
//! output (int64, on the CPU) takes a different shape on every sample while
//! the program declares the one seen when it was lowered.

use crate::common::{calibrate, compile_hbm, f32t, ordered, write_model_and_samples};
use hb_bpu::engine::{Engine, EngineOptions, Workspace};
use hb_bpu::program::interp::Interpreter;
use hb_ir::{Graph, Model, Node, ValueInfo};
use hb_lower::compile::OptLevel;
use hb_lower::cpu::FloatCpu;
use hb_tensor::{DType, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

const N: usize = 24;

fn model() -> Model {
    let mut g = Graph {
        inputs: vec![
            ValueInfo::tensor("boxes", DType::F32, &[1, N, 4]),
            ValueInfo::tensor("logits", DType::F32, &[1, 2, N]),
        ],
        outputs: vec![
            ValueInfo::tensor("selected", DType::I64, &[0, 3]),
            ValueInfo::tensor("scores", DType::F32, &[1, 2, N]),
        ],
        ..Graph::default()
    };
    let inits = [
        ("max_out", Tensor::from_vec(&[1], vec![20i64]).unwrap()),
        ("iou", Tensor::from_f32(&[1], vec![0.3]).unwrap()),
        ("score_th", Tensor::from_f32(&[1], vec![0.6]).unwrap()),
    ];
    for (k, t) in inits {
        g.initializers.insert(k.into(), Arc::new(t));
    }
    g.nodes = vec![
        Node::new("relu", "Relu", &["boxes"], &["b"]),
        Node::new("sig", "Sigmoid", &["logits"], &["scores"]),
        Node::new(
            "nms",
            "NonMaxSuppression",
            &["b", "scores", "max_out", "iou", "score_th"],
            &["selected"],
        ),
    ];
    let mut m = Model {
        ir_version: 8,
        graph: g,
        ..Model::default()
    };
    m.opsets.insert(String::new(), 11);
    m
}

fn sample(k: u64) -> HashMap<String, Tensor> {
    HashMap::from([
        ("boxes".to_string(), f32t(&[1, N, 4], 10 + k, 8.0)),
        ("logits".to_string(), f32t(&[1, 2, N], 90 + k, 3.0)),
    ])
}

#[test]
fn nms_output_shape_follows_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_model_and_samples(dir, &model(), 6, sample);
    let work = calibrate(dir, &["boxes", "logits"], "", 3);
    let calibrated = hb_ir::load_model(&work.join("m_calibrated_model.onnx")).unwrap();
    let sim = hb_float::Session::new(&calibrated).unwrap();
    let bc = Arc::new(hb_bpu::program::load(&work.join("m_quantized_model.bc")).unwrap());
    let (hbm, _) = compile_hbm(&bc, OptLevel::default());
    let cpu = FloatCpu::new(&bc).unwrap();
    let hcpu = FloatCpu::new(&hbm).unwrap();
    let interp = Interpreter::new(bc.clone()).unwrap();
    let engine = Engine::new(hbm.clone(), EngineOptions::default()).unwrap();
    let mut ws = Workspace::new();
    let mut counts = Vec::new();
    for k in 50..54 {
        let s = sample(k);
        let want = sim.run(&s).unwrap();
        let got = interp.run(&ordered(&bc, &s), &cpu).unwrap();
        let fast = engine.run(&ordered(&hbm, &s), &hcpu, &mut ws).unwrap();
        // The selected boxes agree with the calibrated model; the .hbm
        // equals the .bc.
        assert_eq!(got[0], want[0].1, "sample {k}: .bc vs calibrated");
        assert_eq!(fast, got, "sample {k}: .hbm vs .bc");
        counts.push(got[0].shape()[0]);
    }
    counts.dedup();
    assert!(
        counts.len() > 1,
        "the samples should select different numbers of boxes: {counts:?}"
    );
}
