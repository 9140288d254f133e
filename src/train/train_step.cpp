// train_step_run (train.h): one router-training step of an Elastic checkpoint on a batch read
// from safetensors, every sample its own sequence of one packed batch.
#include <cstring>
#include <map>
#include <string>
#include <type_traits>

#include "elastic/batch.h"
#include "elastic/config.h"
#include "elastic/error.h"
#include "elastic/train.h"
#include "train/engine.h"
#include "train/model_train.h"

namespace elastic {
namespace {

SafetensorsWriteItem item_f32(const std::string& name, const Shape& shape,
                              const std::vector<double>& v) {
  std::vector<float> f(v.begin(), v.end());
  return safetensors_item_f32(name, shape, f.data());
}

SafetensorsWriteItem item_i64(const std::string& name, const Shape& shape,
                              const std::vector<int64_t>& v) {
  SafetensorsWriteItem it;
  it.name = name;
  it.dtype = DType::i64;
  it.shape = shape;
  it.bytes.resize(v.size() * sizeof(int64_t));
  std::memcpy(it.bytes.data(), v.data(), it.bytes.size());
  return it;
}

TensorView batch_tensor(const WeightStore& store, const std::string& name, const Shape& shape) {
  if (!store.contains(name))
    throw Error("batch " + store.source() + ": tensor '" + name + "' is missing");
  TensorView t = store.get(name);
  if (!shape.empty() && t.shape != shape)
    throw Error("batch " + store.source() + ": tensor '" + name + "' has shape " +
                shape_str(t.shape) + ", expected " + shape_str(shape));
  return t;
}

template <typename T>
TrainStepResult run(const TrainStepRequest& rq, const ModelConfig& c, const WeightStore& model,
                    const WeightStore& bstore) {
  using namespace train;
  const int64_t L = c.num_layers, Hkv = c.num_kv_heads;
  const int64_t S = static_cast<int64_t>(rq.tasks.size());
  if (S == 0) throw Error("train-step: no samples (give --tasks, one task id per sample)");
  if (static_cast<int64_t>(rq.targets.size()) != S)
    throw Error("train-step: " + std::to_string(rq.targets.size()) + " targets for " +
                std::to_string(S) + " samples (one target per sample)");
  if (!(rq.temperature > 0)) throw Error("train-step: temperature must be > 0");

  const TensorView l1 = batch_tensor(bstore, "lambda1", {});
  const TensorView l2 = batch_tensor(bstore, "lambda2", {});
  if (l1.shape.size() != 1 || l2.shape != l1.shape)
    throw Error("batch " + bstore.source() + ": lambda1 and lambda2 must be vectors of one size");
  const int64_t K = l1.shape[0];
  const std::vector<float> lam1 = l1.to_f32(), lam2 = l2.to_f32();

  Batch batch;
  StepRouting routing;
  routing.temperature = rq.temperature;
  StepLoss loss;
  loss.lambda1.assign(lam1.begin(), lam1.end());
  loss.lambda2.assign(lam2.begin(), lam2.end());
  loss.targets.assign(size_t(K), 0.0);
  std::map<int64_t, int64_t> per_task;
  int64_t labelled = 0;
  for (int64_t s = 0; s < S; ++s) {
    const std::string i = std::to_string(s);
    const std::vector<int64_t> ids = batch_tensor(bstore, "input_ids." + i, {}).to_i64();
    if (ids.empty()) throw Error("batch " + bstore.source() + ": input_ids." + i + " is empty");
    const int64_t n = static_cast<int64_t>(ids.size());
    const std::vector<int64_t> lab = batch_tensor(bstore, "labels." + i, {n}).to_i64();
    const std::vector<float> u = batch_tensor(bstore, "gumbel_u." + i, {L, Hkv, 2}).to_f32();
    batch.add(ids.data(), n);
    loss.labels.insert(loss.labels.end(), lab.begin(), lab.end());
    routing.gumbel_u.insert(routing.gumbel_u.end(), u.begin(), u.end());
    for (int64_t y : lab) labelled += y != -100;
    const int64_t k = rq.tasks[size_t(s)];
    if (k < 0 || k >= K)
      throw Error("train-step: task " + std::to_string(k) + " of sample " + i + " is outside the " +
                  std::to_string(K) + " multipliers of the batch");
    loss.targets[size_t(k)] = rq.targets[size_t(s)];
    loss.task.push_back(k);
    ++per_task[k];
  }
  if (labelled == 0) throw Error("batch " + bstore.source() + ": no labelled position");
  loss.ce_scale = 1.0 / static_cast<double>(labelled);
  for (int64_t k : loss.task)
    loss.sample_weight.push_back(1.0 / static_cast<double>(per_task.size() * per_task[k]));

  TrainOptions opt;
  opt.ssa = rq.ssa;
  opt.pool_tokens = rq.pool_tokens;
  opt.pooling = rq.segment_mean_pooling ? RouterPooling::segment_mean : RouterPooling::boundary;
  ParamSet<T> backbone(backbone_layout(c)), router(router_layout(c));
  params_load(backbone, model);
  params_load(router, model);
  StepResult r;
  ParamSet<float> grads(router_layout(c));    // d loss / d router tensors
  if constexpr (std::is_same_v<T, double>) {  // the float64 reference runs the model directly
    TrainModel<double> tm(c, std::move(backbone), std::move(router));
    Gradients<double> g = tm.gradients(opt);
    r = tm.step(batch, routing, loss, opt, &g);
    std::copy(g.router.data.begin(), g.router.data.end(), grads.data.begin());
  } else {
    auto eng = train_engine_create(rq.backend, c, std::move(backbone), std::move(router), opt);
    r = eng->step(batch, routing, loss);
    grads.data = eng->get(ParamGroup::router, ParamState::grad);
  }

  TrainStepResult out;
  out.ce = r.ce;
  out.sparsity_loss = r.sparsity_loss;
  out.loss = r.ce + r.sparsity_loss;
  out.omega = r.omega;
  out.items.push_back(item_f32("loss", {1}, {out.loss}));
  out.items.push_back(item_f32("ce", {1}, {out.ce}));
  out.items.push_back(item_f32("sparsity_loss", {1}, {out.sparsity_loss}));
  for (int64_t s = 0; s < S; ++s) {
    const std::string i = std::to_string(s);
    std::vector<int64_t> dec(r.decisions.begin() + s * L * Hkv,
                             r.decisions.begin() + (s + 1) * L * Hkv);
    out.decisions.emplace_back(dec.begin(), dec.end());
    out.items.push_back(item_f32("omega." + i, {1}, {r.omega[size_t(s)]}));
    out.items.push_back(item_i64("decisions." + i, {L, Hkv}, dec));
  }
  for (SafetensorsWriteItem& it : params_items(grads, DType::f32, "grad."))
    out.items.push_back(std::move(it));
  out.items.push_back(item_f32("grad.lambda1", {K}, r.d_lambda1));
  out.items.push_back(item_f32("grad.lambda2", {K}, r.d_lambda2));
  return out;
}

}  // namespace

TrainStepResult train_step_run(const TrainStepRequest& rq) {
  const ModelConfig c = config_load(rq.model_dir);
  const WeightStore model = WeightStore::open(rq.model_dir);
  if (!model.contains(train::router_tensor_prefix(0) + "cls_router_head_agnostic.4.weight"))
    throw Error("train-step: " + rq.model_dir +
                " has no router tensors (model.layers.0.self_attn.mask_allocator.*)");
  const WeightStore bstore = WeightStore::open(rq.batch_path);
  return rq.float64 ? run<double>(rq, c, model, bstore) : run<float>(rq, c, model, bstore);
}

}  // namespace elastic
