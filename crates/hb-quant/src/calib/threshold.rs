//! Thresholds (the |x| that maps to the largest quantized value) from a
//! histogram of |x|: max, percentile, KL divergence, MSE. Every function
//! takes plain bin counts over `[0, bins·width]`, so it can be checked
//! against an independent computation on the same counts (see
//! `tests/thresholds.rs` and `docs/quantization.md`).

/// Percentile threshold: the right edge of the first bin where the
/// cumulative count reaches `p · total`, clipped to `max`.
pub fn percentile(counts: &[f64], width: f64, p: f64, max: f64) -> f64 {
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return max;
    }
    let target = p * total;
    let mut acc = 0.0;
    for (i, c) in counts.iter().enumerate() {
        acc += c;
        if acc >= target {
            return ((i + 1) as f64 * width).min(max);
        }
    }
    max
}

/// Horizon's per-sample outlier rule: `max(0.5, 1 − (1 − p) · n_samples)`.
pub fn effective_percentile(p: f64, n_samples: usize) -> f64 {
    (1.0 - (1.0 - p) * n_samples as f64).max(0.5)
}

/// KL-divergence threshold, the TensorRT / pytorch-quantization variant:
/// bin 0 takes bin 1's count (the spike of exact zeros is ignored); for every
/// end bin `i` from `levels` to `n`: P = counts[..i] with the tail folded into
/// its last bin; Q = counts[..i] merged into `levels` levels by the
/// fractional boundaries `linspace(0, i, levels+1)`, each level's mass spread
/// evenly over its non-zero source bins; KL(P‖Q) with both normalised
/// (natural log; P > 0 where Q = 0 gives +inf). The LAST minimum wins and
/// the threshold is the right edge of bin `i − 1`, i.e. `i · width`.
///
/// Computed in two steps that give exactly the result of evaluating every
/// candidate directly: a prefix-sum form of the divergence (O(levels) per
/// candidate instead of O(i), see [`kl_fast_divergences`]) ranks the
/// candidates, then every candidate within `1e-9` of the fast minimum (far
/// above the fast form's rounding error) is evaluated directly and the last
/// direct minimum wins.
pub fn kl(counts: &[f64], width: f64, levels: usize) -> f64 {
    let n = counts.len();
    if n <= levels || levels == 0 {
        return n as f64 * width;
    }
    let mut bins = counts.to_vec();
    bins[0] = bins[1];
    let mut tail: Vec<f64> = vec![0.0; n + 1];
    for i in (0..n).rev() {
        tail[i] = tail[i + 1] + bins[i];
    }
    let fast = kl_fast_divergences(&bins, &tail, levels);
    let min_fast = fast.iter().flatten().fold(f64::INFINITY, |m, &d| m.min(d));
    let near: Vec<usize> = if min_fast.is_finite() {
        (levels..=n)
            .filter(|&i| fast[i - levels].is_some_and(|d| d <= min_fast + 1e-9))
            .collect()
    } else {
        (levels..=n).collect()
    };
    let mut best = (f64::INFINITY, n);
    let mut scratch = KlScratch::new(n, levels);
    for i in near {
        if let Some(div) = kl_divergence(&bins, &tail, i, levels, &mut scratch) {
            if div <= best.0 {
                best = (div, i);
            }
        }
    }
    best.1 as f64 * width
}

/// Buffers of [`kl_divergence`], reused across candidates.
struct KlScratch {
    level_sum: Vec<f64>,
    level_nonzero: Vec<usize>,
    level_of: Vec<usize>,
    q: Vec<f64>,
    p: Vec<f64>,
}

impl KlScratch {
    fn new(n: usize, levels: usize) -> Self {
        KlScratch {
            level_sum: vec![0.0; levels],
            level_nonzero: vec![0; levels],
            level_of: vec![0; n],
            q: vec![0.0; n],
            p: vec![0.0; n],
        }
    }
}

