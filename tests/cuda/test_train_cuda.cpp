// The CUDA training engine and its kernels against the CPU reference (src/train/), on random
// shapes: every op forward and backward, the varlen FA/SSA attention (odd lengths, length-1
// samples, GQA 1/2/4/8, d 16/32/64/128, small SSA blocks, mixed modes per (sample, KV head)),
// router pooling and dz, AdamW and the gradient norm, whole steps (router gradients; backbone
// weight gradients with tiled MLP and lm_head) and the router-train-step fixture.
//
// Inputs are bf16-representable, so both sides start from the same numbers; the CPU computes in
// fp32 with double accumulation. Tolerances (relative L2 error, ||got - want|| / ||want||):
//   - fp32 outputs of fp32 math on the same inputs (norm/RoPE backward, GEMMs with bf16 inputs
//     and fp32 accumulation over K <= 512): 1e-5 (fp32 rounding ~6e-8 per op, sums of K terms);
//   - bf16 outputs: 4e-3 (one rounding to 8 mantissa bits: at most 2^-9 = 2e-3 relative per
//     element, ~1e-3 in L2);
//   - attention forward 1e-2, backward 2e-2: P and dS are rounded to bf16 as MMA operands
//     (~2e-3 each) and enter sums of up to a few hundred terms; measured 2e-3..6e-3;
//   - whole steps 3e-2 (bf16 activations through every layer: each stored activation adds
//     ~1e-3; the fixture's bar for CUDA is 2e-2, the issue's).
// Skips without a GPU (REQUIRE_GPU). CudaSanitizerTrain.* are the small shapes that
// scripts/gpu-check.sh runs under compute-sanitizer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "cuda/train/attention_train_cuda.h"
#include "cuda/train/engine_cuda.h"
#include "cuda/gemm_lt.h"
#include "cuda/train/ops_train_cuda.h"
#include "cuda_test_util.h"
#include "elastic/config.h"
#include "elastic/cpu_ops.h"
#include "elastic/safetensors.h"
#include "train/attention_train.h"
#include "train/engine.h"
#include "train/ops_train.h"
#include "train/router_train.h"

namespace elastic {
namespace {

using namespace train;
using cuda_test::download;
using cuda_test::random_bf16_values;
using cuda_test::to_bf16;
using bf16 = __nv_bfloat16;

double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = double(got[i]) - want[i];
    if (!std::isfinite(got[i])) return INFINITY;
    num += e * e;
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}
double rel_l2(const std::vector<double>& got, const std::vector<double>& want) {
  return rel_l2(std::vector<float>(got.begin(), got.end()),
                std::vector<float>(want.begin(), want.end()));
}

// Device buffers for one test (freed at the end).
struct Dev {
  cuda::DeviceArena arena{size_t(256) << 20};
  template <typename T>
  T* up(const std::vector<T>& h) {
    return cuda_test::upload(arena, h);
  }
  bf16* up_bf16(const std::vector<float>& h) {
    return reinterpret_cast<bf16*>(cuda_test::upload(arena, to_bf16(h)));
  }
  template <typename T>
  T* zeros(size_t n) {
    T* p = arena.alloc_array<T>(n);
    ELASTIC_CUDA_CHECK(cudaMemset(p, 0, n * sizeof(T)));
    return p;
  }
};

std::vector<float> down_bf16(const bf16* p, size_t n) {
  const std::vector<uint16_t> h = download(reinterpret_cast<const uint16_t*>(p), n);
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(h[i]);
  return out;
}
template <typename T>
std::vector<T> down(const T* p, size_t n) {
  ELASTIC_CUDA_CHECK(cudaDeviceSynchronize());
  return download(p, n);
}

// ---------------------------------------------------------------------------------------------
// Elementwise and row ops.

TEST(CudaTrainOps, RmsNormForwardBackward) {
  REQUIRE_GPU();
  std::mt19937 rng(1);
  for (auto [rows, D] : {std::pair<int64_t, int64_t>{37, 192}, {333, 64}, {5, 2560}}) {
    SCOPED_TRACE("rows " + std::to_string(rows) + " D " + std::to_string(D));
    Dev dev;
    const std::vector<float> x = random_bf16_values(size_t(rows * D), rng, 2.f);
    std::vector<float> w = random_bf16_values(size_t(D), rng, 0.3f);
    for (float& v : w) v = bf16_to_f32(f32_to_bf16(v + 1.f));
    const std::vector<float> dy = random_bf16_values(size_t(rows * D), rng);
    std::vector<float> out(x.size()), rstd(static_cast<size_t>(rows)), dx(x.size(), 0.5f),
        dw(size_t(D), 0.25f);
    rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), rows, D, 1e-6);
    rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), rows, D);
    for (bool fp32_input : {false, true}) {
      bf16* out_d = dev.zeros<bf16>(x.size());
      float* rstd_d = dev.zeros<float>(size_t(rows));
      float* dx_d = dev.up(std::vector<float>(x.size(), 0.5f));
      float* dw_d = dev.up(std::vector<float>(size_t(D), 0.25f));
      const bf16* w_d = dev.up_bf16(w);
      if (fp32_input) {
        const float* x_d = dev.up(x);
        cuda::train_ops::rmsnorm_forward<float>(out_d, rstd_d, x_d, w_d, rows, D, 1e-6f, nullptr);
        cuda::train_ops::rmsnorm_backward<float>(dx_d, dw_d, dev.up(dy), x_d, w_d, rstd_d, rows, D,
                                                 nullptr);
      } else {
        const bf16* x_d = dev.up_bf16(x);
        cuda::train_ops::rmsnorm_forward<bf16>(out_d, rstd_d, x_d, w_d, rows, D, 1e-6f, nullptr);
        cuda::train_ops::rmsnorm_backward<bf16>(dx_d, dw_d, dev.up(dy), x_d, w_d, rstd_d, rows, D,
                                                nullptr);
      }
      EXPECT_LE(rel_l2(down_bf16(out_d, out.size()), out), 4e-3);
      EXPECT_LE(rel_l2(down(rstd_d, rstd.size()), rstd), 1e-5);
      EXPECT_LE(rel_l2(down(dx_d, dx.size()), dx), 1e-5);
      EXPECT_LE(rel_l2(down(dw_d, dw.size()), dw), 1e-5);
    }
  }
}

