// Varlen FA/SSA attention for training, forward with LSE and FlashAttention-2 backward
// (attention_train_cuda.h). mma.sync m16n8k16 bf16 -> fp32 on tensor cores, cp.async tiles in
// XOR-swizzled shared memory (mma.cuh).
//
// Forward: a CTA of 4 warps owns BM = 128 query rows of one query head of one sequence (each warp
// 2 m16 row blocks, so every K/V fragment feeds two MMAs); it streams the key tiles its mode
// visits (FA: 0..last row; SSA: the sink tiles, then the local window) through a two-stage
// pipeline with the online softmax in base 2, as the inference prefill kernel does, and writes O
// (bf16) and lse = (max + log2 sum) ln 2.
// Backward: a CTA of 4 warps owns BN = 64 keys of one KV head (warp w: keys 16w..16w+15, whose
// dK, dV live in its registers); for each of the G query heads and each 64-row query tile that
// can see those keys it computes S^T = K Q^T, P^T = exp2(S^T scale log2e - lse log2e),
// dV += P^T dO, dP^T = V dO^T, dS^T = P^T (dP^T - dsum), dK += dS^T Q, writes dS^T to shared
// memory and adds dQ = scale dS K to global memory with fp32 atomics (each warp 16 query rows).
// Invariants: rows >= a sequence's length are zero-filled and masked (they see nothing and are
// never written); keys past a query are masked (causal), so a tile never reads into the next
// sequence's rows except as masked zero-weight data; every valid query sees its own position,
// so lse is finite.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "cuda/train/attention_train_cuda.h"
#include "elastic/cuda/cuda_check.h"
#include "elastic/error.h"
#include "mma.cuh"
#include "prefill_common.cuh"

namespace elastic::cuda {
namespace {

using detail::cp_async16;
using detail::cp_async_commit;
using detail::cp_async_wait;
using detail::fast_exp2;
using detail::ldmatrix_x4_trans;
using detail::load_a_frag;
using detail::load_b_frag_kn;
using detail::load_b_frag_nk;
using detail::mma_bf16_16816;
using detail::pack_bf16;
using detail::swz;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct TrainAttnParams {
  const __nv_bfloat16* q;  // [rows, Hq, d]
  const __nv_bfloat16* k;  // [rows, Hkv, d]
  const __nv_bfloat16* v;
  __nv_bfloat16* out;         // forward: [rows, Hq, d]
  float* lse;                 // forward: [rows, Hq]
  const __nv_bfloat16* dout;  // backward
  const __nv_bfloat16* o;
  const float* lse_in;
  const float* dsum;
  float *dq, *dk, *dv;
  const int2* seqs;      // [S] (begin, length)
  const uint8_t* modes;  // [S, Hkv]
  int mode_xor;
  const int4* work;
  int num_heads, num_kv_heads, group;
  float scale, scale_log2;
  int ssa_block, ssa_sink_end, ssa_local_blocks;  // sink_end: tokens of the sink blocks
};

// The mode rule of one (sequence, KV head) at sequence-relative positions (SPEC §3, the rule of
// ssa_key_ranges): query p sees key j iff j <= p < n and (FA, or j < sink_end, or
// j >= (p / B - W + 1) B).
struct TrainMask {
  int ssa;  // 0 FA, 1 SSA
  int n;
  int sink_end, block, local_blocks;
  __device__ __forceinline__ int local_lo(int p) const {
    return (p / block - local_blocks + 1) * block;
  }
  __device__ __forceinline__ bool allowed(int p, int j) const {
    if (p >= n || j > p) return false;
    return !ssa || j < sink_end || j >= local_lo(p);
  }
  // Every (query in [q0, q1], key in [k0, k1]) pair allowed (rows q1 < n).
  __device__ __forceinline__ bool full(int q0, int q1, int k0, int k1) const {
    if (q1 >= n || k1 > q0) return false;
    return !ssa || k1 < sink_end || k0 >= local_lo(q1);
  }
};

__device__ __forceinline__ TrainMask make_mask(const TrainAttnParams& p, int seq, int kvh, int n) {
  const int mode = int(p.modes[seq * p.num_kv_heads + kvh]) ^ p.mode_xor;
  return TrainMask{mode == int(AttnMode::ssa) ? 1 : 0, n, p.ssa_sink_end, p.ssa_block,
                   p.ssa_local_blocks};
}

// 4-byte async copy (zero-filled when src_bytes = 0).
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(detail::smem_addr(smem)),
               "l"(gmem), "r"(src_bytes));
}

