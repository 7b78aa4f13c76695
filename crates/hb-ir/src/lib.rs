//! The hbkit graph IR: an ONNX model as a [`Model`] holding a [`Graph`] of
//! [`Node`]s in topological order, with named values and initializers.
//!
//! - [`load_model`] / [`save_model`]: ONNX import and export (external data
//!   files too; a model is memory-mapped and tensor payloads are copied once).
//! - [`attr`]: typed attribute access with ONNX defaults.
//! - [`topo`]: topological ordering.
//! - [`passes`]: graph passes (Identity/Dropout removal, BatchNormalization
//!   folding, Constant → initializer). Constant folding needs kernels and
//!   lives in `hb-float`.
//! - An unknown op still loads; only running it fails.

pub mod attr;
pub mod export;
pub mod graph;
pub mod import;
pub mod passes;
pub mod topo;

pub use attr::Attr;
pub use export::{model_to_proto, save_model};
pub use graph::{Dim, Graph, Model, Node, ValueInfo};
pub use import::{load_model, load_model_from_bytes, tensor_from_proto};

/// Errors of model loading, saving and graph manipulation.
#[derive(Debug, thiserror::Error)]
pub enum IrError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not a valid ONNX model.
    #[error("{path}: not a valid ONNX model ({msg})")]
    Decode {
        /// The file.
        path: String,
        /// What the decoder said.
        msg: String,
    },
    /// A tensor in the model is malformed or unsupported.
    #[error("{context}: {msg}")]
    Tensor {
        /// Where the tensor is (file and tensor name).
        context: String,
        /// What is wrong.
        msg: String,
    },
    /// The graph is malformed (cycle, dangling value, ...).
    #[error("invalid graph: {0}")]
    Graph(String),
    /// A node's attribute is missing or has the wrong type.
    #[error("node '{node}' ({op}): {msg}")]
    Attribute {
        /// Node name.
        node: String,
        /// Op type.
        op: String,
        /// What is wrong.
        msg: String,
    },
}

/// Result alias for IR operations.
pub type Result<T> = std::result::Result<T, IrError>;
