// Batched paged attention on CUDA (batch_forward.h): the kernels over a serving engine's KV pool.
//
// The pool is one device buffer of pages (bf16, as the request KvStore keeps K/V): page p holds
// page_rows K rows at pool + p * page_stride and page_rows V rows page_rows * d elements later.
// Every (sequence, KV head) of a layer has its own list of pages in one block table (PagedHead):
// row r of the head lives in page table[head.table + r / page_rows], at row r % page_rows. Rows
// follow KvHeadView::row: full heads row = position; SSA heads are rings of sink + window rows.
// The tables are built on the host per layer and uploaded in one asynchronous copy; the kernels
// below never synchronise.
//
// One layer of a batch runs: the prefill spans (several rows) through the fused prefill kernel,
// each with its past gathered from the pages (paged_kv_gather_past); then paged_kv_store writes
// every row of the batch into the pool; then the decode rows (one-row spans) of all sequences in
// one split-KV launch (paged_decode_run), reading every key, their own included, from the pool.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "elastic/attention.h"

namespace elastic::cuda {

// One sequence of the batch.
struct PagedSeq {
  int64_t row0 = 0;  // its first batch row
  int64_t rows = 0;  // rows of its span
  int64_t pos0 = 0;  // position of its first row
};

// One (sequence, KV head) of the layer.
struct PagedHead {
  int32_t table = 0;  // index of its first page id in the block table
  int32_t ring = 0;   // SSA ring: positions >= sink at row sink + (position - sink) % window
  int32_t sink = 0;
  int32_t window = 0;
  int32_t mode = 0;  // AttnMode of the head (the decode kernel runs XA as FA)
};

// The pool and one layer's tables; pointers are device memory.
struct PagedKv {
  __nv_bfloat16* pool = nullptr;
  int64_t page_stride = 0;  // elements from one page to the next (2 * page_rows * head_dim)
  int page_rows = 0;
  int head_dim = 0;  // 16, 32, 64 or 128
  int num_kv_heads = 0;
  const PagedSeq* seqs = nullptr;    // [S]
  const PagedHead* heads = nullptr;  // [S, Hkv]
  const int32_t* table = nullptr;    // page ids
};

// Writes the batch rows k, v: [rows, Hkv, d] fp32 (device) into the pool as bf16, each at its
// sequence's position; ring heads write only the positions that survive their span (the sinks
// and the span's last `window` positions, as kv_head_store). row_seq: [rows] device, the
// sequence of every row. The pages must be in the table.
void paged_kv_store(const PagedKv& kv, const int32_t* row_seq, const float* k, const float* v,
                    int64_t rows, cudaStream_t stream);

// Fills k_out, v_out: [pos0, Hkv, d] bf16 (by position) with the positions < pos0 of sequence
// `seq`, zeros where a ring no longer holds the position (prefill_kv_gather_past's rule).
void paged_kv_gather_past(__nv_bfloat16* k_out, __nv_bfloat16* v_out, const PagedKv& kv, int seq,
                          int64_t pos0, cudaStream_t stream);

// Splits of one decode launch: every head's key list cut into `splits` pieces of at most
// keys_per_split keys.
struct PagedDecodeSplits {
  int splits = 1;
  int keys_per_split = 1;
};

// max_keys: the most keys any (item, head) attends; total_keys: the sum over items and heads.
PagedDecodeSplits paged_decode_splits(int head_dim, int group, int64_t max_keys,
                                      int64_t total_keys);

struct PagedDecodeParams {
  const float* q =
      nullptr;  // [rows, Hq, d] fp32 after RoPE, read as bf16 (the request path's rounding)
  float* out = nullptr;  // [rows, Hq, d] fp32; only the items' rows are written
  const int32_t* items =
      nullptr;  // [count] device: the sequence of every decode item (one-row span)
  int count = 0;
  int num_heads = 0;
  float scale = 0.f;  // 0 = 1/sqrt(d)
  SsaOptions ssa;     // the block rule of SSA heads
  PagedDecodeSplits split;
  float2* part_stats = nullptr;  // [count, Hq, splits] (max, sum)
  float* part_acc = nullptr;     // [count, Hq, splits, d]
};

// Decode attention of every item's one query (position pos0 of its sequence) over keys
// 0..pos0 in its heads' modes, all read from the pool (the row's own key stored first). Two
// launches (splits, then the merge), no synchronisation.
void paged_decode_run(const PagedKv& kv, const PagedDecodeParams& p, cudaStream_t stream);

namespace detail {
// Keys an SSA head attends at position pos (attention_decode.cu).
int64_t ssa_decode_keys(const SsaOptions& o, int64_t pos);
// Key steps a warp of the decode kernel keeps in flight: 1 (default) or 2 (run 19: slower;
// tests and bench_serve_cuda run both).
void set_paged_decode_depth(int depth);
// With depth 1: read the block table a key step ahead of the KV loads (off by default until a
// device run measures it; tests and bench_serve_cuda run it).
void set_paged_decode_prefetch(bool on);
// Stream the keys through a cp.async ring of shared-memory tiles (paged_decode_ring_kernel, the
// default since run 30); off: the register kernel with the depth and prefetch above.
void set_paged_decode_ring(bool on);
}  // namespace detail

}  // namespace elastic::cuda