// dst[0] += x, dst[1] += y in global memory (8-byte aligned): one vector atomic on sm_90.
__device__ __forceinline__ void add_pair(float* dst, float x, float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2*>(dst), make_float2(x, y));
#else
  atomicAdd(dst, x);
  atomicAdd(dst + 1, y);
#endif
}

// A fragment (16 rows m0.. x 16 columns k0..) from a tile stored transposed, T[k][m] (rows of
// `chunks` 16-byte chunks, swizzled): ldmatrix.trans of the four 8x8 blocks.
__device__ __forceinline__ void load_a_frag_trans(uint32_t (&a)[4], const __nv_bfloat16* tile,
                                                  int chunks, int m0, int k0, int lane) {
  const int krow = k0 + (lane & 7) + ((lane >> 4) << 3);
  const int col8 = (m0 >> 3) + ((lane >> 3) & 1);
  ldmatrix_x4_trans(a, tile + swz(krow, col8, chunks));
}

// Rows row0..row0+rows-1 of one head of a [rows, heads, d] tensor (stride `tok` elements per
// row) into a swizzled [rows][D] tile; rows >= limit are zero-filled.
template <int D, int NT>
__device__ __forceinline__ void load_tile(__nv_bfloat16* dst, const __nv_bfloat16* src, int64_t tok,
                                          int row0, int rows, int limit, int tid) {
  constexpr int CH = D / 8;
  for (int i = tid; i < rows * CH; i += NT) {
    const int r = i / CH, c = i % CH, row = row0 + r;
    const bool ok = row < limit;
    cp_async16(dst + swz(r, c, CH), src + int64_t(ok ? row : 0) * tok + c * 8, ok ? 16 : 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Forward.

template <int D, int BN>
struct FwdTraits {
  static constexpr int kWarps = 4, kThreads = 128, kRowBlocks = 2;
  static constexpr int kBlockM = 16 * kRowBlocks * kWarps;  // 128
  static constexpr int kBlockN = BN;
  static constexpr int kChunks = D / 8;
  static constexpr size_t kSmemBytes = size_t(kBlockM * D + 4 * BN * D) * sizeof(__nv_bfloat16);
  static_assert(D == 16 || D == 32 || D == 64 || D == 128, "head_dim 16, 32, 64 or 128");
  static_assert(BN % 16 == 0, "key tiles of whole k16 steps");
  static_assert(kSmemBytes <= 200 * 1024, "fits an sm_90 CTA");
};

// Tile shapes: the inference prefill kernel's measured choices (docs/gpu-notes.md runs 2-3):
// 128 rows x 32 keys at d = 128 (64 keys spill), 128 x 64 below.
template <int D>
using FwdTraitsFor = FwdTraits<D, D == 128 ? 32 : 64>;

template <class Tr, int D>
__global__ void __launch_bounds__(Tr::kThreads)
    attention_train_forward_kernel(const TrainAttnParams p) {
  constexpr int BM = Tr::kBlockM, BN = Tr::kBlockN, MI = Tr::kRowBlocks, CH = Tr::kChunks;
  constexpr int NT = Tr::kThreads;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* sK = sQ + BM * D;      // 2 stages
  __nv_bfloat16* sV = sK + 2 * BN * D;  // 2 stages

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int4 item = p.work[blockIdx.x];
  const int seq = item.x, hq = item.z, kvh = hq / p.group;
  const int2 span = p.seqs[seq];
  const int begin = span.x, n = span.y;
  const TrainMask mask = make_mask(p, seq, kvh, n);
  const int q0 = item.y * BM, q_last = min(q0 + BM, n) - 1;

  // Visited key tiles: FA 0..q_last / BN; SSA the tiles of [0, sink_end) and of
  // [local_lo(q0), q_last] (merged where they meet).
  const int t_last = q_last / BN;
  int t_sink = t_last + 1, t_lo = 0;
  if (mask.ssa) {
    t_sink = min((min(mask.sink_end, q_last + 1) + BN - 1) / BN, t_last + 1);
    t_lo = max(mask.local_lo(q0), 0) / BN;
  }
  auto next_tile = [&](int t) -> int {  // the visited tile after t, or -1
    int nt = t + 1;
    if (nt >= t_sink) nt = max(nt, t_lo);
    return nt <= t_last ? nt : -1;
  };
  int cur = t_sink > 0 ? 0 : t_lo;

  const int64_t q_tok = int64_t(p.num_heads) * D, kv_tok = int64_t(p.num_kv_heads) * D;
  const __nv_bfloat16* q_base = p.q + int64_t(begin) * q_tok + int64_t(hq) * D;
  const __nv_bfloat16* k_base = p.k + int64_t(begin) * kv_tok + int64_t(kvh) * D;
  const __nv_bfloat16* v_base = p.v + int64_t(begin) * kv_tok + int64_t(kvh) * D;

  load_tile<D, NT>(sQ, q_base, q_tok, q0, BM, n, tid);
  load_tile<D, NT>(sK, k_base, kv_tok, cur * BN, BN, n, tid);
  load_tile<D, NT>(sV, v_base, kv_tok, cur * BN, BN, n, tid);
  cp_async_commit();

  float o[MI][D / 8][4];
  float row_max[MI][2], row_sum[MI][2];
#pragma unroll
  for (int mi = 0; mi < MI; ++mi) {
    row_max[mi][0] = row_max[mi][1] = -INFINITY;
    row_sum[mi][0] = row_sum[mi][1] = 0.f;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) o[mi][i][0] = o[mi][i][1] = o[mi][i][2] = o[mi][i][3] = 0.f;
  }
  const int g = lane / 4, t4 = lane % 4;
  const int warp_row0 = warp * 16 * MI;
  const int r0 = q0 + warp_row0 + g;  // this lane's rows: r0 + 16 mi + 8 h (sequence-relative)
  int buf = 0;

  while (cur >= 0) {
    const int nxt = next_tile(cur);
    if (nxt >= 0) {
      load_tile<D, NT>(sK + (buf ^ 1) * BN * D, k_base, kv_tok, nxt * BN, BN, n, tid);
      load_tile<D, NT>(sV + (buf ^ 1) * BN * D, v_base, kv_tok, nxt * BN, BN, n, tid);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const __nv_bfloat16* Ks = sK + buf * BN * D;
    const __nv_bfloat16* Vs = sV + buf * BN * D;
    const int k0 = cur * BN;

    float s[MI][BN / 8][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int i = 0; i < BN / 8; ++i) s[mi][i][0] = s[mi][i][1] = s[mi][i][2] = s[mi][i][3] = 0.f;
    detail::warp_qk_mma<MI, BN, D>(s, sQ, Ks, CH, warp_row0, lane);
    // Element mask unless every (row of this warp, key of the tile) pair is allowed.
    const int wq0 = q0 + warp_row0, wq1 = min(wq0 + 16 * MI, n) - 1;
    if (!mask.full(wq0, max(wq1, wq0), k0, k0 + BN - 1) || wq1 < wq0) {
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int nb = 0; nb < BN / 8; ++nb)
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const int row = r0 + 16 * mi + 8 * (c >> 1), key = k0 + nb * 8 + 2 * t4 + (c & 1);
            if (!mask.allowed(row, key)) s[mi][nb][c] = -INFINITY;
          }
    }
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        detail::online_softmax_row<BN, D>([&](int nb, int c) -> float& { return s[mi][nb][c]; }, h,
                                          p.scale_log2, row_max[mi][h], row_sum[mi][h], o[mi]);
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t a[MI][4];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
        detail::p_a_fragment(
            a[mi], [&](int nb, int c) -> float& { return s[mi][nb][c]; }, kk);
#pragma unroll
      for (int db = 0; db < D / 16; ++db) {
        uint32_t b[4];
        load_b_frag_kn(b, Vs, CH, kk * 16, db * 16, lane);
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
          mma_bf16_16816(o[mi][2 * db], a[mi], b[0], b[1]);
          mma_bf16_16816(o[mi][2 * db + 1], a[mi], b[2], b[3]);
        }
      }
    }
    __syncthreads();  // stage `buf` is refilled by the next iteration's prefetch
    cur = nxt;
    buf ^= 1;
  }
  cp_async_wait<0>();

  // Epilogue: O = acc / sum (bf16), lse = (max + log2 sum) ln 2 (natural log).
