#!/usr/bin/env bash
# The one script sent to the GPU machine (device tool): builds the CUDA backend for sm_90a from
# the carried tree, runs the CUDA tests (the engine-core golden fixtures on CUDA first),
# compute-sanitizer (memcheck, racecheck) on the small attention/XA shapes, the end-to-end
# prefill + decode bench (--e2e) and the attention benchmark beside cuDNN SDPA and
# FlexAttention, and the training engine (test_train_cuda, its sanitizer shapes, bench_train_cuda:
# router training of a Qwen3-4B-shaped model at 32K / 64K tokens); prints a short table last and
# writes every log under $OUT. --train runs only the training engine's build, tests, sanitizers
# and benchmark. --serve runs only the serving engine on CUDA: test_serve_cuda (batched paged
# attention against the CPU, the engine against generate() alone), its sanitizer shapes,
# `elastic serve --backend cuda` against sequential `elastic generate --backend cuda`
# (scripts/serve-cuda-check.py) and bench_serve_cuda (64 x 8K decode vs batch 1, 32K admission).
#
# The GPU machine has nvcc, cmake, ninja and python3 + torch but no Debian -dev packages and no
# network: the build dependencies travel as .deb files in .debs/ (scripts/gpu-check.sh --fetch
# downloads them here) and are unpacked into a private prefix, never into /. The golden
# fixtures travel in .gpu-shared/ (--fetch copies them from ../shared).
# Usage here:   scripts/gpu-check.sh --fetch
# On the device: run(command="scripts/gpu-check.sh [--quick] [--no-bench] [--no-sanitize] [--e2e]
#   [--e2e-sizes=32768,131072] [--train] [--train-tokens=32768,65536] [--serve]", carry=[".debs", ".gpu-shared"])
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEBS=(nlohmann-json3-dev libcli11-dev libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3
      libutf8proc-dev libutf8proc2 libpng-dev libpng16-16 zlib1g-dev libgtest-dev pkgconf
      libpkgconf3 pkgconf-bin
      libcpp-httplib-dev libcpp-httplib0.11 libbrotli-dev libbrotli1 libssl-dev libssl3)  # elastic serve

if [[ "${1:-}" == "--fetch" ]]; then
  set -e
  mkdir -p "$ROOT/.debs" && (cd "$ROOT/.debs" && apt-get download "${DEBS[@]}")
  mkdir -p "$ROOT/.gpu-shared/fixtures/hf"
  for c in attention-gqa attention-mha-long qwen3-tiny elastic-qwen3-fa-ssa elastic-qwen3-fa-xa elastic-qwen3-xa-ssa \
           elastic-qwen3-fa-ssa-bias llama3-tiny qwen2-tiny qwen3-yarn-tiny router-train-step; do
    cp -r "$ROOT/../shared/fixtures/hf/$c" "$ROOT/.gpu-shared/fixtures/hf/"
  done
  # The legacy-config twins share weights and goldens with their models (identical files): links
  # inside the carried folder keep the carry under its size limit.
  for c in llama3-tiny qwen3-yarn-tiny; do
    t="$ROOT/.gpu-shared/fixtures/hf/$c-legacy-config"
    mkdir -p "$t" && cp "$ROOT/../shared/fixtures/hf/$c-legacy-config/"{case.json,config.json} "$t/"
    cmp -s "$ROOT/../shared/fixtures/hf/$c"/model.safetensors "$ROOT/../shared/fixtures/hf/$c-legacy-config"/model.safetensors
    cmp -s "$ROOT/../shared/fixtures/hf/$c"/expected.safetensors "$ROOT/../shared/fixtures/hf/$c-legacy-config"/expected.safetensors
    ln -sf "../$c/model.safetensors" "$t/model.safetensors"
    ln -sf "../$c/expected.safetensors" "$t/expected.safetensors"
  done
  mkdir -p "$ROOT/.gpu-shared/fixtures/real" "$ROOT/.gpu-shared/data/tinystories-656k"
  cp -r "$ROOT/../shared/fixtures/real/tinystories-656k" "$ROOT/.gpu-shared/fixtures/real/"
  cp "$ROOT/../shared/data/tinystories-656k/"{config.json,generation_config.json,model.safetensors,tokenizer.json,tokenizer_config.json,special_tokens_map.json} \
    "$ROOT/.gpu-shared/data/tinystories-656k/"
  chmod -R u+w "$ROOT/.gpu-shared"
  # The carried tree must stay under 64 MiB with the repo and .debs: the larger safetensors travel
  # gzip'd (62 -> 53 MB with all fixtures); step 1 of the run restores them in place.
  find "$ROOT/.gpu-shared" -type f -name '*.safetensors' -size +256k -exec gzip -9 -f {} +
  grep -qx '/.gpu-shared/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.gpu-shared/' >> "$ROOT/.git/info/exclude"
  echo "fetched: $(ls "$ROOT/.debs" | wc -l) packages, fixtures in .gpu-shared ($(du -sb "$ROOT/.gpu-shared" | cut -f1) bytes)"
  exit 0
