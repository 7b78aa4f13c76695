//! Graph passes that keep the model's float results (up to rounding).
//!
//! Each pass returns how many rewrites it made so callers can log it.
//! Constant folding needs kernels and lives in `hb_float::fold`.

mod bn_fold;
mod constant;
mod identity;
mod layer_norm;

pub use bn_fold::fold_batch_norm;
pub use constant::{constant_value, constants_to_initializers};
pub use identity::remove_identities;
pub use layer_norm::fuse_layer_norms;

use crate::graph::Graph;
use crate::Result;

/// What [`optimize`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Constant nodes turned into initializers.
    pub constants: usize,
    /// Identity / inference Dropout nodes removed.
    pub identities: usize,
    /// BatchNormalization nodes folded into Conv/ConvTranspose/Gemm.
    pub batch_norms: usize,
}

/// Runs the IR-only passes: Constant → initializer, Identity/Dropout removal,
/// BatchNormalization folding; then drops unused initializers.
pub fn optimize(g: &mut Graph) -> Result<PassReport> {
    let report = PassReport {
        constants: constants_to_initializers(g)?,
        identities: remove_identities(g),
        batch_norms: fold_batch_norm(g)?,
    };
    g.prune_unused_initializers();
    Ok(report)
}
