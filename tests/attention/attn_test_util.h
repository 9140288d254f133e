// Helpers of the attention tests: layout changes, a naive double-precision attention over an
// explicit token mask (the "expanded mask" every sparse mode must equal), random inputs.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "elastic/attention.h"

namespace elastic::test {

// [H, n, d] -> [n, H, d]
inline std::vector<float> heads_major_to_token_major(const std::vector<float>& x, int64_t H, int64_t n,
                                                     int64_t d) {
  std::vector<float> y(x.size());
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t t = 0; t < d; ++t) y[(i * H + h) * d + t] = x[(h * n + i) * d + t];
  return y;
}

// Attention of query i (position pos0 + i) of query head h over the keys `allowed(h, p, key)`
// says it attends (the caller applies causality in `allowed`). q: [n, Hq, d];
// k, v: [N, Hkv, d] for all positions 0..N-1 (N = pos0 + n). Returns [n, Hq, d].
inline std::vector<float> masked_attention_reference(
    const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
    int64_t n, int64_t pos0, int64_t Hq, int64_t Hkv, int64_t d,
    const std::function<bool(int64_t h, int64_t p, int64_t key)>& allowed) {
  const int64_t G = Hq / Hkv, N = pos0 + n;
  std::vector<float> out(static_cast<size_t>(n * Hq * d), 0.f);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<double> s(static_cast<size_t>(N));
  for (int64_t h = 0; h < Hq; ++h)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = pos0 + i, hk = h / G;
      double mx = -INFINITY;
      for (int64_t j = 0; j < N; ++j) {
        s[j] = -INFINITY;
        if (!allowed(h, p, j)) continue;
        double dot = 0;
        for (int64_t t = 0; t < d; ++t) dot += double(q[(i * Hq + h) * d + t]) * k[(j * Hkv + hk) * d + t];
        s[j] = dot * scale;
        mx = std::max(mx, s[j]);
      }
      double l = 0;
      std::vector<double> acc(static_cast<size_t>(d), 0.0);
      for (int64_t j = 0; j < N; ++j) {
        if (s[j] == -INFINITY) continue;
        const double w = std::exp(s[j] - mx);
        l += w;
        for (int64_t t = 0; t < d; ++t) acc[t] += w * v[(j * Hkv + hk) * d + t];
      }
      for (int64_t t = 0; t < d; ++t) out[(i * Hq + h) * d + t] = static_cast<float>(acc[t] / l);
    }
  return out;
}

inline std::vector<float> random_normal(size_t count, uint64_t seed, float stddev = 1.f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.f, stddev);
  std::vector<float> x(count);
  for (float& e : x) e = dist(rng);
  return x;
}

// Largest |a - b| divided by the largest |b|: the normalised error of a whole tensor.
inline double normalized_max_error(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::abs(double(a[i]) - b[i]));
    ref = std::max(ref, std::abs(double(b[i])));
  }
  return ref > 0 ? err / ref : err;
}

inline double rms(const std::vector<float>& x) {
  double s = 0;
  for (float e : x) s += double(e) * e;
  return x.empty() ? 0.0 : std::sqrt(s / x.size());
}

// Largest per-element |a - b| / (|b| + floor): relative error that does not blow up at
// exact zeros.
inline double max_relative_error(const std::vector<float>& a, const std::vector<float>& b, double floor) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(double(a[i]) - b[i]) / (std::abs(double(b[i])) + floor));
  return worst;
}

}  // namespace elastic::test
