//! Resize (opsets 10–19) and Upsample (7–9).
//!
//! Nearest works on every element type through per-axis index maps.
//! Linear and cubic are separable: each resized axis is interpolated in
//! turn with a precomputed tap table (source row, weight) per output
//! position; rows are combined as contiguous runs and the outer blocks are
//! processed in parallel.

use super::remap::{axis_of, check_numel, remap_tensor, to_dims};
use super::util::{attr_err, input, one, opt_input};
use crate::error::OpResult;
use crate::kernels::scratch::Scratch;
use crate::registry::{OpCtx, Registry};
use crate::{invalid, unsupported};
use hb_tensor::Tensor;
use rayon::prelude::*;

/// Registers Resize and Upsample.
pub fn register(r: &mut Registry) {
    r.register("Resize", resize);
    r.register("Upsample", upsample);
}

/// Interpolation mode.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Mode {
    /// Nearest neighbour.
    Nearest,
    /// (Multi)linear.
    Linear,
    /// Cubic convolution.
    Cubic,
}

/// `coordinate_transformation_mode`.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Ctm {
    /// `half_pixel`
    HalfPixel,
    /// `half_pixel_symmetric`
    HalfPixelSymmetric,
    /// `pytorch_half_pixel`
    PytorchHalfPixel,
    /// `align_corners`
    AlignCorners,
    /// `asymmetric`
    Asymmetric,
    /// `tf_half_pixel_for_nn`
    TfHalfPixelForNn,
    /// `tf_crop_and_resize`
    TfCropAndResize,
}

/// `nearest_mode`.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum NearestMode {
    /// Round, ties down.
    RoundPreferFloor,
    /// Round, ties up.
    RoundPreferCeil,
    /// Floor.
    Floor,
    /// Ceil.
    Ceil,
}

/// Everything that decides the interpolation along one axis.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Interpolation mode.
    pub mode: Mode,
    /// Coordinate transformation.
    pub ctm: Ctm,
    /// Rounding of nearest.
    pub nearest: NearestMode,
    /// Cubic coefficient `a`.
    pub cubic_a: f64,
    /// Zero the weights of taps outside the input.
    pub exclude_outside: bool,
    /// Value outside the crop for `tf_crop_and_resize`.
    pub extrapolation: f32,
    /// Widen the filter when downsampling (linear/cubic).
    pub antialias: bool,
}

impl Params {
    fn parse(ctx: &OpCtx) -> OpResult<Self> {
        let n = ctx.node;
        let s = |k: &str, d: &str| n.string_or(k, d).map_err(attr_err);
        let mode = match s("mode", "nearest")?.as_str() {
            "nearest" => Mode::Nearest,
            "linear" | "bilinear" | "trilinear" => Mode::Linear,
            "cubic" | "bicubic" => Mode::Cubic,
            m => return Err(invalid!("unknown mode '{m}'")),
        };
        let legacy = is_legacy(ctx);
        let ctm = if legacy {
            Ctm::Asymmetric
        } else {
            match s("coordinate_transformation_mode", "half_pixel")?.as_str() {
                "half_pixel" => Ctm::HalfPixel,
                "half_pixel_symmetric" => Ctm::HalfPixelSymmetric,
                "pytorch_half_pixel" => Ctm::PytorchHalfPixel,
                "align_corners" => Ctm::AlignCorners,
                "asymmetric" => Ctm::Asymmetric,
                "tf_half_pixel_for_nn" => Ctm::TfHalfPixelForNn,
                "tf_crop_and_resize" => Ctm::TfCropAndResize,
                m => return Err(invalid!("unknown coordinate_transformation_mode '{m}'")),
            }
        };
        let nearest = if legacy {
            NearestMode::Floor
        } else {
            match s("nearest_mode", "round_prefer_floor")?.as_str() {
                "round_prefer_floor" => NearestMode::RoundPreferFloor,
                "round_prefer_ceil" => NearestMode::RoundPreferCeil,
                "floor" => NearestMode::Floor,
                "ceil" => NearestMode::Ceil,
                m => return Err(invalid!("unknown nearest_mode '{m}'")),
            }
        };
        Ok(Params {
            mode,
            ctm,
            nearest,
            cubic_a: n.float_or("cubic_coeff_a", -0.75).map_err(attr_err)? as f64,
            exclude_outside: n.int_or("exclude_outside", 0).map_err(attr_err)? != 0,
            extrapolation: n.float_or("extrapolation_value", 0.0).map_err(attr_err)?,
            antialias: n.int_or("antialias", 0).map_err(attr_err)? != 0,
        })
    }
}

