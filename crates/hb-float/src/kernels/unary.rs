//! Elementwise unary kernels: math functions, activations, Clip, logic and
//! classification (IsNaN/IsInf). Float ops run natively on f32 and f64 and
//! through f32 for f16/bf16; integer types where ONNX allows them.

use crate::error::OpResult;
use crate::kernels::erf::{erf_f32, erf_f64};
use crate::kernels::ew::{map_array, Num};
use crate::kernels::util::{input, one, opt_input};
use crate::registry::{OpCtx, Registry};
use crate::{invalid, unsupported};
use hb_tensor::tensor::{Element, Scalar};
use hb_tensor::{map_numeric, Tensor};

/// Float helpers available on both f32 and f64 in the [`float_map!`] bodies.
pub trait FloatX: Copy {
    /// The error function.
    fn erf_x(self) -> Self;
}

impl FloatX for f32 {
    #[inline]
    fn erf_x(self) -> f32 {
        erf_f32(self)
    }
}

impl FloatX for f64 {
    #[inline]
    fn erf_x(self) -> f64 {
        erf_f64(self)
    }
}

/// Maps a float tensor with `|x| body`, where the body is written once and
/// compiled for f32 and f64 (f16/bf16 go through f32). The listed parameters
/// are f64 variables converted to the element type inside the body.
macro_rules! float_map {
    ($t:expr, $op:expr, [$($p:ident),*], |$x:ident| $body:expr) => {{
        #[allow(unused_variables)]
        let r: OpResult<Tensor> = match $t {
            Tensor::F32(a) => {
                $(let $p: f32 = Scalar::from_f64($p);)*
                Ok(Tensor::F32(map_array(a, |$x: f32| $body)))
            }
            Tensor::F64(a) => {
                $(let $p: f64 = $p;)*
                Ok(Tensor::F64(map_array(a, |$x: f64| $body)))
            }
            Tensor::F16(a) => {
                $(let $p: f32 = Scalar::from_f64($p);)*
                Ok(Tensor::F16(map_array(a, |v: half::f16| {
                    let $x = v.to_f32();
                    half::f16::from_f32($body)
                })))
            }
            Tensor::BF16(a) => {
                $(let $p: f32 = Scalar::from_f64($p);)*
                Ok(Tensor::BF16(map_array(a, |v: half::bf16| {
                    let $x = v.to_f32();
                    half::bf16::from_f32($body)
                })))
            }
            other => Err(unsupported!("{} does not support {}", $op, other.dtype())),
        };
        r
    }};
}

/// Float attribute as f64.
fn fattr(ctx: &OpCtx, name: &str, default: f32) -> OpResult<f64> {
    Ok(f64::from(ctx.node.float_or(name, default)?))
}

/// Defines a parameterless float kernel.
/// Like `float_kernel!`, with an f32 fast path: the vectorisable
/// [`fastmath`](super::fastmath) function over the data in place
/// (AVX2 copy at run time, both cores on large tensors).
macro_rules! fast_kernel {
    ($name:ident, $op:literal, $fast:ident, |$x:ident| $body:expr) => {
        fn $name(_: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
            let t = input(inputs, 0)?;
            if let Some(y) = map_f32_in_place(t, $fast) {
                return one(y);
            }
            one(float_map!(t, $op, [], |$x| $body)?)
        }
    };
}

/// Applies `f` to a copy of an f32 tensor's data, in parallel chunks when
/// large; `None` for other dtypes.
fn map_f32_in_place(t: &Tensor, f: fn(&mut [f32])) -> Option<Tensor> {
    use rayon::prelude::*;
    let Tensor::F32(a) = t else {
        return None;
    };
    let mut v: Vec<f32> = match a.as_slice() {
        Some(s) => s.to_vec(),
        None => a.iter().copied().collect(),
    };
    if v.len() >= crate::kernels::ew::PAR_MIN && crate::threads::kernel_threads() > 1 {
        v.par_chunks_mut(1 << 14).for_each(f);
    } else {
        f(&mut v);
    }
    ndarray::ArrayD::from_shape_vec(a.raw_dim(), v)
        .ok()
        .map(Tensor::F32)
}

