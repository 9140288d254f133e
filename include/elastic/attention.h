// Attention for one sequence and one layer, every KV head in its own mode (SPEC §3–4).
//
// One call computes all heads of a layer; the per-KV-head mode array is data. Keys at
// positions < pos0 come from the KV cache (`past`, one view per KV head, possibly a ring
// buffer for SSA heads); keys at positions pos0..pos0+n-1 come from this call's new k/v. This
// one interface serves whole-prompt prefill (pos0 = 0), chunked prefill and decode (n = 1).
// Query i sits at absolute position pos0 + i and attends causally.
//
// Modes (SPEC §3): FA attends every key 0..p. SSA attends the sink blocks and the local
// window of blocks (block rule below). XA estimates block importance from strided
// antidiagonal scores and attends the selected key blocks; it is a prefill operation: a call
// with n = 1 (decode) runs XA heads as FA (SPEC §4), and a call with n > 1 and pos0 > 0
// (chunked prefill) needs pos0 to be a multiple of the XA block so that the estimation of the
// chunk equals that of the whole prompt (the model's forward runs the XA heads of a later chunk
// that starts elsewhere as FA, as the reference does: attn_call_modes in model.h).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace elastic {

enum class AttnMode : uint8_t { fa = 0, ssa = 1, xa = 2 };

const char* attn_mode_name(AttnMode m);
// "fa" | "ssa" | "xa"; throws elastic::Error naming `what` otherwise.
AttnMode attn_mode_parse(const std::string& text, const std::string& what);

// SSA block rule: a query in block b sees key blocks [0, sink_blocks) and
// [b - local_blocks + 1, b], causally inside block b. Sizes are given in tokens and rounded
// up to whole blocks, as the reference does.
struct SsaOptions {
  int64_t block = 128;
  int64_t sink_tokens = 128;
  int64_t local_tokens = 2048;
  int64_t sink_blocks() const { return (sink_tokens + block - 1) / block; }
  int64_t local_blocks() const { return (local_tokens + block - 1) / block; }
  // Tokens an SSA head must keep for decode: the sink blocks plus the local window.
  int64_t kept_sink_tokens() const { return sink_blocks() * block; }
  int64_t kept_window_tokens() const { return local_blocks() * block; }
};

struct XaOptions {
  int64_t block = 128;
  int64_t stride = 16;
  double threshold = 0.9;  // >= 1 keeps every causal block (XA = FA)
  int64_t chunk = 16384;   // query rows per estimation chunk (multiple of block); no effect on results
};

// What a request's KV cache keeps after its first prefill, and how the calls after it attend
// (SPEC §4). bounded (the default): an SSA head keeps only its sinks and local window (a ring)
// and decodes with the SSA rule; FA and XA heads keep every position and decode with FA. full
// (the reference's behaviour): every head keeps every position, and every call after the first
// prefill (decode steps, later chunks) runs FA on every head. The first prefill runs each
// head's routed mode either way. Read by the model's forward (model.h), not by the kernels.
enum class DecodeKv : uint8_t { bounded = 0, full = 1 };

const char* decode_kv_name(DecodeKv k);
// "bounded" | "full"; throws elastic::Error naming `what` otherwise.
DecodeKv decode_kv_parse(const std::string& text, const std::string& what);

struct AttnOptions {
  SsaOptions ssa;
  XaOptions xa;
  DecodeKv decode_kv = DecodeKv::bounded;
};

// Throws elastic::Error naming the option when a size is not positive, the XA block is not a
// multiple of the stride, the chunk not a multiple of the XA block, or the threshold not in (0, 1].
void attn_options_validate(const AttnOptions& opt);

// Half-open key-position interval [begin, end).
struct KeyRange {
  int64_t begin = 0, end = 0;
};

// Key ranges the SSA rule gives to a query at absolute position p (before the causal cut at
// p + 1, which the caller applies): sink blocks, then the local window. At most two ranges,
// disjoint and increasing. Returns the number of ranges written to r.
int ssa_key_ranges(const SsaOptions& o, int64_t p, KeyRange r[2]);

