//! Helpers shared by the tools' integration tests.

use hb_ir::{Graph, Model};
use hb_tensor::Tensor;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Wraps a graph into a model (IR 8, default-domain opset 13).
pub fn model_of(graph: Graph) -> Model {
    let mut m = Model {
        ir_version: 8,
        graph,
        producer_name: "test".into(),
        ..Default::default()
    };
    m.opsets.insert(String::new(), 13);
    m
}

/// Deterministic values in [-scale, scale) (xorshift from `seed`).
pub fn vals(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// An f32 tensor of `shape` filled by [`vals`].
pub fn f32t(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    Tensor::from_f32(shape, vals(shape.iter().product(), seed, scale)).unwrap()
}

/// Saves `model` as `<dir>/model.onnx` and writes calibration samples
/// `sample(0..n)` as `<dir>/calib/<input>/<k>.npy`.
pub fn write_model_and_samples(
    dir: &Path,
    model: &Model,
    n: u64,
    sample: impl Fn(u64) -> HashMap<String, Tensor>,
) {
    hb_ir::save_model(model, &dir.join("model.onnx")).unwrap();
    for k in 0..n {
        for (name, t) in sample(k) {
            let d = dir.join("calib").join(&name);
            std::fs::create_dir_all(&d).unwrap();
            hb_tensor::io::write_npy(&d.join(format!("{k}.npy")), &t).unwrap();
        }
    }
}

/// Runs hb-calib (march nash-e, prefix `m`) on `<dir>/model.onnx` with the
/// calibration folders of [`write_model_and_samples`] for `inputs`;
/// `extra` is appended to `calibration_parameters`. Returns the working
/// directory.
pub fn calibrate(dir: &Path, inputs: &[&str], extra: &str, search_samples: usize) -> PathBuf {
    let cfg = dir.join("model.yaml");
    let cal: Vec<String> = inputs
        .iter()
        .map(|n| dir.join("calib").join(n).display().to_string())
        .collect();
    std::fs::write(
        &cfg,
        format!(
            "model_parameters:\n  onnx_model: {}\n  march: nash-e\n  working_dir: {}\n  output_model_file_prefix: m\ninput_parameters:\n  input_name: {}\ncalibration_parameters:\n  cal_data_dir: {}\n{extra}",
            dir.join("model.onnx").display(),
            dir.join("work").display(),
            inputs.join(";"),
            cal.join(";"),
        ),
    )
    .unwrap();
    hb_tools::calib::run(&hb_tools::calib::CalibArgs {
        config: cfg,
        search_samples,
        ..Default::default()
    })
    .unwrap();
    dir.join("work")
}

/// A program's inputs taken from a sample, in the program's order.
pub fn ordered(p: &hb_bpu::program::Program, s: &HashMap<String, Tensor>) -> Vec<Tensor> {
    p.inputs
        .iter()
        .map(|&i| s[&p.tensors[i as usize].name].clone())
        .collect()
}

/// The repository's fixtures folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Writes a config for `fixture` into `dir` (absolute paths) and returns it.
pub fn fixture_config(dir: &Path, fixture: &str, model: &str, quant_config: &str) -> PathBuf {
    let f = fixtures().join(fixture);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.join("meta.json")).unwrap()).unwrap();
    let names: Vec<String> = meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    let dirs: Vec<String> = names
        .iter()
        .map(|n| f.join("calib").join(n).display().to_string())
        .collect();
    let text = format!(
        "model_parameters:\n  onnx_model: {}\n  march: nash-e\n  working_dir: {}\n  output_model_file_prefix: m\ninput_parameters:\n  input_name: {}\ncalibration_parameters:\n  cal_data_dir: {}\n{}",
        f.join(model).display(),
        dir.join("work").display(),
        names.join(";"),
        dirs.join(";"),
        if quant_config.is_empty() {
            String::new()
        } else {
            format!("  quant_config: {quant_config}\n")
        }
    );
    let path = dir.join("model.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Compiles `bc` at `level` to a `.hbm` and reads it back from its bytes
/// (what hb-compile writes and the runtime loads).
pub fn compile_hbm(
    bc: &hb_bpu::program::Program,
    level: hb_lower::compile::OptLevel,
) -> (
    std::sync::Arc<hb_bpu::program::Program>,
    hb_lower::compile::CompileReport,
) {
    let (hbm, rep) = hb_lower::compile::compile(
        bc,
        &hb_lower::compile::CompileOptions {
            level,
            ..Default::default()
        },
    )
    .unwrap();
    let bytes = hb_bpu::program::encode(&hbm);
    (
        std::sync::Arc::new(hb_bpu::program::decode(&bytes, "m.hbm").unwrap()),
        rep,
    )
}

/// Runs `cmd` and asserts it succeeded, showing its stderr otherwise.
pub fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
