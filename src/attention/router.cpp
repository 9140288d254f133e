// Attention Router (SPEC §5) on the CPU: boundary pooling, task MLP, router MLP, decision; the
// Backend's default router_forward (this reference) and RouterRouting.
// The MLPs are tiny (d -> 4d -> d per KV head), so plain double loops are fast enough (~1 ms
// per layer at d = 128) and keep the logits exact to well below the fixtures' 1e-4.
#include <algorithm>
#include <cmath>
#include <string>

#include "elastic/backend.h"
#include "elastic/error.h"
#include "elastic/router.h"
#include "elastic/router_pool.h"

namespace elastic {

namespace {

std::string router_prefix(int64_t layer) {
  return "model.layers." + std::to_string(layer) + ".self_attn.mask_allocator.";
}

std::vector<float> load_checked(const WeightStore& store, const std::string& name, const Shape& shape) {
  const TensorView t = store.get(name);
  if (t.shape != shape)
    throw Error("router tensor " + name + " in " + store.source() + ": expected shape " + shape_str(shape) +
                ", got " + shape_str(t.shape));
  return t.to_f32();
}

// y = W x + b; W: [out, in].
void linear(double* y, const std::vector<float>& W, const std::vector<float>& b, const double* x,
            int64_t out, int64_t in) {
  for (int64_t o = 0; o < out; ++o) {
    double s = b[o];
    const float* w = W.data() + o * in;
    for (int64_t i = 0; i < in; ++i) s += static_cast<double>(w[i]) * x[i];
    y[o] = s;
  }
}

void silu(double* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0 + std::exp(-x[i]));
}

}  // namespace

bool router_weights_present(const WeightStore& store) {
  return store.contains(router_prefix(0) + "cls_router_head_agnostic.4.weight");
}

RouterWeights router_weights_load(const WeightStore& store, const ModelConfig& c) {
  RouterWeights w;
  const int64_t d = c.head_dim, h = 4 * d;
  w.head_dim = d;
  const TensorView last = store.get(router_prefix(0) + "cls_router_head_agnostic.4.weight");
  if (last.shape.size() != 2 || (last.shape[0] != 1 && last.shape[0] != 2) || last.shape[1] != d)
    throw Error("router tensor " + last.name + " in " + store.source() + ": expected shape [2, " +
                std::to_string(d) + "] (softmax) or [1, " + std::to_string(d) + "] (sigmoid), got " +
                shape_str(last.shape));
  w.classes = last.shape[0];
  if ((w.classes == 2) != c.elastic.use_softmax)
    throw Error("router of " + store.source() + ": config use_softmax = " +
                (c.elastic.use_softmax ? std::string("true") : std::string("false")) + " but the last layer has " +
                std::to_string(w.classes) + " output(s)");
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = router_prefix(l);
    RouterLayerWeights L;
    L.w1 = load_checked(store, p + "cls_feat_extractor.0.weight", {h, d});
    L.b1 = load_checked(store, p + "cls_feat_extractor.0.bias", {h});
    L.w2 = load_checked(store, p + "cls_feat_extractor.2.weight", {d, h});
    L.b2 = load_checked(store, p + "cls_feat_extractor.2.bias", {d});
    L.w3 = load_checked(store, p + "cls_router_head_agnostic.0.weight", {h, d});
    L.b3 = load_checked(store, p + "cls_router_head_agnostic.0.bias", {h});
    L.w4 = load_checked(store, p + "cls_router_head_agnostic.2.weight", {d, h});
    L.b4 = load_checked(store, p + "cls_router_head_agnostic.2.bias", {d});
    L.w5 = load_checked(store, p + "cls_router_head_agnostic.4.weight", {w.classes, d});
    L.b5 = load_checked(store, p + "cls_router_head_agnostic.4.bias", {w.classes});
    w.layers.push_back(std::move(L));
  }
  return w;
}

