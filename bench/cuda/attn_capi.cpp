// C entry points over the CUDA attention API for the Python benchmark (ctypes on torch tensors'
// data_ptr()), so ours, cuDNN SDPA and FlexAttention run on the same device tensors in one
// process. Every function returns 0 on success, -1 on error (message: ea_last_error()).
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "elastic/cuda/arena.h"
#include "elastic/cuda/attention_cuda.h"

namespace elastic::cuda::detail {
void set_prefill_variant(int variant);  // src/cuda/prefill_internal.h
}

namespace {

struct Handle {
  std::unique_ptr<elastic::cuda::DeviceArena> arena;
  elastic::cuda::PrefillAttnPlan plan;
};

thread_local std::string g_last_error;

template <typename F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    g_last_error = e.what();
    return -1;
  }
}

elastic::cuda::PrefillAttnParams params(const void* q, const void* k, const void* v, void* out,
                                        int64_t q_tok, int64_t q_head, int64_t kv_tok,
                                        int64_t kv_head, int64_t o_tok, int64_t o_head,
                                        int out_fp32) {
  elastic::cuda::PrefillAttnParams p;
  p.q = static_cast<const __nv_bfloat16*>(q);
  p.k = static_cast<const __nv_bfloat16*>(k);
  p.v = static_cast<const __nv_bfloat16*>(v);
  p.out = out;
  p.out_fp32 = out_fp32 != 0;
  p.q_stride = {q_tok, q_head};
  p.k_stride = {kv_tok, kv_head};
  p.v_stride = {kv_tok, kv_head};
  p.out_stride = {o_tok, o_head};
  return p;
}

}  // namespace

extern "C" {

const char* ea_last_error() { return g_last_error.c_str(); }

void* ea_create(int64_t arena_bytes) {
  Handle* h = nullptr;
  guarded([&] {
    h = new Handle;
    h->arena = std::make_unique<elastic::cuda::DeviceArena>(size_t(arena_bytes));
  });
  return h;
}

void ea_destroy(void* handle) { delete static_cast<Handle*>(handle); }

// d = 128 tile-shape variant for the next plans (0 = default; see prefill_internal.h).
void ea_set_variant(int variant) { elastic::cuda::detail::set_prefill_variant(variant); }

// modes: [hkv] 0 = FA, 1 = SSA, 2 = XA.
int ea_plan(void* handle, int64_t n, int hq, int hkv, int d, const uint8_t* modes,
            int64_t ssa_block, int64_t sink, int64_t local, int64_t xa_block, int64_t xa_stride,
            double threshold, void* stream) {
  return guarded([&] {
    Handle* h = static_cast<Handle*>(handle);
    h->arena->reset();
    elastic::cuda::PrefillAttnShape shape;
    shape.n = n;
    shape.num_heads = hq;
    shape.num_kv_heads = hkv;
    shape.head_dim = d;
    shape.opt.ssa.block = ssa_block;
    shape.opt.ssa.sink_tokens = sink;
    shape.opt.ssa.local_tokens = local;
    shape.opt.xa.block = xa_block;
    shape.opt.xa.stride = xa_stride;
    shape.opt.xa.threshold = threshold;
    std::vector<elastic::AttnMode> m(static_cast<size_t>(hkv));
    for (int i = 0; i < hkv; ++i) m[size_t(i)] = static_cast<elastic::AttnMode>(modes[i]);
    h->plan = elastic::cuda::prefill_attention_plan(shape, m.data(), *h->arena,
                                                    static_cast<cudaStream_t>(stream));
  });
}

int ea_run(void* handle, const void* q, const void* k, const void* v, void* out, int64_t q_tok,
           int64_t q_head, int64_t kv_tok, int64_t kv_head, int64_t o_tok, int64_t o_head,
           int out_fp32, void* stream) {
  return guarded([&] {
    Handle* h = static_cast<Handle*>(handle);
    elastic::cuda::prefill_attention_run(
        h->plan, params(q, k, v, out, q_tok, q_head, kv_tok, kv_head, o_tok, o_head, out_fp32),
        static_cast<cudaStream_t>(stream));
  });
}

int ea_xa_estimate(void* handle, const void* q, const void* k, const void* v, void* out,
                   int64_t q_tok, int64_t q_head, int64_t kv_tok, int64_t kv_head, int64_t o_tok,
                   int64_t o_head, int out_fp32, void* stream) {
  return guarded([&] {
    Handle* h = static_cast<Handle*>(handle);
    elastic::cuda::xa_estimate_run(
        h->plan, params(q, k, v, out, q_tok, q_head, kv_tok, kv_head, o_tok, o_head, out_fp32),
        static_cast<cudaStream_t>(stream));
  });
}

// Fraction of causal XA blocks kept by the last estimation, over the XA heads (host sync).
double ea_xa_kept_fraction(void* handle) {
  double frac = -1;
  guarded([&] {
    Handle* h = static_cast<Handle*>(handle);
    const auto& plan = h->plan;
    if (plan.xa_head_count == 0) return;
    const size_t nb = size_t(plan.xa_q_blocks);
    std::vector<uint8_t> mask(size_t(plan.shape.num_heads) * nb * nb);
    cudaMemcpy(mask.data(), plan.xa_mask, mask.size(), cudaMemcpyDeviceToHost);
    const int G = plan.shape.num_heads / plan.shape.num_kv_heads;
    double kept = 0, total = 0;
    for (int hq = 0; hq < plan.shape.num_heads; ++hq) {
      if (plan.modes[size_t(hq / G)] != elastic::AttnMode::xa) continue;
      for (size_t a = 0; a < nb; ++a)
        for (size_t b = 0; b <= a; ++b) {
          kept += mask[(size_t(hq) * nb + a) * nb + b];
          total += 1;
        }
    }
    frac = kept / total;
  });
  return frac;
}

}  // extern "C"
