//! LayerNormalization in integers (docs/integer-semantics.md §12): exact
//! mean and variance, an integer square root, per-element affine
//! requantisation.

use crate::error::Result;
use crate::fixed_point::{round_shift, Requant};
use crate::param_err;
use crate::qint::QInt;
use crate::shape_err;
use crate::tensor::{numel, QTensor, TensorRef};

/// Fraction bits of the normalised value `z`.
pub const Z_BITS: u32 = 24;
/// Largest shift of the per-element affine requantisation.
pub const AFFINE_MAX_SHIFT: u32 = 80;

/// Per-element affine parameters of one LayerNormalization node.
#[derive(Debug, Clone)]
pub struct LayerNormPlan {
    s_x: f64,
    eps: f64,
    mul: Vec<(i32, u32)>,
    bias: Vec<i128>,
}

impl LayerNormPlan {
    /// The plan for `gamma` (one per normalised element), optional `beta`,
    /// `eps`, input scale `s_x` and output scale `s_y`.
    pub fn new(s_x: f32, s_y: f32, gamma: &[f32], beta: Option<&[f32]>, eps: f32) -> Result<Self> {
        if !(s_x.is_finite() && s_x > 0.0 && s_y.is_finite() && s_y > 0.0) {
            return Err(param_err!("layer norm scales {s_x} / {s_y}"));
        }
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(param_err!("layer norm epsilon {eps}"));
        }
        if let Some(b) = beta {
            if b.len() != gamma.len() {
                return Err(shape_err!(
                    "beta has {} values, gamma {}",
                    b.len(),
                    gamma.len()
                ));
            }
        }
        let sy = f64::from(s_y);
        let mut mul = Vec::with_capacity(gamma.len());
        let mut bias = Vec::with_capacity(gamma.len());
        for (i, &g) in gamma.iter().enumerate() {
            let r = Requant::from_ratio(f64::from(g) * (-f64::from(Z_BITS)).exp2() / sy)?;
            let (mut m, mut n) = (r.multiplier(), r.shift());
            if n > AFFINE_MAX_SHIFT {
                m = round_shift(i128::from(m), n - AFFINE_MAX_SHIFT) as i32;
                n = AFFINE_MAX_SHIFT;
            }
            let b = beta.map_or(0.0, |b| f64::from(b[i]));
            if b.is_nan() {
                return Err(param_err!("beta is NaN"));
            }
            let bq = (b / sy * f64::from(n).exp2()).round_ties_even();
            bias.push(bq.clamp(-(2f64.powi(110)), 2f64.powi(110)) as i128);
            mul.push((m, n));
        }
        Ok(LayerNormPlan {
            s_x: f64::from(s_x),
            eps: f64::from(eps),
            mul,
            bias,
        })
    }
}

impl LayerNormPlan {
    /// Input scale, epsilon, per-element `(multiplier, shift)` and bias of
    /// the affine step (for the engine's fast path).
    pub(crate) fn parts(&self) -> (f64, f64, &[(i32, u32)], &[i128]) {
        (self.s_x, self.eps, &self.mul, &self.bias)
    }

    /// `n³ · eps / s_x²` rounded half to even: the epsilon term of the
    /// variance for rows of `n` values.
    pub(crate) fn eps_q(&self, n: usize) -> i128 {
        let eps_term = (n as f64).powi(3) * self.eps / (self.s_x * self.s_x);
        eps_term.round_ties_even() as i128
    }
}

/// Floor of the square root.
pub fn isqrt(v: u128) -> u128 {
    let mut r = (v as f64).sqrt() as u128;
    while r.checked_mul(r).is_none_or(|p| p > v) {
        r -= 1;
    }
    while (r + 1).checked_mul(r + 1).is_some_and(|p| p <= v) {
        r += 1;
    }
    r
}

/// LayerNormalization over the dims from `axis` on.
pub fn layer_norm<I: QInt, O: QInt>(
    x: TensorRef<'_, I>,
    axis: usize,
    plan: &LayerNormPlan,
) -> Result<QTensor<O>> {
    let shape = x.shape();
    if axis >= shape.len() {
        return Err(shape_err!("axis {axis} out of range for {shape:?}"));
    }
    let n = numel(&shape[axis..])?;
    if n != plan.mul.len() || n == 0 || n > 1 << 20 {
        return Err(shape_err!(
            "layer norm over {n} values with {} gamma values",
            plan.mul.len()
        ));
    }
    let nn = n as i64;
    let eps_q = plan.eps_q(n);
    let mut out = Vec::with_capacity(x.data().len());
    for row in x.data().chunks(n) {
        let sum: i64 = row.iter().map(|q| q.to_i64()).sum();
        let d: Vec<i64> = row.iter().map(|q| nn * q.to_i64() - sum).collect();
        let v: i128 = d.iter().map(|&v| i128::from(v) * i128::from(v)).sum();
        let den = v.saturating_add(eps_q);
        let inv = if den <= 0 {
            0
        } else {
            isqrt(((n as u128) << 96) / den as u128) as i128
        };
        for (i, &di) in d.iter().enumerate() {
            let z = round_shift(i128::from(di) * inv, Z_BITS);
            let (m, sh) = plan.mul[i];
            let p = (z * i128::from(m)).saturating_add(plan.bias[i]);
            out.push(O::sat_i128(round_shift(p, sh)));
        }
    }
    QTensor::new(shape.to_vec(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isqrt_exact() {
        for v in [
            0u128,
            1,
            2,
            3,
            4,
            15,
            16,
            17,
            1 << 100,
            (1 << 100) - 1,
            u128::MAX >> 8,
        ] {
            let r = isqrt(v);
            assert!(r * r <= v && (r + 1) * (r + 1) > v, "{v}");
        }
    }

    #[test]
    fn layer_norm_by_hand() {
        // Row [-1, 1] → normalised [-1, 1] (eps 0); gamma 2, beta 0.5 at
        // s_y = 0.1: [-15, 25]. A constant row gives beta.
        let plan = LayerNormPlan::new(1.0, 0.1, &[2.0, 2.0], Some(&[0.5, 0.5]), 0.0).unwrap();
        let x = [-1i8, 1, 3, 3];
        let y: QTensor<i8> = layer_norm(TensorRef::new(&x, &[2, 2]).unwrap(), 1, &plan).unwrap();
        assert_eq!(y.data, vec![-15, 25, 5, 5]);
        assert!(layer_norm::<i8, i8>(TensorRef::new(&x, &[4]).unwrap(), 0, &plan).is_err());
        assert!(LayerNormPlan::new(1.0, 0.1, &[1.0], Some(&[1.0, 2.0]), 0.0).is_err());
        // gamma 0: the output is beta.
        let plan = LayerNormPlan::new(1.0, 0.1, &[0.0, 1e-30], Some(&[-0.3, 0.3]), 1e-5).unwrap();
        let y: QTensor<i8> = layer_norm(TensorRef::new(&x[..2], &[2]).unwrap(), 0, &plan).unwrap();
        assert_eq!(y.data, vec![-3, 3]);
    }
}
