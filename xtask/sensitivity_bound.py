#!/usr/bin/env python3
"""The most that re-running only the downstream cone can save over a full
re-run per unit, for `hb-debugger get-sensitivity-of-nodes`.

    python3 xtask/sensitivity_bound.py CALIBRATED.onnx FLOAT_PROFILE.csv QUANT_PROFILE.csv SENS.json

CALIBRATED.onnx   the calibrated model the sensitivity ran on
FLOAT_PROFILE.csv `hb-model-exec perf --profile-path` of the optimized float
                  model (per-node time of the float steps)
QUANT_PROFILE.csv the same for the calibrated model (the time of each
                  calibration node when it is switched ON)
SENS.json         `get-sensitivity-of-nodes ... --json` (its units and their
                  calibration nodes)

For each unit the reuse method executes its calibration nodes (ON) and every
node downstream of them; the naive method executes the whole float model with
those calibration nodes ON. Both score the same outputs, and both run units in
parallel, so the ratio of their work is the bound on the speed-up of the reuse
method with identical results:

    bound = sum over units of (full run) / sum over units of (cone run)

Calibration nodes that are OFF are aliases (no work) in both methods.
"""
import csv
import json
import sys
from collections import defaultdict

import onnx


def node_times(path):
    with open(path) as f:
        return {r["node"]: float(r["mean_ms"]) for r in csv.DictReader(f)}


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    model_path, float_csv, quant_csv, sens_json = sys.argv[1:]
    graph = onnx.load(model_path, load_external_data=False).graph
    float_ms = node_times(float_csv)
    quant_ms = node_times(quant_csv)
    readers = defaultdict(list)
    for i, n in enumerate(graph.node):
        for x in n.input:
            if x:
                readers[x].append(i)
    index = {n.name: i for i, n in enumerate(graph.node)}

    def cost(i, seeds):
        n = graph.node[i]
        if n.op_type == "HzCalibration":
            return quant_ms.get(n.name, 0.0) if n.name in seeds else 0.0
        return float_ms.get(n.name, 0.0)

    rows = json.load(open(sens_json))["rows"]
    full_plain = sum(cost(i, set()) for i in range(len(graph.node)))
    total_full = total_cone = 0.0
    fractions = []
    for r in rows:
        seeds = set(r["calibration_nodes"])
        todo = [index[s] for s in seeds if s in index]
        cone = set(todo)
        while todo:
            i = todo.pop()
            for out in graph.node[i].output:
                for j in readers.get(out, []):
                    if j not in cone:
                        cone.add(j)
                        todo.append(j)
        full = full_plain + sum(quant_ms.get(s, 0.0) for s in seeds)
        part = sum(cost(i, seeds) for i in cone)
        total_full += full
        total_cone += part
        fractions.append(part / full if full else 0.0)
    fractions.sort()
    print(json.dumps({
        "units": len(rows),
        "full_run_ms": round(full_plain, 4),
        "mean_cone_fraction": round(sum(fractions) / max(len(fractions), 1), 4),
        "median_cone_fraction": round(fractions[len(fractions) // 2], 4) if fractions else None,
        "bound": round(total_full / total_cone, 3) if total_cone else None,
    }, indent=1))


if __name__ == "__main__":
    main()
