//! Errors of the float interpreter.

use hb_tensor::TensorError;

/// An error raised inside a kernel; the interpreter adds the node name.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// Inputs or attributes are invalid for this op.
    #[error("{0}")]
    Invalid(String),
    /// A valid but unsupported case (dtype, attribute combination).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A tensor operation failed.
    #[error("{0}")]
    Tensor(#[from] TensorError),
    /// An attribute error from the IR.
    #[error("{0}")]
    Ir(#[from] hb_ir::IrError),
}

/// Shorthand to build an [`OpError::Invalid`].
#[macro_export]
macro_rules! invalid {
    ($($t:tt)*) => { $crate::OpError::Invalid(format!($($t)*)) };
}

/// Shorthand to build an [`OpError::Unsupported`].
#[macro_export]
macro_rules! unsupported {
    ($($t:tt)*) => { $crate::OpError::Unsupported(format!($($t)*)) };
}

/// Errors of preparing or running a model.
#[derive(Debug, thiserror::Error)]
pub enum FloatError {
    /// The model has ops the interpreter cannot run.
    #[error("node '{node}' has op {op}, which the float interpreter does not implement{more}")]
    UnsupportedOp {
        /// First such node.
        node: String,
        /// Its op (with domain when not ai.onnx).
        op: String,
        /// Text naming further unsupported ops, if any.
        more: String,
    },
    /// A kernel failed.
    #[error("node '{node}' ({op}): {source}")]
    Node {
        /// Node name.
        node: String,
        /// Op type.
        op: String,
        /// Cause.
        source: OpError,
    },
    /// A model input is missing, or has the wrong type or shape.
    #[error("input '{name}': {msg}")]
    Input {
        /// Input name.
        name: String,
        /// What is wrong.
        msg: String,
    },
    /// The graph is malformed.
    #[error("{0}")]
    Graph(String),
    /// A hook failed.
    #[error("hook: {0}")]
    Hook(String),
}

/// Result alias for kernels.
pub type OpResult<T> = std::result::Result<T, OpError>;
