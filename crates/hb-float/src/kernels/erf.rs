//! Error function, ported from the `libm` crate (musl / FreeBSD msun
//! `s_erf.c`, `s_erff.c`); accurate to about 1 ulp.
//!
//! ====================================================
//! Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
//!
//! Developed at SunPro, a Sun Microsystems, Inc. business.
//! Permission to use, copy, modify, and distribute this
//! software is freely granted, provided that this notice
//! is preserved.
//! ====================================================
#![allow(
    clippy::excessive_precision,
    clippy::approx_constant,
    clippy::unreadable_literal,
    clippy::needless_late_init,
    clippy::needless_return
)]

const ERX_D: f64 = 8.45062911510467529297e-01; /* 0x3FEB0AC1, 0x60000000 */
/*
 * Coefficients for approximation to  erf on [0,0.84375]
 */
const EFX8_D: f64 = 1.02703333676410069053e+00; /* 0x3FF06EBA, 0x8214DB69 */
const PP0_D: f64 = 1.28379167095512558561e-01; /* 0x3FC06EBA, 0x8214DB68 */
const PP1_D: f64 = -3.25042107247001499370e-01; /* 0xBFD4CD7D, 0x691CB913 */
const PP2_D: f64 = -2.84817495755985104766e-02; /* 0xBF9D2A51, 0xDBD7194F */
const PP3_D: f64 = -5.77027029648944159157e-03; /* 0xBF77A291, 0x236668E4 */
const PP4_D: f64 = -2.37630166566501626084e-05; /* 0xBEF8EAD6, 0x120016AC */
const QQ1_D: f64 = 3.97917223959155352819e-01; /* 0x3FD97779, 0xCDDADC09 */
const QQ2_D: f64 = 6.50222499887672944485e-02; /* 0x3FB0A54C, 0x5536CEBA */
const QQ3_D: f64 = 5.08130628187576562776e-03; /* 0x3F74D022, 0xC4D36B0F */
const QQ4_D: f64 = 1.32494738004321644526e-04; /* 0x3F215DC9, 0x221C1A10 */
const QQ5_D: f64 = -3.96022827877536812320e-06; /* 0xBED09C43, 0x42A26120 */
/*
 * Coefficients for approximation to  erf  in [0.84375,1.25]
 */
const PA0_D: f64 = -2.36211856075265944077e-03; /* 0xBF6359B8, 0xBEF77538 */
const PA1_D: f64 = 4.14856118683748331666e-01; /* 0x3FDA8D00, 0xAD92B34D */
const PA2_D: f64 = -3.72207876035701323847e-01; /* 0xBFD7D240, 0xFBB8C3F1 */
const PA3_D: f64 = 3.18346619901161753674e-01; /* 0x3FD45FCA, 0x805120E4 */
const PA4_D: f64 = -1.10894694282396677476e-01; /* 0xBFBC6398, 0x3D3E28EC */
const PA5_D: f64 = 3.54783043256182359371e-02; /* 0x3FA22A36, 0x599795EB */
const PA6_D: f64 = -2.16637559486879084300e-03; /* 0xBF61BF38, 0x0A96073F */
const QA1_D: f64 = 1.06420880400844228286e-01; /* 0x3FBB3E66, 0x18EEE323 */
const QA2_D: f64 = 5.40397917702171048937e-01; /* 0x3FE14AF0, 0x92EB6F33 */
const QA3_D: f64 = 7.18286544141962662868e-02; /* 0x3FB2635C, 0xD99FE9A7 */
const QA4_D: f64 = 1.26171219808761642112e-01; /* 0x3FC02660, 0xE763351F */
const QA5_D: f64 = 1.36370839120290507362e-02; /* 0x3F8BEDC2, 0x6B51DD1C */
const QA6_D: f64 = 1.19844998467991074170e-02; /* 0x3F888B54, 0x5735151D */
/*
 * Coefficients for approximation to  erfc in [1.25,1/0.35]
 */
