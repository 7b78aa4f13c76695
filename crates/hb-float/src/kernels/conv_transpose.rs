//! ConvTranspose (groups, dilations, strides, pads, output_padding,
//! output_shape, auto_pad): GEMM into columns, then col2im.

use crate::error::OpResult;
use crate::invalid;
use crate::kernels::conv::{add_bias, bias_values, check_group};
use crate::kernels::floatio::{contiguous, f32_of, to_dtype};
use crate::kernels::gemm::{for_each_chunk, sgemm, Mat};
use crate::kernels::scratch::with_scratch;
use crate::kernels::spatial::{to3, WindowAttrs, SD};
use crate::kernels::util::{input, one, opt_input};
use crate::registry::{OpCtx, Registry};
use hb_tensor::Tensor;
use ndarray::{ArrayD, IxDyn};

/// Registers ConvTranspose.
pub fn register(r: &mut Registry) {
    r.register("ConvTranspose", conv_transpose);
}

fn conv_transpose(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let xt = input(inputs, 0)?;
    let x = f32_of(xt)?;
    let w = f32_of(input(inputs, 1)?)?;
    let b = opt_input(inputs, 2).map(f32_of).transpose()?;
    let y = conv_transpose_f32(ctx, &x, &w, b.as_deref())?;
    one(to_dtype(y, xt.dtype())?)
}

/// Geometry of a transposed convolution, normalized to three spatial dims.
#[derive(Debug, Clone, Copy)]
struct TGeom {
    input: [usize; SD],
    out: [usize; SD],
    kernel: [usize; SD],
    strides: [usize; SD],
    dilations: [usize; SD],
    /// Begin pads (negative when output_shape asks for more than the natural size).
    pad: [isize; SD],
}

/// Output sizes and begin pads from the attributes and spatial input sizes.
fn output_geometry(
    ctx: &OpCtx,
    a: &WindowAttrs,
    input: &[usize],
) -> OpResult<(Vec<usize>, Vec<isize>)> {
    let r = input.len();
    let op = match ctx.node.get_ints("output_padding")? {
        None => vec![0; r],
        Some(v) if v.len() == r && v.iter().all(|&x| x >= 0) => {
            v.iter().map(|&x| x as usize).collect()
        }
        Some(v) => {
            return Err(invalid!(
                "output_padding {v:?} must hold {r} non-negative values"
            ))
        }
    };
    let natural: Vec<isize> = (0..r)
        .map(|d| (a.strides[d] * (input[d].max(1) - 1) + op[d] + a.extent(d)) as isize)
        .collect();
    let requested = match ctx.node.get_ints("output_shape")? {
        Some(v) if v.len() >= r && v[v.len() - r..].iter().all(|&x| x > 0) => Some(
            v[v.len() - r..]
                .iter()
                .map(|&x| x as usize)
                .collect::<Vec<_>>(),
        ),
        Some(v) => {
            return Err(invalid!(
                "output_shape {v:?} must end with {r} positive sizes"
            ))
        }
        None if a.auto_pad.starts_with("SAME") => {
            Some((0..r).map(|d| input[d] * a.strides[d]).collect())
        }
        None => None,
    };
    if let Some(out) = requested {
        let begins = (0..r)
            .map(|d| {
                let total = natural[d] - out[d] as isize;
                if a.auto_pad == "SAME_UPPER" {
                    total.div_euclid(2)
                } else {
                    total - total.div_euclid(2)
                }
            })
            .collect();
        return Ok((out, begins));
    }
    let valid = a.auto_pad == "VALID";
    let mut out = Vec::with_capacity(r);
    let mut begins = Vec::with_capacity(r);
    for (d, nat) in natural.iter().enumerate() {
        let (pb, pe) = if valid {
            (0, 0)
        } else {
            (a.pads[d], a.pads[d + r])
        };
        let o = nat - (pb + pe) as isize;
        if o <= 0 {
            return Err(invalid!("pads leave no output along spatial dim {d}"));
        }
        out.push(o as usize);
        begins.push(pb as isize);
    }
    Ok((out, begins))
}

