//! Generic data-movement helpers shared by the data-movement kernels:
//! contiguous copies, reshapes and per-axis index remapping.

use crate::error::OpResult;
use crate::invalid;
use hb_tensor::tensor::Element;
use hb_tensor::{with_tensor, Tensor};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use rayon::prelude::*;
use std::borrow::Cow;

/// A standard-layout owned copy of `v`, copying row by row (the inner loop
/// walks the last axis with its stride, no per-element index arithmetic).
pub fn to_standard<T: Clone>(v: ArrayViewD<'_, T>) -> ArrayD<T> {
    if v.is_standard_layout() || v.ndim() == 0 {
        return v.to_owned();
    }
    let shape = v.shape().to_vec();
    let mut data = Vec::with_capacity(v.len());
    for row in v.rows() {
        match row.as_slice() {
            Some(s) => data.extend_from_slice(s),
            None => data.extend(row.iter().cloned()),
        }
    }
    // The row copy fills the shape exactly; the fallback is never taken.
    ArrayD::from_shape_vec(IxDyn(&shape), data)
        .unwrap_or_else(|_| v.as_standard_layout().into_owned())
}

/// The elements of `a` in row-major order, borrowed when already contiguous.
pub fn std_data<'a, T: Clone>(a: &'a ArrayD<T>) -> Cow<'a, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(to_standard(a.view()).into_iter().collect()),
    }
}

/// Fails unless `from` and `to` hold the same number of elements.
fn check_reshape(from: &[usize], to: &[usize]) -> OpResult<()> {
    let (n, m): (usize, usize) = (from.iter().product(), to.iter().product());
    if n != m {
        return Err(invalid!("cannot reshape {from:?} ({n} elements) to {to:?}"));
    }
    Ok(())
}

/// `a` (any layout) with a new shape of the same element count.
pub fn reshape_arr<T: Clone>(a: &ArrayD<T>, shape: &[usize]) -> OpResult<ArrayD<T>> {
    check_reshape(a.shape(), shape)?;
    let data = std_data(a).into_owned();
    ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| invalid!("{e}"))
}

/// Any tensor with a new shape of the same element count.
pub fn reshape_tensor(t: &Tensor, shape: &[usize]) -> OpResult<Tensor> {
    Ok(hb_tensor::map_tensor!(t, a => reshape_arr(a, shape)?))
}

/// [`reshape_tensor`] of an owned tensor: a standard-layout buffer is
/// kept (no copy), only the shape changes.
pub fn reshape_owned(t: Tensor, shape: &[usize]) -> OpResult<Tensor> {
    check_reshape(t.shape(), shape)?;
    Ok(hb_tensor::map_tensor!(t.into_standard_layout(), a => a
        .into_shape_with_order(IxDyn(shape))
        .map_err(|e| invalid!("{e}"))?))
}

