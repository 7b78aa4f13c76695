//! Streaming statistics of one tensor over the calibration samples.
//!
//! Memory is fixed per tensor (a histogram, a few scalars and per-channel
//! extremes); it does not grow with the number of samples.
//!
//! Values that are not finite, or whose magnitude is at least
//! [`MASK_LIMIT`], are *mask values* (`-inf`, the lowest f32, `-1e9` as
//! exporters write attention masks): they are counted but never set a range.
//! A tensor may lower the negative side of that limit
//! ([`TensorStats::with_mask_limit`], for tensors that only reach a Softmax:
//! `crate::masks`).

use super::histogram::AbsHistogram;

pub use hb_float::kernels::horizon::MASK_LIMIT;

/// True for values that are masks, not data.
#[inline]
pub fn is_mask_value(x: f32) -> bool {
    x.is_nan() || x.abs() >= MASK_LIMIT
}

/// Statistics of one tensor.
#[derive(Debug, Clone)]
pub struct TensorStats {
    /// Smallest data value (mask values excluded); +inf when none seen.
    pub min: f32,
    /// Largest data value; -inf when none seen.
    pub max: f32,
    /// Histogram of |x| over data values.
    pub hist: AbsHistogram,
    /// Number of mask values (non-finite, |x| ≥ [`MASK_LIMIT`] or
    /// x ≤ −`mask_limit`).
    pub mask_values: u64,
    /// Magnitude from which a negative value is a mask ([`MASK_LIMIT`]
    /// unless lowered by [`TensorStats::with_mask_limit`]).
    pub mask_limit: f32,
    /// Number of NaN values (also counted in `mask_values`).
    pub nan: u64,
    /// Number of samples observed.
    pub samples: usize,
    /// Largest |x| per channel along `channel_axis` (empty when the rank
    /// has no channel axis).
    pub channel_absmax: Vec<f32>,
    /// The channel axis used for `channel_absmax`.
    pub channel_axis: usize,
    /// Sum of values (for the mean), data values only.
    pub sum: f64,
    /// Shape of the last sample.
    pub shape: Vec<usize>,
    /// Whether every sample so far was identical to the first (false when
    /// the check is off: [`TensorStats::without_constant_check`]).
    pub constant: bool,
    first: Option<Vec<f32>>,
    binned: bool,
    channels: bool,
}

/// Up to this many elements, a tensor keeps its first sample to tell
/// whether it is constant across samples.
const CONSTANT_CHECK_LIMIT: usize = 1 << 16;

/// The per-channel axis of an activation of rank `rank`: 1 for NCHW-like
/// tensors (rank ≥ 3 with rank 4 or more), else the last axis.
pub fn activation_channel_axis(rank: usize) -> usize {
    if rank >= 4 {
        1
    } else {
        rank.saturating_sub(1)
    }
}

/// Lane count of the statistics scan (one AVX-512 vector of f32).
const L: usize = 16;

/// Plain extremes, sums and zero counts of a block of whole 16-value
/// chunks (at most 256 values), mask values included, kept per lane (16
/// independent lanes in registers, so the loop vectorises and no
/// horizontal reduction runs per block).
struct BlockLanes {
    lo: [f32; L],
    hi: [f32; L],
    sum: [f32; L],
    zeros: [f32; L],
}

impl BlockLanes {
    /// Lanes that have seen nothing. Zero counts are kept as f32 (exact: a
    /// lane counts at most 16 values of a block), so every accumulator is a
    /// plain f32 vector: `x < lo ? x : lo` is one `minps`, the zero test a
    /// compare and a masked add.
    #[inline(always)]
    fn empty() -> Self {
        BlockLanes {
            lo: [f32::INFINITY; L],
            hi: [f32::NEG_INFINITY; L],
            sum: [0f32; L],
            zeros: [0f32; L],
        }
    }

    /// True when the block holds no mask value (NaN makes a lane's sum
    /// NaN; ±inf and |x| ≥ `MASK_LIMIT` show in the extremes). `neg_limit`
    /// is −`mask_limit` ≥ −`MASK_LIMIT` (the limit is capped), so it covers
    /// the negative side.
    #[inline(always)]
    fn clean(&self, neg_limit: f32) -> bool {
        let mut bad = false;
        for k in 0..L {
            bad |= self.sum[k].is_nan() | (self.lo[k] <= neg_limit) | (self.hi[k] >= MASK_LIMIT);
        }
        !bad
    }

