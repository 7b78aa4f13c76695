//! The integer pipeline on every fixture: hb-calib writes the `.bc`; the
//! `.bc` (reference interpreter) is compared with the calibrated model's
//! fake-quant simulation (cosine), and hb-compile's `.hbm` at O0/O1/O2 runs
//! on the optimised engine at 1 and 2 threads and must equal the `.bc` bit
//! for bit on every held-out sample. Numbers are printed (`--nocapture`).

use crate::common::{compile_hbm, fixture_config, fixtures, ordered};
use hb_bpu::engine::{Engine, EngineOptions, Workspace};
use hb_bpu::program::interp::Interpreter;
use hb_lower::compile::OptLevel;
use hb_lower::cpu::FloatCpu;
use hb_tools::calib::{run, CalibArgs};
use hb_tools::inputs::read_inputs;
use std::sync::Arc;

fn flat(t: &hb_tensor::Tensor) -> Vec<f32> {
    t.to_f64_vec().unwrap().iter().map(|&v| v as f32).collect()
}

fn argmax(t: &hb_tensor::Tensor) -> usize {
    let v = flat(t);
    (0..v.len())
        .max_by(|&a, &b| v[a].total_cmp(&v[b]))
        .unwrap_or(0)
}

/// Calibrates, checks .bc ≈ calibrated and .hbm == .bc; returns the
/// (min cosine, mean cosine) over samples and outputs.
fn pipeline(fixture: &str, model: &str, qc: &str) -> (f64, f64) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = fixture_config(tmp.path(), fixture, model, qc);
    run(&CalibArgs {
        config: cfg,
        search_samples: 4,
        ..Default::default()
    })
    .unwrap();
    let work = tmp.path().join("work");
    let calibrated = hb_ir::load_model(&work.join("m_calibrated_model.onnx")).unwrap();
    let bc = Arc::new(hb_bpu::program::load(&work.join("m_quantized_model.bc")).unwrap());
    let samples = read_inputs(
        &calibrated.graph,
        fixtures().join(fixture).join("test").to_str().unwrap(),
    )
    .unwrap();
    let session = hb_float::Session::new(&calibrated).unwrap();
    let cpu = FloatCpu::new(&bc).unwrap();
    let interp = Interpreter::new(bc.clone()).unwrap();
    let mut refs = Vec::new();
    let (mut cmin, mut csum, mut cnt) = (1f64, 0f64, 0usize);
    for s in &samples {
        let sim = session.run(s).unwrap();
        let out = interp.run(&ordered(&bc, s), &cpu).unwrap();
        for ((_, a), b) in sim.iter().zip(&out) {
            let c = hb_tensor::metrics::cosine(&flat(a), &flat(b));
            cmin = cmin.min(c);
            csum += c;
            cnt += 1;
        }
        refs.push(out);
    }
    if fixture == "digits_cnn" {
        let labels = hb_tensor::io::read_npy(&fixtures().join("digits_cnn/test/labels.npy"))
            .unwrap()
            .to_i64_vec()
            .unwrap();
        let (mut ok_cal, mut ok_bc) = (0, 0);
        for (k, s) in samples.iter().enumerate() {
            let sim = session.run(s).unwrap();
            ok_cal += usize::from(argmax(&sim[0].1) as i64 == labels[k]);
            ok_bc += usize::from(argmax(&refs[k][0]) as i64 == labels[k]);
        }
        let (a, b) = (
            ok_cal as f64 / labels.len() as f64 * 100.0,
            ok_bc as f64 / labels.len() as f64 * 100.0,
        );
        eprintln!(
            "digits_cnn accuracy: calibrated {a:.2}%, .bc/.hbm {b:.2}% ({} samples)",
            labels.len()
        );
        assert!((a - b).abs() <= 0.2 + 1e-9, "accuracy {a} vs {b}");
    }
    let bpu = bc.ops.iter().filter(|o| o.placement == 1).count();
    if fixture == "seg_head" {
        // Its Slices and Split copy rows: their index maps are stored as
        // runs, which the fast engine below copies run by run.
        let take_runs = bc
            .ops
            .iter()
            .filter(|o| {
                matches!(
                    o.kind,
                    Some(hb_bpu::program::pb::op::Kind::Take(t)) if t.runs
                )
            })
            .count();
        assert!(
            take_runs >= 2,
            "{fixture}: {take_runs} Take ops in runs form"
        );
    }
    // int16 calibrations are symmetric, so the program runs on the BPU (an
    // asymmetric int16 choice of the default search used to send every op
    // to the CPU).
    assert!(bpu > 0, "{fixture}: no op on the BPU");
    let mut runs = 0;
    let mut ops_after = Vec::new();
    for level in [OptLevel::O0, OptLevel::O1, OptLevel::O2] {
        let (hbm, rep) = compile_hbm(&bc, level);
        ops_after.push(rep.ops_after);
        let cpu = FloatCpu::new(&hbm).unwrap();
        let engine = Engine::new(hbm.clone(), EngineOptions::default()).unwrap();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut ws = Workspace::new();
                for (k, s) in samples.iter().enumerate() {
                    let out = engine.run(&ordered(&hbm, s), &cpu, &mut ws).unwrap();
                    assert_eq!(out, refs[k], "{fixture} {qc}: .hbm {level:?} at {threads} thread(s) differs from .bc on sample {k}");
                    runs += 1;
                }
            });
        }
        eprintln!(
            "{fixture} [{}] {level:?}: ops {} -> {}, packed {}, subgraphs {}",
            if qc.is_empty() { "int8" } else { "int16" },
            rep.ops_before,
            rep.ops_after,
            rep.packed,
            rep.subgraphs.len()
        );
    }
    assert!(
        ops_after[2] <= ops_after[1] && ops_after[1] <= ops_after[0],
        "{fixture}: fusion added ops {ops_after:?}"
    );
    if fixture == "sem_decoder" {
        // O2 also folds the Clip after Softmax, LUTs and element-wise ops.
        assert!(ops_after[2] < ops_after[1], "{fixture}: {ops_after:?}");
    }
    eprintln!(
        "{fixture} [{}]: {} ops ({bpu} BPU); cosine calibrated vs .bc: min {cmin:.6}, mean {:.6} over {cnt}; .hbm == .bc on {runs} runs",
        if qc.is_empty() { "int8" } else { "int16" },
        bc.ops.len(),
        csum / cnt as f64
    );
    (cmin, csum / cnt as f64)
}

