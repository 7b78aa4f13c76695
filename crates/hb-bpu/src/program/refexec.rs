//! Runs one [`PreparedOp`] with the plain reference kernels on host
//! tensors. The reference interpreter runs every op through here; the
//! optimised runtime uses it for ops without a fast path, so those are
//! bit-exact by construction.

use super::prepared::{Clamp, Kernel, Post, PreparedOp};
use crate::fixed_point::Requant;
use crate::qint::QInt;
use crate::reference::{
    activation, conv, eltwise, layernorm, matmul, pad, pool, quant, resize, softmax,
};
use crate::tensor::{split_at_axis, QTensor, TensorRef};
use hb_tensor::tensor::Element;
use hb_tensor::{with_tensor, DType, Tensor};
use ndarray::{ArrayD, IxDyn};

/// Result of one op: error text (the caller names the op).
pub type OpRes<T> = std::result::Result<T, String>;

/// A borrowed view of an integer array.
pub fn tref<T: QInt>(a: &ArrayD<T>) -> OpRes<TensorRef<'_, T>> {
    let s = a.as_slice().ok_or("tensor is not contiguous")?;
    TensorRef::new(s, a.shape()).map_err(|e| e.to_string())
}

/// Wraps a kernel result into a tensor.
pub fn wrap<T: Element>(q: QTensor<T>) -> OpRes<Tensor> {
    ArrayD::from_shape_vec(IxDyn(&q.shape), q.data)
        .map(T::wrap)
        .map_err(|e| e.to_string())
}

/// Dispatches on an integer input tensor: binds `$v: TensorRef<$T>`.
#[macro_export]
#[doc(hidden)]
macro_rules! with_int {
    ($t:expr, |$v:ident : $T:ident| $body:expr) => {
        match $t {
            hb_tensor::Tensor::I8(a) => {
                #[allow(dead_code)]
                type $T = i8;
                let $v = $crate::program::refexec::tref::<i8>(a)?;
                $body
            }
            hb_tensor::Tensor::I16(a) => {
                #[allow(dead_code)]
                type $T = i16;
                let $v = $crate::program::refexec::tref::<i16>(a)?;
                $body
            }
            hb_tensor::Tensor::I32(a) => {
                #[allow(dead_code)]
                type $T = i32;
                let $v = $crate::program::refexec::tref::<i32>(a)?;
                $body
            }
            other => return Err(format!("expected an integer tensor, got {}", other.dtype())),
        }
    };
}

/// Dispatches on an output integer type: `$body` is a
/// `Result<QTensor<$O>, BpuError>`; gives `OpRes<Tensor>`.
#[macro_export]
#[doc(hidden)]
macro_rules! with_out {
    ($dt:expr, $O:ident => $body:expr) => {
        match $dt {
            hb_tensor::DType::I8 => {
                type $O = i8;
                $crate::program::refexec::wrap::<i8>($body.map_err(|e| e.to_string())?)
            }
            hb_tensor::DType::I16 => {
                type $O = i16;
                $crate::program::refexec::wrap::<i16>($body.map_err(|e| e.to_string())?)
            }
            hb_tensor::DType::I32 => {
                type $O = i32;
                $crate::program::refexec::wrap::<i32>($body.map_err(|e| e.to_string())?)
            }
            other => Err(format!("integer op with a {other} output")),
        }
    };
}

fn need<'a>(inputs: &[Option<&'a Tensor>], k: usize) -> OpRes<&'a Tensor> {
    inputs
        .get(k)
        .copied()
        .flatten()
        .ok_or_else(|| format!("input {k} is missing"))
}

fn i64_slice(t: &Tensor) -> OpRes<&[i64]> {
    match t {
        Tensor::I64(a) => a.as_slice().ok_or_else(|| "bias not contiguous".into()),
        other => Err(format!("bias must be i64, got {}", other.dtype())),
    }
}

fn ok<T>(v: T) -> crate::Result<T> {
    Ok(v)
}

