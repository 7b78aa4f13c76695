//! Calibrated ONNX → `.bc` integer program.
//!
//! Every value of the calibrated float graph gets up to two program
//! representations: its *host* value (f32, or the original type of integer
//! inputs) and *quantized* versions (i8 / i16 at a calibration node's scale,
//! or i32 high-precision). Nodes are lowered in graph order:
//!
//! - an `HzCalibration` feature node (int8/int16, symmetric, per tensor, ON)
//!   makes its output the quantized value at its scale: free when the
//!   producer already wrote that scale, a `Requantize` from another scale, or
//!   a `Quantize` of a host value; other calibration nodes (float16, per
//!   channel, asymmetric, OFF) run on the CPU as the calibrated model does;
//!   weight calibration nodes are folded into their Conv/MatMul/Gemm;
//! - a computing op whose inputs are quantized and whose attributes the
//!   integer machine supports runs on the BPU and writes its output directly
//!   at the scale its consumers' calibration nodes want (found through
//!   passive ops, [`Lowerer::demand`]); a Conv/MatMul/Gemm whose output no
//!   calibration node reads keeps an int32 high-precision output; any other
//!   op whose output is not re-quantized runs on the CPU in float, exactly as
//!   the calibrated model computes it;
//! - passive ops move quantized data (keeping the scale) or host data;
//! - everything else is a float CPU op, with Dequantize at its inputs.
//!
//! The program's outputs are the host (f32) values of the model outputs.

mod builder;
pub(crate) mod cleanup;
mod known;
mod movement;
mod ops;
#[cfg(test)]
mod tests;
mod weighted;

pub use builder::{Builder, Q};

use crate::{LowerError, Result};
use hb_bpu::program::pb::{self, op::Kind};
use hb_bpu::program::Program;
use hb_float::kernels::horizon::{FakeQuant, FqType, MASK_LIMIT};
use hb_ir::{Attr, Graph, Model, Node};
use hb_tensor::{DType, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

/// What the lowering is told about the model.
#[derive(Debug, Clone, Default)]
pub struct LowerOptions {
    /// The calibrated model's file name (recorded in the program).
    pub source: String,
    /// Target march (recorded).
    pub march: String,
    /// Conversion parameters to record (config keys and values).
    pub params: Vec<(String, String)>,
    /// The model inputs in the original ONNX order (recorded).
    pub onnx_input_order: Vec<String>,
    /// Dtype and shape of the model's values as the caller already knows
    /// them (hb-calib: from its float run of the first sample). When they
    /// cover every node output, the shape-inference run is skipped; a value
    /// they miss makes the lowering infer all shapes itself.
    pub value_infos: HashMap<String, (DType, Vec<usize>)>,
}

/// Where one node went and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// Node name.
    pub node: String,
    /// Op type.
    pub op_type: String,
    /// Placed on the CPU.
    pub cpu: bool,
    /// Why it runs on the CPU (empty for BPU nodes).
    pub reason: String,
}

/// The result of lowering.
#[derive(Debug, Clone)]
pub struct Lowered {
    /// The `.bc` program.
    pub program: Program,
    /// Per source node: placement and reason.
    pub notes: Vec<Note>,
}

/// Ops that move data without arithmetic (keep the scale).
const MOVES: &[&str] = &[
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Dropout",
    "Transpose",
    "Slice",
    "Gather",
    "Split",
    "Expand",
    "Tile",
    "DepthToSpace",
    "SpaceToDepth",
    "Pad",
];

/// The input positions of a passive op that carry data.
fn passive_data_inputs(n: &Node) -> Option<Vec<usize>> {
    let op = n.op_type.as_str();
    if !n.domain.is_empty() && n.domain != "ai.onnx" {
        return None;
    }
    if MOVES.contains(&op) {
        Some(vec![0])
    } else if op == "Concat" {
        Some((0..n.inputs.len()).collect())
    } else if op == "Where" {
        Some(vec![1, 2])
    } else {
        None
    }
}

