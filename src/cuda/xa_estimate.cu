// XAttention estimation and block selection on the GPU (SPEC §3, XA steps 1-2).
//
// Strided problem per XA query head: with s = stride, B = block, g = B / s and Np = n padded to
// a multiple of B, row i (query positions i*s .. i*s+s-1) and column j (keys j*s .. j*s+s-1) score
//   S[i][j] = sum_{t<s} q[i*s + s-1-t] . k[j*s + t] * scale / s      (zero rows past n)
// i.e. a GEMM of the [Np/s, s*d] antidiagonal-reshaped Q with the [Np/s, s*d] reshaped K, done
// on tensor cores by streaming, for each 64-column tile, the s (rows x d) slabs of both operands.
// Columns j > i (causal) or j >= ceil(n/s) (padding) are masked; rows i >= ceil(n/s) are zeroed.
// One GEMM pass (xa_partial_kernel): for each row and 64-column tile it stores the tile's row max
// m_t and, for every key block b of the tile, sum_{j in b} 2^(S_ij - m_t) (base-2 units).
// Selection (xa_select_kernel, one CTA per query block a): per row i of block a, the softmax max
// M_i = max_t m_t and sum L_i = sum_b partial * 2^(m_t - M_i); block score
// A[a][b] = sum_i partial[i][b] 2^(m_t(b) - M_i) / L_i; keep block 0 and a; sort the other causal
// blocks by decreasing A (ties: lower index first), keep each while the mass kept before it is
// < tau * sum_b A[a][b]. Every score is computed once; the per-row softmax is exact.
// Chunked prefill (pos0 > 0, a multiple of B): the call's strided rows are the absolute rows
// pos0/s .. (the chunk's queries), the columns every key 0..pos0+n-1 (past and chunk), exactly as
// xa_select_blocks on the CPU; partial sums, tile maxima and the mask keep call-relative rows and
// query blocks and absolute columns and key blocks.
#include <cfloat>

#include "elastic/cuda/cuda_check.h"
#include "elastic/error.h"
#include "mma.cuh"
#include "prefill_internal.h"

