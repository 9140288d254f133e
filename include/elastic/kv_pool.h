// Paged KV storage shared by every sequence of a serving engine (vLLM's pages, per head).
//
// The pool is one buffer of `num_pages` pages; a page holds page_rows K rows then page_rows V
// rows of head_dim elements: fp32 in host memory (the CPU reference), or the element type of the
// backend that serves the batch in that backend's memory (CUDA: bf16 on the device, as its
// request KvStore keeps K/V; Backend::kv_pool_dtype). The page bookkeeping is host data either
// way; a backend pool's rows are written and read only by that backend (attention_paged_forward).
// Every (sequence, layer, KV head) owns its own list of pages, because heads of one sequence keep
// different amounts: a head routed to SSA keeps only its sink tokens and its local window as a ring
// (KvHeadView::row, the same row rule as the request KvCache), so it never holds more than
// ceil((sink + window) / page_rows) pages; an FA or XA head keeps every position and grows by one
// page every page_rows positions. Views (KvHeadView with a page table) go straight to
// attention_cpu: nothing is gathered.
//
// Invariants: a page belongs to at most one head of one sequence; a head with r rows written
// holds exactly ceil(min(r, capacity) / page_rows) pages (row i lives in pages[i / page_rows]);
// pages_free() + pages held by all sequences == num_pages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "elastic/attention.h"
#include "elastic/dtype.h"

namespace elastic {

class Backend;  // backend.h

// The KV of one sequence in a KvPool: per (layer, KV head) its ring rule and pages. Owned by the
// caller, filled by the pool; give its pages back with KvPool::release before dropping it.
struct KvPoolSeq {
  struct Head {
    bool configured = false;  // the layer's modes are known (after its first routing)
    bool ring = false;        // SSA: sink + window rows, KvHeadView::row
    int64_t sink_tokens = 0, window_tokens = 0;
    std::vector<int32_t> pages;  // [ceil(rows / page_rows)]
  };
  std::vector<Head> heads;       // [L * Hkv]
  std::vector<int64_t> lengths;  // [L] positions stored per layer
};

class KvPool {
 public:
  // backend: the backend whose attention reads the pool (its kv_pool_dtype() and memory); null or
  // a backend with fp32 pools: host fp32.
  KvPool(int64_t num_pages, int64_t page_rows, int64_t num_layers, int64_t num_kv_heads,
         int64_t head_dim, Backend* backend = nullptr);
  KvPool(const KvPool&) = delete;
  KvPool& operator=(const KvPool&) = delete;

  int64_t num_pages() const { return num_pages_; }
  int64_t page_rows() const { return page_rows_; }
  int64_t pages_free() const { return static_cast<int64_t>(free_.size()); }
  int64_t pages_used() const { return num_pages_ - pages_free(); }
  DType dtype() const { return dtype_; }
  size_t page_bytes() const {
    return static_cast<size_t>(2 * page_rows_ * head_dim_) * dtype_size(dtype_);
  }

  // An empty sequence: every layer unconfigured, length 0.
  KvPoolSeq make_seq() const;
  // Declares how each KV head of `layer` keeps its rows (SSA heads become rings of the SSA
  // options' sink + window); before the layer's first append. modes: [Hkv].
  void configure_layer(KvPoolSeq& s, int64_t layer, const AttnMode* modes,
                       const SsaOptions& ssa) const;
  // Pages `s` must take to hold `length` positions in every layer; an unconfigured layer counts
  // every head as full (the most a first prefill can need).
  int64_t pages_needed(const KvPoolSeq& s, int64_t length) const;
  // Takes the pages every head of `layer` needs to hold `length` positions; the caller checked
  // pages_needed (running out is an internal error). The rows are written later (append, or the
  // backend's attention_paged_forward), then stored() records them.
  void reserve(KvPoolSeq& s, int64_t layer, int64_t length);
  // Records that positions pos0..pos0+n-1 of `layer` were written (pos0 == s.lengths[layer]).
  void stored(KvPoolSeq& s, int64_t layer, int64_t pos0, int64_t n);
  // Host fp32 pools: reserve, write positions pos0..pos0+n-1 of every head of `layer`, stored.
  // k, v: [n, Hkv, d] fp32 (k after RoPE); pos0 == s.lengths[layer].
  void append(KvPoolSeq& s, int64_t layer, const float* k, const float* v, int64_t pos0, int64_t n);
  // Paged views of `layer` for attention (valid while `s` and the pool are unchanged). [Hkv].
  // A backend pool's views point into backend memory (KvHeadView: only that backend reads them).
  std::vector<KvHeadView> views(const KvPoolSeq& s, int64_t layer) const;
  // Gives every page of `s` back and resets it to empty.
  void release(KvPoolSeq& s);

  // Rows held by `s` (K and V of every head, the exact rows, as KvCache::bytes_allocated counts
  // them after a prefill) and a dense cache's rows for the same positions, in bytes.
  size_t seq_bytes(const KvPoolSeq& s) const;
  size_t seq_bytes_dense(const KvPoolSeq& s) const;
  static int64_t seq_pages(const KvPoolSeq& s);

 private:
  int64_t rows_for(const KvPoolSeq::Head& h, int64_t positions) const;
  int64_t pages_for_rows(int64_t rows) const { return (rows + page_rows_ - 1) / page_rows_; }

  int64_t num_pages_, page_rows_, num_layers_, num_kv_heads_, head_dim_;
  DType dtype_ = DType::f32;
  std::shared_ptr<void> storage_;  // [num_pages][2][page_rows][d] dtype_
  std::vector<int32_t> free_;      // free pages (a stack)
};

// Writes positions pos0..pos0+n-1 of KV head h into its host fp32 view (pages reserved): ring
// heads only the positions that survive the chunk (the sinks and the last window_tokens).
// k, v: [n, Hkv, d] fp32.
void kv_head_store(const KvHeadView& view, const float* k, const float* v, int64_t pos0, int64_t n,
                   int64_t h, int64_t num_kv_heads, int64_t head_dim);

}  // namespace elastic
