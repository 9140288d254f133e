// elastic logits: one prefill of the given token ids; writes the logits (and optionally the
// residual stream after every layer) to a safetensors file.
#include <cstdio>
#include <string>
#include <vector>

#include "cli_options.h"
#include "commands.h"
#include "elastic/model.h"
#include "elastic/safetensors.h"
#include "elastic_options.h"

namespace elastic::cli {

int cmd_logits(int argc, char** argv) {
  CommandLine cl(
      "logits", "-m MODEL --input-ids \"1 2 3\" --out FILE.safetensors [--hidden]",
      "Runs the token ids through the model in one prefill (fp32 compute) and writes\n"
      "  logits     float32 [T, V]   the logits of every position\n"
      "  hidden.i   float32 [T, D]   with --hidden, i = 0..L: i = 0 the embeddings, then the\n"
      "                              residual stream after layer i (the last before the final "
      "norm)");
  cl.footer(
      "Also written: the Elastic Attention report of the prefill, named as in the\n"
      "elastic fixtures: decisions i64 [L, Hkv] (1 = retrieval mode), router_logits\n"
      "[L, Hkv, 2] (when a router ran), rho [L, Hq], omega_msr, omega_esr_last,\n"
      "omega_esr_all [1].");
  ModelOptions mo;
  std::string out_path;
  std::vector<int64_t> ids;
  bool hidden = false;
  int64_t threads = 0;
  std::string backend = "cpu";
  ElasticOptions eo;
  model_options_add(cl, mo, /*tokenizer=*/false);
  input_ids_option_add(cl, ids);
  cl.text("-o,--out", out_path, "FILE", "output .safetensors file (written atomically)");
  cl.flag("--hidden", hidden, "also write the hidden states");
  threads_option_add(cl, threads);
  backend_option_add(cl, backend);
  elastic_options_add(cl, eo);
  if (!cl.parse(argc, argv)) return 0;
  set_threads(threads);
  if (mo.dir.empty()) throw Error(cl.missing("-m MODEL"));
  if (ids.empty()) throw Error(cl.missing("--input-ids"));
  if (out_path.empty()) throw Error(cl.missing("--out FILE.safetensors"));

  Model model = model_load(mo.dir, backend_create(backend));
  // Positions past max_position_embeddings are outside what the model was trained on (and its
  // RoPE tables): refuse, as generate and chat do, instead of computing silently.
  if (const int64_t max = model.config.max_position_embeddings;
      max > 0 && static_cast<int64_t>(ids.size()) > max)
    throw Error(std::string("option --input-ids: ") + std::to_string(ids.size()) +
                " tokens exceed the model's max_position_embeddings (" + std::to_string(max) + ")");
  const RoutingSetup setup = routing_setup(eo.routing, model.config, WeightStore::open(mo.dir));
  Request req = request_start(model, setup);
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
