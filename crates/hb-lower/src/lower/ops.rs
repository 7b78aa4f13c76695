//! Computing ops other than the weighted ones: element-wise arithmetic,
//! activations and lookup tables, Softmax, LayerNormalization, pooling,
//! reductions, Resize and GridSample (docs/integer-semantics.md §6–§14).
//! Each rule either emits the integer op (`Ok(None)`) or says why the node
//! runs on the CPU in float (`Ok(Some(reason))`).

use super::builder::{ratio, rq, Q};
use super::{weighted, Lowerer};
use crate::Result;
use hb_bpu::fixed_point::Rescale2;
use hb_bpu::program::pb::{self, op::Kind};
use hb_bpu::reference::activation::{clip_bounds, DivPlan};
use hb_bpu::reference::softmax::SoftmaxPlan;
use hb_ir::Node;
use hb_tensor::{DType, Tensor};

type Placed = Result<Option<String>>;

/// Unwraps a `Result<T, impl Display>`, or returns "runs on the CPU
/// because …" from the rule.
macro_rules! or_cpu {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Some(e.to_string())),
        }
    };
}

/// Dispatches a computing node.
pub(crate) fn lower_compute(lw: &mut Lowerer, n: &Node) -> Placed {
    match n.op_type.as_str() {
        "Conv" => weighted::lower_conv(lw, n, false),
        "ConvTranspose" => weighted::lower_conv(lw, n, true),
        "MatMul" => weighted::lower_matmul(lw, n),
        "Gemm" => weighted::lower_gemm(lw, n),
        "Add" | "Sub" => lower_add(lw, n),
        "Mul" => lower_mul(lw, n),
        "Div" => lower_div(lw, n),
        "Pow" => lower_pow(lw, n),
        "Relu" | "Clip" => lower_clip(lw, n),
        "LeakyRelu" => lower_leaky(lw, n),
        "PRelu" => lower_prelu(lw, n),
        "Sigmoid" | "Tanh" | "Exp" | "Erf" | "Gelu" | "HardSigmoid" | "HardSwish" | "Sin"
        | "Cos" | "Sqrt" | "Reciprocal" => lower_lut(lw, n),
        "Softmax" => lower_softmax(lw, n),
        "LayerNormalization" => lower_layernorm(lw, n),
        "MaxPool" | "AveragePool" | "GlobalAveragePool" | "GlobalMaxPool" => lower_pool(lw, n),
        "ReduceMean" | "ReduceMax" => lower_reduce(lw, n),
        "Resize" => lower_resize(lw, n),
        "GridSample" => lower_grid_sample(lw, n),
        _ => Ok(Some("no integer kernel".into())),
    }
}

/// An operand: a quantized value or a float constant.
enum Operand {
    Quant(Q, usize),
    Const(Tensor),
}

fn operand(lw: &Lowerer, v: &str) -> Option<Operand> {
    if let Some((q, id)) = lw.any_quant(v) {
        return Some(Operand::Quant(q, id));
    }
    lw.constant(v)
        .filter(|t| t.dtype() == DType::F32)
        .map(Operand::Const)
}

/// A constant quantized per tensor as int16 (`s = max|c| / 32767`).
fn const_q(lw: &mut Lowerer, v: &str, t: &Tensor) -> Result<(Q, usize)> {
    let m = t
        .to_f32()
        .map(|a| a.iter().fold(0f32, |m, x| m.max(x.abs())))
        .unwrap_or(0.0);
    let s = if m > 0.0 && m.is_finite() {
        m / 32767.0
    } else {
        1.0
    };
    let q = Q::feature(DType::I16, s, false);
    let id = lw.quantize_constant(v, t, &q)?;
    Ok((q, id))
}

fn materialize(lw: &mut Lowerer, v: &str, o: Operand) -> Result<(Q, usize)> {
    match o {
        Operand::Quant(q, id) => Ok((q, id)),
        Operand::Const(t) => const_q(lw, v, &t),
    }
}

fn out_demand(lw: &mut Lowerer, n: &Node) -> std::result::Result<(String, Q), String> {
    let out = n.outputs[0].clone();
    match lw.demand(&out) {
        Some(q) => Ok((out, q)),
        None => Err("output is not re-quantized (runs in float, as the calibrated model)".into()),
    }
}

