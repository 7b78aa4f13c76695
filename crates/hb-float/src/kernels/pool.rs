//! Pooling: MaxPool (with Indices), AveragePool, LpPool, their Global forms
//! and MaxUnpool, over 1-D/2-D/3-D inputs.

use crate::error::OpResult;
use crate::kernels::floatio::{contiguous, f32_of, to_dtype, to_vec};
use crate::kernels::spatial::{Geom, WindowAttrs};
use crate::kernels::util::{input, ints_input, one};
use crate::registry::{OpCtx, Registry};
use crate::{invalid, unsupported};
use hb_tensor::tensor::Scalar;
use hb_tensor::Tensor;
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

/// Registers the pooling kernels.
pub fn register(r: &mut Registry) {
    r.register("MaxPool", max_pool);
    r.register("AveragePool", average_pool);
    r.register("LpPool", lp_pool);
    r.register("GlobalMaxPool", global_max_pool);
    r.register("GlobalAveragePool", global_average_pool);
    r.register("GlobalLpPool", global_lp_pool);
    r.register("MaxUnpool", max_unpool);
}

/// A pooling window over one input tensor: geometry plus planes.
struct Pooling {
    geom: Geom,
    /// `N·C` planes.
    planes: usize,
    /// Output shape.
    out_shape: Vec<usize>,
}

impl Pooling {
    fn new(ctx: &OpCtx, shape: &[usize]) -> OpResult<Self> {
        if shape.len() < 3 {
            return Err(invalid!(
                "pooling needs an input of rank >= 3, got {shape:?}"
            ));
        }
        let attrs = WindowAttrs::read(ctx, shape.len() - 2, None)?;
        let ceil = ctx.node.int_or("ceil_mode", 0)? != 0;
        let (geom, out_sp) = Geom::new(&attrs, &shape[2..], ceil)?;
        let mut out_shape = shape[..2].to_vec();
        out_shape.extend(out_sp);
        Ok(Pooling {
            geom,
            planes: shape[0] * shape[1],
            out_shape,
        })
    }

    /// Calls `f(out_index_in_plane, window, padded)` for every output
    /// position of a plane, where `window` lists the in-plane input offsets
    /// and `padded` counts the window positions inside the padded input.
    fn windows(&self, mut f: impl FnMut(usize, &[usize], usize)) {
        let g = &self.geom;
        let [_, ih, iw] = g.input;
        let mut win = Vec::with_capacity(g.k_len());
        let mut o = 0;
        for od in 0..g.out[0] {
            let (d0, d1, pd) = self.k_range(0, od);
            for oh in 0..g.out[1] {
                let (h0, h1, ph) = self.k_range(1, oh);
                for ow in 0..g.out[2] {
                    let (w0, w1, pw) = self.k_range(2, ow);
                    win.clear();
                    for kd in d0..d1 {
                        let d = self.at(0, od, kd);
                        for kh in h0..h1 {
                            let base = (d * ih + self.at(1, oh, kh)) * iw;
                            win.extend((w0..w1).map(|kw| base + self.at(2, ow, kw)));
                        }
                    }
                    f(o, &win, pd * ph * pw);
                    o += 1;
                }
            }
        }
    }

    /// Kernel offsets `k0..k1` along dim `d` that land inside the input for
    /// output position `o`, and how many land inside the padded input.
    #[inline]
    fn k_range(&self, d: usize, o: usize) -> (usize, usize, usize) {
        let g = &self.geom;
        let (base, dil, k) = (o * g.strides[d], g.dilations[d], g.kernel[d]);
        let (lo_edge, hi_edge) = (g.pad[d], g.pad[d] + g.input[d]);
        let k0 = lo_edge.saturating_sub(base).div_ceil(dil).min(k);
        let k1 = hi_edge.saturating_sub(base).div_ceil(dil).min(k).max(k0);
        let padded = (hi_edge + g.pad_end[d])
            .saturating_sub(base)
            .div_ceil(dil)
            .min(k);
        (k0, k1, padded)
    }

    /// Input coordinate along dim `d` (only for offsets inside `k_range`).
    #[inline]
    fn at(&self, d: usize, o: usize, k: usize) -> usize {
        let g = &self.geom;
        (o * g.strides[d] + k * g.dilations[d]).saturating_sub(g.pad[d])
    }
}

