//! The f32 GEMM entry point every matrix-product kernel uses:
//! `C = alpha * A·B + beta * C` on strided views, on top of
//! `matrixmultiply::sgemm`, with rayon parallelism over output rows when the
//! product is large enough.

use crate::error::OpResult;
use crate::invalid;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Work (m·k·n multiply-adds) below which a product runs on one thread.
const PAR_WORK: usize = 1 << 21;

/// A read-only strided f32 matrix view.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a> {
    /// Backing data.
    pub data: &'a [f32],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Row stride (elements).
    pub rs: usize,
    /// Column stride (elements).
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows × cols` matrix at the start of `data`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// The same view, transposed when `trans` is set.
    pub fn t_if(self, trans: bool) -> Self {
        if trans {
            self.t()
        } else {
            self
        }
    }

    /// Rows `r0..r0 + n` of the view.
    fn rows_from(self, r0: usize, n: usize) -> Self {
        let start = (r0 * self.rs).min(self.data.len());
        Mat {
            data: &self.data[start..],
            rows: n,
            ..self
        }
    }

    /// Checks every element of the view lies inside `data`.
    fn check(&self, what: &str) -> OpResult<()> {
        if self.rows == 0 || self.cols == 0 {
            return Ok(());
        }
        let last = (self.rows - 1).checked_mul(self.rs).and_then(|x| {
            (self.cols - 1)
                .checked_mul(self.cs)
                .and_then(|y| x.checked_add(y))
        });
        match last {
            Some(l) if l < self.data.len() => Ok(()),
            _ => Err(invalid!(
                "gemm: {what} view {}x{} (strides {}, {}) exceeds its {} elements",
                self.rows,
                self.cols,
                self.rs,
                self.cs,
                self.data.len()
            )),
        }
    }
}

/// `c = alpha * a·b + beta * c` where `c` is row-major `a.rows × b.cols`
/// (leading dimension `b.cols`). When `beta == 0`, `c` is overwritten
/// (NaNs in it are ignored). Splits large products over rayon threads.
pub fn sgemm(alpha: f32, a: Mat, b: Mat, beta: f32, c: &mut [f32]) -> OpResult<()> {
    let (m, k, n) = checked_dims(&a, &b, c.len())?;
    over_row_pieces(&mut c[..m * n], m, k, n, |r0, rows, ci| {
        kernel(alpha, a.rows_from(r0, rows), b, beta, ci)
    });
    Ok(())
}

/// Checks a product's shapes, the output's length and both views; returns
/// `(m, k, n)`.
fn checked_dims(a: &Mat, b: &Mat, c_len: usize) -> OpResult<(usize, usize, usize)> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        return Err(invalid!(
            "gemm: inner dims differ ({m}x{k} · {}x{n})",
            b.rows
        ));
    }
    if c_len < m * n {
        return Err(invalid!(
            "gemm: output holds {c_len} elements, needs {}",
            m * n
        ));
    }
    a.check("A")?;
    b.check("B")?;
    Ok((m, k, n))
}

/// Runs `f(first_row, rows, piece)` over row blocks of the `m × n`
/// row-major output `c`: split over the kernel threads when the product
/// is large enough, else one call for the whole.
fn over_row_pieces<T: Send>(
    c: &mut [T],
    m: usize,
    k: usize,
    n: usize,
    f: impl Fn(usize, usize, &mut [T]) + Sync,
) {
    let threads = crate::threads::kernel_threads();
    if threads > 1 && m * k * n >= PAR_WORK && m >= 2 * threads {
        let rows = m.div_ceil(threads * 2).max(1);
        c.par_chunks_mut(rows * n)
            .enumerate()
            .for_each(|(i, ci)| f(i * rows, ci.len() / n, ci));
    } else {
        f(0, m, c);
    }
}

/// One product on the calling thread (views already checked).
fn kernel(alpha: f32, a: Mat, b: Mat, beta: f32, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        scale(c, beta);
        return;
    }
    if m == 1 {
        // A single row (Gemm/MatMul on one token or one pooled vector):
        // packing B would cost more than the product.
        row_times_matrix(alpha, a, b, beta, c);
        return;
    }
    if n == 1 && a.cs == 1 {
        // Matrix times one column: a dot product per contiguous row of A.
        matrix_times_column(alpha, a, b, beta, c);
        return;
    }
    if n <= NARROW_N {
        narrow_gemm(alpha, a, b, beta, c);
        return;
    }
    // SAFETY: `c` is a unique borrow of exactly m·n initialized elements.
    unsafe { packed_product(alpha, a, b, beta, c.as_mut_ptr(), c.len()) }
}

/// True when [`kernel`] hands the product to matrixmultiply (which, with
/// `beta == 0`, writes every element of C without reading it).
fn takes_packed_path(a: &Mat, b: &Mat) -> bool {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    m > 1 && k > 0 && n > NARROW_N
}

/// matrixmultiply's `c = alpha·a·b + beta·c`, `c` row-major with row
/// stride `b.cols`.
///
/// # Safety
/// `a` and `b` passed [`Mat::check`] (every element they address lies in
/// their slices); `c` points to `len ≥ a.rows · b.cols` writable elements
/// that nothing else accesses during the call, initialized unless `beta`
/// is 0 (matrixmultiply then only writes C).
unsafe fn packed_product(alpha: f32, a: Mat, b: Mat, beta: f32, c: *mut f32, len: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    debug_assert!(len >= m * n);
    // SAFETY: as the caller promises.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c,
            n as isize,
            1,
        );
    }
}

/// `c = alpha·a·b` where `c` (`a.rows × b.cols`, row-major) need not be
/// initialized; every element is written. Products that take
/// matrixmultiply's path are written straight into `c`; the small and
/// narrow ones (whose kernels take an `&mut [f32]`) see it zeroed first.
/// A fresh output thus skips the zeroing pass (for attention scores that
/// pass cost as much as a tenth of a transformer's forward).
pub fn sgemm_uninit(alpha: f32, a: Mat, b: Mat, c: &mut [MaybeUninit<f32>]) -> OpResult<()> {
    let (m, k, n) = checked_dims(&a, &b, c.len())?;
    let c = &mut c[..m * n];
    if !takes_packed_path(&a, &b) {
        return sgemm(alpha, a, b, 0.0, init_zeroed(c));
    }
    over_row_pieces(c, m, k, n, |r0, rows, ci| {
        // SAFETY: `a` and `b` are checked (rows_from only drops leading
        // rows); `ci` is a unique borrow of rows·n elements, written but
        // not read with beta 0.
        unsafe {
            packed_product(
                alpha,
                a.rows_from(r0, rows),
                b,
                0.0,
                ci.as_mut_ptr().cast(),
                ci.len(),
            )
        }
    });
    Ok(())
}

/// Writes 0 to every element and returns the slice as initialized.
fn init_zeroed(c: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    for x in c.iter_mut() {
        x.write(0.0);
    }
    // SAFETY: every element was just written; MaybeUninit<f32> and f32
    // have the same layout.
    unsafe { &mut *(c as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// A vector of `len` elements left uninitialized, for [`sgemm_uninit`].
pub fn uninit_vec(len: usize) -> Vec<MaybeUninit<f32>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: the capacity is `len`, and MaybeUninit needs no
    // initialization.
    unsafe { v.set_len(len) };
    v
}

/// The vector as f32 values.
///
/// # Safety
/// Every element of `v` was written.
pub unsafe fn assume_init_vec(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: same layout and allocation; the caller promises every
    // element is initialized.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<f32>(), v.len(), v.capacity()) }
}

/// `c = alpha·x + beta·c` (`c` overwritten when `beta == 0`).
#[inline(always)]
fn finish(c: &mut f32, alpha: f32, x: f32, beta: f32) {
    *c = if beta == 0.0 {
        alpha * x
    } else {
        alpha * x + beta * *c
    };
}

/// Copies a strided vector (`n` elements `stride` apart) into a new `Vec`.
fn gather(data: &[f32], n: usize, stride: usize) -> Vec<f32> {
    (0..n)
        .map(|i| data.get(i * stride).copied().unwrap_or(0.0))
        .collect()
}

crate::multiversion! {
/// `c (1 × n) = alpha·a·b + beta·c` for a one-row A. With B's columns
/// contiguous (a transposed weight, `Gemm transB=1`) each output is a dot
/// product; otherwise the rows of B are accumulated into the output row.
/// Views are checked by the caller.
fn row_times_matrix(alpha: f32, a: Mat, b: Mat, beta: f32, c: &mut [f32]) {
    let (k, n) = (a.cols, b.cols);
    let x = gather(a.data, k, a.cs);
    if b.rs == 1 {
        for (j, cj) in c.iter_mut().enumerate().take(n) {
            let col = b.data.get(j * b.cs..j * b.cs + k).unwrap_or(&[]);
            finish(cj, alpha, super::simd::dot(&x, col), beta);
        }
        return;
    }
    let mut acc = vec![0f32; n];
    for (p, &xv) in x.iter().enumerate() {
        let row = b.data.get(p * b.rs..).unwrap_or(&[]);
        if b.cs == 1 {
            for (s, &v) in acc.iter_mut().zip(row) {
                *s += xv * v;
            }
        } else {
            for (s, &v) in acc.iter_mut().zip(row.iter().step_by(b.cs)) {
                *s += xv * v;
            }
        }
    }
    for (cj, &v) in c.iter_mut().zip(&acc) {
        finish(cj, alpha, v, beta);
    }
}
}

crate::multiversion! {
/// `c (m × 1) = alpha·a·b + beta·c` for a one-column B and row-contiguous A:
/// one dot product per row. Views are checked by the caller.
fn matrix_times_column(alpha: f32, a: Mat, b: Mat, beta: f32, c: &mut [f32]) {
    let k = a.cols;
    let y = gather(b.data, k, b.rs);
    for (i, ci) in c.iter_mut().enumerate().take(a.rows) {
        let row = a.data.get(i * a.rs..i * a.rs + k).unwrap_or(&[]);
        finish(ci, alpha, super::simd::dot(row, &y), beta);
    }
}
}

/// Columns of B up to which products use the narrow kernel: matrixmultiply's
/// 16-wide AVX-512 tiles then run half empty through its masked edge path.
/// (Measured on this machine, 1 thread: 64×64×8 ×56 batches 123 µs vs
/// 183 µs, 896×46×8 ×4 98 µs vs 165 µs; from 14 columns on matrixmultiply
/// wins, e.g. 64×8×64 ×56 58 µs vs 132 µs.)
const NARROW_N: usize = 8;
/// Rows per register tile of the narrow kernel.
const NARROW_MR: usize = 4;

/// `acc += a · b` on one register-sized row.
#[inline(always)]
fn axpy<const NR: usize>(acc: &mut [f32; NR], a: f32, b: &[f32; NR]) {
    for (x, &y) in acc.iter_mut().zip(b) {
        *x += a * y;
    }
}

crate::multiversion! {
/// `c = alpha·a·b + beta·c` for products with at most [`NARROW_N`]
/// columns (attention `P·V` with 8-wide heads). Views are checked by the
/// caller.
fn narrow_gemm(alpha: f32, a: Mat, b: Mat, beta: f32, c: &mut [f32]) {
    narrow_gemm_nr::<NARROW_N>(alpha, a, b, beta, c)
}
}

/// The narrow kernel for a column block of `NR`: B is copied zero-padded to
/// `NR` columns, A in panels of 4 rows, and each 4 × `NR` tile of C
/// accumulates in registers over the whole inner dim in order (p = 0, 1,
/// …), so every element is the plain left-to-right dot product.
#[inline(always)]
fn narrow_gemm_nr<const NR: usize>(alpha: f32, a: Mat, b: Mat, beta: f32, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let mut bp = vec![0f32; k * NR];
    let mut ap = vec![0f32; k * NARROW_MR];
    let at = |i: usize, p: usize| a.data.get(i * a.rs + p * a.cs).copied().unwrap_or(0.0);
    for j0 in (0..n).step_by(NR) {
        let w = (n - j0).min(NR);
        for (p, row) in bp.chunks_exact_mut(NR).enumerate() {
            let (head, tail) = row.split_at_mut(w);
            let src = b.data.get(p * b.rs + j0 * b.cs..).unwrap_or(&[]);
            match src.get(..w) {
                Some(s) if b.cs == 1 => head.copy_from_slice(s),
                _ => {
                    for (v, s) in head.iter_mut().zip(src.iter().step_by(b.cs.max(1))) {
                        *v = *s;
                    }
                }
            }
            tail.fill(0.0);
        }
        let store = |c: &mut [f32], i: usize, acc: &[f32; NR]| {
            if let Some(dst) = c.get_mut(i * n + j0..i * n + j0 + w) {
                for (d, &v) in dst.iter_mut().zip(acc) {
                    *d = if beta == 0.0 {
                        alpha * v
                    } else {
                        alpha * v + beta * *d
                    };
                }
            }
        };
        // Row `i` of A as a slice, when A's rows are contiguous.
        let row = |i: usize| {
            (a.cs == 1)
                .then(|| a.data.get(i * a.rs..i * a.rs + k))
                .flatten()
        };
        let mut i = 0;
        while i + NARROW_MR <= m {
            // Four separate accumulators (not an array) stay in registers.
            let (mut c0, mut c1, mut c2, mut c3) = ([0f32; NR], [0f32; NR], [0f32; NR], [0f32; NR]);
            if let (Some(r0), Some(r1), Some(r2), Some(r3)) =
                (row(i), row(i + 1), row(i + 2), row(i + 3))
            {
                // Contiguous rows are read in place (packing them cost more
                // than the products on attention-sized tiles).
                let rows = r0.iter().zip(r1).zip(r2).zip(r3);
                for ((((&x0, &x1), &x2), &x3), bv) in rows.zip(bp.chunks_exact(NR)) {
                    let Ok(bv) = <&[f32; NR]>::try_from(bv) else {
                        continue;
                    };
                    axpy(&mut c0, x0, bv);
                    axpy(&mut c1, x1, bv);
                    axpy(&mut c2, x2, bv);
                    axpy(&mut c3, x3, bv);
                }
            } else {
                for (p, q) in ap.chunks_exact_mut(NARROW_MR).enumerate() {
                    for (r, v) in q.iter_mut().enumerate() {
                        *v = at(i + r, p);
                    }
                }
                for (av, bv) in ap.chunks_exact(NARROW_MR).zip(bp.chunks_exact(NR)) {
                    let Ok(bv) = <&[f32; NR]>::try_from(bv) else {
                        continue;
                    };
                    axpy(&mut c0, av[0], bv);
                    axpy(&mut c1, av[1], bv);
                    axpy(&mut c2, av[2], bv);
                    axpy(&mut c3, av[3], bv);
                }
            }
            for (r, acc_r) in [c0, c1, c2, c3].iter().enumerate() {
                store(c, i + r, acc_r);
            }
            i += NARROW_MR;
        }
        while i < m {
            let mut c0 = [0f32; NR];
            for (p, bv) in bp.chunks_exact(NR).enumerate() {
                let Ok(bv) = <&[f32; NR]>::try_from(bv) else {
                    continue;
                };
                axpy(&mut c0, at(i, p), bv);
            }
            store(c, i, &c0);
            i += 1;
        }
    }
}

fn scale(c: &mut [f32], beta: f32) {
    if beta == 0.0 {
        c.fill(0.0);
    } else {
        c.iter_mut().for_each(|x| *x *= beta);
    }
}

/// Runs `f(i, chunk)` over the `chunk`-sized pieces of `out`, in parallel
/// when there are several and `work` (per piece) is large enough.
pub fn for_each_chunk<T: Send, F>(out: &mut [T], chunk: usize, work: usize, f: F) -> OpResult<()>
where
    F: Fn(usize, &mut [T]) -> OpResult<()> + Sync + Send,
{
    if chunk == 0 {
        return Ok(());
    }
    let pieces = out.len() / chunk;
    if pieces > 1 && crate::threads::kernel_threads() > 1 && work * pieces >= PAR_WORK / 4 {
        out.par_chunks_mut(chunk)
            .enumerate()
            .try_for_each(|(i, c)| f(i, c))
    } else {
        out.chunks_mut(chunk)
            .enumerate()
            .try_for_each(|(i, c)| f(i, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: Mat, b: Mat) -> Vec<f32> {
        let mut c = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                for p in 0..a.cols {
                    c[i * b.cols + j] += a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs];
                }
            }
        }
        c
    }

    #[test]
    fn matches_naive_with_transposes() {
        let a: Vec<f32> = (0..12).map(|x| x as f32 * 0.5).collect();
        let b: Vec<f32> = (0..12).map(|x| 1.0 - x as f32).collect();
        let am = Mat::row_major(&a, 3, 4);
        let bm = Mat::row_major(&b, 3, 4).t();
        let mut c = vec![f32::NAN; 9];
        sgemm(1.0, am, bm, 0.0, &mut c).unwrap();
        assert_eq!(c, naive(am, bm));
    }

    #[test]
    fn narrow_and_general_paths_match_naive() {
        // Shapes on both sides of the small-kernel rules, with strided
        // (transposed) operands, alpha and beta.
        for (m, k, n) in [
            (1, 1, 1),
            (3, 5, 7),
            (14, 8, 14),
            (17, 33, 46),
            (64, 64, 8),
            (9, 46, 8),
            (5, 17, 3),
            (5, 17, 17),
            (40, 40, 40),
            (33, 70, 65),
            (1, 40, 30),
            (1, 100, 3),
            (1, 1, 20),
            (50, 37, 1),
            (2, 37, 1),
        ] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let av: Vec<f32> = (0..m * k).map(|x| ((x * 7 % 13) as f32) - 6.0).collect();
                let bv: Vec<f32> = (0..k * n).map(|x| ((x * 5 % 11) as f32) * 0.25).collect();
                let am = if ta {
                    Mat::row_major(&av, k, m).t()
                } else {
                    Mat::row_major(&av, m, k)
                };
                let bm = if tb {
                    Mat::row_major(&bv, n, k).t()
                } else {
                    Mat::row_major(&bv, k, n)
                };
                let c0: Vec<f32> = (0..m * n).map(|x| (x % 3) as f32).collect();
                let mut c = c0.clone();
                sgemm(0.5, am, bm, 2.0, &mut c).unwrap();
                let want: Vec<f32> = naive(am, bm)
                    .iter()
                    .zip(&c0)
                    .map(|(p, c)| 0.5 * p + 2.0 * c)
                    .collect();
                for (g, w) in c.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{m}x{k}x{n}");
                }
                let mut c = vec![f32::NAN; m * n];
                sgemm(1.0, am, bm, 0.0, &mut c).unwrap();
                assert_eq!(c, naive(am, bm), "{m}x{k}x{n} {ta} {tb}");
            }
        }
    }

    /// `sgemm_uninit` writes every element on each path (small, narrow,
    /// packed, k = 0, row-split over threads): its output, started from
    /// NaN garbage, equals `sgemm`'s with beta 0.
    #[test]
    fn uninit_output_is_fully_written_on_every_path() {
        for (m, k, n) in [
            (0, 4, 9),
            (1, 40, 30),
            (50, 37, 1),
            (9, 46, 8),
            (3, 0, 12),
            (33, 70, 65),
            (256, 128, 200),
        ] {
            let av: Vec<f32> = (0..m * k).map(|x| ((x * 7 % 13) as f32) - 6.0).collect();
            let bv: Vec<f32> = (0..k * n).map(|x| ((x * 5 % 11) as f32) * 0.25).collect();
            let (am, bm) = (Mat::row_major(&av, m, k), Mat::row_major(&bv, k, n));
            let mut want = vec![f32::NAN; m * n];
            sgemm(1.5, am, bm, 0.0, &mut want).unwrap();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            for serial in [true, false] {
                let mut c = uninit_vec(m * n);
                for x in c.iter_mut() {
                    x.write(f32::NAN);
                }
                pool.install(|| {
                    if serial {
                        crate::threads::serial_kernels(|| sgemm_uninit(1.5, am, bm, &mut c))
                    } else {
                        sgemm_uninit(1.5, am, bm, &mut c)
                    }
                })
                .unwrap();
                // SAFETY: every element was written (NaN, then the product).
                let got = unsafe { assume_init_vec(c) };
                assert_eq!(got, want, "{m}x{k}x{n} serial {serial}");
            }
        }
    }

    #[test]
    fn beta_accumulates_and_k_zero() {
        let mut c = vec![1.0; 4];
        sgemm(
            1.0,
            Mat::row_major(&[], 2, 0),
            Mat::row_major(&[], 0, 2),
            2.0,
            &mut c,
        )
        .unwrap();
        assert_eq!(c, vec![2.0; 4]);
    }

    #[test]
    fn out_of_bounds_view_is_an_error() {
        let a = vec![0.0; 5];
        let mut c = vec![0.0; 4];
        let r = sgemm(
            1.0,
            Mat::row_major(&a, 2, 3),
            Mat::row_major(&a, 3, 2),
            0.0,
            &mut c,
        );
        assert!(r.is_err());
    }
}
