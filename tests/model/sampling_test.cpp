// Sampling properties: greedy is argmax; a seed fixes the draws; top-k / top-p / min-p never
// pick an excluded token; unfiltered draws follow the softmax; generation stops at EOS.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "elastic/error.h"
#include "elastic/model.h"
#include "elastic/sampling.h"
#include "model_test_util.h"

namespace elastic {
namespace {

std::vector<float> random_logits(int64_t vocab, uint64_t seed, float scale = 3.f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<float> l(static_cast<size_t>(vocab));
  for (float& x : l) x = nd(rng);
  return l;
}

std::vector<double> softmax(const std::vector<float>& logits, float temperature) {
  std::vector<double> p(logits.size());
  const float mx = *std::max_element(logits.begin(), logits.end());
  double s = 0;
  for (size_t i = 0; i < p.size(); ++i) s += p[i] = std::exp((logits[i] - mx) / temperature);
  for (double& x : p) x /= s;
  return p;
}

TEST(Sampling, GreedyIsArgmaxFirstOnTies) {
  const std::vector<float> l = {0.5f, 2.f, -1.f, 2.f};
  EXPECT_EQ(sample_greedy(l.data(), 4), 1);
  Sampler s(SamplingParams{});
  EXPECT_EQ(s.sample(l.data(), 4), 1);
}

// Backend::argmax_rows (the batched greedy step): per row the greedy token, -1 for a row with a
// NaN or an infinity.
TEST(Sampling, ArgmaxRowsIsGreedyPerRowAndFlagsNonFinite) {
  const int64_t V = 7;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<std::vector<float>> rows = {
      {0.5f, 2.f, -1.f, 2.f, 0.f, 0.f, 0.f},        // a tie: the first
      {-3.f, -2.f, -1.f, -0.5f, -4.f, -5.f, -9.f},  // all negative
      {1.f, 0.f, 0.f, 0.f, 0.f, 0.f, nan},
      {0.f, inf, 0.f, 0.f, 0.f, 0.f, 0.f},
      {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 9.f}};
  std::vector<float> l;
  for (const auto& r : rows) l.insert(l.end(), r.begin(), r.end());
  std::vector<int64_t> ids(5, 99);
  backend_cpu()->argmax_rows(ids.data(), l.data(), 5, V);
  EXPECT_EQ(ids, (std::vector<int64_t>{1, 3, -1, -1, 6}));
}

TEST(Sampling, SameSeedSameTokensOtherSeedOthers) {
  const std::vector<float> l = random_logits(500, 7, 1.f);
  SamplingParams p;
  p.temperature = 1.f;
  p.seed = 42;
  Sampler a(p), b(p);
  p.seed = 43;
  Sampler c(p);
  std::vector<int64_t> ta, tb, tc;
  for (int i = 0; i < 200; ++i) {
    ta.push_back(a.sample(l.data(), 500));
    tb.push_back(b.sample(l.data(), 500));
    tc.push_back(c.sample(l.data(), 500));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);  // 200 draws over a flat-ish 500-token distribution: equal by chance ~never
}

TEST(Sampling, TopKNeverPicksOutsideTheKBest) {
  const int64_t V = 1000, K = 5;
  const std::vector<float> l = random_logits(V, 1);
  std::vector<int64_t> order(V);
  for (int64_t i = 0; i < V; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return l[a] > l[b]; });
  const std::set<int64_t> allowed(order.begin(), order.begin() + K);
  SamplingParams p;
  p.temperature = 5.f;  // flatten, so excluded tokens would be likely without the filter
  p.top_k = K;
  p.seed = 3;
  Sampler s(p);
  std::set<int64_t> seen;
  for (int i = 0; i < 2000; ++i) {
    const int64_t t = s.sample(l.data(), V);
    EXPECT_TRUE(allowed.count(t)) << t;
    seen.insert(t);
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(K));  // and it does sample all of them
}

TEST(Sampling, TopPKeepsTheSmallestPrefixReachingP) {
  const int64_t V = 300;
  const std::vector<float> l = random_logits(V, 2);
  SamplingParams p;
  p.temperature = 1.f;
  p.top_p = 0.8f;
  const auto cand = sampling_candidates(l.data(), V, p);
  const std::vector<double> prob = softmax(l, 1.f);
  std::vector<double> sorted = prob;
  std::sort(sorted.rbegin(), sorted.rend());
  double mass = 0;
  for (size_t i = 0; i + 1 < cand.size(); ++i) mass += sorted[i];
  EXPECT_LT(mass, 0.8);                            // one fewer is not enough
  EXPECT_GE(mass + sorted[cand.size() - 1], 0.8 - 1e-6);  // this many is
  std::set<int64_t> allowed;
  for (const auto& c : cand) allowed.insert(c.first);
  p.seed = 9;
  Sampler s(p);
  for (int i = 0; i < 2000; ++i) EXPECT_TRUE(allowed.count(s.sample(l.data(), V)));
}

TEST(Sampling, MinPDropsUnlikelyTokens) {
  const int64_t V = 400;
  const std::vector<float> l = random_logits(V, 4);
  const std::vector<double> prob = softmax(l, 1.5f);
  const double pmax = *std::max_element(prob.begin(), prob.end());
  SamplingParams p;
  p.temperature = 1.5f;
  p.min_p = 0.05f;
  p.seed = 11;
  Sampler s(p);
  for (int i = 0; i < 3000; ++i) {
    const int64_t t = s.sample(l.data(), V);
    // fp32 vs double probabilities: allow 1e-6 relative slack at the threshold
    EXPECT_GE(prob[t], 0.05 * pmax * (1 - 1e-6)) << t;
  }
}

TEST(Sampling, UnfilteredDrawsFollowTheSoftmax) {
  const std::vector<float> l = {1.f, 0.f, -0.5f, 0.5f};
  const std::vector<double> prob = softmax(l, 0.7f);
  SamplingParams p;
  p.temperature = 0.7f;
  p.seed = 5;
  Sampler s(p);
  const int draws = 20000;
  std::vector<int> count(4, 0);
  for (int i = 0; i < draws; ++i) ++count[s.sample(l.data(), 4)];
  for (int t = 0; t < 4; ++t) {
    // binomial std <= sqrt(0.25 / 20000) = 0.0035; 0.02 is over 5 sigma
    EXPECT_NEAR(count[t] / static_cast<double>(draws), prob[t], 0.02) << t;
  }
}

TEST(Sampling, BadParametersAreErrors) {
  SamplingParams p;
  p.temperature = -1.f;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.top_p = 0.f;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.min_p = 1.5f;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.top_k = -2;
  EXPECT_THROW(Sampler{p}, Error);
}

// TinyStories' second prompt ends its greedy continuation with EOS after 5 tokens (HF fixture).
TEST(Generate, StopsAfterEosUnlessIgnored) {
  Model m = model_load(std::string(ELASTIC_SHARED_DIR) + "/data/tinystories-656k");
  WeightStore e = WeightStore::open(test::fixture_dir("real/tinystories-656k/expected.safetensors"));
  const std::vector<int64_t> ids = e.get("input_ids.1").to_i64();
  Sampler greedy(SamplingParams{});
  GenerateOptions o;
  o.max_new_tokens = 20;
  GenerateStats st;
  Request r = request_start(m);
  std::vector<int64_t> seen;
  const auto out = generate(m, r, ids, o, greedy, [&](int64_t t) { seen.push_back(t); return true; }, &st);
  ASSERT_FALSE(out.empty());
  EXPECT_LT(out.size(), 20u);
  EXPECT_EQ(out.back(), m.config.eos_token_ids.at(0));
  EXPECT_TRUE(st.stopped_at_eos);
  EXPECT_EQ(seen, out);
  o.stop_at_eos = false;
  Request r2 = request_start(m);
  EXPECT_EQ(generate(m, r2, ids, o, greedy).size(), 20u);
  // on_token returning false stops the loop after that token.
  Request r3 = request_start(m);
  EXPECT_EQ(generate(m, r3, ids, o, greedy, [](int64_t) { return false; }).size(), 1u);
}

// sampling_pick without filters sorts only the prefix it needs; it must pick exactly the token
// of the full sorted candidate list (sampling_candidates) for every u, ties included.
TEST(Sampling, UnfilteredPickEqualsTheFullCandidateList) {
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal(0.f, 3.f);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> logits(trial % 2 ? 2048 : 300);
    for (float& x : logits) x = trial % 3 == 0 ? std::round(normal(rng)) : normal(rng);  // ties too
    SamplingParams p;
    p.temperature = trial % 4 == 0 ? 2.0f : 0.7f;
    const auto c = sampling_candidates(logits.data(), int64_t(logits.size()), p);
    for (double u : {0.0, 1e-9, 0.1, 0.5, 0.9, 0.999, 0.999999, 1.0 - 1e-12}) {
      double cum = 0.0;
      int64_t want = c.back().first;
      for (const auto& e : c) {
        cum += e.second;
        if (u < cum) {
          want = e.first;
          break;
        }
      }
      EXPECT_EQ(sampling_pick(logits.data(), int64_t(logits.size()), p, u), want) << "trial " << trial << " u " << u;
    }
  }
}

