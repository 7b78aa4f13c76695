//! Winograd F(2×2, 3×3) convolution for 3×3, stride-1, undilated windows
//! with many channels (AVX-512F).
//!
//! Each 2×2 block of output positions (a *tile*) is computed from the 4×4
//! input patch under it: `Y = Aᵀ [Σ_cin (G g Gᵀ) ⊙ (Bᵀ d B)] A`, 16
//! products per tile and input channel instead of the 36 of the direct
//! window (2.25× fewer multiply-adds; the transforms are additions).
//!
//! - Weights: `U[ξ][cout][cin]` (`ξ` = one of the 16 transformed
//!   positions), computed once per call.
//! - Input: copied once into a zero-padded buffer whose columns are split
//!   into even and odd ones, so the 4 columns of 16 consecutive tiles of a
//!   tile row are 4 contiguous vector loads; transformed a block of tile
//!   rows at a time into `V[ξ][cin][tile]`, which stays in L2.
//! - Products: for each `ξ`, `M[ξ] = U[ξ] · V[ξ]` is a matrix product over
//!   `cin` computed by the direct convolution's register tile
//!   ([`conv_direct`]'s 8 output channels × 32 tiles).
//! - Output: `Aᵀ M A` plus the bias, 2×2 outputs per tile.
//!
//! The sums differ from the direct window's by float rounding (the
//! transforms reassociate them): relative error ~1e-6 of the output's
//! magnitude, checked against an f64 window sum in the tests. A non-finite
//! input value spreads further than in the direct window: the output
//! transform adds and subtracts infinite products, so the four outputs of
//! each tile whose 4×4 patch holds it may be NaN where the direct window
//! gives ±inf or, for outputs whose window misses it, a finite value.

use crate::kernels::conv_direct::{self, MR_WIDE, NR, V_WIDE};
use crate::kernels::scratch::Scratch;
use crate::kernels::spatial::Geom;
use rayon::prelude::*;

/// Tiles per register tile (two vectors of 16).
const TILES: usize = NR * V_WIDE;
/// Transformed positions per tile (4 × 4).
const XI: usize = 16;
/// Tiles transformed per block (about: whole tile rows are taken): the
/// block's `V` (16 × cin × tiles floats) stays in L2 for cin ≤ 128.
const BLOCK_TILES: usize = 64;
/// Smallest input and output channel counts and tile count worth the
/// transforms (single-thread AVX-512 timings against the direct kernel:
/// 16 → 16 channels on 16×16 and 32×32 maps 0.9×, 32 → 32 on 12×12 0.9×,
/// 32 → 32 on 16×16 1.15×, 64 → 16 on 32×32 1.2×, 64 → 64 on 56×56 1.8×).
const MIN_CIN: usize = 32;
const MIN_COUT: usize = 16;
const MIN_TILES: usize = 64;

/// True when [`conv3x3`] runs this geometry on this CPU: a 3×3 window,
/// stride 1, no dilation, at least [`MIN_CIN`] input and [`MIN_COUT`]
/// output channels per group and a map of at least [`MIN_TILES`] 2×2 tiles.
pub fn applicable(g: &Geom, cin: usize, cout: usize) -> bool {
    let [_, oh, ow] = g.out;
    g.input[0] == 1
        && g.out[0] == 1
        && g.kernel == [1, 3, 3]
        && g.strides == [1; 3]
        && g.dilations == [1; 3]
        && cin >= MIN_CIN
        && cout >= MIN_COUT
        && oh.div_ceil(2) * ow.div_ceil(2) >= MIN_TILES
        && conv_direct::has_avx512()
}

/// `out[co] = bias[co] + Σ w[co] ⋆ x` for one group: `x` holds `cin`
/// planes, `w` is `[cout][cin][3][3]`, `out` holds `cout` planes. The
/// caller checked [`applicable`]. Returns false (output untouched) when
/// the buffers do not match the geometry.
pub fn conv3x3(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    cin: usize,
    out: &mut [f32],
) -> bool {
    let ol = g.out_len();
    let cout = out.len() / ol.max(1);
    if cfg!(not(target_arch = "x86_64"))
        || ol == 0
        || x.len() < cin * g.in_len()
        || w.len() < cout * cin * 9
        || out.len() != cout * ol
    {
        return false;
    }
    let u = cached_weights(&w[..cout * cin * 9], cin, cout);
    let plan = Plan::new(g, cin);
    // Output channels per worker, a multiple of the register tile's 8.
    // Each worker pads and transforms the whole input itself (a fifth of
    // the work at seg_head's sizes, done in parallel) rather than waiting
    // for one shared V that would not stay in L2.
    let workers = crate::threads::kernel_threads().min(cout.div_ceil(MR_WIDE));
    if workers > 1 && cout * cin * 9 * ol >= 1 << 20 {
        let per = cout.div_ceil(workers).div_ceil(MR_WIDE) * MR_WIDE;
        out.par_chunks_mut(per * ol)
            .enumerate()
            .for_each(|(k, o)| plan.run(x, &u, bias, k * per, o));
    } else {
        plan.run(x, &u, bias, 0, out);
    }
    true
}

