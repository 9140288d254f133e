// pretrain_run (train.h): backbone training from scratch on the evaluation suite's generators.
//
//   per optimizer step t (1-based) of N:
//     packs 0..batch-1 of step t: a pure function of (seed, t, pack), so the data needs no
//       position in the checkpoint and a resumed run sees exactly the samples a straight run does
//     forward + backward of every pack (engine, fixed routing: FA, or half of the KV heads SSA
//       for head-mix samples); CE normalised by the labelled tokens of the whole step
//     clip to global norm `clip`; AdamW (linear warm-up, cosine to min_lr_ratio x lr)
//     metrics line; held-out probe every eval_every steps; checkpoint every save_every steps
//
// The probe runs the engine without gradients on held-out samples (seeds no step draws) with
// answer-only labels: the answer CE per task with every head FA and with every head SSA, the
// learning curve of each task and of its sensitivity to sparsity.
#include <cctype>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "elastic/config.h"
#include "elastic/dtype.h"
#include "elastic/error.h"
#include "elastic/eval.h"
#include "elastic/fileio.h"
#include "elastic/plot.h"
#include "elastic/tokenizer.h"
#include "elastic/train.h"
#include "eval/eval_internal.h"
#include "train/checkpoint.h"
#include "train/engine.h"
#include "train/rng.h"

namespace elastic {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace train;
using eval_detail::EvalRng;
using eval_detail::seed_of;

namespace {

constexpr const char* kStateFile = "train_state.safetensors";
constexpr const char* kStateKey = "elastic_pretrain_state";
constexpr int kStateVersion = 1;
constexpr const char* kAssoc = "assoc_recall";
constexpr const char* kCopy = "copy_words";
constexpr const char* kTemplateRecall = "template_recall";
constexpr const char* kRestateRecall = "restate_recall";
constexpr const char* kCopyStatements = "copy_statements";
// Tokens kept free after a generated prompt for its completion and end of text.
constexpr int64_t kAnswerMargin = 24;
// Seed streams: training packs use (seed, step, pack); the probe uses step 0, which no
// optimizer step (1-based) draws.
constexpr uint64_t kSampleStream = 0x53414d50u;  // "SAMP"

std::vector<int64_t> encode(const Tokenizer& tok, const std::string& text, bool special) {
  EncodeOptions eo;
  eo.add_special = special;
  const std::vector<int32_t> ids = tok.encode(text, eo);
  return {ids.begin(), ids.end()};
}

int64_t eos_of(const Tokenizer& tok) {
  const std::optional<int32_t> id = tok.token_to_id("<|endoftext|>");
  if (!id) throw Error(tok.source() + ": the tokenizer has no <|endoftext|> token");
  return *id;
}

struct Sample {
  std::vector<int64_t> ids;
  std::vector<uint8_t> answer;  // [ids] 1 = a token the model should produce from the context