TEST(CudaTrainOps, RopeSwigluEmbeddingBias) {
  REQUIRE_GPU();
  std::mt19937 rng(2);
  Dev dev;
  // RoPE (llama3 frequencies: every rope type uses the same rotation) over 3 positions runs.
  const int64_t n = 41, heads = 3, d = 64;
  RopeConfig rc;
  rc.type = RopeType::llama3;
  rc.theta = 500000;
  rc.factor = 8;
  rc.original_max_position_embeddings = 32;
  const RopeFrequencies f = rope_frequencies(rc, d);
  std::vector<float> cos(size_t(n * d / 2)), sin(cos.size());
  rope_table_fill(cos.data(), sin.data(), f, 0, 20);
  rope_table_fill(cos.data() + 20 * d / 2, sin.data() + 20 * d / 2, f, 0, n - 20);
  const std::vector<float> x = random_bf16_values(size_t(n * heads * d), rng);
  const std::vector<float> g = random_bf16_values(x.size(), rng);
  std::vector<float> y(x.size()), dx(x.size(), 0.1f);
  rope_forward(y.data(), x.data(), cos.data(), sin.data(), n, heads, d);
  rope_backward(dx.data(), g.data(), cos.data(), sin.data(), n, heads, d);
  bf16* y_d = dev.zeros<bf16>(x.size());
  float* dx_d = dev.up(std::vector<float>(x.size(), 0.1f));
  const float *cos_d = dev.up(cos), *sin_d = dev.up(sin);
  cuda::train_ops::rope_forward(y_d, dev.up_bf16(x), cos_d, sin_d, n, heads, d, nullptr);
  cuda::train_ops::rope_backward(dx_d, dev.up(g), cos_d, sin_d, n, heads, d, nullptr);
  EXPECT_LE(rel_l2(down_bf16(y_d, y.size()), y), 4e-3);
  EXPECT_LE(rel_l2(down(dx_d, dx.size()), dx), 1e-6);

  // SwiGLU.
  const int64_t count = 1001;
  const std::vector<float> gate = random_bf16_values(count, rng, 2.f),
                           up = random_bf16_values(count, rng);
  const std::vector<float> dout = random_bf16_values(count, rng);
  std::vector<float> act(count), dgate(count, 0.f), dup(count, 0.f);
  swiglu_forward(act.data(), gate.data(), up.data(), 1, count);
  swiglu_backward(dgate.data(), dup.data(), dout.data(), gate.data(), up.data(), 1, count);
  bf16 *act_d = dev.zeros<bf16>(count), *dgate_d = dev.zeros<bf16>(count),
       *dup_d = dev.zeros<bf16>(count);
  const bf16 *gate_d = dev.up_bf16(gate), *up_d = dev.up_bf16(up);
  cuda::train_ops::swiglu_forward(act_d, gate_d, up_d, count, nullptr);
  cuda::train_ops::swiglu_backward(dgate_d, dup_d, dev.up_bf16(dout), gate_d, up_d, count, nullptr);
  EXPECT_LE(rel_l2(down_bf16(act_d, count), act), 4e-3);
  EXPECT_LE(rel_l2(down_bf16(dgate_d, count), dgate), 4e-3);
  EXPECT_LE(rel_l2(down_bf16(dup_d, count), dup), 4e-3);

  // Embedding forward (exact) and backward (fp32 atomics: repeated ids sum).
  const int64_t V = 13, D = 24, rows = 29;
  const std::vector<float> table = random_bf16_values(size_t(V * D), rng);
  std::vector<int64_t> ids64(rows);
  std::vector<int32_t> ids32(rows);
  for (int64_t i = 0; i < rows; ++i) ids32[size_t(i)] = int32_t(ids64[size_t(i)] = (i * 7) % V);
  std::vector<float> emb(size_t(rows * D)), dtab(table.size(), 0.f);
  embedding_forward(emb.data(), ids64.data(), rows, table.data(), V, D);
  const std::vector<float> demb = random_bf16_values(emb.size(), rng);
  embedding_backward(dtab.data(), demb.data(), ids64.data(), rows, D);
  bf16* emb_d = dev.zeros<bf16>(emb.size());
  float* dtab_d = dev.zeros<float>(dtab.size());
  const int32_t* ids_d = dev.up(ids32);
  cuda::train_ops::embedding_forward(emb_d, ids_d, rows, dev.up_bf16(table), D, nullptr);
  cuda::train_ops::embedding_backward(dtab_d, dev.up(demb), ids_d, rows, D, nullptr);
  EXPECT_EQ(down_bf16(emb_d, emb.size()), emb);
  EXPECT_LE(rel_l2(down(dtab_d, dtab.size()), dtab), 1e-6);

  // Bias add and its gradient (column sums).
  const int64_t br = 77, bc = 40;
  const std::vector<float> bias = random_bf16_values(bc, rng),
                           dy = random_bf16_values(size_t(br * bc), rng);
  std::vector<float> dbias(bc, 0.5f);
  for (int64_t r = 0; r < br; ++r)
    for (int64_t c = 0; c < bc; ++c) dbias[size_t(c)] += dy[size_t(r * bc + c)];
  float* db_d = dev.up(std::vector<float>(bc, 0.5f));
  cuda::train_ops::bias_backward(db_d, dev.up_bf16(dy), br, bc, nullptr);
  EXPECT_LE(rel_l2(down(db_d, dbias.size()), dbias), 1e-6);
  std::vector<float> yb(size_t(br * bc), 0.f);
  for (int64_t r = 0; r < br; ++r)
    for (int64_t c = 0; c < bc; ++c)
      yb[size_t(r * bc + c)] = dy[size_t(r * bc + c)] + bias[size_t(c)];
  float* yb_d = dev.up(dy);
  cuda::train_ops::bias_add(yb_d, dev.up_bf16(bias), br, bc, nullptr);
  EXPECT_LE(rel_l2(down(yb_d, yb.size()), yb), 1e-7);
}

