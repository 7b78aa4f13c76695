//! The integer program format shared by `.bc` (the reference fixed-point
//! program) and `.hbm` (the compiled deployable): our own protobuf schema
//! (`proto/program.proto`, compiled by prost into [`pb`]; regenerate with
//! `cargo xtask codegen`), behind a 16-byte header:
//!
//! | bytes | content |
//! |---|---|
//! | 0..8 | magic `HBKITBC\0` (.bc) or `HBKITHBM` (.hbm) |
//! | 8..12 | format version, u32 LE ([`FORMAT_VERSION`]) |
//! | 12..16 | payload length, u32 LE |
//!
//! - [`decode`] / [`load`] check the header, the version and the payload and
//!   validate every tensor id, dtype and constant size, so a corrupt,
//!   truncated or foreign file is a one-line [`ProgramError`].
//! - [`prepared`] turns each op into a ready-to-run kernel description
//!   (tables rebuilt, parameters checked, naming the op on error).
//! - [`interp`] is the plain reference interpreter (reference kernels);
//!   [`crate::engine`] is the optimised runtime of `.hbm` files.
//! - Float CPU ops are executed by the host through [`CpuOps`]: this crate
//!   never depends on the ONNX side (hb-lower provides the implementation
//!   backed by hb-float).

pub mod consts;
pub mod interp;
pub mod memplan;
#[allow(clippy::all, missing_docs, rustdoc::all)]
pub mod pb;
pub mod prepared;
pub mod refexec;

use hb_tensor::{DType, Tensor};
use prost::Message;
use std::path::Path;

/// Version of the file format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Magic of a `.bc` file.
pub const MAGIC_BC: &[u8; 8] = b"HBKITBC\0";
/// Magic of a `.hbm` file.
pub const MAGIC_HBM: &[u8; 8] = b"HBKITHBM";
/// Header length.
pub const HEADER_LEN: usize = 16;

/// What can go wrong reading, checking or running a program.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a program file, or a damaged one.
    #[error("{path}: {msg}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// Written by another format version.
    #[error("{path}: format version {found} is not supported (this build reads version {supported}); recompile the model with this hbkit")]
    Version {
        /// The file.
        path: String,
        /// The file's version.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The program is structurally invalid.
    #[error("invalid program: {0}")]
    Invalid(String),
    /// An op failed (bad parameters or shapes).
    #[error("op '{op}' ({op_type}): {msg}")]
    Op {
        /// Op name.
        op: String,
        /// Op type.
        op_type: String,
        /// What went wrong.
        msg: String,
    },
    /// The caller's inputs do not fit the program.
    #[error("{0}")]
    Input(String),
}

/// Result with [`ProgramError`].
pub type Result<T> = std::result::Result<T, ProgramError>;

pub use pb::Program;

/// Executes the float ops a program leaves on the CPU (`Op.kind = cpu`).
/// `op` is the index of the op in `Program.ops`; inputs are in the op's
/// order (`None` for omitted optional inputs); one output per op output.
pub trait CpuOps: Sync {
    /// Runs CPU op `op`.
    fn run(
        &self,
        op: usize,
        inputs: &[Option<&Tensor>],
    ) -> std::result::Result<Vec<Tensor>, String>;
}

/// A [`CpuOps`] for programs without CPU ops: every call fails.
pub struct NoCpu;

impl CpuOps for NoCpu {
    fn run(&self, op: usize, _: &[Option<&Tensor>]) -> std::result::Result<Vec<Tensor>, String> {
        Err(format!(
            "op #{op} runs on the CPU, but no CPU backend was given"
        ))
    }
}

/// The file magic of a program kind.
pub fn magic_of(kind: pb::ProgramKind) -> &'static [u8; 8] {
    match kind {
        pb::ProgramKind::Hbm => MAGIC_HBM,
        _ => MAGIC_BC,
    }
}

/// Header + protobuf payload.
pub fn encode(p: &Program) -> Vec<u8> {
    let mut out = header(p).to_vec();
    out.extend_from_slice(&p.encode_to_vec());
    out
}

/// The file header of `p`: magic, format version, payload length.
fn header(p: &Program) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(magic_of(p.kind()));
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(p.encoded_len() as u32).to_le_bytes());
    h
}

