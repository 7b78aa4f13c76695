//! [`PackedWeights`]: constant weights in micro-kernel layout, with the
//! bias, the requantisation and the K-blocking folded in.

use super::{FastIn, IntKind, Isa, PackOptions};
use crate::error::{BpuError, Result};
use crate::fixed_point::Requant;
use crate::reference::conv::ConvParams;
use crate::reference::matmul::GemmParams;
use crate::shape_err;
use crate::tensor::{numel, TensorRef};

/// Columns per weight panel (two 16-lane AVX-512 vectors, four AVX2 ones).
pub(crate) const NR: usize = 32;

/// The element layout of a weight panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `[K/4][NR][4]` i8 (VNNI `vpdpbusd`), activations as `x + 128` u8.
    I8x4,
    /// `[K/2][NR][2]` i16 (`vpdpwssd`, `vpmaddwd`, scalar), activations i16.
    I16x2,
}

impl Layout {
    /// K elements per group (one 32-bit lane of an activation row).
    pub(crate) fn group(self) -> usize {
        match self {
            Layout::I8x4 => 4,
            Layout::I16x2 => 2,
        }
    }
}

/// The node a [`PackedWeights`] was made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpInfo {
    Conv {
        params: ConvParams,
        /// Input channels.
        c_in: usize,
        /// Output channels.
        m: usize,
        /// Kernel spatial shape.
        kernel: Vec<usize>,
        /// Packed K elements per kernel tap: `C_g`, or `C_g` rounded up to
        /// the layout's group (zero weights in the gap) when the conv runs
        /// as an implicit GEMM ([`PackedWeights::implicit_conv`]).
        tap_stride: usize,
    },
    MatMul {
        /// The shape of the constant operand B (`[…, K, N]` or `[K]`).
        b_shape: Vec<usize>,
    },
    Gemm {
        trans_a: bool,
    },
}

/// Constant weights of one Conv / MatMul / Gemm node, packed for the
/// micro-kernel of one [`Isa`], with everything the epilogue needs: bias
/// (and Gemm's `C`), per-channel requantisation, column sums for the
/// unsigned-activation trick, the K-blocks that keep i32 sums exact, and an
/// optional fused clamp. Made once per node; read-only afterwards (share it
/// between threads freely).
#[derive(Debug, Clone)]
pub struct PackedWeights {
    pub(crate) isa: Isa,
    pub(crate) layout: Layout,
    pub(crate) x_kind: IntKind,
    /// Independent weight matrices (conv groups, MatMul batches of B).
    pub(crate) groups: usize,
    /// Logical K per group.
    pub(crate) k: usize,
    /// K rounded up to the layout's group.
    pub(crate) kp: usize,
    /// Columns (output channels) per group.
    pub(crate) n: usize,
    /// Panels per group.
    pub(crate) panels: usize,
    pub(crate) w8: Vec<i8>,
    pub(crate) w16: Vec<i16>,
    /// K-blocks, in K-groups `[start, end)`.
    pub(crate) blocks: Vec<(usize, usize)>,
    /// int16 activations run as two i16 GEMMs on `x >> 8` and `x & 255`
    /// (combined as `256 · hi + lo` in i64), which keeps K-blocks long.
    pub(crate) split: bool,
    /// `128 · Σ_block w` per block and padded column (VNNI), else zeros.
    pub(crate) corr: Vec<i32>,
    /// `Σ_block w` per block and padded column (`I8x4`; wrapping): the
    /// correction of any other activation offset is `offset · colsum`.
    pub(crate) colsum: Vec<i32>,
    /// Per padded column (`groups · panels · NR`).
    pub(crate) bias: Vec<i64>,
    pub(crate) mult: Vec<i64>,
    pub(crate) rnd: Vec<i64>,
    pub(crate) shift: Vec<i64>,
    pub(crate) fast_col: Vec<bool>,
    pub(crate) requant: Vec<Requant>,
    /// Per panel: every column requantises in i64.
    pub(crate) panel_fast: Vec<bool>,
    /// The epilogue tables of the fast panels in the even/odd order of the
    /// AVX-512 epilogue.
    pub(crate) even_odd: EvenOdd,
    /// Gemm `C` varying along M: `[rows, n]`.
    pub(crate) addend: Option<(usize, Vec<i64>)>,
    pub(crate) clamp: Option<(i64, i64)>,
    pub(crate) op: OpInfo,
    /// Conv with one input channel per group: weights `[M][taps]` for the
    /// direct kernel, and whether its sums need i64.
    pub(crate) dw: Option<(Vec<i32>, bool)>,
    /// A second requantisation folded into the epilogue
    /// ([`PackedWeights::fold_requant`]).
    pub(crate) then: Option<Then>,
}

