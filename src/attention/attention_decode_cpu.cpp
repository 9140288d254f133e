// CPU attention for one query position (decode, n = 1): split-KV over the cache, read in place.
//
// Decode is memory-bound: every K and V row a head attends is read once and used for the G query
// heads of its KV head. Per KV head the attended positions (FA: 0..p; SSA: sinks + local window;
// XA decodes as FA, SPEC §4) become contiguous row spans of the cache (a ring head's window
// wraps at most once, so a range gives at most two spans) plus the new key of this call. Spans
// are cut into units of <= kUnitKeys keys, and the units, in head order, into one contiguous
// share of the keys per thread (a static split: each thread streams one region of the layer's
// cache; handing units out dynamically restarts the hardware prefetchers at every unit, as in
// the GEMV). Each unit computes for its G query heads the scores q.k (base 2), their max m,
// l = sum 2^(s - m) and acc = sum 2^(s - m) v; a serial merge rescales the units of a head to
// the common max: out = sum_u 2^(m_u - M) acc_u / sum_u 2^(m_u - M) l_u. No gather, no
// transpose: K and V stream from the cache rows as stored.
//
// Invariants: a unit's keys are rows of one head with one stride; the query never reads a key
// beyond p = pos0; the softmax is exact over the mode's key set (same keys as the tiled path).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "attention/attention_internal.h"
#include "elastic/error.h"

