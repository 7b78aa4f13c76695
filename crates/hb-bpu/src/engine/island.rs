//! Float islands run tile by tile: a `Dequantize`, then float CPU ops with
//! one-value operands (`scores / √d`) and `Where`s with a one-value fill
//! (the attention mask's `−inf`), then the `Quantize` that ends the island.
//! Op by op, each step streams a whole f32 tensor through memory (an
//! attention map of 229 376 values is 0.9 MB); here every tile of
//! [`TILE`] values goes through all the steps while it sits in L1, and
//! only the quantized result is written.
//!
//! The steps are the ones the ops run on their own, in the same order with
//! the same f32 operations (the Dequantize and Quantize loops are the fast
//! paths' own), so the result is bit-identical. The intermediate tensors
//! are not written: the engine runs an island only when nobody looks at
//! them (no dump, no per-tensor comparison).

use super::elem::{has_avx2, has_avx512, simd_copies};
#[cfg(target_arch = "x86_64")]
use super::elem::{load16, store16};
use super::fastops::{dequantize_lanes, quantize_slice};
use super::store::{Buf, Store, V};
use crate::program::prepared::{Kernel, PreparedOp};
use crate::qint::QInt;
use crate::reference::quant::QuantParams;
use hb_tensor::{DType, Tensor};

/// Values per tile (16 KB of f32).
const TILE: usize = 4096;

/// The most float steps one island takes.
const MAX_STEPS: usize = 4;

/// A float op's arithmetic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

/// One float step of an island.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// `x = x ∘ c` (or `c ∘ x` when `operand_first`), `c` a one-value f32
    /// tensor.
    Arith {
        arith: Arith,
        operand: usize,
        operand_first: bool,
    },
    /// `x = cond ? x : fill` (`cond ? fill : x` unless `on_true`), `cond` a
    /// bool tensor repeating every `period` values of `x`, `fill` a
    /// one-value f32 tensor.
    Where {
        cond: usize,
        period: usize,
        on_true: bool,
        fill: usize,
    },
}

/// A run of ops `first..=last` the engine may execute as one island.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Island {
    /// The Dequantize's op index.
    pub first: usize,
    /// The Quantize's op index.
    pub last: usize,
    /// The quantized tensor the island reads.
    input: usize,
    /// The Dequantize's scale.
    scale: f32,
    steps: Vec<Step>,
    /// The Quantize's parameters.
    quant: QuantParams,
    /// The quantized tensor the island writes.
    output: usize,
}

/// What the island finder needs to know of the engine.
pub(super) struct Context<'a> {
    pub ops: &'a [PreparedOp],
    pub infos: &'a [(DType, Vec<usize>)],
    /// Memory slot per tensor id (negative: none).
    pub slot: &'a [i32],
    pub channels_last: &'a [bool],
    /// Program output tensor ids.
    pub outputs: &'a [usize],
}

/// The islands of the program, indexed by their first op.
pub(super) fn find(cx: &Context<'_>) -> Vec<Option<Island>> {
    let mut readers = vec![0usize; cx.infos.len()];
    for op in cx.ops {
        for &i in op.inputs.iter().flatten() {
            readers[i] += 1;
        }
        for p in &op.post {
            if let crate::program::prepared::Post::Add { other, .. } = p {
                readers[*other] += 1;
            }
        }
    }
    for &o in cx.outputs {
        readers[o] += 1;
    }
    (0..cx.ops.len())
        .map(|k| island_at(cx, &readers, k))
        .collect()
}

fn numel(cx: &Context<'_>, id: usize) -> usize {
    cx.infos[id].1.iter().product()
}

/// A one-value f32 tensor.
fn is_single_f32(cx: &Context<'_>, id: usize) -> bool {
    cx.infos[id].0 == DType::F32 && numel(cx, id) == 1
}

