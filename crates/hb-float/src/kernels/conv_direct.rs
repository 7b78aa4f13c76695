//! Direct 2-D convolution for small feature maps, vectorised over output
//! width with AVX2 + FMA.
//!
//! The input of one group is copied once into a zero-padded buffer whose
//! columns are split by stride phase (column `c` of the padded plane goes
//! to phase `c % stride`, slot `c / stride`), so every kernel tap reads 8
//! consecutive floats for 8 consecutive output columns whatever the stride
//! and dilation. Output channels are taken [`MR`] at a time and output row
//! segments of 8 columns [`NR`] at a time; each `MR × NR` tile of 8-wide
//! accumulators runs over every (input channel, tap) pair, starting from
//! the bias. Weights are repacked as `[block][cin·taps][MR]` so the
//! broadcasts of one tap are adjacent.
//!
//! Used only when the CPU has AVX2 and FMA (the caller falls back to
//! im2col + GEMM otherwise) and the output rows fill most of their 8-wide
//! segments. With AVX-512F the tile is [`MR_WIDE`] output channels × two
//! vectors of 16: 16 consecutive columns when the rows fill most of 16-wide
//! segments, else two 8-wide segments per vector (two output rows of ≤ 8
//! columns). Every tile adds the same products in the same order (bias,
//! then one FMA per input channel and tap), so all give bit-identical
//! results.

use crate::kernels::scratch::Scratch;
use crate::kernels::spatial::Geom;
use rayon::prelude::*;

/// Output channels per register tile (4 × 2 accumulators plus the loads
/// fit the 16 ymm registers of AVX2; a 4 × 3 tile spilled and ran 2× slower).
const MR: usize = 4;
/// 8-wide output segments per register tile.
pub(super) const NR: usize = 2;
/// Vector width.
const V: usize = 8;
/// Vector width of the AVX-512 tile.
pub(super) const V_WIDE: usize = 16;
/// Output channels per AVX-512 register tile (8 × 2 accumulators of 16
/// plus two loads and a broadcast fit the 32 zmm registers).
pub(super) const MR_WIDE: usize = 8;

/// True when [`conv2d`] can run this geometry on this CPU and is expected to
/// beat im2col + GEMM: a 2-D (or 1-D) window, at least a few output
/// columns per 8-wide segment on average, and a feature map small enough
/// that the padded copy stays cheap.
pub fn applicable(g: &Geom, cin_g: usize) -> bool {
    if g.input[0] != 1 || g.out[0] != 1 || g.kernel[0] != 1 {
        return false;
    }
    dense(g.out[2], V)
        && g.k_len() > 1
        && g.out_len() <= 1 << 14
        && cin_g * g.k_len() >= 8
        && has_avx2_fma()
}

/// True when at least 3/4 of the lanes of `ow.div_ceil(v)` segments of
/// width `v` do useful work.
fn dense(ow: usize, v: usize) -> bool {
    ow > 0 && 4 * ow >= 3 * ow.div_ceil(v) * v
}

/// True when the running CPU has AVX-512F.
pub(super) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Padded, phase-split copy of the input channels of one group.
struct Padded {
    data: Scratch,
    /// Padded rows.
    hp: usize,
    /// Floats per phase row (slots).
    len: usize,
    /// Column stride (phases per row).
    sw: usize,
}

impl Padded {
    fn new(g: &Geom, x: &[f32], cin: usize) -> Self {
        let [_, ih, iw] = g.input;
        let [_, _, ow] = g.out;
        let (sw, dw, kw) = (g.strides[2], g.dilations[2], g.kernel[2]);
        let hp = g.pad[1] + ih + g.pad_end[1];
        let wp = g.pad[2] + iw + g.pad_end[2];
        // Slots read: output column o (< 16-wide segments) plus the tap offset.
        let len = wp
            .div_ceil(sw)
            .max(ow.div_ceil(DW_V) * DW_V + (kw - 1) * dw / sw);
        // The thread's scratch memory (warm, no page faults), zeroed for
        // the padding.
        let mut data = Scratch::take(cin * hp * sw * len);
        data.fill(0.0);
        let il = ih * iw;
        if sw == 1 {
            copy_rows(x, [cin, ih, iw], hp, len, [g.pad[1], g.pad[2]], &mut data);
            return Padded { data, hp, len, sw };
        }
        for c in 0..cin {
            let plane = &x[c * il..(c + 1) * il];
            for (r, src) in plane.chunks_exact(iw.max(1)).enumerate() {
                let row = &mut data[((c * hp + r + g.pad[1]) * sw) * len..][..sw * len];
                // Column i + pad goes to phase (i + pad) % sw, slot (i + pad) / sw.
                if sw == 2 && iw >= 2 {
                    split_pairs(src, g.pad[2], len, row);
                    continue;
                }
                // Any other stride: one strided, branch-free copy per phase.
                for i0 in 0..sw.min(iw) {
                    let c0 = i0 + g.pad[2];
                    let dst = row[(c0 % sw) * len + c0 / sw..].iter_mut();
                    for (d, &v) in dst.zip(src[i0..].iter().step_by(sw)) {
                        *d = v;
                    }
                }
            }
        }
        Padded { data, hp, len, sw }
    }
}

