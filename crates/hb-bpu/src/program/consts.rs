//! Constant payloads: tensors stored little-endian, row-major, in
//! `TensorInfo.data`.

use super::{dtype_of, shape_of, ProgramError, Result};
use crate::program::pb;
use hb_tensor::{DType, Tensor};
use ndarray::{ArrayD, IxDyn};

/// Bytes per stored element (`bool` as one byte).
pub fn stored_size(dt: DType) -> usize {
    match dt {
        DType::Bool | DType::I8 | DType::U8 => 1,
        DType::I16 | DType::U16 | DType::F16 | DType::BF16 => 2,
        DType::I32 | DType::U32 | DType::F32 => 4,
        DType::I64 | DType::U64 | DType::F64 => 8,
        DType::String => 0,
    }
}

macro_rules! le_vec {
    ($bytes:expr, $t:ty) => {{
        const W: usize = std::mem::size_of::<$t>();
        $bytes
            .chunks_exact(W)
            .map(|c| {
                let mut a = [0u8; W];
                a.copy_from_slice(c);
                <$t>::from_le_bytes(a)
            })
            .collect::<Vec<$t>>()
    }};
}

fn arr<T>(shape: &[usize], v: Vec<T>) -> Result<ArrayD<T>> {
    ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| ProgramError::Invalid(e.to_string()))
}

/// Decodes a constant into a tensor.
pub fn to_tensor(t: &pb::TensorInfo) -> Result<Tensor> {
    let dt = dtype_of(t)?;
    let shape = shape_of(t);
    let b = &t.data[..];
    Ok(match dt {
        DType::F32 => Tensor::F32(arr(&shape, le_vec!(b, f32))?),
        DType::F64 => Tensor::F64(arr(&shape, le_vec!(b, f64))?),
        DType::I8 => Tensor::I8(arr(&shape, le_vec!(b, i8))?),
        DType::I16 => Tensor::I16(arr(&shape, le_vec!(b, i16))?),
        DType::I32 => Tensor::I32(arr(&shape, le_vec!(b, i32))?),
        DType::I64 => Tensor::I64(arr(&shape, le_vec!(b, i64))?),
        DType::U8 => Tensor::U8(arr(&shape, le_vec!(b, u8))?),
        DType::U16 => Tensor::U16(arr(&shape, le_vec!(b, u16))?),
        DType::U32 => Tensor::U32(arr(&shape, le_vec!(b, u32))?),
        DType::U64 => Tensor::U64(arr(&shape, le_vec!(b, u64))?),
        DType::Bool => Tensor::Bool(arr(&shape, b.iter().map(|&x| x != 0).collect())?),
        DType::F16 => Tensor::F16(arr(
            &shape,
            le_vec!(b, u16)
                .into_iter()
                .map(half::f16::from_bits)
                .collect(),
        )?),
        other => {
            return Err(ProgramError::Invalid(format!(
                "constant '{}' has unsupported dtype {other}",
                t.name
            )))
        }
    })
}

/// Little-endian bytes of an array's elements in row-major order (a
/// contiguous array is read as one slice; no copy of the array is made).
fn le_bytes<T: Copy, const W: usize>(a: &ArrayD<T>, bytes: impl Fn(T) -> [u8; W]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len() * W);
    match a.as_slice() {
        Some(s) => s.iter().for_each(|&v| out.extend_from_slice(&bytes(v))),
        None => a.iter().for_each(|&v| out.extend_from_slice(&bytes(v))),
    }
    out
}

macro_rules! to_le {
    ($a:expr) => {
        le_bytes($a, |v| v.to_le_bytes())
    };
}

/// Encodes a tensor's elements (row-major, little-endian).
pub fn to_bytes(t: &Tensor) -> Result<Vec<u8>> {
    Ok(match t {
        Tensor::F32(a) => to_le!(a),
        Tensor::F64(a) => to_le!(a),
        Tensor::I8(a) => to_le!(a),
        Tensor::I16(a) => to_le!(a),
        Tensor::I32(a) => to_le!(a),
        Tensor::I64(a) => to_le!(a),
        Tensor::U8(a) => to_le!(a),
        Tensor::U16(a) => to_le!(a),
        Tensor::U32(a) => to_le!(a),
        Tensor::U64(a) => to_le!(a),
        Tensor::Bool(a) => a.iter().map(|&b| u8::from(b)).collect(),
        Tensor::F16(a) => a.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect(),
        other => {
            return Err(ProgramError::Invalid(format!(
                "cannot store a {} constant",
                other.dtype()
            )))
        }
    })
}
