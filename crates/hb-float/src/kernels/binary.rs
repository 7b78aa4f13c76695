//! Elementwise binary and variadic kernels with numpy broadcasting:
//! arithmetic, Pow, Mod, Max/Min/Sum/Mean, comparisons, logic, bit ops,
//! PRelu and Where.

use crate::error::OpResult;
use crate::kernels::ew::{zip_broadcast, zip_into, Num};
use crate::kernels::util::{broadcast_all, broadcast_view, input, one};
use crate::registry::{KernelFn, OpCtx, Registry};
use crate::{int_pair, invalid, num_pair, same_pair, unsupported, with_num};
use hb_tensor::tensor::{Element, Scalar};
use hb_tensor::{DType, Tensor};
use ndarray::{ArrayD, Zip};

/// The arithmetic binary operations.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    ModFloor,
    ModTrunc,
}

/// Applies `op` with broadcasting; integer division or modulo by zero is an error.
fn arith<T: Num>(a: &ArrayD<T>, b: &ArrayD<T>, op: Arith) -> OpResult<ArrayD<T>> {
    let int_div = matches!(op, Arith::Div | Arith::ModFloor | Arith::ModTrunc);
    if int_div && !T::IS_FLOAT && b.iter().any(|v| v.is_zero()) {
        return Err(invalid!("integer {op:?} by zero"));
    }
    match op {
        Arith::Add => zip_broadcast(a, b, T::nadd),
        Arith::Sub => zip_broadcast(a, b, T::nsub),
        Arith::Mul => zip_broadcast(a, b, T::nmul),
        Arith::Div => zip_broadcast(a, b, T::ndiv),
        Arith::Max => zip_broadcast(a, b, T::nmax),
        Arith::Min => zip_broadcast(a, b, T::nmin),
        Arith::ModFloor => zip_broadcast(a, b, T::rem_floor),
        Arith::ModTrunc => zip_broadcast(a, b, T::rem_trunc),
    }
}

/// `op` on two tensors of the same numeric type.
fn arith_tensors(a: &Tensor, b: &Tensor, op: Arith) -> OpResult<Tensor> {
    num_pair!(a, b, x, y, T => T::wrap(arith::<T>(x, y, op)?)).ok_or_else(|| {
        invalid!(
            "{op:?} needs two numeric inputs of one type, got {} and {}",
            a.dtype(),
            b.dtype()
        )
    })
}

fn binary_arith(inputs: &[Option<&Tensor>], op: Arith) -> OpResult<Vec<Tensor>> {
    one(arith_tensors(input(inputs, 0)?, input(inputs, 1)?, op)?)
}

/// The in-place f32 Add/Sub/Mul/Div: the handed-over input (either one)
/// keeps the result when it has the output's shape; declines otherwise.
fn arith_in_place(
    x: Tensor,
    inputs: &[Option<&Tensor>],
    op: Arith,
) -> OpResult<std::result::Result<Vec<Tensor>, Tensor>> {
    let Tensor::F32(mut a) = x else {
        return Ok(Err(x));
    };
    // The handed-over input's slot is the empty one.
    let (other, owned_first) = match (
        inputs.first().copied().flatten(),
        inputs.get(1).copied().flatten(),
    ) {
        (None, Some(b)) => (b, true),
        (Some(b), None) => (b, false),
        _ => return Ok(Err(Tensor::F32(a))),
    };
    let Tensor::F32(b) = other else {
        return Ok(Err(Tensor::F32(a)));
    };
    let done = match (op, owned_first) {
        (Arith::Add, true) => zip_into(&mut a, b, f32::nadd),
        (Arith::Add, false) => zip_into(&mut a, b, |x, y| y.nadd(x)),
        (Arith::Sub, true) => zip_into(&mut a, b, f32::nsub),
        (Arith::Sub, false) => zip_into(&mut a, b, |x, y| y.nsub(x)),
        (Arith::Mul, true) => zip_into(&mut a, b, f32::nmul),
        (Arith::Mul, false) => zip_into(&mut a, b, |x, y| y.nmul(x)),
        (Arith::Div, true) => zip_into(&mut a, b, f32::ndiv),
        (Arith::Div, false) => zip_into(&mut a, b, |x, y| y.ndiv(x)),
        _ => false,
    };
    Ok(if done {
        Ok(vec![Tensor::F32(a)])
    } else {
        Err(Tensor::F32(a))
    })
}

