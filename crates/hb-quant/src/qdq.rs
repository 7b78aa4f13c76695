//! Export of a calibrated model (`HzCalibration` / `HzPreprocess` nodes, see
//! `docs/calibrated-model.md`) to standard ONNX that onnxruntime runs:
//!
//! - `HzCalibration`, switch ON, int8 / int16 → `QuantizeLinear` +
//!   `DequantizeLinear` (int8 / int16 zero point when symmetric, uint8 /
//!   uint16 when asymmetric; per-channel thresholds → 1-D scale with `axis`).
//! - float16 → `Cast(to f16)` + `Cast(to f32)`.
//! - float32 or switch OFF → removed (an `Identity` keeps a graph output's
//!   name).
//! - `HzPreprocess` → (`Cast` to f32) + `Sub` + `Mul` with constant
//!   initializers.
//!
//! Scale and zero point come from [`hb_float::kernels::horizon::FakeQuant`],
//! so the export reproduces the float interpreter's simulation bit for bit.
//! Symmetric weights never use `−qmax − 1`; an int8 `QuantizeLinear` would,
//! so weight values that would quantize to −128 (−32768) are first clamped
//! (in a copy of the initializer, or by a `Max` node for computed weights).
//! ec nodes (`ec = 1`, int8 refined 256×) export as int16 / uint16 Q/DQ with
//! scale `s/256`; their upper bound `127·256` lies inside int16, so values
//! beyond it are clamped the same way (`Min`).
//!
//! The default-domain opset is raised when needed (≥ 10 for Q/DQ, ≥ 13 for
//! per-channel, ≥ 21 for 16-bit Q/DQ), and the ops whose signature changed
//! in between are rewritten ([`upgrade_opset`]).

