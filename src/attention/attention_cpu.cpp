// CPU attention, reference path: every KV head of a layer in its own mode (FA, SSA, XA), one
// call. Algorithm: plan, then run.
//   Plan: per KV head, split the queries into tiles of <= kTileQueries rows that never cross
//   a block of the head's mode, and give each tile its key ranges (FA: 0..p; SSA: the block
//   rule; XA: the blocks xa_select_blocks kept for that query head). FA and SSA tiles serve
//   all G query heads of the KV head at once (each key tile is loaded once for G heads); XA
//   tiles serve one query head, because each query head has its own block mask.
//   Run: the new keys are transposed once per call (K^T per KV head); OpenMP over tiles,
//   biggest first; per tile a flash-attention loop over key tiles of kTileKeys: K^T and V
//   read in place (new keys) or gathered (cached keys, ring rows), scores = Q K^T (4 query
//   rows x 64 keys in registers), online softmax in base 2, acc += P V (the output row in
//   registers), out = acc / l. AVX-512 kernels with portable fallbacks; ~42 GFLOP/s per
//   thread on the 2-core AVX-512 EPYC of docs/perf-attention.md.
// Decode (n = 1) takes its own path, split-KV over the cache rows in place
// (attention_decode_cpu.cpp).
// Invariants: keys < pos0 are read through `past` (ring rows for SSA heads), others from the
// new k/v; a query at position p never reads a key > p; every softmax is exact over the key
// set its mode keeps, so rho counts exactly the pairs skipped.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attention/attention_internal.h"
#include "elastic/attention.h"
#include "elastic/error.h"

