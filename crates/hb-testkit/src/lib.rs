//! Test support for hbkit: the ONNX node conformance runner and its
//! allow-list, and fixture discovery.

pub mod fixtures;
pub mod onnx_suite;

use std::path::PathBuf;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}
