// Routing setup: the checkpoint's Elastic Attention defaults, overrides, and the policy they
// select (routing_setup.h).
#include "elastic/routing_setup.h"

#include <utility>
#include <vector>

#include "elastic/error.h"
#include "elastic/router.h"

namespace elastic {
namespace {

std::string sizes_description(const AttnOptions& a) {
  return "; SSA block " + std::to_string(a.ssa.block) + " sink " +
         std::to_string(a.ssa.sink_tokens) + " local " + std::to_string(a.ssa.local_tokens) +
         "; XA block " + std::to_string(a.xa.block) + " stride " + std::to_string(a.xa.stride) +
         " threshold " + std::to_string(a.xa.threshold) + "; decode KV " +
         decode_kv_name(a.decode_kv);
}

}  // namespace

RoutingSetup routing_setup(const RoutingOptions& o, const ModelConfig& c,
                           const WeightStore& weights) {
  RoutingSetup s;
  s.attn.ssa.sink_tokens = o.sink_tokens.value_or(c.elastic.sink_size);
  s.attn.ssa.local_tokens = o.local_tokens.value_or(c.elastic.local_window_size);
  s.attn.ssa.block = o.ssa_block.value_or(c.elastic.block_size);
  s.attn.xa.block = o.xa_block.value_or(c.elastic.xa_block);
  s.attn.xa.stride = o.xa_stride.value_or(c.elastic.xa_stride);
  s.attn.xa.threshold = o.xa_threshold.value_or(c.elastic.xa_threshold);
  s.attn.decode_kv = o.decode_kv.value_or(DecodeKv::bounded);
  attn_options_validate(s.attn);

  const AttnMode retrieval = o.retrieval_mode.value_or(
      c.elastic.retrieval_mode == RetrievalMode::xa ? AttnMode::xa : AttnMode::fa);
  const AttnMode sparse = o.sparse_mode.value_or(
      c.elastic.sparse_mode == SparseMode::xa ? AttnMode::xa : AttnMode::ssa);
  if (retrieval == AttnMode::ssa) throw Error("option --retrieval: expected fa or xa, got ssa");
  if (sparse == AttnMode::fa) throw Error("option --sparse: expected ssa or xa, got fa");
  const int64_t L = c.num_layers, Hkv = c.num_kv_heads;
  const std::string modes = std::string(attn_mode_name(retrieval)) + "/" + attn_mode_name(sparse);
  const bool router_on = o.router == true, router_off = o.router == false;
  if (!o.static_assignment.empty() && !o.static_scores.empty())
    throw Error("options --static and --static-scores exclude each other");
  if (o.static_ratio && o.static_scores.empty())
    throw Error("option --static-ratio needs --static-scores");
  if ((!o.static_assignment.empty() || !o.static_scores.empty()) && router_on)
    throw Error("option --router on excludes a static assignment (--static, --static-scores)");

  if (!o.static_assignment.empty()) {
    std::vector<std::vector<uint8_t>> a;
    if (o.static_assignment == "all-fa")
      a = static_assignment_all(L, Hkv, true);
    else if (o.static_assignment == "all-sa")
      a = static_assignment_all(L, Hkv, false);
    else
      a = static_assignment_head_list(o.static_assignment, L, Hkv);
    s.policy = std::make_unique<StaticRouting>(std::move(a), retrieval, sparse);
    s.description = "static " + o.static_assignment + " (retrieval/sparse " + modes + ")";
  } else if (!o.static_scores.empty()) {
    if (!o.static_ratio) throw Error("option --static-scores needs --static-ratio R");
    s.policy = std::make_unique<StaticRouting>(
        static_assignment_top_scores(o.static_scores, L, Hkv, *o.static_ratio), retrieval, sparse);
    s.description = "static scores " + o.static_scores + " ratio " +
                    std::to_string(*o.static_ratio) + " (retrieval/sparse " + modes + ")";
  } else {
    const bool has_router = router_weights_present(weights);
    if (router_on && !has_router)
      throw Error("option --router on: " + weights.source() +
                  " has no router weights (model.layers.0.self_attn.mask_allocator.*); use "
                  "--static");
    // Default: the router when the checkpoint has one and enables it (enable_ada_sparsity);
    // router on forces it.
    if (has_router && (router_on || (!router_off && c.elastic.enable_ada_sparsity))) {
      RouterOptions ro;
      ro.pool_tokens = o.pool_tokens.value_or(c.elastic.pool_tokens);
      ro.sparsity_bias = o.sparsity_bias.value_or(0.0);
      ro.retrieval_mode = retrieval;
      ro.sparse_mode = sparse;
      s.policy = std::make_unique<RouterRouting>(router_weights_load(weights, c), ro);
      s.description = "router (" + std::string(c.elastic.use_softmax ? "softmax" : "sigmoid") +
                      ", retrieval/sparse " + modes + ", pool " + std::to_string(ro.pool_tokens) +
                      ", sparsity bias " + std::to_string(ro.sparsity_bias) + ")";
    } else {
      // Router off, or a backbone without router weights: every head in the retrieval mode.
      s.policy =
          std::make_unique<StaticRouting>(static_assignment_all(L, Hkv, true), retrieval, sparse);
      s.description = std::string(!has_router  ? "no router weights"
                                  : router_off ? "router off"
                                               : "router disabled by enable_ada_sparsity") +
                      ": every head " + attn_mode_name(retrieval);
    }
  }
  s.description += sizes_description(s.attn);
  return s;
}

RoutingSetup routing_setup(const RoutingOptions& options, const std::string& model_dir) {
  const ModelConfig config = config_load(model_dir);
  const WeightStore weights = WeightStore::open(model_dir);
  return routing_setup(options, config, weights);
}

RoutingOptions routing_options_from_spec(const std::string& spec, RoutingOptions o) {
  o.router.reset();
  o.static_assignment.clear();
  o.static_scores.clear();
  o.static_ratio.reset();
  const std::string file_prefix = "static:";
  if (spec == "checkpoint") {
  } else if (spec == "elastic") {
    o.router = true;
  } else if (spec == "dense") {
    o.static_assignment = "all-fa";
    o.retrieval_mode = AttnMode::fa;
  } else if (spec == "all-fa" || spec == "all-sa") {
    o.static_assignment = spec;
  } else if (spec.rfind(file_prefix, 0) == 0 && spec.size() > file_prefix.size()) {
    o.static_assignment = spec.substr(file_prefix.size());
  } else {
    throw Error("routing spec '" + spec +
                "': expected checkpoint, elastic, dense, all-fa, all-sa or static:FILE");
  }
  return o;
}

RoutingSetup routing_setup_from_spec(const std::string& spec, const std::string& model_dir,
                                     const RoutingOptions& options) {
  return routing_setup(routing_options_from_spec(spec, options), model_dir);
}

}  // namespace elastic
