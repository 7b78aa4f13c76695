#!/usr/bin/env python3
"""Fits the polynomials of crates/hb-float/src/kernels/fastmath.rs (erf, tanh).

Least squares on Chebyshev nodes (near-minimax), evaluated in f32 Horner form
exactly as the Rust code does, and prints the coefficients plus the measured
maximum error in ulp against the f64 reference. Pinned: numpy, scipy.
Run: python3 xtask/fit_fastmath.py
"""
import numpy as np
from scipy.special import erf, erfc

f32 = np.float32


def cheb(a, b, n):
    k = np.arange(n)
    return (a + b) / 2 + (b - a) / 2 * np.cos(np.pi * (k + 0.5) / n)


def horner(c, v):
    r = f32(c[0])
    for k in c[1:]:
        r = r * v + f32(k)
    return r


def ulps(got, ref):
    spacing = np.spacing(np.abs(ref).astype(f32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - ref) / spacing


def fit_erf():
    split, upper = 0.921875, 3.925
    x = cheb(1e-4, split, 4000)
    small = np.polyfit(x * x, (erf(x) - x) / x, 5).astype(f32)
    t = cheb(split, upper, 4000)
    large = np.polyfit(t, np.log(erfc(t)), 9).astype(f32)

    def model(v):
        a = np.abs(v)
        s = horner(small, (v * v).astype(f32))
        rs = v + v * s
        rl = f32(1) - np.exp(horner(large, np.minimum(a, f32(upper))).astype(np.float64)).astype(f32)
        rl = np.copysign(np.where(a >= upper, f32(1), rl), v)
        return np.where(a <= split, rs, rl).astype(f32)

    return small, large, model


def fit_tanh():
    split = 0.625
    x = cheb(1e-4, split, 4000)
    s = x * x
    small = np.polyfit(s, (np.tanh(x) - x) / (x * s), 5).astype(f32)

    def model(v):
        a = np.abs(v)
        sv = (v * v).astype(f32)
        rs = v + v * sv * horner(small, sv)
        e = np.exp((f32(2) * a).astype(np.float64)).astype(f32)
        rl = np.copysign(f32(1) - f32(2) / (e + f32(1)), v)
        return np.where(a <= split, rs, rl).astype(f32)

    return small, model


def main():
    xs = np.concatenate([np.linspace(-12, 12, 2_000_001).astype(f32),
                         np.logspace(-30, 0, 100_000).astype(f32)])
    small, large, erf_model = fit_erf()
    print("ERF_SMALL", ", ".join(str(c) for c in small))
    print("ERF_LARGE", ", ".join(str(c) for c in large))
    print("erf max ulp", ulps(erf_model(xs), erf(xs.astype(np.float64))).max())
    tsmall, tanh_model = fit_tanh()
    print("TANH_SMALL", ", ".join(str(c) for c in tsmall))
    print("tanh max ulp", ulps(tanh_model(xs), np.tanh(xs.astype(np.float64))).max())


if __name__ == "__main__":
    main()
