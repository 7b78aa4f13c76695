//! Runs the ONNX node conformance cases (`node/<case>/model.onnx` with
//! `test_data_set_N/{input,output}_K.pb`) on the float interpreter.
//!
//! A case passes when every output has the expected dtype and shape and
//! every element satisfies `|got − want| ≤ atol + rtol·|want|` (rtol 1e-3,
//! atol 1e-7, the ONNX runner's defaults; NaN matches NaN).

use anyhow::{anyhow, Context, Result};
use hb_float::Session;
use hb_onnx_proto as pb;
use hb_tensor::Tensor;
use prost::Message;
use rayon::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Relative tolerance.
pub const RTOL: f64 = 1e-3;
/// Absolute tolerance.
pub const ATOL: f64 = 1e-7;

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// Case folder name, e.g. `test_conv_with_strides_padding`.
    pub name: String,
    /// `Ok` or why it failed.
    pub outcome: std::result::Result<(), String>,
}

/// The conformance cases folder in `../shared` next to the workspace.
pub fn default_cases_dir() -> PathBuf {
    crate::workspace_root().join("../shared/onnx-node-tests/node")
}

/// The checked-in allow-list of cases expected to pass.
pub fn allowlist_path() -> PathBuf {
    crate::workspace_root().join("tests/onnx_node_allowlist.txt")
}

/// Reads the allow-list (one case name per line; `#` comments).
pub fn read_allowlist(path: &Path) -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Case names under `dir` containing `filter`, sorted.
pub fn list_cases(dir: &Path, filter: Option<&str>) -> Result<Vec<String>> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("conformance cases folder {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("model.onnx").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| filter.is_none_or(|f| n.contains(f)))
        .collect();
    v.sort();
    Ok(v)
}

/// Runs the named cases in parallel.
pub fn run_cases(dir: &Path, names: &[String]) -> Vec<CaseResult> {
    names
        .par_iter()
        .map(|n| {
            let case = dir.join(n);
            let outcome = std::panic::catch_unwind(|| run_case(&case))
                .unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                    Err(anyhow!("PANIC: {}", msg.unwrap_or_default()))
                })
                .map_err(|e| format!("{e:#}"));
            CaseResult {
                name: n.clone(),
                outcome,
            }
        })
        .collect()
}

fn read_tensor_pb(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path)?;
    let t =
        pb::TensorProto::decode(bytes.as_slice()).with_context(|| format!("{}", path.display()))?;
    if t.data_type.unwrap_or(0) == 0 {
        return Err(anyhow!(
            "{} is not a plain tensor (sequence/optional/map)",
            path.display()
        ));
    }
    Ok(hb_ir::tensor_from_proto(&t)?)
}

/// Runs one case folder.
pub fn run_case(case: &Path) -> Result<()> {
    let model = hb_ir::load_model(&case.join("model.onnx"))?;
    let session = Session::new(&model)?;
    let mut sets: Vec<PathBuf> = std::fs::read_dir(case)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    sets.sort();
    if sets.is_empty() {
        return Err(anyhow!("no test data"));
    }
    for set in sets {
        let mut inputs = HashMap::new();
        for (k, v) in model.graph.inputs.iter().enumerate() {
            let p = set.join(format!("input_{k}.pb"));
            if p.exists() {
                inputs.insert(v.name.clone(), read_tensor_pb(&p)?);
            }
        }
        let outputs = session.run(&inputs)?;
        for (k, (name, got)) in outputs.iter().enumerate() {
            let p = set.join(format!("output_{k}.pb"));
            if !p.exists() {
                continue;
            }
            let want = read_tensor_pb(&p)?;
            compare(&want, got).map_err(|e| anyhow!("output '{name}': {e}"))?;
        }
    }
    Ok(())
}

/// Compares an expected and an actual tensor with the suite's tolerances.
pub fn compare(want: &Tensor, got: &Tensor) -> std::result::Result<(), String> {
    if want.dtype() != got.dtype() {
        return Err(format!(
            "dtype {} != expected {}",
            got.dtype(),
            want.dtype()
        ));
    }
    if want.shape() != got.shape() {
        return Err(format!(
            "shape {:?} != expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    if let (Tensor::Str(a), Tensor::Str(b)) = (want, got) {
        return if a == b {
            Ok(())
        } else {
            Err("strings differ".into())
        };
    }
    let (w, g) = (
        want.to_f64_vec().map_err(|e| e.to_string())?,
        got.to_f64_vec().map_err(|e| e.to_string())?,
    );
    let exact = !want.dtype().is_float();
    for (i, (a, b)) in w.iter().zip(&g).enumerate() {
        let ok = if exact {
            a == b
        } else if a.is_nan() || b.is_nan() {
            a.is_nan() && b.is_nan()
        } else if a.is_infinite() || b.is_infinite() {
            a == b
        } else {
            (a - b).abs() <= ATOL + RTOL * a.abs()
        };
        if !ok {
            return Err(format!("element {i}: got {b}, expected {a}"));
        }
    }
    Ok(())
}
