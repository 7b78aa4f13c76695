//! An attention block with a moderate additive mask (`(1 − m) · −1e4`, the
//! paddle / older transformers convention) through hb-calib and the `.bc`:
//! the mask must not set the scale of the attention scores (every score
//! would quantize to 0), the Softmax stays on the integer machine, and the
//! `.bc` matches the calibrated model.

use crate::common::{calibrate, f32t, model_of, ordered, write_model_and_samples};
use hb_bpu::program::interp::Interpreter;
use hb_bpu::program::pb::Placement;
use hb_float::kernels::horizon::FakeQuant;
use hb_ir::{Attr, Graph, Model, Node, ValueInfo};
use hb_lower::cpu::FloatCpu;
use hb_tensor::{metrics, DType, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

const S: usize = 8;
const D: usize = 16;

fn model() -> Model {
    let mut g = Graph {
        inputs: vec![
            ValueInfo::tensor("x", DType::F32, &[1, S, D]),
            ValueInfo::tensor("m", DType::F32, &[1, S]),
        ],
        outputs: vec![ValueInfo::tensor("out", DType::F32, &[1, S, D])],
        ..Graph::default()
    };
    let inits = [
        ("wq", f32t(&[D, D], 1, 0.5)),
        ("wk", f32t(&[D, D], 2, 0.5)),
        ("wv", f32t(&[D, D], 3, 0.5)),
        ("one", Tensor::scalar(1.0f32)),
        ("neg", Tensor::scalar(-1e4f32)),
        ("quarter", Tensor::scalar(0.25f32)),
        ("ax1", Tensor::from_vec(&[1], vec![1i64]).unwrap()),
    ];
    for (k, t) in inits {
        g.initializers.insert(k.into(), Arc::new(t));
    }
    let mut tr = Node::new("kt", "Transpose", &["k"], &["kt"]);
    tr.set_attr("perm", Attr::Ints(vec![0, 2, 1]));
    let mut sm = Node::new("softmax", "Softmax", &["a"], &["p"]);
    sm.set_attr("axis", Attr::Int(-1));
    g.nodes = vec![
        Node::new("q", "MatMul", &["x", "wq"], &["q"]),
        Node::new("k", "MatMul", &["x", "wk"], &["k"]),
        Node::new("v", "MatMul", &["x", "wv"], &["v"]),
        tr,
        Node::new("scores", "MatMul", &["q", "kt"], &["s"]),
        Node::new("scale", "Mul", &["s", "quarter"], &["ss"]),
        Node::new("inv", "Sub", &["one", "m"], &["m1"]),
        Node::new("big", "Mul", &["m1", "neg"], &["mneg"]),
        Node::new("unsq", "Unsqueeze", &["mneg", "ax1"], &["mask"]),
        Node::new("add", "Add", &["ss", "mask"], &["a"]),
        sm,
        Node::new("ctx", "MatMul", &["p", "v"], &["out"]),
    ];
    model_of(g)
}

/// Sample `k`: random tokens, the last `k % 4` positions padded.
fn sample(k: u64) -> HashMap<String, Tensor> {
    let pad = (k % 4) as usize;
    let m: Vec<f32> = (0..S)
        .map(|i| if i + pad < S { 1.0 } else { 0.0 })
        .collect();
    HashMap::from([
        ("x".to_string(), f32t(&[1, S, D], 100 + k, 1.0)),
        ("m".to_string(), Tensor::from_f32(&[1, S], m).unwrap()),
    ])
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_f64_vec().unwrap().iter().map(|&v| v as f32).collect()
}

#[test]
fn moderate_additive_mask_keeps_the_scores_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_model_and_samples(dir, &model(), 12, sample);
    let work = calibrate(dir, &["x", "m"], "  calibration_type: max\n", 4);
    let calibrated = hb_ir::load_model(&work.join("m_calibrated_model.onnx")).unwrap();
    let g = &calibrated.graph;
    // The Softmax input's calibration: masks kept out, limit lowered.
    let sm = g.nodes.iter().find(|n| n.op_type == "Softmax").unwrap();
    let cal_node = &g.nodes[g.producer(&sm.inputs[0]).unwrap()];
    assert_eq!(cal_node.op_type, "HzCalibration");
    let fq = FakeQuant::from_node(cal_node).unwrap();
    assert!(fq.keep_masks, "{cal_node:?}");
    assert_eq!(fq.mask_limit, 1e3);
    assert!(
        fq.thresholds[0] < 100.0,
        "Softmax input threshold {:?} was set by the mask",
        fq.thresholds
    );
    let log = std::fs::read_to_string(work.join("hb_calib.log")).unwrap();
    assert!(log.contains("only reaches a Softmax"), "{log}");
    // The log shows the .bc's placement: the mask chain in float, and why.
    assert!(
        log.contains("big (Mul): computes attention-mask values"),
        "{log}"
    );
    let row = |name: &str| {
        log.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(row("big").contains("CPU"), "{}", row("big"));
    assert!(row("softmax").contains("BPU"), "{}", row("softmax"));

    // Calibrated vs float, and .bc vs calibrated, on held-out samples.
    let float = hb_float::Session::new(&model()).unwrap();
    let sim = hb_float::Session::new(&calibrated).unwrap();
    let bc = Arc::new(hb_bpu::program::load(&work.join("m_quantized_model.bc")).unwrap());
    assert!(
        bc.ops
            .iter()
            .any(|o| o.op_type == "Softmax" && o.placement == Placement::Bpu as i32),
        "the masked Softmax left the integer machine"
    );
    let cpu = FloatCpu::new(&bc).unwrap();
    let interp = Interpreter::new(bc.clone()).unwrap();
    for k in 50..54 {
        let s = sample(k);
        let f = float.run(&s).unwrap();
        let c = sim.run(&s).unwrap();
        let cos = metrics::cosine(&flat(&f[0].1), &flat(&c[0].1));
        assert!(cos >= 0.995, "sample {k}: calibrated vs float cosine {cos}");
        let out = interp.run(&ordered(&bc, &s), &cpu).unwrap();
        let cos = metrics::cosine(&flat(&c[0].1), &flat(&out[0]));
        assert!(cos >= 0.999, "sample {k}: calibrated vs .bc cosine {cos}");
    }
}
