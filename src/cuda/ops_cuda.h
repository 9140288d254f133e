// Launchers of the CUDA backend's elementwise and normalisation kernels (ops_cuda.cu). Shapes and
// semantics are those of the CPU reference ops (cpu_ops.h); every launch is checked.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace elastic::cuda {

enum class TableType : int { f32 = 0, bf16 = 1, f16 = 2 };

// out: [count] bf16 = round(in) (round to nearest even).
void f32_to_bf16_launch(__nv_bfloat16* out, const float* in, int64_t count, cudaStream_t stream);
// out: [n, dim] fp32 = table[ids[i], :]; ids: device [n] (checked < vocab on the host).
void embedding_launch(float* out, const int64_t* ids, int64_t n, const void* table, TableType type,
                      int64_t dim, cudaStream_t stream);
// out, inp: [rows, dim] (out == inp allowed); weight: [dim].
void rmsnorm_launch(float* out, const float* inp, const float* weight, int64_t rows, int64_t dim,
                    float eps, cudaStream_t stream);
// x: [n, heads, d] in place; cos, sin: [n, d / 2]; rotate-half pairs (i, i + d/2).
void rope_launch(float* x, const float* cos, const float* sin, int64_t n, int64_t heads, int64_t d,
                 cudaStream_t stream);
// out: [rows, ffn] = silu(gate) * up; gate_up: [rows, 2 ffn] (gate first).
void swiglu_launch(float* out, const float* gate_up, int64_t rows, int64_t ffn, cudaStream_t stream);
// q: [n, q_dim], k, v: [n, kv_dim] from qkv: [n, q_dim + 2 kv_dim].
void qkv_split_launch(float* q, float* k, float* v, const float* qkv, int64_t n, int64_t q_dim,
                      int64_t kv_dim, cudaStream_t stream);
// x += delta; [count].
void residual_launch(float* x, const float* delta, int64_t count, cudaStream_t stream);
// *flag = 1 when x: [count] holds a NaN or an Inf; *flag is left as it was otherwise (the caller
// zeroes it first).
void nonfinite_flag_launch(int* flag, const float* x, int64_t count, cudaStream_t stream);
// y[r, c] += bias[c]; y: [rows, cols].
void bias_add_launch(float* y, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream);


// Up to kKvAppendMaxHeads KV heads of one layer of a device KV cache (bf16 rows of d): head
// first + j has rows k[j], v[j]; ring heads map positions as KvHeadView::row.
constexpr int kKvAppendMaxHeads = 16;
struct KvAppendHeads {
  __nv_bfloat16* k[kKvAppendMaxHeads];
  __nv_bfloat16* v[kKvAppendMaxHeads];
  int64_t sink[kKvAppendMaxHeads];
  int64_t window[kKvAppendMaxHeads];
  int32_t ring[kKvAppendMaxHeads];
  int32_t first = 0;  // KV head index of entry 0
  int32_t count = 0;  // entries used
};
// Stores positions pos0..pos0+n-1 of heads first..first+count-1 from k, v: [n, kv_heads, d] fp32
// as bf16 rows. Ring heads write only the positions that survive the chunk (sinks and the last
// `window` positions), so no two writes of one launch share a row.
void kv_append_launch(const KvAppendHeads& heads, const float* k, const float* v, int64_t n,
                      int64_t kv_heads, int64_t d, int64_t pos0, cudaStream_t stream);

}  // namespace elastic::cuda
