// Prefill GEMM: y[n, N] = x[n, K] · W^T (+ bias) on packed weight panels (cpu_matmul.h).
//
// x is packed once per call into row panels of kRows rows, k-major ([n/kRows][K][kRows] fp32,
// zero-padded rows), shared by all threads. The micro-kernel keeps a kRows x kTileVecs-vector
// tile of y in registers (kRows * kTileVecs accumulators) and per k loads kTileVecs vectors of
// one weight panel row (widened to fp32 in registers), broadcasts kRows x values and issues
// kRows * kTileVecs FMAs. A tile is a whole 32-column panel (AVX-512, scalar) or half of one
// (AVX2: the register file is too small for both halves at once).
// Cache blocking: N in blocks of kBlockPanels panels, rows in groups of kGroupRowPanels row
// panels ((block, group) pairs are the units of work, handed out dynamically so that a busy
// core does less), K in slices of kSliceK; inside a (block, slice) each x micro-panel
// (kSliceK * kRows fp32) is reused from L1 across the block's weight panels, which stay in L2.
// Partial sums over K slices accumulate in y (fp32); bias is added by the first slice.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "cpu/matmul_simd.h"

namespace elastic::cpu {
namespace {

// Micro-tile: rows of x x vectors of y columns. AVX-512: 12 x 2 (a whole panel) = 24
// accumulators + 2 weight vectors + 1 broadcast of 32 registers. AVX2: 6 x 2 (half a panel, 16
// columns; BLIS's Haswell shape) = 12 + 2 + 1 broadcast + 1 bf16 mask = 16 of 16; the earlier
// 3 x 4 tile needed 18 and spilled (42 % of peak, against 85-92 % for 6 x 2). Scalar: plain
// arrays the compiler may spill. Measured choices: docs/perf-kernels.md.
constexpr int gemm_rows() {
  if constexpr (kLanes == 16) return 12;
  else if constexpr (kLanes == 8) return 6;
  else return 4;
}
constexpr int gemm_tile_vecs() { return kLanes == 8 ? 2 : kPanelVecs; }
constexpr int kRows = gemm_rows();
constexpr int kTileVecs = gemm_tile_vecs();
constexpr int kTileCols = kTileVecs * kLanes;
constexpr int kVecRegisters = kLanes == 16 ? 32 : 16;
static_assert(kPanelVecs % kTileVecs == 0 && kTileVecs % 2 == 0, "tiles split a panel in pairs");
static_assert(kLanes == 1 || kRows * kTileVecs + kTileVecs + 2 <= kVecRegisters,
              "accumulators, weights, a broadcast and the bf16 mask must fit the register file");

// Vectors per tile of Rows rows: the whole panel where its accumulators, a panel row, a
// broadcast and the bf16 mask fit the registers, else kTileVecs. On AVX2 the 2-row tail tile
// so runs 2 x 32 (8 independent FMA chains, as Zen 3's 2 pipes x 4 cycles latency need) instead
// of 2 x 16 (4 chains, latency-bound at half the FMA rate).
template <int Rows>
constexpr int tile_vecs() {
  if (kLanes == 1 || Rows * kPanelVecs + kPanelVecs + 2 <= kVecRegisters) return kPanelVecs;
  return kTileVecs;
}
static_assert(tile_vecs<kRows>() == kTileVecs, "the full-height tile is kTileVecs wide");

// K slice: x micro-panel kSliceK * kRows * 4 B = 12 KiB (AVX-512; 6 KiB AVX2) stays in L1
// (32 KiB) while a weight panel slice (kSliceK * 64 B for bf16) streams through; on AVX2 the
// second half-panel tile finds the slice's bf16 lines still in L1.
constexpr int64_t kSliceK = 256;
// Weight panels per block (256 output features): block slice = 256 * 256 * 2 B = 128 KiB of
// bf16 weights, resident in L2 (1 MiB on Zen 4) across the x panels.
constexpr int64_t kBlockPanels = 8;
// Row panels per work unit (96 rows on AVX-512): a unit of one block is ~50 MFLOP at K = 1024,
// ~0.5 ms on one Zen 4 core, so when a thread is descheduled (the machine is shared) the others
// take over the remaining units instead of waiting for it at the end.
constexpr int64_t kGroupRowPanels = 8;

// One micro-tile: Rows (<= kRows) rows of x against Vecs vectors of columns of one weight panel.
template <DType D, int Rows, int Vecs = tile_vecs<Rows>()>
void gemm_tile(int64_t kc, const float* a, const typename PanelRow<D>::Elem* b, float* c,
               int64_t ldc, int rows, int cols, bool accumulate, const float* bias) {
  // a: [kc][kRows] fp32 (first Rows used); b: the tile's first column in [kc][32] packed panel
  // rows; c: [rows, ldc] fp32 at the tile's first column; cols in (0, Vecs * kLanes].
  // acc must live in registers: every loop over it is unrolled before GCC's scalar replacement
  // (the `unroll` pragmas; the store loop runs over the constant Rows). With a run-time index
  // anywhere, acc stays a stack array and all accumulators are stored on every k, as many stores
  // as FMAs (with that and its spills, the AVX2 3 x 32 tile ran at 30 % of peak).
  Vec acc[Rows][Vecs];
#pragma GCC unroll 16
  for (int i = 0; i < Rows; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < Vecs; ++j) acc[i][j] = vzero();
  for (int64_t k = 0; k < kc; ++k) {
    Vec bv[Vecs];
    PanelRow<D>::template load<Vecs>(b + k * kPanel, bv);
#pragma GCC unroll 16
    for (int i = 0; i < Rows; ++i) {
      const Vec av = vbroadcast(a + k * kRows + i);
#pragma GCC unroll 16
      for (int j = 0; j < Vecs; ++j) acc[i][j] = vfma(bv[j], av, acc[i][j]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < Rows; ++i)
    if (i < rows) panel_store<Vecs>(c + i * ldc, acc[i], cols, accumulate, bias);
}

// The last row panel of x may hold fewer than kRows rows: it runs a tile of the next multiple
// of kRows / 3 rows instead (AVX-512, n = 100: the last panel of 4 rows runs a 4-row tile; AVX2,
// n = 16: 6 + 6 + a 4 x 16 tile, n = 14: 6 + 6 + a 2 x 32 tile).
template <DType D>
using TileFn = void (*)(int64_t, const float*, const typename PanelRow<D>::Elem*, float*, int64_t,
                        int, int, bool, const float*);

template <DType D>
struct TileKernel {
  TileFn<D> fn;
  int cols;  // columns per call (a multiple of kTileCols dividing kPanel)
};

template <DType D>
TileKernel<D> gemm_tile_for(int rows) {
  constexpr int kStep = kRows % 3 == 0 ? kRows / 3 : kRows;
  constexpr int kTwoSteps = 2 * kStep <= kRows ? 2 * kStep : kRows;
  if (rows <= kStep) return {&gemm_tile<D, kStep>, tile_vecs<kStep>() * kLanes};
  if (rows <= 2 * kStep) return {&gemm_tile<D, kTwoSteps>, tile_vecs<kTwoSteps>() * kLanes};
  return {&gemm_tile<D, kRows>, kTileCols};
}

// Packed x, reused across calls on this thread (no page faults per call).
thread_local std::vector<float> x_pack;

template <DType D>
void gemm(float* y, const float* x, int64_t n, const CpuWeight& w, const float* bias) {
  using Elem = typename PanelRow<D>::Elem;
  const int64_t N = w.rows, K = w.cols;
  const int64_t row_panels = (n + kRows - 1) / kRows;
  const int64_t panels = (N + kPanel - 1) / kPanel;
  const int64_t blocks = (panels + kBlockPanels - 1) / kBlockPanels;
  const int64_t row_groups = (row_panels + kGroupRowPanels - 1) / kGroupRowPanels;
  x_pack.resize(static_cast<size_t>(row_panels * K * kRows));
  float* xp = x_pack.data();
  const Elem* packed = static_cast<const Elem*>(w.packed);
#pragma omp parallel
  {
    // xp[r][k][i] = x[r * kRows + i, k]
#pragma omp for schedule(dynamic, 1)
    for (int64_t r = 0; r < row_panels; ++r) {
      for (int i = 0; i < kRows; ++i) {
        const int64_t row = r * kRows + i;
        float* dst = xp + r * K * kRows + i;
        if (row < n) {
          for (int64_t k = 0; k < K; ++k) dst[k * kRows] = x[row * K + k];
        } else {
          for (int64_t k = 0; k < K; ++k) dst[k * kRows] = 0.f;
        }
      }
    }
    // Work unit: (weight block, row group), each owning its y tiles over all of K.
#pragma omp for schedule(dynamic, 1)
    for (int64_t unit = 0; unit < blocks * row_groups; ++unit) {
      const int64_t blk = unit / row_groups, group = unit % row_groups;
      const int64_t pb0 = blk * kBlockPanels, pb1 = std::min(panels, pb0 + kBlockPanels);
      const int64_t r0 = group * kGroupRowPanels;
      const int64_t r1 = std::min(row_panels, r0 + kGroupRowPanels);
      for (int64_t k0 = 0; k0 < K; k0 += kSliceK) {
        const int64_t kc = std::min(kSliceK, K - k0);
        for (int64_t r = r0; r < r1; ++r) {
          const int rows = static_cast<int>(std::min<int64_t>(kRows, n - r * kRows));
          const TileKernel<D> tile = gemm_tile_for<D>(rows);
          const float* a = xp + (r * K + k0) * kRows;
          for (int64_t p = pb0; p < pb1; ++p) {
            // Tiles past the last column of the last panel (N % 32 <= 16) are skipped.
            for (int64_t c0 = p * kPanel; c0 < std::min(N, (p + 1) * kPanel); c0 += tile.cols) {
              const int cols = static_cast<int>(std::min<int64_t>(tile.cols, N - c0));
              tile.fn(kc, a, packed + (p * K + k0) * kPanel + (c0 - p * kPanel),
                      y + r * kRows * N + c0, N, rows, cols, k0 > 0, bias ? bias + c0 : nullptr);
            }
          }
        }
      }
    }
  }
}

}  // namespace

void matmul_gemm(float* y, const float* x, int64_t n, const CpuWeight& w, const float* bias) {
  switch (w.dtype) {
    case DType::f32: gemm<DType::f32>(y, x, n, w, bias); break;
    case DType::f16: gemm<DType::f16>(y, x, n, w, bias); break;
    case DType::bf16: gemm<DType::bf16>(y, x, n, w, bias); break;
    default: ELASTIC_CHECK(false);
  }
}

}  // namespace elastic::cpu
