// RULER's scoring rules and the JSON-lines task files (import errors name the file and line).
#include <gtest/gtest.h>
#include <unistd.h>

#include "elastic/error.h"
#include "elastic/eval.h"
#include "elastic/fileio.h"

namespace elastic {
namespace {

// A path in the test temporary folder, unique to this process (suites may run concurrently).
std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "/" + std::to_string(getpid()) + "_" + name;
}

TEST(EvalScore, NormalizeStripsCollapsesAndLowers) {
  EXPECT_EQ(eval_normalize("  Hello\tWORLD \n\n"), "hello world");
  EXPECT_EQ(eval_normalize("a\x01\x1f"
                           "b"),
            "a b");  // RULER: control characters are breaks
  EXPECT_EQ(eval_normalize("\xc3\x84pfel"), "\xc3\x84pfel");  // non-ASCII bytes unchanged
  EXPECT_EQ(eval_normalize(" \n "), "");
}

TEST(EvalScore, ExactIgnoresCaseSpacesAndFinalPunctuation) {
  EXPECT_EQ(eval_score(ScoreRule::exact, " Red.", {"red"}), 1.0);
  EXPECT_EQ(eval_score(ScoreRule::exact, "the man ran home", {"The man ran home."}), 1.0);
  EXPECT_EQ(eval_score(ScoreRule::exact, "red blue", {"red"}), 0.0);
  EXPECT_EQ(eval_score(ScoreRule::exact, "12", {"1"}), 0.0);
  EXPECT_EQ(eval_score(ScoreRule::exact, "blue", {"red", "blue"}), 1.0);  // any reference
  EXPECT_EQ(eval_score(ScoreRule::exact, "", {"red"}), 0.0);
}

TEST(EvalScore, ContainsIsRulerStringMatchPart) {
  EXPECT_EQ(eval_score(ScoreRule::contains, "The answer is RED, I think", {"red"}), 1.0);
  EXPECT_EQ(eval_score(ScoreRule::contains, "blue", {"red", "blue"}), 1.0);
  EXPECT_EQ(eval_score(ScoreRule::contains, "green", {"red", "blue"}), 0.0);
  // A substring test, as RULER's: "reddish" contains "red".
  EXPECT_EQ(eval_score(ScoreRule::contains, "reddish", {"red"}), 1.0);
}

TEST(EvalScore, AllOfIsRulerStringMatchAll) {
  EXPECT_DOUBLE_EQ(eval_score(ScoreRule::all_of, "Red, blue", {"red", "blue", "green"}), 2.0 / 3);
  EXPECT_EQ(eval_score(ScoreRule::all_of, "blue red green", {"red", "blue", "green"}), 1.0);
  EXPECT_EQ(eval_score(ScoreRule::all_of, "none", {"red", "blue"}), 0.0);
  EXPECT_EQ(eval_score(ScoreRule::all_of, "x", {}), 0.0);
}

TEST(EvalScore, RuleNames) {
  for (ScoreRule r : {ScoreRule::exact, ScoreRule::contains, ScoreRule::all_of})
    EXPECT_EQ(score_rule_parse(score_rule_name(r), "test"), r);
  EXPECT_THROW(score_rule_parse("all_of", "test"), Error);
}

TEST(EvalJsonl, ParsesRecordsAndDefaults) {
  const std::string text =
      "{\"prompt\": \"p1\", \"answer\": \"a\", \"task\": \"t\"}\n"
      "\n"
      "{\"prompt\": \"p2\", \"answer\": [\"a\", \"b\"], \"task\": \"t\", \"extra\": 1}\r\n"
      "{\"prompt\": \"p3\", \"answer\": [\"a\"], \"task\": \"u\", \"score\": \"exact\", "
      "\"length\": 4096}\n";
  const std::vector<EvalSample> s = eval_samples_parse_jsonl(text, "f.jsonl");
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].prompt, "p1");
  EXPECT_EQ(s[0].answers, std::vector<std::string>{"a"});
  EXPECT_EQ(s[0].score, ScoreRule::contains);  // a string answer
  EXPECT_EQ(s[0].length, 0);
  EXPECT_EQ(s[1].answers, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(s[1].score, ScoreRule::all_of);  // a list answer
  EXPECT_EQ(s[2].score, ScoreRule::exact);
  EXPECT_EQ(s[2].length, 4096);
  EXPECT_EQ(s[2].task, "u");
}

