//! Quantize and dequantize (docs/integer-semantics.md §2).

use crate::error::Result;
use crate::param_err;
use crate::qint::QInt;
use crate::shape_err;
use crate::tensor::{split_at_axis, QTensor, TensorRef};

/// Round half to even of an f32, equal to `f32::round_ties_even` for
/// every input but the sign of a zero result (NaN kept): the `1.5 · 2^23`
/// trick where it is exact (`|v| < 2^22`; the sum's rounding does the
/// work), the library call elsewhere. Without SSE4.1 `round_ties_even` is a call to `rintf`, which
/// dominated weight quantization.
#[inline(always)]
pub fn rne_f32(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    if v.abs() < 4_194_304.0 {
        (v + MAGIC) - MAGIC
    } else {
        v.round_ties_even()
    }
}

/// Value at or below which a float is a mask sentinel (`keep_masks`).
pub const MASK_LIMIT: f32 = -1e8;

/// Scale, clamp range and mask handling of one quantizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantParams {
    /// The scale `s` (finite, > 0).
    pub scale: f32,
    /// Smallest `q`.
    pub lo: i64,
    /// Largest `q`.
    pub hi: i64,
    /// `keep_masks`: data clamps to `[−hi, hi]` and `x ≤ mask_limit`
    /// becomes `lo`.
    pub keep_masks: bool,
    /// The value at or below which a float is a mask under `keep_masks`
    /// ([`MASK_LIMIT`] unless the calibration lowered it).
    pub mask_limit: f32,
}

impl QuantParams {
    /// A feature quantizer of type `T` from a threshold: `s = T / qmax`
    /// (f32), range = the type's full range.
    pub fn feature<T: QInt>(threshold: f32) -> Result<QuantParams> {
        Self::with_range(scale_from_threshold::<T>(threshold)?, T::MIN, T::MAX)
    }

    /// A weight quantizer of type `T`: range `[−qmax, qmax]`.
    pub fn weight<T: QInt>(threshold: f32) -> Result<QuantParams> {
        Self::with_range(scale_from_threshold::<T>(threshold)?, -T::MAX, T::MAX)
    }

    /// A quantizer with an explicit scale and range.
    pub fn with_range(scale: f32, lo: i64, hi: i64) -> Result<QuantParams> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(param_err!("scale {scale} is not finite and positive"));
        }
        if lo > hi {
            return Err(param_err!("empty quantization range [{lo}, {hi}]"));
        }
        Ok(QuantParams {
            scale,
            lo,
            hi,
            keep_masks: false,
            mask_limit: MASK_LIMIT,
        })
    }

    /// `clamp(rne(x / s), lo, hi)` with `x / s` in f32; NaN → 0.
    #[inline]
    pub fn quantize(&self, x: f32) -> i64 {
        if self.keep_masks && x <= self.mask_limit {
            return self.lo;
        }
        let v = rne_f32(x / self.scale);
        if v.is_nan() {
            return 0i64.clamp(self.lo, self.hi);
        }
        let lo = if self.keep_masks {
            (-self.hi).max(self.lo)
        } else {
            self.lo
        };
        (v as i64).clamp(lo, self.hi)
    }

    fn check_type<T: QInt>(&self) -> Result<()> {
        if self.lo < T::MIN || self.hi > T::MAX {
            return Err(param_err!(
                "range [{}, {}] does not fit {}",
                self.lo,
                self.hi,
                T::NAME
            ));
        }
        Ok(())
    }
}

/// `s = T / qmax` in f32 (qmax = 127 / 32767 / 2^31−1 by type).
pub fn scale_from_threshold<T: QInt>(threshold: f32) -> Result<f32> {
    let s = threshold / T::MAX as f32;
    if !(threshold.is_finite() && s.is_finite() && s > 0.0) {
        return Err(param_err!(
            "threshold {threshold} is not finite and positive"
        ));
    }
    Ok(s)
}

/// Quantizes a tensor per tensor.
pub fn quantize<T: QInt>(x: &[f32], p: &QuantParams) -> Result<Vec<T>> {
    p.check_type::<T>()?;
    Ok(x.iter().map(|&v| T::sat_i64(p.quantize(v))).collect())
}

/// Quantizes per channel along `axis` (one [`QuantParams`] per channel).
pub fn quantize_per_channel<T: QInt>(
    x: TensorRef<'_, f32>,
    axis: usize,
    params: &[QuantParams],
) -> Result<QTensor<T>> {
    let (outer, c, inner) = split_at_axis(x.shape(), axis)?;
    if params.len() != c {
        return Err(shape_err!(
            "{} channel quantizers for axis {axis} of {:?}",
            params.len(),
            x.shape()
        ));
    }
    for p in params {
        p.check_type::<T>()?;
    }
    let mut out = Vec::with_capacity(x.data().len());
    for o in 0..outer {
        for (k, p) in params.iter().enumerate() {
            let base = (o * c + k) * inner;
            out.extend(
                x.data()[base..base + inner]
                    .iter()
                    .map(|&v| T::sat_i64(p.quantize(v))),
            );
        }
    }
    QTensor::new(x.shape().to_vec(), out)
}

/// `f32(q) · s` per tensor.
pub fn dequantize<T: QInt>(q: &[T], scale: f32) -> Vec<f32> {
    q.iter().map(|&v| v.to_i64() as f32 * scale).collect()
}

