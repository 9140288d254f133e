// Shared between the fused prefill kernel and the XA estimation kernels: the flat kernel
// parameter block (raw pointers and element strides) derived from a plan and a call.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "elastic/cuda/attention_cuda.h"

namespace elastic::cuda::detail {

// Selection sorts one row of block scores in shared memory: rows up to this many blocks
// (8192 blocks = 1M tokens at block 128).
constexpr int64_t kXaMaxBlocks = 8192;

// Query rows are call-relative (row i at position pos0 + i); keys are indexed by position.
struct PrefillKernelParams {
  const __nv_bfloat16* q;  // [n, Hq, d] via q_tok / q_head element strides
  const __nv_bfloat16* k;  // [n_keys, Hkv, d]
  const __nv_bfloat16* v;  // [n_keys, Hkv, d]
  void* out;               // [n, Hq, d] bf16 or fp32
  int64_t q_tok, q_head, k_tok, k_head, v_tok, v_head, o_tok, o_head;
  int out_fp32;
  int n, num_heads, group, head_dim;
  int pos0;    // position of query row 0
  int n_keys;  // pos0 + n: keys 0..n_keys-1
  float scale_log2;  // softmax scale * log2(e)
  const uint8_t* modes;  // [Hkv] AttnMode
  const int2* work;      // [work_count] (query tile, query head)
  int bitmap_words;      // 32-bit words of one key-tile bitmap (tiles of 64 keys)
  // SSA block rule
  int ssa_block, ssa_sink_blocks, ssa_local_blocks;
  // XA. Query blocks (nqb) and strided rows are call-relative; key blocks (nkb) and strided
  // columns absolute. pos0 is a multiple of the block when any head is XA, so query block a of
  // the call is absolute block xa_qb0 + a and strided row r is absolute row xa_col0 + r.
  uint8_t* xa_mask;        // [Hq, nqb, nkb]
  int xa_block, xa_nqb, xa_nkb, xa_stride;
  int xa_qb0;              // pos0 / block
  int xa_col0;             // pos0 / stride
  float xa_threshold;
  const int* xa_heads;       // [xa_head_count]
  int xa_rows;               // strided rows of the call = nqb * block / stride
  int xa_tiles;              // 64-column tiles of the strided grid, ceil((xa_col0 + xa_rows) / 64)
  float* xa_partial;         // [xa heads, xa_rows, nkb] per-row block sums, relative to tile max
  float* xa_tile_max;        // [xa heads, xa_rows, xa_tiles] row max of each tile (base 2)
  float* xa_block_scores;    // [Hq, nqb, nkb]
};

PrefillKernelParams make_kernel_params(const PrefillAttnPlan& plan, const PrefillAttnParams& p);

// Estimation (two passes over the strided score matrix) and threshold selection; fills
// xa_block_scores and xa_mask for the heads in xa_heads.
void launch_xa_estimate(const PrefillKernelParams& kp, int xa_head_count, cudaStream_t stream);

int prefill_block_m(int head_dim);
// Kernel variant (0 = default: 5 where wgmma_kernel_available(), else 4; 1 = mma.sync 128x64 tiles at d = 128, 2 = mma.sync 64x64 at
// d = 128, 3 = wgmma QK^T (sm_90a) with both m64 blocks live, 5 = the same one block at a time,
// 4 = mma.sync 128x32 at d = 128); for tests and the
// tile-shape benchmark, set before planning.
void set_prefill_variant(int variant);
// The wgmma kernel (attention_prefill_sm90.cu) and whether this device can run it.
void launch_prefill_wgmma(const PrefillKernelParams& kp, int work_count, cudaStream_t stream,
                          bool joint);
bool device_has_wgmma();
// The current device is sm_90 and this build holds sm_90a code for the wgmma kernel.
bool wgmma_kernel_available();

}  // namespace elastic::cuda::detail
