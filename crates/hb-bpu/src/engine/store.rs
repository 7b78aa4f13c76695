//! Value storage of the engine: the memory plan's slot buffers, constants
//! and the caller's inputs, seen through typed slices.

use crate::program::numel;
use hb_tensor::{DType, Tensor};
use ndarray::{ArrayD, IxDyn};
use std::sync::Arc;

/// One slot buffer of the memory plan.
#[derive(Debug)]
pub enum Buf {
    /// int8 values.
    I8(Vec<i8>),
    /// int16 values.
    I16(Vec<i16>),
    /// int32 values.
    I32(Vec<i32>),
    /// f32 values.
    F32(Vec<f32>),
    /// Any other type, kept as a tensor.
    T(Option<Tensor>),
}

impl Default for Buf {
    fn default() -> Self {
        Buf::T(None)
    }
}

impl Buf {
    /// A zeroed buffer of `elems` values of `dt`.
    pub fn new(dt: DType, elems: usize) -> Buf {
        match dt {
            DType::I8 => Buf::I8(vec![0; elems]),
            DType::I16 => Buf::I16(vec![0; elems]),
            DType::I32 => Buf::I32(vec![0; elems]),
            DType::F32 => Buf::F32(vec![0.0; elems]),
            _ => Buf::T(None),
        }
    }
}

/// A borrowed value.
pub(crate) enum V<'a> {
    I8(&'a [i8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    F32(&'a [f32]),
    T(&'a Tensor),
}

fn arr<T>(shape: &[usize], v: Vec<T>) -> Result<ArrayD<T>, String> {
    ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| e.to_string())
}

impl V<'_> {
    /// A tensor copy with `shape`.
    pub fn to_tensor(&self, shape: &[usize]) -> Result<Tensor, String> {
        Ok(match self {
            V::I8(s) => Tensor::I8(arr(shape, s.to_vec())?),
            V::I16(s) => Tensor::I16(arr(shape, s.to_vec())?),
            V::I32(s) => Tensor::I32(arr(shape, s.to_vec())?),
            V::F32(s) => Tensor::F32(arr(shape, s.to_vec())?),
            V::T(t) => (*t).clone(),
        })
    }

    fn of(t: &Tensor) -> V<'_> {
        let v = match t {
            Tensor::I8(a) => a.as_slice().map(V::I8),
            Tensor::I16(a) => a.as_slice().map(V::I16),
            Tensor::I32(a) => a.as_slice().map(V::I32),
            Tensor::F32(a) => a.as_slice().map(V::F32),
            _ => None,
        };
        v.unwrap_or(V::T(t))
    }
}

/// Where every tensor of one run lives.
pub(crate) struct Store<'a> {
    pub slots: &'a mut Vec<Buf>,
    pub plan: &'a [i32],
    pub consts: &'a [Option<Arc<Tensor>>],
    pub inputs: &'a [Tensor],
    pub input_pos: &'a [Option<usize>],
    pub infos: &'a [(DType, Vec<usize>)],
    /// Per tensor id: stored channels-last (`[N, H, W, C]` for the logical
    /// `[N, C, H, W]`; see `layout.rs`).
    pub channels_last: &'a [bool],
    /// Per tensor id: the largest |value| its producer allows.
    pub bounds: &'a [Option<i64>],
}

impl Store<'_> {
    /// Whether tensor `id` is stored channels-last.
    pub fn is_channels_last(&self, id: usize) -> bool {
        self.channels_last.get(id).copied().unwrap_or(false)
    }

    /// The largest |value| tensor `id` can hold, when its producer bounds
    /// it.
    pub fn bound(&self, id: usize) -> Option<i64> {
        self.bounds.get(id).copied().flatten()
    }

    /// The value of tensor `id`.
    pub fn get(&self, id: usize) -> Result<V<'_>, String> {
        if let Some(c) = self.consts.get(id).and_then(|c| c.as_deref()) {
            return Ok(V::of(c));
        }
        if let Some(k) = self.input_pos.get(id).copied().flatten() {
            return Ok(V::of(&self.inputs[k]));
        }
        let s = self.slot(id)?;
        let n = numel(&self.infos[id].1);
        let short = || format!("slot of tensor #{id} is too small");
        Ok(match &self.slots[s] {
            Buf::I8(v) => V::I8(v.get(..n).ok_or_else(short)?),
            Buf::I16(v) => V::I16(v.get(..n).ok_or_else(short)?),
            Buf::I32(v) => V::I32(v.get(..n).ok_or_else(short)?),
            Buf::F32(v) => V::F32(v.get(..n).ok_or_else(short)?),
            Buf::T(Some(t)) => V::T(t),
            Buf::T(None) => return Err(format!("tensor #{id} is read before it is written")),
        })
    }

    /// The slot of tensor `id`.
    pub fn slot(&self, id: usize) -> Result<usize, String> {
        match self.plan.get(id) {
            Some(&s) if s >= 0 => Ok(s as usize),
            _ => Err(format!("tensor #{id} has no memory slot")),
        }
    }

    /// Takes slot buffer `s` out (to write it while reading others).
    pub fn take(&mut self, s: usize) -> Buf {
        std::mem::take(&mut self.slots[s])
    }

    /// Puts a slot buffer back.
    pub fn restore(&mut self, s: usize, b: Buf) {
        self.slots[s] = b;
    }

    /// Stores a computed tensor into its slot (copying into the buffer).
    pub fn put(&mut self, id: usize, t: Tensor) -> Result<(), String> {
        let s = self.slot(id)?;
        let n = t.len();
        let t = t.into_standard_layout();
        let fits = |len: usize| len >= n;
        match (&mut self.slots[s], &t) {
            (Buf::I8(v), Tensor::I8(a)) if fits(v.len()) => {
                v[..n].copy_from_slice(a.as_slice().ok_or("layout")?)
            }
            (Buf::I16(v), Tensor::I16(a)) if fits(v.len()) => {
                v[..n].copy_from_slice(a.as_slice().ok_or("layout")?)
            }
            (Buf::I32(v), Tensor::I32(a)) if fits(v.len()) => {
                v[..n].copy_from_slice(a.as_slice().ok_or("layout")?)
            }
            (Buf::F32(v), Tensor::F32(a)) if fits(v.len()) => {
                v[..n].copy_from_slice(a.as_slice().ok_or("layout")?)
            }
            (Buf::T(slot), _) => *slot = Some(t),
            _ => return Err(format!("tensor #{id} does not fit its memory slot")),
        }
        Ok(())
    }
}