/// Legacy (Upsample / Resize-10) semantics: asymmetric, floor.
fn is_legacy(ctx: &OpCtx) -> bool {
    ctx.node.op_type == "Upsample" || ctx.opset < 11
}

/// One axis: input and output length, scale and crop region.
#[derive(Clone, Copy, Debug)]
pub struct AxisSpec {
    /// Input length.
    pub in_len: usize,
    /// Output length.
    pub out_len: usize,
    /// Scale factor.
    pub scale: f64,
    /// Region of interest start (normalized).
    pub roi_start: f64,
    /// Region of interest end (normalized).
    pub roi_end: f64,
}

impl AxisSpec {
    fn is_identity(&self, p: &Params) -> bool {
        self.in_len == self.out_len && self.scale == 1.0 && p.ctm != Ctm::TfCropAndResize
    }

    /// The input coordinate of output position `x`.
    pub fn source_coord(&self, x: usize, ctm: Ctm) -> f64 {
        let (x, s) = (x as f64, self.scale);
        // As in the ONNX reference, the resized length is the unrounded
        // `scale * in_len` (only half_pixel_symmetric uses the integer one).
        let (li, lo) = (self.in_len as f64, s * self.in_len as f64);
        match ctm {
            Ctm::HalfPixel => (x + 0.5) / s - 0.5,
            Ctm::HalfPixelSymmetric => {
                let adjustment = self.out_len as f64 / lo;
                let offset = li / 2.0 * (1.0 - adjustment);
                offset + (x + 0.5) / s - 0.5
            }
            Ctm::PytorchHalfPixel if lo > 1.0 => (x + 0.5) / s - 0.5,
            Ctm::PytorchHalfPixel => 0.0,
            Ctm::AlignCorners if lo > 1.0 => x * (li - 1.0) / (lo - 1.0),
            Ctm::AlignCorners => 0.0,
            Ctm::Asymmetric => x / s,
            Ctm::TfHalfPixelForNn => (x + 0.5) / s,
            Ctm::TfCropAndResize if lo > 1.0 => {
                self.roi_start * (li - 1.0)
                    + x * (self.roi_end - self.roi_start) * (li - 1.0) / (lo - 1.0)
            }
            Ctm::TfCropAndResize => 0.5 * (self.roi_start + self.roi_end) * (li - 1.0),
        }
    }

    fn extrapolates(&self, xo: f64, p: &Params) -> bool {
        p.ctm == Ctm::TfCropAndResize && (xo < 0.0 || xo > self.in_len as f64 - 1.0)
    }

    /// The nearest source index of every output position (None = extrapolate).
    pub fn nearest_map(&self, p: &Params) -> Vec<Option<usize>> {
        let last = self.in_len.saturating_sub(1) as i64;
        (0..self.out_len)
            .map(|o| {
                let xo = self.source_coord(o, p.ctm);
                if self.extrapolates(xo, p) {
                    return None;
                }
                let f = xo.floor();
                let r = xo - f;
                let up = if r == 0.0 {
                    false
                } else {
                    match p.nearest {
                        NearestMode::RoundPreferFloor => r > 0.5,
                        NearestMode::RoundPreferCeil => r >= 0.5,
                        NearestMode::Floor => false,
                        NearestMode::Ceil => true,
                    }
                };
                Some((f as i64 + i64::from(up)).clamp(0, last) as usize)
            })
            .collect()
    }

