// Serving on the CUDA backend (issue 12, acceptance 4), synthetic Qwen3-8B shape (36 layers, 4096
// hidden, 32/8 heads, d = 128, random bf16 weights), the KV pool in device memory (bf16 pages of
// 16 rows), sized to the card's free memory:
//   1. Decode throughput of the batched forward (greedy: model_forward_batch_greedy) at C concurrent sequences of context N (default
//      64 x 8192) against the batch-1 rate of the same path, for dense and FA-SSA at
//      Omega_MSR = 0.7 (a static assignment: 70 % of the KV heads SSA, the config's sink 128 and
//      local 2048). The sequences' past is made by filling the pool's pages (zeros) and marking
//      them stored, not by a prefill (the decode kernels read the same bytes either way), so the
//      run stays short. Where C sequences of N do not fit (dense 64 x 8K of Qwen3-8B needs ~77 GB
//      of KV beside 16 GB of weights), the most that fit run, and the table says so.
//      Beside each ratio, the memory-bandwidth bound of it: a step reads the weights once and
//      every sequence's KV, so C * (W + KV1) / (W + C * KV1) for W weight bytes and KV1 KV bytes
//      read per sequence per token.
//   2. Admission at 32K context: how many sequences of 32768 positions the same pool admits,
//      dense vs FA-SSA 0.7 (SSA heads hold only sink + window rows: bounded pages).
// Usage: bench_serve_cuda [--context N] [--concurrency C] [--long-context N]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_cuda_util.h"
#include "elastic/batch_forward.h"
#include "elastic/cuda/backend_cuda.h"
#include "elastic/cuda/cuda_check.h"
#include "elastic/error.h"
#include "elastic/kv_pool.h"
#include "elastic/model.h"

using namespace elastic;
using bench::copy_bandwidth;
using bench::seconds_since;

namespace {

constexpr int64_t kPageRows = 16;
constexpr size_t kReserveBytes = size_t(3) << 30;  // workspace, cuBLASLt, logits, allocator slack
constexpr int kWarmupSteps = 3;
constexpr int kTimedSteps = 10;

using LayerModes = std::vector<std::vector<AttnMode>>;  // [L][Hkv]

// Sequences of `length` positions whose past is the pool's (zeroed) pages: configured, reserved
// with room for `extra` more positions, and marked stored. Stops at `count` or when the pool is
// full.
std::vector<SeqState> seqs_make(KvPool& pool, const LayerModes& modes, const AttnOptions& attn,
                                int64_t count, int64_t length, int64_t extra) {
  const int64_t L = int64_t(modes.size());
  std::vector<SeqState> out;
  for (int64_t i = 0; i < count; ++i) {
    SeqState st;
    st.kv = pool.make_seq();
    for (int64_t l = 0; l < L; ++l)
      pool.configure_layer(st.kv, l, modes[size_t(l)].data(), attn.ssa);
    if (pool.pages_needed(st.kv, length + extra) > pool.pages_free()) break;
    st.routes.resize(size_t(L));
    for (int64_t l = 0; l < L; ++l) {
      st.routes[size_t(l)].modes = modes[size_t(l)];
      pool.reserve(st.kv, l, length + extra);  // the timed steps take no pages
      pool.stored(st.kv, l, 0, length);
    }
    st.length = length;
    out.push_back(std::move(st));
  }
  return out;
}

void seqs_release(KvPool& pool, std::vector<SeqState>& seqs) {
  for (SeqState& s : seqs) pool.release(s.kv);
  seqs.clear();
}

// Milliseconds per decode step (one row per sequence; a sync per step). greedy: the serving
// engine's step when every request decodes greedily (model_forward_batch_greedy: the argmax on
// the device, [C] ids downloaded); else its step for sampled requests ([C, V] fp32 logits
// downloaded for the host's samplers).
double decode_ms(const Model& m, KvPool& pool, std::vector<SeqState>& seqs, const AttnOptions& attn,
                 std::mt19937_64& rng, bool greedy = true) {
  BatchWorkspace ws;
  auto step = [&] {
    Batch b;
    std::vector<SeqState*> states;
    for (SeqState& s : seqs) {
      const int64_t id = int64_t(rng() % uint64_t(m.config.vocab_size));
      b.add(&id, 1, s.length, int64_t(states.size()), BatchLogits::last);
      states.push_back(&s);
    }
    if (greedy)
      model_forward_batch_greedy(m, b, states.data(), pool, attn, ws);
    else
      model_forward_batch(m, b, states.data(), pool, attn, ws);
  };
  for (int i = 0; i < kWarmupSteps; ++i) step();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kTimedSteps; ++i) step();
  return seconds_since(t0) * 1e3 / kTimedSteps;
}

