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

    /// The per-column epilogue tables of one panel (32 entries each), the
    /// 64-bit ones in the even/odd order of
    /// [`crate::fast::pack::deinterleave16`].
    pub(crate) struct EpiPanel<'a> {
        /// The activation-offset correction, in column order.
        pub corr: &'a [i32],
        pub mult: &'a [i64],
        /// `bias · M + rnd`.
        pub add: &'a [i64],
        pub shift: &'a [i64],
        /// A folded second requantisation.
        pub then: Option<EpiThen<'a>>,
    }

    /// The second-requantisation tables of one panel (32 entries each,
    /// even/odd order) and its clamp.
    pub(crate) struct EpiThen<'a> {
        pub mult: &'a [i64],
        pub rnd: &'a [i64],
        pub shift: &'a [i64],
        pub lo: i64,
        pub hi: i64,
    }

    /// One 16-column half of a panel's epilogue constants, held in
    /// registers while the tile's rows stream through
    /// [`HalfEpi::apply`].
    #[derive(Clone, Copy)]
    struct HalfEpi {
        corr: __m512i,
        /// Multiplier, `bias·M + rnd` and shift of the even, then the odd
        /// columns.
        mult: [__m512i; 2],
        add: [__m512i; 2],
        shift: [__m512i; 2],
        lo: __m512i,
        hi: __m512i,
        /// The folded second requantisation (zeros when there is none).
        then_mult: [__m512i; 2],
        then_rnd: [__m512i; 2],
        then_shift: [__m512i; 2],
        then_lo: __m512i,
        then_hi: __m512i,
    }

    impl HalfEpi {
        /// The constants of columns `c0..c0 + 16` of the panel.
        ///
        /// # Safety
        /// AVX-512 F/DQ available; `c0 + 16 ≤ NR`; the tables have `NR`
        /// entries.
        #[target_feature(enable = "avx512f,avx512dq")]
        #[inline]
        unsafe fn load(e: &EpiPanel<'_>, c0: usize, lo: i64, hi: i64) -> HalfEpi {
            // SAFETY: 16 i32 or 2 × 8 i64 inside slices of NR entries.
            unsafe {
                let ld = |s: &[i64]| -> [__m512i; 2] {
                    [0, 8].map(|o| _mm512_loadu_si512(s.as_ptr().add(c0 + o) as *const __m512i))
                };
                let zero = [_mm512_setzero_si512(); 2];
                let (then_mult, then_rnd, then_shift, tlo, thi) = match &e.then {
                    Some(t) => (ld(t.mult), ld(t.rnd), ld(t.shift), t.lo, t.hi),
                    None => (zero, zero, zero, 0, 0),
                };
                HalfEpi {
                    corr: _mm512_loadu_si512(e.corr.as_ptr().add(c0) as *const __m512i),
                    mult: ld(e.mult),
                    add: ld(e.add),
                    shift: ld(e.shift),
                    lo: _mm512_set1_epi64(lo),
                    hi: _mm512_set1_epi64(hi),
                    then_mult,
                    then_rnd,
                    then_shift,
                    then_lo: _mm512_set1_epi64(tlo),
                    then_hi: _mm512_set1_epi64(thi),
                }
            }
        }

        /// The 16 results of one tile row (`t`: its 16 i32 sums):
        /// `clamp(((t − corr)·M + (bias·M + rnd)) >> n, lo, hi)`, then the
        /// second requantisation when `THEN`. Exact when every column of
        /// the panel passed the static i64 bound (then `t − corr` is the
        /// exact sum and |M| < 2^31). The even and the odd columns are
        /// multiplied apart by `vpmuldq` (signed 32 × 32 → 64 bits, no
        /// widening shuffles) and merged back by one masked dword swap.
        ///
        /// LLVM compiles the second multiply as a sign extension and a
        /// 64-bit product; DQ makes that one `vpmullq` instead of a
        /// three-multiply emulation (−6 % on resnet_tiny's whole run).
        ///
        /// # Safety
        /// AVX-512 F/DQ available; `t` readable for 16 i32.
        #[target_feature(enable = "avx512f,avx512dq")]
        #[inline]
        unsafe fn apply<const THEN: bool>(&self, t: *const i32) -> __m512i {
            // SAFETY: the caller guarantees the 16 i32 at `t`.
            let acc = unsafe { _mm512_loadu_si512(t as *const __m512i) };
            // Even columns in the low dword of each qword; the odd ones
            // moved there.
            let even = _mm512_sub_epi32(acc, self.corr);
            let odd = _mm512_srli_epi64::<32>(even);
            let half = |x: __m512i, i: usize| -> __m512i {
                let x = _mm512_mul_epi32(x, self.mult[i]);
                let x = _mm512_add_epi64(x, self.add[i]);
                let x = _mm512_srav_epi64(x, self.shift[i]);
                let x = _mm512_min_epi64(_mm512_max_epi64(x, self.lo), self.hi);
                if !THEN {
                    return x;
                }
                // |x| < 2^31 after the clamp: its low dword is exact.
                let x = _mm512_mul_epi32(x, self.then_mult[i]);
                let x = _mm512_add_epi64(x, self.then_rnd[i]);
                let x = _mm512_srav_epi64(x, self.then_shift[i]);
                _mm512_min_epi64(_mm512_max_epi64(x, self.then_lo), self.then_hi)
            };
            let re = half(even, 0);
            let ro = half(odd, 1);
            // Odd lanes take the low dword of `ro`'s qword (dword swap).
            _mm512_mask_shuffle_epi32::<_MM_PERM_CDAB>(re, 0xAAAA, ro)
        }
    }

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

    /// Stores the first `n` lanes of `v` (values already in range) as
    /// `O` (1, 2 or 4 bytes) at `dst`, contiguous.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL available; `dst` writable for `n ≤ 16` elements of
    /// `size` bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    pub(crate) unsafe fn store16(dst: *mut u8, size: usize, v: __m512i, n: usize) {
        let k: __mmask16 = if n >= 16 { 0xffff } else { (1u16 << n) - 1 };
        // SAFETY: full stores when all 16 lanes are wanted, else masked
        // stores writing only the first `n` lanes. Narrowing by truncation
        // (exact: the lanes are in range) into a register, then a plain
        // store: `vpmovdw`/`vpmovdb` straight to memory are slow on AMD Zen
        // 4; the register form beat packs + lane permute (resnet_tiny
        // −2 %).
        unsafe {
            match size {
                1 => {
                    let b = _mm512_cvtepi32_epi8(v);
                    if n >= 16 {
                        _mm_storeu_si128(dst as *mut __m128i, b)
                    } else {
                        _mm_mask_storeu_epi8(dst as *mut i8, k, b)
                    }
                }
                2 => {
                    let h = _mm512_cvtepi32_epi16(v);
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
    /// `0..ncols`, each value to `out + r·rs + c·cs`, one 16-column half at
    /// a time with its constants in registers ([`HalfEpi`]); `THEN` when the
    /// panel folds a second requantisation (`e.then`).
    ///
    /// # Safety
    /// AVX-512 F/BW/VL/DQ available; every destination inside the output
    /// and owned by this tile; the tables have `NR` entries.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn epilogue_tile<O: crate::fast::FastOut, const THEN: bool>(
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
        let size = std::mem::size_of::<O>();
        for c0 in [0, 16] {
            if c0 >= ncols {
                break;
            }
            let n = (ncols - c0).min(16);
            // SAFETY: `c0 + 16 ≤ NR`; rows `< nrows ≤ MR_MAX` of the tile;
            // destinations as the caller guarantees.
            unsafe {
                let k = HalfEpi::load(e, c0, lo, hi);
                for r in 0..nrows {
                    let y = k.apply::<THEN>(t.as_ptr().add(r * NR + c0));
                    let dst = out.add(r * rs + c0 * cs);
                    if cs == 1 {
                        store16(dst as *mut u8, size, y, n);
                    } else {
                        store16_strided(dst, cs, y, n);
                    }
                }
            }
        }
    }
}