    /// The (source index, weight) taps of every output position for linear
    /// or cubic interpolation (None = extrapolate), following the ONNX
    /// reference neighbour selection.
    pub fn tap_table(&self, p: &Params) -> TapTable {
        let rows: Vec<Option<Vec<(usize, f32)>>> = (0..self.out_len)
            .map(|o| {
                let xo = self.source_coord(o, p.ctm);
                (!self.extrapolates(xo, p)).then(|| self.taps(xo, p))
            })
            .collect();
        TapTable::pack(&rows)
    }

    fn taps(&self, xo: f64, p: &Params) -> Vec<(usize, f32)> {
        let mut base = xo.floor();
        let mut ratio = xo - base;
        if ratio == 0.0 {
            ratio = 1.0;
            base -= 1.0;
        }
        let mut coeffs = coefficients(ratio, self.scale, p);
        let n = coeffs.len() as i64;
        let n_in = self.in_len as i64;
        let pad = (n + 1) / 2;
        let limit = n_in + 2 * pad;
        let start = 1 - n / 2;
        let w = (base as i64 + start + pad).clamp(0, (limit - n).max(0));
        let idx: Vec<i64> = (0..n).map(|k| w + k - pad).collect();
        if p.exclude_outside {
            for (c, &i) in coeffs.iter_mut().zip(&idx) {
                if i < 0 || i >= n_in {
                    *c = 0.0;
                }
            }
            let sum: f64 = coeffs.iter().sum();
            if sum != 0.0 {
                coeffs.iter_mut().for_each(|c| *c /= sum);
            }
        }
        idx.iter()
            .zip(&coeffs)
            .map(|(&i, &c)| (i.clamp(0, (n_in - 1).max(0)) as usize, c as f32))
            .collect()
    }
}

/// Filter coefficients for the taps starting at `1 - n/2` around `ratio`.
fn coefficients(ratio: f64, scale: f64, p: &Params) -> Vec<f64> {
    let a = p.cubic_a;
    let cubic = |x: f64| {
        let x = x.abs();
        if x <= 1.0 {
            ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
        } else {
            0.0
        }
    };
    let s = if p.antialias { scale.min(1.0) } else { 1.0 };
    let (support, f): (f64, &dyn Fn(f64) -> f64) = match p.mode {
        Mode::Cubic => (2.0, &cubic),
        _ => (1.0, &|x: f64| (1.0 - x.abs()).clamp(0.0, 1.0)),
    };
    let start = (-support / s).floor() as i64 + 1;
    let end = 2 - start;
    let c: Vec<f64> = (start..end).map(|i| f(s * (i as f64 - ratio))).collect();
    if p.antialias {
        let sum: f64 = c.iter().sum();
        if sum != 0.0 {
            return c.iter().map(|v| v / sum).collect();
        }
    }
    c
}

/// Taps of every output position along one axis, packed with a fixed
/// tap count `k` (shorter rows are padded with zero weights).
pub struct TapTable {
    k: usize,
    idx: Vec<usize>,
    w: Vec<f32>,
    extrapolate: Vec<bool>,
}

/// Two-tap rows as four parallel columns (32-bit indices), the form the
/// vector units gather from; extrapolated positions read index 0 with
/// weight 0 and are overwritten by the caller.
struct TwoTaps {
    i0: Vec<u32>,
    i1: Vec<u32>,
    w0: Vec<f32>,
    w1: Vec<f32>,
    /// One past the largest index.
    end: usize,
}

impl TwoTaps {
    fn of(t: &TapTable) -> Option<Self> {
        if t.k != 2 {
            return None;
        }
        let mut two = TwoTaps {
            i0: Vec::with_capacity(t.len()),
            i1: Vec::with_capacity(t.len()),
            w0: Vec::with_capacity(t.len()),
            w1: Vec::with_capacity(t.len()),
            end: 0,
        };
        for j in 0..t.len() {
            let (idx, w) = t.row(j);
            let (i, w) = if t.extrapolate[j] {
                ([0, 0], [0.0, 0.0])
            } else {
                ([idx[0], idx[1]], [w[0], w[1]])
            };
            two.i0.push(u32::try_from(i[0]).ok()?);
            two.i1.push(u32::try_from(i[1]).ok()?);
            two.w0.push(w[0]);
            two.w1.push(w[1]);
            two.end = two.end.max(i[0] + 1).max(i[1] + 1);
        }
        Some(two)
    }

