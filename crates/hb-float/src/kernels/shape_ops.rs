//! Shape and layout ops: Identity, Dropout, Shape, Size, Reshape, Flatten,
//! Squeeze, Unsqueeze, Transpose, Concat, Split, Slice, Expand, Tile,
//! DepthToSpace, SpaceToDepth. All work on every element type.

use super::remap::{
    axis_of, check_numel, remap_axes, reshape_arr, reshape_owned, reshape_tensor, to_dims,
    to_standard,
};
use super::util::{attr_err, broadcast_shapes, input, ints_input, one, opt_input};
use crate::error::OpResult;
use crate::registry::{OpCtx, Registry};
use crate::{invalid, unsupported};
use hb_tensor::tensor::Element;
use hb_tensor::{map_tensor, with_tensor, Tensor};
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Slice};

/// Registers the shape and layout ops.
pub fn register(r: &mut Registry) {
    r.register("Identity", identity);
    r.register("Dropout", dropout);
    r.register("Shape", shape);
    r.register("Size", size);
    r.register("Reshape", reshape);
    r.register("Flatten", flatten);
    r.register("Squeeze", squeeze);
    r.register("Unsqueeze", unsqueeze);
    r.register_in_place("", "Identity", identity_in_place);
    r.register_in_place("", "Reshape", reshape_in_place);
    r.register_in_place("", "Flatten", flatten_in_place);
    r.register_in_place("", "Squeeze", squeeze_in_place);
    r.register_in_place("", "Unsqueeze", unsqueeze_in_place);
    r.register("Transpose", transpose);
    r.register("Concat", concat);
    r.register("Split", split);
    r.register("Slice", slice);
    r.register("Expand", expand);
    r.register("Tile", tile);
    r.register("DepthToSpace", depth_to_space);
    r.register("SpaceToDepth", space_to_depth);
}

fn identity(_ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    one(input(inputs, 0)?.clone())
}

/// Inference-mode Dropout: output = input, mask all true.
fn dropout(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let training = match opt_input(inputs, 2) {
        Some(t) => t.to_i64_vec()?.first().copied().unwrap_or(0) != 0,
        None => false,
    };
    let ratio = match opt_input(inputs, 1) {
        Some(t) => t.to_f64_vec()?.first().copied().unwrap_or(0.5),
        None => 0.5,
    };
    if training && ratio != 0.0 {
        return Err(unsupported!("Dropout in training mode"));
    }
    let mut out = vec![x.clone()];
    if ctx.node.outputs.len() > 1 {
        out.push(Tensor::Bool(ArrayD::from_elem(IxDyn(x.shape()), true)));
    }
    Ok(out)
}

/// Clamps a Shape-style `start`/`end` attribute into `[0, rank]`.
fn clamp_bound(v: i64, rank: usize) -> usize {
    let r = rank as i64;
    let v = if v < 0 { v + r } else { v };
    v.clamp(0, r) as usize
}

fn shape(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let dims = input(inputs, 0)?.shape();
    let r = dims.len();
    let start = clamp_bound(ctx.node.int_or("start", 0).map_err(attr_err)?, r);
    let end = match ctx.node.get_int("end").map_err(attr_err)? {
        Some(e) => clamp_bound(e, r),
        None => r,
    };
    let v: Vec<i64> = dims[start..end.max(start)]
        .iter()
        .map(|&d| d as i64)
        .collect();
    Ok(vec![Tensor::from_vec(&[v.len()], v)?])
}

fn size(_ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    one(Tensor::scalar(input(inputs, 0)?.len() as i64))
}

/// Resolves an ONNX Reshape target (0 copies, one -1 inferred).
fn reshape_target(from: &[usize], spec: &[i64], allowzero: bool) -> OpResult<Vec<usize>> {
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(
                *from
                    .get(i)
                    .ok_or_else(|| invalid!("0 at position {i} beyond input rank"))?,
            ),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(invalid!("bad reshape target {spec:?}")),
        }
    }
    let total: usize = from.iter().product();
    if let Some(i) = infer {
        let known = check_numel(&out)?;
        if known == 0 || !total.is_multiple_of(known) {
            return Err(invalid!("cannot reshape {from:?} to {spec:?}"));
        }
        out[i] = total / known;
    }
    Ok(out)
}

