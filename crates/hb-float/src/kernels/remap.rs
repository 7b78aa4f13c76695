//! Generic data-movement helpers shared by the data-movement kernels:
//! contiguous copies, reshapes and per-axis index remapping.

use crate::error::OpResult;
use crate::invalid;
use hb_tensor::tensor::Element;
use hb_tensor::{with_tensor, Tensor};
use ndarray::{ArrayD, ArrayView1, ArrayViewD, Axis, Ix2, IxDyn};
use rayon::prelude::*;
use std::borrow::Cow;

/// A standard-layout owned copy of `v`, copying row by row (the inner loop
/// walks the last axis with its stride, no per-element index arithmetic).
/// Axes that step through memory as one (a slice keeping whole rows, a
/// batch of one) are merged first, so the rows are as long and as few as
/// the layout allows.
pub fn to_standard<T: Clone>(v: ArrayViewD<'_, T>) -> ArrayD<T> {
    if v.is_standard_layout() || v.ndim() == 0 || v.is_empty() {
        return v.to_owned();
    }
    let shape = v.shape().to_vec();
    let mut data = Vec::with_capacity(v.len());
    let mut push_row = |row: ArrayView1<'_, T>| match row.as_slice() {
        Some(s) => data.extend_from_slice(s),
        None => data.extend(row.iter().cloned()),
    };
    let m = merge_axes(v.clone());
    if m.ndim() == 2 {
        // Fixed-rank rows: no per-row index bookkeeping of a dynamic rank.
        if let Ok(m2) = m.clone().into_dimensionality::<Ix2>() {
            m2.rows().into_iter().for_each(&mut push_row);
        }
    } else {
        m.rows().into_iter().for_each(&mut push_row);
    }
    // The row copy fills the shape exactly; the fallback is never taken.
    ArrayD::from_shape_vec(IxDyn(&shape), data)
        .unwrap_or_else(|_| v.as_standard_layout().into_owned())
}

