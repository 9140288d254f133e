// Routing setup: how a model folder runs with Elastic Attention, resolved in one call for every
// front end (the CLI, an evaluator, a trainer, a server).
//
// From the checkpoint's config.json (ElasticConfig) and weights, plus optional overrides:
//   attention sizes   SSA sink/local/block from sink_size/local_window_size/block_size, XA
//                     block/stride/threshold from xattn_block_size (else block_size)/
//                     xattn_stride/xattn_threshold (defaults 128, 16, 0.9); each may be
//                     overridden; validated together; router pooling P from pool_tokens
//   decode KV         bounded (default: SSA heads keep sinks + window) or full (every head
//                     keeps its whole cache and decodes with FA, as the reference; SPEC §4)
//   head modes        retrieval mode (decision 1) from retrieval_mode, sparse mode (decision 0)
//                     from toggle_type
//   policy            a static assignment when one is given (all-fa, all-sa, a head-list file,
//                     or the lowest-scoring heads of a score file); else the checkpoint's
//                     Attention Router when it has router weights and enable_ada_sparsity (or
//                     router = on); else every head in the retrieval mode
// Errors (conflicting options, missing router weights, bad files) are elastic::Error and name
// the options as the `elastic` command spells them (--router, --static, ...): each field below
// is that option.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "elastic/attention.h"
#include "elastic/config.h"
#include "elastic/model.h"
#include "elastic/routing.h"
#include "elastic/safetensors.h"

namespace elastic {

// Overrides of the checkpoint's defaults; an empty field keeps the default.
struct RoutingOptions {
  std::optional<AttnMode> retrieval_mode;  // --retrieval fa|xa
  std::optional<AttnMode> sparse_mode;     // --sparse ssa|xa
  std::optional<bool> router;              // --router on|off; unset: the checkpoint decides
  std::string static_assignment;           // --static: "all-fa", "all-sa" or a head-list file
  std::string static_scores;               // --static-scores: per-head score file
  std::optional<double> static_ratio;      // --static-ratio: sparse fraction with the scores
  std::optional<int64_t> sink_tokens;      // --sink
  std::optional<int64_t> local_tokens;     // --local
  std::optional<int64_t> ssa_block;        // --block
  std::optional<int64_t> xa_block;         // --xa-block
  std::optional<int64_t> xa_stride;        // --xa-stride
  std::optional<double> xa_threshold;      // --xa-threshold
  std::optional<int64_t> pool_tokens;      // --pool-tokens (router boundary pooling)
  std::optional<double> sparsity_bias;     // --sparsity-bias (added to the router's SA logit)
  std::optional<DecodeKv> decode_kv;       // --decode-kv (default bounded)
};

struct RoutingSetup {
  AttnOptions attn;                       // sizes and decode_kv
  std::unique_ptr<RoutingPolicy> policy;  // never null
  std::string description;                // one line: modes, policy, sizes, decode KV
};

// Resolves `options` against a model's config and weights (the store is read for router
// weights only). Throws elastic::Error for conflicting or invalid options.
RoutingSetup routing_setup(const RoutingOptions& options, const ModelConfig& config,
                           const WeightStore& weights);
// The same for a model folder (config.json + *.safetensors).
RoutingSetup routing_setup(const RoutingOptions& options, const std::string& model_dir);

// A routing spec as an evaluator names it, applied to `options` (which keeps its sizes):
//   checkpoint     the checkpoint's default (the router when it has one and enables it)
//   elastic        the checkpoint's Attention Router (an error without router weights)
//   dense          every head full attention
//   all-fa         every head in the retrieval mode (FA, or XA for an FA->XA checkpoint)
//   all-sa         every head in the sparse mode
//   static:FILE    a head list: the heads named in FILE run the retrieval mode
// The spec replaces the policy fields of `options` (router, static_*); dense also sets the
// retrieval mode to FA. Throws elastic::Error naming the spec when it is none of these.
RoutingOptions routing_options_from_spec(const std::string& spec, RoutingOptions options = {});
// routing_setup(routing_options_from_spec(spec, options), model_dir).
RoutingSetup routing_setup_from_spec(const std::string& spec, const std::string& model_dir,
                                     const RoutingOptions& options = {});

// A fresh request of `model` routed and sized by `setup` (whose policy must outlive it).
inline Request request_start(const Model& model, const RoutingSetup& setup) {
  Request req = request_start(model, setup.policy.get());
  req.attn = setup.attn;
  return req;
}

}  // namespace elastic
