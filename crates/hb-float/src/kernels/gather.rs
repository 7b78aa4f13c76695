//! Indexing ops: Gather, GatherElements, GatherND, ScatterND,
//! ScatterElements, Scatter, NonZero, Compress. All work on every element
//! type (reductions need numbers or bools).

use super::remap::{axis_of, next_index, norm_index, reshape_arr, std_data, strides_of};
use super::util::{attr_err, input, one, opt_input};
use crate::error::OpResult;
use crate::registry::{OpCtx, Registry};
use crate::{invalid, unsupported};
use half::{bf16, f16};
use hb_tensor::tensor::Element;
use hb_tensor::{map_tensor, with_tensor, Tensor};
use ndarray::{ArrayD, IxDyn};

/// Registers the indexing ops.
pub fn register(r: &mut Registry) {
    r.register("Gather", gather);
    r.register("GatherElements", gather_elements);
    r.register("GatherND", gather_nd);
    r.register("ScatterND", scatter_nd);
    r.register("ScatterElements", scatter_elements);
    r.register("Scatter", scatter_elements);
    r.register("NonZero", non_zero);
    r.register("Compress", compress);
    r.register("ReverseSequence", reverse_sequence);
}

/// Index values of an integer tensor, each resolved against `len`.
fn index_values(t: &Tensor, len: usize) -> OpResult<Vec<usize>> {
    if !t.dtype().is_int() {
        return Err(invalid!("indices must be integers, got {}", t.dtype()));
    }
    t.to_i64_vec()?
        .into_iter()
        .map(|i| norm_index(i, len))
        .collect()
}

/// `(outer, n, inner)`: sizes before, at and after `axis`.
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// Takes the slices `idx` along `axis` (copying contiguous inner runs).
pub fn take_along<T: Clone>(a: &ArrayD<T>, axis: usize, idx: &[usize]) -> Vec<T> {
    let data = std_data(a);
    let (outer, n, inner) = split_at_axis(a.shape(), axis);
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &j in idx {
            let s = (o * n + j) * inner;
            out.extend_from_slice(&data[s..s + inner]);
        }
    }
    out
}

fn gather(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let ind = input(inputs, 1)?;
    if x.rank() == 0 {
        return Err(invalid!("Gather on a scalar"));
    }
    let axis = axis_of(ctx.node.int_or("axis", 0).map_err(attr_err)?, x.rank())?;
    let idx = index_values(ind, x.shape()[axis])?;
    let mut oshape = x.shape()[..axis].to_vec();
    oshape.extend_from_slice(ind.shape());
    oshape.extend_from_slice(&x.shape()[axis + 1..]);
    one(map_tensor!(x, a => {
        ArrayD::from_shape_vec(IxDyn(&oshape), take_along(a, axis, &idx))
            .map_err(|e| invalid!("{e}"))?
    }))
}

/// For every position of an index tensor of shape `ishape` (same rank as
/// `dshape`), the flat data offset with coordinate `axis` replaced by the
/// index value.
fn element_offsets(
    dshape: &[usize],
    ishape: &[usize],
    idx: &[usize],
    axis: usize,
) -> OpResult<Vec<usize>> {
    if dshape.len() != ishape.len() {
        return Err(invalid!(
            "data {dshape:?} and indices {ishape:?} ranks differ"
        ));
    }
    if ishape
        .iter()
        .zip(dshape)
        .enumerate()
        .any(|(k, (i, d))| k != axis && i > d)
    {
        return Err(invalid!("indices {ishape:?} exceed data {dshape:?}"));
    }
    let strides = strides_of(dshape);
    let mut pos = vec![0usize; ishape.len()];
    let mut out = Vec::with_capacity(idx.len());
    for &j in idx {
        let off: usize = pos
            .iter()
            .enumerate()
            .map(|(k, &p)| if k == axis { j } else { p } * strides[k])
            .sum();
        out.push(off);
        next_index(&mut pos, ishape);
    }
    Ok(out)
}

/// The elements of `a` at flat offsets, shaped as `shape`.
fn pick<T: Clone>(a: &ArrayD<T>, offs: &[usize], shape: &[usize]) -> OpResult<ArrayD<T>> {
    let data = std_data(a);
    let v: Vec<T> = offs.iter().map(|&o| data[o].clone()).collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| invalid!("{e}"))
}

