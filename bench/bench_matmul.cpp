// bench_matmul: the CPU linear-layer kernels on the Qwen3-0.6B shapes (bf16 weights unless
// --dtype says otherwise), against the machine peaks and the naive baseline, all measured in the
// same run.
//
//   GEMV (n = 1, decode): GB/s of weight bytes streamed. Each shape is rotated through enough
//     separately packed copies (>= 256 MiB in all) that every call reads its weight from DRAM,
//     as in a real decode step over a 1.2 GB model. Ideal = measured DRAM read bandwidth.
//   GEMM (n = 512, prefill chunk): GFLOP/s counting 2 FLOP per multiply-add of x · W^T.
//     Ideal = measured fp32 FMA peak. (lm_head is left out: prefill needs logits of the last
//     position only, a GEMV.)
//   Decode sweep: all matmuls of one decode step of the 0.6B model (1.19 GB), back to back.
//   Crossover: time per call for n = 1 .. 64 on gate_proj, to place the GEMV/GEMM switch.
//
// Usage: bench_matmul [--reps R] [--threads T] [--only gemv|gemm|decode|crossover]
//                     [--dtype bf16|f32|f16]
//   (defaults: 7 repetitions, all threads, all four tables, bf16 weights)
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "elastic/cpu_matmul.h"
#include "elastic/cpu_peaks.h"

namespace {

using namespace elastic;

struct LinearShape {
  const char* name;
  int64_t N, K;
};

// Qwen3-0.6B: hidden 1024, 16 q / 8 kv heads of 128, ffn 3072, vocab 151936 (tied lm_head).
const LinearShape kShapes[] = {{"q_proj", 2048, 1024},   {"k_proj", 1024, 1024},
                               {"v_proj", 1024, 1024},   {"o_proj", 1024, 2048},
                               {"gate_proj", 3072, 1024}, {"up_proj", 3072, 1024},
                               {"down_proj", 1024, 3072}, {"lm_head", 151936, 1024}};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Timing {
  double best, median;  // seconds per call
};

// Runs fn(rep) `reps` times after one warm-up call.
Timing time_calls(int reps, const std::function<void(int)>& fn) {
  fn(0);
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now_s();
    fn(r + 1);
    t.push_back(now_s() - t0);
  }
  std::sort(t.begin(), t.end());
  return {t.front(), t[t.size() / 2]};
}

// Storage dtype of every benchmarked weight (--dtype).
DType g_weight_dtype = DType::bf16;

double weight_bytes(const LinearShape& s) {
  return static_cast<double>(s.N * s.K) * static_cast<double>(dtype_size(g_weight_dtype));
}

// Random weights [N, K] of g_weight_dtype in `copies` separate buffers, with their packed forms.
struct WeightSet {
  std::vector<std::vector<char>> raw;
  std::vector<CpuWeight> packed;
};

WeightSet make_weights(const LinearShape& s, int copies, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  WeightSet ws;
  ws.raw.resize(static_cast<size_t>(copies));
  const size_t count = static_cast<size_t>(s.N * s.K);
  ws.raw[0].resize(count * dtype_size(g_weight_dtype));
  for (size_t i = 0; i < count; ++i) {
    const float f = dist(rng);
    char* dst = ws.raw[0].data() + i * dtype_size(g_weight_dtype);
    if (g_weight_dtype == DType::f32) {
      std::memcpy(dst, &f, 4);
    } else {
      const uint16_t h = g_weight_dtype == DType::bf16 ? f32_to_bf16(f) : f32_to_f16(f);
      std::memcpy(dst, &h, 2);
    }
  }
  for (int c = 1; c < copies; ++c) ws.raw[c] = ws.raw[0];
  for (auto& r : ws.raw) {
    TensorView v;
    v.name = s.name;
    v.dtype = g_weight_dtype;
    v.shape = {s.N, s.K};
    v.data = r.data();
    ws.packed.push_back(cpu_weight_prepare(v));
  }
  return ws;
}

