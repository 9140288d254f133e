// XAttention estimation and block selection on the GPU (SPEC §3, XA steps 1-2).
//
// Strided problem per XA query head: with s = stride and Np = n padded to a multiple of the
// block B, row i (query positions i*s .. i*s+s-1) and column j (keys j*s .. j*s+s-1) score
//   S[i][j] = sum_{t<s} q[i*s + s-1-t] . k[j*s + t] / (sqrt(d) * s)      (zero rows past n)
// i.e. a GEMM of the [Np/s, s*d] antidiagonal-reshaped Q with the [Np/s, s*d] reshaped K, done
// on tensor cores by streaming, for each 64-column tile, the s (64 x d) slabs of both operands.
// Columns j > i (causal) or j >= ceil(n/s) (padding) are masked; rows i >= ceil(n/s) are zeroed.
// Pass 1 computes each row's softmax max and sum; pass 2 recomputes the same scores (same code,
// same order, so bit-identical), normalises and sums probabilities into block scores A[a][b]
// (g = B/s rows by g columns, reduced inside one warp: g in {4, 8, 16} divides 16 and 64).
// Selection (one CTA per query block a): keep block 0 and a; sort the other causal blocks by
// decreasing A (ties: lower index first), keep each while the mass kept before it is
// < tau * sum_b A[a][b].
#include <cfloat>

#include "elastic/cuda/cuda_check.h"
#include "elastic/error.h"
#include "mma.cuh"
#include "prefill_internal.h"

