//! Ops that generate tensors: Constant, ConstantOfShape, Range, EyeLike,
//! OneHot, Trilu.

use super::remap::{axis_of, check_numel, to_dims, to_standard, MAX_ELEMENTS};
use super::util::{attr_err, input, ints_input, one, opt_input};
use crate::error::OpResult;
use crate::registry::{OpCtx, Registry};
use crate::{invalid, unsupported};
use hb_tensor::tensor::Scalar;
use hb_tensor::{map_numeric, map_tensor, DType, Tensor};
use ndarray::{ArrayD, Axis, IxDyn};

/// Registers the generator ops.
pub fn register(r: &mut Registry) {
    r.register("Constant", constant);
    r.register("ConstantOfShape", constant_of_shape);
    r.register("Range", range);
    r.register("EyeLike", eye_like);
    r.register("OneHot", one_hot);
    r.register("Trilu", trilu);
}

/// The tensor of a Constant node's value attribute.
fn constant(ctx: &OpCtx, _inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    one(hb_ir::passes::constant_value(ctx.node)?)
}

fn constant_of_shape(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let shape = to_dims(&ints_input(inputs, 0)?.ok_or_else(|| invalid!("missing shape"))?)?;
    check_numel(&shape)?;
    let value = match ctx.node.get_tensor("value").map_err(attr_err)? {
        Some(t) => t.clone(),
        None => Tensor::scalar(0f32),
    };
    if value.len() != 1 {
        return Err(invalid!("ConstantOfShape value must have one element"));
    }
    one(map_tensor!(&value, a => {
        let v = a.iter().next().cloned().ok_or_else(|| invalid!("empty value"))?;
        ArrayD::from_elem(IxDyn(&shape), v)
    }))
}

/// `start + i * delta` for `n` steps (ints exact, floats through f64).
fn range_of<T: Scalar>(start: T, delta: T, n: usize) -> ArrayD<T> {
    let v: Vec<T> = if T::IS_FLOAT {
        let (s, d) = (start.to_f64(), delta.to_f64());
        (0..n).map(|i| T::from_f64(s + i as f64 * d)).collect()
    } else {
        let (s, d) = (start.to_i64(), delta.to_i64());
        (0..n)
            .map(|i| T::from_i64(s.wrapping_add((i as i64).wrapping_mul(d))))
            .collect()
    };
    ArrayD::from_shape_vec(IxDyn(&[n]), v).unwrap_or_else(|_| ArrayD::from_elem(IxDyn(&[0]), start))
}

fn range(_ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let start = input(inputs, 0)?;
    let vals: Vec<f64> = (0..3)
        .map(|i| {
            input(inputs, i)?
                .to_f64_vec()?
                .first()
                .copied()
                .ok_or_else(|| invalid!("Range input {i} is empty"))
        })
        .collect::<OpResult<_>>()?;
    let (s, l, d) = (vals[0], vals[1], vals[2]);
    if d == 0.0 {
        return Err(invalid!("Range delta is 0"));
    }
    let n = ((l - s) / d).ceil().max(0.0);
    if !n.is_finite() || n > MAX_ELEMENTS as f64 {
        return Err(invalid!("Range of {n} elements"));
    }
    let n = n as usize;
    let delta = input(inputs, 2)?;
    let out = map_numeric!(start, a, T => {
        let s0 = a.iter().next().copied().ok_or_else(|| invalid!("empty start"))?;
        let d0 = delta
            .as_array::<T>()
            .and_then(|x| x.iter().next().copied())
            .ok_or_else(|| invalid!("Range inputs have different types"))?;
        range_of(s0, d0, n)
    });
    one(out.ok_or_else(|| unsupported!("Range of {}", start.dtype()))?)
}

