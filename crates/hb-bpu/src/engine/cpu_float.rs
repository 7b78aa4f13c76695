//! Fast paths for the float CPU ops of a program's float islands, such as
//! an attention block's `scores / √d` and `Where(mask, scores, −inf)` that
//! stay in float so the mask survives: element-wise Add, Sub, Mul and Div of
//! f32 tensors and a Where whose one branch is a single value. They compute
//! straight into the output slot, with the same IEEE operations as the
//! float interpreter's kernels (one correctly rounded operation per
//! element, so results are bit-identical), instead of copying the operands
//! into host tensors and the result back.

use super::elem::{bcast_strides, has_avx2, has_avx512, simd_copies, Rows2};
use super::store::{Buf, Store, V};
use crate::program::prepared::PreparedOp;
use hb_tensor::{DType, Tensor};

/// Runs `op` on its fast path when it has one; `Ok(false)` leaves it to the
/// float interpreter.
pub(super) fn try_run(op: &PreparedOp, st: &mut Store<'_>) -> Result<bool, String> {
    if op.outputs.len() != 1 || !op.post.is_empty() {
        return Ok(false);
    }
    let yid = op.outputs[0];
    let (dt, yshape) = &st.infos[yid];
    if *dt != DType::F32 {
        return Ok(false);
    }
    match op.op_type.as_str() {
        "Add" => run_arith(op, st, yid, yshape, |a, b| a + b),
        "Sub" => run_arith(op, st, yid, yshape, |a, b| a - b),
        "Mul" => run_arith(op, st, yid, yshape, |a, b| a * b),
        "Div" => run_arith(op, st, yid, yshape, |a, b| a / b),
        "Where" => run_where(op, st, yid, yshape),
        _ => Ok(false),
    }
}

/// A broadcasting binary op `f` of two f32 inputs.
fn run_arith(
    op: &PreparedOp,
    st: &mut Store<'_>,
    yid: usize,
    yshape: &[usize],
    f: impl Fn(f32, f32) -> f32,
) -> Result<bool, String> {
    // No allocation per run: exactly two present inputs.
    let &[Some(ia), Some(ib)] = op.inputs.as_slice() else {
        return Ok(false);
    };
    let (Some(sa), Some(sb)) = (
        bcast_strides(&st.infos[ia].1, yshape),
        bcast_strides(&st.infos[ib].1, yshape),
    ) else {
        return Ok(false);
    };
    with_output(st, yid, |st, y| {
        let (V::F32(a), V::F32(b)) = (st.get(ia)?, st.get(ib)?) else {
            return Ok(false);
        };
        f32_binary(a, b, y, yshape, &sa, &sb, f);
        Ok(true)
    })
}

/// `Where(cond, x, y)` with `x` or `y` a single value (a mask's fill).
fn run_where(
    op: &PreparedOp,
    st: &mut Store<'_>,
    yid: usize,
    yshape: &[usize],
) -> Result<bool, String> {
    let (Some(Some(ic)), Some(Some(ix)), Some(Some(iy))) =
        (op.inputs.first(), op.inputs.get(1), op.inputs.get(2))
    else {
        return Ok(false);
    };
    let one = |i: usize| st.infos[i].1.iter().product::<usize>() == 1;
    // The full operand, whether it is the "true" branch, and the fill.
    let (full, full_on_true, fill) = match (one(*ix), one(*iy)) {
        (false, true) => (*ix, true, *iy),
        (true, _) => (*iy, false, *ix),
        _ => return Ok(false),
    };
    let (Some(sc), Some(sv)) = (
        bcast_strides(&st.infos[*ic].1, yshape),
        bcast_strides(&st.infos[full].1, yshape),
    ) else {
        return Ok(false);
    };
    let ic = *ic;
    with_output(st, yid, |st, y| {
        let (V::T(Tensor::Bool(c)), V::F32(v), V::F32(f)) =
            (st.get(ic)?, st.get(full)?, st.get(fill)?)
        else {
            return Ok(false);
        };
        let (Some(c), [f]) = (c.as_slice(), f) else {
            return Ok(false);
        };
        where_fill(c, v, y, yshape, &sc, &sv, (full_on_true, *f));
        Ok(true)
    })
}

