//! `.bc` → `.hbm` (what `hb-compile` does):
//!
//! 1. fusion (O1: Conv/MatMul/Gemm + Relu/Clip/Requantize; O2: also
//!    Conv/MatMul/Gemm + Add, then the Relu after it) — the fused steps run
//!    in place on the producer's output buffer, computing exactly the same
//!    integers, so the `.hbm` stays bit-exact with the `.bc`;
//! 2. removal of boundary nodes listed in `remove_node_type` (`Quantize`
//!    at model inputs, `Dequantize` at model outputs: the deployed model
//!    then takes / returns integers with their scales);
//! 3. placement and subgraphs (maximal runs of BPU or CPU ops);
//! 4. packed-weight metadata (the runtime repacks for the CPU it runs on);
//! 5. the memory plan (buffer reuse).

use crate::lower::cleanup;
use crate::{LowerError, Result};
use hb_bpu::fast::{Isa, PackOptions, PackedWeights};
use hb_bpu::program::prepared::{prepare_op, Kernel};
use hb_bpu::program::{interp, memplan, pb, Program};
use hb_bpu::tensor::TensorRef;
use hb_tensor::{DType, Tensor};
use std::collections::HashMap;

/// Optimisation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum OptLevel {
    /// No fusion.
    O0,
    /// Conv/MatMul/Gemm + Relu/Clip/Requantize.
    O1,
    /// Also Conv/MatMul/Gemm + Add (+ Relu).
    #[default]
    O2,
}

impl OptLevel {
    /// Parses `O0`, `O1`, `O2` (also `0`/`1`/`2`, `O3` = `O2`).
    pub fn parse(s: &str) -> Option<OptLevel> {
        match s.trim().trim_start_matches(['O', 'o']) {
            "0" => Some(OptLevel::O0),
            "1" => Some(OptLevel::O1),
            "2" | "3" => Some(OptLevel::O2),
            _ => None,
        }
    }

    /// `O0`, `O1`, `O2`.
    pub fn name(self) -> &'static str {
        match self {
            OptLevel::O0 => "O0",
            OptLevel::O1 => "O1",
            OptLevel::O2 => "O2",
        }
    }
}

/// What `hb-compile` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// Optimisation level.
    pub level: OptLevel,
    /// Boundary op types to remove (`Quantize`, `Dequantize`).
    pub remove_node_type: Vec<String>,
    /// The `.bc` file name (recorded).
    pub source: String,
}

/// What compiling did.
#[derive(Debug, Clone, Default)]
pub struct CompileReport {
    /// Ops before and after.
    pub ops_before: usize,
    /// Ops after.
    pub ops_after: usize,
    /// `(op, merged ops)`.
    pub fusions: Vec<(String, Vec<String>)>,
    /// Removed boundary ops.
    pub removed: Vec<String>,
    /// Subgraphs `(placement, ops)`.
    pub subgraphs: Vec<(String, usize)>,
    /// Ops with packed weights.
    pub packed: usize,
    /// Activation memory with and without reuse, and constants (bytes).
    pub memory: (u64, u64, u64),
}

fn readers(p: &Program) -> Vec<usize> {
    let mut r = vec![0usize; p.tensors.len()];
    for op in &p.ops {
        for &i in &op.inputs {
            if i >= 0 {
                r[i as usize] += 1;
            }
        }
        for post in &op.post {
            if let Some(pb::post_op::Kind::Add(a)) = &post.kind {
                r[a.other as usize] += 1;
            }
        }
    }
    for &o in &p.outputs {
        r[o as usize] += 1;
    }
    r
}

fn is_weighted(op: &pb::Op) -> bool {
    matches!(
        op.kind,
        Some(pb::op::Kind::Conv(pb::ConvOp {
            transpose: false,
            ..
        })) | Some(pb::op::Kind::Matmul(_))
            | Some(pb::op::Kind::Gemm(_))
    ) && op.placement() == pb::Placement::Bpu
}

fn producer_of(p: &Program) -> HashMap<u32, usize> {
    let mut m = HashMap::new();
    for (i, op) in p.ops.iter().enumerate() {
        for &o in &op.outputs {
            m.insert(o, i);
        }
    }
    m
}

