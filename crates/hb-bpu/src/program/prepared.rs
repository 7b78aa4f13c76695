//! Ops of a [`Program`] turned into ready-to-run kernel descriptions:
//! requantisations checked, lookup tables and Softmax / LayerNormalization /
//! Div plans rebuilt from the stored scales (deterministically, so the
//! reference interpreter and the optimised runtime use the same tables).

use super::{dtype_of, pb, shape_of, Program, ProgramError, Result};
use crate::fixed_point::{Requant, Rescale2};
use crate::lut::{Lut, LutFn, LutSpec};
use crate::reference::activation::DivPlan;
use crate::reference::conv::ConvParams;
use crate::reference::layernorm::LayerNormPlan;
use crate::reference::matmul::GemmParams;
use crate::reference::pad::PadMode;
use crate::reference::pool::PoolParams;
use crate::reference::quant::QuantParams;
use crate::reference::resize::{
    CoordMode, GridMode, GridPadding, GridSampleParams, NearestMode, ResizeMode, ResizeParams,
};
use crate::reference::softmax::SoftmaxPlan;
use hb_tensor::DType;

/// A clamp `[lo, hi]` after requantisation.
pub type Clamp = Option<(i64, i64)>;

/// What an op computes, with every table built.
#[derive(Debug, Clone)]
pub enum Kernel {
    /// f32 → int (§2).
    Quantize(QuantParams),
    /// int → f32 with the input's scales.
    Dequantize {
        /// Per-tensor or per-channel scales (f32).
        scales: Vec<f32>,
        /// High-precision (i32) per-channel scales.
        hp_scales: Vec<f64>,
        /// Channel axis.
        axis: usize,
    },
    /// Requantize / Relu / Clip / scale by a constant.
    Rescale {
        /// One or per-channel requantisations.
        requant: Vec<Requant>,
        /// Channel axis of per-channel requants.
        axis: usize,
        /// Clamp after requantisation.
        clamp: Clamp,
    },
    /// Conv or ConvTranspose (weights and bias are constant inputs).
    Conv {
        /// Attributes.
        params: ConvParams,
        /// ConvTranspose.
        transpose: bool,
        /// Per output channel.
        requant: Vec<Requant>,
        /// Fused Relu / Clip.
        clamp: Clamp,
    },
    /// MatMul.
    MatMul {
        /// Per column.
        requant: Vec<Requant>,
    },
    /// Gemm.
    Gemm {
        /// Transpositions.
        params: GemmParams,
        /// Per column.
        requant: Vec<Requant>,
    },
    /// Add / Sub.
    Add(Rescale2),
    /// Mul.
    Mul(Requant),
    /// Div.
    Div(DivPlan),
    /// Concat.
    Concat {
        /// Axis (resolved).
        axis: usize,
        /// Per input.
        requant: Vec<Requant>,
    },
    /// Where.
    Where {
        /// Branch a.
        ra: Requant,
        /// Branch b.
        rb: Requant,
    },
    /// Pad.
    Pad {
        /// `[begin…, end…]`.
        pads: Vec<usize>,
        /// Mode.
        mode: PadMode,
        /// Constant (at the input scale).
        value: i64,
    },
    /// LeakyRelu.
    LeakyRelu {
        /// `q ≥ 0`.
        pos: Requant,
        /// `q < 0`.
        neg: Requant,
    },
    /// PRelu.
    PRelu {
        /// `q ≥ 0`.
        pos: Requant,
        /// Per slope element.
        neg: Vec<Requant>,
        /// Slope shape.
        neg_shape: Vec<usize>,
    },
    /// Lookup table.
    Lut(Box<Lut>),
    /// Softmax.
    Softmax {
        /// Axis (resolved).
        axis: usize,
        /// Tables.
        plan: Box<SoftmaxPlan>,
        /// `q == qmin` is masked.
        mask: bool,
    },
    /// LayerNormalization.
    LayerNorm {
        /// First normalised axis (resolved).
        axis: usize,
        /// Per-element parameters.
        plan: Box<LayerNormPlan>,
    },
    /// MaxPool.
    MaxPool {
        /// Window.
        params: PoolParams,
        /// `s_x / s_y`.
        requant: Requant,
    },
    /// AveragePool.
    AvgPool {
        /// Window.
        params: PoolParams,
        /// Input scale.
        s_x: f32,
        /// Output scale.
        s_y: f32,
    },
    /// GlobalAveragePool.
    GlobalAvgPool {
        /// Input scale.
        s_x: f32,
        /// Output scale.
        s_y: f32,
    },
    /// GlobalMaxPool.
    GlobalMaxPool(Requant),
    /// ReduceMean.
    ReduceMean {
        /// Axes (resolved; empty = all).
        axes: Vec<usize>,
        /// keepdims.
        keepdims: bool,
        /// Input scale.
        s_x: f32,
        /// Output scale.
        s_y: f32,
    },
    /// ReduceMax.
    ReduceMax {
        /// Axes.
        axes: Vec<usize>,
        /// keepdims.
        keepdims: bool,
        /// `s_x / s_y`.
        requant: Requant,
    },
    /// Resize.
    Resize {
        /// Attributes.
        params: ResizeParams,
        /// Input scale.
        s_x: f32,
        /// Output scale.
        s_y: f32,
    },
    /// GridSample.
    GridSample {
        /// Attributes.
        params: GridSampleParams,
        /// Input scale.
        s_x: f32,
        /// Grid scale.
        s_g: f32,
        /// Output scale.
        s_y: f32,
    },
    /// Same data, new shape.
    Reshape,
    /// Transpose.
    Transpose(Vec<usize>),
    /// `y[i] = x[idx[i]]`; with `runs`, the indices are (start, length)
    /// runs of consecutive sources (`pb::TakeOp::runs`).
    Take {
        /// Input 1 holds `[R, 2]` runs instead of one index per element.
        runs: bool,
    },
    /// A float op run by the host.
    Cpu,
}

