// Batched paged attention on the CPU (batch_forward.h): the reference is attention_cpu, called
// once per sequence with that sequence's rows, pages and modes. Decode spans (one row) are small
// and independent, so they run side by side, one sequence per thread (attention_cpu's own
// parallel regions then run on one thread each); prefill spans run one after another, each
// parallel inside. Then the batch's new rows go into the pool (kv_head_store), after every
// sequence attended (a ring row a chunk overwrites may still be a key of that chunk).
#include <string>
#include <vector>

#include "elastic/batch_forward.h"
#include "elastic/error.h"

namespace elastic {
namespace {

AttnArgs seq_args(const PagedAttnParams& p, int64_t s) {
  const int64_t Hq = p.num_heads, Hkv = p.num_kv_heads, d = p.head_dim;
  const int64_t r0 = p.cu_seqlens[s];
  AttnArgs a;
  a.out = p.out + r0 * Hq * d;
  a.q = p.q + r0 * Hq * d;
  a.k = p.k + r0 * Hkv * d;
  a.v = p.v + r0 * Hkv * d;
  a.past = p.past + s * Hkv;
  a.modes = p.modes + s * Hkv;
  a.n = p.cu_seqlens[s + 1] - r0;
  a.pos0 = p.pos0[s];
  a.num_heads = Hq;
  a.num_kv_heads = Hkv;
  a.head_dim = d;
  a.opt = p.opt;
  a.stats = p.stats ? p.stats[s] : nullptr;
  return a;
}

}  // namespace

void attention_paged_cpu(const PagedAttnParams& p) {
  ELASTIC_CHECK(p.num_seqs >= 0 && p.cu_seqlens && p.pos0 && p.modes && p.past);
  std::vector<int64_t> decode, prefill;
  for (int64_t s = 0; s < p.num_seqs; ++s)
    (p.cu_seqlens[s + 1] - p.cu_seqlens[s] == 1 ? decode : prefill).push_back(s);
#pragma omp parallel for schedule(dynamic, 1) if (decode.size() > 1)
  for (size_t i = 0; i < decode.size(); ++i) attention_cpu(seq_args(p, decode[i]));
  for (int64_t s : prefill) attention_cpu(seq_args(p, s));
}

void attention_paged_store_cpu(const PagedAttnParams& p) {
  const int64_t Hkv = p.num_kv_heads, d = p.head_dim;
#pragma omp parallel for collapse(2) \
    schedule(static) if (p.cu_seqlens[p.num_seqs] * Hkv * d >= (1 << 15))
  for (int64_t s = 0; s < p.num_seqs; ++s)
    for (int64_t h = 0; h < Hkv; ++h) {
      const int64_t r0 = p.cu_seqlens[s];
      kv_head_store(p.past[s * Hkv + h], p.k + r0 * Hkv * d, p.v + r0 * Hkv * d, p.pos0[s],
                    p.cu_seqlens[s + 1] - r0, h, Hkv, d);
    }
}

void Backend::attention_paged_forward(const PagedAttnParams&) {
  throw Error("batched paged attention is not implemented on the " + std::string(name()) +
              " backend");
}

bool attention_paged_supported(const Backend& backend) {
  return backend.attention_paged_supported();
}

void attention_paged_forward(Backend& backend, const PagedAttnParams& p) {
  ELASTIC_CHECK(p.num_seqs >= 1 && p.cu_seqlens && p.pos0 && p.modes && p.past && p.k && p.v);
  backend.attention_paged_forward(p);
}

}  // namespace elastic