/// One quantization for a value several consumers read: theirs when they
/// agree, else int16 covering the widest of their ranges (each consumer
/// requantises from it: none saturates at another's threshold, at the price
/// of one extra rounding far below their LSB).
fn widest_common(a: Q, b: Q) -> Q {
    if a.same(&b) {
        return a;
    }
    let range = |q: &Q| f64::from(q.s()) * (q.lo.unsigned_abs().max(q.hi.unsigned_abs()) as f64);
    let t = range(&a).max(range(&b));
    let mut q = Q::feature(
        DType::I16,
        (t / 32767.0) as f32,
        a.keep_masks || b.keep_masks,
    );
    q.mask_limit = a.mask_limit.min(b.mask_limit);
    q
}

fn is_calibration(n: &Node) -> bool {
    n.op_type == "HzCalibration" && n.domain == "horizon"
}

/// The integer quantization a feature calibration node asks for, if the
/// integer machine can represent it (symmetric, per tensor, int8/int16, ON).
fn feature_q(n: &Node) -> Option<Q> {
    let fq = FakeQuant::from_node(n).ok()?;
    if fq.is_weight || !fq.enabled || fq.is_per_channel() {
        return None;
    }
    let p = fq.params().ok()?;
    if fq.asymmetric {
        // uint8 with zero point z: the signed value q − z ∈ [−z, 255 − z]
        // stored as i16 (§1); uint16 does not fit.
        if fq.qtype != FqType::Int8 || fq.keep_masks {
            return None;
        }
        let mut q = Q::feature(DType::I16, p[0].scale, false);
        q.lo = p[0].lo as i64;
        q.hi = p[0].hi as i64;
        return Some(q);
    }
    let dtype = match fq.qtype {
        FqType::Int8 => DType::I8,
        FqType::Int16 => DType::I16,
        _ => return None,
    };
    let mut q = Q::feature(dtype, p[0].scale, fq.keep_masks);
    q.mask_limit = fq.mask_limit;
    Some(q)
}

pub(crate) fn model_err(n: &Node, msg: impl std::fmt::Display) -> LowerError {
    LowerError::Model(format!("node '{}' ({}): {msg}", n.name, n.op_type))
}

/// A weight as its calibration node describes it.
#[derive(Debug, Clone)]
pub(crate) struct WeightCal {
    /// The float weight (shared with the graph's initializer).
    pub w: Arc<Tensor>,
    /// Its quantizer.
    pub fq: FakeQuant,
    /// Error compensation (`ec = 1`).
    pub ec: bool,
}

/// Lowering state.
pub(crate) struct Lowerer {
    pub b: Builder,
    pub g: Graph,
    pub opsets: std::collections::BTreeMap<String, i64>,
    pub vinfo: HashMap<String, (DType, Vec<usize>)>,
    pub host: HashMap<String, usize>,
    pub quant: HashMap<String, Vec<(Q, usize)>>,
    pub weights: HashMap<String, WeightCal>,
    pub consumers: HashMap<String, Vec<usize>>,
    pub demand_cache: HashMap<String, Option<Q>>,
    pub extra_bias: HashMap<String, Tensor>,
    /// Weighted node → (the bias Add folded into it, its original output).
    pub fused_adds: HashMap<String, (Node, String)>,
    /// Values computed in float by a CPU op (they may hold NaN or inf).
    pub cpu_made: std::collections::HashSet<String>,
    /// Outputs of `keep_masks` calibration nodes whose input is a float
    /// value: a float reader gets the node run on the CPU (masks kept as
    /// they are) instead of a Dequantize (qmin would read as a small value).
    pub mask_cal: HashMap<String, Node>,
    /// Nodes whose outputs carry attention-mask values into a `keep_masks`
    /// calibration node ([`mask_makers`]): they run in float on the CPU.
    pub mask_makers: std::collections::HashSet<String>,
    pub notes: Vec<Note>,
}

