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
/// `scratch` holds `2n` i64.
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
    scratch.clear();
    scratch.resize(2 * n, 0);
    let (d, b64) = scratch.split_at_mut(n);
    for (t, &b) in b64.iter_mut().zip(bias) {
        *t = b as i64;
    }
    let k = Rows {
        n,
        eps_q: plan.eps_q(n),
        mul,
        bias: b64,
    };
    layer_norm_rows(x, y, &k, d);
    true
}

/// The constants of one LayerNormalization's rows.
pub(super) struct Rows<'a> {
    n: usize,
    eps_q: i128,
    mul: &'a [(i32, u32)],
    bias: &'a [i64],
}

simd_copies! {
    /// Every row, compiled per instruction set.
    fn layer_norm_rows<I, O>(x: &[I], y: &mut [O], k: &Rows<'_>, d: &mut [i64]) => layer_norm_rows_body
}

#[inline(always)]
fn layer_norm_rows_body<I: QInt, O: QInt>(x: &[I], y: &mut [O], k: &Rows<'_>, d: &mut [i64]) {
    let n = k.n;
    let nn = n as i64;
    let half_z = 1i64 << (Z_BITS - 1);
    for (row, out) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        let sum: i64 = row.iter().map(|q| q.to_i64()).sum();
        let mut v: i128 = 0;
        for (t, q) in d.iter_mut().zip(row) {
            *t = nn * q.to_i64() - sum;
            v += i128::from(*t * *t);
        }
        let den = v.saturating_add(k.eps_q);
        let inv = if den <= 0 {
            0
        } else {
            isqrt(((n as u128) << 96) / den as u128) as i64
        };
        for (((o, &t), &(m, sh)), &b) in out.iter_mut().zip(d.iter()).zip(k.mul).zip(k.bias) {
            let z = (t * inv + half_z) >> Z_BITS;
            let p = z * i64::from(m) + b;
            let r = if sh == 0 {
                p
            } else {
                (p + (1i64 << (sh - 1))) >> sh
            };
            *o = O::sat_i64(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::layernorm::layer_norm;
    use crate::tensor::{QTensor, TensorRef};

    #[test]
    fn matches_the_reference() {
        let mut next = crate::engine::xorshift(0x9e37_79b9_7f4a_7c15u64);
        for case in 0..60 {
            let n = [1usize, 2, 7, 32, 192, 385][case % 6];
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
