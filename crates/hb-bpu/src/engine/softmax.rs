//! Integer Softmax for the engine: the reference formula
//! ([`crate::reference::softmax`], docs/integer-semantics.md §11) bit for
//! bit, without per-row allocation or i128 division.
//!
//! Per row: the maximum over live values, the exp table, an i64 sum `s`
//! (≤ 2^20 values of ≤ 2^30), then for every element the reference's
//! `y = ⌊(2·e·m + s·2^sh) / (s·2^(sh+1))⌋`. With `s = 2a + b` and
//! `1 ≤ sh ≤ 63` this is `⌊T / s⌋` for `T = a + ((e·m + b·2^(sh−1)) >> sh)`
//! (nested floors of positive integers; `e·m < 2^61`, so `T` fits u64). The
//! quotient is estimated in f64 — within one of the truth — and corrected
//! exactly, branch-free so the loop vectorises (AVX-512 copy chosen at run
//! time). Other shifts take an i128 route with the same estimate-and-correct
//! step.

use super::elem::{has_avx2, has_avx512, simd_copies};
use crate::lut::Lut;
use crate::lut::LutKind;
use crate::qint::QInt;
use crate::reference::softmax::SoftmaxPlan;
use crate::tensor::split_at_axis;

/// Row constants of the u64 quotient.
struct Quotient {
    m: u64,
    sh: u32,
    a: u64,
    rnd: u64,
    s: u64,
    inv_s: f64,
    cap: u64,
}

/// Softmax along `axis` of `x` (shape `shape`) into `out`; with
/// `mask_qmin`, inputs equal to `I::MIN` get weight 0 and a fully masked
/// row gives 0. The scratch vectors (i64 and i32) are working space.
pub(super) fn softmax_into<I: QInt, O: QInt>(
    x: &[I],
    shape: &[usize],
    axis: usize,
    plan: &SoftmaxPlan,
    mask_qmin: bool,
    out: &mut [O],
    (scratch, scratch32): (&mut Vec<i64>, &mut Vec<i32>),
) -> Result<(), String> {
    let (outer, n, inner) = split_at_axis(shape, axis).map_err(|e| e.to_string())?;
    if n > 1 << 20 {
        return Err(format!("softmax over {n} > 2^20 values"));
    }
    if x.len() != outer * n * inner || out.len() != x.len() {
        return Err(format!("softmax buffers do not match shape {shape:?}"));
    }
    let table = plan.exp_table();
    let (lo, hi) = table.domain();
    let rows = Rows {
        outer,
        n,
        inner,
        table,
        lo,
        hi,
        direct: match table.kind() {
            LutKind::Direct(t) => Some(t.as_slice()),
            LutKind::Segmented(_) => None,
        },
        m: i64::from(plan.out_requant().multiplier()),
        sh: plan.out_requant().shift(),
        // One past O's maximum already saturates.
        cap: O::MAX.saturating_add(1),
        mask: mask_qmin,
    };
    scratch.clear();
    scratch.resize(2 * n.div_ceil(8) * 8, 0);
    #[cfg(target_arch = "x86_64")]
    if inner == 1 && n > 0 && (1..=63).contains(&rows.sh) && has_avx512() {
        if let Some(t) = rows.direct.filter(|t| t.len() as i64 == hi - lo + 1) {
            // Whole blocks of sixteen rows in i32 lanes where the types and
            // table allow, then of eight in i64 lanes; the rest padded by row.
            let narrow = plan.exp_table_i32().filter(|_| fits_i32_lanes::<I, O>());
            let (by16, by8) = match (n <= VERTICAL_MAX_N, narrow) {
                (false, _) => (0, 0),
                (true, Some(_)) => (outer / 16 * 16, outer % 16 / 8 * 8),
                (true, None) => (0, outer / 8 * 8),
            };
            let (x16, x_rest) = x.split_at(by16 * n);
            let (o16, o_rest) = out.split_at_mut(by16 * n);
            let (x8, xr) = x_rest.split_at(by8 * n);
            let (o8, or) = o_rest.split_at_mut(by8 * n);
            if let Some(t32) = narrow.filter(|_| by16 > 0) {
                // Every value the kernel reads it writes first: grown, not
                // cleared, per call.
                let need = 48 * n.div_ceil(16) * 16;
                if scratch32.len() < need {
                    scratch32.resize(need, 0);
                }
                // SAFETY: as below; `scratch32` holds 48·⌈n/16⌉·16 values;
                // `t32` holds the values of `t`; I and O are at most 16 bits.
                unsafe { vertical16_rows_avx512(x16, &rows, t32, o16, scratch32) };
            }
            if by8 > 0 {
                scratch.resize(24 * n.div_ceil(8) * 8, 0);
                // SAFETY: as below; `scratch` holds 24·⌈n/8⌉·8 values.
                unsafe { vertical_rows_avx512(x8, &rows, t, o8, scratch) };
            }
            let rest = Rows {
                outer: outer - by16 - by8,
                ..rows
            };
            // SAFETY: AVX-512 F/BW/DQ/VL were detected at run time; the
            // table is whole and the shift in 1..=63 (checked above).
            unsafe { padded_rows_avx512(xr, &rest, t, or, scratch) };
            return Ok(());
        }
    }
    softmax_rows(x, &rows, out, &mut scratch[..n]);
    Ok(())
}

/// The shape, exp table and output requantisation of one Softmax.
pub(super) struct Rows<'t> {
    outer: usize,
    n: usize,
    inner: usize,
    table: &'t Lut,
    /// The table's domain.
    lo: i64,
    hi: i64,
    /// The table's values when it is direct.
    direct: Option<&'t [i64]>,
    m: i64,
    sh: u32,
    cap: i64,
    /// Inputs equal to the type minimum are masked (weight 0).
    mask: bool,
}

