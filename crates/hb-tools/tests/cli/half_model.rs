//! A float16 model (half weights, half input and output, as
//! `onnxconverter_common.float16` writes them) calibrated from float32
//! samples: it is calibrated and quantized from float32, so its MatMuls run
//! on the integer machine instead of the whole model staying on the CPU.

use crate::common::{calibrate, f32t, model_of, ordered, write_model_and_samples};
use hb_bpu::program::interp::Interpreter;
use hb_bpu::program::pb::Placement;
use hb_ir::{Graph, Model, Node, ValueInfo};
use hb_lower::cpu::FloatCpu;
use hb_tensor::{metrics, DType, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

fn half(t: Tensor) -> Tensor {
    t.cast(DType::F16).unwrap()
}

fn model() -> Model {
    let mut g = Graph {
        inputs: vec![ValueInfo::tensor("x", DType::F16, &[2, 16])],
        outputs: vec![ValueInfo::tensor("y", DType::F16, &[2, 8])],
        ..Graph::default()
    };
    g.initializers
        .insert("w1".into(), Arc::new(half(f32t(&[16, 32], 1, 0.4))));
    g.initializers
        .insert("w2".into(), Arc::new(half(f32t(&[32, 8], 2, 0.4))));
    g.nodes = vec![
        Node::new("mm1", "MatMul", &["x", "w1"], &["h"]),
        Node::new("relu", "Relu", &["h"], &["r"]),
        Node::new("mm2", "MatMul", &["r", "w2"], &["y"]),
    ];
    model_of(g)
}

/// float32 samples: the tools convert them to the float16 input.
fn sample(k: u64) -> HashMap<String, Tensor> {
    HashMap::from([("x".to_string(), f32t(&[2, 16], 30 + k, 1.0))])
}

#[test]
fn half_model_is_quantized_from_float32() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_model_and_samples(dir, &model(), 8, sample);
    let work = calibrate(dir, &["x"], "", 3);
    let bc = Arc::new(hb_bpu::program::load(&work.join("m_quantized_model.bc")).unwrap());
    let on_bpu = |op: &str| {
        bc.ops
            .iter()
            .any(|o| o.op_type == op && o.placement == Placement::Bpu as i32)
    };
    assert!(on_bpu("MatMul"), "the MatMuls stayed on the CPU");
    let float = hb_float::Session::new(&model()).unwrap();
    let calibrated = hb_ir::load_model(&work.join("m_calibrated_model.onnx")).unwrap();
    let sim = hb_float::Session::new(&calibrated).unwrap();
    let cpu = FloatCpu::new(&bc).unwrap();
    let interp = Interpreter::new(bc.clone()).unwrap();
    let flat =
        |t: &Tensor| -> Vec<f32> { t.to_f64_vec().unwrap().iter().map(|&v| v as f32).collect() };
    for k in 50..53 {
        let s: HashMap<String, Tensor> = sample(k).into_iter().map(|(n, t)| (n, half(t))).collect();
        let f = float.run(&s).unwrap();
        let c = sim.run(&s).unwrap();
        assert_eq!(c[0].1.dtype(), DType::F16, "the output keeps its type");
        let cos = metrics::cosine(&flat(&f[0].1), &flat(&c[0].1));
        assert!(cos >= 0.999, "sample {k}: calibrated vs float cosine {cos}");
        let out = interp.run(&ordered(&bc, &s), &cpu).unwrap();
        let cos = metrics::cosine(&flat(&c[0].1), &flat(&out[0]));
        assert!(cos >= 0.9999, "sample {k}: calibrated vs .bc cosine {cos}");
    }
}
