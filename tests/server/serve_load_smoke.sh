#!/usr/bin/env bash
# scripts/serve-load.sh in seconds: it makes its default small-26m model (once per build folder),
# serves it, runs the throughput and soak phases and exits 0 with no failed request, a ratio and
# latencies in its JSON. Usage: serve_load_smoke.sh REPO BUILD
set -uo pipefail
repo=$1 build=$2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
bash "$repo/scripts/serve-load.sh" --bin "$build/bin/elastic" --client-bin "$build/bin/serve_load_client" \
  --warmup 1 --throughput-seconds 3 --duration 4 --clients 8 --throughput-clients 4 \
  --json "$scratch/load.json" > "$scratch/log" 2>&1
rc=$?
[[ $rc -eq 0 ]] || { cat "$scratch/log"; fail "serve-load.sh exited $rc"; }
[[ -f $build/serve-load-small-26m/model.safetensors ]] || fail "no small-26m model in $build"
[[ ! -e $build/serve-load-small-26m/train_state.safetensors ]] || fail "the model's AdamW state was kept"
python3 - "$scratch/load.json" <<'PY' || { cat "$scratch/log"; fail "load.json"; }
import json, sys
d = json.load(open(sys.argv[1]))
assert d["model"].endswith("serve-load-small-26m"), d["model"]
t, s = d["throughput"], d["soak"]
assert t["sequential_tok_s"] > 0 and t["concurrent_tok_s"] > 0 and t["ratio"] > 0, t
assert t["failed"] == 0 and s["requests_failed"] == 0 and s["requests_ok"] > 0, (t, s)
assert s["ttft_p50_ms"] > 0 and s["itl_p99_ms"] >= s["itl_p50_ms"] > 0, s
assert d["server_exit_code"] == 0
PY
echo "serve-load smoke: PASS ($(grep -m1 clients: "$scratch/log"))"
