//! Cast and CastLike between every supported element type (numbers, bool,
//! strings). float8/int4/… targets are reported as unsupported.

use crate::error::OpResult;
use crate::kernels::ew::map_array;
use crate::kernels::util::{input, one};
use crate::registry::{OpCtx, Registry};
use crate::unsupported;
use hb_tensor::{DType, Tensor};

/// Formats a float like numpy's `str` (shortest round-trip form, `NaN`, `INF`).
fn float_text(v: f64, text: String) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "INF" } else { "-INF" }.into()
    } else {
        text
    }
}

/// Converts `t` to `to` with ONNX `Cast` semantics.
pub fn cast_tensor(t: &Tensor, to: DType) -> OpResult<Tensor> {
    match (t, to) {
        (Tensor::F32(a), DType::String) => Ok(Tensor::Str(
            a.map(|&v| float_text(f64::from(v), format!("{v}"))),
        )),
        (Tensor::F64(a), DType::String) => {
            Ok(Tensor::Str(a.map(|&v| float_text(v, format!("{v}")))))
        }
        (Tensor::F16(a), DType::String) => {
            Ok(Tensor::Str(a.map(|&v| {
                float_text(v.to_f64(), format!("{}", v.to_f32()))
            })))
        }
        (Tensor::F32(a), DType::F16) => Ok(Tensor::F16(map_array(a, half::f16::from_f32))),
        (Tensor::F16(a), DType::F32) => Ok(Tensor::F32(map_array(a, half::f16::to_f32))),
        _ => Ok(t.cast(to)?),
    }
}

/// The target type of `Cast`.
fn target(ctx: &OpCtx) -> OpResult<DType> {
    let code = ctx.node.int_req("to")?;
    i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx_code)
        .ok_or_else(|| {
            unsupported!(
                "Cast to {}",
                DType::onnx_code_name(i32::try_from(code).unwrap_or(-1))
            )
        })
}

fn cast(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    // `saturate` (opset 19+) only changes float8 results, which are unsupported.
    let _ = ctx.node.int_or("saturate", 1)?;
    one(cast_tensor(input(inputs, 0)?, target(ctx)?)?)
}

fn cast_like(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let _ = ctx.node.int_or("saturate", 1)?;
    let to = input(inputs, 1)?.dtype();
    one(cast_tensor(input(inputs, 0)?, to)?)
}

/// Registers Cast and CastLike.
pub fn register(r: &mut Registry) {
    r.register("Cast", cast);
    r.register("CastLike", cast_like);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_string_round_trip() {
        let t = Tensor::from_f32(&[3], vec![0.1, f32::NAN, -2.5]).unwrap();
        let s = cast_tensor(&t, DType::String).unwrap();
        let Tensor::Str(a) = &s else {
            panic!("not strings")
        };
        assert_eq!(
            a.iter().cloned().collect::<Vec<_>>(),
            vec!["0.1", "NaN", "-2.5"]
        );
        let back = cast_tensor(&s, DType::F32).unwrap();
        assert_eq!(back.to_f64_vec().unwrap()[2], -2.5);
        let i = cast_tensor(
            &Tensor::from_f32(&[2], vec![2.9, -2.9]).unwrap(),
            DType::I32,
        )
        .unwrap();
        assert_eq!(i.to_i64_vec().unwrap(), vec![2, -2]);
    }
}
