//! The quantization plan: which tensors get a calibration node, with which
//! qtype, resolved from the config levels
//! `model_config < op_config < subgraph_config < node_config` (plus the
//! legacy forms `node_info`, `run_on_cpu` and `optimization` shortcuts).

use crate::config::{
    BiasCorrection, HbConfig, InputQ, NodeConfig, Placement, QuantConfig, SubgraphConfig,
};
use crate::guards::{integer_valued_tensors, is_periodic_argument, Guard, GuardedInput};
use crate::ops::{cpu_by_default, data_inputs, ec_allowed, is_quantized_op, weight_slot};
use crate::qtype::QType;
use hb_ir::Graph;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Folds every legacy spelling of the config into one `QuantConfig`:
/// `node_info` and `run_on_cpu` into `node_config` (node_config wins),
/// `optimization` shortcuts, and the top-level `calibration_type`,
/// `max_percentile`, `per_channel` into `model_config.activation` when the
/// quant_config does not set them.
pub fn effective_quant_config(cfg: &HbConfig) -> QuantConfig {
    let mut qc = cfg.calibration.quant_config.clone();
    qc.int16_forbidden = !cfg.model.march.allows(QType::Int16);
    for (name, info) in &cfg.model.node_info {
        let e = qc.node.entry(name.clone()).or_default();
        fill_missing(e, info);
    }
    for name in &cfg.calibration.run_on_cpu {
        let e = qc.node.entry(name.clone()).or_default();
        e.on.get_or_insert(Placement::Cpu);
    }
    let act = &mut qc.model.activation;
    if act.calibration_type.is_empty() {
        if let Some(t) = &cfg.calibration.calibration_type {
            if t != "default" {
                act.calibration_type = vec![t.clone()];
            }
        }
    }
    if act.max_percentile.is_empty() {
        if let Some(p) = cfg.calibration.max_percentile {
            act.max_percentile = vec![p];
        }
    }
    if act.per_channel.is_empty() {
        if let Some(p) = cfg.calibration.per_channel {
            act.per_channel = vec![p];
        }
    }
    for o in &cfg.calibration.optimization {
        match o.as_str() {
            "set_all_nodes_int16" => {
                qc.model.all_node_type.get_or_insert(QType::Int16);
            }
            "set_model_output_int8" => {
                qc.model.model_output_type.get_or_insert(QType::Int8);
            }
            "set_model_output_int16" => {
                qc.model.model_output_type.get_or_insert(QType::Int16);
            }
            "asymmetric" => {
                if qc.model.activation.asymmetric.is_empty() {
                    qc.model.activation.asymmetric = vec![true];
                }
            }
            "bias_correction" => {
                qc.model
                    .weight
                    .bias_correction
                    .get_or_insert(BiasCorrection {
                        num_sample: 1,
                        metric: "cosine-similarity".into(),
                    });
            }
            other => {
                if let Some(op) = other
                    .strip_prefix("set_")
                    .and_then(|s| s.strip_suffix("_input_int16"))
                {
                    let e = qc.op.entry(op.to_string()).or_default();
                    e.all_inputs.get_or_insert(InputQ::Type(QType::Int16));
                } else if let Some(op) = other
                    .strip_prefix("set_")
                    .and_then(|s| s.strip_suffix("_output_int16"))
                {
                    let e = qc.op.entry(op.to_string()).or_default();
                    e.output_type.get_or_insert(QType::Int16);
                }
            }
        }
    }
    qc
}

fn fill_missing(e: &mut NodeConfig, from: &NodeConfig) {
    if e.qtype.is_none() {
        e.qtype = from.qtype;
    }
    if e.all_inputs.is_none() {
        e.all_inputs = from.all_inputs;
    }
    if e.output_type.is_none() {
        e.output_type = from.output_type;
    }
    if e.on.is_none() {
        e.on = from.on;
    }
    for (k, v) in &from.inputs {
        e.inputs.entry(*k).or_insert(*v);
    }
}

/// A node's resolved quantization.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeQuant {
    /// The node's qtype (float32 when it runs on the CPU or is passive).
    pub qtype: QType,
    /// Per input position: the qtype (or ec) it is read with.
    pub inputs: Vec<InputQ>,
    /// Where it runs.
    pub on: Placement,
    /// The subgraph_config entry it belongs to, if any.
    pub subgraph: Option<String>,
    /// Whether the node computes on quantized inputs at all.
    pub quantized: bool,
    /// The weighted node (Conv/MatMul/Gemm) this bias Add is fused into: it
    /// runs in that node's 32-bit accumulator, so its input is not quantized.
    pub fused_into: Option<usize>,
}

