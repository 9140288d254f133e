// CPU reference ops (fp32). Each op is a plain loop over rows, threaded with OpenMP when the
// work is large enough to pay for the fork (decode rows are tiny). Invariants: shapes as in
// cpu_ops.h; reductions accumulate in fp32 in a fixed order per row, so results do not depend
// on the thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "core/fast_exp.h"
#include "elastic/cpu_ops.h"
#include "elastic/error.h"

namespace elastic {
namespace {

// Below this many floats an op runs on the calling thread.
constexpr int64_t kParallelMinElements = 1 << 15;

}  // namespace

void embedding_forward(float* out, const int64_t* ids, int64_t n, const void* table, DType dtype,
                       int64_t vocab, int64_t dim) {
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= vocab)
      throw Error("token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                  " is out of range (expected 0 <= id < vocab_size " + std::to_string(vocab) + ")");
  const size_t esz = dtype_size(dtype);
#pragma omp parallel for schedule(static) if (n * dim >= kParallelMinElements)
  for (int64_t i = 0; i < n; ++i)
    convert_to_f32(out + i * dim, static_cast<const char*>(table) + ids[i] * dim * esz, dtype,
                   static_cast<size_t>(dim));
}

void rmsnorm_forward(float* out, const float* inp, const float* weight, int64_t rows, int64_t dim,
                     float eps) {
#pragma omp parallel for schedule(static) if (rows * dim >= kParallelMinElements)
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = inp + r * dim;
    float* y = out + r * dim;
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < dim; ++i) ss += x[i] * x[i];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
#pragma omp simd
    for (int64_t i = 0; i < dim; ++i) y[i] = weight[i] * (x[i] * inv);
  }
}

RopeFrequencies rope_frequencies(const RopeConfig& rope, int64_t head_dim) {
  ELASTIC_CHECK(head_dim > 0 && head_dim % 2 == 0);
  const int64_t half = head_dim / 2;
  const double base = rope.theta;
  RopeFrequencies f;
  f.inv_freq.resize(static_cast<size_t>(half));
  // HF: inv_freq = 1 / base^(2i/d), evaluated in float32.
  std::vector<double> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float expo = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float pos_freq = static_cast<float>(std::pow(base, static_cast<double>(expo)));
    inv[i] = 1.0 / static_cast<double>(pos_freq);
  }
  switch (rope.type) {
    case RopeType::standard: break;
    case RopeType::llama3: {
      // _compute_llama3_parameters: long wavelengths are divided by factor, short ones kept,
      // the band between is a smooth blend.
      const double factor = rope.factor;
      const double old_ctx = static_cast<double>(rope.original_max_position_embeddings);
      const double low_wavelen = old_ctx / rope.low_freq_factor;
      const double high_wavelen = old_ctx / rope.high_freq_factor;
      for (int64_t i = 0; i < half; ++i) {
        const double wavelen = 2.0 * M_PI / inv[i];
        if (wavelen > low_wavelen) {
          inv[i] = inv[i] / factor;
        } else if (wavelen >= high_wavelen) {
          const double smooth = (old_ctx / wavelen - rope.low_freq_factor) /
                                (rope.high_freq_factor - rope.low_freq_factor);
          inv[i] = (1.0 - smooth) * inv[i] / factor + smooth * inv[i];
        }
      }
      break;
    }
    case RopeType::yarn: {
      // _compute_yarn_parameters: blend of interpolated (inv / factor) and extrapolated (inv)
      // frequencies with a linear ramp over the correction range [low, high] of pair indices.
      const double factor = rope.factor;
      const double dim = static_cast<double>(head_dim);
      const double orig = static_cast<double>(rope.original_max_position_embeddings);
      auto correction_dim = [&](double rotations) {
        return dim * std::log(orig / (rotations * 2.0 * M_PI)) / (2.0 * std::log(base));
      };
      double low = correction_dim(rope.beta_fast), high = correction_dim(rope.beta_slow);
      if (rope.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      low = std::max(low, 0.0);
      high = std::min(high, dim - 1);
      if (low == high) high += 0.001;  // as HF: avoid a zero-width ramp
      for (int64_t i = 0; i < half; ++i) {
        const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
        const double extrapolation = 1.0 - ramp;
        inv[i] = (inv[i] / factor) * (1.0 - extrapolation) + inv[i] * extrapolation;
      }
      f.attention_scaling = rope.attention_factor
                                ? static_cast<float>(*rope.attention_factor)
                                : (factor <= 1.0 ? 1.f : static_cast<float>(0.1 * std::log(factor) + 1.0));
      break;
    }
  }
  for (int64_t i = 0; i < half; ++i) f.inv_freq[i] = static_cast<float>(inv[i]);
  return f;
}

