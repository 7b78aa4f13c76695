//! Softmax and LogSoftmax (opset < 13: input coerced to 2-D at `axis`;
//! opset >= 13: along `axis`). Numerically stable (the row max is
//! subtracted); a row of only -inf gives NaN, like the ONNX reference.
//!
//! Contiguous rows (softmax over the last axis, the attention case) run in
//! blocks of rows in three sweeps: subtract each row's max, `exp` over the
//! whole block in one vectorised loop, scale each row by its inverse sum.
//! Row sums use [`LANES`] lanes: element `i` goes to lane `i % LANES`
//! (the row's tail too, so a short row is no serial chain), and the lanes
//! are added by the fixed tree of `simd::hsum`. On CPUs with AVX-512 the
//! row sweeps use masked vector loads for the tail; the portable code spells
//! out the same lanes, so both give the same bits.

use crate::error::OpResult;
use crate::invalid;
use crate::kernels::floatio::{f32_of, to_dtype, to_vec};
use crate::kernels::simd::LANES;
use crate::kernels::util::{input, norm_axis, one};
use crate::registry::{OpCtx, Registry};
use hb_tensor::Tensor;
use ndarray::{ArrayD, IxDyn};

/// Registers Softmax and LogSoftmax.
pub fn register(r: &mut Registry) {
    r.register("Softmax", softmax);
    r.register_in_place("", "Softmax", softmax_in_place);
    r.register("LogSoftmax", log_softmax);
}

fn softmax(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    run(ctx, inputs, false)
}

fn log_softmax(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    run(ctx, inputs, true)
}

/// `[outer, n, inner]` of a Softmax over `shape` for the node's axis.
fn layout(ctx: &OpCtx, shape: &[usize]) -> OpResult<(usize, usize, usize)> {
    let default = if ctx.opset >= 13 { -1 } else { 1 };
    let axis = norm_axis(ctx.node.int_or("axis", default)?, shape.len())?;
    Ok(if shape.is_empty() {
        (1, 1, 1)
    } else if ctx.opset >= 13 {
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        (outer, shape[axis], inner)
    } else {
        (
            shape[..axis].iter().product(),
            shape[axis..].iter().product(),
            1,
        )
    })
}

fn run(ctx: &OpCtx, inputs: &[Option<&Tensor>], log: bool) -> OpResult<Vec<Tensor>> {
    let xt = input(inputs, 0)?;
    let x = f32_of(xt)?;
    let shape = x.shape().to_vec();
    let (outer, n, inner) = layout(ctx, &shape)?;
    let mut data: Vec<f32> = to_vec(&x);
    softmax_rows(&mut data, outer, n, inner, log);
    let y = ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| invalid!("{e}"))?;
    one(to_dtype(y, xt.dtype())?)
}

/// Softmax in the buffer of an f32 input the session hands over.
fn softmax_in_place(
    ctx: &OpCtx,
    x: Tensor,
    _inputs: &[Option<&Tensor>],
) -> OpResult<std::result::Result<Vec<Tensor>, Tensor>> {
    let Tensor::F32(mut a) = x else {
        return Ok(Err(x));
    };
    let (outer, n, inner) = layout(ctx, a.shape())?;
    let Some(data) = a.as_slice_mut() else {
        return Ok(Err(Tensor::F32(a)));
    };
    softmax_rows(data, outer, n, inner, false);
    Ok(Ok(vec![Tensor::F32(a)]))
}

/// Softmax (or log-softmax) in place over the middle dim of an
/// `[outer, n, inner]` row-major buffer.
pub fn softmax_rows(data: &mut [f32], outer: usize, n: usize, inner: usize, log: bool) {
    if n == 0 || inner == 0 {
        return;
    }
    let data = match data.get_mut(..outer * n * inner) {
        Some(d) => d,
        None => data,
    };
    if inner == 1 {
        softmax_chunks(data, n, log);
        return;
    }
    // Softmax over a non-last axis (channels of `[N, C, H, W]`): each
    // `[n, inner]` block is turned into `inner` contiguous rows, done in one
    // call (one scratch buffer, not one per column), and turned back.
    let mut rows = vec![0f32; n * inner];
    for block in data.chunks_mut(n * inner) {
        for (i, src) in block.chunks(inner).enumerate() {
            for (j, &v) in src.iter().enumerate() {
                rows[j * n + i] = v;
            }
        }
        softmax_chunks(&mut rows, n, log);
        for (i, dst) in block.chunks_mut(inner).enumerate() {
            for (j, v) in dst.iter_mut().enumerate() {
                *v = rows[j * n + i];
            }
        }
    }
}

