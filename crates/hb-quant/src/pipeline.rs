//! One calibration run: statistics of every quantized tensor in one
//! streaming pass over the samples, thresholds for every candidate derived
//! from those statistics, candidates scored by fake-quant simulation against
//! float, and the calibrated model with its report.

use crate::calib::candidate::{
    candidates, feature_thresholds, is_default_search, weight_thresholds, Candidate, Thresholds,
    UnsupportedMethod,
};
use crate::calib::observer::TensorStats;
use crate::calibrated::insert_calibration;
use crate::config::QuantConfig;
use crate::plan::{build_plan, CalibPoint, Plan, PlanError, TensorKind};
use crate::report::{self, Finding, NodeRow, OutputRow};
use hb_float::{FloatError, NodeHook, Session, ValueDump};
use hb_ir::{IrError, Model, Node};
use hb_tensor::{metrics, DType, Tensor};
use indicatif::ProgressBar;
use rayon::prelude::*;
use std::collections::HashMap;

/// One run's inputs by name.
pub type Sample = HashMap<String, Tensor>;

/// Where calibration samples come from (read one at a time, so memory does
/// not grow with their number).
pub trait SampleSource: Sync {
    /// Number of samples.
    fn count(&self) -> usize;
    /// Sample `k` (0-based).
    fn load(&self, k: usize) -> Result<Sample, String>;
}

/// Options of a calibration run that are not in the quant_config.
#[derive(Debug, Clone)]
pub struct Options {
    /// Histogram bins per tensor (`max_num_bin`).
    pub max_num_bin: usize,
    /// How many calibration samples score each candidate.
    pub search_samples: usize,
    /// Show progress bars.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_num_bin: 4096,
            search_samples: 10,
            progress: false,
        }
    }
}

/// Why calibration failed.
#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    /// Bad calibration data.
    #[error("{0}")]
    Data(String),
    /// The float interpreter failed.
    #[error(transparent)]
    Float(#[from] FloatError),
    /// The config names something the model lacks.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Graph editing failed.
    #[error(transparent)]
    Ir(#[from] IrError),
    /// A calibration method hbkit lacks.
    #[error(transparent)]
    Method(#[from] UnsupportedMethod),
    /// NaN in a tensor to quantize.
    #[error("tensor '{tensor}' (read by node '{node}') holds NaN during calibration: check the model and the calibration data")]
    NaN {
        /// The tensor.
        tensor: String,
        /// A node reading it.
        node: String,
    },
}

/// A candidate and how it scored.
#[derive(Debug, Clone)]
pub struct Scored {
    /// The candidate.
    pub candidate: Candidate,
    /// Mean metric over outputs and samples.
    pub score: f64,
}

/// Everything a calibration run produced.
#[derive(Debug, Clone)]
pub struct CalibOutcome {
    /// The calibrated model (switches ON).
    pub calibrated: Model,
    /// The plan it was built from.
    pub plan: Plan,
    /// Points actually inserted (float tensors only), in plan order.
    pub points: Vec<CalibPoint>,
    /// Their thresholds.
    pub thresholds: Vec<Thresholds>,
    /// Every candidate scored, in the order tried.
    pub scores: Vec<Scored>,
    /// The winner.
    pub chosen: Candidate,
    /// The metric used to score.
    pub metric: String,
    /// Traps met and warnings.
    pub findings: Vec<Finding>,
    /// Per-node table.
    pub nodes: Vec<NodeRow>,
    /// Per-output table.
    pub outputs: Vec<OutputRow>,
    /// Number of calibration samples.
    pub samples: usize,
    /// Wall time of each phase (statistics, search, layerwise, report), seconds.
    pub timings: Vec<(String, f64)>,
}

struct StatsHook<'a> {
    index: &'a HashMap<String, usize>,
    stats: &'a mut [TensorStats],
    dtypes: &'a mut HashMap<String, DType>,
}

impl StatsHook<'_> {
    fn see(&mut self, name: &str, t: &Tensor) {
        let Some(&i) = self.index.get(name) else {
            return;
        };
        self.dtypes.entry(name.to_string()).or_insert(t.dtype());
        if let Tensor::F32(a) = t {
            match a.as_slice() {
                Some(s) => self.stats[i].observe(s, a.shape()),
                None => {
                    let v: Vec<f32> = a.iter().copied().collect();
                    self.stats[i].observe(&v, a.shape());
                }
            }
        }
    }
}

