//! Conv, MatMul and Gemm on [`PackedWeights`]: activation packing
//! (im2col for Conv), jobs, and the driver.

use super::depthwise;
use super::driver::{run, AData, Job, Problem};
use super::pack::{check_params, Layout, OpInfo, PackedWeights};
use super::{ensure, ExecOptions, FastIn, FastOut, IntKind, Scratch};
use crate::error::{BpuError, Result};
use crate::shape_err;
use crate::tensor::{broadcast_shapes, numel, QTensor, TensorRef};

/// The combined saturation and fused-clamp bounds for output type `O`.
fn bounds<O: FastOut>(pw: &PackedWeights) -> Result<(i64, i64)> {
    let (mut lo, mut hi) = (O::MIN, O::MAX);
    if let Some((l, h)) = pw.clamp {
        lo = lo.max(l);
        hi = hi.min(h);
        if lo > hi {
            return Err(BpuError::Param(format!(
                "clamp bounds [{l}, {h}] miss the {} range",
                O::NAME
            )));
        }
    }
    Ok((lo, hi))
}

/// Checks the activation type against the packing; for a narrow int16
/// packing also the values (one pass), returning their range with 0.
fn check_kind<X: FastIn>(pw: &PackedWeights, x: &[X]) -> Result<Option<(i64, i64)>> {
    if pw.x_kind == IntKind::I16Narrow && X::KIND == IntKind::I16 {
        let (lo, hi) = X::value_range(x);
        if !pw.takes_narrow_range(lo, hi) {
            return Err(shape_err!(
                "weights were packed for narrow int16 activations, got values in [{lo}, {hi}]"
            ));
        }
        return Ok(Some((lo, hi)));
    }
    if X::KIND != pw.x_kind {
        return Err(shape_err!(
            "weights were packed for {:?} activations, got {}",
            pw.x_kind,
            X::NAME
        ));
    }
    Ok(None)
}

fn check_out<O>(out: &[O], shape: &[usize]) -> Result<()> {
    let n = numel(shape)?;
    if out.len() != n {
        return Err(shape_err!(
            "output buffer holds {} elements, shape {shape:?} needs {n}",
            out.len()
        ));
    }
    Ok(())
}

/// Activation value → packed element.
#[inline]
fn to_u8<X: FastIn>(x: X) -> u8 {
    (x.to_i16() as u8) ^ 0x80
}

/// Splits the first half of `a` (int16 activations) into `x >> 8` (kept in
/// place) and `x & 255` (the second half).
fn split_hi_lo(a: &mut [i16]) {
    let (hi, lo) = a.split_at_mut(a.len() / 2);
    for (h, l) in hi.iter_mut().zip(lo.iter_mut()) {
        *l = *h & 0xff;
        *h >>= 8;
    }
}

/// Packs `rows` rows of `k` activations (element `(i, t)` at
/// `x[i * rs + t * ts]`) into rows of `kp` elements in `scratch`; with
/// `split`, the `x & 255` copy follows (its offset is returned).
#[allow(clippy::too_many_arguments)]
fn pack_rows<'s, X: FastIn>(
    x: &[X],
    rows: usize,
    k: usize,
    rs: usize,
    ts: usize,
    layout: Layout,
    kp: usize,
    split: bool,
    a_u8: &'s mut Vec<u8>,
    a_i16: &'s mut Vec<i16>,
) -> Result<(AData<'s>, usize)> {
    let n = rows
        .checked_mul(kp)
        .ok_or_else(|| shape_err!("activation rows overflow"))?;
    Ok(match layout {
        Layout::I8x4 => {
            let a = ensure(a_u8, n);
            for (i, row) in a.chunks_exact_mut(kp.max(1)).enumerate().take(rows) {
                if ts == 1 {
                    for (d, s) in row.iter_mut().zip(&x[i * rs..i * rs + k]) {
                        *d = to_u8(*s);
                    }
                } else {
                    for (t, d) in row[..k].iter_mut().enumerate() {
                        *d = to_u8(x[i * rs + t * ts]);
                    }
                }
                row[k..].fill(0x80);
            }
            (AData::U8(a), 0)
        }
        Layout::I16x2 => {
            let a = ensure(a_i16, if split { 2 * n } else { n });
            for (i, row) in a.chunks_exact_mut(kp.max(1)).enumerate().take(rows) {
                if ts == 1 {
                    for (d, s) in row.iter_mut().zip(&x[i * rs..i * rs + k]) {
                        *d = s.to_i16();
                    }
                } else {
                    for (t, d) in row[..k].iter_mut().enumerate() {
                        *d = x[i * rs + t * ts].to_i16();
                    }
                }
                row[k..].fill(0);
            }
            if split {
                split_hi_lo(a);
                (AData::I16(a), n)
            } else {
                (AData::I16(a), 0)
            }
        }
    })
}

