// elastic route: runs the prompt's prefill with Elastic Attention and reports, per request,
// the routing decisions (layer x KV head), the router logits, rho per query head, the model
// and effective sparsity ratios, KV-cache bytes and attention FLOPs against the dense model.
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "cli_options.h"
#include "commands.h"
#include "elastic/config.h"
#include "elastic/model.h"
#include "elastic/report.h"
#include "elastic/tokenizer.h"
#include "elastic_options.h"

namespace elastic::cli {

int cmd_route(int argc, char** argv) {
  CommandLine cl(
      "route", "-m MODEL (--input-ids \"1 2 3\" | -p TEXT) [--json] [options]",
      "Runs one prefill of the token ids with Elastic Attention and prints the routing map\n"
      "(1 = retrieval mode, 0 = sparse mode, per layer and KV head), rho per query head\n"
      "(fraction of causal query-key pairs skipped), Omega_MSR (fraction of heads routed\n"
      "sparse), Omega_ESR (mean rho of the last layer and of all layers), KV-cache bytes and\n"
      "attention FLOPs against the dense model.");
  ModelOptions mo;
  model_options_add(cl, mo, /*tokenizer=*/true,
                    "HF model folder (an Elastic Paw* checkpoint, or a backbone)");
  std::vector<int64_t> ids;
  std::optional<std::string> prompt;
  bool json = false;
  int64_t threads = 0;
  std::string backend = "cpu";
  ElasticOptions eo;
  input_ids_option_add(cl, ids);
  cl.text("-p,--prompt", prompt, "TEXT",
          "text, encoded with the model's tokenizer (no special tokens added)");
  json_option_add(cl, json,
                  "print one JSON object: decisions [L][Hkv], modes,\n"
                  "router_logits [L][Hkv][2] (SA, retrieval; null without a\n"
                  "router), rho [L][Hq], omega_msr, omega_esr_last,\n"
                  "omega_esr_all, kv_cache_bytes(_dense), attention_flops(_dense)");
  threads_option_add(cl, threads);
  backend_option_add(cl, backend);
  elastic_options_add(cl, eo);
  if (!cl.parse(argc, argv)) return 0;
  set_threads(threads);

  if (mo.dir.empty()) throw Error(cl.missing("-m MODEL"));
  if (prompt && !ids.empty()) throw Error("options --input-ids and -p exclude each other");
  if (prompt) {
    const Tokenizer tok = Tokenizer::load(mo.tokenizer_path());
    for (int32_t id : tok.encode(*prompt)) ids.push_back(id);
    if (ids.empty()) throw Error("option -p: the prompt encodes to no tokens");
  }
  if (ids.empty()) throw Error(cl.missing("--input-ids or -p"));

  Model model = model_load(mo.dir, backend_create(backend));
  // Positions past max_position_embeddings are outside what the model was trained on (and its
  // RoPE tables): refuse, as generate and chat do, instead of computing silently.
  if (const int64_t max = model.config.max_position_embeddings;
      max > 0 && static_cast<int64_t>(ids.size()) > max)
    throw Error(std::string((prompt ? "option -p: the prompt's " : "option --input-ids: ")) +
                std::to_string(ids.size()) +
                " tokens exceed the model's max_position_embeddings (" + std::to_string(max) + ")");
  const RoutingSetup setup = routing_setup(eo.routing, model.config, WeightStore::open(mo.dir));
  Request req = request_start(model, setup);
  const int64_t T = static_cast<int64_t>(ids.size());
  PrefillOptions po;
  // The last position's logits (one row of the lm_head) only for the forward's non-finite
  // check: a routing of NaN activations is no routing.
  po.logits = LogitsOutput::last;
  model_prefill(model, req, ids.data(), T, po);
  const RequestReport r = elastic_request_report(model, req, T);
  if (!eo.routing_map.empty()) report_write_routing_map_png(r, eo.routing_map);

  if (json) {
    nlohmann::json j = report_json(r);
    j["model"] = mo.dir;
    j["policy"] = setup.description;
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("model:    %s (%lld tokens)\npolicy:   %s\n", mo.dir.c_str(), (long long)T,
              setup.description.c_str());
  std::printf("routing (rows = layers, columns = KV heads; upper case = retrieval mode):\n");
  for (int64_t l = 0; l < r.layers; ++l) {
    std::printf("  %3lld  ", (long long)l);
    for (int64_t h = 0; h < r.kv_heads; ++h) {
      const char* m = attn_mode_name(r.modes[l][h]);
      std::printf(" %c%c", r.decisions[l][h] ? m[0] - 32 : m[0],
                  r.decisions[l][h] ? m[1] - 32 : m[1]);
    }
    double rho = 0;
    for (double x : r.rho[l]) rho += x;
    std::printf("   mean rho %.3f\n", rho / r.heads);
  }
  std::printf("omega_msr %.4f  omega_esr_last %.4f  omega_esr_all %.4f\n", r.omega_msr,
              r.omega_esr_last, r.omega_esr_all);
  std::printf("kv cache  %.3f MiB of %.3f MiB dense (%.1f%%)\n", r.kv_bytes / 1048576.0,
              r.kv_bytes_dense / 1048576.0,
              r.kv_bytes_dense ? 100.0 * r.kv_bytes / r.kv_bytes_dense : 100.0);
  std::printf("attention %.3g FLOPs of %.3g dense (%.1f%%, XA estimation %.3g)\n", r.attn_flops,
              r.attn_flops_dense,
              r.attn_flops_dense > 0 ? 100.0 * r.attn_flops / r.attn_flops_dense : 100.0,
              r.xa_estimate_flops);
  if (!eo.routing_map.empty()) std::printf("routing map written to %s\n", eo.routing_map.c_str());
  return 0;
}

}  // namespace elastic::cli
