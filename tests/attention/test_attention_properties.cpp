// Properties of the CPU attention modes on random inputs (SPEC §3–4):
// every sparse mode equals dense attention on its expanded token mask; SSA with a window
// covering the sequence is FA; XA with threshold 1 is FA; XA chunked = unchunked; decode at
// position p (SSA from a bounded ring cache holding only sink + window rows) equals prefill at
// p; chunked prefill equals whole prefill; hybrid all-FA equals dense; rho counts the skipped
// pairs of the expanded mask exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "attention/attn_test_util.h"
#include "elastic/attention.h"
#include "elastic/error.h"

namespace elastic {
namespace {

// fp32 attention against the float64 reference over <= 700 keys of unit-variance inputs:
// observed normalised errors ~1e-6; 2e-5 leaves margin without hiding a wrong key set (a
// single wrong key changes outputs by ~1e-3 of their scale).
constexpr double kTol = 2e-5;

struct Problem {
  int64_t n, Hq, Hkv, d;
  std::vector<float> q, k, v;
  Problem(int64_t n_, int64_t Hq_, int64_t Hkv_, int64_t d_, uint64_t seed)
      : n(n_), Hq(Hq_), Hkv(Hkv_), d(d_) {
    q = test::random_normal(n * Hq * d, seed);
    k = test::random_normal(n * Hkv * d, seed + 1);
    v = test::random_normal(n * Hkv * d, seed + 2);
    // Structure, so that XA's selection is selective (random keys spread the mass evenly):
    // every query has a component along a direction u (|u|^2 = sqrt(d)) and the keys of each
    // 16-token span share an amplitude a ~ N(0, 2) along u, adding a to their scores.
    const std::vector<float> u = test::random_normal(d, seed + 3, std::pow(float(d), -0.25f));
    const std::vector<float> amp = test::random_normal(n / 16 + 1, seed + 4, 2.f);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t e = 0; e < d; ++e) q[(t * Hq + h) * d + e] += u[e];
      for (int64_t h = 0; h < Hkv; ++h)
        for (int64_t e = 0; e < d; ++e) k[(t * Hkv + h) * d + e] += amp[t / 16] * u[e];
    }
  }
};

std::vector<float> run(const Problem& p, const std::vector<AttnMode>& modes, const AttnOptions& opt,
                       AttnStats* stats = nullptr) {
  std::vector<float> out(p.q.size(), std::numeric_limits<float>::quiet_NaN());
  AttnArgs a;
  a.out = out.data();
  a.q = p.q.data();
  a.k = p.k.data();
  a.v = p.v.data();
  a.modes = modes.empty() ? nullptr : modes.data();
  a.n = p.n;
  a.num_heads = p.Hq;
  a.num_kv_heads = p.Hkv;
  a.head_dim = p.d;
  a.opt = opt;
  a.stats = stats;
  attention_cpu(a);
  return out;
}

bool ssa_allows(const SsaOptions& o, int64_t p, int64_t key) {
  if (key > p) return false;
  const int64_t kb = key / o.block, qb = p / o.block;
  return kb < o.sink_blocks() || kb > qb - o.local_blocks();
}

// Expanded token mask of a mode assignment (XA from the block masks the call reported).
std::function<bool(int64_t, int64_t, int64_t)> expanded_mask(const Problem& p, const std::vector<AttnMode>& modes,
                                                             const AttnOptions& opt, const AttnStats& st) {
  return [&, G = p.Hq / p.Hkv](int64_t h, int64_t pos, int64_t key) {
    if (key > pos) return false;
    switch (modes[h / G]) {
      case AttnMode::fa: return true;
      case AttnMode::ssa: return ssa_allows(opt.ssa, pos, key);
      case AttnMode::xa:
        return st.xa_mask[h][(pos / opt.xa.block) * st.xa_k_blocks + key / opt.xa.block] != 0;
    }
    return false;
  };
}

