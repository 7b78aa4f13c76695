//! Allocation-free kernels of the engine for the non-weighted integer ops:
//! broadcasting binary ops (Add/Sub, Mul, Div), lookup tables, ReduceMean
//! over trailing axes, Transpose, activation × activation MatMul. Each
//! computes exactly the reference formula on the same integers (the `*_fast`
//! requantisations are the reference ones evaluated in i64 when that is
//! exact), so results are bit-identical with [`crate::reference`].

use crate::fixed_point::Requant;
use crate::lut::Lut;
use crate::qint::QInt;

/// Defines `pub(super) fn $name` dispatching at run time to copies of
/// `$body` compiled for AVX-512 (F/BW/DQ/VL: 64-bit lane multiplies) and
/// AVX2, else the baseline; every copy runs the same code, so results are
/// identical.
macro_rules! simd_copies {
    (
        $(#[$doc:meta])*
        fn $name:ident<$($g:ident),*>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident
    ) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        pub(super) fn $name<$($g: QInt),*>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide<$($g: QInt),*>($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2<$($g: QInt),*>($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if has_avx512() {
                    // SAFETY: AVX-512 F/BW/DQ/VL were detected at run time.
                    return unsafe { wide($($arg),*) };
                }
                if has_avx2() {
                    // SAFETY: AVX2 was detected at run time.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(super) use simd_copies;

/// Strides of `src` (right-aligned against `out`) per output dim, 0 where
/// broadcast; `None` when `src` does not broadcast to `out`.
pub(super) fn bcast_strides(src: &[usize], out: &[usize]) -> Option<Vec<usize>> {
    if src.len() > out.len() {
        return None;
    }
    let off = out.len() - src.len();
    let mut st = vec![0usize; out.len()];
    let mut acc = 1usize;
    for i in (0..src.len()).rev() {
        let (d, o) = (src[i], out[i + off]);
        if d == o {
            st[i + off] = if d == 1 { 0 } else { acc };
        } else if d != 1 {
            return None;
        }
        acc *= d;
    }
    Some(st)
}

/// Numpy broadcast of two shapes (`None` when they do not broadcast).
pub(super) fn bcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    crate::tensor::broadcast_shapes(a, b).ok()
}

/// One row (the last dim) of a two-operand broadcast: output offset,
/// operand offsets, length and the operands' steps along the row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Row2 {
    pub y: usize,
    pub a: usize,
    pub b: usize,
    pub len: usize,
    pub a_step: usize,
    pub b_step: usize,
}

/// The rows of a two-operand broadcast, in output order. An iterator
/// rather than a callback, so a loop over the rows is compiled inside the
/// caller (and its SIMD copy: a callback closure is a function of its own,
/// built for the baseline target).
pub(super) struct Rows2<'s> {
    out: &'s [usize],
    sa: &'s [usize],
    sb: &'s [usize],
    idx: Vec<usize>,
    ao: usize,
    bo: usize,
    row: usize,
    rows: usize,
}

impl<'s> Rows2<'s> {
    /// Rows of `out` with operand strides `sa`, `sb` (see [`bcast_strides`]).
    #[inline(always)]
    pub(super) fn new(out: &'s [usize], sa: &'s [usize], sb: &'s [usize]) -> Rows2<'s> {
        let r = out.len();
        let rows = if r == 0 {
            1
        } else if out.contains(&0) {
            0
        } else {
            out[..r - 1].iter().product()
        };
        Rows2 {
            out,
            sa,
            sb,
            idx: vec![0; r.saturating_sub(1)],
            ao: 0,
            bo: 0,
            row: 0,
            rows,
        }
    }
}

impl Iterator for Rows2<'_> {
    type Item = Row2;

    #[inline(always)]
    fn next(&mut self) -> Option<Row2> {
        if self.row >= self.rows {
            return None;
        }
        let r = self.out.len();
        let item = if r == 0 {
            Row2 {
                y: 0,
                a: 0,
                b: 0,
                len: 1,
                a_step: 0,
                b_step: 0,
            }
        } else {
            let len = self.out[r - 1];
            Row2 {
                y: self.row * len,
                a: self.ao,
                b: self.bo,
                len,
                a_step: self.sa[r - 1],
                b_step: self.sb[r - 1],
            }
        };
        self.row += 1;
        for d in (0..r.saturating_sub(1)).rev() {
            self.idx[d] += 1;
            self.ao += self.sa[d];
            self.bo += self.sb[d];
            if self.idx[d] < self.out[d] {
                break;
            }
            self.ao -= self.sa[d] * self.out[d];
            self.bo -= self.sb[d] * self.out[d];
            self.idx[d] = 0;
        }
        Some(item)
    }
}

/// Visits the output of a two-operand broadcast row by row (the last dim):
/// `f(y_off, a_off, b_off, len, a_step, b_step)`.
#[inline(always)]
pub(super) fn for_rows2(
    out: &[usize],
    sa: &[usize],
    sb: &[usize],
    mut f: impl FnMut(usize, usize, usize, usize, usize, usize),
) {
    for w in Rows2::new(out, sa, sb) {
        f(w.y, w.a, w.b, w.len, w.a_step, w.b_step);
    }
}

simd_copies! {
    /// `y = f(a, b)` with numpy broadcasting (shapes already checked).
    fn binary<A, B, O>(
        a: &[A],
        b: &[B],
        y: &mut [O],
        out: &[usize],
        sa: &[usize],
        sb: &[usize],
        f: impl Fn(i64, i64) -> O
    ) => binary_body
}

#[inline(always)]
fn binary_body<A: QInt, B: QInt, O: QInt>(
    a: &[A],
    b: &[B],
    y: &mut [O],
    out: &[usize],
    sa: &[usize],
    sb: &[usize],
    f: impl Fn(i64, i64) -> O,
) {
    for w in Rows2::new(out, sa, sb) {
        let (yo, ao, bo, len, ast, bst) = (w.y, w.a, w.b, w.len, w.a_step, w.b_step);
        let yr = &mut y[yo..yo + len];
        match (ast, bst) {
            (1, 1) => {
                for ((d, &p), &q) in yr.iter_mut().zip(&a[ao..ao + len]).zip(&b[bo..bo + len]) {
                    *d = f(p.to_i64(), q.to_i64());
                }
            }
            (1, 0) => {
                let q = b[bo].to_i64();
                for (d, &p) in yr.iter_mut().zip(&a[ao..ao + len]) {
                    *d = f(p.to_i64(), q);
                }
            }
            (0, 1) => {
                let p = a[ao].to_i64();
                for (d, &q) in yr.iter_mut().zip(&b[bo..bo + len]) {
                    *d = f(p, q.to_i64());
                }
            }
            _ => {
                for (t, d) in yr.iter_mut().enumerate() {
                    *d = f(a[ao + t * ast].to_i64(), b[bo + t * bst].to_i64());
                }
            }
        }
    }
}

simd_copies! {
    /// `y[i] = f(y[i], b[i])` (a fused Add; same lengths).
    fn zip_in_place<O, B>(y: &mut [O], b: &[B], f: impl Fn(i64, i64) -> O) => zip_in_place_body
}

#[inline(always)]
fn zip_in_place_body<O: QInt, B: QInt>(y: &mut [O], b: &[B], f: impl Fn(i64, i64) -> O) {
    for (v, &w) in y.iter_mut().zip(b) {
        *v = f(v.to_i64(), w.to_i64());
    }
}

simd_copies! {
    /// Div with a cached reciprocal: consecutive equal divisors (always the
    /// case along a broadcast row) share one table lookup.
    fn div<A, B, O>(
        a: &[A],
        b: &[B],
        y: &mut [O],
        out: &[usize],
        sa: &[usize],
        sb: &[usize],
        recip: &Lut,
        r: &Requant
    ) => div_body
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn div_body<A: QInt, B: QInt, O: QInt>(
    a: &[A],
    b: &[B],
    y: &mut [O],
    out: &[usize],
    sa: &[usize],
    sb: &[usize],
    recip: &Lut,
    r: &Requant,
) {
    let mut last: Option<(i64, i64)> = None;
    let mut rec = |qb: i64| -> i64 {
        match last {
            Some((q, v)) if q == qb => v,
            _ => {
                let v = recip.lookup(qb);
                last = Some((qb, v));
                v
            }
        }
    };
    // A divisor shared by a whole row (LayerNorm's `x / std`) has one
    // reciprocal `c`, and `(qa · c · M + rnd) >> n = (qa · P + rnd) >> n`
    // with `P = c · M`. Split `P = P_hi · 2^32 + P_lo` (0 ≤ P_lo < 2^32);
    // for `n ≥ 32` the nested floors give `(qa · P_hi + ((qa · P_lo + rnd)
    // >> 32)) >> (n − 32)`, every term exact in i64 for 8/16-bit `qa` and
    // `|P| < 2^62`.
    let small_a = A::MAX <= 1 << 15;
    let (m, n) = (i128::from(r.multiplier()), r.shift());
    let rnd = if (32..=62).contains(&n) {
        1i64 << (n - 1)
    } else {
        0
    };
    for w in Rows2::new(out, sa, sb) {
        let (yo, ao, bo, len, ast, bst) = (w.y, w.a, w.b, w.len, w.a_step, w.b_step);
        // A divisor shared by the whole row (LayerNorm's `x / std`): one
        // reciprocal, then a vectorised requantisation.
        if bst == 0 && ast == 1 && small_a && rnd != 0 {
            let qb = b[bo].to_i64();
            if qb != 0 {
                let p = i128::from(rec(qb)) * m;
                if p.unsigned_abs() < 1 << 62 {
                    let p = p as i64;
                    let k = (p >> 32, p & 0xffff_ffff, rnd, n - 32);
                    scaled_row_body(&a[ao..ao + len], &mut y[yo..yo + len], k);
                    continue;
                }
            }
        }
        for (t, d) in y[yo..yo + len].iter_mut().enumerate() {
            let qa = a[ao + t * ast].to_i64();
            let qb = b[bo + t * bst].to_i64();
            *d = if qb == 0 {
                O::sat_i64(qa.signum() * i64::MAX)
            } else {
                r.apply_fast::<O>(qa * rec(qb))
            };
        }
    }
}

/// `y = sat((a · P + rnd) >> n)` for one row, as `(a · P_hi + ((a · P_lo
/// + rnd) >> 32)) >> (n − 32)` with `k = (P_hi, P_lo, rnd, n − 32)` (see
/// [`div`]).
#[inline(always)]
fn scaled_row_body<A: QInt, O: QInt>(a: &[A], y: &mut [O], k: (i64, i64, i64, u32)) {
    let (hi, lo, rnd, sh) = k;
    for (d, &q) in y.iter_mut().zip(a) {
        let q = q.to_i64();
        *d = O::sat_i64((q * hi + ((q * lo + rnd) >> 32)) >> sh);
    }
}

simd_copies! {
    /// Largest magnitude in `x` (0 when empty).
    fn max_abs<T>(x: &[T]) -> i64 => max_abs_body
}

#[inline(always)]
fn max_abs_body<T: QInt>(x: &[T]) -> i64 {
    let (mut lo, mut hi) = (0i64, 0i64);
    for &v in x {
        let v = v.to_i64();
        lo = lo.min(v);
        hi = hi.max(v);
    }
    hi.max(-lo)
}

/// A lookup table on every element.
pub(super) fn lut<I: QInt, O: QInt>(x: &[I], y: &mut [O], t: &Lut) {
    let (lo, hi) = t.domain();
    if let crate::lut::LutKind::Direct(tab) = t.kind() {
        if hi.checked_sub(lo).and_then(|d| d.checked_add(1)) == Some(tab.len() as i64) {
            lut_direct(x, y, tab, (lo, hi));
            return;
        }
    }
    for (d, &q) in y.iter_mut().zip(x) {
        *d = O::sat_i64(t.lookup(q.to_i64()));
    }
}

simd_copies! {
    /// [`lut`] on a whole direct table (`hi − lo + 1` entries): the same
    /// clamp and index, unchecked so the loop gathers.
    fn lut_direct<I, O>(x: &[I], y: &mut [O], tab: &[i64], dom: (i64, i64)) => lut_direct_body
}

#[inline(always)]
fn lut_direct_body<I: QInt, O: QInt>(x: &[I], y: &mut [O], tab: &[i64], dom: (i64, i64)) {
    let (lo, hi) = dom;
    for (d, &q) in y.iter_mut().zip(x) {
        let i = (q.to_i64().clamp(lo, hi) - lo) as usize;
        // SAFETY: `i ≤ hi − lo < tab.len()` (checked by `lut`).
        *d = O::sat_i64(unsafe { *tab.get_unchecked(i) });
    }
}

/// Sums of consecutive rows of `len` elements, requantised by `r`.
pub(super) fn row_mean<I: QInt, O: QInt>(x: &[I], y: &mut [O], len: usize, r: &Requant) {
    for (d, row) in y.iter_mut().zip(x.chunks_exact(len)) {
        let s: i64 = row.iter().map(|q| q.to_i64()).sum();
        *d = r.apply_fast::<O>(s);
    }
}

/// Permutes the axes of `x` (shape `xs`) by `perm` into `y`.
pub(super) fn transpose<T: Copy>(x: &[T], y: &mut [T], xs: &[usize], perm: &[usize]) {
    if let ([b, d1, d2, inner], [0, 2, 1, 3]) = (xs, perm) {
        // The attention head split / merge, `[B, S, H, D] → [B, H, S, D]`:
        // runs of D in place, in plain nested loops.
        match inner {
            8 => swap_middle::<T, 8>(x, y, *b, *d1, *d2),
            16 => swap_middle::<T, 16>(x, y, *b, *d1, *d2),
            32 => swap_middle::<T, 32>(x, y, *b, *d1, *d2),
            64 => swap_middle::<T, 64>(x, y, *b, *d1, *d2),
            _ => transpose_runs(x, y, xs, perm),
        }
        return;
    }
    transpose_runs(x, y, xs, perm)
}

/// `[b, d1, d2, N] → [b, d2, d1, N]`.
fn swap_middle<T: Copy, const N: usize>(x: &[T], y: &mut [T], b: usize, d1: usize, d2: usize) {
    let plane = d1 * d2 * N;
    for (xb, yb) in x.chunks_exact(plane).zip(y.chunks_exact_mut(plane)).take(b) {
        for (i, yrow) in yb.chunks_exact_mut(d1 * N).enumerate() {
            for (j, run) in yrow.chunks_exact_mut(N).enumerate() {
                let at = (j * d2 + i) * N;
                copy_run::<T, N>(run, &xb[at..at + N]);
            }
        }
    }
}

/// [`transpose`] by runs of the output's innermost dim.
fn transpose_runs<T: Copy>(x: &[T], y: &mut [T], xs: &[usize], perm: &[usize]) {
    let r = xs.len();
    let mut xst = vec![1usize; r];
    for i in (0..r.saturating_sub(1)).rev() {
        xst[i] = xst[i + 1] * xs[i + 1];
    }
    let out: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
    let st: Vec<usize> = perm.iter().map(|&p| xst[p]).collect();
    let zero = vec![0usize; r];
    for w in Rows2::new(&out, &st, &zero) {
        let (yo, xo, len, step) = (w.y, w.a, w.len, w.a_step);
        let yr = &mut y[yo..yo + len];
        match (step, len) {
            // Attention head splits keep short runs (the head size) in
            // place: copies of a fixed length inline instead of calling
            // `memcpy` per run.
            (1, 8) => copy_run::<T, 8>(yr, &x[xo..xo + 8]),
            (1, 16) => copy_run::<T, 16>(yr, &x[xo..xo + 16]),
            (1, 32) => copy_run::<T, 32>(yr, &x[xo..xo + 32]),
            (1, _) => yr.copy_from_slice(&x[xo..xo + len]),
            _ => {
                for (t, d) in yr.iter_mut().enumerate() {
                    *d = x[xo + t * step];
                }
            }
        }
    }
}

/// Copies a run of exactly `N` elements (a constant-length copy).
#[inline(always)]
fn copy_run<T: Copy, const N: usize>(y: &mut [T], x: &[T]) {
    if let (Ok(d), Ok(s)) = (<&mut [T; N]>::try_from(y), <&[T; N]>::try_from(x)) {
        *d = *s;
    }
}

/// Whether the AVX2 copies of the loops below can run.
#[inline]
pub(super) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

simd_copies! {
    /// `y = clamp(sat_O(R(x)), lo, hi)` (then saturated to `O`) for every
    /// element: the reference Rescale formula, in i64 when the shift is at
    /// most 62 (exact for any i8/i16/i32 input: `|x·M| ≤ 2^62`).
    fn rq_slice<I, O>(x: &[I], y: &mut [O], r: &Requant, lo: i64, hi: i64) => rq_slice_body
}

#[inline(always)]
fn rq_slice_body<I: QInt, O: QInt>(x: &[I], y: &mut [O], r: &Requant, lo: i64, hi: i64) {
    let (omin, omax) = (O::MIN, O::MAX);
    if r.is_identity() {
        for (d, &q) in y.iter_mut().zip(x) {
            *d = O::sat_i64(q.to_i64().clamp(omin, omax).clamp(lo, hi));
        }
    } else if r.shift() <= 62 {
        let (m, sh) = (i64::from(r.multiplier()), r.shift());
        let rnd = if sh == 0 { 0 } else { 1i64 << (sh - 1) };
        for (d, &q) in y.iter_mut().zip(x) {
            let v = (q.to_i64() * m + rnd) >> sh;
            *d = O::sat_i64(v.clamp(omin, omax).clamp(lo, hi));
        }
    } else {
        for (d, &q) in y.iter_mut().zip(x) {
            *d = O::sat_i64(r.apply::<O>(q.to_i64()).to_i64().clamp(lo, hi));
        }
    }
}

/// Per-channel requantisation along the last axis (`c` channels, one
/// [`Requant`] each, `x.len()` a multiple of `c`): element `i` uses
/// `requant[i % c]`, then the clamp, as [`rq_slice`].
pub(super) fn rq_last_axis<I: QInt, O: QInt>(
    x: &[I],
    y: &mut [O],
    requant: &[Requant],
    lo: i64,
    hi: i64,
) {
    match ShiftParams::of(requant) {
        Some(p) => rq_last_axis_shift(x, y, &p, lo, hi),
        None => {
            let c = requant.len().max(1);
            for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                for ((d, &q), r) in yr.iter_mut().zip(xr).zip(requant) {
                    *d = O::sat_i64(r.apply_fast::<O>(q.to_i64()).to_i64().clamp(lo, hi));
                }
            }
        }
    }
}

/// [`rq_last_axis`] in place.
pub(super) fn rq_last_axis_in_place<O: QInt>(y: &mut [O], requant: &[Requant], lo: i64, hi: i64) {
    match ShiftParams::of(requant) {
        Some(p) => rq_last_axis_shift_in_place(y, &p, lo, hi),
        None => {
            let c = requant.len().max(1);
            for yr in y.chunks_exact_mut(c) {
                for (d, r) in yr.iter_mut().zip(requant) {
                    *d = O::sat_i64(r.apply_fast::<O>(d.to_i64()).to_i64().clamp(lo, hi));
                }
            }
        }
    }
}

/// Multiplier, rounding term and shift of each channel's requantisation,
/// one array each (so a row of channels is a few vector operations), when
/// every shift is at most 62 (the i64 formula is then exact).
pub(super) struct ShiftParams {
    m: Vec<i64>,
    rnd: Vec<i64>,
    sh: Vec<i64>,
}

impl ShiftParams {
    fn of(requant: &[Requant]) -> Option<ShiftParams> {
        if requant.is_empty() || requant.iter().any(|r| r.shift() > 62) {
            return None;
        }
        let sh: Vec<i64> = requant.iter().map(|r| i64::from(r.shift())).collect();
        Some(ShiftParams {
            m: requant.iter().map(|r| i64::from(r.multiplier())).collect(),
            rnd: sh
                .iter()
                .map(|&s| if s == 0 { 0 } else { 1i64 << (s - 1) })
                .collect(),
            sh,
        })
    }
}

simd_copies! {
    /// [`rq_last_axis`] with [`ShiftParams`].
    fn rq_last_axis_shift<I, O>(x: &[I], y: &mut [O], p: &ShiftParams, lo: i64, hi: i64) => rq_last_axis_shift_body
}

#[inline(always)]
fn rq_last_axis_shift_body<I: QInt, O: QInt>(
    x: &[I],
    y: &mut [O],
    p: &ShiftParams,
    lo: i64,
    hi: i64,
) {
    let c = p.m.len();
    let (omin, omax) = (O::MIN, O::MAX);
    for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        for ((((d, &q), &m), &rnd), &sh) in yr.iter_mut().zip(xr).zip(&p.m).zip(&p.rnd).zip(&p.sh) {
            let v = (q.to_i64() * m + rnd) >> sh;
            *d = O::sat_i64(v.clamp(omin, omax).clamp(lo, hi));
        }
    }
}

simd_copies! {
    /// [`rq_last_axis_in_place`] with [`ShiftParams`].
    fn rq_last_axis_shift_in_place<O>(y: &mut [O], p: &ShiftParams, lo: i64, hi: i64) => rq_last_axis_shift_in_place_body
}

#[inline(always)]
fn rq_last_axis_shift_in_place_body<O: QInt>(y: &mut [O], p: &ShiftParams, lo: i64, hi: i64) {
    let c = p.m.len();
    let (omin, omax) = (O::MIN, O::MAX);
    for yr in y.chunks_exact_mut(c) {
        for (((d, &m), &rnd), &sh) in yr.iter_mut().zip(&p.m).zip(&p.rnd).zip(&p.sh) {
            let v = (d.to_i64() * m + rnd) >> sh;
            *d = O::sat_i64(v.clamp(omin, omax).clamp(lo, hi));
        }
    }
}

simd_copies! {
    /// LeakyRelu: `R_pos(x)` for `x ≥ 0`, else `R_neg(x)` (the reference's
    /// requantisations, in i64 when exact).
    fn leaky_relu<I, O>(x: &[I], y: &mut [O], pos: &Requant, neg: &Requant) => leaky_relu_body
}

#[inline(always)]
fn leaky_relu_body<I: QInt, O: QInt>(x: &[I], y: &mut [O], pos: &Requant, neg: &Requant) {
    if pos.shift() <= 62 && neg.shift() <= 62 {
        let k = |r: &Requant| {
            let sh = r.shift();
            (
                i64::from(r.multiplier()),
                if sh == 0 { 0 } else { 1i64 << (sh - 1) },
                sh,
            )
        };
        let ((pm, pr, ps), (nm, nr, ns)) = (k(pos), k(neg));
        let (omin, omax) = (O::MIN, O::MAX);
        for (d, &q) in y.iter_mut().zip(x) {
            let v = q.to_i64();
            let r = if v >= 0 {
                (v * pm + pr) >> ps
            } else {
                (v * nm + nr) >> ns
            };
            *d = O::sat_i64(r.clamp(omin, omax));
        }
    } else {
        for (d, &q) in y.iter_mut().zip(x) {
            let v = q.to_i64();
            *d = if v >= 0 {
                pos.apply::<O>(v)
            } else {
                neg.apply::<O>(v)
            };
        }
    }
}

simd_copies! {
    /// [`rq_slice`] in place.
    fn rq_in_place_lanes<O>(y: &mut [O], r: &Requant, lo: i64, hi: i64) => rq_in_place_body
}

#[inline(always)]
fn rq_in_place_body<O: QInt>(y: &mut [O], r: &Requant, lo: i64, hi: i64) {
    let (omin, omax) = (O::MIN, O::MAX);
    if r.is_identity() {
        // A clamp alone: in O itself (saturation is monotone, so clamping
        // to the saturated bounds is the same), many lanes per vector.
        let (lo, hi) = (O::sat_i64(lo), O::sat_i64(hi.max(lo)));
        for d in y.iter_mut() {
            *d = (*d).max(lo).min(hi);
        }
    } else if r.shift() <= 62 {
        let (m, sh) = (i64::from(r.multiplier()), r.shift());
        let rnd = if sh == 0 { 0 } else { 1i64 << (sh - 1) };
        for d in y.iter_mut() {
            let v = (d.to_i64() * m + rnd) >> sh;
            *d = O::sat_i64(v.clamp(omin, omax).clamp(lo, hi));
        }
    } else {
        for d in y.iter_mut() {
            *d = O::sat_i64(r.apply::<O>(d.to_i64()).to_i64().clamp(lo, hi));
        }
    }
}

/// One batched product of activation × activation MatMul: `a` `[M, K]`,
/// `b` `[K, N]` (row-major slices), accumulated exactly (i32 when
/// `wide == false`, which the caller proves cannot overflow; else i64),
/// plus `bias`, requantised per column into `y` `[M, N]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_block<A: QInt, B: QInt, O: QInt>(
    a: &[A],
    b: &[B],
    y: &mut [O],
    mkn: (usize, usize, usize),
    bias: Option<&[i64]>,
    requant: &[Requant],
    wide: bool,
    acc32: &mut Vec<i32>,
    acc64: &mut Vec<i64>,
) {
    #[cfg(target_arch = "x86_64")]
    if !wide && mkn.1 > 0 && mkn.2 > 0 && has_avx512() {
        // SAFETY: AVX-512 F/BW/DQ/VL were detected at run time.
        unsafe { matmul_block_avx512(a, b, y, mkn, bias, requant, acc32) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 was detected at run time.
        unsafe { matmul_block_avx2(a, b, y, mkn, bias, requant, wide, acc32, acc64) };
        return;
    }
    matmul_block_body(a, b, y, mkn, bias, requant, wide, acc32, acc64)
}

/// Whether AVX-512 F/BW/DQ/VL are available (checked at run time).
pub(super) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `lo | hi << 16` of two values known to fit i16 (one `vpmaddwd` lane).
#[inline(always)]
fn pair16(lo: i64, hi: i64) -> i32 {
    ((lo as i32) & 0xffff) | ((hi as i32) << 16)
}

/// The epilogue shared by the activation × activation MatMul paths:
/// `(s · M + 2^(n−1)) >> n` in i64 for one requantisation without bias
/// (`|s · M| < 2^62` for an i32 `s`), else [`Requant::apply_fast`] of
/// `s + bias[j]`. `j0` is the column of `s[0]`.
#[inline(always)]
fn mm_epilogue<O: QInt>(
    s: &[i32],
    y: &mut [O],
    j0: usize,
    simple: Option<(i64, i64, u32)>,
    bias: Option<&[i64]>,
    requant: &[Requant],
) {
    match simple {
        Some((mm, rnd, sh)) => {
            for (d, &v) in y.iter_mut().zip(s) {
                *d = O::sat_i64((i64::from(v) * mm + rnd) >> sh);
            }
        }
        None => {
            for (jj, (d, &v)) in y.iter_mut().zip(s).enumerate() {
                let j = j0 + jj;
                let r = &requant[if requant.len() == 1 { 0 } else { j }];
                *d = r.apply_fast::<O>(i64::from(v) + bias.map_or(0, |bs| bs[j]));
            }
        }
    }
}

/// [`mm_epilogue`] on AVX-512: the single-requantisation, no-bias case
/// sixteen sums at a time — `s · M` by even/odd `vpmuldq` (32 × 32 → 64
/// bits; `M` an i32), the rounding add and shift in i64, saturation to
/// `O`, narrowing in registers — and [`mm_epilogue`] for the rest.
///
/// # Safety
/// AVX-512 F/BW/DQ/VL available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
#[inline]
unsafe fn mm_finish<O: QInt>(
    s: &[i32],
    y: &mut [O],
    j0: usize,
    simple: Option<(i64, i64, u32)>,
    bias: Option<&[i64]>,
    requant: &[Requant],
) {
    use std::arch::x86_64::*;
    let narrow = matches!(std::mem::size_of::<O>(), 1 | 2);
    let Some((mm, rnd, sh)) = simple.filter(|&(mm, ..)| narrow && i32::try_from(mm).is_ok()) else {
        return mm_epilogue(s, y, j0, simple, bias, requant);
    };
    let k = Rq16::new::<O>(mm, rnd, sh);
    let len = s.len().min(y.len());
    let whole = len / 16 * 16;
    for (sv, yv) in s[..whole]
        .chunks_exact(16)
        .zip(y[..whole].chunks_exact_mut(16))
    {
        // SAFETY: 16 i32 are read from `sv` and 16 values of `O` (1 or 2
        // bytes) written to `yv`.
        unsafe {
            let v = _mm512_loadu_si512(sv.as_ptr() as *const _);
            store16(yv, k.apply(v));
        }
    }
    mm_epilogue(
        &s[whole..len],
        &mut y[whole..len],
        j0 + whole,
        simple,
        bias,
        requant,
    );
}

/// One requantisation `sat((v·M + rnd) >> sh)` to `O` on sixteen i32
/// lanes: `v·M` by even/odd `vpmuldq` (32 × 32 → 64 bits, exact for an
/// i32 `M`; the caller keeps `|v·M| + rnd < 2^63`), the add and shift in
/// i64, saturation to `O`'s range, the lanes back in i32.
#[cfg(target_arch = "x86_64")]
struct Rq16 {
    m: std::arch::x86_64::__m512i,
    rnd: std::arch::x86_64::__m512i,
    shift: std::arch::x86_64::__m128i,
    lo: std::arch::x86_64::__m512i,
    hi: std::arch::x86_64::__m512i,
}

#[cfg(target_arch = "x86_64")]
impl Rq16 {
    /// For multiplier `m` (an i32), rounding term `rnd` and shift `sh ≤ 63`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn new<O: QInt>(m: i64, rnd: i64, sh: u32) -> Self {
        use std::arch::x86_64::*;
        Rq16 {
            m: _mm512_set1_epi64(m),
            rnd: _mm512_set1_epi64(rnd),
            shift: _mm_cvtsi64_si128(i64::from(sh)),
            lo: _mm512_set1_epi64(O::MIN),
            hi: _mm512_set1_epi64(O::MAX),
        }
    }

    /// The requantised lanes of `v`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn apply(&self, v: std::arch::x86_64::__m512i) -> std::arch::x86_64::__m512i {
        use std::arch::x86_64::*;
        let even = self.round(_mm512_mul_epi32(v, self.m));
        let odd = self.round(_mm512_mul_epi32(_mm512_srli_epi64::<32>(v), self.m));
        Self::interleave(even, odd)
    }

    /// The requantised lanes of `v·M + w·mb` (a two-input rescale; the
    /// caller keeps the sum within i64 with room for `rnd`).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn apply2(
        &self,
        v: std::arch::x86_64::__m512i,
        w: std::arch::x86_64::__m512i,
        mb: std::arch::x86_64::__m512i,
    ) -> std::arch::x86_64::__m512i {
        use std::arch::x86_64::*;
        let (vo, wo) = (_mm512_srli_epi64::<32>(v), _mm512_srli_epi64::<32>(w));
        let even = self.round(_mm512_add_epi64(
            _mm512_mul_epi32(v, self.m),
            _mm512_mul_epi32(w, mb),
        ));
        let odd = self.round(_mm512_add_epi64(
            _mm512_mul_epi32(vo, self.m),
            _mm512_mul_epi32(wo, mb),
        ));
        Self::interleave(even, odd)
    }

    /// `(p + rnd) >> sh` saturated to `O`, on eight i64 lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn round(&self, p: std::arch::x86_64::__m512i) -> std::arch::x86_64::__m512i {
        use std::arch::x86_64::*;
        let r = _mm512_sra_epi64(_mm512_add_epi64(p, self.rnd), self.shift);
        _mm512_min_epi64(_mm512_max_epi64(r, self.lo), self.hi)
    }

    /// Sixteen i32 lanes from the low halves of the even- and odd-element
    /// products.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn interleave(
        even: std::arch::x86_64::__m512i,
        odd: std::arch::x86_64::__m512i,
    ) -> std::arch::x86_64::__m512i {
        use std::arch::x86_64::*;
        _mm512_mask_blend_epi32(0xaaaa, even, _mm512_slli_epi64::<32>(odd))
    }
}

