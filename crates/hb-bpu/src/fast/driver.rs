//! The tiled GEMM driver: packed activation rows × packed weight panels,
//! K-blocks, epilogue, rayon split.

use super::kernels::{self, Tile32, Tile64, MR_MAX};
use super::pack::{Layout, PackedWeights, NR};
use super::{ExecOptions, FastOut, Isa};
use crate::error::Result;
use crate::shape_err;
use rayon::prelude::*;

/// Packed activation rows: `x + 128` bytes (`I8x4`) or i16 (`I16x2`).
#[derive(Clone, Copy)]
pub(crate) enum AData<'a> {
    U8(&'a [u8]),
    I16(&'a [i16]),
}

impl AData<'_> {
    fn len(&self) -> usize {
        match self {
            AData::U8(s) => s.len(),
            AData::I16(s) => s.len(),
        }
    }
}

/// One independent product: `rows` activation rows starting at element
/// `a_off` of the packed activations, times weight group `group`, written
/// from element `out_off` of the output.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Job {
    pub a_off: usize,
    pub group: usize,
    pub out_off: usize,
}

/// A whole call: the same weights and row count for every job.
pub(crate) struct Problem<'a> {
    pub pw: &'a PackedWeights,
    pub a: AData<'a>,
    /// Elements between consecutive activation rows.
    pub lda: usize,
    /// Rows per job.
    pub rows: usize,
    /// Split int16 activations: offset of the `x & 255` copy of the rows
    /// (the rows themselves hold `x >> 8`); 0 otherwise.
    pub lo_off: usize,
    pub jobs: &'a [Job],
    /// Implicit-GEMM conv: the offset of every row (output pixel) from its
    /// job's `a_off` (instead of `row · lda`) …
    pub rows_at: Option<&'a [usize]>,
    /// … and of every K-group from its row (instead of `q · group`).
    /// Both or neither; AVX-512 VNNI only.
    pub koff: Option<&'a [u32]>,
    /// The activation-offset correction per block and padded column
    /// (`pw.corr`, or one made for this call's offset).
    pub corr: &'a [i32],
    /// Output strides of a row and a column (elements).
    pub rs: usize,
    pub cs: usize,
    /// Combined saturation / fused clamp bounds.
    pub lo: i64,
    pub hi: i64,
}

/// The output pointer, shared by the tiles (which write disjoint elements).
struct OutPtr<O>(*mut O);
// SAFETY: tiles write pairwise disjoint elements of one live `&mut [O]`
// (see `run`), so sharing the pointer between threads is sound.
unsafe impl<O: Send> Send for OutPtr<O> {}
// SAFETY: as above.
unsafe impl<O: Send> Sync for OutPtr<O> {}

fn mr_of(isa: Isa) -> usize {
    match isa {
        Isa::Scalar => 4,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => kernels::x86::MR_AVX2,
        _ => MR_MAX,
    }
}

