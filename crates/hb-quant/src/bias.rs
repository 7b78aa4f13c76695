//! `bias_correction` (`model_config.weight.bias_correction`, or the legacy
//! `optimization: bias_correction`): empirical bias correction of the
//! weighted layers (Conv, ConvTranspose, MatMul, Gemm with a quantized
//! weight).
//!
//! Layers are corrected one at a time in graph order. For layer `L`, the
//! calibrated model (every calibration node ON, the corrections of the
//! layers before `L` applied) runs on each of the `num_sample` samples up to
//! `L`'s output `y` (the output of its fused bias `Add` when it has one);
//! the float model's `y` comes from one float run per sample. The
//! correction of output channel `c` is
//! `d_c = mean over samples and all other axes of (y_float − y_quant)`:
//! the mean shift caused by quantizing the weight *and* the activations
//! upstream. It is kept only when the layer's output gets closer to float
//! under the configured metric (mean over samples); then it is added to
//! the layer's bias by an `HzBiasCorrection` node (docs/calibrated-model.md)
//! placed on the bias input, so switching every node OFF still gives the
//! float model. A layer without a bias gets a zero bias (Conv,
//! ConvTranspose, Gemm: a new bias input; MatMul: an `Add`) to carry it.

use crate::calibrated::DOMAIN;
use crate::ops::WEIGHTED;
use crate::pipeline::{CalibError, Sample};
use crate::plan::{CalibPoint, Plan};
use hb_float::kernels::horizon::BiasCorrection;
use hb_float::{FloatError, NodeHook, Session};
use hb_ir::{Model, Node};
use hb_tensor::{metrics, Tensor};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The outcome of bias correction for one weighted layer (a log row).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BiasRow {
    /// The weighted node.
    pub node: String,
    /// Its op type.
    pub op: String,
    /// Output channels corrected.
    pub channels: usize,
    /// Mean |d_c|.
    pub mean_abs_offset: f64,
    /// Largest |d_c|.
    pub max_abs_offset: f64,
    /// The metric of the layer output, float vs calibrated, before.
    pub before: f64,
    /// The same with the correction.
    pub after: f64,
    /// Whether the correction was kept (the metric improved).
    pub kept: bool,
}

/// Where a layer's correction goes.
#[derive(Debug, Clone, Copy)]
enum Site {
    /// The node's own bias input (Conv / ConvTranspose / Gemm input 2),
    /// present or to be added.
    Own,
    /// The constant input `slot` of the fused bias `Add` (node index).
    FusedAdd { add: usize, slot: usize },
    /// A MatMul without bias: an `Add` is inserted after it.
    NewAdd,
}

/// A weighted layer to correct.
#[derive(Debug, Clone)]
struct Layer {
    /// Node index in the optimized graph.
    node: usize,
    /// The value whose per-channel mean is corrected.
    out: String,
    /// Channel axis of `out` is 1 (Conv bias) rather than the last axis.
    axis_one: bool,
    site: Site,
}

fn layers(model: &Model, plan: &Plan, points: &[CalibPoint]) -> Vec<Layer> {
    let g = &model.graph;
    let weight_read: HashSet<(usize, usize)> = points
        .iter()
        .filter(|p| p.is_weight())
        .flat_map(|p| p.consumers.iter().copied())
        .collect();
    let mut out = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if !plan.nodes[i].quantized
            || !WEIGHTED.contains(&n.op_type.as_str())
            || !weight_read.contains(&(i, 1))
        {
            continue;
        }
        let Some(y) = n.outputs.first().filter(|y| !y.is_empty()) else {
            continue;
        };
        let fused = plan.nodes.iter().position(|q| q.fused_into == Some(i));
        let layer = match (fused, n.op_type.as_str()) {
            (Some(a), _) => {
                let add = &g.nodes[a];
                let Some(slot) = (0..2).find(|&k| g.initializer(&add.inputs[k]).is_some()) else {
                    continue;
                };
                Layer {
                    node: i,
                    out: add.outputs[0].clone(),
                    axis_one: false,
                    site: Site::FusedAdd { add: a, slot },
                }
            }
            (None, "Conv" | "ConvTranspose") => Layer {
                node: i,
                out: y.clone(),
                axis_one: true,
                site: Site::Own,
            },
            (None, "Gemm") => Layer {
                node: i,
                out: y.clone(),
                axis_one: false,
                site: Site::Own,
            },
            (None, _) => Layer {
                node: i,
                out: y.clone(),
                axis_one: false,
                site: Site::NewAdd,
            },
        };
        out.push(layer);
    }
    out
}

