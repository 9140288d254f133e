// Finite-difference checks of every backward function of the training core in float64 mode:
// each op's gradient (activations and weights) against central differences of a random linear
// functional of its output, L = sum(c * out). Step h = 1e-5 on O(1) inputs gives a truncation
// error ~h^2 and a rounding error ~1e-16 / h, so analytic and numeric agree to ~1e-9 relative;
// the bound 1e-6 leaves room while any wrong term (a missing factor, a transposed index) shows
// up as an O(1) relative error.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "elastic/config.h"
#include "train/attention_train.h"
#include "train/model_train.h"
#include "train/ops_train.h"
#include "train/router_train.h"

namespace elastic::train {
namespace {

constexpr double kH = 1e-5;
constexpr double kTol = 1e-6;

std::vector<double> randn(size_t n, uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, scale);
  std::vector<double> v(n);
  for (double& x : v) x = nd(rng);
  return v;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Checks grad (analytic dL/dx) against central differences of f at `samples` random entries of
// x (all entries when x is small). f reads x.
void check_grad(const char* what, std::vector<double>& x, const std::vector<double>& grad,
                const std::function<double()>& f, int samples = 24, uint64_t seed = 7) {
  ASSERT_EQ(x.size(), grad.size()) << what;
  std::mt19937_64 rng(seed);
  std::vector<size_t> idx;
  if (x.size() <= size_t(samples)) {
    for (size_t i = 0; i < x.size(); ++i) idx.push_back(i);
  } else {
    for (int s = 0; s < samples; ++s) idx.push_back(rng() % x.size());
  }
  double scale = 0;
  for (double g : grad) scale = std::max(scale, std::fabs(g));
  for (size_t i : idx) {
    const double x0 = x[i];
    x[i] = x0 + kH;
    const double fp = f();
    x[i] = x0 - kH;
    const double fm = f();
    x[i] = x0;
    const double num = (fp - fm) / (2 * kH);
    EXPECT_NEAR(grad[i], num, kTol * std::max(1.0, scale)) << what << " entry " << i;
  }
}

TEST(BackwardFd, RmsNorm) {
  const int64_t rows = 5, D = 7;
  std::vector<double> x = randn(rows * D, 1), w = randn(D, 2), c = randn(rows * D, 3);
  std::vector<double> out(rows * D), rstd(rows), dx(rows * D, 0), dw(D, 0);
  auto f = [&] {
    rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), rows, D, 1e-6);
    return dot(out, c);
  };
  f();
  rmsnorm_backward(dx.data(), dw.data(), c.data(), x.data(), w.data(), rstd.data(), rows, D);
  check_grad("rmsnorm dx", x, dx, f);
  check_grad("rmsnorm dw", w, dw, f);
}

TEST(BackwardFd, LinearWithBias) {
  const int64_t n = 4, N = 6, K = 5;
  std::vector<double> x = randn(n * K, 1), W = randn(N * K, 2), b = randn(N, 3),
                      c = randn(n * N, 4);
  std::vector<double> out(n * N), dx(n * K, 0), dW(N * K, 0), db(N, 0);
  auto f = [&] {
    linear_forward(out.data(), x.data(), W.data(), b.data(), n, N, K);
    return dot(out, c);
  };
  f();
  linear_backward(dx.data(), dW.data(), db.data(), c.data(), x.data(), W.data(), n, N, K);
  check_grad("linear dx", x, dx, f);
  check_grad("linear dW", W, dW, f);
  check_grad("linear db", b, db, f);
}

// RoPE backward for the three rope types (their tables differ; the rotation is shared).
TEST(BackwardFd, RopeDefaultLlama3Yarn) {
  const int64_t n = 6, H = 3, d = 8;
  for (RopeType type : {RopeType::standard, RopeType::llama3, RopeType::yarn}) {
    RopeConfig rc;
    rc.type = type;
    rc.factor = 4;
    rc.original_max_position_embeddings = 16;
    const RopeFrequencies fr = rope_frequencies(rc, d);
    std::vector<float> cs(n * d / 2), sn(n * d / 2);
    rope_table_fill(cs.data(), sn.data(), fr, 3, n);
    std::vector<double> x = randn(n * H * d, 1), c = randn(n * H * d, 2), out(n * H * d),
                        dx(n * H * d, 0);
    auto f = [&] {
      rope_forward(out.data(), x.data(), cs.data(), sn.data(), n, H, d);
      return dot(out, c);
    };
    f();
    rope_backward(dx.data(), c.data(), cs.data(), sn.data(), n, H, d);
    check_grad("rope dx", x, dx, f);
  }
}

