//! Lookup tables (docs/integer-semantics.md §10): direct tables for input
//! domains of at most 256 values, segmented linear-interpolation tables for
//! larger ones, and the functions the LUT ops evaluate.

use crate::error::Result;
use crate::fixed_point::round_shift;
use crate::param_err;
use crate::qint::QInt;

/// Fraction bits of a segmented table's knots.
pub const KNOT_FRAC_BITS: u32 = 8;
/// log2 of the base segment length (1024 inputs).
pub const SEGMENT_LOG2: u32 = 10;
/// A table over at most this many inputs is direct.
pub const DIRECT_MAX: i64 = 256;
/// Interpolation error budget of a segment, in output LSB (before the
/// final rounding).
pub const SEGMENT_ERROR: f64 = 0.25;

/// What a table maps: integer inputs `[in_lo, in_hi]` at `in_scale` to
/// integer outputs `[out_lo, out_hi]` at `out_scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LutSpec {
    /// Input scale `s_x`.
    pub in_scale: f64,
    /// Smallest input.
    pub in_lo: i64,
    /// Largest input.
    pub in_hi: i64,
    /// Output scale `s_y`.
    pub out_scale: f64,
    /// Smallest output.
    pub out_lo: i64,
    /// Largest output.
    pub out_hi: i64,
}

impl LutSpec {
    /// The spec for input type `I` and output type `O` (their full ranges).
    pub fn for_types<I: QInt, O: QInt>(in_scale: f64, out_scale: f64) -> LutSpec {
        LutSpec {
            in_scale,
            in_lo: I::MIN,
            in_hi: I::MAX,
            out_scale,
            out_lo: O::MIN,
            out_hi: O::MAX,
        }
    }

    fn check(&self) -> Result<()> {
        let ok_scale = |s: f64| s.is_finite() && s > 0.0;
        if !ok_scale(self.in_scale) || !ok_scale(self.out_scale) {
            return Err(param_err!(
                "LUT scales {} / {} must be finite and positive",
                self.in_scale,
                self.out_scale
            ));
        }
        if self.in_lo > self.in_hi || self.out_lo > self.out_hi {
            return Err(param_err!("LUT ranges are empty"));
        }
        if self.in_hi - self.in_lo >= 1 << 24 {
            return Err(param_err!("LUT input domain is wider than 2^24"));
        }
        if self.out_lo.unsigned_abs().max(self.out_hi.unsigned_abs()) > 1 << 40 {
            return Err(param_err!("LUT output range exceeds 2^40"));
        }
        Ok(())
    }

    /// `clamp(f(q · s_x) / s_y, out_lo, out_hi)` in f64 (NaN → 0).
    fn target(&self, f: &dyn Fn(f64) -> f64, q: i64) -> f64 {
        let v = f(q as f64 * self.in_scale) / self.out_scale;
        if v.is_nan() {
            0.0f64.clamp(self.out_lo as f64, self.out_hi as f64)
        } else {
            v.clamp(self.out_lo as f64, self.out_hi as f64)
        }
    }
}

/// One segment of a segmented table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// First input of the segment.
    pub start: i64,
    /// Number of inputs.
    pub len: i64,
    /// log2 of the knot step.
    pub log2_step: u32,
    /// Knot values in output units · 2^[`KNOT_FRAC_BITS`].
    pub knots: Vec<i64>,
}

impl Segment {
    fn interp_wide(&self, q: i64) -> i128 {
        let d = q - self.start;
        let k = self.log2_step;
        let i = (d >> k) as usize;
        let t = d - ((i as i64) << k);
        let (a, b) = (self.knots[i], self.knots[i + 1]);
        i128::from(a) * i128::from((1i64 << k) - t) + i128::from(b) * i128::from(t)
    }
}

/// The table itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LutKind {
    /// `table[q − in_lo]`.
    Direct(Vec<i64>),
    /// Base segments of 1024 inputs, each with its own step.
    Segmented(Vec<Segment>),
}

/// A lookup table from integers to integers (§10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lut {
    in_lo: i64,
    in_hi: i64,
    out_lo: i64,
    out_hi: i64,
    kind: LutKind,
}

impl Lut {
    /// Builds the table of `f` for `spec`: direct when the input domain has
    /// at most 256 values, segmented otherwise.
    pub fn build(f: impl Fn(f64) -> f64, spec: &LutSpec) -> Result<Lut> {
        spec.check()?;
        let f: &dyn Fn(f64) -> f64 = &f;
        let kind = if spec.in_hi - spec.in_lo < DIRECT_MAX {
            LutKind::Direct(
                (spec.in_lo..=spec.in_hi)
                    .map(|q| spec.target(f, q).round_ties_even() as i64)
                    .collect(),
            )
        } else {
            LutKind::Segmented(build_segments(f, spec))
        };
        Ok(Lut {
            in_lo: spec.in_lo,
            in_hi: spec.in_hi,
            out_lo: spec.out_lo,
            out_hi: spec.out_hi,
            kind,
        })
    }

