//! Shape-only evaluation. Shape inference runs the graph on zero-filled
//! inputs and keeps only the shapes; while it does, the heaviest kernels
//! (Conv, ConvTranspose, MatMul, Gemm) check their inputs and attributes as
//! always and return an output of the shape they would compute filled with
//! [`FILL`], skipping the arithmetic. Their shapes come from the same code
//! as a real run's; only the values (meaningless on zero inputs) differ.

use std::cell::Cell;

/// The value a skipped kernel fills its output with: one, not zero, so
/// that the nodes after it (divisions, normalisations, logs) see ordinary
/// numbers, as a real run would give them, rather than the infinities and
/// NaNs that dividing by zeros makes (which send some kernels down slow
/// special-value paths).
pub const FILL: f32 = 1.0;

thread_local! {
    static SHAPES_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// True while [`shapes_only`] runs on this thread: a heavy kernel may
/// fill its output with [`FILL`] instead of computing it.
pub fn skipping_arithmetic() -> bool {
    SHAPES_ONLY.with(Cell::get)
}

/// Runs `f` with the heavy kernels' arithmetic skipped on this thread (a
/// session runs its nodes on the calling thread); the previous setting is
/// restored afterwards, also when `f` panics.
pub fn shapes_only<R>(f: impl FnOnce() -> R) -> R {
    crate::threads::with_flag_set(&SHAPES_ONLY, f)
}