  // Appends the tokens of `text`, each marked as an answer or not.
  void add(const Tokenizer& tok, const std::string& text, bool answer, bool special = false) {
    for (int64_t id : encode(tok, text, special)) {
      ids.push_back(id);
      this->answer.push_back(answer ? 1 : 0);
    }
  }
  // Ends the sample with the end-of-text token, an answer (the model must stop there).
  void end(int64_t eos) {
    ids.push_back(eos);
    answer.push_back(1);
  }
};

// Multi-query associative recall (Zoology's MQAR in words): "Remember each pair." then N pairs
// " key value." with distinct keys, then queries " key value." of those keys. A query's value
// is an answer token: only retrieval predicts it.
Sample assoc_recall_sample(const Tokenizer& tok, int64_t eos, int64_t length, uint64_t seed) {
  const EvalVocab& v = eval_vocab_default();
  EvalRng rng(seed);
  Sample s;
  s.add(tok, "Remember each pair.\n", false, true);
  const int64_t budget = std::max<int64_t>(length - int64_t(s.ids.size()) - 4, 12);
  const int64_t n = std::clamp<int64_t>(budget / 6, 2, int64_t(v.keys.size()));
  const std::vector<std::string> keys = rng.sample(v.keys, size_t(n));
  std::vector<std::string> values(static_cast<size_t>(n));
  for (auto& x : values) x = rng.pick(v.values);
  for (int64_t i = 0; i < n; ++i)
    s.add(tok, " " + keys[size_t(i)] + " " + values[size_t(i)] + ".", false);
  s.add(tok, "\n", false);
  while (int64_t(s.ids.size()) + 4 <= length) {
    const int64_t i = static_cast<int64_t>(rng.below(uint64_t(n)));
    s.add(tok, " " + keys[size_t(i)], false);
    s.add(tok, " " + values[size_t(i)], true);
    s.add(tok, ".", false);
  }
  s.end(eos);
  return s;
}

// Copying (the setting where induction heads form): "Copy the words." then N words drawn from
// the keys, values and filler, a newline, and the same N words again. Every repeated word is an
// answer token: only attending to the token after the previous occurrence of the current one
// predicts it, the mechanism that retrieval in the suite's tasks needs, with half of each
// sample's tokens supervising it (associative recall: one answer in seven tokens).
Sample copy_words_sample(const Tokenizer& tok, int64_t eos, int64_t length, uint64_t seed) {
  const EvalVocab& v = eval_vocab_default();
  EvalRng rng(seed);
  Sample s;
  s.add(tok, "Copy the words.\n", false, true);
  const int64_t n = std::max<int64_t>((length - int64_t(s.ids.size()) - 2) / 2, 1);
  std::vector<std::string> words(static_cast<size_t>(n));
  for (auto& w : words) {
    const uint64_t list = rng.below(3);
    w = rng.pick(list == 0 ? v.keys : list == 1 ? v.values : v.filler);
  }
  for (const std::string& w : words) s.add(tok, " " + w, false);
  s.add(tok, "\n", false);
  for (const std::string& w : words) s.add(tok, " " + w, true);
  s.end(eos);
  return s;
}

// Associative recall in the suite's own words: a needle or key-value task's instruction, N
// statements of its template with distinct keys ("The value of K is V.", "The special magic
// word for K is V."), one a line and no filler, then questions of those keys in its question
// template, each followed by its value (an answer token). In assoc_recall the value follows its
// key at once, the offset an induction head copies; here it stands two or more tokens after the
// key, as in niah_multikey, niah_multiquery and kv_retrieval, with one answer per question
// rather than one per 2048-token sample (docs/model.md, run 4).
//
// restate_recall (`restate`): the same statements, but each question restates its statement up
// to the value ("The value of K is" -> V): the key stands right before the linking word, as in
// assoc_recall but two tokens from the value, the step between assoc_recall and the suite's
// questions, where the key stands three or more tokens back (docs/model.md, run 5).
Sample template_recall_sample(const Tokenizer& tok, int64_t eos, int64_t length, uint64_t seed,
                              bool restate) {
  const char* task = restate ? kRestateRecall : kTemplateRecall;
  const EvalVocab& v = eval_vocab_default();
  EvalRng rng(seed);
  using eval_detail::template_fill;
  // Token counts of a statement, a question and the instruction, the larger of the two
  // families' (every key and value of the suite's vocabulary is one token): a length fits
  // every sample of the task or none.
  const char* kFamilies[] = {"kv_retrieval", "niah_multikey"};
  const std::string k0 = v.keys.front(), v0 = v.values.front();
  int64_t statement = 0, question = 0, header = 0;
  for (const char* f : kFamilies) {
    const eval_detail::TaskTemplates& t = eval_detail::task_templates(f);
    const std::string st = template_fill(t.statement, {{"key", k0}, {"value", v0}}) + "\n";
    const std::string q = restate ? st : template_fill(t.question, {{"key", k0}}) + " " + v0 + "\n";
    statement = std::max(statement, int64_t(encode(tok, st, false).size()));
    question = std::max(question, int64_t(encode(tok, q, false).size()));
    header = std::max(header, int64_t(encode(tok, std::string(t.instruction) + "\n", true).size()));
  }
  const eval_detail::TaskTemplates& t = eval_detail::task_templates(kFamilies[rng.below(2)]);
  Sample s;
  s.add(tok, std::string(t.instruction) + "\n", false, true);
  if (header + 2 * statement + question + 1 > length)
    throw Error(std::string("task ") + task + ": a sample needs at least " +
                std::to_string(header + 2 * statement + question + 1) +
                " tokens (two statements and a question); --lengths asks for " +
                std::to_string(length));
  // About half of the room for statements, the rest for questions (at least one).
  int64_t n = std::clamp<int64_t>((length - header) / 2 / statement, 2, int64_t(v.keys.size()));
  while (n > 2 && header + n * statement + question + 1 > length) --n;
  const std::vector<std::string> keys = rng.sample(v.keys, size_t(n));
  std::vector<std::string> values(static_cast<size_t>(n));
  for (auto& x : values) x = rng.pick(v.values);
  for (int64_t i = 0; i < n; ++i)
    s.add(
        tok,
        template_fill(t.statement, {{"key", keys[size_t(i)]}, {"value", values[size_t(i)]}}) + "\n",
        false);
  // The statement template around its value: "The value of {key} is" + " V" + "." (restate).
  const std::string st(t.statement);
  const size_t at = st.find("{value}");
  if (restate && (at == std::string::npos || at == 0 || st[at - 1] != ' '))
    throw Error(std::string("task ") + task + ": statement template without \" {value}\": " + st);
  while (int64_t(s.ids.size()) + question + 1 <= length) {
    const int64_t i = static_cast<int64_t>(rng.below(uint64_t(n)));
    const std::vector<std::pair<std::string, std::string>> key = {{"key", keys[size_t(i)]}};
    s.add(tok, restate ? template_fill(st.substr(0, at - 1), key) : template_fill(t.question, key),
          false);
    s.add(tok, " " + values[size_t(i)], true);
    s.add(tok, (restate ? template_fill(st.substr(at + 7), key) : std::string()) + "\n", false);
  }
  s.end(eos);
  return s;
}

// Copying in the suite's templates: a needle or key-value task's statements ("The value of K is
// V.") with distinct keys, then the same statements again in order, every token of the copy an
// answer. The linking words repeat in every statement, so the head that copies "the token after
// the last occurrence of the current one" (copy_words' induction) cannot copy a key or a value:
// the copy needs the token two or more back, the lookup of the key-matching tasks, with every
// token of the copy supervising it (docs/model.md, run 6).
Sample copy_statements_sample(const Tokenizer& tok, int64_t eos, int64_t length, uint64_t seed) {
  const EvalVocab& v = eval_vocab_default();
  EvalRng rng(seed);
  using eval_detail::template_fill;
  const char* kFamilies[] = {"kv_retrieval", "niah_multikey"};
  const eval_detail::TaskTemplates& t = eval_detail::task_templates(kFamilies[rng.below(2)]);
  Sample s;
  s.add(tok, "Copy the statements.\n", false, true);
  // Every key and value of the suite's vocabulary is one token: all statements have this size.
  const int64_t statement = int64_t(
      encode(tok,
             template_fill(t.statement, {{"key", v.keys.front()}, {"value", v.values.front()}}) +
                 "\n",
             false)
          .size());
  const int64_t room = length - int64_t(s.ids.size()) - 1;  // the end token
  if (room < 2 * statement)
    throw Error("task copy_statements: a sample needs at least " +
                std::to_string(length - room + 2 * statement) +
                " tokens (a statement and its copy); --lengths asks for " + std::to_string(length));
  const int64_t n = std::min<int64_t>(room / (2 * statement), int64_t(v.keys.size()));
  const std::vector<std::string> keys = rng.sample(v.keys, size_t(n));
  std::vector<std::string> lines;
  for (const std::string& k : keys)
    lines.push_back(template_fill(t.statement, {{"key", k}, {"value", rng.pick(v.values)}}) + "\n");
  for (const std::string& line : lines) s.add(tok, line, false);
  for (const std::string& line : lines) s.add(tok, line, true);
  s.end(eos);
  return s;
}

// An upper bound of the suite tokenizer's token count of a generated text, without running
// the tokenizer (the generators bisect over haystack sizes, so they count many times): one
// token per run of letters, run of digits, punctuation character and run of newlines, plus the
// start token. The tokenizer joins some of these (".\n" is one token), never splits them.
int64_t fast_token_bound(const std::string& text) {
  // 0 space, 1 letter, 2 digit, 3 newline, 4 punctuation (one token each).
  auto kind = [](char x) {
    if (std::isalpha(static_cast<unsigned char>(x))) return 1;
    if (std::isdigit(static_cast<unsigned char>(x))) return 2;
    if (x == ' ') return 0;
    if (x == '\n') return 3;
    return 4;
  };
  int64_t n = 1;
  int prev = 0;
  for (char ch : text) {
    const int k = kind(ch);
    if (k == 4 || (k != 0 && k != prev)) ++n;
    prev = k;
  }
  return n;
}

Sample task_sample(const std::string& task, const Tokenizer& tok, int64_t eos, int64_t length,
                   uint64_t seed) {
  if (task == kAssoc) return assoc_recall_sample(tok, eos, length, seed);
  if (task == kCopy) return copy_words_sample(tok, eos, length, seed);
  if (task == kTemplateRecall) return template_recall_sample(tok, eos, length, seed, false);
  if (task == kRestateRecall) return template_recall_sample(tok, eos, length, seed, true);
  if (task == kCopyStatements) return copy_statements_sample(tok, eos, length, seed);
  // The bound keeps a sample within `length`; its exact size is what the tokenizer gives.
  const EvalSample e =
      eval_generate(task, std::max<int64_t>(length - kAnswerMargin, 1), seed, 0, fast_token_bound);
  Sample s;
  s.add(tok, e.prompt, false, true);
  s.add(tok, eval_sample_completion(e), true);
  s.end(eos);
  return s;
}

struct Planned {
  std::string task;
  int64_t length = 0;
  uint64_t seed = 0;
};

// The lengths task `task` draws from: its own (task_lengths), else --lengths.
const std::vector<int64_t>& lengths_of(const PretrainConfig& pc, const std::string& task) {
  const auto it = pc.task_lengths.find(task);
  return it == pc.task_lengths.end() ? pc.lengths : it->second;
}

// The samples of one pack: lengths drawn from those that still fit, tasks uniformly. With
// per-task lengths, the task first (among those with a length that fits), then its length.
std::vector<Planned> plan_pack(const PretrainConfig& pc, const std::vector<std::string>& tasks,
                               int64_t step, int64_t pack) {
  EvalRng rng(seed_of(pc.seed ^ kSampleStream, uint64_t(step), uint64_t(pack)));
  std::vector<Planned> out;
  int64_t left = pc.max_tokens;
  if (!pc.task_lengths.empty()) {
    for (int64_t k = 0;; ++k) {
      std::vector<std::string> can;
      for (const std::string& t : tasks)
        for (int64_t L : lengths_of(pc, t))
          if (L <= left) {
            can.push_back(t);
            break;
          }
      if (can.empty()) break;
      Planned p;
      p.task = rng.pick(can);
      std::vector<int64_t> fit;
      for (int64_t L : lengths_of(pc, p.task))
        if (L <= left) fit.push_back(L);
      p.length = rng.pick(fit);
      p.seed = seed_of(pc.seed, uint64_t(step) << 20 | uint64_t(pack), uint64_t(k));
      left -= p.length;
      out.push_back(p);
    }
    return out;
  }
  for (int64_t k = 0;; ++k) {
    std::vector<int64_t> fit;
    for (int64_t L : pc.lengths)
      if (L <= left) fit.push_back(L);
    if (fit.empty()) break;
    Planned p;
    p.length = rng.pick(fit);
    p.task = rng.pick(tasks);
    p.seed = seed_of(pc.seed, uint64_t(step) << 20 | uint64_t(pack), uint64_t(k));
    left -= p.length;
    out.push_back(p);
  }
  return out;
}

PretrainPack assemble(const std::vector<Planned>& plan, const std::vector<Sample>& samples,
                      bool answer_only) {
  PretrainPack p;
  p.cu_seqlens.push_back(0);
  for (size_t i = 0; i < samples.size(); ++i) {
    const Sample& s = samples[i];
    const size_t n = s.ids.size();
    for (size_t t = 0; t < n; ++t) {
      p.ids.push_back(s.ids[t]);
      p.answer.push_back(s.answer[t]);
      const bool last = t + 1 == n;
      p.labels.push_back(last || (answer_only && !s.answer[t + 1]) ? -100 : s.ids[t + 1]);
    }
    p.cu_seqlens.push_back(static_cast<int64_t>(p.ids.size()));
    p.tasks.push_back(plan[i].task);
  }
  return p;
}

// Packs first..first+count-1 of step `step`, their samples generated in parallel.
std::vector<PretrainPack> make_packs(const PretrainConfig& pc,
                                     const std::vector<std::string>& tasks, const Tokenizer& tok,
                                     int64_t eos, int64_t step, int64_t first, int64_t count) {
  std::vector<std::vector<Planned>> plans;
  std::vector<std::pair<size_t, size_t>> jobs;  // (pack, sample)
  for (int64_t b = 0; b < count; ++b) {
    plans.push_back(plan_pack(pc, tasks, step, first + b));
    for (size_t i = 0; i < plans.back().size(); ++i) jobs.emplace_back(size_t(b), i);
  }
  std::vector<std::vector<Sample>> samples(plans.size());
  for (size_t b = 0; b < plans.size(); ++b) samples[b].resize(plans[b].size());
  std::string error;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t j = 0; j < int64_t(jobs.size()); ++j) {
    const auto [b, i] = jobs[size_t(j)];
    const Planned& p = plans[b][i];
    try {
      samples[b][i] = task_sample(p.task, tok, eos, p.length, p.seed);
    } catch (const std::exception& e) {
#pragma omp critical
      if (error.empty())
        error = p.task + " at " + std::to_string(p.length) + " tokens: " + e.what();
    }
  }
  if (!error.empty()) throw Error("train: generating a sample of " + error);
  std::vector<PretrainPack> packs;
  for (size_t b = 0; b < plans.size(); ++b)
    packs.push_back(assemble(plans[b], samples[b], pc.answer_only_labels));
  return packs;
}

// Standard normal from two Philox uniforms (Box-Muller), keyed by (tensor, element).
void init_normal(float* dst, int64_t n, double stddev, uint32_t tensor, uint64_t seed) {
  const std::array<uint32_t, 2> key = {uint32_t(seed), uint32_t(seed >> 32)};
  for (int64_t i = 0; i < n; ++i) {
    const auto x = philox4x32_10({uint32_t(i), tensor, uint32_t(uint64_t(i) >> 32), 0x50524554u},
                                 key);                 // "PRET"
    const double u1 = (double(x[0]) + 1.0) * 0x1p-32;  // (0, 1]
    const double u2 = double(x[1]) * 0x1p-32;
    dst[i] = float(stddev * std::sqrt(-2.0 * std::log(u1)) * std::cos(2 * M_PI * u2));
  }
}

// GPT-2's init: N(0, 0.02) for embeddings and projections, the residual outputs (o_proj,
// down_proj) scaled by 1 / sqrt(2 L); norms at 1 (q_norm / k_norm at qk_gain), biases at 0.
void backbone_init(ParamSet<float>& p, const ModelConfig& c, uint64_t seed, double qk_gain) {
  uint32_t tensor = 0;
  for (const ParamInfo& t : p.layout.tensors()) {
    float* dst = p.ptr(t.name);
    const bool norm = t.name.find("norm.weight") != std::string::npos;
    const bool qk = t.name.find("q_norm.weight") != std::string::npos ||
                    t.name.find("k_norm.weight") != std::string::npos;
    const bool bias = t.name.size() > 5 && t.name.compare(t.name.size() - 5, 5, ".bias") == 0;
    if (norm)
      std::fill(dst, dst + t.numel(), qk ? float(qk_gain) : 1.f);
    else if (bias)
      std::fill(dst, dst + t.numel(), 0.f);
    else {
      const bool residual = t.name.find("o_proj") != std::string::npos ||
                            t.name.find("down_proj") != std::string::npos;
      init_normal(dst, t.numel(), residual ? 0.02 / std::sqrt(2.0 * double(c.num_layers)) : 0.02,
                  tensor, seed);
    }
    ++tensor;
  }
}

json fresh_config_json(const PretrainConfig& pc, int64_t vocab, int64_t eos) {
  json j;
  const bool llama = pc.arch == "llama";
  j["architectures"] = json::array({llama ? "LlamaForCausalLM" : "Qwen3ForCausalLM"});
  j["model_type"] = llama ? "llama" : "qwen3";
  j["hidden_size"] = pc.hidden;
  j["intermediate_size"] = pc.ffn;
  j["num_hidden_layers"] = pc.layers;
  j["num_attention_heads"] = pc.heads;
  j["num_key_value_heads"] = pc.kv_heads;
  j["head_dim"] = pc.head_dim;
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = pc.max_position;
  j["rms_norm_eps"] = 1e-6;
  j["rope_theta"] = pc.rope_theta;
  j["rope_scaling"] = nullptr;
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["tie_word_embeddings"] = true;
  if (llama) {
    j["mlp_bias"] = false;
  } else {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
    j["max_window_layers"] = pc.layers;
  }
  j["vocab_size"] = vocab;
  j["bos_token_id"] = eos;
  j["eos_token_id"] = eos;
  j["torch_dtype"] = "bfloat16";
  j["use_cache"] = true;
  j["initializer_range"] = 0.02;
  return j;
}

void config_validate(const PretrainConfig& pc) {
  auto bad = [](const std::string& what) { throw Error("train: " + what); };
  if (pc.out_dir.empty()) bad("missing --out DIR");
  if (pc.steps < 1) bad("--steps must be >= 1");
  if (pc.batch < 1) bad("--batch must be >= 1");
  if (pc.arch != "qwen3" && pc.arch != "llama")
    bad("--arch is \"" + pc.arch + "\" (expected \"qwen3\" or \"llama\")");
  if (!(pc.qk_gain > 0) || !std::isfinite(pc.qk_gain)) bad("--qk-gain must be a positive number");
  if (pc.qk_gain != 1.0 && pc.arch != "qwen3")
    bad("--qk-gain sets the qk-norm gains: only --arch qwen3 has them");
  if (pc.lengths.empty()) bad("--lengths must name at least one length");
  if (pc.stop_ce > 0 && pc.eval_every <= 0)
    bad("--stop-ce needs --eval-every (the probe it reads)");
  for (int64_t L : pc.lengths) {
    if (L < 32) bad("--lengths: " + std::to_string(L) + " is below 32 tokens");
    if (L > pc.max_tokens)
      bad("--lengths: " + std::to_string(L) + " exceeds --max-tokens " +
          std::to_string(pc.max_tokens));
  }
  const std::vector<std::string> known = pretrain_task_names();
  for (const auto& [task, lengths] : pc.task_lengths) {
    const std::string opt = "--task-lengths " + task;
    if (std::find(known.begin(), known.end(), task) == known.end())
      bad(opt + ": unknown task (see elastic train --help)");
    if (!pc.tasks.empty() && std::find(pc.tasks.begin(), pc.tasks.end(), task) == pc.tasks.end())
      bad(opt + ": the task is not in --tasks");
    if (lengths.empty()) bad(opt + ": no lengths");
    for (int64_t L : lengths)
      if (L < 32 || L > pc.max_tokens)
        bad(opt + ": " + std::to_string(L) + " is outside [32, --max-tokens " +
            std::to_string(pc.max_tokens) + "]");
  }
  for (auto [v, name] : {std::pair{pc.lr, "--lr"}, {pc.weight_decay, "--weight-decay"}})
    if (!(std::isfinite(v) && v >= 0)) bad(std::string(name) + " must be a finite number >= 0");
  if (!(pc.min_lr_ratio >= 0 && pc.min_lr_ratio <= 1)) bad("--min-lr-ratio must be in [0, 1]");
  if (!(pc.warmup >= 0 && pc.warmup <= 1)) bad("--warmup must be in [0, 1]");
  if (!(pc.clip > 0)) bad("--clip must be > 0");
  if (!(pc.head_mix >= 0 && pc.head_mix <= 1)) bad("--head-mix must be in [0, 1]");
  if (pc.save_every < 1) bad("--save-every must be >= 1");
  if (pc.heads % std::max<int64_t>(pc.kv_heads, 1) != 0 || pc.kv_heads < 1)
    bad("--heads must be a multiple of --kv-heads");
}

json fingerprint_of(const PretrainConfig& pc, const ModelConfig& c,
                    const std::vector<std::string>& tasks) {
  json f;
  f["layers"] = c.num_layers;
  f["hidden"] = c.hidden_size;
  f["heads"] = c.num_heads;
  f["kv_heads"] = c.num_kv_heads;
  f["head_dim"] = c.head_dim;
  f["ffn"] = c.intermediate_size;
  f["vocab"] = c.vocab_size;
  f["tasks"] = tasks;
  f["lengths"] = pc.lengths;
  if (!pc.task_lengths.empty()) f["task_lengths"] = pc.task_lengths;  // older states: none
  f["max_tokens"] = pc.max_tokens;
  f["batch"] = pc.batch;
  f["labels"] = pc.answer_only_labels ? "answer" : "all";
  f["head_mix"] = pc.head_mix;
  f["ssa"] = {pc.ssa.block, pc.ssa.sink_tokens, pc.ssa.local_tokens};
  f["steps"] = pc.steps;
  f["lr"] = pc.lr;
  f["seed"] = pc.seed;
  return f;
}

const std::vector<StatePart> kBackboneParts = {
    {ParamState::value, ""}, {ParamState::adam_m, "adam_m."}, {ParamState::adam_v, "adam_v."}};

void state_save(const std::string& out, TrainEngine& eng, int64_t step, const json& fingerprint) {
  std::vector<SafetensorsWriteItem> items;
  state_items_add(items, eng, ParamGroup::backbone, kBackboneParts);
  json meta = {{"version", kStateVersion}, {"step", step}, {"fingerprint", fingerprint}};
  safetensors_write((fs::path(out) / kStateFile).string(), items, {{kStateKey, meta.dump()}});
}

int64_t state_load(const std::string& out, TrainEngine& eng, const json& fingerprint) {
  const std::string path = (fs::path(out) / kStateFile).string();
  const auto file = SafetensorsFile::open(path);
  const json meta =
      state_meta_checked(*file, path, kStateKey, kStateVersion, fingerprint, "a pretraining state",
                         "resume with the same shape, data and options, or use another --out");
  state_items_load(*file, path, eng, ParamGroup::backbone, kBackboneParts,
                   "a pretraining state holds every weight and both AdamW moments");
  return meta.value("step", int64_t(0));
}

// model.safetensors in bf16 (the shipped form), from the engine's fp32 weights.
void export_model(const std::string& out, TrainEngine& eng) {
  ParamSet<float> w(eng.layout(ParamGroup::backbone));
  w.data = eng.get(ParamGroup::backbone, ParamState::value);
  safetensors_write((fs::path(out) / "model.safetensors").string(),
                    params_items(w, DType::bf16, ""), {{"format", "pt"}});
}

// Fixed routing of a pack's samples: every head FA, or for a head-mix sample a random half of
// each layer's KV heads SSA (keyed by the run's seed and the sample's seed).
std::vector<uint8_t> routing_of(const PretrainConfig& pc, const ModelConfig& c, int64_t S,
                                int64_t step, int64_t pack) {
  const int64_t L = c.num_layers, H = c.num_kv_heads;
  std::vector<uint8_t> fixed(size_t(S * L * H), 1);
  if (pc.head_mix <= 0) return fixed;
  EvalRng rng(seed_of(pc.seed ^ 0x4d495855u, uint64_t(step), uint64_t(pack)));  // "MIXU"
  std::vector<int64_t> heads(static_cast<size_t>(H));
  for (int64_t h = 0; h < H; ++h) heads[size_t(h)] = h;
  for (int64_t s = 0; s < S; ++s) {
    if (double(rng.below(1000000)) >= pc.head_mix * 1e6) continue;
    for (int64_t l = 0; l < L; ++l)
      for (int64_t h : rng.sample(heads, size_t(H / 2))) fixed[size_t((s * L + l) * H + h)] = 0;
  }
  return fixed;
}

struct ProbeResult {
  std::string task;
  double ce_fa = 0, ce_ssa = 0;
};

// The held-out samples of the probe: eval_samples per task at the longest length, from a seed
// stream no training step draws, with answer-only labels; one pack per sample. Built once a run.
std::vector<std::vector<PretrainPack>> probe_packs(const PretrainConfig& pc,
                                                   const std::vector<std::string>& tasks,
                                                   const Tokenizer& tok, int64_t eos) {
  const int64_t length = *std::max_element(pc.lengths.begin(), pc.lengths.end());
  std::vector<std::vector<PretrainPack>> out(tasks.size());
  for (size_t k = 0; k < tasks.size(); ++k) {
    std::vector<Planned> plan;
    std::vector<Sample> samples(size_t(pc.eval_samples));
    for (int64_t i = 0; i < pc.eval_samples; ++i)
      plan.push_back({tasks[k], length, seed_of(pc.seed ^ 0x50524f42u, k, uint64_t(i))});
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < pc.eval_samples; ++i)
      samples[size_t(i)] = task_sample(tasks[k], tok, eos, length, plan[size_t(i)].seed);
    for (int64_t i = 0; i < pc.eval_samples; ++i)
      out[k].push_back(assemble({plan[size_t(i)]}, {samples[size_t(i)]}, true));
  }
  return out;
}