/// Applies `reduce(plane, window, padded_count)` to every window of every plane.
fn pool_planes<T, U, F>(p: &Pooling, x: &[T], reduce: F) -> Vec<U>
where
    T: Sync,
    U: Copy + Default + Send + Sync,
    F: Fn(&[T], &[usize], usize) -> U + Sync + Send,
{
    let (il, ol) = (p.geom.in_len(), p.geom.out_len());
    let mut out = vec![U::default(); p.planes * ol];
    let run = |i: usize, o: &mut [U]| {
        let plane = x.get(i * il..(i + 1) * il).unwrap_or(&[]);
        p.windows(|k, win, padded| {
            if let Some(v) = o.get_mut(k) {
                *v = reduce(plane, win, padded);
            }
        });
    };
    if ol == 0 {
        return out;
    }
    if crate::threads::kernel_threads() > 1 && out.len() * p.geom.k_len() >= 1 << 16 {
        out.par_chunks_mut(ol)
            .enumerate()
            .for_each(|(i, o)| run(i, o));
    } else {
        out.chunks_mut(ol).enumerate().for_each(|(i, o)| run(i, o));
    }
    out
}

/// MaxPool values without indices: a direct loop over each window (the
/// valid kernel range per output coordinate precomputed once), giving the
/// same result as the generic window walk: the first in-bounds value, then
/// every larger one (NaN never replaces a value), the type's default for a
/// window entirely in the padding.
fn max_planes<T: Scalar>(p: &Pooling, x: &[T]) -> Vec<T> {
    let g = &p.geom;
    let (il, ol) = (g.in_len(), g.out_len());
    let [_, ih, iw] = g.input;
    // Per dim and output coordinate: (first input coordinate, taps).
    let ranges: Vec<Vec<(usize, usize)>> = (0..3)
        .map(|d| {
            (0..g.out[d])
                .map(|o| {
                    let (k0, k1, _) = p.k_range(d, o);
                    (if k1 > k0 { p.at(d, o, k0) } else { 0 }, k1 - k0)
                })
                .collect()
        })
        .collect();
    let (dil_d, dil_h, dil_w) = (g.dilations[0], g.dilations[1], g.dilations[2]);
    let planar = g.kernel[0] == 1 && g.out[0] == 1 && g.input[0] == 1;
    let pairs = |r: &[(usize, usize)], dil: usize| {
        dil == 1 && r.iter().enumerate().all(|(j, &c)| c == (2 * j, 2))
    };
    let two_by_two = planar && pairs(&ranges[1], dil_h) && pairs(&ranges[2], dil_w);
    let run = |i: usize, o: &mut [T]| {
        let plane = x.get(i * il..(i + 1) * il).unwrap_or(&[]);
        if two_by_two && plane.len() == il && max_plane_2x2(plane, iw, g.out[2], o) {
            return;
        }
        if planar && plane.len() == il {
            let dense = dil_w == 1
                && max_plane_2d_dense(plane, iw, dil_h, g.strides[2], &ranges[1], &ranges[2], o);
            if !dense {
                max_plane_2d(plane, iw, dil_h, dil_w, &ranges[1], &ranges[2], o);
            }
            return;
        }
        let mut outs = o.iter_mut();
        for &(d0, nd) in &ranges[0] {
            for &(h0, nh) in &ranges[1] {
                for &(w0, nw) in &ranges[2] {
                    // The first in-bounds tap starts the maximum; `v > m`
                    // never lets a NaN replace it.
                    let first = ((d0 * ih + h0) * iw + w0).min(plane.len());
                    let any = nd * nh * nw > 0;
                    let mut m = if any {
                        plane.get(first).copied().unwrap_or_default()
                    } else {
                        T::default()
                    };
                    for kd in 0..if any { nd } else { 0 } {
                        for kh in 0..nh {
                            let row = ((d0 + kd * dil_d) * ih + h0 + kh * dil_h) * iw + w0;
                            let end = (row + (nw - 1) * dil_w + 1).min(plane.len());
                            let taps = plane.get(row..end).unwrap_or(&[]);
                            if dil_w == 1 {
                                for &v in taps {
                                    if v > m {
                                        m = v;
                                    }
                                }
                            } else {
                                for &v in taps.iter().step_by(dil_w) {
                                    if v > m {
                                        m = v;
                                    }
                                }
                            }
                        }
                    }
                    if let Some(slot) = outs.next() {
                        *slot = m;
                    }
                }
            }
        }
    };
    let mut out = vec![T::default(); p.planes * ol];
    if ol == 0 {
        return out;
    }
    if crate::threads::kernel_threads() > 1 && out.len() * g.k_len() >= 1 << 16 {
        out.par_chunks_mut(ol)
            .enumerate()
            .for_each(|(i, o)| run(i, o));
    } else {
        out.chunks_mut(ol).enumerate().for_each(|(i, o)| run(i, o));
    }
    out
}