// sampling_pick without filters finds the token by bucketing the probabilities (no sort); it must
// be the token of the full sorted candidate list for every u: random and exactly at the running
// sums' boundaries (u == a prefix's sum picks the next token), over peaked, flat and tied
// distributions, small and large vocabularies and tokens of probability 0.
TEST(Sampling, UnfilteredBucketPickEqualsTheReferenceOnManyDistributions) {
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  const int64_t sizes[] = {1, 2, 63, 64, 65, 129, 300, 2048, 5000};
  int64_t checked = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t V = sizes[trial % std::size(sizes)];
    const float scale = std::array<float, 5>{0.1f, 1.f, 3.f, 8.f, 30.f}[(trial / 9) % 5];
    std::normal_distribution<float> normal(0.f, scale);
    std::vector<float> logits(static_cast<size_t>(V));
    for (float& x : logits) x = trial % 3 == 0 ? std::round(normal(rng)) : normal(rng);
    if (trial % 7 == 0 && V > 2) logits[1] = -std::numeric_limits<float>::infinity();
    SamplingParams p;
    p.temperature = std::array<float, 4>{0.3f, 0.8f, 1.f, 2.f}[trial % 4];
    const auto c = sampling_candidates(logits.data(), V, p);
    auto reference = [&](double u) {
      double cum = 0.0;
      for (const auto& e : c) {
        cum += e.second;
        if (u < cum) return e.first;
      }
      return c.back().first;
    };
    std::vector<double> us = {0.0, 1e-12, 0.999999, 1.0 - 1e-12};
    for (int i = 0; i < 100; ++i) us.push_back(unif(rng));
    double cum = 0.0;
    for (size_t k = 0; k < c.size() && k < 200; ++k) {  // the boundaries of the first 200 sums
      cum += c[k].second;
      us.push_back(cum);
      us.push_back(std::nextafter(cum, 0.0));
    }
    for (double u : us) {
      if (!(u < 1.0)) continue;
      ASSERT_EQ(sampling_pick(logits.data(), V, p, u), reference(u))
          << "trial " << trial << " V " << V << " u " << u;
      ++checked;
    }
  }
  EXPECT_GT(checked, 30000);
}

}  // namespace
}  // namespace elastic
