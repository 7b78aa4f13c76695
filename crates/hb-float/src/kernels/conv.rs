//! Conv (1-D/2-D/3-D, groups, dilations, strides, pads, auto_pad, bias):
//! im2col + GEMM, pointwise convolutions as a direct GEMM, and depthwise
//! convolutions as a direct loop.

use crate::error::OpResult;
use crate::invalid;
use crate::kernels::floatio::{contiguous, f32_of, to_dtype, to_vec};
use crate::kernels::gemm::{for_each_chunk, sgemm, Mat};
use crate::kernels::spatial::{Geom, WindowAttrs};
use crate::kernels::util::{input, one, opt_input};
use crate::kernels::{conv_direct, conv_pointwise, winograd};
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
        Some(b) if b.len() == c => Ok(Some(to_vec(b))),
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
    if crate::probe::skipping_arithmetic() {
        out.fill(crate::probe::FILL);
    } else if group > 1 && group == cin && cout == cin {
        depthwise(&d, &xd, &wd, &mut out);
        add_bias(&mut out, bias.as_deref(), geom.out_len());
    } else {
        let (cin_g, cout_g) = (cin / group, cout / group);
        let direct = if is_pointwise(&geom) && conv_pointwise::available() {
            for_each_group(&d, &xd, &wd, bias.as_deref(), &mut out, pointwise_group)
        } else if winograd::applicable(&geom, cin_g, cout_g) {
            for_each_group(&d, &xd, &wd, bias.as_deref(), &mut out, winograd::conv3x3)
        } else {
            !is_pointwise(&geom)
                && conv_direct::applicable(&geom, cin_g)
                && for_each_group(&d, &xd, &wd, bias.as_deref(), &mut out, conv_direct::conv2d)
        };
        if !direct {
            conv_gemm(&d, &xd, &wd, &mut out)?;
            add_bias(&mut out, bias.as_deref(), geom.out_len());
        }
    }
    let mut shape = vec![n, cout];
    shape.extend(out_sp);
    ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| invalid!("{e}"))
}

/// A kernel computing one group of one batch item, bias included:
/// `(geometry, input planes, weights, bias, input channels, output planes)`,
/// false when it declines the geometry.
type GroupKernel = fn(&Geom, &[f32], &[f32], Option<&[f32]>, usize, &mut [f32]) -> bool;

/// Every batch item and group through `kernel` (the direct or the
/// Winograd kernel); false when the kernel declined the geometry (the
/// caller then uses GEMM).
fn for_each_group(
    d: &ConvDims,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    kernel: GroupKernel,
) -> bool {
    let g = &d.geom;
    let (cin_g, cout_g) = (d.cin / d.group, d.cout / d.group);
    let (ol, il) = (g.out_len(), g.in_len());
    let wl = cin_g * g.k_len();
    for (b, out_b) in out.chunks_mut(d.cout * ol).enumerate() {
        for (gi, og) in out_b.chunks_mut(cout_g * ol).enumerate() {
            let c0 = b * d.cin + gi * cin_g;
            let xg = &x[c0 * il..(c0 + cin_g) * il];
            let wg = &w[gi * cout_g * wl..(gi + 1) * cout_g * wl];
            let bg = bias.map(|bv| &bv[gi * cout_g..(gi + 1) * cout_g]);
            if !kernel(g, xg, wg, bg, cin_g, og) {
                return false;
            }
        }
    }
    true
}

/// [`conv_pointwise::conv1x1`] as a [`GroupKernel`].
fn pointwise_group(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    cin: usize,
    out: &mut [f32],
) -> bool {
    conv_pointwise::conv1x1(x, w, bias, cin, g.out_len(), out)
}

/// True when the conv reads its input directly as the GEMM right operand.
fn is_pointwise(g: &Geom) -> bool {
    g.k_len() == 1 && g.strides == [1; 3] && g.pad == [0; 3] && g.input == g.out
}

#[doc(hidden)]
pub fn conv_gemm(d: &ConvDims, x: &[f32], w: &[f32], out: &mut [f32]) -> OpResult<()> {
    let g = &d.geom;
    let (cin_g, cout_g) = (d.cin / d.group, d.cout / d.group);
    let (ol, il) = (g.out_len(), g.in_len());
    let rows = cin_g * g.k_len();
    let pointwise = is_pointwise(g);
    let work = d.cout * rows * ol;
    for_each_chunk(out, d.cout * ol, work, |b, out_b| {
        let xb = x.get(b * d.cin * il..(b + 1) * d.cin * il).unwrap_or(&[]);
        for gi in 0..d.group {
            let xg = xb
                .get(gi * cin_g * il..(gi + 1) * cin_g * il)
                .unwrap_or(&[]);
            let wg = Mat::row_major(w.get(gi * cout_g * rows..).unwrap_or(&[]), cout_g, rows);
            let og = &mut out_b[gi * cout_g * ol..(gi + 1) * cout_g * ol];
            if pointwise {
                sgemm(1.0, wg, Mat::row_major(xg, rows, ol), 0.0, og)?;
            } else {
                conv_tiles(g, wg, xg, og)?;
            }
        }
        Ok(())
    })
}