/// The output shape of a Reshape of `dims`.
fn reshape_shape(ctx: &OpCtx, dims: &[usize], inputs: &[Option<&Tensor>]) -> OpResult<Vec<usize>> {
    let spec = match ints_input(inputs, 1)? {
        Some(s) => s,
        None => ctx
            .node
            .get_ints("shape")
            .map_err(attr_err)?
            .ok_or_else(|| invalid!("Reshape needs a shape"))?,
    };
    let allowzero = ctx.node.int_or("allowzero", 0).map_err(attr_err)? != 0;
    reshape_target(dims, &spec, allowzero)
}

/// The output shape of a Flatten of `dims`.
fn flatten_shape(ctx: &OpCtx, dims: &[usize], _: &[Option<&Tensor>]) -> OpResult<Vec<usize>> {
    let r = dims.len() as i64;
    let axis = ctx.node.int_or("axis", 1).map_err(attr_err)?;
    let axis = if axis < 0 { axis + r } else { axis };
    if axis < 0 || axis > r {
        return Err(invalid!("Flatten axis {axis} out of range for rank {r}"));
    }
    let outer: usize = dims[..axis as usize].iter().product();
    let inner: usize = dims[axis as usize..].iter().product();
    Ok(vec![outer, inner])
}

/// Axes from the `axes` input (opset ≥ 13) or attribute.
fn axes_arg(ctx: &OpCtx, inputs: &[Option<&Tensor>], idx: usize) -> OpResult<Option<Vec<i64>>> {
    if ctx.opset >= 13 {
        ints_input(inputs, idx)
    } else {
        ctx.node.get_ints("axes").map_err(attr_err)
    }
}

/// Normalizes axes against `rank`, rejecting duplicates.
fn norm_axes(axes: &[i64], rank: usize) -> OpResult<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = axis_of(a, rank)?;
        if out.contains(&n) {
            return Err(invalid!("duplicate axis {a}"));
        }
        out.push(n);
    }
    Ok(out)
}

/// The output shape of a Squeeze of `dims`.
fn squeeze_shape(ctx: &OpCtx, dims: &[usize], inputs: &[Option<&Tensor>]) -> OpResult<Vec<usize>> {
    let axes = match axes_arg(ctx, inputs, 1)? {
        Some(a) => norm_axes(&a, dims.len())?,
        None => (0..dims.len()).filter(|&i| dims[i] == 1).collect(),
    };
    if let Some(&a) = axes.iter().find(|&&a| dims[a] != 1) {
        return Err(invalid!("cannot squeeze axis {a} of size {}", dims[a]));
    }
    Ok((0..dims.len())
        .filter(|i| !axes.contains(i))
        .map(|i| dims[i])
        .collect())
}

/// The output shape of an Unsqueeze of `dims`.
fn unsqueeze_shape(
    ctx: &OpCtx,
    dims: &[usize],
    inputs: &[Option<&Tensor>],
) -> OpResult<Vec<usize>> {
    let axes = axes_arg(ctx, inputs, 1)?.ok_or_else(|| invalid!("Unsqueeze needs axes"))?;
    let rank = dims.len() + axes.len();
    let axes = norm_axes(&axes, rank)?;
    let mut src = dims.iter();
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        if axes.contains(&i) {
            out.push(1);
        } else {
            out.push(*src.next().ok_or_else(|| invalid!("bad unsqueeze axes"))?);
        }
    }
    Ok(out)
}

/// A kernel computing its output shape from input 0's.
type ShapeOf = fn(&OpCtx, &[usize], &[Option<&Tensor>]) -> OpResult<Vec<usize>>;

/// Copying kernels and in-place variants (the buffer keeps its data, the
/// array a new shape) of the reshape-like ops.
macro_rules! reshape_like {
    ($plain:ident, $owned:ident, $shape:ident) => {
        fn $plain(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
            let x = input(inputs, 0)?;
            let to: ShapeOf = $shape;
            one(reshape_tensor(x, &to(ctx, x.shape(), inputs)?)?)
        }

        fn $owned(
            ctx: &OpCtx,
            x: Tensor,
            inputs: &[Option<&Tensor>],
        ) -> OpResult<std::result::Result<Vec<Tensor>, Tensor>> {
            let to: ShapeOf = $shape;
            let shape = to(ctx, x.shape(), inputs)?;
            Ok(Ok(vec![reshape_owned(x, &shape)?]))
        }
    };
}