fn emit(
    lw: &mut Lowerer,
    n: &Node,
    ins: &[Option<usize>],
    out: &str,
    q: &Q,
    qtype: &str,
    kind: Kind,
) -> Result<()> {
    let (_, shape) = lw.info(out)?;
    let yid = lw.qvalue(out, q, &shape);
    lw.b.op(&n.name, &n.op_type, ins, &[yid], false, qtype, kind);
    lw.finish(out, q.clone(), yid);
    Ok(())
}

fn rescale_kind(r: hb_bpu::fixed_point::Requant, clamp: Option<(i64, i64)>) -> Kind {
    Kind::Rescale(pb::RescaleOp {
        requant: vec![rq(r)],
        axis: 0,
        has_clamp: clamp.is_some(),
        lo: clamp.map_or(0, |c| c.0),
        hi: clamp.map_or(0, |c| c.1),
    })
}

fn quant_input(lw: &Lowerer, n: &Node, k: usize) -> std::result::Result<(Q, usize), String> {
    n.input(k)
        .and_then(|x| lw.any_quant(x))
        .ok_or_else(|| format!("input {k} is not quantized"))
}

fn lower_add(lw: &mut Lowerer, n: &Node) -> Placed {
    let (a, b) = (n.inputs[0].clone(), n.inputs[1].clone());
    let (Some(oa), Some(ob)) = (operand(lw, &a), operand(lw, &b)) else {
        return Ok(Some("an input is not quantized".into()));
    };
    if matches!((&oa, &ob), (Operand::Const(_), Operand::Const(_))) {
        return Ok(Some("constant inputs".into()));
    }
    // A masked entry (qmin of a `keep_masks` input, an additive attention
    // mask) is a value like any other to Rescale2: `qmin · s_mask` is small
    // next to the scores unless the mask's scale happens to dwarf theirs, so
    // the sum would lose the mask. In float, −inf + x stays −inf.
    let masked = |o: &Operand| matches!(o, Operand::Quant(q, _) if q.keep_masks);
    if masked(&oa) || masked(&ob) {
        return Ok(Some(
            "an input holds attention-mask values (keep_masks)".into(),
        ));
    }
    let (out, qy) = or_cpu!(out_demand(lw, n));
    let (qa, ia) = materialize(lw, &a, oa)?;
    let (qb, ib) = materialize(lw, &b, ob)?;
    let sy = f64::from(qy.s());
    let sign = if n.op_type == "Sub" { -1.0 } else { 1.0 };
    let r = or_cpu!(Rescale2::from_ratios(
        f64::from(qa.s()) / sy,
        sign * f64::from(qb.s()) / sy
    ));
    emit(
        lw,
        n,
        &[Some(ia), Some(ib)],
        &out,
        &qy,
        qa.qtype(),
        Kind::Add(pb::AddOp {
            ma: r.ma,
            mb: r.mb,
            shift: r.shift,
        }),
    )?;
    Ok(None)
}