crate::multiversion! {
/// `erf` of every element, in place.
fn erf_in_place(xs: &mut [f32]) {
    xs.iter_mut().for_each(|v| *v = super::fastmath::erf_f32(*v))
}
}

crate::multiversion! {
/// `tanh` of every element, in place.
fn tanh_in_place(xs: &mut [f32]) {
    xs.iter_mut().for_each(|v| *v = super::fastmath::tanh_f32(*v))
}
}

crate::multiversion! {
/// The logistic function of every element, in place.
fn sigmoid_in_place(xs: &mut [f32]) {
    xs.iter_mut().for_each(|v| *v = super::fastmath::sigmoid_f32(*v))
}
}

crate::multiversion! {
/// Exact Gelu `x·(1 + erf(x/√2))/2` of every element, in place.
fn gelu_erf_in_place(xs: &mut [f32]) {
    xs.iter_mut().for_each(|v| {
        let x = *v;
        *v = 0.5 * x * (1.0 + super::fastmath::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
    })
}
}

macro_rules! float_kernel {
    ($name:ident, $op:literal, |$x:ident| $body:expr) => {
        fn $name(_: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
            one(float_map!(input(inputs, 0)?, $op, [], |$x| $body)?)
        }
    };
}

float_kernel!(exp, "Exp", |x| x.exp());
float_kernel!(log, "Log", |x| x.ln());
float_kernel!(sqrt, "Sqrt", |x| x.sqrt());
float_kernel!(reciprocal, "Reciprocal", |x| 1.0 / x);
float_kernel!(sin, "Sin", |x| x.sin());
float_kernel!(cos, "Cos", |x| x.cos());
float_kernel!(tan, "Tan", |x| x.tan());
float_kernel!(asin, "Asin", |x| x.asin());
float_kernel!(acos, "Acos", |x| x.acos());
float_kernel!(atan, "Atan", |x| x.atan());
float_kernel!(sinh, "Sinh", |x| x.sinh());
float_kernel!(cosh, "Cosh", |x| x.cosh());
float_kernel!(asinh, "Asinh", |x| x.asinh());
float_kernel!(acosh, "Acosh", |x| x.acosh());
float_kernel!(atanh, "Atanh", |x| x.atanh());
fast_kernel!(tanh, "Tanh", tanh_in_place, |x| x.tanh());
fast_kernel!(sigmoid, "Sigmoid", sigmoid_in_place, |x| 1.0
    / (1.0 + (-x).exp()));
fast_kernel!(erf, "Erf", erf_in_place, |x| x.erf_x());
float_kernel!(floor, "Floor", |x| x.floor());
float_kernel!(ceil, "Ceil", |x| x.ceil());
float_kernel!(round, "Round", |x| x.round_ties_even());
float_kernel!(softplus, "Softplus", |x| if x > 0.0 {
    x + (-x).exp().ln_1p()
} else {
    x.exp().ln_1p()
});
float_kernel!(softsign, "Softsign", |x| x / (1.0 + x.abs()));
float_kernel!(hard_swish, "HardSwish", |x| x
    * (x / 6.0 + 0.5).clamp(0.0, 1.0));
float_kernel!(mish, "Mish", |x| x
    * (if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    })
    .tanh());

fn elu(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let alpha = fattr(ctx, "alpha", 1.0)?;
    one(float_map!(
        input(inputs, 0)?,
        "Elu",
        [alpha],
        |x| if x < 0.0 { alpha * (x.exp() - 1.0) } else { x }
    )?)
}

fn selu(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let alpha = fattr(ctx, "alpha", 1.673_263_2)?;
    let gamma = fattr(ctx, "gamma", 1.050_701)?;
    one(float_map!(
        input(inputs, 0)?,
        "Selu",
        [alpha, gamma],
        |x| if x > 0.0 {
            gamma * x
        } else {
            gamma * alpha * (x.exp() - 1.0)
        }
    )?)
}

fn celu(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let alpha = fattr(ctx, "alpha", 1.0)?;
    one(float_map!(input(inputs, 0)?, "Celu", [alpha], |x| x
        .max(0.0)
        + (alpha * ((x / alpha).exp() - 1.0)).min(0.0))?)
}