/// Folds every present input with `op` (Sum, Max, Min, Mean).
fn fold_inputs(inputs: &[Option<&Tensor>], op: Arith) -> OpResult<Tensor> {
    let mut it = inputs.iter().flatten();
    let first = it
        .next()
        .ok_or_else(|| invalid!("{op:?} needs at least one input"))?;
    let mut acc: Tensor = (*first).clone();
    for t in it {
        acc = arith_tensors(&acc, t, op)?;
    }
    Ok(acc)
}

fn mean(_: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let sum = fold_inputs(inputs, Arith::Add)?;
    let n = inputs.iter().flatten().count();
    let count = Tensor::scalar(n as f64).cast(sum.dtype())?;
    one(arith_tensors(&sum, &count, Arith::Div)?)
}

fn modulo(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let fmod = ctx.node.int_or("fmod", 0)?;
    let op = if fmod != 0 {
        Arith::ModTrunc
    } else {
        Arith::ModFloor
    };
    binary_arith(inputs, op)
}

/// Pow with a base of any numeric type and an exponent of any numeric type;
/// the result has the base's type (f32^f32 computed in f32, the rest in f64).
fn pow(_: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
    if let (Tensor::F32(x), Tensor::F32(y)) = (a, b) {
        // Exporters write x² (LayerNorm variance) and √x as Pow with a constant.
        if y.len() == 1 && y.ndim() <= x.ndim() {
            let p = y.iter().next().copied().unwrap_or(1.0);
            let f: Option<fn(f32) -> f32> = match p {
                1.0 => Some(|v| v),
                2.0 => Some(|v| v * v),
                3.0 => Some(|v| v * v * v),
                0.5 => Some(f32::sqrt),
                -1.0 => Some(|v| 1.0 / v),
                _ => None,
            };
            if let Some(f) = f {
                return one(x.mapv(f));
            }
        }
        return one(zip_broadcast(x, y, f32::powf)?);
    }
    if matches!(b.dtype(), DType::String | DType::Bool) {
        return Err(unsupported!("Pow exponent of type {}", b.dtype()));
    }
    let e = b.cast(DType::F64)?.into_array::<f64>()?;
    let r = with_num!(a, x, T => T::wrap(zip_broadcast(x, &e, |v: T, p: f64| {
        T::from_f64(v.to_f64().powf(p))
    })?));
    one(r.ok_or_else(|| unsupported!("Pow base of type {}", a.dtype()))?)
}

/// Comparison operators.
#[derive(Clone, Copy, Debug)]
enum Cmp {
    Eq,
    Gt,
    Lt,
    Ge,
    Le,
}

fn compare<T: PartialOrd + Copy + Send + Sync>(
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    op: Cmp,
) -> OpResult<ArrayD<bool>> {
    match op {
        Cmp::Eq => zip_broadcast(a, b, |x, y| x == y),
        Cmp::Gt => zip_broadcast(a, b, |x, y| x > y),
        Cmp::Lt => zip_broadcast(a, b, |x, y| x < y),
        Cmp::Ge => zip_broadcast(a, b, |x, y| x >= y),
        Cmp::Le => zip_broadcast(a, b, |x, y| x <= y),
    }
}

/// A broadcasting zip for non-`Copy` elements (strings, Where).
fn zip_clone<A: Clone, B: Clone, O>(
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    f: impl Fn(&A, &B) -> O,
) -> OpResult<ArrayD<O>> {
    let shape = broadcast_all(&[a.shape(), b.shape()])?;
    let (va, vb) = (broadcast_view(a, &shape)?, broadcast_view(b, &shape)?);
    Ok(Zip::from(&va).and(&vb).map_collect(f))
}

fn compare_kernel(inputs: &[Option<&Tensor>], op: Cmp) -> OpResult<Vec<Tensor>> {
    let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
    if let (Cmp::Eq, Tensor::Str(x), Tensor::Str(y)) = (op, a, b) {
        return one(zip_clone(x, y, |p, q| p == q)?);
    }
    let r = same_pair!(a, b, x, y, T => compare::<T>(x, y, op)?;
        F32 f32, F64 f64, F16 half::f16, BF16 half::bf16, I8 i8, I16 i16, I32 i32,
        I64 i64, U8 u8, U16 u16, U32 u32, U64 u64, Bool bool);
    let r = r.ok_or_else(|| {
        invalid!(
            "{op:?} needs two inputs of one type, got {} and {}",
            a.dtype(),
            b.dtype()
        )
    })?;
    one(r)
}