/// Stores sixteen i32 lanes already in `O`'s range (1 or 2 bytes) to `y`.
///
/// # Safety
/// AVX-512 F/BW/VL available; `y` holds 16 values; `O` is 1 or 2 bytes.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn store16<O: QInt>(y: &mut [O], r: std::arch::x86_64::__m512i) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's bounds.
    unsafe {
        if std::mem::size_of::<O>() == 1 {
            _mm_storeu_si128(y.as_mut_ptr() as *mut _, _mm512_cvtepi32_epi8(r));
        } else {
            _mm256_storeu_si256(y.as_mut_ptr() as *mut _, _mm512_cvtepi32_epi16(r));
        }
    }
}

/// Loads sixteen values of `O` (1 or 2 bytes) as i32 lanes.
///
/// # Safety
/// AVX-512 F/BW/VL available; `y` holds 16 values; `O` is 1 or 2 bytes.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn load16<O: QInt>(y: &[O]) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    // SAFETY: the caller's bounds.
    unsafe {
        if std::mem::size_of::<O>() == 1 {
            _mm512_cvtepi8_epi32(_mm_loadu_si128(y.as_ptr() as *const _))
        } else {
            _mm512_cvtepi16_epi32(_mm256_loadu_si256(y.as_ptr() as *const _))
        }
    }
}

