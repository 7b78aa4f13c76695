//! Reductions (ReduceSum … ReduceLogSumExp), ArgMax/ArgMin, CumSum/CumProd,
//! TopK and Hardmax. Every op views its input as `[outer, n, inner]` around
//! the axis it works on, so the inner loops run over contiguous memory.

use crate::error::OpResult;
use crate::kernels::ew::{map_array, Num, PAR_MIN};
use crate::kernels::simd;
use crate::kernels::util::{input, norm_axis, one, opt_input};
use crate::registry::{KernelFn, OpCtx, Registry};
use crate::{invalid, unsupported, with_num};
use hb_tensor::tensor::Element;
use hb_tensor::{DType, Tensor};
use ndarray::{ArrayD, IxDyn};
use num_traits::Float;
use rayon::prelude::*;

/// Sizes before, at and after `axis`.
fn split3(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let n = shape.get(axis).copied().unwrap_or(1);
    let inner = shape[(axis + 1).min(shape.len())..].iter().product();
    (outer, n, inner)
}

/// Contiguous data of an array (copied when not in standard layout).
fn data<T: Clone>(a: &ArrayD<T>) -> Vec<T> {
    match a.as_slice() {
        Some(s) => s.to_vec(),
        None => a.iter().cloned().collect(),
    }
}

/// Reduces the middle dim of `[outer, n, inner]` data with `f`, starting from `init`.
fn reduce_middle<T: Copy + Send + Sync>(
    d: &[T],
    (outer, n, inner): (usize, usize, usize),
    init: T,
    f: &(impl Fn(T, T) -> T + Sync),
) -> Vec<T> {
    let mut out = vec![init; outer * inner];
    let one_row = |o: usize, acc: &mut [T]| {
        for r in 0..n {
            let start = (o * n + r) * inner;
            if let Some(row) = d.get(start..start + inner) {
                for (a, &x) in acc.iter_mut().zip(row) {
                    *a = f(*a, x);
                }
            }
        }
    };
    if inner == 0 {
        return out;
    }
    if d.len() >= PAR_MIN && outer > 1 && crate::threads::kernel_threads() > 1 {
        out.par_chunks_mut(inner)
            .enumerate()
            .for_each(|(o, acc)| one_row(o, acc));
    } else {
        for (o, acc) in out.chunks_mut(inner).enumerate() {
            one_row(o, acc);
        }
    }
    out
}

/// Reduces `a` over `axes` (sorted, unique) keeping them as size-1 dims.
fn reduce_axes<T: Copy + Send + Sync>(
    a: &ArrayD<T>,
    axes: &[usize],
    init: T,
    f: impl Fn(T, T) -> T + Sync,
) -> OpResult<ArrayD<T>> {
    let mut shape = a.shape().to_vec();
    let mut d = data(a);
    for &ax in axes.iter().rev() {
        d = reduce_middle(&d, split3(&shape, ax), init, &f);
        shape[ax] = 1;
    }
    ArrayD::from_shape_vec(IxDyn(&shape), d).map_err(|e| invalid!("{e}"))
}

/// The reduce ops.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Red {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

impl Red {
    /// Ops needing float math (run through f64 for integer inputs).
    fn needs_float(self) -> bool {
        matches!(self, Red::L2 | Red::LogSum | Red::LogSumExp)
    }
}

/// Reduction on a numeric type with integer-safe ops.
fn reduce_num<T: Num>(a: &ArrayD<T>, axes: &[usize], op: Red) -> OpResult<ArrayD<T>> {
    let count: usize = axes
        .iter()
        .map(|&k| a.shape().get(k).copied().unwrap_or(1))
        .product();
    match op {
        Red::Sum => reduce_axes(a, axes, T::zero(), T::nadd),
        Red::Mean => {
            let s = reduce_axes(a, axes, T::zero(), T::nadd)?;
            let c = T::from_f64(count as f64);
            Ok(if T::IS_FLOAT || count > 0 {
                map_array(&s, |v: T| v.ndiv(c))
            } else {
                s
            })
        }
        Red::Max => reduce_axes(a, axes, T::lowest(), T::nmax),
        Red::Min => reduce_axes(a, axes, T::highest(), T::nmin),
        Red::Prod => reduce_axes(a, axes, T::one(), T::nmul),
        Red::L1 => reduce_axes(&map_array(a, T::nabs), axes, T::zero(), T::nadd),
        Red::SumSquare => reduce_axes(&map_array(a, |v: T| v.nmul(v)), axes, T::zero(), T::nadd),
        _ => Err(unsupported!("{op:?} on {}", T::DTYPE)),
    }
}

