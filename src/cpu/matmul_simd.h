// The vector layer under the CPU matmul kernels, chosen at compile time: AVX-512F (16 fp32
// lanes), AVX2+FMA (8 lanes) or portable scalar (1 lane). Also the packed-panel row format:
// a panel row holds the 32 weights W[j0 .. j0+32, k] of one input feature k.
//
// BF16 panel rows are stored interleaved so that widening is two integer ops: the row is
// 16 uint32 words in groups of `kLanes` words; word g*kLanes + i carries column 2*g*kLanes + i
// in its low half and column 2*g*kLanes + kLanes + i in its high half, so
//   (word << 16) -> columns [2g*L, 2g*L + L),  (word & 0xffff0000) -> [2g*L + L, 2g*L + 2L).
// With kLanes = 1 this is the natural order. F16 and F32 panel rows are in natural order.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX2__)
// GCC 12 flags the deliberately undefined pass-through operand inside its own AVX-512
// intrinsics (_mm512_undefined_*) as maybe-uninitialized: a known false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#endif

#include "elastic/cpu_matmul.h"
#include "elastic/dtype.h"
#include "elastic/error.h"

namespace elastic::cpu {

#if defined(__AVX512F__)

inline constexpr int kLanes = 16;
using Vec = __m512;
inline Vec vzero() { return _mm512_setzero_ps(); }
inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
inline Vec vbroadcast(const float* p) { return _mm512_set1_ps(*p); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }  // a*b + c
inline Vec vadd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline void vstore(float* p, Vec v) { _mm512_storeu_ps(p, v); }
// First `count` lanes (0 < count <= kLanes); other lanes read as 0 / are left untouched.
inline Vec vload_first(const float* p, int count) {
  return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << count) - 1), p);
}
inline void vstore_first(float* p, Vec v, int count) {
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << count) - 1), v);
}
// Two halves of 16 interleaved bf16 pairs (see the header comment).
inline void bf16_pairs_widen(const uint16_t* p, Vec& lo, Vec& hi) {
  __m512i w = _mm512_loadu_si512(p);
  lo = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  hi = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
}
inline Vec f16_widen(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

#elif defined(__AVX2__) && defined(__FMA__)

inline constexpr int kLanes = 8;
using Vec = __m256;
inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
inline Vec vbroadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline void vstore(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline __m256i lane_mask(int count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline Vec vload_first(const float* p, int count) {
  return _mm256_maskload_ps(p, lane_mask(count));
}
inline void vstore_first(float* p, Vec v, int count) {
  _mm256_maskstore_ps(p, lane_mask(count), v);
}
inline void bf16_pairs_widen(const uint16_t* p, Vec& lo, Vec& hi) {
  __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  lo = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  hi = _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
}
inline Vec f16_widen(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

#else

inline constexpr int kLanes = 1;
using Vec = float;
inline Vec vzero() { return 0.f; }
inline Vec vload(const float* p) { return *p; }
inline Vec vbroadcast(const float* p) { return *p; }
inline Vec vfma(Vec a, Vec b, Vec c) { return a * b + c; }
inline Vec vadd(Vec a, Vec b) { return a + b; }
inline void vstore(float* p, Vec v) { *p = v; }
inline Vec vload_first(const float* p, int) { return *p; }
inline void vstore_first(float* p, Vec v, int) { *p = v; }
inline void bf16_pairs_widen(const uint16_t* p, Vec& lo, Vec& hi) {
  lo = bf16_to_f32(p[0]);
  hi = bf16_to_f32(p[1]);
}
inline Vec f16_widen(const uint16_t* p) { return f16_to_f32(*p); }

#endif

inline constexpr int kPanel = static_cast<int>(kMatmulPanel);
inline constexpr int kPanelVecs = kPanel / kLanes;  // vectors per panel row
static_assert(kPanel % (2 * kLanes) == 0, "a panel row must split into bf16 pair groups");

// Position of column c (0 <= c < 32) inside a packed bf16 panel row, in uint16 units.
constexpr int bf16_panel_slot(int c) {
  const int group = c / (2 * kLanes), within = c % (2 * kLanes);
  const int word = group * kLanes + within % kLanes;
  return 2 * word + within / kLanes;
}

// Widens Count vectors of one packed panel row (weights of one input feature) to fp32 vectors
// in column order: p points at the row's first element + first * kLanes, and `first` is even
// for BF16 (a pair group holds vectors 2g, 2g + 1 at element 2g * kLanes, so in every dtype
// vector v starts at element v * kLanes). T is the storage type: float (F32) or uint16_t tagged
// by D (F16 / BF16).
template <DType D>
struct PanelRow;

template <>
struct PanelRow<DType::f32> {
  using Elem = float;
  template <int Count = kPanelVecs>
  static void load(const float* p, Vec* out) {
    for (int j = 0; j < Count; ++j) out[j] = vload(p + j * kLanes);
  }
};

template <>
struct PanelRow<DType::bf16> {
  using Elem = uint16_t;
  template <int Count = kPanelVecs>
  static void load(const uint16_t* p, Vec* out) {
    static_assert(Count % 2 == 0, "bf16 vectors come in pairs");
    for (int g = 0; g < Count / 2; ++g)
      bf16_pairs_widen(p + 2 * g * kLanes, out[2 * g], out[2 * g + 1]);
  }
};

template <>
struct PanelRow<DType::f16> {
  using Elem = uint16_t;
  template <int Count = kPanelVecs>
  static void load(const uint16_t* p, Vec* out) {
    for (int j = 0; j < Count; ++j) out[j] = f16_widen(p + j * kLanes);
  }
};

// out[c] for the first `cols` columns of Count vectors: out += v (accumulate) or out = v + bias.
// Vectors past `cols` are not touched; cols in (0, Count * kLanes].
template <int Count = kPanelVecs>
inline void panel_store(float* out, const Vec* v, int cols, bool accumulate, const float* bias) {
  for (int j = 0; j < Count; ++j) {
    const int n = cols - j * kLanes;
    if (n <= 0) break;
    Vec r = v[j];
    if (n >= kLanes) {
      if (accumulate) r = vadd(r, vload(out + j * kLanes));
      else if (bias) r = vadd(r, vload(bias + j * kLanes));
      vstore(out + j * kLanes, r);
    } else {
      if (accumulate) r = vadd(r, vload_first(out + j * kLanes, n));
      else if (bias) r = vadd(r, vload_first(bias + j * kLanes, n));
      vstore_first(out + j * kLanes, r, n);
    }
  }
}

// Rows of x one GEMV pass serves: with AVX2's 16 registers, 3 or 4 rows of 32-column
// accumulators (12 / 16 registers) plus a panel row would spill.
inline constexpr int kGemvRows = kLanes == 8 ? 2 : 4;

// Kernel entry points over the packed panels [p0, p1) of w. x: [n, K] fp32, y: [n, N] fp32,
// n <= kGemvRows.
void matmul_gemv_panels(float* y, const float* x, int64_t n, const CpuWeight& w,
                        const float* bias, int64_t p0, int64_t p1);
// Whole GEMM (threads internally over panel blocks).
void matmul_gemm(float* y, const float* x, int64_t n, const CpuWeight& w, const float* bias);

}  // namespace elastic::cpu
