//! The optimised runtime of `.hbm` (and `.bc`) programs: packed weights and
//! the [`crate::fast`] GEMM/conv kernels for Conv/MatMul/Gemm (plus a
//! "narrow" packing for int16 inputs whose values fit `[−256, 256]`, i.e.
//! asymmetric-uint8 features, chosen per call), allocation-free loops for
//! the element-wise, LUT, reduction, data-movement and activation ×
//! activation MatMul ops, the memory plan's slot buffers (reused across ops
//! and across runs), fused post-steps applied in place (clamp-only steps
//! folded into the packed epilogue). Every other op runs through the
//! reference executor ([`crate::program::refexec`]), so the whole engine is
//! bit-exact with the reference interpreter ([`crate::program::interp`]) by
//! construction or by test (the `fastops` property tests, `tests/`, and
//! hb-tools' `lower_pipeline` fixture tests).
//!
//! Threads: run inside `rayon::ThreadPool::install`; the fast kernels split
//! large products over the ambient pool (small ones stay on the calling
//! thread). Results do not depend on the thread count.
//!
//! Profiling: set [`Workspace::profile`] to `Some(Vec::new())` to have each
//! run add every op's wall time and path.

mod bounds;
mod conv_transpose;
mod cpu_float;
mod elem;
mod fastops;
mod island;
mod layernorm;
mod layout;
mod softmax;
mod store;

/// A xorshift64 generator for the engine's table tests (deterministic,
/// no dependency).
#[cfg(test)]
pub(crate) fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

use crate::fast::{ExecOptions, Isa, PackOptions, PackedWeights, Scratch};
use crate::fixed_point::Requant;
use crate::program::interp::{check_inputs, check_outputs, constants, infos};
use crate::program::prepared::{prepare, Kernel, Post, PreparedOp};
use crate::program::{memplan, pb, refexec, CpuOps, Program, ProgramError, Result};
use crate::tensor::TensorRef;
use hb_tensor::{DType, Tensor};
use std::sync::Arc;
pub use store::Buf;
use store::{Store, V};

/// A callback shown every produced tensor (id, value).
pub type Seen<'a> = &'a mut dyn FnMut(usize, &Tensor);

/// How the engine is built.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineOptions {
    /// Instruction-set path of the packed kernels (None: the best available).
    pub isa: Option<Isa>,
    /// Parallel split threshold of the fast kernels.
    pub exec: ExecOptions,
    /// Use only the reference executor (for debugging).
    pub reference_only: bool,
}

/// Packed weights of a weighted op.
enum Packed {
    Conv(PackedWeights),
    MatMul(PackedWeights),
    Gemm(PackedWeights),
}

impl Packed {
    /// The packed weights, whatever the op.
    fn weights(&self) -> &PackedWeights {
        let (Packed::Conv(w) | Packed::MatMul(w) | Packed::Gemm(w)) = self;
        w
    }

    /// The packed weights, mutably.
    fn weights_mut(&mut self) -> &mut PackedWeights {
        let (Packed::Conv(w) | Packed::MatMul(w) | Packed::Gemm(w)) = self;
        w
    }
}

/// A program prepared for fast execution.
pub struct Engine {
    program: Arc<Program>,
    ops: Vec<PreparedOp>,
    packed: Vec<Option<Packed>>,
    /// For int16 inputs: the same weights packed for activations in
    /// `[−256, 256]` (asymmetric uint8 features), used when the input's
    /// values fit.
    narrow: Vec<Option<Packed>>,
    /// Fused steps as the fast paths run them: clamp-only runs merged; for
    /// packed ops without the leading steps folded into the packed clamp.
    posts_packed: Vec<Vec<Post>>,
    posts_fast: Vec<Vec<Post>>,
    consts: Vec<Option<Arc<Tensor>>>,
    infos: Vec<(DType, Vec<usize>)>,
    plan: pb::MemoryPlan,
    input_pos: Vec<Option<usize>>,
    /// Per tensor id: stored channels-last (see `layout.rs`).
    channels_last: Vec<bool>,
    /// Per op: the float island starting there (see `island.rs`).
    islands: Vec<Option<island::Island>>,
    /// Per tensor id: the largest |value| its producer allows (`bounds.rs`).
    bounds: Vec<Option<i64>>,
    exec: ExecOptions,
}