/// The nodes that compute the input of a `keep_masks` calibration node,
/// walking back through data movement, `Add` and `Sub` (the values a mask
/// flows through) until a calibration node or a computing op (the `Mul` by
/// `-1e4` that makes the mask). Integer arithmetic would saturate their mask
/// values to ordinary data (`-1e4` at the mask's scale is just qmin + 1), so
/// they stay in float and the calibration node marks the masks (§2).
fn mask_makers(g: &Graph) -> std::collections::HashSet<String> {
    let mut producer: HashMap<&str, &Node> = HashMap::new();
    for n in &g.nodes {
        for o in &n.outputs {
            producer.insert(o.as_str(), n);
        }
    }
    let keeps = |n: &Node| {
        is_calibration(n) && FakeQuant::from_node(n).is_ok_and(|f| f.keep_masks && f.enabled)
    };
    let mut work: Vec<&str> = g
        .nodes
        .iter()
        .filter(|n| keeps(n))
        .filter_map(|n| n.inputs.first().map(String::as_str))
        .collect();
    let mut makers = std::collections::HashSet::new();
    while let Some(t) = work.pop() {
        let Some(p) = producer.get(t) else {
            continue;
        };
        if is_calibration(p) || !makers.insert(p.name.clone()) {
            continue;
        }
        let through = match p.op_type.as_str() {
            "Add" | "Sub" => Some(vec![0, 1]),
            _ => passive_data_inputs(p),
        };
        for k in through.unwrap_or_default() {
            if let Some(i) = p.inputs.get(k).filter(|i| !i.is_empty()) {
                work.push(i.as_str());
            }
        }
    }
    makers
}

