// What the prefill attention kernels (mma.sync and wgmma) share: which 64-key tiles a (query
// tile, head) work item visits, the per-element rule of each mode (SPEC §3), the masking, online
// softmax and P fragments of a score row, the output epilogue and the launch.
#pragma once

#include <cstdint>

#include "elastic/attention.h"
#include "elastic/cuda/cuda_check.h"
#include "mma.cuh"
#include "prefill_internal.h"

namespace elastic::cuda::detail {

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Classifies the 64-key tile [k0, k0 + 64) for the queries at positions [q0, q_last] (absolute,
// i.e. pos0 + row): visit = some pair allowed, full = every pair allowed (then no element mask is
// applied).
__device__ __forceinline__ void classify_tile(const PrefillKernelParams& p, int mode, int hq, int q0,
                                              int q_last, int k0, bool& visit, bool& full) {
  constexpr int bn = 64;
  const int k_end = k0 + bn - 1;
  const bool causal_full = k_end <= q0 && k_end < p.n_keys;
  visit = k0 <= q_last;
  full = causal_full;
  if (!visit) return;
  if (mode == int(AttnMode::ssa)) {
    const int B = p.ssa_block;
    const int sink_end = p.ssa_sink_blocks * B;  // keys [0, sink_end) always kept
    const int lo_first = (q0 / B - p.ssa_local_blocks + 1) * B;
    const int lo_last = (q_last / B - p.ssa_local_blocks + 1) * B;
    visit = k0 < sink_end || k_end >= lo_first;
    full = causal_full && (k_end < sink_end || k0 >= lo_last);
  } else if (mode == int(AttnMode::xa)) {
    const int Bx = p.xa_block;
    const int a0 = q0 / Bx, a1 = q_last / Bx;  // absolute query blocks
    const int b0 = k0 / Bx, b1 = min(k_end, p.n_keys - 1) / Bx;
    bool any = false, all = true;
    for (int a = a0; a <= a1; ++a) {
      const uint8_t* row = p.xa_mask + (size_t(hq) * p.xa_nqb + (a - p.xa_qb0)) * p.xa_nkb;
      for (int b = b0; b <= min(b1, a); ++b) {
        const bool on = row[b] != 0;
        any |= on;
        all &= on;
      }
      if (b1 > a) all = false;  // blocks above the diagonal are never kept
    }
    visit = any;
    full = causal_full && all;
  }
}

// Per-row constants of the element mask: key kpos is allowed for the query at position pos iff
// kpos <= pos && kpos < n_keys && (FA || kpos < sink_end || kpos >= local_lo (SSA) ||
// xa_row[kpos / B]).
struct RowMask {
  int pos;                // the row's position, -1 for rows past n (they see no key)
  int local_lo;           // SSA: first key of the local window
  const uint8_t* xa_row;  // XA: the row's block mask over key blocks
};

// row: call-relative query row (position pos0 + row).
__device__ __forceinline__ RowMask row_mask(const PrefillKernelParams& p, int mode, int hq, int row) {
  const int pos = p.pos0 + row;
  RowMask m{row < p.n ? pos : -1, 0, nullptr};
  if (mode == int(AttnMode::ssa))
    m.local_lo = (pos / p.ssa_block - p.ssa_local_blocks + 1) * p.ssa_block;
  else if (mode == int(AttnMode::xa) && row < p.n)  // pos0 % block == 0: row / block is the call's block
    m.xa_row = p.xa_mask + (size_t(hq) * p.xa_nqb + row / p.xa_block) * p.xa_nkb;
  return m;
}

__device__ __forceinline__ bool key_allowed(const PrefillKernelParams& p, int mode, const RowMask& m,
                                            int kpos) {
  if (kpos > m.pos || kpos >= p.n_keys) return false;
  if (mode == int(AttnMode::ssa)) return kpos < p.ssa_sink_blocks * p.ssa_block || kpos >= m.local_lo;
  if (mode == int(AttnMode::xa)) return m.xa_row != nullptr && m.xa_row[kpos / p.xa_block] != 0;
  return true;
}

// Epilogue shared by the prefill kernels: a row's softmax denominator is spread over the four
// lanes of a quad (m16n8 C-fragment layout); returns 1 / sum, or 0 for a row that saw no key.
__device__ __forceinline__ float quad_row_inverse(float partial_sum) {
  partial_sum += __shfl_xor_sync(0xffffffffu, partial_sum, 1);
  partial_sum += __shfl_xor_sync(0xffffffffu, partial_sum, 2);
  return partial_sum > 0.f ? 1.f / partial_sum : 0.f;
}

// Stores the output pair (x0, x1) of query row `row`, head hq, columns col and col + 1, as fp32
// or bf16 per p.out_fp32.
__device__ __forceinline__ void store_output_pair(const PrefillKernelParams& p, int row, int hq,
                                                  int col, float x0, float x1) {
  const int64_t at = int64_t(row) * p.o_tok + int64_t(hq) * p.o_head + col;
  if (p.out_fp32) {
    *reinterpret_cast<float2*>(static_cast<float*>(p.out) + at) = make_float2(x0, x1);
  } else {
    *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(p.out) + at) =
        __floats2bfloat162_rn(x0, x1);
  }
}

// Score-row helpers shared by the mma.sync and wgmma kernels. A warp holds a query row's scores
// as m16n8 C fragments: S(nb, c) is the float of key block nb (8 keys) at fragment slot c; slots
// 2h and 2h + 1 belong to the row half h (row g + 8h of the 16-row block), keys
// k0 + 8 nb + 2 t4 + {0, 1}. The kernels pass S as an accessor over their own register layout.

// Masks the scores of query row `row` (half h) that its mode does not allow with -inf.
template <int BN, class Scores>
__device__ __forceinline__ void mask_score_row(const PrefillKernelParams& p, int mode, int hq, int row,
                                               int h, int k0, int t4, Scores S) {
  const RowMask m = row_mask(p, mode, hq, row);
#pragma unroll
  for (int nb = 0; nb < BN / 8; ++nb)
#pragma unroll
    for (int e = 0; e < 2; ++e)
      if (!key_allowed(p, mode, m, k0 + nb * 8 + 2 * t4 + e)) S(nb, 2 * h + e) = -INFINITY;
}

// Online softmax step of one row half h (base 2, the scale folded into the exponent): updates the
// running max and sum, rescales the row's output accumulators o: [D / 8][4], and turns the scores
// into probabilities in place. The row is reduced over its lane quad.
template <int BN, int D, class Scores>
__device__ __forceinline__ void online_softmax_row(Scores S, int h, float scale_log2, float& row_max,
                                                   float& row_sum, float (&o)[D / 8][4]) {
  float mx = -INFINITY;
#pragma unroll
  for (int nb = 0; nb < BN / 8; ++nb) mx = fmaxf(mx, fmaxf(S(nb, 2 * h), S(nb, 2 * h + 1)));
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
  mx = fmaxf(row_max, mx * scale_log2);            // running max, scaled units
  const float m_use = mx == -INFINITY ? 0.f : mx;  // fully masked so far: keep zeros
  const float corr = fast_exp2(row_max - m_use);
  row_max = mx;
  row_sum *= corr;
#pragma unroll
  for (int i = 0; i < D / 8; ++i) {
    o[i][2 * h] *= corr;
    o[i][2 * h + 1] *= corr;
  }
  float sum = 0.f;
#pragma unroll
  for (int nb = 0; nb < BN / 8; ++nb) {
    const float p0 = fast_exp2(fmaf(S(nb, 2 * h), scale_log2, -m_use));
    const float p1 = fast_exp2(fmaf(S(nb, 2 * h + 1), scale_log2, -m_use));
    S(nb, 2 * h) = p0;
    S(nb, 2 * h + 1) = p1;
    sum += p0 + p1;
  }
  row_sum += sum;
}

// The probabilities of key blocks 2 kk and 2 kk + 1 as a bf16 A fragment of P V (the C layout of
// Q K^T is the A layout of the next MMA).
template <class Scores>
__device__ __forceinline__ void p_a_fragment(uint32_t (&a)[4], Scores S, int kk) {
  a[0] = pack_bf16(S(2 * kk, 0), S(2 * kk, 1));
  a[1] = pack_bf16(S(2 * kk, 2), S(2 * kk, 3));
  a[2] = pack_bf16(S(2 * kk + 1, 0), S(2 * kk + 1, 1));
  a[3] = pack_bf16(S(2 * kk + 1, 2), S(2 * kk + 1, 3));
}

// Normalises and stores a warp's output rows: row_sum / o of row block mi cover rows
// r0 + mi * mi_stride + 8 h; rows >= p.n are not stored.
template <int MI, int D>
__device__ __forceinline__ void store_output_rows(const PrefillKernelParams& p, int hq, int r0, int mi_stride,
                                                  int t4, const float (&row_sum)[MI][2],
                                                  const float (&o)[MI][D / 8][4]) {
#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float inv = quad_row_inverse(row_sum[mi][h]);
      const int row = r0 + mi_stride * mi + 8 * h;
      if (row >= p.n) continue;
#pragma unroll
      for (int i = 0; i < D / 8; ++i)
        store_output_pair(p, row, hq, i * 8 + 2 * t4, o[mi][i][2 * h] * inv, o[mi][i][2 * h + 1] * inv);
    }
}

// Sets the dynamic shared memory of `kernel` and launches it over the work list.
template <class Kernel>
void launch_prefill_kernel(Kernel kernel, const PrefillKernelParams& kp, int work_count, int threads,
                           size_t tile_smem_bytes, cudaStream_t stream) {
  const size_t smem = tile_smem_bytes + 2 * size_t(kp.bitmap_words) * sizeof(uint32_t);
  ELASTIC_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(smem)));
  kernel<<<work_count, threads, smem, stream>>>(kp);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}

}  // namespace elastic::cuda::detail