#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = row_sum[mi][h];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const int row = r0 + 16 * mi + 8 * h;
      if (row >= n) continue;
      const float inv = 1.f / sum;  // > 0: every valid row sees its own key
      const int64_t at = (int64_t(begin + row) * p.num_heads + hq);
      __nv_bfloat16* out = p.out + at * D;
#pragma unroll
      for (int i = 0; i < D / 8; ++i)
        *reinterpret_cast<__nv_bfloat162*>(out + i * 8 + 2 * t4) =
            __floats2bfloat162_rn(o[mi][i][2 * h] * inv, o[mi][i][2 * h + 1] * inv);
      if (t4 == 0) p.lse[at] = (row_max[mi][h] + log2f(sum)) * kLn2;
    }
}

// ---------------------------------------------------------------------------------------------
// Backward.

template <int D, int BM, int Warps = 4>
struct BwdTraits {
  static constexpr int kWarps = Warps, kThreads = 32 * Warps;
  static constexpr int kBlockN = 16 * kWarps;  // keys per CTA: 16 per warp
  static constexpr int kBlockM = BM;           // query rows per step
  // dQ tiles: kRowBlocks m16 blocks of query rows, each split over kColGroups warps.
  static constexpr int kRowBlocks = BM / 16, kColGroups = kWarps / kRowBlocks;
  static constexpr int kDqCols = D / kColGroups;
  static constexpr int kChunks = D / 8;
  static constexpr int kQElems = kBlockM * D, kKvElems = kBlockN * D;
  // K, V, two stages of Q and dO, dS^T [BN][BM]; then two stages of lse and dsum [BM] fp32.
  static constexpr size_t kTileBytes =
      size_t(2 * kKvElems + 4 * kQElems + kBlockN * kBlockM) * sizeof(__nv_bfloat16);
  static constexpr size_t kSmemBytes = kTileBytes + 4 * kBlockM * sizeof(float);
  static_assert(D == 16 || D == 32 || D == 64 || D == 128, "head_dim 16, 32, 64 or 128");
  static_assert(kBlockM % 16 == 0 && kWarps % kRowBlocks == 0 && kDqCols % 16 == 0,
                "dQ: every warp one m16 row block x a 16-multiple of columns");
  static_assert(kSmemBytes <= 200 * 1024, "fits an sm_90 CTA");
};