/// `x · c` (or `x / c`) with a constant `c` varying along at most one axis
/// of the output: one requantisation per constant element along that axis
/// (exact ratios, no quantized constant), after broadcasting `x` with a
/// `Take` when needed. `None` when `c` varies along several axes.
fn scale_by_const(
    lw: &mut Lowerer,
    n: &Node,
    x: (&Q, usize),
    c: &Tensor,
    out: &str,
    qy: &Q,
    divide: bool,
) -> Result<Option<std::result::Result<(), String>>> {
    let (qx, xid) = x;
    let (_, oshape) = lw.info(out)?;
    let Ok(cf) = c.to_f32() else { return Ok(None) };
    let Some(cb) = cf.broadcast(ndarray::IxDyn(&oshape)) else {
        return Ok(None);
    };
    let cs = cf.shape();
    let off = oshape.len().saturating_sub(cs.len());
    let varying: Vec<usize> = cs
        .iter()
        .enumerate()
        .filter(|(_, &d)| d > 1)
        .map(|(k, _)| k + off)
        .collect();
    if varying.len() > 1 {
        return Ok(None);
    }
    let axis = varying.first().copied().unwrap_or(0);
    let vals: Vec<f32> = if varying.is_empty() {
        vec![cf.iter().next().copied().unwrap_or(0.0)]
    } else {
        cf.iter().copied().collect()
    };
    let _ = cb;
    let (sx, sy) = (f64::from(qx.s()), f64::from(qy.s()));
    let mut rs = Vec::new();
    for &v in &vals {
        let v = f64::from(v);
        let r = if divide {
            if v == 0.0 || !v.is_finite() {
                return Ok(Some(Err("division by a zero constant".into())));
            }
            sx / (v * sy)
        } else {
            sx * v / sy
        };
        match ratio(r) {
            Ok(r) => rs.push(rq(r)),
            Err(e) => return Ok(Some(Err(e.to_string()))),
        }
    }
    let xshape = lw.b.shape(xid);
    let src = if xshape != oshape {
        let numel: usize = xshape.iter().product();
        let iota = ndarray::ArrayD::from_shape_vec(
            ndarray::IxDyn(&xshape),
            (0..numel as i64).collect::<Vec<i64>>(),
        )
        .map_err(|e| super::model_err(n, e))?;
        let Some(b) = iota.broadcast(ndarray::IxDyn(&oshape)) else {
            return Ok(None);
        };
        let idx = Tensor::I64(b.as_standard_layout().into_owned());
        let runs = super::movement::take_runs(&idx);
        let table = runs.as_ref().unwrap_or(&idx);
        let iid =
            lw.b.constant(&format!("{}.broadcast", n.name), table, None)?;
        let tid = lw.qvalue(&format!("{}_broadcast", n.name), qx, &oshape);
        lw.b.op(
            &format!("{}_Broadcast", n.name),
            "Expand",
            &[Some(xid), Some(iid)],
            &[tid],
            false,
            qx.qtype(),
            Kind::Take(pb::TakeOp {
                runs: runs.is_some(),
            }),
        );
        tid
    } else {
        xid
    };
    let yid = lw.qvalue(out, qy, &oshape);
    lw.b.op(
        &n.name,
        &n.op_type,
        &[Some(src)],
        &[yid],
        false,
        qx.qtype(),
        Kind::Rescale(pb::RescaleOp {
            requant: rs,
            axis: axis as i32,
            has_clamp: false,
            lo: 0,
            hi: 0,
        }),
    );
    lw.finish(out, qy.clone(), yid);
    Ok(Some(Ok(())))
}

fn lower_mul(lw: &mut Lowerer, n: &Node) -> Placed {
    let (a, b) = (n.inputs[0].clone(), n.inputs[1].clone());
    let (Some(oa), Some(ob)) = (operand(lw, &a), operand(lw, &b)) else {
        return Ok(Some("an input is not quantized".into()));
    };
    let (out, qy) = or_cpu!(out_demand(lw, n));
    let sy = f64::from(qy.s());
    // x · c with a constant: one requantisation per constant element.
    let _ = sy;
    for (o, other) in [(&oa, &ob), (&ob, &oa)] {
        if let (Operand::Quant(q, id), Operand::Const(c)) = (o, other) {
            if let Some(r) = scale_by_const(lw, n, (q, *id), c, &out, &qy, false)? {
                or_cpu!(r);
                return Ok(None);
            }
        }
    }
    let (qa, ia) = materialize(lw, &a, oa)?;
    let (qb, ib) = materialize(lw, &b, ob)?;
    let r = or_cpu!(ratio(f64::from(qa.s()) * f64::from(qb.s()) / sy));
    emit(
        lw,
        n,
        &[Some(ia), Some(ib)],
        &out,
        &qy,
        qa.qtype(),
        Kind::Mul(pb::MulOp {
            requant: Some(rq(r)),
        }),
    )?;
    Ok(None)
}

fn lower_div(lw: &mut Lowerer, n: &Node) -> Placed {
    let (a, b) = (n.inputs[0].clone(), n.inputs[1].clone());
    let (Some(oa), Some(ob)) = (operand(lw, &a), operand(lw, &b)) else {
        return Ok(Some("an input is not quantized".into()));
    };
    let (out, qy) = or_cpu!(out_demand(lw, n));
    let sy = f64::from(qy.s());
    let _ = sy;
    if let (Operand::Quant(q, id), Operand::Const(c)) = (&oa, &ob) {
        if let Some(r) = scale_by_const(lw, n, (q, *id), c, &out, &qy, true)? {
            or_cpu!(r);
            return Ok(None);
        }
    }
    let (qa, ia) = materialize(lw, &a, oa)?;
    let (qb, ib) = materialize(lw, &b, ob)?;
    let plan = match qb.dtype {
        DType::I8 => DivPlan::new::<i8>(qa.s(), qb.s(), qy.s()),
        _ => DivPlan::new::<i16>(qa.s(), qb.s(), qy.s()),
    };
    or_cpu!(plan);
    emit(
        lw,
        n,
        &[Some(ia), Some(ib)],
        &out,
        &qy,
        qa.qtype(),
        Kind::Div(pb::DivOp {
            s_a: qa.s(),
            s_b: qb.s(),
            s_y: qy.s(),
        }),
    )?;
    Ok(None)
}

