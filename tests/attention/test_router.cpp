// Router pieces and routing policies: boundary pooling, the sigmoid variant's normalisation
// and bias, static assignments from files (and their errors), the report and its PNG.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "elastic/error.h"
#include "elastic/fileio.h"
#include "elastic/report.h"
#include "elastic/router.h"
#include "elastic/routing.h"

namespace elastic {
namespace {

std::string temp_file(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

// Keys whose value is the token position: the pooled mean is the mean of the pooled positions.
std::vector<float> position_keys(int64_t n, int64_t Hkv, int64_t d) {
  std::vector<float> k(n * Hkv * d);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < Hkv * d; ++i) k[t * Hkv * d + i] = static_cast<float>(t);
  return k;
}

TEST(RouterPooling, ConcatenationOfFirstAndLastTokens) {
  const int64_t Hkv = 2, d = 3;
  std::vector<double> pooled(Hkv * d);
  // n = 1000, P = 100: tokens 0..99 and 900..999, mean (49.5 + 949.5) / 2.
  router_pool_keys(pooled.data(), position_keys(1000, Hkv, d).data(), 1000, Hkv, d, 100);
  for (double x : pooled) EXPECT_DOUBLE_EQ(x, 499.5);
  // n = 250, P = 100: 0..99 and 150..249, mean (49.5 * 100 + 199.5 * 100) / 200.
  router_pool_keys(pooled.data(), position_keys(250, Hkv, d).data(), 250, Hkv, d, 100);
  for (double x : pooled) EXPECT_DOUBLE_EQ(x, 124.5);
  // n = 60 <= P: both ranges are the whole prompt, the plain mean of 0..59.
  router_pool_keys(pooled.data(), position_keys(60, Hkv, d).data(), 60, Hkv, d, 100);
  for (double x : pooled) EXPECT_DOUBLE_EQ(x, 29.5);
}

// P < n < 2P: the ranges overlap and the shared tokens count twice, as the reference's
// concat(x[:P], x[-P:]).mean() does (SPEC §5.1). Keys asymmetric in position, so a union (each
// token once) would give a different value: n = 150, P = 100, keys 1 before position 50 and 0
// after: the concatenation holds 50 ones among 200 rows, 0.25 (the union would give 1/3).
TEST(RouterPooling, OverlapCountsSharedTokensTwice) {
  const int64_t Hkv = 2, d = 3, n = 150;
  std::vector<float> k(n * Hkv * d, 0.f);
  for (int64_t t = 0; t < 50; ++t)
    for (int64_t i = 0; i < Hkv * d; ++i) k[t * Hkv * d + i] = 1.f;
  std::vector<double> pooled(Hkv * d);
  router_pool_keys(pooled.data(), k.data(), n, Hkv, d, 100);
  for (double x : pooled) EXPECT_DOUBLE_EQ(x, 0.25);
  // Keys 1 at positions 60..69 only, inside both ranges: 20 of 200 rows (a union: 10 of 150).
  std::fill(k.begin(), k.end(), 0.f);
  for (int64_t t = 60; t < 70; ++t)
    for (int64_t i = 0; i < Hkv * d; ++i) k[t * Hkv * d + i] = 1.f;
  router_pool_keys(pooled.data(), k.data(), n, Hkv, d, 100);
  for (double x : pooled) EXPECT_DOUBLE_EQ(x, 0.1);
}

// A sigmoid-variant router whose logit is silu^3 of the pooled first key component: monotone
// for positive keys, so the decisions are known from the keys.
RouterWeights chain_router(int64_t d) {
  RouterWeights w;
  w.head_dim = d;
  w.classes = 1;
  RouterLayerWeights L;
  auto zeros = [](int64_t n) { return std::vector<float>(n, 0.f); };
  L.w1 = zeros(4 * d * d), L.b1 = zeros(4 * d), L.w2 = zeros(d * 4 * d), L.b2 = zeros(d);
  L.w3 = zeros(4 * d * d), L.b3 = zeros(4 * d), L.w4 = zeros(d * 4 * d), L.b4 = zeros(d);
  L.w5 = zeros(d), L.b5 = zeros(1);
  L.w1[0] = 1.f, L.w2[0] = 1.f, L.w3[0] = 1.f, L.w4[0] = 1.f, L.w5[0] = 1.f;
  w.layers.push_back(L);
  return w;
}

TEST(RouterSigmoid, LayerNormAcrossHeadsThenThreshold) {
  const int64_t Hkv = 4, d = 4, n = 10;
  std::vector<float> k(n * Hkv * d, 0.f);
  const float value[Hkv] = {3.f, 1.f, 4.f, 2.f};
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < Hkv; ++h) k[(t * Hkv + h) * d] = value[h];
  std::vector<float> logits;
  RouterOptions o;
  const std::vector<uint8_t> dec = router_layer_forward(logits, chain_router(d), 0, k.data(), n, Hkv, o);
  EXPECT_EQ(dec, (std::vector<uint8_t>{1, 0, 1, 0}));  // above the mean of the heads
  double mean = 0, var = 0;
  for (int64_t h = 0; h < Hkv; ++h) mean += logits[2 * h + 1] / Hkv;
  for (int64_t h = 0; h < Hkv; ++h) var += (logits[2 * h + 1] - mean) * (logits[2 * h + 1] - mean) / Hkv;
  EXPECT_NEAR(mean, 0.0, 1e-6);
  EXPECT_NEAR(var, 1.0, 1e-3);  // LayerNorm's eps 1e-5 against a variance of O(1)
  // A bias of 0.5 on the sparse side: only heads whose normalised logit exceeds it stay.
  o.sparsity_bias = 0.5;
  std::vector<float> biased;
  const std::vector<uint8_t> dec2 = router_layer_forward(biased, chain_router(d), 0, k.data(), n, Hkv, o);
  for (int64_t h = 0; h < Hkv; ++h) {
    EXPECT_EQ(biased[2 * h], 0.5f);
    EXPECT_EQ(dec2[h], biased[2 * h + 1] > 0.5f) << "head " << h;
  }
  EXPECT_EQ(dec2, (std::vector<uint8_t>{0, 0, 1, 0}));
}

TEST(StaticRoutingFiles, HeadListAndScores) {
  const std::string list = temp_file("heads.txt", "# retrieval heads\n0 1\n2,0  # trailing comment\n\n");
  auto a = static_assignment_head_list(list, 3, 2);
  EXPECT_EQ(a, (std::vector<std::vector<uint8_t>>{{0, 1}, {0, 0}, {1, 0}}));
  StaticRouting r(a, AttnMode::fa, AttnMode::ssa);
  const LayerRoute l2 = r.route(2, nullptr, 5, 2, 8);
  EXPECT_EQ(l2.modes, (std::vector<AttnMode>{AttnMode::fa, AttnMode::ssa}));
  EXPECT_EQ(l2.retrieval, (std::vector<uint8_t>{1, 0}));

  const std::string scores = temp_file("scores.tsv", "0.9\t0.1\n0.5\t0.3\n0.2\t0.8\n");
  // ratio 0.5 of 6 heads: the 3 lowest (0.1, 0.2, 0.3) sparse.
  EXPECT_EQ(static_assignment_top_scores(scores, 3, 2, 0.5),
            (std::vector<std::vector<uint8_t>>{{1, 0}, {1, 0}, {0, 1}}));
  EXPECT_EQ(static_assignment_top_scores(scores, 3, 2, 0.0), static_assignment_all(3, 2, true));
  EXPECT_EQ(static_assignment_top_scores(scores, 3, 2, 1.0), static_assignment_all(3, 2, false));
}

void expect_error_mentions(const std::function<void()>& f, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "no error, expected one mentioning " << what;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(StaticRoutingBadInput, ErrorsNameFileAndLine) {
  const std::string bad_layer = temp_file("bad_layer.txt", "0 0\n5 1\n");
  expect_error_mentions([&] { static_assignment_head_list(bad_layer, 3, 2); }, "bad_layer.txt:2");
  const std::string bad_fields = temp_file("bad_fields.txt", "0 0 0\n");
  expect_error_mentions([&] { static_assignment_head_list(bad_fields, 3, 2); }, "bad_fields.txt:1");
  const std::string bad_num = temp_file("bad_num.tsv", "0.1 x\n0.2 0.3\n");
  expect_error_mentions([&] { static_assignment_top_scores(bad_num, 2, 2, 0.5); }, "bad_num.tsv:1");
  const std::string short_file = temp_file("short.tsv", "0.1 0.2\n");
  expect_error_mentions([&] { static_assignment_top_scores(short_file, 2, 2, 0.5); }, "expected 2 lines");
  expect_error_mentions([&] { static_assignment_head_list(::testing::TempDir() + "/missing.txt", 2, 2); }, "missing.txt");
  const std::string ok = temp_file("ok.tsv", "1 2\n3 4\n");
  expect_error_mentions([&] { static_assignment_top_scores(ok, 2, 2, 1.5); }, "ratio");
}

TEST(Report, OmegasKvBytesFlopsAndPng) {
  // 2 layers x 2 KV heads, 4 query heads; layer 0: FA + SSA, layer 1: SSA + SSA.
  const int64_t N = 1000, d = 8;
  AttnOptions opt;
  opt.ssa.block = 64, opt.ssa.sink_tokens = 64, opt.ssa.local_tokens = 128;  // keeps 192 rows
  std::vector<LayerRoute> routes = {{{AttnMode::fa, AttnMode::ssa}, {0.f, 1.f, 2.f, -1.f}, {1, 0}},
                                    {{AttnMode::ssa, AttnMode::ssa}, {1.f, 0.f, 3.f, 0.f}, {0, 0}}};
  std::vector<AttnStats> stats(2);
  stats[0].rho = {0.0, 0.0, 0.6, 0.6};
  stats[1].rho = {0.6, 0.6, 0.6, 0.6};
  const RequestReport r = report_build(4, 2, d, N, routes, stats, opt);
  EXPECT_DOUBLE_EQ(r.omega_msr, 0.75);
  EXPECT_DOUBLE_EQ(r.omega_esr_last, 0.6);
  EXPECT_DOUBLE_EQ(r.omega_esr_all, 0.45);
  EXPECT_EQ(r.kv_bytes, uint64_t(N + 3 * 192) * d * 2 * 4);
  EXPECT_EQ(r.kv_bytes_dense, uint64_t(4 * N) * d * 2 * 4);
  EXPECT_NEAR(r.attn_flops / r.attn_flops_dense, 0.55, 1e-12);
  const nlohmann::json j = report_json(r);
  EXPECT_EQ(j["decisions"], nlohmann::json::parse("[[1,0],[0,0]]"));
  EXPECT_EQ(j["router_logits"][0][1][0], 2.f);

  const std::string png = ::testing::TempDir() + "/map.png";
  report_write_routing_map_png(r, png);
  const std::string bytes = read_file(png);
  ASSERT_GT(bytes.size(), 33u);
  EXPECT_EQ(bytes.substr(1, 3), "PNG");
  auto be32 = [&](size_t at) {
    return (uint32_t(uint8_t(bytes[at])) << 24) | (uint32_t(uint8_t(bytes[at + 1])) << 16) |
           (uint32_t(uint8_t(bytes[at + 2])) << 8) | uint32_t(uint8_t(bytes[at + 3]));
  };
  EXPECT_GT(be32(16), be32(20));  // 2 heads + colour bar wider than 2 layers are tall
  EXPECT_GT(be32(20), 0u);
}

}  // namespace
}  // namespace elastic