TEST(CudaTrainOps, LinearForwardBackwardAccumulate) {
  REQUIRE_GPU();
  std::mt19937 rng(3);
  cuda::GemmLt gemm;
  for (auto [n, N, K] :
       {std::tuple<int64_t, int64_t, int64_t>{37, 96, 64}, {1, 64, 192}, {300, 40, 512}}) {
    SCOPED_TRACE("n " + std::to_string(n) + " N " + std::to_string(N) + " K " + std::to_string(K));
    Dev dev;
    const std::vector<float> x = random_bf16_values(size_t(n * K), rng),
                             W = random_bf16_values(size_t(N * K), rng);
    const std::vector<float> dy = random_bf16_values(size_t(n * N), rng);
    std::vector<float> y(size_t(n * N)), dx(x.size(), 0.f), dW = random_bf16_values(W.size(), rng);
    const std::vector<float> dW0 = dW;
    linear_forward(y.data(), x.data(), W.data(), static_cast<const float*>(nullptr), n, N, K);
    linear_backward(dx.data(), dW.data(), static_cast<float*>(nullptr), dy.data(), x.data(),
                    W.data(), n, N, K);
    const bf16 *x_d = dev.up_bf16(x), *W_d = dev.up_bf16(W), *dy_d = dev.up_bf16(dy);
    float* y_d = dev.zeros<float>(y.size());
    bf16* yb_d = dev.zeros<bf16>(y.size());
    float* dx_d = dev.zeros<float>(dx.size());
    float* dW_d = dev.up(dW0);
    gemm.linear_forward(y_d, cuda::GemmOut::f32, x_d, W_d, n, N, K, 0.f, nullptr);
    gemm.linear_forward(yb_d, cuda::GemmOut::bf16, x_d, W_d, n, N, K, 0.f, nullptr);
    gemm.linear_backward_input(dx_d, cuda::GemmOut::f32, dy_d, W_d, n, N, K, 0.f, nullptr);
    gemm.linear_backward_weight(dW_d, dy_d, x_d, n, N, K, nullptr);
    EXPECT_LE(rel_l2(down(y_d, y.size()), y), 1e-5);
    EXPECT_LE(rel_l2(down_bf16(yb_d, y.size()), y), 4e-3);
    EXPECT_LE(rel_l2(down(dx_d, dx.size()), dx), 1e-5);
    EXPECT_LE(rel_l2(down(dW_d, dW.size()), dW), 1e-5);  // dW0 + dy^T x: beta = 1
  }
}

TEST(CudaTrainOps, CrossEntropyForwardBackward) {
  REQUIRE_GPU();
  std::mt19937 rng(4);
  Dev dev;
  const int64_t rows = 9, V = 5003;
  const std::vector<float> z = random_bf16_values(size_t(rows * V), rng, 3.f);
  std::vector<int32_t> labels(rows);
  for (int64_t i = 0; i < rows; ++i) labels[size_t(i)] = int32_t((i * 997) % V);
  const double scale = 1.0 / 7;
  std::vector<double> loss(rows);
  std::vector<float> dz(z.size());
  for (int64_t r = 0; r < rows; ++r) {
    double mx = -INFINITY, s = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, double(z[size_t(r * V + v)]));
    for (int64_t v = 0; v < V; ++v) s += std::exp(z[size_t(r * V + v)] - mx);
    const double lse = mx + std::log(s);
    loss[size_t(r)] = lse - z[size_t(r * V + labels[size_t(r)])];
    for (int64_t v = 0; v < V; ++v)
      dz[size_t(r * V + v)] =
          float((std::exp(z[size_t(r * V + v)] - lse) - (v == labels[size_t(r)])) * scale);
  }
  bf16* dz_d = dev.zeros<bf16>(dz.size());
  double* loss_d = dev.zeros<double>(size_t(rows));
  cuda::train_ops::cross_entropy_forward_backward(dz_d, loss_d, dev.up(z), dev.up(labels), rows, V,
                                                  float(scale), nullptr);
  EXPECT_LE(rel_l2(down(loss_d, size_t(rows)), loss), 1e-6);
  EXPECT_LE(rel_l2(down_bf16(dz_d, dz.size()), dz), 4e-3);
}

// ---------------------------------------------------------------------------------------------
// Attention.

struct AttnCase {
  std::vector<int64_t> lengths;
  int Hq, Hkv, d;
  SsaOptions ssa;
  uint32_t seed;
};