    /// The block's largest |x| (0 for an empty block).
    #[inline(always)]
    fn absmax(&self) -> f32 {
        let mut m = [0f32; L];
        for (k, m) in m.iter_mut().enumerate() {
            // With lo ≤ hi, max(|lo|, |hi|) = max(−lo, hi).
            let (a, b) = (-self.lo[k], self.hi[k]);
            *m = if self.lo[k] > self.hi[k] {
                0.0
            } else if a > b {
                a
            } else {
                b
            };
        }
        m.iter().fold(0f32, |a, &b| if b > a { b } else { a })
    }
}

#[inline(always)]
fn scan_block(block: &[f32]) -> BlockLanes {
    let mut r = BlockLanes::empty();
    for c in block.chunks_exact(L) {
        let Ok(c) = <&[f32; L]>::try_from(c) else {
            continue;
        };
        for (k, &x) in c.iter().enumerate() {
            // NaN never wins a compare: it only shows in the sum.
            r.lo[k] = if x < r.lo[k] { x } else { r.lo[k] };
            r.hi[k] = if x > r.hi[k] { x } else { r.hi[k] };
            r.sum[k] += x;
            r.zeros[k] += if x == 0.0 { 1.0 } else { 0.0 };
        }
    }
    r
}

/// [`BlockLanes`] over the data values of a block that holds mask values
/// (NaN, `|x| ≥ MASK_LIMIT`, `x ≤ neg_limit`), with the masks and NaNs
/// counted per lane: branch-free, so it vectorises like [`scan_block`].
/// A block that is not whole 16-value chunks is padded with NaN; the
/// padding is taken back out of the counts.
struct MaskedLanes {
    data: BlockLanes,
    masks: [f32; L],
    nan: [f32; L],
}

impl MaskedLanes {
    /// Number of mask values in the block.
    fn masks(&self) -> u64 {
        self.masks.iter().map(|&c| c as u64).sum()
    }
}

#[inline(always)]
fn scan_masked_block(block: &[f32], neg_limit: f32) -> MaskedLanes {
    // Sums and counts as f32 lanes: a lane sees at most 16 values of a
    // 256-value block, so the counts are exact and the loop is plain f32
    // compares, blends and adds. The accumulators are locals (not fields
    // of the returned value) and a mask value enters the extremes as ±inf
    // and the sum as +0: every update is then a plain min/max/add, which
    // stays in registers (conditional updates of fields compiled to masked
    // stores to the stack, each stalling the next iteration's load).
    let mut lo = [f32::INFINITY; L];
    let mut hi = [f32::NEG_INFINITY; L];
    let mut sum = [0f32; L];
    let mut zeros = [0f32; L];
    let mut masks = [0f32; L];
    let mut nan = [0f32; L];
    const ONE: u32 = 0x3f80_0000; // 1.0f32
    let mut lanes_of = |c: &[f32; L]| {
        for (k, &x) in c.iter().enumerate() {
            let is_nan = x.is_nan();
            let mask = is_nan | (x.abs() >= MASK_LIMIT) | (x <= neg_limit);
            let low = if mask { f32::INFINITY } else { x };
            let high = if mask { f32::NEG_INFINITY } else { x };
            lo[k] = if low < lo[k] { low } else { lo[k] };
            hi[k] = if high > hi[k] { high } else { hi[k] };
            // Bit masks, not branches: `x` or +0 for the sum, 1 or 0 for
            // the counts.
            let data = u32::from(!mask).wrapping_neg();
            sum[k] += f32::from_bits(x.to_bits() & data);
            zeros[k] += f32::from_bits(ONE & data & u32::from(x == 0.0).wrapping_neg());
            masks[k] += f32::from_bits(ONE & !data);
            nan[k] += f32::from_bits(ONE & u32::from(is_nan).wrapping_neg());
        }
    };
    let body = block.chunks_exact(L);
    let tail = body.remainder();
    for c in body {
        if let Ok(c) = <&[f32; L]>::try_from(c) {
            lanes_of(c);
        }
    }
    if !tail.is_empty() {
        let mut last = [f32::NAN; L];
        last[..tail.len()].copy_from_slice(tail);
        lanes_of(&last);
        for k in tail.len()..L {
            masks[k] -= 1.0;
            nan[k] -= 1.0;
        }
    }
    MaskedLanes {
        data: BlockLanes { lo, hi, sum, zeros },
        masks,
        nan,
    }
}