/// Output positions per im2col tile: the tile's columns stay in cache.
fn tile_width(rows: usize, ol: usize) -> usize {
    (TILE_ELEMS / rows.max(1)).clamp(64, ol.max(64))
}

/// Elements of one im2col tile.
const TILE_ELEMS: usize = 1 << 16;

/// `out (M × L) = w (M × rows) · im2col(x)`, one tile of output positions
/// at a time (tiles run in parallel when there is enough work).
fn conv_tiles(g: &Geom, w: Mat, x: &[f32], out: &mut [f32]) -> OpResult<()> {
    let (m, rows, ol) = (w.rows, w.cols, g.out_len());
    let tw = tile_width(rows, ol);
    let tiles = ol.div_ceil(tw);
    if tiles <= 1 {
        // One tile: the product goes straight into `out`.
        let mut col = vec![0f32; rows * ol];
        im2col(g, x, 0, ol, &mut col);
        return sgemm(1.0, w, Mat::row_major(&col, rows, ol), 0.0, out);
    }
    let run = |t: usize| -> OpResult<Vec<f32>> {
        let (p0, p1) = (t * tw, ((t + 1) * tw).min(ol));
        let n = p1 - p0;
        let mut col = vec![0f32; rows * n];
        im2col(g, x, p0, n, &mut col);
        let mut res = vec![0f32; m * n];
        sgemm(1.0, w, Mat::row_major(&col, rows, n), 0.0, &mut res)?;
        Ok(res)
    };
    let results: Vec<Vec<f32>> =
        if tiles > 1 && crate::threads::kernel_threads() > 1 && m * rows * ol >= 1 << 20 {
            (0..tiles)
                .into_par_iter()
                .map(run)
                .collect::<OpResult<_>>()?
        } else {
            (0..tiles).map(run).collect::<OpResult<_>>()?
        };
    for (t, res) in results.iter().enumerate() {
        let p0 = t * tw;
        let n = res.len() / m.max(1);
        for (r, src) in res.chunks(n.max(1)).enumerate() {
            if let Some(dst) = out.get_mut(r * ol + p0..r * ol + p0 + n) {
                dst.copy_from_slice(src);
            }
        }
    }
    Ok(())
}

/// Splits a kernel-position index into (kd, kh, kw).
#[inline]
fn kernel_pos(g: &Geom, k: usize) -> [usize; 3] {
    let kw = k % g.kernel[2];
    let kh = (k / g.kernel[2]) % g.kernel[1];
    let kd = k / (g.kernel[2] * g.kernel[1]);
    [kd, kh, kw]
}

/// Fills `col` (`channels·K × n`, row-major) with the output positions
/// `p0..p0 + n` of the channel planes in `x`.
fn im2col(g: &Geom, x: &[f32], p0: usize, n: usize, col: &mut [f32]) {
    let (kl, il) = (g.k_len(), g.in_len());
    for (r, row) in col.chunks_mut(n.max(1)).enumerate() {
        let c = r / kl;
        let plane = x.get(c * il..(c + 1) * il).unwrap_or(&[]);
        im2col_row(g, plane, kernel_pos(g, r % kl), p0, row);
    }
}

