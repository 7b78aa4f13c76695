//! `hb-verifier`: compare two models on the same inputs.

use clap::Parser;
use hb_tools::cli::{parse_args, run_tool, ToolError};
use hb_tools::verifier::{render, run, VerifyArgs};
use std::path::PathBuf;
use std::process::ExitCode;

/// Compare two models on the same inputs.
///
/// float / calibrated ONNX vs anything: per-output cosine, L1, L2, Chebyshev
/// (fails below --min-cosine). Two programs (.bc vs .hbm, .hbm vs .hbm):
/// consistency per output (mismatched elements at --compare-digits decimals,
/// max abs / rel error); any mismatch fails. Exit 0 pass, 1 fail, 2 bad input.
///
/// Examples:
///   hb-verifier -m work/m_quantized_model.bc,work/m.hbm -i x.npy
///   hb-verifier -m model.onnx,work/m_calibrated_model.onnx -i fixtures/digits_cnn/test
///   hb-verifier -m a.hbm,b.hbm -i image:x.npy --all-nodes --json
#[derive(Parser)]
#[command(name = "hb-verifier", version, verbatim_doc_comment)]
struct Args {
    /// The two models: A,B (.onnx, .bc, .hbm).
    #[arg(short = 'm', long = "model", value_delimiter = ',', required = true)]
    models: Vec<PathBuf>,
    /// Inputs: a.npy[,b.npy], name:path, or a folder <dir>/<input>/<k>.npy; repeatable.
    #[arg(short = 'i', long = "input", required = true)]
    inputs: Vec<String>,
    /// Decimal digits compared by the consistency check.
    #[arg(
        short = 'c',
        long = "compare-digits",
        alias = "compare_digits",
        default_value_t = 5
    )]
    compare_digits: u32,
    /// Also compare every tensor both models share; name the first that diverges.
    #[arg(long)]
    all_nodes: bool,
    /// Lowest acceptable cosine of a similarity comparison.
    #[arg(long, default_value_t = 0.99)]
    min_cosine: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args: Args = match parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    run_tool("hb-verifier", move || {
        let va = VerifyArgs {
            models: args.models.clone(),
            inputs: args.inputs.clone(),
            digits: args.compare_digits,
            all_nodes: args.all_nodes,
            min_cosine: args.min_cosine,
        };
        let r = run(&va)?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&r).map_err(ToolError::input)?
            );
        } else {
            print!("{}", render(&r, args.all_nodes));
        }
        if r.ok {
            Ok(())
        } else {
            Err(ToolError::failed("the models disagree (see above)"))
        }
    })
}
