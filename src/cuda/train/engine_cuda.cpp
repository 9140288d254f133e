// CudaTrainEngine (engine_cuda.h): the layer loop of model_train.cpp on the device. Every
// function below names its CPU counterpart; shapes in the comments are per packed batch
// (n rows, S samples).
#include "cuda/train/engine_cuda.h"
#include "elastic/cuda/train_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/train/attention_train_cuda.h"
#include "cuda/gemm_lt.h"
#include "cuda/train/ops_train_cuda.h"
#include "elastic/cpu_ops.h"
#include "elastic/cuda/cuda_check.h"
#include "elastic/dtype.h"
#include "elastic/error.h"
#include "train/model_train.h"
#include "train/router_train.h"

namespace elastic::train {
namespace {

using bf16 = __nv_bfloat16;
namespace ops = cuda::train_ops;
using cuda::GemmOut;

// Device allocations of one pool, freed together; counts its bytes.
class DevicePool {
 public:
  DevicePool() = default;
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;
  ~DevicePool() { clear(); }
  template <typename T>
  T* alloc(int64_t count) {
    void* p = nullptr;
    const size_t bytes = std::max<size_t>(size_t(count) * sizeof(T), 256);
    ELASTIC_CUDA_CHECK(cudaMalloc(&p, bytes));
    ptrs_.push_back(p);
    bytes_ += bytes;
    return static_cast<T*>(p);
  }
  void clear() {
    for (void* p : ptrs_) cudaFree(p);  // no throw: called from the destructor
    ptrs_.clear();
    bytes_ = 0;
  }
  size_t bytes() const { return bytes_; }

 private:
  std::vector<void*> ptrs_;
  size_t bytes_ = 0;
};

// Pinned host allocations of one step (transfers that overlap device work), freed together.
class PinnedPool {
 public:
  PinnedPool() = default;
  PinnedPool(const PinnedPool&) = delete;
  PinnedPool& operator=(const PinnedPool&) = delete;
  ~PinnedPool() { clear(); }
  template <typename T>
  T* alloc(int64_t count) {
    void* p = nullptr;
    ELASTIC_CUDA_CHECK(cudaMallocHost(&p, std::max<size_t>(size_t(count) * sizeof(T), 64)));
    ptrs_.push_back(p);
    return static_cast<T*>(p);
  }
  void clear() {
    for (void* p : ptrs_) cudaFreeHost(p);  // no throw: called from the destructor
    ptrs_.clear();
  }