/// Bool logic ops.
fn logic(inputs: &[Option<&Tensor>], f: fn(bool, bool) -> bool) -> OpResult<Vec<Tensor>> {
    match (input(inputs, 0)?, input(inputs, 1)?) {
        (Tensor::Bool(a), Tensor::Bool(b)) => one(zip_broadcast(a, b, f)?),
        (a, b) => Err(invalid!(
            "logic ops need bool inputs, got {} and {}",
            a.dtype(),
            b.dtype()
        )),
    }
}

/// Bit operations on integer types.
pub trait Bits: Copy + Send + Sync + Default {
    /// `a & b`.
    fn band(self, o: Self) -> Self;
    /// `a | b`.
    fn bor(self, o: Self) -> Self;
    /// `a ^ b`.
    fn bxor(self, o: Self) -> Self;
    /// `a << b`; 0 when the shift is negative or at least the bit width.
    fn shl(self, o: Self) -> Self;
    /// `a >> b` (arithmetic for signed types); saturates like numpy for large shifts.
    fn shr(self, o: Self) -> Self;
}

macro_rules! bits {
    ($($t:ty),*) => {$(
        impl Bits for $t {
            #[inline]
            fn band(self, o: Self) -> Self { self & o }
            #[inline]
            fn bor(self, o: Self) -> Self { self | o }
            #[inline]
            fn bxor(self, o: Self) -> Self { self ^ o }
            #[inline]
            fn shl(self, o: Self) -> Self {
                u32::try_from(o).ok().and_then(|s| self.checked_shl(s)).unwrap_or(0)
            }
            #[inline]
            fn shr(self, o: Self) -> Self {
                match u32::try_from(o) {
                    Ok(s) if s < <$t>::BITS => self >> s,
                    _ => {
                        #[allow(unused_comparisons)]
                        let neg = self < 0;
                        if neg { self >> (<$t>::BITS - 1) } else { 0 }
                    }
                }
            }
        }
    )*};
}
bits!(i8, i16, i32, i64, u8, u16, u32, u64);

fn bit_kernel(inputs: &[Option<&Tensor>], op: &str, f: BitOp) -> OpResult<Vec<Tensor>> {
    let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
    let r = int_pair!(a, b, x, y, T => T::wrap(bit_apply::<T>(x, y, f)?));
    one(r.ok_or_else(|| {
        invalid!(
            "{op} needs two integer inputs of one type, got {} and {}",
            a.dtype(),
            b.dtype()
        )
    })?)
}

/// The bit operations.
#[derive(Clone, Copy)]
enum BitOp {
    And,
    Or,
    Xor,
    Shl,
    Shr,
}

fn bit_apply<T: Bits>(a: &ArrayD<T>, b: &ArrayD<T>, op: BitOp) -> OpResult<ArrayD<T>> {
    match op {
        BitOp::And => zip_broadcast(a, b, T::band),
        BitOp::Or => zip_broadcast(a, b, T::bor),
        BitOp::Xor => zip_broadcast(a, b, T::bxor),
        BitOp::Shl => zip_broadcast(a, b, T::shl),
        BitOp::Shr => zip_broadcast(a, b, T::shr),
    }
}

fn bit_shift(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let op = match ctx.node.string_or("direction", "")?.as_str() {
        "LEFT" => BitOp::Shl,
        "RIGHT" => BitOp::Shr,
        d => {
            return Err(invalid!(
                "BitShift: direction must be LEFT or RIGHT, got '{d}'"
            ))
        }
    };
    bit_kernel(inputs, "BitShift", op)
}

/// PRelu: `x < 0 ? slope·x : x`, slope broadcast to x's shape.
fn prelu(_: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let (x, s) = (input(inputs, 0)?, input(inputs, 1)?);
    let r = num_pair!(x, s, a, b, T => T::wrap(zip_broadcast(a, b, |v: T, k: T| {
        if v < T::zero() { v.nmul(k) } else { v }
    })?))
    .ok_or_else(|| invalid!("PRelu: input {} and slope {} differ", x.dtype(), s.dtype()))?;
    if r.shape() != x.shape() {
        return Err(invalid!(
            "PRelu: slope {:?} does not broadcast to input {:?}",
            s.shape(),
            x.shape()
        ));
    }
    one(r)
}