SsaOptions ssa_small(int64_t block, int64_t sink, int64_t local) {
  SsaOptions s;
  s.block = block, s.sink_tokens = sink, s.local_tokens = local;
  return s;
}

// Runs one case in every mode pattern (mixed per (sample, KV head), then all-flipped through
// mode_xor) against the CPU reference; returns the worst errors (forward, backward).
void attention_case(const AttnCase& c, double tol_fwd, double tol_bwd, bool print) {
  std::mt19937 rng(c.seed);
  Batch b;
  for (int64_t len : c.lengths) {
    std::vector<int64_t> ids(size_t(len), 0);
    b.add(ids.data(), len);
  }
  const int64_t n = b.rows(), S = b.num_seqs(), Hq = c.Hq, Hkv = c.Hkv, d = c.d;
  const std::vector<float> q = random_bf16_values(size_t(n * Hq * d), rng);
  const std::vector<float> k = random_bf16_values(size_t(n * Hkv * d), rng);
  const std::vector<float> v = random_bf16_values(size_t(n * Hkv * d), rng);
  const std::vector<float> dout = random_bf16_values(size_t(n * Hq * d), rng);
  std::vector<AttnMode> modes(size_t(S * Hkv));
  for (size_t i = 0; i < modes.size(); ++i)
    modes[i] = (i * 7 + c.seed) % 3 == 0 ? AttnMode::fa : AttnMode::ssa;
  Dev dev;
  const bf16 *q_d = dev.up_bf16(q), *k_d = dev.up_bf16(k), *v_d = dev.up_bf16(v),
             *do_d = dev.up_bf16(dout);
  std::vector<uint8_t> m8(modes.size());
  for (size_t i = 0; i < modes.size(); ++i) m8[i] = uint8_t(modes[i]);
  const uint8_t* modes_d = dev.up(m8);
  cuda::AttnTrainShape shape;
  shape.rows = n, shape.num_heads = c.Hq, shape.num_kv_heads = c.Hkv, shape.head_dim = c.d,
  shape.ssa = c.ssa;
  cuda::AttnTrainPlan plan(shape, b.seqs, nullptr);
  for (int mode_xor : {0, 1}) {
    std::vector<AttnMode> cpu_modes = modes;
    if (mode_xor)
      for (AttnMode& m : cpu_modes) m = m == AttnMode::fa ? AttnMode::ssa : AttnMode::fa;
    AttnTrainArgs<float> a;
    a.q = q.data(), a.k = k.data(), a.v = v.data();
    a.seqs = b.seqs.data(), a.num_seqs = S, a.modes = cpu_modes.data();
    a.num_heads = Hq, a.num_kv_heads = Hkv, a.head_dim = d, a.ssa = c.ssa;
    std::vector<float> out(q.size()), lse(size_t(n * Hq)), dq(q.size(), 0.f), dk(k.size(), 0.f),
        dv(v.size(), 0.f);
    attention_train_forward(out.data(), lse.data(), a);
    attention_train_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(),
                             a);

    bf16* out_d = dev.zeros<bf16>(out.size());
    float* lse_d = dev.zeros<float>(lse.size());
    float *dq_d = dev.zeros<float>(dq.size()), *dk_d = dev.zeros<float>(dk.size()),
          *dv_d = dev.zeros<float>(dv.size());
    float* dsum_d = dev.zeros<float>(lse.size());
    cuda::attention_train_forward(out_d, lse_d, q_d, k_d, v_d, modes_d, mode_xor, plan, nullptr);
    cuda::attention_train_backward(dq_d, dk_d, dv_d, dsum_d, do_d, out_d, lse_d, q_d, k_d, v_d,
                                   modes_d, mode_xor, plan, nullptr);
    const double e_out = rel_l2(down_bf16(out_d, out.size()), out);
    const double e_lse = rel_l2(down(lse_d, lse.size()), lse);
    const double e_dq = rel_l2(down(dq_d, dq.size()), dq), e_dk = rel_l2(down(dk_d, dk.size()), dk);
    const double e_dv = rel_l2(down(dv_d, dv.size()), dv);
    EXPECT_LE(e_out, tol_fwd) << "mode_xor " << mode_xor;
    EXPECT_LE(e_lse, tol_fwd) << "mode_xor " << mode_xor;
    EXPECT_LE(e_dq, tol_bwd) << "mode_xor " << mode_xor;
    EXPECT_LE(e_dk, tol_bwd) << "mode_xor " << mode_xor;
    EXPECT_LE(e_dv, tol_bwd) << "mode_xor " << mode_xor;
    if (print)
      std::printf(
          "  attention S=%lld n=%lld Hq=%d Hkv=%d d=%d xor=%d: out %.1e lse %.1e dq %.1e dk %.1e "
          "dv %.1e\n",
          (long long)S, (long long)n, c.Hq, c.Hkv, c.d, mode_xor, e_out, e_lse, e_dq, e_dk, e_dv);
  }
}

