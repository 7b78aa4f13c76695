//! A streaming histogram of |x| whose bins never move.
//!
//! Bins start at 0 and have a width that is a power of two. When a value
//! falls beyond the last bin, the width doubles (pairs of bins merge) until
//! it fits, so earlier counts stay exact. The final width is the smallest
//! power of two with `max ≤ bins · width`, whatever the order the data came
//! in: shards merge (by coarsening the finer one) to exactly the histogram of
//! one pass. Memory is fixed (`bins` counters) however many samples stream in;
//! the counters are allocated on the first binned value, so a histogram that
//! only records counts and extremes ([`AbsHistogram::add_unbinned`]) costs
//! no memory for them.

/// Histogram of absolute values with power-of-two bin width.
#[derive(Debug, Clone, PartialEq)]
pub struct AbsHistogram {
    /// The bin counters: empty until the first binned value, then `bins`.
    counts: Vec<u64>,
    bins: usize,
    /// log2 of the bin width; `None` until a non-zero finite value was seen.
    log2_width: Option<i32>,
    /// Largest |x| seen (finite values only).
    pub max: f32,
    /// Number of values seen (finite).
    pub total: u64,
    /// Number of non-finite values skipped (NaN, ±inf).
    pub non_finite: u64,
    /// Number of exact zeros.
    pub zeros: u64,
}

impl AbsHistogram {
    /// An empty histogram with `bins` bins (≥ 2, even).
    pub fn new(bins: usize) -> Self {
        let bins = bins.max(2) & !1;
        AbsHistogram {
            counts: Vec::new(),
            bins,
            log2_width: None,
            max: 0.0,
            total: 0,
            non_finite: 0,
            zeros: 0,
        }
    }

    /// Number of bins.
    pub fn bins(&self) -> usize {
        self.bins
    }

    /// Bin counts (empty when no value was binned yet: all zero).
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Bin width (0 when nothing non-zero was seen).
    pub fn width(&self) -> f64 {
        self.log2_width.map_or(0.0, |e| 2f64.powi(e))
    }

    /// The smallest power-of-two exponent `e` with `m ≤ bins · 2^e`.
    fn exponent_for(&self, m: f32) -> i32 {
        let bins = self.bins as f64;
        let need = m as f64 / bins;
        let mut e = need.log2().ceil() as i32;
        while 2f64.powi(e) * bins < m as f64 {
            e += 1;
        }
        while e > -149 && 2f64.powi(e - 1) * bins >= m as f64 {
            e -= 1;
        }
        e
    }

    /// Doubles the bin width until it is `2^e`.
    fn coarsen_to(&mut self, e: i32) {
        let Some(cur) = self.log2_width else {
            self.log2_width = Some(e);
            return;
        };
        for _ in cur..e {
            let n = self.counts.len();
            for i in 0..n / 2 {
                self.counts[i] = self.counts[2 * i] + self.counts[2 * i + 1];
            }
            for c in &mut self.counts[n / 2..] {
                *c = 0;
            }
        }
        self.log2_width = Some(e.max(cur));
    }

    /// Adds values.
    pub fn add(&mut self, xs: &[f32]) {
        let mut batch_max = 0f32;
        for &x in xs {
            if x.is_finite() {
                batch_max = batch_max.max(x.abs());
            }
        }
        self.add_with_max(xs, batch_max);
    }

    /// Adds values whose largest finite |x| is already known (`batch_max`),
    /// saving a pass.
    pub fn add_with_max(&mut self, xs: &[f32], batch_max: f32) {
        if xs.iter().all(|x| x.is_finite()) {
            self.add_finite(xs, batch_max);
            return;
        }
        let finite: Vec<f32> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        self.non_finite += (xs.len() - finite.len()) as u64;
        self.add_finite(&finite, batch_max);
    }

    /// Grows the range (coarsening, exact) so that `m` falls in a bin.
    fn cover(&mut self, m: f32) {
        // The usual case: the current width already covers `m` (exact: a
        // power of two times the bin count, compared in f64).
        let covered = self
            .log2_width
            .is_some_and(|cur| (m as f64) <= pow2(cur) * self.bins as f64);
        if m > 0.0 && !covered {
            let e = self.exponent_for(m);
            if self.log2_width.is_none_or(|cur| e > cur) {
                self.coarsen_to(e);
            }
        }
        self.max = self.max.max(m);
    }

