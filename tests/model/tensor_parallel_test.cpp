// Tensor parallelism on the CPU (issue 14's sharding logic): W ranks as threads of one process,
// each an ordinary Model of Hq/W, Hkv/W and F/W whose o_proj and down_proj outputs are
// all-reduced, against the whole model: the same logits for a prompt and its decode steps (fp32:
// only the order of the sums differs), the same routing decisions and Omega for a trained
// router and for a static head list, every rank the same bits; clear errors for what cannot be
// split.
#include "elastic/tensor_parallel.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "elastic/error.h"
#include "elastic/model.h"
#include "elastic/router.h"
#include "elastic/routing.h"
#include "elastic/routing_setup.h"
#include "model_test_util.h"

namespace elastic {
namespace {

using test::fixture_dir;

// What one rank (or the whole model) computed: the prompt's logits [n, V], then the last-row
// logits of each decode step, and the routes of every layer after the prompt.
struct Run {
  std::vector<float> logits;
  std::vector<std::vector<AttnMode>> modes;  // [L][Hkv of the rank]
};

// The routing of rank `rank` of `world` (its own policy object: a router caches per backend).
using RoutingFactory = std::function<RoutingSetup(int rank, int world)>;

Run run_model(const Model& m, const RoutingSetup& routing, const std::vector<int64_t>& ids,
              int64_t prompt) {
  Request req = request_start(m, routing);
  PrefillOptions all;
  all.logits = LogitsOutput::all;
  Run out;
  out.logits = model_prefill(m, req, ids.data(), prompt, all);
  for (const LayerRoute& r : req.routes) out.modes.push_back(r.modes);
  for (int64_t i = prompt; i < static_cast<int64_t>(ids.size()); ++i) {  // decode steps
    const std::vector<float>& l = model_prefill(m, req, ids.data() + i, 1);
    out.logits.insert(out.logits.end(), l.begin(), l.end());
  }
  return out;
}

std::vector<Run> run_tp(const std::string& dir, int world, const RoutingFactory& routing,
                        const std::vector<int64_t>& ids, int64_t prompt) {
  std::vector<std::shared_ptr<TpComm>> comms = tp_group_in_process(world);
  std::vector<Run> runs(static_cast<size_t>(world));
  std::vector<std::thread> ranks;
  // The setups are made here, one per rank (a router caches per backend), and sharded.
  std::vector<RoutingSetup> setups;
  for (int r = 0; r < world; ++r) {
    setups.push_back(routing(r, world));
    tp_routing_shard(setups.back(), r, world);
  }
  for (int r = 0; r < world; ++r)
    ranks.emplace_back([&, r] {
      omp_set_num_threads(1);  // the ranks are the parallelism here
      try {
        Model m = model_load_tp(dir, comms[static_cast<size_t>(r)]);
        runs[static_cast<size_t>(r)] = run_model(m, setups[static_cast<size_t>(r)], ids, prompt);
      } catch (const std::exception& e) {
        // A rank that throws leaves the others waiting at the all-reduce: fail loudly, not hang.
        std::fprintf(stderr, "rank %d: %s\n", r, e.what());
        std::terminate();
      }
    });
  for (auto& t : ranks) t.join();
  return runs;
}

std::vector<int64_t> ids_for(const Model& m, int64_t n) {
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = (7 + 31 * i) % m.config.vocab_size;
  return ids;
}

double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, double(std::fabs(a[i] - b[i])));
    ref = std::max(ref, double(std::fabs(b[i])));
  }
  return err / ref;
}

// The whole model and every rank of a W-way split agree; the ranks' routes concatenate to the
// whole model's.
void expect_tp_matches(const std::string& name, int world, RoutingFactory routing = nullptr,
                       int64_t prompt = 40, int64_t decode = 6) {
  SCOPED_TRACE(name + " TP=" + std::to_string(world));
  const std::string dir = fixture_dir("hf/" + name);
  if (!routing) routing = [dir](int, int) { return routing_setup_from_spec("dense", dir); };
  const Model whole = model_load(dir);
  const std::vector<int64_t> ids = ids_for(whole, prompt + decode);
  const Run ref = run_model(whole, routing(0, 1), ids, prompt);
  const std::vector<Run> runs = run_tp(dir, world, routing, ids, prompt);
  ASSERT_EQ(runs[0].logits.size(), ref.logits.size());
  // fp32 on both sides: a shard sums its heads' (or F/W columns') products, the all-reduce adds
  // the W partial sums, so only the rounding of a reordered sum differs (~1e-7 relative per add).
  const double err = max_rel(runs[0].logits, ref.logits);
  EXPECT_LT(err, 2e-5);
  std::printf(
      "  %-24s TP=%d: logits max-abs/max-ref vs TP=1 %.2e (%lld prompt + %lld decode rows)\n",
      name.c_str(), world, err, (long long)prompt, (long long)decode);
  for (int r = 1; r < world; ++r) EXPECT_EQ(runs[size_t(r)].logits, runs[0].logits) << "rank " << r;
  for (size_t l = 0; l < ref.modes.size(); ++l) {
    std::vector<AttnMode> joined;
    for (const Run& run : runs)
      joined.insert(joined.end(), run.modes[l].begin(), run.modes[l].end());
    EXPECT_EQ(joined, ref.modes[l]) << "layer " << l;
  }
}