namespace elastic::cuda::detail {

template <int D, int Warps, int RowBlocks>
struct XaTraits {
  static constexpr int kHeadDim = D;
  static constexpr int kWarps = Warps;
  static constexpr int kThreads = 32 * Warps;
  static constexpr int kRowBlocks = RowBlocks;            // m16 blocks per warp
  static constexpr int kBlockM = 16 * RowBlocks * Warps;  // strided rows per CTA
  static constexpr int kBlockN = 64;                      // strided columns per tile
  static constexpr int kChunks = D / 8;
  static constexpr int kStageElems = (kBlockM + kBlockN) * D;  // Q slab + K slab
  static constexpr size_t kSmemBytes = size_t(2 * kStageElems) * sizeof(__nv_bfloat16);
  static_assert(D == 16 || D == 32 || D == 64 || D == 128, "head_dim 16, 32, 64 or 128");
  static_assert(kBlockN == 64, "tile maxima are stored per 64 columns");
  static_assert((kBlockM * kChunks) % kThreads == 0 && (kBlockN * kChunks) % kThreads == 0,
                "slab loads split evenly over the CTA");
};
// d = 16 / 32 (small models): the same GEMM with one / two k16 steps per slab; rows of 2 / 4
// chunks use the swizzle's r % chunks form (mma.cuh), as the mma.sync prefill kernel does.
using XaTraitsD16 = XaTraits<16, 4, 2>;
using XaTraitsD32 = XaTraits<32, 4, 2>;
using XaTraitsD64 = XaTraits<64, 4, 2>;
using XaTraitsD128 = XaTraits<128, 4, 2>;

__device__ __forceinline__ float xa_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <typename Traits, int G>
__global__ void __launch_bounds__(Traits::kThreads) xa_partial_kernel(const PrefillKernelParams p) {
  constexpr int D = Traits::kHeadDim, BM = Traits::kBlockM, BN = Traits::kBlockN;
  constexpr int MI = Traits::kRowBlocks, CH = Traits::kChunks, NT = Traits::kThreads;
  static_assert(G >= 2 && G <= 64 && (G & (G - 1)) == 0, "block / stride is a power of two <= 64");
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __nv_bfloat16* stage0 = reinterpret_cast<__nv_bfloat16*>(smem_raw);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g4 = lane / 4, t4 = lane % 4;
  const int slot = blockIdx.y;
  const int hq = p.xa_heads[slot];
  const int hk = hq / p.group;
  const int s = p.xa_stride;
  const int rows = p.xa_rows;                    // strided rows of the call (relative)
  const int col0 = p.xa_col0;                    // absolute strided row of relative row 0
  const int valid = (p.n_keys + s - 1) / s;      // absolute rows / columns holding a real position
  const int strip = gridDim.x - 1 - blockIdx.x;  // longest strips first
  const int i0 = strip * BM;
  const int i_last = min(i0 + BM, rows) - 1;
  const int tiles = (col0 + i_last) / BN + 1;    // causal column tiles of the strip's last row
  const int steps = tiles * s;
  const float scale_log2 = p.scale_log2 / float(s);  // score scale / s, base 2
  const int nkb = p.xa_nkb;
  float* partial = p.xa_partial + int64_t(slot) * rows * nkb;
  float* tile_max = p.xa_tile_max + int64_t(slot) * rows * p.xa_tiles;

  const __nv_bfloat16* q_base = p.q + int64_t(hq) * p.q_head;
  const __nv_bfloat16* k_base = p.k + int64_t(hk) * p.k_head;
  // Step st = (tile jt, offset t): Q slab rows i -> query row i*s + s-1-t of the call (position
  // pos0 + that), K slab cols j -> key position j*s + t.
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
      const bool ok = tok < p.n_keys;
      cp_async16(sk + swz(r, c, CH), k_base + int64_t(ok ? tok : 0) * p.k_tok + c * 8, ok ? 16 : 0);
    }
  };

  const int warp_row0 = warp * 16 * MI;
  const int r0 = i0 + warp_row0 + g4;  // rows r0 + 16 mi + 8 h
  float acc[MI][BN / 8][4];
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
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int i = 0; i < BN / 8; ++i) acc[mi][i][0] = acc[mi][i][1] = acc[mi][i][2] = acc[mi][i][3] = 0.f;
    }
    const __nv_bfloat16* sq = stage0 + buf * Traits::kStageElems;
    const __nv_bfloat16* sk = sq + BM * D;
    warp_qk_mma<MI, BN, D>(acc, sq, sk, CH, warp_row0, lane);
    __syncthreads();  // stage `buf` is refilled next step
    buf ^= 1;
    if (t != s - 1) continue;

    // Tile jt complete: per row, the tile max and the block sums of 2^(S - max).
    const int j0 = jt * BN;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = r0 + 16 * mi + 8 * h;  // relative; absolute strided row col0 + row
        float mx = -INFINITY;
#pragma unroll
        for (int nb = 0; nb < BN / 8; ++nb)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int col = j0 + nb * 8 + 2 * t4 + e;
            const float x = (col > col0 + row || col >= valid) ? -INFINITY : acc[mi][nb][2 * h + e] * scale_log2;
            acc[mi][nb][2 * h + e] = x;
            mx = fmaxf(mx, x);
          }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_use = mx == -INFINITY ? 0.f : mx;
        float bsum[BN / 8];
