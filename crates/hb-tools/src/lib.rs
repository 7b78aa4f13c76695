//! Shared library part of the hbkit command-line tools: error/exit-code
//! handling, input-file parsing, model summaries and output writing. The
//! binaries in `src/bin/` only parse arguments and call into here.

pub mod calib;
pub mod calib_bc;
pub mod calib_data;
pub mod calib_info;
pub mod cli;
pub mod compile_tool;
pub mod debugger;
pub mod exec;
pub mod heap;
pub mod info;
pub mod inputs;
pub mod names;
pub mod prog;
pub mod prog_exec;
pub mod prog_info;
pub mod verifier;