simd_copies! {
    /// Every row of the Softmax: one copy of the whole loop per instruction
    /// set, so the maximum, exp, quotient and store loops all vectorise.
    fn softmax_rows<I, O>(x: &[I], k: &Rows<'_>, out: &mut [O], scratch: &mut [i64]) => softmax_rows_body
}

#[inline(always)]
fn softmax_rows_body<I: QInt, O: QInt>(x: &[I], k: &Rows<'_>, out: &mut [O], scratch: &mut [i64]) {
    let (n, inner) = (k.n, k.inner);
    let exp = |d: i64| match k.direct {
        Some(t) => t[(d.clamp(k.lo, k.hi) - k.lo) as usize],
        None => k.table.lookup(d),
    };
    let key = |q: &I| {
        let v = q.to_i64();
        if k.mask && v == I::MIN {
            i64::MIN
        } else {
            v
        }
    };
    for o in 0..k.outer {
        for i in 0..inner {
            let base = o * n * inner + i;
            let mut s: i64 = 0;
            if inner == 1 {
                // Contiguous row: a plain maximum (vectorised). Masked values
                // are the type minimum, so they only win in a fully masked
                // row.
                let row = &x[base..base + n];
                let max = row.iter().fold(i64::MIN, |a, q| a.max(q.to_i64()));
                if !(k.mask && max == I::MIN) {
                    match k.direct {
                        // A whole direct table: gathers (vectorised).
                        Some(t) if t.len() as i64 == k.hi - k.lo + 1 => {
                            let e = ExpRow {
                                table: t,
                                lo: k.lo,
                                hi: k.hi,
                                max,
                                mask: k.mask,
                            };
                            s = exp_row_body(row, scratch, &e);
                        }
                        _ => {
                            for (e, q) in scratch.iter_mut().zip(row) {
                                let v = key(q);
                                *e = if v == i64::MIN { 0 } else { exp(v - max) };
                                s += *e;
                            }
                        }
                    }
                }
            } else {
                let at = |j: usize| x[base + j * inner].to_i64();
                let live = |q: i64| !(k.mask && q == I::MIN);
                if let Some(max) = (0..n).map(at).filter(|&q| live(q)).max() {
                    for (j, e) in scratch.iter_mut().enumerate() {
                        let q = at(j);
                        *e = if live(q) { exp(q - max) } else { 0 };
                        s += *e;
                    }
                }
            }
            if s == 0 {
                for j in 0..n {
                    out[base + j * inner] = O::sat_i64(0);
                }
                continue;
            }
            if (1..=63).contains(&k.sh) {
                let su = s as u64;
                let q = Quotient {
                    m: k.m as u64,
                    sh: k.sh,
                    a: su >> 1,
                    rnd: (su & 1) << (k.sh - 1),
                    s: su,
                    inv_s: 1.0 / su as f64,
                    cap: k.cap as u64,
                };
                quotients_body(scratch, &q);
            } else {
                quotients_wide(scratch, i128::from(k.m), k.sh, s, k.cap);
            }
            if inner == 1 {
                for (d, &y) in out[base..base + n].iter_mut().zip(scratch.iter()) {
                    *d = O::sat_i64(y);
                }
            } else {
                for (j, &y) in scratch.iter().enumerate() {
                    out[base + j * inner] = O::sat_i64(y);
                }
            }
        }
    }
}

/// The longest rows [`vertical_rows_avx512`] takes (its two buffers of
/// 8·n values stay in L1/L2).
#[cfg(target_arch = "x86_64")]
const VERTICAL_MAX_N: usize = 512;

/// Contiguous rows in blocks of eight, one row per 64-bit lane, under the
/// conditions of [`padded_rows_avx512`]: column `j` of a block is one vector
/// of the eight rows' `j`-th values, so the maximum, exp, sum and quotient
/// steps are plain vertical operations — no horizontal reductions, no
/// per-row division, no padding — whose latency chains of eight rows run
/// side by side. The same integers as [`softmax_rows_body`]: a lane whose
/// sum is 0 (a fully masked row) divides by 1 instead and yields 0, as the
/// row-wise code's explicit zero does.
///
/// # Safety
/// As [`padded_rows_avx512`], and `x.len() == out.len()` is a multiple of
/// `8·n`; `buf` holds `24·⌈n/8⌉·8`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn vertical_rows_avx512<I: QInt, O: QInt>(
    x: &[I],
    k: &Rows<'_>,
    table: &[i64],
    out: &mut [O],
    buf: &mut [i64],
) {
    use std::arch::x86_64::*;
    let n = k.n;
    let np = n.div_ceil(8) * 8;
    let (rows, rest) = buf[..24 * np].split_at_mut(8 * np);
    let (v, e) = rest.split_at_mut(8 * np);
    let (rp, vp, ep) = (rows.as_mut_ptr(), v.as_mut_ptr(), e.as_mut_ptr());
    let VecConsts {
        lo,
        hi,
        type_min,
        m,
        shift,
        cap,
        cap_f,
    } = VecConsts::new::<I>(k);
    for (xb, ob) in x.chunks_exact(8 * n).zip(out.chunks_exact_mut(8 * n)) {
        // Rows widened in place (contiguous: vectorised), then turned into
        // columns eight by eight.
        for (row, wide) in xb.chunks_exact(n).zip(rows.chunks_exact_mut(np)) {
            for (d, q) in wide.iter_mut().zip(row) {
                *d = q.to_i64();
            }
        }
        // SAFETY (whole block): every access is to `rows`, `v` or `e`, each
        // `8·np` long: tiles at `8·c` with row stride `np`, columns at
        // `8·j` for `j < np`; the gather indices lie in `0..=hi − lo`
        // (clamped), inside the table.
        unsafe {
            for c in 0..np / 8 {
                transpose8x8(rp.add(8 * c), np, vp.add(64 * c), 8);
            }
            let mut mx = _mm512_set1_epi64(i64::MIN);
            for j in 0..n {
                mx = _mm512_max_epi64(mx, _mm512_loadu_si512(vp.add(8 * j) as *const _));
            }
            let mut sum = _mm512_setzero_si512();
            for j in 0..n {
                let q = _mm512_loadu_si512(vp.add(8 * j) as *const _);
                let d = _mm512_sub_epi64(q, mx);
                let idx = _mm512_sub_epi64(_mm512_min_epi64(_mm512_max_epi64(d, lo), hi), lo);
                let mut w = _mm512_i64gather_epi64::<8>(idx, table.as_ptr());
                if k.mask {
                    w = _mm512_maskz_mov_epi64(_mm512_cmpneq_epi64_mask(q, type_min), w);
                }
                sum = _mm512_add_epi64(sum, w);
                _mm512_storeu_si512(ep.add(8 * j) as *mut _, w);
            }
            // The quotient of `quotients_body`, one row per lane.
            let rows = QuotientLanes::new(sum, k.m, k.sh);
            for j in 0..n {
                let ev = _mm512_loadu_si512(ep.add(8 * j) as *const _);
                let y = quotient8_estimated(ev, &rows, m, shift, cap, cap_f);
                _mm512_storeu_si512(ep.add(8 * j) as *mut _, y);
            }
            for c in 0..np / 8 {
                transpose8x8(ep.add(64 * c), 8, rp.add(8 * c), np);
            }
        }
        for (row, wide) in ob.chunks_exact_mut(n).zip(rows.chunks_exact(np)) {
            for (d, &y) in row.iter_mut().zip(wide) {
                *d = O::sat_i64(y);
            }
        }
    }
}