crate::multiversion! {
/// The stride-1 case of [`Padded::new`]: row `r` of channel `c` of `x`
/// (`[cin, ih, iw]` planes) goes to padded row `c·hp + r + pad[0]`
/// (rows of `len`) at column `pad[1]`. Whole 16-float blocks are
/// fixed-size copies, inlined as vector moves, where a copy of run-time
/// length would call `memcpy` for every short row.
fn copy_rows(x: &[f32], dims: [usize; 3], hp: usize, len: usize, pad: [usize; 2], data: &mut [f32]) {
    let [cin, ih, iw] = dims;
    for c in 0..cin {
        for r in 0..ih {
            let src = &x[(c * ih + r) * iw..][..iw];
            let at = (c * hp + r + pad[0]) * len + pad[1];
            let dst = &mut data[at..at + iw];
            let mut d = dst.chunks_exact_mut(16);
            let mut s = src.chunks_exact(16);
            for (d, s) in d.by_ref().zip(s.by_ref()) {
                d.copy_from_slice(s);
            }
            for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
                *d = *s;
            }
        }
    }
}
}

crate::multiversion! {
/// Stride-2 phase split of one input row into a padded row of two phases
/// (`row[0..len]` even padded columns, `row[len..2·len]` odd ones), the
/// input's column `i` being padded column `i + pad`: a pairwise
/// de-interleave the compiler vectorises.
pub(super) fn split_pairs(src: &[f32], pad: usize, len: usize, row: &mut [f32]) {
    let (even, odd) = row.split_at_mut(len.min(row.len()));
    // Input columns 0, 2, … land on phase pad % 2 at slot (i + pad) / 2.
    let (first, second) = if pad.is_multiple_of(2) { (even, odd) } else { (odd, even) };
    let s0 = pad / 2;
    let s1 = pad.div_ceil(2);
    let pairs = src.chunks_exact(2);
    let tail = pairs.remainder();
    let n = src.len() / 2;
    let (Some(a), Some(b)) = (first.get_mut(s0..s0 + n), second.get_mut(s1..s1 + n)) else {
        return;
    };
    for ((x, y), p) in a.iter_mut().zip(b.iter_mut()).zip(pairs) {
        *x = p[0];
        *y = p[1];
    }
    if let (Some(&v), Some(d)) = (tail.first(), first.get_mut(s0 + n)) {
        *d = v;
    }
}
}

/// True when [`depthwise2d`] handles this geometry: a 2-D (or 1-D) window.
pub fn depthwise_applicable(g: &Geom) -> bool {
    g.input[0] == 1 && g.out[0] == 1 && g.kernel[0] == 1
}