    /// True when every index is inside `s`.
    fn fits(&self, s: &[f32]) -> bool {
        self.end <= s.len()
    }

    /// `d[j] = w0[j]·s[i0[j]] + w1[j]·s[i1[j]]` (two roundings, no fused
    /// multiply-add, as the general path). The caller checked [`Self::fits`].
    #[inline(always)]
    fn gather(&self, s: &[f32], d: &mut [f32]) {
        let n = d.len().min(self.i0.len());
        let (i0, i1, w0, w1) = (&self.i0[..n], &self.i1[..n], &self.w0[..n], &self.w1[..n]);
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if super::conv_direct::has_avx512() && s.len() <= i32::MAX as usize {
            // SAFETY: AVX-512F was just detected; the indices are in `s`
            // (`fits`) and below i32::MAX, the slices hold `n` values.
            done = unsafe { gather16(s, i0, i1, w0, w1, &mut d[..n]) };
        }
        for j in done..n {
            // SAFETY: every index is below `self.end` <= `s.len()`
            // (`fits`), and `j < n`, the length of all five slices.
            unsafe {
                let a = *s.get_unchecked(*i0.get_unchecked(j) as usize);
                let b = *s.get_unchecked(*i1.get_unchecked(j) as usize);
                *d.get_unchecked_mut(j) = *w0.get_unchecked(j) * a + *w1.get_unchecked(j) * b;
            }
        }
    }
}

impl TapTable {
    /// Packs per-position taps (None = extrapolate).
    pub fn pack(rows: &[Option<Vec<(usize, f32)>>]) -> Self {
        let k = rows
            .iter()
            .flatten()
            .map(Vec::len)
            .max()
            .unwrap_or(0)
            .max(1);
        let mut t = TapTable {
            k,
            idx: vec![0; rows.len() * k],
            w: vec![0.0; rows.len() * k],
            extrapolate: rows.iter().map(Option::is_none).collect(),
        };
        for (j, row) in rows.iter().enumerate() {
            for (q, &(i, w)) in row.iter().flatten().enumerate() {
                t.idx[j * k + q] = i;
                t.w[j * k + q] = w;
            }
        }
        t
    }

    /// Number of output positions.
    pub fn len(&self) -> usize {
        self.extrapolate.len()
    }

    /// True when there are no output positions.
    pub fn is_empty(&self) -> bool {
        self.extrapolate.is_empty()
    }

    /// Source indices and weights of output position `j`.
    fn row(&self, j: usize) -> (&[usize], &[f32]) {
        let r = j * self.k..(j + 1) * self.k;
        (&self.idx[r.clone()], &self.w[r])
    }
}

/// [`TwoTaps::gather`] 16 outputs at a time with AVX-512 gathers; returns
/// how many outputs it wrote (a multiple of 16, the rest is the caller's).
///
/// # Safety
/// AVX-512F must be available; every index must be inside `s` and below
/// `i32::MAX`; `i0`, `i1`, `w0`, `w1` must be at least as long as `d`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather16(
    s: &[f32],
    i0: &[u32],
    i1: &[u32],
    w0: &[f32],
    w1: &[f32],
    d: &mut [f32],
) -> usize {
    use std::arch::x86_64::*;
    let full = d.len() / 16 * 16;
    let mut j = 0;
    while j < full {
        let ia = _mm512_loadu_si512(i0.as_ptr().add(j).cast());
        let ib = _mm512_loadu_si512(i1.as_ptr().add(j).cast());
        let a = _mm512_i32gather_ps::<4>(ia, s.as_ptr().cast());
        let b = _mm512_i32gather_ps::<4>(ib, s.as_ptr().cast());
        // Two products and a sum, rounded each (no fused multiply-add).
        let v = _mm512_add_ps(
            _mm512_mul_ps(_mm512_loadu_ps(w0.as_ptr().add(j)), a),
            _mm512_mul_ps(_mm512_loadu_ps(w1.as_ptr().add(j)), b),
        );
        _mm512_storeu_ps(d.as_mut_ptr().add(j), v);
        j += 16;
    }
    full
}

