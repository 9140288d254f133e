// Training ops of the CUDA engine (ops_train_cuda.h). Elementwise ops are grid-stride loops;
// row ops (RMSNorm) take one warp per row; reductions (RMSNorm weight gradient, bias gradient,
// router dz, sum of squares) reduce in shared memory first and add to global memory once per
// CTA. Math in fp32, or double where the CPU reference keeps double (pooling, AdamW, dz).
#include <algorithm>
#include <cmath>

#include "cuda/train/ops_train_cuda.h"
#include "elastic/cuda/cuda_check.h"
#include "elastic/router_pool.h"

namespace elastic::cuda::train_ops {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t count, int threads = kThreads) {
  const int64_t blocks = (count + threads - 1) / threads;
  return unsigned(std::clamp<int64_t>(blocks, 1, 132 * 32));
}

#define GRID_STRIDE(i, count)                                                   \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (count); \
       i += int64_t(gridDim.x) * blockDim.x)

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }

__device__ __forceinline__ float warp_sum(float s) {
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  return s;
}
__device__ __forceinline__ double warp_sum(double s) {
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  return s;
}

// Block sum (blockDim.x a multiple of 32, <= 1024); the result is valid in thread 0.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T part[32];
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  T total = 0;
  if (threadIdx.x < 32) {
    total = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : T(0);
    total = warp_sum(total);
  }
  __syncthreads();  // part[] may be reused by the caller's next block_sum
  return total;
}

__global__ void convert_bf16_to_f32_kernel(float* out, const bf16* in, int64_t count) {
  GRID_STRIDE(i, count) out[i] = __bfloat162float(in[i]);
}
__global__ void convert_f32_to_bf16_kernel(bf16* out, const float* in, int64_t count) {
  GRID_STRIDE(i, count) out[i] = __float2bfloat16_rn(in[i]);
}
__global__ void add_bf16_f32_kernel(float* out, const bf16* a, const float* b, int64_t count) {
  GRID_STRIDE(i, count) out[i] = __bfloat162float(a[i]) + b[i];
}

__global__ void embedding_forward_kernel(bf16* out, const int32_t* ids, int64_t n,
                                         const bf16* table, int64_t D) {
  GRID_STRIDE(i, n * D) out[i] = table[int64_t(ids[i / D]) * D + i % D];
}
__global__ void embedding_backward_kernel(float* dtable, const float* dout, const int32_t* ids,
                                          int64_t n, int64_t D) {
  GRID_STRIDE(i, n * D) atomicAdd(dtable + int64_t(ids[i / D]) * D + i % D, dout[i]);
}

template <typename TIn>
__global__ void rmsnorm_forward_kernel(bf16* out, float* rstd, const TIn* inp, const bf16* w,
                                       int64_t rows, int64_t D, float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; r < rows; r += warps) {
    const TIn* x = inp + r * D;
    float ss = 0.f;
    for (int64_t i = lane; i < D; i += 32) {
      const float v = to_f(x[i]);
      ss += v * v;
    }
    ss = warp_sum(ss);
    const float inv = rsqrtf(ss / float(D) + eps);
    if (lane == 0) rstd[r] = inv;
    for (int64_t i = lane; i < D; i += 32)
      out[r * D + i] = __float2bfloat16_rn(__bfloat162float(w[i]) * (to_f(x[i]) * inv));
  }
}

// dx = r (w dy) - x r^3 / D sum(w dy x); dw[i] += sum_rows dy x r (shared-memory partials of the
// CTA's rows, then one global atomic per column and CTA).
template <typename TIn>
__global__ void rmsnorm_backward_kernel(float* dinp, float* dweight, const float* dout,
                                        const TIn* inp, const bf16* w, const float* rstd,
                                        int64_t rows, int64_t D) {
  extern __shared__ float dw_part[];  // [D] when dweight
  if (dweight) {
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) dw_part[i] = 0.f;
    __syncthreads();
  }
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; r < rows; r += warps) {
    const TIn* x = inp + r * D;
    const float* dy = dout + r * D;
    const float rs = rstd[r];
    float dot = 0.f;
    for (int64_t i = lane; i < D; i += 32) dot += __bfloat162float(w[i]) * dy[i] * to_f(x[i]);
    dot = warp_sum(dot);
    const float c = dot * rs * rs * rs / float(D);
    for (int64_t i = lane; i < D; i += 32) {
      const float xi = to_f(x[i]);
      dinp[r * D + i] += rs * __bfloat162float(w[i]) * dy[i] - c * xi;
      if (dweight) atomicAdd(dw_part + i, dy[i] * xi * rs);
    }
  }
  if (dweight) {
    __syncthreads();
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) atomicAdd(dweight + i, dw_part[i]);
  }
}

