//! Allocation-free paths of the engine: packed Conv/MatMul/Gemm with their
//! fused post-steps, and element-wise loops (Quantize, Dequantize,
//! Requantize/Relu/Clip, same-shape Add, Reshape). Each computes exactly
//! the reference formula (same `Requant`/`Rescale2` calls on the same
//! integers), so results are bit-identical.

use super::store::{Buf, Store, V};
use super::Packed;
use crate::fast::{conv_into, gemm_into, matmul_into, ExecOptions, Scratch};
use crate::fixed_point::{Requant, Rescale2};
use crate::program::numel;
use crate::program::prepared::{Clamp, Kernel, Post, PreparedOp};
use crate::qint::QInt;
use crate::tensor::{split_at_axis, TensorRef};

type R<T> = Result<T, String>;

/// Dispatches a writable output buffer: binds `$o: &mut [$O]` (first `$n`).
macro_rules! with_out_buf {
    ($buf:expr, $n:expr, |$o:ident : $O:ident| $body:expr) => {
        match $buf {
            Buf::I8(v) => {
                #[allow(dead_code)]
                type $O = i8;
                let $o = v.get_mut(..$n).ok_or("slot too small")?;
                $body
            }
            Buf::I16(v) => {
                #[allow(dead_code)]
                type $O = i16;
                let $o = v.get_mut(..$n).ok_or("slot too small")?;
                $body
            }
            Buf::I32(v) => {
                #[allow(dead_code)]
                type $O = i32;
                let $o = v.get_mut(..$n).ok_or("slot too small")?;
                $body
            }
            _ => return Ok(false),
        }
    };
}

/// Dispatches an integer input: binds `$x: &[$I]`.
macro_rules! with_in {
    ($v:expr, |$x:ident : $I:ident| $body:expr) => {
        match $v {
            V::I8($x) => {
                #[allow(dead_code)]
                type $I = i8;
                $body
            }
            V::I16($x) => {
                #[allow(dead_code)]
                type $I = i16;
                $body
            }
            V::I32($x) => {
                #[allow(dead_code)]
                type $I = i32;
                $body
            }
            _ => return Ok(false),
        }
    };
}

/// Runs a packed weighted op and its post-steps. `Ok(false)`: not handled.
pub(super) fn packed(
    op: &PreparedOp,
    pw: &Packed,
    st: &mut Store<'_>,
    scratch: &mut Scratch,
    exec: &ExecOptions,
) -> R<bool> {
    let xid = op.inputs[0].ok_or("missing input")?;
    let yid = op.outputs[0];
    let xshape = st.infos[xid].1.clone();
    let n = numel(&st.infos[yid].1);
    let s = st.slot(yid)?;
    let mut buf = st.take(s);
    let res = (|| -> R<bool> {
        let x = st.get(xid)?;
        macro_rules! go {
            ($xs:expr) => {{
                let xr = TensorRef::new($xs, &xshape).map_err(|e| e.to_string())?;
                with_out_buf!(&mut buf, n, |o: O| {
                    match pw {
                        Packed::Conv(w) => conv_into(w, xr, o, scratch, exec),
                        Packed::MatMul(w) => matmul_into(w, xr, o, scratch, exec),
                        Packed::Gemm(w) => gemm_into(w, xr, o, scratch, exec),
                    }
                    .map_err(|e| e.to_string())?;
                    post_in_place::<O>(op, o, st)?;
                })
            }};
        }
        match x {
            V::I8(xs) => go!(xs),
            V::I16(xs) => go!(xs),
            _ => return Ok(false),
        }
        Ok(true)
    })();
    st.restore(s, buf);
    res
}

/// Applies fused post-steps in place on an output of type `O`.
fn post_in_place<O: QInt>(op: &PreparedOp, y: &mut [O], st: &Store<'_>) -> R<()> {
    let shape = &st.infos[op.outputs[0]].1;
    for p in &op.post {
        match p {
            Post::Rescale {
                requant,
                axis,
                clamp,
            } => rescale_in_place(y, shape, requant, *axis, *clamp)?,
            Post::Add {
                other,
                main_is_b,
                r,
            } => {
                let o = st.get(*other)?;
                if numel(&st.infos[*other].1) != y.len() || st.infos[*other].1 != *shape {
                    return Err("fused add operands differ in shape".into());
                }
                match o {
                    V::I8(b) => add_in_place(y, b, *main_is_b, r),
                    V::I16(b) => add_in_place(y, b, *main_is_b, r),
                    V::I32(b) => add_in_place(y, b, *main_is_b, r),
                    _ => return Err("fused add operand is not an integer".into()),
                }
            }
        }
    }
    Ok(())
}

