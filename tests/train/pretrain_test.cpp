// Backbone training from scratch (pretrain_run, `elastic train`): the suite's word-level
// tokenizer, the packed data stream, learning on associative recall, resume = a straight run, and
// bad options as one clear error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "elastic/config.h"
#include "elastic/error.h"
#include "elastic/eval.h"
#include "elastic/fileio.h"
#include "elastic/safetensors.h"
#include "elastic/tokenizer.h"
#include "elastic/train.h"

namespace elastic {
namespace {

namespace fs = std::filesystem;

std::string temp_dir(const std::string& name) {
  const fs::path p =
      fs::path(::testing::TempDir()) / ("pretrain_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

const Tokenizer& suite_tokenizer() {
  static const Tokenizer t = Tokenizer::from_json_text(eval_tokenizer_json(), "suite tokenizer");
  return t;
}

// A pack of c's task at `length` tokens (below its smallest sample) is refused, naming the task.
void expect_refused_naming_task(PretrainConfig c, const Tokenizer& tok, int64_t length) {
  c.lengths = {length};
  c.max_tokens = length;
  try {
    (void)pretrain_make_pack(c, tok, 1, 0);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(c.tasks.at(0)), std::string::npos) << e.what();
  }
}

// A model small enough to train in seconds on two cores.
PretrainConfig tiny(const std::string& out) {
  PretrainConfig c;
  c.out_dir = out;
  c.layers = 2;
  c.hidden = 64;
  c.heads = 4;
  c.kv_heads = 2;
  c.head_dim = 16;
  c.ffn = 128;
  c.tasks = {"assoc_recall"};
  c.lengths = {64, 96};
  c.max_tokens = 256;
  c.batch = 2;
  c.steps = 6;
  c.save_every = 2;
  c.lr = 3e-3;
  c.warmup = 0.1;
  return c;
}

std::vector<double> losses(const std::string& metrics) {
  std::vector<double> v;
  std::istringstream in(read_file(metrics));
  for (std::string line; std::getline(in, line);) {
    const size_t at = line.find("\"loss\":");
    if (at != std::string::npos) v.push_back(std::stod(line.substr(at + 7)));
  }
  return v;
}

TEST(SuiteTokenizer, EveryWordIsOneTokenWithAndWithoutItsSpace) {
  const Tokenizer& tok = suite_tokenizer();
  EncodeOptions raw;
  raw.add_special = false;
  for (const std::string& w : eval_vocab_words()) {
    EXPECT_EQ(tok.encode(w, raw).size(), 1u) << w;
    EXPECT_EQ(tok.encode(" " + w, raw).size(), 1u) << w;
  }
  EXPECT_EQ(tok.encode(" 417", raw).size(), 1u);
  // Unknown text falls back to bytes and still round-trips.
  const std::string odd = "Zebra\xc3\xa9 42000 ~~";
  const std::vector<int32_t> ids = tok.encode(odd, raw);
  EXPECT_GT(ids.size(), 3u);
  EXPECT_EQ(tok.decode(ids), odd);
}

TEST(SuiteTokenizer, GeneratedSamplesRoundTripAndStartWithEndOfText) {
  const Tokenizer& tok = suite_tokenizer();
  const int32_t eos = *tok.token_to_id("<|endoftext|>");
  EXPECT_EQ(eos, tok.vocab_size() - 1);
  for (const TaskInfo& t : eval_tasks()) {
    const EvalSample s = eval_generate(t.name, 512, 7, 0, eval_token_counter(tok, true));
    EncodeOptions special;
    special.add_special = true;
    const std::vector<int32_t> ids = tok.encode(s.prompt, special);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids[0], eos) << t.name;
    EXPECT_EQ(tok.decode(std::span(ids).subspan(1)), s.prompt) << t.name;
    // Words are whole tokens: far fewer tokens than characters.
    EXPECT_LT(ids.size() * 3, s.prompt.size()) << t.name;
  }
}

TEST(PretrainData, PacksAreDeterministicBoundedAndLabelledAsNextTokens) {
  const Tokenizer& tok = suite_tokenizer();
  PretrainConfig c = tiny("");
  c.tasks = {};  // every eval task
  c.lengths = {256, 512};
  c.max_tokens = 2048;
  const auto t0 = std::chrono::steady_clock::now();
  const PretrainPack a = pretrain_make_pack(c, tok, 3, 1);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("one pack of %zu tokens in %.3f s (%.0f tokens/s of data on this machine)\n",
              a.ids.size(), s, double(a.ids.size()) / s);
  const PretrainPack b = pretrain_make_pack(c, tok, 3, 1);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_NE(pretrain_make_pack(c, tok, 4, 1).ids, a.ids);
  ASSERT_GE(a.cu_seqlens.size(), 2u);
  EXPECT_LE(int64_t(a.ids.size()), c.max_tokens);
  EXPECT_EQ(a.cu_seqlens.back(), int64_t(a.ids.size()));
  const int32_t eos = *tok.token_to_id("<|endoftext|>");
  for (size_t s2 = 0; s2 + 1 < a.cu_seqlens.size(); ++s2) {
    const int64_t lo = a.cu_seqlens[s2], hi = a.cu_seqlens[s2 + 1];
    EXPECT_LE(hi - lo, 512) << "sample " << s2 << " (" << a.tasks[s2] << ")";
    EXPECT_EQ(a.ids[size_t(lo)], eos);          // starts with the start token
    EXPECT_EQ(a.ids[size_t(hi - 1)], eos);      // ends with the end token
    EXPECT_EQ(a.labels[size_t(hi - 1)], -100);  // no label across samples
    for (int64_t t = lo; t + 1 < hi; ++t) ASSERT_EQ(a.labels[size_t(t)], a.ids[size_t(t + 1)]);
    EXPECT_EQ(a.answer[size_t(hi - 1)], 1);
  }
  c.answer_only_labels = true;
  const PretrainPack ans = pretrain_make_pack(c, tok, 3, 1);
  EXPECT_EQ(ans.ids, a.ids);
  for (size_t t = 0; t + 1 < ans.ids.size(); ++t) {
    if (ans.labels[t] != -100) {
      EXPECT_EQ(ans.answer[t + 1], 1);
    }
  }
}

TEST(PretrainData, AssocRecallQueriesAskKeysOfThePairsWithTheirValues) {
  const Tokenizer& tok = suite_tokenizer();
  PretrainConfig c = tiny("");
  c.lengths = {200};
  c.max_tokens = 200;
  const PretrainPack p = pretrain_make_pack(c, tok, 1, 0);
  ASSERT_EQ(p.tasks.size(), 1u);
  const std::vector<int32_t> ids(p.ids.begin() + 1, p.ids.end() - 1);
  const std::string text = tok.decode(ids);
  const size_t nl = text.find('\n', text.find('\n') + 1);
  ASSERT_NE(nl, std::string::npos) << text;
  std::map<std::string, std::string> pairs;
  std::istringstream head(text.substr(text.find('\n') + 1, nl - text.find('\n') - 1));
  for (std::string k, v; head >> k >> v;) pairs[k] = v.substr(0, v.size() - 1);
  EXPECT_GE(pairs.size(), 20u);
  std::istringstream tail(text.substr(nl + 1));
  int queries = 0;
  for (std::string k, v; tail >> k >> v; ++queries) {
    ASSERT_TRUE(pairs.count(k)) << k;
    EXPECT_EQ(pairs[k], v.substr(0, v.size() - 1)) << k;
  }
  EXPECT_GE(queries, 5);
  int answers = 0;
  for (uint8_t a : p.answer) answers += a;
  EXPECT_EQ(answers, queries + 1);  // every query value and the end token
}

TEST(PretrainData, CopyWordsRepeatsItsWordsAsAnswers) {
  const Tokenizer& tok = suite_tokenizer();
  PretrainConfig c = tiny("");
  c.tasks = {"copy_words"};
  c.lengths = {120};
  c.max_tokens = 120;
  const PretrainPack p = pretrain_make_pack(c, tok, 1, 0);
  ASSERT_EQ(p.tasks.size(), 1u);
  EXPECT_EQ(p.tasks[0], "copy_words");
  EXPECT_LE(p.ids.size(), 120u);
  const std::vector<int32_t> ids(p.ids.begin() + 1, p.ids.end() - 1);
  const std::string text = tok.decode(ids);
  const size_t first = text.find('\n'), second = text.find('\n', first + 1);
  ASSERT_EQ(text.substr(0, first), "Copy the words.");
  ASSERT_NE(second, std::string::npos) << text;
  const std::string words = text.substr(first + 1, second - first - 1);
  EXPECT_EQ(text.substr(second + 1), words);
  const int64_t n = std::count(words.begin(), words.end(), ' ');
  EXPECT_GE(n, 50);
  // Every word of the copy (one token each) and the end token are answers, nothing else.
  int64_t answers = 0;
  for (uint8_t a : p.answer) answers += a;
  EXPECT_EQ(answers, n + 1);
  for (size_t t = p.ids.size() - size_t(n) - 1; t < p.ids.size(); ++t) EXPECT_EQ(p.answer[t], 1);
}

// Recall in the suite's templates: statements "The value of K is V." (or the needle wording)
// with distinct keys, then questions of those keys, each answered by the key's value; the
// values (and the end token) are the answers, and every sample stays within its length.
TEST(PretrainData, TemplateRecallAnswersEachQuestionWithItsKeysValue) {
  const Tokenizer& tok = suite_tokenizer();
  PretrainConfig c = tiny("");
  c.tasks = {"template_recall"};
  std::set<std::string> families;
  for (int64_t L : {96, 300, 1000}) {
    c.lengths = {L};
    c.max_tokens = L;
    for (int64_t step = 1; step <= 6; ++step) {
      const PretrainPack p = pretrain_make_pack(c, tok, step, 0);
      ASSERT_EQ(p.tasks.size(), 1u);
      EXPECT_LE(int64_t(p.ids.size()), L);
      const std::vector<int32_t> ids(p.ids.begin() + 1, p.ids.end() - 1);
      const std::string text = tok.decode(ids);
      const std::regex statement(R"((?:The value of|The special magic word for) (\w+) is (\w+)\.)");
      const std::regex question(
          R"(Question: What is (?:the value of|the special magic word for) (\w+)(?: mentioned in the provided text)?\? Answer: (\w+))");
      std::map<std::string, std::string> pairs;
      for (auto it = std::sregex_iterator(text.begin(), text.end(), statement);
           it != std::sregex_iterator(); ++it) {
        EXPECT_FALSE(pairs.count((*it)[1])) << "key repeated: " << (*it)[1];
        pairs[(*it)[1]] = (*it)[2];
      }
      families.insert(text.find("magic word") != std::string::npos ? "niah" : "kv");
      EXPECT_GE(pairs.size(), 2u) << text;
      int64_t questions = 0;
      for (auto it = std::sregex_iterator(text.begin(), text.end(), question);
           it != std::sregex_iterator(); ++it, ++questions) {
        ASSERT_TRUE(pairs.count((*it)[1])) << (*it)[1];
        EXPECT_EQ(pairs[(*it)[1]], (*it)[2]) << text;
      }
      EXPECT_GE(questions, 1) << text;
      if (L >= 300) {
        EXPECT_GE(questions, 5) << text;
      }
      int64_t answers = 0;
      for (uint8_t a : p.answer) answers += a;
      EXPECT_EQ(answers, questions + 1);  // every value asked for (one token) and the end token
    }
  }
  EXPECT_EQ(families.size(), 2u);  // both templates drawn
  expect_refused_naming_task(c, tok, 40);  // below two statements and a question
}

// restate_recall: the statements of template_recall, then questions that restate a statement up
// to its value ("The value of K is" -> V, then "."): every value asked for is its key's, and
// only the values (and the end token) are answers.
TEST(PretrainData, RestateRecallAsksByRestatingTheStatement) {
  const Tokenizer& tok = suite_tokenizer();
  PretrainConfig c = tiny("");
  c.tasks = {"restate_recall"};
  for (int64_t L : {96, 300}) {
    c.lengths = {L};
    c.max_tokens = L;
    for (int64_t step = 1; step <= 4; ++step) {
      const PretrainPack p = pretrain_make_pack(c, tok, step, 0);
      EXPECT_LE(int64_t(p.ids.size()), L);
      const std::vector<int32_t> ids(p.ids.begin() + 1, p.ids.end() - 1);
      const std::string text = tok.decode(ids);
      EXPECT_EQ(text.find("Question"), std::string::npos) << text;
      const std::regex statement(R"((?:The value of|The special magic word for) (\w+) is (\w+)\.)");
      std::map<std::string, std::string> pairs;
      int64_t lines = 0;
      for (auto it = std::sregex_iterator(text.begin(), text.end(), statement);
           it != std::sregex_iterator(); ++it, ++lines) {
        const auto [at, fresh] = pairs.emplace((*it)[1], (*it)[2]);
        EXPECT_EQ(at->second, (*it)[2]) << "a restatement names another value: " << text;
      }
      const int64_t questions = lines - int64_t(pairs.size());
      EXPECT_GE(questions, 1) << text;
      int64_t answers = 0;
      for (uint8_t a : p.answer) answers += a;
      // A question repeating a key is certain once there are more questions than keys; below
      // that, a restatement of a key never asked before counts as a statement here, so the
      // answers are at least the questions counted this way.
      EXPECT_GE(answers, questions + 1);
      // The answers are the value tokens: each decodes to a word that is some key's value.
      for (size_t t = 0; t + 1 < p.ids.size(); ++t)
        if (p.answer[t] && p.ids[t] != p.ids.back()) {
          std::string w = tok.decode(std::vector<int32_t>{int32_t(p.ids[t])});
          w.erase(0, w.find_first_not_of(' '));
          bool found = false;
          for (const auto& [k, val] : pairs) found = found || val == w;
          EXPECT_TRUE(found) << w;
        }
    }
  }
}

// copy_statements: statements in a suite template with distinct keys, then the same statements
// again in order; exactly the copy's tokens (and the end token) are answers.
TEST(PretrainData, CopyStatementsRepeatsTheStatementsAsAnswers) {
  const Tokenizer& tok = suite_tokenizer();
  PretrainConfig c = tiny("");
  c.tasks = {"copy_statements"};
  for (int64_t L : {64, 300}) {
    c.lengths = {L};
    c.max_tokens = L;
    for (int64_t step = 1; step <= 4; ++step) {
      const PretrainPack p = pretrain_make_pack(c, tok, step, 0);
      EXPECT_LE(int64_t(p.ids.size()), L);
      // The answers: one run at the end (the copy, then the end token).
      size_t first = p.answer.size();
      for (size_t t = 0; t < p.answer.size(); ++t)
        if (p.answer[t]) {
          first = t;
          break;
        }
      ASSERT_LT(first, p.answer.size());
      for (size_t t = first; t < p.answer.size(); ++t) EXPECT_EQ(p.answer[t], 1) << t;
      const size_t copy = p.answer.size() - 1 - first;  // tokens of the copy
      ASSERT_GE(first, copy);
      const std::vector<int64_t> original(p.ids.begin() + int64_t(first - copy),
                                          p.ids.begin() + int64_t(first));
      const std::vector<int64_t> repeated(p.ids.begin() + int64_t(first), p.ids.end() - 1);
      EXPECT_EQ(original, repeated);
      std::vector<int32_t> ids32(original.begin(), original.end());
      const std::string text = tok.decode(ids32);
      const std::regex statement(R"((?:The value of|The special magic word for) (\w+) is (\w+)\.)");
      std::set<std::string> keys;
      int64_t n = 0;
      for (auto it = std::sregex_iterator(text.begin(), text.end(), statement);
           it != std::sregex_iterator(); ++it, ++n)
        keys.insert((*it)[1]);
      EXPECT_GE(n, L >= 300 ? 10 : 1) << text;
      EXPECT_EQ(int64_t(keys.size()), n) << "keys repeat: " << text;
    }
  }
  expect_refused_naming_task(c, tok, 16);  // below a statement and its copy
}

// --task-lengths: a task draws its samples from its own lengths (short ones for the tasks
// answered from the prompt's end), the others from --lengths; every pack stays within
// max_tokens; a task that is not trained on, or an unknown one, is refused by name.
TEST(PretrainData, TaskLengthsGiveATaskItsOwnLengths) {
  const Tokenizer& tok = suite_tokenizer();
  PretrainConfig c = tiny("");
  c.tasks = {"count_word", "niah_single"};
  c.lengths = {512};
  c.task_lengths = {{"count_word", {128, 160}}};
  c.max_tokens = 4096;
  std::map<std::string, int> seen;
  for (int64_t step = 1; step <= 4; ++step) {
    const PretrainPack p = pretrain_make_pack(c, tok, step, 0);
    EXPECT_LE(p.ids.size(), 4096u);
    for (size_t i = 0; i < p.tasks.size(); ++i) {
      const int64_t n = p.cu_seqlens[i + 1] - p.cu_seqlens[i];
      ++seen[p.tasks[i]];
      if (p.tasks[i] == "count_word")
        EXPECT_LE(n, 160) << "step " << step;
      else
        EXPECT_GT(n, 160) << p.tasks[i] << " step " << step;  // a 512-token sample
    }
  }
  EXPECT_GT(seen["count_word"], 4);
  EXPECT_GT(seen["niah_single"], 4);
  c.task_lengths = {{"kv_retrieval", {128}}};  // not in --tasks
  EXPECT_THROW(
      {
        try {
          PretrainConfig bad = c;
          bad.out_dir = temp_dir("task_lengths") + "/out";
          bad.steps = 1;
          pretrain_run(bad);
        } catch (const Error& e) {
          EXPECT_NE(
              std::string(e.what()).find("--task-lengths kv_retrieval: the task is not in --tasks"),
              std::string::npos)
              << e.what();
          throw;
        }
      },
      Error);
}

TEST(Pretrain, LossFallsOnAssociativeRecallAndTheOutputLoadsAsAModel) {
  const std::string dir = temp_dir("learn");
  PretrainConfig c = tiny(dir + "/out");
  c.steps = 40;
  c.save_every = 40;
  c.eval_every = 20;
  c.eval_samples = 2;
  ASSERT_EQ(pretrain_run(c), TrainStatus::finished);
  const std::vector<double> l = losses(dir + "/out/metrics.jsonl");
  ASSERT_EQ(l.size(), 40u);
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) first += l[size_t(i)] / 5, last += l[l.size() - 1 - size_t(i)] / 5;
  // From ~ln(2891) = 7.97 at random init; the uniform over the suite's words is far above what
  // 40 steps reach on a task whose text uses ~200 words.
  EXPECT_GT(first, 7.0);
  EXPECT_LT(last, first - 1.5) << "first " << first << " last " << last;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json",
                        "generation_config.json", "train_state.safetensors"})
    EXPECT_TRUE(fs::exists(dir + "/out/" + f)) << f;
  const std::string m = read_file(dir + "/out/metrics.jsonl");
  EXPECT_NE(m.find("\"probe\":{\"assoc_recall\":{\"ce_fa\""), std::string::npos);
}