/// Writes `dst = sum_q w[q] * src_row(idx[q])` for contiguous rows of
/// `inner` (taps after the first with weight 0 are skipped). Two taps,
/// the linear case, take one pass: `w0·a + w1·b` rounds as the two passes
/// `d = w0·a; d += w1·b` did (no fused multiply-add).
#[inline(always)]
fn combine_rows(dst: &mut [f32], s: &[f32], inner: usize, idx: &[usize], w: &[f32]) {
    let row = |i: usize| &s[i * inner..(i + 1) * inner];
    if let ([i0, i1], [w0, w1]) = (idx, w) {
        if *w1 != 0.0 {
            let (w0, w1) = (*w0, *w1);
            for ((d, a), b) in dst.iter_mut().zip(row(*i0)).zip(row(*i1)) {
                *d = w0 * a + w1 * b;
            }
            return;
        }
    }
    dst.iter_mut()
        .zip(row(idx[0]))
        .for_each(|(d, r)| *d = w[0] * r);
    for (&i, &wq) in idx.iter().zip(w).skip(1).filter(|t| *t.1 != 0.0) {
        dst.iter_mut().zip(row(i)).for_each(|(d, r)| *d += wq * r);
    }
}

crate::multiversion! {
    /// One outer block of [`interp_axis_into`]: `s` holds the block's `n`
    /// source rows of `inner` values, `chunk` receives its `taps.len()`
    /// interpolated rows. `two` is the two-tap gather of `taps` for the
    /// pass along the contiguous axis (None: each output's taps in turn).
    fn interp_block(
        s: &[f32],
        inner: usize,
        taps: &TapTable,
        two: Option<&TwoTaps>,
        extrapolation: f32,
        chunk: &mut [f32],
    ) {
        if inner == 1 {
            // Along the contiguous axis: linear rows as a vector gather.
            if let Some(two) = two.filter(|t| t.fits(s)) {
                two.gather(s, chunk);
                for (d, _) in chunk.iter_mut().zip(&taps.extrapolate).filter(|x| *x.1) {
                    *d = extrapolation;
                }
                return;
            }
            for (j, d) in chunk.iter_mut().enumerate() {
                let (idx, w) = taps.row(j);
                *d = if taps.extrapolate[j] {
                    extrapolation
                } else {
                    idx.iter().zip(w).map(|(&i, &w)| w * s[i]).sum()
                };
            }
            return;
        }
        for (j, dst) in chunk.chunks_mut(inner).enumerate() {
            if taps.extrapolate[j] {
                dst.fill(extrapolation);
            } else {
                let (idx, w) = taps.row(j);
                combine_rows(dst, s, inner, idx, w);
            }
        }
    }
}

/// Interpolates `src` (row-major `shape`) along `axis` with a tap table
/// into `out` (every element written).
fn interp_axis_into(
    src: &[f32],
    shape: &[usize],
    axis: usize,
    taps: &TapTable,
    extrapolation: f32,
    out: &mut [f32],
) {
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let m = taps.len();
    if out.is_empty() {
        return;
    }
    // The vector gather's columns, for the pass along the contiguous axis.
    let two = if inner == 1 { TwoTaps::of(taps) } else { None };
    let block = |(o, chunk): (usize, &mut [f32])| {
        interp_block(
            &src[o * n * inner..(o + 1) * n * inner],
            inner,
            taps,
            two.as_ref(),
            extrapolation,
            chunk,
        )
    };
    if out.len() >= 1 << 14 && crate::threads::kernel_threads() > 1 {
        out.par_chunks_mut(m * inner).enumerate().for_each(block);
    } else {
        out.chunks_mut(m * inner).enumerate().for_each(block);
    }
}

