//! Resize (nearest, linear on at most two axes) and GridSample (bilinear or
//! nearest, zeros or border padding) with Q16 interpolation weights
//! (docs/integer-semantics.md §14).

use crate::error::{BpuError, Result};
use crate::fixed_point::{rne_i64, Requant};
use crate::qint::QInt;
use crate::reference::common::for_each_index;
use crate::shape_err;
use crate::tensor::{numel, strides, QTensor, TensorRef};

/// Interpolation weights are Q16.
pub const WEIGHT_BITS: u32 = 16;
const ONE: i64 = 1 << WEIGHT_BITS;

/// Resize `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    /// `nearest`.
    Nearest,
    /// `linear` (bilinear on NCHW).
    Linear,
}

/// `coordinate_transformation_mode` (tf_crop_and_resize runs on the CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordMode {
    /// `half_pixel`.
    HalfPixel,
    /// `half_pixel_symmetric`.
    HalfPixelSymmetric,
    /// `pytorch_half_pixel`.
    PytorchHalfPixel,
    /// `align_corners`.
    AlignCorners,
    /// `asymmetric`.
    Asymmetric,
    /// `tf_half_pixel_for_nn`.
    TfHalfPixelForNn,
}

/// `nearest_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NearestMode {
    /// `round_prefer_floor`.
    RoundPreferFloor,
    /// `round_prefer_ceil`.
    RoundPreferCeil,
    /// `floor`.
    Floor,
    /// `ceil`.
    Ceil,
}

/// Resize attributes, resolved: the output shape and the per-axis scale
/// (`out / in` when the model gave sizes).
#[derive(Debug, Clone, PartialEq)]
pub struct ResizeParams {
    /// Interpolation mode.
    pub mode: ResizeMode,
    /// Coordinate transformation.
    pub coord: CoordMode,
    /// Rounding of nearest.
    pub nearest: NearestMode,
    /// Output shape (same rank as the input).
    pub out_shape: Vec<usize>,
    /// Scale per axis.
    pub scales: Vec<f64>,
}

/// The f64 source coordinate of output position `x` on an axis (as the
/// float kernel and the ONNX reference).
pub fn source_coord(x: usize, in_len: usize, out_len: usize, scale: f64, c: CoordMode) -> f64 {
    let (x, s) = (x as f64, scale);
    let (li, lo) = (in_len as f64, s * in_len as f64);
    match c {
        CoordMode::HalfPixel => (x + 0.5) / s - 0.5,
        CoordMode::HalfPixelSymmetric => {
            let adjustment = out_len as f64 / lo;
            let offset = li / 2.0 * (1.0 - adjustment);
            offset + (x + 0.5) / s - 0.5
        }
        CoordMode::PytorchHalfPixel if lo > 1.0 => (x + 0.5) / s - 0.5,
        CoordMode::PytorchHalfPixel => 0.0,
        CoordMode::AlignCorners if lo > 1.0 => x * (li - 1.0) / (lo - 1.0),
        CoordMode::AlignCorners => 0.0,
        CoordMode::Asymmetric => x / s,
        CoordMode::TfHalfPixelForNn => (x + 0.5) / s,
    }
}