/// Reduction on f32/f64, including the ops needing sqrt/exp/ln.
fn reduce_float<T: Num + Float>(a: &ArrayD<T>, axes: &[usize], op: Red) -> OpResult<ArrayD<T>> {
    let sum = |x: &ArrayD<T>| reduce_axes(x, axes, <T as Num>::zero(), T::nadd);
    match op {
        Red::L2 => Ok(map_array(&sum(&map_array(a, |v: T| v * v))?, T::sqrt)),
        Red::LogSum => Ok(map_array(&sum(a)?, T::ln)),
        Red::LogSumExp => {
            let m = reduce_axes(a, axes, T::lowest(), T::nmax)?;
            let m = map_array(
                &m,
                |v: T| if v.is_finite() { v } else { <T as Num>::zero() },
            );
            let mb = m
                .broadcast(a.raw_dim())
                .ok_or_else(|| invalid!("internal: broadcast of the max"))?;
            let e = ndarray::Zip::from(a)
                .and(&mb)
                .map_collect(|&x, &k| (x - k).exp());
            let s = sum(&e)?;
            Ok(ndarray::Zip::from(&s)
                .and(&m)
                .map_collect(|&v, &k| v.ln() + k))
        }
        _ => reduce_num(a, axes, op),
    }
}

/// Fast path for f32 reductions over trailing axes (`[.., k..rank]`, the
/// LayerNorm / pooling-over-features case): each output is one contiguous
/// row, reduced with the vectorisable helpers of [`simd`]. `None` when the
/// case does not apply.
fn reduce_f32_trailing(a: &ArrayD<f32>, axes: &[usize], op: Red) -> Option<OpResult<ArrayD<f32>>> {
    let rank = a.ndim();
    let first = *axes.first()?;
    let trailing =
        axes.iter().enumerate().all(|(i, &x)| x == first + i) && first + axes.len() == rank;
    let n: usize = a.shape()[first..].iter().product();
    if !trailing || n == 0 || !matches!(op, Red::Sum | Red::Mean | Red::Max | Red::Min) {
        return None;
    }
    let d = a.as_slice()?;
    let f: fn(&[f32]) -> f32 = match op {
        Red::Sum => simd::sum,
        Red::Mean => |r| simd::sum(r) / r.len() as f32,
        Red::Max => |r| {
            if simd::any_nan(r) {
                f32::NAN
            } else {
                simd::max(r)
            }
        },
        _ => |r| {
            if simd::any_nan(r) {
                f32::NAN
            } else {
                simd::min(r)
            }
        },
    };
    let out: Vec<f32> = if d.len() >= PAR_MIN && crate::threads::kernel_threads() > 1 {
        d.par_chunks(n).map(f).collect()
    } else {
        d.chunks(n).map(f).collect()
    };
    let mut shape = a.shape().to_vec();
    shape[first..].iter_mut().for_each(|x| *x = 1);
    Some(ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| invalid!("{e}")))
}

/// Reduction on any numeric tensor (16-bit floats via f32, integer
/// float-math ops via f64).
fn reduce_tensor(t: &Tensor, axes: &[usize], op: Red) -> OpResult<Tensor> {
    Ok(match t {
        Tensor::F32(a) => match reduce_f32_trailing(a, axes, op) {
            Some(r) => Tensor::F32(r?),
            None => Tensor::F32(reduce_float(a, axes, op)?),
        },
        Tensor::F64(a) => Tensor::F64(reduce_float(a, axes, op)?),
        Tensor::F16(_) | Tensor::BF16(_) => {
            reduce_tensor(&t.cast(DType::F32)?, axes, op)?.cast(t.dtype())?
        }
        Tensor::Bool(_) if matches!(op, Red::Max | Red::Min) => {
            reduce_tensor(&t.cast(DType::U8)?, axes, op)?.cast(DType::Bool)?
        }
        _ if op.needs_float() => reduce_tensor(&t.cast(DType::F64)?, axes, op)?.cast(t.dtype())?,
        _ => with_num!(t, a, T => T::wrap(reduce_num(a, axes, op)?))
            .ok_or_else(|| unsupported!("{op:?} on {}", t.dtype()))?,
    })
}

