//! The elementwise engine shared by the unary, binary, reduce and quantize
//! kernels: parallel maps over contiguous data, a broadcasting zip that never
//! materialises the broadcast, the [`Num`] arithmetic trait (wrapping integer
//! semantics, NaN-propagating float min/max) and dtype-pair dispatch macros.

use crate::error::OpResult;
use crate::kernels::util::broadcast_shapes;
use half::{bf16, f16};
use hb_tensor::tensor::Scalar;
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

/// Element count from which elementwise loops run on the rayon pool.
pub const PAR_MIN: usize = 1 << 16;

/// Elements per rayon task.
const PAR_CHUNK: usize = 1 << 14;

/// Maps a slice, in parallel when it is large.
pub fn map_slice<T, U, F>(s: &[T], f: F) -> Vec<U>
where
    T: Copy + Sync,
    U: Send,
    F: Fn(T) -> U + Sync + Send,
{
    if s.len() >= PAR_MIN && crate::threads::kernel_threads() > 1 {
        s.par_iter()
            .with_min_len(PAR_CHUNK)
            .map(|&x| f(x))
            .collect()
    } else {
        s.iter().map(|&x| f(x)).collect()
    }
}

/// Maps every element of an array (fast path for standard layout).
pub fn map_array<T, U, F>(a: &ArrayD<T>, f: F) -> ArrayD<U>
where
    T: Copy + Sync,
    U: Send,
    F: Fn(T) -> U + Sync + Send,
{
    if let Some(s) = a.as_slice() {
        if let Ok(r) = ArrayD::from_shape_vec(a.raw_dim(), map_slice(s, &f)) {
            return r;
        }
    }
    a.map(|&x| f(x))
}

/// One broadcast dimension after collapsing: size and per-operand strides.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Dim3 {
    n: usize,
    sa: usize,
    sb: usize,
}

/// Element strides of a standard-layout `shape` right-aligned to `rank`
/// dims, with 0 for broadcast (size-1 or missing) dims.
fn bcast_strides(shape: &[usize], rank: usize) -> Vec<usize> {
    let mut st = vec![0; rank];
    let mut acc = 1;
    for (k, &d) in shape.iter().enumerate().rev() {
        let i = rank - shape.len() + k;
        st[i] = if d == 1 { 0 } else { acc };
        acc *= d;
    }
    st
}

/// Drops size-1 dims and merges adjacent dims that are contiguous for both operands.
fn collapse(out: &[usize], sa: &[usize], sb: &[usize]) -> Vec<Dim3> {
    let mut dims: Vec<Dim3> = Vec::with_capacity(out.len());
    for i in 0..out.len() {
        if out[i] == 1 {
            continue;
        }
        let d = Dim3 {
            n: out[i],
            sa: sa[i],
            sb: sb[i],
        };
        match dims.last_mut() {
            Some(p) if p.sa == d.sa * d.n && p.sb == d.sb * d.n => {
                p.n *= d.n;
                p.sa = d.sa;
                p.sb = d.sb;
            }
            _ => dims.push(d),
        }
    }
    dims
}

/// Fills one output row; `a`/`b` are the row's operand data (length 1 when broadcast).
#[inline]
fn fill_row<A: Copy, B: Copy, O: Copy>(out: &mut [O], a: &[A], b: &[B], f: &impl Fn(A, B) -> O) {
    match (
        a.len() == 1 && out.len() != 1,
        b.len() == 1 && out.len() != 1,
    ) {
        (false, false) => {
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = f(x, y);
            }
        }
        (false, true) => {
            let y = b[0];
            for (o, &x) in out.iter_mut().zip(a) {
                *o = f(x, y);
            }
        }
        (true, false) => {
            let x = a[0];
            for (o, &y) in out.iter_mut().zip(b) {
                *o = f(x, y);
            }
        }
        (true, true) => {
            let v = f(a[0], b[0]);
            out.fill(v);
        }
    }
}

/// Row layout of a broadcast: outer dims and the inner (contiguous or broadcast) row.
struct Rows {
    outer: Vec<Dim3>,
    inner: Dim3,
}