// Cached keys/values of one KV head for positions < pos0, rows of head_dim floats.
// Full head: row = position. Ring head: positions < sink_tokens sit at row = position; later
// positions at row = sink_tokens + (position - sink_tokens) % window_tokens.
// Storage: contiguous (pages == null: row r at k + r * d, the KvCache of one request), or paged
// (a serving engine's KvPool, kv_pool.h): row r in page pages[r / page_rows], at row r % page_rows
// of that page; page p's K rows start at k + p * page_stride, its V rows at v + p * page_stride.
// A pool in a backend's memory (bf16 on CUDA) gives views whose k / v point there: only that
// backend reads them, with its own element type (the row accessors below are for host fp32).
struct KvHeadView {
  const float* k = nullptr;  // contiguous: [rows, d]; paged: K of page 0 of the pool
  const float* v = nullptr;  // contiguous: [rows, d]; paged: V of page 0 of the pool
  bool ring = false;
  int64_t sink_tokens = 0;
  int64_t window_tokens = 0;
  const int32_t* pages = nullptr;  // [ceil(rows / page_rows)] page of every page_rows rows, or null
  int64_t page_rows = 0;
  int64_t page_stride = 0;  // elements from one page to the next

  int64_t row(int64_t pos) const {
    if (!ring || pos < sink_tokens) return pos;
    return sink_tokens + (pos - sink_tokens) % window_tokens;
  }
  const float* k_row(int64_t r, int64_t d) const { return k + offset(r, d); }
  const float* v_row(int64_t r, int64_t d) const { return v + offset(r, d); }
  // Rows r, r + 1, ... that lie one after another in memory (the rest of r's page, or all).
  int64_t rows_contiguous(int64_t r) const {
    return pages ? page_rows - r % page_rows : std::numeric_limits<int64_t>::max();
  }

 private:
  int64_t offset(int64_t r, int64_t d) const {
    if (!pages) return r * d;
    return static_cast<int64_t>(pages[r / page_rows]) * page_stride + (r % page_rows) * d;
  }
};

// Optional outputs of one call. rho: per query head, the fraction of the causal (query, key)
// pairs of this call's queries that the head skipped (SPEC §6; 0 for FA). XA heads: the
// selected block mask over this call's query blocks x all key blocks.
struct AttnStats {
  std::vector<double> rho;                    // [Hq]
  int64_t causal_pairs = 0;                   // sum over queries of (position + 1)
  std::vector<int64_t> attended_pairs;        // [Hq]
  std::vector<std::vector<uint8_t>> xa_mask;  // [Hq][xa_q_blocks * xa_k_blocks] XA heads, else empty
  int64_t xa_q_blocks = 0, xa_k_blocks = 0;
  int64_t xa_estimate_scores = 0;  // strided (row, column) scores computed, over all heads
};

struct AttnArgs {
  float* out = nullptr;        // [n, Hq, d]
  const float* q = nullptr;    // [n, Hq, d] after RoPE
  const float* k = nullptr;    // [n, Hkv, d] new keys (after RoPE), positions pos0..pos0+n-1
  const float* v = nullptr;    // [n, Hkv, d]
  const KvHeadView* past = nullptr;  // [Hkv], required when pos0 > 0
  const AttnMode* modes = nullptr;   // [Hkv]; null = all FA
  int64_t n = 0;
  int64_t pos0 = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  float scale = 0.f;  // 0 = 1/sqrt(head_dim)
  AttnOptions opt;
  AttnStats* stats = nullptr;
};

// CPU reference path (fp32, exact softmax over each mode's key set). Work is split into
// (KV head, query tile) tasks over OpenMP threads; every mode of a layer runs in one call.
void attention_cpu(const AttnArgs& a);

// Rows of one head by absolute position: positions < pos0 from `past`, others from `now`.
struct RowSource {
  const float* past = nullptr;  // row of position p < pos0 at past + p * past_stride
  int64_t past_stride = 0;
  const float* now = nullptr;   // row of position p >= pos0 at now + (p - pos0) * now_stride
  int64_t now_stride = 0;
  int64_t pos0 = 0;
  const float* row(int64_t p) const {
    return p < pos0 ? past + p * past_stride : now + (p - pos0) * now_stride;
  }
};

// XA estimation and selection (SPEC §3) for one query head of a prompt chunk: queries at
// positions pos0..pos0+n-1 (pos0 a multiple of o.block), keys 0..pos0+n-1. Returns the block
// mask [ceil(n / block)][ceil((pos0 + n) / block)], row-major, 1 = attend. `scores`
// (optional) is increased by the number of strided scores computed. attention_cpu uses it
// for XA heads; tests and the benchmark call it directly.
std::vector<uint8_t> xa_select_blocks(const RowSource& q, const RowSource& k, int64_t pos0,
                                      int64_t n, int64_t head_dim, float scale, const XaOptions& o,
                                      int64_t* scores = nullptr);

}  // namespace elastic
