#!/usr/bin/env python3
"""ONNX Runtime side of the calibration benchmark: onnxruntime's own static
post-training quantization on a fixture, timed, then scored on held-out data.

    python3 xtask/ort_quant_bench.py fixtures/<name> [--model FILE]
        [--method minmax|entropy|entropy2048|all] [--num-samples N] [--no-preprocess]

For each model of the fixture (meta.json "models", or only --model) and each
method it runs
  onnxruntime.quantization.quant_pre_process   (unless --no-preprocess)
  onnxruntime.quantization.quantize_static(QuantFormat.QDQ, per_channel=True,
      activation_type=QInt8, weight_type=QInt8,
      extra_options={ActivationSymmetric: True, WeightSymmetric: True},
      calibrate_method=MinMax | Entropy)
(entropy2048: Entropy with 2048 histogram bins, see METHODS)
over calib/<input>/<k>.npy (the first N with --num-samples), then runs the
quantized model on every test/<input>/<k>.npy and compares with the float
ORT outputs <ort_dir>/<output>/<k>.npy: per output, the mean over samples of
cos = a.b / (max(|a|, 1e-8) * max(|b|, 1e-8)).

"seconds" is the wall time of quantize_static (calibration + quantization);
"preprocess_seconds" is quant_pre_process's, "total_seconds" their sum.
Integer model inputs are fed unchanged (quantize_static only quantizes float
tensors). A model ORT fails on gets {"error": "..."} instead of numbers.
Prints a JSON list, one entry per (model, method).
"""
import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import traceback

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quant_pre_process, quantize_static)

import importlib

_ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")

METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    # quantize_static cannot pass the histogram size: its Entropy default is
    # num_bins = num_quantized_bins = 128, which leaves one candidate
    # threshold (the histogram's full range), i.e. the same as MinMax. This
    # variant patches create_calibrator to use 2048 bins / 128 quantized bins
    # (the TensorRT-style KL setting) so the KL search actually searches.
    "entropy2048": CalibrationMethod.Entropy,
}


@contextlib.contextmanager
def entropy_bins(num_bins, num_quantized_bins):
    orig = _ort_quantize.create_calibrator

    def patched(*args, **kw):
        extra = dict(kw.get("extra_options") or {})
        extra.update(num_bins=num_bins, num_quantized_bins=num_quantized_bins)
        kw["extra_options"] = extra
        return orig(*args, **kw)

    _ort_quantize.create_calibrator = patched
    try:
        yield
    finally:
        _ort_quantize.create_calibrator = orig


def load_samples(split_dir, names, limit=None):
    """[{input: array}, ...] from <split_dir>/<input>/<k>.npy, k = 0, 1, ..."""
    out = []
    k = 0
    while all(os.path.exists(os.path.join(split_dir, n, f"{k}.npy")) for n in names):
        if limit is not None and k >= limit:
            break
        out.append({n: np.load(os.path.join(split_dir, n, f"{k}.npy")) for n in names})
        k += 1
    return out


class Reader(CalibrationDataReader):
    def __init__(self, samples):
        self.samples = samples
        self.it = iter(samples)

    def get_next(self):
        return next(self.it, None)

    def rewind(self):
        self.it = iter(self.samples)


# One definition of the metric and of a graph's real inputs for both scripts.
from ort_qdq_check import cosine, io_names as graph_io  # noqa: E402


def one_run(fixture, entry, method, calib, test, preprocess, workdir):
    name = os.path.basename(os.path.normpath(fixture))
    res = {"fixture": name, "model": entry["file"], "method": method,
           "num_calib": len(calib), "num_test": len(test), "preprocess": preprocess}
    src = os.path.join(fixture, entry["file"])
    _, outputs = graph_io(src)
    stem = os.path.splitext(entry["file"])[0]
    try:
        model_in = src
        pre_s = 0.0
        if preprocess:
            model_in = os.path.join(workdir, f"{stem}_pre.onnx")
            t = time.perf_counter()
            quant_pre_process(src, model_in)
            pre_s = time.perf_counter() - t
        qpath = os.path.join(workdir, f"{stem}_{method}_qdq.onnx")
        t = time.perf_counter()
        bins = entropy_bins(2048, 128) if method == "entropy2048" else contextlib.nullcontext()
        with bins, contextlib.redirect_stdout(sys.stderr):  # the entropy calibrator prints
            quantize_static(
                model_in, qpath, Reader(calib),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=METHODS[method],
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
            )
        q_s = time.perf_counter() - t
        res.update(seconds=round(q_s, 3), preprocess_seconds=round(pre_s, 3),
                   total_seconds=round(q_s + pre_s, 3))
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(qpath, so, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(qpath).graph.node]
        res["num_quantize_linear"] = ops.count("QuantizeLinear")
        cos = {o: [] for o in outputs}
        for k, feed in enumerate(test):
            for o, got in zip(outputs, sess.run(outputs, feed)):
                want = np.load(os.path.join(fixture, entry["ort_dir"], o, f"{k}.npy"))
                cos[o].append(cosine(got, want))
        res["cosine"] = {o: float(np.mean(v)) for o, v in cos.items()}
    except Exception as e:  # record ORT failures instead of stopping the benchmark
        res["error"] = f"{type(e).__name__}: {e}".strip()[:2000]
        res["traceback_tail"] = traceback.format_exc().strip().splitlines()[-3:]
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fixture", help="fixture directory, e.g. fixtures/resnet_tiny")
    ap.add_argument("--model", help="only this model file of the fixture")
    ap.add_argument("--method", default="all", choices=[*METHODS, "all"])
    ap.add_argument("--num-samples", type=int, help="use only the first N calibration samples")
    ap.add_argument("--no-preprocess", action="store_true", help="skip quant_pre_process")
    ap.add_argument("--keep", metavar="DIR", help="keep the pre-processed and quantized models here")
    a = ap.parse_args()
    # Import what quant_pre_process loads lazily, so its timing excludes imports.
    import onnxruntime.tools.symbolic_shape_infer  # noqa: F401

    meta = json.load(open(os.path.join(a.fixture, "meta.json")))
    entries = [e for e in meta["models"] if a.model in (None, e["file"])]
    if not entries:
        raise SystemExit(f"no model {a.model!r} in {a.fixture}/meta.json")
    methods = list(METHODS) if a.method == "all" else [a.method]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = a.keep or tmp
        os.makedirs(work, exist_ok=True)
        for e in entries:
            inputs, _ = graph_io(os.path.join(a.fixture, e["file"]))
            calib = load_samples(os.path.join(a.fixture, "calib"), inputs, a.num_samples)
            test = load_samples(os.path.join(a.fixture, "test"), inputs)
            for m in methods:
                results.append(one_run(a.fixture, e, m, calib, test, not a.no_preprocess, work))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