/// The island starting at op `k`, if one does.
fn island_at(cx: &Context<'_>, readers: &[usize], k: usize) -> Option<Island> {
    let op = &cx.ops[k];
    let Kernel::Dequantize {
        scales, hp_scales, ..
    } = &op.kernel
    else {
        return None;
    };
    if op.on_cpu || !op.post.is_empty() || scales.len() != 1 || !hp_scales.is_empty() {
        return None;
    }
    let (&[Some(input)], &[mut t]) = (op.inputs.as_slice(), op.outputs.as_slice()) else {
        return None;
    };
    let shape = &cx.infos[t].1;
    let mut steps = Vec::new();
    let mut used = vec![input];
    for (j, next) in cx.ops.iter().enumerate().skip(k + 1) {
        // Every intermediate is private to the island.
        if readers[t] != 1 || cx.infos[t].0 != DType::F32 || &cx.infos[t].1 != shape {
            return None;
        }
        if !next.post.is_empty() || next.outputs.len() != 1 {
            return None;
        }
        let out = next.outputs[0];
        if let Kernel::Quantize(q) = &next.kernel {
            if next.on_cpu || next.inputs.as_slice() != [Some(t)] || steps.is_empty() {
                return None;
            }
            used.push(out);
            let slot = |id: usize| cx.slot.get(id).copied().filter(|&s| s >= 0);
            let aliased = used[..used.len() - 1]
                .iter()
                .any(|&i| slot(i).is_some() && slot(i) == slot(out));
            let reordered = used.iter().any(|&i| cx.channels_last.get(i) == Some(&true));
            if aliased || reordered || slot(out).is_none() {
                return None;
            }
            return Some(Island {
                first: k,
                last: j,
                input,
                scale: scales[0],
                steps,
                quant: *q,
                output: out,
            });
        }
        if !next.on_cpu || steps.len() == MAX_STEPS {
            return None;
        }
        let step = match (next.op_type.as_str(), next.inputs.as_slice()) {
            (op_type @ ("Add" | "Sub" | "Mul" | "Div"), &[Some(a), Some(b)]) => {
                let (operand, operand_first) = match (a == t, b == t) {
                    (true, false) => (b, false),
                    (false, true) => (a, true),
                    _ => return None,
                };
                let arith = match op_type {
                    "Add" => Arith::Add,
                    "Sub" => Arith::Sub,
                    "Mul" => Arith::Mul,
                    _ => Arith::Div,
                };
                if !is_single_f32(cx, operand) {
                    return None;
                }
                used.push(operand);
                Step::Arith {
                    arith,
                    operand,
                    operand_first,
                }
            }
            ("Where", &[Some(cond), Some(x), Some(y)]) => {
                let (fill, on_true) = match (x == t, y == t) {
                    (true, false) => (y, true),
                    (false, true) => (x, false),
                    _ => return None,
                };
                let period = suffix_period(&cx.infos[cond].1, shape)?;
                if cx.infos[cond].0 != DType::Bool || !is_single_f32(cx, fill) {
                    return None;
                }
                used.extend([cond, fill]);
                Step::Where {
                    cond,
                    period,
                    on_true,
                    fill,
                }
            }
            _ => return None,
        };
        steps.push(step);
        t = out;
    }
    None
}

/// The number of values of `cond` when, without its leading 1s, it is a
/// suffix of `shape` (so it repeats every that many values of a tensor of
/// `shape`).
fn suffix_period(cond: &[usize], shape: &[usize]) -> Option<usize> {
    let lead = cond.iter().take_while(|&&d| d == 1).count();
    let core = &cond[lead..];
    let period: usize = core.iter().product();
    (core.len() <= shape.len() && shape.ends_with(core) && period > 0).then_some(period)
}

/// A step with its operands read.
#[derive(Clone, Copy)]
enum Ready<'a> {
    Arith(Arith, f32, bool),
    Where(&'a [bool], bool, f32),
}

/// The single f32 value of tensor `id`.
fn single(st: &Store<'_>, id: usize) -> Option<f32> {
    match st.get(id).ok()? {
        V::F32(&[v]) => Some(v),
        _ => None,
    }
}

/// Runs the island into its output; `Ok(false)` when a value is not in the
/// form it was planned for (the ops then run one by one).
pub(super) fn run(isl: &Island, st: &mut Store<'_>, table: &mut Table) -> Result<bool, String> {
    let n: usize = st.infos[isl.output].1.iter().product();
    let s = st.slot(isl.output)?;
    let mut buf = st.take(s);
    let res = run_into(isl, st, &mut buf, n, table);
    st.restore(s, buf);
    res
}

/// An island tabulated over its 8- or 16-bit input. The island is
/// elementwise, so each output value is a function of its input value —
/// `values[q − I::MIN]` — unless a `Where` put its fill there, which the
/// later steps then turn into one constant per `Where` (`fills`). Built
/// with the island's own f32 steps, so the results are the same bits; kept
/// per workspace and rebuilt when an operand changes.
#[derive(Default)]
pub(super) struct Table {
    /// What it was built for: input and output type sizes and the steps'
    /// one-value operands (f32 bits).
    key: Option<TableKey>,
    values: Option<Buf>,
    /// Per `Where` step: its fill after the later steps, quantized.
    fills: [i64; MAX_STEPS],
}

