// Helpers shared by the CUDA benchmarks: wall-clock seconds and the device's copy bandwidth.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>

#include "elastic/cuda/cuda_check.h"

namespace elastic::bench {

inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Device-to-device copy bandwidth in bytes/s (read + written), best of 10 copies of 2 GiB.
inline double copy_bandwidth() {
  const size_t bytes = size_t(2) << 30;
  void *a = nullptr, *b = nullptr;
  ELASTIC_CUDA_CHECK(cudaMalloc(&a, bytes));
  ELASTIC_CUDA_CHECK(cudaMalloc(&b, bytes));
  ELASTIC_CUDA_CHECK(cudaMemset(a, 1, bytes));
  cudaEvent_t e0, e1;
  ELASTIC_CUDA_CHECK(cudaEventCreate(&e0));
  ELASTIC_CUDA_CHECK(cudaEventCreate(&e1));
  float best_ms = 1e30f;
  for (int i = 0; i < 11; ++i) {
    ELASTIC_CUDA_CHECK(cudaEventRecord(e0));
    ELASTIC_CUDA_CHECK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
    ELASTIC_CUDA_CHECK(cudaEventRecord(e1));
    ELASTIC_CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    ELASTIC_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    if (i > 0) best_ms = std::min(best_ms, ms);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * double(bytes) / (best_ms * 1e-3);
}

}  // namespace elastic::bench
