//! `diagnose`: the known causes of accuracy loss, found on the data, named
//! (tensor, node) and explained, each with a quant_config fix hb-calib
//! accepts. The fixes are merged into one suggested quant_config, applied
//! to this calibrated model (promoted nodes get int16 with thresholds from
//! the data) and the outputs are scored before and after.
//!
//! Checks: output collapse (unique values float vs calibrated), mask values
//! (-inf / lowest f32) and large constant fills, saturation, degenerate
//! thresholds, integer values quantized as features, constant inputs,
//! Concat of very different ranges, per-channel range disparity, and
//! rounding vs truncation error of the most sensitive nodes.

use super::analysis::{evaluate, node_config, promote, OutputScore};
use super::common::{fmt_metric, to_json, write_text, Calibrated};
use super::sensitivity::{self, Granularity, SensOptions};
use super::DiagnoseArgs;
use crate::cli::ToolResult;
use crate::inputs::Sample;
use hb_float::kernels::horizon::{FqType, MASK_LIMIT};
use hb_quant::calib::observer::activation_channel_axis;
use hb_quant::qtype::QType;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// `error`, `warning` or `info`.
    pub level: &'static str,
    /// Stable key (`output-collapse`, `mask-values`, ...).
    pub kind: &'static str,
    /// Nodes and tensors concerned.
    pub nodes: Vec<String>,
    /// What was found and why it matters.
    pub message: String,
    /// The quant_config snippet that fixes it (`null` when the fix is not a config change).
    pub fix: Value,
    /// How to apply the fix or what else to do.
    pub advice: String,
    /// Calibration nodes the fix promotes (indices into the model's calibration nodes).
    #[serde(skip)]
    pub promote: Vec<usize>,
}

/// The diagnosis.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    /// Samples used.
    pub samples: usize,
    /// Findings, most severe first.
    pub findings: Vec<Finding>,
    /// All fixes merged.
    pub suggested_quant_config: Value,
    /// Outputs of the calibrated model as stored.
    pub before: Vec<OutputScore>,
    /// Outputs with the suggested promotions applied to this model.
    pub after: Option<Vec<OutputScore>>,
}

/// Statistics of one calibration node's float input over the samples.
#[derive(Debug, Clone, Default)]
struct Stat {
    count: u64,
    masks: u64,
    min: f32,
    max: f32,
    clipped: u64,
    integral: bool,
    distinct: HashSet<u32>,
    chan_absmax: Vec<f32>,
    round_err: f64,
    trunc_err: f64,
    seen: bool,
}

fn gather(cal: &Calibrated, samples: &[Sample]) -> ToolResult<(Vec<Stat>, Vec<bool>)> {
    let session = cal.float_session()?;
    let mut st: Vec<Stat> = cal
        .nodes
        .iter()
        .map(|_| Stat {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            integral: true,
            ..Default::default()
        })
        .collect();
    let g = &cal.model.graph;
    let mut constant = vec![samples.len() > 1; g.inputs.len()];
    for s in samples {
        for (k, v) in g.inputs.iter().enumerate() {
            if s.get(&v.name) != samples[0].get(&v.name) {
                constant[k] = false;
            }
        }
        let cache = session.run_cached(s)?;
        for (c, st) in cal.nodes.iter().zip(st.iter_mut()) {
            let Some(t) = session.value_id(&c.input).and_then(|id| cache.get(id)) else {
                continue;
            };
            let Ok(x) = t.to_f32_cow() else { continue };
            let Ok(y) = c.on().apply(t) else { continue };
            let Ok(y) = y.to_f32_cow().map(|a| a.into_owned()) else {
                continue;
            };
            st.seen = true;
            let mag = c.magnitude();
            let (lo, hi) = if c.fq.asymmetric && c.fq.thresholds.len() == 2 {
                (c.fq.thresholds[0], c.fq.thresholds[1])
            } else {
                (-mag, mag)
            };
            let shape = x.shape().to_vec();
            let axis = activation_channel_axis(shape.len());
            let (ch, inner) = if shape.len() >= 2 {
                (
                    shape[axis],
                    shape[axis + 1..].iter().product::<usize>().max(1),
                )
            } else {
                (1, 1)
            };
            if st.chan_absmax.len() != ch {
                st.chan_absmax = vec![0.0; ch];
            }
            for (i, (&v, &q)) in x.iter().zip(y.iter()).enumerate() {
                if v <= -MASK_LIMIT || !v.is_finite() {
                    st.masks += 1;
                    continue;
                }
                st.count += 1;
                st.min = st.min.min(v);
                st.max = st.max.max(v);
                if st.integral && v.fract() != 0.0 {
                    st.integral = false;
                }
                if st.integral && st.distinct.len() < 4096 {
                    st.distinct.insert(v.to_bits());
                }
                let e = f64::from(v - q).powi(2);
                if c.fq.is_per_channel() || (v >= lo && v <= hi) {
                    st.round_err += e;
                } else {
                    st.clipped += 1;
                    st.trunc_err += e;
                }
                let k = (i / inner) % ch;
                st.chan_absmax[k] = st.chan_absmax[k].max(v.abs());
            }
        }
    }
    Ok((st, constant))
}