/// Linear / cubic resize of a float32 array in row-major order.
fn interpolate(x: &Tensor, specs: &[AxisSpec], p: &Params) -> OpResult<Tensor> {
    let xf = x.to_f32_cow()?;
    let mut shape = xf.shape().to_vec();
    // The input is read in place; each interpolated axis but the last
    // writes into scratch memory, the last into the output.
    let input = super::remap::std_data(&xf);
    let moving: Vec<usize> = (0..specs.len())
        .rev()
        .filter(|&a| !specs[a].is_identity(p))
        .collect();
    let mut held: Option<Scratch> = None;
    let mut out: Option<Vec<f32>> = None;
    for (k, &axis) in moving.iter().enumerate() {
        let sp = &specs[axis];
        if sp.in_len == 0 {
            return Err(invalid!("cannot interpolate an empty axis"));
        }
        let taps = sp.tap_table(p);
        let mut next_shape = shape.clone();
        next_shape[axis] = sp.out_len;
        let len: usize = next_shape.iter().product();
        let src: &[f32] = held.as_deref().unwrap_or(&input);
        if k + 1 == moving.len() {
            let mut o = vec![0f32; len];
            interp_axis_into(src, &shape, axis, &taps, p.extrapolation, &mut o);
            out = Some(o);
        } else {
            let mut buf = Scratch::take(len);
            interp_axis_into(src, &shape, axis, &taps, p.extrapolation, &mut buf);
            held = Some(buf);
        }
        shape = next_shape;
    }
    let data = out.unwrap_or_else(|| input.into_owned());
    let y = Tensor::from_vec(&shape, data)?;
    Ok(if x.dtype() == y.dtype() {
        y
    } else {
        y.cast(x.dtype())?
    })
}

/// Runs the resize given per-axis specs.
fn run(x: &Tensor, specs: &[AxisSpec], p: &Params) -> OpResult<Tensor> {
    if p.mode == Mode::Nearest {
        let maps: Vec<Vec<Option<usize>>> = specs.iter().map(|s| s.nearest_map(p)).collect();
        let fill = Tensor::scalar(p.extrapolation).cast(x.dtype())?;
        return remap_tensor(x, &maps, &fill);
    }
    if x.dtype() == hb_tensor::DType::String || x.dtype() == hb_tensor::DType::Bool {
        return Err(unsupported!("{:?} resize of {}", p.mode, x.dtype()));
    }
    interpolate(x, specs, p)
}

/// A non-empty optional input.
fn present<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    opt_input(inputs, i).filter(|t| !t.is_empty())
}