void expect_rho_matches_mask(const Problem& p, const AttnStats& st,
                             const std::function<bool(int64_t, int64_t, int64_t)>& allowed) {
  const double pairs = 0.5 * double(p.n) * double(p.n + 1);
  for (int64_t h = 0; h < p.Hq; ++h) {
    int64_t kept = 0;
    for (int64_t i = 0; i < p.n; ++i)
      for (int64_t j = 0; j <= i; ++j) kept += allowed(h, i, j);
    EXPECT_EQ(st.attended_pairs[h], kept) << "head " << h;
    EXPECT_NEAR(st.rho[h], 1.0 - kept / pairs, 1e-12) << "head " << h;  // same integers, double ratio
  }
}

struct ModeCase {
  const char* name;
  int64_t n, Hq, Hkv, d;
  AttnOptions opt;
  std::vector<AttnMode> modes;
};

AttnOptions small_options(int64_t block, int64_t sink, int64_t local, int64_t xa_block, int64_t stride) {
  AttnOptions o;
  o.ssa.block = block;
  o.ssa.sink_tokens = sink;
  o.ssa.local_tokens = local;
  o.xa.block = xa_block;
  o.xa.stride = stride;
  o.xa.threshold = 0.9;
  return o;
}

TEST(AttentionProperties, SparseModesEqualDenseOnExpandedMask) {
  using M = AttnMode;
  const std::vector<ModeCase> cases = {
      {"ssa gqa", 333, 4, 2, 32, small_options(32, 32, 96, 32, 8), {M::ssa, M::ssa}},
      {"ssa sink rounding", 300, 2, 1, 16, small_options(16, 5, 40, 16, 4), {M::ssa}},
      {"xa gqa", 333, 4, 2, 32, small_options(32, 32, 96, 32, 8), {M::xa, M::xa}},
      {"xa block 64", 450, 2, 2, 64, small_options(64, 64, 128, 64, 16), {M::xa, M::xa}},
      {"hybrid fa-ssa", 257, 6, 3, 32, small_options(32, 32, 64, 32, 8), {M::fa, M::ssa, M::fa}},
      {"hybrid fa-xa", 257, 4, 2, 32, small_options(32, 32, 64, 32, 8), {M::xa, M::fa}},
      {"hybrid xa-ssa", 400, 8, 4, 32, small_options(32, 32, 64, 32, 16), {M::xa, M::ssa, M::ssa, M::xa}},
  };
  for (const ModeCase& c : cases) {
    SCOPED_TRACE(c.name);
    const Problem p(c.n, c.Hq, c.Hkv, c.d, 7 + c.n);
    AttnStats st;
    const std::vector<float> out = run(p, c.modes, c.opt, &st);
    const auto allowed = expanded_mask(p, c.modes, c.opt, st);
    const std::vector<float> ref = test::masked_attention_reference(p.q, p.k, p.v, p.n, 0, p.Hq, p.Hkv, p.d, allowed);
    EXPECT_LT(test::normalized_max_error(out, ref), kTol);
    expect_rho_matches_mask(p, st, allowed);
    // The sparse heads really are sparse at this length (the test would otherwise be FA vs FA).
    for (int64_t h = 0; h < p.Hq; ++h)
      if (c.modes[h / (p.Hq / p.Hkv)] != M::fa) {
        EXPECT_GT(st.rho[h], 0.05) << "head " << h;
      }
  }
}

TEST(AttentionProperties, XaMasksKeepBlockZeroAndDiagonalAndAreCausal) {
  const Problem p(333, 4, 2, 32, 3);
  const AttnOptions o = small_options(32, 32, 96, 32, 8);
  AttnStats st;
  run(p, {AttnMode::xa, AttnMode::xa}, o, &st);
  ASSERT_EQ(st.xa_q_blocks, 11);
  for (int64_t h = 0; h < p.Hq; ++h)
    for (int64_t a = 0; a < st.xa_q_blocks; ++a) {
      EXPECT_EQ(st.xa_mask[h][a * st.xa_k_blocks + 0], 1);
      EXPECT_EQ(st.xa_mask[h][a * st.xa_k_blocks + a], 1);
      for (int64_t b = a + 1; b < st.xa_k_blocks; ++b) EXPECT_EQ(st.xa_mask[h][a * st.xa_k_blocks + b], 0);
    }
}