// One CTA per row (grid-stride over rows), threads over the row's (head, pair) in 32-bit math.
__global__ void rope_forward_kernel(bf16* out, const bf16* x, const float* cos, const float* sin,
                                    int64_t n, int heads, int d) {
  const int half = d / 2, per_row = heads * half;
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const float* cr = cos + row * half;
    const float* sr = sin + row * half;
    for (int e = threadIdx.x; e < per_row; e += blockDim.x) {
      const int head = e / half, j = e - head * half;
      const int64_t base = (row * heads + head) * d;
      const float c = cr[j], s = sr[j];
      const float a = __bfloat162float(x[base + j]), b = __bfloat162float(x[base + j + half]);
      out[base + j] = __float2bfloat16_rn(a * c - b * s);
      out[base + j + half] = __float2bfloat16_rn(b * c + a * s);
    }
  }
}
__global__ void rope_backward_kernel(float* dx, const float* dout, const float* cos,
                                     const float* sin, int64_t n, int heads, int d) {
  const int half = d / 2, per_row = heads * half;
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const float* cr = cos + row * half;
    const float* sr = sin + row * half;
    for (int e = threadIdx.x; e < per_row; e += blockDim.x) {
      const int head = e / half, j = e - head * half;
      const int64_t base = (row * heads + head) * d;
      const float c = cr[j], s = sr[j];
      const float ga = dout[base + j], gb = dout[base + j + half];
      dx[base + j] += ga * c + gb * s;
      dx[base + j + half] += gb * c - ga * s;
    }
  }
}

__device__ __forceinline__ float sigmoidf(float x) { return 1.f / (1.f + __expf(-x)); }

__global__ void swiglu_forward_kernel(bf16* out, const bf16* gate, const bf16* up, int64_t count) {
  GRID_STRIDE(i, count) {
    const float g = __bfloat162float(gate[i]);
    out[i] = __float2bfloat16_rn(g * sigmoidf(g) * __bfloat162float(up[i]));
  }
}
__global__ void swiglu_backward_kernel(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate,
                                       const bf16* up, int64_t count) {
  GRID_STRIDE(i, count) {
    const float g = __bfloat162float(gate[i]), u = __bfloat162float(up[i]);
    const float dy = __bfloat162float(dout[i]), sig = sigmoidf(g);
    dgate[i] = __float2bfloat16_rn(dy * u * sig * (1.f + g * (1.f - sig)));
    dup[i] = __float2bfloat16_rn(dy * g * sig);
  }
}

template <typename T>
__global__ void bias_add_kernel(T* y, const bf16* bias, int64_t rows, int64_t cols) {
  GRID_STRIDE(i, rows * cols) {
    const float v = to_f(y[i]) + __bfloat162float(bias[i % cols]);
    if constexpr (sizeof(T) == 2)
      y[i] = __float2bfloat16_rn(v);
    else
      y[i] = v;
  }
}

// Column sums: blockIdx.x picks 32 columns, threadIdx.y a row stripe of blockIdx.y.
template <typename T>
__global__ void bias_backward_kernel(float* dbias, const T* dy, int64_t rows, int64_t cols) {
  __shared__ float part[8][33];
  const int64_t c = int64_t(blockIdx.x) * 32 + threadIdx.x;
  float s = 0.f;
  if (c < cols)
    for (int64_t r = int64_t(blockIdx.y) * 8 + threadIdx.y; r < rows; r += int64_t(gridDim.y) * 8)
      s += to_f(dy[r * cols + c]);
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    for (int i = 1; i < 8; ++i) s += part[i][threadIdx.x];
    atomicAdd(dbias + c, s);
  }
}

