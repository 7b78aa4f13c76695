//! `compare-per-layer`: every layer's output, float vs calibrated, with the
//! statistics of the Horizon per-layer table (qtype, scale, cosine, MSE,
//! L1, KL, SQNR, atol, rtol, min/max/mean/var of both, max_atol_diff,
//! max_qscale_diff) and the clipped fraction.
//!
//! - cumulative: the calibrated model as stored (errors accumulate);
//! - isolated: each layer alone, its inputs taken from float and quantized
//!   by its own calibration nodes.
//!
//! The float reference is the calibrated model with every switch OFF (same
//! graph, so every layer matches by name); the FLOAT model given is run too
//! and its outputs checked against that reference.

use super::common::{fmt_metric, load_samples, to_json, write_text, Calibrated};
use super::CompareArgs;
use crate::cli::{ToolError, ToolResult};
use crate::prog::{as_f32, Loaded};
use hb_float::{OpCtx, Registry, Session, ValueDump};
use hb_quant::calibrated::is_calibration;
use hb_quant::report::table;
use hb_tensor::{metrics, Tensor};
use serde::Serialize;
use std::collections::HashMap;

/// Comparison mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every calibration node as stored.
    Cumulative,
    /// Only the layer's own input quantization, inputs from float.
    Isolated,
    /// The integer program (.bc / .hbm), dequantized (`--program`).
    #[value(skip)]
    Program,
}

/// Row order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Order {
    /// Graph (execution) order.
    Graph,
    /// By cosine, worst first.
    Sorted,
}

/// Statistics of one layer output (means over samples; extremes over samples).
#[derive(Debug, Clone, Serialize, Default)]
pub struct LayerRow {
    /// Position in graph order.
    pub index: usize,
    /// Node name.
    pub node: String,
    /// Op type.
    pub op: String,
    /// Output shape.
    pub shape: Vec<usize>,
    /// qtype of the layer's quantized inputs (`float` when none).
    pub qtype: String,
    /// Scale of the calibration node quantizing this output (largest channel), if any.
    pub scale: Option<f32>,
    /// Its threshold.
    pub threshold: Option<f32>,
    /// Cosine similarity.
    pub cosine: f64,
    /// Mean squared error.
    pub mse: f64,
    /// Mean absolute error.
    pub l1: f64,
    /// KL divergence of the value histograms (256 bins over the float range).
    pub kl: f64,
    /// 10·log10(‖a‖ / ‖a − b‖).
    pub sqnr: f64,
    /// Max |a − b|.
    pub atol: f64,
    /// Max |a − b| / |a| over elements with |a| ≥ 1e-6 · max|a|.
    pub rtol: f64,
    /// Float min / max / mean / var.
    pub base_min: f64,
    /// .
    pub base_max: f64,
    /// .
    pub base_mean: f64,
    /// .
    pub base_var: f64,
    /// Calibrated min / max / mean / var.
    pub analy_min: f64,
    /// .
    pub analy_max: f64,
    /// .
    pub analy_mean: f64,
    /// .
    pub analy_var: f64,
    /// Same as atol (the Horizon table's name).
    pub max_atol_diff: f64,
    /// atol in units of the output scale (≫ 1: truncation; ≤ 0.5: rounding only).
    pub max_qscale_diff: Option<f64>,
    /// Fraction of float values beyond the output threshold (saturated).
    pub clipped: Option<f64>,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Mode.
    pub mode: Mode,
    /// Samples compared.
    pub samples: usize,
    /// Largest |difference| between the FLOAT model's outputs and the reference.
    pub float_model_max_diff: f64,
    /// Rows.
    pub layers: Vec<LayerRow>,
}

fn moments(v: &[f32]) -> (f64, f64, f64, f64) {
    let n = v.len().max(1) as f64;
    let (mut lo, mut hi, mut s) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
    for &x in v {
        let x = f64::from(x);
        lo = lo.min(x);
        hi = hi.max(x);
        s += x;
    }
    let mean = s / n;
    let var = v
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    (lo, hi, mean, var)
}

/// KL(P‖Q) of 256-bin histograms of `a` (P) and `b` (Q) over the range of
/// `a`, values outside clamped to the edge bins, ε = 1e-10 smoothing.
pub fn kl_hist(a: &[f32], b: &[f32]) -> f64 {
    let (lo, hi) = a
        .iter()
        .filter(|x| x.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &x| {
            (l.min(x), h.max(x))
        });
    if hi <= lo {
        return 0.0;
    }
    const BINS: usize = 256;
    let w = f64::from(hi - lo) / BINS as f64;
    let hist = |v: &[f32]| {
        let mut h = vec![0f64; BINS];
        for &x in v.iter().filter(|x| x.is_finite()) {
            let k = ((f64::from(x - lo)) / w)
                .floor()
                .clamp(0.0, (BINS - 1) as f64) as usize;
            h[k] += 1.0;
        }
        let t: f64 = h.iter().sum::<f64>().max(1.0);
        h.iter_mut().for_each(|c| *c = *c / t + 1e-10);
        h
    };
    let (p, q) = (hist(a), hist(b));
    p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum()
}

