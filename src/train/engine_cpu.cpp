// The CPU training engine (engine.h): TrainModel<float> plus host gradients and AdamW moments.
#include <cmath>
#include <string>

#include "elastic/error.h"
#include "train/engine.h"

namespace elastic::train {

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWConfig& c,
                  double grad_scale, int64_t t) {
  ELASTIC_CHECK(t >= 1);
  const double bc1 = 1.0 - std::pow(c.beta1, static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(c.beta2, static_cast<double>(t));
  const double decay = 1.0 - c.lr * c.weight_decay;
#pragma omp parallel for schedule(static) if (n >= (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    const double gi = static_cast<double>(g[i]) * grad_scale;
    const double mi = c.beta1 * m[i] + (1.0 - c.beta1) * gi;
    const double vi = c.beta2 * v[i] + (1.0 - c.beta2) * gi * gi;
    m[i] = static_cast<float>(mi);
    v[i] = static_cast<float>(vi);
    const double denom = std::sqrt(vi / bc2) + c.eps;
    p[i] = static_cast<float>(p[i] * decay - c.lr * (mi / bc1) / denom);
  }
}

namespace {

class CpuTrainEngine final : public TrainEngine {
 public:
  CpuTrainEngine(const ModelConfig& c, ParamSet<float> backbone, ParamSet<float> router,
                 const TrainOptions& opt)
      : opt_(opt), model_(c, std::move(backbone), std::move(router)) {
    grads_ = model_.gradients(opt_);
    if (has(ParamGroup::router)) {
      m_router_ = ParamSet<float>(model_.router().layout);
      v_router_ = ParamSet<float>(model_.router().layout);
    }
    if (opt_.weight_grads) {
      m_backbone_ = ParamSet<float>(model_.backbone().layout);
      v_backbone_ = ParamSet<float>(model_.backbone().layout);
    }
  }

  const char* backend_name() const override { return "cpu"; }
  const ModelConfig& config() const override { return model_.config(); }
  const TrainOptions& options() const override { return opt_; }

  StepResult step(const Batch& b, const StepRouting& r, const StepLoss& l) override {
    return model_.step(b, r, l, opt_, &grads_);
  }
  StepResult evaluate(const Batch& b, const StepRouting& r, const StepLoss& l) override {
    return model_.step(b, r, l, opt_, nullptr);
  }
  void zero_grad() override {
    grads_.router.zero();
    grads_.backbone.zero();
  }
  double grad_norm_squared(ParamGroup g) override {
    double s = 0;
    for (float x : grad_set(g).data) s += static_cast<double>(x) * x;
    return s;
  }
  void adamw_step(ParamGroup g, const AdamWConfig& c, double grad_scale, int64_t t) override {
    ParamSet<float>& p = value_set(g);
    adamw_update(p.data.data(), grad_set(g).data.data(), moment(g, true).data.data(),
                 moment(g, false).data.data(), p.layout.total(), c, grad_scale, t);
  }
  bool has(ParamGroup g) const override {
    return g == ParamGroup::router ? model_.router().layout.total() > 0 : opt_.weight_grads;
  }
  const ParamLayout& layout(ParamGroup g) const override {
    return g == ParamGroup::router ? model_.router().layout : model_.backbone().layout;
  }
  std::vector<float> get(ParamGroup g, ParamState s) override { return set_of(g, s).data; }
  void set(ParamGroup g, ParamState s, const std::vector<float>& values) override {
    ParamSet<float>& p = set_of(g, s);
    if (values.size() != p.data.size())
      throw Error("training state: " + std::to_string(values.size()) + " values for a group of " +
                  std::to_string(p.data.size()));
    p.data = values;
  }

 private:
  ParamSet<float>& value_set(ParamGroup g) {
    return g == ParamGroup::router ? model_.router() : model_.backbone();
  }
  ParamSet<float>& grad_set(ParamGroup g) {
    ELASTIC_CHECK_MSG(has(g), "parameter group without gradients");
    return g == ParamGroup::router ? grads_.router : grads_.backbone;
  }
  ParamSet<float>& moment(ParamGroup g, bool first) {
    ELASTIC_CHECK_MSG(has(g), "parameter group without optimizer state");
    if (g == ParamGroup::router) return first ? m_router_ : v_router_;
    return first ? m_backbone_ : v_backbone_;
  }
  ParamSet<float>& set_of(ParamGroup g, ParamState s) {
    switch (s) {
      case ParamState::value:
        return value_set(g);
      case ParamState::grad:
        return grad_set(g);
      case ParamState::adam_m:
        return moment(g, true);
      case ParamState::adam_v:
        return moment(g, false);
    }
    ELASTIC_CHECK(false);
    return value_set(g);
  }

  TrainOptions opt_;
  TrainModel<float> model_;
  Gradients<float> grads_;
  ParamSet<float> m_router_, v_router_, m_backbone_, v_backbone_;
};

}  // namespace

std::unique_ptr<TrainEngine> train_engine_cpu(const ModelConfig& c, ParamSet<float> backbone,
                                              ParamSet<float> router, const TrainOptions& opt) {
  return std::make_unique<CpuTrainEngine>(c, std::move(backbone), std::move(router), opt);
}

}  // namespace elastic::train
