// Router training (frozen backbone) of a Qwen3-4B-shaped random bf16 model on the CUDA training
// engine (36 layers, hidden 2560, 32/8 heads, d 128, FFN 9728, vocab 151936, tied embeddings, qk
// norms), packed batches of 32K and 64K tokens made of samples of 4K-16K tokens, FA-SSA (sink
// 128, local 2048, block 128), Gumbel routing from a random router:
//   - training tokens/s (one step = forward + recompute + backward + the router's host MLPs),
//   - peak device memory of the engine,
//   - the cost model's ideal: GEMM FLOPs (forward, recompute, backward dX; lm_head forward +
//     dX) at the cuBLASLt bf16 rate and attention FLOPs (forward in the chosen modes, recompute
//     in both modes, backward in the chosen modes) at our dense kernels' rates, all measured in
//     this run on the same card, and the step's share of that ideal.
// Attention FLOPs per query head: forward 4 d pairs, backward 10 d pairs (five matrix products
// against the forward's two), pairs = the (query, key) pairs of the mode (FA: n (n + 1) / 2).
// Usage: bench_train_cuda [--tokens 32768,65536] [--layers 36] [--steps 2]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/train/attention_train_cuda.h"
#include "cuda/train/engine_cuda.h"
#include "cuda/gemm_lt.h"
#include "cuda/train/ops_train_cuda.h"
#include "elastic/config.h"
#include "elastic/cuda/cuda_check.h"
#include "train/engine.h"

using namespace elastic;
using namespace elastic::train;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

template <class F>
double median_ms(F&& f, int reps) {
  cudaEvent_t e0, e1;
  ELASTIC_CUDA_CHECK(cudaEventCreate(&e0));
  ELASTIC_CUDA_CHECK(cudaEventCreate(&e1));
  f();  // warm-up
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    ELASTIC_CUDA_CHECK(cudaEventRecord(e0));
    f();
    ELASTIC_CUDA_CHECK(cudaEventRecord(e1));
    ELASTIC_CUDA_CHECK(cudaEventSynchronize(e1));
    float t = 0;
    ELASTIC_CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

ModelConfig qwen3_4b(int64_t layers) {
  const std::string json = R"({"model_type": "qwen3", "vocab_size": 151936, "hidden_size": 2560,
      "intermediate_size": 9728, "num_hidden_layers": )" +
                           std::to_string(layers) + R"(,
      "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "rms_norm_eps": 1e-6,
      "max_position_embeddings": 262144, "rope_theta": 1000000.0, "tie_word_embeddings": true})";
  return config_parse(json, "qwen3-4b-shape");
}

// Samples of 4K-16K tokens filling `tokens`.
std::vector<int64_t> sample_lengths(int64_t tokens) {
  const std::vector<int64_t> pattern = {16384, 8192, 4096, 12288, 16384, 4096, 4096};
  std::vector<int64_t> out;
  int64_t left = tokens;
  for (size_t i = 0; left > 0; ++i) {
    const int64_t len = std::min(left, pattern[i % pattern.size()]);
    out.push_back(len);
    left -= len;
  }
  return out;
}

// Query-key pairs of one sample in each mode.
void mode_pairs(int64_t n, const SsaOptions& ssa, int64_t& fa, int64_t& sa) {
  fa = n * (n + 1) / 2;
  sa = 0;
  for (int64_t p = 0; p < n; ++p) {
    KeyRange r[2];
    const int c = ssa_key_ranges(ssa, p, r);
    for (int i = 0; i < c; ++i) sa += std::min(r[i].end, p + 1) - r[i].begin;
  }
}

struct Rates {
  double gemm = 0, attn_fwd = 0, attn_bwd = 0, ssa_fwd = 0, ssa_bwd = 0;  // FLOP/s
};