/// Per output position of one axis: the taps `(index, weight)`; weights sum
/// to `2^16` on interpolated axes and are `[(i, 1)]` on identity axes.
fn axis_taps(
    in_len: usize,
    out_len: usize,
    scale: f64,
    p: &ResizeParams,
) -> (bool, Vec<Vec<(usize, i64)>>) {
    let identity = in_len == out_len && scale == 1.0;
    let last = in_len.saturating_sub(1) as i64;
    let taps = (0..out_len)
        .map(|o| {
            if identity {
                return vec![(o, 1)];
            }
            let c = source_coord(o, in_len, out_len, scale, p.coord);
            match p.mode {
                ResizeMode::Nearest => {
                    let f = c.floor();
                    let r = c - f;
                    let up = r != 0.0
                        && match p.nearest {
                            NearestMode::RoundPreferFloor => r > 0.5,
                            NearestMode::RoundPreferCeil => r >= 0.5,
                            NearestMode::Floor => false,
                            NearestMode::Ceil => true,
                        };
                    vec![(((f as i64) + i64::from(up)).clamp(0, last) as usize, 1)]
                }
                ResizeMode::Linear => {
                    let pos = rne_i64(c * ONE as f64);
                    let i0 = pos >> WEIGHT_BITS;
                    let t = pos - (i0 << WEIGHT_BITS);
                    vec![
                        (i0.clamp(0, last) as usize, ONE - t),
                        ((i0 + 1).clamp(0, last) as usize, t),
                    ]
                }
            }
        })
        .collect();
    (!identity && p.mode == ResizeMode::Linear, taps)
}

/// The per-axis source positions of a Resize that interpolates on no
/// axis (nearest mode, or linear on identity axes only), with the
/// requantisation [`resize`] applies: the engine's fast path computes the
/// same `R(x[src])`. `Ok(None)` when some axis interpolates or the
/// parameters do not fit `shape` (the reference reports those).
pub fn nearest_sources(
    shape: &[usize],
    p: &ResizeParams,
    s_x: f32,
    s_y: f32,
) -> Result<Option<(Vec<Vec<usize>>, Requant)>> {
    if p.out_shape.len() != shape.len()
        || p.scales.len() != shape.len()
        || p.scales.iter().any(|s| !(s.is_finite() && *s > 0.0))
        || (shape.contains(&0) && numel(&p.out_shape)? > 0)
    {
        return Ok(None);
    }
    let mut src = Vec::with_capacity(shape.len());
    for d in 0..shape.len() {
        let (active, taps) = axis_taps(shape[d], p.out_shape[d], p.scales[d], p);
        if active || taps.iter().any(|t| t.len() != 1 || t[0].1 != 1) {
            return Ok(None);
        }
        src.push(taps.iter().map(|t| t[0].0).collect());
    }
    let r = Requant::from_ratio(f64::from(s_x) / f64::from(s_y))?;
    Ok(Some((src, r)))
}

/// Taps along the last two axes of a Resize whose other axes are identity
/// (the usual NCHW upsampling), with the requantisation [`resize`] applies
/// to the tap sums: the engine's fast path computes the same
/// `R(Σ x·w_h·w_w)`. `Ok(None)` when a leading axis changes or the
/// parameters do not fit `shape`.
#[allow(clippy::type_complexity)]
pub fn plane_taps(
    shape: &[usize],
    p: &ResizeParams,
    s_x: f32,
    s_y: f32,
) -> Result<Option<(Vec<Vec<(usize, i64)>>, Vec<Vec<(usize, i64)>>, Requant)>> {
    let r = shape.len();
    if r < 2
        || p.out_shape.len() != r
        || p.scales.len() != r
        || p.scales.iter().any(|s| !(s.is_finite() && *s > 0.0))
        || shape.contains(&0)
    {
        return Ok(None);
    }
    if (0..r - 2).any(|d| shape[d] != p.out_shape[d] || p.scales[d] != 1.0) {
        return Ok(None);
    }
    let (ah, th) = axis_taps(shape[r - 2], p.out_shape[r - 2], p.scales[r - 2], p);
    let (aw, tw) = axis_taps(shape[r - 1], p.out_shape[r - 1], p.scales[r - 1], p);
    let active = u32::from(ah) + u32::from(aw);
    let ratio = f64::from(s_x) / (f64::from(s_y) * ((WEIGHT_BITS * active) as f64).exp2());
    Ok(Some((th, tw, Requant::from_ratio(ratio)?)))
}