// dsum[row, h] = dout[row, h, :] . out[row, h, :]; one warp per (row, head).
template <int D>
__global__ void attention_train_dsum_kernel(float* dsum, const __nv_bfloat16* dout,
                                            const __nv_bfloat16* out, int64_t count) {
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= count) return;
  float s = 0.f;
  for (int e = 2 * lane; e < D; e += 64) {
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(dout + w * D + e));
    const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(out + w * D + e));
    s += a.x * b.x + a.y * b.y;
  }
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (lane == 0) dsum[w] = s;
}

template <class Tr, int D>
__global__ void __launch_bounds__(Tr::kThreads)
    attention_train_backward_kernel(const TrainAttnParams p) {
  constexpr int BM = Tr::kBlockM, BN = Tr::kBlockN, CH = Tr::kChunks, NT = Tr::kThreads;
  constexpr int SCH = BM / 8;  // chunks of a dS^T row (BM queries)
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __nv_bfloat16* sK = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* sV = sK + Tr::kKvElems;
  __nv_bfloat16* sQ = sV + Tr::kKvElems;                            // 2 stages
  __nv_bfloat16* sdO = sQ + 2 * Tr::kQElems;                        // 2 stages
  __nv_bfloat16* sdS = sdO + 2 * Tr::kQElems;                       // [BN][BM]
  float* sL = reinterpret_cast<float*>(smem_raw + Tr::kTileBytes);  // 2 stages of [BM]
  float* sDs = sL + 2 * BM;                                         // 2 stages of [BM]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int4 item = p.work[blockIdx.x];
  const int seq = item.x, kvh = item.z;
  const int2 span = p.seqs[seq];
  const int begin = span.x, n = span.y;
  const TrainMask mask = make_mask(p, seq, kvh, n);
  const int k0 = item.y * BN, k_last = min(k0 + BN, n) - 1;
  // Queries that can see a key of this tile: [k0, q_end].
  int q_end = n - 1;
  if (mask.ssa && k0 >= mask.sink_end)
    q_end = min(n - 1, (k_last / mask.block + mask.local_blocks) * mask.block - 1);
  const int qt_first = k0 / BM, qt_count = q_end / BM - qt_first + 1;
  const int steps = p.group * qt_count;  // (query head, query tile) pairs

  const int64_t q_tok = int64_t(p.num_heads) * D, kv_tok = int64_t(p.num_kv_heads) * D;
  const __nv_bfloat16* k_base = p.k + int64_t(begin) * kv_tok + int64_t(kvh) * D;
  const __nv_bfloat16* v_base = p.v + int64_t(begin) * kv_tok + int64_t(kvh) * D;
  load_tile<D, NT>(sK, k_base, kv_tok, k0, BN, n, tid);
  load_tile<D, NT>(sV, v_base, kv_tok, k0, BN, n, tid);

  // Loads step `st` (query head, query tile) into stage `buf`: Q, dO rows, lse and dsum.
  auto load_step = [&](int st, int buf) {
    const int hq = kvh * p.group + st / qt_count, qa = (qt_first + st % qt_count) * BM;
    const int64_t off = int64_t(begin) * q_tok + int64_t(hq) * D;
    load_tile<D, NT>(sQ + buf * Tr::kQElems, p.q + off, q_tok, qa, BM, n, tid);
    load_tile<D, NT>(sdO + buf * Tr::kQElems, p.dout + off, q_tok, qa, BM, n, tid);
    for (int i = tid; i < BM; i += NT) {
      const bool ok = qa + i < n;
      const int64_t at = (int64_t(begin) + (ok ? qa + i : 0)) * p.num_heads + hq;
      cp_async4(sL + buf * BM + i, p.lse_in + at, ok ? 4 : 0);
      cp_async4(sDs + buf * BM + i, p.dsum + at, ok ? 4 : 0);
    }
  };
  load_step(0, 0);
  cp_async_commit();

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i)
#pragma unroll
    for (int c = 0; c < 4; ++c) dk[i][c] = dv[i][c] = 0.f;
  const int key_w0 = 16 * warp;  // this warp's keys in the tile: key_w0 + g + 8 (c >> 1)
  int buf = 0;

  for (int st = 0; st < steps; ++st) {
    if (st + 1 < steps) load_step(st + 1, buf ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const __nv_bfloat16* Qs = sQ + buf * Tr::kQElems;
    const __nv_bfloat16* dOs = sdO + buf * Tr::kQElems;
    const float* Ls = sL + buf * BM;
    const float* Dss = sDs + buf * BM;
    const int hq = kvh * p.group + st / qt_count, qa = (qt_first + st % qt_count) * BM;

    // S^T = K Q^T: this warp's 16 keys x BM queries.
    float s[BM / 8][4];
#pragma unroll
    for (int i = 0; i < BM / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t a[4];
      load_a_frag(a, sK, CH, key_w0, kk * 16, lane);
#pragma unroll
      for (int nb = 0; nb < BM / 16; ++nb) {
        uint32_t b[4];
        load_b_frag_nk(b, Qs, CH, nb * 16, kk * 16, lane);
        mma_bf16_16816(s[2 * nb], a, b[0], b[1]);
        mma_bf16_16816(s[2 * nb + 1], a, b[2], b[3]);
      }
    }
    // P^T = exp2(S^T scale log2e - lse log2e), zero where the pair is not allowed.
    const bool full = mask.full(qa, qa + BM - 1, k0 + key_w0, k0 + key_w0 + 15);
#pragma unroll
    for (int nb = 0; nb < BM / 8; ++nb)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int ql = nb * 8 + 2 * t4 + (c & 1), key = k0 + key_w0 + g + 8 * (c >> 1);
        const float pv = fast_exp2(fmaf(s[nb][c], p.scale_log2, -Ls[ql] * kLog2e));
        s[nb][c] = (full || mask.allowed(qa + ql, key)) ? pv : 0.f;
      }
      // dV += P^T dO.
#pragma unroll
    for (int kk = 0; kk < BM / 16; ++kk) {
      uint32_t a[4];
      detail::p_a_fragment(
          a, [&](int nb, int c) -> float& { return s[nb][c]; }, kk);
#pragma unroll
      for (int db = 0; db < D / 16; ++db) {
        uint32_t b[4];
        load_b_frag_kn(b, dOs, CH, kk * 16, db * 16, lane);
        mma_bf16_16816(dv[2 * db], a, b[0], b[1]);
        mma_bf16_16816(dv[2 * db + 1], a, b[2], b[3]);
      }
    }
    // dP^T = V dO^T, then dS^T = P^T (dP^T - dsum) in place.
    float dp[BM / 8][4];
#pragma unroll
    for (int i = 0; i < BM / 8; ++i) dp[i][0] = dp[i][1] = dp[i][2] = dp[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t a[4];
      load_a_frag(a, sV, CH, key_w0, kk * 16, lane);
#pragma unroll
      for (int nb = 0; nb < BM / 16; ++nb) {
        uint32_t b[4];
        load_b_frag_nk(b, dOs, CH, nb * 16, kk * 16, lane);
        mma_bf16_16816(dp[2 * nb], a, b[0], b[1]);
        mma_bf16_16816(dp[2 * nb + 1], a, b[2], b[3]);
      }
    }
#pragma unroll
    for (int nb = 0; nb < BM / 8; ++nb)
#pragma unroll
      for (int c = 0; c < 4; ++c)
        dp[nb][c] = s[nb][c] * (dp[nb][c] - Dss[nb * 8 + 2 * t4 + (c & 1)]);
        // dK += dS^T Q; dS^T to shared memory ([key][query], bf16) for dQ.
#pragma unroll
    for (int kk = 0; kk < BM / 16; ++kk) {
      uint32_t a[4];
      detail::p_a_fragment(
          a, [&](int nb, int c) -> float& { return dp[nb][c]; }, kk);
#pragma unroll
      for (int db = 0; db < D / 16; ++db) {
        uint32_t b[4];
        load_b_frag_kn(b, Qs, CH, kk * 16, db * 16, lane);
        mma_bf16_16816(dk[2 * db], a, b[0], b[1]);
        mma_bf16_16816(dk[2 * db + 1], a, b[2], b[3]);
      }
    }
#pragma unroll
    for (int nb = 0; nb < BM / 8; ++nb)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int key = key_w0 + g + 8 * h;
        *reinterpret_cast<uint32_t*>(sdS + swz(key, nb, SCH) + 2 * t4) =
            pack_bf16(dp[nb][2 * h], dp[nb][2 * h + 1]);
      }
    __syncthreads();
    // dQ[16 rows, kDqCols columns of this warp] = scale dS K, added to global memory (in
    // halves of 64 columns or more, to bound the registers).
    constexpr int kHalves = Tr::kDqCols >= 128 ? 2 : 1, DH = Tr::kDqCols / kHalves;
    const int qrow0 = 16 * (warp % Tr::kRowBlocks);
    const int col0 = (warp / Tr::kRowBlocks) * Tr::kDqCols;