/// True for a NaN (the only value not equal to itself).
#[inline]
fn is_nan<T: PartialOrd>(v: &T) -> bool {
    v.partial_cmp(v).is_none()
}

/// 2×2 / stride-2 MaxPool of one plane without padding (every window
/// whole; `out` holds `ow` columns per row), two input rows at a time in a
/// branch-free loop: the maximum of each column pair in both rows. Returns
/// false, with `out` partly written, when the plane holds a NaN (the caller
/// then runs the window walk's NaN rule).
fn max_plane_2x2<T: Scalar>(plane: &[T], iw: usize, ow: usize, out: &mut [T]) -> bool {
    let max = |a: T, b: T| if b > a { b } else { a };
    let mut nan = false;
    for (r, orow) in out.chunks_exact_mut(ow.max(1)).enumerate() {
        let (Some(top), Some(bottom)) = (
            plane.get(2 * r * iw..2 * r * iw + 2 * ow),
            plane.get((2 * r + 1) * iw..(2 * r + 1) * iw + 2 * ow),
        ) else {
            return false;
        };
        for ((o, a), b) in orow
            .iter_mut()
            .zip(top.chunks_exact(2))
            .zip(bottom.chunks_exact(2))
        {
            nan |= is_nan(&a[0]) | is_nan(&a[1]) | is_nan(&b[0]) | is_nan(&b[1]);
            *o = max(max(a[0], a[1]), max(b[0], b[1]));
        }
    }
    !nan
}

/// 2-D MaxPool of one plane, separably: each output row first takes the
/// column-wise maximum of its window rows (NaN ignored unless the whole
/// column is NaN; a vectorisable loop), then each output the maximum over
/// its window columns. Same result as the row-major window walk: NaN when
/// the window's first tap is NaN, else the largest non-NaN value.
fn max_plane_2d<T: Scalar>(
    plane: &[T],
    iw: usize,
    dil_h: usize,
    dil_w: usize,
    rows: &[(usize, usize)],
    cols: &[(usize, usize)],
    out: &mut [T],
) {
    let mut colmax = vec![T::default(); iw];
    for (&(h0, nh), orow) in rows.iter().zip(out.chunks_mut(cols.len().max(1))) {
        let row_at = |kh: usize| {
            plane
                .get((h0 + kh * dil_h) * iw..)
                .and_then(|r| r.get(..iw))
        };
        let Some(first_row) = row_at(0).filter(|_| nh > 0) else {
            orow.fill(T::default());
            continue;
        };
        colmax.copy_from_slice(first_row);
        for kh in 1..nh {
            for (m, &v) in colmax.iter_mut().zip(row_at(kh).unwrap_or(&[])) {
                if v > *m || is_nan(m) {
                    *m = v;
                }
            }
        }
        // Column maxima per window, one tap offset at a time (the inner
        // loop runs over output columns), then the NaN rule of the first tap.
        let taps = cols.iter().map(|c| c.1).max().unwrap_or(0);
        let pairs = dil_w == 1 && cols.iter().enumerate().all(|(j, &c)| c == (2 * j, 2));
        if pairs && colmax.len() >= 2 * orow.len() {
            // 2×2 / stride 2 without padding: a vectorisable pairwise max.
            for (slot, p) in orow.iter_mut().zip(colmax.chunks_exact(2)) {
                *slot = if p[1] > p[0] { p[1] } else { p[0] };
            }
            for (slot, p) in orow.iter_mut().zip(first_row.chunks_exact(2)) {
                if is_nan(&p[0]) {
                    *slot = p[0];
                }
            }
            continue;
        }
        for (&(w0, nw), slot) in cols.iter().zip(orow.iter_mut()) {
            *slot = match colmax.get(w0) {
                Some(&v) if nw > 0 => v,
                _ => T::default(),
            };
        }
        for k in 1..taps {
            for (&(w0, nw), slot) in cols.iter().zip(orow.iter_mut()) {
                if let Some(&v) = colmax.get(w0 + k * dil_w).filter(|_| k < nw) {
                    if v > *slot {
                        *slot = v;
                    }
                }
            }
        }
        for (&(w0, nw), slot) in cols.iter().zip(orow.iter_mut()) {
            if let Some(&first) = first_row.get(w0).filter(|f| nw > 0 && is_nan(*f)) {
                *slot = first;
            }
        }
    }
}