crate::multiversion! {
/// One channel of a depthwise conv: `out += Σ_taps w[tap] · x[window]`,
/// taps in row-major order. The plane is copied once into the padded,
/// stride-phase-split buffer of [`Padded`], so every tap of every output
/// row is one contiguous, vectorisable multiply-add over the row.
/// The caller checked [`depthwise_applicable`]; `w` holds `kh·kw` taps and
/// `out` one output plane.
pub fn depthwise2d(g: &Geom, x: &[f32], w: &[f32], out: &mut [f32]) {
    let p = Padded::new(g, x, 1);
    let [_, oh_n, ow] = g.out;
    let (kh_n, kw_n) = (g.kernel[1], g.kernel[2]);
    let row_len = p.sw * p.len;
    // Start of each tap's source run inside a padded row block.
    let taps: Vec<(usize, f32)> = (0..kh_n * kw_n)
        .map(|t| {
            let (kh, kw) = (t / kw_n, t % kw_n);
            let c = kw * g.dilations[2];
            let off = kh * g.dilations[1] * row_len + (c % p.sw) * p.len + c / p.sw;
            (off, w.get(t).copied().unwrap_or(0.0))
        })
        .collect();
    let fast = has_avx512();
    for (oh, orow) in out.chunks_mut(ow.max(1)).enumerate().take(oh_n) {
        let base = oh * g.strides[1] * row_len;
        if fast && ow > 0 {
            // Every read `base + off + col + 16` stays inside the padded
            // plane: its phase rows hold `ow.div_ceil(16)·16` slots plus
            // the widest tap offset (see `Padded::new`).
            let reach = base + taps.iter().map(|t| t.0).max().unwrap_or(0) + ow.div_ceil(DW_V) * DW_V;
            if reach <= p.data.len() {
                // SAFETY: AVX-512F is present; reads checked just above,
                // `orow` holds `ow` values.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    avx::depthwise_row(p.data[base..].as_ptr(), &taps, orow.as_mut_ptr(), ow)
                };
                continue;
            }
        }
        // DW_V outputs at a time stay in registers across all taps.
        let mut col = 0;
        for seg in orow.chunks_mut(DW_V) {
            let mut acc = [0f32; DW_V];
            acc[..seg.len()].copy_from_slice(seg);
            for &(off, wv) in &taps {
                let start = base + off + col;
                let Some(src) = p.data.get(start..start + DW_V) else {
                    continue;
                };
                for (a, &v) in acc.iter_mut().zip(src) {
                    *a += wv * v;
                }
            }
            let n = seg.len();
            seg.copy_from_slice(&acc[..n]);
            col += n;
        }
    }
}
}

/// Output columns per register block of [`depthwise2d`].
const DW_V: usize = 16;

/// `out[co] = bias[co] + Σ w[co] ⋆ x` for one group: `x` holds `cin`
/// planes, `w` is `[cout][cin][kh][kw]`, `out` holds `cout` planes.
/// The caller checked [`applicable`]. Returns false (output untouched)
/// when the geometry does not fit the kernel's buffer layout.
pub fn conv2d(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    cin: usize,
    out: &mut [f32],
) -> bool {
    let mode = if !has_avx512() {
        Tile::Avx2
    } else if dense(g.out[2], V_WIDE) {
        Tile::Wide
    } else {
        Tile::Paired
    };
    conv2d_with(g, x, w, bias, cin, out, mode)
}

/// Which register tile runs the convolution.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tile {
    /// [`MR`] channels × [`NR`] segments of 8 (AVX2 + FMA).
    Avx2,
    /// [`MR_WIDE`] channels × [`NR`] segments of 16 (AVX-512F).
    Wide,
    /// [`MR_WIDE`] channels × [`NR`] vectors of 16, each made of two
    /// 8-wide segments (two output rows of ≤ 8 columns; AVX-512F).
    Paired,
}