#pragma unroll
    for (int half = 0; half < kHalves; ++half) {
      float acc[DH / 8][4];
#pragma unroll
      for (int i = 0; i < DH / 8; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        uint32_t a[4];
        load_a_frag_trans(a, sdS, SCH, qrow0, kk * 16, lane);
#pragma unroll
        for (int db = 0; db < DH / 16; ++db) {
          uint32_t b[4];
          load_b_frag_kn(b, sK, CH, kk * 16, col0 + half * DH + db * 16, lane);
          mma_bf16_16816(acc[2 * db], a, b[0], b[1]);
          mma_bf16_16816(acc[2 * db + 1], a, b[2], b[3]);
        }
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = qa + qrow0 + g + 8 * h;
        if (row >= n) continue;
        float* dst =
            p.dq + (int64_t(begin + row) * p.num_heads + hq) * D + col0 + half * DH + 2 * t4;
#pragma unroll
        for (int i = 0; i < DH / 8; ++i)
          add_pair(dst + i * 8, acc[i][2 * h] * p.scale, acc[i][2 * h + 1] * p.scale);
      }
    }
    __syncthreads();  // stage `buf` and sdS are rewritten by the next step
    buf ^= 1;
  }
  cp_async_wait<0>();

  // dK (scaled), dV: this warp's 16 keys, added (each key row belongs to one CTA).
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int key = k0 + key_w0 + g + 8 * h;
    if (key >= n) continue;
    const int64_t at = (int64_t(begin + key) * p.num_kv_heads + kvh) * D + 2 * t4;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      float2* pk = reinterpret_cast<float2*>(p.dk + at + i * 8);
      float2* pv = reinterpret_cast<float2*>(p.dv + at + i * 8);
      const float2 ok = *pk, ov = *pv;
      *pk = make_float2(ok.x + dk[i][2 * h] * p.scale, ok.y + dk[i][2 * h + 1] * p.scale);
      *pv = make_float2(ov.x + dv[i][2 * h], ov.y + dv[i][2 * h + 1]);
    }
  }
}