fn leaky_relu(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let alpha = fattr(ctx, "alpha", 0.01)?;
    one(float_map!(
        input(inputs, 0)?,
        "LeakyRelu",
        [alpha],
        |x| if x < 0.0 { alpha * x } else { x }
    )?)
}

fn thresholded_relu(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let alpha = fattr(ctx, "alpha", 1.0)?;
    one(float_map!(
        input(inputs, 0)?,
        "ThresholdedRelu",
        [alpha],
        |x| if x > alpha { x } else { 0.0 }
    )?)
}

fn hard_sigmoid(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let alpha = fattr(ctx, "alpha", 0.2)?;
    let beta = fattr(ctx, "beta", 0.5)?;
    one(float_map!(
        input(inputs, 0)?,
        "HardSigmoid",
        [alpha, beta],
        |x| (alpha * x + beta).clamp(0.0, 1.0)
    )?)
}

fn swish(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let alpha = fattr(ctx, "alpha", 1.0)?;
    one(float_map!(input(inputs, 0)?, "Swish", [alpha], |x| x
        / (1.0 + (-alpha * x).exp()))?)
}

fn gelu(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    match ctx.node.string_or("approximate", "none")?.as_str() {
        "none" => {
            if let Some(y) = map_f32_in_place(x, gelu_erf_in_place) {
                return one(y);
            }
            let r = std::f64::consts::FRAC_1_SQRT_2;
            one(float_map!(x, "Gelu", [r], |x| 0.5
                * x
                * (1.0 + (x * r).erf_x()))?)
        }
        "tanh" => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let k = 0.044715;
            one(float_map!(x, "Gelu", [c, k], |x| 0.5
                * x
                * (1.0 + (c * (x + k * x * x * x)).tanh()))?)
        }
        other => Err(invalid!("Gelu: unknown approximate '{other}'")),
    }
}

/// Maps a numeric tensor of any type with `f` (float types via [`float_map!`]
/// are faster; this is the generic path for ops defined on integers too).
fn num_map(t: &Tensor, op: &str, f: impl NumFn) -> OpResult<Tensor> {
    map_numeric!(t, a, T => map_array(a, |x: T| f.call(x)))
        .ok_or_else(|| unsupported!("{op} does not support {}", t.dtype()))
}

/// A function generic over the element type (closures cannot be).
trait NumFn: Copy + Send + Sync {
    fn call<T: Num>(&self, x: T) -> T;
}

macro_rules! num_fn {
    ($name:ident, |$x:ident| $body:expr) => {
        #[derive(Clone, Copy)]
        struct $name;
        impl NumFn for $name {
            #[inline]
            fn call<T: Num>(&self, $x: T) -> T {
                $body
            }
        }
    };
}

num_fn!(AbsFn, |x| x.nabs());
num_fn!(NegFn, |x| x.nneg());
num_fn!(SignFn, |x| x.nsign());
num_fn!(ReluFn, |x| if x < T::zero() { T::zero() } else { x });

fn abs(_: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    one(num_map(input(inputs, 0)?, "Abs", AbsFn)?)
}

fn neg(_: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    one(num_map(input(inputs, 0)?, "Neg", NegFn)?)
}

fn sign(_: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    one(num_map(input(inputs, 0)?, "Sign", SignFn)?)
}

fn relu(_: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    match x {
        Tensor::F32(a) => one(map_array(a, |v: f32| v.max(0.0))),
        other => one(num_map(other, "Relu", ReluFn)?),
    }
}

/// Shrink: `x − bias` above `lambd`, `x + bias` below `−lambd`, else 0 (any numeric type).
fn shrink(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let bias = fattr(ctx, "bias", 0.0)?;
    let lambd = fattr(ctx, "lambd", 0.5)?;
    let x = input(inputs, 0)?;
    let r = map_numeric!(x, a, T => map_array(a, |v: T| {
        let f = v.to_f64();
        T::from_f64(if f < -lambd { f + bias } else if f > lambd { f - bias } else { 0.0 })
    }));
    one(r.ok_or_else(|| unsupported!("Shrink does not support {}", x.dtype()))?)
}

