// Routing: which mode each KV head of a layer runs, decided once per request at prefill
// (SPEC §4–5). The forward pass calls route() for every layer with the layer's keys after
// k_norm and before RoPE, then runs attention with the returned modes and keeps, for each
// SSA head, only the sink + local-window KV (ring buffer). Decode reuses the decisions.
#pragma once

#include <cstdint>
#include <vector>

#include "elastic/attention.h"

namespace elastic {

struct LayerRoute {
  std::vector<AttnMode> modes;        // [Hkv]
  std::vector<float> router_logits;   // [Hkv * 2] (softmax: SA, FA) or [Hkv] (sigmoid); may be empty
};

class RoutingPolicy {
 public:
  virtual ~RoutingPolicy() = default;
  // k_pre_rope: [n, Hkv, d] for the whole prompt of this request (positions 0..n-1).
  virtual LayerRoute route(int64_t layer, const float* k_pre_rope, int64_t n, int64_t num_kv_heads,
                           int64_t head_dim) = 0;
};

// Every head full attention: the dense model.
class DenseRouting final : public RoutingPolicy {
 public:
  LayerRoute route(int64_t layer, const float* k_pre_rope, int64_t n, int64_t num_kv_heads,
                   int64_t head_dim) override {
    return LayerRoute{std::vector<AttnMode>(static_cast<size_t>(num_kv_heads), AttnMode::fa), {}};
  }
};

}  // namespace elastic
