//! Calibration candidates (one combination of method and options) and the
//! thresholds each gives from the statistics of one pass.

use super::observer::{TensorStats, MASK_LIMIT};
use super::threshold;
use crate::config::quant_config::ActivationConfig;
use crate::qtype::QType;
use std::fmt;

/// How an activation threshold is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// The largest |x| (or [min, max] when asymmetric).
    Max,
    /// The effective percentile of |x| (Horizon's per-sample rule).
    Percentile(f64),
    /// KL divergence on a histogram of `num_bin` bins (128 int8 levels).
    Kl {
        /// Number of histogram bins.
        num_bin: usize,
    },
    /// The MSE-optimal threshold on the histogram.
    Mse,
}

/// One calibration candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The method.
    pub method: Method,
    /// Per-channel activation thresholds.
    pub per_channel: bool,
    /// Asymmetric (min/max with a zero point).
    pub asymmetric: bool,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Max => write!(f, "max"),
            Method::Percentile(p) => write!(f, "max-percentile:{p}"),
            Method::Kl { num_bin } => write!(f, "kl:{num_bin}"),
            Method::Mse => write!(f, "mse"),
        }
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.method)?;
        if self.per_channel {
            write!(f, " per-channel")?;
        }
        if self.asymmetric {
            write!(f, " asymmetric")?;
        }
        Ok(())
    }
}

/// Why no candidates can be made.
#[derive(Debug, thiserror::Error)]
#[error("calibration_type '{0}' is not supported by hb-calib{hint}", hint = unsupported_hint(&self.0))]
pub struct UnsupportedMethod(pub String);

fn unsupported_hint(t: &str) -> String {
    let why = match t {
        "load" => ": 'load' takes thresholds from an already quantized (QAT) model, and the Horizon documentation hbkit follows does not define how they are stored, so hbkit cannot read them",
        "fixed" => ": 'fixed' thresholds are not defined by the Horizon documentation hbkit follows",
        _ => "",
    };
    format!("{why} (use default, max, kl, mse, min-max, mix or skip)")
}

/// The candidates of the default search: max, max-percentile 0.99995 and
/// KL, each symmetric and asymmetric (per-channel variants are added only
/// when the best per-tensor candidate scores below 0.995).
pub fn default_candidates() -> Vec<Candidate> {
    let mut v = Vec::new();
    for asymmetric in [false, true] {
        for method in [
            Method::Max,
            Method::Percentile(0.99995),
            Method::Kl { num_bin: 1024 },
        ] {
            v.push(Candidate {
                method,
                per_channel: false,
                asymmetric,
            });
        }
    }
    v
}

/// True when `method` reads the |x| histogram (percentile, KL, MSE); max
/// needs only the largest |x|.
pub fn needs_histogram(method: Method) -> bool {
    !matches!(method, Method::Max)
}

/// True when the activation options ask for the default search.
pub fn is_default_search(act: &ActivationConfig) -> bool {
    act.calibration_type.is_empty()
        || act
            .calibration_type
            .iter()
            .any(|t| t == "default" || t == "mix")
}

