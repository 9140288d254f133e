// Elastic Attention options shared by the model commands (route, logits, generate, chat): the
// attention modes and sizes, the router or a static assignment, and the routing-map output.
// The options fill the library's RoutingOptions; routing_setup() (elastic/routing_setup.h)
// resolves them against the checkpoint. Reports of a request, as the commands print them.
#pragma once

#include <string>
#include <vector>

#include "cli_options.h"
#include "elastic/model.h"
#include "elastic/report.h"
#include "elastic/routing_setup.h"
#include "elastic/safetensors.h"

namespace elastic::cli {

struct ElasticOptions {
  RoutingOptions routing;
  std::string routing_map;  // --routing-map: PNG path
};

// The "Elastic Attention" section of --help: --retrieval --sparse --router --static
// --static-scores --static-ratio --sink --local --block --xa-block --xa-stride --xa-threshold
// --pool-tokens --sparsity-bias --decode-kv --routing-map.
void elastic_options_add(CommandLine& cl, ElasticOptions& o);

// Report of a request after its first prefill of `tokens` tokens.
RequestReport elastic_request_report(const Model& model, const Request& req, int64_t tokens);

// The report as safetensors items named like the elastic fixtures: decisions i64 [L, Hkv],
// router_logits f32 [L, Hkv, 2] (when a router ran), rho f32 [L, Hq], omega_msr,
// omega_esr_last, omega_esr_all f32 [1].
std::vector<SafetensorsWriteItem> elastic_report_items(const RequestReport& r);

}  // namespace elastic::cli