/// `y = clamp(sat((y·my + b·mb + rnd) >> sh), lo, hi)` (a fused Add's
/// two-input rescale) sixteen values at a time: both products by even/odd
/// `vpmuldq` (`|y·my + b·mb| < 2^48` for 16-bit values and i32
/// multipliers), the add and shift in i64, saturation to `O`, the clamp in
/// i32. Returns how many values it wrote (whole blocks of sixteen).
///
/// # Safety
/// AVX-512 F/BW/DQ/VL available; `O` and `B` are 1 or 2 bytes; `my`, `mb`
/// are i32 values; `sh ≤ 62`; `O::MIN ≤ lo ≤ hi ≤ O::MAX`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn rescale2_in_place_avx512<O: QInt, B: QInt>(
    y: &mut [O],
    b: &[B],
    my: i64,
    mb: i64,
    sh: u32,
    lo: i64,
    hi: i64,
) -> usize {
    use std::arch::x86_64::*;
    let rnd = if sh == 0 { 0 } else { 1i64 << (sh - 1) };
    let k = Rq16::new::<O>(my, rnd, sh);
    let mbv = _mm512_set1_epi64(mb);
    let (lo, hi) = (_mm512_set1_epi32(lo as i32), _mm512_set1_epi32(hi as i32));
    let whole = y.len().min(b.len()) / 16 * 16;
    for (yv, bv) in y[..whole]
        .chunks_exact_mut(16)
        .zip(b[..whole].chunks_exact(16))
    {
        // SAFETY: 16 values are read from `bv` and read and written in `yv`.
        unsafe {
            let r = k.apply2(load16(yv), load16(bv), mbv);
            store16(yv, _mm512_min_epi32(_mm512_max_epi32(r, lo), hi));
        }
    }
    whole
}