fn readers(cal: &Calibrated, c: usize) -> Vec<String> {
    let g = &cal.model.graph;
    let mut v: Vec<String> = cal.nodes[c]
        .consumers
        .iter()
        .map(|(n, _)| g.nodes[*n].name.clone())
        .collect();
    v.dedup();
    v
}

/// Where a tensor comes from: a model input through Cast/Reshape/... chains.
fn origin(cal: &Calibrated, tensor: &str) -> Option<String> {
    let g = &cal.model.graph;
    let mut t = tensor.to_string();
    for _ in 0..6 {
        if let Some(v) = g.inputs.iter().find(|v| v.name == t) {
            return Some(format!("model input '{}' ({})", v.name, v.dtype_name()));
        }
        let p = g.producer(&t)?;
        let n = &g.nodes[p];
        if !matches!(
            n.op_type.as_str(),
            "Cast" | "Unsqueeze" | "Reshape" | "Squeeze" | "Flatten" | "Identity" | "Expand"
        ) {
            return None;
        }
        t = n.inputs.first()?.clone();
    }
    None
}

/// Calibration nodes downstream of `c` (within a few computing nodes)
/// whose threshold is still at least a quarter of `c`'s: the large-range
/// region an integer input spreads into (e.g. timestep → Div → Sin/Cos).
fn large_range_region(cal: &Calibrated, c: usize) -> Vec<usize> {
    let t0 = cal.nodes[c].magnitude();
    let mut out = vec![c];
    let mut frontier: Vec<usize> = vec![c];
    for _ in 0..3 {
        let mut next = Vec::new();
        for &k in &frontier {
            for (n, _) in &cal.nodes[k].consumers {
                for o in cal.outputs_of(*n) {
                    let cn = &cal.nodes[o];
                    if !cn.is_weight && cn.magnitude() >= 0.25 * t0 && !out.contains(&o) {
                        out.push(o);
                        next.push(o);
                    }
                }
            }
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    out
}

/// The feature calibration nodes nearest to model output `output`: walking
/// back from it through the nodes that compute it after the last
/// quantization, stopping at calibration nodes. Their steps bound the
/// output's resolution (e.g. a detector's box decode in int8: fine cosine,
/// a few hundred distinct coordinates).
fn output_tail(cal: &Calibrated, output: &str) -> Vec<usize> {
    let g = &cal.model.graph;
    let by_output: HashMap<&str, usize> = cal
        .nodes
        .iter()
        .enumerate()
        .map(|(k, c)| (c.output.as_str(), k))
        .collect();
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut work = vec![output.to_string()];
    while let Some(t) = work.pop() {
        if !seen.insert(t.clone()) || seen.len() > 256 {
            continue;
        }
        if let Some(&k) = by_output.get(t.as_str()) {
            if !cal.nodes[k].is_weight && !found.contains(&k) {
                found.push(k);
            }
            continue;
        }
        if let Some(p) = g.producer(&t) {
            work.extend(g.nodes[p].inputs.iter().filter(|i| !i.is_empty()).cloned());
        }
    }
    found.sort_unstable();
    found
}

fn fix_for(cal: &Calibrated, calib: &[usize], q: QType) -> Value {
    json!({ "node_config": node_config(cal, &[], calib, q) })
}

/// Merges fix `v` into `into`; a setting already there stays (findings are
/// merged most severe first, so an error's fix is not overwritten by an
/// info's).
fn merge(into: &mut Map<String, Value>, v: &Value) {
    let Some(o) = v.as_object() else { return };
    for (k, x) in o {
        match (into.get_mut(k), x) {
            (Some(Value::Object(a)), Value::Object(_)) => merge(a, x),
            (Some(_), _) => {}
            (None, _) => {
                into.insert(k.clone(), x.clone());
            }
        }
    }
}

/// Runs every check.
pub fn diagnose(cal: &Calibrated, samples: &[Sample], progress: bool) -> ToolResult<Diagnosis> {
    let g = &cal.model.graph;
    let (st, constant) = gather(cal, samples)?;
    let mut f: Vec<Finding> = Vec::new();
    let int16 = QType::Int16;

    // Inputs: integer types, constant across samples.
    for (k, v) in g.inputs.iter().enumerate() {
        let int_typed = v.dtype().is_some_and(|d| !d.is_float());
        if int_typed {
            f.push(Finding {
                level: "info",
                kind: "integer-input",
                nodes: vec![v.name.clone()],
                message: format!(
                    "input '{}' is {} (indices, ids or timesteps): not quantized itself; see integer-as-feature for float tensors made from it",
                    v.name,
                    v.dtype_name()
                ),
                fix: Value::Null,
                advice: "none needed".into(),
                promote: vec![],
            });
        }
        if constant[k] {
            f.push(Finding {
                level: "warning",
                kind: "constant-input",
                nodes: vec![v.name.clone()],
                message: format!(
                    "input '{}' is identical in all {} samples: thresholds downstream only cover that one value (the field report's timestep always 999)",
                    v.name,
                    samples.len()
                ),
                fix: Value::Null,
                advice: "calibrate with the values the model will see at run time (vary it across samples)".into(),
                promote: vec![],
            });
        }
    }

    for (k, (c, s)) in cal.nodes.iter().zip(&st).enumerate() {
        if !s.seen || c.is_noop() {
            continue;
        }
        let absmax = s.min.abs().max(s.max.abs());
        let t = c.magnitude();
        let who = readers(cal, k).join(", ");
        // Mask values.
        if s.masks > 0 && !c.is_weight {
            let frac = s.masks as f64 / (s.masks + s.count).max(1) as f64;
            if c.fq.keep_masks {
                f.push(Finding {
                    level: "info",
                    kind: "mask-values",
                    nodes: vec![c.input.clone(), who.clone()],
                    message: format!(
                        "tensor '{}' (read by {who}) holds -inf / huge negative mask values in {:.1}% of its elements; keep_masks passes them unchanged and the threshold {t} comes from the data values [{}, {}]",
                        c.input, 100.0 * frac, s.min, s.max
                    ),
                    fix: Value::Null,
                    advice: "handled by hb-calib; none needed".into(),
                    promote: vec![],
                });
            } else {
                f.push(Finding {
                    level: "error",
                    kind: "mask-values",
                    nodes: vec![c.input.clone(), who.clone()],
                    message: format!(
                        "tensor '{}' (read by {who}) holds -inf / huge negative mask values in {:.1}% of its elements and they enter quantization: threshold {t:e} vs data range [{}, {}] — every data value quantizes to 0 (uniform attention, collapsed outputs) or -inf becomes NaN",
                        c.input, 100.0 * frac, s.min, s.max
                    ),
                    fix: json!({"node_config": node_config(cal, &[], &[k], QType::Float16)}),
                    advice: format!(
                        "recalibrate with hb-calib (masks are kept out of thresholds), or set the threshold from the data: hb-debugger edit MODEL -o OUT --node '{}' --threshold {absmax}",
                        c.name
                    ),
                    promote: vec![],
                });
            }
        }
        // Degenerate thresholds.
        if !c.is_weight {
            if t >= 1e6 || !t.is_finite() {
                f.push(Finding {
                    level: "error",
                    kind: "degenerate-threshold",
                    nodes: vec![c.name.clone(), who.clone()],
                    message: format!(
                        "calibration node '{}' (tensor '{}', read by {who}) has threshold {t:e}: the quantization step {:e} is larger than any data value ({}): everything rounds to 0",
                        c.name, c.input, c.scale().unwrap_or(f32::NAN), absmax
                    ),
                    fix: json!({"node_config": node_config(cal, &[], &[k], QType::Float16)}),
                    advice: format!("hb-debugger edit MODEL -o OUT --node '{}' --threshold {absmax}", c.name),
                    promote: vec![k],
                });
            } else if absmax == 0.0 {
                f.push(Finding {
                    level: "info",
                    kind: "degenerate-threshold",
                    nodes: vec![c.name.clone()],
                    message: format!(
                        "tensor '{}' (read by {who}) is 0 on every sample (threshold {t})",
                        c.input
                    ),
                    fix: Value::Null,
                    advice: "none needed if the tensor is meant to be zero (padding)".into(),
                    promote: vec![],
                });
            } else if t > 100.0 * absmax {
                f.push(Finding {
                    level: "warning",
                    kind: "degenerate-threshold",
                    nodes: vec![c.name.clone(), who.clone()],
                    message: format!(
                        "tensor '{}' (read by {who}): threshold {t} is {:.0}x the largest value seen ({absmax}); most of the int range is unused",
                        c.input, t / absmax
                    ),
                    fix: fix_for(cal, &[k], int16),
                    advice: format!("or hb-debugger edit MODEL -o OUT --node '{}' --threshold {absmax}", c.name),
                    promote: vec![k],
                });
            }
        }
        // Integer values quantized as features.
        if !c.is_weight && s.integral && s.distinct.len() > 2 {
            if let Some(step) = c.scale().filter(|&q| q > 0.5) {
                let region = large_range_region(cal, k);
                let names: Vec<String> = region.iter().flat_map(|&r| readers(cal, r)).collect();
                let from =
                    origin(cal, &c.input).map_or(String::new(), |o| format!(", made from {o}"));
                f.push(Finding {
                    level: "warning",
                    kind: "integer-as-feature",
                    nodes: std::iter::once(c.input.clone()).chain(names.iter().cloned()).collect(),
                    message: format!(
                        "tensor '{}'{from} holds integers ({} distinct values in [{}, {}]) but is quantized as a {} feature with step {step:.3}: neighbouring values merge; the large range continues into {}",
                        c.input, s.distinct.len(), s.min, s.max, c.qtype(), names.join(", ")
                    ),
                    fix: fix_for(cal, &region, int16),
                    advice: "int16 keeps every integer distinct (step < 0.5); float32 (run on CPU) keeps them exact".into(),
                    promote: region,
                });
            }
        }
        // The argument of a periodic function read with a coarse step.
        let periodic = c
            .consumers
            .iter()
            .any(|(n, k)| *k == 0 && matches!(g.nodes[*n].op_type.as_str(), "Sin" | "Cos"));
        if periodic && !c.is_weight {
            let period = std::f32::consts::TAU;
            if let Some(step) = c.scale().filter(|&q| q > period / 64.0) {
                f.push(Finding {
                    level: "warning",
                    kind: "periodic-argument",
                    nodes: vec![c.input.clone(), who.clone()],
                    message: format!(
                        "tensor '{}' is the argument of {who} and is quantized as {} with step {step:.4} = {:.1}% of the period 2π (range ±{t}): sin/cos of it is mostly rounding noise",
                        c.input,
                        c.qtype(),
                        100.0 * step / period
                    ),
                    fix: fix_for(cal, &[k], int16),
                    advice: "int16 (hb-calib's default precision guard) or float32; or reduce the argument's range before the Sin/Cos".into(),
                    promote: vec![k],
                });
            }
        }
        // Saturation.
        if !c.is_weight && s.count > 0 && !c.fq.is_per_channel() {
            let frac = s.clipped as f64 / s.count as f64;
            if frac > 1e-3 {
                f.push(Finding {
                    level: "warning",
                    kind: "saturation",
                    nodes: vec![c.input.clone(), who.clone()],
                    message: format!(
                        "tensor '{}' (read by {who}): {:.2}% of the values exceed the threshold {t} ({}) and saturate; data range [{}, {}]",
                        c.input, 100.0 * frac, c.fq.thresholds.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "), s.min, s.max
                    ),
                    fix: fix_for(cal, &[k], int16),
                    advice: format!(
                        "int16 thresholds cover the whole range (max); or widen: hb-debugger edit MODEL -o OUT --node '{}' --threshold {absmax}",
                        c.name
                    ),
                    promote: vec![k],
                });
            }
        }
        // Per-channel disparity.
        if !c.is_weight && !c.fq.is_per_channel() && s.chan_absmax.len() >= 4 {
            let mut v = s.chan_absmax.clone();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            let median = v[v.len() / 2];
            let top = v[v.len() - 1];
            if median > 0.0
                && top / median > 16.0
                && c.fq.qtype == hb_float::kernels::horizon::FqType::Int8
            {
                let small = v.iter().filter(|x| **x * 16.0 < top).count();
                f.push(Finding {
                    level: "warning",
                    kind: "channel-disparity",
                    nodes: vec![c.input.clone(), who.clone()],
                    message: format!(
                        "tensor '{}' (read by {who}): channel ranges differ by {:.0}x (max {top}, median {median}); {small} of {} channels use less than 1/16 of the int8 range (< 4 bits)",
                        c.input, top / median, v.len()
                    ),
                    fix: fix_for(cal, &[k], int16),
                    advice: "or per-channel activation thresholds: {\"model_config\": {\"activation\": {\"per_channel\": true}}}".into(),
                    promote: vec![k],
                });
            }
        }
        // Large constant fills (masks made of finite values such as -15).
        if !c.is_weight && s.masks == 0 {
            if let Some(p) = g.producer(&c.input) {
                let n = &g.nodes[p];
                if n.op_type == "Where" {
                    for x in n.inputs.iter().skip(1) {
                        let Some(init) = g.initializer(x) else {
                            continue;
                        };
                        let Some(vals) = super::common::flat(init) else {
                            continue;
                        };
                        let Some(&fill) = vals.first() else { continue };
                        let other = if fill < 0.0 { s.max.abs() } else { s.min.abs() };
                        if vals.iter().all(|v| *v == fill)
                            && other > 0.0
                            && fill.abs() > 2.0 * other
                            && (fill == s.min || fill == s.max)
                        {
                            f.push(Finding {
                                level: "warning",
                                kind: "mask-fill",
                                nodes: vec![n.name.clone(), who.clone()],
                                message: format!(
                                    "'{}' fills masked positions with {fill}, which sets the threshold of '{}' ({t}) while the data only reach {other}: the data get {:.0}x coarser steps",
                                    n.name, c.input, fill.abs() / other
                                ),
                                fix: fix_for(cal, &[k], int16),
                                advice: "or fill with -inf (hb-calib keeps masks out of thresholds and passes them unchanged)".into(),
                                promote: vec![k],
                            });
                        }
                    }
                }
            }
        }
    }

    // Concat of very different ranges sharing one scale.
    let session = cal.float_session()?;
    if let Some(s0) = samples.first() {
        let cache = session.run_cached(s0)?;
        for (i, n) in g
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.op_type == "Concat")
        {
            let outs = cal.outputs_of(i);
            if outs.is_empty() {
                continue;
            }
            let ranges: Vec<(String, f32)> = n
                .inputs
                .iter()
                .filter_map(|x| {
                    let t = session.value_id(x).and_then(|id| cache.get(id))?;
                    let a = super::common::flat(t)?;
                    let m = a
                        .iter()
                        .filter(|v| v.is_finite() && **v > -MASK_LIMIT)
                        .fold(0f32, |m, v| m.max(v.abs()));
                    Some((x.clone(), m))
                })
                .collect();
            let hi = ranges.iter().map(|r| r.1).fold(0f32, f32::max);
            let lo = ranges
                .iter()
                .map(|r| r.1)
                .filter(|v| *v > 0.0)
                .fold(f32::INFINITY, f32::min);
            if ranges.len() >= 2 && lo.is_finite() && hi / lo > 16.0 {
                f.push(Finding {
                    level: "warning",
                    kind: "concat-ranges",
                    nodes: std::iter::once(n.name.clone()).chain(ranges.iter().map(|r| r.0.clone())).collect(),
                    message: format!(
                        "'{}' concatenates tensors whose ranges differ {:.0}x ({}) and they share one scale after it: the small ones keep only a few levels",
                        n.name,
                        hi / lo,
                        ranges.iter().map(|(x, m)| format!("{x}: ±{m}")).collect::<Vec<_>>().join(", ")
                    ),
                    fix: fix_for(cal, &outs, int16),
                    advice: "or split the head so each part is quantized on its own".into(),
                    promote: outs,
                });
            }
        }
    }

    // Outputs: collapse and loss; the most sensitive nodes; rounding vs truncation.
    let before = evaluate(cal, &cal.model, samples, "cosine-similarity")?;
    let sens_samples = &samples[..samples.len().min(4)];
    let units = sensitivity::units(cal, Granularity::Activation, &[])?;
    let sens = if units.is_empty() {
        None
    } else {
        Some(sensitivity::run(
            cal,
            units,
            Granularity::Activation,
            sens_samples,
            &SensOptions {
                metrics: vec!["cosine-similarity".into()],
                targets: sensitivity::resolve_targets(cal, &[])?,
                naive: false,
                progress,
            },
        )?)
    };
    let worst: Vec<(usize, f64)> = sens
        .as_ref()
        .map(|s| {
            s.rows
                .iter()
                .filter(|r| r.metrics["cosine-similarity"] < 0.9999)
                .take(5)
                .filter_map(|r| Some((*r.unit.calib.first()?, r.metrics["cosine-similarity"])))
                .collect()
        })
        .unwrap_or_default();
    if let Some(s) = &sens {
        for r in s
            .rows
            .iter()
            .filter(|r| r.metrics["cosine-similarity"].is_nan())
        {
            let Some(&k) = r.unit.calib.first() else {
                continue;
            };
            let c = &cal.nodes[k];
            f.push(Finding {
                level: "error",
                kind: "nan-output",
                nodes: vec![c.name.clone(), readers(cal, k).join(", ")],
                message: format!(
                    "quantizing only '{}' ({}, threshold {}, read by {}) makes the output NaN: small values (e.g. a LayerNorm variance + epsilon of all-zero padded tokens) round to 0 and a Div or Sqrt after it gives 0/0",
                    c.input, c.qtype(), c.magnitude(), readers(cal, k).join(", ")
                ),
                fix: json!({"node_config": node_config(cal, &[], &[k], QType::Float16)}),
                advice: "float16 keeps the small values; or make the padded tokens non-zero / mask them before the normalisation".into(),
                promote: vec![],
            });
        }
    }
    for &(k, score) in &worst {
        let c = &cal.nodes[k];
        let s = &st[k];
        let (r, t) = (s.round_err, s.trunc_err);
        let kind = if t > r { "truncation" } else { "rounding" };
        f.push(Finding {
            level: "info",
            kind: "sensitive-node",
            nodes: vec![c.name.clone(), readers(cal, k).join(", ")],
            message: format!(
                "quantizing only '{}' ({}, threshold {}, read by {}) gives output cosine {score:.6}; its error is mostly {kind} (squared error: rounding {r:.3e}, truncation {t:.3e}, {} values clipped)",
                c.input, c.qtype(), c.magnitude(), readers(cal, k).join(", "), s.clipped
            ),
            fix: fix_for(cal, &[k], int16),
            advice: if kind == "truncation" {
                format!("raise the threshold to the data max ({}): int16 with max, or hb-debugger edit --node '{}' --threshold {}", s.min.abs().max(s.max.abs()), c.name, s.min.abs().max(s.max.abs()))
            } else {
                "finer steps: int16".into()
            },
            promote: vec![k],
        });
    }
    for o in &before {
        let collapsed = o.float_unique >= 16.0 && o.calibrated_unique < 0.5 * o.float_unique;
        if collapsed || o.cosine < 0.99 {
            let mut calib: Vec<usize> = worst.iter().map(|w| w.0).collect();
            // A collapse no single node explains by cosine: the output's
            // resolution is bounded by the quantization of what it is
            // computed from last.
            let tail = if calib.is_empty() && collapsed {
                output_tail(cal, &o.output)
                    .into_iter()
                    .filter(|&k| cal.nodes[k].fq.qtype == FqType::Int8)
                    .collect()
            } else {
                Vec::new()
            };
            calib.extend(&tail);
            let names: Vec<String> = calib.iter().map(|k| cal.nodes[*k].input.clone()).collect();
            f.push(Finding {
                level: if collapsed || o.cosine < 0.8 { "error" } else { "warning" },
                kind: if collapsed { "output-collapse" } else { "output-loss" },
                nodes: std::iter::once(o.output.clone()).chain(names.iter().cloned()).collect(),
                message: format!(
                    "output '{}': {:.0} unique values calibrated vs {:.0} float, cosine {:.6}; the nodes whose quantization alone hurts it most: {}",
                    o.output, o.calibrated_unique, o.float_unique, o.cosine,
                    if names.is_empty() {
                        "none stands out".into()
                    } else if tail.is_empty() {
                        names.join(", ")
                    } else {
                        format!("none by cosine; its resolution is set by the last quantized tensors it is computed from: {}", names.join(", "))
                    }
                ),
                fix: fix_for(cal, &calib, int16),
                advice: if tail.is_empty() {
                    "apply the other findings' fixes first (they are the usual causes); then promote the listed nodes".into()
                } else {
                    "int16 on the listed tensors gives the output 256x finer steps; or take the decoding (box arithmetic, concatenation of boxes and scores) out of the model and run it in float after the BPU".into()
                },
                promote: calib,
            });
        }
    }

    let rank = |l: &str| match l {
        "error" => 0,
        "warning" => 1,
        _ => 2,
    };
    f.sort_by_key(|x| rank(x.level));
    let mut merged = Map::new();
    let mut promote_all: Vec<usize> = Vec::new();
    for x in f
        .iter()
        .filter(|x| x.level != "info" || x.kind == "sensitive-node")
    {
        merge(&mut merged, &x.fix);
        promote_all.extend(&x.promote);
    }
    promote_all.sort_unstable();
    promote_all.dedup();
    let after = if promote_all.is_empty() {
        None
    } else {
        let observed = sensitivity_observed(&st);
        Some(evaluate(
            cal,
            &promote(cal, &promote_all, int16, &observed),
            samples,
            "cosine-similarity",
        )?)
    };
    Ok(Diagnosis {
        samples: samples.len(),
        findings: f,
        suggested_quant_config: Value::Object(merged),
        before,
        after,
    })
}

fn sensitivity_observed(st: &[Stat]) -> Vec<sensitivity::Observed> {
    st.iter()
        .map(|s| sensitivity::Observed {
            min: s.min,
            max: s.max,
        })
        .collect()
}

/// Text of the diagnosis.
pub fn render(d: &Diagnosis) -> String {
    let mut s = format!(
        "diagnose: {} finding(s) on {} sample(s)\n\n",
        d.findings.len(),
        d.samples
    );
    for x in &d.findings {
        s.push_str(&format!("[{}] {}: {}\n", x.level, x.kind, x.message));
        if !x.fix.is_null() {
            s.push_str(&format!(
                "    fix: {}\n",
                serde_json::to_string(&x.fix).unwrap_or_default()
            ));
        }
        if !x.advice.is_empty() {
            s.push_str(&format!("    note: {}\n", x.advice));
        }
    }
    s.push_str("\nOutputs (cosine, unique calibrated/float):\n");
    for (k, o) in d.before.iter().enumerate() {
        s.push_str(&format!(
            "  {}: as calibrated {} ({:.0}/{:.0})",
            o.output,
            fmt_metric(o.cosine),
            o.calibrated_unique,
            o.float_unique
        ));
        if let Some(a) = d.after.as_ref().and_then(|a| a.get(k)) {
            s.push_str(&format!(
                "; with the suggested promotions {} ({:.0}/{:.0})",
                fmt_metric(a.cosine),
                a.calibrated_unique,
                a.float_unique
            ));
        }
        s.push('\n');
    }
    s.push_str("\nSuggested quant_config (merge into calibration_parameters.quant_config):\n");
    s.push_str(&serde_json::to_string_pretty(&d.suggested_quant_config).unwrap_or_default());
    s.push('\n');
    s
}

/// The `diagnose` subcommand.
pub fn run_cli(a: DiagnoseArgs) -> ToolResult<()> {
    let (cal, samples) = a.io.load()?;
    let d = diagnose(&cal, &samples, super::progress(a.json))?;
    let text = render(&d);
    if let Some(dir) = &a.save_dir {
        write_text(&dir.join("diagnose.txt"), &text)?;
        write_text(&dir.join("diagnose.json"), &to_json(&d)?)?;
        write_text(
            &dir.join("suggested_quant_config.json"),
            &to_json(&d.suggested_quant_config)?,
        )?;
    }
    if a.json {
        println!("{}", to_json(&d)?);
    } else {
        print!("{text}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hb_float::kernels::horizon::FakeQuant;
    use hb_ir::{Graph, Model, Node};

    fn fq(qtype: FqType) -> FakeQuant {
        FakeQuant::feature(qtype, &[1.0])
    }

    /// A detector-style tail: boxes = cal(b) · stride, scores =
    /// Sigmoid(cal(s)), out = Concat(boxes, scores); `b` itself comes from a
    /// Conv whose input is calibrated too (not part of the tail).
    #[test]
    fn output_tail_stops_at_the_last_calibrations() {
        let mut g = Graph {
            nodes: vec![
                fq(FqType::Int8).to_node("cx", "x", "x_c"),
                Node::new("conv", "Conv", &["x_c", "w"], &["b"]),
                fq(FqType::Int8).to_node("cb", "b", "b_c"),
                Node::new("mul", "Mul", &["b_c", "stride"], &["boxes"]),
                fq(FqType::Int16).to_node("cs", "s", "s_c"),
                Node::new("sig", "Sigmoid", &["s_c"], &["scores"]),
                Node::new("cat", "Concat", &["boxes", "scores"], &["out"]),
            ],
            ..Default::default()
        };
        g.outputs
            .push(hb_ir::ValueInfo::tensor("out", hb_tensor::DType::F32, &[1]));
        let m = Model {
            ir_version: 8,
            graph: g,
            ..Default::default()
        };
        let cal = Calibrated::from_model(std::path::Path::new("t.onnx"), m).unwrap();
        let names = |ks: Vec<usize>| -> Vec<String> {
            ks.into_iter().map(|k| cal.nodes[k].name.clone()).collect()
        };
        // Both last calibrations, not the conv's input behind `cb`.
        assert_eq!(names(output_tail(&cal, "out")), vec!["cb", "cs"]);
    }
}
