// The evaluator and the calibration on a real trained model (TinyStories 656K, 2 layers, 4 KV
// heads): the sparsity of dense and all-SA runs, greedy decoding equal to generate(), and
// per-head sensitivities that vanish where SSA sees every key.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>

#include "elastic/error.h"
#include "elastic/eval.h"
#include "elastic/fileio.h"
#include "elastic/model.h"
#include "elastic/sampling.h"
#include "elastic/tokenizer.h"

namespace elastic {
namespace {

// A path in the test temporary folder, unique to this process (suites may run concurrently).
std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "/" + std::to_string(getpid()) + "_" + name;
}

const std::string kDir = std::string(ELASTIC_SHARED_DIR) + "/data/tinystories-656k";

struct Fixture {
  Model model = model_load(kDir);
  Tokenizer tok = Tokenizer::load(kDir);
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

AttnOptions small_ssa(int64_t local) {
  AttnOptions a;
  a.ssa.block = 32;
  a.ssa.sink_tokens = 32;
  a.ssa.local_tokens = local;
  return a;
}

TEST(EvalRun, DenseAndAllSparseReportTheirSparsity) {
  Fixture& f = fixture();
  const TokenCounter count = eval_token_counter(f.tok, true);
  std::vector<EvalSample> samples = eval_generate_set("niah_single", 200, 2, 1, count);
  samples.push_back(eval_generate("repeat_last_line", 300, 1, 0, count));
  const int64_t L = f.model.config.num_layers, H = f.model.config.num_kv_heads;
  std::vector<EvalConfig> configs = {
      {"dense", std::make_shared<DenseRouting>(), small_ssa(64)},
      {"all-sa",
       std::make_shared<StaticRouting>(static_assignment_all(L, H, false), AttnMode::fa,
                                       AttnMode::ssa),
       small_ssa(64)}};
  std::vector<int64_t> done;
  std::vector<EvalSampleResult> runs;
  const std::vector<EvalResult> r = eval_run(
      f.model, f.tok, samples, configs, {},
      [&](int64_t d, int64_t total, const std::string&) {
        EXPECT_EQ(total, 6);
        done.push_back(d);
      },
      &runs);
  EXPECT_EQ(done, (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  ASSERT_EQ(r.size(), 4u);  // (niah_single 200, repeat_last_line 300) x (dense, all-sa)
  EXPECT_EQ(r[0].task, "niah_single");
  EXPECT_EQ(r[0].length, 200);
  EXPECT_EQ(r[0].n, 2);
  EXPECT_EQ(r[2].task, "repeat_last_line");
  EXPECT_EQ(r[2].n, 1);
  for (size_t i = 0; i < r.size(); ++i) {
    const bool dense = i % 2 == 0;
    EXPECT_EQ(r[i].config, dense ? "dense" : "all-sa");
    EXPECT_EQ(r[i].omega_msr, dense ? 0.0 : 1.0);
    // 200-300 tokens with 32 sink + 64 local tokens: most causal pairs are skipped.
    EXPECT_TRUE(dense ? r[i].omega_esr == 0.0 : r[i].omega_esr > 0.3) << r[i].omega_esr;
    EXPECT_GT(r[i].prefill_s, 0.0);
    EXPECT_GE(r[i].accuracy, 0.0);
    EXPECT_LE(r[i].accuracy, 1.0);
  }
  ASSERT_EQ(runs.size(), 6u);
  for (const EvalSampleResult& s : runs) {
    EXPECT_LE(s.prompt_tokens, s.length);
    EXPECT_EQ(s.prediction.find('\n'), std::string::npos);
  }
  EXPECT_DOUBLE_EQ(r[2].accuracy, runs[4].score);
}

// The evaluator's greedy decoding is the one of generate(): with the greedy continuation as the
// reference answer, the dense model scores 1 (contains) and the prediction starts with it.
TEST(EvalRun, GreedyDecodingMatchesGenerate) {
  Fixture& f = fixture();
  const std::string prompt = "Once upon a time";
  EncodeOptions eo;
  eo.add_special = true;
  std::vector<int64_t> ids;
  for (int32_t id : f.tok.encode(prompt, eo)) ids.push_back(id);
  DenseRouting dense;
  Request req = request_start(f.model, &dense);
  Sampler greedy(SamplingParams{});
  GenerateOptions go;
  go.max_new_tokens = 10;
  const std::vector<int64_t> out = generate(f.model, req, ids, go, greedy);
  const std::string text = f.tok.decode(std::vector<int32_t>(out.begin(), out.end()), true);
  ASSERT_EQ(text.find('\n'), std::string::npos) << text;
  ASSERT_FALSE(eval_normalize(text).empty());

  const EvalSample s{"story", prompt, {text}, ScoreRule::contains, 0};
  std::vector<EvalSampleResult> runs;
  const auto r = eval_run(f.model, f.tok, {s}, {{"dense", std::make_shared<DenseRouting>(), {}}},
                          {}, {}, &runs);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].accuracy, 1.0) << "prediction '" << runs[0].prediction << "' vs '" << text << "'";
  EXPECT_EQ(runs[0].prediction.rfind(text, 0), 0u);
  EXPECT_EQ(r[0].length, 0);  // unknown length: imported samples without one
}

TEST(EvalRun, RejectsAConfigWithoutPolicy) {
  Fixture& f = fixture();
  const EvalSample s{"t", "Once", {"x"}, ScoreRule::contains, 0};
  EXPECT_THROW(eval_run(f.model, f.tok, {s}, {{"broken", nullptr, {}}}), Error);
  EXPECT_THROW(eval_run(f.model, f.tok, {s}, {}), Error);
}

// A prompt shorter than sink + local window: SSA attends every key, so no head matters.
TEST(EvalCalibrate, NoSensitivityWhereSsaSeesEverything) {
  Fixture& f = fixture();
  const auto samples = eval_generate_set("niah_single", 120, 1, 3, eval_token_counter(f.tok, true));
  CalibrateOptions co;
  co.attn = small_ssa(512);
  const auto scores = eval_calibrate(f.model, f.tok, samples, co);
  ASSERT_EQ(scores.size(), 2u);
  for (const auto& row : scores) {
    ASSERT_EQ(row.size(), 4u);
    for (double x : row) EXPECT_NEAR(x, 0.0, 1e-4);  // fp32 summation order of FA vs SSA
  }
}

TEST(EvalCalibrate, ScoresPickTheLeastSensitiveHeads) {
  Fixture& f = fixture();
  const auto samples =
      eval_generate_set("kv_retrieval", 400, 2, 3, eval_token_counter(f.tok, true));
  CalibrateOptions co;
  co.attn = small_ssa(64);
  int64_t ticks = 0;
  const auto scores =
      eval_calibrate(f.model, f.tok, samples, co, [&](int64_t, int64_t total, const std::string&) {
        EXPECT_EQ(total, 2 * (1 + 8));
        ++ticks;
      });
  EXPECT_EQ(ticks, 18);
  double largest = 0;
  for (const auto& row : scores)
    for (double x : row) {
      EXPECT_TRUE(std::isfinite(x));
      largest = std::max(largest, std::fabs(x));
    }
  EXPECT_GT(largest, 1e-3) << "a head made sparse over 400 tokens with a 64-token window";

  // The score file gives static routing the round(0.25 * 8) = 2 lowest-scoring heads as sparse.
  const std::string path = temp_path("calibrate_scores.tsv");
  const std::string text = eval_scores_file_text(scores, "test scores\nsecond line");
  EXPECT_EQ(text.rfind("# test scores\n# second line\n", 0), 0u) << text;
  write_file_atomic(path, text);
  const auto a = static_assignment_top_scores(path, 2, 4, 0.25);
  std::vector<std::pair<double, int>> order;
  for (int i = 0; i < 8; ++i) order.push_back({scores[i / 4][i % 4], i});
  std::stable_sort(order.begin(), order.end(),
                   [](const auto& x, const auto& y) { return x.first < y.first; });
  for (int rank = 0; rank < 8; ++rank) {
    const int i = order[rank].second;
    EXPECT_EQ(a[i / 4][i % 4], rank < 2 ? 0 : 1) << "head " << i << " rank " << rank;
  }
}

}  // namespace
}  // namespace elastic