/// ConvTranspose on f32 arrays: `x` is `[N, C, spatial...]`, `w` is `[C, M/group, kernel...]`.
fn conv_transpose_f32(
    ctx: &OpCtx,
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    b: Option<&ArrayD<f32>>,
) -> OpResult<ArrayD<f32>> {
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(invalid!(
            "input {xs:?} and weight {ws:?} must have the same rank, at least 3"
        ));
    }
    let group = ctx.node.int_or("group", 1)?;
    let (n, cin) = (xs[0], xs[1]);
    let group = check_group(group, cin, ws[1] * group.max(1) as usize)?;
    let cout = ws[1] * group;
    if ws[0] != cin {
        return Err(invalid!(
            "weight {ws:?} expects {} input channels, input has {cin}",
            ws[0]
        ));
    }
    let attrs = WindowAttrs::read(ctx, xs.len() - 2, Some(ws[2..].to_vec()))?;
    if attrs.kernel != ws[2..] {
        return Err(invalid!(
            "kernel_shape {:?} does not match weight {ws:?}",
            attrs.kernel
        ));
    }
    let (out_sp, begins) = output_geometry(ctx, &attrs, &xs[2..])?;
    let mut pad = [0isize; SD];
    for (k, p) in begins.iter().enumerate() {
        pad[SD - begins.len() + k] = *p;
    }
    let g = TGeom {
        input: to3(&xs[2..], 1),
        out: to3(&out_sp, 1),
        kernel: to3(&attrs.kernel, 1),
        strides: to3(&attrs.strides, 1),
        dilations: to3(&attrs.dilations, 1),
        pad,
    };
    let bias = bias_values(b, cout)?;
    let ol: usize = g.out.iter().product();
    let mut out = vec![0f32; n * cout * ol];
    if crate::probe::skipping_arithmetic() {
        out.fill(crate::probe::FILL);
    } else {
        compute(
            &g,
            cin,
            cout,
            group,
            &contiguous(x),
            &contiguous(w),
            &mut out,
        )?;
        add_bias(&mut out, bias.as_deref(), ol);
    }
    let mut shape = vec![n, cout];
    shape.extend(out_sp);
    ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| invalid!("{e}"))
}

fn compute(
    g: &TGeom,
    cin: usize,
    cout: usize,
    group: usize,
    x: &[f32],
    w: &[f32],
    out: &mut [f32],
) -> OpResult<()> {
    let (cin_g, cout_g) = (cin / group, cout / group);
    let kl: usize = g.kernel.iter().product();
    let il: usize = g.input.iter().product();
    let ol: usize = g.out.iter().product();
    let rows = cout_g * kl;
    for_each_chunk(out, cout * ol, cin * rows * il, |b, out_b| {
        // sgemm with beta 0 overwrites the columns: stale values are fine.
        with_scratch(rows * il, |col| {
            for gi in 0..group {
                let xg = x
                    .get((b * cin + gi * cin_g) * il..(b * cin + (gi + 1) * cin_g) * il)
                    .unwrap_or(&[]);
                let wg = w
                    .get(gi * cin_g * rows..(gi + 1) * cin_g * rows)
                    .unwrap_or(&[]);
                sgemm(
                    1.0,
                    Mat::row_major(wg, cin_g, rows).t(),
                    Mat::row_major(xg, cin_g, il),
                    0.0,
                    col,
                )?;
                let og = &mut out_b[gi * cout_g * ol..(gi + 1) * cout_g * ol];
                for (co, plane) in og.chunks_mut(ol).enumerate() {
                    let rows_c = col.get(co * kl * il..(co + 1) * kl * il).unwrap_or(&[]);
                    col2im_channel(g, rows_c, plane);
                }
            }
            Ok(())
        })
    })
}

/// The input positions `i` in `0..n_in` whose output coordinate
/// `i·stride + off` lies in `0..n_out` (`off` = kernel offset × dilation −
/// begin pad): a range, as the coordinate grows with `i`.
fn valid_inputs(n_in: usize, n_out: usize, stride: usize, off: isize) -> std::ops::Range<usize> {
    let s = stride.max(1) as isize;
    let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
    let room = n_out as isize - off;
    let hi = if room > 0 { (room + s - 1) / s } else { 0 };
    let hi = hi.min(n_in as isize);
    lo as usize..(hi.max(lo)) as usize
}

/// Scatter-adds the `K × in_len` columns of one output channel into its
/// plane: per kernel tap, the in-range input positions of each dimension
/// are a range, so each input row adds into the output with a plain loop
/// (contiguous for stride 1, a fixed step otherwise). With stride 2 along
/// the width (undilated), two neighbouring taps fill the even and odd
/// output positions of the same span: they are added together, as one
/// contiguous interleaved row. Every output element still receives its
/// contributions in tap order, so the sums are those of tap by tap.
fn col2im_channel(g: &TGeom, cols: &[f32], plane: &mut [f32]) {
    let il: usize = g.input.iter().product();
    let kw_n = g.kernel[2];
    let taps: usize = g.kernel.iter().product();
    let pairs = g.strides[2] == 2 && g.dilations[2] == 1;
    let mut k = 0;
    while k < taps {
        let (Some(a), Some(b)) = (
            cols.get(k * il..(k + 1) * il),
            cols.get((k + 1) * il..(k + 2) * il),
        ) else {
            if let Some(a) = cols.get(k * il..(k + 1) * il) {
                add_tap(g, k, a, plane);
            }
            k += 1;
            continue;
        };
        if pairs && k % kw_n + 1 < kw_n {
            add_tap_pair(g, k, a, b, plane);
            k += 2;
        } else {
            add_tap(g, k, a, plane);
            k += 1;
        }
    }
}

