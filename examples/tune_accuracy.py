#!/usr/bin/env python3
"""Top-1 accuracy of a classifier's outputs, for `hb-debugger tune --eval-cmd`.

    python3 examples/tune_accuracy.py OUT_DIR LABELS.npy

OUT_DIR holds one <k>.npy per evaluation sample (what tune writes under
{outputs}/<output name>/); LABELS.npy holds the class of sample k at [k].
Prints one number: the fraction of samples whose arg-max is the label.
"""
import os
import sys

import numpy as np


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: tune_accuracy.py OUT_DIR LABELS.npy")
    out_dir, labels_path = sys.argv[1], sys.argv[2]
    labels = np.load(labels_path).reshape(-1)
    files = sorted(
        (f for f in os.listdir(out_dir) if f.endswith(".npy")),
        key=lambda f: int(f[:-4]),
    )
    if not files:
        sys.exit(f"{out_dir}: no .npy files")
    hits = 0
    for f in files:
        k = int(f[:-4])
        hits += int(np.argmax(np.load(os.path.join(out_dir, f))) == labels[k])
    print(hits / len(files))


if __name__ == "__main__":
    main()
