//! `hb-calib`: Horizon YAML + calibration data → original, optimized and
//! calibrated models and `hb_calib.log`. Everything is computed first and
//! written at the end (each file atomically), so a failed run leaves nothing
//! behind.

use crate::calib_data::FolderSamples;
use crate::cli::{ToolError, ToolResult};
use crate::exec::optimize;
use crate::names::file_safe;
use hb_ir::{Attr, Model, Node, ValueInfo};
use hb_quant::calibrated::{DOMAIN, PREPROCESS_OP};
use hb_quant::config::{HbConfig, InputParams};
use hb_quant::pipeline::{calibrate_alongside, CalibOutcome, Options, SampleSource};
use hb_quant::plan::effective_quant_config;
use hb_quant::report;
use hb_tensor::io;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Command-line options of `hb-calib` besides the config.
#[derive(Debug, Clone, Default)]
pub struct CalibArgs {
    /// The YAML config.
    pub config: PathBuf,
    /// Overrides `working_dir`.
    pub output_dir: Option<PathBuf>,
    /// Use only the first N calibration samples.
    pub num_samples: Option<usize>,
    /// Samples that score each candidate.
    pub search_samples: usize,
    /// Also write the calibrated model as QDQ ONNX here.
    pub export_qdq: Option<PathBuf>,
    /// Show progress bars.
    pub progress: bool,
}

/// What `hb-calib --json` prints.
#[derive(Debug, Serialize)]
pub struct CalibSummary {
    /// The config file.
    pub config: String,
    /// The model.
    pub model: String,
    /// Files written.
    pub artefacts: Vec<String>,
    /// Calibration samples used.
    pub samples: usize,
    /// Wall time of the whole run (s).
    pub seconds: f64,
    /// Wall time per phase (s).
    pub timings: Vec<(String, f64)>,
    /// The chosen calibration method.
    pub method: String,
    /// Every candidate tried and its score.
    pub candidates: Vec<(String, f64)>,
    /// The metric that scored them.
    pub metric: String,
    /// Calibration nodes per qtype (features and weights).
    pub qtypes: BTreeMap<String, usize>,
    /// Per-output similarity to float (means over the scored samples).
    pub outputs: Vec<report::OutputRow>,
    /// Traps and warnings.
    pub findings: Vec<report::Finding>,
    /// Config keys accepted without effect.
    pub ignored: Vec<String>,
    /// Bias correction per weighted layer (empty unless configured).
    pub bias_correction: Vec<hb_quant::bias::BiasRow>,
}

fn cfg_err(cfg: &Path, e: impl std::fmt::Display) -> ToolError {
    ToolError::input(format!("{}: {e}", cfg.display()))
}

/// The model inputs the config describes, in config order (all model inputs
/// when `input_name` is not given), with their parameters.
fn match_inputs<'a>(
    cfg: &'a HbConfig,
    model: &Model,
) -> ToolResult<Vec<(ValueInfo, Option<&'a InputParams>)>> {
    let named: Vec<&InputParams> = cfg.inputs.iter().filter(|i| i.name.is_some()).collect();
    if named.is_empty() {
        return Ok(model
            .graph
            .inputs
            .iter()
            .enumerate()
            .map(|(k, v)| (v.clone(), cfg.inputs.get(k).or(cfg.inputs.first())))
            .collect());
    }
    let mut out = Vec::new();
    for p in &cfg.inputs {
        let name = p.name.as_deref().unwrap_or_default();
        let v = model
            .graph
            .inputs
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = model.graph.inputs.iter().map(|v| v.name.as_str()).collect();
                cfg_err(
                    &cfg.path,
                    format!(
                        "input_parameters.input_name: '{name}' is not an input of the model (inputs: {})",
                        names.join(", ")
                    ),
                )
            })?;
        out.push((v.clone(), Some(p)));
    }
    if out.len() != model.graph.inputs.len() {
        let missing: Vec<&str> = model
            .graph
            .inputs
            .iter()
            .filter(|v| !out.iter().any(|(o, _)| o.name == v.name))
            .map(|v| v.name.as_str())
            .collect();
        return Err(cfg_err(
            &cfg.path,
            format!(
                "input_parameters.input_name does not list the model input(s) {}",
                missing.join(", ")
            ),
        ));
    }
    Ok(out)
}