#pragma unroll
        for (int nb = 0; nb < BN / 8; ++nb) {
          float v = xa_exp2(acc[mi][nb][2 * h] - m_use) + xa_exp2(acc[mi][nb][2 * h + 1] - m_use);
          if constexpr (G >= 4) v += __shfl_xor_sync(0xffffffffu, v, 1);
          if constexpr (G >= 8) v += __shfl_xor_sync(0xffffffffu, v, 2);
          bsum[nb] = v;
        }
        if (row >= rows) continue;
        float* prow = partial + int64_t(row) * nkb;
        if constexpr (G <= 8) {
          if ((t4 & (G / 2 - 1)) == 0) {
#pragma unroll
            for (int nb = 0; nb < BN / 8; ++nb) {
              const int b = (j0 + nb * 8 + 2 * t4) / G;
              if (b < nkb) prow[b] = bsum[nb];
            }
          }
        } else {
          if (t4 == 0) {
#pragma unroll
            for (int nb = 0; nb < BN / 8; nb += G / 8) {
              float v = 0.f;
#pragma unroll
              for (int u = 0; u < G / 8; ++u) v += bsum[nb + u];
              const int b = (j0 + nb * 8) / G;
              if (b < nkb) prow[b] = v;
            }
          }
        }
        if (t4 == 0) tile_max[int64_t(row) * p.xa_tiles + jt] = mx;
      }
  }
  cp_async_wait<0>();
}

// One CTA per (query block a of the call, XA head). Shared memory: P (value, index) pairs,
// P = pow2 >= (absolute block of a) + 1.
constexpr int kSelectThreads = 256;
constexpr int kSelectWarps = kSelectThreads / 32;

__global__ void __launch_bounds__(kSelectThreads) xa_select_kernel(const PrefillKernelParams p) {
  extern __shared__ __align__(128) unsigned char smem_raw[];  // one declaration per TU: same alignment
  __shared__ float part[kSelectThreads];
  __shared__ float scan[2][kSelectThreads];
  __shared__ float row_max[64], row_inv[64];
  __shared__ float forced_parts[2];
  const int nqb = p.xa_nqb, nkb = p.xa_nkb;
  const int qa = nqb - 1 - blockIdx.x;  // query block of the call, longest rows first
  const int a = p.xa_qb0 + qa;          // its absolute block = its diagonal key block
  const int slot = blockIdx.y;
  const int hq = p.xa_heads[slot];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int G = p.xa_block / p.xa_stride;
  const int rows = p.xa_rows;
  const int valid = (p.n_keys + p.xa_stride - 1) / p.xa_stride;  // absolute strided rows
  const float* partial = p.xa_partial + int64_t(slot) * rows * nkb;
  const float* tile_max = p.xa_tile_max + int64_t(slot) * rows * p.xa_tiles;
  float* scores = p.xa_block_scores + (int64_t(hq) * nqb + qa) * nkb;
  uint8_t* mask = p.xa_mask + (int64_t(hq) * nqb + qa) * nkb;
  int P = 1;
  while (P < a + 1) P <<= 1;
  float* val = reinterpret_cast<float*>(smem_raw);
  int* idx = reinterpret_cast<int*>(val + P);

  // 1. Softmax max and sum of each strided row of block a (one warp per row); i is the row of
  // the call, i_abs its absolute strided row (the last column it sees).
  for (int r = warp; r < G; r += kSelectWarps) {
    const int i = qa * G + r, i_abs = p.xa_col0 + i;
    float m = -INFINITY, l = 0.f;
    if (i_abs < valid) {
      const float* tm = tile_max + int64_t(i) * p.xa_tiles;
      for (int t = lane; t <= i_abs / 64; t += 32) m = fmaxf(m, tm[t]);
      for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
      const float* pr = partial + int64_t(i) * nkb;
      for (int b = lane; b <= a; b += 32) l += pr[b] * xa_exp2(tm[b * G / 64] - m);
      for (int off = 16; off > 0; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
    }
    if (lane == 0) {
      row_max[r] = i_abs < valid ? m : 0.f;
      row_inv[r] = (i_abs < valid && l > 0.f) ? 1.f / l : 0.f;  // padded rows contribute nothing
    }
  }
  for (int b = tid; b < nkb; b += kSelectThreads) mask[b] = (b == 0 || b == a) ? 1 : 0;
  __syncthreads();

  // 2. Block scores A[a][b] and the sort keys.
  float local = 0.f;
  for (int b = tid; b < P; b += kSelectThreads) {
    float x = 0.f;
    if (b <= a) {
      for (int r = 0; r < G; ++r) {
        const int i = qa * G + r;
        if (row_inv[r] == 0.f) continue;
        x += partial[int64_t(i) * nkb + b] *
             xa_exp2(tile_max[int64_t(i) * p.xa_tiles + b * G / 64] - row_max[r]) * row_inv[r];
      }
      scores[b] = x;
      if (b == 0) forced_parts[0] = x;
      if (b == a) forced_parts[1] = a > 0 ? x : 0.f;
    }
    local += x;
    const bool other = b <= a && b != 0 && b != a;
    val[b] = other ? x : -1.f;
    idx[b] = other ? b : INT32_MAX;
  }
  part[tid] = local;
  __syncthreads();
  for (int w = kSelectThreads / 2; w > 0; w >>= 1) {
    if (tid < w) part[tid] += part[tid + w];
    __syncthreads();
  }
  const float total = part[0];
  const float forced = forced_parts[0] + forced_parts[1];
  const float target = float(p.xa_threshold) * total;

  // 3. Bitonic sort, "before" = larger value, then smaller index.
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

  // 4. Exclusive prefix sums of the sorted values: per-thread contiguous chunks, then a block scan.
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

template <typename Traits, int G>
void launch_xa_partial(const PrefillKernelParams& kp, int heads, cudaStream_t stream) {
  const dim3 grid((kp.xa_rows + Traits::kBlockM - 1) / Traits::kBlockM, heads);
  auto kernel = xa_partial_kernel<Traits, G>;
  ELASTIC_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          int(Traits::kSmemBytes)));
  kernel<<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(kp);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}