const INT16: &str = r#"{"model_config": {"all_node_type": "int16"}}"#;

#[test]
fn digits_cnn_int8() {
    let (min, _) = pipeline("digits_cnn", "model.onnx", "");
    assert!(min > 0.999, "{min}");
}

#[test]
fn digits_cnn_int16() {
    let (min, _) = pipeline("digits_cnn", "model.onnx", INT16);
    assert!(min > 0.999, "{min}");
}

#[test]
fn resnet_tiny_int8() {
    let (min, _) = pipeline("resnet_tiny", "model.onnx", "");
    assert!(min > 0.999, "{min}");
}

#[test]
fn resnet_tiny_int16() {
    let (min, _) = pipeline("resnet_tiny", "model.onnx", INT16);
    assert!(min > 0.999, "{min}");
}

#[test]
fn seg_head_int8() {
    let (min, _) = pipeline("seg_head", "model.onnx", "");
    assert!(min > 0.999, "{min}");
}

#[test]
fn seg_head_int16() {
    let (min, _) = pipeline("seg_head", "model.onnx", INT16);
    assert!(min > 0.999, "{min}");
}

#[test]
fn sem_decoder_int8() {
    let (min, _) = pipeline("sem_decoder", "model.onnx", "");
    assert!(min > 0.99, "{min}");
}

#[test]
fn sem_decoder_int16() {
    let (min, _) = pipeline("sem_decoder", "model.onnx", INT16);
    assert!(min > 0.999, "{min}");
}

#[test]
fn torch_opsets_int8() {
    let (min, _) = pipeline("torch_opsets", "model_op17.onnx", "");
    assert!(min > 0.999, "{min}");
}

#[test]
fn torch_opsets_int16() {
    let (min, _) = pipeline("torch_opsets", "model_op17.onnx", INT16);
    assert!(min > 0.999, "{min}");
}
