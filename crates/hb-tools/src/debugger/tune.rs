//! `tune`: automatic mixed precision from a hb-calib YAML.
//!
//! 1. Calibrate as `hb-calib` does (one statistics pass, the method search)
//!    and fix the chosen method, so every later step differs only in qtypes.
//! 2. Rank the nodes by sensitivity (one node quantized, the rest float, on
//!    calibration samples: [`sensitivity::run`]).
//! 3. Evaluate configs on held-out samples: the model as calibrated, every
//!    node int16 (the upper bound), then the nodes at or below sensitivity
//!    thresholds (0.999, 0.9999, … as in the Horizon tuning guide) promoted
//!    in batches until the target is met; bisect between the last batch that
//!    failed and the first that met it; drop promoted nodes one at a time
//!    (least sensitive first) while the target still holds. Optional steps:
//!    `ec` instead of int16 where error compensation applies, float16 when
//!    even all-int16 misses, and a tail subgraph (`subgraph_config`).
//! 4. Keep the cheapest config that meets the target (fewest float16, then
//!    int16, then ec nodes); write it as a quant_config hb-calib accepts,
//!    a YAML pointing at it, and the table of steps (text and JSON).
//!
//! Every step is a real calibration ([`calibrate_with`] on the statistics
//! of the first pass): the written quant_config gives exactly the figures
//! of the table when run through `hb-calib`.

use super::common::{at_or_worse, fmt_metric, to_json, write_text, Calibrated};
use super::sensitivity::{self, Granularity, SensOptions, Sensitivity};
use super::TuneArgs;
use crate::calib::{prepare, Prepared};
use crate::calib_data::FolderSamples;
use crate::cli::{ToolError, ToolResult};
use crate::inputs::Sample;
use crate::names::file_safe;
use hb_float::Session;
use hb_quant::calib::candidate::activation_for;
use hb_quant::config::quant_config::to_json as qc_to_json;
use hb_quant::config::{InputQ, QuantConfig, SubgraphConfig};
use hb_quant::pipeline::{calibrate_with, collect_statistics, CalibStats, Options, SampleSource};
use hb_quant::plan::Plan;
use hb_quant::qtype::QType;
use hb_quant::report::table;
use hb_tensor::{metrics, Tensor};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What `--target` asks for.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The metric (a Horizon metric name, or the `--eval-cmd` label).
    pub name: String,
    /// True for a built-in metric computed per output.
    pub builtin: bool,
    /// Higher is better (`>=`), else lower is better (`<=`).
    pub higher: bool,
    /// The value to reach.
    pub value: f64,
}

impl Target {
    /// True when `v` meets the target (NaN never does).
    pub fn met(&self, v: f64) -> bool {
        !v.is_nan()
            && if self.higher {
                v >= self.value
            } else {
                v <= self.value
            }
    }

    fn text(&self) -> String {
        format!(
            "{} {} {}",
            self.name,
            if self.higher { ">=" } else { "<=" },
            self.value
        )
    }
}

/// Horizon metric name for an alias (`cosine`, `cos` → `cosine-similarity`).
pub fn metric_alias(name: &str) -> String {
    let l = name.trim().to_ascii_lowercase();
    match l.as_str() {
        "cosine" | "cos" | "cosine_similarity" => "cosine-similarity".into(),
        _ => l,
    }
}

/// Parses `--target`: `[METRIC](>=|<=)VALUE` or a bare `VALUE` (metric from
/// `--metric`, default cosine-similarity). With `custom` (an `--eval-cmd`),
/// METRIC may be any label and the operator is required.
pub fn parse_target(spec: &str, metric: Option<&str>, custom: bool) -> ToolResult<Target> {
    let bad = |why: &str| {
        ToolError::input(format!(
            "--target '{spec}': {why} (expected e.g. cosine>=0.99, mse<=1e-4 or 0.99)"
        ))
    };
    let ops = [(">=", true), ("<=", false), (">", true), ("<", false)];
    let found = ops
        .iter()
        .filter_map(|(op, hi)| spec.find(op).map(|i| (i, *op, *hi)))
        .min_by_key(|x| (x.0, std::cmp::Reverse(x.1.len())));
    let (name, op, value) = match found {
        Some((i, op, hi)) => (spec[..i].trim(), Some(hi), spec[i + op.len()..].trim()),
        None => ("", None, spec.trim()),
    };
    let value: f64 = value
        .parse()
        .map_err(|_| bad(&format!("'{value}' is not a number")))?;
    if !value.is_finite() {
        return Err(bad("the value must be finite"));
    }
    let name = if name.is_empty() {
        metric.map_or("cosine-similarity".to_string(), metric_alias)
    } else {
        metric_alias(name)
    };
    let builtin = metrics::METRIC_NAMES.contains(&name.as_str());
    if !builtin && !custom {
        return Err(ToolError::input(format!(
            "--target '{spec}': unknown metric '{name}' (one of {}; any label with --eval-cmd)",
            metrics::METRIC_NAMES.join(", ")
        )));
    }
    let higher = match (op, builtin) {
        (Some(h), true) => {
            if h != metrics::higher_is_better(&name) {
                return Err(bad(&format!(
                    "{name} is {} is better: use {}",
                    if metrics::higher_is_better(&name) {
                        "higher"
                    } else {
                        "lower"
                    },
                    if metrics::higher_is_better(&name) {
                        ">="
                    } else {
                        "<="
                    }
                )));
            }
            h
        }
        (None, true) => metrics::higher_is_better(&name),
        (Some(h), false) => h,
        (None, false) => return Err(bad("an --eval-cmd target needs >= or <=")),
    };
    Ok(Target {
        name,
        builtin,
        higher,
        value,
    })
}

