// The task generators: deterministic for a seed (with pinned hashes, so a change of platform or
// standard library that changed a sample fails here), different across seeds, within the token
// budget and close to it, instruction first and question last, and the answer derivable from
// the prompt by an independent reading of each task's text.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "elastic/error.h"
#include "elastic/eval.h"
#include "elastic/tokenizer.h"

namespace elastic {
namespace {

const std::string kTinyStories = std::string(ELASTIC_SHARED_DIR) + "/data/tinystories-656k";

// Whitespace-separated words: a tokenizer-free counter with one token per word.
int64_t count_words(const std::string& s) {
  std::istringstream ss(s);
  int64_t n = 0;
  for (std::string w; ss >> w;) ++n;
  return n;
}

uint64_t fnv(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream ss(s);
  for (std::string l; std::getline(ss, l);) out.push_back(l);
  return out;
}

std::vector<std::string> words_of(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s + " ") {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      cur += c;
    } else if (!cur.empty()) {
      out.push_back(cur);
      cur.clear();
    }
  }
  return out;
}

std::vector<std::string> task_names() {
  std::vector<std::string> v;
  for (const TaskInfo& t : eval_tasks()) v.push_back(t.name);
  return v;
}

class EvalTask : public ::testing::TestWithParam<std::string> {};

TEST_P(EvalTask, SameSeedSameSampleOtherSeedOtherSample) {
  const std::string task = GetParam();
  const EvalSample a = eval_generate(task, 400, 7, 3, count_words);
  const EvalSample b = eval_generate(task, 400, 7, 3, count_words);
  EXPECT_EQ(a.prompt, b.prompt);
  EXPECT_EQ(a.answers, b.answers);
  EXPECT_NE(a.prompt, eval_generate(task, 400, 8, 3, count_words).prompt);
  EXPECT_NE(a.prompt, eval_generate(task, 400, 7, 4, count_words).prompt);
}

TEST_P(EvalTask, FitsTheBudgetAndFillsIt) {
  const Tokenizer tok = Tokenizer::load(kTinyStories);
  const TokenCounter bpe = eval_token_counter(tok, true);
  for (int64_t target : {300, 1000, 2500}) {
    for (const TokenCounter* count : {&bpe, static_cast<const TokenCounter*>(nullptr)}) {
      const TokenCounter c = count ? *count : TokenCounter(count_words);
      const EvalSample s = eval_generate(GetParam(), target, 1, 0, c);
      const int64_t n = c(s.prompt);
      EXPECT_LE(n, target);
      // One haystack unit (a sentence or a word) more would not fit: the gap is below the
      // tokens of one sentence of up to 10 words (BPE: a few tokens per word).
      EXPECT_GE(n, target - 40) << GetParam() << " at " << target;
      EXPECT_EQ(s.length, target);
    }
  }
}

TEST_P(EvalTask, InstructionFirstQuestionLast) {
  const std::string task = GetParam();
  const EvalSample s = eval_generate(task, 500, 2, 0, count_words);
  const std::vector<std::string> lines = lines_of(s.prompt);
  ASSERT_GE(lines.size(), 3u);
  EXPECT_EQ(lines.back().rfind("Question: ", 0), 0u) << lines.back();
  EXPECT_TRUE(lines.back().ends_with(" Answer:")) << lines.back();
  EXPECT_EQ(std::count_if(lines.begin(), lines.end(),
                          [](const std::string& l) { return l.rfind("Question:", 0) == 0; }),
            1);
  // The instruction line names no answer, so the answer is in the body or is computed.
  for (const std::string& a : s.answers)
    for (const std::string& w : words_of(lines.front())) EXPECT_NE(w, a);
  EXPECT_EQ(s.score, eval_task_find(task).score);
  EXPECT_EQ(s.task, task);
}

TEST_P(EvalTask, UsesOnlyTheVocabularyWords) {
  const std::vector<std::string> vocab = eval_vocab_words();
  const std::set<std::string> words(vocab.begin(), vocab.end());
  for (uint64_t seed : {1, 2, 3}) {
    const EvalSample s = eval_generate(GetParam(), 700, seed, 0, count_words);
    for (char c : s.prompt)
      EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) ||
                  std::string_view(" \n.,:?").find(c) != std::string_view::npos)
          << "character '" << c << "'";
    std::string all = s.prompt;
    for (const std::string& a : s.answers) all += " " + a;
    for (const std::string& w : words_of(all)) EXPECT_TRUE(words.count(w)) << w;
  }
}

INSTANTIATE_TEST_SUITE_P(Tasks, EvalTask, ::testing::ValuesIn(task_names()),
                         [](const auto& info) { return info.param; });

// ---- The answer, read back from the prompt by an independent parse of each task's text ----

struct Parsed {
  std::vector<std::string> body;  // lines between the instruction and the question
  std::string question;
};

Parsed parse(const EvalSample& s) {
  std::vector<std::string> lines = lines_of(s.prompt);
  Parsed p;
  p.question = lines.back();
  p.body.assign(lines.begin() + 1, lines.end() - 1);
  return p;
}

