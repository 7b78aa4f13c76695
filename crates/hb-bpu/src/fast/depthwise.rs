//! Direct convolution for one input channel per group (depthwise, any
//! channel multiplier): per output channel, rows of the padded input plane
//! times one weight per tap, summed in i32 when the static bound allows
//! (else i64), then the shared epilogue.

use super::driver::ColEpi;
use super::pack::{PackedWeights, NR};
use super::{ensure, ExecOptions, FastOut};
use crate::reference::conv::ConvParams;
use rayon::prelude::*;

/// Largest spatial rank of the direct path (higher ranks use im2col).
pub(crate) const MAX_RANK: usize = 6;

/// Output columns summed per stack buffer.
const CHUNK: usize = 64;

/// Per-call geometry.
pub(crate) struct Geom<'a> {
    pub p: &'a ConvParams,
    pub c: usize,
    pub mg: usize,
    pub sp_in: &'a [usize],
    pub sp_out: &'a [usize],
    pub padded: &'a [usize],
    pub pstr: &'a [usize],
    pub taps: &'a [usize],
    pub lo: i64,
    pub hi: i64,
}

/// Runs the depthwise conv of one batch image `img` (`[C, S…]` as i32 via
/// `f`) into `out` (`[M, O…]`), using `planes` as scratch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<X: Copy + Sync, O: FastOut>(
    pw: &PackedWeights,
    dw: &[i32],
    wide: bool,
    g: &Geom<'_>,
    img: &[X],
    f: impl Fn(X) -> i32 + Sync,
    planes: &mut Vec<i32>,
    out: &mut [O],
    exec: &ExecOptions,
) {
    let r = g.sp_in.len();
    let img_in: usize = g.sp_in.iter().product();
    let npad: usize = g.padded.iter().product();
    let npix: usize = g.sp_out.iter().product();
    // Short or strided output rows leave the per-plane loops scalar: run
    // those channels-last instead (vectorised across channels).
    let short_rows = g.sp_out[r - 1] < 32 || g.p.strides[r - 1] > 1;
    if g.mg == 1 && !wide && short_rows && g.c >= 8 {
        let task = ChannelsLast {
            pw,
            dw,
            g,
            img,
            f: &f,
            buf: planes,
            out,
        };
        return super::on_isa(pw.isa, task);
    }
    let pl = ensure(planes, g.c * npad);
    pl.fill(0);
    // Padded planes, channel-major.
    let w_last = g.sp_in[r - 1];
    super::ops::for_each_padded_row(g.sp_in, &g.p.pads, g.pstr, |row, pos| {
        for ci in 0..g.c {
            let src = &img[ci * img_in + row * w_last..ci * img_in + (row + 1) * w_last];
            let dst = &mut pl[ci * npad + pos..ci * npad + pos + w_last];
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = f(s);
            }
        }
    });
    let pl: &[i32] = pl;
    let ntaps = g.taps.len();
    let one = |(m, o): (usize, &mut [O])| {
        let gi = m / g.mg;
        let col = gi * pw.panels * NR + m % g.mg;
        let plane = &pl[gi * npad..(gi + 1) * npad];
        let w = &dw[m * ntaps..(m + 1) * ntaps];
        let task = Channel {
            pw,
            col,
            plane,
            w,
            g,
            out: o,
            wide,
        };
        super::on_isa(pw.isa, task);
    };
    let macs = (out.len() * ntaps) as u64;
    if rayon::current_num_threads() > 1 && macs >= exec.min_parallel_macs {
        out.par_chunks_mut(npix).enumerate().for_each(one);
    } else {
        out.chunks_mut(npix).enumerate().for_each(one);
    }
}

/// [`channels_last`] as an [`super::IsaTask`].
struct ChannelsLast<'a, 'g, X, O, F> {
    pw: &'a PackedWeights,
    dw: &'a [i32],
    g: &'a Geom<'g>,
    img: &'a [X],
    f: &'a F,
    buf: &'a mut Vec<i32>,
    out: &'a mut [O],
}

impl<X: Copy, O: FastOut, F: Fn(X) -> i32> super::IsaTask for ChannelsLast<'_, '_, X, O, F> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        channels_last(
            self.pw, self.dw, self.g, self.img, self.f, self.buf, self.out,
        )
    }
}

