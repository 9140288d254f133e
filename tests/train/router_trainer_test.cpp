// The router-training loop on the real TinyStories model (CPU): determinism, resume equals a
// straight run, and bad input (data, task files, resume states) as one clear error that leaves
// what was written intact.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "elastic/error.h"
#include "elastic/fileio.h"
#include "elastic/safetensors.h"
#include "elastic/train.h"

namespace elastic {
namespace {

namespace fs = std::filesystem;
const std::string kModel = std::string(ELASTIC_SHARED_DIR) + "/data/tinystories-656k";

std::string temp_dir(const std::string& name) {
  const fs::path p =
      fs::path(::testing::TempDir()) / ("router_trainer_" + std::to_string(getpid()) + "_" + name);
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

void expect_error(const RouterTrainConfig& c, const std::string& needle);

// Data parallelism (issue 14): W ranks as threads, each with its own engine, run packs r, r + W,
// ... of every step and all-reduce the router gradient before the same AdamW step; the Gumbel
// noise is keyed by sample, not rank. W = 2 and 4 give W = 1's router and multipliers up to the
// order of the gradient sums (fp32: ~1e-7 relative per add, which Adam's normalisation and 6
// steps can amplify where a gradient is near zero; the bound is far below the run's own change
// of the router: skipping the all-reduce, which leaves rank 0 a part of the gradient, gives ~9e-3).
// The state holds no world size: a run interrupted at W = 2 resumes at W = 1.
TEST(RouterTrainer, DataParallelRanksGiveOneRanksCheckpoint) {
  const std::string dir = temp_dir("dp");
  const std::string data = toy_data(dir, 16);
  auto run = [&](int world) {
    RouterTrainConfig c = toy_config(dir, data);
    c.out_dir = dir + "/dp" + std::to_string(world);
    c.batch = 4;  // 4 packs a step: 2 or 1 a rank
    c.max_tokens = 200;
    c.data_parallel = world;
    std::vector<double> losses;
    RouterTrainCallbacks cb;
    cb.on_step = [&](const RouterTrainMetrics& m) { losses.push_back(m.loss); };
    EXPECT_EQ(router_train_run(c, cb), TrainStatus::finished);
    return std::pair{c.out_dir, losses};
  };
  const auto [one, loss1] = run(1);
  const auto start = SafetensorsFile::open(one + "/router.safetensors");
  for (int world : {2, 4}) {
    SCOPED_TRACE("dp " + std::to_string(world));
    const auto [many, loss_w] = run(world);
    ASSERT_EQ(loss_w.size(), loss1.size());
    for (size_t i = 0; i < loss1.size(); ++i)
      EXPECT_NEAR(loss_w[i], loss1[i], 1e-5 * std::fabs(loss1[i]) + 1e-6);
    const auto a = SafetensorsFile::open(one + "/router.safetensors");
    const auto b = SafetensorsFile::open(many + "/router.safetensors");
    ASSERT_EQ(a->entries().size(), b->entries().size());
    double err = 0, ref = 0;
    for (const SafetensorsEntry& e : a->entries()) {
      const std::vector<float> x = a->get(e.name).to_f32(), y = b->get(e.name).to_f32();
      ASSERT_EQ(x.size(), y.size()) << e.name;
      for (size_t i = 0; i < x.size(); ++i) {
        err = std::max(err, double(std::fabs(x[i] - y[i])));
        ref = std::max(ref, double(std::fabs(x[i])));
      }
    }
    std::printf("  dp %d: router max-abs diff %.2e (max |w| %.2e) after 6 steps\n", world, err,
                ref);
    EXPECT_LT(err, 1e-4 * ref);
    // The multipliers and the step counter of the state are the same run's.
    const std::string m1 = slurp(one + "/metrics.jsonl"), mw = slurp(many + "/metrics.jsonl");
    EXPECT_EQ(std::count(m1.begin(), m1.end(), '\n'), std::count(mw.begin(), mw.end(), '\n'));
  }
  {
    RouterTrainConfig c = toy_config(dir, data);
    c.out_dir = dir + "/dp2then1";
    c.batch = 4;
    c.max_tokens = 200;
    c.data_parallel = 2;
    int done = 0;
    RouterTrainCallbacks stop_at_4;
    stop_at_4.on_step = [&](const RouterTrainMetrics&) { ++done; };
    stop_at_4.should_stop = [&] { return done == 4; };
    ASSERT_EQ(router_train_run(c, stop_at_4), TrainStatus::interrupted);
    c.data_parallel = 1;
    c.resume = true;
    ASSERT_EQ(router_train_run(c), TrainStatus::finished);
    const auto a = SafetensorsFile::open(one + "/router.safetensors");
    const auto b = SafetensorsFile::open(c.out_dir + "/router.safetensors");
    double err = 0;
    for (const SafetensorsEntry& e : a->entries()) {
      const std::vector<float> x = a->get(e.name).to_f32(), y = b->get(e.name).to_f32();
      for (size_t i = 0; i < x.size(); ++i) err = std::max(err, double(std::fabs(x[i] - y[i])));
    }
    EXPECT_LT(err, 1e-4);
  }
  RouterTrainConfig bogus = toy_config(dir, data);
  bogus.comm = "bogus";
  expect_error(bogus, "communicator 'bogus' is not in this build (known: threads");
  RouterTrainConfig gpu = toy_config(dir, data);
  gpu.data_parallel = 2;
  gpu.backend = "cuda";
  expect_error(gpu, "--dp 2 runs its ranks as threads");
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
