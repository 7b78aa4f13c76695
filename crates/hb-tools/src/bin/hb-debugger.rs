//! `hb-debugger`: sensitivity, per-layer comparison, diagnosis and editing
//! of calibrated models (hmct-debugger's subcommands).

use hb_tools::cli::{parse_args, run_tool};
use hb_tools::debugger::{run, DebuggerArgs};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: DebuggerArgs = match parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    run_tool("hb-debugger", move || run(args))
}
