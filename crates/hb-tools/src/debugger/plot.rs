//! The debugger's plots (hmct-debugger's `plot-distribution`,
//! `get-channelwise-data-distribution`, `plot-acc-error`, the sensitivity
//! bar chart and `runall`), written as SVG by [`super::plot_svg`], plus an
//! `index.html` in the save folder that links every file there.

use super::common::{fmt_metric, metric, to_json, write_text, Calibrated};
use super::plot_svg::{self as svg, Band, BoxStat, Series};
use super::sensitivity::{self, Granularity, Sensitivity};
use crate::cli::{ToolError, ToolResult};
use crate::inputs::Sample;
use crate::names::file_safe;
use clap::Args;
use hb_float::kernels::horizon::{FakeQuant, MASK_LIMIT};
use hb_float::Session;
use hb_ir::Attr;
use hb_quant::calibrated::is_calibration;
use hb_tensor::{metrics, Tensor};
use std::path::{Path, PathBuf};

/// Bins of a distribution histogram.
const BINS: usize = 120;
/// Most channels drawn by a channel plot.
const MAX_CHANNELS: usize = 512;
/// Draw the quantization grid when at most this many levels are in view.
const MAX_GRID: f64 = 300.0;

/// `plot-distribution`.
#[derive(Args, Debug)]
pub struct DistributionArgs {
    #[command(flatten)]
    pub io: super::ModelData,
    /// Nodes (model or calibration node names) whose quantized tensors to plot.
    #[arg(short = 'n', long = "nodes", value_delimiter = ',', num_args = 1.., required = true)]
    pub nodes: Vec<String>,
    /// Folder for the SVGs and index.html.
    #[arg(short = 's', long = "save-dir", default_value = "debug_result")]
    pub save_dir: PathBuf,
}

/// `get-channelwise-data-distribution`.
#[derive(Args, Debug)]
pub struct ChannelwiseArgs {
    #[command(flatten)]
    pub io: super::ModelData,
    /// Nodes (model or calibration node names).
    #[arg(short = 'n', long = "nodes", value_delimiter = ',', num_args = 1.., required = true)]
    pub nodes: Vec<String>,
    /// Channel axis (negative counts from the end).
    #[arg(
        short = 'a',
        long = "axis",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    pub axis: i64,
    /// Folder for the SVGs and index.html.
    #[arg(short = 's', long = "save-dir", default_value = "debug_result")]
    pub save_dir: PathBuf,
}

/// `plot-acc-error`.
#[derive(Args, Debug)]
pub struct AccErrorArgs {
    #[command(flatten)]
    pub io: super::ModelData,
    /// One curve per entry with only these quantized (join names with '+' to quantize them together).
    #[arg(short = 'q', long = "quantize-node", value_delimiter = ',', num_args = 1.., conflicts_with = "non_quantize")]
    pub quantize: Vec<String>,
    /// One curve per entry with all but these quantized ('+' joins names).
    #[arg(long = "nq", alias = "non-quantize-node", value_delimiter = ',', num_args = 1..)]
    pub non_quantize: Vec<String>,
    /// The metric (cosine-similarity, mse, mre, sqnr, chebyshev).
    #[arg(short = 'm', long = "metric", default_value = "cosine-similarity")]
    pub metric: String,
    /// Average over all samples (-d); otherwise the first sample only.
    #[arg(short = 'a', long = "average-mode")]
    pub average: bool,
    /// Folder for the SVG, its JSON and index.html.
    #[arg(short = 's', long = "save-dir", default_value = "debug_result")]
    pub save_dir: PathBuf,
}

/// `runall`.
#[derive(Args, Debug)]
pub struct RunallArgs {
    #[command(flatten)]
    pub io: super::ModelData,
    /// The metric of the sensitivity and the error curve.
    #[arg(short = 'm', long = "metric", default_value = "cosine-similarity")]
    pub metric: String,
    /// How many of the most sensitive nodes get distribution and channel plots.
    #[arg(long = "top", default_value_t = 5)]
    pub top: usize,
    /// Channel axis of the channel plots.
    #[arg(
        short = 'a',
        long = "axis",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    pub axis: i64,
    /// Folder for everything, with index.html.
    #[arg(short = 's', long = "save-dir", default_value = "debug_result")]
    pub save_dir: PathBuf,
}