/// The first element of an optional scalar bound input of type `T`.
fn bound<T: Element + Copy>(t: Option<&Tensor>, name: &str) -> OpResult<Option<T>> {
    match t {
        None => Ok(None),
        Some(t) => {
            let a = T::view(t)
                .ok_or_else(|| invalid!("Clip: {name} has type {}, unlike the input", t.dtype()))?;
            match a.len() {
                0 => Ok(None),
                1 => Ok(a.iter().next().copied()),
                n => Err(invalid!("Clip: {name} must be a scalar, has {n} elements")),
            }
        }
    }
}

/// Clamps with NaN passing through; `lo > hi` gives `hi` (numpy `clip`).
fn clip_array<T: Num>(a: &ndarray::ArrayD<T>, lo: Option<T>, hi: Option<T>) -> ndarray::ArrayD<T> {
    let lo = lo.unwrap_or_else(T::lowest);
    let hi = hi.unwrap_or_else(T::highest);
    map_array(a, |v: T| {
        let v = if v < lo { lo } else { v };
        if v > hi {
            hi
        } else {
            v
        }
    })
}

fn clip(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    if ctx.opset < 11 {
        let lo = f64::from(ctx.node.float_or("min", f32::NEG_INFINITY)?);
        let hi = f64::from(ctx.node.float_or("max", f32::INFINITY)?);
        return one(float_map!(x, "Clip", [lo, hi], |v| {
            let v = if v < lo { lo } else { v };
            if v > hi {
                hi
            } else {
                v
            }
        })?);
    }
    let (lo_t, hi_t) = (opt_input(inputs, 1), opt_input(inputs, 2));
    let r =
        map_numeric!(x, a, T => clip_array(a, bound::<T>(lo_t, "min")?, bound::<T>(hi_t, "max")?));
    one(r.ok_or_else(|| unsupported!("Clip does not support {}", x.dtype()))?)
}

fn not(_: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    match input(inputs, 0)? {
        Tensor::Bool(a) => one(map_array(a, |v: bool| !v)),
        t => Err(unsupported!("Not needs bool, got {}", t.dtype())),
    }
}

fn bitwise_not(_: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let t = input(inputs, 0)?;
    let r = match t {
        Tensor::I8(a) => Tensor::I8(map_array(a, |v: i8| !v)),
        Tensor::I16(a) => Tensor::I16(map_array(a, |v: i16| !v)),
        Tensor::I32(a) => Tensor::I32(map_array(a, |v: i32| !v)),
        Tensor::I64(a) => Tensor::I64(map_array(a, |v: i64| !v)),
        Tensor::U8(a) => Tensor::U8(map_array(a, |v: u8| !v)),
        Tensor::U16(a) => Tensor::U16(map_array(a, |v: u16| !v)),
        Tensor::U32(a) => Tensor::U32(map_array(a, |v: u32| !v)),
        Tensor::U64(a) => Tensor::U64(map_array(a, |v: u64| !v)),
        Tensor::Bool(a) => Tensor::Bool(map_array(a, |v: bool| !v)),
        other => {
            return Err(unsupported!(
                "BitwiseNot does not support {}",
                other.dtype()
            ))
        }
    };
    one(r)
}

/// Applies a float predicate, giving a bool tensor.
fn float_pred(t: &Tensor, op: &str, f: impl Fn(f64) -> bool + Sync + Send) -> OpResult<Tensor> {
    Ok(match t {
        Tensor::F32(a) => Tensor::Bool(map_array(a, |v: f32| f(f64::from(v)))),
        Tensor::F64(a) => Tensor::Bool(map_array(a, &f)),
        Tensor::F16(a) => Tensor::Bool(map_array(a, |v: half::f16| f(v.to_f64()))),
        Tensor::BF16(a) => Tensor::Bool(map_array(a, |v: half::bf16| f(v.to_f64()))),
        other => return Err(unsupported!("{op} does not support {}", other.dtype())),
    })
}

fn is_nan(_: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    one(float_pred(input(inputs, 0)?, "IsNaN", f64::is_nan)?)
}