/// Per-thread working memory: slot buffers and kernel scratch. Reuse it
/// across runs: after the first run nothing is allocated by the fast paths.
#[derive(Default)]
pub struct Workspace {
    slots: Vec<Buf>,
    scratch: Scratch,
    tmp: fastops::Tmp,
    /// Per op: the tabulated float island starting there, once built.
    island_tables: Vec<island::Table>,
    /// Host copies of slot values read by reference / CPU ops (by tensor
    /// id), reused across runs.
    cpu_in: Vec<Option<Tensor>>,
    /// Per-op profile: when `Some`, each run adds every op's wall time
    /// (seconds, indexed like the engine's ops) and how it ran.
    pub profile: Option<Vec<OpTime>>,
}

/// The accumulated time of one op (see [`Workspace::profile`]).
#[derive(Debug, Clone, Default)]
pub struct OpTime {
    /// Op name.
    pub name: String,
    /// Source op type.
    pub op_type: String,
    /// How it ran: `packed`, `fast`, `reference`, `cpu` or `island` (the
    /// island's time is booked on its first op).
    pub path: &'static str,
    /// Total seconds over the profiled runs.
    pub seconds: f64,
    /// Profiled runs.
    pub runs: u64,
}

impl Workspace {
    /// An empty workspace (allocates on first use).
    pub fn new() -> Workspace {
        Workspace::default()
    }
}

fn pack_op(
    p: &Program,
    op: &PreparedOp,
    consts: &[Option<Arc<Tensor>>],
    opts: &EngineOptions,
    narrow: bool,
    clamp: Option<(i64, i64)>,
) -> Option<Packed> {
    let konst = |k: usize| -> Option<&Tensor> {
        op.inputs
            .get(k)
            .copied()
            .flatten()
            .and_then(|i| consts[i].as_deref())
    };
    let x_kind =
        match crate::program::dtype_of(&p.tensors[op.inputs.first().copied().flatten()?]).ok()? {
            DType::I8 if !narrow => crate::fast::IntKind::I8,
            DType::I16 if narrow => crate::fast::IntKind::I16Narrow,
            DType::I16 => crate::fast::IntKind::I16,
            _ => return None,
        };
    let bias: Option<&[i64]> = match konst(2) {
        Some(Tensor::I64(a)) => Some(a.as_slice()?),
        Some(_) => return None,
        None => None,
    };
    let po = PackOptions {
        isa: opts.isa,
        clamp,
    };
    macro_rules! pack_w {
        ($w:expr, |$wv:ident| $body:expr) => {
            match $w {
                Tensor::I8(a) => {
                    let $wv = TensorRef::new(a.as_slice()?, a.shape()).ok()?;
                    $body
                }
                Tensor::I16(a) => {
                    let $wv = TensorRef::new(a.as_slice()?, a.shape()).ok()?;
                    $body
                }
                _ => return None,
            }
        };
    }
    match &op.kernel {
        Kernel::Conv {
            params,
            transpose: false,
            requant,
            clamp,
        } => {
            let w = konst(1)?;
            let po = PackOptions {
                clamp: po.clamp.or(*clamp),
                ..po
            };
            pack_w!(w, |wv| PackedWeights::conv(
                wv, bias, requant, params, x_kind, &po
            )
            .ok()
            .map(Packed::Conv))
        }
        Kernel::MatMul { requant } => {
            let w = konst(1)?;
            pack_w!(w, |wv| PackedWeights::matmul(
                wv, bias, requant, x_kind, &po
            )
            .ok()
            .map(Packed::MatMul))
        }
        Kernel::Gemm { params, requant } => {
            let w = konst(1)?;
            let c = match konst(2) {
                Some(Tensor::I64(a)) => Some(TensorRef::new(a.as_slice()?, a.shape()).ok()?),
                Some(_) => return None,
                None => None,
            };
            pack_w!(w, |wv| PackedWeights::gemm(
                wv, c, requant, *params, x_kind, &po
            )
            .ok()
            .map(Packed::Gemm))
        }
        _ => None,
    }
}