// The word after `marker` in `text`.
std::string word_after(const std::string& text, const std::string& marker) {
  const size_t at = text.find(marker);
  EXPECT_NE(at, std::string::npos) << marker << " in " << text;
  return at == std::string::npos ? "" : words_of(text.substr(at + marker.size()))[0];
}

// Needles "<prefix>KEY is VALUE." -> KEY: [VALUE...] in order; the asked keys are the question's
// words that are needle keys.
std::vector<std::string> answer_needles(const EvalSample& s) {
  const Parsed p = parse(s);
  std::map<std::string, std::vector<std::string>> values;
  for (const std::string& l : p.body)
    for (const char* prefix :
         {"The special magic word for ", "One of the special magic words for ", "The value of "})
      if (l.rfind(prefix, 0) == 0) {
        const std::vector<std::string> w = words_of(l.substr(std::string(prefix).size()));
        EXPECT_EQ(w.size(), 3u) << l;  // KEY is VALUE
        values[w[0]].push_back(w[2]);
      }
  std::vector<std::string> out;
  for (const std::string& w : words_of(p.question))
    if (values.count(w)) out.insert(out.end(), values[w].begin(), values[w].end());
  return out;
}

std::vector<std::string> answer_variables(const EvalSample& s) {
  const Parsed p = parse(s);
  std::map<std::string, std::string> value;  // variable -> resolved value
  std::vector<std::string> order;
  for (const std::string& l : p.body)
    if (l.rfind("Let ", 0) == 0) {
      const std::vector<std::string> w = words_of(l);  // Let X be Y
      value[w[1]] = value.count(w[3]) ? value[w[3]] : w[3];
      order.push_back(w[1]);
    }
  const std::string asked = word_after(p.question, "the value ");
  std::vector<std::string> out;
  for (const std::string& x : order)
    if (value[x] == asked) out.push_back(x);
  return out;
}

// The `top` most frequent words of the body, checking they are strictly more frequent than the
// next one and absent from the body's last quarter.
std::vector<std::string> answer_most_frequent(const EvalSample& s, size_t top) {
  std::vector<std::string> words;
  for (const std::string& l : parse(s).body)
    for (const std::string& w : words_of(l)) words.push_back(w);
  std::map<std::string, int64_t> count;
  for (const std::string& w : words) ++count[w];
  std::vector<std::pair<int64_t, std::string>> ranked;
  for (const auto& [w, c] : count) ranked.push_back({-c, w});
  std::sort(ranked.begin(), ranked.end());
  EXPECT_GT(ranked.size(), top);
  EXPECT_LT(ranked[top - 1].first, ranked[top].first) << "a tie at rank " << top;
  std::set<std::string> answer;
  for (size_t i = 0; i < top; ++i) answer.insert(ranked[i].second);
  for (size_t i = words.size() - words.size() / 4; i < words.size(); ++i)
    EXPECT_FALSE(answer.count(words[i])) << words[i] << " in the last quarter";
  // all-of is order-free: the sample's answers when they are the same set.
  const std::vector<std::string> mine(answer.begin(), answer.end());
  std::vector<std::string> theirs = s.answers;
  std::sort(theirs.begin(), theirs.end());
  return mine == theirs ? s.answers : mine;
}

std::vector<std::string> answer_pattern(const EvalSample& s) {
  const std::vector<std::string> w = words_of(parse(s).body.back());
  for (size_t period = 1; 2 * period <= w.size(); ++period) {
    bool ok = true;
    for (size_t i = period; i < w.size(); ++i) ok = ok && w[i] == w[i - period];
    if (ok) return {w[w.size() - period]};
  }
  return {};
}

std::vector<std::string> answer_sum(const EvalSample& s) {
  std::vector<int> numbers;
  for (const std::string& l : parse(s).body)
    if (l.rfind("the number is ", 0) == 0) numbers.push_back(std::stoi(l.substr(14)));
  EXPECT_GE(numbers.size(), 2u);
  return {std::to_string(numbers[numbers.size() - 1] + numbers[numbers.size() - 2])};
}

std::vector<std::string> answer_count(const EvalSample& s) {
  const Parsed p = parse(s);
  const std::string word = word_after(p.question, "the word ");
  EXPECT_TRUE(p.body.back().empty());  // a blank line before the question
  size_t start = p.body.size() - 1;
  while (start > 0 && !p.body[start - 1].empty()) --start;
  int64_t n = 0;
  for (size_t i = start; i < p.body.size(); ++i)
    for (const std::string& w : words_of(p.body[i])) n += w == word;
  return {std::to_string(n)};
}