TEST(Pretrain, ResumeEqualsAStraightRun) {
  const std::string dir = temp_dir("resume");
  PretrainConfig straight = tiny(dir + "/straight");
  ASSERT_EQ(pretrain_run(straight), TrainStatus::finished);

  PretrainConfig part = tiny(dir + "/part");
  int steps_seen = 0;
  PretrainCallbacks cb;
  cb.on_step = [&](const PretrainMetrics&) { ++steps_seen; };
  cb.should_stop = [&] { return steps_seen == 3; };  // not a multiple of save_every
  ASSERT_EQ(pretrain_run(part, cb), TrainStatus::interrupted);
  part.resume = true;
  ASSERT_EQ(pretrain_run(part), TrainStatus::finished);
  for (const char* f : {"model.safetensors", "train_state.safetensors", "metrics.jsonl"}) {
    if (std::string(f) == "metrics.jsonl") {
      // Equal but for the wall time of each step.
      auto strip = [](std::string s) {
        std::string out;
        std::istringstream in(s);
        for (std::string line; std::getline(in, line);)
          out += line.substr(0, line.find("\"seconds\"")) + "\n";
        return out;
      };
      EXPECT_EQ(strip(read_file(dir + "/part/" + std::string(f))),
                strip(read_file(dir + "/straight/" + std::string(f))));
    } else {
      EXPECT_EQ(read_file(dir + "/part/" + std::string(f)),
                read_file(dir + "/straight/" + std::string(f)))
          << f;
    }
  }
}

