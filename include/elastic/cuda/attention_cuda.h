// CUDA attention for one layer of one sequence, every KV head in its own mode (SPEC §3–4).
//
// Prefill: one fused launch over (query tile, query head) work items; the per-KV-head mode array
// and the XA block masks are device data. A chunk of a longer prompt (chunked prefill, a chat
// turn appended to a conversation) is the same call with pos0 > 0: its n queries sit at positions
// pos0..pos0+n-1 and attend keys 0..pos0+n-1, given as one contiguous tensor by position
// (prefill_kv_gather_past fills the past part from a device KV cache). A plan step (host, once per layer shape and routing)
// uploads the modes and a cost-ordered work list into arena memory; run() enqueues the XA
// estimation + selection (when any head is XA) and the fused kernel on a stream and never
// synchronises, so it can be captured in a CUDA graph.
// Decode: split-KV attention of one query token; FA/XA heads read the full cache, SSA heads the
// ring buffer rows (KvHeadView's mapping); a second kernel merges the splits.
//
// Numerics: q/k/v bf16, scores, softmax and accumulators fp32, output bf16 or fp32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "elastic/attention.h"
#include "elastic/cuda/arena.h"

namespace elastic::cuda {

// Element strides of a [tokens, heads, d] tensor (d contiguous). Packed layout: token = heads*d,
// head = d. A [heads, tokens, d] tensor has token = d, head = tokens*d.
struct AttnStrides {
  int64_t token = 0;
  int64_t head = 0;
};

struct PrefillAttnShape {
  int64_t n = 0;  // query tokens, at positions pos0..pos0+n-1
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // 16, 32 (mma.sync), 64 or 128 (wgmma on sm_90a)
  AttnOptions opt;
  // Position of query 0 (0 = whole-prompt prefill). XA heads need a multiple of opt.xa.block, so
  // that the chunk's estimation equals the whole prompt's (as attention_cpu requires).
  int64_t pos0 = 0;
};

struct PrefillAttnParams {
  const __nv_bfloat16* q = nullptr;  // [n, Hq, d] (strides q_stride), positions pos0..pos0+n-1
  const __nv_bfloat16* k = nullptr;  // [pos0 + n, Hkv, d] by position (past keys, then the chunk's)
  const __nv_bfloat16* v = nullptr;  // [pos0 + n, Hkv, d]
  void* out = nullptr;               // [n, Hq, d] bf16, or fp32 when out_fp32
  bool out_fp32 = false;
  AttnStrides q_stride, k_stride, v_stride, out_stride;  // zero = packed
  float scale = 0.f;                                     // 0 = 1/sqrt(d)
};

// Device buffers and the schedule of one prefill attention call, carved from an arena.
struct PrefillAttnPlan {
  PrefillAttnShape shape;
  std::vector<AttnMode> modes;     // [Hkv] host copy
  uint8_t* modes_dev = nullptr;    // [Hkv]
  int2* work = nullptr;            // [work_count] (query tile, query head), costliest first
  int work_count = 0;
  int xa_head_count = 0;           // query heads whose KV head is XA
  int* xa_heads = nullptr;         // [xa_head_count] query head ids
  int64_t xa_q_blocks = 0;         // nqb = ceil(n / xa.block): query blocks of this call
  int64_t xa_k_blocks = 0;         // nkb = ceil((pos0 + n) / xa.block): key blocks (= nqb at pos0 0)
  int block_m = 0;                  // query rows per work item
  int64_t xa_rows = 0;              // strided query rows of this call, nqb * block / stride
  int64_t xa_tiles = 0;             // 64-column tiles of the strided grid, ceil((pos0/stride + xa_rows) / 64)
  float* xa_partial = nullptr;      // [xa heads, xa_rows, nkb] row-wise block sums (estimation)
  float* xa_tile_max = nullptr;     // [xa heads, xa_rows, xa_tiles]
  float* xa_block_scores = nullptr;  // [Hq, nqb, nkb] block sums A[a][b]
  uint8_t* xa_mask = nullptr;        // [Hq, nqb, nkb] selected key blocks (only XA heads written)
};

// Validates the shape (throws elastic::Error naming the field), uploads modes and the work list.
// modes: [Hkv] host array, null = all FA.
PrefillAttnPlan prefill_attention_plan(const PrefillAttnShape& shape, const AttnMode* modes,
                                       DeviceArena& arena, cudaStream_t stream);

// Enqueues XA estimation/selection (if any XA head) and the fused attention. No host sync.
void prefill_attention_run(const PrefillAttnPlan& plan, const PrefillAttnParams& p,
                           cudaStream_t stream);

// The XA estimation + selection alone (as run() does it), for tests and benchmarks: fills
// plan.xa_block_scores and plan.xa_mask for the XA heads.
void xa_estimate_run(const PrefillAttnPlan& plan, const PrefillAttnParams& p, cudaStream_t stream);

// One KV head's cache on the device, rows of head_dim bf16. Full head: row = position. Ring head:
// positions < sink_tokens at row = position, later ones at
// sink_tokens + (position - sink_tokens) % window_tokens (same mapping as KvHeadView).
struct DeviceKvHead {
  const __nv_bfloat16* k = nullptr;  // [rows, d]
  const __nv_bfloat16* v = nullptr;  // [rows, d]
  int64_t sink_tokens = 0;
  int64_t window_tokens = 0;
  int32_t ring = 0;
};

// Fills k_out, v_out: [pos0, Hkv, d] bf16 (packed, by position) with the positions < pos0 of a
// device KV cache, for a prefill chunk at pos0. heads_dev: [Hkv] device views, each holding at
// least positions 0..pos0-1 (ring heads: the sinks and the last window_tokens of them). Positions
// a ring head no longer holds are written as zeros: the SSA rule never lets a chunk's query see
// them (its local window starts at or after pos0 - window_tokens), and zeros keep the masked
// lanes of the fused kernel finite. No host sync.
void prefill_kv_gather_past(__nv_bfloat16* k_out, __nv_bfloat16* v_out,
                            const DeviceKvHead* heads_dev, int num_kv_heads, int head_dim,
                            int64_t pos0, cudaStream_t stream);

struct DecodeAttnShape {
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;          // 16, 32, 64 or 128
  int64_t max_positions = 0;  // largest pos + 1 this plan serves
  SsaOptions ssa;             // the block rule of SSA heads
};

struct DecodeAttnPlan {
  DecodeAttnShape shape;
  std::vector<AttnMode> modes;
  uint8_t* modes_dev = nullptr;     // [Hkv]
  DeviceKvHead* heads = nullptr;    // [Hkv]
  int max_splits = 0;
  float2* part_stats = nullptr;     // [Hq, max_splits] (max, sum)
  float* part_acc = nullptr;        // [Hq, max_splits, d]
};

// heads: [Hkv] host array of device cache views; modes: [Hkv], null = all FA. SSA heads must be
// ring heads holding ssa.kept_sink_tokens() + ssa.kept_window_tokens() rows (or full heads).
DecodeAttnPlan decode_attention_plan(const DecodeAttnShape& shape, const DeviceKvHead* heads,
                                     const AttnMode* modes, DeviceArena& arena,
                                     cudaStream_t stream);

// As decode_attention_plan, for head views and modes already in device memory that outlive the
// plan (a device-resident KV cache, whose owner checked the views): no copies and no
// synchronisation. heads_dev: [Hkv] device; modes_dev: [Hkv] device uint8 (AttnMode values);
// modes: [Hkv] host, the same modes.
DecodeAttnPlan decode_attention_plan_resident(const DecodeAttnShape& shape, DeviceKvHead* heads_dev,
                                              uint8_t* modes_dev, const AttnMode* modes,
                                              DeviceArena& arena);

struct DecodeAttnParams {
  const __nv_bfloat16* q = nullptr;  // [Hq, d] the query at position pos (after RoPE)
  void* out = nullptr;               // [Hq, d] bf16, or fp32 when out_fp32
  bool out_fp32 = false;
  int64_t pos = 0;  // the new token's position; its k/v are already in the cache
  float scale = 0.f;
};

void decode_attention_run(const DecodeAttnPlan& plan, const DecodeAttnParams& p,
                          cudaStream_t stream);

}  // namespace elastic::cuda