namespace elastic {

using attn_detail::kTileKeys;
using attn_detail::kTileQueries;

const char* attn_mode_name(AttnMode m) {
  switch (m) {
    case AttnMode::fa: return "fa";
    case AttnMode::ssa: return "ssa";
    case AttnMode::xa: return "xa";
  }
  return "?";
}

AttnMode attn_mode_parse(const std::string& text, const std::string& what) {
  if (text == "fa" || text == "full") return AttnMode::fa;
  if (text == "ssa" || text == "streaming") return AttnMode::ssa;
  if (text == "xa" || text == "xattn") return AttnMode::xa;
  throw Error(what + ": expected fa, ssa or xa, got '" + text + "'");
}

const char* decode_kv_name(DecodeKv k) { return k == DecodeKv::full ? "full" : "bounded"; }

DecodeKv decode_kv_parse(const std::string& text, const std::string& what) {
  if (text == "bounded") return DecodeKv::bounded;
  if (text == "full") return DecodeKv::full;
  throw Error(what + ": expected bounded or full, got '" + text + "'");
}

void attn_options_validate(const AttnOptions& o) {
  auto positive = [](int64_t v, const char* name) {
    if (v <= 0) throw Error(std::string("attention option ") + name + " must be > 0, got " + std::to_string(v));
  };
  positive(o.ssa.block, "block");
  positive(o.ssa.local_tokens, "local");
  if (o.ssa.sink_tokens < 0) throw Error("attention option sink must be >= 0");
  positive(o.xa.block, "xa-block");
  positive(o.xa.stride, "xa-stride");
  positive(o.xa.chunk, "xa-chunk");
  if (o.xa.block % o.xa.stride != 0)
    throw Error("attention option xa-block (" + std::to_string(o.xa.block) +
                ") must be a multiple of xa-stride (" + std::to_string(o.xa.stride) + ")");
  if (o.xa.chunk % o.xa.block != 0)
    throw Error("attention option xa-chunk must be a multiple of xa-block");
  if (!(o.xa.threshold > 0.0 && o.xa.threshold <= 1.0))
    throw Error("attention option xa-threshold must be in (0, 1], got " + std::to_string(o.xa.threshold));
}

int ssa_key_ranges(const SsaOptions& o, int64_t p, KeyRange r[2]) {
  const int64_t B = o.block, b = p / B;
  const int64_t sink_end = std::min(o.sink_blocks(), b + 1);           // blocks [0, sink_end)
  const int64_t local_begin = std::max(sink_end, b - o.local_blocks() + 1);  // blocks [local_begin, b]
  int count = 0;
  if (sink_end > 0) r[count++] = {0, sink_end * B};
  if (local_begin <= b) {
    if (count == 1 && r[0].end == local_begin * B)
      r[0].end = (b + 1) * B;
    else
      r[count++] = {local_begin * B, (b + 1) * B};
  }
  return count;
}

namespace {

// One unit of work: query rows [i0, i1) (call-relative) of the query heads [h0, h1) (all of
// one KV head) against the listed key ranges, cut causally per row.
struct Tile {
  int64_t kv_head = 0;
  int64_t h0 = 0, h1 = 0;
  int64_t i0 = 0, i1 = 0;
  std::vector<KeyRange> keys;
  double cost = 0;  // keys x rows x heads, to start the big tiles first
};

// Keys and values of one KV head by absolute position.
struct KvSource {
  const AttnArgs* a;
  int64_t kv_head;
  const float* key(int64_t p) const {
    const int64_t d = a->head_dim;
    if (p < a->pos0) return a->past[kv_head].k_row(a->past[kv_head].row(p), d);
    return a->k + ((p - a->pos0) * a->num_kv_heads + kv_head) * d;
  }
  const float* value(int64_t p) const {
    const int64_t d = a->head_dim;
    if (p < a->pos0) return a->past[kv_head].v_row(a->past[kv_head].row(p), d);
    return a->v + ((p - a->pos0) * a->num_kv_heads + kv_head) * d;
  }
};

// Keys a query at position p attends among `keys` (after the causal cut).
int64_t attended_keys(const std::vector<KeyRange>& keys, int64_t p) {
  int64_t c = 0;
  for (const KeyRange& r : keys) c += std::max<int64_t>(0, std::min(r.end, p + 1) - r.begin);
  return c;
}

void merge_push(std::vector<KeyRange>& v, KeyRange r) {
  if (r.end <= r.begin) return;
  if (!v.empty() && v.back().end == r.begin)
    v.back().end = r.end;
  else
    v.push_back(r);
}

// Per-thread buffers of the tile kernel.
struct Scratch {
  std::vector<float> kt;   // [d][kTileKeys] keys of the tile, transposed
  std::vector<float> vt;   // [kTileKeys][d]
  std::vector<float> qs;   // [heads][kTileQueries][d] queries times scale * log2(e)
  std::vector<float> acc;  // [heads][kTileQueries][d]
  std::vector<float> m, l; // [heads][kTileQueries] running max (base 2) and sum
  std::vector<float> s;    // [kTileQueries][kTileKeys] scores of one head
};

// scores[r][c] = sum_t qs[r][t] * kt[t * kt_stride + c] for r < rows, all kTileKeys columns.
void tile_scores(float* __restrict s, const float* __restrict qs, const float* __restrict kt,
                 int64_t kt_stride, int64_t rows, int64_t d) {
  static_assert(kTileKeys == 64, "the AVX-512 path holds a 64-key row in four registers");
  int64_t r = 0;
#if defined(__AVX512F__)
  // Four query rows at a time: 16 accumulators (4 rows x 64 keys), 4 key loads and 4
  // broadcasts per 16 FMAs.
  for (; r + 4 <= rows; r += 4) {
    __m512 acc[4][4];
    for (auto& row : acc)
      for (auto& x : row) x = _mm512_setzero_ps();
    const float* q0 = qs + r * d;
    for (int64_t t = 0; t < d; ++t) {
      const float* kr = kt + t * kt_stride;
      const __m512 k0 = _mm512_loadu_ps(kr), k1 = _mm512_loadu_ps(kr + 16);
      const __m512 k2 = _mm512_loadu_ps(kr + 32), k3 = _mm512_loadu_ps(kr + 48);
      for (int rr = 0; rr < 4; ++rr) {
        const __m512 a = _mm512_set1_ps(q0[rr * d + t]);
        acc[rr][0] = _mm512_fmadd_ps(a, k0, acc[rr][0]);
        acc[rr][1] = _mm512_fmadd_ps(a, k1, acc[rr][1]);
        acc[rr][2] = _mm512_fmadd_ps(a, k2, acc[rr][2]);
        acc[rr][3] = _mm512_fmadd_ps(a, k3, acc[rr][3]);
      }
    }
    for (int rr = 0; rr < 4; ++rr)
      for (int j = 0; j < 4; ++j) _mm512_storeu_ps(s + (r + rr) * kTileKeys + 16 * j, acc[rr][j]);
  }
#endif
  for (; r < rows; ++r) {
    float acc[kTileKeys] = {};
    for (int64_t t = 0; t < d; ++t) {
      const float a0 = qs[r * d + t];
      const float* kr = kt + t * kt_stride;
#pragma omp simd
      for (int64_t c = 0; c < kTileKeys; ++c) acc[c] += a0 * kr[c];
    }
    for (int64_t c = 0; c < kTileKeys; ++c) s[r * kTileKeys + c] = acc[c];
  }
}

#if defined(__AVX512F__)
// tile_pv_row for d = 16 * NV: the output row stays in NV registers across the keys (one V
// load per FMA, no stores inside the loop).
template <int NV>
void tile_pv_row_avx512(float* __restrict o, float alpha, const float* __restrict p,
                        const float* __restrict vt, int64_t v_stride, int64_t valid) {
  __m512 acc[NV];
  const __m512 al = _mm512_set1_ps(alpha);
  for (int j = 0; j < NV; ++j) acc[j] = _mm512_mul_ps(al, _mm512_loadu_ps(o + 16 * j));
  for (int64_t c = 0; c < valid; ++c) {
    const __m512 pc = _mm512_set1_ps(p[c]);
    const float* vr = vt + c * v_stride;
    for (int j = 0; j < NV; ++j) acc[j] = _mm512_fmadd_ps(pc, _mm512_loadu_ps(vr + 16 * j), acc[j]);
  }
  for (int j = 0; j < NV; ++j) _mm512_storeu_ps(o + 16 * j, acc[j]);
}
#endif

// o[t] = alpha * o[t] + sum_{c < valid} p[c] * vt[c * v_stride + t], t < d.
void tile_pv_row(float* __restrict o, float alpha, const float* __restrict p,
                 const float* __restrict vt, int64_t v_stride, int64_t valid, int64_t d) {
#if defined(__AVX512F__)
  if (d == 128) return tile_pv_row_avx512<8>(o, alpha, p, vt, v_stride, valid);
  if (d == 64) return tile_pv_row_avx512<4>(o, alpha, p, vt, v_stride, valid);
#endif
  for (int64_t t = 0; t < d; ++t) o[t] *= alpha;
  for (int64_t c = 0; c < valid; ++c) {
    const float pc = p[c];
    const float* __restrict vr = vt + c * v_stride;
#pragma omp simd
    for (int64_t t = 0; t < d; ++t) o[t] += pc * vr[t];
  }
}

// One row of the online softmax over a key tile: sr[c] <- 2^(sr[c] - m_new) for c < valid
// and 0 beyond, where m_new = max(m, max_c sr[c]); updates m and l (l = l * 2^(m - m_new) +
// sum) and returns the factor 2^(m_old - m_new) that rescales the row's accumulator.
float tile_softmax_row(float* __restrict sr, int64_t valid, float& m, float& l) {
#if defined(__AVX512F__)
  static_assert(kTileKeys % 16 == 0, "whole vectors per key tile");
  __m512 vmax = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t c = 0; c < kTileKeys; c += 16) {
    const __mmask16 in = valid - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << std::max<int64_t>(0, valid - c)) - 1);
    vmax = _mm512_mask_max_ps(vmax, in, vmax, _mm512_loadu_ps(sr + c));
  }
  const float m_new = std::max(m, _mm512_reduce_max_ps(vmax));
  const float alpha = attn_detail::exp2_nonpositive(m - m_new);
  const __m512 vm = _mm512_set1_ps(m_new);
  __m512 vsum = _mm512_setzero_ps();
  for (int64_t c = 0; c < kTileKeys; c += 16) {
    const __mmask16 in = valid - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << std::max<int64_t>(0, valid - c)) - 1);
    // 2^(x - m_new) (core/fast_exp.h), zero beyond `valid`.
    const __m512 x = _mm512_sub_ps(_mm512_loadu_ps(sr + c), vm);
    const __m512 e = _mm512_maskz_mov_ps(in, attn_detail::exp2_nonpositive(x));
    _mm512_storeu_ps(sr + c, e);
    vsum = _mm512_add_ps(vsum, e);
  }
  l = l * alpha + _mm512_reduce_add_ps(vsum);
  m = m_new;
  return alpha;