fn add_in_place<O: QInt, B: QInt>(y: &mut [O], b: &[B], main_is_b: bool, r: &Rescale2) {
    for (v, &w) in y.iter_mut().zip(b) {
        *v = if main_is_b {
            r.apply::<O>(w.to_i64(), v.to_i64())
        } else {
            r.apply::<O>(v.to_i64(), w.to_i64())
        };
    }
}

/// `y = clamp(sat(R_c(y)), lo, hi)` in place.
fn rescale_in_place<O: QInt>(
    y: &mut [O],
    shape: &[usize],
    requant: &[Requant],
    axis: usize,
    clamp: Clamp,
) -> R<()> {
    let (outer, c, inner) = if shape.is_empty() {
        (1, 1, 1)
    } else {
        split_at_axis(shape, axis).map_err(|e| e.to_string())?
    };
    let (lo, hi) = clamp.unwrap_or((O::MIN, O::MAX));
    let hi = hi.max(lo);
    for o in 0..outer {
        for k in 0..c {
            let r = requant[if requant.len() == 1 { 0 } else { k }];
            let base = (o * c + k) * inner;
            for v in &mut y[base..base + inner] {
                *v = O::sat_i64(r.apply::<O>(v.to_i64()).to_i64().clamp(lo, hi));
            }
        }
    }
    Ok(())
}

fn rescale_into<I: QInt, O: QInt>(
    x: &[I],
    y: &mut [O],
    shape: &[usize],
    requant: &[Requant],
    axis: usize,
    clamp: Clamp,
) -> R<()> {
    let (outer, c, inner) = if shape.is_empty() {
        (1, 1, 1)
    } else {
        split_at_axis(shape, axis).map_err(|e| e.to_string())?
    };
    if requant.len() != 1 && requant.len() != c {
        return Err("requantisations do not match the channels".into());
    }
    let (lo, hi) = clamp.unwrap_or((O::MIN, O::MAX));
    let hi = hi.max(lo);
    for o in 0..outer {
        for k in 0..c {
            let r = requant[if requant.len() == 1 { 0 } else { k }];
            let base = (o * c + k) * inner;
            for (d, &q) in y[base..base + inner].iter_mut().zip(&x[base..base + inner]) {
                *d = O::sat_i64(r.apply::<O>(q.to_i64()).to_i64().clamp(lo, hi));
            }
        }
    }
    Ok(())
}

