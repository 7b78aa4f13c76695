//! GridSample (opsets 16, 20): N-D nearest / linear / cubic sampling with
//! zeros, border and reflection padding.
//!
//! For every output position the per-dimension taps (source index or
//! "zero", weight) are computed once and expanded into flat
//! `(offset, weight)` pairs shared by all channels; channels then run in
//! parallel.

use super::remap::{next_index, std_data, strides_of};
use super::util::{attr_err, input, one};
use crate::error::OpResult;
use crate::registry::{OpCtx, Registry};
use crate::{invalid, unsupported};
use hb_tensor::Tensor;
use rayon::prelude::*;

/// Registers GridSample.
pub fn register(r: &mut Registry) {
    r.register("GridSample", grid_sample);
}

/// Sampling mode.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

/// Padding of out-of-range samples.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Padding {
    Zeros,
    Border,
    Reflection,
}

/// Sampling settings.
#[derive(Clone, Copy, Debug)]
struct Settings {
    mode: Mode,
    padding: Padding,
    align_corners: bool,
}

impl Settings {
    fn parse(ctx: &OpCtx) -> OpResult<Self> {
        let n = ctx.node;
        let default_mode = if ctx.opset >= 20 {
            "linear"
        } else {
            "bilinear"
        };
        let mode = match n
            .string_or("mode", default_mode)
            .map_err(attr_err)?
            .as_str()
        {
            "nearest" => Mode::Nearest,
            "linear" | "bilinear" => Mode::Linear,
            "cubic" | "bicubic" => Mode::Cubic,
            m => return Err(invalid!("unknown GridSample mode '{m}'")),
        };
        let padding = match n
            .string_or("padding_mode", "zeros")
            .map_err(attr_err)?
            .as_str()
        {
            "zeros" => Padding::Zeros,
            "border" => Padding::Border,
            "reflection" => Padding::Reflection,
            m => return Err(invalid!("unknown padding_mode '{m}'")),
        };
        let align_corners = n.int_or("align_corners", 0).map_err(attr_err)? != 0;
        Ok(Settings {
            mode,
            padding,
            align_corners,
        })
    }

    /// The valid coordinate range `[min, max]` of a dimension of length `d`.
    fn bounds(&self, d: usize) -> (f64, f64) {
        if self.align_corners {
            (0.0, d as f64 - 1.0)
        } else {
            (-0.5, d as f64 - 0.5)
        }
    }

    /// Normalized `[-1, 1]` coordinate → pixel coordinate.
    fn denormalize(&self, v: f64, d: usize) -> f64 {
        if self.align_corners {
            (v + 1.0) / 2.0 * (d as f64 - 1.0)
        } else {
            ((v + 1.0) * d as f64 - 1.0) / 2.0
        }
    }
}

/// Reflects `x` by the nearer border until it lies in `[lo, hi]`.
fn reflect(x: f64, lo: f64, hi: f64) -> f64 {
    let rng = hi - lo;
    if rng <= 0.0 {
        return lo;
    }
    let (dx, from_lo) = if x < lo {
        (lo - x, true)
    } else if x > hi {
        (x - hi, false)
    } else {
        return x;
    };
    let n = (dx / rng).trunc();
    let r = dx - n * rng;
    let even = (n as i64) % 2 == 0;
    if even == from_lo {
        lo + r
    } else {
        hi - r
    }
}