template <typename Traits>
void launch_xa_partial_g(const PrefillKernelParams& kp, int heads, cudaStream_t stream) {
  switch (kp.xa_block / kp.xa_stride) {
    case 2: return launch_xa_partial<Traits, 2>(kp, heads, stream);
    case 4: return launch_xa_partial<Traits, 4>(kp, heads, stream);
    case 8: return launch_xa_partial<Traits, 8>(kp, heads, stream);
    case 16: return launch_xa_partial<Traits, 16>(kp, heads, stream);
    case 32: return launch_xa_partial<Traits, 32>(kp, heads, stream);
    case 64: return launch_xa_partial<Traits, 64>(kp, heads, stream);
  }
  ELASTIC_CHECK_MSG(false, "XA block / stride must be a power of two in [2, 64]");
}

void launch_xa_estimate(const PrefillKernelParams& kp, int xa_head_count, cudaStream_t stream) {
  ELASTIC_CHECK(xa_head_count > 0 && kp.xa_nqb > 0 && kp.xa_nkb == kp.xa_qb0 + kp.xa_nqb &&
                kp.xa_nkb <= kXaMaxBlocks);
  switch (kp.head_dim) {
    case 16: launch_xa_partial_g<XaTraitsD16>(kp, xa_head_count, stream); break;
    case 32: launch_xa_partial_g<XaTraitsD32>(kp, xa_head_count, stream); break;
    case 64: launch_xa_partial_g<XaTraitsD64>(kp, xa_head_count, stream); break;
    case 128: launch_xa_partial_g<XaTraitsD128>(kp, xa_head_count, stream); break;
    default: ELASTIC_CHECK_MSG(false, "XA estimation: head_dim 16, 32, 64 or 128");
  }
  int P = 1;
  while (P < kp.xa_nkb) P <<= 1;  // the last query block's row spans every key block
  const size_t smem = size_t(P) * (sizeof(float) + sizeof(int));
  ELASTIC_CUDA_CHECK(cudaFuncSetAttribute(xa_select_kernel,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  xa_select_kernel<<<dim3(kp.xa_nqb, xa_head_count), kSelectThreads, smem, stream>>>(kp);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}

}  // namespace elastic::cuda::detail
