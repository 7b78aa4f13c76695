#!/usr/bin/env python3
"""Float check of exported wild models against onnxruntime: every held-out
sample (test/input/*.npy) through onnxruntime and `hb-model-exec infer
--dump-intermediate`; prints the max abs difference of the model outputs
and of every RNN / GRU / LSTM output.

    python3 xtask/wild/ort_diff.py /tmp/wild [model_dir ...]

Needs onnx, onnxruntime and `cargo build --release -p hb-tools`.
"""
import glob
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXEC = os.path.join(ROOT, "target", "release", "hb-model-exec")
RECURRENT = ("RNN", "GRU", "LSTM")


def check(d):
    m = onnx.load(os.path.join(d, "model.onnx"))
    outs = [o.name for o in m.graph.output]
    rec = [o for n in m.graph.node if n.op_type in RECURRENT for o in n.output if o]
    for name in rec:
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    worst = {"outputs": 0.0, "recurrent": 0.0}
    for f in sorted(glob.glob(os.path.join(d, "test", "input", "*.npy"))):
        want = dict(zip(outs + rec, sess.run(None, {inp: np.load(f)})))
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([EXEC, "infer", "--model-file", os.path.join(d, "model.onnx"),
                            "--input-file", f, "--output-dir", tmp, "--dump-intermediate"],
                           check=True, capture_output=True)
            files = os.listdir(os.path.join(tmp, "intermediate"))
            for name, w in want.items():
                safe = re.sub(r"[^A-Za-z0-9]", "_", name)
                if name in outs:
                    got = np.load(os.path.join(tmp, f"{name}.npy"))
                    kind = "outputs"
                else:
                    hit = [x for x in files if x[4:] == f"_{safe}.npy"]
                    got = np.load(os.path.join(tmp, "intermediate", hit[0]))
                    kind = "recurrent"
                assert got.shape == w.shape, (name, got.shape, w.shape)
                worst[kind] = max(worst[kind], float(np.abs(got - w).max()))
    ops = sorted({n.op_type for n in m.graph.node if n.op_type in RECURRENT})
    print(f"{os.path.basename(d.rstrip('/')):<18} {'+'.join(ops):<9} "
          f"max|ORT - hb| outputs {worst['outputs']:.2e}  recurrent outputs {worst['recurrent']:.2e}")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "/tmp/wild"
    dirs = sys.argv[2:] or sorted(glob.glob(os.path.join(root, "*", "")))
    for d in dirs:
        check(os.path.join(root, d) if not os.path.isabs(d) else d)


if __name__ == "__main__":
    main()