/// The calibration nodes to plot for `name`: the calibration node itself, or
/// for a model node the one quantizing its output, else its quantized
/// activation inputs, else its weights.
pub fn resolve(cal: &Calibrated, name: &str) -> ToolResult<Vec<usize>> {
    if let Some(k) = cal.nodes.iter().position(|c| c.name == name) {
        return Ok(vec![k]);
    }
    let Some(i) = cal.node_index(name) else {
        return Err(ToolError::input(format!(
            "{}: no node named '{name}'",
            cal.path.display()
        )));
    };
    let outs = cal.outputs_of(i);
    if !outs.is_empty() {
        return Ok(outs);
    }
    let ins = cal.inputs_of(i);
    let acts: Vec<usize> = ins
        .iter()
        .copied()
        .filter(|&k| !cal.nodes[k].is_weight)
        .collect();
    let pick = if acts.is_empty() { ins } else { acts };
    if pick.is_empty() {
        return Err(ToolError::input(format!(
            "{}: node '{name}' has no calibration node on its inputs or output",
            cal.path.display()
        )));
    }
    Ok(pick)
}

/// Float value of each calibration node `ks`' input, per sample.
fn float_inputs(
    cal: &Calibrated,
    samples: &[Sample],
    ks: &[usize],
) -> ToolResult<Vec<Vec<Tensor>>> {
    let session = cal.float_session()?;
    let mut out = vec![Vec::with_capacity(samples.len()); ks.len()];
    for sample in samples {
        let cache = session.run_cached(sample)?;
        for (slot, &k) in out.iter_mut().zip(ks) {
            let c = &cal.nodes[k];
            let t = session
                .value_id(&c.input)
                .and_then(|id| cache.get(id))
                .or_else(|| cal.model.graph.initializer(&c.input))
                .ok_or_else(|| {
                    ToolError::input(format!(
                        "'{}': input '{}' was not produced",
                        c.name, c.input
                    ))
                })?;
            slot.push(t.clone());
        }
    }
    Ok(out)
}

fn is_data(x: f32) -> bool {
    x.is_finite() && x > -MASK_LIMIT
}

/// Representable range and scale of a quantizer: (lo, hi, smallest scale), widest over channels.
fn clip_range(fq: &FakeQuant) -> Option<(f64, f64, f64)> {
    let on = FakeQuant {
        enabled: true,
        ..fq.clone()
    };
    let p = on.params().ok()?;
    let lo = p
        .iter()
        .map(|q| (q.lo * q.scale) as f64)
        .fold(f64::INFINITY, f64::min);
    let hi = p
        .iter()
        .map(|q| (q.hi * q.scale) as f64)
        .fold(f64::NEG_INFINITY, f64::max);
    let s = p
        .iter()
        .map(|q| q.scale as f64)
        .fold(f64::INFINITY, f64::min);
    Some((lo, hi, s))
}

fn flat_all(ts: &[Tensor]) -> Vec<f32> {
    ts.iter()
        .filter_map(super::common::flat)
        .flatten()
        .collect()
}

fn hist(v: &[f32], lo: f64, hi: f64) -> Vec<u64> {
    let mut c = vec![0u64; BINS];
    let w = (hi - lo) / BINS as f64;
    for &x in v.iter().filter(|x| is_data(**x)) {
        let b = ((x as f64 - lo) / w).floor();
        if b >= 0.0 {
            c[(b as usize).min(BINS - 1)] += 1;
        }
    }
    c
}

/// What one distribution plot shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DistSummary {
    /// Calibration node.
    pub calibration_node: String,
    /// Its qtype.
    pub qtype: String,
    /// Clipping range (None for float qtypes).
    pub clip: Option<(f64, f64)>,
    /// Fraction of float values outside it.
    pub clipped: f64,
    /// Cosine float vs quantized.
    pub cosine: f64,
    /// File written.
    pub file: PathBuf,
}

