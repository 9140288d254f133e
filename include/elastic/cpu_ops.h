// CPU reference ops of the transformer forward pass (fp32 compute), as free functions
// `x_forward(out, inp, weight, dims)` so that a later `x_backward` can mirror each one.
// Every op is multi-threaded over rows with OpenMP; in-place use (out == inp) is allowed
// where the comment says so. The linear layers are in cpu_matmul.h, attention in attention.h.
#pragma once

#include <cstdint>
#include <vector>

#include "elastic/config.h"
#include "elastic/dtype.h"

namespace elastic {

// out[i, :] = table[ids[i], :] converted to fp32.
// out: [n, dim] fp32; table: [vocab, dim] as stored (f32/f16/bf16). ids are checked < vocab.
void embedding_forward(float* out, const int64_t* ids, int64_t n, const void* table, DType dtype,
                       int64_t vocab, int64_t dim);

// RMSNorm as HF: out = weight * x / sqrt(mean(x^2) + eps), row by row.
// out, inp: [rows, dim] fp32 (out == inp allowed); weight: [dim] fp32.
void rmsnorm_forward(float* out, const float* inp, const float* weight, int64_t rows, int64_t dim,
                     float eps);

// Rotary frequencies of a model: inv_freq[i] for the pairs (x[i], x[i + d/2]) and the factor
// that scales cos and sin (yarn's attention factor; 1 otherwise). Computed as HF's
// _compute_{default,llama3,yarn}_rope_parameters, kept in float32 precision like HF's buffer.
struct RopeFrequencies {
  std::vector<float> inv_freq;  // [head_dim / 2]
  float attention_scaling = 1.f;
};
RopeFrequencies rope_frequencies(const RopeConfig& rope, int64_t head_dim);

// cos/sin of positions pos0..pos0+n-1, scaled by attention_scaling. The angle is the fp32
// product inv_freq * position, as HF computes it.
// cos, sin: [n, head_dim / 2] fp32.
void rope_table_fill(float* cos, float* sin, const RopeFrequencies& f, int64_t pos0, int64_t n);

// "Rotate half" RoPE in place: for each row and head, (x[i], x[i+d/2]) ->
// (x[i] cos - x[i+d/2] sin, x[i+d/2] cos + x[i] sin).
// x: [n, heads, head_dim] fp32; cos, sin: [n, head_dim / 2].
void rope_forward(float* x, const float* cos, const float* sin, int64_t n, int64_t heads,
                  int64_t head_dim);

// SwiGLU on the fused gate/up projection: out[r, i] = silu(gate_up[r, i]) * gate_up[r, F + i].
// out: [rows, F] fp32; gate_up: [rows, 2F] fp32 (gate first, then up).
void swiglu_forward(float* out, const float* gate_up, int64_t rows, int64_t ffn);

// Splits the fused q/k/v projection into contiguous q, k, v.
// q: [n, q_dim], k, v: [n, kv_dim]; qkv: [n, q_dim + 2 kv_dim] (q, then k, then v per row).
void qkv_split_forward(float* q, float* k, float* v, const float* qkv, int64_t n, int64_t q_dim,
                       int64_t kv_dim);

// Residual add in place: x += delta. x, delta: [count] fp32.
void residual_forward(float* x, const float* delta, int64_t count);

// Numerically stable softmax in place over one row. x: [count] fp32.
void softmax_forward(float* x, int64_t count);

}  // namespace elastic