template <class Kernel>
void launch(Kernel kernel, int grid, int threads, size_t smem, const TrainAttnParams& p,
            cudaStream_t stream) {
  if (grid == 0) return;
  ELASTIC_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  kernel<<<grid, threads, smem, stream>>>(p);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}

TrainAttnParams base_params(const AttnTrainPlan& plan, const uint8_t* modes, int mode_xor) {
  const AttnTrainShape& s = plan.shape();
  TrainAttnParams p{};
  p.seqs = plan.seqs_dev();
  p.modes = modes;
  p.mode_xor = mode_xor;
  p.num_heads = s.num_heads;
  p.num_kv_heads = s.num_kv_heads;
  p.group = s.num_heads / s.num_kv_heads;
  p.scale = s.scale != 0.f ? s.scale : 1.f / std::sqrt(float(s.head_dim));
  p.scale_log2 = p.scale * kLog2e;
  p.ssa_block = int(s.ssa.block);
  p.ssa_sink_end = int(s.ssa.sink_blocks() * s.ssa.block);
  p.ssa_local_blocks = int(s.ssa.local_blocks());
  return p;
}

template <int D>
void forward_d(const TrainAttnParams& p, int items, cudaStream_t stream) {
  using Tr = FwdTraitsFor<D>;
  launch(attention_train_forward_kernel<Tr, D>, items, Tr::kThreads, Tr::kSmemBytes, p, stream);
}