/// Elements per block of rows: the three sweeps of a block stay in L1.
const BLOCK: usize = 4096;

/// Softmax (or log-softmax) of every `n`-element row of `data`, in place.
fn softmax_chunks(data: &mut [f32], n: usize, log: bool) {
    if log {
        log_softmax_chunks(data, n);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU supports the features `blocks` enables (checked
        // just above).
        unsafe { avx512::blocks(data, n) };
        return;
    }
    portable_blocks(data, n);
}

crate::multiversion! {
/// The three sweeps per block of rows in portable code (the lanes spelled
/// out as arrays); the same bits as [`avx512::blocks`].
fn portable_blocks(data: &mut [f32], n: usize) {
    for block in data.chunks_mut((BLOCK / n).max(1) * n) {
        for row in block.chunks_mut(n) {
            let max = lane_max(row);
            row.iter_mut().for_each(|v| *v -= max);
        }
        exp_all(block);
        for row in block.chunks_mut(n) {
            let inv = 1.0 / lane_sum(row);
            row.iter_mut().for_each(|v| *v *= inv);
        }
    }
}
}

crate::multiversion! {
/// Log-softmax of every `n`-element row, in place.
fn log_softmax_chunks(data: &mut [f32], n: usize) {
    for row in data.chunks_mut(n) {
        let max = lane_max(row);
        let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
        let ls = sum.ln();
        row.iter_mut().for_each(|v| *v = *v - max - ls);
    }
}
}

/// `e^v` for every element (inlined into the callers, so it vectorises at
/// their width).
#[inline(always)]
fn exp_all(data: &mut [f32]) {
    data.iter_mut()
        .for_each(|v| *v = super::fastmath::exp_f32(*v));
}

/// `v > a ? v : a`: NaN never wins (the AVX-512 `max(v, a)` exactly).
#[inline(always)]
fn bigger(a: f32, v: f32) -> f32 {
    if v > a {
        v
    } else {
        a
    }
}

/// The row's largest value (NaN ignored, −inf for an all-NaN row), element
/// `i` in lane `i % LANES`.
#[inline(always)]
fn lane_max(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = bigger(*a, v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(tail) {
        *a = bigger(*a, v);
    }
    acc.iter().copied().fold(f32::NEG_INFINITY, bigger)
}

/// The row's sum, element `i` in lane `i % LANES`, lanes added by the fixed
/// tree of `simd::hsum`.
#[inline(always)]
fn lane_sum(row: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    for (a, &v) in acc.iter_mut().zip(tail) {
        *a += v;
    }
    super::simd::hsum(acc)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{exp_all, BLOCK, LANES};
    use std::arch::x86_64::*;

    /// The CPU has the features [`blocks`] enables.
    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    }

    /// The three sweeps per block of rows, the row sweeps in 16-lane
    /// vectors with a masked tail. The row sweeps read one buffer and write
    /// the other (the block → a scratch block → back): a row's loads never
    /// follow the previous row's masked store into the same bytes, which
    /// the CPU cannot forward and would wait for.
    ///
    /// # Safety
    /// The CPU supports AVX-512 F/BW/DQ/VL, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    pub unsafe fn blocks(data: &mut [f32], n: usize) {
        let per_block = (BLOCK / n).max(1) * n;
        let mut scratch = vec![0f32; per_block.min(data.len())];
        for block in data.chunks_mut(per_block) {
            let tmp = &mut scratch[..block.len()];
            for (row, out) in block.chunks(n).zip(tmp.chunks_mut(n)) {
                subtract_max(row, out);
            }
            exp_all(tmp);
            for (row, out) in tmp.chunks(n).zip(block.chunks_mut(n)) {
                scale_by_inverse_sum(row, out);
            }
        }
    }

    /// The lanes mask of a tail of `t < 16` elements.
    #[inline(always)]
    fn tail_mask(t: usize) -> __mmask16 {
        ((1u32 << t) - 1) as __mmask16
    }

    /// `out = row - max(row)` (`out` as long as `row`).
    #[target_feature(enable = "avx512f")]
    fn subtract_max(row: &[f32], out: &mut [f32]) {
        let len = row.len().min(out.len());
        let (full, t) = (len / LANES * LANES, len % LANES);
        let (p, q) = (row.as_ptr(), out.as_mut_ptr());
        let k = tail_mask(t);
        // SAFETY: full vectors touch `i .. i + 16` with `i + 16 <= full <=
        // len` of both slices; the tail's masked loads and stores touch only
        // the `t` lanes below `len`.
        unsafe {
            let neg = _mm512_set1_ps(f32::NEG_INFINITY);
            let mut acc = neg;
            for i in (0..full).step_by(LANES) {
                // max(v, acc) keeps acc when v is NaN, like `bigger`.
                acc = _mm512_max_ps(_mm512_loadu_ps(p.add(i)), acc);
            }
            let v = if t > 0 {
                _mm512_mask_loadu_ps(neg, k, p.add(full))
            } else {
                neg
            };
            acc = _mm512_max_ps(v, acc);
            let m = _mm512_set1_ps(_mm512_reduce_max_ps(acc));
            for i in (0..full).step_by(LANES) {
                _mm512_storeu_ps(q.add(i), _mm512_sub_ps(_mm512_loadu_ps(p.add(i)), m));
            }
            if t > 0 {
                _mm512_mask_storeu_ps(q.add(full), k, _mm512_sub_ps(v, m));
            }
        }
    }

    /// `out = row / Σ row` as `row · (1 / Σ)`, the sum in the lanes and
    /// tree of `lane_sum`.
    #[target_feature(enable = "avx512f,avx512dq")]
    fn scale_by_inverse_sum(row: &[f32], out: &mut [f32]) {
        let len = row.len().min(out.len());
        let (full, t) = (len / LANES * LANES, len % LANES);
        let (p, q) = (row.as_ptr(), out.as_mut_ptr());
        let k = tail_mask(t);
        // SAFETY: as in `subtract_max`.
        unsafe {
            let mut acc = _mm512_setzero_ps();
            for i in (0..full).step_by(LANES) {
                acc = _mm512_add_ps(acc, _mm512_loadu_ps(p.add(i)));
            }
            let v = if t > 0 {
                _mm512_maskz_loadu_ps(k, p.add(full))
            } else {
                _mm512_setzero_ps()
            };
            acc = _mm512_add_ps(acc, v);
            // hsum's tree: lanes i + i+8, then i + i+4, i + i+2, i + i+1.
            let s8 = _mm256_add_ps(
                _mm512_castps512_ps256(acc),
                _mm512_extractf32x8_ps::<1>(acc),
            );
            let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            let s1 = _mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2));
            let inv = _mm512_set1_ps(1.0 / _mm_cvtss_f32(s1));
            for i in (0..full).step_by(LANES) {
                _mm512_storeu_ps(q.add(i), _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), inv));
            }
            if t > 0 {
                _mm512_mask_storeu_ps(q.add(full), k, _mm512_mul_ps(v, inv));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_all_neg_inf_rows() {
        let mut v = vec![1000.0, 1000.0, f32::NEG_INFINITY, f32::NEG_INFINITY];
        softmax_rows(&mut v, 2, 2, 1, false);
        assert_eq!(&v[..2], &[0.5, 0.5]);
        assert!(v[2].is_nan() && v[3].is_nan());
        let mut l = vec![0.0, 0.0];
        softmax_rows(&mut l, 1, 2, 1, true);
        assert!((l[0] + std::f32::consts::LN_2).abs() < 1e-6);
    }

    /// Rows of every length class with -inf masks, a NaN and an all-masked row.
    fn masked_rows(n: usize, rows: usize) -> Vec<f32> {
        let mut data: Vec<f32> = (0..n * rows)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.173)
            .collect();
        for (i, v) in data.iter_mut().enumerate() {
            if i % 5 == 3 {
                *v = f32::NEG_INFINITY;
            }
        }
        if rows > 2 {
            data[n..2 * n]
                .iter_mut()
                .for_each(|v| *v = f32::NEG_INFINITY);
            data[2 * n + n / 2] = f32::NAN;
        }
        data
    }

    /// The reference: per row in f64 from the max over the non-NaN values.
    fn reference(row: &[f32]) -> Vec<f64> {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    #[test]
    fn rows_match_an_f64_reference_and_the_portable_lanes() {
        for n in [1usize, 7, 14, 16, 17, 46, 64, 255, 300, 5000] {
            let rows = 9;
            let data = masked_rows(n, rows);
            let mut got = data.clone();
            softmax_rows(&mut got, rows, n, 1, false);
            let mut portable = data.clone();
            portable_blocks(&mut portable, n);
            for (r, (row, want)) in got.chunks(n).zip(data.chunks(n)).enumerate() {
                let want = reference(want);
                for (a, b) in row.iter().zip(&want) {
                    if b.is_nan() {
                        assert!(a.is_nan(), "n={n} row {r}: {a} vs NaN");
                    } else {
                        assert!(
                            (*a as f64 - b).abs() <= 1e-6 * b.max(1e-30) + 1e-7,
                            "n={n} row {r}: {a} vs {b}"
                        );
                    }
                }
            }
            // The vector path (when the CPU has it) and the portable code
            // agree bit for bit.
            for (a, b) in got.iter().zip(&portable) {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "n={n}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn a_non_last_axis_equals_its_rows_done_one_by_one() {
        // [outer 2, n 14, inner 5]: every (outer, inner) column as a row.
        let (outer, n, inner) = (2, 14, 5);
        let data = masked_rows(n, outer * inner);
        let mut got = data.clone();
        softmax_rows(&mut got, outer, n, inner, false);
        for o in 0..outer {
            for j in 0..inner {
                let at = |i: usize| o * n * inner + i * inner + j;
                let mut row: Vec<f32> = (0..n).map(|i| data[at(i)]).collect();
                softmax_rows(&mut row, 1, n, 1, false);
                for (i, want) in row.iter().enumerate() {
                    let g = got[at(i)];
                    assert!(
                        g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                        "({o}, {i}, {j}): {g} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn lane_sums_follow_the_lane_order() {
        // 1e8 in lane 0 swallows a 1.0 added in the same lane but not one
        // in another lane: the tail's element 16 goes to lane 0.
        let mut row = vec![0f32; 17];
        row[0] = 1e8;
        row[16] = 1.0;
        assert_eq!(lane_sum(&row), 1e8);
        row[16] = 0.0;
        row[1] = 1.0;
        row[2] = 1.0;
        row[3] = 1.0;
        row[4] = 1.0;
        // Lanes 1..=4 reach lane 0 as one 4.0 through the tree: 1e8 + 4.
        assert_eq!(lane_sum(&row), 1e8 + 4.0);
    }

    #[test]
    fn in_place_equals_the_plain_kernel() {
        use crate::kernels::testutil::{node, run};
        use hb_ir::Attr;
        let data = masked_rows(14, 12);
        let x = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[3, 4, 14]), data).unwrap_or_default());
        let n = node("Softmax", vec![("axis", Attr::Int(-1))]);
        let plain = run(softmax, &n, 13, &[Some(&x)]).unwrap_or_default();
        let ctx = OpCtx {
            node: &n,
            opset: 13,
        };
        let Ok(Ok(owned)) = softmax_in_place(&ctx, x.clone(), &[None]) else {
            panic!("the in-place Softmax declined an f32 tensor");
        };
        assert_eq!(format!("{:?}", plain), format!("{:?}", owned));
    }
}