/// Per-channel requantisation with an optional clamp:
/// `y = clamp(sat_O(R_c(q)), lo, hi)` (the reference of Rescale ops).
pub fn rescale<I: QInt, O: QInt>(
    x: TensorRef<'_, I>,
    requant: &[Requant],
    axis: usize,
    clamp: Clamp,
) -> crate::Result<QTensor<O>> {
    let (outer, c, inner) = if x.rank() == 0 {
        (1, 1, 1)
    } else {
        split_at_axis(x.shape(), axis)?
    };
    if requant.len() != 1 && requant.len() != c {
        return Err(crate::shape_err!(
            "{} requantisations for {c} channels",
            requant.len()
        ));
    }
    let (lo, hi) = clamp.unwrap_or((O::MIN, O::MAX));
    let mut out = Vec::with_capacity(x.data().len());
    for o in 0..outer {
        for k in 0..c {
            let r = requant[if requant.len() == 1 { 0 } else { k }];
            let base = (o * c + k) * inner;
            out.extend(
                x.data()[base..base + inner]
                    .iter()
                    .map(|&q| O::sat_i64(r.apply::<O>(q.to_i64()).to_i64().clamp(lo, hi.max(lo)))),
            );
        }
    }
    QTensor::new(x.shape().to_vec(), out)
}

fn clamp_t<O: QInt>(mut q: QTensor<O>, clamp: Clamp) -> crate::Result<QTensor<O>> {
    if let Some((lo, hi)) = clamp {
        for v in &mut q.data {
            *v = O::sat_i64(v.to_i64().clamp(lo, hi.max(lo)));
        }
    }
    Ok(q)
}

