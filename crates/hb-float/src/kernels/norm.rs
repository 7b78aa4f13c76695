//! Normalization kernels: BatchNormalization (inference), InstanceNormalization,
//! LayerNormalization, GroupNormalization and RMSNormalization.

use crate::error::OpResult;
use crate::kernels::floatio::{f32_of, to_dtype, to_vec};
use crate::kernels::util::{broadcast_view, input, norm_axis, opt_input};
use crate::registry::{OpCtx, Registry};
use crate::{invalid, unsupported};
use hb_tensor::{DType, Tensor};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

/// Registers the normalization kernels.
pub fn register(r: &mut Registry) {
    r.register("BatchNormalization", batch_norm);
    r.register("InstanceNormalization", instance_norm);
    r.register("LayerNormalization", layer_norm);
    r.register("GroupNormalization", group_norm);
    r.register("RMSNormalization", rms_norm);
}

/// Runs `f(row_index, row)` over the `cols`-sized rows of `data`, in parallel when large.
fn for_rows<F: Fn(usize, &mut [f32]) + Sync + Send>(data: &mut [f32], cols: usize, f: F) {
    if cols == 0 {
        return;
    }
    if crate::threads::kernel_threads() > 1 && data.len() >= 1 << 16 && data.len() / cols > 1 {
        data.par_chunks_mut(cols)
            .enumerate()
            .for_each(|(i, r)| f(i, r));
    } else {
        data.chunks_mut(cols).enumerate().for_each(|(i, r)| f(i, r));
    }
}

/// Independent f64 accumulators of [`sum_f64`] (a fixed count, so the
/// summation order, and the result, is the same on every CPU).
const SUM_LANES: usize = 8;

/// `Σ f(x)` in f64 over [`SUM_LANES`] lanes, the lanes added in order and
/// the tail last: the lanes vectorise where a single running sum cannot.
#[inline(always)]
fn sum_f64(v: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0f64; SUM_LANES];
    let body = v.chunks_exact(SUM_LANES);
    let tail = body.remainder();
    for c in body {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(f64::from(x));
        }
    }
    let mut s = acc.iter().sum::<f64>();
    for &x in tail {
        s += f(f64::from(x));
    }
    s
}

/// Mean and variance of a slice (accumulated in f64).
#[inline(always)]
fn mean_var(v: &[f32]) -> (f32, f32) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let mean = sum_f64(v, |x| x) / n;
    let var = sum_f64(v, |x| (x - mean) * (x - mean)) / n;
    (mean as f32, var as f32)
}

/// An optional per-position parameter broadcast to `shape`, flattened.
fn param(t: Option<&Tensor>, shape: &[usize], what: &str) -> OpResult<Option<Vec<f32>>> {
    let Some(t) = t else { return Ok(None) };
    let a = f32_of(t)?;
    let v = broadcast_view(&a, shape)
        .map_err(|_| invalid!("{what} {:?} does not broadcast to {shape:?}", a.shape()))?;
    Ok(Some(v.iter().copied().collect()))
}

/// A per-channel parameter of exactly `c` values.
fn channel_param(t: &Tensor, c: usize, what: &str) -> OpResult<Vec<f32>> {
    let a = f32_of(t)?;
    if a.len() != c {
        return Err(invalid!(
            "{what} has shape {:?}, expected {c} values",
            a.shape()
        ));
    }
    Ok(to_vec(&a))
}

fn build(shape: &[usize], data: Vec<f32>, dtype: DType) -> OpResult<Tensor> {
    let a = ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| invalid!("{e}"))?;
    to_dtype(a, dtype)
}

/// `[N, C, rest]` sizes of an input of rank >= 2.
fn nc_rest(shape: &[usize], op: &str) -> OpResult<(usize, usize, usize)> {
    if shape.len() < 2 {
        return Err(invalid!("{op} needs an input of rank >= 2, got {shape:?}"));
    }
    Ok((shape[0], shape[1], shape[2..].iter().product()))
}

