#!/usr/bin/env bash
# The one script sent to the GPU machine (device tool): builds the CUDA backend for sm_90a from
# the carried tree, runs the CUDA tests, compute-sanitizer (memcheck, racecheck) on the small
# attention/XA shapes, and the attention benchmark beside cuDNN SDPA and FlexAttention; prints a
# short table last and writes every log under $OUT.
#
# The GPU machine has nvcc, cmake, ninja and python3 + torch but no Debian -dev packages and no
# network: the build dependencies travel as .deb files in .debs/ (scripts/gpu-check.sh --fetch
# downloads them here) and are unpacked into a private prefix, never into /. The golden
# fixtures travel in .gpu-shared/ (--fetch copies them from ../shared).
# Usage here:   scripts/gpu-check.sh --fetch
# On the device: run(command="scripts/gpu-check.sh [--quick] [--no-bench] [--e2e]", carry=[".debs", ".gpu-shared"])
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEBS=(nlohmann-json3-dev libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3
      libutf8proc-dev libutf8proc2 libpng-dev libpng16-16 zlib1g-dev libgtest-dev pkgconf
      libpkgconf3 pkgconf-bin)

if [[ "${1:-}" == "--fetch" ]]; then
  set -e
  mkdir -p "$ROOT/.debs" && (cd "$ROOT/.debs" && apt-get download "${DEBS[@]}")
  mkdir -p "$ROOT/.gpu-shared/fixtures/hf"
  for c in attention-gqa attention-mha-long qwen3-tiny elastic-qwen3-fa-ssa elastic-qwen3-fa-xa elastic-qwen3-xa-ssa; do
    cp -r "$ROOT/../shared/fixtures/hf/$c" "$ROOT/.gpu-shared/fixtures/hf/"
  done
  grep -qx '/.gpu-shared/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.gpu-shared/' >> "$ROOT/.git/info/exclude"
  echo "fetched: $(ls "$ROOT/.debs" | wc -l) packages, fixtures in .gpu-shared"
  exit 0
fi

QUICK=0 BENCH=1 E2E=0 SIZES=8192,32768,131072
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    --no-bench) BENCH=0 ;;
    --e2e) E2E=1 ;;
    --sizes=*) SIZES=${a#--sizes=} ;;
  esac
done
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT"
summary=()
note() { summary+=("$1"); echo "== $1"; }

# 1. Dependencies into a private prefix.
PREFIX=/tmp/elastic-deps
rm -rf "$PREFIX" && mkdir -p "$PREFIX"
for f in "$ROOT"/.debs/*.deb; do dpkg -x "$f" "$PREFIX"; done
for pc in "$PREFIX"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc "$PREFIX"/usr/share/pkgconfig/*.pc; do
  [[ -f "$pc" ]] && sed -i "s|^prefix=/usr|prefix=$PREFIX/usr|" "$pc"
done
export PATH="$PREFIX/usr/bin:$PATH"
export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
export PKG_CONFIG_PATH="$PREFIX/usr/lib/x86_64-linux-gnu/pkgconfig:$PREFIX/usr/share/pkgconfig"

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used,memory.total --format=csv \
  2>&1 | tee "$OUT/gpu.txt"

# 2. Build (sm_90a only: the device is an H200) from the last commit when the carried tree has
# its git history (other work in progress in the tree cannot break the check), else the tree.
SRC="$ROOT"
if git -c safe.directory='*' -C "$ROOT" rev-parse HEAD > /dev/null 2>&1; then
  SRC=/tmp/elastic-src
  rm -rf "$SRC" && mkdir -p "$SRC"
  git -c safe.directory='*' -C "$ROOT" archive HEAD | tar -x -C "$SRC"
  echo "building commit $(git -c safe.directory='*' -C "$ROOT" log --oneline -1)"
fi
B="$ROOT/build-gpu"
cmake -S "$SRC" -B "$B" -G Ninja -DELASTIC_CUDA=ON -DELASTIC_TESTS=ON \
  -DELASTIC_CUDA_GENCODE="-gencode=arch=compute_90a,code=sm_90a" \
  -DCMAKE_PREFIX_PATH="$PREFIX/usr" -DELASTIC_SHARED_DIR="$ROOT/.gpu-shared" > "$OUT/build.log" 2>&1
rc=$?
if [[ $rc -eq 0 ]]; then
  ninja -C "$B" -j16 test_attention_cuda test_backend_cuda elastic_attn_bench bench_prefill_cuda >> "$OUT/build.log" 2>&1
  rc=$?
fi
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

# 3. Tests.
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

# 4. Sanitizers on the small shapes.
for tool in memcheck racecheck; do
  timeout 300 compute-sanitizer --tool "$tool" --error-exitcode 9 "$T" --gtest_filter='CudaSanitizerSmall.*' \
    > "$OUT/sanitizer-$tool.log" 2>&1
  rc=$?
  note "compute-sanitizer $tool: rc $rc; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-$tool.log" | head -2 | tr '\n' ' ')"
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
# 6. End-to-end prefill of the synthetic Qwen3-8B shape (--e2e; minutes).
if [[ $E2E -eq 1 ]]; then
  timeout 330 "$B/bin/bench_prefill_cuda" > "$OUT/e2e.log" 2>&1
  note "e2e prefill rc $?"
  cat "$OUT/e2e.log"
fi
echo
echo "== summary"
printf '%s\n' "${summary[@]}"
