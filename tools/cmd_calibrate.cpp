// elastic calibrate: the DuoAttention-like static baseline. Measures each KV head's sensitivity
// on calibration samples and writes the score file the static routing reads (one file serves
// every sparse ratio), optionally the head list of one ratio.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_options.h"
#include "commands.h"
#include "elastic/error.h"
#include "elastic/eval.h"
#include "elastic/fileio.h"
#include "elastic/model.h"
#include "elastic/routing.h"
#include "elastic/tokenizer.h"
#include "elastic_options.h"
#include "eval_cli.h"

namespace elastic::cli {

int cmd_calibrate(int argc, char** argv) {
  CommandLine cl(
      "calibrate", "[-m MODEL] -o SCORES [--tasks LIST] [--lengths LIST] [--n N] [options]",
      "Scores every KV head by how much the model needs it for retrieval: on calibration\n"
      "samples (the suite's sensitive tasks by default), the drop in the log-probability of\n"
      "the reference answer when that head alone runs the sparse mode and every other head\n"
      "the retrieval mode, averaged over the samples. Writes the scores as the static routing\n"
      "file (one line per layer, one score per KV head): --static-scores FILE --static-ratio R,\n"
      "or elastic eval --static-scores FILE --configs static:R, makes the round(R * L * Hkv)\n"
      "lowest-scoring heads sparse.");
  ModelOptions mo;
  model_options_add(cl, mo, /*tokenizer=*/true,
                    std::string("HF model folder") +
                        (*kDefaultEvalModel ? std::string(" (default ") + kDefaultEvalModel + ")"
                                            : std::string(" (required)")));
  std::string out_path, head_list_path;
  std::optional<double> ratio;
  bool json = false, no_add_special = false;
  int64_t threads = 0;
  std::string backend = "cpu";
  SampleOptions so;
  ElasticOptions eo;
  cl.text("-o,--output", out_path, "FILE", "write the per-head scores here (required)");
  cl.real("--ratio", ratio, "R", "with --head-list: the sparse fraction of heads (0..1)",
          {0.0, 1.0});
  cl.text("--head-list", head_list_path, "FILE",
          "also write the retrieval heads at --ratio R as a head list (\"LAYER HEAD\" lines)");
  sample_options_add(cl, so, "sensitive", "2048", 4);
  cl.flag("--no-add-special", no_add_special,
          "do not apply the tokenizer's post-processor (BOS) to prompts");
  json_option_add(cl, json, "print one JSON object {\"scores\": [L][Hkv], \"samples\": N}");
  threads_option_add(cl, threads);
  backend_option_add(cl, backend);
  elastic_options_add(cl, eo);
  if (!cl.parse(argc, argv)) return 0;
  set_threads(threads);
  const RoutingOptions& ro = eo.routing;
  if (ro.router || !ro.static_assignment.empty() || !ro.static_scores.empty() || ro.static_ratio ||
      !eo.routing_map.empty())
    throw Error(
        "options --router, --static, --static-scores, --static-ratio and --routing-map do not "
        "apply to elastic calibrate (it measures every head in both modes)");
  if (out_path.empty()) throw Error(cl.missing("-o SCORES"));
  if (head_list_path.empty() != !ratio) throw Error("options --head-list and --ratio go together");

  const std::string model_dir = eval_model_dir(cl, mo.dir);
  const Tokenizer tok = Tokenizer::load(mo.tokenizer.empty() ? model_dir : mo.tokenizer);
  Model model = model_load(model_dir, backend_create(backend));
  const WeightStore store = WeightStore::open(model_dir);
  const std::vector<EvalSample> samples = sample_options_samples(so, tok, !no_add_special);
  const auto scores = eval_cli_calibrate(model, store, tok, ro, samples, !no_add_special);

  write_file_atomic(out_path,
                    eval_scores_file_text(scores, "elastic calibrate " + model_dir + ": " +
                                                      std::to_string(samples.size()) +
                                                      " samples; per KV head the drop in the "
                                                      "answer log-probability when it alone is "
                                                      "sparse (high = keep full attention)"));
  std::string heads;
  if (ratio) {
    const auto a = static_assignment_top_scores(out_path, model.config.num_layers,
                                                model.config.num_kv_heads, *ratio);
    heads = "# retrieval heads at sparse ratio " + std::to_string(*ratio) + " (" + out_path + ")\n";
    for (size_t l = 0; l < a.size(); ++l)
      for (size_t h = 0; h < a[l].size(); ++h)
        if (a[l][h]) heads += std::to_string(l) + " " + std::to_string(h) + "\n";
    write_file_atomic(head_list_path, heads);
  }
  if (json) {
    std::printf("%s\n",
                nlohmann::json{{"scores", scores}, {"samples", samples.size()}}.dump().c_str());
    return 0;
  }
  std::printf("per-head sensitivity (rows = layers, columns = KV heads), %zu samples:\n",
              samples.size());
  for (size_t l = 0; l < scores.size(); ++l) {
    std::printf("  %3zu ", l);
    for (double x : scores[l]) std::printf(" %9.4f", x);
    std::printf("\n");
  }
  std::printf("scores written to %s\n", out_path.c_str());
  if (ratio) std::printf("head list written to %s\n", head_list_path.c_str());
  return 0;
}

}  // namespace elastic::cli
