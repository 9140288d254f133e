// The request parser of `elastic serve`: the committed fuzz seeds replayed (the valid ones
// accepted, every other one rejected with a 400 ApiError naming the field) and a few exact
// results, so the fuzz corpus also runs in the ordinary build.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "elastic/server.h"

namespace elastic {
namespace {

namespace fs = std::filesystem;

TEST(ServeRequest, FuzzSeedsAreAcceptedOrRejectedCleanly) {
  const std::set<std::string> valid = {"completion",         "completion_ids", "completion_stream",
                                       "completion_elastic", "completion_static", "completion_nulls", "seed_negative",
                                       "chat",               "chat_parts"};
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(fs::path(ELASTIC_SOURCE_DIR) / "fuzz/corpus/fuzz_serve_request"))
    files.push_back(e.path());
  std::sort(files.begin(), files.end());
  ASSERT_GE(files.size(), 20u);
  for (const fs::path& p : files) {
    SCOPED_TRACE(p.filename().string());
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    const std::string bytes = ss.str();
    ASSERT_FALSE(bytes.empty());
    const bool chat = bytes[0] & 1;
    if (valid.count(p.filename().string())) {
      EXPECT_NO_THROW(api_request_parse(std::string_view(bytes).substr(1), chat));
    } else {
      try {
        api_request_parse(std::string_view(bytes).substr(1), chat);
        ADD_FAILURE() << "accepted";
      } catch (const ApiError& e) {
        EXPECT_EQ(e.status, 400);
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
      }
    }
  }
}

TEST(ServeRequest, FieldsParseToTheirValues) {
  const ApiRequest r = api_request_parse(
      R"({"model":"m","prompt":[3,4],"max_tokens":7,"temperature":0,"top_p":0.5,"stop":"x",)"
      R"("seed":18446744073709551615,"stream":true,"stream_options":{"include_usage":true},)"
      R"("elastic":{"sparsity_bias":-1.5,"static":"all-sa"}})",
      false);
  EXPECT_EQ(r.prompt_ids, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(*r.max_tokens, 7);
  EXPECT_EQ(r.temperature, 0.0);
  EXPECT_EQ(r.top_p, 0.5);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"x"}));
  EXPECT_EQ(*r.seed, UINT64_MAX);
  EXPECT_TRUE(r.stream && r.include_usage);
  EXPECT_EQ(*r.sparsity_bias, -1.5);
  EXPECT_EQ(r.static_assignment, "all-sa");
  const ApiRequest c = api_request_parse(
      R"({"messages":[{"role":"developer","content":"s"},{"role":"user","content":[{"type":"text","text":"a"}]}]})",
      true);
  ASSERT_EQ(c.messages.size(), 2u);
  EXPECT_EQ(c.messages[0].role, "system");
  EXPECT_EQ(c.messages[1].content, "a");
}

TEST(ServeRequest, ErrorsNameTheField) {
  auto param_of = [](const char* body, bool chat) {
    try {
      api_request_parse(body, chat);
    } catch (const ApiError& e) {
      return e.param;
    }
    return std::string("accepted");
  };
  EXPECT_EQ(param_of(R"({"prompt":"x","max_tokens":-1})", false), "max_tokens");
  EXPECT_EQ(param_of(R"({"prompt":"x","elastic":{"router":1}})", false), "elastic.router");
  EXPECT_EQ(param_of(R"({"messages":[{"role":"user","content":"x","extra":1}]})", true), "messages[0].extra");
  EXPECT_EQ(param_of(R"({"prompt":"x","max_completion_tokens":3})", false), "max_completion_tokens");
}

}  // namespace
}  // namespace elastic
