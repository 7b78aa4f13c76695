#!/usr/bin/env python3
"""Calibration side by side: hb-calib vs onnxruntime quantize_static, same
calibration samples, same held-out samples, in one run.

    python3 xtask/calib_bench.py [--bin target/release] [--out docs/benchmarks.md] [--repeats 3]

For every fixture model and method pair (hb-calib `max` vs ORT MinMax,
hb-calib `kl` vs ORT Entropy with its defaults and with 2048 bins / 128
quantized bins, the setting in which ORT's KL actually searches; weights symmetric per channel on both sides,
activations symmetric per tensor) it measures the wall time of the whole
hb-calib command (load, optimize, statistics, scoring, per-node report,
lowering, writing the artefacts), its in-process part (the same without
process start and exit, from hb-calib's JSON summary), ORT's
quant_pre_process + quantize_static inside Python, and the mean output
cosine over the held-out test samples. Writes the table
between the calib-bench markers of docs/benchmarks.md.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIRS = [("max", "minmax"), ("kl", "entropy"), ("kl", "entropy2048")]


def fixture_models():
    for name in sorted(os.listdir(os.path.join(ROOT, "fixtures"))):
        meta_path = os.path.join(ROOT, "fixtures", name, "meta.json")
        if not os.path.exists(meta_path):
            continue
        meta = json.load(open(meta_path))
        inputs = [i["name"] for i in meta["inputs"]]
        for m in meta["models"]:
            yield name, m["file"], inputs


def ours(bin_dir, fixture, model, inputs, method, work):
    fdir = os.path.join(ROOT, "fixtures", fixture)
    cfg = os.path.join(work, "model.yaml")
    with open(cfg, "w") as f:
        f.write(
            "model_parameters:\n"
            f"  onnx_model: {os.path.join(fdir, model)}\n"
            f"  working_dir: {os.path.join(work, 'out')}\n"
            "  output_model_file_prefix: m\n"
            "input_parameters:\n"
            f"  input_name: {';'.join(inputs)}\n"
            "calibration_parameters:\n"
            f"  cal_data_dir: {';'.join(os.path.join(fdir, 'calib', i) for i in inputs)}\n"
            f"  calibration_type: {method}\n"
        )
    t0 = time.perf_counter()
    r = subprocess.run([os.path.join(bin_dir, "hb-calib"), "-c", cfg, "--json"],
                       capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        return {"error": r.stderr.strip()}
    info = subprocess.run([os.path.join(bin_dir, "hb-info"),
                           os.path.join(work, "out", "m_calibrated_model.onnx"),
                           "-c", os.path.join(fdir, "test"), "--json"],
                          capture_output=True, text=True)
    if info.returncode != 0:
        return {"error": info.stderr.strip()}
    cmp = json.loads(info.stdout)["comparison"]
    inside = json.loads(r.stdout)["seconds"]
    return {"seconds": seconds, "inside": inside,
            "cosine": {c["output"]: c["cosine"] for c in cmp},
            "unique": {c["output"]: (c["float_unique"], c["calibrated_unique"]) for c in cmp}}


def theirs(fixture, model, method):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "xtask", "ort_quant_bench.py"),
                        os.path.join(ROOT, "fixtures", fixture), "--model", model,
                        "--method", method], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"}
    res = json.loads(r.stdout)[0]
    if "error" in res:
        return {"error": res["error"].strip().splitlines()[-1]}
    return {"seconds": res["total_seconds"], "cosine": res["cosine"]}


def median_run(runs):
    """The run with the median time (the first error, if any run failed)."""
    for r in runs:
        if "error" in r:
            return r
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def fmt_cos(r):
    if "error" in r:
        return "error: " + r["error"][:60]
    return ", ".join(f"{v:.6f}" for v in r["cosine"].values())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--repeats", type=int, default=3,
                    help="interleaved runs per pair, median time (2048-bin Entropy runs once)")
    a = ap.parse_args()
    rows = []
    for fixture, model, inputs in fixture_models():
        for mine, ort_m in PAIRS:
            # Interleaved repeats, median time (the cosines do not change
            # between runs). ORT's 2048-bin Entropy takes a minute: once.
            o_runs, t_runs = [], []
            for _ in range(1 if ort_m == "entropy2048" else a.repeats):
                with tempfile.TemporaryDirectory() as work:
                    o_runs.append(ours(a.bin, fixture, model, inputs, mine, work))
                t_runs.append(theirs(fixture, model, ort_m))
            o, t = median_run(o_runs), median_run(t_runs)
            ok = "seconds" in o and "seconds" in t
            inside = (sorted(r["inside"] for r in o_runs)[len(o_runs) // 2]
                      if all("inside" in r for r in o_runs) else float("nan"))
            ratio = f"{t['seconds'] / o['seconds']:.1f}×" if ok else "–"
            ratio_in = f"{t['seconds'] / inside:.1f}×" if ok and inside > 0 else "–"
            rows.append(f"| {fixture}/{model} | {mine} vs {ort_m} | "
                        f"{o.get('seconds', float('nan')):.3f} | {inside:.3f} | "
                        f"{t.get('seconds', float('nan')):.3f} | {ratio} | {ratio_in} | "
                        f"{fmt_cos(o)} | {fmt_cos(t)} |")
            print(rows[-1], flush=True)
    section = (
        "<!-- calib-bench:begin -->\n"
        "## Calibration: hb-calib vs ONNX Runtime quantize_static\n\n"
        f"Measured by `python3 xtask/calib_bench.py` (median of {a.repeats} interleaved runs, "
        "one run for ORT's 2048-bin Entropy; same machine, same calibration and "
        "held-out samples). hb-calib time: the whole command (process start, load, optimize, "
        "statistics, scoring, per-node report, lowering to .bc, writing three models, the .bc and "
        "the log, process exit); in-process: the same minus process start and exit, as "
        "hb-calib measures it (`seconds` of its JSON summary), which is how ORT's time is "
        "taken (inside Python, after the interpreter started and imported onnxruntime). ORT time: "
        "quant_pre_process + quantize_static (QDQ, per-channel symmetric int8 weights, symmetric "
        "int8 activations). Cosine: mean over the held-out test samples, quantized vs float, per "
        "output. ORT's Entropy with its defaults (128 bins, 128 levels) has a single candidate, "
        "so it equals MinMax; `entropy2048` is ORT's Entropy with 2048 histogram bins and 128 "
        "quantized bins (patched into quantize_static, see xtask/ort_quant_bench.py), the "
        "TensorRT-style KL search — the like-for-like reference for hb-calib's `kl`.\n\n"
        "| model | method | hb-calib (s) | in-process (s) | ORT (s) | ORT / hb-calib | ORT / in-process | hb-calib cosine | ORT cosine |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n<!-- calib-bench:end -->"
    )
    text = open(a.out).read() if os.path.exists(a.out) else ""
    if "<!-- calib-bench:begin -->" in text:
        pre = text.split("<!-- calib-bench:begin -->")[0]
        post = text.split("<!-- calib-bench:end -->")[1]
        text = pre + section + post
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    open(a.out, "w").write(text)


if __name__ == "__main__":
    main()