/// Output shape of a packed Conv on an input of shape `x_shape`.
pub fn conv_out_shape(pw: &PackedWeights, x_shape: &[usize]) -> Result<Vec<usize>> {
    let OpInfo::Conv {
        params: p,
        c_in,
        m,
        kernel,
        ..
    } = &pw.op
    else {
        return Err(shape_err!("weights were not packed for a Conv"));
    };
    let r = kernel.len();
    if x_shape.len() != r + 2 {
        return Err(shape_err!(
            "conv input {x_shape:?} does not have {} dims",
            r + 2
        ));
    }
    if x_shape[1] != *c_in {
        return Err(shape_err!(
            "conv input {x_shape:?} has {} channels, weights want {c_in}",
            x_shape[1]
        ));
    }
    check_params(p, r)?;
    let mut shape = vec![x_shape[0], *m];
    for i in 0..r {
        let span = p.dilations[i] * (kernel[i] - 1) + 1;
        let padded = x_shape[2 + i] + p.pads[i] + p.pads[r + i];
        if padded < span {
            return Err(shape_err!(
                "conv window {span} does not fit padded input {padded}"
            ));
        }
        shape.push((padded - span) / p.strides[i] + 1);
    }
    numel(&shape)?;
    Ok(shape)
}

/// Conv on packed weights: `x` `[N, C, S…]` into `out` (row-major, the
/// shape of [`conv_out_shape`]), bit-exact with
/// [`crate::reference::conv::conv`] (then the packed clamp, if any).
pub fn conv_into<X: FastIn, O: FastOut>(
    pw: &PackedWeights,
    x: TensorRef<'_, X>,
    out: &mut [O],
    scratch: &mut Scratch,
    exec: &ExecOptions,
) -> Result<()> {
    conv_into_layout(pw, x, out, scratch, exec, ConvLayout::default())
}

/// Memory orders of a [`conv_into_layout`] call. Shapes stay the logical
/// `[N, C, S…]`; a channels-last tensor stores `[N, S…, C]` row-major.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConvLayout {
    /// The input is stored channels-last.
    pub x_channels_last: bool,
    /// Write the output channels-last.
    pub y_channels_last: bool,
}

impl PackedWeights {
    /// Whether [`conv_into_layout`] takes channels-last operands for these
    /// weights (a Conv not run by the depthwise kernel).
    pub fn conv_takes_channels_last(&self) -> bool {
        matches!(self.op, OpInfo::Conv { .. }) && self.dw.is_none()
    }
}