TEST(BackwardFd, SwiGlu) {
  const int64_t rows = 3, F = 7;
  std::vector<double> g = randn(rows * F, 1, 2.0), u = randn(rows * F, 2), c = randn(rows * F, 3);
  std::vector<double> out(rows * F), dg(rows * F, 0), du(rows * F, 0);
  auto f = [&] {
    swiglu_forward(out.data(), g.data(), u.data(), rows, F);
    return dot(out, c);
  };
  f();
  swiglu_backward(dg.data(), du.data(), c.data(), g.data(), u.data(), rows, F);
  check_grad("swiglu dgate", g, dg, f);
  check_grad("swiglu dup", u, du, f);
}

TEST(BackwardFd, LmHeadCrossEntropy) {
  const int64_t rows = 5, D = 6, V = 11;
  std::vector<double> x = randn(rows * D, 1), W = randn(V * D, 2);
  const std::vector<int64_t> labels = {3, -100, 0, 10, -100};
  std::vector<double> dx(rows * D, 0), dW(V * D, 0);
  auto f = [&] {
    return lm_head_cross_entropy<double>(nullptr, nullptr, x.data(), W.data(), labels.data(), rows,
                                         D, V, 0.25);
  };
  lm_head_cross_entropy(dx.data(), dW.data(), x.data(), W.data(), labels.data(), rows, D, V, 0.25);
  check_grad("ce dx", x, dx, f);
  check_grad("ce dW", W, dW, f);
  for (int64_t e = 0; e < D; ++e) EXPECT_EQ(dx[1 * D + e], 0.0) << "unlabelled row has gradient";
}

struct AttnCase {
  int64_t Hq, Hkv, d;
  std::vector<int64_t> lengths;  // packed samples
  AttnMode mode;
};

// FA and SSA, GQA 1/4/8, odd lengths, several samples packed (length 1 included): the gradient
// never leaks across a sample boundary because each sample's rows only see their own keys.
TEST(BackwardFd, AttentionFaSsaGqaPacked) {
  const std::vector<AttnCase> cases = {
      {2, 2, 8, {13}, AttnMode::fa},        {4, 1, 8, {9, 1, 17}, AttnMode::fa},
      {8, 2, 4, {23, 5}, AttnMode::ssa},    {8, 1, 8, {1, 31}, AttnMode::ssa},
      {4, 4, 6, {11, 7, 3}, AttnMode::ssa},
  };
  uint64_t seed = 10;
  for (const AttnCase& tc : cases) {
    SCOPED_TRACE("Hq=" + std::to_string(tc.Hq) + " Hkv=" + std::to_string(tc.Hkv) +
                 " mode=" + attn_mode_name(tc.mode));
    Batch b;
    for (int64_t len : tc.lengths) {
      std::vector<int64_t> ids(size_t(len), 0);
      b.add(ids.data(), len);
    }
    const int64_t n = b.rows(), Hq = tc.Hq, Hkv = tc.Hkv, d = tc.d, S = b.num_seqs();
    std::vector<double> q = randn(n * Hq * d, ++seed), k = randn(n * Hkv * d, ++seed),
                        v = randn(n * Hkv * d, ++seed), c = randn(n * Hq * d, ++seed);
    // Mixed modes across samples and heads: the case's mode for even (s + h), the other one
    // for odd, so one call exercises both in a packed batch.
    std::vector<AttnMode> modes(size_t(S * Hkv));
    for (int64_t i = 0; i < S * Hkv; ++i)
      modes[size_t(i)] =
          (i % 2 == 0) ? tc.mode : (tc.mode == AttnMode::fa ? AttnMode::ssa : AttnMode::fa);
    AttnTrainArgs<double> a;
    a.q = q.data();
    a.k = k.data();
    a.v = v.data();
    a.seqs = b.seqs.data();
    a.num_seqs = S;
    a.modes = modes.data();
    a.num_heads = Hq;
    a.num_kv_heads = Hkv;
    a.head_dim = d;
    a.ssa.block = 4;
    a.ssa.sink_tokens = 4;
    a.ssa.local_tokens = 8;
    std::vector<double> out(n * Hq * d), lse(n * Hq);
    auto f = [&] {
      attention_train_forward(out.data(), lse.data(), a);
      return dot(out, c);
    };
    f();
    std::vector<double> dq(q.size(), 0), dk(k.size(), 0), dv(v.size(), 0);
    attention_train_backward(dq.data(), dk.data(), dv.data(), c.data(), out.data(), lse.data(), a);
    check_grad("attention dq", q, dq, f, 40);
    check_grad("attention dk", k, dk, f, 40);
    check_grad("attention dv", v, dv, f, 40);
  }
}