void expect_error(const PretrainConfig& c, const std::string& needle);

// --arch llama: the same trainer without qk-norm; the folder is a Llama model with no
// q_norm/k_norm tensors, and it learns.
TEST(Pretrain, LlamaArchitectureHasNoQkNormAndLearns) {
  const std::string dir = temp_dir("llama");
  PretrainConfig c = tiny(dir + "/out");
  c.arch = "llama";
  c.steps = 20;
  c.save_every = 20;
  ASSERT_EQ(pretrain_run(c), TrainStatus::finished);
  const ModelConfig mc = config_load(dir + "/out/config.json");
  EXPECT_EQ(mc.family, ModelFamily::llama);
  EXPECT_FALSE(mc.qk_norm);
  EXPECT_EQ(mc.head_dim, 16);
  const std::string weights = read_file(dir + "/out/model.safetensors");
  EXPECT_EQ(weights.find("q_norm"), std::string::npos);
  EXPECT_NE(weights.find("q_proj"), std::string::npos);
  const std::vector<double> l = losses(dir + "/out/metrics.jsonl");
  EXPECT_LT(l.back(), l.front() - 1.0) << "first " << l.front() << " last " << l.back();
  c = tiny(dir + "/bad");
  c.arch = "gpt2";
  expect_error(c, "--arch is \"gpt2\"");
}

