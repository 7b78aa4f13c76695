#!/usr/bin/env python3
"""Runs an exported QDQ model in onnxruntime and compares it with hbkit's
simulation of the calibrated model.

    python3 xtask/ort_qdq_check.py CALIBRATED.onnx QDQ.onnx INPUTS_DIR SIM_DIR

- INPUTS_DIR/<input_name>/<k>.npy: the model inputs, k = 0, 1, ...
- SIM_DIR/<output_name>/<k>.npy:   our outputs of the calibrated model for
  the same samples (e.g. from hb-model-exec).

Prints JSON: per output, the mean over samples of
cos = a.b / (max(|a|, 1e-8) * max(|b|, 1e-8)), the largest absolute
difference, and how many samples match bit for bit. The calibrated model is
read only for its input and output names (it must agree with the QDQ one).
"""
import argparse
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort


def cosine(a, b):
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    return float(a @ b / (max(np.linalg.norm(a), 1e-8) * max(np.linalg.norm(b), 1e-8)))


def io_names(path):
    g = onnx.load(path, load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    return [i.name for i in g.input if i.name not in inits], [o.name for o in g.output]


def samples(folder):
    k = 0
    while os.path.exists(os.path.join(folder, f"{k}.npy")):
        yield k, np.load(os.path.join(folder, f"{k}.npy"))
        k += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("calibrated")
    ap.add_argument("qdq")
    ap.add_argument("inputs_dir")
    ap.add_argument("sim_dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--opt-level", choices=["disable", "basic", "extended", "all"], default="basic",
                    help="ORT graph optimisation level; above 'basic' ORT fuses Q/DQ pairs into "
                         "integer kernels (QLinearMatMul, ...) whose rounding differs from fake-quant")
    a = ap.parse_args()

    c_in, c_out = io_names(a.calibrated)
    q_in, q_out = io_names(a.qdq)
    if sorted(c_in) != sorted(q_in) or sorted(c_out) != sorted(q_out):
        sys.exit(f"input/output names differ: calibrated {c_in} -> {c_out}, qdq {q_in} -> {q_out}")

    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[a.opt_level]
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.qdq, so, providers=["CPUExecutionProvider"])
    feeds = {name: dict(samples(os.path.join(a.inputs_dir, name))) for name in q_in}
    n = min(len(v) for v in feeds.values()) if feeds else 0
    if n == 0:
        sys.exit(f"no samples under {a.inputs_dir}/<input>/0.npy")

    stats = {o: {"cos": [], "max_abs": 0.0, "bit_exact": 0} for o in q_out}
    for k in range(n):
        outs = sess.run(q_out, {name: feeds[name][k] for name in q_in})
        for name, got in zip(q_out, outs):
            want = np.load(os.path.join(a.sim_dir, name, f"{k}.npy"))
            if got.shape != want.shape:
                sys.exit(f"{name}[{k}]: shape {got.shape} (ORT) vs {want.shape} (simulation)")
            s = stats[name]
            s["cos"].append(cosine(got, want))
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            s["max_abs"] = max(s["max_abs"], float(np.nanmax(diff)) if diff.size else 0.0)
            s["bit_exact"] += int(got.dtype == want.dtype and got.tobytes() == want.tobytes())

    print(json.dumps({
        "samples": n,
        "outputs": {
            o: {"cosine": float(np.mean(s["cos"])), "max_abs_diff": s["max_abs"],
                "bit_exact_samples": s["bit_exact"]}
            for o, s in stats.items()
        },
    }, indent=2))


if __name__ == "__main__":
    main()
