//! LayerNormalization for the engine: the reference formula
//! ([`crate::reference::layernorm::layer_norm`], docs/integer-semantics.md
//! §12) bit for bit, without a per-row allocation and with i64 per element
//! where the bounds below prove it exact.
//!
//! Per row of `n` values: `d = n·q − Σq`, `den = Σd² + eps_q`,
//! `inv = ⌊√(⌊n·2^96 / den⌋)⌋`, then per element `z = round(d·inv / 2^24)`,
//! `p = z·m + bias`, `y = sat(round(p / 2^sh))`. Since `den ≥ d²`,
//! `|d·inv| ≤ √n·2^48` and `|z| ≤ √n·2^24 + 1`; with `n < 2^15` the
//! deviations fit i32 (their squares i64), and when `z_max·max|m| +
//! max|bias| < 2^62` and every shift is at most 62, every step is exact in
//! i64.

use super::elem::{has_avx2, has_avx512, simd_copies};
use crate::qint::QInt;
use crate::reference::layernorm::{isqrt, LayerNormPlan, Z_BITS};

/// Normalises every row of `n` values of `x` into `y`; false (nothing
/// written) when the i64 bounds do not hold, for the reference to run.
/// `scratch` holds `3n` i64.
pub(super) fn layer_norm_into<I: QInt, O: QInt>(
    x: &[I],
    y: &mut [O],
    n: usize,
    plan: &LayerNormPlan,
    scratch: &mut Vec<i64>,
) -> bool {
    let (_, _, mul, bias) = plan.parts();
    if n == 0 || n >= 1 << 15 || mul.len() != n || bias.len() != n || !x.len().is_multiple_of(n) {
        return false;
    }
    if x.len() != y.len() || mul.iter().any(|&(_, sh)| sh > 62) {
        return false;
    }
    let z_max = ((n as f64).sqrt() * f64::from(1u32 << Z_BITS)).ceil() as i128 + 2;
    let m_max = mul
        .iter()
        .map(|&(m, _)| i128::from(m).abs())
        .max()
        .unwrap_or(0);
    let b_max = bias.iter().map(|b| b.abs()).max().unwrap_or(0);
    if z_max * m_max + b_max >= 1 << 62 {
        return false;
    }
    // Σd² = n²·Σ(q − mean)² ≤ n³·(max − min)²/4 (the variance of values in
    // [min, max] is at most (max − min)²/4): summed in i64 when that bound
    // of the input type is below 2^63.
    let spread = (I::MAX - I::MIN) as u128;
    let narrow_sum = (n as u128).pow(3) * spread * spread < 1 << 65;
    scratch.clear();
    scratch.resize(3 * n, 0);
    let (m64, rest) = scratch.split_at_mut(n);
    let (sh64, b64) = rest.split_at_mut(n);
    for (k, (&(m, sh), &b)) in mul.iter().zip(bias).enumerate() {
        m64[k] = i64::from(m);
        sh64[k] = i64::from(sh);
        // The bias with the rounding term: |z·m| + |b| < 2^62 (checked
        // above) and the term is below 2^61, so the sum stays in i64.
        b64[k] = b as i64 + if sh == 0 { 0 } else { 1 << (sh - 1) };
    }
    let k = Rows {
        n,
        eps_q: plan.eps_q(n),
        narrow_sum,
        mul: m64,
        shift: sh64,
        bias_rnd: b64,
    };
    layer_norm_rows(x, y, &k);
    true
}

/// The constants of one LayerNormalization's rows: per element the
/// multiplier, shift and bias (with the shift's rounding term) of the
/// affine step.
pub(super) struct Rows<'a> {
    n: usize,
    eps_q: i128,
    /// Σd² fits i64 for every row of this input type.
    narrow_sum: bool,
    mul: &'a [i64],
    shift: &'a [i64],
    /// Bias plus the rounding term of the shift.
    bias_rnd: &'a [i64],
}