TEST(TensorParallel, ShardsMatchTheWholeModel) {
  expect_tp_matches("qwen3-tiny", 2);   // qk-norm, GQA 2
  expect_tp_matches("llama3-tiny", 2);  // GQA 4
  expect_tp_matches("qwen2-tiny", 2);   // q/k/v biases
  expect_tp_matches("qwen2-tiny", 4);   // one KV head a rank
  expect_tp_matches("qwen2-tiny", 1);   // the group of one: the all-reduce is a copy
}

// A trained router (softmax) decides each head from that head's pooled keys: every rank decides
// its own heads, and the decisions are the whole model's.
TEST(TensorParallel, RouterDecisionsAreTakenWhereTheHeadsLive) {
  for (const std::string name :
       {"elastic-qwen3-fa-ssa", "elastic-qwen3-fa-xa", "elastic-qwen3-xa-ssa"}) {
    const std::string dir = fixture_dir("hf/" + name);
    expect_tp_matches(
        name, 2, [dir](int, int) { return routing_setup_from_spec("elastic", dir); }, 300, 4);
  }
}

// A static head list of the whole model: each rank runs its slice (tp_routing_shard).
TEST(TensorParallel, StaticHeadListsAreSliced) {
  const std::vector<std::vector<uint8_t>> heads = {{1, 0, 0, 1},
                                                   {0, 1, 1, 0}};  // qwen2-tiny: 2 x 4
  const std::string dir = fixture_dir("hf/qwen2-tiny");
  for (int world : {2, 4})
    expect_tp_matches(
        "qwen2-tiny", world,
        [&](int, int) {
          RoutingSetup s = routing_setup_from_spec("dense", dir);
          s.policy = std::make_unique<StaticRouting>(heads, AttnMode::fa, AttnMode::ssa);
          return s;
        },
        300, 4);
}

// A rank that fails aborts its group: the ranks waiting for it in an all-reduce get an error
// instead of waiting forever, and the failing rank's own error is the one reported.
TEST(TensorParallel, AFailingRankAbortsTheGroupInsteadOfHanging) {
  try {
    tp_run_in_process(3, 1, [](std::shared_ptr<TpComm> comm) {
      if (comm->rank() == 1) throw Error("rank one's own failure");
      float x[4] = {1, 2, 3, 4};
      comm->all_reduce_sum(x, 4);  // ranks 0 and 2 wait here for rank 1
      comm->all_reduce_sum(x, 4);
    });
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "rank one's own failure");
  }
  // A healthy group sums in rank order and returns.
  std::vector<float> sums(2);
  tp_run_in_process(2, 1, [&](std::shared_ptr<TpComm> comm) {
    float x = 1.5f + static_cast<float>(comm->rank());
    comm->all_reduce_sum(&x, 1);
    sums[static_cast<size_t>(comm->rank())] = x;
  });
  EXPECT_EQ(sums, (std::vector<float>{4.f, 4.f}));
}

TEST(TensorParallel, RefusesWhatCannotBeSplit) {
  const std::string dir = fixture_dir("hf/qwen3-tiny");
  const ModelConfig c = config_load(dir);  // 2 KV heads, intermediate 512
  try {
    tp_validate(c, 3, dir);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_key_value_heads 2 is not a multiple"),
              std::string::npos)
        << e.what();
  }
  ModelConfig odd = c;
  odd.num_kv_heads = 4;
  odd.intermediate_size = 510;
  EXPECT_THROW(tp_validate(odd, 4, dir), Error);
  ModelConfig sigmoid = c;
  sigmoid.elastic.present = true;
  sigmoid.elastic.use_softmax = false;
  try {
    tp_validate(sigmoid, 2, dir);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sigmoid router"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tp_group_in_process(0), Error);
  EXPECT_THROW(tp_heads_slice({{1, 0, 1}}, 0, 2), Error);  // 3 heads do not split 2 ways
}

}  // namespace
}  // namespace elastic