/// Float vs quantized histogram of calibration node `k`'s tensor.
fn distribution_svg(
    cal: &Calibrated,
    k: usize,
    ts: &[Tensor],
    dir: &Path,
) -> ToolResult<DistSummary> {
    let c = &cal.nodes[k];
    let fl = flat_all(ts);
    let on = c.on();
    let mut qts = Vec::with_capacity(ts.len());
    for t in ts {
        qts.push(
            on.apply(t)
                .map_err(|e| ToolError::input(format!("'{}': {e}", c.name)))?,
        );
    }
    let q = flat_all(&qts);
    let range = clip_range(&c.fq);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &x in fl.iter().chain(&q).filter(|x| is_data(**x)) {
        lo = lo.min(x as f64);
        hi = hi.max(x as f64);
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if let Some((a, b, _)) = range {
        hi = hi.max(b);
        if lo < 0.0 {
            lo = lo.min(a);
        }
    }
    let pad = ((hi - lo) * 0.04).max(1e-6);
    let (lo, hi) = (lo - pad, hi + pad);
    let mut thresholds = Vec::new();
    let mut clips = Vec::new();
    let mut grid = Vec::new();
    let mut clipped = 0.0;
    if let Some((a, b, s)) = range {
        thresholds.push(Band {
            from: b,
            to: b,
            label: format!("threshold {}", svg::num(b)),
        });
        if a >= lo {
            thresholds.push(Band {
                from: a,
                to: a,
                label: svg::num(a),
            });
        }
        if hi > b {
            clips.push(Band {
                from: b,
                to: hi,
                label: "clipped".into(),
            });
        }
        if lo < a {
            clips.push(Band {
                from: lo,
                to: a,
                label: "clipped".into(),
            });
        }
        if s > 0.0 && (hi - lo) / s <= MAX_GRID {
            let mut g = (lo / s).ceil() * s;
            while g <= hi {
                grid.push(g);
                g += s;
            }
        }
        let data: Vec<f32> = fl.iter().copied().filter(|x| is_data(*x)).collect();
        if !data.is_empty() {
            let out = data
                .iter()
                .filter(|&&x| (x as f64) > b * (1.0 + 1e-6) || (x as f64) < a * (1.0 + 1e-6))
                .count();
            clipped = out as f64 / data.len() as f64;
        }
    }
    let cosine = if fl.len() == q.len() {
        metrics::by_name("cosine-similarity", &fl, &q).unwrap_or(f64::NAN)
    } else {
        f64::NAN
    };
    let mut notes = vec![format!(
        "{} ({}): qtype {}, {} values over {} sample(s); cosine float vs quantized {}",
        c.name,
        c.input,
        c.qtype(),
        fl.len(),
        ts.len(),
        fmt_metric(cosine)
    )];
    match range {
        Some((a, b, s)) => notes.push(format!(
            "representable range [{}, {}], step {}{}; {:.4}% of float values clipped",
            svg::num(a),
            svg::num(b),
            svg::num(s),
            if grid.is_empty() {
                " (grid too fine to draw)"
            } else {
                " (grey lines)"
            },
            clipped * 100.0
        )),
        None => notes.push(format!("qtype {}: no integer grid", c.qtype())),
    }
    if c.fq.thresholds.len() > 2 {
        notes.push(format!(
            "per-channel thresholds ({} channels): the widest is marked",
            c.fq.thresholds.len()
        ));
    }
    let body = svg::histogram(
        &format!("Distribution of {}", c.input),
        lo,
        hi,
        &[
            Series {
                name: "float".into(),
                counts: hist(&fl, lo, hi),
            },
            Series {
                name: format!("quantized ({})", c.qtype()),
                counts: hist(&q, lo, hi),
            },
        ],
        &thresholds,
        &clips,
        &grid,
        &notes,
    );
    let file = dir.join(format!("distribution_{}.svg", file_safe(&c.name)));
    write_text(&file, &body)?;
    Ok(DistSummary {
        calibration_node: c.name.clone(),
        qtype: c.qtype().into(),
        clip: range.map(|(a, b, _)| (a, b)),
        clipped,
        cosine,
        file,
    })
}

/// `plot-distribution`: one histogram per calibration node of `names`.
pub fn distribution(
    cal: &Calibrated,
    samples: &[Sample],
    names: &[String],
    dir: &Path,
) -> ToolResult<Vec<DistSummary>> {
    let mut ks = Vec::new();
    for n in names {
        for k in resolve(cal, n)? {
            if !ks.contains(&k) {
                ks.push(k);
            }
        }
    }
    let vals = float_inputs(cal, samples, &ks)?;
    ks.iter()
        .zip(&vals)
        .map(|(&k, ts)| distribution_svg(cal, k, ts, dir))
        .collect()
}

fn quantile(sorted: &[f32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = p * (sorted.len() - 1) as f64;
    let (i, fr) = (pos.floor() as usize, pos - pos.floor());
    let a = sorted[i] as f64;
    let b = sorted[(i + 1).min(sorted.len() - 1)] as f64;
    a + (b - a) * fr
}

/// Five-number summaries per channel along `axis` of the tensors `ts`.
pub fn channel_stats(ts: &[Tensor], axis: i64, what: &str) -> ToolResult<Vec<BoxStat>> {
    let mut per: Vec<Vec<f32>> = Vec::new();
    for t in ts {
        let shape = t.shape();
        let r = shape.len() as i64;
        let ax = if axis < 0 { axis + r } else { axis };
        if r == 0 || ax < 0 || ax >= r {
            return Err(ToolError::input(format!(
                "{what}: axis {axis} is out of range for shape {shape:?}"
            )));
        }
        let ax = ax as usize;
        let ch = shape[ax];
        let inner: usize = shape[ax + 1..].iter().product();
        if per.is_empty() {
            per = vec![Vec::new(); ch];
        } else if per.len() != ch {
            return Err(ToolError::input(format!(
                "{what}: channel count differs between samples ({} vs {ch})",
                per.len()
            )));
        }
        let Some(v) = super::common::flat(t) else {
            return Err(ToolError::input(format!("{what}: not a numeric tensor")));
        };
        for (i, x) in v.into_iter().enumerate() {
            if is_data(x) && inner > 0 {
                per[(i / inner) % ch].push(x);
            }
        }
    }
    Ok(per
        .into_iter()
        .map(|mut v| {
            v.sort_by(|a, b| a.total_cmp(b));
            BoxStat {
                min: quantile(&v, 0.0),
                q1: quantile(&v, 0.25),
                median: quantile(&v, 0.5),
                q3: quantile(&v, 0.75),
                max: quantile(&v, 1.0),
            }
        })
        .collect())
}

/// `get-channelwise-data-distribution`: per-channel box plots.
pub fn channelwise(
    cal: &Calibrated,
    samples: &[Sample],
    names: &[String],
    axis: i64,
    dir: &Path,
) -> ToolResult<Vec<PathBuf>> {
    let mut ks = Vec::new();
    for n in names {
        for k in resolve(cal, n)? {
            if !ks.contains(&k) {
                ks.push(k);
            }
        }
    }
    let vals = float_inputs(cal, samples, &ks)?;
    let mut files = Vec::new();
    for (&k, ts) in ks.iter().zip(&vals) {
        let c = &cal.nodes[k];
        let mut stats = channel_stats(ts, axis, &c.name)?;
        let total = stats.len();
        stats.truncate(MAX_CHANNELS);
        let mut notes = vec![format!(
            "{} ({}): qtype {}, axis {axis}, {total} channels over {} sample(s); box q1-q3, bar median, whiskers min-max",
            c.name,
            c.input,
            c.qtype(),
            ts.len()
        )];
        if total > stats.len() {
            notes.push(format!("first {MAX_CHANNELS} of {total} channels drawn"));
        }
        let rank = ts.first().map_or(0, |t| t.shape().len()) as i64;
        let norm = |a: i64| if a < 0 { a + rank } else { a };
        let mut per_box = Vec::new();
        let mut lines = Vec::new();
        let on = c.on();
        match on.params() {
            Ok(p) if p.len() == total && total > 1 && norm(c.fq.axis) == norm(axis) => {
                per_box = p
                    .iter()
                    .map(|q| ((q.lo * q.scale) as f64, (q.hi * q.scale) as f64))
                    .collect();
                notes.push("red ticks: each channel's quantization range".into());
            }
            _ => {
                if let Some((a, b, _)) = clip_range(&c.fq) {
                    lines.push(Band {
                        from: b,
                        to: b,
                        label: format!("threshold {}", svg::num(b)),
                    });
                    lines.push(Band {
                        from: a,
                        to: a,
                        label: svg::num(a),
                    });
                }
            }
        }
        let body = svg::boxplot(
            &format!("Per-channel distribution of {} (axis {axis})", c.input),
            &stats,
            &lines,
            &per_box,
            &notes,
        );
        let file = dir.join(format!("channelwise_{}_axis{axis}.svg", file_safe(&c.name)));
        write_text(&file, &body)?;
        files.push(file);
    }
    Ok(files)
}

/// Calibration nodes of a unit name for `plot-acc-error`: a calibration
/// node, or every calibration node of a model node (as in sensitivity).
fn unit_calib(cal: &Calibrated, name: &str) -> ToolResult<Vec<usize>> {
    if let Some(k) = cal.nodes.iter().position(|c| c.name == name) {
        return Ok(vec![k]);
    }
    let us = sensitivity::units(cal, Granularity::Node, &[name.to_string()])?;
    Ok(us.into_iter().flat_map(|u| u.calib).collect())
}

/// One error curve: its label and per-layer error.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Curve {
    /// Legend text.
    pub label: String,
    /// Metric per layer (graph order), NaN when not comparable.
    pub values: Vec<f64>,
}

/// The result of `plot-acc-error`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccError {
    /// Metric.
    pub metric: String,
    /// Samples averaged.
    pub samples: usize,
    /// Layer names in graph order.
    pub layers: Vec<String>,
    /// Curves.
    pub curves: Vec<Curve>,
}