/// Whether a tensor is an activation or a weight, and its channel axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// An activation (feature map).
    Feature,
    /// A weight initializer, thresholds per output channel along `axis`.
    Weight {
        /// Output-channel axis.
        axis: usize,
    },
}

/// One calibration node to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibPoint {
    /// The tensor it quantizes.
    pub tensor: String,
    /// Its qtype.
    pub qtype: QType,
    /// Error compensation requested (`ec`).
    pub ec: bool,
    /// Feature or weight.
    pub kind: TensorKind,
    /// `(node index, input position)` that read the quantized value.
    pub consumers: Vec<(usize, usize)>,
    /// True for the calibration of a model output (after its producer).
    pub model_output: bool,
}

impl CalibPoint {
    /// True for a weight point.
    pub fn is_weight(&self) -> bool {
        matches!(self.kind, TensorKind::Weight { .. })
    }
}

/// Everything the calibration needs to know about the graph's quantization.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Per node (graph order).
    pub nodes: Vec<NodeQuant>,
    /// Calibration points, features first (graph order), then weights.
    pub points: Vec<CalibPoint>,
    /// Node inputs the precision guards promoted to int16.
    pub guards: Vec<GuardedInput>,
}

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A config names a node or tensor the model does not have.
    #[error("{what} '{name}' is not in the optimized model{hint}")]
    Unknown {
        /// "node_config node", "subgraph_config input", ...
        what: String,
        /// The name.
        name: String,
        /// A close name, formatted.
        hint: String,
    },
}

fn hint(name: &str, candidates: impl Iterator<Item = String>) -> String {
    let best = candidates
        .map(|c| (strsim::jaro_winkler(name, &c), c))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((s, c)) if s > 0.8 => format!(" (did you mean '{c}'?)"),
        _ => String::new(),
    }
}

/// Nodes lying on a path from one of `sg.inputs` to one of `sg.outputs`.
fn subgraph_members(g: &Graph, sg: &SubgraphConfig) -> HashSet<usize> {
    let mut fwd_vals: HashSet<&str> = sg.inputs.iter().map(String::as_str).collect();
    let mut fwd = HashSet::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if n.inputs.iter().any(|x| fwd_vals.contains(x.as_str())) {
            fwd.insert(i);
            fwd_vals.extend(n.outputs.iter().map(String::as_str));
        }
    }
    let mut bwd_vals: HashSet<&str> = sg.outputs.iter().map(String::as_str).collect();
    let mut members = HashSet::new();
    for (i, n) in g.nodes.iter().enumerate().rev() {
        if n.outputs.iter().any(|x| bwd_vals.contains(x.as_str())) {
            if fwd.contains(&i) {
                members.insert(i);
            }
            bwd_vals.extend(n.inputs.iter().map(String::as_str));
        }
    }
    members
}

