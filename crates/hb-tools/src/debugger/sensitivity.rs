//! `get-sensitivity-of-nodes`: quantize ONE node (its calibration nodes ON,
//! every other calibration node OFF) and score the outputs against float.
//!
//! The fast method: per sample, the float model runs once keeping every
//! value; for each node only its calibration nodes' outputs are replaced
//! (fake-quantized from the cached float input) and only the steps
//! downstream of them are recomputed ([`Session::rerun_downstream`]). Nodes
//! run in parallel. `--naive` builds one model per node and re-runs it in
//! full: same numbers, used to check and to time the fast method.

use super::common::{bar, capture, fmt_metric, worse_first, Calibrated};
use crate::cli::{ToolError, ToolResult};
use crate::inputs::Sample;
use hb_float::{Session, ValueCache};
use hb_ir::Attr;
use hb_quant::calibrated::is_calibration;
use hb_quant::report::table;
use hb_tensor::Tensor;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

/// What one sensitivity unit quantizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// A model node: every calibration node feeding it (activations and
    /// weights) and the quantization of its model output, if any.
    Node,
    /// One weight calibration node.
    Weight,
    /// One activation (feature) calibration node.
    Activation,
}

impl Granularity {
    /// `node`, `weight` or `activation`.
    pub fn name(self) -> &'static str {
        match self {
            Granularity::Node => "node",
            Granularity::Weight => "weight",
            Granularity::Activation => "activation",
        }
    }
}

/// One thing whose sensitivity is measured.
#[derive(Debug, Clone, Serialize)]
pub struct Unit {
    /// Node name (model node, or calibration node for weight/activation).
    pub name: String,
    /// Op type of the model node (or of the first node reading the calibration node).
    pub op: String,
    /// Indices into [`Calibrated::nodes`] switched ON for this unit.
    #[serde(skip)]
    pub calib: Vec<usize>,
    /// Names of those calibration nodes.
    pub calibration_nodes: Vec<String>,
}

/// The units of `cal` at granularity `g`, in graph order; `interested`
/// (names of model nodes or calibration nodes) keeps only those.
pub fn units(cal: &Calibrated, g: Granularity, interested: &[String]) -> ToolResult<Vec<Unit>> {
    let graph = &cal.model.graph;
    let mut out = Vec::new();
    match g {
        Granularity::Node => {
            for (i, n) in graph.nodes.iter().enumerate() {
                if is_calibration(n) {
                    continue;
                }
                let mut calib: Vec<usize> = cal
                    .inputs_of(i)
                    .into_iter()
                    .filter(|&c| !cal.nodes[c].is_noop())
                    .collect();
                for (k, c) in cal.nodes.iter().enumerate() {
                    if c.model_output && n.outputs.contains(&c.input) && !c.is_noop() {
                        calib.push(k);
                    }
                }
                calib.dedup();
                if calib.is_empty() {
                    continue;
                }
                out.push(Unit {
                    name: n.name.clone(),
                    op: n.op_type.clone(),
                    calibration_nodes: calib.iter().map(|&c| cal.nodes[c].name.clone()).collect(),
                    calib,
                });
            }
        }
        Granularity::Weight | Granularity::Activation => {
            let want_weight = g == Granularity::Weight;
            for (k, c) in cal.nodes.iter().enumerate() {
                if c.is_weight != want_weight || c.is_noop() {
                    continue;
                }
                let op = c.consumers.first().map_or("output".to_string(), |(n, _)| {
                    graph.nodes[*n].op_type.clone()
                });
                out.push(Unit {
                    name: c.name.clone(),
                    op,
                    calib: vec![k],
                    calibration_nodes: vec![c.name.clone()],
                });
            }
        }
    }
    if !interested.is_empty() {
        for name in interested {
            let known = out.iter().any(|u| &u.name == name)
                || out
                    .iter()
                    .any(|u| u.calibration_nodes.iter().any(|c| c == name));
            if !known {
                return Err(ToolError::input(format!(
                    "{}: '{name}' is not a {} with calibration nodes in this model",
                    cal.path.display(),
                    g.name()
                )));
            }
        }
        out.retain(|u| {
            interested.contains(&u.name)
                || u.calibration_nodes.iter().any(|c| interested.contains(c))
        });
    }
    Ok(out)
}

/// Options of a sensitivity run.
#[derive(Debug, Clone)]
pub struct SensOptions {
    /// Metric names; the table is sorted by the first.
    pub metrics: Vec<String>,
    /// Score at these values instead of the model outputs.
    pub targets: Vec<String>,
    /// Full re-run per node instead of reuse.
    pub naive: bool,
    /// Show a progress bar.
    pub progress: bool,
}

