// Batched paged attention kernels (attention_paged.h).
//
// Decode: the split-KV scheme of attention_decode.cu over many sequences at once. A CTA (4 warps)
// handles one (split, KV head, decode item) for the G query heads of that KV head; the key list
// of the head at position pos is FA/XA: 0..pos; SSA: [0, min(S*B, pos+1)) then
// [max(S*B, (pos/B - W + 1) * B), pos] (the block rule), each key read from its ring row through
// the page table. Each warp walks keys 32 / (d / 8) at a time, d / 8 lanes per key with 16-byte
// loads of 8 bf16 of K and V, keeping an fp32 online softmax per query head and lane group; lane
// groups, warps and then splits (second kernel) merge by max/sum rescaling. Empty splits (an item
// with fewer keys than the longest) write (-inf, 0) partials, which the merge weighs by zero. The
// default kernel (paged_decode_ring_kernel) feeds those warps from a cp.async ring of
// shared-memory tiles; the register kernel (paged_decode_split_kernel) loads into registers.
//
// Invariants: d is a multiple of 8 (16-byte rows); the pool and every page are 16-byte aligned
// (cudaMalloc base, page_stride and rows multiples of 8 elements); a ring row is written by at
// most one row of a span (the surviving positions are distinct modulo the window).
#include <algorithm>
#include <cmath>
#include <string>

#include "attention_paged.h"
#include "decode_common.cuh"
#include "mma.cuh"
#include "elastic/cuda/cuda_check.h"
#include "elastic/error.h"