/// A fused element-wise step (.hbm).
#[derive(Debug, Clone)]
pub enum Post {
    /// `y = clamp(sat(R(y)), lo, hi)` (per tensor or per channel).
    Rescale {
        /// Requantisations.
        requant: Vec<Requant>,
        /// Channel axis.
        axis: usize,
        /// Clamp.
        clamp: Clamp,
    },
    /// `y = Rescale2(y, other)` (operands swapped when `main_is_b`).
    Add {
        /// Tensor id of the other operand.
        other: usize,
        /// The op's output is operand b.
        main_is_b: bool,
        /// Multipliers and shift.
        r: Rescale2,
    },
}

/// One op ready to run.
#[derive(Debug, Clone)]
pub struct PreparedOp {
    /// Index in `Program.ops`.
    pub index: usize,
    /// Op name.
    pub name: String,
    /// Source op type.
    pub op_type: String,
    /// Input tensor ids (`None` = omitted).
    pub inputs: Vec<Option<usize>>,
    /// Output tensor ids.
    pub outputs: Vec<usize>,
    /// The computation.
    pub kernel: Kernel,
    /// Fused steps applied to output 0.
    pub post: Vec<Post>,
    /// Runs on the CPU.
    pub on_cpu: bool,
}

impl PreparedOp {
    /// An error naming this op.
    pub fn err(&self, msg: impl std::fmt::Display) -> ProgramError {
        ProgramError::Op {
            op: self.name.clone(),
            op_type: self.op_type.clone(),
            msg: msg.to_string(),
        }
    }
}

/// The integer range of a storage type.
pub fn int_range(dt: DType) -> Option<(i64, i64)> {
    Some(match dt {
        DType::I8 => (i8::MIN.into(), i8::MAX.into()),
        DType::I16 => (i16::MIN.into(), i16::MAX.into()),
        DType::I32 => (i32::MIN.into(), i32::MAX.into()),
        _ => return None,
    })
}