/// The channel axis of a value of rank `rank`.
fn axis_of(rank: usize, axis_one: bool) -> usize {
    if axis_one && rank >= 2 {
        1
    } else {
        rank.saturating_sub(1)
    }
}

/// `(channels, inner)` of a standard-layout shape along `axis`.
fn channel_layout(shape: &[usize], axis: usize) -> (usize, usize) {
    let c = shape.get(axis).copied().unwrap_or(1).max(1);
    let inner: usize = shape.iter().skip(axis + 1).product();
    (c, inner.max(1))
}

fn flat(t: &Tensor) -> Option<(Vec<usize>, Vec<f32>)> {
    let a = t.to_f32().ok()?;
    Some((a.shape().to_vec(), a.iter().copied().collect()))
}

/// Adds `offsets[c]` along `axis` of `v` (standard layout, `shape`).
fn add_offsets(v: &mut [f32], shape: &[usize], axis: usize, offsets: &[f32]) {
    let (c, inner) = channel_layout(shape, axis);
    if c != offsets.len() {
        return;
    }
    for (k, row) in v.chunks_mut(inner).enumerate() {
        let o = offsets[k % c];
        row.iter_mut().for_each(|x| *x += o);
    }
}

/// A layer output on one sample: shape, float values, calibrated values.
type Pair = (Vec<usize>, Vec<f32>, Vec<f32>);

/// Applies the corrections found so far and stops the run at the target.
struct CorrectHook<'a> {
    corrections: &'a HashMap<String, (Vec<f32>, bool)>,
    target: &'a str,
    captured: Option<Tensor>,
}

/// The hook's way to end a run early once the target value is captured.
const STOP: &str = "bias correction: target layer reached";

impl NodeHook for CorrectHook<'_> {
    fn after_node(&mut self, _i: usize, node: &Node, outputs: &mut [Tensor]) -> Result<(), String> {
        for (name, t) in node.outputs.iter().zip(outputs.iter_mut()) {
            if let Some((offsets, axis_one)) = self.corrections.get(name) {
                if let Some((shape, mut v)) = flat(t) {
                    add_offsets(&mut v, &shape, axis_of(shape.len(), *axis_one), offsets);
                    if let Ok(c) = Tensor::from_f32(&shape, v) {
                        *t = c;
                    }
                }
            }
            if name == self.target {
                self.captured = Some(t.clone());
                return Err(STOP.into());
            }
        }
        Ok(())
    }
}

/// Keeps the float values of the layer outputs.
struct Capture<'a> {
    names: &'a HashSet<&'a str>,
    values: HashMap<String, Tensor>,
}

impl NodeHook for Capture<'_> {
    fn after_node(&mut self, _i: usize, node: &Node, outputs: &mut [Tensor]) -> Result<(), String> {
        for (name, t) in node.outputs.iter().zip(outputs.iter()) {
            if self.names.contains(name.as_str()) {
                self.values.insert(name.clone(), t.clone());
            }
        }
        Ok(())
    }
}

fn better(metric: &str, a: f64, b: f64) -> bool {
    if a.is_nan() {
        return false;
    }
    if b.is_nan() {
        return true;
    }
    if metrics::higher_is_better(metric) {
        a > b
    } else {
        a < b
    }
}