/// The axes to reduce: `None` for a no-op (empty axes with
/// `noop_with_empty_axes`), else sorted unique axes (all when empty).
fn reduce_axes_of(
    ctx: &OpCtx,
    inputs: &[Option<&Tensor>],
    rank: usize,
) -> OpResult<Option<Vec<usize>>> {
    let from_input = ctx.opset >= 18 || (ctx.node.op_type == "ReduceSum" && ctx.opset >= 13);
    let given = if from_input {
        match opt_input(inputs, 1) {
            Some(t) => t.to_i64_vec()?,
            None => Vec::new(),
        }
    } else {
        ctx.node.get_ints("axes")?.unwrap_or_default()
    };
    if given.is_empty() {
        if ctx.node.int_or("noop_with_empty_axes", 0)? != 0 {
            return Ok(None);
        }
        return Ok(Some((0..rank).collect()));
    }
    let mut axes = given
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect::<OpResult<Vec<_>>>()?;
    axes.retain(|&a| a < rank);
    axes.sort_unstable();
    axes.dedup();
    Ok(Some(axes))
}

fn reduce_kernel(ctx: &OpCtx, inputs: &[Option<&Tensor>], op: Red) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let Some(axes) = reduce_axes_of(ctx, inputs, x.rank())? else {
        return one(x.clone());
    };
    let r = reduce_tensor(x, &axes, op)?;
    if ctx.node.int_or("keepdims", 1)? != 0 {
        return one(r);
    }
    let shape: Vec<usize> = x
        .shape()
        .iter()
        .enumerate()
        .filter(|(k, _)| !axes.contains(k))
        .map(|(_, &d)| d)
        .collect();
    one(r.into_reshaped(&shape)?)
}

/// Index of the extreme element of each `[outer, n, inner]` lane.
fn arg_extreme<T: PartialOrd + Copy>(
    d: &[T],
    (outer, n, inner): (usize, usize, usize),
    max: bool,
    last: bool,
) -> Vec<i64> {
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let at = |r: usize| d.get((o * n + r) * inner + i).copied();
            let mut best = 0usize;
            for r in 1..n {
                let (Some(v), Some(b)) = (at(r), at(best)) else {
                    continue;
                };
                let better = if max { v > b } else { v < b };
                if better || (last && v == b) {
                    best = r;
                }
            }
            out.push(best as i64);
        }
    }
    out
}

fn arg_kernel(ctx: &OpCtx, inputs: &[Option<&Tensor>], max: bool) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let axis = norm_axis(ctx.node.int_or("axis", 0)?, x.rank())?;
    let keep = ctx.node.int_or("keepdims", 1)? != 0;
    let last = ctx.node.int_or("select_last_index", 0)? != 0;
    let dims = split3(x.shape(), axis);
    if dims.1 == 0 {
        return Err(invalid!("ArgMax/ArgMin over an empty axis"));
    }
    let idx = with_num!(x, a, T => arg_extreme(&data(a), dims, max, last))
        .ok_or_else(|| unsupported!("ArgMax/ArgMin on {}", x.dtype()))?;
    let mut shape = x.shape().to_vec();
    if axis < shape.len() {
        if keep {
            shape[axis] = 1;
        } else {
            shape.remove(axis);
        }
    }
    one(Tensor::from_vec(&shape, idx)?)
}

/// Cumulative `f` along the middle dim of `[outer, n, inner]` data, in place.
fn cumulate<T: Copy>(
    d: &mut [T],
    (outer, n, inner): (usize, usize, usize),
    init: T,
    exclusive: bool,
    reverse: bool,
    f: impl Fn(T, T) -> T,
) {
    for o in 0..outer {
        for i in 0..inner {
            let mut acc = init;
            for k in 0..n {
                let r = if reverse { n - 1 - k } else { k };
                if let Some(v) = d.get_mut((o * n + r) * inner + i) {
                    let x = *v;
                    let next = f(acc, x);
                    *v = if exclusive { acc } else { next };
                    acc = next;
                }
            }
        }
    }
}

fn cum_typed<T: Num>(
    a: &ArrayD<T>,
    dims: (usize, usize, usize),
    flags: (bool, bool),
    prod: bool,
) -> OpResult<ArrayD<T>> {
    let mut d = data(a);
    if prod {
        cumulate(&mut d, dims, T::one(), flags.0, flags.1, T::nmul);
    } else {
        cumulate(&mut d, dims, T::zero(), flags.0, flags.1, T::nadd);
    }
    ArrayD::from_shape_vec(a.raw_dim(), d).map_err(|e| invalid!("{e}"))
}