/// Calls `f(src, dst, ow0)` for every input row `src` (offset in the
/// input plane) of tap `k` whose output row `dst` (offset in the output
/// plane) is in range; `ow0` is the tap's width offset (output column of
/// input column 0).
fn for_tap_rows(g: &TGeom, k: usize, mut f: impl FnMut(usize, usize, isize)) {
    let [_, kh_n, kw_n] = g.kernel;
    let [id_n, ih_n, iw_n] = g.input;
    let [od_n, oh_n, ow_n] = g.out;
    let (kd, kh, kw) = (k / (kh_n * kw_n), (k / kw_n) % kh_n, k % kw_n);
    let off = |d: usize, k: usize| (k * g.dilations[d]) as isize - g.pad[d];
    let (od0, oh0, ow0) = (off(0, kd), off(1, kh), off(2, kw));
    for id in valid_inputs(id_n, od_n, g.strides[0], od0) {
        let od = ((id * g.strides[0]) as isize + od0) as usize;
        for ih in valid_inputs(ih_n, oh_n, g.strides[1], oh0) {
            let oh = ((ih * g.strides[1]) as isize + oh0) as usize;
            f((id * ih_n + ih) * iw_n, (od * oh_n + oh) * ow_n, ow0);
        }
    }
}

/// Adds the column row of tap `k` into the plane.
fn add_tap(g: &TGeom, k: usize, row: &[f32], plane: &mut [f32]) {
    let (iw_n, ow_n) = (g.input[2], g.out[2]);
    let sw = g.strides[2].max(1);
    for_tap_rows(g, k, |src_row, dst_row, ow0| {
        let ws = valid_inputs(iw_n, ow_n, sw, ow0);
        if ws.is_empty() {
            return;
        }
        let len = ws.len();
        let src_at = src_row + ws.start;
        let dst_at = dst_row + ((ws.start * sw) as isize + ow0) as usize;
        let (Some(src), Some(dst)) = (
            row.get(src_at..src_at + len),
            plane.get_mut(dst_at..dst_at + (len - 1) * sw + 1),
        ) else {
            return;
        };
        if sw == 1 {
            for (o, &v) in dst.iter_mut().zip(src) {
                *o += v;
            }
        } else {
            for (o, &v) in dst.iter_mut().step_by(sw).zip(src) {
                *o += v;
            }
        }
    });
}

