// Per-channel loops walk several arrays in step; index loops read like §4.
#![allow(clippy::needless_range_loop)]
//! Conv, ConvTranspose, MatMul and Gemm (docs/integer-semantics.md §4, §5,
//! §8): weights quantized per output channel exactly as their calibration
//! node fake-quantizes them, bias at the accumulator scale, output
//! requantised to the consumers' scale or kept as int32 high precision.

use super::builder::{ratio, rq, Q};
use super::{Lowerer, WeightCal};
use crate::Result;
use hb_bpu::fixed_point::{ec_weight, quantize_bias};
use hb_bpu::program::pb::{self, op::Kind};
use hb_bpu::reference::quant::{quantize_per_channel, QuantParams};
use hb_bpu::tensor::{split_at_axis, TensorRef};
use hb_float::kernels::horizon::FqType;
use hb_ir::Node;
use hb_tensor::{DType, Tensor};
use ndarray::{ArrayD, IxDyn};

type Placed = Result<Option<String>>;

const WEIGHTED: &[&str] = &["Conv", "ConvTranspose", "MatMul", "Gemm"];

/// Folds `Add(weighted_output, constant)` (torch's bias add after MatMul or a
/// bias-free Conv) into the weighted node's bias when the constant is one
/// value per output channel and the Add is the only reader.
pub(crate) fn fuse_bias_adds(lw: &mut Lowerer) {
    let g = &lw.g;
    let mut fusions: Vec<(usize, usize, Tensor)> = Vec::new();
    for (i, w) in g.nodes.iter().enumerate() {
        if !WEIGHTED.contains(&w.op_type.as_str()) || !w.domain.is_empty() {
            continue;
        }
        let Some(o) = w.outputs.first() else { continue };
        if g.is_output(o) {
            continue;
        }
        let cons = g.consumers(o);
        let [a] = cons[..] else { continue };
        let add = &g.nodes[a];
        if add.op_type != "Add" || add.inputs.len() != 2 {
            continue;
        }
        let other = if &add.inputs[0] == o {
            &add.inputs[1]
        } else {
            &add.inputs[0]
        };
        let Some(c) = g.initializer(other) else {
            continue;
        };
        if c.dtype() != DType::F32 {
            continue;
        }
        let Some((_, out_shape)) = lw.vinfo.get(o) else {
            continue;
        };
        let ch_axis = if w.op_type.starts_with("Conv") {
            1
        } else {
            out_shape.len().saturating_sub(1)
        };
        let Some(&m) = out_shape.get(ch_axis) else {
            continue;
        };
        let Some(v) = per_channel(c, out_shape, ch_axis, m) else {
            continue;
        };
        fusions.push((i, a, v));
    }
    let mut remove = Vec::new();
    for (i, a, v) in fusions {
        let out = lw.g.nodes[a].outputs[0].clone();
        let name = lw.g.nodes[i].name.clone();
        let orig = std::mem::replace(&mut lw.g.nodes[i].outputs[0], out);
        lw.fused_adds
            .insert(name.clone(), (lw.g.nodes[a].clone(), orig));
        lw.extra_bias.insert(name, v);
        remove.push(a);
    }
    remove.sort_unstable();
    for a in remove.into_iter().rev() {
        let n = lw.g.nodes.remove(a);
        lw.notes.push(super::Note {
            node: n.name,
            op_type: n.op_type,
            cpu: false,
            reason: "fused into the bias of the weighted op before it".into(),
        });
    }
}

/// A constant that broadcasts to `out_shape` varying only along `axis`, as
/// `m` values (None otherwise).
fn per_channel(c: &Tensor, out_shape: &[usize], axis: usize, m: usize) -> Option<Tensor> {
    let cs = c.shape();
    if cs.len() > out_shape.len() {
        return None;
    }
    let off = out_shape.len() - cs.len();
    for (k, &d) in cs.iter().enumerate() {
        if d != 1 && (k + off != axis || d != m) {
            return None;
        }
    }
    let v: Vec<f32> = c.to_f32().ok()?.iter().copied().collect();
    let full = if v.len() == 1 { vec![v[0]; m] } else { v };
    (full.len() == m).then(|| Tensor::from_f32(&[m], full).ok())?
}