/// A requantisation applied to the epilogue's (clamped) result:
/// `clamp((y · mult + rnd) >> shift, lo, hi)` per padded column, exact in
/// i64 (|y| < 2^31, |mult| < 2^31, shift ≤ 62).
#[derive(Debug, Clone)]
pub(crate) struct Then {
    pub mult: Vec<i64>,
    pub rnd: Vec<i64>,
    pub shift: Vec<i64>,
    pub lo: i64,
    pub hi: i64,
    /// `mult`, `rnd` and `shift` in the even/odd order of [`EvenOdd`].
    pub even_odd: [Vec<i64>; 3],
}

/// The per-column epilogue tables in the order the AVX-512 epilogue reads
/// them: it multiplies the even and the odd i32 sums of 16 columns apart
/// (`vpmuldq`, 32 × 32 → 64 bits), so each 16-column run of a table holds
/// its 8 even columns, then its 8 odd ones ([`deinterleave16`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct EvenOdd {
    /// The requantisation multiplier (|M| < 2^31).
    pub mult: Vec<i64>,
    /// `bias · M + rnd`: the bias and the rounding term in one addend
    /// (exact in i64 on fast columns, which the static bound checked).
    pub add: Vec<i64>,
    pub shift: Vec<i64>,
}

/// Reorders each run of 16 values as its even-indexed then its odd-indexed
/// ones (`v.len()` a multiple of 16; panels are 32 columns).
pub(crate) fn deinterleave16(v: &[i64]) -> Vec<i64> {
    v.chunks(16)
        .flat_map(|c| c.iter().step_by(2).chain(c.iter().skip(1).step_by(2)))
        .copied()
        .collect()
}

/// Everything `pack_core` needs about one node.
struct Spec<'f> {
    isa: Isa,
    layout: Layout,
    x_kind: IntKind,
    groups: usize,
    k: usize,
    n: usize,
    /// `w(g, k, c)` as i16.
    w: &'f dyn Fn(usize, usize, usize) -> i16,
    /// Bias of column `c` (0-based in the group) of group `g`.
    bias: &'f dyn Fn(usize, usize) -> i64,
    requant: &'f [Requant],
    /// Conv: channel `g · n + c` has its own requantisation; MatMul
    /// batches share the `n` column requantisations.
    requant_per_group: bool,
    addend: Option<(usize, Vec<i64>)>,
    clamp: Option<(i64, i64)>,
    op: OpInfo,
}

fn resolve_isa(opts: &PackOptions) -> Result<Isa> {
    let isa = opts.isa.unwrap_or_else(Isa::detect);
    if !isa.is_available() {
        return Err(BpuError::Unsupported(format!(
            "instruction set {} is not available on this CPU",
            isa.name()
        )));
    }
    if let Some((lo, hi)) = opts.clamp {
        if lo > hi {
            return Err(BpuError::Param(format!("clamp bounds {lo} > {hi}")));
        }
    }
    Ok(isa)
}

