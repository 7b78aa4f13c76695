//! Requantisation against exact rational arithmetic in i128
//! (docs/integer-semantics.md §3).

use hb_bpu::{Requant, Rescale2};
use proptest::prelude::*;

/// `⌊p / 2^n + 1/2⌋` by Euclidean division (independent of the shift code).
fn exact_round(p: i128, n: u32) -> i128 {
    if n == 0 {
        return p;
    }
    let d = 1i128 << n;
    let (q, r) = (p.div_euclid(d), p.rem_euclid(d));
    q + i128::from(2 * r >= d)
}

fn ratio() -> impl Strategy<Value = f64> {
    prop_oneof![
        (-40i32..30, 1.0f64..2.0, any::<bool>())
            .prop_map(|(e, m, neg)| if neg { -m } else { m } * 2f64.powi(e)),
        (-120i32..-90, 1.0f64..2.0).prop_map(|(e, m)| m * 2f64.powi(e)),
        Just(1.0),
        Just(0.5),
        Just(0.0),
    ]
}

fn acc() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i32>().prop_map(i64::from),
        -1000i64..1000,
        any::<i64>().prop_map(|v| v >> 16),
        any::<i64>(),
    ]
}

proptest! {
    #[test]
    fn apply_is_exact_rational_rounding(r in ratio(), a in acc()) {
        let rq = Requant::from_ratio(r).unwrap();
        let p = i128::from(a) * i128::from(rq.multiplier());
        prop_assert_eq!(rq.apply_wide(a), exact_round(p, rq.shift()));
        let sat = exact_round(p, rq.shift()).clamp(i128::from(i8::MIN), i128::from(i8::MAX));
        prop_assert_eq!(i128::from(rq.apply::<i8>(a)), sat);
        let sat = exact_round(p, rq.shift()).clamp(i128::from(i32::MIN), i128::from(i32::MAX));
        prop_assert_eq!(i128::from(rq.apply::<i32>(a)), sat);
    }

    #[test]
    fn multiplier_is_normalised_and_accurate(r in ratio()) {
        let rq = Requant::from_ratio(r).unwrap();
        let m = i64::from(rq.multiplier()).abs();
        if r == 0.0 {
            prop_assert_eq!(m, 0);
        } else if rq.shift() < 126 {
            prop_assert!((1i64 << 30..1i64 << 31).contains(&m), "{m}");
            prop_assert!((rq.ratio() - r).abs() <= r.abs() * 2f64.powi(-31));
        } else {
            // Denormalised: absolute error ≤ half a unit of 2^-126.
            prop_assert!((rq.ratio() - r).abs() <= 2f64.powi(-127));
        }
        prop_assert_eq!(rq.multiplier() < 0, r < 0.0);
    }

    #[test]
    fn within_half_lsb_plus_multiplier_error(r in ratio(), a in any::<i32>()) {
        let rq = Requant::from_ratio(r).unwrap();
        let want = f64::from(a) * r;
        let got = rq.apply_wide(i64::from(a)) as f64;
        let bound = 0.5 + want.abs() * 2f64.powi(-31) + want.abs() * 1e-15 + 2f64.powi(-60);
        prop_assert!((got - want).abs() <= bound, "{got} vs {want}");
    }

    #[test]
    fn rescale2_is_exact_and_close(
        ra in ratio(), rb in ratio(), qa in any::<i16>(), qb in any::<i16>()
    ) {
        let r = Rescale2::from_ratios(ra, rb).unwrap();
        let (qa, qb) = (i64::from(qa), i64::from(qb));
        let p = i128::from(qa) * i128::from(r.ma) + i128::from(qb) * i128::from(r.mb);
        prop_assert_eq!(r.apply_wide(qa, qb), exact_round(p, r.shift));
        let want = qa as f64 * ra + qb as f64 * rb;
        let got = r.apply_wide(qa, qb) as f64;
        let slack = (qa as f64 * ra).abs().max((qb as f64 * rb).abs()) * 2f64.powi(-30)
            + (qa.abs() + qb.abs()) as f64 * 2f64.powi(-(r.shift as i32) - 1)
            + 1e-9;
        prop_assert!((got - want).abs() <= 0.5 + slack, "{got} vs {want}");
    }
}

#[test]
fn hand_computed_edges() {
    // Halves round toward +inf, negative too.
    let half = Requant::from_ratio(0.5).unwrap();
    assert_eq!(half.apply::<i8>(1), 1);
    assert_eq!(half.apply::<i8>(-1), 0);
    assert_eq!(half.apply::<i8>(-3), -1);
    // 1/3: 1 → 0.333 → 0; 2 → 0.667 → 1; -2 → -1.
    let third = Requant::from_ratio(1.0 / 3.0).unwrap();
    assert_eq!(
        [1, 2, -2, 300].map(|a| third.apply::<i8>(a)),
        [0, 1, -1, 100]
    );
    // Saturation after rounding.
    assert_eq!(third.apply::<i8>(1000), 127);
    assert_eq!(third.apply::<i8>(-1000), -128);
    // Shift 31 and 0, multiplier near 2^31.
    let near = Requant::new(i32::MAX, 31).unwrap();
    assert_eq!(near.apply::<i32>(2), 2);
    assert_eq!(near.apply::<i32>(1i64 << 31), i32::MAX);
    let s0 = Requant::new(i32::MAX, 0).unwrap();
    assert_eq!(s0.apply::<i32>(1), i32::MAX);
    assert_eq!(s0.apply::<i32>(2), i32::MAX);
    assert_eq!(s0.apply::<i32>(-1), -i32::MAX);
}
