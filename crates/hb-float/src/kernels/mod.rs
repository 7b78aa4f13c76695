//! Float kernels, one module per op family. Each module has a
//! `register(&mut Registry)` adding its ops.

pub mod gather;
pub mod generate;
pub mod grid_sample;
pub mod pad;
pub mod remap;
pub mod resize;
pub mod shape_ops;
pub mod unique;
pub mod util;

use crate::registry::Registry;

/// Registers every built-in kernel.
pub fn register_all(r: &mut Registry) {
    shape_ops::register(r);
    gather::register(r);
    generate::register(r);
    pad::register(r);
    resize::register(r);
    grid_sample::register(r);
    unique::register(r);
}