/// The precision a promoted node gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Error compensation on the weight (Conv/ConvTranspose/MatMul/Gemm
    /// input1) or on input0 (Resize/GridSample); otherwise int8.
    Ec,
    /// int16.
    Int16,
    /// float16 (nash marches).
    Float16,
}

/// A config to evaluate: promoted nodes and an optional tail subgraph.
#[derive(Debug, Clone, Default, PartialEq)]
struct Cand {
    nodes: BTreeMap<String, Level>,
    /// Index (into the units in graph order) where an int16 tail subgraph starts.
    tail: Option<usize>,
}

impl Cand {
    fn key(&self) -> String {
        let mut k: String = self
            .nodes
            .iter()
            .map(|(n, l)| format!("{n}={l:?};"))
            .collect();
        if let Some(t) = self.tail {
            k.push_str(&format!("tail={t}"));
        }
        k
    }
}

/// One output's score in one step.
#[derive(Debug, Clone, Serialize)]
pub struct OutScore {
    /// Output name.
    pub output: String,
    /// The table metric (the target's, or cosine with `--eval-cmd`), mean over samples.
    pub value: f64,
    /// Cosine similarity, mean over samples.
    pub cosine: f64,
}

/// One evaluated config.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Row number (0 = as calibrated).
    pub step: usize,
    /// What produced it: `int8`, `all-int16`, `threshold`, `bisect`, `prune`, `ec`, `float16`, `subgraph`.
    pub stage: String,
    /// The sensitivity threshold of a batch step.
    pub threshold: Option<f64>,
    /// What this step changed: `first K` (the K most sensitive nodes),
    /// `-NODE` (dropped), `NODE→ec`, `tail from NODE`.
    pub change: String,
    /// Nodes computing in int16.
    pub int16: usize,
    /// Nodes with an `ec` input.
    pub ec: usize,
    /// Nodes computing in float16.
    pub float16: usize,
    /// Per output, on the evaluation samples.
    pub outputs: Vec<OutScore>,
    /// Per output cosine on the calibration search samples (what hb-calib's log shows).
    pub calibration_cosine: Vec<f64>,
    /// The `--eval-cmd` number.
    pub custom: Option<f64>,
    /// The value compared with the target (worst output, or the `--eval-cmd` number).
    pub score: f64,
    /// Target met.
    pub meets: bool,
    /// Within `--max-int16`.
    pub allowed: bool,
    /// Promoted nodes (name → level) of this step.
    pub promoted: BTreeMap<String, Level>,
    /// Wall time of the step (s).
    pub seconds: f64,
    #[serde(skip)]
    cand: Cand,
}

/// The result of a `tune` run.
#[derive(Debug, Clone, Serialize)]
pub struct Tune {
    /// The config file.
    pub config: String,
    /// The target.
    pub target: Target,
    /// Metric ranking the nodes.
    pub sensitivity_metric: String,
    /// The method every step uses (chosen by the first calibration).
    pub method: String,
    /// Where the evaluation samples came from.
    pub eval_data: String,
    /// Number of evaluation samples.
    pub eval_samples: usize,
    /// Nodes with sensitivity < 0.999 (cosine only): what promoting all of them costs.
    pub below_0999: Option<usize>,
    /// The first sensitivity-threshold batch that met the target: (threshold, int16 nodes).
    pub first_batch: Option<(f64, usize)>,
    /// Every evaluated step, in order.
    pub steps: Vec<Step>,
    /// Index of the best step.
    pub best: usize,
    /// The best step meets the target.
    pub reached: bool,
    /// The quant_config of the best step.
    pub quant_config: serde_json::Value,
    /// Notes (dropped options, fallbacks).
    pub notes: Vec<String>,
    /// Files written.
    pub written: Vec<String>,
    /// Wall time (s).
    pub seconds: f64,
    /// The sensitivity ranking (not computed when the model as calibrated
    /// already meets the target, unless `--sweep`).
    pub sensitivity: Option<Sensitivity>,
    /// The report as text (tune.txt).
    #[serde(skip)]
    pub text: String,
}

/// `--eval-cmd`: a shell command printing one number.
struct EvalCmd {
    template: String,
    root: PathBuf,
}

impl Drop for EvalCmd {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn write_outputs(dir: &Path, outs: &[Vec<(String, Tensor)>]) -> ToolResult<()> {
    for (k, sample) in outs.iter().enumerate() {
        for (name, t) in sample {
            let d = dir.join(file_safe(name));
            std::fs::create_dir_all(&d)
                .map_err(|e| ToolError::input(format!("{}: {e}", d.display())))?;
            hb_tensor::io::write_npy(&d.join(format!("{k}.npy")), t)?;
        }
    }
    Ok(())
}

impl EvalCmd {
    fn new(template: &str, float: &[Vec<(String, Tensor)>]) -> ToolResult<Self> {
        let root = std::env::temp_dir().join(format!(
            "hb-tune-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let cmd = EvalCmd {
            template: template.to_string(),
            root,
        };
        write_outputs(&cmd.root.join("float"), float)?;
        Ok(cmd)
    }

    fn run(&self, outs: &[Vec<(String, Tensor)>]) -> ToolResult<f64> {
        let dir = self.root.join("outputs");
        let _ = std::fs::remove_dir_all(&dir);
        write_outputs(&dir, outs)?;
        let float = self.root.join("float");
        let line = self
            .template
            .replace("{outputs}", &dir.display().to_string())
            .replace("{float}", &float.display().to_string());
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&line)
            .env("HB_TUNE_OUTPUTS", &dir)
            .env("HB_TUNE_FLOAT", &float)
            .output()
            .map_err(|e| ToolError::input(format!("--eval-cmd: cannot run sh: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(ToolError::input(format!(
                "--eval-cmd '{line}' failed ({}): {}",
                out.status,
                err.lines().next().unwrap_or("")
            )));
        }
        let last = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        last.trim().parse::<f64>().map_err(|_| {
            ToolError::input(format!(
                "--eval-cmd '{line}' must print one number as its last line, printed '{}'",
                last.trim()
            ))
        })
    }
}