/// Runs `op` (not a CPU op) on `inputs`; `outs` gives each output's dtype
/// and shape as the program declares them.
pub fn run_op(
    op: &PreparedOp,
    inputs: &[Option<&Tensor>],
    outs: &[(DType, Vec<usize>)],
) -> OpRes<Vec<Tensor>> {
    let (odt, oshape) = outs.first().cloned().ok_or("op has no output")?;
    let x = || need(inputs, 0);
    let y = match &op.kernel {
        Kernel::Cpu => return Err("CPU op given to the integer executor".into()),
        Kernel::Quantize(p) => {
            let xs = match x()? {
                Tensor::F32(a) => a.as_slice().ok_or("input not contiguous")?,
                other => return Err(format!("Quantize of a {} tensor", other.dtype())),
            };
            with_out!(odt, O => quant::quantize::<O>(xs, p).and_then(|v| QTensor::new(oshape.clone(), v)))?
        }
        Kernel::Dequantize {
            scales,
            hp_scales,
            axis,
        } => {
            let t = x()?;
            let v: Vec<f32> = if !hp_scales.is_empty() {
                match t {
                    Tensor::I32(a) => quant::dequantize_high_precision(tref(a)?, *axis, hp_scales)
                        .map_err(|e| e.to_string())?,
                    other => return Err(format!("high-precision dequantize of {}", other.dtype())),
                }
            } else {
                with_int!(t, |v: T| {
                    if scales.len() == 1 {
                        quant::dequantize(v.data(), scales[0])
                    } else {
                        quant::dequantize_per_channel(v, *axis, scales)
                            .map_err(|e| e.to_string())?
                    }
                })
            };
            Tensor::F32(ArrayD::from_shape_vec(IxDyn(&oshape), v).map_err(|e| e.to_string())?)
        }
        Kernel::Rescale {
            requant,
            axis,
            clamp,
        } => with_int!(
            x()?,
            |v: I| with_out!(odt, O => rescale::<I, O>(v, requant, *axis, *clamp))
        )?,
        Kernel::Conv {
            params,
            transpose,
            requant,
            clamp,
        } => {
            let bias = inputs
                .get(2)
                .copied()
                .flatten()
                .map(i64_slice)
                .transpose()?;
            with_int!(x()?, |xv: X| with_int!(
                need(inputs, 1)?,
                |wv: W| with_out!(odt, O => {
                    let r = if *transpose {
                        conv::conv_transpose::<X, W, O>(xv, wv, bias, requant, params)
                    } else {
                        conv::conv::<X, W, O>(xv, wv, bias, requant, params)
                    };
                    r.and_then(|q| clamp_t(q, *clamp))
                })
            ))?
        }
        Kernel::MatMul { requant } => {
            let bias = inputs
                .get(2)
                .copied()
                .flatten()
                .map(i64_slice)
                .transpose()?;
            with_int!(x()?, |a: A| with_int!(
                need(inputs, 1)?,
                |b: B| with_out!(odt, O =>
                matmul::matmul::<A, B, O>(a, b, bias, requant))
            ))?
        }
        Kernel::Gemm { params, requant } => {
            let c = match inputs.get(2).copied().flatten() {
                Some(Tensor::I64(a)) => Some(tref64(a)?),
                Some(other) => return Err(format!("Gemm C must be i64, got {}", other.dtype())),
                None => None,
            };
            with_int!(x()?, |a: A| with_int!(
                need(inputs, 1)?,
                |b: B| with_out!(odt, O =>
                matmul::gemm::<A, B, O>(a, b, c, requant, *params))
            ))?
        }
        Kernel::Add(r) => with_int!(x()?, |a: A| with_int!(
            need(inputs, 1)?,
            |b: B| with_out!(odt, O =>
            eltwise::add::<A, B, O>(a, b, r))
        ))?,
        Kernel::Mul(r) => with_int!(x()?, |a: A| with_int!(
            need(inputs, 1)?,
            |b: B| with_out!(odt, O =>
            eltwise::mul::<A, B, O>(a, b, r))
        ))?,
        Kernel::Div(plan) => with_int!(x()?, |a: A| with_int!(
            need(inputs, 1)?,
            |b: B| with_out!(odt, O =>
            activation::div::<A, B, O>(a, b, plan))
        ))?,
        Kernel::Concat { axis, requant } => {
            let ts: Vec<&Tensor> = (0..inputs.len())
                .map(|k| need(inputs, k))
                .collect::<OpRes<_>>()?;
            let dt0 = ts[0].dtype();
            if ts.iter().any(|t| t.dtype() != dt0) {
                return Err("concat inputs have different integer types".into());
            }
            macro_rules! cat {
                ($T:ty, $var:ident) => {{
                    let views = ts
                        .iter()
                        .map(|t| match t {
                            Tensor::$var(a) => tref::<$T>(a),
                            _ => Err("concat input type".to_string()),
                        })
                        .collect::<OpRes<Vec<_>>>()?;
                    with_out!(odt, O => eltwise::concat::<$T, O>(&views, requant, *axis))?
                }};
            }
            match dt0 {
                DType::I8 => cat!(i8, I8),
                DType::I16 => cat!(i16, I16),
                DType::I32 => cat!(i32, I32),
                other => return Err(format!("concat of {other}")),
            }
        }
        Kernel::Where { ra, rb } => {
            let cond = match need(inputs, 0)? {
                Tensor::Bool(a) => {
                    let s = a.as_slice().ok_or("cond not contiguous")?;
                    TensorRef::new(s, a.shape()).map_err(|e| e.to_string())?
                }
                other => {
                    return Err(format!(
                        "Where condition must be bool, got {}",
                        other.dtype()
                    ))
                }
            };
            with_int!(need(inputs, 1)?, |a: A| with_int!(
                need(inputs, 2)?,
                |b: B| with_out!(odt, O =>
                eltwise::where_select::<A, B, O>(cond, a, b, ra, rb))
            ))?
        }
        Kernel::Pad { pads, mode, value } => with_int!(x()?, |v: T| wrap::<T>(
            pad::pad::<T>(v, pads, *mode, T::sat_i64(*value)).map_err(|e| e.to_string())?
        ))?,
        Kernel::LeakyRelu { pos, neg } => with_int!(x()?, |v: I| with_out!(odt, O =>
            ok(activation::leaky_relu::<I, O>(v, pos, neg))))?,
        Kernel::PRelu {
            pos,
            neg,
            neg_shape,
        } => {
            let nt = TensorRef::new(&neg[..], &neg_shape[..]).map_err(|e| e.to_string())?;
            with_int!(
                x()?,
                |v: I| with_out!(odt, O => activation::prelu::<I, O>(v, pos, nt))
            )?
        }
        Kernel::Lut(table) => with_int!(x()?, |v: I| with_out!(odt, O =>
            ok(activation::lut::<I, O>(v, table))))?,
        Kernel::Softmax { axis, plan, mask } => with_int!(x()?, |v: I| with_out!(odt, O =>
            softmax::softmax::<I, O>(v, *axis, plan, *mask)))?,
        Kernel::LayerNorm { axis, plan } => with_int!(x()?, |v: I| with_out!(odt, O =>
            layernorm::layer_norm::<I, O>(v, *axis, plan)))?,
        Kernel::MaxPool { params, requant } => with_int!(x()?, |v: I| with_out!(odt, O =>
            pool::max_pool::<I, O>(v, params, requant)))?,
        Kernel::AvgPool { params, s_x, s_y } => with_int!(x()?, |v: I| with_out!(odt, O =>
            pool::average_pool::<I, O>(v, params, *s_x, *s_y)))?,
        Kernel::GlobalAvgPool { s_x, s_y } => with_int!(x()?, |v: I| with_out!(odt, O =>
            pool::global_average_pool::<I, O>(v, *s_x, *s_y)))?,
        Kernel::GlobalMaxPool(r) => with_int!(x()?, |v: I| with_out!(odt, O =>
            pool::global_max_pool::<I, O>(v, r)))?,
        Kernel::ReduceMean {
            axes,
            keepdims,
            s_x,
            s_y,
        } => with_int!(x()?, |v: I| with_out!(odt, O =>
            pool::reduce_mean::<I, O>(v, axes, *keepdims, *s_x, *s_y)))?,
        Kernel::ReduceMax {
            axes,
            keepdims,
            requant,
        } => with_int!(x()?, |v: I| with_out!(odt, O =>
            pool::reduce_max::<I, O>(v, axes, *keepdims, requant)))?,
        Kernel::Resize { params, s_x, s_y } => with_int!(x()?, |v: I| with_out!(odt, O =>
            resize::resize::<I, O>(v, params, *s_x, *s_y)))?,
        Kernel::GridSample {
            params,
            s_x,
            s_g,
            s_y,
        } => with_int!(x()?, |xv: X| with_int!(
            need(inputs, 1)?,
            |g: G| with_out!(odt, O =>
            resize::grid_sample::<X, G, O>(xv, g, *s_x, *s_g, *s_y, *params))
        ))?,
        Kernel::Reshape => x()?.reshape(&oshape).map_err(|e| e.to_string())?,
        Kernel::Transpose(perm) => transpose(x()?, perm)?,
        Kernel::Take { runs: false } => take(x()?, need(inputs, 1)?, &oshape)?,
        Kernel::Take { runs: true } => take(x()?, &run_indices(need(inputs, 1)?)?, &oshape)?,
    };
    let mut y = y;
    if y.shape() != &oshape[..] {
        return Err(format!(
            "computed shape {:?}, the program declares {oshape:?}",
            y.shape()
        ));
    }
    if y.dtype() != odt {
        return Err(format!(
            "computed {} values, the program declares {odt}",
            y.dtype()
        ));
    }
    if !op.post.is_empty() {
        y = apply_post(&op.post, y, inputs, op)?;
    }
    Ok(vec![y])
}