/// Runs the product, writing every output element of every job into `out`.
pub(crate) fn run<O: FastOut>(p: &Problem<'_>, out: &mut [O], exec: &ExecOptions) -> Result<()> {
    let pw = p.pw;
    if p.rows == 0 || pw.n == 0 || p.jobs.is_empty() {
        return Ok(());
    }
    // Bounds of every read and write, checked once so the tiles can use raw
    // pointers.
    let a_len = p.a.len();
    // Offset of the last row's start, and the end of a row's reads.
    let (last_row, row_reads) = match (p.rows_at, p.koff) {
        (None, None) => {
            if p.lda < pw.kp {
                return Err(shape_err!("internal: lda {} < kp {}", p.lda, pw.kp));
            }
            ((p.rows - 1) * p.lda, pw.kp)
        }
        (Some(ra), Some(ko)) => {
            let kq = pw.kp / pw.layout.group();
            if pw.isa != Isa::Avx512Vnni || ra.len() < p.rows || ko.len() < kq || p.lo_off != 0 {
                return Err(shape_err!("internal: bad implicit-GEMM tables"));
            }
            let last = ra[..p.rows].iter().copied().max().unwrap_or(0);
            let reads = ko[..kq].iter().map(|&o| o as usize).max().unwrap_or(0) + pw.layout.group();
            (last, reads)
        }
        _ => return Err(shape_err!("internal: implicit-GEMM tables come in pairs")),
    };
    let last_out = (p.rows - 1) * p.rs + (pw.n - 1) * p.cs;
    for j in p.jobs {
        let a_end = j.a_off + last_row + row_reads + p.lo_off;
        if j.group >= pw.groups || a_end > a_len || j.out_off + last_out >= out.len() {
            return Err(shape_err!("internal: job {j:?} out of bounds"));
        }
    }
    if p.corr.len() != pw.corr.len() {
        return Err(shape_err!("internal: correction table size"));
    }
    match (pw.layout, p.a) {
        (Layout::I8x4, AData::U8(_)) | (Layout::I16x2, AData::I16(_)) => {}
        _ => return Err(shape_err!("internal: activation packing mismatch")),
    }
    if let Some((rows, _)) = &pw.addend {
        if *rows != p.rows {
            return Err(shape_err!("gemm C has {rows} rows, A has {}", p.rows));
        }
    }

    let mr = mr_of(pw.isa);
    let rblocks = p.rows.div_ceil(mr);
    let per_job = pw.panels * rblocks;
    let ntiles = p.jobs.len() * per_job;
    let outp = OutPtr(out.as_mut_ptr());
    let do_tile = |t: usize, bufs: &mut TileBufs| {
        let (j, rest) = (t / per_job, t % per_job);
        let (panel, rb) = (rest / rblocks, rest % rblocks);
        // SAFETY: bounds checked above; tiles are disjoint.
        unsafe { tile(p, &p.jobs[j], panel, rb, mr, &outp, bufs) };
    };
    let macs = (p.jobs.len() as u64)
        .saturating_mul(p.rows as u64)
        .saturating_mul(pw.n as u64)
        .saturating_mul(pw.k.max(1) as u64);
    let threads = rayon::current_num_threads();
    if threads > 1 && ntiles > 1 && macs >= exec.min_parallel_macs {
        let chunks = (threads * 4).min(ntiles);
        (0..chunks).into_par_iter().for_each(|c| {
            let (t0, t1) = (c * ntiles / chunks, (c + 1) * ntiles / chunks);
            let mut bufs = TileBufs::new();
            (t0..t1).for_each(|t| do_tile(t, &mut bufs));
        });
    } else {
        let mut bufs = TileBufs::new();
        (0..ntiles).for_each(|t| do_tile(t, &mut bufs));
    }
    Ok(())
}

/// The accumulator tiles, zeroed once per run of tiles rather than per
/// tile (3 KB of stores per tile cost as much as a small conv's epilogue).
struct TileBufs {
    t32: Tile32,
    t64: Tile64,
}

impl TileBufs {
    fn new() -> Self {
        TileBufs {
            t32: [0; MR_MAX * NR],
            t64: [0; MR_MAX * NR],
        }
    }
}