/// The leading fused steps of a weighted op that only clamp (identity
/// requantisation), folded into one clamp of the packed epilogue:
/// `(clamp, steps folded)`. Exact: for integers already in the output
/// type, consecutive clamps with overlapping ranges are one clamp to the
/// intersection.
fn fold_clamps(op: &PreparedOp, out: DType) -> (Option<(i64, i64)>, usize) {
    let (omin, omax) = match out {
        DType::I8 => (i64::from(i8::MIN), i64::from(i8::MAX)),
        DType::I16 => (i64::from(i16::MIN), i64::from(i16::MAX)),
        DType::I32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
        _ => return (None, 0),
    };
    let (mut a, mut b) = match &op.kernel {
        Kernel::Conv {
            transpose: false,
            clamp,
            ..
        } => clamp.map_or((omin, omax), |(l, h)| (l.max(omin), h.min(omax))),
        Kernel::MatMul { .. } | Kernel::Gemm { .. } => (omin, omax),
        _ => return (None, 0),
    };
    if a > b {
        return (None, 0);
    }
    let mut n = 0;
    for p in &op.post {
        let crate::program::prepared::Post::Rescale { requant, clamp, .. } = p else {
            break;
        };
        if !requant.iter().all(|r| r.is_identity()) {
            break;
        }
        let (lo, hi) = clamp.unwrap_or((omin, omax));
        let (na, nb) = (a.max(lo), b.min(hi.max(lo)));
        if na > nb {
            break;
        }
        (a, b) = (na, nb);
        n += 1;
    }
    if n == 0 {
        (None, 0)
    } else {
        (Some((a, b)), n)
    }
}

/// The fused step after the `skip` folded clamps of a weighted op when it
/// is a requantisation the packed epilogue can take: `(requantisations,
/// lo, hi, steps)` — one per tensor or one per output channel (Conv: axis
/// 1; MatMul / Gemm: the last axis), then its clamp and any clamp-only
/// steps right after it merged, all inside the output type.
fn foldable_rescale(
    op: &PreparedOp,
    skip: usize,
    out: DType,
    out_rank: usize,
) -> Option<(Vec<Requant>, i64, i64, usize)> {
    let (omin, omax) = match out {
        DType::I8 => (i64::from(i8::MIN), i64::from(i8::MAX)),
        DType::I16 => (i64::from(i16::MIN), i64::from(i16::MAX)),
        DType::I32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
        _ => return None,
    };
    let bounds = |clamp: Option<(i64, i64)>| {
        let (lo, hi) = clamp.unwrap_or((omin, omax));
        let hi = hi.max(lo);
        (omin <= lo && hi <= omax).then_some((lo, hi))
    };
    let Some(Post::Rescale {
        requant,
        axis,
        clamp,
    }) = op.post.get(skip)
    else {
        return None;
    };
    let channel_axis = match op.kernel {
        Kernel::Conv { .. } => 1,
        _ => out_rank.checked_sub(1)?,
    };
    if requant.len() != 1 && *axis != channel_axis {
        return None;
    }
    let (mut lo, mut hi) = bounds(*clamp)?;
    let mut n = 1;
    for p in &op.post[skip + 1..] {
        let Post::Rescale {
            requant: r2,
            clamp: c2,
            ..
        } = p
        else {
            break;
        };
        let Some((l2, h2)) = bounds(*c2) else { break };
        if !r2.iter().all(|r| r.is_identity()) || lo.max(l2) > hi.min(h2) {
            break;
        }
        (lo, hi) = (lo.max(l2), hi.min(h2));
        n += 1;
    }
    Some((requant.clone(), lo, hi, n))
}

/// Folds `rq` into the op's packings: the main one, then the narrow one
/// (which makes the same checks on the same channels, so it takes it too;
/// were it to refuse, it is dropped so the two paths stay the same
/// computation).
fn fold_into(
    p: &mut Option<Packed>,
    q: &mut Option<Packed>,
    rq: &[Requant],
    lo: i64,
    hi: i64,
) -> bool {
    let Some(wp) = p.as_mut() else {
        return false;
    };
    if !wp.weights_mut().fold_requant(rq, lo, hi) {
        return false;
    }
    if q.as_mut()
        .is_some_and(|w| !w.weights_mut().fold_requant(rq, lo, hi))
    {
        *q = None;
    }
    true
}

