//! Float kernels, one module per op family. Each module has a
//! `register(&mut Registry)` adding its ops.

pub mod binary;
pub mod cast;
pub mod erf;
pub mod ew;
pub mod quant;
pub mod reduce;
pub mod unary;
pub mod util;

use crate::registry::Registry;

/// Registers every built-in kernel.
pub fn register_all(r: &mut Registry) {
    unary::register(r);
    binary::register(r);
    reduce::register(r);
    cast::register(r);
    quant::register(r);
}
