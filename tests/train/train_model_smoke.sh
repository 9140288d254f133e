#!/usr/bin/env bash
# The model pipeline end to end on the CPU in seconds (scripts/train-model.sh --smoke: a tiny
# shape, 2 steps a stage): every stage runs and hands its model to the next, the router stage
# writes an Elastic checkpoint, the evaluation covers every task under the 4 configurations,
# each stage folder is tarred for the trip back from the device, and the shipped folder
# (scripts/ship-model.py) runs `elastic demo`.
# usage: train_model_smoke.sh REPO BUILD_DIR
set -euo pipefail
repo=$(realpath "$1")
build=$(realpath "$2")
scratch=$(mktemp -d "${TMPDIR:-/tmp}/elastic_train_model.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

OUT=$scratch/out ELASTIC_BIN=$build/bin/elastic bash "$repo/scripts/train-model.sh" --smoke \
  --arch llama --args-s2 --labels,answer --run "$scratch/run" > "$scratch/log" 2>&1 || { cat "$scratch/log"; fail "train-model.sh exited $?"; }
# The listing first: `tar | grep -q` fails under pipefail when grep stops early (SIGPIPE).
listing=$(tar -tf "$scratch/out/run.tar")
for s in s1 s1b s2 s3 router; do
  [[ -f $scratch/run/$s/done ]] || fail "stage $s did not finish"
  grep -qx "$s/config.json" <<< "$listing" || fail "run.tar lacks $s/config.json"
done
grep -q "train_state" <<< "$listing" && fail "run.tar carries the training state"
# The weights of the newest stage only (the router's Elastic checkpoint), none of the older ones.
grep -qx "router/backbone.safetensors" <<< "$listing" || fail "run.tar lacks the router's weights"
grep -qE "^s[0-9a-z]+/model.safetensors$" <<< "$listing" && fail "run.tar carries an older stage's weights"
# --arch reaches the fresh stage (s1): its config is a Llama one.
grep -q '"model_type": "llama"' "$scratch/run/s1/config.json" || fail "--arch llama did not reach s1"
# --args-s2 reaches s2 and no other stage.
[[ $(grep "^== s2:" "$scratch/log" | grep -c -- "--labels answer") == 1 ]] || fail "--args-s2 did not reach s2"
[[ $(grep "^== s" "$scratch/log" | grep -c -- "--labels answer") == 1 ]] || fail "--args-s2 reached another stage"
# The robust tasks' own short lengths reach s2 and s3 (one word each, commas kept).
for st in s2 s3; do
  grep "^== $st:" "$scratch/log" | grep -q -- "--task-lengths=count_word=128,256" || fail "--task-lengths did not reach $st"
done
# A tar unpacked into an empty run folder continues there: the finished stages are skipped.
mkdir "$scratch/run2" && tar -xf "$scratch/out/run.tar" -C "$scratch/run2"
OUT=$scratch/out2 ELASTIC_BIN=$build/bin/elastic bash "$repo/scripts/train-model.sh" --smoke \
  --run "$scratch/run2" s1 s1b s2 s3 router > "$scratch/log2" 2>&1 || { cat "$scratch/log2"; fail "second call"; }
[[ $(grep -c "done already" "$scratch/log2") == 5 ]] || { cat "$scratch/log2"; fail "the second call redid a stage"; }
grep -q -- "--init-from $scratch/run/s1b" "$scratch/log" || fail "s2 did not start from s1b"
# A stage that came back without its training state continues from its weights; an initialising
# option of its fresh start (--qk-gain) is left out then, and the stage ends with a label.
mkdir -p "$scratch/run3/s1" && cp "$scratch/run/s1/"{config.json,model.safetensors,tokenizer.json} "$scratch/run3/s1/"
OUT=$scratch/out3 ELASTIC_BIN=$build/bin/elastic bash "$repo/scripts/train-model.sh" --smoke \
  --args-s1 --qk-gain,2 --run "$scratch/run3" s1 > "$scratch/log3" 2>&1 || { cat "$scratch/log3"; fail "third call"; }
grep "^== s1:" "$scratch/log3" | grep -q -- "--init-from $scratch/run3/s1.partial" || { cat "$scratch/log3"; fail "s1 did not continue its weights"; }
grep "^== s1:" "$scratch/log3" | grep -q -- "--qk-gain" && fail "--qk-gain reached a continued stage"
[[ -f $scratch/run3/s1/done ]] || { cat "$scratch/log3"; fail "the continued s1 did not end"; }
[[ -f $scratch/run/router/router.safetensors ]] || fail "no router.safetensors"
python3 - "$scratch/out/eval-512.json" <<'PY' || fail "eval results"
import json, sys
rows = json.load(open(sys.argv[1]))["results"]
assert len(rows) == 12 * 4, len(rows)
assert {r["config"] for r in rows} == {"dense", "all-sa", "static:0.5", "elastic"}
for r in rows:
    if r["config"] == "dense": assert r["omega_msr"] == 0, r
    if r["config"] == "all-sa": assert r["omega_msr"] == 1, r
PY
python3 "$repo/scripts/ship-model.py" "$scratch/run/router" "$scratch/shipped" > /dev/null
"$build/bin/elastic" demo -m "$scratch/shipped" --length 512 --n 1 -t 1 --json --out "$scratch/demo" \
  > "$scratch/demo.json" 2> "$scratch/demo.log" || { cat "$scratch/demo.log"; fail "demo"; }
python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results']; assert len(r) == 36, len(r)" \
  "$scratch/demo.json" || fail "demo results"
echo "train-model pipeline smoke: PASS"
