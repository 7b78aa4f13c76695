//! The host backend of a program's float CPU ops: each `CpuOp` becomes an
//! `hb_ir::Node` run by the matching `hb-float` kernel.

use crate::{LowerError, Result};
use hb_bpu::program::{consts, pb, CpuOps, Program};
use hb_float::{KernelFn, OpCtx, Registry};
use hb_ir::{Attr, Node};
use hb_tensor::Tensor;

struct Prepared {
    node: Node,
    kernel: KernelFn,
    opset: i64,
}

/// Runs CPU ops with the standard `hb-float` kernels.
pub struct FloatCpu {
    ops: Vec<Option<Prepared>>,
}

/// Converts a stored attribute back to an IR attribute.
pub fn attr_from_pb(p: &Program, a: &pb::Attribute) -> Result<Attr> {
    use pb::attribute::Value as V;
    Ok(match &a.value {
        Some(V::I(v)) => Attr::Int(*v),
        Some(V::F(v)) => Attr::Float(*v),
        Some(V::S(v)) => Attr::String(v.clone()),
        Some(V::Ints(v)) => Attr::Ints(v.v.clone()),
        Some(V::Floats(v)) => Attr::Floats(v.v.clone()),
        Some(V::Strings(v)) => Attr::Strings(v.v.clone()),
        Some(V::Tensor(id)) => {
            let t = p.tensors.get(*id as usize).ok_or_else(|| {
                LowerError::Model(format!("attribute '{}' refers to a missing tensor", a.name))
            })?;
            Attr::Tensor(consts::to_tensor(t)?)
        }
        None => {
            return Err(LowerError::Model(format!(
                "attribute '{}' is empty",
                a.name
            )))
        }
    })
}

impl FloatCpu {
    /// Resolves the kernel of every CPU op of `p`; fails naming the first op
    /// without one.
    pub fn new(p: &Program) -> Result<FloatCpu> {
        let reg = Registry::shared();
        let mut ops = Vec::with_capacity(p.ops.len());
        for op in &p.ops {
            let Some(pb::op::Kind::Cpu(c)) = &op.kind else {
                ops.push(None);
                continue;
            };
            let kernel = reg.get(&c.domain, &op.op_type).ok_or_else(|| {
                LowerError::Model(format!(
                    "CPU op '{}' ({}): no float kernel",
                    op.name, op.op_type
                ))
            })?;
            let name = |i: i32| {
                if i < 0 {
                    String::new()
                } else {
                    p.tensors
                        .get(i as usize)
                        .map(|t| t.name.clone())
                        .unwrap_or_default()
                }
            };
            let mut node = Node::new(&op.name, &op.op_type, &[], &[]);
            node.domain = c.domain.clone();
            node.inputs = op.inputs.iter().map(|&i| name(i)).collect();
            node.outputs = op.outputs.iter().map(|&o| name(o as i32)).collect();
            for a in &c.attrs {
                node.set_attr(&a.name, attr_from_pb(p, a)?);
            }
            ops.push(Some(Prepared {
                node,
                kernel,
                opset: c.opset,
            }));
        }
        Ok(FloatCpu { ops })
    }
}

impl CpuOps for FloatCpu {
    fn run(
        &self,
        op: usize,
        inputs: &[Option<&Tensor>],
    ) -> std::result::Result<Vec<Tensor>, String> {
        let p = self
            .ops
            .get(op)
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("op #{op} is not a CPU op"))?;
        let ctx = OpCtx {
            node: &p.node,
            opset: p.opset,
        };
        (p.kernel)(&ctx, inputs).map_err(|e| e.to_string())
    }
}