/// Runs `f` with the output slot of `yid` taken out as an f32 buffer.
fn with_output(
    st: &mut Store<'_>,
    yid: usize,
    f: impl FnOnce(&Store<'_>, &mut [f32]) -> Result<bool, String>,
) -> Result<bool, String> {
    let Ok(s) = st.slot(yid) else {
        return Ok(false);
    };
    let n: usize = st.infos[yid].1.iter().product();
    let mut buf = st.take(s);
    let res = match &mut buf {
        Buf::F32(v) if v.len() >= n => f(st, &mut v[..n]),
        _ => Ok(false),
    };
    st.restore(s, buf);
    res
}

simd_copies! {
    /// `y = f(a, b)` on f32 with numpy broadcasting (strides from
    /// [`bcast_strides`]).
    fn f32_binary<>(
        a: &[f32],
        b: &[f32],
        y: &mut [f32],
        out: &[usize],
        sa: &[usize],
        sb: &[usize],
        f: impl Fn(f32, f32) -> f32
    ) => f32_binary_body
}

#[inline(always)]
fn f32_binary_body(
    a: &[f32],
    b: &[f32],
    y: &mut [f32],
    out: &[usize],
    sa: &[usize],
    sb: &[usize],
    f: impl Fn(f32, f32) -> f32,
) {
    for w in Rows2::new(out, sa, sb) {
        let (ao, bo, len) = (w.a, w.b, w.len);
        let yr = &mut y[w.y..w.y + len];
        match (w.a_step, w.b_step) {
            (1, 1) => {
                for ((d, &p), &q) in yr.iter_mut().zip(&a[ao..ao + len]).zip(&b[bo..bo + len]) {
                    *d = f(p, q);
                }
            }
            (1, 0) => {
                let q = b[bo];
                for (d, &p) in yr.iter_mut().zip(&a[ao..ao + len]) {
                    *d = f(p, q);
                }
            }
            (0, 1) => {
                let p = a[ao];
                for (d, &q) in yr.iter_mut().zip(&b[bo..bo + len]) {
                    *d = f(p, q);
                }
            }
            (ast, bst) => {
                for (t, d) in yr.iter_mut().enumerate() {
                    *d = f(a[ao + t * ast], b[bo + t * bst]);
                }
            }
        }
    }
}

simd_copies! {
    /// `y = cond ? v : fill` (or `cond ? fill : v` when `k.0` is false),
    /// `cond` and `v` broadcast to `out`.
    fn where_fill<>(
        c: &[bool],
        v: &[f32],
        y: &mut [f32],
        out: &[usize],
        sc: &[usize],
        sv: &[usize],
        k: (bool, f32)
    ) => where_fill_body
}

#[inline(always)]
fn where_fill_body(
    c: &[bool],
    v: &[f32],
    y: &mut [f32],
    out: &[usize],
    sc: &[usize],
    sv: &[usize],
    (on_true, fill): (bool, f32),
) {
    let pick = |c: bool, x: f32| if c == on_true { x } else { fill };
    for w in Rows2::new(out, sc, sv) {
        let (co, vo, len) = (w.a, w.b, w.len);
        let yr = &mut y[w.y..w.y + len];
        match (w.a_step, w.b_step) {
            (1, 1) => {
                for ((d, &p), &q) in yr.iter_mut().zip(&c[co..co + len]).zip(&v[vo..vo + len]) {
                    *d = pick(p, q);
                }
            }
            (0, 1) => {
                let p = c[co];
                for (d, &q) in yr.iter_mut().zip(&v[vo..vo + len]) {
                    *d = pick(p, q);
                }
            }
            (cst, vst) => {
                for (t, d) in yr.iter_mut().enumerate() {
                    *d = pick(c[co + t * cst], v[vo + t * vst]);
                }
            }
        }
    }
}