impl Rows {
    /// Offsets into `a` and `b` of output row `r`.
    fn offsets(&self, mut r: usize) -> (usize, usize) {
        let (mut oa, mut ob) = (0, 0);
        for d in self.outer.iter().rev() {
            let i = r % d.n;
            r /= d.n;
            oa += i * d.sa;
            ob += i * d.sb;
        }
        (oa, ob)
    }

    /// Fills `chunk`, which starts at output row `first_row`.
    fn fill<A: Copy, B: Copy, O: Copy>(
        &self,
        chunk: &mut [O],
        first_row: usize,
        a: &[A],
        b: &[B],
        f: &impl Fn(A, B) -> O,
    ) {
        let l = self.inner.n;
        let la = if self.inner.sa == 0 { 1 } else { l };
        let lb = if self.inner.sb == 0 { 1 } else { l };
        for (k, row) in chunk.chunks_mut(l).enumerate() {
            let (oa, ob) = self.offsets(first_row + k);
            if let (Some(ra), Some(rb)) = (a.get(oa..oa + la), b.get(ob..ob + lb)) {
                fill_row(row, ra, rb, f);
            }
        }
    }
}

/// `f(a, b)` elementwise with numpy broadcasting. Fast paths: equal shapes,
/// a scalar operand, and any broadcast whose innermost collapsed dim is
/// contiguous or broadcast (bias `[C,1,1]` against `[N,C,H,W]`), all without
/// materialising the broadcast; parallel above [`PAR_MIN`] elements.
pub fn zip_broadcast<A, B, O, F>(a: &ArrayD<A>, b: &ArrayD<B>, f: F) -> OpResult<ArrayD<O>>
where
    A: Copy + Sync + Send,
    B: Copy + Sync + Send,
    O: Copy + Send + Sync + Default,
    F: Fn(A, B) -> O + Sync + Send,
{
    let shape = broadcast_shapes(a.shape(), b.shape())?;
    let n: usize = shape.iter().product();
    let a = a.as_standard_layout();
    let b = b.as_standard_layout();
    let (Some(sa), Some(sb)) = (a.as_slice(), b.as_slice()) else {
        return Err(crate::invalid!("internal: non-contiguous operand"));
    };
    let out: Vec<O> = if n == 0 {
        Vec::new()
    } else if sa.len() == n && sb.len() == n {
        if n >= PAR_MIN && crate::threads::kernel_threads() > 1 {
            sa.par_iter()
                .with_min_len(PAR_CHUNK)
                .zip(sb.par_iter())
                .map(|(&x, &y)| f(x, y))
                .collect()
        } else {
            sa.iter().zip(sb).map(|(&x, &y)| f(x, y)).collect()
        }
    } else if sb.len() == 1 && sa.len() == n {
        let y = sb[0];
        map_slice(sa, |x| f(x, y))
    } else if sa.len() == 1 && sb.len() == n {
        let x = sa[0];
        map_slice(sb, |y| f(x, y))
    } else {
        general_zip(&shape, a.shape(), b.shape(), sa, sb, &f)
    };
    ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| crate::invalid!("{e}"))
}

