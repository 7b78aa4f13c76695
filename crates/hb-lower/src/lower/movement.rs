//! Passive ops (docs/integer-semantics.md §6): data movement on quantized
//! values keeps the scale; Concat and Where bring every input to the scale
//! their consumers want. Index-moving ops (Slice, Gather with constant
//! indices, Split, Expand, Tile, DepthToSpace, SpaceToDepth) become a `Take`
//! whose index map is computed here by running the float kernel on the
//! element indices.

use super::builder::Q;
use super::Lowerer;
use crate::Result;
use hb_bpu::program::pb::{self, op::Kind};
use hb_float::{OpCtx, Registry};
use hb_ir::Node;
use hb_tensor::{DType, Tensor};

type Placed = Result<Option<String>>;

#[allow(clippy::too_many_arguments)]
fn emit_like(
    lw: &mut Lowerer,
    n: &Node,
    kind: Kind,
    op_type: &str,
    xid: usize,
    q: &Q,
    out: &str,
    extra: Option<usize>,
) -> Result<()> {
    let (_, shape) = lw.info(out)?;
    let yid = lw.qvalue(out, q, &shape);
    let mut ins = vec![Some(xid)];
    if let Some(e) = extra {
        ins.push(Some(e));
    }
    lw.b.op(
        &format!(
            "{}{}",
            n.name,
            if n.outputs.len() > 1 {
                format!(":{out}")
            } else {
                String::new()
            }
        ),
        op_type,
        &ins,
        &[yid],
        false,
        q.qtype(),
        kind,
    );
    lw.set_quant(out, q.clone(), yid);
    Ok(())
}

/// The flat source index of every output element of output `k`, by running
/// the op's float kernel on `[0, 1, 2, …]` (None when a parameter is not
/// constant or the tensor is too large for exact f32 indices).
fn take_indices(lw: &Lowerer, n: &Node, data_shape: &[usize]) -> Option<Vec<Tensor>> {
    let numel: usize = data_shape.iter().product();
    if numel >= 1 << 24 {
        return None;
    }
    let iota = Tensor::from_f32(data_shape, (0..numel).map(|i| i as f32).collect()).ok()?;
    let mut owned: Vec<Option<Tensor>> = Vec::new();
    for (k, x) in n.inputs.iter().enumerate() {
        if k == 0 {
            owned.push(Some(iota.clone()));
        } else if x.is_empty() {
            owned.push(None);
        } else {
            owned.push(Some(lw.constant(x)?));
        }
    }
    let refs: Vec<Option<&Tensor>> = owned.iter().map(Option::as_ref).collect();
    let kernel = Registry::shared().get("", &n.op_type)?;
    let opset = lw.opsets.get("").copied().unwrap_or(13);
    let outs = kernel(&OpCtx { node: n, opset }, &refs).ok()?;
    outs.into_iter()
        .map(|t| {
            let f = t.to_f32().ok()?;
            let v: Vec<i64> = f.iter().map(|&x| x as i64).collect();
            Tensor::from_vec(f.shape(), v).ok()
        })
        .collect()
}

/// The runs form (`pb::TakeOp::runs`) of a `Take` index map `idx` (one
/// source index per output element): an `[R, 2]` table of (start, length)
/// runs of consecutive sources when they average at least 4 elements (a
/// Slice or Split copying rows); None when `idx` itself is the better
/// constant (gathers, transposes, broadcasts of single values).
pub(crate) fn take_runs(idx: &Tensor) -> Option<Tensor> {
    let Tensor::I64(a) = idx else {
        return None;
    };
    let mut runs: Vec<i64> = Vec::new();
    for &i in a.iter() {
        let n = runs.len();
        if n >= 2 && runs[n - 2] + runs[n - 1] == i {
            runs[n - 1] += 1;
        } else {
            runs.extend([i, 1]);
        }
        if 2 * runs.len() > a.len() {
            return None;
        }
    }
    let r = runs.len() / 2;
    Tensor::from_vec(&[r, 2], runs).ok()
}