fn gather_elements(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let ind = input(inputs, 1)?;
    let axis = axis_of(ctx.node.int_or("axis", 0).map_err(attr_err)?, x.rank())?;
    let idx = index_values(ind, *x.shape().get(axis).unwrap_or(&0))?;
    let offs = element_offsets(x.shape(), ind.shape(), &idx, axis)?;
    one(map_tensor!(x, a => pick(a, &offs, ind.shape())?))
}

/// Flat offsets of the slices GatherND/ScatterND address, with the slice
/// length. Indices are `[..., m]` tuples into `dshape[b..b+m]` per batch.
fn nd_offsets(dshape: &[usize], ind: &Tensor, batch_dims: usize) -> OpResult<(Vec<usize>, usize)> {
    let ishape = ind.shape();
    let q = ishape.len();
    let m = *ishape
        .last()
        .ok_or_else(|| invalid!("indices must have rank >= 1"))?;
    if batch_dims >= q || batch_dims + m > dshape.len() {
        return Err(invalid!("bad indices {ishape:?} for data {dshape:?}"));
    }
    if ishape[..batch_dims] != dshape[..batch_dims] {
        return Err(invalid!("batch dims of {ishape:?} and {dshape:?} differ"));
    }
    let raw = ind.to_i64_vec()?;
    let strides = strides_of(dshape);
    let slice_len: usize = dshape[batch_dims + m..].iter().product();
    let batch_size: usize = dshape[batch_dims..].iter().product();
    let per_batch: usize = ishape[batch_dims..q - 1].iter().product();
    let mut offs = Vec::with_capacity(raw.len() / m.max(1));
    for (t, tuple) in raw.chunks(m.max(1)).enumerate() {
        let b = t.checked_div(per_batch).unwrap_or(0);
        let mut off = b * batch_size;
        for (j, &i) in tuple.iter().enumerate().take(m) {
            off += norm_index(i, dshape[batch_dims + j])? * strides[batch_dims + j];
        }
        offs.push(off);
    }
    if m == 0 {
        let n: usize = ishape[..q - 1].iter().product();
        offs = (0..n).map(|t| t / per_batch.max(1) * batch_size).collect();
    }
    Ok((offs, slice_len))
}

fn gather_nd(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let ind = input(inputs, 1)?;
    let b = ctx.node.int_or("batch_dims", 0).map_err(attr_err)?;
    let b = usize::try_from(b).map_err(|_| invalid!("batch_dims {b}"))?;
    let (offs, len) = nd_offsets(x.shape(), ind, b)?;
    let ishape = ind.shape();
    let m = ishape[ishape.len() - 1];
    let mut oshape = ishape[..ishape.len() - 1].to_vec();
    oshape.extend_from_slice(&x.shape()[b + m..]);
    one(map_tensor!(x, a => {
        let data = std_data(a);
        let mut v = Vec::with_capacity(offs.len() * len);
        for &o in &offs {
            v.extend_from_slice(&data[o..o + len]);
        }
        ArrayD::from_shape_vec(IxDyn(&oshape), v).map_err(|e| invalid!("{e}"))?
    }))
}

/// Scatter reduction kinds.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

impl Reduction {
    fn parse(ctx: &OpCtx) -> OpResult<Self> {
        Ok(
            match ctx
                .node
                .string_or("reduction", "none")
                .map_err(attr_err)?
                .as_str()
            {
                "none" => Reduction::None,
                "add" => Reduction::Add,
                "mul" => Reduction::Mul,
                "max" => Reduction::Max,
                "min" => Reduction::Min,
                other => return Err(invalid!("unknown reduction '{other}'")),
            },
        )
    }
}

/// Combines an existing element with an update under a reduction.
trait Combine: Clone {
    /// The combined value, or None when the type has no such reduction.
    fn combine(&self, u: &Self, r: Reduction) -> Option<Self>;
}

macro_rules! combine_int {
    ($($t:ty),*) => {$(
        impl Combine for $t {
            fn combine(&self, u: &Self, r: Reduction) -> Option<Self> {
                Some(match r {
                    Reduction::None => *u,
                    Reduction::Add => self.wrapping_add(*u),
                    Reduction::Mul => self.wrapping_mul(*u),
                    Reduction::Max => (*self).max(*u),
                    Reduction::Min => (*self).min(*u),
                })
            }
        }
    )*};
}
combine_int!(i8, i16, i32, i64, u8, u16, u32, u64);