namespace elastic::cuda {
namespace detail {
namespace {

constexpr int kPagedWarps = 4;
constexpr int kPagedMaxGroup = 8;
constexpr int kPagedMaxSplits = 256;
constexpr int kPagedMinKeysPerSplit = 128;  // a CTA's smallest share (short contexts)
// Waves of CTAs a launch aims at: with many sequences one split per (item, head) can leave a
// partial last wave idle most of the time (512 CTAs on ~400 slots: 65 % busy); four waves of
// smaller splits keep the idle tail under ~20 % (a first choice, not measured yet).
constexpr int kPagedWaves = 4;

// 8 bf16 (one 16-byte load) widened to fp32.
__device__ __forceinline__ void bf16x8_load(float (&x)[8], const __nv_bfloat16* src) {
  const uint4 raw = *reinterpret_cast<const uint4*>(src);
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    x[2 * i] = __uint_as_float(w[i] << 16);              // low bf16: element 2i
    x[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);  // high bf16: element 2i + 1
  }
}

// 8 fp32 (two 16-byte loads) rounded to bf16 and stored with one 16-byte store.
__device__ __forceinline__ void bf16x8_store(__nv_bfloat16* dst, const float* src) {
  const float4 a = *reinterpret_cast<const float4*>(src);
  const float4 b = *reinterpret_cast<const float4*>(src + 4);
  const __nv_bfloat162 p[4] = {__floats2bfloat162_rn(a.x, a.y), __floats2bfloat162_rn(a.z, a.w),
                               __floats2bfloat162_rn(b.x, b.y), __floats2bfloat162_rn(b.z, b.w)};
  uint4 raw;
  raw.x = *reinterpret_cast<const uint32_t*>(&p[0]);
  raw.y = *reinterpret_cast<const uint32_t*>(&p[1]);
  raw.z = *reinterpret_cast<const uint32_t*>(&p[2]);
  raw.w = *reinterpret_cast<const uint32_t*>(&p[3]);
  *reinterpret_cast<uint4*>(dst) = raw;
}

// Row of position pos in a head (KvHeadView::row).
__device__ __forceinline__ int64_t paged_row(const PagedHead& h, int64_t pos) {
  return (!h.ring || pos < h.sink) ? pos : h.sink + (pos - h.sink) % h.window;
}

// Element offset in the pool of row `row`'s K (its V is page_rows * d elements later).
__device__ __forceinline__ int64_t paged_offset(const PagedKv& kv, const PagedHead& h,
                                                int64_t row) {
  const int32_t page = kv.table[h.table + row / kv.page_rows];
  return int64_t(page) * kv.page_stride + (row % kv.page_rows) * int64_t(kv.head_dim);
}

__global__ void paged_store_kernel(const PagedKv kv, const int32_t* row_seq, const float* k,
                                   const float* v, int64_t rows) {
  const int D = kv.head_dim, chunks = D / 8, Hkv = kv.num_kv_heads;
  const int64_t count = rows * Hkv * chunks;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < count;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int c = int(idx % chunks), h = int((idx / chunks) % Hkv);
    const int64_t r = idx / (int64_t(chunks) * Hkv);
    const int s = row_seq[r];
    const PagedSeq seq = kv.seqs[s];
    const PagedHead hd = kv.heads[int64_t(s) * Hkv + h];
    const int64_t i = r - seq.row0, pos = seq.pos0 + i;
    // A ring keeps its sinks and the span's last `window` positions (the earlier ones would be
    // overwritten by later rows of the same span).
    if (hd.ring && pos >= hd.sink && i < seq.rows - hd.window) continue;
    const int64_t off = paged_offset(kv, hd, paged_row(hd, pos)) + c * 8;
    const int64_t src = (r * Hkv + h) * D + c * 8;
    bf16x8_store(kv.pool + off, k + src);
    bf16x8_store(kv.pool + off + int64_t(kv.page_rows) * D, v + src);
  }
}

__global__ void paged_gather_kernel(__nv_bfloat16* k_out, __nv_bfloat16* v_out, const PagedKv kv,
                                    int seq, int64_t pos0) {
  const int D = kv.head_dim, chunks = D / 8, Hkv = kv.num_kv_heads;
  const int64_t count = pos0 * Hkv * chunks;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < count;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int c = int(idx % chunks), h = int((idx / chunks) % Hkv);
    const int64_t pos = idx / (int64_t(chunks) * Hkv);
    const PagedHead hd = kv.heads[int64_t(seq) * Hkv + h];
    // A ring holds its sinks and the last `window` positions before pos0.
    const bool held = !hd.ring || pos < hd.sink || pos >= pos0 - hd.window;
    int4 kx = make_int4(0, 0, 0, 0), vx = make_int4(0, 0, 0, 0);
    if (held) {
      const int64_t off = paged_offset(kv, hd, paged_row(hd, pos)) + c * 8;
      kx = *reinterpret_cast<const int4*>(kv.pool + off);
      vx = *reinterpret_cast<const int4*>(kv.pool + off + int64_t(kv.page_rows) * D);
    }
    const int64_t at = (pos * Hkv + h) * chunks + c;
    reinterpret_cast<int4*>(k_out)[at] = kx;
    reinterpret_cast<int4*>(v_out)[at] = vx;
  }
}

struct DecodeArgs {
  PagedKv kv;
  PagedDecodeParams p;
  int group;
  float scale_log2;
  int64_t ssa_sink_end;  // S * B
  int64_t ssa_block;
  int64_t ssa_local_blocks;
};

// The register kernel's options (paged_decode_split_kernel, used with set_paged_decode_ring(false)).
// Key steps whose loads a warp keeps in flight (set_paged_decode_depth): run 18 measured the
// batched decode at 1.2-1.3 TB/s with one (D = 128, G = 4: 106 registers, 4 CTAs = 16 warps per
// SM, 16 KB in flight per SM where ~30 KB cover the memory latency at full bandwidth). Two were
// predicted to reach ~2 TB/s; run 19 (H100) measured 0.94 TB/s with two against 1.22-1.24 with
// one (docs/gpu-notes.md), so one stays the default and two the variant the bench times.
int g_paged_decode_depth = 1;
// Whether a warp reads the block table one key step ahead of its KV loads
// (set_paged_decode_prefetch; run 28 measured no change, so it stays off): without it every step's
// KV load waits for its page id's load, two memory latencies a step where one is needed.
bool g_paged_decode_prefetch = false;
// Whether the decode streams its keys through a shared-memory ring (paged_decode_ring_kernel): the
// default since run 30 (H100, 64 x 8K: 1.65-1.76 TB/s of KV read against 1.19-1.21 for the
// register kernel; docs/gpu-notes.md).
bool g_paged_decode_ring = true;