/// Whether [`vertical16_rows_avx512`] takes input type `I` and output type
/// `O`: both at most 16 bits, so inputs, differences and capped quotients
/// fit i32 lanes.
fn fits_i32_lanes<I: QInt, O: QInt>() -> bool {
    I::MAX <= i64::from(i16::MAX) && O::MAX <= i64::from(i16::MAX)
}

/// [`vertical_rows_avx512`] with sixteen rows per block in 32-bit lanes:
/// inputs, exp values (≤ 2^30) and quotients (≤ `cap` ≤ 2^15) are i32, so
/// every step but the quotient's f64 estimate (two halves of eight) runs
/// sixteen wide. The row sums stay exact in i64, one half of the lanes each.
///
/// # Safety
/// As [`vertical_rows_avx512`] with `16·n` for `8·n`; `table` holds the
/// values of the direct exp table as i32; [`fits_i32_lanes`] holds; `buf`
/// holds `48·⌈n/16⌉·16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn vertical16_rows_avx512<I: QInt, O: QInt>(
    x: &[I],
    k: &Rows<'_>,
    table: &[i32],
    out: &mut [O],
    buf: &mut [i32],
) {
    use std::arch::x86_64::*;
    let n = k.n;
    let np = n.div_ceil(16) * 16;
    let (rows, rest) = buf[..48 * np].split_at_mut(16 * np);
    let (v, e) = rest.split_at_mut(16 * np);
    let (rp, vp, ep) = (rows.as_mut_ptr(), v.as_mut_ptr(), e.as_mut_ptr());
    let VecConsts {
        m,
        shift,
        cap,
        cap_f,
        ..
    } = VecConsts::new::<I>(k);
    // The table's domain and the type minimum fit i32 (I is ≤ 16 bits).
    let lo = _mm512_set1_epi32(k.lo as i32);
    let hi = _mm512_set1_epi32(k.hi as i32);
    let type_min = _mm512_set1_epi32(I::MIN as i32);
    for (xb, ob) in x.chunks_exact(16 * n).zip(out.chunks_exact_mut(16 * n)) {
        for (row, wide) in xb.chunks_exact(n).zip(rows.chunks_exact_mut(np)) {
            // SAFETY: `wide` holds `np ≥ n` rounded up to 16 values.
            unsafe { widen_row(row, wide) };
        }
        // SAFETY (whole block): every access is to `rows`, `v` or `e`, each
        // `16·np` long: tiles at `16·c` with row stride `np`, columns at
        // `16·j` for `j < np`; the gather indices lie in `0..=hi − lo`
        // (clamped), inside the table.
        unsafe {
            for c in 0..np / 16 {
                transpose16x16(rp.add(16 * c), np, vp.add(256 * c), 16);
            }
            let mut mx = _mm512_set1_epi32(i32::MIN);
            for j in 0..n {
                mx = _mm512_max_epi32(mx, _mm512_loadu_si512(vp.add(16 * j) as *const _));
            }
            let (mut sum_lo, mut sum_hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            for j in 0..n {
                let q = _mm512_loadu_si512(vp.add(16 * j) as *const _);
                let d = _mm512_sub_epi32(q, mx);
                let idx = _mm512_sub_epi32(_mm512_min_epi32(_mm512_max_epi32(d, lo), hi), lo);
                let mut w = _mm512_i32gather_epi32::<4>(idx, table.as_ptr());
                if k.mask {
                    w = _mm512_maskz_mov_epi32(_mm512_cmpneq_epi32_mask(q, type_min), w);
                }
                sum_lo = _mm512_add_epi64(sum_lo, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(w)));
                sum_hi = _mm512_add_epi64(
                    sum_hi,
                    _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(w)),
                );
                _mm512_storeu_si512(ep.add(16 * j) as *mut _, w);
            }
            // The quotient of `quotients_body`, one row per lane: rows 0–7
            // in the low half, 8–15 in the high half.
            let rows_lo = QuotientLanes::new(sum_lo, k.m, k.sh);
            let rows_hi = QuotientLanes::new(sum_hi, k.m, k.sh);
            for j in 0..n {
                let ev = _mm512_loadu_si512(ep.add(16 * j) as *const _);
                let y_lo = quotient8_estimated_i32(
                    _mm512_castsi512_si256(ev),
                    &rows_lo,
                    m,
                    shift,
                    cap,
                    cap_f,
                );
                let y_hi = quotient8_estimated_i32(
                    _mm512_extracti64x4_epi64::<1>(ev),
                    &rows_hi,
                    m,
                    shift,
                    cap,
                    cap_f,
                );
                let y = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(y_lo), y_hi);
                _mm512_storeu_si512(ep.add(16 * j) as *mut _, y);
            }
            for c in 0..np / 16 {
                transpose16x16(ep.add(256 * c), 16, rp.add(16 * c), np);
            }
        }
        for (row, wide) in ob.chunks_exact_mut(n).zip(rows.chunks_exact(np)) {
            // SAFETY: as above.
            unsafe { narrow_row(wide, row) };
        }
    }
}

/// `wide[j] = row[j]` for an 8- or 16-bit `I`, sixteen at a time (masked
/// loads for the tail, so short rows need no scalar loop); `wide` is
/// written up to `row.len()` rounded up to 16.
///
/// # Safety
/// AVX-512 F/BW/VL available; `I` is 1 or 2 bytes; `wide.len() ≥
/// ⌈row.len()/16⌉·16`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn widen_row<I: QInt>(row: &[I], wide: &mut [i32]) {
    use std::arch::x86_64::*;
    for c in (0..row.len()).step_by(16) {
        let mask = tail_mask(row.len() - c);
        // SAFETY: the masked load reads only `row[c..]`'s live values; 16
        // values are stored at `wide[c..]`, inside it (caller).
        unsafe {
            let src = row.as_ptr().add(c);
            let v = if size_of::<I>() == 1 {
                _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, src as *const i8))
            } else {
                _mm512_cvtepi16_epi32(_mm256_maskz_loadu_epi16(mask, src as *const i16))
            };
            _mm512_storeu_si512(wide.as_mut_ptr().add(c) as *mut _, v);
        }
    }
}