TEST(EvalGenerate, AnswersFollowFromThePrompt) {
  const std::map<std::string, std::function<std::vector<std::string>(const EvalSample&)>> read = {
      {"niah_single", answer_needles},
      {"niah_multikey", answer_needles},
      {"niah_multivalue", answer_needles},
      {"niah_multiquery", answer_needles},
      {"kv_retrieval", answer_needles},
      {"variable_tracking", answer_variables},
      {"common_words", [](const EvalSample& s) { return answer_most_frequent(s, 5); }},
      {"frequent_words", [](const EvalSample& s) { return answer_most_frequent(s, 3); }},
      {"repeat_last_line", [](const EvalSample& s) { return std::vector{parse(s).body.back()}; }},
      {"continue_pattern", answer_pattern},
      {"arithmetic_last", answer_sum},
      {"count_word", answer_count},
  };
  ASSERT_EQ(read.size(), eval_tasks().size());
  for (const TaskInfo& t : eval_tasks())
    for (int64_t length : {250, 1500})
      for (int64_t i = 0; i < 4; ++i) {
        const EvalSample s = eval_generate(t.name, length, 5, i, count_words);
        EXPECT_EQ(read.at(t.name)(s), s.answers) << t.name << " sample " << i << ":\n" << s.prompt;
      }
}

TEST(EvalGenerate, KindsAndRules) {
  int64_t sensitive = 0, robust = 0;
  for (const TaskInfo& t : eval_tasks()) (t.kind == TaskKind::sensitive ? sensitive : robust) += 1;
  EXPECT_EQ(sensitive, 8);
  EXPECT_EQ(robust, 4);
  EXPECT_EQ(eval_task_find("niah_multivalue").score, ScoreRule::all_of);
  EXPECT_EQ(eval_task_find("repeat_last_line").kind, TaskKind::robust);
  EXPECT_THROW(eval_task_find("niah"), Error);
}

TEST(EvalGenerate, BudgetTooSmallNamesTheTask) {
  try {
    eval_generate("kv_retrieval", 10, 1, 0, count_words);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("kv_retrieval"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("too short"), std::string::npos) << e.what();
  }
}

TEST(EvalVocab, DefaultIsValidAndBadListsAreNamed) {
  EXPECT_NO_THROW(eval_vocab_validate(eval_vocab_default()));
  auto fails_with = [](EvalVocab v, const std::string& needle) {
    try {
      eval_vocab_validate(v);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  EvalVocab v = eval_vocab_default();
  v.keys.push_back("word");  // a template word
  fails_with(v, "'word'");
  v = eval_vocab_default();
  v.values.push_back(v.keys[0]);  // in two lists
  fails_with(v, v.keys[0]);
  v = eval_vocab_default();
  v.filler.push_back("Big");
  fails_with(v, "'Big'");
  v = eval_vocab_default();
  v.keys.resize(5);
  fails_with(v, "at least 8");
}

TEST(EvalVocab, SmallCustomVocabularyStillGenerates) {
  EvalVocab v;
  v.keys = {"ant", "bee", "cow", "dog", "elk", "hen", "pig", "yak", "emu", "owl", "bat", "cat"};
  v.values = {"one", "zip", "six", "ten", "red", "tan", "sky", "ice", "sea"};
  v.filler = {"the", "a", "walk", "home"};
  v.noise = {"It is what it is."};
  for (const TaskInfo& t : eval_tasks()) {
    // "one" is a template word ("One of the ..."), so this vocabulary is rejected first.
    EXPECT_THROW(eval_generate(t.name, 600, 1, 0, count_words, v), Error);
  }
  v.values[0] = "fig";
  v.values[2] = "gem";
  for (const TaskInfo& t : eval_tasks()) {
    const EvalSample s = eval_generate(t.name, 600, 1, 0, count_words, v);
    EXPECT_LE(count_words(s.prompt), 600);
  }
}

// Pinned samples: FNV-1a of prompt + answers at 300 words, seed 11, index 5.
TEST(EvalGenerate, PinnedHashes) {
  const std::map<std::string, uint64_t> want = {
      {"niah_single", 0x02c84ee0539fe90aull},      {"niah_multikey", 0xfce29b9fab5bffd7ull},
      {"niah_multivalue", 0x9adbad25e7fde642ull},  {"niah_multiquery", 0x8394b59f28cebd74ull},
      {"kv_retrieval", 0x8a24b734c5e18051ull},     {"variable_tracking", 0x20f5fad7e28162f5ull},
      {"common_words", 0xf425dd761309b323ull},     {"frequent_words", 0xce1449b669b7f462ull},
      {"repeat_last_line", 0x7fb957a698928163ull}, {"continue_pattern", 0x55475d3acd0410b9ull},
      {"arithmetic_last", 0x3110474aa068d8f3ull},  {"count_word", 0x9c4bbba8a537d893ull},
  };
  for (const TaskInfo& t : eval_tasks()) {
    const EvalSample s = eval_generate(t.name, 300, 11, 5, count_words);
    std::string all = s.prompt;
    for (const std::string& a : s.answers) all += "|" + a;
    ASSERT_TRUE(want.count(t.name)) << t.name;
    EXPECT_EQ(fnv(all), want.at(t.name)) << t.name << ": 0x" << std::hex << fnv(all);
  }
}

}  // namespace
}  // namespace elastic
