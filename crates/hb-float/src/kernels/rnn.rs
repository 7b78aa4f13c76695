//! Recurrent layers: RNN, GRU and LSTM (ONNX opsets 7, 14, 22).
//!
//! One engine runs the three cells. Per direction, the input projection
//! `X·Wᵀ + biases` of every timestep is one [`sgemm`] over the whole
//! sequence; each step then needs only `H_{t-1}·Rᵀ` (one product over the
//! batch: row updates on a transposed `R` for small batches, sgemm for
//! large ones) and the elementwise gate math.
//!
//! Semantics (ONNX spec, checked against onnxruntime):
//! - `direction` forward / reverse / bidirectional; `layout` 0
//!   (`X` `[seq, batch, input]`, `Y` `[seq, dirs, batch, hidden]`, states
//!   `[dirs, batch, hidden]`) or 1 (`X` `[batch, seq, input]`, `Y`
//!   `[batch, seq, dirs, hidden]`, states `[batch, dirs, hidden]`).
//! - `sequence_lens[b]` shorter than the sequence: batch entry `b` runs
//!   steps `0..len` only (a reverse direction starts at `len - 1`), `Y` is
//!   zero past `len`, and `Y_h` / `Y_c` hold the state after the last valid
//!   step (zero when `len == 0`, as in onnxruntime).
//! - `clip` bounds every activation's input to `[-clip, clip]`.
//! - `activations` (case-insensitive) with `activation_alpha` /
//!   `activation_beta` consumed in order by the functions that take them;
//!   missing values default to the matching ONNX op's (LeakyRelu 0.01,
//!   HardSigmoid 0.2 / 0.5, Elu 1, ThresholdedRelu 1; Affine 1 / 0 and
//!   ScaledTanh 1 / 1 as the retired ops had). onnxruntime agrees except
//!   for the last three, where it takes a missing alpha or beta as 0. A bidirectional node may list one
//!   direction's functions only: the backward direction then reuses them;
//!   functions past the ones the directions use are ignored (as
//!   onnxruntime does for RNN, whose schema default lists two).
//! - GRU `linear_before_reset`; LSTM peepholes `P` and `input_forget`
//!   (`f = 1 - i`).

use crate::error::OpResult;
use crate::invalid;
use crate::kernels::fastmath::{exp_f32, sigmoid_f32, tanh_f32};
use crate::kernels::floatio::{contiguous, f32_of, to_dtype};
use crate::kernels::gemm::{sgemm, Mat};
use crate::kernels::util::{input, opt_input};
use crate::registry::{OpCtx, Registry};
use hb_tensor::Tensor;
use ndarray::{ArrayD, IxDyn};

/// Registers RNN, GRU and LSTM.
pub fn register(r: &mut Registry) {
    r.register("RNN", rnn);
    r.register("GRU", gru);
    r.register("LSTM", lstm);
}

fn rnn(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    run(ctx, inputs, Cell::Rnn)
}

fn gru(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let lbr = ctx.node.int_or("linear_before_reset", 0)? != 0;
    run(ctx, inputs, Cell::Gru { lbr })
}

fn lstm(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let input_forget = ctx.node.int_or("input_forget", 0)? != 0;
    run(ctx, inputs, Cell::Lstm { input_forget })
}

/// The cell a node computes.
#[derive(Debug, Clone, Copy)]
enum Cell {
    Rnn,
    Gru { lbr: bool },
    Lstm { input_forget: bool },
}

impl Cell {
    /// Gates stacked in `W` / `R` (RNN 1, GRU `zrh` 3, LSTM `iofc` 4).
    fn gates(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Gru { .. } => 3,
            Cell::Lstm { .. } => 4,
        }
    }

    /// The default activations of one direction.
    fn default_acts(self) -> &'static [&'static str] {
        match self {
            Cell::Rnn => &["Tanh"],
            Cell::Gru { .. } => &["Sigmoid", "Tanh"],
            Cell::Lstm { .. } => &["Sigmoid", "Tanh", "Tanh"],
        }
    }
}

/// An activation function of a recurrent cell, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Act {
    Relu,
    Tanh,
    Sigmoid,
    Affine(f32, f32),
    LeakyRelu(f32),
    ThresholdedRelu(f32),
    ScaledTanh(f32, f32),
    HardSigmoid(f32, f32),
    Elu(f32),
    Softsign,
    Softplus,
}

impl Act {
    /// Parses a name, taking its alpha / beta from the front of the lists
    /// (the ONNX op's default when a list is used up).
    fn parse(
        name: &str,
        alphas: &mut impl Iterator<Item = f32>,
        betas: &mut impl Iterator<Item = f32>,
    ) -> OpResult<Act> {
        let mut a = |d: f32| alphas.next().unwrap_or(d);
        Ok(match name.to_ascii_lowercase().as_str() {
            "relu" => Act::Relu,
            "tanh" => Act::Tanh,
            "sigmoid" => Act::Sigmoid,
            "affine" => Act::Affine(a(1.0), betas.next().unwrap_or(0.0)),
            "leakyrelu" => Act::LeakyRelu(a(0.01)),
            "thresholdedrelu" => Act::ThresholdedRelu(a(1.0)),
            "scaledtanh" => Act::ScaledTanh(a(1.0), betas.next().unwrap_or(1.0)),
            "hardsigmoid" => Act::HardSigmoid(a(0.2), betas.next().unwrap_or(0.5)),
            "elu" => Act::Elu(a(1.0)),
            "softsign" => Act::Softsign,
            "softplus" => Act::Softplus,
            _ => return Err(invalid!("unknown activation function '{name}'")),
        })
    }

    /// Applies the function in place, clipping its input first.
    fn apply(self, xs: &mut [f32], clip: Option<f32>) {
        apply_act(self, xs, clip);
    }
}