/// `row[j] = sat(wide[j])` for an 8- or 16-bit `O`, sixteen at a time
/// (saturating narrowing in registers, masked stores for the tail).
///
/// # Safety
/// AVX-512 F/BW/VL available; `O` is 1 or 2 bytes; `wide.len() ≥
/// ⌈row.len()/16⌉·16`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn narrow_row<O: QInt>(wide: &[i32], row: &mut [O]) {
    use std::arch::x86_64::*;
    for c in (0..row.len()).step_by(16) {
        let mask = tail_mask(row.len() - c);
        // SAFETY: 16 values are read at `wide[c..]` (caller); the masked
        // store writes only `row[c..]`'s live values.
        unsafe {
            let v = _mm512_loadu_si512(wide.as_ptr().add(c) as *const _);
            let dst = row.as_mut_ptr().add(c);
            if size_of::<O>() == 1 {
                _mm_mask_storeu_epi8(dst as *mut i8, mask, _mm512_cvtsepi32_epi8(v));
            } else {
                _mm256_mask_storeu_epi16(dst as *mut i16, mask, _mm512_cvtsepi32_epi16(v));
            }
        }
    }
}

/// The mask of the first `min(left, 16)` lanes.
#[cfg(target_arch = "x86_64")]
#[inline]
fn tail_mask(left: usize) -> u16 {
    if left >= 16 {
        u16::MAX
    } else {
        (1u16 << left) - 1
    }
}

/// Transposes the 16×16 tile of i32 whose rows start at `src + i·src_stride`
/// into rows at `dst + i·dst_stride` (row `i` of the result holds element
/// `i` of every source row).
///
/// # Safety
/// AVX-512 F available; the sixteen source and destination rows of sixteen
/// values lie inside their buffers; the tiles do not overlap.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16x16(src: *const i32, src_stride: usize, dst: *mut i32, dst_stride: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's bounds.
    unsafe {
        let r: [__m512i; 16] =
            std::array::from_fn(|i| _mm512_loadu_si512(src.add(i * src_stride) as *const _));
        // Within each 128-bit lane L: t[2i] holds elements 4L, 4L+1 of rows
        // 2i and 2i+1 interleaved, t[2i+1] elements 4L+2, 4L+3.
        let t: [__m512i; 16] = std::array::from_fn(|i| {
            let (a, b) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_epi32(a, b)
            } else {
                _mm512_unpackhi_epi32(a, b)
            }
        });
        // u[4g + c], lane L: element 4L + c of rows 4g..4g+3.
        let u: [__m512i; 16] = std::array::from_fn(|i| {
            let (g, c) = (i / 4, i % 4);
            let (a, b) = (t[4 * g + c / 2], t[4 * g + 2 + c / 2]);
            if c % 2 == 0 {
                _mm512_unpacklo_epi64(a, b)
            } else {
                _mm512_unpackhi_epi64(a, b)
            }
        });
        // w[8h + 4p + c]: lanes 0,2 (p = 0) or 1,3 (p = 1) of u[8h + c] and
        // u[8h + 4 + c]: elements {4p + c, 8 + 4p + c} of rows 8h..8h+7.
        let w: [__m512i; 16] = std::array::from_fn(|i| {
            let (h, p, c) = (i / 8, (i / 4) % 2, i % 4);
            let (a, b) = (u[8 * h + c], u[8 * h + 4 + c]);
            if p == 0 {
                _mm512_shuffle_i32x4::<0x88>(a, b)
            } else {
                _mm512_shuffle_i32x4::<0xdd>(a, b)
            }
        });
        // Row i of the result (element i of every source row): i = 8q + j.
        for i in 0..16 {
            let (q, j) = (i / 8, i % 8);
            let (a, b) = (w[j], w[8 + j]);
            let row = if q == 0 {
                _mm512_shuffle_i32x4::<0x88>(a, b)
            } else {
                _mm512_shuffle_i32x4::<0xdd>(a, b)
            };
            _mm512_storeu_si512(dst.add(i * dst_stride) as *mut _, row);
        }
    }
}

/// Transposes the 8×8 tile of i64 whose rows start at `src + i·src_stride`
/// into rows at `dst + i·dst_stride` (row `i` of the result holds element
/// `i` of every source row).
///
/// # Safety
/// AVX-512 F available; the eight source and destination rows of eight
/// values lie inside their buffers; the tiles do not overlap.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn transpose8x8(src: *const i64, src_stride: usize, dst: *mut i64, dst_stride: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's bounds.
    unsafe {
        let r = |i: usize| _mm512_loadu_si512(src.add(i * src_stride) as *const _);
        // Pairs of rows interleaved: t[2i] holds the even elements of rows
        // 2i and 2i+1 side by side, t[2i+1] the odd ones.
        let t = [
            _mm512_unpacklo_epi64(r(0), r(1)),
            _mm512_unpackhi_epi64(r(0), r(1)),
            _mm512_unpacklo_epi64(r(2), r(3)),
            _mm512_unpackhi_epi64(r(2), r(3)),
            _mm512_unpacklo_epi64(r(4), r(5)),
            _mm512_unpackhi_epi64(r(4), r(5)),
            _mm512_unpacklo_epi64(r(6), r(7)),
            _mm512_unpackhi_epi64(r(6), r(7)),
        ];
        // 128-bit lanes 0,2 / 1,3 of two such vectors: elements {k, k+4} of
        // four rows.
        let u = [
            _mm512_shuffle_i64x2::<0x88>(t[0], t[2]),
            _mm512_shuffle_i64x2::<0x88>(t[1], t[3]),
            _mm512_shuffle_i64x2::<0xdd>(t[0], t[2]),
            _mm512_shuffle_i64x2::<0xdd>(t[1], t[3]),
            _mm512_shuffle_i64x2::<0x88>(t[4], t[6]),
            _mm512_shuffle_i64x2::<0x88>(t[5], t[7]),
            _mm512_shuffle_i64x2::<0xdd>(t[4], t[6]),
            _mm512_shuffle_i64x2::<0xdd>(t[5], t[7]),
        ];
        for k in 0..4 {
            let lo = _mm512_shuffle_i64x2::<0x88>(u[k], u[k + 4]);
            let hi = _mm512_shuffle_i64x2::<0xdd>(u[k], u[k + 4]);
            _mm512_storeu_si512(dst.add(k * dst_stride) as *mut _, lo);
            _mm512_storeu_si512(dst.add((k + 4) * dst_stride) as *mut _, hi);
        }
    }
}