__global__ void cross_entropy_kernel(bf16* dlogits, double* loss, const float* logits,
                                     const int32_t* labels, int64_t V, float scale) {
  const int64_t r = blockIdx.x;
  const float* z = logits + r * V;
  // Online max / sum per thread, merged over the block.
  float mx = -INFINITY, sum = 0.f;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float v = z[i];
    if (v > mx) {
      sum = sum * __expf(mx - v) + 1.f;
      mx = v;
    } else {
      sum += __expf(v - mx);
    }
  }
  __shared__ float s_max[32], s_sum[32];
  __shared__ float s_lse;
  for (int off = 16; off > 0; off >>= 1) {
    const float om = __shfl_xor_sync(0xffffffffu, mx, off),
                os = __shfl_xor_sync(0xffffffffu, sum, off);
    const float m = fmaxf(mx, om);
    sum = (mx == -INFINITY ? 0.f : sum * __expf(mx - m)) +
          (om == -INFINITY ? 0.f : os * __expf(om - m));
    mx = m;
  }
  if (threadIdx.x % 32 == 0) s_max[threadIdx.x / 32] = mx, s_sum[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = -INFINITY;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) m = fmaxf(m, s_max[w]);
    double s = 0;
    for (unsigned w = 0; w < blockDim.x / 32; ++w)
      s += double(s_sum[w]) * exp(double(s_max[w] - m));
    const double lse = double(m) + log(s);
    s_lse = float(lse);
    loss[r] = lse - double(z[labels[r]]);
  }
  __syncthreads();
  const float lse = s_lse;
  const int y = labels[r];
  bf16* dz = dlogits + r * V;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x)
    dz[i] = __float2bfloat16_rn((__expf(z[i] - lse) - (i == y ? 1.f : 0.f)) * scale);
}

__global__ void gather_rows_kernel(bf16* out, const bf16* in, const int32_t* idx, int64_t m,
                                   int64_t D) {
  GRID_STRIDE(i, m * D) out[i] = in[int64_t(idx[i / D]) * D + i % D];
}
__global__ void scatter_add_rows_kernel(float* out, const float* in, const int32_t* idx, int64_t m,
                                        int64_t D) {
  GRID_STRIDE(i, m * D) out[int64_t(idx[i / D]) * D + i % D] += in[i];
}

// One CTA per (sample, KV head), one thread per component; tokens in the CPU's order.
__global__ void router_pool_forward_kernel(double* pooled, const bf16* k, const int2* seqs,
                                           int64_t Hkv, int64_t d, int64_t P, int segment_mean) {
  const int64_t s = blockIdx.x / Hkv, h = blockIdx.x % Hkv;
  const int2 span = seqs[s];
  const RouterPoolRange pool{span.y, P};
  for (int64_t e = threadIdx.x; e < d; e += blockDim.x) {
    auto at = [&](int64_t t) {
      return double(__bfloat162float(k[((span.x + t) * Hkv + h) * d + e]));
    };
    double acc = 0;
    double count;
    if (segment_mean) {
      for (int64_t t = 0; t < span.y; ++t) acc += at(t);
      count = double(span.y);
    } else {
      for (int64_t t = 0; t < pool.head_end(); ++t) acc += at(t);
      for (int64_t t = pool.tail_begin(); t < span.y; ++t) acc += at(t);
      count = double(pool.count());
    }
    pooled[blockIdx.x * d + e] = acc / count;
  }
}

// blockIdx.x: (sample, KV head); blockIdx.y strides over the sample's tokens.
__global__ void router_pool_backward_kernel(float* dk, const double* dpooled, const int2* seqs,
                                            int64_t Hkv, int64_t d, int64_t P, int segment_mean) {
  const int64_t s = blockIdx.x / Hkv, h = blockIdx.x % Hkv;
  const int2 span = seqs[s];
  const RouterPoolRange pool{span.y, P};
  for (int64_t t = blockIdx.y; t < span.y; t += gridDim.y) {
    const double w = segment_mean ? 1.0 / double(span.y) : pool.weight(t);
    if (w == 0) continue;
    for (int64_t e = threadIdx.x; e < d; e += blockDim.x)
      dk[((span.x + t) * Hkv + h) * d + e] += float(w * dpooled[blockIdx.x * d + e]);
  }
}

