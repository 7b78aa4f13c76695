//! MatMul (batched, numpy broadcasting) and Gemm (docs/integer-semantics.md
//! §4): exact i64 accumulation, bias at the accumulator scale, per-column
//! requantisation.

use crate::error::Result;
use crate::fixed_point::Requant;
use crate::qint::QInt;
use crate::reference::common::{check_bias, requant_channels};
use crate::shape_err;
use crate::tensor::{broadcast_index, broadcast_shapes, numel, QTensor, TensorRef};

/// MatMul accumulators: `a` `[…, M, K]` (or `[K]`), `b` `[…, K, N]` (or
/// `[K]`), batch dims broadcast; `bias` (length N) added to every row.
/// 1-D operands follow ONNX (prepend / append a 1 and drop it afterwards).
pub fn matmul_acc<A: QInt, B: QInt>(
    a: TensorRef<'_, A>,
    b: TensorRef<'_, B>,
    bias: Option<&[i64]>,
) -> Result<QTensor<i64>> {
    let (sa, sb) = (a.shape(), b.shape());
    if sa.is_empty() || sb.is_empty() {
        return Err(shape_err!("matmul of a scalar: {sa:?} × {sb:?}"));
    }
    let a2: Vec<usize> = if sa.len() == 1 {
        vec![1, sa[0]]
    } else {
        sa.to_vec()
    };
    let b2: Vec<usize> = if sb.len() == 1 {
        vec![sb[0], 1]
    } else {
        sb.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != kb {
        return Err(shape_err!("matmul inner dims differ: {sa:?} × {sb:?}"));
    }
    check_bias(bias, n)?;
    let batch = broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    let ia = broadcast_index(&a2[..a2.len() - 2], &batch)?;
    let ib = broadcast_index(&b2[..b2.len() - 2], &batch)?;
    let (ad, bd) = (a.data(), b.data());
    let mut out = Vec::with_capacity(numel(&batch)? * m * n);
    for (&pa, &pb) in ia.iter().zip(&ib) {
        let (oa, ob) = (pa * m * k, pb * k * n);
        for i in 0..m {
            for j in 0..n {
                let mut acc = bias.map_or(0, |bs| bs[j]);
                for t in 0..k {
                    acc += ad[oa + i * k + t].to_i64() * bd[ob + t * n + j].to_i64();
                }
                out.push(acc);
            }
        }
    }
    let mut shape = batch;
    if sa.len() > 1 {
        shape.push(m);
    }
    if sb.len() > 1 {
        shape.push(n);
    }
    QTensor::new(shape, out)
}

/// MatMul: [`matmul_acc`] then requantisation per output column
/// (`requant`: 1 or N entries).
pub fn matmul<A: QInt, B: QInt, O: QInt>(
    a: TensorRef<'_, A>,
    b: TensorRef<'_, B>,
    bias: Option<&[i64]>,
    requant: &[Requant],
) -> Result<QTensor<O>> {
    let acc = matmul_acc(a, b, bias)?;
    let last = acc.shape.len().saturating_sub(1);
    if acc.shape.is_empty() {
        let r = crate::reference::common::pick(requant, 1)?;
        return QTensor::new(vec![], vec![r(0).apply::<O>(acc.data[0])]);
    }
    requant_channels(&acc, last, requant)
}

/// Gemm transposition flags (alpha and beta are folded by the lowering:
/// alpha into the requantisation ratio, beta·C into the bias).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GemmParams {
    /// `transA`.
    pub trans_a: bool,
    /// `transB`.
    pub trans_b: bool,
}