/// Resize: nearest copies requantised by `R(s_x/s_y)`; linear sums
/// `q · Π w` exactly and requantises by `R(s_x / (s_y · 2^(16·a)))`.
pub fn resize<I: QInt, O: QInt>(
    x: TensorRef<'_, I>,
    p: &ResizeParams,
    s_x: f32,
    s_y: f32,
) -> Result<QTensor<O>> {
    let shape = x.shape();
    if p.out_shape.len() != shape.len() || p.scales.len() != shape.len() {
        return Err(shape_err!(
            "resize of {shape:?} to {:?} with scales {:?}",
            p.out_shape,
            p.scales
        ));
    }
    if p.scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(crate::param_err!(
            "resize scales {:?} must be positive",
            p.scales
        ));
    }
    if shape.contains(&0) && numel(&p.out_shape)? > 0 {
        return Err(shape_err!("resize of an empty tensor {shape:?}"));
    }
    let mut active = 0u32;
    let mut taps = Vec::with_capacity(shape.len());
    for d in 0..shape.len() {
        let (a, t) = axis_taps(shape[d], p.out_shape[d], p.scales[d], p);
        active += u32::from(a);
        taps.push(t);
    }
    if active > 2 {
        return Err(BpuError::Unsupported(format!(
            "linear resize over {active} axes (the BPU interpolates at most 2)"
        )));
    }
    let ratio = f64::from(s_x) / (f64::from(s_y) * ((WEIGHT_BITS * active) as f64).exp2());
    let r = Requant::from_ratio(ratio)?;
    let st = strides(shape);
    let mut out = Vec::with_capacity(numel(&p.out_shape)?);
    for_each_index(&p.out_shape, |o| {
        let per_axis: Vec<&Vec<(usize, i64)>> =
            o.iter().enumerate().map(|(d, &i)| &taps[d][i]).collect();
        let counts: Vec<usize> = per_axis.iter().map(|t| t.len()).collect();
        let mut acc = 0i64;
        for_each_index(&counts, |k| {
            let mut idx = 0usize;
            let mut w = 1i64;
            for d in 0..k.len() {
                let (i, wd) = per_axis[d][k[d]];
                idx += i * st[d];
                w *= wd;
            }
            acc += x.data()[idx].to_i64() * w;
        });
        out.push(r.apply::<O>(acc));
    });
    QTensor::new(p.out_shape.clone(), out)
}

/// GridSample `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridMode {
    /// `bilinear` / `linear`.
    Bilinear,
    /// `nearest` (ties round up).
    Nearest,
}

/// GridSample `padding_mode` (reflection runs on the CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridPadding {
    /// Outside samples are 0.
    Zeros,
    /// Coordinates clamp to the image.
    Border,
}

/// GridSample attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridSampleParams {
    /// Interpolation.
    pub mode: GridMode,
    /// Padding.
    pub padding: GridPadding,
    /// `align_corners`.
    pub align_corners: bool,
}

/// The Q16 pixel coordinate map of one axis of length `len`:
/// `P = R(s_g · A · 2^16)(q_g) + (len − 1) · 2^15`.
fn coord_map(len: usize, s_g: f32, align_corners: bool) -> Result<impl Fn(i64) -> i64> {
    let a = if align_corners {
        (len as f64 - 1.0) / 2.0
    } else {
        len as f64 / 2.0
    };
    let r = Requant::from_ratio(f64::from(s_g) * a * ONE as f64)?;
    let off = (len as i64 - 1) << (WEIGHT_BITS - 1);
    // Far-off coordinates are clamped to ±2^60 (still outside any image).
    Ok(move |q: i64| r.apply_wide(q).clamp(-(1 << 60), 1 << 60) as i64 + off)
}

