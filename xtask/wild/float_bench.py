#!/usr/bin/env python3
"""Float interpreter latency on full-size vision models (224×224), ours vs
ONNX Runtime, one thread, interleaved rounds in the same run.

The fixtures are small; real users calibrate ResNet/MobileNet-sized models,
where the per-op kernels (3×3 and depthwise convs, MaxPool, the classifier
GEMV) decide hb-calib's statistics pass and the debugger's re-runs.

    pip install torchvision==0.29.2 pillow --no-deps --target /tmp/tvlib
    cargo build --release -p hb-tools
    PYTHONPATH=/tmp/tvlib python3 xtask/wild/float_bench.py [--out /tmp/float_bench] [--rounds 3]

Prints a markdown table (median of the per-round medians, range in brackets)
and the per-op-type split of our time (`hb-model-exec perf --profile-path`).
Weights are random (no network for pretrained ones); BatchNorm statistics
come from a few train-mode passes so activations have realistic ranges.
"""
import argparse
import csv
import json
import os
import re
import subprocess
import sys
import warnings

warnings.simplefilter("ignore")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXEC = os.path.join(ROOT, "target", "release", "hb-model-exec")
MODELS = {
    "resnet18": torchvision.models.resnet18,
    "mobilenet_v2": torchvision.models.mobilenet_v2,
    "efficientnet_b0": torchvision.models.efficientnet_b0,
}


def export(name, out):
    path = os.path.join(out, name + ".onnx")
    inp = os.path.join(out, name + "_in", "image")
    if os.path.exists(path):
        return path, os.path.dirname(inp)
    torch.manual_seed(0)
    m = MODELS[name]()
    m.train()
    with torch.no_grad():
        for _ in range(4):
            m(torch.randn(2, 3, 224, 224) * 0.5)
    m.eval()
    x = torch.randn(1, 3, 224, 224)
    torch.onnx.export(m, x, path, opset_version=13, dynamo=False,
                      input_names=["image"], output_names=["logits"])
    os.makedirs(inp, exist_ok=True)
    np.save(os.path.join(inp, "0.npy"), x.numpy())
    return path, os.path.dirname(inp)


def ours(model, inputs, frames, profile=None):
    cmd = [EXEC, "perf", "--json", "--model-file", model, "--input-file",
           os.path.join(inputs, "image", "0.npy"), "--thread-num", "1",
           "--frame-count", str(frames)]
    if profile:
        cmd += ["--profile-path", profile]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    m = re.search(r'"median_ms":\s*([0-9.eE+-]+)', text)
    return float(m.group(1)) if m else float("nan")


def ort(model, inputs, frames):
    text = subprocess.run([sys.executable, os.path.join(ROOT, "xtask", "ort_bench.py"), model,
                           inputs, "1", str(frames)], check=True, capture_output=True,
                          text=True).stdout
    return json.loads(text)["median_ms"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/float_bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("models", nargs="*", default=list(MODELS))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    print("| model | hbkit median (ms) | ONNX Runtime median (ms) | hbkit / ORT |")
    print("|---|---|---|---|")
    splits = {}
    for name in a.models:
        model, inputs = export(name, a.out)
        mine, theirs = [], []
        for _ in range(a.rounds):
            theirs.append(ort(model, inputs, a.frames))
            mine.append(ours(model, inputs, a.frames))
        mine.sort()
        theirs.sort()
        med = lambda v: v[len(v) // 2]  # noqa: E731
        print(f"| {name} 1×3×224×224 | {med(mine):.2f} ({mine[0]:.2f}–{mine[-1]:.2f}) "
              f"| {med(theirs):.2f} ({theirs[0]:.2f}–{theirs[-1]:.2f}) "
              f"| {med(mine) / med(theirs):.2f}× |")
        prof = os.path.join(a.out, name + "_ops.csv")
        ours(model, inputs, a.frames, prof)
        by_op = {}
        for r in csv.DictReader(open(prof)):
            by_op[r["op"]] = by_op.get(r["op"], 0.0) + float(r["mean_ms"])
        splits[name] = sorted(by_op.items(), key=lambda kv: -kv[1])[:4]
    print()
    for name, ops in splits.items():
        print(f"- {name}: " + ", ".join(f"{op} {ms:.2f} ms" for op, ms in ops))


if __name__ == "__main__":
    main()
