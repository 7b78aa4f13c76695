//! Softmax in integers (docs/integer-semantics.md §11): max subtraction,
//! an exp table with output scale 2^−30, an exact i64 sum and one rounded
//! division per element.

use crate::error::Result;
use crate::fixed_point::Requant;
use crate::lut::{Lut, LutFn, LutKind, LutSpec};
use crate::param_err;
use crate::qint::QInt;
use crate::shape_err;
use crate::tensor::{split_at_axis, QTensor, TensorRef};

/// Fraction bits of the exp table's output.
pub const EXP_BITS: u32 = 30;

/// Precomputed tables of one Softmax node.
#[derive(Debug, Clone)]
pub struct SoftmaxPlan {
    exp: Lut,
    /// The exp table's values as i32 when it is direct (they are at most
    /// 2^[`EXP_BITS`]), for 16-lane lookups.
    exp_i32: Option<Vec<i32>>,
    inv_out: Requant,
}

impl SoftmaxPlan {
    /// The plan for input type `I` at scale `s_x`, output scale `s_y`.
    pub fn new<I: QInt>(s_x: f32, s_y: f32) -> Result<SoftmaxPlan> {
        let spec = LutSpec {
            in_scale: f64::from(s_x),
            in_lo: I::MIN - I::MAX,
            in_hi: 0,
            out_scale: (-f64::from(EXP_BITS)).exp2(),
            out_lo: 0,
            out_hi: 1 << EXP_BITS,
        };
        let exp = Lut::build(|x| LutFn::Exp.eval(x), &spec)?;
        let inv_out = Requant::from_ratio(1.0 / f64::from(s_y))?;
        if inv_out.shift() > 64 || inv_out.multiplier() <= 0 {
            return Err(param_err!("softmax output scale {s_y} is out of range"));
        }
        let exp_i32 = match exp.kind() {
            LutKind::Direct(t) => t.iter().map(|&v| i32::try_from(v).ok()).collect(),
            LutKind::Segmented(_) => None,
        };
        Ok(SoftmaxPlan {
            exp,
            exp_i32,
            inv_out,
        })
    }

    /// The exp table: `exp(s_x · d)` at scale 2^−[`EXP_BITS`] for
    /// `d = q − max ≤ 0`.
    pub fn exp_table(&self) -> &Lut {
        &self.exp
    }

    /// The exp table's values as i32 when it is direct.
    pub fn exp_table_i32(&self) -> Option<&[i32]> {
        self.exp_i32.as_deref()
    }

    /// The output rounding `1 / s_y` as multiplier and shift.
    pub fn out_requant(&self) -> &Requant {
        &self.inv_out
    }
}

/// Softmax along `axis`. With `mask_qmin`, inputs equal to `I::MIN` are
/// masked (weight 0); a fully masked row gives 0.
pub fn softmax<I: QInt, O: QInt>(
    x: TensorRef<'_, I>,
    axis: usize,
    plan: &SoftmaxPlan,
    mask_qmin: bool,
) -> Result<QTensor<O>> {
    let (outer, n, inner) = split_at_axis(x.shape(), axis)?;
    if n > 1 << 20 {
        return Err(shape_err!("softmax over {n} > 2^20 values"));
    }
    let m = i128::from(plan.inv_out.multiplier());
    let sh = plan.inv_out.shift();
    let mut out = vec![O::default(); x.data().len()];
    for o in 0..outer {
        for i in 0..inner {
            let idx = |k: usize| (o * n + k) * inner + i;
            let live = |q: i64| !(mask_qmin && q == I::MIN);
            let vals: Vec<i64> = (0..n).map(|k| x.data()[idx(k)].to_i64()).collect();
            let Some(max) = vals.iter().copied().filter(|&q| live(q)).max() else {
                for k in 0..n {
                    out[idx(k)] = O::sat_i64(0);
                }
                continue;
            };
            let e: Vec<i64> = vals
                .iter()
                .map(|&q| if live(q) { plan.exp.lookup(q - max) } else { 0 })
                .collect();
            let s: i128 = e.iter().map(|&v| i128::from(v)).sum();
            let den = 2 * (s << sh);
            for k in 0..n {
                let y = if s == 0 {
                    0
                } else {
                    (2 * i128::from(e[k]) * m + (s << sh)).div_euclid(den)
                };
                out[idx(k)] = O::sat_i128(y);
            }
        }
    }
    QTensor::new(x.shape().to_vec(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_by_hand() {
        // s_x = ln 2: values 0, 1, 2 → weights 1, 2, 4 → 1/7, 2/7, 4/7.
        let plan = SoftmaxPlan::new::<i8>(std::f32::consts::LN_2, 1.0 / 127.0).unwrap();
        let x = [0i8, 1, 2];
        let y: QTensor<i8> =
            softmax(TensorRef::new(&x, &[1, 3]).unwrap(), 1, &plan, false).unwrap();
        assert_eq!(y.data, vec![18, 36, 73]); // 18.14, 36.29, 72.57
                                              // Masked entries get 0; a fully masked row is 0.
        let x = [-128i8, 1, 1, -128, -128, -128];
        let y: QTensor<i8> = softmax(TensorRef::new(&x, &[2, 3]).unwrap(), 1, &plan, true).unwrap();
        assert_eq!(y.data, vec![0, 64, 64, 0, 0, 0]); // 63.5 → 64 (half up)
                                                      // Along axis 0.
        let x = [0i8, 2, 0, 0];
        let y: QTensor<i8> =
            softmax(TensorRef::new(&x, &[2, 2]).unwrap(), 0, &plan, false).unwrap();
        assert_eq!(y.data, vec![64, 102, 64, 25]); // 4/5·127 = 101.6, 25.4
        assert!(softmax::<i8, i8>(TensorRef::new(&x, &[2, 2]).unwrap(), 2, &plan, false).is_err());
    }
}
