// The exponentials of the CPU kernels (softmax, SiLU): a scalar form in plain arithmetic (no libm
// call) and AVX-512 forms; this header also brings <immintrin.h> to the kernels that use them.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#if defined(__AVX512F__)
// GCC 12 reports its own _mm512_undefined_* placeholders inside these headers as
// "maybe uninitialized" (a known false positive); silence it for the header only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace elastic::detail {

// 2^x for x <= 0 (softmax arguments after subtracting the row maximum), relative error
// < 2e-7: x = k + f with f in [-0.5, 0.5], 2^f by its degree-7 Taylor polynomial in f ln 2,
// 2^k by the exponent bits. Returns 0 below -126 (where 2^x is below the normal range).
// Plain arithmetic, no libm call: the reference for the AVX-512 form below and the tails of
// its loops.
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

#if defined(__AVX512F__)
// exp2_nonpositive on 16 lanes, the same algorithm (GCC 12 does not vectorise the scalar form:
// floor and the exponent bit cast stay scalar): k = round(x), 2^f by the degree-7 Taylor
// polynomial, scaled by 2^k with vscalefps. Lanes below -126 give 2^-126 * 2^f (~1e-38), not 0.
inline __m512 exp2_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-126.f));
  const __m512 k = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_mul_ps(_mm512_sub_ps(x, k), _mm512_set1_ps(0.69314718056f));
  __m512 p = _mm512_set1_ps(1.f / 5040.f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 720.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 120.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 24.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 6.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, k);
}

// silu on 16 lanes (as the scalar silu below).
inline __m512 silu(__m512 x) {
  const __m512 ax = _mm512_abs_ps(x);
  const __m512 e = exp2_nonpositive(_mm512_mul_ps(ax, _mm512_set1_ps(-1.4426950408889634f)));
  const __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 num = _mm512_mask_mul_ps(x, neg, x, e);
  return _mm512_div_ps(num, _mm512_add_ps(_mm512_set1_ps(1.f), e));
}
#endif

// x * sigmoid(x) = x / (1 + e^-x), through 2^(-|x| log2 e) <= 1 so that nothing overflows:
// x >= 0: x / (1 + e), x < 0: x e / (1 + e), e = e^-|x|. Relative error ~3e-7.
inline float silu(float x) {
  const float e = exp2_nonpositive(-std::fabs(x) * 1.4426950408889634f);
  const float num = x >= 0.f ? x : x * e;
  return num / (1.f + e);
}

}  // namespace elastic::detail
