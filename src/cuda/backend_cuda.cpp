// The CUDA backend (backend_cuda.h): device memory, bf16 weights uploaded once, cuBLASLt GEMMs
// (gemm_lt.h, plans cached per shape: y[n, N] = x[n, K] W[N, K]^T with bf16 operands and fp32
// accumulation/output; the fp32 activations are rounded to bf16 on the device first), the
// kernels of ops_cuda.cu, and the fused attention of attention_cuda.h. Attention statistics
// (rho, XA masks) are filled exactly as attention_cpu fills them, from the key sets the kernels
// use. The KV cache of a request is a CudaKvStore (bf16 rows on the device, SSA heads as rings):
// k/v never leave the device, and a decode step reads the past straight from it. The Attention
// Router and sampling run on the device too (router_cuda.h, sampling_cuda.h): only decisions and
// token ids reach the host.
#include "elastic/cuda/backend_cuda.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "attention_paged.h"
#include "cuda/gemm_lt.h"
#include "elastic/batch_forward.h"
#include "elastic/cuda/arena.h"
#include "elastic/cuda/attention_cuda.h"
#include "elastic/cuda/cuda_check.h"
#include "elastic/dtype.h"
#include "elastic/error.h"
#include "elastic/kv_cache.h"
#include "elastic/router.h"
#include "elastic/sampling.h"
#include "ops_cuda.h"
#include "router_cuda.h"
#include "sampling_cuda.h"

namespace elastic {
namespace {

struct CudaWeight {
  std::shared_ptr<void> data;  // [rows, cols] bf16 on the device
  int64_t rows = 0, cols = 0;
};

constexpr size_t kLtWorkspaceBytes = size_t(32) << 20;

bool head_dim_supported(int64_t d) { return d == 16 || d == 32 || d == 64 || d == 128; }

// Device KV cache of one request: per (layer, KV head) K and V as bf16 rows of d, in KvCache's
// layout and growth policy (exact after the first prefill, then steps of
// max(kKvGrowRows, capacity / 4); ring heads hold at most sink + window rows). Invariant: the
// device arrays views_ and modes_ mirror heads_ and the configured modes of every layer.
class CudaKvStore final : public KvStore {
 public:
  using Alloc = std::function<std::shared_ptr<void>(size_t)>;
  CudaKvStore(int64_t layers, int64_t kv_heads, int64_t head_dim, Alloc alloc)
      : layers_(layers), kv_heads_(kv_heads), d_(head_dim), alloc_(std::move(alloc)),
        heads_(size_t(layers * kv_heads)), modes_host_(size_t(layers * kv_heads), uint8_t(AttnMode::fa)),
        lengths_(size_t(layers), 0) {
    ELASTIC_CHECK(layers > 0 && kv_heads > 0 && head_dim > 0);
    views_ = alloc_(heads_.size() * sizeof(cuda::DeviceKvHead));
    modes_ = alloc_(heads_.size());
    ELASTIC_CUDA_CHECK(cudaMemcpy(modes_.get(), modes_host_.data(), modes_host_.size(), cudaMemcpyHostToDevice));
    for (int64_t l = 0; l < layers; ++l) upload_views(l);
  }

  void configure_layer(int64_t layer, const std::vector<AttnMode>& modes, const SsaOptions& ssa) override {
    ELASTIC_CHECK(layer >= 0 && layer < layers_ && int64_t(modes.size()) == kv_heads_);
    ELASTIC_CHECK_MSG(lengths_[size_t(layer)] == 0, "configure_layer after the layer holds positions");
    for (int64_t h = 0; h < kv_heads_; ++h) {
      Head& hd = head(layer, h);
      hd.ring = modes[size_t(h)] == AttnMode::ssa;
      hd.sink = hd.ring ? ssa.kept_sink_tokens() : 0;
      hd.window = hd.ring ? ssa.kept_window_tokens() : 0;
      if (hd.ring && hd.window <= 0) throw Error("KV cache: SSA head needs a local window > 0");
      modes_host_[size_t(layer * kv_heads_ + h)] = uint8_t(modes[size_t(h)]);
    }
    ELASTIC_CUDA_CHECK(cudaMemcpy(modes_dev(layer), &modes_host_[size_t(layer * kv_heads_)], size_t(kv_heads_),
                                  cudaMemcpyHostToDevice));
    upload_views(layer);
  }
  int64_t length(int64_t layer) const override { return lengths_[size_t(layer)]; }
  size_t bytes_allocated() const override {
    size_t rows = 0;
    for (const Head& h : heads_) rows += size_t(h.capacity);
    return rows * 2 * size_t(d_) * sizeof(__nv_bfloat16);
  }

  // Stores positions pos0..pos0+n-1 of every head of `layer`; k, v: [n, Hkv, d] fp32 device.
  void append(int64_t layer, const float* k, const float* v, int64_t pos0, int64_t n, cudaStream_t stream) {
    ELASTIC_CHECK(layer >= 0 && layer < layers_);
    ELASTIC_CHECK_MSG(pos0 == lengths_[size_t(layer)], "KV cache append must continue the sequence");
    bool moved = false;
    for (int64_t h = 0; h < kv_heads_; ++h) moved |= reserve(head(layer, h), pos0 + n, stream);
    if (moved) upload_views(layer);
    for (int64_t first = 0; first < kv_heads_; first += cuda::kKvAppendMaxHeads) {
      cuda::KvAppendHeads a{};
      a.first = int32_t(first);
      a.count = int32_t(std::min<int64_t>(cuda::kKvAppendMaxHeads, kv_heads_ - first));
      for (int j = 0; j < a.count; ++j) {
        const Head& hd = head(layer, first + j);
        a.k[j] = static_cast<__nv_bfloat16*>(hd.k.get());
        a.v[j] = static_cast<__nv_bfloat16*>(hd.v.get());
        a.sink[j] = hd.sink;
        a.window[j] = hd.window;
        a.ring[j] = hd.ring ? 1 : 0;
      }
      cuda::kv_append_launch(a, k, v, n, kv_heads_, d_, pos0, stream);
    }
    lengths_[size_t(layer)] = pos0 + n;
  }