fn eye_like(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let (r, c) = match x.shape() {
        &[r, c] => (r, c),
        s => return Err(invalid!("EyeLike needs a 2-D input, got {s:?}")),
    };
    let dtype = match ctx.node.get_int("dtype").map_err(attr_err)? {
        Some(code) => DType::from_onnx_code(code as i32)
            .ok_or_else(|| unsupported!("EyeLike dtype {code}"))?,
        None => x.dtype(),
    };
    let k = ctx.node.int_or("k", 0).map_err(attr_err)?;
    check_numel(&[r, c])?;
    let eye = ArrayD::from_shape_fn(IxDyn(&[r, c]), |i| u8::from(i[1] as i64 - i[0] as i64 == k));
    one(Tensor::U8(eye).cast(dtype)?)
}

fn one_hot(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let indices = input(inputs, 0)?.to_f64_vec()?;
    let ishape = input(inputs, 0)?.shape().to_vec();
    let depth = input(inputs, 1)?
        .to_f64_vec()?
        .first()
        .copied()
        .ok_or_else(|| invalid!("OneHot depth is empty"))?;
    if !(1.0..1e9).contains(&depth) {
        return Err(invalid!("OneHot depth {depth}"));
    }
    let depth = depth as usize;
    let values = input(inputs, 2)?;
    if values.len() != 2 {
        return Err(invalid!("OneHot values must have 2 elements"));
    }
    let rank = ishape.len() + 1;
    check_numel(&[indices.len(), depth])?;
    let axis = axis_of(ctx.node.int_or("axis", -1).map_err(attr_err)?, rank)?;
    let outer: usize = ishape[..axis].iter().product();
    let inner: usize = ishape[axis..].iter().product();
    let mut oshape = ishape.clone();
    oshape.insert(axis, depth);
    let v = indices
        .iter()
        .map(|&i| {
            let i = i.trunc() as i64;
            if i < 0 {
                i + depth as i64
            } else {
                i
            }
        })
        .collect::<Vec<_>>();
    let layout = OneHotLayout {
        outer,
        depth,
        inner,
    };
    one(map_tensor!(values, a => one_hot_arr(a, &v, layout, &oshape)?))
}

/// Sizes before the new axis, of it, and after it.
#[derive(Clone, Copy)]
struct OneHotLayout {
    outer: usize,
    depth: usize,
    inner: usize,
}

/// Builds the one-hot array from `[off, on]` values and resolved indices.
fn one_hot_arr<T: Clone>(
    values: &ArrayD<T>,
    idx: &[i64],
    l: OneHotLayout,
    shape: &[usize],
) -> OpResult<ArrayD<T>> {
    let mut it = values.iter();
    let (off, on) = match (it.next(), it.next()) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(invalid!("OneHot values must have 2 elements")),
    };
    let mut out = Vec::with_capacity(l.outer * l.depth * l.inner);
    for o in 0..l.outer {
        for d in 0..l.depth as i64 {
            let row = &idx[o * l.inner..(o + 1) * l.inner];
            out.extend(row.iter().map(|&i| if i == d { on } else { off }).cloned());
        }
    }
    ArrayD::from_shape_vec(IxDyn(shape), out).map_err(|e| invalid!("{e}"))
}

/// Zeroes the lower (`upper`) or upper triangle of the last two axes.
fn trilu_arr<T: Clone + Default>(a: &ArrayD<T>, upper: bool, k: i64) -> OpResult<ArrayD<T>> {
    let r = a.ndim();
    if r < 2 {
        return Err(invalid!("Trilu needs rank >= 2"));
    }
    let rows = a.shape()[r - 2];
    let mut out = to_standard(a.view());
    for (i, mut lane) in out.lanes_mut(Axis(r - 1)).into_iter().enumerate() {
        let row = (i % rows) as i64;
        for (j, v) in lane.iter_mut().enumerate() {
            let d = j as i64 - row;
            if (upper && d < k) || (!upper && d > k) {
                *v = T::default();
            }
        }
    }
    Ok(out)
}

fn trilu(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let upper = ctx.node.int_or("upper", 1).map_err(attr_err)? != 0;
    let k = match opt_input(inputs, 1) {
        Some(t) => t.to_i64_vec()?.first().copied().unwrap_or(0),
        None => 0,
    };
    one(map_tensor!(x, a => trilu_arr(a, upper, k)?))
}