// A decode CTA's (split, KV head hk, item) = blockIdx: its head, its keys [k_begin, k_end) of
// the head's key list (FA/XA: 0..pos; SSA: [0, len1) then positions start2.. from index len1 on),
// and the G query heads of hk at the item's row in sq, rounded to bf16 as the request path does.
struct DecodeRange {
  PagedHead head;
  int64_t len1, start2, k_begin, k_end;
};

template <int D, int MG>
__device__ __forceinline__ DecodeRange decode_cta_begin(const DecodeArgs& a, float (*sq)[D]) {
  const int split = blockIdx.x, hk = blockIdx.y, item = blockIdx.z;
  const int G = a.group, Hq = a.p.num_heads, Hkv = a.kv.num_kv_heads;
  const int s = a.p.items[item];
  const PagedSeq seq = a.kv.seqs[s];
  DecodeRange r;
  r.head = a.kv.heads[int64_t(s) * Hkv + hk];
  const int64_t pos = seq.pos0;
  const float* q = a.p.q + (seq.row0 * Hq + int64_t(hk) * G) * D;
  for (int i = threadIdx.x; i < G * D; i += blockDim.x)
    sq[i / D][i % D] = __bfloat162float(__float2bfloat16(q[i]));
  __syncthreads();
  r.len1 = pos + 1;
  r.start2 = 0;
  int64_t len2 = 0;
  if (r.head.mode == int32_t(AttnMode::ssa)) {
    r.len1 = min(a.ssa_sink_end, pos + 1);
    const int64_t lo = (pos / a.ssa_block - a.ssa_local_blocks + 1) * a.ssa_block;
    r.start2 = max(a.ssa_sink_end, lo);
    len2 = max(int64_t(0), pos + 1 - r.start2);
  }
  const int64_t keys = r.len1 + len2;
  r.k_begin = int64_t(split) * a.p.split.keys_per_split;
  r.k_end = min(keys, r.k_begin + a.p.split.keys_per_split);
  return r;
}

// The pool element offset of the K row of the vk-th key of a CTA's range (its V row is
// page_rows * D elements later): one block-table load. Positions, rows and page indices fit 32
// bits (contexts < 2^31), so the divisions by page_rows and by the ring's window are 32-bit.
template <int D>
__device__ __forceinline__ int64_t paged_key_row(const DecodeArgs& a, const DecodeRange& r,
                                                 int64_t vk) {
  const PagedHead& head = r.head;
  const int kpos = int(vk < r.len1 ? vk : r.start2 + (vk - r.len1));
  const int row =
      (!head.ring || kpos < head.sink) ? kpos : head.sink + (kpos - head.sink) % head.window;
  const int page = a.kv.table[head.table + row / a.kv.page_rows];
  return int64_t(page) * a.kv.page_stride + int64_t(row % a.kv.page_rows) * D;
}

// The end of a decode CTA (decode_common.cuh's reduction of its lane groups and warps through
// wacc [kPagedWarps][MG][D] and wstat [kPagedWarps][MG][2]), written as the partial
// (item, hq, split) that paged_decode_merge_kernel combines over the splits.
template <int D, int MG>
__device__ __forceinline__ void decode_cta_merge(const DecodeArgs& a, int G, int hk, int item,
                                                 int split, const float (&m)[MG],
                                                 const float (&l)[MG], float (&acc)[MG][8],
                                                 float (*wacc)[MG][D], float (*wstat)[MG][2]) {
  const int Hq = a.p.num_heads, splits = a.p.split.splits;
  decode_cta_reduce<D, MG, kPagedWarps>(G, m, l, acc, wacc, wstat);
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) {  // partial (item, hq, split)
    const int h = i / D, c = i % D;
    float acc_c;
    const float2 st = decode_warps_merge<D, MG, kPagedWarps>(wacc, wstat, h, c, acc_c);
    const int64_t part = (int64_t(item) * Hq + hk * G + h) * splits + split;
    a.p.part_acc[part * D + c] = acc_c;
    if (c == 0) a.p.part_stats[part] = st;
  }
}

