#!/usr/bin/env bash
# Load test of `elastic serve` on loopback with a small model (bounded in time: ~7 minutes
# with the defaults): 1 vs 16 streaming clients for throughput, then 32 streaming clients for
# 5 minutes (failures, TTFT and inter-token latency p50/p99, RSS). The clients are
# build/bin/serve_load_client (--client python: the script's own). Usage:
#   scripts/serve-load.sh [--model small-26m|DIR] [--duration 300] [--clients 32] [--threads 1]
#                         [--threads-batch N] [--omp-wait-policy default|passive|active] [--client cpp|python]
#                         [--json out.json]
# Results of a run are recorded in docs/serve.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
exec python3 "$root/scripts/serve-load.py" "$@"