/// Everything the steps share.
struct Ctx<'a> {
    prep: &'a Prepared,
    stats: &'a CalibStats,
    base_qc: QuantConfig,
    opts: Options,
    eval: Vec<Sample>,
    float: Vec<Vec<(String, Tensor)>>,
    target: Target,
    table_metric: String,
    eval_cmd: Option<EvalCmd>,
    /// Units (model nodes with calibration nodes) in graph order: (name, graph index).
    units: Vec<(String, usize)>,
    max_int16: Option<usize>,
    max_evals: usize,
    steps: Vec<Step>,
    seen: HashMap<String, usize>,
    progress: bool,
}

fn ec_inputs(g: &hb_ir::Graph, name: &str) -> Vec<usize> {
    g.nodes
        .iter()
        .find(|n| n.name == name)
        .map(|n| {
            (0..n.inputs.len())
                .filter(|&k| hb_quant::ops::ec_allowed(n, k))
                .collect()
        })
        .unwrap_or_default()
}

impl Ctx<'_> {
    fn qc_for(&self, c: &Cand) -> QuantConfig {
        let mut qc = self.base_qc.clone();
        let g = &self.prep.optimized.graph;
        for (name, level) in &c.nodes {
            let e = qc.node.entry(name.clone()).or_default();
            match level {
                Level::Int16 => e.qtype = Some(QType::Int16),
                Level::Float16 => e.qtype = Some(QType::Float16),
                Level::Ec => {
                    for k in ec_inputs(g, name) {
                        e.inputs.insert(k, InputQ::Ec);
                    }
                }
            }
        }
        if let Some(start) = c.tail {
            if let Some(sg) = self.tail_subgraph(start) {
                qc.subgraph.insert("tune_tail".into(), sg);
            }
        }
        qc
    }

    /// The subgraph from unit `start` (graph order) to the model outputs:
    /// its inputs are the tensors read at or after that node and produced
    /// before it (or model inputs).
    fn tail_subgraph(&self, start: usize) -> Option<SubgraphConfig> {
        let g = &self.prep.optimized.graph;
        let pos = self.units.get(start)?.1;
        let mut produced_after = std::collections::HashSet::new();
        let mut inputs: Vec<String> = Vec::new();
        for n in &g.nodes[pos..] {
            for x in &n.inputs {
                if x.is_empty()
                    || produced_after.contains(x)
                    || g.initializer(x).is_some()
                    || inputs.contains(x)
                {
                    continue;
                }
                inputs.push(x.clone());
            }
            produced_after.extend(n.outputs.iter().cloned());
        }
        Some(SubgraphConfig {
            inputs,
            outputs: g.outputs.iter().map(|o| o.name.clone()).collect(),
            qtype: QType::Int16,
        })
    }

    fn counts(plan: &Plan) -> (usize, usize, usize) {
        let (mut i16, mut ec, mut f16) = (0, 0, 0);
        for n in plan.nodes.iter().filter(|n| n.quantized) {
            match n.qtype {
                QType::Int16 => i16 += 1,
                QType::Float16 => f16 += 1,
                _ => {}
            }
            if n.inputs.contains(&InputQ::Ec) {
                ec += 1;
            }
        }
        (i16, ec, f16)
    }

    fn budget_left(&self) -> bool {
        self.steps.len() < self.max_evals
    }

    /// Evaluates `c` (once: a config seen before returns its step).
    fn eval(
        &mut self,
        stage: &str,
        threshold: Option<f64>,
        change: String,
        c: Cand,
    ) -> ToolResult<usize> {
        let key = c.key();
        if let Some(&i) = self.seen.get(&key) {
            return Ok(i);
        }
        let clock = std::time::Instant::now();
        let qc = self.qc_for(&c);
        let outcome = calibrate_with(
            &self.prep.optimized,
            &qc,
            self.stats,
            &self.prep.data,
            &self.opts,
        )
        .map_err(|e| ToolError::input(format!("{}: {e}", self.prep.cfg.path.display())))?;
        let session = Session::new(&outcome.calibrated)?;
        let got: Vec<Vec<(String, Tensor)>> = self
            .eval
            .par_iter()
            .map(|s| session.run(s))
            .collect::<Result<_, _>>()?;
        let mut outputs: Vec<OutScore> = Vec::new();
        for (g, f) in got.iter().zip(&self.float) {
            for (k, ((name, b), (_, a))) in g.iter().zip(f).enumerate() {
                let (Some(a), Some(b)) = (super::common::flat(a), super::common::flat(b)) else {
                    continue;
                };
                if outputs.len() <= k {
                    outputs.push(OutScore {
                        output: name.clone(),
                        value: 0.0,
                        cosine: 0.0,
                    });
                }
                outputs[k].value +=
                    metrics::by_name(&self.table_metric, &a, &b).unwrap_or(f64::NAN);
                outputs[k].cosine += metrics::cosine(&a, &b);
            }
        }
        let n = self.eval.len().max(1) as f64;
        for o in outputs.iter_mut() {
            o.value /= n;
            o.cosine /= n;
        }
        let custom = match &self.eval_cmd {
            Some(cmd) => Some(cmd.run(&got)?),
            None => None,
        };
        let worst = outputs
            .iter()
            .map(|o| o.value)
            .fold(None, |acc: Option<f64>, v| {
                Some(match acc {
                    None => v,
                    Some(a) if v.is_nan() || a.is_nan() => f64::NAN,
                    Some(a) if self.target.higher => a.min(v),
                    Some(a) => a.max(v),
                })
            });
        let score = custom.or(worst).unwrap_or(f64::NAN);
        let (int16, ec, float16) = Self::counts(&outcome.plan);
        let step = Step {
            step: self.steps.len(),
            stage: stage.to_string(),
            threshold,
            change,
            int16,
            ec,
            float16,
            calibration_cosine: outcome.outputs.iter().map(|o| o.cosine).collect(),
            custom,
            score,
            meets: self.target.met(score),
            allowed: self.max_int16.is_none_or(|m| int16 <= m),
            outputs,
            promoted: c.nodes.clone(),
            seconds: clock.elapsed().as_secs_f64(),
            cand: c,
        };
        if self.progress {
            eprintln!(
                "  step {:>3} {:<10} int16 {:>4} ec {:>3} f16 {:>3}  {} = {}{}",
                step.step,
                step.stage,
                step.int16,
                step.ec,
                step.float16,
                self.target.name,
                fmt_metric(step.score),
                if step.meets { "  (meets)" } else { "" }
            );
        }
        self.steps.push(step);
        self.seen.insert(key, self.steps.len() - 1);
        Ok(self.steps.len() - 1)
    }

    fn ok(&self, i: usize) -> bool {
        self.steps[i].meets && self.steps[i].allowed
    }
}