/// Lowers a calibrated model to a `.bc` program.
pub fn lower_model(model: &Model, opts: &LowerOptions) -> Result<Lowered> {
    let mut m = model.clone();
    name_skipped_outputs(&mut m.graph);
    for v in &m.graph.inputs {
        if v.fixed_shape().is_none() {
            return Err(LowerError::Model(format!(
                "input '{}' has dynamic shape {}; give input_shape in the config",
                v.name,
                v.shape_text()
            )));
        }
    }
    let vinfo = match given_value_infos(&m.graph, &opts.value_infos) {
        Some(v) => v,
        None => {
            let infos = hb_float::shapes::infer_shapes(&mut m, &HashMap::new())
                .map_err(|e| LowerError::Model(format!("shape inference: {e}")))?;
            let mut vinfo = HashMap::new();
            for v in m.graph.inputs.iter().chain(&infos) {
                if let (Some(dt), Some(s)) = (v.dtype(), v.fixed_shape()) {
                    vinfo.insert(v.name.clone(), (dt, s));
                }
            }
            vinfo
        }
    };
    let mut lw = Lowerer {
        b: Builder::new(),
        g: m.graph.clone(),
        opsets: m.opsets.clone(),
        vinfo,
        host: HashMap::new(),
        quant: HashMap::new(),
        weights: HashMap::new(),
        consumers: HashMap::new(),
        demand_cache: HashMap::new(),
        extra_bias: HashMap::new(),
        fused_adds: HashMap::new(),
        cpu_made: Default::default(),
        mask_cal: HashMap::new(),
        mask_makers: mask_makers(&m.graph),
        notes: Vec::new(),
    };
    weighted::fuse_bias_adds(&mut lw);
    for (i, n) in lw.g.nodes.iter().enumerate() {
        for x in &n.inputs {
            if !x.is_empty() {
                lw.consumers.entry(x.clone()).or_default().push(i);
            }
        }
    }
    let inputs = lw.g.inputs.clone();
    for v in &inputs {
        let (dt, shape) = lw.vinfo.get(&v.name).cloned().ok_or_else(|| {
            LowerError::Model(format!("input '{}' has an unsupported type", v.name))
        })?;
        let id = lw.b.value(&v.name, dt, &shape, None);
        lw.host.insert(v.name.clone(), id);
        lw.b.p.inputs.push(id as u32);
    }
    let nodes = lw.g.nodes.clone();
    for n in &nodes {
        lw.lower_node(n)?;
    }
    for o in lw.g.outputs.clone() {
        let id = lw.host_of(&o.name)?;
        lw.b.p.outputs.push(id as u32);
    }
    lw.b.p.conversion = Some(pb::ConversionInfo {
        tool: "hb-calib".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        source_model: opts.source.clone(),
        march: opts.march.clone(),
        params: opts
            .params
            .iter()
            .map(|(k, v)| pb::KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        onnx_input_order: if opts.onnx_input_order.is_empty() {
            model.graph.inputs.iter().map(|v| v.name.clone()).collect()
        } else {
            opts.onnx_input_order.clone()
        },
    });
    let program = cleanup::remove_dead(std::mem::take(&mut lw.b.p));
    hb_bpu::program::validate(&program).map_err(LowerError::Model)?;
    Ok(Lowered {
        program,
        notes: lw.notes,
    })
}

/// Names the omitted outputs that come before a named one (an LSTM's
/// `['', 'Y_h']`): a CPU op's program outputs are matched to its kernel's
/// outputs by position, so each of them needs a program value.
/// The caller's value infos restricted to `g`'s inputs and node outputs,
/// when they cover every one of them (else None: shapes are inferred).
fn given_value_infos(
    g: &Graph,
    given: &HashMap<String, (DType, Vec<usize>)>,
) -> Option<HashMap<String, (DType, Vec<usize>)>> {
    if given.is_empty() {
        return None;
    }
    let names = g.inputs.iter().map(|v| &v.name).chain(
        g.nodes
            .iter()
            .flat_map(|n| n.outputs.iter().filter(|o| !o.is_empty())),
    );
    names
        .map(|name| given.get(name).map(|v| (name.clone(), v.clone())))
        .collect()
}

fn name_skipped_outputs(g: &mut Graph) {
    for i in 0..g.nodes.len() {
        let Some(last) = g.nodes[i].outputs.iter().rposition(|o| !o.is_empty()) else {
            continue;
        };
        for k in 0..last {
            if g.nodes[i].outputs[k].is_empty() {
                let name = g.fresh_name(&format!("{}_unused_output{k}", g.nodes[i].name));
                g.nodes[i].outputs[k] = name;
            }
        }
    }
}

impl Lowerer {
    /// Dtype and shape of a graph value (or initializer).
    pub fn info(&self, v: &str) -> Result<(DType, Vec<usize>)> {
        if let Some(t) = self.g.initializer(v) {
            return Ok((t.dtype(), t.shape().to_vec()));
        }
        self.vinfo
            .get(v)
            .cloned()
            .ok_or_else(|| LowerError::Model(format!("value '{v}' has no known type and shape")))
    }

    /// The constant value of `v`, if it is an initializer.
    pub fn constant(&self, v: &str) -> Option<Tensor> {
        self.g.initializer(v).cloned()
    }

    /// The initializer `v`, shared rather than copied (weights: the whole
    /// model's data passes through here).
    pub fn constant_shared(&self, v: &str) -> Option<Arc<Tensor>> {
        self.g.initializers.get(v).cloned()
    }

    /// The host value of `v` (a program tensor id), dequantizing or adding
    /// the constant when needed.
    pub fn host_of(&mut self, v: &str) -> Result<usize> {
        if let Some(&id) = self.host.get(v) {
            return Ok(id);
        }
        if let Some(id) = self.weight_host(v)? {
            return Ok(id);
        }
        if let Some(t) = self.constant(v) {
            let id = self.b.constant(v, &t, None)?;
            self.host.insert(v.to_string(), id);
            return Ok(id);
        }
        if let Some(n) = self.mask_cal.get(v).cloned() {
            self.cpu_op(&n)?;
            if let Some(&id) = self.host.get(v) {
                return Ok(id);
            }
        }
        let Some((q, qid)) = self.quant.get(v).and_then(|l| l.first()).cloned() else {
            return Err(LowerError::Model(format!("value '{v}' is not available")));
        };
        let shape = self.b.shape(qid);
        let id = self.b.value(v, DType::F32, &shape, None);
        self.b.op(
            &format!("{v}_Dequantize"),
            "Dequantize",
            &[Some(qid)],
            &[id],
            false,
            q.qtype(),
            Kind::Dequantize(pb::DequantizeOp {}),
        );
        self.host.insert(v.to_string(), id);
        Ok(id)
    }

    /// Any quantized version of `v`.
    pub fn any_quant(&self, v: &str) -> Option<(Q, usize)> {
        self.quant
            .get(v)
            .and_then(|l| l.iter().find(|(q, _)| q.hp.is_empty()).cloned())
    }

    /// Records the output of an integer op: when the wanted range is
    /// narrower than the storage type (asymmetric), a clamp follows.
    pub fn finish(&mut self, v: &str, q: Q, raw: usize) {
        if !q.narrow() {
            self.set_quant(v, q, raw);
            return;
        }
        let shape = self.b.shape(raw);
        let out = self.qvalue(v, &q, &shape);
        self.b.op(
            &format!("{v}_Clamp"),
            "Clip",
            &[Some(raw)],
            &[out],
            false,
            q.qtype(),
            Kind::Rescale(pb::RescaleOp {
                requant: vec![builder::rq(hb_bpu::fixed_point::Requant::IDENTITY)],
                axis: 0,
                has_clamp: true,
                lo: q.lo,
                hi: q.hi,
            }),
        );
        self.set_quant(v, q, out);
    }

    /// Records a quantized version of `v`.
    pub fn set_quant(&mut self, v: &str, q: Q, id: usize) {
        self.quant.entry(v.to_string()).or_default().push((q, id));
    }

    /// A new program tensor for quantized value `v`.
    pub fn qvalue(&mut self, v: &str, q: &Q, shape: &[usize]) -> usize {
        let name = format!(
            "{v}:q{}",
            match q.dtype {
                DType::I8 => 8,
                DType::I16 => 16,
                _ => 32,
            }
        );
        self.b.value(&name, q.dtype, shape, Some(q))
    }

    /// `v` at exactly `want`: the existing version, a requantisation of
    /// another version, or a quantization of the host value.
    pub fn quant_at(&mut self, v: &str, want: &Q, op_name: &str) -> Result<usize> {
        if let Some((_, id)) = self
            .quant
            .get(v)
            .and_then(|l| l.iter().find(|(q, _)| q.same(want)))
        {
            return Ok(*id);
        }
        if let Some((q, id)) = self.any_quant(v) {
            let shape = self.b.shape(id);
            let out = self.qvalue(v, want, &shape);
            let r = builder::ratio(f64::from(q.s()) / f64::from(want.s()))?;
            self.b.op(
                &format!("{op_name}_Requantize"),
                "Requantize",
                &[Some(id)],
                &[out],
                false,
                want.qtype(),
                Kind::Rescale(pb::RescaleOp {
                    requant: vec![builder::rq(r)],
                    axis: 0,
                    has_clamp: want.narrow(),
                    lo: want.lo,
                    hi: want.hi,
                }),
            );
            self.set_quant(v, want.clone(), out);
            return Ok(out);
        }
        if let Some(t) = self.constant(v).filter(|t| t.dtype() == DType::F32) {
            let id = self.quantize_constant(v, &t, want)?;
            self.set_quant(v, want.clone(), id);
            return Ok(id);
        }
        let h = self.host_of(v)?;
        let (dt, shape) = (self.b.p.tensors[h].dtype, self.b.shape(h));
        if dt != DType::F32.onnx_code() {
            return Err(LowerError::Model(format!(
                "value '{v}' is not float and cannot be quantized"
            )));
        }
        let out = self.qvalue(v, want, &shape);
        let (lo, hi) = (want.lo, want.hi);
        self.b.op(
            &format!("{op_name}_Quantize"),
            "Quantize",
            &[Some(h)],
            &[out],
            false,
            want.qtype(),
            Kind::Quantize(pb::QuantizeOp {
                scale: want.s(),
                lo,
                hi,
                keep_masks: want.keep_masks,
                mask_limit: if want.mask_limit < MASK_LIMIT {
                    -want.mask_limit
                } else {
                    0.0
                },
            }),
        );
        self.set_quant(v, want.clone(), out);
        Ok(out)
    }

    /// A float constant quantized at `q` now (§2), as an integer constant.
    pub fn quantize_constant(&mut self, v: &str, t: &Tensor, q: &Q) -> Result<usize> {
        let mut qp = hb_bpu::reference::quant::QuantParams::with_range(q.s(), q.lo, q.hi)
            .map_err(|e| LowerError::Model(format!("constant '{v}': {e}")))?;
        qp.keep_masks = q.keep_masks;
        qp.mask_limit = -q.mask_limit;
        let f = t.to_f32().map_err(|e| LowerError::Model(e.to_string()))?;
        let xs: Vec<f32> = f.iter().copied().collect();
        let ints: Vec<i64> = xs.iter().map(|&x| qp.quantize(x)).collect();
        let it = match q.dtype {
            DType::I8 => Tensor::from_vec(t.shape(), ints.iter().map(|&v| v as i8).collect()),
            DType::I16 => Tensor::from_vec(t.shape(), ints.iter().map(|&v| v as i16).collect()),
            _ => Tensor::from_vec(t.shape(), ints.iter().map(|&v| v as i32).collect()),
        }
        .map_err(|e| LowerError::Model(e.to_string()))?;
        let name = format!("{v}:q{}", if q.dtype == DType::I8 { 8 } else { 16 });
        self.b.constant(&name, &it, Some(q))
    }

    /// What quantization the consumers of `v` want (through passive ops):
    /// the calibration nodes' quantization when they agree, else int16 over
    /// the widest of their ranges. `None` when `v` reaches a model output
    /// (directly or through passive ops): the calibrated model writes that
    /// output in float, and a consumer's threshold (often of a slice of it,
    /// a CLS token) does not cover its range, so its producer computes it
    /// as the calibrated model does and the consumers quantize from there.
    pub fn demand(&mut self, v: &str) -> Option<Q> {
        if let Some(d) = self.demand_cache.get(v) {
            return d.clone();
        }
        self.demand_cache.insert(v.to_string(), None);
        if self.reaches_output(v) {
            return None;
        }
        let mut wanted: Vec<Q> = Vec::new();
        let cons = self.consumers.get(v).cloned().unwrap_or_default();
        for c in cons {
            let n = self.g.nodes[c].clone();
            if is_calibration(&n) {
                wanted.extend(feature_q(&n));
            } else if let Some(data) = passive_data_inputs(&n) {
                let feeds = data
                    .iter()
                    .any(|&k| n.inputs.get(k).is_some_and(|x| x == v));
                if feeds {
                    // Every output counts: the halves of a Split may be
                    // calibrated at different scales.
                    for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                        wanted.extend(self.demand(o));
                    }
                }
            }
        }
        let best = wanted.into_iter().reduce(widest_common);
        self.demand_cache.insert(v.to_string(), best.clone());
        best
    }

    /// `v` is a model output or moves into one through passive ops.
    fn reaches_output(&self, v: &str) -> bool {
        let mut todo = vec![v.to_string()];
        let mut seen = std::collections::HashSet::new();
        while let Some(x) = todo.pop() {
            if self.g.is_output(&x) {
                return true;
            }
            if !seen.insert(x.clone()) {
                continue;
            }
            for &c in self.consumers.get(&x).map(Vec::as_slice).unwrap_or(&[]) {
                let n = &self.g.nodes[c];
                let Some(data) = passive_data_inputs(n) else {
                    continue;
                };
                if data.iter().any(|&k| n.inputs.get(k) == Some(&x)) {
                    todo.extend(n.outputs.iter().filter(|o| !o.is_empty()).cloned());
                }
            }
        }
        false
    }

    fn note(&mut self, n: &Node, cpu: bool, reason: &str) {
        self.notes.push(Note {
            node: n.name.clone(),
            op_type: n.op_type.clone(),
            cpu,
            reason: reason.to_string(),
        });
    }

    fn lower_node(&mut self, n: &Node) -> Result<()> {
        if is_calibration(n) {
            return self.lower_calibration(n);
        }
        let placed = if n.domain.is_empty() || n.domain == "ai.onnx" {
            if known::lower_known(self, n)? {
                None
            } else if self.mask_makers.contains(&n.name) {
                Some("computes attention-mask values (keep_masks): kept in float".into())
            } else if passive_data_inputs(n).is_some() {
                movement::lower_passive(self, n)?
            } else {
                ops::lower_compute(self, n)?
            }
        } else {
            Some("custom op".to_string())
        };
        match placed {
            None => self.note(n, false, ""),
            Some(reason) => {
                if let Some((add, orig)) = self.fused_adds.get(&n.name).cloned() {
                    // The bias Add was folded into this node; on the CPU it
                    // runs as its own op again.
                    let mut m = n.clone();
                    m.outputs[0] = orig;
                    self.cpu_op(&m)?;
                    self.cpu_op(&add)?;
                } else {
                    self.cpu_op(n)?;
                }
                self.note(n, true, &reason);
            }
        }
        Ok(())
    }

    fn lower_calibration(&mut self, n: &Node) -> Result<()> {
        let fq = FakeQuant::from_node(n).map_err(|e| model_err(n, e))?;
        let (x, y) = (n.inputs[0].clone(), n.outputs[0].clone());
        if fq.is_weight {
            if let Some(w) = self.constant_shared(&x) {
                let ec = n.int_or("ec", 0).unwrap_or(0) != 0;
                self.weights.insert(y.clone(), WeightCal { w, fq, ec });
                // The fake-quantized weight is also available as a constant
                // for CPU consumers.
                return Ok(());
            }
        }
        if let Some(q) = feature_q(n) {
            // Integers of any kind (an int32 high-precision output too: it
            // is dequantized, then quantized at the node's scale).
            let x_ok = self.quant.contains_key(&x)
                || self
                    .host
                    .get(&x)
                    .is_some_and(|&h| self.b.p.tensors[h].dtype == DType::F32.onnx_code())
                || self.constant(&x).is_some_and(|t| t.dtype() == DType::F32);
            if x_ok {
                let float_x = self.host.contains_key(&x) || self.constant(&x).is_some();
                if fq.keep_masks && float_x {
                    self.mask_cal.insert(y.clone(), n.clone());
                }
                let id = self.quant_at(&x, &q, &n.name)?;
                self.set_quant(&y, q, id);
                self.note(n, false, "");
                return Ok(());
            }
        }
        self.cpu_op(n)?;
        self.note(n, true, "calibration the integer machine cannot represent");
        Ok(())
    }

    /// The fake-quantized weight of a calibration output used by a CPU op.
    fn weight_host(&mut self, v: &str) -> Result<Option<usize>> {
        let Some(wc) = self.weights.get(v).cloned() else {
            return Ok(None);
        };
        let t = wc
            .fq
            .apply(&wc.w)
            .map_err(|e| LowerError::Model(format!("weight '{v}': {e}")))?;
        let id = self.b.constant(v, &t, None)?;
        self.host.insert(v.to_string(), id);
        Ok(Some(id))
    }

    /// Emits `n` as a float CPU op.
    pub fn cpu_op(&mut self, n: &Node) -> Result<()> {
        let mut ins = Vec::with_capacity(n.inputs.len());
        for x in &n.inputs {
            if x.is_empty() {
                ins.push(None);
                continue;
            }
            ins.push(Some(self.host_of(x)?));
        }
        let mut attrs = Vec::new();
        for (k, a) in &n.attrs {
            attrs.push(self.attr_to_pb(n, k, a)?);
        }
        let mut outs = Vec::new();
        for o in &n.outputs {
            if o.is_empty() {
                continue;
            }
            let (dt, shape) = self.info(o)?;
            let id = self.b.value(o, dt, &shape, None);
            self.host.insert(o.clone(), id);
            self.cpu_made.insert(o.clone());
            outs.push(id);
        }
        let opset = self.opsets.get(&n.domain).copied().unwrap_or_else(|| {
            if n.domain.is_empty() {
                self.opsets.get("ai.onnx").copied().unwrap_or(13)
            } else {
                1
            }
        });
        self.b.op(
            &n.name,
            &n.op_type,
            &ins,
            &outs,
            true,
            "float32",
            Kind::Cpu(pb::CpuOp {
                domain: n.domain.clone(),
                opset,
                attrs,
            }),
        );
        Ok(())
    }

    fn attr_to_pb(&mut self, n: &Node, k: &str, a: &Attr) -> Result<pb::Attribute> {
        use pb::attribute::Value as V;
        let value = match a {
            Attr::Int(v) => V::I(*v),
            Attr::Float(v) => V::F(*v),
            Attr::String(v) => V::S(v.clone()),
            Attr::Ints(v) => V::Ints(pb::Ints { v: v.clone() }),
            Attr::Floats(v) => V::Floats(pb::Floats { v: v.clone() }),
            Attr::Strings(v) => V::Strings(pb::Strings { v: v.clone() }),
            Attr::Tensor(t) => {
                V::Tensor(self.b.constant(&format!("{}.{k}", n.name), t, None)? as u32)
            }
            _ => {
                return Err(model_err(
                    n,
                    format!(
                        "attribute '{k}' (graphs, tensor lists) is not supported on the CPU path"
                    ),
                ))
            }
        };
        Ok(pb::Attribute {
            name: k.to_string(),
            value: Some(value),
        })
    }
}

