// Per-request sparsity report and its routing heatmap (libpng).
#include <png.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "elastic/error.h"
#include "elastic/fileio.h"
#include "elastic/report.h"

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
  const double pairs = 0.5 * static_cast<double>(N) * static_cast<double>(N + 1);
  double retrieval = 0, rho_all = 0;
  for (int64_t l = 0; l < L; ++l) {
    const LayerRoute& route = routes[l];
    const AttnStats& st = stats[l];
    ELASTIC_CHECK(static_cast<int64_t>(route.modes.size()) == Hkv && static_cast<int64_t>(st.rho.size()) == Hq);
    std::vector<uint8_t> dec(static_cast<size_t>(Hkv));
    for (int64_t h = 0; h < Hkv; ++h) {
      dec[h] = layer_route_is_retrieval(route, static_cast<size_t>(h));
      retrieval += dec[h];
      const uint64_t rows = static_cast<uint64_t>(kv_rows_kept(route.modes[h], N, opt.ssa));
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

struct Rgb {
  double r, g, b;
};

// Sparse (0) sand -> retrieval (1) deep blue, through a pale middle.
Rgb colour(double t) {
  static const Rgb stops[] = {{0.93, 0.80, 0.55}, {0.95, 0.95, 0.92}, {0.12, 0.29, 0.60}};
  t = std::clamp(t, 0.0, 1.0);
  const double x = t * 2.0;
  const int i = std::min(1, static_cast<int>(x));
  const double f = x - i;
  return {stops[i].r + f * (stops[i + 1].r - stops[i].r), stops[i].g + f * (stops[i + 1].g - stops[i].g),
          stops[i].b + f * (stops[i + 1].b - stops[i].b)};
}

void png_append(png_structp png, png_bytep data, png_size_t n) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<const char*>(data), n);
}

// Encodes 8-bit RGB rows in memory, then writes the file atomically.
void png_write_rgb(const std::string& path, int width, int height, const std::vector<uint8_t>& rgb) {
  std::string bytes;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw Error("libpng failed encoding " + path);
  }
  png_set_write_fn(png, &bytes, png_append, nullptr);
  png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < height; ++y) png_write_row(png, const_cast<png_bytep>(rgb.data() + size_t(y) * width * 3));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  write_file_atomic(path, bytes);
}

}  // namespace

void report_write_routing_map_png(const RequestReport& r, const std::string& path) {
  if (r.layers <= 0 || r.kv_heads <= 0) throw Error("routing map: empty report, nothing to draw at " + path);
  // Cells of `cell` pixels with a 1-pixel white grid; a colour bar 2 cells to the right.
  const int cell = static_cast<int>(std::clamp<int64_t>(480 / std::max(r.layers, r.kv_heads), 8, 32));
  const int margin = cell / 2, bar = cell / 2;
  const int map_w = static_cast<int>(r.kv_heads) * cell, map_h = static_cast<int>(r.layers) * cell;
  const int width = margin + map_w + cell + bar + margin, height = margin + map_h + margin;
  std::vector<uint8_t> rgb(static_cast<size_t>(width) * height * 3, 255);
  auto put = [&](int x, int y, Rgb c) {
    uint8_t* p = rgb.data() + (size_t(y) * width + x) * 3;
    p[0] = static_cast<uint8_t>(std::lround(c.r * 255)), p[1] = static_cast<uint8_t>(std::lround(c.g * 255)),
    p[2] = static_cast<uint8_t>(std::lround(c.b * 255));
  };
  for (int64_t l = 0; l < r.layers; ++l)
    for (int64_t h = 0; h < r.kv_heads; ++h) {
      double p = r.decisions[l][h];
      const auto& lg = r.router_logits[l];
      if (static_cast<int64_t>(lg.size()) == 2 * r.kv_heads) p = 1.0 / (1.0 + std::exp(lg[2 * h] - lg[2 * h + 1]));
      const Rgb c = colour(p);
      for (int y = 1; y < cell; ++y)
        for (int x = 1; x < cell; ++x) put(margin + int(h) * cell + x, margin + int(l) * cell + y, c);
    }
  // Colour bar: retrieval (1) at the top, sparse (0) at the bottom.
  for (int y = 0; y < map_h; ++y)
    for (int x = 0; x < bar; ++x)
      put(margin + map_w + cell + x, margin + y, colour(1.0 - double(y) / std::max(1, map_h - 1)));
  png_write_rgb(path, width, height, rgb);
}

}  // namespace elastic
