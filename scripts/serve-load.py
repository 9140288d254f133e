#!/usr/bin/env python3
"""Load test of `elastic serve` on loopback, bounded in time (stdlib only).

Starts the server on a free port with a small model, then:
  1. throughput: streaming clients back to back, 1 client (sequential) then N (default 16), for
     --throughput-seconds each: generated tokens per second, and the ratio;
  2. soak: --clients (default 32) concurrent streaming clients for --duration seconds (default
     300): failed requests, time to first token and inter-token latency (p50 / p99), and the
     server's RSS sampled every second (flat after warm-up = no growth between the first and
     the last third of the soak beyond noise).
The clients are build/bin/serve_load_client (C++ threads, the same requests and measurements as
this script's Python clients, which --client python still runs): on a 2-core machine the Python
clients took about half a core that the server then did not have.
The default model ("small-26m") is a 26 M-parameter Llama (8 layers, hidden 512, 8 query / 4 KV
heads of 64, MLP 1536, the task suite's 2891-token vocabulary) with random weights (GPT-2 init;
written once into the build folder of --bin, serve-load-small-26m/, by `elastic train --lr 0 --steps 1`): its bf16
weights (53 MB) stream from DRAM on every decode step, as a served model's do, where the 656 K
TinyStories model (--model ../shared/data/tinystories-656k) stays in the L2/L3 caches and gains
little from batching (docs/serve.md). The text it writes is noise; the tokens are what count.
Prints a table and writes --json FILE. Every loop is bounded by its deadline; the server is
stopped by its own pid (SIGTERM) at the end.
"""
import argparse
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ["Once upon a time", "The little dog", "Tom and Lily went to the park", "One day, a bird",
           "The sun was shining and", "Sam had a red ball", "There was a big tree", "Mia liked to paint",
           "The cat saw a mouse", "A boy named Tim"]


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def stream_request(host, port, rng, timeout=120):
    """One streaming completion; returns (ok, tokens, ttft, [chunk gaps], error)."""
    body = {"prompt": rng.choice(PROMPTS), "max_tokens": rng.randint(32, 128), "temperature": 0.8,
            "seed": rng.randrange(1 << 31), "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            return False, 0, None, [], f"HTTP {r.status}: {r.read()[:200]!r}"
        first, last, gaps, tokens, done = None, None, [], 0, False
        while True:
            line = r.readline()
            if not line:
                break
            if not line.startswith(b"data: "):
                continue
            payload = line[6:].strip()
            if payload == b"[DONE]":
                done = True
                break
            ev = json.loads(payload)
            if "error" in ev:
                return False, tokens, None, gaps, "error event: " + json.dumps(ev["error"])
            if ev.get("usage"):
                tokens = ev["usage"]["completion_tokens"]
            if ev.get("choices") and ev["choices"][0].get("text"):
                now = time.perf_counter()
                if first is None:
                    first = now
                else:
                    gaps.append(now - last)
                last = now
        if not done:
            return False, tokens, None, gaps, "stream ended without [DONE]"
        return True, tokens, (first - t0) if first else None, gaps, None
    except Exception as e:  # noqa: BLE001 - every failure is counted and reported
        return False, 0, None, [], repr(e)
    finally:
        conn.close()


def run_clients(host, port, clients, seconds, seed):
    """`clients` threads issuing streaming requests back to back until the deadline."""
    deadline = time.perf_counter() + seconds
    lock = threading.Lock()
    res = {"ok": 0, "failed": 0, "tokens": 0, "ttft": [], "gaps": [], "errors": []}

    def worker(i):
        rng = random.Random(seed * 1000 + i)
        while time.perf_counter() < deadline:
            ok, tokens, ttft, gaps, err = stream_request(host, port, rng)
            with lock:
                res["ok" if ok else "failed"] += 1
                res["tokens"] += tokens
                if ttft is not None:
                    res["ttft"].append(ttft)
                res["gaps"].extend(gaps)
                if err and len(res["errors"]) < 10:
                    res["errors"].append(err)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 180)
    res["seconds"] = time.perf_counter() - start
    res["tokens_per_s"] = res["tokens"] / res["seconds"]
    for name, xs in (("ttft", res["ttft"]), ("itl", res["gaps"])):
        res[name + "_p50"], res[name + "_p99"] = pct(xs, 50), pct(xs, 99)
    return res