/// [`conv_into`] with channels-last input and/or output
/// ([`PackedWeights::conv_takes_channels_last`]); the same integers in
/// another order.
pub fn conv_into_layout<X: FastIn, O: FastOut>(
    pw: &PackedWeights,
    x: TensorRef<'_, X>,
    out: &mut [O],
    scratch: &mut Scratch,
    exec: &ExecOptions,
    layout: ConvLayout,
) -> Result<()> {
    if layout != ConvLayout::default() && !pw.conv_takes_channels_last() {
        return Err(shape_err!("this conv does not take channels-last operands"));
    }
    let narrow_range = check_kind::<X>(pw, x.data())?;
    let out_shape = conv_out_shape(pw, x.shape())?;
    check_out(out, &out_shape)?;
    let (lo, hi) = bounds::<O>(pw)?;
    let OpInfo::Conv {
        params: p,
        c_in,
        m,
        kernel,
        tap_stride,
    } = &pw.op
    else {
        return Err(shape_err!("weights were not packed for a Conv"));
    };
    let (c, m, ts) = (*c_in, *m, *tap_stride);
    // `I8x4` activations are `x + off` as u8: off = 128 for int8; for
    // narrow int16, what lifts the smallest value (and the padding 0) to 0.
    // (`check_kind` checked the span.)
    let off: i32 = match (pw.layout, narrow_range) {
        (Layout::I8x4, Some((vlo, _))) => -vlo as i32,
        _ => 128,
    };
    let pad_byte = off as u8;
    let xs = x.shape();
    let r = kernel.len();
    let nb = xs[0];
    let g = p.group;
    let cg = c / g;
    let mg = m / g;
    let sp_in = &xs[2..];
    let sp_out = &out_shape[2..];
    let npix = numel(sp_out)?;
    let img_in = numel(sp_in)?;
    if nb == 0 || npix == 0 || m == 0 {
        return Ok(());
    }
    if r > MAX_SPATIAL {
        return Err(shape_err!(
            "conv with {r} spatial dims (at most {MAX_SPATIAL})"
        ));
    }
    // Padded spatial dims and their strides (in positions), on the stack:
    // no allocation per call.
    let mut padded = [0usize; MAX_SPATIAL];
    for (i, d) in padded[..r].iter_mut().enumerate() {
        *d = sp_in[i] + p.pads[i] + p.pads[r + i];
    }
    let padded = &padded[..r];
    let npad = numel(padded)?;
    let mut pstr = [1usize; MAX_SPATIAL];
    for i in (0..r.saturating_sub(1)).rev() {
        pstr[i] = pstr[i + 1] * padded[i + 1];
    }
    let pstr = &pstr[..r];
    let Scratch {
        a_u8,
        a_i16,
        pad_u8,
        pad_i16,
        taps,
        jobs,
        plane,
        implicit: cache,
        corr: corr_buf,
        ..
    } = scratch;
    // The correction of the activation offset per block and column.
    let corr: &[i32] = if off == 128 {
        &pw.corr
    } else {
        let cb = ensure(corr_buf, pw.colsum.len());
        for (d, &s) in cb.iter_mut().zip(&pw.colsum) {
            *d = s.wrapping_mul(off);
        }
        cb
    };
    // Tap offsets (row-major over the kernel), in positions.
    let ntaps = numel(kernel)?;
    taps.clear();
    let mut kidx = [0usize; MAX_SPATIAL];
    for _ in 0..ntaps {
        taps.push((0..r).map(|i| kidx[i] * p.dilations[i] * pstr[i]).sum());
        for d in (0..r).rev() {
            kidx[d] += 1;
            if kidx[d] < kernel[d] {
                break;
            }
            kidx[d] = 0;
        }
    }
    let kp = pw.kp;
    let lda = g * kp;
    let xd = x.data();
    jobs.clear();
    // Output element of (pixel, channel): `pixel · rs + channel · cs`.
    let (rs, cs) = if layout.y_channels_last {
        (m, 1)
    } else {
        (1, npix)
    };
    jobs.extend((0..g).map(|gi| Job {
        a_off: gi * kp,
        group: gi,
        out_off: gi * mg * cs,
    }));
    let arows = npix
        .checked_mul(lda)
        .ok_or_else(|| shape_err!("im2col size overflows"))?;
    let pad_len = npad
        .checked_mul(c)
        .ok_or_else(|| shape_err!("padded input overflows"))?;
    if let (Some((dw, wide)), true) = (&pw.dw, r <= depthwise::MAX_RANK) {
        let geom = depthwise::Geom {
            p,
            c,
            mg,
            sp_in,
            sp_out,
            padded,
            pstr,
            taps,
            lo,
            hi,
        };
        for b in 0..nb {
            let img = &xd[b * c * img_in..(b + 1) * c * img_in];
            let o = &mut out[b * m * npix..(b + 1) * m * npix];
            depthwise::run(
                pw,
                dw,
                *wide,
                &geom,
                img,
                |v| i32::from(v.to_i16()),
                plane,
                o,
                exec,
            );
        }
        return Ok(());
    }
    // Implicit GEMM: the kernel reads the padded input in place; else
    // im2col rows.
    let tables = pw
        .implicit_conv()
        .and_then(|ts| implicit_tables(cache, pw, c, ts, sp_out, p, pstr, taps));
    let implicit = tables.is_some();
    let tables = tables.map(|i| &cache[i]);
    if implicit {
        for j in jobs.iter_mut() {
            j.a_off = j.group * cg;
        }
    }
    // Slack: a tap's last K-group may read up to `group − 1` elements past
    // its channels (their weights are zero).
    let pad_len = pad_len + if implicit { pw.layout.group() } else { 0 };
    for b in 0..nb {
        let img = &xd[b * c * img_in..(b + 1) * c * img_in];
        let (a, lo_off): (AData<'_>, usize) = match pw.layout {
            Layout::I8x4 => {
                let pb = ensure(pad_u8, pad_len);
                pb.fill(pad_byte);
                // SAFETY: `I8x4` is only packed for AVX-512 VNNI, which was
                // checked available.
                unsafe { to_padded_u8(img, c, sp_in, p, pstr, off, pb, layout) };
                if implicit {
                    (AData::U8(pb), 0)
                } else {
                    let a = ensure(a_u8, arows);
                    im2col(
                        pb, c, cg, ts, g, kp, lda, sp_out, p, pstr, taps, a, pad_byte,
                    );
                    (AData::U8(a), 0)
                }
            }
            Layout::I16x2 => {
                let pb = ensure(pad_i16, pad_len);
                pb.fill(0);
                to_padded(img, c, sp_in, p, pstr, |v| v.to_i16(), pb, layout);
                if implicit {
                    (AData::I16(pb), 0)
                } else {
                    let a = ensure(a_i16, if pw.split { 2 * arows } else { arows });
                    im2col(pb, c, cg, ts, g, kp, lda, sp_out, p, pstr, taps, a, 0);
                    if pw.split {
                        split_hi_lo(a);
                        (AData::I16(a), arows)
                    } else {
                        (AData::I16(a), 0)
                    }
                }
            }
        };
        let prob = Problem {
            pw,
            a,
            lda: if implicit { 0 } else { lda },
            rows: npix,
            lo_off,
            jobs,
            rows_at: tables.map(|t| &t.rows_at[..]),
            koff: tables.map(|t| &t.koff[..]),
            corr,
            rs,
            cs,
            lo,
            hi,
        };
        run(&prob, &mut out[b * m * npix..(b + 1) * m * npix], exec)?;
    }
    Ok(())
}

