// End-to-end prefill of a synthetic Qwen3-8B-shaped model (36 layers, 4096 hidden, 32/8 heads,
// d = 128, random bf16 weights) on the CUDA backend: tokens/s for the dense model and for FA-SSA
// at Omega_MSR = 0.7 (a static assignment: 70 % of the KV heads SSA, sink 128, local 2048),
// at N = 32K and 128K (or the sizes given as arguments). Prints a table with the speed-up.
//
// The backend runs in host-visible mode (managed memory, a sync after every op) because the
// forward pass appends k/v to a host KV cache and routes on the host: the times include those
// host copies, so they are a lower bound on what a device-resident cache would give.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "elastic/cuda/backend_cuda.h"
#include "elastic/model.h"
#include "elastic/routing.h"

using namespace elastic;

int main(int argc, char** argv) {
  std::vector<int64_t> sizes;
  for (int i = 1; i < argc; ++i) sizes.push_back(std::atoll(argv[i]));
  if (sizes.empty()) sizes = {32768, 131072};
  try {
    auto t0 = std::chrono::steady_clock::now();
    const Model m = model_synthetic("qwen3-8b", 1, backend_cuda(CudaBackendOptions{true}));
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t L = m.config.num_layers, Hkv = m.config.num_kv_heads, V = m.config.vocab_size;
    std::printf("synthetic qwen3-8b on CUDA: built in %.1f s\n", load_s);

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
    {  // warm-up: cuBLASLt heuristics, module loads
      std::vector<int64_t> ids(1024);
      for (auto& x : ids) x = int64_t(rng() % uint64_t(V));
      Request r = request_start(m);
      model_prefill(m, r, ids.data(), int64_t(ids.size()));
    }
    for (int64_t n : sizes) {
      std::vector<int64_t> ids(static_cast<size_t>(n));
      for (auto& x : ids) x = int64_t(rng() % uint64_t(V));
      Row row{n, 0, 0};
      for (int pass = 0; pass < 2; ++pass) {
        Request r = request_start(m, pass == 0 ? nullptr : &fa_ssa);
        const auto s = std::chrono::steady_clock::now();
        model_prefill(m, r, ids.data(), n);  // downloads the last logits: synchronous
        const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count();
        (pass == 0 ? row.dense_s : row.fassa_s) = sec;
        std::printf("  N=%lld %s: %.2f s, %.0f tokens/s\n", (long long)n, pass == 0 ? "dense " : "FA-SSA",
                    sec, double(n) / sec);
        std::fflush(stdout);
      }
      rows.push_back(row);
    }
    std::printf("\n| N | dense s | dense tokens/s | FA-SSA 0.7 s | FA-SSA tokens/s | speed-up |\n");
    std::printf("|---|---|---|---|---|---|\n");
    for (const Row& r : rows)
      std::printf("| %lld | %.2f | %.0f | %.2f | %.0f | %.2fx |\n", (long long)r.n, r.dense_s,
                  double(r.n) / r.dense_s, r.fassa_s, double(r.n) / r.fassa_s, r.dense_s / r.fassa_s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_prefill_cuda: %s\n", e.what());
    return 1;
  }
  return 0;
}