/// One im2col row: the input values seen by kernel offset `k` at output
/// positions `p0..p0 + row.len()`. Every element is written (zeros where
/// the window falls into the padding); stride-1 runs are slice copies.
fn im2col_row(g: &Geom, plane: &[f32], k: [usize; 3], p0: usize, row: &mut [f32]) {
    let [_, ih_n, iw_n] = g.input;
    let [_, oh_n, ow_n] = g.out;
    if ow_n == 0 || oh_n == 0 {
        row.fill(0.0);
        return;
    }
    let p1 = p0 + row.len();
    let (lo, hi) = g.valid_range(2, k[2]);
    let (sw, off) = (g.strides[2], k[2] * g.dilations[2]);
    for line in p0 / ow_n..p1.div_ceil(ow_n) {
        let start = line * ow_n;
        // This line's output columns inside the tile.
        let (seg_lo, seg_hi) = (p0.max(start) - start, p1.min(start + ow_n) - start);
        let Some(dst) = row.get_mut(start + seg_lo - p0..start + seg_hi - p0) else {
            continue;
        };
        let (od, oh) = (line / oh_n, line % oh_n);
        let (Some(id), Some(ih)) = (g.coord(0, od, k[0]), g.coord(1, oh, k[1])) else {
            dst.fill(0.0);
            continue;
        };
        let a = lo.clamp(seg_lo, seg_hi);
        let b = hi.clamp(a, seg_hi);
        let (pre, rest) = dst.split_at_mut(a - seg_lo);
        let (mid, post) = rest.split_at_mut(b - a);
        pre.fill(0.0);
        post.fill(0.0);
        if a == b {
            continue;
        }
        // Input column of output column `a` (in range: a >= lo).
        let s0 = (id * ih_n + ih) * iw_n + a * sw + off - g.pad[2];
        let src = plane.get(s0..).unwrap_or(&[]);
        if sw == 1 {
            match src.get(..mid.len()) {
                Some(s) => mid.copy_from_slice(s),
                None => mid.fill(0.0),
            }
        } else {
            for (d, &v) in mid.iter_mut().zip(src.iter().step_by(sw)) {
                *d = v;
            }
        }
    }
}

