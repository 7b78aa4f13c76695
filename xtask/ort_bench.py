"""Times ONNX Runtime on one model and one input sample (used by `cargo xtask bench`).

usage: ort_bench.py MODEL INPUT_DIR THREADS RUNS
INPUT_DIR holds <input_name>/0.npy. Prints JSON {"median_ms": ..., "mean_ms": ...}.
"""
import json, os, sys, time

import numpy as np
import onnxruntime as ort

model, input_dir, threads, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
feeds = {i.name: np.load(os.path.join(input_dir, i.name, "0.npy")) for i in sess.get_inputs()}
sess.run(None, feeds)
times = []
for _ in range(runs):
    t = time.perf_counter()
    sess.run(None, feeds)
    times.append((time.perf_counter() - t) * 1e3)
times.sort()
print(json.dumps({"median_ms": times[len(times) // 2], "mean_ms": sum(times) / len(times), "ort_version": ort.__version__}))