// Answer CE per task on the probe's packs, every head FA and every head SSA.
std::vector<ProbeResult> probe(const std::vector<std::string>& tasks,
                               const std::vector<std::vector<PretrainPack>>& packs,
                               TrainEngine& eng) {
  const ModelConfig& c = eng.config();
  std::vector<ProbeResult> out;
  for (size_t k = 0; k < tasks.size(); ++k) {
    ProbeResult r;
    r.task = tasks[k];
    for (int mode = 0; mode < 2; ++mode) {
      double ce = 0;
      int64_t labelled = 0;
      for (const PretrainPack& p : packs[k]) {  // one sample per call (<= max_tokens)
        Batch batch;
        batch.add(p.ids.data(), int64_t(p.ids.size()));
        StepRouting routing;
        routing.router = false;
        routing.fixed.assign(size_t(c.num_layers * c.num_kv_heads), mode == 0 ? 1 : 0);
        StepLoss loss;
        loss.labels = p.labels;
        loss.ce_scale = 1.0;
        loss.task = {0};
        loss.sample_weight = {0.0};
        loss.targets = {1.0};
        loss.lambda1 = loss.lambda2 = {0.0};
        int64_t n = 0;
        for (int64_t y : p.labels) n += y != -100;
        ce += eng.evaluate(batch, routing, loss).ce;
        labelled += n;
      }
      (mode == 0 ? r.ce_fa : r.ce_ssa) = ce / double(std::max<int64_t>(labelled, 1));
    }
    out.push_back(r);
  }
  return out;
}

}  // namespace

