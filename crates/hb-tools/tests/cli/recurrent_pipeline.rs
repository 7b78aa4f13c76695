//! Recurrent layers through the whole flow: a streaming-style model
//! (`x`, an int32 `sequence_lens` input and an initial state `h0` →
//! Relu → GRU naming only `Y_h` → Tanh → LSTM naming only `Y_h` → Gemm)
//! goes through hb-calib, the `.bc` and hb-compile's `.hbm`. The recurrent
//! ops are float islands: on the CPU, with no calibration node on their
//! inputs; `.hbm` equals `.bc` bit for bit and `.bc` matches the calibrated
//! model.

use crate::common::{calibrate, compile_hbm, f32t, ordered, write_model_and_samples};
use hb_bpu::engine::{Engine, EngineOptions, Workspace};
use hb_bpu::program::interp::Interpreter;
use hb_bpu::program::pb::Placement;
use hb_ir::{Attr, Graph, Model, Node, ValueInfo};
use hb_lower::compile::OptLevel;
use hb_lower::cpu::FloatCpu;
use hb_tensor::{DType, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

const H: usize = 6;
const I: usize = 4;
const T: usize = 5;

fn model() -> Model {
    let mut g = Graph {
        inputs: vec![
            ValueInfo::tensor("x", DType::F32, &[T, 1, I]),
            ValueInfo::tensor("lens", DType::I32, &[1]),
            ValueInfo::tensor("h0", DType::F32, &[1, 1, H]),
        ],
        outputs: vec![
            ValueInfo::tensor("out", DType::F32, &[1, 3]),
            ValueInfo::tensor("hT", DType::F32, &[1, 1, H]),
        ],
        ..Graph::default()
    };
    let inits = [
        ("W", f32t(&[1, 3 * H, I], 1, 0.5)),
        ("R", f32t(&[1, 3 * H, H], 2, 0.5)),
        ("B", f32t(&[1, 6 * H], 3, 0.3)),
        ("Wl", f32t(&[1, 4 * H, H], 4, 0.5)),
        ("Rl", f32t(&[1, 4 * H, H], 5, 0.5)),
        ("fcw", f32t(&[H, 3], 6, 0.5)),
        ("fcb", f32t(&[3], 7, 0.1)),
        (
            "shape",
            Tensor::from_vec(&[2], vec![1i64, H as i64]).unwrap(),
        ),
    ];
    for (k, t) in inits {
        g.initializers.insert(k.into(), Arc::new(t));
    }
    let mut gru = Node::new(
        "gru",
        "GRU",
        &["xr", "W", "R", "B", "lens", "h0"],
        &["", "hT"],
    );
    gru.set_attr("hidden_size", Attr::Int(H as i64));
    gru.set_attr("linear_before_reset", Attr::Int(1));
    let mut lstm = Node::new("lstm", "LSTM", &["ht", "Wl", "Rl"], &["", "lh"]);
    lstm.set_attr("hidden_size", Attr::Int(H as i64));
    g.nodes = vec![
        Node::new("relu", "Relu", &["x"], &["xr"]),
        gru,
        Node::new("tanh", "Tanh", &["hT"], &["ht"]),
        lstm,
        Node::new("reshape", "Reshape", &["lh", "shape"], &["f"]),
        Node::new("fc", "Gemm", &["f", "fcw", "fcb"], &["out"]),
    ];
    let mut m = Model {
        ir_version: 8,
        graph: g,
        ..Model::default()
    };
    m.opsets.insert(String::new(), 17);
    m
}

fn sample(k: u64) -> HashMap<String, Tensor> {
    HashMap::from([
        ("x".to_string(), f32t(&[T, 1, I], 100 + k, 1.0)),
        (
            "lens".to_string(),
            Tensor::from_vec(&[1], vec![2 + (k % 4) as i32]).unwrap(),
        ),
        ("h0".to_string(), f32t(&[1, 1, H], 200 + k, 0.5)),
    ])
}

#[test]
fn recurrent_float_islands_through_calib_and_compile() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_model_and_samples(dir, &model(), 8, sample);
    let work = calibrate(dir, &["x", "lens", "h0"], "", 4);
    let calibrated = hb_ir::load_model(&work.join("m_calibrated_model.onnx")).unwrap();
    // No calibration node reads into the recurrent ops.
    for n in &calibrated.graph.nodes {
        if n.op_type == "GRU" || n.op_type == "LSTM" {
            for i in n.inputs.iter().filter(|i| !i.is_empty()) {
                let p = calibrated.graph.producer(i);
                assert!(
                    p.is_none_or(|p| calibrated.graph.nodes[p].op_type != "HzCalibration"),
                    "{} input {i} is calibrated",
                    n.name
                );
            }
        }
    }
    let bc = Arc::new(hb_bpu::program::load(&work.join("m_quantized_model.bc")).unwrap());
    for op in &bc.ops {
        if op.op_type == "GRU" || op.op_type == "LSTM" {
            assert_eq!(
                op.placement,
                Placement::Cpu as i32,
                "{} not on the CPU",
                op.name
            );
            assert_eq!(
                op.outputs.len(),
                2,
                "{}: the omitted Y keeps its slot",
                op.name
            );
        }
    }
    assert!(bc
        .ops
        .iter()
        .any(|o| o.op_type == "Gemm" && o.placement == Placement::Bpu as i32));
    let session = hb_float::Session::new(&calibrated).unwrap();
    let cpu = FloatCpu::new(&bc).unwrap();
    let interp = Interpreter::new(bc.clone()).unwrap();
    let flat =
        |t: &Tensor| -> Vec<f32> { t.to_f64_vec().unwrap().iter().map(|&v| v as f32).collect() };
    let samples: Vec<_> = (50..53).map(sample).collect();
    let mut refs = Vec::new();
    for s in &samples {
        let sim = session.run(s).unwrap();
        let out = interp.run(&ordered(&bc, s), &cpu).unwrap();
        for ((name, a), b) in sim.iter().zip(&out) {
            let c = hb_tensor::metrics::cosine(&flat(a), &flat(b));
            assert!(c >= 0.9999, "{name}: calibrated vs .bc cosine {c}");
        }
        // The GRU state leaves the model untouched by quantization.
        assert_eq!(sim[1].1, out[1]);
        refs.push(out);
    }
    for level in [OptLevel::O0, OptLevel::O1, OptLevel::O2] {
        let (hbm, _) = compile_hbm(&bc, level);
        let cpu = FloatCpu::new(&hbm).unwrap();
        let engine = Engine::new(hbm.clone(), EngineOptions::default()).unwrap();
        let mut ws = Workspace::new();
        for (k, s) in samples.iter().enumerate() {
            let out = engine.run(&ordered(&hbm, s), &cpu, &mut ws).unwrap();
            assert_eq!(
                out, refs[k],
                ".hbm {level:?} differs from .bc on sample {k}"
            );
        }
    }
}