/// Quantized weights: the integer tensor, per-channel scales along `axis`,
/// whether they are 16-bit, and per-channel Σ|q|.
struct QWeight {
    t: Tensor,
    scales: Vec<f32>,
    abs_sums: Vec<f64>,
}

fn quantize_weight(wc: &WeightCal, axis: usize) -> std::result::Result<QWeight, String> {
    // Borrowed when the weight is float32 already (a copy of every weight
    // was a fifth of a ResNet-18 calibration's page faults).
    let converted;
    let w = match wc.w.as_f32() {
        Ok(a) => a,
        Err(_) => {
            converted = wc.w.to_f32().map_err(|e| e.to_string())?;
            &converted
        }
    };
    let w = w.as_standard_layout();
    let xs = w.as_slice().ok_or("weight not contiguous")?;
    let shape = w.shape().to_vec();
    if !wc.fq.is_weight {
        return Err("not a weight calibration".into());
    }
    let params = wc.fq.params().map_err(|e| e.to_string())?;
    let (outer, c, inner) = split_at_axis(&shape, axis).map_err(|e| e.to_string())?;
    let per = if params.len() == 1 {
        vec![params[0]; c]
    } else {
        params
    };
    if per.len() != c {
        return Err(format!(
            "{} weight thresholds for {c} output channels",
            per.len()
        ));
    }
    let view = TensorRef::new(xs, &shape).map_err(|e| e.to_string())?;
    let (t, scales): (Tensor, Vec<f32>) = if wc.ec {
        let mut v = Vec::with_capacity(xs.len());
        for o in 0..outer {
            for k in 0..c {
                let base = (o * c + k) * inner;
                for &x in &xs[base..base + inner] {
                    v.push(ec_weight(x, per[k].scale).map_err(|e| e.to_string())?);
                }
            }
        }
        let a = ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| e.to_string())?;
        (
            Tensor::I16(a),
            per.iter().map(|p| p.scale / 256.0).collect(),
        )
    } else {
        let qp: Vec<QuantParams> = per
            .iter()
            .map(|p| QuantParams::with_range(p.scale, p.lo as i64, p.hi as i64))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let t = match wc.fq.qtype {
            FqType::Int8 => {
                let q = quantize_per_channel::<i8>(view, axis, &qp).map_err(|e| e.to_string())?;
                Tensor::I8(
                    ArrayD::from_shape_vec(IxDyn(&q.shape), q.data).map_err(|e| e.to_string())?,
                )
            }
            FqType::Int16 => {
                let q = quantize_per_channel::<i16>(view, axis, &qp).map_err(|e| e.to_string())?;
                Tensor::I16(
                    ArrayD::from_shape_vec(IxDyn(&q.shape), q.data).map_err(|e| e.to_string())?,
                )
            }
            other => return Err(format!("weight qtype {} is not an integer", other.name())),
        };
        (t, per.iter().map(|p| p.scale).collect())
    };
    let abs_sums = match &t {
        Tensor::I8(a) => channel_abs_sums(a.as_slice(), outer, c, inner),
        Tensor::I16(a) => channel_abs_sums(a.as_slice(), outer, c, inner),
        _ => None,
    }
    .ok_or("quantized weight not contiguous")?;
    Ok(QWeight {
        t,
        scales,
        abs_sums,
    })
}

/// Per output channel `k`, the sum of `|q|` over the weight's elements of
/// that channel (`q` row-major, `[outer, c, inner]`): exact integer sums.
fn channel_abs_sums<T: Copy + Into<i64>>(
    q: Option<&[T]>,
    outer: usize,
    c: usize,
    inner: usize,
) -> Option<Vec<f64>> {
    let q = q?;
    let mut sums = vec![0i64; c];
    for (i, chunk) in q.chunks(inner.max(1)).enumerate().take(outer * c) {
        sums[i % c] += chunk.iter().map(|&v| v.into().abs()).sum::<i64>();
    }
    Some(sums.into_iter().map(|v| v as f64).collect())
}

fn max_abs(dt: DType) -> f64 {
    match dt {
        DType::I8 => 128.0,
        DType::I16 => 32768.0,
        _ => 2147483648.0,
    }
}

