#!/usr/bin/env bash
# scripts/train-lanes.sh --local: two lanes with different options run at once (train-model.sh
# --smoke on the CPU), each returning its tar and log named after it, its options reaching its
# own stages only.
# usage: train_lanes_smoke.sh REPO BUILD_DIR
set -euo pipefail
repo=$(realpath "$1")
build=$(realpath "$2")
scratch=$(mktemp -d "${TMPDIR:-/tmp}/elastic_train_lanes.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

OUT=$scratch/out LANES_DIR=$scratch/lanes ELASTIC_BIN=$build/bin/elastic \
  bash "$repo/scripts/train-lanes.sh" --local 5 "q||s1 s1b" "l|--arch llama --args-s1 --tasks=copy_words,assoc_recall --args-s1b --lr,5e-4|s1 s1b" \
  > "$scratch/log" 2>&1 || { cat "$scratch/log"; fail "train-lanes.sh exited $?"; }
for lane in q l; do
  [[ -f $scratch/out/$lane.tar && -f $scratch/out/$lane.log ]] || { ls -R "$scratch/out"; fail "lane $lane: no tar or log"; }
  listing=$(tar -tf "$scratch/out/$lane.tar")
  grep -qx "s1b/model.safetensors" <<< "$listing" || fail "lane $lane: the tar lacks the newest weights"
  grep -qx "s1/model.safetensors" <<< "$listing" && fail "lane $lane: the tar carries s1's weights"
  [[ -f $scratch/lanes/$lane/s1b/done ]] || fail "lane $lane: s1b did not finish"
done
grep -q '"model_type": "qwen3"' "$scratch/lanes/q/s1/config.json" || fail "lane q is not Qwen3"
grep -q '"model_type": "llama"' "$scratch/lanes/l/s1/config.json" || fail "lane l is not Llama"
grep "^== s1b:" "$scratch/out/l.log" | grep -q -- "--lr 5e-4" || fail "lane l's --args-s1b missing"
# An --option=value keeps the commas of its list (a lane's options split at spaces and commas).
grep "^== s1:" "$scratch/out/l.log" | grep -q -- "--tasks=copy_words,assoc_recall" || fail "lane l's --tasks=A,B split"
grep "^== s1b:" "$scratch/out/q.log" | grep -q -- "--lr 5e-4" && fail "lane l's options reached lane q"
echo "train-lanes smoke: PASS"
