// Elastic checkpoints end to end (../shared/fixtures/hf/elastic-*): router decisions and
// logits, rho, the sparsity ratios and the model's logits after a prefill with the routed
// modes, against a float64 implementation of SPEC.md on the same bf16 weights. Also: the KV
// cache of an FA-SSA request holds N rows per FA head and min(N, sink + window) per SSA head,
// as reported; and decode at position p equals prefill at p for the routed model.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "fixture_names.h"
#include "attention/attn_test_util.h"
#include "elastic/model.h"
#include "elastic/report.h"
#include "elastic/router.h"
#include "elastic/safetensors.h"

namespace elastic {
namespace {

std::string fixture_dir(const std::string& name) { return std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/" + name; }

struct ElasticCase {
  nlohmann::json json;
  AttnOptions attn;
  RouterOptions router;
};

ElasticCase load_case(const std::string& dir) {
  std::ifstream f(dir + "/case.json");
  ElasticCase c{nlohmann::json::parse(f), {}, {}};
  const auto& o = c.json["options"];
  c.attn.ssa.block = o["block_size"];
  c.attn.ssa.sink_tokens = o["sink_size"];
  c.attn.ssa.local_tokens = o["local_window_size"];
  c.attn.xa.block = o["xa_block_size"];
  c.attn.xa.stride = o["xa_stride"];
  c.attn.xa.threshold = o["xa_threshold"];
  c.router.pool_tokens = o["pool_tokens"];
  c.router.sparsity_bias = o["sparsity_bias"];
  c.router.retrieval_mode = attn_mode_parse(c.json["retrieval_mode"], "retrieval_mode");
  c.router.sparse_mode = attn_mode_parse(c.json["sparse_mode"], "sparse_mode");
  return c;
}

class ElasticGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(ElasticGolden, RoutingSparsityAndLogits) {
  const std::string dir = fixture_dir(GetParam());
  const ElasticCase c = load_case(dir);
  const WeightStore expected = WeightStore::open(dir + "/expected.safetensors");
  const std::vector<int64_t> ids = expected.get("input_ids").to_i64();
  ASSERT_EQ(static_cast<int64_t>(ids.size()), c.json["length"].get<int64_t>());

  const Model model = model_load(dir);
  const WeightStore store = WeightStore::open(dir);
  ASSERT_TRUE(router_weights_present(store));
  RouterRouting routing(router_weights_load(store, model.config), c.router);
  Request req = request_start(model, &routing);
  req.attn = c.attn;
  PrefillOptions po;
  po.logits = LogitsOutput::all;
  const int64_t N = static_cast<int64_t>(ids.size());
  const std::vector<float> logits = model_prefill(model, req, ids.data(), N, po);
  const ModelConfig& mc = model.config;
  const RequestReport r = report_build(mc.num_heads, mc.num_kv_heads, mc.head_dim, N, req.routes, req.prefill_stats, req.attn);

  const std::vector<int64_t> want_dec = expected.get("decisions").to_i64();
  const std::vector<float> want_logits = expected.get("router_logits").to_f32();
  const std::vector<float> want_rho = expected.get("rho").to_f32();
  for (int64_t l = 0; l < mc.num_layers; ++l)
    for (int64_t h = 0; h < mc.num_kv_heads; ++h) {
      EXPECT_EQ(r.decisions[l][h], want_dec[l * mc.num_kv_heads + h]) << "layer " << l << " head " << h;
      for (int k = 0; k < 2; ++k)  // router MLP in double on fp32 keys vs float64: ~1e-6
        EXPECT_NEAR(r.router_logits[l][2 * h + k], want_logits[(l * mc.num_kv_heads + h) * 2 + k], 1e-4)
            << "layer " << l << " head " << h << " class " << k;
    }
  for (int64_t l = 0; l < mc.num_layers; ++l)
    for (int64_t h = 0; h < mc.num_heads; ++h)  // exact pair counts; 1e-6 = float32 storage
      EXPECT_NEAR(r.rho[l][h], want_rho[l * mc.num_heads + h], 1e-6) << "layer " << l << " head " << h;
  EXPECT_NEAR(r.omega_msr, expected.get("omega_msr").to_f32()[0], 1e-6);
  EXPECT_NEAR(r.omega_esr_last, expected.get("omega_esr_last").to_f32()[0], 1e-6);
  EXPECT_NEAR(r.omega_esr_all, expected.get("omega_esr_all").to_f32()[0], 1e-6);

  // fp32 forward (fp32 accumulation over hidden 192 / 700 keys) vs float64 on the same bf16
  // weights: ~1e-5 relative to the logit scale; the acceptance bound is 1e-4.
  const std::vector<float> want = expected.get("logits").to_f32();
  ASSERT_EQ(logits.size(), want.size());
  const double rel = test::max_relative_error(logits, want, test::rms(want));
  EXPECT_LT(rel, 1e-4);
  std::printf("[ info     ] %s: omega_msr %.4f omega_esr_last %.4f, logits max relative error %.3g\n",
              GetParam().c_str(), r.omega_msr, r.omega_esr_last, rel);
  // The case is not trivial: some heads of each kind.
  EXPECT_GT(r.omega_msr, 0.0);
  EXPECT_LT(r.omega_msr, 1.0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ElasticGolden,
                         ::testing::Values("elastic-qwen3-fa-ssa", "elastic-qwen3-fa-xa", "elastic-qwen3-xa-ssa",
                                           "elastic-qwen3-fa-ssa-bias"),
                         test::FixtureParamName());

// KV memory of an FA-SSA request: the cache allocates N rows per FA head and
// min(N, sink + window) rows per SSA head, and the report says the same.
TEST(ElasticKvMemory, FaSsaCacheMatchesReportAndRule) {
  const std::string dir = fixture_dir("elastic-qwen3-fa-ssa");
  const ElasticCase c = load_case(dir);
  const Model model = model_load(dir);
  const WeightStore store = WeightStore::open(dir);
  const ModelConfig& mc = model.config;
  const std::vector<int64_t> all_ids = WeightStore::open(dir + "/expected.safetensors").get("input_ids").to_i64();
  for (int64_t N : {int64_t(90), int64_t(700)}) {  // below and above sink + window = 128
    SCOPED_TRACE("N = " + std::to_string(N));
    RouterRouting routing(router_weights_load(store, mc), c.router);
    Request req = request_start(model, &routing);
    req.attn = c.attn;
    PrefillOptions po;
    po.logits = LogitsOutput::none;
    model_prefill(model, req, all_ids.data(), N, po);
    const RequestReport r = report_build(mc.num_heads, mc.num_kv_heads, mc.head_dim, N, req.routes, req.prefill_stats, req.attn);
    const int64_t kept = c.attn.ssa.kept_sink_tokens() + c.attn.ssa.kept_window_tokens();
    ASSERT_EQ(kept, 128);
    uint64_t want = 0;
    int ssa_heads = 0;
    for (int64_t l = 0; l < mc.num_layers; ++l)
      for (int64_t h = 0; h < mc.num_kv_heads; ++h) {
        const bool ssa = req.routes[l].modes[h] == AttnMode::ssa;
        ssa_heads += ssa;
        const int64_t rows = ssa ? std::min(N, kept) : N;
        EXPECT_EQ(req.cache.rows_allocated(l, h), rows) << "layer " << l << " head " << h;
        EXPECT_EQ(req.cache.is_ring(l, h), ssa);
        want += static_cast<uint64_t>(rows) * mc.head_dim * 2 * sizeof(float);
      }
    EXPECT_GT(ssa_heads, 0);
    EXPECT_EQ(req.cache.bytes_allocated(), want);
    EXPECT_EQ(r.kv_bytes, want);
    EXPECT_EQ(r.kv_bytes_dense, static_cast<uint64_t>(mc.num_layers * mc.num_kv_heads * N * mc.head_dim * 2 * 4));
  }
}

// Decode at position p equals prefill at p with the routing of the fixture held fixed (SSA
// heads decode from their bounded ring cache).
TEST(ElasticDecode, DecodeEqualsPrefillWithFixedRouting) {
  const std::string dir = fixture_dir("elastic-qwen3-fa-ssa");
  const ElasticCase c = load_case(dir);
  const Model model = model_load(dir);
  const ModelConfig& mc = model.config;
  const WeightStore expected = WeightStore::open(dir + "/expected.safetensors");
  const std::vector<int64_t> ids = expected.get("input_ids").to_i64();
  const std::vector<int64_t> dec = expected.get("decisions").to_i64();
  std::vector<std::vector<uint8_t>> assign(mc.num_layers, std::vector<uint8_t>(mc.num_kv_heads));
  for (int64_t l = 0; l < mc.num_layers; ++l)
    for (int64_t h = 0; h < mc.num_kv_heads; ++h) assign[l][h] = static_cast<uint8_t>(dec[l * mc.num_kv_heads + h]);
  StaticRouting routing(assign, AttnMode::fa, AttnMode::ssa);
  const int64_t N = 300, steps = 3;  // 300 > sink + window: the ring has wrapped

  Request whole = request_start(model, &routing);
  whole.attn = c.attn;
  PrefillOptions all;
  all.logits = LogitsOutput::all;
  const std::vector<float> ref = model_prefill(model, whole, ids.data(), N + steps, all);

  Request inc = request_start(model, &routing);
  inc.attn = c.attn;
  PrefillOptions last;
  last.logits = LogitsOutput::last;
  model_prefill(model, inc, ids.data(), N, last);
  const int64_t V = mc.vocab_size;
  for (int64_t s = 0; s < steps; ++s) {
    const std::vector<float> got = model_prefill(model, inc, ids.data() + N + s, 1, last);
    const std::vector<float> want(ref.begin() + (N + s) * V, ref.begin() + (N + s + 1) * V);
    // Same arithmetic except the order of key tiles: fp32 rounding only.
    EXPECT_LT(test::normalized_max_error(got, want), 1e-5) << "position " << N + s;
  }
  // SSA heads stayed bounded through decode.
  for (int64_t l = 0; l < mc.num_layers; ++l)
    for (int64_t h = 0; h < mc.num_kv_heads; ++h)
      if (!assign[l][h]) {
        EXPECT_LE(inc.cache.rows_allocated(l, h), 128) << "layer " << l << " head " << h;
      }
}

}  // namespace
}  // namespace elastic