/// `plot-acc-error`: per-layer error in graph order for each curve.
pub fn acc_error(
    cal: &Calibrated,
    samples: &[Sample],
    quantize: &[String],
    non_quantize: &[String],
    metric_name: &str,
    average: bool,
) -> ToolResult<AccError> {
    super::common::check_metrics(&[metric_name.to_string()])?;
    let mut specs: Vec<(String, hb_ir::Model)> = vec![("all quantized".into(), cal.model.clone())];
    let switch = |m: &mut hb_ir::Model, ks: &[usize], on: bool| {
        for &k in ks {
            m.graph.nodes[cal.nodes[k].step]
                .set_attr("switch", Attr::String(if on { "ON" } else { "OFF" }.into()));
        }
    };
    for (entries, only) in [(quantize, true), (non_quantize, false)] {
        for e in entries {
            let mut ks = Vec::new();
            for n in e.split('+').map(str::trim).filter(|n| !n.is_empty()) {
                ks.extend(unit_calib(cal, n)?);
            }
            let (label, m) = if only {
                let mut m = cal.float_model();
                switch(&mut m, &ks, true);
                (format!("only {e} quantized"), m)
            } else {
                let mut m = cal.model.clone();
                switch(&mut m, &ks, false);
                (format!("all but {e} quantized"), m)
            };
            specs.push((label, m));
        }
    }
    let g = &cal.model.graph;
    let layers: Vec<(String, String)> = g
        .nodes
        .iter()
        .filter(|n| !is_calibration(n))
        .filter_map(|n| n.outputs.first().map(|o| (n.name.clone(), o.clone())))
        .collect();
    let float = cal.float_session()?;
    let sessions: Vec<Session> = specs
        .iter()
        .map(|(_, m)| Session::new(m))
        .collect::<Result<_, _>>()?;
    let used = if average { samples.len() } else { 1 };
    let mut sums = vec![vec![0.0f64; layers.len()]; specs.len()];
    let mut counts = vec![vec![0usize; layers.len()]; specs.len()];
    for sample in samples.iter().take(used) {
        let fc = float.run_cached(sample)?;
        for (si, s) in sessions.iter().enumerate() {
            let qc = s.run_cached(sample)?;
            for (li, (_, v)) in layers.iter().enumerate() {
                let a = float.value_id(v).and_then(|id| fc.get(id));
                let b = s.value_id(v).and_then(|id| qc.get(id));
                let (Some(a), Some(b)) = (a, b) else { continue };
                if !(a.dtype().is_float() && b.dtype().is_float()) {
                    continue;
                }
                if let Some(x) = metric(metric_name, a, b) {
                    sums[si][li] += x;
                    counts[si][li] += 1;
                }
            }
        }
    }
    let curves = specs
        .iter()
        .zip(sums.iter().zip(&counts))
        .map(|((label, _), (s, c))| Curve {
            label: label.clone(),
            values: s
                .iter()
                .zip(c)
                .map(|(&x, &n)| if n > 0 { x / n as f64 } else { f64::NAN })
                .collect(),
        })
        .collect();
    Ok(AccError {
        metric: metric_name.into(),
        samples: used.min(samples.len()),
        layers: layers.into_iter().map(|l| l.0).collect(),
        curves,
    })
}