fn is_inf(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let neg = ctx.node.int_or("detect_negative", 1)? != 0;
    let pos = ctx.node.int_or("detect_positive", 1)? != 0;
    one(float_pred(input(inputs, 0)?, "IsInf", move |v| {
        (v == f64::INFINITY && pos) || (v == f64::NEG_INFINITY && neg)
    })?)
}

/// Registers the unary kernels.
pub fn register(r: &mut Registry) {
    let ops: &[(&str, crate::registry::KernelFn)] = &[
        ("Abs", abs),
        ("Neg", neg),
        ("Sign", sign),
        ("Relu", relu),
        ("Exp", exp),
        ("Log", log),
        ("Sqrt", sqrt),
        ("Reciprocal", reciprocal),
        ("Sin", sin),
        ("Cos", cos),
        ("Tan", tan),
        ("Asin", asin),
        ("Acos", acos),
        ("Atan", atan),
        ("Sinh", sinh),
        ("Cosh", cosh),
        ("Asinh", asinh),
        ("Acosh", acosh),
        ("Atanh", atanh),
        ("Tanh", tanh),
        ("Sigmoid", sigmoid),
        ("Erf", erf),
        ("Floor", floor),
        ("Ceil", ceil),
        ("Round", round),
        ("Softplus", softplus),
        ("Softsign", softsign),
        ("HardSwish", hard_swish),
        ("Mish", mish),
        ("Elu", elu),
        ("Selu", selu),
        ("Celu", celu),
        ("LeakyRelu", leaky_relu),
        ("ThresholdedRelu", thresholded_relu),
        ("HardSigmoid", hard_sigmoid),
        ("Swish", swish),
        ("Gelu", gelu),
        ("Shrink", shrink),
        ("Clip", clip),
        ("Not", not),
        ("BitwiseNot", bitwise_not),
        ("IsNaN", is_nan),
        ("IsInf", is_inf),
    ];
    for &(name, f) in ops {
        r.register(name, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hb_ir::{Attr, Node};

    fn run(
        op: &str,
        f: crate::registry::KernelFn,
        attrs: &[(&str, Attr)],
        x: Tensor,
    ) -> OpResult<Tensor> {
        let mut node = Node::new("n", op, &["x"], &["y"]);
        for (k, v) in attrs {
            node.set_attr(k, v.clone());
        }
        let ctx = OpCtx {
            node: &node,
            opset: 17,
        };
        Ok(f(&ctx, &[Some(&x)])?.remove(0))
    }

    fn vals(t: &Tensor) -> Vec<f64> {
        t.to_f64_vec().unwrap()
    }

    #[test]
    fn erf_and_gelu_values() {
        let x = Tensor::from_f32(&[3], vec![0.0, 0.5, -2.0]).unwrap();
        let e = vals(&run("Erf", erf, &[], x.clone()).unwrap());
        assert!((e[1] - 0.520_499_877_8).abs() < 1e-7);
        assert!((e[2] + 0.995_322_265).abs() < 1e-7);
        let g = vals(&run("Gelu", gelu, &[], x).unwrap());
        // 0.5 * 0.5 * (1 + erf(0.5/√2)) = 0.345731
        assert!((g[1] - 0.345_731_1).abs() < 1e-6);
    }

    #[test]
    fn round_half_even_and_int_abs() {
        let x = Tensor::from_f32(&[4], vec![0.5, 1.5, 2.5, -2.5]).unwrap();
        assert_eq!(
            vals(&run("Round", round, &[], x).unwrap()),
            vec![0.0, 2.0, 2.0, -2.0]
        );
        let i = Tensor::from_vec(&[2], vec![-3i8, i8::MIN]).unwrap();
        assert_eq!(
            run("Abs", abs, &[], i).unwrap().to_i64_vec().unwrap(),
            vec![3, -128]
        );
    }

    #[test]
    fn bad_types_are_errors() {
        let s = Tensor::from_vec(&[1], vec!["a".to_string()]).unwrap();
        assert!(run("Exp", exp, &[], s.clone()).is_err());
        assert!(run("Abs", abs, &[], s).is_err());
        let g = Tensor::from_f32(&[1], vec![1.0]).unwrap();
        assert!(run(
            "Gelu",
            gelu,
            &[("approximate", Attr::String("x".into()))],
            g
        )
        .is_err());
    }
}
