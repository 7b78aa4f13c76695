//! Relu, Clip, LeakyRelu, PRelu (docs/integer-semantics.md §7), the LUT
//! ops and Div (§10).

use crate::error::Result;
use crate::fixed_point::{rne_i64, Requant};
use crate::lut::{Lut, LutFn, LutSpec};
use crate::param_err;
use crate::qint::QInt;
use crate::tensor::{broadcast_index, broadcast_shapes, QTensor, TensorRef};

/// Relu: `max(sat(R(q)), 0)`.
pub fn relu<I: QInt, O: QInt>(x: TensorRef<'_, I>, r: &Requant) -> QTensor<O> {
    clip(x, r, 0, O::MAX)
}

/// Clip: `clamp(sat(R(q)), lo, hi)` with integer bounds at the output scale
/// (see [`clip_bounds`]).
pub fn clip<I: QInt, O: QInt>(x: TensorRef<'_, I>, r: &Requant, lo: i64, hi: i64) -> QTensor<O> {
    QTensor {
        shape: x.shape().to_vec(),
        data: x
            .data()
            .iter()
            .map(|&q| O::sat_i64(r.apply::<O>(q.to_i64()).to_i64().clamp(lo, hi.max(lo))))
            .collect(),
    }
}

/// Clip's integer bounds at the output scale: `sat(rne(min / s_y))`,
/// `sat(rne(max / s_y))`; an absent bound is the type's bound.
pub fn clip_bounds<O: QInt>(min: Option<f32>, max: Option<f32>, s_y: f32) -> Result<(i64, i64)> {
    if !(s_y.is_finite() && s_y > 0.0) {
        return Err(param_err!("output scale {s_y} is not finite and positive"));
    }
    let b = |v: Option<f32>, dflt: i64| -> Result<i64> {
        match v {
            None => Ok(dflt),
            Some(v) if v.is_nan() => Err(param_err!("Clip bound is NaN")),
            Some(v) => Ok(rne_i64(f64::from(v) / f64::from(s_y)).clamp(O::MIN, O::MAX)),
        }
    };
    Ok((b(min, O::MIN)?, b(max, O::MAX)?))
}

/// LeakyRelu: `q ≥ 0 → R_pos(q)`, `q < 0 → R_neg(q)` with
/// `R_pos = R(s_x/s_y)`, `R_neg = R(α·s_x/s_y)`.
pub fn leaky_relu<I: QInt, O: QInt>(
    x: TensorRef<'_, I>,
    pos: &Requant,
    neg: &Requant,
) -> QTensor<O> {
    QTensor {
        shape: x.shape().to_vec(),
        data: x
            .data()
            .iter()
            .map(|&q| {
                let v = q.to_i64();
                if v >= 0 {
                    pos.apply::<O>(v)
                } else {
                    neg.apply::<O>(v)
                }
            })
            .collect(),
    }
}

/// PRelu: as LeakyRelu with one negative-side [`Requant`] per slope
/// element; `slope_shape` broadcasts to the input.
pub fn prelu<I: QInt, O: QInt>(
    x: TensorRef<'_, I>,
    pos: &Requant,
    neg: TensorRef<'_, Requant>,
) -> Result<QTensor<O>> {
    let shape = broadcast_shapes(x.shape(), neg.shape())?;
    if shape != x.shape() {
        return Err(crate::shape_err!(
            "PRelu slope {:?} does not broadcast to {:?}",
            neg.shape(),
            x.shape()
        ));
    }
    let is = broadcast_index(neg.shape(), &shape)?;
    let data = x
        .data()
        .iter()
        .zip(&is)
        .map(|(&q, &i)| {
            let v = q.to_i64();
            if v >= 0 {
                pos.apply::<O>(v)
            } else {
                neg.data()[i].apply::<O>(v)
            }
        })
        .collect();
    QTensor::new(shape, data)
}

/// A LUT op (Sigmoid, Tanh, Exp, Erf, Gelu, HardSigmoid, HardSwish, Sin,
/// Cos, Sqrt, Reciprocal): the table of [`Lut::for_fn`] applied elementwise.
pub fn lut<I: QInt, O: QInt>(x: TensorRef<'_, I>, table: &Lut) -> QTensor<O> {
    QTensor {
        shape: x.shape().to_vec(),
        data: table.apply(x.data()),
    }
}

/// The parameters of Div (§10): the reciprocal table of `b` (i32 output at
/// `s_r = 1/(s_b·2^30)`) and the Mul requantisation `R(s_a·s_r/s_y)`.
#[derive(Debug, Clone)]
pub struct DivPlan {
    /// `round(2^30 / q_b)`-style reciprocal table.
    pub reciprocal: Lut,
    /// Requantisation of `q_a · r_q`.
    pub requant: Requant,
}

