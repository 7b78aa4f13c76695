#!/usr/bin/env python3
"""Cross-checks RNN / GRU / LSTM against onnxruntime beyond the ONNX node
cases (whose reference ignores sequence_lens, clip and activations).

usage: python3 xtask/gen_rnn_ort_cases.py OUT_DIR     (needs onnx, onnxruntime)
       cargo run -p hb-testkit --bin onnx-suite -- --dir OUT_DIR -v

Writes one case per attribute combination (direction, layout,
sequence_lens, initial states, clip, activations with alpha/beta, GRU
linear_before_reset, LSTM peepholes and input_forget), in the layout of
../shared/onnx-node-tests/node, with onnxruntime's outputs as expected values.
"""
import itertools
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def run_ort(op, ins, outs, hidden, attrs, feeds):
    """onnxruntime's outputs. It has no layout 1: that runs as layout 0 on
    transposed inputs, and the outputs are transposed back (the spec's
    definition of layout 1)."""
    layout = attrs.get("layout", 0)
    if layout:
        attrs = dict(attrs, layout=0)
        feeds = {k: (v.swapaxes(0, 1) if k in ("X", "initial_h", "initial_c") else v)
                 for k, v in feeds.items()}
    names = [o or f"unused{k}" for k, o in enumerate(outs)]
    node = helper.make_node(op, ins, names, hidden_size=hidden, **attrs)
    vi = [helper.make_tensor_value_info(k, TensorProto.INT32 if k == "sequence_lens"
                                        else TensorProto.FLOAT, v.shape)
          for k, v in feeds.items()]
    ovi = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in names]
    model = helper.make_model(helper.make_graph([node], "ort", vi, ovi),
                              opset_imports=[helper.make_opsetid("", 22)])
    model.ir_version = 10
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)
    if layout:
        got = [g.transpose(2, 0, 1, 3) if g.ndim == 4 else g.swapaxes(0, 1) for g in got]
    return [g for g, o in zip(got, outs) if o]


