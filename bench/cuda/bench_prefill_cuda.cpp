// End-to-end prefill and decode of a synthetic Qwen3-8B-shaped model (36 layers, 4096 hidden,
// 32/8 heads, d = 128, random bf16 weights) on the CUDA backend in device mode (plain device
// memory, the KV cache resident on the device as the backend's KvStore), for the dense model and
// for FA-SSA at Omega_MSR = 0.7 (a static assignment: 70 % of the KV heads SSA, sink 128,
// local 2048), at N = 32K and 128K (or the sizes given as arguments):
//   - prefill tokens/s of the whole prompt (last-token logits);
//   - decode tokens/s at context N (batch 1, one token per step, logits downloaded each step)
//     beside the memory-bound ideal: (weight bytes + KV bytes read per token) / copy bandwidth,
//     the bandwidth measured in the same run by a device-to-device cudaMemcpy of 2 GiB
//     (bytes read + bytes written, per second).
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bench_cuda_util.h"
#include "elastic/cuda/backend_cuda.h"
#include "elastic/cuda/cuda_check.h"
#include "elastic/model.h"
#include "elastic/routing.h"

using namespace elastic;
using bench::copy_bandwidth;
using bench::seconds_since;

namespace {

constexpr int kDecodeWarmup = 4;  // steps not timed (first step grows every KV head)
constexpr int kDecodeSteps = 32;  // timed steps

struct DecodeRow {
  int64_t ctx;
  const char* config;
  double ms_per_token, weight_gb, kv_gb, ideal_ms;
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> sizes;
  for (int i = 1; i < argc; ++i) sizes.push_back(std::atoll(argv[i]));
  if (sizes.empty()) sizes = {32768, 131072};
  try {
    const double bw = copy_bandwidth();
    std::printf("device-to-device copy bandwidth: %.0f GB/s (read + write)\n", bw * 1e-9);
    auto t0 = std::chrono::steady_clock::now();
    const Model m = model_synthetic("qwen3-8b", 1, backend_cuda(CudaBackendOptions{false}));
    std::printf("synthetic qwen3-8b on CUDA: built in %.1f s\n", seconds_since(t0));
    const ModelConfig& c = m.config;
    const int64_t L = c.num_layers, Hkv = c.num_kv_heads, V = c.vocab_size, d = c.head_dim;

    // FA-SSA at Omega_MSR = 0.7: round(0.7 L Hkv) SSA heads spread evenly over (layer, head).
    const int64_t total = L * Hkv, sparse = (7 * total + 5) / 10;
    std::vector<std::vector<uint8_t>> retrieval(static_cast<size_t>(L), std::vector<uint8_t>(static_cast<size_t>(Hkv), 1));
    for (int64_t i = 0; i < total; ++i)
      if ((i * sparse) / total != ((i + 1) * sparse) / total) retrieval[size_t(i / Hkv)][size_t(i % Hkv)] = 0;
    StaticRouting fa_ssa(retrieval, AttnMode::fa, AttnMode::ssa);
    std::printf("FA-SSA: %lld of %lld KV heads SSA (Omega_MSR %.3f)\n", (long long)sparse, (long long)total,
                double(sparse) / double(total));

    std::mt19937_64 rng(7);
    struct Row {
      int64_t n;
      double dense_s, fassa_s;
    };
    std::vector<Row> rows;
    std::vector<DecodeRow> decode_rows;
    {  // warm-up: cuBLASLt heuristics, module loads, the decode path
      std::vector<int64_t> ids(1024);
      for (auto& x : ids) x = int64_t(rng() % uint64_t(V));
      Request r = request_start(m);
      model_prefill(m, r, ids.data(), int64_t(ids.size()));
      for (int i = 0; i < 4; ++i) model_prefill(m, r, &ids[size_t(i)], 1);
    }
    const double weight_bytes = double(m.weight_bytes_per_token());
    for (int64_t n : sizes) {
      std::vector<int64_t> ids(static_cast<size_t>(n + kDecodeWarmup + kDecodeSteps));
      for (auto& x : ids) x = int64_t(rng() % uint64_t(V));
      Row row{n, 0, 0};
      for (int pass = 0; pass < 2; ++pass) {
        Request r = request_start(m, pass == 0 ? nullptr : &fa_ssa);
        auto s = std::chrono::steady_clock::now();
        model_prefill(m, r, ids.data(), n);  // downloads the last logits: synchronous
        const double sec = seconds_since(s);
        (pass == 0 ? row.dense_s : row.fassa_s) = sec;
        std::printf("  N=%lld %s: prefill %.2f s, %.0f tokens/s\n", (long long)n, pass == 0 ? "dense " : "FA-SSA",
                    sec, double(n) / sec);
        std::fflush(stdout);

        // Decode at context n: each step downloads its logits (a sync), as generation does.
        for (int i = 0; i < kDecodeWarmup; ++i) model_prefill(m, r, &ids[size_t(n + i)], 1);
        s = std::chrono::steady_clock::now();
        for (int i = 0; i < kDecodeSteps; ++i) model_prefill(m, r, &ids[size_t(n + kDecodeWarmup + i)], 1);
        const double ms = seconds_since(s) * 1e3 / kDecodeSteps;
        // KV bytes read per token at the middle context of the timed steps: every key row of a
        // full head, sink + window rows of an SSA head (bf16 k and v).
        const int64_t ctx = n + kDecodeWarmup + kDecodeSteps / 2;
        const SsaOptions& ssa = r.attn.ssa;
        const int64_t ring_rows = std::min(ctx, ssa.kept_sink_tokens() + ssa.kept_window_tokens());
        const int64_t ssa_heads = pass == 0 ? 0 : sparse;
        const double kv_bytes = double((total - ssa_heads) * ctx + ssa_heads * ring_rows) * double(d) * 2 * 2;
        const double ideal_ms = (weight_bytes + kv_bytes) / bw * 1e3;
        decode_rows.push_back({n, pass == 0 ? "dense" : "FA-SSA 0.7", ms, weight_bytes * 1e-9, kv_bytes * 1e-9, ideal_ms});
        std::printf("  N=%lld %s: decode %.2f ms/token, %.1f tokens/s (ideal %.2f ms; KV store %.2f GB)\n",
                    (long long)n, pass == 0 ? "dense " : "FA-SSA", ms, 1e3 / ms, ideal_ms,
                    double(r.kv_store ? r.kv_store->bytes_allocated() : r.cache.bytes_allocated()) * 1e-9);
        std::fflush(stdout);
      }
      rows.push_back(row);
    }
    std::printf("\n| N | dense s | dense tokens/s | FA-SSA 0.7 s | FA-SSA tokens/s | speed-up |\n");
    std::printf("|---|---|---|---|---|---|\n");
    for (const Row& r : rows)
      std::printf("| %lld | %.2f | %.0f | %.2f | %.0f | %.2fx |\n", (long long)r.n, r.dense_s,
                  double(r.n) / r.dense_s, r.fassa_s, double(r.n) / r.fassa_s, r.dense_s / r.fassa_s);
    std::printf("\nDecode, batch 1 (copy bandwidth %.0f GB/s):\n", bw * 1e-9);
    std::printf("| context | config | ms/token | tokens/s | weights GB | KV read GB | ideal ms | ideal tokens/s | of ideal |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|\n");
    for (const DecodeRow& r : decode_rows)
      std::printf("| %lld | %s | %.2f | %.1f | %.2f | %.2f | %.2f | %.1f | %.0f%% |\n", (long long)r.ctx, r.config,
                  r.ms_per_token, 1e3 / r.ms_per_token, r.weight_gb, r.kv_gb, r.ideal_ms, 1e3 / r.ideal_ms,
                  100.0 * r.ideal_ms / r.ms_per_token);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_prefill_cuda: %s\n", e.what());
    return 1;
  }
  return 0;
}
