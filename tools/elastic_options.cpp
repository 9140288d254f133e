// Shared Elastic Attention options of the model commands.
#include "elastic_options.h"

#include "elastic/attention.h"

namespace elastic::cli {
namespace {

// Upper bound of the token-count options: far beyond any context, small enough that sizes
// computed from them cannot overflow.
constexpr int64_t kMaxTokens = int64_t{1} << 30;

}  // namespace

void elastic_options_add(CommandLine& cl, ElasticOptions& o) {
  RoutingOptions& r = o.routing;
  cl.section("Elastic Attention (defaults from the checkpoint's config.json)");
  cl.choice("--retrieval", {"fa", "xa"}, "mode of retrieval heads (router decision 1)",
            [&r](const std::string& v) { r.retrieval_mode = attn_mode_parse(v, "--retrieval"); });
  cl.choice("--sparse", {"ssa", "xa"}, "mode of sparse heads (router decision 0)",
            [&r](const std::string& v) { r.sparse_mode = attn_mode_parse(v, "--sparse"); });
  cl.choice("--router", {"on", "off"},
            "the checkpoint's Attention Router (default: on when the checkpoint\n"
            "has router weights and enable_ada_sparsity; off = every head in the\n"
            "retrieval mode; a backbone without router weights runs dense)",
            [&r](const std::string& v) { r.router = v == "on"; });
  cl.text("--static", r.static_assignment, "SPEC",
          "fixed assignment instead of the router: all-fa (every head the\n"
          "retrieval mode), all-sa (every head the sparse mode), or FILE: a\n"
          "head list, one \"LAYER KV_HEAD\" pair per line (0-based, '#'\n"
          "comments), naming the retrieval heads; all others are sparse");
  cl.text("--static-scores", r.static_scores, "FILE",
          "DuoAttention-style scores: one line per layer, one number per KV\n"
          "head (spaces/tabs/commas); with --static-ratio R the round(R*L*Hkv)\n"
          "lowest-scoring heads are sparse, the rest retrieval");
  cl.real("--static-ratio", r.static_ratio, "R",
          "fraction of heads made sparse with --static-scores (0..1)", {0.0, 1.0});
  cl.integer("--sink", r.sink_tokens, "T",
             "SSA sink tokens (rounded up to blocks; default sink_size)", {0, kMaxTokens});
  cl.integer("--local", r.local_tokens, "T",
             "SSA local window tokens (rounded up; default local_window_size)", {1, kMaxTokens});
  cl.integer("--block", r.ssa_block, "B", "SSA block size (default block_size, else 128)",
             {1, kMaxTokens});
  cl.integer("--xa-block", r.xa_block, "B",
             "XA block size (default xattn_block_size, else block_size, else\n128; a multiple of "
             "the stride)",
             {1, kMaxTokens});
  cl.integer("--xa-stride", r.xa_stride, "S",
             "XA antidiagonal stride (default xattn_stride, else 16)", {1, kMaxTokens});
  cl.real("--xa-threshold", r.xa_threshold, "X",
          "XA cumulative-mass threshold in (0, 1] (default xattn_threshold,\nelse 0.9)",
          {0.0, 1.0, /*min_open=*/true});
  cl.integer("--pool-tokens", r.pool_tokens, "P",
             "router boundary pooling: first and last P tokens (default\npool_tokens or pool_size, "
             "else 100)",
             {1, kMaxTokens});
  cl.real("--sparsity-bias", r.sparsity_bias, "B",
          "added to the router's sparse logit: > 0 routes more heads sparse", {});
  cl.choice("--decode-kv", {"bounded", "full"},
            "KV cache after the prefill (default bounded): bounded = SSA heads\n"
            "keep their sinks + local window and decode with the SSA rule;\n"
            "full = every head keeps its whole cache, and decode steps and\n"
            "later chunks run full attention on every head (the reference)",
            [&r](const std::string& v) { r.decode_kv = decode_kv_parse(v, "--decode-kv"); });
  cl.text("--routing-map", o.routing_map, "FILE",
          "write the routing map (layers x KV heads) as a PNG heatmap");
  cl.section("Options");
}

RequestReport elastic_request_report(const Model& model, const Request& req, int64_t tokens) {
  const ModelConfig& c = model.config;
  return report_build(c.num_heads, c.num_kv_heads, c.head_dim, tokens, req.routes,
                      req.prefill_stats, req.attn);
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
  if (has_logits && L > 0)
    items.push_back(safetensors_item_f32("router_logits", {L, Hkv, 2}, logits.data()));
  for (const auto& row : r.rho)
    for (double x : row) rho.push_back(static_cast<float>(x));
  items.push_back(safetensors_item_f32("rho", {L, Hq}, rho.data()));
  for (auto [name, v] : {std::pair<const char*, double>{"omega_msr", r.omega_msr},
                         {"omega_esr_last", r.omega_esr_last},
                         {"omega_esr_all", r.omega_esr_all}}) {
    const float f = static_cast<float>(v);
    items.push_back(safetensors_item_f32(name, {1}, &f));
  }
  return items;
}

}  // namespace elastic::cli