fn batch_norm(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    if ctx.node.int_or("training_mode", 0)? != 0 {
        return Err(unsupported!(
            "BatchNormalization with training_mode=1 (inference only)"
        ));
    }
    let xt = input(inputs, 0)?;
    let x = f32_of(xt)?;
    let shape = x.shape().to_vec();
    let (_, c, rest) = nc_rest(&shape, "BatchNormalization")?;
    let eps = ctx.node.float_or("epsilon", 1e-5)?;
    // Per channel, or per (channel, position) for the old spatial=0 form.
    let per = if f32_of(input(inputs, 1)?)?.len() == c {
        c
    } else {
        c * rest
    };
    let p: Vec<Vec<f32>> = (1..5)
        .map(|i| channel_param(input(inputs, i)?, per, "BatchNormalization parameter"))
        .collect::<OpResult<_>>()?;
    let (scale, bias, mean, var) = (&p[0], &p[1], &p[2], &p[3]);
    let mul: Vec<f32> = (0..per).map(|i| scale[i] / (var[i] + eps).sqrt()).collect();
    let add: Vec<f32> = (0..per).map(|i| bias[i] - mean[i] * mul[i]).collect();
    let mut data: Vec<f32> = to_vec(&x);
    let unit = if per == c { rest } else { 1 };
    for_rows(&mut data, unit.max(1), |i, row| {
        let k = i % per;
        row.iter_mut().for_each(|v| *v = *v * mul[k] + add[k]);
    });
    let mut outs = vec![build(&shape, data, xt.dtype())?];
    // Inference leaves the running statistics unchanged.
    for i in [3, 4] {
        outs.push(input(inputs, i)?.clone());
    }
    outs.truncate(ctx.node.outputs.len().max(1));
    Ok(outs)
}

fn instance_norm(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let xt = input(inputs, 0)?;
    let x = f32_of(xt)?;
    let shape = x.shape().to_vec();
    let (_, c, rest) = nc_rest(&shape, "InstanceNormalization")?;
    let eps = ctx.node.float_or("epsilon", 1e-5)?;
    let scale = channel_param(input(inputs, 1)?, c, "scale")?;
    let bias = channel_param(input(inputs, 2)?, c, "B")?;
    let mut data: Vec<f32> = to_vec(&x);
    for_rows(&mut data, rest.max(1), |i, row| {
        let k = i % c;
        let (m, v) = mean_var(row);
        let mul = scale[k] / (v + eps).sqrt();
        row.iter_mut().for_each(|x| *x = (*x - m) * mul + bias[k]);
    });
    Ok(vec![build(&shape, data, xt.dtype())?])
}

fn group_norm(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let xt = input(inputs, 0)?;
    let x = f32_of(xt)?;
    let shape = x.shape().to_vec();
    let (_, c, rest) = nc_rest(&shape, "GroupNormalization")?;
    let eps = ctx.node.float_or("epsilon", 1e-5)?;
    let g = ctx.node.int_req("num_groups")?;
    if g < 1 || !c.is_multiple_of(g as usize) {
        return Err(invalid!("num_groups {g} does not divide the {c} channels"));
    }
    let g = g as usize;
    // Opset 18 has one scale per group, opset 21 one per channel.
    let per = if f32_of(input(inputs, 1)?)?.len() == c {
        c
    } else {
        g
    };
    let scale = channel_param(input(inputs, 1)?, per, "scale")?;
    let bias = channel_param(input(inputs, 2)?, per, "bias")?;
    let cg = c / g;
    let mut data: Vec<f32> = to_vec(&x);
    for_rows(&mut data, (cg * rest).max(1), |i, block| {
        let gi = i % g;
        let (m, v) = mean_var(block);
        let inv = 1.0 / (v + eps).sqrt();
        for (ci, plane) in block.chunks_mut(rest.max(1)).enumerate() {
            let k = if per == c { gi * cg + ci } else { gi };
            let (s, b) = (scale[k], bias[k]);
            plane.iter_mut().for_each(|x| *x = (*x - m) * inv * s + b);
        }
    });
    Ok(vec![build(&shape, data, xt.dtype())?])
}

/// Statistics kind of the last-axes normalizations.
#[derive(Clone, Copy, PartialEq)]
enum Stats {
    /// Mean and variance (LayerNormalization).
    MeanVar,
    /// Root mean square only (RMSNormalization).
    Rms,
}

fn layer_norm(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    last_axes_norm(ctx, inputs, Stats::MeanVar)
}