TEST(BackwardFd, RouterPoolingAndMlp) {
  const int64_t d = 4, Hkv = 2;
  ModelConfig cfg;
  cfg.num_layers = 1;
  cfg.head_dim = d;
  ParamSet<double> w(router_layout(cfg)), g(router_layout(cfg));
  w.data = randn(size_t(w.layout.total()), 5, 0.5);
  const RouterLayerParams<double> W = router_bind(w, cfg)[0];
  RouterLayerParams<double> G = router_bind(g, cfg)[0];
  Batch b;
  std::vector<int64_t> ids(300, 0);
  b.add(ids.data(), 40);   // n <= P
  b.add(ids.data(), 150);  // P < n < 2P: overlapping ranges
  b.add(ids.data(), 300);  // disjoint ranges
  std::vector<double> k = randn(size_t(b.rows() * Hkv * d), 6);
  const double cz[2] = {0.7, -1.3};
  for (RouterPooling pooling : {RouterPooling::boundary, RouterPooling::segment_mean})
    for (int64_t s = 0; s < b.num_seqs(); ++s) {
      const int64_t kvh = s % Hkv;
      auto f = [&] {
        RouterCache rc;
        rc.x.resize(d);
        router_pool_forward(rc.x.data(), k.data(), b.seqs[size_t(s)], kvh, Hkv, d, 100, pooling);
        router_mlp_forward(rc, W, d);
        return cz[0] * rc.z[0] + cz[1] * rc.z[1];
      };
      RouterCache rc;
      rc.x.resize(d);
      router_pool_forward(rc.x.data(), k.data(), b.seqs[size_t(s)], kvh, Hkv, d, 100, pooling);
      router_mlp_forward(rc, W, d);
      g.zero();
      std::vector<double> dx(d), dk(k.size(), 0);
      router_mlp_backward(dx.data(), &G, cz, rc, W, d);
      router_pool_backward(dk.data(), dx.data(), b.seqs[size_t(s)], kvh, Hkv, d, 100, pooling);
      check_grad("router weights", w.data, g.data, f, 60);
      check_grad("pooled keys", k, dk, f, 60);
    }
}

// The straight-through gradient dL/dz of z_FA is exactly d p_FA / d logits.
TEST(BackwardFd, GumbelSoftmaxStraightThrough) {
  std::vector<double> z = {0.3, -0.8};
  const double u[2] = {0.31, 0.77}, T = 1.3;
  auto f = [&] { return gumbel_softmax_forward(z.data(), u, T).p[1]; };
  const GumbelDecision gd = gumbel_softmax_forward(z.data(), u, T);
  std::vector<double> dz(2);
  gumbel_softmax_backward(dz.data(), 1.0, gd, T);
  check_grad("gumbel dz", z, dz, f);
}

