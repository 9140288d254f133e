#!/usr/bin/env bash
# Fresh machine to first result: installs dependencies, builds, and runs the main job on the
# built-in synthetic model (no downloads): the engine benchmark on a Qwen3-0.6B-shaped model
# with random weights, then the Elastic Attention prefill comparison (quick sizes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
./build/bin/elastic bench --synthetic qwen3-0.6b
if [ -x build/bin/bench_attention ]; then ./build/bin/bench_attention --quick; fi