 private:
  std::vector<void*> ptrs_;
};

template <typename T>
void upload(T* dst, const T* src, size_t count, cudaStream_t s) {
  ELASTIC_CUDA_CHECK(cudaMemcpyAsync(dst, src, count * sizeof(T), cudaMemcpyHostToDevice, s));
}
template <typename T>
void download(T* dst, const T* src, size_t count, cudaStream_t s) {
  ELASTIC_CUDA_CHECK(cudaMemcpyAsync(dst, src, count * sizeof(T), cudaMemcpyDeviceToHost, s));
}
template <typename T>
void zero(T* p, int64_t count, cudaStream_t s) {
  ELASTIC_CUDA_CHECK(cudaMemsetAsync(p, 0, size_t(count) * sizeof(T), s));
}

std::vector<uint16_t> to_bf16_host(const float* x, size_t n) {
  std::vector<uint16_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = f32_to_bf16(x[i]);
  return out;
}

// Phase timeline of a step: an event at every phase change on the engine's stream.
enum class Phase { gemm, attention_forward, attention_backward, head, router, elementwise, count };

class PhaseTimer {
 public:
  ~PhaseTimer() {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);  // no throw from a destructor
  }
  void start() { used_ = 0, phases_.clear(); }
  void mark(Phase p, cudaStream_t s) {
    if (!phases_.empty() && phases_.back() == p) return;
    if (used_ == events_.size()) {
      cudaEvent_t e;
      ELASTIC_CUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
    ELASTIC_CUDA_CHECK(cudaEventRecord(events_[used_++], s));
    phases_.push_back(p);
  }
  // After the stream's last event completed: milliseconds per phase.
  std::vector<double> collect() {
    std::vector<double> ms(size_t(Phase::count), 0.0);
    for (size_t i = 0; i + 1 < used_; ++i) {
      float t = 0;
      ELASTIC_CUDA_CHECK(cudaEventElapsedTime(&t, events_[i], events_[i + 1]));
      ms[size_t(phases_[i])] += t;
    }
    return ms;
  }

 private:
  std::vector<cudaEvent_t> events_;
  std::vector<Phase> phases_;
  size_t used_ = 0;
};

class CudaTrainEngine final : public TrainEngine {
 public:
  CudaTrainEngine(const ModelConfig& c, ParamSet<float>* backbone, ParamSet<float> router,
                  const TrainOptions& opt, const CudaTrainOptions& copt, uint64_t seed,
                  float stddev)
      : c_(c),
        opt_(opt),
        copt_(copt),
        rope_(rope_frequencies(c.rope, c.head_dim)),
        layout_(backbone_layout(c)),
        router_(std::move(router)) {
    if (cuda::cuda_device_count() == 0) throw Error("CUDA training engine: no CUDA device present");
    const int64_t d = c.head_dim;
    if (d != 16 && d != 32 && d != 64 && d != 128)
      throw Error("CUDA training engine: head_dim must be 16, 32, 64 or 128, got " +
                  std::to_string(d));
    ELASTIC_CHECK(copt_.mlp_chunk_rows > 0 && copt_.head_chunk_rows > 0);
    ELASTIC_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    ELASTIC_CUDA_CHECK(cudaEventCreateWithFlags(&routed_, cudaEventDisableTiming));
    gemm_ = std::make_unique<cuda::GemmLt>();
    const int64_t total = layout_.total();
    w_ = persistent_.alloc<bf16>(total);
    if (backbone) {
      ELASTIC_CHECK(backbone->layout.total() == total);
      const std::vector<uint16_t> h = to_bf16_host(backbone->data.data(), size_t(total));
      upload(reinterpret_cast<uint16_t*>(w_), h.data(), h.size(), stream_);
      if (opt_.weight_grads) {
        w32_ = persistent_.alloc<float>(total);
        upload(w32_, backbone->data.data(), size_t(total), stream_);
      }
    } else {
      if (opt_.weight_grads) throw Error("CUDA training engine: a synthetic backbone is frozen");
      for (const ParamInfo& p : layout_.tensors()) {
        const bool norm = p.shape.size() == 1;  // norms (and biases) 1, matrices random
        if (norm)
          ops::fill_bf16(w_ + p.offset, p.numel(), 1.f, stream_);
        else
          ops::fill_random_bf16(w_ + p.offset, p.numel(), seed + uint64_t(p.offset), stddev,
                                stream_);
      }
    }
    W_ = backbone_bind_at(w_, layout_, c_);
    if (opt_.weight_grads) {
      g_ = persistent_.alloc<float>(total);
      m_ = persistent_.alloc<float>(total);
      v_ = persistent_.alloc<float>(total);
      zero(g_, total, stream_);
      zero(m_, total, stream_);
      zero(v_, total, stream_);
      G_ = backbone_bind_at(g_, layout_, c_);
    }
    partials_ = persistent_.alloc<double>(kSumBlocks);
    if (router_.layout.total() > 0) {
      R_ = router_bind(router_, c_);
      if (opt_.router_grads) rgrad_ = ParamSet<float>(router_.layout);
      rm_ = ParamSet<float>(router_.layout);
      rv_ = ParamSet<float>(router_.layout);
    }
    ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  ~CudaTrainEngine() override {
    cudaStreamSynchronize(stream_);  // no throw from a destructor
    host_.clear();
    cudaEventDestroy(routed_);
    gemm_.reset();
    cudaStreamDestroy(stream_);
  }

  const char* backend_name() const override { return "cuda"; }
  const ModelConfig& config() const override { return c_; }
  const TrainOptions& options() const override { return opt_; }

  StepResult step(const Batch& b, const StepRouting& r, const StepLoss& l) override {
    return run(b, r, l, true);
  }
  StepResult evaluate(const Batch& b, const StepRouting& r, const StepLoss& l) override {
    return run(b, r, l, false);
  }
  void zero_grad() override {
    rgrad_.zero();
    if (g_) zero(g_, layout_.total(), stream_);
    ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  double grad_norm_squared(ParamGroup g) override {
    ELASTIC_CHECK_MSG(has(g), "parameter group without gradients");
    if (g == ParamGroup::router) {
      double s = 0;
      for (float x : rgrad_.data) s += static_cast<double>(x) * x;
      return s;
    }
    const int blocks = ops::sum_squares(partials_, kSumBlocks, g_, layout_.total(), stream_);
    std::vector<double> part(static_cast<size_t>(blocks));
    download(part.data(), partials_, part.size(), stream_);
    ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream_));
    double s = 0;
    for (double x : part) s += x;
    return s;
  }
  void adamw_step(ParamGroup g, const AdamWConfig& a, double grad_scale, int64_t t) override {
    ELASTIC_CHECK_MSG(has(g), "parameter group without optimizer state");
    if (g == ParamGroup::router) {  // the router's state lives on the host (engine_cuda.h)
      adamw_update(router_.data.data(), rgrad_.data.data(), rm_.data.data(), rv_.data.data(),
                   router_.layout.total(), a, grad_scale, t);
      return;
    }
    ELASTIC_CHECK(t >= 1);
    ops::AdamWArgs args;
    args.lr = a.lr, args.beta1 = a.beta1, args.beta2 = a.beta2, args.eps = a.eps;
    args.weight_decay = a.weight_decay, args.grad_scale = grad_scale;
    args.bc1 = 1.0 - std::pow(a.beta1, double(t));
    args.bc2 = 1.0 - std::pow(a.beta2, double(t));
    ops::adamw_update(w32_, w_, g_, m_, v_, layout_.total(), args, stream_);
    ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  bool has(ParamGroup g) const override {
    return g == ParamGroup::router ? router_.layout.total() > 0 : opt_.weight_grads;
  }
  const ParamLayout& layout(ParamGroup g) const override {
    return g == ParamGroup::router ? router_.layout : layout_;
  }
  std::vector<float> get(ParamGroup g, ParamState s) override {
    if (g == ParamGroup::router) return host_set(s).data;
    const size_t n = size_t(layout_.total());
    std::vector<float> out(n);
    if (s == ParamState::value && !w32_) {
      std::vector<uint16_t> h(n);
      download(h.data(), reinterpret_cast<const uint16_t*>(w_), n, stream_);
      ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream_));
      for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(h[i]);
      return out;
    }
    download(out.data(), device_state(s), n, stream_);
    ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return out;
  }
  void set(ParamGroup g, ParamState s, const std::vector<float>& values) override {
    const int64_t n = g == ParamGroup::router ? router_.layout.total() : layout_.total();
    if (int64_t(values.size()) != n)
      throw Error("training state: " + std::to_string(values.size()) + " values for a group of " +
                  std::to_string(n));
    if (g == ParamGroup::router) {
      host_set(s).data = values;
      return;
    }
    if (s == ParamState::value) {
      const std::vector<uint16_t> h = to_bf16_host(values.data(), values.size());
      upload(reinterpret_cast<uint16_t*>(w_), h.data(), h.size(), stream_);
      if (w32_) upload(w32_, values.data(), values.size(), stream_);
    } else {
      upload(device_state(s), values.data(), values.size(), stream_);
    }
    ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  const CudaTrainProfile& profile() const { return profile_; }

  size_t device_bytes() const {
    return persistent_.bytes() + scratch_.bytes() + step_.bytes() + (size_t(32) << 20);
  }

 private:
  static constexpr int kSumBlocks = 1024;
  static constexpr int64_t kDzChunkRows = 256;

  ParamSet<float>& host_set(ParamState s) {
    switch (s) {
      case ParamState::value:
        return router_;
      case ParamState::grad:
        ELASTIC_CHECK_MSG(opt_.router_grads, "router group without gradients");
        return rgrad_;
      case ParamState::adam_m:
        return rm_;
      case ParamState::adam_v:
        return rv_;
    }
    return router_;
  }
  float* device_state(ParamState s) {
    ELASTIC_CHECK_MSG(opt_.weight_grads, "backbone group without gradients or optimizer state");
    switch (s) {
      case ParamState::value:
        return w32_;
      case ParamState::grad:
        return g_;
      case ParamState::adam_m:
        return m_;
      case ParamState::adam_v:
        return v_;
    }
    return w32_;
  }

  // Activations of one layer (LayerActs of model_train.cpp) and the backward's gradients,
  // allocated for the largest batch seen.
  struct Scratch {
    int64_t rows = 0, mlp_rows = 0, head_rows = 0;
    bf16* x = nullptr;  // [L + 1, n, D] residual entering every layer
    bf16 *xn1 = nullptr, *q_raw = nullptr, *k_raw = nullptr,
         *v = nullptr;  // [n, D] [n, Hq d] [n, Hkv d] x2
    bf16 *q_n = nullptr, *k_n = nullptr, *q = nullptr, *k = nullptr;  // after norms / RoPE
    float *rstd1 = nullptr, *rstd_q = nullptr, *rstd_k = nullptr, *rstd2 = nullptr;
    bf16 *att = nullptr, *other = nullptr;  // [n, Hq, d] chosen and other mode
    float *lse = nullptr, *lse_other = nullptr, *dsum = nullptr;  // [n, Hq]
    float* x_mid = nullptr;                                       // [n, D]
    bf16* xn2 = nullptr;                                          // [n, D]
    bf16 *gate = nullptr, *up = nullptr, *act = nullptr;          // [mlp_rows, F]
    bf16 *dact = nullptr, *dgate = nullptr, *dup = nullptr;
    float* mlp_out = nullptr;                             // [mlp_rows, D]
    float *dx = nullptr, *dxn = nullptr;                  // [n, D]
    bf16* dx_bf = nullptr;                                // [n, D]
    bf16* datt = nullptr;                                 // [n, Hq d]
    float *dq = nullptr, *dq_n = nullptr;                 // [n, Hq d]
    float *dk = nullptr, *dk_n = nullptr, *dv = nullptr;  // [n, Hkv d]
    bf16 *dq_bf = nullptr, *dk_bf = nullptr, *dv_bf = nullptr;
    float* cos = nullptr;  // [n, d/2]
    float* sin = nullptr;
    int32_t* ids = nullptr;  // [n]
    float* dxf = nullptr;    // [n, D] dL/d(final norm output)
    bf16* xf = nullptr;      // [n, D]
    float* rstd_f = nullptr;
    bf16* head_x = nullptr;                               // [head_rows, D]
    float* head_dx = nullptr;                             // [head_rows, D]
    float* logits = nullptr;                              // [head_rows, V]
    bf16* dlogits = nullptr;                              // [head_rows, V]
    int32_t *head_idx = nullptr, *head_labels = nullptr;  // [n]
    double* head_loss = nullptr;                          // [n]
  };

  void ensure_scratch(int64_t n) {
    const int64_t mlp_rows = std::min(n, copt_.mlp_chunk_rows);
    const int64_t head_rows = std::min(n, copt_.head_chunk_rows);
    if (n <= s_.rows && mlp_rows <= s_.mlp_rows && head_rows <= s_.head_rows) return;
    ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream_));
    scratch_.clear();
    const int64_t D = c_.hidden_size, F = c_.intermediate_size, V = c_.vocab_size,
                  L = c_.num_layers;
    const int64_t qd = c_.num_heads * c_.head_dim, kd = c_.num_kv_heads * c_.head_dim;
    const int64_t Hq = c_.num_heads, Hkv = c_.num_kv_heads;
    Scratch s;
    s.rows = n, s.mlp_rows = mlp_rows, s.head_rows = head_rows;
    auto& P = scratch_;
    s.x = P.alloc<bf16>((L + 1) * n * D);
    s.xn1 = P.alloc<bf16>(n * D), s.q_raw = P.alloc<bf16>(n * qd), s.k_raw = P.alloc<bf16>(n * kd);
    s.v = P.alloc<bf16>(n * kd), s.q = P.alloc<bf16>(n * qd), s.k = P.alloc<bf16>(n * kd);
    if (c_.qk_norm) {
      s.q_n = P.alloc<bf16>(n * qd), s.k_n = P.alloc<bf16>(n * kd);
      s.rstd_q = P.alloc<float>(n * Hq), s.rstd_k = P.alloc<float>(n * Hkv);
    } else {
      s.q_n = s.q_raw, s.k_n = s.k_raw;
    }
    s.rstd1 = P.alloc<float>(n), s.rstd2 = P.alloc<float>(n);
    s.att = P.alloc<bf16>(n * qd), s.other = P.alloc<bf16>(n * qd);
    s.lse = P.alloc<float>(n * Hq), s.lse_other = P.alloc<float>(n * Hq),
    s.dsum = P.alloc<float>(n * Hq);
    s.x_mid = P.alloc<float>(n * D), s.xn2 = P.alloc<bf16>(n * D);
    s.gate = P.alloc<bf16>(mlp_rows * F), s.up = P.alloc<bf16>(mlp_rows * F),
    s.act = P.alloc<bf16>(mlp_rows * F);
    s.dact = P.alloc<bf16>(mlp_rows * F), s.dgate = P.alloc<bf16>(mlp_rows * F),
    s.dup = P.alloc<bf16>(mlp_rows * F);
    s.mlp_out = P.alloc<float>(mlp_rows * D);
    s.dx = P.alloc<float>(n * D), s.dxn = P.alloc<float>(n * D), s.dx_bf = P.alloc<bf16>(n * D);
    s.datt = P.alloc<bf16>(n * qd), s.dq = P.alloc<float>(n * qd), s.dq_n = P.alloc<float>(n * qd);
    s.dk = P.alloc<float>(n * kd), s.dk_n = P.alloc<float>(n * kd), s.dv = P.alloc<float>(n * kd);
    s.dq_bf = P.alloc<bf16>(n * qd), s.dk_bf = P.alloc<bf16>(n * kd),
    s.dv_bf = P.alloc<bf16>(n * kd);
    s.cos = P.alloc<float>(n * c_.head_dim / 2), s.sin = P.alloc<float>(n * c_.head_dim / 2);
    s.ids = P.alloc<int32_t>(n);
    s.dxf = P.alloc<float>(n * D), s.xf = P.alloc<bf16>(n * D), s.rstd_f = P.alloc<float>(n);
    s.head_x = P.alloc<bf16>(head_rows * D), s.head_dx = P.alloc<float>(head_rows * D);
    s.logits = P.alloc<float>(head_rows * V), s.dlogits = P.alloc<bf16>(head_rows * V);
    s.head_idx = P.alloc<int32_t>(n), s.head_labels = P.alloc<int32_t>(n),
    s.head_loss = P.alloc<double>(n);
    s_ = s;
  }