// Backward tiles at d = 128 (docs/gpu-notes.md runs 13-15, H100, FA, 32K / 64K packed tokens;
// d <= 64: 64 query rows, 4 warps):
//   0: 4 warps x 16 keys (64 keys per CTA), 32 query rows per step, 68 bytes spilled: 184 / 181
//      TFLOP/s;
//   1: the same with 64 query rows, 228 bytes spilled: 174 / 138;
//   2: 8 warps (128 keys per CTA), 32 query rows, 80 bytes spilled: each dQ atomic carries 128
//      keys instead of 64: 185 / 186, and 161 against 0's 130 inside a 64K training step: the
//      default.
int g_backward_variant = kAttentionTrainBackwardDefault;

int backward_variant_for(int head_dim) { return head_dim == 128 ? g_backward_variant : 0; }

template <int D, int BM, int Warps = 4>
void backward_d(const TrainAttnParams& p, int items, int64_t rows, cudaStream_t stream) {
  using Tr = BwdTraits<D, BM, Warps>;
  const int64_t count = rows * p.num_heads;  // (row, head) pairs of dsum
  const int64_t blocks = (count * 32 + 255) / 256;
  if (blocks > 0) {
    attention_train_dsum_kernel<D>
        <<<unsigned(blocks), 256, 0, stream>>>(const_cast<float*>(p.dsum), p.dout, p.o, count);
    ELASTIC_CUDA_CHECK(cudaGetLastError());
  }
  launch(attention_train_backward_kernel<Tr, D>, items, Tr::kThreads, Tr::kSmemBytes, p, stream);
}

}  // namespace

int attention_train_block_m(int head_dim) {
  switch (head_dim) {
    case 16:
      return FwdTraitsFor<16>::kBlockM;
    case 32:
      return FwdTraitsFor<32>::kBlockM;
    case 64:
      return FwdTraitsFor<64>::kBlockM;
    default:
      return FwdTraitsFor<128>::kBlockM;
  }
}
int attention_train_block_n_backward(int head_dim) {
  return backward_variant_for(head_dim) == 2 ? BwdTraits<128, 32, 8>::kBlockN
                                             : BwdTraits<128, 32>::kBlockN;
}
void attention_train_set_backward_variant(int variant) {
  ELASTIC_CHECK(variant >= 0 && variant <= 2);
  g_backward_variant = variant;
}

AttnTrainPlan::AttnTrainPlan(const AttnTrainShape& shape, const std::vector<BatchSeq>& seqs,
                             cudaStream_t stream)
    : shape_(shape), num_seqs_(int(seqs.size())) {
  const int d = shape.head_dim, Hq = shape.num_heads, Hkv = shape.num_kv_heads;
  if (d != 16 && d != 32 && d != 64 && d != 128)
    throw Error("CUDA training attention: head_dim must be 16, 32, 64 or 128, got " +
                std::to_string(d));
  if (Hq <= 0 || Hkv <= 0 || Hq % Hkv != 0)
    throw Error("CUDA training attention: num_heads must be a positive multiple of num_kv_heads");
  if (shape.rows <= 0 || shape.rows >= (int64_t(1) << 31) / std::max(Hq, 1))
    throw Error("CUDA training attention: rows out of range: " + std::to_string(shape.rows));
  const SsaOptions& ssa = shape.ssa;
  if (ssa.block <= 0 || ssa.sink_tokens < 0 || ssa.local_tokens <= 0)
    throw Error("CUDA training attention: SSA block/sink/local sizes must be positive");
  backward_variant_ = backward_variant_for(d);
  const int bm = attention_train_block_m(d), bn = attention_train_block_n_backward(d);
  const int G = Hq / Hkv;
  std::vector<int2> spans;
  std::vector<int4> fwd, bwd;
  std::vector<int64_t> fwd_cost, bwd_cost;
  int64_t covered = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const BatchSeq& q = seqs[s];
    if (q.pos0 != 0)
      throw Error("CUDA training attention: sequence " + std::to_string(s) +
                  " starts at position " + std::to_string(q.pos0) +
                  " (training samples start at 0)");
    ELASTIC_CHECK(q.begin == covered && q.length > 0);
    covered += q.length;
    spans.push_back(make_int2(int(q.begin), int(q.length)));
    for (int64_t t = 0; t * bm < q.length; ++t)
      for (int h = 0; h < Hq; ++h) {
        fwd.push_back(make_int4(int(s), int(t), h, 0));
        fwd_cost.push_back(std::min<int64_t>((t + 1) * bm, q.length));  // keys an FA tile visits
      }
    for (int64_t t = 0; t * bn < q.length; ++t)
      for (int h = 0; h < Hkv; ++h) {
        bwd.push_back(make_int4(int(s), int(t), h, 0));
        bwd_cost.push_back(int64_t(G) * (q.length - t * bn));  // queries an FA key tile visits
      }
    const int64_t n = q.length;
    fa_pairs += n * (n + 1) / 2;
    for (int64_t p = 0; p < n; ++p) {
      KeyRange r[2];
      const int c = ssa_key_ranges(ssa, p, r);
      for (int i = 0; i < c; ++i) ssa_pairs += std::min(r[i].end, p + 1) - r[i].begin;
    }
  }
  ELASTIC_CHECK_MSG(covered == shape.rows, "CUDA training attention: spans do not cover the rows");
  auto sorted = [](const std::vector<int4>& w, const std::vector<int64_t>& cost) {
    std::vector<size_t> order(w.size());
    std::iota(order.begin(), order.end(), size_t(0));
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return cost[a] > cost[b]; });
    std::vector<int4> out(w.size());
    for (size_t i = 0; i < order.size(); ++i) out[i] = w[order[i]];
    return out;
  };
  fwd = sorted(fwd, fwd_cost);
  bwd = sorted(bwd, bwd_cost);
  fwd_count_ = int(fwd.size());
  bwd_count_ = int(bwd.size());
  ELASTIC_CUDA_CHECK(cudaMalloc(&seqs_, spans.size() * sizeof(int2)));
  ELASTIC_CUDA_CHECK(cudaMalloc(&fwd_work_, fwd.size() * sizeof(int4)));
  ELASTIC_CUDA_CHECK(cudaMalloc(&bwd_work_, bwd.size() * sizeof(int4)));
  ELASTIC_CUDA_CHECK(cudaMemcpyAsync(seqs_, spans.data(), spans.size() * sizeof(int2),
                                     cudaMemcpyHostToDevice, stream));
  ELASTIC_CUDA_CHECK(cudaMemcpyAsync(fwd_work_, fwd.data(), fwd.size() * sizeof(int4),
                                     cudaMemcpyHostToDevice, stream));
  ELASTIC_CUDA_CHECK(cudaMemcpyAsync(bwd_work_, bwd.data(), bwd.size() * sizeof(int4),
                                     cudaMemcpyHostToDevice, stream));
  ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream));  // the host vectors die here
}

