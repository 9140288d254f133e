// Mask policy shared by the prefill attention kernels (mma.sync and wgmma): which 64-key tiles a
// (query tile, head) work item visits, and the per-element rule of each mode (SPEC §3).
#pragma once

#include <cstdint>

#include "elastic/attention.h"
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

}  // namespace elastic::cuda::detail
