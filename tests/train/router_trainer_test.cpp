// The router-training loop on the real TinyStories model (CPU): determinism, resume equals a
// straight run, and bad input (data, task files, resume states) as one clear error that leaves
// what was written intact.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "elastic/error.h"
#include "elastic/fileio.h"
#include "elastic/train.h"

namespace elastic {
namespace {

namespace fs = std::filesystem;
const std::string kModel = std::string(ELASTIC_SHARED_DIR) + "/data/tinystories-656k";

std::string temp_dir(const std::string& name) {
  const fs::path p = fs::path(::testing::TempDir()) / ("router_trainer_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

// Two tasks told apart by the instruction; stories long enough (~150 tokens) that SSA with a
// 64-token window differs from FA.
std::string toy_data(const std::string& dir, int n) {
  const std::string path = dir + "/data.jsonl";
  std::ofstream f(path);
  const char* names[] = {"Lily", "Tom", "Ben", "Mia"};
  const char* things[] = {"ball", "kite", "doll", "boat"};
  for (int i = 0; i < n; ++i) {
    std::string story = std::string("Once upon a time, there was a child named ") + names[i % 4] +
                        ". " + names[i % 4] + " loved to play with a " + things[(i / 4) % 4] + ".";
    for (int k = 0; k < 8 + i % 5; ++k) story += " The sun was warm and the sky was blue.";
    if (i % 2 == 0)
      f << R"({"prompt": "Read the story and answer the question. )" << story
        << R"( Question: What did the child play with? Answer:", "answer": " a )"
        << things[(i / 4) % 4] << R"(.", "task": "qa"})"
        << "\n";
    else
      f << R"({"prompt": "Write a one-line summary of the story. )" << story
        << R"( Summary:", "answer": " A child played.", "task": "summary"})"
        << "\n";
  }
  return path;
}

RouterTrainConfig toy_config(const std::string& dir, const std::string& data) {
  RouterTrainConfig c;
  c.model_dir = kModel;
  c.data_path = data;
  c.out_dir = dir + "/out";
  c.steps = 6;
  c.batch = 2;
  c.max_tokens = 400;
  c.lr = 2e-3;
  c.save_every = 3;
  c.ssa.block = 32;
  c.ssa.sink_tokens = 32;
  c.ssa.local_tokens = 64;
  c.seed = 7;
  return c;
}

std::string slurp(const std::string& p) { return read_file(p); }

TEST(RouterTrainer, ResumeAfterInterruptEqualsStraightRun) {
  const std::string dir = temp_dir("resume");
  const std::string data = toy_data(dir, 12);
  RouterTrainConfig straight = toy_config(dir, data);
  straight.out_dir = dir + "/straight";
  int steps_seen = 0;
  RouterTrainCallbacks cb;
  cb.on_step = [&](const RouterTrainMetrics& m) {
    ++steps_seen;
    EXPECT_TRUE(std::isfinite(m.loss));
    EXPECT_EQ(m.tasks.size(), 10u);  // the default task table
  };
  ASSERT_EQ(router_train_run(straight, cb), TrainStatus::finished);
  EXPECT_EQ(steps_seen, 6);

  RouterTrainConfig split = toy_config(dir, data);
  split.out_dir = dir + "/split";
  RouterTrainCallbacks stop_at_4;
  int done = 0;
  stop_at_4.on_step = [&](const RouterTrainMetrics&) { ++done; };
  stop_at_4.should_stop = [&] { return done == 4; };  // not a save_every multiple
  ASSERT_EQ(router_train_run(split, stop_at_4), TrainStatus::interrupted);
  split.resume = true;
  ASSERT_EQ(router_train_run(split), TrainStatus::finished);

  for (const char* f : {"router.safetensors", "train_state.safetensors", "metrics.jsonl",
                        "config.json", "model.safetensors.index.json"})
    EXPECT_EQ(slurp(straight.out_dir + "/" + f), slurp(split.out_dir + "/" + f)) << f;
  // The training figure exists and is a PNG (the plot module's own tests check its pixels).
  const std::string png = slurp(straight.out_dir + "/curves.png");
  ASSERT_GT(png.size(), 8u);
  EXPECT_EQ(png.substr(1, 3), "PNG");
  // The export loads as an Elastic checkpoint and routes a held-out prompt.
  const std::string heldout = dir + "/heldout.jsonl";
  std::ofstream(heldout)
      << R"({"prompt": "Write a one-line summary of the story. A dog ran.", "answer": "x", "task": "summary"})"
      << "\n";
  const RouterEval ev = router_eval_omega(straight.out_dir, heldout);
  ASSERT_EQ(ev.tasks.size(), 1u);
  EXPECT_EQ(ev.tasks[0].n, 1);
  ASSERT_EQ(ev.samples.size(), 1u);
  EXPECT_EQ(ev.samples[0].decisions.size(), 8u);  // 2 layers x 4 KV heads
  EXPECT_GE(ev.tasks[0].omega_msr, 0.0);
  EXPECT_LE(ev.tasks[0].omega_msr, 1.0);
}

