//! Conv (1-D/2-D/3-D, groups, dilations, strides, pads, auto_pad, bias):
//! im2col + GEMM, pointwise convolutions as a direct GEMM, and depthwise
//! convolutions as a direct loop.

use crate::error::OpResult;
use crate::invalid;
use crate::kernels::floatio::{contiguous, f32_of, to_dtype};
use crate::kernels::gemm::{for_each_chunk, sgemm, Mat};
use crate::kernels::spatial::{Geom, WindowAttrs};
use crate::kernels::util::{input, one, opt_input};
use crate::registry::{OpCtx, Registry};
use hb_tensor::Tensor;
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

/// Registers Conv.
pub fn register(r: &mut Registry) {
    r.register("Conv", conv);
}

fn conv(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let xt = input(inputs, 0)?;
    let x = f32_of(xt)?;
    let w = f32_of(input(inputs, 1)?)?;
    let b = opt_input(inputs, 2).map(f32_of).transpose()?;
    let group = ctx.node.int_or("group", 1)?;
    let y = conv_f32(ctx, &x, &w, b.as_deref(), group)?;
    one(to_dtype(y, xt.dtype())?)
}

/// Sizes of one convolution.
#[derive(Debug, Clone, Copy)]
pub struct ConvDims {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Groups.
    pub group: usize,
    /// Window geometry.
    pub geom: Geom,
}

/// Checks `group` against channel counts and returns it as usize.
pub fn check_group(group: i64, cin: usize, cout: usize) -> OpResult<usize> {
    if group < 1 {
        return Err(invalid!("group must be positive, got {group}"));
    }
    let g = group as usize;
    if !cin.is_multiple_of(g) || !cout.is_multiple_of(g) {
        return Err(invalid!(
            "channels ({cin} in, {cout} out) are not divisible by group {g}"
        ));
    }
    Ok(g)
}

/// Checks an optional bias holds `c` values and returns them.
pub fn bias_values(b: Option<&ArrayD<f32>>, c: usize) -> OpResult<Option<Vec<f32>>> {
    match b {
        None => Ok(None),
        Some(b) if b.len() == c => Ok(Some(b.iter().copied().collect())),
        Some(b) => Err(invalid!("bias has shape {:?}, expected [{c}]", b.shape())),
    }
}

/// Adds `bias[c]` to every element of channel plane `c` of `out` (planes of `plane` elements).
pub fn add_bias(out: &mut [f32], bias: Option<&[f32]>, plane: usize) {
    let (Some(bias), true) = (bias, plane > 0) else {
        return;
    };
    for (i, p) in out.chunks_mut(plane).enumerate() {
        let v = bias[i % bias.len()];
        p.iter_mut().for_each(|x| *x += v);
    }
}

/// Conv on f32 arrays: `x` is `[N, C, spatial...]`, `w` is `[M, C/group, kernel...]`.
pub fn conv_f32(
    ctx: &OpCtx,
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    b: Option<&ArrayD<f32>>,
    group: i64,
) -> OpResult<ArrayD<f32>> {
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(invalid!(
            "input {xs:?} and weight {ws:?} must have the same rank, at least 3"
        ));
    }
    let (n, cin, cout) = (xs[0], xs[1], ws[0]);
    let group = check_group(group, cin, cout)?;
    if ws[1] * group != cin {
        return Err(invalid!(
            "weight {ws:?} expects {} input channels, input has {cin}",
            ws[1] * group
        ));
    }
    let attrs = WindowAttrs::read(ctx, xs.len() - 2, Some(ws[2..].to_vec()))?;
    if attrs.kernel != ws[2..] {
        return Err(invalid!(
            "kernel_shape {:?} does not match weight {ws:?}",
            attrs.kernel
        ));
    }
    let (geom, out_sp) = Geom::new(&attrs, &xs[2..], false)?;
    let bias = bias_values(b, cout)?;
    let d = ConvDims {
        n,
        cin,
        cout,
        group,
        geom,
    };
    let mut out = vec![0f32; n * cout * geom.out_len()];
    let (xd, wd) = (contiguous(x), contiguous(w));
    if group > 1 && group == cin && cout == cin {
        depthwise(&d, &xd, &wd, &mut out);
    } else {
        conv_gemm(&d, &xd, &wd, &mut out)?;
    }
    add_bias(&mut out, bias.as_deref(), geom.out_len());
    let mut shape = vec![n, cout];
    shape.extend(out_sp);
    ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| invalid!("{e}"))
}

/// True when the conv reads its input directly as the GEMM right operand.
fn is_pointwise(g: &Geom) -> bool {
    g.k_len() == 1 && g.strides == [1; 3] && g.pad == [0; 3] && g.input == g.out
}

