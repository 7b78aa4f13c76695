//! Plain, obviously correct integer reference kernels, one module per op
//! family (docs/integer-semantics.md). They favour clarity over speed: the
//! optimised runtime is tested bit-exact against them.

pub mod activation;
pub mod common;
pub mod conv;
pub mod eltwise;
pub mod layernorm;
pub mod matmul;
pub mod pad;
pub mod pool;
pub mod quant;
pub mod resize;
pub mod softmax;