/// Per-axis specs from scales or sizes (with opset 18 axes and aspect policy).
fn axis_specs(
    ctx: &OpCtx,
    x: &Tensor,
    inputs: &[Option<&Tensor>],
    legacy: bool,
) -> OpResult<Vec<AxisSpec>> {
    let dims = x.shape();
    let r = dims.len();
    let axes: Vec<usize> = match ctx.node.get_ints("axes").map_err(attr_err)? {
        Some(a) if ctx.opset >= 18 => a.iter().map(|&v| axis_of(v, r)).collect::<OpResult<_>>()?,
        _ => (0..r).collect(),
    };
    let k = axes.len();
    let mut specs: Vec<AxisSpec> = dims
        .iter()
        .map(|&d| AxisSpec {
            in_len: d,
            out_len: d,
            scale: 1.0,
            roi_start: 0.0,
            roi_end: 1.0,
        })
        .collect();
    let (scales_i, sizes_i, roi_i) = if legacy {
        (1, usize::MAX, usize::MAX)
    } else {
        (2, 3, 1)
    };
    if let Some(roi) = present(inputs, roi_i) {
        let roi = roi.to_f64_vec()?;
        if roi.len() != 2 * k {
            return Err(invalid!("roi has {} values for {k} axes", roi.len()));
        }
        for (i, &a) in axes.iter().enumerate() {
            specs[a].roi_start = roi[i];
            specs[a].roi_end = roi[i + k];
        }
    }
    let attr_scales = if ctx.node.op_type == "Upsample" && ctx.opset < 9 {
        ctx.node
            .get_floats("scales")
            .map_err(attr_err)?
            .map(|v| v.iter().map(|&s| s as f64).collect())
    } else {
        None
    };
    let scales = match attr_scales {
        Some(s) => Some(s),
        None => present(inputs, scales_i)
            .map(|t| t.to_f64_vec())
            .transpose()?,
    };
    if let Some(scales) = scales {
        if scales.len() != k {
            return Err(invalid!("{} scales for {k} axes", scales.len()));
        }
        for (&a, &s) in axes.iter().zip(&scales) {
            if s.is_nan() || s <= 0.0 || !s.is_finite() {
                return Err(invalid!("bad scale {s}"));
            }
            let sp = &mut specs[a];
            sp.scale = s;
            sp.out_len = (s * sp.in_len as f64).floor() as usize;
        }
        return Ok(specs);
    }
    let sizes = present(inputs, sizes_i).ok_or_else(|| invalid!("Resize needs scales or sizes"))?;
    let sizes = to_dims(&sizes.to_i64_vec()?)?;
    if sizes.len() != k {
        return Err(invalid!("{} sizes for {k} axes", sizes.len()));
    }
    let policy = ctx
        .node
        .string_or("keep_aspect_ratio_policy", "stretch")
        .map_err(attr_err)?;
    let ratios = axes
        .iter()
        .zip(&sizes)
        .map(|(&a, &s)| s as f64 / dims[a] as f64);
    let common = match policy.as_str() {
        "stretch" => None,
        "not_larger" => Some(ratios.fold(f64::INFINITY, f64::min)),
        "not_smaller" => Some(ratios.fold(0.0, f64::max)),
        other => return Err(invalid!("unknown keep_aspect_ratio_policy '{other}'")),
    };
    for (&a, &s) in axes.iter().zip(&sizes) {
        let sp = &mut specs[a];
        match common {
            None => {
                sp.out_len = s;
                sp.scale = s as f64 / sp.in_len as f64;
            }
            Some(c) => {
                sp.scale = c;
                sp.out_len = (c * sp.in_len as f64 + 0.5).floor() as usize;
            }
        }
    }
    Ok(specs)
}

fn resize(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let p = Params::parse(ctx)?;
    let specs = axis_specs(ctx, x, inputs, ctx.opset < 11)?;
    check_numel(&specs.iter().map(|s| s.out_len).collect::<Vec<_>>())?;
    one(run(x, &specs, &p)?)
}