  // Per-step inputs and routing (host and device).
  struct StepCtx {
    const Batch* batch = nullptr;
    int64_t n = 0, S = 0;
    std::unique_ptr<cuda::AttnTrainPlan> plan;
    uint8_t* modes_dev = nullptr;  // [L, S, Hkv]
    int4* dz_chunks = nullptr;     // [dz_count] (sequence, first row, end row)
    int64_t dz_count = 0;
    double* pooled = nullptr;                  // [S, Hkv, d] device: pooled keys, then dL/dpooled
    double* dz = nullptr;                      // [S, Hkv] device
    double* pooled_host = nullptr;             // [S, Hkv, d] pinned
    double* dz_host = nullptr;                 // [S, Hkv] pinned
    uint8_t* modes_host = nullptr;             // [L, S, Hkv] pinned
    std::vector<std::vector<AttnMode>> modes;  // [L][S * Hkv]
    std::vector<std::vector<GumbelDecision>> gumbel;  // [L][S * Hkv] (router)
    std::vector<std::vector<RouterCache>> cache;      // [L][S * Hkv] (router)
    std::vector<std::vector<double>> dl_dzfa;         // [L][S * Hkv]
  };

  // TrainModel::layer_forward: x_out null = the backward's recompute (no MLP; routing reused).
  void layer_forward(int64_t l, const bf16* x_in, bf16* x_out, bool decide, bool both_modes,
                     StepCtx& ctx, const StepRouting& routing) {
    const LayerParams<bf16>& w = W_.layers[size_t(l)];
    const int64_t n = ctx.n, S = ctx.S, D = c_.hidden_size;
    const int64_t Hq = c_.num_heads, Hkv = c_.num_kv_heads, d = c_.head_dim;
    const float eps = float(c_.rms_norm_eps);
    cudaStream_t st = stream_;
    phase(Phase::elementwise);
    ops::rmsnorm_forward<bf16>(s_.xn1, s_.rstd1, x_in, w.input_norm, n, D, eps, st);
    phase(Phase::gemm);
    gemm_->linear_forward(s_.q_raw, GemmOut::bf16, s_.xn1, w.wq, n, Hq * d, D, 0.f, st);
    gemm_->linear_forward(s_.k_raw, GemmOut::bf16, s_.xn1, w.wk, n, Hkv * d, D, 0.f, st);
    gemm_->linear_forward(s_.v, GemmOut::bf16, s_.xn1, w.wv, n, Hkv * d, D, 0.f, st);
    phase(Phase::elementwise);
    if (w.bq) ops::bias_add(s_.q_raw, w.bq, n, Hq * d, st);
    if (w.bk) ops::bias_add(s_.k_raw, w.bk, n, Hkv * d, st);
    if (w.bv) ops::bias_add(s_.v, w.bv, n, Hkv * d, st);
    if (w.q_norm) {
      ops::rmsnorm_forward<bf16>(s_.q_n, s_.rstd_q, s_.q_raw, w.q_norm, n * Hq, d, eps, st);
      ops::rmsnorm_forward<bf16>(s_.k_n, s_.rstd_k, s_.k_raw, w.k_norm, n * Hkv, d, eps, st);
    }
    // Routing from the keys before RoPE; RoPE runs on the device while the host routes.
    if (decide) route_begin(ctx, routing);
    phase(Phase::elementwise);
    ops::rope_forward(s_.q, s_.q_n, s_.cos, s_.sin, n, Hq, d, st);
    ops::rope_forward(s_.k, s_.k_n, s_.cos, s_.sin, n, Hkv, d, st);
    if (decide) route_end(l, ctx, routing);
    const uint8_t* modes = ctx.modes_dev + l * S * Hkv;
    phase(Phase::attention_forward);
    cuda::attention_train_forward(s_.att, s_.lse, s_.q, s_.k, s_.v, modes, 0, *ctx.plan, st);
    if (both_modes)  // the other mode of every head: dL/dz needs O_FA - O_SA
      cuda::attention_train_forward(s_.other, s_.lse_other, s_.q, s_.k, s_.v, modes, 1, *ctx.plan,
                                    st);
    // x_mid = x_in + att Wo^T (+ bo), fp32.
    phase(Phase::elementwise);
    ops::convert_bf16_to_f32(s_.x_mid, x_in, n * D, st);
    phase(Phase::gemm);
    gemm_->linear_forward(s_.x_mid, GemmOut::f32, s_.att, w.wo, n, D, Hq * d, 1.f, st);
    phase(Phase::elementwise);
    if (w.bo) ops::bias_add(s_.x_mid, w.bo, n, D, st);
    ops::rmsnorm_forward<float>(s_.xn2, s_.rstd2, s_.x_mid, w.post_norm, n, D, eps, st);
    if (!x_out) return;
    // MLP over row tiles: x_out = bf16(x_mid + down(silu(gate) * up)).
    const int64_t F = c_.intermediate_size;
    for (int64_t r0 = 0; r0 < n; r0 += s_.mlp_rows) {
      const int64_t m = std::min(s_.mlp_rows, n - r0);
      phase(Phase::gemm);
      gemm_->linear_forward(s_.gate, GemmOut::bf16, s_.xn2 + r0 * D, w.w_gate, m, F, D, 0.f, st);
      gemm_->linear_forward(s_.up, GemmOut::bf16, s_.xn2 + r0 * D, w.w_up, m, F, D, 0.f, st);
      phase(Phase::elementwise);
      ops::swiglu_forward(s_.act, s_.gate, s_.up, m * F, st);
      ELASTIC_CUDA_CHECK(cudaMemcpyAsync(s_.mlp_out, s_.x_mid + r0 * D,
                                         size_t(m * D) * sizeof(float), cudaMemcpyDeviceToDevice,
                                         st));
      phase(Phase::gemm);
      gemm_->linear_forward(s_.mlp_out, GemmOut::f32, s_.act, w.w_down, m, D, F, 1.f, st);
      phase(Phase::elementwise);
      ops::convert_f32_to_bf16(x_out + r0 * D, s_.mlp_out, m * D, st);
    }
  }

