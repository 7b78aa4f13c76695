//! Allocation-free paths of the engine: packed Conv/MatMul/Gemm with their
//! fused post-steps, and the loops of [`super::elem`] for Quantize,
//! Dequantize, Rescale/Relu/Clip, broadcasting Add/Sub/Mul/Div, LUTs,
//! ReduceMean, Transpose, Reshape, MaxPool, GlobalAveragePool and
//! activation × activation MatMul. Each computes exactly the reference
//! formula on the same integers (requantisations in i64 only where that is
//! provably exact), so results are bit-identical; the tests at the end
//! check that against the reference kernels.

use super::softmax::softmax_into;
use super::store::{Buf, Store, V};
use super::Packed;
use crate::fast::{conv_into_layout, gemm_into, matmul_into, ConvLayout, ExecOptions, Scratch};
use crate::fixed_point::{Requant, Rescale2};
use crate::program::numel;
use crate::program::prepared::{Clamp, Kernel, Post, PreparedOp};
use crate::qint::QInt;
use crate::reference::quant::QuantParams;
use crate::tensor::{split_at_axis, TensorRef};

use super::elem;
use super::elem::{has_avx2, has_avx512};

/// Reusable accumulators of the element-wise paths.
#[derive(Debug, Default)]
pub(super) struct Tmp {
    acc32: Vec<i32>,
    acc64: Vec<i64>,
}

/// Quantizes a slice, bit-identical with [`QuantParams::quantize`]
/// element by element; branch-free (vectorisable) when 0 lies inside the
/// clamp range, as it does for every feature quantizer.
pub(super) fn quantize_slice<O: QInt>(p: &QuantParams, x: &[f32], o: &mut [O]) {
    let lo = if p.keep_masks {
        (-p.hi).max(p.lo)
    } else {
        p.lo
    };
    let simple = lo <= 0
        && p.lo <= 0
        && 0 <= p.hi
        && lo >= -(1 << 24)
        && p.hi <= 1 << 24
        && O::MIN <= lo
        && p.hi <= O::MAX
        && p.lo >= O::MIN;
    if !simple {
        for (d, &v) in o.iter_mut().zip(x) {
            *d = O::sat_i64(p.quantize(v));
        }
        return;
    }
    let k = QuantLanes {
        scale: p.scale,
        keep_masks: p.keep_masks,
        mask_limit: p.mask_limit,
        lo: lo as f32,
        hi: p.hi as f32,
        mask_value: p.lo as f32,
    };
    #[cfg(target_arch = "x86_64")]
    if has_avx512() && matches!(std::mem::size_of::<O>(), 1 | 2) {
        // SAFETY: AVX-512 F/BW/DQ/VL detected; `O` is 1 or 2 bytes and the
        // range check above holds.
        let done = unsafe { quantize_packed_avx512(x, o, &k) };
        return quantize_lanes(&x[done..], &mut o[done..], &k);
    }
    quantize_lanes(x, o, &k)
}

/// The constants of [`quantize_slice`]'s simple path, as f32.
pub(super) struct QuantLanes {
    scale: f32,
    keep_masks: bool,
    mask_limit: f32,
    /// The clamp (integers inside the output type).
    lo: f32,
    hi: f32,
    /// What a mask value (≤ `mask_limit` under `keep_masks`) becomes.
    mask_value: f32,
}

/// [`quantize_body`] for 8- and 16-bit outputs in whole blocks of 64 / 32
/// values, narrowed by saturating packs (exact: the values are in range)
/// rather than the `vpmovsdb`/`vpmovsdw` stores to memory LLVM emits for
/// the plain loop, which are slow on AMD Zen 4. Rounding half to even by
/// `vrndscaleps` equals the body's ±2^23 trick on every input. Returns the
/// count done; the caller finishes the tail.
///
/// # Safety
/// AVX-512 F/BW available; `size_of::<O>()` is 1 or 2; the range
/// conditions of [`quantize_slice`]'s simple path hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_packed_avx512<O: QInt>(x: &[f32], o: &mut [O], k: &QuantLanes) -> usize {
    use std::arch::x86_64::*;
    let size = std::mem::size_of::<O>();
    let step = if size == 1 { 64 } else { 32 };
    let n = x.len().min(o.len()) / step * step;
    let (vsc, vlo, vhi, vmlo, vlim) = (
        _mm512_set1_ps(k.scale),
        _mm512_set1_ps(k.lo),
        _mm512_set1_ps(k.hi),
        _mm512_set1_ps(k.mask_value),
        _mm512_set1_ps(k.mask_limit),
    );
    // 16 values at `p` to i32.
    let q16 = |p: *const f32| -> __m512i {
        // SAFETY: the loop below reads inside `x[..n]`.
        let v = unsafe { _mm512_loadu_ps(p) };
        let q = _mm512_div_ps(v, vsc);
        let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(q);
        // NaN → 0, then the clamp, then masks.
        let r = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(r, r), r);
        let r = _mm512_min_ps(_mm512_max_ps(r, vlo), vhi);
        let r = if k.keep_masks {
            _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask::<_CMP_LE_OQ>(v, vlim), vmlo)
        } else {
            r
        };
        _mm512_cvttps_epi32(r)
    };
    let (xp, op) = (x.as_ptr(), o.as_mut_ptr() as *mut u8);
    for i in (0..n).step_by(step) {
        // SAFETY: `i + step ≤ n ≤ len`; `O` is `size` bytes.
        unsafe {
            let a = _mm512_packs_epi32(q16(xp.add(i)), q16(xp.add(i + 16)));
            if size == 1 {
                let b = _mm512_packs_epi32(q16(xp.add(i + 32)), q16(xp.add(i + 48)));
                // Dword 4l + k holds chunk l of vector k: back to order.
                let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
                let y = _mm512_permutexvar_epi32(idx, _mm512_packs_epi16(a, b));
                _mm512_storeu_si512(op.add(i) as *mut __m512i, y);
            } else {
                let idx = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
                let y = _mm512_permutexvar_epi64(idx, a);
                _mm512_storeu_si512(op.add(2 * i) as *mut __m512i, y);
            }
        }
    }
    n
}

elem::simd_copies! {
    /// `y = x · scale` in f32 (per-tensor Dequantize), compiled per
    /// instruction set.
    fn dequantize_lanes<I>(x: &[I], y: &mut [f32], scale: f32) => dequantize_body
}

#[inline(always)]
fn dequantize_body<I: QInt>(x: &[I], y: &mut [f32], scale: f32) {
    for (d, &q) in y.iter_mut().zip(x) {
        // Every QInt value fits i32, and i32 → f32 rounds the same
        // integer as i64 → f32 would (16 lanes instead of 8).
        *d = (q.to_i64() as i32) as f32 * scale;
    }
}

elem::simd_copies! {
    /// [`quantize_body`] compiled per instruction set.
    fn quantize_lanes<O>(x: &[f32], o: &mut [O], k: &QuantLanes) => quantize_body
}

/// The loop of [`quantize_slice`] (range checked by the caller).
#[inline(always)]
fn quantize_body<O: QInt>(x: &[f32], o: &mut [O], k: &QuantLanes) {
    let (sc, lof, hif, mlo) = (k.scale, k.lo, k.hi, k.mask_value);
    const TWO23: f32 = 8_388_608.0;
    for (d, &v) in o.iter_mut().zip(x) {
        let q = v / sc;
        // Round half to even: |q| < 2^23 by adding and removing ±2^23
        // (exact in f32), larger values are already integers.
        let m = if q.abs() < TWO23 {
            TWO23.copysign(q)
        } else {
            0.0
        };
        let r = (q + m) - m;
        // NaN → 0 (inside the range), then the clamp.
        let r = if r.is_nan() { 0.0 } else { r.max(lof).min(hif) };
        let r = if k.keep_masks && v <= k.mask_limit {
            mlo
        } else {
            r
        };
        // SAFETY: `r` is not NaN and lies in `[lof, hif]` or equals `mlo`,
        // all integers in `[O::MIN, O::MAX]` ⊆ i32 (checked by the caller),
        // so the conversion is exact and in range (vectorises, unlike the
        // saturating `as`).
        let q = unsafe { r.to_int_unchecked::<i32>() };
        *d = O::sat_i64(i64::from(q));
    }
}

/// Largest magnitude of a value of an 8/16-bit value (`None` for i32).
fn small_max(v: &V<'_>) -> Option<i64> {
    match v {
        V::I8(_) => Some(128),
        V::I16(_) => Some(32768),
        _ => None,
    }
}

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

