#!/usr/bin/env bash
# The pipeline of the project's own model (issue 10), one command from scratch to the evaluation:
#   s1      backbone from scratch on copying and multi-query associative recall at 64 tokens (9
#           pairs): copying forms the induction heads in ~250 steps, and recall follows by step
#           ~750 (run 4 of docs/model.md; recall alone sat on a plateau for 4300+ steps)
#   s1b     more pairs from a model that recalls: 64..256 tokens (9..41 pairs), from s1
#   s2      every suite task + associative recall, also in the suite's templates
#           (template_recall: the key-matching the needle tasks need; restate_recall: its
#           questions restating the statement), at 256..2048 tokens, from s1b
#   s3      lengths up to 8192 with head-mix (half of the KV heads SSA in half of the samples), from s2
#   router  router-training data from the suite's generators, then `elastic train-router` on s3
#           (targets 0.7 for sensitive tasks, 1.0 for robust ones)
#   eval    `elastic eval` of the router checkpoint: dense, all-SA, static at 0.5, Elastic
# Each stage starts from the previous stage's model folder, resumes its own training state when
# the folder has one, and is skipped once done (RUN/<stage>/done). --minutes caps the whole call:
# a stage that reaches it checkpoints and the next call resumes it on the same machine; across
# device calls a stage's model folder travels (bf16 weights, 11 MB), not its fp32 optimizer state
# (3 x 22 MB is over the device's 16 MiB-per-file return limit), so a stage cut by a call's end
# continues from its weights with fresh moments.
#
# s1 and s1b end early once recall is learned (--stop-ce: every held-out answer CE <= 0.05).
#
# Usage: scripts/train-model.sh [--run DIR] [--minutes M] [--backend cpu|cuda] [--build]
#                               [--arch qwen3|llama] [--stage-args "ARGS"] [--seed-s1 DIR]
#                               STAGE[:SECONDS]...
#   (STAGE:SECONDS caps that stage's time; training stages checkpoint at the cap; a stage whose
#   predecessor is neither done in --run nor asked for starts from a fresh model; --arch: the
#   fresh model's architecture; --stage-args: appended to every `elastic train` stage,
#   --args-STAGE to that stage only, after --stage-args; lists with spaces or commas between
#   words, except inside --option=value: "--tasks=a,b,--lr,2e-3" is --tasks=a,b --lr 2e-3)
# On the device: run(command="scripts/train-model.sh --build --backend cuda --minutes 8 s1 s2",
#                    carry=[".debs", "runs/model"]) -- the stage folders come back in $OUT/run.tar
#   (untar here with: tar -xf OUTDIR/run.tar -C runs/model). The tar holds every stage folder
#   without its fp32 state, and the weights of the newest stage only (the one the next stage
#   starts from; the device returns at most 16 MiB a file).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# split_args TEXT: the words of an option list into the array SPLIT. Spaces and commas separate
# words, but an --option=value keeps its value's commas (it runs up to the next ",-" or space).
split_args() {
  SPLIT=()
  local w words
  read -r -a words <<< "${1//,-/ -}"  # no glob expansion of the words
  for w in "${words[@]}"; do
    if [[ $w == --*=* ]]; then SPLIT+=("$w"); else IFS=, read -r -a p <<< "$w"; SPLIT+=("${p[@]}"); fi
  done
}
RUN=$ROOT/runs/model MINUTES=0 BACKEND=cpu BUILD=0 SMOKE=0 SEED_S1= ARCH= STAGE_ARGS=() STAGES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --run) RUN=$2; shift ;;
    --minutes) MINUTES=$2; shift ;;
    --backend) BACKEND=$2; shift ;;
    --build) BUILD=1 ;;
    --smoke) SMOKE=1 ;;  # the pipeline's logic in a minute on a CPU: a tiny model, 2 steps a stage
    --arch) ARCH=$2; shift ;;
    --stage-args) split_args "$2"; STAGE_ARGS=("${SPLIT[@]}"); shift ;;
    --args-s1|--args-s1b|--args-s2|--args-s3) declare "ARGS_${1#--args-}=$2"; shift ;;
    --seed-s1) SEED_S1=$2; shift ;;  # a model folder that already recalls, as stage s1
    -h|--help) sed -n 2,34p "$0"; exit 0 ;;
    *) STAGES+=("$1") ;;
  esac
  shift
