//! 2-D ConvTranspose for the engine: the reference sum
//! ([`crate::reference::conv::conv_transpose`]) reorganised, with the same
//! integers. Per image and group, a product over the input channels fills
//! columns `(output channel, tap) × input position` (contiguous rows, so it
//! vectorises), then each column value is added at its output position
//! (col2im); then the per-channel requantisation and clamp of the
//! reference. Sums are i64 with wrapping adds, as the reference's.

use super::elem::{has_avx2, has_avx512, simd_copies};
use crate::fixed_point::Requant;
use crate::program::prepared::Clamp;
use crate::qint::QInt;
use crate::reference::conv::ConvParams;

/// The operands of one ConvTranspose.
pub(super) struct Operands<'a, X, W> {
    /// Input `[N, C, H, W]`.
    pub x: &'a [X],
    pub xs: &'a [usize],
    /// Weights `[C, M/group, kh, kw]`.
    pub w: &'a [W],
    pub ws: &'a [usize],
    pub bias: Option<&'a [i64]>,
    pub requant: &'a [Requant],
    pub clamp: Clamp,
    pub p: &'a ConvParams,
}

/// Computes the ConvTranspose into `y` (shape `ys`, `[N, M, OH, OW]`);
/// false (nothing written) when the case is not 2-D or the shapes do not
/// agree, for the reference to run. `scratch` holds the sums (and the
/// columns when they need i64); `cols32` the columns when the operand
/// types bound every column sum below 2^31 (then i32 lanes, exact).
pub(super) fn conv_transpose_into<X: QInt, W: QInt, O: QInt>(
    k: &Operands<'_, X, W>,
    y: &mut [O],
    ys: &[usize],
    scratch: &mut Vec<i64>,
    cols32: &mut Vec<i32>,
) -> bool {
    let (xs, ws, p) = (k.xs, k.ws, k.p);
    if xs.len() != 4 || ws.len() != 4 || ys.len() != 4 || p.group == 0 {
        return false;
    }
    let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let (mg, kh, kw) = (ws[1], ws[2], ws[3]);
    let g = p.group;
    if ws[0] != c || c % g != 0 || p.strides.len() != 2 || p.dilations.len() != 2 {
        return false;
    }
    if p.pads.len() != 4 || p.output_padding.len() != 2 {
        return false;
    }
    let (cg, m) = (c / g, mg * g);
    let out_len = |i: usize, inp: usize, kern: usize| {
        (p.strides[i] * inp.saturating_sub(1)
            + p.output_padding[i]
            + p.dilations[i] * kern.saturating_sub(1)
            + 1)
        .checked_sub(p.pads[i] + p.pads[2 + i])
    };
    let (Some(oh), Some(ow)) = (out_len(0, h, kh), out_len(1, w, kw)) else {
        return false;
    };
    if ys != [n, m, oh, ow] || h == 0 || w == 0 || kh == 0 || kw == 0 {
        return false;
    }
    if k.x.len() != n * c * h * w || k.w.len() != c * mg * kh * kw || y.len() != n * m * oh * ow {
        return false;
    }
    if k.bias.is_some_and(|b| b.len() != m) || (k.requant.len() != 1 && k.requant.len() != m) {
        return false;
    }
    let (hw, taps) = (h * w, kh * kw);
    let ncols = mg * taps * hw;
    let nout = m * oh * ow;
    let mag = |lo: i64, hi: i64| lo.unsigned_abs().max(hi.unsigned_abs()) as u128;
    let narrow = cg as u128 * mag(X::MIN, X::MAX) * mag(W::MIN, W::MAX) < 1 << 31;
    scratch.clear();
    scratch.resize(if narrow { nout } else { ncols + nout }, 0);
    let (cols64, acc) = scratch.split_at_mut(if narrow { 0 } else { ncols });
    if narrow {
        cols32.clear();
        cols32.resize(ncols, 0);
    }
    let (sy, sx) = (p.strides[0], p.strides[1]);
    let (dy, dx) = (p.dilations[0], p.dilations[1]);
    let (pt, pl) = (p.pads[0] as isize, p.pads[1] as isize);
    for b in 0..n {
        for (mi, a) in acc.chunks_exact_mut(oh * ow).enumerate() {
            a.fill(k.bias.map_or(0, |bs| bs[mi]));
        }
        for gi in 0..g {
            let channels = (gi * cg..(gi + 1) * cg).map(|ci| {
                (
                    &k.x[(b * c + ci) * hw..(b * c + ci + 1) * hw],
                    &k.w[ci * mg * taps..(ci + 1) * mg * taps],
                )
            });
            if narrow {
                cols32.fill(0);
                for (xc, wc) in channels {
                    for (row, &wv) in cols32.chunks_exact_mut(hw).zip(wc) {
                        if wv.to_i64() != 0 {
                            add_scaled32(row, xc, wv.to_i64() as i32);
                        }
                    }
                }
            } else {
                cols64.fill(0);
                for (xc, wc) in channels {
                    for (row, &wv) in cols64.chunks_exact_mut(hw).zip(wc) {
                        if wv.to_i64() != 0 {
                            add_scaled64(row, xc, wv.to_i64());
                        }
                    }
                }
            }
            // col2im: column (mi, ky, kx) at input (iy, ix) lands on output
            // (iy·sy + ky·dy − pt, ix·sx + kx·dx − pl).
            for mi in 0..mg {
                let a = &mut acc[(gi * mg + mi) * oh * ow..(gi * mg + mi + 1) * oh * ow];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let at = ((mi * kh + ky) * kw + kx) * hw;
                        for iy in 0..h {
                            let oy = (iy * sy + ky * dy) as isize - pt;
                            if oy < 0 || oy >= oh as isize {
                                continue;
                            }
                            let arow = &mut a[oy as usize * ow..(oy as usize + 1) * ow];
                            let place = |arow: &mut [i64], ix: usize, v: i64| {
                                let ox = (ix * sx + kx * dx) as isize - pl;
                                if ox >= 0 && ox < ow as isize {
                                    let d = &mut arow[ox as usize];
                                    *d = d.wrapping_add(v);
                                }
                            };
                            let span = at + iy * w..at + (iy + 1) * w;
                            if narrow {
                                for (ix, &v) in cols32[span].iter().enumerate() {
                                    place(arow, ix, i64::from(v));
                                }
                            } else {
                                for (ix, &v) in cols64[span].iter().enumerate() {
                                    place(arow, ix, v);
                                }
                            }
                        }
                    }
                }
            }
        }
        let yb = &mut y[b * nout..(b + 1) * nout];
        for (mi, (yc, ac)) in yb
            .chunks_exact_mut(oh * ow)
            .zip(acc.chunks_exact(oh * ow))
            .enumerate()
        {
            let r = &k.requant[if k.requant.len() == 1 { 0 } else { mi }];
            for (d, &v) in yc.iter_mut().zip(ac) {
                let q = r.apply_fast::<O>(v);
                *d = match k.clamp {
                    Some((lo, hi)) => O::sat_i64(q.to_i64().clamp(lo, hi.max(lo))),
                    None => q,
                };
            }
        }
    }
    true
}