    /// Adds finite values whose largest |x| is `batch_max` (the hot path of
    /// the statistics pass). Bin indices are computed 64 at a time in f32
    /// (the inverse width is a power of two, so `|x| · 2^−e` is exact and its
    /// floor equals the f64 truncation), in vector code only; then the
    /// counters are incremented.
    #[inline(always)]
    pub fn add_finite(&mut self, xs: &[f32], batch_max: f32) {
        if self.counts.is_empty() {
            self.counts = vec![0; self.bins];
        }
        self.cover(batch_max);
        self.total += xs.len() as u64;
        let Some(e) = self.log2_width else {
            // Nothing non-zero yet: every value is 0.
            self.zeros += xs.len() as u64;
            self.counts[0] += xs.len() as u64;
            return;
        };
        let last = (self.counts.len() - 1) as u32;
        if !(-126..=126).contains(&e) || last >= 1 << 23 {
            // 2^-e is not a normal f32, or bin indices do not fit the f32
            // mantissa: the plain f64 path.
            let inv = 2f64.powi(-e);
            for &x in xs {
                let a = x.abs();
                self.zeros += u64::from(a == 0.0);
                self.counts[((f64::from(a) * inv) as usize).min(last as usize)] += 1;
            }
            return;
        }
        let inv = 2f32.powi(-e);
        let last_f = last as f32;
        // Integers in [0, 2^23) plus 2^23 are exact, and their bits are
        // those of 2^23 plus the integer: a float → int conversion in plain
        // vector adds (an `as` cast saturates and scalarises).
        const MAGIC: f32 = 8_388_608.0;
        let mut idx = [0u32; 64];
        let mut zeros = 0u64;
        // A local slice keeps the counters' address and length in registers
        // (through `self` they are reloaded after every increment).
        let counts = &mut self.counts[..];
        for chunk in xs.chunks(64) {
            let mut z = 0u32;
            for (o, &x) in idx.iter_mut().zip(chunk) {
                let a = x.abs();
                z += u32::from(a == 0.0);
                // `min` before `floor`: the same bin as truncating then
                // capping at `last` (the values are finite and ≥ 0).
                let bin = (a * inv).min(last_f).floor();
                *o = (bin + MAGIC).to_bits() - MAGIC.to_bits();
            }
            zeros += u64::from(z);
            for &i in &idx[..chunk.len()] {
                counts[i as usize] += 1;
            }
        }
        self.zeros += zeros;
    }

    /// Records finite values by count and extremes only, without binning
    /// them (when no candidate reads the histogram: max-only calibration).
    /// The counts then no longer sum to `total`.
    pub fn add_unbinned(&mut self, n: u64, batch_max: f32, zeros: u64) {
        self.cover(batch_max);
        self.total += n;
        self.zeros += zeros;
    }

    /// Merges another histogram with the same number of bins (exact).
    pub fn merge(&mut self, other: AbsHistogram) {
        assert_eq!(
            self.bins(),
            other.bins(),
            "histograms must have the same number of bins"
        );
        let mut o = other;
        match (self.log2_width, o.log2_width) {
            (_, None) => {}
            (None, Some(e)) => self.coarsen_to(e),
            (Some(a), Some(b)) if a < b => self.coarsen_to(b),
            (Some(a), Some(b)) if b < a => o.coarsen_to(a),
            _ => {}
        }
        if o.log2_width.is_some() && self.log2_width.is_none() {
            self.log2_width = o.log2_width;
        }
        if self.counts.is_empty() {
            self.counts = o.counts;
        } else {
            for (c, d) in self.counts.iter_mut().zip(&o.counts) {
                *c += d;
            }
        }
        self.max = self.max.max(o.max);
        self.total += o.total;
        self.non_finite += o.non_finite;
        self.zeros += o.zeros;
    }

    /// The histogram re-binned to `n` bins over `[0, max]` (each fine bin's
    /// count is spread uniformly over the coarse bins it overlaps).
    pub fn rebin(&self, n: usize) -> Vec<f64> {
        let mut out = vec![0f64; n.max(1)];
        let (w, m) = (self.width(), self.max as f64);
        if w == 0.0 || m == 0.0 {
            out[0] = self.total as f64;
            return out;
        }
        let cw = m / n as f64;
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let (lo, hi) = (
                i as f64 * w,
                ((i + 1) as f64 * w).min(m.max(i as f64 * w + f64::MIN_POSITIVE)),
            );
            let hi = if hi <= lo { lo + w } else { hi };
            let (first, last) = ((lo / cw) as usize, ((hi / cw).ceil() as usize).max(1) - 1);
            let (first, last) = (first.min(n - 1), last.min(n - 1));
            if first == last {
                out[first] += c as f64;
                continue;
            }
            for (j, slot) in out.iter_mut().enumerate().take(last + 1).skip(first) {
                let a = lo.max(j as f64 * cw);
                let b = hi.min((j + 1) as f64 * cw);
                if b > a {
                    *slot += c as f64 * (b - a) / (hi - lo);
                }
            }
        }
        out
    }
}

