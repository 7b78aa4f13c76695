//! hbkit's integer machine (the "BPU"), as specified in
//! `docs/integer-semantics.md`.
//!
//! - [`fixed_point`]: requantisation by a 31-bit multiplier and a right
//!   shift ([`Requant`], [`Rescale2`]), bias and ec quantisation.
//! - [`lut`]: lookup tables (direct 256-entry tables for int8 inputs,
//!   segmented linear-interpolation tables for larger domains) and the
//!   functions the LUT ops evaluate ([`lut::LutFn`]).
//! - [`reference`]: plain, obviously correct integer kernels, one module
//!   per op family, on plain slices and shapes. Fast kernels must agree with
//!   them bit for bit.
//! - [`fast`]: the optimised kernels of the runtime (packed int8/int16
//!   GEMM with i32 accumulation, AVX-512 VNNI / AVX2 / scalar paths picked
//!   at run time, rayon), bit-exact with [`reference`].
//!
//! Integers are handled through the [`QInt`] trait (`i8`, `i16`, `i32`);
//! kernels take [`TensorRef`]s and return owned [`QTensor`]s. Every
//! failure (bad shapes, out-of-range parameters) is a [`BpuError`], never a
//! panic.

// The reference kernels walk several per-axis arrays in step (shape,
// strides, pads, kernel); index loops read like the spec they implement.
#![allow(clippy::needless_range_loop)]

pub mod engine;
pub mod error;
pub mod fast;
pub mod fixed_point;
pub mod lut;
pub mod program;
pub mod qint;
pub mod reference;
pub mod tensor;

pub use error::{BpuError, Result};
pub use fast::{ExecOptions, Isa, PackOptions, PackedWeights, Scratch};
pub use fixed_point::{Requant, Rescale2};
pub use lut::{Lut, LutFn, LutSpec};
pub use qint::QInt;
pub use tensor::{QTensor, TensorRef};