// MG: the largest GQA group the instance serves (registers scale with it: G <= MG). DEPTH: key
// steps in flight per warp (1 or 2). PF: the page ids of the next step are loaded (and its KV
// offsets computed, in 32-bit arithmetic) while the current step's KV loads are in flight.
template <int D, int MG, int DEPTH, bool PF = false>
__global__ void __launch_bounds__(32 * kPagedWarps) paged_decode_split_kernel(const DecodeArgs a) {
  constexpr int kLK = D / 8;     // lanes per key
  constexpr int kKW = 32 / kLK;  // keys per warp step
  __shared__ __align__(16) float sq[MG][D];
  __shared__ float wacc[kPagedWarps][MG][D];
  __shared__ float wstat[kPagedWarps][MG][2];
  const int split = blockIdx.x, hk = blockIdx.y, item = blockIdx.z;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int grp = lane / kLK, sub = lane % kLK;
  const int G = a.group;
  const DecodeRange r = decode_cta_begin<D, MG>(a, sq);
  const PagedHead& head = r.head;
  const int64_t len1 = r.len1, start2 = r.start2, k_begin = r.k_begin, k_end = r.k_end;

  // kv[b], vv[b]: the loads of key step (step index mod DEPTH) == b, issued DEPTH steps ahead.
  float kv[DEPTH][8], vv[DEPTH][8];
  // The pool offset of this lane's K elements of key vk (-1 past the split).
  [[maybe_unused]] auto key_offset = [&](int64_t vk) -> int64_t {
    return vk < k_end ? paged_key_row<D>(a, r, vk) + sub * 8 : -1;
  };
  [[maybe_unused]] auto load_at = [&](float(&kd)[8], float(&vd)[8], int64_t off) {
    if (off >= 0) {
      bf16x8_load(kd, a.kv.pool + off);
      bf16x8_load(vd, a.kv.pool + off + int64_t(a.kv.page_rows) * D);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) kd[e] = vd[e] = 0.f;
    }
  };
  [[maybe_unused]] auto load_step = [&](float(&kd)[8], float(&vd)[8], int64_t base) {
    const int64_t vk = base + grp;
    if (vk < k_end) {
      const int64_t kpos = vk < len1 ? vk : start2 + (vk - len1);
      const int64_t off = paged_offset(a.kv, head, paged_row(head, kpos)) + sub * 8;
      bf16x8_load(kd, a.kv.pool + off);
      bf16x8_load(vd, a.kv.pool + off + int64_t(a.kv.page_rows) * D);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) kd[e] = vd[e] = 0.f;
    }
  };

  float m[MG], l[MG], acc[MG][8];
  decode_state_init(m, l, acc);
  constexpr int kStep = kPagedWarps * kKW;       // keys per step of the whole CTA
  int64_t base = k_begin + int64_t(warp) * kKW;  // uniform over the warp: shuffles below are safe
  if constexpr (PF) {
    static_assert(DEPTH == 1, "the table prefetch is written for one key step in flight");
    // off_next: the offset of the step after the one whose loads are in flight.
    if (base < k_end) load_at(kv[0], vv[0], key_offset(base + grp));
    int64_t off_next = key_offset(base + kStep + grp);
    for (; base < k_end; base += kStep) {
      float kc[8], vc[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        kc[e] = kv[0][e];
        vc[e] = vv[0][e];
      }
      if (base + kStep < k_end) load_at(kv[0], vv[0], off_next);
      off_next = key_offset(base + 2 * kStep + grp);  // the table load, a step ahead
      const bool valid = base + grp < k_end;
      decode_key_step<D, MG>(sq, G, sub, kc, vc, valid, a.scale_log2, m, l, acc);
    }
  } else {
#pragma unroll
  for (int b = 0; b < DEPTH; ++b)
    if (base + b * kStep < k_end) load_step(kv[b], vv[b], base + b * kStep);
  for (; base < k_end; base += DEPTH * kStep) {
#pragma unroll
    for (int b = 0; b < DEPTH; ++b) {
      const int64_t at = base + b * kStep;
      if (at >= k_end) break;  // uniform over the warp
      float kc[8], vc[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        kc[e] = kv[b][e];
        vc[e] = vv[b][e];
      }
      // The loads DEPTH steps ahead go out before this step's arithmetic.
      if (at + DEPTH * kStep < k_end) load_step(kv[b], vv[b], at + DEPTH * kStep);
      const bool valid = at + grp < k_end;  // the same for the kLK lanes of a group
      decode_key_step<D, MG>(sq, G, sub, kc, vc, valid, a.scale_log2, m, l, acc);
    }  // b
  }
  }  // PF
  decode_cta_merge<D, MG>(a, G, hk, item, split, m, l, acc, wacc, wstat);
}

