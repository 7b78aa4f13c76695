//! Requantisation by a fixed-point multiplier and a right shift
//! (docs/integer-semantics.md §3), bias quantisation (§4) and the ec split
//! (§8).

use crate::error::Result;
use crate::param_err;
use crate::qint::QInt;

/// Largest right shift a [`Requant`] uses.
pub const MAX_SHIFT: u32 = 126;

/// `2^31`, one past the largest multiplier magnitude.
const TWO_31: i64 = 1 << 31;

/// `round_half_up(p / 2^n)` = `(p + 2^(n−1)) >> n` (`p` unchanged when
/// `n = 0`), exact for `|p| < 2^125`.
#[inline]
pub fn round_shift(p: i128, n: u32) -> i128 {
    if n == 0 {
        p
    } else {
        (p + (1i128 << (n - 1))) >> n
    }
}

/// A requantisation `y = (acc · M + 2^(n−1)) >> n` approximating `acc · r`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Requant {
    multiplier: i32,
    shift: u32,
}

impl Requant {
    /// The exact identity (`r = 1`: `M = 2^30`, `n = 30`).
    pub const IDENTITY: Requant = Requant {
        multiplier: 1 << 30,
        shift: 30,
    };

    /// Derives `M` and `n` from a real ratio (§3): `|M| ∈ [2^30, 2^31)`
    /// normalised, `n = 31 − e`; ratios below `2^−96` use `n = 126` and a
    /// smaller `M`. Fails for NaN, infinities and `|r| ≥ 2^31`.
    pub fn from_ratio(r: f64) -> Result<Requant> {
        if !r.is_finite() || r.abs() >= TWO_31 as f64 {
            return Err(param_err!("requantisation ratio {r} is out of range"));
        }
        if r == 0.0 {
            return Ok(Requant {
                multiplier: 0,
                shift: 0,
            });
        }
        let (m, n) = normalise(r.abs());
        let m = if r < 0.0 { -m } else { m };
        Ok(Requant {
            multiplier: m as i32,
            shift: n,
        })
    }

    /// A requantisation from its raw parts. Fails when `|M| ≥ 2^31` would be
    /// needed (`M = i32::MIN`) or `n > 126`.
    pub fn new(multiplier: i32, shift: u32) -> Result<Requant> {
        if multiplier == i32::MIN || shift > MAX_SHIFT {
            return Err(param_err!(
                "requant multiplier {multiplier} / shift {shift} out of range"
            ));
        }
        Ok(Requant { multiplier, shift })
    }

    /// The signed multiplier `M`.
    pub fn multiplier(&self) -> i32 {
        self.multiplier
    }

    /// The right shift `n`.
    pub fn shift(&self) -> u32 {
        self.shift
    }

    /// The ratio actually applied, `M · 2^−n`.
    pub fn ratio(&self) -> f64 {
        f64::from(self.multiplier) * (-f64::from(self.shift)).exp2()
    }

    /// `(acc · M + 2^(n−1)) >> n`, unsaturated (exact, 128-bit).
    #[inline]
    pub fn apply_wide(&self, acc: i64) -> i128 {
        round_shift(i128::from(acc) * i128::from(self.multiplier), self.shift)
    }

    /// [`Self::apply_wide`] saturated to `O`.
    #[inline]
    pub fn apply<O: QInt>(&self, acc: i64) -> O {
        O::sat_i128(self.apply_wide(acc))
    }

    /// [`Self::apply`] computed in i64 whenever that is exact (no product
    /// or rounding overflow), else in i128: the same result, faster.
    #[inline(always)]
    pub fn apply_fast<O: QInt>(&self, acc: i64) -> O {
        let n = self.shift;
        if n <= 62 {
            if let Some(p) = acc.checked_mul(i64::from(self.multiplier)) {
                if n == 0 {
                    return O::sat_i64(p);
                }
                if let Some(q) = p.checked_add(1i64 << (n - 1)) {
                    return O::sat_i64(q >> n);
                }
            }
        }
        self.apply::<O>(acc)
    }