crate::multiversion! {
/// [`Act::apply`] (vectorised: the fastmath functions have no libm call).
fn apply_act(act: Act, xs: &mut [f32], clip: Option<f32>) {
    if let Some(c) = clip {
        xs.iter_mut().for_each(|x| *x = x.clamp(-c, c));
    }
    match act {
        Act::Relu => xs.iter_mut().for_each(|x| *x = x.max(0.0)),
        Act::Tanh => xs.iter_mut().for_each(|x| *x = tanh_f32(*x)),
        Act::Sigmoid => xs.iter_mut().for_each(|x| *x = sigmoid_f32(*x)),
        Act::Affine(a, b) => xs.iter_mut().for_each(|x| *x = a * *x + b),
        Act::LeakyRelu(a) => xs
            .iter_mut()
            .for_each(|x| *x = if *x >= 0.0 { *x } else { a * *x }),
        Act::ThresholdedRelu(a) => xs
            .iter_mut()
            .for_each(|x| *x = if *x >= a { *x } else { 0.0 }),
        Act::ScaledTanh(a, b) => xs.iter_mut().for_each(|x| *x = a * tanh_f32(b * *x)),
        Act::HardSigmoid(a, b) => xs
            .iter_mut()
            .for_each(|x| *x = (a * *x + b).clamp(0.0, 1.0)),
        Act::Elu(a) => xs.iter_mut().for_each(|x| {
            *x = if *x >= 0.0 {
                *x
            } else {
                a * (exp_f32(*x) - 1.0)
            }
        }),
        Act::Softsign => xs.iter_mut().for_each(|x| *x /= 1.0 + x.abs()),
        Act::Softplus => xs.iter_mut().for_each(|x| {
            // log(1 + e^x) without overflow: max(x, 0) + log1p(e^-|x|).
            *x = x.max(0.0) + (-x.abs()).exp().ln_1p()
        }),
    }
}
}

/// The direction attribute.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Direction {
    Forward,
    Reverse,
    Bidirectional,
}

/// Attributes and sizes of one node, checked against its inputs.
struct Spec {
    cell: Cell,
    direction: Direction,
    layout1: bool,
    /// Directions (1 or 2).
    dirs: usize,
    seq: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    clip: Option<f32>,
    /// Activations per direction (`Cell::default_acts().len()` each).
    acts: Vec<Vec<Act>>,
}

impl Spec {
    /// Direction `d` walks the sequence backwards.
    fn reversed(&self, d: usize) -> bool {
        self.direction == Direction::Reverse
            || (self.direction == Direction::Bidirectional && d == 1)
    }
}

/// Checks a tensor's shape.
fn expect_shape(got: &[usize], want: &[usize], what: &str) -> OpResult<()> {
    if got != want {
        return Err(invalid!("{what} has shape {got:?}, expected {want:?}"));
    }
    Ok(())
}

/// Reads the attributes and checks every input's shape.
fn spec(ctx: &OpCtx, cell: Cell, x: &[usize], w: &[usize], r: &[usize]) -> OpResult<Spec> {
    let node = ctx.node;
    let direction = match node.string_or("direction", "forward")?.as_str() {
        "forward" => Direction::Forward,
        "reverse" => Direction::Reverse,
        "bidirectional" => Direction::Bidirectional,
        other => {
            return Err(invalid!(
                "direction '{other}' is not forward, reverse or bidirectional"
            ))
        }
    };
    let dirs = if direction == Direction::Bidirectional {
        2
    } else {
        1
    };
    let layout1 = match node.int_or("layout", 0)? {
        0 => false,
        1 => true,
        other => return Err(invalid!("layout {other} is not 0 or 1")),
    };
    if x.len() != 3 || w.len() != 3 || r.len() != 3 {
        return Err(invalid!(
            "X, W and R must be 3-D, got {x:?}, {w:?} and {r:?}"
        ));
    }
    let (seq, batch) = if layout1 { (x[1], x[0]) } else { (x[0], x[1]) };
    let input = x[2];
    let hidden = r[2];
    if let Some(hs) = node.get_int("hidden_size")? {
        if usize::try_from(hs).ok() != Some(hidden) {
            return Err(invalid!(
                "hidden_size {hs} does not match R's last dim {hidden}"
            ));
        }
    }
    let gh = cell.gates() * hidden;
    expect_shape(w, &[dirs, gh, input], "W")?;
    expect_shape(r, &[dirs, gh, hidden], "R")?;
    let clip = node.get_float("clip")?;
    if let Some(c) = clip {
        if c.is_nan() || c <= 0.0 {
            return Err(invalid!("clip {c} must be positive"));
        }
    }
    let per_dir = cell.default_acts().len();
    let names: Vec<String> = match node.get_strings("activations")? {
        None => cell
            .default_acts()
            .iter()
            .cycle()
            .take(per_dir * dirs)
            .map(|s| s.to_string())
            .collect(),
        // Longer lists are cut (the RNN schema's default lists two
        // functions, which forward nodes carry too).
        Some(v) if v.len() >= per_dir * dirs => v[..per_dir * dirs].to_vec(),
        Some(v) if v.len() == per_dir => v.iter().cycle().take(per_dir * dirs).cloned().collect(),
        Some(v) => {
            return Err(invalid!(
                "{} activations given, {} expected ({per_dir} per direction)",
                v.len(),
                per_dir * dirs
            ))
        }
    };
    let alphas = node.get_floats("activation_alpha")?.unwrap_or_default();
    let betas = node.get_floats("activation_beta")?.unwrap_or_default();
    let (mut alphas, mut betas) = (alphas.into_iter(), betas.into_iter());
    let parsed = names
        .iter()
        .map(|n| Act::parse(n, &mut alphas, &mut betas))
        .collect::<OpResult<Vec<_>>>()?;
    let acts = parsed.chunks(per_dir).map(<[Act]>::to_vec).collect();
    Ok(Spec {
        cell,
        direction,
        layout1,
        dirs,
        seq,
        batch,
        input,
        hidden,
        clip,
        acts,
    })
}

