//! cast kernels.

use crate::registry::Registry;

/// Registers the kernels of this module.
pub fn register(r: &mut Registry) {
    let _ = r;
}
