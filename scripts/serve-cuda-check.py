#!/usr/bin/env python3
"""Acceptance 2 of issue 12 on a device, with the standard library only (the GPU machine has no
openai package): N concurrent greedy completions from `elastic serve --backend cuda` must equal
N sequential `elastic generate --backend cuda` runs with the same prompts and options (half of
the requests all-SA through the "elastic" extension, SSA rings that wrap).
Usage: scripts/serve-cuda-check.py ELASTIC_BIN MODEL_DIR [N]"""
import concurrent.futures
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request

PROMPTS = ["Once upon a time", "The little dog", "Tom and Lily went to the park", "One day, a bird",
           "The sun was shining and", "Sam had a red ball", "There was a big tree", "Mom said"]
SSA = ["--sink", "16", "--local", "32", "--block", "16"]
TOKENS = 40


def main():
    binary, model = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    jobs = [(PROMPTS[i % len(PROMPTS)], i % 2 == 1) for i in range(n)]
    proc = subprocess.Popen([binary, "serve", "-m", model, "--backend", "cuda", "--port", "0", "--page-rows", "8",
                             *SSA], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://([\d.]+):(\d+)", line)
        if not m:
            print("server did not start:", line, proc.stderr.read())
            return 1
        url = f"http://{m.group(1)}:{m.group(2)}"
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/health", timeout=2).read()
                break
            except Exception:
                time.sleep(0.05)

        def ask(job):
            prompt, sparse = job
            body = {"prompt": prompt, "max_tokens": TOKENS, "temperature": 0}
            if sparse:
                body["elastic"] = {"static": "all-sa"}
            req = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            return json.loads(urllib.request.urlopen(req, timeout=120).read())["choices"][0]["text"]

        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            got = list(ex.map(ask, jobs))
        concurrent_s = time.time() - t0
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    want = []
    for prompt, sparse in jobs:
        r = subprocess.run([binary, "generate", "--backend", "cuda", "-m", model, "-p", prompt, "-n", str(TOKENS),
                            "--json", *SSA, *(["--static", "all-sa"] if sparse else [])],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            print("elastic generate failed:", r.stderr)
            return 1
        want.append(json.loads(r.stdout)["text"])
    same = sum(g == w for g, w in zip(got, want))
    for (prompt, sparse), g, w in zip(jobs, got, want):
        if g != w:
            print(f"DIFFERS ({'all-sa' if sparse else 'dense'}) {prompt!r}:\n  serve:    {g!r}\n  generate: {w!r}")
    print(f"serve --backend cuda: {n} concurrent greedy requests in {concurrent_s:.2f} s; {same}/{n} equal to "
          f"sequential `elastic generate --backend cuda`; server exit code {rc} after SIGTERM")
    return 0 if same == n and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
