// What `elastic eval` and `elastic calibrate` share: the model they default to, and the options
// that choose their samples (generated tasks at given lengths, or an imported JSON-lines file).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_options.h"
#include "elastic/eval.h"
#include "elastic/model.h"
#include "elastic/routing_setup.h"
#include "elastic/safetensors.h"
#include "elastic/tokenizer.h"

namespace elastic::cli {

// The model -m defaults to: the shipped model's folder (models/<name>/ of the repository, issue 10
// §2), found beside the source tree this binary was built from.
#ifndef ELASTIC_MODELS_DIR
#define ELASTIC_MODELS_DIR "models"
#endif
inline constexpr const char* kDefaultEvalModel = ELASTIC_MODELS_DIR "/elastic-suite-5m";

// -m, or kDefaultEvalModel when that folder exists; throws elastic::Error otherwise.
std::string eval_model_dir(const CommandLine& cl, const std::string& dir);

struct SampleOptions {
  std::string tasks;        // --tasks: names, "all", "sensitive", "robust" (comma-separated)
  std::string lengths;      // --lengths: token counts (comma-separated)
  int64_t n = 0;            // --n: samples per task and length
  int64_t seed = 1;         // --seed
  std::string import_path;  // --import FILE.jsonl
  std::string export_path;  // --export FILE.jsonl
  std::string default_tasks, default_lengths;  // when --tasks / --lengths are not given
};

// Adds --tasks --lengths --n --seed --import --export with the given defaults in the help.
void sample_options_add(CommandLine& cl, SampleOptions& o, const std::string& default_tasks,
                        const std::string& default_lengths, int64_t default_n);

// Task names of a --tasks value, in the suite's order for the group names, else as listed;
// throws elastic::Error naming the option and the unknown task.
std::vector<std::string> eval_tasks_select(const std::string& text);
// Token counts of a --lengths value (each >= 16).
std::vector<int64_t> eval_lengths_parse(const std::string& text);

// The samples the options name: the imported file (--tasks/--lengths must be unset), or n
// samples of every task at every length, generated for the tokenizer; written to --export when
// set.
std::vector<EvalSample> sample_options_samples(const SampleOptions& o, const Tokenizer& tokenizer,
                                               bool add_special);

// Per-head calibration scores (eval_calibrate) on `samples`, with the attention sizes and the
// retrieval / sparse modes `routing` resolves to for this checkpoint; a progress bar on stderr.
std::vector<std::vector<double>> eval_cli_calibrate(const Model& model, const WeightStore& store,
                                                    const Tokenizer& tokenizer,
                                                    const RoutingOptions& routing,
                                                    const std::vector<EvalSample>& samples,
                                                    bool add_special);

// Samples of a static:R calibration (eval, demo): n per sensitive task among the selected ones
// (all sensitive tasks when none is) that fits the first length, seed S + 1; throws when none
// fits.
std::vector<EvalSample> eval_calibration_samples(const SampleOptions& so, int64_t n,
                                                 const Tokenizer& tok, bool add_special);

// A temporary file removed when it goes out of scope (path empty: none).
struct TempFile {
  std::string path;
  TempFile() = default;
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile();
};
// TMPDIR/STEM_PID.SUFFIX.
std::string temp_file_path(const std::string& stem, const std::string& suffix);

// The rows of `elastic eval --json` (and demo): [{task, length, config, n, accuracy, omega_msr,
// omega_esr, omega_esr_last, prefill_s}].
nlohmann::json eval_results_json(const std::vector<EvalResult>& results);

}  // namespace elastic::cli