/// [`max_plane_2d`] for NaN-free planes and unit column dilation, in
/// branch-free loops the compiler vectorises: the column maxima of each
/// output row's window rows, then every window column offset over the
/// outputs whose windows lie wholly inside the row, then the edge outputs.
/// Returns false, with `out` partly written, as soon as it meets a NaN (the
/// caller then runs [`max_plane_2d`], which applies the NaN rule).
fn max_plane_2d_dense<T: Scalar>(
    plane: &[T],
    iw: usize,
    dil_h: usize,
    stride_w: usize,
    rows: &[(usize, usize)],
    cols: &[(usize, usize)],
    out: &mut [T],
) -> bool {
    let ow = cols.len();
    // Outputs [j_lo, j_hi) read `taps` columns from `j·stride − pad` on.
    let taps = cols.iter().map(|c| c.1).max().unwrap_or(0);
    let interior = |j: usize| cols.get(j).is_some_and(|c| c.1 == taps);
    let j_lo = (0..ow).find(|&j| interior(j)).unwrap_or(ow);
    let j_hi = (j_lo..ow).find(|&j| !interior(j)).unwrap_or(ow);
    // The interior outputs' first columns must step by the stride.
    let w_first = cols.get(j_lo).map_or(0, |c| c.0);
    if (j_lo..j_hi).any(|j| cols[j].0 != w_first + (j - j_lo) * stride_w) {
        return false;
    }
    let mut colmax = vec![T::default(); iw];
    for (&(h0, nh), orow) in rows.iter().zip(out.chunks_mut(ow.max(1))) {
        let row_at = |kh: usize| {
            plane
                .get((h0 + kh * dil_h) * iw..)
                .and_then(|r| r.get(..iw))
        };
        let Some(first_row) = row_at(0).filter(|_| nh > 0) else {
            return false;
        };
        let mut nan = false;
        for (m, &v) in colmax.iter_mut().zip(first_row) {
            nan |= is_nan(&v);
            *m = v;
        }
        for kh in 1..nh {
            let Some(row) = row_at(kh) else {
                return false;
            };
            for (m, &v) in colmax.iter_mut().zip(row) {
                nan |= is_nan(&v);
                *m = if v > *m { v } else { *m };
            }
        }
        if nan {
            return false;
        }
        // Interior outputs: one pass per window column offset.
        let inner = &mut orow[j_lo..j_hi];
        for (t, slot) in inner.iter_mut().enumerate() {
            *slot = colmax[w_first + t * stride_w];
        }
        for k in 1..taps {
            let src = colmax.get(w_first + k..).unwrap_or(&[]);
            if stride_w == 1 {
                for (slot, &v) in inner.iter_mut().zip(src) {
                    *slot = if v > *slot { v } else { *slot };
                }
            } else {
                for (slot, &v) in inner.iter_mut().zip(src.iter().step_by(stride_w)) {
                    *slot = if v > *slot { v } else { *slot };
                }
            }
        }
        // Edge outputs (windows cut by the padding).
        for j in (0..j_lo).chain(j_hi..ow) {
            let (w0, nw) = cols[j];
            let win = colmax.get(w0..w0 + nw).unwrap_or(&[]);
            let Some((&first, rest)) = win.split_first() else {
                return false;
            };
            orow[j] = rest.iter().fold(first, |m, &v| if v > m { v } else { m });
        }
    }
    true
}