fn conv_gemm(d: &ConvDims, x: &[f32], w: &[f32], out: &mut [f32]) -> OpResult<()> {
    let g = &d.geom;
    let (cin_g, cout_g) = (d.cin / d.group, d.cout / d.group);
    let (kl, ol, il) = (g.k_len(), g.out_len(), g.in_len());
    let rows = cin_g * kl;
    let pointwise = is_pointwise(g);
    let work = d.cout * rows * ol;
    for_each_chunk(out, d.cout * ol, work, |b, out_b| {
        let xb = x.get(b * d.cin * il..(b + 1) * d.cin * il).unwrap_or(&[]);
        let mut col = if pointwise {
            Vec::new()
        } else {
            vec![0f32; rows * ol]
        };
        for gi in 0..d.group {
            let xg = xb
                .get(gi * cin_g * il..(gi + 1) * cin_g * il)
                .unwrap_or(&[]);
            let wg = w
                .get(gi * cout_g * rows..(gi + 1) * cout_g * rows)
                .unwrap_or(&[]);
            let rhs = if pointwise {
                xg
            } else {
                im2col(g, xg, &mut col);
                &col
            };
            let og = &mut out_b[gi * cout_g * ol..(gi + 1) * cout_g * ol];
            sgemm(
                1.0,
                Mat::row_major(wg, cout_g, rows),
                Mat::row_major(rhs, rows, ol),
                0.0,
                og,
            )?;
        }
        Ok(())
    })
}

/// Splits a kernel-position index into (kd, kh, kw).
#[inline]
fn kernel_pos(g: &Geom, k: usize) -> [usize; 3] {
    let kw = k % g.kernel[2];
    let kh = (k / g.kernel[2]) % g.kernel[1];
    let kd = k / (g.kernel[2] * g.kernel[1]);
    [kd, kh, kw]
}

/// Fills `col` (`channels·K × out_len`, row-major) from the channel planes in `x`.
fn im2col(g: &Geom, x: &[f32], col: &mut [f32]) {
    let (kl, ol, il) = (g.k_len(), g.out_len(), g.in_len());
    let fill = |r: usize, row: &mut [f32]| {
        let c = r / kl;
        let plane = x.get(c * il..(c + 1) * il).unwrap_or(&[]);
        im2col_row(g, plane, kernel_pos(g, r % kl), row);
    };
    if rayon::current_num_threads() > 1 && col.len() >= 1 << 16 {
        col.par_chunks_mut(ol)
            .enumerate()
            .for_each(|(r, row)| fill(r, row));
    } else {
        col.chunks_mut(ol)
            .enumerate()
            .for_each(|(r, row)| fill(r, row));
    }
}

/// One im2col row: the input values seen by kernel offset `k` at every output position.
fn im2col_row(g: &Geom, plane: &[f32], k: [usize; 3], row: &mut [f32]) {
    row.fill(0.0);
    let [_, ih_n, iw_n] = g.input;
    let [_, oh_n, ow_n] = g.out;
    let (lo, hi) = g.valid_range(2, k[2]);
    let (sw, off) = (g.strides[2], k[2] * g.dilations[2]);
    for od in 0..g.out[0] {
        let Some(id) = g.coord(0, od, k[0]) else {
            continue;
        };
        for oh in 0..oh_n {
            let Some(ih) = g.coord(1, oh, k[1]) else {
                continue;
            };
            let src = (id * ih_n + ih) * iw_n;
            let dst = (od * oh_n + oh) * ow_n;
            for ow in lo..hi {
                let iw = ow * sw + off - g.pad[2];
                row[dst + ow] = plane.get(src + iw).copied().unwrap_or(0.0);
            }
        }
    }
}

/// Depthwise conv (group == C_in == C_out) as a direct loop per channel plane.
fn depthwise(d: &ConvDims, x: &[f32], w: &[f32], out: &mut [f32]) {
    let g = &d.geom;
    let (kl, ol, il) = (g.k_len(), g.out_len(), g.in_len());
    let run = |p: usize, o: &mut [f32]| {
        let c = p % d.cin;
        let plane = x.get(p * il..(p + 1) * il).unwrap_or(&[]);
        let wc = w.get(c * kl..(c + 1) * kl).unwrap_or(&[]);
        for (k, &wv) in wc.iter().enumerate() {
            accumulate_tap(g, plane, kernel_pos(g, k), wv, o);
        }
    };
    if rayon::current_num_threads() > 1 && out.len() * kl >= 1 << 16 {
        out.par_chunks_mut(ol)
            .enumerate()
            .for_each(|(p, o)| run(p, o));
    } else {
        out.chunks_mut(ol).enumerate().for_each(|(p, o)| run(p, o));
    }
}

/// `out += wv * x[window position k]` over every output position.
fn accumulate_tap(g: &Geom, plane: &[f32], k: [usize; 3], wv: f32, out: &mut [f32]) {
    let [_, ih_n, iw_n] = g.input;
    let [_, oh_n, ow_n] = g.out;
    let (lo, hi) = g.valid_range(2, k[2]);
    if lo >= hi {
        return;
    }
    let (sw, off) = (g.strides[2], k[2] * g.dilations[2]);
    for od in 0..g.out[0] {
        let Some(id) = g.coord(0, od, k[0]) else {
            continue;
        };
        for oh in 0..oh_n {
            let Some(ih) = g.coord(1, oh, k[1]) else {
                continue;
            };
            let src = (id * ih_n + ih) * iw_n + lo * sw + off - g.pad[2];
            let dst = (od * oh_n + oh) * ow_n;
            let (Some(o), Some(s)) = (out.get_mut(dst + lo..dst + hi), plane.get(src..)) else {
                continue;
            };
            if sw == 1 {
                o.iter_mut().zip(s).for_each(|(o, &s)| *o += wv * s);
            } else {
                o.iter_mut()
                    .zip(s.iter().step_by(sw))
                    .for_each(|(o, &s)| *o += wv * s);
            }
        }
    }
}
