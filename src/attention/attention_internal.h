// Pieces shared by the CPU attention files: a vectorisable exp2 and the tile sizes.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

#include "elastic/attention.h"

namespace elastic::attn_detail {

// Query rows and keys per tile of the CPU kernel. 64 x 64 scores (16 KiB) plus a 64-key K^T
// and V tile of d = 128 (64 KiB) stay in L2; the 64-wide key rows are four AVX-512 vectors.
constexpr int64_t kTileQueries = 64;
constexpr int64_t kTileKeys = 64;

// 2^x for x <= 0 (softmax arguments after subtracting the row maximum), relative error
// < 2e-7: x = k + f with f in [-0.5, 0.5], 2^f by its degree-7 Taylor polynomial in f ln 2,
// 2^k by the exponent bits. Returns 0 below -126 (where 2^x is below the normal range).
// Written as plain arithmetic so that loops over it vectorise.
inline float exp2_nonpositive(float x) {
  const float xc = x < -126.f ? -126.f : x;
  const float k = std::floor(xc + 0.5f);
  const float f = (xc - k) * 0.69314718056f;  // f ln 2 in [-0.35, 0.35]
  float p = 1.f / 5040.f;
  p = p * f + 1.f / 720.f;
  p = p * f + 1.f / 120.f;
  p = p * f + 1.f / 24.f;
  p = p * f + 1.f / 6.f;
  p = p * f + 0.5f;
  p = p * f + 1.f;
  p = p * f + 1.f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  const float r = p * std::bit_cast<float>(bits);
  return x < -126.f ? 0.f : r;
}

// attention_cpu for one query (a.n == 1): split-KV decode over the cache rows in place
// (attention_decode_cpu.cpp). Same keys, same exact softmax as the tiled path.
void attention_cpu_decode(const AttnArgs& a);

}  // namespace elastic::attn_detail
