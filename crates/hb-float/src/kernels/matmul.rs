//! MatMul (numpy semantics: 1-D operands, broadcast batch dims) and Gemm
//! (alpha, beta, transA, transB, unidirectionally broadcast C).

use crate::error::OpResult;
use crate::kernels::floatio::{contiguous, f32_of, to_dtype};
use crate::kernels::gemm::{assume_init_vec, for_each_chunk, sgemm, sgemm_uninit, uninit_vec, Mat};
use crate::kernels::util::{broadcast_shapes, broadcast_view, input, one, opt_input};
use crate::registry::{OpCtx, Registry};
use crate::{invalid, unsupported};
use hb_tensor::tensor::Scalar;
use hb_tensor::{DType, Tensor};
use ndarray::{ArrayD, IxDyn};

/// Registers MatMul and Gemm.
pub fn register(r: &mut Registry) {
    r.register("MatMul", matmul);
    r.register("Gemm", gemm_op);
}

/// Shapes of a (batched) matrix product after numpy's 1-D promotion.
#[derive(Debug, Clone)]
pub struct MatMulPlan {
    /// Broadcast batch shape.
    pub batch: Vec<usize>,
    /// Offsets (in elements) of every batch's A matrix.
    pub a_off: Vec<usize>,
    /// Offsets of every batch's B matrix.
    pub b_off: Vec<usize>,
    /// Rows of A.
    pub m: usize,
    /// Inner dim.
    pub k: usize,
    /// Columns of B.
    pub n: usize,
    /// The output shape (1-D operands' dims removed).
    pub out_shape: Vec<usize>,
    /// True when every batch of B is the same matrix and A's batches cover
    /// the whole output batch (the product folds into one GEMM).
    pub fold_a: bool,
}