/// Fills the statistics of `a` (float) vs `b` (calibrated).
fn stats(row: &mut LayerRow, a: &[f32], b: &[f32], threshold: Option<f32>) {
    row.cosine = metrics::cosine(a, b);
    row.mse = metrics::mse(a, b);
    row.l1 = metrics::mre(a, b);
    row.sqnr = metrics::sqnr(a, b);
    row.kl = kl_hist(a, b);
    row.atol = metrics::chebyshev(a, b);
    let amax = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    let floor = 1e-6 * amax;
    row.rtol = a
        .iter()
        .zip(b)
        .filter(|(x, _)| x.abs() >= floor && x.abs() > 0.0)
        .map(|(x, y)| f64::from((x - y).abs() / x.abs()))
        .fold(0.0, f64::max);
    (row.base_min, row.base_max, row.base_mean, row.base_var) = moments(a);
    (row.analy_min, row.analy_max, row.analy_mean, row.analy_var) = moments(b);
    row.max_atol_diff = row.atol;
    row.max_qscale_diff = row.scale.map(|s| row.atol / f64::from(s));
    row.clipped =
        threshold.map(|t| a.iter().filter(|x| x.abs() > t).count() as f64 / a.len().max(1) as f64);
}

/// Merges the row of a further sample into `acc` (means; extremes).
fn merge(acc: &mut LayerRow, r: &LayerRow, k: f64) {
    let avg = |x: &mut f64, y: f64| *x += (y - *x) / k;
    avg(&mut acc.cosine, r.cosine);
    avg(&mut acc.mse, r.mse);
    avg(&mut acc.l1, r.l1);
    avg(&mut acc.kl, r.kl);
    avg(&mut acc.sqnr, r.sqnr);
    avg(&mut acc.base_mean, r.base_mean);
    avg(&mut acc.analy_mean, r.analy_mean);
    avg(&mut acc.base_var, r.base_var);
    avg(&mut acc.analy_var, r.analy_var);
    acc.atol = acc.atol.max(r.atol);
    acc.rtol = acc.rtol.max(r.rtol);
    acc.max_atol_diff = acc.atol;
    acc.base_min = acc.base_min.min(r.base_min);
    acc.analy_min = acc.analy_min.min(r.analy_min);
    acc.base_max = acc.base_max.max(r.base_max);
    acc.analy_max = acc.analy_max.max(r.analy_max);
    acc.max_qscale_diff = match (acc.max_qscale_diff, r.max_qscale_diff) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    if let (Some(a), Some(b)) = (acc.clipped.as_mut(), r.clipped) {
        *a += (b - *a) / k;
    }
}

/// Every tensor the program computes on sample `s`, as f32 (dequantized),
/// keyed by the model tensor it stands for; the first one written wins.
fn program_dump(p: &Loaded, s: &crate::inputs::Sample) -> ToolResult<HashMap<String, Tensor>> {
    let ins = p.inputs_of(s)?;
    let mut ws = hb_bpu::engine::Workspace::new();
    let (_, all) = p.run_all(&ins, &mut ws)?;
    let prog = &p.program;
    let ids: HashMap<&str, usize> = prog
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut m: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in all {
        let base = name.split(':').next().unwrap_or(&name).to_string();
        if m.contains_key(&base) || t.dtype() == hb_tensor::DType::Bool {
            continue;
        }
        let Some(&id) = ids.get(name.as_str()) else {
            continue;
        };
        let v = as_f32(prog, id, &t)?;
        let f = Tensor::from_vec(t.shape(), v).map_err(ToolError::input)?;
        m.insert(base, f);
    }
    Ok(m)
}

fn dump(session: &Session, s: &crate::inputs::Sample) -> ToolResult<HashMap<String, Tensor>> {
    let mut d = ValueDump::default();
    session.run_with_hook(s, &mut d)?;
    let mut m: HashMap<String, Tensor> = d
        .values
        .into_iter()
        .map(|(_, v, t)| (v, std::sync::Arc::unwrap_or_clone(t)))
        .collect();
    for (k, v) in s {
        m.insert(k.clone(), v.clone());
    }
    Ok(m)
}