/// The position (in-plane offset) of the largest value of a window.
fn argmax<T: Scalar>(plane: &[T], win: &[usize]) -> Option<usize> {
    let mut best: Option<(usize, T)> = None;
    for &i in win {
        let Some(&v) = plane.get(i) else { continue };
        match best {
            Some((_, b)) if v.partial_cmp(&b) != Some(std::cmp::Ordering::Greater) => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i)
}

/// Converts an in-plane row-major offset to the column-major one.
fn col_major(g: &Geom, off: usize) -> usize {
    let [d_n, h_n, w_n] = g.input;
    let (d, h, w) = (off / (h_n * w_n), (off / w_n) % h_n, off % w_n);
    d + h * d_n + w * d_n * h_n
}

fn max_pool_t<T: Scalar>(
    ctx: &OpCtx,
    x: &ArrayD<T>,
    want_indices: bool,
) -> OpResult<(ArrayD<T>, Option<ArrayD<i64>>)> {
    let p = Pooling::new(ctx, x.shape())?;
    let xd = contiguous(x);
    if !want_indices {
        let vals = max_planes(&p, &xd);
        let y = ArrayD::from_shape_vec(IxDyn(&p.out_shape), vals).map_err(|e| invalid!("{e}"))?;
        return Ok((y, None));
    }
    let idx: Vec<usize> = pool_planes(&p, &xd, |plane, win, _| {
        argmax(plane, win).unwrap_or(usize::MAX)
    });
    let ol = p.geom.out_len();
    let il = p.geom.in_len();
    let vals: Vec<T> = idx
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            xd.get((k / ol.max(1)) * il + i)
                .copied()
                .unwrap_or_default()
        })
        .collect();
    let y = ArrayD::from_shape_vec(IxDyn(&p.out_shape), vals).map_err(|e| invalid!("{e}"))?;
    let colm = ctx.node.int_or("storage_order", 0)? == 1;
    let flat: Vec<i64> = idx
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let i = if i == usize::MAX { 0 } else { i };
            let i = if colm { col_major(&p.geom, i) } else { i };
            ((k / ol.max(1)) * il + i) as i64
        })
        .collect();
    let ind = ArrayD::from_shape_vec(IxDyn(&p.out_shape), flat).map_err(|e| invalid!("{e}"))?;
    Ok((y, Some(ind)))
}

fn max_pool(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let want = ctx.node.outputs.get(1).is_some_and(|o| !o.is_empty());
    macro_rules! go {
        ($a:expr) => {{
            let (y, i) = max_pool_t(ctx, $a, want)?;
            let mut v = vec![Tensor::from(y)];
            v.extend(i.map(Tensor::from));
            Ok(v)
        }};
    }
    match input(inputs, 0)? {
        Tensor::F32(a) => go!(a),
        Tensor::F64(a) => go!(a),
        Tensor::F16(a) => go!(a),
        Tensor::BF16(a) => go!(a),
        Tensor::I8(a) => go!(a),
        Tensor::U8(a) => go!(a),
        t => Err(unsupported!("MaxPool on {}", t.dtype())),
    }
}

fn average_pool(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let include = ctx.node.int_or("count_include_pad", 0)? != 0;
    float_pool(ctx, inputs, move |plane, win, padded| {
        let s: f32 = win.iter().filter_map(|&i| plane.get(i)).sum();
        let n = if include { padded } else { win.len() };
        if n == 0 {
            0.0
        } else {
            s / n as f32
        }
    })
}

fn lp_pool(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let p = ctx.node.int_or("p", 2)? as f32;
    float_pool(ctx, inputs, move |plane, win, _| {
        lp_norm(win.iter().filter_map(|&i| plane.get(i).copied()), p)
    })
}

/// `(Σ |x|^p)^(1/p)`.
fn lp_norm(v: impl Iterator<Item = f32>, p: f32) -> f32 {
    v.map(|x| x.abs().powf(p)).sum::<f32>().powf(1.0 / p)
}

fn float_pool<F>(ctx: &OpCtx, inputs: &[Option<&Tensor>], reduce: F) -> OpResult<Vec<Tensor>>
where
    F: Fn(&[f32], &[usize], usize) -> f32 + Sync + Send,
{
    let xt = input(inputs, 0)?;
    let x = f32_of(xt)?;
    let p = Pooling::new(ctx, x.shape())?;
    let xd: Vec<f32> = to_vec(&x);
    let out = pool_planes(&p, &xd, reduce);
    let y = ArrayD::from_shape_vec(IxDyn(&p.out_shape), out).map_err(|e| invalid!("{e}"))?;
    one(to_dtype(y, xt.dtype())?)
}

