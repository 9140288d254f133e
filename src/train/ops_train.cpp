// CPU reference training ops (ops_train.h). Accumulations run in double for both scalar
// types: the float mode then differs from the double mode only by the rounding of stored
// values, which keeps the float reference within ~1e-6 of the float64 fixtures per op.
#include "train/ops_train.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "elastic/error.h"

namespace elastic::train {
namespace {

constexpr int64_t kParallelMin = 1 << 14;  // elements below which an op stays on one thread
constexpr int64_t kHeadChunkRows = 64;     // rows of logits in flight in the fused CE

template <typename T>
double silu(T x) {
  const double v = static_cast<double>(x);
  return v / (1.0 + std::exp(-v));
}

}  // namespace

template <typename T>
void embedding_forward(T* out, const int64_t* ids, int64_t n, const T* table, int64_t V,
                       int64_t D) {
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= V)
      throw Error("token id " + std::to_string(ids[i]) + " at row " + std::to_string(i) +
                  " is out of range (expected 0 <= id < vocab_size " + std::to_string(V) + ")");
#pragma omp parallel for schedule(static) if (n * D >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) std::copy_n(table + ids[i] * D, D, out + i * D);
}

template <typename T>
void embedding_backward(T* dtable, const T* dout, const int64_t* ids, int64_t n, int64_t D) {
  for (int64_t i = 0; i < n; ++i) {
    T* row = dtable + ids[i] * D;
    const T* g = dout + i * D;
    for (int64_t e = 0; e < D; ++e) row[e] += g[e];
  }
}

template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* inp, const T* weight, int64_t rows, int64_t D,
                     double eps) {
#pragma omp parallel for schedule(static) if (rows * D >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = inp + r * D;
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += static_cast<double>(x[i]) * x[i];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(D) + eps);
    rstd[r] = static_cast<T>(inv);
    for (int64_t i = 0; i < D; ++i) out[r * D + i] = static_cast<T>(weight[i] * (x[i] * inv));
  }
}

template <typename T>
void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                      const T* rstd, int64_t rows, int64_t D) {
  // y = w * x * r:  dx = r * (w * dy) - x * r^3 / D * sum(w * dy * x);  dw = sum_rows dy * x * r.
#pragma omp parallel for schedule(static) if (rows * D >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = inp + r * D;
    const T* dy = dout + r * D;
    const double rs = rstd[r];
    double dot = 0;
    for (int64_t i = 0; i < D; ++i) dot += static_cast<double>(weight[i]) * dy[i] * x[i];
    const double c = dot * rs * rs * rs / static_cast<double>(D);
    for (int64_t i = 0; i < D; ++i)
      dinp[r * D + i] += static_cast<T>(rs * weight[i] * dy[i] - c * x[i]);
  }
  if (!dweight) return;
#pragma omp parallel for schedule(static) if (rows * D >= kParallelMin)
  for (int64_t i = 0; i < D; ++i) {
    double s = 0;
    for (int64_t r = 0; r < rows; ++r)
      s += static_cast<double>(dout[r * D + i]) * inp[r * D + i] * rstd[r];
    dweight[i] += static_cast<T>(s);
  }
}

template <typename T>
void linear_forward(T* out, const T* inp, const T* W, const T* bias, int64_t n, int64_t N,
                    int64_t K) {
#pragma omp parallel for collapse(2) schedule(static) if (n * N * K >= kParallelMin)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < N; ++o) {
      const T* x = inp + i * K;
      const T* w = W + o * K;
      double s = 0.0;
#pragma omp simd reduction(+ : s)
      for (int64_t k = 0; k < K; ++k) s += static_cast<double>(x[k]) * w[k];
      if (bias) s += bias[o];
      out[i * N + o] = static_cast<T>(s);
    }
}

