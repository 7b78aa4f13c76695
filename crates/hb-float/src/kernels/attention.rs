//! Attention (opset 23+): scaled dot-product attention over 3-D or 4-D
//! Q/K/V with optional mask (bool or additive), causal and windowed
//! masking, softcap, grouped-query heads, past key/value caches,
//! `nonpad_kv_seqlen` padding and the optional `qk_matmul_output`.
//!
//! Follows the ONNX reference: softcap is applied before the mask (so -inf
//! stays -inf); `qk_matmul_output` is the (softcapped) scaled Q·Kᵀ for
//! modes 0 and 1, with the bias added for mode 2, and the softmax for mode 3;
//! a fully masked row gets zero weights (no NaN).

use crate::error::OpResult;
use crate::invalid;
use crate::kernels::floatio::{contiguous, f32_of, to_dtype, to_vec};
use crate::kernels::gemm::{for_each_chunk, sgemm, Mat};
use crate::kernels::util::{input, opt_input};
use crate::registry::{OpCtx, Registry};
use hb_tensor::Tensor;
use ndarray::{ArrayD, IxDyn};

/// Registers Attention.
pub fn register(r: &mut Registry) {
    r.register("Attention", attention);
}

/// A `[batch, heads, seq, head_size]` f32 tensor, contiguous.
struct Heads {
    data: Vec<f32>,
    b: usize,
    h: usize,
    s: usize,
    d: usize,
}

impl Heads {
    /// From a 4-D array, or a 3-D `[B, S, heads·D]` one split into `heads`.
    fn new(a: &ArrayD<f32>, heads: Option<usize>, what: &str) -> OpResult<Self> {
        let sh = a.shape();
        match (sh.len(), heads) {
            (4, _) => Ok(Heads {
                data: to_vec(a),
                b: sh[0],
                h: sh[1],
                s: sh[2],
                d: sh[3],
            }),
            (3, Some(h)) if h > 0 && sh[2].is_multiple_of(h) => {
                let d = sh[2] / h;
                Ok(Heads {
                    data: swap_12(&contiguous(a), [sh[0], sh[1], h, d]),
                    b: sh[0],
                    h,
                    s: sh[1],
                    d,
                })
            }
            (3, _) => Err(invalid!(
                "{what} is 3-D {sh:?}: q_num_heads/kv_num_heads must be set and divide its last dim"
            )),
            _ => Err(invalid!("{what} must be 3-D or 4-D, got {sh:?}")),
        }
    }

    /// The `(b, h)` matrix (`s × d`).
    fn mat(&self, b: usize, h: usize) -> &[f32] {
        let n = self.s * self.d;
        let o = (b * self.h + h) * n;
        self.data.get(o..o + n).unwrap_or(&[])
    }

    /// Prepends `past` (`[B, H, P, D]`) along the sequence axis.
    fn with_past(self, past: Option<&ArrayD<f32>>, what: &str) -> OpResult<Self> {
        let Some(p) = past else { return Ok(self) };
        let ps = p.shape();
        if ps.len() != 4 || ps[0] != self.b || ps[1] != self.h || ps[3] != self.d {
            return Err(invalid!(
                "{what} {ps:?} does not match [{}, {}, *, {}]",
                self.b,
                self.h,
                self.d
            ));
        }
        let pd = contiguous(p);
        let (pn, cn) = (ps[2] * self.d, self.s * self.d);
        let mut data = Vec::with_capacity(self.b * self.h * (pn + cn));
        for bh in 0..self.b * self.h {
            data.extend_from_slice(pd.get(bh * pn..(bh + 1) * pn).unwrap_or(&[]));
            data.extend_from_slice(self.data.get(bh * cn..(bh + 1) * cn).unwrap_or(&[]));
        }
        Ok(Heads {
            s: ps[2] + self.s,
            data,
            ..self
        })
    }

    fn to_array(&self) -> OpResult<ArrayD<f32>> {
        ArrayD::from_shape_vec(IxDyn(&[self.b, self.h, self.s, self.d]), self.data.clone())
            .map_err(|e| invalid!("{e}"))
    }
}

/// Swaps axes 1 and 2 of a contiguous 4-D `[a, b, c, d]` buffer.
fn swap_12(x: &[f32], [a, b, c, d]: [usize; 4]) -> Vec<f32> {
    let mut out = vec![0f32; a * b * c * d];
    for i in 0..a {
        for j in 0..b {
            for k in 0..c {
                let src = ((i * b + j) * c + k) * d;
                let dst = ((i * c + k) * b + j) * d;
                if let (Some(o), Some(s)) = (out.get_mut(dst..dst + d), x.get(src..src + d)) {
                    o.copy_from_slice(s);
                }
            }
        }
    }
    out
}