/// Applies `input_shape` and adds an HzPreprocess node after each image input.
fn prepare_inputs(cfg: &HbConfig, model: &mut Model) -> ToolResult<Vec<ValueInfo>> {
    let matched = match_inputs(cfg, model)?;
    let mut infos = Vec::new();
    for (info, params) in matched {
        let mut info = info;
        if let Some(p) = params {
            if let Some(shape) = &p.shape {
                let declared = info.shape.as_ref().map_or(0, Vec::len);
                if declared != 0 && declared != shape.len() {
                    return Err(cfg_err(
                        &cfg.path,
                        format!(
                            "input_parameters.input_shape: {shape:?} has rank {} but input '{}' is {}",
                            shape.len(),
                            info.name,
                            info.shape_text()
                        ),
                    ));
                }
                info.shape = Some(shape.iter().map(|&d| hb_ir::Dim::Fixed(d)).collect());
                if let Some(v) = model.graph.inputs.iter_mut().find(|v| v.name == info.name) {
                    *v = info.clone();
                }
            }
            if p.is_image() && p.norm_type != "no_preprocess" {
                add_preprocess(model, &info, p);
            }
        }
        infos.push(info);
    }
    Ok(infos)
}

fn add_preprocess(model: &mut Model, info: &ValueInfo, p: &InputParams) {
    let axis = match p.layout_train.as_deref() {
        Some("NHWC") => 3,
        _ => 1,
    };
    let mean = if p.mean.is_empty() {
        vec![0.0]
    } else {
        p.mean.clone()
    };
    let scale = if !p.std.is_empty() {
        p.std.iter().map(|s| 1.0 / s).collect()
    } else if !p.scale.is_empty() {
        p.scale.clone()
    } else {
        vec![1.0]
    };
    let g = &mut model.graph;
    let out = g.fresh_name(&format!("{}_preprocessed", info.name));
    g.replace_uses(&info.name, &out);
    let name = g.fresh_name(&format!("{}_HzPreprocess", info.name));
    let mut n = Node::new(&name, PREPROCESS_OP, &[&info.name], &[&out]);
    n.domain = DOMAIN.into();
    n.set_attr("mean", Attr::Floats(mean));
    n.set_attr("scale", Attr::Floats(scale));
    n.set_attr("axis", Attr::Int(axis));
    g.nodes.insert(0, n);
    model.opsets.insert(DOMAIN.into(), 1);
}