#else
  const float neg_inf = -std::numeric_limits<float>::infinity();
  float mx = neg_inf;
  for (int64_t c = 0; c < valid; ++c) mx = std::max(mx, sr[c]);
  const float m_new = std::max(m, mx);
  const float alpha = attn_detail::exp2_nonpositive(m - m_new);
  float sum = 0.f;
  for (int64_t c = 0; c < kTileKeys; ++c) {
    const float e = c < valid ? attn_detail::exp2_nonpositive(sr[c] - m_new) : 0.f;
    sr[c] = e;
    sum += e;
  }
  l = l * alpha + sum;
  m = m_new;
  return alpha;
#endif
}

void run_tile(const AttnArgs& a, const Tile& tile, const std::vector<float>& kt_new, int64_t kt_stride,
              Scratch& w) {
  const int64_t d = a.head_dim, Hq = a.num_heads;
  const int64_t rows = tile.i1 - tile.i0, heads = tile.h1 - tile.h0;
  const float scale = a.scale != 0.f ? a.scale : 1.0f / std::sqrt(static_cast<float>(d));
  const float qscale = scale * 1.4426950408889634f;  // scores in base 2
  const KvSource src{&a, tile.kv_head};

  for (int64_t h = 0; h < heads; ++h)
    for (int64_t r = 0; r < rows; ++r) {
      const float* q = a.q + ((tile.i0 + r) * Hq + tile.h0 + h) * d;
      float* qs = w.qs.data() + (h * kTileQueries + r) * d;
      for (int64_t t = 0; t < d; ++t) qs[t] = q[t] * qscale;
    }
  std::fill(w.acc.begin(), w.acc.begin() + heads * kTileQueries * d, 0.f);
  std::fill(w.m.begin(), w.m.begin() + heads * kTileQueries, -std::numeric_limits<float>::infinity());
  std::fill(w.l.begin(), w.l.begin() + heads * kTileQueries, 0.f);

  const int64_t first_pos = a.pos0 + tile.i0, Hkv = a.num_kv_heads, hk = tile.kv_head;
  for (const KeyRange& range : tile.keys) {
    const int64_t range_end = std::min(range.end, first_pos + rows);  // no row sees beyond
    for (int64_t k0 = range.begin; k0 < range_end;) {
      // A key tile lies wholly in the cache (< pos0) or wholly in the new keys.
      const int64_t kn = std::min({kTileKeys, range_end - k0, k0 < a.pos0 ? a.pos0 - k0 : kTileKeys});
      const float *kt, *vt;
      int64_t kstride, vstride;
      if (k0 >= a.pos0) {  // new keys: pre-transposed K, V read in place
        kt = kt_new.data() + hk * d * kt_stride + (k0 - a.pos0);
        kstride = kt_stride;
        vt = a.v + ((k0 - a.pos0) * Hkv + hk) * d;
        vstride = Hkv * d;
      } else {  // cached keys (ring rows for SSA heads): gather
        for (int64_t c = 0; c < kn; ++c) {
          const float* kp = src.key(k0 + c);
          const float* vp = src.value(k0 + c);
          for (int64_t t = 0; t < d; ++t) w.kt[t * kTileKeys + c] = kp[t];
          std::copy(vp, vp + d, w.vt.data() + c * d);
        }
        for (int64_t c = kn; c < kTileKeys; ++c)
          for (int64_t t = 0; t < d; ++t) w.kt[t * kTileKeys + c] = 0.f;
        kt = w.kt.data();
        kstride = kTileKeys;
        vt = w.vt.data();
        vstride = d;
      }
      for (int64_t h = 0; h < heads; ++h) {
        tile_scores(w.s.data(), w.qs.data() + h * kTileQueries * d, kt, kstride, rows, d);
        for (int64_t r = 0; r < rows; ++r) {
          // Keys k0 .. k0 + valid - 1 are visible to this row.
          const int64_t valid = std::min(kn, first_pos + r - k0 + 1);
          if (valid <= 0) continue;
          float* sr = w.s.data() + r * kTileKeys;
          const float alpha = tile_softmax_row(sr, valid, w.m[h * kTileQueries + r], w.l[h * kTileQueries + r]);
          tile_pv_row(w.acc.data() + (h * kTileQueries + r) * d, alpha, sr, vt, vstride, valid, d);
        }
      }
      k0 += kn;
    }
  }
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t r = 0; r < rows; ++r) {
      float* out = a.out + ((tile.i0 + r) * Hq + tile.h0 + h) * d;
      const float* o = w.acc.data() + (h * kTileQueries + r) * d;
      const float l = w.l[h * kTileQueries + r];
      const float inv = l > 0.f ? 1.f / l : 0.f;
      for (int64_t t = 0; t < d; ++t) out[t] = o[t] * inv;
    }
}