/// Extremes, sums and counts of a tensor's data values, per lane (f64 sums
/// and counts: exact counts, one reduction per tensor).
struct RunningLanes {
    lo: [f32; L],
    hi: [f32; L],
    sum: [f64; L],
    zeros: [f64; L],
    masks: [f64; L],
    nan: [f64; L],
}

/// [`RunningLanes`] reduced over the lanes.
struct Reduced {
    lo: f32,
    hi: f32,
    sum: f64,
    zeros: u64,
    masks: u64,
    nan: u64,
}

impl RunningLanes {
    fn new() -> Self {
        RunningLanes {
            lo: [f32::INFINITY; L],
            hi: [f32::NEG_INFINITY; L],
            sum: [0f64; L],
            zeros: [0f64; L],
            masks: [0f64; L],
            nan: [0f64; L],
        }
    }

    #[inline(always)]
    fn merge(&mut self, b: &BlockLanes) {
        for k in 0..L {
            self.lo[k] = if b.lo[k] < self.lo[k] {
                b.lo[k]
            } else {
                self.lo[k]
            };
            self.hi[k] = if b.hi[k] > self.hi[k] {
                b.hi[k]
            } else {
                self.hi[k]
            };
            self.sum[k] += f64::from(b.sum[k]);
            self.zeros[k] += f64::from(b.zeros[k]);
        }
    }

    #[inline(always)]
    fn merge_masked(&mut self, m: &MaskedLanes) {
        self.merge(&m.data);
        for k in 0..L {
            self.masks[k] += f64::from(m.masks[k]);
            self.nan[k] += f64::from(m.nan[k]);
        }
    }

    fn reduce(&self) -> Reduced {
        let count = |v: &[f64; L]| v.iter().map(|&c| c as u64).sum::<u64>();
        Reduced {
            lo: self.lo.iter().fold(f32::INFINITY, |a, &b| a.min(b)),
            hi: self.hi.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)),
            sum: self.sum.iter().sum(),
            zeros: count(&self.zeros),
            masks: count(&self.masks),
            nan: count(&self.nan),
        }
    }
}

impl TensorStats {
    /// Empty statistics with a histogram of `bins` bins.
    pub fn new(bins: usize) -> Self {
        TensorStats {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            hist: AbsHistogram::new(bins),
            mask_values: 0,
            mask_limit: MASK_LIMIT,
            nan: 0,
            samples: 0,
            channel_absmax: Vec::new(),
            channel_axis: 0,
            sum: 0.0,
            shape: Vec::new(),
            constant: true,
            first: None,
            binned: true,
            channels: true,
        }
    }

    /// Statistics that keep everything but the |x| histogram's bins (count,
    /// largest |x| and zeros are still kept): for calibrations whose
    /// candidates never read the histogram (max / min-max only).
    pub fn without_histogram(bins: usize) -> Self {
        TensorStats {
            binned: false,
            ..TensorStats::new(bins)
        }
    }

    /// These statistics without the per-channel extremes
    /// (`channel_absmax` stays empty): for calibrations whose candidates are
    /// all per-tensor.
    pub fn without_channels(self) -> Self {
        TensorStats {
            channels: false,
            ..self
        }
    }

    /// These statistics without the check that every sample equals the
    /// first (`constant` stays false): it keeps a copy of the first sample,
    /// which only model inputs need (the constant-input finding).
    pub fn without_constant_check(self) -> Self {
        TensorStats {
            constant: false,
            ..self
        }
    }

    /// Whether the per-channel extremes are kept.
    pub fn has_channels(&self) -> bool {
        self.channels
    }