fn with(fixed: &Cand, names: &[&str], level: Level) -> Cand {
    let mut c = fixed.clone();
    for n in names {
        c.nodes.insert(n.to_string(), level);
    }
    c
}

/// Batches at the thresholds, bisection, then pruning: the smallest set of
/// `ranked` nodes (worst first) that, promoted to `level` on top of `fixed`,
/// meets the target. `None` when even all of them do not.
#[allow(clippy::too_many_arguments)]
fn minimize(
    ctx: &mut Ctx,
    fixed: &Cand,
    ranked: &[(&str, f64)],
    level: Level,
    metric: &str,
    thresholds: &[f64],
    sweep: bool,
    cap: usize,
) -> ToolResult<Option<Cand>> {
    let n = ranked.len().min(cap);
    let names: Vec<&str> = ranked.iter().map(|r| r.0).collect();
    let prefix = |k: usize| with(fixed, &names[..k], level);
    let stage = |s: &str| {
        if level == Level::Int16 {
            s.to_string()
        } else {
            format!("{s}/{level:?}").to_ascii_lowercase()
        }
    };
    let (mut lo, mut hi): (usize, Option<usize>) = (0, None);
    let mut last = 0;
    for &t in thresholds {
        let k = ranked
            .iter()
            .take_while(|r| at_or_worse(metric, r.1, t))
            .count()
            .min(n);
        if k == last || k == 0 {
            continue;
        }
        last = k;
        if hi.is_some() && !sweep {
            break;
        }
        let i = ctx.eval(
            &stage("threshold"),
            Some(t),
            format!("first {k}"),
            prefix(k),
        )?;
        if ctx.ok(i) {
            hi = hi.or(Some(k));
        } else if hi.is_none() {
            lo = k;
        }
    }
    if hi.is_none() && n > last {
        let i = ctx.eval(&stage("all"), None, format!("first {n}"), prefix(n))?;
        if ctx.ok(i) {
            hi = Some(n);
        }
    }
    let Some(mut hi) = hi else {
        return Ok(None);
    };
    while hi - lo > 1 && ctx.budget_left() {
        let mid = lo + (hi - lo) / 2;
        let i = ctx.eval(&stage("bisect"), None, format!("first {mid}"), prefix(mid))?;
        if ctx.ok(i) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let mut set = prefix(hi);
    // Least sensitive first: they are the likeliest to be unnecessary.
    for name in names[..hi].iter().rev() {
        if !ctx.budget_left() {
            break;
        }
        let mut c = set.clone();
        c.nodes.remove(*name);
        let i = ctx.eval(&stage("prune"), None, format!("-{name}"), c.clone())?;
        if ctx.ok(i) {
            set = c;
        }
    }
    Ok(Some(set))
}

fn default_thresholds(metric: &str, sens: &Sensitivity) -> Vec<f64> {
    match metric {
        "cosine-similarity" => vec![0.99, 0.999, 0.9999, 0.99999, 0.999999],
        "sqnr" => vec![10.0, 20.0, 30.0, 40.0, 50.0],
        _ => {
            let worst = sens
                .rows
                .iter()
                .map(|r| r.metrics[metric])
                .filter(|v| v.is_finite())
                .fold(0.0f64, f64::max);
            // Decades below the worst, to 3 significant digits (readable in the table).
            (1..=6)
                .map(|k| {
                    let t = worst / 10f64.powi(k);
                    if t > 0.0 {
                        let e = 10f64.powf(t.log10().floor() - 2.0);
                        (t / e).round() * e
                    } else {
                        t
                    }
                })
                .collect()
        }
    }
}

/// The evaluation samples: `--eval-data` (a folder `<dir>/<input>/`, or
/// `;`-separated folders, one per input), else the `test` folder beside the
/// calibration folders when it has every input, else the calibration data.
fn eval_source(
    prep: &Prepared,
    eval_data: Option<&str>,
    notes: &mut Vec<String>,
) -> ToolResult<(String, Vec<PathBuf>)> {
    if let Some(d) = eval_data {
        let dirs: Vec<PathBuf> = d.split(';').map(|s| PathBuf::from(s.trim())).collect();
        for x in &dirs {
            if !x.is_dir() {
                return Err(ToolError::input(format!(
                    "--eval-data: {}: no such folder",
                    x.display()
                )));
            }
        }
        return Ok((d.to_string(), dirs));
    }
    let cal = &prep.cfg.calibration.cal_data_dir;
    let sibling = |d: &Path| -> Option<PathBuf> {
        let parent = d.parent()?;
        let grand = parent.parent()?;
        let name = d.file_name()?;
        let t = grand.join("test").join(name);
        if t.is_dir() {
            return Some(t);
        }
        let t = parent.join("test");
        (cal.len() == 1 && t.is_dir()).then_some(t)
    };
    let found: Option<Vec<PathBuf>> = cal.iter().map(|d| sibling(d)).collect();
    match found {
        Some(dirs) if !dirs.is_empty() => {
            let parents: Vec<Option<&Path>> = dirs.iter().map(|d| d.parent()).collect();
            let text = match parents.first() {
                Some(Some(p)) if dirs.len() > 1 && parents.iter().all(|q| *q == Some(*p)) => {
                    format!("{}/<input>", p.display())
                }
                _ => dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(";"),
            };
            Ok((text, dirs))
        }
        _ => {
            notes.push(
                "no held-out data (no --eval-data and no 'test' folder beside the calibration data): steps are scored on the calibration samples".into(),
            );
            let text = cal
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(";");
            Ok((text, cal.clone()))
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    })
}

/// The input YAML with `quant_config` pointing at `quant_config.json` (in
/// the same folder) and every path made absolute; hb-calib writes into
/// `<save dir>/hb_calib`.
fn tuned_yaml(prep: &Prepared, save_dir: &Path) -> ToolResult<String> {
    use serde_yaml::Value as Y;
    let text = std::fs::read_to_string(&prep.cfg.path)
        .map_err(|e| ToolError::input(format!("{}: {e}", prep.cfg.path.display())))?;
    let mut doc: Y = serde_yaml::from_str(&text)
        .map_err(|e| ToolError::input(format!("{}: {e}", prep.cfg.path.display())))?;
    let set = |doc: &mut Y, group: &str, key: &str, v: Y| {
        if let Y::Mapping(top) = doc {
            let g = top
                .entry(Y::String(group.into()))
                .or_insert_with(|| Y::Mapping(Default::default()));
            if let Y::Mapping(m) = g {
                m.insert(Y::String(key.into()), v);
            }
        }
    };
    let s = |p: &Path| Y::String(absolute(p).display().to_string());
    set(
        &mut doc,
        "model_parameters",
        "onnx_model",
        s(&prep.cfg.model.onnx_model),
    );
    set(
        &mut doc,
        "model_parameters",
        "working_dir",
        Y::String(absolute(save_dir).join("hb_calib").display().to_string()),
    );
    let dirs: Vec<String> = prep
        .cfg
        .calibration
        .cal_data_dir
        .iter()
        .map(|d| absolute(d).display().to_string())
        .collect();
    set(
        &mut doc,
        "calibration_parameters",
        "cal_data_dir",
        Y::String(dirs.join(";")),
    );
    set(
        &mut doc,
        "calibration_parameters",
        "quant_config",
        Y::String("quant_config.json".into()),
    );
    let body = serde_yaml::to_string(&doc).map_err(ToolError::input)?;
    Ok(format!(
        "# Written by hb-debugger tune from {}: the same config with quant_config = the tuned\n# quant_config.json beside this file. Run: hb-calib --config <this file>\n{body}",
        prep.cfg.path.display()
    ))
}

/// Runs `tune`.
pub fn tune(a: &TuneArgs, progress: bool) -> ToolResult<Tune> {
    let clock = std::time::Instant::now();
    let metric_opt = match &a.metric {
        Some(m) => {
            let m = metric_alias(m);
            super::common::check_metrics(std::slice::from_ref(&m))?;
            Some(m)
        }
        None => None,
    };
    let config = a
        .config
        .as_ref()
        .ok_or_else(|| ToolError::input("tune needs --config model.yaml"))?;
    let spec = a
        .target
        .as_deref()
        .ok_or_else(|| ToolError::input("tune needs --target (e.g. cosine>=0.99)"))?;
    let target = parse_target(spec, metric_opt.as_deref(), a.eval_cmd.is_some())?;
    let mut allow = Vec::new();
    for x in &a.allow {
        let x = x.trim().to_ascii_lowercase();
        if !["ec", "float16", "subgraph", "int16"].contains(&x.as_str()) {
            return Err(ToolError::input(format!(
                "--allow '{x}': one of ec, float16, subgraph"
            )));
        }
        allow.push(x);
    }
    let rank_metric = metric_opt.clone().unwrap_or_else(|| {
        if target.builtin {
            target.name.clone()
        } else {
            "cosine-similarity".into()
        }
    });
    let table_metric = if target.builtin {
        target.name.clone()
    } else {
        "cosine-similarity".into()
    };
    let mut laps = hb_quant::pipeline::Laps::start();
    let prep = prepare(config, None, &mut laps)?;
    let mut notes = Vec::new();
    // Held-out samples and their float outputs.
    let (eval_text, eval_dirs) = eval_source(&prep, a.eval_data.as_deref(), &mut notes)?;
    let limit = (a.eval_num > 0).then_some(a.eval_num);
    let eval_fs = FolderSamples::open(
        &prep.infos,
        &eval_dirs,
        &prep.cfg.calibration.cal_data_type,
        limit,
    )?;
    eval_fs.check_all()?;
    let eval: Vec<Sample> = (0..eval_fs.count())
        .map(|k| eval_fs.load(k).map_err(ToolError::input))
        .collect::<ToolResult<_>>()?;
    if eval.is_empty() {
        return Err(ToolError::input(format!(
            "{eval_text}: no evaluation samples"
        )));
    }
    let mut qc = prep.qc.clone();
    if qc.model.layerwise_search.is_some()
        || qc
            .model
            .activation
            .calibration_type
            .iter()
            .any(|t| t == "mix")
    {
        notes.push("layerwise_search / mix dropped: every step uses the one whole-model method the first calibration chose".into());
        qc.model.layerwise_search = None;
        qc.model.activation.calibration_type.retain(|t| t != "mix");
    }
    let opts = Options {
        max_num_bin: qc.model.activation.max_num_bin.unwrap_or(4096),
        search_samples: 10,
        progress: false,
    };
    let cfg_err = |e: hb_quant::pipeline::CalibError| {
        ToolError::input(format!("{}: {e}", prep.cfg.path.display()))
    };
    if progress {
        eprintln!("tune: calibrating {}", prep.cfg.path.display());
    }
    let stats = collect_statistics(&prep.optimized, &qc, &prep.data, &opts).map_err(cfg_err)?;
    let first = calibrate_with(&prep.optimized, &qc, &stats, &prep.data, &opts).map_err(cfg_err)?;
    let mut base_qc = qc.clone();
    base_qc.model.activation = activation_for(&first.chosen, &qc.model.activation);
    if let Some(s) = base_qc.model.modelwise_search.as_mut() {
        s.similarity = None;
    }
    // Sensitivity on calibration samples, as get-sensitivity-of-nodes.
    let cal = Calibrated::from_model(&prep.cfg.path, first.calibrated.clone())?;
    let units = sensitivity::units(&cal, Granularity::Node, &[])?;
    let n_sens = if a.data_num == 0 {
        prep.data.count()
    } else {
        a.data_num.min(prep.data.count())
    };
    let sens_samples: Vec<Sample> = (0..n_sens)
        .map(|k| prep.data.load(k).map_err(ToolError::input))
        .collect::<ToolResult<_>>()?;
    let float_session = Session::new(&prep.optimized)?;
    let float: Vec<Vec<(String, Tensor)>> = eval
        .par_iter()
        .map(|s| float_session.run(s))
        .collect::<Result<_, _>>()?;
    let eval_cmd = match &a.eval_cmd {
        Some(t) => Some(EvalCmd::new(t, &float)?),
        None => None,
    };
    let graph = &prep.optimized.graph;
    let unit_pos: Vec<(String, usize)> = units
        .iter()
        .filter_map(|u| {
            graph
                .nodes
                .iter()
                .position(|n| n.name == u.name)
                .map(|i| (u.name.clone(), i))
        })
        .collect();
    let mut ctx = Ctx {
        prep: &prep,
        stats: &stats,
        base_qc,
        opts,
        eval,
        float,
        target: target.clone(),
        table_metric,
        eval_cmd,
        units: unit_pos,
        max_int16: a.max_int16,
        max_evals: a.max_evals.max(3),
        steps: Vec::new(),
        seen: HashMap::new(),
        progress,
    };
    let empty = Cand::default();
    let s0 = ctx.eval("int8", None, "as calibrated".into(), empty.clone())?;
    // The ranking is needed only when step 0 misses the target (or for --sweep).
    let sens: Option<Sensitivity> = if !ctx.ok(s0) || a.sweep {
        if progress {
            eprintln!(
                "tune: sensitivity of {} nodes on {} samples",
                units.len(),
                n_sens
            );
        }
        Some(sensitivity::run(
            &cal,
            units.clone(),
            Granularity::Node,
            &sens_samples,
            &SensOptions {
                metrics: vec![rank_metric.clone()],
                targets: sensitivity::resolve_targets(&cal, &[])?,
                naive: false,
                progress: false,
            },
        )?)
    } else {
        None
    };
    let ranked: Vec<(&str, f64)> = sens
        .iter()
        .flat_map(|s| s.rows.iter())
        .map(|r| (r.unit.name.as_str(), r.metrics[&rank_metric]))
        .collect();
    let thresholds = match &sens {
        Some(sn) if a.thresholds.is_empty() => default_thresholds(&rank_metric, sn),
        _ => a.thresholds.clone(),
    };
    let cap = a.max_int16.unwrap_or(usize::MAX);
    let all: Vec<&str> = ranked.iter().map(|r| r.0).collect();
    if !ctx.ok(s0) || a.sweep {
        let upper = ctx.eval(
            "all-int16",
            None,
            format!("all {}", all.len()),
            with(&empty, &all, Level::Int16),
        )?;
        if ctx.steps[upper].meets {
            let found = if ctx.ok(s0) {
                // --sweep on a model that already meets the target: the table only.
                for &t in &thresholds {
                    let k = ranked
                        .iter()
                        .take_while(|r| at_or_worse(&rank_metric, r.1, t))
                        .count();
                    if k > 0 {
                        ctx.eval(
                            "threshold",
                            Some(t),
                            format!("first {k}"),
                            with(&empty, &all[..k], Level::Int16),
                        )?;
                    }
                }
                None
            } else {
                minimize(
                    &mut ctx,
                    &empty,
                    &ranked,
                    Level::Int16,
                    &rank_metric,
                    &thresholds,
                    a.sweep,
                    cap,
                )?
            };
            if let Some(set) = found {
                if allow.iter().any(|x| x == "ec") {
                    let mut cur = set.clone();
                    let eligible: Vec<String> = cur
                        .nodes
                        .iter()
                        .filter(|(n, l)| **l == Level::Int16 && !ec_inputs(graph, n).is_empty())
                        .map(|(n, _)| n.clone())
                        .collect();
                    for n in eligible {
                        if !ctx.budget_left() {
                            break;
                        }
                        let mut c = cur.clone();
                        c.nodes.insert(n.clone(), Level::Ec);
                        let i = ctx.eval("ec", None, format!("{n}→ec"), c.clone())?;
                        if ctx.ok(i) {
                            cur = c;
                        }
                    }
                }
            }
            if allow.iter().any(|x| x == "subgraph") && !ctx.ok(s0) {
                // The smallest int16 tail (graph order) that meets the target.
                let (mut lo, mut hi) = (0usize, ctx.units.len());
                // lo: a tail start that meets (0 = everything), hi: one that does not.
                while hi - lo > 1 && ctx.budget_left() {
                    let mid = lo + (hi - lo) / 2;
                    let c = Cand {
                        nodes: BTreeMap::new(),
                        tail: Some(mid),
                    };
                    let from = ctx.units.get(mid).map_or(String::new(), |u| u.0.clone());
                    let i = ctx.eval("subgraph", None, format!("tail from {from}"), c)?;
                    if ctx.ok(i) {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
            }
        } else {
            notes.push(format!(
                "every node int16 gives {} = {}: int16 alone cannot reach the target",
                target.name,
                fmt_metric(ctx.steps[upper].score)
            ));
            let f16 = prep.cfg.model.march.allows(QType::Float16);
            if allow.iter().any(|x| x == "float16") && f16 {
                let fixed = with(&empty, &all, Level::Int16);
                let found = minimize(
                    &mut ctx,
                    &fixed,
                    &ranked,
                    Level::Float16,
                    &rank_metric,
                    &thresholds,
                    false,
                    usize::MAX,
                )?;
                if let Some(set) = found {
                    // Demote the int16 nodes that are not needed, least sensitive first.
                    let mut cur = set;
                    for (n, _) in ranked.iter().rev() {
                        if !ctx.budget_left() {
                            break;
                        }
                        if cur.nodes.get(*n) != Some(&Level::Int16) {
                            continue;
                        }
                        let mut c = cur.clone();
                        c.nodes.remove(*n);
                        let i = ctx.eval("demote", None, format!("-{n}"), c.clone())?;
                        if ctx.ok(i) {
                            cur = c;
                        }
                    }
                }
            } else if allow.iter().any(|x| x == "float16") {
                notes.push(format!(
                    "--allow float16 ignored: march {} has no float16",
                    prep.cfg.model.march.name()
                ));
            }
        }
    }
    if ctx.steps.len() >= ctx.max_evals {
        notes.push(format!(
            "stopped refining after --max-evals {} steps",
            ctx.max_evals
        ));
    }
    // The cheapest config meeting the target, else the best score.
    let steps = &ctx.steps;
    let meeting: Vec<&Step> = steps.iter().filter(|s| s.meets && s.allowed).collect();
    let better = |a: f64, b: f64| -> bool {
        if target.higher {
            a > b
        } else {
            a < b
        }
    };
    let best = if !meeting.is_empty() {
        meeting
            .iter()
            .min_by(|x, y| {
                (x.float16, x.int16, x.ec)
                    .cmp(&(y.float16, y.int16, y.ec))
                    .then_with(|| {
                        if better(x.score, y.score) {
                            std::cmp::Ordering::Less
                        } else if better(y.score, x.score) {
                            std::cmp::Ordering::Greater
                        } else {
                            std::cmp::Ordering::Equal
                        }
                    })
            })
            .map_or(0, |s| s.step)
    } else {
        let mut b = 0;
        for s in steps.iter().filter(|s| s.allowed) {
            if better(s.score, steps[b].score) || (steps[b].score.is_nan() && !s.score.is_nan()) {
                b = s.step;
            }
        }
        b
    };
    let best_qc = ctx.qc_for(&steps[best].cand);
    let below_0999 = (rank_metric == "cosine-similarity" && sens.is_some()).then(|| {
        ranked
            .iter()
            .filter(|r| r.1 < 0.999 || r.1.is_nan())
            .count()
    });
    let reached = steps[best].meets;
    let first_batch = steps
        .iter()
        .find(|s| s.stage == "threshold" && s.meets && s.allowed)
        .and_then(|s| s.threshold.map(|t| (t, s.int16)));
    let steps = ctx.steps.clone();
    drop(ctx);
    let mut result = Tune {
        config: prep.cfg.path.display().to_string(),
        target,
        sensitivity_metric: rank_metric,
        method: first.chosen.to_string(),
        eval_data: eval_text,
        eval_samples: eval_fs.count(),
        below_0999,
        first_batch,
        steps,
        best,
        reached,
        quant_config: qc_to_json(&best_qc),
        notes,
        written: Vec::new(),
        seconds: 0.0,
        sensitivity: sens,
        text: String::new(),
    };
    let dir = &a.save_dir;
    let files = [
        dir.join("quant_config.json"),
        dir.join("tuned.yaml"),
        dir.join("tune.txt"),
        dir.join("tune.json"),
    ];
    result.written = files.iter().map(|p| p.display().to_string()).collect();
    let yaml = tuned_yaml(&prep, dir)?;
    result.seconds = clock.elapsed().as_secs_f64();
    let text = render(&result, &prep, dir);
    write_text(&files[0], &to_json(&result.quant_config)?)?;
    write_text(&files[1], &yaml)?;
    write_text(&files[2], &text)?;
    write_text(&files[3], &to_json(&result)?)?;
    result.text = text;
    Ok(result)
}

fn fmt_threshold(t: f64) -> String {
    if t != 0.0 && (t.abs() < 1e-3 || t.abs() >= 1e6) {
        format!("{t:.3e}")
    } else {
        format!("{}", (t * 1e9).round() / 1e9)
    }
}

fn short(s: &str, n: usize) -> String {
    let c: Vec<char> = s.chars().collect();
    if c.len() <= n {
        s.to_string()
    } else {
        let tail: String = c[c.len() - (n - 3)..].iter().collect();
        format!("...{tail}")
    }
}

/// The report: sensitivity (20 worst), the table of steps, the best config.
pub fn render(t: &Tune, prep: &Prepared, dir: &Path) -> String {
    let mut s = format!(
        "tune {}: target {} on every output (mean over {} evaluation sample(s) from {})\n",
        t.config,
        t.target.text(),
        t.eval_samples,
        t.eval_data
    );
    s.push_str(&format!(
        "method {} (chosen by the first calibration, fixed for every step); nodes ranked by {}\n",
        t.method, t.sensitivity_metric
    ));
    for n in &t.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    s.push('\n');
    match &t.sensitivity {
        Some(sn) => s.push_str(&sensitivity::render(sn, Some(20))),
        None => s.push_str(
            "sensitivity not computed: the model as calibrated meets the target (--sweep computes it)\n",
        ),
    }
    s.push('\n');
    let outs: Vec<String> = t.steps[0]
        .outputs
        .iter()
        .map(|o| o.output.clone())
        .collect();
    let mut header: Vec<String> = vec![
        "step".into(),
        "stage".into(),
        format!("{} <=", t.sensitivity_metric),
        "change".into(),
        "int16".into(),
        "ec".into(),
        "float16".into(),
    ];
    let col = if t.target.builtin {
        t.target.name.clone()
    } else {
        "cosine".into()
    };
    for o in &outs {
        header.push(format!("{o} {col}"));
    }
    if !t.target.builtin {
        header.push(t.target.name.clone());
    }
    header.push("target".into());
    let body: Vec<Vec<String>> = t
        .steps
        .iter()
        .map(|st| {
            let mut v = vec![
                if st.step == t.best {
                    format!("{}*", st.step)
                } else {
                    st.step.to_string()
                },
                st.stage.clone(),
                st.threshold.map_or("-".into(), fmt_threshold),
                short(&st.change, 40),
                st.int16.to_string(),
                st.ec.to_string(),
                st.float16.to_string(),
            ];
            for o in &st.outputs {
                v.push(fmt_metric(o.value));
            }
            if let Some(c) = st.custom {
                v.push(fmt_metric(c));
            }
            v.push(
                match (st.meets, st.allowed) {
                    (true, true) => "met",
                    (true, false) => "met (> --max-int16)",
                    _ => "-",
                }
                .into(),
            );
            v
        })
        .collect();
    let h: Vec<&str> = header.iter().map(String::as_str).collect();
    s.push_str(&table(&h, &body));
    let b = &t.steps[t.best];
    s.push_str(&format!(
        "\n{} step {}: {} int16, {} ec, {} float16 node(s); {} = {}{}\n",
        if t.reached {
            "target met by"
        } else {
            "target NOT met; best is"
        },
        b.step,
        b.int16,
        b.ec,
        b.float16,
        t.target.name,
        fmt_metric(b.score),
        t.below_0999
            .map(|n| format!(" (promoting every node with sensitivity < 0.999: {n} node(s))"))
            .unwrap_or_default()
    ));
    if let Some((th, n)) = t.first_batch {
        s.push_str(&format!(
            "the first sensitivity batch meeting the target (every node <= {}) has {n} int16 node(s)\n",
            fmt_threshold(th)
        ));
    }
    if !b.calibration_cosine.is_empty() {
        s.push_str(&format!(
            "cosine per output on the calibration search samples (hb-calib's log): {}\n",
            b.calibration_cosine
                .iter()
                .map(|c| format!("{c:.6}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let promoted: Vec<String> = b
        .promoted
        .iter()
        .map(|(n, l)| format!("{n}:{}", format!("{l:?}").to_ascii_lowercase()))
        .collect();
    if !promoted.is_empty() {
        s.push_str(&format!("promoted: {}\n", promoted.join(", ")));
    }
    s.push_str(&format!(
        "{} step(s) in {:.1} s; wrote {}\n",
        t.steps.len(),
        t.seconds,
        t.written.join(", ")
    ));
    s.push_str(&format!(
        "reproduce: hb-calib --config {} && hb-info {}/hb_calib/{}_calibrated_model.onnx -c <evaluation data>\n",
        dir.join("tuned.yaml").display(),
        dir.display(),
        prep.cfg.model.output_model_file_prefix
    ));
    s
}

/// The `tune` subcommand.
pub fn run_cli(a: TuneArgs) -> ToolResult<()> {
    let progress = super::progress(a.json);
    let t = tune(&a, progress)?;
    if a.json {
        println!("{}", to_json(&t)?);
    } else {
        print!("{}", t.text);
    }
    if !t.reached {
        return Err(ToolError::failed(format!(
            "target {} not reached (best {} = {}); the best config is in {}",
            t.target.text(),
            t.target.name,
            fmt_metric(t.steps[t.best].score),
            a.save_dir.join("quant_config.json").display()
        )));
    }
    Ok(())
}
