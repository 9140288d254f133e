// A vectorisable exponential for the CPU kernels (softmax, SiLU): plain arithmetic, no libm
// call, so `#pragma omp simd` loops over it compile to vector code.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace elastic::detail {

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

// x * sigmoid(x) = x / (1 + e^-x), through 2^(-|x| log2 e) <= 1 so that nothing overflows:
// x >= 0: x / (1 + e), x < 0: x e / (1 + e), e = e^-|x|. Relative error ~3e-7.
inline float silu(float x) {
  const float e = exp2_nonpositive(-std::fabs(x) * 1.4426950408889634f);
  const float num = x >= 0.f ? x : x * e;
  return num / (1.f + e);
}

}  // namespace elastic::detail
