"""Fixtures of the `elastic serve` tests: the binary, the small model, and servers started on free
ports (port 0: the server picks one and prints it), stopped by their own pid at the end."""
import os
import re
import signal
import subprocess
import time
import urllib.request

import pytest

BIN = os.environ.get("ELASTIC_BIN", os.path.join(os.path.dirname(__file__), "../../build/bin/elastic"))
SHARED = os.environ.get("ELASTIC_SHARED_DIR", os.path.join(os.path.dirname(__file__), "../../../shared"))
MODEL = os.path.join(SHARED, "data/tinystories-656k")
# Small SSA sizes so that a static all-sa request runs rings that wrap inside short prompts.
SSA = ["--sink", "16", "--local", "32", "--block", "16"]


class Server:
    def __init__(self, args, env=None):
        self.args = [BIN, "serve", "-m", MODEL, "--port", "0", "-t", "1", *args]
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "OMP_WAIT_POLICY": "passive", **(env or {})})
        line = self.proc.stdout.readline()
        m = re.search(r"http://([\d.]+):(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError("server did not start: " + line + self.proc.stderr.read())
        self.host, self.port = m.group(1), int(m.group(2))
        self.url = f"http://{self.host}:{self.port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2).read()
                break
            except Exception:
                time.sleep(0.05)

    def metrics(self):
        text = urllib.request.urlopen(self.url + "/metrics", timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server():
    s = Server(["--chat-template", "chatml", "--max-prompt-tokens", "400", "--max-output-tokens", "200",
                "--max-body-bytes", "65536", "--max-queue", "64", "--page-rows", "8", *SSA])
    yield s
    assert s.stop() == 0, s.proc.stderr.read()


def generate(prompt, n, extra=()):
    """`elastic generate` alone, greedy, with the server's options: the continuation text."""
    r = subprocess.run([BIN, "generate", "-m", MODEL, "-p", prompt, "-n", str(n), "-t", "1", "--json", *SSA, *extra],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_WAIT_POLICY": "passive"})
    assert r.returncode == 0, r.stderr
    import json
    return json.loads(r.stdout)["text"]