const RA0_D: f64 = -9.86494403484714822705e-03; /* 0xBF843412, 0x600D6435 */
const RA1_D: f64 = -6.93858572707181764372e-01; /* 0xBFE63416, 0xE4BA7360 */
const RA2_D: f64 = -1.05586262253232909814e+01; /* 0xC0251E04, 0x41B0E726 */
const RA3_D: f64 = -6.23753324503260060396e+01; /* 0xC04F300A, 0xE4CBA38D */
const RA4_D: f64 = -1.62396669462573470355e+02; /* 0xC0644CB1, 0x84282266 */
const RA5_D: f64 = -1.84605092906711035994e+02; /* 0xC067135C, 0xEBCCABB2 */
const RA6_D: f64 = -8.12874355063065934246e+01; /* 0xC0545265, 0x57E4D2F2 */
const RA7_D: f64 = -9.81432934416914548592e+00; /* 0xC023A0EF, 0xC69AC25C */
const SA1_D: f64 = 1.96512716674392571292e+01; /* 0x4033A6B9, 0xBD707687 */
const SA2_D: f64 = 1.37657754143519042600e+02; /* 0x4061350C, 0x526AE721 */
const SA3_D: f64 = 4.34565877475229228821e+02; /* 0x407B290D, 0xD58A1A71 */
const SA4_D: f64 = 6.45387271733267880336e+02; /* 0x40842B19, 0x21EC2868 */
const SA5_D: f64 = 4.29008140027567833386e+02; /* 0x407AD021, 0x57700314 */
const SA6_D: f64 = 1.08635005541779435134e+02; /* 0x405B28A3, 0xEE48AE2C */
const SA7_D: f64 = 6.57024977031928170135e+00; /* 0x401A47EF, 0x8E484A93 */
const SA8_D: f64 = -6.04244152148580987438e-02; /* 0xBFAEEFF2, 0xEE749A62 */
/*
 * Coefficients for approximation to  erfc in [1/.35,28]
 */
const RB0_D: f64 = -9.86494292470009928597e-03; /* 0xBF843412, 0x39E86F4A */
const RB1_D: f64 = -7.99283237680523006574e-01; /* 0xBFE993BA, 0x70C285DE */
const RB2_D: f64 = -1.77579549177547519889e+01; /* 0xC031C209, 0x555F995A */
const RB3_D: f64 = -1.60636384855821916062e+02; /* 0xC064145D, 0x43C5ED98 */
const RB4_D: f64 = -6.37566443368389627722e+02; /* 0xC083EC88, 0x1375F228 */
const RB5_D: f64 = -1.02509513161107724954e+03; /* 0xC0900461, 0x6A2E5992 */
const RB6_D: f64 = -4.83519191608651397019e+02; /* 0xC07E384E, 0x9BDC383F */
const SB1_D: f64 = 3.03380607434824582924e+01; /* 0x403E568B, 0x261D5190 */
const SB2_D: f64 = 3.25792512996573918826e+02; /* 0x40745CAE, 0x221B9F0A */
const SB3_D: f64 = 1.53672958608443695994e+03; /* 0x409802EB, 0x189D5118 */
const SB4_D: f64 = 3.19985821950859553908e+03; /* 0x40A8FFB7, 0x688C246A */
const SB5_D: f64 = 2.55305040643316442583e+03; /* 0x40A3F219, 0xCEDF3BE6 */
const SB6_D: f64 = 4.74528541206955367215e+02; /* 0x407DA874, 0xE79FE763 */
const SB7_D: f64 = -2.24409524465858183362e+01; /* 0xC03670E2, 0x42712D62 */

fn erfc1_d(x: f64) -> f64 {
    let s: f64;
    let p: f64;
    let q: f64;

    s = f64::abs(x) - 1.0;
    p = PA0_D + s * (PA1_D + s * (PA2_D + s * (PA3_D + s * (PA4_D + s * (PA5_D + s * PA6_D)))));
    q = 1.0 + s * (QA1_D + s * (QA2_D + s * (QA3_D + s * (QA4_D + s * (QA5_D + s * QA6_D)))));

    1.0 - ERX_D - p / q
}

