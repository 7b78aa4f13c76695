//! `hb-model-exec perf` with two threads, on a float `.onnx` and on the
//! `.hbm` compiled from it: the timed loop keeps the pool's second thread
//! busy-waiting for work (`exec::with_busy_helpers`); it must finish, report
//! every frame and write the per-node profile.

use crate::common::{fixture_config, fixtures, run_ok};
use std::path::{Path, PathBuf};
use std::process::Command;

fn exe(name: &str) -> PathBuf {
    match name {
        "hb-calib" => PathBuf::from(env!("CARGO_BIN_EXE_hb-calib")),
        "hb-compile" => PathBuf::from(env!("CARGO_BIN_EXE_hb-compile")),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_hb-model-exec")),
    }
}

/// Runs `perf` on `model` with 2 threads and checks the report and profile.
fn perf_two_threads(model: &Path, inputs: &Path, dir: &Path) {
    let csv = dir.join("profile.csv");
    let out = run_ok(
        Command::new(exe("hb-model-exec"))
            .args(["perf", "--thread-num", "2", "--frame-count", "25", "--json"])
            .arg("--model-file")
            .arg(model)
            .arg("--input-file")
            .arg(inputs)
            .arg("--profile-path")
            .arg(&csv),
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["threads"], 2, "{r}");
    assert_eq!(r["frame_count"], 25, "{r}");
    assert!(r["average_ms"].as_f64().unwrap() > 0.0, "{r}");
    let rows = std::fs::read_to_string(&csv).unwrap();
    assert!(rows.lines().count() > 5, "{rows}");
}

#[test]
fn perf_with_two_threads_on_onnx_and_hbm() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixtures().join("resnet_tiny");
    perf_two_threads(&f.join("model.onnx"), &f.join("test"), dir.path());
    let cfg = fixture_config(dir.path(), "resnet_tiny", "model.onnx", "");
    run_ok(Command::new(exe("hb-calib")).arg("-c").arg(&cfg));
    let bc = dir.path().join("work").join("m_quantized_model.bc");
    let hbm = dir.path().join("m.hbm");
    run_ok(Command::new(exe("hb-compile")).arg(&bc).arg("-o").arg(&hbm));
    perf_two_threads(&hbm, &f.join("test"), dir.path());
}
