//! Float kernels, one module per op family. Each module has a
//! `register(&mut Registry)` adding its ops.

pub mod binary;
pub mod cast;
pub mod erf;
pub mod ew;
pub mod gather;
pub mod generate;
pub mod grid_sample;
pub mod horizon;
pub mod pad;
pub mod quant;
pub mod reduce;
pub mod remap;
pub mod resize;
pub mod scratch;
pub mod shape_ops;
pub mod simd;
pub mod unary;
pub mod unique;
pub mod util;

pub mod attention;
pub mod conv;
pub mod conv_direct;
pub mod conv_pointwise;
pub mod conv_transpose;
pub mod detection;
pub mod einsum;
pub mod fastmath;
pub mod floatio;
pub mod gemm;
pub mod matmul;
pub mod norm;
pub mod norm_misc;
pub mod pool;
pub mod rnn;
pub mod softmax;
pub mod spatial;
#[cfg(test)]
pub mod testutil;
pub mod winograd;

use crate::registry::Registry;

/// Registers every built-in kernel.
pub fn register_all(r: &mut Registry) {
    shape_ops::register(r);
    gather::register(r);
    generate::register(r);
    pad::register(r);
    resize::register(r);
    attention::register(r);
    conv::register(r);
    conv_transpose::register(r);
    detection::register(r);
    einsum::register(r);
    matmul::register(r);
    norm::register(r);
    norm_misc::register(r);
    pool::register(r);
    rnn::register(r);
    softmax::register(r);
    unary::register(r);
    binary::register(r);
    reduce::register(r);
    cast::register(r);
    quant::register(r);
    grid_sample::register(r);
    unique::register(r);
    horizon::register(r);
}