// Query tiles of [0, n) that do not cross a multiple of `block` (absolute positions).
template <class F>
void for_each_query_tile(int64_t pos0, int64_t n, int64_t block, F&& f) {
  for (int64_t i0 = 0; i0 < n;) {
    const int64_t p = pos0 + i0;
    const int64_t block_end = block > 0 ? (p / block + 1) * block - pos0 : n;
    const int64_t i1 = std::min({n, i0 + kTileQueries, block_end});
    f(i0, i1);
    i0 = i1;
  }
}

}  // namespace

void attention_cpu(const AttnArgs& a) {
  const int64_t n = a.n, Hq = a.num_heads, Hkv = a.num_kv_heads, d = a.head_dim;
  ELASTIC_CHECK(Hkv > 0 && Hq % Hkv == 0 && n >= 0 && a.pos0 >= 0 && d > 0);
  ELASTIC_CHECK(a.pos0 == 0 || a.past != nullptr);
  attn_options_validate(a.opt);
  if (n == 1) return attn_detail::attention_cpu_decode(a);  // decode: split-KV, rows in place
  const int64_t G = Hq / Hkv;
  const float scale = a.scale != 0.f ? a.scale : 1.0f / std::sqrt(static_cast<float>(d));
  const SsaOptions& so = a.opt.ssa;
  const XaOptions& xo = a.opt.xa;

  // n > 1 here: XA heads estimate (a single query decodes XA as FA in the decode path).
  auto mode_of = [&](int64_t hk) { return a.modes ? a.modes[hk] : AttnMode::fa; };
  bool any_xa = false;
  for (int64_t hk = 0; hk < Hkv; ++hk) {
    const AttnMode m = mode_of(hk);
    if (m == AttnMode::ssa && a.pos0 > 0) {
      const KvHeadView& pv = a.past[hk];
      ELASTIC_CHECK_MSG(!pv.ring || (pv.sink_tokens == so.kept_sink_tokens() &&
                                     pv.window_tokens == so.kept_window_tokens()),
                        "SSA ring view does not match the SSA options");
    }
    if (m == AttnMode::xa) {
      any_xa = true;
      if (a.pos0 % xo.block != 0)
        throw Error("attention: an XA head in a prefill chunk at position " + std::to_string(a.pos0) +
                    " needs the chunk to start at a multiple of the XA block (" +
                    std::to_string(xo.block) + ")");
      ELASTIC_CHECK_MSG(a.pos0 == 0 || !a.past[hk].ring, "XA head with a ring cache");
    }
  }

  // XA estimation per query head (parallel over heads; each is independent).
  const int64_t xa_q_blocks = (n + xo.block - 1) / xo.block;
  const int64_t xa_k_blocks = (a.pos0 + n + xo.block - 1) / xo.block;
  std::vector<std::vector<uint8_t>> xa_mask(static_cast<size_t>(Hq));
  int64_t xa_scores = 0;
  if (any_xa) {
    // The estimation reads past keys as one strided array: paged ones are gathered first.
    std::vector<std::vector<float>> past_keys(static_cast<size_t>(Hkv));
    for (int64_t hk = 0; hk < Hkv; ++hk)
      if (mode_of(hk) == AttnMode::xa && a.pos0 > 0 && a.past[hk].pages) {
        std::vector<float>& g = past_keys[static_cast<size_t>(hk)];
        g.resize(static_cast<size_t>(a.pos0 * d));
        for (int64_t p = 0; p < a.pos0; ++p)
          std::copy_n(a.past[hk].k_row(p, d), d, g.data() + p * d);
      }
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : xa_scores)
    for (int64_t hq = 0; hq < Hq; ++hq) {
      const int64_t hk = hq / G;
      if (mode_of(hk) != AttnMode::xa) continue;
      RowSource qsrc{nullptr, 0, a.q + hq * d, Hq * d, a.pos0};
      const float* past_k = a.pos0 == 0 ? nullptr
                            : a.past[hk].pages ? past_keys[static_cast<size_t>(hk)].data()
                                               : a.past[hk].k;
      RowSource ksrc{past_k, d, a.k + hk * d, Hkv * d, a.pos0};
      int64_t count = 0;
      xa_mask[hq] = xa_select_blocks(qsrc, ksrc, a.pos0, n, d, scale, xo, &count);
      xa_scores += count;
    }
  }

  // Plan the tiles.
  std::vector<Tile> tiles;
  std::vector<int64_t> attended(static_cast<size_t>(Hq), 0);
  for (int64_t hk = 0; hk < Hkv; ++hk) {
    const AttnMode m = mode_of(hk);
    if (m == AttnMode::fa) {
      for_each_query_tile(a.pos0, n, 0, [&](int64_t i0, int64_t i1) {
        tiles.push_back({hk, hk * G, (hk + 1) * G, i0, i1, {{0, a.pos0 + i1}}, 0});
      });
    } else if (m == AttnMode::ssa) {
      for_each_query_tile(a.pos0, n, so.block, [&](int64_t i0, int64_t i1) {
        KeyRange r[2];
        const int c = ssa_key_ranges(so, a.pos0 + i0, r);
        tiles.push_back({hk, hk * G, (hk + 1) * G, i0, i1, std::vector<KeyRange>(r, r + c), 0});
      });
    } else {
      for (int64_t hq = hk * G; hq < (hk + 1) * G; ++hq) {
        const std::vector<uint8_t>& mask = xa_mask[hq];
        for_each_query_tile(a.pos0, n, xo.block, [&](int64_t i0, int64_t i1) {
          const int64_t qb = i0 / xo.block;  // pos0 is a multiple of the block
          Tile t{hk, hq, hq + 1, i0, i1, {}, 0};
          for (int64_t kb = 0; kb < xa_k_blocks; ++kb)
            if (mask[qb * xa_k_blocks + kb]) merge_push(t.keys, {kb * xo.block, (kb + 1) * xo.block});
          tiles.push_back(std::move(t));
        });
      }
    }
  }
  for (Tile& t : tiles) {
    int64_t keys = 0;
    for (int64_t i = t.i0; i < t.i1; ++i) keys += attended_keys(t.keys, a.pos0 + i);
    for (int64_t h = t.h0; h < t.h1; ++h) attended[h] += keys;
    t.cost = static_cast<double>(keys) * (t.h1 - t.h0);
  }
  // Biggest tiles first so that the dynamic schedule ends evenly.
  std::vector<size_t> order(tiles.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t x, size_t y) { return tiles[x].cost > tiles[y].cost; });

  // New keys transposed per KV head, [Hkv][d][n + kTileKeys] (zero tail: a key tile may
  // start anywhere and read kTileKeys columns).
  const int64_t kt_stride = n + kTileKeys;
  std::vector<float> kt_new(static_cast<size_t>(Hkv * d * kt_stride), 0.f);
