// The committed fuzz seed corpora (fuzz/corpus/<target>/) replayed in the ordinary test build,
// so the regression inputs run in CI and under scripts/sanitize.sh without clang: the valid
// seeds must be accepted (and every tensor read), every other seed rejected with elastic::Error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "elastic/config.h"
#include "elastic/error.h"
#include "elastic/safetensors.h"
#include "io_test_util.h"

namespace elastic {
namespace {

namespace fs = std::filesystem;
const fs::path kCorpus = fs::path(ELASTIC_SOURCE_DIR) / "fuzz/corpus";

std::vector<fs::path> seeds(const std::string& target) {
  std::vector<fs::path> r;
  for (const auto& e : fs::directory_iterator(kCorpus / target)) r.push_back(e.path());
  std::sort(r.begin(), r.end());
  return r;
}

TEST(FuzzSeeds, Safetensors) {
  const std::set<std::string> valid = {"empty_header", "one_f32", "all_dtypes", "metadata",
                                       "empty_and_scalar", "model_like"};
  auto files = seeds("fuzz_safetensors");
  ASSERT_GE(files.size(), 20u);
  size_t accepted = 0;
  for (const auto& p : files) {
    SCOPED_TRACE(p.filename().string());
    std::string bytes = test::read_bytes(p);
    std::vector<uint64_t> words((bytes.size() + 7) / 8);  // aligned, as a mapping would be
    if (!bytes.empty()) std::memcpy(words.data(), bytes.data(), bytes.size());
    bool ok = valid.count(p.filename().string()) != 0;
    try {
      auto entries = safetensors_parse_buffer(words.data(), bytes.size(), p.string());
      EXPECT_TRUE(ok) << "accepted a near-valid seed";
      const auto* base = reinterpret_cast<const unsigned char*>(words.data()) + 8 +
                         test::u64_le(bytes);
      for (const auto& e : entries) {
        TensorView t{e.name, e.dtype, e.shape, base + e.begin};
        bool is_float = e.dtype == DType::f32 || e.dtype == DType::f16 ||
                        e.dtype == DType::bf16 || e.dtype == DType::f64;
        size_t n = is_float ? t.to_f32().size() : t.to_i64().size();
        EXPECT_EQ(n, static_cast<size_t>(t.numel()));
      }
      ++accepted;
    } catch (const Error& e) {
      EXPECT_FALSE(ok) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  }
  EXPECT_EQ(accepted, valid.size());
}

TEST(FuzzSeeds, Config) {
  const std::set<std::string> valid = {"llama_v5", "llama3_v5", "llama3_legacy", "qwen3_yarn_v5",
                                       "qwen3_yarn_legacy", "qwen2_legacy", "elastic_keys"};
  auto files = seeds("fuzz_config");
  ASSERT_GE(files.size(), 15u);
  size_t accepted = 0;
  for (const auto& p : files) {
    SCOPED_TRACE(p.filename().string());
    bool ok = valid.count(p.filename().string()) != 0;
    try {
      config_parse(test::read_bytes(p), p.string());
      EXPECT_TRUE(ok) << "accepted a near-valid seed";
      ++accepted;
    } catch (const Error& e) {
      EXPECT_FALSE(ok) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  }
  EXPECT_EQ(accepted, valid.size());
}

}  // namespace
}  // namespace elastic
