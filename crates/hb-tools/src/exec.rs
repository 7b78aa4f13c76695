//! `hb-model-exec`: run a model on input files, write outputs (and every
//! intermediate value) as `.npy`, and time it.

use crate::cli::{ToolError, ToolResult};
use crate::inputs::{read_inputs, Sample};
use crate::names::file_safe;
use hb_float::{Session, ValueDump};
use hb_ir::Model;
use hb_tensor::{io, Tensor};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Outputs (and optionally intermediates) of one sample.
pub struct SampleResult {
    /// `(output name, tensor)` in graph order.
    pub outputs: Vec<(String, Tensor)>,
    /// `(node name, value name, tensor)` in execution order, when dumping.
    pub intermediates: Vec<(String, String, std::sync::Arc<Tensor>)>,
}

/// The float graph passes run before execution (as ONNX Runtime's default
/// graph optimisations do): Constant → initializer, Identity/Dropout removal,
/// BatchNormalization folding, decomposed LayerNorms fused into
/// `LayerNormalization` (opset 13 and later), constant folding, and (with fixed input
/// shapes) `Shape`/`Size` of static shapes folded with the arithmetic after
/// them, `If` nodes with a now-constant condition replaced by their branch,
/// then `Cast`s to the type their input already has removed. Outputs keep
/// their names.
pub fn optimize(model: &mut Model) -> Result<(), String> {
    let registry = hb_float::Registry::shared();
    // An `If` whose condition the folding decides is replaced by its branch,
    // whose nodes may fold in turn (bounded: one round per nesting level).
    for _ in 0..4 {
        hb_ir::passes::optimize(&mut model.graph).map_err(|e| e.to_string())?;
        hb_float::fold::fold_constants(model, registry).map_err(|e| e.to_string())?;
        hb_float::fold::fold_static_shapes(model, registry).map_err(|e| e.to_string())?;
        hb_ir::passes::fuse_layer_norms(model).map_err(|e| e.to_string())?;
        if hb_float::inline_if::inline_constant_ifs(model) == 0 {
            break;
        }
    }
    hb_float::casts::remove_noop_casts(model).map_err(|e| e.to_string())?;
    Ok(())
}

/// Gives each model input with a dynamic dim the shape all `samples` give
/// it, when they agree (inputs the samples disagree on, or lack, stay
/// dynamic).
pub fn fix_dynamic_inputs(model: &mut Model, samples: &[crate::inputs::Sample]) {
    for v in &mut model.graph.inputs {
        if v.fixed_shape().is_some() {
            continue;
        }
        let mut shapes = samples
            .iter()
            .map(|s| s.get(&v.name).map(|t| t.shape().to_vec()));
        let Some(Some(first)) = shapes.next() else {
            continue;
        };
        if shapes.all(|s| s.as_ref() == Some(&first)) {
            v.shape = Some(first.into_iter().map(hb_ir::Dim::Fixed).collect());
        }
    }
}

/// Builds a rayon pool with `threads` threads (None = all cores); with
/// `HB_HUGE_PAGES=1` its threads advise huge pages for their heaps, as the
/// global pool's do ([`crate::heap::advise_huge_pages_everywhere`]).
pub fn thread_pool(threads: Option<usize>) -> ToolResult<rayon::ThreadPool> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if crate::heap::huge_pages_wanted() {
        b = b.start_handler(|_| crate::heap::advise_huge_pages());
    }
    if let Some(n) = threads {
        if n == 0 {
            return Err(ToolError::input("--thread-num must be at least 1"));
        }
        b = b.num_threads(n);
    }
    b.build()
        .map_err(|e| ToolError::input(format!("cannot start {threads:?} threads: {e}")))
}

