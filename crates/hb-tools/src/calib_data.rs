//! Calibration samples from `cal_data_dir`: one folder per model input
//! (`;`-separated, in `input_name` order), or one folder holding a
//! sub-folder per input. Sample k is the k-th file of each folder, in
//! numeric order of the file names. `.npy` files carry their type and
//! shape; raw `.bin` files are read with `cal_data_type` (or the input's
//! type) and the input's shape.

use crate::cli::{ToolError, ToolResult};
use crate::inputs::{check_against, files_with_extensions, npy_files, to_input_float_type};
use hb_ir::ValueInfo;
use hb_quant::pipeline::{Sample, SampleSource};
use hb_tensor::{io, DType, Tensor};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// One model input's calibration files.
struct InputFiles {
    info: ValueInfo,
    raw_type: Option<DType>,
    files: Vec<PathBuf>,
}

/// Calibration samples read from folders, one sample at a time.
pub struct FolderSamples {
    inputs: Vec<InputFiles>,
    count: usize,
}

fn data_files(dir: &Path) -> ToolResult<Vec<PathBuf>> {
    let npy = npy_files(dir)?;
    if !npy.is_empty() {
        return Ok(npy);
    }
    let raw = files_with_extensions(dir, &["bin", "raw", "rgb", "bgr"])?;
    Ok(raw)
}

impl FolderSamples {
    /// Maps `dirs` to the model inputs `infos` (same order) and lists the files.
    /// A single folder for several inputs must hold one sub-folder per input name.
    pub fn open(
        infos: &[ValueInfo],
        dirs: &[PathBuf],
        cal_data_type: &[String],
        limit: Option<usize>,
    ) -> ToolResult<Self> {
        let dirs: Vec<PathBuf> = if dirs.len() == 1 && infos.len() > 1 {
            infos
                .iter()
                .map(|v| dirs[0].join(crate::names::file_safe(&v.name)))
                .collect()
        } else {
            dirs.to_vec()
        };
        if dirs.len() != infos.len() {
            let names: Vec<&str> = infos.iter().map(|v| v.name.as_str()).collect();
            return Err(ToolError::input(format!(
                "cal_data_dir names {} folder(s) but the model has {} input(s) ({}); give one folder per input, ';'-separated in input order",
                dirs.len(),
                infos.len(),
                names.join(", ")
            )));
        }
        let mut inputs = Vec::new();
        for (k, (info, dir)) in infos.iter().zip(&dirs).enumerate() {
            if !dir.is_dir() {
                return Err(ToolError::input(format!(
                    "{}: calibration folder for input '{}' does not exist",
                    dir.display(),
                    info.name
                )));
            }
            let files = data_files(dir)?;
            if files.is_empty() {
                return Err(ToolError::input(format!(
                    "{}: no .npy or .bin calibration files for input '{}'",
                    dir.display(),
                    info.name
                )));
            }
            let raw_type = match cal_data_type.get(k).or(cal_data_type.first()) {
                Some(t) => Some(DType::parse(t).ok_or_else(|| {
                    ToolError::input(format!(
                        "cal_data_type '{t}' is not a data type (float32, uint8, int8, ...)"
                    ))
                })?),
                None => None,
            };
            inputs.push(InputFiles {
                info: info.clone(),
                raw_type,
                files,
            });
        }
        let count = inputs[0].files.len();
        for i in &inputs[1..] {
            if i.files.len() != count {
                return Err(ToolError::input(format!(
                    "input '{}' has {} calibration files but input '{}' has {}: every input needs one file per sample",
                    inputs[0].info.name,
                    count,
                    i.info.name,
                    i.files.len()
                )));
            }
        }
        let count = limit.map_or(count, |l| l.min(count));
        Ok(FolderSamples { inputs, count })
    }

    fn read(&self, input: &InputFiles, path: &Path) -> ToolResult<Tensor> {
        let info = &input.info;
        let is_npy = path.extension().is_some_and(|e| e == "npy");
        let t = if is_npy {
            to_input_float_type(info, io::read_npy(path)?)?
        } else {
            let dtype = input.raw_type.or(info.dtype()).unwrap_or(DType::F32);
            let shape = info.fixed_shape().ok_or_else(|| {
                ToolError::input(format!(
                    "{}: input '{}' has dynamic shape {}; set input_shape or use .npy",
                    path.display(),
                    info.name,
                    info.shape_text()
                ))
            })?;
            let raw = io::read_raw(path, dtype, &shape)?;
            match info.dtype() {
                Some(want) if want != dtype => raw.cast(want)?,
                _ => raw,
            }
        };
        check_against(info, &t)
            .map_err(|m| ToolError::input(format!("{}: {m}", path.display())))?;
        if t.dtype().is_float() {
            let a = t.to_f32()?;
            if let Some(bad) = a.iter().find(|x| !x.is_finite()) {
                return Err(ToolError::input(format!(
                    "{}: calibration data for input '{}' contains {bad}",
                    path.display(),
                    info.name
                )));
            }
        }
        Ok(t)
    }

    /// Checks every file (type, shape, finiteness) before any work starts.
    /// Samples are read in parallel; the error reported is that of the
    /// first bad sample in order, as a sequential check would report.
    pub fn check_all(&self) -> ToolResult<()> {
        (0..self.count)
            .into_par_iter()
            .map(|k| self.load_checked(k).map(|_| ()))
            .collect::<Vec<_>>()
            .into_iter()
            .collect()
    }

    fn load_checked(&self, k: usize) -> ToolResult<Sample> {
        self.inputs
            .iter()
            .map(|i| Ok((i.info.name.clone(), self.read(i, &i.files[k])?)))
            .collect()
    }

    /// The file of input `input` for sample `k`.
    pub fn file(&self, input: usize, k: usize) -> Option<&Path> {
        self.inputs.get(input)?.files.get(k).map(PathBuf::as_path)
    }
}

impl SampleSource for FolderSamples {
    fn count(&self) -> usize {
        self.count
    }

    fn load(&self, k: usize) -> Result<Sample, String> {
        self.load_checked(k).map_err(|e| e.message)
    }
}
