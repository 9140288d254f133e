// Checked CUDA calls. Every runtime call and every kernel launch of the CUDA backend goes through
// ELASTIC_CUDA_CHECK (launches: ELASTIC_CUDA_CHECK(cudaGetLastError()) right after the launch).
// A failure throws elastic::InternalError naming the call, the CUDA error and file:line; library
// code never exits.
#pragma once

#include <cuda_runtime.h>

namespace elastic::cuda {

[[noreturn]] void cuda_check_failed(cudaError_t err, const char* expr, const char* file, int line);

// Number of CUDA devices usable by this process (0 when there is no driver or no device; never
// throws). Tests use it to skip on machines without a GPU.
int cuda_device_count();

}  // namespace elastic::cuda

#define ELASTIC_CUDA_CHECK(expr)                                                       \
  do {                                                                                 \
    cudaError_t elastic_cuda_err_ = (expr);                                            \
    if (elastic_cuda_err_ != cudaSuccess)                                              \
      ::elastic::cuda::cuda_check_failed(elastic_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)