macro_rules! combine_float {
    ($($t:ty),*) => {$(
        impl Combine for $t {
            fn combine(&self, u: &Self, r: Reduction) -> Option<Self> {
                Some(match r {
                    Reduction::None => *u,
                    Reduction::Add => *self + *u,
                    Reduction::Mul => *self * *u,
                    Reduction::Max => if *u > *self { *u } else { *self },
                    Reduction::Min => if *u < *self { *u } else { *self },
                })
            }
        }
    )*};
}
combine_float!(f32, f64, f16, bf16);

impl Combine for bool {
    fn combine(&self, u: &Self, r: Reduction) -> Option<Self> {
        Some(match r {
            Reduction::None => *u,
            Reduction::Add | Reduction::Max => *self || *u,
            Reduction::Mul | Reduction::Min => *self && *u,
        })
    }
}

impl Combine for String {
    fn combine(&self, u: &Self, r: Reduction) -> Option<Self> {
        (r == Reduction::None).then(|| u.clone())
    }
}

/// Copies `a` and combines `updates` (of `a`'s type) in at the given runs:
/// update chunk `k` (length `len`) goes to `offs[k]..offs[k]+len`.
fn scatter_runs<T: Combine + Element>(
    a: &ArrayD<T>,
    updates: &Tensor,
    offs: &[usize],
    len: usize,
    r: Reduction,
) -> OpResult<Tensor> {
    let upd = updates
        .as_array::<T>()
        .ok_or_else(|| invalid!("updates type differs from data"))?;
    let upd = std_data(upd);
    if upd.len() != offs.len() * len {
        return Err(invalid!(
            "updates have {} elements, expected {}",
            upd.len(),
            offs.len() * len
        ));
    }
    let mut out = std_data(a).into_owned();
    for (k, &o) in offs.iter().enumerate() {
        for j in 0..len {
            let cur = &out[o + j];
            out[o + j] = cur
                .combine(&upd[k * len + j], r)
                .ok_or_else(|| unsupported!("reduction {r:?} on {}", T::DTYPE))?;
        }
    }
    Ok(T::wrap(reshape_arr(
        &ArrayD::from_shape_vec(IxDyn(&[out.len()]), out).map_err(|e| invalid!("{e}"))?,
        a.shape(),
    )?))
}

fn scatter_nd(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let ind = input(inputs, 1)?;
    let upd = input(inputs, 2)?;
    let r = Reduction::parse(ctx)?;
    let (offs, len) = nd_offsets(x.shape(), ind, 0)?;
    one(with_tensor!(x, a => scatter_runs(a, upd, &offs, len, r)?))
}

fn scatter_elements(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let ind = input(inputs, 1)?;
    let upd = input(inputs, 2)?;
    if upd.shape() != ind.shape() {
        return Err(invalid!(
            "updates {:?} and indices {:?} differ",
            upd.shape(),
            ind.shape()
        ));
    }
    let r = Reduction::parse(ctx)?;
    let axis = axis_of(ctx.node.int_or("axis", 0).map_err(attr_err)?, x.rank())?;
    let idx = index_values(ind, *x.shape().get(axis).unwrap_or(&0))?;
    let offs = element_offsets(x.shape(), ind.shape(), &idx, axis)?;
    one(with_tensor!(x, a => scatter_runs(a, upd, &offs, 1, r)?))
}

fn non_zero(_ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let vals = x.to_f64_vec()?;
    let shape = x.shape();
    let rank = shape.len();
    let mut pos = vec![0usize; rank];
    let mut coords: Vec<Vec<i64>> = vec![Vec::new(); rank];
    for v in &vals {
        if *v != 0.0 {
            for (k, c) in coords.iter_mut().enumerate() {
                c.push(pos[k] as i64);
            }
        }
        next_index(&mut pos, shape);
    }
    let nnz = if rank == 0 {
        usize::from(vals.first().is_some_and(|v| *v != 0.0))
    } else {
        coords.first().map_or(0, Vec::len)
    };
    one(Tensor::from_vec(&[rank, nnz], coords.concat())?)
}