/// `2^e` for the exponents of f32 bin widths (`-149 ≤ e ≤ 128`), exact.
fn pow2(e: i32) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pow2_is_exact_over_the_width_exponents() {
        for e in -149..=128 {
            assert_eq!(pow2(e), 2f64.powi(e), "2^{e}");
        }
    }

    #[test]
    fn counts_stay_exact_when_the_range_grows() {
        let mut h = AbsHistogram::new(8);
        h.add(&[0.1, 0.2, -0.3]);
        h.add(&[5.0, -7.5]);
        assert_eq!(h.total, 5);
        assert_eq!(h.counts().iter().sum::<u64>(), 5);
        assert_eq!(h.width(), 1.0); // 7.5 ≤ 8 · 1
        assert_eq!(h.counts()[0], 3);
        assert_eq!(h.counts()[5], 1);
        assert_eq!(h.counts()[7], 1);
    }

    #[test]
    fn shards_merge_to_the_one_pass_result() {
        let data: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 0.013 * ((i % 13) as f32))
            .collect();
        let mut one = AbsHistogram::new(64);
        for c in data.chunks(37) {
            one.add(c);
        }
        let (mut a, mut b) = (AbsHistogram::new(64), AbsHistogram::new(64));
        for c in data[..300].chunks(10) {
            a.add(c);
        }
        for c in data[300..].chunks(91) {
            b.add(c);
        }
        a.merge(b);
        assert_eq!(a, one);
    }

    #[test]
    fn non_finite_values_are_counted_not_binned() {
        let mut h = AbsHistogram::new(16);
        h.add(&[f32::NEG_INFINITY, 1.0, f32::NAN, 0.0]);
        assert_eq!((h.total, h.non_finite, h.zeros), (2, 2, 1));
        assert_eq!(h.max, 1.0);
    }

    /// The f32 fast path bins exactly as `floor(|x| / width)` in f64.
    #[test]
    fn fast_binning_matches_the_f64_definition() {
        let xs: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919 % 5003) as f32 - 2501.0) * 0.0137)
            .chain([0.0, 34.25, -34.25])
            .collect();
        let mut h = AbsHistogram::new(256);
        h.add(&xs);
        let w = h.width();
        let mut want = vec![0u64; 256];
        for x in &xs {
            want[((f64::from(x.abs()) / w) as usize).min(255)] += 1;
        }
        assert_eq!(h.counts(), &want[..]);
        assert_eq!(h.zeros, 2);
    }

    /// Values on bin edges go up a bin; the maximum (`bins · width`) goes to
    /// the last bin.
    #[test]
    fn bin_edges_and_the_maximum() {
        let mut h = AbsHistogram::new(8);
        h.add(&[0.0, 0.5, -1.0, 6.999_999_5, 7.0, -8.0]);
        assert_eq!(h.width(), 1.0);
        assert_eq!(h.counts(), &[2, 1, 0, 0, 0, 0, 1, 2]);
    }

    /// Counters are allocated by the first binned value only; merging keeps
    /// whichever side has them.
    #[test]
    fn counters_are_allocated_by_the_first_binned_value() {
        let mut unbinned = AbsHistogram::new(4096);
        unbinned.add_unbinned(10, 3.0, 1);
        assert!(unbinned.counts().is_empty());
        assert_eq!((unbinned.bins(), unbinned.total), (4096, 10));
        let mut binned = AbsHistogram::new(4096);
        binned.add(&[0.5, -3.0]);
        assert_eq!(binned.counts().len(), 4096);
        let mut empty = AbsHistogram::new(4096);
        empty.merge(binned.clone());
        assert_eq!(empty, binned);
        let mut kept = binned.clone();
        kept.merge(AbsHistogram::new(4096));
        assert_eq!(kept, binned);
    }

    #[test]
    fn rebin_preserves_mass() {
        let mut h = AbsHistogram::new(128);
        h.add(&(0..500).map(|i| i as f32 * 0.01).collect::<Vec<_>>());
        let r = h.rebin(10);
        assert!((r.iter().sum::<f64>() - 500.0).abs() < 1e-6);
    }
}
