//! Model, graph, node and value descriptions.

use crate::attr::Attr;
use hb_tensor::{DType, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A known size.
    Fixed(usize),
    /// A named dynamic dimension (e.g. `batch`).
    Param(String),
    /// An unnamed dynamic dimension.
    Unknown,
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Param(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// A named value's declared type and shape (graph input, output or value_info).
#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    /// Value name.
    pub name: String,
    /// Raw ONNX element type code (0 when unknown); see [`ValueInfo::dtype`].
    pub elem_type: i32,
    /// Declared shape, if any.
    pub shape: Option<Vec<Dim>>,
    /// True when the value is not a tensor (sequence, map, optional).
    pub non_tensor: bool,
}

impl ValueInfo {
    /// A tensor value with a known type and fixed shape.
    pub fn tensor(name: &str, dtype: DType, shape: &[usize]) -> Self {
        ValueInfo {
            name: name.to_string(),
            elem_type: dtype.onnx_code(),
            shape: Some(shape.iter().map(|&d| Dim::Fixed(d)).collect()),
            non_tensor: false,
        }
    }

    /// The element type if hbkit supports it.
    pub fn dtype(&self) -> Option<DType> {
        DType::from_onnx_code(self.elem_type)
    }

    /// The element type's name (also for unsupported types).
    pub fn dtype_name(&self) -> String {
        if self.non_tensor {
            "non-tensor".into()
        } else {
            DType::onnx_code_name(self.elem_type)
        }
    }

    /// The shape if every dimension is fixed.
    pub fn fixed_shape(&self) -> Option<Vec<usize>> {
        self.shape
            .as_ref()?
            .iter()
            .map(|d| {
                if let Dim::Fixed(n) = d {
                    Some(*n)
                } else {
                    None
                }
            })
            .collect()
    }

    /// True when `t` has this value's declared element type and fits its
    /// declared shape (dynamic dims match any size).
    pub fn accepts(&self, t: &hb_tensor::Tensor) -> bool {
        let dtype_ok = self.dtype().is_none_or(|dt| dt == t.dtype());
        let shape_ok = self.shape.as_ref().is_none_or(|dims| {
            dims.len() == t.rank()
                && dims
                    .iter()
                    .zip(t.shape())
                    .all(|(d, &n)| !matches!(d, Dim::Fixed(m) if *m != n))
        });
        dtype_ok && shape_ok
    }

    /// The shape as text, e.g. `[batch,3,224,224]`.
    pub fn shape_text(&self) -> String {
        match &self.shape {
            None => "?".into(),
            Some(dims) => format!(
                "[{}]",
                dims.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// One operator application.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Node name (made unique on import when empty or repeated).
    pub name: String,
    /// Operator type, e.g. `Conv`.
    pub op_type: String,
    /// Operator domain (`""` = ai.onnx).
    pub domain: String,
    /// Input value names; `""` marks an omitted optional input.
    pub inputs: Vec<String>,
    /// Output value names; `""` marks an omitted optional output.
    pub outputs: Vec<String>,
    /// Attributes by name.
    pub attrs: BTreeMap<String, Attr>,
}

impl Node {
    /// A node with no attributes.
    pub fn new(name: &str, op_type: &str, inputs: &[&str], outputs: &[&str]) -> Self {
        Node {
            name: name.into(),
            op_type: op_type.into(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attrs: BTreeMap::new(),
        }
    }

    /// The name of input `i`, if present and not omitted.
    pub fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// `domain::op_type` for messages, or just `op_type` in the default domain.
    pub fn qualified_op(&self) -> String {
        if self.domain.is_empty() || self.domain == "ai.onnx" {
            self.op_type.clone()
        } else {
            format!("{}::{}", self.domain, self.op_type)
        }
    }
}

/// A computation graph: nodes in topological order plus its values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    /// Graph name.
    pub name: String,
    /// Nodes, in topological order after [`crate::topo::sort`].
    pub nodes: Vec<Node>,
    /// Graph inputs that are fed at run time (initializers excluded).
    pub inputs: Vec<ValueInfo>,
    /// Graph outputs.
    pub outputs: Vec<ValueInfo>,
    /// Constant tensors by name, shared so that copies of the graph are cheap.
    pub initializers: BTreeMap<String, Arc<Tensor>>,
    /// Declared types of intermediate values.
    pub value_info: HashMap<String, ValueInfo>,
}

impl Graph {
    /// The node producing `value`, if any.
    pub fn producer(&self, value: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.outputs.iter().any(|o| o == value))
    }

    /// Indices of the nodes reading `value` (an If/Loop/Scan reads the outer
    /// values its subgraphs use).
    pub fn consumers(&self, value: &str) -> Vec<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| node_reads(n, value))
            .map(|(k, _)| k)
            .collect()
    }

    /// True when `value` is a graph output.
    pub fn is_output(&self, value: &str) -> bool {
        self.outputs.iter().any(|o| o.name == value)
    }

    /// The initializer named `value`.
    pub fn initializer(&self, value: &str) -> Option<&Tensor> {
        self.initializers.get(value).map(|t| t.as_ref())
    }

    /// Renames every use of value `from` by a node to `to`, including the
    /// uses inside subgraphs (If/Loop/Scan bodies read outer values by name,
    /// and may return one as a subgraph output).
    pub fn replace_uses(&mut self, from: &str, to: &str) {
        for n in &mut self.nodes {
            for i in &mut n.inputs {
                if i == from {
                    *i = to.to_string();
                }
            }
            for a in n.attrs.values_mut() {
                let subgraphs: &mut [Graph] = match a {
                    crate::attr::Attr::Graph(b) => std::slice::from_mut(b.as_mut()),
                    crate::attr::Attr::Graphs(v) => v,
                    _ => &mut [],
                };
                for sg in subgraphs {
                    sg.replace_uses(from, to);
                    for o in &mut sg.outputs {
                        if o.name == from {
                            o.name = to.to_string();
                        }
                    }
                }
            }
        }
    }

    /// Number of parameters (initializer elements) and their size in bytes.
    pub fn parameter_stats(&self) -> (usize, usize) {
        self.initializers.values().fold((0, 0), |(n, b), t| {
            (n + t.len(), b + t.len() * t.dtype().size_of())
        })
    }

    /// Removes initializers no node or output reads.
    pub fn prune_unused_initializers(&mut self) {
        let mut used: std::collections::HashSet<&str> = std::collections::HashSet::new();
        collect_reads(self, &mut used);
        used.extend(self.outputs.iter().map(|o| o.name.as_str()));
        let keep: Vec<String> = self
            .initializers
            .keys()
            .filter(|k| used.contains(k.as_str()))
            .cloned()
            .collect();
        self.initializers.retain(|k, _| keep.contains(k));
    }

    /// A name not yet used by any value or node in the graph, built from `base`.
    pub fn fresh_name(&self, base: &str) -> String {
        let taken = |s: &str| {
            self.initializers.contains_key(s)
                || self
                    .nodes
                    .iter()
                    .any(|n| n.name == s || n.outputs.iter().any(|o| o == s))
                || self.inputs.iter().any(|i| i.name == s)
        };
        if !taken(base) {
            return base.to_string();
        }
        (1..)
            .map(|k| format!("{base}_{k}"))
            .find(|s| !taken(s))
            .expect("infinite names")
    }
}

/// A loaded ONNX model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    /// ONNX IR version.
    pub ir_version: i64,
    /// Operator set versions by domain (`""` = ai.onnx).
    pub opsets: BTreeMap<String, i64>,
    /// Producer name (e.g. `pytorch`).
    pub producer_name: String,
    /// Producer version.
    pub producer_version: String,
    /// Model domain.
    pub domain: String,
    /// Model version.
    pub model_version: i64,
    /// Documentation string.
    pub doc_string: String,
    /// `metadata_props` key/value pairs.
    pub metadata: Vec<(String, String)>,
    /// The main graph.
    pub graph: Graph,
}

