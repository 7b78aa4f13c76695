//! Shared helpers of the tools for `.bc` / `.hbm` programs: loading (with
//! one-line errors), the runner (reference interpreter for `.bc`, the
//! optimised engine for `.hbm`), inputs from files, outputs as floats.

use crate::cli::{ToolError, ToolResult};
use crate::inputs::Sample;
use hb_bpu::engine::{Engine, EngineOptions, Workspace};
use hb_bpu::program::interp::Interpreter;
use hb_bpu::program::{dtype_of, pb, shape_of, Program};
use hb_bpu::reference::quant::QuantParams;
use hb_ir::{Dim, Graph, ValueInfo};
use hb_lower::cpu::FloatCpu;
use hb_tensor::{DType, Tensor};
use std::path::Path;
use std::sync::Arc;

/// True when `path` names a `.bc` / `.hbm` program (by extension or magic).
pub fn is_program(path: &Path) -> bool {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if ext == "bc" || ext == "hbm" {
        return true;
    }
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && (&magic == hb_bpu::program::MAGIC_BC || &magic == hb_bpu::program::MAGIC_HBM)
}

/// Reads and validates a program file.
pub fn load_program(path: &Path) -> ToolResult<Arc<Program>> {
    if !path.exists() {
        return Err(ToolError::input(format!(
            "{}: no such file",
            path.display()
        )));
    }
    hb_bpu::program::load(path)
        .map(Arc::new)
        .map_err(ToolError::input)
}

/// Tensors by name, in execution order.
pub type Named = Vec<(String, Tensor)>;

/// How a program runs.
pub enum Runner {
    /// The reference interpreter.
    Reference(Interpreter),
    /// The optimised engine (boxed: far larger than the interpreter).
    Engine(Box<Engine>),
}

/// A loaded, runnable program.
pub struct Loaded {
    /// The file.
    pub path: String,
    /// The program.
    pub program: Arc<Program>,
    /// Its runner.
    pub runner: Runner,
    /// The CPU backend.
    pub cpu: FloatCpu,
}

impl Loaded {
    /// Loads `path`: `.bc` runs on the reference interpreter, `.hbm` on the
    /// engine (`reference` forces the interpreter).
    pub fn open(path: &Path, reference: bool) -> ToolResult<Loaded> {
        let program = load_program(path)?;
        let p = path.display().to_string();
        let err = |e: &dyn std::fmt::Display| ToolError::input(format!("{p}: {e}"));
        let cpu = FloatCpu::new(&program).map_err(|e| err(&e))?;
        let runner = if reference || program.kind() == pb::ProgramKind::Bc {
            Runner::Reference(Interpreter::new(program.clone()).map_err(|e| err(&e))?)
        } else {
            Runner::Engine(Box::new(
                Engine::new(program.clone(), EngineOptions::default()).map_err(|e| err(&e))?,
            ))
        };
        Ok(Loaded {
            path: p,
            program,
            runner,
            cpu,
        })
    }

    /// A graph whose inputs describe the program's inputs (for
    /// [`crate::inputs::read_inputs`]); quantized inputs accept any type.
    pub fn input_graph(&self) -> Graph {
        let mut g = Graph::default();
        for &i in &self.program.inputs {
            let t = &self.program.tensors[i as usize];
            let quantized = t
                .quant
                .as_ref()
                .is_some_and(|q| q.kind == pb::QuantType::QuantScale as i32);
            g.inputs.push(ValueInfo {
                name: t.name.clone(),
                elem_type: if quantized { 0 } else { t.dtype },
                shape: Some(t.shape.iter().map(|&d| Dim::Fixed(d as usize)).collect()),
                non_tensor: false,
            });
        }
        g
    }

