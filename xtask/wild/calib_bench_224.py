#!/usr/bin/env python3
"""Calibration of full-size vision models (224×224): hb-calib vs onnxruntime
quantize_static, same samples, in one run.

The fixtures are small; users calibrate ResNet/MobileNet-sized models on
tens to hundreds of pictures, where the float statistics pass decides the
time. This exports torchvision models (random weights, BatchNorm statistics
from train-mode passes, TorchScript opset 13), writes N calibration and 4
held-out pictures (smooth random images normalised with the ImageNet
mean/std), and times

  hb-calib --config <yaml> (whole command, and its in-process `seconds`)
  quant_pre_process + quantize_static (QDQ, per-channel symmetric int8
  weights, symmetric int8 activations) inside Python

for `max` vs MinMax, then scores both on the held-out pictures (cosine to
the float ORT output).

    pip install torchvision==0.29.2 pillow --no-deps --target /tmp/tvlib
    cargo build --release -p hb-tools
    PYTHONPATH=/tmp/tvlib python3 xtask/wild/calib_bench_224.py [--out /tmp/calib224]
        [--num-samples 32] [--repeats 3] [models...]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import warnings

warnings.simplefilter("ignore")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "xtask"))
MODELS = {
    "resnet18": torchvision.models.resnet18,
    "mobilenet_v2": torchvision.models.mobilenet_v2,
    "efficientnet_b0": torchvision.models.efficientnet_b0,
}
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def picture(rng):
    """A smooth random 224×224 picture in [0, 1], normalised like ImageNet."""
    low = rng.random((1, 3, 7, 7), dtype=np.float32)
    img = torch.nn.functional.interpolate(torch.from_numpy(low), size=(224, 224),
                                          mode="bicubic", align_corners=False).numpy()
    img = np.clip(img + 0.05 * rng.standard_normal(img.shape, dtype=np.float32), 0, 1)
    return ((img - MEAN) / STD).astype(np.float32)


def export(name, out, num_calib):
    """<out>/<name>/model.onnx, calib/image/<k>.npy, test/image/<k>.npy."""
    d = os.path.join(out, name)
    path = os.path.join(d, "model.onnx")
    rng = np.random.default_rng(0)
    if not os.path.exists(path):
        os.makedirs(d, exist_ok=True)
        torch.manual_seed(0)
        m = MODELS[name]()
        m.train()
        with torch.no_grad():
            for _ in range(4):
                m(torch.from_numpy(np.concatenate([picture(rng) for _ in range(4)])))
        m.eval()
        torch.onnx.export(m, torch.from_numpy(picture(rng)), path, opset_version=13,
                          dynamo=False, input_names=["image"], output_names=["logits"])
    for split, count in (("calib", num_calib), ("test", 4)):
        sd = os.path.join(d, split, "image")
        if os.path.isdir(sd) and len(os.listdir(sd)) == count:
            continue
        shutil.rmtree(sd, ignore_errors=True)
        os.makedirs(sd)
        for k in range(count):
            np.save(os.path.join(sd, f"{k}.npy"), picture(rng))
    return d


def ours(bin_dir, d, work):
    cfg = os.path.join(work, "model.yaml")
    with open(cfg, "w") as f:
        f.write("model_parameters:\n"
                f"  onnx_model: {os.path.join(d, 'model.onnx')}\n"
                f"  working_dir: {os.path.join(work, 'out')}\n"
                "  output_model_file_prefix: m\n"
                "input_parameters:\n  input_name: image\n"
                f"calibration_parameters:\n  cal_data_dir: {os.path.join(d, 'calib', 'image')}\n"
                "  calibration_type: max\n")
    t0 = time.perf_counter()
    r = subprocess.run([os.path.join(bin_dir, "hb-calib"), "-c", cfg, "--json"],
                       capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return seconds, json.loads(r.stdout)["seconds"]


def ours_cosine(bin_dir, d, work):
    info = subprocess.run([os.path.join(bin_dir, "hb-info"),
                           os.path.join(work, "out", "m_calibrated_model.onnx"),
                           "-c", os.path.join(d, "test"), "--json"],
                          capture_output=True, text=True, check=True)
    return json.loads(info.stdout)["comparison"][0]["cosine"]


def theirs(d, work):
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)
    from ort_quant_bench import Reader, load_samples
    calib = load_samples(os.path.join(d, "calib"), ["image"])
    pre = os.path.join(work, "pre.onnx")
    q = os.path.join(work, "q.onnx")
    t0 = time.perf_counter()
    quant_pre_process(os.path.join(d, "model.onnx"), pre)
    quantize_static(pre, q, Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    return time.perf_counter() - t0, q


def theirs_cosine(d, q):
    import onnxruntime as ort
    from ort_qdq_check import cosine
    from ort_quant_bench import load_samples
    f = ort.InferenceSession(os.path.join(d, "model.onnx"), providers=["CPUExecutionProvider"])
    s = ort.InferenceSession(q, providers=["CPUExecutionProvider"])
    cos = [cosine(s.run(None, feed)[0], f.run(None, feed)[0])
           for feed in load_samples(os.path.join(d, "test"), ["image"])]
    return float(np.mean(cos))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/calib224")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--num-samples", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("models", nargs="*", default=list(MODELS))
    a = ap.parse_args()
    import onnxruntime.tools.symbolic_shape_infer  # noqa: F401  (imports outside the timing)
    print(f"| model ({a.num_samples} samples) | hb-calib whole (s) | in-process (s) | ORT (s) "
          "| ORT / hb-calib | hb-calib cosine | ORT cosine |")
    print("|---|---|---|---|---|---|---|")
    for name in a.models:
        d = export(name, a.out, a.num_samples)
        mine, inside, their = [], [], []
        for _ in range(a.repeats):
            work = os.path.join(a.out, name, "work")
            shutil.rmtree(work, ignore_errors=True)
            os.makedirs(work)
            s, q = theirs(d, work)
            their.append(s)
            t, i = ours(a.bin, d, work)
            mine.append(t)
            inside.append(i)
        med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
        print(f"| {name} | {med(mine):.2f} | {med(inside):.2f} | {med(their):.2f} | "
              f"{med(their) / med(mine):.1f}× | {ours_cosine(a.bin, d, work):.6f} | "
              f"{theirs_cosine(d, q):.6f} |", flush=True)


if __name__ == "__main__":
    main()