use hb_float::kernels::horizon::{BiasCorrection, FakeQuant, FqType, Preprocess, QParams, DOMAIN};
use hb_ir::{Attr, Graph, Model, Node};
use hb_tensor::{DType, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

/// Errors of the QDQ export.
#[derive(Debug, thiserror::Error)]
pub enum QdqError {
    /// A horizon node cannot be converted.
    #[error("node '{node}': {msg}")]
    Node {
        /// Node name.
        node: String,
        /// What is wrong.
        msg: String,
    },
    /// The model's opset cannot be raised to what the Q/DQ nodes need.
    #[error("cannot raise the ai.onnx opset from {from} to {to}: {msg}")]
    Opset {
        /// Current opset.
        from: i64,
        /// Needed opset.
        to: i64,
        /// Why.
        msg: String,
    },
    /// A tensor operation failed.
    #[error("{0}")]
    Tensor(#[from] hb_tensor::TensorError),
}

fn node_err(node: &Node, msg: impl std::fmt::Display) -> QdqError {
    QdqError::Node {
        node: node.name.clone(),
        msg: msg.to_string(),
    }
}

fn is_horizon(n: &Node) -> bool {
    n.domain == DOMAIN
}

/// What the converted nodes need from the opset.
#[derive(Default)]
struct Needs {
    qdq: bool,
    per_channel: bool,
    sixteen_bit: bool,
}

/// Builds the new node list of the top-level graph.
struct Exporter {
    nodes: Vec<Node>,
    renames: HashMap<String, String>,
    needs: Needs,
    /// Names handed out so far (the graph only knows the old nodes).
    taken: std::collections::HashSet<String>,
}

impl Exporter {
    fn fresh(&mut self, g: &Graph, base: &str) -> String {
        let mut name = g.fresh_name(base);
        let mut k = 1;
        while self.taken.contains(&name) {
            name = g.fresh_name(&format!("{base}_{k}"));
            k += 1;
        }
        self.taken.insert(name.clone());
        name
    }

    fn push(&mut self, g: &Graph, name: &str, op: &str, ins: &[&str], outs: &[&str]) -> &mut Node {
        let name = self.fresh(g, name);
        self.nodes.push(Node::new(&name, op, ins, outs));
        self.nodes.last_mut().expect("just pushed")
    }

    fn add_init(&mut self, g: &mut Graph, base: &str, t: Tensor) -> String {
        let name = self.fresh(g, base);
        g.initializers.insert(name.clone(), Arc::new(t));
        name
    }
}

/// The rank of value `name` if the graph declares or holds it.
fn rank_of(g: &Graph, name: &str) -> Option<usize> {
    if let Some(t) = g.initializer(name) {
        return Some(t.rank());
    }
    g.inputs
        .iter()
        .chain(g.outputs.iter())
        .chain(g.value_info.get(name))
        .find(|v| v.name == name)
        .and_then(|v| v.shape.as_ref().map(Vec::len))
}

/// The shape `[C, 1, …, 1]` that broadcasts a per-channel vector along
/// `axis` of a tensor of unknown or known rank.
fn channel_shape(c: usize, axis: i64, rank: Option<usize>) -> Option<Vec<usize>> {
    let trailing = if axis < 0 {
        usize::try_from(-axis - 1).ok()?
    } else {
        let r = rank?;
        let a = usize::try_from(axis).ok()?;
        if a >= r {
            return None;
        }
        r - 1 - a
    };
    let mut s = vec![c];
    s.extend(std::iter::repeat_n(1, trailing));
    Some(s)
}

/// Converts every `HzCalibration` / `HzPreprocess` node of `model` into
/// standard ONNX (see the module docs). The result runs in onnxruntime and
/// gives, on the float interpreter, bit-identical outputs.
pub fn export_qdq(model: &Model) -> Result<Model, QdqError> {
    let mut m = model.clone();
    for n in &m.graph.nodes {
        if has_horizon_subgraph(n) {
            return Err(node_err(
                n,
                "horizon nodes inside subgraphs are not supported by the QDQ export",
            ));
        }
    }
    let mut g = std::mem::take(&mut m.graph);
    let old = std::mem::take(&mut g.nodes);
    let mut ex = Exporter {
        nodes: Vec::with_capacity(old.len() * 2),
        renames: HashMap::new(),
        needs: Needs::default(),
        taken: Default::default(),
    };
    // Keep old nodes visible to fresh_name.
    g.nodes = old.clone();
    for n in old {
        if !is_horizon(&n) {
            ex.nodes.push(n);
            continue;
        }
        match n.op_type.as_str() {
            "HzCalibration" => convert_calibration(&mut ex, &mut g, &n)?,
            "HzPreprocess" => convert_preprocess(&mut ex, &mut g, &n)?,
            "HzBiasCorrection" => convert_bias_correction(&mut ex, &mut g, &n)?,
            _ => return Err(node_err(&n, format!("unknown op {}", n.qualified_op()))),
        }
    }
    let resolve = |mut v: String, r: &HashMap<String, String>| {
        while let Some(to) = r.get(&v) {
            v = to.clone();
        }
        v
    };
    for n in &mut ex.nodes {
        for i in &mut n.inputs {
            if ex.renames.contains_key(i) {
                *i = resolve(std::mem::take(i), &ex.renames);
            }
        }
    }
    g.nodes = ex.nodes;
    g.prune_unused_initializers_from(model);
    m.graph = g;

    let from = m.onnx_opset();
    let mut to = from;
    if ex.needs.qdq {
        to = to.max(10);
    }
    if ex.needs.per_channel {
        to = to.max(13);
    }
    if ex.needs.sixteen_bit {
        to = to.max(21);
    }
    if to > from {
        upgrade_opset(&mut m, to)?;
    }
    if !m.graph.nodes.iter().any(is_horizon) {
        m.opsets.remove(DOMAIN);
    }
    Ok(m)
}

fn has_horizon_subgraph(n: &Node) -> bool {
    n.attrs.values().any(|a| match a {
        Attr::Graph(g) => g
            .nodes
            .iter()
            .any(|s| is_horizon(s) || has_horizon_subgraph(s)),
        Attr::Graphs(gs) => gs.iter().any(|g| {
            g.nodes
                .iter()
                .any(|s| is_horizon(s) || has_horizon_subgraph(s))
        }),
        _ => false,
    })
}

/// Extension used by the exporter: drop the initializers that the export
/// orphaned (initializers unused already in the input model are kept).
trait PruneFrom {
    fn prune_unused_initializers_from(&mut self, original: &Model);
}

impl PruneFrom for Graph {
    fn prune_unused_initializers_from(&mut self, original: &Model) {
        let used: std::collections::HashSet<&str> = self
            .nodes
            .iter()
            .flat_map(|n| n.inputs.iter().map(String::as_str))
            .chain(self.outputs.iter().map(|o| o.name.as_str()))
            .collect();
        let orig_used: std::collections::HashSet<&str> = original
            .graph
            .nodes
            .iter()
            .flat_map(|n| n.inputs.iter().map(String::as_str))
            .collect();
        let drop: Vec<String> = self
            .initializers
            .keys()
            .filter(|k| !used.contains(k.as_str()) && orig_used.contains(k.as_str()))
            .cloned()
            .collect();
        for k in drop {
            self.initializers.remove(&k);
        }
    }
}

fn convert_calibration(ex: &mut Exporter, g: &mut Graph, n: &Node) -> Result<(), QdqError> {
    let fq = FakeQuant::from_node(n).map_err(|e| node_err(n, e))?;
    let (x, y) = match (n.input(0), n.outputs.first()) {
        (Some(x), Some(y)) if n.inputs.len() == 1 && n.outputs.len() == 1 => (x, y.as_str()),
        _ => return Err(node_err(n, "HzCalibration needs one input and one output")),
    };
    if fq.is_identity() {
        if g.is_output(y) {
            let node = ex.push(g, &n.name, "Identity", &[x], &[y]);
            node.name = n.name.clone();
        } else {
            ex.renames.insert(y.to_string(), x.to_string());
        }
        return Ok(());
    }
    if fq.qtype == FqType::Float16 {
        let half = ex.fresh(g, &format!("{y}_f16"));
        let c1 = ex.push(g, &format!("{}_to_f16", n.name), "Cast", &[x], &[&half]);
        c1.set_attr("to", Attr::Int(i64::from(DType::F16.onnx_code())));
        let c2 = ex.push(g, &format!("{}_to_f32", n.name), "Cast", &[&half], &[y]);
        c2.set_attr("to", Attr::Int(i64::from(DType::F32.onnx_code())));
        return Ok(());
    }
    let params = fq.params().map_err(|e| node_err(n, e))?;
    let dt = fq
        .storage_dtype()
        .ok_or_else(|| node_err(n, "no integer storage type"))?;
    let per_channel = params.len() > 1;
    ex.needs.qdq = true;
    ex.needs.per_channel |= per_channel;
    ex.needs.sixteen_bit |= matches!(dt, DType::I16 | DType::U16);

    // keep_masks: data stays off the lowest code (the program's mask sentinel).
    let grid: Vec<QParams> = if fq.keep_masks {
        params.iter().map(QParams::masked_data).collect()
    } else {
        params.clone()
    };
    let src = clamp_to_grid(ex, g, n, &fq, &grid, x, dt)?;
    let (scale, zp) = if per_channel {
        let c = params.len();
        (
            Tensor::from_f32(&[c], params.iter().map(|p| p.scale).collect())?,
            Tensor::from_vec(&[c], params.iter().map(|p| p.zero_point).collect())?.cast(dt)?,
        )
    } else {
        (
            Tensor::scalar(params[0].scale),
            Tensor::scalar(params[0].zero_point).cast(dt)?,
        )
    };
    let scale_name = ex.add_init(g, &format!("{}_scale", n.name), scale);
    let zp_name = ex.add_init(g, &format!("{}_zero_point", n.name), zp);
    let q = ex.fresh(g, &format!("{y}_quantized"));
    let axis = fq.axis;
    let qn = ex.push(
        g,
        &format!("{}_QuantizeLinear", n.name),
        "QuantizeLinear",
        &[&src, &scale_name, &zp_name],
        &[&q],
    );
    if per_channel {
        qn.set_attr("axis", Attr::Int(axis));
    }
    // keep_masks: mask values (x ≤ -mask_limit) bypass the Q/DQ pair.
    let dq_out = if fq.keep_masks {
        ex.fresh(g, &format!("{y}_dequantized"))
    } else {
        y.to_string()
    };
    let dn = ex.push(
        g,
        &format!("{}_DequantizeLinear", n.name),
        "DequantizeLinear",
        &[&q, &scale_name, &zp_name],
        &[&dq_out],
    );
    if per_channel {
        dn.set_attr("axis", Attr::Int(axis));
    }
    if fq.keep_masks {
        let limit = ex.add_init(
            g,
            &format!("{}_mask_limit", n.name),
            Tensor::scalar(-fq.mask_limit),
        );
        let is_mask = ex.fresh(g, &format!("{y}_is_mask"));
        ex.push(
            g,
            &format!("{}_MaskTest", n.name),
            "LessOrEqual",
            &[x, &limit],
            &[&is_mask],
        );
        ex.push(
            g,
            &format!("{}_MaskKeep", n.name),
            "Where",
            &[&is_mask, x, &dq_out],
            &[y],
        );
    }
    Ok(())
}

/// The integer range of a `QuantizeLinear` storage type.
fn storage_range(dt: DType) -> (f32, f32) {
    match dt {
        DType::I8 => (-128.0, 127.0),
        DType::I16 => (-32768.0, 32767.0),
        DType::U8 => (0.0, 255.0),
        _ => (0.0, 65535.0),
    }
}

/// Makes sure no value quantizes outside the simulation's bounds where
/// these are narrower than `QuantizeLinear`'s saturation (symmetric weights
/// never use `−qmax − 1`; ec weights and features stop at `±127·256` /
/// `127·256`, inside int16). Initializers are clamped in a copy; computed
/// values by `Max` / `Min` nodes. Returns the name of the value to quantize.
fn clamp_to_grid(
    ex: &mut Exporter,
    g: &mut Graph,
    n: &Node,
    fq: &FakeQuant,
    params: &[QParams],
    x: &str,
    dt: DType,
) -> Result<String, QdqError> {
    let (tmin, tmax) = storage_range(dt);
    let low = params.iter().any(|p| p.lo + p.zero_point as f32 > tmin);
    let high = params.iter().any(|p| p.hi + (p.zero_point as f32) < tmax);
    if !low && !high {
        return Ok(x.to_string());
    }
    let c = params.len();
    if let Some(w) = g.initializer(x) {
        let w = w.to_f32()?;
        let shape = w.shape().to_vec();
        let inner = if c == 1 {
            w.len().max(1)
        } else {
            let ax = hb_float::kernels::util::norm_axis(fq.axis, shape.len())
                .map_err(|e| node_err(n, e))?;
            if shape[ax] != c {
                return Err(node_err(
                    n,
                    format!("{c} thresholds for axis {ax} of weight {x} {shape:?}"),
                ));
            }
            shape[ax + 1..].iter().product()
        };
        let mut vals: Vec<f32> = w.iter().copied().collect();
        let mut changed = false;
        if inner > 0 {
            for (k, row) in vals.chunks_mut(inner).enumerate() {
                let p = &params[k % c];
                for v in row.iter_mut() {
                    let r = (*v / p.scale).round_ties_even();
                    if r < p.lo {
                        *v = p.lo * p.scale;
                        changed = true;
                    } else if r > p.hi {
                        *v = p.hi * p.scale;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            return Ok(x.to_string());
        }
        let t = Tensor::from_f32(&shape, vals)?;
        return Ok(ex.add_init(g, &format!("{x}_clamped"), t));
    }
    // A computed value: clamp at run time.
    let bound = |ex: &mut Exporter, g: &mut Graph, what: &str, v: Vec<f32>| {
        let t = if c == 1 {
            Tensor::scalar(v[0])
        } else {
            let shape = channel_shape(c, fq.axis, rank_of(g, x)).ok_or_else(|| {
                node_err(
                    n,
                    format!("rank of {x} is unknown; cannot place a per-channel clamp"),
                )
            })?;
            Tensor::from_f32(&shape, v)?
        };
        Ok::<_, QdqError>(ex.add_init(g, &format!("{}_{what}", n.name), t))
    };
    let mut src = x.to_string();
    if low {
        let lo = bound(
            ex,
            g,
            "min",
            params.iter().map(|p| p.lo * p.scale).collect(),
        )?;
        let out = ex.fresh(g, &format!("{x}_clamped"));
        ex.push(
            g,
            &format!("{}_clamp", n.name),
            "Max",
            &[&src, &lo],
            &[&out],
        );
        src = out;
    }
    if high {
        let hi = bound(
            ex,
            g,
            "max",
            params.iter().map(|p| p.hi * p.scale).collect(),
        )?;
        let out = ex.fresh(g, &format!("{x}_clamped_high"));
        ex.push(
            g,
            &format!("{}_clamp_high", n.name),
            "Min",
            &[&src, &hi],
            &[&out],
        );
        src = out;
    }
    Ok(src)
}

/// `HzBiasCorrection`: ON → the corrected bias (a new initializer when the
/// bias is one, else an `Add`); OFF → removed.
fn convert_bias_correction(ex: &mut Exporter, g: &mut Graph, n: &Node) -> Result<(), QdqError> {
    let bc = BiasCorrection::from_node(n).map_err(|e| node_err(n, e))?;
    let (x, y) = match (n.input(0), n.outputs.first()) {
        (Some(x), Some(y)) if n.outputs.len() == 1 => (x, y.as_str()),
        _ => {
            return Err(node_err(
                n,
                "HzBiasCorrection needs one input and one output",
            ))
        }
    };
    if !bc.enabled && !g.is_output(y) {
        ex.renames.insert(y.to_string(), x.to_string());
        return Ok(());
    }
    if let Some(b) = g.initializer(x) {
        let corrected = bc.apply(b).map_err(|e| node_err(n, e))?;
        let name = ex.add_init(g, &format!("{x}_corrected"), corrected);
        if g.is_output(y) {
            let node = ex.push(g, &n.name, "Identity", &[&name], &[y]);
            node.name = n.name.clone();
        } else {
            ex.renames.insert(y.to_string(), name);
        }
        return Ok(());
    }
    let offsets = if bc.enabled {
        bc.offsets.clone()
    } else {
        vec![0.0; bc.offsets.len()]
    };
    let o = ex.add_init(
        g,
        &format!("{}_offsets", n.name),
        Tensor::from_f32(&[offsets.len()], offsets)?,
    );
    ex.push(g, &n.name, "Add", &[x, &o], &[y]);
    Ok(())
}

fn convert_preprocess(ex: &mut Exporter, g: &mut Graph, n: &Node) -> Result<(), QdqError> {
    let p = Preprocess::from_node(n).map_err(|e| node_err(n, e))?;
    let (x, y) = match (n.input(0), n.outputs.first()) {
        (Some(x), Some(y)) if n.outputs.len() == 1 => (x, y.as_str()),
        _ => return Err(node_err(n, "HzPreprocess needs one input and one output")),
    };
    let rank = rank_of(g, x);
    let declared_f32 = g
        .inputs
        .iter()
        .find(|v| v.name == x)
        .and_then(|v| v.dtype())
        == Some(DType::F32)
        || g.initializer(x).map(Tensor::dtype) == Some(DType::F32);
    let mut src = x.to_string();
    if !declared_f32 {
        let out = ex.fresh(g, &format!("{x}_f32"));
        let c = ex.push(g, &format!("{}_cast", n.name), "Cast", &[x], &[&out]);
        c.set_attr("to", Attr::Int(i64::from(DType::F32.onnx_code())));
        src = out;
    }
    let constant = |ex: &mut Exporter, g: &mut Graph, what: &str, v: &[f32]| {
        let t = if v.len() == 1 {
            Tensor::scalar(v[0])
        } else {
            let shape = channel_shape(v.len(), p.axis, rank).ok_or_else(|| {
                node_err(
                    n,
                    format!("rank of input {x} is unknown; cannot place per-channel {what}"),
                )
            })?;
            Tensor::from_f32(&shape, v.to_vec())?
        };
        Ok::<_, QdqError>(ex.add_init(g, &format!("{}_{what}", n.name), t))
    };
    let mean = constant(ex, g, "mean", &p.mean)?;
    let scale = constant(ex, g, "scale", &p.scale)?;
    let centered = ex.fresh(g, &format!("{y}_centered"));
    ex.push(
        g,
        &format!("{}_sub", n.name),
        "Sub",
        &[&src, &mean],
        &[&centered],
    );
    ex.push(
        g,
        &format!("{}_mul", n.name),
        "Mul",
        &[&centered, &scale],
        &[y],
    );
    Ok(())
}

/// The smallest IR version that allows `opset` of ai.onnx.
fn min_ir_version(opset: i64) -> i64 {
    match opset {
        ..=8 => 3,
        9 => 4,
        10 => 5,
        11 => 6,
        12..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

/// Raises the model's ai.onnx opset to `to`, rewriting the ops whose
/// signature changed: `axes` / `split` attributes that became inputs
/// (Squeeze, Unsqueeze, ReduceSum, Split at 13; the other Reduce ops at 18),
/// Softmax / LogSoftmax / Hardmax's 2-D coercion (13), Dropout's `ratio`
/// attribute, Split's `num_outputs` (18) and GridSample's mode names (20).
/// Models below opset 11 and ops with other semantic changes in the range
/// are refused.
pub fn upgrade_opset(m: &mut Model, to: i64) -> Result<(), QdqError> {
    let from = m.onnx_opset();
    if to <= from {
        return Ok(());
    }
    let err = |msg: String| QdqError::Opset { from, to, msg };
    if from < 11 {
        return Err(err(
            "models below opset 11 are not upgraded; re-export the model at opset 11 or later"
                .into(),
        ));
    }
    upgrade_graph(&mut m.graph, from, to).map_err(err)?;
    m.opsets.remove("ai.onnx");
    m.opsets.insert(String::new(), to);
    m.ir_version = m.ir_version.max(min_ir_version(to));
    Ok(())
}

const REDUCE_18: &[&str] = &[
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
];

fn upgrade_graph(g: &mut Graph, from: i64, to: i64) -> Result<(), String> {
    let crosses = |v: i64| from < v && to >= v;
    let old = std::mem::take(&mut g.nodes);
    g.nodes = old.clone();
    let mut out = Vec::with_capacity(old.len());
    let mut taken = std::collections::HashSet::new();
    let mut fresh = |g: &Graph, base: String| {
        let mut name = g.fresh_name(&base);
        let mut k = 1;
        while g.initializers.contains_key(&name) || !taken.insert(name.clone()) {
            name = g.fresh_name(&format!("{base}_{k}"));
            k += 1;
        }
        name
    };
    for mut n in old {
        for a in n.attrs.values_mut() {
            match a {
                Attr::Graph(sg) => upgrade_graph(sg, from, to)?,
                Attr::Graphs(gs) => {
                    for sg in gs {
                        upgrade_graph(sg, from, to)?;
                    }
                }
                _ => {}
            }
        }
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            out.push(n);
            continue;
        }
        let op = n.op_type.as_str();
        let attr_to_input = |n: &mut Node, attr: &str, g: &mut Graph, name: String| {
            if let Some(Attr::Ints(v)) = n.attrs.remove(attr) {
                let len = v.len();
                if let Ok(t) = Tensor::from_vec(&[len], v) {
                    g.initializers.insert(name.clone(), Arc::new(t));
                }
                while n.inputs.len() < 2 {
                    n.inputs.push(String::new());
                }
                n.inputs[1] = name;
            }
        };
        match op {
            "Squeeze" | "Unsqueeze" | "ReduceSum" if crosses(13) => {
                let name = fresh(g, format!("{}_axes", n.name));
                attr_to_input(&mut n, "axes", g, name);
            }
            "Split" if crosses(13) => {
                let name = fresh(g, format!("{}_split", n.name));
                attr_to_input(&mut n, "split", g, name);
            }
            "Softmax" | "LogSoftmax" | "Hardmax" if crosses(13) => {
                let axis = n.int_or("axis", 1).map_err(|e| e.to_string())?;
                let rank = rank_of(g, n.input(0).unwrap_or(""));
                let last = axis == -1 || rank.is_some_and(|r| axis >= 0 && axis as usize + 1 == r);
                if !last {
                    // Old semantics: flatten to 2-D at `axis`, normalize the
                    // second dimension, restore the shape.
                    let x = n.input(0).unwrap_or("").to_string();
                    let y = n.outputs.first().cloned().unwrap_or_default();
                    let shape = fresh(g, format!("{}_shape", n.name));
                    let flat = fresh(g, format!("{}_flat", n.name));
                    let soft = fresh(g, format!("{}_2d", n.name));
                    let mut s = Node::new(
                        &fresh(g, format!("{}_Shape", n.name)),
                        "Shape",
                        &[&x],
                        &[&shape],
                    );
                    s.domain = n.domain.clone();
                    let mut f = Node::new(
                        &fresh(g, format!("{}_Flatten", n.name)),
                        "Flatten",
                        &[&x],
                        &[&flat],
                    );
                    f.set_attr("axis", Attr::Int(axis));
                    let mut sm = n.clone();
                    sm.inputs = vec![flat.clone()];
                    sm.outputs = vec![soft.clone()];
                    sm.set_attr("axis", Attr::Int(-1));
                    let r = Node::new(
                        &fresh(g, format!("{}_Reshape", n.name)),
                        "Reshape",
                        &[&soft, &shape],
                        &[&y],
                    );
                    out.extend([s, f, sm, r]);
                    continue;
                }
            }
            "Dropout" if crosses(12) => {
                n.attrs.remove("ratio");
            }
            "Upsample" | "Scatter" => {
                return Err(format!(
                    "node '{}': {op} is not defined at opset {to}",
                    n.name
                ));
            }
            "GroupNormalization" if crosses(21) => {
                return Err(format!(
                    "node '{}': GroupNormalization changed its scale/bias layout at opset 21",
                    n.name
                ));
            }
            "DFT" if crosses(20) => {
                return Err(format!(
                    "node '{}': DFT's axis became an input at opset 20",
                    n.name
                ));
            }
            "GridSample" if crosses(20) => {
                if let Some(Attr::String(mode)) = n.attrs.get_mut("mode") {
                    match mode.as_str() {
                        "bilinear" => *mode = "linear".into(),
                        "bicubic" => *mode = "cubic".into(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        let op = n.op_type.clone();
        if REDUCE_18.contains(&op.as_str()) && crosses(18) {
            let name = fresh(g, format!("{}_axes", n.name));
            attr_to_input(&mut n, "axes", g, name);
        }
        if op == "Split" && crosses(18) && n.input(1).is_none() && n.attr("num_outputs").is_none() {
            n.set_attr("num_outputs", Attr::Int(n.outputs.len() as i64));
        }
        out.push(n);
    }
    g.nodes = out;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hb_float::Session;
    use hb_ir::ValueInfo;

    /// `n` deterministic values in [-1, 1).
    fn rand_vals(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn calib(
        name: &str,
        x: &str,
        y: &str,
        qtype: FqType,
        th: &[f32],
        axis: i64,
        asym: bool,
        weight: bool,
        on: bool,
    ) -> Node {
        FakeQuant {
            axis,
            asymmetric: asym,
            is_weight: weight,
            enabled: on,
            ..FakeQuant::feature(qtype, th)
        }
        .to_node(name, x, y)
    }

    /// A calibrated graph with every kind of horizon node.
    fn calibrated_model() -> Model {
        let mut g = Graph {
            name: "g".into(),
            ..Default::default()
        };
        g.inputs
            .push(ValueInfo::tensor("img", DType::U8, &[1, 3, 6, 6]));
        let w = rand_vals(4 * 3 * 9, 1);
        let wmax: Vec<f32> = w
            .chunks(27)
            .map(|c| c.iter().fold(0.0f32, |m, v| m.max(v.abs())))
            .collect();
        // Channel 1's threshold is below its max: some weights saturate
        // (and would reach -128 without the weight clamp).
        let wth = vec![wmax[0], wmax[1] * 0.5, wmax[2], wmax[3] * 0.8];
        g.initializers.insert(
            "w".into(),
            Arc::new(Tensor::from_f32(&[4, 3, 3, 3], w).unwrap()),
        );
        g.initializers.insert(
            "b".into(),
            Arc::new(Tensor::from_f32(&[4], vec![0.1, -0.2, 0.3, 0.0]).unwrap()),
        );
        let pre = Preprocess {
            mean: vec![100.0, 120.0, 140.0],
            scale: vec![1.0 / 58.0, 1.0 / 57.0, 1.0 / 60.0],
            axis: 1,
        };
        g.nodes.push(pre.to_node("img_HzPreprocess", "img", "x"));
        g.nodes.push(calib(
            "x_HzCalibration",
            "x",
            "x_calibrated",
            FqType::Int8,
            &[2.0],
            1,
            false,
            false,
            true,
        ));
        g.nodes.push(calib(
            "w_HzCalibration",
            "w",
            "w_calibrated",
            FqType::Int8,
            &wth,
            0,
            false,
            true,
            true,
        ));
        let mut conv = Node::new(
            "conv",
            "Conv",
            &["x_calibrated", "w_calibrated", "b"],
            &["c"],
        );
        conv.set_attr("pads", Attr::Ints(vec![1, 1, 1, 1]));
        g.nodes.push(conv);
        g.nodes.push(calib(
            "c_HzCalibration",
            "c",
            "c_calibrated",
            FqType::Int16,
            &[3.0],
            1,
            false,
            false,
            true,
        ));
        g.nodes
            .push(Node::new("relu", "Relu", &["c_calibrated"], &["r"]));
        g.nodes.push(calib(
            "r_HzCalibration",
            "r",
            "r_calibrated",
            FqType::Float16,
            &[],
            1,
            false,
            false,
            true,
        ));
        g.nodes.push(calib(
            "r_calibrated_HzCalibration",
            "r_calibrated",
            "r2",
            FqType::Int8,
            &[0.01],
            1,
            false,
            false,
            false,
        ));
        g.nodes.push(Node::new("sig", "Sigmoid", &["r2"], &["s"]));
        g.nodes.push(calib(
            "s_HzCalibration",
            "s",
            "out_asym",
            FqType::Int8,
            &[0.2, 0.9],
            1,
            true,
            false,
            true,
        ));
        g.nodes.push(calib(
            "c_float32_HzCalibration",
            "c",
            "out_f32",
            FqType::Float32,
            &[],
            1,
            false,
            false,
            true,
        ));
        g.nodes.push(calib(
            "c_int16_HzCalibration",
            "c",
            "out_u16",
            FqType::Int16,
            &[-1.0, 1.0, -0.5, 2.0, 0.1, 0.3, -2.0, -0.1],
            1,
            true,
            false,
            true,
        ));
        for o in ["out_asym", "out_f32", "out_u16"] {
            g.outputs
                .push(ValueInfo::tensor(o, DType::F32, &[1, 4, 6, 6]));
        }
        Model {
            ir_version: 7,
            opsets: [(String::new(), 13), ("horizon".to_string(), 1)].into(),
            graph: g,
            ..Default::default()
        }
    }

    fn run(m: &Model, inputs: &HashMap<String, Tensor>) -> Vec<(String, Vec<u32>)> {
        Session::new(m)
            .unwrap()
            .run(inputs)
            .unwrap()
            .into_iter()
            .map(|(n, t)| {
                let bits = t.to_f32().unwrap().iter().map(|v| v.to_bits()).collect();
                (n, bits)
            })
            .collect()
    }

    #[test]
    fn export_is_bit_exact_on_the_float_interpreter() {
        let m = calibrated_model();
        let q = export_qdq(&m).unwrap();
        assert!(!q.graph.nodes.iter().any(is_horizon));
        assert!(!q.opsets.contains_key("horizon"));
        assert_eq!(q.onnx_opset(), 21);
        assert!(q.ir_version >= 10);
        let count = |op: &str| q.graph.nodes.iter().filter(|n| n.op_type == op).count();
        assert_eq!(count("QuantizeLinear"), 5);
        assert_eq!(count("DequantizeLinear"), 5);
        assert_eq!(count("Cast"), 3); // u8 input → f32, f16 round trip
        assert_eq!(count("Identity"), 1); // float32 calibration on a graph output
        assert!(q.graph.initializers.contains_key("w_clamped"));
        assert!(!q.graph.initializers.contains_key("w"));
        let zp = q
            .graph
            .initializer("c_int16_HzCalibration_zero_point")
            .unwrap();
        assert_eq!(zp.dtype(), DType::U16);
        assert_eq!(zp.shape(), &[4]);

        for seed in 0..4u64 {
            let img: Vec<u8> = rand_vals(108, seed + 10)
                .iter()
                .map(|v| ((v + 1.0) * 127.9) as u8)
                .collect();
            let inputs: HashMap<String, Tensor> = [(
                "img".to_string(),
                Tensor::from_vec(&[1, 3, 6, 6], img).unwrap(),
            )]
            .into();
            assert_eq!(run(&m, &inputs), run(&q, &inputs));
        }
        // The saved model loads back with the same content.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qdq.onnx");
        hb_ir::save_model(&q, &path).unwrap();
        let back = hb_ir::load_model(&path).unwrap();
        assert_eq!(back.graph.nodes.len(), q.graph.nodes.len());
    }

    #[test]
    fn weight_clamp_matters() {
        // Without the clamp, QuantizeLinear would give -128 for the
        // saturated weights of channel 1 and the outputs would differ.
        let m = calibrated_model();
        let mut q = export_qdq(&m).unwrap();
        for n in &mut q.graph.nodes {
            for i in &mut n.inputs {
                if i == "w_clamped" {
                    *i = "w".into();
                }
            }
        }
        q.graph
            .initializers
            .insert("w".into(), m.graph.initializers["w"].clone());
        let inputs: HashMap<String, Tensor> = [(
            "img".to_string(),
            Tensor::from_vec(&[1, 3, 6, 6], vec![200u8; 108]).unwrap(),
        )]
        .into();
        assert_ne!(run(&m, &inputs), run(&q, &inputs));
    }

    #[test]
    fn off_only_model_needs_no_opset_change() {
        let mut g = Graph::default();
        g.inputs.push(ValueInfo::tensor("x", DType::F32, &[2]));
        g.outputs.push(ValueInfo::tensor("z", DType::F32, &[2]));
        g.nodes.push(calib(
            "x_HzCalibration",
            "x",
            "x_calibrated",
            FqType::Int8,
            &[1.0],
            1,
            false,
            false,
            false,
        ));
        g.nodes
            .push(Node::new("neg", "Neg", &["x_calibrated"], &["y"]));
        g.nodes.push(calib(
            "y_HzCalibration",
            "y",
            "z",
            FqType::Int8,
            &[1.0],
            1,
            false,
            false,
            false,
        ));
        let m = Model {
            ir_version: 6,
            opsets: [(String::new(), 11), ("horizon".to_string(), 1)].into(),
            graph: g,
            ..Default::default()
        };
        let q = export_qdq(&m).unwrap();
        assert_eq!(q.onnx_opset(), 11);
        assert_eq!(q.graph.nodes.len(), 2);
        assert_eq!(q.graph.nodes[0].inputs, vec!["x".to_string()]);
        assert_eq!(q.graph.nodes[1].op_type, "Identity");
        assert_eq!(q.graph.nodes[1].outputs, vec!["z".to_string()]);
    }

    /// An opset-11 model with ops whose signature changed by opset 21.
    fn opset_11_model() -> Model {
        let mut g = Graph {
            name: "g".into(),
            ..Default::default()
        };
        g.inputs
            .push(ValueInfo::tensor("x", DType::F32, &[1, 2, 3, 1]));
        g.outputs
            .push(ValueInfo::tensor("y", DType::F32, &[1, 2, 3]));
        g.outputs
            .push(ValueInfo::tensor("m", DType::F32, &[1, 1, 1]));
        g.outputs
            .push(ValueInfo::tensor("p0", DType::F32, &[1, 1, 3]));
        g.nodes.push(calib(
            "x_HzCalibration",
            "x",
            "xq",
            FqType::Int16,
            &[1.0],
            1,
            false,
            false,
            true,
        ));
        let mut sq = Node::new("sq", "Squeeze", &["xq"], &["s"]);
        sq.set_attr("axes", Attr::Ints(vec![3]));
        g.nodes.push(sq);
        let mut sm = Node::new("sm", "Softmax", &["s"], &["y"]);
        sm.set_attr("axis", Attr::Int(1));
        g.nodes.push(sm);
        let mut rm = Node::new("rm", "ReduceMean", &["s"], &["m"]);
        rm.set_attr("axes", Attr::Ints(vec![1, 2]));
        g.nodes.push(rm);
        let mut sp = Node::new("sp", "Split", &["s"], &["p0", "p1"]);
        sp.set_attr("axis", Attr::Int(1));
        sp.set_attr("split", Attr::Ints(vec![1, 1]));
        g.nodes.push(sp);
        Model {
            ir_version: 6,
            opsets: [(String::new(), 11), ("horizon".to_string(), 1)].into(),
            graph: g,
            ..Default::default()
        }
    }

    #[test]
    fn opset_11_model_is_upgraded() {
        let m = opset_11_model();
        let q = export_qdq(&m).unwrap();
        assert_eq!(q.onnx_opset(), 21);
        let ops: Vec<&str> = q.graph.nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert!(ops.contains(&"Flatten"), "{ops:?}");
        for n in &q.graph.nodes {
            assert!(
                n.attr("axes").is_none() && n.attr("split").is_none(),
                "{n:?}"
            );
        }
        let x = Tensor::from_f32(&[1, 2, 3, 1], rand_vals(6, 5)).unwrap();
        let inputs: HashMap<String, Tensor> = [("x".to_string(), x)].into();
        assert_eq!(run(&m, &inputs), run(&q, &inputs));

        let mut old = m.clone();
        old.opsets.insert(String::new(), 9);
        assert!(matches!(export_qdq(&old), Err(QdqError::Opset { .. })));
    }

    /// Writes the hand-built calibrated model, its QDQ export, inputs and
    /// the float interpreter's outputs to `$HB_QDQ_DUMP` for
    /// `xtask/ort_qdq_check.py` (ORT cross-check; needs Python, so ignored).
    #[test]
    #[ignore = "writes files for the Python ORT cross-check; `cargo xtask qdq-check` runs it and xtask/ort_qdq_check.py"]
    fn dump_ort_case() {
        let Ok(dir) = std::env::var("HB_QDQ_DUMP") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        let m = calibrated_model();
        let q = export_qdq(&m).unwrap();
        std::fs::create_dir_all(dir.join("inputs/img")).unwrap();
        hb_ir::save_model(&m, &dir.join("calibrated.onnx")).unwrap();
        hb_ir::save_model(&q, &dir.join("qdq.onnx")).unwrap();
        let sess = Session::new(&m).unwrap();
        for k in 0..8u64 {
            let img: Vec<u8> = rand_vals(108, k + 100)
                .iter()
                .map(|v| ((v + 1.0) * 127.9) as u8)
                .collect();
            let img = Tensor::from_vec(&[1, 3, 6, 6], img).unwrap();
            let p = dir.join(format!("inputs/img/{k}.npy"));
            hb_tensor::io::write_npy(&p, &img).unwrap();
            let outs = sess.run(&[("img".to_string(), img)].into()).unwrap();
            for (name, t) in outs {
                std::fs::create_dir_all(dir.join("sim").join(&name)).unwrap();
                let p = dir.join("sim").join(&name).join(format!("{k}.npy"));
                hb_tensor::io::write_npy(&p, &t).unwrap();
            }
        }
        let m = opset_11_model();
        let q = export_qdq(&m).unwrap();
        let d = dir.join("op11");
        std::fs::create_dir_all(d.join("inputs/x")).unwrap();
        hb_ir::save_model(&m, &d.join("calibrated.onnx")).unwrap();
        hb_ir::save_model(&q, &d.join("qdq.onnx")).unwrap();
        let sess = Session::new(&m).unwrap();
        for k in 0..4u64 {
            let x = Tensor::from_f32(&[1, 2, 3, 1], rand_vals(6, k + 7)).unwrap();
            hb_tensor::io::write_npy(&d.join(format!("inputs/x/{k}.npy")), &x).unwrap();
            for (name, t) in sess.run(&[("x".to_string(), x)].into()).unwrap() {
                std::fs::create_dir_all(d.join("sim").join(&name)).unwrap();
                let p = d.join("sim").join(&name).join(format!("{k}.npy"));
                hb_tensor::io::write_npy(&p, &t).unwrap();
            }
        }
    }

    /// One int8 calibration node (threshold 2) with `keep_masks`, and
    /// `mask_limit` when given, on a `[1, 6]` input; runs `x` through the
    /// simulation and the QDQ export (which must agree bit for bit) and
    /// returns the output.
    fn masked_round_trip(limit: Option<f32>, x: Vec<f32>) -> Vec<f32> {
        let mut g = Graph::default();
        g.inputs.push(ValueInfo::tensor("x", DType::F32, &[1, 6]));
        g.outputs.push(ValueInfo::tensor("y", DType::F32, &[1, 6]));
        let mut n = calib(
            "x_HzCalibration",
            "x",
            "y",
            FqType::Int8,
            &[2.0],
            1,
            false,
            false,
            true,
        );
        n.set_attr("keep_masks", Attr::Int(1));
        if let Some(l) = limit {
            n.set_attr("mask_limit", Attr::Float(l));
        }
        g.nodes.push(n);
        let mut m = Model {
            ir_version: 8,
            graph: g,
            ..Default::default()
        };
        m.opsets.insert(String::new(), 13);
        m.opsets.insert(DOMAIN.into(), 1);
        let x = Tensor::from_f32(&[1, 6], x).unwrap();
        let inputs: HashMap<String, Tensor> = [("x".to_string(), x)].into_iter().collect();
        let q = export_qdq(&m).unwrap();
        let (a, b) = (run(&m, &inputs), run(&q, &inputs));
        assert_eq!(a, b);
        a[0].1.iter().map(|u| f32::from_bits(*u)).collect()
    }

    #[test]
    fn mask_sentinels_pass_both_the_simulation_and_the_export() {
        let y = masked_round_trip(
            None,
            vec![f32::NEG_INFINITY, f32::MIN, -1e9, -5.0, 0.3, 1.7],
        );
        assert_eq!(&y[..3], &[f32::NEG_INFINITY, f32::MIN, -1e9]);
        // Data stops at −127: −128 is the integer program's mask code.
        assert_eq!(y[3], -127.0 * (2.0 / 127.0));
    }

    #[test]
    fn moderate_mask_limit_passes_both_the_simulation_and_the_export() {
        let y = masked_round_trip(Some(1e3), vec![-1e4, -65504.0, -1e3, -999.0, 0.3, 1.7]);
        assert_eq!(&y[..3], &[-1e4, -65504.0, -1e3]);
        // -999 is data: it clamps to the grid (−127, as the program).
        assert_eq!(y[3], -127.0 * (2.0 / 127.0));
    }

    #[test]
    fn bad_nodes_are_errors() {
        let mut m = calibrated_model();
        m.graph.nodes[1].set_attr("thresholds", Attr::Floats(vec![0.0]));
        let e = export_qdq(&m).unwrap_err().to_string();
        assert!(e.contains("x_HzCalibration"), "{e}");
        let mut m = calibrated_model();
        m.graph.nodes[2].set_attr("thresholds", Attr::Floats(vec![1.0, 2.0]));
        assert!(export_qdq(&m).is_err());
    }
}