/// Gemm: `Y = A' · B' + C` with `A'` `[M, K]`, `B'` `[K, N]` (after the
/// optional transpositions), `C` an already quantized i64 bias
/// unidirectionally broadcast to `[M, N]`, then per-column requantisation.
pub fn gemm<A: QInt, B: QInt, O: QInt>(
    a: TensorRef<'_, A>,
    b: TensorRef<'_, B>,
    c: Option<TensorRef<'_, i64>>,
    requant: &[Requant],
    p: GemmParams,
) -> Result<QTensor<O>> {
    let (sa, sb) = (a.shape(), b.shape());
    if sa.len() != 2 || sb.len() != 2 {
        return Err(shape_err!("gemm needs 2-D operands: {sa:?}, {sb:?}"));
    }
    let (m, k) = if p.trans_a {
        (sa[1], sa[0])
    } else {
        (sa[0], sa[1])
    };
    let (kb, n) = if p.trans_b {
        (sb[1], sb[0])
    } else {
        (sb[0], sb[1])
    };
    if k != kb {
        return Err(shape_err!(
            "gemm inner dims differ: {sa:?} × {sb:?} ({p:?})"
        ));
    }
    let cidx = match c {
        Some(ct) => Some(broadcast_index(ct.shape(), &[m, n])?),
        None => None,
    };
    let at = |i: usize, t: usize| {
        if p.trans_a {
            a.data()[t * m + i]
        } else {
            a.data()[i * k + t]
        }
        .to_i64()
    };
    let bt = |t: usize, j: usize| {
        if p.trans_b {
            b.data()[j * k + t]
        } else {
            b.data()[t * n + j]
        }
        .to_i64()
    };
    let mut acc = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let mut s = match (&c, &cidx) {
                (Some(ct), Some(ix)) => ct.data()[ix[i * n + j]],
                _ => 0,
            };
            for t in 0..k {
                s += at(i, t) * bt(t, j);
            }
            acc.push(s);
        }
    }
    requant_channels(&QTensor::new(vec![m, n], acc)?, 1, requant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_by_hand_and_broadcast() {
        let a = [1i8, 2, 3, 4]; // [2, 2]
        let b = [5i8, 6, 7, 8];
        let r = matmul_acc(
            TensorRef::new(&a, &[2, 2]).unwrap(),
            TensorRef::new(&b, &[2, 2]).unwrap(),
            Some(&[1, -1]),
        )
        .unwrap();
        assert_eq!(r.data, vec![20, 21, 44, 49]);
        // Batched a [2, 1, 2] × b [2, 1] broadcast.
        let a3 = [1i16, 2, 3, 4];
        let b1 = [1i8, 1];
        let r = matmul_acc(
            TensorRef::new(&a3, &[2, 1, 2]).unwrap(),
            TensorRef::new(&b1, &[2, 1]).unwrap(),
            None,
        )
        .unwrap();
        assert_eq!((r.shape.clone(), r.data), (vec![2, 1, 1], vec![3, 7]));
        // 1-D × 1-D → scalar.
        let r: QTensor<i32> = matmul(
            TensorRef::new(&b1, &[2]).unwrap(),
            TensorRef::new(&b1, &[2]).unwrap(),
            None,
            &[Requant::IDENTITY],
        )
        .unwrap();
        assert_eq!((r.shape, r.data), (vec![], vec![2]));
        assert!(matmul_acc(
            TensorRef::new(&a, &[2, 2]).unwrap(),
            TensorRef::new(&b1, &[2, 1]).unwrap(),
            Some(&[1, 2]),
        )
        .is_err());
    }

    #[test]
    fn gemm_transposes_and_bias() {
        let a = [1i8, 2, 3, 4, 5, 6]; // A [2, 3]; transA: stored [3, 2]
        let b = [1i8, 0, 0, 1, 1, 1]; // B [3, 2]
        let c = [100i64, 200];
        let y: QTensor<i32> = gemm(
            TensorRef::new(&a, &[2, 3]).unwrap(),
            TensorRef::new(&b, &[3, 2]).unwrap(),
            Some(TensorRef::new(&c, &[2]).unwrap()),
            &[Requant::IDENTITY],
            GemmParams::default(),
        )
        .unwrap();
        assert_eq!(y.data, vec![104, 205, 110, 211]);
        // Same with both transposed: A^T stored [3, 2], B^T stored [2, 3].
        let at = [1i8, 4, 2, 5, 3, 6];
        let bt = [1i8, 0, 1, 0, 1, 1];
        let y2: QTensor<i32> = gemm(
            TensorRef::new(&at, &[3, 2]).unwrap(),
            TensorRef::new(&bt, &[2, 3]).unwrap(),
            Some(TensorRef::new(&c, &[2]).unwrap()),
            &[Requant::IDENTITY],
            GemmParams {
                trans_a: true,
                trans_b: true,
            },
        )
        .unwrap();
        assert_eq!(y2.data, y.data);
    }
}
