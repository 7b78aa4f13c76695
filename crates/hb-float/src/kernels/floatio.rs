//! Float-type plumbing for compute kernels: they compute in f32 and give
//! results back in the input's element type (f16, bf16, f64 go through f32).

use crate::error::OpResult;
use crate::unsupported;
use hb_tensor::{DType, Tensor};
use ndarray::ArrayD;
use std::borrow::Cow;

/// The f32 data of a float tensor (borrowed for f32, converted otherwise).
pub fn f32_of(t: &Tensor) -> OpResult<Cow<'_, ArrayD<f32>>> {
    match t.dtype() {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => Ok(t.to_f32_cow()?),
        other => Err(unsupported!(
            "element type {other} (a float type is required)"
        )),
    }
}

/// Wraps an f32 result as a tensor of `dtype` (the type of the op's input).
pub fn to_dtype(a: ArrayD<f32>, dtype: DType) -> OpResult<Tensor> {
    let t = Tensor::F32(a);
    if dtype == DType::F32 {
        Ok(t)
    } else {
        Ok(t.cast(dtype)?)
    }
}

/// The data of an array as a contiguous row-major slice (borrowed when possible).
pub fn contiguous<T: Clone>(a: &ArrayD<T>) -> Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(
            a.as_standard_layout()
                .as_slice()
                .map_or_else(|| a.iter().cloned().collect(), |s| s.to_vec()),
        ),
    }
}

/// An owned row-major copy of an array's data (a plain memcpy when contiguous).
pub fn to_vec<T: Clone>(a: &ArrayD<T>) -> Vec<T> {
    contiguous(a).into_owned()
}