/// Lowers a passive op on quantized data (None), or says why it runs on
/// the CPU in float.
pub(crate) fn lower_passive(lw: &mut Lowerer, n: &Node) -> Placed {
    match n.op_type.as_str() {
        "Concat" => return lower_concat(lw, n),
        "Where" => return lower_where(lw, n),
        _ => {}
    }
    let Some((q, xid)) = lw.any_quant(&n.inputs[0]) else {
        return Ok(Some("data is float".into()));
    };
    let out = n.outputs[0].clone();
    match n.op_type.as_str() {
        "Identity" | "Dropout" => {
            lw.set_quant(&out, q, xid);
        }
        "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => {
            emit_like(
                lw,
                n,
                Kind::Reshape(pb::ReshapeOp {}),
                &n.op_type,
                xid,
                &q,
                &out,
                None,
            )?;
        }
        "Transpose" => {
            let rank = lw.b.shape(xid).len();
            let perm: Vec<u64> = match n.get_ints("perm").ok().flatten() {
                Some(p) => p.iter().map(|&v| v as u64).collect(),
                None => (0..rank as u64).rev().collect(),
            };
            emit_like(
                lw,
                n,
                Kind::Transpose(pb::TransposeOp { perm }),
                "Transpose",
                xid,
                &q,
                &out,
                None,
            )?;
        }
        "Pad" => return lower_pad(lw, n, q, xid),
        _ => {
            let shape = lw.b.shape(xid);
            let Some(idx) = take_indices(lw, n, &shape) else {
                return Ok(Some("indices or parameters are not constant".into()));
            };
            for (k, o) in n.outputs.iter().enumerate() {
                if o.is_empty() {
                    continue;
                }
                let Some(ix) = idx.get(k) else {
                    return Ok(Some("kernel gave fewer outputs".into()));
                };
                let runs = take_runs(ix);
                let table = runs.as_ref().unwrap_or(ix);
                let iid =
                    lw.b.constant(&format!("{}.indices{k}", n.name), table, None)?;
                emit_like(
                    lw,
                    n,
                    Kind::Take(pb::TakeOp {
                        runs: runs.is_some(),
                    }),
                    &n.op_type,
                    xid,
                    &q,
                    o,
                    Some(iid),
                )?;
            }
        }
    }
    Ok(None)
}

fn lower_pad(lw: &mut Lowerer, n: &Node, q: Q, xid: usize) -> Placed {
    let rank = lw.b.shape(xid).len();
    let mode = n.string_or("mode", "constant").unwrap_or_default();
    let mode = match mode.as_str() {
        "constant" => pb::PadMode::PadConstant,
        "edge" => pb::PadMode::PadEdge,
        "reflect" => pb::PadMode::PadReflect,
        other => return Ok(Some(format!("pad mode {other}"))),
    };
    if n.input(3).is_some() {
        return Ok(Some("pad axes input".into()));
    }
    let pads: Vec<i64> = if let Some(p) = n.input(1) {
        match lw.constant(p).and_then(|t| t.to_i64_vec().ok()) {
            Some(v) => v,
            None => return Ok(Some("pads are not constant".into())),
        }
    } else {
        n.get_ints("pads").ok().flatten().unwrap_or_default()
    };
    if pads.len() != 2 * rank || pads.iter().any(|&v| v < 0) {
        return Ok(Some(format!("pads {pads:?}")));
    }
    let value = if let Some(v) = n.input(2) {
        match lw
            .constant(v)
            .and_then(|t| t.to_f64_vec().ok())
            .and_then(|v| v.first().copied())
        {
            Some(v) => v,
            None => return Ok(Some("pad value is not constant".into())),
        }
    } else {
        f64::from(n.float_or("value", 0.0).unwrap_or(0.0))
    };
    let (lo, hi) = (q.lo, q.hi);
    let qv = (value / f64::from(q.s()))
        .round_ties_even()
        .clamp(lo as f64, hi as f64) as i64;
    let out = n.outputs[0].clone();
    emit_like(
        lw,
        n,
        Kind::Pad(pb::PadOp {
            pads: pads.iter().map(|&v| v as u64).collect(),
            mode: mode as i32,
            value: qv,
        }),
        "Pad",
        xid,
        &q,
        &out,
        None,
    )?;
    Ok(None)
}

