// Decode GEMV: y[i, panel] = sum_k x[i, k] * W_panel[k, 0..32) for n <= kGemvRows rows of x
// (4 with AVX-512 or scalar, 2 with AVX2).
//
// Memory-bound: every packed weight is read exactly once, as one sequential stream per thread
// (the caller hands each thread a contiguous panel range), one 64-byte line per bf16 panel row.
// No software prefetch: on 2 MiB pages the hardware prefetchers alone reach the measured DRAM
// bandwidth, and prefetching 8-128 rows ahead measured 3-20 % slower (docs/perf-kernels.md).
// Per panel row: widen to fp32 (2 integer ops for bf16), broadcast x[i, k], 2 FMAs per x row.
// The k loop is unrolled kUnroll times into separate accumulators so that FMA latency never
// limits the stream; the partial sums are added at the end (fp32 throughout).
#include <algorithm>

#include "cpu/matmul_simd.h"

namespace elastic::cpu {
namespace {

// Independent accumulator sets: enough chains (kUnroll * rows * kPanelVecs >= 8) to cover
// FMA latency x issue width on Zen 4 / Skylake-X / Zen 3, but no register spills: accumulators
// + one panel row + a broadcast + the bf16 mask fit the register file (AVX-512: <= 16 of 32
// registers hold accumulators; AVX2: 8 of 16, so at most 2 rows and n = 1 unrolled x2).
template <int Rows>
constexpr int gemv_unroll() {
  if constexpr (kLanes == 1) return 1;
  else if constexpr (kLanes == 16) return Rows == 1 ? 4 : 2;
  else return Rows == 1 ? 2 : 1;
}
constexpr int kVecRegisters = kLanes == 16 ? 32 : 16;

template <DType D, int Rows>
void gemv_panels(float* y, const float* x, const CpuWeight& w, const float* bias, int64_t p0,
                 int64_t p1) {
  using Elem = typename PanelRow<D>::Elem;
  constexpr int kUnroll = gemv_unroll<Rows>();
  static_assert(kLanes == 1 || (kUnroll * Rows + 1) * kPanelVecs + 2 <= kVecRegisters,
                "accumulators, a panel row, a broadcast and the bf16 mask must fit the registers");
  const int64_t N = w.rows, K = w.cols;
  const Elem* packed = static_cast<const Elem*>(w.packed);
  for (int64_t p = p0; p < p1; ++p) {
    const Elem* panel = packed + p * K * kPanel;
    // Every loop over acc is unrolled (pragmas) so that GCC keeps acc in registers; a loop it
    // unrolls only late leaves acc a stack array, stored on every k (see matmul_gemm.cpp).
    Vec acc[kUnroll][Rows][kPanelVecs];
#pragma GCC unroll 16
    for (int u = 0; u < kUnroll; ++u)
#pragma GCC unroll 16
      for (int i = 0; i < Rows; ++i)
#pragma GCC unroll 16
        for (int j = 0; j < kPanelVecs; ++j) acc[u][i][j] = vzero();
    int64_t k = 0;
    for (; k + kUnroll <= K; k += kUnroll) {
#pragma GCC unroll 16
      for (int u = 0; u < kUnroll; ++u) {
        const Elem* row = panel + (k + u) * kPanel;
        Vec wv[kPanelVecs];
        PanelRow<D>::load(row, wv);
#pragma GCC unroll 16
        for (int i = 0; i < Rows; ++i) {
          const Vec xv = vbroadcast(x + i * K + k + u);
#pragma GCC unroll 16
          for (int j = 0; j < kPanelVecs; ++j) acc[u][i][j] = vfma(wv[j], xv, acc[u][i][j]);
        }
      }
    }
    for (; k < K; ++k) {
      Vec wv[kPanelVecs];
      PanelRow<D>::load(panel + k * kPanel, wv);
#pragma GCC unroll 16
      for (int i = 0; i < Rows; ++i) {
        const Vec xv = vbroadcast(x + i * K + k);
#pragma GCC unroll 16
        for (int j = 0; j < kPanelVecs; ++j) acc[0][i][j] = vfma(wv[j], xv, acc[0][i][j]);
      }
    }
    const int cols = static_cast<int>(std::min<int64_t>(kPanel, N - p * kPanel));
#pragma GCC unroll 16
    for (int i = 0; i < Rows; ++i) {
#pragma GCC unroll 16
      for (int u = 1; u < kUnroll; ++u)
#pragma GCC unroll 16
        for (int j = 0; j < kPanelVecs; ++j) acc[0][i][j] = vadd(acc[0][i][j], acc[u][i][j]);
      panel_store(y + i * N + p * kPanel, acc[0][i], cols, false,
                  bias ? bias + p * kPanel : nullptr);
    }
  }
}

template <DType D>
void gemv_rows(float* y, const float* x, int64_t n, const CpuWeight& w, const float* bias,
               int64_t p0, int64_t p1) {
  static_assert(kGemvRows == 2 || kGemvRows == 4);
  switch (n) {
    case 1: gemv_panels<D, 1>(y, x, w, bias, p0, p1); break;
    case 2: gemv_panels<D, 2>(y, x, w, bias, p0, p1); break;
    case 3:
      if constexpr (kGemvRows >= 3) gemv_panels<D, 3>(y, x, w, bias, p0, p1);
      else ELASTIC_CHECK_MSG(false, "GEMV serves 1..kGemvRows rows");
      break;
    case 4:
      if constexpr (kGemvRows >= 4) gemv_panels<D, 4>(y, x, w, bias, p0, p1);
      else ELASTIC_CHECK_MSG(false, "GEMV serves 1..kGemvRows rows");
      break;
    default: ELASTIC_CHECK_MSG(false, "GEMV serves 1..kGemvRows rows");
  }
}

}  // namespace

void matmul_gemv_panels(float* y, const float* x, int64_t n, const CpuWeight& w,
                        const float* bias, int64_t p0, int64_t p1) {
  switch (w.dtype) {
    case DType::f32: gemv_rows<DType::f32>(y, x, n, w, bias, p0, p1); break;
    case DType::f16: gemv_rows<DType::f16>(y, x, n, w, bias, p0, p1); break;
    case DType::bf16: gemv_rows<DType::bf16>(y, x, n, w, bias, p0, p1); break;
    default: ELASTIC_CHECK(false);
  }
}

}  // namespace elastic::cpu