/// Writes `acc_error_<metric>.svg` and `.json`; returns the SVG path.
pub fn write_acc_error(e: &AccError, dir: &Path) -> ToolResult<PathBuf> {
    let series: Vec<(String, Vec<f64>)> = e
        .curves
        .iter()
        .map(|c| (c.label.clone(), c.values.clone()))
        .collect();
    let notes = vec![format!(
        "{} per layer output (float vs partly quantized), graph order, {} over {} sample(s)",
        e.metric,
        if e.samples > 1 { "mean" } else { "value" },
        e.samples
    )];
    let body = svg::curves(
        &format!("Accumulated error ({}) along the graph", e.metric),
        &e.layers,
        &series,
        &e.metric,
        &notes,
    );
    let stem = format!("acc_error_{}", file_safe(&e.metric));
    let file = dir.join(format!("{stem}.svg"));
    write_text(&file, &body)?;
    write_text(&dir.join(format!("{stem}.json")), &to_json(e)?)?;
    Ok(file)
}

/// Writes the sensitivity bar chart `sensitivity_<type>.svg` (60 worst
/// units, first metric; cosine drawn as 1 − cosine).
pub fn sensitivity_chart(s: &Sensitivity, dir: &Path) -> ToolResult<PathBuf> {
    let Some(m) = s.metrics.first() else {
        return Err(ToolError::input("no metric to chart"));
    };
    let cosine = m == "cosine-similarity";
    let rows: Vec<(String, f64, String)> = s
        .rows
        .iter()
        .take(60)
        .map(|r| {
            let v = r.metrics.get(m).copied().unwrap_or(f64::NAN);
            let len = if cosine { 1.0 - v } else { v };
            (
                format!("{} ({})", r.unit.name, r.unit.op),
                len,
                fmt_metric(v),
            )
        })
        .collect();
    let xlabel = if cosine {
        "1 - cosine-similarity (longer = more sensitive)".to_string()
    } else if metrics::higher_is_better(m) {
        format!("{m} (shorter = more sensitive)")
    } else {
        format!("{m} (longer = more sensitive)")
    };
    let body = svg::bars(
        &format!(
            "{} sensitivity ({m}, {} sample(s), worst first)",
            s.granularity.name(),
            s.samples
        ),
        &rows,
        &xlabel,
    );
    let file = dir.join(format!("sensitivity_{}.svg", s.granularity.name()));
    write_text(&file, &body)?;
    Ok(file)
}