/// Runs bias correction on `calibrated` (built from the optimized `model`
/// with `points`); returns the corrected calibrated model and one row per
/// weighted layer. `metric` decides whether a correction is kept.
pub fn bias_correction(
    model: &Model,
    plan: &Plan,
    points: &[CalibPoint],
    calibrated: &Model,
    samples: &[Sample],
    metric: &str,
) -> Result<(Model, Vec<BiasRow>), CalibError> {
    let layers = layers(model, plan, points);
    let names: HashSet<&str> = layers.iter().map(|l| l.out.as_str()).collect();
    let float = Session::new(model)?;
    let float_values: Vec<HashMap<String, Tensor>> = samples
        .par_iter()
        .map(|s| {
            let mut c = Capture {
                names: &names,
                values: HashMap::new(),
            };
            float.run_with_hook(s, &mut c)?;
            Ok(c.values)
        })
        .collect::<Result<_, CalibError>>()?;
    let quant = Session::new(calibrated)?;
    let mut corrections: HashMap<String, (Vec<f32>, bool)> = HashMap::new();
    let mut rows = Vec::new();
    let mut kept_layers: Vec<(Layer, Vec<f32>)> = Vec::new();
    for layer in &layers {
        let node = &model.graph.nodes[layer.node];
        // Per sample: (float, calibrated) values of the layer output.
        let pairs: Vec<Option<Pair>> = samples
            .par_iter()
            .zip(&float_values)
            .map(|(s, fv)| {
                let mut hook = CorrectHook {
                    corrections: &corrections,
                    target: &layer.out,
                    captured: None,
                };
                match quant.run_with_hook(s, &mut hook) {
                    Ok(_) => {}
                    Err(FloatError::Hook(m)) if m == STOP => {}
                    Err(e) => return Err(CalibError::from(e)),
                }
                let (Some(q), Some(f)) = (hook.captured, fv.get(&layer.out)) else {
                    return Ok(None);
                };
                let (Some((shape, q)), Some((fshape, f))) = (flat(&q), flat(f)) else {
                    return Ok(None);
                };
                Ok((shape == fshape).then_some((shape, f, q)))
            })
            .collect::<Result<_, CalibError>>()?;
        let Some(Some((shape, _, _))) = pairs.first() else {
            continue;
        };
        let shape = shape.clone();
        if pairs
            .iter()
            .any(|p| p.as_ref().is_none_or(|p| p.0 != shape))
        {
            continue;
        }
        let axis = axis_of(shape.len(), layer.axis_one);
        let (c, inner) = channel_layout(&shape, axis);
        let mut sum = vec![0f64; c];
        let mut count = vec![0u64; c];
        for (_, f, q) in pairs.iter().flatten() {
            for (k, (fr, qr)) in f.chunks(inner).zip(q.chunks(inner)).enumerate() {
                let ch = k % c;
                sum[ch] += fr
                    .iter()
                    .zip(qr)
                    .map(|(a, b)| f64::from(*a) - f64::from(*b))
                    .sum::<f64>();
                count[ch] += fr.len() as u64;
            }
        }
        let offsets: Vec<f32> = sum
            .iter()
            .zip(&count)
            .map(|(s, n)| if *n > 0 { (s / *n as f64) as f32 } else { 0.0 })
            .collect();
        if offsets.iter().any(|o| !o.is_finite()) {
            continue;
        }
        let (mut before, mut after) = (0.0, 0.0);
        for (_, f, q) in pairs.iter().flatten() {
            before += metrics::by_name(metric, f, q).unwrap_or(f64::NAN);
            let mut qc = q.clone();
            add_offsets(&mut qc, &shape, axis, &offsets);
            after += metrics::by_name(metric, f, &qc).unwrap_or(f64::NAN);
        }
        let n = pairs.len().max(1) as f64;
        let (before, after) = (before / n, after / n);
        let kept = better(metric, after, before);
        let abs: Vec<f64> = offsets.iter().map(|o| f64::from(o.abs())).collect();
        rows.push(BiasRow {
            node: node.name.clone(),
            op: node.op_type.clone(),
            channels: c,
            mean_abs_offset: abs.iter().sum::<f64>() / c.max(1) as f64,
            max_abs_offset: abs.iter().fold(0f64, |m, v| m.max(*v)),
            before,
            after,
            kept,
        });
        if kept {
            corrections.insert(layer.out.clone(), (offsets.clone(), layer.axis_one));
            kept_layers.push((layer.clone(), offsets));
        }
    }
    let corrected = apply(model, calibrated, &kept_layers)?;
    Ok((corrected, rows))
}