fn tref64(a: &ArrayD<i64>) -> OpRes<TensorRef<'_, i64>> {
    let s = a.as_slice().ok_or("tensor is not contiguous")?;
    TensorRef::new(s, a.shape()).map_err(|e| e.to_string())
}

/// Applies the fused steps of an .hbm op to its output. The other operand
/// of a fused Add is the op's last input.
pub fn apply_post(
    post: &[Post],
    mut y: Tensor,
    inputs: &[Option<&Tensor>],
    op: &PreparedOp,
) -> OpRes<Tensor> {
    for p in post {
        let dt = y.dtype();
        y = match p {
            Post::Rescale {
                requant,
                axis,
                clamp,
            } => with_int!(
                &y,
                |v: I| with_out!(dt, O => rescale::<I, O>(v, requant, *axis, *clamp))
            )?,
            Post::Add {
                other,
                main_is_b,
                r,
            } => {
                let pos = op
                    .inputs
                    .iter()
                    .rposition(|i| *i == Some(*other))
                    .ok_or("fused add operand is not an input of the op")?;
                let o = need(inputs, pos)?;
                if o.shape() != y.shape() {
                    return Err("fused add operands differ in shape".into());
                }
                with_int!(&y, |a: A| with_int!(o, |b: B| with_out!(dt, O => {
                    if *main_is_b {
                        eltwise::add::<B, A, O>(b, a, r)
                    } else {
                        eltwise::add::<A, B, O>(a, b, r)
                    }
                })))?
            }
        };
    }
    Ok(y)
}