/// [`rq_in_place_lanes`], sixteen values at a time on AVX-512 for 8/16-bit
/// `O`, a shift of at most 62 and `lo ≤ hi` inside `O`'s range.
pub(super) fn rq_in_place<O: QInt>(y: &mut [O], r: &Requant, lo: i64, hi: i64) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if has_avx512()
        && matches!(std::mem::size_of::<O>(), 1 | 2)
        && !r.is_identity()
        && r.shift() <= 62
        && O::MIN <= lo
        && lo <= hi
        && hi <= O::MAX
    {
        // SAFETY: AVX-512 detected; `O` is 1 or 2 bytes.
        done = unsafe { rq_in_place_avx512(y, r, lo, hi) };
    }
    rq_in_place_lanes(&mut y[done..], r, lo, hi);
}

/// The whole blocks of sixteen of [`rq_in_place`]: the i64 steps of
/// [`rq_in_place_body`] (`|v·M| < 2^46`), then the clamp to `[lo, hi]`.
///
/// # Safety
/// AVX-512 F/BW/DQ/VL available; `O` is 1 or 2 bytes; `O::MIN ≤ lo ≤ hi
/// ≤ O::MAX`; `r.shift() ≤ 62`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn rq_in_place_avx512<O: QInt>(y: &mut [O], r: &Requant, lo: i64, hi: i64) -> usize {
    use std::arch::x86_64::*;
    let sh = r.shift();
    let rnd = if sh == 0 { 0 } else { 1i64 << (sh - 1) };
    let k = Rq16::new::<O>(i64::from(r.multiplier()), rnd, sh);
    let (lo, hi) = (_mm512_set1_epi32(lo as i32), _mm512_set1_epi32(hi as i32));
    let whole = y.len() / 16 * 16;
    for yv in y[..whole].chunks_exact_mut(16) {
        // SAFETY: 16 values of `O` are read and written.
        unsafe {
            let v = k.apply(load16(yv));
            store16(yv, _mm512_min_epi32(_mm512_max_epi32(v, lo), hi));
        }
    }
    whole
}