/// `dst = f(dst, b)` elementwise in `dst`'s own buffer, `b` broadcast to
/// `dst`'s shape: the in-place form of [`zip_broadcast`] (same fast paths,
/// same results), for a kernel handed its input. `false`, with `dst`
/// untouched, when `dst` is not in standard layout or its shape is not the
/// broadcast shape (the result would be larger).
pub fn zip_into<A, B, F>(dst: &mut ArrayD<A>, b: &ArrayD<B>, f: F) -> bool
where
    A: Copy + Sync + Send,
    B: Copy + Sync + Send,
    F: Fn(A, B) -> A + Sync + Send,
{
    let shape = dst.shape().to_vec();
    if broadcast_shapes(&shape, b.shape()).ok().as_deref() != Some(&shape[..]) {
        return false;
    }
    let b = b.as_standard_layout();
    let (Some(sd), Some(sb)) = (dst.as_slice_mut(), b.as_slice()) else {
        return false;
    };
    let n = sd.len();
    let par = n >= PAR_MIN && crate::threads::kernel_threads() > 1;
    if n == 0 {
    } else if sb.len() == n {
        let zip = |d: &mut [A], s: &[B]| {
            for (x, &y) in d.iter_mut().zip(s) {
                *x = f(*x, y);
            }
        };
        if par {
            sd.par_chunks_mut(PAR_CHUNK)
                .zip(sb.par_chunks(PAR_CHUNK))
                .for_each(|(d, s)| zip(d, s));
        } else {
            zip(sd, sb);
        }
    } else if sb.len() == 1 {
        let y = sb[0];
        let map = |d: &mut [A]| d.iter_mut().for_each(|x| *x = f(*x, y));
        if par {
            sd.par_chunks_mut(PAR_CHUNK).for_each(map);
        } else {
            map(sd);
        }
    } else {
        let rank = shape.len();
        let mut dims = collapse(
            &shape,
            &bcast_strides(&shape, rank),
            &bcast_strides(b.shape(), rank),
        );
        let inner = dims.pop().unwrap_or(Dim3 { n: 1, sa: 0, sb: 0 });
        let rows = Rows { outer: dims, inner };
        let l = inner.n.max(1);
        let lb = if inner.sb == 0 { 1 } else { l };
        let fill = |chunk: &mut [A], first_row: usize| {
            for (k, row) in chunk.chunks_mut(l).enumerate() {
                let (_, ob) = rows.offsets(first_row + k);
                match sb.get(ob..ob + lb) {
                    Some([y]) if lb == 1 => row.iter_mut().for_each(|x| *x = f(*x, *y)),
                    Some(rb) => {
                        for (x, &y) in row.iter_mut().zip(rb) {
                            *x = f(*x, y);
                        }
                    }
                    None => {}
                }
            }
        };
        let rows_per_chunk = (PAR_CHUNK / l).max(1);
        if par {
            sd.par_chunks_mut(rows_per_chunk * l)
                .enumerate()
                .for_each(|(c, chunk)| fill(chunk, c * rows_per_chunk));
        } else {
            fill(sd, 0);
        }
    }
    true
}

fn general_zip<A, B, O, F>(
    shape: &[usize],
    ash: &[usize],
    bsh: &[usize],
    sa: &[A],
    sb: &[B],
    f: &F,
) -> Vec<O>
where
    A: Copy + Sync + Send,
    B: Copy + Sync + Send,
    O: Copy + Send + Sync + Default,
    F: Fn(A, B) -> O + Sync + Send,
{
    let n: usize = shape.iter().product();
    let mut dims = collapse(
        shape,
        &bcast_strides(ash, shape.len()),
        &bcast_strides(bsh, shape.len()),
    );
    let inner = dims.pop().unwrap_or(Dim3 { n: 1, sa: 0, sb: 0 });
    let rows = Rows { outer: dims, inner };
    let mut out = vec![O::default(); n];
    let l = rows.inner.n.max(1);
    let rows_per_chunk = (PAR_CHUNK / l).max(1);
    if n >= PAR_MIN && crate::threads::kernel_threads() > 1 {
        out.par_chunks_mut(rows_per_chunk * l)
            .enumerate()
            .for_each(|(c, chunk)| rows.fill(chunk, c * rows_per_chunk, sa, sb, f));
    } else {
        rows.fill(&mut out, 0, sa, sb, f);
    }
    out
}

/// Arithmetic on every numeric element type: wrapping integer arithmetic
/// (no overflow panics), NaN-propagating float min/max, floats of 16 bits
/// computed through f32.
pub trait Num: Scalar + Send + Sync {
    /// Zero.
    fn zero() -> Self;
    /// One.
    fn one() -> Self;
    /// The smallest value (−inf for floats).
    fn lowest() -> Self;
    /// The largest value (+inf for floats).
    fn highest() -> Self;
    /// `a + b`.
    fn nadd(self, o: Self) -> Self;
    /// `a − b`.
    fn nsub(self, o: Self) -> Self;
    /// `a · b`.
    fn nmul(self, o: Self) -> Self;
    /// `a / b`; integers truncate toward zero and give 0 for a zero divisor
    /// (kernels reject zero divisors before calling this).
    fn ndiv(self, o: Self) -> Self;
    /// Remainder with the sign of the dividend (C `fmod`).
    fn rem_trunc(self, o: Self) -> Self;
    /// Remainder with the sign of the divisor (Python `%`).
    fn rem_floor(self, o: Self) -> Self;
    /// `−a`.
    fn nneg(self) -> Self;
    /// `|a|`.
    fn nabs(self) -> Self;
    /// −1, 0 or 1 (NaN for NaN).
    fn nsign(self) -> Self;
    /// Maximum, NaN if either is NaN.
    fn nmax(self, o: Self) -> Self;
    /// Minimum, NaN if either is NaN.
    fn nmin(self, o: Self) -> Self;
    /// True for NaN.
    fn nan(self) -> bool;
    /// True for zero.
    fn is_zero(self) -> bool;
}