/// Swaps the first two axes of a contiguous `[a, b, c]` buffer.
fn swap01(x: &[f32], a: usize, b: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; a * b * c];
    for i in 0..a {
        for j in 0..b {
            let (src, dst) = ((i * b + j) * c, (j * a + i) * c);
            out[dst..dst + c].copy_from_slice(&x[src..src + c]);
        }
    }
    out
}

/// An optional initial state as `[dirs, batch, hidden]` (zeros when absent).
fn initial_state(t: Option<&Tensor>, s: &Spec, what: &str) -> OpResult<Vec<f32>> {
    let (d, b, h) = (s.dirs, s.batch, s.hidden);
    let Some(t) = t else {
        return Ok(vec![0.0; d * b * h]);
    };
    let a = f32_of(t)?;
    if s.layout1 {
        expect_shape(a.shape(), &[b, d, h], what)?;
        Ok(swap01(&contiguous(&a), b, d, h))
    } else {
        expect_shape(a.shape(), &[d, b, h], what)?;
        Ok(contiguous(&a).into_owned())
    }
}

/// An optional per-direction vector input (`B`, `P`) as `[dirs, n]`.
fn per_dir_vec(t: Option<&Tensor>, dirs: usize, n: usize, what: &str) -> OpResult<Vec<f32>> {
    let Some(t) = t else {
        return Ok(vec![0.0; dirs * n]);
    };
    let a = f32_of(t)?;
    expect_shape(a.shape(), &[dirs, n], what)?;
    Ok(contiguous(&a).into_owned())
}

/// The valid length of every batch entry (all `seq` when absent).
fn sequence_lens(t: Option<&Tensor>, s: &Spec) -> OpResult<Vec<usize>> {
    let Some(t) = t else {
        return Ok(vec![s.seq; s.batch]);
    };
    if !t.dtype().is_int() {
        return Err(invalid!(
            "sequence_lens has type {}, an integer type is required",
            t.dtype()
        ));
    }
    expect_shape(t.shape(), &[s.batch], "sequence_lens")?;
    t.to_i64_vec()?
        .into_iter()
        .map(|l| {
            usize::try_from(l)
                .ok()
                .filter(|&l| l <= s.seq)
                .ok_or_else(|| invalid!("sequence_lens value {l} is outside 0..={}", s.seq))
        })
        .collect()
}

/// One direction's parameters and state, as contiguous slices.
struct Dir<'a> {
    /// `X·Wᵀ` plus the biases that add straight to it, `[seq·batch, G·H]`.
    xw: &'a [f32],
    /// `Rᵀ` of the gates `H_{t-1}` multiplies directly, `[H, cols]` (GRU
    /// without `linear_before_reset`: z and r only).
    rt: &'a [f32],
    /// GRU without `linear_before_reset`: `Rh_ᵀ`, `[H, H]`.
    rt_h: &'a [f32],
    /// GRU with `linear_before_reset`: `Rb_h` (added before the reset gate).
    rbh: &'a [f32],
    /// LSTM peepholes `P[iof]` (`3·H`, zeros when absent).
    p: &'a [f32],
    acts: &'a [Act],
    reverse: bool,
}