/// The packed layout: `I8x4` (`vpdpbusd`) for int8 weights with int8
/// activations, and — for a Conv (`narrow_u8`) — with narrow int16
/// activations too, which the call offsets into `u8` (their span, with 0,
/// is at most 255: asymmetric-uint8 features); else `I16x2`.
fn layout_for(isa: Isa, x: IntKind, w: IntKind, narrow_u8: bool) -> Layout {
    let x_ok = x == IntKind::I8 || (narrow_u8 && x == IntKind::I16Narrow);
    if isa == Isa::Avx512Vnni && x_ok && w == IntKind::I8 {
        Layout::I8x4
    } else {
        Layout::I16x2
    }
}

fn check_requant(requant: &[Requant], channels: usize) -> Result<()> {
    if requant.len() != 1 && requant.len() != channels {
        return Err(shape_err!(
            "{} requantisations for {channels} channels (need 1 or {channels})",
            requant.len()
        ));
    }
    Ok(())
}

impl PackedWeights {
    /// Packs a Conv's weights `w` `[M, C/group, K…]` (any spatial rank ≥ 1)
    /// with its optional bias (`M` values at the accumulator scale) and
    /// requantisation (1 or `M` entries) for activations of type `x_kind`.
    /// The result runs with [`super::conv_into`] exactly as
    /// [`crate::reference::conv::conv`] followed by the optional clamp.
    pub fn conv<W: FastIn>(
        w: TensorRef<'_, W>,
        bias: Option<&[i64]>,
        requant: &[Requant],
        p: &ConvParams,
        x_kind: IntKind,
        opts: &PackOptions,
    ) -> Result<PackedWeights> {
        let isa = resolve_isa(opts)?;
        let ws = w.shape();
        if ws.len() < 3 {
            return Err(shape_err!("conv weight {ws:?} needs rank ≥ 3"));
        }
        let r = ws.len() - 2;
        check_params(p, r)?;
        let (m, cg) = (ws[0], ws[1]);
        let g = p.group;
        if m % g != 0 {
            return Err(shape_err!("conv weight {ws:?} and group {g} do not fit"));
        }
        let kernel = ws[2..].to_vec();
        if kernel.contains(&0) {
            return Err(shape_err!("conv kernel {kernel:?} has an empty dim"));
        }
        if let Some(b) = bias {
            if b.len() != m {
                return Err(shape_err!(
                    "bias has {} values for {m} output channels",
                    b.len()
                ));
            }
        }
        check_requant(requant, m)?;
        let taps = numel(&kernel)?;
        let mg = m / g;
        let wd = w.data();
        let layout = layout_for(isa, x_kind, W::KIND, true);
        // Implicit GEMM (AVX-512 VNNI, one K pass per int16 value): each tap
        // reads its channels straight from the padded channels-last input,
        // so a tap's K run is rounded up to whole K-groups.
        let implicit = isa == Isa::Avx512Vnni && x_kind != IntKind::I16 && cg > 1;
        let tap_stride = if implicit {
            cg.next_multiple_of(layout.group())
        } else {
            cg
        };
        // Packed K order: k = tap · tap_stride + ci (the im2col row order).
        let wf = |gi: usize, k: usize, c: usize| -> i16 {
            let (tap, ci) = (k / tap_stride, k % tap_stride);
            if ci >= cg {
                return 0;
            }
            wd[((gi * mg + c) * cg + ci) * taps + tap].to_i16()
        };
        let bf = |gi: usize, c: usize| bias.map_or(0, |b| b[gi * mg + c]);
        let c_in = cg
            .checked_mul(g)
            .ok_or_else(|| shape_err!("conv channels overflow"))?;
        let dw = (cg == 1).then(|| {
            let wv: Vec<i32> = wd.iter().map(|v| i32::from(v.to_i16())).collect();
            let wide = wv.chunks(taps).any(|ch| {
                x_kind.max_abs() * ch.iter().map(|&v| i64::from(v).abs()).sum::<i64>()
                    > i64::from(i32::MAX)
            });
            (wv, wide)
        });
        let mut pw = pack_core(Spec {
            isa,
            layout,
            x_kind,
            groups: g,
            k: tap_stride * taps,
            n: mg,
            w: &wf,
            bias: &bf,
            requant,
            requant_per_group: true,
            addend: None,
            clamp: opts.clamp,
            op: OpInfo::Conv {
                params: p.clone(),
                c_in,
                m,
                kernel,
                tap_stride,
            },
        })?;
        pw.dw = dw;
        Ok(pw)
    }

