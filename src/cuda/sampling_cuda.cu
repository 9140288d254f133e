// Next-token sampling on the device, the same algorithm as sampling.cpp so that CPU and CUDA pick
// the same token for the same logits and u (up to exact ties):
//   greedy:  argmax, first index on ties (block max, then the smallest index holding it).
//   else:    e[i] = expf((logits[i] - max) * (1 / T))            (fp32, as the CPU)
//            sort (e, id) by decreasing e, ties by increasing id  (CUB radix sort: stable)
//            K = top_k (or vocab); sum = sum e[0..K) in double
//            top-p: K = first i with sum_{j<=i} e[j] / sum >= top_p, plus one
//            min-p: K = 1 + #{i in [1, K): e[i] >= min_p * e[0]}   (e sorted: a prefix)
//            pick:  first i with u < sum_{j<=i} float(e[j] / sum), else K - 1
// The filter and pick steps run in one CTA that walks the sorted list in chunks of kThreads with
// a block-wide inclusive scan (double) and stops at the first chunk holding the answer.
// Invariants: every kernel here runs as one CTA of exactly kThreads = 1024 threads (32 warps,
// which the two-level warp reductions assume); every barrier is reached by all threads (loop
// bounds and early exits depend only on block-uniform values).
#include "sampling_cuda.h"

#include <cub/device/device_radix_sort.cuh>

#include <climits>
#include <cmath>
#include <string>

#include "elastic/cuda/cuda_check.h"
#include "elastic/error.h"

namespace elastic::cuda {
namespace {

constexpr int kThreads = 1024;
static_assert(kThreads == 32 * 32, "two-level warp reductions: 32 warps of 32 lanes");

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct MinOp {
  __device__ long long operator()(long long a, long long b) const { return a < b ? a : b; }
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// op over the CTA, returned to every thread. scratch: [32] shared; reusable on return.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T* scratch) {
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = scratch[lane];
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
  __syncthreads();
  return v;
}

// Inclusive prefix sum of v over the CTA's threads in thread order; total = sum of all.
// scratch: [32] shared; reusable on return.
__device__ double block_inclusive_scan(double v, double* scratch, double& total) {
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  for (int off = 1; off < 32; off <<= 1) {
    const double y = __shfl_up_sync(0xffffffffu, v, off);
    if (lane >= off) v += y;
  }
  if (lane == 31) scratch[warp] = v;  // warp totals
  __syncthreads();
  if (warp == 0) {
    double w = scratch[lane];
    for (int off = 1; off < 32; off <<= 1) {
      const double y = __shfl_up_sync(0xffffffffu, w, off);
      if (lane >= off) w += y;
    }
    scratch[lane] = w;  // inclusive prefix of the warp totals
  }
  __syncthreads();
  if (warp > 0) v += scratch[warp - 1];
  total = scratch[31];
  __syncthreads();
  return v;
}

// sum of e[0..count) in double.
__device__ double range_sum(const float* e, int64_t count, double* scratch) {
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) s += double(e[i]);
  return block_reduce(s, SumOp{}, scratch);
}

// Terms of the running sums and their stopping tests (sampling.cpp's loops).
struct ShareTerm {  // top-p: cum += e / sum
  double sum;
  __device__ double operator()(float e) const { return double(e) / sum; }
};
struct ProbTerm {  // pick: cum += float(e / sum), the renormalised probability
  double sum;
  __device__ double operator()(float e) const { return double(float(double(e) / sum)); }
};
struct AtLeast {  // top-p: cum >= top_p
  double x;
  __device__ bool operator()(double cum) const { return cum >= x; }
};
struct Exceeds {  // pick: u < cum
  double u;
  __device__ bool operator()(double cum) const { return u < cum; }
};

// First i in [0, count) whose running sum term(e[0]) + ... + term(e[i]) passes `hit` (monotone
// in i: the terms are >= 0), or -1 when none does.
template <typename Term, typename Hit>
__device__ long long scan_first(const float* e, int64_t count, Term term, Hit hit, double* dscratch,
                                long long* iscratch) {
  double carry = 0.0;  // running sum before this chunk
  for (int64_t base = 0; base < count; base += kThreads) {
    const int64_t i = base + threadIdx.x;
    const double v = i < count ? term(e[i]) : 0.0;
    double total = 0.0;
    const double cum = carry + block_inclusive_scan(v, dscratch, total);
    const long long first = block_reduce<long long>(
        i < count && hit(cum) ? (long long)i : LLONG_MAX, MinOp{}, iscratch);
    if (first != LLONG_MAX) return first;
    carry += total;
  }
  return -1;
}

__global__ void __launch_bounds__(kThreads)
    argmax_kernel(const float* logits, int64_t vocab, int64_t* token) {
  __shared__ float fscratch[32];
  __shared__ long long iscratch[32];
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) m = fmaxf(m, logits[i]);
  m = block_reduce(m, MaxOp{}, fscratch);
  long long first = LLONG_MAX;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads)
    if (logits[i] == m) {  // this thread's indices ascend: its first hit is its smallest
      first = i;
      break;
    }
  first = block_reduce(first, MinOp{}, iscratch);
  if (threadIdx.x == 0) *token = first == LLONG_MAX ? 0 : first;  // NaN-only logits: 0 as the CPU
}