/// Offsets of each output batch into an operand with batch dims `own`
/// (broadcast against `batch`) and matrices of `mat` elements.
fn batch_offsets(batch: &[usize], own: &[usize], mat: usize) -> Vec<usize> {
    let pad = batch.len() - own.len();
    let mut strides = vec![0usize; batch.len()];
    let mut s = mat;
    for d in (0..own.len()).rev() {
        strides[d + pad] = if own[d] == 1 { 0 } else { s };
        s *= own[d];
    }
    let total: usize = batch.iter().product();
    let mut offs = Vec::with_capacity(total);
    let mut idx = vec![0usize; batch.len()];
    for _ in 0..total {
        offs.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum());
        for d in (0..batch.len()).rev() {
            idx[d] += 1;
            if idx[d] < batch[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    offs
}

impl MatMulPlan {
    /// Plans `a · b` for operand shapes `a` and `b`.
    pub fn new(a: &[usize], b: &[usize]) -> OpResult<Self> {
        if a.is_empty() || b.is_empty() {
            return Err(invalid!(
                "MatMul operands must have rank >= 1 (got {a:?}, {b:?})"
            ));
        }
        let a2: Vec<usize> = if a.len() == 1 {
            vec![1, a[0]]
        } else {
            a.to_vec()
        };
        let b2: Vec<usize> = if b.len() == 1 {
            vec![b[0], 1]
        } else {
            b.to_vec()
        };
        let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
        let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
        if k != k2 {
            return Err(invalid!("MatMul inner dims differ: {a:?} · {b:?}"));
        }
        let (ab, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
        let batch = broadcast_shapes(ab, bb)?;
        let mut out_shape = batch.clone();
        if a.len() > 1 {
            out_shape.push(m);
        }
        if b.len() > 1 {
            out_shape.push(n);
        }
        let a_count: usize = ab.iter().product();
        let fold_a = bb.iter().product::<usize>() == 1 && a_count == batch.iter().product();
        Ok(MatMulPlan {
            a_off: batch_offsets(&batch, ab, m * k),
            b_off: batch_offsets(&batch, bb, k * n),
            batch,
            m,
            k,
            n,
            out_shape,
            fold_a,
        })
    }

    /// Number of matrix products.
    pub fn count(&self) -> usize {
        self.a_off.len()
    }
}

fn matmul(_ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
    if a.dtype() != b.dtype() {
        return Err(invalid!(
            "MatMul operands differ in type: {} and {}",
            a.dtype(),
            b.dtype()
        ));
    }
    let plan = MatMulPlan::new(a.shape(), b.shape())?;
    match (a, b) {
        (Tensor::F64(x), Tensor::F64(y)) => one(matmul_naive(&plan, x, y)?),
        (Tensor::I32(x), Tensor::I32(y)) => one(matmul_naive(&plan, x, y)?),
        (Tensor::I64(x), Tensor::I64(y)) => one(matmul_naive(&plan, x, y)?),
        (Tensor::U32(x), Tensor::U32(y)) => one(matmul_naive(&plan, x, y)?),
        (Tensor::U64(x), Tensor::U64(y)) => one(matmul_naive(&plan, x, y)?),
        _ => {
            let (x, y) = (f32_of(a)?, f32_of(b)?);
            one(to_dtype(matmul_f32(&plan, &x, &y)?, a.dtype())?)
        }
    }
}

/// f32 batched matrix product through [`sgemm`].
pub fn matmul_f32(plan: &MatMulPlan, a: &ArrayD<f32>, b: &ArrayD<f32>) -> OpResult<ArrayD<f32>> {
    let (m, k, n) = (plan.m, plan.k, plan.n);
    let (ad, bd) = (contiguous(a), contiguous(b));
    // Not zeroed first: every element is written by the product.
    let mut out = uninit_vec(plan.count() * m * n);
    if crate::probe::skipping_arithmetic() {
        out.iter_mut().for_each(|x| {
            x.write(crate::probe::FILL);
        });
    } else if plan.fold_a {
        let rows = plan.count() * m;
        sgemm_uninit(
            1.0,
            Mat::row_major(&ad, rows, k),
            Mat::row_major(&bd, k, n),
            &mut out,
        )?;
    } else {
        for_each_chunk(&mut out, m * n, m * k * n, |i, c| {
            let (ao, bo) = (plan.a_off[i], plan.b_off[i]);
            let am = Mat::row_major(ad.get(ao..).unwrap_or(&[]), m, k);
            let bm = Mat::row_major(bd.get(bo..).unwrap_or(&[]), k, n);
            sgemm_uninit(1.0, am, bm, c)
        })?;
    }
    // SAFETY: the fill or the products wrote every element (an error
    // returned above before any read).
    let out = unsafe { assume_init_vec(out) };
    ArrayD::from_shape_vec(IxDyn(&plan.out_shape), out).map_err(|e| invalid!("{e}"))
}

/// Plain-loop batched product for f64 and integer types (integers wrap).
fn matmul_naive<T: Scalar>(plan: &MatMulPlan, a: &ArrayD<T>, b: &ArrayD<T>) -> OpResult<Tensor> {
    let (m, k, n) = (plan.m, plan.k, plan.n);
    let ad = contiguous(a);
    let bd = contiguous(b);
    let mut out = Vec::with_capacity(plan.count() * m * n);
    for (&ao, &bo) in plan.a_off.iter().zip(&plan.b_off) {
        for i in 0..m {
            for j in 0..n {
                let pairs = (0..k).map(|p| (ad.get(ao + i * k + p), bd.get(bo + p * n + j)));
                out.push(dot(pairs)?);
            }
        }
    }
    Tensor::from_vec(&plan.out_shape, out).map_err(Into::into)
}

/// Sum of products in f64 (floats) or wrapping i64 (integers).
fn dot<'a, T: Scalar>(pairs: impl Iterator<Item = (Option<&'a T>, Option<&'a T>)>) -> OpResult<T> {
    let (mut f, mut i) = (0f64, 0i64);
    for (x, y) in pairs {
        let (Some(&x), Some(&y)) = (x, y) else {
            return Err(invalid!("MatMul operand data is shorter than its shape"));
        };
        if T::IS_FLOAT {
            f += x.to_f64() * y.to_f64();
        } else {
            i = i.wrapping_add(x.to_i64().wrapping_mul(y.to_i64()));
        }
    }
    Ok(if T::IS_FLOAT {
        T::from_f64(f)
    } else {
        T::from_i64(i)
    })
}

fn gemm_op(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let node = ctx.node;
    let alpha = node.float_or("alpha", 1.0)?;
    let beta = node.float_or("beta", 1.0)?;
    let ta = node.int_or("transA", 0)? != 0;
    let tb = node.int_or("transB", 0)? != 0;
    let (at, bt) = (input(inputs, 0)?, input(inputs, 1)?);
    let dtype = at.dtype();
    if !matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
        return Err(unsupported!("Gemm on {dtype} (float types only)"));
    }
    let (a, b) = (f32_of(at)?, f32_of(bt)?);
    if a.ndim() != 2 || b.ndim() != 2 {
        return Err(invalid!(
            "Gemm needs 2-D A and B, got {:?} and {:?}",
            a.shape(),
            b.shape()
        ));
    }
    let (ad, bd) = (contiguous(&a), contiguous(&b));
    let am = Mat::row_major(&ad, a.shape()[0], a.shape()[1]).t_if(ta);
    let bm = Mat::row_major(&bd, b.shape()[0], b.shape()[1]).t_if(tb);
    if am.cols != bm.rows {
        return Err(invalid!(
            "Gemm inner dims differ: A' is {}x{}, B' is {}x{}",
            am.rows,
            am.cols,
            bm.rows,
            bm.cols
        ));
    }
    let (m, n) = (am.rows, bm.cols);
    let c = opt_input(inputs, 2).map(f32_of).transpose()?;
    let (mut out, beta) = match &c {
        Some(c) if beta != 0.0 => {
            let v = broadcast_view(c, &[m, n])?;
            (v.iter().copied().collect::<Vec<f32>>(), beta)
        }
        _ => (vec![0f32; m * n], 0.0),
    };
    if crate::probe::skipping_arithmetic() {
        out.fill(crate::probe::FILL);
    } else {
        sgemm(alpha, am, bm, beta, &mut out)?;
    }
    let y = ArrayD::from_shape_vec(IxDyn(&[m, n]), out).map_err(|e| invalid!("{e}"))?;
    one(to_dtype(y, dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{assert_close, data, node, rand_vals, run, t};

    #[test]
    fn batched_broadcast_matches_naive() {
        // [2,1,3,4] · [3,4,5] -> [2,3,3,5]
        let a = rand_vals(24, 5);
        let b = rand_vals(60, 6);
        let y = run(
            matmul,
            &node("MatMul", vec![]),
            13,
            &[
                Some(&t(&[2, 1, 3, 4], a.clone())),
                Some(&t(&[3, 4, 5], b.clone())),
            ],
        )
        .unwrap();
        assert_eq!(y[0].shape(), &[2, 3, 3, 5]);
        let mut want = Vec::new();
        for i in 0..2 {
            for j in 0..3 {
                for r in 0..3 {
                    for c in 0..5 {
                        want.push(
                            (0..4)
                                .map(|k| a[i * 12 + r * 4 + k] * b[j * 20 + k * 5 + c])
                                .sum(),
                        );
                    }
                }
            }
        }
        assert_close(&data(&y[0]), &want, 1e-5);
    }

    #[test]
    fn one_d_operands_and_ints() {
        let a = Tensor::from_vec(&[3], vec![1i64, 2, 3]).unwrap();
        let b = Tensor::from_vec(&[3, 2], vec![1i64, 0, 0, 1, 1, 1]).unwrap();
        let y = run(matmul, &node("MatMul", vec![]), 13, &[Some(&a), Some(&b)]).unwrap();
        assert_eq!(y[0], Tensor::from_vec(&[2], vec![4i64, 5]).unwrap());
        let bad = t(&[2, 2], vec![0.0; 4]);
        assert!(run(
            matmul,
            &node("MatMul", vec![]),
            13,
            &[Some(&bad), Some(&t(&[3], vec![0.0; 3]))]
        )
        .is_err());
    }
}
