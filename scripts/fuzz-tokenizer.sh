#!/usr/bin/env bash
# Builds fuzz_tokenizer (clang, libFuzzer + ASan + UBSan) in build-fuzz-tokenizer and runs it for
# SECONDS (default 60) at low priority on a scratch copy of its committed seed corpus. Fails on a
# crash, leak, timeout or uncaught exception; the reproducer is left under
# build-fuzz-tokenizer/findings/. Usage: scripts/fuzz-tokenizer.sh [SECONDS]
# (see docs/fuzzing-tokenizer.md)
set -euo pipefail
seconds="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build-fuzz-tokenizer"
jobs="${ELASTIC_JOBS:-2}"

CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DELASTIC_FUZZ=ON -DELASTIC_NATIVE=OFF -DELASTIC_TESTS=OFF -DELASTIC_CUDA=OFF >/dev/null
nice -n 10 ninja -C "$build" -j "$jobs" fuzz_tokenizer

work="$build/corpus/fuzz_tokenizer"
findings="$build/findings/fuzz_tokenizer"
mkdir -p "$work" "$findings"
echo "== fuzz_tokenizer for ${seconds}s"
set +e
nice -n 10 "$build/bin/fuzz_tokenizer" "$work" "$root/fuzz/corpus/fuzz_tokenizer" \
  -dict="$root/fuzz/tokenizer.dict" -max_total_time="$seconds" -max_len=4096 \
  -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$findings/" \
  2>&1 | tail -n 30
status="${PIPESTATUS[0]}"
set -e
if [ "$status" -ne 0 ]; then
  echo "fuzz-tokenizer: FAILED (exit $status); reproducer in $findings" >&2
  exit 1
fi
echo "fuzz-tokenizer: no findings"