namespace elastic::cuda::detail {

template <int D, int Warps>
struct XaTraits {
  static constexpr int kHeadDim = D;
  static constexpr int kWarps = Warps;
  static constexpr int kThreads = 32 * Warps;
  static constexpr int kBlockM = 16 * Warps;  // strided rows per CTA
  static constexpr int kBlockN = 64;          // strided columns per tile
  static constexpr int kChunks = D / 8;
  static constexpr int kStageElems = (kBlockM + kBlockN) * D;  // Q slab + K slab
  static constexpr size_t kSmemBytes = size_t(2 * kStageElems) * sizeof(__nv_bfloat16);
  static_assert(D == 64 || D == 128, "head_dim 64 or 128");
  static_assert(kBlockM % 16 == 0 && kBlockN % 16 == 0, "block sums need 16 | tile sizes");
  static_assert((kBlockM * kChunks) % kThreads == 0 && (kBlockN * kChunks) % kThreads == 0,
                "slab loads split evenly over the CTA");
};

// Sums v over the g x g block owned by lane groups; returns the block sum in the owner lanes.
template <int G>
__device__ __forceinline__ float block_reduce_lanes(float v) {
  constexpr int cols = G < 8 ? G : 8;  // columns reduced inside one n8 block
#pragma unroll
  for (int off = 1; off < cols / 2; off <<= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
#pragma unroll
  for (int off = 4; off < 4 * cols; off <<= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

template <typename Traits, int G, bool kSecondPass>
__global__ void __launch_bounds__(Traits::kThreads) xa_scores_kernel(const PrefillKernelParams p) {
  constexpr int D = Traits::kHeadDim, BM = Traits::kBlockM, BN = Traits::kBlockN;
  constexpr int CH = Traits::kChunks, NT = Traits::kThreads;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __nv_bfloat16* stage0 = reinterpret_cast<__nv_bfloat16*>(smem_raw);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g4 = lane / 4, t4 = lane % 4;
  const int hq = p.xa_heads[blockIdx.y];
  const int hk = hq / p.group;
  const int s = p.xa_stride;
  const int rows = p.xa_nqb * G;                // Np / s
  const int valid = (p.n + s - 1) / s;          // rows / columns holding a real position
  const int strip = gridDim.x - 1 - blockIdx.x;  // longest strips first
  const int i0 = strip * BM;
  const int i_last = min(i0 + BM, rows) - 1;
  const int tiles = i_last / BN + 1;
  const int steps = tiles * s;
  const float scale_log2 = p.scale_log2 / float(s);  // score scale / s, base 2

  const __nv_bfloat16* q_base = p.q + int64_t(hq) * p.q_head;
  const __nv_bfloat16* k_base = p.k + int64_t(hk) * p.k_head;
  // Step st = (tile jt, offset t): Q slab rows i -> token i*s + s-1-t, K slab cols j -> j*s + t.
  auto load_stage = [&](int st, int buf) {
    const int jt = st / s, t = st % s;
    __nv_bfloat16* sq = stage0 + buf * Traits::kStageElems;
    __nv_bfloat16* sk = sq + BM * D;
    for (int idx = tid; idx < BM * CH; idx += NT) {
      const int r = idx / CH, c = idx % CH;
      const int tok = (i0 + r) * s + s - 1 - t;
      const bool ok = i0 + r < rows && tok < p.n;
      cp_async16(sq + swz(r, c, CH), q_base + int64_t(ok ? tok : 0) * p.q_tok + c * 8, ok ? 16 : 0);
    }
    for (int idx = tid; idx < BN * CH; idx += NT) {
      const int r = idx / CH, c = idx % CH;
      const int tok = (jt * BN + r) * s + t;
      const bool ok = tok < p.n;
      cp_async16(sk + swz(r, c, CH), k_base + int64_t(ok ? tok : 0) * p.k_tok + c * 8, ok ? 16 : 0);
    }
  };

  const int r0 = i0 + warp * 16 + g4;  // this thread's rows r0, r0 + 8
  float run_max[2] = {-INFINITY, -INFINITY}, run_sum[2] = {0.f, 0.f};
  float stat_max[2] = {0.f, 0.f}, stat_inv[2] = {0.f, 0.f};
  if constexpr (kSecondPass) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = r0 + 8 * h;
      if (row < valid) {
        const float2 st = p.xa_row_stats[int64_t(hq) * rows + row];
        stat_max[h] = st.x;
        stat_inv[h] = st.y > 0.f ? 1.f / st.y : 0.f;
      }
    }
  }

  float acc[BN / 8][4];
  load_stage(0, 0);
  cp_async_commit();
  int buf = 0;
  for (int st = 0; st < steps; ++st) {
    if (st + 1 < steps) load_stage(st + 1, buf ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int jt = st / s, t = st % s;
    if (t == 0) {
#pragma unroll
      for (int i = 0; i < BN / 8; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
    }
    const __nv_bfloat16* sq = stage0 + buf * Traits::kStageElems;
    const __nv_bfloat16* sk = sq + BM * D;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t a[4];
      load_a_frag(a, sq, CH, warp * 16, kk * 16, lane);
#pragma unroll
      for (int nb = 0; nb < BN / 16; ++nb) {
        uint32_t b[4];
        load_b_frag_nk(b, sk, CH, nb * 16, kk * 16, lane);
        mma_bf16_16816(acc[2 * nb], a, b[0], b[1]);
        mma_bf16_16816(acc[2 * nb + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // stage `buf` is refilled next step
    buf ^= 1;
    if (t != s - 1) continue;

    // Tile jt complete: scores in base 2, masked.
    const int j0 = jt * BN;
#pragma unroll
    for (int nb = 0; nb < BN / 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = r0 + (e >> 1) * 8, col = j0 + nb * 8 + 2 * t4 + (e & 1);
        acc[nb][e] = (col > row || col >= valid) ? -INFINITY : acc[nb][e] * scale_log2;
      }
    if constexpr (!kSecondPass) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float mx = run_max[h];
#pragma unroll
        for (int nb = 0; nb < BN / 8; ++nb) mx = fmaxf(mx, fmaxf(acc[nb][2 * h], acc[nb][2 * h + 1]));
        if (mx == -INFINITY) continue;
        float sum = run_sum[h] * exp2f(run_max[h] - mx);
#pragma unroll
        for (int nb = 0; nb < BN / 8; ++nb)
          sum += exp2f(acc[nb][2 * h] - mx) + exp2f(acc[nb][2 * h + 1] - mx);
        run_max[h] = mx;
        run_sum[h] = sum;
      }
    } else {
      // Probabilities, then g x g block sums inside the warp.
      float blk[BN / 8][2];
#pragma unroll
      for (int nb = 0; nb < BN / 8; ++nb)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const bool row_ok = r0 + 8 * h < valid;
          const float p0 = row_ok ? exp2f(acc[nb][2 * h] - stat_max[h]) * stat_inv[h] : 0.f;
          const float p1 = row_ok ? exp2f(acc[nb][2 * h + 1] - stat_max[h]) * stat_inv[h] : 0.f;
          blk[nb][h] = block_reduce_lanes<G>(p0 + p1);
        }
      const int nqb = p.xa_nqb;
      float* scores = p.xa_block_scores + int64_t(hq) * nqb * nqb;
      if constexpr (G <= 8) {
        const bool owner = (t4 & (G / 2 - 1)) == 0 && (g4 & (G - 1)) == 0;
        if (owner) {
#pragma unroll
          for (int nb = 0; nb < BN / 8; ++nb)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int a = (r0 + 8 * h) / G, b = (j0 + nb * 8 + 2 * t4) / G;
              if (a < nqb && b < nqb) scores[int64_t(a) * nqb + b] = blk[nb][h];
            }
        }
      } else {
        if (lane == 0) {
#pragma unroll
          for (int nb = 0; nb < BN / 8; nb += 2) {
            const int a = (i0 + warp * 16) / 16, b = (j0 + nb * 8) / 16;
            const float v = blk[nb][0] + blk[nb][1] + blk[nb + 1][0] + blk[nb + 1][1];
            if (a < nqb && b < nqb) scores[int64_t(a) * nqb + b] = v;
          }
        }
      }
    }
  }
  cp_async_wait<0>();
  if constexpr (!kSecondPass) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float m = run_max[h], l = run_sum[h];
#pragma unroll
      for (int off = 1; off < 4; off <<= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, off);
        const float l2 = __shfl_xor_sync(0xffffffffu, l, off);
        const float mm = fmaxf(m, m2);
        if (mm == -INFINITY) continue;
        l = l * exp2f(m - mm) + l2 * exp2f(m2 - mm);
        m = mm;
      }
      const int row = r0 + 8 * h;
      if (t4 == 0 && row < rows) p.xa_row_stats[int64_t(hq) * rows + row] = make_float2(m, l);
    }
  }
}

