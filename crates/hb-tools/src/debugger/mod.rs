//! `hb-debugger`: why a calibrated model lost accuracy, and how to fix it.
//! Subcommands and options mirror Horizon's `hmct-debugger` (see
//! docs/hb-debugger.md):
//!
//! - [`sensitivity`]: `get-sensitivity-of-nodes` (reuse of float
//!   activations, downstream-only recomputation, nodes in parallel);
//! - [`compare`]: `compare-per-layer` (cumulative and isolated);
//! - [`analysis`]: `sensitivity-analysis` (promote nodes below a threshold);
//! - [`diagnose`]: named findings with quant_config fixes;
//! - [`edit`]: change calibration nodes without recalibrating;
//! - [`tune`]: automatic mixed precision from a hb-calib YAML (int16 /
//!   ec / float16 / subgraph promotion to a target, quant_config out);
//! - [`plot`]: `plot-distribution`, `get-channelwise-data-distribution`,
//!   `plot-acc-error`, the sensitivity chart and `runall`, as SVG drawn by
//!   [`plot_svg`], with an `index.html` per save folder.

pub mod analysis;
pub mod common;
pub mod compare;
pub mod diagnose;
pub mod edit;
pub mod plot;
pub mod plot_svg;
pub mod sensitivity;
pub mod tune;

use crate::cli::{ToolError, ToolResult};
use clap::{Args, Parser, Subcommand};
use common::{load_samples, to_json, write_text, Calibrated};
use sensitivity::Granularity;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Find and fix the accuracy loss of a calibrated model (hmct-debugger).
///
/// Examples:
///   hb-debugger get-sensitivity-of-nodes out/m_calibrated_model.onnx calib -n node -m cosine-similarity,mse -v -s dbg
///   hb-debugger compare-per-layer out/m_optimized_float_model.onnx out/m_calibrated_model.onnx -d calib --mode isolated -s dbg
///   hb-debugger sensitivity-analysis out/m_calibrated_model.onnx calib -t 0.999,0.9999 --qtype int16 -s dbg
///   hb-debugger diagnose out/m_calibrated_model.onnx calib -s dbg
///   hb-debugger edit out/m_calibrated_model.onnx -o out/m_edit.onnx --op-type Softmax --qtype int16
///   hb-debugger plot-distribution out/m_calibrated_model.onnx calib -n Conv_0,Relu_3 -s dbg
///   hb-debugger get-channelwise-data-distribution out/m_calibrated_model.onnx calib -n Conv_0 -a 1 -s dbg
///   hb-debugger plot-acc-error out/m_calibrated_model.onnx calib --nq Conv_0+Conv_5 -a -s dbg
///   hb-debugger runall out/m_calibrated_model.onnx calib -s dbg
///   hb-debugger tune --config model.yaml --target cosine>=0.99 -s tuned
#[derive(Parser, Debug)]
#[command(name = "hb-debugger", version, verbatim_doc_comment)]
pub struct DebuggerArgs {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Quantize one node at a time (all others float) and score the outputs, worst first.
    #[command(name = "get-sensitivity-of-nodes", alias = "get_sensitivity_of_nodes")]
    Sensitivity(SensitivityArgs),
    /// Per layer, float vs calibrated: qtype, scale, cosine, MSE, L1, KL, SQNR, atol, rtol, ranges.
    #[command(name = "compare-per-layer", alias = "compare_per_layer")]
    Compare(CompareArgs),
    /// Set nodes whose sensitivity is at or below a threshold to a qtype; report outputs before/after.
    #[command(name = "sensitivity-analysis", alias = "sensitivity_analysis")]
    Analysis(AnalysisArgs),
    /// Find the known causes of accuracy loss, name the nodes, suggest quant_config fixes.
    Diagnose(DiagnoseArgs),
    /// Change qtype, thresholds or switch of calibration nodes without recalibrating.
    Edit(EditArgs),
    /// Float vs quantized value histograms of nodes' tensors, threshold and clipping marked (SVG).
    #[command(name = "plot-distribution", alias = "plot_distribution")]
    PlotDistribution(plot::DistributionArgs),
    /// Per-channel box plots (min, q1, median, q3, max) of nodes' tensors (SVG).
    #[command(
        name = "get-channelwise-data-distribution",
        alias = "get_channelwise_data_distribution"
    )]
    Channelwise(plot::ChannelwiseArgs),
    /// Error along graph order with only some nodes quantized, or all but some (SVG + JSON).
    #[command(name = "plot-acc-error", alias = "plot_acc_error")]
    PlotAccError(plot::AccErrorArgs),
    /// Sensitivity, top-5 distributions and channel plots, error curves, index.html.
    Runall(plot::RunallArgs),
    /// Automatic mixed precision: calibrate a YAML, promote sensitive nodes until a target is met, write quant_config.
    Tune(TuneArgs),
}

