//! `hb-model-exec`: run, time and dump a model (mirrors hrt_model_exec).

use clap::{Parser, Subcommand};
use hb_float::Session;
use hb_tools::cli::{load_model, parse_args, run_tool, ToolError, ToolResult};
use hb_tools::exec::{inputs_or_synthetic, perf, run_samples, thread_pool, write_results};
use hb_tools::info::{render_text, summarize};
use std::path::PathBuf;
use std::process::ExitCode;

/// Run a model on input files, time it, dump every node's output.
///
/// Examples:
///   hb-model-exec infer --model-file m.onnx --input-file x.npy --output-dir out/
///   hb-model-exec infer --model-file m.onnx --input-file image:x.npy,mask:m.npy --output-dir out/ --dump-intermediate
///   hb-model-exec infer --model-file m.onnx --input-file fixtures/digits_cnn/test --output-dir out/
///   hb-model-exec perf --model-file m.onnx --frame-count 200 --thread-num 1
///   hb-model-exec model-info --model-file m.onnx
/// Horizon spellings (--model_file, --input_file, model_info, ...) are accepted.
#[derive(Parser)]
#[command(name = "hb-model-exec", version, verbatim_doc_comment)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Common {
    /// The model (.onnx, .bc or .hbm).
    #[arg(long, alias = "model_file")]
    model_file: PathBuf,
    /// Inputs: `a.npy,b.npy` (model input order), `name:a.npy,...`, or a folder of `<input>/<k>.npy`.
    #[arg(long, alias = "input_file")]
    input_file: Option<String>,
    /// Compute threads (default: all cores).
    #[arg(long, alias = "thread_num")]
    thread_num: Option<usize>,
    /// Run the graph exactly as stored (no BatchNormalization folding,
    /// Identity removal or constant folding).
    #[arg(long)]
    no_optimize: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run and write each output as `<output-dir>/<output>.npy`.
    Infer {
        #[command(flatten)]
        common: Common,
        /// Where outputs are written.
        #[arg(long, alias = "output_dir", default_value = "output")]
        output_dir: PathBuf,
        /// Also write every node's outputs to `<output-dir>/intermediate/`.
        #[arg(long, alias = "dump_intermediate", num_args = 0..=1, default_missing_value = "1")]
        dump_intermediate: Option<u8>,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Time repeated runs (synthetic inputs when --input-file is absent).
    Perf {
        #[command(flatten)]
        common: Common,
        /// Number of timed runs.
        #[arg(long, alias = "frame_count", default_value_t = 200)]
        frame_count: usize,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
        /// Also time every node and write a CSV (sorted by time) here.
        #[arg(long, alias = "profile_path")]
        profile_path: Option<PathBuf>,
    },
    /// Describe the model's inputs and outputs.
    #[command(alias = "model_info")]
    ModelInfo {
        /// The model (.onnx).
        #[arg(long, alias = "model_file")]
        model_file: PathBuf,
    },
}

fn main() -> ExitCode {
    let args: Args = match parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    run_tool("hb-model-exec", move || match args.cmd {
        Cmd::Infer {
            common,
            output_dir,
            dump_intermediate,
            json,
        } => infer(common, output_dir, dump_intermediate.unwrap_or(0) > 0, json),
        Cmd::Perf {
            common,
            frame_count,
            json,
            profile_path,
        } => perf_cmd(common, frame_count, json, profile_path),
        Cmd::ModelInfo { model_file } if hb_tools::prog::is_program(&model_file) => {
            hb_tools::prog_exec::model_info(&model_file)
        }
        Cmd::ModelInfo { model_file } => {
            let model = load_model(&model_file)?;
            print!(
                "{}",
                render_text(&summarize(
                    &model_file.display().to_string(),
                    &model,
                    hb_float::Registry::shared()
                ))
            );
            Ok(())
        }
    })
}

