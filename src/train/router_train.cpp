#include "train/router_train.h"

#include <cmath>

#include "elastic/error.h"
#include "elastic/router_pool.h"

namespace elastic::train {
namespace {

double silu(double x) { return x / (1.0 + std::exp(-x)); }
double silu_grad(double x) {
  const double s = 1.0 / (1.0 + std::exp(-x));
  return s * (1.0 + x * (1.0 - s));
}

// y = W x + b; W: [out, in].
template <typename T>
void linear(double* y, const T* W, const T* b, const double* x, int64_t out, int64_t in) {
  for (int64_t o = 0; o < out; ++o) {
    double s = b[o];
    for (int64_t i = 0; i < in; ++i) s += static_cast<double>(W[o * in + i]) * x[i];
    y[o] = s;
  }
}

// Backward of y = W x + b with upstream dy: dx = W^T dy (overwritten); dW += dy x^T; db += dy.
// The input x is given after its activation.
template <typename T>
void linear_back(double* dx, T* dW, T* db, const double* dy, const T* W, const double* x,
                 int64_t out, int64_t in) {
  for (int64_t i = 0; i < in; ++i) dx[i] = 0;
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t i = 0; i < in; ++i) dx[i] += dy[o] * static_cast<double>(W[o * in + i]);
    if (dW)
      for (int64_t i = 0; i < in; ++i) dW[o * in + i] += static_cast<T>(dy[o] * x[i]);
    if (db) db[o] += static_cast<T>(dy[o]);
  }
}

}  // namespace

template <typename T>
void router_pool_forward(double* pooled, const T* k, const BatchSeq& seq, int64_t kvh, int64_t Hkv,
                         int64_t d, int64_t P, RouterPooling pooling) {
  ELASTIC_CHECK(seq.length > 0 && P > 0);
  for (int64_t e = 0; e < d; ++e) pooled[e] = 0;
  auto add = [&](int64_t t) {
    const T* row = k + ((seq.begin + t) * Hkv + kvh) * d;
    for (int64_t e = 0; e < d; ++e) pooled[e] += row[e];
  };
  double count = 0;
  if (pooling == RouterPooling::segment_mean) {
    for (int64_t t = 0; t < seq.length; ++t) add(t);
    count = static_cast<double>(seq.length);
  } else {
    const RouterPoolRange pool{seq.length, P};
    for (int64_t t = 0; t < pool.head_end(); ++t) add(t);
    for (int64_t t = pool.tail_begin(); t < seq.length; ++t) add(t);
    count = static_cast<double>(pool.count());
  }
  for (int64_t e = 0; e < d; ++e) pooled[e] /= count;
}

template <typename T>
void router_pool_backward(T* dk, const double* dpooled, const BatchSeq& seq, int64_t kvh,
                          int64_t Hkv, int64_t d, int64_t P, RouterPooling pooling) {
  const RouterPoolRange pool{seq.length, P};
  for (int64_t t = 0; t < seq.length; ++t) {
    const double w = pooling == RouterPooling::segment_mean ? 1.0 / static_cast<double>(seq.length)
                                                            : pool.weight(t);
    if (w == 0) continue;
    T* row = dk + ((seq.begin + t) * Hkv + kvh) * d;
    for (int64_t e = 0; e < d; ++e) row[e] += static_cast<T>(w * dpooled[e]);
  }
}

template <typename T>
void router_mlp_forward(RouterCache& c, const RouterLayerParams<T>& w, int64_t d) {
  const int64_t h = 4 * d;
  ELASTIC_CHECK(static_cast<int64_t>(c.x.size()) == d);
  c.h1.resize(size_t(h));
  c.u.resize(size_t(d));
  c.h3.resize(size_t(h));
  c.h4.resize(size_t(d));
  std::vector<double> a(static_cast<size_t>(h));
  linear(c.h1.data(), w.w1, w.b1, c.x.data(), h, d);
  for (int64_t i = 0; i < h; ++i) a[i] = silu(c.h1[i]);
  linear(c.u.data(), w.w2, w.b2, a.data(), d, h);
  linear(c.h3.data(), w.w3, w.b3, c.u.data(), h, d);
  for (int64_t i = 0; i < h; ++i) a[i] = silu(c.h3[i]);
  linear(c.h4.data(), w.w4, w.b4, a.data(), d, h);
  for (int64_t i = 0; i < d; ++i) a[i] = silu(c.h4[i]);
  linear(c.z, w.w5, w.b5, a.data(), 2, d);
}