/// The per-Softmax vector constants of the AVX-512 row kernels.
#[cfg(target_arch = "x86_64")]
struct VecConsts {
    /// The exp table's domain.
    lo: std::arch::x86_64::__m512i,
    hi: std::arch::x86_64::__m512i,
    /// The input type's minimum (a mask under `keep_masks`).
    type_min: std::arch::x86_64::__m512i,
    /// The output requantisation's multiplier and shift.
    m: std::arch::x86_64::__m512i,
    shift: std::arch::x86_64::__m128i,
    /// One past the output type's maximum, as an integer and, plus 2, in
    /// f64 (see [`quotient8_estimated`]).
    cap: std::arch::x86_64::__m512i,
    cap_f: std::arch::x86_64::__m512d,
}

#[cfg(target_arch = "x86_64")]
impl VecConsts {
    /// # Safety
    /// AVX-512 F available.
    #[target_feature(enable = "avx512f")]
    unsafe fn new<I: QInt>(k: &Rows<'_>) -> Self {
        use std::arch::x86_64::*;
        VecConsts {
            lo: _mm512_set1_epi64(k.lo),
            hi: _mm512_set1_epi64(k.hi),
            type_min: _mm512_set1_epi64(I::MIN),
            m: _mm512_set1_epi64(k.m),
            shift: _mm_cvtsi64_si128(i64::from(k.sh)),
            cap: _mm512_set1_epi64(k.cap),
            cap_f: _mm512_set1_pd(k.cap as f64 + 2.0),
        }
    }
}

/// The row constants of [`quotients_body`] in vector lanes (one row per
/// lane, or one row broadcast): `a = s >> 1`, `rnd = (s & 1) << (sh − 1)`,
/// the divisor `s` and its f64 reciprocal. A lane whose sum is 0 (a fully
/// masked row) divides by 1 instead; its exp values are all 0, so its
/// quotients are 0, as the row-wise code's explicit zero.
#[cfg(target_arch = "x86_64")]
struct QuotientLanes {
    a: std::arch::x86_64::__m512i,
    rnd: std::arch::x86_64::__m512i,
    s: std::arch::x86_64::__m512i,
    inv: std::arch::x86_64::__m512d,
    /// `m · 2^−sh / s`: the quotient is `0.5 + e·c − φ/s`, `φ ∈ [0, 1)`.
    c: std::arch::x86_64::__m512d,
}

#[cfg(target_arch = "x86_64")]
impl QuotientLanes {
    /// From the lanes' row sums (`0 ≤ sum < 2^63`), the multiplier `m`
    /// (`0 ≤ m < 2^31`) and the shift `1..=63`.
    ///
    /// # Safety
    /// AVX-512 F/DQ available.
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn new(sum: std::arch::x86_64::__m512i, m: i64, sh: u32) -> Self {
        use std::arch::x86_64::*;
        let one = _mm512_set1_epi64(1);
        let s = _mm512_max_epu64(sum, one);
        let inv = _mm512_div_pd(_mm512_set1_pd(1.0), _mm512_cvtepu64_pd(s));
        // m · 2^−sh is exact in f64 (m < 2^31, sh ≤ 63).
        let scaled_m = m as f64 * (-f64::from(sh)).exp2();
        QuotientLanes {
            a: _mm512_srli_epi64::<1>(sum),
            rnd: _mm512_sll_epi64(
                _mm512_and_si512(sum, one),
                _mm_cvtsi64_si128(i64::from(sh - 1)),
            ),
            s,
            inv,
            c: _mm512_mul_pd(_mm512_set1_pd(scaled_m), inv),
        }
    }
}

/// Eight quotients of [`quotients_body`]: `min(⌊T / s⌋, cap)` with `T = a +
/// ((e·m + rnd) >> sh)`, estimated in f64 (within one of the truth) and
/// corrected exactly.
///
/// # Safety
/// AVX-512 F/DQ available; `e·m + rnd < 2^64` and `T < 2^63` per lane.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn quotient8(
    e: std::arch::x86_64::__m512i,
    l: &QuotientLanes,
    m: std::arch::x86_64::__m512i,
    shift: std::arch::x86_64::__m128i,
    cap: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let one = _mm512_set1_epi64(1);
    let prod = _mm512_add_epi64(_mm512_mullo_epi64(e, m), l.rnd);
    let t = _mm512_add_epi64(l.a, _mm512_srl_epi64(prod, shift));
    let y0 = _mm512_cvttpd_epu64(_mm512_mul_pd(_mm512_cvtepu64_pd(t), l.inv));
    let p0 = _mm512_mullo_epi64(y0, l.s);
    let over = _mm512_cmpgt_epu64_mask(p0, t);
    let under = _mm512_cmple_epu64_mask(_mm512_add_epi64(p0, l.s), t);
    let y = _mm512_mask_sub_epi64(y0, over, y0, one);
    let y = _mm512_mask_add_epi64(y, under, y, one);
    _mm512_min_epu64(y, cap)
}

/// Bound on the f64 error of [`quotient8_estimated`]'s estimate: a few
/// roundings of 2^−53 relative on values below 2^30.
#[cfg(target_arch = "x86_64")]
const ESTIMATE_SLACK: f64 = 1.0 / (1u64 << 20) as f64;

