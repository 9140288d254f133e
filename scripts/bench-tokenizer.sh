#!/usr/bin/env bash
# Encode throughput of the Qwen tokenizer, ours vs HF tokenizers (PyPI), single thread, same text,
# same segmentation (line by line, each line with its '\n'), in one run; checks that both give
# the same ids. Usage: scripts/bench-tokenizer.sh [BUILD_DIR] [MB]   (see docs/perf-tokenizer.md)
#
# The >= 10 MB mixed-language text is generated reproducibly from material on any Debian machine
# with this project's data: the translated messages of the gettext catalogs under
# /usr/share/locale (files in sorted order; English msgids and their translations in ~150
# languages), the tokenizer fixture texts and llama.cpp's test-vector inputs. It is written to
# BUILD_DIR/bench-tokenizer/mixed.txt and not committed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
mb="${2:-12}"
shared="${ELASTIC_SHARED_DIR:-$root/../shared}"
tok="$shared/data/qwen-tokenizer"
work="$build/bench-tokenizer"
mkdir -p "$work"

ninja -C "$build" bench_tokenizer >/dev/null

# HF tokenizers in a private virtual environment.
venv="$work/venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q tokenizers
fi

"$venv/bin/python" - "$shared" "$work/mixed.txt" "$mb" <<'PY'
import gettext, glob, json, os, sys
shared, out, mb = sys.argv[1], sys.argv[2], float(sys.argv[3])
target = int(mb * 1e6)
parts, size = [], 0
def add(s):
    global size
    s = s.replace("\r", "")
    if s.strip():
        parts.append(s.rstrip("\n") + "\n")
        size += len(parts[-1].encode())
for f in sorted(glob.glob(shared + "/fixtures/tokenizer/*.jsonl")):
    for line in open(f, encoding="utf-8"):
        add(json.loads(line)["text"])
for f in sorted(glob.glob(shared + "/data/*/ggml-vocab-*.inp")):
    for s in open(f, encoding="utf-8").read().split("\n__ggml_vocab_test__\n"):
        add(s)
for f in sorted(glob.glob("/usr/share/locale/*/LC_MESSAGES/*.mo")):
    if size >= target:
        break
    try:
        cat = gettext.GNUTranslations(open(f, "rb"))._catalog
    except Exception:
        continue
    for k in sorted(cat, key=str):
        v = cat[k]
        for s in ((k[0] if isinstance(k, tuple) else k), v):
            if isinstance(s, str):
                add(s)
if size < target:
    sys.exit("bench-tokenizer: only %d bytes of text found under /usr/share/locale" % size)
with open(out, "w", encoding="utf-8") as fh:
    fh.write("".join(parts))
PY
bytes=$(stat -c %s "$work/mixed.txt")
echo "text: $work/mixed.txt ($bytes bytes, sha256 $(sha256sum "$work/mixed.txt" | cut -c1-16)...)"

ours=$("$build/bin/bench_tokenizer" "$tok" "$work/mixed.txt" 3)
theirs=$(RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false "$venv/bin/python" - "$tok/tokenizer.json" "$work/mixed.txt" <<'PY'
import sys, time, tokenizers
tok = tokenizers.Tokenizer.from_file(sys.argv[1])
text = open(sys.argv[2], encoding="utf-8", newline="").read()
raw = text.encode()
lines = [l + "\n" for l in text.split("\n")]
if text.endswith("\n"):
    lines.pop()
else:
    lines[-1] = lines[-1][:-1]
first = best = 0.0
for r in range(3):
    t = time.perf_counter()
    enc = tok.encode_batch(lines, add_special_tokens=False)
    sec = time.perf_counter() - t
    mbs = len(raw) / 1e6 / sec
    first = first or mbs
    best = max(best, mbs)
h, n = 0xcbf29ce484222325, 0
for e in enc:
    for i in e.ids:
        h = ((h ^ i) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    n += len(e.ids)
print("hf       bytes %d  lines %d  tokens %d  hash %016x  tokenizers %s  first %.2f MB/s  best %.2f MB/s"
      % (len(raw), len(lines), n, h, tokenizers.__version__, first, best))
PY
)
echo "$ours"
echo "$theirs"
h1=$(echo "$ours" | sed -E 's/.*hash ([0-9a-f]+).*/\1/'); h2=$(echo "$theirs" | sed -E 's/.*hash ([0-9a-f]+).*/\1/')
b1=$(echo "$ours" | sed -E 's/.*best ([0-9.]+) MB.*/\1/'); b2=$(echo "$theirs" | sed -E 's/.*best ([0-9.]+) MB.*/\1/')
f1=$(echo "$ours" | sed -E 's/.*first ([0-9.]+) MB.*/\1/'); f2=$(echo "$theirs" | sed -E 's/.*first ([0-9.]+) MB.*/\1/')
[ "$h1" = "$h2" ] && same=yes || same=NO
printf '\n%-22s %12s %12s\n' "" "first MB/s" "best MB/s"
printf '%-22s %12s %12s\n' "elastic" "$f1" "$b1" "HF tokenizers" "$f2" "$b2"
printf '%-22s %12.2f %12.2f\n' "ratio (elastic / HF)" "$(echo "$f1 / $f2" | bc -l)" "$(echo "$b1 / $b2" | bc -l)"
echo "identical ids: $same"
[ "$same" = yes ]