/// Copies one image (NC… or, with `layout.x_channels_last`, N…C) into the
/// channels-last padded buffer.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn to_padded<X: Copy, T: Copy>(
    img: &[X],
    c: usize,
    sp_in: &[usize],
    p: &crate::reference::conv::ConvParams,
    pstr: &[usize],
    f: impl Fn(X) -> T,
    dst: &mut [T],
    layout: ConvLayout,
) {
    if !layout.x_channels_last {
        return to_channels_last(img, c, sp_in, p, pstr, f, dst);
    }
    let run = sp_in[sp_in.len() - 1] * c;
    for_each_padded_row(sp_in, &p.pads, pstr, |row, pos| {
        for (d, &v) in dst[pos * c..pos * c + run]
            .iter_mut()
            .zip(&img[row * run..(row + 1) * run])
        {
            *d = f(v);
        }
    });
}

/// [`to_padded`] into `u8` as `x + off` (the `I8x4` activations),
/// compiled for AVX-512 so the conversion vectorises.
///
/// # Safety
/// AVX-512 F/BW/VL available (on x86-64).
#[cfg_attr(
    target_arch = "x86_64",
    target_feature(enable = "avx512f,avx512bw,avx512vl")
)]
#[allow(clippy::too_many_arguments)]
unsafe fn to_padded_u8<X: FastIn>(
    img: &[X],
    c: usize,
    sp_in: &[usize],
    p: &crate::reference::conv::ConvParams,
    pstr: &[usize],
    off: i32,
    dst: &mut [u8],
    layout: ConvLayout,
) {
    let to_u8 = move |v: X| (i32::from(v.to_i16()) + off) as u8;
    to_padded(img, c, sp_in, p, pstr, to_u8, dst, layout)
}