    /// These statistics with negative values at or below `-limit` counted
    /// as masks (`limit` is capped at [`MASK_LIMIT`]).
    pub fn with_mask_limit(self, limit: f32) -> Self {
        TensorStats {
            mask_limit: limit.min(MASK_LIMIT),
            ..self
        }
    }

    /// True when `x` is a mask value of this tensor.
    #[inline(always)]
    pub fn is_mask(&self, x: f32) -> bool {
        is_mask_value(x) || x <= -self.mask_limit
    }

    /// Whether the histogram's bins are filled.
    pub fn is_binned(&self) -> bool {
        self.binned
    }

    /// Observes one sample of the tensor (row-major data of `shape`).
    ///
    /// One pass over the data in blocks of 256 values: each block's
    /// min/max/sum/mask count is computed (16 lanes, vectorised) and, while
    /// the block is in L1, its data values go into the histogram.
    ///
    /// Compiled three times (baseline, AVX2 and AVX-512, picked at run
    /// time, bit-identical results: only the vector width differs).
    pub fn observe(&mut self, xs: &[f32], shape: &[usize]) {
        hb_float::multiversion! {
            fn observe_any(st: &mut TensorStats, xs: &[f32], shape: &[usize]) {
                st.observe_inline(xs, shape)
            }
        }
        observe_any(self, xs, shape)
    }

    #[inline(always)]
    fn observe_inline(&mut self, xs: &[f32], shape: &[usize]) {
        let neg_limit = -self.mask_limit;
        let mut run = RunningLanes::new();
        // Blocks of 256 values through the plain lane scan; a block holding
        // a mask value (or the tensor's last < 16 values) through the
        // masked scan, which skips and counts masks and NaNs. Attention
        // scores hold masks in most blocks: after a masked block the next
        // goes straight to the masked scan (same result, one pass).
        let mut last_masked = false;
        for block in xs.chunks(256) {
            if !last_masked && block.len() % L == 0 {
                let b = scan_block(block);
                if b.clean(neg_limit) {
                    run.merge(&b);
                    if self.binned {
                        // While the block is in L1.
                        self.hist.add_finite(block, b.absmax());
                    }
                    continue;
                }
            }
            let m = scan_masked_block(block, neg_limit);
            run.merge_masked(&m);
            let masks = m.masks();
            last_masked = masks > 0;
            if self.binned {
                self.bin_data_values(block, m.data.absmax(), masks);
            }
        }
        let r = run.reduce();
        let absmax = if r.lo <= r.hi {
            r.lo.abs().max(r.hi.abs())
        } else {
            0.0
        };
        if !self.binned {
            // Counts and the largest |x| are all an unbinned histogram
            // needs (its width depends on the largest |x| only).
            self.hist
                .add_unbinned(xs.len() as u64 - r.masks, absmax, r.zeros);
        }
        self.min = self.min.min(r.lo);
        self.max = self.max.max(r.hi);
        self.mask_values += r.masks;
        self.nan += r.nan;
        self.sum += r.sum;
        if self.channels {
            self.observe_channels(xs, shape);
        }
        self.observe_constant(xs);
        self.samples += 1;
        self.shape = shape.to_vec();
    }

    /// Bins the data values of `block` (which holds `masks` mask values),
    /// whose largest |x| is `absmax` (inlined into the multiversioned
    /// `observe`, so the binning is vector code).
    #[inline(always)]
    fn bin_data_values(&mut self, block: &[f32], absmax: f32, masks: u64) {
        if masks == 0 {
            self.hist.add_finite(block, absmax);
            return;
        }
        let mut data = [0f32; 256];
        let mut n = 0;
        for &x in block {
            if !self.is_mask(x) {
                data[n] = x;
                n += 1;
            }
        }
        self.hist.add_finite(&data[..n], absmax);
    }