/// The inputs a [`Table`] depends on.
#[derive(Clone, Copy, PartialEq, Eq)]
struct TableKey {
    in_bytes: usize,
    out_bytes: usize,
    operands: [u32; MAX_STEPS],
}

impl TableKey {
    fn new(ready: &[Ready<'_>], in_bytes: usize, out_bytes: usize) -> Self {
        let mut operands = [0u32; MAX_STEPS];
        for (d, r) in operands.iter_mut().zip(ready) {
            *d = match *r {
                Ready::Arith(_, c, _) => c.to_bits(),
                Ready::Where(_, _, fill) => fill.to_bits(),
            };
        }
        TableKey {
            in_bytes,
            out_bytes,
            operands,
        }
    }
}

/// The island's outputs for every value of `I`, and its `Where` fills.
fn tabulate<I: QInt, O: QInt>(isl: &Island, ready: &[Ready<'_>]) -> (Vec<O>, [i64; MAX_STEPS]) {
    let domain: Vec<I> = (I::MIN..=I::MAX).map(I::sat_i64).collect();
    let mut f = vec![0f32; domain.len()];
    dequantize_lanes(&domain, &mut f, isl.scale);
    let ariths_after = |f: &mut [f32], from: usize| {
        for r in &ready[from..] {
            if let Ready::Arith(a, c, first) = *r {
                arith_tile(f, (a, c, first));
            }
        }
    };
    ariths_after(&mut f, 0);
    let mut values = vec![O::default(); domain.len() + TABLE_PAD];
    quantize_slice(&isl.quant, &f, &mut values[..domain.len()]);
    let mut fills = [0i64; MAX_STEPS];
    for (w, r) in ready.iter().enumerate() {
        if let Ready::Where(_, _, fill) = *r {
            let mut v = [fill];
            ariths_after(&mut v, w + 1);
            let mut q = [O::default()];
            quantize_slice(&isl.quant, &v, &mut q);
            fills[w] = q[0].to_i64();
        }
    }
    (values, fills)
}

fn run_into(
    isl: &Island,
    st: &Store<'_>,
    buf: &mut Buf,
    n: usize,
    table: &mut Table,
) -> Result<bool, String> {
    let mut ready = [Ready::Arith(Arith::Add, 0.0, false); MAX_STEPS];
    for (r, step) in ready.iter_mut().zip(&isl.steps) {
        *r = match *step {
            Step::Arith {
                arith,
                operand,
                operand_first,
            } => match single(st, operand) {
                Some(c) => Ready::Arith(arith, c, operand_first),
                None => return Ok(false),
            },
            Step::Where {
                cond,
                period,
                on_true,
                fill,
            } => match (st.get(cond)?, single(st, fill)) {
                (V::T(Tensor::Bool(c)), Some(f)) => match c.as_slice() {
                    Some(c) if c.len() == period => Ready::Where(c, on_true, f),
                    _ => return Ok(false),
                },
                _ => return Ok(false),
            },
        };
    }
    let ready = &ready[..isl.steps.len()];
    // Tiles start at multiples of every condition's period when they can:
    // each condition then reads as one pattern, laid out once per run, and
    // the selects run over whole tiles instead of period-long pieces.
    let lcm = ready.iter().try_fold(1usize, |l, r| match r {
        Ready::Where(c, ..) => Some(l / gcd(l, c.len()) * c.len()).filter(|&l| l <= TILE),
        Ready::Arith(..) => Some(l),
    });
    let tile_len = lcm.map_or(TILE, |l| TILE / l * l);
    let mut patterns = [[false; TILE]; MAX_STEPS];
    if lcm.is_some() {
        for (p, r) in patterns.iter_mut().zip(ready) {
            if let Ready::Where(c, ..) = r {
                for (d, &v) in p[..tile_len].iter_mut().zip(c.iter().cycle()) {
                    *d = v;
                }
            }
        }
    }
    let x = st.get(isl.input)?;
    let mut tile = [0f32; TILE];
    // Tabulated: 8/16-bit inputs and outputs.
    macro_rules! tabulated {
        ($x:expr, $o:expr, $i:ty, $out:ty, $variant:ident) => {{
            let (x, o) = ($x, $o);
            if x.len() != n || o.len() < n {
                return Ok(false);
            }
            let key = TableKey::new(ready, size_of::<$i>(), size_of::<$out>());
            // A new table costs one pass over every input value: built for
            // tensors of at least a quarter of that (else the steps run).
            let domain = 1usize << (8 * size_of::<$i>());
            if table.key == Some(key) || n >= domain / 4 {
                if table.key != Some(key) {
                    let (values, fills) = tabulate::<$i, _>(isl, ready);
                    *table = Table {
                        key: Some(key),
                        values: Some(Buf::$variant(values)),
                        fills,
                    };
                }
                let Some(Buf::$variant(values)) = &table.values else {
                    return Ok(false);
                };
                for start in (0..n).step_by(tile_len) {
                    let end = (start + tile_len).min(n);
                    let t = &mut o[start..end];
                    look_up(&x[start..end], values, t);
                    for ((r, pattern), &fill) in ready.iter().zip(&patterns).zip(&table.fills) {
                        let fill = QInt::sat_i64(fill);
                        match *r {
                            Ready::Arith(..) => {}
                            Ready::Where(_, on_true, _) if lcm.is_some() => {
                                where_fill(t, &pattern[..t.len()], 0, (on_true, fill))
                            }
                            Ready::Where(cond, on_true, _) => {
                                where_fill(t, cond, start, (on_true, fill))
                            }
                        }
                    }
                }
                return Ok(true);
            }
        }};
    }
    macro_rules! tiles {
        ($x:expr, $o:expr) => {{
            let (x, o) = ($x, $o);
            if x.len() != n || o.len() < n {
                return Ok(false);
            }
            for start in (0..n).step_by(tile_len) {
                let end = (start + tile_len).min(n);
                let t = &mut tile[..end - start];
                dequantize_lanes(&x[start..end], t, isl.scale);
                for (r, pattern) in ready.iter().zip(&patterns) {
                    match *r {
                        Ready::Arith(a, c, first) => arith_tile(t, (a, c, first)),
                        Ready::Where(_, on_true, fill) if lcm.is_some() => {
                            where_tile(t, &pattern[..t.len()], 0, (on_true, fill))
                        }
                        Ready::Where(cond, on_true, fill) => {
                            where_tile(t, cond, start, (on_true, fill))
                        }
                    }
                }
                quantize_slice(&isl.quant, t, &mut o[start..end]);
            }
        }};
    }
    macro_rules! out {
        ($x:expr) => {
            match buf {
                Buf::I8(o) => tiles!($x, o.as_mut_slice()),
                Buf::I16(o) => tiles!($x, o.as_mut_slice()),
                Buf::I32(o) => tiles!($x, o.as_mut_slice()),
                _ => return Ok(false),
            }
        };
    }
    match (&x, &mut *buf) {
        (V::I8(x), Buf::I8(o)) => tabulated!(x, o.as_mut_slice(), i8, i8, I8),
        (V::I8(x), Buf::I16(o)) => tabulated!(x, o.as_mut_slice(), i8, i16, I16),
        (V::I16(x), Buf::I8(o)) => tabulated!(x, o.as_mut_slice(), i16, i8, I8),
        (V::I16(x), Buf::I16(o)) => tabulated!(x, o.as_mut_slice(), i16, i16, I16),
        _ => {}
    }
    match x {
        V::I8(x) => out!(x),
        V::I16(x) => out!(x),
        V::I32(x) => out!(x),
        _ => return Ok(false),
    }
    Ok(true)
}

/// Greatest common divisor.
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

simd_copies! {
    /// `x = x ∘ c` (or `c ∘ x`) over a tile.
    fn arith_tile<>(t: &mut [f32], k: (Arith, f32, bool)) => arith_tile_body
}

#[inline(always)]
fn arith_tile_body(t: &mut [f32], (a, c, first): (Arith, f32, bool)) {
    macro_rules! each {
        ($f:expr) => {
            for v in t.iter_mut() {
                *v = $f(*v);
            }
        };
    }
    match (a, first) {
        (Arith::Add, false) => each!(|v| v + c),
        (Arith::Add, true) => each!(|v| c + v),
        (Arith::Sub, false) => each!(|v| v - c),
        (Arith::Sub, true) => each!(|v| c - v),
        (Arith::Mul, false) => each!(|v| v * c),
        (Arith::Mul, true) => each!(|v| c * v),
        (Arith::Div, false) => each!(|v| v / c),
        (Arith::Div, true) => each!(|v| c / v),
    }
}

simd_copies! {
    /// `x = cond ? x : fill` (or the other way round) over the tile that
    /// starts at value `start` of the tensor; `cond` repeats.
    fn where_tile<>(t: &mut [f32], cond: &[bool], start: usize, k: (bool, f32)) => where_tile_body
}

simd_copies! {
    /// [`where_tile`] on quantized values (a tabulated island's fills).
    fn where_fill<O>(t: &mut [O], cond: &[bool], start: usize, k: (bool, O)) => where_tile_body
}

/// Entries past the end of a table, so a 4-byte gather at its last entry
/// stays inside it.
const TABLE_PAD: usize = 4;

/// `o = values[x − I::MIN]` over a tile (`values` covers all of `I`, plus
/// [`TABLE_PAD`] entries): sixteen at a time by AVX-512 gathers for 8/16-bit
/// types, the rest by [`look_up_lanes`].
fn look_up<I: QInt, O: QInt>(x: &[I], values: &[O], o: &mut [O]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        let domain = (I::MAX - I::MIN + 1) as usize;
        let small = |b: usize| b == 1 || b == 2;
        if has_avx512()
            && small(size_of::<I>())
            && small(size_of::<O>())
            && values.len() >= domain + TABLE_PAD
        {
            // SAFETY: AVX-512 detected; the types are 1 or 2 bytes and the
            // table holds the padding the gathers read past its last entry.
            done = unsafe { look_up_avx512(x, values, o) };
        }
    }
    look_up_lanes(&x[done..], values, &mut o[done..]);
}

/// The whole blocks of sixteen of [`look_up`]; returns how many values it
/// wrote.
///
/// # Safety
/// AVX-512 F/BW/DQ/VL available; `I` and `O` are 1 or 2 bytes; `values`
/// holds every value of `I` plus [`TABLE_PAD`] entries.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn look_up_avx512<I: QInt, O: QInt>(x: &[I], values: &[O], o: &mut [O]) -> usize {
    use std::arch::x86_64::*;
    let whole = x.len().min(o.len()) / 16 * 16;
    let base = values.as_ptr() as *const i32;
    let min = _mm512_set1_epi32(I::MIN as i32);
    for (xv, ov) in x[..whole]
        .chunks_exact(16)
        .zip(o[..whole].chunks_exact_mut(16))
    {
        // SAFETY: 16 values are read from `xv` and written to `ov`; the
        // gathers read 4 bytes at entries `0..domain`, inside `values`.
        unsafe {
            let idx = _mm512_sub_epi32(load16(xv), min);
            let w = if size_of::<O>() == 1 {
                _mm512_i32gather_epi32::<1>(idx, base)
            } else {
                _mm512_i32gather_epi32::<2>(idx, base)
            };
            // The 4-byte reads carry the next entries in their high bytes;
            // `store16` keeps each lane's low 8 or 16 bits.
            store16(ov, w);
        }
    }
    whole
}