void pretrain_curves_write(const std::string& metrics_path, const std::string& png) {
  std::ifstream f(metrics_path);
  if (!f) throw Error(metrics_path + ": cannot open the metrics");
  std::vector<double> x, loss;
  std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> fa, ssa;
  std::string line;
  while (std::getline(f, line)) {
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception&) {
      break;
    }
    x.push_back(j.value("step", 0.0));
    loss.push_back(j.value("loss", 0.0));
    if (j.contains("probe"))
      for (const auto& [task, v] : j["probe"].items()) {
        fa[task].first.push_back(j.value("step", 0.0));
        fa[task].second.push_back(v.value("ce_fa", 0.0));
        ssa[task].first.push_back(j.value("step", 0.0));
        ssa[task].second.push_back(v.value("ce_ssa", 0.0));
      }
  }
  if (x.empty()) return;
  PlotFigure fig;
  fig.title = "elastic train";
  fig.columns = 3;
  std::vector<PlotPanel>& panels = fig.panels;
  panels.resize(fa.empty() ? 1 : 3);
  panels[0].title = "training loss (CE per labelled token)";
  panels[0].x_label = "step";
  auto series = [](const std::string& name, const std::vector<double>& xs,
                   const std::vector<double>& ys) {
    PlotSeries p;
    p.name = name;
    p.x = xs;
    p.y = ys;
    return p;
  };
  panels[0].series.push_back(series("loss", x, loss));
  if (!fa.empty()) {
    panels[1].title = "held-out answer CE, every head FA";
    panels[2].title = "held-out answer CE, every head SSA";
    for (int i : {1, 2}) panels[size_t(i)].x_label = "step";
    // One legend, on the SSA panel (the FA panel's series come in the same order and colours),
    // and panels tall enough for it to leave the curves room: 13 tasks' legend covered the
    // FA panel of a 320-pixel figure.
    for (const auto& [task, xy] : fa) panels[1].series.push_back(series("", xy.first, xy.second));
    for (const auto& [task, xy] : ssa)
      panels[2].series.push_back(series(task, xy.first, xy.second));
    fig.panel_height = std::max(fig.panel_height, 200 + 22 * static_cast<int>(fa.size()));
    for (int i : {1, 2})  // the palette has ten colours: the next ten series are dashed
      for (size_t k = 10; k < panels[size_t(i)].series.size(); ++k)
        panels[size_t(i)].series[k].dash = PlotDash::dashed;
  }
  for (PlotPanel& p : panels) p.y_label = "nats";
  plot_write_png(fig, png);
}

