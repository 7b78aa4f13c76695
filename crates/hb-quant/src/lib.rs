//! Quantization configuration and math for hbkit.
//!
//! - [`config`]: the Horizon-style YAML (`model_parameters`,
//!   `input_parameters`, `calibration_parameters`, `compiler_parameters`) and
//!   `quant_config` (inline or JSON with comments), checked key by key:
//!   unknown keys are errors that name the closest valid key; keys without
//!   effect on a CPU are accepted and listed as ignored.
//! - [`qtype`]: quantization types and which ones each `march` allows.
//! - [`guards`]: inputs int8 cannot carry (integer-valued, periodic).
//! - [`plan`]: qtype resolution and the calibration points of a graph.
//! - [`calib`]: streaming statistics, thresholds, candidates.
//! - [`pipeline`]: one calibration run (statistics, search, calibrated model).
//! - [`bias`]: bias correction of the weighted layers.
//! - [`fused`]: Relu / Clip inputs quantized with their output's thresholds.
//! - [`calibrated`]: HzCalibration nodes in and out of a model.
//! - [`report`]: the per-node / per-output tables and the traps met.
//! - [`qdq`]: export of a calibrated model to QuantizeLinear /
//!   DequantizeLinear ONNX.

pub mod bias;
pub mod calib;
pub mod calibrated;
pub mod config;
pub mod fused;
pub mod guards;
pub mod masks;
pub mod ops;
pub mod pipeline;
pub mod plan;
pub mod qdq;
pub mod qtype;
pub mod report;

pub use config::{ConfigError, HbConfig};
pub use qtype::{March, QType};
