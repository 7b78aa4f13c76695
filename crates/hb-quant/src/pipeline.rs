//! One calibration run: statistics of every quantized tensor in one
//! streaming pass over the samples, thresholds for every candidate derived
//! from those statistics, candidates scored by fake-quant simulation against
//! float, and the calibrated model with its report.

use crate::bias::{bias_correction, BiasRow};
use crate::calib::candidate::{
    candidates, feature_thresholds_from, is_default_search, needs_histogram, symmetric_threshold,
    weight_thresholds, Candidate, Method, Thresholds, UnsupportedMethod,
};
use crate::calib::observer::TensorStats;
use crate::calibrated::insert_calibration;
use crate::config::QuantConfig;
use crate::fused::SharedPoint;
use crate::plan::{build_plan, ec_ignored, CalibPoint, Plan, PlanError, TensorKind};
use crate::qtype::QType;
use crate::report::{self, Finding, NodeRow, OutputRow};
use hb_float::{FloatError, NodeHook, Session, ValueDump};
use hb_ir::{IrError, Model, Node};
use hb_tensor::{metrics, DType, Tensor};
use indicatif::ProgressBar;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

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
    /// A calibration sample could not be loaded (its message names the
    /// file: [`SampleSource::load`]). When several are bad, the statistics
    /// pass reports the first in sample order.
    #[error("{message}")]
    Sample {
        /// The sample's index.
        index: usize,
        /// The source's message.
        message: String,
    },
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
    /// Bias correction per weighted layer (empty when not configured).
    pub bias_correction: Vec<BiasRow>,
    /// Dtype and shape of the calibrated model's values (inputs, node
    /// outputs) as the float run of the first sample gave them; the output
    /// of a calibration node as its input. Tells the lowering the shapes
    /// without another run.
    pub value_infos: HashMap<String, (DType, Vec<usize>)>,
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

/// Statistics and a full value dump in one run (calibration sample 0).
struct StatsAndDump<'a, 'b> {
    stats: StatsHook<'a>,
    dump: &'b mut ValueDump,
}

impl NodeHook for StatsAndDump<'_, '_> {
    fn after_node(&mut self, i: usize, node: &Node, outputs: &mut [Tensor]) -> Result<(), String> {
        self.stats.after_node(i, node, outputs)
    }