/// [`quotient8`] without integer multiplies when the f64 estimate decides
/// it. The exact quotient is `Q = T/s = y − φ/s` with `y = 0.5 +
/// e·m·2^−sh/s` and `φ ∈ [0, 1)` (the floor inside `T`), and `⌊Q⌋ = ⌊y⌋`
/// always: an integer `k ≤ y` has `k·s ≤ T + φ`, so `k·s ≤ T` (both
/// integers, `φ < 1`), i.e. `k ≤ Q`. Only the rounding of the estimate `ŷ`
/// (within [`ESTIMATE_SLACK`] of `y`) can move the floor: lanes are settled
/// when `ŷ`'s fraction lies in `(slack, 1 − slack)`, or `ŷ ≥ cap + 2`
/// (then `Q ≥ cap + 1`); if any lane is not, the vector takes
/// [`quotient8`].
///
/// # Safety
/// As [`quotient8`]; `0 ≤ m < 2^31` and `y < 2^30` per lane (`e ≤ s`
/// gives it); `cap_f = cap + 2`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn quotient8_estimated(
    e: std::arch::x86_64::__m512i,
    l: &QuotientLanes,
    m: std::arch::x86_64::__m512i,
    shift: std::arch::x86_64::__m128i,
    cap: std::arch::x86_64::__m512i,
    cap_f: std::arch::x86_64::__m512d,
) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    match settled_floor(_mm512_cvtepu64_pd(e), l, cap_f) {
        Some(fl) => _mm512_min_epu64(_mm512_cvttpd_epu64(fl), cap),
        // SAFETY: the caller's guarantees.
        None => unsafe { quotient8(e, l, m, shift, cap) },
    }
}

/// [`quotient8_estimated`] for eight exp values held as i32 (`0 ≤ e <
/// 2^31`), with an i32 result.
///
/// # Safety
/// As [`quotient8_estimated`].
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn quotient8_estimated_i32(
    e: std::arch::x86_64::__m256i,
    l: &QuotientLanes,
    m: std::arch::x86_64::__m512i,
    shift: std::arch::x86_64::__m128i,
    cap: std::arch::x86_64::__m512i,
    cap_f: std::arch::x86_64::__m512d,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // `cap` ≤ 2^31 − 1 here, so the capped quotient fits i32.
    match settled_floor(_mm512_cvtepi32_pd(e), l, cap_f) {
        Some(fl) => _mm512_cvtepi64_epi32(_mm512_min_epi64(_mm512_cvttpd_epi64(fl), cap)),
        // SAFETY: the caller's guarantees.
        None => {
            _mm512_cvtepi64_epi32(unsafe { quotient8(_mm512_cvtepu32_epi64(e), l, m, shift, cap) })
        }
    }
}

/// The estimate step of [`quotient8_estimated`] on the exp values `e` in
/// f64: `⌊ŷ⌋` when every lane is settled, else `None`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
fn settled_floor(
    e: std::arch::x86_64::__m512d,
    l: &QuotientLanes,
    cap_f: std::arch::x86_64::__m512d,
) -> Option<std::arch::x86_64::__m512d> {
    use std::arch::x86_64::*;
    let y = _mm512_fmadd_pd(e, l.c, _mm512_set1_pd(0.5));
    let fl = _mm512_roundscale_pd::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(y);
    let fr = _mm512_sub_pd(y, fl);
    let inside = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(fr, _mm512_set1_pd(ESTIMATE_SLACK))
        & _mm512_cmp_pd_mask::<_CMP_LT_OQ>(fr, _mm512_set1_pd(1.0 - ESTIMATE_SLACK));
    let settled = inside | _mm512_cmp_pd_mask::<_CMP_GE_OQ>(y, cap_f);
    (settled == 0xff).then_some(fl)
}

/// A padding value of [`padded_rows_avx512`]: below every real input,
/// weight 0.
#[cfg(target_arch = "x86_64")]
const PAD: i64 = i64::MIN;

/// Contiguous rows, a whole direct exp table and a shift in 1..=63, in
/// AVX-512: each row is widened into a buffer padded to whole vectors of 8
/// (padding weighs 0), so the maximum, exp, sum and quotient steps run
/// without scalar tails, which short attention rows would otherwise spend
/// most of their time in. The same integers as [`softmax_rows_body`]: the
/// same gathers and sum, the quotient of [`quotient8_estimated`].
///
/// # Safety
/// AVX-512 F/BW/DQ/VL available; `table` has `k.hi − k.lo + 1` entries;
/// `1 ≤ k.sh ≤ 63`; `k.inner == 1`, `k.n > 0`; `buf` holds `2 · ⌈n/8⌉ · 8`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn padded_rows_avx512<I: QInt, O: QInt>(
    x: &[I],
    k: &Rows<'_>,
    table: &[i64],
    out: &mut [O],
    buf: &mut [i64],
) {
    use std::arch::x86_64::*;
    let n = k.n;
    let np = n.div_ceil(8) * 8;
    let (v, e) = buf[..2 * np].split_at_mut(np);
    let (vp, ep) = (v.as_mut_ptr(), e.as_mut_ptr());
    let VecConsts {
        lo,
        hi,
        type_min,
        m,
        shift,
        cap,
        cap_f,
    } = VecConsts::new::<I>(k);
    let pad = _mm512_set1_epi64(PAD);
    let floor = _mm512_set1_epi64(-(1 << 40));
    for (row, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)).take(k.outer) {
        for (d, q) in v.iter_mut().zip(row) {
            *d = q.to_i64();
        }
        v[n..].fill(PAD);
        // SAFETY (whole loop body): every access is to `v` or `e`, both
        // `np` long, at offsets `8 · c < np`; the gather indices lie in
        // `0..=hi − lo` (clamped), inside the table.
        unsafe {
            let mut mx = pad;
            for c in 0..np / 8 {
                mx = _mm512_max_epi64(mx, _mm512_loadu_si512(vp.add(8 * c) as *const _));
            }
            let max = _mm512_reduce_max_epi64(mx);
            if k.mask && max == I::MIN {
                // A fully masked row.
                dst.iter_mut().for_each(|d| *d = O::sat_i64(0));
                continue;
            }
            let maxv = _mm512_set1_epi64(max);
            let mut sum = _mm512_setzero_si512();
            for c in 0..np / 8 {
                let q = _mm512_loadu_si512(vp.add(8 * c) as *const _);
                // `q − max` without overflow for the padding, clamped to the
                // table's domain.
                let d = _mm512_sub_epi64(_mm512_max_epi64(q, floor), maxv);
                let idx = _mm512_sub_epi64(_mm512_min_epi64(_mm512_max_epi64(d, lo), hi), lo);
                let w = _mm512_i64gather_epi64::<8>(idx, table.as_ptr());
                let mut dead = _mm512_cmpeq_epi64_mask(q, pad);
                if k.mask {
                    dead |= _mm512_cmpeq_epi64_mask(q, type_min);
                }
                let w = _mm512_maskz_mov_epi64(!dead, w);
                sum = _mm512_add_epi64(sum, w);
                _mm512_storeu_si512(ep.add(8 * c) as *mut _, w);
            }
            let s = _mm512_reduce_add_epi64(sum);
            if s == 0 {
                dst.iter_mut().for_each(|d| *d = O::sat_i64(0));
                continue;
            }
            // The quotient of `quotients_body`, eight at a time.
            let row = QuotientLanes::new(_mm512_set1_epi64(s), k.m, k.sh);
            for c in 0..np / 8 {
                let ev = _mm512_loadu_si512(ep.add(8 * c) as *const _);
                let y = quotient8_estimated(ev, &row, m, shift, cap, cap_f);
                _mm512_storeu_si512(ep.add(8 * c) as *mut _, y);
            }
        }
        for (d, &y) in dst.iter_mut().zip(e.iter()) {
            *d = O::sat_i64(y);
        }
    }
}

