// KV cache of one request: per layer, per KV head, K and V as fp32 rows of head_dim.
//
// A full head (FA or XA) keeps every position: row = position. An SSA head keeps only its sink
// tokens and its local window as a ring (KvHeadView::row in attention.h gives the mapping), so
// it never holds more than sink + window rows. Allocation is exact after the first prefill
// (N rows for a full head, min(N, sink + window) for a ring head) and grows during decode in
// steps of max(kKvGrowRows, capacity / 4) rows. Storage is host memory (the CPU backend's):
// one buffer per layer holding every head's K rows then V rows, so a layer of a long context
// is one huge-page allocation that decode attention streams through.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "elastic/attention.h"

namespace elastic {

// How a request's cache keeps each head: the modes to give configure_layer, from the modes its
// first prefill routed ([Hkv]): those modes when decode_kv is bounded (SSA heads become rings);
// every head whole (SSA as FA) when full.
std::vector<AttnMode> kv_cache_modes(const std::vector<AttnMode>& routed, DecodeKv decode_kv);

// Smallest growth step, in rows, when a head runs out of room after its first allocation.
constexpr int64_t kKvGrowRows = 256;

class KvCache {
 public:
  KvCache() = default;
  KvCache(int64_t num_layers, int64_t num_kv_heads, int64_t head_dim);
  // Move-only: heads point into the layer buffers.
  KvCache(KvCache&&) = default;
  KvCache& operator=(KvCache&&) = default;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  // Declares how each KV head of `layer` is kept (SSA heads become rings); call before the
  // first append to the layer. modes: [Hkv].
  void configure_layer(int64_t layer, const std::vector<AttnMode>& modes, const SsaOptions& ssa);

  // Stores positions pos0..pos0+n-1 of every head of `layer`. k, v: [n, Hkv, d] fp32 (k after
  // RoPE). pos0 must equal the layer's current length.
  void append(int64_t layer, const float* k, const float* v, int64_t pos0, int64_t n);

  // Views of positions < length(layer) for attention. Valid until the next append.
  std::vector<KvHeadView> views(int64_t layer) const;

  int64_t length(int64_t layer) const { return lengths_[static_cast<size_t>(layer)]; }
  int64_t num_layers() const { return num_layers_; }
  int64_t num_kv_heads() const { return num_kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  bool is_ring(int64_t layer, int64_t head) const { return head_at(layer, head).ring; }
  int64_t rows_allocated(int64_t layer, int64_t head) const {
    return head_at(layer, head).capacity;
  }

  // Bytes of K and V storage allocated now.
  size_t bytes_allocated() const;
  // Bytes a dense cache (every head keeps every position, exactly) would hold for the
  // positions stored now.
  size_t bytes_dense_equivalent() const;

 private:
  struct Head {
    float* k = nullptr;    // [capacity, d] inside the layer's buffer
    float* v = nullptr;    // [capacity, d]
    int64_t capacity = 0;  // rows
    bool ring = false;
    int64_t sink_tokens = 0, window_tokens = 0;
  };
  Head& head_at(int64_t layer, int64_t head) {
    return heads_[static_cast<size_t>(layer * num_kv_heads_ + head)];
  }
  const Head& head_at(int64_t layer, int64_t head) const {
    return heads_[static_cast<size_t>(layer * num_kv_heads_ + head)];
  }
  // Makes room for `positions` positions in every head of `layer` (one new layer buffer,
  // rows held so far copied, when any head must grow).
  void reserve_layer(int64_t layer, int64_t positions);

  int64_t num_layers_ = 0, num_kv_heads_ = 0, head_dim_ = 0;
  std::vector<Head> heads_;                     // [L * Hkv]
  std::vector<std::shared_ptr<void>> buffers_;  // [L] K and V of the layer's heads
  std::vector<int64_t> lengths_;                // [L] positions stored per layer
};

}  // namespace elastic