/// The smallest `k` with `bound / 2^k < 2^31 − 1` (int32 high precision).
fn hp_shift(bounds: &[f64]) -> i32 {
    let b = bounds.iter().copied().fold(0f64, f64::max);
    let mut k = 0;
    while b / 2f64.powi(k) + 1.0 >= 2147483647.0 {
        k += 1;
    }
    k
}

/// The output quantization: what the consumers want, or int32 high
/// precision with per-channel scales `acc_scales · 2^k`.
fn output_q(
    lw: &mut Lowerer,
    out: &str,
    acc_scales: &[f64],
    bounds: &[f64],
    axis: usize,
) -> Result<(Q, Vec<pb::Requant>)> {
    if let Some(q) = lw.demand(out) {
        let rs = acc_scales
            .iter()
            .map(|&a| ratio(a / f64::from(q.s())).map(rq))
            .collect::<Result<Vec<_>>>()?;
        return Ok((q, rs));
    }
    let k = hp_shift(bounds);
    let r = rq(ratio(2f64.powi(-k))?);
    let q = Q::wide(
        DType::I32,
        Vec::new(),
        acc_scales.iter().map(|a| a * 2f64.powi(k)).collect(),
        axis as i32,
    );
    Ok((q, vec![r]))
}

fn resolve_pads(
    n: &Node,
    x_sp: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dil: &[usize],
) -> std::result::Result<Vec<usize>, String> {
    let r = kernel.len();
    let auto = n
        .string_or("auto_pad", "NOTSET")
        .map_err(|e| e.to_string())?;
    match auto.as_str() {
        "NOTSET" | "" => {
            let p = n
                .get_ints("pads")
                .map_err(|e| e.to_string())?
                .unwrap_or_else(|| vec![0; 2 * r]);
            if p.len() != 2 * r || p.iter().any(|&v| v < 0) {
                return Err(format!("pads {p:?}"));
            }
            Ok(p.iter().map(|&v| v as usize).collect())
        }
        "VALID" => Ok(vec![0; 2 * r]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut pads = vec![0; 2 * r];
            for i in 0..r {
                let out = x_sp[i].div_ceil(strides[i]);
                let span = dil[i] * (kernel[i] - 1) + 1;
                let total = ((out - 1) * strides[i] + span).saturating_sub(x_sp[i]);
                let (a, b) = (total / 2, total - total / 2);
                if auto == "SAME_UPPER" {
                    pads[i] = a;
                    pads[r + i] = b;
                } else {
                    pads[i] = b;
                    pads[r + i] = a;
                }
            }
            Ok(pads)
        }
        other => Err(format!("auto_pad {other}")),
    }
}

fn ints_or(n: &Node, k: &str, r: usize, d: usize) -> std::result::Result<Vec<usize>, String> {
    match n.get_ints(k).map_err(|e| e.to_string())? {
        Some(v) if v.len() == r && v.iter().all(|&x| x >= 1) => {
            Ok(v.iter().map(|&x| x as usize).collect())
        }
        Some(v) => Err(format!("{k} {v:?}")),
        None => Ok(vec![d; r]),
    }
}

fn wide(a: DType, b: DType) -> bool {
    a != DType::I8 || b != DType::I8
}

fn bias_vec(
    lw: &Lowerer,
    n: &Node,
    slot: Option<usize>,
    m: usize,
) -> std::result::Result<Vec<f32>, String> {
    let mut b = vec![0f32; m];
    if let Some(name) = slot.and_then(|k| n.input(k)) {
        let t = lw.constant(name).ok_or("bias is not a constant")?;
        let v: Vec<f32> = t
            .to_f32()
            .map_err(|e| e.to_string())?
            .iter()
            .copied()
            .collect();
        if v.len() != m {
            return Err(format!("bias has {} values for {m} channels", v.len()));
        }
        b = v;
    }
    if let Some(e) = lw.extra_bias.get(&n.name) {
        for (x, y) in b
            .iter_mut()
            .zip(e.to_f32().map_err(|e| e.to_string())?.iter())
        {
            *x += *y;
        }
    }
    Ok(b)
}

