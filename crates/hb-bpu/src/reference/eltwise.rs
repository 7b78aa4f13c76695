//! Elementwise ops with rescaling (docs/integer-semantics.md §6): Add, Sub
//! (one shared-shift rounding for the sum), Mul, Concat, Where, and a plain
//! requantisation.

use crate::error::Result;
use crate::fixed_point::{Requant, Rescale2};
use crate::qint::QInt;
use crate::shape_err;
use crate::tensor::{broadcast_index, broadcast_shapes, split_at_axis, QTensor, TensorRef};

/// `sat(R(q))` for every element (a change of scale; also the integer
/// form of Identity / nearest copies between different scales).
pub fn requantize<I: QInt, O: QInt>(x: TensorRef<'_, I>, r: &Requant) -> QTensor<O> {
    QTensor {
        shape: x.shape().to_vec(),
        data: x.data().iter().map(|&q| r.apply::<O>(q.to_i64())).collect(),
    }
}

/// Add (and Sub with a negative `r_b`): `sat((q_a·M_a + q_b·M_b +
/// 2^(n−1)) >> n)`, numpy broadcasting.
pub fn add<A: QInt, B: QInt, O: QInt>(
    a: TensorRef<'_, A>,
    b: TensorRef<'_, B>,
    r: &Rescale2,
) -> Result<QTensor<O>> {
    let shape = broadcast_shapes(a.shape(), b.shape())?;
    let ia = broadcast_index(a.shape(), &shape)?;
    let ib = broadcast_index(b.shape(), &shape)?;
    let data = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| r.apply::<O>(a.data()[i].to_i64(), b.data()[j].to_i64()))
        .collect();
    QTensor::new(shape, data)
}

/// The [`Rescale2`] of Add: `r_a = s_a / s_y`, `r_b = s_b / s_y`.
pub fn add_rescale(s_a: f32, s_b: f32, s_y: f32) -> Result<Rescale2> {
    let (a, b, y) = (f64::from(s_a), f64::from(s_b), f64::from(s_y));
    Rescale2::from_ratios(a / y, b / y)
}

/// The [`Rescale2`] of Sub: `r_a = s_a / s_y`, `r_b = −s_b / s_y`.
pub fn sub_rescale(s_a: f32, s_b: f32, s_y: f32) -> Result<Rescale2> {
    let (a, b, y) = (f64::from(s_a), f64::from(s_b), f64::from(s_y));
    Rescale2::from_ratios(a / y, -b / y)
}

/// Mul: `sat(R(s_a·s_b/s_y)(q_a · q_b))`, numpy broadcasting.
pub fn mul<A: QInt, B: QInt, O: QInt>(
    a: TensorRef<'_, A>,
    b: TensorRef<'_, B>,
    r: &Requant,
) -> Result<QTensor<O>> {
    let shape = broadcast_shapes(a.shape(), b.shape())?;
    let ia = broadcast_index(a.shape(), &shape)?;
    let ib = broadcast_index(b.shape(), &shape)?;
    let data = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| r.apply::<O>(a.data()[i].to_i64() * b.data()[j].to_i64()))
        .collect();
    QTensor::new(shape, data)
}