/// One row of the sensitivity table.
#[derive(Debug, Clone, Serialize)]
pub struct SensRow {
    /// The unit.
    #[serde(flatten)]
    pub unit: Unit,
    /// Metric → mean over targets and samples.
    pub metrics: BTreeMap<String, f64>,
    /// Target → metric → mean over samples.
    pub per_target: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Observed float range of every calibration node's input over the samples.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Observed {
    /// Smallest finite value above the mask limit.
    pub min: f32,
    /// Largest finite value.
    pub max: f32,
}

/// The result of a sensitivity run.
#[derive(Debug, Clone, Serialize)]
pub struct Sensitivity {
    /// `node`, `weight` or `activation`.
    pub granularity: Granularity,
    /// Metrics, first = sort key.
    pub metrics: Vec<String>,
    /// Values scored.
    pub targets: Vec<String>,
    /// Samples used.
    pub samples: usize,
    /// `reuse` or `naive`.
    pub method: &'static str,
    /// Wall time (s).
    pub seconds: f64,
    /// Rows, worst first.
    pub rows: Vec<SensRow>,
    /// Float range of each calibration node's input (by calibration node
    /// name), seen on the samples (reuse method only).
    #[serde(skip)]
    pub observed: Vec<Observed>,
}

/// The values scored: the named node's first output or a value name; the
/// model outputs when `names` is empty.
pub fn resolve_targets(cal: &Calibrated, names: &[String]) -> ToolResult<Vec<String>> {
    let g = &cal.model.graph;
    if names.is_empty() {
        return Ok(g.outputs.iter().map(|o| o.name.clone()).collect());
    }
    names
        .iter()
        .map(|n| {
            if let Some(i) = cal.node_index(n) {
                return g.nodes[i]
                    .outputs
                    .first()
                    .cloned()
                    .ok_or_else(|| ToolError::input(format!("node '{n}' has no output")));
            }
            let produced = g.nodes.iter().any(|x| x.outputs.contains(n));
            if produced || g.inputs.iter().any(|v| &v.name == n) {
                Ok(n.clone())
            } else {
                Err(ToolError::input(format!(
                    "{}: -o '{n}' is neither a node nor a value of the model",
                    cal.path.display()
                )))
            }
        })
        .collect()
}

type Scores = Vec<Vec<Vec<f64>>>; // unit → target → metric

fn score_targets(got: &[&Tensor], float: &[&Tensor], metrics: &[String]) -> Vec<Vec<f64>> {
    got.iter()
        .zip(float)
        .map(|(b, a)| {
            metrics
                .iter()
                .map(|m| super::common::metric(m, a, b).unwrap_or(f64::NAN))
                .collect()
        })
        .collect()
}

fn add(acc: &mut Scores, s: &Scores) {
    for (a, b) in acc.iter_mut().zip(s) {
        for (x, y) in a.iter_mut().zip(b) {
            for (p, q) in x.iter_mut().zip(y) {
                *p += q;
            }
        }
    }
}

