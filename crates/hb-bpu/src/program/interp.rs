//! The reference interpreter of `.bc` (and `.hbm`) programs: every integer
//! op through [`super::refexec`] (the plain reference kernels), float CPU ops
//! through the host's [`CpuOps`]. Plain and obviously correct; the
//! optimised runtime ([`crate::engine`]) is tested bit-exact against it.

use super::prepared::{prepare, PreparedOp};
use super::{consts, dtype_of, refexec, shape_of, CpuOps, Program, ProgramError, Result};
use hb_tensor::{DType, Tensor};
use std::sync::Arc;

/// A program prepared for reference execution.
pub struct Interpreter {
    program: Arc<Program>,
    ops: Vec<PreparedOp>,
    consts: Vec<Option<Arc<Tensor>>>,
    infos: Vec<(DType, Vec<usize>)>,
}

/// Checks the caller's inputs against the program's declared inputs.
pub fn check_inputs(p: &Program, inputs: &[Tensor]) -> Result<()> {
    if inputs.len() != p.inputs.len() {
        return Err(ProgramError::Input(format!(
            "the model has {} input(s), {} given",
            p.inputs.len(),
            inputs.len()
        )));
    }
    for (&id, t) in p.inputs.iter().zip(inputs) {
        let info = &p.tensors[id as usize];
        let dt = dtype_of(info)?;
        let shape = shape_of(info);
        if t.dtype() != dt || t.shape() != &shape[..] {
            return Err(ProgramError::Input(format!(
                "input '{}' must be {dt} {shape:?}, got {} {:?}",
                info.name,
                t.dtype(),
                t.shape()
            )));
        }
    }
    Ok(())
}

/// Decodes every constant of `p`.
pub fn constants(p: &Program) -> Result<Vec<Option<Arc<Tensor>>>> {
    p.tensors
        .iter()
        .map(|t| {
            if t.is_const {
                consts::to_tensor(t).map(|v| Some(Arc::new(v)))
            } else {
                Ok(None)
            }
        })
        .collect()
}

/// Declared dtype and shape of every tensor.
pub fn infos(p: &Program) -> Result<Vec<(DType, Vec<usize>)>> {
    p.tensors
        .iter()
        .map(|t| Ok((dtype_of(t)?, shape_of(t))))
        .collect()
}

impl Interpreter {
    /// Prepares `program` (tables rebuilt, parameters checked).
    pub fn new(program: Arc<Program>) -> Result<Interpreter> {
        let ops = prepare(&program)?;
        let consts = constants(&program)?;
        let infos = infos(&program)?;
        Ok(Interpreter {
            program,
            ops,
            consts,
            infos,
        })
    }

    /// The program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Runs on `inputs` (in `Program.inputs` order); returns the outputs.
    pub fn run(&self, inputs: &[Tensor], cpu: &dyn CpuOps) -> Result<Vec<Tensor>> {
        self.run_with(inputs, cpu, &mut |_, _| {})
    }

    /// Runs and shows every produced tensor (id, value) to `seen`, in
    /// execution order (model inputs first).
    pub fn run_with(
        &self,
        inputs: &[Tensor],
        cpu: &dyn CpuOps,
        seen: &mut dyn FnMut(usize, &Tensor),
    ) -> Result<Vec<Tensor>> {
        check_inputs(&self.program, inputs)?;
        let n = self.program.tensors.len();
        let mut vals: Vec<Option<Arc<Tensor>>> = self.consts.clone();
        vals.resize(n, None);
        for (&id, t) in self.program.inputs.iter().zip(inputs) {
            seen(id as usize, t);
            vals[id as usize] = Some(Arc::new(t.clone()));
        }
        for op in &self.ops {
            let ins: Vec<Option<&Tensor>> = op
                .inputs
                .iter()
                .map(|i| match i {
                    Some(i) => vals[*i].as_deref().map(Some).ok_or_else(|| {
                        op.err(format!(
                            "reads '{}' before it is produced",
                            self.program.tensors[*i].name
                        ))
                    }),
                    None => Ok(None),
                })
                .collect::<Result<_>>()?;
            let outs: Vec<(DType, Vec<usize>)> =
                op.outputs.iter().map(|&o| self.infos[o].clone()).collect();
            let ys = if op.on_cpu || matches!(op.kernel, super::prepared::Kernel::Cpu) {
                let ys: Vec<Tensor> = cpu
                    .run(op.index, &ins)
                    .map_err(|e| op.err(e))?
                    .into_iter()
                    .map(Tensor::into_standard_layout)
                    .collect();
                check_outputs(op, &ys, &outs)?;
                ys
            } else {
                refexec::run_op(op, &ins, &outs).map_err(|e| op.err(e))?
            };
            for (&o, y) in op.outputs.iter().zip(ys) {
                seen(o, &y);
                vals[o] = Some(Arc::new(y));
            }
        }
        self.program
            .outputs
            .iter()
            .map(|&o| {
                vals[o as usize]
                    .as_deref()
                    .cloned()
                    .ok_or_else(|| ProgramError::Invalid(format!("output #{o} is never produced")))
            })
            .collect()
    }
}

/// Ops whose output shape depends on the input values: the program declares
/// the shape seen when it was lowered (zero-filled inputs), and their int64
/// / bool outputs (host-held, never in a fixed-size slot) may take any
/// shape of the same rank at run time.
const DATA_DEPENDENT_SHAPE: &[&str] = &["NonMaxSuppression", "NonZero"];

/// Checks what a CPU op returned against the declared outputs.
pub fn check_outputs(op: &PreparedOp, ys: &[Tensor], outs: &[(DType, Vec<usize>)]) -> Result<()> {
    if ys.len() < outs.len() {
        return Err(op.err(format!(
            "returned {} outputs, {} declared",
            ys.len(),
            outs.len()
        )));
    }
    let dynamic = DATA_DEPENDENT_SHAPE.contains(&op.op_type.as_str());
    for (y, (dt, shape)) in ys.iter().zip(outs) {
        let free =
            dynamic && matches!(dt, DType::I64 | DType::Bool) && y.shape().len() == shape.len();
        if y.dtype() != *dt || (y.shape() != &shape[..] && !free) {
            return Err(op.err(format!(
                "produced {} {:?}, the program declares {dt} {shape:?}",
                y.dtype(),
                y.shape()
            )));
        }
    }
    Ok(())
}