// The ring kernel (the default; set_paged_decode_ring(false) selects the register kernel above):
// the CTA streams its keys through a kRingStages-deep ring of shared-memory tiles filled by
// cp.async, each tile the K and V rows of kRingStageBytes / (4 D) keys (2048 / D: 16 at d = 128),
// loaded by all 128 threads (two 16-byte chunks of K and two of V each) while the warps compute
// on the tile kRingStages - 1 behind. The bytes in flight no longer live in registers: 24 KB a
// CTA (three tiles) where the register kernel keeps 1 KB a warp (4 KB a CTA), so the loop is no
// longer bound by the loads it can hold. The ring (32 KB) is the warps' merge buffer once the
// loop is done.
constexpr int kRingStages = 4;
constexpr int kRingStageBytes = 8192;

template <int D, int MG>
__global__ void __launch_bounds__(32 * kPagedWarps) paged_decode_ring_kernel(const DecodeArgs a) {
  constexpr int kLK = D / 8;                       // lanes per key
  constexpr int kKW = 32 / kLK;                    // keys per warp step
  constexpr int kT = kRingStageBytes / (4 * D);    // keys per tile
  constexpr int kThreads = 32 * kPagedWarps;
  constexpr int kChunks = kT * kLK;                // 16-byte chunks of K (and of V) per tile
  constexpr int kPerThread = kChunks / kThreads;
  constexpr int kPasses = kT / (kPagedWarps * kKW);  // warp steps per tile
  static_assert(kChunks % kThreads == 0 && kT % (kPagedWarps * kKW) == 0, "tile shape");
  constexpr int kRingBytes = kRingStages * kRingStageBytes;
  constexpr int kMergeBytes = int(sizeof(float)) * kPagedWarps * MG * D;
  static_assert(kMergeBytes <= kRingBytes, "the merge buffer reuses the ring");
  __shared__ __align__(16) unsigned char ring[kRingBytes];
  __shared__ __align__(16) float sq[MG][D];
  __shared__ float wstat[kPagedWarps][MG][2];
  const int split = blockIdx.x, hk = blockIdx.y, item = blockIdx.z;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int grp = lane / kLK, sub = lane % kLK;
  const int G = a.group;
  const DecodeRange r = decode_cta_begin<D, MG>(a, sq);
  const int64_t n_keys = max(int64_t(0), r.k_end - r.k_begin);
  const int tiles = int((n_keys + kT - 1) / kT);
  auto stage = [&](int t) {
    return reinterpret_cast<__nv_bfloat16*>(ring + (t % kRingStages) * kRingStageBytes);
  };
  // Tile t's copies into its stage: K rows [kT][D] then V rows; chunk j = key * kLK + c. Keys
  // past the split are zero-filled (and masked in the arithmetic).
  auto issue = [&](int t) {
    __nv_bfloat16* st = stage(t);
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int j = tid + i * kThreads, key = j / kLK, c = j % kLK;
      const int64_t vk = r.k_begin + int64_t(t) * kT + key;
      const __nv_bfloat16* k_src = a.kv.pool;
      const __nv_bfloat16* v_src = a.kv.pool;
      int bytes = 0;
      if (vk < r.k_end) {
        k_src = a.kv.pool + paged_key_row<D>(a, r, vk) + c * 8;
        v_src = k_src + int64_t(a.kv.page_rows) * D;
        bytes = 16;
      }
      cp_async16(st + j * 8, k_src, bytes);
      cp_async16(st + kT * D + j * 8, v_src, bytes);
    }
  };

  float m[MG], l[MG], acc[MG][8];
  decode_state_init(m, l, acc);
  // One commit group per tile (empty past the last): tile t has landed once at most
  // kRingStages - 1 younger groups are pending.