fn observe(
    obs: &mut [Observed],
    cal: &Calibrated,
    session: &Session,
    cache: &ValueCache,
    first: bool,
) {
    for (o, c) in obs.iter_mut().zip(&cal.nodes) {
        let Some(t) = session.value_id(&c.input).and_then(|id| cache.get(id)) else {
            continue;
        };
        let Ok(a) = t.to_f32_cow() else { continue };
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for &x in a.iter() {
            if x.is_finite() && x > -hb_float::kernels::horizon::MASK_LIMIT {
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
        if first {
            *o = Observed { min: lo, max: hi };
        } else {
            o.min = o.min.min(lo);
            o.max = o.max.max(hi);
        }
    }
}

/// Runs the sensitivity analysis of `units` over `samples`.
pub fn run(
    cal: &Calibrated,
    units: Vec<Unit>,
    granularity: Granularity,
    samples: &[Sample],
    opts: &SensOptions,
) -> ToolResult<Sensitivity> {
    let clock = std::time::Instant::now();
    let session = cal.float_session()?;
    let targets = opts.targets.clone();
    let target_ids: Vec<usize> = targets
        .iter()
        .map(|t| {
            session
                .value_id(t)
                .ok_or_else(|| ToolError::input(format!("value '{t}' is not in the model")))
        })
        .collect::<ToolResult<_>>()?;
    let nm = opts.metrics.len();
    let zero = || vec![vec![vec![0.0; nm]; targets.len()]; units.len()];
    let mut acc: Scores = zero();
    let mut observed = vec![Observed::default(); cal.nodes.len()];
    // Each calibration node with its switch ON (the seeds of the reruns).
    let switched_on: Vec<hb_ir::Node> = cal
        .nodes
        .iter()
        .map(|c| {
            let mut n = cal.model.graph.nodes[c.step].clone();
            n.set_attr("switch", Attr::String("ON".into()));
            n
        })
        .collect();
    let pb = bar(samples.len() * units.len(), "sensitivity", opts.progress);
    if opts.naive {
        let floats: Vec<Vec<Tensor>> = samples
            .iter()
            .map(|s| capture(&session, s, &targets))
            .collect::<ToolResult<_>>()?;
        let per_unit: Vec<Vec<Vec<f64>>> = units
            .par_iter()
            .map(|u| {
                let mut m = cal.float_model();
                for &c in &u.calib {
                    m.graph.nodes[cal.nodes[c].step].set_attr("switch", Attr::String("ON".into()));
                }
                let s = Session::new(&m)?;
                let mut sum = vec![vec![0.0; nm]; targets.len()];
                for (sample, fl) in samples.iter().zip(&floats) {
                    let got = capture(&s, sample, &targets)?;
                    let got: Vec<&Tensor> = got.iter().collect();
                    let fl: Vec<&Tensor> = fl.iter().collect();
                    let sc = score_targets(&got, &fl, &opts.metrics);
                    for (a, b) in sum.iter_mut().zip(&sc) {
                        for (p, q) in a.iter_mut().zip(b) {
                            *p += q;
                        }
                    }
                    pb.inc(1);
                }
                Ok(sum)
            })
            .collect::<ToolResult<_>>()?;
        acc = per_unit;
    } else {
        for (k, sample) in samples.iter().enumerate() {
            let cache = session.run_cached(sample)?;
            observe(&mut observed, cal, &session, &cache, k == 0);
            let float: Vec<&Tensor> = target_ids
                .iter()
                .map(|&id| {
                    cache
                        .get(id)
                        .ok_or_else(|| ToolError::input("a target value was not produced"))
                })
                .collect::<ToolResult<_>>()?;
            let part: Scores = units
                .par_iter()
                .map(|u| {
                    let seeds: Vec<(usize, &hb_ir::Node)> = u
                        .calib
                        .iter()
                        .map(|&c| (cal.nodes[c].step, &switched_on[c]))
                        .collect();
                    let got = session.rerun_downstream(&cache, &seeds, &target_ids)?;
                    let got: Vec<&Tensor> = got.iter().map(|(t, _)| t.as_ref()).collect();
                    pb.inc(1);
                    Ok(score_targets(&got, &float, &opts.metrics))
                })
                .collect::<ToolResult<_>>()?;
            add(&mut acc, &part);
        }
    }
    pb.finish_and_clear();
    let n = samples.len().max(1) as f64;
    let mut rows: Vec<SensRow> = units
        .into_iter()
        .zip(acc)
        .map(|(unit, per)| {
            let mut per_target = BTreeMap::new();
            let mut metrics = BTreeMap::new();
            for (mi, m) in opts.metrics.iter().enumerate() {
                let mut total = 0.0;
                for (ti, t) in targets.iter().enumerate() {
                    let v = per[ti][mi] / n;
                    total += v;
                    per_target
                        .entry(t.clone())
                        .or_insert_with(BTreeMap::new)
                        .insert(m.clone(), v);
                }
                metrics.insert(m.clone(), total / targets.len().max(1) as f64);
            }
            SensRow {
                unit,
                metrics,
                per_target,
            }
        })
        .collect();
    let key = opts.metrics[0].clone();
    rows.sort_by(|a, b| worse_first(&key, a.metrics[&key], b.metrics[&key]));
    Ok(Sensitivity {
        granularity,
        metrics: opts.metrics.clone(),
        targets,
        samples: samples.len(),
        method: if opts.naive { "naive" } else { "reuse" },
        seconds: clock.elapsed().as_secs_f64(),
        rows,
        observed,
    })
}

/// The table as text (hmct-debugger style), `limit` rows (all when `None`).
pub fn render(s: &Sensitivity, limit: Option<usize>) -> String {
    let mut header: Vec<&str> = vec![s.granularity.name(), "op"];
    header.extend(s.metrics.iter().map(|m| m.as_str()));
    let take = limit.unwrap_or(s.rows.len()).min(s.rows.len());
    let body: Vec<Vec<String>> = s.rows[..take]
        .iter()
        .map(|r| {
            let mut v = vec![r.unit.name.clone(), r.unit.op.clone()];
            v.extend(s.metrics.iter().map(|m| fmt_metric(r.metrics[m])));
            v
        })
        .collect();
    let title = format!("{} sensitivity", s.granularity.name());
    let t = table(&header, &body);
    let width = t
        .lines()
        .nth(1)
        .map_or(60, |l| l.len())
        .max(title.len() + 4);
    let pad = (width - title.len()) / 2;
    let mut out = format!(
        "{}{}{}\n",
        "=".repeat(pad),
        title,
        "=".repeat(width - pad - title.len())
    );
    out.push_str(&t);
    if take < s.rows.len() {
        out.push_str(&format!(
            "... {} more (-v prints all, -s saves all)\n",
            s.rows.len() - take
        ));
    }
    out.push_str(&format!(
        "{} {}(s) scored on {} sample(s) at {} in {:.2} s ({})\n",
        s.rows.len(),
        s.granularity.name(),
        s.samples,
        s.targets.join(", "),
        s.seconds,
        s.method
    ));
    out
}