// blockIdx.x: a chunk of rows of one sequence, blockIdx.y: the KV head.
__global__ void router_dz_kernel(double* dz, const bf16* datt, const bf16* att, const bf16* other,
                                 const int4* chunks, int64_t Hq, int64_t Hkv, int64_t d) {
  const int4 c = chunks[blockIdx.x];
  const int h = int(blockIdx.y), G = int(Hq / Hkv), per_row = G * int(d);
  const int count = (c.z - c.y) * per_row;  // <= 256 rows x 8 heads x 128
  float acc = 0.f;
  for (int i = threadIdx.x; i < count; i += blockDim.x) {
    const int r = i / per_row, within = i - r * per_row;
    const int64_t at = (int64_t(c.y + r) * Hq + int64_t(h) * G) * d + within;
    acc += __bfloat162float(datt[at]) * (__bfloat162float(att[at]) - __bfloat162float(other[at]));
  }
  const double total = block_sum(double(acc));
  if (threadIdx.x == 0) atomicAdd(dz + int64_t(c.x) * Hkv + h, total);
}

__global__ void adamw_kernel(float* p, bf16* p_bf16, const float* g, float* m, float* v, int64_t n,
                             AdamWArgs a) {
  const double decay = 1.0 - a.lr * a.weight_decay;
  GRID_STRIDE(i, n) {
    const double gi = double(g[i]) * a.grad_scale;
    const double mi = a.beta1 * m[i] + (1.0 - a.beta1) * gi;
    const double vi = a.beta2 * v[i] + (1.0 - a.beta2) * gi * gi;
    m[i] = float(mi);
    v[i] = float(vi);
    const double denom = sqrt(vi / a.bc2) + a.eps;
    const float pn = float(p[i] * decay - a.lr * (mi / a.bc1) / denom);
    p[i] = pn;
    if (p_bf16) p_bf16[i] = __float2bfloat16_rn(pn);
  }
}

__global__ void sum_squares_kernel(double* partials, const float* x, int64_t n) {
  double s = 0;
  GRID_STRIDE(i, n) s += double(x[i]) * x[i];
  const double t = block_sum(s);
  if (threadIdx.x == 0) partials[blockIdx.x] = t;
}

__device__ __forceinline__ uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

__global__ void fill_random_bf16_kernel(bf16* out, int64_t count, uint64_t seed, float stddev) {
  GRID_STRIDE(i, count) {
    const uint64_t h = mix64(seed * 0x9e3779b97f4a7c15ull + uint64_t(i));
    const float u = float(h >> 40) * (1.f / 16777216.f);  // [0, 1)
    out[i] = __float2bfloat16_rn((2.f * u - 1.f) * 1.7320508f * stddev);
  }
}
__global__ void fill_bf16_kernel(bf16* out, int64_t count, float value) {
  GRID_STRIDE(i, count) out[i] = __float2bfloat16_rn(value);
}

#define CHECK_LAUNCH() ELASTIC_CUDA_CHECK(cudaGetLastError())

unsigned row_warps_grid(int64_t rows) {  // 8 warps per CTA, one warp per row (grid-stride)
  return unsigned(std::clamp<int64_t>((rows + 7) / 8, 1, 132 * 16));
}

}  // namespace

void convert_bf16_to_f32(float* out, const bf16* in, int64_t count, cudaStream_t stream) {
  if (count == 0) return;
  convert_bf16_to_f32_kernel<<<grid_for(count), kThreads, 0, stream>>>(out, in, count);
  CHECK_LAUNCH();
}
void convert_f32_to_bf16(bf16* out, const float* in, int64_t count, cudaStream_t stream) {
  if (count == 0) return;
  convert_f32_to_bf16_kernel<<<grid_for(count), kThreads, 0, stream>>>(out, in, count);
  CHECK_LAUNCH();
}
void add_bf16_f32(float* out, const bf16* a, const float* b, int64_t count, cudaStream_t stream) {
  if (count == 0) return;
  add_bf16_f32_kernel<<<grid_for(count), kThreads, 0, stream>>>(out, a, b, count);
  CHECK_LAUNCH();
}

void embedding_forward(bf16* out, const int32_t* ids, int64_t n, const bf16* table, int64_t D,
                       cudaStream_t stream) {
  if (n == 0) return;
  embedding_forward_kernel<<<grid_for(n * D), kThreads, 0, stream>>>(out, ids, n, table, D);
  CHECK_LAUNCH();
}
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t n, int64_t D,
                        cudaStream_t stream) {
  if (n == 0) return;
  embedding_backward_kernel<<<grid_for(n * D), kThreads, 0, stream>>>(dtable, dout, ids, n, D);
  CHECK_LAUNCH();
}