void router_pool_keys(double* pooled, const float* k, int64_t n, int64_t Hkv, int64_t d, int64_t P) {
  ELASTIC_CHECK(n > 0 && P > 0);
  std::fill(pooled, pooled + Hkv * d, 0.0);
  const RouterPoolRange pool{n, P};  // concat(k[:P], k[-P:]): shared tokens count twice
  auto add = [&](int64_t t) {
    for (int64_t h = 0; h < Hkv; ++h)
      for (int64_t e = 0; e < d; ++e) pooled[h * d + e] += k[(t * Hkv + h) * d + e];
  };
  for (int64_t t = 0; t < pool.head_end(); ++t) add(t);
  for (int64_t t = pool.tail_begin(); t < n; ++t) add(t);
  for (int64_t i = 0; i < Hkv * d; ++i) pooled[i] /= static_cast<double>(pool.count());
}

void router_layer_outputs(double* z, const RouterWeights& w, int64_t layer, const float* k, int64_t n,
                          int64_t Hkv, int64_t pool_tokens) {
  const int64_t d = w.head_dim, h4 = 4 * d;
  ELASTIC_CHECK(layer >= 0 && layer < static_cast<int64_t>(w.layers.size()));
  const RouterLayerWeights& L = w.layers[static_cast<size_t>(layer)];
  std::vector<double> pooled(static_cast<size_t>(Hkv * d)), hid(static_cast<size_t>(h4)),
      u(static_cast<size_t>(d)), r(static_cast<size_t>(d));
  router_pool_keys(pooled.data(), k, n, Hkv, d, pool_tokens);
  for (int64_t h = 0; h < Hkv; ++h) {
    linear(hid.data(), L.w1, L.b1, pooled.data() + h * d, h4, d);  // task MLP
    silu(hid.data(), h4);
    linear(u.data(), L.w2, L.b2, hid.data(), d, h4);
    linear(hid.data(), L.w3, L.b3, u.data(), h4, d);  // router MLP
    silu(hid.data(), h4);
    linear(r.data(), L.w4, L.b4, hid.data(), d, h4);
    silu(r.data(), d);
    linear(z + h * w.classes, L.w5, L.b5, r.data(), w.classes, d);
  }
}

namespace {

// A NaN router output would compare false everywhere and route every head sparse without a
// word (and print as null): stop instead, naming the layer. z: [Hkv, classes].
void router_outputs_check(const double* z, int64_t Hkv, int64_t classes, int64_t layer) {
  for (int64_t i = 0; i < Hkv * classes; ++i)
    if (!std::isfinite(z[i]))
      throw Error("router of layer " + std::to_string(layer) + ": output " + std::to_string(z[i]) +
                  " for KV head " + std::to_string(i / classes) +
                  " is not finite (the layer's keys or its router weights model.layers." +
                  std::to_string(layer) + ".self_attn.mask_allocator.* hold NaN or Inf)");
}

}  // namespace

std::vector<uint8_t> router_layer_decide(std::vector<float>& logits, const double* z, int64_t Hkv, int64_t classes,
                                         double sparsity_bias) {
  ELASTIC_CHECK(classes == 1 || classes == 2);
  logits.assign(static_cast<size_t>(Hkv * 2), 0.f);
  std::vector<uint8_t> retrieval(static_cast<size_t>(Hkv));
  if (classes == 2) {
    for (int64_t h = 0; h < Hkv; ++h) {
      const double sa = z[h * 2] + sparsity_bias, fa = z[h * 2 + 1];
      logits[h * 2] = static_cast<float>(sa);
      logits[h * 2 + 1] = static_cast<float>(fa);
      retrieval[h] = fa > sa;  // argmax, ties to class 0 (SA) as torch.argmax
    }
  } else {
    double mean = 0, var = 0;
    for (int64_t h = 0; h < Hkv; ++h) mean += z[h];
    mean /= Hkv;
    for (int64_t h = 0; h < Hkv; ++h) var += (z[h] - mean) * (z[h] - mean);
    var /= Hkv;
    for (int64_t h = 0; h < Hkv; ++h) {
      const double zn = (z[h] - mean) / std::sqrt(var + 1e-5);
      logits[h * 2] = static_cast<float>(sparsity_bias);
      logits[h * 2 + 1] = static_cast<float>(zn);
      retrieval[h] = zn > sparsity_bias;  // sigmoid(zn - beta) > 0.5
    }
  }
  return retrieval;
}

