// The model commands end to end: `elastic logits` writes HF-matching logits and hidden states,
// `elastic generate --json` prints HF's greedy continuation, and bad options fail with one line.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "elastic/safetensors.h"
#include "model_test_util.h"

namespace elastic {
namespace {

struct RunResult {
  int exit_code = -1;
  std::string out;  // stdout + stderr
};

RunResult run(const std::string& args) {
  // stderr joins stdout first, so an args' own "2>/dev/null" (later, so it wins) keeps the
  // progress lines out of a JSON answer.
  const std::string cmd = std::string(ELASTIC_BIN_DIR) + "/elastic 2>&1 " + args;
  RunResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string ids_arg(const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t t : ids) {
    if (!s.empty()) s += ' ';
    s += std::to_string(t);
  }
  return "\"" + s + "\"";
}

TEST(Cli, LogitsWritesHfMatchingLogitsAndHidden) {
  const std::string dir = test::fixture_dir("hf/qwen3-tiny");
  WeightStore e = WeightStore::open(dir + "/expected.safetensors");
  const std::vector<int64_t> ids = e.get("input_ids.37").to_i64();
  const std::string out = (std::filesystem::temp_directory_path() /
                           ("elastic_cli_logits_" + std::to_string(getpid()) + ".safetensors"))
                              .string();
  const RunResult r = run("logits -m " + dir + " --input-ids " + ids_arg(ids) + " --out " + out +
                          " --hidden -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  WeightStore got = WeightStore::open(out);
  const TensorView logits = got.get("logits");
  EXPECT_EQ(logits.dtype, DType::f32);
  EXPECT_EQ(logits.shape, (Shape{37, 1024}));
  // HF float64 reference vs fp32 engine: see golden_test.cpp for the 1e-4 bound.
  EXPECT_LT(test::relative_error(logits.to_f32(), e.get("logits.37").to_f32()), 1e-4);
  for (int i = 0; i <= 3; ++i) {
    const TensorView h = got.get("hidden." + std::to_string(i));
    EXPECT_EQ(h.shape, (Shape{37, 192}));
    EXPECT_LT(test::relative_error(h.to_f32(), e.get("hidden.37." + std::to_string(i)).to_f32()), 1e-4);
  }
  EXPECT_FALSE(got.contains("hidden.4"));
  std::filesystem::remove(out);
}

TEST(Cli, GenerateJsonPrintsHfGreedyIds) {
  const std::string dir = test::fixture_dir("hf/llama3-tiny");
  WeightStore e = WeightStore::open(dir + "/expected.safetensors");
  const std::vector<int64_t> ids = e.get("input_ids.29").to_i64();
  const RunResult r = run("generate -m " + dir + " --input-ids " + ids_arg(ids) + " -n 8 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["generated_ids"].get<std::vector<int64_t>>(), e.get("greedy_ids.29").to_i64());
  EXPECT_EQ(j["prompt_tokens"], 29);
}

// --decode-kv reaches the request (full keeps every head's whole cache: KV ratio 1), and the
// JSON report and policy line say which one ran; bounded is the default.
TEST(Cli, GenerateReportsDecodeKv) {
  const std::string dir = test::fixture_dir("hf/elastic-qwen3-fa-ssa");
  std::vector<int64_t> ids =
      WeightStore::open(dir + "/expected.safetensors").get("input_ids").to_i64();
  ids.resize(300);  // > sink + window (32 + 96 with the case's sizes)
  const std::string base = "generate -m " + dir + " --input-ids " + ids_arg(ids) +
                           " --block 32 --sink 32 --local 96 -n 4 --json";
  for (const std::string mode : {"", "bounded", "full"}) {
    const RunResult r = run(base + (mode.empty() ? "" : " --decode-kv " + mode) + " 2>/dev/null");
    ASSERT_EQ(r.exit_code, 0) << r.out;
    const nlohmann::json j = nlohmann::json::parse(r.out);
    const std::string want = mode.empty() ? "bounded" : mode;
    EXPECT_EQ(j["report"]["decode_kv"].get<std::string>(), want);
    EXPECT_NE(j["policy"].get<std::string>().find("decode KV " + want), std::string::npos)
        << j["policy"];
    EXPECT_GT(j["report"]["omega_msr"].get<double>(), 0.0) << "the router routes some heads to SSA";
    if (want == "full")
      EXPECT_EQ(j["report"]["kv_cache_ratio"].get<double>(), 1.0);
    else
      EXPECT_LT(j["report"]["kv_cache_ratio"].get<double>(), 1.0);
  }
  const RunResult bad = run(base + " --decode-kv window");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(std::count(bad.out.begin(), bad.out.end(), '\n'), 1) << bad.out;
  EXPECT_NE(bad.out.find("--decode-kv"), std::string::npos) << bad.out;
}

TEST(Cli, BadInputFailsWithOneLine) {
  const std::string dir = test::fixture_dir("hf/qwen3-tiny");
  for (const std::string& args : std::vector<std::string>
       {"logits -m " + dir + " --input-ids \"1 x 3\" --out /tmp/never.safetensors",
        "logits -m " + dir + " --input-ids \"1 99999\" --out /tmp/never.safetensors",
        "generate -m " + dir + " --input-ids 1 --top-p 0",
        "generate -m " + dir + " --input-ids 1 --bogus", "generate --input-ids 1",
        "bench --synthetic no-such-model"}) {
    const RunResult r = run(args);
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << args << ": " << r.out;
    EXPECT_EQ(r.out.rfind("elastic ", 0), 0u) << r.out;
  }
  EXPECT_FALSE(std::filesystem::exists("/tmp/never.safetensors"));
}

TEST(Cli, BenchJsonReportsBothPhasesAndFractions) {
  // --step-bandwidth on: the tiny model fits in the caches, so auto would not pair the steps.
  const RunResult r = run("bench --synthetic qwen3-tiny -p 16 -n 4 -r 1 --step-bandwidth on --json 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const nlohmann::json j = nlohmann::json::parse(r.out.substr(r.out.find('{')));
  EXPECT_TRUE(j["synthetic"].get<bool>());
  EXPECT_EQ(j["prefill"]["tokens"], 16);
  EXPECT_EQ(j["decode"]["tokens"], 4);
  EXPECT_GT(j["memory_bandwidth_gbs"].get<double>(), 0);
  EXPECT_GT(j["fma_peak_gflops"].get<double>(), 0);
  for (const char* phase : {"prefill", "decode"}) {
    EXPECT_GT(j[phase]["tokens_per_s"].get<double>(), 0) << phase;
    EXPECT_GT(j[phase]["seconds"].get<double>(), 0) << phase;
  }
  // Work accounting of the tiny shape: 3 layers x (q/k/v/o + MLP) + tied lm_head.
  const int64_t D = 192, qd = 4 * 64, kvd = 2 * 64, F = 512, V = 1024;
  EXPECT_EQ(j["params_matmul"], 3 * (D * (qd + 2 * kvd) + qd * D + 3 * D * F) + V * D);
  const double fp = j["prefill"]["fraction_of_fma_peak"], fd = j["decode"]["fraction_of_bandwidth"];
  EXPECT_GT(fp, 0);
  EXPECT_GT(fd, 0);
  // Decode fraction: the median over steps of bytes / time / the bandwidth sampled after the
  // step; the run's bandwidth is the best sample, so no step's sample exceeds it.
  const std::vector<double> s = j["decode"]["step_seconds"], b = j["decode"]["step_bytes"],
                            bw = j["decode"]["step_bandwidth_gbs"];
  ASSERT_EQ(s.size(), 4u);
  ASSERT_EQ(b.size(), 4u);
  ASSERT_EQ(bw.size(), 4u);
  std::vector<double> f;
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_LE(bw[i], j["memory_bandwidth_gbs"].get<double>());
    EXPECT_GT(b[i], 0);
    f.push_back(b[i] / s[i] / 1e9 / bw[i]);
  }
  std::sort(f.begin(), f.end());
  EXPECT_NEAR(fd, 0.5 * (f[1] + f[2]), 1e-9 * fd);  // same doubles, same arithmetic
  EXPECT_GT(j["decode"]["fraction_of_best_bandwidth"].get<double>(), 0);
  EXPECT_TRUE(j["decode"]["steps_paired"].get<bool>());
}

TEST(Cli, BenchSmallModelIsNotPairedWithBandwidthSamples) {
  const RunResult r = run("bench --synthetic qwen3-tiny -p 8 -n 3 -r 1 --json 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const nlohmann::json j = nlohmann::json::parse(r.out.substr(r.out.find('{')));
  EXPECT_FALSE(j["decode"]["steps_paired"].get<bool>());  // 0.3 MB per step: in the caches
  EXPECT_TRUE(j["decode"]["step_bandwidth_gbs"].empty());
  EXPECT_EQ(j["decode"]["fraction_of_bandwidth"].get<double>(),
            j["decode"]["fraction_of_best_bandwidth"].get<double>());
  const RunResult bad = run("bench --synthetic qwen3-tiny --step-bandwidth sometimes 2>&1");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.out.find("--step-bandwidth: expected auto, on or off"), std::string::npos) << bad.out;
}

TEST(Cli, HelpExplainsTheOptions) {
  for (const char* cmd : {"logits", "generate", "bench"}) {
    const RunResult r = run(std::string(cmd) + " --help");
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_NE(r.out.find("usage: elastic " + std::string(cmd)), std::string::npos) << r.out;
  }
}

}  // namespace
}  // namespace elastic