  // [Hkv] device views and modes of `layer`.
  cuda::DeviceKvHead* views_dev(int64_t layer) {
    return static_cast<cuda::DeviceKvHead*>(views_.get()) + layer * kv_heads_;
  }
  uint8_t* modes_dev(int64_t layer) { return static_cast<uint8_t*>(modes_.get()) + layer * kv_heads_; }

 private:
  struct Head {
    std::shared_ptr<void> k, v;  // [capacity, d] bf16
    int64_t capacity = 0;        // rows
    bool ring = false;
    int64_t sink = 0, window = 0;
  };
  Head& head(int64_t layer, int64_t h) { return heads_[size_t(layer * kv_heads_ + h)]; }

  // Room for `positions` positions; returns whether the rows moved (a new allocation). Rows keep
  // their place: a ring grows only before it wraps, when its rows are the identity.
  bool reserve(Head& h, int64_t positions, cudaStream_t stream) {
    int64_t need = positions;
    if (h.ring) need = std::min(need, h.sink + h.window);
    if (need <= h.capacity) return false;
    const int64_t step = std::max(kKvGrowRows, h.capacity / 4);
    int64_t cap = h.capacity == 0 ? need : std::max(need, h.capacity + step);
    if (h.ring) cap = std::min(cap, h.sink + h.window);
    const size_t row_bytes = size_t(d_) * sizeof(__nv_bfloat16);
    std::shared_ptr<void> k = alloc_(size_t(cap) * row_bytes), v = alloc_(size_t(cap) * row_bytes);
    if (h.capacity > 0) {
      ELASTIC_CUDA_CHECK(cudaMemcpyAsync(k.get(), h.k.get(), size_t(h.capacity) * row_bytes,
                                         cudaMemcpyDeviceToDevice, stream));
      ELASTIC_CUDA_CHECK(cudaMemcpyAsync(v.get(), h.v.get(), size_t(h.capacity) * row_bytes,
                                         cudaMemcpyDeviceToDevice, stream));
      ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream));  // the old rows are freed below
    }
    h.k = std::move(k);
    h.v = std::move(v);
    h.capacity = cap;
    return true;
  }

  void upload_views(int64_t layer) {
    std::vector<cuda::DeviceKvHead> views(static_cast<size_t>(kv_heads_));
    for (int64_t h = 0; h < kv_heads_; ++h) {
      const Head& hd = head(layer, h);
      views[size_t(h)] = cuda::DeviceKvHead{static_cast<const __nv_bfloat16*>(hd.k.get()),
                                            static_cast<const __nv_bfloat16*>(hd.v.get()), hd.sink,
                                            hd.window, hd.ring ? 1 : 0};
    }
    ELASTIC_CUDA_CHECK(cudaMemcpy(views_dev(layer), views.data(), views.size() * sizeof(cuda::DeviceKvHead),
                                  cudaMemcpyHostToDevice));
  }

