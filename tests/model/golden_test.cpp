// Golden tests of the forward pass against HF transformers (float64 runs of the same weights,
// /work/shared/fixtures): logits and hidden states of every backbone case and of the real
// TinyStories model, and HF's greedy continuations.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "fixture_names.h"
#include "elastic/model.h"
#include "elastic/sampling.h"
#include "model_test_util.h"

namespace elastic {
namespace {

using test::fixture_dir;
using test::relative_error;

// The bound. The reference is a float64 forward of the same (bf16/f32) weights; this
// engine computes in fp32, whose accumulated rounding over a few layers and 1e2..1e3-term dot
// products is ~1e-6..1e-5 relative, so 1e-4 leaves a margin while any wrong op (RoPE variant,
// norm placement, bias, GQA mapping) gives errors of 1e-2 or more.
constexpr double kTolerance = 1e-4;

struct GoldenCase {
  std::string model_dir;  // HF folder
  std::string case_dir;   // case.json + expected.safetensors
};

void check_case(const GoldenCase& gc) {
  const nlohmann::json cs = test::read_case(gc.case_dir);
  WeightStore expected = WeightStore::open(gc.case_dir + "/expected.safetensors");
  Model model = model_load(gc.model_dir);
  const int64_t V = model.config.vocab_size, D = model.config.hidden_size;
  bool first = true;
  for (const auto& in : cs["inputs"]) {
    SCOPED_TRACE("input " + in["input_ids"].get<std::string>());
    const std::vector<int64_t> ids = expected.get(in["input_ids"]).to_i64();
    const int64_t T = static_cast<int64_t>(ids.size());

    // Logits of every position, and the residual stream for the first input (backbones).
    Request req = request_start(model);
    std::vector<std::vector<float>> hidden;
    PrefillOptions opt;
    opt.logits = LogitsOutput::all;
    opt.hidden = &hidden;
    const std::vector<float>& logits = model_prefill(model, req, ids.data(), T, opt);
    const TensorView want = expected.get(in["logits"]);
    ASSERT_EQ(want.shape, (Shape{T, V}));
    const double err = relative_error(logits, want.to_f32());
    EXPECT_LT(err, kTolerance) << "logits";
    std::printf("[ golden   ] %s T=%lld logits rel err %.2e\n", gc.case_dir.c_str(), (long long)T, err);

    const std::string hidden_prefix = "hidden." + std::to_string(T) + ".";
    if (first && expected.contains(hidden_prefix + "0")) {
      ASSERT_EQ(static_cast<int64_t>(hidden.size()), model.config.num_layers + 1);
      for (size_t i = 0; i < hidden.size(); ++i) {
        const TensorView h = expected.get(hidden_prefix + std::to_string(i));
        ASSERT_EQ(h.shape, (Shape{T, D}));
        const double herr = relative_error(hidden[i], h.to_f32());
        EXPECT_LT(herr, kTolerance) << "hidden." << i;
      }
    }
    first = false;

    // HF greedy continuation (stops after EOS, which is then the last id).
    const std::vector<int64_t> want_ids = expected.get(in["greedy_ids"]).to_i64();
    const int64_t max_new = in.contains("greedy_tokens") ? in["greedy_tokens"].get<int64_t>() : 48;
    Request greq = request_start(model);
    Sampler greedy(SamplingParams{});
    GenerateOptions gopt;
    gopt.max_new_tokens = max_new;
    const std::vector<int64_t> got = generate(model, greq, ids, gopt, greedy);
    EXPECT_EQ(got, want_ids) << "greedy continuation";
  }
}

const std::vector<std::string> kBackboneCases = {
    "qwen3-tiny",      "llama3-tiny", "qwen2-tiny", "qwen3-yarn-tiny", "llama3-tiny-legacy-config",
    "qwen3-yarn-tiny-legacy-config"};

// Every backbone case of the fixture folder is in the list above (none skipped silently).
TEST(BackboneGoldenCoverage, ListNamesEveryBackboneFixture) {
  std::vector<std::string> found;
  for (const auto& e : std::filesystem::directory_iterator(fixture_dir("hf"))) {
    if (!std::filesystem::exists(e.path() / "case.json")) continue;
    if (test::read_case(e.path().string())["kind"] == "backbone")
      found.push_back(e.path().filename().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> listed = kBackboneCases;
  std::sort(listed.begin(), listed.end());
  EXPECT_EQ(found, listed);
}

class BackboneGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(BackboneGolden, LogitsHiddenGreedyMatchHf) {
  const std::string dir = fixture_dir("hf/" + GetParam());
  check_case({dir, dir});
}

INSTANTIATE_TEST_SUITE_P(Hf, BackboneGolden,
                         ::testing::ValuesIn(kBackboneCases),
                         test::FixtureParamName());

TEST(RealModelGolden, TinyStoriesLogitsAndGreedyMatchHf) {
  check_case({std::string(ELASTIC_SHARED_DIR) + "/data/tinystories-656k",
              fixture_dir("real/tinystories-656k")});
}

}  // namespace
}  // namespace elastic