/// Conv / ConvTranspose.
pub(crate) fn lower_conv(lw: &mut Lowerer, n: &Node, transpose: bool) -> Placed {
    let Some((qx, xid)) = lw.any_quant(&n.inputs[0]) else {
        return Ok(Some("input is not quantized".into()));
    };
    let Some(wc) = n.input(1).and_then(|w| lw.weights.get(w)).cloned() else {
        return Ok(Some("weight is not quantized".into()));
    };
    let xs = lw.b.shape(xid);
    let ws = wc.w.shape().to_vec();
    if xs.len() < 3 || ws.len() != xs.len() {
        return Ok(Some(format!("input {xs:?} / weight {ws:?}")));
    }
    let r = xs.len() - 2;
    let kernel = ws[2..].to_vec();
    let plan = (|| -> std::result::Result<_, String> {
        let strides = ints_or(n, "strides", r, 1)?;
        let dil = ints_or(n, "dilations", r, 1)?;
        let group = n.int_or("group", 1).map_err(|e| e.to_string())?.max(1) as usize;
        if transpose
            && (n
                .get_ints("output_shape")
                .map_err(|e| e.to_string())?
                .is_some()
                || !matches!(
                    n.string_or("auto_pad", "NOTSET")
                        .map_err(|e| e.to_string())?
                        .as_str(),
                    "NOTSET" | ""
                ))
        {
            return Err("output_shape / auto_pad on ConvTranspose".into());
        }
        let pads = resolve_pads(n, &xs[2..], &kernel, &strides, &dil)?;
        let outpad = if transpose {
            match n.get_ints("output_padding").map_err(|e| e.to_string())? {
                Some(v) if v.len() == r && v.iter().all(|&x| x >= 0) => {
                    v.iter().map(|&x| x as usize).collect()
                }
                Some(v) => return Err(format!("output_padding {v:?}")),
                None => vec![0; r],
            }
        } else {
            vec![0; r]
        };
        let axis = if transpose { 1 } else { 0 };
        let qw = quantize_weight(&wc, axis)?;
        let m = if transpose { ws[1] * group } else { ws[0] };
        let mg = if transpose { ws[1] } else { m };
        let sw: Vec<f32> = (0..m).map(|c| qw.scales[c % mg.max(1)]).collect();
        let sums: Vec<f64> = (0..m).map(|c| qw.abs_sums[c % mg.max(1)]).collect();
        let bias = bias_vec(lw, n, Some(2), m)?;
        let wd = wide(qx.dtype, qw.t.dtype());
        let acc: Vec<f64> = sw
            .iter()
            .map(|&s| f64::from(qx.s()) * f64::from(s))
            .collect();
        let qb = bias
            .iter()
            .zip(&acc)
            .map(|(&b, &a)| quantize_bias(b, a, wd).map_err(|e| e.to_string()))
            .collect::<std::result::Result<Vec<i64>, _>>()?;
        let bounds: Vec<f64> = sums
            .iter()
            .zip(&qb)
            .map(|(s, b)| s * max_abs(qx.dtype) + b.unsigned_abs() as f64)
            .collect();
        Ok((strides, dil, group, pads, outpad, qw, acc, qb, bounds))
    })();
    let (strides, dil, group, pads, outpad, qw, acc, qb, bounds) = match plan {
        Ok(v) => v,
        Err(e) => return Ok(Some(e)),
    };
    let out = n.outputs[0].clone();
    let (qy, requant) = match output_q(lw, &out, &acc, &bounds, 1) {
        Ok(v) => v,
        Err(e) => return Ok(Some(e.to_string())),
    };
    let wq = Q::wide(
        qw.t.dtype(),
        qw.scales.clone(),
        Vec::new(),
        if transpose { 1 } else { 0 },
    );
    let wid =
        lw.b.constant(&format!("{}.weight", n.name), &qw.t, Some(&wq))?;
    let bid = lw.b.constant(
        &format!("{}.bias", n.name),
        &Tensor::from_vec(&[qb.len()], qb).map_err(|e| super::model_err(n, e))?,
        None,
    )?;
    let (_, oshape) = lw.info(&out)?;
    let yid = lw.qvalue(&out, &qy, &oshape);
    let u = |v: &[usize]| v.iter().map(|&x| x as u64).collect::<Vec<_>>();
    lw.b.op(
        &n.name,
        &n.op_type,
        &[Some(xid), Some(wid), Some(bid)],
        &[yid],
        false,
        qx.qtype(),
        Kind::Conv(pb::ConvOp {
            strides: u(&strides),
            dilations: u(&dil),
            pads: u(&pads),
            group: group as u64,
            output_padding: u(&outpad),
            transpose,
            requant,
            has_clamp: qy.narrow(),
            lo: qy.lo,
            hi: qy.hi,
        }),
    );
    lw.set_quant(&out, qy, yid);
    Ok(None)
}