/// Runs a recurrent node.
fn run(ctx: &OpCtx, inputs: &[Option<&Tensor>], cell: Cell) -> OpResult<Vec<Tensor>> {
    let xt = input(inputs, 0)?;
    let dtype = xt.dtype();
    let x = f32_of(xt)?;
    let w = f32_of(input(inputs, 1)?)?;
    let r = f32_of(input(inputs, 2)?)?;
    let s = spec(ctx, cell, x.shape(), w.shape(), r.shape())?;
    let (h, g) = (s.hidden, cell.gates());
    let gh = g * h;
    let bias = per_dir_vec(opt_input(inputs, 3), s.dirs, 2 * gh, "B")?;
    let lens = sequence_lens(opt_input(inputs, 4), &s)?;
    let h0 = initial_state(opt_input(inputs, 5), &s, "initial_h")?;
    let (c0, peep) = match cell {
        Cell::Lstm { .. } => (
            initial_state(opt_input(inputs, 6), &s, "initial_c")?,
            per_dir_vec(opt_input(inputs, 7), s.dirs, 3 * h, "P")?,
        ),
        _ => (Vec::new(), Vec::new()),
    };
    if !matches!(cell, Cell::Lstm { .. }) && inputs.iter().skip(6).any(Option::is_some) {
        return Err(invalid!("{} takes 6 inputs at most", ctx.node.op_type));
    }

    // X as [seq, batch, input].
    let xs = if s.layout1 {
        swap01(&contiguous(&x), s.batch, s.seq, s.input)
    } else {
        contiguous(&x).into_owned()
    };
    let (w, r) = (contiguous(&w), contiguous(&r));
    let rows = s.seq * s.batch;
    let state = s.batch * h;
    let mut y = vec![0f32; s.seq * s.dirs * state];
    let mut yh = h0;
    let mut yc = c0;
    let mut xw = vec![0f32; rows * gh];
    for d in 0..s.dirs {
        // Input projection of the whole sequence at once.
        let wd = &w[d * gh * s.input..(d + 1) * gh * s.input];
        sgemm(
            1.0,
            Mat::row_major(&xs, rows, s.input),
            Mat::row_major(wd, gh, s.input).t(),
            0.0,
            &mut xw,
        )?;
        let (wb, rb) = bias[d * 2 * gh..(d + 1) * 2 * gh].split_at(gh);
        let mut add: Vec<f32> = wb.iter().zip(rb).map(|(a, b)| a + b).collect();
        let mut rbh: &[f32] = &[];
        if let Cell::Gru { lbr: true } = cell {
            // Rb_h is added to H·Rh_ᵀ before the reset gate multiplies it.
            add[2 * h..].copy_from_slice(&wb[2 * h..]);
            rbh = &rb[2 * h..];
        }
        if gh > 0 {
            for row in xw.chunks_exact_mut(gh) {
                row.iter_mut().zip(&add).for_each(|(v, b)| *v += b);
            }
        }
        let rd = &r[d * gh * h..(d + 1) * gh * h];
        let rec_cols = rec_cols(cell, h);
        let rt = transpose_rows(rd, rec_cols, h);
        let rt_h = match cell {
            Cell::Gru { lbr: false } => transpose_rows(&rd[2 * h * h..], h, h),
            _ => Vec::new(),
        };
        let dir = Dir {
            xw: &xw,
            rt: &rt,
            rt_h: &rt_h,
            rbh,
            p: if peep.is_empty() {
                &[]
            } else {
                &peep[d * 3 * h..(d + 1) * 3 * h]
            },
            acts: &s.acts[d],
            reverse: s.reversed(d),
        };
        let hd = &mut yh[d * state..(d + 1) * state];
        let cd = if yc.is_empty() {
            &mut [][..]
        } else {
            &mut yc[d * state..(d + 1) * state]
        };
        recur(&s, &dir, &lens, hd, cd, &mut y, d)?;
    }
    // Entries of length 0 end with zero states.
    for (b, _) in lens.iter().enumerate().filter(|(_, &l)| l == 0) {
        for d in 0..s.dirs {
            let o = (d * s.batch + b) * h;
            yh[o..o + h].fill(0.0);
            if let Some(c) = yc.get_mut(o..o + h) {
                c.fill(0.0);
            }
        }
    }

    let (seq, dirs, batch) = (s.seq, s.dirs, s.batch);
    let out = |data: Vec<f32>, shape: &[usize]| -> OpResult<Tensor> {
        let a = ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| invalid!("{e}"))?;
        to_dtype(a, dtype)
    };
    let mut outs = Vec::with_capacity(3);
    if s.layout1 {
        // [seq, dirs·batch, H] → [batch, seq, dirs, H]; states [dirs, batch, H] → [batch, dirs, H].
        let mut yl = vec![0f32; y.len()];
        for t in 0..seq {
            for d in 0..dirs {
                for b in 0..batch {
                    let src = ((t * dirs + d) * batch + b) * h;
                    let dst = ((b * seq + t) * dirs + d) * h;
                    yl[dst..dst + h].copy_from_slice(&y[src..src + h]);
                }
            }
        }
        outs.push(out(yl, &[batch, seq, dirs, h])?);
        outs.push(out(swap01(&yh, dirs, batch, h), &[batch, dirs, h])?);
        if !yc.is_empty() {
            outs.push(out(swap01(&yc, dirs, batch, h), &[batch, dirs, h])?);
        }
    } else {
        outs.push(out(y, &[seq, dirs, batch, h])?);
        outs.push(out(yh, &[dirs, batch, h])?);
        if !yc.is_empty() {
            outs.push(out(yc, &[dirs, batch, h])?);
        }
    }
    Ok(outs)
}

/// Batch sizes up to which the per-step product `H·Rᵀ` runs as row
/// updates on a transposed copy of `R` made once per direction: sgemm
/// would pack all of `R` again on every step for a handful of rows.
const SMALL_BATCH: usize = 8;

/// `R`'s rows `rows` (row-major `[n, k]`) transposed to `[k, n]`.
fn transpose_rows(r: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut t = vec![0f32; n * k];
    for (j, row) in r.chunks_exact(k.max(1)).take(n).enumerate() {
        for (p, &v) in row.iter().enumerate() {
            t[p * n + j] = v;
        }
    }
    t
}

/// `out = h · rt` for row-major `h` `[batch, k]` and `rt` `[k, n]` (`R`
/// transposed): the recurrent product of one step, `out` `[batch, n]`.
fn rec_product(
    h: &[f32],
    batch: usize,
    rt: &[f32],
    n: usize,
    k: usize,
    out: &mut [f32],
) -> OpResult<()> {
    if batch > SMALL_BATCH {
        return sgemm(
            1.0,
            Mat::row_major(h, batch, k),
            Mat::row_major(rt, k, n),
            0.0,
            out,
        );
    }
    if h.len() < batch * k || rt.len() < k * n || out.len() < batch * n {
        return Err(invalid!(
            "recurrent product: buffers do not match {batch}x{k} · {k}x{n}"
        ));
    }
    let out = &mut out[..batch * n];
    out.fill(0.0);
    if n > 0 && k > 0 {
        row_updates(&h[..batch * k], &rt[..k * n], n, out);
    }
    Ok(())
}

crate::multiversion! {
/// `out_b += h[b, p] · rt_p` over `p` in order (each element is the plain
/// left-to-right dot product; the row loop vectorises). Sizes are checked
/// by [`rec_product`], `n > 0`.
fn row_updates(h: &[f32], rt: &[f32], n: usize, out: &mut [f32]) {
    let k = rt.len() / n;
    for (p, rp) in rt.chunks_exact(n).enumerate() {
        for (ob, hb) in out.chunks_exact_mut(n).zip(h.chunks_exact(k)) {
            let hv = hb[p];
            for (o, &r) in ob.iter_mut().zip(rp) {
                *o += hv * r;
            }
        }
    }
}
}

/// Columns of the per-step product `H_{t-1}·Rᵀ`: every gate, except for a
/// GRU without `linear_before_reset`, whose h gate multiplies `r ⊙ H_{t-1}`
/// (a second product).
fn rec_cols(cell: Cell, h: usize) -> usize {
    match cell {
        Cell::Gru { lbr: false } => 2 * h,
        _ => cell.gates() * h,
    }
}