/// Whether the first input of `op` is int16 with values the narrow
/// packing `nw` takes (see [`crate::fast::PackedWeights::takes_narrow_range`]).
pub(super) fn input_is_narrow(op: &PreparedOp, nw: &Packed, st: &Store<'_>) -> bool {
    let w = nw.weights();
    match op.inputs.first().copied().flatten().map(|i| st.get(i)) {
        Some(Ok(V::I16(x))) => {
            let (lo, hi) = crate::fast::i16_range(x);
            w.takes_narrow_range(i64::from(lo), i64::from(hi))
        }
        _ => false,
    }
}

/// Runs a packed weighted op and its post-steps. `Ok(false)`: not handled.
pub(super) fn packed(
    op: &PreparedOp,
    pw: &Packed,
    posts: &[Post],
    st: &mut Store<'_>,
    scratch: &mut Scratch,
    exec: &ExecOptions,
) -> R<bool> {
    let xid = op.inputs[0].ok_or("missing input")?;
    let yid = op.outputs[0];
    let layout = ConvLayout {
        x_channels_last: st.is_channels_last(xid),
        y_channels_last: st.is_channels_last(yid),
    };
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
                        Packed::Conv(w) => conv_into_layout(w, xr, o, scratch, exec, layout),
                        Packed::MatMul(w) => matmul_into(w, xr, o, scratch, exec),
                        Packed::Gemm(w) => gemm_into(w, xr, o, scratch, exec),
                    }
                    .map_err(|e| e.to_string())?;
                    post_in_place::<O>(op, posts, o, st)?;
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
fn post_in_place<O: QInt>(op: &PreparedOp, posts: &[Post], y: &mut [O], st: &Store<'_>) -> R<()> {
    let yid = op.outputs[0];
    let shape = &st.infos[yid].1;
    // A channels-last output: the stored shape, and where each logical
    // axis went (`[N, C, S…]` → `[N, S…, C]`).
    let cl = st.is_channels_last(yid) && shape.len() >= 3;
    let stored: Vec<usize> = if cl {
        let mut s = vec![shape[0]];
        s.extend(&shape[2..]);
        s.push(shape[1]);
        s
    } else {
        shape.clone()
    };
    let stored_axis = |a: usize| match a {
        1 if cl => shape.len() - 1,
        a if cl && a >= 2 => a - 1,
        a => a,
    };
    let mut steps = posts.iter().peekable();
    while let Some(p) = steps.next() {
        match p {
            Post::Rescale {
                requant,
                axis,
                clamp,
            } => rescale_in_place(y, &stored, requant, stored_axis(*axis), *clamp)?,
            Post::Add {
                other,
                main_is_b,
                r,
            } => {
                let o = st.get(*other)?;
                if numel(&st.infos[*other].1) != y.len() || st.infos[*other].1 != *shape {
                    return Err("fused add operands differ in shape".into());
                }
                // A clamp-only step right after (the Add's Relu / Clip,
                // merged by `merge_clamps`) runs in the same pass.
                let (lo, hi) = match steps.peek() {
                    Some(Post::Rescale {
                        requant,
                        clamp: Some((lo, hi)),
                        ..
                    }) if requant.len() == 1 && requant[0].is_identity() && lo <= hi => {
                        steps.next();
                        (*lo, *hi)
                    }
                    _ => (O::MIN, O::MAX),
                };
                match o {
                    V::I8(b) => add_in_place(y, b, *main_is_b, r, lo, hi),
                    V::I16(b) => add_in_place(y, b, *main_is_b, r, lo, hi),
                    V::I32(b) => add_in_place(y, b, *main_is_b, r, lo, hi),
                    _ => return Err("fused add operand is not an integer".into()),
                }
            }
        }
    }
    Ok(())
}