  int64_t layers_, kv_heads_, d_;
  Alloc alloc_;
  std::vector<Head> heads_;          // [L * Hkv]
  std::vector<uint8_t> modes_host_;  // [L * Hkv] AttnMode values
  std::vector<int64_t> lengths_;     // [L]
  std::shared_ptr<void> views_;      // [L, Hkv] cuda::DeviceKvHead
  std::shared_ptr<void> modes_;      // [L, Hkv] uint8
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaBackendOptions& opt) : opt_(opt) {
    if (cuda::cuda_device_count() == 0) throw Error("CUDA backend: no CUDA device present");
    gemm_ = std::make_unique<cuda::GemmLt>(kLtWorkspaceBytes);
  }

  std::string_view name() const override { return "cuda"; }

  std::shared_ptr<void> alloc(size_t bytes) override { return raw_alloc(bytes == 0 ? 256 : bytes); }
  void upload(void* dst, const void* host_src, size_t bytes) override {
    ELASTIC_CUDA_CHECK(cudaMemcpy(dst, host_src, bytes, cudaMemcpyHostToDevice));
  }
  void download(void* host_dst, const void* src, size_t bytes) override {
    ELASTIC_CUDA_CHECK(cudaMemcpy(host_dst, src, bytes, cudaMemcpyDeviceToHost));
  }

  Linear linear_prepare(const TensorView& w) override {
    if (w.shape.size() != 2) throw Error("CUDA backend: linear weight must be 2-D, got " + shape_str(w.shape));
    if (w.dtype != DType::f32 && w.dtype != DType::bf16 && w.dtype != DType::f16)
      throw Error("CUDA backend: linear weight dtype " + std::string(dtype_name(w.dtype)) +
                  " is not supported (f32, f16, bf16)");
    const int64_t rows = w.shape[0], cols = w.shape[1];
    const size_t count = size_t(rows) * size_t(cols);
    std::vector<uint16_t> host(count);
    if (w.dtype == DType::bf16) {
      std::memcpy(host.data(), w.data, count * 2);
    } else {
      std::vector<float> f(count);
      convert_to_f32(f.data(), w.data, w.dtype, count);
      for (size_t i = 0; i < count; ++i) host[i] = f32_to_bf16(f[i]);
    }
    auto cw = std::make_shared<CudaWeight>();
    cw->rows = rows;
    cw->cols = cols;
    cw->data = raw_alloc(count * 2);
    upload(cw->data.get(), host.data(), count * 2);
    Linear l;
    l.rows = rows;
    l.cols = cols;
    l.dtype = DType::bf16;
    l.impl = cw;
    return l;
  }

  void embedding_forward(float* out, const int64_t* ids, int64_t n, const void* table, DType dtype,
                         int64_t vocab, int64_t dim) override {
    cuda::TableType type;
    if (dtype == DType::f32)
      type = cuda::TableType::f32;
    else if (dtype == DType::bf16)
      type = cuda::TableType::bf16;
    else if (dtype == DType::f16)
      type = cuda::TableType::f16;
    else
      throw Error("CUDA backend: embedding dtype " + std::string(dtype_name(dtype)) + " is not supported");
    for (int64_t i = 0; i < n; ++i)
      if (ids[i] < 0 || ids[i] >= vocab)
        throw Error("token id " + std::to_string(ids[i]) + " out of range [0, " + std::to_string(vocab) + ")");
    auto it = tables_.find(table);
    if (it == tables_.end()) {  // the checkpoint's table (host memory), uploaded once
      const size_t bytes = size_t(vocab) * size_t(dim) * dtype_size(dtype);
      std::shared_ptr<void> dev = raw_alloc(bytes);
      upload(dev.get(), table, bytes);
      it = tables_.emplace(table, std::move(dev)).first;
    }
    int64_t* ids_dev = static_cast<int64_t*>(scratch(3, size_t(n) * sizeof(int64_t)));
    upload(ids_dev, ids, size_t(n) * sizeof(int64_t));
    cuda::embedding_launch(out, ids_dev, n, it->second.get(), type, dim, stream_);
    done();
  }
  void rmsnorm_forward(float* out, const float* inp, const float* weight, int64_t rows,
                       int64_t dim, float eps) override {
    cuda::rmsnorm_launch(out, inp, weight, rows, dim, eps, stream_);
    done();
  }
  void linear_forward(float* out, const float* inp, const Linear& w, const float* bias,
                      int64_t n) override {
    ELASTIC_CHECK(w.impl != nullptr);
    const CudaWeight& cw = *static_cast<const CudaWeight*>(w.impl.get());
    if (n == 0) return;
    auto* x = static_cast<__nv_bfloat16*>(scratch(0, size_t(n) * size_t(cw.cols) * 2));
    cuda::f32_to_bf16_launch(x, inp, n * cw.cols, stream_);
    gemm(out, x, static_cast<const __nv_bfloat16*>(cw.data.get()), n, cw.rows, cw.cols);
    if (bias) cuda::bias_add_launch(out, bias, n, cw.rows, stream_);
    done();
  }
  void rope_forward(float* x, const float* cos, const float* sin, int64_t n, int64_t heads,
                    int64_t head_dim) override {
    cuda::rope_launch(x, cos, sin, n, heads, head_dim, stream_);
    done();
  }
  void swiglu_forward(float* out, const float* gate_up, int64_t rows, int64_t ffn) override {
    cuda::swiglu_launch(out, gate_up, rows, ffn, stream_);
    done();
  }
  void qkv_split_forward(float* q, float* k, float* v, const float* qkv, int64_t n, int64_t q_dim,
                         int64_t kv_dim) override {
    cuda::qkv_split_launch(q, k, v, qkv, n, q_dim, kv_dim, stream_);
    done();
  }
  void residual_forward(float* x, const float* delta, int64_t count) override {
    cuda::residual_launch(x, delta, count, stream_);
    done();
  }
  bool all_finite(const float* x, int64_t count) override {
    if (!finite_flag_) finite_flag_ = raw_alloc(sizeof(int));
    int* flag = static_cast<int*>(finite_flag_.get());
    ELASTIC_CUDA_CHECK(cudaMemsetAsync(flag, 0, sizeof(int), stream_));
    cuda::nonfinite_flag_launch(flag, x, count, stream_);
    int host = 0;  // one int back: the check costs a launch and a synchronisation
    ELASTIC_CUDA_CHECK(cudaMemcpyAsync(&host, flag, sizeof(int), cudaMemcpyDeviceToHost, stream_));
    ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return host == 0;
  }

  void attention_forward(const AttnArgs& a) override {
    const std::vector<AttnMode> modes = effective_modes(a);
    if (a.pos0 > 0 && a.n == 1)
      decode(a, modes);
    else
      prefill(a, modes, nullptr);  // a chunk at pos0 > 0 reads its past from a.past
    done();
  }

  std::shared_ptr<KvStore> kv_store_create(int64_t layers, int64_t kv_heads, int64_t head_dim) override {
    return std::make_shared<CudaKvStore>(layers, kv_heads, head_dim,
                                         [this](size_t bytes) { return raw_alloc(bytes); });
  }

  void attention_forward_stored(const AttnArgs& a, KvStore& kv, int64_t layer) override {
    auto* store = dynamic_cast<CudaKvStore*>(&kv);
    ELASTIC_CHECK_MSG(store != nullptr, "KV store made by another backend");
    ELASTIC_CHECK_MSG(store->length(layer) == a.pos0, "KV store length differs from the chunk's pos0");
    const std::vector<AttnMode> modes = effective_modes(a);
    if (a.pos0 > 0 && a.n == 1) {
      store->append(layer, a.k, a.v, a.pos0, 1, stream_);  // the decode kernel reads the new key too
      decode_stored(a, modes, *store, layer);
    } else {
      // Whole prompt or a chunk: the past is gathered from the store (stream order: before the
      // append below overwrites ring rows).
      prefill(a, modes, [&](__nv_bfloat16* k, __nv_bfloat16* v) {
        cuda::prefill_kv_gather_past(k, v, store->views_dev(layer), int(a.num_kv_heads),
                                     int(a.head_dim), a.pos0, stream_);
      });
      store->append(layer, a.k, a.v, a.pos0, a.n, stream_);
    }
    done();
  }

  // Batched paged attention of a serving engine (batch_forward.h, attention_paged.h): the pool in
  // device bf16; per call one asynchronous upload of the layer's tables, the prefill spans
  // through the fused prefill kernel (past gathered from the pages), one store of every row,
  // one split-KV launch for the decode rows. No host sync unless a first prefill asks for XA masks.
  bool attention_paged_supported() const override { return true; }
  DType kv_pool_dtype() const override { return DType::bf16; }

  void attention_paged_forward(const PagedAttnParams& p) override {
    const int64_t S = p.num_seqs, Hq = p.num_heads, Hkv = p.num_kv_heads, d = p.head_dim;
    if (!head_dim_supported(d))
      throw Error("CUDA backend: attention head_dim " + std::to_string(d) +
                  " is unsupported (16, 32, 64 or 128)");
    if (Hkv <= 0 || Hq % Hkv != 0 || Hq / Hkv > 8)
      throw Error(
          "CUDA backend: paged attention needs num_heads a multiple of num_kv_heads, at most 8 per "
          "KV head");
    const int64_t rows = p.cu_seqlens[S];
    const KvHeadView& first = p.past[0];
    ELASTIC_CHECK_MSG(first.pages != nullptr && first.page_rows > 0,
                      "paged attention without a paged pool");

    // The layer's plan on the host: sequences, heads (ring rule, mode, pages), decode items.
    PagedPlanHost& h = paged_host_;
    h.clear();
    h.seqs.resize(size_t(S));
    h.heads.resize(size_t(S * Hkv));
    h.row_seq.resize(size_t(rows));
    int64_t max_keys = 0, total_keys = 0;
    for (int64_t s = 0; s < S; ++s) {
      const int64_t r0 = p.cu_seqlens[s], n = p.cu_seqlens[s + 1] - r0, pos0 = p.pos0[s];
      h.seqs[size_t(s)] = cuda::PagedSeq{r0, n, pos0};
      std::fill(h.row_seq.begin() + r0, h.row_seq.begin() + r0 + n, int32_t(s));
      if (n == 1) h.items.push_back(int32_t(s));
      for (int64_t k = 0; k < Hkv; ++k) {
        const KvHeadView& v = p.past[s * Hkv + k];
        const AttnMode mode = p.modes[s * Hkv + k];
        ELASTIC_CHECK(v.pages && v.page_rows == first.page_rows && v.k == first.k &&
                      v.v == first.v);
        ELASTIC_CHECK_MSG(v.ring == (mode == AttnMode::ssa),
                          "paged attention: SSA heads are rings, others not");
        const int64_t held =
            v.ring ? std::min(pos0 + n, v.sink_tokens + v.window_tokens) : pos0 + n;
        const int64_t pages = (held + v.page_rows - 1) / v.page_rows;  // reserved by the caller
        h.heads[size_t(s * Hkv + k)] =
            cuda::PagedHead{int32_t(h.table.size()), v.ring ? 1 : 0, int32_t(v.sink_tokens),
                            int32_t(v.window_tokens),
                            int32_t(mode == AttnMode::xa && n == 1 ? AttnMode::fa : mode)};
        h.table.insert(h.table.end(), v.pages, v.pages + pages);
        if (n == 1) {
          const int64_t keys =
              mode == AttnMode::ssa ? cuda::detail::ssa_decode_keys(p.opt.ssa, pos0) : pos0 + 1;
          max_keys = std::max(max_keys, keys);
          total_keys += keys;
        }
      }
    }
    ELASTIC_CHECK_MSG(h.table.size() < size_t(INT32_MAX), "paged attention: block table too large");
    cuda::PagedKv kv = paged_upload(h);
    kv.pool = const_cast<__nv_bfloat16*>(reinterpret_cast<const __nv_bfloat16*>(first.k));
    kv.page_stride = first.page_stride;
    kv.page_rows = int(first.page_rows);
    kv.head_dim = int(d);
    kv.num_kv_heads = int(Hkv);

    // 1. Prefill spans, each through the fused kernel with its past gathered from its pages.
    for (int64_t s = 0; s < S; ++s) {
      if (h.seqs[size_t(s)].rows == 1) continue;
      const AttnArgs a = paged_seq_args(p, s);
      prefill(a, effective_modes(a), [&](__nv_bfloat16* k, __nv_bfloat16* v) {
        cuda::paged_kv_gather_past(k, v, kv, int(s), a.pos0, stream_);
      });
    }
    // 2. Every row into the pool (after the prefill spans read their past: ring rows move).
    cuda::paged_kv_store(kv, paged_row_seq_, p.k, p.v, rows, stream_);
    // 3. The decode rows, all sequences in one launch, reading their own keys from the pool.
    if (!h.items.empty()) {
      cuda::PagedDecodeParams dp;
      dp.q = p.q;
      dp.out = p.out;
      dp.items = paged_items_;
      dp.count = int(h.items.size());
      dp.num_heads = int(Hq);
      dp.scale = 0.f;
      dp.ssa = p.opt.ssa;
      dp.split = cuda::paged_decode_splits(int(d), int(Hq / Hkv), max_keys, total_keys);
      const size_t parts = h.items.size() * size_t(Hq) * size_t(dp.split.splits);
      dp.part_stats = static_cast<float2*>(paged_buffer(paged_part_stats_, parts * sizeof(float2)));
      dp.part_acc =
          static_cast<float*>(paged_buffer(paged_part_acc_, parts * size_t(d) * sizeof(float)));
      cuda::paged_decode_run(kv, dp, stream_);
      for (int32_t s : h.items)
        if (p.stats && p.stats[s]) {
          const AttnArgs a = paged_seq_args(p, s);
          fill_stats(a, effective_modes(a), {}, 0, 0, 0);
        }
    }
    done();
  }

  // The router on the device: weights uploaded once, only z [Hkv][C] comes back (router_cuda.h).
  std::shared_ptr<void> router_prepare(const RouterWeights& w) override { return cuda::router_device_upload(w); }
  void router_forward(double* z, const RouterWeights& w, void* prepared, int64_t layer, const float* k, int64_t n,
                      int64_t num_kv_heads, int64_t pool_tokens) override {
    ELASTIC_CHECK_MSG(prepared != nullptr, "router weights not prepared by the CUDA backend");
    auto& r = *static_cast<cuda::RouterDevice*>(prepared);
    ELASTIC_CHECK(r.head_dim == w.head_dim && r.classes == w.classes);
    cuda::router_device_forward(z, r, layer, k, n, num_kv_heads, pool_tokens, stream_);
  }

  // Sampling on the device: one token id comes back (sampling_cuda.h).
  int64_t sample(const float* logits, int64_t vocab, const SamplingParams& p, double u) override {
    return sampler_.sample(logits, vocab, cuda::SampleFilters{p.temperature, p.top_k, p.top_p, p.min_p}, u, stream_);
  }
  void argmax_rows(int64_t* out, const float* logits, int64_t rows, int64_t vocab) override {
    sampler_.argmax_rows(out, logits, rows, vocab, stream_);
  }

 private:
  // The modes attention runs: a.modes (null = all FA), XA as FA for a single query (SPEC §4).
  static std::vector<AttnMode> effective_modes(const AttnArgs& a) {
    if (!head_dim_supported(a.head_dim))
      throw Error("CUDA backend: attention head_dim " + std::to_string(a.head_dim) +
                  " is unsupported (16, 32, 64 or 128)");
    std::vector<AttnMode> modes(size_t(a.num_kv_heads), AttnMode::fa);
    for (int64_t h = 0; h < a.num_kv_heads; ++h) {
      if (a.modes) modes[size_t(h)] = a.modes[h];
      if (modes[size_t(h)] == AttnMode::xa && a.n == 1) modes[size_t(h)] = AttnMode::fa;
    }
    return modes;
  }

  std::shared_ptr<void> raw_alloc(size_t bytes) {
    void* p = nullptr;
    if (opt_.host_visible)
      ELASTIC_CUDA_CHECK(cudaMallocManaged(&p, bytes));
    else
      ELASTIC_CUDA_CHECK(cudaMalloc(&p, bytes));
    return std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
  }

  // Grow-only scratch buffers by slot: 0-2 bf16 operands, 3 token ids.
  void* scratch(int slot, size_t bytes) {
    Scratch& s = scratch_[size_t(slot)];
    if (s.bytes < bytes) {
      s.buf = raw_alloc(bytes);
      s.bytes = bytes;
    }
    return s.buf.get();
  }

  cuda::DeviceArena& arena(size_t bytes) {
    if (!arena_ || arena_->capacity() < bytes) {
      arena_.reset();
      arena_ = std::make_unique<cuda::DeviceArena>(bytes);
    }
    arena_->reset();
    return *arena_;
  }

  void done() {
    if (opt_.host_visible) ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  // y[n, N] fp32 = x[n, K] bf16 . W[N, K]^T bf16, through the shape-cached cuBLASLt plans.
  void gemm(float* y, const __nv_bfloat16* x, const __nv_bfloat16* w, int64_t n, int64_t N, int64_t K) {
    gemm_->linear_forward(y, cuda::GemmOut::f32, x, w, n, N, K, 0.f, stream_);
  }

  // Writes the past [pos0, Hkv, d] bf16 (by position) into k, v on the stream.
  using PastGather = std::function<void(__nv_bfloat16* k, __nv_bfloat16* v)>;

  // Prefill attention of the queries at pos0..pos0+n-1 over keys 0..pos0+n-1 (whole prompt:
  // pos0 = 0). The fused kernel reads keys by position from one bf16 buffer [pos0 + n, Hkv, d]:
  // the past rows come from gather_past (a device store, the paged pool) or, without it, from
  // the host views a.past; the chunk's rows are a.k / a.v rounded to bf16.
  void prefill(const AttnArgs& a, const std::vector<AttnMode>& modes,
               const PastGather& gather_past) {
    const int64_t Hq = a.num_heads, Hkv = a.num_kv_heads, d = a.head_dim, n = a.n, pos0 = a.pos0;
    const int64_t keys = pos0 + n;
    cuda::PrefillAttnShape shape{n, int(Hq), int(Hkv), int(d), a.opt, pos0};
    // Arena: work list + XA buffers (mask, scores, partial sums, tile maxima), with slack.
    const int64_t B = a.opt.xa.block, nqb = (n + B - 1) / B, nkb = (keys + B - 1) / B;
    const int64_t rows = nqb * (B / std::max<int64_t>(1, a.opt.xa.stride));
    const int64_t col_tiles = (pos0 / std::max<int64_t>(1, a.opt.xa.stride) + rows + 63) / 64;
    const bool any_xa = std::find(modes.begin(), modes.end(), AttnMode::xa) != modes.end();
    const size_t xa_bytes = !any_xa ? 0
                                    : size_t(Hq) * size_t(nqb * nkb) * 5 +
                                          size_t(Hq) * size_t(rows) * size_t(nkb + col_tiles + 1) * 4;
    const size_t bytes = size_t((n / 64 + 2) * Hq) * 8 + xa_bytes + (size_t(4) << 20);
    // The plan first: it rejects a chunk an XA head cannot start at before anything runs.
    const cuda::PrefillAttnPlan plan = cuda::prefill_attention_plan(shape, modes.data(), arena(bytes), stream_);
    auto* q = static_cast<__nv_bfloat16*>(scratch(0, size_t(n * Hq * d) * 2));
    auto* k = static_cast<__nv_bfloat16*>(scratch(1, size_t(keys * Hkv * d) * 2));
    auto* v = static_cast<__nv_bfloat16*>(scratch(2, size_t(keys * Hkv * d) * 2));
    if (pos0 > 0) {
      if (gather_past) {
        gather_past(k, v);
      } else {
        ELASTIC_CHECK(a.past != nullptr);
        past_upload(k, v, a, pos0);
      }
    }
    cuda::f32_to_bf16_launch(q, a.q, n * Hq * d, stream_);
    cuda::f32_to_bf16_launch(k + pos0 * Hkv * d, a.k, n * Hkv * d, stream_);
    cuda::f32_to_bf16_launch(v + pos0 * Hkv * d, a.v, n * Hkv * d, stream_);
    cuda::PrefillAttnParams p;
    p.q = q;
    p.k = k;
    p.v = v;
    p.out = a.out;
    p.out_fp32 = true;
    p.scale = a.scale;
    cuda::prefill_attention_run(plan, p, stream_);
    if (!a.stats) return;
    std::vector<std::vector<uint8_t>> masks(static_cast<size_t>(Hq));
    int64_t xa_scores = 0;
    if (plan.xa_head_count > 0) {
      const int64_t per_head = nqb * nkb;
      std::vector<uint8_t> all(size_t(Hq * per_head));
      ELASTIC_CUDA_CHECK(cudaMemcpy(all.data(), plan.xa_mask, all.size(), cudaMemcpyDeviceToHost));
      // Strided rows pos0/s .. cols-1, row i scoring columns 0..i (as xa_select_blocks counts).
      const int64_t G = Hq / Hkv, s = a.opt.xa.stride, cols = (keys + s - 1) / s, c0 = pos0 / s;
      for (int64_t h = 0; h < Hq; ++h)
        if (modes[size_t(h / G)] == AttnMode::xa) {
          masks[size_t(h)].assign(all.begin() + h * per_head, all.begin() + (h + 1) * per_head);
          xa_scores += cols * (cols + 1) / 2 - c0 * (c0 + 1) / 2;
        }
    }
    fill_stats(a, modes, masks, plan.xa_head_count > 0 ? nqb : 0, plan.xa_head_count > 0 ? nkb : 0, xa_scores);
  }

  // k, v: device [pos0, Hkv, d] bf16 <- the host views a.past (positions < pos0); positions a
  // ring no longer holds as zeros (prefill_kv_gather_past's rule).
  void past_upload(__nv_bfloat16* k, __nv_bfloat16* v, const AttnArgs& a, int64_t pos0) {
    const int64_t Hkv = a.num_kv_heads, d = a.head_dim;
    std::vector<uint16_t> hk(size_t(pos0 * Hkv * d), 0), hv(hk.size(), 0);
    for (int64_t h = 0; h < Hkv; ++h) {
      const KvHeadView& pv = a.past[h];
      for (int64_t p = 0; p < pos0; ++p) {
        if (pv.ring && p >= pv.sink_tokens && p < pos0 - pv.window_tokens) continue;
        const float* kr = pv.k_row(pv.row(p), d);  // contiguous or paged host rows
        const float* vr = pv.v_row(pv.row(p), d);
        uint16_t* kd = hk.data() + (p * Hkv + h) * d;
        uint16_t* vd = hv.data() + (p * Hkv + h) * d;
        for (int64_t t = 0; t < d; ++t) {
          kd[t] = f32_to_bf16(kr[t]);
          vd[t] = f32_to_bf16(vr[t]);
        }
      }
    }
    upload(k, hk.data(), hk.size() * 2);  // synchronous: the host vectors die on return
    upload(v, hv.data(), hv.size() * 2);
  }

  void decode(const AttnArgs& a, const std::vector<AttnMode>& modes) {
    const int64_t Hq = a.num_heads, Hkv = a.num_kv_heads, d = a.head_dim, pos = a.pos0;
    ELASTIC_CHECK(a.past != nullptr);
    // The new token's k/v (backend memory) and the past rows (the host KV cache) into one
    // bf16 device cache per KV head, in the view's row mapping.
    std::vector<float> k_new(size_t(Hkv * d)), v_new(size_t(Hkv * d));
    download(k_new.data(), a.k, k_new.size() * sizeof(float));
    download(v_new.data(), a.v, v_new.size() * sizeof(float));
    std::vector<int64_t> rows(static_cast<size_t>(Hkv));
    size_t bytes = size_t(8) << 20;
    for (int64_t h = 0; h < Hkv; ++h) {
      const KvHeadView& pv = a.past[h];
      rows[size_t(h)] = pv.ring ? pv.sink_tokens + pv.window_tokens : pos + 1;
      bytes += size_t(rows[size_t(h)] * d) * 4 + 1024;
    }
    cuda::DeviceArena& ar = arena(bytes + size_t(Hq) * size_t(d + 2) * 4 * 256);
    std::vector<cuda::DeviceKvHead> heads(static_cast<size_t>(Hkv));
    std::vector<uint16_t> hk(0), hv(0);
    for (int64_t h = 0; h < Hkv; ++h) {
      const KvHeadView& pv = a.past[h];
      const int64_t r = rows[size_t(h)];
      const int64_t filled = std::min(pos, r);  // rows written by positions < pos
      hk.assign(size_t(r * d), 0);
      hv.assign(size_t(r * d), 0);
      for (int64_t row = 0; row < filled; ++row)  // contiguous or paged host rows
        for (int64_t t = 0; t < d; ++t) {
          hk[size_t(row * d + t)] = f32_to_bf16(pv.k_row(row, d)[t]);
          hv[size_t(row * d + t)] = f32_to_bf16(pv.v_row(row, d)[t]);
        }
      const int64_t row = pv.row(pos);
      for (int64_t t = 0; t < d; ++t) {
        hk[size_t(row * d + t)] = f32_to_bf16(k_new[size_t(h * d + t)]);
        hv[size_t(row * d + t)] = f32_to_bf16(v_new[size_t(h * d + t)]);
      }
      auto* kd = ar.alloc_array<__nv_bfloat16>(hk.size());
      auto* vd = ar.alloc_array<__nv_bfloat16>(hv.size());
      upload(kd, hk.data(), hk.size() * 2);
      upload(vd, hv.data(), hv.size() * 2);
      heads[size_t(h)] = cuda::DeviceKvHead{kd, vd, pv.sink_tokens, pv.window_tokens, pv.ring ? 1 : 0};
    }
    cuda::DecodeAttnShape shape{int(Hq), int(Hkv), int(d), pos + 1, a.opt.ssa};
    decode_run(cuda::decode_attention_plan(shape, heads.data(), modes.data(), ar, stream_), a, ar);
    ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream_));  // host buffers above are freed on return
    if (a.stats) fill_stats(a, modes, {}, 0, 0, 0);
  }

  // One query against the device KV store (its new key already appended): no host traffic, no
  // synchronisation.
  void decode_stored(const AttnArgs& a, const std::vector<AttnMode>& modes, CudaKvStore& store, int64_t layer) {
    const int64_t Hq = a.num_heads, d = a.head_dim, pos = a.pos0;
    cuda::DeviceArena& ar = arena(size_t(Hq * d) * 2 + size_t(Hq) * size_t(d + 2) * 4 * 256 + (size_t(1) << 20));
    const cuda::DecodeAttnShape shape{int(Hq), int(a.num_kv_heads), int(d), pos + 1, a.opt.ssa};
    decode_run(cuda::decode_attention_plan_resident(shape, store.views_dev(layer), store.modes_dev(layer),
                                                    modes.data(), ar),
               a, ar);
    if (a.stats) fill_stats(a, modes, {}, 0, 0, 0);
  }

  // The decode kernels for the one query of `a` (fp32 q converted to bf16 in `ar`; fp32 out).
  void decode_run(const cuda::DecodeAttnPlan& plan, const AttnArgs& a, cuda::DeviceArena& ar) {
    const int64_t n = a.num_heads * a.head_dim;
    auto* q = ar.alloc_array<__nv_bfloat16>(size_t(n));
    cuda::f32_to_bf16_launch(q, a.q, n, stream_);
    cuda::DecodeAttnParams p;
    p.q = q;
    p.out = a.out;
    p.out_fp32 = true;
    p.pos = a.pos0;
    p.scale = a.scale;
    cuda::decode_attention_run(plan, p, stream_);
  }

  // rho and attended pairs from the key set of each mode, as attention_cpu counts them. masks:
  // [Hq][nqb * nkb] (query blocks of the call x key blocks), XA heads only.
  static void fill_stats(const AttnArgs& a, const std::vector<AttnMode>& modes,
                         const std::vector<std::vector<uint8_t>>& masks, int64_t nqb, int64_t nkb,
                         int64_t xa_scores) {
    const int64_t Hq = a.num_heads, G = Hq / a.num_kv_heads, B = a.opt.xa.block;
    AttnStats& st = *a.stats;
    st.causal_pairs = 0;
    for (int64_t i = 0; i < a.n; ++i) st.causal_pairs += a.pos0 + i + 1;
    st.attended_pairs.assign(size_t(Hq), 0);
    for (int64_t h = 0; h < Hq; ++h) {
      const AttnMode m = modes[size_t(h / G)];
      int64_t att = 0;
      for (int64_t i = 0; i < a.n; ++i) {
        const int64_t p = a.pos0 + i;
        if (m == AttnMode::fa) {
          att += p + 1;
        } else if (m == AttnMode::ssa) {
          KeyRange r[2];
          const int c = ssa_key_ranges(a.opt.ssa, p, r);
          for (int j = 0; j < c; ++j) att += std::max<int64_t>(0, std::min(r[j].end, p + 1) - r[j].begin);
        } else {
          const std::vector<uint8_t>& mk = masks[size_t(h)];
          const int64_t qb = i / B;  // the call's query block (pos0 is a multiple of B)
          for (int64_t kb = 0; kb <= p / B; ++kb)
            if (mk[size_t(qb * nkb + kb)]) att += std::min((kb + 1) * B, p + 1) - kb * B;
        }
      }
      st.attended_pairs[size_t(h)] = att;
    }
    st.rho.assign(size_t(Hq), 0.0);
    for (int64_t h = 0; h < Hq; ++h)
      if (st.causal_pairs > 0)
        st.rho[size_t(h)] = double(st.causal_pairs - st.attended_pairs[size_t(h)]) / double(st.causal_pairs);
    st.xa_mask = masks;
    if (st.xa_mask.size() != size_t(Hq)) st.xa_mask.assign(size_t(Hq), {});
    st.xa_q_blocks = nqb;
    st.xa_k_blocks = nkb;
    st.xa_estimate_scores = xa_scores;
  }

  struct Scratch {
    std::shared_ptr<void> buf;
    size_t bytes = 0;
  };

  // The host side of one paged attention call (reused: no allocation per layer once grown).
  struct PagedPlanHost {
    std::vector<cuda::PagedSeq> seqs;    // [S]
    std::vector<cuda::PagedHead> heads;  // [S, Hkv]
    std::vector<int32_t> table;          // page ids, heads[i].table..
    std::vector<int32_t> items;          // sequences of the decode rows
    std::vector<int32_t> row_seq;        // [rows]
    void clear() {
      seqs.clear();
      heads.clear();
      table.clear();
      items.clear();
      row_seq.clear();
    }
  };

  // Host staging for the per-call tables: pinned slots used round-robin, each refilled only after
  // the copy that last read it has completed (its event), so uploads stay asynchronous.
  class PinnedStaging {
   public:
    PinnedStaging() = default;
    PinnedStaging(const PinnedStaging&) = delete;
    PinnedStaging& operator=(const PinnedStaging&) = delete;
    ~PinnedStaging() {
      for (Slot& s : slots_) {
        if (s.event) cudaEventDestroy(s.event);
        if (s.host) cudaFreeHost(s.host);
      }
    }
    // Host memory of the next slot, at least `bytes`; upload() sends it.
    char* acquire(size_t bytes) {
      Slot& s = slots_[next_];
      if (s.event) ELASTIC_CUDA_CHECK(cudaEventSynchronize(s.event));
      if (s.bytes < bytes) {
        if (s.host) ELASTIC_CUDA_CHECK(cudaFreeHost(s.host));
        s.host = nullptr;
        s.bytes = 0;
        ELASTIC_CUDA_CHECK(cudaMallocHost(&s.host, bytes));
        s.bytes = bytes;
      }
      return static_cast<char*>(s.host);
    }
    void upload(void* dst, size_t bytes, cudaStream_t stream) {
      Slot& s = slots_[next_];
      ELASTIC_CUDA_CHECK(cudaMemcpyAsync(dst, s.host, bytes, cudaMemcpyHostToDevice, stream));
      if (!s.event) ELASTIC_CUDA_CHECK(cudaEventCreateWithFlags(&s.event, cudaEventDisableTiming));
      ELASTIC_CUDA_CHECK(cudaEventRecord(s.event, stream));
      next_ = (next_ + 1) % slots_.size();
    }

   private:
    struct Slot {
      void* host = nullptr;
      size_t bytes = 0;
      cudaEvent_t event = nullptr;
    };
    std::array<Slot, 8> slots_{};
    size_t next_ = 0;
  };

  // A grow-only device buffer of at least `bytes` (replacing one frees the old after the device
  // is done with it: cudaFree synchronises).
  void* paged_buffer(Scratch& b, size_t bytes) {
    if (b.bytes < bytes) {
      b.buf = raw_alloc(bytes);
      b.bytes = bytes;
    }
    return b.buf.get();
  }

  // Uploads the plan's arrays in one copy; fills the device pointers of the returned tables and
  // paged_items_ / paged_row_seq_.
  cuda::PagedKv paged_upload(const PagedPlanHost& h) {
    auto align = [](size_t x) { return (x + 15) / 16 * 16; };
    const size_t o_heads = align(h.seqs.size() * sizeof(cuda::PagedSeq));
    const size_t o_table = o_heads + align(h.heads.size() * sizeof(cuda::PagedHead));
    const size_t o_items = o_table + align(h.table.size() * sizeof(int32_t));
    const size_t o_rows = o_items + align(h.items.size() * sizeof(int32_t));
    const size_t bytes = o_rows + align(h.row_seq.size() * sizeof(int32_t));
    char* host = paged_staging_.acquire(bytes);
    std::memcpy(host, h.seqs.data(), h.seqs.size() * sizeof(cuda::PagedSeq));
    std::memcpy(host + o_heads, h.heads.data(), h.heads.size() * sizeof(cuda::PagedHead));
    std::memcpy(host + o_table, h.table.data(), h.table.size() * sizeof(int32_t));
    std::memcpy(host + o_items, h.items.data(), h.items.size() * sizeof(int32_t));
    std::memcpy(host + o_rows, h.row_seq.data(), h.row_seq.size() * sizeof(int32_t));
    char* dev = static_cast<char*>(paged_buffer(paged_meta_, bytes));
    paged_staging_.upload(dev, bytes, stream_);
    cuda::PagedKv kv;
    kv.seqs = reinterpret_cast<const cuda::PagedSeq*>(dev);
    kv.heads = reinterpret_cast<const cuda::PagedHead*>(dev + o_heads);
    kv.table = reinterpret_cast<const int32_t*>(dev + o_table);
    paged_items_ = reinterpret_cast<const int32_t*>(dev + o_items);
    paged_row_seq_ = reinterpret_cast<const int32_t*>(dev + o_rows);
    return kv;
  }

  // Sequence s of a paged call as one request's attention call (rows of s, its modes, stats).
  static AttnArgs paged_seq_args(const PagedAttnParams& p, int64_t s) {
    const int64_t Hq = p.num_heads, Hkv = p.num_kv_heads, d = p.head_dim, r0 = p.cu_seqlens[s];
    AttnArgs a;
    a.out = p.out + r0 * Hq * d;
    a.q = p.q + r0 * Hq * d;
    a.k = p.k + r0 * Hkv * d;
    a.v = p.v + r0 * Hkv * d;
    a.modes = p.modes + s * Hkv;
    a.n = p.cu_seqlens[s + 1] - r0;
    a.pos0 = p.pos0[s];
    a.num_heads = Hq;
    a.num_kv_heads = Hkv;
    a.head_dim = d;
    a.opt = p.opt;
    a.stats = p.stats ? p.stats[s] : nullptr;
    return a;
  }

  CudaBackendOptions opt_;
  cudaStream_t stream_ = nullptr;  // the legacy default stream: ops run in program order
  std::unique_ptr<cuda::GemmLt> gemm_;  // made after the device check (it allocates on the device)
  std::shared_ptr<void> finite_flag_;  // all_finite's device flag, made on first use
  Scratch scratch_[4];
  std::map<const void*, std::shared_ptr<void>> tables_;
  std::unique_ptr<cuda::DeviceArena> arena_;
  cuda::DeviceSampler sampler_;
  PagedPlanHost paged_host_;
  PinnedStaging paged_staging_;
  Scratch paged_meta_, paged_part_stats_, paged_part_acc_;
  const int32_t* paged_items_ = nullptr;    // [items] device, in paged_meta_
  const int32_t* paged_row_seq_ = nullptr;  // [rows] device, in paged_meta_
};

}  // namespace

std::shared_ptr<Backend> backend_cuda(const CudaBackendOptions& opt) {
  return std::make_shared<CudaBackend>(opt);
}

}  // namespace elastic