fn erfc2_d(ix: u32, mut x: f64) -> f64 {
    let s: f64;
    let r: f64;
    let big_s: f64;
    let z: f64;

    if ix < 0x3ff40000 {
        /* |x| < 1.25 */
        return erfc1_d(x);
    }

    x = f64::abs(x);
    s = 1.0 / (x * x);
    if ix < 0x4006db6d {
        /* |x| < 1/.35 ~ 2.85714 */
        r = RA0_D
            + s * (RA1_D
                + s * (RA2_D + s * (RA3_D + s * (RA4_D + s * (RA5_D + s * (RA6_D + s * RA7_D))))));
        big_s = 1.0
            + s * (SA1_D
                + s * (SA2_D
                    + s * (SA3_D
                        + s * (SA4_D + s * (SA5_D + s * (SA6_D + s * (SA7_D + s * SA8_D)))))));
    } else {
        /* |x| > 1/.35 */
        r = RB0_D + s * (RB1_D + s * (RB2_D + s * (RB3_D + s * (RB4_D + s * (RB5_D + s * RB6_D)))));
        big_s = 1.0
            + s * (SB1_D
                + s * (SB2_D + s * (SB3_D + s * (SB4_D + s * (SB5_D + s * (SB6_D + s * SB7_D))))));
    }
    z = f64::from_bits(x.to_bits() & 0xffff_ffff_0000_0000);

    f64::exp(-z * z - 0.5625) * f64::exp((z - x) * (z + x) + r / big_s) / x
}

/// The error function of an f64.
pub fn erf_f64(x: f64) -> f64 {
    let r: f64;
    let s: f64;
    let z: f64;
    let y: f64;
    let mut ix: u32;
    let sign: usize;

    ix = (x.to_bits() >> 32) as u32;
    sign = (ix >> 31) as usize;
    ix &= 0x7fffffff;
    if ix >= 0x7ff00000 {
        /* erf(nan)=nan, erf(+-inf)=+-1 */
        return 1.0 - 2.0 * (sign as f64) + 1.0 / x;
    }
    if ix < 0x3feb0000 {
        /* |x| < 0.84375 */
        if ix < 0x3e300000 {
            /* |x| < 2**-28 */
            /* avoid underflow */
            return 0.125 * (8.0 * x + EFX8_D * x);
        }
        z = x * x;
        r = PP0_D + z * (PP1_D + z * (PP2_D + z * (PP3_D + z * PP4_D)));
        s = 1.0 + z * (QQ1_D + z * (QQ2_D + z * (QQ3_D + z * (QQ4_D + z * QQ5_D))));
        y = r / s;
        return x + x * y;
    }
    if ix < 0x40180000 {
        /* 0.84375 <= |x| < 6 */
        y = 1.0 - erfc2_d(ix, x);
    } else {
        let x1p_1022 = f64::from_bits(0x0010000000000000);
        y = 1.0 - x1p_1022;
    }

    if sign != 0 {
        -y
    } else {
        y
    }
}

const ERX_F: f32 = 8.4506291151e-01; /* 0x3f58560b */
/*
 * Coefficients for approximation to  erf on [0,0.84375]
 */
const EFX8_F: f32 = 1.0270333290e+00; /* 0x3f8375d4 */
const PP0_F: f32 = 1.2837916613e-01; /* 0x3e0375d4 */
const PP1_F: f32 = -3.2504209876e-01; /* 0xbea66beb */
const PP2_F: f32 = -2.8481749818e-02; /* 0xbce9528f */
const PP3_F: f32 = -5.7702702470e-03; /* 0xbbbd1489 */
const PP4_F: f32 = -2.3763017452e-05; /* 0xb7c756b1 */
const QQ1_F: f32 = 3.9791721106e-01; /* 0x3ecbbbce */
const QQ2_F: f32 = 6.5022252500e-02; /* 0x3d852a63 */
const QQ3_F: f32 = 5.0813062117e-03; /* 0x3ba68116 */
const QQ4_F: f32 = 1.3249473704e-04; /* 0x390aee49 */
const QQ5_F: f32 = -3.9602282413e-06; /* 0xb684e21a */
/*
 * Coefficients for approximation to  erf  in [0.84375,1.25]
 */