/// `v` with every axis merged into the next one where stepping through
/// both is one step through memory, and axes of length 1 removed (one is
/// kept): the same elements in the same row-major order, as few axes as
/// the layout allows.
fn merge_axes<T>(mut v: ArrayViewD<'_, T>) -> ArrayViewD<'_, T> {
    let n = v.ndim();
    let mut into = n - 1;
    for take in (0..n - 1).rev() {
        if !v.merge_axes(Axis(take), Axis(into)) {
            into = take;
        }
    }
    let mut k = 0;
    while k < v.ndim() {
        if v.ndim() > 1 && v.len_of(Axis(k)) == 1 {
            v = v.index_axis_move(Axis(k), 0);
        } else {
            k += 1;
        }
    }
    v
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
    let rows = total / row_len;
    let parallel = total >= PAR_THRESHOLD && crate::threads::kernel_threads() > 1;
    let rows_per_chunk = if parallel {
        rows.div_ceil(4 * crate::threads::kernel_threads())
    } else {
        rows
    };
    // Rows in order, a chunk at a time: the chunk's first row number is
    // decomposed into the outer output index once, then an odometer
    // advances it. A row reading the same source row as the one before
    // (nearest upsampling repeats rows) is a copy of that row.
    let fill_chunk = |(c, chunk): (usize, &mut [T])| {
        let mut idx = vec![0usize; rank - 1];
        let mut rem = c * rows_per_chunk;
        for k in (0..rank - 1).rev() {
            idx[k] = rem % outer_shape[k];
            rem /= outer_shape[k];
        }
        let mut previous: Option<usize> = None;
        for r in 0..chunk.len() / row_len {
            let base = idx
                .iter()
                .zip(&offs)
                .try_fold(0usize, |b, (&i, o)| o[i].map(|o| b + o));
            next_index(&mut idx, outer_shape);
            let Some(b) = base else {
                previous = None;
                continue;
            };
            let (done, rest) = chunk.split_at_mut(r * row_len);
            let row = &mut rest[..row_len];
            if previous == Some(b) {
                row.clone_from_slice(&done[(r - 1) * row_len..]);
                continue;
            }
            previous = Some(b);
            match &dense_last {
                Some(last) => {
                    let src = &data[b..];
                    for (v, &o) in row.iter_mut().zip(last) {
                        *v = src[o].clone();
                    }
                }
                None => {
                    for (v, m) in row.iter_mut().zip(&offs[rank - 1]) {
                        if let Some(o) = m {
                            *v = data[b + o].clone();
                        }
                    }
                }
            }
        }
    };
    if parallel {
        out.par_chunks_mut(rows_per_chunk * row_len)
            .enumerate()
            .for_each(fill_chunk);
    } else {
        fill_chunk((0, &mut out[..]));
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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array, SliceInfoElem};

    /// Slices, permutations and broadcasts of one array: the copy equals
    /// ndarray's own standard-layout copy.
    #[test]
    fn to_standard_equals_the_standard_layout_copy() {
        let a = Array::from_shape_fn(IxDyn(&[2, 3, 6, 7]), |d| {
            (d[0] * 1000 + d[1] * 100 + d[2] * 10 + d[3]) as f32
        });
        let check = |v: ArrayViewD<'_, f32>| {
            let want = v.as_standard_layout().into_owned();
            let got = to_standard(v);
            assert_eq!(got.shape(), want.shape());
            assert_eq!(got.as_slice(), want.as_slice());
        };
        let slices: Vec<Vec<SliceInfoElem>> = vec![
            s![.., .., 1..5, ..].as_ref().to_vec(),
            s![.., .., .., 1..6].as_ref().to_vec(),
            s![1..2, .., 2..4, 1..6].as_ref().to_vec(),
            s![.., 1..2, .., ..].as_ref().to_vec(),
            s![.., .., ..;2, ..].as_ref().to_vec(),
            s![.., .., .., ..;-3].as_ref().to_vec(),
            s![.., .., 3..3, ..].as_ref().to_vec(),
        ];
        for sl in &slices {
            check(a.slice(sl.as_slice()));
        }
        for perm in [[0, 1, 3, 2], [1, 0, 2, 3], [3, 2, 1, 0], [0, 2, 1, 3]] {
            check(a.view().permuted_axes(IxDyn(&perm)));
        }
        let row = Array::from_shape_fn(IxDyn(&[1, 3, 1, 7]), |d| (d[1] * 10 + d[3]) as f32);
        check(row.broadcast(IxDyn(&[2, 3, 4, 7])).unwrap());
        let col = Array::from_shape_fn(IxDyn(&[5]), |d| d[0] as f32);
        check(col.slice(s![..;2]).into_dyn());
    }

    /// Nearest-upsampling maps (repeated source rows), fill entries on
    /// outer and last axes, small and large (parallel) outputs: every
    /// element equals the per-element definition.
    #[test]
    fn remap_axes_equals_the_per_element_definition() {
        type Maps = Vec<Vec<Option<usize>>>;
        let cases: Vec<(Vec<usize>, Maps)> = vec![
            (
                vec![2, 3, 4],
                vec![
                    vec![Some(1), Some(0)],
                    (0..7).map(|o| Some(o * 3 / 7)).collect(),
                    (0..8).map(|o| Some(o / 2)).collect(),
                ],
            ),
            (
                vec![3, 5],
                vec![
                    vec![None, Some(0), Some(0), Some(2), None],
                    vec![None, Some(4), Some(4), Some(1), None, Some(0)],
                ],
            ),
            (
                vec![4, 64, 64],
                vec![
                    (0..4).map(Some).collect(),
                    (0..128).map(|o| (o < 127).then_some(o / 2)).collect(),
                    (0..160).map(|o| Some(o * 64 / 160)).collect(),
                ],
            ),
        ];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for (shape, maps) in &cases {
            let a: ArrayD<f32> = Array::from_shape_fn(IxDyn(shape), |d| {
                ndarray::Dimension::slice(&d)
                    .iter()
                    .fold(0.0f32, |acc, &i| acc * 97.0 + i as f32)
            });
            let got = pool.install(|| remap_axes(&a, maps, &-1.0f32)).unwrap();
            let out_shape: Vec<usize> = maps.iter().map(Vec::len).collect();
            assert_eq!(got.shape(), out_shape.as_slice());
            for (o, v) in got.indexed_iter() {
                let src: Option<Vec<usize>> = (0..maps.len()).map(|k| maps[k][o[k]]).collect();
                let want = src.map_or(-1.0f32, |i| a[IxDyn(&i)]);
                assert_eq!(v.to_bits(), want.to_bits(), "{shape:?} at {o:?}");
            }
        }
    }
}