fn lower_pow(lw: &mut Lowerer, n: &Node) -> Placed {
    let e = n.input(1).and_then(|e| lw.constant(e)).and_then(|t| {
        (t.len() == 1)
            .then(|| t.to_f64_vec().ok())
            .flatten()
            .map(|v| v[0])
    });
    let (qx, xid) = or_cpu!(quant_input(lw, n, 0));
    let (out, qy) = or_cpu!(out_demand(lw, n));
    match e {
        Some(2.0) => {
            let r = or_cpu!(ratio(
                f64::from(qx.s()) * f64::from(qx.s()) / f64::from(qy.s())
            ));
            let (_, shape) = lw.info(&out)?;
            let yid = lw.qvalue(&out, &qy, &shape);
            lw.b.op(
                &n.name,
                "Pow",
                &[Some(xid), Some(xid)],
                &[yid],
                false,
                qx.qtype(),
                Kind::Mul(pb::MulOp {
                    requant: Some(rq(r)),
                }),
            );
            lw.finish(&out, qy, yid);
            Ok(None)
        }
        Some(1.0) => {
            let r = or_cpu!(ratio(f64::from(qx.s()) / f64::from(qy.s())));
            emit(
                lw,
                n,
                &[Some(xid)],
                &out,
                &qy,
                qx.qtype(),
                rescale_kind(r, None),
            )?;
            Ok(None)
        }
        Some(0.5) => emit_lut(lw, n, qx, xid, &out, qy, pb::LutFunc::LutSqrt, 0.0, 0.0),
        // Any other constant exponent (x³ of the tanh Gelu, ...): a lookup
        // table over the input's integer range (docs/integer-semantics.md §10).
        Some(e) if e.is_finite() => emit_lut(lw, n, qx, xid, &out, qy, pb::LutFunc::LutPow, e, 0.0),
        _ => Ok(Some("the exponent is not a finite constant".into())),
    }
}

fn clip_const(
    lw: &Lowerer,
    n: &Node,
    k: usize,
    attr: &str,
) -> std::result::Result<Option<f32>, String> {
    if let Some(x) = n.input(k) {
        let t = lw.constant(x).ok_or("Clip bound is not constant")?;
        return Ok(t.to_f32().ok().and_then(|a| a.iter().next().copied()));
    }
    Ok(n.get_float(attr).ok().flatten())
}

fn lower_clip(lw: &mut Lowerer, n: &Node) -> Placed {
    let (qx, xid) = or_cpu!(quant_input(lw, n, 0));
    let (out, qy) = or_cpu!(out_demand(lw, n));
    let (min, max) = if n.op_type == "Relu" {
        (Some(0.0), None)
    } else {
        (
            or_cpu!(clip_const(lw, n, 1, "min")),
            or_cpu!(clip_const(lw, n, 2, "max")),
        )
    };
    let (lo, hi) = or_cpu!(match qy.dtype {
        DType::I8 => clip_bounds::<i8>(min, max, qy.s()),
        _ => clip_bounds::<i16>(min, max, qy.s()),
    });
    let (lo, hi) = (lo.max(qy.lo), hi.min(qy.hi));
    let (lo, hi) = (lo.min(hi), hi);
    let r = or_cpu!(ratio(f64::from(qx.s()) / f64::from(qy.s())));
    emit(
        lw,
        n,
        &[Some(xid)],
        &out,
        &qy,
        qx.qtype(),
        rescale_kind(r, Some((lo, hi.max(lo)))),
    )?;
    Ok(None)
}

