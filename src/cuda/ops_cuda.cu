// Elementwise and normalisation kernels of the CUDA backend: grid-stride loops over elements
// (fp32), RMSNorm with one CTA per row (block reduction of the sum of squares in fp32).
#include <cuda_fp16.h>

#include "elastic/cuda/cuda_check.h"
#include "ops_cuda.h"

namespace elastic::cuda {
namespace {

constexpr int kThreads = 256;

int grid_for(int64_t count) {
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  return int(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

__global__ void f32_to_bf16_kernel(__nv_bfloat16* out, const float* in, int64_t count) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16_rn(in[i]);
}

__global__ void embedding_kernel(float* out, const int64_t* ids, int64_t n, const void* table,
                                 int type, int64_t dim) {
  const int64_t count = n * dim;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = ids[i / dim], col = i % dim, src = row * dim + col;
    float x;
    if (type == int(TableType::f32))
      x = static_cast<const float*>(table)[src];
    else if (type == int(TableType::bf16))
      x = __bfloat162float(static_cast<const __nv_bfloat16*>(table)[src]);
    else
      x = __half2float(static_cast<const __half*>(table)[src]);
    out[i] = x;
  }
}

__global__ void __launch_bounds__(kThreads) rmsnorm_kernel(float* out, const float* inp, const float* w,
                                                           int64_t dim, float eps) {
  __shared__ float warp_sums[kThreads / 32];
  const float* x = inp + blockIdx.x * dim;
  float* y = out + blockIdx.x * dim;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += x[i] * x[i];
  for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = ss;
  __syncthreads();
  float total = 0.f;
  for (int wi = 0; wi < kThreads / 32; ++wi) total += warp_sums[wi];
  const float inv = rsqrtf(total / float(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) y[i] = w[i] * (x[i] * inv);
}

__global__ void rope_kernel(float* x, const float* cos, const float* sin, int64_t n, int64_t heads,
                            int64_t d) {
  const int64_t half = d / 2, count = n * heads * half;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = i % half, row = i / (heads * half), head = (i / half) % heads;
    float* v = x + (row * heads + head) * d;
    const float c = cos[row * half + j], s = sin[row * half + j];
    const float a = v[j], b = v[j + half];
    v[j] = a * c - b * s;
    v[j + half] = b * c + a * s;
  }
}

__global__ void swiglu_kernel(float* out, const float* gate_up, int64_t rows, int64_t ffn) {
  const int64_t count = rows * ffn;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / ffn, c = i % ffn;
    const float g = gate_up[r * 2 * ffn + c], u = gate_up[r * 2 * ffn + ffn + c];
    out[i] = g / (1.f + expf(-g)) * u;
  }
}

__global__ void qkv_split_kernel(float* q, float* k, float* v, const float* qkv, int64_t n,
                                 int64_t q_dim, int64_t kv_dim) {
  const int64_t width = q_dim + 2 * kv_dim, count = n * width;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / width, c = i % width;
    if (c < q_dim)
      q[r * q_dim + c] = qkv[i];
    else if (c < q_dim + kv_dim)
      k[r * kv_dim + c - q_dim] = qkv[i];
    else
      v[r * kv_dim + c - q_dim - kv_dim] = qkv[i];
  }
}

__global__ void residual_kernel(float* x, const float* delta, int64_t count) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x)
    x[i] += delta[i];
}

__global__ void nonfinite_flag_kernel(int* flag, const float* x, int64_t count) {
  // Every thread that sees a non-finite value stores the same 1: a benign race, no atomics.
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x)
    if (!isfinite(x[i])) *flag = 1;
}

__global__ void bias_add_kernel(float* y, const float* bias, int64_t rows, int64_t cols) {
  const int64_t count = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x)
    y[i] += bias[i % cols];
}

}  // namespace

void f32_to_bf16_launch(__nv_bfloat16* out, const float* in, int64_t count, cudaStream_t stream) {
  f32_to_bf16_kernel<<<grid_for(count), kThreads, 0, stream>>>(out, in, count);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}
void embedding_launch(float* out, const int64_t* ids, int64_t n, const void* table, TableType type,
                      int64_t dim, cudaStream_t stream) {
  embedding_kernel<<<grid_for(n * dim), kThreads, 0, stream>>>(out, ids, n, table, int(type), dim);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}
void rmsnorm_launch(float* out, const float* inp, const float* weight, int64_t rows, int64_t dim,
                    float eps, cudaStream_t stream) {
  if (rows == 0) return;
  rmsnorm_kernel<<<unsigned(rows), kThreads, 0, stream>>>(out, inp, weight, dim, eps);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}
void rope_launch(float* x, const float* cos, const float* sin, int64_t n, int64_t heads, int64_t d,
                 cudaStream_t stream) {
  rope_kernel<<<grid_for(n * heads * d / 2), kThreads, 0, stream>>>(x, cos, sin, n, heads, d);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}
void swiglu_launch(float* out, const float* gate_up, int64_t rows, int64_t ffn, cudaStream_t stream) {
  swiglu_kernel<<<grid_for(rows * ffn), kThreads, 0, stream>>>(out, gate_up, rows, ffn);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}
void qkv_split_launch(float* q, float* k, float* v, const float* qkv, int64_t n, int64_t q_dim,
                      int64_t kv_dim, cudaStream_t stream) {
  qkv_split_kernel<<<grid_for(n * (q_dim + 2 * kv_dim)), kThreads, 0, stream>>>(q, k, v, qkv, n, q_dim, kv_dim);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}
void residual_launch(float* x, const float* delta, int64_t count, cudaStream_t stream) {
  residual_kernel<<<grid_for(count), kThreads, 0, stream>>>(x, delta, count);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}
void nonfinite_flag_launch(int* flag, const float* x, int64_t count, cudaStream_t stream) {
  nonfinite_flag_kernel<<<grid_for(count), kThreads, 0, stream>>>(flag, x, count);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}
void bias_add_launch(float* y, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
  bias_add_kernel<<<grid_for(rows * cols), kThreads, 0, stream>>>(y, bias, rows, cols);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}

namespace {

__global__ void kv_append_kernel(const KvAppendHeads heads, const float* k, const float* v, int64_t n,
                                 int64_t kv_heads, int64_t d, int64_t pos0) {
  const int64_t count = n * heads.count * d;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < count;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / (heads.count * d), j = (idx / d) % heads.count, c = idx % d;
    const int64_t pos = pos0 + i, sink = heads.sink[j], window = heads.window[j];
    const bool ring = heads.ring[j] != 0;
    if (ring && pos >= sink && i < n - window) continue;  // overwritten later in this chunk
    const int64_t row = (!ring || pos < sink) ? pos : sink + (pos - sink) % window;
    const int64_t src = (i * kv_heads + heads.first + j) * d + c;
    heads.k[j][row * d + c] = __float2bfloat16_rn(k[src]);
    heads.v[j][row * d + c] = __float2bfloat16_rn(v[src]);
  }
}

}  // namespace

void kv_append_launch(const KvAppendHeads& heads, const float* k, const float* v, int64_t n,
                      int64_t kv_heads, int64_t d, int64_t pos0, cudaStream_t stream) {
  const int64_t count = n * heads.count * d;
  if (count == 0) return;
  kv_append_kernel<<<grid_for(count), kThreads, 0, stream>>>(heads, k, v, n, kv_heads, d, pos0);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}

}  // namespace elastic::cuda