#pragma omp parallel for collapse(2)
  for (int64_t hk = 0; hk < Hkv; ++hk)
    for (int64_t t = 0; t < d; ++t) {
      float* dst = kt_new.data() + (hk * d + t) * kt_stride;
      for (int64_t i = 0; i < n; ++i) dst[i] = a.k[(i * Hkv + hk) * d + t];
    }

#pragma omp parallel
  {
    Scratch w;
    w.kt.resize(d * kTileKeys);
    w.vt.resize(kTileKeys * d);
    w.qs.resize(G * kTileQueries * d);
    w.acc.resize(G * kTileQueries * d);
    w.m.resize(G * kTileQueries);
    w.l.resize(G * kTileQueries);
    w.s.resize(kTileQueries * kTileKeys);
#pragma omp for schedule(dynamic, 1)
    for (size_t i = 0; i < order.size(); ++i) run_tile(a, tiles[order[i]], kt_new, kt_stride, w);
  }

  if (a.stats) {
    AttnStats& st = *a.stats;
    st.causal_pairs = 0;
    for (int64_t i = 0; i < n; ++i) st.causal_pairs += a.pos0 + i + 1;
    st.attended_pairs = attended;
    st.rho.assign(static_cast<size_t>(Hq), 0.0);
    for (int64_t h = 0; h < Hq; ++h)
      if (st.causal_pairs > 0)
        st.rho[h] = static_cast<double>(st.causal_pairs - attended[h]) / static_cast<double>(st.causal_pairs);
    st.xa_mask = std::move(xa_mask);
    st.xa_q_blocks = any_xa ? xa_q_blocks : 0;
    st.xa_k_blocks = any_xa ? xa_k_blocks : 0;
    st.xa_estimate_scores = xa_scores;
  }
}

}  // namespace elastic