fn cum_kernel(ctx: &OpCtx, inputs: &[Option<&Tensor>], prod: bool) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let axis_v = input(inputs, 1)?.to_i64_vec()?;
    let [axis] = axis_v[..] else {
        return Err(invalid!("CumSum/CumProd: axis must hold one value"));
    };
    let axis = norm_axis(axis, x.rank())?;
    let flags = (
        ctx.node.int_or("exclusive", 0)? != 0,
        ctx.node.int_or("reverse", 0)? != 0,
    );
    let dims = split3(x.shape(), axis);
    let r = with_num!(x, a, T => T::wrap(cum_typed(a, dims, flags, prod)?))
        .ok_or_else(|| unsupported!("CumSum/CumProd on {}", x.dtype()))?;
    one(r)
}

/// The top `k` (value, index) pairs of every lane.
fn top_k<T: PartialOrd + Copy>(
    d: &[T],
    (outer, n, inner): (usize, usize, usize),
    k: usize,
    largest: bool,
) -> (Vec<T>, Vec<i64>) {
    let (mut vals, mut idx) = (vec![None; outer * k * inner], vec![0i64; outer * k * inner]);
    let mut lane: Vec<(T, usize)> = Vec::with_capacity(n);
    for o in 0..outer {
        for i in 0..inner {
            lane.clear();
            lane.extend((0..n).filter_map(|r| d.get((o * n + r) * inner + i).map(|&v| (v, r))));
            lane.sort_by(|a, b| {
                let c = a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal);
                let c = if largest { c.reverse() } else { c };
                c.then(a.1.cmp(&b.1))
            });
            for (j, &(v, r)) in lane.iter().take(k).enumerate() {
                let at = (o * k + j) * inner + i;
                if let (Some(dv), Some(di)) = (vals.get_mut(at), idx.get_mut(at)) {
                    *dv = Some(v);
                    *di = r as i64;
                }
            }
        }
    }
    (vals.into_iter().flatten().collect(), idx)
}

fn topk_typed<T: Element + PartialOrd + Copy>(
    a: &ArrayD<T>,
    axis: usize,
    k: usize,
    largest: bool,
) -> OpResult<Vec<Tensor>> {
    let dims = split3(a.shape(), axis);
    let (v, i) = top_k(&data(a), dims, k, largest);
    let mut shape = a.shape().to_vec();
    if let Some(d) = shape.get_mut(axis) {
        *d = k;
    }
    Ok(vec![
        Tensor::from_vec(&shape, v)?,
        Tensor::from_vec(&shape, i)?,
    ])
}

fn topk(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let k = if ctx.opset >= 10 {
        let v = input(inputs, 1)?.to_i64_vec()?;
        match v[..] {
            [k] => k,
            _ => return Err(invalid!("TopK: K must hold one value")),
        }
    } else {
        ctx.node.int_req("k")?
    };
    let axis = norm_axis(ctx.node.int_or("axis", -1)?, x.rank())?;
    let n = x.shape().get(axis).copied().unwrap_or(1);
    let k = usize::try_from(k)
        .ok()
        .filter(|&k| k <= n)
        .ok_or_else(|| invalid!("TopK: k={k} is out of range for axis size {n}"))?;
    let largest = ctx.node.int_or("largest", 1)? != 0;
    with_num!(x, a, T => topk_typed(a, axis, k, largest))
        .ok_or_else(|| unsupported!("TopK on {}", x.dtype()))?
}

/// One-hot of the first maximum of every `[outer, n, inner]` lane.
fn hardmax_typed<T: Num>(a: &ArrayD<T>, dims: (usize, usize, usize)) -> OpResult<ArrayD<T>> {
    let d = data(a);
    let best = arg_extreme(&d, dims, true, false);
    let (_, n, inner) = dims;
    let mut out = vec![T::zero(); d.len()];
    let inner = inner.max(1);
    for (lane, &b) in best.iter().enumerate() {
        let (o, i) = (lane / inner, lane % inner);
        let at = usize::try_from(b).map(|b| (o * n + b) * inner + i);
        if let Some(v) = at.ok().and_then(|k| out.get_mut(k)) {
            *v = T::one();
        }
    }
    ArrayD::from_shape_vec(a.raw_dim(), out).map_err(|e| invalid!("{e}"))
}

fn hardmax(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let legacy = ctx.opset < 13;
    let axis = norm_axis(
        ctx.node.int_or("axis", if legacy { 1 } else { -1 })?,
        x.rank(),
    )?;
    let mut dims = split3(x.shape(), axis);
    if legacy {
        dims = (dims.0, dims.1 * dims.2, 1);
    }
    if dims.1 == 0 {
        return one(x.clone());
    }
    let r = with_num!(x, a, T => T::wrap(hardmax_typed(a, dims)?))
        .ok_or_else(|| unsupported!("Hardmax on {}", x.dtype()))?;
    one(r)
}