TEST(CudaTrainAttention, VarlenForwardBackwardMatchCpu) {
  REQUIRE_GPU();
  const std::vector<AttnCase> cases = {
      {{1, 17, 200, 64, 129}, 8, 2, 64, ssa_small(16, 16, 48), 11},  // GQA 4, length 1
      {{300, 1, 77}, 4, 4, 128, ssa_small(16, 16, 48), 12},          // GQA 1
      {{513, 250}, 16, 2, 128, ssa_small(32, 32, 96), 13},           // GQA 8
      {{100, 33, 1}, 2, 1, 32, ssa_small(16, 16, 32), 14},           // d 32
      {{90, 3}, 4, 2, 16, ssa_small(16, 16, 16), 15},                // d 16, window of 1 block
      {{700}, 8, 1, 64, ssa_small(64, 64, 128), 16},                 // GQA 8, one sample
      {{129, 128, 127}, 4, 1, 128, ssa_small(128, 100, 200), 17},    // rounded-up sink/local
  };
  for (const AttnCase& c : cases) {
    SCOPED_TRACE("d " + std::to_string(c.d) + " Hq " + std::to_string(c.Hq) + " Hkv " +
                 std::to_string(c.Hkv));
    attention_case(c, 1e-2, 2e-2, true);
  }
}

TEST(CudaTrainAttention, BackwardVariantsAgree) {
  REQUIRE_GPU();
  for (int variant : {0, 1, 2}) {  // tile variants at d = 128 (attention_train_cuda.h)
    SCOPED_TRACE("variant " + std::to_string(variant));
    cuda::attention_train_set_backward_variant(variant);
    attention_case({{200, 67, 1, 130}, 8, 2, 128, ssa_small(16, 16, 48), 21}, 1e-2, 2e-2, false);
  }
  cuda::attention_train_set_backward_variant(cuda::kAttentionTrainBackwardDefault);
}

// ---------------------------------------------------------------------------------------------
// Router pooling and dz; AdamW.

TEST(CudaTrainRouter, PoolingAndDz) {
  REQUIRE_GPU();
  std::mt19937 rng(5);
  Batch b;
  std::vector<int64_t> ids(400, 0);
  for (int64_t len : {40, 150, 300, 1}) b.add(ids.data(), len);
  const int64_t n = b.rows(), S = b.num_seqs(), Hkv = 2, Hq = 4, d = 64, P = 100;
  const std::vector<float> k = random_bf16_values(size_t(n * Hkv * d), rng);
  std::vector<int2> spans;
  for (const BatchSeq& s : b.seqs) spans.push_back(make_int2(int(s.begin), int(s.length)));
  Dev dev;
  const bf16* k_d = dev.up_bf16(k);
  const int2* spans_d = dev.up(spans);
  for (RouterPooling pooling : {RouterPooling::boundary, RouterPooling::segment_mean}) {
    const bool seg = pooling == RouterPooling::segment_mean;
    std::vector<double> pooled(size_t(S * Hkv * d)), dpooled(pooled.size());
    std::vector<float> dk(k.size(), 0.f);
    std::normal_distribution<double> nd;
    for (double& x : dpooled) x = nd(rng);
    for (int64_t s = 0; s < S; ++s)
      for (int64_t h = 0; h < Hkv; ++h) {
        router_pool_forward(pooled.data() + (s * Hkv + h) * d, k.data(), b.seqs[size_t(s)], h, Hkv,
                            d, P, pooling);
        router_pool_backward(dk.data(), dpooled.data() + (s * Hkv + h) * d, b.seqs[size_t(s)], h,
                             Hkv, d, P, pooling);
      }
    double* pooled_d = dev.zeros<double>(pooled.size());
    float* dk_d = dev.zeros<float>(dk.size());
    cuda::train_ops::router_pool_forward(pooled_d, k_d, spans_d, S, Hkv, d, P, seg, nullptr);
    cuda::train_ops::router_pool_backward(dk_d, dev.up(dpooled), spans_d, S, Hkv, d, P, seg,
                                          nullptr);
    EXPECT_EQ(down(pooled_d, pooled.size()), pooled);  // same bf16 inputs, same order, double
    EXPECT_LE(rel_l2(down(dk_d, dk.size()), dk), 1e-7);
  }
  // dz[s, h] = sum over the rows of s and the query heads of h of datt . (att - other).
  const std::vector<float> datt = random_bf16_values(size_t(n * Hq * d), rng);
  const std::vector<float> att = random_bf16_values(datt.size(), rng),
                           other = random_bf16_values(datt.size(), rng);
  std::vector<double> dz(size_t(S * Hkv), 0.0);
  for (int64_t s = 0; s < S; ++s)
    for (int64_t t = b.seqs[size_t(s)].begin; t < b.seqs[size_t(s)].end(); ++t)
      for (int64_t hq = 0; hq < Hq; ++hq)
        for (int64_t e = 0; e < d; ++e) {
          const size_t i = size_t((t * Hq + hq) * d + e);
          dz[size_t(s * Hkv + hq / (Hq / Hkv))] += double(datt[i]) * (double(att[i]) - other[i]);
        }
  std::vector<int4> chunks;
  for (int64_t s = 0; s < S; ++s)
    for (int64_t r = b.seqs[size_t(s)].begin; r < b.seqs[size_t(s)].end(); r += 64)
      chunks.push_back(
          make_int4(int(s), int(r), int(std::min(b.seqs[size_t(s)].end(), r + 64)), 0));
  double* dz_d = dev.zeros<double>(dz.size());
  cuda::train_ops::router_dz(dz_d, dev.up_bf16(datt), dev.up_bf16(att), dev.up_bf16(other),
                             dev.up(chunks), int64_t(chunks.size()), Hq, Hkv, d, nullptr);
  EXPECT_LE(rel_l2(down(dz_d, dz.size()), dz), 1e-6);
}