fn where_typed<T: Clone>(c: &ArrayD<bool>, x: &ArrayD<T>, y: &ArrayD<T>) -> OpResult<ArrayD<T>> {
    let shape = broadcast_all(&[c.shape(), x.shape(), y.shape()])?;
    let vc = broadcast_view(c, &shape)?;
    let (vx, vy) = (broadcast_view(x, &shape)?, broadcast_view(y, &shape)?);
    Ok(Zip::from(&vc)
        .and(&vx)
        .and(&vy)
        .map_collect(|&k, a, b| if k { a.clone() } else { b.clone() }))
}

/// Where with one single-element branch (the attention-mask case
/// `Where(mask, scores, -inf)`): a two-operand broadcasting zip instead of a
/// three-way ndarray Zip. `None` when neither branch is a single element or
/// the single element would widen the result shape.
fn where_one_scalar<T: Copy + Default + Send + Sync>(
    c: &ArrayD<bool>,
    x: &ArrayD<T>,
    y: &ArrayD<T>,
) -> Option<OpResult<ArrayD<T>>> {
    let full = broadcast_all(&[c.shape(), x.shape(), y.shape()]).ok()?;
    if y.len() == 1 && broadcast_all(&[c.shape(), x.shape()]).ok()? == full {
        let v = *y.iter().next()?;
        return Some(zip_broadcast(c, x, move |k, a| if k { a } else { v }));
    }
    if x.len() == 1 && broadcast_all(&[c.shape(), y.shape()]).ok()? == full {
        let v = *x.iter().next()?;
        return Some(zip_broadcast(c, y, move |k, b| if k { v } else { b }));
    }
    None
}

fn where_op(_: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let Tensor::Bool(c) = input(inputs, 0)? else {
        return Err(invalid!("Where: condition must be bool"));
    };
    let (x, y) = (input(inputs, 1)?, input(inputs, 2)?);
    if let (Tensor::F32(a), Tensor::F32(b)) = (x, y) {
        if let Some(r) = where_one_scalar(c, a, b) {
            return one(r?);
        }
    }
    let r = same_pair!(x, y, a, b, T => T::wrap(where_typed::<T>(c, a, b)?);
        F32 f32, F64 f64, F16 half::f16, BF16 half::bf16, I8 i8, I16 i16, I32 i32,
        I64 i64, U8 u8, U16 u16, U32 u32, U64 u64, Bool bool, Str String);
    one(r.ok_or_else(|| invalid!("Where: X {} and Y {} differ", x.dtype(), y.dtype()))?)
}

/// The in-place f32 Where with one single-element branch: the handed-over
/// full branch keeps the result; declines otherwise.
fn where_in_place(
    _: &OpCtx,
    x: Tensor,
    inputs: &[Option<&Tensor>],
) -> OpResult<std::result::Result<Vec<Tensor>, Tensor>> {
    let Tensor::F32(mut a) = x else {
        return Ok(Err(x));
    };
    let (Some(Tensor::Bool(c)), x_owned) = (
        inputs.first().copied().flatten(),
        inputs.get(1).is_some_and(|i| i.is_none()),
    ) else {
        return Ok(Err(Tensor::F32(a)));
    };
    let other = inputs.get(if x_owned { 2 } else { 1 }).copied().flatten();
    let Some(Tensor::F32(o)) = other else {
        return Ok(Err(Tensor::F32(a)));
    };
    let full = broadcast_all(&[c.shape(), a.shape(), o.shape()]).ok();
    let (Some(&v), true) = (
        o.iter().next().filter(|_| o.len() == 1),
        full.as_deref() == Some(a.shape()),
    ) else {
        return Ok(Err(Tensor::F32(a)));
    };
    // A bit select, not `if`: in place, `if` compiles to a conditional
    // store, which does not vectorise.
    let pick = |keep: bool, x: f32, y: f32| {
        let m = (keep as u32).wrapping_neg();
        f32::from_bits((x.to_bits() & m) | (y.to_bits() & !m))
    };
    let done = if x_owned {
        zip_into(&mut a, c, |x, k| pick(k, x, v))
    } else {
        zip_into(&mut a, c, |y, k| pick(k, v, y))
    };
    Ok(if done {
        Ok(vec![Tensor::F32(a)])
    } else {
        Err(Tensor::F32(a))
    })
}

