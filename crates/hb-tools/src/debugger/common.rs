//! What every `hb-debugger` subcommand shares: loading a calibrated model
//! and its data, the calibration nodes, metrics, tables and atomic writes.

use crate::calib_data::FolderSamples;
use crate::cli::{ToolError, ToolResult};
use crate::inputs::Sample;
use crate::names::file_safe;
use hb_float::kernels::horizon::FakeQuant;
use hb_float::Session;
use hb_ir::{Graph, Model};
use hb_quant::calibrated::{is_calibration, set_switch};
use hb_quant::pipeline::SampleSource;
use hb_tensor::{metrics, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One calibration node of a calibrated model.
#[derive(Debug, Clone)]
pub struct CalibNode {
    /// Index of the node in the graph (= step of the session).
    pub step: usize,
    /// Node name (`..._HzCalibration`).
    pub name: String,
    /// The tensor it quantizes.
    pub input: String,
    /// Its output value.
    pub output: String,
    /// Its quantizer as stored (switch as in the file).
    pub fq: FakeQuant,
    /// Weight (`tensor_type = weight`).
    pub is_weight: bool,
    /// Nodes reading its output: `(node index, input position)`.
    pub consumers: Vec<(usize, usize)>,
    /// It produces a model output (output quantization).
    pub model_output: bool,
}

impl CalibNode {
    /// The quantizer with its switch ON.
    pub fn on(&self) -> FakeQuant {
        FakeQuant {
            enabled: true,
            ..self.fq.clone()
        }
    }

    /// True when switching it ON changes nothing (float32 qtype).
    pub fn is_noop(&self) -> bool {
        self.on().is_identity()
    }

    /// The quantization step (largest channel), `None` for float qtypes.
    pub fn scale(&self) -> Option<f32> {
        let p = self.on().params().ok()?;
        p.iter().map(|q| q.scale).reduce(f32::max)
    }

    /// The largest threshold magnitude (per-channel: the largest channel).
    pub fn magnitude(&self) -> f32 {
        self.fq.thresholds.iter().fold(0f32, |m, v| m.max(v.abs()))
    }

    /// `int8`, `int16`, `float16` or `float32`.
    pub fn qtype(&self) -> &'static str {
        self.fq.qtype.name()
    }
}

/// A calibrated model as the debugger sees it.
#[derive(Debug, Clone)]
pub struct Calibrated {
    /// Where it was read from.
    pub path: PathBuf,
    /// The model as stored.
    pub model: Model,
    /// Its calibration nodes, in graph order.
    pub nodes: Vec<CalibNode>,
}

impl Calibrated {
    /// Reads `path` and checks it holds calibration nodes.
    pub fn load(path: &Path) -> ToolResult<Self> {
        let model = crate::cli::load_model(path)?;
        Self::from_model(path, model)
    }

