//! What a calibration run tells the user: the per-node and per-output tables
//! of REFERENCE.md §3 and the traps it met (masks, all-zero tensors,
//! integer and constant inputs, saturation).

use crate::calib::candidate::Thresholds;
use crate::calib::observer::MASK_LIMIT;
use crate::config::Placement;
use crate::pipeline::StatsView;
use crate::plan::{CalibPoint, Plan};
use crate::qtype::QType;
use hb_float::{NodeHook, ValueDump};
use hb_ir::{Model, Node};
use hb_tensor::{metrics, Tensor};
use serde::Serialize;
use std::collections::HashMap;

/// Something the user should know about the calibration.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    /// `warning` or `info`.
    pub level: &'static str,
    /// A short stable key (`mask-values`, `integer-input`, ...).
    pub kind: &'static str,
    /// The sentence, naming the tensor and node.
    pub message: String,
}

impl Finding {
    /// A warning.
    pub fn warning(kind: &'static str, message: String) -> Self {
        Finding {
            level: "warning",
            kind,
            message,
        }
    }
    /// A note.
    pub fn info(kind: &'static str, message: String) -> Self {
        Finding {
            level: "info",
            kind,
            message,
        }
    }
}

/// One row of the per-node table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeRow {
    /// Node name.
    pub node: String,
    /// `BPU` or `CPU`.
    pub on: &'static str,
    /// Subgraph id (BPU segments), `None` for CPU nodes.
    pub subgraph: Option<usize>,
    /// Op type.
    pub op: String,
    /// Cosine of the node's first output, float vs fake-quant, on one calibration sample.
    pub cosine: Option<f64>,
    /// Threshold of its first quantized input (largest channel when per channel).
    pub threshold: Option<f32>,
    /// Its qtype.
    pub dtype: String,
    /// Why the lowering to `.bc` placed it on the CPU
    /// ([`apply_placement`]); `None` for BPU nodes and before lowering.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_reason: Option<String>,
}

/// One row of the per-output table (means over the scored samples).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutputRow {
    /// Output name.
    pub output: String,
    /// Cosine similarity.
    pub cosine: f64,
    /// L1 distance (mean |a − b|).
    pub l1: f64,
    /// L2 distance (‖a − b‖ / N).
    pub l2: f64,
    /// Chebyshev distance (max |a − b|).
    pub chebyshev: f64,
    /// The search metric.
    pub metric: f64,
}

impl OutputRow {
    /// A zeroed row.
    pub fn new(name: &str) -> Self {
        OutputRow {
            output: name.to_string(),
            cosine: 0.0,
            l1: 0.0,
            l2: 0.0,
            chebyshev: 0.0,
            metric: 0.0,
        }
    }
}

/// Subgraph ids: connected BPU nodes share an id, numbered in graph order.
fn subgraphs(model: &Model, plan: &Plan) -> Vec<Option<usize>> {
    subgraph_ids(model, &|i| plan.nodes[i].on == Placement::Bpu)
}

/// Subgraph ids of the nodes `bpu` says run on the BPU: connected ones
/// share an id, numbered in graph order.
fn subgraph_ids(model: &Model, bpu: &dyn Fn(usize) -> bool) -> Vec<Option<usize>> {
    let g = &model.graph;
    let n = g.nodes.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    let producer: HashMap<&str, usize> = g
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, nd)| nd.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect();
    for (i, nd) in g.nodes.iter().enumerate() {
        if !bpu(i) {
            continue;
        }
        for x in &nd.inputs {
            if let Some(&j) = producer.get(x.as_str()) {
                if bpu(j) {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    parent[a] = b;
                }
            }
        }
    }
    let mut ids: HashMap<usize, usize> = HashMap::new();
    (0..n)
        .map(|i| {
            if !bpu(i) {
                return None;
            }
            let r = find(&mut parent, i);
            let next = ids.len();
            Some(*ids.entry(r).or_insert(next))
        })
        .collect()
}