fn upsample(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let p = Params::parse(ctx)?;
    let specs = axis_specs(ctx, x, inputs, true)?;
    check_numel(&specs.iter().map(|s| s.out_len).collect::<Vec<_>>())?;
    one(run(x, &specs, &p)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `src` interpolated along `axis` into a new array.
    fn interp_axis(
        src: &[f32],
        shape: &[usize],
        axis: usize,
        taps: &TapTable,
        extrapolation: f32,
    ) -> Vec<f32> {
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let mut out = vec![0f32; outer * taps.len() * inner];
        interp_axis_into(src, shape, axis, taps, extrapolation, &mut out);
        out
    }

    #[test]
    fn two_tap_rows_round_as_two_passes() {
        let s: Vec<f32> = (0..96)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        for (idx, w) in [
            ([0, 2], [0.3f32, 0.7f32]),
            ([1, 1], [0.25, 0.75]),
            ([2, 0], [1.0, 0.0]),
        ] {
            let mut got = vec![0f32; 32];
            combine_rows(&mut got, &s, 32, &idx, &w);
            for (k, g) in got.iter().enumerate() {
                let mut d = w[0] * s[idx[0] * 32 + k];
                if w[1] != 0.0 {
                    d += w[1] * s[idx[1] * 32 + k];
                }
                assert_eq!(g.to_bits(), d.to_bits());
            }
        }
    }

    #[test]
    fn vector_two_tap_gather_matches_the_scalar_taps_bit_for_bit() {
        // 8 -> 37 along the contiguous axis: two 16-wide gathers and a
        // scalar tail per row; 3 rows; every coordinate mode's taps.
        let src: Vec<f32> = (0..24)
            .map(|i| ((i * 29 % 31) as f32 - 15.0) / 3.0)
            .collect();
        for ctm in [
            Ctm::HalfPixel,
            Ctm::PytorchHalfPixel,
            Ctm::AlignCorners,
            Ctm::Asymmetric,
        ] {
            let taps = spec(8, 37).tap_table(&params(Mode::Linear, ctm));
            assert!(TwoTaps::of(&taps).is_some());
            let got = interp_axis(&src, &[3, 8], 1, &taps, 0.0);
            for r in 0..3 {
                let s = &src[r * 8..(r + 1) * 8];
                for j in 0..37 {
                    let (i, w) = taps.row(j);
                    let want = w[0] * s[i[0]] + w[1] * s[i[1]];
                    assert_eq!(
                        got[r * 37 + j].to_bits(),
                        want.to_bits(),
                        "{ctm:?} row {r} j {j}"
                    );
                }
            }
        }
    }

    fn params(mode: Mode, ctm: Ctm) -> Params {
        Params {
            mode,
            ctm,
            nearest: NearestMode::RoundPreferFloor,
            cubic_a: -0.75,
            exclude_outside: false,
            extrapolation: 0.0,
            antialias: false,
        }
    }

    fn spec(i: usize, o: usize) -> AxisSpec {
        AxisSpec {
            in_len: i,
            out_len: o,
            scale: o as f64 / i as f64,
            roi_start: 0.0,
            roi_end: 1.0,
        }
    }

    #[test]
    fn linear_half_pixel_upsample() {
        // [0, 4] upsampled x2 (half_pixel): coords -0.25, 0.25, 0.75, 1.25
        // → clamped edges 0, 1, 3, 4.
        let p = params(Mode::Linear, Ctm::HalfPixel);
        let taps = spec(2, 4).tap_table(&p);
        let out = interp_axis(&[0.0, 4.0], &[2], 0, &taps, 0.0);
        assert_eq!(out, vec![0.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn bilinear_align_corners() {
        // 2x2 [[0,1],[2,3]] → 3x3 align_corners: centre is the mean 1.5.
        let p = params(Mode::Linear, Ctm::AlignCorners);
        let x = Tensor::from_f32(&[2, 2], vec![0.0, 1.0, 2.0, 3.0]).unwrap();
        let y = run(&x, &[spec(2, 3), spec(2, 3)], &p).unwrap();
        let v = y.as_f32().unwrap().iter().copied().collect::<Vec<_>>();
        assert_eq!(v, vec![0.0, 0.5, 1.0, 1.0, 1.5, 2.0, 2.0, 2.5, 3.0]);
    }

    #[test]
    fn cubic_at_grid_points_and_midpoint() {
        // Integer coordinates reproduce the input; the interior midpoint of a
        // ramp is exact (1.5); near the edges the clamped taps pull inwards.
        let p = params(Mode::Cubic, Ctm::AlignCorners);
        let sp = AxisSpec {
            in_len: 4,
            out_len: 7,
            scale: 7.0 / 4.0,
            roi_start: 0.0,
            roi_end: 1.0,
        };
        let out = interp_axis(&[0.0, 1.0, 2.0, 3.0], &[4], 0, &sp.tap_table(&p), 0.0);
        for (o, e) in out.iter().zip([0.0, 0.40625, 1.0, 1.5, 2.0, 2.59375, 3.0]) {
            assert!((o - e).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn nearest_modes() {
        let mut p = params(Mode::Nearest, Ctm::Asymmetric);
        p.nearest = NearestMode::Floor;
        assert_eq!(
            spec(2, 4).nearest_map(&p),
            vec![Some(0), Some(0), Some(1), Some(1)]
        );
    }
}
