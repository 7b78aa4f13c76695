//! Model inputs from the command line.
//!
//! Accepted forms (`--input-file`):
//! - `a.npy,b.npy`: one file per model input, in the model's input order;
//! - `name:a.npy,other:b.npy`: files by input name, any order;
//! - a folder holding one sub-folder per input (`<dir>/<input>/<k>.npy`):
//!   every sample k is one run; a folder of `.npy` files for a one-input model.
//!
//! `.bin`/`.raw` files are raw little-endian data of the input's declared type and shape.

use crate::cli::{ToolError, ToolResult};
use crate::names::file_safe;
use hb_ir::{Graph, ValueInfo};
use hb_tensor::{io, DType, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One run's inputs by name, and the files they came from (for messages).
pub type Sample = HashMap<String, Tensor>;

/// Reads the inputs named by `spec` for `graph`; one map per sample.
pub fn read_inputs(graph: &Graph, spec: &str) -> ToolResult<Vec<Sample>> {
    let as_path = Path::new(spec);
    if as_path.is_dir() {
        return read_folder(graph, as_path);
    }
    let mut files: Vec<(Option<String>, PathBuf)> = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once(':') {
            Some((name, path)) if graph.inputs.iter().any(|v| v.name == name) => {
                files.push((Some(name.to_string()), PathBuf::from(path)))
            }
            _ => files.push((None, PathBuf::from(item))),
        }
    }
    let named = files.iter().filter(|(n, _)| n.is_some()).count();
    if named != 0 && named != files.len() {
        return Err(ToolError::input(format!(
            "--input-file '{spec}': give either all inputs as name:path or none"
        )));
    }
    if files.len() != graph.inputs.len() {
        let names: Vec<&str> = graph.inputs.iter().map(|v| v.name.as_str()).collect();
        return Err(ToolError::input(format!(
            "--input-file gives {} file(s) but the model has {} input(s): {}",
            files.len(),
            graph.inputs.len(),
            names.join(", ")
        )));
    }
    let mut sample = Sample::new();
    for (k, (name, path)) in files.iter().enumerate() {
        let info = match name {
            Some(n) => graph
                .inputs
                .iter()
                .find(|v| &v.name == n)
                .expect("checked above"),
            None => &graph.inputs[k],
        };
        if sample.contains_key(&info.name) {
            return Err(ToolError::input(format!(
                "input '{}' is given twice",
                info.name
            )));
        }
        sample.insert(info.name.clone(), read_one(info, path)?);
    }
    Ok(vec![sample])
}

fn read_folder(graph: &Graph, dir: &Path) -> ToolResult<Vec<Sample>> {
    let sub = |v: &ValueInfo| -> Option<PathBuf> {
        [v.name.clone(), file_safe(&v.name)]
            .into_iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_dir())
    };
    if graph.inputs.len() == 1 && sub(&graph.inputs[0]).is_none() {
        let files = npy_files(dir)?;
        if files.is_empty() {
            return Err(ToolError::input(format!(
                "{}: no .npy files and no '{}' folder",
                dir.display(),
                graph.inputs[0].name
            )));
        }
        return files
            .iter()
            .map(|p| {
                Ok(Sample::from([(
                    graph.inputs[0].name.clone(),
                    read_one(&graph.inputs[0], p)?,
                )]))
            })
            .collect();
    }
    let mut per_input = Vec::new();
    for v in &graph.inputs {
        let d = sub(v).ok_or_else(|| {
            ToolError::input(format!(
                "{}: no folder for input '{}'",
                dir.display(),
                v.name
            ))
        })?;
        per_input.push((v, npy_files(&d)?));
    }
    let n = per_input.iter().map(|(_, f)| f.len()).min().unwrap_or(0);
    if n == 0 {
        return Err(ToolError::input(format!("{}: no samples", dir.display())));
    }
    if let Some((v, f)) = per_input.iter().find(|(_, f)| f.len() != n) {
        return Err(ToolError::input(format!(
            "{}: input '{}' has {} samples but another input has {n}",
            dir.display(),
            v.name,
            f.len()
        )));
    }
    (0..n)
        .map(|k| {
            per_input
                .iter()
                .map(|(v, f)| Ok((v.name.clone(), read_one(v, &f[k])?)))
                .collect()
        })
        .collect()
}

/// `.npy` files in a folder, in numeric order of their stem (`2.npy` before `10.npy`).
pub fn npy_files(dir: &Path) -> ToolResult<Vec<PathBuf>> {
    files_with_extensions(dir, &["npy"])
}

/// Files of a folder with one of `exts`, in numeric order of their stem
/// (`2.npy` before `10.npy`; non-numeric names after, alphabetically).
pub fn files_with_extensions(dir: &Path, exts: &[&str]) -> ToolResult<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ToolError::input(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| exts.iter().any(|e| x.eq_ignore_ascii_case(e)))
        })
        .collect();
    v.sort_by_key(|p| {
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        (stem.parse::<u64>().unwrap_or(u64::MAX), stem)
    });
    Ok(v)
}

/// Reads one input file and checks it against the model's declaration.
pub fn read_one(info: &ValueInfo, path: &Path) -> ToolResult<Tensor> {
    if !path.exists() {
        return Err(ToolError::input(format!(
            "{}: no such file (input '{}')",
            path.display(),
            info.name
        )));
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let t = if ext == "bin" || ext == "raw" {
        let dtype = info.dtype().ok_or_else(|| {
            ToolError::input(format!(
                "{}: input '{}' has no known type for raw data",
                path.display(),
                info.name
            ))
        })?;
        let shape = info.fixed_shape().ok_or_else(|| {
            ToolError::input(format!(
                "{}: input '{}' has dynamic shape {}; use .npy",
                path.display(),
                info.name,
                info.shape_text()
            ))
        })?;
        io::read_raw(path, dtype, &shape)?
    } else {
        io::read_npy(path)?
    };
    let t = to_input_float_type(info, t)?;
    check_against(info, &t).map_err(|m| ToolError::input(format!("{}: {m}", path.display())))?;
    Ok(t)
}

/// Float data for an input of another float type (float32 samples for a
/// float16 model) is converted to the input's type, as the deployed input
/// conversion would; everything else is left for [`check_against`].
pub fn to_input_float_type(info: &ValueInfo, t: Tensor) -> ToolResult<Tensor> {
    let float = |d: DType| matches!(d, DType::F16 | DType::BF16 | DType::F32 | DType::F64);
    match info.dtype() {
        Some(want) if want != t.dtype() && float(want) && float(t.dtype()) => {
            t.cast(want).map_err(ToolError::input)
        }
        _ => Ok(t),
    }
}

/// Checks a tensor's type and shape against an input declaration.
pub fn check_against(info: &ValueInfo, t: &Tensor) -> Result<(), String> {
    if info.accepts(t) {
        Ok(())
    } else {
        Err(format!(
            "input '{}' expects {}{}, the file holds {}",
            info.name,
            info.dtype_name(),
            info.shape_text(),
            t.describe()
        ))
    }
}