/// Copies `x` into `a` when `a` already has `shape` and a standard layout.
fn copy_into<T: Copy>(a: &mut ndarray::ArrayD<T>, shape: &[usize], x: &[T]) -> bool {
    if a.shape() != shape {
        return false;
    }
    match a.as_slice_mut() {
        Some(d) if d.len() == x.len() => {
            d.copy_from_slice(x);
            true
        }
        _ => false,
    }
}

/// `posts` with every run of consecutive clamp-only steps (identity
/// requantisation) merged into one clamp to the intersection of their
/// ranges (exact for values already in the output type while the ranges
/// overlap; a run stops where they would not).
fn merge_clamps(posts: &[Post], out: DType) -> Vec<Post> {
    let full = match out {
        DType::I8 => (i64::from(i8::MIN), i64::from(i8::MAX)),
        DType::I16 => (i64::from(i16::MIN), i64::from(i16::MAX)),
        DType::I32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
        _ => return posts.to_vec(),
    };
    let clamp_only = |p: &Post| -> Option<(i64, i64)> {
        match p {
            Post::Rescale { requant, clamp, .. }
                if !requant.is_empty() && requant.iter().all(|r| r.is_identity()) =>
            {
                let (lo, hi) = clamp.unwrap_or(full);
                Some((lo.max(full.0), hi.max(lo).min(full.1)))
            }
            _ => None,
        }
    };
    let mut out: Vec<Post> = Vec::with_capacity(posts.len());
    let mut cur: Option<(i64, i64)> = None;
    let flush = |out: &mut Vec<Post>, cur: &mut Option<(i64, i64)>| {
        if let Some(c) = cur.take() {
            out.push(Post::Rescale {
                requant: vec![Requant::IDENTITY],
                axis: 0,
                clamp: Some(c),
            });
        }
    };
    for p in posts {
        match (clamp_only(p), cur) {
            (Some((lo, hi)), _) if lo > hi => {
                flush(&mut out, &mut cur);
                out.push(p.clone());
            }
            (Some((lo, hi)), Some((a, b))) if lo.max(a) <= hi.min(b) => {
                cur = Some((lo.max(a), hi.min(b)));
            }
            (Some(c), _) => {
                flush(&mut out, &mut cur);
                cur = Some(c);
            }
            (None, _) => {
                flush(&mut out, &mut cur);
                out.push(p.clone());
            }
        }
    }
    flush(&mut out, &mut cur);
    out
}