/// Every combination of the list-valued activation options.
pub fn candidates(act: &ActivationConfig) -> Result<Vec<Candidate>, UnsupportedMethod> {
    if is_default_search(act) {
        let mut v = default_candidates();
        if !act.asymmetric.is_empty() {
            v.retain(|c| act.asymmetric.contains(&c.asymmetric));
        }
        if act.per_channel.contains(&true) && !act.per_channel.contains(&false) {
            v.iter_mut().for_each(|c| c.per_channel = true);
        }
        return Ok(v);
    }
    let pct = if act.max_percentile.is_empty() {
        vec![1.0]
    } else {
        act.max_percentile.clone()
    };
    let bins = if act.num_bin.is_empty() {
        vec![1024]
    } else {
        act.num_bin.clone()
    };
    let per_channel = if act.per_channel.is_empty() {
        vec![false]
    } else {
        act.per_channel.clone()
    };
    let mut methods: Vec<(Method, Option<bool>)> = Vec::new();
    for t in &act.calibration_type {
        match t.as_str() {
            "max" | "skip" => {
                for p in &pct {
                    methods.push((
                        if *p >= 1.0 {
                            Method::Max
                        } else {
                            Method::Percentile(*p)
                        },
                        None,
                    ));
                }
            }
            "kl" => methods.extend(bins.iter().map(|b| (Method::Kl { num_bin: *b }, None))),
            "mse" => methods.push((Method::Mse, None)),
            "min-max" | "minmax" => methods.push((Method::Max, Some(true))),
            other => return Err(UnsupportedMethod(other.to_string())),
        }
    }
    let mut out = Vec::new();
    for (method, forced_asym) in methods {
        let asyms = match forced_asym {
            Some(a) => vec![a],
            None if act.asymmetric.is_empty() => vec![false],
            None => act.asymmetric.clone(),
        };
        for &asymmetric in &asyms {
            for &pc in &per_channel {
                let c = Candidate {
                    method,
                    per_channel: pc,
                    asymmetric,
                };
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
    }
    Ok(out)
}

/// Thresholds of one calibration node, as stored in its attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// `[T]`, `[T_c…]`, `[min, max]` or `[min_c, max_c, …]`.
    pub values: Vec<f32>,
    /// Channel axis of per-channel values.
    pub axis: usize,
    /// `values` are min/max pairs.
    pub asymmetric: bool,
    /// How they were chosen.
    pub method: String,
    /// Mask values (`x ≤ -mask_limit`) pass the node unchanged.
    pub keep_masks: bool,
    /// Magnitude from which a negative value is a mask (the statistics').
    pub mask_limit: f32,
}

impl Thresholds {
    /// The largest magnitude the thresholds cover (for tables).
    pub fn magnitude(&self) -> f32 {
        self.values.iter().fold(0f32, |m, v| m.max(v.abs()))
    }
}

/// The symmetric threshold |x| of `stats` under `method` for `qtype`.
pub fn symmetric_threshold(stats: &TensorStats, method: Method, qtype: QType) -> f64 {
    let max = f64::from(stats.absmax());
    let h = &stats.hist;
    let qmax = if qtype == QType::Int16 {
        32767.0
    } else {
        127.0
    };
    match method {
        Method::Max => max,
        Method::Percentile(p) => {
            let counts: Vec<f64> = h.counts().iter().map(|&c| c as f64).collect();
            let p_eff = threshold::effective_percentile(p, stats.samples.max(1));
            threshold::percentile(&counts, h.width(), p_eff, max)
        }
        Method::Kl { num_bin } => {
            if max <= 0.0 || qtype != QType::Int8 {
                return max;
            }
            let counts = h.rebin(num_bin);
            threshold::kl(&counts, max / num_bin as f64, 128)
        }
        Method::Mse => {
            if max <= 0.0 {
                return max;
            }
            let n = 2048;
            let counts = h.rebin(n);
            threshold::mse(&counts, max / n as f64, max, qmax, 100)
        }
    }
}

/// The thresholds of a feature tensor under a candidate.
pub fn feature_thresholds(stats: &TensorStats, cand: &Candidate, qtype: QType) -> Thresholds {
    let t = symmetric_threshold(stats, cand.method, qtype);
    feature_thresholds_from(stats, cand, t)
}

/// [`feature_thresholds`] given the candidate's symmetric threshold `t`
/// (from [`symmetric_threshold`], possibly cached).
pub fn feature_thresholds_from(stats: &TensorStats, cand: &Candidate, t: f64) -> Thresholds {
    let t = t as f32;
    let method = cand.to_string();
    let per_channel = cand.per_channel && !stats.channel_absmax.is_empty();
    let keep_masks = stats.mask_values > stats.nan;
    // A tensor holding mask sentinels stays symmetric: the integer machine
    // marks masked entries with qmin of a signed type, which asymmetric
    // uint8 (a zero point, docs/integer-semantics.md §1) has no room for —
    // the attention scores and the Softmax after them would run on the CPU.
    if cand.asymmetric && !keep_masks {
        let lo = if stats.min.is_finite() {
            stats.min
        } else {
            0.0
        };
        let hi = if stats.max.is_finite() {
            stats.max
        } else {
            0.0
        };
        return Thresholds {
            values: vec![lo.max(-t), hi.min(t)],
            axis: 0,
            asymmetric: true,
            method,
            keep_masks,
            mask_limit: stats.mask_limit,
        };
    }
    if per_channel {
        return Thresholds {
            values: stats.channel_absmax.iter().map(|c| c.min(t)).collect(),
            axis: stats.channel_axis,
            asymmetric: false,
            method,
            keep_masks,
            mask_limit: stats.mask_limit,
        };
    }
    Thresholds {
        values: vec![t],
        axis: 0,
        asymmetric: false,
        method,
        keep_masks,
        mask_limit: stats.mask_limit,
    }
}

/// Per-output-channel thresholds of a weight: the largest |w| of each
/// channel along `axis`, or its `percentile` of |w| when below 1.
pub fn weight_thresholds(w: &[f32], shape: &[usize], axis: usize, percentile: f64) -> Thresholds {
    let c = shape.get(axis).copied().unwrap_or(1).max(1);
    let inner: usize = shape.iter().skip(axis + 1).product();
    let mut per: Vec<Vec<f32>> = vec![Vec::new(); c];
    for (k, chunk) in w.chunks(inner.max(1)).enumerate() {
        per[k % c].extend(chunk.iter().map(|x| x.abs()));
    }
    let values = per
        .into_iter()
        .map(|mut v| {
            if v.is_empty() {
                return 0.0;
            }
            if percentile >= 1.0 {
                return v.iter().fold(0f32, |m, x| m.max(*x));
            }
            v.sort_by(f32::total_cmp);
            let idx = ((v.len() as f64 * percentile).ceil() as usize).clamp(1, v.len()) - 1;
            v[idx]
        })
        .collect();
    Thresholds {
        values,
        axis,
        asymmetric: false,
        method: if percentile >= 1.0 {
            "weight-max".into()
        } else {
            format!("weight-percentile:{percentile}")
        },
        keep_masks: false,
        mask_limit: MASK_LIMIT,
    }
}

/// The activation options whose only candidate is `c` (so a calibration
/// under them uses exactly `c`, without a search); `max_num_bin` is kept
/// from `base`.
pub fn activation_for(c: &Candidate, base: &ActivationConfig) -> ActivationConfig {
    let (t, pct, bins) = match c.method {
        Method::Max => ("max", vec![1.0], vec![]),
        Method::Percentile(p) => ("max", vec![p], vec![]),
        Method::Kl { num_bin } => ("kl", vec![], vec![num_bin]),
        Method::Mse => ("mse", vec![], vec![]),
    };
    ActivationConfig {
        calibration_type: vec![t.to_string()],
        num_bin: bins,
        max_num_bin: base.max_num_bin,
        max_percentile: pct,
        per_channel: vec![c.per_channel],
        asymmetric: vec![c.asymmetric],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_tensors_stay_symmetric_under_asymmetric_candidates() {
        let mut st = TensorStats::new(256);
        st.observe(&[0.0, -0.5, 2.0, f32::NEG_INFINITY], &[4]);
        let asym = Candidate {
            method: Method::Max,
            per_channel: false,
            asymmetric: true,
        };
        let t = feature_thresholds(&st, &asym, QType::Int8);
        assert!(!t.asymmetric && t.keep_masks, "{t:?}");
        assert_eq!(t.values, vec![2.0]);
        // Without masks the candidate stays asymmetric.
        let mut plain = TensorStats::new(256);
        plain.observe(&[0.0, -0.5, 2.0], &[3]);
        let t = feature_thresholds(&plain, &asym, QType::Int8);
        assert!(t.asymmetric && !t.keep_masks, "{t:?}");
        assert_eq!(t.values, vec![-0.5, 2.0]);
    }

    #[test]
    fn explicit_lists_multiply_out() {
        let act = ActivationConfig {
            calibration_type: vec!["max".into(), "kl".into()],
            max_percentile: vec![0.99995, 1.0],
            num_bin: vec![1024, 2048],
            asymmetric: vec![false, true],
            ..Default::default()
        };
        let c = candidates(&act).unwrap();
        assert_eq!(c.len(), (2 + 2) * 2);
    }

    #[test]
    fn unknown_methods_are_refused() {
        let act = ActivationConfig {
            calibration_type: vec!["load".into()],
            ..Default::default()
        };
        let e = candidates(&act).unwrap_err().to_string();
        assert!(e.contains("'load'") && e.contains("QAT"), "{e}");
    }

    #[test]
    fn weight_thresholds_are_per_output_channel() {
        // shape [2, 3]: channel 0 = [1, -4, 2], channel 1 = [0.5, 0.25, -0.75]
        let w = [1.0, -4.0, 2.0, 0.5, 0.25, -0.75];
        let t = weight_thresholds(&w, &[2, 3], 0, 1.0);
        assert_eq!(t.values, vec![4.0, 0.75]);
        // axis 1: channels are columns
        let t = weight_thresholds(&w, &[2, 3], 1, 1.0);
        assert_eq!(t.values, vec![1.0, 4.0, 2.0]);
    }

    #[test]
    fn activation_for_gives_exactly_that_candidate() {
        let base = ActivationConfig::default();
        for c in default_candidates().into_iter().chain([
            Candidate {
                method: Method::Mse,
                per_channel: true,
                asymmetric: false,
            },
            Candidate {
                method: Method::Kl { num_bin: 2048 },
                per_channel: false,
                asymmetric: true,
            },
        ]) {
            let a = activation_for(&c, &base);
            assert_eq!(candidates(&a).expect("candidates"), vec![c]);
        }
    }
}
