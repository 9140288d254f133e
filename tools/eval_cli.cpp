// Sample selection shared by `elastic eval` and `elastic calibrate`.
#include "eval_cli.h"

#include <unistd.h>

#include <filesystem>

#include <algorithm>

#include "elastic/error.h"
#include "progress.h"

namespace elastic::cli {

std::string eval_model_dir(const CommandLine& cl, const std::string& dir) {
  if (!dir.empty()) return dir;
  if (std::filesystem::exists(std::string(kDefaultEvalModel) + "/config.json"))
    return kDefaultEvalModel;
  throw Error(cl.missing("-m MODEL") + " (the shipped model " + kDefaultEvalModel +
              " is not there)");
}

void sample_options_add(CommandLine& cl, SampleOptions& o, const std::string& default_tasks,
                        const std::string& default_lengths, int64_t default_n) {
  o.n = default_n;
  o.default_tasks = default_tasks;
  o.default_lengths = default_lengths;
  cl.text("--tasks", o.tasks, "LIST",
          "tasks, comma-separated: names (see --list-tasks), all, sensitive\n"
          "or robust (default " +
              default_tasks + ")");
  cl.text("--lengths", o.lengths, "LIST",
          "prompt lengths in tokens of the model's tokenizer, comma-separated\n"
          "(default " +
              default_lengths + ")");
  cl.integer("--n", o.n, "N",
             "samples per task and length (default " + std::to_string(default_n) + ")",
             {1, 1000000});
  cl.integer("--seed", o.seed, "S", "seed of the generated samples (default 1)", {0});
  cl.text("--import", o.import_path, "FILE",
          "samples from a JSON-lines file instead of generating them: one\n"
          "{\"prompt\", \"answer\" (string or list), \"task\"} per line, optional\n"
          "\"score\" (exact, contains, all-of) and \"length\"");
  cl.text("--export", o.export_path, "FILE", "write the samples as JSON lines (same format)");
}

std::vector<std::string> eval_tasks_select(const std::string& text) {
  std::vector<std::string> out;
  auto add = [&out](const std::string& name) {
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
  };
  const std::vector<std::string> items = split_list(text);
  if (items.empty()) throw Error("option --tasks: expected task names, got '" + text + "'");
  for (const std::string& item : items) {
    if (item == "all" || item == "sensitive" || item == "robust") {
      for (const TaskInfo& t : eval_tasks())
        if (item == "all" || item == task_kind_name(t.kind)) add(t.name);
      continue;
    }
    try {
      add(eval_task_find(item).name);
    } catch (const Error& e) {
      throw Error(std::string("option --tasks: ") + e.what());
    }
  }
  return out;
}

std::vector<int64_t> eval_lengths_parse(const std::string& text) {
  std::vector<int64_t> out;
  for (const std::string& item : split_list(text))
    out.push_back(parse_int("--lengths", item, {16, int64_t{1} << 24}));
  if (out.empty()) throw Error("option --lengths: expected token counts, got '" + text + "'");
  return out;
}

std::vector<EvalSample> sample_options_samples(const SampleOptions& o, const Tokenizer& tokenizer,
                                               bool add_special) {
  std::vector<EvalSample> samples;
  if (!o.import_path.empty()) {
    if (!o.tasks.empty() || !o.lengths.empty())
      throw Error("option --import excludes --tasks and --lengths (the file holds the samples)");
    samples = eval_samples_read_jsonl(o.import_path);
  } else {
    const TokenCounter count = eval_token_counter(tokenizer, add_special);
    const std::string tasks = o.tasks.empty() ? o.default_tasks : o.tasks;
    const std::string lengths = o.lengths.empty() ? o.default_lengths : o.lengths;
    for (const std::string& task : eval_tasks_select(tasks))
      for (int64_t length : eval_lengths_parse(lengths)) {
        std::vector<EvalSample> s =
            eval_generate_set(task, length, o.n, static_cast<uint64_t>(o.seed), count);
        samples.insert(samples.end(), s.begin(), s.end());
      }
  }
  if (!o.export_path.empty()) eval_samples_write_jsonl(o.export_path, samples);
  return samples;
}

std::vector<std::vector<double>> eval_cli_calibrate(const Model& model, const WeightStore& store,
                                                    const Tokenizer& tokenizer,
                                                    const RoutingOptions& routing,
                                                    const std::vector<EvalSample>& samples,
                                                    bool add_special) {
  const ElasticConfig& e = model.config.elastic;
  CalibrateOptions co;
  co.attn = routing_setup(routing_options_from_spec("all-fa", routing), model.config, store).attn;
  co.add_special = add_special;
  co.retrieval_mode = routing.retrieval_mode.value_or(
      e.retrieval_mode == RetrievalMode::xa ? AttnMode::xa : AttnMode::fa);
  co.sparse_mode =
      routing.sparse_mode.value_or(e.sparse_mode == SparseMode::xa ? AttnMode::xa : AttnMode::ssa);
  ProgressBar bar("calibrate");
  return eval_calibrate(
      model, tokenizer, samples, co,
      [&bar](int64_t d, int64_t t, const std::string& w) { bar.update(d, t, w); });
}

// Samples of the static:R calibration: n per sensitive task among the selected tasks (all
// sensitive tasks when none is selected) that fits the first length, seed S + 1.
std::vector<EvalSample> eval_calibration_samples(const SampleOptions& so, int64_t n,
                                                 const Tokenizer& tok, bool add_special) {
  std::vector<std::string> tasks;
  for (const std::string& t : eval_tasks_select(so.tasks.empty() ? so.default_tasks : so.tasks))
    if (eval_task_find(t).kind == TaskKind::sensitive) tasks.push_back(t);
  if (tasks.empty()) tasks = eval_tasks_select("sensitive");
  const int64_t length =
      eval_lengths_parse(so.lengths.empty() ? so.default_lengths : so.lengths).front();
  const TokenCounter count = eval_token_counter(tok, add_special);
  std::vector<EvalSample> out;
  for (const std::string& t : tasks) {
    try {
      const auto s = eval_generate_set(t, length, n, static_cast<uint64_t>(so.seed) + 1, count);
      out.insert(out.end(), s.begin(), s.end());
    } catch (const Error&) {
      // a task whose prompt cannot fit this length is left out of the calibration
    }
  }
  if (out.empty())
    throw Error("static:R calibration: no sensitive task fits a length of " +
                std::to_string(length) + " tokens; give --static-scores FILE");
  return out;
}

TempFile::~TempFile() {
  std::error_code ec;
  if (!path.empty()) std::filesystem::remove(path, ec);
}

std::string temp_file_path(const std::string& stem, const std::string& suffix) {
  return (std::filesystem::temp_directory_path() /
          (stem + "_" + std::to_string(getpid()) + suffix))
      .string();
}

nlohmann::json eval_results_json(const std::vector<EvalResult>& results) {
  nlohmann::json rows = nlohmann::json::array();
  for (const EvalResult& r : results)
    rows.push_back({{"task", r.task},
                    {"length", r.length},
                    {"config", r.config},
                    {"n", r.n},
                    {"accuracy", r.accuracy},
                    {"omega_msr", r.omega_msr},
                    {"omega_esr", r.omega_esr},
                    {"omega_esr_last", r.omega_esr_last},
                    {"prefill_s", r.prefill_s}});
  return rows;
}

}  // namespace elastic::cli