macro_rules! num_int {
    ($t:ty, $abs:expr, $sign:expr, $floor_fix:expr) => {
        impl Num for $t {
            #[inline]
            fn zero() -> Self {
                0
            }
            #[inline]
            fn one() -> Self {
                1
            }
            #[inline]
            fn lowest() -> Self {
                <$t>::MIN
            }
            #[inline]
            fn highest() -> Self {
                <$t>::MAX
            }
            #[inline]
            fn nadd(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            #[inline]
            fn nsub(self, o: Self) -> Self {
                self.wrapping_sub(o)
            }
            #[inline]
            fn nmul(self, o: Self) -> Self {
                self.wrapping_mul(o)
            }
            #[inline]
            fn ndiv(self, o: Self) -> Self {
                if o == 0 {
                    0
                } else {
                    self.wrapping_div(o)
                }
            }
            #[inline]
            fn rem_trunc(self, o: Self) -> Self {
                if o == 0 {
                    0
                } else {
                    self.wrapping_rem(o)
                }
            }
            #[inline]
            fn rem_floor(self, o: Self) -> Self {
                let r = self.rem_trunc(o);
                let fix: fn($t, $t) -> bool = $floor_fix;
                if fix(r, o) {
                    r.wrapping_add(o)
                } else {
                    r
                }
            }
            #[inline]
            fn nneg(self) -> Self {
                self.wrapping_neg()
            }
            #[inline]
            fn nabs(self) -> Self {
                let f: fn($t) -> $t = $abs;
                f(self)
            }
            #[inline]
            fn nsign(self) -> Self {
                let f: fn($t) -> $t = $sign;
                f(self)
            }
            #[inline]
            fn nmax(self, o: Self) -> Self {
                Ord::max(self, o)
            }
            #[inline]
            fn nmin(self, o: Self) -> Self {
                Ord::min(self, o)
            }
            #[inline]
            fn nan(self) -> bool {
                false
            }
            #[inline]
            fn is_zero(self) -> bool {
                self == 0
            }
        }
    };
}

macro_rules! num_signed {
    ($($t:ty),*) => {$(
        num_int!($t, |x| x.wrapping_abs(), |x| x.signum(), |r, o| r != 0 && ((r < 0) != (o < 0)));
    )*};
}
macro_rules! num_unsigned {
    ($($t:ty),*) => {$(
        num_int!($t, |x| x, |x| if x == 0 { 0 } else { 1 }, |_, _| false);
    )*};
}
num_signed!(i8, i16, i32, i64);
num_unsigned!(u8, u16, u32, u64);

macro_rules! num_float {
    ($($t:ty),*) => {$(
        impl Num for $t {
            #[inline]
            fn zero() -> Self { 0.0 }
            #[inline]
            fn one() -> Self { 1.0 }
            #[inline]
            fn lowest() -> Self { <$t>::NEG_INFINITY }
            #[inline]
            fn highest() -> Self { <$t>::INFINITY }
            #[inline]
            fn nadd(self, o: Self) -> Self { self + o }
            #[inline]
            fn nsub(self, o: Self) -> Self { self - o }
            #[inline]
            fn nmul(self, o: Self) -> Self { self * o }
            #[inline]
            fn ndiv(self, o: Self) -> Self { self / o }
            #[inline]
            fn rem_trunc(self, o: Self) -> Self { self % o }
            #[inline]
            fn rem_floor(self, o: Self) -> Self {
                let r = self % o;
                if r != 0.0 && ((r < 0.0) != (o < 0.0)) { r + o } else { r }
            }
            #[inline]
            fn nneg(self) -> Self { -self }
            #[inline]
            fn nabs(self) -> Self { self.abs() }
            #[inline]
            fn nsign(self) -> Self {
                if self.is_nan() || self == 0.0 { self } else { self.signum() }
            }
            #[inline]
            fn nmax(self, o: Self) -> Self {
                if self.is_nan() || o.is_nan() { <$t>::NAN } else if o > self { o } else { self }
            }
            #[inline]
            fn nmin(self, o: Self) -> Self {
                if self.is_nan() || o.is_nan() { <$t>::NAN } else if o < self { o } else { self }
            }
            #[inline]
            fn nan(self) -> bool { self.is_nan() }
            #[inline]
            fn is_zero(self) -> bool { self == 0.0 }
        }
    )*};
}
num_float!(f32, f64);

macro_rules! num_half {
    ($($t:ty),*) => {$(
        impl Num for $t {
            #[inline]
            fn zero() -> Self { <$t>::ZERO }
            #[inline]
            fn one() -> Self { <$t>::ONE }
            #[inline]
            fn lowest() -> Self { <$t>::NEG_INFINITY }
            #[inline]
            fn highest() -> Self { <$t>::INFINITY }
            #[inline]
            fn nadd(self, o: Self) -> Self { Self::from_f32(self.to_f32() + o.to_f32()) }
            #[inline]
            fn nsub(self, o: Self) -> Self { Self::from_f32(self.to_f32() - o.to_f32()) }
            #[inline]
            fn nmul(self, o: Self) -> Self { Self::from_f32(self.to_f32() * o.to_f32()) }
            #[inline]
            fn ndiv(self, o: Self) -> Self { Self::from_f32(self.to_f32() / o.to_f32()) }
            #[inline]
            fn rem_trunc(self, o: Self) -> Self { Self::from_f32(self.to_f32().rem_trunc(o.to_f32())) }
            #[inline]
            fn rem_floor(self, o: Self) -> Self { Self::from_f32(self.to_f32().rem_floor(o.to_f32())) }
            #[inline]
            fn nneg(self) -> Self { -self }
            #[inline]
            fn nabs(self) -> Self { Self::from_f32(self.to_f32().abs()) }
            #[inline]
            fn nsign(self) -> Self { Self::from_f32(self.to_f32().nsign()) }
            #[inline]
            fn nmax(self, o: Self) -> Self { Self::from_f32(self.to_f32().nmax(o.to_f32())) }
            #[inline]
            fn nmin(self, o: Self) -> Self { Self::from_f32(self.to_f32().nmin(o.to_f32())) }
            #[inline]
            fn nan(self) -> bool { self.is_nan() }
            #[inline]
            fn is_zero(self) -> bool { self.to_f32() == 0.0 }
        }
    )*};
}
num_half!(f16, bf16);

/// Dispatches on two tensors holding the same element type from a list of
/// `Variant type` pairs; `$e` sees the arrays as `$x`, `$y` and the element
/// type as `$T`. Evaluates to `Option<_>` (None when the types differ or are
/// not in the list).
#[macro_export]
macro_rules! same_pair {
    ($a:expr, $b:expr, $x:ident, $y:ident, $T:ident => $e:expr; $($V:ident $t:ty),* $(,)?) => {
        match ($a, $b) {
            $( (hb_tensor::Tensor::$V($x), hb_tensor::Tensor::$V($y)) => {
                #[allow(dead_code)]
                type $T = $t;
                Some($e)
            } )*
            _ => None,
        }
    };
}

/// [`same_pair!`] over every numeric type.
#[macro_export]
macro_rules! num_pair {
    ($a:expr, $b:expr, $x:ident, $y:ident, $T:ident => $e:expr) => {
        $crate::same_pair!($a, $b, $x, $y, $T => $e;
            F32 f32, F64 f64, F16 half::f16, BF16 half::bf16, I8 i8, I16 i16, I32 i32,
            I64 i64, U8 u8, U16 u16, U32 u32, U64 u64)
    };
}

/// [`same_pair!`] over the integer types.
#[macro_export]
macro_rules! int_pair {
    ($a:expr, $b:expr, $x:ident, $y:ident, $T:ident => $e:expr) => {
        $crate::same_pair!($a, $b, $x, $y, $T => $e;
            I8 i8, I16 i16, I32 i32, I64 i64, U8 u8, U16 u16, U32 u32, U64 u64)
    };
}

/// Dispatches on one numeric tensor (every numeric type), giving `Option<_>`
/// of whatever `$e` evaluates to (unlike `map_numeric!`, which must give an array).
#[macro_export]
macro_rules! with_num {
    ($t:expr, $x:ident, $T:ident => $e:expr) => {
        $crate::same_pair!(($t), ($t), $x, _unused, $T => $e;
            F32 f32, F64 f64, F16 half::f16, BF16 half::bf16, I8 i8, I16 i16, I32 i32,
            I64 i64, U8 u8, U16 u16, U32 u32, U64 u64)
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ArrayD;

    #[test]
    fn zip_into_equals_zip_broadcast() {
        let vals = |n: usize, k: f32| -> Vec<f32> {
            (0..n).map(|i| ((i as f32 * k).sin() * 3.0) + 0.1).collect()
        };
        let cases: [(&[usize], &[usize]); 9] = [
            (&[64, 14, 32], &[32]),
            (&[14, 4, 64, 64], &[64, 64]),
            (&[1, 64, 4, 14, 14], &[1, 1, 4, 14, 14]),
            (&[2, 3, 4], &[2, 1, 4]),
            (&[300, 300], &[300, 1]),
            (&[5], &[1]),
            (&[300, 300], &[300, 300]),
            (&[3, 1], &[3, 1]),
            (&[0, 4], &[4]),
        ];
        for (ds, bs) in cases {
            let n: usize = ds.iter().product();
            let m: usize = bs.iter().product();
            let a = arr(ds, vals(n, 0.37));
            let b = arr(bs, vals(m, 0.11));
            let want = zip_broadcast(&b, &a, |y: f32, x: f32| y / x).unwrap();
            let mut got = a.clone();
            assert!(
                zip_into(&mut got, &b, |x: f32, y: f32| y / x),
                "{ds:?} {bs:?}"
            );
            assert_eq!(got, want, "{ds:?} {bs:?}");
        }
        // A result larger than the destination: declined, untouched.
        let mut small = arr(&[4], vals(4, 0.3));
        let before = small.clone();
        assert!(!zip_into(
            &mut small,
            &arr(&[2, 4], vals(8, 0.2)),
            |x: f32, y: f32| x + y
        ));
        assert_eq!(small, before);
    }

    fn arr(shape: &[usize], v: Vec<f32>) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
    }

    #[test]
    fn broadcast_bias_and_rows() {
        let a = arr(&[2, 2, 3], (0..12).map(|v| v as f32).collect());
        let b = arr(&[2, 1, 1], vec![100.0, 200.0]);
        let r = zip_broadcast(&a, &b, |x, y| x + y).unwrap();
        assert_eq!(r[[0, 1, 2]], 105.0);
        assert_eq!(r[[1, 0, 0]], 206.0);
        let c = arr(&[3], vec![1.0, 2.0, 3.0]);
        let d = arr(&[2, 1], vec![10.0, 20.0]);
        let r = zip_broadcast(&c, &d, |x, y| x * y).unwrap();
        assert_eq!(r.shape(), &[2, 3]);
        assert_eq!(
            r.iter().copied().collect::<Vec<_>>(),
            vec![10., 20., 30., 20., 40., 60.]
        );
        assert!(zip_broadcast(&c, &arr(&[2], vec![1.0, 2.0]), |x, y| x + y).is_err());
    }

    #[test]
    fn int_semantics() {
        assert_eq!((-7i32).rem_floor(3), 2);
        assert_eq!((-7i32).rem_trunc(3), -1);
        assert_eq!(i8::MIN.nabs(), i8::MIN);
        assert_eq!(5u8.ndiv(0), 0);
        assert!(f32::NAN.nmax(1.0).is_nan());
    }
}