// --qk-gain starts the qk-norm gains there (a fresh Qwen3 model; lr 0 keeps the init), and is
// refused for Llama, which has no qk-norm.
TEST(Pretrain, QkGainSetsTheInitialQkNormGains) {
  const std::string dir = temp_dir("qkgain");
  PretrainConfig c = tiny(dir + "/out");
  c.qk_gain = 3.0;
  c.steps = 1;
  c.save_every = 1;
  c.lr = 0.0;
  ASSERT_EQ(pretrain_run(c), TrainStatus::finished);
  WeightStore w = WeightStore::open(dir + "/out");
  const std::vector<float> q = w.get("model.layers.0.self_attn.q_norm.weight").to_f32();
  const std::vector<float> k = w.get("model.layers.1.self_attn.k_norm.weight").to_f32();
  const std::vector<float> n = w.get("model.layers.0.input_layernorm.weight").to_f32();
  ASSERT_FALSE(q.empty());
  for (float v : q) EXPECT_EQ(v, 3.f);
  for (float v : k) EXPECT_EQ(v, 3.f);
  for (float v : n) EXPECT_EQ(v, 1.f);  // the other norms stay at 1
  c = tiny(dir + "/llama");
  c.arch = "llama";
  c.qk_gain = 2.0;
  expect_error(c, "only --arch qwen3 has them");
  c = tiny(dir + "/zero");
  c.qk_gain = 0.0;
  expect_error(c, "--qk-gain must be a positive number");
}

