//! The float reference interpreter of hbkit — the role ONNX Runtime plays
//! inside the Horizon toolchain.
//!
//! - [`Registry`]: `(domain, op_type)` → kernel function.
//! - [`Session`]: a model prepared for execution; [`Session::run`] and
//!   [`Session::run_with_hook`] (a [`NodeHook`] sees every produced value and
//!   may replace it: calibration, dumps, fake-quant, sensitivity).
//! - [`fold`]: constant folding; [`casts`]: no-op Cast removal; [`shapes`]:
//!   shape inference by execution.
//! - [`kernels`]: one module per op family; f32 is the main path, with
//!   integer/bool/f16 support where ONNX models need it.

pub mod casts;
pub mod error;
pub mod fold;
pub mod inline_if;
pub mod kernels;
pub mod probe;
pub mod registry;
pub mod session;
pub mod shapes;
pub mod threads;

pub use error::{FloatError, OpError};
/// [`hb_tensor::multiversion!`], re-exported: `hb_float::multiversion!` and
/// `crate::multiversion!` keep working.
#[doc(hidden)]
pub use hb_tensor::multiversion;
pub use registry::{InPlaceFn, KernelFn, OpCtx, Registry};
pub use session::{NodeHook, Session, TimingHook, ValueCache, ValueDump};