template <typename TIn>
void rmsnorm_forward(bf16* out, float* rstd, const TIn* inp, const bf16* weight, int64_t rows,
                     int64_t D, float eps, cudaStream_t stream) {
  if (rows == 0) return;
  rmsnorm_forward_kernel<TIn>
      <<<row_warps_grid(rows), kThreads, 0, stream>>>(out, rstd, inp, weight, rows, D, eps);
  CHECK_LAUNCH();
}
template <typename TIn>
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const TIn* inp,
                      const bf16* weight, const float* rstd, int64_t rows, int64_t D,
                      cudaStream_t stream) {
  if (rows == 0) return;
  const size_t smem = dweight ? size_t(D) * sizeof(float) : 0;
  // With a weight gradient, fewer CTAs: each folds many rows into its shared partials.
  const unsigned grid = dweight ? std::min(row_warps_grid(rows), 132u * 2) : row_warps_grid(rows);
  if (smem > 48 * 1024)
    ELASTIC_CUDA_CHECK(cudaFuncSetAttribute(
        rmsnorm_backward_kernel<TIn>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  rmsnorm_backward_kernel<TIn>
      <<<grid, kThreads, smem, stream>>>(dinp, dweight, dout, inp, weight, rstd, rows, D);
  CHECK_LAUNCH();
}
template void rmsnorm_forward<float>(bf16*, float*, const float*, const bf16*, int64_t, int64_t,
                                     float, cudaStream_t);
template void rmsnorm_forward<bf16>(bf16*, float*, const bf16*, const bf16*, int64_t, int64_t,
                                    float, cudaStream_t);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const bf16*,
                                      const float*, int64_t, int64_t, cudaStream_t);
template void rmsnorm_backward<bf16>(float*, float*, const float*, const bf16*, const bf16*,
                                     const float*, int64_t, int64_t, cudaStream_t);

void rope_forward(bf16* out, const bf16* x, const float* cos, const float* sin, int64_t n,
                  int64_t heads, int64_t d, cudaStream_t stream) {
  if (n == 0) return;
  const unsigned grid = unsigned(std::min<int64_t>(n, 132 * 16));
  rope_forward_kernel<<<grid, kThreads, 0, stream>>>(out, x, cos, sin, n, int(heads), int(d));
  CHECK_LAUNCH();
}
void rope_backward(float* dx, const float* dout, const float* cos, const float* sin, int64_t n,
                   int64_t heads, int64_t d, cudaStream_t stream) {
  if (n == 0) return;
  const unsigned grid = unsigned(std::min<int64_t>(n, 132 * 16));
  rope_backward_kernel<<<grid, kThreads, 0, stream>>>(dx, dout, cos, sin, n, int(heads), int(d));
  CHECK_LAUNCH();
}

void swiglu_forward(bf16* out, const bf16* gate, const bf16* up, int64_t count,
                    cudaStream_t stream) {
  if (count == 0) return;
  swiglu_forward_kernel<<<grid_for(count), kThreads, 0, stream>>>(out, gate, up, count);
  CHECK_LAUNCH();
}
void swiglu_backward(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate, const bf16* up,
                     int64_t count, cudaStream_t stream) {
  if (count == 0) return;
  swiglu_backward_kernel<<<grid_for(count), kThreads, 0, stream>>>(dgate, dup, dout, gate, up,
                                                                   count);
  CHECK_LAUNCH();
}

void bias_add(bf16* y, const bf16* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows * cols == 0) return;
  bias_add_kernel<bf16><<<grid_for(rows * cols), kThreads, 0, stream>>>(y, bias, rows, cols);
  CHECK_LAUNCH();
}
void bias_add(float* y, const bf16* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows * cols == 0) return;
  bias_add_kernel<float><<<grid_for(rows * cols), kThreads, 0, stream>>>(y, bias, rows, cols);
  CHECK_LAUNCH();
}
template <typename T>
void bias_backward_t(float* dbias, const T* dy, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows * cols == 0) return;
  const dim3 grid(unsigned((cols + 31) / 32),
                  unsigned(std::clamp<int64_t>((rows + 255) / 256, 1, 64)));
  bias_backward_kernel<T><<<grid, dim3(32, 8), 0, stream>>>(dbias, dy, rows, cols);
  CHECK_LAUNCH();
}
void bias_backward(float* dbias, const bf16* dy, int64_t rows, int64_t cols, cudaStream_t stream) {
  bias_backward_t(dbias, dy, rows, cols, stream);
}
void bias_backward(float* dbias, const float* dy, int64_t rows, int64_t cols, cudaStream_t stream) {
  bias_backward_t(dbias, dy, rows, cols, stream);
}

