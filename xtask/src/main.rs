//! Project automation: `cargo xtask <task>`.
//!
//! - `codegen [--check]`: regenerate `crates/hb-onnx-proto/src/onnx.rs` from
//!   the vendored `onnx.proto` with protox + prost-build (no protoc binary);
//!   `--check` fails when the committed file differs.
//! - `bench`: float latency of each fixture, side by side with ONNX Runtime
//!   when Python onnxruntime is available; writes `docs/benchmarks.md`.
//! - `onnx-suite [--promote] [--dir D]`: run the ONNX node conformance cases.
//! - `onnx-cases [OUT]`: regenerate the cases from the pinned onnx package.
//! - `qdq-check`: run `--export-qdq` outputs in ONNX Runtime against our
//!   simulation (needs Python onnxruntime).

mod bench;
mod codegen;
mod qdq_check;

use anyhow::{bail, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(task) = args.first() else {
        bail!("usage: cargo xtask <codegen [--check] | bench [--runs N] | onnx-suite [--promote] [--dir D] | onnx-cases [OUT] | qdq-check>");
    };
    let rest = &args[1..];
    match task.as_str() {
        "codegen" => codegen::run(rest.iter().any(|a| a == "--check")),
        "bench" => bench::run(rest),
        "qdq-check" => qdq_check::run(),
        "onnx-cases" => {
            let out = rest
                .first()
                .map(String::as_str)
                .unwrap_or("target/onnx-node-tests");
            let status = std::process::Command::new("python3")
                .arg(workspace_root().join("xtask/gen_onnx_node_cases.py"))
                .arg(out)
                .current_dir(workspace_root())
                .status()?;
            if !status.success() {
                bail!("gen_onnx_node_cases.py failed (pip install onnx==1.23.2 numpy)");
            }
            Ok(())
        }
        "onnx-suite" => {
            let mut cmd = std::process::Command::new(env!("CARGO"));
            cmd.args([
                "run",
                "--release",
                "-p",
                "hb-testkit",
                "--bin",
                "onnx-suite",
                "--",
            ]);
            cmd.args(rest);
            let status = cmd.current_dir(workspace_root()).status()?;
            if !status.success() {
                bail!("onnx-suite failed");
            }
            Ok(())
        }
        other => bail!("unknown task `{other}`"),
    }
}

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}