def run_clients_cpp(client_bin, host, port, clients, seconds, seed):
    """The same as run_clients, by build/bin/serve_load_client (C++ threads on cpp-httplib): on a
    2-core machine the Python clients take about half a core that the server then lacks."""
    p = subprocess.run([client_bin, host, str(port), str(clients), str(seconds), str(seed)],
                       stdout=subprocess.PIPE, text=True, timeout=seconds + 300, check=True)
    r = json.loads(p.stdout)
    nan = float("nan")
    return {"ok": r["ok"], "failed": r["failed"], "tokens": r["tokens"], "seconds": r["seconds"],
            "tokens_per_s": r["tokens_per_s"], "errors": r["errors"],
            **{k: nan if r[k] is None else r[k] for k in ("ttft_p50", "ttft_p99", "itl_p50", "itl_p99")}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/bin/elastic"))
    ap.add_argument("--model", default="small-26m",
                    help="an HF model folder, or small-26m (default: made on first use, see above)")
    ap.add_argument("--threads", type=int, default=1,
                    help="server -t (engine threads; default 1: on 2 cores the HTTP threads and the\n"
                         "clients need the other one, and the small model gains little from a second)")
    ap.add_argument("--threads-batch", type=int, default=os.cpu_count(),
                    help="server --threads-batch (threads of the steps with several rows; default:\n"
                         "every core; 0: --threads)")
    ap.add_argument("--omp-wait-policy", choices=["passive", "active", "default"], default="default",
                    help="the server's OMP_WAIT_POLICY (default: unset, libgomp's own, which spins a\n"
                         "while, then sleeps; passive sleeps at once and leaves the core to the HTTP\n"
                         "threads, at a futex wake-up per parallel region)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=300, help="soak seconds")
    ap.add_argument("--throughput-clients", type=int, default=16)
    ap.add_argument("--throughput-seconds", type=float, default=60)
    ap.add_argument("--warmup", type=float, default=10)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--client", choices=["cpp", "python"], default="cpp",
                    help="load generator: build/bin/serve_load_client (default) or this script's\n"
                         "Python threads (http.client)")
    ap.add_argument("--client-bin", default=os.path.join(ROOT, "build/bin/serve_load_client"))
    a = ap.parse_args()
    if a.client == "cpp" and not os.access(a.client_bin, os.X_OK):
        sys.exit(f"{a.client_bin} not found (build the serve_load_client target, or pass --client python)")

    if a.model == "small-26m":
        a.model = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(a.bin))), "serve-load-small-26m")
        if not os.path.exists(os.path.join(a.model, "model.safetensors")):
            print(f"writing the small-26m model into {a.model}", flush=True)
            r = subprocess.run([a.bin, "train", "--out", a.model, "--arch", "llama", "--layers", "8",
                                "--hidden", "512", "--heads", "8", "--kv-heads", "4", "--head-dim", "64",
                                "--ffn", "1536", "--steps", "1", "--lr", "0", "--tasks", "assoc_recall",
                                "--lengths", "64", "--max-tokens", "64", "--batch", "1", "-t", "1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                sys.exit("writing the small-26m model failed: " + r.stderr.strip())
            os.remove(os.path.join(a.model, "train_state.safetensors"))  # 320 MB of AdamW state

    def run(clients, seconds, seed):
        if a.client == "cpp":
            return run_clients_cpp(a.client_bin, host, port, clients, seconds, seed)
        return run_clients(host, port, clients, seconds, seed)

    env = dict(os.environ)
    if a.omp_wait_policy != "default":
        env["OMP_WAIT_POLICY"] = a.omp_wait_policy
    else:
        env.pop("OMP_WAIT_POLICY", None)
    server = subprocess.Popen([a.bin, "serve", "-m", a.model, "--port", "0", "-t", str(a.threads),
                               "--threads-batch", str(a.threads_batch), "--max-queue", "1024"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env)
    line = server.stdout.readline()
    try:
        port = int(line.rsplit(":", 1)[1].split()[0])
    except Exception:
        server.kill()
        sys.exit("server did not start: " + line + server.stderr.read())
    host = "127.0.0.1"
    out = {"threads": a.threads, "threads_batch": a.threads_batch, "omp_wait_policy": a.omp_wait_policy, "model": a.model, "cores": os.cpu_count(), "client": a.client}
    try:
        print(f"server pid {server.pid} on port {port}; warm-up {a.warmup:.0f} s", flush=True)
        run(4, a.warmup, 0)

        seq = run(1, a.throughput_seconds, 1)
        print(f"sequential (1 client):  {seq['tokens_per_s']:.1f} tok/s ({seq['ok']} requests)", flush=True)
        par = run(a.throughput_clients, a.throughput_seconds, 2)
        print(f"{a.throughput_clients} clients:            {par['tokens_per_s']:.1f} tok/s ({par['ok']} requests)",
              flush=True)
        out["throughput"] = {"sequential_tok_s": seq["tokens_per_s"], "concurrent_clients": a.throughput_clients,
                             "concurrent_tok_s": par["tokens_per_s"],
                             "ratio": par["tokens_per_s"] / seq["tokens_per_s"] if seq["tokens_per_s"] else None,
                             "failed": seq["failed"] + par["failed"]}

        rss = []
        stop = threading.Event()

        def sample():
            t0 = time.perf_counter()
            while not stop.is_set():
                rss.append((time.perf_counter() - t0, rss_mib(server.pid)))
                stop.wait(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        soak = run(a.clients, a.duration, 3)
        stop.set()
        sampler.join()
        third = max(1, len(rss) // 3)
        early = [r for _, r in rss[third:2 * third]]  # after warm-up: the middle third
        late = [r for _, r in rss[2 * third:]]
        out["soak"] = {
            "clients": a.clients, "seconds": soak["seconds"], "requests_ok": soak["ok"],
            "requests_failed": soak["failed"], "errors": soak["errors"], "tokens": soak["tokens"],
            "tokens_per_s": soak["tokens_per_s"],
            "ttft_p50_ms": 1e3 * soak["ttft_p50"], "ttft_p99_ms": 1e3 * soak["ttft_p99"],
            "itl_p50_ms": 1e3 * soak["itl_p50"], "itl_p99_ms": 1e3 * soak["itl_p99"],
            "rss_mib_first": rss[0][1] if rss else None, "rss_mib_middle_max": max(early) if early else None,
            "rss_mib_last_max": max(late) if late else None, "rss_mib_end": rss[-1][1] if rss else None,
            "rss_mib_every_30s": [round(r, 1) for t, r in rss[::30]],
        }
        s = out["soak"]
        print(f"soak: {a.clients} streaming clients for {soak['seconds']:.0f} s: {s['requests_ok']} ok, "
              f"{s['requests_failed']} failed, {s['tokens_per_s']:.1f} tok/s", flush=True)
        print(f"  TTFT p50 {s['ttft_p50_ms']:.1f} ms  p99 {s['ttft_p99_ms']:.1f} ms;  "
              f"inter-token p50 {s['itl_p50_ms']:.1f} ms  p99 {s['itl_p99_ms']:.1f} ms", flush=True)
        print(f"  RSS MiB: start {s['rss_mib_first']:.1f}, middle third max {s['rss_mib_middle_max']:.1f}, "
              f"last third max {s['rss_mib_last_max']:.1f}, end {s['rss_mib_end']:.1f}", flush=True)
        print("  RSS MiB every 30 s:", " ".join(f"{r:.1f}" for r in s["rss_mib_every_30s"]), flush=True)
        for e in soak["errors"]:
            print("  error:", e)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            out["server_exit_code"] = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            out["server_exit_code"] = None
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    ok = (out.get("soak", {}).get("requests_failed", 1) == 0 and out["throughput"]["failed"] == 0
          and out["server_exit_code"] == 0)
    print("load test:", "PASS" if ok else "FAIL", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