// --stop-ce ends the run at the first probe where every task is learned: with a bound above
// any CE at the first probe (step 2), and never with a bound no CE reaches.
TEST(Pretrain, StopCeFinishesAtTheFirstProbeBelowTheBound) {
  const std::string dir = temp_dir("stopce");
  PretrainConfig c = tiny(dir + "/loose");
  c.eval_every = 2;
  c.eval_samples = 1;
  c.stop_ce = 50.0;
  ASSERT_EQ(pretrain_run(c), TrainStatus::finished);
  EXPECT_EQ(losses(dir + "/loose/metrics.jsonl").size(), 2u);
  EXPECT_TRUE(fs::exists(dir + "/loose/model.safetensors"));
  c = tiny(dir + "/tight");
  c.eval_every = 2;
  c.eval_samples = 1;
  c.stop_ce = 1e-9;
  ASSERT_EQ(pretrain_run(c), TrainStatus::finished);
  EXPECT_EQ(losses(dir + "/tight/metrics.jsonl").size(), size_t(c.steps));
  c = tiny(dir + "/noprobe");
  c.stop_ce = 1.0;
  expect_error(c, "--stop-ce needs --eval-every");
}

// Head-mix runs half of the KV heads in SSA: with a window that covers every sample it must not
// change anything (SSA with a huge window = FA); with a small window it must.
TEST(Pretrain, HeadMixIsSsaOnHalfTheHeads) {
  const std::string dir = temp_dir("headmix");
  auto first_loss = [&](const std::string& name, double mix, int64_t local) {
    PretrainConfig c = tiny(dir + "/" + name);
    c.steps = 1;
    c.save_every = 1;
    c.head_mix = mix;
    c.ssa = SsaOptions{4, 4, local};
    EXPECT_EQ(pretrain_run(c), TrainStatus::finished);
    return losses(dir + "/" + name + "/metrics.jsonl").at(0);
  };
  const double dense = first_loss("dense", 0.0, 8);
  // fp32 sums in the same order either way; a different order would still agree to ~1e-6.
  EXPECT_NEAR(first_loss("wide", 1.0, 4096), dense, 1e-6 * dense);
  EXPECT_NE(first_loss("narrow", 1.0, 8), dense);
}

void expect_error(const PretrainConfig& c, const std::string& needle) {
  try {
    pretrain_run(c);
    ADD_FAILURE() << "no error; expected one containing: " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Pretrain, BadOptionsAreOneClearError) {
  const std::string dir = temp_dir("bad");
  PretrainConfig c = tiny(dir + "/a");
  c.tasks = {"assoc_recall", "needle"};
  expect_error(c, "unknown task 'needle' (tasks: niah_single");
  c = tiny(dir + "/a");
  c.lengths = {64, 512};
  expect_error(c, "--lengths: 512 exceeds --max-tokens 256");
  c = tiny(dir + "/a");
  c.resume = true;
  expect_error(c, "holds no training state");
  c = tiny(dir + "/a");
  c.steps = 2;
  ASSERT_EQ(pretrain_run(c), TrainStatus::finished);
  expect_error(c, "already holds a training run");
  c.resume = true;
  c.lr = 1e-2;
  expect_error(c, "the saved run has lr = 0.003, this run 0.01");
  c = tiny(dir + "/b");
  c.tasks = {"niah_single"};
  c.lengths = {40};
  expect_error(c, "niah_single");  // the smallest haystack does not fit 40 tokens
}

}  // namespace
}  // namespace elastic