/// `y = clamp(Rescale2(y, b), lo, hi)` (operands swapped when
/// `main_is_b`); `[lo, hi]` within `O`'s range.
fn add_in_place<O: QInt, B: QInt>(
    y: &mut [O],
    b: &[B],
    main_is_b: bool,
    r: &Rescale2,
    lo: i64,
    hi: i64,
) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        let small = |bytes: usize| bytes == 1 || bytes == 2;
        if has_avx512()
            && small(size_of::<O>())
            && small(size_of::<B>())
            && r.shift <= 62
            && O::MIN <= lo
            && lo <= hi
            && hi <= O::MAX
        {
            let (my, mb) = if main_is_b {
                (r.mb, r.ma)
            } else {
                (r.ma, r.mb)
            };
            // SAFETY: AVX-512 detected; 1- or 2-byte types; the multipliers
            // are i32; shift and clamp checked above.
            done = unsafe {
                elem::rescale2_in_place_avx512(y, b, my.into(), mb.into(), r.shift, lo, hi)
            };
        }
    }
    let (y, b) = (&mut y[done..], &b[done.min(b.len())..]);
    let clamp = |v: O| O::sat_i64(v.to_i64().clamp(lo, hi));
    if main_is_b {
        elem::zip_in_place(y, b, |v, w| clamp(r.apply_fast::<O>(w, v)));
    } else {
        elem::zip_in_place(y, b, |v, w| clamp(r.apply_fast::<O>(v, w)));
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
    if requant.len() == 1 {
        let n = outer * c * inner;
        elem::rq_in_place(&mut y[..n], &requant[0], lo, hi);
        return Ok(());
    }
    if inner == 1 && requant.len() == c && c > 1 {
        let n = outer * c;
        elem::rq_last_axis_in_place(&mut y[..n], requant, lo, hi);
        return Ok(());
    }
    for o in 0..outer {
        for k in 0..c {
            let r = requant[if requant.len() == 1 { 0 } else { k }];
            let base = (o * c + k) * inner;
            elem::rq_in_place(&mut y[base..base + inner], &r, lo, hi);
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
    if requant.len() == 1 {
        let n = outer * c * inner;
        elem::rq_slice(&x[..n], &mut y[..n], &requant[0], lo, hi);
        return Ok(());
    }
    if inner == 1 && requant.len() == c && c > 1 {
        let n = outer * c;
        elem::rq_last_axis(&x[..n], &mut y[..n], requant, lo, hi);
        return Ok(());
    }
    for o in 0..outer {
        for k in 0..c {
            let r = requant[if requant.len() == 1 { 0 } else { k }];
            let base = (o * c + k) * inner;
            elem::rq_slice(
                &x[base..base + inner],
                &mut y[base..base + inner],
                &r,
                lo,
                hi,
            );
        }
    }
    Ok(())
}

/// Element-wise fast paths; `Ok(false)` leaves the op to the reference
/// executor.
pub(super) fn try_fast(
    op: &PreparedOp,
    posts: &[Post],
    st: &mut Store<'_>,
    tmp: &mut Tmp,
) -> R<bool> {
    if op.outputs.len() != 1 {
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
                    quantize_slice(p, x, o);
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
                    with_in!(v, |x: I| dequantize_lanes(x, o, sc));
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
            Kernel::Conv {
                params,
                transpose: true,
                requant,
                clamp,
            } => {
                let (Some(Some(xi)), Some(Some(wi))) = (op.inputs.first(), op.inputs.get(1)) else {
                    return Ok(false);
                };
                if st.is_channels_last(*xi) || st.is_channels_last(yid) {
                    return Ok(false);
                }
                let bias: Option<&[i64]> = match op.inputs.get(2).copied().flatten() {
                    None => None,
                    Some(bi) => match st.consts.get(bi).and_then(|c| c.as_deref()) {
                        Some(hb_tensor::Tensor::I64(a)) => Some(a.as_slice().ok_or("bias layout")?),
                        _ => return Ok(false),
                    },
                };
                let (xs, ws) = (&st.infos[*xi].1, &st.infos[*wi].1);
                let (vx, vw) = (x0(0)?, x0(1)?);
                let Tmp { acc32, acc64 } = tmp;
                let done = with_in!(vx, |x: X| with_in!(vw, |w: W| with_out_buf!(
                    &mut buf,
                    n,
                    |o: O| {
                        let k = super::conv_transpose::Operands {
                            x,
                            xs,
                            w,
                            ws,
                            bias,
                            requant,
                            clamp: *clamp,
                            p: params,
                        };
                        super::conv_transpose::conv_transpose_into(&k, o, &yshape, acc64, acc32)
                    }
                )));
                if !done {
                    return Ok(false);
                }
            }
            Kernel::Take { runs } => {
                // Data movement resolved at lowering (Split, Slice, Gather
                // with constant indices, ...): `y[i] = x[idx[i]]`, or the
                // concatenation of (start, length) runs of `x`.
                let (Some(Some(xi)), Some(Some(ii))) = (op.inputs.first(), op.inputs.get(1)) else {
                    return Ok(false);
                };
                if st.is_channels_last(*xi) || st.is_channels_last(yid) {
                    return Ok(false);
                }
                let Some(hb_tensor::Tensor::I64(ix)) =
                    st.consts.get(*ii).and_then(|c| c.as_deref())
                else {
                    return Ok(false);
                };
                let ix = ix.as_slice().ok_or("take indices layout")?;
                let len = if *runs {
                    ix.chunks_exact(2).map(|r| r[1]).sum::<i64>()
                } else {
                    ix.len() as i64
                };
                if len != n as i64 {
                    return Ok(false);
                }
                let r = *runs;
                match (x0(0)?, &mut buf) {
                    (V::I8(x), Buf::I8(o)) => take_any(x, ix, r, o.get_mut(..n).ok_or("slot")?)?,
                    (V::I16(x), Buf::I16(o)) => take_any(x, ix, r, o.get_mut(..n).ok_or("slot")?)?,
                    (V::I32(x), Buf::I32(o)) => take_any(x, ix, r, o.get_mut(..n).ok_or("slot")?)?,
                    _ => return Ok(false),
                }
            }
            Kernel::Concat { axis, requant } => {
                let ids: Vec<usize> = op.inputs.iter().flatten().copied().collect();
                if ids.len() != requant.len()
                    || ids.len() != op.inputs.len()
                    || st.is_channels_last(yid)
                    || ids.iter().any(|&i| st.is_channels_last(i))
                {
                    return Ok(false);
                }
                let (outer, total, inner) =
                    split_at_axis(&yshape, *axis).map_err(|e| e.to_string())?;
                let mut at = 0;
                for (&i, r) in ids.iter().zip(requant) {
                    let xs = &st.infos[i].1;
                    if xs.len() != yshape.len() || xs.get(*axis).is_none() {
                        return Ok(false);
                    }
                    let len = xs[*axis];
                    if at + len > total || numel(xs) != outer * len * inner {
                        return Ok(false);
                    }
                    let v = st.get(i)?;
                    with_in!(v, |x: I| with_out_buf!(&mut buf, n, |o: O| {
                        let row = len * inner;
                        for b in 0..outer {
                            let dst = &mut o[b * total * inner + at * inner..][..row];
                            elem::rq_slice(
                                &x[b * row..(b + 1) * row],
                                dst,
                                r,
                                <O as QInt>::MIN,
                                <O as QInt>::MAX,
                            );
                        }
                    }));
                    at += len;
                }
                if at != total {
                    return Ok(false);
                }
            }
            Kernel::Resize { params, s_x, s_y } => {
                let xi = op
                    .inputs
                    .first()
                    .copied()
                    .flatten()
                    .ok_or("missing input")?;
                if st.is_channels_last(xi) || st.is_channels_last(yid) {
                    return Ok(false);
                }
                let xshape = &st.infos[xi].1;
                use crate::reference::resize::{nearest_sources, plane_taps};
                if let Some((src, r)) =
                    nearest_sources(xshape, params, *s_x, *s_y).map_err(|e| e.to_string())?
                {
                    if src.len() != yshape.len() || numel(&yshape) != n {
                        return Ok(false);
                    }
                    let v = x0(0)?;
                    with_in!(v, |x: I| with_out_buf!(&mut buf, n, |o: O| resize_nearest(
                        x, o, xshape, &yshape, &src, &r
                    )));
                } else if let Some((th, tw, r)) =
                    plane_taps(xshape, params, *s_x, *s_y).map_err(|e| e.to_string())?
                {
                    let rank = xshape.len();
                    let (h, w) = (xshape[rank - 2], xshape[rank - 1]);
                    if numel(&yshape) != n || n != numel(&xshape[..rank - 2]) * th.len() * tw.len()
                    {
                        return Ok(false);
                    }
                    let v = x0(0)?;
                    let blend = &mut tmp.acc64;
                    with_in!(v, |x: I| with_out_buf!(&mut buf, n, |o: O| resize_planes(
                        x,
                        o,
                        (h, w),
                        &th,
                        &tw,
                        &r,
                        blend
                    )));
                } else {
                    return Ok(false);
                }
            }
            Kernel::MaxPool { params, requant } => {
                let xshape = &st.infos[op.inputs[0].ok_or("missing input")?].1;
                if xshape.len() != 4 || params.kernel.len() != 2 || yshape.len() != 4 {
                    return Ok(false);
                }
                if !max_pool_2d_fits(params) {
                    return Ok(false);
                }
                let cl = st.is_channels_last(op.inputs[0].ok_or("missing input")?);
                let v = x0(0)?;
                with_in!(v, |x: I| with_out_buf!(&mut buf, n, |o: O| if cl {
                    max_pool_2d_cl::<I, O>(x, o, xshape, &yshape, params, requant)
                } else {
                    max_pool_2d::<I, O>(x, o, xshape, &yshape, params, requant)
                }));
            }
            Kernel::GlobalAvgPool { s_x, s_y } => {
                let xid = op.inputs[0].ok_or("missing input")?;
                let xshape = &st.infos[xid].1;
                // Channels-last `[N, H·W, C]`: per image, the sums of
                // every channel over the pixels.
                let channels = match (st.is_channels_last(xid), xshape.as_slice()) {
                    (true, &[_, c, _, _]) => Some(c),
                    _ => None,
                };
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
                let sums = &mut tmp.acc64;
                with_in!(v, |x: I| with_out_buf!(
                    &mut buf,
                    n,
                    |o: O| match channels {
                        Some(c) => {
                            sums.clear();
                            sums.resize(c, 0);
                            for (img, ob) in x.chunks_exact(plane * c).zip(o.chunks_exact_mut(c)) {
                                sums.fill(0);
                                for px in img.chunks_exact(c) {
                                    for (s, q) in sums.iter_mut().zip(px) {
                                        *s += q.to_i64();
                                    }
                                }
                                for (d, &s) in ob.iter_mut().zip(sums.iter()) {
                                    *d = r.apply_fast::<O>(s);
                                }
                            }
                        }
                        None => {
                            for (d, row) in o.iter_mut().zip(x.chunks_exact(plane)) {
                                let sum: i64 = row.iter().map(|q| q.to_i64()).sum();
                                *d = r.apply_fast::<O>(sum);
                            }
                        }
                    }
                ));
            }

            Kernel::Add(r) if op.inputs.len() == 2 => {
                let (ia, ib) = (
                    op.inputs[0].ok_or("missing")?,
                    op.inputs[1].ok_or("missing")?,
                );
                let (sa, sb) = (&st.infos[ia].1, &st.infos[ib].1);
                let Some(out) = elem::bcast_shape(sa, sb) else {
                    return Ok(false);
                };
                if out != yshape {
                    return Ok(false);
                }
                let (Some(ta), Some(tb)) =
                    (elem::bcast_strides(sa, &out), elem::bcast_strides(sb, &out))
                else {
                    return Ok(false);
                };
                let (va, vb) = (x0(0)?, x0(1)?);
                if small_max(&va).is_some() && small_max(&vb).is_some() && r.shift <= 62 {
                    // 8/16-bit operands: |qa·ma + qb·mb| ≤ 2^47, so the
                    // reference sum and rounding are exact in i64.
                    let (ma, mb, sh) = (i64::from(r.ma), i64::from(r.mb), r.shift);
                    let rnd = if sh == 0 { 0 } else { 1i64 << (sh - 1) };
                    with_in!(va, |xa: A| with_in!(vb, |xb: B| with_out_buf!(
                        &mut buf,
                        n,
                        |o: O| elem::binary(xa, xb, o, &out, &ta, &tb, |p, q| O::sat_i64(
                            (p * ma + q * mb + rnd) >> sh
                        ))
                    )));
                } else {
                    with_in!(va, |xa: A| with_in!(vb, |xb: B| with_out_buf!(
                        &mut buf,
                        n,
                        |o: O| elem::binary(xa, xb, o, &out, &ta, &tb, |p, q| r
                            .apply_fast::<O>(p, q))
                    )));
                }
            }
            Kernel::Mul(r)
            | Kernel::Div(crate::reference::activation::DivPlan { requant: r, .. })
                if op.inputs.len() == 2 =>
            {
                let (ia, ib) = (
                    op.inputs[0].ok_or("missing")?,
                    op.inputs[1].ok_or("missing")?,
                );
                let (sa, sb) = (&st.infos[ia].1, &st.infos[ib].1);
                let Some(out) = elem::bcast_shape(sa, sb) else {
                    return Ok(false);
                };
                if out != yshape {
                    return Ok(false);
                }
                let (Some(ta), Some(tb)) =
                    (elem::bcast_strides(sa, &out), elem::bcast_strides(sb, &out))
                else {
                    return Ok(false);
                };
                let (va, vb) = (x0(0)?, x0(1)?);
                if let Kernel::Div(plan) = &op.kernel {
                    let t = &plan.reciprocal;
                    with_in!(va, |xa: A| with_in!(vb, |xb: B| with_out_buf!(
                        &mut buf,
                        n,
                        |o: O| elem::div(xa, xb, o, &out, &ta, &tb, t, r)
                    )));
                } else if small_max(&va).is_some() && small_max(&vb).is_some() && r.shift() <= 62 {
                    // 8/16-bit operands: |qa·qb·M| ≤ 2^61, exact in i64.
                    let (mm, sh) = (i64::from(r.multiplier()), r.shift());
                    let rnd = if sh == 0 { 0 } else { 1i64 << (sh - 1) };
                    with_in!(va, |xa: A| with_in!(vb, |xb: B| with_out_buf!(
                        &mut buf,
                        n,
                        |o: O| elem::binary(xa, xb, o, &out, &ta, &tb, |p, q| O::sat_i64(
                            (p * q * mm + rnd) >> sh
                        ))
                    )));
                } else {
                    with_in!(va, |xa: A| with_in!(vb, |xb: B| with_out_buf!(
                        &mut buf,
                        n,
                        |o: O| elem::binary(xa, xb, o, &out, &ta, &tb, |p, q| r
                            .apply_fast::<O>(p * q))
                    )));
                }
            }
            Kernel::Softmax { axis, plan, mask } => {
                let xshape = &st.infos[op.inputs[0].ok_or("missing input")?].1;
                let v = x0(0)?;
                let (scratch, scratch32) = (&mut tmp.acc64, &mut tmp.acc32);
                with_in!(v, |x: I| with_out_buf!(&mut buf, n, |o: O| {
                    softmax_into::<I, O>(x, xshape, *axis, plan, *mask, o, (scratch, scratch32))?
                }));
            }
            Kernel::LayerNorm { axis, plan } => {
                let xi = op
                    .inputs
                    .first()
                    .copied()
                    .flatten()
                    .ok_or("missing input")?;
                if st.is_channels_last(xi) || st.is_channels_last(yid) {
                    return Ok(false);
                }
                let xshape = &st.infos[xi].1;
                let Some(tail) = xshape.get(*axis..) else {
                    return Ok(false);
                };
                let len = numel(tail);
                let scratch = &mut tmp.acc64;
                let v = x0(0)?;
                let done = with_in!(v, |x: I| with_out_buf!(&mut buf, n, |o: O| {
                    super::layernorm::layer_norm_into::<I, O>(x, o, len, plan, scratch)
                }));
                if !done {
                    return Ok(false);
                }
            }
            Kernel::LeakyRelu { pos, neg } => {
                let v = x0(0)?;
                with_in!(v, |x: I| with_out_buf!(&mut buf, n, |o: O| {
                    elem::leaky_relu(x, o, pos, neg)
                }));
            }
            Kernel::Lut(table) => {
                let v = x0(0)?;
                with_in!(v, |x: I| with_out_buf!(&mut buf, n, |o: O| elem::lut(
                    x, o, table
                )));
            }
            Kernel::ReduceMean { axes, s_x, s_y, .. } => {
                let xshape = &st.infos[op.inputs[0].ok_or("missing input")?].1;
                let r = xshape.len();
                // Only trailing axes (contiguous rows).
                let mut ax: Vec<usize> = axes.clone();
                ax.sort_unstable();
                ax.dedup();
                if ax.is_empty() || ax.iter().enumerate().any(|(i, &a)| a != r - ax.len() + i) {
                    return Ok(false);
                }
                let len: usize = xshape[r - ax.len()..].iter().product();
                if len == 0 || len * n != numel(xshape) {
                    return Ok(false);
                }
                let rq = Requant::from_ratio(f64::from(*s_x) / (len as f64 * f64::from(*s_y)))
                    .map_err(|e| e.to_string())?;
                let v = x0(0)?;
                with_in!(v, |x: I| with_out_buf!(&mut buf, n, |o: O| elem::row_mean(
                    x, o, len, &rq
                )));
            }
            Kernel::Transpose(perm) => {
                let xshape = &st.infos[op.inputs[0].ok_or("missing input")?].1;
                if perm.len() != xshape.len() || numel(xshape) != n {
                    return Ok(false);
                }
                let v = x0(0)?;
                match (v, &mut buf) {
                    (V::I8(x), Buf::I8(o)) => {
                        elem::transpose(x, o.get_mut(..n).ok_or("slot")?, xshape, perm)
                    }
                    (V::I16(x), Buf::I16(o)) => {
                        elem::transpose(x, o.get_mut(..n).ok_or("slot")?, xshape, perm)
                    }
                    (V::I32(x), Buf::I32(o)) => {
                        elem::transpose(x, o.get_mut(..n).ok_or("slot")?, xshape, perm)
                    }
                    (V::F32(x), Buf::F32(o)) => {
                        elem::transpose(x, o.get_mut(..n).ok_or("slot")?, xshape, perm)
                    }
                    _ => return Ok(false),
                }
            }
            Kernel::MatMul { requant } => {
                let (ia, ib) = (
                    op.inputs[0].ok_or("missing")?,
                    op.inputs.get(1).copied().flatten().ok_or("missing")?,
                );
                let (sa, sb) = (&st.infos[ia].1, &st.infos[ib].1);
                if sa.len() < 2 || sb.len() < 2 {
                    return Ok(false);
                }
                let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
                let (kb, nn) = (sb[sb.len() - 2], sb[sb.len() - 1]);
                if k != kb || (requant.len() != 1 && requant.len() != nn) {
                    return Ok(false);
                }
                let Some(batch) = elem::bcast_shape(&sa[..sa.len() - 2], &sb[..sb.len() - 2])
                else {
                    return Ok(false);
                };
                let (Some(ta), Some(tb)) = (
                    elem::bcast_strides(&sa[..sa.len() - 2], &batch),
                    elem::bcast_strides(&sb[..sb.len() - 2], &batch),
                ) else {
                    return Ok(false);
                };
                if numel(&batch) * m * nn != n {
                    return Ok(false);
                }
                let bias: Option<&[i64]> = match op.inputs.get(2).copied().flatten() {
                    None => None,
                    Some(bi) => match st.consts.get(bi).and_then(|c| c.as_deref()) {
                        Some(hb_tensor::Tensor::I64(a)) => {
                            let s = a.as_slice().ok_or("bias layout")?;
                            if s.len() != nn {
                                return Ok(false);
                            }
                            Some(s)
                        }
                        _ => return Ok(false),
                    },
                };
                let (va, vb) = (x0(0)?, x0(1)?);
                if small_max(&va).is_none() || small_max(&vb).is_none() {
                    return Ok(false);
                }
                // i32 partial sums are exact when K · max|a| · max|b| < 2^31:
                // by the types or the producers' clamps when they allow it
                // (no scan), else by the operands' actual ranges.
                let static_max = |id: usize, v: &V<'_>| {
                    let t = small_max(v).unwrap_or(i64::MAX);
                    st.bound(id).map_or(t, |b| b.min(t)) as u128
                };
                let wide = if (k as u128) * static_max(ia, &va) * static_max(ib, &vb) < 1u128 << 31
                {
                    false
                } else {
                    let ma = with_in!(&va, |x: I| elem::max_abs(x));
                    let mb = with_in!(&vb, |x: I| elem::max_abs(x));
                    (k as u128) * (ma as u128) * (mb as u128) >= 1u128 << 31
                };
                let Tmp { acc32, acc64 } = tmp;
                with_in!(va, |xa: A| with_in!(vb, |xb: B| with_out_buf!(
                    &mut buf,
                    n,
                    |o: O| {
                        let (asz, bsz, ysz) = (m * k, k * nn, m * nn);
                        elem::for_rows2(&batch, &ta, &tb, |yo, ao, bo, len, ast, bst| {
                            for t in 0..len {
                                let (a0, b0, y0) =
                                    ((ao + t * ast) * asz, (bo + t * bst) * bsz, (yo + t) * ysz);
                                elem::matmul_block(
                                    &xa[a0..a0 + asz],
                                    &xb[b0..b0 + bsz],
                                    &mut o[y0..y0 + ysz],
                                    (m, k, nn),
                                    bias,
                                    requant,
                                    wide,
                                    acc32,
                                    acc64,
                                );
                            }
                        });
                    }
                )));
            }
            _ => return Ok(false),
        }
        if !posts.is_empty() {
            with_out_buf!(&mut buf, n, |o: O| post_in_place::<O>(op, posts, o, st)?);
        }
        Ok(true)
    })();
    st.restore(s, buf);
    res
}