simd_copies! {
    /// Every row, compiled per instruction set.
    fn layer_norm_rows<I, O>(x: &[I], y: &mut [O], k: &Rows<'_>) => layer_norm_rows_body
}

/// Rows per block: their sums and variances first, then the independent
/// inverse square roots (which pipeline), then their elements.
const BLOCK: usize = 32;

#[inline(always)]
fn layer_norm_rows_body<I: QInt, O: QInt>(x: &[I], y: &mut [O], k: &Rows<'_>) {
    let n = k.n;
    let nn = n as i64;
    let half_z = 1i64 << (Z_BITS - 1);
    let mut sums = [0i64; BLOCK];
    let mut dens = [0i128; BLOCK];
    let mut invs = [0i64; BLOCK];
    for (xb, yb) in x.chunks(BLOCK * n).zip(y.chunks_mut(BLOCK * n)) {
        let rows = xb.len() / n;
        for (r, row) in xb.chunks_exact(n).enumerate() {
            let sum: i64 = row.iter().map(|q| q.to_i64()).sum();
            let v: i128 = if k.narrow_sum {
                i128::from(
                    row.iter()
                        .map(|q| (nn * q.to_i64() - sum).pow(2))
                        .sum::<i64>(),
                )
            } else {
                row.iter()
                    .map(|q| i128::from((nn * q.to_i64() - sum).pow(2)))
                    .sum()
            };
            sums[r] = sum;
            dens[r] = v.saturating_add(k.eps_q);
        }
        for (inv, &den) in invs[..rows].iter_mut().zip(&dens[..rows]) {
            *inv = inv_sqrt(n, den);
        }
        for (r, (row, out)) in xb.chunks_exact(n).zip(yb.chunks_exact_mut(n)).enumerate() {
            let (sum, inv) = (sums[r], invs[r]);
            for ((((o, q), &m), &sh), &b) in out
                .iter_mut()
                .zip(row)
                .zip(k.mul)
                .zip(k.shift)
                .zip(k.bias_rnd)
            {
                let z = ((nn * q.to_i64() - sum) * inv + half_z) >> Z_BITS;
                *o = O::sat_i64((z * m + b) >> sh);
            }
        }
    }
}

/// `⌊√(⌊n·2^96 / den⌋)⌋` (0 for `den ≤ 0`): the largest `r` with `r²·den ≤
/// n·2^96`, estimated in f64 and corrected exactly, without the u128
/// division. `r < √n·2^48 < 2^56` for `n < 2^15`.
#[inline(always)]
fn inv_sqrt(n: usize, den: i128) -> i64 {
    if den <= 0 {
        return 0;
    }
    let den = den as u128;
    let num = (n as u128) << 96;
    let fits = |r: u64| {
        let r = u128::from(r);
        (r * r).checked_mul(den).is_some_and(|p| p <= num)
    };
    // The high and low halves of `den` in f64 without the i128 → f64 call.
    let den_f = (den >> 64) as u64 as f64 * 2f64.powi(64) + den as u64 as f64;
    let rf = (n as f64 / den_f).sqrt() * 2f64.powi(48);
    // A few roundings of 2^−53 each: the estimate is within rf·2^−50 of
    // the true root, so a fraction clear of both ends settles the floor.
    let slack = rf * 2f64.powi(-49) + 2f64.powi(-40);
    let fl = rf.floor();
    if rf - fl > slack && rf - fl < 1.0 - slack {
        debug_assert_eq!(fl as u128, isqrt(num / den));
        return fl as i64;
    }
    let mut r = rf as u64;
    while r > 0 && !fits(r) {
        r -= 1;
    }
    while fits(r + 1) {
        r += 1;
    }
    debug_assert_eq!(u128::from(r), isqrt(num / den));
    r as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::layernorm::layer_norm;
    use crate::tensor::{QTensor, TensorRef};

    #[test]
    fn inverse_square_root_matches_the_exact_one() {
        let mut next = crate::engine::xorshift(0x0123_4567_89ab_cdefu64);
        for k in 0..4000u32 {
            let n = 1 + (next() % (1 << 15)) as usize;
            // Around exact roots: den = ⌊n·2^96 / r²⌋ + {−1, 0, 1}, where
            // the f64 estimate sits on or next to an integer.
            let r = u128::from(1 + next() % (1 << 20));
            let near = (((n as u128) << 96) / (r * r)) as i128 + (k % 3) as i128 - 1;
            let den: i128 = match k % 5 {
                0 => i128::from(k),
                1 => (next() >> (k % 64)) as i128,
                2 => i128::from(next()) << (k % 60),
                3 => near,
                _ => i128::MAX >> (k % 100),
            };
            let want = if den <= 0 {
                0
            } else {
                isqrt(((n as u128) << 96) / den as u128) as i64
            };
            assert_eq!(inv_sqrt(n, den), want, "n {n} den {den}");
        }
    }

    #[test]
    fn matches_the_reference() {
        let mut next = crate::engine::xorshift(0x9e37_79b9_7f4a_7c15u64);
        for case in 0..60 {
            // 2100 values of i16 can overflow an i64 sum of squares.
            let n = [1usize, 2, 7, 32, 192, 385, 2100][case % 7];
            let rows = 1 + case % 4;
            let gamma: Vec<f32> = (0..n).map(|i| 0.2 + (i % 7) as f32 * 0.3 - 1.0).collect();
            let beta: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
            let eps = [0.0f32, 1e-5, 1e-2][case % 3];
            let (s_x, s_y) = ([0.01f32, 0.2, 3.0][case % 3], [0.02f32, 0.05][case % 2]);
            let plan = LayerNormPlan::new(s_x, s_y, &gamma, Some(&beta), eps).unwrap();
            let x: Vec<i16> = (0..rows * n)
                .map(|k| match case % 5 {
                    0 => 7, // constant rows
                    1 => {
                        if k % 2 == 0 {
                            i16::MIN
                        } else {
                            i16::MAX
                        }
                    }
                    _ => next() as i16 >> (case % 9),
                })
                .collect();
            let shape = [rows, n];
            let want: QTensor<i8> =
                layer_norm(TensorRef::new(&x, &shape).unwrap(), 1, &plan).unwrap();
            let mut got = vec![0i8; x.len()];
            assert!(
                layer_norm_into(&x, &mut got, n, &plan, &mut Vec::new()),
                "case {case}"
            );
            assert_eq!(got, want.data, "case {case}");
            let want: QTensor<i16> =
                layer_norm(TensorRef::new(&x, &shape).unwrap(), 1, &plan).unwrap();
            let mut got = vec![0i16; x.len()];
            assert!(layer_norm_into(&x, &mut got, n, &plan, &mut Vec::new()));
            assert_eq!(got, want.data, "case {case} i16");
        }
    }
}