impl Engine {
    /// Prepares `program`: ops checked, tables built, weights packed, the
    /// memory plan taken from the `.hbm` (or computed).
    pub fn new(program: Arc<Program>, opts: EngineOptions) -> Result<Engine> {
        let ops = prepare(&program)?;
        let consts = constants(&program)?;
        let infos = infos(&program)?;
        let mut packed = Vec::with_capacity(ops.len());
        let mut narrow = Vec::with_capacity(ops.len());
        let mut folded = Vec::with_capacity(ops.len());
        for op in &ops {
            if opts.reference_only || op.on_cpu {
                packed.push(None);
                narrow.push(None);
                folded.push(0);
                continue;
            }
            let (clamp, n) = op
                .outputs
                .first()
                .map_or((None, 0), |&o| fold_clamps(op, infos[o].0));
            let mut p = pack_op(&program, op, &consts, &opts, false, clamp);
            let mut q = pack_op(&program, op, &consts, &opts, true, clamp);
            let mut n = n;
            if n > 0 && p.is_none() {
                p = pack_op(&program, op, &consts, &opts, false, None);
                q = pack_op(&program, op, &consts, &opts, true, None);
                n = 0;
            }
            if let Some(&o) = op.outputs.first() {
                if let Some((rq, lo, hi, steps)) =
                    foldable_rescale(op, n, infos[o].0, infos[o].1.len())
                {
                    if fold_into(&mut p, &mut q, &rq, lo, hi) {
                        n += steps;
                    }
                }
            }
            packed.push(p);
            narrow.push(q);
            folded.push(n);
        }
        let out_dt = |op: &PreparedOp| op.outputs.first().map_or(DType::F32, |&o| infos[o].0);
        let posts_packed = ops
            .iter()
            .zip(&folded)
            .map(|(op, &n)| merge_clamps(op.post.get(n..).unwrap_or(&[]), out_dt(op)))
            .collect();
        let posts_fast = ops
            .iter()
            .map(|op| merge_clamps(&op.post, out_dt(op)))
            .collect();
        let plan = match program.hbm.as_ref().and_then(|h| h.memory.clone()) {
            Some(m) if m.tensor_slot.len() == program.tensors.len() => m,
            _ => memplan::plan(&program),
        };
        if plan
            .tensor_slot
            .iter()
            .any(|&s| s >= plan.slots.len() as i32)
        {
            return Err(ProgramError::Invalid(
                "memory plan refers to a missing slot".into(),
            ));
        }
        let mut input_pos = vec![None; program.tensors.len()];
        for (k, &i) in program.inputs.iter().enumerate() {
            input_pos[i as usize] = Some(k);
        }
        let channels_last = if opts.reference_only {
            vec![false; infos.len()]
        } else {
            layout::channels_last(&program, &ops, &packed, &narrow, &infos)
        };
        let islands = if opts.reference_only {
            vec![None; ops.len()]
        } else {
            let outputs: Vec<usize> = program.outputs.iter().map(|&o| o as usize).collect();
            island::find(&island::Context {
                ops: &ops,
                infos: &infos,
                slot: &plan.tensor_slot,
                channels_last: &channels_last,
                outputs: &outputs,
            })
        };
        let bounds = bounds::value_bounds(&ops, infos.len());
        Ok(Engine {
            bounds,
            islands,
            channels_last,
            program,
            ops,
            packed,
            narrow,
            posts_packed,
            posts_fast,
            consts,
            infos,
            plan,
            input_pos,
            exec: opts.exec,
        })
    }

    /// The program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Ops with packed weights.
    pub fn packed_count(&self) -> usize {
        self.packed.iter().filter(|p| p.is_some()).count()
    }

    /// Runs on `inputs` (in `Program.inputs` order).
    pub fn run(
        &self,
        inputs: &[Tensor],
        cpu: &dyn CpuOps,
        ws: &mut Workspace,
    ) -> Result<Vec<Tensor>> {
        self.run_with(inputs, cpu, ws, None)
    }

