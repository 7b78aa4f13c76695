//! Shared by the hb-debugger integration tests: one calibration of a fixture.

use crate::common::run_ok;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Calibrates fixture `name` of `fixtures` with hb-calib (`max`, 8 samples,
/// 2 search samples) into `root/name`; returns the calibrated model's path.
pub fn calibrate_max(fixtures: &Path, name: &str, root: &Path) -> PathBuf {
    let fx = fixtures.join(name).canonicalize().unwrap();
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("meta.json")).unwrap()).unwrap();
    let inputs: Vec<String> = meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    let work = root.join(name);
    std::fs::create_dir_all(&work).unwrap();
    let dirs: Vec<String> = inputs
        .iter()
        .map(|i| fx.join("calib").join(i).display().to_string())
        .collect();
    let kinds = vec!["featuremap"; inputs.len()].join(";");
    let yaml = format!(
        "model_parameters:\n  onnx_model: {}\n  march: nash-e\n  working_dir: {}\n  output_model_file_prefix: {name}\ninput_parameters:\n  input_name: {}\n  input_type_train: {kinds}\n  input_type_rt: {kinds}\ncalibration_parameters:\n  cal_data_dir: {}\n  calibration_type: max\n",
        fx.join("model.onnx").display(),
        work.display(),
        inputs.join(";"),
        dirs.join(";")
    );
    let cfg = work.join("model.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_hb-calib"))
            .arg("--config")
            .arg(&cfg)
            .args(["--num-samples", "8", "--search-samples", "2", "--json"]),
    );
    work.join(format!("{name}_calibrated_model.onnx"))
}

/// A fixture's calibration folder.
pub fn calib_dir(name: &str) -> PathBuf {
    crate::common::fixtures().join(name).join("calib")
}

/// Runs the hb-debugger binary.
pub fn dbg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hb-debugger"))
        .args(args)
        .output()
        .unwrap()
}