/// MatMul with a constant (calibrated) or activation right operand.
pub(crate) fn lower_matmul(lw: &mut Lowerer, n: &Node) -> Placed {
    let Some((qa, aid)) = lw.any_quant(&n.inputs[0]) else {
        return Ok(Some("input A is not quantized".into()));
    };
    let out = n.outputs[0].clone();
    let (_, oshape) = lw.info(&out)?;
    let last = oshape.len().saturating_sub(1);
    let (bid, acc, bounds, bias_id) = if let Some(wc) = lw.weights.get(&n.inputs[1]).cloned() {
        let ws = wc.w.shape().to_vec();
        if ws.len() < 2 {
            return Ok(Some("1-D MatMul weight".into()));
        }
        let qw = match quantize_weight(&wc, ws.len() - 1) {
            Ok(q) => q,
            Err(e) => return Ok(Some(e)),
        };
        let nn = ws[ws.len() - 1];
        let wd = wide(qa.dtype, qw.t.dtype());
        let acc: Vec<f64> = qw
            .scales
            .iter()
            .map(|&s| f64::from(qa.s()) * f64::from(s))
            .collect();
        let bias = match bias_vec(lw, n, None, nn) {
            Ok(b) => b,
            Err(e) => return Ok(Some(e)),
        };
        let qb = match bias
            .iter()
            .zip(&acc)
            .map(|(&b, &a)| quantize_bias(b, a, wd))
            .collect::<std::result::Result<Vec<i64>, _>>()
        {
            Ok(v) => v,
            Err(e) => return Ok(Some(e.to_string())),
        };
        // Σ|w| over K per column (abs_sums already sum every batch; a bound).
        let bounds: Vec<f64> = qw
            .abs_sums
            .iter()
            .zip(&qb)
            .map(|(s, b)| s * max_abs(qa.dtype) + b.unsigned_abs() as f64)
            .collect();
        let wq = Q::wide(
            qw.t.dtype(),
            qw.scales.clone(),
            Vec::new(),
            (ws.len() - 1) as i32,
        );
        let wid =
            lw.b.constant(&format!("{}.weight", n.name), &qw.t, Some(&wq))?;
        let has_bias = lw.extra_bias.contains_key(&n.name);
        let bias_id = if has_bias {
            Some(lw.b.constant(
                &format!("{}.bias", n.name),
                &Tensor::from_vec(&[qb.len()], qb).map_err(|e| super::model_err(n, e))?,
                None,
            )?)
        } else {
            None
        };
        (wid, acc, bounds, bias_id)
    } else if let Some((qb, bid)) = lw.any_quant(&n.inputs[1]) {
        let bs = lw.b.shape(bid);
        let k = if bs.len() >= 2 {
            bs[bs.len() - 2]
        } else {
            bs[0]
        } as f64;
        let acc = vec![f64::from(qa.s()) * f64::from(qb.s())];
        (
            bid,
            acc,
            vec![k * max_abs(qa.dtype) * max_abs(qb.dtype)],
            None,
        )
    } else {
        return Ok(Some(
            "input B is neither a calibrated weight nor quantized".into(),
        ));
    };
    let (qy, requant) = match output_q(lw, &out, &acc, &bounds, last) {
        Ok(v) => v,
        Err(e) => return Ok(Some(e.to_string())),
    };
    let yid = lw.qvalue(&out, &qy, &oshape);
    lw.b.op(
        &n.name,
        "MatMul",
        &[Some(aid), Some(bid), bias_id],
        &[yid],
        false,
        qa.qtype(),
        Kind::Matmul(pb::MatMulOp { requant }),
    );
    lw.finish(&out, qy, yid);
    Ok(None)
}

