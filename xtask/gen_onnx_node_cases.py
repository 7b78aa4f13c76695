"""Regenerates the ONNX node conformance cases from the pinned onnx package.

usage: python3 xtask/gen_onnx_node_cases.py OUT_DIR      (needs onnx==1.23.2, numpy)

Writes OUT_DIR/<case>/model.onnx and test_data_set_N/{input,output}_K.pb, the
layout `onnx-suite --dir OUT_DIR` reads (the same as ../shared/onnx-node-tests/node).
"""
import os
import shutil
import sys

import onnx
from onnx import numpy_helper
from onnx.backend.test.case import node as node_cases

PINNED = "1.23.2"


def to_proto(value, info):
    kind = info.type
    if kind.HasField("sequence_type"):
        return numpy_helper.from_list(value, info.name)
    if kind.HasField("optional_type"):
        return numpy_helper.from_optional(value, info.name)
    if kind.HasField("map_type"):
        return numpy_helper.from_dict(value, info.name)
    if isinstance(value, onnx.TensorProto):
        return value
    return numpy_helper.from_array(value, info.name)


def main(out):
    if onnx.__version__ != PINNED:
        print(f"warning: onnx {onnx.__version__} installed, the committed allow-list was made with {PINNED}")
    count = 0
    for case in node_cases.collect_testcases(None):
        folder = os.path.join(out, case.name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        with open(os.path.join(folder, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        for n, (inputs, outputs) in enumerate(case.data_sets):
            data = os.path.join(folder, f"test_data_set_{n}")
            os.makedirs(data)
            for prefix, values, infos in (("input", inputs, case.model.graph.input), ("output", outputs, case.model.graph.output)):
                for k, v in enumerate(values):
                    try:
                        proto = to_proto(v, infos[k])
                    except Exception as e:  # unsupported container types are skipped, as upstream does
                        print("skip", case.name, e)
                        continue
                    with open(os.path.join(data, f"{prefix}_{k}.pb"), "wb") as f:
                        f.write(proto.SerializeToString())
        count += 1
    print(count, "cases written to", out)


if __name__ == "__main__":
    main(sys.argv[1])