  // The routing block of TrainModel::layer_forward (decide): pooled keys down, the MLPs and the
  // Gumbel decision on the host, modes up.
  // Pooling on the device and the pooled keys' transfer to pinned memory (event routed_).
  void route_begin(StepCtx& ctx, const StepRouting& routing) {
    if (!routing.router) return;
    const int64_t S = ctx.S, Hkv = c_.num_kv_heads, d = c_.head_dim;
    phase(Phase::router);
    ops::router_pool_forward(ctx.pooled, s_.k_n, ctx.plan->seqs_dev(), S, Hkv, d, opt_.pool_tokens,
                             opt_.pooling == RouterPooling::segment_mean, stream_);
    download(ctx.pooled_host, ctx.pooled, size_t(S * Hkv * d), stream_);
    ELASTIC_CUDA_CHECK(cudaEventRecord(routed_, stream_));
  }
  void route_end(int64_t l, StepCtx& ctx, const StepRouting& routing) {
    const int64_t S = ctx.S, Hkv = c_.num_kv_heads, d = c_.head_dim, L = c_.num_layers;
    phase(Phase::router);
    std::vector<AttnMode>& modes = ctx.modes[size_t(l)];
    modes.assign(size_t(S * Hkv), AttnMode::fa);
    ctx.dl_dzfa[size_t(l)].assign(size_t(S * Hkv), 0.0);
    if (routing.router) {
      ELASTIC_CUDA_CHECK(cudaEventSynchronize(routed_));
      const double* pooled = ctx.pooled_host;
      auto& gumbel = ctx.gumbel[size_t(l)];
      auto& cache = ctx.cache[size_t(l)];
      gumbel.assign(size_t(S * Hkv), GumbelDecision{});
      cache.assign(size_t(S * Hkv), RouterCache{});
#pragma omp parallel for schedule(dynamic, 1)
      for (int64_t i = 0; i < S * Hkv; ++i) {
        const int64_t s = i / Hkv, h = i % Hkv;
        RouterCache& rc = cache[size_t(i)];
        rc.x.assign(pooled + i * d, pooled + (i + 1) * d);
        router_mlp_forward(rc, R_[size_t(l)], d);
        const double* u = routing.gumbel_u.data() + ((s * L + l) * Hkv + h) * 2;
        gumbel[size_t(i)] = gumbel_softmax_forward(rc.z, u, routing.temperature);
        modes[size_t(i)] = gumbel[size_t(i)].fa ? AttnMode::fa : AttnMode::ssa;
      }
    } else {
      for (int64_t i = 0; i < S * Hkv; ++i) {
        const int64_t s = i / Hkv, h = i % Hkv;
        modes[size_t(i)] =
            routing.fixed[size_t((s * L + l) * Hkv + h)] ? AttnMode::fa : AttnMode::ssa;
      }
    }
    uint8_t* m8 = ctx.modes_host + l * S * Hkv;  // pinned, one slice per layer: no reuse
    for (size_t i = 0; i < modes.size(); ++i) m8[i] = uint8_t(modes[i]);
    upload(ctx.modes_dev + l * S * Hkv, m8, modes.size(), stream_);
    phase(Phase::elementwise);
  }

