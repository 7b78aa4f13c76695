//! Similarity metrics between a reference (float) and a test (quantized)
//! tensor, defined exactly as the Horizon tools define them (see
//! `docs/metrics.md`). Inputs are flattened; f64 accumulation.

/// Cosine similarity `a·b / (max(‖a‖,1e-8) · max(‖b‖,1e-8))`.
///
/// The three sums run in 32 interleaved f64 partial sums, added in a fixed
/// order at the end: the same value on every machine, and not bound by the
/// latency of one running sum (the per-node report takes the cosine of
/// every activation).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    crate::multiversion! {
        fn cosine_any(a: &[f32], b: &[f32]) -> f64 {
            cosine_lanes(a, b)
        }
    }
    cosine_any(a, b)
}

/// [`cosine`]'s body, inlined into each of its compiled versions.
#[inline(always)]
fn cosine_lanes(a: &[f32], b: &[f32]) -> f64 {
    // Enough lanes for several vectors per sum in flight.
    const W: usize = 32;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (mut dot, mut na, mut nb) = ([0f64; W], [0f64; W], [0f64; W]);
    let (xc, yc) = (a.chunks_exact(W), b.chunks_exact(W));
    let (xt, yt) = (xc.remainder(), yc.remainder());
    // One loop per sum over the lanes of a chunk: each is one vector
    // operation on f64 lanes.
    for (xs, ys) in xc.zip(yc) {
        for ((d, &x), &y) in dot.iter_mut().zip(xs).zip(ys) {
            *d += f64::from(x) * f64::from(y);
        }
        for (s, &x) in na.iter_mut().zip(xs) {
            *s += f64::from(x) * f64::from(x);
        }
        for (s, &y) in nb.iter_mut().zip(ys) {
            *s += f64::from(y) * f64::from(y);
        }
    }
    for (k, (&x, &y)) in xt.iter().zip(yt).enumerate() {
        let (x, y) = (f64::from(x), f64::from(y));
        dot[k] += x * y;
        na[k] += x * x;
        nb[k] += y * y;
    }
    // A fixed pairwise tree: the same order on every machine.
    use crate::simd::pairwise_sum;
    let (dot, na, nb) = (pairwise_sum(dot), pairwise_sum(na), pairwise_sum(nb));
    let (ra, rb) = (na.sqrt(), nb.sqrt());
    if ra >= 1e-8 && rb >= 1e-8 {
        // √(‖a‖²·‖b‖²) (no overflow or underflow in f64 for f32 data): for
        // equal tensors it is exactly their `dot`, so the cosine is exactly 1.
        dot / (na * nb).sqrt()
    } else {
        dot / (ra.max(1e-8) * rb.max(1e-8))
    }
}

/// Mean squared error.
pub fn mse(a: &[f32], b: &[f32]) -> f64 {
    mean(
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y as f64).powi(2)),
        a.len(),
    )
}

/// "mre" as the Horizon tools compute it: the mean ABSOLUTE error.
pub fn mre(a: &[f32], b: &[f32]) -> f64 {
    l1_distance(a, b)
}

/// Horizon's sqnr: `10·log10(‖a‖₂ / ‖a−b‖₂)` (norms, not energies); +inf when equal.
pub fn sqnr(a: &[f32], b: &[f32]) -> f64 {
    let na = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nd = l2_norm_diff(a, b);
    if nd == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (na / nd).log10()
    }
}

/// Maximum absolute difference.
pub fn chebyshev(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .fold(0.0, f64::max)
}

/// L1 distance: mean |a − b|.
pub fn l1_distance(a: &[f32], b: &[f32]) -> f64 {
    mean(
        a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).abs()),
        a.len(),
    )
}

/// L2 distance: ‖a − b‖₂ / N.
pub fn l2_distance(a: &[f32], b: &[f32]) -> f64 {
    if a.is_empty() {
        0.0
    } else {
        l2_norm_diff(a, b) / a.len() as f64
    }
}

