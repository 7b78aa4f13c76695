"""Independent reference thresholds for hb-quant's calibration algorithms.

Written directly from the algorithm descriptions (numpy + scipy), not from the
Rust code: percentile on the |x| histogram, KL in the TensorRT /
pytorch-quantization form (np.digitize over linspace, scipy.stats.entropy,
last argmin), MSE over 100 fractions of the max. Run:
    python3 crates/hb-quant/tests/reference/make_thresholds.py
which rewrites thresholds.json next to this file (numpy, scipy; seed fixed).
"""
import json
import os
from collections import Counter

import numpy as np
from scipy.stats import entropy

rng = np.random.default_rng(1234)


def kl_reference(bins, width, nbins=128):
    bins = bins.astype(np.float64).copy()
    bins[0] = bins[1]
    divergences, arguments = [], []
    new_density_counts = np.zeros(nbins, dtype=np.float64)
    for i in range(nbins, len(bins) + 1):
        new_density_counts.fill(0)
        space = np.linspace(0, i, num=nbins + 1)
        digitized = np.digitize(range(i), space) - 1
        digitized[bins[:i] == 0] = -1
        for idx, d in enumerate(digitized):
            if d != -1:
                new_density_counts[d] += bins[idx]
        counter = Counter(digitized)
        for key, val in counter.items():
            if key != -1:
                new_density_counts[key] = new_density_counts[key] / val
        new_density = np.zeros(i, dtype=np.float64)
        for idx, d in enumerate(digitized):
            if d != -1:
                new_density[idx] = new_density_counts[d]
        reference = np.array(bins[:i])
        reference[-1] += np.sum(bins[i:])
        divergences.append(entropy(reference / reference.sum(), new_density / new_density.sum()))
        arguments.append(i)
    divergences = np.array(divergences)
    last_argmin = len(divergences) - 1 - np.argmin(divergences[::-1])
    return arguments[last_argmin] * width


def percentile_reference(bins, width, p, vmax):
    cdf = np.cumsum(bins) / bins.sum()
    i = int(np.searchsorted(cdf, p - 1e-15))
    return float(min((i + 1) * width, vmax))


def mse_reference(bins, width, vmax, qmax=127.0, steps=100):
    centers = (np.arange(len(bins)) + 0.5) * width
    best = (np.inf, vmax)
    for k in range(1, steps + 1):
        t = vmax * k / steps
        s = t / qmax
        q = np.minimum(np.floor(centers / s + 0.5), qmax) * s
        err = float(np.sum(bins * (centers - q) ** 2))
        if err < best[0]:
            best = (err, t)
    return best[1]


cases = []
datasets = {
    "laplace": rng.laplace(0, 1.0, 200_000),
    "gaussian_with_outliers": np.concatenate([rng.normal(0, 0.5, 200_000), [25.0, -30.0, 18.0]]),
    "relu_like": np.maximum(rng.normal(0.2, 1.0, 100_000), 0),
}
for name, x in datasets.items():
    a = np.abs(x)
    vmax = float(a.max())
    nb = 2048
    bins, edges = np.histogram(a, bins=nb, range=(0, vmax))
    width = vmax / nb
    cases.append({
        "name": name,
        "counts": bins.tolist(),
        "width": width,
        "max": vmax,
        "kl": kl_reference(bins, width),
        "percentile_0.99995": percentile_reference(bins, width, 0.99995, vmax),
        "percentile_0.999": percentile_reference(bins, width, 0.999, vmax),
        "mse": mse_reference(bins.astype(np.float64), width, vmax),
    })
out = os.path.join(os.path.dirname(__file__), "thresholds.json")
with open(out, "w") as f:
    json.dump(cases, f)
print("wrote", out, [(c["name"], round(c["kl"], 4), round(c["mse"], 4)) for c in cases])