const PA0_F: f32 = -2.3621185683e-03; /* 0xbb1acdc6 */
const PA1_F: f32 = 4.1485610604e-01; /* 0x3ed46805 */
const PA2_F: f32 = -3.7220788002e-01; /* 0xbebe9208 */
const PA3_F: f32 = 3.1834661961e-01; /* 0x3ea2fe54 */
const PA4_F: f32 = -1.1089469492e-01; /* 0xbde31cc2 */
const PA5_F: f32 = 3.5478305072e-02; /* 0x3d1151b3 */
const PA6_F: f32 = -2.1663755178e-03; /* 0xbb0df9c0 */
const QA1_F: f32 = 1.0642088205e-01; /* 0x3dd9f331 */
const QA2_F: f32 = 5.4039794207e-01; /* 0x3f0a5785 */
const QA3_F: f32 = 7.1828655899e-02; /* 0x3d931ae7 */
const QA4_F: f32 = 1.2617121637e-01; /* 0x3e013307 */
const QA5_F: f32 = 1.3637083583e-02; /* 0x3c5f6e13 */
const QA6_F: f32 = 1.1984500103e-02; /* 0x3c445aa3 */
/*
 * Coefficients for approximation to  erfc in [1.25,1/0.35]
 */
const RA0_F: f32 = -9.8649440333e-03; /* 0xbc21a093 */
const RA1_F: f32 = -6.9385856390e-01; /* 0xbf31a0b7 */
const RA2_F: f32 = -1.0558626175e+01; /* 0xc128f022 */
const RA3_F: f32 = -6.2375331879e+01; /* 0xc2798057 */
const RA4_F: f32 = -1.6239666748e+02; /* 0xc322658c */
const RA5_F: f32 = -1.8460508728e+02; /* 0xc3389ae7 */
const RA6_F: f32 = -8.1287437439e+01; /* 0xc2a2932b */
const RA7_F: f32 = -9.8143291473e+00; /* 0xc11d077e */
const SA1_F: f32 = 1.9651271820e+01; /* 0x419d35ce */
const SA2_F: f32 = 1.3765776062e+02; /* 0x4309a863 */
const SA3_F: f32 = 4.3456588745e+02; /* 0x43d9486f */
const SA4_F: f32 = 6.4538726807e+02; /* 0x442158c9 */
const SA5_F: f32 = 4.2900814819e+02; /* 0x43d6810b */
const SA6_F: f32 = 1.0863500214e+02; /* 0x42d9451f */
const SA7_F: f32 = 6.5702495575e+00; /* 0x40d23f7c */
const SA8_F: f32 = -6.0424413532e-02; /* 0xbd777f97 */
/*
 * Coefficients for approximation to  erfc in [1/.35,28]
 */
const RB0_F: f32 = -9.8649431020e-03; /* 0xbc21a092 */
const RB1_F: f32 = -7.9928326607e-01; /* 0xbf4c9dd4 */
const RB2_F: f32 = -1.7757955551e+01; /* 0xc18e104b */
const RB3_F: f32 = -1.6063638306e+02; /* 0xc320a2ea */
const RB4_F: f32 = -6.3756646729e+02; /* 0xc41f6441 */
const RB5_F: f32 = -1.0250950928e+03; /* 0xc480230b */
const RB6_F: f32 = -4.8351919556e+02; /* 0xc3f1c275 */
const SB1_F: f32 = 3.0338060379e+01; /* 0x41f2b459 */
const SB2_F: f32 = 3.2579251099e+02; /* 0x43a2e571 */
const SB3_F: f32 = 1.5367296143e+03; /* 0x44c01759 */
const SB4_F: f32 = 3.1998581543e+03; /* 0x4547fdbb */
const SB5_F: f32 = 2.5530502930e+03; /* 0x451f90ce */
const SB6_F: f32 = 4.7452853394e+02; /* 0x43ed43a7 */
const SB7_F: f32 = -2.2440952301e+01; /* 0xc1b38712 */

