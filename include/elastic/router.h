// The Attention Router (SPEC §5): one small MLP per layer, shared by the layer's KV heads,
// that decides per request whether each KV head runs the retrieval mode (FA, or XA) or the
// sparse mode (SSA or XA).
//
// Per layer, for each KV head h, from the layer's keys after k_norm and before RoPE:
//   x'[h]  = mean of concat(k[:P, h], k[-P:, h])  (router_pool.h: for P < N < 2P shared rows twice)
//   u      = W2 SiLU(W1 x' + b1) + b2                              (task MLP, d -> 4d -> d)
//   z      = W5 SiLU(W4 SiLU(W3 u + b3) + b4) + b5                 (router MLP, d -> 4d -> d -> 2|1)
//   softmax variant: logits (SA, retrieval) = (z0 + beta, z1); retrieval iff z1 > z0 + beta
//   sigmoid variant: z normalised across the layer's KV heads (LayerNorm without parameters,
//   eps 1e-5); reported as logits (beta, z_norm), i.e. retrieval iff sigmoid(z_norm - beta) > 0.5
// beta is the test-time sparsity bias (added to the SA logit). Computed in double.
//
// Where it runs: RouterRouting::route_backend hands the pooling and the MLPs to the model's
// backend (Backend::router_forward: the CPU reference below on the host, CUDA kernels on the
// device with the weights uploaded once), which returns only z [Hkv][classes]; the bias, the
// normalisation and the decision (router_layer_decide) run on the host.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "elastic/attention.h"
#include "elastic/config.h"
#include "elastic/routing.h"
#include "elastic/safetensors.h"

namespace elastic {

struct RouterLayerWeights {
  // Linear layers y = W x + b, W row-major [out, in], fp32 copies of the checkpoint.
  std::vector<float> w1, b1, w2, b2;           // task MLP: [4d, d] [4d] [d, 4d] [d]
  std::vector<float> w3, b3, w4, b4, w5, b5;   // router MLP: [4d, d] [4d] [d, 4d] [d] [C, d] [C]
};

struct RouterWeights {
  int64_t head_dim = 0;
  int64_t classes = 2;  // 2 = softmax variant, 1 = sigmoid variant
  std::vector<RouterLayerWeights> layers;  // [L]
};

// True when the store holds router tensors (model.layers.0.self_attn.mask_allocator.*).
bool router_weights_present(const WeightStore& store);
// Loads model.layers.{i}.self_attn.mask_allocator.* for every layer of `config`, checking
// every shape; throws elastic::Error naming the tensor, the expected and the actual shape.
RouterWeights router_weights_load(const WeightStore& store, const ModelConfig& config);

struct RouterOptions {
  int64_t pool_tokens = 100;   // P
  double sparsity_bias = 0.0;  // beta
  AttnMode retrieval_mode = AttnMode::fa;
  AttnMode sparse_mode = AttnMode::ssa;
};

// pooled: [Hkv, d]; k: [n, Hkv, d]. Mean of concat(k[:P], k[-P:]) (router_pool.h).
void router_pool_keys(double* pooled, const float* k, int64_t n, int64_t num_kv_heads, int64_t head_dim,
                      int64_t pool_tokens);

// z: [Hkv, w.classes], the raw outputs of the router MLP of `layer` (before the bias and the
// sigmoid variant's normalisation); k: [n, Hkv, d] host memory, after k_norm, before RoPE.
void router_layer_outputs(double* z, const RouterWeights& w, int64_t layer, const float* k, int64_t n,
                          int64_t num_kv_heads, int64_t pool_tokens);

// logits: [Hkv][2] (SA, retrieval) with the bias applied, from z: [Hkv, classes]; returns the
// decisions [Hkv] (1 = retrieval).
std::vector<uint8_t> router_layer_decide(std::vector<float>& logits, const double* z, int64_t num_kv_heads,
                                         int64_t classes, double sparsity_bias);

// router_layer_outputs + router_layer_decide. k: [n, Hkv, d] host memory.
std::vector<uint8_t> router_layer_forward(std::vector<float>& logits, const RouterWeights& w, int64_t layer,
                                          const float* k, int64_t n, int64_t num_kv_heads,
                                          const RouterOptions& opt);

class RouterRouting final : public RoutingPolicy {
 public:
  RouterRouting(RouterWeights weights, RouterOptions options);
  // k_pre_rope in host memory (the CPU reference).
  LayerRoute route(int64_t layer, const float* k_pre_rope, int64_t n, int64_t num_kv_heads,
                   int64_t head_dim) override;
  // k_pre_rope in `backend`'s memory: the MLPs run on the backend (weights prepared once per
  // backend), only z comes back.
  LayerRoute route_backend(Backend& backend, int64_t layer, const float* k_pre_rope, int64_t n,
                           int64_t num_kv_heads, int64_t head_dim) override;
  const RouterOptions& options() const { return options_; }
  const RouterWeights& weights() const { return weights_; }

 private:
  void head_dim_check(int64_t head_dim) const;
  LayerRoute route_from_outputs(const std::vector<double>& z, int64_t num_kv_heads) const;

  RouterWeights weights_;
  RouterOptions options_;
  // The backend the weights were last prepared for (address and name: identity only) and its
  // handle (Backend::router_prepare; null for the CPU reference).
  const Backend* prepared_for_ = nullptr;
  std::string prepared_for_name_;
  std::shared_ptr<void> prepared_;
};

}  // namespace elastic