reshape_like!(reshape, reshape_in_place, reshape_shape);
reshape_like!(flatten, flatten_in_place, flatten_shape);
reshape_like!(squeeze, squeeze_in_place, squeeze_shape);
reshape_like!(unsqueeze, unsqueeze_in_place, unsqueeze_shape);

fn identity_in_place(
    _ctx: &OpCtx,
    x: Tensor,
    _inputs: &[Option<&Tensor>],
) -> OpResult<std::result::Result<Vec<Tensor>, Tensor>> {
    Ok(Ok(vec![x]))
}

/// `a` with its axes permuted (perm must be a permutation; checked).
pub fn permute<T: Clone>(a: &ArrayD<T>, perm: &[usize]) -> OpResult<ArrayD<T>> {
    let mut seen = vec![false; a.ndim()];
    if perm.len() != a.ndim() {
        return Err(invalid!("perm {perm:?} does not fit rank {}", a.ndim()));
    }
    for &p in perm {
        match seen.get_mut(p) {
            Some(s) if !*s => *s = true,
            _ => return Err(invalid!("perm {perm:?} is not a permutation")),
        }
    }
    let r = perm.len();
    if let Some(src) = a.as_slice() {
        if let Some(out) = permute_rows(src, a.shape(), perm) {
            let shape: Vec<usize> = perm.iter().map(|&p| a.shape()[p]).collect();
            return ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| invalid!("{e}"));
        }
    }
    // When the input's contiguous axis does not end up last, copy in square
    // tiles so both reads and writes stay in cache.
    match perm.iter().position(|&p| p + 1 == r) {
        Some(q) if r >= 2 && q + 1 != r && a.len() >= 1024 => Ok(tiled_permute(a, perm, q)),
        _ => Ok(to_standard(a.view().permuted_axes(IxDyn(perm)))),
    }
}

/// Elements from which a permute that moves the contiguous axis uses the
/// cache-tiled copy instead of a strided gather.
const GATHER_MAX: usize = 1 << 16;

/// Permutes contiguous data after merging the output axes that stay
/// adjacent in the input and dropping size-1 axes: when the last merged
/// axis is contiguous in the input, whole runs are copied (`[0,2,1,3]`, the
/// attention head split/merge); small permutes that move it are a strided
/// gather per output row. `None` for large permutes moving the contiguous
/// axis (the tiled copy handles those).
fn permute_rows<T: Clone>(src: &[T], shape: &[usize], perm: &[usize]) -> Option<Vec<T>> {
    let in_strides = super::remap::strides_of(shape);
    // (size, source stride) of every merged output axis, outermost first.
    let mut dims: Vec<(usize, usize)> = Vec::with_capacity(perm.len());
    for &p in perm {
        let (n, st) = (shape[p], in_strides[p]);
        if n == 1 {
            continue;
        }
        match dims.last_mut() {
            Some(last) if last.1 == st * n => *last = (last.0 * n, st),
            _ => dims.push((n, st)),
        }
    }
    let total = src.len();
    let (l, sl) = dims.pop().unwrap_or((1, 1));
    if total == 0 || l == 0 {
        return Some(src.to_vec());
    }
    if sl != 1 && total > GATHER_MAX {
        return None;
    }
    // When the next merged output axis is the input's contiguous one (`q`
    // elements at stride 1: the `[.., T, D] -> [.., D, T]` key transpose of
    // attention), its `q` output rows are made together as a small 2-D
    // transpose: each source run of `q` is read once and scattered.
    let q = match dims.last() {
        Some(&(q, 1)) if sl != 1 => {
            dims.pop();
            q
        }
        _ => 1,
    };
    let mut out = Vec::with_capacity(total);
    let mut idx = vec![0usize; dims.len()];
    let mut base = 0usize;
    for _ in 0..total / (l * q) {
        if sl == 1 {
            out.extend_from_slice(src.get(base..base + l)?);
        } else {
            let block = src.get(base..base + (l - 1) * sl + q)?;
            let start = out.len();
            out.resize(start + q * l, block[0].clone());
            let dst = out.get_mut(start..)?;
            for (j, run) in block.chunks(sl).enumerate() {
                for (i, v) in run.iter().take(q).enumerate() {
                    dst[i * l + j] = v.clone();
                }
            }
        }
        // Odometer over the outer merged axes, keeping `base` in step.
        for (k, (n, st)) in dims.iter().enumerate().rev() {
            idx[k] += 1;
            base += st;
            if idx[k] < *n {
                break;
            }
            idx[k] = 0;
            base -= st * n;
        }
    }
    (out.len() == total).then_some(out)
}

