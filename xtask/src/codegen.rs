//! Regenerates the committed prost output for `onnx.proto` (hb-onnx-proto)
//! and `program.proto` (hb-bpu, the `.bc` / `.hbm` program format).

use anyhow::{bail, Context, Result};

/// Generates every committed prost file; with `check`, only compares.
pub fn run(check: bool) -> Result<()> {
    gen_one(
        "crates/hb-onnx-proto",
        "onnx.proto",
        "onnx.rs",
        "src/onnx.rs",
        check,
    )?;
    gen_one(
        "crates/hb-bpu",
        "program.proto",
        "hbkit.program.rs",
        "src/program/pb.rs",
        check,
    )
}

/// Compiles `<crate>/proto/<proto>` and writes (or checks) `<crate>/<target>`.
fn gen_one(krate: &str, proto: &str, generated: &str, target: &str, check: bool) -> Result<()> {
    let root = crate::workspace_root();
    let crate_dir = root.join(krate);
    let proto_dir = crate_dir.join("proto");
    let fds = protox::compile([proto_dir.join(proto)], [&proto_dir])
        .with_context(|| format!("compiling {proto} with protox"))?;
    let out = tempdir()?;
    prost_build::Config::new()
        .bytes(["."])
        .out_dir(&out)
        .compile_fds(fds)
        .context("generating Rust with prost-build")?;
    let generated = std::fs::read_to_string(out.join(generated))?;
    let _ = std::fs::remove_dir_all(&out);
    let target = crate_dir.join(target);
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
    /// CI: the committed prost output matches `onnx.proto` and `program.proto`.
    #[test]
    fn committed_generated_files_are_current() {
        super::run(true).expect("generated protobuf code is stale: run `cargo xtask codegen`");
    }
}
