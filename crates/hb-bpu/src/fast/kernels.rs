//! Micro-kernels: one `MR × NR` tile of i32 sums over a range of K-groups,
//! from packed activation rows (`a[r]` points at row `r`'s first K element)
//! and one packed weight panel (`w` at the panel's first element).
//!
//! All sums wrap modulo 2^32; the packing guarantees the true sum of every
//! block fits in i32, so the wrapped result is exact.

use super::pack::NR;

/// Rows of the largest tile.
pub(crate) const MR_MAX: usize = 8;

/// An i32 tile, row `r` at `[r * NR..]`.
pub(crate) type Tile32 = [i32; MR_MAX * NR];
/// An i64 tile (multi-block or split accumulation).
pub(crate) type Tile64 = [i64; MR_MAX * NR];

/// Scalar `I16x2` kernel: rows `0..mr`, groups `q0..q1`, result overwrites
/// `tile`.
///
/// # Safety
/// `a[r]` must be readable for `2 · q1` i16 for `r < mr`; `w` readable for
/// `q1 · NR · 2` i16.
pub(crate) unsafe fn scalar_i16x2(
    a: &[*const i16; MR_MAX],
    mr: usize,
    w: *const i16,
    q0: usize,
    q1: usize,
    tile: &mut Tile32,
) {
    let nq = q1 - q0;
    // SAFETY: the caller guarantees the ranges read below.
    let wsl = unsafe { std::slice::from_raw_parts(w.add(q0 * NR * 2), nq * NR * 2) };
    for r in 0..mr {
        // SAFETY: as above.
        let ar = unsafe { std::slice::from_raw_parts(a[r].add(q0 * 2), nq * 2) };
        let mut acc = [0i32; NR];
        for (ap, wq) in ar.chunks_exact(2).zip(wsl.chunks_exact(NR * 2)) {
            let (a0, a1) = (i32::from(ap[0]), i32::from(ap[1]));
            for (c, wc) in acc.iter_mut().zip(wq.chunks_exact(2)) {
                let p = a0
                    .wrapping_mul(i32::from(wc[0]))
                    .wrapping_add(a1.wrapping_mul(i32::from(wc[1])));
                *c = c.wrapping_add(p);
            }
        }
        tile[r * NR..(r + 1) * NR].copy_from_slice(&acc);
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::{Tile32, MR_MAX, NR};
    use std::arch::x86_64::*;

    /// Rows per AVX2 tile.
    pub(crate) const MR_AVX2: usize = 4;

    /// AVX2 `I16x2` kernel (`vpmaddwd` + `vpaddd`), 4 rows, the panel in two
    /// 16-column halves.
    ///
    /// # Safety
    /// AVX2 available; `a[r]` (`r < 4`) readable for `2 · q1` i16, `w` for
    /// `q1 · NR · 2` i16.
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn avx2_i16x2(
        a: &[*const i16; MR_MAX],
        w: *const i16,
        q0: usize,
        q1: usize,
        tile: &mut Tile32,
    ) {
        for half in 0..2 {
            let mut acc = [[_mm256_setzero_si256(); 2]; MR_AVX2];
            // SAFETY (whole loop): reads stay inside the ranges the caller
            // guarantees; unaligned loads.
            unsafe {
                let mut wp = w.add(q0 * NR * 2 + half * 32);
                let mut ap: [*const i16; MR_AVX2] = [
                    a[0].add(q0 * 2),
                    a[1].add(q0 * 2),
                    a[2].add(q0 * 2),
                    a[3].add(q0 * 2),
                ];
                for _ in q0..q1 {
                    let w0 = _mm256_loadu_si256(wp as *const __m256i);
                    let w1 = _mm256_loadu_si256(wp.add(16) as *const __m256i);
                    for r in 0..MR_AVX2 {
                        let av = _mm256_set1_epi32((ap[r] as *const i32).read_unaligned());
                        acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(av, w0));
                        acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(av, w1));
                        ap[r] = ap[r].add(2);
                    }
                    wp = wp.add(NR * 2);
                }
                for r in 0..MR_AVX2 {
                    let dst = tile.as_mut_ptr().add(r * NR + half * 16);
                    _mm256_storeu_si256(dst as *mut __m256i, acc[r][0]);
                    _mm256_storeu_si256(dst.add(8) as *mut __m256i, acc[r][1]);
                }
            }
        }
    }

    /// AVX-512 VNNI `I8x4` kernel (`vpdpbusd`: u8 activations `x + 128` ×
    /// i8 weights), 8 rows × 32 columns. K-group `q` of row `r` is read at
    /// `a[r] + 4q`, or at `a[r] + koff[q]` when `TABLE` (the implicit-GEMM
    /// conv: each tap's channels in place in the padded input). With
    /// `HALF` only the first 16 columns are computed (the rest of the tile
    /// is left as zeros), for panels with ≤ 16 live columns.
    ///
    /// # Safety
    /// AVX-512 F/VNNI available; `a[r]` readable for 4 bytes at every
    /// group offset of `q0..q1`; `koff` (when `TABLE`) for `q1` entries; `w`
    /// for `q1 · NR · 4` bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) unsafe fn vnni_i8x4<const TABLE: bool, const HALF: bool>(
        a: &[*const u8; MR_MAX],
        w: *const i8,
        q0: usize,
        q1: usize,
        koff: *const u32,
        tile: &mut Tile32,
    ) {
        let mut acc = [[_mm512_setzero_si512(); 2]; MR_MAX];
        // SAFETY (whole block): reads stay inside the ranges the caller
        // guarantees; unaligned loads.
        unsafe {
            let mut wp = w.add(q0 * NR * 4);
            for q in q0..q1 {
                let off = if TABLE { *koff.add(q) as usize } else { q * 4 };
                let w0 = _mm512_loadu_si512(wp as *const __m512i);
                let w1 = if HALF {
                    w0
                } else {
                    _mm512_loadu_si512(wp.add(64) as *const __m512i)
                };
                for r in 0..MR_MAX {
                    let av = _mm512_set1_epi32((a[r].add(off) as *const i32).read_unaligned());
                    acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, w0);
                    if !HALF {
                        acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, w1);
                    }
                }
                wp = wp.add(NR * 4);
            }
            for r in 0..MR_MAX {
                let dst = tile.as_mut_ptr().add(r * NR);
                _mm512_storeu_si512(dst as *mut __m512i, acc[r][0]);
                _mm512_storeu_si512(dst.add(16) as *mut __m512i, acc[r][1]);
            }
        }
    }

    /// AVX-512 VNNI `I16x2` kernel (`vpdpwssd`), 8 rows × 32 columns;
    /// group offsets as in [`vnni_i8x4`] (`2q`, or `koff[q]`).
    ///
    /// # Safety
    /// AVX-512 F/VNNI available; `a[r]` readable for 2 i16 at every group
    /// offset of `q0..q1`; `koff` (when `TABLE`) for `q1` entries; `w` for
    /// `q1 · NR · 2` i16.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) unsafe fn vnni_i16x2<const TABLE: bool, const HALF: bool>(
        a: &[*const i16; MR_MAX],
        w: *const i16,
        q0: usize,
        q1: usize,
        koff: *const u32,
        tile: &mut Tile32,
    ) {
        let mut acc = [[_mm512_setzero_si512(); 2]; MR_MAX];
        // SAFETY (whole block): reads stay inside the ranges the caller
        // guarantees; unaligned loads.
        unsafe {
            let mut wp = w.add(q0 * NR * 2);
            for q in q0..q1 {
                let off = if TABLE { *koff.add(q) as usize } else { q * 2 };
                let w0 = _mm512_loadu_si512(wp as *const __m512i);
                let w1 = if HALF {
                    w0
                } else {
                    _mm512_loadu_si512(wp.add(32) as *const __m512i)
                };
                for r in 0..MR_MAX {
                    let av = _mm512_set1_epi32((a[r].add(off) as *const i32).read_unaligned());
                    acc[r][0] = _mm512_dpwssd_epi32(acc[r][0], av, w0);
                    if !HALF {
                        acc[r][1] = _mm512_dpwssd_epi32(acc[r][1], av, w1);
                    }
                }
                wp = wp.add(NR * 2);
            }
            for r in 0..MR_MAX {
                let dst = tile.as_mut_ptr().add(r * NR);
                _mm512_storeu_si512(dst as *mut __m512i, acc[r][0]);
                _mm512_storeu_si512(dst.add(16) as *mut __m512i, acc[r][1]);
            }
        }
    }

    /// The per-column epilogue tables of one panel (32 entries each).
    pub(crate) struct EpiPanel<'a> {
        pub corr: &'a [i32],
        pub bias: &'a [i64],
        pub mult: &'a [i64],
        pub rnd: &'a [i64],
        pub shift: &'a [i64],
        /// A folded second requantisation.
        pub then: Option<EpiThen<'a>>,
    }

    /// The second-requantisation tables of one panel (32 entries each) and
    /// its clamp.
    pub(crate) struct EpiThen<'a> {
        pub mult: &'a [i64],
        pub rnd: &'a [i64],
        pub shift: &'a [i64],
        pub lo: i64,
        pub hi: i64,
    }

    /// AVX-512 epilogue of one i32 tile row segment of 16 columns starting
    /// at column `c0` of the panel: `clamp(((t − corr + bias)·M + rnd) >>
    /// n, lo, hi)`, exact when every column of the panel passed the static
    /// i64 bound. Returns the 16 results as i32.
    ///
    /// # Safety
    /// AVX-512 F/DQ available; `c0 + 16 ≤ NR`; the tables have `NR` entries.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    #[inline]
    pub(crate) unsafe fn epi16(
        t: &[i32],
        e: &EpiPanel<'_>,
        c0: usize,
        lo: i64,
        hi: i64,
    ) -> __m512i {
        // SAFETY: all loads read 16 i32 or 8 i64 inside slices of NR
        // entries (`c0 + 16 ≤ NR`, checked by the caller).
        unsafe {
            let acc = _mm512_loadu_si512(t.as_ptr().add(c0) as *const __m512i);
            let corr = _mm512_loadu_si512(e.corr.as_ptr().add(c0) as *const __m512i);
            let v = _mm512_sub_epi32(acc, corr);
            let vlo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v));
            let vhi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(v));
            let l = _mm512_set1_epi64(lo);
            let h = _mm512_set1_epi64(hi);
            let half = |x: __m512i, o: usize| -> __m256i {
                let ld = |s: &[i64]| _mm512_loadu_si512(s.as_ptr().add(c0 + o) as *const __m512i);
                let x = _mm512_add_epi64(x, ld(e.bias));
                let x = _mm512_mullo_epi64(x, ld(e.mult));
                let x = _mm512_add_epi64(x, ld(e.rnd));
                let x = _mm512_srav_epi64(x, ld(e.shift));
                let mut x = _mm512_min_epi64(_mm512_max_epi64(x, l), h);
                if let Some(t) = &e.then {
                    let ld =
                        |s: &[i64]| _mm512_loadu_si512(s.as_ptr().add(c0 + o) as *const __m512i);
                    x = _mm512_mullo_epi64(x, ld(t.mult));
                    x = _mm512_add_epi64(x, ld(t.rnd));
                    x = _mm512_srav_epi64(x, ld(t.shift));
                    x = _mm512_min_epi64(
                        _mm512_max_epi64(x, _mm512_set1_epi64(t.lo)),
                        _mm512_set1_epi64(t.hi),
                    );
                }
                _mm512_cvtepi64_epi32(x)
            };
            let rlo = half(vlo, 0);
            let rhi = half(vhi, 8);
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(rlo), rhi)
        }
    }

    /// Stores the first `n` lanes of `v` (values already in range) as
    /// `O` (1, 2 or 4 bytes) at `dst`, contiguous.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL available; `dst` writable for `n ≤ 16` elements of
    /// `size` bytes.
    /// Writes the first `n` lanes of `v` to `dst`, `dst + stride`, …
    ///
    /// # Safety
    /// AVX-512 F available; each `dst + c·stride` (`c < n ≤ 16`) writable,
    /// every lane in `O`'s range.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn store16_strided<O: crate::fast::FastOut>(
        dst: *mut O,
        stride: usize,
        v: __m512i,
        n: usize,
    ) {
        let mut tmp = [0i32; 16];
        // SAFETY: 16 i32 into a 16-element array; the caller guarantees
        // the destinations.
        unsafe {
            _mm512_storeu_si512(tmp.as_mut_ptr() as *mut __m512i, v);
            for (c, &val) in tmp.iter().enumerate().take(n.min(16)) {
                dst.add(c * stride).write(O::from_i32_in_range(val));
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    pub(crate) unsafe fn store16(dst: *mut u8, size: usize, v: __m512i, n: usize) {
        let k: __mmask16 = if n >= 16 { 0xffff } else { (1u16 << n) - 1 };
        // SAFETY: full stores when all 16 lanes are wanted, else masked
        // stores writing only the first `n` lanes. Narrowing by saturating
        // packs (exact: the lanes are in range) and a lane permute rather
        // than `vpmovdw`/`vpmovdb` to memory, which are slow on AMD Zen 4.
        unsafe {
            match size {
                1 => {
                    let p = _mm512_packs_epi32(v, v);
                    let p = _mm512_packs_epi16(p, p);
                    let idx = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
                    let b = _mm512_castsi512_si128(_mm512_permutexvar_epi32(idx, p));
                    if n >= 16 {
                        _mm_storeu_si128(dst as *mut __m128i, b)
                    } else {
                        _mm_mask_storeu_epi8(dst as *mut i8, k, b)
                    }
                }
                2 => {
                    let p = _mm512_packs_epi32(v, v);
                    let idx = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
                    let h = _mm512_castsi512_si256(_mm512_permutexvar_epi64(idx, p));
                    if n >= 16 {
                        _mm256_storeu_si256(dst as *mut __m256i, h)
                    } else {
                        _mm256_mask_storeu_epi16(dst as *mut i16, k, h)
                    }
                }
                _ => _mm512_mask_storeu_epi32(dst as *mut i32, k, v),
            }
        }
    }

    /// The AVX-512 epilogue of a whole tile: rows `0..nrows`, panel columns
    /// `0..ncols`, each value to `out + r·rs + c·cs` (one call, so the
    /// per-row steps inline).
    ///
    /// # Safety
    /// AVX-512 F/BW/VL/DQ available; every destination inside the output
    /// and owned by this tile; tables as in [`epi16`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn epilogue_tile<O: crate::fast::FastOut>(
        t: &Tile32,
        e: &EpiPanel<'_>,
        nrows: usize,
        ncols: usize,
        lo: i64,
        hi: i64,
        out: *mut O,
        rs: usize,
        cs: usize,
    ) {
        for r in 0..nrows {
            for c0 in [0, 16] {
                if c0 >= ncols {
                    break;
                }
                let n = (ncols - c0).min(16);
                // SAFETY: the caller's guarantees; `c0 + 16 ≤ NR`.
                unsafe {
                    let y = epi16(&t[r * NR..(r + 1) * NR], e, c0, lo, hi);
                    let dst = out.add(r * rs + c0 * cs);
                    if cs == 1 {
                        store16(dst as *mut u8, std::mem::size_of::<O>(), y, n);
                    } else {
                        store16_strided(dst, cs, y, n);
                    }
                }
            }
        }
    }
}