/// `y[i] = x[idx[i]]`; an index outside `x` is an error.
/// [`take_runs_into`] when `runs`, else [`take_into`].
fn take_any<T: Copy>(x: &[T], idx: &[i64], runs: bool, y: &mut [T]) -> R<()> {
    if runs {
        take_runs_into(x, idx, y)
    } else {
        take_into(x, idx, y)
    }
}

/// `y` = the concatenation of `x[start..start + len]` over the
/// `(start, len)` pairs of `runs`, which cover `y` exactly.
fn take_runs_into<T: Copy>(x: &[T], runs: &[i64], y: &mut [T]) -> R<()> {
    let mut at = 0;
    for r in runs.chunks_exact(2) {
        let (Ok(start), Ok(len)) = (usize::try_from(r[0]), usize::try_from(r[1])) else {
            return Err("take run is negative".into());
        };
        let src = x.get(start..start + len).ok_or("take run out of range")?;
        y.get_mut(at..at + len)
            .ok_or("take runs overrun the output")?
            .copy_from_slice(src);
        at += len;
    }
    Ok(())
}

fn take_into<T: Copy>(x: &[T], idx: &[i64], y: &mut [T]) -> R<()> {
    for (d, &i) in y.iter_mut().zip(idx) {
        *d = *usize::try_from(i)
            .ok()
            .and_then(|i| x.get(i))
            .ok_or("take index out of range")?;
    }
    Ok(())
}