TEST(AttentionProperties, SsaWindowCoveringSequenceEqualsFa) {
  const Problem p(300, 4, 2, 32, 11);
  AttnOptions o = small_options(32, 32, 320, 32, 8);  // window of 10 blocks covers 300 tokens
  AttnStats st;
  const std::vector<float> ssa = run(p, {AttnMode::ssa, AttnMode::ssa}, o, &st);
  const std::vector<float> fa = run(p, {AttnMode::fa, AttnMode::fa}, o);
  EXPECT_LT(test::normalized_max_error(ssa, fa), 1e-6);  // same key set, same tile order
  for (double r : st.rho) EXPECT_EQ(r, 0.0);
}

TEST(AttentionProperties, XaThresholdOneEqualsFa) {
  const Problem p(300, 4, 2, 32, 13);
  AttnOptions o = small_options(32, 32, 96, 32, 8);
  o.xa.threshold = 1.0;
  AttnStats st;
  const std::vector<float> xa = run(p, {AttnMode::xa, AttnMode::xa}, o, &st);
  const std::vector<float> fa = run(p, {AttnMode::fa, AttnMode::fa}, o);
  EXPECT_LT(test::normalized_max_error(xa, fa), 1e-6);
  for (double r : st.rho) EXPECT_EQ(r, 0.0);
}

TEST(AttentionProperties, XaChunkedEstimationEqualsUnchunked) {
  const Problem p(700, 2, 1, 32, 17);
  AttnOptions whole = small_options(32, 32, 96, 32, 8);
  AttnOptions chunked = whole;
  chunked.xa.chunk = 64;  // 11 chunks of 2 blocks
  AttnStats a, b;
  const std::vector<float> x = run(p, {AttnMode::xa}, whole, &a);
  const std::vector<float> y = run(p, {AttnMode::xa}, chunked, &b);
  EXPECT_EQ(a.xa_mask, b.xa_mask);
  EXPECT_EQ(x, y);  // identical arithmetic, bit for bit
}

// Keys/values of positions < pos for one KV head as a cache view: full rows, or a ring that
// holds only the sink and window rows (every other row poisoned with NaN: reading one fails).
struct CacheHead {
  std::vector<float> k, v;
  KvHeadView view;
};

CacheHead make_cache_head(const Problem& p, int64_t hk, int64_t pos, bool ring, const SsaOptions& o) {
  CacheHead c;
  const int64_t d = p.d;
  const int64_t sink = o.kept_sink_tokens(), window = o.kept_window_tokens();
  const int64_t rows = ring ? std::min(pos, sink + window) : pos;
  c.k.assign(std::max<int64_t>(rows, 1) * d, std::numeric_limits<float>::quiet_NaN());
  c.v = c.k;
  c.view.ring = ring;
  c.view.sink_tokens = sink;
  c.view.window_tokens = window;
  for (int64_t t = 0; t < pos; ++t) {
    if (ring && t >= sink && t < pos - window) continue;  // dropped from the ring
    const int64_t r = ring ? c.view.row(t) : t;
    std::copy(p.k.begin() + (t * p.Hkv + hk) * d, p.k.begin() + (t * p.Hkv + hk + 1) * d, c.k.begin() + r * d);
    std::copy(p.v.begin() + (t * p.Hkv + hk) * d, p.v.begin() + (t * p.Hkv + hk + 1) * d, c.v.begin() + r * d);
  }
  c.view.k = c.k.data();
  c.view.v = c.v.data();
  return c;
}