    /// Wraps an in-memory calibrated model.
    pub fn from_model(path: &Path, model: Model) -> ToolResult<Self> {
        let g = &model.graph;
        let mut readers: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
        for (i, n) in g.nodes.iter().enumerate() {
            for (k, x) in n.inputs.iter().enumerate() {
                readers.entry(x.as_str()).or_default().push((i, k));
            }
        }
        let mut nodes = Vec::new();
        for (i, n) in g
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| is_calibration(n))
        {
            let fq = FakeQuant::from_node(n).map_err(|e| {
                ToolError::input(format!(
                    "{}: calibration node '{}': {e}",
                    path.display(),
                    n.name
                ))
            })?;
            let (Some(input), Some(output)) = (n.inputs.first(), n.outputs.first()) else {
                return Err(ToolError::input(format!(
                    "{}: calibration node '{}' needs one input and one output",
                    path.display(),
                    n.name
                )));
            };
            nodes.push(CalibNode {
                step: i,
                name: n.name.clone(),
                input: input.clone(),
                output: output.clone(),
                is_weight: fq.is_weight,
                fq,
                consumers: readers.get(output.as_str()).cloned().unwrap_or_default(),
                model_output: g.is_output(output),
            });
        }
        if nodes.is_empty() {
            return Err(ToolError::input(format!(
                "{}: not a calibrated model (no HzCalibration nodes); make one with hb-calib",
                path.display()
            )));
        }
        Ok(Calibrated {
            path: path.to_path_buf(),
            model,
            nodes,
        })
    }

    /// The float reference: the same model with every switch OFF.
    pub fn float_model(&self) -> Model {
        let mut m = self.model.clone();
        set_switch(&mut m, false);
        m
    }

    /// The float reference session.
    pub fn float_session(&self) -> ToolResult<Session> {
        Ok(Session::new(&self.float_model())?)
    }

    /// Calibration nodes feeding node `i` (its inputs), in input order.
    pub fn inputs_of(&self, i: usize) -> Vec<usize> {
        let n = &self.model.graph.nodes[i];
        n.inputs
            .iter()
            .filter_map(|x| self.nodes.iter().position(|c| &c.output == x))
            .collect()
    }

    /// Calibration nodes that quantize an output of node `i`: directly, or
    /// after a chain of data-movement ops (Reshape, Transpose, ...), which
    /// keep the scale.
    pub fn outputs_of(&self, i: usize) -> Vec<usize> {
        let g = &self.model.graph;
        let mut found = Vec::new();
        let mut frontier: Vec<String> = g.nodes[i].outputs.clone();
        for _ in 0..6 {
            let mut next = Vec::new();
            for v in &frontier {
                for (k, c) in self.nodes.iter().enumerate() {
                    if &c.input == v && !found.contains(&k) {
                        found.push(k);
                    }
                }
                for j in g.consumers(v) {
                    let n = &g.nodes[j];
                    if !is_calibration(n) && hb_quant::ops::PASSIVE.contains(&n.op_type.as_str()) {
                        next.extend(n.outputs.iter().cloned());
                    }
                }
            }
            if next.is_empty() || !found.is_empty() {
                break;
            }
            frontier = next;
        }
        found
    }

    /// The index of the node named `name`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.model.graph.nodes.iter().position(|n| n.name == name)
    }
}

/// The folder of each model input inside `dir`: `dir/<input>` (name as is
/// or made file-safe), or `dir` itself for a one-input model.
fn input_dirs(graph: &Graph, dir: &Path) -> ToolResult<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(ToolError::input(format!(
            "{}: no such data folder (expected <dir>/<input>/<k>.npy, as hb-calib's calibration_data)",
            dir.display()
        )));
    }
    graph
        .inputs
        .iter()
        .map(|v| {
            let sub = [v.name.clone(), file_safe(&v.name)]
                .into_iter()
                .map(|n| dir.join(n))
                .find(|p| p.is_dir());
            match sub {
                Some(p) => Ok(p),
                None if graph.inputs.len() == 1 => Ok(dir.to_path_buf()),
                None => Err(ToolError::input(format!(
                    "{}: no folder for input '{}' (expected <dir>/<input>/<k>.npy)",
                    dir.display(),
                    v.name
                ))),
            }
        })
        .collect()
}

/// Reads up to `limit` samples (all when `None`) of `graph`'s inputs from
/// `dir`, checking type, shape and finiteness of every file.
pub fn load_samples(graph: &Graph, dir: &Path, limit: Option<usize>) -> ToolResult<Vec<Sample>> {
    let dirs = input_dirs(graph, dir)?;
    let fs = FolderSamples::open(&graph.inputs, &dirs, &[], limit)?;
    if fs.count() == 0 {
        return Err(ToolError::input(format!("{}: no samples", dir.display())));
    }
    (0..fs.count())
        .map(|k| fs.load(k).map_err(ToolError::input))
        .collect()
}

/// Checks metric names (`-m`).
pub fn check_metrics(names: &[String]) -> ToolResult<()> {
    if names.is_empty() {
        return Err(ToolError::input("-m needs at least one metric"));
    }
    for m in names {
        if !metrics::METRIC_NAMES.contains(&m.as_str()) {
            return Err(ToolError::input(format!(
                "unknown metric '{m}' (one of {})",
                metrics::METRIC_NAMES.join(", ")
            )));
        }
    }
    Ok(())
}