/// Additive bias of every `(b, h, i, j)` score: mask, causal/window limits, padding.
struct Bias {
    /// Mask values (bool masks become 0 / -inf), with broadcast strides.
    mask: Option<(Vec<f32>, [usize; 4], usize)>,
    causal: bool,
    left: i64,
    right: i64,
    /// Offset of query 0 in key positions, per batch.
    offset: Vec<i64>,
    /// Valid key count per batch.
    nonpad: Option<Vec<i64>>,
}

impl Bias {
    fn at(&self, b: usize, h: usize, i: usize, j: usize) -> f32 {
        let pos = i as i64 + self.offset.get(b).copied().unwrap_or(0);
        let j64 = j as i64;
        let blocked = (self.causal && j64 > pos)
            || (self.left >= 0 && j64 < pos - self.left)
            || (self.right >= 0 && j64 > pos + self.right)
            || self
                .nonpad
                .as_ref()
                .is_some_and(|n| j64 >= n.get(b).copied().unwrap_or(i64::MAX));
        if blocked {
            return f32::NEG_INFINITY;
        }
        match &self.mask {
            None => 0.0,
            Some((m, st, width)) => {
                if j >= *width {
                    return f32::NEG_INFINITY;
                }
                let o = b * st[0] + h * st[1] + i * st[2] + j * st[3];
                m.get(o).copied().unwrap_or(0.0)
            }
        }
    }
}

/// The mask as additive f32 values with strides broadcasting it to `[B, H, Sq, *]`.
fn mask_values(t: &Tensor, dims: [usize; 3]) -> OpResult<(Vec<f32>, [usize; 4], usize)> {
    let sh = t.shape().to_vec();
    if sh.is_empty() || sh.len() > 4 {
        return Err(invalid!("attn_mask must have rank 1 to 4, got {sh:?}"));
    }
    let vals: Vec<f32> = match t {
        Tensor::Bool(a) => a
            .iter()
            .map(|&v| if v { 0.0 } else { f32::NEG_INFINITY })
            .collect(),
        other => to_vec(&*f32_of(other)?),
    };
    let mut full = [1usize; 4];
    full[4 - sh.len()..].copy_from_slice(&sh);
    let mut st = [0usize; 4];
    let mut s = 1;
    for d in (0..4).rev() {
        st[d] = if full[d] == 1 { 0 } else { s };
        if d < 3 && full[d] != 1 && full[d] != dims[d] {
            return Err(invalid!("attn_mask {sh:?} does not broadcast to {dims:?}"));
        }
        s *= full[d];
    }
    Ok((vals, st, full[3]))
}

/// `x` into softcap form: `c · tanh(x / c)`.
fn softcap(v: &mut [f32], c: f32) {
    if c > 0.0 {
        v.iter_mut().for_each(|x| *x = c * (*x / c).tanh());
    }
}

/// Softmax of one row; a row with no finite score gives zeros.
fn softmax_row(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    let mut sum = 0.0;
    row.iter_mut().for_each(|x| {
        *x = super::fastmath::exp_f32(*x - max);
        sum += *x;
    });
    row.iter_mut().for_each(|x| *x /= sum);
}

struct Attrs {
    scale: Option<f32>,
    softcap: f32,
    mode: i64,
}

