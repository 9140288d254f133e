// Helpers shared by the CUDA tests: skipping without a GPU, bf16-representable random data,
// and copies between host vectors and device memory.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "elastic/cuda/arena.h"
#include "elastic/cuda/attention_cuda.h"
#include "elastic/cuda/cuda_check.h"
#include "elastic/dtype.h"

// Skips the calling test on a machine without a CUDA device (CI builds the CUDA tests there).
#define REQUIRE_GPU()                                                                \
  do {                                                                               \
    if (::elastic::cuda::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

namespace elastic::cuda_test {

// count values ~ N(0, sigma), each rounded to bf16, so that CPU (fp32) and CUDA (bf16) inputs
// are the same numbers.
inline std::vector<float> random_bf16_values(size_t count, std::mt19937& rng, float sigma = 1.f) {
  std::normal_distribution<float> dist(0.f, sigma);
  std::vector<float> x(count);
  for (auto& v : x) v = bf16_to_f32(f32_to_bf16(dist(rng)));
  return x;
}

inline std::vector<uint16_t> to_bf16(const std::vector<float>& x) {
  std::vector<uint16_t> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = f32_to_bf16(x[i]);
  return out;
}

template <typename T>
T* upload(cuda::DeviceArena& arena, const std::vector<T>& host) {
  T* dev = arena.alloc_array<T>(host.size());
  ELASTIC_CUDA_CHECK(cudaMemcpy(dev, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return dev;
}

template <typename T>
std::vector<T> download(const T* dev, size_t count) {
  std::vector<T> host(count);
  ELASTIC_CUDA_CHECK(cudaMemcpy(host.data(), dev, count * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

}  // namespace elastic::cuda_test