/// Reduces every spatial plane of a `[N, C, ...]` input to one value.
fn global_pool(
    inputs: &[Option<&Tensor>],
    reduce: impl Fn(&[f32]) -> f32,
) -> OpResult<Vec<Tensor>> {
    let xt = input(inputs, 0)?;
    let x = f32_of(xt)?;
    let shape = x.shape();
    if shape.len() < 2 {
        return Err(invalid!("global pooling needs rank >= 2, got {shape:?}"));
    }
    let plane: usize = shape[2..].iter().product();
    let xd: Vec<f32> = to_vec(&x);
    let out: Vec<f32> = if plane == 0 {
        vec![0.0; shape[0] * shape[1]]
    } else {
        xd.chunks(plane).map(&reduce).collect()
    };
    let mut os = shape[..2].to_vec();
    os.resize(shape.len(), 1);
    let y = ArrayD::from_shape_vec(IxDyn(&os), out).map_err(|e| invalid!("{e}"))?;
    one(to_dtype(y, xt.dtype())?)
}

fn global_max_pool(_ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    global_pool(inputs, |p| {
        p.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    })
}

fn global_average_pool(_ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    global_pool(inputs, |p| p.iter().sum::<f32>() / p.len() as f32)
}

fn global_lp_pool(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let p = ctx.node.int_or("p", 2)? as f32;
    global_pool(inputs, |v| lp_norm(v.iter().copied(), p))
}

fn max_unpool(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let xt = input(inputs, 0)?;
    let x = f32_of(xt)?;
    let idx = input(inputs, 1)?.to_i64_vec()?;
    let shape = x.shape();
    if shape.len() < 3 || idx.len() != x.len() {
        return Err(invalid!(
            "MaxUnpool needs X of rank >= 3 and as many indices as values ({:?}, {} indices)",
            shape,
            idx.len()
        ));
    }
    let requested = match ints_input(inputs, 2)? {
        Some(s) if s.len() == shape.len() && s.iter().all(|&d| d >= 0) => {
            Some(s.iter().map(|&d| d as usize).collect::<Vec<_>>())
        }
        Some(s) => {
            return Err(invalid!(
                "output_shape {s:?} must have rank {}",
                shape.len()
            ))
        }
        None => None,
    };
    // With output_shape the pads are ignored and the result goes to its top-left corner.
    let inferred = unpool_shape(ctx, shape, requested.is_none())?;
    let mut out = vec![0f32; inferred.iter().product()];
    for (&i, &v) in idx.iter().zip(x.iter()) {
        let slot = usize::try_from(i).ok().and_then(|i| out.get_mut(i));
        match slot {
            Some(o) => *o = v,
            None => return Err(invalid!("MaxUnpool index {i} is out of range")),
        }
    }
    let mut y = ArrayD::from_shape_vec(IxDyn(&inferred), out).map_err(|e| invalid!("{e}"))?;
    if let Some(req) = requested {
        if req.iter().zip(&inferred).any(|(r, i)| r < i) {
            return Err(invalid!(
                "output_shape {req:?} is smaller than the inferred {inferred:?}"
            ));
        }
        let mut full = ArrayD::zeros(IxDyn(&req));
        full.slice_each_axis_mut(|ax| ndarray::Slice::from(0..inferred[ax.axis.index()]))
            .assign(&y);
        y = full;
    }
    one(to_dtype(y, xt.dtype())?)
}

