//! `edit`: change calibration nodes of a calibrated model without
//! recalibrating — the IR-editing recipes of the Horizon tuning guide (set a
//! node's qtype, a threshold, the inputs or outputs of named nodes to
//! int16, ...). The edited model is written atomically.

use super::common::{to_json, Calibrated};
use super::EditArgs;
use crate::cli::{ToolError, ToolResult};
use hb_float::kernels::horizon::FqType;
use hb_ir::Attr;
use hb_quant::qtype::QType;
use serde::Serialize;

/// Which calibration nodes to change (their union).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Selection {
    /// Calibration nodes by name (or by the tensor they quantize).
    #[arg(long = "node", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Calibration nodes read by nodes of these op types (Conv, Softmax, ...).
    #[arg(long = "op-type", value_delimiter = ',')]
    pub op_types: Vec<String>,
    /// Every feature (activation) calibration node.
    #[arg(long)]
    pub all_features: bool,
    /// Every weight calibration node.
    #[arg(long)]
    pub all_weights: bool,
    /// Calibration nodes feeding these model nodes.
    #[arg(long = "input-of", value_delimiter = ',')]
    pub input_of: Vec<String>,
    /// Calibration nodes quantizing these model nodes' outputs (directly or
    /// after Reshape/Transpose/... chains).
    #[arg(long = "output-of", value_delimiter = ',')]
    pub output_of: Vec<String>,
}

impl Selection {
    fn is_empty(&self) -> bool {
        self.nodes.is_empty()
            && self.op_types.is_empty()
            && !self.all_features
            && !self.all_weights
            && self.input_of.is_empty()
            && self.output_of.is_empty()
    }

    /// Indices into `cal.nodes` of the selected calibration nodes, in graph order.
    pub fn resolve(&self, cal: &Calibrated) -> ToolResult<Vec<usize>> {
        let g = &cal.model.graph;
        let mut sel = vec![false; cal.nodes.len()];
        for name in &self.nodes {
            let mut hit = false;
            for (k, c) in cal.nodes.iter().enumerate() {
                if &c.name == name || &c.input == name {
                    sel[k] = true;
                    hit = true;
                }
            }
            if !hit {
                return Err(ToolError::input(format!(
                    "{}: --node '{name}' is not a calibration node or a quantized tensor",
                    cal.path.display()
                )));
            }
        }
        for op in &self.op_types {
            let mut hit = false;
            for (k, c) in cal.nodes.iter().enumerate() {
                if c.consumers.iter().any(|(n, _)| &g.nodes[*n].op_type == op) {
                    sel[k] = true;
                    hit = true;
                }
            }
            if !hit {
                return Err(ToolError::input(format!(
                    "{}: no calibration node feeds a {op} node",
                    cal.path.display()
                )));
            }
        }
        for (k, c) in cal.nodes.iter().enumerate() {
            if (self.all_features && !c.is_weight) || (self.all_weights && c.is_weight) {
                sel[k] = true;
            }
        }
        for (names, inputs) in [(&self.input_of, true), (&self.output_of, false)] {
            for name in names {
                let i = cal.node_index(name).ok_or_else(|| {
                    ToolError::input(format!("{}: no node named '{name}'", cal.path.display()))
                })?;
                let found = if inputs {
                    cal.inputs_of(i)
                } else {
                    cal.outputs_of(i)
                };
                if found.is_empty() {
                    return Err(ToolError::input(format!(
                        "{}: node '{name}' has no calibration node on its {}",
                        cal.path.display(),
                        if inputs { "inputs" } else { "outputs" }
                    )));
                }
                for k in found {
                    sel[k] = true;
                }
            }
        }
        Ok((0..sel.len()).filter(|&k| sel[k]).collect())
    }
}

/// What to change on the selected nodes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Change {
    /// New qtype: int8, int16, float16 or float32 (thresholds are kept).
    #[arg(long)]
    pub qtype: Option<String>,
    /// New thresholds: one value (symmetric, per tensor) or one per channel.
    #[arg(long = "threshold", value_delimiter = ',')]
    pub thresholds: Vec<f32>,
    /// Switch: on (fake-quantize) or off (float).
    #[arg(long)]
    pub switch: Option<String>,
}

impl Change {
    fn is_empty(&self) -> bool {
        self.qtype.is_none() && self.thresholds.is_empty() && self.switch.is_none()
    }
}

/// One changed calibration node.
#[derive(Debug, Clone, Serialize)]
pub struct Edited {
    /// Calibration node.
    pub node: String,
    /// Before: `qtype switch thresholds`.
    pub before: String,
    /// After.
    pub after: String,
}