fn lower_leaky(lw: &mut Lowerer, n: &Node) -> Placed {
    let (qx, xid) = or_cpu!(quant_input(lw, n, 0));
    let (out, qy) = or_cpu!(out_demand(lw, n));
    let alpha = f64::from(n.float_or("alpha", 0.01).unwrap_or(0.01));
    let base = f64::from(qx.s()) / f64::from(qy.s());
    let (pos, neg) = (or_cpu!(ratio(base)), or_cpu!(ratio(alpha * base)));
    emit(
        lw,
        n,
        &[Some(xid)],
        &out,
        &qy,
        qx.qtype(),
        Kind::LeakyRelu(pb::LeakyReluOp {
            pos: Some(rq(pos)),
            neg: Some(rq(neg)),
        }),
    )?;
    Ok(None)
}

fn lower_prelu(lw: &mut Lowerer, n: &Node) -> Placed {
    let (qx, xid) = or_cpu!(quant_input(lw, n, 0));
    let Some(slope) = n.input(1).and_then(|s| lw.constant(s)) else {
        return Ok(Some("slope is not constant".into()));
    };
    let (out, qy) = or_cpu!(out_demand(lw, n));
    let base = f64::from(qx.s()) / f64::from(qy.s());
    let pos = or_cpu!(ratio(base));
    let mut neg = Vec::new();
    for s in or_cpu!(slope.to_f64_vec()) {
        neg.push(rq(or_cpu!(ratio(s * base))));
    }
    emit(
        lw,
        n,
        &[Some(xid)],
        &out,
        &qy,
        qx.qtype(),
        Kind::Prelu(pb::PReluOp {
            pos: Some(rq(pos)),
            neg,
            neg_shape: slope.shape().iter().map(|&d| d as u64).collect(),
        }),
    )?;
    Ok(None)
}

#[allow(clippy::too_many_arguments)]
fn emit_lut(
    lw: &mut Lowerer,
    n: &Node,
    qx: Q,
    xid: usize,
    out: &str,
    qy: Q,
    func: pb::LutFunc,
    alpha: f64,
    beta: f64,
) -> Placed {
    let (ilo, ihi) = (qx.lo, qx.hi);
    let (olo, ohi) = (qy.lo, qy.hi);
    let lut = pb::LutOp {
        func: func as i32,
        alpha,
        beta,
        s_x: qx.s(),
        s_y: qy.s(),
        in_lo: ilo,
        in_hi: ihi,
        out_lo: olo,
        out_hi: ohi,
    };
    let spec = hb_bpu::lut::LutSpec {
        in_scale: f64::from(qx.s()),
        in_lo: ilo,
        in_hi: ihi,
        out_scale: f64::from(qy.s()),
        out_lo: olo,
        out_hi: ohi,
    };
    or_cpu!(hb_bpu::lut::Lut::build(|_| 0.0, &spec));
    emit(lw, n, &[Some(xid)], out, &qy, qx.qtype(), Kind::Lut(lut))?;
    Ok(None)
}

fn lower_lut(lw: &mut Lowerer, n: &Node) -> Placed {
    use pb::LutFunc as F;
    let (qx, xid) = or_cpu!(quant_input(lw, n, 0));
    let (out, qy) = or_cpu!(out_demand(lw, n));
    let (f, a, b) = match n.op_type.as_str() {
        "Sigmoid" => (F::LutSigmoid, 0.0, 0.0),
        "Tanh" => (F::LutTanh, 0.0, 0.0),
        "Exp" => (F::LutExp, 0.0, 0.0),
        "Erf" => (F::LutErf, 0.0, 0.0),
        "Gelu" => {
            if n.string_or("approximate", "none").unwrap_or_default() == "tanh" {
                (F::LutGeluTanh, 0.0, 0.0)
            } else {
                (F::LutGelu, 0.0, 0.0)
            }
        }
        "HardSigmoid" => (
            F::LutHardSigmoid,
            f64::from(n.float_or("alpha", 0.2).unwrap_or(0.2)),
            f64::from(n.float_or("beta", 0.5).unwrap_or(0.5)),
        ),
        "HardSwish" => (F::LutHardSwish, 0.0, 0.0),
        "Sin" => (F::LutSin, 0.0, 0.0),
        "Cos" => (F::LutCos, 0.0, 0.0),
        "Sqrt" => (F::LutSqrt, 0.0, 0.0),
        _ => (F::LutReciprocal, 0.0, 0.0),
    };
    emit_lut(lw, n, qx, xid, &out, qy, f, a, b)
}