/// Copies one NC… image into the channels-last padded buffer.
#[inline(always)]
pub(crate) fn to_channels_last<X: Copy, T: Copy>(
    img: &[X],
    c: usize,
    sp_in: &[usize],
    p: &crate::reference::conv::ConvParams,
    pstr: &[usize],
    f: impl Fn(X) -> T,
    dst: &mut [T],
) {
    // A first layer's 1–4 channels: one output position's channels per
    // step, the channel count known to the compiler.
    match c {
        1 => interleave::<1, X, T>(img, sp_in, p, pstr, f, dst),
        2 => interleave::<2, X, T>(img, sp_in, p, pstr, f, dst),
        3 => interleave::<3, X, T>(img, sp_in, p, pstr, f, dst),
        4 => interleave::<4, X, T>(img, sp_in, p, pstr, f, dst),
        _ => {
            let img_in: usize = sp_in.iter().product();
            let w_last = sp_in[sp_in.len() - 1];
            for_each_padded_row(sp_in, &p.pads, pstr, |row, pos| {
                for ci in 0..c {
                    let src = &img[ci * img_in + row * w_last..ci * img_in + (row + 1) * w_last];
                    for (j, &v) in src.iter().enumerate() {
                        dst[(pos + j) * c + ci] = f(v);
                    }
                }
            });
        }
    }
}

/// [`to_channels_last`] for `C` channels.
#[inline(always)]
fn interleave<const C: usize, X: Copy, T: Copy>(
    img: &[X],
    sp_in: &[usize],
    p: &crate::reference::conv::ConvParams,
    pstr: &[usize],
    f: impl Fn(X) -> T,
    dst: &mut [T],
) {
    let img_in: usize = sp_in.iter().product();
    let w = sp_in[sp_in.len() - 1];
    for_each_padded_row(sp_in, &p.pads, pstr, |row, pos| {
        let src: [&[X]; C] = std::array::from_fn(|ci| &img[ci * img_in + row * w..][..w]);
        for (j, o) in dst[pos * C..(pos + w) * C].chunks_exact_mut(C).enumerate() {
            for (d, s) in o.iter_mut().zip(&src) {
                *d = f(s[j]);
            }
        }
    });
}