/// Cuts the graph so `output_nodes` (node names or tensor names) are its outputs.
fn cut_outputs(model: &mut Model, names: &[String]) -> ToolResult<()> {
    if names.is_empty() {
        return Ok(());
    }
    let g = &mut model.graph;
    let mut outputs = Vec::new();
    for n in names {
        let tensors: Vec<String> = match g.nodes.iter().find(|x| &x.name == n) {
            Some(node) => node.outputs.clone(),
            None if g.producer(n).is_some() => vec![n.clone()],
            None => {
                return Err(ToolError::input(format!(
                "model_parameters.output_nodes: '{n}' is neither a node nor a tensor of the model"
            )))
            }
        };
        for t in tensors {
            let vi = g.value_info.get(&t).cloned().unwrap_or_else(|| ValueInfo {
                name: t.clone(),
                elem_type: 0,
                shape: None,
                non_tensor: false,
            });
            outputs.push(vi);
        }
    }
    g.outputs = outputs;
    // Drop nodes nothing needs any more.
    let mut needed: std::collections::HashSet<String> =
        g.outputs.iter().map(|v| v.name.clone()).collect();
    let mut keep = vec![false; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate().rev() {
        if n.outputs.iter().any(|o| needed.contains(o)) {
            keep[i] = true;
            needed.extend(n.inputs.iter().cloned());
        }
    }
    let mut k = keep.into_iter();
    g.nodes.retain(|_| k.next().unwrap_or(false));
    g.prune_unused_initializers();
    Ok(())
}

/// Everything one `hb-calib` run writes, computed before anything is written.
struct Artefacts {
    files: Vec<(PathBuf, Model)>,
    log: String,
    dumps: Vec<(PathBuf, hb_tensor::Tensor)>,
}

/// A config read and its model made ready for calibration: what `hb-calib`
/// does before calibrating (also used by `hb-debugger tune`).
pub struct Prepared {
    /// The config.
    pub cfg: HbConfig,
    /// The model as read, `input_shape` applied, preprocess nodes added.
    pub original: Model,
    /// The optimized float model (the one calibrated).
    pub optimized: Model,
    /// The model inputs in config order.
    pub infos: Vec<ValueInfo>,
    /// The calibration samples (checked).
    pub data: FolderSamples,
    /// The effective quant_config (legacy keys folded in).
    pub qc: hb_quant::config::QuantConfig,
}

/// Reads `config`, prepares and optimizes the model, opens and checks the
/// calibration data (the first `num_samples` when given).
pub fn prepare(
    config: &Path,
    num_samples: Option<usize>,
    laps: &mut hb_quant::pipeline::Laps,
) -> ToolResult<Prepared> {
    let cfg = hb_quant::config::load(config).map_err(|e| match e {
        hb_quant::ConfigError::File { .. } => ToolError::input(e),
        other => cfg_err(config, other),
    })?;
    let mut model = crate::cli::load_model(&cfg.model.onnx_model)?;
    let infos = prepare_inputs(&cfg, &mut model)?;
    let original = model.clone();
    let mut optimized = model;
    cut_outputs(&mut optimized, &cfg.model.output_nodes)?;
    // Half-precision models are calibrated and quantized from float32.
    hb_float::casts::compute_in_float32(&mut optimized)
        .map_err(|e| ToolError::input(format!("{}: {e}", cfg.model.onnx_model.display())))?;
    optimize(&mut optimized)
        .map_err(|e| ToolError::input(format!("{}: {e}", cfg.model.onnx_model.display())))?;
    if cfg.calibration.cal_data_dir.is_empty() {
        return Err(cfg_err(
            &cfg.path,
            "calibration_parameters.cal_data_dir is required (one folder of .npy files per input)",
        ));
    }
    let data = FolderSamples::open(
        &infos,
        &cfg.calibration.cal_data_dir,
        &cfg.calibration.cal_data_type,
        num_samples,
    )?;
    // Every sample's file is checked (type, shape, finiteness) as the
    // statistics pass reads it; the first bad one in order is reported.
    laps.lap("load and optimize");
    let qc = effective_quant_config(&cfg);
    Ok(Prepared {
        cfg,
        original,
        optimized,
        infos,
        data,
        qc,
    })
}

/// The finding that tells which op-by-op LayerNorms the optimisation fused
/// (`LayerNormalization` nodes of `optimized` that `original` lacks).
fn layer_norm_fusion(
    original: &hb_ir::Model,
    optimized: &hb_ir::Model,
) -> Option<hb_quant::report::Finding> {
    let before: std::collections::HashSet<&str> = original
        .graph
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    let fused: Vec<&str> = optimized
        .graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "LayerNormalization" && !before.contains(n.name.as_str()))
        .map(|n| n.name.as_str())
        .collect();
    (!fused.is_empty()).then(|| {
        hb_quant::report::Finding::info(
            "layer-norm-fusion",
            format!(
                "{} op-by-op LayerNorm(s) (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add) fused into LayerNormalization: {}; the optimized model is opset {}",
                fused.len(),
                fused.join(", "),
                optimized.onnx_opset()
            ),
        )
    })
}