/// GridSample on 4-D input `x` `[N, C, H, W]` with grid `[N, Ho, Wo, 2]`
/// (x, y in `[−1, 1]` at scale `s_g`); output `[N, C, Ho, Wo]`.
pub fn grid_sample<X: QInt, G: QInt, O: QInt>(
    x: TensorRef<'_, X>,
    grid: TensorRef<'_, G>,
    s_x: f32,
    s_g: f32,
    s_y: f32,
    p: GridSampleParams,
) -> Result<QTensor<O>> {
    let (xs, gs) = (x.shape(), grid.shape());
    if xs.len() != 4 || gs.len() != 4 || gs[3] != 2 || gs[0] != xs[0] {
        return Err(shape_err!(
            "grid_sample needs x [N,C,H,W] and grid [N,Ho,Wo,2], got {xs:?}, {gs:?}"
        ));
    }
    let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let (ho, wo) = (gs[1], gs[2]);
    let fx = coord_map(w, s_g, p.align_corners)?;
    let fy = coord_map(h, s_g, p.align_corners)?;
    let (bilinear, shift) = match p.mode {
        GridMode::Bilinear => (true, 2 * WEIGHT_BITS),
        GridMode::Nearest => (false, 0),
    };
    let r = Requant::from_ratio(f64::from(s_x) / (f64::from(s_y) * f64::from(shift).exp2()))?;
    let clamp_p = |v: i64, len: usize| -> i64 {
        match p.padding {
            GridPadding::Border => v.clamp(0, (len as i64 - 1).max(0) << WEIGHT_BITS),
            GridPadding::Zeros => v,
        }
    };
    // Taps (index or None = zero, weight) of one coordinate.
    let taps = |v: i64, len: usize| -> Vec<(Option<usize>, i64)> {
        let inside = |i: i64| (0..len as i64).contains(&i).then_some(i as usize);
        if bilinear {
            let i0 = v >> WEIGHT_BITS;
            let t = v - (i0 << WEIGHT_BITS);
            vec![(inside(i0), ONE - t), (inside(i0 + 1), t)]
        } else {
            vec![(inside((v + (ONE >> 1)) >> WEIGHT_BITS), 1)]
        }
    };
    let gd = grid.data();
    let mut out = Vec::with_capacity(n * c * ho * wo);
    for b in 0..n {
        let mut cells = Vec::with_capacity(ho * wo);
        for k in 0..ho * wo {
            let g = (b * ho * wo + k) * 2;
            let px = clamp_p(fx(gd[g].to_i64()), w);
            let py = clamp_p(fy(gd[g + 1].to_i64()), h);
            cells.push((taps(py, h), taps(px, w)));
        }
        for ch in 0..c {
            let plane = &x.data()[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
            for (ty, tx) in &cells {
                let mut acc = 0i64;
                for &(iy, wy) in ty {
                    for &(ix, wx) in tx {
                        if let (Some(iy), Some(ix)) = (iy, ix) {
                            acc += plane[iy * w + ix].to_i64() * wy * wx;
                        }
                    }
                }
                out.push(r.apply::<O>(acc));
            }
        }
    }
    QTensor::new(vec![n, c, ho, wo], out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(mode: ResizeMode, coord: CoordMode, out: &[usize], scales: &[f64]) -> ResizeParams {
        ResizeParams {
            mode,
            coord,
            nearest: NearestMode::RoundPreferFloor,
            out_shape: out.to_vec(),
            scales: scales.to_vec(),
        }
    }

    #[test]
    fn linear_half_pixel_and_align_corners() {
        // [0, 40] ×2 half_pixel: coords -0.25, 0.25, 0.75, 1.25 → 0, 10, 30, 40.
        let x = [0i8, 40];
        let t = TensorRef::new(&x, &[1, 2]).unwrap();
        let p = params(
            ResizeMode::Linear,
            CoordMode::HalfPixel,
            &[1, 4],
            &[1.0, 2.0],
        );
        let y: QTensor<i8> = resize(t, &p, 1.0, 1.0).unwrap();
        assert_eq!(y.data, vec![0, 10, 30, 40]);
        // 2x2 → 3x3 align_corners: centre = mean 15.
        let x = [0i8, 10, 20, 30];
        let t = TensorRef::new(&x, &[1, 1, 2, 2]).unwrap();
        let p = params(
            ResizeMode::Linear,
            CoordMode::AlignCorners,
            &[1, 1, 3, 3],
            &[1.0, 1.0, 1.5, 1.5],
        );
        let y: QTensor<i8> = resize(t, &p, 1.0, 1.0).unwrap();
        assert_eq!(y.data, vec![0, 5, 10, 10, 15, 20, 20, 25, 30]);
        let p3 = params(
            ResizeMode::Linear,
            CoordMode::AlignCorners,
            &[1, 2, 3, 3],
            &[1.0, 2.0, 1.5, 1.5],
        );
        assert!(matches!(
            resize::<i8, i8>(t, &p3, 1.0, 1.0),
            Err(BpuError::Unsupported(_))
        ));
    }

    #[test]
    fn nearest_modes() {
        let x = [1i8, 2, 3];
        let t = TensorRef::new(&x, &[3]).unwrap();
        let mut p = params(ResizeMode::Nearest, CoordMode::Asymmetric, &[6], &[2.0]);
        let y: QTensor<i8> = resize(t, &p, 1.0, 1.0).unwrap();
        assert_eq!(y.data, vec![1, 1, 2, 2, 3, 3]);
        p.nearest = NearestMode::Ceil;
        let y: QTensor<i8> = resize(t, &p, 1.0, 1.0).unwrap();
        assert_eq!(y.data, vec![1, 2, 2, 3, 3, 3]);
        // Requantised copy to a coarser scale.
        let y: QTensor<i8> = resize(t, &p, 1.0, 2.0).unwrap();
        assert_eq!(y.data, vec![1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn grid_sample_by_hand() {
        // 2x2 image, grid at the centre (0, 0) → mean; align_corners = 1
        // corners map to pixels exactly.
        let x = [0i8, 10, 20, 30];
        let xt = TensorRef::new(&x, &[1, 1, 2, 2]).unwrap();
        let g = [0i8, 0, -127, -127, 127, 127, 127, -127];
        let gt = TensorRef::new(&g, &[1, 1, 4, 2]).unwrap();
        let p = GridSampleParams {
            mode: GridMode::Bilinear,
            padding: GridPadding::Zeros,
            align_corners: true,
        };
        let y: QTensor<i8> = grid_sample(xt, gt, 1.0, 1.0 / 127.0, 1.0, p).unwrap();
        assert_eq!(y.data, vec![15, 0, 30, 10]);
        // align_corners = 0: the corner (-1, -1) is half a pixel outside:
        // zeros padding gives 0/4 of... weight 1/4 on pixel (0,0) = 0.
        let p0 = GridSampleParams {
            align_corners: false,
            ..p
        };
        let y: QTensor<i8> = grid_sample(xt, gt, 1.0, 1.0 / 127.0, 1.0, p0).unwrap();
        assert_eq!(y.data, vec![15, 0, 8, 3]); // 30/4 = 7.5 → 8; 10/4 = 2.5 → 3
        let pb = GridSampleParams {
            padding: GridPadding::Border,
            ..p0
        };
        let y: QTensor<i8> = grid_sample(xt, gt, 1.0, 1.0 / 127.0, 1.0, pb).unwrap();
        assert_eq!(y.data, vec![15, 0, 30, 10]);
        let pn = GridSampleParams {
            mode: GridMode::Nearest,
            ..p
        };
        let y: QTensor<i8> = grid_sample(xt, gt, 1.0, 1.0 / 127.0, 1.0, pn).unwrap();
        assert_eq!(y.data, vec![30, 0, 30, 10]); // centre 0.5 ties up
        let bad = TensorRef::new(&x, &[1, 1, 1, 4]).unwrap();
        assert!(grid_sample::<i8, i8, i8>(xt, bad, 1.0, 1.0, 1.0, p).is_err());
    }
}