/// Transformed weights of the last kernels seen by this thread, with the
/// weights they came from: a model runs the same convolutions sample
/// after sample, and transforming costs about a fifth of the products.
/// An entry is used only when its weights are equal, bit for bit, to the
/// call's (the address only picks the candidate).
struct WeightCache {
    entries: Vec<(usize, Vec<f32>, std::sync::Arc<Vec<f32>>)>,
    floats: usize,
}

/// Floats a thread's [`WeightCache`] may hold before it is emptied.
const CACHE_FLOATS: usize = 16 << 20;

thread_local! {
    static CACHE: std::cell::RefCell<WeightCache> =
        const { std::cell::RefCell::new(WeightCache { entries: Vec::new(), floats: 0 }) };
}

/// [`transform_weights`] of `w`, from this thread's cache when it holds
/// the same weights.
fn cached_weights(w: &[f32], cin: usize, cout: usize) -> std::sync::Arc<Vec<f32>> {
    let key = w.as_ptr() as usize;
    let hit = CACHE.with(|c| {
        c.borrow()
            .entries
            .iter()
            .find(|(k, src, _)| *k == key && bytes(src) == bytes(w))
            .map(|e| e.2.clone())
    });
    if let Some(u) = hit {
        return u;
    }
    let u = std::sync::Arc::new(transform_weights(w, cin, cout));
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let size = w.len() + u.len();
        if c.floats + size > CACHE_FLOATS {
            c.entries.clear();
            c.floats = 0;
        }
        if size <= CACHE_FLOATS {
            // An older entry at the same address held other weights.
            if let Some(i) = c.entries.iter().position(|e| e.0 == key) {
                let (_, src, old) = c.entries.swap_remove(i);
                c.floats -= src.len() + old.len();
            }
            c.entries.push((key, w.to_vec(), u.clone()));
            c.floats += size;
        }
    });
    u
}

/// The bytes of `v` (compared with `memcmp`; `-0.0` and `0.0` differ).
fn bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte is a valid u8; the length
    // is the slice's size in bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// `U[ξ][co][ci] = (G g Gᵀ)[ξ]` of every 3×3 kernel `g = w[co][ci]`, with
