//! QuantizeLinear, DequantizeLinear (per-tensor, per-axis and blocked) and
//! DynamicQuantizeLinear. Rounding is half to even and results saturate to
//! the integer type's range, as ONNX specifies.

use crate::error::OpResult;
use crate::kernels::util::{input, norm_axis, opt_input};
use crate::registry::{OpCtx, Registry};
use crate::{invalid, unsupported};
use hb_tensor::{DType, Tensor};
use ndarray::{ArrayD, Axis, IxDyn, Zip};

/// The representable range of an integer quantized type.
fn qrange(dt: DType) -> OpResult<(f64, f64)> {
    Ok(match dt {
        DType::I8 => (-128.0, 127.0),
        DType::U8 => (0.0, 255.0),
        DType::I16 => (-32768.0, 32767.0),
        DType::U16 => (0.0, 65535.0),
        DType::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
        other => return Err(unsupported!("quantized type {other}")),
    })
}

/// Reshapes or expands a scale / zero-point array so it broadcasts against
/// `shape`: scalar (per-tensor), 1-D along `axis` (per-axis) or blocked
/// (same rank, `axis` dim holding `ceil(D / block)` blocks).
fn expand_param<T: Clone>(
    p: ArrayD<T>,
    shape: &[usize],
    axis: i64,
    block: i64,
) -> OpResult<ArrayD<T>> {
    if p.len() == 1 && p.ndim() <= 1 {
        return p
            .into_shape_with_order(IxDyn(&[]))
            .map_err(|e| invalid!("{e}"));
    }
    let ax = norm_axis(axis, shape.len())?;
    let d = shape.get(ax).copied().unwrap_or(1);
    if block > 0 {
        let b = usize::try_from(block).map_err(|_| invalid!("bad block_size {block}"))?;
        let ok = p.ndim() == shape.len()
            && p.shape().get(ax) == Some(&d.div_ceil(b))
            && p.shape()
                .iter()
                .zip(shape)
                .enumerate()
                .all(|(k, (a, s))| k == ax || a == s);
        if !ok {
            return Err(invalid!(
                "blocked scale {:?} does not fit input {shape:?} (axis {ax}, block {b})",
                p.shape()
            ));
        }
        let idx: Vec<usize> = (0..d).map(|j| j / b).collect();
        return Ok(p.select(Axis(ax), &idx));
    }
    if p.ndim() != 1 || p.len() != d {
        return Err(invalid!(
            "per-axis scale {:?} does not match axis {ax} of input {shape:?}",
            p.shape()
        ));
    }
    let mut s = vec![1; shape.len()];
    s[ax] = d;
    p.into_shape_with_order(IxDyn(&s))
        .map_err(|e| invalid!("{e}"))
}

/// Scale, zero point and quantized type of a Q/DQ node.
struct Params {
    scale: ArrayD<f32>,
    zp: ArrayD<f64>,
}

fn params(ctx: &OpCtx, inputs: &[Option<&Tensor>], shape: &[usize]) -> OpResult<Params> {
    let axis = ctx.node.int_or("axis", 1)?;
    let block = ctx.node.int_or("block_size", 0)?;
    let scale = input(inputs, 1)?.to_f32()?;
    let zp = match opt_input(inputs, 2) {
        Some(z) => {
            qrange(z.dtype())?;
            z.cast(DType::F64)?.into_array::<f64>()?
        }
        None => ArrayD::from_elem(IxDyn(&[]), 0.0),
    };
    Ok(Params {
        scale: expand_param(scale, shape, axis, block)?,
        zp: expand_param(zp, shape, axis, block)?,
    })
}