/// Registers the reduction kernels.
pub fn register(r: &mut Registry) {
    let ops: &[(&str, KernelFn)] = &[
        ("ReduceSum", |c, i| reduce_kernel(c, i, Red::Sum)),
        ("ReduceMean", |c, i| reduce_kernel(c, i, Red::Mean)),
        ("ReduceMax", |c, i| reduce_kernel(c, i, Red::Max)),
        ("ReduceMin", |c, i| reduce_kernel(c, i, Red::Min)),
        ("ReduceProd", |c, i| reduce_kernel(c, i, Red::Prod)),
        ("ReduceL1", |c, i| reduce_kernel(c, i, Red::L1)),
        ("ReduceL2", |c, i| reduce_kernel(c, i, Red::L2)),
        ("ReduceLogSum", |c, i| reduce_kernel(c, i, Red::LogSum)),
        ("ReduceLogSumExp", |c, i| {
            reduce_kernel(c, i, Red::LogSumExp)
        }),
        ("ReduceSumSquare", |c, i| {
            reduce_kernel(c, i, Red::SumSquare)
        }),
        ("ArgMax", |c, i| arg_kernel(c, i, true)),
        ("ArgMin", |c, i| arg_kernel(c, i, false)),
        ("CumSum", |c, i| cum_kernel(c, i, false)),
        ("CumProd", |c, i| cum_kernel(c, i, true)),
        ("TopK", topk),
        ("Hardmax", hardmax),
    ];
    for &(name, f) in ops {
        r.register(name, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hb_ir::{Attr, Node};

    fn run(op: &str, attrs: &[(&str, Attr)], opset: i64, ins: &[&Tensor]) -> OpResult<Vec<Tensor>> {
        let mut node = Node::new("n", op, &[], &["y"]);
        for (k, v) in attrs {
            node.set_attr(k, v.clone());
        }
        let ctx = OpCtx { node: &node, opset };
        let f = Registry::standard().get("", op).unwrap();
        let ins: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
        f(&ctx, &ins)
    }

    #[test]
    fn reduce_values_and_empty_set() {
        let x = Tensor::from_f32(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let y = run(
            "ReduceSum",
            &[("keepdims", Attr::Int(0))],
            13,
            &[&x, &Tensor::from_vec(&[1], vec![1i64]).unwrap()],
        )
        .unwrap();
        assert_eq!(y[0].to_f64_vec().unwrap(), vec![6.0, 15.0]);
        let y = run("ReduceL2", &[("axes", Attr::Ints(vec![0]))], 13, &[&x]).unwrap();
        assert_eq!(y[0].shape(), &[1, 3]);
        assert!((y[0].to_f64_vec().unwrap()[0] - 17f64.sqrt()).abs() < 1e-6);
        let e = Tensor::from_f32(&[2, 0], vec![]).unwrap();
        let y = run("ReduceMax", &[("axes", Attr::Ints(vec![1]))], 13, &[&e]).unwrap();
        assert_eq!(y[0].to_f64_vec().unwrap(), vec![f64::NEG_INFINITY; 2]);
    }

    #[test]
    fn trailing_f32_fast_path_matches_f64_path() {
        let shape = [3, 5, 37];
        let n: usize = shape.iter().product();
        let mut v = crate::kernels::testutil::rand_vals(n, 9);
        v[40] = f32::NAN;
        let x = Tensor::from_f32(&shape, v).unwrap();
        let x64 = x.cast(DType::F64).unwrap();
        for op in ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"] {
            for axes in [vec![2], vec![1, 2], vec![-1, -2, 0]] {
                let at = [("axes", Attr::Ints(axes.clone()))];
                let got = run(op, &at, 13, &[&x]).unwrap()[0].to_f64_vec().unwrap();
                let want = run(op, &at, 13, &[&x64]).unwrap()[0].to_f64_vec().unwrap();
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{op} {axes:?}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn topk_ties_and_errors() {
        let x = Tensor::from_f32(&[4], vec![1.0, 3.0, 3.0, 2.0]).unwrap();
        let k = Tensor::from_vec(&[1], vec![2i64]).unwrap();
        let y = run("TopK", &[], 11, &[&x, &k]).unwrap();
        assert_eq!(y[0].to_f64_vec().unwrap(), vec![3.0, 3.0]);
        assert_eq!(y[1].to_i64_vec().unwrap(), vec![1, 2]);
        let big = Tensor::from_vec(&[1], vec![9i64]).unwrap();
        assert!(run("TopK", &[], 11, &[&x, &big]).is_err());
        assert!(run("ArgMax", &[("axis", Attr::Int(3))], 13, &[&x]).is_err());
    }
}