/// The exp step of one contiguous row with a direct table.
struct ExpRow<'t> {
    /// `exp` of `lo..=hi` (exactly `hi − lo + 1` entries).
    table: &'t [i64],
    lo: i64,
    hi: i64,
    /// The row's maximum over live values.
    max: i64,
    /// Inputs equal to the type minimum are masked (weight 0).
    mask: bool,
}

/// Writes each element's exp value (0 when masked) into `e` and returns
/// the row sum.
#[inline(always)]
fn exp_row_body<I: QInt>(row: &[I], e: &mut [i64], k: &ExpRow<'_>) -> i64 {
    let mut s = 0i64;
    for (d, q) in e.iter_mut().zip(row) {
        let v = q.to_i64();
        let idx = ((v - k.max).clamp(k.lo, k.hi) - k.lo) as usize;
        // SAFETY: `idx ∈ 0..=hi − lo`, and the table has `hi − lo + 1`
        // entries (checked by the caller). Unchecked so the loop gathers.
        let x = unsafe { *k.table.get_unchecked(idx) };
        let x = if k.mask && v == I::MIN { 0 } else { x };
        *d = x;
        s += x;
    }
    s
}

/// Replaces each exp value of a row by its rounded, capped quotient.
#[inline(always)]
fn quotients_body(e: &mut [i64], q: &Quotient) {
    for v in e.iter_mut() {
        let t = q.a + (((*v as u64) * q.m + q.rnd) >> q.sh);
        // SAFETY: t < 2^62 + 2^49 and inv_s ≤ 1, so the estimate is finite,
        // non-negative and below 2^63 (`to_int_unchecked` vectorises where
        // the saturating `as` does not).
        let y0 = unsafe { (t as f64 * q.inv_s).to_int_unchecked::<i64>() } as u64;
        // y0 = 0 never overshoots, so the subtraction cannot wrap.
        let y = y0 - u64::from(y0 * q.s > t) + u64::from((y0 + 1) * q.s <= t);
        *v = y.min(q.cap) as i64;
    }
}

