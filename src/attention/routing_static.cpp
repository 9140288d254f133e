// Static routing policies: fixed retrieval/sparse assignments read from text files; the default
// route_backend of every policy (keys downloaded to the host).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "elastic/backend.h"
#include "elastic/error.h"
#include "elastic/routing.h"

namespace elastic {

LayerRoute RoutingPolicy::route_backend(Backend& backend, int64_t layer, const float* k, int64_t n, int64_t Hkv,
                                        int64_t d) {
  std::vector<float> host(static_cast<size_t>(n * Hkv * d));  // k: [n, Hkv, d]
  backend.download(host.data(), k, host.size() * sizeof(float));
  return route(layer, host.data(), n, Hkv, d);
}

StaticRouting::StaticRouting(std::vector<std::vector<uint8_t>> retrieval, AttnMode retrieval_mode,
                             AttnMode sparse_mode)
    : retrieval_(std::move(retrieval)), retrieval_mode_(retrieval_mode), sparse_mode_(sparse_mode) {}

LayerRoute StaticRouting::route(int64_t layer, const float*, int64_t, int64_t Hkv, int64_t) {
  if (layer < 0 || layer >= static_cast<int64_t>(retrieval_.size()) ||
      static_cast<int64_t>(retrieval_[layer].size()) != Hkv)
    throw Error("static routing: no assignment for layer " + std::to_string(layer) + " with " +
                std::to_string(Hkv) + " KV heads");
  LayerRoute r;
  r.retrieval = retrieval_[layer];
  for (uint8_t x : r.retrieval) r.modes.push_back(x ? retrieval_mode_ : sparse_mode_);
  return r;
}

std::vector<std::vector<uint8_t>> static_assignment_all(int64_t layers, int64_t kv_heads, bool retrieval) {
  return std::vector<std::vector<uint8_t>>(static_cast<size_t>(layers),
                                           std::vector<uint8_t>(static_cast<size_t>(kv_heads), retrieval));
}

namespace {

// Lines of a text file without comments, split into fields at spaces, tabs and commas.
std::vector<std::pair<int, std::vector<std::string>>> read_fields(const std::string& path) {
  // A folder opens as an empty stream on Linux (every head would turn sparse without a word)
  // and a FIFO or device can block: only regular files are routing files.
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status))
    throw Error("routing file " + path + ": no such file");
  if (!std::filesystem::is_regular_file(status))
    throw Error("routing file " + path + ": " +
                (std::filesystem::is_directory(status) ? "is a folder" : "is not a regular file") +
                " (expected a text file of heads or scores)");
  std::ifstream f(path);
  if (!f) throw Error("cannot open routing file " + path);
  std::vector<std::pair<int, std::vector<std::string>>> out;
  std::string line;
  for (int no = 1; std::getline(f, line); ++no) {
    line = line.substr(0, line.find('#'));
    std::replace(line.begin(), line.end(), ',', ' ');
    std::replace(line.begin(), line.end(), '\t', ' ');
    std::istringstream ss(line);
    std::vector<std::string> fields;
    for (std::string w; ss >> w;) fields.push_back(w);
    if (!fields.empty()) out.push_back({no, std::move(fields)});
  }
  return out;
}

int64_t parse_index(const std::string& path, int line, const std::string& s, int64_t limit, const char* what) {
  size_t used = 0;
  long long v = -1;
  try {
    v = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != s.size() || v < 0 || v >= limit)
    throw Error(path + ":" + std::to_string(line) + ": expected a " + what + " index in [0, " +
                std::to_string(limit) + "), got '" + s + "'");
  return v;
}

}  // namespace

std::vector<std::vector<uint8_t>> static_assignment_head_list(const std::string& path, int64_t layers,
                                                              int64_t kv_heads) {
  auto a = static_assignment_all(layers, kv_heads, false);
  for (const auto& [line, fields] : read_fields(path)) {
    if (fields.size() != 2)
      throw Error(path + ":" + std::to_string(line) + ": expected \"LAYER HEAD\", got " +
                  std::to_string(fields.size()) + " fields");
    const int64_t l = parse_index(path, line, fields[0], layers, "layer");
    const int64_t h = parse_index(path, line, fields[1], kv_heads, "KV head");
    a[l][h] = 1;
  }
  return a;
}

std::vector<std::vector<uint8_t>> static_assignment_top_scores(const std::string& path, int64_t layers,
                                                               int64_t kv_heads, double sparse_ratio) {
  if (!(sparse_ratio >= 0.0 && sparse_ratio <= 1.0))
    throw Error("static routing: sparse ratio must be in [0, 1], got " + std::to_string(sparse_ratio));
  const auto rows = read_fields(path);
  if (static_cast<int64_t>(rows.size()) != layers)
    throw Error(path + ": expected " + std::to_string(layers) + " lines of scores (one per layer), got " +
                std::to_string(rows.size()));
  struct Score {
    double s;
    int64_t l, h;
  };
  std::vector<Score> scores;
  for (int64_t l = 0; l < layers; ++l) {
    const auto& [line, fields] = rows[l];
    if (static_cast<int64_t>(fields.size()) != kv_heads)
      throw Error(path + ":" + std::to_string(line) + ": expected " + std::to_string(kv_heads) +
                  " scores (one per KV head), got " + std::to_string(fields.size()));
    for (int64_t h = 0; h < kv_heads; ++h) {
      size_t used = 0;
      double v = NAN;
      try {
        v = std::stod(fields[h], &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != fields[h].size() || !std::isfinite(v))
        throw Error(path + ":" + std::to_string(line) + ": expected a number, got '" + fields[h] + "'");
      scores.push_back({v, l, h});
    }
  }
  std::stable_sort(scores.begin(), scores.end(), [](const Score& a, const Score& b) { return a.s < b.s; });
  const auto sparse = static_cast<size_t>(std::llround(sparse_ratio * static_cast<double>(scores.size())));
  auto a = static_assignment_all(layers, kv_heads, true);
  for (size_t i = 0; i < sparse; ++i) a[scores[i].l][scores[i].h] = 0;
  return a;
}

}  // namespace elastic
