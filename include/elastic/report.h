// Per-request sparsity report (SPEC §6, §9): the routing map, rho per query head, the model
// and effective sparsity ratios, KV-cache bytes and attention FLOPs against the dense model;
// as JSON and as a routing heatmap PNG.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "elastic/attention.h"
#include "elastic/plot.h"
#include "elastic/routing.h"

namespace elastic {

struct RequestReport {
  int64_t tokens = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0;
  std::vector<std::vector<uint8_t>> decisions;    // [L][Hkv] 1 = retrieval mode
  std::vector<std::vector<AttnMode>> modes;       // [L][Hkv]
  std::vector<std::vector<float>> router_logits;  // [L][Hkv * 2] (SA, retrieval); empty rows: no router
  std::vector<std::vector<double>> rho;           // [L][Hq] skipped fraction of causal pairs
  double omega_msr = 0;       // 1 - mean decision
  double omega_esr_last = 0;  // mean rho of the last layer
  double omega_esr_all = 0;   // mean rho of all layers
  // KV cache after the prefill: fp32 K and V rows, N per full head, min(N, sink + window) per
  // SSA head (kv_rows_kept) when decode_kv is bounded, N per head when full; against N for
  // every head.
  DecodeKv decode_kv = DecodeKv::bounded;
  uint64_t kv_bytes = 0, kv_bytes_dense = 0;
  // Attention FLOPs of the prefill: 4 d per attended (query, key) pair and query head, plus
  // the XA estimation (2 s d per strided score), against dense causal attention.
  double attn_flops = 0, attn_flops_dense = 0, xa_estimate_flops = 0;
};

// Rows of K (and of V) a KV head in mode m keeps after a prefill of n tokens.
int64_t kv_rows_kept(AttnMode m, int64_t n, const SsaOptions& ssa);

// routes: [L] from the first prefill; stats: [L] the AttnStats of that prefill's attention
// calls (pos0 = 0, n = tokens); opt: the request's attention options (sizes, decode_kv).
RequestReport report_build(int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t tokens,
                           const std::vector<LayerRoute>& routes, const std::vector<AttnStats>& stats,
                           const AttnOptions& opt);

// {"tokens", "decisions" [L][Hkv], "modes", "router_logits" [L][Hkv][2] (when a router ran),
//  "rho" [L][Hq], "omega_msr", "omega_esr_last", "omega_esr_all", "decode_kv" (bounded|full),
//  "kv_cache_bytes",
//  "kv_cache_bytes_dense", "kv_cache_ratio", "attention_flops", "attention_flops_dense",
//  "attention_flops_ratio", "xa_estimate_flops"}
nlohmann::json report_json(const RequestReport& r);

// The routing map as a heatmap: one cell per (layer, KV head), layers top to bottom, KV heads
// left to right, coloured by decision (orange sparse, blue retrieval; the legend names the modes
// the heads ran) with the router's retrieval probability as cell text (the mode's name without a
// router). A head whose router logits are not finite is an n/a cell.
Heatmap report_routing_heatmap(const RequestReport& r);

// report_routing_heatmap drawn as PNG, written atomically; throws elastic::Error naming the path.
void report_write_routing_map_png(const RequestReport& r, const std::string& path);

}  // namespace elastic
