//! Float kernels, one module per op family. Each module has a
//! `register(&mut Registry)` adding its ops.

pub mod util;

pub mod attention;
pub mod conv;
pub mod conv_transpose;
pub mod einsum;
pub mod floatio;
pub mod gemm;
pub mod matmul;
pub mod norm;
pub mod norm_misc;
pub mod pool;
pub mod softmax;
pub mod spatial;
#[cfg(test)]
pub mod testutil;

use crate::registry::Registry;

/// Registers every built-in kernel.
pub fn register_all(r: &mut Registry) {
    attention::register(r);
    conv::register(r);
    conv_transpose::register(r);
    einsum::register(r);
    matmul::register(r);
    norm::register(r);
    norm_misc::register(r);
    pool::register(r);
    softmax::register(r);
}