  // The router part of TrainModel::layer_backward on the host: dL/dz_FA = dl_dzfa (Omega) +
  // sign * dz (the mixture; sign -1 where SSA was chosen, as dz came from O_chosen - O_other),
  // then the Gumbel and MLP backward of every (sample, KV head) into dpooled: [S, Hkv, d] and
  // the router's layer-l weight gradients. Items run in parallel, each thread adding its weight
  // gradients into its own copy of the layer's tensors, summed in thread order afterwards.
  // dz: [S, Hkv]; dpooled: [S, Hkv, d].
  void router_backward_host(int64_t l, const double* dz, double* dpooled, const StepCtx& ctx,
                            const StepRouting& routing) {
    const int64_t items = ctx.S * c_.num_kv_heads, d = c_.head_dim;
    const std::vector<AttnMode>& modes = ctx.modes[size_t(l)];
    float* layer_grad = nullptr;  // the layer's slice of rgrad_ (tensors contiguous, in order)
    int64_t layer_size = 0;
    RouterLayerParams<float> rg;
    if (opt_.router_grads) {
      rg = router_bind(rgrad_, c_)[size_t(l)];
      layer_grad = rg.w1;
      layer_size = router_.layout.total() / c_.num_layers;
    }
    const int threads = std::max(1, std::min<int>(omp_get_max_threads(), int(items)));
    std::vector<std::vector<float>> part(static_cast<size_t>(threads));
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num();
      RouterLayerParams<float> mine;
      if (layer_grad) {
        part[size_t(t)].assign(size_t(layer_size), 0.f);
        float* base = part[size_t(t)].data();
        auto at = [&](float* p) { return base + (p - layer_grad); };
        mine = {at(rg.w1), at(rg.b1), at(rg.w2), at(rg.b2), at(rg.w3),
                at(rg.b3), at(rg.w4), at(rg.b4), at(rg.w5), at(rg.b5)};
      }
#pragma omp for schedule(static)
      for (int64_t i = 0; i < items; ++i) {
        const double sign = modes[size_t(i)] == AttnMode::fa ? 1.0 : -1.0;
        const double dzfa = ctx.dl_dzfa[size_t(l)][size_t(i)] + sign * dz[size_t(i)];
        double dzl[2];
        gumbel_softmax_backward(dzl, dzfa, ctx.gumbel[size_t(l)][size_t(i)], routing.temperature);
        router_mlp_backward(dpooled + i * d, layer_grad ? &mine : nullptr, dzl,
                            ctx.cache[size_t(l)][size_t(i)], R_[size_t(l)], d);
      }
    }
    if (!layer_grad) return;
    for (const std::vector<float>& p : part)
      for (int64_t j = 0; j < layer_size; ++j) layer_grad[j] += p[size_t(j)];
  }

  // TrainModel::layer_backward: s_.dx holds dL/dx_{l+1} and becomes dL/dx_l.
  void layer_backward(int64_t l, const bf16* x_in, StepCtx& ctx, const StepRouting& routing) {
    const LayerParams<bf16>& w = W_.layers[size_t(l)];
    LayerParams<float> g;  // weight gradients, null when off
    if (opt_.weight_grads) g = G_.layers[size_t(l)];
    const int64_t n = ctx.n, S = ctx.S, D = c_.hidden_size, F = c_.intermediate_size;
    const int64_t Hq = c_.num_heads, Hkv = c_.num_kv_heads, d = c_.head_dim;
    cudaStream_t st = stream_;

    // MLP over row tiles (gate/up recomputed per tile): dxn = dL/dxn2.
    phase(Phase::elementwise);
    ops::convert_f32_to_bf16(s_.dx_bf, s_.dx, n * D, st);
    for (int64_t r0 = 0; r0 < n; r0 += s_.mlp_rows) {
      const int64_t m = std::min(s_.mlp_rows, n - r0);
      const bf16* xn2 = s_.xn2 + r0 * D;
      const bf16* dy = s_.dx_bf + r0 * D;
      phase(Phase::gemm);
      gemm_->linear_forward(s_.gate, GemmOut::bf16, xn2, w.w_gate, m, F, D, 0.f, st);
      gemm_->linear_forward(s_.up, GemmOut::bf16, xn2, w.w_up, m, F, D, 0.f, st);
      gemm_->linear_backward_input(s_.dact, GemmOut::bf16, dy, w.w_down, m, D, F, 0.f, st);
      if (g.w_down) {
        phase(Phase::elementwise);
        ops::swiglu_forward(s_.act, s_.gate, s_.up, m * F, st);
        phase(Phase::gemm);
        gemm_->linear_backward_weight(g.w_down, dy, s_.act, m, D, F, st);
      }
      phase(Phase::elementwise);
      ops::swiglu_backward(s_.dgate, s_.dup, s_.dact, s_.gate, s_.up, m * F, st);
      phase(Phase::gemm);
      gemm_->linear_backward_input(s_.dxn + r0 * D, GemmOut::f32, s_.dgate, w.w_gate, m, F, D, 0.f,
                                   st);
      gemm_->linear_backward_input(s_.dxn + r0 * D, GemmOut::f32, s_.dup, w.w_up, m, F, D, 1.f, st);
      if (g.w_gate) {
        gemm_->linear_backward_weight(g.w_gate, s_.dgate, xn2, m, F, D, st);
        gemm_->linear_backward_weight(g.w_up, s_.dup, xn2, m, F, D, st);
      }
    }
    phase(Phase::elementwise);
    ops::rmsnorm_backward<float>(s_.dx, g.post_norm, s_.dxn, s_.x_mid, w.post_norm, s_.rstd2, n, D,
                                 st);

    // Attention output projection: x_mid = x_in + att Wo^T (+ bo).
    ops::convert_f32_to_bf16(s_.dx_bf, s_.dx, n * D, st);
    phase(Phase::gemm);
    gemm_->linear_backward_input(s_.datt, GemmOut::bf16, s_.dx_bf, w.wo, n, D, Hq * d, 0.f, st);
    if (g.wo) gemm_->linear_backward_weight(g.wo, s_.dx_bf, s_.att, n, D, Hq * d, st);
    phase(Phase::elementwise);
    if (g.bo) ops::bias_backward(g.bo, s_.dx, n, D, st);

    // dL/dz_FA = dl_dzfa (Omega) + sign * sum datt . (O_chosen - O_other): the reduction on the
    // device, its transfer to pinned memory (event routed_); the host runs the router's backward
    // while the device runs the attention backward, and dL/dpooled enters dk_n after RoPE's.
    zero(s_.dk_n, n * Hkv * d, st);
    if (routing.router) {
      phase(Phase::router);
      zero(ctx.dz, S * Hkv, st);
      ops::router_dz(ctx.dz, s_.datt, s_.att, s_.other, ctx.dz_chunks, ctx.dz_count, Hq, Hkv, d,
                     st);
      download(ctx.dz_host, ctx.dz, size_t(S * Hkv), st);
      ELASTIC_CUDA_CHECK(cudaEventRecord(routed_, st));
      phase(Phase::elementwise);
    }

    // Attention in each head's chosen mode.
    zero(s_.dq, n * Hq * d, st);
    zero(s_.dk, n * Hkv * d, st);
    zero(s_.dv, n * Hkv * d, st);
    phase(Phase::attention_backward);
    cuda::attention_train_backward(s_.dq, s_.dk, s_.dv, s_.dsum, s_.datt, s_.att, s_.lse, s_.q,
                                   s_.k, s_.v, ctx.modes_dev + l * S * Hkv, 0, *ctx.plan, st);
    phase(Phase::elementwise);
    zero(s_.dq_n, n * Hq * d, st);
    ops::rope_backward(s_.dq_n, s_.dq, s_.cos, s_.sin, n, Hq, d, st);
    ops::rope_backward(s_.dk_n, s_.dk, s_.cos, s_.sin, n, Hkv, d, st);
    if (routing.router) {
      // The previous layer's dpooled upload precedes routed_ in stream order: pooled_host is free.
      ELASTIC_CUDA_CHECK(cudaEventSynchronize(routed_));
      router_backward_host(l, ctx.dz_host, ctx.pooled_host, ctx, routing);
      phase(Phase::router);
      upload(ctx.pooled, ctx.pooled_host, size_t(S * Hkv * d), st);
      ops::router_pool_backward(s_.dk_n, ctx.pooled, ctx.plan->seqs_dev(), S, Hkv, d,
                                opt_.pool_tokens, opt_.pooling == RouterPooling::segment_mean, st);
      phase(Phase::elementwise);
    }

    // q/k norms (dq, dk reused as dL/dq_raw, dL/dk_raw), then the projections.
    const float* dq_raw = s_.dq_n;
    const float* dk_raw = s_.dk_n;
    if (w.q_norm) {
      zero(s_.dq, n * Hq * d, st);
      zero(s_.dk, n * Hkv * d, st);
      ops::rmsnorm_backward<bf16>(s_.dq, g.q_norm, s_.dq_n, s_.q_raw, w.q_norm, s_.rstd_q, n * Hq,
                                  d, st);
      ops::rmsnorm_backward<bf16>(s_.dk, g.k_norm, s_.dk_n, s_.k_raw, w.k_norm, s_.rstd_k, n * Hkv,
                                  d, st);
      dq_raw = s_.dq;
      dk_raw = s_.dk;
    }
    ops::convert_f32_to_bf16(s_.dq_bf, dq_raw, n * Hq * d, st);
    ops::convert_f32_to_bf16(s_.dk_bf, dk_raw, n * Hkv * d, st);
    ops::convert_f32_to_bf16(s_.dv_bf, s_.dv, n * Hkv * d, st);
    phase(Phase::gemm);
    gemm_->linear_backward_input(s_.dxn, GemmOut::f32, s_.dq_bf, w.wq, n, Hq * d, D, 0.f, st);
    gemm_->linear_backward_input(s_.dxn, GemmOut::f32, s_.dk_bf, w.wk, n, Hkv * d, D, 1.f, st);
    gemm_->linear_backward_input(s_.dxn, GemmOut::f32, s_.dv_bf, w.wv, n, Hkv * d, D, 1.f, st);
    if (g.wq) {
      gemm_->linear_backward_weight(g.wq, s_.dq_bf, s_.xn1, n, Hq * d, D, st);
      gemm_->linear_backward_weight(g.wk, s_.dk_bf, s_.xn1, n, Hkv * d, D, st);
      gemm_->linear_backward_weight(g.wv, s_.dv_bf, s_.xn1, n, Hkv * d, D, st);
    }
    phase(Phase::elementwise);
    if (g.bq) {
      ops::bias_backward(g.bq, dq_raw, n, Hq * d, st);
      ops::bias_backward(g.bk, dk_raw, n, Hkv * d, st);
      ops::bias_backward(g.bv, s_.dv, n, Hkv * d, st);
    }
    // dx (dL/dx_mid) flows to x_in unchanged, plus the input norm's share.
    ops::rmsnorm_backward<bf16>(s_.dx, g.input_norm, s_.dxn, x_in, w.input_norm, s_.rstd1, n, D,
                                st);
  }

  // lm_head_cross_entropy over row tiles of the labelled rows; returns the loss share (sum x
  // scale). backward: dxf += dL/dxf, lm_head gradient when trainable.
  double head(const std::vector<int32_t>& idx, const std::vector<int32_t>& labels, double scale,
              bool backward) {
    const int64_t m = int64_t(idx.size()), D = c_.hidden_size, V = c_.vocab_size;
    if (m == 0) return 0;
    cudaStream_t st = stream_;
    phase(Phase::head);
    upload(s_.head_idx, idx.data(), idx.size(), st);
    upload(s_.head_labels, labels.data(), labels.size(), st);
    for (int64_t c0 = 0; c0 < m; c0 += s_.head_rows) {
      const int64_t mc = std::min(s_.head_rows, m - c0);
      ops::gather_rows(s_.head_x, s_.xf, s_.head_idx + c0, mc, D, st);
      gemm_->linear_forward(s_.logits, GemmOut::f32, s_.head_x, W_.lm_head, mc, V, D, 0.f, st);
      ops::cross_entropy_forward_backward(s_.dlogits, s_.head_loss + c0, s_.logits,
                                          s_.head_labels + c0, mc, V, float(scale), st);
      if (!backward) continue;
      gemm_->linear_backward_input(s_.head_dx, GemmOut::f32, s_.dlogits, W_.lm_head, mc, V, D, 0.f,
                                   st);
      ops::scatter_add_rows(s_.dxf, s_.head_dx, s_.head_idx + c0, mc, D, st);
      if (opt_.weight_grads)
        gemm_->linear_backward_weight(G_.lm_head, s_.dlogits, s_.head_x, mc, V, D, st);
    }
    std::vector<double> loss(static_cast<size_t>(m));
    download(loss.data(), s_.head_loss, loss.size(), st);
    ELASTIC_CUDA_CHECK(cudaStreamSynchronize(st));
    phase(Phase::elementwise);
    double sum = 0;
    for (double x : loss) sum += x;
    return sum * scale;
  }

  // TrainModel::step.
  StepResult run(const Batch& batch, const StepRouting& routing, const StepLoss& loss,
                 bool backward) {
    step_inputs_check(c_, batch, routing, loss, !R_.empty());
    const int64_t n = batch.rows(), S = batch.num_seqs(), D = c_.hidden_size, V = c_.vocab_size;
    const int64_t L = c_.num_layers, Hkv = c_.num_kv_heads, d = c_.head_dim;
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = batch.tokens[size_t(i)];
      if (t < 0 || t >= V)
        throw Error("token id " + std::to_string(t) + " at row " + std::to_string(i) +
                    " is out of range (expected 0 <= id < vocab_size " + std::to_string(V) + ")");
      ids[size_t(i)] = int32_t(t);
    }
    std::vector<int32_t> head_idx, head_labels;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t y = loss.labels[size_t(i)];
      if (y == -100) continue;
      if (y < 0 || y >= V)
        throw Error("label " + std::to_string(y) + " at row " + std::to_string(i) +
                    " is out of range (expected -100 or 0 <= label < vocab_size " +
                    std::to_string(V) + ")");
      head_idx.push_back(int32_t(i));
      head_labels.push_back(int32_t(y));
    }

    ensure_scratch(n);
    step_.clear();
    cudaStream_t st = stream_;
    if (copt_.profile) timer_.start();
    phase(Phase::elementwise);
    StepCtx ctx;
    ctx.batch = &batch;
    ctx.n = n;
    ctx.S = S;
    cuda::AttnTrainShape shape;
    shape.rows = n;
    shape.num_heads = int(c_.num_heads);
    shape.num_kv_heads = int(Hkv);
    shape.head_dim = int(d);
    shape.ssa = opt_.ssa;
    ctx.plan = std::make_unique<cuda::AttnTrainPlan>(shape, batch.seqs, st);
    ctx.modes_dev = step_.alloc<uint8_t>(L * S * Hkv);
    ctx.pooled = step_.alloc<double>(S * Hkv * d);
    ctx.dz = step_.alloc<double>(S * Hkv);
    host_.clear();
    ctx.pooled_host = host_.alloc<double>(S * Hkv * d);
    ctx.dz_host = host_.alloc<double>(S * Hkv);
    ctx.modes_host = host_.alloc<uint8_t>(L * S * Hkv);
    std::vector<int4> chunks;
    for (int64_t s = 0; s < S; ++s) {
      const BatchSeq& q = batch.seqs[size_t(s)];
      for (int64_t r = q.begin; r < q.end(); r += kDzChunkRows)
        chunks.push_back(make_int4(int(s), int(r), int(std::min(q.end(), r + kDzChunkRows)), 0));
    }
    ctx.dz_count = int64_t(chunks.size());
    ctx.dz_chunks = step_.alloc<int4>(ctx.dz_count);
    upload(ctx.dz_chunks, chunks.data(), chunks.size(), st);
    ctx.modes.resize(size_t(L));
    ctx.gumbel.resize(size_t(L));
    ctx.cache.resize(size_t(L));
    ctx.dl_dzfa.resize(size_t(L));
    std::vector<float> cos(size_t(n * d / 2)), sin(size_t(n * d / 2));
    for (const BatchSeq& q : batch.seqs)
      rope_table_fill(cos.data() + q.begin * d / 2, sin.data() + q.begin * d / 2, rope_, q.pos0,
                      q.length);
    upload(s_.cos, cos.data(), cos.size(), st);
    upload(s_.sin, sin.data(), sin.size(), st);
    upload(s_.ids, ids.data(), ids.size(), st);

    // Forward: the residual stream entering every layer is kept, x: [L + 1, n, D].
    ops::embedding_forward(s_.x, s_.ids, n, W_.embed, D, st);
    for (int64_t l = 0; l < L; ++l)
      layer_forward(l, s_.x + l * n * D, s_.x + (l + 1) * n * D, /*decide=*/true,
                    /*both_modes=*/false, ctx, routing);

    StepResult out;
    out.decisions.resize(size_t(S * L * Hkv));
    if (routing.router) out.router_logits.resize(size_t(S * L * Hkv * 2));
    for (int64_t s = 0; s < S; ++s)
      for (int64_t l = 0; l < L; ++l)
        for (int64_t h = 0; h < Hkv; ++h) {
          const size_t i = size_t(s * Hkv + h), o = size_t((s * L + l) * Hkv + h);
          out.decisions[o] = ctx.modes[size_t(l)][i] == AttnMode::fa;
          if (routing.router) {
            out.router_logits[2 * o] = ctx.cache[size_t(l)][i].z[0];
            out.router_logits[2 * o + 1] = ctx.cache[size_t(l)][i].z[1];
          }
        }

    // Output head and CE: dxf = dL/dxf.
    const float eps = float(c_.rms_norm_eps);
    ops::rmsnorm_forward<bf16>(s_.xf, s_.rstd_f, s_.x + L * n * D, W_.final_norm, n, D, eps, st);
    if (backward) zero(s_.dxf, n * D, st);
    out.ce = head(head_idx, head_labels, loss.ce_scale, backward);

    sparsity_loss_apply(out, loss, S, L, Hkv, [&](int64_t s, double d_omega) {
      if (routing.router)  // Omega = 1 - mean z_FA: d Omega / d z_FA = -1 / (L Hkv)
        for (int64_t l = 0; l < L; ++l)
          for (int64_t h = 0; h < Hkv; ++h)
            ctx.dl_dzfa[size_t(l)][size_t(s * Hkv + h)] -= d_omega / static_cast<double>(L * Hkv);
    });
    if (!backward) {
      ELASTIC_CUDA_CHECK(cudaStreamSynchronize(st));  // before the plan's buffers are freed
      phase_collect();
      return out;
    }

    // Backward, last layer first, each layer recomputed from its stored input.
    zero(s_.dx, n * D, st);
    ops::rmsnorm_backward<bf16>(s_.dx, opt_.weight_grads ? G_.final_norm : nullptr, s_.dxf,
                                s_.x + L * n * D, W_.final_norm, s_.rstd_f, n, D, st);
    for (int64_t l = L - 1; l >= 0; --l) {
      const bf16* x_in = s_.x + l * n * D;
      layer_forward(l, x_in, nullptr, /*decide=*/false, /*both_modes=*/routing.router, ctx,
                    routing);
      layer_backward(l, x_in, ctx, routing);
    }
    if (opt_.weight_grads) ops::embedding_backward(G_.embed, s_.dx, s_.ids, n, D, st);
    ELASTIC_CUDA_CHECK(cudaStreamSynchronize(st));
    phase_collect();
    return out;
  }

  ModelConfig c_;
  TrainOptions opt_;
  CudaTrainOptions copt_;
  RopeFrequencies rope_;
  ParamLayout layout_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::GemmLt> gemm_;
  DevicePool persistent_, scratch_, step_;
  PinnedPool host_;               // the step's pinned transfer buffers
  cudaEvent_t routed_ = nullptr;  // the last router transfer to the host
  bf16* w_ = nullptr;             // [total] compute copy
  float *w32_ = nullptr, *g_ = nullptr, *m_ = nullptr, *v_ = nullptr;  // [total] (weight_grads)
  double* partials_ = nullptr;                                         // [kSumBlocks]
  BackboneParams<bf16> W_;
  BackboneParams<float> G_;
  ParamSet<float> router_, rgrad_, rm_, rv_;
  std::vector<RouterLayerParams<float>> R_;
  Scratch s_;
  PhaseTimer timer_;
  CudaTrainProfile profile_;

  void phase(Phase p) {
    if (copt_.profile) timer_.mark(p, stream_);
  }
  // Ends the timeline after the stream's final synchronisation.
  void phase_collect() {
    if (!copt_.profile) return;
    timer_.mark(Phase::elementwise, stream_);
    timer_.mark(Phase::gemm, stream_);  // a last event closing the timeline
    ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream_));
    const std::vector<double> ms = timer_.collect();
    profile_.gemm_ms = ms[size_t(Phase::gemm)];
    profile_.attention_forward_ms = ms[size_t(Phase::attention_forward)];
    profile_.attention_backward_ms = ms[size_t(Phase::attention_backward)];
    profile_.head_ms = ms[size_t(Phase::head)];
    profile_.router_ms = ms[size_t(Phase::router)];
    profile_.elementwise_ms = ms[size_t(Phase::elementwise)];
  }
};

}  // namespace