fn norm_axis(a: i64, rank: usize) -> std::result::Result<usize, String> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r).contains(&v) {
        Ok(v as usize)
    } else {
        Err(format!("axis {a} out of range"))
    }
}

fn lower_softmax(lw: &mut Lowerer, n: &Node) -> Placed {
    let (qx, xid) = or_cpu!(quant_input(lw, n, 0));
    let (out, qy) = or_cpu!(out_demand(lw, n));
    let rank = lw.b.shape(xid).len();
    let opset = lw.opsets.get("").copied().unwrap_or(13);
    let axis = or_cpu!(norm_axis(
        n.int_or("axis", if opset >= 13 { -1 } else { 1 })
            .unwrap_or(-1),
        rank
    ));
    if opset < 13 && axis != rank - 1 {
        return Ok(Some("opset < 13 Softmax over flattened axes".into()));
    }
    or_cpu!(match qx.dtype {
        DType::I8 => SoftmaxPlan::new::<i8>(qx.s(), qy.s()),
        _ => SoftmaxPlan::new::<i16>(qx.s(), qy.s()),
    });
    emit(
        lw,
        n,
        &[Some(xid)],
        &out,
        &qy,
        qx.qtype(),
        Kind::Softmax(pb::SoftmaxOp {
            axis: axis as i64,
            s_x: qx.s(),
            s_y: qy.s(),
            mask_qmin: qx.keep_masks,
        }),
    )?;
    Ok(None)
}

fn lower_layernorm(lw: &mut Lowerer, n: &Node) -> Placed {
    if n.outputs.iter().skip(1).any(|o| !o.is_empty()) {
        return Ok(Some("Mean / InvStdDev outputs".into()));
    }
    let (qx, xid) = or_cpu!(quant_input(lw, n, 0));
    let (out, qy) = or_cpu!(out_demand(lw, n));
    let shape = lw.b.shape(xid);
    let axis = or_cpu!(norm_axis(n.int_or("axis", -1).unwrap_or(-1), shape.len()));
    let norm: Vec<usize> = shape[axis..].to_vec();
    let count: usize = norm.iter().product();
    let expand = |lw: &Lowerer, k: usize| -> std::result::Result<Option<Vec<f32>>, String> {
        let Some(x) = n.input(k) else { return Ok(None) };
        let t = lw.constant(x).ok_or("scale/bias is not constant")?;
        let a = t.to_f32().map_err(|e| e.to_string())?;
        let b = a
            .broadcast(ndarray::IxDyn(&norm))
            .ok_or("scale/bias does not broadcast")?;
        Ok(Some(b.iter().copied().collect()))
    };
    let gamma = or_cpu!(expand(lw, 1)).unwrap_or_else(|| vec![1.0; count]);
    let beta = or_cpu!(expand(lw, 2)).unwrap_or_default();
    let eps = n.float_or("epsilon", 1e-5).unwrap_or(1e-5);
    let b = (!beta.is_empty()).then_some(&beta[..]);
    or_cpu!(hb_bpu::reference::layernorm::LayerNormPlan::new(
        qx.s(),
        qy.s(),
        &gamma,
        b,
        eps
    ));
    emit(
        lw,
        n,
        &[Some(xid)],
        &out,
        &qy,
        qx.qtype(),
        Kind::LayerNorm(pb::LayerNormOp {
            axis: axis as i64,
            s_x: qx.s(),
            s_y: qy.s(),
            gamma,
            beta,
            epsilon: eps,
        }),
    )?;
    Ok(None)
}

/// Kernel, strides, pads, dilations.
type PoolAttrs = (Vec<u64>, Vec<u64>, Vec<u64>, Vec<u64>);