done
[[ ${#STAGES[@]} -eq 0 ]] && STAGES=(s1 s1b s2 s3 router eval)
OUT=${OUT:-$ROOT/out}
mkdir -p "$RUN" "$OUT"
if [[ -n $SEED_S1 && ! -d $RUN/s1 ]]; then
  [[ -f $SEED_S1/model.safetensors ]] || { echo "--seed-s1: $SEED_S1 holds no model.safetensors"; exit 1; }
  cp -r "$SEED_S1" "$RUN/s1" && rm -f "$RUN/s1/train_state.safetensors"
  echo "seeded from $SEED_S1" > "$RUN/s1/done"
fi
START=$(date +%s)
left() {  # seconds left of --minutes (a large number without a cap)
  if [[ $MINUTES -eq 0 ]]; then echo 1000000; else echo $(( MINUTES * 60 - ($(date +%s) - START) )); fi
}

ELASTIC=${ELASTIC_BIN:-$ROOT/build/bin/elastic}  # ELASTIC_BIN: another build (tests)
if [[ $BUILD -eq 1 ]]; then
  source "$ROOT/scripts/gpu-env.sh"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  gpu_build "$ROOT/build-gpu" elastic_cli || { tail -30 "$OUT/build.log"; exit 1; }
  ELASTIC=$ROOT/build-gpu/bin/elastic
  echo "build ok ($(( $(date +%s) - START )) s)"
fi

# The shipped shape: Qwen3, 6 layers, hidden 256, 8 query / 4 KV heads of 64... see docs/model.md.
SHAPE=(--layers 6 --hidden 256 --heads 8 --kv-heads 4 --head-dim 32 --ffn 768)
SSA=(--block 64 --sink 64 --local 512)
SMALL=()  # --smoke: appended to every stage (a later option wins)
EVAL_N=50 EVAL_LENGTHS=4096,8192 ROUTER_N=24 ROUTER_LENGTHS=1024,2048,4096 ROUTER_STEPS=200
if [[ $SMOKE -eq 1 ]]; then
  SHAPE=(--layers 2 --hidden 32 --heads 2 --kv-heads 2 --head-dim 16 --ffn 32)
  SMALL=(--steps 2 --lengths 256 --max-tokens 512 --batch 1 --eval-every 1 --eval-samples 1)
  EVAL_N=1 EVAL_LENGTHS=512 ROUTER_N=1 ROUTER_LENGTHS=512 ROUTER_STEPS=2
fi
[[ -n $ARCH ]] && SHAPE+=(--arch "$ARCH")
# The robust tasks (answered from the prompt's last lines) also draw short samples: ~10x the
# answers per token for the addition table and counting that they need (docs/model.md, run 4).
ROBUST_S2=() ROBUST_S3=()
for t in repeat_last_line continue_pattern arithmetic_last count_word; do
  ROBUST_S2+=("--task-lengths=$t=128,256,512,2048") ROBUST_S3+=("--task-lengths=$t=128,256,4096,8192")
done
if [[ $SMOKE -eq 1 ]]; then  # within --smoke's 512-token packs
  ROBUST_S2=() ROBUST_S3=()
  for t in repeat_last_line continue_pattern arithmetic_last count_word; do
    ROBUST_S2+=("--task-lengths=$t=128,256") ROBUST_S3+=("--task-lengths=$t=128,256")
  done
fi
TASKS_ALL=niah_single,niah_multikey,niah_multivalue,niah_multiquery,kv_retrieval,variable_tracking,common_words,frequent_words,repeat_last_line,continue_pattern,arithmetic_last,count_word

# train_stage NAME FROM ARGS...: one `elastic train` stage (FROM: the previous stage or "").
train_stage() {
  local name=$1 from=$2
  shift 2
  local dir=$RUN/$name
  [[ -f $dir/done ]] && { echo "$name: done already ($(cat "$dir/done"))"; return 0; }
  local budget
  budget=$(left)
  (( CAP > 0 && CAP < budget )) && budget=$CAP
  (( budget < 30 )) && { echo "$name: no time left"; return 1; }
  local own=ARGS_$name
  split_args "${!own:-}"
  local extra=("${SPLIT[@]}")
  local args=(--out "$dir" --backend "$BACKEND" --max-time "$budget" "$@" "${STAGE_ARGS[@]}" "${extra[@]}" "${SMALL[@]}")
  local fresh=0
  if [[ -f $dir/train_state.safetensors ]]; then
    args+=(--resume)
  elif [[ -f $dir/model.safetensors ]]; then  # came back from another machine without its state
    rm -rf "$dir.partial" && mv "$dir" "$dir.partial" && args+=(--init-from "$dir.partial")
  elif [[ -n $from && ( -f $RUN/$from/model.safetensors || " ${STAGES[*]} " == *" $from"[\ :]* ) ]]; then
    [[ -f $RUN/$from/model.safetensors ]] || { echo "$name: needs stage $from first"; return 1; }
    args+=(--init-from "$RUN/$from")
  else
    args+=("${SHAPE[@]}") fresh=1
  fi
  # A stage that continues a model keeps its shape and initial gains: --qk-gain only initialises.
  if [[ $fresh -eq 0 ]]; then
    local kept=() i
    for (( i = 0; i < ${#args[@]}; i++ )); do
      if [[ ${args[i]} == --qk-gain ]]; then (( i++ )); continue; fi
      [[ ${args[i]} == --qk-gain=* ]] && continue
      kept+=("${args[i]}")
    done
    args=("${kept[@]}")
  fi
  echo "== $name: elastic train ${args[*]}"
  "$ELASTIC" train "${args[@]}" > "$dir.log" 2>&1
  grep -v "^step " "$dir.log" | tail -40
  [[ -f $dir/metrics.jsonl ]] || { echo "$name: elastic train failed"; rm -f "$dir.log"; return 1; }
  # The last step line and how the stage ended.
  tail -1 "$dir/metrics.jsonl"; echo
  local steps_done total
  steps_done=$(tail -1 "$dir/metrics.jsonl" | sed -E 's/.*"step":([0-9]+).*/\1/')
  total=$(printf '%s\n' "${args[@]}" | grep -A1 -x -- --steps | tail -1)  # the last one wins
  if [[ "$steps_done" == "$total" ]]; then echo "finished $total steps" > "$dir/done"
  elif grep -q "^train: learned:" "$dir.log"; then
    echo "learned at step $steps_done of $total (--stop-ce)" | tee "$dir/done"
  else echo "$name: stopped at step $steps_done of $total (time cap)"; echo "stopped at $steps_done of $total" > "$dir/done"; fi
  rm -f "$dir.log"
}

for spec in "${STAGES[@]}"; do
  stage=${spec%%:*} CAP=0
  [[ $spec == *:* ]] && CAP=${spec#*:}
  # A stage's time: its cap (STAGE:SECONDS), else what is left of --minutes.
  stage_time() { local l; l=$(left); (( CAP > 0 && CAP < l )) && l=$CAP; echo "$l"; }
  case "$stage" in
    s1) train_stage s1 "" --tasks copy_words,assoc_recall --lengths 64 --max-tokens 8192 --batch 4 \
          --steps 4500 --lr 1e-3 --min-lr-ratio 1 --warmup 0.001 --eval-every 250 --eval-samples 16 \
          --save-every 500 --stop-ce 0.05 ;;
    s1b) train_stage s1b s1 --tasks assoc_recall --lengths 64,128,256 --max-tokens 8192 --batch 4 \
          --steps 3000 --lr 1e-3 --min-lr-ratio 1 --warmup 0.01 --eval-every 250 --eval-samples 16 \
          --save-every 500 --stop-ce 0.05 ;;
    s2) train_stage s2 s1b --tasks "$TASKS_ALL,assoc_recall,template_recall,restate_recall" --lengths 256,512,1024,2048 \
          --max-tokens 16384 --batch 4 --steps 1500 --lr 1e-3 --warmup 0.02 --eval-every 150 \
          --eval-samples 8 --save-every 250 "${ROBUST_S2[@]}" ;;
    s3) train_stage s3 s2 --tasks "$TASKS_ALL,assoc_recall,template_recall,restate_recall" --lengths 512,1024,2048,4096,8192 \
          --max-tokens 16384 --batch 4 --steps 1000 --lr 5e-4 --warmup 0.02 --head-mix 0.5 "${SSA[@]}" \
          --eval-every 100 --eval-samples 8 --save-every 250 "${ROBUST_S3[@]}" ;;
    router)
      [[ -f $RUN/router/done ]] && { echo "router: done already"; continue; }
      python3 - "$RUN/targets.json" <<'PY'
import json, sys
sens = ["niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery", "kv_retrieval",
        "variable_tracking", "common_words", "frequent_words"]
rob = ["repeat_last_line", "continue_pattern", "arithmetic_last", "count_word"]
json.dump({**{t: 0.7 for t in sens}, **{t: 1.0 for t in rob}}, open(sys.argv[1], "w"), indent=1)
PY
      BB=$RUN/s3; [[ -f $BB/done ]] || BB=$RUN/s2  # the latest backbone stage
      "$ELASTIC" train --out "$RUN/router-data" --export-data "$RUN/router.jsonl" --export-n $ROUTER_N \
        --lengths $ROUTER_LENGTHS --tokenizer "$BB/tokenizer.json" --seed 7 || exit 1
      args=(-m "$BB" --data "$RUN/router.jsonl" --out "$RUN/router" --task-targets "$RUN/targets.json"
            --labels answer --chat-template none --pool-tokens 100 "${SSA[@]}" --steps $ROUTER_STEPS --batch 4
            --max-tokens 16384 --lr 5e-3 --lambda-lr 2e-2 --save-every 50 --backend "$BACKEND")
      [[ -f $RUN/router/train_state.safetensors ]] && args+=(--resume)
      echo "== router: elastic train-router ${args[*]}"
      # SIGTERM at the stage's time: train-router checkpoints and exits (resumable).
      timeout --signal=TERM "$(stage_time)" "$ELASTIC" train-router "${args[@]}" 2>&1 | grep -v "^step " | tail -20
      tail -1 "$RUN/router/metrics.jsonl" && echo "from $(basename "$BB")" > "$RUN/router/done" ;;
    eval)
      M=$RUN/router; [[ -f $M/done ]] || M=$RUN/s3; [[ -f $M/done ]] || M=$RUN/s2
      echo "== eval of $M"
      ev=$RUN/eval-${EVAL_LENGTHS//,/-}  # the device returns names of letters, digits, '.', '_', '-'
      timeout "$(stage_time)" "$ELASTIC" eval -m "$M" --tasks all --lengths $EVAL_LENGTHS --n $EVAL_N --configs dense,all-sa,static:0.5,elastic \
        --sink 64 --local 512 --block 64 --backend "$BACKEND" --json > "$ev.json" 2> "$ev.log"
      python3 - "$ev.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["results"]
configs = list(dict.fromkeys(r["config"] for r in rows))
print("%-18s %6s" % ("task", "length") + "".join("  %-18s" % c for c in configs))
for task in dict.fromkeys(r["task"] for r in rows):
    for length in dict.fromkeys(r["length"] for r in rows if r["task"] == task):
        cells = {r["config"]: r for r in rows if r["task"] == task and r["length"] == length}
        print("%-18s %6d" % (task, length) + "".join(
            "  %5.1f%% O=%.2f      " % (100 * cells[c]["accuracy"], cells[c]["omega_msr"]) for c in configs))
PY
      ;;
    *) echo "unknown stage $stage (s1 s1b s2 s3 router eval)"; exit 2 ;;
  esac
done

# What travels back: one tar of every stage folder without its fp32 training state, with the
# weights of the newest stage only (every later stage starts from it; 11 MB a model).
WEIGHTED=(s1 s1b s2 s3 router)  # the stages that write weights, in pipeline order
newest=
for n in "${WEIGHTED[@]}"; do
  [[ -f $RUN/$n/model.safetensors || -f $RUN/$n/backbone.safetensors ]] && newest=$n
done
excl=(--exclude train_state.safetensors)
for n in "${WEIGHTED[@]}"; do
  [[ $n != "$newest" ]] && excl+=(--exclude "$n/model.safetensors" --exclude "$n/backbone.safetensors")
done
(cd "$RUN" && ls -d "${WEIGHTED[@]}" router-data targets.json eval-* 2>/dev/null) |
  tar -cf "$OUT/run.tar" -C "$RUN" "${excl[@]}" -T -
cp "$RUN"/eval-*.json "$RUN"/eval-*.log "$OUT/" 2>/dev/null
ls -la "$OUT"
