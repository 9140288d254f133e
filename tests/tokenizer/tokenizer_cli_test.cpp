// CLI: `elastic tokenize --json` reads JSON lines and writes one {"ids": [...]} line per input
// line, in order; `elastic detokenize` inverts it; errors give a non-zero exit code.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tok_fixtures.h"

namespace {

struct Result {
  int status;
  std::string out;
};

Result run(const std::string& args, const std::string& stdin_text) {
  // One file per process: ctest runs the test cases concurrently.
  std::string in = ::testing::TempDir() + "/tokenizer_cli_stdin." + std::to_string(getpid());
  std::ofstream(in, std::ios::binary) << stdin_text;
  std::string cmd = std::string(ELASTIC_BIN_DIR) + "/elastic " + args + " < " + in + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

TEST(TokenizerCli, JsonLinesInOrder) {
  auto lines = tok_test::read_fixture("qwen.jsonl");
  std::string input;
  for (const auto& l : lines) input += nlohmann::json{{"text", l.text}}.dump() + "\n";
  Result r = run("tokenize -m " + tok_test::shared("data/qwen-tokenizer") + " --json", input);
  ASSERT_EQ(r.status, 0);
  std::istringstream out(r.out);
  size_t k = 0;
  for (std::string s; std::getline(out, s); ++k) {
    ASSERT_LT(k, lines.size());
    auto j = nlohmann::json::parse(s);
    ASSERT_EQ(j.size(), 1u);
    EXPECT_EQ(j["ids"].get<std::vector<int32_t>>(), lines[k].ids) << "line " << k + 1;
  }
  EXPECT_EQ(k, lines.size());
}

TEST(TokenizerCli, PlainFlagsAndDetokenize) {
  std::string model = tok_test::shared("data/tinystories-656k/tokenizer.json");
  Result plain = run("tokenize -m " + model, "Once upon a time");
  ASSERT_EQ(plain.status, 0);
  Result bos = run("tokenize -m " + model + " --add-special", "Once upon a time");
  ASSERT_EQ(bos.status, 0);
  EXPECT_EQ(bos.out, "1 " + plain.out);
  Result back =
      run("detokenize -m " + model + " --ids \"" + plain.out.substr(0, plain.out.size() - 1) + "\"",
          "");
  ASSERT_EQ(back.status, 0);
  EXPECT_EQ(back.out, "Once upon a time");
  std::string q = tok_test::shared("data/qwen-tokenizer");
  EXPECT_EQ(run("tokenize -m " + q, "<|im_end|>").out, "151645\n");
  Result text = run("tokenize -m " + q + " --no-special", "<|im_end|>");
  EXPECT_NE(text.out, "151645\n");
  EXPECT_EQ(run("detokenize -m " + q, text.out).out, "<|im_end|>");
}

TEST(TokenizerCli, ErrorsExitNonZero) {
  std::string q = tok_test::shared("data/qwen-tokenizer");
  EXPECT_NE(run("tokenize -m " + q + " --json", "{\"txt\": 1}\n").status, 0);
  EXPECT_NE(run("tokenize -m /nonexistent", "x").status, 0);
  EXPECT_NE(run("detokenize -m " + q + " --ids \"1 x 2\"", "").status, 0);
  EXPECT_NE(run("detokenize -m " + q + " --ids \"99999999\"", "").status, 0);
}

}  // namespace