    /// Whether this is the exact identity `(acc · 2^k + 2^(k−1)) >> k`
    /// (`M = 2^k`), which returns `acc` unchanged for every `acc`.
    #[inline]
    pub fn is_identity(&self) -> bool {
        self.shift <= 30 && i64::from(self.multiplier) == 1i64 << self.shift
    }
}

/// `(m, n)` with `m · 2^−n ≈ r`, `m ∈ [2^30, 2^31)` unless `n` hits
/// [`MAX_SHIFT`]. `r` finite, positive, `< 2^31`.
fn normalise(r: f64) -> (i64, u32) {
    let (f, mut e) = frexp(r);
    let mut m = (f * TWO_31 as f64).round_ties_even() as i64;
    if m == TWO_31 {
        m = 1 << 30;
        e += 1;
    }
    let n = 31 - e;
    if n > MAX_SHIFT as i32 {
        let m = (r * (MAX_SHIFT as f64).exp2()).round_ties_even() as i64;
        return (m, MAX_SHIFT);
    }
    // |r| < 2^31 → e ≤ 31 → n ≥ 0.
    (m, n.max(0) as u32)
}

/// `r = f · 2^e` with `f ∈ [0.5, 1)`, for finite positive `r` (exact).
fn frexp(r: f64) -> (f64, i32) {
    let bits = r.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    if exp == 0 {
        // Subnormal: scale up by 2^64 first.
        let (f, e) = frexp(r * 2f64.powi(64));
        return (f, e - 64);
    }
    let f = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
    (f, exp - 1022)
}

/// Two terms added before one rounding, with one shared shift (§3,
/// "Shared shift"): `y = (q_a·M_a + q_b·M_b + 2^(n−1)) >> n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rescale2 {
    /// Multiplier of the first term.
    pub ma: i32,
    /// Multiplier of the second term.
    pub mb: i32,
    /// Shared right shift.
    pub shift: u32,
}

impl Rescale2 {
    /// Derives the multipliers of `r_a` and `r_b` (signed; Sub passes
    /// `−s_b / s_y`): the shift comes from the larger magnitude.
    pub fn from_ratios(ra: f64, rb: f64) -> Result<Rescale2> {
        let big = if ra.abs() >= rb.abs() { ra } else { rb };
        let rq = Requant::from_ratio(big)?;
        Requant::from_ratio(if big == ra { rb } else { ra })?;
        let n = rq.shift;
        let scaled = |r: f64| -> i32 {
            if r == big {
                rq.multiplier
            } else {
                (r * f64::from(n).exp2()).round_ties_even() as i32
            }
        };
        Ok(Rescale2 {
            ma: scaled(ra),
            mb: scaled(rb),
            shift: n,
        })
    }

    /// The rounded sum, unsaturated.
    #[inline]
    pub fn apply_wide(&self, qa: i64, qb: i64) -> i128 {
        let p = i128::from(qa) * i128::from(self.ma) + i128::from(qb) * i128::from(self.mb);
        round_shift(p, self.shift)
    }

    /// The rounded sum saturated to `O`.
    #[inline]
    pub fn apply<O: QInt>(&self, qa: i64, qb: i64) -> O {
        O::sat_i128(self.apply_wide(qa, qb))
    }

    /// [`Self::apply`] in i64 when both operands are below `2^30` in
    /// magnitude and the shift is at most 62 (then
    /// `|qa·ma + qb·mb| + 2^(n−1) < 2^63` and the result is exact), else in
    /// i128.
    #[inline(always)]
    pub fn apply_fast<O: QInt>(&self, qa: i64, qb: i64) -> O {
        const B: i64 = 1 << 30;
        let n = self.shift;
        if n <= 62 && (-B..=B).contains(&qa) && (-B..=B).contains(&qb) {
            let p = qa * i64::from(self.ma) + qb * i64::from(self.mb);
            return O::sat_i64(if n == 0 {
                p
            } else {
                (p + (1i64 << (n - 1))) >> n
            });
        }
        self.apply::<O>(qa, qb)
    }
}

/// Round half to even of an f64 to i64, saturating (NaN → 0).
#[inline]
pub fn rne_i64(v: f64) -> i64 {
    v.round_ties_even() as i64
}

