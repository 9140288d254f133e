// KV cache storage. Invariant: a head with capacity c holds, for every stored position p, its
// K/V at row(p) < c; ring heads have c <= sink + window, and row(p) is the identity until the
// ring wraps, so growing a ring head before it wraps keeps every row in place.
#include "elastic/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "core/host_memory.h"
#include "elastic/error.h"

namespace elastic {

std::vector<AttnMode> kv_cache_modes(const std::vector<AttnMode>& routed, DecodeKv decode_kv) {
  std::vector<AttnMode> kept = routed;
  if (decode_kv == DecodeKv::full)
    for (AttnMode& m : kept)
      if (m == AttnMode::ssa) m = AttnMode::fa;
  return kept;
}

KvCache::KvCache(int64_t num_layers, int64_t num_kv_heads, int64_t head_dim)
    : num_layers_(num_layers),
      num_kv_heads_(num_kv_heads),
      head_dim_(head_dim),
      heads_(static_cast<size_t>(num_layers * num_kv_heads)),
      buffers_(static_cast<size_t>(num_layers)),
      lengths_(static_cast<size_t>(num_layers), 0) {
  ELASTIC_CHECK(num_layers > 0 && num_kv_heads > 0 && head_dim > 0);
}

void KvCache::configure_layer(int64_t layer, const std::vector<AttnMode>& modes,
                              const SsaOptions& ssa) {
  ELASTIC_CHECK(layer >= 0 && layer < num_layers_);
  ELASTIC_CHECK(static_cast<int64_t>(modes.size()) == num_kv_heads_);
  ELASTIC_CHECK_MSG(lengths_[layer] == 0, "configure_layer after the layer holds positions");
  for (int64_t h = 0; h < num_kv_heads_; ++h) {
    Head& hd = head_at(layer, h);
    hd.ring = modes[h] == AttnMode::ssa;
    hd.sink_tokens = hd.ring ? ssa.kept_sink_tokens() : 0;
    hd.window_tokens = hd.ring ? ssa.kept_window_tokens() : 0;
  }
}

void KvCache::reserve_layer(int64_t layer, int64_t positions) {
  const int64_t Hkv = num_kv_heads_, d = head_dim_;
  std::vector<int64_t> caps(static_cast<size_t>(Hkv));
  bool grow = false;
  for (int64_t h = 0; h < Hkv; ++h) {
    const Head& hd = head_at(layer, h);
    int64_t need = positions;
    if (hd.ring) need = std::min(need, hd.sink_tokens + hd.window_tokens);
    int64_t cap = hd.capacity;
    if (need > cap) {
      // Exact on the first allocation (after prefill); then grow in steps for decode, by a
      // quarter of the capacity once that exceeds kKvGrowRows, so long contexts copy O(1)
      // rows per token.
      const int64_t step = std::max(kKvGrowRows, hd.capacity / 4);
      cap = hd.capacity == 0 ? need : std::max(need, hd.capacity + step);
      if (hd.ring) cap = std::min(cap, hd.sink_tokens + hd.window_tokens);
      grow = true;
    }
    caps[h] = cap;
  }
  if (!grow) return;
  int64_t rows = 0;
  for (int64_t c : caps) rows += c;
  std::shared_ptr<void> buffer =
      detail::host_stream_buffer(static_cast<size_t>(2 * rows * d) * sizeof(float));
  float* next = static_cast<float*>(buffer.get());
  const int64_t held = lengths_[static_cast<size_t>(layer)];  // rows written: min(held, capacity)
  for (int64_t h = 0; h < Hkv; ++h) {
    Head& hd = head_at(layer, h);
    float* k = next;
    float* v = next + caps[h] * d;
    next += 2 * caps[h] * d;
    const int64_t used = std::min(held, hd.capacity);
    if (used > 0) {
      std::memcpy(k, hd.k, sizeof(float) * static_cast<size_t>(used * d));
      std::memcpy(v, hd.v, sizeof(float) * static_cast<size_t>(used * d));
    }
    hd.k = k;
    hd.v = v;
    hd.capacity = caps[h];
  }
  buffers_[static_cast<size_t>(layer)] = std::move(buffer);
}

void KvCache::append(int64_t layer, const float* k, const float* v, int64_t pos0, int64_t n) {
  ELASTIC_CHECK(layer >= 0 && layer < num_layers_);
  ELASTIC_CHECK_MSG(pos0 == lengths_[layer], "KV cache append must continue the sequence");
  const int64_t d = head_dim_, Hkv = num_kv_heads_;
  reserve_layer(layer, pos0 + n);
#pragma omp parallel for schedule(static) if (n * Hkv * d >= (1 << 15))
  for (int64_t h = 0; h < Hkv; ++h) {
    Head& hd = head_at(layer, h);
    KvHeadView map{nullptr, nullptr, hd.ring, hd.sink_tokens, hd.window_tokens};
    // Ring heads: only the positions that survive the chunk need writing.
    int64_t first = 0;
    if (hd.ring && n > hd.window_tokens) first = std::max<int64_t>(0, n - hd.window_tokens);
    auto store = [&](int64_t i) {
      const int64_t row = map.row(pos0 + i);
      std::memcpy(hd.k + row * d, k + (i * Hkv + h) * d, sizeof(float) * d);
      std::memcpy(hd.v + row * d, v + (i * Hkv + h) * d, sizeof(float) * d);
    };
    if (first > 0)  // sink positions inside this chunk come before the surviving window
      for (int64_t i = 0; i < n && pos0 + i < hd.sink_tokens; ++i) store(i);
    for (int64_t i = first; i < n; ++i) store(i);
  }
  lengths_[layer] = pos0 + n;
}

std::vector<KvHeadView> KvCache::views(int64_t layer) const {
  std::vector<KvHeadView> out(static_cast<size_t>(num_kv_heads_));
  for (int64_t h = 0; h < num_kv_heads_; ++h) {
    const Head& hd = head_at(layer, h);
    out[h] = KvHeadView{hd.k, hd.v, hd.ring, hd.sink_tokens, hd.window_tokens};
  }
  return out;
}

size_t KvCache::bytes_allocated() const {
  size_t rows = 0;
  for (const Head& h : heads_) rows += static_cast<size_t>(h.capacity);
  return rows * 2 * static_cast<size_t>(head_dim_) * sizeof(float);
}

size_t KvCache::bytes_dense_equivalent() const {
  size_t positions = 0;
  for (int64_t len : lengths_) positions += static_cast<size_t>(len);
  return positions * static_cast<size_t>(num_kv_heads_) * 2 * static_cast<size_t>(head_dim_) *
         sizeof(float);
}

}  // namespace elastic
