//! Quantization configuration and math for hbkit.
//!
//! - [`config`]: the Horizon-style YAML (`model_parameters`,
//!   `input_parameters`, `calibration_parameters`, `compiler_parameters`) and
//!   `quant_config` (inline or JSON with comments), checked key by key:
//!   unknown keys are errors that name the closest valid key; keys without
//!   effect on a CPU are accepted and listed as ignored.
//! - [`qtype`]: quantization types and which ones each `march` allows.
//! - [`qdq`]: export of a calibrated model to QuantizeLinear /
//!   DequantizeLinear ONNX.

pub mod calib;
pub mod config;
pub mod qdq;
pub mod qtype;

pub use config::{ConfigError, HbConfig};
pub use qtype::{March, QType};
