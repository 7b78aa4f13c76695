//! Other normalizations: MeanVarianceNormalization (over any axes),
//! LpNormalization (along one axis) and LRN (across channels).

use crate::error::OpResult;
use crate::invalid;
use crate::kernels::floatio::{f32_of, to_dtype, to_vec};
use crate::kernels::util::{input, norm_axis, one};
use crate::registry::{OpCtx, Registry};
use hb_tensor::Tensor;
use ndarray::{ArrayD, IxDyn};

/// Registers MeanVarianceNormalization, LpNormalization and LRN.
pub fn register(r: &mut Registry) {
    r.register("MeanVarianceNormalization", mvn);
    r.register("LpNormalization", lp_normalization);
    r.register("LRN", lrn);
}

/// For every element of a row-major `shape`, the index of its group when
/// the dims in `reduced` are collapsed; also returns the group count.
fn group_ids(shape: &[usize], reduced: &[bool]) -> (Vec<usize>, usize) {
    let total: usize = shape.iter().product();
    let groups: usize = shape
        .iter()
        .zip(reduced)
        .filter(|(_, r)| !**r)
        .map(|(d, _)| *d)
        .product();
    let mut ids = Vec::with_capacity(total);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..total {
        let g = idx
            .iter()
            .zip(shape)
            .zip(reduced)
            .filter(|(_, r)| !**r)
            .fold(0, |acc, ((i, d), _)| acc * d + i);
        ids.push(g);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    (ids, groups)
}

fn mvn(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let xt = input(inputs, 0)?;
    let x = f32_of(xt)?;
    let shape = x.shape().to_vec();
    let axes = ctx.node.get_ints("axes")?.unwrap_or_else(|| vec![0, 2, 3]);
    let mut reduced = vec![false; shape.len()];
    for a in axes {
        reduced[norm_axis(a, shape.len())?] = true;
    }
    let (ids, groups) = group_ids(&shape, &reduced);
    let mut sum = vec![0f64; groups];
    let mut sq = vec![0f64; groups];
    let mut cnt = vec![0usize; groups];
    for (&g, &v) in ids.iter().zip(x.iter()) {
        sum[g] += v as f64;
        sq[g] += (v as f64) * (v as f64);
        cnt[g] += 1;
    }
    let stats: Vec<(f32, f32)> = (0..groups)
        .map(|g| {
            let n = cnt[g].max(1) as f64;
            let m = sum[g] / n;
            let var = (sq[g] / n - m * m).max(0.0);
            (m as f32, var.sqrt() as f32 + 1e-9)
        })
        .collect();
    let data: Vec<f32> = ids
        .iter()
        .zip(x.iter())
        .map(|(&g, &v)| (v - stats[g].0) / stats[g].1)
        .collect();
    let y = ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| invalid!("{e}"))?;
    one(to_dtype(y, xt.dtype())?)
}

/// `[outer, n, inner]` sizes around `axis`.
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

fn lp_normalization(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let xt = input(inputs, 0)?;
    let x = f32_of(xt)?;
    let shape = x.shape().to_vec();
    if shape.is_empty() {
        return Err(invalid!("LpNormalization needs rank >= 1"));
    }
    let axis = norm_axis(ctx.node.int_or("axis", -1)?, shape.len())?;
    let p = ctx.node.int_or("p", 2)?;
    if p != 1 && p != 2 {
        return Err(invalid!("LpNormalization p must be 1 or 2, got {p}"));
    }
    let (outer, n, inner) = split_at_axis(&shape, axis);
    let mut data: Vec<f32> = to_vec(&x);
    for o in 0..outer {
        for j in 0..inner {
            let at = |i: usize| o * n * inner + i * inner + j;
            let norm = (0..n)
                .map(|i| {
                    data.get(at(i))
                        .map_or(0.0, |v| if p == 1 { v.abs() } else { v * v })
                })
                .sum::<f32>();
            let norm = if p == 2 { norm.sqrt() } else { norm };
            let inv = if norm == 0.0 { 0.0 } else { 1.0 / norm };
            for i in 0..n {
                if let Some(v) = data.get_mut(at(i)) {
                    *v *= inv;
                }
            }
        }
    }
    let y = ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| invalid!("{e}"))?;
    one(to_dtype(y, xt.dtype())?)
}

fn lrn(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let xt = input(inputs, 0)?;
    let x = f32_of(xt)?;
    let shape = x.shape().to_vec();
    if shape.len() < 2 {
        return Err(invalid!("LRN needs an input of rank >= 2, got {shape:?}"));
    }
    let node = ctx.node;
    let size = node.int_req("size")?;
    if size < 1 {
        return Err(invalid!("LRN size must be positive, got {size}"));
    }
    let (alpha, beta, bias) = (
        node.float_or("alpha", 1e-4)?,
        node.float_or("beta", 0.75)?,
        node.float_or("bias", 1.0)?,
    );
    let size = size as usize;
    let (before, after) = ((size - 1) / 2, (size - 1).div_ceil(2));
    let (outer, c, inner) = split_at_axis(&shape, 1);
    let xd: Vec<f32> = to_vec(&x);
    let mut out = vec![0f32; xd.len()];
    for o in 0..outer {
        for ch in 0..c {
            let lo = ch.saturating_sub(before);
            let hi = (ch + after).min(c - 1);
            for j in 0..inner {
                let at = |k: usize| o * c * inner + k * inner + j;
                let sq: f32 = (lo..=hi)
                    .map(|k| xd.get(at(k)).map_or(0.0, |v| v * v))
                    .sum();
                let v = xd.get(at(ch)).copied().unwrap_or(0.0);
                if let Some(d) = out.get_mut(at(ch)) {
                    *d = v / (bias + alpha / size as f32 * sq).powf(beta);
                }
            }
        }
    }
    let y = ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| invalid!("{e}"))?;
    one(to_dtype(y, xt.dtype())?)
}