/// Resolves every node's qtype and lists the calibration points.
pub fn build_plan(g: &Graph, qc: &QuantConfig) -> Result<Plan, PlanError> {
    let node_names: HashSet<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
    for name in qc.node.keys() {
        if !node_names.contains(name.as_str()) {
            return Err(PlanError::Unknown {
                what: "node_config node".into(),
                name: name.clone(),
                hint: hint(name, g.nodes.iter().map(|n| n.name.clone())),
            });
        }
    }
    let values: HashSet<&str> = g
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter().chain(&n.outputs))
        .map(String::as_str)
        .chain(g.inputs.iter().map(|v| v.name.as_str()))
        .collect();
    let mut membership: HashMap<usize, String> = HashMap::new();
    for (sg_name, sg) in &qc.subgraph {
        for t in sg.inputs.iter().chain(&sg.outputs) {
            if !values.contains(t.as_str()) {
                return Err(PlanError::Unknown {
                    what: format!("subgraph_config.{sg_name} tensor"),
                    name: t.clone(),
                    hint: hint(t, values.iter().map(|s| s.to_string())),
                });
            }
        }
        for i in subgraph_members(g, sg) {
            membership.insert(i, sg_name.clone());
        }
    }
    let default_q = qc.model.all_node_type.unwrap_or(QType::Int8);
    let guarding = !qc.int16_forbidden && default_q == QType::Int8;
    let integer_valued = if guarding {
        integer_valued_tensors(g)
    } else {
        HashSet::new()
    };
    let mut guards: Vec<GuardedInput> = Vec::new();
    let nodes: Vec<NodeQuant> = g
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let node_cfg = qc.node.get(&n.name);
            let op_cfg = qc.op.get(&n.op_type);
            let sg = membership.get(&i);
            let sg_q = sg.and_then(|s| qc.subgraph.get(s)).map(|s| s.qtype);
            let on = node_cfg
                .and_then(|c| c.on)
                .or(op_cfg.and_then(|c| c.on))
                .unwrap_or(if cpu_by_default(n) {
                    Placement::Cpu
                } else {
                    Placement::Bpu
                });
            let quantized = is_quantized_op(n) && on == Placement::Bpu;
            let explicit_level = node_cfg
                .and_then(|c| c.qtype)
                .or(sg_q)
                .or(op_cfg.and_then(|c| c.qtype));
            let level_q = explicit_level.unwrap_or(default_q);
            let qtype = if quantized { level_q } else { QType::Float32 };
            let inputs = (0..n.inputs.len())
                .map(|k| {
                    if !quantized {
                        return InputQ::Type(QType::Float32);
                    }
                    let from = |c: Option<&NodeConfig>| {
                        c.and_then(|c| c.inputs.get(&k).copied().or(c.all_inputs))
                    };
                    let explicit = from(node_cfg)
                        .or(node_cfg.and_then(|c| c.qtype).map(InputQ::Type))
                        .or(sg_q.map(InputQ::Type))
                        .or(from(op_cfg))
                        .or(explicit_level.map(InputQ::Type));
                    if let Some(q) = explicit {
                        return q;
                    }
                    let tensor = &n.inputs[k];
                    let guard = if !guarding || tensor.is_empty() {
                        None
                    } else if is_periodic_argument(&n.op_type, k) {
                        Some(Guard::PeriodicArgument)
                    } else if integer_valued.contains(tensor) {
                        Some(Guard::IntegerValued)
                    } else {
                        None
                    };
                    match guard {
                        Some(guard) if g.initializer(tensor).is_none() => {
                            guards.push(GuardedInput {
                                node: i,
                                input: k,
                                tensor: tensor.clone(),
                                guard,
                            });
                            InputQ::Type(QType::Int16)
                        }
                        _ => InputQ::Type(level_q),
                    }
                })
                .collect();
            NodeQuant {
                qtype,
                inputs,
                on,
                subgraph: sg.cloned(),
                quantized,
                fused_into: None,
            }
        })
        .collect();
    let mut nodes = nodes;
    fuse_bias_adds(g, &mut nodes);
    let mut features: BTreeMap<(String, QType, bool), CalibPoint> = BTreeMap::new();
    let mut order: Vec<(String, QType, bool)> = Vec::new();
    let mut weights: Vec<CalibPoint> = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let nq = &nodes[i];
        if !nq.quantized {
            continue;
        }
        for k in data_inputs(n) {
            let t = &n.inputs[k];
            if t.is_empty() {
                continue;
            }
            let (qtype, ec) = match nq.inputs[k] {
                InputQ::Type(QType::Float32) => continue,
                InputQ::Type(q) => (q, false),
                // ec elsewhere is plain int8 (the pipeline warns).
                InputQ::Ec => (QType::Int8, ec_allowed(n, k)),
            };
            if let Some(w) = g.initializer(t) {
                if !w.dtype().is_float() {
                    continue;
                }
                if let Some(slot) = weight_slot(n, w.shape().len()).filter(|s| s.input == k) {
                    let kind = TensorKind::Weight { axis: slot.axis };
                    if let Some(p) = weights.iter_mut().find(|p| {
                        &p.tensor == t && p.qtype == qtype && p.ec == ec && p.kind == kind
                    }) {
                        p.consumers.push((i, k));
                    } else {
                        weights.push(CalibPoint {
                            tensor: t.clone(),
                            qtype,
                            ec,
                            kind,
                            consumers: vec![(i, k)],
                            model_output: false,
                        });
                    }
                }
                continue;
            }
            let key = (t.clone(), qtype, ec);
            let p = features.entry(key.clone()).or_insert_with(|| {
                order.push(key.clone());
                CalibPoint {
                    tensor: t.clone(),
                    qtype,
                    ec,
                    kind: TensorKind::Feature,
                    consumers: Vec::new(),
                    model_output: false,
                }
            });
            p.consumers.push((i, k));
        }
    }
    let mut points: Vec<CalibPoint> = order
        .into_iter()
        .filter_map(|k| features.remove(&k))
        .collect();
    for out in &g.outputs {
        let Some(p) = g.producer(&out.name) else {
            continue;
        };
        let pn = &g.nodes[p];
        let explicit = qc
            .node
            .get(&pn.name)
            .and_then(|c| c.output_type)
            .or(qc.op.get(&pn.op_type).and_then(|c| c.output_type))
            .or(qc.model.model_output_type);
        // Without model_output_type / OutputType the outputs leave the model
        // dequantized at high precision (as the Horizon tools' float32 outputs).
        let q = explicit.unwrap_or(QType::Float32);
        if q != QType::Float32 {
            points.push(CalibPoint {
                tensor: out.name.clone(),
                qtype: q,
                ec: false,
                kind: TensorKind::Feature,
                consumers: Vec::new(),
                model_output: true,
            });
        }
    }
    points.extend(weights);
    Ok(Plan {
        nodes,
        points,
        guards,
    })
}

