#!/usr/bin/env bash
# Builds the libFuzzer targets in build-fuzz (clang, ASan+UBSan) and runs each for SECONDS
# (default 30) on a scratch copy of its committed seed corpus. Fails on the first crash, leak,
# timeout or uncaught exception; the reproducer is left as build-fuzz/findings/<target>/crash-*.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]      (default: every target; see docs/fuzzing.md)
# ELASTIC_FUZZ_TARGETS="a b" still selects targets when none are named on the command line.
set -euo pipefail
seconds="${1:-30}"
shift $(( $# > 0 ? 1 : 0 ))
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build-fuzz"
jobs="${ELASTIC_JOBS:-2}"

all=(fuzz_safetensors fuzz_config fuzz_serve_request fuzz_tokenizer fuzz_static_routing
     fuzz_eval_jsonl)
declare -A dict=([fuzz_safetensors]=safetensors.dict [fuzz_config]=config.dict
                [fuzz_serve_request]=serve_request.dict [fuzz_tokenizer]=tokenizer.dict
                [fuzz_static_routing]=static_routing.dict [fuzz_eval_jsonl]=eval_jsonl.dict)
# The tokenizer fuzzer's inputs are texts, longer ones are slow to encode under ASan; it loads
# three real tokenizers, hence the larger RSS limit.
declare -A max_len=([fuzz_tokenizer]=4096)
declare -A rss=([fuzz_tokenizer]=4096)
if [ $# -gt 0 ]; then
  targets=("$@")
else
  read -r -a targets <<<"${ELASTIC_FUZZ_TARGETS:-${all[*]}}"
fi
for target in "${targets[@]}"; do
  if [ -z "${dict[$target]+x}" ]; then
    echo "fuzz: unknown target '$target' (known: ${all[*]})" >&2
    exit 2
  fi
done

CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DELASTIC_FUZZ=ON -DELASTIC_NATIVE=OFF -DELASTIC_TESTS=OFF -DELASTIC_CUDA=OFF >/dev/null
ninja -C "$build" -j "$jobs" "${targets[@]}"

for target in "${targets[@]}"; do
  # New inputs go to a scratch corpus so the committed seeds stay small and reviewed.
  work="$build/corpus/$target"
  findings="$build/findings/$target"
  mkdir -p "$work" "$findings"
  log="$build/fuzz-$target.log"
  echo "== $target for ${seconds}s (log: $log)"
  if ! "$build/bin/$target" "$work" "$root/fuzz/corpus/$target" \
      -dict="$root/fuzz/${dict[$target]}" -max_total_time="$seconds" \
      -max_len="${max_len[$target]:-65536}" -timeout=10 -rss_limit_mb="${rss[$target]:-2048}" \
      -print_final_stats=1 -artifact_prefix="$findings/" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz: $target FAILED; reproducer in $findings" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' "$log" || true
done
echo "fuzz: no findings"
