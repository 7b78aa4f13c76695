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
//! segments.

use crate::kernels::spatial::Geom;
use rayon::prelude::*;

/// Output channels per register tile (4 × 2 accumulators plus the loads
/// fit the 16 ymm registers of AVX2; a 4 × 3 tile spilled and ran 2× slower).
const MR: usize = 4;
/// 8-wide output segments per register tile.
const NR: usize = 2;
/// Vector width.
const V: usize = 8;

/// True when [`conv2d`] can run this geometry on this CPU and is expected to
/// beat im2col + GEMM: a 2-D (or 1-D) window, at least a few output
/// columns per 8-wide segment on average, and a feature map small enough
/// that the padded copy stays cheap.
pub fn applicable(g: &Geom, cin_g: usize) -> bool {
    if g.input[0] != 1 || g.out[0] != 1 || g.kernel[0] != 1 {
        return false;
    }
    let ow = g.out[2];
    let segs = ow.div_ceil(V);
    // At least 3/4 of the vector lanes do useful work.
    let dense = ow > 0 && 4 * ow >= 3 * segs * V;
    dense && g.k_len() > 1 && g.out_len() <= 1 << 14 && cin_g * g.k_len() >= 8 && has_avx2_fma()
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
    data: Vec<f32>,
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
        let mut data = vec![0f32; cin * hp * sw * len];
        let il = ih * iw;
        for c in 0..cin {
            let plane = &x[c * il..(c + 1) * il];
            for (r, src) in plane.chunks_exact(iw.max(1)).enumerate() {
                let row = &mut data[((c * hp + r + g.pad[1]) * sw) * len..][..sw * len];
                if sw == 1 {
                    row[g.pad[2]..g.pad[2] + iw].copy_from_slice(src);
                    continue;
                }
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
/// Stride-2 phase split of one input row into a padded row of two phases
/// (`row[0..len]` even padded columns, `row[len..2·len]` odd ones), the
/// input's column `i` being padded column `i + pad`: a pairwise
/// de-interleave the compiler vectorises.
fn split_pairs(src: &[f32], pad: usize, len: usize, row: &mut [f32]) {
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
    for (oh, orow) in out.chunks_mut(ow.max(1)).enumerate().take(oh_n) {
        let base = oh * g.strides[1] * row_len;
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
    let segs_per_row = ow.div_ceil(V);
    let segs: Vec<(usize, usize, usize)> = (0..oh)
        .flat_map(|r| {
            (0..segs_per_row).map(move |s| {
                let c0 = s * V;
                (r * ow + c0, V.min(ow - c0), r * g.strides[1] * row_len + c0)
            })
        })
        .collect();
    // Largest input index any tile reads must lie inside the buffer.
    let max_seg = segs.iter().map(|s| s.2).max().unwrap_or(0);
    let max_off = offs.iter().copied().max().unwrap_or(0);
    if max_seg + max_off + V > p.data.len() || w.len() < cout * k {
        return false;
    }
    let blocks = cout.div_ceil(MR);
    let run = |b: usize, o: &mut [f32]| {
        let rows = o.len() / ol;
        // Weight rows of this block, read in place (row `r` is `w[co·k..]`);
        // missing rows of a partial block repeat row 0 and are not stored.
        let row = |r: usize| {
            let co = b * MR + if r < rows { r } else { 0 };
            w.get(co * k..(co + 1) * k).unwrap_or(&[])
        };
        let wrows = [row(0), row(1), row(2), row(3)];
        let mut bs = [0f32; MR];
        for (r, v) in bs.iter_mut().enumerate().take(rows) {
            *v = bias
                .and_then(|bb| bb.get(b * MR + r))
                .copied()
                .unwrap_or(0.0);
        }
        for tile in segs.chunks(NR) {
            let mut acc = [[0f32; V]; MR * NR];
            let mut base = [tile[0].2; NR];
            for (d, s) in base.iter_mut().zip(tile) {
                *d = s.2;
            }
            // SAFETY: the CPU has AVX2 + FMA (checked by `applicable`);
            // every index read is below `p.data.len()` (checked above:
            // base <= max_seg, offs <= max_off) and every weight row
            // holds `k = offs.len()` values.
            unsafe { avx::tile(&p.data, &offs, &wrows, &bs, &base, &mut acc) };
            for (n, s) in tile.iter().enumerate() {
                for r in 0..rows {
                    o[r * ol + s.0..r * ol + s.0 + s.1].copy_from_slice(&acc[r * NR + n][..s.1]);
                }
            }
        }
    };
    let work = cout * k * ol;
    if blocks > 1 && rayon::current_num_threads() > 1 && work >= 1 << 20 {
        out.par_chunks_mut(MR * ol)
            .enumerate()
            .for_each(|(b, o)| run(b, o));
    } else {
        out.chunks_mut(MR * ol)
            .enumerate()
            .for_each(|(b, o)| run(b, o));
    }
    true
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{MR, NR, V};
    use std::arch::x86_64::*;

    /// One `MR × NR` tile: `acc[r·NR + n][i] = bias[r] + Σ_q w[r][q] ·
    /// x[offs[q] + base[n] + i]`.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA; `offs[q] + base[n] + 8 <= x.len()`
    /// for every q and n; every `w[r]` holds at least `offs.len()` values.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile(
        x: &[f32],
        offs: &[usize],
        w: &[&[f32]; MR],
        bias: &[f32; MR],
        base: &[usize; NR],
        acc: &mut [[f32; V]; MR * NR],
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
}

#[cfg(not(target_arch = "x86_64"))]
mod avx {
    use super::{MR, NR, V};

    /// Never called: [`super::applicable`] is false off x86_64.
    pub unsafe fn tile(
        _x: &[f32],
        _offs: &[usize],
        _w: &[&[f32]; MR],
        _bias: &[f32; MR],
        _base: &[usize; NR],
        _acc: &mut [[f32; V]; MR * NR],
    ) {
        unreachable!("direct conv needs x86_64")
    }
}