/// The single-requantisation, no-bias case of [`mm_epilogue`].
fn mm_simple(bias: Option<&[i64]>, requant: &[Requant]) -> Option<(i64, i64, u32)> {
    match (bias, requant) {
        (None, [r]) if r.shift() <= 62 => {
            let sh = r.shift();
            Some((
                i64::from(r.multiplier()),
                if sh == 0 { 0 } else { 1i64 << (sh - 1) },
                sh,
            ))
        }
        _ => None,
    }
}

/// Up to `16 · NB` columns of `R` output rows: `Σ_t vpmaddwd(a pair t,
/// b pairs t)` per row, stored to `out[r]`. `ap` holds the rows' i16
/// pairs one after another, `kp` per row. Several rows at once keep
/// independent accumulator chains in flight and load each B vector once.
///
/// # Safety
/// AVX-512 F/BW available; `ap.len() ≥ R · kp`; `bp` readable for
/// `(kp − 1) · np + 16 · NB` i32; `out + r · stride` writable for `16 · NB`
/// i32 for every row `r < R` (rows are stored in increasing order, so a
/// row may spill into the next one's place).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn mm_rows_avx512<const NB: usize, const R: usize>(
    ap: &[i32],
    kp: usize,
    bp: *const i32,
    np: usize,
    out: *mut i32,
    stride: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: reads and writes inside the ranges the caller guarantees.
    unsafe {
        let mut acc = [[_mm512_setzero_si512(); NB]; R];
        for t in 0..kp {
            let row = bp.add(t * np);
            let mut bv = [_mm512_setzero_si512(); NB];
            for (c, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(row.add(16 * c) as *const __m512i);
            }
            for (r, accr) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_epi32(*ap.get_unchecked(r * kp + t));
                for (a, &b) in accr.iter_mut().zip(&bv) {
                    *a = _mm512_add_epi32(*a, _mm512_madd_epi16(av, b));
                }
            }
        }
        for (r, accr) in acc.iter().enumerate() {
            for (c, a) in accr.iter().enumerate() {
                _mm512_storeu_si512(out.add(r * stride + 16 * c) as *mut __m512i, *a);
            }
        }
    }
}

