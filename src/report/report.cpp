// Per-request sparsity report, its JSON and its routing heatmap.
#include "elastic/report.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <string>

#include "elastic/error.h"
#include "elastic/kv_cache.h"
#include "elastic/plot.h"

namespace elastic {

int64_t kv_rows_kept(AttnMode m, int64_t n, const SsaOptions& ssa) {
  if (m != AttnMode::ssa) return n;
  return std::min(n, ssa.kept_sink_tokens() + ssa.kept_window_tokens());
}

RequestReport report_build(int64_t Hq, int64_t Hkv, int64_t d, int64_t N, const std::vector<LayerRoute>& routes,
                           const std::vector<AttnStats>& stats, const AttnOptions& opt) {
  const int64_t L = static_cast<int64_t>(routes.size());
  if (static_cast<int64_t>(stats.size()) != L)
    throw Error("report: " + std::to_string(stats.size()) + " attention stats for " + std::to_string(L) + " layers");
  RequestReport r;
  r.tokens = N, r.layers = L, r.heads = Hq, r.kv_heads = Hkv, r.head_dim = d;
  r.decode_kv = opt.decode_kv;
  const double pairs = 0.5 * static_cast<double>(N) * static_cast<double>(N + 1);
  double retrieval = 0, rho_all = 0;
  for (int64_t l = 0; l < L; ++l) {
    const LayerRoute& route = routes[l];
    const AttnStats& st = stats[l];
    ELASTIC_CHECK(static_cast<int64_t>(route.modes.size()) == Hkv && static_cast<int64_t>(st.rho.size()) == Hq);
    std::vector<uint8_t> dec(static_cast<size_t>(Hkv));
    const std::vector<AttnMode> kept = kv_cache_modes(route.modes, opt.decode_kv);
    for (int64_t h = 0; h < Hkv; ++h) {
      dec[h] = layer_route_is_retrieval(route, static_cast<size_t>(h));
      retrieval += dec[h];
      const uint64_t rows = static_cast<uint64_t>(kv_rows_kept(kept[h], N, opt.ssa));
      r.kv_bytes += rows * d * 2 * sizeof(float);
      r.kv_bytes_dense += static_cast<uint64_t>(N) * d * 2 * sizeof(float);
    }
    r.decisions.push_back(dec);
    r.modes.push_back(route.modes);
    r.router_logits.push_back(route.router_logits);
    r.rho.push_back(st.rho);
    for (int64_t h = 0; h < Hq; ++h) {
      rho_all += st.rho[h];
      r.attn_flops += 4.0 * d * pairs * (1.0 - st.rho[h]);
      r.attn_flops_dense += 4.0 * d * pairs;
    }
    r.xa_estimate_flops += 2.0 * opt.xa.stride * d * static_cast<double>(st.xa_estimate_scores);
    if (l == L - 1) {
      double s = 0;
      for (double x : st.rho) s += x;
      r.omega_esr_last = s / Hq;
    }
  }
  if (L > 0) {
    r.omega_msr = 1.0 - retrieval / static_cast<double>(L * Hkv);
    r.omega_esr_all = rho_all / static_cast<double>(L * Hq);
  }
  r.attn_flops += r.xa_estimate_flops;
  return r;
}

nlohmann::json report_json(const RequestReport& r) {
  nlohmann::json j;
  j["tokens"] = r.tokens;
  j["layers"] = r.layers;
  j["num_heads"] = r.heads;
  j["num_kv_heads"] = r.kv_heads;
  j["decisions"] = nlohmann::json::array();
  j["modes"] = nlohmann::json::array();
  for (int64_t l = 0; l < r.layers; ++l) {
    nlohmann::json dec = nlohmann::json::array(), modes = nlohmann::json::array();
    for (int64_t h = 0; h < r.kv_heads; ++h) {
      dec.push_back(static_cast<int>(r.decisions[l][h]));
      modes.push_back(attn_mode_name(r.modes[l][h]));
    }
    j["decisions"].push_back(dec);
    j["modes"].push_back(modes);
  }
  const bool has_logits = std::all_of(r.router_logits.begin(), r.router_logits.end(),
                                      [&](const auto& v) { return static_cast<int64_t>(v.size()) == 2 * r.kv_heads; });
  if (has_logits && r.layers > 0) {
    nlohmann::json lg = nlohmann::json::array();
    for (int64_t l = 0; l < r.layers; ++l) {
      nlohmann::json row = nlohmann::json::array();
      for (int64_t h = 0; h < r.kv_heads; ++h) row.push_back({r.router_logits[l][2 * h], r.router_logits[l][2 * h + 1]});
      lg.push_back(row);
    }
    j["router_logits"] = lg;
  } else {
    j["router_logits"] = nullptr;
  }
  j["rho"] = r.rho;
  j["omega_msr"] = r.omega_msr;
  j["omega_esr_last"] = r.omega_esr_last;
  j["omega_esr_all"] = r.omega_esr_all;
  j["decode_kv"] = decode_kv_name(r.decode_kv);
  j["kv_cache_bytes"] = r.kv_bytes;
  j["kv_cache_bytes_dense"] = r.kv_bytes_dense;
  j["kv_cache_ratio"] = r.kv_bytes_dense ? double(r.kv_bytes) / double(r.kv_bytes_dense) : 1.0;
  j["attention_flops"] = r.attn_flops;
  j["attention_flops_dense"] = r.attn_flops_dense;
  j["attention_flops_ratio"] = r.attn_flops_dense > 0 ? r.attn_flops / r.attn_flops_dense : 1.0;
  j["xa_estimate_flops"] = r.xa_estimate_flops;
  return j;
}

namespace {

// The router's retrieval probability of KV head h in layer l: softmax over (SA, retrieval)
// logits; NaN when the layer has no router output or a logit is not finite.
double routing_probability(const RequestReport& r, int64_t l, int64_t h) {
  const std::vector<float>& lg = r.router_logits[l];
  if (static_cast<int64_t>(lg.size()) != 2 * r.kv_heads) return NAN;
  const double sparse = lg[2 * h], retrieval = lg[2 * h + 1];
  if (!std::isfinite(sparse) || !std::isfinite(retrieval)) return NAN;
  return 1.0 / (1.0 + std::exp(sparse - retrieval));
}

// "FA", "SSA", "XA".
std::string mode_label(AttnMode m) {
  std::string name = attn_mode_name(m);
  for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

// "retrieval (FA)": the decision and the modes its heads ran.
std::string routing_category_name(const RequestReport& r, uint8_t decision) {
  std::string modes;
  for (AttnMode m : {AttnMode::fa, AttnMode::xa, AttnMode::ssa}) {
    bool seen = false;
    for (int64_t l = 0; l < r.layers; ++l)
      for (int64_t h = 0; h < r.kv_heads; ++h)
        seen |= r.decisions[l][h] == decision && r.modes[l][h] == m;
    if (!seen) continue;
    modes += (modes.empty() ? "" : ", ") + mode_label(m);
  }
  const std::string what = decision ? "retrieval" : "sparse";
  return modes.empty() ? what : what + " (" + modes + ")";
}

}  // namespace

Heatmap report_routing_heatmap(const RequestReport& r) {
  ELASTIC_CHECK(static_cast<int64_t>(r.decisions.size()) == r.layers &&
                static_cast<int64_t>(r.modes.size()) == r.layers &&
                static_cast<int64_t>(r.router_logits.size()) == r.layers);
  Heatmap m;
  char omega[64];
  std::snprintf(omega, sizeof omega, "%.3f", r.omega_msr);
  m.title = "Routing map: \u03a9_{MSR} = " + std::string(omega) + ", " +
            std::to_string(r.tokens) + " tokens";
  m.x_label = "KV head";
  m.y_label = "layer";
  m.rows = r.layers, m.columns = r.kv_heads;
  m.categories = {{routing_category_name(r, 0), plot_colour_hex(0xF28E2B)},
                  {routing_category_name(r, 1), plot_colour_hex(0x2B5C9E)}};
  m.na_label = "n/a: non-finite router logit";
  bool any_router = false;
  for (int64_t l = 0; l < r.layers; ++l) {
    ELASTIC_CHECK(static_cast<int64_t>(r.decisions[l].size()) == r.kv_heads &&
                  static_cast<int64_t>(r.modes[l].size()) == r.kv_heads);
    for (int64_t h = 0; h < r.kv_heads; ++h) {
      const uint8_t decision = r.decisions[l][h] ? 1 : 0;
      std::string text = mode_label(r.modes[l][h]);
      int category = decision;
      if (!r.router_logits[l].empty()) {
        any_router = true;
        const double p = routing_probability(r, l, h);
        char buf[16];
        std::snprintf(buf, sizeof buf, "%.2f", p);
        text = std::isfinite(p) ? buf : "n/a";
        if (!std::isfinite(p)) category = -1;
      }
      m.category.push_back(category);
      m.cell_text.push_back(text);
    }
  }
  m.notes = {any_router ? "cell text: the router's" : "cell text: the mode of each head",
             any_router ? "retrieval probability p" : "(static routing, no router)"};
  return m;
}

void report_write_routing_map_png(const RequestReport& r, const std::string& path) {
  if (r.layers <= 0 || r.kv_heads <= 0)
    throw Error(path + ": routing map of an empty report, nothing to draw");
  plot_write_heatmap_png(report_routing_heatmap(r), path);
}

}  // namespace elastic