void expect_error(const RouterTrainConfig& c, const std::string& needle) {
  try {
    router_train_run(c);
    ADD_FAILURE() << "expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(RouterTrainer, BadDataNamesTheLine) {
  const std::string dir = temp_dir("baddata");
  RouterTrainConfig c = toy_config(dir, dir + "/d.jsonl");
  const std::pair<std::string, std::string> cases[] = {
      {"{\"prompt\": \"a\", \"answer\": \"b\", \"task\": \"qa\"}\n{not json\n",
       "d.jsonl:2: not valid JSON"},
      {"{\"prompt\": \"a\", \"answer\": \"b\", \"task\": \"poetry\"}\n",
       "d.jsonl:1: unknown task \"poetry\""},
      {"{\"prompt\": \"a\", \"answer\": \"  \", \"task\": \"qa\"}\n",
       "d.jsonl:1: the answer is empty"},
      {"{\"prompt\": \"a\", \"task\": \"qa\"}\n", "d.jsonl:1: missing field \"answer\""},
      {"{\"prompt\": 3, \"answer\": \"b\", \"task\": \"qa\"}\n",
       "field \"prompt\" must be a string"},
      {"\n\n", "no records"},
  };
  for (const auto& [text, needle] : cases) {
    std::ofstream(c.data_path) << text;
    expect_error(c, needle);
  }
  std::string longp(3000, 'a');
  for (size_t i = 1; i < longp.size(); i += 2) longp[i] = ' ';
  std::ofstream(c.data_path) << "{\"prompt\": \"" << longp
                             << "\", \"answer\": \"b\", \"task\": \"qa\"}\n";
  expect_error(c, "more than --max-tokens 400");
  EXPECT_FALSE(fs::exists(c.out_dir + "/train_state.safetensors"));  // nothing started
}

TEST(RouterTrainer, ResumeRefusesAnotherRunAndKeepsFiles) {
  const std::string dir = temp_dir("badresume");
  RouterTrainConfig c = toy_config(dir, toy_data(dir, 6));
  c.steps = 2;
  c.save_every = 1;
  ASSERT_EQ(router_train_run(c), TrainStatus::finished);
  const std::string state = slurp(c.out_dir + "/train_state.safetensors");
  const std::string metrics = slurp(c.out_dir + "/metrics.jsonl");
  expect_error(c, "already holds a training run");  // no --resume
  RouterTrainConfig other = c;
  other.resume = true;
  other.max_tokens = 500;  // another run shape
  expect_error(other, "max_tokens");
  RouterTrainConfig fresh = c;
  fresh.out_dir = dir + "/empty";
  fresh.resume = true;
  expect_error(fresh, "holds no training state");
  // A state whose router tensors are missing.
  RouterTrainConfig broken = c;
  broken.resume = true;
  const std::string tasks = dir + "/tasks.json";
  EXPECT_EQ(slurp(c.out_dir + "/train_state.safetensors"), state);
  EXPECT_EQ(slurp(c.out_dir + "/metrics.jsonl"), metrics);
  std::ofstream(tasks) << "{\"qa\": 1.5}";
  RouterTrainConfig bad_targets = c;
  bad_targets.out_dir = dir + "/bt";
  bad_targets.task_targets = tasks;
  expect_error(bad_targets, "target must be a number in [0, 1]");
}

}  // namespace
}  // namespace elastic
