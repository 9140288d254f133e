#!/usr/bin/env python3
"""Writes the fuzz seed corpus: small valid and near-valid safetensors files and configs.

Run from anywhere: python3 fuzz/make_corpus.py. Seeds are written by hand here (no fixture
copies) so each shows one feature or one defect the parser must reject cleanly.
"""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
SIZES = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I16": 2,
         "I8": 1, "U8": 1, "BOOL": 1}


def safetensors(tensors, metadata=None, pad=True, header_len=None):
    """tensors: list of (name, dtype, shape); data is a byte ramp laid out contiguously."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = SIZES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + n]}
        data += bytes((len(data) + i) % 251 for i in range(n))
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - (len(text) + 8) % 8) % 8)
    length = len(text) if header_len is None else header_len
    return struct.pack("<Q", length) + text + data


def raw_header(text: bytes, data: bytes = b"", pad=True):
    if pad:
        text += b" " * ((8 - (len(text) + 8) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def write(target, name, blob):
    path = os.path.join(ROOT, target, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(blob if isinstance(blob, bytes) else blob.encode())


def safetensors_seeds():
    t = "fuzz_safetensors"
    write(t, "empty_header", raw_header(b"{}"))
    write(t, "one_f32", safetensors([("w", "F32", [2, 3])]))
    write(t, "all_dtypes", safetensors(
        [(f"t.{d.lower()}", d, [3]) for d in ["F64", "I64", "F32", "I32", "F16", "BF16", "I16",
                                               "I8", "U8", "BOOL"]]))
    write(t, "metadata", safetensors([("a", "BF16", [4, 2])], metadata={"format": "pt", "k": "v"}))
    write(t, "empty_and_scalar", safetensors([("s", "F32", []), ("z", "F32", [0, 5]),
                                              ("e", "BF16", [0])]))
    write(t, "model_like", safetensors(
        [("model.embed_tokens.weight", "BF16", [8, 4]),
         ("model.layers.0.self_attn.q_proj.weight", "BF16", [4, 4]),
         ("model.norm.weight", "BF16", [4])]))
    # Near-valid: each breaks one rule.
    good = safetensors([("w", "F32", [2, 2])])
    write(t, "truncated_data", good[:-3])
    write(t, "truncated_header", good[:12])
    write(t, "header_len_beyond_file", safetensors([("w", "F32", [2])], header_len=4096))
    write(t, "header_len_huge", struct.pack("<Q", 1 << 62) + b"{}")
    write(t, "short_file", b"\x02\x00\x00")
    write(t, "empty_file", b"")
    write(t, "overlap", raw_header(
        b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
        b'"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', bytes(12)))
    write(t, "out_of_range", raw_header(
        b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[64,72]}}', bytes(8)))
    write(t, "byte_count_mismatch", raw_header(
        b'{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', bytes(8)))
    write(t, "unknown_dtype", raw_header(
        b'{"a":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}}', bytes(8)))
    write(t, "negative_dim", raw_header(
        b'{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}'))
    write(t, "huge_dims_with_zero", raw_header(
        b'{"a":{"dtype":"U8","shape":[4611686018427387904,2,0],"data_offsets":[0,0]}}'))
    write(t, "misaligned", raw_header(
        b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        b'"b":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}}', bytes(5)))
    write(t, "duplicate_name", raw_header(
        b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        b'"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', bytes(2)))
    write(t, "non_utf8_name", raw_header(
        b'{"\xff\xfe":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', bytes(1)))
    write(t, "not_object", raw_header(b'[1,2,3]'))
    write(t, "metadata_not_string", raw_header(b'{"__metadata__":{"a":1}}'))


def config(**kw):
    base = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 64,
            "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 128, "tie_word_embeddings": False, "bos_token_id": 1,
            "eos_token_id": 2, "hidden_act": "silu", "dtype": "bfloat16",
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}
    for k, v in kw.items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = v
    return json.dumps(base, indent=1)


def config_seeds():
    t = "fuzz_config"
    write(t, "llama_v5", config())
    write(t, "llama3_v5", config(rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}))
    write(t, "llama3_legacy", config(rope_parameters=None, dtype=None, torch_dtype="float32",
                                     rope_theta=500000.0, rope_scaling={
        "type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64}))
    write(t, "qwen3_yarn_v5", config(model_type="qwen3", head_dim=8, tie_word_embeddings=True,
                                     eos_token_id=[2, 3], rope_parameters={
        "rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0,
        "original_max_position_embeddings": 32, "beta_fast": 32, "beta_slow": 1,
        "attention_factor": 1.2, "truncate": False}))
    write(t, "qwen3_yarn_legacy", config(model_type="qwen3", rope_parameters=None,
                                         rope_theta=1e6, rope_scaling={
        "rope_type": "yarn", "factor": 4.0}))
    write(t, "qwen2_legacy", config(model_type="qwen2", rope_parameters=None, rope_scaling=None,
                                    rope_theta=10000.0, use_sliding_window=False,
                                    layer_types=["full_attention"]))
    write(t, "elastic_keys", config(model_type="qwen3", architectures=["PawQwen3ForCausalLM"],
                                    enable_ada_sparsity=True, toggle_type="xattn",
                                    retrieval_mode="full", sink_size=32, local_window_size=96,
                                    pooling_mode="ctx_q", use_softmax=False))
    # Near-valid.
    write(t, "missing_hidden_size", config(hidden_size=None))
    write(t, "hidden_size_string", config(hidden_size="16"))
    write(t, "kv_heads_not_dividing", config(num_key_value_heads=3))
    write(t, "unknown_model_type", config(model_type="mistral"))
    write(t, "odd_head_dim", config(head_dim=7))
    write(t, "huge_vocab", config(vocab_size=1 << 40))
    write(t, "eos_beyond_vocab", config(eos_token_id=64))
    write(t, "rope_type_unknown", config(rope_parameters={"rope_type": "dynamic", "factor": 2.0}))
    write(t, "llama3_missing_factor", config(rope_parameters={"rope_type": "llama3"}))
    write(t, "sliding_window", config(use_sliding_window=True))
    write(t, "non_utf8_string", config().encode().replace(b'"silu"', b'"sil\xff"'))
    write(t, "not_object", "[1, 2]")
    write(t, "truncated", config()[:40])


def serve_request_seeds():
    """fuzz_serve_request: byte 0 selects the endpoint (even: completions, odd: chat)."""
    t = "fuzz_serve_request"
    comp = lambda **kw: b"\x00" + json.dumps(kw).encode()
    chat = lambda **kw: b"\x01" + json.dumps(kw).encode()
    # Valid.
    write(t, "completion", comp(model="m", prompt="Once upon a time", max_tokens=16, temperature=0))
    write(t, "completion_ids", comp(prompt=[1, 2, 3], stop=["a", "b"], seed=7, n=1, user="u"))
    write(t, "completion_stream", comp(prompt=["x"], stream=True, stream_options={"include_usage": True},
                                       top_p=0.9, temperature=1.5))
    write(t, "completion_elastic", comp(prompt="x", elastic={"sparsity_bias": 0.5, "router": "off"}))
    write(t, "completion_static", comp(prompt="x", elastic={"static": "all-sa"}, stop="\n"))
    write(t, "completion_nulls", comp(prompt="x", max_tokens=None, stop=None, seed=None, elastic=None))
    write(t, "chat", chat(model="m", messages=[{"role": "system", "content": "s"},
                                                {"role": "user", "content": "hi", "name": "n"}],
                          max_completion_tokens=8))
    write(t, "chat_parts", chat(messages=[{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                        {"type": "text", "text": "b"}]}],
                                stream=True))
    # Near-valid: one defect each.
    write(t, "unknown_field", comp(prompt="x", bogus=1))
    write(t, "max_tokens_string", comp(prompt="x", max_tokens="5"))
    write(t, "max_tokens_zero", comp(prompt="x", max_tokens=0))
    write(t, "max_tokens_huge", comp(prompt="x", max_tokens=1 << 63))
    write(t, "temperature_high", comp(prompt="x", temperature=2.5))
    write(t, "seed_negative", comp(prompt="x", seed=-3))  # valid: any integer
    write(t, "n_two", comp(prompt="x", n=2))
    write(t, "stop_five", comp(prompt="x", stop=["a", "b", "c", "d", "e"]))
    write(t, "prompt_batch", comp(prompt=[[1, 2], [3]]))
    write(t, "prompt_mixed", comp(prompt=[1, "a"]))
    write(t, "stream_options_no_stream", comp(prompt="x", stream_options={"include_usage": True}))
    write(t, "elastic_both", comp(prompt="x", elastic={"router": "on", "static": "all-fa"}))
    write(t, "chat_bad_role", chat(messages=[{"role": "robot", "content": "x"}]))
    write(t, "chat_image_part", chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]))
    write(t, "chat_prompt", chat(prompt="x", messages=[]))
    write(t, "truncated", comp(prompt="Once upon")[:12])
    write(t, "non_utf8", b"\x00" + b'{"prompt": "\xff\xfe"}')
    write(t, "deep", b"\x00" + b"[" * 5000 + b"]" * 5000)
    write(t, "not_object", b"\x01" + b'"hello"')


if __name__ == "__main__":
    safetensors_seeds()
    config_seeds()
    serve_request_seeds()
