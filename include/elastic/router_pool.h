// Boundary pooling of the Attention Router (SPEC §5.1), the one rule shared by the CPU reference,
// the CUDA kernels and router training: the pooled vector is the mean of
// concat(x[:P], x[-P:]), as the reference computes it. With m = min(P, n) that is the sum over
// tokens [0, m) plus the sum over tokens [n - m, n), divided by 2m: for P < n < 2P the two
// ranges overlap and the tokens they share count twice; for n <= P both ranges are the whole
// prompt (the plain mean). Sums run over the head range, then the tail range, in token order.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define ELASTIC_HOST_DEVICE __host__ __device__
#else
#define ELASTIC_HOST_DEVICE
#endif

namespace elastic {

struct RouterPoolRange {
  int64_t n = 0;  // tokens of the prompt (> 0)
  int64_t P = 0;  // pool_tokens (> 0)

  ELASTIC_HOST_DEVICE int64_t span() const { return n < P ? n : P; }     // m
  ELASTIC_HOST_DEVICE int64_t head_end() const { return span(); }        // head range [0, m)
  ELASTIC_HOST_DEVICE int64_t tail_begin() const { return n - span(); }  // tail range [n - m, n)
  ELASTIC_HOST_DEVICE int64_t count() const { return 2 * span(); }  // rows of the concatenation
  // Weight of token t in the mean (its count in the concatenation over count()): the gradient
  // of the pooled vector with respect to row t.
  ELASTIC_HOST_DEVICE double weight(int64_t t) const {
    const int64_t c = (t < head_end() ? 1 : 0) + (t >= tail_begin() ? 1 : 0);
    return static_cast<double>(c) / static_cast<double>(count());
  }
};

}  // namespace elastic