TEST(CudaTrainOptim, AdamWMatchesHostUpdate) {
  REQUIRE_GPU();
  std::mt19937 rng(6);
  const int64_t n = 100003;
  const std::vector<float> p0 = random_bf16_values(n, rng), g = random_bf16_values(n, rng, 0.01f);
  std::vector<float> m0 = random_bf16_values(n, rng, 0.001f), v0(n);
  for (int64_t i = 0; i < n; ++i) v0[size_t(i)] = std::fabs(random_bf16_values(1, rng, 1e-4f)[0]);
  AdamWConfig c;
  c.lr = 3e-4;
  std::vector<float> p = p0, m = m0, v = v0;
  adamw_update(p.data(), g.data(), m.data(), v.data(), n, c, 0.7, 5);
  Dev dev;
  float *p_d = dev.up(p0), *m_d = dev.up(m0), *v_d = dev.up(v0);
  bf16* pb_d = dev.zeros<bf16>(size_t(n));
  cuda::train_ops::AdamWArgs a;
  a.lr = c.lr, a.beta1 = c.beta1, a.beta2 = c.beta2, a.eps = c.eps, a.weight_decay = c.weight_decay;
  a.grad_scale = 0.7, a.bc1 = 1 - std::pow(c.beta1, 5.0), a.bc2 = 1 - std::pow(c.beta2, 5.0);
  cuda::train_ops::adamw_update(p_d, pb_d, dev.up(g), m_d, v_d, n, a, nullptr);
  EXPECT_LE(rel_l2(down(p_d, p.size()), p), 1e-7);  // double math per element on both sides
  EXPECT_LE(rel_l2(down(m_d, m.size()), m), 1e-7);
  EXPECT_LE(rel_l2(down(v_d, v.size()), v), 1e-7);
  EXPECT_LE(rel_l2(down_bf16(pb_d, p.size()), p), 4e-3);
  double ss = 0;
  for (float x : g) ss += double(x) * x;
  double* part_d = dev.zeros<double>(1024);
  const int blocks = cuda::train_ops::sum_squares(part_d, 1024, dev.up(g), n, nullptr);
  double got = 0;
  for (double x : down(part_d, size_t(blocks))) got += x;
  EXPECT_NEAR(got, ss, 1e-12 * ss);
}

// ---------------------------------------------------------------------------------------------
// Whole steps: the CUDA engine against the CPU engine.

ModelConfig tiny_config(bool qwen3, bool tied, int64_t d, int64_t Hq, int64_t Hkv) {
  const std::string json = std::string(R"({"model_type": ")") + (qwen3 ? "qwen3" : "qwen2") +
                           R"(", "vocab_size": 104, "hidden_size": 64, "intermediate_size": 96,
      "num_hidden_layers": 2, "num_attention_heads": )" +
                           std::to_string(Hq) + R"(, "num_key_value_heads": )" +
                           std::to_string(Hkv) + R"(, "head_dim": )" + std::to_string(d) +
                           R"(, "rms_norm_eps": 1e-6, "max_position_embeddings": 4096,
      "rope_theta": 1000000.0, "tie_word_embeddings": )" +
                           (tied ? "true" : "false") + "}";
  return config_parse(json, "tiny");
}

ParamSet<float> random_params(const ParamLayout& layout, std::mt19937& rng, float sigma) {
  ParamSet<float> p(layout);
  p.data = random_bf16_values(size_t(layout.total()), rng, sigma);
  for (const ParamInfo& t : layout.tensors())  // norms near 1
    if (t.name.find("norm") != std::string::npos)
      for (int64_t i = 0; i < t.numel(); ++i)
        p.data[size_t(t.offset + i)] = bf16_to_f32(f32_to_bf16(p.data[size_t(t.offset + i)] + 1.f));
  return p;
}

struct StepCase {
  Batch batch;
  StepRouting routing;
  StepLoss loss;
};

StepCase step_case(const ModelConfig& c, const std::vector<int64_t>& lengths, bool router,
                   std::mt19937& rng) {
  StepCase sc;
  std::uniform_int_distribution<int64_t> tok(0, c.vocab_size - 1);
  int64_t labelled = 0;
  for (int64_t len : lengths) {
    std::vector<int64_t> ids(static_cast<size_t>(len));
    for (int64_t& t : ids) t = tok(rng);
    sc.batch.add(ids.data(), len);
    for (int64_t i = 0; i < len; ++i) {
      const int64_t y = i + 1 < len ? ids[size_t(i + 1)] : -100;
      sc.loss.labels.push_back(y);
      labelled += y != -100;
    }
  }
  const int64_t S = sc.batch.num_seqs(), L = c.num_layers, Hkv = c.num_kv_heads;
  sc.loss.ce_scale = 1.0 / double(std::max<int64_t>(labelled, 1));
  sc.loss.targets = {0.7, 1.0};
  sc.loss.lambda1 = {0.3, 0.2};
  sc.loss.lambda2 = {0.4, 0.1};
  for (int64_t s = 0; s < S; ++s) {
    sc.loss.task.push_back(s % 2);
    sc.loss.sample_weight.push_back(0.5 / double((S + 1 - s % 2) / 2));
  }
  sc.routing.router = router;
  sc.routing.temperature = 1.3;
  std::uniform_real_distribution<double> u(0.0, 1.0);
  if (router)
    for (int64_t i = 0; i < S * L * Hkv * 2; ++i) sc.routing.gumbel_u.push_back(u(rng));
  else
    for (int64_t i = 0; i < S * L * Hkv; ++i)
      sc.routing.fixed.push_back(uint8_t((i * 5 + 1) % 3 != 0));
  return sc;
}