/// Sets the rows' placement to what the lowering to `.bc` decided: the
/// nodes of `cpu` (name → reason) run on the CPU, the others where the plan
/// put them; subgraph ids are recomputed over `model`'s connections (rows
/// are matched to its nodes by name; a row without a node gets no id).
pub fn apply_placement(rows: &mut [NodeRow], model: &Model, cpu: &HashMap<String, String>) {
    for r in rows.iter_mut() {
        if let Some(why) = cpu.get(&r.node) {
            r.on = "CPU";
            r.cpu_reason = Some(why.clone());
        }
    }
    let row_of: HashMap<String, usize> = rows
        .iter()
        .enumerate()
        .map(|(k, r)| (r.node.clone(), k))
        .collect();
    let nodes = &model.graph.nodes;
    let on: Vec<bool> = nodes
        .iter()
        .map(|n| row_of.get(&n.name).is_some_and(|&k| rows[k].on == "BPU"))
        .collect();
    let ids = subgraph_ids(model, &|i| on[i]);
    for r in rows.iter_mut() {
        r.subgraph = None;
    }
    for (n, id) in nodes.iter().zip(ids) {
        if let Some(&k) = row_of.get(&n.name) {
            rows[k].subgraph = id;
        }
    }
}

fn flat(t: &Tensor) -> Option<Vec<f32>> {
    t.to_f32().ok().map(|a| a.iter().copied().collect())
}

/// Cosine similarity of two tensors of the same size (`None` when empty,
/// of other sizes, or not numeric). Contiguous f32 tensors are read in place.
fn tensor_cosine(a: &Tensor, b: &Tensor) -> Option<f64> {
    if let (Tensor::F32(x), Tensor::F32(y)) = (a, b) {
        if let (Some(x), Some(y)) = (x.as_slice(), y.as_slice()) {
            return (x.len() == y.len() && !x.is_empty()).then(|| metrics::cosine(x, y));
        }
    }
    let (a, b) = (flat(a)?, flat(b)?);
    (a.len() == b.len() && !a.is_empty()).then(|| metrics::cosine(&a, &b))
}

/// A hook for the fake-quant run of the per-node table: as each value is
/// produced, its cosine against the float value of the same name (from a
/// [`ValueDump`] of the float run on the same sample) is taken, so the
/// fake-quant values are never copied.
pub struct NodeCosines<'a> {
    float: HashMap<&'a str, &'a Tensor>,
    /// Cosine per value name (values the float run also produced).
    pub cosines: HashMap<String, Option<f64>>,
}

impl<'a> NodeCosines<'a> {
    /// A hook comparing against the values of `float`.
    pub fn new(float: &'a ValueDump) -> Self {
        NodeCosines {
            float: float
                .values
                .iter()
                .map(|(_, v, t)| (v.as_str(), &**t))
                .collect(),
            cosines: HashMap::new(),
        }
    }
}

impl NodeHook for NodeCosines<'_> {
    fn after_node(&mut self, _i: usize, node: &Node, outputs: &mut [Tensor]) -> Result<(), String> {
        // The table reads each node's first output.
        if let (Some(name), Some(q)) = (node.outputs.first(), outputs.first()) {
            if let Some(f) = self.float.get(name.as_str()) {
                self.cosines.insert(name.clone(), tensor_cosine(f, q));
            }
        }
        Ok(())
    }
}