/// Default MaxUnpool output shape: `(in - 1)·stride + kernel - pads`.
fn unpool_shape(ctx: &OpCtx, shape: &[usize], use_pads: bool) -> OpResult<Vec<usize>> {
    let r = shape.len() - 2;
    let a = WindowAttrs::read(ctx, r, None)?;
    let mut out = shape[..2].to_vec();
    for d in 0..r {
        let full = (shape[d + 2].max(1) - 1) * a.strides[d] + a.kernel[d];
        let pads = if use_pads {
            a.pads[d] + a.pads[d + r]
        } else {
            0
        };
        if full <= pads {
            return Err(invalid!("pads leave no output along spatial dim {d}"));
        }
        out.push(full - pads);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{data, ints, node, run, t};
    use hb_ir::Attr;

    #[test]
    fn max_pool_with_indices_and_pads() {
        // 1x1x3x3 input 1..9, 2x2 kernel, stride 2, pad 1 on each side.
        let x = t(&[1, 1, 3, 3], (1..=9).map(|v| v as f32).collect());
        let mut n = node(
            "MaxPool",
            vec![
                ("kernel_shape", ints(&[2, 2])),
                ("strides", ints(&[2, 2])),
                ("pads", ints(&[1, 1, 1, 1])),
            ],
        );
        n.outputs = vec!["y".into(), "i".into()];
        let y = run(max_pool, &n, 12, &[Some(&x)]).unwrap();
        assert_eq!(data(&y[0]), vec![1.0, 3.0, 7.0, 9.0]);
        assert_eq!(
            y[1],
            Tensor::from_vec(&[1, 1, 2, 2], vec![0i64, 2, 6, 8]).unwrap()
        );
        n.set_attr("storage_order", Attr::Int(1));
        let y = run(max_pool, &n, 12, &[Some(&x)]).unwrap();
        assert_eq!(
            y[1],
            Tensor::from_vec(&[1, 1, 2, 2], vec![0i64, 6, 2, 8]).unwrap()
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// The direct MaxPool loop against the generic window walk.
        #[test]
        fn direct_max_matches_window_walk(
            rank in 1usize..4, size in 1usize..9, k in 1usize..4, s in 1usize..3,
            d in 1usize..3, p in 0usize..2, ceil in 0i64..2, seed in 0u64..500,
            pairwise in proptest::bool::ANY, nans in 0usize..6,
        ) {
            // Half the cases take the common 2×2 / stride-2 shape.
            let (k, s, d, p) = if pairwise { (2, 2, 1, 0) } else { (k, s, d, p) };
            let p = p.min(k - 1);
            proptest::prop_assume!(size + 2 * p > (k - 1) * d);
            let mut shape = vec![2, 3];
            shape.extend(std::iter::repeat_n(size, rank));
            let n: usize = shape.iter().product();
            let mut v = crate::kernels::testutil::rand_vals(n, seed);
            for j in 0..nans {
                v[(seed as usize + j * 7919) % n] = f32::NAN;
            }
            let nd = node("MaxPool", vec![
                ("kernel_shape", ints(&vec![k as i64; rank])),
                ("strides", ints(&vec![s as i64; rank])),
                ("dilations", ints(&vec![d as i64; rank])),
                ("pads", ints(&vec![p as i64; 2 * rank])),
                ("ceil_mode", Attr::Int(ceil)),
            ]);
            let ctx = OpCtx { node: &nd, opset: 12 };
            let pl = Pooling::new(&ctx, &shape).unwrap();
            let want = pool_planes(&pl, &v, |plane, win, _| {
                let mut it = win.iter().filter_map(|&i| plane.get(i).copied());
                let first = it.next().unwrap_or_default();
                it.fold(first, |m, v| if v > m { v } else { m })
            });
            let got = max_planes(&pl, &v);
            proptest::prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                proptest::prop_assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()));
            }
        }
    }

    #[test]
    fn average_pool_count_include_pad() {
        let x = t(&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let attrs = |inc: i64| {
            node(
                "AveragePool",
                vec![
                    ("kernel_shape", ints(&[2, 2])),
                    ("pads", ints(&[1, 1, 0, 0])),
                    ("count_include_pad", Attr::Int(inc)),
                ],
            )
        };
        // Output 2x2; window (0,0) holds only x[0,0] = 1.
        let y = run(average_pool, &attrs(0), 19, &[Some(&x)]).unwrap();
        assert_eq!(data(&y[0]), vec![1.0, 1.5, 2.0, 2.5]);
        let y = run(average_pool, &attrs(1), 19, &[Some(&x)]).unwrap();
        assert_eq!(data(&y[0]), vec![0.25, 0.75, 1.0, 2.5]);
    }

    #[test]
    fn missing_kernel_shape_is_an_error() {
        let x = t(&[1, 1, 2, 2], vec![0.0; 4]);
        assert!(run(average_pool, &node("AveragePool", vec![]), 19, &[Some(&x)]).is_err());
        let big = node("MaxPool", vec![("kernel_shape", ints(&[3, 3]))]);
        assert!(run(max_pool, &big, 12, &[Some(&x)]).is_err());
    }
}