/// [`mm_rows_avx512`] for at most 8 columns in 256-bit vectors: a 512-bit
/// op costs two 256-bit ones on this kind of core, so a block of 8 live
/// columns in 16 lanes would pay for 8 dead ones.
///
/// # Safety
/// AVX2 available; `ap.len() ≥ R · kp`; `bp` readable for `(kp − 1) · np
/// + 8` i32; `out + r · stride` writable for 8 i32 for every row `r < R`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn mm_rows_half<const R: usize>(
    ap: &[i32],
    kp: usize,
    bp: *const i32,
    np: usize,
    out: *mut i32,
    stride: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: reads and writes inside the ranges the caller guarantees.
    unsafe {
        let mut acc = [_mm256_setzero_si256(); R];
        for t in 0..kp {
            let bv = _mm256_loadu_si256(bp.add(t * np) as *const __m256i);
            for (r, a) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_epi32(*ap.get_unchecked(r * kp + t));
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(av, bv));
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_si256(out.add(r * stride) as *mut __m256i, *a);
        }
    }
}

/// Rows of A that [`matmul_block_avx512`] multiplies at once.
const MM_ROWS: usize = 4;

/// [`mm_rows_avx512`] for `w` columns (1..=64) in `⌈w/16⌉` 16-column
/// blocks and `R` rows ([`mm_rows_half`] for at most 8).
///
/// # Safety
/// As [`mm_rows_avx512`] with `NB = ⌈w/16⌉` (8 columns for `w ≤ 8`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
#[inline]
unsafe fn mm_rows_nb<const R: usize>(
    w: usize,
    ap: &[i32],
    kp: usize,
    bp: *const i32,
    np: usize,
    out: *mut i32,
    stride: usize,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match w.div_ceil(16) {
            1 if w <= 8 => mm_rows_half::<R>(ap, kp, bp, np, out, stride),
            1 => mm_rows_avx512::<1, R>(ap, kp, bp, np, out, stride),
            2 => mm_rows_avx512::<2, R>(ap, kp, bp, np, out, stride),
            3 => mm_rows_avx512::<3, R>(ap, kp, bp, np, out, stride),
            _ => mm_rows_avx512::<4, R>(ap, kp, bp, np, out, stride),
        }
    }
}