/// Keys cubic coefficients (a = -0.75) for the 4 taps around fraction `t`.
fn cubic_coeffs(t: f64) -> [f64; 4] {
    let a = -0.75;
    let far = |x: f64| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    let near = |x: f64| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Source index of tap `i` along a dimension of length `d` (None = zero).
fn tap_index(i: i64, d: usize, s: &Settings) -> Option<usize> {
    let last = d as i64 - 1;
    match s.padding {
        Padding::Zeros => (0..=last).contains(&i).then_some(i as usize),
        Padding::Border => Some(i.clamp(0, last) as usize),
        Padding::Reflection => {
            let (lo, hi) = s.bounds(d);
            Some((reflect(i as f64, lo, hi).trunc() as i64).clamp(0, last) as usize)
        }
    }
}

/// Taps `(index, weight)` along one dimension for pixel coordinate `v`.
fn dim_taps(v: f64, d: usize, s: &Settings) -> Vec<(Option<usize>, f64)> {
    // Nearest rounds half to even (std::nearbyint), in every rank.
    let mut x = if s.mode == Mode::Nearest {
        v.round_ties_even()
    } else {
        v
    };
    let (lo, hi) = s.bounds(d);
    if x < lo || x > hi {
        x = match s.padding {
            Padding::Border => x.clamp(0.0, d as f64 - 1.0),
            Padding::Reflection => reflect(x, lo, hi),
            Padding::Zeros => x,
        };
    }
    let x0 = x.floor();
    let t = x - x0;
    let x0 = x0 as i64;
    match s.mode {
        Mode::Nearest => vec![(tap_index(x.trunc() as i64, d, s), 1.0)],
        Mode::Linear => vec![
            (tap_index(x0, d, s), 1.0 - t),
            (tap_index(x0.saturating_add(1), d, s), t),
        ],
        Mode::Cubic => cubic_coeffs(t)
            .iter()
            .enumerate()
            .map(|(k, &w)| (tap_index(x0.saturating_add(k as i64 - 1), d, s), w))
            .collect(),
    }
}

/// Expands per-dimension taps into flat `(offset, weight)` pairs.
fn expand_taps(
    per_dim: &[Vec<(Option<usize>, f64)>],
    strides: &[usize],
    out: &mut Vec<(usize, f32)>,
) {
    let lens: Vec<usize> = per_dim.iter().map(Vec::len).collect();
    if lens.contains(&0) {
        return;
    }
    let mut k = vec![0usize; per_dim.len()];
    loop {
        let mut off = Some(0usize);
        let mut w = 1.0f64;
        for (dim, &j) in k.iter().enumerate() {
            let (idx, wd) = per_dim[dim][j];
            w *= wd;
            off = off.zip(idx).map(|(o, i)| o + i * strides[dim]);
        }
        if let Some(o) = off {
            if w != 0.0 {
                out.push((o, w as f32));
            }
        }
        if !next_index(&mut k, &lens) {
            break;
        }
    }
}

fn grid_sample(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let grid = input(inputs, 1)?;
    let s = Settings::parse(ctx)?;
    if !x.dtype().is_float() {
        return Err(unsupported!("GridSample on {}", x.dtype()));
    }
    let xs = x.shape().to_vec();
    let gs = grid.shape().to_vec();
    let r = xs.len().saturating_sub(2);
    if r == 0 || xs[2..].contains(&0) || gs.len() != r + 2 || gs[0] != xs[0] || gs[r + 1] != r {
        return Err(invalid!(
            "GridSample: input {xs:?} and grid {gs:?} do not fit"
        ));
    }
    let (n, c) = (xs[0], xs[1]);
    let dims = &xs[2..];
    let out_sp = &gs[1..=r];
    let npos: usize = out_sp.iter().product();
    let xf = x.to_f32_cow()?;
    let data = std_data(&xf);
    let gf = grid.to_f32_cow()?;
    let g = std_data(&gf);
    let strides = strides_of(dims);
    let plane: usize = dims.iter().product();
    let mut out = vec![0f32; n * c * npos];
    for b in 0..n {
        let mut taps: Vec<Vec<(usize, f32)>> = Vec::with_capacity(npos);
        for p in 0..npos {
            let coords = &g[(b * npos + p) * r..(b * npos + p + 1) * r];
            let per_dim: Vec<_> = (0..r)
                .map(|k| {
                    let v = s.denormalize(coords[r - 1 - k] as f64, dims[k]);
                    dim_taps(v, dims[k], &s)
                })
                .collect();
            let mut t = Vec::new();
            expand_taps(&per_dim, &strides, &mut t);
            taps.push(t);
        }
        out[b * c * npos..(b + 1) * c * npos]
            .par_chunks_mut(npos.max(1))
            .enumerate()
            .for_each(|(ch, o)| {
                let src = &data[(b * c + ch) * plane..(b * c + ch + 1) * plane];
                for (v, t) in o.iter_mut().zip(&taps) {
                    *v = t.iter().map(|&(i, w)| w * src[i]).sum();
                }
            });
    }
    let mut oshape = vec![n, c];
    oshape.extend_from_slice(out_sp);
    let y = Tensor::from_vec(&oshape, out)?;
    one(if y.dtype() == x.dtype() {
        y
    } else {
        y.cast(x.dtype())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mode: Mode, padding: Padding, align_corners: bool) -> Settings {
        Settings {
            mode,
            padding,
            align_corners,
        }
    }

    #[test]
    fn mismatched_grid_is_error() {
        let node = hb_ir::Node::new("n", "GridSample", &["x", "g"], &["y"]);
        let ctx = OpCtx {
            node: &node,
            opset: 20,
        };
        let x = Tensor::from_f32(&[1, 1, 2, 2], vec![0.0; 4]).unwrap();
        let g = Tensor::from_f32(&[1, 1, 1, 3], vec![0.0; 3]).unwrap();
        assert!(grid_sample(&ctx, &[Some(&x), Some(&g)]).is_err());
        let g = Tensor::from_f32(&[1, 1, 1, 2], vec![f32::INFINITY, f32::NAN]).unwrap();
        assert!(grid_sample(&ctx, &[Some(&x), Some(&g)]).is_ok());
    }

    #[test]
    fn bilinear_centre_of_2x2() {
        // Grid point (0, 0) is the centre of a 2x2 image: the mean.
        let s = settings(Mode::Linear, Padding::Zeros, false);
        let per_dim: Vec<_> = (0..2)
            .map(|_| dim_taps(s.denormalize(0.0, 2), 2, &s))
            .collect();
        let mut t = Vec::new();
        expand_taps(&per_dim, &[2, 1], &mut t);
        let img = [1.0f32, 2.0, 3.0, 4.0];
        let v: f32 = t.iter().map(|&(i, w)| w * img[i]).sum();
        assert!((v - 2.5).abs() < 1e-6);
    }

    #[test]
    fn zeros_padding_outside_and_reflection() {
        let s = settings(Mode::Linear, Padding::Zeros, true);
        // Pixel coordinate -1 (outside): taps -1 (zero, w 1) and 0 (w 0).
        let t = dim_taps(-1.0, 3, &s);
        assert_eq!(t[0].0, None);
        assert!((reflect(-1.0, 0.0, 2.0) - 1.0).abs() < 1e-12);
        assert!((reflect(5.0, 0.0, 2.0) - 1.0).abs() < 1e-12);
    }
}