/// Percent-encodes a file name for an href.
fn href(name: &str) -> String {
    let mut o = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// Writes `dir/index.html` linking every file in `dir` (SVGs shown inline as images).
pub fn write_index(dir: &Path) -> ToolResult<PathBuf> {
    let rd =
        std::fs::read_dir(dir).map_err(|e| ToolError::input(format!("{}: {e}", dir.display())))?;
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != "index.html" && !n.starts_with('.'))
        .collect();
    names.sort();
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>hb-debugger results</title>\n<style>body{font-family:sans-serif;margin:1em} figure{display:inline-block;margin:0.5em;vertical-align:top} img{max-width:100%;border:1px solid #ddd}</style>\n</head>\n<body>\n<h1>hb-debugger results</h1>\n",
    );
    let sections: [(&str, &str); 4] = [
        ("Sensitivity", "sensitivity_"),
        ("Error along the graph", "acc_error_"),
        ("Distributions", "distribution_"),
        ("Per-channel distributions", "channelwise_"),
    ];
    let mut shown = vec![false; names.len()];
    for (title, prefix) in sections {
        let svgs: Vec<usize> = (0..names.len())
            .filter(|&i| names[i].starts_with(prefix) && names[i].ends_with(".svg"))
            .collect();
        if svgs.is_empty() {
            continue;
        }
        html.push_str(&format!("<h2>{}</h2>\n", svg::esc(title)));
        for i in svgs {
            shown[i] = true;
            let (h, e) = (href(&names[i]), svg::esc(&names[i]));
            html.push_str(&format!(
                "<figure><a href=\"{h}\"><img src=\"{h}\" alt=\"{e}\"></a><figcaption>{e}</figcaption></figure>\n"
            ));
        }
    }
    let other: Vec<usize> = (0..names.len()).filter(|&i| !shown[i]).collect();
    if !other.is_empty() {
        html.push_str("<h2>Files</h2>\n<ul>\n");
        for i in other {
            html.push_str(&format!(
                "<li><a href=\"{}\">{}</a></li>\n",
                href(&names[i]),
                svg::esc(&names[i])
            ));
        }
        html.push_str("</ul>\n");
    }
    html.push_str("</body>\n</html>\n");
    let file = dir.join("index.html");
    write_text(&file, &html)?;
    Ok(file)
}