// KV bytes a decode step reads per sequence at context ctx: every row of a full head, sink +
// window rows of an SSA head (bf16 K and V).
double kv_read_bytes(const LayerModes& modes, const SsaOptions& ssa, int64_t ctx, int64_t d) {
  const int64_t ring = std::min(ctx, ssa.kept_sink_tokens() + ssa.kept_window_tokens());
  double rows = 0;
  for (const auto& layer : modes)
    for (AttnMode m : layer) rows += double(m == AttnMode::ssa ? ring : ctx);
  return rows * double(d) * 2 * 2;
}

struct Result {
  const char* config;
  int64_t seqs;
  double ms_batch, ms_one, kv1_bytes, ms_batch_depth2, ms_batch_prefetch, ms_batch_logits,
      ms_batch_register;
};

}  // namespace

namespace elastic::cuda::detail {
void set_paged_decode_depth(int depth);  // src/cuda/attention_paged.h
void set_paged_decode_prefetch(bool on);
void set_paged_decode_ring(bool on);
}

int main(int argc, char** argv) {
  int64_t ctx = 8192, conc = 64, long_ctx = 32768;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int64_t v = std::atoll(argv[i + 1]);
    if (a == "--context")
      ctx = v;
    else if (a == "--concurrency")
      conc = v;
    else if (a == "--long-context")
      long_ctx = v;
    else {
      std::fprintf(stderr, "bench_serve_cuda: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    int device = 0;
    cudaDeviceProp prop{};
    ELASTIC_CUDA_CHECK(cudaGetDevice(&device));
    ELASTIC_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    const double bw = copy_bandwidth();
    std::printf("device: %s, %.1f GiB, copy bandwidth %.0f GB/s (read + write)\n", prop.name,
                double(prop.totalGlobalMem) / double(1 << 30), bw * 1e-9);
    auto t0 = std::chrono::steady_clock::now();
    const Model m = model_synthetic("qwen3-8b", 1, backend_cuda(CudaBackendOptions{false}));
    const ModelConfig& c = m.config;
    const int64_t L = c.num_layers, Hkv = c.num_kv_heads, d = c.head_dim;
    const double W = double(m.weight_bytes_per_token());
    std::printf("synthetic qwen3-8b on CUDA: built in %.1f s, %.2f GB of weights read per step\n",
                seconds_since(t0), W * 1e-9);
    const AttnOptions attn = request_start(m).attn;  // the config's SSA sink / window

    size_t free_bytes = 0, total_bytes = 0;
    ELASTIC_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const size_t page_bytes = size_t(2 * kPageRows * d) * 2;
    const int64_t pages = int64_t((free_bytes - std::min(free_bytes, kReserveBytes)) / page_bytes);
    KvPool pool(pages, kPageRows, L, Hkv, d, m.backend.get());
    {  // zero the pool (finite keys and values)
      KvPoolSeq probe = pool.make_seq();
      ELASTIC_CUDA_CHECK(
          cudaMemset(const_cast<float*>(pool.views(probe, 0)[0].k), 0, size_t(pages) * page_bytes));
      ELASTIC_CUDA_CHECK(cudaDeviceSynchronize());
    }
    std::printf(
        "KV pool: %lld pages of %lld rows, %.1f GB (free memory %.1f GB less %.1f GB reserve)\n",
        (long long)pages, (long long)kPageRows, double(pages) * double(page_bytes) * 1e-9,
        double(free_bytes) * 1e-9, double(kReserveBytes) * 1e-9);

    // Dense, and FA-SSA at Omega_MSR = 0.7: round(0.7 L Hkv) SSA heads spread evenly over (layer,
    // head).
    const int64_t total = L * Hkv, sparse = (7 * total + 5) / 10;
    LayerModes dense(size_t(L), std::vector<AttnMode>(size_t(Hkv), AttnMode::fa)), fa_ssa = dense;
    for (int64_t i = 0; i < total; ++i)
      if ((i * sparse) / total != ((i + 1) * sparse) / total)
        fa_ssa[size_t(i / Hkv)][size_t(i % Hkv)] = AttnMode::ssa;
    std::printf("FA-SSA: %lld of %lld KV heads SSA (Omega_MSR %.3f), sink %lld, window %lld\n",
                (long long)sparse, (long long)total, double(sparse) / double(total),
                (long long)attn.ssa.kept_sink_tokens(), (long long)attn.ssa.kept_window_tokens());

    std::mt19937_64 rng(7);
    std::vector<Result> results;
    // Five timed runs: four decode kernels, and the default one with the logits downloaded.
    const int64_t extra = 5 * (kWarmupSteps + kTimedSteps);
    // The step without its KV stream: C sequences of 64 positions (the GEMMs over C rows, the
    // host's planning and uploads, the launches); what the 8K step adds is its KV reads.
    double ms_base = 0, ms_base_logits = 0;
    {
      std::vector<SeqState> base = seqs_make(pool, dense, attn, conc, 64, extra);
      ms_base = decode_ms(m, pool, base, attn, rng);
      ms_base_logits = decode_ms(m, pool, base, attn, rng, false);
      std::printf(
          "  %lld sequences of 64 positions: %.2f ms/step (the step without its KV; %.2f with the "
          "[C, V] logits downloaded instead of the greedy ids)\n",
          (long long)base.size(), ms_base, ms_base_logits);
      seqs_release(pool, base);
    }
    for (auto [name, modes] : {std::pair<const char*, const LayerModes*>{"dense", &dense},
                               std::pair<const char*, const LayerModes*>{"FA-SSA 0.7", &fa_ssa}}) {
      std::vector<SeqState> one = seqs_make(pool, *modes, attn, 1, ctx, extra);
      if (one.empty()) throw Error("the pool cannot hold one sequence of " + std::to_string(ctx));
      const double ms_one = decode_ms(m, pool, one, attn, rng);
      seqs_release(pool, one);
      std::vector<SeqState> many = seqs_make(pool, *modes, attn, conc, ctx, extra);
      // The register kernel's three versions (the default before run 30), then the default ring.
      cuda::detail::set_paged_decode_ring(false);
      const double ms_register = decode_ms(m, pool, many, attn, rng);
      cuda::detail::set_paged_decode_depth(2);  // run 19: slower
      const double ms_depth2 = decode_ms(m, pool, many, attn, rng);
      cuda::detail::set_paged_decode_depth(1);
      cuda::detail::set_paged_decode_prefetch(true);  // run 28: no change
      const double ms_prefetch = decode_ms(m, pool, many, attn, rng);
      cuda::detail::set_paged_decode_prefetch(false);
      cuda::detail::set_paged_decode_ring(true);  // the default
      const double ms_batch = decode_ms(m, pool, many, attn, rng);
      const double ms_logits = decode_ms(m, pool, many, attn, rng, false);
      results.push_back({name, int64_t(many.size()), ms_batch, ms_one,
                         kv_read_bytes(*modes, attn.ssa, ctx, d), ms_depth2, ms_prefetch,
                         ms_logits, ms_register});
      std::printf(
          "  %-10s batch 1: %.2f ms/step; %lld sequences: %.2f ms/step (register kernel: %.2f, "
          "depth 2: %.2f, table a step ahead: %.2f; logits downloaded: %.2f)\n",
          name, ms_one, (long long)many.size(), ms_batch, ms_register, ms_depth2, ms_prefetch,
          ms_logits);
      std::fflush(stdout);
      seqs_release(pool, many);
    }

    std::printf("\nDecode at context %lld, %s (%.0f GB/s copy bandwidth):\n", (long long)ctx,
                prop.name, bw * 1e-9);
    std::printf(
        "| config | sequences | ms/step | tokens/s | batch-1 tokens/s | x batch-1 | x batch-1, "
        "logits downloaded | bandwidth bound x | KV read/seq GB |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|\n");
    for (const Result& r : results) {
      const double C = double(r.seqs), speedup = (C / r.ms_batch) / (1.0 / r.ms_one);
      const double bound = C * (W + r.kv1_bytes) / (W + C * r.kv1_bytes);
      std::printf("| %s | %lld%s | %.2f | %.0f | %.1f | %.2fx | %.2fx | %.2fx | %.3f |\n",
                  r.config, (long long)r.seqs, r.seqs < conc ? " (all that fit)" : "", r.ms_batch,
                  1e3 * C / r.ms_batch, 1e3 / r.ms_one, speedup, C * r.ms_one / r.ms_batch_logits,
                  bound, r.kv1_bytes * 1e-9);
    }
    std::printf(
        "(greedy decoding: the argmax on the device and [C] ids downloaded, the engine's step when "
        "every request is greedy; \"logits downloaded\": [C, V] fp32 logits for the host's "
        "samplers)\n");
    std::printf(
        "\nKV read rate of the batched step: C x KV per sequence / (step - step without KV)\n"
        "| config | decode kernel | KV GB per step | KV ms | KV read TB/s "
        "|\n|---|---|---|---|---|\n");
    for (const Result& r : results)
      for (auto [kernel, ms] : {std::pair{"shared-memory ring, cp.async (default)", r.ms_batch},
                                std::pair{"registers, depth 1", r.ms_batch_register},
                                std::pair{"registers, depth 2", r.ms_batch_depth2},
                                std::pair{"registers, table a step ahead", r.ms_batch_prefetch}}) {
        const double gb = double(r.seqs) * r.kv1_bytes * 1e-9, kv_ms = ms - ms_base;
        std::printf("| %s | %s | %.1f | %.2f | %.2f |\n", r.config, kernel, gb, kv_ms,
                    kv_ms > 0 ? gb / kv_ms : 0.0);
      }
    for (const Result& r : results)
      if (r.seqs < conc) {
        const double need = double(conc) * r.kv1_bytes * 1e-9;
        std::printf(
            "note: %s at %lld x %lld needs %.1f GB of KV; the pool holds %.1f GB: ran %lld "
            "sequences\n",
            r.config, (long long)conc, (long long)ctx, need,
            double(pages) * double(page_bytes) * 1e-9, (long long)r.seqs);
      }

    // Admission at the long context: sequences admitted until the next one's pages do not fit.
    std::printf("\nAdmission at context %lld in the same pool (%lld pages):\n", (long long)long_ctx,
                (long long)pages);
    std::printf(
        "| config | pages per sequence | sequences admitted | KV GB per sequence "
        "|\n|---|---|---|---|\n");
    int64_t admitted[2] = {0, 0};
    int k = 0;
    for (auto [name, modes] : {std::pair<const char*, const LayerModes*>{"dense", &dense},
                               std::pair<const char*, const LayerModes*>{"FA-SSA 0.7", &fa_ssa}}) {
      std::vector<SeqState> seqs = seqs_make(pool, *modes, attn, int64_t(1) << 20, long_ctx, 0);
      const int64_t per = seqs.empty() ? 0 : KvPool::seq_pages(seqs[0].kv);
      admitted[k++] = int64_t(seqs.size());
      std::printf("| %s | %lld | %lld | %.2f |\n", name, (long long)per, (long long)seqs.size(),
                  double(per) * double(page_bytes) * 1e-9);
      seqs_release(pool, seqs);
    }
    std::printf("FA-SSA 0.7 admits %.2fx as many %lld-context sequences as dense (goal >= 2x)\n",
                admitted[0] > 0 ? double(admitted[1]) / double(admitted[0]) : 0.0,
                (long long)long_ctx);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_serve_cuda: %s\n", e.what());
    return 1;
  }
  return 0;
}
