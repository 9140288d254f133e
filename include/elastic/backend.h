// The compute backend behind the model forward pass: memory, weight preparation, and the ops of
// one transformer step. The CPU backend (cpu_ops.h, cpu_matmul.h, attention_cpu) is the
// reference; a CUDA backend implements the same interface and must agree with it op by op.
//
// Pointers passed to the ops are backend memory (from alloc()); on the CPU that is host memory.
// The KV cache is the host KvCache (kv_cache.h) unless the backend keeps it in its own memory
// (kv_store_create() returns a KvStore: the CUDA backend's device-resident cache).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "elastic/attention.h"
#include "elastic/dtype.h"
#include "elastic/tensor.h"

namespace elastic {

struct PagedAttnParams;  // batch_forward.h
struct RouterWeights;    // router.h
struct SamplingParams;   // sampling.h

// A linear layer's weight [rows = out features, cols = in features] after the backend prepared
// it (repacked, uploaded). Opaque to the model; `impl` belongs to the backend that made it.
struct Linear {
  int64_t rows = 0;
  int64_t cols = 0;
  DType dtype = DType::f32;
  std::shared_ptr<const void> impl;
};

// The K/V of one request kept in backend memory, in the row layout of KvCache (full heads:
// row = position; SSA heads: rings of sink + window rows, KvHeadView::row). Made by
// Backend::kv_store_create and used only through that backend's attention_forward_stored.
class KvStore {
 public:
  virtual ~KvStore() = default;
  // As KvCache::configure_layer: before the layer's first positions. modes: [Hkv].
  virtual void configure_layer(int64_t layer, const std::vector<AttnMode>& modes,
                               const SsaOptions& ssa) = 0;
  // Positions stored for `layer`.
  virtual int64_t length(int64_t layer) const = 0;
  // Bytes of K and V storage allocated now.
  virtual size_t bytes_allocated() const = 0;
};

// Whether x: [count] host fp32 holds only finite values (one branch-free pass).
bool host_all_finite(const float* x, int64_t count);

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;

  // Memory: an owning handle to `bytes` bytes of backend memory, 64-byte aligned.
  virtual std::shared_ptr<void> alloc(size_t bytes) = 0;
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;

  // Weights: `w` is a 2-D checkpoint tensor; the Linear keeps its own prepared copy and does
  // not read `w` after this returns.
  virtual Linear linear_prepare(const TensorView& w) = 0;

  // Ops; shapes as in cpu_ops.h.
  // out: [n, dim]; table: [vocab, dim] as stored (host memory of the checkpoint).
  virtual void embedding_forward(float* out, const int64_t* ids, int64_t n, const void* table,
                                 DType dtype, int64_t vocab, int64_t dim) = 0;
  // out, inp: [rows, dim]; weight: [dim].
  virtual void rmsnorm_forward(float* out, const float* inp, const float* weight, int64_t rows,
                               int64_t dim, float eps) = 0;
  // out: [n, w.rows]; inp: [n, w.cols]; bias: [w.rows] or null.
  virtual void linear_forward(float* out, const float* inp, const Linear& w, const float* bias,
                              int64_t n) = 0;
  // x: [n, heads, head_dim] in place; cos, sin: [n, head_dim / 2].
  virtual void rope_forward(float* x, const float* cos, const float* sin, int64_t n, int64_t heads,
                            int64_t head_dim) = 0;
  // out: [rows, ffn]; gate_up: [rows, 2 ffn].
  virtual void swiglu_forward(float* out, const float* gate_up, int64_t rows, int64_t ffn) = 0;
  // q: [n, q_dim], k, v: [n, kv_dim]; qkv: [n, q_dim + 2 kv_dim].
  virtual void qkv_split_forward(float* q, float* k, float* v, const float* qkv, int64_t n,
                                 int64_t q_dim, int64_t kv_dim) = 0;
  // x += delta; [count].
  virtual void residual_forward(float* x, const float* delta, int64_t count) = 0;
  // Whether x: [count] fp32 backend memory holds only finite values: the forward's one check of
  // its logits (and, on the error path only, of each layer's output). Default: download, scan.
  virtual bool all_finite(const float* x, int64_t count);
  // All heads of one layer, each KV head in its mode (attention.h).
  virtual void attention_forward(const AttnArgs& args) = 0;

  // Device-resident KV cache (optional). A backend that attends from its own memory returns a
  // store for one request (layers x kv_heads heads of head_dim); null means the forward keeps
  // the host KvCache and passes views of it in AttnArgs::past (the CPU backend).
  virtual std::shared_ptr<KvStore> kv_store_create(int64_t /*layers*/, int64_t /*kv_heads*/,
                                                   int64_t /*head_dim*/) {
    return nullptr;
  }
  // attention_forward for `layer` with the past read from `store` (args.past is ignored), which
  // then also holds positions pos0..pos0+n-1 of args.k / args.v. Only for stores this backend
  // made; a backend without stores never receives the call.
  virtual void attention_forward_stored(const AttnArgs& args, KvStore& store, int64_t layer);

  // Batched paged attention of a serving engine (batch_forward.h). A backend that runs it says
  // so, names the element type of a KvPool's storage (f32: host memory; otherwise alloc()ed
  // backend memory, kv_pool.h), and attends every sequence of p, then writes the batch's new
  // rows p.k / p.v into the pool through p.past (pages reserved by the caller). Default: none.
  virtual bool attention_paged_supported() const { return false; }
  virtual DType kv_pool_dtype() const { return DType::f32; }
  virtual void attention_paged_forward(const PagedAttnParams& p);

  // Attention Router (SPEC §5, router.h) of one layer: boundary pooling of k: [n, Hkv, d] (backend
  // memory, after k_norm, before RoPE) and the task + router MLPs in double; z: [Hkv, w.classes]
  // host memory receives the raw router outputs (before the sparsity bias and the sigmoid
  // variant's normalisation). `prepared` is router_prepare(w) of this backend (the weights in its
  // memory, made once). Defaults (router.cpp): no preparation, the CPU reference on host memory.
  virtual std::shared_ptr<void> router_prepare(const RouterWeights& w);
  virtual void router_forward(double* z, const RouterWeights& w, void* prepared, int64_t layer,
                              const float* k, int64_t n, int64_t num_kv_heads, int64_t pool_tokens);

  // Next token from logits: [vocab] fp32 backend memory (sampling.h): the argmax (first index on
  // ties) when params.temperature == 0, else the token of the filtered, renormalised
  // distribution at cumulative probability u in [0, 1) (u drawn by the caller's Sampler). Only the
  // id comes back. Default (sampling.cpp): sampling_pick on host memory.
  virtual int64_t sample(const float* logits, int64_t vocab, const SamplingParams& params,
                         double u);
  // Greedy tokens of `rows` rows of logits [rows, vocab] fp32 backend memory into out[rows]
  // (host memory): each row's argmax, first index on ties (sample() with temperature 0), or -1
  // for a row holding a NaN or an infinity. Only the ids come back: a batched greedy decode step
  // does not download [rows, vocab] logits. Default (sampling.cpp): on host memory.
  virtual void argmax_rows(int64_t* out, const float* logits, int64_t rows, int64_t vocab);
};

// The CPU reference backend (OpenMP threads).
std::shared_ptr<Backend> backend_cpu();

}  // namespace elastic