/// Parses and validates a program file's bytes (`path` names it in errors).
pub fn decode(bytes: &[u8], path: &str) -> Result<Program> {
    let fmt = |msg: String| ProgramError::Format {
        path: path.to_string(),
        msg,
    };
    if bytes.len() < HEADER_LEN {
        return Err(fmt(format!(
            "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    let magic = &bytes[..8];
    let kind = if magic == MAGIC_BC {
        pb::ProgramKind::Bc
    } else if magic == MAGIC_HBM {
        pb::ProgramKind::Hbm
    } else {
        return Err(fmt("not an hbkit .bc/.hbm program (bad magic)".into()));
    };
    let word = |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let version = word(8);
    if version != FORMAT_VERSION {
        return Err(ProgramError::Version {
            path: path.to_string(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let len = word(12) as usize;
    let body = &bytes[HEADER_LEN..];
    if body.len() < len {
        return Err(fmt(format!(
            "truncated: header announces {len} payload bytes, file has {}",
            body.len()
        )));
    }
    if body.len() > len {
        return Err(fmt(format!(
            "{} unexpected bytes after the payload",
            body.len() - len
        )));
    }
    let p = Program::decode(body).map_err(|e| fmt(format!("corrupt payload ({e})")))?;
    if p.version != version || p.kind() != kind {
        return Err(fmt(
            "corrupt payload (version or kind disagrees with the header)".into(),
        ));
    }
    validate(&p).map_err(|e| fmt(format!("corrupt program: {e}")))?;
    Ok(p)
}

/// Reads and validates a program file.
pub fn load(path: &Path) -> Result<Program> {
    let bytes = std::fs::read(path).map_err(|source| ProgramError::Io {
        path: path.display().to_string(),
        source,
    })?;
    decode(&bytes, &path.display().to_string())
}

/// Writes a program atomically (temp file + rename), the bytes of
/// [`encode`] streamed into the file rather than built in memory first.
pub fn save(p: &Program, path: &Path) -> Result<()> {
    let io = |source| hb_tensor::TensorError::Io {
        path: path.display().to_string(),
        source,
    };
    hb_tensor::io::write_atomic(path, |w| {
        w.write_all(&header(p)).map_err(io)?;
        let mut sink = hb_tensor::write_sink::WriteSink::new(w);
        p.encode(&mut sink)
            .map_err(|e| io(std::io::Error::other(e)))?;
        sink.finish().map_err(io)
    })
    .map_err(|e| ProgramError::Format {
        path: path.display().to_string(),
        msg: e.to_string(),
    })
}

/// The element type of a tensor description.
pub fn dtype_of(t: &pb::TensorInfo) -> Result<DType> {
    DType::from_onnx_code(t.dtype).ok_or_else(|| {
        ProgramError::Invalid(format!("tensor '{}': dtype code {}", t.name, t.dtype))
    })
}

/// The shape of a tensor description.
pub fn shape_of(t: &pb::TensorInfo) -> Vec<usize> {
    t.shape.iter().map(|&d| d as usize).collect()
}

/// Checks ids, dtypes and constant sizes.
pub fn validate(p: &Program) -> std::result::Result<(), String> {
    let n = p.tensors.len();
    for t in &p.tensors {
        let dt = DType::from_onnx_code(t.dtype)
            .ok_or_else(|| format!("tensor '{}' has unknown dtype code {}", t.name, t.dtype))?;
        let numel = t
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|&v| v < (1u64 << 40))
            .ok_or_else(|| format!("tensor '{}' has an absurd shape {:?}", t.name, t.shape))?;
        if t.is_const {
            let want = numel as usize * consts::stored_size(dt);
            if t.data.len() != want {
                return Err(format!(
                    "constant '{}' holds {} bytes, its shape {:?} needs {want}",
                    t.name,
                    t.data.len(),
                    t.shape
                ));
            }
        }
    }
    let check = |id: u64, what: &str| {
        if (id as usize) < n {
            Ok(())
        } else {
            Err(format!(
                "{what} refers to tensor #{id}, the program has {n}"
            ))
        }
    };
    for &i in p.inputs.iter().chain(&p.outputs) {
        check(u64::from(i), "a model input/output")?;
    }
    for op in &p.ops {
        for &i in &op.inputs {
            if i >= 0 {
                check(i as u64, &format!("op '{}'", op.name))?;
            } else if i != -1 {
                return Err(format!("op '{}' has input id {i}", op.name));
            }
        }
        for &o in &op.outputs {
            check(u64::from(o), &format!("op '{}'", op.name))?;
        }
        if op.kind.is_none() {
            return Err(format!("op '{}' has no kind", op.name));
        }
        for post in &op.post {
            if let Some(pb::post_op::Kind::Add(a)) = &post.kind {
                check(u64::from(a.other), &format!("op '{}' (fused add)", op.name))?;
            }
        }
    }
    Ok(())
}

/// Element count of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}