/// Whether a Rescale (Relu/Clip/Requantize) may run as a post-step of
/// `op`: a weighted op at O1; at O2 any single-output BPU op (Softmax,
/// LUTs, element-wise, pooling, Resize, ...), whose post-steps the engine
/// and the reference executor apply in place on the output buffer.
fn takes_rescale(op: &pb::Op, level: OptLevel) -> bool {
    is_weighted(op)
        || (level >= OptLevel::O2
            && op.placement() == pb::Placement::Bpu
            && op.outputs.len() == 1
            && !matches!(op.kind, Some(pb::op::Kind::Cpu(_)) | None))
}

/// One fusion of a Relu/Clip/Requantize into the op before it.
fn fuse_rescale(p: &mut Program, level: OptLevel) -> bool {
    let r = readers(p);
    let prod = producer_of(p);
    for j in 0..p.ops.len() {
        let Some(pb::op::Kind::Rescale(rs)) = p.ops[j].kind.clone() else {
            continue;
        };
        if p.ops[j].placement() != pb::Placement::Bpu || !p.ops[j].post.is_empty() {
            continue;
        }
        let x = p.ops[j].inputs[0];
        if x < 0 || r[x as usize] != 1 {
            continue;
        }
        let Some(&i) = prod.get(&(x as u32)) else {
            continue;
        };
        if !takes_rescale(&p.ops[i], level)
            || p.tensors[x as usize].dtype != p.tensors[p.ops[j].outputs[0] as usize].dtype
        {
            continue;
        }
        let y = p.ops[j].outputs[0];
        let name = p.ops[j].name.clone();
        let op = &mut p.ops[i];
        op.post.push(pb::PostOp {
            kind: Some(pb::post_op::Kind::Rescale(rs)),
        });
        op.outputs[0] = y;
        op.fused_from.push(name);
        p.ops.remove(j);
        return true;
    }
    false
}

/// One fusion of an Add (with the Relu / Clip steps already fused into it)
/// into the weighted op producing one of its operands.
fn fuse_add(p: &mut Program) -> bool {
    let r = readers(p);
    let prod = producer_of(p);
    for j in 0..p.ops.len() {
        let Some(pb::op::Kind::Add(a)) = p.ops[j].kind.clone() else {
            continue;
        };
        if p.ops[j].placement() != pb::Placement::Bpu {
            continue;
        }
        let (ia, ib) = (p.ops[j].inputs[0], p.ops[j].inputs[1]);
        let y = p.ops[j].outputs[0];
        let yshape = p.tensors[y as usize].shape.clone();
        for (main, other, main_is_b) in [(ia, ib, false), (ib, ia, true)] {
            if main < 0 || other < 0 || main == other || r[main as usize] != 1 {
                continue;
            }
            let Some(&i) = prod.get(&(main as u32)) else {
                continue;
            };
            if !is_weighted(&p.ops[i]) {
                continue;
            }
            let (mt, ot) = (&p.tensors[main as usize], &p.tensors[other as usize]);
            if mt.shape != yshape || ot.shape != yshape || mt.dtype != p.tensors[y as usize].dtype {
                continue;
            }
            // The other operand must exist before the weighted op runs.
            if prod.get(&(other as u32)).is_some_and(|&k| k >= i) {
                continue;
            }
            // The Add's own fused steps (its Relu / Clip) follow it.
            let add = p.ops.remove(j);
            let op = &mut p.ops[i];
            op.post.push(pb::PostOp {
                kind: Some(pb::post_op::Kind::Add(pb::PostAdd {
                    other: other as u32,
                    main_is_b,
                    ma: a.ma,
                    mb: a.mb,
                    shift: a.shift,
                })),
            });
            op.post.extend(add.post);
            op.inputs.push(other);
            op.outputs[0] = y;
            op.fused_from.push(add.name);
            op.fused_from.extend(add.fused_from);
            return true;
        }
    }
    false
}