    /// Runs and shows every produced tensor to `seen` (copies; for dumps
    /// and comparisons).
    pub fn run_with(
        &self,
        inputs: &[Tensor],
        cpu: &dyn CpuOps,
        ws: &mut Workspace,
        mut seen: Option<Seen<'_>>,
    ) -> Result<Vec<Tensor>> {
        check_inputs(&self.program, inputs)?;
        if ws.slots.len() != self.plan.slots.len() {
            ws.slots = self
                .plan
                .slots
                .iter()
                .map(|s| {
                    Buf::new(
                        DType::from_onnx_code(s.dtype).unwrap_or(DType::F32),
                        s.elems as usize,
                    )
                })
                .collect();
        }
        if ws.island_tables.len() != self.ops.len() {
            ws.island_tables = self.ops.iter().map(|_| island::Table::default()).collect();
        }
        if let Some(f) = seen.as_mut() {
            for (&id, t) in self.program.inputs.iter().zip(inputs) {
                f(id as usize, t);
            }
        }
        if let Some(p) = ws.profile.as_mut() {
            if p.len() != self.ops.len() {
                *p = self
                    .ops
                    .iter()
                    .map(|op| OpTime {
                        name: op.name.clone(),
                        op_type: op.op_type.clone(),
                        ..OpTime::default()
                    })
                    .collect();
            }
        }
        // Ops before this index ran inside an island.
        let mut next_op = 0;
        for (k, op) in self.ops.iter().enumerate() {
            if k < next_op {
                continue;
            }
            let t0 = ws.profile.is_some().then(std::time::Instant::now);
            let mut st = Store {
                slots: &mut ws.slots,
                plan: &self.plan.tensor_slot,
                consts: &self.consts,
                inputs,
                input_pos: &self.input_pos,
                infos: &self.infos,
                channels_last: &self.channels_last,
                bounds: &self.bounds,
            };
            // An island writes only its last tensor: not when the caller
            // looks at every tensor.
            if let (Some(isl), None) = (&self.islands[k], &seen) {
                if island::run(isl, &mut st, &mut ws.island_tables[k]).map_err(|e| op.err(e))? {
                    if let (Some(t0), Some(p)) = (t0, ws.profile.as_mut()) {
                        p[k].seconds += t0.elapsed().as_secs_f64();
                        for e in &mut p[k..=isl.last] {
                            e.runs += 1;
                            e.path = "island";
                        }
                    }
                    next_op = isl.last + 1;
                    continue;
                }
            }
            let done = match &self.packed[k] {
                Some(pw) => {
                    let pw = match &self.narrow[k] {
                        Some(nw) if fastops::input_is_narrow(op, nw, &st) => nw,
                        _ => pw,
                    };
                    fastops::packed(
                        op,
                        pw,
                        &self.posts_packed[k],
                        &mut st,
                        &mut ws.scratch,
                        &self.exec,
                    )
                    .map_err(|e| op.err(e))?
                }
                None if !op.on_cpu => {
                    fastops::try_fast(op, &self.posts_fast[k], &mut st, &mut ws.tmp)
                        .map_err(|e| op.err(e))?
                }
                None => cpu_float::try_run(op, &mut st).map_err(|e| op.err(e))?,
            };
            if !done {
                self.generic(op, &mut st, cpu, &mut ws.cpu_in)?;
            }
            if let (Some(t0), Some(p)) = (t0, ws.profile.as_mut()) {
                let e = &mut p[k];
                e.seconds += t0.elapsed().as_secs_f64();
                e.runs += 1;
                e.path = match (&self.packed[k], done, op.on_cpu) {
                    (Some(_), true, _) => "packed",
                    (_, _, true) => "cpu",
                    (_, true, _) => "fast",
                    _ => "reference",
                };
            }
            if let Some(f) = seen.as_mut() {
                for &o in &op.outputs {
                    let v = st.get(o).map_err(|e| op.err(e))?;
                    let t = self.logical(o, &v).map_err(|e| op.err(e))?;
                    f(o, &t);
                }
            }
        }
        let st = Store {
            slots: &mut ws.slots,
            plan: &self.plan.tensor_slot,
            consts: &self.consts,
            inputs,
            input_pos: &self.input_pos,
            infos: &self.infos,
            channels_last: &self.channels_last,
            bounds: &self.bounds,
        };
        self.program
            .outputs
            .iter()
            .map(|&o| {
                st.get(o as usize)
                    .and_then(|v| v.to_tensor(&self.infos[o as usize].1))
                    .map_err(|e| ProgramError::Invalid(format!("output #{o}: {e}")))
            })
            .collect()
    }

    /// A copy of tensor `id`'s value `v` in its logical (NCHW) order.
    fn logical(&self, id: usize, v: &V<'_>) -> std::result::Result<Tensor, String> {
        let shape = &self.infos[id].1;
        if !self.channels_last[id] {
            return v.to_tensor(shape);
        }
        let stored = [shape[0], shape[2], shape[3], shape[1]];
        let back = |t: Tensor| -> Tensor {
            let perm = ndarray::IxDyn(&[0, 3, 1, 2]);
            match t {
                Tensor::I8(a) => {
                    Tensor::I8(a.permuted_axes(perm).as_standard_layout().into_owned())
                }
                Tensor::I16(a) => {
                    Tensor::I16(a.permuted_axes(perm).as_standard_layout().into_owned())
                }
                Tensor::I32(a) => {
                    Tensor::I32(a.permuted_axes(perm).as_standard_layout().into_owned())
                }
                other => other,
            }
        };
        Ok(back(v.to_tensor(&stored)?))
    }