// Runs queries pos0..pos0+n-1 with keys < pos0 from caches (ring for SSA heads).
std::vector<float> run_from_cache(const Problem& p, const std::vector<AttnMode>& modes, const AttnOptions& opt,
                                  int64_t pos0, int64_t n) {
  std::vector<CacheHead> heads;
  for (int64_t hk = 0; hk < p.Hkv; ++hk)
    heads.push_back(make_cache_head(p, hk, pos0, modes[hk] == AttnMode::ssa, opt.ssa));
  std::vector<KvHeadView> views;
  for (auto& h : heads) views.push_back(h.view);
  std::vector<float> out(n * p.Hq * p.d);
  AttnArgs a;
  a.out = out.data();
  a.q = p.q.data() + pos0 * p.Hq * p.d;
  a.k = p.k.data() + pos0 * p.Hkv * p.d;
  a.v = p.v.data() + pos0 * p.Hkv * p.d;
  a.past = views.data();
  a.modes = modes.data();
  a.n = n;
  a.pos0 = pos0;
  a.num_heads = p.Hq;
  a.num_kv_heads = p.Hkv;
  a.head_dim = p.d;
  a.opt = opt;
  attention_cpu(a);
  return out;
}

std::vector<float> rows_of(const std::vector<float>& x, int64_t i0, int64_t n, int64_t width) {
  return std::vector<float>(x.begin() + i0 * width, x.begin() + (i0 + n) * width);
}

// Decode (n = 1, attention_decode_cpu.cpp) against the tiled prefill path at the same position:
// the same key set and exact softmax, but scores summed in 16-lane partial sums and the softmax
// split over 256-key units and merged, so the two differ by fp32 rounding only (observed
// normalised ~2e-6 with scores up to ~20); 1e-5 is far below the ~1e-3 of one wrong key.
constexpr double kDecodeTol = 1e-5;

TEST(AttentionProperties, DecodeAtPositionEqualsPrefillAtPosition) {
  using M = AttnMode;
  const Problem p(420, 4, 2, 32, 19);
  const AttnOptions o = small_options(32, 40, 96, 32, 8);  // sink rounds up to 64 tokens
  const int64_t width = p.Hq * p.d;
  for (const std::vector<M>& modes : {std::vector<M>{M::fa, M::fa}, std::vector<M>{M::ssa, M::ssa},
                                      std::vector<M>{M::fa, M::ssa}, std::vector<M>{M::ssa, M::fa}}) {
    const std::vector<float> full = run(p, modes, o);
    // Positions inside the sink, at block edges, and far past the window (ring wrapped).
    for (int64_t pos : {1, 63, 64, 95, 96, 200, 319, 320, 419}) {
      SCOPED_TRACE("modes " + std::string(attn_mode_name(modes[0])) + "/" + attn_mode_name(modes[1]) +
                   " position " + std::to_string(pos));
      const std::vector<float> dec = run_from_cache(p, modes, o, pos, 1);
      EXPECT_LT(test::normalized_max_error(dec, rows_of(full, pos, 1, width)), kDecodeTol);
    }
  }
  // XA heads decode as FA (SPEC §4): decode at p equals FA prefill at p.
  const std::vector<float> fa_ssa = run(p, {M::fa, M::ssa}, o);
  for (int64_t pos : {5, 200, 419}) {
    const std::vector<float> dec = run_from_cache(p, {M::xa, M::ssa}, o, pos, 1);
    EXPECT_LT(test::normalized_max_error(dec, rows_of(fa_ssa, pos, 1, width)), kDecodeTol) << "position " << pos;
  }
}