    #[inline(always)]
    fn observe_channels(&mut self, xs: &[f32], shape: &[usize]) {
        if shape.len() < 2 {
            return;
        }
        let axis = activation_channel_axis(shape.len());
        let c = shape[axis];
        let inner: usize = shape[axis + 1..].iter().product();
        if self.channel_absmax.len() != c || self.channel_axis != axis {
            if self.samples > 0 && !self.channel_absmax.is_empty() {
                // The shape changed between samples: per-channel stats are meaningless.
                self.channel_absmax.clear();
                return;
            }
            self.channel_absmax = vec![0.0; c];
            self.channel_axis = axis;
        }
        if inner == 0 || c == 0 {
            return;
        }
        let neg_limit = -self.mask_limit;
        let data_abs = |x: f32| {
            if x.abs() < MASK_LIMIT && x > neg_limit {
                x.abs()
            } else {
                0.0
            }
        };
        if inner == 1 {
            // Channels are the last axis: rows of `c` values.
            // `data_abs` is never NaN, so a plain compare is the maximum.
            for row in xs.chunks_exact(c) {
                for (m, &x) in self.channel_absmax.iter_mut().zip(row) {
                    let a = data_abs(x);
                    *m = if a > *m { a } else { *m };
                }
            }
            return;
        }
        for (k, chunk) in xs.chunks(inner).enumerate() {
            let ch = k % c;
            // 16 independent maxima, so the loop vectorises.
            let mut lanes = [0f32; 16];
            let body = chunk.chunks_exact(16);
            let rest = body.remainder();
            for v in body {
                for (m, &x) in lanes.iter_mut().zip(v) {
                    let a = data_abs(x);
                    *m = if a > *m { a } else { *m };
                }
            }
            let m = rest
                .iter()
                .fold(lanes.iter().fold(0f32, |a, b| a.max(*b)), |m, x| {
                    m.max(data_abs(*x))
                });
            if m > self.channel_absmax[ch] {
                self.channel_absmax[ch] = m;
            }
        }
    }

    #[inline(always)]
    fn observe_constant(&mut self, xs: &[f32]) {
        if !self.constant {
            return;
        }
        match &self.first {
            None if self.samples == 0 && xs.len() <= CONSTANT_CHECK_LIMIT => {
                self.first = Some(xs.to_vec())
            }
            None => self.constant = false,
            Some(f) => {
                let same = f.len() == xs.len()
                    && f.iter()
                        .zip(xs)
                        .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
                if !same {
                    self.constant = false;
                    self.first = None;
                }
            }
        }
    }

    /// Merges the statistics of another shard of samples (same tensor, same
    /// number of bins). Exact for everything but `sum` (f64 addition order):
    /// min, max, the histogram (see [`AbsHistogram::merge`]), counts,
    /// per-channel extremes and the constant check give what one pass over
    /// both shards gives. `shape` is the other shard's when it saw samples.
    pub fn merge(&mut self, other: TensorStats) {
        if other.samples == 0 {
            return;
        }
        if self.samples == 0 {
            *self = other;
            return;
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.hist.merge(other.hist);
        self.mask_values += other.mask_values;
        self.nan += other.nan;
        self.sum += other.sum;
        if self.channel_axis == other.channel_axis
            && self.channel_absmax.len() == other.channel_absmax.len()
        {
            for (a, b) in self.channel_absmax.iter_mut().zip(&other.channel_absmax) {
                *a = a.max(*b);
            }
        } else {
            self.channel_absmax.clear();
        }
        self.constant = self.constant
            && other.constant
            && match (&self.first, &other.first) {
                (Some(a), Some(b)) => {
                    a.len() == b.len()
                        && a.iter()
                            .zip(b)
                            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
                }
                _ => false,
            };
        if !self.constant {
            self.first = None;
        }
        self.samples += other.samples;
        self.shape = other.shape;
    }

    /// Total number of data (non-mask) values.
    pub fn count(&self) -> u64 {
        self.hist.total
    }

    /// Largest |x| of the data values (0 when none).
    pub fn absmax(&self) -> f32 {
        self.hist.max
    }

    /// Mean of the data values.
    pub fn mean(&self) -> f64 {
        if self.hist.total == 0 {
            0.0
        } else {
            self.sum / self.hist.total as f64
        }
    }

    /// True when every data value seen was exactly zero.
    pub fn all_zero(&self) -> bool {
        self.hist.max == 0.0
    }

    /// Fraction of data values with |x| > `t` (what a threshold clips).
    pub fn clipped_fraction(&self, t: f64) -> f64 {
        let total = self.hist.total;
        if total == 0 {
            return 0.0;
        }
        let w = self.hist.width();
        if w == 0.0 {
            return 0.0;
        }
        let first = (t / w).floor() as usize;
        let above: u64 = self.hist.counts().iter().skip(first + 1).sum();
        above as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_block_scan_matches_a_plain_loop() {
        let neg_limit = -1e3f32;
        for len in [1usize, 7, 8, 9, 255, 256] {
            let block: Vec<f32> = (0..len)
                .map(|i| match i % 9 {
                    0 => f32::NEG_INFINITY,
                    1 => f32::NAN,
                    2 => -2e3,
                    3 => 0.0,
                    4 => 2e9,
                    _ => (i as f32 * 0.37).sin() * 5.0,
                })
                .collect();
            let mut run = RunningLanes::new();
            run.merge_masked(&scan_masked_block(&block, neg_limit));
            let m = run.reduce();
            let is_mask = |x: f32| is_mask_value(x) || x <= neg_limit;
            let data: Vec<f32> = block.iter().copied().filter(|&x| !is_mask(x)).collect();
            assert_eq!(m.masks as usize, len - data.len(), "len {len}");
            assert_eq!(m.nan as usize, block.iter().filter(|x| x.is_nan()).count());
            assert_eq!(m.zeros as usize, data.iter().filter(|&&x| x == 0.0).count());
            assert_eq!(m.lo, data.iter().fold(f32::INFINITY, |a, &b| a.min(b)));
            assert_eq!(m.hi, data.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)));
            let sum: f64 = data.iter().map(|&x| f64::from(x)).sum();
            assert!((m.sum - sum).abs() <= 1e-5 * (1.0 + sum.abs()), "len {len}");
        }
    }