impl Model {
    /// The ai.onnx opset version (default domain).
    pub fn onnx_opset(&self) -> i64 {
        self.opsets
            .get("")
            .or_else(|| self.opsets.get("ai.onnx"))
            .copied()
            .unwrap_or(1)
    }

    /// The opset version for a node's domain.
    pub fn opset_for(&self, domain: &str) -> i64 {
        if domain.is_empty() || domain == "ai.onnx" {
            self.onnx_opset()
        } else {
            self.opsets.get(domain).copied().unwrap_or(1)
        }
    }
}

/// Every name the nodes of `g` read, including those read from inside their
/// subgraphs (If/Loop/Scan bodies capture outer values by name), and every
/// subgraph output (a branch may return an outer value directly).
fn collect_reads<'a>(g: &'a Graph, used: &mut std::collections::HashSet<&'a str>) {
    for n in &g.nodes {
        used.extend(n.inputs.iter().map(String::as_str));
        for sg in subgraphs(n) {
            collect_reads(sg, used);
            used.extend(sg.outputs.iter().map(|o| o.name.as_str()));
        }
    }
}

/// The subgraphs a node carries as attributes (If branches, Loop/Scan bodies).
fn subgraphs(n: &Node) -> impl Iterator<Item = &Graph> {
    n.attrs.values().flat_map(|a| match a {
        crate::attr::Attr::Graph(b) => std::slice::from_ref(b.as_ref()),
        crate::attr::Attr::Graphs(v) => v.as_slice(),
        _ => &[],
    })
}

/// Whether `n` reads `value`: as an input, or inside one of its subgraphs.
fn node_reads(n: &Node, value: &str) -> bool {
    n.inputs.iter().any(|i| i == value)
        || subgraphs(n).any(|sg| {
            sg.outputs.iter().any(|o| o.name == value)
                || sg.nodes.iter().any(|m| node_reads(m, value))
        })
}