// One step on both engines; compares loss terms, decisions, every gradient of the trainable
// groups and, after one AdamW update, the parameters.
void compare_engines(const ModelConfig& c, const std::vector<int64_t>& lengths, bool router,
                     bool weight_grads, const CudaTrainOptions& copt, uint32_t seed, double tol) {
  std::mt19937 rng(seed);
  TrainOptions opt;
  opt.ssa = ssa_small(16, 16, 32);
  opt.weight_grads = weight_grads;
  opt.pool_tokens = 20;
  ParamSet<float> bb = random_params(backbone_layout(c), rng, 0.15f);
  ParamSet<float> rt = router ? random_params(router_layout(c), rng, 0.1f) : ParamSet<float>();
  auto cpu = train_engine_cpu(c, bb, rt, opt);
  auto gpu = train_engine_cuda(c, bb, rt, opt, copt);
  const StepCase sc = step_case(c, lengths, router, rng);
  const StepResult a = cpu->step(sc.batch, sc.routing, sc.loss);
  const StepResult b = gpu->step(sc.batch, sc.routing, sc.loss);
  EXPECT_EQ(b.decisions, a.decisions);
  EXPECT_NEAR(b.ce, a.ce, tol * std::fabs(a.ce));
  EXPECT_NEAR(b.sparsity_loss, a.sparsity_loss, 1e-12 + 1e-9 * std::fabs(a.sparsity_loss));
  EXPECT_EQ(b.omega, a.omega);
  if (router) {
    EXPECT_LE(rel_l2(b.router_logits, a.router_logits), 1e-2);
  }
  std::printf("  %s %s: ce %.6f vs %.6f", c.model_type.c_str(), router ? "router" : "fixed", b.ce,
              a.ce);
  for (ParamGroup g : {ParamGroup::router, ParamGroup::backbone}) {
    if (!cpu->has(g)) continue;
    ASSERT_TRUE(gpu->has(g));
    const std::vector<float> ga = cpu->get(g, ParamState::grad), gb = gpu->get(g, ParamState::grad);
    // Per tensor: a small tensor's error must not hide in the norm of a large one. The k
    // projection's gradients get twice the bound: dK_j = scale sum_i dS_ij q_i with
    // sum_j dS_ij = 0 for every query, so its bias (sum over rows) and weight gradients are
    // near-cancelling sums (RoPE and k_norm keep them from zero) whose relative error is the
    // bf16 error times the cancellation (run 13: 2.4e-2..3.1e-2 where the others stay < 2e-2).
    std::vector<std::pair<double, std::string>> errors;
    for (const ParamInfo& p : cpu->layout(g).tensors()) {
      const std::vector<float> ta(ga.begin() + p.offset, ga.begin() + p.offset + p.numel());
      const std::vector<float> tb(gb.begin() + p.offset, gb.begin() + p.offset + p.numel());
      const double e = rel_l2(tb, ta);
      const bool k_proj = p.name.find("k_proj") != std::string::npos;
      EXPECT_LE(e, k_proj ? 2 * tol : tol) << p.name;
      errors.emplace_back(e, p.name);
    }
    std::sort(errors.rbegin(), errors.rend());
    const double na = cpu->grad_norm_squared(g), nb = gpu->grad_norm_squared(g);
    EXPECT_NEAR(nb, na, 2 * tol * na);
    std::printf(", %s grads worst", g == ParamGroup::router ? "router" : "backbone");
    for (size_t i = 0; i < std::min<size_t>(3, errors.size()); ++i)
      std::printf(" %.1e (%s)", errors[i].first, errors[i].second.c_str());
    // The engine's AdamW (device kernel for the backbone, host for the router) against the host
    // adamw_update applied to the engine's own gradients, from the same values and zero moments:
    // the same double arithmetic per element. (Comparing with the CPU engine's update would
    // compare signs of near-zero gradients: Adam's first step is lr sign(g).)
    AdamWConfig ac;
    ac.lr = 1e-2;
    std::vector<float> want = g == ParamGroup::router ? rt.data : bb.data;
    std::vector<float> m(want.size(), 0.f), v(want.size(), 0.f);
    adamw_update(want.data(), gb.data(), m.data(), v.data(), int64_t(want.size()), ac, 0.5, 1);
    gpu->adamw_step(g, ac, 0.5, 1);
    EXPECT_LE(rel_l2(gpu->get(g, ParamState::value), want), 1e-7);
    EXPECT_LE(rel_l2(gpu->get(g, ParamState::adam_v), v), 1e-7);
  }
  std::printf("\n");
}

TEST(CudaTrainEngine, RouterStepMatchesCpu) {
  REQUIRE_GPU();
  const ModelConfig c = tiny_config(true, true, 32, 4, 2);
  CudaTrainOptions copt;
  compare_engines(c, {37, 1, 90, 64}, /*router=*/true, /*weight_grads=*/false, copt, 31, 3e-2);
}

TEST(CudaTrainEngine, WeightGradientsMatchCpuWithTiledMlpAndHead) {
  REQUIRE_GPU();
  CudaTrainOptions copt;
  copt.mlp_chunk_rows = 7;  // tiles that do not divide the rows
  copt.head_chunk_rows = 5;
  // qwen2: q/k/v biases, untied lm_head, GQA 4, d 64; qwen3: qk norms, tied, GQA 1, d 16.
  compare_engines(tiny_config(false, false, 64, 4, 1), {23, 1, 40}, false, true, copt, 32, 3e-2);
  compare_engines(tiny_config(true, true, 16, 2, 2), {50, 13}, true, true, copt, 33, 3e-2);
}