// cuBLASLt bf16 GEMM rate on the MLP up projection of 16K rows (n x D x F) and its dX / dW.
double measure_gemm(const ModelConfig& c) {
  const int64_t n = 16384, D = c.hidden_size, F = c.intermediate_size;
  using bf16 = __nv_bfloat16;
  bf16 *x, *w, *y;
  float* dw;
  ELASTIC_CUDA_CHECK(cudaMalloc(&x, size_t(n * F) * 2));
  ELASTIC_CUDA_CHECK(cudaMalloc(&w, size_t(F * D) * 2));
  ELASTIC_CUDA_CHECK(cudaMalloc(&y, size_t(n * F) * 2));
  ELASTIC_CUDA_CHECK(cudaMalloc(&dw, size_t(F * D) * 4));
  cuda::train_ops::fill_random_bf16(x, n * F, 1, 1.f, nullptr);
  cuda::train_ops::fill_random_bf16(w, F * D, 2, 0.02f, nullptr);
  cuda::GemmLt gemm;
  const double flops = 2.0 * double(n) * double(D) * double(F);
  const double t_fwd = median_ms(
      [&] { gemm.linear_forward(y, cuda::GemmOut::bf16, x, w, n, F, D, 0.f, nullptr); }, 10);
  const double t_dx = median_ms(
      [&] { gemm.linear_backward_input(y, cuda::GemmOut::bf16, x, w, n, F, D, 0.f, nullptr); }, 10);
  const double t_dw =
      median_ms([&] { gemm.linear_backward_weight(dw, x, y, n, F, D, nullptr); }, 10);
  std::printf("cuBLASLt bf16 %lldx%lldx%lld: forward %.1f, dX %.1f, dW %.1f TFLOP/s\n",
              (long long)n, (long long)F, (long long)D, flops / t_fwd * 1e-9, flops / t_dx * 1e-9,
              flops / t_dw * 1e-9);
  cudaFree(x), cudaFree(w), cudaFree(y), cudaFree(dw);
  return 3 * flops / (t_fwd + t_dx + t_dw) * 1e3;
}