/// The per-node table: the cosines of one sample's fake-quant values
/// against its float values, by value name ([`NodeCosines`]).
pub fn node_rows(
    model: &Model,
    plan: &Plan,
    points: &[CalibPoint],
    thresholds: &[Thresholds],
    value_cosines: &HashMap<String, Option<f64>>,
) -> Vec<NodeRow> {
    let mut input_th: HashMap<usize, f32> = HashMap::new();
    for (p, t) in points.iter().zip(thresholds) {
        for &(node, input) in &p.consumers {
            if p.is_weight() {
                continue;
            }
            let e = input_th.entry(node).or_insert(f32::NAN);
            if e.is_nan() || input == 0 {
                *e = t.magnitude();
            }
        }
    }
    let sg = subgraphs(model, plan);
    let cosines: Vec<Option<f64>> = model
        .graph
        .nodes
        .iter()
        .map(|n| *value_cosines.get(n.outputs.first()?.as_str())?)
        .collect();
    model
        .graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let cosine = cosines[i];
            let nq = &plan.nodes[i];
            NodeRow {
                node: n.name.clone(),
                on: if nq.on == Placement::Bpu {
                    "BPU"
                } else {
                    "CPU"
                },
                subgraph: sg[i],
                op: n.op_type.clone(),
                cosine,
                threshold: input_th.get(&i).copied().filter(|t| !t.is_nan()),
                dtype: if nq.quantized {
                    let ec: Vec<String> = nq
                        .inputs
                        .iter()
                        .enumerate()
                        .filter(|(k, q)| {
                            **q == crate::config::InputQ::Ec && crate::ops::ec_allowed(n, *k)
                        })
                        .map(|(k, _)| format!("input{k} ec"))
                        .collect();
                    if ec.is_empty() {
                        nq.qtype.to_string()
                    } else {
                        format!("{} ({})", nq.qtype, ec.join(", "))
                    }
                } else if let Some(p) = nq.fused_into {
                    format!("fused into {}", model.graph.nodes[p].name)
                } else if nq.on == Placement::Cpu {
                    "float32".into()
                } else {
                    "--".into()
                },
                cpu_reason: None,
            }
        })
        .collect()
}

/// The traps of REFERENCE.md §6 met by this calibration.
pub fn trap_findings(
    model: &Model,
    points: &[CalibPoint],
    thresholds: &[Thresholds],
    stats: &StatsView,
    out: &mut Vec<Finding>,
) {
    let readers = |p: &CalibPoint| -> String {
        let mut names: Vec<&str> = p
            .consumers
            .iter()
            .map(|(n, _)| model.graph.nodes[*n].name.as_str())
            .collect();
        names.dedup();
        if names.is_empty() {
            "the model output".into()
        } else {
            names.join(", ")
        }
    };
    for (p, t) in points.iter().zip(thresholds) {
        if p.is_weight() {
            continue;
        }
        let Some(st) = stats.feature.get(p.tensor.as_str()) else {
            continue;
        };
        if st.mask_values > 0 {
            let total = st.mask_values + st.count();
            let what = if st.mask_limit < MASK_LIMIT {
                format!(
                    "-inf or x ≤ -{:e}: it only reaches a Softmax, where such values weigh exactly 0",
                    st.mask_limit
                )
            } else {
                format!("-inf or |x| ≥ {MASK_LIMIT:e}")
            };
            out.push(Finding::warning(
                "mask-values",
                format!(
                    "tensor '{}' (read by {}) holds mask values ({what}) in {:.1}% of its elements: they are left out of its threshold ({}, from the data values in [{}, {}]) and pass the calibration node unchanged",
                    p.tensor,
                    readers(p),
                    100.0 * st.mask_values as f64 / total.max(1) as f64,
                    fmt_th(t),
                    st.min,
                    st.max
                ),
            ));
        }
        if st.all_zero() && st.count() > 0 {
            out.push(Finding::warning(
                "all-zero",
                format!(
                    "tensor '{}' (read by {}) was 0 in every calibration sample: threshold set to 1.0",
                    p.tensor,
                    readers(p)
                ),
            ));
        }
    }
    for (name, dtype, st) in &stats.inputs {
        if !dtype.is_float() {
            out.push(Finding::info(
                "integer-input",
                format!(
                    "input '{name}' is {dtype} (indices, ids or timesteps): it is not quantized and stays exact"
                ),
            ));
        }
        if st.constant && st.samples > 1 {
            let value = if st.min == st.max {
                format!(" (always {})", st.min)
            } else {
                String::new()
            };
            out.push(Finding::warning(
                "constant-input",
                format!(
                    "input '{name}' is identical in all {} calibration samples{value}: thresholds downstream only cover that one value; calibrate with the values the model will see",
                    st.samples
                ),
            ));
        }
    }
    for (p, t) in points.iter().zip(thresholds) {
        if p.is_weight() || !model.graph.inputs.iter().any(|v| v.name == p.tensor) {
            continue;
        }
        let Some(st) = stats.feature.get(p.tensor.as_str()) else {
            continue;
        };
        let clipped = st.clipped_fraction(f64::from(t.magnitude()));
        if clipped > 1e-3 {
            out.push(Finding::warning(
                "input-saturation",
                format!(
                    "input '{}' ({}): {:.2}% of the calibration values exceed the threshold {} and saturate",
                    p.tensor,
                    p.qtype,
                    100.0 * clipped,
                    fmt_th(t)
                ),
            ));
        }
    }
}

