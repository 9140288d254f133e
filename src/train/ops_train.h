// Training ops of the CPU reference: every layer is a pair of free functions
//   x_forward(out, ..., inp, weight, dims)  /  x_backward(dinp, dweight, ..., dout, saved, dims)
// in the scalar type T (float: the reference; double: the finite-difference test mode), outputs
// first, gradients prefixed d. Backward functions ADD into their gradient outputs (dinp,
// dweight), so a tensor read by two ops collects both contributions and gradient accumulation
// over micro-batches is free; weight gradients are skipped when dweight is null. Loops are
// plain and threaded over rows with OpenMP; reductions run in a fixed order per row, so results
// do not depend on the thread count.
#pragma once

#include <cstdint>

namespace elastic::train {

// out[i, :] = table[ids[i], :]. out: [n, D]; table: [V, D].
template <typename T>
void embedding_forward(T* out, const int64_t* ids, int64_t n, const T* table, int64_t V, int64_t D);
// dtable[ids[i], :] += dout[i, :] (rows in order: deterministic).
template <typename T>
void embedding_backward(T* dtable, const T* dout, const int64_t* ids, int64_t n, int64_t D);

// RMSNorm: out = weight * x * r, r = 1 / sqrt(mean(x^2) + eps).
// out, inp: [rows, D] (out != inp); weight: [D]; rstd: [rows] saved r.
template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* inp, const T* weight, int64_t rows, int64_t D,
                     double eps);
// dinp: [rows, D] (+=); dweight: [D] (+=, may be null); dout, inp: [rows, D]; rstd: [rows].
template <typename T>
void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                      const T* rstd, int64_t rows, int64_t D);

// Linear (HF layout): out = inp W^T + bias. out: [n, N]; inp: [n, K]; W: [N, K]; bias: [N] or null.
template <typename T>
void linear_forward(T* out, const T* inp, const T* W, const T* bias, int64_t n, int64_t N,
                    int64_t K);
// dinp: [n, K] (+=, may be null); dW: [N, K] (+=, may be null); dbias: [N] (+=, may be null);
// dout: [n, N]; inp: [n, K]; W: [N, K].
template <typename T>
void linear_backward(T* dinp, T* dW, T* dbias, const T* dout, const T* inp, const T* W, int64_t n,
                     int64_t N, int64_t K);

// "Rotate half" RoPE of x: [n, heads, d] into out (out == x allowed); cos, sin: [n, d/2] per row.
template <typename T>
void rope_forward(T* out, const T* x, const float* cos, const float* sin, int64_t n, int64_t heads,
                  int64_t d);
// dx += R^T dout (the rotation by -angle). dx, dout: [n, heads, d].
template <typename T>
void rope_backward(T* dx, const T* dout, const float* cos, const float* sin, int64_t n,
                   int64_t heads, int64_t d);

// SwiGLU: out = silu(gate) * up. out, gate, up: [rows, F].
template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t rows, int64_t F);
// dgate, dup: [rows, F] (+=); dout: [rows, F].
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t rows,
                     int64_t F);

// x += delta. [count].
template <typename T>
void residual_forward(T* x, const T* delta, int64_t count);

// Output head + cross-entropy over labelled rows, fused (the [rows, V] logits never exist as a
// whole: rows are processed in chunks). For row i with labels[i] >= 0:
//   loss_i = logsumexp(x_i W^T) - (x_i W^T)[labels[i]]
// Returns sum_i loss_i * scale. Backward in the same pass: dx[i] += scale * (softmax - onehot) W,
// dW += scale * (softmax - onehot)^T x (when dW is set). x, dx: [rows, D]; W: [V, D];
// labels: [rows] (-100 = ignored). Rows without a label get no gradient. dx null: the loss only.
template <typename T>
double lm_head_cross_entropy(T* dx, T* dW, const T* x, const T* W, const int64_t* labels,
                             int64_t rows, int64_t D, int64_t V, double scale);

}  // namespace elastic::train