fi

QUICK=0 BENCH=1 E2E=0 SANITIZE=1 SIZES=8192,32768,131072 E2E_SIZES=32768,131072 TRAIN_ONLY=0 SERVE_ONLY=0
TRAIN_TOKENS=32768,65536
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    --no-bench) BENCH=0 ;;
    --e2e) E2E=1 ;;
    --no-sanitize) SANITIZE=0 ;;
    --e2e-sizes=*) E2E_SIZES=${a#--e2e-sizes=} ;;
    --sizes=*) SIZES=${a#--sizes=} ;;
    --train) TRAIN_ONLY=1 ;;
    --serve) SERVE_ONLY=1 ;;
    --train-tokens=*) TRAIN_TOKENS=${a#--train-tokens=} ;;
  esac
done
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT"
summary=()
note() { summary+=("$1"); echo "== $1"; }

# 1. Dependencies into a private prefix, fixtures restored (scripts/gpu-env.sh).
source "$ROOT/scripts/gpu-env.sh"

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used,memory.total --format=csv \
  2>&1 | tee "$OUT/gpu.txt"

# 2. Build (sm_90a only: the device is an H200) from the carried working tree. (Not from
# `git archive HEAD`: the device's copy of .git can be older than the tree, seen in run 9.)
SRC="$ROOT"
echo "building the carried tree ($(find "$SRC/src" "$SRC/include" "$SRC/tests" -type f | wc -l) source files)"
B="$ROOT/build-gpu"
targets=(test_fixtures_cuda test_attention_cuda test_backend_cuda test_chunked_cuda bench_prefill_cuda)
[[ $BENCH -eq 1 ]] && targets+=(elastic_attn_bench)
targets+=(test_router_cuda test_sampling_cuda test_decode_kv_cuda elastic_cli test_train_cuda test_train_cli_cuda
          bench_train_cuda)
[[ $TRAIN_ONLY -eq 1 ]] && targets=(elastic_cli test_train_cuda test_train_cli_cuda bench_train_cuda)
[[ $SERVE_ONLY -eq 1 ]] && targets=(test_serve_cuda test_sampling_cuda bench_serve_cuda elastic_cli)
gpu_build "$B" "${targets[@]}"
rc=$?
if [[ $rc -ne 0 ]]; then
  tail -40 "$OUT/build.log"
  note "build FAILED (rc $rc), see build.log"
  printf '%s\n' "${summary[@]}"
  exit 1
fi
note "build ok"
for o in "$B"/src/cuda/CMakeFiles/elastic_cuda.dir/*.cu.o; do
  echo "## $(basename "$o")"
  cuobjdump --dump-resource-usage "$o" | grep -E "Function|REG" | paste - - | sed -E 's/\s+/ /g'
  echo "HMMA instructions: $(cuobjdump --dump-sass "$o" | grep -c HMMA)"
done > "$OUT/resources.txt" 2>&1
grep -E "REG|HMMA" "$OUT/resources.txt" | sed -E 's/Function ([^ ]{0,60})[^ ]*/\1/' | cut -c1-160

# The serving engine on CUDA (--serve): batched paged attention against the CPU reference and the
# engine against generate() alone, the sanitizers on its kernels, the HTTP server against
# sequential `elastic generate --backend cuda`, and the throughput / admission benchmark.
if [[ $SERVE_ONLY -eq 1 ]]; then
  TS="$B/tests/cuda/test_serve_cuda"
  timeout 300 "$TS" 2>&1 | tee "$OUT/tests-serve.log" | grep -E "^\s+(qwen3|llama3|engine)|OK|FAILED|PASSED|Failure|error|Expected|Which is|actual" | head -80
  if grep -q "^\[  PASSED  \]" "$OUT/tests-serve.log" && ! grep -q "FAILED" "$OUT/tests-serve.log"; then
    note "serve tests: $(grep '^\[  PASSED  \]' "$OUT/tests-serve.log")"
  else
    note "serve tests: FAILED, see tests-serve.log"
  fi
  # The engine's batched greedy step takes its ids from Backend::argmax_rows.
  timeout 120 "$B/tests/cuda/test_sampling_cuda" --gtest_filter='CudaSampling.ArgmaxRows*:CudaSampling.ExactTies*' \
    > "$OUT/tests-sampling.log" 2>&1
  note "sampling tests (argmax_rows): $(grep -E '^\[  (PASSED|FAILED)' "$OUT/tests-sampling.log" | tr '\n' ' ')"
  [[ $SANITIZE -eq 1 ]] && for tool in memcheck racecheck; do
    log="$OUT/sanitizer-$tool-test_serve_cuda.log"
    timeout 200 compute-sanitizer --tool "$tool" --error-exitcode 9 "$TS" --gtest_filter='CudaSanitizerServe.*' > "$log" 2>&1
    rc=$?
    note "compute-sanitizer $tool test_serve_cuda: rc $rc; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | head -2 | tr '\n' ' ') $(grep -E '^\[  (PASSED|FAILED)' "$log" | head -1)"
  done
  timeout 240 python3 "$ROOT/scripts/serve-cuda-check.py" "$B/bin/elastic" "$ROOT/.gpu-shared/data/tinystories-656k" 8 \
    > "$OUT/serve-cuda-check.log" 2>&1
  note "serve --backend cuda vs generate --backend cuda: rc $?; $(tail -1 "$OUT/serve-cuda-check.log")"
  if [[ $BENCH -eq 1 ]]; then
    timeout 300 "$B/bin/bench_serve_cuda" > "$OUT/bench-serve.log" 2>&1
    note "bench_serve_cuda rc $?"
    cat "$OUT/bench-serve.log"
  fi
  echo
  echo "== summary"
  printf '%s\n' "${summary[@]}"
  exit 0
fi

# The training engine: kernels and whole steps against the CPU reference, the router-train-step
# fixture, the sanitizers on its kernels, and the router-training benchmark.
TT="$B/tests/cuda/test_train_cuda"
timeout 240 "$TT" 2>&1 | tee "$OUT/tests-train.log" | grep -E "^\s+(attention|qwen|router-train)|OK|FAILED|PASSED|Failure|error|Expected|Which is|actual" | head -80
if grep -q "^\[  PASSED  \]" "$OUT/tests-train.log" && ! grep -q "FAILED" "$OUT/tests-train.log"; then
  note "train tests: $(grep '^\[  PASSED  \]' "$OUT/tests-train.log")"
else
  note "train tests: FAILED, see tests-train.log"
fi
timeout 120 "$B/tests/cuda/test_train_cli_cuda" > "$OUT/tests-train-cli.log" 2>&1
note "train-step --backend cuda (CLI): $(grep -E 'worst relative' "$OUT/tests-train-cli.log" | sed 's/^ *//') $(grep -E '^\[  (PASSED|FAILED)' "$OUT/tests-train-cli.log" | head -1)"
[[ $SANITIZE -eq 1 ]] && for tool in memcheck racecheck; do
  log="$OUT/sanitizer-$tool-test_train_cuda.log"
  timeout 150 compute-sanitizer --tool "$tool" --error-exitcode 9 "$TT" --gtest_filter='CudaSanitizerTrain.*' > "$log" 2>&1
  rc=$?
  note "compute-sanitizer $tool test_train_cuda: rc $rc; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | head -2 | tr '\n' ' ') $(grep -E '^\[  (PASSED|FAILED)' "$log" | head -1)"
done
if [[ $BENCH -eq 1 ]]; then
  timeout 240 "$B/bin/bench_train_cuda" --tokens "$TRAIN_TOKENS" > "$OUT/bench-train.log" 2>&1
  note "bench_train_cuda rc $?"
  cat "$OUT/bench-train.log"
fi
if [[ $TRAIN_ONLY -eq 1 ]]; then
  echo
  echo "== summary"
  printf '%s\n' "${summary[@]}"
  exit 0
fi

# 3. Tests: the golden fixtures on CUDA (device mode, device-resident KV cache) first.
TF="$B/tests/cuda/test_fixtures_cuda"
timeout 120 "$TF" 2>&1 | tee "$OUT/tests-fixtures.log" | grep -E "^\s+(qwen|llama|tinystories)|OK|FAILED|PASSED|Failure|error" | head -40
if grep -q "^\[  PASSED  \]" "$OUT/tests-fixtures.log" && ! grep -q "FAILED" "$OUT/tests-fixtures.log"; then
  note "fixture tests: $(grep '^\[  PASSED  \]' "$OUT/tests-fixtures.log")"
else
  note "fixture tests: FAILED, see tests-fixtures.log"
fi
# End-to-end prefill + decode of the synthetic Qwen3-8B shape (--e2e; a minute per size).
if [[ $E2E -eq 1 ]]; then
  timeout 330 "$B/bin/bench_prefill_cuda" ${E2E_SIZES//,/ } > "$OUT/e2e.log" 2>&1
  note "e2e prefill + decode rc $?"
  cat "$OUT/e2e.log"
fi

T="$B/tests/cuda/test_attention_cuda"
"$T" 2>&1 | tee "$OUT/tests.log" | grep -E "^\s+(n=|decode|attention-)|OK|FAILED|PASSED|Failure|differs|error" | head -80
if grep -q "^\[  PASSED  \]" "$OUT/tests.log" && ! grep -q "FAILED" "$OUT/tests.log"; then
  note "tests: $(grep '^\[  PASSED  \]' "$OUT/tests.log")"
else
  note "tests: FAILED ($(grep -c '^\[  FAILED  \]' "$OUT/tests.log") lines), see tests.log"
fi

TB="$B/tests/cuda/test_backend_cuda"
"$TB" 2>&1 | tee "$OUT/tests-backend.log" | grep -E "^\s+(rmsnorm|rope|swiglu|linear|attention|qwen3|elastic-qwen3)|OK|FAILED|PASSED|Failure|error" | head -40
if grep -q "^\[  PASSED  \]" "$OUT/tests-backend.log" && ! grep -q "FAILED" "$OUT/tests-backend.log"; then
  note "backend tests: $(grep '^\[  PASSED  \]' "$OUT/tests-backend.log")"
else
  note "backend tests: FAILED, see tests-backend.log"
fi

# Chunked prefill (pos0 > 0): kernel, backend (device store and host views) and model level.
TC="$B/tests/cuda/test_chunked_cuda"
timeout 300 "$TC" 2>&1 | tee "$OUT/tests-chunked.log" | grep -E "^\s+(pos0=|store|host views|dense|fa-ssa|xa-ssa|fa-xa|gather)|OK|FAILED|PASSED|Failure|differs|error" | head -80
if grep -q "^\[  PASSED  \]" "$OUT/tests-chunked.log" && ! grep -q "FAILED" "$OUT/tests-chunked.log"; then
  note "chunked tests: $(grep '^\[  PASSED  \]' "$OUT/tests-chunked.log")"
else
  note "chunked tests: FAILED, see tests-chunked.log"
fi

# The router and sampling on the device (device mode: the router reads k where the forward left
# it, sampling returns one id), a chat's later chunks and decode with --decode-kv bounded/full
# against the CPU, and `elastic route/generate --backend cuda`.
for t in test_router_cuda test_sampling_cuda test_decode_kv_cuda; do
  timeout 300 "$B/tests/cuda/$t" 2>&1 | tee "$OUT/tests-$t.log" | grep -E "^\s+(router|sampl|elastic-qwen3|qwen|llama)|OK|FAILED|PASSED|Failure|error" | head -60
  if grep -q "^\[  PASSED  \]" "$OUT/tests-$t.log" && ! grep -q "FAILED" "$OUT/tests-$t.log"; then
    note "$t: $(grep '^\[  PASSED  \]' "$OUT/tests-$t.log")"
  else
    note "$t: FAILED, see tests-$t.log"
  fi
done
timeout 60 "$B/bin/elastic" generate --backend cuda -m "$ROOT/.gpu-shared/fixtures/hf/elastic-qwen3-fa-ssa" \
  --input-ids "1 2 3 4 5 6 7 8 9 10" -n 8 --block 32 --sink 32 --local 96 --temp 0.8 --top-p 0.9 --seed 3 \
  > "$OUT/cli-generate.log" 2>&1
note "elastic generate --backend cuda: rc $?; $(tr '\n' ' ' < "$OUT/cli-generate.log" | cut -c1-240)"

# 4. Sanitizers on the small shapes: prefill (both kernel families), XA estimation, split-KV
# decode (test_attention_cuda); the past gather, chunked prefill, the KV-store append and the
# stored decode (test_chunked_cuda).
[[ $SANITIZE -eq 1 ]] && for tool in memcheck racecheck; do
  for bin in "$T" "$TC"; do
    log="$OUT/sanitizer-$tool-$(basename "$bin").log"
    timeout 300 compute-sanitizer --tool "$tool" --error-exitcode 9 "$bin" --gtest_filter='CudaSanitizerSmall.*' \
      > "$log" 2>&1
    rc=$?
    note "compute-sanitizer $tool $(basename "$bin"): rc $rc; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | head -2 | tr '\n' ' ') $(grep -E '^\[  (PASSED|FAILED)' "$log" | head -1)"
  done
done

# Sanitizers on the router and sampling kernels (block reductions and scans in shared memory).
[[ $SANITIZE -eq 1 ]] && for tool in memcheck racecheck; do
  for spec in "test_router_cuda:CudaRouter.OutputsMatch*" "test_sampling_cuda:CudaSampling.ExactTies*"; do
    log="$OUT/sanitizer-$tool-${spec%%:*}.log"
    timeout 300 compute-sanitizer --tool "$tool" --error-exitcode 9 "$B/tests/cuda/${spec%%:*}" \
      --gtest_filter="${spec#*:}" > "$log" 2>&1
    rc=$?
    note "compute-sanitizer $tool ${spec%%:*}: rc $rc; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | head -2 | tr '\n' ' ')"
  done
done

# 5. Benchmark.
if [[ $BENCH -eq 1 ]]; then
  [[ $QUICK -eq 1 ]] && SIZES=8192
  PYTHONUNBUFFERED=1 timeout 400 python3 "$SRC/bench/cuda/attention_bench.py" --lib "$B/bin/libelastic_attn_bench.so" \
    --sizes "$SIZES" --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
  note "bench rc $?"
  sed -n '/^| N |/,$p' "$OUT/bench.log"
  grep -E "Error|error|Traceback" "$OUT/bench.log" | head -5
fi
echo
echo "== summary"
printf '%s\n' "${summary[@]}"