/// KL(P‖Q) of candidate end bin `i`, evaluated directly (the definition in
/// [`kl`]); `None` when P or Q is empty (the candidate is skipped).
fn kl_divergence(
    bins: &[f64],
    tail: &[f64],
    i: usize,
    levels: usize,
    s: &mut KlScratch,
) -> Option<f64> {
    s.level_sum.iter_mut().for_each(|v| *v = 0.0);
    s.level_nonzero.iter_mut().for_each(|v| *v = 0);
    // digitize(j, linspace(0, i, levels+1)) - 1 = floor(j · levels / i)
    for (j, slot) in s.level_of.iter_mut().enumerate().take(i) {
        let l = ((j * levels) / i).min(levels - 1);
        *slot = l;
        if bins[j] != 0.0 {
            s.level_sum[l] += bins[j];
            s.level_nonzero[l] += 1;
        }
    }
    let mut q_total = 0.0;
    for ((q, &b), &l) in s.q.iter_mut().zip(bins).zip(&s.level_of).take(i) {
        *q = 0.0;
        if b != 0.0 {
            *q = s.level_sum[l] / s.level_nonzero[l] as f64;
            q_total += *q;
        }
    }
    s.p[..i].copy_from_slice(&bins[..i]);
    s.p[i - 1] += tail[i];
    let p_total: f64 = s.p[..i].iter().sum();
    if p_total <= 0.0 || q_total <= 0.0 {
        return None;
    }
    let mut div = 0.0;
    for j in 0..i {
        let pj = s.p[j] / p_total;
        if pj > 0.0 {
            let qj = s.q[j] / q_total;
            if qj <= 0.0 {
                return Some(f64::INFINITY);
            }
            div += pj * (pj / qj).ln();
        }
    }
    Some(div)
}

/// The divergence of every candidate `i = levels..=n` (index `i − levels`)
/// in closed form. With unnormalised `p'` (bins, tail folded into bin
/// `i − 1`), `q'` (each level's sum spread over its non-zero bins),
/// `P = Σ p'` and `Q = Σ q' = Σ bins[..i]`:
/// `KL = (Σ p' ln p' − Σ p' ln q') / P + ln(Q / P)`, where
/// `Σ p' ln p'` comes from a prefix sum of `b ln b` and `Σ p' ln q'` is
/// `Σ_levels sum_l · ln(sum_l / nonzero_l)` plus the tail's term, each
/// level's sum and non-zero count from prefix sums.
fn kl_fast_divergences(bins: &[f64], tail: &[f64], levels: usize) -> Vec<Option<f64>> {
    let n = bins.len();
    let mut sum = vec![0f64; n + 1];
    // Non-zero bin counts as f64 (exact: below 2^53).
    let mut nonzero = vec![0f64; n + 1];
    let mut blnb = vec![0f64; n + 1];
    for j in 0..n {
        let b = bins[j];
        sum[j + 1] = sum[j] + b;
        nonzero[j + 1] = nonzero[j] + f64::from(u8::from(b != 0.0));
        blnb[j + 1] = blnb[j] + if b > 0.0 { b * b.ln() } else { 0.0 };
    }
    let xlnx = |x: f64| if x > 0.0 { x * x.ln() } else { 0.0 };
    let mut terms = LevelTerms::new(levels);
    (levels..=n)
        .map(|i| {
            let q_total = sum[i];
            let last = bins[i - 1] + tail[i];
            let p_total = sum[i - 1] + last;
            if p_total <= 0.0 || q_total <= 0.0 {
                return None;
            }
            if bins[i - 1] == 0.0 && tail[i] > 0.0 {
                return Some(f64::INFINITY);
            }
            let plnp = blnb[i - 1] + xlnx(last);
            terms.fill(i, &sum, &nonzero);
            let LevelTerms { mass, num, den, .. } = &terms;
            let mut plnq = mass_log_ratio(mass, num, den);
            // The tail is folded into bin i − 1, which is in the last level.
            if bins[i - 1] != 0.0 {
                plnq += tail[i] * (num[levels - 1] / den[levels - 1]).ln();
            }
            Some((plnp - plnq) / p_total + (q_total / p_total).ln())
        })
        .collect()
}

