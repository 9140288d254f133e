"""The live page at `/` in headless Chromium (Debian's `chromium`): after a few requests (one of
them all-SA) it lists them with their Omega and draws their routing heatmaps. The DOM after the
scripts ran is checked, and a screenshot's pixels must hold both heatmap colours (blue retrieval,
orange sparse). Skips, saying why, where chromium is not installed."""
import http.client
import json
import os
import shutil
import struct
import subprocess
import tempfile
import zlib

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def png_pixels(path):
    """RGB(A) pixels of an 8-bit non-interlaced PNG (what Chromium writes), as (w, h, rows)."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and color in (2, 6) and interlace == 0
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows


def test_dashboard_shows_requests_and_heatmaps(server):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs Debian's chromium)")
    for extra in ({"static": "all-sa"}, None):
        c = http.client.HTTPConnection(server.host, server.port, timeout=30)
        body = {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}
        if extra:
            body["elastic"] = extra
        c.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        assert c.getresponse().status == 200
        c.close()
    with tempfile.TemporaryDirectory(prefix=f"elastic-dash-{os.getpid()}-") as tmp:
        common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                  f"--user-data-dir={tmp}/profile", "--virtual-time-budget=3000"]
        dom = subprocess.run(common + ["--dump-dom", server.url + "/"], capture_output=True, text=True, timeout=120)
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout
        assert 'data-ready="1"' in html, html[-2000:]
        assert "tinystories-656k" in html
        assert html.count('class="cell sa"') >= 8  # the all-SA request: 2 layers x 4 KV heads
        assert html.count('class="cell ra"') >= 8  # the dense one
        shot = os.path.join(tmp, "dashboard.png")
        r = subprocess.run(common + ["--window-size=1000,700", f"--screenshot={shot}", server.url + "/"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and os.path.exists(shot), r.stderr[-2000:]
        keep = os.environ.get("ELASTIC_DASHBOARD_PNG")
        if keep:
            shutil.copy(shot, keep)
        w, h, bpp, rows = png_pixels(shot)
        colours = set()
        for row in rows:
            for x in range(0, w * bpp, bpp):
                colours.add(bytes(row[x:x + 3]))
        assert bytes([0x4E, 0x79, 0xA7]) in colours  # retrieval cells
        assert bytes([0xF2, 0x8E, 0x2B]) in colours  # sparse cells