/// Permutes with tiles over output axes `q` (the input's contiguous axis)
/// and the last one.
fn tiled_permute<T: Clone>(a: &ArrayD<T>, perm: &[usize], q: usize) -> ArrayD<T> {
    const B: usize = 32;
    let r = perm.len();
    let src = super::remap::std_data(a);
    let in_strides = super::remap::strides_of(a.shape());
    let out_shape: Vec<usize> = perm.iter().map(|&p| a.shape()[p]).collect();
    let out_strides = super::remap::strides_of(&out_shape);
    // Source stride of every output axis.
    let s_of: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let (nq, nl) = (out_shape[q], out_shape[r - 1]);
    let (oq, sl) = (out_strides[q], s_of[r - 1]);
    let mut out: Vec<T> = match src.first() {
        Some(f) => vec![f.clone(); src.len()],
        None => return to_standard(a.view().permuted_axes(IxDyn(perm))),
    };
    let outer: Vec<usize> = (0..r - 1).filter(|&k| k != q).collect();
    let outer_shape: Vec<usize> = outer.iter().map(|&k| out_shape[k]).collect();
    let mut idx = vec![0usize; outer.len()];
    loop {
        let (mut ib, mut ob) = (0usize, 0usize);
        for (j, &k) in outer.iter().enumerate() {
            ib += idx[j] * s_of[k];
            ob += idx[j] * out_strides[k];
        }
        for i0 in (0..nq).step_by(B) {
            for j0 in (0..nl).step_by(B) {
                for i in i0..(i0 + B).min(nq) {
                    let o = ob + i * oq;
                    for j in j0..(j0 + B).min(nl) {
                        out[o + j] = src[ib + i + j * sl].clone();
                    }
                }
            }
        }
        if !super::remap::next_index(&mut idx, &outer_shape) {
            break;
        }
    }
    ArrayD::from_shape_vec(IxDyn(&out_shape), out)
        .unwrap_or_else(|_| to_standard(a.view().permuted_axes(IxDyn(perm))))
}

fn transpose(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let r = x.rank();
    let perm: Vec<usize> = match ctx.node.get_ints("perm").map_err(attr_err)? {
        Some(p) => p.iter().map(|&v| axis_of(v, r)).collect::<OpResult<_>>()?,
        None => (0..r).rev().collect(),
    };
    one(map_tensor!(x, a => permute(a, &perm)?))
}

/// Concatenates tensors of `first`'s element type along `axis`.
fn concat_as<T: Element>(_first: &ArrayD<T>, ts: &[&Tensor], axis: usize) -> OpResult<Tensor> {
    let views = ts
        .iter()
        .map(|t| {
            t.as_array::<T>()
                .map(|a| a.view())
                .ok_or_else(|| invalid!("Concat inputs have different types"))
        })
        .collect::<OpResult<Vec<_>>>()?;
    if let Some(out) = concat_contiguous(&views, axis) {
        return Ok(T::wrap(out));
    }
    let out = ndarray::concatenate(Axis(axis), &views).map_err(|e| invalid!("Concat: {e}"))?;
    Ok(T::wrap(out))
}

/// Concat of contiguous row-major inputs that agree on every other axis:
/// for each index of the axes before `axis`, each input's block is one
/// slice copy. None for any other case (ndarray's general concatenate).
fn concat_contiguous<T: Clone>(views: &[ArrayViewD<'_, T>], axis: usize) -> Option<ArrayD<T>> {
    let first = views.first()?;
    let mut shape = first.shape().to_vec();
    shape[axis] = 0;
    let mut slices = Vec::with_capacity(views.len());
    for v in views {
        let (a, b) = (v.shape(), first.shape());
        if a.len() != b.len() || (0..a.len()).any(|d| d != axis && a[d] != b[d]) {
            return None;
        }
        shape[axis] += a[axis];
        slices.push(v.as_slice()?);
    }
    let outer: usize = shape[..axis].iter().product();
    let blocks: Vec<usize> = views
        .iter()
        .map(|v| v.shape()[axis..].iter().product())
        .collect();
    let mut data = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for (s, &b) in slices.iter().zip(&blocks) {
            data.extend_from_slice(s.get(o * b..(o + 1) * b)?);
        }
    }
    ArrayD::from_shape_vec(IxDyn(&shape), data).ok()
}