/// The level terms of one KL candidate (see [`kl_fast_divergences`]).
struct LevelTerms {
    /// Each level's mass (0 for a level without a non-zero bin).
    mass: Vec<f64>,
    /// Numerator and denominator of the ratio whose log is taken: the
    /// level's mass and non-zero bin count (1 / 1 for an empty level: it
    /// adds nothing).
    num: Vec<f64>,
    den: Vec<f64>,
    /// The prefix sums at each level's end: `at_sum[l + 1] = sum[end_l]`
    /// (`at_sum[0] = sum[0] = 0`), likewise `at_nonzero`.
    at_sum: Vec<f64>,
    at_nonzero: Vec<f64>,
}

impl LevelTerms {
    /// Buffers for `levels` levels.
    fn new(levels: usize) -> Self {
        LevelTerms {
            mass: vec![0.0; levels],
            num: vec![1.0; levels],
            den: vec![1.0; levels],
            at_sum: vec![0.0; levels + 1],
            at_nonzero: vec![0.0; levels + 1],
        }
    }

    /// The terms of candidate end bin `i` from the prefix sums of the bins
    /// and of their non-zero flags (see [`level_terms`]).
    fn fill(&mut self, i: usize, sum: &[f64], nonzero: &[f64]) {
        let LevelTerms {
            mass,
            num,
            den,
            at_sum,
            at_nonzero,
        } = self;
        level_terms(i, sum, nonzero, mass, num, den, at_sum, at_nonzero);
    }
}

hb_float::multiversion! {
/// [`LevelTerms::fill`] (vector code: the level ends, their prefix sums
/// and the differences). Level `l` spans bins
/// `[ceil(l·i/levels), ceil((l+1)·i/levels))`; its sum and non-zero count
/// are differences of the prefix sums at its two ends.
#[allow(clippy::too_many_arguments)]
fn level_terms(
    i: usize,
    sum: &[f64],
    nonzero: &[f64],
    mass: &mut [f64],
    num: &mut [f64],
    den: &mut [f64],
    at_sum: &mut [f64],
    at_nonzero: &mut [f64],
) {
    let levels = mass.len();
    let (sum, nonzero) = (&sum[..=i], &nonzero[..=i]);
    let ends = at_sum[1..].iter_mut().zip(&mut at_nonzero[1..]);
    if levels.is_power_of_two() {
        // ceil(x / levels) is a shift (the int8 case: 128 levels).
        let shift = levels.trailing_zeros();
        for (l, (s, z)) in ends.enumerate() {
            let b = (((l + 1) * i + levels - 1) >> shift).min(i);
            (*s, *z) = (sum[b], nonzero[b]);
        }
    } else {
        // The quotient and remainder of (l+1)·i / levels, stepped in
        // integers (no division per level).
        let (step_q, step_r) = (i / levels, i % levels);
        let (mut q, mut r) = (0usize, 0usize);
        for (s, z) in ends {
            q += step_q;
            r += step_r;
            if r >= levels {
                r -= levels;
                q += 1;
            }
            let b = (q + usize::from(r != 0)).min(i);
            (*s, *z) = (sum[b], nonzero[b]);
        }
    }
    let spans = at_sum[1..]
        .iter()
        .zip(&at_sum[..levels])
        .zip(at_nonzero[1..].iter().zip(&at_nonzero[..levels]));
    let terms = mass.iter_mut().zip(num.iter_mut()).zip(den.iter_mut());
    for (((m, u), d), ((s1, s0), (z1, z0))) in terms.zip(spans) {
        let (s, nz) = (s1 - s0, z1 - z0);
        (*m, *u, *d) = if nz == 0.0 { (0.0, 1.0, 1.0) } else { (s, s, nz) };
    }
}
}

