// The library's routing setup (routing_setup.h): checkpoint defaults for the attention sizes,
// modes and policy, overrides, conflicting options, and the evaluator's routing specs.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "elastic/error.h"
#include "elastic/fileio.h"
#include "elastic/router.h"
#include "elastic/routing_setup.h"

namespace elastic {
namespace {

const std::string kFixtures = std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/";
const std::string kFaSsa = kFixtures + "elastic-qwen3-fa-ssa";  // 3 layers x 2 KV heads
const std::string kXaSsa = kFixtures + "elastic-qwen3-xa-ssa";
const std::string kBackbone = kFixtures + "qwen3-tiny";  // no router weights

// Modes of every layer of a policy that reads no keys (static routing): [L][Hkv].
std::vector<std::vector<AttnMode>> static_modes(RoutingPolicy& p, int64_t layers,
                                                int64_t kv_heads) {
  std::vector<std::vector<AttnMode>> modes;
  for (int64_t l = 0; l < layers; ++l) modes.push_back(p.route(l, nullptr, 0, kv_heads, 64).modes);
  return modes;
}

std::vector<std::vector<AttnMode>> all(AttnMode m) {
  return std::vector<std::vector<AttnMode>>(3, std::vector<AttnMode>(2, m));
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(RoutingSetup, CheckpointDefaultsAreTheRouterAndTheConfigSizes) {
  const RoutingSetup s = routing_setup(RoutingOptions{}, kFaSsa);
  const auto* router = dynamic_cast<const RouterRouting*>(s.policy.get());
  ASSERT_NE(router, nullptr) << s.description;
  EXPECT_EQ(router->options().retrieval_mode, AttnMode::fa);
  EXPECT_EQ(router->options().sparse_mode, AttnMode::ssa);
  EXPECT_EQ(router->options().pool_tokens, 100);
  EXPECT_EQ(router->options().sparsity_bias, 0.0);
  EXPECT_EQ(s.attn.ssa.sink_tokens, 32);   // config sink_size
  EXPECT_EQ(s.attn.ssa.local_tokens, 96);  // config local_window_size
  EXPECT_EQ(s.attn.ssa.block, 128);
  EXPECT_EQ(s.attn.xa.block, 128);
  EXPECT_EQ(s.attn.xa.stride, 16);
  EXPECT_EQ(s.attn.xa.threshold, 0.9);
  // The retrieval mode follows the config's retrieval_mode.
  const RoutingSetup xa_setup = routing_setup({}, kXaSsa);  // owns the policy read below
  const auto* xa = dynamic_cast<const RouterRouting*>(xa_setup.policy.get());
  ASSERT_NE(xa, nullptr);
  EXPECT_EQ(xa->options().retrieval_mode, AttnMode::xa);
}

TEST(RoutingSetup, ConfigKeysSetTheBlockAndThePooling) {
  // A copy of the FA-SSA checkpoint whose config names its SSA block and router pooling.
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(::testing::TempDir()) / "routing_setup_config_keys";
  fs::create_directories(dir);
  fs::copy_file(kFaSsa + "/model.safetensors", dir / "model.safetensors",
                fs::copy_options::overwrite_existing);
  nlohmann::json config = nlohmann::json::parse(read_file(kFaSsa + "/config.json"));
  config["block_size"] = 32;
  config["pool_tokens"] = 50;
  std::ofstream(dir / "config.json") << config.dump();
  const RoutingSetup s = routing_setup({}, dir.string());
  EXPECT_EQ(s.attn.ssa.block, 32);
  const auto* router = dynamic_cast<const RouterRouting*>(s.policy.get());
  ASSERT_NE(router, nullptr);
  EXPECT_EQ(router->options().pool_tokens, 50);
  fs::remove_all(dir);
}

TEST(RoutingSetup, OverridesReachThePolicyAndTheSizes) {
  RoutingOptions o;
  o.retrieval_mode = AttnMode::xa;
  o.sparse_mode = AttnMode::xa;
  o.sink_tokens = 64;
  o.local_tokens = 256;
  o.ssa_block = 32;
  o.xa_block = 64;
  o.xa_stride = 8;
  o.xa_threshold = 0.5;
  o.pool_tokens = 7;
  o.sparsity_bias = 1.5;
  const RoutingSetup s = routing_setup(o, kFaSsa);
  const auto* router = dynamic_cast<const RouterRouting*>(s.policy.get());
  ASSERT_NE(router, nullptr);
  EXPECT_EQ(router->options().retrieval_mode, AttnMode::xa);
  EXPECT_EQ(router->options().sparse_mode, AttnMode::xa);
  EXPECT_EQ(router->options().pool_tokens, 7);
  EXPECT_EQ(router->options().sparsity_bias, 1.5);
  EXPECT_EQ(s.attn.ssa.sink_tokens, 64);
  EXPECT_EQ(s.attn.ssa.local_tokens, 256);
  EXPECT_EQ(s.attn.ssa.block, 32);
  EXPECT_EQ(s.attn.xa.block, 64);
  EXPECT_EQ(s.attn.xa.stride, 8);
  EXPECT_EQ(s.attn.xa.threshold, 0.5);
}

TEST(RoutingSetup, RouterOffAndBackbonesRunEveryHeadInTheRetrievalMode) {
  RoutingOptions off;
  off.router = false;
  const RoutingSetup s = routing_setup(off, kFaSsa);
  EXPECT_EQ(static_modes(*s.policy, 3, 2), all(AttnMode::fa));
  EXPECT_NE(s.description.find("router off"), std::string::npos) << s.description;
  const RoutingSetup b = routing_setup({}, kBackbone);
  EXPECT_NE(b.description.find("no router weights"), std::string::npos) << b.description;
  RoutingOptions on;
  on.router = true;
  EXPECT_NE(error_of([&] { routing_setup(on, kBackbone); }).find("has no router weights"),
            std::string::npos);
}

TEST(RoutingSetup, ConflictingOptionsAreErrors) {
  RoutingOptions o;
  o.static_assignment = "all-fa";
  o.router = true;
  EXPECT_NE(error_of([&] { routing_setup(o, kFaSsa); }).find("--router on excludes"),
            std::string::npos);
  o = {};
  o.static_ratio = 0.5;
  EXPECT_NE(error_of([&] { routing_setup(o, kFaSsa); }).find("--static-ratio needs"),
            std::string::npos);
  o = {};
  o.retrieval_mode = AttnMode::ssa;  // SSA is a sparse mode only
  EXPECT_NE(error_of([&] { routing_setup(o, kFaSsa); }).find("--retrieval"), std::string::npos);
  o = {};
  o.xa_stride = 5;  // 128 is not a multiple of 5
  EXPECT_NE(error_of([&] { routing_setup(o, kFaSsa); }).find("xa-stride"), std::string::npos);
}

TEST(RoutingSetup, SpecsBuildTheNamedPolicy) {
  EXPECT_EQ(static_modes(*routing_setup_from_spec("dense", kXaSsa).policy, 3, 2),
            all(AttnMode::fa));  // dense is FA even where the retrieval mode is XA
  EXPECT_EQ(static_modes(*routing_setup_from_spec("all-fa", kXaSsa).policy, 3, 2),
            all(AttnMode::xa));
  EXPECT_EQ(static_modes(*routing_setup_from_spec("all-sa", kFaSsa).policy, 3, 2),
            all(AttnMode::ssa));
  EXPECT_NE(dynamic_cast<RouterRouting*>(routing_setup_from_spec("elastic", kFaSsa).policy.get()),
            nullptr);
  EXPECT_NE(
      dynamic_cast<RouterRouting*>(routing_setup_from_spec("checkpoint", kFaSsa).policy.get()),
      nullptr);
  // A spec replaces the policy options but keeps the sizes.
  RoutingOptions base;
  base.router = false;
  base.ssa_block = 32;
  const RoutingSetup e = routing_setup_from_spec("elastic", kFaSsa, base);
  EXPECT_NE(dynamic_cast<RouterRouting*>(e.policy.get()), nullptr);
  EXPECT_EQ(e.attn.ssa.block, 32);
  EXPECT_NE(
      error_of([] { routing_setup_from_spec("elastic", kBackbone); }).find("no router weights"),
      std::string::npos);

  const std::string heads = ::testing::TempDir() + "/routing_setup_heads.txt";
  std::ofstream(heads) << "# retrieval heads\n0 1\n2 0\n";
  const RoutingSetup f = routing_setup_from_spec("static:" + heads, kFaSsa);
  EXPECT_EQ(static_modes(*f.policy, 3, 2),
            (std::vector<std::vector<AttnMode>>{{AttnMode::ssa, AttnMode::fa},
                                                {AttnMode::ssa, AttnMode::ssa},
                                                {AttnMode::fa, AttnMode::ssa}}));
  for (const char* bad : {"sparse", "static:", "", "Dense"})
    EXPECT_NE(error_of([&] {
                routing_options_from_spec(bad);
              }).find("routing spec '" + std::string(bad) + "'"),
              std::string::npos)
        << bad;
}

}  // namespace
}  // namespace elastic