// One CTA per (query block a, XA head). Shared memory: P (value, index) pairs, P = pow2 >= a+1.
constexpr int kSelectThreads = 256;

__global__ void __launch_bounds__(kSelectThreads) xa_select_kernel(const PrefillKernelParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ float part[kSelectThreads];
  __shared__ float scan[2][kSelectThreads];
  const int nqb = p.xa_nqb;
  const int a = nqb - 1 - blockIdx.x;  // longest rows first
  const int hq = p.xa_heads[blockIdx.y];
  const int tid = threadIdx.x;
  const float* row = p.xa_block_scores + (int64_t(hq) * nqb + a) * nqb;
  uint8_t* mask = p.xa_mask + (int64_t(hq) * nqb + a) * nqb;
  int P = 1;
  while (P < a + 1) P <<= 1;
  float* val = reinterpret_cast<float*>(smem_raw);
  int* idx = reinterpret_cast<int*>(val + P);

  float local = 0.f;
  for (int i = tid; i < P; i += kSelectThreads) {
    const bool other = i <= a && i != 0 && i != a;
    const float x = i <= a ? row[i] : 0.f;
    local += x;
    val[i] = other ? x : -1.f;
    idx[i] = other ? i : INT32_MAX;
  }
  for (int b = tid; b < nqb; b += kSelectThreads) mask[b] = (b == 0 || b == a) ? 1 : 0;
  part[tid] = local;
  __syncthreads();
  for (int w = kSelectThreads / 2; w > 0; w >>= 1) {
    if (tid < w) part[tid] += part[tid + w];
    __syncthreads();
  }
  const float total = part[0];
  const float forced = row[0] + (a > 0 ? row[a] : 0.f);
  const float target = float(p.xa_threshold) * total;

  // Bitonic sort, "before" = larger value, then smaller index.
  for (int k = 2; k <= P; k <<= 1)
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = tid; i < P; i += kSelectThreads) {
        const int o = i ^ j;
        if (o <= i) continue;
        const bool o_before = val[o] > val[i] || (val[o] == val[i] && idx[o] < idx[i]);
        const bool want_i_first = (i & k) == 0;
        if (want_i_first == o_before) {
          const float tv = val[i];
          val[i] = val[o];
          val[o] = tv;
          const int ti = idx[i];
          idx[i] = idx[o];
          idx[o] = ti;
        }
      }
      __syncthreads();
    }

  // Exclusive prefix sums of the sorted values: per-thread contiguous chunks, then a block scan.
  const int chunk = (P + kSelectThreads - 1) / kSelectThreads;
  const int c0 = tid * chunk, c1 = min(c0 + chunk, P);
  float csum = 0.f;
  for (int i = c0; i < c1; ++i) csum += fmaxf(val[i], 0.f);
  scan[0][tid] = csum;
  __syncthreads();
  int src = 0;
  for (int off = 1; off < kSelectThreads; off <<= 1) {
    const float x = scan[src][tid] + (tid >= off ? scan[src][tid - off] : 0.f);
    scan[src ^ 1][tid] = x;
    src ^= 1;
    __syncthreads();
  }
  float before = forced + (scan[src][tid] - csum);  // mass kept before this chunk
  for (int i = c0; i < c1; ++i) {
    if (val[i] < 0.f) break;  // padding and forced blocks sort last
    if (before < target) mask[idx[i]] = 1;
    before += val[i];
  }
}

