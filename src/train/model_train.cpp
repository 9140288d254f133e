// TrainModel (model_train.h): the layer loop of the training forward and its mirror backward.
#include "train/model_train.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "elastic/error.h"
#include "train/attention_train.h"
#include "train/ops_train.h"

namespace elastic::train {

// Activations of one layer over the batch (recomputed in the backward).
template <typename T>
struct TrainModel<T>::LayerActs {
  std::vector<T> xn1, rstd1;       // [rows, D], [rows]
  std::vector<T> q_raw, k_raw, v;  // [rows, Hq d], [rows, Hkv d] x2 after the projection
  std::vector<T> q_n, rstd_q;      // [rows, Hq, d] after q_norm (= q_raw without), [rows Hq]
  std::vector<T> k_n, rstd_k;      // [rows, Hkv, d] after k_norm: the router's input
  std::vector<T> q, k;             // after RoPE
  std::vector<T> o_fa, lse_fa;     // [rows, Hq, d], [rows, Hq] every head FA (router)
  std::vector<T> o_sa, lse_sa;     // every head SSA (router)
  std::vector<T> att, lse;         // each head in its chosen mode
  std::vector<T> x_mid;            // [rows, D] residual after attention
  std::vector<T> xn2, rstd2;       // [rows, D], [rows]
  std::vector<T> gate, up, act;    // [rows, F]
};

// Routing of one layer for every (sample, KV head), from the forward pass.
template <typename T>
struct TrainModel<T>::LayerRouting {
  std::vector<AttnMode> modes;         // [S, Hkv] chosen mode
  std::vector<GumbelDecision> gumbel;  // [S, Hkv] (router)
  std::vector<RouterCache> cache;      // [S, Hkv] (router)
  std::vector<double> dl_dzfa;         // [S, Hkv] dL/dz_FA, filled by the backward
};

template <typename T>
struct TrainModel<T>::BatchContext {
  const Batch* batch = nullptr;
  int64_t rows = 0, S = 0;
  std::vector<float> cos, sin;  // [rows, d/2] by each row's position
};

namespace {

template <typename T>
void resize(std::vector<T>& v, int64_t n) {
  v.assign(static_cast<size_t>(n), T(0));
}

}  // namespace

void sparsity_loss_apply(StepResult& out, const StepLoss& loss, int64_t S, int64_t L, int64_t Hkv,
                         const std::function<void(int64_t s, double d_omega)>& omega_grad) {
  const int64_t K = static_cast<int64_t>(loss.targets.size());
  out.d_lambda1.assign(size_t(K), 0.0);
  out.d_lambda2.assign(size_t(K), 0.0);
  out.omega.assign(size_t(S), 0.0);
  out.sparsity_loss = 0;
  for (int64_t s = 0; s < S; ++s) {
    double fa = 0;
    for (int64_t i = 0; i < L * Hkv; ++i) fa += out.decisions[size_t(s * L * Hkv + i)];
    out.omega[size_t(s)] = 1.0 - fa / static_cast<double>(L * Hkv);
    const double weight = loss.sample_weight[size_t(s)];
    if (weight == 0) continue;
    const int64_t k = loss.task[size_t(s)];
    ELASTIC_CHECK(k >= 0 && k < K);
    const SparsityTerm t = sparsity_term(out.omega[size_t(s)], loss.targets[size_t(k)],
                                         loss.lambda1[size_t(k)], loss.lambda2[size_t(k)], weight);
    out.sparsity_loss += t.loss;
    out.d_lambda1[size_t(k)] += t.d_lambda1;
    out.d_lambda2[size_t(k)] += t.d_lambda2;
    omega_grad(s, t.d_omega);
  }
}

template <typename T>
TrainModel<T>::TrainModel(const ModelConfig& c, ParamSet<T> backbone, ParamSet<T> router)
    : config_(c),
      rope_(rope_frequencies(c.rope, c.head_dim)),
      backbone_(std::move(backbone)),
      router_(std::move(router)) {
  ELASTIC_CHECK(backbone_.layout.total() == backbone_layout(c).total());
  W_ = backbone_bind(backbone_, c);
  if (router_.layout.total() > 0) R_ = router_bind(router_, c);
}

template <typename T>
Gradients<T> TrainModel<T>::gradients(const TrainOptions& o) const {
  Gradients<T> g;
  if (o.router_grads && router_.layout.total() > 0) g.router = ParamSet<T>(router_.layout);
  if (o.weight_grads) g.backbone = ParamSet<T>(backbone_.layout);
  return g;
}

void step_inputs_check(const ModelConfig& c, const Batch& batch, const StepRouting& routing,
                       const StepLoss& loss, bool has_router) {
  batch_validate(batch);
  const int64_t n = batch.rows(), S = batch.num_seqs(), L = c.num_layers, Hkv = c.num_kv_heads;
  for (int64_t s = 0; s < S; ++s)
    if (batch.seqs[size_t(s)].pos0 != 0)
      throw Error("training batch: sequence " + std::to_string(s) + " starts at position " +
                  std::to_string(batch.seqs[size_t(s)].pos0) + " (samples start at 0)");
  ELASTIC_CHECK(static_cast<int64_t>(loss.labels.size()) == n);
  ELASTIC_CHECK(static_cast<int64_t>(loss.task.size()) == S &&
                static_cast<int64_t>(loss.sample_weight.size()) == S);
  if (routing.router) {
    if (!has_router) throw Error("router training step on a model without router weights");
    ELASTIC_CHECK(static_cast<int64_t>(routing.gumbel_u.size()) == S * L * Hkv * 2);
    ELASTIC_CHECK(routing.temperature > 0);
  } else {
    ELASTIC_CHECK(static_cast<int64_t>(routing.fixed.size()) == S * L * Hkv);
  }
}

template <typename T>
AttnTrainArgs<T> TrainModel<T>::attention_args(const LayerActs& a, const BatchContext& ctx,
                                               const TrainOptions& opt) const {
  AttnTrainArgs<T> at;  // modes: set by the caller
  at.q = a.q.data();
  at.k = a.k.data();
  at.v = a.v.data();
  at.seqs = ctx.batch->seqs.data();
  at.num_seqs = ctx.S;
  at.num_heads = config_.num_heads;
  at.num_kv_heads = config_.num_kv_heads;
  at.head_dim = config_.head_dim;
  at.ssa = opt.ssa;
  return at;
}

template <typename T>
void TrainModel<T>::layer_forward(int64_t l, const T* x_in, T* x_out, LayerActs& a, LayerRouting& r,
                                  bool decide, const BatchContext& ctx, const StepRouting& routing,
                                  const TrainOptions& opt) {
  const ModelConfig& c = config_;
  const LayerParams<T>& w = W_.layers[size_t(l)];
  const int64_t n = ctx.rows, S = ctx.S, D = c.hidden_size, F = c.intermediate_size;
  const int64_t Hq = c.num_heads, Hkv = c.num_kv_heads, d = c.head_dim, L = c.num_layers;
  const double eps = c.rms_norm_eps;
  resize(a.xn1, n * D), resize(a.rstd1, n);
  rmsnorm_forward(a.xn1.data(), a.rstd1.data(), x_in, w.input_norm, n, D, eps);
  resize(a.q_raw, n * Hq * d), resize(a.k_raw, n * Hkv * d), resize(a.v, n * Hkv * d);
  linear_forward(a.q_raw.data(), a.xn1.data(), w.wq, w.bq, n, Hq * d, D);
  linear_forward(a.k_raw.data(), a.xn1.data(), w.wk, w.bk, n, Hkv * d, D);
  linear_forward(a.v.data(), a.xn1.data(), w.wv, w.bv, n, Hkv * d, D);
  if (w.q_norm) {
    resize(a.q_n, n * Hq * d), resize(a.rstd_q, n * Hq);
    rmsnorm_forward(a.q_n.data(), a.rstd_q.data(), a.q_raw.data(), w.q_norm, n * Hq, d, eps);
    resize(a.k_n, n * Hkv * d), resize(a.rstd_k, n * Hkv);
    rmsnorm_forward(a.k_n.data(), a.rstd_k.data(), a.k_raw.data(), w.k_norm, n * Hkv, d, eps);
  } else {
    a.q_n = a.q_raw;
    a.k_n = a.k_raw;
  }

  if (decide) {  // routing of every (sample, KV head) from the keys before RoPE
    r.modes.assign(size_t(S * Hkv), AttnMode::fa);
    r.dl_dzfa.assign(size_t(S * Hkv), 0.0);
    if (routing.router) {
      r.gumbel.assign(size_t(S * Hkv), GumbelDecision{});
      r.cache.assign(size_t(S * Hkv), RouterCache{});
#pragma omp parallel for schedule(dynamic, 1)
      for (int64_t i = 0; i < S * Hkv; ++i) {
        const int64_t s = i / Hkv, h = i % Hkv;
        RouterCache& rc = r.cache[size_t(i)];
        rc.x.resize(size_t(d));
        router_pool_forward(rc.x.data(), a.k_n.data(), ctx.batch->seqs[size_t(s)], h, Hkv, d,
                            opt.pool_tokens, opt.pooling);
        router_mlp_forward(rc, R_[size_t(l)], d);
        const double* u = routing.gumbel_u.data() + ((s * L + l) * Hkv + h) * 2;
        r.gumbel[size_t(i)] = gumbel_softmax_forward(rc.z, u, routing.temperature);
        r.modes[size_t(i)] = r.gumbel[size_t(i)].fa ? AttnMode::fa : AttnMode::ssa;
      }
    } else {
      for (int64_t i = 0; i < S * Hkv; ++i) {
        const int64_t s = i / Hkv, h = i % Hkv;
        r.modes[size_t(i)] =
            routing.fixed[size_t((s * L + l) * Hkv + h)] ? AttnMode::fa : AttnMode::ssa;
      }
    }
  }

  resize(a.q, n * Hq * d), resize(a.k, n * Hkv * d);
  rope_forward(a.q.data(), a.q_n.data(), ctx.cos.data(), ctx.sin.data(), n, Hq, d);
  rope_forward(a.k.data(), a.k_n.data(), ctx.cos.data(), ctx.sin.data(), n, Hkv, d);

  AttnTrainArgs<T> at = attention_args(a, ctx, opt);
  resize(a.att, n * Hq * d), resize(a.lse, n * Hq);
  if (routing.router) {  // both outputs of every head (dL/dz needs them), then the chosen one
    const std::vector<AttnMode> all_fa(static_cast<size_t>(S * Hkv), AttnMode::fa),
        all_sa(size_t(S * Hkv), AttnMode::ssa);
    resize(a.o_fa, n * Hq * d), resize(a.lse_fa, n * Hq);
    resize(a.o_sa, n * Hq * d), resize(a.lse_sa, n * Hq);
    at.modes = all_fa.data();
    attention_train_forward(a.o_fa.data(), a.lse_fa.data(), at);
    at.modes = all_sa.data();
    attention_train_forward(a.o_sa.data(), a.lse_sa.data(), at);
    const int64_t G = Hq / Hkv;
    for (int64_t s = 0; s < S; ++s) {
      const BatchSeq& seq = ctx.batch->seqs[size_t(s)];
      for (int64_t h = 0; h < Hkv; ++h) {
        const bool fa = r.modes[size_t(s * Hkv + h)] == AttnMode::fa;
        const std::vector<T>& o = fa ? a.o_fa : a.o_sa;
        const std::vector<T>& ls = fa ? a.lse_fa : a.lse_sa;
        for (int64_t t = seq.begin; t < seq.end(); ++t)
          for (int64_t hq = h * G; hq < (h + 1) * G; ++hq) {
            std::copy_n(o.data() + (t * Hq + hq) * d, d, a.att.data() + (t * Hq + hq) * d);
            a.lse[size_t(t * Hq + hq)] = ls[size_t(t * Hq + hq)];
          }
      }
    }
  } else {
    at.modes = r.modes.data();
    attention_train_forward(a.att.data(), a.lse.data(), at);
  }

  resize(a.x_mid, n * D);
  linear_forward(a.x_mid.data(), a.att.data(), w.wo, w.bo, n, D, Hq * d);
  residual_forward(a.x_mid.data(), x_in, n * D);
  resize(a.xn2, n * D), resize(a.rstd2, n);
  rmsnorm_forward(a.xn2.data(), a.rstd2.data(), a.x_mid.data(), w.post_norm, n, D, eps);
  resize(a.gate, n * F), resize(a.up, n * F), resize(a.act, n * F);
  linear_forward(a.gate.data(), a.xn2.data(), w.w_gate, static_cast<const T*>(nullptr), n, F, D);
  linear_forward(a.up.data(), a.xn2.data(), w.w_up, static_cast<const T*>(nullptr), n, F, D);
  swiglu_forward(a.act.data(), a.gate.data(), a.up.data(), n, F);
  linear_forward(x_out, a.act.data(), w.w_down, static_cast<const T*>(nullptr), n, D, F);
  residual_forward(x_out, a.x_mid.data(), n * D);
}

template <typename T>
void TrainModel<T>::layer_backward(int64_t l, const T* x_in, T* dx, LayerActs& a,
                                   const LayerRouting& r, const BatchContext& ctx,
                                   const StepRouting& routing, const TrainOptions& opt,
                                   Gradients<T>* grads) {
  const ModelConfig& c = config_;
  const LayerParams<T>& w = W_.layers[size_t(l)];
  const int64_t n = ctx.rows, S = ctx.S, D = c.hidden_size, F = c.intermediate_size;
  const int64_t Hq = c.num_heads, Hkv = c.num_kv_heads, d = c.head_dim, G = Hq / Hkv;
  LayerParams<T> g;  // weight gradients, null when off
  if (grads && opt.weight_grads) g = backbone_bind(grads->backbone, c).layers[size_t(l)];

  // MLP: x_out = x_mid + down(act); dx holds dL/dx_out and becomes dL/dx_mid.
  std::vector<T> dact(static_cast<size_t>(n * F), T(0)), dgate(static_cast<size_t>(n * F), T(0)),
      dup(static_cast<size_t>(n * F), T(0));
  linear_backward(dact.data(), g.w_down, static_cast<T*>(nullptr), dx, a.act.data(), w.w_down, n, D,
                  F);
  swiglu_backward(dgate.data(), dup.data(), dact.data(), a.gate.data(), a.up.data(), n, F);
  std::vector<T> dxn(static_cast<size_t>(n * D), T(0));
  linear_backward(dxn.data(), g.w_gate, static_cast<T*>(nullptr), dgate.data(), a.xn2.data(),
                  w.w_gate, n, F, D);
  linear_backward(dxn.data(), g.w_up, static_cast<T*>(nullptr), dup.data(), a.xn2.data(), w.w_up, n,
                  F, D);
  rmsnorm_backward(dx, g.post_norm, dxn.data(), a.x_mid.data(), w.post_norm, a.rstd2.data(), n, D);

  // Attention output projection: x_mid = x_in + att Wo^T (+ bo).
  std::vector<T> datt(static_cast<size_t>(n * Hq * d), T(0));
  linear_backward(datt.data(), g.wo, g.bo, dx, a.att.data(), w.wo, n, D, Hq * d);

  // dL/dz_FA through the mixture att = z O_FA + (1 - z) O_SA, plus the Omega path (already in
  // r.dl_dzfa), then the router's backward into its weights and the pooled keys.
  std::vector<T> dk_n(static_cast<size_t>(n * Hkv * d), T(0));
  if (!r.gumbel.empty()) {
    std::vector<double> dzfa(r.dl_dzfa);
    for (int64_t s = 0; s < S; ++s) {
      const BatchSeq& seq = ctx.batch->seqs[size_t(s)];
      for (int64_t h = 0; h < Hkv; ++h) {
        double acc = 0;
        for (int64_t t = seq.begin; t < seq.end(); ++t)
          for (int64_t hq = h * G; hq < (h + 1) * G; ++hq) {
            const size_t base = size_t((t * Hq + hq) * d);
            for (int64_t e = 0; e < d; ++e)
              acc += static_cast<double>(datt[base + e]) * (a.o_fa[base + e] - a.o_sa[base + e]);
          }
        dzfa[size_t(s * Hkv + h)] += acc;
      }
    }
    std::vector<RouterLayerParams<T>> rg;
    if (grads && opt.router_grads) rg = router_bind(grads->router, c);
    std::vector<double> dpooled(static_cast<size_t>(d));
    // serial over (sample, KV head): the router's weight gradients accumulate
    for (int64_t i = 0; i < S * Hkv; ++i) {
      const int64_t s = i / Hkv, h = i % Hkv;
      double dz[2];
      gumbel_softmax_backward(dz, dzfa[size_t(i)], r.gumbel[size_t(i)], routing.temperature);
      router_mlp_backward(dpooled.data(), rg.empty() ? nullptr : &rg[size_t(l)], dz,
                          r.cache[size_t(i)], R_[size_t(l)], d);
      router_pool_backward(dk_n.data(), dpooled.data(), ctx.batch->seqs[size_t(s)], h, Hkv, d,
                           opt.pool_tokens, opt.pooling);
    }
  }

  // Attention in each head's chosen mode.
  std::vector<T> dq(static_cast<size_t>(n * Hq * d), T(0)),
      dk(static_cast<size_t>(n * Hkv * d), T(0)), dv(size_t(n * Hkv * d), T(0));
  AttnTrainArgs<T> at = attention_args(a, ctx, opt);
  at.modes = r.modes.data();
  attention_train_backward(dq.data(), dk.data(), dv.data(), datt.data(), a.att.data(), a.lse.data(),
                           at);
  std::vector<T> dq_n(static_cast<size_t>(n * Hq * d), T(0));
  rope_backward(dq_n.data(), dq.data(), ctx.cos.data(), ctx.sin.data(), n, Hq, d);
  rope_backward(dk_n.data(), dk.data(), ctx.cos.data(), ctx.sin.data(), n, Hkv, d);

  // q/k norms, then the projections.
  std::vector<T> dq_raw, dk_raw;
  if (w.q_norm) {
    dq_raw.assign(size_t(n * Hq * d), T(0));
    dk_raw.assign(size_t(n * Hkv * d), T(0));
    rmsnorm_backward(dq_raw.data(), g.q_norm, dq_n.data(), a.q_raw.data(), w.q_norm,
                     a.rstd_q.data(), n * Hq, d);
    rmsnorm_backward(dk_raw.data(), g.k_norm, dk_n.data(), a.k_raw.data(), w.k_norm,
                     a.rstd_k.data(), n * Hkv, d);
  } else {
    dq_raw = std::move(dq_n);
    dk_raw = std::move(dk_n);
  }
  std::fill(dxn.begin(), dxn.end(), T(0));
  linear_backward(dxn.data(), g.wq, g.bq, dq_raw.data(), a.xn1.data(), w.wq, n, Hq * d, D);
  linear_backward(dxn.data(), g.wk, g.bk, dk_raw.data(), a.xn1.data(), w.wk, n, Hkv * d, D);
  linear_backward(dxn.data(), g.wv, g.bv, dv.data(), a.xn1.data(), w.wv, n, Hkv * d, D);
  // x_mid = x_in + ...: dx (dL/dx_mid) flows to x_in unchanged, plus the input norm's share.
  rmsnorm_backward(dx, g.input_norm, dxn.data(), x_in, w.input_norm, a.rstd1.data(), n, D);
}

template <typename T>
StepResult TrainModel<T>::step(const Batch& batch, const StepRouting& routing, const StepLoss& loss,
                               const TrainOptions& opt, Gradients<T>* grads) {
  const ModelConfig& c = config_;
  step_inputs_check(c, batch, routing, loss, !R_.empty());
  const int64_t n = batch.rows(), S = batch.num_seqs(), D = c.hidden_size, V = c.vocab_size;
  const int64_t L = c.num_layers, Hkv = c.num_kv_heads, d = c.head_dim;
  if (grads && opt.router_grads && routing.router)
    ELASTIC_CHECK(grads->router.layout.total() == router_.layout.total());
  if (grads && opt.weight_grads)
    ELASTIC_CHECK(grads->backbone.layout.total() == backbone_.layout.total());

  BatchContext ctx;
  ctx.batch = &batch;
  ctx.rows = n;
  ctx.S = S;
  ctx.cos.resize(size_t(n * d / 2));
  ctx.sin.resize(size_t(n * d / 2));
  for (const BatchSeq& seq : batch.seqs)
    rope_table_fill(ctx.cos.data() + seq.begin * d / 2, ctx.sin.data() + seq.begin * d / 2, rope_,
                    seq.pos0, seq.length);

  // Forward: the residual stream entering every layer is kept, x: [L + 1, n, D].
  std::vector<T> x(static_cast<size_t>((L + 1) * n * D));
  embedding_forward(x.data(), batch.tokens.data(), n, W_.embed, V, D);
  LayerActs acts;
  std::vector<LayerRouting> routes(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l)
    layer_forward(l, x.data() + l * n * D, x.data() + (l + 1) * n * D, acts, routes[size_t(l)],
                  /*decide=*/true, ctx, routing, opt);

  StepResult out;
  out.decisions.resize(size_t(S * L * Hkv));
  if (routing.router) out.router_logits.resize(size_t(S * L * Hkv * 2));
  for (int64_t s = 0; s < S; ++s)
    for (int64_t l = 0; l < L; ++l)
      for (int64_t h = 0; h < Hkv; ++h) {
        const size_t i = size_t(s * Hkv + h), o = size_t((s * L + l) * Hkv + h);
        out.decisions[o] = routes[size_t(l)].modes[i] == AttnMode::fa;
        if (routing.router) {
          out.router_logits[2 * o] = routes[size_t(l)].cache[i].z[0];
          out.router_logits[2 * o + 1] = routes[size_t(l)].cache[i].z[1];
        }
      }

  // Output head and CE: dx = dL/dx_L.
  std::vector<T> xf(static_cast<size_t>(n * D)), rstd_f(static_cast<size_t>(n)),
      dxf(static_cast<size_t>(n * D), T(0));
  rmsnorm_forward(xf.data(), rstd_f.data(), x.data() + L * n * D, W_.final_norm, n, D,
                  c.rms_norm_eps);
  BackboneParams<T> gb;  // weight gradients (null pointers when off)
  if (grads && opt.weight_grads) gb = backbone_bind(grads->backbone, c);
  out.ce = lm_head_cross_entropy(grads ? dxf.data() : static_cast<T*>(nullptr), gb.lm_head,
                                 xf.data(), W_.lm_head, loss.labels.data(), n, D, V, loss.ce_scale);

  // Omega per sample and the sparsity loss; its gradient enters every z_FA of the sample.
  sparsity_loss_apply(out, loss, S, L, Hkv, [&](int64_t s, double d_omega) {
    if (routing.router)  // Omega = 1 - mean z_FA: d Omega / d z_FA = -1 / (L Hkv)
      for (int64_t l = 0; l < L; ++l)
        for (int64_t h = 0; h < Hkv; ++h)
          routes[size_t(l)].dl_dzfa[size_t(s * Hkv + h)] -= d_omega / static_cast<double>(L * Hkv);
  });
  if (!grads) return out;

  // Backward, last layer first, each layer recomputed from its stored input.
  std::vector<T> dx(static_cast<size_t>(n * D), T(0)), scratch(static_cast<size_t>(n * D));
  rmsnorm_backward(dx.data(), gb.final_norm, dxf.data(), x.data() + L * n * D, W_.final_norm,
                   rstd_f.data(), n, D);
  for (int64_t l = L - 1; l >= 0; --l) {
    const T* x_in = x.data() + l * n * D;
    layer_forward(l, x_in, scratch.data(), acts, routes[size_t(l)], /*decide=*/false, ctx, routing,
                  opt);
    layer_backward(l, x_in, dx.data(), acts, routes[size_t(l)], ctx, routing, opt, grads);
  }
  if (gb.embed) embedding_backward(gb.embed, dx.data(), batch.tokens.data(), n, D);
  return out;
}

template class TrainModel<float>;
template class TrainModel<double>;

}  // namespace elastic::train