/// [`mm_rows_nb`] for `rows` (1..=[`MM_ROWS`]) rows.
///
/// # Safety
/// As [`mm_rows_nb`] with `R = rows`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn mm_rows_any(
    rows: usize,
    w: usize,
    ap: &[i32],
    kp: usize,
    bp: *const i32,
    np: usize,
    out: *mut i32,
    stride: usize,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match rows {
            MM_ROWS => mm_rows_nb::<MM_ROWS>(w, ap, kp, bp, np, out, stride),
            3 => mm_rows_nb::<3>(w, ap, kp, bp, np, out, stride),
            2 => mm_rows_nb::<2>(w, ap, kp, bp, np, out, stride),
            _ => mm_rows_nb::<1>(w, ap, kp, bp, np, out, stride),
        }
    }
}

/// [`matmul_block`] for exact i32 sums (`K · max|a| · max|b| < 2^31`) on
/// AVX-512: B packed once per block as i16 pairs along K (`[⌈K/2⌉][N
/// rounded up to 16]`, zero padded), [`MM_ROWS`] rows of A at a time as
/// i16 pairs, one `vpmaddwd` per pair, row and 16 columns (products of two
/// 8/16-bit values, every partial sum bounded by the exact total), then the
/// vectorised epilogue. The same integers as [`matmul_block_body`].
///
/// # Safety
/// AVX-512 F/BW/DQ/VL available; `A`, `B` are 8- or 16-bit types.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
pub(super) unsafe fn matmul_block_avx512<A: QInt, B: QInt, O: QInt>(
    a: &[A],
    b: &[B],
    y: &mut [O],
    (m, k, n): (usize, usize, usize),
    bias: Option<&[i64]>,
    requant: &[Requant],
    acc32: &mut Vec<i32>,
) {
    let kp = k.div_ceil(2);
    let np = n.div_ceil(16) * 16;
    // At most 16 columns: every row's sums go into one buffer of `m · n`
    // (row stride `n`; a row's vector store spills into the next row's
    // place before that row is stored), then one epilogue pass runs over
    // all of them instead of one short pass per row.
    let flat = n <= 16;
    let sums_len = if flat { m * n + 16 } else { 0 };
    let need = kp * np + MM_ROWS * kp + sums_len;
    // Every value is written below (the padding columns explicitly): no
    // clearing of the whole buffer per batch.
    if acc32.len() < need {
        acc32.resize(need, 0);
    }
    let (bp, rest) = acc32.split_at_mut(kp * np);
    let (ap, sums) = rest.split_at_mut(MM_ROWS * kp);
    for (t, row) in bp.chunks_exact_mut(np).enumerate() {
        row[n..].fill(0);
        let r0 = &b[2 * t * n..(2 * t + 1) * n];
        if 2 * t + 1 < k {
            let r1 = &b[(2 * t + 1) * n..(2 * t + 2) * n];
            for ((d, &x0), &x1) in row.iter_mut().zip(r0).zip(r1) {
                *d = pair16(x0.to_i64(), x1.to_i64());
            }
        } else {
            for (d, &x0) in row.iter_mut().zip(r0) {
                *d = pair16(x0.to_i64(), 0);
            }
        }
    }
    let simple = mm_simple(bias, requant);
    let mut tile = [[0i32; 64]; MM_ROWS];
    for (g, (arows, yrows)) in a[..m * k]
        .chunks(MM_ROWS * k)
        .zip(y[..m * n].chunks_mut(MM_ROWS * n))
        .enumerate()
    {
        let rows = arows.len() / k;
        for (arow, dst) in arows.chunks_exact(k).zip(ap.chunks_exact_mut(kp)) {
            let pairs = arow.chunks_exact(2);
            let odd = pairs.remainder().first().map(|v| pair16(v.to_i64(), 0));
            for (d, p) in dst.iter_mut().zip(pairs) {
                *d = pair16(p[0].to_i64(), p[1].to_i64());
            }
            if let Some(v) = odd {
                dst[kp - 1] = v;
            }
        }
        if flat {
            // SAFETY: AVX-512 available (caller); `ap` holds `rows` packed
            // rows; `bp` rows hold `np ≥ 16` entries; row `r` of this group
            // stores 16 (or 8) values at `(g · MM_ROWS + r) · n`, inside
            // `sums` (`m · n + 16` long).
            unsafe {
                let out = sums.as_mut_ptr().add(g * MM_ROWS * n);
                mm_rows_any(rows, n, ap, kp, bp.as_ptr(), np, out, n);
            }
            continue;
        }
        let mut j0 = 0;
        while j0 < n {
            let w = (n - j0).min(64);
            // SAFETY: AVX-512 available (caller); `ap` holds `rows` packed
            // rows; row t of `bp` has `np` entries and `j0 + 16 · ⌈w/16⌉ ≤
            // np`; the tile rows hold 64 values each.
            unsafe {
                let bq = bp.as_ptr().add(j0);
                mm_rows_any(rows, w, ap, kp, bq, np, tile.as_mut_ptr() as *mut i32, 64);
            }
            for (t, yrow) in tile.iter().zip(yrows.chunks_exact_mut(n)) {
                // SAFETY: AVX-512 available (caller).
                unsafe { mm_finish(&t[..w], &mut yrow[j0..j0 + w], j0, simple, bias, requant) };
            }
            j0 += w;
        }
    }
    if flat {
        if simple.is_some() {
            // SAFETY: AVX-512 available (caller).
            unsafe { mm_finish(&sums[..m * n], &mut y[..m * n], 0, simple, bias, requant) };
        } else {
            for (srow, yrow) in sums[..m * n].chunks_exact(n).zip(y.chunks_exact_mut(n)) {
                mm_epilogue(srow, yrow, 0, simple, bias, requant);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_block_avx2<A: QInt, B: QInt, O: QInt>(
    a: &[A],
    b: &[B],
    y: &mut [O],
    mkn: (usize, usize, usize),
    bias: Option<&[i64]>,
    requant: &[Requant],
    wide: bool,
    acc32: &mut Vec<i32>,
    acc64: &mut Vec<i64>,
) {
    matmul_block_body(a, b, y, mkn, bias, requant, wide, acc32, acc64)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_block_body<A: QInt, B: QInt, O: QInt>(
    a: &[A],
    b: &[B],
    y: &mut [O],
    (m, k, n): (usize, usize, usize),
    bias: Option<&[i64]>,
    requant: &[Requant],
    wide: bool,
    acc32: &mut Vec<i32>,
    acc64: &mut Vec<i64>,
) {
    let rq = |j: usize| &requant[if requant.len() == 1 { 0 } else { j }];
    // Final step of an exact i32 sum: bias, requantisation (the
    // single-requant, no-bias case in plain i64: |acc·M| ≤ 2^62).
    let simple = mm_simple(bias, requant);
    let fin = |j: usize, s: i32| -> O {
        match simple {
            Some((mm, rnd, sh)) => O::sat_i64((i64::from(s) * mm + rnd) >> sh),
            None => rq(j).apply_fast::<O>(i64::from(s) + bias.map_or(0, |bs| bs[j])),
        }
    };
    if !wide && n < 16 {
        // Few columns: B transposed once, then dot products over K.
        acc32.clear();
        acc32.resize(n * k + k, 0);
        let (bt, arow) = acc32.split_at_mut(n * k);
        for t in 0..k {
            for j in 0..n {
                bt[j * k + t] = b[t * n + j].to_i64() as i32;
            }
        }
        for i in 0..m {
            for (d, v) in arow.iter_mut().zip(&a[i * k..(i + 1) * k]) {
                *d = v.to_i64() as i32;
            }
            for j in 0..n {
                let s: i32 = arow
                    .iter()
                    .zip(&bt[j * k..(j + 1) * k])
                    .map(|(&p, &q)| p * q)
                    .sum();
                y[i * n + j] = fin(j, s);
            }
        }
    } else if !wide {
        acc32.clear();
        acc32.resize(n, 0);
        for i in 0..m {
            acc32.iter_mut().for_each(|v| *v = 0);
            for t in 0..k {
                let av = a[i * k + t].to_i64() as i32;
                for (s, bv) in acc32.iter_mut().zip(&b[t * n..(t + 1) * n]) {
                    *s += av * (bv.to_i64() as i32);
                }
            }
            for (j, (d, &s)) in y[i * n..(i + 1) * n]
                .iter_mut()
                .zip(acc32.iter())
                .enumerate()
            {
                *d = fin(j, s);
            }
        }
    } else {
        acc64.clear();
        acc64.resize(n, 0);
        for i in 0..m {
            for (j, s) in acc64.iter_mut().enumerate() {
                *s = bias.map_or(0, |bs| bs[j]);
            }
            for t in 0..k {
                let av = a[i * k + t].to_i64();
                for (s, bv) in acc64.iter_mut().zip(&b[t * n..(t + 1) * n]) {
                    *s += av * bv.to_i64();
                }
            }
            for (j, (d, &s)) in y[i * n..(i + 1) * n]
                .iter_mut()
                .zip(acc64.iter())
                .enumerate()
            {
                *d = rq(j).apply_fast::<O>(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_split_transposes_match_the_run_copies() {
        for inner in [8usize, 16, 32, 64, 5] {
            let xs = [2usize, 3, 4, inner];
            let x: Vec<i16> = (0..xs.iter().product::<usize>() as i16).collect();
            let mut fast = vec![0i16; x.len()];
            let mut runs = vec![0i16; x.len()];
            transpose(&x, &mut fast, &xs, &[0, 2, 1, 3]);
            transpose_runs(&x, &mut runs, &xs, &[0, 2, 1, 3]);
            assert_eq!(fast, runs, "inner {inner}");
            // y[b, h, s, :] = x[b, s, h, :]
            let x_at = |b: usize, s: usize, h: usize| ((b * 3 + s) * 4 + h) * inner;
            let y_at = |b: usize, h: usize, s: usize| ((b * 4 + h) * 3 + s) * inner;
            assert_eq!(fast[y_at(1, 2, 1)], x[x_at(1, 1, 2)]);
        }
    }
}