template <int D, int G>
void launch_xa_scores(const PrefillKernelParams& kp, int heads, cudaStream_t stream) {
  using Traits = XaTraits<D, 4>;
  const int rows = kp.xa_nqb * G;
  const dim3 grid((rows + Traits::kBlockM - 1) / Traits::kBlockM, heads);
  auto pass1 = xa_scores_kernel<Traits, G, false>;
  auto pass2 = xa_scores_kernel<Traits, G, true>;
  ELASTIC_CUDA_CHECK(cudaFuncSetAttribute(pass1, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          int(Traits::kSmemBytes)));
  ELASTIC_CUDA_CHECK(cudaFuncSetAttribute(pass2, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          int(Traits::kSmemBytes)));
  pass1<<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(kp);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
  pass2<<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(kp);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}

template <int D>
void launch_xa_scores_d(const PrefillKernelParams& kp, int heads, cudaStream_t stream) {
  const int g = kp.xa_block / kp.xa_stride;
  if (g == 4)
    launch_xa_scores<D, 4>(kp, heads, stream);
  else if (g == 8)
    launch_xa_scores<D, 8>(kp, heads, stream);
  else
    launch_xa_scores<D, 16>(kp, heads, stream);
}

void launch_xa_estimate(const PrefillKernelParams& kp, int xa_head_count, cudaStream_t stream) {
  ELASTIC_CHECK(xa_head_count > 0 && kp.xa_nqb > 0 && kp.xa_nqb <= kXaMaxBlocks);
  if (kp.head_dim == 64)
    launch_xa_scores_d<64>(kp, xa_head_count, stream);
  else
    launch_xa_scores_d<128>(kp, xa_head_count, stream);
  int P = 1;
  while (P < kp.xa_nqb) P <<= 1;
  const size_t smem = size_t(P) * (sizeof(float) + sizeof(int));
  ELASTIC_CUDA_CHECK(cudaFuncSetAttribute(xa_select_kernel,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  xa_select_kernel<<<dim3(kp.xa_nqb, xa_head_count), kSelectThreads, smem, stream>>>(kp);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}

}  // namespace elastic::cuda::detail
