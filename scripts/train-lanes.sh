#!/usr/bin/env bash
# Several scripts/train-model.sh pipelines at once on one GPU ("lanes"), from one build. The
# project's model (5.6 M parameters) leaves an H100 mostly idle between its small kernels, so
# concurrent runs cost little each: a sweep of recipes, or a recipe and its fallback, in the time
# of one. Each lane runs in runs/lanes/NAME (carried back in: its tar unpacks there) and returns
# $OUT/NAME.tar (train-model.sh's run.tar) and $OUT/NAME.log. --tests T1,T2 builds and runs
# those CUDA test binaries while the lanes train (their results in $OUT/tests.log).
#
# --local runs the lanes here instead, with ELASTIC_BIN (default build/bin/elastic) on the CPU
# in train-model.sh's --smoke mode: the lanes' logic in seconds (tests/train/train_lanes_smoke.sh).
#
# Usage: scripts/train-lanes.sh [--local] [--tests T1,T2] MINUTES "NAME|TRAIN-MODEL OPTIONS|STAGES"...
#   e.g. scripts/train-lanes.sh 8 "q||s1 s1b" "l|--arch llama --stage-args --lr,2e-3|s1 s1b"
#   (a lane's options split at spaces: --stage-args takes its list with commas)
# On the device: run(command="scripts/train-lanes.sh 8 ...", carry=[".debs", "runs/lanes"])
#   (unpack here: for l in NAMES; do mkdir -p runs/lanes/$l && tar -xf FILES/$l.tar -C runs/lanes/$l; done)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/out}
TESTS= LOCAL=0
[[ ${1:-} == --local ]] && { LOCAL=1; shift; }
[[ ${1:-} == --tests ]] && { TESTS=$2; shift 2; }
MINUTES=$1
shift
START=$(date +%s)
mkdir -p "$OUT"
if [[ $LOCAL -eq 1 ]]; then
  BIN=${ELASTIC_BIN:-$ROOT/build/bin/elastic} MODE=(--backend cpu --smoke)
else
  source "$ROOT/scripts/gpu-env.sh"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  gpu_build "$ROOT/build-gpu" elastic_cli || { tail -30 "$OUT/build.log"; exit 1; }
  echo "build ok ($(( $(date +%s) - START )) s)"
  rm -f "$OUT/build.log"  # the device returns at most 8 files: 2 a lane, and the tests' log
  BIN=$ROOT/build-gpu/bin/elastic MODE=(--backend cuda)
fi
RUNS=${LANES_DIR:-$ROOT/runs/lanes}  # LANES_DIR: elsewhere (tests)
# The lanes' minutes count from here (the build is behind us).
left=$(( MINUTES * 60 - ($(date +%s) - START) ))
pids=()
for lane in "$@"; do
  IFS='|' read -r name opts stages <<< "$lane"
  read -r -a o <<< "$opts"
  read -r -a st <<< "$stages"
  mkdir -p "$RUNS/$name" "$OUT/$name.out"
  OUT=$OUT/$name.out ELASTIC_BIN=$BIN bash "$ROOT/scripts/train-model.sh" "${MODE[@]}" \
    --minutes $(( left / 60 )) --run "$RUNS/$name" "${o[@]}" "${st[@]}" > "$OUT/$name.log" 2>&1 &
  pids+=($!)
done
if [[ -n $TESTS ]]; then
  IFS=, read -r -a t <<< "$TESTS"
  {
    ninja -C "$ROOT/build-gpu" -j12 "${t[@]}" > "$OUT/tests-build.log" 2>&1 || tail -20 "$OUT/tests-build.log"
    rm -f "$OUT/tests-build.log"
    for b in "${t[@]}"; do
      "$ROOT/build-gpu/tests/cuda/$b" --gtest_brief=1 2>&1 | tail -15 || true
      echo "== $b rc ${PIPESTATUS[0]}"
    done
  } > "$OUT/tests.log" 2>&1
  grep "^== \|FAILED\|PASSED" "$OUT/tests.log"
fi
wait "${pids[@]}"
for lane in "$@"; do
  name=${lane%%|*}
  mv "$OUT/$name.out/run.tar" "$OUT/$name.tar" 2>/dev/null  # its eval-*.json included
  rm -rf "$OUT/$name.out"
  echo "=== lane $name"
  grep -E "^== |learned|stopped|finished|done already|held-out|^\{" "$OUT/$name.log" | cut -c1-300 | tail -25
done
ls -la "$OUT"
