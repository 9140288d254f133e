// The CPU backend: host memory and the reference ops of cpu_ops.h, cpu_matmul.h and
// attention_cpu. Stateless, so one shared instance serves every model.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "elastic/backend.h"
#include "elastic/batch_forward.h"
#include "elastic/cpu_matmul.h"
#include "elastic/cpu_ops.h"
#include "elastic/error.h"

namespace elastic {

// Backends that make KV stores override this; the forward calls it only with a store it got
// from kv_store_create(), which returns null here.
void Backend::attention_forward_stored(const AttnArgs&, KvStore&, int64_t) {
  ELASTIC_CHECK_MSG(false, "attention_forward_stored on a backend that makes no KV store");
}

bool host_all_finite(const float* x, int64_t count) {
  // x * 0 is 0 for finite x and NaN for NaN or Inf: one vectorisable pass, no branch.
  float acc = 0.f;
  for (int64_t i = 0; i < count; ++i) acc += x[i] * 0.f;
  return acc == 0.f;
}

bool Backend::all_finite(const float* x, int64_t count) {
  std::vector<float> host(static_cast<size_t>(count));
  download(host.data(), x, host.size() * sizeof(float));
  return host_all_finite(host.data(), count);
}

namespace {

class CpuBackend final : public Backend {
 public:
  std::string_view name() const override { return "cpu"; }

  std::shared_ptr<void> alloc(size_t bytes) override {
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    if (!p) throw Error("out of memory allocating " + std::to_string(bytes) + " bytes");
    return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  }
  void upload(void* dst, const void* host_src, size_t bytes) override {
    std::memcpy(dst, host_src, bytes);
  }
  void download(void* host_dst, const void* src, size_t bytes) override {
    std::memcpy(host_dst, src, bytes);
  }

  Linear linear_prepare(const TensorView& w) override {
    auto cw = std::make_shared<CpuWeight>(cpu_weight_prepare(w));
    Linear l;
    l.rows = cw->rows;
    l.cols = cw->cols;
    l.dtype = cw->dtype;
    l.impl = cw;
    return l;
  }

  void embedding_forward(float* out, const int64_t* ids, int64_t n, const void* table, DType dtype,
                         int64_t vocab, int64_t dim) override {
    elastic::embedding_forward(out, ids, n, table, dtype, vocab, dim);
  }
  void rmsnorm_forward(float* out, const float* inp, const float* weight, int64_t rows,
                       int64_t dim, float eps) override {
    elastic::rmsnorm_forward(out, inp, weight, rows, dim, eps);
  }
  void linear_forward(float* out, const float* inp, const Linear& w, const float* bias,
                      int64_t n) override {
    ELASTIC_CHECK(w.impl != nullptr);
    matmul_cpu(out, inp, *static_cast<const CpuWeight*>(w.impl.get()), bias, n);
  }
  void rope_forward(float* x, const float* cos, const float* sin, int64_t n, int64_t heads,
                    int64_t head_dim) override {
    elastic::rope_forward(x, cos, sin, n, heads, head_dim);
  }
  void swiglu_forward(float* out, const float* gate_up, int64_t rows, int64_t ffn) override {
    elastic::swiglu_forward(out, gate_up, rows, ffn);
  }
  void qkv_split_forward(float* q, float* k, float* v, const float* qkv, int64_t n, int64_t q_dim,
                         int64_t kv_dim) override {
    elastic::qkv_split_forward(q, k, v, qkv, n, q_dim, kv_dim);
  }
  void residual_forward(float* x, const float* delta, int64_t count) override {
    elastic::residual_forward(x, delta, count);
  }
  bool all_finite(const float* x, int64_t count) override { return host_all_finite(x, count); }
  void attention_forward(const AttnArgs& args) override { attention_cpu(args); }

  bool attention_paged_supported() const override { return true; }
  void attention_paged_forward(const PagedAttnParams& p) override {
    attention_paged_cpu(p);
    attention_paged_store_cpu(p);
  }
};

}  // namespace

std::shared_ptr<Backend> backend_cpu() {
  static std::shared_ptr<Backend> instance = std::make_shared<CpuBackend>();
  return instance;
}

}  // namespace elastic