/// The metric between two tensors (flattened as f32); `None` when either is not numeric.
pub fn metric(name: &str, a: &Tensor, b: &Tensor) -> Option<f64> {
    let (a, b) = (a.to_f32_cow().ok()?, b.to_f32_cow().ok()?);
    let (a, b) = (a.as_slice()?, b.as_slice()?);
    if a.len() != b.len() {
        return None;
    }
    metrics::by_name(name, a, b)
}

/// Flattened f32 copy of a tensor (`None` for non-numeric tensors).
pub fn flat(t: &Tensor) -> Option<Vec<f32>> {
    let a = t.to_f32_cow().ok()?;
    Some(a.iter().copied().collect())
}

/// Orders `a` before `b` when `a` is worse under `metric` (NaN first).
pub fn worse_first(metric: &str, a: f64, b: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Less,
        (false, true) => return Ordering::Greater,
        _ => {}
    }
    if metrics::higher_is_better(metric) {
        a.partial_cmp(&b).unwrap_or(Ordering::Equal)
    } else {
        b.partial_cmp(&a).unwrap_or(Ordering::Equal)
    }
}

/// True when `score` is as bad as `threshold` or worse under `metric`.
pub fn at_or_worse(metric: &str, score: f64, threshold: f64) -> bool {
    score.is_nan()
        || if metrics::higher_is_better(metric) {
            score <= threshold
        } else {
            score >= threshold
        }
}

/// Formats a metric value for tables.
pub fn fmt_metric(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.into()
    } else if v != 0.0 && (v.abs() < 1e-4 || v.abs() >= 1e6) {
        format!("{v:.5e}")
    } else {
        format!("{v:.6}")
    }
}

/// Writes `text` to `path` atomically (temp file + rename), creating the folder.
pub fn write_text(path: &Path, text: &str) -> ToolResult<()> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)
            .map_err(|e| ToolError::input(format!("{}: {e}", d.display())))?;
    }
    hb_tensor::io::write_atomic(path, |w| {
        w.write_all(text.as_bytes())
            .map_err(|e| hb_tensor::TensorError::Io {
                path: path.display().to_string(),
                source: e,
            })
    })
    .map_err(ToolError::input)
}

/// JSON text of a value (pretty).
pub fn to_json<T: serde::Serialize>(v: &T) -> ToolResult<String> {
    serde_json::to_string_pretty(v).map_err(ToolError::input)
}

/// Progress bar on stderr, hidden unless `show`.
pub fn bar(len: usize, msg: &str, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>12} [{bar:40}] {pos}/{len} ({elapsed}, eta {eta})",
    ) {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_message(msg.to_string());
    b
}

/// Float outputs of `session` for each sample, values named `targets`.
pub fn capture(session: &Session, sample: &Sample, targets: &[String]) -> ToolResult<Vec<Tensor>> {
    struct Grab<'a> {
        want: &'a [String],
        got: Vec<Option<Tensor>>,
    }
    impl hb_float::NodeHook for Grab<'_> {
        fn after_node(
            &mut self,
            _i: usize,
            node: &hb_ir::Node,
            outputs: &mut [Tensor],
        ) -> Result<(), String> {
            for (name, t) in node.outputs.iter().zip(outputs.iter()) {
                if let Some(k) = self.want.iter().position(|w| w == name) {
                    self.got[k] = Some(t.clone());
                }
            }
            Ok(())
        }
    }
    let mut g = Grab {
        want: targets,
        got: vec![None; targets.len()],
    };
    for (k, w) in targets.iter().enumerate() {
        if let Some(t) = sample.get(w) {
            g.got[k] = Some(t.clone());
        }
    }
    session.run_with_hook(sample, &mut g)?;
    g.got
        .into_iter()
        .zip(targets)
        .map(|(t, n)| t.ok_or_else(|| ToolError::input(format!("value '{n}' was not produced"))))
        .collect()
}