#[cfg(test)]
mod omitted_output_tests {
    use super::*;
    use crate::cpu::FloatCpu;
    use hb_bpu::program::interp::Interpreter;
    use hb_ir::ValueInfo;
    use std::sync::Arc;

    fn vals(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7 + seed * 13) % 17) as f32 - 8.0) / 10.0)
            .collect()
    }

    #[test]
    fn cpu_ops_keep_the_position_of_omitted_outputs() {
        // An LSTM that only names Y_h (Y omitted): the kernel returns
        // [Y, Y_h, Y_c] and the program must bind the second one.
        let (seq, batch, inp, h) = (3, 2, 2, 2);
        let mut g = Graph {
            inputs: vec![ValueInfo::tensor("x", DType::F32, &[seq, batch, inp])],
            outputs: vec![ValueInfo::tensor("yh", DType::F32, &[1, batch, h])],
            ..Graph::default()
        };
        for (name, shape, seed) in [("w", [1, 4 * h, inp], 1), ("r", [1, 4 * h, h], 2)] {
            let t = Tensor::from_f32(&shape, vals(shape.iter().product(), seed)).unwrap();
            g.initializers.insert(name.into(), Arc::new(t));
        }
        let mut n = Node::new("lstm", "LSTM", &["x", "w", "r"], &["", "yh"]);
        n.set_attr("hidden_size", Attr::Int(h as i64));
        g.nodes.push(n);
        let mut model = Model {
            graph: g,
            ..Model::default()
        };
        model.opsets.insert(String::new(), 14);
        let lowered = lower_model(&model, &LowerOptions::default()).unwrap();
        let op = &lowered.program.ops[0];
        assert_eq!((op.op_type.as_str(), op.outputs.len()), ("LSTM", 2));
        assert!(lowered.notes[0].cpu);
        let program = Arc::new(lowered.program);
        let cpu = FloatCpu::new(&program).unwrap();
        let x = Tensor::from_f32(&[seq, batch, inp], vals(seq * batch * inp, 3)).unwrap();
        let got = Interpreter::new(program.clone())
            .unwrap()
            .run(std::slice::from_ref(&x), &cpu)
            .unwrap();
        let want = hb_float::Session::new(&model)
            .unwrap()
            .run(&HashMap::from([("x".to_string(), x)]))
            .unwrap();
        assert_eq!(got[0], want[0].1);
        assert_eq!(got[0].shape(), &[1, batch, h]);
    }
}
