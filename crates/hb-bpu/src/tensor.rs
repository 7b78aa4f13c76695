//! Plain tensors: a borrowed input view and an owned output, both row-major
//! (C order), plus the shape helpers the kernels share.

use crate::error::Result;
use crate::shape_err;

/// A borrowed row-major tensor: data and shape, checked to agree.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a, T> {
    data: &'a [T],
    shape: &'a [usize],
}

impl<'a, T> TensorRef<'a, T> {
    /// Wraps `data` with `shape`; fails when the element count differs from
    /// the product of the shape (or the product overflows).
    pub fn new(data: &'a [T], shape: &'a [usize]) -> Result<Self> {
        let n = numel(shape)?;
        if n != data.len() {
            return Err(shape_err!(
                "shape {shape:?} holds {n} elements, data has {}",
                data.len()
            ));
        }
        Ok(TensorRef { data, shape })
    }

    /// The elements, row-major.
    pub fn data(&self) -> &'a [T] {
        self.data
    }

    /// The shape.
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

/// An owned row-major tensor (a kernel's output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QTensor<T> {
    /// The shape.
    pub shape: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<T>,
}

impl<T> QTensor<T> {
    /// Builds a tensor, checking that `data` matches `shape`.
    pub fn new(shape: Vec<usize>, data: Vec<T>) -> Result<Self> {
        TensorRef::new(&data, &shape)?;
        Ok(QTensor { shape, data })
    }

    /// A borrowed view.
    pub fn view(&self) -> TensorRef<'_, T> {
        TensorRef {
            data: &self.data,
            shape: &self.shape,
        }
    }
}

/// Product of the dimensions; fails on overflow.
pub fn numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| shape_err!("shape {shape:?} overflows usize"))
}

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Resolves a possibly negative axis against `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(shape_err!("axis {axis} is out of range for rank {rank}"))
    }
}

/// The numpy broadcast of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let db = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            match (da, db) {
                (x, y) if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => Err(shape_err!("shapes {a:?} and {b:?} do not broadcast")),
            }
        })
        .collect()
}

/// For every element of `out` (row-major), the flat index of the element of
/// a tensor of shape `src` broadcast to `out`. `src` must broadcast to `out`.
pub fn broadcast_index(src: &[usize], out: &[usize]) -> Result<Vec<usize>> {
    if src.len() > out.len() {
        return Err(shape_err!("{src:?} has more dims than {out:?}"));
    }
    let off = out.len() - src.len();
    let ss = strides(src);
    // Stride in `src` of each output dim (0 where broadcast).
    let mut bs = vec![0usize; out.len()];
    for (i, &d) in src.iter().enumerate() {
        let o = out[i + off];
        if d == o {
            bs[i + off] = ss[i];
        } else if d != 1 {
            return Err(shape_err!("{src:?} does not broadcast to {out:?}"));
        }
    }
    let n = numel(out)?;
    let mut idx = Vec::with_capacity(n);
    let mut pos = vec![0usize; out.len()];
    for _ in 0..n {
        idx.push(pos.iter().zip(&bs).map(|(p, s)| p * s).sum());
        for d in (0..out.len()).rev() {
            pos[d] += 1;
            if pos[d] < out[d] {
                break;
            }
            pos[d] = 0;
        }
    }
    Ok(idx)
}

/// Splits `shape` around `axis` into `(outer, len, inner)`.
pub fn split_at_axis(shape: &[usize], axis: usize) -> Result<(usize, usize, usize)> {
    if axis >= shape.len() {
        return Err(shape_err!("axis {axis} out of range for {shape:?}"));
    }
    Ok((
        numel(&shape[..axis])?,
        shape[axis],
        numel(&shape[axis + 1..])?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert!(TensorRef::new(&[1i8, 2, 3], &[2, 2]).is_err());
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(broadcast_shapes(&[3, 1], &[4]).unwrap(), vec![3, 4]);
        assert!(broadcast_shapes(&[3], &[4]).is_err());
        assert_eq!(
            broadcast_index(&[2, 1], &[2, 3]).unwrap(),
            vec![0, 0, 0, 1, 1, 1]
        );
        assert_eq!(
            broadcast_index(&[3], &[2, 3]).unwrap(),
            vec![0, 1, 2, 0, 1, 2]
        );
        assert_eq!(norm_axis(-1, 3).unwrap(), 2);
        assert!(norm_axis(3, 3).is_err());
        assert!(numel(&[usize::MAX, 2]).is_err());
    }
}