template <typename T>
void linear_backward(T* dinp, T* dW, T* dbias, const T* dout, const T* inp, const T* W, int64_t n,
                     int64_t N, int64_t K) {
  if (dinp) {  // dinp[i, k] += sum_o dout[i, o] W[o, k]
#pragma omp parallel for schedule(static) if (n * N * K >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      std::vector<double> acc(static_cast<size_t>(K), 0.0);
      for (int64_t o = 0; o < N; ++o) {
        const double g = dout[i * N + o];
        if (g == 0.0) continue;
        const T* w = W + o * K;
        for (int64_t k = 0; k < K; ++k) acc[k] += g * w[k];
      }
      for (int64_t k = 0; k < K; ++k) dinp[i * K + k] += static_cast<T>(acc[k]);
    }
  }
  if (dW) {  // dW[o, k] += sum_i dout[i, o] inp[i, k]
#pragma omp parallel for schedule(static) if (n * N * K >= kParallelMin)
    for (int64_t o = 0; o < N; ++o) {
      std::vector<double> acc(static_cast<size_t>(K), 0.0);
      for (int64_t i = 0; i < n; ++i) {
        const double g = dout[i * N + o];
        if (g == 0.0) continue;
        const T* x = inp + i * K;
        for (int64_t k = 0; k < K; ++k) acc[k] += g * x[k];
      }
      for (int64_t k = 0; k < K; ++k) dW[o * K + k] += static_cast<T>(acc[k]);
    }
  }
  if (dbias) {
    for (int64_t o = 0; o < N; ++o) {
      double s = 0;
      for (int64_t i = 0; i < n; ++i) s += dout[i * N + o];
      dbias[o] += static_cast<T>(s);
    }
  }
}

template <typename T>
void rope_forward(T* out, const T* x, const float* cos, const float* sin, int64_t n, int64_t heads,
                  int64_t d) {
  const int64_t half = d / 2;
#pragma omp parallel for schedule(static) if (n * heads * d >= kParallelMin)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < heads; ++h) {
      const T* v = x + (i * heads + h) * d;
      T* o = out + (i * heads + h) * d;
      for (int64_t j = 0; j < half; ++j) {
        const double a = v[j], b = v[j + half], c = cos[i * half + j], s = sin[i * half + j];
        o[j] = static_cast<T>(a * c - b * s);
        o[j + half] = static_cast<T>(b * c + a * s);
      }
    }
}

template <typename T>
void rope_backward(T* dx, const T* dout, const float* cos, const float* sin, int64_t n,
                   int64_t heads, int64_t d) {
  const int64_t half = d / 2;
#pragma omp parallel for schedule(static) if (n * heads * d >= kParallelMin)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < heads; ++h) {
      const T* g = dout + (i * heads + h) * d;
      T* o = dx + (i * heads + h) * d;
      for (int64_t j = 0; j < half; ++j) {
        const double ga = g[j], gb = g[j + half], c = cos[i * half + j], s = sin[i * half + j];
        o[j] += static_cast<T>(ga * c + gb * s);
        o[j + half] += static_cast<T>(gb * c - ga * s);
      }
    }
}

template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t rows, int64_t F) {
#pragma omp parallel for schedule(static) if (rows * F >= kParallelMin)
  for (int64_t i = 0; i < rows * F; ++i) out[i] = static_cast<T>(silu(gate[i]) * up[i]);
}

template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t rows,
                     int64_t F) {
#pragma omp parallel for schedule(static) if (rows * F >= kParallelMin)
  for (int64_t i = 0; i < rows * F; ++i) {
    const double g = gate[i], sig = 1.0 / (1.0 + std::exp(-g));
    const double dsilu = sig * (1.0 + g * (1.0 - sig));
    dgate[i] += static_cast<T>(dout[i] * up[i] * dsilu);
    dup[i] += static_cast<T>(dout[i] * g * sig);
  }
}

template <typename T>
void residual_forward(T* x, const T* delta, int64_t count) {
#pragma omp parallel for schedule(static) if (count >= kParallelMin)
  for (int64_t i = 0; i < count; ++i) x[i] += delta[i];
}

