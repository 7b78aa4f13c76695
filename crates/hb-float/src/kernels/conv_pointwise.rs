//! Pointwise (1×1, stride 1, unpadded) convolution on AVX-512F, read
//! straight from the NCHW planes.
//!
//! `out[co][p] = bias[co] + Σ_ci w[co][ci] · x[ci][p]` is a matrix product
//! whose right operand is the input as it lies in memory (one plane per
//! input channel). The general GEMM packs both operands first, which costs
//! as much as the product when the input has few channels (MobileNet's
//! expansions: 16 → 96 channels over 112×112 positions). Here the direct
//! convolution's register tile ([`conv_direct`]'s 8 output channels × 32
//! positions, bias first, then one FMA per input channel in order) walks
//! the planes in place: for each block of 32 positions the input columns
//! (`cin` × 128 bytes) stay in L1 while every block of output channels
//! passes over them, and the sums are stored straight into the output
//! rows. The last `hw % 32` positions use masked loads and stores.

use crate::kernels::conv_direct::{self, MR_WIDE, NR, V_WIDE};
use rayon::prelude::*;

/// Positions per register tile (two vectors of 16).
const TILE: usize = NR * V_WIDE;

/// True when [`conv1x1`] runs on this CPU.
pub fn available() -> bool {
    conv_direct::has_avx512()
}

/// `out[co][p] = bias[co] + Σ_ci w[co][ci] · x[ci][p]` for `cin` planes of
/// `hw` values in `x`, `w` as `[cout][cin]` and `out` as `[cout][hw]`.
/// Returns false (output untouched) when the CPU lacks AVX-512F or the
/// buffers do not match.
pub fn conv1x1(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    cin: usize,
    hw: usize,
    out: &mut [f32],
) -> bool {
    let cout = out.len() / hw.max(1);
    if cfg!(not(target_arch = "x86_64"))
        || !available()
        || hw == 0
        || cin == 0
        || x.len() < cin * hw
        || w.len() < cout * cin
        || out.len() != cout * hw
        || bias.is_some_and(|b| b.len() < cout)
    {
        return false;
    }
    let blocks = cout.div_ceil(MR_WIDE);
    // One range of output-channel blocks: every position tile, each block
    // of the range in turn over that tile.
    let run = |b0: usize, o: &mut [f32]| {
        let rows_total = o.len() / hw;
        let blocks: Vec<Block> = (0..rows_total.div_ceil(MR_WIDE))
            .map(|bi| {
                let rows = (rows_total - bi * MR_WIDE).min(MR_WIDE);
                let co0 = (b0 + bi) * MR_WIDE;
                // Missing rows of a partial block repeat row 0 and are not
                // stored.
                let wrows = std::array::from_fn(|r| {
                    let co = co0 + if r < rows { r } else { 0 };
                    w[co * cin..(co + 1) * cin].as_ptr()
                });
                let bias = std::array::from_fn(|r| match bias {
                    Some(b) if r < rows => b[co0 + r],
                    _ => 0.0,
                });
                Block { wrows, bias, rows }
            })
            .collect();
        let out_ptr = o.as_mut_ptr();
        let tile = |bi: usize, blk: &Block, p0: usize| {
            let n = (hw - p0).min(TILE);
            // SAFETY: AVX-512F is present (checked above); the tile reads
            // lanes `p0..p0 + n` of each of the `cin` planes of `x`
            // (n ≤ hw − p0, masked beyond), `cin` values of each weight
            // row, and writes lanes `p0..p0 + n` of `blk.rows` rows of `o`
            // (rows `bi·8 + r < rows_total`).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx::tile(
                    x.as_ptr().add(p0),
                    hw,
                    cin,
                    blk,
                    out_ptr.add(bi * MR_WIDE * hw + p0),
                    hw,
                    n,
                )
            };
        };
        for p0 in (0..hw).step_by(TILE) {
            for (bi, blk) in blocks.iter().enumerate() {
                tile(bi, blk, p0);
            }
        }
    };
    let threads = crate::threads::kernel_threads();
    if threads > 1 && blocks > 1 && cout * cin * hw >= 1 << 20 {
        // Output-channel blocks split evenly over the threads.
        let per = blocks.div_ceil(threads) * MR_WIDE;
        out.par_chunks_mut(per * hw)
            .enumerate()
            .for_each(|(i, o)| run(i * per / MR_WIDE, o));
    } else {
        run(0, out);
    }
    true
}