def case(out, name, op, attrs, seq=5, batch=3, inp=4, hidden=3, lens=None,
         init=False, bias=True, peep=False, outputs=("Y", "Y_h", "Y_c"), seed=0):
    rng = np.random.default_rng(seed)
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    layout = attrs.get("layout", 0)
    g = GATES[op]
    xs = [batch, seq, inp] if layout else [seq, batch, inp]
    st = [batch, dirs, hidden] if layout else [dirs, batch, hidden]
    feeds = {
        "X": rng.standard_normal(xs).astype(np.float32),
        "W": (rng.standard_normal([dirs, g * hidden, inp]) * 0.6).astype(np.float32),
        "R": (rng.standard_normal([dirs, g * hidden, hidden]) * 0.6).astype(np.float32),
    }
    if bias:
        feeds["B"] = (rng.standard_normal([dirs, 2 * g * hidden]) * 0.3).astype(np.float32)
    if lens is not None:
        feeds["sequence_lens"] = np.array(lens, np.int32)
    if init:
        feeds["initial_h"] = rng.standard_normal(st).astype(np.float32)
        if op == "LSTM":
            feeds["initial_c"] = rng.standard_normal(st).astype(np.float32)
    if peep:
        feeds["P"] = (rng.standard_normal([dirs, 3 * hidden]) * 0.5).astype(np.float32)
    slots = ["X", "W", "R", "B", "sequence_lens", "initial_h"] + (
        ["initial_c", "P"] if op == "LSTM" else [])
    ins = [s if s in feeds else "" for s in slots]
    while ins and ins[-1] == "":
        ins.pop()
    outs = list(outputs[: 3 if op == "LSTM" else 2])
    node = helper.make_node(op, ins, outs, hidden_size=hidden, **attrs)
    vi = [helper.make_tensor_value_info(k, TensorProto.INT32 if k == "sequence_lens"
                                        else TensorProto.FLOAT, v.shape)
          for k, v in feeds.items()]
    # Graph inputs in slot order (the runner reads input_K by position).
    vi.sort(key=lambda v: slots.index(v.name))
    ovi = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs if o]
    graph = helper.make_graph([node], name, vi, ovi)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    model.ir_version = 10
    got = run_ort(op, ins, outs, hidden, attrs, feeds)
    d = os.path.join(out, name)
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    onnx.save(model, os.path.join(d, "model.onnx"))
    for k, v in enumerate(vi):
        t = numpy_helper.from_array(feeds[v.name], v.name)
        with open(os.path.join(d, "test_data_set_0", f"input_{k}.pb"), "wb") as f:
            f.write(t.SerializeToString())
    for k, (o, v) in enumerate(zip(ovi, got)):
        t = numpy_helper.from_array(v, o.name)
        with open(os.path.join(d, "test_data_set_0", f"output_{k}.pb"), "wb") as f:
            f.write(t.SerializeToString())


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/rnn_ort_cases"
    n = 0
    for op, direction, layout in itertools.product(
            GATES, ["forward", "reverse", "bidirectional"], [0, 1]):
        base = {"direction": direction, "layout": layout}
        tag = f"{op.lower()}_{direction[:3]}_l{layout}"
        variants = {
            "plain": dict(),
            "lens": dict(lens=[5, 2, 4], init=True),
            "lens0": dict(lens=[5, 0, 3], init=True),
            "clip": dict(attrs={"clip": 0.4}, init=True),
        }
        if op == "GRU":
            variants["lbr"] = dict(attrs={"linear_before_reset": 1}, lens=[3, 5, 1], init=True)
        if op == "LSTM":
            variants["peep"] = dict(peep=True, init=True, lens=[4, 5, 2])
            variants["ifg"] = dict(attrs={"input_forget": 1}, peep=True)
            variants["ifg_clip"] = dict(attrs={"input_forget": 1, "clip": 0.3}, init=True)
        for vname, v in variants.items():
            attrs = dict(base, **v.pop("attrs", {}))
            case(out, f"test_{tag}_{vname}", op, attrs, seed=n, **v)
            n += 1
    # Activations with alpha / beta (one direction's list and both).
    acts = {
        "RNN": (["LeakyRelu"], [0.2], []),
        "GRU": (["HardSigmoid", "ScaledTanh"], [0.3, 0.8], [0.4, 1.5]),
        "LSTM": (["HardSigmoid", "Elu", "Softsign"], [0.25, 0.7], [0.45]),
    }
    for op, (names, al, be) in acts.items():
        for direction in ["forward", "bidirectional"]:
            k = 2 if direction == "bidirectional" else 1
            attrs = {"direction": direction, "activations": names * k,
                     "activation_alpha": al * k}
            if be:
                attrs["activation_beta"] = be * k
            case(out, f"test_{op.lower()}_{direction[:3]}_acts", op, attrs, init=True, seed=n)
            n += 1
    # Defaults of a missing alpha / beta. Not Affine, ScaledTanh and
    # ThresholdedRelu: onnxruntime takes 0 there, hb-float the ONNX ops'
    # defaults (see crates/hb-float/src/kernels/rnn.rs).
    for op, names in [("RNN", ["Softplus"]), ("GRU", ["HardSigmoid", "Elu"]),
                      ("LSTM", ["HardSigmoid", "LeakyRelu", "Softsign"])]:
        case(out, f"test_{op.lower()}_default_alpha_acts", op, {"activations": names},
             init=True, seed=n)
        n += 1
    # Only Y_h (Y omitted) and only Y.
    case(out, "test_lstm_only_yh", "LSTM", {}, outputs=("", "Y_h"), init=True, seed=n)
    case(out, "test_gru_only_y", "GRU", {"direction": "reverse"}, outputs=("Y",), seed=n + 1)
    print(f"wrote {n + 2} cases to {out}")


if __name__ == "__main__":
    main()