/// A stored requantisation, checked.
pub fn requant(r: Option<&pb::Requant>) -> std::result::Result<Requant, String> {
    let r = r.ok_or("missing requantisation")?;
    Requant::new(r.multiplier, r.shift).map_err(|e| e.to_string())
}

fn requants(rs: &[pb::Requant]) -> std::result::Result<Vec<Requant>, String> {
    if rs.is_empty() {
        return Err("no requantisation".into());
    }
    rs.iter().map(|r| requant(Some(r))).collect()
}

fn usizes(v: &[u64]) -> Vec<usize> {
    v.iter().map(|&x| x as usize).collect()
}

fn axis(a: i64, rank: usize) -> std::result::Result<usize, String> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r.max(1)).contains(&v) {
        Ok(v as usize)
    } else {
        Err(format!("axis {a} out of range for rank {rank}"))
    }
}

fn clamp_of(has: bool, lo: i64, hi: i64) -> std::result::Result<Clamp, String> {
    if !has {
        return Ok(None);
    }
    if lo > hi {
        return Err(format!("empty clamp [{lo}, {hi}]"));
    }
    Ok(Some((lo, hi)))
}

fn lut_fn(l: &pb::LutOp) -> LutFn {
    use pb::LutFunc as F;
    match l.func() {
        F::LutSigmoid => LutFn::Sigmoid,
        F::LutTanh => LutFn::Tanh,
        F::LutExp => LutFn::Exp,
        F::LutErf => LutFn::Erf,
        F::LutGelu => LutFn::Gelu,
        F::LutGeluTanh => LutFn::GeluTanh,
        F::LutHardSigmoid => LutFn::HardSigmoid {
            alpha: l.alpha,
            beta: l.beta,
        },
        F::LutHardSwish => LutFn::HardSwish,
        F::LutSin => LutFn::Sin,
        F::LutCos => LutFn::Cos,
        F::LutSqrt => LutFn::Sqrt,
        F::LutReciprocal => LutFn::Reciprocal,
        F::LutPow => LutFn::Pow { exponent: l.alpha },
    }
}

fn coord_mode(s: &str) -> std::result::Result<CoordMode, String> {
    Ok(match s {
        "half_pixel" | "" => CoordMode::HalfPixel,
        "half_pixel_symmetric" => CoordMode::HalfPixelSymmetric,
        "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
        "align_corners" => CoordMode::AlignCorners,
        "asymmetric" => CoordMode::Asymmetric,
        "tf_half_pixel_for_nn" => CoordMode::TfHalfPixelForNn,
        other => return Err(format!("coordinate mode '{other}'")),
    })
}

fn nearest_mode(s: &str) -> std::result::Result<NearestMode, String> {
    Ok(match s {
        "round_prefer_floor" | "" => NearestMode::RoundPreferFloor,
        "round_prefer_ceil" => NearestMode::RoundPreferCeil,
        "floor" => NearestMode::Floor,
        "ceil" => NearestMode::Ceil,
        other => return Err(format!("nearest mode '{other}'")),
    })
}

fn pool_params(p: &pb::PoolOp) -> PoolParams {
    PoolParams {
        kernel: usizes(&p.kernel),
        strides: usizes(&p.strides),
        pads: usizes(&p.pads),
        dilations: usizes(&p.dilations),
        ceil_mode: p.ceil_mode,
        count_include_pad: p.count_include_pad,
    }
}

/// Prepares every op of `p`.
pub fn prepare(p: &Program) -> Result<Vec<PreparedOp>> {
    p.ops
        .iter()
        .enumerate()
        .map(|(i, op)| prepare_op(p, i, op))
        .collect()
}