impl NodeHook for StatsHook<'_> {
    fn after_node(&mut self, _i: usize, node: &Node, outputs: &mut [Tensor]) -> Result<(), String> {
        for (name, t) in node.outputs.iter().zip(outputs.iter()) {
            self.see(name, t);
        }
        Ok(())
    }
}

fn bar(len: usize, msg: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({elapsed})")
    {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_message(msg.to_string());
    b
}

/// Statistics of the plan's feature tensors and of every model input.
struct Statistics {
    feature: Vec<TensorStats>,
    index: HashMap<String, usize>,
    dtypes: HashMap<String, DType>,
    inputs: Vec<(String, DType, TensorStats)>,
}

fn collect(
    session: &Session,
    model: &Model,
    plan: &Plan,
    data: &dyn SampleSource,
    opts: &Options,
) -> Result<Statistics, CalibError> {
    let mut index = HashMap::new();
    for p in plan.points.iter().filter(|p| !p.is_weight()) {
        let n = index.len();
        index.entry(p.tensor.clone()).or_insert(n);
    }
    let mut feature: Vec<TensorStats> = (0..index.len())
        .map(|_| TensorStats::new(opts.max_num_bin))
        .collect();
    let mut dtypes = HashMap::new();
    let mut inputs: Vec<(String, DType, TensorStats)> = model
        .graph
        .inputs
        .iter()
        .map(|v| {
            (
                v.name.clone(),
                v.dtype().unwrap_or(DType::F32),
                TensorStats::new(2048),
            )
        })
        .collect();
    let pb = bar(data.count(), "statistics", opts.progress);
    for k in 0..data.count() {
        let sample = data.load(k).map_err(CalibError::Data)?;
        for (name, _, st) in inputs.iter_mut() {
            if let Some(t) = sample.get(name) {
                if let Ok(a) = t.to_f32() {
                    let v: Vec<f32> = a.iter().copied().collect();
                    st.observe(&v, a.shape());
                }
            }
        }
        let mut hook = StatsHook {
            index: &index,
            stats: &mut feature,
            dtypes: &mut dtypes,
        };
        for (name, t) in &sample {
            hook.see(name, t);
        }
        session.run_with_hook(&sample, &mut hook)?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(Statistics {
        feature,
        index,
        dtypes,
        inputs,
    })
}

/// Makes thresholds usable: non-finite → f32::MAX, ≤ 0 → 1.0 (symmetric),
/// empty asymmetric range → [-1, 1]. Returns what was changed.
fn sanitize(t: &mut Thresholds) -> Option<String> {
    let mut what = None;
    if t.asymmetric {
        for v in t.values.iter_mut() {
            if !v.is_finite() {
                *v = v.signum() * f32::MAX;
                what = Some("infinite range, clamped to ±f32::MAX".to_string());
            }
        }
        for pair in t.values.chunks_mut(2) {
            if pair.len() == 2 && pair[1] - pair[0] <= 0.0 {
                pair[0] = -1.0;
                pair[1] = 1.0;
                what = Some("empty range (all-zero tensor), set to [-1, 1]".into());
            }
        }
        return what;
    }
    for v in t.values.iter_mut() {
        if !v.is_finite() {
            *v = f32::MAX;
            what = Some("infinite threshold, set to f32::MAX".into());
        } else if *v <= 0.0 {
            *v = 1.0;
            what = Some("threshold 0 (all-zero tensor), set to 1.0".into());
        }
    }
    what
}

fn consumer_name(model: &Model, p: &CalibPoint) -> String {
    p.consumers
        .first()
        .map(|(n, _)| model.graph.nodes[*n].name.clone())
        .or_else(|| {
            model
                .graph
                .producer(&p.tensor)
                .map(|n| model.graph.nodes[n].name.clone())
        })
        .unwrap_or_else(|| p.tensor.clone())
}

/// Per-output metrics of one model against float over samples (means).
fn evaluate(
    session: &Session,
    samples: &[Sample],
    reference: &[Vec<(String, Tensor)>],
    metric: &str,
) -> Result<(f64, Vec<OutputRow>), CalibError> {
    let mut rows: Vec<OutputRow> = Vec::new();
    let mut score = 0.0;
    for (s, r) in samples.iter().zip(reference) {
        let got = session.run(s)?;
        for (k, ((name, a), (_, b))) in r.iter().zip(&got).enumerate() {
            let (Ok(a), Ok(b)) = (a.to_f32(), b.to_f32()) else {
                continue;
            };
            let (a, b) = (
                a.iter().copied().collect::<Vec<_>>(),
                b.iter().copied().collect::<Vec<_>>(),
            );
            if rows.len() <= k {
                rows.push(OutputRow::new(name));
            }
            let row = &mut rows[k];
            row.cosine += metrics::cosine(&a, &b);
            row.l1 += metrics::l1_distance(&a, &b);
            row.l2 += metrics::l2_distance(&a, &b);
            row.chebyshev += metrics::chebyshev(&a, &b);
            row.metric += metrics::by_name(metric, &a, &b).unwrap_or(f64::NAN);
        }
    }
    let n = samples.len().max(1) as f64;
    for row in rows.iter_mut() {
        row.cosine /= n;
        row.l1 /= n;
        row.l2 /= n;
        row.chebyshev /= n;
        row.metric /= n;
        score += row.metric;
    }
    score /= rows.len().max(1) as f64;
    Ok((score, rows))
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

/// Calibrates the optimized float `model` under `qc` with `data`.
pub fn calibrate(
    model: &Model,
    qc: &QuantConfig,
    data: &dyn SampleSource,
    opts: &Options,
) -> Result<CalibOutcome, CalibError> {
    if data.count() == 0 {
        return Err(CalibError::Data("no calibration samples".into()));
    }
    let plan = build_plan(&model.graph, qc)?;
    let cands = candidates(&qc.model.activation)?;
    let metric = qc
        .model
        .modelwise_search
        .as_ref()
        .map(|s| s.metric.clone())
        .unwrap_or_else(|| "cosine-similarity".into());
    let mut laps = Laps::start();
    let float_session = Session::new(model)?;
    let stats = collect(&float_session, model, &plan, data, opts)?;
    laps.lap("statistics");
    let mut findings = Vec::new();

    // Keep the points on float tensors; integer tensors are never quantized.
    let mut points: Vec<CalibPoint> = plan
        .points
        .iter()
        .filter(|p| match p.kind {
            TensorKind::Weight { .. } => true,
            TensorKind::Feature => stats.dtypes.get(&p.tensor) == Some(&DType::F32),
        })
        .cloned()
        .collect();
    for p in points.iter().filter(|p| !p.is_weight()) {
        let st = &stats.feature[stats.index[&p.tensor]];
        if st.nan > 0 {
            return Err(CalibError::NaN {
                tensor: p.tensor.clone(),
                node: consumer_name(model, p),
            });
        }
    }
    let weight_percentile = qc.model.weight.max_percentile.unwrap_or(1.0);
    let weight_th: HashMap<usize, Thresholds> = points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p.kind {
            TensorKind::Weight { axis } => {
                let w = model.graph.initializer(&p.tensor)?.to_f32().ok()?;
                let v: Vec<f32> = w.iter().copied().collect();
                Some((i, weight_thresholds(&v, w.shape(), axis, weight_percentile)))
            }
            TensorKind::Feature => None,
        })
        .collect();
    let thresholds_for = |c: &Candidate| -> Vec<Thresholds> {
        points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut t = match weight_th.get(&i) {
                    Some(t) => t.clone(),
                    None => feature_thresholds(&stats.feature[stats.index[&p.tensor]], c, p.qtype),
                };
                sanitize(&mut t);
                t
            })
            .collect()
    };

    // Reference outputs of the search samples.
    let n_search = opts.search_samples.clamp(1, data.count());
    let search: Vec<Sample> = (0..n_search)
        .map(|k| data.load(k).map_err(CalibError::Data))
        .collect::<Result<_, _>>()?;
    let reference: Vec<Vec<(String, Tensor)>> = search
        .iter()
        .map(|s| float_session.run(s))
        .collect::<Result<_, _>>()?;

    let score_all = |cs: &[Candidate]| -> Result<Vec<(Scored, Vec<OutputRow>)>, CalibError> {
        let pb = bar(cs.len(), "search", opts.progress && cs.len() > 1);
        let r = cs
            .par_iter()
            .map(|c| {
                let m = insert_calibration(model, &points, &thresholds_for(c))?;
                let s = Session::new(&m)?;
                let (score, rows) = evaluate(&s, &search, &reference, &metric)?;
                pb.inc(1);
                Ok((
                    Scored {
                        candidate: *c,
                        score,
                    },
                    rows,
                ))
            })
            .collect::<Result<Vec<_>, CalibError>>();
        pb.finish_and_clear();
        r
    };
    let mut scored = score_all(&cands)?;
    let best_of = |v: &[(Scored, Vec<OutputRow>)]| -> usize {
        let mut best = 0;
        for (i, (s, _)) in v.iter().enumerate() {
            if better(&metric, s.score, v[best].0.score) {
                best = i;
            }
        }
        best
    };
    let mut best = best_of(&scored);
    if is_default_search(&qc.model.activation)
        && !scored[best].0.candidate.per_channel
        && !scored[best].0.candidate.asymmetric
        && metric == "cosine-similarity"
        && scored[best].0.score < 0.995
    {
        let mut pc = scored[best].0.candidate;
        pc.per_channel = true;
        let extra = score_all(&[pc])?;
        scored.extend(extra);
        best = best_of(&scored);
    }
    let chosen = scored[best].0.candidate;
    let mut outputs = scored[best].1.clone();
    laps.lap("search");

    // Layerwise search ("mix" or layerwise_search): per-activation
    // sensitivity, then the sensitive ones get their own best candidate (and
    // the configured qtype).
    let mut per_point: Vec<Candidate> = vec![chosen; points.len()];
    let layerwise = qc.model.layerwise_search.clone().or_else(|| {
        qc.model
            .activation
            .calibration_type
            .iter()
            .any(|t| t == "mix")
            .then(|| crate::config::quant_config::LayerwiseSearch {
                metric: metric.clone(),
                topk: None,
                qtype: None,
            })
    });
    let mut layerwise_report = Vec::new();
    if let Some(ls) = &layerwise {
        let base = thresholds_for(&chosen);
        let feature_ids: Vec<usize> = (0..points.len())
            .filter(|i| !points[*i].is_weight())
            .collect();
        let pb = bar(feature_ids.len(), "sensitivity", opts.progress);
        let sens: Vec<(usize, f64)> = feature_ids
            .par_iter()
            .map(|&i| {
                let m = insert_calibration(model, &points[i..=i], &base[i..=i])?;
                let (score, _) = evaluate(&Session::new(&m)?, &search, &reference, &ls.metric)?;
                pb.inc(1);
                Ok((i, score))
            })
            .collect::<Result<_, CalibError>>()?;
        pb.finish_and_clear();
        let mut ranked = sens.clone();
        ranked.sort_by(|a, b| {
            if better(&ls.metric, a.1, b.1) {
                std::cmp::Ordering::Greater
            } else if better(&ls.metric, b.1, a.1) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Equal
            }
        });
        let sensitive: Vec<usize> = match ls.topk {
            Some(k) => ranked.iter().take(k).map(|x| x.0).collect(),
            None => ranked
                .iter()
                .filter(|x| {
                    if metrics::higher_is_better(&ls.metric) {
                        x.1 < 0.999
                    } else {
                        true
                    }
                })
                .take(32)
                .map(|x| x.0)
                .collect(),
        };
        if let Some(q) = ls.qtype {
            for &i in &sensitive {
                points[i].qtype = q;
            }
        }
        let mut current: Vec<Thresholds> = points
            .iter()
            .enumerate()
            .map(|(i, p)| match weight_th.get(&i) {
                Some(t) => t.clone(),
                None => {
                    let mut t = feature_thresholds(
                        &stats.feature[stats.index[&p.tensor]],
                        &chosen,
                        p.qtype,
                    );
                    sanitize(&mut t);
                    t
                }
            })
            .collect();
        let all: Vec<Candidate> = if cands.len() > 1 {
            cands.clone()
        } else {
            crate::calib::candidate::default_candidates()
        };
        for &i in &sensitive {
            let st = &stats.feature[stats.index[&points[i].tensor]];
            let tries: Vec<(Candidate, f64, Vec<OutputRow>)> = all
                .par_iter()
                .map(|c| {
                    let mut th = current.clone();
                    th[i] = feature_thresholds(st, c, points[i].qtype);
                    sanitize(&mut th[i]);
                    let m = insert_calibration(model, &points, &th)?;
                    let (score, rows) = evaluate(&Session::new(&m)?, &search, &reference, &metric)?;
                    Ok((*c, score, rows))
                })
                .collect::<Result<_, CalibError>>()?;
            let mut b = 0;
            for k in 1..tries.len() {
                if better(&metric, tries[k].1, tries[b].1) {
                    b = k;
                }
            }
            per_point[i] = tries[b].0;
            current[i] = feature_thresholds(st, &tries[b].0, points[i].qtype);
            sanitize(&mut current[i]);
            outputs = tries[b].2.clone();
            let s_i = sens.iter().find(|x| x.0 == i).map_or(f64::NAN, |x| x.1);
            layerwise_report.push(format!(
                "tensor '{}' ({}; alone-quantized {} {:.6}): {}, model {} {:.6}",
                points[i].tensor, points[i].qtype, ls.metric, s_i, tries[b].0, metric, tries[b].1
            ));
        }
    }
    if layerwise.is_some() {
        laps.lap("layerwise search");
    }
    for line in layerwise_report {
        findings.push(Finding::info("layerwise-search", line));
    }

    let mut thresholds: Vec<Thresholds> = Vec::with_capacity(points.len());
    for (i, p) in points.iter().enumerate() {
        let mut raw = match weight_th.get(&i) {
            Some(t) => t.clone(),
            None => feature_thresholds(
                &stats.feature[stats.index[&p.tensor]],
                &per_point[i],
                p.qtype,
            ),
        };
        if let Some(what) = sanitize(&mut raw) {
            if !p.is_weight() {
                findings.push(Finding::warning(
                    "degenerate-threshold",
                    format!(
                        "tensor '{}' (read by '{}'): {what}",
                        p.tensor,
                        consumer_name(model, p)
                    ),
                ));
            }
        }
        thresholds.push(raw);
    }
    report::trap_findings(
        model,
        &points,
        &thresholds,
        &stats_view(&stats),
        &mut findings,
    );
    let calibrated = insert_calibration(model, &points, &thresholds)?;

    // Per-node cosine on the first calibration sample.
    let mut float_dump = ValueDump::default();
    float_session.run_with_hook(&search[0], &mut float_dump)?;
    let mut quant_dump = ValueDump::default();
    Session::new(&calibrated)?.run_with_hook(&search[0], &mut quant_dump)?;
    let nodes = report::node_rows(model, &plan, &points, &thresholds, &float_dump, &quant_dump);
    laps.lap("calibrated model and report");

    Ok(CalibOutcome {
        calibrated,
        plan,
        points,
        thresholds,
        scores: scored.into_iter().map(|(s, _)| s).collect(),
        chosen,
        metric,
        findings,
        nodes,
        outputs,
        samples: data.count(),
        timings: laps.list,
    })
}

