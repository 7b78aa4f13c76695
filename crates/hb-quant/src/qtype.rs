//! Quantization types and target architectures.

use std::fmt;

/// How a tensor (or a node's input) is represented after quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QType {
    /// Symmetric 8-bit integer (the default).
    Int8,
    /// Symmetric 16-bit integer.
    Int16,
    /// IEEE half float (nash targets only).
    Float16,
    /// Float32: the node runs unquantized (on the CPU).
    Float32,
}

impl QType {
    /// Parses `int8`, `int16`, `float16`, `float32` (case-insensitive).
    pub fn parse(s: &str) -> Option<QType> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "int8" => QType::Int8,
            "int16" => QType::Int16,
            "float16" => QType::Float16,
            "float32" | "float" => QType::Float32,
            _ => return None,
        })
    }

    /// The valid spellings, for messages.
    pub const NAMES: &'static [&'static str] = &["int8", "int16", "float16", "float32"];
}

impl fmt::Display for QType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QType::Int8 => "int8",
            QType::Int16 => "int16",
            QType::Float16 => "float16",
            QType::Float32 => "float32",
        })
    }
}

/// A Horizon BPU architecture (`march`); it decides which qtypes are legal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum March {
    /// X3 (`bernoulli2`): int8 only.
    Bernoulli2,
    /// J5 / X5 (`bayes`, `bayes-e`): int8, int16, float32.
    Bayes(String),
    /// S100 family (`nash-e`, `nash-m`, `nash-p`, ...): int8, int16, float16, float32.
    Nash(String),
}

impl March {
    /// Parses a `march` value.
    pub fn parse(s: &str) -> Option<March> {
        let l = s.trim().to_ascii_lowercase();
        match l.as_str() {
            "bernoulli2" | "bernoulli" => Some(March::Bernoulli2),
            _ if l.starts_with("bayes") => Some(March::Bayes(l)),
            _ if l.starts_with("nash") => Some(March::Nash(l)),
            _ => None,
        }
    }

    /// Whether `q` may be used on this architecture.
    pub fn allows(&self, q: QType) -> bool {
        match self {
            March::Bernoulli2 => matches!(q, QType::Int8 | QType::Float32),
            March::Bayes(_) => q != QType::Float16,
            March::Nash(_) => true,
        }
    }

    /// The name as written in configs.
    pub fn name(&self) -> &str {
        match self {
            March::Bernoulli2 => "bernoulli2",
            March::Bayes(s) | March::Nash(s) => s,
        }
    }
}

impl Default for March {
    fn default() -> Self {
        March::Nash("nash-e".into())
    }
}