/// Maximum absolute error divided by the reference's value range (max − min).
pub fn max_abs_rel_to_range(a: &[f32], b: &[f32]) -> f64 {
    let (lo, hi) = a
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &x| {
            (l.min(x), h.max(x))
        });
    let range = (hi - lo) as f64;
    let m = chebyshev(a, b);
    if range > 0.0 {
        m / range
    } else {
        m
    }
}

/// Number of distinct values (bitwise, NaNs counted once each pattern).
pub fn unique_count(a: &[f32]) -> usize {
    let mut bits: Vec<u32> = a.iter().map(|x| x.to_bits()).collect();
    bits.sort_unstable();
    bits.dedup();
    bits.len()
}

fn l2_norm_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

fn mean(it: impl Iterator<Item = f64>, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        it.sum::<f64>() / n as f64
    }
}

/// The metric names the Horizon tools accept (`-m`, `metric:`).
pub const METRIC_NAMES: &[&str] = &["cosine-similarity", "mse", "mre", "sqnr", "chebyshev"];

/// A metric by its Horizon name (`cosine-similarity`, `mse`, `mre`, `sqnr`,
/// `chebyshev`); `None` for an unknown name.
pub fn by_name(name: &str, a: &[f32], b: &[f32]) -> Option<f64> {
    Some(match name {
        "cosine-similarity" | "cosine" => cosine(a, b),
        "mse" => mse(a, b),
        "mre" => mre(a, b),
        "sqnr" => sqnr(a, b),
        "chebyshev" => chebyshev(a, b),
        _ => return None,
    })
}

/// True when a larger value of the metric means closer tensors.
pub fn higher_is_better(name: &str) -> bool {
    matches!(name, "cosine-similarity" | "cosine" | "sqnr")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_values() {
        let a = [1.0f32, 2.0, 3.0, 4.0];
        let b = [1.0f32, 2.5, 2.0, 4.0];
        // diffs: 0, -0.5, 1, 0
        assert!((mse(&a, &b) - 1.25 / 4.0).abs() < 1e-12);
        assert!((mre(&a, &b) - 1.5 / 4.0).abs() < 1e-12);
        assert!((chebyshev(&a, &b) - 1.0).abs() < 1e-12);
        assert!((l2_distance(&a, &b) - 1.25f64.sqrt() / 4.0).abs() < 1e-12);
        let dot = 1.0 + 5.0 + 6.0 + 16.0;
        let cos = dot / (30f64.sqrt() * (1.0f64 + 6.25 + 4.0 + 16.0).sqrt());
        assert!((cosine(&a, &b) - cos).abs() < 1e-12);
        assert!((sqnr(&a, &b) - 10.0 * (30f64.sqrt() / 1.25f64.sqrt()).log10()).abs() < 1e-12);
        assert_eq!(unique_count(&b), 4);
    }

    /// The partial-sum cosine equals one running sum in f64 (to rounding)
    /// for every length around the lane blocks, is exactly 1 for equal
    /// inputs, and stops at the shorter input.
    #[test]
    fn cosine_equals_the_running_sum_for_any_length() {
        for n in [1usize, 7, 8, 9, 15, 16, 17, 1001] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37 + 0.2).sin()).collect();
            let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
            for (&x, &y) in a.iter().zip(&b) {
                dot += f64::from(x) * f64::from(y);
                na += f64::from(x) * f64::from(x);
                nb += f64::from(y) * f64::from(y);
            }
            let want = dot / (na.sqrt().max(1e-8) * nb.sqrt().max(1e-8));
            assert!((cosine(&a, &b) - want).abs() < 1e-13, "n={n}");
            // (a is the zero vector for n = 1: cosine 0.)
            assert_eq!(cosine(&a, &a), if n > 1 { 1.0 } else { 0.0 }, "n={n}");
            assert_eq!(cosine(&b, &b), 1.0, "n={n}");
            let mut longer = b.clone();
            longer.push(5.0);
            assert_eq!(cosine(&a, &longer), cosine(&a, &b), "n={n}");
        }
    }

    #[test]
    fn zero_vectors_do_not_divide_by_zero() {
        assert_eq!(cosine(&[0.0; 3], &[0.0; 3]), 0.0);
        assert_eq!(sqnr(&[1.0], &[1.0]), f64::INFINITY);
    }
}
