// elastic eval: the long-context task suite (issue 10 §1) under several routing configurations
// side by side: accuracy, Omega_MSR / Omega_ESR and prefill time per (task, length, config).
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_options.h"
#include "commands.h"
#include "elastic/error.h"
#include "elastic/eval.h"
#include "elastic/fileio.h"
#include "elastic/model.h"
#include "elastic/router.h"
#include "elastic/routing_setup.h"
#include "elastic/tokenizer.h"
#include "elastic_options.h"
#include "eval_cli.h"
#include "progress.h"

namespace elastic::cli {

namespace {

std::vector<std::string> split_configs(const std::string& text) {
  std::vector<std::string> out = split_list(text);
  if (out.empty()) throw Error("option --configs: expected configurations, got '" + text + "'");
  return out;
}

// The R of "static:R" when it is a number, else -1 (then it names a head-list file).
double static_ratio_of(const std::string& spec) {
  const std::string prefix = "static:";
  if (spec.rfind(prefix, 0) != 0) return -1;
  const std::string r = spec.substr(prefix.size());
  char* end = nullptr;
  const double v = std::strtod(r.c_str(), &end);
  if (r.empty() || *end != '\0') return -1;
  if (!(v >= 0.0 && v <= 1.0))
    throw Error("option --configs: " + spec + ": the sparse ratio must be in [0, 1]");
  return v;
}

void print_task_list(bool json) {
  if (json) {
    nlohmann::json j = nlohmann::json::array();
    for (const TaskInfo& t : eval_tasks())
      j.push_back({{"name", t.name}, {"kind", task_kind_name(t.kind)}});
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("%-18s %-9s %-8s %s\n", "task", "kind", "score", "what");
  for (const TaskInfo& t : eval_tasks())
    std::printf("%-18s %-9s %-8s %s\n", t.name.c_str(), task_kind_name(t.kind),
                score_rule_name(t.score), t.description.c_str());
}

void print_table(const std::vector<EvalResult>& results) {
  std::printf("%-18s %7s  %-14s %5s %9s %10s %10s %10s\n", "task", "length", "config", "n",
              "accuracy", "omega_msr", "omega_esr", "prefill_s");
  for (const EvalResult& r : results)
    std::printf("%-18s %7lld  %-14s %5lld %8.1f%% %10.3f %10.3f %10.4f\n", r.task.c_str(),
                (long long)r.length, r.config.c_str(), (long long)r.n, 100.0 * r.accuracy,
                r.omega_msr, r.omega_esr, r.prefill_s);
  // Means over the tasks of each kind (tasks of imported files the suite does not know: "other").
  struct Mean {
    int64_t rows = 0;
    double accuracy = 0, omega = 0;
  };
  std::vector<std::string> configs;
  for (const EvalResult& r : results)
    if (std::find(configs.begin(), configs.end(), r.config) == configs.end())
      configs.push_back(r.config);
  std::printf("\nmeans over tasks and lengths: accuracy / omega_msr\n");
  std::printf("%-14s %20s %20s %20s\n", "config", "sensitive", "robust", "other");
  for (const std::string& c : configs) {
    Mean m[3];
    for (const EvalResult& r : results) {
      if (r.config != c) continue;
      int kind = 2;
      for (const TaskInfo& t : eval_tasks())
        if (t.name == r.task) kind = t.kind == TaskKind::sensitive ? 0 : 1;
      m[kind].rows += 1;
      m[kind].accuracy += r.accuracy;
      m[kind].omega += r.omega_msr;
    }
    std::printf("%-14s", c.c_str());
    for (const Mean& x : m) {
      if (x.rows == 0) {
        std::printf(" %20s", "-");
        continue;
      }
      char cell[64];
      std::snprintf(cell, sizeof cell, "%.1f%% / %.3f", 100.0 * x.accuracy / x.rows,
                    x.omega / x.rows);
      std::printf(" %20s", cell);
    }
    std::printf("\n");
  }
}

}  // namespace

int cmd_eval(int argc, char** argv) {
  CommandLine cl(
      "eval",
      "[-m MODEL] [--tasks LIST] [--lengths LIST] [--n N] [--seed S]\n"
      "                    [--configs LIST] [--json] [--plot FILE.png] [options]\n"
      "       elastic eval --list-tasks [--json]",
      "Runs the long-context task suite (RULER-like retrieval tasks that need exact attention\n"
      "to the whole prompt, and robust tasks answered from its last few hundred tokens) under\n"
      "several routing configurations side by side, and prints per task, length and\n"
      "configuration the accuracy (RULER's scoring), Omega_MSR (fraction of KV heads routed\n"
      "sparse), Omega_ESR (mean fraction of causal query-key pairs skipped, all layers) and\n"
      "the prefill time. Each sample: prefill, greedy decoding up to the answer's length plus a\n"
      "margin, stopping at EOS or a newline after the answer.");
  ModelOptions mo;
  model_options_add(cl, mo, /*tokenizer=*/true,
                    std::string("HF model folder") +
                        (*kDefaultEvalModel ? std::string(" (default ") + kDefaultEvalModel + ")"
                                            : std::string(" (required)")));
  bool list_tasks = false, json = false, no_add_special = false;
  SampleOptions so;
  std::string configs_text, calibration_out, plot_path;
  int64_t calibration_n = 2, margin = 8, threads = 0;
  std::string backend = "cpu";
  ElasticOptions eo;
  cl.flag("--list-tasks", list_tasks, "list the tasks (name, kind, score rule) and exit");
  sample_options_add(cl, so, "all", "4096", 50);
  cl.text("--configs", configs_text, "LIST",
          "routing configurations, comma-separated (default dense,all-sa,\n"
          "and elastic when the checkpoint has router weights):\n"
          "  dense       every head full attention\n"
          "  all-sa      every head the sparse mode (all-fa: the retrieval mode)\n"
          "  elastic     the checkpoint's Attention Router\n"
          "  static:R    DuoAttention-like: the fraction R of heads with the lowest\n"
          "              calibration scores sparse (--static-scores FILE from\n"
          "              elastic calibrate, else calibrated here first)\n"
          "  static:FILE a head list naming the retrieval heads");
  cl.integer("--calibration-n", calibration_n, "N",
             "static:R without --static-scores: calibration samples per sensitive\n"
             "task, at the first length, seed S + 1 (default 2)",
             {1, 100000});
  cl.text("--calibration-out", calibration_out, "FILE",
          "write the scores of that calibration to FILE");
  cl.integer("--margin", margin, "N", "tokens decoded beyond the answer's length (default 8)",
             {0, 100000});
  cl.flag("--no-add-special", no_add_special,
          "do not apply the tokenizer's post-processor (BOS) to prompts");
  cl.text("--plot", plot_path, "FILE",
          "write accuracy against Omega_MSR as PNG: a panel per task kind, a\n"
          "colour per configuration, a point per length");
  json_option_add(cl, json,
                  "print one JSON object {\"results\": [{task, length, config, n,\n"
                  "accuracy, omega_msr, omega_esr, omega_esr_last, prefill_s}]};\n"
                  "with --list-tasks: [{name, kind}]");
  threads_option_add(cl, threads);
  backend_option_add(cl, backend);
  elastic_options_add(cl, eo);
  cl.footer(
      "Configurations set the routing; the Elastic options set the sizes and modes (--sink,\n"
      "--local, --block, --retrieval, --sparse, XA and router options) of all of them, and\n"
      "--static-scores the scores of static:R. Progress goes to stderr.");
  if (!cl.parse(argc, argv)) return 0;
  set_threads(threads);
  if (list_tasks) {
    print_task_list(json);
    return 0;
  }
  const RoutingOptions& ro = eo.routing;
  if (ro.router || !ro.static_assignment.empty() || ro.static_ratio || !eo.routing_map.empty())
    throw Error(
        "options --router, --static, --static-ratio and --routing-map do not apply to elastic "
        "eval: name the routing configurations with --configs");
  const std::string model_dir = eval_model_dir(cl, mo.dir);
  const Tokenizer tok =
      Tokenizer::load(mo.tokenizer_path().empty() ? model_dir : mo.tokenizer_path());
  Model model = model_load(model_dir, backend_create(backend));
  const WeightStore store = WeightStore::open(model_dir);

  EvalOptions opt;
  opt.add_special = !no_add_special;
  opt.answer_margin = margin;
  const std::vector<EvalSample> samples = sample_options_samples(so, tok, opt.add_special);
  if (configs_text.empty())
    configs_text = router_weights_present(store) ? "dense,all-sa,elastic" : "dense,all-sa";

  // static:R reads a score file: --static-scores, or the scores calibrated here (kept in a
  // temporary file unless --calibration-out names one).
  std::string scores_path = ro.static_scores;
  TempFile temporary;
  std::vector<EvalConfig> configs;
  for (const std::string& spec : split_configs(configs_text)) {
    RoutingOptions r = routing_options_from_spec("checkpoint", ro);  // sizes and modes of ro
    const double ratio = static_ratio_of(spec);
    if (ratio >= 0) {
      if (scores_path.empty()) {
        if (!so.import_path.empty())
          throw Error("option --configs " + spec +
                      " with --import needs --static-scores FILE (from elastic calibrate)");
        const std::vector<EvalSample> cal =
            eval_calibration_samples(so, calibration_n, tok, opt.add_special);
        const auto scores = eval_cli_calibrate(model, store, tok, ro, cal, opt.add_special);
        if (calibration_out.empty()) {
          scores_path = temporary.path = temp_file_path("elastic_eval_scores", ".tsv");
        } else {
          scores_path = calibration_out;
        }
        write_file_atomic(scores_path,
                          eval_scores_file_text(scores,
                                                "elastic eval calibration: drop in the "
                                                "answer log-probability per KV head"));
      }
      r.static_scores = scores_path;
      r.static_ratio = ratio;
    } else {
      const bool known = spec == "dense" || spec == "all-fa" || spec == "all-sa" ||
                         spec == "elastic" || spec == "checkpoint" ||
                         (spec.rfind("static:", 0) == 0 && spec.size() > 7);
      if (!known)
        throw Error("option --configs: unknown configuration '" + spec +
                    "' (expected dense, all-fa, all-sa, elastic, checkpoint, static:R or "
                    "static:FILE)");
      if (spec == "elastic" && !router_weights_present(store))
        throw Error("option --configs elastic: " + model_dir +
                    " has no router weights (model.layers.0.self_attn.mask_allocator.*); use "
                    "dense, all-sa or static:R");
      r = routing_options_from_spec(spec, ro);
    }
    RoutingSetup setup;
    try {
      setup = routing_setup(r, model.config, store);
    } catch (const Error& e) {
      throw Error("option --configs " + spec + ": " + e.what());
    }
    configs.push_back({spec, std::shared_ptr<RoutingPolicy>(std::move(setup.policy)), setup.attn});
  }

  ProgressBar bar("eval");
  const std::vector<EvalResult> results =
      eval_run(model, tok, samples, configs, opt,
               [&bar](int64_t d, int64_t t, const std::string& w) { bar.update(d, t, w); });
  if (json) {
    std::printf("%s\n", nlohmann::json{{"results", eval_results_json(results)}}.dump().c_str());
  } else {
    print_table(results);
  }
  // The figure last: the results are out even when it cannot be written.
  if (!plot_path.empty()) {
    std::string name = model_dir;  // the folder's name, for the title
    while (name.size() > 1 && name.back() == '/') name.pop_back();
    eval_plot_write_png(results, plot_path, "elastic eval: " + name.substr(name.rfind('/') + 1));
  }
  if (!plot_path.empty() && !json) std::printf("plot written to %s\n", plot_path.c_str());
  return 0;
}

}  // namespace elastic::cli