/// Writes the kept corrections into the calibrated model as
/// `HzBiasCorrection` nodes on the layers' bias inputs.
fn apply(
    model: &Model,
    calibrated: &Model,
    kept: &[(Layer, Vec<f32>)],
) -> Result<Model, CalibError> {
    let mut m = calibrated.clone();
    let g = &mut m.graph;
    let index_of = |g: &hb_ir::Graph, name: &str| g.nodes.iter().position(|n| n.name == name);
    let mut new_nodes = Vec::new();
    for (layer, offsets) in kept {
        let orig = &model.graph.nodes[layer.node];
        let Some(i) = index_of(g, &orig.name) else {
            continue;
        };
        let c = offsets.len();
        let zeros = |g: &mut hb_ir::Graph, base: &str| -> Result<String, CalibError> {
            let name = g.fresh_name(base);
            let t = Tensor::from_f32(&[c], vec![0.0; c])
                .map_err(|e| CalibError::Data(e.to_string()))?;
            g.initializers.insert(name.clone(), Arc::new(t));
            Ok(name)
        };
        // (the consuming node, its input slot, the bias value)
        let (consumer, slot, bias) = match layer.site {
            Site::Own => {
                let bias = match g.nodes[i].inputs.get(2).filter(|b| !b.is_empty()) {
                    Some(b) => b.clone(),
                    None => {
                        let b = zeros(g, &format!("{}_bias", orig.name))?;
                        let n = &mut g.nodes[i];
                        while n.inputs.len() < 3 {
                            n.inputs.push(String::new());
                        }
                        n.inputs[2] = b.clone();
                        b
                    }
                };
                (i, 2, bias)
            }
            Site::FusedAdd { add, slot } => {
                let Some(a) = index_of(g, &model.graph.nodes[add].name) else {
                    continue;
                };
                (a, slot, g.nodes[a].inputs[slot].clone())
            }
            Site::NewAdd => {
                let y = orig.outputs[0].clone();
                let raw = g.fresh_name(&format!("{y}_before_bias"));
                g.nodes[i].outputs[0] = raw.clone();
                let b = zeros(g, &format!("{}_bias", orig.name))?;
                let add_name = g.fresh_name(&format!("{}_bias_add", orig.name));
                new_nodes.push(Node::new(&add_name, "Add", &[&raw, &b], &[&y]));
                (usize::MAX, 1, b)
            }
        };
        let node_name = g.fresh_name(&format!("{bias}_HzBiasCorrection"));
        let out = g.fresh_name(&format!("{bias}_corrected"));
        let bc = BiasCorrection {
            offsets: offsets.clone(),
            enabled: true,
        };
        let mut n = bc.to_node(&node_name, &bias, &out);
        n.domain = DOMAIN.to_string();
        if consumer == usize::MAX {
            if let Some(add) = new_nodes.last_mut() {
                add.inputs[slot] = out.clone();
            }
        } else {
            g.nodes[consumer].inputs[slot] = out.clone();
        }
        new_nodes.push(n);
    }
    g.nodes.extend(new_nodes);
    hb_ir::topo::sort(g)?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_go_along_the_channel_axis() {
        // [1, 2, 2]: channel axis 1 → rows of 2.
        let mut v = vec![0.0; 4];
        add_offsets(&mut v, &[1, 2, 2], 1, &[1.0, -1.0]);
        assert_eq!(v, vec![1.0, 1.0, -1.0, -1.0]);
        // last axis
        let mut v = vec![0.0; 4];
        add_offsets(&mut v, &[2, 2], 1, &[1.0, -1.0]);
        assert_eq!(v, vec![1.0, -1.0, 1.0, -1.0]);
        assert_eq!(axis_of(4, true), 1);
        assert_eq!(axis_of(3, false), 2);
    }
}
