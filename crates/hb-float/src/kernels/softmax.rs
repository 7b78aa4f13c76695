//! Softmax and LogSoftmax (opset < 13: input coerced to 2-D at `axis`;
//! opset >= 13: along `axis`). Numerically stable (the row max is
//! subtracted); a row of only -inf gives NaN, like the ONNX reference.

use crate::error::OpResult;
use crate::invalid;
use crate::kernels::floatio::{f32_of, to_dtype, to_vec};
use crate::kernels::util::{input, norm_axis, one};
use crate::registry::{OpCtx, Registry};
use hb_tensor::Tensor;
use ndarray::{ArrayD, IxDyn};

/// Registers Softmax and LogSoftmax.
pub fn register(r: &mut Registry) {
    r.register("Softmax", softmax);
    r.register("LogSoftmax", log_softmax);
}

fn softmax(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    run(ctx, inputs, false)
}

fn log_softmax(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    run(ctx, inputs, true)
}

fn run(ctx: &OpCtx, inputs: &[Option<&Tensor>], log: bool) -> OpResult<Vec<Tensor>> {
    let xt = input(inputs, 0)?;
    let x = f32_of(xt)?;
    let shape = x.shape().to_vec();
    let default = if ctx.opset >= 13 { -1 } else { 1 };
    let axis = norm_axis(ctx.node.int_or("axis", default)?, shape.len())?;
    let (outer, n, inner) = if shape.is_empty() {
        (1, 1, 1)
    } else if ctx.opset >= 13 {
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        (outer, shape[axis], inner)
    } else {
        (
            shape[..axis].iter().product(),
            shape[axis..].iter().product(),
            1,
        )
    };
    let mut data: Vec<f32> = to_vec(&x);
    softmax_rows(&mut data, outer, n, inner, log);
    let y = ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| invalid!("{e}"))?;
    one(to_dtype(y, xt.dtype())?)
}

/// Softmax (or log-softmax) in place over the middle dim of an
/// `[outer, n, inner]` row-major buffer.
pub fn softmax_rows(data: &mut [f32], outer: usize, n: usize, inner: usize, log: bool) {
    if n == 0 || inner == 0 {
        return;
    }
    if inner == 1 {
        softmax_chunks(data, n, log);
        return;
    }
    let mut row = vec![0f32; n];
    for block in data.chunks_mut(n * inner).take(outer) {
        for j in 0..inner {
            for (i, r) in row.iter_mut().enumerate() {
                *r = block.get(i * inner + j).copied().unwrap_or(0.0);
            }
            softmax_slice(&mut row, log);
            for (i, r) in row.iter().enumerate() {
                if let Some(v) = block.get_mut(i * inner + j) {
                    *v = *r;
                }
            }
        }
    }
}

crate::multiversion! {
/// Softmax (or log-softmax) of one contiguous row, in place.
pub fn softmax_slice(row: &mut [f32], log: bool) {
    softmax_row(row, log)
}
}

/// Rows shorter than this take the three-sweep path of `softmax_chunks`.
const SHORT_ROW: usize = 256;

crate::multiversion! {
/// Softmax (or log-softmax) of every `n`-element row of `data`, in place.
///
/// Short rows (attention over a few tokens) are done in three sweeps —
/// subtract each row's max, `exp` over the whole buffer in one vectorised
/// loop, scale each row by its inverse sum — so the costly `exp` never runs
/// in a per-row scalar tail. Each element gets exactly the operations of
/// [`softmax_row`], so the result is bit-identical.
fn softmax_chunks(data: &mut [f32], n: usize, log: bool) {
    if log || n >= SHORT_ROW {
        data.chunks_mut(n).for_each(|row| softmax_row(row, log));
        return;
    }
    for row in data.chunks_mut(n) {
        let max = super::simd::max(row);
        row.iter_mut().for_each(|v| *v -= max);
    }
    data.iter_mut()
        .for_each(|v| *v = super::fastmath::exp_f32(*v));
    for row in data.chunks_mut(n) {
        let inv = 1.0 / super::simd::sum(row);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}
}

/// Softmax (or log-softmax) of one contiguous row, in place (inlined into
/// the multiversioned callers).
#[inline(always)]
fn softmax_row(row: &mut [f32], log: bool) {
    let max = super::simd::max(row);
    if log {
        let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
        let ls = sum.ln();
        row.iter_mut().for_each(|v| *v = *v - max - ls);
    } else {
        row.iter_mut()
            .for_each(|v| *v = super::fastmath::exp_f32(*v - max));
        let inv = 1.0 / super::simd::sum(row);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_all_neg_inf_rows() {
        let mut v = vec![1000.0, 1000.0, f32::NEG_INFINITY, f32::NEG_INFINITY];
        softmax_rows(&mut v, 2, 2, 1, false);
        assert_eq!(&v[..2], &[0.5, 0.5]);
        assert!(v[2].is_nan() && v[3].is_nan());
        let mut l = vec![0.0, 0.0];
        softmax_rows(&mut l, 1, 2, 1, true);
        assert!((l[0] + std::f32::consts::LN_2).abs() < 1e-6);
    }

    #[test]
    fn short_rows_equal_the_row_by_row_path() {
        for n in [1usize, 7, 14, 46, 255] {
            let mut data: Vec<f32> = (0..n * 9)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.173)
                .collect();
            for (i, v) in data.iter_mut().enumerate() {
                if i % 5 == 3 {
                    *v = f32::NEG_INFINITY;
                }
            }
            let rows = data.len() / n;
            data[n..2 * n]
                .iter_mut()
                .for_each(|v| *v = f32::NEG_INFINITY);
            let mut want = data.clone();
            want.chunks_mut(n).for_each(|r| softmax_row(r, false));
            softmax_chunks(&mut data, n, false);
            assert_eq!(rows, 9);
            for (a, b) in data.iter().zip(&want) {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "n={n}: {a} vs {b}"
                );
            }
        }
    }
}
