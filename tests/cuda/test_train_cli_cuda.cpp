// `elastic train-step --backend cuda` through the real binary on the router-train-step fixture:
// every output within 2e-2 of the float64 fixture (bf16 activations and frozen weights with fp32
// accumulation: the router gradients land near 5e-3, the issue's bar is 2e-2), decisions exact.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "cli_run.h"
#include "cuda_test_util.h"
#include "elastic/safetensors.h"

namespace elastic {
namespace {

// A fresh folder TempDir()/NAME<pid> holding data.jsonl: 12 records of two tasks (qa, summary)
// about one story of 9-13 sentences, for the train-router runs below.
std::string router_data_dir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/" + name + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream f(dir + "/data.jsonl");
  for (int i = 0; i < 12; ++i) {
    std::string story = "Once upon a time, there was a girl named Lily.";
    for (int k = 0; k < 8 + i % 5; ++k) story += " The sun was warm and the sky was blue.";
    f << (i % 2 ? R"({"prompt": "Say the name of the girl. )" : R"({"prompt": "Say the name of the boy. )")
      << story << R"( Her name was", "answer": " Lily.", "task": ")" << (i % 2 ? "qa" : "summary")
      << "\"}\n";
  }
  return dir;
}

// The largest relative L2 difference, tensor by tensor, of two router checkpoints.
double router_rel_diff(const std::string& a_path, const std::string& b_path) {
  const WeightStore a = WeightStore::open(a_path), b = WeightStore::open(b_path);
  double worst = 0;
  for (const std::string& name : a.names()) {
    const std::vector<float> x = a.get(name).to_f32(), y = b.get(name).to_f32();
    double num = 0, den = 0;
    for (size_t i = 0; i < x.size(); ++i)
      num += (x[i] - y[i]) * double(x[i] - y[i]), den += double(x[i]) * x[i];
    worst = std::max(worst, std::sqrt(num) / std::max(std::sqrt(den), 1e-30));
  }
  return worst;
}

TEST(CudaTrainStepCli, BackendCudaMatchesFixture) {
  REQUIRE_GPU();
  const std::string dir = std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/router-train-step";
  const std::string out = ::testing::TempDir() + "/train_step_cuda_" + std::to_string(getpid()) +
                          ".safetensors";
  const test::CliResult r = test::cli_run(
      "train-step --backend cuda -m " + dir + " --batch " + dir +
      "/expected.safetensors --tasks 1,3 --targets 0.7,1.0 --temperature 1.3 --block 32 --sink 32 "
      "--local 96 --pool-tokens 100 --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const WeightStore got = WeightStore::open(out), want = WeightStore::open(dir + "/expected.safetensors");
  double worst = 0;
  for (const std::string& name : got.names()) {
    ASSERT_TRUE(want.contains(name)) << name;
    if (name.rfind("decisions.", 0) == 0) {
      EXPECT_EQ(got.get(name).to_i64(), want.get(name).to_i64()) << name;
      continue;
    }
    const std::vector<float> g = got.get(name).to_f32(), w = want.get(name).to_f32();
    double num = 0, den = 0;
    for (size_t i = 0; i < w.size(); ++i)
      num += (g[i] - w[i]) * double(g[i] - w[i]), den += double(w[i]) * w[i];
    const double e = std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
    EXPECT_LE(e, 2e-2) << name;
    worst = std::max(worst, e);
  }
  std::printf("  train-step --backend cuda: worst relative error %.2e over %zu outputs\n", worst,
              got.names().size());
  std::filesystem::remove(out);
}

// Resume on CUDA (issue 9, acceptance 4): 10 steps straight against 5 steps, SIGKILL during
// step 6+, --resume, 5 more. The CUDA engine sums dQ with atomics and the host router backward
// in per-thread partial sums, so two runs of the same step differ in the last bits of fp32; the
// router weights and the per-step losses must agree within 1e-3 relative (the drift of ten
// AdamW steps on bf16-rounded activations, ~100x the run-to-run spread seen), the decisions and
// the data order exactly.
TEST(CudaTrainRouterCli, KillNineAndResumeMatchesStraightRun) {
  REQUIRE_GPU();
  const std::string shared = ELASTIC_SHARED_DIR;
  const std::string dir = router_data_dir("train_resume_cuda_");
  auto args = [&](const std::string& out) {
    return "train-router --backend cuda -m " + shared + "/data/tinystories-656k --data " + dir +
           "/data.jsonl --out " + out + " --steps 10 --batch 2 --max-tokens 400 --lr 2e-3 "
           "--save-every 5 --block 32 --sink 32 --local 64 --pool-tokens 16 --seed 3";
  };
  const test::CliResult straight = test::cli_run(args(dir + "/straight"));
  ASSERT_EQ(straight.exit_code, 0) << straight.err;
  const pid_t pid = fork();
  if (pid == 0) {
    const std::string cmd = "exec " + std::string(ELASTIC_BIN_DIR) + "/elastic " + args(dir + "/killed") +
                            " >/dev/null 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  auto lines = [](const std::string& p) {
    std::ifstream f(p);
    int n = 0;
    std::string l;
    while (std::getline(f, l)) n += !l.empty();
    return n;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
  while (lines(dir + "/killed/metrics.jsonl") < 6 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run ended before it was killed";
  const test::CliResult resumed = test::cli_run(args(dir + "/killed") + " --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  const double worst =
      router_rel_diff(dir + "/straight/router.safetensors", dir + "/killed/router.safetensors");
  EXPECT_LE(worst, 1e-3);
  std::ifstream ma(dir + "/straight/metrics.jsonl"), mb(dir + "/killed/metrics.jsonl");
  std::string la, lb;
  int steps = 0;
  double worst_loss = 0;
  while (std::getline(ma, la) && std::getline(mb, lb)) {
    const nlohmann::json ja = nlohmann::json::parse(la), jb = nlohmann::json::parse(lb);
    EXPECT_EQ(ja["step"], jb["step"]);
    EXPECT_EQ(ja["tokens"], jb["tokens"]);  // the same packs
    EXPECT_EQ(ja["omega"], jb["omega"]);    // the same decisions
    worst_loss = std::max(worst_loss, std::fabs(ja["loss"].get<double>() - jb["loss"].get<double>()) /
                                          std::fabs(ja["loss"].get<double>()));
    ++steps;
  }
  EXPECT_EQ(steps, 10);
  EXPECT_LE(worst_loss, 1e-3);
  std::printf("  CUDA resume: router weights differ by %.2e relative, losses by %.2e\n", worst,
              worst_loss);
}

// Issue 14, acceptance 1: world size 1 through the NCCL path (`--dp-comm nccl`: the router
// gradient goes to the GPU, through ncclAllReduce and back every step) gives the plain path's
// loss curve and checkpoint. On the CPU engine (deterministic) bit for bit: an all-reduce of one
// rank must return its input unchanged. On the CUDA engine within the run-to-run spread of its
// atomics (1e-3 relative, as the resume test above).
TEST(CudaTrainRouterCli, NcclWorldOneMatchesThePlainPath) {
  REQUIRE_GPU();
#ifndef ELASTIC_HAVE_NCCL
  GTEST_SKIP() << "this build found no NCCL in the CUDA toolkit";
#endif
  const std::string shared = ELASTIC_SHARED_DIR;
  const std::string dir = router_data_dir("train_nccl_");
  auto run = [&](const std::string& backend, const std::string& out, const std::string& extra) {
    const test::CliResult r = test::cli_run(
        "train-router --backend " + backend + " -m " + shared + "/data/tinystories-656k --data " +
        dir + "/data.jsonl --out " + dir + "/" + out + " --steps 6 --batch 2 --max-tokens 400 " +
        "--lr 2e-3 --save-every 3 --block 32 --sink 32 --local 64 --pool-tokens 16 --seed 3 " + extra);
    EXPECT_EQ(r.exit_code, 0) << r.err;
  };
  auto slurp = [&](const std::string& p) {
    std::ifstream f(dir + "/" + p);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  run("cpu", "cpu_plain", "");
  run("cpu", "cpu_nccl", "--dp-comm nccl");
  EXPECT_EQ(slurp("cpu_plain/router.safetensors"), slurp("cpu_nccl/router.safetensors"));
  // The losses and the rest of each metrics line; the step time differs.
  std::ifstream ma(dir + "/cpu_plain/metrics.jsonl"), mb(dir + "/cpu_nccl/metrics.jsonl");
  std::string la, lb;
  int steps = 0;
  while (std::getline(ma, la) && std::getline(mb, lb)) {
    nlohmann::json ja = nlohmann::json::parse(la), jb = nlohmann::json::parse(lb);
    EXPECT_EQ(ja["loss"], jb["loss"]);
    EXPECT_EQ(ja["grad_norm"], jb["grad_norm"]);
    EXPECT_EQ(ja["omega"], jb["omega"]);
    ++steps;
  }
  EXPECT_EQ(steps, 6);
  run("cuda", "cuda_plain", "");
  run("cuda", "cuda_nccl", "--dp-comm nccl");
  const double cuda_rel = router_rel_diff(dir + "/cuda_plain/router.safetensors",
                                          dir + "/cuda_nccl/router.safetensors");
  EXPECT_LE(cuda_rel, 1e-3);
  std::printf("  world size 1 through NCCL: CPU engine bitwise equal over %d steps; CUDA engine "
              "router weights %.2e relative\n",
              steps, cuda_rel);
}

}  // namespace
}  // namespace elastic
