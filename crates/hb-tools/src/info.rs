//! `hb-info` model summaries: versions, inputs/outputs, op histogram,
//! parameters, and the ops the float interpreter cannot run.

use hb_float::Registry;
use hb_ir::{Model, ValueInfo};
use serde::Serialize;
use std::collections::BTreeMap;

/// A tensor's declared name, element type and shape.
#[derive(Debug, Serialize)]
pub struct TensorDesc {
    /// Value name.
    pub name: String,
    /// Element type name (e.g. `float32`).
    pub dtype: String,
    /// Dimensions as text: numbers, or the dynamic dim's name / `?`.
    pub shape: Vec<String>,
}

impl From<&ValueInfo> for TensorDesc {
    fn from(v: &ValueInfo) -> Self {
        TensorDesc {
            name: v.name.clone(),
            dtype: v.dtype_name(),
            shape: v
                .shape
                .as_ref()
                .map(|d| d.iter().map(|x| x.to_string()).collect())
                .unwrap_or_default(),
        }
    }
}

/// Everything `hb-info` prints about a model.
#[derive(Debug, Serialize)]
pub struct ModelSummary {
    /// The model file.
    pub file: String,
    /// ONNX IR version.
    pub ir_version: i64,
    /// Opset version per domain (`ai.onnx` for the default domain).
    pub opsets: BTreeMap<String, i64>,
    /// Producer name.
    pub producer: String,
    /// Producer version.
    pub producer_version: String,
    /// Graph inputs (initializers excluded).
    pub inputs: Vec<TensorDesc>,
    /// Graph outputs.
    pub outputs: Vec<TensorDesc>,
    /// Number of nodes.
    pub node_count: usize,
    /// Nodes per op type.
    pub op_histogram: BTreeMap<String, usize>,
    /// Number of parameters (initializer elements).
    pub parameters: usize,
    /// Bytes of parameters.
    pub parameter_bytes: usize,
    /// Op types the float interpreter has no kernel for.
    pub unsupported_ops: Vec<String>,
    /// `metadata_props`.
    pub metadata: BTreeMap<String, String>,
}

/// Summarises a loaded model.
pub fn summarize(file: &str, model: &Model, registry: &Registry) -> ModelSummary {
    let g = &model.graph;
    let mut hist = BTreeMap::new();
    let mut unsupported = Vec::new();
    for n in &g.nodes {
        *hist.entry(n.qualified_op()).or_insert(0) += 1;
        if !registry.supports(&n.domain, &n.op_type) && !unsupported.contains(&n.qualified_op()) {
            unsupported.push(n.qualified_op());
        }
    }
    unsupported.sort();
    let (parameters, parameter_bytes) = g.parameter_stats();
    ModelSummary {
        file: file.to_string(),
        ir_version: model.ir_version,
        opsets: model
            .opsets
            .iter()
            .map(|(d, v)| {
                (
                    if d.is_empty() {
                        "ai.onnx".to_string()
                    } else {
                        d.clone()
                    },
                    *v,
                )
            })
            .collect(),
        producer: model.producer_name.clone(),
        producer_version: model.producer_version.clone(),
        inputs: g.inputs.iter().map(TensorDesc::from).collect(),
        outputs: g.outputs.iter().map(TensorDesc::from).collect(),
        node_count: g.nodes.len(),
        op_histogram: hist,
        parameters,
        parameter_bytes,
        unsupported_ops: unsupported,
        metadata: model.metadata.iter().cloned().collect(),
    }
}

/// Renders a summary as the text `hb-info` prints.
pub fn render_text(s: &ModelSummary) -> String {
    let mut out = String::new();
    let opsets: Vec<String> = s.opsets.iter().map(|(d, v)| format!("{d} {v}")).collect();
    out += &format!("model        {}\n", s.file);
    out += &format!("ir_version   {}\n", s.ir_version);
    out += &format!("opsets       {}\n", opsets.join(", "));
    let producer = format!("{} {}", s.producer, s.producer_version);
    out += &format!("producer     {}\n", producer.trim());
    out += &format!("nodes        {}\n", s.node_count);
    out += &format!(
        "parameters   {} ({})\n",
        s.parameters,
        human_bytes(s.parameter_bytes)
    );
    out += &tensor_table("inputs", &s.inputs);
    out += &tensor_table("outputs", &s.outputs);
    out += "\nop types\n";
    let mut ops: Vec<(&String, &usize)> = s.op_histogram.iter().collect();
    ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (op, n) in ops {
        out += &format!("  {op:<28} {n:>6}\n");
    }
    if s.unsupported_ops.is_empty() {
        out += "\nevery op is supported by the float interpreter\n";
    } else {
        out += &format!(
            "\nops the float interpreter cannot run: {}\n",
            s.unsupported_ops.join(", ")
        );
    }
    out
}

fn tensor_table(title: &str, ts: &[TensorDesc]) -> String {
    let w = ts.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    let mut out = format!("\n{title}\n  {:<w$}  {:<9}  shape\n", "name", "dtype");
    for t in ts {
        out += &format!(
            "  {:<w$}  {:<9}  [{}]\n",
            t.name,
            t.dtype,
            t.shape.join(", ")
        );
    }
    out
}

/// `1234567` → `1.18 MiB`.
pub fn human_bytes(b: usize) -> String {
    let units = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", units[u])
    }
}