#pragma unroll
  for (int t = 0; t < kRingStages - 1; ++t) {
    if (t < tiles) issue(t);
    cp_async_commit();
  }
  for (int t = 0; t < tiles; ++t) {  // tiles is uniform over the CTA: the barriers are safe
    if (t + kRingStages - 1 < tiles) issue(t + kRingStages - 1);  // the stage freed at t - 1
    cp_async_commit();
    cp_async_wait<kRingStages - 1>();
    __syncthreads();  // every thread's copies of tile t are visible
    const __nv_bfloat16* st = stage(t);
#pragma unroll
    for (int p = 0; p < kPasses; ++p) {
      const int key = (p * kPagedWarps + warp) * kKW + grp;
      float kc[8], vc[8];
      bf16x8_load(kc, st + key * D + sub * 8);
      bf16x8_load(vc, st + kT * D + key * D + sub * 8);
      const bool valid = r.k_begin + int64_t(t) * kT + key < r.k_end;
      decode_key_step<D, MG>(sq, G, sub, kc, vc, valid, a.scale_log2, m, l, acc);
    }
    __syncthreads();  // tile t's stage is refilled by the next iteration's issue
  }
  cp_async_wait<0>();  // the empty trailing groups: nothing lands in the ring after this
  __syncthreads();
  decode_cta_merge<D, MG>(a, G, hk, item, split, m, l, acc,
                          reinterpret_cast<float(*)[MG][D]>(ring), wstat);
}

template <int D>
__global__ void __launch_bounds__(D) paged_decode_merge_kernel(const DecodeArgs a) {
  const int hq = blockIdx.x, item = blockIdx.y, c = threadIdx.x;
  const int Hq = a.p.num_heads, splits = a.p.split.splits;
  const int64_t part0 = (int64_t(item) * Hq + hq) * splits;
  const float2* st = a.p.part_stats + part0;
  float mm = -INFINITY;
  for (int s = 0; s < splits; ++s) mm = fmaxf(mm, st[s].x);
  float sum = 0.f, acc_c = 0.f;
  if (mm != -INFINITY)
    for (int s = 0; s < splits; ++s) {
      const float f = exp2f(st[s].x - mm);
      sum += st[s].y * f;
      acc_c += a.p.part_acc[(part0 + s) * D + c] * f;
    }
  const int64_t row = a.kv.seqs[a.p.items[item]].row0;
  a.p.out[(row * Hq + hq) * D + c] = sum > 0.f ? acc_c / sum : 0.f;
}

template <int D, int MG, int DEPTH, bool PF = false>
int ctas_per_wave() {
  static const int n = [] {
    int device = 0, sms = 0, per_sm = 0;
    ELASTIC_CUDA_CHECK(cudaGetDevice(&device));
    ELASTIC_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    ELASTIC_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, paged_decode_split_kernel<D, MG, DEPTH, PF>, 32 * kPagedWarps, 0));
    return std::max(1, sms * per_sm);
  }();
  return n;
}

