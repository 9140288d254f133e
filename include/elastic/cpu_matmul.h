// CPU matrix products for linear layers: y[n, N] = x[n, K] · W[N, K]^T (+ bias[N]), HF Linear
// layout, W stored as f32 / f16 / bf16, fp32 accumulation. n = 1 is the decode GEMV
// (memory-bound: stream W once); large n is the prefill GEMM (compute-bound).
#pragma once

#include <cstdint>
#include <memory>

#include "elastic/dtype.h"
#include "elastic/tensor.h"

namespace elastic {

struct CpuWeight {
  DType dtype = DType::f32;
  int64_t rows = 0;  // N (output features)
  int64_t cols = 0;  // K (input features)
  const void* data = nullptr;      // [N, K] as stored (memory-mapped checkpoint or owned)
  std::shared_ptr<void> storage;   // keeps owned or repacked data alive
};

// Wraps a 2-D checkpoint tensor (may repack it for the kernels; the view must outlive it
// unless the weight owns a copy).
CpuWeight cpu_weight_prepare(const TensorView& w);

// y: [n, N] fp32; x: [n, K] fp32; bias: [N] fp32 or null. Multi-threaded.
void matmul_cpu(float* y, const float* x, const CpuWeight& w, const float* bias, int64_t n);

}  // namespace elastic