// Our training attention kernels on an all-FA and an all-SSA packed batch of the step's samples:
// the forward, and the backward in each tile variant at d = 128 (attention_train_cuda.h); the
// fastest FA backward variant is selected for the training steps that follow (returned).
int measure_attention(const ModelConfig& c, const std::vector<int64_t>& lengths,
                      const SsaOptions& ssa, Rates& r) {
  using bf16 = __nv_bfloat16;
  std::vector<BatchSeq> seqs;
  int64_t n = 0;
  for (int64_t len : lengths) seqs.push_back({n, len, 0}), n += len;
  const int64_t Hq = c.num_heads, Hkv = c.num_kv_heads, d = c.head_dim;
  cuda::AttnTrainShape shape;
  shape.rows = n, shape.num_heads = int(Hq), shape.num_kv_heads = int(Hkv), shape.head_dim = int(d);
  shape.ssa = ssa;
  bf16 *q, *k, *v, *o, *dout;
  float *lse, *dq, *dk, *dv, *dsum;
  uint8_t* modes;
  ELASTIC_CUDA_CHECK(cudaMalloc(&q, size_t(n * Hq * d) * 2));
  ELASTIC_CUDA_CHECK(cudaMalloc(&o, size_t(n * Hq * d) * 2));
  ELASTIC_CUDA_CHECK(cudaMalloc(&dout, size_t(n * Hq * d) * 2));
  ELASTIC_CUDA_CHECK(cudaMalloc(&k, size_t(n * Hkv * d) * 2));
  ELASTIC_CUDA_CHECK(cudaMalloc(&v, size_t(n * Hkv * d) * 2));
  ELASTIC_CUDA_CHECK(cudaMalloc(&lse, size_t(n * Hq) * 4));
  ELASTIC_CUDA_CHECK(cudaMalloc(&dsum, size_t(n * Hq) * 4));
  ELASTIC_CUDA_CHECK(cudaMalloc(&dq, size_t(n * Hq * d) * 4));
  ELASTIC_CUDA_CHECK(cudaMalloc(&dk, size_t(n * Hkv * d) * 4));
  ELASTIC_CUDA_CHECK(cudaMalloc(&dv, size_t(n * Hkv * d) * 4));
  ELASTIC_CUDA_CHECK(cudaMalloc(&modes, seqs.size() * size_t(Hkv)));
  ELASTIC_CUDA_CHECK(cudaMemset(modes, 0, seqs.size() * size_t(Hkv)));  // all FA; xor 1: all SSA
  cuda::train_ops::fill_random_bf16(q, n * Hq * d, 3, 1.f, nullptr);
  cuda::train_ops::fill_random_bf16(k, n * Hkv * d, 4, 1.f, nullptr);
  cuda::train_ops::fill_random_bf16(v, n * Hkv * d, 5, 1.f, nullptr);
  cuda::train_ops::fill_random_bf16(dout, n * Hq * d, 6, 1.f, nullptr);
  double fa = 0, sa = 0;
  auto fwd = [&](const cuda::AttnTrainPlan& plan, int x) {
    cuda::attention_train_forward(o, lse, q, k, v, modes, x, plan, nullptr);
  };
  auto bwd = [&](const cuda::AttnTrainPlan& plan, int x) {
    cuda::attention_train_backward(dq, dk, dv, dsum, dout, o, lse, q, k, v, modes, x, plan,
                                   nullptr);
  };
  double t_fwd = 0, t_ssa = 0, t_bwd_best = 1e30, t_bwd_ssa = 0;
  int best = 0;
  std::printf("attention, %lld tokens in %zu samples:", (long long)n, lengths.size());
  for (int variant = 0; variant < 3; ++variant) {
    cuda::attention_train_set_backward_variant(variant);
    cuda::AttnTrainPlan plan(shape, seqs, nullptr);
    fa = double(plan.fa_pairs) * double(Hq), sa = double(plan.ssa_pairs) * double(Hq);
    if (variant == 0) {
      t_fwd = median_ms([&] { fwd(plan, 0); }, 5);
      t_ssa = median_ms([&] { fwd(plan, 1); }, 5);
    }
    fwd(plan, 0);
    const double t = median_ms([&] { bwd(plan, 0); }, 3);
    std::printf(" FA backward variant %d %.2f ms = %.1f TFLOP/s;", variant, t,
                10.0 * double(d) * fa / t * 1e-9);
    if (t < t_bwd_best) t_bwd_best = t, best = variant;
  }
  double t_mixed = 0, t_mixed_fwd = 0;
  {
    cuda::attention_train_set_backward_variant(best);
    cuda::AttnTrainPlan plan(shape, seqs, nullptr);
    fwd(plan, 1);
    t_bwd_ssa = median_ms([&] { bwd(plan, 1); }, 3);
    // Half the KV heads of every sample SSA (alternating), as a router step has them.
    std::vector<uint8_t> half(seqs.size() * size_t(Hkv));
    for (size_t i = 0; i < half.size(); ++i)
      half[i] = uint8_t(i % 2 ? AttnMode::ssa : AttnMode::fa);
    ELASTIC_CUDA_CHECK(cudaMemcpy(modes, half.data(), half.size(), cudaMemcpyHostToDevice));
    t_mixed_fwd = median_ms([&] { fwd(plan, 0); }, 3);
    t_mixed = median_ms([&] { bwd(plan, 0); }, 3);
  }
  r.attn_fwd = 4.0 * double(d) * fa / t_fwd * 1e3;
  r.attn_bwd = 10.0 * double(d) * fa / t_bwd_best * 1e3;
  r.ssa_fwd = 4.0 * double(d) * sa / t_ssa * 1e3;
  r.ssa_bwd = 10.0 * double(d) * sa / t_bwd_ssa * 1e3;
  std::printf(
      "\n  FA forward %.2f ms = %.1f TFLOP/s, backward (variant %d) %.1f TFLOP/s; SSA forward %.2f "
      "ms = "
      "%.1f TFLOP/s, backward %.2f ms = %.1f TFLOP/s\n",
      t_fwd, r.attn_fwd * 1e-12, best, r.attn_bwd * 1e-12, t_ssa, r.ssa_fwd * 1e-12, t_bwd_ssa,
      r.ssa_bwd * 1e-12);
  const double mixed = 0.5 * (fa + sa);
  std::printf(
      "  half the KV heads SSA: forward %.2f ms = %.1f TFLOP/s (from the FA and SSA rates: %.2f "
      "ms), "
      "backward %.2f ms = %.1f TFLOP/s (%.2f ms)\n",
      t_mixed_fwd, 4.0 * double(d) * mixed / t_mixed_fwd * 1e-9, 0.5 * (t_fwd + t_ssa), t_mixed,
      10.0 * double(d) * mixed / t_mixed * 1e-9, 0.5 * (t_bwd_best + t_bwd_ssa));
  for (void* p : {(void*)q, (void*)k, (void*)v, (void*)o, (void*)dout, (void*)lse, (void*)dsum,
                  (void*)dq, (void*)dk, (void*)dv, (void*)modes})
    cudaFree(p);
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> sizes = {32768, 65536};
  int64_t layers = 36;
  int steps = 2;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--tokens" && i + 1 < argc) {
      sizes.clear();
      std::string s = argv[++i];
      for (size_t p = 0; p < s.size();) {
        const size_t q = s.find(',', p);
        sizes.push_back(std::stoll(s.substr(p, q - p)));
        p = q == std::string::npos ? s.size() : q + 1;
      }
    } else if (a == "--layers" && i + 1 < argc) {
      layers = std::stoll(argv[++i]);
    } else if (a == "--steps" && i + 1 < argc) {
      steps = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "usage: bench_train_cuda [--tokens 32768,65536] [--layers 36] [--steps 2]\n");
      return 2;
    }
  }
  try {
    cudaDeviceProp prop{};
    ELASTIC_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s, %d SMs, %.1f GiB\n", prop.name, prop.multiProcessorCount,
                double(prop.totalGlobalMem) / (1 << 30));
    const ModelConfig c = qwen3_4b(layers);
    TrainOptions opt;
    opt.ssa.block = 128, opt.ssa.sink_tokens = 128, opt.ssa.local_tokens = 2048;
    Rates rates;
    rates.gemm = measure_gemm(c);

    std::mt19937 rng(7);
    ParamSet<float> router(router_layout(c));
    {
      std::normal_distribution<float> nd(0.f, 0.04f);  // ~ PyTorch's default init scale at d = 128
      for (float& x : router.data) x = nd(rng);
    }
    size_t free0 = 0, total = 0;
    ELASTIC_CUDA_CHECK(cudaMemGetInfo(&free0, &total));
    CudaTrainOptions copt;
    copt.profile = true;  // events at phase changes: a few hundred per layer, ~1 % of the step
    auto engine = train_engine_cuda_synthetic(c, router, opt, 11, 0.02f, copt);

    struct Row {
      int64_t tokens;
      size_t samples;
      double step_s, eval_s, fa_share, gemm_tflop, attn_fwd_tflop, attn_bwd_tflop, ideal_s,
          peak_gib;
      CudaTrainProfile prof;
    };
    std::vector<Row> rows;
    for (int64_t tokens : sizes) {
      const std::vector<int64_t> lengths = sample_lengths(tokens);
      // The steps below use the fastest FA backward variant (set globally, taken by the plans).
      measure_attention(c, lengths, opt.ssa, rates);
      Batch batch;
      StepLoss loss;
      std::uniform_int_distribution<int64_t> tok(0, c.vocab_size - 1);
      int64_t labelled = 0;
      for (int64_t len : lengths) {
        std::vector<int64_t> ids(static_cast<size_t>(len));
        for (int64_t& t : ids) t = tok(rng);
        batch.add(ids.data(), len);
        for (int64_t i = 0; i < len; ++i) loss.labels.push_back(i == 0 ? -100 : ids[size_t(i)]);
        labelled += len - 1;
        loss.task.push_back(int64_t(batch.num_seqs() - 1) % 2);
      }
      const int64_t S = batch.num_seqs(), L = c.num_layers, Hkv = c.num_kv_heads;
      loss.ce_scale = 1.0 / double(labelled);
      loss.targets = {0.7, 1.0};
      loss.lambda1 = {0.1, 0.1};
      loss.lambda2 = {0.1, 0.1};
      for (int64_t s = 0; s < S; ++s) loss.sample_weight.push_back(1.0 / double(S));
      StepRouting routing;
      routing.temperature = 1.5;
      std::uniform_real_distribution<double> u(0.0, 1.0);
      for (int64_t i = 0; i < S * L * Hkv * 2; ++i) routing.gumbel_u.push_back(u(rng));

      StepResult res = engine->step(batch, routing, loss);  // warm-up (allocates the scratch)
      engine->zero_grad();
      std::vector<double> times;
      for (int i = 0; i < steps; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        res = engine->step(batch, routing, loss);
        times.push_back(seconds_since(t0));
        engine->zero_grad();
      }
      const CudaTrainProfile prof = train_engine_cuda_profile(*engine);  // the last timed step
      std::sort(times.begin(), times.end());
      const auto t0 = std::chrono::steady_clock::now();
      engine->evaluate(batch, routing, loss);
      const double eval_s = seconds_since(t0);

      // FLOPs of this step with its decisions.
      const double n = double(batch.rows()), D = double(c.hidden_size),
                   F = double(c.intermediate_size);
      const double qd = double(c.num_heads * c.head_dim), kd = double(Hkv * c.head_dim),
                   V = double(c.vocab_size);
      const double proj = 2 * n * D * (qd + 2 * kd) + 2 * n * qd * D;  // q/k/v + o
      const double mlp_up = 2 * n * D * 2 * F, mlp_down = 2 * n * F * D;
      const double per_layer = (proj + mlp_up + mlp_down)     // forward
                               + (proj + mlp_up)              // recompute (no down projection)
                               + (proj + mlp_up + mlp_down);  // backward dX
      const double gemm = double(L) * per_layer + 2 * 2 * double(labelled) * V * D;
      const double G = double(c.num_heads / Hkv), dh = double(c.head_dim);
      double chosen = 0, both = 0, fa_heads = 0;
      for (int64_t s = 0; s < S; ++s) {
        int64_t fa = 0, sa = 0;
        mode_pairs(lengths[size_t(s)], opt.ssa, fa, sa);
        for (int64_t l = 0; l < L; ++l)
          for (int64_t h = 0; h < Hkv; ++h) {
            const bool is_fa = res.decisions[size_t((s * L + l) * Hkv + h)] != 0;
            chosen += G * double(is_fa ? fa : sa);
            both += G * double(fa + sa);
            fa_heads += is_fa;
          }
      }
      const double attn_fwd = 4 * dh * (chosen + both), attn_bwd = 10 * dh * chosen;
      const double ideal =
          gemm / rates.gemm + attn_fwd / rates.attn_fwd + attn_bwd / rates.attn_bwd;
      size_t free1 = 0;
      ELASTIC_CUDA_CHECK(cudaMemGetInfo(&free1, &total));
      rows.push_back({tokens, lengths.size(), times[times.size() / 2], eval_s,
                      fa_heads / double(S * L * Hkv), gemm * 1e-12, attn_fwd * 1e-12,
                      attn_bwd * 1e-12, ideal,
                      double(train_engine_cuda_device_bytes(*engine)) / (1 << 30), prof});
      std::printf("%lld tokens: step %.2f s (evaluate %.2f s), device memory in use %.1f GiB\n",
                  (long long)tokens, times[times.size() / 2], eval_s,
                  double(free0 - free1) / (1 << 30));
      std::fflush(stdout);
    }
    std::printf(
        "\nrates measured above (the last size): GEMM %.0f TFLOP/s, FA forward %.0f, backward "
        "%.0f; "
        "SSA forward %.0f, backward %.0f TFLOP/s (the ideal uses the FA rates)\n",
        rates.gemm * 1e-12, rates.attn_fwd * 1e-12, rates.attn_bwd * 1e-12, rates.ssa_fwd * 1e-12,
        rates.ssa_bwd * 1e-12);
    std::printf(
        "| tokens | samples | FA heads | step s | tokens/s | GEMM TFLOP | attn fwd+recompute TFLOP "
        "| "
        "attn bwd TFLOP | ideal s | of ideal | peak GiB |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const Row& r : rows)
      std::printf(
          "| %lld | %zu | %.2f | %.2f | %.0f | %.0f | %.0f | %.0f | %.2f | %.0f %% | %.1f |\n",
          (long long)r.tokens, r.samples, r.fa_share, r.step_s, double(r.tokens) / r.step_s,
          r.gemm_tflop, r.attn_fwd_tflop, r.attn_bwd_tflop, r.ideal_s, 100 * r.ideal_s / r.step_s,
          r.peak_gib);
    std::printf(
        "\nphases of the last timed step (device timeline, s): GEMM (rate) | attention forward + "
        "recompute (rate) | attention backward (rate) | lm_head + CE | router (host MLPs, "
        "transfers) | elementwise\n");
    for (const Row& r : rows) {
      const CudaTrainProfile& p = r.prof;
      const double lm = 4 * double(r.tokens) * double(c.vocab_size) * double(c.hidden_size);
      std::printf("| %lld | %.2f (%.0f) | %.2f (%.0f) | %.2f (%.0f) | %.2f | %.2f | %.2f |\n",
                  (long long)r.tokens, p.gemm_ms * 1e-3,
                  (r.gemm_tflop - lm * 1e-12) / p.gemm_ms * 1e3, p.attention_forward_ms * 1e-3,
                  r.attn_fwd_tflop / p.attention_forward_ms * 1e3, p.attention_backward_ms * 1e-3,
                  r.attn_bwd_tflop / p.attention_backward_ms * 1e3, p.head_ms * 1e-3,
                  p.router_ms * 1e-3, p.elementwise_ms * 1e-3);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train_cuda: %s\n", e.what());
    return 1;
  }
  return 0;
}