    /// Packs the constant right operand `b` (`[…, K, N]` or `[K]`) of a
    /// MatMul with its optional bias (`N` values) and requantisation (1 or
    /// `N` entries); runs with [`super::matmul_into`] exactly as
    /// [`crate::reference::matmul::matmul`] (batch dims broadcast).
    pub fn matmul<W: FastIn>(
        b: TensorRef<'_, W>,
        bias: Option<&[i64]>,
        requant: &[Requant],
        x_kind: IntKind,
        opts: &PackOptions,
    ) -> Result<PackedWeights> {
        let isa = resolve_isa(opts)?;
        let sb = b.shape();
        let (batch, k, n) = match sb.len() {
            0 => return Err(shape_err!("matmul of a scalar operand")),
            1 => (1, sb[0], 1),
            r => (numel(&sb[..r - 2])?, sb[r - 2], sb[r - 1]),
        };
        if let Some(bs) = bias {
            if bs.len() != n {
                return Err(shape_err!(
                    "bias has {} values for {n} output channels",
                    bs.len()
                ));
            }
        }
        check_requant(requant, n)?;
        let bd = b.data();
        let wf = |g: usize, kk: usize, c: usize| bd[(g * k + kk) * n + c].to_i16();
        let bf = |_g: usize, c: usize| bias.map_or(0, |b| b[c]);
        pack_core(Spec {
            isa,
            layout: layout_for(isa, x_kind, W::KIND, false),
            x_kind,
            groups: batch,
            k,
            n,
            w: &wf,
            bias: &bf,
            requant,
            requant_per_group: false,
            addend: None,
            clamp: opts.clamp,
            op: OpInfo::MatMul {
                b_shape: sb.to_vec(),
            },
        })
    }

    /// Packs a Gemm's constant `B` (2-D, `transB` applied here) and its
    /// quantized `C` (unidirectionally broadcast to `[M, N]`; a `C` that
    /// varies along M fixes M) with the requantisation (1 or `N` entries);
    /// runs with [`super::gemm_into`] exactly as
    /// [`crate::reference::matmul::gemm`].
    pub fn gemm<W: FastIn>(
        b: TensorRef<'_, W>,
        c: Option<TensorRef<'_, i64>>,
        requant: &[Requant],
        p: GemmParams,
        x_kind: IntKind,
        opts: &PackOptions,
    ) -> Result<PackedWeights> {
        let isa = resolve_isa(opts)?;
        let sb = b.shape();
        if sb.len() != 2 {
            return Err(shape_err!("gemm needs a 2-D B: {sb:?}"));
        }
        let (k, n) = if p.trans_b {
            (sb[1], sb[0])
        } else {
            (sb[0], sb[1])
        };
        check_requant(requant, n)?;
        let mut col_bias = vec![0i64; n];
        let mut addend = None;
        if let Some(ct) = c {
            let cs = ct.shape();
            if cs.len() > 2 {
                return Err(shape_err!("gemm C {cs:?} has more than 2 dims"));
            }
            let cm = if cs.len() == 2 { cs[0] } else { 1 };
            let cn = cs.last().copied().unwrap_or(1);
            if cn != n && cn != 1 {
                return Err(shape_err!("gemm C {cs:?} does not broadcast to N = {n}"));
            }
            let at = |i: usize, j: usize| ct.data()[i * cn + if cn == 1 { 0 } else { j }];
            if cm == 1 {
                for (j, v) in col_bias.iter_mut().enumerate() {
                    *v = at(0, j);
                }
            } else {
                let mut a = Vec::with_capacity(cm * n);
                for i in 0..cm {
                    for j in 0..n {
                        a.push(at(i, j));
                    }
                }
                addend = Some((cm, a));
            }
        }
        let bd = b.data();
        let wf = |_g: usize, kk: usize, c: usize| {
            if p.trans_b {
                bd[c * k + kk]
            } else {
                bd[kk * n + c]
            }
            .to_i16()
        };
        let bf = |_g: usize, c: usize| col_bias[c];
        pack_core(Spec {
            isa,
            layout: layout_for(isa, x_kind, W::KIND, false),
            x_kind,
            groups: 1,
            k,
            n,
            w: &wf,
            bias: &bf,
            requant,
            requant_per_group: false,
            addend,
            clamp: opts.clamp,
            op: OpInfo::Gemm { trans_a: p.trans_a },
        })
    }