/// Concat along `axis`, each input requantised to the output scale with its
/// own [`Requant`] (`requant.len() == inputs.len()`).
pub fn concat<I: QInt, O: QInt>(
    inputs: &[TensorRef<'_, I>],
    requant: &[Requant],
    axis: usize,
) -> Result<QTensor<O>> {
    let first = inputs
        .first()
        .ok_or_else(|| shape_err!("concat of no inputs"))?;
    if requant.len() != inputs.len() {
        return Err(shape_err!(
            "{} requantisations for {} concat inputs",
            requant.len(),
            inputs.len()
        ));
    }
    let rank = first.rank();
    let mut shape = first.shape().to_vec();
    split_at_axis(&shape, axis)?;
    shape[axis] = 0;
    for t in inputs {
        let s = t.shape();
        if s.len() != rank
            || s.iter()
                .zip(first.shape())
                .enumerate()
                .any(|(d, (x, y))| d != axis && x != y)
        {
            return Err(shape_err!(
                "concat inputs {:?} and {s:?} differ off axis {axis}",
                first.shape()
            ));
        }
        shape[axis] += s[axis];
    }
    let (outer, _, inner) = split_at_axis(&shape, axis)?;
    let mut out = Vec::with_capacity(crate::tensor::numel(&shape)?);
    for o in 0..outer {
        for (t, r) in inputs.iter().zip(requant) {
            let row = t.shape()[axis] * inner;
            out.extend(
                t.data()[o * row..(o + 1) * row]
                    .iter()
                    .map(|&q| r.apply::<O>(q.to_i64())),
            );
        }
    }
    QTensor::new(shape, out)
}

/// Where: `cond ? R_a(a) : R_b(b)`, three-way numpy broadcasting.
pub fn where_select<A: QInt, B: QInt, O: QInt>(
    cond: TensorRef<'_, bool>,
    a: TensorRef<'_, A>,
    b: TensorRef<'_, B>,
    ra: &Requant,
    rb: &Requant,
) -> Result<QTensor<O>> {
    let shape = broadcast_shapes(&broadcast_shapes(cond.shape(), a.shape())?, b.shape())?;
    let ic = broadcast_index(cond.shape(), &shape)?;
    let ia = broadcast_index(a.shape(), &shape)?;
    let ib = broadcast_index(b.shape(), &shape)?;
    let data = (0..ic.len())
        .map(|i| {
            if cond.data()[ic[i]] {
                ra.apply::<O>(a.data()[ia[i]].to_i64())
            } else {
                rb.apply::<O>(b.data()[ib[i]].to_i64())
            }
        })
        .collect();
    QTensor::new(shape, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_sub_mul_by_hand() {
        let a = [10i8, -10, 127];
        let b = [3i8];
        let ta = TensorRef::new(&a, &[3]).unwrap();
        let tb = TensorRef::new(&b, &[1]).unwrap();
        // s_a = 0.5, s_b = 1, s_y = 1: 5+3, -5+3, 63.5+3 → 66.5 → 67 (half up).
        let y: QTensor<i8> = add(ta, tb, &add_rescale(0.5, 1.0, 1.0).unwrap()).unwrap();
        assert_eq!(y.data, vec![8, -2, 67]);
        let y: QTensor<i8> = add(ta, tb, &sub_rescale(0.5, 1.0, 1.0).unwrap()).unwrap();
        assert_eq!(y.data, vec![2, -8, 61]); // 60.5 → 61
        let y: QTensor<i8> = mul(ta, tb, &Requant::from_ratio(1.0).unwrap()).unwrap();
        assert_eq!(y.data, vec![30, -30, 127]);
        let bad = [1i8, 2];
        assert!(
            mul::<i8, i8, i8>(ta, TensorRef::new(&bad, &[2]).unwrap(), &Requant::IDENTITY).is_err()
        );
    }

    #[test]
    fn concat_and_where() {
        let a = [1i8, 2, 3, 4];
        let b = [10i8, 20];
        let y: QTensor<i8> = concat(
            &[
                TensorRef::new(&a, &[2, 2]).unwrap(),
                TensorRef::new(&b, &[2, 1]).unwrap(),
            ],
            &[Requant::IDENTITY, Requant::from_ratio(0.5).unwrap()],
            1,
        )
        .unwrap();
        assert_eq!((y.shape, y.data), (vec![2, 3], vec![1, 2, 5, 3, 4, 10]));
        assert!(concat::<i8, i8>(&[], &[], 0).is_err());
        let c = [true, false];
        let m = [-128i8];
        let y: QTensor<i8> = where_select(
            TensorRef::new(&c, &[1, 2]).unwrap(),
            TensorRef::new(&a, &[2, 2]).unwrap(),
            TensorRef::new(&m, &[]).unwrap(),
            &Requant::IDENTITY,
            &Requant::IDENTITY,
        )
        .unwrap();
        assert_eq!(y.data, vec![1, -128, 3, -128]);
    }
}