// The fixture of train_step_test.cpp through the CUDA engine: loss terms, decisions, Omega and
// every router and multiplier gradient within 2e-2 relative (the issue's CUDA bar).
TEST(CudaTrainEngine, RouterTrainStepFixture) {
  REQUIRE_GPU();
  const std::string dir = std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/router-train-step";
  const ModelConfig c = config_load(dir);
  const WeightStore model = WeightStore::open(dir);
  const WeightStore want = WeightStore::open(dir + "/expected.safetensors");
  ParamSet<float> bb(backbone_layout(c)), rt(router_layout(c));
  params_load(bb, model);
  params_load(rt, model);
  TrainOptions opt;
  opt.ssa = ssa_small(32, 32, 96);
  opt.pool_tokens = 100;
  auto gpu = train_engine_cuda(c, std::move(bb), std::move(rt), opt);
  // The batch as train_step_run builds it (tasks 1 and 3, targets 0.7 and 1.0, T = 1.3).
  const std::vector<int64_t> tasks = {1, 3};
  const std::vector<double> targets = {0.7, 1.0};
  const int64_t S = 2, L = c.num_layers, Hkv = c.num_kv_heads;
  Batch batch;
  StepRouting routing;
  routing.temperature = 1.3;
  StepLoss loss;
  const std::vector<float> l1 = want.get("lambda1").to_f32(), l2 = want.get("lambda2").to_f32();
  loss.lambda1.assign(l1.begin(), l1.end());
  loss.lambda2.assign(l2.begin(), l2.end());
  loss.targets.assign(l1.size(), 0.0);
  int64_t labelled = 0;
  for (int64_t s = 0; s < S; ++s) {
    const std::string i = std::to_string(s);
    const std::vector<int64_t> ids = want.get("input_ids." + i).to_i64();
    const std::vector<int64_t> lab = want.get("labels." + i).to_i64();
    const std::vector<float> u = want.get("gumbel_u." + i).to_f32();
    batch.add(ids.data(), int64_t(ids.size()));
    loss.labels.insert(loss.labels.end(), lab.begin(), lab.end());
    routing.gumbel_u.insert(routing.gumbel_u.end(), u.begin(), u.end());
    for (int64_t y : lab) labelled += y != -100;
    loss.targets[size_t(tasks[size_t(s)])] = targets[size_t(s)];
    loss.task.push_back(tasks[size_t(s)]);
    loss.sample_weight.push_back(1.0 / 2.0);  // two tasks present, one sample each
  }
  loss.ce_scale = 1.0 / double(labelled);
  const StepResult r = gpu->step(batch, routing, loss);
  auto scalar = [&](const std::string& name) { return double(want.get(name).to_f32()[0]); };
  double worst = 0;
  std::string worst_name;
  auto check = [&](const std::string& name, const std::vector<float>& got) {
    const double e = rel_l2(got, want.get(name).to_f32());
    EXPECT_LE(e, 2e-2) << name;
    if (e > worst) worst = e, worst_name = name;
  };
  check("loss", {float(r.ce + r.sparsity_loss)});
  check("ce", {float(r.ce)});
  check("sparsity_loss", {float(r.sparsity_loss)});
  EXPECT_GT(scalar("ce"), 0);
  for (int64_t s = 0; s < S; ++s) {
    const std::string i = std::to_string(s);
    check("omega." + i, {float(r.omega[size_t(s)])});
    const std::vector<int64_t> dec = want.get("decisions." + i).to_i64();
    for (int64_t j = 0; j < L * Hkv; ++j)
      EXPECT_EQ(int64_t(r.decisions[size_t(s * L * Hkv + j)]), dec[size_t(j)])
          << "decisions." << i << "[" << j << "]";
  }
  const std::vector<float> g = gpu->get(ParamGroup::router, ParamState::grad);
  int compared = 0;
  for (const ParamInfo& p : gpu->layout(ParamGroup::router).tensors()) {
    check("grad." + p.name,
          std::vector<float>(g.begin() + p.offset, g.begin() + p.offset + p.numel()));
    ++compared;
  }
  check("grad.lambda1", std::vector<float>(r.d_lambda1.begin(), r.d_lambda1.end()));
  check("grad.lambda2", std::vector<float>(r.d_lambda2.begin(), r.d_lambda2.end()));
  EXPECT_EQ(compared, 30);
  std::printf("  router-train-step on CUDA: worst relative error %.2e (%s)\n", worst,
              worst_name.c_str());
}

// ---------------------------------------------------------------------------------------------
// Small shapes for compute-sanitizer (memcheck, racecheck): every training kernel once.

TEST(CudaSanitizerTrain, AttentionKernels) {
  REQUIRE_GPU();
  for (int variant : {0, 2}) {
    cuda::attention_train_set_backward_variant(variant);
    attention_case({{1, 37, 170}, 8, 2, 128, ssa_small(16, 16, 32), 41}, 1e-2, 2e-2, false);
  }
  cuda::attention_train_set_backward_variant(cuda::kAttentionTrainBackwardDefault);
  attention_case({{45, 2}, 4, 1, 64, ssa_small(16, 16, 16), 42}, 1e-2, 2e-2, false);
}

TEST(CudaSanitizerTrain, EngineStep) {
  REQUIRE_GPU();
  CudaTrainOptions copt;
  copt.mlp_chunk_rows = 16;
  copt.head_chunk_rows = 9;
  compare_engines(tiny_config(true, true, 32, 4, 2), {21, 1, 30}, true, true, copt, 43, 3e-2);
  compare_engines(tiny_config(false, false, 64, 4, 1), {19, 5}, false, true, copt, 44, 3e-2);
}

}  // namespace
}  // namespace elastic