/// `Σ mass[l] · ln(num[l] / den[l])`, in 8 running sums added in a fixed
/// order (the same bits on every target). Ratios that are positive
/// normal values take a branch-free f64 logarithm the compiler vectorises
/// (within a few ulp of `f64::ln`, see [`ln_positive`]); when any ratio is
/// not (zero, subnormal, inf, NaN), every one takes `f64::ln`.
fn mass_log_ratio(mass: &[f64], num: &[f64], den: &[f64]) -> f64 {
    hb_float::multiversion! {
        fn mass_log_ratio_any(mass: &[f64], num: &[f64], den: &[f64]) -> f64 {
            const W: usize = 8;
            let in_range = |x: f64| (f64::MIN_POSITIVE..f64::INFINITY).contains(&x);
            let mut acc = [0f64; W];
            let mut bad = [false; W];
            let whole = mass.len() / W * W;
            for ((m, u), d) in mass[..whole]
                .chunks_exact(W)
                .zip(num[..whole].chunks_exact(W))
                .zip(den[..whole].chunks_exact(W))
            {
                for k in 0..W {
                    let x = u[k] / d[k];
                    bad[k] |= !in_range(x);
                    acc[k] += m[k] * ln_positive(x);
                }
            }
            let rest = mass[whole..].iter().zip(&num[whole..]).zip(&den[whole..]);
            for (k, ((m, u), d)) in rest.enumerate() {
                let x = u / d;
                bad[k] |= !in_range(x);
                acc[k] += m * ln_positive(x);
            }
            if bad.iter().any(|&b| b) {
                // Rare (a ratio that is not a positive normal value): the
                // library log for every level, same order.
                acc = [0f64; W];
                for (k, ((m, u), d)) in mass.iter().zip(num).zip(den).enumerate() {
                    acc[k % W] += m * (u / d).ln();
                }
            }
            ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
        }
    }
    mass_log_ratio_any(mass, num, den)
}

/// Natural logarithms of `xs` in place, as [`mass_log_ratio`] takes them
/// (the branch-free form when every value is a positive normal value).
#[cfg(test)]
fn ln_in_place(xs: &mut [f64]) {
    if xs
        .iter()
        .all(|&v| (f64::MIN_POSITIVE..f64::INFINITY).contains(&v))
    {
        xs.iter_mut().for_each(|v| *v = ln_positive(*v));
    } else {
        xs.iter_mut().for_each(|v| *v = v.ln());
    }
}

/// ln of a positive normal finite `x`: `x = 2^e · m` with `m` in
/// [√½, √2), `ln m = 2·atanh(s)` with `s = (m − 1)/(m + 1)` (|s| ≤ 0.172)
/// summed to `s^21` (the rest is below 2^−60 of the result), plus `e · ln 2`
/// in two parts. No branch, no table: it vectorises.
#[inline(always)]
fn ln_positive(x: f64) -> f64 {
    const MANTISSA: u64 = (1 << 52) - 1;
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let bits = x.to_bits();
    let m = f64::from_bits((bits & MANTISSA) | 1f64.to_bits());
    let big = m > std::f64::consts::SQRT_2;
    let m = if big { m * 0.5 } else { m };
    let e = ((bits >> 52) as i64 - 1023 + i64::from(big)) as f64;
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    let mut p: f64 = 1.0 / 21.0;
    for k in (0..10).rev() {
        p = p.mul_add(z, 1.0 / (2 * k + 1) as f64);
    }
    e * LN2_HI + (e * LN2_LO + 2.0 * s * p)
}

/// Fake-quantizes `x ≥ 0` symmetrically with threshold `t` and `qmax` levels
/// (round half away from zero, saturating).
pub fn fake_quant_abs(x: f64, t: f64, qmax: f64) -> f64 {
    if t <= 0.0 {
        return 0.0;
    }
    let s = t / qmax;
    (x / s).round().min(qmax) * s
}