/// Registers the binary kernels.
pub fn register(r: &mut Registry) {
    let ops: &[(&str, KernelFn)] = &[
        ("Add", |_, i| binary_arith(i, Arith::Add)),
        ("Sub", |_, i| binary_arith(i, Arith::Sub)),
        ("Mul", |_, i| binary_arith(i, Arith::Mul)),
        ("Div", |_, i| binary_arith(i, Arith::Div)),
        ("Mod", modulo),
        ("Pow", pow),
        ("Max", |_, i| one(fold_inputs(i, Arith::Max)?)),
        ("Min", |_, i| one(fold_inputs(i, Arith::Min)?)),
        ("Sum", |_, i| one(fold_inputs(i, Arith::Add)?)),
        ("Mean", mean),
        ("Equal", |_, i| compare_kernel(i, Cmp::Eq)),
        ("Greater", |_, i| compare_kernel(i, Cmp::Gt)),
        ("Less", |_, i| compare_kernel(i, Cmp::Lt)),
        ("GreaterOrEqual", |_, i| compare_kernel(i, Cmp::Ge)),
        ("LessOrEqual", |_, i| compare_kernel(i, Cmp::Le)),
        ("And", |_, i| logic(i, |a, b| a && b)),
        ("Or", |_, i| logic(i, |a, b| a || b)),
        ("Xor", |_, i| logic(i, |a, b| a != b)),
        ("BitShift", bit_shift),
        ("BitwiseAnd", |_, i| bit_kernel(i, "BitwiseAnd", BitOp::And)),
        ("BitwiseOr", |_, i| bit_kernel(i, "BitwiseOr", BitOp::Or)),
        ("BitwiseXor", |_, i| bit_kernel(i, "BitwiseXor", BitOp::Xor)),
        ("PRelu", prelu),
        ("Where", where_op),
    ];
    for &(name, f) in ops {
        r.register(name, f);
    }
    r.register_in_place_any("", "Add", |_, x, i| arith_in_place(x, i, Arith::Add));
    r.register_in_place_any("", "Sub", |_, x, i| arith_in_place(x, i, Arith::Sub));
    r.register_in_place_any("", "Mul", |_, x, i| arith_in_place(x, i, Arith::Mul));
    r.register_in_place_any("", "Div", |_, x, i| arith_in_place(x, i, Arith::Div));
    r.register_in_place_any("", "Where", where_in_place);
}

#[cfg(test)]
mod tests {

    #[test]
    fn in_place_arithmetic_takes_either_operand_and_declines_a_smaller_one() {
        let a = Tensor::from_f32(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).expect("tensor");
        let b = Tensor::from_f32(&[3], vec![0.5, 4.0, -2.0]).expect("tensor");
        for op in [Arith::Add, Arith::Sub, Arith::Mul, Arith::Div] {
            let plain = binary_arith(&[Some(&a), Some(&b)], op).unwrap_or_default();
            let Ok(Ok(got)) = arith_in_place(a.clone(), &[None, Some(&b)], op) else {
                panic!("{op:?}: the full first operand was declined");
            };
            assert_eq!(got, plain, "{op:?} a∘b");
            let plain = binary_arith(&[Some(&b), Some(&a)], op).unwrap_or_default();
            let Ok(Ok(got)) = arith_in_place(a.clone(), &[Some(&b), None], op) else {
                panic!("{op:?}: the full second operand was declined");
            };
            assert_eq!(got, plain, "{op:?} b∘a");
            // `b` is smaller than the result: given back unchanged.
            match arith_in_place(b.clone(), &[None, Some(&a)], op) {
                Ok(Err(back)) => assert_eq!(back, b),
                _ => panic!("{op:?}: a smaller operand was not declined"),
            }
        }
    }