/// Compares every layer of `cal` on `samples`.
///
/// With `program` (mode [`Mode::Program`]) the analysed values are the
/// integer program's, dequantized with each tensor's scale; a layer's value
/// is the first tensor the program writes for that output (`x`, `x:q8`,
/// `x:q16`, ...).
pub fn compare(
    cal: &Calibrated,
    float_model: Option<&hb_ir::Model>,
    program: Option<&Loaded>,
    samples: &[crate::inputs::Sample],
    mode: Mode,
) -> ToolResult<Comparison> {
    let g = &cal.model.graph;
    let reference = cal.float_session()?;
    let quant = Session::new(&cal.model)?;
    let registry = Registry::shared();
    let mut float_diff = 0f64;
    let float_session = match float_model {
        Some(m) => Some(Session::new(m)?),
        None => None,
    };
    let layers: Vec<usize> = (0..g.nodes.len())
        .filter(|&i| !is_calibration(&g.nodes[i]))
        .collect();
    let mut rows: Vec<Option<LayerRow>> = vec![None; layers.len()];
    for (k, s) in samples.iter().enumerate() {
        let f = dump(&reference, s)?;
        if let Some(fs) = &float_session {
            let outs = fs.run(s)?;
            for (name, t) in outs {
                let (Some(a), Some(r)) = (super::common::flat(&t), f.get(&name)) else {
                    continue;
                };
                if let Some(b) = super::common::flat(r) {
                    if a.len() == b.len() {
                        float_diff = float_diff.max(metrics::chebyshev(&a, &b));
                    }
                }
            }
        }
        let q = match (mode, program) {
            (Mode::Program, Some(p)) => Some(program_dump(p, s)?),
            (Mode::Isolated, _) => None,
            _ => Some(dump(&quant, s)?),
        };
        'layers: for (li, &i) in layers.iter().enumerate() {
            let n = &g.nodes[i];
            let Some(out) = n.outputs.first() else {
                continue;
            };
            let Some(a) = f.get(out) else { continue };
            let b: Tensor = match &q {
                Some(q) => match q.get(out) {
                    Some(t) => t.clone(),
                    None => continue,
                },
                None => {
                    // This layer alone: its calibration inputs quantized from float.
                    let mut held: Vec<Option<Tensor>> = Vec::new();
                    for x in &n.inputs {
                        if x.is_empty() {
                            held.push(None);
                            continue;
                        }
                        let v = match cal.nodes.iter().find(|c| &c.output == x) {
                            Some(c) => {
                                let src = f.get(&c.input).or_else(|| g.initializer(&c.input));
                                match src {
                                    Some(t) => c.fq.apply(t).map_err(|e| {
                                        ToolError::input(format!("'{}': {e}", c.name))
                                    })?,
                                    None => continue 'layers,
                                }
                            }
                            None => match f.get(x).or_else(|| g.initializer(x)) {
                                Some(t) => t.clone(),
                                None => continue 'layers,
                            },
                        };
                        held.push(Some(v));
                    }
                    let Some(kernel) = registry.get(&n.domain, &n.op_type) else {
                        continue;
                    };
                    let args: Vec<Option<&Tensor>> = held.iter().map(|t| t.as_ref()).collect();
                    let ctx = OpCtx {
                        node: n,
                        opset: cal.model.opset_for(&n.domain),
                    };
                    match kernel(&ctx, &args) {
                        Ok(mut o) if !o.is_empty() => o.swap_remove(0),
                        Ok(_) => continue,
                        Err(e) => return Err(ToolError::input(format!("node '{}': {e}", n.name))),
                    }
                }
            };
            let (Some(av), Some(bv)) = (
                a.dtype()
                    .is_float()
                    .then(|| super::common::flat(a))
                    .flatten(),
                b.dtype()
                    .is_float()
                    .then(|| super::common::flat(&b))
                    .flatten(),
            ) else {
                continue;
            };
            if av.len() != bv.len() {
                continue;
            }
            let outq = cal.outputs_of(i);
            let oc = outq.first().map(|&c| &cal.nodes[c]);
            let inq: Vec<&str> = cal
                .inputs_of(i)
                .into_iter()
                .map(|c| cal.nodes[c].qtype())
                .collect();
            let mut qt: Vec<&str> = inq;
            qt.dedup();
            let mut row = LayerRow {
                index: li,
                node: n.name.clone(),
                op: n.op_type.clone(),
                shape: a.shape().to_vec(),
                qtype: if qt.is_empty() {
                    "float".into()
                } else {
                    qt.join("/")
                },
                scale: oc.and_then(|c| c.scale()),
                threshold: oc.map(|c| c.magnitude()),
                ..Default::default()
            };
            let th = row.threshold;
            stats(&mut row, &av, &bv, th);
            match &mut rows[li] {
                Some(acc) => merge(acc, &row, (k + 1) as f64),
                slot => *slot = Some(row),
            }
        }
    }
    Ok(Comparison {
        mode,
        samples: samples.len(),
        float_model_max_diff: float_diff,
        layers: rows.into_iter().flatten().collect(),
    })
}