void pretrain_export_samples(const std::vector<std::string>& tasks,
                             const std::vector<int64_t>& lengths, int64_t n, uint64_t seed,
                             const Tokenizer& tok, const std::string& path) {
  std::string text;
  for (const std::string& task : tasks) {
    eval_task_find(task);  // a clear error for a name the suite does not know
    for (int64_t length : lengths) {
      std::vector<EvalSample> set = eval_generate_set(task, length, n, seed_of(seed, 0x524f5554u),
                                                      eval_token_counter(tok, true));  // "ROUT"
      for (const EvalSample& s : set)
        text += json{{"prompt", s.prompt}, {"answer", eval_sample_completion(s)}, {"task", task}}
                    .dump() +
                "\n";
    }
  }
  write_file_atomic(path, text);
}

std::vector<std::string> pretrain_task_names() {
  std::vector<std::string> v;
  for (const TaskInfo& t : eval_tasks()) v.push_back(t.name);
  v.push_back(kAssoc);
  v.push_back(kCopy);
  v.push_back(kTemplateRecall);
  v.push_back(kRestateRecall);
  v.push_back(kCopyStatements);
  return v;
}

PretrainPack pretrain_make_pack(const PretrainConfig& pc, const Tokenizer& tok, int64_t step,
                                int64_t pack) {
  std::vector<std::string> tasks = pc.tasks;
  if (tasks.empty())
    for (const TaskInfo& t : eval_tasks()) tasks.push_back(t.name);
  const int64_t eos = eos_of(tok);
  return make_packs(pc, tasks, tok, eos, step, pack, 1).front();
}

