//! The tools' integration tests, linked into one binary: each former test
//! file is a module here (one link of the whole workspace instead of eleven,
//! which keeps a clean `cargo test --workspace` small and quick).

mod common;
mod debugger_common;

mod bad_input;
mod calib_acceptance;
mod calib_bad_input;
mod debugger;
mod debugger_plots;
mod debugger_tune;
mod examples_makefile;
mod half_model;
mod lower_pipeline;
mod moderate_mask;
mod nms_tail;
mod perf_threads;
mod program_bad_input;
mod recurrent_pipeline;
mod shape_branch;
