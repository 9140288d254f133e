#!/usr/bin/env bash
# Builds the libFuzzer targets in build-fuzz (clang, ASan+UBSan) and runs each for SECONDS
# (default 30) on a scratch copy of its committed seed corpus. Fails on the first crash, leak,
# timeout or uncaught exception; the reproducer is left as build-fuzz/findings/<target>/crash-*.
# Usage: scripts/fuzz.sh [SECONDS]      (see docs/fuzzing.md)
set -euo pipefail
seconds="${1:-30}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build-fuzz"
jobs="${ELASTIC_JOBS:-2}"

CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DELASTIC_FUZZ=ON -DELASTIC_NATIVE=OFF -DELASTIC_TESTS=OFF -DELASTIC_CUDA=OFF >/dev/null
ninja -C "$build" -j "$jobs" fuzz_safetensors fuzz_config

declare -A dict=([fuzz_safetensors]=safetensors.dict [fuzz_config]=config.dict)
for target in fuzz_safetensors fuzz_config; do
  # New inputs go to a scratch corpus so the committed seeds stay small and reviewed.
  work="$build/corpus/$target"
  findings="$build/findings/$target"
  mkdir -p "$work" "$findings"
  echo "== $target for ${seconds}s"
  "$build/bin/$target" "$work" "$root/fuzz/corpus/$target" \
    -dict="$root/fuzz/${dict[$target]}" -max_total_time="$seconds" -max_len=65536 \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$findings/" \
    2>&1 | tail -n 25
  status="${PIPESTATUS[0]}"
  if [ "$status" -ne 0 ]; then
    echo "fuzz: $target FAILED (exit $status); reproducer in $findings" >&2
    exit 1
  fi
done
echo "fuzz: no findings"
