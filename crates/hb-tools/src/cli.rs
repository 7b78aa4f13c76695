//! Exit codes and the error type every tool returns.
//!
//! Exit codes: 0 success, 1 a comparison failed its threshold, 2 bad input
//! or usage. Errors print as ONE line: `<tool>: error: <message>`.

use std::process::ExitCode;

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct ToolError {
    /// Process exit code.
    pub code: u8,
    /// One-line message.
    pub message: String,
}

impl ToolError {
    /// Bad input or usage (exit 2).
    pub fn input(msg: impl std::fmt::Display) -> Self {
        ToolError {
            code: 2,
            message: one_line(&msg.to_string()),
        }
    }

    /// A comparison failed (exit 1).
    pub fn failed(msg: impl std::fmt::Display) -> Self {
        ToolError {
            code: 1,
            message: one_line(&msg.to_string()),
        }
    }
}

impl<E: std::error::Error> From<E> for ToolError {
    fn from(e: E) -> Self {
        ToolError::input(e)
    }
}

/// Result type of tool entry points.
pub type ToolResult<T> = Result<T, ToolError>;

fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs a tool body under the binaries' heap policy
/// ([`crate::heap::keep_freed_memory`]; huge pages with `HB_HUGE_PAGES=1`,
/// [`crate::heap::advise_huge_pages_everywhere`]): prints errors as one line, maps
/// them (and panics) to exit codes, and ends the process (see
/// [`exit_now`]).
pub fn run_tool(tool: &str, body: impl FnOnce() -> ToolResult<()> + std::panic::UnwindSafe) -> ! {
    crate::heap::keep_freed_memory();
    crate::heap::advise_huge_pages_everywhere();
    std::panic::set_hook(Box::new(|_| {}));
    let code = match std::panic::catch_unwind(body) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("{tool}: error: {}", e.message);
            e.code
        }
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown".into());
            eprintln!(
                "{tool}: error: internal error (please report): {}",
                one_line(&msg)
            );
            2
        }
    };
    exit_now(code)
}

/// Ends the process with `code` once stdout and stderr are flushed, without
/// the exit-time handlers and destructors: tearing the heap and the worker
/// pool down is work the kernel does anyway when it takes the address
/// space back. Files are complete by then: every artefact is written,
/// renamed into place and closed before the body returns.
fn exit_now(code: u8) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    #[cfg(target_os = "linux")]
    // SAFETY: `_exit` only ends the process; nothing runs after it.
    unsafe {
        libc::_exit(i32::from(code))
    }
    #[cfg(not(target_os = "linux"))]
    std::process::exit(i32::from(code))
}

/// Loads a model with a message that names the file.
pub fn load_model(path: &std::path::Path) -> ToolResult<hb_ir::Model> {
    if !path.exists() {
        return Err(ToolError::input(format!(
            "{}: no such file",
            path.display()
        )));
    }
    hb_ir::load_model(path).map_err(ToolError::input)
}

/// Parses clap arguments, mapping usage errors to exit code 2 (help/version to 0).
pub fn parse_args<T: clap::Parser>() -> Result<T, ExitCode> {
    match T::try_parse() {
        Ok(a) => Ok(a),
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            Err(ExitCode::from(code))
        }
    }
}
