// CPU linear layers: weight packing and dispatch between the decode GEMV (n <= kGemvMaxRows,
// memory-bound for n = 1, matmul_gemv.cpp) and the prefill GEMM (matmul_gemm.cpp); plus the first,
// straightforward implementation kept as the benchmark baseline.
//
// Packed layout (see cpu_matmul.h, matmul_simd.h): panel p holds output features
// [32p, 32p + 32) as K rows of 32 weights; rows past N are zero. Packing is exact (same dtype).
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/host_memory.h"
#include "cpu/matmul_simd.h"
#include "elastic/cpu_matmul.h"
#include "elastic/error.h"

namespace elastic {
namespace {

// Largest n served by the GEMV kernels, in passes of at most kGemvPassRows rows over each work
// unit (the unit's weights stay in L2 between passes, so W is read from DRAM once). Above it
// the GEMM's register blocking wins. Measured with bench_matmul's crossover table on
// gate_proj (docs/perf-kernels.md): n = 5-8 in two GEMV passes took 157-234 us against the
// GEMM's 241-247 us; n = 12: 351 vs 374 us, too close to justify three passes.
// On the AVX2 EPYC (Zen 3, passes of 2 rows, 1 thread, gate_proj in L3, two alternating runs):
// GEMV against GEMM n = 2: 172-191 vs 299-332 us, 3: 272-301 vs 370-429, 4: 307-357 vs 345-427,
// 6: 488-537 vs 493-558, 8: 647-652 vs 864-904; so the same switch at 8.
constexpr int64_t kGemvMaxRows = 8;
constexpr int64_t kGemvPassRows = cpu::kGemvRows;

// Panels per decode work unit: 128 output features, 256 KiB of bf16 weights at K = 1024. A
// unit is the granularity of the static split below and of the passes over it when n >
// kGemvPassRows (its weights stay in L2 between passes).
constexpr int64_t kGemvChunkPanels = 4;

// Below this many multiply-adds a call runs on the calling thread (fork/join costs ~µs).
constexpr int64_t kParallelMinMacs = 1 << 15;

// Packed weights are streamed once per decode step: huge pages (core/host_memory.h), as the
// bandwidth peak in cpu_peaks.h is measured on.
std::shared_ptr<void> aligned_buffer(size_t bytes) { return detail::host_stream_buffer(bytes); }

// dst: [panels][K][32] of T; src: [N, K] of T. `slot(c)` places column c inside a panel row.
template <typename T, typename Slot>
void pack_panels(T* dst, const T* src, int64_t N, int64_t K, Slot slot) {
  const int64_t panels = (N + kMatmulPanel - 1) / kMatmulPanel;
#pragma omp parallel for schedule(static) if (N * K > kParallelMinMacs)
  for (int64_t p = 0; p < panels; ++p) {
    T* panel = dst + p * K * kMatmulPanel;
    for (int c = 0; c < kMatmulPanel; ++c) {
      const int64_t row = p * kMatmulPanel + c;
      T* out = panel + slot(c);
      if (row >= N) {
        for (int64_t k = 0; k < K; ++k) out[k * kMatmulPanel] = T{};
      } else {
        const T* in = src + row * K;
        for (int64_t k = 0; k < K; ++k) out[k * kMatmulPanel] = in[k];
      }
    }
  }
}

}  // namespace

CpuWeight cpu_weight_prepare(const TensorView& w) {
  if (w.shape.size() != 2)
    throw Error("tensor '" + w.name + "': expected a 2-D weight, got shape " + shape_str(w.shape));
  if (w.dtype != DType::f32 && w.dtype != DType::f16 && w.dtype != DType::bf16)
    throw Error("tensor '" + w.name + "': dtype " + std::string(dtype_name(w.dtype)) +
                " is not supported for weights (expected F32, F16 or BF16)");
  if (w.shape[0] < 0 || w.shape[1] < 0 || (w.numel() > 0 && !w.data))
    throw Error("tensor '" + w.name + "': no data for shape " + shape_str(w.shape));
  CpuWeight r;
  r.dtype = w.dtype;
  r.rows = w.shape[0];
  r.cols = w.shape[1];
  r.data = w.data;
  const int64_t panels = (r.rows + kMatmulPanel - 1) / kMatmulPanel;
  r.storage = aligned_buffer(static_cast<size_t>(std::max<int64_t>(1, panels * kMatmulPanel *
                                                                          r.cols)) *
                             dtype_size(r.dtype));
  r.packed = r.storage.get();
  auto natural = [](int c) { return c; };
  switch (r.dtype) {
    case DType::f32:
      pack_panels(static_cast<float*>(r.storage.get()), static_cast<const float*>(w.data), r.rows,
                  r.cols, natural);
      break;
    case DType::f16:
      pack_panels(static_cast<uint16_t*>(r.storage.get()), static_cast<const uint16_t*>(w.data),
                  r.rows, r.cols, natural);
      break;
    case DType::bf16:
      pack_panels(static_cast<uint16_t*>(r.storage.get()), static_cast<const uint16_t*>(w.data),
                  r.rows, r.cols, [](int c) { return cpu::bf16_panel_slot(c); });
      break;
    default: ELASTIC_CHECK(false);
  }
  return r;
}

void matmul_cpu(float* y, const float* x, const CpuWeight& w, const float* bias, int64_t n) {
  ELASTIC_CHECK(n >= 0 && w.packed != nullptr);
  const int64_t N = w.rows, K = w.cols;
  if (n == 0 || N == 0) return;
  if (K == 0) {  // empty sum
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < N; ++j) y[i * N + j] = bias ? bias[j] : 0.f;
    return;
  }
  if (n > kGemvMaxRows) {
    cpu::matmul_gemm(y, x, n, w, bias);
    return;
  }
  // Decode: each thread streams one contiguous range of units (one sequential stream per thread
  // per matrix). Measured on the 2-core EPYC under SCHED_FIFO, whole 0.6B decode sweep
  // (bench_matmul --only decode), three alternating rounds: static 22.9 / 22.0 / 21.5 ms per
  // step, dynamic units of 4 panels 35.8 / 28.2 / 24.0 ms, of 16 panels 35.2 / 35.7 / 21.3 ms:
  // every hand-over to a unit elsewhere restarts the hardware prefetchers. The cost: a thread
  // that loses its core holds up the call (see docs/perf.md, "Shared machines").
  const int64_t panels = (N + kMatmulPanel - 1) / kMatmulPanel;
  const int64_t chunks = (panels + kGemvChunkPanels - 1) / kGemvChunkPanels;
#pragma omp parallel for schedule(static) if (n * N * K > kParallelMinMacs)
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t i0 = 0; i0 < n; i0 += kGemvPassRows)
      cpu::matmul_gemv_panels(y + i0 * N, x + i0 * K, std::min(kGemvPassRows, n - i0), w, bias,
                              c * kGemvChunkPanels, std::min(panels, (c + 1) * kGemvChunkPanels));
}

void matmul_cpu_naive(float* y, const float* x, const CpuWeight& w, const float* bias, int64_t n) {
  ELASTIC_CHECK(n >= 0 && (w.data != nullptr || w.rows * w.cols == 0));
  const int64_t N = w.rows, K = w.cols;
  const size_t esz = dtype_size(w.dtype);
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(K));
#pragma omp for schedule(static)
    for (int64_t j = 0; j < N; ++j) {
      convert_to_f32(row.data(), static_cast<const char*>(w.data) + j * K * esz, w.dtype,
                     static_cast<size_t>(K));
      for (int64_t i = 0; i < n; ++i) {
        const float* xi = x + i * K;
        float s = 0.f;
        for (int64_t t = 0; t < K; ++t) s += xi[t] * row[t];
        y[i * N + j] = s + (bias ? bias[j] : 0.f);
      }
    }
  }
}

}  // namespace elastic
