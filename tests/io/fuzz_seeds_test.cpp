// The committed fuzz seed corpora (fuzz/corpus/<target>/) replayed in the ordinary test build,
// so the regression inputs run in CI and under scripts/sanitize.sh without clang: the valid
// seeds must be accepted (and every tensor read), every other seed rejected with elastic::Error.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <set>

#include "../../fuzz/hostile_regexes.h"
#include "elastic/config.h"
#include "elastic/error.h"
#include "elastic/eval.h"
#include "elastic/fileio.h"
#include "elastic/routing.h"
#include "elastic/safetensors.h"
#include "elastic/tokenizer.h"
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
  const std::set<std::string> valid = {"empty_header", "one_f32",          "all_dtypes",
                                       "metadata",     "empty_and_scalar", "model_like"};
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
      const auto* base =
          reinterpret_cast<const unsigned char*>(words.data()) + 8 + test::u64_le(bytes);
      for (const auto& e : entries) {
        TensorView t{e.name, e.dtype, e.shape, base + e.begin};
        bool is_float = e.dtype == DType::f32 || e.dtype == DType::f16 || e.dtype == DType::bf16 ||
                        e.dtype == DType::f64;
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
  const std::set<std::string> valid = {"llama_v5",      "llama3_v5",         "llama3_legacy",
                                       "qwen3_yarn_v5", "qwen3_yarn_legacy", "qwen2_legacy",
                                       "elastic_keys"};
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

// fuzz_static_routing: byte 0 picks L, Hkv and the ratio as the target does; the rest is the file.
TEST(FuzzSeeds, StaticRouting) {
  // "1 1" is a valid head list too; strtod reads C hex floats (0x1p3 = 8).
  const std::set<std::string> valid_list = {"head_list", "head_list_commas", "empty",
                                            "scores_too_few_lines"};
  const std::set<std::string> valid_scores = {"scores", "scores_ratio_one", "head_list",
                                              "head_list_commas", "hex_float"};
  auto files = seeds("fuzz_static_routing");
  ASSERT_GE(files.size(), 15u);
  test::TempDir dir;
  const std::string path = dir.str("routing.txt");
  for (const auto& p : files) {
    const std::string name = p.filename().string();
    SCOPED_TRACE(name);
    const std::string bytes = test::read_bytes(p);
    ASSERT_FALSE(bytes.empty());
    const auto b0 = static_cast<unsigned char>(bytes[0]);
    const int64_t L = 1 + (b0 & 7), H = 1 + ((b0 >> 3) & 7);
    const double ratio = (b0 >> 6) / 3.0;
    test::write_bytes(path, bytes.substr(1));
    try {
      auto a = static_assignment_head_list(path, L, H);
      EXPECT_TRUE(valid_list.count(name)) << "accepted as a head list";
      ASSERT_EQ(static_cast<int64_t>(a.size()), L);
    } catch (const Error& e) {
      EXPECT_FALSE(valid_list.count(name)) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
    try {
      auto a = static_assignment_top_scores(path, L, H, ratio);
      EXPECT_TRUE(valid_scores.count(name)) << "accepted as scores";
      int64_t sparse = 0;
      for (const auto& row : a)
        for (uint8_t x : row) sparse += x == 0;
      EXPECT_EQ(sparse, std::llround(ratio * double(L * H)));
    } catch (const Error& e) {
      EXPECT_FALSE(valid_scores.count(name)) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  }
}

// fuzz_eval_jsonl: valid task files import and their export round-trips; the others fail with
// one line naming the file and line.
TEST(FuzzSeeds, EvalJsonl) {
  const std::set<std::string> valid = {"one",       "all_of",         "exact_crlf",
                                       "two_lines", "unicode_escape", "deep_nesting"};
  auto files = seeds("fuzz_eval_jsonl");
  ASSERT_GE(files.size(), 15u);
  size_t accepted = 0;
  for (const auto& p : files) {
    const std::string name = p.filename().string();
    SCOPED_TRACE(name);
    try {
      auto samples = eval_samples_parse_jsonl(test::read_bytes(p), "tasks.jsonl");
      EXPECT_TRUE(valid.count(name)) << "accepted a broken seed";
      const std::string out = eval_samples_to_jsonl(samples);
      EXPECT_EQ(eval_samples_to_jsonl(eval_samples_parse_jsonl(out, "export.jsonl")), out);
      ++accepted;
    } catch (const Error& e) {
      EXPECT_FALSE(valid.count(name)) << e.what();
      EXPECT_NE(std::string(e.what()).find("tasks.jsonl"), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  }
  EXPECT_EQ(accepted, valid.size());
}

// fuzz_tokenizer's hostile seeds (first byte 0x80): the tokenizer with catastrophic pre-tokenizer
// regexes fails each long one quickly with the regex-limit error naming the pattern.
TEST(FuzzSeeds, TokenizerHostileRegexes) {
  test::TempDir dir;
  const std::string tok_path = dir.str("tokenizer.json");
  test::write_bytes(tok_path,
                    fuzz::hostile_tokenizer_json(test::read_bytes(
                        fs::path(ELASTIC_SHARED_DIR) / "data/tinystories-656k/tokenizer.json")));
  const Tokenizer tok = Tokenizer::load(tok_path);
  size_t hostile = 0, limited = 0;
  for (const auto& p : seeds("fuzz_tokenizer")) {
    const std::string bytes = test::read_bytes(p);
    if (bytes.empty() || !(static_cast<unsigned char>(bytes[0]) & 0x80)) continue;
    ++hostile;
    SCOPED_TRACE(p.filename().string());
    const auto t0 = std::chrono::steady_clock::now();
    try {
      tok.encode(bytes.substr(1), EncodeOptions{});  // a text the patterns match cheaply
      EXPECT_NE(p.filename().string(), "hostile_a_run") << "(a+)+$ on 3000 a's did not stop";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("backtracks catastrophically"), std::string::npos) << m;
      EXPECT_NE(m.find(tok_path), std::string::npos) << m;
      ++limited;
    }
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
  }
  EXPECT_GE(hostile, 5u);
  EXPECT_GE(limited, 2u);
}

}  // namespace
}  // namespace elastic