/// One `mr × NR` tile.
///
/// # Safety
/// `run`'s bounds checks passed; no other tile writes these elements.
unsafe fn tile<O: FastOut>(
    p: &Problem<'_>,
    job: &Job,
    panel: usize,
    rb: usize,
    mr: usize,
    out: &OutPtr<O>,
    bufs: &mut TileBufs,
) {
    let pw = p.pw;
    let r0 = rb * mr;
    let nrows = mr.min(p.rows - r0);
    let ncols = NR.min(pw.n - panel * NR);
    let col0 = (job.group * pw.panels + panel) * NR;
    let woff = pw.panel_offset(job.group, panel);
    // Row pointers; rows past the end repeat the last valid row.
    let row_off = |r: usize| {
        let row = r0 + r.min(nrows - 1);
        job.a_off + p.rows_at.map_or(row * p.lda, |ra| ra[row])
    };
    let koff = p.koff.map_or(std::ptr::null(), |k| k.as_ptr());
    // A panel with ≤ 16 live columns computes only its first half.
    let half = ncols <= 16;
    // The AVX-512 VNNI kernels store all `MR_MAX × NR` sums of the tile;
    // the others may leave rows or columns the epilogue does not read, but
    // start from zeros as they always did.
    let t32 = &mut bufs.t32;
    if pw.isa != Isa::Avx512Vnni {
        t32.fill(0);
    }
    let single = pw.blocks.len() == 1 && !pw.split;
    // The i64 sums across blocks, only when there are several.
    let mut t64 = (!single).then(|| {
        bufs.t64.fill(0);
        &mut bufs.t64
    });

    match p.a {
        AData::U8(a) => {
            let rows: [*const u8; MR_MAX] = std::array::from_fn(|r| a[row_off(r)..].as_ptr());
            let w = pw.w8[woff..].as_ptr();
            for (bi, &(q0, q1)) in pw.blocks.iter().enumerate() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `I8x4` is only packed for AVX-512 VNNI, which was
                // checked available; rows and panel hold `kq` groups.
                unsafe {
                    match (p.koff.is_some(), half) {
                        (true, true) => {
                            kernels::x86::vnni_i8x4::<true, true>(&rows, w, q0, q1, koff, t32)
                        }
                        (true, false) => {
                            kernels::x86::vnni_i8x4::<true, false>(&rows, w, q0, q1, koff, t32)
                        }
                        (false, true) => {
                            kernels::x86::vnni_i8x4::<false, true>(&rows, w, q0, q1, koff, t32)
                        }
                        (false, false) => {
                            kernels::x86::vnni_i8x4::<false, false>(&rows, w, q0, q1, koff, t32)
                        }
                    }
                };
                if let Some(t64) = t64.as_mut() {
                    widen(t64, t32, &p.corr[bi * pw.bias.len() + col0..], nrows, 0);
                }
            }
        }
        AData::I16(a) => {
            let rows: [*const i16; MR_MAX] = std::array::from_fn(|r| a[row_off(r)..].as_ptr());
            let w = pw.w16[woff..].as_ptr();
            let lo_rows: [*const i16; MR_MAX] =
                std::array::from_fn(|r| a[row_off(r) + p.lo_off..].as_ptr());
            let parts: &[(&[*const i16; MR_MAX], u32)] = if pw.split {
                &[(&rows, 8), (&lo_rows, 0)]
            } else {
                &[(&rows, 0)]
            };
            for (bi, &(q0, q1)) in pw.blocks.iter().enumerate() {
                for &(rp, sh) in parts {
                    match pw.isa {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: AVX2 checked available at packing; rows
                        // and panel hold `kq` groups.
                        Isa::Avx2 => unsafe { kernels::x86::avx2_i16x2(rp, w, q0, q1, t32) },
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: AVX-512 VNNI checked available at packing.
                        Isa::Avx512Vnni => unsafe {
                            match (p.koff.is_some(), half) {
                                (true, true) => {
                                    kernels::x86::vnni_i16x2::<true, true>(rp, w, q0, q1, koff, t32)
                                }
                                (true, false) => kernels::x86::vnni_i16x2::<true, false>(
                                    rp, w, q0, q1, koff, t32,
                                ),
                                (false, true) => kernels::x86::vnni_i16x2::<false, true>(
                                    rp, w, q0, q1, koff, t32,
                                ),
                                (false, false) => kernels::x86::vnni_i16x2::<false, false>(
                                    rp, w, q0, q1, koff, t32,
                                ),
                            }
                        },
                        // SAFETY: rows and panel hold `kq` groups.
                        _ => unsafe { kernels::scalar_i16x2(rp, nrows, w, q0, q1, t32) },
                    }
                    if let Some(t64) = t64.as_mut() {
                        widen(t64, t32, &p.corr[bi * pw.bias.len() + col0..], nrows, sh);
                    }
                }
            }
        }
    }

    let base = job.out_off + r0 * p.rs;
    #[cfg(target_arch = "x86_64")]
    if single && pw.isa == Isa::Avx512Vnni && pw.panel_fast[col0 / NR] && pw.addend.is_none() {
        let eo = &pw.even_odd;
        let e = kernels::x86::EpiPanel {
            corr: &p.corr[col0..col0 + NR],
            mult: &eo.mult[col0..col0 + NR],
            add: &eo.add[col0..col0 + NR],
            shift: &eo.shift[col0..col0 + NR],
            then: pw.then.as_ref().map(|t| {
                let [mult, rnd, shift] = &t.even_odd;
                kernels::x86::EpiThen {
                    mult: &mult[col0..col0 + NR],
                    rnd: &rnd[col0..col0 + NR],
                    shift: &shift[col0..col0 + NR],
                    lo: t.lo,
                    hi: t.hi,
                }
            }),
        };
        // SAFETY: AVX-512 checked at packing; the tile's outputs are inside
        // the output (bounds checked in `run`) and belong to this tile.
        unsafe {
            let dst = out.0.add(base + panel * NR * p.cs);
            let (lo, hi, rs, cs) = (p.lo, p.hi, p.rs, p.cs);
            if e.then.is_some() {
                kernels::x86::epilogue_tile::<O, true>(t32, &e, nrows, ncols, lo, hi, dst, rs, cs)
            } else {
                kernels::x86::epilogue_tile::<O, false>(t32, &e, nrows, ncols, lo, hi, dst, rs, cs)
            }
        };
        return;
    }
    let colg = panel * NR;
    for c in 0..ncols {
        let e = ColEpi::of(pw, col0 + c);
        let corr = p.corr[col0 + c];
        for r in 0..nrows {
            let mut acc = match &t64 {
                None => i64::from(t32[r * NR + c].wrapping_sub(corr)),
                Some(t64) => t64[r * NR + c],
            };
            if let Some((_, a)) = &pw.addend {
                acc = acc.wrapping_add(a[(r0 + r) * pw.n + colg + c]);
            }
            let y = e.apply(acc, p.lo, p.hi);
            // SAFETY: inside the output (bounds checked in `run`) and this
            // tile.
            unsafe {
                out.0
                    .add(base + r * p.rs + (colg + c) * p.cs)
                    .write(O::from_i32_in_range(y as i32))
            };
        }
    }
}

