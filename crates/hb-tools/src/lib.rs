//! Shared library part of the hbkit command-line tools: error/exit-code
//! handling, input-file parsing, model summaries and output writing. The
//! binaries in `src/bin/` only parse arguments and call into here.

pub mod cli;
pub mod exec;
pub mod info;
pub mod inputs;
pub mod names;