    #[test]
    fn in_place_where_keeps_the_full_branch() {
        let c = Tensor::from_vec(&[3], vec![true, false, true]).expect("tensor");
        let x = Tensor::from_f32(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).expect("tensor");
        let s = Tensor::from_f32(&[1], vec![f32::NEG_INFINITY]).expect("tensor");
        let ctx_node = hb_ir::Node::new("w", "Where", &[], &["y"]);
        let ctx = OpCtx {
            node: &ctx_node,
            opset: 13,
        };
        let plain = where_op(&ctx, &[Some(&c), Some(&x), Some(&s)]).unwrap_or_default();
        let Ok(Ok(got)) = where_in_place(&ctx, x.clone(), &[Some(&c), None, Some(&s)]) else {
            panic!("x declined");
        };
        assert_eq!(got, plain);
        let plain = where_op(&ctx, &[Some(&c), Some(&s), Some(&x)]).unwrap_or_default();
        let Ok(Ok(got)) = where_in_place(&ctx, x.clone(), &[Some(&c), Some(&s), None]) else {
            panic!("y declined");
        };
        assert_eq!(got, plain);
        // A scalar of higher rank widens the result: declined.
        let wide = Tensor::from_f32(&[1, 1, 1], vec![0.0]).expect("tensor");
        assert!(matches!(
            where_in_place(&ctx, x.clone(), &[Some(&c), None, Some(&wide)]),
            Ok(Err(_))
        ));
    }

    use super::*;

    fn t32(shape: &[usize], v: Vec<i32>) -> Tensor {
        Tensor::from_vec(shape, v).unwrap()
    }

    #[test]
    fn where_scalar_branch_matches_general_path() {
        let c = ArrayD::from_shape_vec(
            ndarray::IxDyn(&[1, 1, 3, 4]),
            (0..12).map(|i| i % 3 != 0).collect(),
        )
        .unwrap();
        let x = ArrayD::from_shape_vec(
            ndarray::IxDyn(&[2, 1, 3, 4]),
            (0..24).map(|i| i as f32).collect(),
        )
        .unwrap();
        let s = ArrayD::from_shape_vec(ndarray::IxDyn(&[1]), vec![-9.0f32]).unwrap();
        let big = ArrayD::from_shape_vec(ndarray::IxDyn(&[1, 1, 1, 1, 1]), vec![-9.0f32]).unwrap();
        for (a, b) in [(&x, &s), (&s, &x), (&x, &big)] {
            let want = where_typed(&c, a, b).unwrap();
            let got = where_op(
                &OpCtx {
                    node: &hb_ir::Node::new("w", "Where", &[], &["y"]),
                    opset: 16,
                },
                &[
                    Some(&Tensor::Bool(c.clone())),
                    Some(&Tensor::F32(a.clone())),
                    Some(&Tensor::F32(b.clone())),
                ],
            )
            .unwrap();
            assert_eq!(got[0], Tensor::F32(want));
        }
    }

    #[test]
    fn int_div_truncates_and_rejects_zero() {
        let a = t32(&[3], vec![7, -7, 9]);
        let b = t32(&[3], vec![2, 2, -4]);
        let r = binary_arith(&[Some(&a), Some(&b)], Arith::Div).unwrap();
        assert_eq!(r[0].to_i64_vec().unwrap(), vec![3, -3, -2]);
        let z = t32(&[1], vec![0]);
        assert!(binary_arith(&[Some(&a), Some(&z)], Arith::Div).is_err());
        assert!(binary_arith(&[Some(&a), Some(&z)], Arith::ModFloor).is_err());
    }

    #[test]
    fn python_mod_and_broadcast_bias() {
        let a = t32(&[4], vec![-4, 7, 5, -1]);
        let b = t32(&[4], vec![3, -3, 2, 5]);
        let r = binary_arith(&[Some(&a), Some(&b)], Arith::ModFloor).unwrap();
        assert_eq!(r[0].to_i64_vec().unwrap(), vec![2, -2, 1, 4]);
        let x = Tensor::from_f32(&[1, 2, 2, 1], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let bias = Tensor::from_f32(&[2, 1, 1], vec![10.0, 20.0]).unwrap();
        let r = binary_arith(&[Some(&x), Some(&bias)], Arith::Add).unwrap();
        assert_eq!(r[0].shape(), &[1, 2, 2, 1]);
        assert_eq!(r[0].to_f64_vec().unwrap(), vec![11.0, 12.0, 23.0, 24.0]);
    }

    #[test]
    fn mismatched_types_and_shapes_are_errors() {
        let a = t32(&[2], vec![1, 2]);
        let f = Tensor::from_f32(&[2], vec![1.0, 2.0]).unwrap();
        assert!(binary_arith(&[Some(&a), Some(&f)], Arith::Add).is_err());
        let c = t32(&[3], vec![1, 2, 3]);
        assert!(binary_arith(&[Some(&a), Some(&c)], Arith::Add).is_err());
        assert!(binary_arith(&[Some(&a)], Arith::Add).is_err());
    }
}