/// The quantized type: the zero point's, else `output_dtype`, else uint8.
fn quant_type(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<DType> {
    if let Some(z) = opt_input(inputs, 2) {
        return Ok(z.dtype());
    }
    match ctx.node.int_or("output_dtype", 0)? {
        0 => Ok(DType::U8),
        c => i32::try_from(c)
            .ok()
            .and_then(DType::from_onnx_code)
            .ok_or_else(|| unsupported!("QuantizeLinear to {}", DType::onnx_code_name(c as i32))),
    }
}

/// `clamp(round_half_even(x / s) + z)` with broadcasting.
fn quantize_values(x: &ArrayD<f32>, p: &Params, (lo, hi): (f64, f64)) -> OpResult<ArrayD<f64>> {
    let s = p
        .scale
        .broadcast(x.raw_dim())
        .ok_or_else(|| invalid!("scale does not broadcast to {:?}", x.shape()))?;
    let z =
        p.zp.broadcast(x.raw_dim())
            .ok_or_else(|| invalid!("zero point does not broadcast to {:?}", x.shape()))?;
    Ok(Zip::from(x)
        .and(&s)
        .and(&z)
        .map_collect(|&v, &s, &z| (f64::from((v / s).round_ties_even()) + z).clamp(lo, hi)))
}

fn quantize_linear(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    if !(x.dtype().is_float() || x.dtype() == DType::I32) {
        return Err(unsupported!("QuantizeLinear of {}", x.dtype()));
    }
    let dt = quant_type(ctx, inputs)?;
    let range = qrange(dt)?;
    let p = params(ctx, inputs, x.shape())?;
    let q = quantize_values(&x.to_f32()?, &p, range)?;
    Ok(vec![Tensor::F64(q).cast(dt)?])
}

fn dequantize_linear(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    qrange(x.dtype())?;
    let scale_t = input(inputs, 1)?;
    let out_dt = match ctx.node.int_or("output_dtype", 0)? {
        0 => scale_t.dtype(),
        c => i32::try_from(c)
            .ok()
            .and_then(DType::from_onnx_code)
            .ok_or_else(|| invalid!("DequantizeLinear: bad output_dtype {c}"))?,
    };
    let p = params(ctx, inputs, x.shape())?;
    let xv = x.cast(DType::F64)?.into_array::<f64>()?;
    let s = p
        .scale
        .broadcast(xv.raw_dim())
        .ok_or_else(|| invalid!("scale does not broadcast to {:?}", x.shape()))?;
    let z =
        p.zp.broadcast(xv.raw_dim())
            .ok_or_else(|| invalid!("zero point does not broadcast to {:?}", x.shape()))?;
    let y: ArrayD<f32> = Zip::from(&xv)
        .and(&s)
        .and(&z)
        .map_collect(|&v, &s, &z| ((v - z) as f32) * s);
    Ok(vec![Tensor::F32(y).cast(out_dt)?])
}

fn dynamic_quantize_linear(_: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?
        .as_f32()
        .map_err(|_| unsupported!("DynamicQuantizeLinear needs float32"))?;
    let lo = x.iter().fold(0.0f32, |m, &v| m.min(v));
    let hi = x.iter().fold(0.0f32, |m, &v| m.max(v));
    let scale = (hi - lo) / 255.0;
    let zp = if scale > 0.0 {
        (-lo / scale).round_ties_even().clamp(0.0, 255.0)
    } else {
        0.0
    };
    let p = Params {
        scale: ArrayD::from_elem(IxDyn(&[]), if scale > 0.0 { scale } else { 1.0 }),
        zp: ArrayD::from_elem(IxDyn(&[]), f64::from(zp)),
    };
    let q = quantize_values(x, &p, (0.0, 255.0))?;
    Ok(vec![
        Tensor::F64(q).cast(DType::U8)?,
        Tensor::scalar(scale),
        Tensor::scalar(zp as u8),
    ])
}

/// Registers the quantization kernels.
pub fn register(r: &mut Registry) {
    r.register("QuantizeLinear", quantize_linear);
    r.register("DequantizeLinear", dequantize_linear);
    r.register("DynamicQuantizeLinear", dynamic_quantize_linear);
}

#[cfg(test)]
mod tests {
    use super::*;
    use hb_ir::{Attr, Node};

    fn run(
        f: crate::registry::KernelFn,
        attrs: &[(&str, i64)],
        ins: &[&Tensor],
    ) -> OpResult<Vec<Tensor>> {
        let mut node = Node::new("n", "Q", &[], &["y"]);
        for (k, v) in attrs {
            node.set_attr(k, Attr::Int(*v));
        }
        let ctx = OpCtx {
            node: &node,
            opset: 21,
        };
        let ins: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
        f(&ctx, &ins)
    }

    #[test]
    fn quantize_rounds_half_even_and_saturates() {
        let x = Tensor::from_f32(&[5], vec![0.5, 1.5, 2.5, 300.0, -3.0]).unwrap();
        let s = Tensor::scalar(1.0f32);
        let z = Tensor::scalar(0u8);
        let y = run(quantize_linear, &[], &[&x, &s, &z]).unwrap();
        assert_eq!(y[0].dtype(), DType::U8);
        assert_eq!(y[0].to_i64_vec().unwrap(), vec![0, 2, 2, 255, 0]);
    }

    #[test]
    fn per_axis_dequantize_and_errors() {
        let x = Tensor::from_vec(&[2, 2], vec![10i8, 10, 10, 10]).unwrap();
        let s = Tensor::from_f32(&[2], vec![0.5, 2.0]).unwrap();
        let z = Tensor::from_vec(&[2], vec![0i8, 5]).unwrap();
        let y = run(dequantize_linear, &[("axis", 1)], &[&x, &s, &z]).unwrap();
        assert_eq!(y[0].to_f64_vec().unwrap(), vec![5.0, 10.0, 5.0, 10.0]);
        let bad = Tensor::from_f32(&[3], vec![1.0, 1.0, 1.0]).unwrap();
        assert!(run(dequantize_linear, &[("axis", 1)], &[&x, &bad]).is_err());
        assert!(run(dequantize_linear, &[("axis", 5)], &[&x, &s]).is_err());
    }
}