fn prepare(
    common: &Common,
) -> ToolResult<(Session, Vec<hb_tools::inputs::Sample>, rayon::ThreadPool)> {
    let mut model = load_model(&common.model_file)?;
    let samples = inputs_or_synthetic(&model, common.input_file.as_deref())?;
    if !common.no_optimize {
        // Dynamic dims every sample fills alike are fixed first, so shape
        // arithmetic (and an `If` on shapes) folds as it does in hb-calib.
        hb_tools::exec::fix_dynamic_inputs(&mut model, &samples);
        hb_tools::exec::optimize(&mut model)
            .map_err(|e| ToolError::input(format!("{}: {e}", common.model_file.display())))?;
    }
    let session = Session::new(&model)
        .map_err(|e| ToolError::input(format!("{}: {e}", common.model_file.display())))?;
    Ok((session, samples, thread_pool(common.thread_num)?))
}

fn infer(common: Common, out: PathBuf, dump: bool, json: bool) -> ToolResult<()> {
    if common.input_file.is_none() {
        return Err(ToolError::input("infer needs --input-file"));
    }
    if hb_tools::prog::is_program(&common.model_file) {
        let pool = thread_pool(common.thread_num)?;
        let spec = common.input_file.as_deref().unwrap_or_default();
        return hb_tools::prog_exec::infer(&common.model_file, spec, &out, dump, json, &pool);
    }
    let (session, samples, pool) = prepare(&common)?;
    let results = run_samples(&session, &samples, dump, &pool)
        .map_err(|e| ToolError::input(format!("{}: {}", common.model_file.display(), e.message)))?;
    let files = write_results(&out, &results)?;
    if json {
        let outputs: Vec<serde_json::Value> = results[0]
            .outputs
            .iter()
            .map(|(n, t)| serde_json::json!({"name": n, "dtype": t.dtype().to_string(), "shape": t.shape()}))
            .collect();
        let report = serde_json::json!({"samples": results.len(), "outputs": outputs, "files_written": files.len(), "output_dir": out});
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(ToolError::input)?
        );
    } else {
        for (n, t) in &results[0].outputs {
            println!("output {n}: {}", t.describe());
        }
        println!(
            "{} sample(s), {} file(s) written to {}",
            results.len(),
            files.len(),
            out.display()
        );
    }
    Ok(())
}

fn perf_cmd(
    common: Common,
    frames: usize,
    json: bool,
    profile_path: Option<PathBuf>,
) -> ToolResult<()> {
    let prog = hb_tools::prog::is_program(&common.model_file);
    let (r, summary) = if prog {
        let pool = thread_pool(common.thread_num)?;
        hb_tools::prog_exec::perf(
            &common.model_file,
            common.input_file.as_deref(),
            frames,
            &pool,
            profile_path.as_deref(),
        )?
    } else {
        perf_onnx(&common, frames, profile_path)?
    };
    // With --json, stdout is the JSON report alone.
    if let Some(text) = summary {
        if json {
            eprintln!("{text}");
        } else {
            println!("{text}\n");
        }
    }
    print_perf(&r, json)
}

fn perf_onnx(
    common: &Common,
    frames: usize,
    profile_path: Option<PathBuf>,
) -> ToolResult<(hb_tools::exec::PerfReport, Option<String>)> {
    let (session, samples, pool) = prepare(common)?;
    let summary = match profile_path {
        Some(csv) => {
            let by_op = hb_tools::exec::profile(&session, &samples[0], frames, &pool, &csv)?;
            Some(format!(
                "time per op type (node profile written to {}):\n{}",
                csv.display(),
                by_op.trim_end()
            ))
        }
        None => None,
    };
    Ok((perf(&session, &samples[0], frames, &pool)?, summary))
}

fn print_perf(r: &hb_tools::exec::PerfReport, json: bool) -> ToolResult<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(r).map_err(ToolError::input)?
        );
    } else {
        println!("Running condition:\n  Thread number is: {}\n  Frame count   is: {}\n  Program run time: {:.3} ms", r.threads, r.frame_count, r.total_ms);
        println!("Perf result:\n  Frame totally latency is: {:.3} ms\n  Average    latency    is: {:.3} ms\n  Median     latency    is: {:.3} ms\n  Frame      rate       is: {:.3} FPS", r.total_ms, r.average_ms, r.median_ms, r.fps);
    }
    Ok(())
}