fn report(files: &[PathBuf], index: &Path) {
    for f in files {
        println!("wrote {}", f.display());
    }
    println!("index {}", index.display());
}

/// Runs `plot-distribution`.
pub fn run_distribution(a: DistributionArgs) -> ToolResult<()> {
    let (cal, samples) = a.io.load()?;
    let d = distribution(&cal, &samples, &a.nodes, &a.save_dir)?;
    for s in &d {
        println!(
            "{}: qtype {}, clipped {:.4}%, cosine {}",
            s.calibration_node,
            s.qtype,
            s.clipped * 100.0,
            fmt_metric(s.cosine)
        );
    }
    let files: Vec<PathBuf> = d.into_iter().map(|s| s.file).collect();
    report(&files, &write_index(&a.save_dir)?);
    Ok(())
}

/// Runs `get-channelwise-data-distribution`.
pub fn run_channelwise(a: ChannelwiseArgs) -> ToolResult<()> {
    let (cal, samples) = a.io.load()?;
    let files = channelwise(&cal, &samples, &a.nodes, a.axis, &a.save_dir)?;
    report(&files, &write_index(&a.save_dir)?);
    Ok(())
}

/// Runs `plot-acc-error`.
pub fn run_acc_error(a: AccErrorArgs) -> ToolResult<()> {
    let (cal, samples) = a.io.load()?;
    let e = acc_error(
        &cal,
        &samples,
        &a.quantize,
        &a.non_quantize,
        &a.metric,
        a.average,
    )?;
    for c in &e.curves {
        let last = c.values.iter().rev().find(|v| !v.is_nan()).copied();
        println!(
            "{}: last layer {} {}",
            c.label,
            e.metric,
            last.map_or("n/a".into(), fmt_metric)
        );
    }
    let file = write_acc_error(&e, &a.save_dir)?;
    report(&[file], &write_index(&a.save_dir)?);
    Ok(())
}

/// Runs `runall`: node sensitivity (table, JSON, chart), distributions and
/// channel plots of the `top` most sensitive nodes, the error curves with
/// all quantized and with all but those nodes, and index.html.
pub fn run_all(a: RunallArgs, progress: bool) -> ToolResult<()> {
    super::common::check_metrics(std::slice::from_ref(&a.metric))?;
    let (cal, samples) = a.io.load()?;
    let dir = &a.save_dir;
    let units = sensitivity::units(&cal, Granularity::Node, &[])?;
    if units.is_empty() {
        return Err(ToolError::input(format!(
            "{}: no node with calibration nodes to score",
            cal.path.display()
        )));
    }
    let opts = sensitivity::SensOptions {
        metrics: vec![a.metric.clone()],
        targets: sensitivity::resolve_targets(&cal, &[])?,
        naive: false,
        progress,
    };
    let s = sensitivity::run(&cal, units, Granularity::Node, &samples, &opts)?;
    let mut files = save_sensitivity(&s, dir)?;
    print!("{}", sensitivity::render(&s, Some(a.top.max(5))));
    let top: Vec<String> = s
        .rows
        .iter()
        .take(a.top)
        .map(|r| r.unit.name.clone())
        .collect();
    files.extend(
        distribution(&cal, &samples, &top, dir)?
            .into_iter()
            .map(|d| d.file),
    );
    files.extend(channelwise(&cal, &samples, &top, a.axis, dir)?);
    let nq = if top.is_empty() {
        vec![]
    } else {
        vec![top.join("+")]
    };
    let e = acc_error(&cal, &samples, &[], &nq, &a.metric, true)?;
    files.push(write_acc_error(&e, dir)?);
    report(&files, &write_index(dir)?);
    Ok(())
}

/// Writes the sensitivity table (text, JSON) and chart into `dir`; returns the files.
pub fn save_sensitivity(s: &Sensitivity, dir: &Path) -> ToolResult<Vec<PathBuf>> {
    let stem = format!("sensitivity_{}", s.granularity.name());
    let txt = dir.join(format!("{stem}.txt"));
    let json = dir.join(format!("{stem}.json"));
    write_text(&txt, &sensitivity::render(s, None))?;
    write_text(&json, &to_json(s)?)?;
    let chart = sensitivity_chart(s, dir)?;
    Ok(vec![txt, json, chart])
}
