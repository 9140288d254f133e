// Golden attention fixtures (../shared/fixtures/hf/attention-*): outputs of FA, SSA, XA and
// the FA/SSA hybrid, the XA block mask of every query head and rho, against a float64
// implementation of SPEC §3 run on the same bf16 inputs.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "fixture_names.h"
#include "attention/attn_test_util.h"
#include "elastic/attention.h"
#include "elastic/safetensors.h"

namespace elastic {
namespace {

struct Fixture {
  int64_t n = 0, Hq = 0, Hkv = 0, d = 0;
  AttnOptions opt;
  WeightStore ws;
  std::vector<float> q, k, v;  // token-major
};

Fixture load_fixture(const std::string& name) {
  const std::string dir = std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/" + name;
  std::ifstream f(dir + "/case.json");
  const nlohmann::json c = nlohmann::json::parse(f);
  Fixture fx{c["n"], c["num_heads"], c["num_kv_heads"], c["head_dim"], {}, WeightStore::open(dir + "/expected.safetensors"), {}, {}, {}};
  const auto& o = c["options"];
  fx.opt.ssa.block = o["block_size"];
  fx.opt.ssa.sink_tokens = o["sink_size"];
  fx.opt.ssa.local_tokens = o["local_window_size"];
  fx.opt.xa.block = o["xa_block_size"];
  fx.opt.xa.stride = o["xa_stride"];
  fx.opt.xa.threshold = o["xa_threshold"];
  fx.q = test::heads_major_to_token_major(fx.ws.get("q").to_f32(), fx.Hq, fx.n, fx.d);
  fx.k = test::heads_major_to_token_major(fx.ws.get("k").to_f32(), fx.Hkv, fx.n, fx.d);
  fx.v = test::heads_major_to_token_major(fx.ws.get("v").to_f32(), fx.Hkv, fx.n, fx.d);
  return fx;
}

void check_mode(const Fixture& fx, const std::string& mode_name) {
  std::vector<AttnMode> modes;
  if (mode_name == "hybrid") {
    for (int64_t m : fx.ws.get("hybrid_modes").to_i64()) modes.push_back(m == 0 ? AttnMode::fa : AttnMode::ssa);
  } else {
    modes.assign(fx.Hkv, attn_mode_parse(mode_name, "mode"));
  }
  ASSERT_EQ(static_cast<int64_t>(modes.size()), fx.Hkv);
  std::vector<float> out(fx.q.size());
  AttnStats stats;
  AttnArgs a;
  a.out = out.data();
  a.q = fx.q.data();
  a.k = fx.k.data();
  a.v = fx.v.data();
  a.modes = modes.data();
  a.n = fx.n;
  a.num_heads = fx.Hq;
  a.num_kv_heads = fx.Hkv;
  a.head_dim = fx.d;
  a.opt = fx.opt;
  a.stats = &stats;
  attention_cpu(a);

  const std::vector<float> expected = test::heads_major_to_token_major(
      fx.ws.get("out." + mode_name).to_f32(), fx.Hq, fx.n, fx.d);
  // fp32 with fp32 accumulation over <= 2100 keys against float64 on the same inputs: the
  // error is ~1e-6 of the output scale, so 1e-4 (the acceptance bound) leaves a wide margin.
  // "Relative" is per element against |expected| + rms(expected): outputs are averages of
  // many values and cross zero, where a bare ratio is meaningless.
  const double rel = test::max_relative_error(out, expected, test::rms(expected));
  EXPECT_LT(rel, 1e-4) << mode_name;
  EXPECT_LT(test::normalized_max_error(out, expected), 1e-4) << mode_name;
  std::printf("[ info     ] %s: max relative error %.3g, normalised %.3g\n", mode_name.c_str(), rel,
              test::normalized_max_error(out, expected));

  if (mode_name != "hybrid") {
    const std::vector<float> rho = fx.ws.get("rho." + mode_name).to_f32();
    for (int64_t h = 0; h < fx.Hq; ++h)  // rho is a ratio of exact integer counts; 1e-6 = float32 storage
      EXPECT_NEAR(stats.rho[h], rho[h], 1e-6) << mode_name << " head " << h;
  }
  if (mode_name == "xa") {
    const int64_t nb = (fx.n + fx.opt.xa.block - 1) / fx.opt.xa.block;
    ASSERT_EQ(stats.xa_q_blocks, nb);
    ASSERT_EQ(stats.xa_k_blocks, nb);
    for (int64_t h = 0; h < fx.Hq; ++h) {
      const std::vector<int64_t> want = fx.ws.get("xa_blocks." + std::to_string(h)).to_i64();
      ASSERT_EQ(static_cast<int64_t>(want.size()), nb * nb);
      int64_t diff = 0;
      for (int64_t i = 0; i < nb * nb; ++i) diff += (stats.xa_mask[h][i] != want[i]);
      EXPECT_EQ(diff, 0) << "XA block mask of query head " << h;
    }
  }
}

class AttentionGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(AttentionGolden, EveryMode) {
  const Fixture fx = load_fixture(GetParam());
  for (const char* m : {"fa", "ssa", "xa", "hybrid"}) check_mode(fx, m);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, AttentionGolden,
                         ::testing::Values("attention-gqa", "attention-mha-long"),
                         test::FixtureParamName());

}  // namespace
}  // namespace elastic