template <typename T>
double lm_head_cross_entropy(T* dx, T* dW, const T* x, const T* W, const int64_t* labels,
                             int64_t rows, int64_t D, int64_t V, double scale) {
  std::vector<int64_t> labelled;
  for (int64_t i = 0; i < rows; ++i) {
    if (labels[i] == -100) continue;
    if (labels[i] < 0 || labels[i] >= V)
      throw Error("label " + std::to_string(labels[i]) + " at row " + std::to_string(i) +
                  " is out of range (expected -100 or 0 <= label < vocab_size " +
                  std::to_string(V) + ")");
    labelled.push_back(i);
  }
  const int64_t m = static_cast<int64_t>(labelled.size());
  double loss = 0;
  std::vector<double> logits(static_cast<size_t>(kHeadChunkRows * V));
  std::vector<double> row_loss(static_cast<size_t>(kHeadChunkRows));
  for (int64_t c0 = 0; c0 < m; c0 += kHeadChunkRows) {
    const int64_t c1 = std::min(m, c0 + kHeadChunkRows);
    // logits[r, v] = x_row . W_v, then the row's loss and (softmax - onehot) * scale in place.
#pragma omp parallel for schedule(static) if ((c1 - c0) * V * D >= kParallelMin)
    for (int64_t r = c0; r < c1; ++r) {
      const T* xr = x + labelled[r] * D;
      double* z = logits.data() + (r - c0) * V;
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t v = 0; v < V; ++v) {
        double s = 0;
        const T* w = W + v * D;
#pragma omp simd reduction(+ : s)
        for (int64_t e = 0; e < D; ++e) s += static_cast<double>(xr[e]) * w[e];
        z[v] = s;
        mx = std::max(mx, s);
      }
      double sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(z[v] - mx);
      const double lse = mx + std::log(sum);
      const int64_t y = labels[labelled[r]];
      row_loss[size_t(r - c0)] = lse - z[y];
      for (int64_t v = 0; v < V; ++v) z[v] = std::exp(z[v] - lse) * scale;
      z[y] -= scale;
    }
    for (int64_t r = c0; r < c1; ++r) loss += row_loss[size_t(r - c0)];  // fixed order
    if (!dx) continue;                                                   // loss only: no gradients
                                                                         // dx[row] += dlogits W
#pragma omp parallel for schedule(static) if ((c1 - c0) * V * D >= kParallelMin)
    for (int64_t r = c0; r < c1; ++r) {
      const double* g = logits.data() + (r - c0) * V;
      std::vector<double> acc(static_cast<size_t>(D), 0.0);
      for (int64_t v = 0; v < V; ++v) {
        const T* w = W + v * D;
        for (int64_t e = 0; e < D; ++e) acc[e] += g[v] * w[e];
      }
      T* out = dx + labelled[r] * D;
      for (int64_t e = 0; e < D; ++e) out[e] += static_cast<T>(acc[e]);
    }
    if (dW) {  // dW[v] += sum_rows dlogits[row, v] x[row]
#pragma omp parallel for schedule(static) if ((c1 - c0) * V * D >= kParallelMin)
      for (int64_t v = 0; v < V; ++v) {
        T* w = dW + v * D;
        for (int64_t r = c0; r < c1; ++r) {
          const double g = logits[(r - c0) * V + v];
          const T* xr = x + labelled[r] * D;
          for (int64_t e = 0; e < D; ++e) w[e] += static_cast<T>(g * xr[e]);
        }
      }
    }
  }
  return loss * scale;
}

#define ELASTIC_TRAIN_OPS_INSTANTIATE(T)                                                        \
  template void embedding_forward<T>(T*, const int64_t*, int64_t, const T*, int64_t, int64_t);  \
  template void embedding_backward<T>(T*, const T*, const int64_t*, int64_t, int64_t);          \
  template void rmsnorm_forward<T>(T*, T*, const T*, const T*, int64_t, int64_t, double);       \
  template void rmsnorm_backward<T>(T*, T*, const T*, const T*, const T*, const T*, int64_t,    \
                                    int64_t);                                                   \
  template void linear_forward<T>(T*, const T*, const T*, const T*, int64_t, int64_t, int64_t); \
  template void linear_backward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t,  \
                                   int64_t);                                                    \
  template void rope_forward<T>(T*, const T*, const float*, const float*, int64_t, int64_t,     \
                                int64_t);                                                       \
  template void rope_backward<T>(T*, const T*, const float*, const float*, int64_t, int64_t,    \
                                 int64_t);                                                      \
  template void swiglu_forward<T>(T*, const T*, const T*, int64_t, int64_t);                    \
  template void swiglu_backward<T>(T*, T*, const T*, const T*, const T*, int64_t, int64_t);     \
  template void residual_forward<T>(T*, const T*, int64_t);                                     \
  template double lm_head_cross_entropy<T>(T*, T*, const T*, const T*, const int64_t*, int64_t, \
                                           int64_t, int64_t, double);

ELASTIC_TRAIN_OPS_INSTANTIATE(float)
ELASTIC_TRAIN_OPS_INSTANTIATE(double)

}  // namespace elastic::train
