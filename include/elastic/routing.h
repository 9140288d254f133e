// Routing: which mode each KV head of a layer runs, decided once per request at prefill
// (SPEC §4–5). The forward pass calls route_backend() for every layer with the layer's keys after
// k_norm and before RoPE (in the backend's memory), then runs attention with the returned modes
// and keeps, for each SSA head, only the sink + local-window KV (ring buffer). Decode reuses the
// decisions.
//
// Policies: DenseRouting (every head FA), StaticRouting (a fixed [L][Hkv] retrieval/sparse
// assignment: all retrieval, all sparse, a head list file, or the top heads of a per-head
// score file, DuoAttention-style), and RouterRouting (the trained Attention Router, router.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "elastic/attention.h"

namespace elastic {

class Backend;  // backend.h

struct LayerRoute {
  std::vector<AttnMode> modes;  // [Hkv]
  std::vector<float>
      router_logits;               // [Hkv * 2] (SA, retrieval) with the sparsity bias; may be empty
  std::vector<uint8_t> retrieval;  // [Hkv] 1 = head runs the retrieval mode; empty: modes[h] == fa
};

// Decision of head h of a route: 1 = retrieval mode, 0 = sparse mode.
inline bool layer_route_is_retrieval(const LayerRoute& r, size_t h) {
  return r.retrieval.empty() ? r.modes[h] == AttnMode::fa : r.retrieval[h] != 0;
}

class RoutingPolicy {
 public:
  virtual ~RoutingPolicy() = default;
  // k_pre_rope: [n, Hkv, d] host memory, for the whole prompt of this request (positions 0..n-1).
  virtual LayerRoute route(int64_t layer, const float* k_pre_rope, int64_t n, int64_t num_kv_heads,
                           int64_t head_dim) = 0;
  // The same with k_pre_rope in `backend`'s memory (what the forward pass calls). Default: k is
  // downloaded to the host, then route(). Dense and static routing read no keys; the router runs
  // on the backend (Backend::router_forward), so only its decisions reach the host.
  virtual LayerRoute route_backend(Backend& backend, int64_t layer, const float* k_pre_rope,
                                   int64_t n, int64_t num_kv_heads, int64_t head_dim);
};

// Every head full attention: the dense model.
class DenseRouting final : public RoutingPolicy {
 public:
  LayerRoute route(int64_t layer, const float* k_pre_rope, int64_t n, int64_t num_kv_heads,
                   int64_t head_dim) override {
    return LayerRoute{
        std::vector<AttnMode>(static_cast<size_t>(num_kv_heads), AttnMode::fa), {}, {}};
  }
  LayerRoute route_backend(Backend&, int64_t layer, const float* k_pre_rope, int64_t n,
                           int64_t num_kv_heads, int64_t head_dim) override {
    return route(layer, k_pre_rope, n, num_kv_heads, head_dim);  // reads no keys
  }
};

// A fixed assignment: retrieval[l][h] = 1 runs `retrieval_mode`, 0 runs `sparse_mode`.
class StaticRouting final : public RoutingPolicy {
 public:
  StaticRouting(std::vector<std::vector<uint8_t>> retrieval, AttnMode retrieval_mode,
                AttnMode sparse_mode);
  LayerRoute route(int64_t layer, const float* k_pre_rope, int64_t n, int64_t num_kv_heads,
                   int64_t head_dim) override;
  LayerRoute route_backend(Backend&, int64_t layer, const float* k_pre_rope, int64_t n,
                           int64_t num_kv_heads, int64_t head_dim) override {
    return route(layer, k_pre_rope, n, num_kv_heads, head_dim);  // reads no keys
  }
  const std::vector<std::vector<uint8_t>>& assignment() const { return retrieval_; }
  AttnMode retrieval_mode() const { return retrieval_mode_; }
  AttnMode sparse_mode() const { return sparse_mode_; }

 private:
  std::vector<std::vector<uint8_t>> retrieval_;  // [L][Hkv]
  AttnMode retrieval_mode_, sparse_mode_;
};

// [L][Hkv] assignments for StaticRouting. Files are text; '#' starts a comment; errors name
// the file and line.
std::vector<std::vector<uint8_t>> static_assignment_all(int64_t layers, int64_t kv_heads,
                                                        bool retrieval);
// Head list: one "LAYER HEAD" pair per line (0-based KV head index): these heads run the
// retrieval mode, every other head the sparse mode.
std::vector<std::vector<uint8_t>> static_assignment_head_list(const std::string& path,
                                                              int64_t layers, int64_t kv_heads);
// Score file (DuoAttention's full_attention_heads.tsv layout): one line per layer with one
// score per KV head (spaces, tabs or commas). The round(sparse_ratio * L * Hkv) heads with the
// lowest scores run the sparse mode (ties: earlier layer, then head, goes sparse first), the
// rest the retrieval mode.
std::vector<std::vector<uint8_t>> static_assignment_top_scores(const std::string& path,
                                                               int64_t layers, int64_t kv_heads,
                                                               double sparse_ratio);

}  // namespace elastic