/// One output channel ([`channel`]) as an [`super::IsaTask`].
struct Channel<'a, 'g, O> {
    pw: &'a PackedWeights,
    col: usize,
    plane: &'a [i32],
    w: &'a [i32],
    g: &'a Geom<'g>,
    out: &'a mut [O],
    /// i64 sums.
    wide: bool,
}

impl<O: FastOut> super::IsaTask for Channel<'_, '_, O> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        if self.wide {
            channel::<i64, O>(self.pw, self.col, self.plane, self.w, self.g, self.out)
        } else {
            channel::<i32, O>(self.pw, self.col, self.plane, self.w, self.g, self.out)
        }
    }
}

thread_local! {
    /// Per-channel epilogue parameters of [`channels_last`], reused across
    /// calls (no allocation per inference after the first).
    static EPI: std::cell::Cell<Vec<i64>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The epilogue of every channel of a depthwise conv as dense arrays
/// (bias, multiplier, rounding, shift, and a folded second requantisation),
/// when every channel requantises in i64: applied to a row of C sums in one
/// vectorised pass, where [`ColEpi`] per element would gather them.
struct ChannelEpi<'a> {
    bias: &'a [i64],
    mult: &'a [i64],
    rnd: &'a [i64],
    shift: &'a [i64],
    then: Option<ThenArrays<'a>>,
}

/// A folded second requantisation per channel: multipliers, roundings,
/// shifts, and its clamp.
type ThenArrays<'a> = (&'a [i64], &'a [i64], &'a [i64], i64, i64);