    /// The table of a [`LutFn`] for input type `I` and output type `O`.
    pub fn for_fn<I: QInt, O: QInt>(func: LutFn, in_scale: f32, out_scale: f32) -> Result<Lut> {
        let spec = LutSpec::for_types::<I, O>(f64::from(in_scale), f64::from(out_scale));
        Lut::build(|x| func.eval(x), &spec)
    }

    /// The output for input `q` (clamped to the input domain first).
    pub fn lookup(&self, q: i64) -> i64 {
        let q = q.clamp(self.in_lo, self.in_hi);
        match &self.kind {
            LutKind::Direct(t) => t[(q - self.in_lo) as usize],
            LutKind::Segmented(segs) => {
                let j = ((q - self.in_lo) >> SEGMENT_LOG2) as usize;
                let s = &segs[j];
                let y = round_shift(s.interp_wide(q), s.log2_step + KNOT_FRAC_BITS);
                y.clamp(i128::from(self.out_lo), i128::from(self.out_hi)) as i64
            }
        }
    }

    /// Applies the table to every element, saturating to `O`.
    pub fn apply<I: QInt, O: QInt>(&self, xs: &[I]) -> Vec<O> {
        xs.iter()
            .map(|&q| O::sat_i64(self.lookup(q.to_i64())))
            .collect()
    }

    /// The table's representation.
    pub fn kind(&self) -> &LutKind {
        &self.kind
    }

    /// Number of stored entries (direct entries or knots).
    pub fn entries(&self) -> usize {
        match &self.kind {
            LutKind::Direct(t) => t.len(),
            LutKind::Segmented(s) => s.iter().map(|s| s.knots.len()).sum(),
        }
    }

    /// The input domain `[in_lo, in_hi]`.
    pub fn domain(&self) -> (i64, i64) {
        (self.in_lo, self.in_hi)
    }
}

fn build_segments(f: &dyn Fn(f64) -> f64, spec: &LutSpec) -> Vec<Segment> {
    let one = 1i64 << KNOT_FRAC_BITS;
    let (klo, khi) = (spec.out_lo * one, spec.out_hi * one);
    let base = 1i64 << SEGMENT_LOG2;
    let mut segs = Vec::new();
    let mut start = spec.in_lo;
    while start <= spec.in_hi {
        let len = (spec.in_hi - start + 1).min(base);
        // Exact targets of the segment's inputs plus the one past its end.
        let exact: Vec<f64> = (0..=len).map(|d| spec.target(f, start + d)).collect();
        let knot = |d: i64| -> i64 {
            ((exact[d as usize] * one as f64).round_ties_even() as i64).clamp(klo, khi)
        };
        let mut chosen = None;
        for k in (0..=SEGMENT_LOG2).rev() {
            let step = 1i64 << k;
            let n_knots = (len + step - 1) / step + 1;
            let knots: Vec<i64> = (0..n_knots)
                .map(|i| {
                    let d = i * step;
                    if d <= len {
                        knot(d)
                    } else {
                        let v = spec.target(f, start + d);
                        ((v * one as f64).round_ties_even() as i64).clamp(klo, khi)
                    }
                })
                .collect();
            let seg = Segment {
                start,
                len,
                log2_step: k,
                knots,
            };
            let denom = (1i64 << (k + KNOT_FRAC_BITS)) as f64;
            let ok = (0..len).all(|d| {
                let v = seg.interp_wide(start + d) as f64 / denom;
                (v - exact[d as usize]).abs() <= SEGMENT_ERROR
            });
            if ok || k == 0 {
                chosen = Some(seg);
                break;
            }
        }
        if let Some(s) = chosen {
            segs.push(s);
        }
        start += len;
    }
    segs
}