fn pool_attrs(n: &Node, sp: &[usize]) -> std::result::Result<PoolAttrs, String> {
    let r = sp.len();
    let kernel: Vec<usize> = n
        .get_ints("kernel_shape")
        .map_err(|e| e.to_string())?
        .ok_or("kernel_shape is missing")?
        .iter()
        .map(|&v| v as usize)
        .collect();
    if kernel.len() != r {
        return Err("kernel_shape rank".into());
    }
    let get = |k: &str| -> std::result::Result<Vec<usize>, String> {
        match n.get_ints(k).map_err(|e| e.to_string())? {
            Some(v) if v.len() == r && v.iter().all(|&x| x >= 1) => {
                Ok(v.iter().map(|&x| x as usize).collect())
            }
            Some(v) => Err(format!("{k} {v:?}")),
            None => Ok(vec![1; r]),
        }
    };
    let strides = get("strides")?;
    let dil = get("dilations")?;
    let auto = n.string_or("auto_pad", "NOTSET").unwrap_or_default();
    let pads: Vec<usize> = match auto.as_str() {
        "NOTSET" | "" | "VALID" => match n.get_ints("pads").map_err(|e| e.to_string())? {
            Some(p) if auto != "VALID" => {
                if p.len() != 2 * r || p.iter().any(|&v| v < 0) {
                    return Err(format!("pads {p:?}"));
                }
                p.iter().map(|&v| v as usize).collect()
            }
            _ => vec![0; 2 * r],
        },
        _ => return Err(format!("auto_pad {auto}")),
    };
    let u = |v: &[usize]| v.iter().map(|&x| x as u64).collect::<Vec<_>>();
    Ok((u(&kernel), u(&strides), u(&pads), u(&dil)))
}

fn lower_pool(lw: &mut Lowerer, n: &Node) -> Placed {
    if n.outputs.iter().skip(1).any(|o| !o.is_empty()) {
        return Ok(Some("MaxPool indices output".into()));
    }
    let (qx, xid) = or_cpu!(quant_input(lw, n, 0));
    let (out, qy) = or_cpu!(out_demand(lw, n));
    let shape = lw.b.shape(xid);
    if shape.len() < 3 {
        return Ok(Some("pool input rank".into()));
    }
    let r = or_cpu!(ratio(f64::from(qx.s()) / f64::from(qy.s())));
    let mut p = pb::PoolOp {
        s_x: qx.s(),
        s_y: qy.s(),
        requant: Some(rq(r)),
        ..Default::default()
    };
    match n.op_type.as_str() {
        "GlobalAveragePool" => p.kind = pb::PoolKind::PoolGlobalAverage as i32,
        "GlobalMaxPool" => p.kind = pb::PoolKind::PoolGlobalMax as i32,
        op => {
            let (k, s, pads, d) = or_cpu!(pool_attrs(n, &shape[2..]));
            p.kind = if op == "MaxPool" {
                pb::PoolKind::PoolMax
            } else {
                pb::PoolKind::PoolAverage
            } as i32;
            p.kernel = k;
            p.strides = s;
            p.pads = pads;
            p.dilations = d;
            p.ceil_mode = n.int_or("ceil_mode", 0).unwrap_or(0) != 0;
            p.count_include_pad = n.int_or("count_include_pad", 0).unwrap_or(0) != 0;
        }
    }
    emit(lw, n, &[Some(xid)], &out, &qy, qx.qtype(), Kind::Pool(p))?;
    Ok(None)
}

fn lower_reduce(lw: &mut Lowerer, n: &Node) -> Placed {
    let (qx, xid) = or_cpu!(quant_input(lw, n, 0));
    let (out, qy) = or_cpu!(out_demand(lw, n));
    let rank = lw.b.shape(xid).len();
    let axes: Vec<i64> = if let Some(a) = n.input(1) {
        match lw.constant(a).and_then(|t| t.to_i64_vec().ok()) {
            Some(v) => v,
            None => return Ok(Some("axes are not constant".into())),
        }
    } else {
        n.get_ints("axes").ok().flatten().unwrap_or_default()
    };
    if axes.is_empty() && n.int_or("noop_with_empty_axes", 0).unwrap_or(0) != 0 {
        return Ok(Some("noop_with_empty_axes".into()));
    }
    let mut ax = Vec::new();
    for a in axes {
        ax.push(or_cpu!(norm_axis(a, rank)) as u64);
    }
    let r = or_cpu!(ratio(f64::from(qx.s()) / f64::from(qy.s())));
    let kind = if n.op_type == "ReduceMean" {
        pb::ReduceKind::ReduceMean
    } else {
        pb::ReduceKind::ReduceMax
    };
    emit(
        lw,
        n,
        &[Some(xid)],
        &out,
        &qy,
        qx.qtype(),
        Kind::Reduce(pb::ReduceOp {
            kind: kind as i32,
            axes: ax,
            keepdims: n.int_or("keepdims", 1).unwrap_or(1) != 0,
            requant: Some(rq(r)),
            s_x: qx.s(),
            s_y: qy.s(),
        }),
    )?;
    Ok(None)
}