fn is_float_value(lw: &Lowerer, v: &str) -> bool {
    lw.any_quant(v).is_some() || lw.info(v).is_ok_and(|(dt, _)| dt == DType::F32)
}

fn lower_concat(lw: &mut Lowerer, n: &Node) -> Placed {
    let out = n.outputs[0].clone();
    let Some(qy) = lw.demand(&out) else {
        return Ok(Some("output is not re-quantized".into()));
    };
    if !n.inputs.iter().any(|x| lw.any_quant(x).is_some()) {
        return Ok(Some("data is float".into()));
    }
    if !n.inputs.iter().all(|x| is_float_value(lw, x)) {
        return Ok(Some("non-float input".into()));
    }
    let mut ids = Vec::new();
    for x in n.inputs.clone() {
        ids.push(Some(lw.quant_at(&x, &qy, &n.name)?));
    }
    let axis = n.int_or("axis", 0).unwrap_or(0);
    let (_, shape) = lw.info(&out)?;
    let yid = lw.qvalue(&out, &qy, &shape);
    let id = super::builder::rq(hb_bpu::fixed_point::Requant::IDENTITY);
    lw.b.op(
        &n.name,
        "Concat",
        &ids,
        &[yid],
        false,
        qy.qtype(),
        Kind::Concat(pb::ConcatOp {
            axis,
            requant: vec![id; ids.len()],
        }),
    );
    lw.set_quant(&out, qy, yid);
    Ok(None)
}

fn lower_where(lw: &mut Lowerer, n: &Node) -> Placed {
    let out = n.outputs[0].clone();
    let Some(qy) = lw.demand(&out) else {
        return Ok(Some("output is not re-quantized".into()));
    };
    let (a, b) = (n.inputs[1].clone(), n.inputs[2].clone());
    if lw.any_quant(&a).is_none() && lw.any_quant(&b).is_none() {
        return Ok(Some("data is float".into()));
    }
    if !is_float_value(lw, &a) || !is_float_value(lw, &b) {
        return Ok(Some("non-float branch".into()));
    }
    let cond = lw.host_of(&n.inputs[0])?;
    if lw.b.p.tensors[cond].dtype != DType::Bool.onnx_code() {
        return Ok(Some("condition is not bool".into()));
    }
    let mut ids = vec![Some(cond)];
    for x in [a, b] {
        ids.push(Some(lw.quant_at(&x, &qy, &n.name)?));
    }
    let (_, shape) = lw.info(&out)?;
    let yid = lw.qvalue(&out, &qy, &shape);
    let id = super::builder::rq(hb_bpu::fixed_point::Requant::IDENTITY);
    lw.b.op(
        &n.name,
        "Where",
        &ids,
        &[yid],
        false,
        qy.qtype(),
        Kind::WhereOp(pb::WhereOp {
            ra: Some(id),
            rb: Some(id),
        }),
    );
    lw.set_quant(&out, qy, yid);
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::take_runs;
    use hb_tensor::Tensor;

    fn indices(v: Vec<i64>) -> Tensor {
        let n = v.len();
        Tensor::from_vec(&[n], v).unwrap()
    }

    #[test]
    fn row_copies_become_runs_that_expand_to_the_same_indices() {
        // Slice of columns 1..5 of a 3 x 6 plane, then a whole-block Split.
        let slice: Vec<i64> = (0..3)
            .flat_map(|r| (1..5).map(move |c| r * 6 + c))
            .collect();
        let t = take_runs(&indices(slice.clone())).unwrap();
        assert_eq!(t.shape(), &[3, 2]);
        let back = hb_bpu::program::refexec::run_indices(&t).unwrap();
        assert_eq!(back.to_i64_vec().unwrap(), slice);
        let t = take_runs(&indices((40..100).collect())).unwrap();
        assert_eq!(t.to_i64_vec().unwrap(), vec![40, 60]);
    }

    #[test]
    fn scattered_indices_stay_plain() {
        // A transpose of a 4 x 4 plane: every run is one element long.
        let tr: Vec<i64> = (0..4)
            .flat_map(|c| (0..4).map(move |r| r * 4 + c))
            .collect();
        assert!(take_runs(&indices(tr)).is_none());
    }
}