fn attention(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let node = ctx.node;
    let qt = input(inputs, 0)?;
    let heads = |n: &str| -> OpResult<Option<usize>> {
        Ok(node.get_int(n)?.filter(|&v| v > 0).map(|v| v as usize))
    };
    let (qh, kvh) = (heads("q_num_heads")?, heads("kv_num_heads")?);
    let q = Heads::new(&*f32_of(qt)?, qh, "Q")?;
    let kt = input(inputs, 1)?;
    let past = |i: usize| opt_input(inputs, i).map(f32_of).transpose();
    let (pk, pv) = (past(4)?, past(5)?);
    let past_len = pk.as_ref().map(|p| p.shape().get(2).copied().unwrap_or(0));
    let k = Heads::new(&*f32_of(kt)?, kvh, "K")?.with_past(pk.as_deref(), "past_key")?;
    let v = Heads::new(&*f32_of(input(inputs, 2)?)?, kvh, "V")?
        .with_past(pv.as_deref(), "past_value")?;
    if k.b != q.b
        || v.b != q.b
        || k.d != q.d
        || v.s != k.s
        || v.h != k.h
        || k.h == 0
        || !q.h.is_multiple_of(k.h)
    {
        return Err(invalid!(
            "Attention shapes do not fit: Q [{}, {}, {}, {}], K [{}, {}, {}, {}], V [{}, {}, {}, {}]",
            q.b, q.h, q.s, q.d, k.b, k.h, k.s, k.d, v.b, v.h, v.s, v.d
        ));
    }
    let a = Attrs {
        scale: node.get_float("scale")?,
        softcap: node.float_or("softcap", 0.0)?,
        mode: node.int_or("qk_matmul_output_mode", 0)?,
    };
    let nonpad = opt_input(inputs, 6).map(|t| t.to_i64_vec()).transpose()?;
    let offset = match (past_len, &nonpad) {
        (Some(p), _) => vec![p as i64; q.b],
        (None, Some(n)) => n.iter().map(|&n| n - q.s as i64).collect(),
        (None, None) => vec![0; q.b],
    };
    let bias = Bias {
        mask: opt_input(inputs, 3)
            .map(|m| mask_values(m, [q.b, q.h, q.s]))
            .transpose()?,
        causal: node.int_or("is_causal", 0)? != 0,
        left: node.int_or("left_window_size", -1)?,
        right: node.int_or("right_window_size", -1)?,
        offset,
        nonpad,
    };
    let want_qk = node.outputs.get(3).is_some_and(|o| !o.is_empty());
    let (y, qk) = compute(&q, &k, &v, &bias, &a, want_qk)?;
    let dtype = qt.dtype();
    let y = if qt.rank() == 3 {
        let y3 = swap_12(&y, [q.b, q.h, q.s, v.d]);
        ArrayD::from_shape_vec(IxDyn(&[q.b, q.s, q.h * v.d]), y3)
    } else {
        ArrayD::from_shape_vec(IxDyn(&[q.b, q.h, q.s, v.d]), y)
    }
    .map_err(|e| invalid!("{e}"))?;
    let mut outs = vec![to_dtype(y, dtype)?];
    let n_out = node.outputs.len();
    if n_out > 1 {
        outs.push(to_dtype(k.to_array()?, kt.dtype())?);
        outs.push(to_dtype(v.to_array()?, kt.dtype())?);
    }
    if let Some(qk) = qk {
        let a = ArrayD::from_shape_vec(IxDyn(&[q.b, q.h, q.s, k.s]), qk)
            .map_err(|e| invalid!("{e}"))?;
        outs.push(to_dtype(a, dtype)?);
    }
    Ok(outs)
}

/// Scores, softmax and the weighted sum for every `(batch, head)`.
fn compute(
    q: &Heads,
    k: &Heads,
    v: &Heads,
    bias: &Bias,
    a: &Attrs,
    want_qk: bool,
) -> OpResult<(Vec<f32>, Option<Vec<f32>>)> {
    let (sq, sk, dv) = (q.s, k.s, v.d);
    let scale = a.scale.unwrap_or(1.0 / (q.d as f32).sqrt());
    let group = q.h / k.h;
    let mut y = vec![0f32; q.b * q.h * sq * dv];
    let mut qk_all = if want_qk {
        vec![0f32; q.b * q.h * sq * sk]
    } else {
        Vec::new()
    };
    let qk_ptr = std::sync::Mutex::new(&mut qk_all);
    for_each_chunk(&mut y, sq * dv, sq * sk * (q.d + dv), |bh, yo| {
        let (b, h) = (bh / q.h, bh % q.h);
        let kh = h / group;
        let mut s = vec![0f32; sq * sk];
        let km = Mat::row_major(k.mat(b, kh), sk, k.d).t();
        sgemm(scale, Mat::row_major(q.mat(b, h), sq, q.d), km, 0.0, &mut s)?;
        softcap(&mut s, a.softcap);
        let capped = (want_qk && a.mode <= 1).then(|| s.clone());
        for (i, row) in s.chunks_mut(sk.max(1)).enumerate() {
            for (j, x) in row.iter_mut().enumerate() {
                *x += bias.at(b, h, i, j);
            }
        }
        let biased = (want_qk && a.mode == 2).then(|| s.clone());
        s.chunks_mut(sk.max(1)).for_each(softmax_row);
        if want_qk {
            let src = capped.or(biased).unwrap_or_else(|| s.clone());
            if let Ok(mut all) = qk_ptr.lock() {
                if let Some(dst) = all.get_mut(bh * sq * sk..(bh + 1) * sq * sk) {
                    dst.copy_from_slice(&src);
                }
            }
        }
        sgemm(
            1.0,
            Mat::row_major(&s, sq, sk),
            Mat::row_major(v.mat(b, kh), sk, dv),
            0.0,
            yo,
        )
    })?;
    Ok((y, want_qk.then_some(qk_all)))
}