// argmax_kernel per row (grid: one CTA a row of [rows, vocab]), with -1 for a row holding a NaN
// or an infinity (the engine fails that request instead of decoding from it).
__global__ void __launch_bounds__(kThreads)
    argmax_rows_kernel(const float* logits, int64_t vocab, int64_t* tokens) {
  __shared__ float fscratch[32];
  __shared__ long long iscratch[32];
  const float* row = logits + int64_t(blockIdx.x) * vocab;
  float m = -INFINITY;
  float bad = 0.f;  // 1 when this thread saw a non-finite value
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float x = row[i];
    m = fmaxf(m, x);
    if (!isfinite(x)) bad = 1.f;
  }
  m = block_reduce(m, MaxOp{}, fscratch);
  bad = block_reduce(bad, MaxOp{}, fscratch);
  long long first = LLONG_MAX;
  if (bad == 0.f)
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads)
      if (row[i] == m) {  // this thread's indices ascend: its first hit is its smallest
        first = i;
        break;
      }
  first = block_reduce(first, MinOp{}, iscratch);
  if (threadIdx.x == 0) tokens[blockIdx.x] = bad != 0.f ? -1 : first;
}

// keys[i] = expf((logits[i] - max) * inv_t), ids[i] = i; [vocab].
__global__ void __launch_bounds__(kThreads)
    softmax_keys_kernel(const float* logits, int64_t vocab, float inv_t, float* keys, int* ids) {
  __shared__ float fscratch[32];
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) m = fmaxf(m, logits[i]);
  m = block_reduce(m, MaxOp{}, fscratch);
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    keys[i] = expf((logits[i] - m) * inv_t);
    ids[i] = int(i);
  }
}

struct SelectParams {
  const float* e;  // [vocab] sorted by decreasing e (ties: increasing id)
  const int* ids;  // [vocab] token id of each e
  int64_t vocab;
  int64_t top_k;
  float top_p, min_p;
  double u;
  int64_t* token;
};

__global__ void __launch_bounds__(kThreads) select_kernel(SelectParams p) {
  __shared__ double dscratch[32];
  __shared__ long long iscratch[32];
  int64_t keep = p.top_k > 0 && p.top_k < p.vocab ? p.top_k : p.vocab;  // candidates e[0..keep)
  double sum = range_sum(p.e, keep, dscratch);
  if (p.top_p < 1.f) {
    const long long cut =
        scan_first(p.e, keep, ShareTerm{sum}, AtLeast{double(p.top_p)}, dscratch, iscratch);
    if (cut >= 0) {
      keep = cut + 1;
      sum = range_sum(p.e, keep, dscratch);
    }
  }
  if (p.min_p > 0.f) {
    const float threshold = p.min_p * p.e[0];
    long long count = 0;
    for (int64_t i = 1 + threadIdx.x; i < keep; i += kThreads) count += p.e[i] >= threshold ? 1 : 0;
    keep = 1 + block_reduce(count, SumOp{}, iscratch);
    sum = range_sum(p.e, keep, dscratch);
  }
  const long long pick = scan_first(p.e, keep, ProbTerm{sum}, Exceeds{p.u}, dscratch, iscratch);
  if (threadIdx.x == 0)
    *p.token = p.ids[pick >= 0 ? pick : keep - 1];  // u within rounding of 1: the last
}

