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
}