/// `tune`.
#[derive(Args, Debug, Clone)]
pub struct TuneArgs {
    /// The hb-calib YAML config (model, calibration data, quant_config).
    #[arg(short = 'c', long)]
    pub config: Option<PathBuf>,
    /// What to reach on every output: METRIC>=VALUE or METRIC<=VALUE (cosine>=0.99, mse<=1e-4), or VALUE with --metric.
    #[arg(short = 't', long)]
    pub target: Option<String>,
    /// Metric ranking the nodes (sensitivity); default: the target's (cosine-similarity with --eval-cmd).
    #[arg(short = 'm', long)]
    pub metric: Option<String>,
    /// At most this many int16 nodes.
    #[arg(long = "max-int16")]
    pub max_int16: Option<usize>,
    /// Also allow: ec (error compensation instead of int16 where it applies), float16 (when all-int16 misses), subgraph (an int16 tail subgraph).
    #[arg(long, value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Held-out samples: <dir>/<input>/<k>.npy, or ';'-separated folders (one per input). Default: the 'test' folder beside the calibration data, else the calibration data.
    #[arg(long = "eval-data")]
    pub eval_data: Option<String>,
    /// Use at most this many evaluation samples (0 = all).
    #[arg(long = "eval-num", default_value_t = 0)]
    pub eval_num: usize,
    /// Shell command scoring a step instead of the metric: {outputs} (and {float}) become folders <output>/<k>.npy of the quantized (float) outputs per evaluation sample; it prints one number (last line).
    #[arg(long = "eval-cmd")]
    pub eval_cmd: Option<String>,
    /// Calibration samples for the sensitivity (0 = all).
    #[arg(short = 'd', long = "data-num", default_value_t = 10)]
    pub data_num: usize,
    /// Sensitivity thresholds of the batch steps (default cosine: 0.99,0.999,0.9999,0.99999,0.999999).
    #[arg(long = "thresholds", value_delimiter = ',')]
    pub thresholds: Vec<f64>,
    /// Evaluate every threshold (the tuning guide's table), not only up to the first that meets the target.
    #[arg(long)]
    pub sweep: bool,
    /// At most this many evaluated steps.
    #[arg(long = "max-evals", default_value_t = 80)]
    pub max_evals: usize,
    /// Where to write quant_config.json, tuned.yaml, tune.txt, tune.json.
    #[arg(short = 's', long = "save-dir", default_value = "tune_result")]
    pub save_dir: PathBuf,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Options shared by subcommands that read a calibrated model and data.
#[derive(Args, Debug, Clone)]
pub struct ModelData {
    /// The calibrated model (hb-calib's *_calibrated_model.onnx).
    pub model: PathBuf,
    /// Data folder: <dir>/<input>/<k>.npy (hb-calib's calibration_data, or a fixture's calib/).
    pub data_dir: PathBuf,
    /// Number of samples to use (0 = all).
    #[arg(short = 'd', long = "data-num", default_value_t = 10)]
    pub data_num: usize,
}

impl ModelData {
    fn load(&self) -> ToolResult<(Calibrated, Vec<crate::inputs::Sample>)> {
        let cal = Calibrated::load(&self.model)?;
        let limit = (self.data_num > 0).then_some(self.data_num);
        let samples = load_samples(&cal.model.graph, &self.data_dir, limit)?;
        Ok((cal, samples))
    }
}

/// `get-sensitivity-of-nodes`.
#[derive(Args, Debug)]
pub struct SensitivityArgs {
    #[command(flatten)]
    pub io: ModelData,
    /// What one unit is: node (all its calibration nodes), weight or activation.
    #[arg(short = 'n', long = "node-type", value_enum, default_value = "node")]
    pub node_type: Granularity,
    /// Score at this node's output (or value) instead of the model outputs.
    #[arg(short = 'o', long = "output-node", value_delimiter = ',')]
    pub output_node: Vec<String>,
    /// Metrics (cosine-similarity, mse, mre, sqnr, chebyshev); sorted by the first.
    #[arg(short = 'm', long = "metrics", value_delimiter = ',', num_args = 1.., default_value = "cosine-similarity")]
    pub metrics: Vec<String>,
    /// Only these nodes (model or calibration node names).
    #[arg(short = 'i', long = "interested-nodes", value_delimiter = ',', num_args = 1..)]
    pub interested: Vec<String>,
    /// Print the whole table (otherwise the 20 worst).
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Write sensitivity_<type>.txt, .json, the bar chart .svg and index.html here.
    #[arg(short = 's', long = "save-dir")]
    pub save_dir: Option<PathBuf>,
    /// Re-run the whole model per node (slow; for checking and timing).
    #[arg(long)]
    pub naive: bool,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `compare-per-layer`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The float model (optimized or original); the reference is the calibrated model with every switch OFF, checked against it.
    pub float: PathBuf,
    /// The calibrated model.
    pub calibrated: PathBuf,
    /// Data folder: <dir>/<input>/<k>.npy.
    #[arg(short = 'd', long = "data")]
    pub data: PathBuf,
    /// Samples to use (0 = all).
    #[arg(short = 'n', long = "data-num", default_value_t = 1)]
    pub data_num: usize,
    /// cumulative: every calibration node ON; isolated: only the layer's own inputs quantized, from float.
    #[arg(long, value_enum, default_value = "cumulative")]
    pub mode: compare::Mode,
    /// Compare the float model against this integer program (.bc / .hbm,
    /// made from CALIBRATED) instead of the calibrated simulation: every
    /// layer's dequantized integer output (cumulative).
    #[arg(long = "program", alias = "bc")]
    pub program: Option<PathBuf>,
    /// Row order: graph, or sorted by cosine (worst first).
    #[arg(long, value_enum, default_value = "graph")]
    pub order: compare::Order,
    /// Write compare_per_layer_<mode>.csv and .json here.
    #[arg(short = 's', long = "save-dir")]
    pub save_dir: Option<PathBuf>,
    /// Print every column.
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `sensitivity-analysis`.
#[derive(Args, Debug)]
pub struct AnalysisArgs {
    #[command(flatten)]
    pub io: ModelData,
    /// Sensitivity unit.
    #[arg(short = 'n', long = "node-type", value_enum, default_value = "node")]
    pub node_type: Granularity,
    /// Thresholds: units whose metric is at or below (worse than) each one are promoted; one row per threshold.
    #[arg(short = 't', long = "threshold", value_delimiter = ',', num_args = 1.., default_value = "0.999")]
    pub thresholds: Vec<f64>,
    /// The qtype promoted units get.
    #[arg(long, default_value = "int16")]
    pub qtype: String,
    /// The metric (sensitivity and outputs).
    #[arg(short = 'm', long = "metric", default_value = "cosine-similarity")]
    pub metric: String,
    /// Write the table, quant_config JSON per threshold and sensitivity here.
    #[arg(short = 's', long = "save-dir")]
    pub save_dir: Option<PathBuf>,
    /// Write the calibrated model of the last threshold here.
    #[arg(short = 'o', long = "output-model")]
    pub output_model: Option<PathBuf>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `diagnose`.
#[derive(Args, Debug)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub io: ModelData,
    /// Write diagnose.txt, diagnose.json and the merged suggested quant_config here.
    #[arg(short = 's', long = "save-dir")]
    pub save_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `edit`.
#[derive(Args, Debug)]
pub struct EditArgs {
    /// The calibrated model.
    pub model: PathBuf,
    /// Where to write the edited model (atomically).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    #[command(flatten)]
    pub select: edit::Selection,
    #[command(flatten)]
    pub change: edit::Change,
    /// Print JSON of what changed.
    #[arg(long)]
    pub json: bool,
}

fn progress(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// Runs a parsed command; prints to stdout.
pub fn run(args: DebuggerArgs) -> ToolResult<()> {
    match args.command {
        Command::Sensitivity(a) => run_sensitivity(a),
        Command::Compare(a) => compare::run_cli(a),
        Command::Analysis(a) => analysis::run_cli(a),
        Command::Diagnose(a) => diagnose::run_cli(a),
        Command::Edit(a) => edit::run_cli(a),
        Command::PlotDistribution(a) => plot::run_distribution(a),
        Command::Channelwise(a) => plot::run_channelwise(a),
        Command::PlotAccError(a) => plot::run_acc_error(a),
        Command::Tune(a) => tune::run_cli(a),
        Command::Runall(a) => {
            let show = progress(false);
            plot::run_all(a, show)
        }
    }
}

fn run_sensitivity(a: SensitivityArgs) -> ToolResult<()> {
    common::check_metrics(&a.metrics)?;
    let (cal, samples) = a.io.load()?;
    let units = sensitivity::units(&cal, a.node_type, &a.interested)?;
    if units.is_empty() {
        return Err(ToolError::input(format!(
            "{}: no {} with calibration nodes to score",
            cal.path.display(),
            a.node_type.name()
        )));
    }
    let opts = sensitivity::SensOptions {
        metrics: a.metrics.clone(),
        targets: sensitivity::resolve_targets(&cal, &a.output_node)?,
        naive: a.naive,
        progress: progress(a.json),
    };
    let s = sensitivity::run(&cal, units, a.node_type, &samples, &opts)?;
    let text = sensitivity::render(&s, None);
    if let Some(dir) = &a.save_dir {
        let stem = format!("sensitivity_{}", a.node_type.name());
        write_text(&dir.join(format!("{stem}.txt")), &text)?;
        write_text(&dir.join(format!("{stem}.json")), &to_json(&s)?)?;
        plot::sensitivity_chart(&s, dir)?;
        plot::write_index(dir)?;
    }
    if a.json {
        println!("{}", to_json(&s)?);
    } else {
        print!(
            "{}",
            sensitivity::render(&s, if a.verbose { None } else { Some(20) })
        );
    }
    Ok(())
}