/// The functions of the LUT ops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LutFn {
    /// `1 / (1 + e^−x)`.
    Sigmoid,
    /// `tanh x`.
    Tanh,
    /// `e^x`.
    Exp,
    /// The error function.
    Erf,
    /// `x · Φ(x)` (exact Gelu).
    Gelu,
    /// Gelu, `approximate = "tanh"`.
    GeluTanh,
    /// `max(0, min(1, alpha·x + beta))`.
    HardSigmoid {
        /// Slope.
        alpha: f64,
        /// Offset.
        beta: f64,
    },
    /// `x · max(0, min(1, x/6 + 1/2))`.
    HardSwish,
    /// `sin x`.
    Sin,
    /// `cos x`.
    Cos,
    /// `sqrt x` (NaN for `x < 0`, which the table maps to 0).
    Sqrt,
    /// `1 / x` (`1/0 = +inf`, the table's upper bound).
    Reciprocal,
    /// `x^exponent` as `f64::powf` (NaN for a negative base and a
    /// fractional exponent, which the table maps to 0).
    Pow {
        /// The constant exponent.
        exponent: f64,
    },
}

impl LutFn {
    /// Evaluates the function in f64.
    pub fn eval(&self, x: f64) -> f64 {
        match *self {
            LutFn::Sigmoid => {
                if x >= 0.0 {
                    1.0 / (1.0 + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (1.0 + e)
                }
            }
            LutFn::Tanh => x.tanh(),
            LutFn::Exp => x.exp(),
            LutFn::Erf => erf(x),
            LutFn::Gelu => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
            LutFn::GeluTanh => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
            }
            LutFn::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            LutFn::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            LutFn::Sin => x.sin(),
            LutFn::Cos => x.cos(),
            LutFn::Sqrt => x.sqrt(),
            LutFn::Reciprocal => {
                if x == 0.0 {
                    f64::INFINITY
                } else {
                    1.0 / x
                }
            }
            LutFn::Pow { exponent } => x.powf(exponent),
        }
    }
}

/// The error function in f64 (Taylor series for `|x| ≤ 2`, continued
/// fraction of erfc beyond), accurate to ~1e−15.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let v = if a <= 2.0 {
        // erf x = 2/√π Σ (−1)^n x^(2n+1) / (n! (2n+1))
        let mut term = a;
        let mut sum = a;
        let x2 = a * a;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else if a > 27.0 {
        1.0
    } else {
        // erfc x = e^{−x²}/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + …)))), Lentz.
        let tiny = 1e-300;
        let mut f = a;
        let mut c = a;
        let mut d = 0.0;
        for k in 1..200 {
            let ak = k as f64 / 2.0;
            d = a + ak * d;
            d = if d.abs() < tiny { tiny } else { d };
            c = a + ak / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * f)
    };
    v.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_values() {
        // Reference values (Abramowitz & Stegun / mpmath).
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (2.1, 0.997_020_533_343_667),
            (2.5, 0.999_593_047_982_555),
            (3.0, 0.999_977_909_503_001_4),
            (3.5, 0.999_999_256_901_627_7),
            (5.0, 0.999_999_999_998_462_5),
        ] {
            assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {}", erf(x));
            assert!((erf(-x) + want).abs() < 1e-14);
        }
    }

    #[test]
    fn direct_table_int8() {
        let lut = Lut::for_fn::<i8, i8>(LutFn::Sigmoid, 8.0 / 127.0, 1.0 / 127.0).unwrap();
        assert!(matches!(lut.kind(), LutKind::Direct(t) if t.len() == 256));
        assert_eq!(lut.lookup(0), 64); // 0.5·127 = 63.5 → 64 (half even)
        assert_eq!(lut.lookup(127), 127);
        assert_eq!(lut.lookup(-128), 0);
        assert_eq!(lut.lookup(1000), 127); // clamped input
        let r = Lut::for_fn::<i8, i8>(LutFn::Reciprocal, 1.0, 1.0).unwrap();
        assert_eq!(r.lookup(0), 127);
        let s = Lut::for_fn::<i8, i8>(LutFn::Sqrt, 1.0, 1.0).unwrap();
        assert_eq!(s.lookup(-4), 0);
        assert_eq!(s.lookup(9), 3);
    }

    #[test]
    fn segmented_table_int16() {
        let sx = 8.0 / 32767.0;
        let sy = 1.0 / 32767.0;
        let lut = Lut::for_fn::<i16, i16>(LutFn::Sigmoid, sx, sy).unwrap();
        let LutKind::Segmented(segs) = lut.kind() else {
            panic!("expected segments")
        };
        assert_eq!(segs.len(), 64);
        assert!(lut.entries() < 4000, "{}", lut.entries());
        for q in (-32768i64..=32767).step_by(7) {
            let want = LutFn::Sigmoid.eval(q as f64 * f64::from(sx)) / f64::from(sy);
            let got = lut.lookup(q) as f64;
            assert!((got - want.clamp(-32768.0, 32767.0)).abs() <= 0.75, "{q}");
        }
        assert!(Lut::build(|x| x, &LutSpec::for_types::<i16, i16>(0.0, 1.0)).is_err());
    }
}
