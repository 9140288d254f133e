#!/usr/bin/env python3
"""Writes the shipped model folder from a router-training output (issue 10 §2).

`elastic train-router` writes an Elastic checkpoint as two shards (backbone.safetensors, written
once, and router.safetensors) with model.safetensors.index.json. The shipped folder holds one
model.safetensors with every tensor (the backbone in bf16, the routers in f32), config.json,
tokenizer.json and generation_config.json, plus what `elastic demo` reads beside them
(static_scores.tsv, when given). Pure Python: safetensors is an 8-byte little-endian header
length, a JSON header of {name: {dtype, shape, data_offsets}} and the tensor bytes.

usage: scripts/ship-model.py CHECKPOINT_DIR OUT_DIR [--scores FILE]
"""
import json
import os
import shutil
import struct
import sys
import tempfile


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        lo, hi = info["data_offsets"]
        tensors[name] = (info["dtype"], info["shape"], data[lo:hi])
    return meta, tensors


def write_safetensors(path, tensors, meta):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = meta
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)  # align the data to 8 bytes
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".ship-")
    with os.fdopen(fd, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    args = sys.argv[1:]
    scores = None
    if "--scores" in args:
        i = args.index("--scores")
        scores = args[i + 1]
        del args[i:i + 2]
    if len(args) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    src, out = args
    index = json.load(open(os.path.join(src, "model.safetensors.index.json")))
    tensors = {}
    for shard in sorted(set(index["weight_map"].values())):
        _, t = read_safetensors(os.path.join(src, shard))
        tensors.update(t)
    missing = sorted(set(index["weight_map"]) - set(tensors))
    if missing:
        sys.exit(f"{src}: tensors named in the index but in no shard: {missing[:5]}")
    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, "model.safetensors"), tensors, {"format": "pt"})
    for f in ("config.json", "tokenizer.json", "generation_config.json"):
        shutil.copyfile(os.path.join(src, f), os.path.join(out, f))
    if scores:
        shutil.copyfile(scores, os.path.join(out, "static_scores.tsv"))
    size = os.path.getsize(os.path.join(out, "model.safetensors"))
    print(f"shipped {len(tensors)} tensors ({size / 2**20:.1f} MiB) to {out}")


if __name__ == "__main__":
    main()
