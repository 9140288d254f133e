// A training engine: one backend's training model behind a small interface, so that the
// training loops (router training, backbone pretraining) are written once for every backend.
// The engine owns the parameters, their gradients and the AdamW moments in its own memory; the
// loop sees them as fp32 host copies only for checkpoints. Gradients accumulate over step()
// calls (micro-batches) until zero_grad().
//
// Parameter groups: `router` (the Attention Routers, SPEC §2 names) and `backbone` (every
// backbone weight; trainable only when TrainOptions::weight_grads is set).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "elastic/config.h"
#include "train/model_train.h"
#include "train/params.h"

namespace elastic::train {

enum class ParamGroup { router, backbone };
enum class ParamState { value, grad, adam_m, adam_v };

struct AdamWConfig {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;
};

class TrainEngine {
 public:
  virtual ~TrainEngine() = default;
  virtual const char* backend_name() const = 0;
  virtual const ModelConfig& config() const = 0;
  virtual const TrainOptions& options() const = 0;

  // Forward + backward of one micro-batch; gradients are added to the engine's.
  virtual StepResult step(const Batch& batch, const StepRouting& routing, const StepLoss& loss) = 0;
  // Loss terms only (no gradients), e.g. for held-out evaluation.
  virtual StepResult evaluate(const Batch& batch, const StepRouting& routing,
                              const StepLoss& loss) = 0;
  virtual void zero_grad() = 0;
  // Sum of squared gradients of a group (for clipping by the global norm).
  virtual double grad_norm_squared(ParamGroup g) = 0;
  // One AdamW update (PyTorch's AdamW: decoupled decay p *= 1 - lr wd, then the Adam step with
  // bias correction for step t >= 1) of a group, using grad * grad_scale.
  virtual void adamw_step(ParamGroup g, const AdamWConfig& c, double grad_scale, int64_t t) = 0;

  // Whether the group exists (a backbone group needs weight_grads for grad/moments).
  virtual bool has(ParamGroup g) const = 0;
  virtual const ParamLayout& layout(ParamGroup g) const = 0;
  // fp32 host copies of a group's state, in its layout; set() checks the size.
  virtual std::vector<float> get(ParamGroup g, ParamState s) = 0;
  virtual void set(ParamGroup g, ParamState s, const std::vector<float>& values) = 0;
};

// The CPU reference engine (TrainModel<float>). router may be empty (fixed routing only).
std::unique_ptr<TrainEngine> train_engine_cpu(const ModelConfig& c, ParamSet<float> backbone,
                                              ParamSet<float> router, const TrainOptions& opt);

// The engine of a backend name: "cpu", or one a front end registered (the CLI registers "cuda"
// in builds with the CUDA trainer, which the core library does not link); an elastic::Error
// names the backend otherwise.
std::unique_ptr<TrainEngine> train_engine_create(const std::string& backend, const ModelConfig& c,
                                                 ParamSet<float> backbone, ParamSet<float> router,
                                                 const TrainOptions& opt);
using TrainEngineFactory = std::function<std::unique_ptr<TrainEngine>(
    const ModelConfig&, ParamSet<float>, ParamSet<float>, const TrainOptions&)>;
void train_engine_register(const std::string& backend, TrainEngineFactory factory);

// The learning rate of 0-based step `step0` of `steps`: linear warm-up over
// ceil(warmup * steps) steps, then cosine from `base` down to min_ratio * base (HF's schedule
// with min_ratio 0). Shared by router training and pretraining.
inline double lr_warmup_cosine(double base, double warmup, double min_ratio, int64_t steps,
                               int64_t step0) {
  const int64_t warm = static_cast<int64_t>(std::ceil(warmup * double(steps)));
  if (step0 < warm) return base * double(step0 + 1) / double(warm);
  const double p = steps > warm ? double(step0 - warm) / double(steps - warm) : 1.0;
  const double lo = base * min_ratio;
  return lo + (base - lo) * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, p)));
}

// AdamW on host arrays (the CPU engine's update; the reference for other backends).
// p, g, m, v: [n].
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWConfig& c,
                  double grad_scale, int64_t t);

}  // namespace elastic::train