// Decode over long caches: several units per head merged (2048-key units, split again at the
// threads' share boundaries), a ring window that wrapped several
// times, GQA groups 1 to 8 (odd group slices of the register kernel) and head dims with a
// vector kernel (16, 32, 64, 128) and without one (48: the portable loops).
TEST(AttentionProperties, DecodeLongCacheEqualsPrefill) {
  using M = AttnMode;
  struct Case { int64_t Hq, Hkv, d; std::vector<M> modes; };
  const std::vector<Case> cases = {
      {8, 8, 16, {M::fa, M::ssa, M::fa, M::ssa, M::fa, M::fa, M::ssa, M::fa}},
      {6, 2, 32, {M::ssa, M::fa}},  // G = 3: a slice of two heads and one of one
      {8, 2, 64, {M::fa, M::xa}},
      {8, 1, 128, {M::fa}},         // G = 8
      {4, 2, 48, {M::ssa, M::fa}},
  };
  const AttnOptions o = small_options(32, 40, 96, 32, 8);
  for (const Case& c : cases) {
    const Problem p(c.d == 16 ? 2600 : 1100, c.Hq, c.Hkv, c.d, 41 + c.d);  // d = 16: > 2048-key units
    std::vector<M> as_fa = c.modes;
    for (M& m : as_fa) m = m == M::xa ? M::fa : m;  // XA decodes as FA (SPEC §4)
    const std::vector<float> full = run(p, as_fa, o);
    for (int64_t pos : {int64_t{257}, p.n - 1}) {
      SCOPED_TRACE("Hq " + std::to_string(c.Hq) + " Hkv " + std::to_string(c.Hkv) + " d " +
                   std::to_string(c.d) + " position " + std::to_string(pos));
      const std::vector<float> dec = run_from_cache(p, c.modes, o, pos, 1);
      EXPECT_LT(test::normalized_max_error(dec, rows_of(full, pos, 1, p.Hq * p.d)), kDecodeTol);
    }
  }
}

TEST(AttentionProperties, ChunkedPrefillEqualsWholePrefill) {
  using M = AttnMode;
  const Problem p(400, 4, 2, 32, 23);
  const AttnOptions o = small_options(32, 32, 96, 32, 8);
  const int64_t width = p.Hq * p.d;
  for (const std::vector<M>& modes : {std::vector<M>{M::fa, M::ssa}, std::vector<M>{M::xa, M::ssa}}) {
    const std::vector<float> full = run(p, modes, o);
    for (int64_t pos0 : {160, 320}) {  // multiples of the XA block
      const std::vector<float> part = run_from_cache(p, modes, o, pos0, p.n - pos0);
      EXPECT_LT(test::normalized_max_error(part, rows_of(full, pos0, p.n - pos0, width)), 1e-6)
          << attn_mode_name(modes[0]) << " chunk at " << pos0;
    }
  }
}

TEST(AttentionProperties, HybridAllFaEqualsDense) {
  const Problem p(300, 4, 2, 32, 29);
  const AttnOptions o = small_options(32, 32, 96, 32, 8);
  AttnStats st;
  const std::vector<float> hybrid = run(p, {AttnMode::fa, AttnMode::fa}, o, &st);
  const std::vector<float> dense = run(p, {}, o);  // modes = null: the dense path
  EXPECT_EQ(hybrid, dense);
  const std::vector<float> ref = test::masked_attention_reference(
      p.q, p.k, p.v, p.n, 0, p.Hq, p.Hkv, p.d, [](int64_t, int64_t i, int64_t j) { return j <= i; });
  EXPECT_LT(test::normalized_max_error(dense, ref), kTol);
  for (double r : st.rho) EXPECT_EQ(r, 0.0);
}

TEST(AttentionBadInput, OptionsAreValidated) {
  const Problem p(64, 2, 1, 16, 31);
  auto expect_error = [&](AttnOptions o, const char* what) {
    try {
      run(p, {AttnMode::xa}, o);
      ADD_FAILURE() << "no error for " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  AttnOptions o = small_options(16, 16, 32, 16, 4);
  o.xa.stride = 5;
  expect_error(o, "xa-block");
  o = small_options(16, 16, 32, 16, 4);
  o.xa.threshold = 1.5;
  expect_error(o, "xa-threshold");
  o = small_options(16, 16, 32, 16, 4);
  o.ssa.block = 0;
  expect_error(o, "block");
  EXPECT_THROW(attn_mode_parse("dense", "--mode"), Error);
}

}  // namespace
}  // namespace elastic