/// `G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]`: each of the 16
/// positions is a combination of the 9 taps with coefficients
/// `G[i][a]·G[j][b]` (exact powers of two). Kernels are taken 16 at a
/// time, so `U` is written a run of 16 per position instead of 16
/// scattered floats per kernel.
fn transform_weights(w: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    const G: [[f32; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let plane = cout * cin;
    let mut u = vec![0f32; XI * plane];
    for (blk, ws) in w[..9 * plane].chunks(9 * V_WIDE).enumerate() {
        // taps[tap][k] of the block's kernels.
        let mut taps = [[0f32; V_WIDE]; 9];
        for (k, g) in ws.chunks_exact(9).enumerate() {
            for (tap, &v) in g.iter().enumerate() {
                taps[tap][k] = v;
            }
        }
        let n = ws.len() / 9;
        for xi in 0..XI {
            let (i, j) = (xi / 4, xi % 4);
            let mut acc = [0f32; V_WIDE];
            for a in 0..3 {
                for b in 0..3 {
                    let c = G[i][a] * G[j][b];
                    if c != 0.0 {
                        for (d, &v) in acc.iter_mut().zip(&taps[a * 3 + b]) {
                            *d += c * v;
                        }
                    }
                }
            }
            u[xi * plane + blk * V_WIDE..][..n].copy_from_slice(&acc[..n]);
        }
    }
    u
}

/// The tiling of one call: padded input layout and tile blocks.
struct Plan {
    cin: usize,
    /// Output rows and columns.
    oh: usize,
    ow: usize,
    /// Tile rows and columns (`⌈oh / 2⌉`, `⌈ow / 2⌉`).
    th: usize,
    tw: usize,
    /// Input rows and columns, top and left pads.
    ih: usize,
    iw: usize,
    pt: usize,
    pl: usize,
    /// Padded rows (`2·th + 2`) and floats per phase row (`tw + 1`).
    hp: usize,
    half: usize,
    /// Tile rows per block, and the block's tile count rounded up to
    /// [`TILES`] (the row length of `V`).
    rows_per_block: usize,
    block_len: usize,
    /// Floats between two positions ξ of `V`: `cin·block_len` plus 16, so
    /// the 16 stores of one tile's transform do not fall in one cache set.
    xi_stride: usize,
    /// Offset of each input channel's row in a position ξ of `V`
    /// (`c·block_len`), as the product tile reads them.
    offs: Vec<usize>,
}

impl Plan {
    fn new(g: &Geom, cin: usize) -> Self {
        let [_, oh, ow] = g.out;
        let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
        let rows_per_block = (BLOCK_TILES / tw).clamp(1, th);
        let block_len = (rows_per_block * tw).div_ceil(TILES) * TILES;
        Plan {
            cin,
            oh,
            ow,
            th,
            tw,
            ih: g.input[1],
            iw: g.input[2],
            pt: g.pad[1],
            pl: g.pad[2],
            hp: 2 * th + 2,
            half: tw + 1,
            rows_per_block,
            block_len,
            xi_stride: cin * block_len + V_WIDE,
            offs: (0..cin).map(|c| c * block_len).collect(),
        }
    }

    /// Output channels `co0..co0 + planes` (`out` holds their planes).
    fn run(&self, x: &[f32], u: &[f32], bias: Option<&[f32]>, co0: usize, out: &mut [f32]) {
        let padded = self.pad_input(x);
        let mut v = Scratch::take(XI * self.xi_stride);
        let mut ty0 = 0;
        while ty0 < self.th {
            let rows = self.rows_per_block.min(self.th - ty0);
            self.transform_input(&padded, ty0, rows, &mut v);
            self.products(&v, u, bias, co0, ty0, rows * self.tw, out);
            ty0 += rows;
        }
    }

    /// The zero-padded, even/odd column split copy of the input: padded
    /// row `r` of channel `c` starts at `(c·hp + r)·2·half`, even columns
    /// first. Input `(i, j)` is padded `(i + pt, j + pl)`.
    fn pad_input(&self, x: &[f32]) -> Scratch {
        let row = 2 * self.half;
        // Rows are written in order; the split of a row writes up to 16
        // floats past its end (rewritten by the next row, or slack).
        let mut p = Scratch::take(self.cin * self.hp * row + 2 * V_WIDE);
        let il = self.ih * self.iw;
        for c in 0..self.cin {
            for r in 0..self.hp {
                let at = (c * self.hp + r) * row;
                let Some(i) = r.checked_sub(self.pt).filter(|&i| i < self.ih) else {
                    p[at..at + row].fill(0.0);
                    continue;
                };
                let src = &x[c * il + i * self.iw..][..self.iw];
                // SAFETY: AVX-512F (checked by `applicable`); the writes
                // end at most at `at + half + ⌈row / 32⌉·16 <= at + row + 16`,
                // inside `p`.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    avx::split_row(src, self.pl, row, &mut p[at..], self.half);
                }
            }
        }
        p
    }

    /// `V[ξ][c][t] = (Bᵀ d B)[ξ]` for the tiles of tile rows
    /// `ty0..ty0 + rows` (`t` counts from the block's first tile), with
    /// `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`.
    fn transform_input(&self, p: &[f32], ty0: usize, rows: usize, v: &mut [f32]) {
        let stride = self.xi_stride;
        for c in 0..self.cin {
            for ty in ty0..ty0 + rows {
                let base = (c * self.hp + 2 * ty) * 2 * self.half;
                let mut tx0 = 0;
                while tx0 < self.tw {
                    let n = V_WIDE.min(self.tw - tx0);
                    let at = c * self.block_len + (ty - ty0) * self.tw + tx0;
                    // SAFETY: AVX-512F (checked by `applicable`); reads of
                    // 16 floats from `base + 3 rows + half + tx0 + 1`
                    // stay inside `p` (2 × 16 floats of slack after the
                    // last row); the masked stores write `n` floats at
                    // `ξ·stride + at`, below `16·stride`.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        avx::input_tile_row(
                            p,
                            base,
                            2 * self.half,
                            self.half,
                            tx0,
                            v,
                            at,
                            stride,
                            n,
                        );
                    }
                    tx0 += n;
                }
            }
        }
    }

    /// The products and the output transform of one block of `tiles`
    /// tiles starting at tile row `ty0`, for the output channels of `out`.
    #[allow(clippy::too_many_arguments)]
    fn products(
        &self,
        v: &[f32],
        u: &[f32],
        bias: Option<&[f32]>,
        co0: usize,
        ty0: usize,
        tiles: usize,
        out: &mut [f32],
    ) {
        let ol = self.oh * self.ow;
        let planes = out.len() / ol;
        let cout = u.len() / (XI * self.cin);
        let mut m = [[[0f32; V_WIDE]; MR_WIDE * NR]; XI];
        let zero = [0f32; MR_WIDE];
        for b0 in (0..planes).step_by(MR_WIDE) {
            let rows = MR_WIDE.min(planes - b0);
            let mut bs = [0f32; MR_WIDE];
            for (r, d) in bs.iter_mut().enumerate().take(rows) {
                *d = bias
                    .and_then(|bb| bb.get(co0 + b0 + r))
                    .copied()
                    .unwrap_or(0.0);
            }
            for t0 in (0..tiles).step_by(TILES) {
                for (xi, mx) in m.iter_mut().enumerate() {
                    // Rows of U[ξ] for this block; missing rows of a
                    // partial block repeat the first and are not stored.
                    let wrows: [&[f32]; MR_WIDE] = std::array::from_fn(|r| {
                        let co = co0 + b0 + if r < rows { r } else { 0 };
                        &u[(xi * cout + co) * self.cin..][..self.cin]
                    });
                    let at = xi * self.xi_stride + t0;
                    let base = [at, at + V_WIDE, at, at + V_WIDE];
                    // SAFETY: AVX-512F (checked by `applicable`); reads of
                    // 16 floats at `offs[c] + at (+16)` end at most at
                    // `15·xi_stride + cin·block_len < v.len()`; every weight row holds
                    // `cin = self.offs.len()` values.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        conv_direct::avx::tile16::<false>(v, &self.offs, &wrows, &zero, &base, mx);
                    }
                }
                for r in 0..rows {
                    let plane = &mut out[(b0 + r) * ol..(b0 + r + 1) * ol];
                    for n in 0..NR {
                        let first = t0 + n * V_WIDE;
                        if first >= tiles {
                            break;
                        }
                        let lanes = V_WIDE.min(tiles - first);
                        let mut y = [[0f32; 2 * V_WIDE]; 4];
                        // SAFETY: AVX-512F (checked by `applicable`).
                        #[cfg(target_arch = "x86_64")]
                        unsafe {
                            avx::output_tiles(&m, r * NR + n, bs[r], &mut y);
                        }
                        self.store(&y, ty0 * self.tw + first, lanes, plane);
                    }
                }
            }
        }
    }

    /// Writes the 2×2 outputs `y[2i + j]` of tiles `t..t + lanes` (tile
    /// `t` is at row `t / tw`, column `t % tw`) into one output plane, a
    /// run of tiles of one tile row at a time, dropping the positions past
    /// an odd edge.
    fn store(&self, y: &[[f32; 2 * V_WIDE]; 4], t: usize, lanes: usize, plane: &mut [f32]) {
        let mut k = 0;
        while k < lanes {
            let (ty, tx) = ((t + k) / self.tw, (t + k) % self.tw);
            let run = (self.tw - tx).min(lanes - k);
            let (oy, ox) = (2 * ty, 2 * tx);
            let cols = (2 * run).min(self.ow - ox);
            for i in 0..2.min(self.oh - oy) {
                let dst = &mut plane[(oy + i) * self.ow + ox..][..cols];
                // SAFETY: AVX-512F (checked by `applicable`); `k < 16`,
                // `cols <= 32`.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    avx::interleave(&y[2 * i], &y[2 * i + 1], k, dst);
                }
            }
            k += run;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{MR_WIDE, NR, V_WIDE, XI};
    use std::arch::x86_64::*;

    /// Input transform of `n ≤ 16` consecutive tiles of one tile row:
    /// tile `k` reads padded rows `base + i·row` (i < 4), columns
    /// `2(tx0 + k) + j` (j < 4), i.e. even/odd slots `tx0 + k` and
    /// `tx0 + k + 1`. Writes `v[ξ·stride + at + k]`.
    ///
    /// # Safety
    /// AVX-512F; `base + 3·row + half + tx0 + 17 <= p.len()`;
    /// `15·stride + at + n <= v.len()`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn input_tile_row(
        p: &[f32],
        base: usize,
        row: usize,
        half: usize,
        tx0: usize,
        v: &mut [f32],
        at: usize,
        stride: usize,
        n: usize,
    ) {
        let pp = p.as_ptr();
        // Row transform d·B of the 4 patch rows: columns d0..d3 are even
        // slot k, odd slot k, even slot k + 1, odd slot k + 1.
        let mut t = [[_mm512_setzero_ps(); 4]; 4];
        for (i, ti) in t.iter_mut().enumerate() {
            let r = pp.add(base + i * row + tx0);
            let d0 = _mm512_loadu_ps(r);
            let d1 = _mm512_loadu_ps(r.add(half));
            let d2 = _mm512_loadu_ps(r.add(1));
            let d3 = _mm512_loadu_ps(r.add(half + 1));
            ti[0] = _mm512_sub_ps(d0, d2);
            ti[1] = _mm512_add_ps(d1, d2);
            ti[2] = _mm512_sub_ps(d2, d1);
            ti[3] = _mm512_sub_ps(d1, d3);
        }
        let mask: __mmask16 = if n >= V_WIDE { !0 } else { (1u16 << n) - 1 };
        let vp = v.as_mut_ptr().add(at);
        let [t0, t1, t2, t3] = t;
        for j in 0..4 {
            let col = [
                _mm512_sub_ps(t0[j], t2[j]),
                _mm512_add_ps(t1[j], t2[j]),
                _mm512_sub_ps(t2[j], t1[j]),
                _mm512_sub_ps(t1[j], t3[j]),
            ];
            for (i, c) in col.into_iter().enumerate() {
                let to = vp.add((i * 4 + j) * stride);
                // Plain stores for whole vectors (masked ones are slower).
                if n >= V_WIDE {
                    _mm512_storeu_ps(to, c);
                } else {
                    _mm512_mask_storeu_ps(to, mask, c);
                }
            }
        }
    }

    /// Splits the padded row of `src` (`pl` zeros, `src`, zeros up to
    /// `row` floats) into its even columns at `dst[0..]` and odd ones at
    /// `dst[half..]`, 32 padded columns at a time (masked loads read the
    /// input, the masked-off lanes are the zeros).
    ///
    /// # Safety
    /// AVX-512F; `half + ⌈row / 32⌉·16 <= dst.len()`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn split_row(src: &[f32], pl: usize, row: usize, dst: &mut [f32], half: usize) {
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let out = dst.as_mut_ptr();
        let n = src.len() as isize;
        // Lanes `q..q + 16` of the padded row read `src[q - pl ..]`; lane
        // `l` is loaded when `0 <= q + l - pl < n`.
        let load = |q: usize| {
            let first = q as isize - pl as isize;
            let lo = (-first).clamp(0, 16) as u32;
            let hi = (n - first).clamp(0, 16) as u32;
            if lo == 0 && hi == 16 {
                // Inside the row: a plain load (masked ones are slower).
                return _mm512_loadu_ps(src.as_ptr().offset(first));
            }
            let mask: __mmask16 = if hi <= lo {
                0
            } else {
                (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16
            };
            // SAFETY (of the masked load): only lanes inside `src` are read.
            _mm512_maskz_loadu_ps(mask, src.as_ptr().wrapping_offset(first))
        };
        // Each 32 columns are loaded once for both halves. Only the last
        // even chunk runs past the even half, into the first odd chunk's
        // 16 floats (`16·⌈row / 32⌉ < half + 16`): that one is stored last.
        let mut odd_first = _mm512_setzero_ps();
        for ch in 0..row.div_ceil(32) {
            let (lo, hi) = (load(32 * ch), load(32 * ch + 16));
            _mm512_storeu_ps(out.add(16 * ch), _mm512_permutex2var_ps(lo, even, hi));
            let odds = _mm512_permutex2var_ps(lo, odd, hi);
            if ch == 0 {
                odd_first = odds;
            } else {
                _mm512_storeu_ps(out.add(half + 16 * ch), odds);
            }
        }
        _mm512_storeu_ps(out.add(half), odd_first);
    }

    /// `dst[2c] = a[k + c]`, `dst[2c + 1] = b[k + c]` for `2c + 1 < dst.len()`
    /// (and `dst[2c] = a[k + c]` for an odd last one).
    ///
    /// # Safety
    /// AVX-512F; `k <= 16`, `dst.len() <= 32`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn interleave(
        a: &[f32; 2 * V_WIDE],
        b: &[f32; 2 * V_WIDE],
        k: usize,
        dst: &mut [f32],
    ) {
        let lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let hi_idx =
            _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        let (x, y) = (
            _mm512_loadu_ps(a.as_ptr().add(k)),
            _mm512_loadu_ps(b.as_ptr().add(k)),
        );
        let n = dst.len();
        let mask = |m: usize| -> __mmask16 {
            if m >= 16 {
                !0
            } else {
                (1u16 << m) - 1
            }
        };
        let out = dst.as_mut_ptr();
        _mm512_mask_storeu_ps(out, mask(n), _mm512_permutex2var_ps(x, lo_idx, y));
        if n > 16 {
            _mm512_mask_storeu_ps(
                out.add(16),
                mask(n - 16),
                _mm512_permutex2var_ps(x, hi_idx, y),
            );
        }
    }

    /// Output transform `Aᵀ m A + bias` of 16 tiles, `Aᵀ = [[1, 1, 1, 0],
    /// [0, 1, −1, −1]]`: `m[ξ][slot]` holds the 16 tiles' products at
    /// position ξ; `y[2i + j]` gets output `(i, j)` of each tile.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn output_tiles(
        m: &[[[f32; V_WIDE]; MR_WIDE * NR]; XI],
        slot: usize,
        bias: f32,
        y: &mut [[f32; 2 * V_WIDE]; 4],
    ) {
        let at = |xi: usize| _mm512_loadu_ps(m[xi][slot].as_ptr());
        // Column sums per row i of the 4×4: s0 = m0 + m1 + m2, s1 = m1 − m2 − m3.
        let mut s = [[_mm512_setzero_ps(); 2]; 4];
        for (i, si) in s.iter_mut().enumerate() {
            let (a, b, c, d) = (at(4 * i), at(4 * i + 1), at(4 * i + 2), at(4 * i + 3));
            si[0] = _mm512_add_ps(_mm512_add_ps(a, b), c);
            si[1] = _mm512_sub_ps(_mm512_sub_ps(b, c), d);
        }
        let b = _mm512_set1_ps(bias);
        for j in 0..2 {
            let r0 = _mm512_add_ps(_mm512_add_ps(s[0][j], s[1][j]), s[2][j]);
            let r1 = _mm512_sub_ps(_mm512_sub_ps(s[1][j], s[2][j]), s[3][j]);
            _mm512_storeu_ps(y[j].as_mut_ptr(), _mm512_add_ps(r0, b));
            _mm512_storeu_ps(y[2 + j].as_mut_ptr(), _mm512_add_ps(r1, b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::rand_vals as vals;

    fn geom(h: usize, w: usize, pads: [usize; 4]) -> Geom {
        let [pt, pl, pb, pr] = pads;
        Geom {
            input: [1, h, w],
            out: [1, h + pt + pb - 2, w + pl + pr - 2],
            kernel: [1, 3, 3],
            strides: [1; 3],
            dilations: [1; 3],
            pad: [0, pt, pl],
            pad_end: [0, pb, pr],
        }
    }

    /// The window sum in f64, the reference for both kernels.
    fn naive(g: &Geom, x: &[f32], w: &[f32], b: &[f32], cin: usize) -> Vec<f64> {
        let [_, ih, iw] = g.input;
        let [_, oh, ow] = g.out;
        let cout = b.len();
        let mut o = vec![0f64; cout * oh * ow];
        for co in 0..cout {
            for r in 0..oh {
                for c in 0..ow {
                    let mut s = b[co] as f64;
                    for ci in 0..cin {
                        for i in 0..3 {
                            for j in 0..3 {
                                let (y, xx) = (
                                    (r + i) as isize - g.pad[1] as isize,
                                    (c + j) as isize - g.pad[2] as isize,
                                );
                                if y >= 0 && xx >= 0 && (y as usize) < ih && (xx as usize) < iw {
                                    s += w[((co * cin + ci) * 3 + i) * 3 + j] as f64
                                        * x[(ci * ih + y as usize) * iw + xx as usize] as f64;
                                }
                            }
                        }
                    }
                    o[(co * oh + r) * ow + c] = s;
                }
            }
        }
        o
    }

    #[test]
    fn split_row_puts_even_padded_columns_first_then_odd_ones() {
        if !conv_direct::has_avx512() {
            return;
        }
        let cases: [(usize, usize, usize); 5] = [
            (5, 1, 4),
            (32, 1, 17),
            (31, 0, 16),
            (40, 2, 22),
            (64, 1, 33),
        ];
        for (iw, pl, half) in cases {
            let src: Vec<f32> = (0..iw).map(|k| k as f32 + 1.0).collect();
            let row = 2 * half;
            let padded: Vec<f32> = (0..row)
                .map(|q| {
                    q.checked_sub(pl)
                        .and_then(|i| src.get(i))
                        .copied()
                        .unwrap_or(0.0)
                })
                .collect();
            let mut dst = vec![f32::NAN; row + 32];
            // SAFETY: AVX-512F checked; `dst` has 32 floats of slack.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx::split_row(&src, pl, row, &mut dst, half)
            };
            let want: Vec<f32> = padded
                .iter()
                .step_by(2)
                .chain(padded.iter().skip(1).step_by(2))
                .copied()
                .collect();
            assert_eq!(&dst[..row], &want[..], "iw {iw}, pl {pl}, half {half}");
        }
    }

    #[test]
    fn matches_the_window_sum_on_odd_and_even_maps() {
        if !conv_direct::has_avx512() {
            return;
        }
        for (h, w, pads, cin, cout) in [
            (32, 32, [1, 1, 1, 1], 64, 16),
            (16, 16, [1, 1, 1, 1], 64, 32),
            (15, 21, [1, 1, 1, 1], 33, 19),
            (13, 40, [0, 2, 1, 0], 32, 16),
            (9, 70, [2, 0, 0, 1], 40, 24),
        ] {
            let g = geom(h, w, pads);
            let x = vals(cin * h * w, 1);
            let wt = vals(cout * cin * 9, 2);
            let b = vals(cout, 3);
            assert!(applicable(&g, cin, cout), "{h}x{w} {pads:?}");
            let mut out = vec![f32::NAN; cout * g.out_len()];
            assert!(conv3x3(&g, &x, &wt, Some(&b), cin, &mut out));
            let want = naive(&g, &x, &wt, &b, cin);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            for (k, (&o, &e)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (o as f64 - e).abs() <= 1e-5 * scale,
                    "{h}x{w} {pads:?} at {k}: {o} vs {e}"
                );
            }
        }
    }

    #[test]
    fn weights_changed_in_place_are_transformed_again() {
        if !conv_direct::has_avx512() {
            return;
        }
        let g = geom(16, 16, [1, 1, 1, 1]);
        let (cin, cout) = (32, 16);
        let x = vals(cin * 256, 4);
        let mut wt = vals(cout * cin * 9, 5);
        let mut before = vec![0f32; cout * g.out_len()];
        assert!(conv3x3(&g, &x, &wt, None, cin, &mut before));
        // Same buffer, same address, one weight changed (kernel 0, tap 4).
        wt[4] += 1.0;
        let mut after = vec![0f32; cout * g.out_len()];
        assert!(conv3x3(&g, &x, &wt, None, cin, &mut after));
        let want = naive(&g, &x, &wt, &vec![0.0; cout], cin);
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        assert!(after
            .iter()
            .zip(&want)
            .all(|(&o, &e)| (o as f64 - e).abs() <= 1e-5 * scale));
        assert!(before[..256] != after[..256]);
    }

    #[test]
    fn small_channel_counts_and_strides_are_left_to_the_direct_kernel() {
        let g = geom(32, 32, [1, 1, 1, 1]);
        assert!(!applicable(&g, 3, 16));
        assert!(!applicable(&g, 16, 16));
        assert!(!applicable(&g, 64, 8));
        let mut s = g;
        s.strides = [1, 2, 2];
        assert!(!applicable(&s, 64, 16));
        assert!(!applicable(&geom(6, 6, [1, 1, 1, 1]), 64, 16));
    }
}