std::vector<uint8_t> router_layer_forward(std::vector<float>& logits, const RouterWeights& w, int64_t layer,
                                          const float* k, int64_t n, int64_t Hkv, const RouterOptions& opt) {
  std::vector<double> z(static_cast<size_t>(Hkv * w.classes));
  router_layer_outputs(z.data(), w, layer, k, n, Hkv, opt.pool_tokens);
  router_outputs_check(z.data(), Hkv, w.classes, layer);
  return router_layer_decide(logits, z.data(), Hkv, w.classes, opt.sparsity_bias);
}

// The backend's default router: the reference above on k as host memory (the CPU backend).
std::shared_ptr<void> Backend::router_prepare(const RouterWeights&) { return nullptr; }

void Backend::router_forward(double* z, const RouterWeights& w, void*, int64_t layer, const float* k, int64_t n,
                             int64_t Hkv, int64_t pool_tokens) {
  router_layer_outputs(z, w, layer, k, n, Hkv, pool_tokens);
}

RouterRouting::RouterRouting(RouterWeights weights, RouterOptions options)
    : weights_(std::move(weights)), options_(options) {
  if (options_.pool_tokens <= 0) throw Error("router option pool-tokens must be > 0");
}

void RouterRouting::head_dim_check(int64_t d) const {
  if (d != weights_.head_dim)
    throw Error("router: head_dim " + std::to_string(d) + " does not match the router's " +
                std::to_string(weights_.head_dim));
}

LayerRoute RouterRouting::route_from_outputs(const std::vector<double>& z, int64_t Hkv) const {
  LayerRoute r;
  r.retrieval = router_layer_decide(r.router_logits, z.data(), Hkv, weights_.classes, options_.sparsity_bias);
  for (uint8_t x : r.retrieval) r.modes.push_back(x ? options_.retrieval_mode : options_.sparse_mode);
  return r;
}

LayerRoute RouterRouting::route(int64_t layer, const float* k, int64_t n, int64_t Hkv, int64_t d) {
  head_dim_check(d);
  std::vector<double> z(static_cast<size_t>(Hkv * weights_.classes));
  router_layer_outputs(z.data(), weights_, layer, k, n, Hkv, options_.pool_tokens);
  router_outputs_check(z.data(), Hkv, weights_.classes, layer);
  return route_from_outputs(z, Hkv);
}

LayerRoute RouterRouting::route_backend(Backend& backend, int64_t layer, const float* k, int64_t n, int64_t Hkv,
                                        int64_t d) {
  head_dim_check(d);
  if (layer < 0 || layer >= static_cast<int64_t>(weights_.layers.size()))
    throw Error("router: no weights for layer " + std::to_string(layer) + " (the router has " +
                std::to_string(weights_.layers.size()) + " layers)");
  if (prepared_for_ != &backend || prepared_for_name_ != backend.name()) {
    prepared_ = backend.router_prepare(weights_);  // weights uploaded once per backend
    prepared_for_ = &backend;
    prepared_for_name_ = std::string(backend.name());
  }
  std::vector<double> z(static_cast<size_t>(Hkv * weights_.classes));  // z: [Hkv, classes]
  backend.router_forward(z.data(), weights_, prepared_.get(), layer, k, n, Hkv, options_.pool_tokens);
  router_outputs_check(z.data(), Hkv, weights_.classes, layer);  // every backend's z
  return route_from_outputs(z, Hkv);
}

}  // namespace elastic
