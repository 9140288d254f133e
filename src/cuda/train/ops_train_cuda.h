// Training ops of the CUDA engine (ops_train.cu), each forward beside its backward with the CPU
// reference's argument order (src/train/ops_train.h): outputs first, gradients prefixed d.
// Storage: activations and frozen weights bf16, statistics and gradients of activations fp32,
// math fp32 (router pooling and optimizer state in double where the CPU uses double).
// Backward ops ADD into fp32 gradient outputs (as the CPU reference does); bf16 outputs are
// written. Every launch is checked; no op synchronises.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace elastic::cuda::train_ops {

using bf16 = __nv_bfloat16;

// out[i] = float(in[i]); out[i] = bf16(in[i]) (round to nearest even). [count].
void convert_bf16_to_f32(float* out, const bf16* in, int64_t count, cudaStream_t stream);
void convert_f32_to_bf16(bf16* out, const float* in, int64_t count, cudaStream_t stream);
// out[i] = float(a[i]) + b[i]; [count] (the residual x_mid = x_in + attention output).
void add_bf16_f32(float* out, const bf16* a, const float* b, int64_t count, cudaStream_t stream);

// out[i, :] = table[ids[i], :]. out: [n, D]; table: [V, D]; ids checked on the host.
void embedding_forward(bf16* out, const int32_t* ids, int64_t n, const bf16* table, int64_t D,
                       cudaStream_t stream);
// dtable[ids[i], :] += dout[i, :] (fp32 atomics). dtable: [V, D]; dout: [n, D].
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t n, int64_t D,
                        cudaStream_t stream);

// RMSNorm: out = weight * x * r, r = 1 / sqrt(mean(x^2) + eps); one warp per row.
// out: [rows, D] bf16; rstd: [rows]; inp: [rows, D] (TIn = float or bf16); weight: [D] bf16.
template <typename TIn>
void rmsnorm_forward(bf16* out, float* rstd, const TIn* inp, const bf16* weight, int64_t rows,
                     int64_t D, float eps, cudaStream_t stream);
// dinp: [rows, D] (+=); dweight: [D] (+=, may be null); dout: [rows, D]; inp, weight, rstd as
// the forward.
template <typename TIn>
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const TIn* inp,
                      const bf16* weight, const float* rstd, int64_t rows, int64_t D,
                      cudaStream_t stream);

// "Rotate half" RoPE: out = R x. out, x: [n, heads, d] bf16; cos, sin: [n, d/2] (by position).
void rope_forward(bf16* out, const bf16* x, const float* cos, const float* sin, int64_t n,
                  int64_t heads, int64_t d, cudaStream_t stream);
// dx += R^T dout. dx, dout: [n, heads, d] fp32.
void rope_backward(float* dx, const float* dout, const float* cos, const float* sin, int64_t n,
                   int64_t heads, int64_t d, cudaStream_t stream);

// SwiGLU: out = silu(gate) * up. [count] bf16.
void swiglu_forward(bf16* out, const bf16* gate, const bf16* up, int64_t count,
                    cudaStream_t stream);
// dgate = dout * up * silu'(gate), dup = dout * silu(gate) (written). [count] bf16.
void swiglu_backward(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate, const bf16* up,
                     int64_t count, cudaStream_t stream);

// y[r, c] += bias[c]. y: [rows, cols] bf16 or fp32; bias: [cols] bf16.
void bias_add(bf16* y, const bf16* bias, int64_t rows, int64_t cols, cudaStream_t stream);
void bias_add(float* y, const bf16* bias, int64_t rows, int64_t cols, cudaStream_t stream);
// dbias[c] += sum_r dy[r, c]. dy: [rows, cols] (bf16 or fp32).
void bias_backward(float* dbias, const bf16* dy, int64_t rows, int64_t cols, cudaStream_t stream);
void bias_backward(float* dbias, const float* dy, int64_t rows, int64_t cols, cudaStream_t stream);

// Cross-entropy of labelled rows from their logits, with its gradient in the same pass (one CTA
// per row): loss[i] = logsumexp(logits[i]) - logits[i, labels[i]], dlogits[i] = scale *
// (softmax(logits[i]) - onehot(labels[i])). dlogits: [rows, V] bf16; loss: [rows] (double);
// logits: [rows, V] fp32; labels: [rows] (0 <= label < V, checked on the host).
void cross_entropy_forward_backward(bf16* dlogits, double* loss, const float* logits,
                                    const int32_t* labels, int64_t rows, int64_t V, float scale,
                                    cudaStream_t stream);

// out[i, :] = in[idx[i], :] (bf16). out: [m, D]; idx: [m].
void gather_rows(bf16* out, const bf16* in, const int32_t* idx, int64_t m, int64_t D,
                 cudaStream_t stream);
// out[idx[i], :] += in[i, :] (distinct idx). out: [*, D]; in: [m, D] fp32.
void scatter_add_rows(float* out, const float* in, const int32_t* idx, int64_t m, int64_t D,
                      cudaStream_t stream);

// Router pooling (router_pool.h, SPEC §5.1) of every (sample, KV head) in double, in the CPU's
// token order: boundary (mean of concat(k[:P], k[-P:])) or the sample mean (segment_mean).
// pooled: [S, Hkv, d]; k: [rows, Hkv, d] bf16 (after k_norm, before RoPE); seqs: [S] (begin,
// length).
void router_pool_forward(double* pooled, const bf16* k, const int2* seqs, int64_t S, int64_t Hkv,
                         int64_t d, int64_t pool_tokens, bool segment_mean, cudaStream_t stream);
// dk rows of every sample, head h += weight(t) * dpooled[s, h, :]. dk: [rows, Hkv, d] fp32.
void router_pool_backward(float* dk, const double* dpooled, const int2* seqs, int64_t S,
                          int64_t Hkv, int64_t d, int64_t pool_tokens, bool segment_mean,
                          cudaStream_t stream);

// dz[s, h] += sum over rows of s, query heads of KV head h and d of datt * (att - other):
// the mixture's gradient with respect to z of the chosen mode (the caller signs it).
// chunks: [count] (sequence, first row, end row) spans of <= 256 rows inside one sequence.
// dz: [S, Hkv] double; datt, att, other: [rows, Hq, d] bf16.
void router_dz(double* dz, const bf16* datt, const bf16* att, const bf16* other, const int4* chunks,
               int64_t count, int64_t Hq, int64_t Hkv, int64_t d, cudaStream_t stream);

// AdamW as adamw_update (engine_cpu.cpp), per element in double: p, m, v, g: [n] fp32; p_bf16
// (may be null) receives bf16(p) for the compute copy. bc1, bc2: the bias corrections of step t.
struct AdamWArgs {
  double lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0, grad_scale = 1, bc1 = 1, bc2 = 1;
};
void adamw_update(float* p, bf16* p_bf16, const float* g, float* m, float* v, int64_t n,
                  const AdamWArgs& a, cudaStream_t stream);
// partials[b] = sum of x^2 over block b's grid-stride share, in double; returns the number of
// blocks (<= max_blocks) whose partials the caller adds (deterministic).
int sum_squares(double* partials, int max_blocks, const float* x, int64_t n, cudaStream_t stream);

// Random bf16 values ~ U(-a, a) * sqrt(3) (std a) from a counter hash (synthetic models).
void fill_random_bf16(bf16* out, int64_t count, uint64_t seed, float stddev, cudaStream_t stream);
// out[i] = value.
void fill_bf16(bf16* out, int64_t count, float value, cudaStream_t stream);

}  // namespace elastic::cuda::train_ops
