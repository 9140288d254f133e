// The Attention Router (SPEC §5) on the device: one CTA per KV head h of a layer computes
//   x[e]   = mean of k[t, h, e] over concat(k[:P], k[-P:]) (router_pool.h: shared tokens twice)
//   hid    = SiLU(W1 x + b1);  u = W2 hid + b2                      (task MLP, d -> 4d -> d)
//   hid    = SiLU(W3 u + b3);  r = SiLU(W4 hid + b4);  z[h] = W5 r + b5   (router MLP, d -> 4d -> d
//   -> C)
// in double from the fp32 keys and weights, as router.cpp does. Pooling sums the tokens in the
// CPU's order (the pooled keys are bit-identical); each linear output is one warp's dot product
// (lanes stride the inputs, then a shuffle reduction), a different summation order than the CPU's
// sequential loop, so z agrees with the reference to ~1e-15 relative (and exp() to an ulp).
// Invariants: blockDim.x == kRouterThreads, a multiple of 32; the activations live in shared
// memory (7 d doubles); every __syncthreads is reached by all threads of the CTA.
#include "router_cuda.h"

#include "elastic/router_pool.h"

#include <string>

#include "elastic/cuda/cuda_check.h"
#include "elastic/error.h"

namespace elastic::cuda {
namespace {

constexpr int kRouterThreads = 256;
static_assert(kRouterThreads % 32 == 0, "whole warps");

struct RouterKernelParams {
  RouterDeviceLayer w;
  const float* k;  // [n, Hkv, d] fp32
  double* z;       // [Hkv, C]
  int64_t n = 0;
  int64_t pool_tokens = 0;
  int kv_heads = 0, d = 0, classes = 0;
};

// y[o] = act(b[o] + sum_i W[o, i] x[i]) for o in [0, out); W: [out, in] fp32; x: [in] double.
// One warp per output row (coalesced row reads). Ends with a barrier, so y is visible to the CTA.
__device__ void router_linear(double* y, const float* W, const float* b, const double* x, int out,
                              int in, bool silu) {
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32,
            warps = int(blockDim.x) / 32;
  for (int o = warp; o < out; o += warps) {
    const float* row = W + int64_t(o) * in;
    double s = 0.0;
    for (int i = lane; i < in; i += 32) s += double(row[i]) * x[i];
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) {
      const double v = s + double(b[o]);
      y[o] = silu ? v / (1.0 + exp(-v)) : v;
    }
  }
  __syncthreads();
}

__global__ void __launch_bounds__(kRouterThreads) router_layer_kernel(RouterKernelParams p) {
  extern __shared__ double smem[];  // [7 d]
  const int d = p.d, h4 = 4 * d, h = int(blockIdx.x);
  double* x = smem;      // [d]  pooled keys of head h
  double* hid = x + d;   // [4d] hidden layer (reused by both MLPs)
  double* u = hid + h4;  // [d]  task feature
  double* r = u + d;     // [d]  router hidden
  const RouterPoolRange pool{p.n, p.pool_tokens};  // concat(k[:P], k[-P:]), router_pool.h
  for (int e = int(threadIdx.x); e < d; e += int(blockDim.x)) {
    double s = 0.0;
    for (int64_t t = 0; t < pool.head_end(); ++t) s += double(p.k[(t * p.kv_heads + h) * d + e]);
    for (int64_t t = pool.tail_begin(); t < p.n; ++t) s += double(p.k[(t * p.kv_heads + h) * d + e]);
    x[e] = s / double(pool.count());
  }
  __syncthreads();
  router_linear(hid, p.w.w1, p.w.b1, x, h4, d, true);
  router_linear(u, p.w.w2, p.w.b2, hid, d, h4, false);
  router_linear(hid, p.w.w3, p.w.b3, u, h4, d, true);
  router_linear(r, p.w.w4, p.w.b4, hid, d, h4, true);
  router_linear(p.z + int64_t(h) * p.classes, p.w.w5, p.w.b5, r, p.classes, d, false);
}

std::shared_ptr<void> device_alloc(size_t bytes) {
  void* ptr = nullptr;
  ELASTIC_CUDA_CHECK(cudaMalloc(&ptr, bytes));
  return std::shared_ptr<void>(ptr, [](void* q) { cudaFree(q); });
}

}  // namespace