fn concat(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let ts: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
    let first = ts
        .first()
        .ok_or_else(|| invalid!("Concat without inputs"))?;
    let axis = axis_of(ctx.node.int_req("axis").map_err(attr_err)?, first.rank())?;
    if ts.iter().any(|t| t.rank() != first.rank()) {
        return Err(invalid!("Concat inputs have different ranks"));
    }
    one(with_tensor!(*first, a => concat_as(a, &ts, axis)?))
}

/// Split sizes: explicit, `num_outputs` (uneven last chunk) or equal.
fn split_sizes(ctx: &OpCtx, inputs: &[Option<&Tensor>], dim: usize) -> OpResult<Vec<usize>> {
    let explicit = if ctx.opset >= 13 {
        ints_input(inputs, 1)?
    } else {
        ctx.node.get_ints("split").map_err(attr_err)?
    };
    if let Some(s) = explicit {
        let s = to_dims(&s)?;
        if s.iter().try_fold(0usize, |a, &b| a.checked_add(b)) != Some(dim) {
            return Err(invalid!("split {s:?} does not sum to {dim}"));
        }
        return Ok(s);
    }
    let n = match ctx.node.get_int("num_outputs").map_err(attr_err)? {
        Some(n) if n > 0 => n as usize,
        Some(n) => return Err(invalid!("num_outputs {n}")),
        None => ctx.node.outputs.len().max(1),
    };
    let from_attr = ctx.node.get_int("num_outputs").map_err(attr_err)?.is_some();
    if !from_attr && !dim.is_multiple_of(n) {
        return Err(invalid!("cannot split {dim} into {n} equal parts"));
    }
    let chunk = dim.div_ceil(n);
    let mut out = Vec::with_capacity(n);
    let mut left = dim;
    for _ in 0..n {
        let c = chunk.min(left);
        out.push(c);
        left -= c;
    }
    Ok(out)
}

fn split(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let axis = axis_of(ctx.node.int_or("axis", 0).map_err(attr_err)?, x.rank())?;
    let sizes = split_sizes(ctx, inputs, x.shape()[axis])?;
    let mut start = 0;
    let mut out = Vec::with_capacity(sizes.len());
    for s in sizes {
        let sl = Slice::from(start as isize..(start + s) as isize);
        out.push(map_tensor!(x, a => to_standard(a.slice_axis(Axis(axis), sl))));
        start += s;
    }
    Ok(out)
}

/// One axis of an ONNX slice as an ndarray slice (start, count, step).
fn slice_axis_spec(start: i64, end: i64, step: i64, dim: usize) -> OpResult<Slice> {
    if step == 0 {
        return Err(invalid!("Slice step 0"));
    }
    // i128 keeps INT64_MIN/INT64_MAX style bounds and steps overflow-free.
    let (d, step) = (dim as i128, step as i128);
    let fix = |v: i64| if v < 0 { v as i128 + d } else { v as i128 };
    let (s, e) = (fix(start), fix(end));
    let (s, n) = if step > 0 {
        let s = s.clamp(0, d);
        let e = e.clamp(0, d);
        (s, if e > s { (e - s - 1) / step + 1 } else { 0 })
    } else {
        let s = s.clamp(0, (d - 1).max(0));
        let e = e.clamp(-1, d - 1);
        (s, if s > e { (s - e - 1) / -step + 1 } else { 0 })
    };
    if n == 0 || d == 0 {
        return Ok(Slice::new(0, Some(0), 1));
    }
    Ok(if step > 0 {
        Slice::new(
            s as isize,
            Some((s + (n - 1) * step + 1) as isize),
            step as isize,
        )
    } else {
        let last = s + (n - 1) * step;
        Slice::new(last as isize, Some((s + 1) as isize), step as isize)
    })
}

