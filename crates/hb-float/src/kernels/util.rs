//! Helpers shared by kernels: input access, axes, broadcasting.

use crate::error::{OpError, OpResult};
use crate::invalid;
use crate::registry::OpCtx;
use hb_tensor::Tensor;
use ndarray::{ArrayD, IxDyn};

/// Input `i`, required.
pub fn input<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> OpResult<&'a Tensor> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| invalid!("missing required input {i}"))
}

/// Input `i` if present.
pub fn opt_input<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}

/// Input `i` as a float32 array (required, must be float32).
pub fn f32_input<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> OpResult<&'a ArrayD<f32>> {
    let t = input(inputs, i)?;
    t.as_f32().map_err(|_| {
        crate::unsupported!(
            "input {i} has type {}, only float32 is supported here",
            t.dtype()
        )
    })
}

/// Optional integer-vector input (e.g. shapes, axes, pads) as i64 values.
pub fn ints_input(inputs: &[Option<&Tensor>], i: usize) -> OpResult<Option<Vec<i64>>> {
    match opt_input(inputs, i) {
        None => Ok(None),
        Some(t) => Ok(Some(t.to_i64_vec()?)),
    }
}

/// Resolves a possibly negative axis against `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> OpResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) && !(r == 0 && a == 0) {
        return Err(invalid!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// Numpy-style broadcast of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> OpResult<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(invalid!("shapes {a:?} and {b:?} do not broadcast"));
        };
    }
    Ok(out)
}

/// Broadcast of several shapes.
pub fn broadcast_all(shapes: &[&[usize]]) -> OpResult<Vec<usize>> {
    let mut out: Vec<usize> = Vec::new();
    for s in shapes {
        out = broadcast_shapes(&out, s)?;
    }
    Ok(out)
}

/// A view of `a` broadcast to `shape` (no copy).
pub fn broadcast_view<'a, T>(
    a: &'a ArrayD<T>,
    shape: &[usize],
) -> OpResult<ndarray::ArrayViewD<'a, T>> {
    a.broadcast(IxDyn(shape))
        .ok_or_else(|| invalid!("cannot broadcast {:?} to {:?}", a.shape(), shape))
}

/// One output tensor.
pub fn one(t: impl Into<Tensor>) -> OpResult<Vec<Tensor>> {
    Ok(vec![t.into()])
}

/// The name of the op for messages.
pub fn op_name<'a>(ctx: &OpCtx<'a>) -> &'a str {
    &ctx.node.op_type
}

/// Converts an IR error from attribute access.
pub fn attr_err(e: hb_ir::IrError) -> OpError {
    OpError::Ir(e)
}