fn rms_norm(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    last_axes_norm(ctx, inputs, Stats::Rms)
}

/// What the last-axes normalizations apply to each row.
struct Norm<'a> {
    cols: usize,
    eps: f32,
    stats: Stats,
    scale: &'a [f32],
    bias: &'a [f32],
}

crate::multiversion! {
/// Normalizes the `cols`-sized rows of `data` in place, writing each row's
/// (mean, 1/stddev) to `st`.
fn normalize_rows(norm: &Norm, data: &mut [f32], st: &mut [(f32, f32)]) {
    let (Some(scale), Some(bias)) = (norm.scale.get(..norm.cols), norm.bias.get(..norm.cols)) else {
        return; // no rows: the normalized dims are empty
    };
    for (row, s) in data.chunks_exact_mut(norm.cols).zip(st.iter_mut()) {
        let (m, inv) = match norm.stats {
            Stats::MeanVar => {
                let (m, v) = mean_var(row);
                (m, 1.0 / (v + norm.eps).sqrt())
            }
            Stats::Rms => {
                let ms = sum_f64(row, |x| x * x) / norm.cols as f64;
                (0.0, 1.0 / (ms as f32 + norm.eps).sqrt())
            }
        };
        *s = (m, inv);
        for ((v, &g), &b) in row.iter_mut().zip(scale).zip(bias) {
            *v = (*v - m) * inv * g + b;
        }
    }
}
}

