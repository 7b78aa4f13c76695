//! `hb-info`: what is inside a model.

use clap::Parser;
use hb_tools::cli::{load_model, parse_args, run_tool, ToolError};
use hb_tools::info::{render_text, summarize};
use std::path::PathBuf;
use std::process::ExitCode;

/// Describe a model: versions, inputs/outputs, op types, parameters, and the ops hbkit cannot run.
///
/// Examples:
///   hb-info model.onnx
///   hb-info model.onnx --json > info.json
#[derive(Parser)]
#[command(name = "hb-info", version, verbatim_doc_comment)]
struct Args {
    /// The model (.onnx).
    model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args: Args = match parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    run_tool("hb-info", move || {
        let model = load_model(&args.model)?;
        let summary = summarize(
            &args.model.display().to_string(),
            &model,
            &hb_float::Registry::standard(),
        );
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).map_err(ToolError::input)?
            );
        } else {
            print!("{}", render_text(&summary));
        }
        Ok(())
    })
}