fn compress(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let cond = opt_input(inputs, 1)
        .ok_or_else(|| invalid!("Compress needs a condition"))?
        .to_i64_vec()?;
    let (src, axis) = match ctx.node.get_int("axis").map_err(attr_err)? {
        Some(a) => (x.clone(), axis_of(a, x.rank())?),
        None => (super::remap::reshape_tensor(x, &[x.len()])?, 0),
    };
    let dim = src.shape()[axis];
    let idx: Vec<usize> = cond
        .iter()
        .enumerate()
        .filter(|(_, &c)| c != 0)
        .map(|(i, _)| i)
        .collect();
    if idx.iter().any(|&i| i >= dim) {
        return Err(invalid!("Compress condition longer than axis {dim}"));
    }
    let mut oshape = src.shape().to_vec();
    oshape[axis] = idx.len();
    one(map_tensor!(&src, a => {
        ArrayD::from_shape_vec(IxDyn(&oshape), take_along(a, axis, &idx))
            .map_err(|e| invalid!("{e}"))?
    }))
}

/// Flat source offsets of ReverseSequence: along `time`, the first
/// `lens[b]` entries of batch `b` are reversed.
fn reverse_offsets(shape: &[usize], time: usize, batch: usize, lens: &[usize]) -> Vec<usize> {
    let strides = strides_of(shape);
    let total: usize = shape.iter().product();
    let mut pos = vec![0usize; shape.len()];
    let mut offs = Vec::with_capacity(total);
    for _ in 0..total {
        let t = pos[time];
        let l = lens[pos[batch]];
        let src_t = if t < l { l - 1 - t } else { t };
        let off: usize = pos
            .iter()
            .zip(&strides)
            .enumerate()
            .map(|(k, (&p, &s))| if k == time { src_t } else { p } * s)
            .sum();
        offs.push(off);
        next_index(&mut pos, shape);
    }
    offs
}

fn reverse_sequence(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let r = x.rank();
    if r < 2 {
        return Err(invalid!("ReverseSequence needs rank >= 2"));
    }
    let time = axis_of(ctx.node.int_or("time_axis", 0).map_err(attr_err)?, r)?;
    let batch = axis_of(ctx.node.int_or("batch_axis", 1).map_err(attr_err)?, r)?;
    if time == batch {
        return Err(invalid!("time_axis and batch_axis are equal"));
    }
    let lens = input(inputs, 1)?.to_i64_vec()?;
    let (tn, bn) = (x.shape()[time], x.shape()[batch]);
    if lens.len() != bn {
        return Err(invalid!("{} sequence_lens for batch {bn}", lens.len()));
    }
    let lens: Vec<usize> = lens
        .iter()
        .map(|&l| usize::try_from(l).ok().filter(|&l| l <= tn))
        .collect::<Option<_>>()
        .ok_or_else(|| invalid!("sequence_lens {lens:?} out of range 0..={tn}"))?;
    let offs = reverse_offsets(x.shape(), time, batch, &lens);
    one(map_tensor!(x, a => pick(a, &offs, a.shape())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_along_middle_axis() {
        let a = ArrayD::from_shape_vec(IxDyn(&[2, 3, 2]), (0..12).collect::<Vec<i32>>()).unwrap();
        assert_eq!(take_along(&a, 1, &[2, 0]), vec![4, 5, 0, 1, 10, 11, 6, 7]);
    }

    #[test]
    fn kernels_reject_bad_inputs() {
        let node = hb_ir::Node::new("n", "Gather", &["x", "i"], &["y"]);
        let ctx = OpCtx {
            node: &node,
            opset: 13,
        };
        let x = Tensor::from_f32(&[3], vec![1.0, 2.0, 3.0]).unwrap();
        let bad = Tensor::from_vec(&[1], vec![3i64]).unwrap();
        assert!(gather(&ctx, &[Some(&x), Some(&bad)]).is_err());
        let ok = Tensor::from_vec(&[2], vec![-1i64, 0]).unwrap();
        let y = gather(&ctx, &[Some(&x), Some(&ok)]).unwrap();
        assert_eq!(y[0].as_f32().unwrap().as_slice().unwrap(), &[3.0, 1.0]);
        assert!(gather(&ctx, &[Some(&x)]).is_err());
        let upd = Tensor::from_f32(&[1], vec![9.0]).unwrap();
        let idx2 = Tensor::from_vec(&[1, 1], vec![7i64]).unwrap();
        assert!(scatter_nd(&ctx, &[Some(&x), Some(&idx2), Some(&upd)]).is_err());
    }

    #[test]
    fn out_of_range_index_is_error() {
        let t = Tensor::from_vec(&[2], vec![0i64, 5]).unwrap();
        assert!(index_values(&t, 3).is_err());
        let t = Tensor::from_vec(&[1], vec![-3i64]).unwrap();
        assert_eq!(index_values(&t, 3).unwrap(), vec![0]);
    }
}