/// Runs `f` (on a thread of the current rayon pool) while the pool's other
/// threads wait for work busily instead of sleeping: they run the jobs the
/// parallel kernels push as soon as they appear. A sleeping rayon thread
/// takes tens of microseconds to wake, which is the whole gain of splitting
/// a sub-millisecond op; latency measurements (`perf`, `profile`, `infer`)
/// spin, as ONNX Runtime's pool does. Outside a pool, or with one thread,
/// it just runs `f`.
pub fn with_busy_helpers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let threads = rayon::current_num_threads();
    let Some(me) = rayon::current_thread_index() else {
        return f();
    };
    if threads < 2 {
        return f();
    }
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        for _ in 1..threads {
            s.spawn(|_| {
                // The calling thread may pop its own helper job while it
                // waits inside `f`: it must not spin there.
                if rayon::current_thread_index() == Some(me) {
                    return;
                }
                while !done.load(Ordering::Acquire) {
                    if !matches!(rayon::yield_now(), Some(rayon::Yield::Executed)) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        // Set on return and on unwinding alike: a panic in `f` must stop
        // the helpers, or the scope would wait for them forever.
        let _stop = StopOnDrop(&done);
        f()
    })
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs every sample; all results are computed before anything is written.
pub fn run_samples(
    session: &Session,
    samples: &[Sample],
    dump: bool,
    pool: &rayon::ThreadPool,
) -> ToolResult<Vec<SampleResult>> {
    pool.install(|| {
        samples
            .iter()
            .map(|s| {
                if dump {
                    let mut d = ValueDump::default();
                    let outputs = session.run_with_hook(s, &mut d)?;
                    Ok(SampleResult {
                        outputs,
                        intermediates: d.values,
                    })
                } else {
                    Ok(SampleResult {
                        outputs: session.run(s)?,
                        intermediates: Vec::new(),
                    })
                }
            })
            .collect()
    })
}

/// Writes results under `dir`: one sample → `<dir>/<output>.npy`; several →
/// `<dir>/<output>/<k>.npy`. Intermediates go to `<dir>/intermediate[/<k>]/<index>_<value>.npy`.
/// Returns the files written.
pub fn write_results(dir: &Path, results: &[SampleResult]) -> ToolResult<Vec<PathBuf>> {
    let mut written = Vec::new();
    let many = results.len() > 1;
    let mkdir = |d: &Path| {
        std::fs::create_dir_all(d).map_err(|e| ToolError::input(format!("{}: {e}", d.display())))
    };
    mkdir(dir)?;
    for (k, r) in results.iter().enumerate() {
        for (name, t) in &r.outputs {
            let p = if many {
                let d = dir.join(file_safe(name));
                mkdir(&d)?;
                d.join(format!("{k}.npy"))
            } else {
                dir.join(format!("{}.npy", file_safe(name)))
            };
            write_tensor(&p, t)?;
            written.push(p);
        }
        if !r.intermediates.is_empty() {
            let d = if many {
                dir.join("intermediate").join(k.to_string())
            } else {
                dir.join("intermediate")
            };
            mkdir(&d)?;
            for (i, (_, value, t)) in r.intermediates.iter().enumerate() {
                let p = d.join(format!("{i:04}_{}.npy", file_safe(value)));
                write_tensor(&p, t)?;
                written.push(p);
            }
        }
    }
    Ok(written)
}

fn write_tensor(p: &Path, t: &Tensor) -> ToolResult<()> {
    match t {
        Tensor::Str(_) => Err(ToolError::input(format!(
            "{}: string outputs cannot be saved as .npy",
            p.display()
        ))),
        _ => io::write_npy(p, t).map_err(ToolError::input),
    }
}

/// Timing of repeated runs.
#[derive(Debug, serde::Serialize)]
pub struct PerfReport {
    /// Compute threads.
    pub threads: usize,
    /// Runs timed.
    pub frame_count: usize,
    /// Total wall time in ms.
    pub total_ms: f64,
    /// Mean latency in ms.
    pub average_ms: f64,
    /// Median latency in ms.
    pub median_ms: f64,
    /// Frames per second.
    pub fps: f64,
}

/// Times `frames` runs of `sample` (after one warm-up run).
pub fn perf(
    session: &Session,
    sample: &Sample,
    frames: usize,
    pool: &rayon::ThreadPool,
) -> ToolResult<PerfReport> {
    pool.install(|| {
        time_frames(frames, || {
            session.run(sample)?;
            Ok(())
        })
    })
}

/// Times `frames` calls of `run` after one warm-up call, on the current
/// pool with its other threads kept busy ([`with_busy_helpers`]).
pub fn time_frames(
    frames: usize,
    mut run: impl FnMut() -> ToolResult<()> + Send,
) -> ToolResult<PerfReport> {
    let frames = frames.max(1);
    run()?;
    let (mut times, total_ms) = with_busy_helpers(|| -> ToolResult<(Vec<f64>, f64)> {
        let mut times = Vec::with_capacity(frames);
        let start = Instant::now();
        for _ in 0..frames {
            let t = Instant::now();
            run()?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok((times, start.elapsed().as_secs_f64() * 1e3))
    })?;
    times.sort_by(f64::total_cmp);
    Ok(PerfReport {
        threads: rayon::current_num_threads(),
        frame_count: frames,
        total_ms,
        average_ms: total_ms / frames as f64,
        median_ms: times[times.len() / 2],
        fps: frames as f64 / (total_ms / 1e3),
    })
}

/// Runs `frames` timed runs with a per-node timer and writes a CSV
/// (`index,node,op,total_ms,mean_ms,share`) sorted by time; returns the rows' text summary by op type.
pub fn profile(
    session: &Session,
    sample: &Sample,
    frames: usize,
    pool: &rayon::ThreadPool,
    csv: &Path,
) -> ToolResult<String> {
    let mut hook = hb_float::TimingHook::default();
    pool.install(|| -> ToolResult<()> {
        session.run(sample)?;
        with_busy_helpers(|| -> ToolResult<()> {
            for _ in 0..frames.max(1) {
                hook.start_run();
                session.run_with_hook(sample, &mut hook)?;
            }
            Ok(())
        })
    })?;
    let total: f64 = hook.nodes.iter().map(|n| n.2).sum::<f64>().max(1e-12);
    let mut rows: Vec<(usize, &hb_float::session::NodeTiming)> =
        hook.nodes.iter().enumerate().collect();
    rows.sort_by(|a, b| b.1 .2.total_cmp(&a.1 .2));
    let mut text = String::from("index,node,op,total_ms,mean_ms,share\n");
    for (i, (name, op, t, n)) in &rows {
        text += &format!(
            "{i},{name},{op},{:.4},{:.4},{:.4}\n",
            t * 1e3,
            t * 1e3 / (*n).max(1) as f64,
            t / total
        );
    }
    io::write_atomic(csv, |w| {
        w.write_all(text.as_bytes())
            .map_err(|e| ToolError::input(format!("{}: {e}", csv.display())))
    })?;
    let mut by_op: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    for (_, op, t, _) in &hook.nodes {
        *by_op.entry(op.as_str()).or_insert(0.0) += t;
    }
    let mut ops: Vec<(&str, f64)> = by_op.into_iter().collect();
    ops.sort_by(|a, b| b.1.total_cmp(&a.1));
    let frames = frames.max(1) as f64;
    Ok(ops
        .iter()
        .map(|(op, t)| {
            format!(
                "  {op:<24} {:>9.4} ms/frame {:>5.1}%\n",
                t * 1e3 / frames,
                100.0 * t / total
            )
        })
        .collect())
}

/// Deterministic synthetic inputs of each input's declared type and shape
/// (dynamic dims taken as 1): floats in [-1, 1), integers 0.
pub fn synthetic_inputs(model: &Model) -> ToolResult<Sample> {
    let mut s = Sample::new();
    for v in &model.graph.inputs {
        let shape: Vec<usize> = v
            .shape
            .as_ref()
            .map(|d| {
                d.iter()
                    .map(|x| if let hb_ir::Dim::Fixed(n) = x { *n } else { 1 })
                    .collect()
            })
            .unwrap_or_default();
        let dtype = v.dtype().ok_or_else(|| {
            ToolError::input(format!(
                "input '{}' has unsupported type {}",
                v.name,
                v.dtype_name()
            ))
        })?;
        let n: usize = shape.iter().product();
        let mut state = 0x2545F491u32;
        let data: Vec<f32> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect();
        let t = Tensor::from_vec(&shape, data)?;
        let t = if dtype.is_float() {
            t.cast(dtype)?
        } else {
            Tensor::zeros(dtype, &shape)
        };
        s.insert(v.name.clone(), t);
    }
    Ok(s)
}

/// Reads `--input-file` for a model, or makes synthetic inputs when absent.
pub fn inputs_or_synthetic(model: &Model, spec: Option<&str>) -> ToolResult<Vec<Sample>> {
    match spec {
        Some(s) => read_inputs(&model.graph, s),
        None => Ok(vec![synthetic_inputs(model)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::with_busy_helpers;
    use rayon::prelude::*;

    #[test]
    fn busy_helpers_run_the_parallel_work_and_return() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for _ in 0..200 {
            let s: u64 = pool.install(|| {
                with_busy_helpers(|| (0..10_000u64).into_par_iter().map(|x| x * 2).sum())
            });
            assert_eq!(s, 99_990_000);
        }
        // Outside a pool, and in a one-thread pool, `f` just runs.
        assert_eq!(with_busy_helpers(|| 7), 7);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert_eq!(one.install(|| with_busy_helpers(|| 8)), 8);
    }

    #[test]
    fn a_panic_inside_stops_the_helpers_and_propagates() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| with_busy_helpers(|| -> u32 { panic!("inside") }))
        }));
        assert!(r.is_err());
        // The pool still works afterwards.
        assert_eq!(pool.install(|| with_busy_helpers(|| 3)), 3);
    }
}