// Away from the kink of |Omega - t| (at Omega = t the gradient is 0, as torch.abs'). The target
// is a constant of the loss.
TEST(BackwardFd, SparsityTerm) {
  const double target = 0.7;
  std::vector<double> p = {0.55, 0.3, 0.5};  // omega, lambda1, lambda2
  auto f = [&] { return sparsity_term(p[0], target, p[1], p[2], 0.25).loss; };
  const SparsityTerm t = sparsity_term(p[0], target, p[1], p[2], 0.25);
  check_grad("sparsity term", p, {t.d_omega, t.d_lambda1, t.d_lambda2}, f);
}

// A whole model (both qk-norm / bias variants, tied and untied heads) with fixed routing
// (decisions are hard, so only a fixed assignment makes the loss differentiable in every
// weight): every weight tensor's gradient at random entries, on a packed batch with FA and SSA
// heads.
ModelConfig tiny_config(bool qwen3, bool tied) {
  const std::string json = std::string(R"({"model_type": ")") + (qwen3 ? "qwen3" : "qwen2") +
                           R"(", "vocab_size": 19, "hidden_size": 12, "intermediate_size": 10,
      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 6,
      "rms_norm_eps": 1e-6, "max_position_embeddings": 64, "rope_theta": 10000.0,
      "tie_word_embeddings": )" +
                           (tied ? "true" : "false") + "}";
  return config_parse(json, "tiny");
}

TEST(BackwardFd, WholeModelWeightGradientsFixedRouting) {
  for (bool qwen3 : {true, false})
    for (bool tied : {true, false}) {
      SCOPED_TRACE(std::string(qwen3 ? "qwen3" : "qwen2") + (tied ? " tied" : " untied"));
      const ModelConfig c = tiny_config(qwen3, tied);
      ParamSet<double> bb(backbone_layout(c));
      bb.data = randn(size_t(bb.layout.total()), 3, 0.4);
      for (const ParamInfo& p : bb.layout.tensors())  // norms near 1
        if (p.name.find("norm") != std::string::npos)
          for (int64_t i = 0; i < p.numel(); ++i) bb.data[size_t(p.offset + i)] += 1.0;
      TrainModel<double> m(c, std::move(bb), ParamSet<double>());
      Batch b;
      const std::vector<int64_t> s0 = {1, 5, 7, 2, 9, 11, 3, 4, 18, 0, 6}, s1 = {8, 8, 3, 12, 14};
      b.add(s0.data(), int64_t(s0.size()));
      b.add(s1.data(), int64_t(s1.size()));
      StepRouting r;
      r.router = false;
      r.fixed = {1, 0, 0, 1, 0, 1, 1, 1};  // [S=2, L=2, Hkv=2]
      StepLoss loss;
      loss.labels.assign(size_t(b.rows()), -100);
      for (size_t i = 0; i + 1 < s0.size(); ++i) loss.labels[i] = s0[i + 1];
      for (size_t i = 0; i + 1 < s1.size(); ++i) loss.labels[s0.size() + i] = s1[i + 1];
      loss.ce_scale = 1.0 / 14;
      loss.task = {0, 0};
      loss.sample_weight = {0, 0};
      TrainOptions opt;
      opt.ssa.block = 2;
      opt.ssa.sink_tokens = 2;
      opt.ssa.local_tokens = 4;
      opt.weight_grads = true;
      opt.router_grads = false;
      Gradients<double> g = m.gradients(opt);
      m.step(b, r, loss, opt, &g);
      auto f = [&] { return m.step(b, r, loss, opt, nullptr).ce; };
      for (const ParamInfo& p : m.backbone().layout.tensors()) {
        std::vector<double> sub(m.backbone().data.begin() + p.offset,
                                m.backbone().data.begin() + p.offset + p.numel());
        const std::vector<double> gsub(g.backbone.data.begin() + p.offset,
                                       g.backbone.data.begin() + p.offset + p.numel());
        auto fp = [&] {
          std::copy(sub.begin(), sub.end(), m.backbone().data.begin() + p.offset);
          return f();
        };
        check_grad(p.name.c_str(), sub, gsub, fp, 6);
        std::copy(sub.begin(), sub.end(), m.backbone().data.begin() + p.offset);
      }
    }
}

}  // namespace
}  // namespace elastic::train
