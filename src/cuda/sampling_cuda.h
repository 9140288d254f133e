// Next-token sampling on the device (sampling.h's filters and pick, Backend::sample): greedy
// argmax, or temperature softmax -> sort by probability -> top-k, top-p, min-p -> the token at
// cumulative probability u, where u is drawn on the host by the Sampler. Only the token id comes
// back to the host.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace elastic::cuda {

// SamplingParams without the seed (the draw u is an argument).
struct SampleFilters {
  float temperature = 0.f;  // 0 = greedy
  int64_t top_k = 0;        // 0 = off
  float top_p = 1.f;        // 1 = off
  float min_p = 0.f;        // 0 = off
};

// Grow-only device buffers of one backend's sampler (sort keys and ids, CUB's sort workspace,
// the token). Not thread-safe: one backend samples one token at a time.
class DeviceSampler {
 public:
  // logits: [vocab] fp32 device (or managed) memory; u in [0, 1). Runs on `stream` and waits for
  // the 8-byte token download.
  int64_t sample(const float* logits, int64_t vocab, const SampleFilters& filters, double u,
                 cudaStream_t stream);
  // Backend::argmax_rows: logits [rows, vocab] device memory; out [rows] host. Waits for the
  // ids' download.
  void argmax_rows(int64_t* out, const float* logits, int64_t rows, int64_t vocab,
                   cudaStream_t stream);

 private:
  void reserve(int64_t vocab, cudaStream_t stream);

  int64_t capacity_ = 0;  // vocabulary entries the buffers hold
  size_t sort_bytes_ = 0;
  std::shared_ptr<void> keys_in_, keys_out_;  // [capacity] float: unnormalised probabilities
  std::shared_ptr<void> ids_in_, ids_out_;    // [capacity] int32 token ids
  std::shared_ptr<void> sort_temp_;           // [sort_bytes_] CUB radix sort workspace
  std::shared_ptr<void> token_;               // [1] int64
  int64_t rows_capacity_ = 0;
  std::shared_ptr<void> rows_tokens_;  // [rows_capacity_] int64: argmax_rows' ids
};

}  // namespace elastic::cuda