/// `t64 += (t32 − corr) << sh` (block sums, exact in i32) for `nrows`
/// rows.
fn widen(t64: &mut Tile64, t32: &Tile32, corr: &[i32], nrows: usize, sh: u32) {
    for r in 0..nrows {
        for c in 0..NR {
            t64[r * NR + c] += i64::from(t32[r * NR + c].wrapping_sub(corr[c])) << sh;
        }
    }
}

/// The epilogue constants of one column.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ColEpi {
    bias: i64,
    mult: i64,
    rnd: i64,
    shift: i64,
    fast: bool,
    rq: crate::fixed_point::Requant,
    /// The folded second requantisation: multiplier, rounding, shift, lo,
    /// hi.
    then: Option<(i64, i64, i64, i64, i64)>,
}

impl ColEpi {
    /// Column `col` (padded index) of `pw`.
    #[inline(always)]
    pub(crate) fn of(pw: &PackedWeights, col: usize) -> ColEpi {
        ColEpi {
            bias: pw.bias[col],
            mult: pw.mult[col],
            rnd: pw.rnd[col],
            shift: pw.shift[col],
            fast: pw.fast_col[col],
            rq: pw.requant[col],
            then: pw
                .then
                .as_ref()
                .map(|t| (t.mult[col], t.rnd[col], t.shift[col], t.lo, t.hi)),
        }
    }

    /// [`ColEpi::apply`] on a run of sums of this column into `dst`, with
    /// the loop-invariant choices made once so the common cases vectorise.
    #[inline(always)]
    pub(crate) fn apply_run<T: Copy + Into<i64>, O: FastOut>(
        &self,
        acc: &[T],
        dst: &mut [O],
        lo: i64,
        hi: i64,
    ) {
        let (b, m, rnd, sh) = (self.bias, self.mult, self.rnd, self.shift);
        match (self.fast, self.then) {
            (true, None) => {
                for (d, &a) in dst.iter_mut().zip(acc) {
                    let v = a.into().wrapping_add(b);
                    *d = O::from_i32_in_range(((v * m + rnd) >> sh).clamp(lo, hi) as i32);
                }
            }
            (true, Some((m2, r2, sh2, lo2, hi2))) => {
                for (d, &a) in dst.iter_mut().zip(acc) {
                    let v = a.into().wrapping_add(b);
                    let y = ((v * m + rnd) >> sh).clamp(lo, hi);
                    *d = O::from_i32_in_range(((y * m2 + r2) >> sh2).clamp(lo2, hi2) as i32);
                }
            }
            (false, _) => {
                for (d, &a) in dst.iter_mut().zip(acc) {
                    *d = O::from_i32_in_range(self.apply(a.into(), lo, hi) as i32);
                }
            }
        }
    }

    /// Bias, requantisation (i64 when the static bound allows, else
    /// i128), clamp to `[lo, hi]`.
    #[inline(always)]
    pub(crate) fn apply(&self, acc: i64, lo: i64, hi: i64) -> i64 {
        let v = acc.wrapping_add(self.bias);
        let y = if self.fast {
            ((v * self.mult + self.rnd) >> self.shift).clamp(lo, hi)
        } else {
            self.rq.apply_wide(v).clamp(i128::from(lo), i128::from(hi)) as i64
        };
        match self.then {
            Some((m, r, sh, lo2, hi2)) => ((y * m + r) >> sh).clamp(lo2, hi2),
            None => y,
        }
    }
}