    /// The instruction-set path the weights were packed for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The activation type the packed node expects.
    pub fn x_kind(&self) -> IntKind {
        self.x_kind
    }

    /// Bytes held by the packed weights and tables.
    pub fn size_bytes(&self) -> usize {
        self.w8.len()
            + 2 * self.w16.len()
            + 4 * self.corr.len()
            + 8 * (self.bias.len() * 4)
            + 8 * (self.even_odd.mult.len() * 3)
            + self.addend.as_ref().map_or(0, |a| 8 * a.1.len())
    }

    /// Folds the step that follows the op into the epilogue: `y ←
    /// clamp(R_c(y), lo, hi)` with one requantisation or one per output
    /// channel (Conv) / column (MatMul, Gemm), `[lo, hi]` inside the output
    /// type (so saturation then clamp is one clamp). This is exactly the
    /// engine's in-place rescale of the output, done while the values are
    /// in registers. Returns false (weights unchanged) when a
    /// requantisation cannot be evaluated exactly in i64, the counts do not
    /// match, or a step is already folded.
    pub fn fold_requant(&mut self, requant: &[Requant], lo: i64, hi: i64) -> bool {
        let per_group = matches!(self.op, OpInfo::Conv { .. });
        let channels = if per_group {
            self.groups * self.n
        } else {
            self.n
        };
        if self.then.is_some()
            || lo > hi
            || (requant.len() != 1 && requant.len() != channels)
            || requant.iter().any(|r| r.shift() > 62)
        {
            return false;
        }
        let cols = self.bias.len();
        let mut t = Then {
            mult: vec![0; cols],
            rnd: vec![0; cols],
            shift: vec![0; cols],
            lo,
            hi,
            even_odd: Default::default(),
        };
        for g in 0..self.groups {
            for c in 0..self.n {
                let col = g * self.panels * NR + c;
                let rq = requant[if requant.len() == 1 {
                    0
                } else if per_group {
                    g * self.n + c
                } else {
                    c
                }];
                let n = rq.shift();
                t.mult[col] = i64::from(rq.multiplier());
                t.shift[col] = i64::from(n);
                t.rnd[col] = if n == 0 { 0 } else { 1i64 << (n - 1) };
            }
        }
        t.even_odd = [&t.mult, &t.rnd, &t.shift].map(|v| deinterleave16(v));
        self.then = Some(t);
        true
    }

    /// Index of the first element of panel `p` of group `g`.
    #[inline]
    pub(crate) fn panel_offset(&self, g: usize, p: usize) -> usize {
        (g * self.panels + p) * self.kp * NR
    }

    /// Whether narrow int16 activations with values in `[lo, hi]` run on
    /// these weights: always for the `I16x2` narrow packing (`[−256,
    /// 256]`); for the `I8x4` one the values and 0 must span at most 255
    /// (they are offset into `u8`).
    pub fn takes_narrow_range(&self, lo: i64, hi: i64) -> bool {
        match (self.x_kind, self.layout) {
            (IntKind::I16Narrow, Layout::I8x4) => hi.max(0) - lo.min(0) <= 255,
            (IntKind::I16Narrow, _) => lo >= -256 && hi <= 256,
            _ => false,
        }
    }

