// The Attention Router in training (SPEC §5, §7), CPU reference: pooling, the two MLPs, the
// Gumbel-softmax decision with its straight-through gradient, and the Lagrangian sparsity loss,
// each as forward/backward. Router math runs in double whatever the parameter type T (the MLPs
// are tiny: d -> 4d -> d -> 4d -> d -> 2 per (sample, KV head)).
#pragma once

#include <cstdint>
#include <vector>

#include "elastic/batch.h"
#include "train/params.h"

namespace elastic::train {

enum class RouterPooling {
  boundary,      // mean of concat(k[:P], k[-P:]) (router_pool.h), as inference pools
  segment_mean,  // mean over the whole sample (the reference's training code)
};

// pooled: [d] for KV head `kvh` of the rows of `seq`; k: [rows, Hkv, d] (after k_norm, before
// RoPE).
template <typename T>
void router_pool_forward(double* pooled, const T* k, const BatchSeq& seq, int64_t kvh, int64_t Hkv,
                         int64_t d, int64_t pool_tokens, RouterPooling pooling);
// dk rows of `seq`, head kvh += weight(t) * dpooled.
template <typename T>
void router_pool_backward(T* dk, const double* dpooled, const BatchSeq& seq, int64_t kvh,
                          int64_t Hkv, int64_t d, int64_t pool_tokens, RouterPooling pooling);

// Saved activations of one router evaluation (pre-activations; SiLU is recomputed).
struct RouterCache {
  std::vector<double> x;   // [d]  pooled keys
  std::vector<double> h1;  // [4d] W1 x + b1
  std::vector<double> u;   // [d]  task feature W2 silu(h1) + b2
  std::vector<double> h3;  // [4d] W3 u + b3
  std::vector<double> h4;  // [d]  W4 silu(h3) + b4
  double z[2] = {0, 0};    // W5 silu(h4) + b5: logits (SA, FA)
};

// cache.x must hold the pooled keys; fills the rest and cache.z.
template <typename T>
void router_mlp_forward(RouterCache& cache, const RouterLayerParams<T>& w, int64_t d);
// dx: [d] gradient of the pooled keys (overwritten); dw: gradients (+=), may be null when only
// dx is wanted; dz: [2] gradient of the logits.
template <typename T>
void router_mlp_backward(double* dx, RouterLayerParams<T>* dw, const double dz[2],
                         const RouterCache& cache, const RouterLayerParams<T>& w, int64_t d);

// Gumbel-softmax (SPEC §5.5): g_c = -log(-log(u_c + 1e-8) + 1e-8), p = softmax((z + g) / T),
// hard decision = argmax p (ties to class 0, SA, as torch.argmax). z_FA = hard + p_FA - sg(p_FA).
struct GumbelDecision {
  double p[2] = {0, 0};  // soft probabilities (SA, FA)
  bool fa = false;       // the hard decision: retrieval mode
};
GumbelDecision gumbel_softmax_forward(const double z[2], const double u[2], double temperature);
// dz: [2] gradient of the logits from dL/dz_FA through the straight-through estimator.
void gumbel_softmax_backward(double dz[2], double dl_dzfa, const GumbelDecision& g,
                             double temperature);

// The sparsity term of one sample of task k (SPEC §7), weighted by w = 1 / (tasks present x
// samples of task k) of the global batch:  w (lambda1 |Omega - t| + lambda2 (Omega - t)^2).
struct SparsityTerm {
  double loss = 0;       // the weighted term
  double d_omega = 0;    // d loss / d Omega
  double d_lambda1 = 0;  // d loss / d lambda1[k]
  double d_lambda2 = 0;  // d loss / d lambda2[k]
};
SparsityTerm sparsity_term(double omega, double target, double lambda1, double lambda2,
                           double weight);

}  // namespace elastic::train
