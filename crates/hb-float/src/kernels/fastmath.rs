//! Vectorisable f32 math for hot kernels (Softmax, attention).
//!
//! `exp_f32` is the Cephes `expf` scheme: `x = n·ln2 + r` with `n` rounded
//! by the 1.5·2²³ trick (no libm call, so loops auto-vectorise), a degree-6
//! polynomial for `e^r` and `2^n` built in the exponent bits. Relative error
//! ≤ 2 ulp over the normal range; below −87.34 it returns 0, above 88.72 +inf,
//! NaN stays NaN.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23
const LO: f32 = -87.336_55;
const HI: f32 = 88.722_83;

/// `e^x` in f32.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let xc = x.clamp(LO, HI);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    // `t` lies in [2^23, 2^24), where the low mantissa bits hold `n` as an
    // integer: integer ops only, so the loop stays vectorised (a float→int
    // `as` cast is saturating and scalarises).
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = xc - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r2 + r + 1.0;
    let scale = f32::from_bits(((ni.wrapping_add(127)).clamp(1, 254) as u32) << 23);
    let y = e * scale;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        y
    }
}

/// Horner evaluation of `c[0]·v^(n-1) + … + c[n-1]` (plain mul + add, so
/// the baseline and the AVX2 copies of a caller give identical bits).
#[inline(always)]
fn poly(c: &[f32], v: f32) -> f32 {
    c[1..].iter().fold(c[0], |r, &k| r * v + k)
}

/// `erf(x)` for `|x| ≤ 0.921875`: `x + x·P(x²)`.
const ERF_SMALL: [f32; 6] = [
    -0.000_604_715_14,
    0.005_005_624_6,
    -0.026_776_401,
    0.112_821_4,
    -0.376_125_34,
    0.128_379_17,
];
/// `ln(erfc(t))` for `0.921875 < t < 3.925`.
const ERF_LARGE: [f32; 10] = [
    -2.481_382_4e-8,
    2.176_768e-6,
    -5.111_338_4e-5,
    0.000_623_501_43,
    -0.004_846_863,
    0.026_603_555,
    -0.110_322_855,
    -0.631_628_7,
    -1.130_321_9,
    0.000_336_639_85,
];

/// `erf(x)` in f32 without branches on the value (loops vectorise):
/// `x + x·P(x²)` up to |x| = 0.921875, `1 − e^{Q(|x|)}` with `Q ≈ ln erfc`
/// up to 3.925, then ±1. Both polynomials were fitted for this crate
/// (least squares on Chebyshev nodes, `xtask/fit_fastmath.py`); measured
/// error ≤ 2 ulp against the f64 erf over [−6, 6] and 1e-30..1.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let small = x + x * poly(&ERF_SMALL, x * x);
    let tail = 1.0 - exp_f32(poly(&ERF_LARGE, a.min(3.925)));
    let large = if a >= 3.925 { 1.0 } else { tail };
    let r = if a <= 0.921_875 {
        small
    } else {
        large.copysign(x)
    };
    if x.is_nan() {
        x
    } else {
        r
    }
}

/// `tanh(x)` for `|x| ≤ 0.625`: `x + x·s·P(s)`, `s = x²`.
const TANH_SMALL: [f32; 6] = [
    0.002_314_125_2,
    -0.008_365_824,
    0.021_776_905,
    -0.053_960_49,
    0.133_333_1,
    -0.333_333_34,
];

/// `tanh(x)` in f32, vectorisable: an odd polynomial near 0 (no
/// cancellation), `1 − 2/(e^{2|x|} + 1)` elsewhere; ≤ 2 ulp (tested).
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let s = x * x;
    let small = x + x * s * poly(&TANH_SMALL, s);
    let large = (1.0 - 2.0 / (exp_f32(2.0 * a) + 1.0)).copysign(x);
    if a <= 0.625 || x.is_nan() {
        small
    } else {
        large
    }
}

/// The logistic function `1 / (1 + e^{−x})` in f32, vectorisable.
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

#[cfg(test)]
mod tests {
    use super::exp_f32;

    #[test]
    fn matches_libm_within_2_ulp() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp_f32(x), x.exp());
            assert!(((a - b) / b).abs() <= 2.5e-7, "exp({x}) = {a}, libm {b}");
            x += 0.0137;
        }
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(0.0), 1.0);
    }

    fn ulps(a: f32, b: f64) -> f64 {
        let spacing = f64::from(f32::from_bits((b.abs() as f32).to_bits() + 1) - b.abs() as f32);
        (f64::from(a) - b).abs() / spacing.max(f64::from(f32::MIN_POSITIVE))
    }

    fn sweep(f: fn(f32) -> f32, reference: fn(f64) -> f64, lo: f32, hi: f32, max_ulp: f64) {
        let mut x = lo;
        while x <= hi {
            for v in [x, 1e-6 * x, 1e-20 * x] {
                let (got, want) = (f(v), reference(f64::from(v)));
                assert!(ulps(got, want) <= max_ulp, "f({v}) = {got}, want {want}");
            }
            x += 0.000_731;
        }
    }

    #[test]
    fn erf_within_2_ulp() {
        sweep(super::erf_f32, crate::kernels::erf::erf_f64, -6.0, 6.0, 2.0);
        assert_eq!(super::erf_f32(f32::INFINITY), 1.0);
        assert_eq!(super::erf_f32(f32::NEG_INFINITY), -1.0);
        assert!(super::erf_f32(f32::NAN).is_nan());
        assert_eq!(super::erf_f32(0.0), 0.0);
    }

    #[test]
    fn tanh_within_2_ulp() {
        sweep(super::tanh_f32, f64::tanh, -12.0, 12.0, 2.0);
        assert_eq!(super::tanh_f32(f32::INFINITY), 1.0);
        assert_eq!(super::tanh_f32(-100.0), -1.0);
        assert!(super::tanh_f32(f32::NAN).is_nan());
    }

    #[test]
    fn sigmoid_matches_the_definition() {
        let mut x = -100.0f32;
        while x < 100.0 {
            let want = 1.0 / (1.0 + (-f64::from(x)).exp());
            let got = super::sigmoid_f32(x);
            assert!(
                (f64::from(got) - want).abs() <= 3e-7 * want + 1e-37,
                "sigmoid({x}) = {got}"
            );
            x += 0.0173;
        }
        assert!(super::sigmoid_f32(f32::NAN).is_nan());
    }
}
