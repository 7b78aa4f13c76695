//! Calibration math: streaming statistics, thresholds, candidates.

pub mod candidate;
pub mod histogram;
pub mod observer;
pub mod threshold;

pub use histogram::AbsHistogram;
pub use observer::TensorStats;
