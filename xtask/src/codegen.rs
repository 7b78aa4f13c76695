//! Regenerates the committed prost output for `onnx.proto`.

use anyhow::{bail, Context, Result};

/// Generates `crates/hb-onnx-proto/src/onnx.rs`; with `check`, only compares.
pub fn run(check: bool) -> Result<()> {
    let root = crate::workspace_root();
    let crate_dir = root.join("crates/hb-onnx-proto");
    let proto_dir = crate_dir.join("proto");
    let fds = protox::compile([proto_dir.join("onnx.proto")], [&proto_dir])
        .context("compiling onnx.proto with protox")?;
    let out = tempdir()?;
    prost_build::Config::new()
        .bytes(["."])
        .out_dir(&out)
        .compile_fds(fds)
        .context("generating Rust with prost-build")?;
    let generated = std::fs::read_to_string(out.join("onnx.rs"))?;
    let _ = std::fs::remove_dir_all(&out);
    let target = crate_dir.join("src/onnx.rs");
    if check {
        let current = std::fs::read_to_string(&target).unwrap_or_default();
        if current != generated {
            bail!("{} is stale: run `cargo xtask codegen`", target.display());
        }
        println!("codegen: {} is current", target.display());
    } else {
        std::fs::write(&target, generated)?;
        println!("codegen: wrote {}", target.display());
    }
    Ok(())
}

fn tempdir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("hbkit-codegen-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    /// CI: the committed prost output matches `onnx.proto`.
    #[test]
    fn committed_onnx_rs_is_current() {
        super::run(true)
            .expect("crates/hb-onnx-proto/src/onnx.rs is stale: run `cargo xtask codegen`");
    }
}