void cross_entropy_forward_backward(bf16* dlogits, double* loss, const float* logits,
                                    const int32_t* labels, int64_t rows, int64_t V, float scale,
                                    cudaStream_t stream) {
  if (rows == 0) return;
  cross_entropy_kernel<<<unsigned(rows), 1024, 0, stream>>>(dlogits, loss, logits, labels, V,
                                                            scale);
  CHECK_LAUNCH();
}

void gather_rows(bf16* out, const bf16* in, const int32_t* idx, int64_t m, int64_t D,
                 cudaStream_t stream) {
  if (m == 0) return;
  gather_rows_kernel<<<grid_for(m * D), kThreads, 0, stream>>>(out, in, idx, m, D);
  CHECK_LAUNCH();
}
void scatter_add_rows(float* out, const float* in, const int32_t* idx, int64_t m, int64_t D,
                      cudaStream_t stream) {
  if (m == 0) return;
  scatter_add_rows_kernel<<<grid_for(m * D), kThreads, 0, stream>>>(out, in, idx, m, D);
  CHECK_LAUNCH();
}

void router_pool_forward(double* pooled, const bf16* k, const int2* seqs, int64_t S, int64_t Hkv,
                         int64_t d, int64_t pool_tokens, bool segment_mean, cudaStream_t stream) {
  if (S * Hkv == 0) return;
  router_pool_forward_kernel<<<unsigned(S * Hkv), unsigned(std::min<int64_t>(d, 256)), 0, stream>>>(
      pooled, k, seqs, Hkv, d, pool_tokens, segment_mean ? 1 : 0);
  CHECK_LAUNCH();
}
void router_pool_backward(float* dk, const double* dpooled, const int2* seqs, int64_t S,
                          int64_t Hkv, int64_t d, int64_t pool_tokens, bool segment_mean,
                          cudaStream_t stream) {
  if (S * Hkv == 0) return;
  const dim3 grid(unsigned(S * Hkv), segment_mean ? 64u : 8u);
  router_pool_backward_kernel<<<grid, unsigned(std::min<int64_t>(d, 256)), 0, stream>>>(
      dk, dpooled, seqs, Hkv, d, pool_tokens, segment_mean ? 1 : 0);
  CHECK_LAUNCH();
}

void router_dz(double* dz, const bf16* datt, const bf16* att, const bf16* other, const int4* chunks,
               int64_t count, int64_t Hq, int64_t Hkv, int64_t d, cudaStream_t stream) {
  if (count == 0) return;
  router_dz_kernel<<<dim3(unsigned(count), unsigned(Hkv)), kThreads, 0, stream>>>(
      dz, datt, att, other, chunks, Hq, Hkv, d);
  CHECK_LAUNCH();
}

void adamw_update(float* p, bf16* p_bf16, const float* g, float* m, float* v, int64_t n,
                  const AdamWArgs& a, cudaStream_t stream) {
  if (n == 0) return;
  adamw_kernel<<<grid_for(n), kThreads, 0, stream>>>(p, p_bf16, g, m, v, n, a);
  CHECK_LAUNCH();
}

int sum_squares(double* partials, int max_blocks, const float* x, int64_t n, cudaStream_t stream) {
  const int blocks = int(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, max_blocks));
  sum_squares_kernel<<<blocks, kThreads, 0, stream>>>(partials, x, n);
  CHECK_LAUNCH();
  return blocks;
}

void fill_random_bf16(bf16* out, int64_t count, uint64_t seed, float stddev, cudaStream_t stream) {
  if (count == 0) return;
  fill_random_bf16_kernel<<<grid_for(count), kThreads, 0, stream>>>(out, count, seed, stddev);
  CHECK_LAUNCH();
}
void fill_bf16(bf16* out, int64_t count, float value, cudaStream_t stream) {
  if (count == 0) return;
  fill_bf16_kernel<<<grid_for(count), kThreads, 0, stream>>>(out, count, value);
  CHECK_LAUNCH();
}

}  // namespace elastic::cuda::train_ops
