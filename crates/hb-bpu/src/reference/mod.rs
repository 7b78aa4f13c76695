//! Plain, obviously correct integer reference kernels, one module per op
//! family (docs/integer-semantics.md). They favour clarity over speed: the
//! optimised runtime is tested bit-exact against them.

pub mod common;
pub mod conv;
pub mod matmul;
pub mod quant;
pub mod activation;
pub mod eltwise;
pub mod pool;
pub mod resize;