    /// An op without a fast path: reference executor or the host CPU.
    fn generic(
        &self,
        op: &PreparedOp,
        st: &mut Store<'_>,
        cpu: &dyn CpuOps,
        cache: &mut Vec<Option<Tensor>>,
    ) -> Result<()> {
        // Values in slot buffers are copied into per-tensor host tensors
        // kept across runs (no allocation after the first run); constants
        // and model inputs are passed as they are.
        if cache.len() != self.infos.len() {
            cache.resize(self.infos.len(), None);
        }
        for &i in op.inputs.iter().flatten() {
            let direct = st.consts.get(i).is_some_and(|c| c.is_some())
                || st.input_pos.get(i).copied().flatten().is_some();
            if direct {
                continue;
            }
            let v = st.get(i).map_err(|e| op.err(e))?;
            let shape = &self.infos[i].1;
            let reused = match (&mut cache[i], &v) {
                (Some(Tensor::I8(a)), V::I8(x)) => copy_into(a, shape, x),
                (Some(Tensor::I16(a)), V::I16(x)) => copy_into(a, shape, x),
                (Some(Tensor::I32(a)), V::I32(x)) => copy_into(a, shape, x),
                (Some(Tensor::F32(a)), V::F32(x)) => copy_into(a, shape, x),
                _ => false,
            };
            if !reused {
                cache[i] = Some(match v {
                    V::T(t) => t.clone(),
                    v => v.to_tensor(shape).map_err(|e| op.err(e))?,
                });
            }
        }
        let mut ins: Vec<Option<&Tensor>> = Vec::with_capacity(op.inputs.len());
        for i in &op.inputs {
            ins.push(match *i {
                None => None,
                Some(i) => Some(
                    if let Some(c) = st.consts.get(i).and_then(|c| c.as_deref()) {
                        c
                    } else if let Some(k) = st.input_pos.get(i).copied().flatten() {
                        &st.inputs[k]
                    } else {
                        cache[i]
                            .as_ref()
                            .ok_or_else(|| op.err("input value missing"))?
                    },
                ),
            });
        }
        let outs: Vec<(DType, Vec<usize>)> =
            op.outputs.iter().map(|&o| self.infos[o].clone()).collect();
        let ys = if op.on_cpu || matches!(op.kernel, Kernel::Cpu) {
            let ys: Vec<Tensor> = cpu
                .run(op.index, &ins)
                .map_err(|e| op.err(e))?
                .into_iter()
                .map(Tensor::into_standard_layout)
                .collect();
            check_outputs(op, &ys, &outs)?;
            ys
        } else {
            refexec::run_op(op, &ins, &outs).map_err(|e| op.err(e))?
        };
        for (&o, y) in op.outputs.iter().zip(ys) {
            st.put(o, y).map_err(|e| op.err(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::refexec::rescale;
    use crate::tensor::{QTensor, TensorRef};
    use proptest::prelude::*;

    fn run(posts: &[Post], x: &[i16]) -> Vec<i16> {
        let mut y = x.to_vec();
        for p in posts {
            let Post::Rescale {
                requant,
                axis,
                clamp,
            } = p
            else {
                unreachable!("only Rescale steps here")
            };
            let q: QTensor<i16> = rescale(
                TensorRef::new(&y, &[y.len()]).expect("shape"),
                requant,
                *axis,
                *clamp,
            )
            .expect("rescale");
            y = q.data;
        }
        y
    }

    proptest! {
        /// Merged clamp runs compute what the steps compute one by one.
        #[test]
        fn merged_clamps_match_steps(
            steps in prop::collection::vec(
                (-70_000i64..70_000, -70_000i64..70_000, 0u8..4), 0..6),
            x in prop::collection::vec(any::<i16>(), 1..64),
        ) {
            let posts: Vec<Post> = steps
                .iter()
                .map(|&(lo, hi, kind)| Post::Rescale {
                    requant: vec![if kind == 3 {
                        Requant::from_ratio(0.37).expect("ratio")
                    } else {
                        Requant::IDENTITY
                    }],
                    axis: 0,
                    clamp: (kind != 2).then_some((lo.min(hi), if kind == 1 { lo } else { hi })),
                })
                .collect();
            let merged = merge_clamps(&posts, DType::I16);
            prop_assert!(merged.len() <= posts.len());
            prop_assert_eq!(run(&merged, &x), run(&posts, &x));
        }
    }
}
