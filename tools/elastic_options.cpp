// Shared Elastic Attention options of the model commands.
#include "elastic_options.h"

#include <cstring>

#include "cli_args.h"
#include "elastic/error.h"
#include "elastic/router.h"
#ifdef ELASTIC_HAVE_CUDA
#include "elastic/cuda/backend_cuda.h"
#endif

namespace elastic::cli {

const char* const kElasticOptionsHelp =
    "Elastic Attention (defaults from the checkpoint's config.json):\n"
    "  --retrieval fa|xa      mode of retrieval heads (router decision 1)\n"
    "  --sparse ssa|xa        mode of sparse heads (router decision 0)\n"
    "  --router on|off        the checkpoint's Attention Router (default: on when the checkpoint\n"
    "                         has router weights and enable_ada_sparsity; off = every head in the\n"
    "                         retrieval mode; a backbone without router weights runs dense)\n"
    "  --static SPEC          fixed assignment instead of the router: all-fa (every head the\n"
    "                         retrieval mode), all-sa (every head the sparse mode), or FILE: a\n"
    "                         head list, one \"LAYER KV_HEAD\" pair per line (0-based, '#'\n"
    "                         comments), naming the retrieval heads; all others are sparse\n"
    "  --static-scores FILE   DuoAttention-style scores: one line per layer, one number per KV\n"
    "                         head (spaces/tabs/commas); with --static-ratio R the round(R*L*Hkv)\n"
    "                         lowest-scoring heads are sparse, the rest retrieval\n"
    "  --static-ratio R       fraction of heads made sparse with --static-scores (0..1)\n"
    "  --sink T               SSA sink tokens (rounded up to blocks; default sink_size)\n"
    "  --local T              SSA local window tokens (rounded up; default local_window_size)\n"
    "  --block B              SSA block size (default 128)\n"
    "  --xa-block B           XA block size (default 128; a multiple of the stride)\n"
    "  --xa-stride S          XA antidiagonal stride (default 16)\n"
    "  --xa-threshold X       XA cumulative-mass threshold in (0, 1] (default 0.9)\n"
    "  --pool-tokens P        router boundary pooling: first and last P tokens (default 100)\n"
    "  --sparsity-bias B      added to the router's sparse logit: > 0 routes more heads sparse\n"
    "  --routing-map FILE     write the routing map (layers x KV heads) as a PNG heatmap\n"
    "  --backend cpu|cuda     compute backend (default cpu); cuda keeps the KV cache, the router\n"
    "                         and sampling on the GPU (builds with the CUDA backend only)\n";

bool elastic_options_parse(ElasticOptions& o, int argc, char** argv, int& i) {
  const std::string a = argv[i];
  auto str = [&] { return option_value(argc, argv, i); };
  auto num = [&](int64_t min) { return parse_int(a, option_value(argc, argv, i), min); };
  auto real = [&] {
    const std::string v = option_value(argc, argv, i);
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0') throw Error("option " + a + ": expected a number, got '" + v + "'");
    return x;
  };
  if (a == "--retrieval") {
    o.retrieval = str();
    if (o.retrieval != "fa" && o.retrieval != "xa") throw Error("option --retrieval: expected fa or xa, got '" + o.retrieval + "'");
  } else if (a == "--sparse") {
    o.sparse = str();
    if (o.sparse != "ssa" && o.sparse != "xa") throw Error("option --sparse: expected ssa or xa, got '" + o.sparse + "'");
  } else if (a == "--router") {
    o.router = str();
    if (o.router != "on" && o.router != "off") throw Error("option --router: expected on or off, got '" + o.router + "'");
  } else if (a == "--static") {
    o.static_spec = str();
  } else if (a == "--static-scores") {
    o.static_scores = str();
  } else if (a == "--static-ratio") {
    o.static_ratio = real();
  } else if (a == "--sink") {
    o.sink = num(0);
  } else if (a == "--local") {
    o.local = num(1);
  } else if (a == "--block") {
    o.block = num(1);
  } else if (a == "--xa-block") {
    o.xa_block = num(1);
  } else if (a == "--xa-stride") {
    o.xa_stride = num(1);
  } else if (a == "--xa-threshold") {
    o.xa_threshold = real();
  } else if (a == "--pool-tokens") {
    o.pool_tokens = num(1);
  } else if (a == "--sparsity-bias") {
    o.sparsity_bias = real();
  } else if (a == "--routing-map") {
    o.routing_map = str();
  } else if (a == "--backend") {
    o.backend = str();
    if (o.backend != "cpu" && o.backend != "cuda") throw Error("option --backend: expected cpu or cuda, got '" + o.backend + "'");
  } else {
    return false;
  }
  return true;
}

std::shared_ptr<Backend> elastic_backend(const ElasticOptions& o) {
  if (o.backend == "cuda") {
#ifdef ELASTIC_HAVE_CUDA
    return backend_cuda(CudaBackendOptions{/*host_visible=*/false});
#else
    throw Error("option --backend cuda: this build has no CUDA backend (configure with -DELASTIC_CUDA=ON)");
#endif
  }
  return backend_cpu();
}

ElasticSetup elastic_setup(const ElasticOptions& o, const ModelConfig& c, const std::string& model_dir) {
  ElasticSetup s;
  s.attn.ssa.sink_tokens = o.sink.value_or(c.elastic.sink_size);
  s.attn.ssa.local_tokens = o.local.value_or(c.elastic.local_window_size);
  s.attn.ssa.block = o.block.value_or(c.elastic.block_size);
  s.attn.xa.block = o.xa_block.value_or(128);
  s.attn.xa.stride = o.xa_stride.value_or(16);
  s.attn.xa.threshold = o.xa_threshold.value_or(0.9);
  attn_options_validate(s.attn);

  const AttnMode retrieval = !o.retrieval.empty() ? attn_mode_parse(o.retrieval, "--retrieval")
                             : c.elastic.retrieval_mode == RetrievalMode::xa ? AttnMode::xa
                                                                             : AttnMode::fa;
  const AttnMode sparse = !o.sparse.empty() ? attn_mode_parse(o.sparse, "--sparse")
                          : c.elastic.sparse_mode == SparseMode::xa ? AttnMode::xa
                                                                    : AttnMode::ssa;
  const int64_t L = c.num_layers, Hkv = c.num_kv_heads;
  const std::string modes = std::string(attn_mode_name(retrieval)) + "/" + attn_mode_name(sparse);
  if (!o.static_spec.empty() && !o.static_scores.empty())
    throw Error("options --static and --static-scores exclude each other");
  if (o.static_ratio && o.static_scores.empty()) throw Error("option --static-ratio needs --static-scores");
  if ((!o.static_spec.empty() || !o.static_scores.empty()) && o.router == "on")
    throw Error("option --router on excludes a static assignment (--static, --static-scores)");

  if (!o.static_spec.empty()) {
    std::vector<std::vector<uint8_t>> a;
    if (o.static_spec == "all-fa")
      a = static_assignment_all(L, Hkv, true);
    else if (o.static_spec == "all-sa")
      a = static_assignment_all(L, Hkv, false);
    else
      a = static_assignment_head_list(o.static_spec, L, Hkv);
    s.policy = std::make_unique<StaticRouting>(std::move(a), retrieval, sparse);
    s.description = "static " + o.static_spec + " (retrieval/sparse " + modes + ")";
  } else if (!o.static_scores.empty()) {
    if (!o.static_ratio) throw Error("option --static-scores needs --static-ratio R");
    s.policy = std::make_unique<StaticRouting>(
        static_assignment_top_scores(o.static_scores, L, Hkv, *o.static_ratio), retrieval, sparse);
    s.description = "static scores " + o.static_scores + " ratio " + std::to_string(*o.static_ratio) +
                    " (retrieval/sparse " + modes + ")";
  } else {
    const WeightStore store = WeightStore::open(model_dir);
    const bool has_router = router_weights_present(store);
    if (o.router == "on" && !has_router)
      throw Error("option --router on: " + model_dir + " has no router weights (model.layers.0.self_attn.mask_allocator.*); use --static");
    // Default: the router when the checkpoint has one and enables it (enable_ada_sparsity);
    // --router on forces it.
    if (has_router && (o.router == "on" || (o.router.empty() && c.elastic.enable_ada_sparsity))) {
      RouterOptions ro;
      ro.pool_tokens = o.pool_tokens.value_or(c.elastic.pool_tokens);
      ro.sparsity_bias = o.sparsity_bias.value_or(0.0);
      ro.retrieval_mode = retrieval;
      ro.sparse_mode = sparse;
      s.policy = std::make_unique<RouterRouting>(router_weights_load(store, c), ro);
      s.description = "router (" + std::string(c.elastic.use_softmax ? "softmax" : "sigmoid") +
                      ", retrieval/sparse " + modes + ", pool " + std::to_string(ro.pool_tokens) +
                      ", sparsity bias " + std::to_string(ro.sparsity_bias) + ")";
    } else {
      // Router off, or a backbone without router weights: every head in the retrieval mode.
      s.policy = std::make_unique<StaticRouting>(static_assignment_all(L, Hkv, true), retrieval, sparse);
      s.description = std::string(!has_router ? "no router weights" : o.router == "off" ? "router off" : "router disabled by enable_ada_sparsity") + ": every head " +
                      attn_mode_name(retrieval);
    }
  }
  s.description += "; SSA block " + std::to_string(s.attn.ssa.block) + " sink " +
                   std::to_string(s.attn.ssa.sink_tokens) + " local " + std::to_string(s.attn.ssa.local_tokens) +
                   "; XA block " + std::to_string(s.attn.xa.block) + " stride " + std::to_string(s.attn.xa.stride) +
                   " threshold " + std::to_string(s.attn.xa.threshold);
  return s;
}

RequestReport elastic_request_report(const Model& model, const Request& req, int64_t tokens) {
  const ModelConfig& c = model.config;
  return report_build(c.num_heads, c.num_kv_heads, c.head_dim, tokens, req.routes, req.prefill_stats, req.attn);
}

std::vector<SafetensorsWriteItem> elastic_report_items(const RequestReport& r) {
  std::vector<SafetensorsWriteItem> items;
  const int64_t L = r.layers, Hkv = r.kv_heads, Hq = r.heads;
  SafetensorsWriteItem dec{"decisions", DType::i64, {L, Hkv}, {}};
  for (const auto& row : r.decisions)
    for (uint8_t x : row) {
      const int64_t v = x;
      const auto* p = reinterpret_cast<const unsigned char*>(&v);
      dec.bytes.insert(dec.bytes.end(), p, p + sizeof v);
    }
  items.push_back(std::move(dec));
  std::vector<float> logits, rho;
  bool has_logits = true;
  for (const auto& row : r.router_logits) {
    has_logits = has_logits && static_cast<int64_t>(row.size()) == 2 * Hkv;
    logits.insert(logits.end(), row.begin(), row.end());
  }
  if (has_logits && L > 0) items.push_back(safetensors_item_f32("router_logits", {L, Hkv, 2}, logits.data()));
  for (const auto& row : r.rho)
    for (double x : row) rho.push_back(static_cast<float>(x));
  items.push_back(safetensors_item_f32("rho", {L, Hq}, rho.data()));
  for (auto [name, v] : {std::pair<const char*, double>{"omega_msr", r.omega_msr},
                         {"omega_esr_last", r.omega_esr_last}, {"omega_esr_all", r.omega_esr_all}}) {
    const float f = static_cast<float>(v);
    items.push_back(safetensors_item_f32(name, {1}, &f));
  }
  return items;
}

}  // namespace elastic::cli