fn describe(n: &hb_ir::Node) -> String {
    let q = n.string_or("qtype", "int8").unwrap_or_default();
    let s = n.string_or("switch", "ON").unwrap_or_default();
    let th = n
        .get_floats("thresholds")
        .ok()
        .flatten()
        .unwrap_or_default();
    let th = if th.len() <= 2 {
        format!("{th:?}")
    } else {
        format!(
            "{} values, max {}",
            th.len(),
            th.iter().fold(0f32, |m, v| m.max(v.abs()))
        )
    };
    format!("{q} {s} {th}")
}

/// Applies `change` to the calibration nodes `sel` of `cal`; returns the
/// edited model and what changed.
pub fn apply(
    cal: &Calibrated,
    sel: &[usize],
    change: &Change,
) -> ToolResult<(hb_ir::Model, Vec<Edited>)> {
    let qtype = match &change.qtype {
        Some(q) => Some(QType::parse(q).ok_or_else(|| {
            ToolError::input(format!(
                "--qtype '{q}' is not one of {}",
                QType::NAMES.join(", ")
            ))
        })?),
        None => None,
    };
    let switch = match change.switch.as_deref().map(str::to_ascii_uppercase) {
        None => None,
        Some(s) if s == "ON" || s == "OFF" => Some(s),
        Some(s) => {
            return Err(ToolError::input(format!(
                "--switch '{s}' must be on or off"
            )))
        }
    };
    if let Some(bad) = change
        .thresholds
        .iter()
        .find(|t| !t.is_finite() || **t <= 0.0)
    {
        return Err(ToolError::input(format!(
            "--threshold {bad}: thresholds must be finite and > 0"
        )));
    }
    let mut m = cal.model.clone();
    let mut edited = Vec::new();
    for &k in sel {
        let c = &cal.nodes[k];
        let node = &mut m.graph.nodes[c.step];
        let before = describe(node);
        if let Some(q) = qtype {
            node.set_attr("qtype", Attr::String(q.to_string()));
        }
        if !change.thresholds.is_empty() {
            let channels = c.fq.num_channels();
            let n = change.thresholds.len();
            if n != 1 && n != channels {
                return Err(ToolError::input(format!(
                    "--threshold gives {n} values but '{}' has {channels} channel(s)",
                    c.name
                )));
            }
            node.set_attr("thresholds", Attr::Floats(change.thresholds.clone()));
            node.set_attr("asymmetric", Attr::Int(0));
            node.set_attr("method", Attr::String("fixed".into()));
            node.set_attr("constant", Attr::Int(1));
        }
        if let Some(s) = &switch {
            node.set_attr("switch", Attr::String(s.clone()));
        }
        // The result must still be a valid quantizer.
        let fq = hb_float::kernels::horizon::FakeQuant::from_node(node)
            .map_err(|e| ToolError::input(format!("'{}': {e}", c.name)))?;
        if fq.qtype != FqType::Float32 && fq.qtype != FqType::Float16 {
            fq.params()
                .map_err(|e| ToolError::input(format!("'{}': {e}", c.name)))?;
        }
        let after = describe(node);
        edited.push(Edited {
            node: c.name.clone(),
            before,
            after,
        });
    }
    Ok((m, edited))
}

/// The `edit` subcommand.
pub fn run_cli(a: EditArgs) -> ToolResult<()> {
    if a.select.is_empty() {
        return Err(ToolError::input(
            "edit: choose nodes (--node, --op-type, --all-features, --all-weights, --input-of, --output-of)",
        ));
    }
    if a.change.is_empty() {
        return Err(ToolError::input(
            "edit: say what to change (--qtype, --threshold, --switch)",
        ));
    }
    let cal = Calibrated::load(&a.model)?;
    let sel = a.select.resolve(&cal)?;
    if sel.is_empty() {
        return Err(ToolError::input(
            "edit: the selection matches no calibration node",
        ));
    }
    let (m, edited) = apply(&cal, &sel, &a.change)?;
    hb_ir::save_model(&m, &a.output).map_err(ToolError::input)?;
    if a.json {
        println!("{}", to_json(&edited)?);
    } else {
        let rows: Vec<Vec<String>> = edited
            .iter()
            .map(|e| vec![e.node.clone(), e.before.clone(), e.after.clone()])
            .collect();
        print!(
            "{}",
            hb_quant::report::table(&["Calibration node", "Before", "After"], &rows)
        );
        println!(
            "edited {} calibration node(s); wrote {}",
            edited.len(),
            a.output.display()
        );
    }
    Ok(())
}