const CSV_HEADER: &[&str] = &[
    "index",
    "node",
    "op",
    "shape",
    "qtype",
    "qscale",
    "threshold",
    "cosine",
    "mse",
    "l1",
    "kl",
    "sqnr",
    "atol",
    "rtol",
    "base_model_min",
    "analy_model_min",
    "base_model_max",
    "analy_model_max",
    "base_model_mean",
    "analy_model_mean",
    "base_model_var",
    "analy_model_var",
    "max_atol_diff",
    "max_qscale_diff",
    "clipped",
];

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or(String::new(), |x| x.to_string())
}

fn cells(r: &LayerRow) -> Vec<String> {
    vec![
        r.index.to_string(),
        r.node.clone(),
        r.op.clone(),
        format!("{:?}", r.shape).replace(", ", "x"),
        r.qtype.clone(),
        opt(r.scale),
        opt(r.threshold),
        r.cosine.to_string(),
        r.mse.to_string(),
        r.l1.to_string(),
        r.kl.to_string(),
        r.sqnr.to_string(),
        r.atol.to_string(),
        r.rtol.to_string(),
        r.base_min.to_string(),
        r.analy_min.to_string(),
        r.base_max.to_string(),
        r.analy_max.to_string(),
        r.base_mean.to_string(),
        r.analy_mean.to_string(),
        r.base_var.to_string(),
        r.analy_var.to_string(),
        r.max_atol_diff.to_string(),
        opt(r.max_qscale_diff),
        opt(r.clipped),
    ]
}

/// CSV text of the rows (every column).
pub fn to_csv(c: &Comparison) -> String {
    let esc = |s: &str| {
        if s.contains(',') || s.contains('"') {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = CSV_HEADER.join(",");
    out.push('\n');
    for r in &c.layers {
        out.push_str(
            &cells(r)
                .iter()
                .map(|s| esc(s))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    out
}

/// The table as text: the main columns, or all with `verbose`.
pub fn render(c: &Comparison, verbose: bool) -> String {
    let f = |v: Option<f64>| v.map_or("--".into(), fmt_metric);
    let body: Vec<Vec<String>> = c
        .layers
        .iter()
        .map(|r| {
            if verbose {
                cells(r)
            } else {
                vec![
                    r.index.to_string(),
                    r.node.clone(),
                    r.op.clone(),
                    r.qtype.clone(),
                    r.scale.map_or("--".into(), |s| fmt_metric(f64::from(s))),
                    fmt_metric(r.cosine),
                    fmt_metric(r.mse),
                    fmt_metric(r.sqnr),
                    fmt_metric(r.atol),
                    f(r.max_qscale_diff),
                    r.clipped
                        .map_or("--".into(), |x| format!("{:.4}%", 100.0 * x)),
                ]
            }
        })
        .collect();
    let header: Vec<&str> = if verbose {
        CSV_HEADER.to_vec()
    } else {
        vec![
            "#",
            "node",
            "op",
            "qtype",
            "qscale",
            "cosine",
            "mse",
            "sqnr",
            "atol",
            "max_qscale_diff",
            "clipped",
        ]
    };
    let mut s = table(&header, &body);
    s.push_str(&format!(
        "{} layer(s), {:?} mode, {} sample(s); FLOAT model vs reference (calibrated, switches OFF): max |diff| {}\n",
        c.layers.len(),
        c.mode,
        c.samples,
        fmt_metric(c.float_model_max_diff)
    ));
    s
}

/// The `compare-per-layer` subcommand.
pub fn run_cli(a: CompareArgs) -> ToolResult<()> {
    let float = crate::cli::load_model(&a.float)?;
    let cal = Calibrated::load(&a.calibrated)?;
    let limit = (a.data_num > 0).then_some(a.data_num);
    let samples = load_samples(&cal.model.graph, &a.data, limit)?;
    let fm = (!float.graph.nodes.iter().any(is_calibration)).then_some(&float);
    let program = match &a.program {
        Some(p) => Some(Loaded::open(p, false)?),
        None => None,
    };
    let mode = if program.is_some() {
        Mode::Program
    } else {
        a.mode
    };
    let mut c = compare(&cal, fm, program.as_ref(), &samples, mode)?;
    if a.order == Order::Sorted {
        c.layers
            .sort_by(|x, y| super::common::worse_first("cosine-similarity", x.cosine, y.cosine));
    }
    if let Some(dir) = &a.save_dir {
        let stem = format!(
            "compare_per_layer_{}",
            match mode {
                Mode::Cumulative => "cumulative",
                Mode::Isolated => "isolated",
                Mode::Program => "program",
            }
        );
        write_text(&dir.join(format!("{stem}.csv")), &to_csv(&c))?;
        write_text(&dir.join(format!("{stem}.json")), &to_json(&c)?)?;
    }
    if a.json {
        println!("{}", to_json(&c)?);
    } else {
        print!("{}", render(&c, a.verbose));
    }
    Ok(())
}