/// The same quotient for shifts outside 1..=63, in i128.
fn quotients_wide(e: &mut [i64], m: i128, sh: u32, s: i64, cap: i64) {
    let big_s = i128::from(s) << sh;
    let den = 2 * big_s;
    let ratio = m as f64 / big_s as f64;
    for v in e.iter_mut() {
        let num = 2 * i128::from(*v) * m + big_s;
        // `as` truncates toward zero: the floor of the non-negative estimate.
        let mut y = ((*v as f64 * ratio + 0.5) as i64).clamp(0, cap);
        if y > 0 && den.checked_mul(i128::from(y)).is_none_or(|p| p > num) {
            y -= 1;
        } else if y < cap && den.checked_mul(i128::from(y + 1)).is_some_and(|p| p <= num) {
            y += 1;
        }
        *v = y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::softmax::softmax;
    use crate::tensor::{QTensor, TensorRef};

    /// Runs both implementations on `x` and asserts equal outputs.
    fn check<I: QInt, O: QInt + std::fmt::Debug>(
        x: &[I],
        shape: &[usize],
        axis: usize,
        plan: &SoftmaxPlan,
        mask: bool,
        case: usize,
    ) {
        let want: QTensor<O> =
            softmax(TensorRef::new(x, shape).unwrap(), axis, plan, mask).unwrap();
        let mut got = vec![O::default(); x.len()];
        softmax_into(
            x,
            shape,
            axis,
            plan,
            mask,
            &mut got,
            (&mut Vec::new(), &mut Vec::new()),
        )
        .unwrap();
        assert_eq!(got, want.data, "case {case}");
    }

    /// The vector quotient against exact division on numerators at, just
    /// below and just above multiples of the divisor, where the f64
    /// estimate is most often one off either way.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_quotient_is_the_exact_floor() {
        use std::arch::x86_64::*;
        if !has_avx512() {
            return;
        }
        let mut next = crate::engine::xorshift(0x5851_f42d_4c95_7f2du64);
        let cap = 1u64 << 40;
        let mut lanes = [0u64; 8];
        let mut estimated = [0u64; 8];
        for _ in 0..20_000 {
            // With m = 2 and sh = 1, T = (s >> 1) + e exactly.
            let s = 1 + next() % (1 << 50);
            let mut want = [0u64; 8];
            let mut e = [0u64; 8];
            for (i, (w, ev)) in want.iter_mut().zip(e.iter_mut()).enumerate() {
                let k = next() % (((1u64 << 62) / s).min(4096) + 1);
                let t = (k * s)
                    .saturating_add(i as u64 % 3)
                    .saturating_sub(1)
                    .max(s >> 1);
                *ev = t - (s >> 1);
                *w = (t / s).min(cap);
            }
            // SAFETY: AVX-512 was detected; T < 2^62 + 2 and e·2 + 1 < 2^64.
            unsafe {
                let sum = _mm512_set1_epi64(s as i64);
                let l = QuotientLanes::new(sum, 2, 1);
                let ev = _mm512_loadu_si512(e.as_ptr() as *const _);
                let (m, sh) = (_mm512_set1_epi64(2), _mm_cvtsi64_si128(1));
                let capv = _mm512_set1_epi64(cap as i64);
                let y = quotient8(ev, &l, m, sh, capv);
                _mm512_storeu_si512(lanes.as_mut_ptr() as *mut _, y);
                // Here y = 0.5 + e/s lands on integers exactly, where the
                // f64 estimate alone would round either way.
                let y = quotient8_estimated(ev, &l, m, sh, capv, _mm512_set1_pd(cap as f64 + 2.0));
                _mm512_storeu_si512(estimated.as_mut_ptr() as *mut _, y);
            }
            assert_eq!(lanes, want, "s {s} e {e:?}");
            assert_eq!(estimated, want, "estimated: s {s} e {e:?}");
        }
    }

    /// The f64-settled quotient against the exact one on exp values at,
    /// just below and just above the points where the quotient steps
    /// (softmax-like multipliers, shifts and sums; `e ≤ s`).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn estimated_quotient_matches_the_exact_one() {
        use std::arch::x86_64::*;
        if !has_avx512() {
            return;
        }
        let mut next = crate::engine::xorshift(0x2718_2818_2845_9045u64);
        let mut got = [0u64; 8];
        let mut want = [0u64; 8];
        for case in 0..20_000u32 {
            let s = (1u64 << 30) + next() % (1 << 33);
            let m = (1u64 << 30) + next() % (1 << 30);
            let sh = 20 + (next() % 8) as u32;
            let cap = if case % 2 == 0 { 128u64 } else { 1 << 40 };
            let mut e = [0u64; 8];
            for v in e.iter_mut() {
                // Where T = a + ((e·m + rnd) >> sh) reaches k·s.
                let k = next() % 300;
                let need = (k * s).saturating_sub(s >> 1) as u128;
                let e0 = ((need << sh) / u128::from(m)) as u64;
                *v = (e0 + next() % 3).saturating_sub(1).min(s).min(1 << 31);
            }
            // SAFETY: AVX-512 was detected; e ≤ 2^31 and m < 2^31, so
            // e·m + rnd < 2^64 and T < 2^63.
            unsafe {
                let l = QuotientLanes::new(_mm512_set1_epi64(s as i64), m as i64, sh);
                let ev = _mm512_loadu_si512(e.as_ptr() as *const _);
                let (mv, shv) = (
                    _mm512_set1_epi64(m as i64),
                    _mm_cvtsi64_si128(i64::from(sh)),
                );
                let capv = _mm512_set1_epi64(cap as i64);
                let fast =
                    quotient8_estimated(ev, &l, mv, shv, capv, _mm512_set1_pd(cap as f64 + 2.0));
                _mm512_storeu_si512(got.as_mut_ptr() as *mut _, fast);
                _mm512_storeu_si512(
                    want.as_mut_ptr() as *mut _,
                    quotient8(ev, &l, mv, shv, capv),
                );
            }
            assert_eq!(got, want, "s {s} m {m} sh {sh} e {e:?}");
            if cap == 128 && e.iter().all(|&v| v < 1 << 31) {
                // The i32-lane form on the same values.
                let mut narrow = [0i32; 8];
                // SAFETY: as above; every e fits i32 and cap ≤ 2^31 − 1.
                unsafe {
                    let l = QuotientLanes::new(_mm512_set1_epi64(s as i64), m as i64, sh);
                    let e32 = _mm512_cvtepi64_epi32(_mm512_loadu_si512(e.as_ptr() as *const _));
                    let y = quotient8_estimated_i32(
                        e32,
                        &l,
                        _mm512_set1_epi64(m as i64),
                        _mm_cvtsi64_si128(i64::from(sh)),
                        _mm512_set1_epi64(cap as i64),
                        _mm512_set1_pd(cap as f64 + 2.0),
                    );
                    _mm256_storeu_si256(narrow.as_mut_ptr() as *mut _, y);
                }
                let want32: Vec<i32> = want.iter().map(|&v| v as i32).collect();
                assert_eq!(
                    narrow.to_vec(),
                    want32,
                    "i32 lanes: s {s} m {m} sh {sh} e {e:?}"
                );
            }
        }
    }

    #[test]
    fn matches_the_reference() {
        // Pseudo-random rows over both input types and several output
        // types and scales (the last output scale gives a zero shift: the
        // i128 route), masks, an inner axis and fully masked rows.
        let mut next = crate::engine::xorshift(0x2545_f491_4f6c_dd1du64);
        for case in 0..200 {
            let s_x = [0.01f32, 0.05, 0.2, 1.0, 3.0][case % 5];
            // 1/65535 saturates int16 outputs on the vector paths.
            let s_y = [
                1.0f32 / 127.0,
                1.0 / 255.0,
                1.0 / 32767.0,
                0.3,
                7e-10,
                1.0 / 65535.0,
            ][(case / 2) % 6];
            let shape = [
                [2usize, 3, 17],
                [1, 46, 46],
                [4, 7, 3],
                [1, 1, 1],
                [3, 16, 14],
            ][case % 5];
            // Some cases mask every third row of the last axis whole.
            let dead_row = |k: usize| case % 3 == 2 && (k / shape[2]).is_multiple_of(3);
            let axis = if case % 3 == 0 { 1 } else { 2 };
            let mask = case % 2 == 0;
            let n: usize = shape.iter().product();
            if case % 2 == 0 {
                let plan = SoftmaxPlan::new::<i8>(s_x, s_y).unwrap();
                let x: Vec<i8> = (0..n)
                    .map(|k| {
                        if k % 5 == 0 || dead_row(k) {
                            i8::MIN
                        } else {
                            next() as i8
                        }
                    })
                    .collect();
                check::<i8, i8>(&x, &shape, axis, &plan, mask, case);
                check::<i8, i16>(&x, &shape, axis, &plan, mask, case);
            } else {
                let plan = SoftmaxPlan::new::<i16>(s_x / 64.0, s_y).unwrap();
                let x: Vec<i16> = (0..n)
                    .map(|k| {
                        if k % 7 == 0 || dead_row(k) {
                            i16::MIN
                        } else {
                            next() as i16
                        }
                    })
                    .collect();
                check::<i16, i16>(&x, &shape, axis, &plan, mask, case);
                check::<i16, i8>(&x, &shape, axis, &plan, mask, case);
            }
        }
    }
}
