// A Backend that forwards every virtual op to another backend and adds up the wall time each kind
// of op takes (`elastic bench --profile`). For synchronous backends only (the CPU backend): an op's
// time is from its call to its return. Linear layers are also split by weight shape and carry
// the bytes of weights they read, so the table can show each one's achieved bandwidth.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "elastic/backend.h"

namespace elastic::cli {

struct OpTime {
  double seconds = 0;
  int64_t calls = 0;
  double bytes = 0;  // weight bytes read (linear layers only)
};

class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(std::shared_ptr<Backend> inner) : inner_(std::move(inner)) {}

  // Times since construction or the last reset(), by op name ("linear 1024x4096" per shape).
  const std::map<std::string, OpTime>& times() const { return times_; }
  void reset() { times_.clear(); }

  std::string_view name() const override { return inner_->name(); }
  std::shared_ptr<void> alloc(size_t bytes) override { return inner_->alloc(bytes); }
  void upload(void* dst, const void* src, size_t bytes) override;
  void download(void* dst, const void* src, size_t bytes) override;
  Linear linear_prepare(const TensorView& w) override { return inner_->linear_prepare(w); }
  void embedding_forward(float* out, const int64_t* ids, int64_t n, const void* table, DType dtype,
                         int64_t vocab, int64_t dim) override;
  void rmsnorm_forward(float* out, const float* inp, const float* weight, int64_t rows, int64_t dim,
                       float eps) override;
  void linear_forward(float* out, const float* inp, const Linear& w, const float* bias,
                      int64_t n) override;
  void rope_forward(float* x, const float* cos, const float* sin, int64_t n, int64_t heads,
                    int64_t head_dim) override;
  void swiglu_forward(float* out, const float* gate_up, int64_t rows, int64_t ffn) override;
  void qkv_split_forward(float* q, float* k, float* v, const float* qkv, int64_t n, int64_t q_dim,
                         int64_t kv_dim) override;
  void residual_forward(float* x, const float* delta, int64_t count) override;
  void attention_forward(const AttnArgs& args) override;
  std::shared_ptr<KvStore> kv_store_create(int64_t layers, int64_t kv_heads,
                                           int64_t head_dim) override {
    return inner_->kv_store_create(layers, kv_heads, head_dim);
  }
  void attention_forward_stored(const AttnArgs& args, KvStore& store, int64_t layer) override;
  std::shared_ptr<void> router_prepare(const RouterWeights& w) override {
    return inner_->router_prepare(w);
  }
  void router_forward(double* z, const RouterWeights& w, void* prepared, int64_t layer,
                      const float* k, int64_t n, int64_t num_kv_heads,
                      int64_t pool_tokens) override;
  int64_t sample(const float* logits, int64_t vocab, const SamplingParams& params,
                 double u) override;

 private:
  using Clock = std::chrono::steady_clock;
  void add(const std::string& op, Clock::time_point t0, double bytes = 0);

  std::shared_ptr<Backend> inner_;
  std::map<std::string, OpTime> times_;
};

// The table of `times` (ms per token over `tokens` tokens, share of `total_seconds`, GB/s of the
// linear layers), one row per op, biggest first; "other" is total minus the ops.
std::string profile_table(const std::map<std::string, OpTime>& times, double total_seconds,
                          int64_t tokens);

}  // namespace elastic::cli