/// Runs `hb-calib`; returns the summary (files are written).
pub fn run(args: &CalibArgs) -> ToolResult<CalibSummary> {
    let t0 = Instant::now();
    let mut laps = hb_quant::pipeline::Laps::start();
    let Prepared {
        cfg,
        original,
        optimized,
        infos,
        data,
        qc,
    } = prepare(&args.config, args.num_samples, &mut laps)?;
    let opts = Options {
        max_num_bin: qc.model.activation.max_num_bin.unwrap_or(4096),
        search_samples: args.search_samples,
        progress: args.progress,
    };
    // Lowered to .bc while the per-node report runs, before anything is
    // written: a model the integer machine cannot take leaves no files,
    // and the log shows the real placement.
    let (mut outcome, lowered) = calibrate_alongside(&optimized, &qc, &data, &opts, |o| {
        crate::calib_bc::lower_quantized(&cfg, o)
    })
    .map_err(|e| match e {
        // The message names the calibration file.
        hb_quant::pipeline::CalibError::Sample { message, .. } => ToolError::input(message),
        e => ToolError::input(format!("{}: {e}", cfg.model.onnx_model.display())),
    })?;
    let lowered = lowered?;
    if let Some(f) = layer_norm_fusion(&original, &optimized) {
        outcome.findings.insert(0, f);
    }
    laps.list.extend(outcome.timings.iter().cloned());
    laps.restart();
    let work = args
        .output_dir
        .clone()
        .unwrap_or_else(|| cfg.model.working_dir.clone());
    let prefix = &cfg.model.output_model_file_prefix;
    let mut files = vec![
        (
            work.join(format!("{prefix}_original_float_model.onnx")),
            original,
        ),
        (
            work.join(format!("{prefix}_optimized_float_model.onnx")),
            optimized,
        ),
        (
            work.join(format!("{prefix}_calibrated_model.onnx")),
            outcome.calibrated.clone(),
        ),
    ];
    if let Some(q) = &args.export_qdq {
        let qdq = hb_quant::qdq::export_qdq(&outcome.calibrated).map_err(ToolError::input)?;
        files.push((q.clone(), qdq));
    }
    let mut dumps = Vec::new();
    if cfg
        .model
        .debug_mode
        .iter()
        .any(|d| d == "dump_calibration_data")
    {
        for k in 0..data.count() {
            let s = data.load(k).map_err(ToolError::input)?;
            for v in &infos {
                if let Some(t) = s.get(&v.name) {
                    dumps.push((
                        work.join("calibration_data")
                            .join(file_safe(&v.name))
                            .join(format!("{k}.npy")),
                        t.clone(),
                    ));
                }
            }
        }
    }
    let art_files = files;
    let mut summary = summarize(
        &cfg,
        &outcome,
        &art_files,
        &work,
        t0.elapsed().as_secs_f64(),
    );
    hb_quant::report::apply_placement(
        &mut outcome.nodes,
        &art_files[1].1,
        &crate::calib_bc::cpu_placements(&lowered),
    );
    summary.timings = laps.list.clone();
    let log = render_log(&cfg, &outcome, &summary);
    std::fs::create_dir_all(&work)
        .map_err(|e| ToolError::input(format!("{}: {e}", work.display())))?;
    let (written, bc) = rayon::join(
        || {
            write(
                &work,
                Artefacts {
                    log,
                    files: art_files,
                    dumps,
                },
            )
        },
        || crate::calib_bc::write_quantized(&cfg, &lowered, &work),
    );
    written?;
    summary.artefacts.push(bc?);
    laps.lap("write artefacts");
    summary.seconds = t0.elapsed().as_secs_f64();
    summary.timings = laps.list;
    Ok(summary)
}

fn summarize(
    cfg: &HbConfig,
    o: &CalibOutcome,
    files: &[(PathBuf, Model)],
    work: &Path,
    seconds: f64,
) -> CalibSummary {
    let qtypes = qtype_counts(o);
    let mut artefacts: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
    artefacts.push(work.join("hb_calib.log").display().to_string());
    CalibSummary {
        config: cfg.path.display().to_string(),
        model: cfg.model.onnx_model.display().to_string(),
        artefacts,
        samples: o.samples,
        seconds,
        timings: Vec::new(),
        method: o.chosen.to_string(),
        candidates: o
            .scores
            .iter()
            .map(|s| (s.candidate.to_string(), s.score))
            .collect(),
        metric: o.metric.clone(),
        qtypes,
        outputs: o.outputs.clone(),
        findings: o.findings.clone(),
        ignored: cfg
            .ignored
            .iter()
            .map(|i| format!("{}: {}", i.key, i.reason))
            .collect(),
        bias_correction: o.bias_correction.clone(),
    }
}

/// Calibration nodes per kind and qtype (`feature int8`, `weight int8 ec`, ...).
pub(crate) fn qtype_counts(o: &CalibOutcome) -> BTreeMap<String, usize> {
    let mut qtypes = BTreeMap::new();
    for p in &o.points {
        let kind = if p.is_weight() { "weight" } else { "feature" };
        let ec = if p.ec { " ec" } else { "" };
        *qtypes.entry(format!("{kind} {}{ec}", p.qtype)).or_insert(0) += 1;
    }
    qtypes
}

