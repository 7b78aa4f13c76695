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
pub fn kl(counts: &[f64], width: f64, levels: usize) -> f64 {
    let n = counts.len();
    if n <= levels || levels == 0 {
        return n as f64 * width;
    }
    let mut bins = counts.to_vec();
    if n > 1 {
        bins[0] = bins[1];
    }
    let mut tail: Vec<f64> = vec![0.0; n + 1];
    for i in (0..n).rev() {
        tail[i] = tail[i + 1] + bins[i];
    }
    let mut best = (f64::INFINITY, n);
    let mut level_sum = vec![0f64; levels];
    let mut level_nonzero = vec![0usize; levels];
    let mut level_of = vec![0usize; n];
    for i in levels..=n {
        level_sum.iter_mut().for_each(|v| *v = 0.0);
        level_nonzero.iter_mut().for_each(|v| *v = 0);
        // digitize(j, linspace(0, i, levels+1)) - 1 = floor(j · levels / i)
        for (j, slot) in level_of.iter_mut().enumerate().take(i) {
            let l = ((j * levels) / i).min(levels - 1);
            *slot = l;
            if bins[j] != 0.0 {
                level_sum[l] += bins[j];
                level_nonzero[l] += 1;
            }
        }
        let mut q_total = 0.0;
        let mut q = vec![0f64; i];
        for j in 0..i {
            if bins[j] != 0.0 {
                let l = level_of[j];
                q[j] = level_sum[l] / level_nonzero[l] as f64;
                q_total += q[j];
            }
        }
        let mut p: Vec<f64> = bins[..i].to_vec();
        p[i - 1] += tail[i];
        let p_total: f64 = p.iter().sum();
        if p_total <= 0.0 || q_total <= 0.0 {
            continue;
        }
        let mut div = 0.0;
        for j in 0..i {
            let pj = p[j] / p_total;
            if pj > 0.0 {
                let qj = q[j] / q_total;
                if qj <= 0.0 {
                    div = f64::INFINITY;
                    break;
                }
                div += pj * (pj / qj).ln();
            }
        }
        if div <= best.0 {
            best = (div, i);
        }
    }
    best.1 as f64 * width
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

    #[test]
    fn mse_clips_a_lone_outlier() {
        let mut counts = vec![0.0; 1000];
        counts[..100].iter_mut().for_each(|c| *c = 100_000.0);
        counts[999] = 1.0;
        let t = mse(&counts, 0.01, 10.0, 127.0, 100);
        assert!(t < 5.0, "{t}");
    }
}