/// Gemm (alpha folded into the ratio, beta·C into the bias).
pub(crate) fn lower_gemm(lw: &mut Lowerer, n: &Node) -> Placed {
    let Some((qa, aid)) = lw.any_quant(&n.inputs[0]) else {
        return Ok(Some("input A is not quantized".into()));
    };
    let Some(wc) = lw.weights.get(&n.inputs[1]).cloned() else {
        return Ok(Some("B is not a calibrated weight".into()));
    };
    let get = |k: &str, d: i64| n.int_or(k, d).unwrap_or(d) != 0;
    let (trans_a, trans_b) = (get("transA", 0), get("transB", 0));
    let alpha = n.float_or("alpha", 1.0).unwrap_or(1.0);
    let beta = n.float_or("beta", 1.0).unwrap_or(1.0);
    let ashape = lw.b.shape(aid);
    let ws = wc.w.shape().to_vec();
    if ashape.len() != 2 || ws.len() != 2 || alpha <= 0.0 {
        return Ok(Some("Gemm shapes or alpha".into()));
    }
    let (m, nn) = (
        if trans_a { ashape[1] } else { ashape[0] },
        if trans_b { ws[0] } else { ws[1] },
    );
    let qw = match quantize_weight(&wc, if trans_b { 0 } else { 1 }) {
        Ok(q) => q,
        Err(e) => return Ok(Some(e)),
    };
    let wd = wide(qa.dtype, qw.t.dtype());
    let sab: Vec<f64> = qw
        .scales
        .iter()
        .map(|&s| f64::from(alpha) * f64::from(qa.s()) * f64::from(s))
        .collect();
    // C broadcast to [M, N], times beta, plus a fused bias add.
    let mut cfull = vec![0f32; m * nn];
    if let Some(c) = n.input(2).and_then(|c| lw.constant(c)) {
        let c = match c.to_f32() {
            Ok(a) => a,
            Err(e) => return Ok(Some(e.to_string())),
        };
        let Some(b) = c.broadcast(IxDyn(&[m, nn])) else {
            return Ok(Some("C does not broadcast to [M, N]".into()));
        };
        for (d, v) in cfull.iter_mut().zip(b.iter()) {
            *d = beta * v;
        }
    } else if n.input(2).is_some() {
        return Ok(Some("C is not a constant".into()));
    }
    if let Some(e) = lw.extra_bias.get(&n.name).cloned() {
        let e: Vec<f32> = e
            .to_f32()
            .map(|a| a.iter().copied().collect())
            .unwrap_or_default();
        for (i, d) in cfull.iter_mut().enumerate() {
            *d += alpha * e.get(i % nn).copied().unwrap_or(0.0);
        }
    }
    let mut qc = Vec::with_capacity(m * nn);
    for (i, &c) in cfull.iter().enumerate() {
        match quantize_bias(c, sab[i % nn], wd) {
            Ok(v) => qc.push(v),
            Err(e) => return Ok(Some(e.to_string())),
        }
    }
    let bounds: Vec<f64> = (0..nn)
        .map(|j| {
            let cm = (0..m)
                .map(|i| qc[i * nn + j].unsigned_abs())
                .max()
                .unwrap_or(0);
            qw.abs_sums[j] * max_abs(qa.dtype) + cm as f64
        })
        .collect();
    let out = n.outputs[0].clone();
    let (qy, requant) = match output_q(lw, &out, &sab, &bounds, 1) {
        Ok(v) => v,
        Err(e) => return Ok(Some(e.to_string())),
    };
    let wq = Q::wide(
        qw.t.dtype(),
        qw.scales.clone(),
        Vec::new(),
        if trans_b { 0 } else { 1 },
    );
    let wid =
        lw.b.constant(&format!("{}.weight", n.name), &qw.t, Some(&wq))?;
    let cid = lw.b.constant(
        &format!("{}.bias", n.name),
        &Tensor::from_vec(&[m, nn], qc).map_err(|e| super::model_err(n, e))?,
        None,
    )?;
    let (_, oshape) = lw.info(&out)?;
    let yid = lw.qvalue(&out, &qy, &oshape);
    lw.b.op(
        &n.name,
        "Gemm",
        &[Some(aid), Some(wid), Some(cid)],
        &[yid],
        false,
        qa.qtype(),
        Kind::Gemm(pb::GemmOp {
            trans_a,
            trans_b,
            requant,
        }),
    );
    lw.finish(&out, qy, yid);
    Ok(None)
}
