// Elastic Attention options shared by the model commands (route, logits, generate, chat): the
// backend, attention modes and sizes, the router or a static assignment, and the report outputs.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "elastic/attention.h"
#include "elastic/backend.h"
#include "elastic/config.h"
#include "elastic/model.h"
#include "elastic/report.h"
#include "elastic/routing.h"
#include "elastic/safetensors.h"

namespace elastic::cli {

struct ElasticOptions {
  std::string retrieval;      // "" = the checkpoint's retrieval_mode
  std::string sparse;         // "" = the checkpoint's toggle_type
  std::string router;         // "", "on", "off"
  std::string static_spec;    // "", "all-fa", "all-sa" or a head-list file
  std::string static_scores;  // per-head score file
  std::optional<double> static_ratio;
  std::optional<int64_t> sink, local, block, xa_block, xa_stride, pool_tokens;
  std::optional<double> xa_threshold, sparsity_bias;
  std::string routing_map;    // PNG path
  std::string backend = "cpu";  // "cpu" or "cuda" (device mode: KV cache, router and sampling on the GPU)
};

// Text for --help listing every option below.
extern const char* const kElasticOptionsHelp;

// When argv[i] is one of these options, consumes it (and its value, advancing i) and returns
// true; otherwise returns false. Throws elastic::Error for a missing or malformed value.
bool elastic_options_parse(ElasticOptions& o, int argc, char** argv, int& i);

struct ElasticSetup {
  AttnOptions attn;
  std::unique_ptr<RoutingPolicy> policy;  // never null
  std::string description;                // one line: modes, policy, sizes
};

// The compute backend --backend names. Throws elastic::Error for cuda in a build without the CUDA
// backend or on a machine without a CUDA device.
std::shared_ptr<Backend> elastic_backend(const ElasticOptions& o);

// Resolves the options against a model folder's config and weights.
ElasticSetup elastic_setup(const ElasticOptions& o, const ModelConfig& config, const std::string& model_dir);

// A fresh request routed and sized by `setup` (its policy must outlive the request).
inline Request elastic_request_start(const Model& model, const ElasticSetup& setup) {
  Request req = request_start(model, setup.policy.get());
  req.attn = setup.attn;
  return req;
}

// Report of a request after its first prefill of `tokens` tokens.
RequestReport elastic_request_report(const Model& model, const Request& req, int64_t tokens);

// The report as safetensors items named like the elastic fixtures: decisions i64 [L, Hkv],
// router_logits f32 [L, Hkv, 2] (when a router ran), rho f32 [L, Hq], omega_msr,
// omega_esr_last, omega_esr_all f32 [1].
std::vector<SafetensorsWriteItem> elastic_report_items(const RequestReport& r);

}  // namespace elastic::cli