impl<'a> ChannelEpi<'a> {
    /// The parameters of channels `0..c` (column `ci · panels · NR`), laid
    /// out in `buf`; `None` when some channel needs i128.
    fn of(pw: &PackedWeights, c: usize, buf: &'a mut Vec<i64>) -> Option<ChannelEpi<'a>> {
        let col = |ci: usize| ci * pw.panels * NR;
        if (0..c).any(|ci| !pw.fast_col[col(ci)]) {
            return None;
        }
        let k = if pw.then.is_some() { 7 } else { 4 };
        buf.clear();
        buf.resize(k * c, 0);
        for ci in 0..c {
            let j = col(ci);
            buf[ci] = pw.bias[j];
            buf[c + ci] = pw.mult[j];
            buf[2 * c + ci] = pw.rnd[j];
            buf[3 * c + ci] = pw.shift[j];
            if let Some(t) = &pw.then {
                buf[4 * c + ci] = t.mult[j];
                buf[5 * c + ci] = t.rnd[j];
                buf[6 * c + ci] = t.shift[j];
            }
        }
        let p: Vec<&'a [i64]> = buf.chunks_exact(c).collect();
        Some(ChannelEpi {
            bias: p[0],
            mult: p[1],
            rnd: p[2],
            shift: p[3],
            then: pw.then.as_ref().map(|t| (p[4], p[5], p[6], t.lo, t.hi)),
        })
    }

    /// Replaces each channel's sum in `acc` by its result (in `[lo, hi]`,
    /// then the second requantisation's range).
    #[inline(always)]
    fn apply(&self, acc: &mut [i32], lo: i64, hi: i64) {
        let it = acc
            .iter_mut()
            .zip(self.bias)
            .zip(self.mult)
            .zip(self.rnd)
            .zip(self.shift);
        match self.then {
            None => {
                for ((((a, &b), &m), &r), &s) in it {
                    let v = i64::from(*a).wrapping_add(b);
                    *a = ((v * m + r) >> s).clamp(lo, hi) as i32;
                }
            }
            Some((m2, r2, s2, lo2, hi2)) => {
                for (((((a, &b), &m), &r), &s), ((&mm, &rr), &ss)) in
                    it.zip(m2.iter().zip(r2).zip(s2))
                {
                    let v = i64::from(*a).wrapping_add(b);
                    let y = ((v * m + r) >> s).clamp(lo, hi);
                    *a = ((y * mm + rr) >> ss).clamp(lo2, hi2) as i32;
                }
            }
        }
    }
}

/// Depthwise conv with channel multiplier 1 and i32 sums, channels-last:
/// the padded input as `[position][C]`, the weights as `[tap][C]`, and per
/// output pixel one row of C sums over the taps (then the shared
/// epilogue per channel, written NC…).
#[inline(always)]
fn channels_last<X: Copy, O: FastOut, F: Fn(X) -> i32>(
    pw: &PackedWeights,
    dw: &[i32],
    g: &Geom<'_>,
    img: &[X],
    f: &F,
    buf: &mut Vec<i32>,
    out: &mut [O],
) {
    let (r, c, ntaps) = (g.sp_in.len(), g.c, g.taps.len());
    let npad: usize = g.padded.iter().product();
    let npix: usize = g.sp_out.iter().product();
    let s = ensure(buf, c * npad + ntaps * c + c);
    let (pl, rest) = s.split_at_mut(c * npad);
    let (wt, acc) = rest.split_at_mut(ntaps * c);
    pl.fill(0);
    super::ops::to_channels_last(img, c, g.sp_in, g.p, g.pstr, f, pl);
    for ci in 0..c {
        for t in 0..ntaps {
            wt[t * c + ci] = dw[ci * ntaps + t];
        }
    }
    let w_out = g.sp_out[r - 1];
    let mut idx = [0usize; MAX_RANK];
    let mut pix = 0;
    let mut epi_buf = EPI.take();
    let epi = ChannelEpi::of(pw, c, &mut epi_buf);
    for _ in 0..npix / w_out.max(1) {
        let mut base = 0;
        for i in 0..r - 1 {
            base += idx[i] * g.p.strides[i] * g.pstr[i];
        }
        for ow in 0..w_out {
            let pos = base + ow * g.p.strides[r - 1];
            acc.fill(0);
            for (t, &to) in g.taps.iter().enumerate() {
                let x = &pl[(pos + to) * c..(pos + to + 1) * c];
                let w = &wt[t * c..(t + 1) * c];
                for ((a, &xv), &wv) in acc.iter_mut().zip(x).zip(w) {
                    *a += xv * wv;
                }
            }
            match &epi {
                Some(k) => {
                    // Vectorised across channels, then scattered to NC….
                    k.apply(acc, g.lo, g.hi);
                    for (ci, &y) in acc.iter().enumerate() {
                        out[ci * npix + pix] = O::from_i32_in_range(y);
                    }
                }
                None => {
                    for (ci, &a) in acc.iter().enumerate() {
                        let e = ColEpi::of(pw, ci * pw.panels * NR);
                        out[ci * npix + pix] =
                            O::from_i32_in_range(e.apply(i64::from(a), g.lo, g.hi) as i32);
                    }
                }
            }
            pix += 1;
        }
        for d in (0..r - 1).rev() {
            idx[d] += 1;
            if idx[d] < g.sp_out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    EPI.set(epi_buf);
}

/// One output channel.
#[inline(always)]
fn channel<T, O: FastOut>(
    pw: &PackedWeights,
    col: usize,
    plane: &[i32],
    w: &[i32],
    g: &Geom<'_>,
    out: &mut [O],
) where
    T: Copy + Default + std::ops::AddAssign + std::ops::Mul<Output = T> + From<i32> + Into<i64>,
{
    let r = g.sp_out.len();
    let w_last = g.sp_out[r - 1];
    let s_last = g.p.strides[r - 1];
    let rows_outer = out.len() / w_last;
    let mut idx = [0usize; MAX_RANK];
    let mut acc = [T::default(); CHUNK];
    let e = ColEpi::of(pw, col);
    for row in 0..rows_outer {
        let mut base = 0usize;
        for i in 0..r - 1 {
            base += idx[i] * g.p.strides[i] * g.pstr[i];
        }
        for j0 in (0..w_last).step_by(CHUNK) {
            let n = CHUNK.min(w_last - j0);
            let acc = &mut acc[..n];
            acc.fill(T::default());
            for (&to, &wv) in g.taps.iter().zip(w) {
                let wv = T::from(wv);
                let start = base + to + j0 * s_last;
                if s_last == 1 {
                    for (a, &x) in acc.iter_mut().zip(&plane[start..start + n]) {
                        *a += T::from(x) * wv;
                    }
                } else {
                    for (j, a) in acc.iter_mut().enumerate() {
                        *a += T::from(plane[start + j * s_last]) * wv;
                    }
                }
            }
            let dst = &mut out[row * w_last + j0..row * w_last + j0 + n];
            e.apply_run(acc, dst, g.lo, g.hi);
        }
        for d in (0..r - 1).rev() {
            idx[d] += 1;
            if idx[d] < g.sp_out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}