/// [`conv2d`] with the tile chosen by the caller (the CPU must support
/// it: AVX2 + FMA for all, AVX-512F for [`Tile::Wide`] and [`Tile::Paired`]).
fn conv2d_with(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    cin: usize,
    out: &mut [f32],
    mode: Tile,
) -> bool {
    if cfg!(not(target_arch = "x86_64")) {
        // The tiles are x86_64 code ([`applicable`] is false elsewhere).
        return false;
    }
    // Segment width, output channels per block, segments per tile.
    let (v, mr, per_tile) = match mode {
        Tile::Avx2 => (V, MR, NR),
        Tile::Wide => (V_WIDE, MR_WIDE, NR),
        Tile::Paired => (V, MR_WIDE, 2 * NR),
    };
    let ol = g.out_len();
    let cout = out.len() / ol.max(1);
    let [_, oh, ow] = g.out;
    let (kh, kw) = (g.kernel[1], g.kernel[2]);
    let taps = kh * kw;
    let k = cin * taps;
    let p = Padded::new(g, x, cin);
    // Offset of each tap inside one channel's padded block.
    let row_len = p.sw * p.len;
    let tap_off: Vec<usize> = (0..taps)
        .map(|t| {
            let (i, j) = (t / kw, t % kw);
            let c = j * g.dilations[2];
            i * g.dilations[1] * row_len + (c % p.sw) * p.len + c / p.sw
        })
        .collect();
    // Offsets of every channel/tap pair, in weight order.
    let offs: Vec<usize> = (0..cin)
        .flat_map(|c| tap_off.iter().map(move |&t| c * p.hp * row_len + t))
        .collect();
    // Segments: (output start, length, input base).
    let segs_per_row = ow.div_ceil(v);
    let segs: Vec<(usize, usize, usize)> = (0..oh)
        .flat_map(|r| {
            (0..segs_per_row).map(move |s| {
                let c0 = s * v;
                (r * ow + c0, v.min(ow - c0), r * g.strides[1] * row_len + c0)
            })
        })
        .collect();
    // Largest input index any tile reads must lie inside the buffer.
    let max_seg = segs.iter().map(|s| s.2).max().unwrap_or(0);
    let max_off = offs.iter().copied().max().unwrap_or(0);
    if max_seg + max_off + v > p.data.len() || w.len() < cout * k {
        return false;
    }
    let blocks = cout.div_ceil(mr);
    let run = |b: usize, o: &mut [f32]| {
        let rows = o.len() / ol;
        // Weight rows of this block, read in place (row `r` is `w[co·k..]`);
        // missing rows of a partial block repeat row 0 and are not stored.
        let row = |r: usize| {
            let co = b * mr + if r < rows { r } else { 0 };
            w.get(co * k..(co + 1) * k).unwrap_or(&[])
        };
        let wrows: [&[f32]; MR_WIDE] = std::array::from_fn(row);
        let mut bs = [0f32; MR_WIDE];
        for (r, v) in bs.iter_mut().enumerate().take(rows) {
            *v = bias
                .and_then(|bb| bb.get(b * mr + r))
                .copied()
                .unwrap_or(0.0);
        }
        // Every tile writes the accumulators it stores (rows < `rows`, lanes
        // < `v`) before they are read: zeroed once per block, not per tile.
        let mut acc = [[0f32; V_WIDE]; MR_WIDE * NR];
        for tile in segs.chunks(per_tile) {
            // Missing segments of a partial tile repeat the first one and
            // are not stored.
            let mut base = [tile[0].2; 2 * NR];
            for (d, s) in base.iter_mut().zip(tile) {
                *d = s.2;
            }
            // SAFETY: the CPU has AVX2 + FMA (checked by `applicable`), and
            // AVX-512F for the 16-lane tiles (checked by `conv2d`); every
            // index read is below `p.data.len()` (checked above: base <=
            // max_seg, offs <= max_off, reads are `v` wide) and every weight
            // row holds `k = offs.len()` values.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                match mode {
                    Tile::Avx2 => avx::tile(&p.data, &offs, &wrows, &bs, &base, &mut acc),
                    Tile::Wide => {
                        avx::tile16::<false>(&p.data, &offs, &wrows, &bs, &base, &mut acc)
                    }
                    Tile::Paired => {
                        avx::tile16::<true>(&p.data, &offs, &wrows, &bs, &base, &mut acc)
                    }
                }
            }
            for (i, s) in tile.iter().enumerate() {
                // Segment i sits in vector i (one segment per vector) or in
                // half i % 2 of vector i / 2 (two per vector).
                let (n, lane) = match mode {
                    Tile::Paired => (i / 2, (i % 2) * V),
                    _ => (i, 0),
                };
                for r in 0..rows {
                    o[r * ol + s.0..r * ol + s.0 + s.1]
                        .copy_from_slice(&acc[r * NR + n][lane..lane + s.1]);
                }
            }
        }
    };
    let work = cout * k * ol;
    if blocks > 1 && crate::threads::kernel_threads() > 1 && work >= 1 << 20 {
        out.par_chunks_mut(mr * ol)
            .enumerate()
            .for_each(|(b, o)| run(b, o));
    } else {
        out.chunks_mut(mr * ol)
            .enumerate()
            .for_each(|(b, o)| run(b, o));
    }
    true
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx {
    use super::{MR_WIDE, NR, V_WIDE};
    use std::arch::x86_64::*;

    /// One `MR × NR` tile of 8 lanes (rows `0..4`, lanes `0..8` of `acc`):
    /// `acc[r·NR + n][i] = bias[r] + Σ_q w[r][q] · x[offs[q] + base[n] + i]`.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA; `offs[q] + base[n] + 8 <= x.len()`
    /// for every q and n; `w[0..4]` hold at least `offs.len()` values.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile(
        x: &[f32],
        offs: &[usize],
        w: &[&[f32]; MR_WIDE],
        bias: &[f32; MR_WIDE],
        base: &[usize; 2 * NR],
        acc: &mut [[f32; V_WIDE]; MR_WIDE * NR],
    ) {
        let xp = x.as_ptr();
        let (w0p, w1p, w2p, w3p) = (w[0].as_ptr(), w[1].as_ptr(), w[2].as_ptr(), w[3].as_ptr());
        let b0 = _mm256_set1_ps(bias[0]);
        let b1 = _mm256_set1_ps(bias[1]);
        let b2 = _mm256_set1_ps(bias[2]);
        let b3 = _mm256_set1_ps(bias[3]);
        let (mut c00, mut c01) = (b0, b0);
        let (mut c10, mut c11) = (b1, b1);
        let (mut c20, mut c21) = (b2, b2);
        let (mut c30, mut c31) = (b3, b3);
        let (p0, p1) = (xp.add(base[0]), xp.add(base[1]));
        for (q, &off) in offs.iter().enumerate() {
            let x0 = _mm256_loadu_ps(p0.add(off));
            let x1 = _mm256_loadu_ps(p1.add(off));
            let w0 = _mm256_broadcast_ss(&*w0p.add(q));
            c00 = _mm256_fmadd_ps(w0, x0, c00);
            c01 = _mm256_fmadd_ps(w0, x1, c01);
            let w1 = _mm256_broadcast_ss(&*w1p.add(q));
            c10 = _mm256_fmadd_ps(w1, x0, c10);
            c11 = _mm256_fmadd_ps(w1, x1, c11);
            let w2 = _mm256_broadcast_ss(&*w2p.add(q));
            c20 = _mm256_fmadd_ps(w2, x0, c20);
            c21 = _mm256_fmadd_ps(w2, x1, c21);
            let w3 = _mm256_broadcast_ss(&*w3p.add(q));
            c30 = _mm256_fmadd_ps(w3, x0, c30);
            c31 = _mm256_fmadd_ps(w3, x1, c31);
        }
        let all = [c00, c01, c10, c11, c20, c21, c30, c31];
        for (d, v) in acc.iter_mut().zip(all) {
            _mm256_storeu_ps(d.as_mut_ptr(), v);
        }
    }

    /// One `MR_WIDE × NR` tile of 16 lanes, the same sums in the same order
    /// as [`tile`]. Vector `n` of the tile holds 16 consecutive columns from
    /// `base[n]`, or with `PAIRED` two 8-wide segments: `base[2n]` in lanes
    /// 0–7 and `base[2n + 1]` in lanes 8–15 (two output rows of ≤ 8 columns):
    /// `acc[r·NR + n][i] = bias[r] + Σ_q w[r][q] · x[offs[q] + start(n, i)]`.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; every vector read lies inside `x`
    /// (`offs[q] + base[n] + 16 <= x.len()`, or `+ 8` for each half with
    /// `PAIRED`); every `w[r]` holds at least `offs.len()` values.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile16<const PAIRED: bool>(
        x: &[f32],
        offs: &[usize],
        w: &[&[f32]; MR_WIDE],
        bias: &[f32; MR_WIDE],
        base: &[usize; 2 * NR],
        acc: &mut [[f32; V_WIDE]; MR_WIDE * NR],
    ) {
        let xp = x.as_ptr();
        let wp: [*const f32; MR_WIDE] = std::array::from_fn(|r| w[r].as_ptr());
        let mut c0: [__m512; MR_WIDE] = std::array::from_fn(|r| _mm512_set1_ps(bias[r]));
        let mut c1 = c0;
        let p: [*const f32; 2 * NR] = std::array::from_fn(|j| xp.add(base[j]));
        let load = |n: usize, off: usize| {
            if PAIRED {
                let l = _mm512_castps256_ps512(_mm256_loadu_ps(p[2 * n].add(off)));
                let h = _mm256_castps_pd(_mm256_loadu_ps(p[2 * n + 1].add(off)));
                _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castps_pd(l), h))
            } else {
                _mm512_loadu_ps(p[n].add(off))
            }
        };
        for (q, &off) in offs.iter().enumerate() {
            let (x0, x1) = (load(0, off), load(1, off));
            for r in 0..MR_WIDE {
                let wr = _mm512_set1_ps(*wp[r].add(q));
                c0[r] = _mm512_fmadd_ps(wr, x0, c0[r]);
                c1[r] = _mm512_fmadd_ps(wr, x1, c1[r]);
            }
        }
        for r in 0..MR_WIDE {
            _mm512_storeu_ps(acc[r * NR].as_mut_ptr(), c0[r]);
            _mm512_storeu_ps(acc[r * NR + 1].as_mut_ptr(), c1[r]);
        }
    }

    /// Lane mask of the first `n` (≤ 16) lanes.
    pub(in crate::kernels) fn mask(n: usize) -> __mmask16 {
        if n >= V_WIDE {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// One output row of a depthwise channel:
    /// `out[i] += Σ_t w_t · x[off_t + i]` for `i < n`, taps `(off_t, w_t)`
    /// in order (fused multiply-adds), four vectors of 16 columns at a
    /// time so four independent chains hide the FMA latency.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `x[off_t + i]` is readable for every tap
    /// and every `i < n.div_ceil(16)·16`; `out[..n]` is writable.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn depthwise_row(x: *const f32, taps: &[(usize, f32)], out: *mut f32, n: usize) {
        let mut i = 0;
        while i + 4 * V_WIDE <= n {
            let o = out.add(i);
            let mut a: [__m512; 4] = std::array::from_fn(|k| _mm512_loadu_ps(o.add(k * V_WIDE)));
            for &(off, w) in taps {
                let (wv, src) = (_mm512_set1_ps(w), x.add(off + i));
                for (k, acc) in a.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(wv, _mm512_loadu_ps(src.add(k * V_WIDE)), *acc);
                }
            }
            for (k, acc) in a.iter().enumerate() {
                _mm512_storeu_ps(o.add(k * V_WIDE), *acc);
            }
            i += 4 * V_WIDE;
        }
        while i < n {
            let m = mask(n - i);
            let mut acc = _mm512_maskz_loadu_ps(m, out.add(i));
            for &(off, w) in taps {
                acc = _mm512_fmadd_ps(_mm512_set1_ps(w), _mm512_loadu_ps(x.add(off + i)), acc);
            }
            _mm512_mask_storeu_ps(out.add(i), m, acc);
            i += V_WIDE;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::rand_vals as vals;

    /// A 2-D geometry (`[1, h, w]` planes) with symmetric pads.
    fn geom(h: usize, w: usize, k: usize, s: usize, d: usize, pad: usize) -> Geom {
        let o = |n: usize| (n + 2 * pad - d * (k - 1) - 1) / s + 1;
        Geom {
            input: [1, h, w],
            out: [1, o(h), o(w)],
            kernel: [1, k, k],
            strides: [1, s, s],
            dilations: [1, d, d],
            pad: [0, pad, pad],
            pad_end: [0, pad, pad],
        }
    }

    #[test]
    fn avx512_tiles_give_the_avx2_tiles_bits() {
        if !has_avx512() || !has_avx2_fma() {
            return;
        }
        // (h, w, k, stride, dilation, pad, cin, cout): 16- and 32-wide rows,
        // a partial channel block, strides, dilation, an uneven last segment.
        let cases = [
            (16, 16, 3, 1, 1, 1, 16, 16),
            (32, 32, 3, 1, 1, 1, 3, 16),
            (16, 16, 3, 1, 1, 1, 64, 32),
            (32, 32, 3, 2, 1, 1, 5, 13),
            (18, 30, 3, 1, 2, 2, 7, 9),
            (40, 40, 5, 1, 1, 2, 4, 3),
            // Rows of ≤ 8 columns: the paired tile (two rows per vector),
            // an odd number of segments, partial blocks.
            (8, 8, 3, 1, 1, 1, 32, 32),
            (16, 16, 3, 2, 1, 1, 16, 32),
            (7, 7, 3, 1, 1, 1, 6, 11),
            (9, 14, 3, 1, 1, 1, 3, 5),
        ];
        for (h, w, k, s, d, pad, cin, cout) in cases {
            let g = geom(h, w, k, s, d, pad);
            let x = vals(cin * h * w, 3);
            let wt = vals(cout * cin * k * k, 5);
            let b = vals(cout, 7);
            let ol = g.out_len();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let mut narrow = vec![0f32; cout * ol];
            assert!(conv2d_with(
                &g,
                &x,
                &wt,
                Some(&b),
                cin,
                &mut narrow,
                Tile::Avx2
            ));
            let mut modes = vec![Tile::Paired];
            if dense(g.out[2], V_WIDE) {
                modes.push(Tile::Wide);
            }
            for mode in modes {
                let mut got = vec![1f32; cout * ol];
                assert!(conv2d_with(&g, &x, &wt, Some(&b), cin, &mut got, mode));
                assert_eq!(bits(&narrow), bits(&got), "{mode:?} {h}x{w} k{k} s{s} d{d}");
            }
        }
    }
}
