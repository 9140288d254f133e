// Paged KV pool (kv_pool.h). Invariant: a head with `written` positions stored holds rows
// 0..min(written, capacity)-1 at KvHeadView::row, in pages[row / page_rows].
#include "elastic/kv_pool.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "core/host_memory.h"
#include "elastic/backend.h"
#include "elastic/error.h"

namespace elastic {

KvPool::KvPool(int64_t num_pages, int64_t page_rows, int64_t num_layers, int64_t num_kv_heads,
               int64_t head_dim, Backend* backend)
    : num_pages_(num_pages),
      page_rows_(page_rows),
      num_layers_(num_layers),
      num_kv_heads_(num_kv_heads),
      head_dim_(head_dim) {
  if (num_pages <= 0 || num_pages > (int64_t{1} << 30))
    throw Error("KV pool: the number of pages must be in [1, 2^30], got " +
                std::to_string(num_pages));
  if (page_rows <= 0)
    throw Error("KV pool: page rows must be > 0, got " + std::to_string(page_rows));
  ELASTIC_CHECK(num_layers > 0 && num_kv_heads > 0 && head_dim > 0);
  dtype_ = backend ? backend->kv_pool_dtype() : DType::f32;
  const size_t bytes = static_cast<size_t>(num_pages) * page_bytes();
  storage_ = dtype_ == DType::f32 ? detail::host_stream_buffer(bytes) : backend->alloc(bytes);
  free_.resize(static_cast<size_t>(num_pages));
  for (int64_t i = 0; i < num_pages; ++i)
    free_[static_cast<size_t>(i)] = static_cast<int32_t>(num_pages - 1 - i);
}

KvPoolSeq KvPool::make_seq() const {
  KvPoolSeq s;
  s.heads.resize(static_cast<size_t>(num_layers_ * num_kv_heads_));
  s.lengths.assign(static_cast<size_t>(num_layers_), 0);
  return s;
}

void KvPool::configure_layer(KvPoolSeq& s, int64_t layer, const AttnMode* modes,
                             const SsaOptions& ssa) const {
  ELASTIC_CHECK(layer >= 0 && layer < num_layers_);
  ELASTIC_CHECK_MSG(s.lengths[static_cast<size_t>(layer)] == 0,
                    "configure_layer after the layer holds positions");
  for (int64_t h = 0; h < num_kv_heads_; ++h) {
    KvPoolSeq::Head& hd = s.heads[static_cast<size_t>(layer * num_kv_heads_ + h)];
    hd.configured = true;
    hd.ring = modes[h] == AttnMode::ssa;
    hd.sink_tokens = hd.ring ? ssa.kept_sink_tokens() : 0;
    hd.window_tokens = hd.ring ? ssa.kept_window_tokens() : 0;
  }
}

int64_t KvPool::rows_for(const KvPoolSeq::Head& h, int64_t positions) const {
  return h.ring ? std::min(positions, h.sink_tokens + h.window_tokens) : positions;
}

int64_t KvPool::pages_needed(const KvPoolSeq& s, int64_t length) const {
  int64_t need = 0;
  for (const KvPoolSeq::Head& h : s.heads)
    need += std::max<int64_t>(
        0, pages_for_rows(rows_for(h, length)) - static_cast<int64_t>(h.pages.size()));
  return need;
}

void KvPool::reserve(KvPoolSeq& s, int64_t layer, int64_t length) {
  ELASTIC_CHECK(layer >= 0 && layer < num_layers_ &&
                length >= s.lengths[static_cast<size_t>(layer)]);
  for (int64_t h = 0; h < num_kv_heads_; ++h) {
    KvPoolSeq::Head& hd = s.heads[static_cast<size_t>(layer * num_kv_heads_ + h)];
    ELASTIC_CHECK_MSG(hd.configured, "KV pool reserve on an unconfigured layer");
    const int64_t want = pages_for_rows(rows_for(hd, length));
    while (static_cast<int64_t>(hd.pages.size()) < want) {
      ELASTIC_CHECK_MSG(!free_.empty(),
                        "KV pool out of pages (the scheduler admits by pages_needed)");
      hd.pages.push_back(free_.back());
      free_.pop_back();
    }
  }
}

void KvPool::stored(KvPoolSeq& s, int64_t layer, int64_t pos0, int64_t n) {
  ELASTIC_CHECK(layer >= 0 && layer < num_layers_ && n >= 0);
  ELASTIC_CHECK_MSG(pos0 == s.lengths[static_cast<size_t>(layer)],
                    "KV pool rows must continue the sequence");
  s.lengths[static_cast<size_t>(layer)] = pos0 + n;
}

void KvPool::append(KvPoolSeq& s, int64_t layer, const float* k, const float* v, int64_t pos0,
                    int64_t n) {
  ELASTIC_CHECK_MSG(dtype_ == DType::f32, "KvPool::append writes host fp32 pools only");
  ELASTIC_CHECK_MSG(pos0 == s.lengths[static_cast<size_t>(layer)],
                    "KV pool append must continue the sequence");
  reserve(s, layer, pos0 + n);  // the free list is not thread-safe: pages first
  const std::vector<KvHeadView> map = views(s, layer);
  const int64_t Hkv = num_kv_heads_;
#pragma omp parallel for schedule(static) if (n * Hkv * head_dim_ >= (1 << 15))
  for (int64_t h = 0; h < Hkv; ++h)
    kv_head_store(map[static_cast<size_t>(h)], k, v, pos0, n, h, Hkv, head_dim_);
  stored(s, layer, pos0, n);
}

void kv_head_store(const KvHeadView& m, const float* k, const float* v, int64_t pos0, int64_t n,
                   int64_t h, int64_t num_kv_heads, int64_t head_dim) {
  const int64_t d = head_dim, Hkv = num_kv_heads;
  // Ring heads: only the positions that survive the chunk are written, sinks first.
  int64_t first = 0;
  if (m.ring && n > m.window_tokens) first = std::max<int64_t>(0, n - m.window_tokens);
  auto store = [&](int64_t i) {
    const int64_t row = m.row(pos0 + i);
    float* k_dst = const_cast<float*>(m.k_row(row, d));  // the pool's rows, writable
    float* v_dst = const_cast<float*>(m.v_row(row, d));
    std::memcpy(k_dst, k + (i * Hkv + h) * d, sizeof(float) * d);
    std::memcpy(v_dst, v + (i * Hkv + h) * d, sizeof(float) * d);
  };
  if (first > 0)
    for (int64_t i = 0; i < n && pos0 + i < m.sink_tokens; ++i) store(i);
  for (int64_t i = first; i < n; ++i) store(i);
}

std::vector<KvHeadView> KvPool::views(const KvPoolSeq& s, int64_t layer) const {
  // K of page 0 at the storage, its V page_rows rows of head_dim elements later (fp32 or bf16).
  const char* bytes = static_cast<const char*>(storage_.get());
  const float* k0 = reinterpret_cast<const float*>(bytes);
  const float* v0 = reinterpret_cast<const float*>(
      bytes + static_cast<size_t>(page_rows_ * head_dim_) * dtype_size(dtype_));
  std::vector<KvHeadView> out(static_cast<size_t>(num_kv_heads_));
  for (int64_t h = 0; h < num_kv_heads_; ++h) {
    const KvPoolSeq::Head& hd = s.heads[static_cast<size_t>(layer * num_kv_heads_ + h)];
    KvHeadView& v = out[static_cast<size_t>(h)];
    v.k = k0;
    v.v = v0;
    v.ring = hd.ring;
    v.sink_tokens = hd.sink_tokens;
    v.window_tokens = hd.window_tokens;
    v.pages = hd.pages.data();
    v.page_rows = page_rows_;
    v.page_stride = 2 * page_rows_ * head_dim_;
  }
  return out;
}

void KvPool::release(KvPoolSeq& s) {
  for (KvPoolSeq::Head& h : s.heads) {
    free_.insert(free_.end(), h.pages.begin(), h.pages.end());
    h = KvPoolSeq::Head{};
  }
  std::fill(s.lengths.begin(), s.lengths.end(), 0);
}

size_t KvPool::seq_bytes(const KvPoolSeq& s) const {
  size_t rows = 0;
  for (int64_t l = 0; l < num_layers_; ++l)
    for (int64_t h = 0; h < num_kv_heads_; ++h)
      rows += static_cast<size_t>(rows_for(s.heads[static_cast<size_t>(l * num_kv_heads_ + h)],
                                           s.lengths[static_cast<size_t>(l)]));
  return rows * 2 * static_cast<size_t>(head_dim_) * dtype_size(dtype_);
}

size_t KvPool::seq_bytes_dense(const KvPoolSeq& s) const {
  size_t positions = 0;
  for (int64_t len : s.lengths) positions += static_cast<size_t>(len);
  return positions * static_cast<size_t>(num_kv_heads_) * 2 * static_cast<size_t>(head_dim_) *
         dtype_size(dtype_);
}

int64_t KvPool::seq_pages(const KvPoolSeq& s) {
  int64_t n = 0;
  for (const KvPoolSeq::Head& h : s.heads) n += static_cast<int64_t>(h.pages.size());
  return n;
}

}  // namespace elastic
