//! The f32 GEMM entry point every matrix-product kernel uses:
//! `C = alpha * A·B + beta * C` on strided views, on top of
//! `matrixmultiply::sgemm`, with rayon parallelism over output rows when the
//! product is large enough.

use crate::error::OpResult;
use crate::invalid;
use rayon::prelude::*;

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
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        return Err(invalid!(
            "gemm: inner dims differ ({m}x{k} · {}x{n})",
            b.rows
        ));
    }
    if c.len() < m * n {
        return Err(invalid!(
            "gemm: output holds {} elements, needs {}",
            c.len(),
            m * n
        ));
    }
    a.check("A")?;
    b.check("B")?;
    let threads = rayon::current_num_threads();
    if threads > 1 && m * k * n >= PAR_WORK && m >= 2 * threads {
        let rows = m.div_ceil(threads * 2).max(1);
        c[..m * n]
            .par_chunks_mut(rows * n)
            .enumerate()
            .for_each(|(i, ci)| {
                let r = ci.len() / n;
                kernel(alpha, a.rows_from(i * rows, r), b, beta, ci);
            });
    } else {
        kernel(alpha, a, b, beta, &mut c[..m * n]);
    }
    Ok(())
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
    // With beta == 0 matrixmultiply overwrites `c` without reading it.
    // SAFETY: `check` proved every element of `a` and `b` lies inside their
    // slices (rows_from keeps that: it only drops leading rows), and `c`
    // holds exactly m·n elements with row stride n; the three do not alias
    // (`c` is a unique borrow).
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
            c.as_mut_ptr(),
            n as isize,
            1,
        );
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
pub fn for_each_chunk<F>(out: &mut [f32], chunk: usize, work: usize, f: F) -> OpResult<()>
where
    F: Fn(usize, &mut [f32]) -> OpResult<()> + Sync + Send,
{
    if chunk == 0 {
        return Ok(());
    }
    let pieces = out.len() / chunk;
    if pieces > 1 && rayon::current_num_threads() > 1 && work * pieces >= PAR_WORK / 4 {
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
