// Attention for one sequence and one layer, every KV head in its own mode (SPEC §3–4).
//
// One call computes all heads of a layer; the per-KV-head mode array is data. Keys at
// positions < pos0 come from the KV cache (`past`, one view per KV head, possibly a ring
// buffer for SSA heads); keys at positions pos0..pos0+n-1 come from this call's new k/v. This
// one interface serves whole-prompt prefill (pos0 = 0), chunked prefill and decode (n = 1).
// Query i sits at absolute position pos0 + i and attends causally.
#pragma once

#include <cstdint>
#include <vector>

namespace elastic {

enum class AttnMode : uint8_t { fa = 0, ssa = 1, xa = 2 };

const char* attn_mode_name(AttnMode m);

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
  double threshold = 0.9;
  int64_t chunk = 16384;  // query rows per estimation chunk; must not change the result
};

struct AttnOptions {
  SsaOptions ssa;
  XaOptions xa;
};

// Cached keys/values of one KV head for positions < pos0, rows of head_dim floats.
// Full head: row = position. Ring head: positions < sink_tokens sit at row = position; later
// positions at row = sink_tokens + (position - sink_tokens) % window_tokens.
struct KvHeadView {
  const float* k = nullptr;  // [rows, d]
  const float* v = nullptr;  // [rows, d]
  bool ring = false;
  int64_t sink_tokens = 0;
  int64_t window_tokens = 0;

  int64_t row(int64_t pos) const {
    if (!ring || pos < sink_tokens) return pos;
    return sink_tokens + (pos - sink_tokens) % window_tokens;
  }
};

// Optional outputs: per query head the fraction of causal (query, key) pairs skipped (rho,
// SPEC §6), and for XA heads the selected block mask.
struct AttnStats {
  std::vector<double> rho;                  // [Hq]
  std::vector<std::vector<uint8_t>> xa_mask;  // [Hq][nqb * nkb] for XA heads, else empty
  int64_t xa_q_blocks = 0, xa_k_blocks = 0;
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

// CPU reference path (fp32, exact softmax over each mode's key set).
void attention_cpu(const AttnArgs& a);

}  // namespace elastic
