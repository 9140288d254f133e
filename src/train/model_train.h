// The training forward and backward of a decoder (Llama 3 / Qwen3 / Qwen2) with Elastic
// Attention on a packed batch, CPU reference (T = float; T = double for finite differences).
//
//   x_0 = embed(tokens)
//   per layer l: xn = rmsnorm(x_l); q, k, v = xn W^T (+b); q, k = q/k-norm (qwen3)
//                z[s, h] = router(pool(k[s, :, h]))  with Gumbel noise (or fixed modes)
//                q, k = rope(q, k); O_FA, O_SA = attention(all heads FA), attention(all SSA)
//                att = z O_FA + (1 - z) O_SA  (per sample s and KV head h; z hard 0/1)
//                x_mid = x_l + att Wo^T; x_{l+1} = x_mid + down(silu(gate(xn2)) * up(xn2))
//   loss = CE(lm_head(rmsnorm(x_L)), labels) + sum_s w_s (lambda1 |Omega_s - t| + lambda2 (..)^2)
//
// Activations: only the residual stream entering every layer is stored ([L + 1, rows, D]); the
// backward recomputes one layer at a time into one scratch set (activation checkpointing, the
// same schedule the CUDA trainer uses), reusing the routing decisions of the forward. With hard
// z, the attention backward runs only in each head's chosen mode; dL/dz needs both outputs:
//   dL/dz_FA[s, h] = sum over the rows of s and the query heads of h of dL/datt . (O_FA - O_SA)
//                    - dL/dOmega_s / (L Hkv).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "elastic/attention.h"
#include "elastic/batch.h"
#include "elastic/config.h"
#include "elastic/cpu_ops.h"
#include "train/attention_train.h"
#include "train/params.h"
#include "train/router_train.h"

namespace elastic::train {

struct TrainOptions {
  SsaOptions ssa;             // block, sink and local window of the sparse mode (SSA)
  int64_t pool_tokens = 100;  // router pooling P
  RouterPooling pooling = RouterPooling::boundary;
  bool weight_grads = false;  // backbone weight gradients (pretraining); activations always
  bool router_grads = true;   // router parameter gradients
};

// How the KV heads of one step are routed.
struct StepRouting {
  bool router = true;            // the Attention Router with Gumbel noise, else `fixed`
  std::vector<double> gumbel_u;  // [S, L, Hkv, 2] uniforms in [0, 1) (router)
  double temperature = 1.0;      // Gumbel-softmax temperature (router)
  std::vector<uint8_t> fixed;    // [S, L, Hkv] 1 = retrieval (FA), 0 = sparse (SSA) (!router)
};

// The loss of one micro-batch as its share of the global batch's loss: the CE is divided by the
// labelled tokens of the global batch, the sparsity term weighted per sample by
// 1 / (tasks present in the global batch x samples of the sample's task in it).
struct StepLoss {
  std::vector<int64_t> labels;           // [rows] next-token labels, -100 = ignored
  double ce_scale = 0;                   // 1 / labelled tokens of the global batch
  std::vector<int64_t> task;             // [S] task id of every sample
  std::vector<double> sample_weight;     // [S] weight of its sparsity term (0 = none)
  std::vector<double> targets;           // [K] target Omega per task
  std::vector<double> lambda1, lambda2;  // [K] multipliers
};

struct StepResult {
  double ce = 0;                             // share of the CE: sum of token losses x ce_scale
  double sparsity_loss = 0;                  // share of the sparsity loss
  std::vector<double> omega;                 // [S] Omega_MSR of every sample (1 - mean z_FA)
  std::vector<uint8_t> decisions;            // [S, L, Hkv] 1 = retrieval
  std::vector<double> router_logits;         // [S, L, Hkv, 2] (SA, FA) before noise (router)
  std::vector<double> d_lambda1, d_lambda2;  // [K] d loss / d lambda (ascent direction)
};

// Omega of every sample (1 - mean z_FA over its layers and KV heads, from out.decisions
// [S, L, Hkv]), the weighted sparsity loss and the multipliers' gradients, into `out`.
// omega_grad(s, g) is called for every sample with a sparsity term, g = d loss / d Omega_s (the
// router path adds -g / (L Hkv) to each of the sample's dL/dz_FA). Shared by every engine.
void sparsity_loss_apply(StepResult& out, const StepLoss& loss, int64_t S, int64_t L, int64_t Hkv,
                         const std::function<void(int64_t s, double d_omega)>& omega_grad);

// Checks the inputs of one step against the model shape, as every engine reads them: whole
// samples (pos0 = 0), one label per row, one task and weight per sample, the Gumbel uniforms
// [S, L, Hkv, 2] of a router step (with router weights) or the fixed modes [S, L, Hkv].
// Throws elastic::Error for bad input, ELASTIC_CHECK for a caller's shape bug.
void step_inputs_check(const ModelConfig& c, const Batch& batch, const StepRouting& routing,
                       const StepLoss& loss, bool has_router);

template <typename T>
struct Gradients {
  ParamSet<T> router;    // router layout (zero-size when router_grads is off)
  ParamSet<T> backbone;  // backbone layout (zero-size unless weight_grads)
};

template <typename T>
class TrainModel {
 public:
  // backbone: backbone_layout(config); router: router_layout(config) (may be empty when every
  // step uses fixed routing).
  TrainModel(const ModelConfig& config, ParamSet<T> backbone, ParamSet<T> router);
  TrainModel(const TrainModel&) = delete;  // W_ and R_ point into the parameter sets
  TrainModel& operator=(const TrainModel&) = delete;

  const ModelConfig& config() const { return config_; }
  ParamSet<T>& backbone() { return backbone_; }
  ParamSet<T>& router() { return router_; }
  const ParamSet<T>& backbone() const { return backbone_; }
  const ParamSet<T>& router() const { return router_; }
  Gradients<T> gradients(const TrainOptions& o) const;  // zeroed, in the right layouts

  // Forward + backward of one packed batch; gradients are ADDED to `grads` (null: forward only).
  // Every sequence of `batch` is a whole sample (pos0 = 0).
  StepResult step(const Batch& batch, const StepRouting& routing, const StepLoss& loss,
                  const TrainOptions& opt, Gradients<T>* grads);

 private:
  struct LayerActs;
  struct LayerRouting;
  struct BatchContext;
  void layer_forward(int64_t l, const T* x_in, T* x_out, LayerActs& a, LayerRouting& r, bool decide,
                     const BatchContext& ctx, const StepRouting& routing, const TrainOptions& opt);
  // dx: dL/dx_{l+1} in, dL/dx_l out; a: layer_forward's activations of x_in = x_l.
  AttnTrainArgs<T> attention_args(const LayerActs& a, const BatchContext& ctx,
                                  const TrainOptions& opt) const;
  void layer_backward(int64_t l, const T* x_in, T* dx, LayerActs& a, const LayerRouting& r,
                      const BatchContext& ctx, const StepRouting& routing, const TrainOptions& opt,
                      Gradients<T>* grads);

  ModelConfig config_;
  RopeFrequencies rope_;
  ParamSet<T> backbone_, router_;
  BackboneParams<T> W_;
  std::vector<RouterLayerParams<T>> R_;
};

}  // namespace elastic::train