std::vector<float> random_floats(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

void bench_gemv(int reps, double bw, std::mt19937& rng) {
  std::printf("GEMV n=1 (decode)    N      K   MiB  naive GB/s        GB/s   of BW  x naive\n");
  for (const LinearShape& s : kShapes) {
    const double bytes = weight_bytes(s);
    const int copies = static_cast<int>(std::max(1.0, std::ceil((256.0 * (1 << 20)) / bytes)));
    WeightSet ws = make_weights(s, copies, rng);
    const std::vector<float> x = random_floats(static_cast<size_t>(s.K), rng);
    std::vector<float> y(static_cast<size_t>(s.N));
    const Timing fast = time_calls(std::max(reps, copies), [&](int r) {
      matmul_cpu(y.data(), x.data(), ws.packed[r % copies], nullptr, 1);
    });
    const Timing naive = time_calls(std::min(reps, copies), [&](int r) {
      matmul_cpu_naive(y.data(), x.data(), ws.packed[r % copies], nullptr, 1);
    });
    std::printf("%-16s %6lld %6lld %5.1f  %10.1f  %5.1f (%5.1f)  %5.1f%%  %6.1fx\n", s.name,
                static_cast<long long>(s.N), static_cast<long long>(s.K), bytes / (1 << 20),
                bytes / naive.best * 1e-9, bytes / fast.best * 1e-9, bytes / fast.median * 1e-9,
                100.0 * bytes / fast.best * 1e-9 / bw, naive.best / fast.best);
  }
}

void bench_gemm(int reps, double peak, std::mt19937& rng) {
  const int64_t n = 512;
  std::printf("GEMM n=512 (prefill)  N      K  naive GFLOP/s    GFLOP/s   of peak  x naive\n");
  for (const LinearShape& s : kShapes) {
    if (std::strcmp(s.name, "lm_head") == 0) continue;
    WeightSet ws = make_weights(s, 1, rng);
    const std::vector<float> x = random_floats(static_cast<size_t>(n * s.K), rng);
    std::vector<float> y(static_cast<size_t>(n * s.N));
    const double flop = 2.0 * static_cast<double>(n * s.N * s.K);
    const Timing fast = time_calls(reps, [&](int) {
      matmul_cpu(y.data(), x.data(), ws.packed[0], nullptr, n);
    });
    const Timing naive = time_calls(1, [&](int) {
      matmul_cpu_naive(y.data(), x.data(), ws.packed[0], nullptr, n);
    });
    std::printf("%-16s %6lld %6lld  %12.1f  %6.1f (%5.1f)  %6.1f%%  %6.1fx\n", s.name,
                static_cast<long long>(s.N), static_cast<long long>(s.K), flop / naive.best * 1e-9,
                flop / fast.best * 1e-9, flop / fast.median * 1e-9,
                100.0 * flop / fast.best * 1e-9 / peak, naive.best / fast.best);
  }
}

// One decode step's matmuls over the whole model: every layer's 7 projections (distinct weights,
// 28 layers) then lm_head, n = 1, 1.19 GB of bf16 weights streamed from DRAM per step. This is
// the matmul share of `elastic bench`'s decode, with nothing else in between.
void bench_decode_sweep(int reps, double bw, std::mt19937& rng) {
  constexpr int kLayers = 28;
  std::vector<CpuWeight> weights;
  double bytes = 0;
  for (int l = 0; l < kLayers; ++l)
    for (int i = 0; i < 7; ++i) {
      WeightSet ws = make_weights(kShapes[i], 1, rng);
      weights.push_back(ws.packed[0]);  // the packed copy owns its memory
      bytes += weight_bytes(kShapes[i]);
    }
  {
    WeightSet ws = make_weights(kShapes[7], 1, rng);
    weights.push_back(ws.packed[0]);
    bytes += weight_bytes(kShapes[7]);
  }
  const std::vector<float> x = random_floats(3072, rng);
  std::vector<float> y(static_cast<size_t>(kShapes[7].N));
  const Timing t = time_calls(reps, [&](int) {
    for (const CpuWeight& w : weights) matmul_cpu(y.data(), x.data(), w, nullptr, 1);
  });
  std::printf("Decode sweep: 28 x 7 projections + lm_head, n=1, %.3f GB of weights per step\n",
              bytes * 1e-9);
  std::printf("  %.2f ms/step best (%.2f median): %.1f GB/s, %.1f%% of measured bandwidth, "
              "%.1f steps/s (ideal %.1f)\n",
              t.best * 1e3, t.median * 1e3, bytes / t.best * 1e-9,
              100.0 * bytes / t.best * 1e-9 / bw,
              1.0 / t.best, bw * 1e9 / bytes);
}

void bench_crossover(int reps, std::mt19937& rng) {
  std::printf("Crossover on gate_proj 3072x1024 (weights in L3 after the first call)\n");
  std::printf("   n   us/call   GB/s   GFLOP/s\n");
  const LinearShape s = kShapes[4];
  WeightSet ws = make_weights(s, 1, rng);
  const std::vector<float> x = random_floats(static_cast<size_t>(64 * s.K), rng);
  std::vector<float> y(static_cast<size_t>(64 * s.N));
  for (int64_t m : {1, 2, 3, 4, 5, 6, 8, 9, 12, 14, 16, 24, 32, 64}) {
    const Timing t = time_calls(std::max(reps, 20), [&](int) {
      matmul_cpu(y.data(), x.data(), ws.packed[0], nullptr, m);
    });
    std::printf("%4lld  %8.1f  %5.1f  %8.1f\n", static_cast<long long>(m), t.best * 1e6,
                weight_bytes(s) / t.best * 1e-9, 2.0 * m * s.N * s.K / t.best * 1e-9);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 7, threads = 0;
  bool bad_value = false;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--reps" || a == "--threads") && i + 1 < argc) {
      (a == "--reps" ? reps : threads) = std::atoi(argv[++i]);
    } else if (a == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else if (a == "--dtype" && i + 1 < argc) {
      const std::string d = argv[++i];
      if (d == "bf16") g_weight_dtype = DType::bf16;
      else if (d == "f32") g_weight_dtype = DType::f32;
      else if (d == "f16") g_weight_dtype = DType::f16;
      else bad_value = true;
    } else {
      std::fprintf(stderr,
                   "usage: bench_matmul [--reps R] [--threads T] "
                   "[--only gemv|gemm|decode|crossover] [--dtype bf16|f32|f16]\n");
      return 2;
    }
  }
  if (bad_value || (!only.empty() && only != "gemv" && only != "gemm" && only != "decode" &&
                    only != "crossover")) {
    std::fprintf(stderr, "bench_matmul: unknown --only or --dtype value\n");
    return 2;
  }
  if (threads > 0) omp_set_num_threads(threads);
  reps = std::max(reps, 1);
  const int nthreads = omp_get_max_threads();

  const double bw = measure_memory_bandwidth_gbs(nthreads);
  const double peak = measure_fma_peak_gflops(nthreads);
  std::printf("threads %d; measured DRAM read bandwidth %.1f GB/s, fp32 FMA peak %.1f GFLOP/s\n",
              nthreads, bw, peak);
  std::printf("weights %s, fp32 activations and accumulation; %d repetitions, best (median)\n",
              std::string(dtype_name(g_weight_dtype)).c_str(), reps);
  std::mt19937 rng(42);
  if (only.empty() || only == "gemv") {
    std::printf("\n");
    bench_gemv(reps, bw, rng);
  }
  if (only.empty() || only == "gemm") {
    std::printf("\n");
    bench_gemm(reps, peak, rng);
  }
  if (only.empty() || only == "decode") {
    std::printf("\n");
    bench_decode_sweep(reps, bw, rng);
  }
  if (only.empty() || only == "crossover") {
    std::printf("\n");
    bench_crossover(reps, rng);
  }
  return 0;
}
