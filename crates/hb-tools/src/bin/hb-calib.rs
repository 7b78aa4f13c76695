//! `hb-calib`: Horizon-style PTQ calibration.

use clap::Parser;
use hb_tools::calib::{render_summary, run, CalibArgs};
use hb_tools::cli::{parse_args, run_tool, ToolError};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Calibrate a float ONNX model from a Horizon-style YAML config.
///
/// Writes <working_dir>/<prefix>_original_float_model.onnx,
/// _optimized_float_model.onnx, _calibrated_model.onnx (HzCalibration
/// nodes) and hb_calib.log (per-node and per-output tables, traps met).
///
/// Examples:
///   hb-calib --config fixtures/digits_cnn/model.yaml
///   hb-calib --config model.yaml --output-dir out --json
///   hb-calib --config model.yaml --export-qdq out/model_qdq.onnx
#[derive(Parser)]
#[command(name = "hb-calib", version, verbatim_doc_comment)]
struct Args {
    /// The YAML config (model_parameters, input_parameters, calibration_parameters, compiler_parameters).
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// Write the artefacts here instead of the config's working_dir.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Print a JSON summary instead of text (no progress bars).
    #[arg(long)]
    json: bool,
    /// Also write the calibrated model as QuantizeLinear/DequantizeLinear ONNX (runs in onnxruntime).
    #[arg(long)]
    export_qdq: Option<PathBuf>,
    /// Use only the first N calibration samples.
    #[arg(long)]
    num_samples: Option<usize>,
    /// Calibration samples that score each candidate of the search.
    #[arg(long, default_value_t = 10)]
    search_samples: usize,
}

fn main() -> ExitCode {
    let args: Args = match parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    run_tool("hb-calib", move || {
        let ca = CalibArgs {
            config: args.config.clone(),
            output_dir: args.output_dir.clone(),
            num_samples: args.num_samples,
            search_samples: args.search_samples,
            export_qdq: args.export_qdq.clone(),
            progress: !args.json && std::io::stderr().is_terminal(),
        };
        // On a worker of the pool: the memory the load, the optimisation
        // and its shape-inference run free is reused by that worker's
        // share of the statistics instead of fresh pages (each new page
        // costs ~2.5 µs to fault, zero and return on a VM).
        let summary = rayon::scope(|_| run(&ca))?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).map_err(ToolError::input)?
            );
        } else {
            print!("{}", render_summary(&summary));
        }
        Ok(())
    })
}