fn remove_boundaries(p: &mut Program, types: &[String]) -> Vec<String> {
    let mut removed = Vec::new();
    let want = |t: &str| types.iter().any(|x| x.eq_ignore_ascii_case(t));
    loop {
        let r = readers(p);
        let mut hit = None;
        for (k, op) in p.ops.iter().enumerate() {
            match &op.kind {
                Some(pb::op::Kind::Quantize(_)) if want("Quantize") => {
                    let x = op.inputs[0];
                    if let Some(pos) = p.inputs.iter().position(|&i| i as i32 == x) {
                        if r[x as usize] == 1 {
                            hit = Some((k, Some(pos), None));
                            break;
                        }
                    }
                }
                Some(pb::op::Kind::Dequantize(_)) if want("Dequantize") => {
                    let y = op.outputs[0];
                    if let Some(pos) = p.outputs.iter().position(|&o| o == y) {
                        if r[y as usize] == 1 && !p.inputs.contains(&(op.inputs[0] as u32)) {
                            hit = Some((k, None, Some(pos)));
                            break;
                        }
                    }
                }
                _ => {}
            }
        }
        let Some((k, inp, outp)) = hit else { break };
        let op = p.ops.remove(k);
        if let Some(pos) = inp {
            p.inputs[pos] = op.outputs[0];
            // Keep the user-facing name on the new input.
            let old = p.tensors[op.inputs[0] as usize].name.clone();
            p.tensors[op.inputs[0] as usize].name = format!("{old}:float");
            p.tensors[op.outputs[0] as usize].name = old;
        }
        if let Some(pos) = outp {
            p.outputs[pos] = op.inputs[0] as u32;
            let old = p.tensors[op.outputs[0] as usize].name.clone();
            p.tensors[op.outputs[0] as usize].name = format!("{old}:float");
            p.tensors[op.inputs[0] as usize].name = old;
        }
        removed.push(op.name);
    }
    removed
}

fn subgraphs(p: &Program) -> Vec<pb::Subgraph> {
    let prod = producer_of(p);
    let mut out: Vec<pb::Subgraph> = Vec::new();
    for (i, op) in p.ops.iter().enumerate() {
        let pl = op.placement;
        match out.last_mut() {
            Some(sg) if sg.placement == pl => sg.ops.push(i as u32),
            _ => out.push(pb::Subgraph {
                index: out.len() as u32,
                placement: pl,
                ops: vec![i as u32],
                inputs: vec![],
                outputs: vec![],
            }),
        }
    }
    let sg_of: HashMap<usize, usize> = out
        .iter()
        .enumerate()
        .flat_map(|(s, sg)| sg.ops.iter().map(move |&o| (o as usize, s)))
        .collect();
    let mut ins: Vec<Vec<u32>> = vec![Vec::new(); out.len()];
    let mut outs: Vec<Vec<u32>> = vec![Vec::new(); out.len()];
    for (i, op) in p.ops.iter().enumerate() {
        let s = sg_of[&i];
        for &x in &op.inputs {
            if x < 0 || p.tensors[x as usize].is_const {
                continue;
            }
            let from = prod.get(&(x as u32)).map(|k| sg_of[k]);
            if from != Some(s) && !ins[s].contains(&(x as u32)) {
                ins[s].push(x as u32);
            }
            if let Some(f) = from.filter(|&f| f != s) {
                if !outs[f].contains(&(x as u32)) {
                    outs[f].push(x as u32);
                }
            }
        }
    }
    for &o in &p.outputs {
        if let Some(&k) = prod.get(&o) {
            let s = sg_of[&k];
            if !outs[s].contains(&o) {
                outs[s].push(o);
            }
        }
    }
    for (s, sg) in out.iter_mut().enumerate() {
        sg.inputs = std::mem::take(&mut ins[s]);
        sg.outputs = std::mem::take(&mut outs[s]);
    }
    out
}