template <int D, int MG>
int ctas_per_wave_ring() {
  static const int n = [] {
    int device = 0, sms = 0, per_sm = 0;
    ELASTIC_CUDA_CHECK(cudaGetDevice(&device));
    ELASTIC_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    ELASTIC_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, paged_decode_ring_kernel<D, MG>, 32 * kPagedWarps, 0));
    return std::max(1, sms * per_sm);
  }();
  return n;
}

template <int D, int MG>
int ctas_per_wave_depth() {
  if (g_paged_decode_ring) return ctas_per_wave_ring<D, MG>();
  if (g_paged_decode_depth == 2) return ctas_per_wave<D, MG, 2>();
  return g_paged_decode_prefetch ? ctas_per_wave<D, MG, 1, true>() : ctas_per_wave<D, MG, 1>();
}

template <int D>
int ctas_per_wave_for(int group) {
  if (group <= 2) return ctas_per_wave_depth<D, 2>();
  if (group <= 4) return ctas_per_wave_depth<D, 4>();
  return ctas_per_wave_depth<D, kPagedMaxGroup>();
}

template <int D, int MG>
void decode_launch_group(const DecodeArgs& a, cudaStream_t stream) {
  const dim3 grid(unsigned(a.p.split.splits), unsigned(a.kv.num_kv_heads), unsigned(a.p.count));
  if (g_paged_decode_ring)
    paged_decode_ring_kernel<D, MG><<<grid, 32 * kPagedWarps, 0, stream>>>(a);
  else if (g_paged_decode_depth == 2)
    paged_decode_split_kernel<D, MG, 2><<<grid, 32 * kPagedWarps, 0, stream>>>(a);
  else if (g_paged_decode_prefetch)
    paged_decode_split_kernel<D, MG, 1, true><<<grid, 32 * kPagedWarps, 0, stream>>>(a);
  else
    paged_decode_split_kernel<D, MG, 1><<<grid, 32 * kPagedWarps, 0, stream>>>(a);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}

template <int D>
void decode_launch(const DecodeArgs& a, cudaStream_t stream) {
  if (a.group <= 2)
    decode_launch_group<D, 2>(a, stream);
  else if (a.group <= 4)
    decode_launch_group<D, 4>(a, stream);
  else
    decode_launch_group<D, kPagedMaxGroup>(a, stream);
  paged_decode_merge_kernel<D>
      <<<dim3(unsigned(a.p.num_heads), unsigned(a.p.count)), D, 0, stream>>>(a);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}

void check_kv(const PagedKv& kv) {
  ELASTIC_CHECK(kv.pool && kv.seqs && kv.heads && kv.table && kv.page_rows > 0 &&
                kv.num_kv_heads > 0);
  ELASTIC_CHECK_MSG(
      kv.head_dim == 16 || kv.head_dim == 32 || kv.head_dim == 64 || kv.head_dim == 128,
      "paged attention: head_dim must be 16, 32, 64 or 128");
  ELASTIC_CHECK(kv.page_stride == 2 * int64_t(kv.page_rows) * kv.head_dim);
  ELASTIC_CHECK(reinterpret_cast<uintptr_t>(kv.pool) % 16 == 0);
}

int grid_for(int64_t count, int threads) {
  return int(std::min<int64_t>((count + threads - 1) / threads, 8192));
}

}  // namespace

void set_paged_decode_prefetch(bool on) { g_paged_decode_prefetch = on; }

void set_paged_decode_ring(bool on) { g_paged_decode_ring = on; }

void set_paged_decode_depth(int depth) {
  ELASTIC_CHECK_MSG(depth == 1 || depth == 2, "paged decode depth must be 1 or 2");
  g_paged_decode_depth = depth;
}
}  // namespace detail

