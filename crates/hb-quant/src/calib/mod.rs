//! Calibration statistics and threshold algorithms.

pub mod histogram;
pub mod threshold;

pub use histogram::AbsHistogram;
