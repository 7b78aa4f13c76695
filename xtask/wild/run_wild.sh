#!/bin/bash
# Runs every exported wild model through hb-calib, hb-compile, hb-verifier
# (see make_wild.py). Needs `cargo build --release -p hb-tools`.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=$ROOT/target/release
OUT=${1:-/tmp/wild}
for d in "$OUT"/*/; do
  t=$(basename $d); cd $d; rm -rf out
  s=$(date +%s.%N)
  if ! $B/hb-calib -c model.yaml --json > calib.json 2> calib.err; then echo "$t CALIB FAIL: $(tail -1 calib.err)"; continue; fi
  e=$(date +%s.%N)
  cos=$(python3 -c "import json;d=json.load(open('calib.json'));print(' '.join('%.5f'%o['cosine'] for o in d['outputs']))")
  held=$($B/hb-info out/m_calibrated_model.onnx -c test --json 2>&1 | python3 -c "import json,sys;d=json.load(sys.stdin);print(' '.join('%.5f'%c['cosine'] for c in d['comparison']))" 2>&1 | tail -1)
  if ! $B/hb-compile out/m_quantized_model.bc -o out/m.hbm > comp.out 2> comp.err; then echo "$t COMPILE FAIL: $(tail -1 comp.err)"; continue; fi
  v1=$($B/hb-verifier -m out/m_quantized_model.bc,out/m.hbm -i test 2>&1 | tail -1)
  v2=$($B/hb-verifier -m out/m_calibrated_model.onnx,out/m_quantized_model.bc -i test 2>&1 | grep cosine | awk '{print $4}' | tr '\n' ' ')
  ops=$($B/hb-info out/m_quantized_model.bc 2>&1 | grep "^ops")
  printf "%-18s calib %.1fs cos %s held %s | bc==hbm %s | cal-vs-bc %s| %s\n" $t $(echo "$e - $s" | bc) "$cos" "$held" "$v1" "$v2" "$ops"
done