simd_copies! {
    /// `row += x · w` with wrapping i64 arithmetic (the reference's sums).
    fn add_scaled64<X>(row: &mut [i64], x: &[X], w: i64) => add_scaled64_body
}

#[inline(always)]
fn add_scaled64_body<X: QInt>(row: &mut [i64], x: &[X], w: i64) {
    for (d, &v) in row.iter_mut().zip(x) {
        *d = d.wrapping_add(v.to_i64().wrapping_mul(w));
    }
}

simd_copies! {
    /// `row += x · w` in i32 lanes, for column sums the operand types bound
    /// below 2^31 (so equal to the i64 sums).
    fn add_scaled32<X>(row: &mut [i32], x: &[X], w: i32) => add_scaled32_body
}

#[inline(always)]
fn add_scaled32_body<X: QInt>(row: &mut [i32], x: &[X], w: i32) {
    for (d, &v) in row.iter_mut().zip(x) {
        *d = d.wrapping_add((v.to_i64() as i32).wrapping_mul(w));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::conv::conv_transpose;
    use crate::tensor::{QTensor, TensorRef};

    /// `k` with another input of the same values and shape.
    fn with_input<'a, X, X2, W>(k: &Operands<'a, X, W>, x: &'a [X2]) -> Operands<'a, X2, W> {
        Operands {
            x,
            xs: k.xs,
            w: k.w,
            ws: k.ws,
            bias: k.bias,
            requant: k.requant,
            clamp: k.clamp,
            p: k.p,
        }
    }

    #[test]
    fn matches_the_reference() {
        let mut next = crate::engine::xorshift(0x1234_5678_9abc_def1u64);
        let mut checked = 0;
        for case in 0..48 {
            let g = [1usize, 2][case % 2];
            let (c, mg) = (g * (1 + case % 3), 1 + case % 4);
            let (h, w) = (1 + case % 5, 2 + case % 4);
            let (kh, kw) = (1 + case % 4, 1 + (case / 4) % 3);
            let mut p = ConvParams::new(2);
            p.group = g;
            p.strides = vec![1 + case % 3, 1 + (case / 3) % 2];
            p.dilations = vec![1 + (case / 6) % 2, 1];
            p.pads = vec![case % 2, (case / 2) % 2, (case / 5) % 2, 0];
            p.output_padding = vec![(case / 7) % 2 * (p.strides[0] - 1).min(1), 0];
            let xs = [1 + case % 2, c, h, w];
            let ws = [c, mg, kh, kw];
            let x: Vec<i16> = (0..xs.iter().product())
                .map(|_| (next() as i8 >> 3).into())
                .collect();
            let wt: Vec<i8> = (0..ws.iter().product())
                .map(|_| next() as i8 >> 3)
                .collect();
            let m = mg * g;
            let bias: Vec<i64> = (0..m as i64).map(|v| v * 37 - 5).collect();
            let rq: Vec<Requant> = (0..m)
                .map(|j| Requant::from_ratio(0.3 / (1.0 + j as f64)).unwrap())
                .collect();
            let Ok(want) = conv_transpose::<i16, i8, i8>(
                TensorRef::new(&x, &xs).unwrap(),
                TensorRef::new(&wt, &ws).unwrap(),
                Some(&bias),
                &rq,
                &p,
            ) else {
                continue;
            };
            let want: QTensor<i8> = want;
            let clamp = (case % 3 == 0).then_some((-20, 90));
            let want_c: Vec<i8> = want
                .data
                .iter()
                .map(|&v| match clamp {
                    Some((lo, hi)) => i64::from(v).clamp(lo, hi) as i8,
                    None => v,
                })
                .collect();
            let mut y = vec![0i8; want.data.len()];
            let k = Operands {
                x: &x,
                xs: &xs,
                w: &wt,
                ws: &ws,
                bias: Some(&bias),
                requant: &rq,
                clamp,
                p: &p,
            };
            assert!(
                conv_transpose_into(&k, &mut y, &want.shape, &mut Vec::new(), &mut Vec::new()),
                "case {case}"
            );
            assert_eq!(y, want_c, "case {case}");
            // The same values as i32 inputs: the operand types no longer
            // bound the column sums, so the i64 columns run.
            let x32: Vec<i32> = x.iter().map(|&v| i32::from(v)).collect();
            let k32 = with_input(&k, &x32);
            let mut y32 = vec![0i8; want.data.len()];
            assert!(conv_transpose_into(
                &k32,
                &mut y32,
                &want.shape,
                &mut Vec::new(),
                &mut Vec::new()
            ));
            assert_eq!(y32, want_c, "case {case} (i64 columns)");
            checked += 1;
        }
        assert!(checked >= 40, "only {checked} cases ran");
    }
}