    /// The program inputs of one sample, in program order; float data for a
    /// quantized input is quantized with the input's scale.
    pub fn inputs_of(&self, s: &Sample) -> ToolResult<Vec<Tensor>> {
        let mut v = Vec::new();
        for &i in &self.program.inputs {
            let info = &self.program.tensors[i as usize];
            let t = s.get(&info.name).ok_or_else(|| {
                ToolError::input(format!("{}: input '{}' is not given", self.path, info.name))
            })?;
            let dt = dtype_of(info).map_err(ToolError::input)?;
            let shape = shape_of(info);
            if t.shape() != &shape[..] {
                return Err(ToolError::input(format!(
                    "{}: input '{}' must have shape {shape:?}, got {:?}",
                    self.path,
                    info.name,
                    t.shape()
                )));
            }
            if t.dtype() == dt {
                v.push(t.clone().into_standard_layout());
                continue;
            }
            let q = info
                .quant
                .as_ref()
                .filter(|q| q.kind == pb::QuantType::QuantScale as i32 && q.scales.len() == 1);
            match (q, t) {
                (Some(q), Tensor::F32(a)) => {
                    let (lo, hi) = hb_bpu::program::prepared::int_range(dt).ok_or_else(|| {
                        ToolError::input(format!("input '{}' has type {dt}", info.name))
                    })?;
                    let mut qp =
                        QuantParams::with_range(q.scales[0], lo, hi).map_err(ToolError::input)?;
                    qp.keep_masks = q.keep_masks;
                    let ints: Vec<i64> = a.iter().map(|&x| qp.quantize(x)).collect();
                    let t = match dt {
                        DType::I8 => {
                            Tensor::from_vec(&shape, ints.iter().map(|&x| x as i8).collect())
                        }
                        DType::I16 => {
                            Tensor::from_vec(&shape, ints.iter().map(|&x| x as i16).collect())
                        }
                        _ => Tensor::from_vec(&shape, ints.iter().map(|&x| x as i32).collect()),
                    }
                    .map_err(ToolError::input)?;
                    v.push(t);
                }
                _ => {
                    return Err(ToolError::input(format!(
                        "{}: input '{}' must be {dt}{:?}, got {}",
                        self.path,
                        info.name,
                        shape,
                        t.describe()
                    )))
                }
            }
        }
        Ok(v)
    }

    /// Runs one sample; `ws` is reused across runs (engine only).
    pub fn run(&self, inputs: &[Tensor], ws: &mut Workspace) -> ToolResult<Vec<Tensor>> {
        let r = match &self.runner {
            Runner::Reference(i) => i.run(inputs, &self.cpu),
            Runner::Engine(e) => e.run(inputs, &self.cpu, ws),
        };
        r.map_err(|e| ToolError::input(format!("{}: {e}", self.path)))
    }

    /// Runs and returns every produced tensor `(name, value)` in order.
    pub fn run_all(
        &self,
        inputs: &[Tensor],
        ws: &mut Workspace,
    ) -> ToolResult<(Vec<Tensor>, Named)> {
        let mut all: Vec<(String, Tensor)> = Vec::new();
        let names: Vec<String> = self
            .program
            .tensors
            .iter()
            .map(|t| t.name.clone())
            .collect();
        let mut seen = |id: usize, t: &Tensor| all.push((names[id].clone(), t.clone()));
        let r = match &self.runner {
            Runner::Reference(i) => i.run_with(inputs, &self.cpu, &mut seen),
            Runner::Engine(e) => e.run_with(inputs, &self.cpu, ws, Some(&mut seen)),
        };
        let outs = r.map_err(|e| ToolError::input(format!("{}: {e}", self.path)))?;
        Ok((outs, all))
    }

    /// The output names, in program order.
    pub fn output_names(&self) -> Vec<String> {
        self.program
            .outputs
            .iter()
            .map(|&o| self.program.tensors[o as usize].name.clone())
            .collect()
    }
}

/// A tensor as f32 values, dequantized with tensor `id`'s quant info when it
/// is an integer tensor with scales.
pub fn as_f32(p: &Program, id: usize, t: &Tensor) -> ToolResult<Vec<f32>> {
    let q = p.tensors[id]
        .quant
        .as_ref()
        .filter(|q| q.kind == pb::QuantType::QuantScale as i32);
    let v = t.to_f64_vec().map_err(ToolError::input)?;
    let Some(q) = q else {
        return Ok(v.iter().map(|&x| x as f32).collect());
    };
    let shape = t.shape();
    let axis = q.axis.max(0) as usize;
    let inner: usize = shape.get(axis + 1..).map_or(1, |s| s.iter().product());
    let c = shape.get(axis).copied().unwrap_or(1);
    Ok(v.iter()
        .enumerate()
        .map(|(i, &x)| {
            let k = if c > 0 { (i / inner.max(1)) % c } else { 0 };
            if !q.hp_scales.is_empty() {
                let s = q.hp_scales[if q.hp_scales.len() == 1 { 0 } else { k }];
                (x * s) as f32
            } else {
                let s = q.scales[if q.scales.len() == 1 {
                    0
                } else {
                    k.min(q.scales.len() - 1)
                }];
                x as f32 * s
            }
        })
        .collect())
}