/// `f32(q) · s[c]` per channel along `axis`.
pub fn dequantize_per_channel<T: QInt>(
    q: TensorRef<'_, T>,
    axis: usize,
    scales: &[f32],
) -> Result<Vec<f32>> {
    let (outer, c, inner) = split_at_axis(q.shape(), axis)?;
    if scales.len() != c {
        return Err(shape_err!(
            "{} scales for axis {axis} of {:?}",
            scales.len(),
            q.shape()
        ));
    }
    let mut out = Vec::with_capacity(q.data().len());
    for o in 0..outer {
        for (k, &s) in scales.iter().enumerate() {
            let base = (o * c + k) * inner;
            out.extend(
                q.data()[base..base + inner]
                    .iter()
                    .map(|&v| v.to_i64() as f32 * s),
            );
        }
    }
    Ok(out)
}

/// Dequantizes a high-precision (i32, per-channel) output: `f32(q · s[c])`
/// with the product in f64 (§5).
pub fn dequantize_high_precision(
    q: TensorRef<'_, i32>,
    axis: usize,
    scales: &[f64],
) -> Result<Vec<f32>> {
    let (outer, c, inner) = split_at_axis(q.shape(), axis)?;
    if scales.len() != c && scales.len() != 1 {
        return Err(shape_err!(
            "{} scales for axis {axis} of {:?}",
            scales.len(),
            q.shape()
        ));
    }
    let mut out = Vec::with_capacity(q.data().len());
    for o in 0..outer {
        for k in 0..c {
            let s = scales[if scales.len() == 1 { 0 } else { k }];
            let base = (o * c + k) * inner;
            out.extend(
                q.data()[base..base + inner]
                    .iter()
                    .map(|&v| (f64::from(v) * s) as f32),
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rne_equals_the_library_rounding() {
        let mut vals = vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN_POSITIVE,
            4_194_303.5,
            4_194_304.0,
            4_194_304.5,
            -4_194_303.5,
            8_388_607.5,
            1e9,
        ];
        // Every tie and its neighbours below 2^22, and a spread of others.
        for k in (0..4_194_304i32).step_by(997) {
            for d in [-0.5f32, -0.49999997, 0.0, 0.49999997, 0.5, 0.50000006] {
                vals.push(k as f32 + d);
                vals.push(-(k as f32 + d));
            }
        }
        let mut x = 0x1234_5678u32;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            vals.push(f32::from_bits(x));
        }
        for v in vals {
            let (a, b) = (rne_f32(v), v.round_ties_even());
            assert!(a == b || (a.is_nan() && b.is_nan()), "{v}: {a} vs {b}");
        }
    }

    #[test]
    fn rounding_saturation_specials() {
        let p = QuantParams::feature::<i8>(127.0).unwrap(); // s = 1
        let q: Vec<i8> = quantize(
            &[0.5, 1.5, 2.5, -0.5, -1.5, 126.6, 200.0, -127.6, -300.0],
            &p,
        )
        .unwrap();
        assert_eq!(q, vec![0, 2, 2, 0, -2, 127, 127, -128, -128]);
        let q: Vec<i8> = quantize(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY], &p).unwrap();
        assert_eq!(q, vec![0, 127, -128]);
        let w = QuantParams::weight::<i8>(1.0).unwrap();
        assert_eq!(quantize::<i8>(&[-5.0], &w).unwrap(), vec![-127]);
        assert!(quantize::<i8>(&[0.0], &QuantParams::feature::<i16>(1.0).unwrap()).is_err());
        assert!(QuantParams::feature::<i8>(0.0).is_err());
        assert!(QuantParams::feature::<i8>(f32::INFINITY).is_err());
    }

    #[test]
    fn masks() {
        let mut p = QuantParams::feature::<i8>(127.0).unwrap();
        p.keep_masks = true;
        let q: Vec<i8> = quantize(&[f32::NEG_INFINITY, -1e9, -300.0, 300.0, 3.0], &p).unwrap();
        assert_eq!(q, vec![-128, -128, -127, 127, 3]);
    }

    #[test]
    fn per_channel_round_trip() {
        let x = [1.0f32, -1.0, 0.5, 0.25];
        let p = [
            QuantParams::weight::<i8>(1.0).unwrap(),
            QuantParams::weight::<i8>(0.5).unwrap(),
        ];
        let q: QTensor<i8> =
            quantize_per_channel(TensorRef::new(&x, &[2, 2]).unwrap(), 0, &p).unwrap();
        assert_eq!(q.data, vec![127, -127, 127, 64]);
        let d = dequantize_per_channel(q.view(), 0, &[p[0].scale, p[1].scale]).unwrap();
        assert_eq!(d[0], 1.0);
        assert!(
            quantize_per_channel::<i8>(TensorRef::new(&x, &[2, 2]).unwrap(), 1, &p[..1]).is_err()
        );
        let hp = dequantize_high_precision(
            TensorRef::new(&[3i32, -4], &[1, 2]).unwrap(),
            1,
            &[0.5, 0.25],
        )
        .unwrap();
        assert_eq!(hp, vec![1.5, -1.0]);
        assert_eq!(dequantize(&[2i16, -3], 0.5), vec![1.0, -1.5]);
    }
}