/// Runs the recurrence of direction `d`: `hs` / `cs` (`[batch, H]`) start
/// as the initial states and end as the last valid ones; each valid step's
/// hidden state goes to `y` (`[seq, dirs, batch, H]`).
fn recur(
    s: &Spec,
    dir: &Dir,
    lens: &[usize],
    hs: &mut [f32],
    cs: &mut [f32],
    y: &mut [f32],
    d: usize,
) -> OpResult<()> {
    let (h, batch) = (s.hidden, s.batch);
    let gh = s.cell.gates() * h;
    let steps = lens.iter().copied().max().unwrap_or(0);
    // H_{t-1}·Rᵀ of every batch entry.
    let rec_cols = rec_cols(s.cell, h);
    let mut rec = vec![0f32; batch * rec_cols];
    // GRU: the gates of every batch entry, and (r ⊙ H_{t-1})·Rhᵀ.
    let mut zr = vec![0f32; batch * 2 * h];
    let mut rh = vec![0f32; batch * h];
    let mut hh = vec![0f32; batch * h];
    let mut gates = vec![0f32; gh];
    // The timestep entry `b` is at on step `k`, if it still runs.
    let time = |k: usize, b: usize| -> Option<usize> {
        let len = lens[b];
        (k < len).then(|| if dir.reverse { len - 1 - k } else { k })
    };
    for k in 0..steps {
        rec_product(hs, batch, dir.rt, rec_cols, h, &mut rec)?;
        match s.cell {
            Cell::Rnn => {
                for b in 0..batch {
                    let Some(t) = time(k, b) else { continue };
                    let x = &dir.xw[(t * batch + b) * gh..][..gh];
                    let hb = &mut hs[b * h..(b + 1) * h];
                    for ((o, xv), rv) in hb.iter_mut().zip(x).zip(&rec[b * h..(b + 1) * h]) {
                        *o = xv + rv;
                    }
                    dir.acts[0].apply(hb, s.clip);
                    let o = ((t * s.dirs + d) * batch + b) * h;
                    y[o..o + h].copy_from_slice(hb);
                }
            }
            Cell::Gru { lbr } => {
                for b in 0..batch {
                    let Some(t) = time(k, b) else { continue };
                    let x = &dir.xw[(t * batch + b) * gh..][..gh];
                    let g = &mut zr[b * 2 * h..(b + 1) * 2 * h];
                    let rv = &rec[b * rec_cols..b * rec_cols + 2 * h];
                    for ((o, xv), rv) in g.iter_mut().zip(&x[..2 * h]).zip(rv) {
                        *o = xv + rv;
                    }
                    dir.acts[0].apply(g, s.clip);
                    if !lbr {
                        let hp = &hs[b * h..(b + 1) * h];
                        for ((o, r), hv) in rh[b * h..(b + 1) * h].iter_mut().zip(&g[h..]).zip(hp) {
                            *o = r * hv;
                        }
                    }
                }
                if !lbr {
                    rec_product(&rh, batch, dir.rt_h, h, h, &mut hh)?;
                }
                for b in 0..batch {
                    let Some(t) = time(k, b) else { continue };
                    let x = &dir.xw[(t * batch + b) * gh..][..gh];
                    let (z, r) = zr[b * 2 * h..(b + 1) * 2 * h].split_at(h);
                    let n = &mut gates[..h];
                    if lbr {
                        let hr = &rec[b * rec_cols + 2 * h..(b + 1) * rec_cols];
                        for i in 0..h {
                            n[i] = x[2 * h + i] + r[i] * (hr[i] + dir.rbh[i]);
                        }
                    } else {
                        let hr = &hh[b * h..(b + 1) * h];
                        for i in 0..h {
                            n[i] = x[2 * h + i] + hr[i];
                        }
                    }
                    dir.acts[1].apply(n, s.clip);
                    let hb = &mut hs[b * h..(b + 1) * h];
                    for i in 0..h {
                        hb[i] = (1.0 - z[i]) * n[i] + z[i] * hb[i];
                    }
                    let o = ((t * s.dirs + d) * batch + b) * h;
                    y[o..o + h].copy_from_slice(hb);
                }
            }
            Cell::Lstm { input_forget } => {
                for b in 0..batch {
                    let Some(t) = time(k, b) else { continue };
                    let x = &dir.xw[(t * batch + b) * gh..][..gh];
                    for ((o, xv), rv) in gates.iter_mut().zip(x).zip(&rec[b * gh..(b + 1) * gh]) {
                        *o = xv + rv;
                    }
                    let cb = &mut cs[b * h..(b + 1) * h];
                    let (i_g, rest) = gates.split_at_mut(h);
                    let (o_g, rest) = rest.split_at_mut(h);
                    let (f_g, c_g) = rest.split_at_mut(h);
                    if !dir.p.is_empty() {
                        let (pi, pf) = (&dir.p[..h], &dir.p[2 * h..]);
                        for j in 0..h {
                            i_g[j] += pi[j] * cb[j];
                            f_g[j] += pf[j] * cb[j];
                        }
                    }
                    dir.acts[0].apply(i_g, s.clip);
                    if input_forget {
                        f_g.iter_mut()
                            .zip(i_g.iter())
                            .for_each(|(f, i)| *f = 1.0 - i);
                    } else {
                        dir.acts[0].apply(f_g, s.clip);
                    }
                    dir.acts[1].apply(c_g, s.clip);
                    for j in 0..h {
                        cb[j] = f_g[j] * cb[j] + i_g[j] * c_g[j];
                    }
                    if !dir.p.is_empty() {
                        let po = &dir.p[h..2 * h];
                        for j in 0..h {
                            o_g[j] += po[j] * cb[j];
                        }
                    }
                    dir.acts[0].apply(o_g, s.clip);
                    // h(C_t), in the cell gate's slot (no longer needed).
                    c_g.copy_from_slice(cb);
                    dir.acts[2].apply(c_g, None);
                    let hb = &mut hs[b * h..(b + 1) * h];
                    for j in 0..h {
                        hb[j] = o_g[j] * c_g[j];
                    }
                    let o = ((t * s.dirs + d) * batch + b) * h;
                    y[o..o + h].copy_from_slice(hb);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{assert_close, data, node, rand_vals, run, t};
    use hb_ir::{Attr, Node};

    fn s(v: &str) -> Attr {
        Attr::String(v.into())
    }

    fn strs(v: &[&str]) -> Attr {
        Attr::Strings(v.iter().map(|x| x.to_string()).collect())
    }

    /// A 1-unit Relu RNN, `H = relu(w·x + r·H + 0.3)`: exact arithmetic.
    fn relu_rnn(direction: &str) -> Node {
        node(
            "RNN",
            vec![
                ("hidden_size", Attr::Int(1)),
                ("direction", s(direction)),
                ("activations", strs(&["Relu", "Relu"])),
            ],
        )
    }

    #[test]
    fn rnn_forward_and_reverse_by_hand() {
        let x = t(&[3, 1, 1], vec![1.0, 2.0, 3.0]);
        let w = t(&[1, 1, 1], vec![2.0]);
        let r = t(&[1, 1, 1], vec![0.5]);
        let b = t(&[1, 2], vec![0.1, 0.2]);
        let args = [Some(&x), Some(&w), Some(&r), Some(&b)];
        let out = run(rnn, &relu_rnn("forward"), 22, &args).unwrap();
        assert_eq!(out[0].shape(), &[3, 1, 1, 1]);
        assert_close(&data(&out[0]), &[2.3, 5.45, 9.025], 1e-6);
        assert_close(&data(&out[1]), &[9.025], 1e-6);
        // Reverse: x3 first; Y keeps time order, Y_h is the state after t = 0.
        let out = run(rnn, &relu_rnn("reverse"), 22, &args).unwrap();
        assert_close(&data(&out[0]), &[6.025, 7.45, 6.3], 1e-6);
        assert_close(&data(&out[1]), &[6.025], 1e-6);
    }

    #[test]
    fn rnn_bidirectional_stacks_both_directions() {
        let x = t(&[3, 1, 1], vec![1.0, 2.0, 3.0]);
        // Backward direction: H = relu(x + H).
        let w = t(&[2, 1, 1], vec![2.0, 1.0]);
        let r = t(&[2, 1, 1], vec![0.5, 1.0]);
        let b = t(&[2, 2], vec![0.1, 0.2, 0.0, 0.0]);
        let h0 = t(&[2, 1, 1], vec![0.0, 10.0]);
        let args = [Some(&x), Some(&w), Some(&r), Some(&b), None, Some(&h0)];
        let out = run(rnn, &relu_rnn("bidirectional"), 22, &args).unwrap();
        assert_eq!(out[0].shape(), &[3, 2, 1, 1]);
        // [t][dir]: forward 2.3, 5.45, 9.025; backward from 10: 16, 15, 13.
        assert_close(&data(&out[0]), &[2.3, 16.0, 5.45, 15.0, 9.025, 13.0], 1e-6);
        assert_close(&data(&out[1]), &[9.025, 16.0], 1e-6);
    }

    #[test]
    fn sequence_lens_zero_the_tail_and_stop_the_state() {
        // Batch 1 has length 2: its t = 2 input (100) must never be read.
        let x = t(&[3, 2, 1], vec![1.0, 1.0, 2.0, 1.0, 3.0, 100.0]);
        let w = t(&[1, 1, 1], vec![2.0]);
        let r = t(&[1, 1, 1], vec![0.5]);
        let b = t(&[1, 2], vec![0.1, 0.2]);
        let lens = Tensor::from_vec::<i32>(&[2], vec![3, 2]).unwrap();
        let args = [Some(&x), Some(&w), Some(&r), Some(&b), Some(&lens)];
        let out = run(rnn, &relu_rnn("forward"), 22, &args).unwrap();
        // [t][batch]
        assert_close(&data(&out[0]), &[2.3, 2.3, 5.45, 3.45, 9.025, 0.0], 1e-6);
        assert_close(&data(&out[1]), &[9.025, 3.45], 1e-6);
        // Reverse: batch 1 starts at its own last valid step (t = 1).
        let out = run(rnn, &relu_rnn("reverse"), 22, &args).unwrap();
        assert_close(&data(&out[0]), &[6.025, 3.45, 7.45, 2.3, 6.3, 0.0], 1e-6);
        assert_close(&data(&out[1]), &[6.025, 3.45], 1e-6);
        // Length 0: Y and Y_h zero, whatever the initial state.
        let lens0 = Tensor::from_vec::<i32>(&[2], vec![3, 0]).unwrap();
        let h0 = t(&[1, 2, 1], vec![0.0, 7.0]);
        let args = [
            Some(&x),
            Some(&w),
            Some(&r),
            Some(&b),
            Some(&lens0),
            Some(&h0),
        ];
        let out = run(rnn, &relu_rnn("forward"), 22, &args).unwrap();
        assert_close(&data(&out[0]), &[2.3, 0.0, 5.45, 0.0, 9.025, 0.0], 1e-6);
        assert_close(&data(&out[1]), &[9.025, 0.0], 1e-6);
    }

    #[test]
    fn gru_by_hand_both_reset_orders() {
        let x = t(&[2, 1, 1], vec![1.0, -2.0]);
        let w = t(&[1, 3, 1], vec![0.5, -0.4, 0.8]);
        let r = t(&[1, 3, 1], vec![0.3, 0.2, -0.6]);
        let b = t(&[1, 6], vec![0.1, 0.0, 0.2, 0.0, 0.1, -0.3]);
        let args = [Some(&x), Some(&w), Some(&r), Some(&b)];
        for (lbr, want) in [(0, [0.21415392, -0.5951494]), (1, [0.24894679, -0.5766535])] {
            let n = node(
                "GRU",
                vec![
                    ("hidden_size", Attr::Int(1)),
                    ("linear_before_reset", Attr::Int(lbr)),
                ],
            );
            let out = run(gru, &n, 22, &args).unwrap();
            assert_close(&data(&out[0]), &want, 1e-6);
            assert_close(&data(&out[1]), &want[1..], 1e-6);
        }
    }

    #[test]
    fn lstm_by_hand_with_peepholes_and_input_forget() {
        let x = t(&[2, 1, 1], vec![1.0, -2.0]);
        let w = t(&[1, 4, 1], vec![0.5, -0.4, 0.8, 0.3]);
        let r = t(&[1, 4, 1], vec![0.3, 0.2, -0.6, 0.7]);
        let b = t(&[1, 8], vec![0.1, 0.0, 0.2, -0.1, 0.0, 0.1, -0.3, 0.2]);
        let h0 = t(&[1, 1, 1], vec![0.1]);
        let c0 = t(&[1, 1, 1], vec![-0.2]);
        let p = t(&[1, 3], vec![0.25, -0.5, 0.4]);
        let args = [
            Some(&x),
            Some(&w),
            Some(&r),
            Some(&b),
            None,
            Some(&h0),
            Some(&c0),
            Some(&p),
        ];
        let cases = [
            (0, [0.062759206, -0.075216465], -0.10425794),
            (1, [0.083489105, 0.013297598], 0.018666497),
        ];
        for (input_forget, y, c) in cases {
            let n = node(
                "LSTM",
                vec![
                    ("hidden_size", Attr::Int(1)),
                    ("input_forget", Attr::Int(input_forget)),
                ],
            );
            let out = run(lstm, &n, 22, &args).unwrap();
            assert_eq!(out.len(), 3);
            assert_close(&data(&out[0]), &y, 1e-6);
            assert_close(&data(&out[1]), &y[1..], 1e-6);
            assert_close(&data(&out[2]), &[c], 1e-6);
        }
    }

    /// Swaps axes 0 and 1 of an f32 tensor of rank 3 or 4.
    fn swap_t(a: &Tensor) -> Tensor {
        let a = a.as_f32().unwrap();
        let mut perm: Vec<usize> = (0..a.ndim()).collect();
        perm.swap(0, 1);
        let p = a.view().permuted_axes(perm);
        Tensor::F32(p.as_standard_layout().into_owned())
    }

    #[test]
    fn layout_1_matches_layout_0_transposed() {
        let (seq, batch, inp, h) = (4, 3, 5, 2);
        let x = t(&[seq, batch, inp], rand_vals(seq * batch * inp, 1));
        let w = t(&[2, 4 * h, inp], rand_vals(8 * h * inp, 2));
        let r = t(&[2, 4 * h, h], rand_vals(8 * h * h, 3));
        let b = t(&[2, 8 * h], rand_vals(16 * h, 4));
        let lens = Tensor::from_vec::<i32>(&[batch], vec![4, 2, 3]).unwrap();
        let h0 = t(&[2, batch, h], rand_vals(2 * batch * h, 5));
        let c0 = t(&[2, batch, h], rand_vals(2 * batch * h, 6));
        let p = t(&[2, 3 * h], rand_vals(6 * h, 7));
        let attrs = |layout: i64| {
            vec![
                ("hidden_size", Attr::Int(h as i64)),
                ("direction", s("bidirectional")),
                ("layout", Attr::Int(layout)),
            ]
        };
        let args0 = [
            Some(&x),
            Some(&w),
            Some(&r),
            Some(&b),
            Some(&lens),
            Some(&h0),
            Some(&c0),
            Some(&p),
        ];
        let out0 = run(lstm, &node("LSTM", attrs(0)), 22, &args0).unwrap();
        let (x1, h1, c1) = (swap_t(&x), swap_t(&h0), swap_t(&c0));
        let args1 = [
            Some(&x1),
            Some(&w),
            Some(&r),
            Some(&b),
            Some(&lens),
            Some(&h1),
            Some(&c1),
            Some(&p),
        ];
        let out1 = run(lstm, &node("LSTM", attrs(1)), 22, &args1).unwrap();
        // Y: [seq, dirs, batch, H] vs [batch, seq, dirs, H].
        let y0 = out0[0].as_f32().unwrap();
        let y1 = out1[0].as_f32().unwrap();
        assert_eq!(y1.shape(), &[batch, seq, 2, h]);
        let y0p = y0.view().permuted_axes(vec![2, 0, 1, 3]);
        assert_eq!(
            y0p.as_standard_layout().as_slice().unwrap(),
            y1.as_slice().unwrap()
        );
        for k in 1..3 {
            assert_eq!(out1[k].shape(), &[batch, 2, h]);
            assert_eq!(data(&swap_t(&out0[k])), data(&out1[k]));
        }
        // Batch 1 (length 2) is zero past t = 1 in both directions.
        for tt in 2..seq {
            assert!(y1
                .slice(ndarray::s![1, tt, .., ..])
                .iter()
                .all(|&v| v == 0.0));
        }
    }

    #[test]
    fn large_batches_match_one_entry_at_a_time() {
        // Batch 11 takes the sgemm path of the step product, batch 1 the
        // row updates; GRU both reset orders, LSTM, RNN.
        let (seq, batch, inp, h) = (4, 11, 3, 5);
        let lens: Vec<i32> = (0..batch as i32).map(|b| 1 + b % seq as i32).collect();
        for (op, g, extra) in [("GRU", 3, 0), ("GRU", 3, 1), ("LSTM", 4, 0), ("RNN", 1, 0)] {
            let f = match op {
                "GRU" => gru as crate::registry::KernelFn,
                "LSTM" => lstm,
                _ => rnn,
            };
            let n = node(
                op,
                vec![
                    ("hidden_size", Attr::Int(h as i64)),
                    ("direction", s("bidirectional")),
                    ("linear_before_reset", Attr::Int(extra)),
                ],
            );
            let x = t(&[seq, batch, inp], rand_vals(seq * batch * inp, 11));
            let w = t(&[2, g * h, inp], rand_vals(2 * g * h * inp, 12));
            let r = t(&[2, g * h, h], rand_vals(2 * g * h * h, 13));
            let b = t(&[2, 2 * g * h], rand_vals(4 * g * h, 14));
            let l = Tensor::from_vec::<i32>(&[batch], lens.clone()).unwrap();
            let h0 = t(&[2, batch, h], rand_vals(2 * batch * h, 15));
            let all = run(
                f,
                &n,
                22,
                &[Some(&x), Some(&w), Some(&r), Some(&b), Some(&l), Some(&h0)],
            )
            .unwrap();
            let (xa, ha) = (x.as_f32().unwrap(), h0.as_f32().unwrap());
            for (e, &len) in lens.iter().enumerate() {
                let xe = Tensor::F32(
                    xa.slice(ndarray::s![.., e..e + 1, ..])
                        .to_owned()
                        .into_dyn(),
                );
                let he = Tensor::F32(
                    ha.slice(ndarray::s![.., e..e + 1, ..])
                        .to_owned()
                        .into_dyn(),
                );
                let le = Tensor::from_vec::<i32>(&[1], vec![len]).unwrap();
                let one = run(
                    f,
                    &n,
                    22,
                    &[
                        Some(&xe),
                        Some(&w),
                        Some(&r),
                        Some(&b),
                        Some(&le),
                        Some(&he),
                    ],
                )
                .unwrap();
                let ya = all[0]
                    .as_f32()
                    .unwrap()
                    .slice(ndarray::s![.., .., e, ..])
                    .to_owned();
                assert_close(ya.as_slice().unwrap(), &data(&one[0]), 1e-5);
                let yh = all[1]
                    .as_f32()
                    .unwrap()
                    .slice(ndarray::s![.., e, ..])
                    .to_owned();
                assert_close(yh.as_slice().unwrap(), &data(&one[1]), 1e-5);
            }
        }
    }

    #[test]
    fn activations_take_alpha_and_beta_in_order() {
        // Backward direction reuses a forward-only list; LeakyRelu takes
        // the first alpha, Affine the second alpha and the first beta.
        let x = t(&[1, 1, 1], vec![-1.0]);
        let w = t(&[2, 1, 1], vec![1.0, 1.0]);
        let r = t(&[2, 1, 1], vec![0.0, 0.0]);
        let args = [Some(&x), Some(&w), Some(&r)];
        let n = node(
            "RNN",
            vec![
                ("hidden_size", Attr::Int(1)),
                ("direction", s("bidirectional")),
                ("activations", strs(&["LeakyRelu", "affine"])),
                ("activation_alpha", Attr::Floats(vec![0.5, 3.0])),
                ("activation_beta", Attr::Floats(vec![0.25])),
            ],
        );
        let out = run(rnn, &n, 22, &args).unwrap();
        assert_close(&data(&out[1]), &[-0.5, -2.75], 1e-6);
        // Clip bounds the activation input.
        let mut n = relu_rnn("forward");
        n.set_attr("activations", strs(&["Affine"]));
        n.set_attr("clip", Attr::Float(0.75));
        let x = t(&[1, 1, 1], vec![-3.0]);
        let w1 = t(&[1, 1, 1], vec![1.0]);
        let r1 = t(&[1, 1, 1], vec![0.0]);
        let out = run(rnn, &n, 22, &[Some(&x), Some(&w1), Some(&r1)]).unwrap();
        assert_close(&data(&out[0]), &[-0.75], 1e-6);
    }

    #[test]
    fn bad_attributes_and_shapes_are_errors() {
        let x = t(&[2, 1, 3], rand_vals(6, 1));
        let w = t(&[1, 3 * 4, 3], rand_vals(36, 2));
        let r = t(&[1, 3 * 4, 4], rand_vals(48, 3));
        let args = [Some(&x), Some(&w), Some(&r)];
        let err = |attrs: Vec<(&str, Attr)>, args: &[Option<&Tensor>]| {
            run(gru, &node("GRU", attrs), 22, args)
                .unwrap_err()
                .to_string()
        };
        assert!(run(gru, &node("GRU", vec![]), 22, &args).is_ok());
        assert!(err(vec![("direction", s("sideways"))], &args).contains("direction"));
        assert!(err(vec![("hidden_size", Attr::Int(5))], &args).contains("hidden_size"));
        assert!(err(vec![("layout", Attr::Int(2))], &args).contains("layout"));
        assert!(err(vec![("clip", Attr::Float(-1.0))], &args).contains("clip"));
        assert!(err(vec![("activations", strs(&["Sigmoid", "Cube"]))], &args).contains("Cube"));
        assert!(err(vec![("activations", strs(&["Sigmoid"]))], &args).contains("activations"));
        // Bidirectional needs two directions of weights.
        assert!(err(vec![("direction", s("bidirectional"))], &args).contains("W"));
        // Input size mismatch.
        let x4 = t(&[2, 1, 4], rand_vals(8, 1));
        assert!(err(vec![], &[Some(&x4), Some(&w), Some(&r)]).contains("W"));
        let b = t(&[1, 5], rand_vals(5, 1));
        assert!(err(vec![], &[Some(&x), Some(&w), Some(&r), Some(&b)]).contains("B"));
        let lens = Tensor::from_vec::<i32>(&[1], vec![3]).unwrap();
        let lens_arg = [Some(&x), Some(&w), Some(&r), None, Some(&lens)];
        assert!(err(vec![], &lens_arg).contains("sequence_lens"));
        let h0 = t(&[1, 2, 4], rand_vals(8, 1));
        let h0_arg = [Some(&x), Some(&w), Some(&r), None, None, Some(&h0)];
        assert!(err(vec![], &h0_arg).contains("initial_h"));
        assert!(err(vec![], &[Some(&x), Some(&w)]).contains("missing"));
        let extra = [Some(&x), Some(&w), Some(&r), None, None, None, Some(&x)];
        assert!(err(vec![], &extra).contains("6 inputs"));
        let x2 = t(&[2, 3], rand_vals(6, 1));
        assert!(err(vec![], &[Some(&x2), Some(&w), Some(&r)]).contains("3-D"));
    }
}