/// Row-major strides of a shape.
pub fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Builds an array whose element at output index `o` along every axis `k`
/// is `src[maps[0][o0], maps[1][o1], ...]`, or `fill` when any map entry is
/// `None`. Map entries must be in range for `src` (callers check).
pub fn remap_axes<T: Clone + Send + Sync>(
    src: &ArrayD<T>,
    maps: &[Vec<Option<usize>>],
    fill: &T,
) -> OpResult<ArrayD<T>> {
    let rank = maps.len();
    if rank != src.ndim() {
        return Err(invalid!("remap of rank {} with {rank} maps", src.ndim()));
    }
    let out_shape: Vec<usize> = maps.iter().map(|m| m.len()).collect();
    if rank == 0 {
        return Ok(src.clone());
    }
    let bad = maps
        .iter()
        .zip(src.shape())
        .any(|(m, &d)| m.iter().flatten().any(|&i| i >= d));
    if bad {
        return Err(invalid!("index out of range for shape {:?}", src.shape()));
    }
    let data = std_data(src);
    let strides = strides_of(src.shape());
    // Per-axis flat source offsets (None = fill).
    let offs: Vec<Vec<Option<usize>>> = maps
        .iter()
        .zip(&strides)
        .map(|(m, &st)| m.iter().map(|i| i.map(|i| i * st)).collect())
        .collect();
    let total: usize = out_shape.iter().product();
    let row_len = out_shape[rank - 1];
    let mut out = vec![fill.clone(); total];
    if total == 0 {
        return ArrayD::from_shape_vec(IxDyn(&out_shape), out).map_err(|e| invalid!("{e}"));
    }
    let outer_shape = &out_shape[..rank - 1];
    // The last axis without fill entries (the common case) as plain offsets.
    let dense_last: Option<Vec<usize>> = offs[rank - 1].iter().copied().collect();
    let fill_row = |(r, row): (usize, &mut [T])| {
        // Decompose the row number into the outer output index.
        let mut rem = r;
        let mut base = Some(0usize);
        for k in (0..rank - 1).rev() {
            let i = rem % outer_shape[k];
            rem /= outer_shape[k];
            base = base.zip(offs[k][i]).map(|(b, o)| b + o);
        }
        match (base, &dense_last) {
            (Some(b), Some(last)) => {
                let src = &data[b..];
                for (v, &o) in row.iter_mut().zip(last) {
                    *v = src[o].clone();
                }
            }
            (Some(b), None) => {
                for (v, m) in row.iter_mut().zip(&offs[rank - 1]) {
                    if let Some(o) = m {
                        *v = data[b + o].clone();
                    }
                }
            }
            (None, _) => {}
        }
    };
    if total >= PAR_THRESHOLD {
        out.par_chunks_mut(row_len).enumerate().for_each(fill_row);
    } else {
        out.chunks_mut(row_len).enumerate().for_each(fill_row);
    }
    ArrayD::from_shape_vec(IxDyn(&out_shape), out).map_err(|e| invalid!("{e}"))
}

/// Element count above which copies run in parallel.
pub const PAR_THRESHOLD: usize = 1 << 16;

/// Advances a row-major odometer; false when it wraps around.
pub fn next_index(idx: &mut [usize], shape: &[usize]) -> bool {
    for k in (0..idx.len()).rev() {
        idx[k] += 1;
        if idx[k] < shape[k] {
            return true;
        }
        idx[k] = 0;
    }
    false
}

/// Resolves a possibly negative index against `len`.
pub fn norm_index(i: i64, len: usize) -> OpResult<usize> {
    let n = len as i64;
    let j = if i < 0 { i + n } else { i };
    if j < 0 || j >= n {
        return Err(invalid!(
            "index {i} is out of range for a dimension of {len}"
        ));
    }
    Ok(j as usize)
}

/// Largest element count a kernel will allocate (guards against absurd shapes).
pub const MAX_ELEMENTS: usize = 1 << 32;

/// The element count of `shape`, or an error when it overflows or exceeds
/// [`MAX_ELEMENTS`].
pub fn check_numel(shape: &[usize]) -> OpResult<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| invalid!("shape {shape:?} is too large"))
}

/// Converts a list of non-negative i64 dims to usize.
pub fn to_dims(v: &[i64]) -> OpResult<Vec<usize>> {
    v.iter()
        .map(|&d| usize::try_from(d).map_err(|_| invalid!("negative dimension {d} in {v:?}")))
        .collect()
}

fn remap_as<T: Element>(
    a: &ArrayD<T>,
    maps: &[Vec<Option<usize>>],
    fill: &Tensor,
) -> OpResult<Tensor> {
    let f = fill
        .as_array::<T>()
        .and_then(|x| x.iter().next().cloned())
        .ok_or_else(|| invalid!("fill value type differs from data"))?;
    Ok(T::wrap(remap_axes(a, maps, &f)?))
}

/// [`remap_axes`] on any tensor; `fill` is a one-element tensor of the same type.
pub fn remap_tensor(x: &Tensor, maps: &[Vec<Option<usize>>], fill: &Tensor) -> OpResult<Tensor> {
    with_tensor!(x, a => remap_as(a, maps, fill))
}

/// Resolves a possibly negative axis against `rank` (rank must be at least 1).
pub fn axis_of(axis: i64, rank: usize) -> OpResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(invalid!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}