namespace elastic::attn_detail {
namespace {

// Keys per unit: 2048 rows of K (1 MiB at d = 128) per pass, then the same rows of V; the
// unit's scores (G x 2048 floats) stay in L1/L2 between the two passes.
constexpr int64_t kUnitKeys = 2048;
// Below this many multiply-adds (keys x d x G, over all heads) one thread does the call: the
// fork/join of a parallel region (~2 us) would cost more than it saves.
constexpr int64_t kParallelMinMacs = int64_t{1} << 17;
// Widest GQA group handled by the register kernels at once; larger groups run in slices.
constexpr int64_t kMaxGroupSlice = 2;

// `count` key/value rows of one KV head: row i at k + i * stride, v + i * stride.
struct Unit {
  int64_t kv_head = 0;
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t stride = 0;
  int64_t count = 0;
};

#if defined(__AVX512F__)
// Sum of the 16 lanes of each a[i], i < 16, as one vector: result lane i = sum(a[i]). A
// transpose-and-add tree (15 vector adds, 30 shuffles) instead of 16 horizontal reductions.
inline __m512 sum16(const __m512 a[16]) {
  __m512 b[8], c[4];
  // b[i], per 128-bit lane: [a(2i):0+2, a(2i+1):0+2, a(2i):1+3, a(2i+1):1+3].
  for (int i = 0; i < 8; ++i)
    b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]),
                         _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  // c[i], per 128-bit lane L: keys 4i..4i+3, each summed over lane L's 4 floats.
  for (int i = 0; i < 4; ++i)
    c[i] = _mm512_add_ps(_mm512_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  // d0 = [c0 L0+L1, c0 L2+L3, c1 L0+L1, c1 L2+L3], d1 likewise for c2, c3; then sum the pairs.
  const __m512 d0 = _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 d1 = _mm512_add_ps(_mm512_shuffle_f32x4(c[2], c[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_f32x4(c[2], c[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(d0, d1, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(d0, d1, _MM_SHUFFLE(3, 1, 3, 1)));
}

// s[g * count + j] = q[g] . k_j for g < G, j < count; d = 16 * NV. Sixteen keys at a time per
// query head: 16 independent accumulator chains (lane partial sums), reduced together by
// sum16 and stored as one vector; the 16 rows (8 KiB at d = 128) stay in L1 across the G heads.
template <int NV>
void unit_scores_avx512(float* s, const float* q, int64_t G, const float* k, int64_t stride,
                        int64_t count) {
  constexpr int64_t d = 16 * NV;
  int64_t j = 0;
  for (; j + 16 <= count; j += 16) {
    const float* kj = k + j * stride;
    for (int64_t g = 0; g < G; ++g) {
      const float* qg = q + g * d;
      __m512 qv[NV], a[16];
      for (int t = 0; t < NV; ++t) qv[t] = _mm512_loadu_ps(qg + 16 * t);
      for (int r = 0; r < 16; ++r) {  // rows in address order: one sequential stream
        a[r] = _mm512_mul_ps(_mm512_loadu_ps(kj + r * stride), qv[0]);
        for (int t = 1; t < NV; ++t)
          a[r] = _mm512_fmadd_ps(_mm512_loadu_ps(kj + r * stride + 16 * t), qv[t], a[r]);
      }
      _mm512_storeu_ps(s + g * count + j, sum16(a));
    }
  }
  for (; j < count; ++j)
    for (int64_t g = 0; g < G; ++g) {
      __m512 a = _mm512_setzero_ps();
      for (int t = 0; t < NV; ++t)
        a = _mm512_fmadd_ps(_mm512_loadu_ps(k + j * stride + 16 * t),
                            _mm512_loadu_ps(q + g * d + 16 * t), a);
      s[g * count + j] = _mm512_reduce_add_ps(a);
    }
}

// acc[g] += sum_j p[g * count + j] * v_j for g < G <= kMaxGroupSlice; d = 16 * NV. The G
// output rows stay in registers across the keys (G x NV <= 16 of 32 vector registers).
template <int NV>
void unit_pv_avx512(float* acc, const float* p, int64_t G, const float* v, int64_t stride,
                    int64_t count) {
  constexpr int64_t d = 16 * NV;
  if (G == 2) {
    __m512 o0[NV], o1[NV];
    for (int t = 0; t < NV; ++t) {
      o0[t] = _mm512_loadu_ps(acc + 16 * t);
      o1[t] = _mm512_loadu_ps(acc + d + 16 * t);
    }
    for (int64_t j = 0; j < count; ++j) {
      const __m512 p0 = _mm512_set1_ps(p[j]), p1 = _mm512_set1_ps(p[count + j]);
      const float* vr = v + j * stride;
      for (int t = 0; t < NV; ++t) {
        const __m512 vv = _mm512_loadu_ps(vr + 16 * t);
        o0[t] = _mm512_fmadd_ps(p0, vv, o0[t]);
        o1[t] = _mm512_fmadd_ps(p1, vv, o1[t]);
      }
    }
    for (int t = 0; t < NV; ++t) {
      _mm512_storeu_ps(acc + 16 * t, o0[t]);
      _mm512_storeu_ps(acc + d + 16 * t, o1[t]);
    }
    return;
  }
  ELASTIC_CHECK(G == 1);
  __m512 o[NV];
  for (int t = 0; t < NV; ++t) o[t] = _mm512_loadu_ps(acc + 16 * t);
  for (int64_t j = 0; j < count; ++j) {
    const __m512 pj = _mm512_set1_ps(p[j]);
    for (int t = 0; t < NV; ++t)
      o[t] = _mm512_fmadd_ps(pj, _mm512_loadu_ps(v + j * stride + 16 * t), o[t]);
  }
  for (int t = 0; t < NV; ++t) _mm512_storeu_ps(acc + 16 * t, o[t]);
}
#endif

void unit_scores(float* s, const float* q, int64_t G, const float* k, int64_t stride, int64_t count,
                 int64_t d) {
#if defined(__AVX512F__)
  switch (d) {
    case 16:
      return unit_scores_avx512<1>(s, q, G, k, stride, count);
    case 32:
      return unit_scores_avx512<2>(s, q, G, k, stride, count);
    case 64:
      return unit_scores_avx512<4>(s, q, G, k, stride, count);
    case 128:
      return unit_scores_avx512<8>(s, q, G, k, stride, count);
    default:
      break;
  }
#endif
  for (int64_t g = 0; g < G; ++g)
    for (int64_t j = 0; j < count; ++j) {
      const float* kj = k + j * stride;
      const float* qg = q + g * d;
      float acc = 0.f;
#pragma omp simd reduction(+ : acc)
      for (int64_t t = 0; t < d; ++t) acc += qg[t] * kj[t];
      s[g * count + j] = acc;
    }
}

// acc: [G][d] += p: [G][count] times the count value rows.
void unit_pv(float* acc, const float* p, int64_t G, const float* v, int64_t stride, int64_t count,
             int64_t d) {
#if defined(__AVX512F__)
  if (d == 16 || d == 32 || d == 64 || d == 128) {
    for (int64_t g0 = 0; g0 < G; g0 += kMaxGroupSlice) {
      const int64_t gs = std::min(kMaxGroupSlice, G - g0);
      float* a = acc + g0 * d;
      const float* pg = p + g0 * count;
      switch (d) {
        case 16:
          unit_pv_avx512<1>(a, pg, gs, v, stride, count);
          break;
        case 32:
          unit_pv_avx512<2>(a, pg, gs, v, stride, count);
          break;
        case 64:
          unit_pv_avx512<4>(a, pg, gs, v, stride, count);
          break;
        default:
          unit_pv_avx512<8>(a, pg, gs, v, stride, count);
          break;
      }
    }
    return;
  }
#endif
  for (int64_t g = 0; g < G; ++g) {
    float* ag = acc + g * d;
    for (int64_t j = 0; j < count; ++j) {
      const float pj = p[g * count + j];
      const float* vj = v + j * stride;
#pragma omp simd
      for (int64_t t = 0; t < d; ++t) ag[t] += pj * vj[t];
    }
  }
}

// One unit for its G query heads: m[g] = max_j s, l[g] = sum_j 2^(s - m), acc[g] = sum_j
// 2^(s - m) v_j. qs: [G][d] queries times scale * log2(e); s: [G][count] scratch.
void run_unit(const Unit& u, const float* qs, int64_t G, int64_t d, float* s, float* m, float* l,
              float* acc) {
  unit_scores(s, qs, G, u.k, u.stride, u.count, d);
  for (int64_t g = 0; g < G; ++g) {
    float* sg = s + g * u.count;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < u.count; ++j) mx = std::max(mx, sg[j]);
    float sum = 0.f;
    int64_t j = 0;
#if defined(__AVX512F__)
    __m512 vsum = _mm512_setzero_ps();
    for (; j + 16 <= u.count; j += 16) {
      const __m512 e = exp2_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(sg + j), _mm512_set1_ps(mx)));
      _mm512_storeu_ps(sg + j, e);
      vsum = _mm512_add_ps(vsum, e);
    }
    sum = _mm512_reduce_add_ps(vsum);
#endif
    for (; j < u.count; ++j) {
      sg[j] = exp2_nonpositive(sg[j] - mx);
      sum += sg[j];
    }
    m[g] = mx;
    l[g] = sum;
  }
  std::fill(acc, acc + G * d, 0.f);
  unit_pv(acc, s, G, u.v, u.stride, u.count, d);
}

// Cuts `units` (in order) into `threads` contiguous shares of equal key counts, splitting the
// units that straddle a share boundary. Returns the first unit of every share, plus the end.
std::vector<size_t> split_static(std::vector<Unit>& units, int threads) {
  int64_t total = 0;
  for (const Unit& u : units) total += u.count;
  std::vector<Unit> out;
  std::vector<size_t> first(static_cast<size_t>(threads) + 1, 0);
  int64_t offset = 0;  // keys before the unit being placed
  int t = 0;
  for (Unit u : units) {
    while (u.count > 0) {
      while (t + 1 < threads && offset >= total * (t + 1) / threads)
        first[static_cast<size_t>(++t)] = out.size();
      const int64_t boundary = t + 1 < threads ? total * (t + 1) / threads : total;
      const int64_t take = std::min(u.count, boundary - offset);
      Unit piece = u;
      piece.count = take;
      out.push_back(piece);
      u.k += take * u.stride;
      u.v += take * u.stride;
      u.count -= take;
      offset += take;
    }
  }
  while (t + 1 < threads) first[static_cast<size_t>(++t)] = out.size();
  first[static_cast<size_t>(threads)] = out.size();
  units.swap(out);
  return first;
}

// Appends the units of KV head `hk` covering key positions [b, e) (all < pos0: cache rows); a
// unit never crosses a page of a paged view.
void push_past_units(std::vector<Unit>& units, const KvHeadView& view, int64_t hk, int64_t b,
                     int64_t e, int64_t d) {
  while (b < e) {
    // Rows of [b, e) stay contiguous up to the end of the sinks or the ring's wrap point.
    int64_t run_end = e;
    if (view.ring && b >= view.sink_tokens) {
      const int64_t offset = (b - view.sink_tokens) % view.window_tokens;
      run_end = std::min(e, b + (view.window_tokens - offset));
    } else if (view.ring) {
      run_end = std::min(e, view.sink_tokens);
    }
    const int64_t row = view.row(b);
    run_end = b + std::min(run_end - b, view.rows_contiguous(row));  // paged: the page's rest
    for (int64_t c = 0; c < run_end - b; c += kUnitKeys)
      units.push_back({hk, view.k_row(row + c, d), view.v_row(row + c, d), d,
                       std::min(kUnitKeys, run_end - b - c)});
    b = run_end;
  }
}

}  // namespace

void attention_cpu_decode(const AttnArgs& a) {
  const int64_t Hq = a.num_heads, Hkv = a.num_kv_heads, d = a.head_dim, G = Hq / Hkv;
  const int64_t p = a.pos0;  // the one query's position
  ELASTIC_CHECK(a.n == 1 && G * Hkv == Hq && (p == 0 || a.past != nullptr));
  const float scale = a.scale != 0.f ? a.scale : 1.0f / std::sqrt(static_cast<float>(d));
  const float qscale = scale * 1.4426950408889634f;  // scores in base 2

  // Plan: units per KV head, and the keys each head attends.
  std::vector<Unit> units;
  std::vector<int64_t> head_keys(static_cast<size_t>(Hkv), 0);
  for (int64_t hk = 0; hk < Hkv; ++hk) {
    const AttnMode mode = a.modes ? a.modes[hk] : AttnMode::fa;  // XA decodes as FA (SPEC §4)
    KeyRange r[2] = {{0, p + 1}, {}};
    const int count = mode == AttnMode::ssa ? ssa_key_ranges(a.opt.ssa, p, r) : 1;
    if (mode == AttnMode::ssa && p > 0)
      ELASTIC_CHECK_MSG(
          !a.past[hk].ring || (a.past[hk].sink_tokens == a.opt.ssa.kept_sink_tokens() &&
                               a.past[hk].window_tokens == a.opt.ssa.kept_window_tokens()),
          "SSA ring view does not match the SSA options");
    for (int c = 0; c < count; ++c) {
      const int64_t b = r[c].begin, e = std::min(r[c].end, p + 1);  // causal cut
      if (e <= b) continue;
      head_keys[hk] += e - b;
      if (b < p) push_past_units(units, a.past[hk], hk, b, std::min(e, p), d);
      if (e == p + 1) units.push_back({hk, a.k + hk * d, a.v + hk * d, Hkv * d, 1});  // new key
    }
  }

  // Queries scaled once: qs: [Hq, d].
  std::vector<float> qs(static_cast<size_t>(Hq * d));
  for (int64_t i = 0; i < Hq * d; ++i) qs[i] = a.q[i] * qscale;

  int64_t macs = 0;
  for (const Unit& u : units) macs += u.count * d * G;
  const int threads = macs >= kParallelMinMacs ? omp_get_max_threads() : 1;
  const std::vector<size_t> first = split_static(units, threads);

  // Per unit: m, l: [G]; acc: [G][d].
  const int64_t U = static_cast<int64_t>(units.size());
  std::vector<float> um(static_cast<size_t>(U * G)), ul(um.size()),
      uacc(static_cast<size_t>(U * G * d));
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> s(static_cast<size_t>(G * kUnitKeys));
    // Share t on thread t; were fewer threads granted, each takes every num_threads-th share.
    for (int t = omp_get_thread_num(); t < threads; t += omp_get_num_threads())
      for (size_t i = first[static_cast<size_t>(t)]; i < first[static_cast<size_t>(t) + 1]; ++i) {
        const Unit& u = units[i];
        run_unit(u, qs.data() + u.kv_head * G * d, G, d, s.data(), um.data() + i * G,
                 ul.data() + i * G, uacc.data() + i * G * d);
      }
  }

  // Merge the units of each query head: out = sum 2^(m_u - M) acc_u / sum 2^(m_u - M) l_u.
  std::vector<float> max_of(static_cast<size_t>(Hq), -std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < U; ++i)
    for (int64_t g = 0; g < G; ++g) {
      float& M = max_of[units[static_cast<size_t>(i)].kv_head * G + g];
      M = std::max(M, um[i * G + g]);
    }
  std::vector<float> lsum(static_cast<size_t>(Hq), 0.f);
  std::fill(a.out, a.out + Hq * d, 0.f);
  for (int64_t i = 0; i < U; ++i)
    for (int64_t g = 0; g < G; ++g) {
      const int64_t h = units[static_cast<size_t>(i)].kv_head * G + g;
      const float w = exp2_nonpositive(um[i * G + g] - max_of[h]);
      lsum[h] += w * ul[i * G + g];
      const float* acc = uacc.data() + (i * G + g) * d;
      float* out = a.out + h * d;
#pragma omp simd
      for (int64_t t = 0; t < d; ++t) out[t] += w * acc[t];
    }
  for (int64_t h = 0; h < Hq; ++h) {
    const float inv = lsum[h] > 0.f ? 1.f / lsum[h] : 0.f;
    for (int64_t t = 0; t < d; ++t) a.out[h * d + t] *= inv;
  }

  if (a.stats) {
    AttnStats& st = *a.stats;
    st.causal_pairs = p + 1;
    st.attended_pairs.assign(static_cast<size_t>(Hq), 0);
    st.rho.assign(static_cast<size_t>(Hq), 0.0);
    for (int64_t h = 0; h < Hq; ++h) {
      st.attended_pairs[h] = head_keys[h / G];
      st.rho[h] = static_cast<double>(st.causal_pairs - head_keys[h / G]) /
                  static_cast<double>(st.causal_pairs);
    }
    st.xa_mask.assign(static_cast<size_t>(Hq), {});
    st.xa_q_blocks = st.xa_k_blocks = st.xa_estimate_scores = 0;
  }
}

}  // namespace elastic::attn_detail
