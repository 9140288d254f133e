// The forward pass over a packed batch of several sequences (batch.h): prefill spans and decode
// rows of different requests in one pass, their K/V in a shared paged pool (kv_pool.h).
//
// Per layer every projection and the MLP run once over all rows of the batch; attention runs per
// sequence (its own past, its own per-KV-head modes) through one call over the whole batch
// (attention_paged_forward). A sequence is routed at its first prefill, by its own policy, from
// the keys of its own span: that span must be its whole prompt (pos0 = 0), because the router
// pools the first and last tokens of the prompt (SPEC §5). Later spans of the sequence (decode
// rows, or a recompute after preemption, which may be chunked) reuse the decisions.
//
// This path sits beside model_prefill (model.h), which keeps serving one request with its own
// KvCache. For the same tokens both compute the same function; they differ only in rounding
// (row blocking of the matmuls, key tiles cut at pages).
//
// Backends: the CPU runs it (attention_paged_cpu: the reference, the pool in host fp32) and CUDA
// (backend_cuda.cpp, attention_paged.cu: the pool in device bf16, page tables uploaded once per
// layer, the prefill spans through the fused prefill kernel with their past gathered from the
// pages, the decode rows of all sequences in one split-KV launch). Backend::attention_paged_*.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "elastic/attention.h"
#include "elastic/batch.h"
#include "elastic/kv_pool.h"
#include "elastic/model.h"
#include "elastic/routing.h"

namespace elastic {

// One call of batched paged attention for one layer: every sequence of the batch, each KV head
// of each sequence in its own mode, the past read through page tables.
struct PagedAttnParams {
  float* out = nullptr;      // [rows, Hq, d]
  const float* q = nullptr;  // [rows, Hq, d] after RoPE
  const float* k = nullptr;  // [rows, Hkv, d] new keys after RoPE (row r at its position)
  const float* v = nullptr;  // [rows, Hkv, d]
  const int64_t* cu_seqlens = nullptr;  // [S + 1] first row of every sequence, then rows
  const int64_t* pos0 = nullptr;        // [S] position of every sequence's first row
  const AttnMode* modes = nullptr;      // [S, Hkv]
  // [S, Hkv] the cached positions < pos0[s] of every sequence and head: pages of the pool, which
  // already holds the pages for the batch's rows too (KvPool::reserve); the call writes those
  // rows (k, v) into them after attending. On a backend pool the views point into its memory.
  const KvHeadView* past = nullptr;
  int64_t num_seqs = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0;
  AttnOptions opt;
  AttnStats* const* stats = nullptr;  // [S] per sequence, entries may be null; or null
};

// The CPU reference: attention_cpu per sequence (one call per layer over all sequences).
void attention_paged_cpu(const PagedAttnParams& p);
// Writes the batch's rows p.k / p.v into the host fp32 pool through p.past (kv_head_store).
void attention_paged_store_cpu(const PagedAttnParams& p);
// Whether `backend` runs attention_paged_forward (Backend::attention_paged_supported).
bool attention_paged_supported(const Backend& backend);
// Attends every sequence of p and stores the batch's rows in the pool, on the backend (which
// throws elastic::Error where it has no implementation).
void attention_paged_forward(Backend& backend, const PagedAttnParams& p);

// The state of one sequence of a batched forward (owned by the caller, e.g. a serving engine).
struct SeqState {
  KvPoolSeq kv;                          // its pages in the pool
  std::vector<LayerRoute> routes;        // [L] after the first prefill, empty before
  std::vector<AttnStats> prefill_stats;  // [L] attention stats of the first prefill (reports)
  RoutingPolicy* routing = nullptr;      // null = every head FA
  int64_t length = 0;                    // positions held in the pool
  int64_t prompt_length = 0;             // rows of the first prefill (set by it)
};

// Scratch of the batched forward, in backend memory, sized for `rows` rows.
struct BatchWorkspace {
  int64_t rows = 0, logit_rows = 0;
  std::shared_ptr<void> x, xn, qkv, q, k, v, att, proj, gate_up, act, cos, sin, logits;
  std::vector<float> logits_host;
  std::vector<int64_t> greedy;  // model_forward_batch_greedy's ids
};

// Modes per span, as the request path (forward.cpp) runs them: the first prefill, and a
// recompute of the prompt after a preemption (pos0 = 0, routes kept), with the routed modes;
// later spans replay decode steps row by row (positions past the prompt are generated tokens):
// XA heads as FA (a decode step's rule), and with --decode-kv full every head FA. The pool keeps
// kv_cache_modes (full: every head whole). A recompute that feeds the prompt and its generated
// tokens in one span would run them under the prompt's rules: feed the prompt first (Engine does).
//
// Runs the batch through the model. seqs[s] is the state of batch span s (span s holds positions
// seqs[s]->length..); each state's pool pages must have been checked (KvPool::pages_needed) by
// the caller. Returns the logits [R, V] host fp32 of the rows batch.logit_rows() names, in order.
const std::vector<float>& model_forward_batch(const Model& model, const Batch& batch,
                                              SeqState* const* seqs, KvPool& pool,
                                              const AttnOptions& attn, BatchWorkspace& ws);

// The same forward for greedy decoding: the logits stay in backend memory and only each logit
// row's argmax comes back (first index on ties, as sample() with temperature 0; -1 for a row with
// a NaN or an infinity): [R] ids instead of [R, V] fp32 logits, which at 64 rows of a 152K
// vocabulary are a 39 MB download a step.
const std::vector<int64_t>& model_forward_batch_greedy(const Model& model, const Batch& batch,
                                                       SeqState* const* seqs, KvPool& pool,
                                                       const AttnOptions& attn, BatchWorkspace& ws);

}  // namespace elastic
