#!/usr/bin/env bash
# Builds everything with AddressSanitizer + UndefinedBehaviorSanitizer in build-asan (CPU only)
# and runs the unit and bad-input tests there. Any sanitizer report fails the run: UBSan is
# built non-recoverable and ASan aborts on the first error.
# Usage: scripts/sanitize.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build-asan"
jobs="${ELASTIC_JOBS:-2}"

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DELASTIC_SANITIZE=ON -DELASTIC_CUDA=OFF >/dev/null
ninja -C "$build" -j "$jobs"
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$root/scripts/lsan.supp}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
cd "$build"
ctest -L "unit|badinput" --output-on-failure -j "$jobs"