/// Slice arguments from inputs (opset ≥ 10) or attributes.
fn slice_args(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<[Option<Vec<i64>>; 4]> {
    if ctx.opset >= 10 {
        Ok([
            ints_input(inputs, 1)?,
            ints_input(inputs, 2)?,
            ints_input(inputs, 3)?,
            ints_input(inputs, 4)?,
        ])
    } else {
        let g = |n: &str| ctx.node.get_ints(n).map_err(attr_err);
        Ok([g("starts")?, g("ends")?, g("axes")?, None])
    }
}

fn slice(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let [starts, ends, axes, steps] = slice_args(ctx, inputs)?;
    let starts = starts.ok_or_else(|| invalid!("Slice needs starts"))?;
    let ends = ends.ok_or_else(|| invalid!("Slice needs ends"))?;
    let n = starts.len();
    let axes = axes.unwrap_or_else(|| (0..n as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(invalid!("Slice starts/ends/axes/steps lengths differ"));
    }
    let axes = norm_axes(&axes, x.rank())?;
    let mut specs: Vec<Slice> = vec![Slice::from(..); x.rank()];
    for i in 0..n {
        specs[axes[i]] = slice_axis_spec(starts[i], ends[i], steps[i], x.shape()[axes[i]])?;
    }
    one(map_tensor!(x, a => to_standard(a.slice_each_axis(|d| specs[d.axis.index()]))))
}

fn expand(_ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let spec = ints_input(inputs, 1)?.ok_or_else(|| invalid!("Expand needs a shape"))?;
    let target = broadcast_shapes(x.shape(), &to_dims(&spec)?)?;
    check_numel(&target)?;
    one(map_tensor!(x, a => {
        let v = a
            .broadcast(IxDyn(&target))
            .ok_or_else(|| invalid!("cannot expand {:?} to {target:?}", a.shape()))?;
        to_standard(v)
    }))
}

fn tile(_ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let reps = to_dims(&ints_input(inputs, 1)?.ok_or_else(|| invalid!("Tile needs repeats"))?)?;
    if reps.len() != x.rank() {
        return Err(invalid!(
            "Tile repeats {reps:?} do not fit rank {}",
            x.rank()
        ));
    }
    let out: Vec<usize> = x
        .shape()
        .iter()
        .zip(&reps)
        .map(|(&d, &r)| d.checked_mul(r).ok_or_else(|| invalid!("Tile too large")))
        .collect::<OpResult<_>>()?;
    check_numel(&out)?;
    let maps: Vec<Vec<Option<usize>>> = x
        .shape()
        .iter()
        .zip(&out)
        .map(|(&d, &o)| (0..o).map(|o| Some(o % d)).collect())
        .collect();
    one(map_tensor!(x, a => {
        let fill = a.first().cloned();
        match fill {
            Some(f) => remap_axes(a, &maps, &f)?,
            None => ArrayD::from_shape_vec(IxDyn(&maps.iter().map(|m| m.len()).collect::<Vec<_>>()), Vec::new())
                .map_err(|e| invalid!("{e}"))?,
        }
    }))
}

/// The `[N, C, H, W]` dims of a 4-D input and the block size.
fn block_args(ctx: &OpCtx, x: &Tensor) -> OpResult<([usize; 4], usize)> {
    let b = ctx.node.int_req("blocksize").map_err(attr_err)?;
    if !(1..=1 << 16).contains(&b) {
        return Err(invalid!("blocksize {b}"));
    }
    match x.shape() {
        &[n, c, h, w] => Ok(([n, c, h, w], b as usize)),
        s => Err(invalid!("expected a 4-D input, got {s:?}")),
    }
}

/// Reshape → transpose → reshape, on any element type.
fn shuffle(x: &Tensor, mid: &[usize], perm: &[usize], out: &[usize]) -> OpResult<Tensor> {
    Ok(map_tensor!(x, a => {
        let m = reshape_arr(a, mid)?;
        let p = permute(&m, perm)?;
        reshape_arr(&p, out)?
    }))
}

fn depth_to_space(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let ([n, c, h, w], b) = block_args(ctx, x)?;
    if c % (b * b) != 0 {
        return Err(invalid!(
            "channels {c} not divisible by blocksize² {}",
            b * b
        ));
    }
    let c2 = c / (b * b);
    let out = [n, c2, h * b, w * b];
    let crd = ctx.node.string_or("mode", "DCR").map_err(attr_err)? == "CRD";
    one(if crd {
        shuffle(x, &[n, c2, b, b, h, w], &[0, 1, 4, 2, 5, 3], &out)?
    } else {
        shuffle(x, &[n, b, b, c2, h, w], &[0, 3, 4, 1, 5, 2], &out)?
    })
}

fn space_to_depth(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let ([n, c, h, w], b) = block_args(ctx, x)?;
    if h % b != 0 || w % b != 0 {
        return Err(invalid!(
            "spatial dims {h}x{w} not divisible by blocksize {b}"
        ));
    }
    let mid = [n, c, h / b, b, w / b, b];
    let crd = ctx.node.string_or("mode", "DCR").map_err(attr_err)? == "CRD";
    let perm: &[usize] = if crd {
        &[0, 1, 3, 5, 2, 4]
    } else {
        &[0, 3, 5, 1, 2, 4]
    };
    one(shuffle(x, &mid, perm, &[n, c * b * b, h / b, w / b])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_concat_equals_the_general_one() {
        use ndarray::Dimension;
        let arr = |shape: &[usize], seed: usize| {
            ndarray::Array::from_shape_fn(IxDyn(shape), |d| {
                (seed * 1000 + d.slice().iter().fold(0, |a, &x| a * 10 + x)) as f32
            })
        };
        for axis in 0..3 {
            let mut shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]];
            shapes[1][axis] = 1;
            shapes[2][axis] = 0;
            let arrays: Vec<ArrayD<f32>> =
                shapes.iter().enumerate().map(|(k, s)| arr(s, k)).collect();
            let views: Vec<ArrayViewD<'_, f32>> = arrays.iter().map(|a| a.view()).collect();
            let want = ndarray::concatenate(Axis(axis), &views).unwrap();
            assert_eq!(concat_contiguous(&views, axis), Some(want));
        }
        // A transposed input or a mismatched shape is left to the general path.
        let a = arr(&[2, 3], 0);
        let t = a.t().into_owned();
        assert!(concat_contiguous(&[a.view(), a.t()], 0).is_none());
        assert!(concat_contiguous(&[a.view(), t.view()], 0).is_none());
    }

    #[test]
    fn negative_step_slice_spec() {
        // [0..5) reversed from 4 down to (exclusive) 0 with step -2: 4, 2.
        let a = ndarray::Array1::from(vec![0, 1, 2, 3, 4]).into_dyn();
        let s = slice_axis_spec(i64::MAX, 0, -2, 5).unwrap();
        let v: Vec<i32> = a.slice_each_axis(|_| s).iter().copied().collect();
        assert_eq!(v, vec![4, 2]);
        let s = slice_axis_spec(-1, i64::MIN, -1, 5).unwrap();
        let v: Vec<i32> = a.slice_each_axis(|_| s).iter().copied().collect();
        assert_eq!(v, vec![4, 3, 2, 1, 0]);
        assert!(slice_axis_spec(0, 3, 0, 5).is_err());
    }

    #[test]
    fn tiled_permute_matches_view() {
        let a =
            ArrayD::from_shape_vec(IxDyn(&[3, 40, 50]), (0..6000).collect::<Vec<i32>>()).unwrap();
        for perm in [[0, 2, 1], [2, 1, 0], [2, 0, 1], [1, 2, 0]] {
            let want = to_standard(a.view().permuted_axes(IxDyn(&perm)));
            assert_eq!(permute(&a, &perm).unwrap(), want, "{perm:?}");
        }
    }

    #[test]
    fn row_permute_matches_view() {
        // Every permutation of rank 4 (with size-1 axes and both small and
        // large element counts) against ndarray's permuted view.
        for shape in [
            [2, 3, 4, 5],
            [1, 6, 1, 7],
            [5, 1, 2, 1],
            [3, 14, 4, 8],
            [8, 33, 4, 64],
        ] {
            let n: usize = shape.iter().product();
            let a =
                ArrayD::from_shape_vec(IxDyn(&shape), (0..n as i32).collect::<Vec<_>>()).unwrap();
            for p in 0..24usize {
                let mut rest = vec![0, 1, 2, 3];
                let mut f = p;
                let perm: Vec<usize> = (1..=4)
                    .rev()
                    .map(|k| {
                        let i = f % k;
                        f /= k;
                        rest.remove(i)
                    })
                    .collect();
                let want = to_standard(a.view().permuted_axes(IxDyn(&perm)));
                assert_eq!(permute(&a, &perm).unwrap(), want, "{shape:?} {perm:?}");
            }
        }
    }

    #[test]
    fn reshape_target_rules() {
        assert_eq!(
            reshape_target(&[2, 3, 4], &[0, -1], false).unwrap(),
            vec![2, 12]
        );
        assert!(reshape_target(&[2, 3], &[-1, -1], false).is_err());
        assert!(reshape_target(&[2, 3], &[5, -1], false).is_err());
    }
}

#[cfg(test)]
mod robustness {
    use crate::registry::{OpCtx, Registry};
    use hb_ir::{Attr, Node};
    use hb_tensor::Tensor;

    const OPS: &[&str] = &[
        "Identity",
        "Dropout",
        "Shape",
        "Size",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
        "Concat",
        "Split",
        "Slice",
        "Expand",
        "Tile",
        "DepthToSpace",
        "SpaceToDepth",
        "Gather",
        "GatherElements",
        "GatherND",
        "ScatterND",
        "ScatterElements",
        "Scatter",
        "NonZero",
        "Compress",
        "ReverseSequence",
        "Constant",
        "ConstantOfShape",
        "Range",
        "EyeLike",
        "OneHot",
        "Trilu",
        "Pad",
        "CenterCropPad",
        "Resize",
        "Upsample",
        "GridSample",
        "Unique",
    ];

    fn pool() -> Vec<Tensor> {
        vec![
            Tensor::scalar(1.5f32),
            Tensor::from_f32(&[0], vec![]).unwrap(),
            Tensor::from_f32(&[2, 3], vec![1.0; 6]).unwrap(),
            Tensor::from_vec(&[1], vec![5i64]).unwrap(),
            Tensor::from_vec(&[2], vec![-1i64, i64::MAX]).unwrap(),
            Tensor::from_vec(&[4], vec![i64::MIN, 0, 2, -7]).unwrap(),
            Tensor::from_vec(&[2], vec![true, false]).unwrap(),
            Tensor::from_vec(&[1], vec!["a".to_string()]).unwrap(),
            Tensor::from_f32(&[1, 1, 2, 2], vec![0.5, f32::NAN, 2.0, -1.0]).unwrap(),
        ]
    }

    fn nodes(op: &str) -> Vec<Node> {
        let mut out = Vec::new();
        for attrs in [
            vec![],
            vec![("axis", Attr::Int(7))],
            vec![("axis", Attr::Int(-1)), ("blocksize", Attr::Int(2))],
            vec![
                ("mode", Attr::String("linear".into())),
                ("axes", Attr::Ints(vec![9])),
            ],
        ] {
            let mut n = Node::new("n", op, &["a", "b", "c"], &["y", "z"]);
            for (k, v) in attrs {
                n.set_attr(k, v);
            }
            out.push(n);
        }
        out
    }

    /// Every data-movement kernel returns Ok or Err on garbage input, never panics.
    #[test]
    fn garbage_inputs_never_panic() {
        let reg = Registry::standard();
        let pool = pool();
        let mut ok = 0usize;
        for op in OPS {
            let k = reg.get("", op).unwrap();
            for node in nodes(op) {
                for opset in [9, 13, 18] {
                    let ctx = OpCtx { node: &node, opset };
                    let n = pool.len();
                    for i in 0..n * n * n + n * n + n {
                        let picks: Vec<Option<&Tensor>> = if i < n {
                            vec![Some(&pool[i])]
                        } else if i < n + n * n {
                            let j = i - n;
                            vec![Some(&pool[j / n]), Some(&pool[j % n])]
                        } else {
                            let j = i - n - n * n;
                            vec![
                                Some(&pool[j / (n * n)]),
                                Some(&pool[j / n % n]),
                                Some(&pool[j % n]),
                            ]
                        };
                        let r = std::panic::catch_unwind(|| k(&ctx, &picks));
                        ok += usize::from(matches!(r, Ok(Ok(_))));
                        assert!(
                            r.is_ok(),
                            "{op} (opset {opset}) panicked on {:?}",
                            picks
                                .iter()
                                .map(|t| t.map(|t| t.describe()))
                                .collect::<Vec<_>>()
                        );
                    }
                }
            }
        }
        assert!(ok > 1000, "only {ok} calls succeeded");
    }
}