/// MSE threshold: among `T = max · k / steps` (k = 1..=steps) the one
/// minimising `Σ count · (center − fq(center, T))²` over bin centers; the
/// smallest T wins ties.
pub fn mse(counts: &[f64], width: f64, max: f64, qmax: f64, steps: usize) -> f64 {
    if max <= 0.0 {
        return max;
    }
    let mut best = (f64::INFINITY, max);
    for k in 1..=steps.max(1) {
        let t = max * k as f64 / steps.max(1) as f64;
        let err: f64 = counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0.0)
            .map(|(i, c)| {
                let center = (i as f64 + 0.5) * width;
                c * (center - fake_quant_abs(center, t, qmax)).powi(2)
            })
            .sum();
        if err < best.0 {
            best = (err, t);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_by_hand() {
        let counts = [5.0, 3.0, 1.0, 1.0];
        assert_eq!(percentile(&counts, 0.5, 0.5, 2.0), 0.5);
        assert_eq!(percentile(&counts, 0.5, 0.8, 2.0), 1.0);
        assert_eq!(percentile(&counts, 0.5, 1.0, 1.7), 1.7);
        assert!((effective_percentile(0.99995, 100) - 0.995).abs() < 1e-12);
        assert_eq!(effective_percentile(0.9, 100), 0.5);
    }

    #[test]
    fn uniform_data_keeps_the_full_range_under_kl() {
        let counts = vec![10.0; 512];
        assert_eq!(kl(&counts, 1.0, 128), 512.0);
    }

    /// The vectorisable logarithm stays within 4 ulp of `f64::ln` over
    /// the positive normal range, near 1 and at powers of two; anything
    /// else in a slice falls back to `f64::ln`.
    #[test]
    fn ln_in_place_matches_the_library_log() {
        let mut xs: Vec<f64> = (0..20_000)
            .map(|k| 10f64.powf(-300.0 + 600.0 * ((k * 7919 % 20_000) as f64 / 20_000.0)))
            .chain((1..2000).map(|k| 1.0 + (k as f64 - 1000.0) * 1e-6))
            .chain((-1020..1020).map(|e| 2f64.powi(e)))
            .chain([f64::MIN_POSITIVE, f64::MAX, 1.0, std::f64::consts::SQRT_2])
            .collect();
        let want: Vec<f64> = xs.iter().map(|x| x.ln()).collect();
        ln_in_place(&mut xs);
        for (g, w) in xs.iter().zip(&want) {
            let ulp = (w.abs().max(f64::MIN_POSITIVE) * f64::EPSILON).max(f64::MIN_POSITIVE);
            assert!((g - w).abs() <= 4.0 * ulp, "ln: got {g}, want {w}");
        }
        let mut odd = vec![0.0, 2.0, -1.0, f64::INFINITY, 1e-310];
        ln_in_place(&mut odd);
        assert_eq!(odd[0], f64::NEG_INFINITY);
        assert_eq!(odd[1], 2f64.ln());
        assert!(odd[2].is_nan());
        assert_eq!(odd[3], f64::INFINITY);
        assert_eq!(odd[4], 1e-310f64.ln());
    }

    /// The closed form agrees with the direct evaluation on every candidate.
    #[test]
    fn fast_kl_divergences_match_the_direct_ones() {
        let mut bins: Vec<f64> = (0..700)
            .map(|j| ((j * 7919 % 101) as f64) * (-(j as f64) / 150.0).exp())
            .collect();
        bins[5] = 0.0;
        bins[300] = 0.0;
        bins[0] = bins[1];
        let n = bins.len();
        let mut tail = vec![0.0; n + 1];
        for i in (0..n).rev() {
            tail[i] = tail[i + 1] + bins[i];
        }
        // 128 levels find the level ends by a shift, 100 by integer steps.
        for levels in [128, 100] {
            let fast = kl_fast_divergences(&bins, &tail, levels);
            let mut s = KlScratch::new(n, levels);
            for i in levels..=n {
                let direct = kl_divergence(&bins, &tail, i, levels, &mut s);
                match (direct, fast[i - levels]) {
                    (Some(d), Some(f)) if d.is_finite() => {
                        assert!((d - f).abs() < 1e-11, "{levels} levels, i={i}: {d} vs {f}")
                    }
                    (d, f) => assert_eq!(d, f, "{levels} levels, i={i}"),
                }
            }
        }
    }

    #[test]
    fn mse_clips_a_lone_outlier() {
        let mut counts = vec![0.0; 1000];
        counts[..100].iter_mut().for_each(|c| *c = 100_000.0);
        counts[999] = 1.0;
        let t = mse(&counts, 0.01, 10.0, 127.0, 100);
        assert!(t < 5.0, "{t}");
    }
}