/// Depthwise conv (group == C_in == C_out) as a direct loop per channel plane.
fn depthwise(d: &ConvDims, x: &[f32], w: &[f32], out: &mut [f32]) {
    let g = &d.geom;
    let (kl, ol, il) = (g.k_len(), g.out_len(), g.in_len());
    let planar = conv_direct::depthwise_applicable(g);
    let run = |p: usize, o: &mut [f32]| {
        let c = p % d.cin;
        let plane = x.get(p * il..(p + 1) * il).unwrap_or(&[]);
        let wc = w.get(c * kl..(c + 1) * kl).unwrap_or(&[]);
        if planar && plane.len() == il {
            conv_direct::depthwise2d(g, plane, wc, o);
            return;
        }
        for (k, &wv) in wc.iter().enumerate() {
            accumulate_tap(g, plane, kernel_pos(g, k), wv, o);
        }
    };
    if crate::threads::kernel_threads() > 1 && out.len() * kl >= 1 << 16 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{assert_close, data, ints, node, rand_vals, run, t};
    use hb_ir::Attr;
    use proptest::prelude::*;

    /// Naive 2-D conv: x [N,C,H,W], w [M,C/g,KH,KW], pads [t,l,b,r].
    #[allow(clippy::too_many_arguments)]
    fn naive(
        x: &[f32],
        xs: [usize; 4],
        w: &[f32],
        ws: [usize; 4],
        g: usize,
        s: [usize; 2],
        d: [usize; 2],
        p: [usize; 4],
    ) -> (Vec<f32>, [usize; 4]) {
        let [n, c, h, wd] = xs;
        let [m, cg, kh, kw] = ws;
        let oh = (h + p[0] + p[2] - (kh - 1) * d[0] - 1) / s[0] + 1;
        let ow = (wd + p[1] + p[3] - (kw - 1) * d[1] - 1) / s[1] + 1;
        let mut out = vec![0f32; n * m * oh * ow];
        let mg = m / g;
        for b in 0..n {
            for o in 0..m {
                let gi = o / mg;
                for y in 0..oh {
                    for xx in 0..ow {
                        let mut acc = 0.0;
                        for ci in 0..cg {
                            let cin = gi * cg + ci;
                            for i in 0..kh {
                                for j in 0..kw {
                                    let iy = (y * s[0] + i * d[0]) as isize - p[0] as isize;
                                    let ix = (xx * s[1] + j * d[1]) as isize - p[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let xv =
                                        x[((b * c + cin) * h + iy as usize) * wd + ix as usize];
                                    acc += xv * w[((o * cg + ci) * kh + i) * kw + j];
                                }
                            }
                        }
                        out[((b * m + o) * oh + y) * ow + xx] = acc;
                    }
                }
            }
        }
        (out, [n, m, oh, ow])
    }

    #[test]
    fn hand_computed_padding_stride() {
        // 1x1x3x3 input 1..9, 2x2 kernel of ones, pad 1, stride 2.
        let x = t(&[1, 1, 3, 3], (1..=9).map(|v| v as f32).collect());
        let w = t(&[1, 1, 2, 2], vec![1.0; 4]);
        let b = t(&[1], vec![0.5]);
        let n = node(
            "Conv",
            vec![("pads", ints(&[1, 1, 1, 1])), ("strides", ints(&[2, 2]))],
        );
        let y = run(conv, &n, 17, &[Some(&x), Some(&w), Some(&b)]).unwrap();
        assert_eq!(y[0].shape(), &[1, 1, 2, 2]);
        // windows: {1}, {2,3}, {4,7}, {5,6,8,9}
        assert_eq!(data(&y[0]), vec![1.5, 5.5, 11.5, 28.5]);
    }

    #[test]
    fn depthwise_and_groups_match_naive() {
        for (c, m, g) in [(4, 4, 4), (4, 6, 2), (3, 2, 1)] {
            let window = Window {
                strides: [1, 2],
                dilations: [2, 1],
                pads: [1, 0, 2, 1],
            };
            check_conv([2, c, 7, 6], [m, c / g, 3, 3], g, window, [1, 2], 1e-5);
        }
    }

    /// A 2-D Conv window: strides, dilations and ONNX pads
    /// `[top, left, bottom, right]`.
    struct Window {
        strides: [usize; 2],
        dilations: [usize; 2],
        pads: [usize; 4],
    }

    /// Runs a 2-D Conv (no bias) on random data and checks it against
    /// [`naive`].
    fn check_conv(
        xs: [usize; 4],
        ws: [usize; 4],
        group: usize,
        window: Window,
        seeds: [u64; 2],
        tol: f32,
    ) {
        let x = rand_vals(xs.iter().product(), seeds[0]);
        let w = rand_vals(ws.iter().product(), seeds[1]);
        let as_ints = |v: &[usize]| ints(&v.iter().map(|&a| a as i64).collect::<Vec<_>>());
        let n = node(
            "Conv",
            vec![
                ("group", Attr::Int(group as i64)),
                ("pads", as_ints(&window.pads)),
                ("dilations", as_ints(&window.dilations)),
                ("strides", as_ints(&window.strides)),
            ],
        );
        let y = run(
            conv,
            &n,
            17,
            &[Some(&t(&xs, x.clone())), Some(&t(&ws, w.clone()))],
        )
        .unwrap();
        let (want, shape) = naive(
            &x,
            xs,
            &w,
            ws,
            group,
            window.strides,
            window.dilations,
            window.pads,
        );
        assert_eq!(y[0].shape(), &shape, "{xs:?} {ws:?}");
        assert_close(&data(&y[0]), &want, tol);
    }

    /// [`check_conv`] with square strides and dilations and the same pad on
    /// every side.
    fn check_square_conv(
        xs: [usize; 4],
        ws: [usize; 4],
        group: usize,
        [s, d, p]: [usize; 3],
        seeds: [u64; 2],
        tol: f32,
    ) {
        let window = Window {
            strides: [s, s],
            dilations: [d, d],
            pads: [p; 4],
        };
        check_conv(xs, ws, group, window, seeds, tol);
    }

    #[test]
    fn wide_depthwise_rows_match_naive() {
        // Rows of ≥ 128 outputs (two or more four-vector steps) plus a masked
        // tail; strides, dilation, 5×5 and 3×3 windows, uneven pads.
        for (h, w, k, s, d, p) in [
            (5, 150, 3, 1, 1, 1),
            (6, 291, 3, 2, 1, 1),
            (4, 200, 5, 1, 2, 3),
        ] {
            let c = 3;
            check_square_conv([1, c, h, w], [c, 1, k, k], c, [s, d, p], [11, 12], 1e-5);
        }
    }

    #[test]
    fn multi_tile_im2col_matches_naive() {
        // rows·positions exceed one im2col tile, and tiles end mid-line.
        for (c, h, s, d, p) in [(16, 40, 1, 1, 1), (16, 37, 2, 2, 2), (9, 61, 1, 3, 0)] {
            check_square_conv([1, c, h, h + 3], [5, c, 3, 3], 1, [s, d, p], [3, 4], 1e-4);
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn direct_kernel_matches_naive() {
        // (n, c, m, g, h, w, kh, kw, s, d, pads t,l,b,r, bias)
        let cases: [(
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            [usize; 4],
            bool,
        ); 9] = [
            (1, 16, 16, 1, 16, 16, 3, 3, 1, 1, [1, 1, 1, 1], true),
            (1, 16, 32, 1, 16, 16, 3, 3, 2, 1, [1, 1, 1, 1], true),
            (2, 5, 7, 1, 9, 13, 3, 3, 1, 1, [1, 1, 1, 1], true),
            (1, 6, 10, 2, 11, 17, 3, 2, 1, 2, [0, 2, 1, 1], true),
            (1, 3, 5, 1, 20, 31, 5, 5, 2, 1, [2, 1, 2, 3], false),
            (2, 8, 6, 2, 7, 8, 3, 3, 1, 1, [1, 1, 1, 1], true),
            (1, 4, 9, 1, 12, 49, 2, 3, 3, 2, [1, 0, 0, 2], true),
            (1, 32, 32, 1, 8, 8, 3, 3, 1, 1, [1, 1, 1, 1], true),
            (1, 3, 16, 1, 32, 32, 3, 3, 1, 1, [1, 1, 1, 1], true),
        ];
        for (n, c, m, g, h, wd, kh, kw, s, d, p, with_bias) in cases {
            let xs = [n, c, h, wd];
            let ws = [m, c / g, kh, kw];
            let x = rand_vals(xs.iter().product(), 11);
            let w = rand_vals(ws.iter().product(), 12);
            let bv = rand_vals(m, 13);
            let nd = node(
                "Conv",
                vec![
                    ("group", Attr::Int(g as i64)),
                    ("pads", ints(&p.map(|v| v as i64))),
                    ("dilations", ints(&[d as i64, d as i64])),
                    ("strides", ints(&[s as i64, s as i64])),
                ],
            );
            let (xt, wt, bt) = (t(&xs, x.clone()), t(&ws, w.clone()), t(&[m], bv.clone()));
            let ins = [Some(&xt), Some(&wt), with_bias.then_some(&bt)];
            let y = run(conv, &nd, 17, &ins).unwrap();
            let (mut want, shape) = naive(&x, xs, &w, ws, g, [s, s], [d, d], p);
            if with_bias {
                let ol = shape[2] * shape[3];
                for (i, v) in want.iter_mut().enumerate() {
                    *v += bv[(i / ol) % m];
                }
            }
            assert_eq!(y[0].shape(), &shape);
            assert_close(&data(&y[0]), &want, 1e-4);
        }
    }

    #[test]
    fn errors_instead_of_panics() {
        let x = t(&[1, 3, 4, 4], vec![0.0; 48]);
        let w = t(&[4, 2, 3, 3], vec![0.0; 72]);
        let n = node("Conv", vec![("group", Attr::Int(2))]);
        assert!(
            run(conv, &n, 17, &[Some(&x), Some(&w)]).is_err(),
            "3 channels, group 2"
        );
        let w = t(&[1, 3, 5, 5], vec![0.0; 75]);
        assert!(run(conv, &node("Conv", vec![]), 17, &[Some(&x), Some(&w)]).is_err());
        assert!(run(conv, &node("Conv", vec![]), 17, &[Some(&x)]).is_err());
        let b = t(&[2], vec![0.0; 2]);
        let w = t(&[1, 3, 3, 3], vec![0.0; 27]);
        assert!(run(
            conv,
            &node("Conv", vec![]),
            17,
            &[Some(&x), Some(&w), Some(&b)]
        )
        .is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes_match_naive(
            n in 1usize..3, cg in 1usize..3, mg in 1usize..3, g in 1usize..3,
            h in 1usize..8, w in 1usize..8, kh in 1usize..4, kw in 1usize..4,
            s in 1usize..3, d in 1usize..3, p in 0usize..3, seed in 0u64..1000,
        ) {
            let (c, m) = (cg * g, mg * g);
            let xs = [n, c, h, w];
            let ws = [m, cg, kh, kw];
            prop_assume!(h + 2 * p > (kh - 1) * d && w + 2 * p > (kw - 1) * d);
            let x = rand_vals(xs.iter().product(), seed);
            let wv = rand_vals(ws.iter().product(), seed + 7);
            let pi = p as i64;
            let nd = node("Conv", vec![
                ("group", Attr::Int(g as i64)),
                ("pads", ints(&[pi, pi, pi, pi])),
                ("dilations", ints(&[d as i64, d as i64])),
                ("strides", ints(&[s as i64, s as i64])),
            ]);
            let y = run(conv, &nd, 17, &[Some(&t(&xs, x.clone())), Some(&t(&ws, wv.clone()))]).unwrap();
            let (want, shape) = naive(&x, xs, &wv, ws, g, [s, s], [d, d], [p, p, p, p]);
            prop_assert_eq!(y[0].shape(), &shape);
            assert_close(&data(&y[0]), &want, 1e-4);
        }
    }
}