void paged_kv_store(const PagedKv& kv, const int32_t* row_seq, const float* k, const float* v,
                    int64_t rows, cudaStream_t stream) {
  detail::check_kv(kv);
  ELASTIC_CHECK(row_seq && k && v && rows >= 0);
  const int64_t count = rows * kv.num_kv_heads * (kv.head_dim / 8);
  if (count == 0) return;
  constexpr int kThreads = 256;
  detail::paged_store_kernel<<<detail::grid_for(count, kThreads), kThreads, 0, stream>>>(
      kv, row_seq, k, v, rows);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}

void paged_kv_gather_past(__nv_bfloat16* k_out, __nv_bfloat16* v_out, const PagedKv& kv, int seq,
                          int64_t pos0, cudaStream_t stream) {
  detail::check_kv(kv);
  ELASTIC_CHECK(k_out && v_out && seq >= 0 && pos0 >= 0);
  ELASTIC_CHECK(reinterpret_cast<uintptr_t>(k_out) % 16 == 0 &&
                reinterpret_cast<uintptr_t>(v_out) % 16 == 0);
  const int64_t count = pos0 * kv.num_kv_heads * (kv.head_dim / 8);
  if (count == 0) return;
  constexpr int kThreads = 256;
  detail::paged_gather_kernel<<<detail::grid_for(count, kThreads), kThreads, 0, stream>>>(
      k_out, v_out, kv, seq, pos0);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}

PagedDecodeSplits paged_decode_splits(int head_dim, int group, int64_t max_keys,
                                      int64_t total_keys) {
  ELASTIC_CHECK(max_keys >= 1 && total_keys >= max_keys && group >= 1);
  int64_t wave = 0;
  switch (head_dim) {
    case 16:
      wave = detail::ctas_per_wave_for<16>(group);
      break;
    case 32:
      wave = detail::ctas_per_wave_for<32>(group);
      break;
    case 64:
      wave = detail::ctas_per_wave_for<64>(group);
      break;
    default:
      wave = detail::ctas_per_wave_for<128>(group);
      break;
  }
  // The keys of all items and heads spread over kPagedWaves waves of CTAs, each split at least
  // kPagedMinKeysPerSplit keys, at most kPagedMaxSplits splits per head.
  const int64_t slots = detail::kPagedWaves * wave;
  int64_t per_split =
      std::max<int64_t>(detail::kPagedMinKeysPerSplit, (total_keys + slots - 1) / slots);
  per_split = std::max<int64_t>(per_split,
                                (max_keys + detail::kPagedMaxSplits - 1) / detail::kPagedMaxSplits);
  PagedDecodeSplits s;
  s.keys_per_split = int(per_split);
  s.splits = int((max_keys + per_split - 1) / per_split);
  return s;
}

void paged_decode_run(const PagedKv& kv, const PagedDecodeParams& p, cudaStream_t stream) {
  detail::check_kv(kv);
  if (p.count == 0) return;
  ELASTIC_CHECK(p.q && p.out && p.items && p.part_stats && p.part_acc && p.count > 0);
  ELASTIC_CHECK(p.num_heads % kv.num_kv_heads == 0 &&
                p.num_heads / kv.num_kv_heads <= detail::kPagedMaxGroup);
  ELASTIC_CHECK(p.split.splits >= 1 && p.split.keys_per_split >= 1 && p.count <= 65535);
  detail::DecodeArgs a{};
  a.kv = kv;
  a.p = p;
  a.group = p.num_heads / kv.num_kv_heads;
  const float scale = p.scale != 0.f ? p.scale : 1.0f / std::sqrt(float(kv.head_dim));
  a.scale_log2 = scale * 1.4426950408889634f;
  a.ssa_sink_end = p.ssa.kept_sink_tokens();
  a.ssa_block = p.ssa.block;
  a.ssa_local_blocks = p.ssa.local_blocks();
  switch (kv.head_dim) {
    case 16:
      detail::decode_launch<16>(a, stream);
      break;
    case 32:
      detail::decode_launch<32>(a, stream);
      break;
    case 64:
      detail::decode_launch<64>(a, stream);
      break;
    default:
      detail::decode_launch<128>(a, stream);
      break;
  }
}

}  // namespace elastic::cuda
