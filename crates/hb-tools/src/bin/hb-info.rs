//! `hb-info`: what is inside a model.

use clap::Parser;
use hb_tools::calib_info::{compare, render, render_calibration, summarize_calibration};
use hb_tools::cli::{load_model, parse_args, run_tool, ToolError};
use hb_tools::info::{render_text, summarize};
use hb_tools::inputs::read_inputs;
use std::path::PathBuf;
use std::process::ExitCode;

/// Describe a model: versions, inputs/outputs, op types, parameters, and the ops hbkit cannot run.
/// For a calibrated model (HzCalibration nodes), also the calibration summary and, with -c,
/// how far its outputs are from float on the given inputs.
///
/// Examples:
///   hb-info model.onnx
///   hb-info model.onnx --json > info.json
///   hb-info work/m_calibrated_model.onnx -c a.npy,b.npy
///   hb-info work/m_calibrated_model.onnx -c fixtures/sem_decoder/test -v
#[derive(Parser)]
#[command(name = "hb-info", version, verbatim_doc_comment)]
struct Args {
    /// The model (.onnx, .bc or .hbm).
    model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Inputs to compare the calibrated model against float on: `a.npy,b.npy`,
    /// `name:a.npy,...`, or a folder `<dir>/<input>/<k>.npy` (every sample).
    #[arg(short = 'c', long = "compare")]
    compare: Option<String>,
    /// Also list every calibration node with its thresholds.
    #[arg(short = 'v', long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args: Args = match parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    run_tool("hb-info", move || {
        if hb_tools::prog::is_program(&args.model) {
            return hb_tools::prog_info::print(&args.model, args.json);
        }
        let model = load_model(&args.model)?;
        let summary = summarize(
            &args.model.display().to_string(),
            &model,
            hb_float::Registry::shared(),
        );
        let cal = summarize_calibration(&model);
        let calibrated = !cal.nodes.is_empty();
        let comparison = match &args.compare {
            Some(spec) if calibrated => {
                let samples = read_inputs(&model.graph, spec)?;
                Some((compare(&model, &samples)?, samples.len()))
            }
            Some(_) => {
                return Err(ToolError::input(format!(
                    "{}: -c needs a calibrated model (with HzCalibration nodes); this one has none",
                    args.model.display()
                )))
            }
            None => None,
        };
        if args.json {
            let v = serde_json::json!({
                "model": summary,
                "calibration": calibrated.then_some(&cal),
                "comparison": comparison.as_ref().map(|c| &c.0),
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&v).map_err(ToolError::input)?
            );
        } else {
            print!("{}", render_text(&summary));
            match &comparison {
                Some((rows, n)) => print!("{}", render(rows, &cal, args.verbose, *n)),
                None if calibrated => print!("{}", render_calibration(&cal, args.verbose)),
                None => {}
            }
        }
        Ok(())
    })
}