/// Normalizes over the dims from `axis` on; outputs Y and, for LayerNorm,
/// Mean and InvStdDev (stash type float32 unless `stash_type` says otherwise).
fn last_axes_norm(ctx: &OpCtx, inputs: &[Option<&Tensor>], stats: Stats) -> OpResult<Vec<Tensor>> {
    let xt = input(inputs, 0)?;
    let x = f32_of(xt)?;
    let shape = x.shape().to_vec();
    let axis = norm_axis(ctx.node.int_or("axis", -1)?, shape.len())?;
    let eps = ctx.node.float_or("epsilon", 1e-5)?;
    let cols: usize = shape[axis..].iter().product();
    let scale = param(Some(input(inputs, 1)?), &shape[axis..], "scale")?.unwrap_or_default();
    let bias = if stats == Stats::MeanVar {
        param(opt_input(inputs, 2), &shape[axis..], "bias")?
    } else {
        None
    };
    let mut data: Vec<f32> = to_vec(&x);
    let cols = cols.max(1);
    let rows = data.len() / cols;
    let bias = bias.unwrap_or_else(|| vec![0.0; cols]);
    let mut st = vec![(0f32, 0f32); rows];
    let norm = Norm {
        cols,
        eps,
        stats,
        scale: &scale,
        bias: &bias,
    };
    // Blocks of whole rows, in parallel when the tensor is large.
    let rows_per_block = ((1 << 14) / cols).max(1);
    if crate::threads::kernel_threads() > 1 && data.len() >= 1 << 16 && rows > rows_per_block {
        data.par_chunks_mut(rows_per_block * cols)
            .zip(st.par_chunks_mut(rows_per_block))
            .for_each(|(d, s)| normalize_rows(&norm, d, s));
    } else {
        normalize_rows(&norm, &mut data, &mut st);
    }
    let mut outs = vec![build(&shape, data, xt.dtype())?];
    if stats == Stats::MeanVar && ctx.node.outputs.len() > 1 {
        let stash = if ctx.node.int_or("stash_type", 1)? == 1 {
            DType::F32
        } else {
            xt.dtype()
        };
        let mut sshape = shape[..axis].to_vec();
        sshape.resize(shape.len(), 1);
        outs.push(build(&sshape, st.iter().map(|s| s.0).collect(), stash)?);
        outs.push(build(&sshape, st.iter().map(|s| s.1).collect(), stash)?);
    }
    Ok(outs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{assert_close, data, node, run, t};
    use hb_ir::Attr;

    #[test]
    fn layer_norm_by_hand() {
        // Rows [1,2,3] and [2,4,6]: mean 2 / 4, var 2/3 / 8/3.
        let x = t(&[2, 3], vec![1.0, 2.0, 3.0, 2.0, 4.0, 6.0]);
        let s = t(&[3], vec![1.0, 2.0, 1.0]);
        let b = t(&[3], vec![0.0, 0.0, 1.0]);
        let n = node("LayerNormalization", vec![("epsilon", Attr::Float(0.0))]);
        let mut n = n;
        n.outputs = vec!["y".into(), "m".into(), "i".into()];
        let y = run(layer_norm, &n, 17, &[Some(&x), Some(&s), Some(&b)]).unwrap();
        let k = (1.5f32).sqrt(); // 1 / sqrt(2/3)
        assert_close(&data(&y[0]), &[-k, 0.0, 1.0 + k, -k, 0.0, 1.0 + k], 1e-5);
        assert_close(&data(&y[1]), &[2.0, 4.0], 1e-6);
        assert_eq!(y[2].shape(), &[2, 1]);
        assert_close(&data(&y[2]), &[k, k / 2.0], 1e-5);
    }

    /// Row-by-row f64 reference of LayerNormalization / RMSNormalization.
    fn reference(x: &[f32], cols: usize, g: &[f32], b: &[f32], rms: bool) -> Vec<f32> {
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(cols) {
            let n = cols as f64;
            let mean = if rms {
                0.0
            } else {
                row.iter().map(|&v| v as f64).sum::<f64>() / n
            };
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let inv = 1.0 / (var + 1e-5).sqrt();
            for (j, &v) in row.iter().enumerate() {
                out.push(((v as f64 - mean) * inv * g[j] as f64 + b[j] as f64) as f32);
            }
        }
        out
    }

    #[test]
    fn last_axes_norms_match_a_row_by_row_reference() {
        // 640 rows of 130: large enough for the blocked parallel path, and
        // a row length with a tail after the 8-lane sums.
        for (rows, cols) in [(640usize, 130usize), (7, 3), (896, 32)] {
            let x: Vec<f32> = crate::kernels::testutil::rand_vals(rows * cols, 7)
                .iter()
                .enumerate()
                .map(|(i, v)| v * 4.0 + (i / cols) as f32 * 0.01)
                .collect();
            let g: Vec<f32> = (0..cols).map(|j| 0.5 + j as f32 * 0.01).collect();
            let b: Vec<f32> = (0..cols).map(|j| j as f32 * -0.02).collect();
            let xt = t(&[rows, cols], x.clone());
            let (gt, bt) = (t(&[cols], g.clone()), t(&[cols], b.clone()));
            let n = node("LayerNormalization", vec![]);
            let y = run(layer_norm, &n, 17, &[Some(&xt), Some(&gt), Some(&bt)]).unwrap();
            assert_close(&data(&y[0]), &reference(&x, cols, &g, &b, false), 1e-4);
            let n = node("RMSNormalization", vec![]);
            let y = run(rms_norm, &n, 23, &[Some(&xt), Some(&gt)]).unwrap();
            let zero = vec![0.0; cols];
            assert_close(&data(&y[0]), &reference(&x, cols, &g, &zero, true), 1e-4);
        }
        // Empty normalized dims: an empty output, no panic.
        let x = t(&[2, 0], vec![]);
        let g = t(&[0], vec![]);
        let n = node("LayerNormalization", vec![]);
        let y = run(layer_norm, &n, 17, &[Some(&x), Some(&g)]).unwrap();
        assert_eq!(y[0].shape(), &[2, 0]);
    }

    #[test]
    fn training_mode_and_bad_params_are_errors() {
        let x = t(&[1, 2, 2], vec![0.0; 4]);
        let p = t(&[2], vec![1.0; 2]);
        let n = node("BatchNormalization", vec![("training_mode", Attr::Int(1))]);
        assert!(run(
            batch_norm,
            &n,
            15,
            &[Some(&x), Some(&p), Some(&p), Some(&p), Some(&p)]
        )
        .is_err());
        let q = t(&[3], vec![1.0; 3]);
        let n = node("BatchNormalization", vec![]);
        assert!(run(
            batch_norm,
            &n,
            15,
            &[Some(&x), Some(&q), Some(&q), Some(&q), Some(&q)]
        )
        .is_err());
        let n = node("GroupNormalization", vec![("num_groups", Attr::Int(3))]);
        assert!(run(group_norm, &n, 21, &[Some(&x), Some(&p), Some(&p)]).is_err());
    }
}