TEST(EvalJsonl, ExportImportRoundTrip) {
  std::vector<EvalSample> s(2);
  s[0] = {"niah_single", "Find it.\nQuestion: x? Answer:", {"red"}, ScoreRule::contains, 512};
  s[1] = {"common_words", "List \"quoted\"\ttab", {"a", "b"}, ScoreRule::all_of, 0};
  const std::string path = temp_path("eval_roundtrip.jsonl");
  eval_samples_write_jsonl(path, s);
  const std::vector<EvalSample> back = eval_samples_read_jsonl(path);
  ASSERT_EQ(back.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(back[i].task, s[i].task);
    EXPECT_EQ(back[i].prompt, s[i].prompt);
    EXPECT_EQ(back[i].answers, s[i].answers);
    EXPECT_EQ(back[i].score, s[i].score);
    EXPECT_EQ(back[i].length, s[i].length);
  }
  EXPECT_EQ(read_file(path).find("\"answer\":\"red\""), read_file(path).find("\"answer\""))
      << "a single answer is written as a string";
}

// Each malformed record is reported as "FILE:LINE: <what>".
TEST(EvalJsonl, MalformedRecordsNameTheLine) {
  const std::string ok = "{\"prompt\": \"p\", \"answer\": \"a\", \"task\": \"t\"}\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"prompt\": \"p\", \"answer\": \"a\", \"task\": \"t\"", "bad JSON"},
      {"[1, 2]", "expected a JSON object"},
      {"{\"answer\": \"a\", \"task\": \"t\"}", "missing field \"prompt\""},
      {"{\"prompt\": \"p\", \"task\": \"t\"}", "missing field \"answer\""},
      {"{\"prompt\": \"p\", \"answer\": \"a\"}", "missing field \"task\""},
      {"{\"prompt\": 3, \"answer\": \"a\", \"task\": \"t\"}", "field \"prompt\" must be a string"},
      {"{\"prompt\": \"p\", \"answer\": 7, \"task\": \"t\"}", "field \"answer\" must be a string"},
      {"{\"prompt\": \"p\", \"answer\": [\"a\", 1], \"task\": \"t\"}", "list holds a number"},
      {"{\"prompt\": \"p\", \"answer\": [], \"task\": \"t\"}", "empty answer"},
      {"{\"prompt\": \"p\", \"answer\": \"  \", \"task\": \"t\"}", "empty answer"},
      {"{\"prompt\": \"\", \"answer\": \"a\", \"task\": \"t\"}", "field \"prompt\" is empty"},
      {"{\"prompt\": \"p\", \"answer\": \"a\", \"task\": \"t\", \"score\": \"fuzzy\"}",
       "unknown score rule 'fuzzy'"},
      {"{\"prompt\": \"p\", \"answer\": \"a\", \"task\": \"t\", \"score\": 1}",
       "field \"score\" must be a string"},
      {"{\"prompt\": \"p\", \"answer\": \"a\", \"task\": \"t\", \"length\": -1}",
       "field \"length\" must be an integer"},
  };
  for (const auto& [line, what] : cases) {
    try {
      eval_samples_parse_jsonl(ok + "\n" + line + "\n" + ok, "tasks.jsonl");
      ADD_FAILURE() << "no error for " << line;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind("tasks.jsonl:3: ", 0), 0u) << msg;
      EXPECT_NE(msg.find(what), std::string::npos) << msg;
    }
  }
  EXPECT_THROW(eval_samples_parse_jsonl("\n \n", "empty.jsonl"), Error);
  EXPECT_THROW(eval_samples_read_jsonl(temp_path("no_such.jsonl")), Error);
}

}  // namespace
}  // namespace elastic
