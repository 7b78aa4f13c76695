//! Tensors for hbkit: an ndarray-backed [`Tensor`] over the ONNX element
//! types, `.npy`/raw-binary I/O ([`io`]) and the similarity metrics the
//! Horizon tools report ([`metrics`]).

pub mod dtype;
pub mod io;
pub mod metrics;
pub mod simd;
pub mod tensor;
pub mod write_sink;

pub use dtype::DType;
pub use tensor::Tensor;

/// Errors raised by tensor operations and tensor I/O.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A file's content is not what was expected.
    #[error("{path}: {msg}")]
    Format {
        /// The file concerned.
        path: String,
        /// What is wrong with it.
        msg: String,
    },
    /// An operation got a tensor of a type it cannot handle.
    #[error("unsupported dtype {0}")]
    UnsupportedDType(DType),
    /// Shapes do not fit together.
    #[error("shape error: {0}")]
    Shape(String),
}

/// Result alias for tensor operations.
pub type Result<T> = std::result::Result<T, TensorError>;