std::shared_ptr<void> device_alloc(size_t bytes) {
  void* ptr = nullptr;
  ELASTIC_CUDA_CHECK(cudaMalloc(&ptr, bytes == 0 ? 256 : bytes));
  return std::shared_ptr<void>(ptr, [](void* q) { cudaFree(q); });
}

}  // namespace

void DeviceSampler::reserve(int64_t vocab, cudaStream_t stream) {
  if (!token_) token_ = device_alloc(sizeof(int64_t));
  if (vocab <= capacity_) return;
  const size_t n = size_t(vocab);
  keys_in_ = device_alloc(n * sizeof(float));
  keys_out_ = device_alloc(n * sizeof(float));
  ids_in_ = device_alloc(n * sizeof(int));
  ids_out_ = device_alloc(n * sizeof(int));
  size_t bytes = 0;
  ELASTIC_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(
      nullptr, bytes, static_cast<const float*>(keys_in_.get()),
      static_cast<float*>(keys_out_.get()), static_cast<const int*>(ids_in_.get()),
      static_cast<int*>(ids_out_.get()), int(vocab), 0, 32, stream));
  sort_temp_ = device_alloc(bytes);
  sort_bytes_ = bytes;
  capacity_ = vocab;
}

void DeviceSampler::argmax_rows(int64_t* out, const float* logits, int64_t rows, int64_t vocab,
                                cudaStream_t stream) {
  if (rows <= 0) return;
  if (vocab <= 0 || vocab > INT_MAX || rows > INT_MAX)
    throw Error("CUDA sampling: " + std::to_string(rows) + " rows of vocabulary size " +
                std::to_string(vocab) + " are unsupported (1..2^31-1 each)");
  if (rows > rows_capacity_) {
    void* p = nullptr;
    ELASTIC_CUDA_CHECK(cudaMalloc(&p, size_t(rows) * sizeof(int64_t)));
    rows_tokens_ = std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
    rows_capacity_ = rows;
  }
  auto* tokens = static_cast<int64_t*>(rows_tokens_.get());
  argmax_rows_kernel<<<unsigned(rows), kThreads, 0, stream>>>(logits, vocab, tokens);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
  ELASTIC_CUDA_CHECK(
      cudaMemcpyAsync(out, tokens, size_t(rows) * sizeof(int64_t), cudaMemcpyDeviceToHost, stream));
  ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream));
}

int64_t DeviceSampler::sample(const float* logits, int64_t vocab, const SampleFilters& f, double u,
                              cudaStream_t stream) {
  if (vocab <= 0 || vocab > INT_MAX)
    throw Error("CUDA sampling: vocabulary size " + std::to_string(vocab) +
                " is unsupported (1..2^31-1)");
  ELASTIC_CHECK(f.temperature >= 0.f);
  reserve(vocab, stream);
  auto* token = static_cast<int64_t*>(token_.get());
  if (f.temperature == 0.f) {
    argmax_kernel<<<1, kThreads, 0, stream>>>(logits, vocab, token);
    ELASTIC_CUDA_CHECK(cudaGetLastError());
  } else {
    auto* keys_in = static_cast<float*>(keys_in_.get());
    auto* keys_out = static_cast<float*>(keys_out_.get());
    auto* ids_in = static_cast<int*>(ids_in_.get());
    auto* ids_out = static_cast<int*>(ids_out_.get());
    softmax_keys_kernel<<<1, kThreads, 0, stream>>>(logits, vocab, 1.0f / f.temperature, keys_in,
                                                    ids_in);
    ELASTIC_CUDA_CHECK(cudaGetLastError());
    size_t bytes = sort_bytes_;
    ELASTIC_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(
        sort_temp_.get(), bytes, keys_in, keys_out, ids_in, ids_out, int(vocab), 0, 32, stream));
    SelectParams p{keys_out, ids_out, vocab, f.top_k, f.top_p, f.min_p, u, token};
    select_kernel<<<1, kThreads, 0, stream>>>(p);
    ELASTIC_CUDA_CHECK(cudaGetLastError());
  }
  int64_t out = 0;
  ELASTIC_CUDA_CHECK(cudaMemcpyAsync(&out, token, sizeof out, cudaMemcpyDeviceToHost, stream));
  ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream));
  return out;
}

}  // namespace elastic::cuda
