//! `hb-compile`: compile a `.bc` integer program into a deployable `.hbm`.

use clap::Parser;
use hb_tools::cli::{parse_args, run_tool, ToolError};
use hb_tools::compile_tool::{default_output, render, run};
use std::path::PathBuf;
use std::process::ExitCode;

/// Compile the fixed-point program written by hb-calib (`*_quantized_model.bc`)
/// into a deployable `.hbm`: fusion (Conv+Relu/Clip, Conv+Add), BPU/CPU
/// placement and subgraphs, removal of boundary nodes, weight packing for the
/// fast kernels, memory plan. The .hbm computes bit for bit what the .bc does.
///
/// Examples:
///   hb-compile work/m_quantized_model.bc -o work/m.hbm
///   hb-compile work/m_quantized_model.bc -o work/m.hbm --optimize-level O1 --json
///   hb-compile m.bc -o m.hbm --remove-node-type Quantize,Dequantize
#[derive(Parser)]
#[command(name = "hb-compile", version, verbatim_doc_comment)]
struct Args {
    /// The `.bc` program.
    model: PathBuf,
    /// The `.hbm` to write (default: next to the input).
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// O0 (no fusion), O1 (Conv+Relu/Clip), O2 (also Conv+Add).
    #[arg(long, alias = "optimize_level", default_value = "O2")]
    optimize_level: String,
    /// Boundary op types to remove (Quantize, Dequantize); default: the config's remove_node_type.
    #[arg(long, alias = "remove_node_type", value_delimiter = ',')]
    remove_node_type: Vec<String>,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args: Args = match parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    run_tool("hb-compile", move || {
        let out = args
            .output
            .clone()
            .unwrap_or_else(|| default_output(&args.model));
        let s = run(
            &args.model,
            &out,
            &args.optimize_level,
            &args.remove_node_type,
        )?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&s).map_err(ToolError::input)?
            );
        } else {
            print!("{}", render(&s));
        }
        Ok(())
    })
}
