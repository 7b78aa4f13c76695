//! `hb-compile`: `.bc` → `.hbm` (see `hb_lower::compile`).

use crate::cli::{ToolError, ToolResult};
use crate::prog::load_program;
use hb_lower::compile::{compile, CompileOptions, CompileReport, OptLevel};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What `hb-compile --json` prints.
#[derive(Debug, Serialize)]
pub struct CompileSummary {
    /// The `.bc`.
    pub input: String,
    /// The `.hbm` written.
    pub output: String,
    /// Optimisation level.
    pub optimize_level: String,
    /// Ops in the `.bc`.
    pub ops_before: usize,
    /// Ops in the `.hbm`.
    pub ops_after: usize,
    /// Fused ops: `[op, [merged…]]`.
    pub fusions: Vec<(String, Vec<String>)>,
    /// Removed boundary nodes.
    pub removed_nodes: Vec<String>,
    /// Subgraphs `[placement, ops]`.
    pub subgraphs: Vec<(String, usize)>,
    /// Weighted ops with packed weights.
    pub packed_ops: usize,
    /// Activation bytes with buffer reuse.
    pub activation_bytes: u64,
    /// Activation bytes without reuse.
    pub activation_bytes_unplanned: u64,
    /// Constant bytes.
    pub constant_bytes: u64,
}

/// Compiles `input` to `output` atomically.
pub fn run(
    input: &Path,
    output: &Path,
    level: &str,
    remove: &[String],
) -> ToolResult<CompileSummary> {
    let level = OptLevel::parse(level)
        .ok_or_else(|| ToolError::input(format!("--optimize-level '{level}': use O0, O1 or O2")))?;
    let bc = load_program(input)?;
    let remove_node_type: Vec<String> = if remove.is_empty() {
        bc.conversion
            .as_ref()
            .and_then(|c| c.params.iter().find(|kv| kv.key == "remove_node_type"))
            .map(|kv| {
                kv.value
                    .split(';')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    } else {
        remove.to_vec()
    };
    let opts = CompileOptions {
        level,
        remove_node_type,
        source: input
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let (hbm, rep): (_, CompileReport) =
        compile(&bc, &opts).map_err(|e| ToolError::input(format!("{}: {e}", input.display())))?;
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| ToolError::input(format!("{}: {e}", parent.display())))?;
    }
    hb_bpu::program::save(&hbm, output).map_err(ToolError::input)?;
    Ok(CompileSummary {
        input: input.display().to_string(),
        output: output.display().to_string(),
        optimize_level: level.name().into(),
        ops_before: rep.ops_before,
        ops_after: rep.ops_after,
        fusions: rep.fusions,
        removed_nodes: rep.removed,
        subgraphs: rep.subgraphs,
        packed_ops: rep.packed,
        activation_bytes: rep.memory.0,
        activation_bytes_unplanned: rep.memory.1,
        constant_bytes: rep.memory.2,
    })
}

/// The default output path: `<input stem>.hbm` next to the input.
pub fn default_output(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().replace("_quantized_model", ""))
        .unwrap_or_else(|| "model".into());
    input.with_file_name(format!("{stem}.hbm"))
}

/// Text rendering.
pub fn render(s: &CompileSummary) -> String {
    let mut t = format!(
        "compiled {} -> {} ({})\n  ops: {} -> {}\n",
        s.input, s.output, s.optimize_level, s.ops_before, s.ops_after
    );
    for (op, merged) in &s.fusions {
        t += &format!("  fused: {op} <- {}\n", merged.join(", "));
    }
    if !s.removed_nodes.is_empty() {
        t += &format!("  removed boundary nodes: {}\n", s.removed_nodes.join(", "));
    }
    let bpu = s.subgraphs.iter().filter(|(p, _)| p == "BPU").count();
    t += &format!(
        "  subgraphs: {} ({} BPU, {} CPU): {}\n",
        s.subgraphs.len(),
        bpu,
        s.subgraphs.len() - bpu,
        s.subgraphs
            .iter()
            .map(|(p, n)| format!("{p}[{n}]"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    t += &format!(
        "  packed weighted ops: {}\n  memory: activations {} B with reuse ({} B without), constants {} B\n",
        s.packed_ops, s.activation_bytes, s.activation_bytes_unplanned, s.constant_bytes
    );
    t
}
