// CPU linear layers, first version: straightforward dot products, threaded over output
// features. Correct reference; the tuned kernels replace the inner loops.
#include <vector>

#include "elastic/cpu_matmul.h"
#include "elastic/error.h"

namespace elastic {

CpuWeight cpu_weight_prepare(const TensorView& w) {
  if (w.shape.size() != 2)
    throw Error("tensor '" + w.name + "': expected a 2-D weight, got shape " + shape_str(w.shape));
  if (w.dtype != DType::f32 && w.dtype != DType::f16 && w.dtype != DType::bf16)
    throw Error("tensor '" + w.name + "': dtype " + std::string(dtype_name(w.dtype)) +
                " is not supported for weights (expected F32, F16 or BF16)");
  CpuWeight r;
  r.dtype = w.dtype;
  r.rows = w.shape[0];
  r.cols = w.shape[1];
  r.data = w.data;
  return r;
}

void matmul_cpu(float* y, const float* x, const CpuWeight& w, const float* bias, int64_t n) {
  const int64_t N = w.rows, K = w.cols;
  const size_t esz = dtype_size(w.dtype);
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(K));
#pragma omp for schedule(static)
    for (int64_t j = 0; j < N; ++j) {
      convert_to_f32(row.data(), static_cast<const char*>(w.data) + j * K * esz, w.dtype,
                     static_cast<size_t>(K));
      for (int64_t i = 0; i < n; ++i) {
        const float* xi = x + i * K;
        float s = 0.f;
        for (int64_t t = 0; t < K; ++t) s += xi[t] * row[t];
        y[i * N + j] = s + (bias ? bias[j] : 0.f);
      }
    }
  }
}

}  // namespace elastic
