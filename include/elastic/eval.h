// The evaluation suite (issue 10 §1, SPEC §8): RULER-like long-context tasks, RULER's scoring
// rules, JSON-lines task files, the evaluator that runs every sample under several routing
// configurations, and the DuoAttention-like calibration of a static head assignment.
//
// Prompt layout of every generated task (SPEC §5: the router pools the prompt's two ends):
//   line 1          the task's instruction
//   lines 2..       the body: a haystack grown until the prompt reaches the length budget
//   last line       "Question: ... Answer:" (the model's completion is the answer)
// Generators are exact and deterministic: one std::mt19937_64 (its output sequence is fixed by
// the C++ standard) and integer arithmetic only (no std:: distributions, whose results differ
// between standard libraries, and no floating point), so a (task, length, seed, index) gives
// the same sample on every platform for the same token counter.
//
// Vocabularies are small lists of plain lower-case English words (EvalVocab), so that a small
// word-level tokenizer represents every key and value as one token; eval_vocab_words() lists
// every word a generator can emit, for building such a tokenizer.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "elastic/attention.h"
#include "elastic/plot.h"
#include "elastic/routing.h"

namespace elastic {

struct Model;     // model.h
class Tokenizer;  // tokenizer.h

// ---- Tasks -------------------------------------------------------------------------------

// sensitive: the answer needs exact retrieval from anywhere in the prompt (keeps FA heads);
// robust: the answer depends only on the last few hundred tokens (any head may go sparse).
enum class TaskKind { sensitive, robust };

// RULER's rules on a prediction and the reference answers (see eval_score).
enum class ScoreRule { exact, contains, all_of };

const char* task_kind_name(TaskKind k);    // "sensitive" | "robust"
const char* score_rule_name(ScoreRule r);  // "exact" | "contains" | "all-of"
// Throws elastic::Error naming `what` and listing the rules when `text` is none of them.
ScoreRule score_rule_parse(const std::string& text, const std::string& what);

struct TaskInfo {
  std::string name;  // e.g. "niah_single"
  TaskKind kind = TaskKind::sensitive;
  ScoreRule score = ScoreRule::contains;
  std::string description;  // one line
};

// Every generator task, in a fixed order (sensitive first).
const std::vector<TaskInfo>& eval_tasks();
// Throws elastic::Error listing the known names when `name` is not a task.
const TaskInfo& eval_task_find(const std::string& name);

// Word lists the generators draw from. Invariants (eval_vocab_validate): every list non-empty,
// every entry one lower-case word of letters, keys / values / filler pairwise disjoint, at
// least 8 keys and 8 values, and no key or value among the words of the noise sentences or of
// the task templates (so a key or value in a prompt is always a needle, never template text).
struct EvalVocab {
  std::vector<std::string> keys;    // needle keys, variable names, words to count
  std::vector<std::string> values;  // needle values, pattern words
  std::vector<std::string> filler;  // random-word haystack
  std::vector<std::string> noise;   // RULER's noise haystack: sentences repeated in order
};

const EvalVocab& eval_vocab_default();
// Throws elastic::Error naming the list and the entry that breaks an invariant above.
void eval_vocab_validate(const EvalVocab& v);
// Every word (maximal run of letters or digits) a generator can emit with this vocabulary,
// sorted and unique; generated prompts and answers consist of these words, spaces, newlines
// and the punctuation . , : ?
std::vector<std::string> eval_vocab_words(const EvalVocab& v = eval_vocab_default());
// A tokenizer.json (HF format: byte-level BPE without merges, ignore_merges) in which every word
// of eval_vocab_words, with or without its leading space, every number 0..999 and the
// templates' punctuation is one token; other text falls back to bytes, so any text round-trips.
// "<|endoftext|>" (the last id) starts every encoded text and ends every sample.
std::string eval_tokenizer_json(const EvalVocab& v = eval_vocab_default());

// ---- Samples -----------------------------------------------------------------------------

struct EvalSample {
  std::string task;
  std::string prompt;
  std::vector<std::string> answers;  // >= 1, none empty
  ScoreRule score = ScoreRule::contains;
  int64_t length = 0;  // target length in tokens it was built for; 0 = unknown (imported)
};

// The completion a model should produce after the prompt: " " + answers joined by ", "
// (all-of: every answer, in the listed order) or " " + answers[0].
std::string eval_sample_completion(const EvalSample& s);

// Tokens of a text in the model's tokenizer (with whatever special tokens the evaluator adds).
using TokenCounter = std::function<int64_t(const std::string&)>;
TokenCounter eval_token_counter(const Tokenizer& tokenizer, bool add_special);

// Sample `index` of `task` built to at most `target_tokens` tokens: the haystack grows (by
// bisection over its unit count) to the largest size whose prompt still fits. Throws
// elastic::Error when even the smallest haystack exceeds the budget.
EvalSample eval_generate(const std::string& task, int64_t target_tokens, uint64_t seed,
                         int64_t index, const TokenCounter& count,
                         const EvalVocab& vocab = eval_vocab_default());
// Samples 0..n-1.
std::vector<EvalSample> eval_generate_set(const std::string& task, int64_t target_tokens, int64_t n,
                                          uint64_t seed, const TokenCounter& count,
                                          const EvalVocab& vocab = eval_vocab_default());

// ---- Scoring -----------------------------------------------------------------------------

// RULER's normalisation of a prediction (postprocess_pred): control characters become spaces,
// runs of whitespace one space, leading and trailing whitespace stripped; then, as RULER's
// string_match_* compare, lower case (ASCII; other bytes unchanged). Answers are normalised
// the same way before comparing.
std::string eval_normalize(std::string_view text);

// Score in [0, 1] of a prediction against the reference answers (both normalised):
//   exact:    1 when the prediction, without trailing . , : ; ! ?, equals one of the answers
//   contains: 1 when one of the answers is a substring of the prediction (string_match_part)
//   all-of:   the fraction of the answers that are substrings (string_match_all)
double eval_score(ScoreRule rule, std::string_view prediction,
                  const std::vector<std::string>& answers);

// ---- JSON lines --------------------------------------------------------------------------

// One record per line: {"prompt": str, "answer": str | [str, ...], "task": str,
// "score": "exact" | "contains" | "all-of" (optional; default all-of for a list answer,
// contains for a string), "length": int (optional)}. Blank lines are skipped. Throws
// elastic::Error "SOURCE:LINE: ..." for bad JSON, a missing field, a wrong type, an empty
// answer or an unknown score rule.
std::vector<EvalSample> eval_samples_parse_jsonl(std::string_view text, const std::string& source);
std::vector<EvalSample> eval_samples_read_jsonl(const std::string& path);
// The same format (answer as a string when there is one, "score" and "length" always).
std::string eval_samples_to_jsonl(const std::vector<EvalSample>& samples);
void eval_samples_write_jsonl(const std::string& path, const std::vector<EvalSample>& samples);

// ---- Evaluator ---------------------------------------------------------------------------

// One routing configuration: the policy (must outlive eval_run) and the attention sizes.
struct EvalConfig {
  std::string name;  // "dense", "all-sa", "static:0.5", "elastic", ...
  std::shared_ptr<RoutingPolicy> policy;
  AttnOptions attn;
};

struct EvalOptions {
  bool add_special = true;    // encode prompts with the tokenizer's post-processor (BOS)
  int64_t answer_margin = 8;  // decode at most (answer tokens + margin) tokens
};

// One (sample, config) run.
struct EvalSampleResult {
  std::string task, config;
  int64_t length = 0, prompt_tokens = 0;
  std::string prediction;  // decoded greedy completion
  double score = 0, omega_msr = 0, omega_esr = 0, omega_esr_last = 0, prefill_s = 0;
  std::vector<uint8_t> decisions;  // [L * Hkv] 1 = the head ran the retrieval mode
};

// Means over the n samples of one (task, length, config).
struct EvalResult {
  std::string task, config;
  int64_t length = 0, n = 0;
  double accuracy = 0;  // mean score in [0, 1]
  double omega_msr = 0, omega_esr = 0, omega_esr_last = 0, prefill_s = 0;
};

// done of total (sample, config) runs finished; `what` names the run just finished.
using EvalProgress = std::function<void(int64_t done, int64_t total, const std::string& what)>;

// For every sample and config: a fresh request with the config's policy and sizes, the
// prompt's prefill through model_prefill (timed), greedy decoding of up to answer tokens +
// margin tokens, stopping at EOS or at a newline after some non-blank text; the completion is
// scored with the sample's rule, the sparsity from report_build (omega_esr = all-layer mean of
// rho, omega_esr_last = last layer). Results are grouped by (task, length) in order of first
// appearance, configs in the given order. `per_sample` (optional) receives every run.
std::vector<EvalResult> eval_run(const Model& model, const Tokenizer& tokenizer,
                                 const std::vector<EvalSample>& samples,
                                 const std::vector<EvalConfig>& configs,
                                 const EvalOptions& options = {}, const EvalProgress& progress = {},
                                 std::vector<EvalSampleResult>* per_sample = nullptr);

// ---- Figure ------------------------------------------------------------------------------

// One point of the figure: the means over the tasks of one kind at one (config, length).
struct EvalPlotPoint {
  int kind = 0;  // 0 sensitive, 1 robust, 2 tasks the suite does not know (imported)
  std::string config;
  int64_t length = 0;
  double omega_msr = 0, accuracy = 0;  // accuracy in [0, 1]
};
// In order of first appearance in `results`.
std::vector<EvalPlotPoint> eval_plot_points(const std::vector<EvalResult>& results);

// Accuracy (%) against Omega_MSR, the paper's figure style: one panel per task kind present
// (sensitive, robust, other), one colour and marker per configuration (the same in every
// panel), one point per length (labelled with it when there are several lengths). Written
// atomically as PNG; returns each panel's area (plot.h). Throws elastic::Error naming the path
// (also in builds without the plot module).
std::vector<PlotArea> eval_plot_write_png(const std::vector<EvalResult>& results,
                                          const std::string& path, const std::string& title = "");

// ---- Calibration (DuoAttention-like static baseline) -------------------------------------

struct CalibrateOptions {
  AttnOptions attn;  // sizes of the sparse mode
  AttnMode retrieval_mode = AttnMode::fa;
  AttnMode sparse_mode = AttnMode::ssa;
  bool add_special = true;
};

// scores: [L][Hkv], the sensitivity of each KV head: the mean over samples of the drop in the
// log-probability of the sample's completion (eval_sample_completion, teacher-forced after the
// prompt) when that head alone runs the sparse mode and every other head the retrieval mode.
// High = the head matters for retrieval. progress counts (sample, head) prefills.
std::vector<std::vector<double>> eval_calibrate(const Model& model, const Tokenizer& tokenizer,
                                                const std::vector<EvalSample>& samples,
                                                const CalibrateOptions& options,
                                                const EvalProgress& progress = {});

// The score file static_assignment_top_scores reads (routing.h): '#' comment lines (the
// `comment` text), then one line per layer with one score per KV head. One file serves every
// ratio: the round(R * L * Hkv) lowest-scoring heads go sparse.
std::string eval_scores_file_text(const std::vector<std::vector<double>>& scores,
                                  const std::string& comment);

}  // namespace elastic