/// Marks `Add(weighted_output, constant)` (the bias add torch exports after
/// MatMul, or after a bias-free Conv) as fused into the weighted node when
/// the weighted output has no other reader: like the BPU, the bias is added
/// in the 32-bit accumulator and nothing is quantized in between.
fn fuse_bias_adds(g: &Graph, nodes: &mut [NodeQuant]) {
    for (i, n) in g.nodes.iter().enumerate() {
        if n.op_type != "Add" || n.inputs.len() != 2 || !nodes[i].quantized {
            continue;
        }
        let (a, b) = (&n.inputs[0], &n.inputs[1]);
        let (act, bias) = if g.initializer(b).is_some() {
            (a, b)
        } else if g.initializer(a).is_some() {
            (b, a)
        } else {
            continue;
        };
        let Some(p) = g.producer(act) else {
            continue;
        };
        let weighted = crate::ops::WEIGHTED.contains(&g.nodes[p].op_type.as_str());
        let bias_ok = g
            .initializer(bias)
            .is_some_and(|t| t.shape().iter().rev().skip(1).all(|&d| d == 1) || t.len() == 1);
        let only_reader = g.consumers(act).len() == 1 && !g.is_output(act);
        if weighted && bias_ok && only_reader && nodes[p].quantized {
            nodes[i].quantized = false;
            nodes[i].qtype = nodes[p].qtype;
            nodes[i].fused_into = Some(p);
        }
    }
}

/// `(node index, input)` where the config asks for `ec` on an input that
/// error compensation does not apply to (treated as plain int8).
pub fn ec_ignored(g: &Graph, plan: &Plan) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, (n, nq)) in g.nodes.iter().zip(&plan.nodes).enumerate() {
        if !nq.quantized {
            continue;
        }
        for (k, q) in nq.inputs.iter().enumerate() {
            if *q == InputQ::Ec && !ec_allowed(n, k) && data_inputs(n).contains(&k) {
                out.push((i, k));
            }
        }
    }
    out
}

/// Tensors some feature point reads (for the statistics pass).
pub fn feature_tensors(plan: &Plan) -> BTreeSet<String> {
    plan.points
        .iter()
        .filter(|p| !p.is_weight())
        .map(|p| p.tensor.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hb_ir::Node;

    /// Relu → GRU → Tanh, GRU with an omitted sequence_lens.
    fn recurrent() -> Graph {
        Graph {
            nodes: vec![
                Node::new("relu", "Relu", &["x"], &["a"]),
                Node::new("gru", "GRU", &["a", "w", "r", "b", "", "h0"], &["y", "yh"]),
                Node::new("tanh", "Tanh", &["y"], &["z"]),
            ],
            ..Graph::default()
        }
    }

    #[test]
    fn recurrent_layers_are_float_islands_by_default() {
        let g = recurrent();
        let plan = build_plan(&g, &QuantConfig::default()).unwrap();
        let gru = &plan.nodes[1];
        assert_eq!(gru.on, Placement::Cpu);
        assert!(!gru.quantized);
        assert_eq!(gru.qtype, QType::Float32);
        // Calibration only where the BPU ops read: x (Relu) and y (Tanh).
        let tensors: Vec<&str> = plan.points.iter().map(|p| p.tensor.as_str()).collect();
        assert_eq!(tensors, ["x", "y"]);
        // A config can still put it on the BPU side (its inputs are then
        // calibrated; the lowering keeps it on the CPU).
        let mut qc = QuantConfig::default();
        qc.op.insert(
            "GRU".into(),
            NodeConfig {
                on: Some(Placement::Bpu),
                ..NodeConfig::default()
            },
        );
        let plan = build_plan(&g, &qc).unwrap();
        assert!(plan.nodes[1].quantized);
        assert!(plan.points.iter().any(|p| p.tensor == "a"));
    }
}