TrainStatus pretrain_run(const PretrainConfig& pc, const PretrainCallbacks& cb) {
  config_validate(pc);
  std::vector<std::string> tasks = pc.tasks;
  if (tasks.empty())
    for (const TaskInfo& t : eval_tasks()) tasks.push_back(t.name);
  const std::vector<std::string> known = pretrain_task_names();
  for (const std::string& t : tasks)
    if (std::find(known.begin(), known.end(), t) == known.end())
      throw Error("train: unknown task '" + t + "' (tasks: " + [&] {
        std::string s;
        for (const std::string& k : known) s += (s.empty() ? "" : ", ") + k;
        return s;
      }() + ")");

  const fs::path out(pc.out_dir);
  run_folder_check(pc.out_dir, kStateFile, pc.resume);
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw Error(pc.out_dir + ": cannot create the output folder: " + ec.message());

  // The model: the output folder's own (resume), --init-from, or a fresh Qwen3 shape.
  std::string tokenizer_json, config_text;
  if (pc.resume) {
    tokenizer_json = read_file((out / "tokenizer.json").string());
    config_text = read_file((out / "config.json").string());
  } else if (!pc.init_from.empty()) {
    tokenizer_json = read_file((fs::path(pc.init_from) / "tokenizer.json").string());
    config_text = read_file((fs::path(pc.init_from) / "config.json").string());
  } else {
    tokenizer_json = eval_tokenizer_json();
  }
  const Tokenizer tok =
      Tokenizer::from_json_text(tokenizer_json, (out / "tokenizer.json").string());
  const int64_t eos = eos_of(tok);
  if (config_text.empty())
    config_text = fresh_config_json(pc, tok.vocab_size(), eos).dump(2) + "\n";
  const ModelConfig c = config_parse(config_text, (out / "config.json").string());
  if (c.vocab_size < tok.vocab_size())
    throw Error("train: config vocab_size " + std::to_string(c.vocab_size) +
                " is smaller than the tokenizer's " + std::to_string(tok.vocab_size()));
  for (const std::string& t : tasks) {  // every task must fit its shortest length
    const std::vector<int64_t>& L = lengths_of(pc, t);
    (void)task_sample(t, tok, eos, *std::min_element(L.begin(), L.end()), 1);
  }

  TrainOptions opt;
  opt.ssa = pc.ssa;
  opt.weight_grads = true;
  opt.router_grads = false;
  attn_options_validate(AttnOptions{opt.ssa, XaOptions{}});
  ParamSet<float> backbone(backbone_layout(c));
  if (!pc.init_from.empty() && !pc.resume)
    params_load(backbone, WeightStore::open(pc.init_from));
  else
    backbone_init(backbone, c, pc.seed, pc.qk_gain);
  auto eng =
      train_engine_create(pc.backend, c, std::move(backbone), ParamSet<float>(ParamLayout{}), opt);
  const json fingerprint = fingerprint_of(pc, c, tasks);

  int64_t step = 0;
  if (pc.resume) {
    step = state_load(pc.out_dir, *eng, fingerprint);
    if (cb.on_note)
      cb.on_note("resuming at step " + std::to_string(step) + " of " + std::to_string(pc.steps));
  } else {
    write_file_atomic((out / "tokenizer.json").string(), tokenizer_json);
    write_file_atomic((out / "config.json").string(), config_text);
    write_file_atomic((out / "generation_config.json").string(),
                      json{{"bos_token_id", eos}, {"eos_token_id", eos}}.dump(2) + "\n");
  }
  const std::string metrics_path = (out / "metrics.jsonl").string();
  if (pc.resume)
    metrics_truncate(metrics_path, step);
  else
    write_file_atomic(metrics_path, "");
  auto save = [&] {
    export_model(pc.out_dir, *eng);
    state_save(pc.out_dir, *eng, step, fingerprint);
    if (step > 0 && plot_available())
      pretrain_curves_write(metrics_path, (out / "curves.png").string());
    if (cb.on_note) cb.on_note("checkpoint at step " + std::to_string(step) + " in " + pc.out_dir);
  };
  if (!pc.resume) save();

  const auto run_start = std::chrono::steady_clock::now();
  std::ofstream metrics(metrics_path, std::ios::app);
  AdamWConfig aw{pc.lr, pc.beta1, pc.beta2, 1e-8, pc.weight_decay};
  std::vector<std::vector<PretrainPack>> probe_set;  // built at the first probe
  while (step < pc.steps) {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t step0 = step;
    const std::vector<PretrainPack> packs = make_packs(pc, tasks, tok, eos, step0 + 1, 0, pc.batch);
    int64_t labelled = 0, tokens = 0, answers = 0;
    for (const PretrainPack& p : packs) {
      for (int64_t y : p.labels) labelled += y != -100;
      for (uint8_t a : p.answer) answers += a;
      tokens += int64_t(p.ids.size());
    }
    PretrainMetrics m;
    m.step = step0 + 1;
    m.steps = pc.steps;
    m.tokens = tokens;
    m.answer_tokens = answers;
    eng->zero_grad();
    for (size_t b = 0; b < packs.size(); ++b) {
      const PretrainPack& p = packs[b];
      const int64_t S = int64_t(p.cu_seqlens.size()) - 1;
      Batch batch;
      for (int64_t s = 0; s < S; ++s)
        batch.add(p.ids.data() + p.cu_seqlens[size_t(s)],
                  p.cu_seqlens[size_t(s + 1)] - p.cu_seqlens[size_t(s)]);
      StepRouting routing;
      routing.router = false;
      routing.fixed = routing_of(pc, c, S, step0 + 1, int64_t(b));
      StepLoss loss;
      loss.labels = p.labels;
      loss.ce_scale = labelled > 0 ? 1.0 / double(labelled) : 0.0;
      loss.task.assign(size_t(S), 0);
      loss.sample_weight.assign(size_t(S), 0.0);
      loss.targets = {1.0};
      loss.lambda1 = loss.lambda2 = {0.0};
      m.loss += eng->step(batch, routing, loss).ce;
    }
    if (!std::isfinite(m.loss))
      throw Error("train: the loss of step " + std::to_string(m.step) +
                  " is not finite (lower --lr; the last checkpoint is step " +
                  std::to_string(step - step % pc.save_every) + ")");
    m.grad_norm = std::sqrt(eng->grad_norm_squared(ParamGroup::backbone));
    const double scale = m.grad_norm > pc.clip ? pc.clip / (m.grad_norm + 1e-6) : 1.0;
    m.lr = lr_warmup_cosine(pc.lr, pc.warmup, pc.min_lr_ratio, pc.steps, step0);
    aw.lr = m.lr;
    eng->adamw_step(ParamGroup::backbone, aw, scale, step0 + 1);
    step = step0 + 1;
    m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    json line = {{"step", m.step},      {"loss", m.loss},     {"grad_norm", m.grad_norm},
                 {"lr", m.lr},          {"tokens", m.tokens}, {"answer_tokens", m.answer_tokens},
                 {"seconds", m.seconds}};
    bool learned = false;
    if (pc.eval_every > 0 && (step % pc.eval_every == 0 || step == pc.steps)) {
      if (probe_set.empty()) probe_set = probe_packs(pc, tasks, tok, eos);
      learned = pc.stop_ce > 0;
      for (const ProbeResult& r : probe(tasks, probe_set, *eng)) {
        line["probe"][r.task] = {{"ce_fa", r.ce_fa}, {"ce_ssa", r.ce_ssa}};
        m.probe.emplace_back(r.task + " fa", r.ce_fa);
        m.probe.emplace_back(r.task + " ssa", r.ce_ssa);
        learned = learned && r.ce_fa <= pc.stop_ce;
      }
    }
    metrics << line.dump() << "\n" << std::flush;
    if (cb.on_step) cb.on_step(m);
    const bool out_of_time =
        pc.max_seconds > 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count() >=
            double(pc.max_seconds);
    const bool stop = (cb.should_stop && cb.should_stop()) || out_of_time;
    if (step % pc.save_every == 0 || step == pc.steps || stop || learned) save();
    if (learned) {
      if (cb.on_note)
        cb.on_note("learned: every task's held-out answer CE is at most " +
                   std::to_string(pc.stop_ce) + " at step " + std::to_string(step) +
                   " (--stop-ce)");
      return TrainStatus::finished;
    }
    if (stop && step < pc.steps) return TrainStatus::interrupted;
  }
  return TrainStatus::finished;
}

}  // namespace elastic
