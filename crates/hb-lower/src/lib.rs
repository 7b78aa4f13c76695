//! Lowering from the calibrated float graph to hbkit's integer machine.
//!
//! - [`lower`]: a calibrated ONNX model (`*_calibrated_model.onnx`, with
//!   `HzCalibration` nodes) → a `.bc` [`hb_bpu::program::Program`]:
//!   Quantize at the inputs, integer ops where docs/integer-semantics.md §15
//!   places them on the BPU, float CPU ops (with Dequantize/Quantize at
//!   their borders) for everything else.
//! - [`compile`]: `.bc` → `.hbm` (fusion, BPU/CPU placement and subgraphs,
//!   boundary-node removal, packed-weight metadata, memory plan).
//! - [`cpu`]: [`cpu::FloatCpu`], the host backend that runs a program's
//!   float CPU ops with `hb-float` kernels.
//!
//! Why the mixed executor is split this way: `hb-bpu` (the runtime) must not
//! depend on the ONNX/IR side, so it runs integer ops itself and calls the
//! [`hb_bpu::program::CpuOps`] trait for CPU ops; this crate implements the
//! trait with `hb-float`, so a program runs end to end with
//! `Interpreter::run(inputs, &FloatCpu::new(&program)?)`.

pub mod compile;
pub mod cpu;
pub mod lower;

/// Errors of lowering and compiling.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    /// The model cannot be lowered (names the node and what is wrong).
    #[error("{0}")]
    Model(String),
    /// A program-level error.
    #[error(transparent)]
    Program(#[from] hb_bpu::program::ProgramError),
}

/// Result with [`LowerError`].
pub type Result<T> = std::result::Result<T, LowerError>;
