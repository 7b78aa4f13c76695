#!/usr/bin/env python3
"""Exports PaddlePaddle models through paddle2onnx (`paddle.onnx.export`)
into OUT/<name>_p<opset>/ (model.onnx, calib/<input>/k.npy,
test/<input>/k.npy, model.yaml), the layout `run_wild.sh` reads:
paddle.vision.models MobileNetV3-Small and ResNet-18 at 64x64, and a
paddle.nn.TransformerEncoder text classifier (int64 token ids, key-padding
mask computed from the pad id inside the model).

    python3 -m venv --system-site-packages /tmp/pdvenv
    /tmp/pdvenv/bin/pip install paddlepaddle paddle2onnx onnx_graphsurgeon
    # tested: paddlepaddle 3.3.1, paddle2onnx 2.1.0 (polygraphy's folding needs
    # onnx_graphsurgeon; installed up front, polygraphy does not try to fetch it)
    /tmp/pdvenv/bin/python xtask/wild/make_wild_paddle.py --out /tmp/wild_pd
    xtask/wild/run_wild.sh /tmp/wild_pd

The model is saved with `paddle.jit.save` and converted with
`paddle2onnx.export`, as the `paddle2onnx` command does. paddle2onnx folds
constants with polygraphy by default (`_p<opset>`); the `_raw<opset>`
variants are exported with `enable_optimize=False, optimize_tool="none"`:
the unfolded graph (Shape/Slice/Concat chains) users get when polygraphy
is missing or its folding fails. Weights are random;
BatchNorm statistics come from train-mode passes on the calibration-like
data. Images: smooth random pictures in [0, 1] normalised with the ImageNet
mean/std; text: ids from the vocabulary, random lengths, pad id 0 at the end.
"""
import argparse
import os
import shutil
import warnings

warnings.simplefilter("ignore")
import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.nn as nn  # noqa: E402
import paddle2onnx  # noqa: E402

paddle.seed(0)
SEQ, VOCAB = 16, 500
N_CALIB, N_TEST = 12, 4
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def image_sample(rng, size=64):
    """A smooth random picture (bilinear blobs plus a gradient), normalised."""
    lo = rng.random((3, 5, 5)).astype(np.float32)
    xs = np.linspace(0, 4, size)
    i0 = np.clip(xs.astype(int), 0, 3)
    f = (xs - i0)[None, :]
    rows = lo[:, i0, :] * (1 - f.T)[None] + lo[:, i0 + 1, :] * f.T[None]
    img = rows[:, :, i0] * (1 - f)[None] + rows[:, :, i0 + 1] * f[None]
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    img = img + 0.3 * (rng.random() - 0.5) * (xx + yy)[None] + 0.04 * rng.standard_normal(img.shape)
    img = np.clip(img, 0, 1)[None].astype(np.float32)
    return {"x": ((img - MEAN) / STD).astype(np.float32)}


def text_sample(rng):
    n = int(rng.integers(4, SEQ + 1))
    ids = np.zeros((1, SEQ), np.int64)
    ids[0, :n] = rng.integers(3, VOCAB, n)
    ids[0, 0] = 1
    return {"input_ids": ids}


class TextCls(nn.Layer):
    """Token + position embedding, TransformerEncoder with a key-padding
    mask, masked mean pooling, linear head."""

    def __init__(self, d=64):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, d)
        self.pos = self.create_parameter([1, SEQ, d], default_initializer=nn.initializer.Normal(std=0.02))
        layer = nn.TransformerEncoderLayer(d, 4, 128, dropout=0.0, activation="gelu")
        self.enc = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(d))
        self.head = nn.Linear(d, 5)

    def forward(self, input_ids):
        keep = (input_ids != 0).astype("float32")  # [B, S]
        mask = (1.0 - keep[:, None, None, :]) * -1e4  # additive mask, [B, 1, 1, S]
        h = self.enc(self.emb(input_ids) + self.pos, src_mask=mask)
        pooled = (h * keep[:, :, None]).sum(1) / keep.sum(1, keepdim=True)
        return self.head(pooled)


MODELS = {
    "pd_mnv3s": (lambda: paddle.vision.models.mobilenet_v3_small(num_classes=10), image_sample,
                 [("x", [1, 3, 64, 64], "float32")], 13),
    "pd_resnet18": (lambda: paddle.vision.models.resnet18(num_classes=10), image_sample,
                    [("x", [1, 3, 64, 64], "float32")], 11),
    "pd_textcls": (TextCls, text_sample, [("input_ids", [1, SEQ], "int64")], 17),
}


def yaml(names, shapes):
    fm = ";".join("featuremap" for _ in names)
    return ("model_parameters:\n  onnx_model: model.onnx\n  march: nash-e\n"
            "  working_dir: out\n  output_model_file_prefix: m\n"
            f"input_parameters:\n  input_name: {';'.join(names)}\n"
            f"  input_type_train: {fm}\n  input_type_rt: {fm}\n"
            f"  input_shape: {';'.join('x'.join(map(str, s)) for s in shapes)}\n"
            f"calibration_parameters:\n  cal_data_dir: {';'.join('calib/' + n for n in names)}\n")


def export(name, out, raw):
    build, gen, spec, opset = MODELS[name]
    paddle.seed(0)
    m = build()
    names = [s[0] for s in spec]
    rng = np.random.default_rng(7)
    m.train()
    with paddle.no_grad():  # BatchNorm statistics (momentum 0.9: enough passes)
        for _ in range(30):
            m(*[paddle.to_tensor(gen(rng)[n]) for n in names])
    m.eval()
    tag = f"{name}_{'raw' if raw else 'p'}{opset}"
    d = os.path.join(out, tag)
    os.makedirs(d, exist_ok=True)
    try:
        spec_ = [paddle.static.InputSpec(s, t, n) for n, s, t in spec]
        tmp = os.path.join(d, "paddle")
        paddle.jit.save(m, os.path.join(tmp, "model"), input_spec=spec_)
        model_file = next(os.path.join(tmp, f) for f in sorted(os.listdir(tmp))
                          if f.endswith((".json", ".pdmodel")))
        paddle2onnx.export(model_file, os.path.join(tmp, "model.pdiparams"),
                           os.path.join(d, "model.onnx"), opset_version=opset,
                           auto_upgrade_opset=False, enable_optimize=not raw,
                           optimize_tool="none" if raw else "polygraphy")
        shutil.rmtree(tmp)
    except Exception as e:  # record and go on: exporters fail on some models
        print(tag, "EXPORT FAILED", type(e).__name__, str(e).replace("\n", " ")[:200])
        shutil.rmtree(d)
        return
    rng = np.random.default_rng(1)
    for split, n_s in (("calib", N_CALIB), ("test", N_TEST)):
        for k in range(n_s):
            s = gen(rng)
            for n in names:
                os.makedirs(os.path.join(d, split, n), exist_ok=True)
                np.save(os.path.join(d, split, n, f"{k}.npy"), s[n])
    with open(os.path.join(d, "model.yaml"), "w") as f:
        f.write(yaml(names, [s[1] for s in spec]))
    print(tag, "ok")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/wild_pd")
    ap.add_argument("models", nargs="*")
    a = ap.parse_args()
    for name in MODELS:
        if not a.models or name in a.models:
            export(name, a.out, raw=False)
            export(name, a.out, raw=True)


if __name__ == "__main__":
    main()