simd_copies! {
    /// `o = values[x − I::MIN]` over a tile, one by one.
    fn look_up_lanes<I, O>(x: &[I], values: &[O], o: &mut [O]) => look_up_body
}

#[inline(always)]
fn look_up_body<I: QInt, O: QInt>(x: &[I], values: &[O], o: &mut [O]) {
    for (d, q) in o.iter_mut().zip(x) {
        *d = values[(q.to_i64() - I::MIN) as usize];
    }
}

#[inline(always)]
fn where_tile_body<T: Copy>(t: &mut [T], cond: &[bool], start: usize, (on_true, fill): (bool, T)) {
    let period = cond.len();
    let mut done = 0;
    while done < t.len() {
        let off = (start + done) % period;
        let len = (period - off).min(t.len() - done);
        for (v, &c) in t[done..done + len].iter_mut().zip(&cond[off..off + len]) {
            if c != on_true {
                *v = fill;
            }
        }
        done += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_of_broadcast_conditions() {
        assert_eq!(suffix_period(&[1, 1, 1, 46], &[1, 4, 896, 46]), Some(46));
        assert_eq!(suffix_period(&[64, 64], &[14, 4, 64, 64]), Some(4096));
        assert_eq!(
            suffix_period(&[1, 1, 1, 14, 14], &[1, 64, 4, 14, 14]),
            Some(196)
        );
        assert_eq!(suffix_period(&[], &[3, 4]), Some(1));
        // Broadcast along an inner axis does not repeat whole.
        assert_eq!(suffix_period(&[4, 1], &[3, 4, 5]), None);
        assert_eq!(suffix_period(&[2, 4, 5], &[4, 5]), None);
    }

    /// The f32 steps of an island on one tile, as the untabulated path
    /// runs them.
    fn by_steps<I: QInt, O: QInt>(isl: &Island, ready: &[Ready<'_>], x: &[I]) -> Vec<O> {
        let mut t = vec![0f32; x.len()];
        dequantize_lanes(x, &mut t, isl.scale);
        for r in ready {
            match *r {
                Ready::Arith(a, c, first) => arith_tile(&mut t, (a, c, first)),
                Ready::Where(cond, on_true, fill) => where_tile(&mut t, cond, 0, (on_true, fill)),
            }
        }
        let mut o = vec![O::default(); x.len()];
        quantize_slice(&isl.quant, &t, &mut o);
        o
    }

    /// The tabulated island: lookup, then the fills in step order.
    fn by_table<I: QInt, O: QInt>(isl: &Island, ready: &[Ready<'_>], x: &[I]) -> Vec<O> {
        let (values, fills) = tabulate::<I, O>(isl, ready);
        let mut o = vec![O::default(); x.len()];
        look_up(x, &values, &mut o);
        for (r, &fill) in ready.iter().zip(&fills) {
            if let Ready::Where(cond, on_true, _) = *r {
                where_fill(&mut o, cond, 0, (on_true, O::sat_i64(fill)));
            }
        }
        o
    }

    #[test]
    fn tabulated_islands_match_the_f32_steps() {
        let mut next = crate::engine::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let cond_a: Vec<bool> = (0..46).map(|_| !next().is_multiple_of(3)).collect();
        let cond_b: Vec<bool> = (0..7).map(|_| next().is_multiple_of(2)).collect();
        for case in 0..12 {
            let keep_masks = case % 2 == 0;
            let quant = QuantParams {
                scale: [0.031, 0.0007, 0.25][case % 3],
                lo: if case % 4 < 2 { -128 } else { -32768 },
                hi: if case % 4 < 2 { 127 } else { 32767 },
                keep_masks,
                mask_limit: crate::reference::quant::MASK_LIMIT,
            };
            let isl = Island {
                first: 0,
                last: 0,
                input: 0,
                scale: [0.0123f32, 0.5, 3.1e-4][case % 3],
                steps: Vec::new(),
                quant,
                output: 0,
            };
            // scores / √8, masked to −inf, a second mask to a finite fill,
            // then an offset (applied to the fills too).
            let ready = [
                Ready::Arith(Arith::Div, 2.828_427, false),
                Ready::Where(&cond_a, true, f32::NEG_INFINITY),
                Ready::Where(&cond_b, false, -3.5),
                Ready::Arith(Arith::Sub, 0.75, case % 3 == 0),
            ];
            let n = 46 * 7 * 3;
            let x8: Vec<i8> = (0..n).map(|_| next() as i8).collect();
            let x16: Vec<i16> = (0..n).map(|_| next() as i16).collect();
            if case % 4 < 2 {
                assert_eq!(
                    by_table::<i8, i8>(&isl, &ready, &x8),
                    by_steps::<i8, i8>(&isl, &ready, &x8),
                    "case {case}"
                );
                assert_eq!(
                    by_table::<i16, i8>(&isl, &ready, &x16),
                    by_steps::<i16, i8>(&isl, &ready, &x16),
                    "case {case}"
                );
            } else {
                assert_eq!(
                    by_table::<i8, i16>(&isl, &ready, &x8),
                    by_steps::<i8, i16>(&isl, &ready, &x8),
                    "case {case}"
                );
                assert_eq!(
                    by_table::<i16, i16>(&isl, &ready, &x16),
                    by_steps::<i16, i16>(&isl, &ready, &x16),
                    "case {case}"
                );
            }
        }
    }

    #[test]
    fn where_tiles_follow_the_period_across_tile_starts() {
        let cond = [true, false, true];
        let mut t = [1.0f32; 7];
        where_tile(&mut t, &cond, 2, (true, -9.0));
        // Values 2..9 of the tensor: cond[2], cond[0], cond[1], cond[2], ...
        assert_eq!(t, [1.0, 1.0, -9.0, 1.0, 1.0, -9.0, 1.0]);
        let mut t = [1.0f32; 4];
        where_tile(&mut t, &cond, 0, (false, 5.0));
        assert_eq!(t, [5.0, 1.0, 5.0, 5.0]);
    }
}
