//! `cargo xtask qdq-check`: the ONNX Runtime cross-check of `--export-qdq`.
//!
//! Runs the ignored test `hb-quant qdq::tests::dump_ort_case` (it writes
//! calibrated models, their QDQ exports, inputs and our simulation's
//! outputs), then `xtask/ort_qdq_check.py` on each case, and fails when any
//! output's mean cosine between ONNX Runtime and our simulation is below
//! the goal. Needs Python with onnx, onnxruntime and numpy; `cargo test`
//! itself never does.

use crate::workspace_root;
use anyhow::{bail, Context, Result};
use std::process::Command;

/// The goal of issue 3: the export runs in onnxruntime and matches the
/// fake-quant simulation.
const MIN_COSINE: f64 = 0.9999;

/// Runs the cross-check; `Err` names what failed.
pub fn run() -> Result<()> {
    let root = workspace_root();
    let has_ort = Command::new("python3")
        .args(["-c", "import onnx, onnxruntime, numpy"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_ort {
        bail!(
            "qdq-check needs python3 with onnx, onnxruntime and numpy \
             (pip install onnx==1.23.2 onnxruntime==1.31.1 numpy)"
        );
    }
    let dir = root.join("target/qdq-check");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let status = Command::new(env!("CARGO"))
        .args([
            "test",
            "-p",
            "hb-quant",
            "--lib",
            "qdq::tests::dump_ort_case",
            "--",
            "--ignored",
            "--exact",
        ])
        .env("HB_QDQ_DUMP", &dir)
        .current_dir(&root)
        .status()?;
    if !status.success() || !dir.join("qdq.onnx").exists() {
        bail!("dump_ort_case did not write the cases to {}", dir.display());
    }
    let mut failed = Vec::new();
    for case in [dir.clone(), dir.join("op11")] {
        let out = Command::new("python3")
            .arg(root.join("xtask/ort_qdq_check.py"))
            .args([
                case.join("calibrated.onnx"),
                case.join("qdq.onnx"),
                case.join("inputs"),
                case.join("sim"),
            ])
            .current_dir(&root)
            .output()?;
        if !out.status.success() {
            bail!(
                "ort_qdq_check.py failed on {}: {}",
                case.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("ort_qdq_check.py printed no JSON")?;
        let samples = report["samples"].as_u64().unwrap_or(0);
        let outputs = report["outputs"]
            .as_object()
            .context("ort_qdq_check.py: no outputs")?;
        for (name, o) in outputs {
            let cos = o["cosine"].as_f64().unwrap_or(f64::NAN);
            let max_abs = o["max_abs_diff"].as_f64().unwrap_or(f64::NAN);
            let exact = o["bit_exact_samples"].as_u64().unwrap_or(0);
            let ok = cos >= MIN_COSINE;
            println!(
                "{:<40} {name:<12} cosine {cos:.12}  max |diff| {max_abs:.3e}  bit-exact {exact}/{samples}  {}",
                case.strip_prefix(&root).unwrap_or(&case).display(),
                if ok { "PASS" } else { "FAIL" }
            );
            if !ok {
                failed.push(format!("{} {name}", case.display()));
            }
        }
    }
    if !failed.is_empty() {
        bail!("QDQ export differs from the simulation (cosine < {MIN_COSINE}): {failed:?}");
    }
    println!("qdq-check: ONNX Runtime runs every QDQ export and matches the simulation (cosine ≥ {MIN_COSINE})");
    Ok(())
}