fn erfc1_f(x: f32) -> f32 {
    let s: f32;
    let p: f32;
    let q: f32;

    s = f32::abs(x) - 1.0;
    p = PA0_F + s * (PA1_F + s * (PA2_F + s * (PA3_F + s * (PA4_F + s * (PA5_F + s * PA6_F)))));
    q = 1.0 + s * (QA1_F + s * (QA2_F + s * (QA3_F + s * (QA4_F + s * (QA5_F + s * QA6_F)))));
    return 1.0 - ERX_F - p / q;
}

fn erfc2_f(mut ix: u32, mut x: f32) -> f32 {
    let s: f32;
    let r: f32;
    let big_s: f32;
    let z: f32;

    if ix < 0x3fa00000 {
        /* |x| < 1.25 */
        return erfc1_f(x);
    }

    x = f32::abs(x);
    s = 1.0 / (x * x);
    if ix < 0x4036db6d {
        /* |x| < 1/0.35 */
        r = RA0_F
            + s * (RA1_F
                + s * (RA2_F + s * (RA3_F + s * (RA4_F + s * (RA5_F + s * (RA6_F + s * RA7_F))))));
        big_s = 1.0
            + s * (SA1_F
                + s * (SA2_F
                    + s * (SA3_F
                        + s * (SA4_F + s * (SA5_F + s * (SA6_F + s * (SA7_F + s * SA8_F)))))));
    } else {
        /* |x| >= 1/0.35 */
        r = RB0_F + s * (RB1_F + s * (RB2_F + s * (RB3_F + s * (RB4_F + s * (RB5_F + s * RB6_F)))));
        big_s = 1.0
            + s * (SB1_F
                + s * (SB2_F + s * (SB3_F + s * (SB4_F + s * (SB5_F + s * (SB6_F + s * SB7_F))))));
    }
    ix = x.to_bits();
    z = f32::from_bits(ix & 0xffffe000);

    f32::exp(-z * z - 0.5625) * f32::exp((z - x) * (z + x) + r / big_s) / x
}

/// The error function of an f32.
pub fn erf_f32(x: f32) -> f32 {
    let r: f32;
    let s: f32;
    let z: f32;
    let y: f32;
    let mut ix: u32;
    let sign: usize;

    ix = x.to_bits();
    sign = (ix >> 31) as usize;
    ix &= 0x7fffffff;
    if ix >= 0x7f800000 {
        /* erf(nan)=nan, erf(+-inf)=+-1 */
        return 1.0 - 2.0 * (sign as f32) + 1.0 / x;
    }
    if ix < 0x3f580000 {
        /* |x| < 0.84375 */
        if ix < 0x31800000 {
            /* |x| < 2**-28 */
            /*avoid underflow */
            return 0.125 * (8.0 * x + EFX8_F * x);
        }
        z = x * x;
        r = PP0_F + z * (PP1_F + z * (PP2_F + z * (PP3_F + z * PP4_F)));
        s = 1.0 + z * (QQ1_F + z * (QQ2_F + z * (QQ3_F + z * (QQ4_F + z * QQ5_F))));
        y = r / s;
        return x + x * y;
    }
    if ix < 0x40c00000 {
        /* |x| < 6 */
        y = 1.0 - erfc2_f(ix, x);
    } else {
        let x1p_120 = f32::from_bits(0x03800000);
        y = 1.0 - x1p_120;
    }

    if sign != 0 {
        -y
    } else {
        y
    }
}