fn lower_resize(lw: &mut Lowerer, n: &Node) -> Placed {
    let opset = lw.opsets.get("").copied().unwrap_or(13);
    if opset < 11 {
        return Ok(Some("Resize before opset 11".into()));
    }
    let (qx, xid) = or_cpu!(quant_input(lw, n, 0));
    let (out, qy) = or_cpu!(out_demand(lw, n));
    let mode = n.string_or("mode", "nearest").unwrap_or_default();
    let mode = match mode.as_str() {
        "nearest" => 0,
        "linear" => 1,
        other => return Ok(Some(format!("mode {other}"))),
    };
    if n.int_or("antialias", 0).unwrap_or(0) != 0
        || n.int_or("exclude_outside", 0).unwrap_or(0) != 0
        || n.get_ints("axes").ok().flatten().is_some()
    {
        return Ok(Some("antialias / exclude_outside / axes".into()));
    }
    let coord = n
        .string_or("coordinate_transformation_mode", "half_pixel")
        .unwrap_or_default();
    if coord == "tf_crop_and_resize" {
        return Ok(Some("tf_crop_and_resize".into()));
    }
    let nearest = n
        .string_or("nearest_mode", "round_prefer_floor")
        .unwrap_or_default();
    let xs = lw.b.shape(xid);
    let (_, ys) = lw.info(&out)?;
    let scales_in = n
        .input(2)
        .and_then(|s| lw.constant(s))
        .and_then(|t| t.to_f64_vec().ok())
        .filter(|v| !v.is_empty());
    let scales: Vec<f64> = match scales_in {
        Some(s) if s.len() == xs.len() => s.iter().map(|&v| f64::from(v as f32)).collect(),
        Some(_) => return Ok(Some("scales rank".into())),
        None => {
            if n.input(3).is_some_and(|s| lw.constant(s).is_none()) {
                return Ok(Some("sizes are not constant".into()));
            }
            let policy = n
                .string_or("keep_aspect_ratio_policy", "stretch")
                .unwrap_or_default();
            if policy != "stretch" {
                return Ok(Some("keep_aspect_ratio_policy".into()));
            }
            xs.iter()
                .zip(&ys)
                .map(|(&i, &o)| o as f64 / i as f64)
                .collect()
        }
    };
    let interpolated = xs
        .iter()
        .zip(&ys)
        .zip(&scales)
        .filter(|((i, o), s)| *i != *o || **s != 1.0)
        .count();
    if mode == 1 && interpolated > 2 {
        return Ok(Some("linear on more than 2 axes".into()));
    }
    let _ = or_cpu!(ratio(f64::from(qx.s()) / f64::from(qy.s())));
    emit(
        lw,
        n,
        &[Some(xid)],
        &out,
        &qy,
        qx.qtype(),
        Kind::Resize(pb::ResizeOp {
            mode,
            coord,
            nearest,
            scales,
            s_x: qx.s(),
            s_y: qy.s(),
        }),
    )?;
    Ok(None)
}

fn lower_grid_sample(lw: &mut Lowerer, n: &Node) -> Placed {
    let (qx, xid) = or_cpu!(quant_input(lw, n, 0));
    let (qg, gid) = or_cpu!(quant_input(lw, n, 1));
    let (out, qy) = or_cpu!(out_demand(lw, n));
    if lw.b.shape(xid).len() != 4 {
        return Ok(Some("GridSample on a non-4-D input".into()));
    }
    let mode = n.string_or("mode", "bilinear").unwrap_or_default();
    let bilinear = match mode.as_str() {
        "bilinear" | "linear" => true,
        "nearest" => false,
        other => return Ok(Some(format!("mode {other}"))),
    };
    let pad = n.string_or("padding_mode", "zeros").unwrap_or_default();
    let border = match pad.as_str() {
        "zeros" => false,
        "border" => true,
        other => return Ok(Some(format!("padding_mode {other}"))),
    };
    emit(
        lw,
        n,
        &[Some(xid), Some(gid)],
        &out,
        &qy,
        qx.qtype(),
        Kind::GridSample(pb::GridSampleOp {
            bilinear,
            border,
            align_corners: n.int_or("align_corners", 0).unwrap_or(0) != 0,
            s_x: qx.s(),
            s_g: qg.s(),
            s_y: qy.s(),
        }),
    )?;
    Ok(None)
}