/// Element-wise fast paths; `Ok(false)` leaves the op to the reference
/// executor.
pub(super) fn try_fast(op: &PreparedOp, st: &mut Store<'_>) -> R<bool> {
    if !op.post.is_empty() || op.outputs.len() != 1 {
        return Ok(false);
    }
    let yid = op.outputs[0];
    let yshape = st.infos[yid].1.clone();
    let n = numel(&yshape);
    let s = match st.slot(yid) {
        Ok(s) => s,
        Err(_) => return Ok(false),
    };
    let mut buf = st.take(s);
    let res = (|| -> R<bool> {
        let x0 = |k: usize| -> R<V<'_>> {
            st.get(op.inputs.get(k).copied().flatten().ok_or("missing input")?)
        };
        match &op.kernel {
            Kernel::Quantize(p) => {
                let V::F32(x) = x0(0)? else { return Ok(false) };
                with_out_buf!(&mut buf, n, |o: O| {
                    for (d, &v) in o.iter_mut().zip(x) {
                        *d = O::sat_i64(p.quantize(v));
                    }
                });
            }
            Kernel::Dequantize {
                scales,
                hp_scales,
                axis,
            } => {
                let Buf::F32(o) = &mut buf else {
                    return Ok(false);
                };
                let o = o.get_mut(..n).ok_or("slot too small")?;
                let xshape = &st.infos[op.inputs[0].ok_or("missing input")?].1;
                let v = x0(0)?;
                if !hp_scales.is_empty() {
                    let V::I32(x) = v else { return Ok(false) };
                    let (outer, c, inner) =
                        split_at_axis(xshape, *axis).map_err(|e| e.to_string())?;
                    for oo in 0..outer {
                        for k in 0..c {
                            let sc = hp_scales[if hp_scales.len() == 1 { 0 } else { k }];
                            let base = (oo * c + k) * inner;
                            for (d, &q) in
                                o[base..base + inner].iter_mut().zip(&x[base..base + inner])
                            {
                                *d = (f64::from(q) * sc) as f32;
                            }
                        }
                    }
                } else if scales.len() == 1 {
                    let sc = scales[0];
                    with_in!(v, |x: I| for (d, &q) in o.iter_mut().zip(x) {
                        *d = q.to_i64() as f32 * sc;
                    });
                } else {
                    return Ok(false);
                }
            }
            Kernel::Rescale {
                requant,
                axis,
                clamp,
            } => {
                let v = x0(0)?;
                with_in!(v, |x: I| with_out_buf!(&mut buf, n, |o: O| rescale_into::<
                    I,
                    O,
                >(
                    x, o, &yshape, requant, *axis, *clamp
                )?));
            }
            Kernel::Add(r) => {
                let (a, b) = (
                    op.inputs[0].ok_or("missing")?,
                    op.inputs[1].ok_or("missing")?,
                );
                if st.infos[a].1 != yshape || st.infos[b].1 != yshape {
                    return Ok(false);
                }
                let (va, vb) = (x0(0)?, x0(1)?);
                with_in!(va, |xa: A| with_in!(vb, |xb: B| with_out_buf!(
                    &mut buf,
                    n,
                    |o: O| {
                        for ((d, &p), &q) in o.iter_mut().zip(xa).zip(xb) {
                            *d = r.apply::<O>(p.to_i64(), q.to_i64());
                        }
                    }
                )));
            }
            Kernel::Reshape => {
                let v = x0(0)?;
                match (v, &mut buf) {
                    (V::I8(x), Buf::I8(o)) => o.get_mut(..n).ok_or("slot")?.copy_from_slice(x),
                    (V::I16(x), Buf::I16(o)) => o.get_mut(..n).ok_or("slot")?.copy_from_slice(x),
                    (V::I32(x), Buf::I32(o)) => o.get_mut(..n).ok_or("slot")?.copy_from_slice(x),
                    (V::F32(x), Buf::F32(o)) => o.get_mut(..n).ok_or("slot")?.copy_from_slice(x),
                    _ => return Ok(false),
                }
            }
            Kernel::MaxPool { params, requant } => {
                let xshape = &st.infos[op.inputs[0].ok_or("missing input")?].1;
                if xshape.len() != 4 || params.kernel.len() != 2 || yshape.len() != 4 {
                    return Ok(false);
                }
                if (0..2).any(|i| {
                    params.pads[i] >= params.kernel[i] || params.pads[2 + i] >= params.kernel[i]
                }) {
                    return Ok(false);
                }
                let v = x0(0)?;
                with_in!(v, |x: I| with_out_buf!(&mut buf, n, |o: O| max_pool_2d::<
                    I,
                    O,
                >(
                    x, o, xshape, &yshape, params, requant
                )));
            }
            Kernel::GlobalAvgPool { s_x, s_y } => {
                let xshape = &st.infos[op.inputs[0].ok_or("missing input")?].1;
                if xshape.len() < 3 {
                    return Ok(false);
                }
                let plane: usize = xshape[2..].iter().product();
                if plane == 0 {
                    return Ok(false);
                }
                let r = Requant::from_ratio(f64::from(*s_x) / (plane as f64 * f64::from(*s_y)))
                    .map_err(|e| e.to_string())?;
                let v = x0(0)?;
                with_in!(v, |x: I| with_out_buf!(&mut buf, n, |o: O| {
                    for (d, row) in o.iter_mut().zip(x.chunks_exact(plane)) {
                        let sum: i64 = row.iter().map(|q| q.to_i64()).sum();
                        *d = r.apply::<O>(sum);
                    }
                }));
            }
            _ => return Ok(false),
        }
        Ok(true)
    })();
    st.restore(s, buf);
    res
}

/// 2-D MaxPool on NCHW, windows exactly as the reference (positions outside
/// the input ignored), then `R(s_x/s_y)`.
fn max_pool_2d<I: QInt, O: QInt>(
    x: &[I],
    y: &mut [O],
    xs: &[usize],
    ys: &[usize],
    p: &crate::reference::pool::PoolParams,
    r: &Requant,
) {
    let (h, w) = (xs[2] as i64, xs[3] as i64);
    let (oh, ow) = (ys[2], ys[3]);
    let planes = xs[0] * xs[1];
    for c in 0..planes {
        let xp = &x[c * (h * w) as usize..(c + 1) * (h * w) as usize];
        let yp = &mut y[c * oh * ow..(c + 1) * oh * ow];
        for i in 0..oh {
            let h0 = (i * p.strides[0]) as i64 - p.pads[0] as i64;
            for j in 0..ow {
                let w0 = (j * p.strides[1]) as i64 - p.pads[1] as i64;
                let mut m = i64::MIN;
                for a in 0..p.kernel[0] {
                    let hh = h0 + (a * p.dilations[0]) as i64;
                    if hh < 0 || hh >= h {
                        continue;
                    }
                    let row = &xp[(hh * w) as usize..((hh + 1) * w) as usize];
                    for b in 0..p.kernel[1] {
                        let ww = w0 + (b * p.dilations[1]) as i64;
                        if ww >= 0 && ww < w {
                            m = m.max(row[ww as usize].to_i64());
                        }
                    }
                }
                if m == i64::MIN {
                    m = I::MIN;
                }
                yp[i * ow + j] = r.apply::<O>(m);
            }
        }
    }
}
