//! Vectorisable f32 row primitives (sum, max, scaled sums) for the hot
//! kernels: Softmax, the reductions, LayerNorm-like patterns.
//!
//! Sums use [`LANES`] independent accumulators over `chunks_exact` so the
//! compiler can keep them in SIMD registers (a single running sum is a
//! serial dependency chain that cannot be vectorised under strict IEEE
//! semantics). The result differs from a left-to-right sum only by rounding
//! (a few ulp), and it is deterministic: the same input always gives the
//! same result, whatever the thread count.

/// Independent accumulators per reduction.
pub const LANES: usize = 16;

/// Adds the lanes pairwise (a fixed tree, so the order is deterministic).
#[inline(always)]
pub(crate) fn hsum(acc: [f32; LANES]) -> f32 {
    hb_tensor::simd::pairwise_sum(acc)
}

/// `Σ x`.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let mut s = hsum(acc);
    for &v in tail {
        s += v;
    }
    s
}

/// `Σ x·y` over the common length, in [`LANES`] accumulators.
#[inline(always)]
pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let mut acc = [0f32; LANES];
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let (xt, yt) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for ((s, &u), &v) in acc.iter_mut().zip(a).zip(b) {
            *s += u * v;
        }
    }
    let mut s = hsum(acc);
    for (&u, &v) in xt.iter().zip(yt) {
        s += u * v;
    }
    s
}

/// `Σ (x − m)²`.
#[inline(always)]
pub fn sum_sq_dev(x: &[f32], m: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            let d = v - m;
            *a += d * d;
        }
    }
    let mut s = hsum(acc);
    for &v in tail {
        let d = v - m;
        s += d * d;
    }
    s
}

/// The largest value, ignoring NaN like `f32::max` (−inf for an empty or all-NaN row).
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    // `v > a` is false for NaN, so NaN never wins (one compare and blend
    // per lane, where `f32::max` also tests for NaN).
    let bigger = |a: f32, v: f32| if v > a { v } else { a };
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = bigger(*a, v);
        }
    }
    let m = acc.iter().copied().fold(f32::NEG_INFINITY, bigger);
    tail.iter().copied().fold(m, bigger)
}

/// The smallest value, ignoring NaN like `f32::min` (+inf for an empty or all-NaN row).
#[inline(always)]
pub fn min(x: &[f32]) -> f32 {
    let mut acc = [f32::INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.min(v);
        }
    }
    let mut m = acc.iter().copied().fold(f32::INFINITY, f32::min);
    for &v in tail {
        m = m.min(v);
    }
    m
}

/// True when any value is NaN.
#[inline(always)]
pub fn any_nan(x: &[f32]) -> bool {
    // `v != v` only for NaN; an OR-reduction over lanes vectorises.
    let mut acc = [false; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a |= v.is_nan();
        }
    }
    acc.iter().any(|&a| a) || tail.iter().any(|v| v.is_nan())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::rand_vals;

    #[test]
    fn match_plain_loops_on_odd_lengths() {
        for n in [0usize, 1, 3, 15, 16, 17, 31, 46, 64, 100] {
            let x: Vec<f32> = rand_vals(n, n as u64).iter().map(|v| v * 10.0).collect();
            let s: f64 = x.iter().map(|&v| v as f64).sum();
            assert!(
                (sum(&x) as f64 - s).abs() <= 1e-5 * (1.0 + s.abs()),
                "n={n}"
            );
            let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&x), m);
            let mn = x.iter().copied().fold(f32::INFINITY, f32::min);
            assert_eq!(min(&x), mn);
            let mean = if n > 0 { s / n as f64 } else { 0.0 };
            let v: f64 = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum();
            let got = sum_sq_dev(&x, mean as f32) as f64;
            assert!((got - v).abs() <= 1e-4 * (1.0 + v), "n={n}");
            assert!(!any_nan(&x));
        }
        let mut x = vec![1.0f32; 40];
        x[37] = f32::NAN;
        assert!(any_nan(&x));
        assert_eq!(max(&x), 1.0, "NaN ignored like f32::max");
        assert_eq!(max(&[f32::NAN; 21]), f32::NEG_INFINITY, "all NaN");
        let mut y = vec![f32::NEG_INFINITY; 19];
        y[18] = -3.0;
        assert_eq!(max(&y), -3.0, "a maximum in the tail");
        x[3] = f32::NAN;
        x[37] = 1.0;
        assert!(any_nan(&x));
    }
}