/// Quantizes a bias value at the accumulator scale `acc_scale = s_x·s_w[c]`
/// (§4): `rne(b / acc_scale)` in f64, saturated to i32 (`wide = false`,
/// int8 × int8) or i64 (`wide = true`, an int16 operand).
pub fn quantize_bias(b: f32, acc_scale: f64, wide: bool) -> Result<i64> {
    if !(acc_scale.is_finite() && acc_scale > 0.0) {
        return Err(param_err!(
            "bias scale {acc_scale} is not finite and positive"
        ));
    }
    if b.is_nan() {
        return Err(param_err!("bias is NaN"));
    }
    let v = (f64::from(b) / acc_scale).round_ties_even();
    Ok(if wide {
        v as i64
    } else {
        (v as i64).clamp(i64::from(i32::MIN), i64::from(i32::MAX))
    })
}

/// ec weight (§8): `W = clamp(rne(w / (s_w/256)), −32512, 32512)`, the
/// value the reference kernels use (as an i16 weight with scale `s_w/256`).
pub fn ec_weight(w: f32, s_w: f32) -> Result<i16> {
    if !(s_w.is_finite() && s_w > 0.0) {
        return Err(param_err!("weight scale {s_w} is not finite and positive"));
    }
    let v = (f64::from(w) / (f64::from(s_w) / 256.0)).round_ties_even();
    Ok(if v.is_nan() {
        0
    } else {
        v.clamp(-32512.0, 32512.0) as i16
    })
}