/// Nearest Resize: output position `o` reads `x` at the per-axis sources
/// `src[d][o_d]` (see [`crate::reference::resize::nearest_sources`]),
/// requantised by `r`; rows along the last axis.
fn resize_nearest<I: QInt, O: QInt>(
    x: &[I],
    y: &mut [O],
    xs: &[usize],
    ys: &[usize],
    src: &[Vec<usize>],
    r: &Requant,
) {
    let rank = ys.len();
    if rank == 0 {
        if let (Some(d), Some(&q)) = (y.first_mut(), x.first()) {
            *d = r.apply_fast::<O>(q.to_i64());
        }
        return;
    }
    let mut st = vec![1usize; rank];
    for d in (0..rank - 1).rev() {
        st[d] = st[d + 1] * xs[d + 1];
    }
    let w = ys[rank - 1];
    let last = &src[rank - 1];
    let ident = r.is_identity();
    let mut idx = vec![0usize; rank - 1];
    for row in y.chunks_exact_mut(w.max(1)) {
        let base: usize = (0..rank - 1).map(|d| src[d][idx[d]] * st[d]).sum();
        for (d, &j) in row.iter_mut().zip(last) {
            let q = x[base + j].to_i64();
            *d = if ident {
                O::sat_i64(q)
            } else {
                r.apply_fast::<O>(q)
            };
        }
        for d in (0..rank - 1).rev() {
            idx[d] += 1;
            if idx[d] < ys[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Resize over the last two axes (every plane `h × w`): output `(i, j)`
/// is `R(Σ x[ih, iw] · wh · ww)` over the row taps `th[i]` and column taps
/// `tw[j]` (see [`crate::reference::resize::plane_taps`]); the sums are
/// exact in i64 (`|x| < 2^31`, weights of one output summing to at most
/// `2^32`).
fn resize_planes<I: QInt, O: QInt>(
    x: &[I],
    y: &mut [O],
    (h, w): (usize, usize),
    th: &[Vec<(usize, i64)>],
    tw: &[Vec<(usize, i64)>],
    r: &Requant,
    blend: &mut Vec<i64>,
) {
    let plane_out = th.len() * tw.len();
    if plane_out == 0 || h * w == 0 {
        return;
    }
    blend.clear();
    blend.resize(w, 0);
    for (xp, yp) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(plane_out)) {
        for (yr, rt) in yp.chunks_exact_mut(tw.len()).zip(th) {
            // The output row's input rows blended once (the same integer
            // sum, regrouped): Σ_h x[ih, ·] · wh.
            blend.fill(0);
            for &(ih, wh) in rt {
                blend_row(blend, &xp[ih * w..(ih + 1) * w], wh);
            }
            for (d, ct) in yr.iter_mut().zip(tw) {
                let acc: i64 = ct.iter().map(|&(iw, ww)| blend[iw] * ww).sum();
                *d = r.apply_fast::<O>(acc);
            }
        }
    }
}

elem::simd_copies! {
    /// `acc += x · w` along one input row.
    fn blend_row<I>(acc: &mut [i64], x: &[I], w: i64) => blend_row_body
}

#[inline(always)]
fn blend_row_body<I: QInt>(acc: &mut [i64], x: &[I], w: i64) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v.to_i64() * w;
    }
}

/// Valid input positions of each output position along one axis:
/// `(flat list, per output (start, count))`.
fn taps_1d(n_out: usize, n_in: usize, k: usize, s: usize, d: usize, pad: usize) -> TapList {
    let mut flat = Vec::with_capacity(n_out * k);
    let mut ranges = Vec::with_capacity(n_out);
    for o in 0..n_out {
        let start = flat.len();
        let p0 = (o * s) as i64 - pad as i64;
        for a in 0..k {
            let p = p0 + (a * d) as i64;
            if p >= 0 && p < n_in as i64 {
                flat.push(p as usize);
            }
        }
        ranges.push((start, flat.len() - start));
    }
    (flat, ranges)
}

type TapList = (Vec<usize>, Vec<(usize, usize)>);

/// The row and column windows of a 2-D pool from `(h, w)` to `(oh, ow)`.
fn windows_2d(
    p: &crate::reference::pool::PoolParams,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> (TapList, TapList) {
    (
        taps_1d(oh, h, p.kernel[0], p.strides[0], p.dilations[0], p.pads[0]),
        taps_1d(ow, w, p.kernel[1], p.strides[1], p.dilations[1], p.pads[1]),
    )
}

/// Whether the 2-D MaxPool fast paths take these parameters (every pad
/// shorter than the window).
pub(super) fn max_pool_2d_fits(p: &crate::reference::pool::PoolParams) -> bool {
    p.kernel.len() == 2 && (0..2).all(|i| p.pads[i] < p.kernel[i] && p.pads[2 + i] < p.kernel[i])
}

elem::simd_copies! {
    /// [`max_pool_2d`] on channels-last storage (`[N, H, W, C]` for the
    /// logical `[N, C, H, W]` shapes `xs`, `ys`): the same windows, a
    /// maximum per channel vectorised across channels.
    fn max_pool_2d_cl<I, O>(
        x: &[I],
        y: &mut [O],
        xs: &[usize],
        ys: &[usize],
        p: &crate::reference::pool::PoolParams,
        r: &Requant,
    ) => max_pool_2d_cl_body
}

/// The body of [`max_pool_2d_cl`].
#[inline(always)]
fn max_pool_2d_cl_body<I: QInt, O: QInt>(
    x: &[I],
    y: &mut [O],
    xs: &[usize],
    ys: &[usize],
    p: &crate::reference::pool::PoolParams,
    r: &Requant,
) {
    // Channel runs of a fixed width, so the maxima stay in registers.
    match xs[1] {
        c if c % 32 == 0 => max_pool_2d_cl_runs::<I, O, 32>(x, y, xs, ys, p, r),
        c if c % 16 == 0 => max_pool_2d_cl_runs::<I, O, 16>(x, y, xs, ys, p, r),
        c if c % 8 == 0 => max_pool_2d_cl_runs::<I, O, 8>(x, y, xs, ys, p, r),
        _ => max_pool_2d_cl_runs::<I, O, 1>(x, y, xs, ys, p, r),
    }
}

/// [`max_pool_2d_cl`] with the channels taken `CH` at a time (`CH`
/// divides the channel count).
#[inline(always)]
fn max_pool_2d_cl_runs<I: QInt, O: QInt, const CH: usize>(
    x: &[I],
    y: &mut [O],
    xs: &[usize],
    ys: &[usize],
    p: &crate::reference::pool::PoolParams,
    r: &Requant,
) {
    let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let (oh, ow) = (ys[2], ys[3]);
    let ((rf, rr), (cf, cr)) = windows_2d(p, (h, w), (oh, ow));
    let ident = r.is_identity();
    let imin = I::sat_i64(I::MIN);
    let mut offs: Vec<usize> = Vec::new();
    for b in 0..n {
        let xi = &x[b * h * w * c..(b + 1) * h * w * c];
        let yi = &mut y[b * oh * ow * c..(b + 1) * oh * ow * c];
        for (i, &(r0, rn)) in rr.iter().enumerate() {
            for (j, &(c0, cn)) in cr.iter().enumerate() {
                // The window's input positions, as element offsets.
                offs.clear();
                for &hh in &rf[r0..r0 + rn] {
                    offs.extend(cf[c0..c0 + cn].iter().map(|&ww| (hh * w + ww) * c));
                }
                let yo = &mut yi[(i * ow + j) * c..(i * ow + j + 1) * c];
                for (ch0, yc) in (0..c).step_by(CH).zip(yo.chunks_exact_mut(CH)) {
                    let mut acc = [imin; CH];
                    for &o in &offs {
                        let src: &[I; CH] = match xi[o + ch0..o + ch0 + CH].try_into() {
                            Ok(s) => s,
                            Err(_) => continue,
                        };
                        for (a, &v) in acc.iter_mut().zip(src) {
                            *a = (*a).max(v);
                        }
                    }
                    for (d, &a) in yc.iter_mut().zip(&acc) {
                        *d = if ident {
                            O::sat_i64(a.to_i64())
                        } else {
                            r.apply_fast::<O>(a.to_i64())
                        };
                    }
                }
            }
        }
    }
}

/// 2-D MaxPool on NCHW, windows exactly as the reference (positions outside
/// the input ignored, an empty window is `I::MIN`), then `R(s_x/s_y)`.
fn max_pool_2d<I: QInt, O: QInt>(
    x: &[I],
    y: &mut [O],
    xs: &[usize],
    ys: &[usize],
    p: &crate::reference::pool::PoolParams,
    r: &Requant,
) {
    let (h, w) = (xs[2], xs[3]);
    let (oh, ow) = (ys[2], ys[3]);
    let planes = xs[0] * xs[1];
    let ((rf, rr), (cf, cr)) = windows_2d(p, (h, w), (oh, ow));
    let ident = r.is_identity();
    for c in 0..planes {
        let xp = &x[c * h * w..(c + 1) * h * w];
        let yp = &mut y[c * oh * ow..(c + 1) * oh * ow];
        for (i, &(r0, rn)) in rr.iter().enumerate() {
            let rows = &rf[r0..r0 + rn];
            for (j, &(c0, cn)) in cr.iter().enumerate() {
                let cols = &cf[c0..c0 + cn];
                let mut m = i64::MIN;
                for &hh in rows {
                    let row = &xp[hh * w..(hh + 1) * w];
                    for &ww in cols {
                        m = m.max(row[ww].to_i64());
                    }
                }
                if m == i64::MIN {
                    m = I::MIN;
                }
                yp[i * ow + j] = if ident {
                    O::sat_i64(m)
                } else {
                    r.apply_fast::<O>(m)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The engine's element-wise kernels against the reference kernels,
    //! bit for bit, on random broadcast shapes and extreme values.
    use super::*;
    use crate::fixed_point::Rescale2;
    use crate::lut::{Lut, LutFn};
    use crate::reference::activation::{div, DivPlan};
    use crate::reference::eltwise::{add, mul};
    use crate::reference::matmul::matmul;
    use crate::reference::pool::{max_pool, reduce_mean, PoolParams};
    use crate::reference::quant::quantize;
    use crate::reference::quant::MASK_LIMIT;
    use crate::tensor::QTensor;
    use proptest::prelude::*;

    /// A fused Add's in-place rescale (vector blocks and scalar tail)
    /// against `Rescale2::apply` and the clamp, element by element: both
    /// operand orders, 8/16-bit types, extreme values, narrow clamps.
    #[test]
    fn fused_add_in_place_matches_the_exact_rescale() {
        fn case<O: QInt, B: QInt>(next: &mut impl FnMut() -> u64, k: usize) {
            let n = 1 + (next() % 70) as usize;
            let pick = |v: u64, t_min: i64, t_max: i64| match v % 4 {
                0 => t_min,
                1 => t_max,
                _ => t_min + (v >> 2) as i64 % (t_max - t_min + 1),
            };
            let y0: Vec<O> = (0..n)
                .map(|_| O::sat_i64(pick(next(), O::MIN, O::MAX)))
                .collect();
            let b: Vec<B> = (0..n)
                .map(|_| B::sat_i64(pick(next(), B::MIN, B::MAX)))
                .collect();
            let sa = 1e-3 * (1 + next() % 1000) as f64;
            let sb = if k.is_multiple_of(3) {
                -sa * 0.7
            } else {
                1e-3 * (1 + next() % 1000) as f64
            };
            let r = Rescale2::from_ratios(sa, sb).unwrap();
            let (lo, hi) = if k.is_multiple_of(2) {
                (O::MIN, O::MAX)
            } else {
                (0, O::MAX / 3)
            };
            let main_is_b = k % 4 < 2;
            let mut got = y0.clone();
            add_in_place(&mut got, &b, main_is_b, &r, lo, hi);
            for (j, (&g, (&v, &w))) in got.iter().zip(y0.iter().zip(&b)).enumerate() {
                let (qa, qb) = if main_is_b {
                    (w.to_i64(), v.to_i64())
                } else {
                    (v.to_i64(), w.to_i64())
                };
                let want = O::sat_i64(r.apply::<O>(qa, qb).to_i64().clamp(lo, hi));
                assert_eq!(g, want, "case {k} element {j}: {r:?}");
            }
        }
        let mut next = crate::engine::xorshift(0x6a09_e667_f3bc_c908u64);
        for k in 0..400 {
            case::<i8, i8>(&mut next, k);
            case::<i16, i8>(&mut next, k);
            case::<i8, i16>(&mut next, k);
            case::<i16, i16>(&mut next, k);
        }
    }

    /// Values of `T` from raw seeds: mode 0 random, 1 extremes, 2 small.
    fn vals<T: QInt>(seed: &[i64], mode: u8) -> Vec<T> {
        seed.iter()
            .map(|&s| {
                T::sat_i64(match mode {
                    0 => T::MIN + s.rem_euclid(T::MAX - T::MIN + 1),
                    1 => {
                        if s & 1 == 0 {
                            T::MIN
                        } else {
                            T::MAX
                        }
                    }
                    _ => s.rem_euclid(7) - 3,
                })
            })
            .collect()
    }

    /// `n` pseudo-random i64 from `seed` (splitmix64).
    fn gen(seed: u64, n: usize) -> Vec<i64> {
        let mut z = seed;
        (0..n)
            .map(|_| {
                z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut v = z;
                v = (v ^ (v >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                v = (v ^ (v >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (v ^ (v >> 31)) as i64
            })
            .collect()
    }

    /// An output shape and two operand shapes broadcasting to it.
    fn bshapes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Vec<usize>)> {
        (
            prop::collection::vec(1usize..5, 0..5),
            any::<u32>(),
            any::<u32>(),
            0usize..3,
            0usize..3,
        )
            .prop_map(|(out, ma, mb, da, db)| {
                let cut = |m: u32, d: usize| -> Vec<usize> {
                    let d = d.min(out.len());
                    out[d..]
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| if m >> (i % 32) & 1 == 1 { 1 } else { v })
                        .collect()
                };
                (out.clone(), cut(ma, da), cut(mb, db))
            })
    }

    fn ratio() -> impl Strategy<Value = f64> {
        prop_oneof![
            (1e-6f64..4.0),
            (-4.0f64..-1e-6),
            (1e-30f64..1e-20),
            (1e5f64..1e8)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn binary_ops_match_reference(
            (_, sa, sb) in bshapes(),
            seed in any::<u64>(),
            ra in ratio(), rb in ratio(), mode in 0u8..3, t in 0u8..3,
        ) {
            let na: usize = sa.iter().product();
            let nb: usize = sb.iter().product();
            let out = elem::bcast_shape(&sa, &sb).unwrap();
            let n: usize = out.iter().product();
            let seed = gen(seed, na + nb);
            let a: Vec<i16> = vals(&seed[..na], mode);
            let b: Vec<i8> = vals(&seed[na..na + nb], mode);
            let (at, bt) = (TensorRef::new(&a, &sa).unwrap(), TensorRef::new(&b, &sb).unwrap());
            let (ta, tb) = (elem::bcast_strides(&sa, &out).unwrap(), elem::bcast_strides(&sb, &out).unwrap());
            let mut y = vec![0i16; n];
            match t {
                0 => {
                    let r = Rescale2::from_ratios(ra, rb).unwrap();
                    let want: QTensor<i16> = add(at, bt, &r).unwrap();
                    elem::binary(&a, &b, &mut y, &out, &ta, &tb, |p, q| r.apply_fast::<i16>(p, q));
                    prop_assert_eq!(y, want.data);
                }
                1 => {
                    let r = Requant::from_ratio(ra.abs() * 1e-3).unwrap();
                    let want: QTensor<i16> = mul(at, bt, &r).unwrap();
                    elem::binary(&a, &b, &mut y, &out, &ta, &tb, |p, q| r.apply_fast::<i16>(p * q));
                    prop_assert_eq!(y, want.data);
                }
                _ => {
                    let plan = DivPlan::new::<i8>(0.02, 0.05, (ra.abs() as f32).max(1e-4)).unwrap();
                    let want: QTensor<i16> = div(at, bt, &plan).unwrap();
                    elem::div(&a, &b, &mut y, &out, &ta, &tb, &plan.reciprocal, &plan.requant);
                    prop_assert_eq!(y, want.data);
                }
            }
        }

        #[test]
        fn activation_matmul_matches_reference(
            batch in prop::collection::vec(1usize..3, 0..3),
            bmask in any::<u8>(),
            (m, k, n) in (1usize..11, 1usize..70, 1usize..150),
            seed in any::<u64>(),
            mode in 0u8..3, ratio in ratio(), per_col in any::<bool>(),
            with_bias in any::<bool>(), wide_types in any::<bool>(),
        ) {
            let mut sa = batch.clone();
            sa.extend([m, k]);
            let mut sb: Vec<usize> = batch
                .iter()
                .enumerate()
                .map(|(i, &d)| if bmask >> i & 1 == 1 { 1 } else { d })
                .collect();
            sb.extend([k, n]);
            let na: usize = sa.iter().product();
            let nb: usize = sb.iter().product();
            let seed = gen(seed, na + nb);
            let rq: Vec<Requant> = (0..if per_col { n } else { 1 })
                .map(|j| Requant::from_ratio(ratio * (1.0 + j as f64 * 0.1) * 1e-3).unwrap())
                .collect();
            let bias: Option<Vec<i64>> = with_bias.then(|| (0..n as i64).map(|j| j * 1_000_003 - 7).collect());
            macro_rules! go {
                ($A:ty, $B:ty) => {{
                    let a: Vec<$A> = vals(&seed[..na], mode);
                    let b: Vec<$B> = vals(&seed[na..na + nb], mode);
                    let want: QTensor<i16> = matmul(
                        TensorRef::new(&a, &sa).unwrap(),
                        TensorRef::new(&b, &sb).unwrap(),
                        bias.as_deref(),
                        &rq,
                    )
                    .unwrap();
                    let bsh = elem::bcast_shape(&sa[..sa.len() - 2], &sb[..sb.len() - 2]).unwrap();
                    let ta = elem::bcast_strides(&sa[..sa.len() - 2], &bsh).unwrap();
                    let tb = elem::bcast_strides(&sb[..sb.len() - 2], &bsh).unwrap();
                    let ma = elem::max_abs(&a) as u128;
                    let mb = elem::max_abs(&b) as u128;
                    let wide = k as u128 * ma * mb >= 1 << 31;
                    let mut y = vec![0i16; want.data.len()];
                    let (mut c32, mut c64) = (Vec::new(), Vec::new());
                    let (asz, bsz, ysz) = (m * k, k * n, m * n);
                    elem::for_rows2(&bsh, &ta, &tb, |yo, ao, bo, len, ast, bst| {
                        for t in 0..len {
                            let (a0, b0, y0) = ((ao + t * ast) * asz, (bo + t * bst) * bsz, (yo + t) * ysz);
                            elem::matmul_block(&a[a0..a0 + asz], &b[b0..b0 + bsz], &mut y[y0..y0 + ysz],
                                (m, k, n), bias.as_deref(), &rq, wide, &mut c32, &mut c64);
                        }
                    });
                    prop_assert_eq!(&y, &want.data);
                    // And into int8 (its own narrowing store).
                    let want8: QTensor<i8> = matmul(
                        TensorRef::new(&a, &sa).unwrap(),
                        TensorRef::new(&b, &sb).unwrap(),
                        bias.as_deref(),
                        &rq,
                    )
                    .unwrap();
                    let mut y8 = vec![0i8; want8.data.len()];
                    elem::for_rows2(&bsh, &ta, &tb, |yo, ao, bo, len, ast, bst| {
                        for t in 0..len {
                            let (a0, b0, y0) = ((ao + t * ast) * asz, (bo + t * bst) * bsz, (yo + t) * ysz);
                            elem::matmul_block(&a[a0..a0 + asz], &b[b0..b0 + bsz], &mut y8[y0..y0 + ysz],
                                (m, k, n), bias.as_deref(), &rq, wide, &mut c32, &mut c64);
                        }
                    });
                    prop_assert_eq!(&y8, &want8.data);
                    // The portable loops (the dispatch above may take a
                    // SIMD path) compute the same.
                    let mut y2 = vec![0i16; want.data.len()];
                    elem::for_rows2(&bsh, &ta, &tb, |yo, ao, bo, len, ast, bst| {
                        for t in 0..len {
                            let (a0, b0, y0) = ((ao + t * ast) * asz, (bo + t * bst) * bsz, (yo + t) * ysz);
                            elem::matmul_block_body(&a[a0..a0 + asz], &b[b0..b0 + bsz], &mut y2[y0..y0 + ysz],
                                (m, k, n), bias.as_deref(), &rq, wide, &mut c32, &mut c64);
                        }
                    });
                    prop_assert_eq!(y2, want.data);
                }};
            }
            if wide_types { go!(i16, i16) } else { go!(i8, i16) }
        }

        #[test]
        fn nearest_resize_matches_reference(
            seed in prop::collection::vec(any::<i64>(), 1..4),
            dims in prop::collection::vec((1usize..6, 1usize..12), 1..5),
            coord in 0usize..6, nearest in 0usize..4, ratio in ratio(), ident in any::<bool>(),
        ) {
            use crate::reference::resize::{resize, nearest_sources, CoordMode, NearestMode, ResizeMode, ResizeParams};
            let xs: Vec<usize> = dims.iter().map(|d| d.0).collect();
            let out_shape: Vec<usize> = dims.iter().map(|d| d.1).collect();
            let n: usize = xs.iter().product();
            let x: Vec<i16> = vals(&gen(seed[0] as u64, n), (seed.len() % 3) as u8);
            let p = ResizeParams {
                mode: ResizeMode::Nearest,
                coord: [CoordMode::HalfPixel, CoordMode::HalfPixelSymmetric, CoordMode::PytorchHalfPixel,
                        CoordMode::AlignCorners, CoordMode::Asymmetric, CoordMode::TfHalfPixelForNn][coord],
                nearest: [NearestMode::RoundPreferFloor, NearestMode::RoundPreferCeil,
                          NearestMode::Floor, NearestMode::Ceil][nearest],
                scales: xs.iter().zip(&out_shape).map(|(&i, &o)| o as f64 / i as f64).collect(),
                out_shape: out_shape.clone(),
            };
            let (s_x, s_y) = if ident { (0.5f32, 0.5f32) } else { (ratio as f32 * 0.01, 0.01f32) };
            let want: QTensor<i8> = resize(TensorRef::new(&x, &xs).unwrap(), &p, s_x, s_y).unwrap();
            let (src, r) = nearest_sources(&xs, &p, s_x, s_y).unwrap().unwrap();
            let mut y = vec![0i8; want.data.len()];
            resize_nearest(&x, &mut y, &xs, &out_shape, &src, &r);
            prop_assert_eq!(&y, &want.data);
            // Linear over the last two axes (leading axes kept).
            if xs.len() >= 2 {
                let r = xs.len();
                let mut lin = p.clone();
                lin.mode = ResizeMode::Linear;
                for d in 0..r - 2 {
                    lin.out_shape[d] = xs[d];
                    lin.scales[d] = 1.0;
                }
                let want: QTensor<i8> = resize(TensorRef::new(&x, &xs).unwrap(), &lin, s_x, s_y).unwrap();
                let (th, tw, rq) = crate::reference::resize::plane_taps(&xs, &lin, s_x, s_y).unwrap().unwrap();
                let mut y = vec![0i8; want.data.len()];
                resize_planes(&x, &mut y, (xs[r - 2], xs[r - 1]), &th, &tw, &rq, &mut Vec::new());
                prop_assert_eq!(&y, &want.data);
            }
            // Take: a reversed gather, and an index past the end refused.
            let idx: Vec<i64> = (0..n as i64).rev().collect();
            let mut t = vec![0i16; n];
            take_into(&x, &idx, &mut t).unwrap();
            prop_assert!(t.iter().rev().eq(x.iter()));
            prop_assert!(take_into(&x, &[n as i64], &mut t[..1]).is_err());
        }

        #[test]
        fn leaky_relu_matches_reference(
            seed in prop::collection::vec(any::<i64>(), 1..200),
            mode in 0u8..3, ratio in ratio(), slope in -3.0f64..3.0,
        ) {
            let x: Vec<i16> = vals(&seed, mode);
            let pos = Requant::from_ratio(ratio).unwrap();
            let neg = Requant::from_ratio(ratio * slope).unwrap();
            let want: QTensor<i8> = crate::reference::activation::leaky_relu(
                TensorRef::new(&x, &[x.len()]).unwrap(), &pos, &neg);
            let mut y = vec![0i8; x.len()];
            elem::leaky_relu(&x, &mut y, &pos, &neg);
            prop_assert_eq!(y, want.data);
        }

        #[test]
        fn rescale_matches_reference(
            seed in prop::collection::vec(any::<i64>(), 1..300),
            mode in 0u8..3, ratio in ratio(), lo in -40000i64..100, span in 0i64..70000,
            clamp in any::<bool>(), ident in any::<bool>(),
        ) {
            let x: Vec<i32> = vals(&seed, mode);
            let r = if ident { Requant::IDENTITY } else { Requant::from_ratio(ratio).unwrap() };
            let c = clamp.then_some((lo, lo + span));
            let shape = [x.len()];
            let want: QTensor<i16> =
                crate::program::refexec::rescale(TensorRef::new(&x, &shape).unwrap(), &[r], 0, c).unwrap();
            let mut y = vec![0i16; x.len()];
            rescale_into(&x, &mut y, &shape, &[r], 0, c).unwrap();
            prop_assert_eq!(&y, &want.data);
            let mut z: Vec<i16> = vals(&seed, mode);
            let want2: QTensor<i16> =
                crate::program::refexec::rescale(TensorRef::new(&z, &shape).unwrap(), &[r], 0, c).unwrap();
            rescale_in_place(&mut z, &shape, &[r], 0, c).unwrap();
            prop_assert_eq!(z, want2.data);
            // Per channel along the last axis and along the first.
            let ch = 1 + x.len() % 5;
            let rows = x.len() / ch;
            let rs: Vec<Requant> = (0..ch)
                .map(|k| if ident && k == 0 { Requant::IDENTITY } else {
                    Requant::from_ratio(ratio * (1.0 + k as f64)).unwrap_or(Requant::IDENTITY)
                })
                .collect();
            for (sh, axis) in [([rows, ch], 1usize), ([ch, rows], 0)] {
                let n = rows * ch;
                let want: QTensor<i8> = crate::program::refexec::rescale(
                    TensorRef::new(&x[..n], &sh).unwrap(), &rs, axis, c).unwrap();
                let mut y = vec![0i8; n];
                rescale_into(&x[..n], &mut y, &sh, &rs, axis, c).unwrap();
                prop_assert_eq!(&y, &want.data);
                let mut z: Vec<i16> = vals(&seed[..n], mode);
                let want: QTensor<i16> = crate::program::refexec::rescale(
                    TensorRef::new(&z, &sh).unwrap(), &rs, axis, c).unwrap();
                rescale_in_place(&mut z, &sh, &rs, axis, c).unwrap();
                prop_assert_eq!(z, want.data);
            }
        }

        #[test]
        fn quantize_matches_reference(
            xs in prop::collection::vec(prop_oneof![
                any::<f32>(),
                -300.0f32..300.0,
                (-600i32..600).prop_map(|v| v as f32 * 0.5),
                Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY), Just(-1e9f32),
                Just(8_388_607.5f32), Just(-4_194_304.5f32),
            ], 1..200),
            scale in prop_oneof![1e-3f32..10.0, Just(1.0f32)],
            lo in -300i64..1, hi in 0i64..300, masks in any::<bool>(),
            limit in prop_oneof![Just(MASK_LIMIT), Just(-1e3f32), -600.0f32..-1.0],
        ) {
            let mut p = QuantParams::with_range(scale, lo, hi).unwrap();
            p.keep_masks = masks;
            p.mask_limit = limit;
            let want: Vec<i16> = quantize(&xs, &p).unwrap();
            let mut y = vec![0i16; xs.len()];
            quantize_slice(&p, &xs, &mut y);
            prop_assert_eq!(y, want);
            // int8 (blocks of 64 on AVX-512).
            let mut p8 = QuantParams::with_range(scale, lo.max(-128), hi.min(127)).unwrap();
            p8.keep_masks = masks;
            p8.mask_limit = limit;
            let want: Vec<i8> = quantize(&xs, &p8).unwrap();
            let mut y = vec![0i8; xs.len()];
            quantize_slice(&p8, &xs, &mut y);
            prop_assert_eq!(y, want);
        }

        #[test]
        fn lut_matches_the_table(
            seed in prop::collection::vec(any::<i64>(), 1..300),
            mode in 0u8..3, si in 1e-3f32..0.2, so in 1e-3f32..0.2, f in 0u8..3,
        ) {
            let func = [LutFn::Sigmoid, LutFn::Tanh, LutFn::Erf][f as usize];
            // int8 → int8 (direct table), int16 → int16 (segmented).
            let t8 = Lut::for_fn::<i8, i8>(func, si, so).unwrap();
            let x8: Vec<i8> = vals(&seed, mode);
            let mut y8 = vec![0i8; x8.len()];
            elem::lut(&x8, &mut y8, &t8);
            prop_assert_eq!(y8, t8.apply::<i8, i8>(&x8));
            let t16 = Lut::for_fn::<i16, i16>(func, si / 256.0, so / 256.0).unwrap();
            let x16: Vec<i16> = vals(&seed, mode);
            let mut y16 = vec![0i16; x16.len()];
            elem::lut(&x16, &mut y16, &t16);
            prop_assert_eq!(y16, t16.apply::<i16, i16>(&x16));
        }

        #[test]
        fn pool_reduce_transpose_match_reference(
            // Channel counts for each channel-run width of the
            // channels-last path (1, 8, 16, 32).
            (c, h, w) in (prop::sample::select(vec![1usize, 2, 3, 8, 16, 24, 32]), 1usize..9, 1usize..9),
            (k0, k1, s0, s1, p0, p1) in (1usize..4, 1usize..4, 1usize..3, 1usize..3, 0usize..3, 0usize..3),
            seed in prop::collection::vec(any::<i64>(), 32 * 8 * 8),
            mode in 0u8..3, ratio in ratio(), ident in any::<bool>(),
            perm_seed in any::<u64>(),
        ) {
            let xs = [1, c, h, w];
            let x: Vec<i16> = vals(&seed[..c * h * w], mode);
            let xt = TensorRef::new(&x, &xs).unwrap();
            let (p0, p1) = (p0.min(k0 - 1), p1.min(k1 - 1));
            let mut p = PoolParams::new(&[k0, k1]);
            p.strides = vec![s0, s1];
            p.pads = vec![p0, p1, p0, p1];
            let r = if ident { Requant::IDENTITY } else { Requant::from_ratio(ratio.abs()).unwrap() };
            if let Ok(want) = max_pool::<i16, i8>(xt, &p, &r) {
                let mut y = vec![0i8; want.data.len()];
                max_pool_2d(&x, &mut y, &xs, &want.shape, &p, &r);
                prop_assert_eq!(&y, &want.data);
                // Channels-last storage: the same values, transposed.
                let (oh, ow) = (want.shape[2], want.shape[3]);
                let x_cl: Vec<i16> = (0..h * w * c).map(|i| x[(i % c) * h * w + i / c]).collect();
                let mut y_cl = vec![0i8; y.len()];
                max_pool_2d_cl(&x_cl, &mut y_cl, &xs, &want.shape, &p, &r);
                let back: Vec<i8> = (0..y.len()).map(|i| y_cl[(i % (oh * ow)) * c + i / (oh * ow)]).collect();
                prop_assert_eq!(back, want.data);
            }
            // ReduceMean over the trailing axes.
            let want: QTensor<i8> = reduce_mean(xt, &[2, 3], true, 0.5, 0.07).unwrap();
            let rq = Requant::from_ratio(f64::from(0.5f32) / ((h * w) as f64 * f64::from(0.07f32))).unwrap();
            let mut y = vec![0i8; c];
            elem::row_mean(&x, &mut y, h * w, &rq);
            prop_assert_eq!(y, want.data);
            // Transpose by a random permutation.
            let mut perm = vec![0usize, 1, 2, 3];
            let mut s = perm_seed;
            for i in (1..4).rev() {
                perm.swap(i, (s % (i as u64 + 1)) as usize);
                s /= 7;
            }
            let t = hb_tensor::Tensor::I16(
                ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&xs), x.clone()).unwrap(),
            );
            let want = crate::program::refexec::transpose(&t, &perm).unwrap();
            let mut y = vec![0i16; x.len()];
            elem::transpose(&x, &mut y, &xs, &perm);
            let hb_tensor::Tensor::I16(wa) = want else { panic!("type") };
            prop_assert_eq!(y, wa.as_slice().unwrap().to_vec());
        }
    }
}