/// Prepares one op.
pub fn prepare_op(p: &Program, index: usize, op: &pb::Op) -> Result<PreparedOp> {
    let mut po = PreparedOp {
        index,
        name: op.name.clone(),
        op_type: op.op_type.clone(),
        inputs: op
            .inputs
            .iter()
            .map(|&i| (i >= 0).then_some(i as usize))
            .collect(),
        outputs: op.outputs.iter().map(|&o| o as usize).collect(),
        kernel: Kernel::Cpu,
        post: Vec::new(),
        on_cpu: op.placement() == pb::Placement::Cpu,
    };
    match build(p, op, &po) {
        Ok((k, post)) => {
            po.kernel = k;
            po.post = post;
            Ok(po)
        }
        Err(msg) => Err(po.err(msg)),
    }
}

type Built = std::result::Result<(Kernel, Vec<Post>), String>;

fn build(p: &Program, op: &pb::Op, po: &PreparedOp) -> Built {
    use pb::op::Kind as K;
    let tinfo = |id: Option<usize>| -> std::result::Result<&pb::TensorInfo, String> {
        id.and_then(|i| p.tensors.get(i))
            .ok_or_else(|| "missing operand".to_string())
    };
    let in0 = || tinfo(po.inputs.first().copied().flatten());
    let out0 = || tinfo(po.outputs.first().copied());
    let dt = |t: &pb::TensorInfo| dtype_of(t).map_err(|e| e.to_string());
    let rank_in = || in0().map(|t| t.shape.len());
    let kind = op.kind.as_ref().ok_or("op has no kind")?;
    let k = match kind {
        K::Quantize(q) => {
            let o = out0()?;
            let (tlo, thi) = int_range(dt(o)?).ok_or("Quantize output must be i8/i16/i32")?;
            if q.lo < tlo || q.hi > thi {
                return Err(format!(
                    "range [{}, {}] does not fit the output",
                    q.lo, q.hi
                ));
            }
            let mut qp = QuantParams::with_range(q.scale, q.lo, q.hi).map_err(|e| e.to_string())?;
            qp.keep_masks = q.keep_masks;
            if q.mask_limit < 0.0 {
                qp.mask_limit = q.mask_limit;
            }
            Kernel::Quantize(qp)
        }
        K::Dequantize(_) => {
            let t = in0()?;
            let q = t.quant.clone().unwrap_or_default();
            if q.scales.is_empty() && q.hp_scales.is_empty() {
                return Err(format!("input '{}' has no scales", t.name));
            }
            let bad = q.scales.iter().any(|s| !(s.is_finite() && *s > 0.0))
                || q.hp_scales.iter().any(|s| !(s.is_finite() && *s > 0.0));
            if bad {
                return Err(format!("input '{}' has a non-positive scale", t.name));
            }
            Kernel::Dequantize {
                scales: q.scales.clone(),
                hp_scales: q.hp_scales.clone(),
                axis: axis(i64::from(q.axis), t.shape.len())?,
            }
        }
        K::Rescale(r) => Kernel::Rescale {
            requant: requants(&r.requant)?,
            axis: axis(i64::from(r.axis), rank_in()?)?,
            clamp: clamp_of(r.has_clamp, r.lo, r.hi)?,
        },
        K::Conv(c) => Kernel::Conv {
            params: ConvParams {
                strides: usizes(&c.strides),
                dilations: usizes(&c.dilations),
                pads: usizes(&c.pads),
                group: c.group as usize,
                output_padding: usizes(&c.output_padding),
            },
            transpose: c.transpose,
            requant: requants(&c.requant)?,
            clamp: clamp_of(c.has_clamp, c.lo, c.hi)?,
        },
        K::Matmul(m) => Kernel::MatMul {
            requant: requants(&m.requant)?,
        },
        K::Gemm(g) => Kernel::Gemm {
            params: GemmParams {
                trans_a: g.trans_a,
                trans_b: g.trans_b,
            },
            requant: requants(&g.requant)?,
        },
        K::Add(a) => {
            if a.shift > crate::fixed_point::MAX_SHIFT || a.ma == i32::MIN || a.mb == i32::MIN {
                return Err("add rescale out of range".into());
            }
            Kernel::Add(Rescale2 {
                ma: a.ma,
                mb: a.mb,
                shift: a.shift,
            })
        }
        K::Mul(m) => Kernel::Mul(requant(m.requant.as_ref())?),
        K::Div(d) => {
            let b = tinfo(po.inputs.get(1).copied().flatten())?;
            let plan = match dt(b)? {
                DType::I8 => DivPlan::new::<i8>(d.s_a, d.s_b, d.s_y),
                DType::I16 => DivPlan::new::<i16>(d.s_a, d.s_b, d.s_y),
                other => return Err(format!("Div divisor of type {other}")),
            }
            .map_err(|e| e.to_string())?;
            Kernel::Div(plan)
        }
        K::Concat(c) => Kernel::Concat {
            axis: axis(c.axis, out0()?.shape.len())?,
            requant: requants(&c.requant)?,
        },
        K::WhereOp(w) => Kernel::Where {
            ra: requant(w.ra.as_ref())?,
            rb: requant(w.rb.as_ref())?,
        },
        K::Pad(pd) => Kernel::Pad {
            pads: usizes(&pd.pads),
            mode: match pd.mode() {
                pb::PadMode::PadConstant => PadMode::Constant,
                pb::PadMode::PadEdge => PadMode::Edge,
                pb::PadMode::PadReflect => PadMode::Reflect,
            },
            value: pd.value,
        },
        K::LeakyRelu(l) => Kernel::LeakyRelu {
            pos: requant(l.pos.as_ref())?,
            neg: requant(l.neg.as_ref())?,
        },
        K::Prelu(pr) => Kernel::PRelu {
            pos: requant(pr.pos.as_ref())?,
            neg: requants(&pr.neg)?,
            neg_shape: usizes(&pr.neg_shape),
        },
        K::Lut(l) => {
            let (mut ilo, mut ihi) =
                int_range(dt(in0()?)?).ok_or("LUT input must be an integer")?;
            let (mut olo, mut ohi) =
                int_range(dt(out0()?)?).ok_or("LUT output must be an integer")?;
            if (l.in_lo, l.in_hi) != (0, 0) {
                if l.in_lo < ilo || l.in_hi > ihi || l.in_lo > l.in_hi {
                    return Err(format!("LUT input range [{}, {}]", l.in_lo, l.in_hi));
                }
                (ilo, ihi) = (l.in_lo, l.in_hi);
            }
            if (l.out_lo, l.out_hi) != (0, 0) {
                if l.out_lo < olo || l.out_hi > ohi || l.out_lo > l.out_hi {
                    return Err(format!("LUT output range [{}, {}]", l.out_lo, l.out_hi));
                }
                (olo, ohi) = (l.out_lo, l.out_hi);
            }
            let spec = LutSpec {
                in_scale: f64::from(l.s_x),
                in_lo: ilo,
                in_hi: ihi,
                out_scale: f64::from(l.s_y),
                out_lo: olo,
                out_hi: ohi,
            };
            let f = lut_fn(l);
            Kernel::Lut(Box::new(
                Lut::build(|x| f.eval(x), &spec).map_err(|e| e.to_string())?,
            ))
        }
        K::Softmax(s) => {
            let plan = match dt(in0()?)? {
                DType::I8 => SoftmaxPlan::new::<i8>(s.s_x, s.s_y),
                DType::I16 => SoftmaxPlan::new::<i16>(s.s_x, s.s_y),
                other => return Err(format!("Softmax input of type {other}")),
            }
            .map_err(|e| e.to_string())?;
            Kernel::Softmax {
                axis: axis(s.axis, rank_in()?)?,
                plan: Box::new(plan),
                mask: s.mask_qmin,
            }
        }
        K::LayerNorm(l) => {
            let beta = (!l.beta.is_empty()).then_some(&l.beta[..]);
            Kernel::LayerNorm {
                axis: axis(l.axis, rank_in()?)?,
                plan: Box::new(
                    LayerNormPlan::new(l.s_x, l.s_y, &l.gamma, beta, l.epsilon)
                        .map_err(|e| e.to_string())?,
                ),
            }
        }
        K::Pool(pl) => match pl.kind() {
            pb::PoolKind::PoolMax => Kernel::MaxPool {
                params: pool_params(pl),
                requant: requant(pl.requant.as_ref())?,
            },
            pb::PoolKind::PoolAverage => Kernel::AvgPool {
                params: pool_params(pl),
                s_x: pl.s_x,
                s_y: pl.s_y,
            },
            pb::PoolKind::PoolGlobalAverage => Kernel::GlobalAvgPool {
                s_x: pl.s_x,
                s_y: pl.s_y,
            },
            pb::PoolKind::PoolGlobalMax => Kernel::GlobalMaxPool(requant(pl.requant.as_ref())?),
        },
        K::Reduce(r) => {
            let rank = rank_in()?;
            let axes = r
                .axes
                .iter()
                .map(|&a| axis(a as i64, rank))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            match r.kind() {
                pb::ReduceKind::ReduceMean => Kernel::ReduceMean {
                    axes,
                    keepdims: r.keepdims,
                    s_x: r.s_x,
                    s_y: r.s_y,
                },
                pb::ReduceKind::ReduceMax => Kernel::ReduceMax {
                    axes,
                    keepdims: r.keepdims,
                    requant: requant(r.requant.as_ref())?,
                },
            }
        }
        K::Resize(r) => Kernel::Resize {
            params: ResizeParams {
                mode: if r.mode == 1 {
                    ResizeMode::Linear
                } else {
                    ResizeMode::Nearest
                },
                coord: coord_mode(&r.coord)?,
                nearest: nearest_mode(&r.nearest)?,
                out_shape: shape_of(out0()?),
                scales: r.scales.clone(),
            },
            s_x: r.s_x,
            s_y: r.s_y,
        },
        K::GridSample(g) => Kernel::GridSample {
            params: GridSampleParams {
                mode: if g.bilinear {
                    GridMode::Bilinear
                } else {
                    GridMode::Nearest
                },
                padding: if g.border {
                    GridPadding::Border
                } else {
                    GridPadding::Zeros
                },
                align_corners: g.align_corners,
            },
            s_x: g.s_x,
            s_g: g.s_g,
            s_y: g.s_y,
        },
        K::Reshape(_) => Kernel::Reshape,
        K::Transpose(t) => {
            let perm = usizes(&t.perm);
            let mut seen = perm.clone();
            seen.sort_unstable();
            if seen != (0..perm.len()).collect::<Vec<_>>() || perm.len() != rank_in()? {
                return Err(format!("bad permutation {perm:?}"));
            }
            Kernel::Transpose(perm)
        }
        K::Take(t) => Kernel::Take { runs: t.runs },
        K::Cpu(_) => Kernel::Cpu,
    };
    let mut post = Vec::new();
    for ps in &op.post {
        match &ps.kind {
            Some(pb::post_op::Kind::Rescale(r)) => post.push(Post::Rescale {
                requant: requants(&r.requant)?,
                axis: axis(i64::from(r.axis), out0()?.shape.len())?,
                clamp: clamp_of(r.has_clamp, r.lo, r.hi)?,
            }),
            Some(pb::post_op::Kind::Add(a)) => {
                if a.shift > crate::fixed_point::MAX_SHIFT {
                    return Err("fused add shift out of range".into());
                }
                post.push(Post::Add {
                    other: a.other as usize,
                    main_is_b: a.main_is_b,
                    r: Rescale2 {
                        ma: a.ma,
                        mb: a.mb,
                        shift: a.shift,
                    },
                })
            }
            None => return Err("empty fused step".into()),
        }
    }
    Ok((k, post))
}