/// Transposes any tensor.
pub fn transpose(t: &Tensor, perm: &[usize]) -> OpRes<Tensor> {
    if perm.len() != t.rank() {
        return Err(format!("permutation {perm:?} for rank {}", t.rank()));
    }
    Ok(with_tensor!(t, a => Element::wrap(
        a.view().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned()
    )))
}

/// The element indices of `[R, 2]` (start, length) runs
/// ([`crate::program::pb::TakeOp::runs`]): `start, start + 1, …` per run.
pub fn run_indices(runs: &Tensor) -> OpRes<Tensor> {
    let Tensor::I64(a) = runs else {
        return Err(format!("take runs of type {}", runs.dtype()));
    };
    if a.ndim() != 2 || a.shape()[1] != 2 {
        return Err(format!(
            "take runs of shape {:?}, expected [R, 2]",
            a.shape()
        ));
    }
    let mut ix: Vec<i64> = Vec::new();
    for r in a.outer_iter() {
        let (start, len) = (r[0], r[1]);
        if start < 0 || len < 0 {
            return Err(format!("take run ({start}, {len}) is negative"));
        }
        ix.extend(start..start + len);
    }
    let n = ix.len();
    Tensor::from_vec(&[n], ix).map_err(|e| e.to_string())
}

/// `y[i] = x.flat[idx[i]]`, shaped `shape`.
// One expansion per element type, strings included.
#[allow(clippy::clone_on_copy)]
pub fn take(t: &Tensor, idx: &Tensor, shape: &[usize]) -> OpRes<Tensor> {
    let ix: Vec<usize> = match idx {
        Tensor::I64(a) => a.iter().map(|&v| v as usize).collect(),
        Tensor::I32(a) => a.iter().map(|&v| v as usize).collect(),
        Tensor::U32(a) => a.iter().map(|&v| v as usize).collect(),
        other => return Err(format!("take indices of type {}", other.dtype())),
    };
    let n = t.len();
    if ix.iter().any(|&i| i >= n) {
        return Err("take index out of range".into());
    }
    if ix.len() != shape.iter().product::<usize>() {
        return Err("take indices do not match the output shape".into());
    }
    Ok(with_tensor!(t, a => {
        let flat: Vec<_> = a.iter().cloned().collect();
        let v: Vec<_> = ix.iter().map(|&i| flat[i].clone()).collect();
        Element::wrap(ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| e.to_string())?)
    }))
}