fn packed_info(p: &Program) -> Vec<pb::PackedInfo> {
    let consts = interp::constants(p).unwrap_or_default();
    let isa = Isa::detect();
    let mut v = Vec::new();
    for (i, op) in p.ops.iter().enumerate() {
        if !is_weighted(op) {
            continue;
        }
        let Ok(po) = prepare_op(p, i, op) else {
            continue;
        };
        let konst = |k: usize| {
            op.inputs
                .get(k)
                .and_then(|&t| (t >= 0).then_some(t as usize))
                .and_then(|t| consts.get(t).cloned().flatten())
        };
        let Some(w) = konst(1) else { continue };
        let x_kind = match p.tensors[op.inputs[0] as usize].dtype {
            d if d == DType::I8.onnx_code() => hb_bpu::fast::IntKind::I8,
            _ => hb_bpu::fast::IntKind::I16,
        };
        let bias = konst(2);
        let bias_s: Option<&[i64]> = match bias.as_deref() {
            Some(Tensor::I64(a)) => a.as_slice(),
            _ => None,
        };
        let opts = PackOptions::default();
        macro_rules! pk {
            ($a:expr) => {{
                let Some(s) = $a.as_slice() else { continue };
                let Ok(wv) = TensorRef::new(s, $a.shape()) else {
                    continue;
                };
                match &po.kernel {
                    Kernel::Conv {
                        params, requant, ..
                    } => PackedWeights::conv(wv, bias_s, requant, params, x_kind, &opts),
                    Kernel::MatMul { requant } => {
                        PackedWeights::matmul(wv, bias_s, requant, x_kind, &opts)
                    }
                    Kernel::Gemm { params, requant } => {
                        let c = match bias.as_deref() {
                            Some(Tensor::I64(a)) => {
                                a.as_slice().and_then(|s| TensorRef::new(s, a.shape()).ok())
                            }
                            _ => None,
                        };
                        PackedWeights::gemm(wv, c, requant, *params, x_kind, &opts)
                    }
                    _ => continue,
                }
            }};
        }
        let res = match w.as_ref() {
            Tensor::I8(a) => pk!(a),
            Tensor::I16(a) => pk!(a),
            _ => continue,
        };
        if let Ok(pw) = res {
            let shape = w.shape();
            v.push(pb::PackedInfo {
                op: i as u32,
                isa: isa.name().into(),
                k: shape.iter().skip(1).product::<usize>() as u64,
                n: shape.first().copied().unwrap_or(0) as u64,
                size_bytes: pw.size_bytes() as u64,
            });
        }
    }
    v
}

/// Compiles a `.bc` program into an `.hbm` program.
pub fn compile(bc: &Program, opts: &CompileOptions) -> Result<(Program, CompileReport)> {
    if bc.kind() != pb::ProgramKind::Bc {
        return Err(LowerError::Model("the input is not a .bc program".into()));
    }
    let mut p = bc.clone();
    p.kind = pb::ProgramKind::Hbm as i32;
    let before = p.ops.len();
    if opts.level >= OptLevel::O1 {
        loop {
            let mut changed = fuse_rescale(&mut p, opts.level);
            if opts.level >= OptLevel::O2 && !changed {
                changed = fuse_add(&mut p);
            }
            if !changed {
                break;
            }
        }
    }
    let removed = remove_boundaries(&mut p, &opts.remove_node_type);
    let mut p = cleanup::remove_dead(p);
    let sgs = subgraphs(&p);
    let packed = packed_info(&p);
    let plan = memplan::plan(&p);
    let report = CompileReport {
        ops_before: before,
        ops_after: p.ops.len(),
        fusions: p
            .ops
            .iter()
            .filter(|o| !o.fused_from.is_empty())
            .map(|o| (o.name.clone(), o.fused_from.clone()))
            .collect(),
        removed: removed.clone(),
        subgraphs: sgs
            .iter()
            .map(|s| {
                let pl = if s.placement == pb::Placement::Cpu as i32 {
                    "CPU"
                } else {
                    "BPU"
                };
                (pl.to_string(), s.ops.len())
            })
            .collect(),
        packed: packed.len(),
        memory: (
            plan.total_bytes,
            plan.unplanned_bytes,
            memplan::constant_bytes(&p),
        ),
    };
    p.hbm = Some(pb::HbmInfo {
        optimize_level: opts.level.name().into(),
        source_bc: opts.source.clone(),
        subgraphs: sgs,
        packed,
        memory: Some(plan),
        removed_nodes: removed,
        fusions: report
            .fusions
            .iter()
            .map(|(k, v)| pb::KeyValue {
                key: k.clone(),
                value: v.join(","),
            })
            .collect(),
    });
    hb_bpu::program::validate(&p).map_err(LowerError::Model)?;
    Ok((p, report))
}