std::unique_ptr<TrainEngine> train_engine_cuda(const ModelConfig& c, ParamSet<float> backbone,
                                               ParamSet<float> router, const TrainOptions& opt,
                                               const CudaTrainOptions& copt) {
  return std::make_unique<CudaTrainEngine>(c, &backbone, std::move(router), opt, copt, 0, 0.f);
}

std::unique_ptr<TrainEngine> train_engine_cuda_synthetic(const ModelConfig& c,
                                                         ParamSet<float> router,
                                                         const TrainOptions& opt, uint64_t seed,
                                                         float stddev,
                                                         const CudaTrainOptions& copt) {
  return std::make_unique<CudaTrainEngine>(c, nullptr, std::move(router), opt, copt, seed, stddev);
}

size_t train_engine_cuda_device_bytes(const TrainEngine& engine) {
  const auto* e = dynamic_cast<const CudaTrainEngine*>(&engine);
  return e ? e->device_bytes() : 0;
}

CudaTrainProfile train_engine_cuda_profile(const TrainEngine& engine) {
  const auto* e = dynamic_cast<const CudaTrainEngine*>(&engine);
  return e ? e->profile() : CudaTrainProfile{};
}

}  // namespace elastic::train

namespace elastic {

void train_engine_cuda_register() {
  train::train_engine_register("cuda", [](const ModelConfig& c, train::ParamSet<float> backbone,
                                          train::ParamSet<float> router,
                                          const train::TrainOptions& opt) {
    return train::train_engine_cuda(c, std::move(backbone), std::move(router), opt);
  });
}

}  // namespace elastic