/// One block of up to [`MR_WIDE`] output channels: weight row pointers
/// (`cin` values each), biases and the number of real rows.
struct Block {
    wrows: [*const f32; MR_WIDE],
    bias: [f32; MR_WIDE],
    rows: usize,
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{Block, MR_WIDE, V_WIDE};
    use crate::kernels::conv_direct::avx::mask;
    use std::arch::x86_64::*;

    /// `out[r·out_stride + i] = bias[r] + Σ_c w[r][c] · x[c·x_stride + i]`
    /// for `r < blk.rows` and `i < n` (≤ 32): bias first, then one FMA
    /// per input channel in order, as [`conv_direct`]'s tiles add them.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `x[c·x_stride + i]` is readable and
    /// `out[r·out_stride + i]` writable for those `c`, `r` and `i`; each
    /// weight row holds `cin` values.
    ///
    /// [`conv_direct`]: crate::kernels::conv_direct
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile(
        x: *const f32,
        x_stride: usize,
        cin: usize,
        blk: &Block,
        out: *mut f32,
        out_stride: usize,
        n: usize,
    ) {
        let (m0, m1) = (mask(n), mask(n.saturating_sub(V_WIDE)));
        let mut c0: [__m512; MR_WIDE] = std::array::from_fn(|r| _mm512_set1_ps(blk.bias[r]));
        let mut c1 = c0;
        for c in 0..cin {
            let xc = x.add(c * x_stride);
            let x0 = _mm512_maskz_loadu_ps(m0, xc);
            let x1 = _mm512_maskz_loadu_ps(m1, xc.add(V_WIDE));
            for r in 0..MR_WIDE {
                let wr = _mm512_set1_ps(*blk.wrows[r].add(c));
                c0[r] = _mm512_fmadd_ps(wr, x0, c0[r]);
                c1[r] = _mm512_fmadd_ps(wr, x1, c1[r]);
            }
        }
        for r in 0..blk.rows {
            let o = out.add(r * out_stride);
            _mm512_mask_storeu_ps(o, m0, c0[r]);
            _mm512_mask_storeu_ps(o.add(V_WIDE), m1, c1[r]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::rand_vals as vals;

    /// f64 reference of the product, bias included.
    fn naive(x: &[f32], w: &[f32], b: &[f32], cin: usize, hw: usize) -> Vec<f32> {
        let cout = b.len();
        let mut out = vec![0f32; cout * hw];
        for co in 0..cout {
            for p in 0..hw {
                let s: f64 = (0..cin)
                    .map(|c| w[co * cin + c] as f64 * x[c * hw + p] as f64)
                    .sum();
                out[co * hw + p] = (s + b[co] as f64) as f32;
            }
        }
        out
    }

    #[test]
    fn matches_an_f64_product_on_partial_tiles_and_blocks() {
        if !available() {
            return;
        }
        // (cin, cout, hw): exact tiles, a tail only, both, partial channel
        // blocks, one channel.
        for (cin, cout, hw) in [
            (16, 16, 64),
            (3, 5, 7),
            (17, 13, 100),
            (1, 9, 33),
            (40, 24, 49),
        ] {
            let x = vals(cin * hw, 1);
            let w = vals(cout * cin, 2);
            let b = vals(cout, 3);
            let mut got = vec![f32::NAN; cout * hw];
            assert!(conv1x1(&x, &w, Some(&b), cin, hw, &mut got));
            let want = naive(&x, &w, &b, cin, hw);
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - e).abs() <= 1e-5 * (1.0 + e.abs()),
                    "{cin}/{cout}/{hw} @{i}: {g} vs {e}"
                );
            }
        }
    }

    #[test]
    fn declines_buffers_that_do_not_match() {
        let x = vals(4 * 10, 1);
        let w = vals(3 * 4, 2);
        let mut out = vec![0f32; 3 * 10];
        assert!(!conv1x1(&x[..30], &w, None, 4, 10, &mut out));
        assert!(!conv1x1(&x, &w[..11], None, 4, 10, &mut out));
        assert!(!conv1x1(&x, &w, Some(&[1.0]), 4, 10, &mut out));
        assert!(out.iter().all(|&v| v == 0.0));
    }
}