/// The text of `hb_calib.log`.
fn render_log(cfg: &HbConfig, o: &CalibOutcome, s: &CalibSummary) -> String {
    let mut log = String::new();
    log.push_str(&format!(
        "hb-calib {}\nconfig: {}\nmodel: {}\nmarch: {}\ncalibration samples: {}\ntime: {:.2} s\n\n",
        env!("CARGO_PKG_VERSION"),
        s.config,
        s.model,
        cfg.model.march.name(),
        s.samples,
        s.seconds
    ));
    if !s.timings.is_empty() {
        log.push_str("phases:");
        for (name, t) in &s.timings {
            log.push_str(&format!(" {name} {t:.2} s;"));
        }
        log.push_str("\n\n");
    }
    if !s.ignored.is_empty() {
        log.push_str("Accepted without effect on a CPU:\n");
        for i in &s.ignored {
            log.push_str(&format!("  {i}\n"));
        }
        log.push('\n');
    }
    log.push_str(&format!(
        "Calibration candidates (scored by {} on {} sample(s), best first):\n",
        s.metric,
        o.samples.min(10)
    ));
    let mut cands = s.candidates.clone();
    let higher = hb_tensor::metrics::higher_is_better(&s.metric);
    cands.sort_by(|a, b| {
        if higher {
            b.1.total_cmp(&a.1)
        } else {
            a.1.total_cmp(&b.1)
        }
    });
    for (c, v) in &cands {
        let mark = if *c == s.method { "  <- chosen" } else { "" };
        log.push_str(&format!("  {c:<32} {v:.6}{mark}\n"));
    }
    log.push_str(&format!(
        "\nCalibration nodes: {}\n",
        s.qtypes
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if !o.findings.is_empty() {
        log.push_str("\nFindings:\n");
        for f in &o.findings {
            log.push_str(&format!("  [{}] {}: {}\n", f.level, f.kind, f.message));
        }
    }
    if !o.bias_correction.is_empty() {
        log.push_str(&format!(
            "\nBias correction (per weighted layer, graph order; {} of the layer output, float vs calibrated, before → after):\n",
            cfg.calibration
                .quant_config
                .model
                .weight
                .bias_correction
                .as_ref()
                .map_or("cosine-similarity", |b| b.metric.as_str())
        ));
        let rows: Vec<Vec<String>> = o
            .bias_correction
            .iter()
            .map(|r| {
                vec![
                    r.node.clone(),
                    r.op.clone(),
                    r.channels.to_string(),
                    format!("{:.3e}", r.mean_abs_offset),
                    format!("{:.3e}", r.max_abs_offset),
                    format!("{:.6}", r.before),
                    format!("{:.6}", r.after),
                    if r.kept { "yes".into() } else { "no".into() },
                ]
            })
            .collect();
        log.push_str(&report::table(
            &[
                "Node",
                "Type",
                "Channels",
                "Mean |offset|",
                "Max |offset|",
                "Before",
                "After",
                "Kept",
            ],
            &rows,
        ));
    }
    log.push_str(
        "\nPer node (cosine of the node output, float vs calibrated, calibration sample 0):\n",
    );
    log.push_str(&report::render_nodes(&o.nodes));
    let cpu: Vec<String> = o
        .nodes
        .iter()
        .filter_map(|r| {
            let why = r.cpu_reason.as_ref()?;
            Some(format!("  {} ({}): {why}\n", r.node, r.op))
        })
        .collect();
    if !cpu.is_empty() {
        log.push_str(&format!(
            "\nCPU nodes of the quantized model ({}), and why:\n",
            cpu.len()
        ));
        log.extend(cpu);
    }
    log.push_str("\nPer output (mean over the scored calibration samples):\n");
    log.push_str(&report::render_outputs(&o.outputs));
    log
}

fn write(work: &Path, art: Artefacts) -> ToolResult<()> {
    let mkdir = |d: &Path| {
        std::fs::create_dir_all(d).map_err(|e| ToolError::input(format!("{}: {e}", d.display())))
    };
    // `work` itself exists (made before the .bc is written alongside).
    for (path, _) in &art.files {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            mkdir(parent)?;
        }
    }
    art.files
        .par_iter()
        .try_for_each(|(path, model)| hb_ir::save_model(model, path).map_err(ToolError::input))?;
    for (path, t) in &art.dumps {
        if let Some(parent) = path.parent() {
            mkdir(parent)?;
        }
        io::write_npy(path, t)?;
    }
    let log_path = work.join("hb_calib.log");
    io::write_atomic(&log_path, |w| {
        w.write_all(art.log.as_bytes())
            .map_err(|source| hb_tensor::TensorError::Io {
                path: log_path.display().to_string(),
                source,
            })
    })?;
    Ok(())
}

/// Renders the summary for the terminal.
pub fn render_summary(s: &CalibSummary) -> String {
    let mut t = format!(
        "calibrated {} with {} sample(s) in {:.2} s; method: {}\n",
        s.model, s.samples, s.seconds, s.method
    );
    for f in &s.findings {
        t.push_str(&format!("[{}] {}: {}\n", f.level, f.kind, f.message));
    }
    t.push_str(&report::render_outputs(&s.outputs));
    for a in &s.artefacts {
        t.push_str(&format!("wrote {a}\n"));
    }
    t
}
