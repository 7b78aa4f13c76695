#!/usr/bin/env python3
"""Splits a YOLO-style output [1, 4+nc, A] into box rows and class rows and
compares float (model.onnx) with the calibrated model and the .bc per part:
cosine, max |error| and unique values. Usage: yolo_eval.py /tmp/wild_y/yolov8_ts
(after run_wild.sh; needs target/release)."""
import numpy as np, subprocess, sys, os, glob
B=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'target', 'release', '')
d=sys.argv[1]
def run(model, inp, out):
    subprocess.run([B+'hb-model-exec','infer','--model-file',model,'--input-file',inp,'--output-dir',out],check=True,capture_output=True)
    return np.load(glob.glob(out+'/*.npy')[0])
rows={'box':slice(0,4),'cls':slice(4,None)}
for k in range(4):
    inp=f'{d}/test/input/{k}.npy'
    f=run(f'{d}/model.onnx',inp,f'/tmp/yolo_eval/f{k}')
    c=run(f'{d}/out/m_calibrated_model.onnx',inp,f'/tmp/yolo_eval/c{k}')
    b=run(f'{d}/out/m_quantized_model.bc',inp,f'/tmp/yolo_eval/b{k}')
    res=[]
    for nm,sl in rows.items():
        a=f[0,sl].ravel().astype(np.float64)
        for tag,q in (('cal',c),('bc',b)):
            q=q[0,sl].ravel().astype(np.float64)
            cos=a@q/np.linalg.norm(a)/np.linalg.norm(q)
            res.append(f'{nm}-{tag} cos {cos:.5f} maxerr {np.abs(a-q).max():.4f} uniq {len(np.unique(q))}/{len(np.unique(a))}')
    print(k,' | '.join(res))