impl DivPlan {
    /// Builds the plan for divisor type `B`.
    pub fn new<B: QInt>(s_a: f32, s_b: f32, s_y: f32) -> Result<DivPlan> {
        let sb = f64::from(s_b);
        let s_r = 1.0 / (sb * 2f64.powi(30));
        let spec = LutSpec {
            out_scale: s_r,
            ..LutSpec::for_types::<B, i32>(sb, s_r)
        };
        let reciprocal = Lut::build(|x| LutFn::Reciprocal.eval(x), &spec)?;
        let requant = Requant::from_ratio(f64::from(s_a) * s_r / f64::from(s_y))?;
        Ok(DivPlan {
            reciprocal,
            requant,
        })
    }
}

/// Div: `sat(R(q_a · Recip(q_b)))`, numpy broadcasting; `q_b = 0` gives
/// the output bound of `q_a`'s sign (0 for `0/0`), as float `±inf` / NaN
/// quantize.
pub fn div<A: QInt, B: QInt, O: QInt>(
    a: TensorRef<'_, A>,
    b: TensorRef<'_, B>,
    plan: &DivPlan,
) -> Result<QTensor<O>> {
    let shape = broadcast_shapes(a.shape(), b.shape())?;
    let ia = broadcast_index(a.shape(), &shape)?;
    let ib = broadcast_index(b.shape(), &shape)?;
    let data = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| {
            let (qa, qb) = (a.data()[i].to_i64(), b.data()[j].to_i64());
            if qb == 0 {
                // x/0 = ±inf saturates, 0/0 = NaN quantizes to 0.
                return O::sat_i64(qa.signum() * i64::MAX);
            }
            plan.requant.apply::<O>(qa * plan.reciprocal.lookup(qb))
        })
        .collect();
    QTensor::new(shape, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu_clip_leaky_by_hand() {
        let x = [-100i8, -3, 0, 3, 100];
        let t = TensorRef::new(&x, &[5]).unwrap();
        let id = Requant::IDENTITY;
        let y: QTensor<i8> = relu(t, &id);
        assert_eq!(y.data, vec![0, 0, 0, 3, 100]);
        // Clip(-1, 6) at s_y = 0.1 → [-10, 60].
        let (lo, hi) = clip_bounds::<i8>(Some(-1.0), Some(6.0), 0.1).unwrap();
        assert_eq!((lo, hi), (-10, 60));
        let y: QTensor<i8> = clip(t, &id, lo, hi);
        assert_eq!(y.data, vec![-10, -3, 0, 3, 60]);
        assert_eq!(
            clip_bounds::<i8>(None, Some(1e9), 0.1).unwrap(),
            (-128, 127)
        );
        assert!(clip_bounds::<i8>(Some(f32::NAN), None, 0.1).is_err());
        let neg = Requant::from_ratio(0.1).unwrap();
        let y: QTensor<i8> = leaky_relu(t, &id, &neg);
        assert_eq!(y.data, vec![-10, 0, 0, 3, 100]); // -0.3 → 0 (nearest)
        let slopes = [
            Requant::from_ratio(0.5).unwrap(),
            Requant::from_ratio(0.25).unwrap(),
        ];
        let x2 = [-4i8, -4, 4, -8];
        let y: QTensor<i8> = prelu(
            TensorRef::new(&x2, &[2, 2]).unwrap(),
            &id,
            TensorRef::new(&slopes, &[2]).unwrap(),
        )
        .unwrap();
        assert_eq!(y.data, vec![-2, -1, 4, -2]);
    }

    #[test]
    fn div_by_hand() {
        // a / b with all scales 1: 100/3 = 33.33 → 33; 7/2 = 3.5 → 4; x/0 saturates.
        let plan = DivPlan::new::<i8>(1.0, 1.0, 1.0).unwrap();
        let a = [100i8, 7, -7, 5];
        let b = [3i8, 2, 2, 0];
        let y: QTensor<i8> = div(
            TensorRef::new(&a, &[4]).unwrap(),
            TensorRef::new(&b, &[4]).unwrap(),
            &plan,
        )
        .unwrap();
        assert_eq!(y.data, vec![33, 4, -3, 127]);
        let y: QTensor<i8> = div(
            TensorRef::new(&[-5i8, 0], &[2]).unwrap(),
            TensorRef::new(&[0i8], &[1]).unwrap(),
            &plan,
        )
        .unwrap();
        assert_eq!(y.data, vec![-128, 0]);
    }
}
