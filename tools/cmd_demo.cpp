// elastic demo: the README's main job (issue 10 §3). On the shipped model (the project's own,
// trained by scripts/train-model.sh), every task of the suite under three routings side by side:
// dense, the Elastic router, and the DuoAttention-like static baseline at the router's mean
// Omega_MSR; accuracy, Omega_MSR and prefill time per task, and the routing heatmap (per task,
// the fraction of its samples that kept each KV head in full attention) as PNG.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_options.h"
#include "commands.h"
#include "elastic/error.h"
#include "elastic/eval.h"
#include "elastic/fileio.h"
#include "elastic/model.h"
#include "elastic/plot.h"
#include "elastic/router.h"
#include "elastic/routing_setup.h"
#include "elastic/tokenizer.h"
#include "elastic_options.h"
#include "eval_cli.h"
#include "progress.h"

namespace elastic::cli {

namespace {

// A heatmap of tasks (rows) by (layer, KV head) (columns): the fraction of the task's samples
// whose router kept that head in the retrieval mode.
void write_heatmap(const std::vector<EvalSampleResult>& runs, const std::vector<std::string>& tasks,
                   const ModelConfig& c, const std::string& path) {
  const int64_t L = c.num_layers, H = c.num_kv_heads;
  Heatmap hm;
  hm.title = "Elastic routing per task: fraction of samples keeping each KV head in full attention";
  hm.x_label = "layer.KV head";
  hm.y_label = "task";
  hm.rows = static_cast<int64_t>(tasks.size());
  hm.columns = L * H;
  hm.row_labels = tasks;
  for (int64_t l = 0; l < L; ++l)
    for (int64_t h = 0; h < H; ++h)
      hm.column_labels.push_back(std::to_string(l) + "." + std::to_string(h));
  hm.values.assign(size_t(hm.rows * hm.columns), 0.0);
  hm.value_label = "fraction FA";
  hm.value_min = 0;
  hm.value_max = 1;
  hm.cell_width = 26;
  hm.cell_height = 24;
  for (size_t t = 0; t < tasks.size(); ++t) {
    int64_t n = 0;
    for (const EvalSampleResult& r : runs) {
      if (r.task != tasks[t] || int64_t(r.decisions.size()) != L * H) continue;
      ++n;
      for (int64_t j = 0; j < L * H; ++j)
        hm.values[t * size_t(L * H) + size_t(j)] += r.decisions[size_t(j)];
    }
    for (int64_t j = 0; j < L * H; ++j)
      hm.values[t * size_t(L * H) + size_t(j)] =
          n ? hm.values[t * size_t(L * H) + size_t(j)] / double(n) : std::nan("");
  }
  plot_write_heatmap_png(hm, path);
}

}  // namespace

int cmd_demo(int argc, char** argv) {
  CommandLine cl(
      "demo", "[-m MODEL] [--length N] [--n N] [--out DIR] [options]",
      "The method on the project's own model, on this machine's CPU: every task of the suite\n"
      "(retrieval tasks that need full attention, robust tasks answered from the prompt's end)\n"
      "with dense attention, with the trained Elastic router, and with a static head set\n"
      "(DuoAttention-like) at the router's mean sparsity. Prints per task the accuracy,\n"
      "Omega_MSR (fraction of KV heads sparse) and prefill time of each, and writes the routing\n"
      "heatmap (per task, which heads the router keeps in full attention) as PNG.");
  ModelOptions mo;
  model_options_add(cl, mo, true,
                    std::string("Elastic checkpoint (default ") + kDefaultEvalModel + ")");
  int64_t length = 1024, n = 3, seed = 1, threads = 0;
  std::string out = ".", backend = "cpu";
  bool json = false;
  cl.integer("--length", length, "N", "prompt length in tokens (default 1024)", {64, 1 << 20});
  cl.integer("--n", n, "N", "samples per task (default 3)", {1, 100000});
  cl.integer("--seed", seed, "S", "seed of the samples (default 1)", {0, 1 << 30});
  cl.text("--out", out, "DIR", "folder of demo-routing.png and demo.json (default .)");
  json_option_add(cl, json, "print the results as one JSON object (as elastic eval --json)");
  threads_option_add(cl, threads);
  backend_option_add(cl, backend);
  if (!cl.parse(argc, argv)) return 0;
  set_threads(threads);
  const std::string dir = eval_model_dir(cl, mo.dir);
  const Tokenizer tok = Tokenizer::load(mo.tokenizer.empty() ? dir : mo.tokenizer);
  Model model = model_load(dir, backend_create(backend));
  const WeightStore store = WeightStore::open(dir);
  if (!router_weights_present(store))
    throw Error(dir + " has no router weights: elastic demo needs an Elastic checkpoint");

  std::vector<std::string> tasks;
  for (const TaskInfo& t : eval_tasks()) tasks.push_back(t.name);
  std::vector<EvalSample> samples;
  const TokenCounter count = eval_token_counter(tok, true);
  for (const std::string& t : tasks) {
    const auto s = eval_generate_set(t, length, n, uint64_t(seed), count);
    samples.insert(samples.end(), s.begin(), s.end());
  }
  EvalOptions opt;
  ProgressBar bar("demo");
  const int64_t total = int64_t(samples.size()) * 3;
  int64_t base = 0;
  auto progress = [&](int64_t d, int64_t, const std::string& w) { bar.update(base + d, total, w); };
  auto config_of = [&](const std::string& name, RoutingOptions r) {
    RoutingSetup setup = routing_setup(r, model.config, store);
    return EvalConfig{name, std::shared_ptr<RoutingPolicy>(std::move(setup.policy)), setup.attn};
  };
  const RoutingOptions none;
  // One untimed prefill first, so that no configuration's times include the cold start (the
  // weights' first touch, the thread pool's start).
  eval_run(model, tok, {samples.front()},
           {config_of("dense", routing_options_from_spec("dense", none))}, opt);
  // 1. Elastic: its mean Omega_MSR sets the static baseline's ratio.
  std::vector<EvalSampleResult> runs;
  std::vector<EvalResult> results = eval_run(
      model, tok, samples, {config_of("elastic", routing_options_from_spec("elastic", none))}, opt,
      progress, &runs);
  base += int64_t(samples.size());
  double omega = 0;
  for (const EvalSampleResult& r : runs) omega += r.omega_msr / double(runs.size());
  // 2. Static at that Omega: the model folder's calibration scores (static_scores.tsv, written
  // by the training pipeline), else a calibration here on one sample per sensitive task.
  std::string scores = dir + "/static_scores.tsv";
  TempFile temporary;
  if (!std::filesystem::exists(scores)) {
    SampleOptions cal;
    cal.tasks = "sensitive";
    cal.lengths = std::to_string(length);
    cal.seed = seed;
    scores = temporary.path = temp_file_path("elastic_demo_scores", ".tsv");
    write_file_atomic(
        scores,
        eval_scores_file_text(eval_cli_calibrate(model, store, tok, none,
                                                 eval_calibration_samples(cal, 1, tok, true), true),
                              "elastic demo calibration"));
  }
  RoutingOptions st = routing_options_from_spec("checkpoint", none);
  st.static_scores = scores;
  st.static_ratio = omega;
  char static_name[32];
  std::snprintf(static_name, sizeof static_name, "static:%.2f", omega);
  const std::vector<EvalResult> rest = eval_run(
      model, tok, samples,
      {config_of("dense", routing_options_from_spec("dense", none)), config_of(static_name, st)},
      opt, progress);
  results.insert(results.end(), rest.begin(), rest.end());

  // The table: one row per task, dense / static / elastic side by side.
  std::map<std::pair<std::string, std::string>, EvalResult> by;
  for (const EvalResult& r : results) by[{r.task, r.config}] = r;
  const std::vector<std::string> configs = {"dense", static_name, "elastic"};
  std::filesystem::create_directories(out);
  const std::string png = out + "/demo-routing.png";
  if (plot_available()) write_heatmap(runs, tasks, model.config, png);
  if (json) {
    std::printf(
        "%s\n",
        nlohmann::json{{"model", dir}, {"results", eval_results_json(results)}}.dump().c_str());
    return 0;
  }
  std::printf("elastic demo: %s, %lld tokens, %lld samples per task\n\n", dir.c_str(),
              (long long)length, (long long)n);
  std::printf("%-18s %-9s", "task", "kind");
  for (const std::string& c : configs) std::printf(" | %-24s", c.c_str());
  std::printf("\n%-18s %-9s", "", "");
  for (size_t i = 0; i < configs.size(); ++i)
    std::printf(" | %8s %6s %8s", "accuracy", "omega", "prefill");
  std::printf("\n");
  double mean[2][3][3] = {};  // [kind][config][accuracy, omega, count]
  for (const TaskInfo& t : eval_tasks()) {
    std::printf("%-18s %-9s", t.name.c_str(), task_kind_name(t.kind));
    for (size_t ci = 0; ci < configs.size(); ++ci) {
      const EvalResult& r = by.at({t.name, configs[ci]});
      std::printf(" | %7.0f%% %6.2f %7.3fs", 100 * r.accuracy, r.omega_msr, r.prefill_s);
      double* m = mean[t.kind == TaskKind::sensitive ? 0 : 1][ci];
      m[0] += r.accuracy, m[1] += r.omega_msr, m[2] += 1;
    }
    std::printf("\n");
  }
  for (int k = 0; k < 2; ++k) {
    std::printf("%-18s %-9s", k == 0 ? "mean, sensitive" : "mean, robust", "");
    for (size_t ci = 0; ci < configs.size(); ++ci) {
      const double* m = mean[k][ci];
      std::printf(" | %7.0f%% %6.2f %8s", 100 * m[0] / std::max(1.0, m[2]),
                  m[1] / std::max(1.0, m[2]), "");
    }
    std::printf("\n");
  }
  if (plot_available()) std::printf("\nrouting heatmap: %s\n", png.c_str());
  return 0;
}

}  // namespace elastic::cli