void rope_table_fill(float* cos, float* sin, const RopeFrequencies& f, int64_t pos0, int64_t n) {
  const int64_t half = static_cast<int64_t>(f.inv_freq.size());
#pragma omp parallel for schedule(static) if (n * half >= kParallelMinElements)
  for (int64_t i = 0; i < n; ++i) {
    const float pos = static_cast<float>(pos0 + i);
    for (int64_t j = 0; j < half; ++j) {
      // fp32 angle as in HF (inv_freq.float() @ position_ids.float()); cos/sin of that angle.
      const float angle = f.inv_freq[j] * pos;
      cos[i * half + j] = static_cast<float>(std::cos(static_cast<double>(angle))) * f.attention_scaling;
      sin[i * half + j] = static_cast<float>(std::sin(static_cast<double>(angle))) * f.attention_scaling;
    }
  }
}

void rope_forward(float* x, const float* cos, const float* sin, int64_t n, int64_t heads,
                  int64_t head_dim) {
  const int64_t half = head_dim / 2;
#pragma omp parallel for schedule(static) if (n * heads * head_dim >= kParallelMinElements)
  for (int64_t i = 0; i < n; ++i) {
    const float* c = cos + i * half;
    const float* s = sin + i * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (i * heads + h) * head_dim;
#pragma omp simd
      for (int64_t j = 0; j < half; ++j) {
        const float a = v[j], b = v[j + half];
        v[j] = a * c[j] - b * s[j];
        v[j + half] = b * c[j] + a * s[j];
      }
    }
  }
}

void swiglu_forward(float* out, const float* gate_up, int64_t rows, int64_t ffn) {
#pragma omp parallel for schedule(static) if (rows * ffn >= kParallelMinElements)
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gate_up + r * 2 * ffn;
    const float* u = g + ffn;
    float* o = out + r * ffn;
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= ffn; i += 16)
      _mm512_storeu_ps(o + i, _mm512_mul_ps(detail::silu(_mm512_loadu_ps(g + i)), _mm512_loadu_ps(u + i)));
#endif
    for (; i < ffn; ++i) o[i] = detail::silu(g[i]) * u[i];
  }
}

void qkv_split_forward(float* q, float* k, float* v, const float* qkv, int64_t n, int64_t q_dim,
                       int64_t kv_dim) {
  const int64_t row = q_dim + 2 * kv_dim;
#pragma omp parallel for schedule(static) if (n * row >= kParallelMinElements)
  for (int64_t i = 0; i < n; ++i) {
    const float* src = qkv + i * row;
    std::memcpy(q + i * q_dim, src, sizeof(float) * q_dim);
    std::memcpy(k + i * kv_dim, src + q_dim, sizeof(float) * kv_dim);
    std::memcpy(v + i * kv_dim, src + q_dim + kv_dim, sizeof(float) * kv_dim);
  }
}

void residual_forward(float* x, const float* delta, int64_t count) {
#pragma omp parallel for simd schedule(static) if (count >= kParallelMinElements)
  for (int64_t i = 0; i < count; ++i) x[i] += delta[i];
}

void softmax_forward(float* x, int64_t count) {
  if (count <= 0) return;
  float m = x[0];
  for (int64_t i = 1; i < count; ++i) m = std::max(m, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < count; ++i) {
    x[i] = std::exp(x[i] - m);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < count; ++i) x[i] *= inv;
}

}  // namespace elastic