/// Calls `f(row, pos)` for every input row (the last dim's runs, in
/// row-major order) with the padded position of the row's first element
/// (`pads` as `[begin…, end…]`, `pstr` the padded strides in positions).
#[inline(always)]
pub(crate) fn for_each_padded_row(
    sp_in: &[usize],
    pads: &[usize],
    pstr: &[usize],
    mut f: impl FnMut(usize, usize),
) {
    let r = sp_in.len();
    let img_in: usize = sp_in.iter().product();
    if img_in == 0 {
        return;
    }
    let mut idx = vec![0usize; r - 1];
    for row in 0..img_in / sp_in[r - 1] {
        let mut pos = pads[r - 1];
        for i in 0..r - 1 {
            pos += (idx[i] + pads[i]) * pstr[i];
        }
        f(row, pos);
        for d in (0..r - 1).rev() {
            idx[d] += 1;
            if idx[d] < sp_in[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// The implicit-GEMM tables of one conv geometry: the padded-input offset
/// of every output pixel (`rows_at`) and of every K-group within a pixel
/// (`koff`, tap-major), with the geometry they were built for.
#[derive(Debug, Default)]
pub(crate) struct ImplicitTables {
    key: Vec<usize>,
    rows_at: Vec<usize>,
    koff: Vec<u32>,
}

/// Geometries kept in [`Scratch`]'s table cache.
const IMPLICIT_CACHE: usize = 32;

/// The most spatial dims a packed conv takes (its per-call tables live on
/// the stack).
const MAX_SPATIAL: usize = 8;

/// The index in `cache` of the implicit-GEMM tables of a conv (`ts`
/// packed elements per tap), built on first use; `None` when an offset
/// does not fit `u32` (the caller then uses im2col).
#[allow(clippy::too_many_arguments)]
fn implicit_tables(
    cache: &mut Vec<ImplicitTables>,
    pw: &PackedWeights,
    c: usize,
    ts: usize,
    sp_out: &[usize],
    p: &crate::reference::conv::ConvParams,
    pstr: &[usize],
    taps: &[usize],
) -> Option<usize> {
    let gs = pw.layout.group();
    // Everything the tables depend on, with lengths so that no two
    // geometries share a key.
    let mut key = vec![c, ts, pw.kp, gs, sp_out.len(), taps.len()];
    key.extend(sp_out);
    key.extend(&p.strides);
    key.extend(pstr);
    key.extend(taps);
    if let Some(i) = cache.iter().position(|t| t.key == key) {
        return Some(i);
    }
    let mut koff = Vec::with_capacity(pw.kp / gs);
    for q in 0..pw.kp / gs {
        let k = q * gs;
        let (t, j) = (k / ts, k % ts);
        let off = taps
            .get(t)
            .and_then(|&to| to.checked_mul(c))
            .and_then(|o| o.checked_add(j))
            .and_then(|o| u32::try_from(o).ok())?;
        koff.push(off);
    }
    let mut rows_at = Vec::new();
    for_each_window(sp_out, p, pstr, |pos| rows_at.push(pos * c));
    if cache.len() >= IMPLICIT_CACHE {
        cache.remove(0);
    }
    cache.push(ImplicitTables { key, rows_at, koff });
    Some(cache.len() - 1)
}

/// Calls `f` with the padded-input position (in positions) of the first
/// kernel tap of every output pixel, in row-major output order.
fn for_each_window(
    sp_out: &[usize],
    p: &crate::reference::conv::ConvParams,
    pstr: &[usize],
    mut f: impl FnMut(usize),
) {
    let r = sp_out.len();
    let w_last = sp_out[r - 1];
    let rows_outer = sp_out.iter().product::<usize>() / w_last.max(1);
    let mut idx = vec![0usize; r - 1];
    for _ in 0..rows_outer {
        let mut base = 0usize;
        for i in 0..r - 1 {
            base += idx[i] * p.strides[i] * pstr[i];
        }
        for ow in 0..w_last {
            f(base + ow * p.strides[r - 1]);
        }
        for d in (0..r - 1).rev() {
            idx[d] += 1;
            if idx[d] < sp_out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// im2col from the channels-last padded buffer: row `o` (output pixel) is
/// `[group 0: taps × (C_g, zeros to ts), pad to kp | group 1 | …]`.
#[allow(clippy::too_many_arguments)]
fn im2col<T: Copy>(
    pb: &[T],
    c: usize,
    cg: usize,
    ts: usize,
    g: usize,
    kp: usize,
    lda: usize,
    sp_out: &[usize],
    p: &crate::reference::conv::ConvParams,
    pstr: &[usize],
    taps: &[usize],
    a: &mut [T],
    zero: T,
) {
    let k = taps.len() * ts;
    let mut pix = 0usize;
    for_each_window(sp_out, p, pstr, |pos| {
        let row = &mut a[pix * lda..(pix + 1) * lda];
        for gi in 0..g {
            let dst = &mut row[gi * kp..(gi + 1) * kp];
            for (t, &to) in taps.iter().enumerate() {
                let s = (pos + to) * c + gi * cg;
                let d = &mut dst[t * ts..(t + 1) * ts];
                if cg <= 8 {
                    // Few channels: element copies beat a memcpy call per tap.
                    for (d, v) in d[..cg].iter_mut().zip(&pb[s..s + cg]) {
                        *d = *v;
                    }
                } else {
                    d[..cg].copy_from_slice(&pb[s..s + cg]);
                }
                d[cg..].fill(zero);
            }
            dst[k..].fill(zero);
        }
        pix += 1;
    });
}

/// Allocating [`conv_into`].
pub fn conv<X: FastIn, O: FastOut>(
    pw: &PackedWeights,
    x: TensorRef<'_, X>,
    scratch: &mut Scratch,
    exec: &ExecOptions,
) -> Result<QTensor<O>> {
    let shape = conv_out_shape(pw, x.shape())?;
    let mut out = vec![O::default(); numel(&shape)?];
    conv_into(pw, x, &mut out, scratch, exec)?;
    QTensor::new(shape, out)
}

/// Output shape of a packed MatMul with a left operand of shape `a_shape`.
pub fn matmul_out_shape(pw: &PackedWeights, a_shape: &[usize]) -> Result<Vec<usize>> {
    let OpInfo::MatMul { b_shape } = &pw.op else {
        return Err(shape_err!("weights were not packed for a MatMul"));
    };
    if a_shape.is_empty() {
        return Err(shape_err!("matmul of a scalar operand"));
    }
    let ka = a_shape[a_shape.len() - 1];
    if ka != pw.k {
        return Err(shape_err!(
            "matmul inner dims differ: {a_shape:?} × {b_shape:?}"
        ));
    }
    let ba = if a_shape.len() > 2 {
        &a_shape[..a_shape.len() - 2]
    } else {
        &[]
    };
    let bb = if b_shape.len() > 2 {
        &b_shape[..b_shape.len() - 2]
    } else {
        &[]
    };
    let mut shape = broadcast_shapes(ba, bb)?;
    if a_shape.len() > 1 {
        shape.push(a_shape[a_shape.len() - 2]);
    }
    if b_shape.len() > 1 {
        shape.push(pw.n);
    }
    numel(&shape)?;
    Ok(shape)
}

/// Flat indices of a `src`-shaped tensor broadcast to `out`, into `idx`.
fn bcast_into(src: &[usize], out: &[usize], idx: &mut Vec<usize>) -> Result<()> {
    let off = out.len() - src.len();
    let mut bs = vec![0usize; out.len()];
    let mut s = 1usize;
    for i in (0..src.len()).rev() {
        let o = out[i + off];
        if src[i] == o {
            bs[i + off] = s;
        } else if src[i] != 1 {
            return Err(shape_err!("{src:?} does not broadcast to {out:?}"));
        }
        s *= src[i];
    }
    idx.clear();
    let n = numel(out)?;
    let mut pos = vec![0usize; out.len()];
    for _ in 0..n {
        idx.push(pos.iter().zip(&bs).map(|(p, s)| p * s).sum());
        for d in (0..out.len()).rev() {
            pos[d] += 1;
            if pos[d] < out[d] {
                break;
            }
            pos[d] = 0;
        }
    }
    Ok(())
}

/// MatMul on packed weights: `a` `[…, M, K]` (or `[K]`) times the packed
/// `B`, into `out` (shape of [`matmul_out_shape`]), bit-exact with
/// [`crate::reference::matmul::matmul`] (then the packed clamp, if any).
pub fn matmul_into<X: FastIn, O: FastOut>(
    pw: &PackedWeights,
    a: TensorRef<'_, X>,
    out: &mut [O],
    scratch: &mut Scratch,
    exec: &ExecOptions,
) -> Result<()> {
    check_kind::<X>(pw, a.data())?;
    let out_shape = matmul_out_shape(pw, a.shape())?;
    check_out(out, &out_shape)?;
    let (lo, hi) = bounds::<O>(pw)?;
    let OpInfo::MatMul { b_shape } = &pw.op else {
        return Err(shape_err!("weights were not packed for a MatMul"));
    };
    let sa = a.shape();
    let (m, k, n) = (if sa.len() > 1 { sa[sa.len() - 2] } else { 1 }, pw.k, pw.n);
    let ba: &[usize] = if sa.len() > 2 {
        &sa[..sa.len() - 2]
    } else {
        &[]
    };
    let bb: &[usize] = if b_shape.len() > 2 {
        &b_shape[..b_shape.len() - 2]
    } else {
        &[]
    };
    let batch_a = numel(ba)?;
    let Scratch {
        a_u8,
        a_i16,
        idx_a,
        idx_b,
        jobs: jobs_buf,
        ..
    } = scratch;
    let rows_a = batch_a * m;
    let (ad, lo_off) = pack_rows(
        a.data(),
        rows_a,
        k,
        k,
        1,
        pw.layout,
        pw.kp,
        pw.split,
        a_u8,
        a_i16,
    )?;
    if numel(&out_shape)? == 0 {
        return Ok(());
    }
    jobs_buf.clear();
    let rows = if pw.groups == 1 {
        jobs_buf.push(Job {
            a_off: 0,
            group: 0,
            out_off: 0,
        });
        rows_a
    } else {
        let batch = broadcast_shapes(ba, bb)?;
        bcast_into(ba, &batch, idx_a)?;
        bcast_into(bb, &batch, idx_b)?;
        jobs_buf.extend(
            idx_a
                .iter()
                .zip(idx_b.iter())
                .enumerate()
                .map(|(t, (&ia, &ib))| Job {
                    a_off: ia * m * pw.kp,
                    group: ib,
                    out_off: t * m * n,
                }),
        );
        m
    };
    let prob = Problem {
        pw,
        a: ad,
        lda: pw.kp,
        rows,
        lo_off,
        jobs: jobs_buf,
        rows_at: None,
        koff: None,
        corr: &pw.corr,
        rs: n,
        cs: 1,
        lo,
        hi,
    };
    run(&prob, out, exec)
}

/// Allocating [`matmul_into`].
pub fn matmul<X: FastIn, O: FastOut>(
    pw: &PackedWeights,
    a: TensorRef<'_, X>,
    scratch: &mut Scratch,
    exec: &ExecOptions,
) -> Result<QTensor<O>> {
    let shape = matmul_out_shape(pw, a.shape())?;
    let mut out = vec![O::default(); numel(&shape)?];
    matmul_into(pw, a, &mut out, scratch, exec)?;
    QTensor::new(shape, out)
}

/// Gemm on packed weights: `a` `[M, K]` (`[K, M]` with `transA`) into
/// `out` `[M, N]`, bit-exact with [`crate::reference::matmul::gemm`] (then
/// the packed clamp, if any).
pub fn gemm_into<X: FastIn, O: FastOut>(
    pw: &PackedWeights,
    a: TensorRef<'_, X>,
    out: &mut [O],
    scratch: &mut Scratch,
    exec: &ExecOptions,
) -> Result<()> {
    check_kind::<X>(pw, a.data())?;
    let OpInfo::Gemm { trans_a } = pw.op else {
        return Err(shape_err!("weights were not packed for a Gemm"));
    };
    let sa = a.shape();
    if sa.len() != 2 {
        return Err(shape_err!("gemm needs a 2-D A: {sa:?}"));
    }
    let (m, k) = if trans_a {
        (sa[1], sa[0])
    } else {
        (sa[0], sa[1])
    };
    if k != pw.k {
        return Err(shape_err!("gemm inner dims differ: A {sa:?}, K = {}", pw.k));
    }
    check_out(out, &[m, pw.n])?;
    let (lo, hi) = bounds::<O>(pw)?;
    if let Some((rows, _)) = &pw.addend {
        if *rows != m {
            return Err(shape_err!("gemm C has {rows} rows, A gives M = {m}"));
        }
    }
    let (rs, ts) = if trans_a { (1, m) } else { (k, 1) };
    let Scratch { a_u8, a_i16, .. } = scratch;
    let (ad, lo_off) = pack_rows(
        a.data(),
        m,
        k,
        rs,
        ts,
        pw.layout,
        pw.kp,
        pw.split,
        a_u8,
        a_i16,
    )?;
    let jobs = [Job {
        a_off: 0,
        group: 0,
        out_off: 0,
    }];
    let prob = Problem {
        pw,
        a: ad,
        lda: pw.kp,
        rows: m,
        lo_off,
        jobs: &jobs,
        rows_at: None,
        koff: None,
        corr: &pw.corr,
        rs: pw.n,
        cs: 1,
        lo,
        hi,
    };
    run(&prob, out, exec)
}

/// Allocating [`gemm_into`].
pub fn gemm<X: FastIn, O: FastOut>(
    pw: &PackedWeights,
    a: TensorRef<'_, X>,
    scratch: &mut Scratch,
    exec: &ExecOptions,
) -> Result<QTensor<O>> {
    let OpInfo::Gemm { trans_a } = pw.op else {
        return Err(shape_err!("weights were not packed for a Gemm"));
    };
    let sa = a.shape();
    if sa.len() != 2 {
        return Err(shape_err!("gemm needs a 2-D A: {sa:?}"));
    }
    let m = if trans_a { sa[1] } else { sa[0] };
    let shape = vec![m, pw.n];
    let mut out = vec![O::default(); numel(&shape)?];
    gemm_into(pw, a, &mut out, scratch, exec)?;
    QTensor::new(shape, out)
}
