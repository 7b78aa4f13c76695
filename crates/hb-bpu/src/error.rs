//! The crate's error type.

/// What went wrong in an integer kernel or in deriving its parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BpuError {
    /// Shapes that do not fit together (or data whose length does not
    /// match its shape).
    #[error("shape error: {0}")]
    Shape(String),
    /// A parameter (scale, ratio, attribute) outside the supported range.
    #[error("invalid parameter: {0}")]
    Param(String),
    /// A valid but unsupported combination (the op runs on the CPU instead).
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// Result with [`BpuError`].
pub type Result<T> = std::result::Result<T, BpuError>;

/// Builds a [`BpuError::Shape`] from a format string.
#[macro_export]
macro_rules! shape_err {
    ($($t:tt)*) => { $crate::error::BpuError::Shape(format!($($t)*)) };
}

/// Builds a [`BpuError::Param`] from a format string.
#[macro_export]
macro_rules! param_err {
    ($($t:tt)*) => { $crate::error::BpuError::Param(format!($($t)*)) };
}