/// Adds the column rows of taps `k` and `k + 1` (neighbours along the
/// width, stride 2, undilated) into the plane: where both are in range
/// they fill one contiguous span, `a` the even and `b` the odd positions.
fn add_tap_pair(g: &TGeom, k: usize, a: &[f32], b: &[f32], plane: &mut [f32]) {
    let (iw_n, ow_n) = (g.input[2], g.out[2]);
    for_tap_rows(g, k, |src_row, dst_row, ow0| {
        let (Some(a), Some(b), Some(dst)) = (
            a.get(src_row..src_row + iw_n),
            b.get(src_row..src_row + iw_n),
            plane.get_mut(dst_row..dst_row + ow_n),
        ) else {
            return;
        };
        let (ra, rb) = (
            valid_inputs(iw_n, ow_n, 2, ow0),
            valid_inputs(iw_n, ow_n, 2, ow0 + 1),
        );
        let both = ra.start.max(rb.start)..ra.end.min(rb.end);
        let at = |i: usize, off: isize| ((2 * i) as isize + off) as usize;
        // The ends where only one of the two taps reaches.
        for i in ra.clone().filter(|i| !both.contains(i)) {
            dst[at(i, ow0)] += a[i];
        }
        for i in rb.clone().filter(|i| !both.contains(i)) {
            dst[at(i, ow0 + 1)] += b[i];
        }
        if both.is_empty() {
            return;
        }
        let start = at(both.start, ow0);
        let span = &mut dst[start..start + 2 * both.len()];
        for ((o, &x), &y) in span
            .chunks_exact_mut(2)
            .zip(&a[both.clone()])
            .zip(&b[both.clone()])
        {
            o[0] += x;
            o[1] += y;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{assert_close, data, ints, node, rand_vals, run, t};
    use hb_ir::Attr;

    /// Naive 2-D ConvTranspose (scatter form): w is [C, M/g, KH, KW].
    #[allow(clippy::too_many_arguments)]
    fn naive(
        x: &[f32],
        xs: [usize; 4],
        w: &[f32],
        ws: [usize; 4],
        g: usize,
        s: usize,
        pb: usize,
        out_hw: [usize; 2],
    ) -> Vec<f32> {
        let [n, c, h, wd] = xs;
        let [_, mg, kh, kw] = ws;
        let m = mg * g;
        let cg = c / g;
        let [oh, ow] = out_hw;
        let mut out = vec![0f32; n * m * oh * ow];
        for b in 0..n {
            for ci in 0..c {
                let gi = ci / cg;
                for y in 0..h {
                    for xx in 0..wd {
                        let v = x[((b * c + ci) * h + y) * wd + xx];
                        for o in 0..mg {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let oy = (y * s + i) as isize - pb as isize;
                                    let ox = (xx * s + j) as isize - pb as isize;
                                    if oy < 0 || ox < 0 || oy >= oh as isize || ox >= ow as isize {
                                        continue;
                                    }
                                    let oc = gi * mg + o;
                                    out[((b * m + oc) * oh + oy as usize) * ow + ox as usize] +=
                                        v * w[((ci * mg + o) * kh + i) * kw + j];
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_with_groups_strides_pads() {
        // (input, weight, group, stride, pad): strided and unit-stride
        // scatter, pads wider than the kernel's reach on one side.
        for (xs, ws, g, s, p) in [
            ([2, 4, 3, 5], [4, 3, 3, 2], 2, 2, 1),
            ([1, 3, 4, 6], [3, 2, 3, 3], 1, 1, 1),
            ([1, 2, 5, 4], [2, 2, 4, 5], 1, 3, 2),
            // Stride 2: paired taps (kernel 4, no pad: the decoder
            // upsampling exporters emit), an odd kernel width leaving a
            // single last tap, pads clipping both ends.
            ([1, 3, 5, 6], [3, 2, 4, 4], 1, 2, 0),
            ([1, 2, 4, 5], [2, 3, 3, 5], 1, 2, 2),
        ] {
            matches_naive(xs, ws, g, s, p);
        }
    }

    fn matches_naive(xs: [usize; 4], ws: [usize; 4], g: usize, s: usize, p: usize) {
        let x = rand_vals(xs.iter().product(), 3);
        let w = rand_vals(ws.iter().product(), 4);
        let n = node(
            "ConvTranspose",
            vec![
                ("group", Attr::Int(g as i64)),
                ("strides", ints(&[s as i64, s as i64])),
                ("pads", ints(&[p as i64, p as i64, p as i64, p as i64])),
            ],
        );
        let y = run(
            conv_transpose,
            &n,
            17,
            &[Some(&t(&xs, x.clone())), Some(&t(&ws, w.clone()))],
        )
        .unwrap();
        // (in - 1) * s + k - 2p
        let out_hw = [
            (xs[2] - 1) * s + ws[2] - 2 * p,
            (xs[3] - 1) * s + ws[3] - 2 * p,
        ];
        assert_eq!(y[0].shape(), &[xs[0], ws[1] * g, out_hw[0], out_hw[1]]);
        assert_close(&data(&y[0]), &naive(&x, xs, &w, ws, g, s, p, out_hw), 1e-5);
    }

    #[test]
    fn paired_taps_give_the_bits_of_tap_by_tap() {
        for (input, kernel, pad) in [
            ([1, 5, 6], [1, 4, 4], [0, 0, 0]),
            ([1, 4, 7], [1, 3, 5], [0, 1, 2]),
            ([2, 3, 4], [2, 2, 3], [0, 1, 3]),
            ([1, 3, 3], [1, 2, 6], [0, 0, 4]),
        ] {
            let out = [
                input[0] + kernel[0] - 1,
                (input[1] - 1) * 2 + kernel[1] - 2 * pad[1] as usize,
                (input[2] - 1) * 2 + kernel[2] - 2 * pad[2] as usize,
            ];
            let g = TGeom {
                input,
                out,
                kernel,
                strides: [1, 2, 2],
                dilations: [1, 1, 1],
                pad,
            };
            let il: usize = input.iter().product();
            let taps: usize = kernel.iter().product();
            let cols = rand_vals(taps * il, 7);
            let ol: usize = out.iter().product();
            let mut paired = rand_vals(ol, 8);
            let mut single = paired.clone();
            col2im_channel(&g, &cols, &mut paired);
            for (k, row) in cols.chunks(il).enumerate() {
                add_tap(&g, k, row, &mut single);
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&paired), bits(&single), "{input:?} {kernel:?} {pad:?}");
        }
    }

    #[test]
    fn bad_weight_is_an_error() {
        let x = t(&[1, 2, 3, 3], vec![0.0; 18]);
        let w = t(&[3, 1, 2, 2], vec![0.0; 12]);
        assert!(run(
            conv_transpose,
            &node("ConvTranspose", vec![]),
            17,
            &[Some(&x), Some(&w)]
        )
        .is_err());
    }
}