    /// A long tensor whose masks sit in some blocks only (clean blocks,
    /// masked blocks, clean blocks right after masked ones, a tail of
    /// fewer than 16 values) gives the statistics of its data values,
    /// binned or not.
    #[test]
    fn blocks_with_and_without_masks_give_the_data_statistics() {
        let len = 256 * 9 + 13;
        let xs: Vec<f32> = (0..len)
            .map(|i| {
                let block = i / 256;
                let masked_block = block == 2 || block == 3 || block == 7 || block == 9;
                match i % 37 {
                    0 if masked_block => f32::NEG_INFINITY,
                    5 if masked_block && block != 9 => f32::MIN,
                    11 => 0.0,
                    _ => ((i as f32) * 0.731).sin() * (1.0 + block as f32),
                }
            })
            .collect();
        let data: Vec<f32> = xs.iter().copied().filter(|x| !is_mask_value(*x)).collect();
        let mut reference = AbsHistogram::new(128);
        reference.add(&data);
        for binned in [true, false] {
            let mut s = if binned {
                TensorStats::new(128)
            } else {
                TensorStats::without_histogram(128)
            };
            s.observe(&xs, &[len]);
            assert_eq!(s.min, data.iter().fold(f32::INFINITY, |a, &b| a.min(b)));
            assert_eq!(s.max, data.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)));
            assert_eq!(s.mask_values as usize, len - data.len());
            assert_eq!((s.nan, s.count()), (0, data.len() as u64));
            assert_eq!(s.hist.zeros, reference.zeros);
            assert_eq!(
                (s.absmax(), s.hist.width()),
                (reference.max, reference.width())
            );
            if binned {
                assert_eq!(s.hist, reference);
            }
            let sum: f64 = data.iter().map(|&x| f64::from(x)).sum();
            assert!((s.sum - sum).abs() <= 1e-4 * (1.0 + sum.abs()));
        }
    }

    #[test]
    fn masks_never_set_the_range() {
        let mut s = TensorStats::new(64);
        s.observe(
            &[1.0, -2.0, f32::NEG_INFINITY, f32::MIN, -1e9, f32::NAN],
            &[6],
        );
        assert_eq!((s.min, s.max, s.absmax()), (-2.0, 1.0, 2.0));
        assert_eq!((s.mask_values, s.nan, s.count()), (4, 1, 2));
    }

    #[test]
    fn a_lowered_mask_limit_keeps_moderate_masks_out() {
        // 300 values, so both the 8-lane body and the tail see masks.
        let xs: Vec<f32> = (0..300)
            .map(|i| match i % 7 {
                0 => -1e4,
                1 => -65504.0,
                _ => (i % 11) as f32 - 5.0,
            })
            .collect();
        let mut plain = TensorStats::new(64);
        plain.observe(&xs, &[3, 100]);
        assert_eq!(plain.absmax(), 65504.0);
        let mut s = TensorStats::new(64).with_mask_limit(1e3);
        s.observe(&xs, &[3, 100]);
        assert_eq!((s.min, s.max, s.absmax()), (-5.0, 5.0, 5.0));
        let masks = xs.iter().filter(|x| **x <= -1e3).count() as u64;
        assert_eq!((s.mask_values, s.nan), (masks, 0));
        assert!(s.channel_absmax.iter().all(|m| *m <= 5.0));
        // The positive side keeps the global limit.
        let mut p = TensorStats::new(64).with_mask_limit(1e3);
        p.observe(&[2e3, -3.0], &[2]);
        assert_eq!((p.absmax(), p.mask_values), (2e3, 0));
    }

    #[test]
    fn per_channel_extremes_along_axis_one() {
        let mut s = TensorStats::new(64);
        // shape [1, 2, 2, 1]: channel 0 = [1, -3], channel 1 = [0.5, 2]
        s.observe(&[1.0, -3.0, 0.5, 2.0], &[1, 2, 2, 1]);
        assert_eq!(s.channel_absmax, vec![3.0, 2.0]);
        assert_eq!(s.channel_axis, 1);
    }

    /// Statistics of shards merge to what one pass gives.
    #[test]
    fn shards_merge_to_the_one_pass_result() {
        let sample = |k: usize| -> Vec<f32> {
            (0..24)
                .map(|i| match (i * 7 + k * 13) % 29 {
                    0 if k.is_multiple_of(3) => f32::NEG_INFINITY,
                    v => (v as f32 - 14.0) * 0.37 * (1 + k % 4) as f32,
                })
                .collect()
        };
        let shape = [1, 2, 3, 4];
        let mut one = TensorStats::new(64);
        let (mut a, mut b) = (TensorStats::new(64), TensorStats::new(64));
        for k in 0..9 {
            one.observe(&sample(k), &shape);
            if k.is_multiple_of(2) { &mut a } else { &mut b }.observe(&sample(k), &shape);
        }
        a.merge(b);
        assert_eq!((a.min, a.max, a.samples), (one.min, one.max, one.samples));
        assert_eq!(a.hist, one.hist);
        assert_eq!((a.mask_values, a.nan), (one.mask_values, one.nan));
        assert_eq!(a.channel_absmax, one.channel_absmax);
        assert!((a.sum - one.sum).abs() < 1e-9);
        assert!(!a.constant);
        // Constant shards stay constant only when they hold the same value.
        let (mut c, mut d) = (TensorStats::new(8), TensorStats::new(8));
        c.observe(&[999.0], &[1]);
        d.observe(&[999.0], &[1]);
        let mut e = c.clone();
        c.merge(d);
        assert!(c.constant);
        let mut f = TensorStats::new(8);
        f.observe(&[3.0], &[1]);
        e.merge(f);
        assert!(!e.constant);
    }

    #[test]
    fn constant_inputs_are_detected() {
        let mut s = TensorStats::new(16);
        s.observe(&[999.0], &[1]);
        s.observe(&[999.0], &[1]);
        assert!(s.constant);
        s.observe(&[3.0], &[1]);
        assert!(!s.constant);
    }

    #[test]
    fn clipped_fraction_counts_values_above_the_threshold() {
        let mut s = TensorStats::new(128);
        let xs: Vec<f32> = (0..100).map(|i| i as f32).collect();
        s.observe(&xs, &[100]);
        let f = s.clipped_fraction(89.5);
        assert!((0.09..=0.11).contains(&f), "{f}");
        assert_eq!(s.clipped_fraction(1000.0), 0.0);
    }
}