/// The two int8 terms of an ec value: `hi = (v + 128) >> 8`, `lo = v − 256·hi`,
/// so `v = 256·hi + lo` exactly. `v` in `[−32768, 32639]`.
pub fn ec_split(v: i16) -> (i8, i8) {
    let v = i32::from(v);
    let hi = (v + 128) >> 8;
    let lo = v - 256 * hi;
    (hi.clamp(-128, 127) as i8, lo as i8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rq(m: i32, n: u32) -> Requant {
        Requant::new(m, n).unwrap()
    }

    #[test]
    fn frexp_exact() {
        assert_eq!(frexp(1.0), (0.5, 1));
        assert_eq!(frexp(0.75), (0.75, 0));
        assert_eq!(frexp(3.0), (0.75, 2));
        let tiny = f64::from_bits(1); // smallest subnormal
        let (f, e) = frexp(tiny);
        assert_eq!(f, 0.5);
        assert_eq!(e, -1073);
    }

    #[test]
    fn derivation() {
        assert_eq!(Requant::from_ratio(1.0).unwrap(), Requant::IDENTITY);
        let r = Requant::from_ratio(0.5).unwrap();
        assert_eq!((r.multiplier(), r.shift()), (1 << 30, 31));
        let r = Requant::from_ratio(-3.0).unwrap();
        assert_eq!((r.multiplier(), r.shift()), (-(3 << 29), 29));
        // Ratio ≥ 1: small shift; near 2^31 the shift reaches 0.
        let r = Requant::from_ratio(2f64.powi(30) * 1.5).unwrap();
        assert_eq!((r.multiplier(), r.shift()), (3 << 29, 0));
        // f·2^31 rounds up to 2^31: renormalised.
        let r = Requant::from_ratio(1.0 - 2f64.powi(-40)).unwrap();
        assert_eq!((r.multiplier(), r.shift()), (1 << 30, 30));
        // Zero, out of range, NaN.
        assert_eq!(Requant::from_ratio(0.0).unwrap().apply::<i32>(12345), 0);
        assert!(Requant::from_ratio(2f64.powi(31)).is_err());
        assert!(Requant::from_ratio(f64::NAN).is_err());
        assert!(Requant::from_ratio(f64::INFINITY).is_err());
        // Tiny: shift clamps at 126 with a denormalised multiplier.
        let r = Requant::from_ratio(2f64.powi(-100)).unwrap();
        assert_eq!((r.multiplier(), r.shift()), (1 << 26, 126));
        let r = Requant::from_ratio(2f64.powi(-130)).unwrap();
        assert_eq!((r.multiplier(), r.shift()), (0, 126));
        assert!(Requant::new(i32::MIN, 3).is_err());
        assert!(Requant::new(1, 127).is_err());
    }

    #[test]
    fn rounding_edges() {
        // r = 1/2: halves round up (toward +inf).
        let h = rq(1 << 30, 31);
        let got: Vec<i32> = [-5, -3, -1, 0, 1, 3, 5]
            .iter()
            .map(|&a| h.apply(a))
            .collect();
        assert_eq!(got, vec![-2, -1, 0, 0, 1, 2, 3]);
        // Shift 0: no rounding term, plain multiply then saturate.
        let s0 = rq(3, 0);
        assert_eq!(s0.apply::<i32>(-7), -21);
        assert_eq!(s0.apply::<i8>(100), 127);
        assert_eq!(s0.apply::<i8>(-100), -128);
        // Shift 31, multiplier near 2^31 (r ≈ 1 − 2^−31).
        let big = rq(i32::MAX, 31);
        assert_eq!(big.apply::<i32>(1), 1);
        assert_eq!(big.apply::<i32>(i32::MAX as i64), i32::MAX - 1);
        assert_eq!(big.apply::<i32>(-(1i64 << 31)), i32::MIN + 1);
        assert_eq!(big.apply_wide(i64::MAX), {
            let p = i128::from(i64::MAX) * i128::from(i32::MAX);
            (p + (1 << 30)) >> 31
        });
        // Saturation to each type.
        let id = Requant::IDENTITY;
        assert_eq!(id.apply::<i8>(128), 127);
        assert_eq!(id.apply::<i8>(-129), -128);
        assert_eq!(id.apply::<i16>(40000), 32767);
        assert_eq!(id.apply::<i32>(i64::MIN), i32::MIN);
        // Identity is exact.
        for a in [-1000i64, -1, 0, 1, 77, 1 << 40] {
            assert_eq!(id.apply_wide(a), i128::from(a));
        }
    }

    #[test]
    fn rescale2_shared_shift() {
        let r = Rescale2::from_ratios(0.5, 0.25).unwrap();
        assert_eq!((r.ma, r.mb, r.shift), (1 << 30, 1 << 29, 31));
        // 3·0.5 + 1·0.25 = 1.75 → 2; one rounding.
        assert_eq!(r.apply::<i8>(3, 1), 2);
        let s = Rescale2::from_ratios(0.25, -1.0).unwrap();
        assert_eq!(s.mb, -(1 << 30));
        assert_eq!(s.apply::<i8>(4, 2), -1);
        assert_eq!(s.apply::<i8>(2, 0), 1); // 0.5 → 1 (half up)
        assert_eq!(s.apply::<i8>(-2, 0), 0); // −0.5 → 0 (half up)
        assert!(Rescale2::from_ratios(1.0, f64::NAN).is_err());
    }

    #[test]
    fn bias_and_ec() {
        assert_eq!(quantize_bias(1.0, 0.25, false).unwrap(), 4);
        assert_eq!(quantize_bias(0.625, 0.25, false).unwrap(), 2); // 2.5 → 2
        assert_eq!(
            quantize_bias(1e9, 1e-3, false).unwrap(),
            i64::from(i32::MAX)
        );
        assert_eq!(quantize_bias(1e9, 1e-3, true).unwrap(), 1_000_000_000_000);
        assert!(quantize_bias(1.0, 0.0, false).is_err());
        assert!(quantize_bias(f32::NAN, 1.0, false).is_err());
        for v in [
            -32768i16, -32640, -129, -128, -1, 0, 1, 127, 128, 32512, 32639,
        ] {
            let (hi, lo) = ec_split(v);
            assert_eq!(256 * i32::from(hi) + i32::from(lo), i32::from(v), "{v}");
        }
        assert_eq!(ec_weight(1.0, 1.0 / 127.0).unwrap(), 32512);
        assert_eq!(ec_weight(-5.0, 1.0 / 127.0).unwrap(), -32512);
        assert_eq!(ec_weight(0.5 / 127.0 / 256.0, 1.0 / 127.0).unwrap(), 0);
        assert!(ec_weight(1.0, 0.0).is_err());
    }
}