std::shared_ptr<RouterDevice> router_device_upload(const RouterWeights& w) {
  const int64_t d = w.head_dim, h4 = 4 * d, C = w.classes;
  if (d <= 0 || d > kRouterMaxHeadDim)
    throw Error("CUDA router: head_dim " + std::to_string(d) + " is unsupported (1.." +
                std::to_string(kRouterMaxHeadDim) + ")");
  ELASTIC_CHECK(C == 1 || C == 2);
  ELASTIC_CHECK(!w.layers.empty());
  // Per layer, in this order: w1 b1 w2 b2 w3 b3 w4 b4 w5 b5 (float offsets into one buffer).
  std::vector<float> host;
  std::vector<size_t> offsets;  // [L * 10]
  for (const RouterLayerWeights& L : w.layers) {
    const std::vector<float>* parts[10] = {&L.w1, &L.b1, &L.w2, &L.b2, &L.w3,
                                           &L.b3, &L.w4, &L.b4, &L.w5, &L.b5};
    const int64_t sizes[10] = {h4 * d, h4, d * h4, d, h4 * d, h4, d * h4, d, C * d, C};
    for (int i = 0; i < 10; ++i) {
      ELASTIC_CHECK_MSG(int64_t(parts[i]->size()) == sizes[i],
                        "router tensor size differs from its shape");
      offsets.push_back(host.size());
      host.insert(host.end(), parts[i]->begin(), parts[i]->end());
    }
  }
  auto r = std::make_shared<RouterDevice>();
  r->head_dim = d;
  r->classes = C;
  r->weights = device_alloc(host.size() * sizeof(float));
  ELASTIC_CUDA_CHECK(cudaMemcpy(r->weights.get(), host.data(), host.size() * sizeof(float),
                                cudaMemcpyHostToDevice));
  const float* base = static_cast<const float*>(r->weights.get());
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const size_t* o = &offsets[l * 10];
    r->layers.push_back(RouterDeviceLayer{base + o[0], base + o[1], base + o[2], base + o[3],
                                          base + o[4], base + o[5], base + o[6], base + o[7],
                                          base + o[8], base + o[9]});
  }
  return r;
}

void router_device_forward(double* z_host, RouterDevice& r, int64_t layer, const float* k,
                           int64_t n, int64_t num_kv_heads, int64_t pool_tokens,
                           cudaStream_t stream) {
  ELASTIC_CHECK(layer >= 0 && layer < int64_t(r.layers.size()));
  ELASTIC_CHECK(n > 0 && num_kv_heads > 0 && pool_tokens > 0 && k != nullptr);
  const int64_t count = num_kv_heads * r.classes;  // z: [Hkv, C]
  if (r.z_capacity < count) {
    r.z = device_alloc(size_t(count) * sizeof(double));
    r.z_capacity = count;
  }
  RouterKernelParams p;
  p.w = r.layers[size_t(layer)];
  p.k = k;
  p.z = static_cast<double*>(r.z.get());
  p.n = n;
  p.pool_tokens = pool_tokens;
  p.kv_heads = int(num_kv_heads);
  p.d = int(r.head_dim);
  p.classes = int(r.classes);
  const size_t smem = size_t(7 * r.head_dim) * sizeof(double);
  router_layer_kernel<<<unsigned(num_kv_heads), kRouterThreads, smem, stream>>>(p);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
  ELASTIC_CUDA_CHECK(cudaMemcpyAsync(z_host, r.z.get(), size_t(count) * sizeof(double),
                                     cudaMemcpyDeviceToHost, stream));
  ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace elastic::cuda
