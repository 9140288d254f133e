// The 'elastic route' and 'elastic logits' commands with the Elastic options, end to end:
// JSON fields against the FA-SSA fixture, the PNG, and one-line errors for bad options.
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/wait.h>

#include "elastic/fileio.h"
#include "elastic/safetensors.h"

namespace elastic {
namespace {

struct CliResult {
  int code;
  std::string out;
};

CliResult run_cli(const std::string& args) {
  const std::string cmd = std::string(ELASTIC_BIN_DIR) + "/elastic " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

const std::string kDir = std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/elastic-qwen3-fa-ssa";
const std::string kSizes = " --block 32 --sink 32 --local 96 --xa-block 32 --xa-stride 8 --xa-threshold 0.9 --pool-tokens 100";

std::string fixture_ids() {
  std::string s;
  for (int64_t id : WeightStore::open(kDir + "/expected.safetensors").get("input_ids").to_i64())
    s += std::to_string(id) + " ";
  return s;
}

TEST(RouteCli, JsonMatchesFixture) {
  const std::string png = ::testing::TempDir() + "/route_map.png";
  const CliResult r = run_cli("route -m " + kDir + " --input-ids \"" + fixture_ids() + "\" --json" + kSizes +
                    " --routing-map " + png);
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  const WeightStore want = WeightStore::open(kDir + "/expected.safetensors");
  const std::vector<int64_t> dec = want.get("decisions").to_i64();
  ASSERT_EQ(j["decisions"].size(), 3u);
  for (int l = 0; l < 3; ++l)
    for (int h = 0; h < 2; ++h) EXPECT_EQ(j["decisions"][l][h].get<int64_t>(), dec[l * 2 + h]);
  const std::vector<float> logits = want.get("router_logits").to_f32();
  for (int l = 0; l < 3; ++l)
    for (int h = 0; h < 2; ++h)
      for (int c = 0; c < 2; ++c)  // printed at full double precision; router error ~1e-6
        EXPECT_NEAR(j["router_logits"][l][h][c].get<double>(), logits[(l * 2 + h) * 2 + c], 1e-4);
  EXPECT_EQ(j["rho"].size(), 3u);
  EXPECT_EQ(j["rho"][0].size(), 4u);
  EXPECT_NEAR(j["omega_msr"].get<double>(), want.get("omega_msr").to_f32()[0], 1e-6);
  EXPECT_NEAR(j["omega_esr_last"].get<double>(), want.get("omega_esr_last").to_f32()[0], 1e-6);
  EXPECT_NEAR(j["omega_esr_all"].get<double>(), want.get("omega_esr_all").to_f32()[0], 1e-6);
  EXPECT_LT(j["kv_cache_bytes"].get<double>(), j["kv_cache_bytes_dense"].get<double>());
  EXPECT_EQ(read_file(png).substr(1, 3), "PNG");
}

TEST(RouteCli, NanSparsityBiasWithRoutingMapDoesNotCrash) {
  // Issue 13 item 5: NaN router logits reached the heatmap's colour table as an index (SIGSEGV,
  // exit 139 through the shell). Either a clear error or a map with n/a cells, never a signal.
  const std::string png = ::testing::TempDir() + "/route_nan_map.png";
  std::remove(png.c_str());
  const CliResult r = run_cli("route -m " + kDir + " --input-ids \"1 2 3 4 5 6 7 8 9 10\"" +
                              kSizes + " --sparsity-bias nan --routing-map " + png);
  ASSERT_GE(r.code, 0) << r.out;
  ASSERT_LT(r.code, 128) << "killed by a signal: " << r.out;
  if (r.code == 0) {
    EXPECT_EQ(read_file(png).substr(1, 3), "PNG");
  } else {
    EXPECT_FALSE(r.out.empty());
  }
}

TEST(RouteCli, StaticAllFaIsDenseAndLogitsWritesReport) {
  const std::string ids = "1 2 3 4 5 6 7 8 9 10";
  const CliResult r = run_cli("route -m " + kDir + " --input-ids \"" + ids + "\" --json --static all-fa" + kSizes);
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["omega_msr"].get<double>(), 0.0);
  EXPECT_EQ(j["omega_esr_all"].get<double>(), 0.0);
  EXPECT_TRUE(j["router_logits"].is_null());

  const std::string out = ::testing::TempDir() + "/logits.safetensors";
  const CliResult l = run_cli("logits -m " + kDir + " --input-ids \"" + ids + "\" -o " + out + " --static all-sa" + kSizes);
  ASSERT_EQ(l.code, 0) << l.out;
  const WeightStore w = WeightStore::open(out);
  EXPECT_EQ(w.get("omega_msr").to_f32()[0], 1.0f);
  for (int64_t d : w.get("decisions").to_i64()) EXPECT_EQ(d, 0);
}

TEST(RouteCliBadInput, OneLineErrors) {
  const std::string base = "route -m " + kDir + " --input-ids \"1 2 3\" ";
  for (const auto& [args, what] : std::vector<std::pair<std::string, std::string>>{
           {"--retrieval ssa", "--retrieval"},
           {"--sparse dense", "--sparse"},
           {"--router maybe", "--router"},
           {"--xa-stride 5", "xa-block"},
           {"--xa-threshold 2", "xa-threshold"},
           {"--static /nonexistent/heads.txt", "/nonexistent/heads.txt"},
           {"--static all-fa --router on", "--router on"},
           {"--static-scores x.tsv", "--static-ratio"},
           {"--block", "needs a value"},
       }) {
    const CliResult r = run_cli(base + args);
    EXPECT_EQ(r.code, 1) << args << ": " << r.out;
    EXPECT_NE(r.out.find(what), std::string::npos) << args << ": " << r.out;
    EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "one line: " << r.out;
  }
}

}  // namespace
}  // namespace elastic