AttnTrainPlan::~AttnTrainPlan() {
  cudaFree(seqs_);  // no throw from a destructor
  cudaFree(fwd_work_);
  cudaFree(bwd_work_);
}

void attention_train_forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q,
                             const __nv_bfloat16* k, const __nv_bfloat16* v, const uint8_t* modes,
                             int mode_xor, const AttnTrainPlan& plan, cudaStream_t stream) {
  TrainAttnParams p = base_params(plan, modes, mode_xor);
  p.q = q, p.k = k, p.v = v, p.out = out, p.lse = lse;
  p.work = plan.forward_work();
  switch (plan.shape().head_dim) {
    case 16:
      forward_d<16>(p, plan.forward_items(), stream);
      break;
    case 32:
      forward_d<32>(p, plan.forward_items(), stream);
      break;
    case 64:
      forward_d<64>(p, plan.forward_items(), stream);
      break;
    default:
      forward_d<128>(p, plan.forward_items(), stream);
      break;
  }
}

void attention_train_backward(float* dq, float* dk, float* dv, float* dsum,
                              const __nv_bfloat16* dout, const __nv_bfloat16* out, const float* lse,
                              const __nv_bfloat16* q, const __nv_bfloat16* k,
                              const __nv_bfloat16* v, const uint8_t* modes, int mode_xor,
                              const AttnTrainPlan& plan, cudaStream_t stream) {
  TrainAttnParams p = base_params(plan, modes, mode_xor);
  p.q = q, p.k = k, p.v = v, p.dout = dout, p.o = out, p.lse_in = lse, p.dsum = dsum;
  p.dq = dq, p.dk = dk, p.dv = dv;
  p.work = plan.backward_work();
  const int64_t rows = plan.shape().rows;
  switch (plan.shape().head_dim) {
    case 16:
      backward_d<16, 64>(p, plan.backward_items(), rows, stream);
      break;
    case 32:
      backward_d<32, 64>(p, plan.backward_items(), rows, stream);
      break;
    case 64:
      backward_d<64, 64>(p, plan.backward_items(), rows, stream);
      break;
    default:
      if (plan.backward_variant() == 1)
        backward_d<128, 64>(p, plan.backward_items(), rows, stream);
      else if (plan.backward_variant() == 2)
        backward_d<128, 32, 8>(p, plan.backward_items(), rows, stream);
      else
        backward_d<128, 32>(p, plan.backward_items(), rows, stream);
      break;
  }
}

}  // namespace elastic::cuda