/// Wall time of consecutive phases.
#[derive(Debug, Clone)]
pub struct Laps {
    clock: std::time::Instant,
    /// `(phase, seconds)` in order.
    pub list: Vec<(String, f64)>,
}

impl Laps {
    /// Starts the clock.
    pub fn start() -> Self {
        Laps {
            clock: std::time::Instant::now(),
            list: Vec::new(),
        }
    }

    /// Records the time since the previous lap under `name`.
    pub fn lap(&mut self, name: &str) {
        self.list
            .push((name.to_string(), self.clock.elapsed().as_secs_f64()));
        self.clock = std::time::Instant::now();
    }

    /// Restarts the clock without recording.
    pub fn restart(&mut self) {
        self.clock = std::time::Instant::now();
    }
}

/// A read-only view of the statistics for the report.
pub struct StatsView<'a> {
    /// Feature tensor → its statistics.
    pub feature: HashMap<&'a str, &'a TensorStats>,
    /// Model inputs: name, dtype, statistics.
    pub inputs: Vec<(&'a str, DType, &'a TensorStats)>,
}

fn stats_view(s: &Statistics) -> StatsView<'_> {
    StatsView {
        feature: s
            .index
            .iter()
            .map(|(k, &i)| (k.as_str(), &s.feature[i]))
            .collect(),
        inputs: s
            .inputs
            .iter()
            .map(|(n, d, st)| (n.as_str(), *d, st))
            .collect(),
    }
}
