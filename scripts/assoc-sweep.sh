#!/usr/bin/env bash
# Does the backbone learn associative recall, and at which setting? A sweep of short
# `elastic train` runs on assoc_recall (constant lr after warm-up, each cut at its time), each
# folder tarred to $OUT (without the fp32 state). Usage on the device:
#   scripts/assoc-sweep.sh SECONDS NAME:ARGS... (ARGS with commas for spaces, e.g.
#   "a:--lengths,64,--lr,1e-3")
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/out}
SECS=$1
shift
source "$ROOT/scripts/gpu-env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
gpu_build "$ROOT/build-gpu" elastic_cli || { tail -30 "$OUT/build.log"; exit 1; }
R=$ROOT/runs/sweep
for spec in "$@"; do
  name=${spec%%:*}
  IFS=, read -r -a extra <<< "${spec#*:}"
  rm -rf "$R/$name"
  "$ROOT/build-gpu/bin/elastic" train --out "$R/$name" --backend cuda --max-time "$SECS" \
    --tasks assoc_recall --max-tokens 8192 --batch 4 --steps 100000 --warmup 0.001 \
    --min-lr-ratio 1 --eval-every 100 --eval-samples 16 --save-every 100000 \
    --layers 6 --hidden 256 --heads 8 --kv-heads 4 --head-dim 32 --ffn 768 "${extra[@]}" 2>&1 |
    grep -A1 "held-out" | grep assoc_recall | awk -v n="$name" '{print n, NR * 100, $2}' | tr '\n' ' '
  echo
  tail -1 "$R/$name/metrics.jsonl" | cut -c1-200
  tar -cf "$OUT/$name.tar" -C "$R" --exclude train_state.safetensors "$name"
done