    /// For a Conv packed for the implicit GEMM (AVX-512 VNNI, not split,
    /// each tap's K run a whole number of K-groups): the packed K elements
    /// per tap. The kernel then reads every tap's channels straight from
    /// the padded channels-last input instead of an im2col copy.
    pub(crate) fn implicit_conv(&self) -> Option<usize> {
        match &self.op {
            OpInfo::Conv { tap_stride, .. }
                if self.isa == Isa::Avx512Vnni
                    && !self.split
                    && *tap_stride % self.layout.group() == 0 =>
            {
                Some(*tap_stride)
            }
            _ => None,
        }
    }
}

/// Checks ConvParams against `r` spatial dims (as the reference does).
pub(crate) fn check_params(p: &ConvParams, r: usize) -> Result<()> {
    if p.strides.len() != r
        || p.dilations.len() != r
        || p.pads.len() != 2 * r
        || p.output_padding.len() != r
    {
        return Err(shape_err!(
            "conv attributes do not match {r} spatial dims: {p:?}"
        ));
    }
    if p.strides.contains(&0) || p.dilations.contains(&0) || p.group == 0 {
        return Err(shape_err!("conv strides, dilations and group must be ≥ 1"));
    }
    Ok(())
}

fn pack_core(s: Spec<'_>) -> Result<PackedWeights> {
    let gs = s.layout.group();
    let kq = s.k.div_ceil(gs);
    let kp = kq * gs;
    let panels = s.n.div_ceil(NR);
    let cols = s
        .groups
        .checked_mul(panels * NR)
        .ok_or_else(|| shape_err!("packed weights overflow"))?;
    let total = cols
        .checked_mul(kp)
        .ok_or_else(|| shape_err!("packed weights overflow"))?;
    let xmax = s.x_kind.max_abs();
    // Largest |activation| seen by one i32 block sum: split int16
    // activations are `x >> 8` ∈ [−128, 127] and `x & 255` ∈ [0, 255].
    let split = s.x_kind == IntKind::I16;
    let xblk = if split { 255 } else { xmax };
    // Σ|w| ≤ lim per block keeps every block sum inside i32; one K-group
    // holds at most 4 · 128 (i8) or 2 · 32768 (i16) ≤ lim.
    let lim = i64::from(i32::MAX) / xblk;

    let mut w8 = Vec::new();
    let mut w16 = Vec::new();
    match s.layout {
        Layout::I8x4 => w8.resize(total, 0i8),
        Layout::I16x2 => w16.resize(total, 0i16),
    }
    // Σ|w| per padded column over all K (static accumulator bound), and the
    // greedy K-blocks (in K-groups) keeping every block's Σ|w| ≤ lim.
    let mut abs_sum = vec![0i64; cols];
    let mut blocks = Vec::new();
    let mut run = vec![0i64; cols];
    let mut grp = vec![0i64; cols];
    let mut start = 0usize;
    for q in 0..kq {
        grp.iter_mut().for_each(|v| *v = 0);
        for g in 0..s.groups {
            for c in 0..s.n {
                let col = g * panels * NR + c;
                let (p, cc) = (c / NR, c % NR);
                let base = ((g * panels + p) * kq + q) * NR * gs + cc * gs;
                for e in 0..gs {
                    let kk = q * gs + e;
                    if kk >= s.k {
                        break;
                    }
                    let v = (s.w)(g, kk, c);
                    match s.layout {
                        Layout::I8x4 => w8[base + e] = v as i8,
                        Layout::I16x2 => w16[base + e] = v,
                    }
                    grp[col] += i64::from(v).abs();
                }
            }
        }
        let overflow = run.iter().zip(&grp).any(|(a, b)| a + b > lim);
        if overflow && q > start {
            blocks.push((start, q));
            start = q;
            run.iter_mut().for_each(|v| *v = 0);
        }
        for ((r, a), gv) in run.iter_mut().zip(abs_sum.iter_mut()).zip(&grp) {
            *r += gv;
            *a += gv;
        }
    }
    blocks.push((start, kq));

    // Column sums per block for the +128 trick.
    let mut corr = vec![0i32; blocks.len() * cols];
    let mut colsum = vec![0i32; blocks.len() * cols];
    if s.layout == Layout::I8x4 {
        for (bi, &(b0, b1)) in blocks.iter().enumerate() {
            for g in 0..s.groups {
                for p in 0..panels {
                    for cc in 0..NR {
                        let col = (g * panels + p) * NR + cc;
                        let mut sum = 0i32;
                        for q in b0..b1 {
                            let base = ((g * panels + p) * kq + q) * NR * 4 + cc * 4;
                            for e in 0..4 {
                                sum = sum.wrapping_add(i32::from(w8[base + e]));
                            }
                        }
                        corr[bi * cols + col] = sum.wrapping_mul(128);
                        colsum[bi * cols + col] = sum;
                    }
                }
            }
        }
    }

    // Epilogue tables.
    let mut bias = vec![0i64; cols];
    let mut mult = vec![0i64; cols];
    let mut rnd = vec![0i64; cols];
    let mut shift = vec![0i64; cols];
    let mut fast_col = vec![true; cols];
    let mut requant = vec![Requant::from_ratio(0.0)?; cols];
    let max_addend = |c: usize| -> i128 {
        s.addend.as_ref().map_or(0, |(rows, a)| {
            (0..*rows)
                .map(|i| i128::from(a[i * s.n + c]).abs())
                .max()
                .unwrap_or(0)
        })
    };
    for g in 0..s.groups {
        for c in 0..s.n {
            let col = g * panels * NR + c;
            let rq = s.requant[if s.requant.len() == 1 {
                0
            } else if s.requant_per_group {
                g * s.n + c
            } else {
                c
            }];
            let b = (s.bias)(g, c);
            bias[col] = b;
            requant[col] = rq;
            let bound =
                i128::from(b).abs() + max_addend(c) + i128::from(xmax) * i128::from(abs_sum[col]);
            let m = i128::from(rq.multiplier()).abs();
            let n = rq.shift();
            let (mm, nn, ok) = if n <= 62 {
                let half = if n == 0 { 0 } else { 1i128 << (n - 1) };
                (
                    i64::from(rq.multiplier()),
                    n,
                    bound * m + half <= i128::from(i64::MAX),
                )
            } else if bound * m < (1i128 << 62) {
                // |p| < 2^62 ≤ 2^(n−1): the rounded result is always 0.
                (0, 0, true)
            } else {
                (0, 0, false)
            };
            fast_col[col] = ok;
            if ok {
                mult[col] = mm;
                shift[col] = i64::from(nn);
                rnd[col] = if nn == 0 { 0 } else { 1i64 << (nn - 1) };
            }
        }
    }
    let panel_fast = (0..s.groups * panels)
        .map(|p| fast_col[p * NR..(p + 1) * NR].iter().all(|&f| f))
        .collect();
    // Wrapping: only fast columns read these, and their bound keeps
    // `bias · M + rnd` inside i64.
    let addend: Vec<i64> = (0..cols)
        .map(|c| bias[c].wrapping_mul(mult[c]).wrapping_add(rnd[c]))
        .collect();
    let even_odd = EvenOdd {
        mult: deinterleave16(&mult),
        add: deinterleave16(&addend),
        shift: deinterleave16(&shift),
    };

    Ok(PackedWeights {
        isa: s.isa,
        layout: s.layout,
        x_kind: s.x_kind,
        groups: s.groups,
        k: s.k,
        kp,
        n: s.n,
        panels,
        w8,
        w16,
        blocks,
        split,
        corr,
        bias,
        mult,
        rnd,
        shift,
        fast_col,
        requant,
        panel_fast,
        even_odd,
        addend: s.addend,
        clamp: s.clamp,
        op: s.op,
        dw: None,
        then: None,
        colsum,
    })
}
