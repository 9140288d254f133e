// Training data for router training: JSON lines, tokenized with the model's tokenizer (and
// chat template, when the model has one), labelled, and packed into sequences of at most
// max_tokens tokens.
//
// Records (one JSON object per line; blank lines are skipped):
//   {"prompt": "...", "answer": "...", "task": "qa"}
//   {"messages": [{"role": "user", "content": "..."}, ..., {"role": "assistant", ...}], "task": ..}
// The answer is the last assistant message. Text is tokenized as inference sees it: the prompt
// alone (with the tokenizer's special prefix such as BOS, or the chat template with the
// assistant header), then the answer and its end (EOS, or the template's end-of-turn).
// Labels: next-token labels over the whole sample (the reference's plain LM loss; the first
// token is never a label) or over the answer only.
// Errors name the file and line: malformed JSON, missing or mistyped fields, an empty answer, a
// task without a target, a sample longer than max_tokens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "elastic/tokenizer.h"

namespace elastic::train {

struct TaskSpec {
  std::string name;
  double target = 1.0;  // target Omega_MSR
};

// Task ids are indices into `tasks` (sorted by name, so ids do not depend on file order).
struct TaskTable {
  std::vector<TaskSpec> tasks;
  // Throws naming `where` when the task has no target.
  int64_t id(const std::string& name, const std::string& where) const;
};

// Defaults (SPEC §7): sparsity-sensitive (QA-like) 0.7, sparsity-robust 1.0.
TaskTable task_table_default();
// A JSON object {"task": target, ...} (or {"tasks": {...}}); targets in [0, 1].
TaskTable task_table_load(const std::string& path);

enum class LabelMode { all, answer };  // plain LM labels, or the answer tokens only

struct DatasetOptions {
  LabelMode labels = LabelMode::all;
  int64_t max_tokens = 4096;
  std::string chat_template = "auto";  // auto (detect from the model folder), none, chatml, llama3
  std::string model_dir;               // for auto detection
};

// One record of a JSON-lines file, tokenized: the prompt as inference prefills it, the answer
// as the tokens that follow it in prompt + answer, with its end (EOS, or the template's
// end-of-turn).
struct EncodedRecord {
  int64_t line = 0;  // 1-based line in the file
  std::string task;
  std::vector<int64_t> prompt, answer;
};

// chat_template: auto (detect from model_dir), none, chatml, llama3.
std::vector<EncodedRecord> records_load(const std::string& path, const Tokenizer& tokenizer,
                                        const std::string& chat_template,
                                        const std::string& model_dir);

struct TrainSample {
  int64_t index = 0;  // record number in the file (0-based, blank lines not counted)
  int64_t line = 0;   // 1-based line in the file
  int64_t task = 0;
  std::vector<int64_t> ids;     // prompt + answer tokens
  std::vector<int64_t> labels;  // [ids.size()] next-token labels, -100 = ignored
  int64_t prompt_tokens = 0;
};

std::vector<TrainSample> dataset_load(const std::string& path, const Tokenizer& tokenizer,
                                      const TaskTable& tasks, const DatasetOptions& options);

// One packed sequence: samples (indices into the dataset vector) whose lengths sum to <= max.
struct Pack {
  std::vector<int64_t> samples;
  int64_t tokens = 0;
};

// The packs of one epoch: the samples in a seeded shuffled order (per epoch), filled greedily
// in that order. Deterministic for (seed, epoch).
std::vector<Pack> packs_for_epoch(const std::vector<TrainSample>& data, int64_t max_tokens,
                                  uint64_t seed, int64_t epoch);

}  // namespace elastic::train
