// elastic logits: one prefill of the given token ids; writes the logits (and optionally the
// residual stream after every layer) to a safetensors file.
#include <cstdio>
#include <string>
#include <vector>

#include "cli_args.h"
#include "commands.h"
#include "elastic_options.h"
#include "elastic/model.h"
#include "elastic/safetensors.h"

namespace elastic::cli {

int cmd_logits(int argc, char** argv) {
  std::string model_dir, out_path;
  std::vector<int64_t> ids;
  bool hidden = false;
  ElasticOptions eo;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::printf(
          "usage: elastic logits -m MODEL --input-ids \"1 2 3\" --out FILE.safetensors [--hidden]\n\n"
          "Runs the token ids through the model in one prefill (fp32 compute) and writes\n"
          "  logits     float32 [T, V]   the logits of every position\n"
          "  hidden.i   float32 [T, D]   with --hidden, i = 0..L: i = 0 the embeddings, then the\n"
          "                              residual stream after layer i (the last before the final norm)\n\n"
          "  -m, --model DIR        HF model folder (config.json + *.safetensors)\n"
          "  --input-ids IDS        token ids, separated by spaces or commas\n"
          "  -o, --out FILE         output .safetensors file (written atomically)\n"
          "  --hidden               also write the hidden states\n"
          "  -t, --threads N        CPU threads (default: all cores)\n\n"
          "Also written: the Elastic Attention report of the prefill, named as in the\n"
          "elastic fixtures: decisions i64 [L, Hkv] (1 = retrieval mode), router_logits\n"
          "[L, Hkv, 2] (when a router ran), rho [L, Hq], omega_msr, omega_esr_last,\n"
          "omega_esr_all [1].\n\n%s",
          kElasticOptionsHelp);
      return 0;
    } else if (a == "-m" || a == "--model") {
      model_dir = option_value(argc, argv, i);
    } else if (a == "--input-ids") {
      ids = parse_ids(a, option_value(argc, argv, i));
    } else if (a == "-o" || a == "--out") {
      out_path = option_value(argc, argv, i);
    } else if (a == "--hidden") {
      hidden = true;
    } else if (a == "-t" || a == "--threads") {
      set_threads(parse_int(a, option_value(argc, argv, i), 0));
    } else if (!elastic_options_parse(eo, argc, argv, i)) {
      throw Error("unknown option '" + a + "' (see elastic logits --help)");
    }
  }
  if (model_dir.empty()) throw Error("missing -m MODEL (see elastic logits --help)");
  if (ids.empty()) throw Error("missing --input-ids (see elastic logits --help)");
  if (out_path.empty()) throw Error("missing --out FILE.safetensors (see elastic logits --help)");

  Model model = model_load(model_dir, elastic_backend(eo));
  ElasticSetup setup = elastic_setup(eo, model.config, model_dir);
  Request req = elastic_request_start(model, setup);
  std::vector<std::vector<float>> states;
  PrefillOptions opt;
  opt.logits = LogitsOutput::all;
  opt.hidden = hidden ? &states : nullptr;
  const int64_t T = static_cast<int64_t>(ids.size());
  const std::vector<float>& logits = model_prefill(model, req, ids.data(), T, opt);

  std::vector<SafetensorsWriteItem> items;
  items.push_back(safetensors_item_f32("logits", {T, model.config.vocab_size}, logits.data()));
  for (size_t i = 0; i < states.size(); ++i)
    items.push_back(safetensors_item_f32("hidden." + std::to_string(i),
                                         {T, model.config.hidden_size}, states[i].data()));
  const RequestReport report = elastic_request_report(model, req, T);
  for (SafetensorsWriteItem& it : elastic_report_items(report)) items.push_back(std::move(it));
  if (!eo.routing_map.empty()) report_write_routing_map_png(report, eo.routing_map);
  safetensors_write(out_path, items);
  std::printf("wrote %s: logits [%lld, %lld]%s\n", out_path.c_str(), (long long)T,
              (long long)model.config.vocab_size,
              hidden ? (", hidden.0.." + std::to_string(states.size() - 1)).c_str() : "");
  return 0;
}

}  // namespace elastic::cli
