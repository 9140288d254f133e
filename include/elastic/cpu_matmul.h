// CPU matrix products for linear layers: y[n, N] = x[n, K] · W[N, K]^T (+ bias[N]), HF Linear
// layout, W stored as f32 / f16 / bf16, fp32 accumulation (activations are never rounded to a
// narrower type). n <= 8 is the decode GEMV (memory-bound at n = 1: W is streamed once at memory
// bandwidth); larger n is the prefill GEMM (compute-bound: register-blocked micro-kernel).
//
// cpu_weight_prepare repacks W once into column panels of kMatmulPanel output features,
// k-major inside a panel ([N/32][K][32], zero-padded to a multiple of 32 rows, same element
// type as stored), so that both kernels read one contiguous stream and need no transpose.
#pragma once

#include <cstdint>
#include <memory>

#include "elastic/dtype.h"
#include "elastic/tensor.h"

namespace elastic {

// Output features per packed panel.
inline constexpr int64_t kMatmulPanel = 32;

struct CpuWeight {
  DType dtype = DType::f32;
  int64_t rows = 0;  // N (output features)
  int64_t cols = 0;  // K (input features)
  // [N, K] as stored in the source view (memory-mapped checkpoint or caller-owned); valid only
  // while that view lives. The kernels never read it: they read `packed`.
  const void* data = nullptr;
  // [ceil(N/32)][K][32] in `dtype`, owned by `storage` (see the header comment).
  const void* packed = nullptr;
  std::shared_ptr<void> storage;  // keeps `packed` alive
};

// Wraps a 2-D checkpoint tensor (F32 / F16 / BF16) and repacks it into panels (owned copy, same
// byte size as the tensor up to padding of N to a multiple of 32). Multi-threaded.
CpuWeight cpu_weight_prepare(const TensorView& w);

// y: [n, N] fp32; x: [n, K] fp32 (rows contiguous); bias: [N] fp32 or null. Multi-threaded
// (OpenMP, all threads) unless called inside an active parallel region.
void matmul_cpu(float* y, const float* x, const CpuWeight& w, const float* bias, int64_t n);

// The first, straightforward implementation (one dot product per output, threaded over N,
// reads `w.data`): the baseline for bench_matmul. Same contract as matmul_cpu, but the source
// view of `w` must still be alive.
void matmul_cpu_naive(float* y, const float* x, const CpuWeight& w, const float* bias, int64_t n);

}  // namespace elastic