template <typename T>
void router_mlp_backward(double* dx, RouterLayerParams<T>* dw, const double dz[2],
                         const RouterCache& c, const RouterLayerParams<T>& w, int64_t d) {
  const int64_t h = 4 * d;
  RouterLayerParams<T> none;
  RouterLayerParams<T>& g = dw ? *dw : none;
  std::vector<double> a(static_cast<size_t>(h)), da(static_cast<size_t>(h)),
      du(static_cast<size_t>(d));
  // z = W5 silu(h4) + b5
  for (int64_t i = 0; i < d; ++i) a[i] = silu(c.h4[i]);
  linear_back(da.data(), g.w5, g.b5, dz, w.w5, a.data(), 2, d);
  std::vector<double> dh(static_cast<size_t>(h));
  for (int64_t i = 0; i < d; ++i) dh[i] = da[i] * silu_grad(c.h4[i]);
  // h4 = W4 silu(h3) + b4
  for (int64_t i = 0; i < h; ++i) a[i] = silu(c.h3[i]);
  linear_back(da.data(), g.w4, g.b4, dh.data(), w.w4, a.data(), d, h);
  for (int64_t i = 0; i < h; ++i) dh[i] = da[i] * silu_grad(c.h3[i]);
  // h3 = W3 u + b3
  linear_back(du.data(), g.w3, g.b3, dh.data(), w.w3, c.u.data(), h, d);
  // u = W2 silu(h1) + b2
  for (int64_t i = 0; i < h; ++i) a[i] = silu(c.h1[i]);
  linear_back(da.data(), g.w2, g.b2, du.data(), w.w2, a.data(), d, h);
  for (int64_t i = 0; i < h; ++i) dh[i] = da[i] * silu_grad(c.h1[i]);
  // h1 = W1 x + b1
  linear_back(dx, g.w1, g.b1, dh.data(), w.w1, c.x.data(), h, d);
}

GumbelDecision gumbel_softmax_forward(const double z[2], const double u[2], double temperature) {
  constexpr double kEps = 1e-8;
  GumbelDecision r;
  double y[2];
  for (int c = 0; c < 2; ++c) {
    const double g = -std::log(-std::log(u[c] + kEps) + kEps);
    y[c] = (z[c] + g) / temperature;
  }
  const double m = std::max(y[0], y[1]);
  const double e0 = std::exp(y[0] - m), e1 = std::exp(y[1] - m);
  r.p[0] = e0 / (e0 + e1);
  r.p[1] = e1 / (e0 + e1);
  r.fa = r.p[1] > r.p[0];
  return r;
}

void gumbel_softmax_backward(double dz[2], double dl_dzfa, const GumbelDecision& g,
                             double temperature) {
  // z_FA = onehot + p_FA - sg(p_FA): dL/dp_FA = dL/dz_FA, dL/dp_SA = 0;
  // p = softmax(y), y = (z + g) / T: dL/dz_c = p_c (delta_{c,FA} - p_FA) dL/dp_FA / T.
  dz[0] = -g.p[0] * g.p[1] * dl_dzfa / temperature;
  dz[1] = g.p[1] * (1.0 - g.p[1]) * dl_dzfa / temperature;
}

SparsityTerm sparsity_term(double omega, double target, double lambda1, double lambda2,
                           double weight) {
  const double dev = omega - target;
  const double sign = dev > 0 ? 1.0 : dev < 0 ? -1.0 : 0.0;  // torch.abs' gradient at 0 is 0
  SparsityTerm t;
  t.loss = weight * (lambda1 * std::fabs(dev) + lambda2 * dev * dev);
  t.d_omega = weight * (lambda1 * sign + 2.0 * lambda2 * dev);
  t.d_lambda1 = weight * std::fabs(dev);
  t.d_lambda2 = weight * dev * dev;
  return t;
}

#define ELASTIC_ROUTER_TRAIN_INSTANTIATE(T)                                                   \
  template void router_pool_forward<T>(double*, const T*, const BatchSeq&, int64_t, int64_t,  \
                                       int64_t, int64_t, RouterPooling);                      \
  template void router_pool_backward<T>(T*, const double*, const BatchSeq&, int64_t, int64_t, \
                                        int64_t, int64_t, RouterPooling);                     \
  template void router_mlp_forward<T>(RouterCache&, const RouterLayerParams<T>&, int64_t);    \
  template void router_mlp_backward<T>(double*, RouterLayerParams<T>*, const double[2],       \
                                       const RouterCache&, const RouterLayerParams<T>&, int64_t);

ELASTIC_ROUTER_TRAIN_INSTANTIATE(float)
ELASTIC_ROUTER_TRAIN_INSTANTIATE(double)

}  // namespace elastic::train
