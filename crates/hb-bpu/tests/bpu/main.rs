//! hb-bpu's integration tests in one binary (one link instead of four).

mod fast_kernels;
mod kernels_vs_float;
mod program_format;
mod requant;