    fn after_store(
        &mut self,
        i: usize,
        node: &Node,
        outputs: &[Option<std::sync::Arc<Tensor>>],
    ) -> Result<(), String> {
        self.dump.after_store(i, node, outputs)
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

/// What the statistics pass produced: the statistics, plus what later
/// phases would otherwise recompute: the first `n_search` samples with
/// their float outputs (the search's reference) and every float value of
/// sample 0 (the per-node report).
struct Collected {
    stats: Statistics,
    search: Vec<Sample>,
    reference: Vec<Vec<(String, Tensor)>>,
    float_dump: ValueDump,
}

/// A kept sample: its index, inputs and float outputs.
type Kept = (usize, Sample, Vec<(String, Tensor)>);

/// One worker's share of the statistics pass.
struct Shard {
    feature: Vec<TensorStats>,
    dtypes: HashMap<String, DType>,
    inputs: Vec<TensorStats>,
    kept: Vec<Kept>,
    dump: Option<ValueDump>,
    /// The sample this worker failed on, and why (it then stops).
    failed: Option<(usize, CalibError)>,
}

/// The statistics pass: samples are taken from a shared counter by one
/// worker per thread, each worker streams its samples into its own
/// statistics (fixed memory per tensor), and the workers' statistics are
/// merged at the end (exact: [`TensorStats::merge`]). Memory does not grow
/// with the number of samples: at any time each worker holds one sample
/// (plus the first `n_search`, kept for the search).
///
/// Samples are read (and checked by the source) here, not in a pass of
/// their own. A worker that fails on sample k stops and the others take no
/// new sample; every sample before k was already taken and is finished, so
/// the error returned is that of the first bad sample in order, as a
/// sequential pass would report.
fn collect(
    session: &Session,
    model: &Model,
    plan: &Plan,
    data: &dyn SampleSource,
    opts: &Options,
    needs: Needs,
    n_search: usize,
) -> Result<Collected, CalibError> {
    let mut index = HashMap::new();
    for p in plan.points.iter().filter(|p| !p.is_weight()) {
        let n = index.len();
        index.entry(p.tensor.clone()).or_insert(n);
    }
    // Tensors that only reach a Softmax treat moderate negative values
    // (additive masks of -1e4) as masks (crate::masks).
    let bound = crate::masks::softmax_bound_tensors(&model.graph);
    let mut mask_limits = vec![crate::masks::MASK_LIMIT; index.len()];
    for (t, &i) in &index {
        if bound.contains(t) {
            mask_limits[i] = crate::masks::SOFTMAX_MASK_LIMIT;
        }
    }
    let new_stats = |i: usize| {
        let s = if needs.bins {
            TensorStats::new(opts.max_num_bin)
        } else {
            TensorStats::without_histogram(opts.max_num_bin)
        };
        let s = if needs.channels {
            s
        } else {
            s.without_channels()
        };
        // Only model inputs are reported as constant across samples.
        s.with_mask_limit(mask_limits[i]).without_constant_check()
    };
    let input_names: Vec<(String, DType)> = model
        .graph
        .inputs
        .iter()
        .map(|v| (v.name.clone(), v.dtype().unwrap_or(DType::F32)))
        .collect();
    let count = data.count();
    let workers = rayon::current_num_threads().clamp(1, count.max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let pb = bar(count, "statistics", opts.progress);
    let one = |k: usize, shard: &mut Shard| -> Result<(), CalibError> {
        let sample = data
            .load(k)
            .map_err(|message| CalibError::Sample { index: k, message })?;
        for ((name, _), st) in input_names.iter().zip(shard.inputs.iter_mut()) {
            if let Some(t) = sample.get(name) {
                if let Ok(a) = t.to_f32() {
                    let a = a.as_standard_layout();
                    if let Some(v) = a.as_slice() {
                        st.observe(v, a.shape());
                    }
                }
            }
        }
        let mut hook = StatsHook {
            index: &index,
            stats: &mut shard.feature,
            dtypes: &mut shard.dtypes,
        };
        for (name, t) in &sample {
            hook.see(name, t);
        }
        let outputs = if k == 0 {
            let mut dump = ValueDump::default();
            let out = session.run_with_hook(
                &sample,
                &mut StatsAndDump {
                    stats: hook,
                    dump: &mut dump,
                },
            )?;
            shard.dump = Some(dump);
            out
        } else {
            session.run_with_hook(&sample, &mut hook)?
        };
        if k < n_search {
            shard.kept.push((k, sample, outputs));
        }
        pb.inc(1);
        Ok(())
    };
    let work_serially = || -> Shard {
        let mut shard = Shard {
            feature: (0..index.len()).map(new_stats).collect(),
            dtypes: HashMap::new(),
            inputs: input_names.iter().map(|_| TensorStats::new(2048)).collect(),
            kept: Vec::new(),
            dump: None,
            failed: None,
        };
        while !stop.load(Ordering::Relaxed) {
            let k = next.fetch_add(1, Ordering::Relaxed);
            if k >= count {
                break;
            }
            if let Err(e) = one(k, &mut shard) {
                shard.failed = Some((k, e));
                stop.store(true, Ordering::Relaxed);
                break;
            }
        }
        shard
    };
    // One sample per worker: each kernel stays whole on its worker's
    // thread (hb_float::threads) when there are two or more workers.
    let work = |_w: usize| -> Shard {
        if workers > 1 {
            hb_float::threads::serial_kernels(work_serially)
        } else {
            work_serially()
        }
    };
    let mut shards: Vec<Shard> = (0..workers).into_par_iter().map(work).collect();
    pb.finish_and_clear();
    if let Some((_, e)) = shards
        .iter_mut()
        .filter_map(|sh| sh.failed.take())
        .min_by_key(|(k, _)| *k)
    {
        return Err(e);
    }
    // Merged into the first shard's statistics (fresh ones would allocate
    // and zero a histogram per tensor only to be replaced).
    let mut feature: Vec<TensorStats> = Vec::new();
    let mut input_stats: Vec<TensorStats> = Vec::new();
    let mut dtypes = HashMap::new();
    let mut kept = Vec::new();
    let mut float_dump = ValueDump::default();
    for (k, sh) in shards.into_iter().enumerate() {
        if k == 0 {
            (feature, input_stats) = (sh.feature, sh.inputs);
        } else {
            for (a, b) in feature.iter_mut().zip(sh.feature) {
                a.merge(b);
            }
            for (a, b) in input_stats.iter_mut().zip(sh.inputs) {
                a.merge(b);
            }
        }
        for (k, v) in sh.dtypes {
            dtypes.entry(k).or_insert(v);
        }
        kept.extend(sh.kept);
        if let Some(d) = sh.dump {
            float_dump = d;
        }
    }
    let inputs: Vec<(String, DType, TensorStats)> = input_names
        .iter()
        .zip(input_stats)
        .map(|((n, d), st)| (n.clone(), *d, st))
        .collect();
    kept.sort_by_key(|k| k.0);
    let (search, reference) = kept.into_iter().map(|(_, s, o)| (s, o)).unzip();
    Ok(Collected {
        stats: Statistics {
            feature,
            index,
            dtypes,
            inputs,
        },
        search,
        reference,
        float_dump,
    })
}

/// Symmetric thresholds per (statistics index, method, qtype), computed once
/// (KL and MSE scan the histogram; every candidate, the layerwise search and
/// the final model share the results). Filled in parallel up front.
struct ThresholdCache<'a> {
    stats: &'a [TensorStats],
    map: Mutex<HashMap<(usize, String, QType), f64>>,
}

impl<'a> ThresholdCache<'a> {
    fn new(stats: &'a [TensorStats]) -> Self {
        ThresholdCache {
            stats,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn key(i: usize, m: Method, q: QType) -> (usize, String, QType) {
        (i, m.to_string(), q)
    }

    /// Computes every missing `(index, method, qtype)` in parallel.
    fn fill(&self, jobs: &[(usize, Method, QType)]) {
        let todo: Vec<(usize, Method, QType)> = {
            let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            let mut seen = std::collections::HashSet::new();
            jobs.iter()
                .filter(|(i, m, q)| {
                    let k = Self::key(*i, *m, *q);
                    !map.contains_key(&k) && seen.insert(k)
                })
                .copied()
                .collect()
        };
        let done: Vec<((usize, String, QType), f64)> = todo
            .par_iter()
            .map(|&(i, m, q)| {
                (
                    Self::key(i, m, q),
                    symmetric_threshold(&self.stats[i], m, q),
                )
            })
            .collect();
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(done);
    }

    fn get(&self, i: usize, m: Method, q: QType) -> f64 {
        let k = Self::key(i, m, q);
        if let Some(v) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&k) {
            return *v;
        }
        let v = symmetric_threshold(&self.stats[i], m, q);
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(k, v);
        v
    }
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

/// Per-value cosines of sample 0's fake-quant run against its float run
/// (the per-node table), by value name.
type NodeCosineMap = HashMap<String, Option<f64>>;

/// A scored candidate: its score, its per-output rows and (when measured)
/// its per-node cosines on sample 0.
type Evaluated = (Scored, Vec<OutputRow>, Option<NodeCosineMap>);

/// Per-output metrics of one model against float over samples (means).
/// With `node_float` (sample 0's float values), sample 0's run also
/// measures every node's cosine for the per-node table.
fn evaluate(
    session: &Session,
    samples: &[Sample],
    reference: &[Vec<(String, Tensor)>],
    metric: &str,
    node_float: Option<&ValueDump>,
) -> Result<(f64, Vec<OutputRow>, Option<NodeCosineMap>), CalibError> {
    let mut rows: Vec<OutputRow> = Vec::new();
    let mut score = 0.0;
    // Samples in parallel, each kernel whole on its thread (when there is
    // more than one sample to share the threads).
    type Run = (Vec<(String, Tensor)>, Option<NodeCosineMap>);
    let run = |k: usize, s: &Sample| -> Result<Run, FloatError> {
        match node_float.filter(|_| k == 0) {
            Some(float) => {
                let mut cosines = report::NodeCosines::new(float);
                let out = session.run_with_hook(s, &mut cosines)?;
                Ok((out, Some(cosines.cosines)))
            }
            None => Ok((session.run(s)?, None)),
        }
    };
    let runs: Vec<Run> = samples
        .par_iter()
        .enumerate()
        .map(|(k, s)| {
            if samples.len() > 1 {
                hb_float::threads::serial_kernels(|| run(k, s))
            } else {
                run(k, s)
            }
        })
        .collect::<Result<_, _>>()?;
    let (runs, cosines): (Vec<_>, Vec<_>) = runs.into_iter().unzip();
    let node_cosines = cosines.into_iter().flatten().next();
    for (got, r) in runs.into_iter().zip(reference) {
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
    Ok((score, rows, node_cosines))
}

/// Index of the best-scoring entry of `scored` under `metric` (the first
/// of equals).
fn best_index(metric: &str, scored: &[Evaluated]) -> usize {
    let mut best = 0;
    for (i, (s, ..)) in scored.iter().enumerate() {
        if better(metric, s.score, scored[best].0.score) {
            best = i;
        }
    }
    best
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

/// True when `score` meets the `modelwise_search.similarity` target.
fn reaches(metric: &str, score: f64, target: f64) -> bool {
    if metrics::higher_is_better(metric) {
        score >= target
    } else {
        score <= target
    }
}

/// The statistics pass of a calibration, kept so that several
/// calibrations of the same model and data (different qtypes per node, one
/// fixed method) can skip it: [`collect_statistics`] then
/// [`calibrate_with`] for each quant_config. The statistics of a tensor do
/// not depend on its qtype, so one pass serves every config whose feature
/// tensors it covers (promoting nodes to int16, `ec`, float16 do not add
/// tensors).
pub struct CalibStats {
    stats: Statistics,
    search: Vec<Sample>,
    reference: Vec<Vec<(String, Tensor)>>,
    float_dump: ValueDump,
    needs: Needs,
    seconds: f64,
}

/// What of the statistics a config's calibration reads beyond extremes and
/// counts.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Needs {
    /// The |x| histogram's bins: percentile / KL / MSE candidates and the
    /// layerwise search (which tries every method).
    bins: bool,
    /// Per-channel extremes: per-channel candidates, the default search
    /// (which may add a per-channel candidate) and the layerwise search.
    channels: bool,
}

impl Needs {
    fn of(qc: &QuantConfig) -> Result<Self, CalibError> {
        let cands = candidates(&qc.model.activation)?;
        let (_, _, layerwise) = search_settings(qc);
        Ok(Needs {
            bins: layerwise.is_some() || cands.iter().any(|c| needs_histogram(c.method)),
            channels: layerwise.is_some()
                || is_default_search(&qc.model.activation)
                || cands.iter().any(|c| c.per_channel),
        })
    }
}

impl CalibStats {
    /// The search samples kept by the pass (the first `search_samples`).
    pub fn search_samples(&self) -> &[Sample] {
        &self.search
    }

    /// The float outputs of the search samples.
    pub fn reference(&self) -> &[Vec<(String, Tensor)>] {
        &self.reference
    }
}

fn search_settings(
    qc: &QuantConfig,
) -> (
    String,
    Option<f64>,
    Option<crate::config::quant_config::LayerwiseSearch>,
) {
    let metric = qc
        .model
        .modelwise_search
        .as_ref()
        .map(|s| s.metric.clone())
        .unwrap_or_else(|| "cosine-similarity".into());
    let target = qc
        .model
        .modelwise_search
        .as_ref()
        .and_then(|s| s.similarity);
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
    (metric, target, layerwise)
}

/// The statistics pass of [`calibrate`] for `model` under `qc`.
pub fn collect_statistics(
    model: &Model,
    qc: &QuantConfig,
    data: &dyn SampleSource,
    opts: &Options,
) -> Result<CalibStats, CalibError> {
    if data.count() == 0 {
        return Err(CalibError::Data("no calibration samples".into()));
    }
    let clock = std::time::Instant::now();
    let plan = build_plan(&model.graph, qc)?;
    let needs = Needs::of(qc)?;
    let float_session = Session::new(model)?;
    let n_search = opts.search_samples.clamp(1, data.count());
    let Collected {
        stats,
        search,
        reference,
        float_dump,
    } = collect(&float_session, model, &plan, data, opts, needs, n_search)?;
    Ok(CalibStats {
        stats,
        search,
        reference,
        float_dump,
        needs,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// Calibrates the optimized float `model` under `qc` with `data`.
pub fn calibrate(
    model: &Model,
    qc: &QuantConfig,
    data: &dyn SampleSource,
    opts: &Options,
) -> Result<CalibOutcome, CalibError> {
    Ok(calibrate_alongside(model, qc, data, opts, |_| ())?.0)
}

/// [`calibrate`], running `alongside` on the finished calibration (every
/// field but the per-node table, which is computed at the same time on
/// another thread) and returning its result too: e.g. lowering the
/// calibrated model while the report runs.
pub fn calibrate_alongside<R: Send>(
    model: &Model,
    qc: &QuantConfig,
    data: &dyn SampleSource,
    opts: &Options,
    alongside: impl FnOnce(&CalibOutcome) -> R + Send,
) -> Result<(CalibOutcome, R), CalibError> {
    let stats = collect_statistics(model, qc, data, opts)?;
    calibrate_with_alongside(model, qc, &stats, data, opts, alongside)
}

/// Calibrates `model` under `qc` with the statistics of an earlier pass
/// over `data` ([`collect_statistics`], possibly under another config of
/// the same model): gives exactly what [`calibrate`] gives. Errors when the
/// statistics do not cover a tensor `qc` quantizes, or lack the histogram
/// or the per-channel extremes `qc` needs.
pub fn calibrate_with(
    model: &Model,
    qc: &QuantConfig,
    collected: &CalibStats,
    data: &dyn SampleSource,
    opts: &Options,
) -> Result<CalibOutcome, CalibError> {
    Ok(calibrate_with_alongside(model, qc, collected, data, opts, |_| ())?.0)
}

/// [`calibrate_with`] with a task run alongside the per-node report (see
/// [`calibrate_alongside`]).
pub fn calibrate_with_alongside<R: Send>(
    model: &Model,
    qc: &QuantConfig,
    collected: &CalibStats,
    data: &dyn SampleSource,
    opts: &Options,
    alongside: impl FnOnce(&CalibOutcome) -> R + Send,
) -> Result<(CalibOutcome, R), CalibError> {
    if data.count() == 0 {
        return Err(CalibError::Data("no calibration samples".into()));
    }
    let plan = build_plan(&model.graph, qc)?;
    let cands = candidates(&qc.model.activation)?;
    let (metric, target, layerwise) = search_settings(qc);
    let needs = Needs::of(qc)?;
    if needs.bins && !collected.needs.bins {
        return Err(CalibError::Data(
            "the statistics were collected without histograms, which this config needs".into(),
        ));
    }
    if needs.channels && !collected.needs.channels {
        return Err(CalibError::Data(
            "the statistics were collected without per-channel extremes, which this config needs"
                .into(),
        ));
    }
    let CalibStats {
        stats,
        search,
        reference,
        float_dump,
        ..
    } = collected;
    for p in plan.points.iter().filter(|p| !p.is_weight()) {
        if !stats.index.contains_key(&p.tensor) {
            return Err(CalibError::Data(format!(
                "the statistics do not cover tensor '{}'",
                p.tensor
            )));
        }
    }
    let mut laps = Laps::start();
    laps.list
        .push(("statistics".to_string(), collected.seconds));
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
    let cache = ThresholdCache::new(&stats.feature);
    let fill = |cs: &[Candidate], pts: &[CalibPoint]| {
        let jobs: Vec<(usize, Method, QType)> = cs
            .iter()
            .filter(|c| needs_histogram(c.method))
            .flat_map(|c| {
                pts.iter()
                    .filter(|p| !p.is_weight())
                    .map(|p| (stats.index[&p.tensor], c.method, p.qtype))
            })
            .collect();
        cache.fill(&jobs);
    };
    fill(&cands, &points);
    // Divisors (Div input1, Reciprocal) and the statistics they are made of
    // (a decomposed LayerNorm's variance chain) keep their max: clipping a
    // divisor scales up every element it divides (docs/quantization.md).
    // Outputs of bounded ops (Sigmoid, Softmax, Tanh, ...) keep it too.
    let statistics = crate::ops::divisor_statistics(&model.graph);
    let bounded = crate::ops::bounded_outputs(&model.graph);
    let divisors: std::collections::HashSet<String> = points
        .iter()
        .filter(|p| {
            !p.is_weight() && (statistics.contains(&p.tensor) || bounded.contains(&p.tensor))
        })
        .map(|p| p.tensor.clone())
        .collect();
    let feature_th = |p: &CalibPoint, c: &Candidate| -> Thresholds {
        let i = stats.index[&p.tensor];
        // Asymmetric quantization is for int8 (uint8 with a zero point):
        // the integer machine has no asymmetric uint16, so int16 points stay
        // symmetric (docs/integer-semantics.md §1).
        let symmetric;
        let c = if c.asymmetric && p.qtype == QType::Int16 {
            symmetric = Candidate {
                asymmetric: false,
                ..*c
            };
            &symmetric
        } else {
            c
        };
        if divisors.contains(&p.tensor) && needs_histogram(c.method) {
            let mut t =
                feature_thresholds_from(&stats.feature[i], c, cache.get(i, Method::Max, p.qtype));
            let why = if statistics.contains(&p.tensor) {
                "divisor"
            } else {
                "bounded"
            };
            t.method = format!("max ({why}; candidate {c})");
            return t;
        }
        feature_thresholds_from(&stats.feature[i], c, cache.get(i, c.method, p.qtype))
    };
    // A Relu / Clip input takes its output's thresholds (one quantization
    // for the fused pair, docs/quantization.md "Fused activations").
    let mut shared = crate::fused::shared_points(&model.graph, &points);
    let thresholds_for = |c: &Candidate, pts: &[CalibPoint], shared: &[SharedPoint]| {
        let mut th: Vec<Thresholds> = pts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut t = match weight_th.get(&i) {
                    Some(t) => t.clone(),
                    None => feature_th(p, c),
                };
                sanitize(&mut t);
                t
            })
            .collect();
        let _ = crate::fused::apply(shared, &mut th);
        th
    };

    // Each candidate's run of sample 0 also measures the per-node cosines,
    // so the report need not run the chosen model again.
    let score_one = |c: &Candidate| -> Result<Evaluated, CalibError> {
        let m = insert_calibration(model, &points, &thresholds_for(c, &points, &shared))?;
        let s = Session::new(&m)?;
        let (score, rows, node_cosines) =
            evaluate(&s, search, reference, &metric, Some(float_dump))?;
        Ok((
            Scored {
                candidate: *c,
                score,
            },
            rows,
            node_cosines,
        ))
    };
    let score_all = |cs: &[Candidate]| -> Result<Vec<Evaluated>, CalibError> {
        let pb = bar(cs.len(), "search", opts.progress && cs.len() > 1);
        let r = match target {
            // modelwise_search.similarity: candidates in order (samples in
            // parallel), stopping at the first that reaches the target.
            Some(t) => {
                let mut out = Vec::new();
                for c in cs {
                    let r = score_one(c)?;
                    pb.inc(1);
                    let done = reaches(&metric, r.0.score, t);
                    out.push(r);
                    if done {
                        break;
                    }
                }
                Ok(out)
            }
            None => cs
                .par_iter()
                .map(|c| {
                    let r = score_one(c);
                    pb.inc(1);
                    r
                })
                .collect::<Result<Vec<_>, CalibError>>(),
        };
        pb.finish_and_clear();
        r
    };
    // With one candidate and nothing after the choice that reads scores (no
    // modelwise target, no layerwise search, no bias correction), the
    // calibrated model is known now: it is scored for the report while
    // `alongside` takes it (below), not in a search phase of its own.
    let decided = cands.len() == 1
        && target.is_none()
        && layerwise.is_none()
        && qc.model.weight.bias_correction.is_none()
        && !is_default_search(&qc.model.activation);
    let mut scored: Vec<Evaluated> = Vec::new();
    let (chosen, mut outputs, mut node_cosines) = if decided {
        (cands[0], Vec::new(), None)
    } else {
        scored = score_all(&cands)?;
        let mut best = best_index(&metric, &scored);
        let target_met = target.is_some_and(|t| reaches(&metric, scored[best].0.score, t));
        if let Some(t) = target {
            let msg = if target_met {
                format!(
                    "{metric} target {t} reached by candidate '{}' ({:.6}) after {} of {} candidates; the others were not scored",
                    scored[best].0.candidate,
                    scored[best].0.score,
                    scored.len(),
                    cands.len()
                )
            } else {
                format!(
                    "{metric} target {t} not reached by any of the {} candidates; best '{}' ({:.6})",
                    cands.len(),
                    scored[best].0.candidate,
                    scored[best].0.score
                )
            };
            findings.push(Finding::info("modelwise-search", msg));
        }
        if is_default_search(&qc.model.activation)
            && !target_met
            && !scored[best].0.candidate.per_channel
            && !scored[best].0.candidate.asymmetric
            && metric == "cosine-similarity"
            && scored[best].0.score < 0.995
        {
            let mut pc = scored[best].0.candidate;
            pc.per_channel = true;
            let extra = score_all(&[pc])?;
            scored.extend(extra);
            best = best_index(&metric, &scored);
        }
        laps.lap("search");
        // The node cosines are valid while the calibrated model is the chosen
        // candidate's.
        (
            scored[best].0.candidate,
            scored[best].1.clone(),
            scored[best].2.take(),
        )
    };

    // Layerwise search ("mix" or layerwise_search): per-activation
    // sensitivity, then the sensitive ones get their own best candidate (and
    // the configured qtype).
    let mut per_point: Vec<Candidate> = vec![chosen; points.len()];
    let mut layerwise_report = Vec::new();
    if let Some(ls) = &layerwise {
        let base = thresholds_for(&chosen, &points, &shared);
        let feature_ids: Vec<usize> = (0..points.len())
            .filter(|i| !points[*i].is_weight())
            .collect();
        let pb = bar(feature_ids.len(), "sensitivity", opts.progress);
        let sens: Vec<(usize, f64)> = feature_ids
            .par_iter()
            .map(|&i| {
                let m = insert_calibration(model, &points[i..=i], &base[i..=i])?;
                let (score, ..) =
                    evaluate(&Session::new(&m)?, search, reference, &ls.metric, None)?;
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
            shared = crate::fused::shared_points(&model.graph, &points);
        }
        let all: Vec<Candidate> = if cands.len() > 1 {
            cands.clone()
        } else {
            crate::calib::candidate::default_candidates()
        };
        fill(&all, &points);
        let mut current: Vec<Thresholds> = thresholds_for(&chosen, &points, &shared);
        for &i in &sensitive {
            let tries: Vec<(Candidate, f64, Vec<OutputRow>)> = all
                .par_iter()
                .map(|c| {
                    let mut th = current.clone();
                    th[i] = feature_th(&points[i], c);
                    sanitize(&mut th[i]);
                    let _ = crate::fused::apply(&shared, &mut th);
                    let m = insert_calibration(model, &points, &th)?;
                    let (score, rows, _) =
                        evaluate(&Session::new(&m)?, search, reference, &metric, None)?;
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
            current[i] = feature_th(&points[i], &tries[b].0);
            sanitize(&mut current[i]);
            let _ = crate::fused::apply(&shared, &mut current);
            outputs = tries[b].2.clone();
            let s_i = sens.iter().find(|x| x.0 == i).map_or(f64::NAN, |x| x.1);
            layerwise_report.push(format!(
                "tensor '{}' ({}; alone-quantized {} {:.6}): {}, model {} {:.6}",
                points[i].tensor, points[i].qtype, ls.metric, s_i, tries[b].0, metric, tries[b].1
            ));
        }
    }
    if layerwise.is_some() {
        // Points may have taken other candidates or qtypes.
        node_cosines = None;
        laps.lap("layerwise search");
    }
    for line in layerwise_report {
        findings.push(Finding::info("layerwise-search", line));
    }

    let mut thresholds: Vec<Thresholds> = Vec::with_capacity(points.len());
    for (i, p) in points.iter().enumerate() {
        let mut raw = match weight_th.get(&i) {
            Some(t) => t.clone(),
            None => feature_th(p, &per_point[i]),
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
    let fused = crate::fused::apply(&shared, &mut thresholds);
    if !fused.is_empty() {
        let mut names: Vec<&str> = fused.iter().map(|&i| points[i].tensor.as_str()).collect();
        names.sort_unstable();
        findings.push(Finding::info(
            "fused-activation",
            format!(
                "{} Relu / Clip input(s) take their output's thresholds (the fused pair is one quantization): {}",
                names.len(),
                names.join(", ")
            ),
        ));
    }
    report::trap_findings(
        model,
        &points,
        &thresholds,
        &stats_view(stats),
        &mut findings,
    );
    report::guard_findings(model, &plan, &points, &thresholds, &mut findings);
    ec_findings(model, &plan, &points, &mut findings);
    if !divisors.is_empty() && per_point.iter().any(|c| needs_histogram(c.method)) {
        let mut names: Vec<&str> = divisors.iter().map(String::as_str).collect();
        names.sort_unstable();
        findings.push(Finding::info(
            "divisor-max",
            format!(
                "{} tensor(s) read as a divisor (Div input1, Reciprocal), feeding one as a statistic (variance chain) or produced by a bounded op (Sigmoid, Softmax, Tanh, Erf, HardSigmoid) keep their max threshold instead of {}: {}",
                names.len(),
                chosen.method,
                names.join(", ")
            ),
        ));
    }
    let mut calibrated = insert_calibration(model, &points, &thresholds)?;

    // bias_correction: per weighted layer, in graph order, on the first
    // `num_sample` calibration samples.
    let mut bias_rows = Vec::new();
    if let Some(bc) = &qc.model.weight.bias_correction {
        let n = bc.num_sample.max(1).min(data.count());
        let mut samples: Vec<Sample> = search.iter().take(n).cloned().collect();
        for k in samples.len()..n {
            samples.push(
                data.load(k)
                    .map_err(|message| CalibError::Sample { index: k, message })?,
            );
        }
        let (corrected, rows) =
            bias_correction(model, &plan, &points, &calibrated, &samples, &bc.metric)?;
        let kept = rows.iter().filter(|r| r.kept).count();
        findings.push(Finding::info(
            "bias-correction",
            format!(
                "bias_correction on {n} sample(s) ({}): {kept} of {} weighted layers corrected",
                bc.metric,
                rows.len()
            ),
        ));
        if kept > 0 {
            calibrated = corrected;
            let (_, rows, cosines) = evaluate(
                &Session::new(&calibrated)?,
                search,
                reference,
                &metric,
                Some(float_dump),
            )?;
            outputs = rows;
            node_cosines = cosines;
        }
        bias_rows = rows;
        laps.lap("bias correction");
    }

    let mut outcome = CalibOutcome {
        calibrated,
        plan,
        points,
        thresholds,
        scores: scored.into_iter().map(|(s, ..)| s).collect(),
        chosen,
        metric,
        findings,
        nodes: Vec::new(),
        outputs,
        samples: data.count(),
        timings: Vec::new(),
        bias_correction: bias_rows,
        value_infos: HashMap::new(),
    };
    outcome.value_infos = value_infos(&outcome.calibrated, &search[0], float_dump);
    // Per-node cosine on the first calibration sample (its float values
    // were kept by the statistics pass), while `alongside` runs. The
    // search's run of the chosen candidate measured them unless the model
    // changed after it (layerwise search).
    type Report = (Option<(f64, Vec<OutputRow>)>, Vec<NodeRow>);
    let (report, beside) = rayon::join(
        || -> Result<Report, CalibError> {
            let o = &outcome;
            let mut scored_here = None;
            if decided {
                let session = Session::new(&o.calibrated)?;
                let (score, rows, cosines) =
                    evaluate(&session, search, reference, &o.metric, Some(float_dump))?;
                scored_here = Some((score, rows));
                node_cosines = cosines;
            }
            let cosines = match node_cosines {
                Some(c) => c,
                None => {
                    let mut cosines = report::NodeCosines::new(float_dump);
                    // Beside the lowering: the kernels stay on this thread.
                    let session = Session::new(&o.calibrated)?;
                    hb_float::threads::serial_kernels(|| {
                        session.run_with_hook(&search[0], &mut cosines)
                    })?;
                    cosines.cosines
                }
            };
            let rows = report::node_rows(model, &o.plan, &o.points, &o.thresholds, &cosines);
            Ok((scored_here, rows))
        },
        || alongside(&outcome),
    );
    let (scored_here, nodes) = report?;
    if let Some((score, rows)) = scored_here {
        outcome.scores = vec![Scored {
            candidate: chosen,
            score,
        }];
        outcome.outputs = rows;
    }
    outcome.nodes = nodes;
    laps.lap("calibrated model and report");
    outcome.timings = laps.list;
    Ok((outcome, beside))
}

/// Dtype and shape of `calibrated`'s values from the float run of
/// `sample` (`dump`): the inputs, every float node's outputs, and each
/// calibration node's output as its input (value or initializer).
fn value_infos(
    calibrated: &Model,
    sample: &Sample,
    dump: &ValueDump,
) -> HashMap<String, (DType, Vec<usize>)> {
    let info = |t: &Tensor| (t.dtype(), t.shape().to_vec());
    let mut out: HashMap<String, (DType, Vec<usize>)> = sample
        .iter()
        .map(|(name, t)| (name.clone(), info(t)))
        .chain(
            dump.values
                .iter()
                .map(|(_, name, t)| (name.clone(), info(t))),
        )
        .collect();
    let g = &calibrated.graph;
    for n in g
        .nodes
        .iter()
        .filter(|n| crate::calibrated::is_calibration(n))
    {
        let (Some(x), Some(y)) = (n.inputs.first(), n.outputs.first()) else {
            continue;
        };
        let known = out.get(x).cloned().or_else(|| g.initializer(x).map(info));
        if let Some(v) = known {
            out.insert(y.clone(), v);
        }
    }
    out
}

/// What error compensation does in this calibration: the ec tensors (info)
/// and `ec` requests on inputs it does not apply to (warning, plain int8).
fn ec_findings(model: &Model, plan: &Plan, points: &[CalibPoint], out: &mut Vec<Finding>) {
    let ec: Vec<String> = points
        .iter()
        .filter(|p| p.ec)
        .map(|p| {
            let kind = if p.is_weight() { "weight" } else { "feature" };
            format!("'{}' ({kind})", p.tensor)
        })
        .collect();
    if !ec.is_empty() {
        out.push(Finding::info(
            "ec",
            format!(
                "error compensation on {} tensor(s): {} — simulated as int8 refined 256× (hi·256 + lo, two int8 terms; int16 precision over the int8 range)",
                ec.len(),
                ec.join(", ")
            ),
        ));
    }
    for (i, k) in ec_ignored(&model.graph, plan) {
        out.push(Finding::warning(
            "ec-ignored",
            format!(
                "node '{}' ({}) input{k}: ec applies only to Conv/ConvTranspose/MatMul/Gemm input1 and Resize/GridSample input0; quantized as plain int8",
                model.graph.nodes[i].name, model.graph.nodes[i].op_type
            ),
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use hb_ir::{Graph, Node, ValueInfo};
    use std::sync::Arc;

    /// x [1, 4, 3, 3] → 1×1 Conv (2 output channels) → y.
    fn conv_model() -> Model {
        let mut g = Graph {
            name: "g".into(),
            ..Default::default()
        };
        g.inputs
            .push(ValueInfo::tensor("x", DType::F32, &[1, 4, 3, 3]));
        g.outputs
            .push(ValueInfo::tensor("y", DType::F32, &[1, 2, 3, 3]));
        let w: Vec<f32> = (0..8).map(|i| (i as f32 * 0.7).sin()).collect();
        g.initializers.insert(
            "w".into(),
            Arc::new(Tensor::from_f32(&[2, 4, 1, 1], w).expect("weight")),
        );
        g.nodes.push(Node::new("conv", "Conv", &["x", "w"], &["y"]));
        Model {
            ir_version: 7,
            opsets: [(String::new(), 13)].into(),
            graph: g,
            ..Default::default()
        }
    }

    /// Three samples whose channels have different ranges.
    struct Samples;

    impl SampleSource for Samples {
        fn count(&self) -> usize {
            3
        }
        fn load(&self, k: usize) -> Result<Sample, String> {
            let v: Vec<f32> = (0..36)
                .map(|i| ((i + 7 * k) as f32 * 0.37).cos() * (1 + i / 9) as f32)
                .collect();
            let t = Tensor::from_f32(&[1, 4, 3, 3], v).map_err(|e| e.to_string())?;
            Ok([("x".to_string(), t)].into())
        }
    }

    fn config(types: &[&str], per_channel: &[bool]) -> QuantConfig {
        let mut qc = QuantConfig::default();
        qc.model.activation.calibration_type = types.iter().map(|t| t.to_string()).collect();
        qc.model.activation.per_channel = per_channel.to_vec();
        qc
    }

    #[test]
    fn per_channel_extremes_are_kept_only_when_a_candidate_reads_them() {
        let needs = |t: &[&str], pc: &[bool]| Needs::of(&config(t, pc)).expect("needs");
        assert!(!needs(&["max"], &[]).channels);
        assert!(!needs(&["max"], &[]).bins);
        assert!(needs(&["max"], &[true]).channels);
        assert!(needs(&[], &[]).channels);
        assert!(needs(&["mix"], &[]).channels);
        assert!(needs(&["kl"], &[]).bins && !needs(&["kl"], &[]).channels);
    }

    /// The same sample again and again.
    struct Repeated;

    impl SampleSource for Repeated {
        fn count(&self) -> usize {
            3
        }
        fn load(&self, _k: usize) -> Result<Sample, String> {
            Samples.load(0)
        }
    }

    /// A calibration input identical in every sample is reported (model
    /// inputs only: feature statistics skip the check and keep no copy of
    /// the first sample); one that varies is not.
    #[test]
    fn a_constant_input_is_reported_and_a_varying_one_is_not() {
        let (model, opts, qc) = (conv_model(), Options::default(), config(&["max"], &[]));
        let constant = |data: &dyn SampleSource| {
            calibrate(&model, &qc, data, &opts)
                .expect("calibrate")
                .findings
                .iter()
                .any(|f| f.kind == "constant-input")
        };
        assert!(constant(&Repeated));
        assert!(!constant(&Samples));
        let stats = collect_statistics(&model, &qc, &Repeated, &opts).expect("statistics");
        assert!(stats.stats.feature.iter().all(|s| !s.constant));
        assert!(stats.stats.inputs.iter().all(|(_, _, s)| s.constant));
    }

    /// x → Conv → y → Relu → a → Conv → z: `y` takes `a`'s thresholds, the
    /// log says so, and the pair is one quantization — switching `y`'s
    /// calibration node OFF changes no output bit, while `y` on a grid of
    /// its own (twice the range) does.
    #[test]
    fn a_relu_input_shares_the_relu_output_quantizer() {
        let mut model = conv_model();
        let g = &mut model.graph;
        g.nodes[0].outputs = vec!["y1".into()];
        g.nodes.push(Node::new("relu", "Relu", &["y1"], &["a"]));
        let w2: Vec<f32> = vec![0.8, -0.3, 0.5, 1.1];
        g.initializers.insert(
            "w2".into(),
            Arc::new(Tensor::from_f32(&[2, 2, 1, 1], w2).expect("w2")),
        );
        g.nodes
            .push(Node::new("conv2", "Conv", &["a", "w2"], &["y"]));
        let out = calibrate(
            &model,
            &config(&["max"], &[]),
            &Samples,
            &Options::default(),
        )
        .expect("calibrate");
        let at = |t: &str| {
            out.points
                .iter()
                .position(|p| !p.is_weight() && p.tensor == t)
                .expect("point")
        };
        let (y1, a) = (&out.thresholds[at("y1")], &out.thresholds[at("a")]);
        assert_eq!(y1.values, a.values);
        assert_eq!(y1.method, "max (shared with the Relu output)");
        assert!(out.findings.iter().any(|f| f.kind == "fused-activation"
            && f.message.contains("1 Relu / Clip input(s)")
            && f.message.contains("y1")));
        let with_y1 = |switch: &str, scale: f32| {
            let mut m = out.calibrated.clone();
            let n = m
                .graph
                .nodes
                .iter_mut()
                .find(|n| n.op_type == "HzCalibration" && n.inputs[0] == "y1")
                .expect("calibration node of y1");
            n.set_attr("switch", hb_ir::Attr::String(switch.into()));
            n.set_attr("thresholds", hb_ir::Attr::Floats(vec![a.values[0] * scale]));
            let s = Session::new(&m).expect("session");
            (0..3)
                .map(|k| s.run(&Samples.load(k).expect("sample")).expect("run"))
                .collect::<Vec<_>>()
        };
        assert_eq!(with_y1("ON", 1.0), with_y1("OFF", 1.0));
        assert_ne!(with_y1("ON", 2.0), with_y1("OFF", 1.0));
    }

    #[test]
    fn statistics_without_channels_refuse_a_per_channel_config() {
        let (model, opts) = (conv_model(), Options::default());
        let plain = config(&["max"], &[]);
        let stats = collect_statistics(&model, &plain, &Samples, &opts).expect("statistics");
        assert!(stats.stats.feature.iter().all(|s| !s.has_channels()));
        calibrate_with(&model, &plain, &stats, &Samples, &opts).expect("same config");
        let per_channel = config(&["max"], &[true]);
        let Err(err) = calibrate_with(&model, &per_channel, &stats, &Samples, &opts) else {
            panic!("statistics without channels calibrated a per-channel config");
        };
        assert!(err.to_string().contains("per-channel"), "{err}");
        // Collected for the per-channel config, the thresholds are per channel.
        let stats = collect_statistics(&model, &per_channel, &Samples, &opts).expect("statistics");
        let out = calibrate_with(&model, &per_channel, &stats, &Samples, &opts).expect("calibrate");
        let feature = out
            .points
            .iter()
            .position(|p| !p.is_weight())
            .expect("a feature point");
        assert_eq!(out.thresholds[feature].values.len(), 4);
    }
}