/// One finding per input the precision guards promoted to int16
/// ([`crate::guards`]), with its threshold and the config line that keeps
/// int8 instead.
pub fn guard_findings(
    model: &Model,
    plan: &Plan,
    points: &[CalibPoint],
    thresholds: &[Thresholds],
    out: &mut Vec<Finding>,
) {
    for gi in &plan.guards {
        let node = &model.graph.nodes[gi.node];
        let th = points
            .iter()
            .zip(thresholds)
            .find(|(p, _)| !p.is_weight() && p.tensor == gi.tensor && p.qtype == QType::Int16)
            .map(|(_, t)| format!(" (threshold {})", fmt_th(t)))
            .unwrap_or_default();
        out.push(Finding::info(
            gi.guard.key(),
            format!(
                "node '{}' ({}) input{}: '{}' {}: read as int16 instead of int8{th}; to keep int8 set \"node_config\": {{\"{}\": {{\"input{}\": \"int8\"}}}}",
                node.name,
                node.op_type,
                gi.input,
                gi.tensor,
                gi.guard.reason(),
                node.name,
                gi.input
            ),
        ));
    }
}

fn fmt_th(t: &Thresholds) -> String {
    if t.asymmetric && t.values.len() == 2 {
        format!("[{:.6}, {:.6}]", t.values[0], t.values[1])
    } else if t.values.len() == 1 {
        format!("{:.6}", t.values[0])
    } else {
        format!("per channel, max {:.6}", t.magnitude())
    }
}

/// Renders a table with left-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut s = line(header.iter().map(|h| h.to_string()).collect());
    s.push('\n');
    s.push_str(&"-".repeat(w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1)));
    s.push('\n');
    for r in rows {
        s.push_str(&line(r.clone()));
        s.push('\n');
    }
    s
}

/// The per-node table as text.
pub fn render_nodes(rows: &[NodeRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.node.clone(),
                r.on.to_string(),
                r.subgraph.map_or("--".into(), |s| s.to_string()),
                r.op.clone(),
                r.cosine.map_or("--".into(), |c| format!("{c:.6}")),
                r.threshold.map_or("--".into(), |t| format!("{t:.6}")),
                r.dtype.clone(),
            ]
        })
        .collect();
    table(
        &[
            "Node",
            "ON",
            "Subgraph",
            "Type",
            "Cosine Similarity",
            "Threshold",
            "DataType",
        ],
        &body,
    )
}

/// The per-output table as text.
pub fn render_outputs(rows: &[OutputRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.output.clone(),
                format!("{:.6}", r.cosine),
                format!("{:.6}", r.l1),
                format!("{:.6}", r.l2),
                format!("{:.6}", r.chebyshev),
            ]
        })
        .collect();
    table(
        &[
            "Output",
            "Cosine Similarity",
            "L1 Distance",
            "L2 Distance",
            "Chebyshev Distance",
        ],
        &body,
    )
}
