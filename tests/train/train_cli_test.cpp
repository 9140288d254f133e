// elastic train-step and train-router through the real binary: the fixture step's outputs, a run
// killed with SIGKILL and resumed equals a straight run (issue 9, acceptance 4), and bad input as
// one clear error line with a non-zero exit that leaves what was written intact (acceptance 7).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "cli_run.h"
#include "elastic/fileio.h"
#include "elastic/safetensors.h"

namespace elastic {
namespace {

namespace fs = std::filesystem;
const std::string kShared = ELASTIC_SHARED_DIR;
const std::string kStepCase = kShared + "/fixtures/hf/router-train-step";
const std::string kModel = kShared + "/data/tinystories-656k";
const std::string kBin = std::string(ELASTIC_BIN_DIR) + "/elastic";

std::string temp_dir(const std::string& name) {
  const fs::path p =
      fs::path(::testing::TempDir()) / ("train_cli_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

TEST(TrainStepCli, WritesEveryFixtureOutputWithin1e4) {
  const std::string out = temp_dir("step") + "/grads.safetensors";
  const test::CliResult r = test::cli_run(
      "train-step -m " + kStepCase + " --batch " + kStepCase +
      "/expected.safetensors --tasks 1,3 --targets 0.7,1.0 --temperature 1.3 --block 32 --sink 32 "
      "--local 96 --pool-tokens 100 --out " +
      out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("loss 7.378"), std::string::npos) << r.out;
  const WeightStore got = WeightStore::open(out),
                    want = WeightStore::open(kStepCase + "/expected.safetensors");
  int compared = 0;
  for (const std::string& name : got.names()) {
    ASSERT_TRUE(want.contains(name)) << name;
    if (name.rfind("decisions.", 0) == 0) {
      EXPECT_EQ(got.get(name).to_i64(), want.get(name).to_i64()) << name;
    } else {
      const std::vector<float> g = got.get(name).to_f32(), w = want.get(name).to_f32();
      double num = 0, den = 0;
      for (size_t i = 0; i < w.size(); ++i)
        num += (g[i] - w[i]) * double(g[i] - w[i]), den += double(w[i]) * w[i];
      EXPECT_LE(std::sqrt(num) / std::max(std::sqrt(den), 1e-30), 1e-4) << name;
    }
    ++compared;
  }
  EXPECT_EQ(compared, 39);
}

// Toy data (two tasks, ~150-token stories) for short runs.
std::string toy_data(const std::string& dir, int n) {
  const std::string path = dir + "/data.jsonl";
  std::ofstream f(path);
  for (int i = 0; i < n; ++i) {
    std::string story = "Once upon a time, there was a girl named Lily.";
    for (int k = 0; k < 8 + i % 5; ++k) story += " The sun was warm and the sky was blue.";
    f << (i % 2 ? R"({"prompt": "Say the name of the girl. )"
                : R"({"prompt": "Say the name of the boy. )")
      << story << R"( Her name was", "answer": " Lily.", "task": ")" << (i % 2 ? "qa" : "summary")
      << "\"}\n";
  }
  return path;
}

std::string train_args(const std::string& data, const std::string& out, int steps) {
  return "train-router -m " + kModel + " --data " + data + " --out " + out + " --steps " +
         std::to_string(steps) +
         " --batch 2 --max-tokens 400 --lr 2e-3 --save-every 5 --block 32 "
         "--sink 32 --local 64 --pool-tokens 16 --seed 3 -t 1";
}

// Starts `elastic ARGS` and returns its pid (stdout/stderr to files in dir).
pid_t spawn(const std::string& args, const std::string& dir) {
  const pid_t pid = fork();
  if (pid == 0) {
    const std::string cmd =
        "exec " + kBin + " " + args + " >" + dir + "/stdout 2>" + dir + "/stderr";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

int lines_of(const std::string& path) {
  std::ifstream f(path);
  int n = 0;
  std::string line;
  while (std::getline(f, line)) n += !line.empty();
  return n;
}

TEST(TrainRouterCli, KillNineAndResumeEqualsStraightRun) {
  const std::string dir = temp_dir("kill");
  const std::string data = toy_data(dir, 12);
  const test::CliResult straight = test::cli_run(train_args(data, dir + "/straight", 10));
  ASSERT_EQ(straight.exit_code, 0) << straight.err;

  // Kill -9 once step 6 is in the metrics (the checkpoint of step 5 is on disk, the run is past
  // it), then resume.
  const pid_t pid = spawn(train_args(data, dir + "/killed", 10), dir);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  while (lines_of(dir + "/killed/metrics.jsonl") < 6 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run ended before it was killed";
  const test::CliResult resumed =
      test::cli_run(train_args(data, dir + "/killed", 10) + " --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("resuming at step 5"), std::string::npos) << resumed.err;
  for (const char* f : {"router.safetensors", "train_state.safetensors", "metrics.jsonl"})
    EXPECT_EQ(read_file(dir + "/straight/" + f), read_file(dir + "/killed/" + f)) << f;
  for (const fs::directory_entry& e : fs::directory_iterator(dir + "/killed"))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos)
        << "temporary file left: " << e.path();
}

TEST(TrainRouterCli, SigtermSavesAndExitsWithTheSignal) {
  const std::string dir = temp_dir("term");
  const std::string data = toy_data(dir, 8);
  const pid_t pid = spawn(train_args(data, dir + "/out", 1000), dir);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  while (lines_of(dir + "/out/metrics.jsonl") < 2 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM);
  EXPECT_NE(read_file(dir + "/stderr").find("resume with --resume"), std::string::npos);
  // The state saved on the signal holds the last finished step.
  const auto state = SafetensorsFile::open(dir + "/out/train_state.safetensors");
  const std::string meta = state->metadata().at("elastic_train_state");
  EXPECT_NE(meta.find("\"step\":" + std::to_string(lines_of(dir + "/out/metrics.jsonl"))),
            std::string::npos)
      << meta;
}

// One line on stderr naming the problem, exit code 1.
void expect_clean_error(const test::CliResult& r, const std::string& needle) {
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(TrainRouterCli, BadInputIsOneClearErrorAndKeepsWhatWasWritten) {
  const std::string dir = temp_dir("bad");
  const std::string data = dir + "/d.jsonl";
  const std::string out = dir + "/out";
  const std::pair<std::string, std::string> cases[] = {
      {"{\"prompt\": \"a b\", \"answer\": \"c\", \"task\": \"qa\"}\n[1, 2\n",
       "d.jsonl:2: not valid JSON"},
      {"{\"prompt\": \"a b\", \"answer\": \"c\", \"task\": \"poems\"}\n",
       "d.jsonl:1: unknown task \"poems\""},
      {"{\"prompt\": \"a b\", \"answer\": \"\", \"task\": \"qa\"}\n",
       "d.jsonl:1: the answer is empty"},
  };
  for (const auto& [text, needle] : cases) {
    std::ofstream(data) << text;
    expect_clean_error(test::cli_run(train_args(data, out, 2)), needle);
  }
  std::string long_prompt;
  for (int i = 0; i < 600; ++i) long_prompt += "the dog ";
  std::ofstream(data) << "{\"prompt\": \"" << long_prompt
                      << "\", \"answer\": \"c\", \"task\": \"qa\"}\n";
  expect_clean_error(test::cli_run(train_args(data, out, 2)), "more than --max-tokens 400");

  // A finished run; everything below must leave its files as they are.
  toy_data(dir, 6);
  const std::string good = dir + "/data.jsonl";
  ASSERT_EQ(test::cli_run(train_args(good, out, 2)).exit_code, 0);
  const std::string state = read_file(out + "/train_state.safetensors");
  const std::string router = read_file(out + "/router.safetensors");
  expect_clean_error(test::cli_run(train_args(good, out, 2)), "already holds a training run");
  // A checkpoint of another model shape: the fixture's 3-layer Qwen3 checkpoint (with the
  // TinyStories tokenizer beside it) resuming this run of a d = 16 model.
  const std::string other = dir + "/other-model";
  fs::create_directories(other);
  for (const char* f : {"config.json", "model.safetensors"})
    fs::create_symlink(kStepCase + "/" + f, other + "/" + f);
  fs::create_symlink(kModel + "/tokenizer.json", other + "/tokenizer.json");
  expect_clean_error(
      test::cli_run("train-router -m " + other + " --data " + good + " --out " + out +
                    " --steps 2 --batch 2 --max-tokens 400 --save-every 5 --block 32 --sink 32 "
                    "--local 64 --pool-tokens 16 --seed 3 --resume"),
      "the saved run has head_dim = 16, this run 64");
  // A state whose router tensors are missing.
  const std::string broken = dir + "/broken";
  fs::create_directories(broken);
  for (const fs::directory_entry& e : fs::directory_iterator(out))
    fs::copy_file(e.path(), broken + "/" + e.path().filename().string());
  {
    const auto f = SafetensorsFile::open(out + "/train_state.safetensors");
    std::vector<SafetensorsWriteItem> items;
    for (const SafetensorsEntry& e : f->entries()) {
      if (e.name.rfind("router.", 0) == 0) continue;
      const TensorView t = f->get(e.name);
      SafetensorsWriteItem it{e.name, t.dtype, t.shape, {}};
      const auto* b = static_cast<const unsigned char*>(t.data);
      it.bytes.assign(b, b + t.nbytes());
      items.push_back(std::move(it));
    }
    safetensors_write(broken + "/train_state.safetensors", items, f->metadata());
  }
  expect_clean_error(test::cli_run(train_args(good, broken, 2) + " --resume"),
                     "is missing (a router checkpoint to resume needs it)");
  EXPECT_EQ(read_file(out + "/train_state.safetensors"), state);
  EXPECT_EQ(read_file(out + "/router.safetensors"), router);
  expect_clean_error(test::cli_run(train_args(good, out, 2) + " --lr nan"), "--lr");
  expect_clean_error(test::cli_run("train-router -m " + kModel + " --out " + out),
                     "missing --data");
}

// `elastic train`: a shape option with --init-from or --resume is an error naming the option
// (the shape comes from the model continued), not silently ignored.
TEST(PretrainCli, ShapeOptionsOnlyForFreshRuns) {
  const std::string model = std::string(ELASTIC_SHARED_DIR) + "/data/tinystories-656k";
  test::CliResult r =
      test::cli_run("train --out /nonexistent/x --init-from " + model + " --layers 2");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "elastic train: error: option --layers: the shape comes from --init-from " +
                       model + " (leave the shape options out)\n");
  r = test::cli_run("train --out /nonexistent/x --resume --rope-theta 10000");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("option --rope-theta: the shape comes from the run in --out"),
            std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace elastic
