// Fused hybrid prefill attention (SPEC §3): one launch over (query tile, query head) work items.
//
// Algorithm (FlashAttention-2 style, mma.sync m16n8k16 bf16 -> fp32): a CTA of kWarps warps owns
// kBlockM = 16 * kWarps query rows of one query head (GQA: KV head = hq / G). It first marks in
// two shared-memory bitmaps which kBlockN-key tiles its rows may see ("visit") and which of those
// need no per-element mask ("full"), from its KV head's mode: FA (causal), SSA (sink blocks +
// local window, block rule) or XA (block mask made by xa_select on the device). It then streams
// the visited K/V tiles through a two-stage cp.async pipeline, computing S = Q K^T on tensor
// cores, the online softmax in fp32 (base 2, scale folded in) and O += P V.
// Chunked prefill: query row i sits at position pos0 + i and keys are indexed by position
// (0..n_keys-1, n_keys = pos0 + n); the tile bitmaps and element masks work on positions.
// Invariants: every valid query row sees its own position (FA causal diagonal, SSA own block,
// XA forced diagonal block), so its softmax denominator is > 0; rows >= n and keys >= n_keys are
// zero-filled and masked, and rows >= n are never written.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "elastic/cuda/attention_cuda.h"
#include "elastic/cuda/cuda_check.h"
#include "elastic/error.h"
#include "mma.cuh"
#include "prefill_common.cuh"
#include "prefill_internal.h"

namespace elastic::cuda {
namespace detail {

template <int D, int Warps, int RowBlocks, int BlockN>
struct PrefillTraits {
  static constexpr int kHeadDim = D;
  static constexpr int kWarps = Warps;
  static constexpr int kThreads = 32 * Warps;
  static constexpr int kRowBlocks = RowBlocks;  // m16 row blocks per warp
  static constexpr int kBlockM = 16 * RowBlocks * Warps;
  static constexpr int kBlockN = BlockN;
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
  static constexpr int kQElems = kBlockM * D;
  static constexpr int kKvElems = kBlockN * D;
  // Q tile + two stages of K and V.
  static constexpr size_t kTileSmemBytes = size_t(kQElems + 4 * kKvElems) * sizeof(__nv_bfloat16);
  static_assert(D == 16 || D == 32 || D == 64 || D == 128, "head_dim 16, 32, 64 or 128");
  static_assert(kBlockN % 16 == 0 && kBlockN <= 64 && 64 % kBlockN == 0,
                "key tiles are 16-multiples dividing the 64-key bitmap granularity");
  static_assert((kBlockM * kChunks) % kThreads == 0 && (kBlockN * kChunks) % kThreads == 0,
                "tile loads split evenly over the CTA");
  static_assert(kTileSmemBytes <= 200 * 1024, "fits an sm_90 CTA");
};

// Tile shapes (measured on the H200, docs/gpu-notes.md): v1 = 4 warps x 16 rows, 64-key tiles
// (Q in registers) spilled at d = 128 and reached 138 TFLOP/s; v2 gives each warp 32 rows so
// every K/V fragment read from shared memory feeds two MMAs, and reads Q from shared memory.
// At d = 128 the 32-row x 64-key shape needs 352 bytes of spills (ptxas, sm_90a), the
// 32-row x 32-key one none: the latter is the default; the others stay for the measurement.
using PrefillD16 = PrefillTraits<16, 4, 2, 64>;     // small models (tinystories-656k)
using PrefillD32 = PrefillTraits<32, 4, 2, 64>;     // small models (the engine-core fixtures)
using PrefillD64 = PrefillTraits<64, 4, 2, 64>;     // 254 registers, no spills
using PrefillD128 = PrefillTraits<128, 4, 2, 32>;   // 255 registers, 4 bytes spilled
using PrefillD128N64 = PrefillTraits<128, 4, 2, 64>;  // variant 1: 352 bytes spilled
using PrefillD128M64 = PrefillTraits<128, 4, 1, 64>;  // variant 2: v2 loop with v1's 64-row tiles

template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads)
    prefill_attention_kernel(const PrefillKernelParams p) {
  constexpr int D = Traits::kHeadDim, BM = Traits::kBlockM, BN = Traits::kBlockN;
  constexpr int MI = Traits::kRowBlocks, CH = Traits::kChunks, NT = Traits::kThreads;
  constexpr int kSub = 64 / BN;  // kernel tiles per 64-key bitmap tile
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* sK = sQ + Traits::kQElems;          // 2 stages
  __nv_bfloat16* sV = sK + 2 * Traits::kKvElems;     // 2 stages
  uint32_t* visit_bits = reinterpret_cast<uint32_t*>(smem_raw + Traits::kTileSmemBytes);
  uint32_t* full_bits = visit_bits + p.bitmap_words;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int2 item = p.work[blockIdx.x];
  const int q_tile = item.x, hq = item.y, hk = hq / p.group;
  const int mode = p.modes[hk];
  const int q0 = q_tile * BM;                  // first query row of the tile
  const int q_last = min(q0 + BM, p.n) - 1;    // last valid query row
  const int pos_first = p.pos0 + q0, pos_last = p.pos0 + q_last;  // their positions
  const int tiles64 = pos_last / 64 + 1;  // causal 64-key tiles
  const int words = (tiles64 + 31) / 32;

  // 1. 64-key tile bitmaps for this (query tile, head).
  for (int base = warp * 32; base < tiles64; base += Traits::kWarps * 32) {
    const int t = base + lane;
    bool vis = false, full = false;
    if (t < tiles64) classify_tile(p, mode, hq, pos_first, pos_last, t * 64, vis, full);
    const uint32_t vb = __ballot_sync(0xffffffffu, vis), fb = __ballot_sync(0xffffffffu, full);
    if (lane == 0) {
      visit_bits[base / 32] = vb;
      full_bits[base / 32] = fb;
    }
  }
  __syncthreads();
  // Kernel tile index (BN keys) of the next visited tile at or after `from`.
  auto next_tile = [&](int from) -> int {
    if (from > pos_last / BN) return -1;
    int t64 = from / kSub;
    int w = t64 >> 5;
    uint32_t bits = visit_bits[w] & (0xffffffffu << (t64 & 31));
    if (bits != 0 && (__ffs(bits) - 1) == (t64 & 31)) return from;  // still inside a visited 64-tile
    while (bits == 0) {
      if (++w >= words) return -1;
      bits = visit_bits[w];
    }
    const int first = (w * 32 + __ffs(bits) - 1) * kSub;
    return first <= pos_last / BN ? first : -1;
  };

  const __nv_bfloat16* q_base = p.q + int64_t(hq) * p.q_head;
  const __nv_bfloat16* k_base = p.k + int64_t(hk) * p.k_head;
  const __nv_bfloat16* v_base = p.v + int64_t(hk) * p.v_head;
  // Rows row0..row0+rows-1 of src (rows >= limit zero-filled) into a swizzled tile.
  auto load_rows = [&](__nv_bfloat16* dst, const __nv_bfloat16* src, int64_t tok_stride, int row0,
                       int rows, int limit) {
    for (int i = tid; i < rows * CH; i += NT) {
      const int r = i / CH, c = i % CH, tok = row0 + r;
      const bool ok = tok < limit;
      cp_async16(dst + swz(r, c, CH), src + int64_t(ok ? tok : 0) * tok_stride + c * 8, ok ? 16 : 0);
    }
  };

  int cur = next_tile(0);
  load_rows(sQ, q_base, p.q_tok, q0, BM, p.n);
  if (cur >= 0) {
    load_rows(sK, k_base, p.k_tok, cur * BN, BN, p.n_keys);
    load_rows(sV, v_base, p.v_tok, cur * BN, BN, p.n_keys);
  }
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
  const int warp_row0 = warp * 16 * MI;           // first tile row of this warp
  const int r0 = q0 + warp_row0 + g;               // rows r0 + 16 mi + 8 h
  int buf = 0;

  while (cur >= 0) {
    const int nxt = next_tile(cur + 1);
    if (nxt >= 0) {
      load_rows(sK + (buf ^ 1) * Traits::kKvElems, k_base, p.k_tok, nxt * BN, BN, p.n_keys);
      load_rows(sV + (buf ^ 1) * Traits::kKvElems, v_base, p.v_tok, nxt * BN, BN, p.n_keys);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const __nv_bfloat16* Ks = sK + buf * Traits::kKvElems;
    const __nv_bfloat16* Vs = sV + buf * Traits::kKvElems;
    const int k0 = cur * BN;

    // S = Q K^T for this warp's 16*MI rows x BN keys; each K fragment feeds MI MMAs.
    float s[MI][BN / 8][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int i = 0; i < BN / 8; ++i) s[mi][i][0] = s[mi][i][1] = s[mi][i][2] = s[mi][i][3] = 0.f;
    warp_qk_mma<MI, BN, D>(s, sQ, Ks, CH, warp_row0, lane);
    const int t64 = cur / kSub;
    const bool full = (full_bits[t64 >> 5] >> (t64 & 31)) & 1u;
    if (!full) {
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          mask_score_row<BN>(p, mode, hq, r0 + 16 * mi + 8 * h, h, k0, t4,
                             [&](int nb, int c) -> float& { return s[mi][nb][c]; });
    }
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        online_softmax_row<BN, D>([&](int nb, int c) -> float& { return s[mi][nb][c]; }, h,
                                  p.scale_log2, row_max[mi][h], row_sum[mi][h], o[mi]);
    // O += P V, P as bf16 A fragments straight from the S accumulators; each V fragment feeds
    // MI MMAs.
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t a[MI][4];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
        p_a_fragment(a[mi], [&](int nb, int c) -> float& { return s[mi][nb][c]; }, kk);
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

  store_output_rows<MI, D>(p, hq, r0, 16, t4, row_sum, o);  // normalised, rows < n
}

template <typename Traits>
void launch_prefill(const PrefillKernelParams& kp, int work_count, cudaStream_t stream) {
  launch_prefill_kernel(prefill_attention_kernel<Traits>, kp, work_count, Traits::kThreads,
                        Traits::kTileSmemBytes, stream);
}

// Tile-shape variant for d = 128 (0 = default); set only by the tile-shape benchmark.
int g_prefill_variant_d128 = 0;

// The kernel that runs: the variant set for a measurement, else the wgmma kernel with one m64
// block live when this device runs sm_90a code (309 TFLOP/s at d = 128, 32K-128K, against 248
// for the best mma.sync shape; docs/gpu-notes.md run 3), else mma.sync.
int prefill_effective_variant() {
  if (g_prefill_variant_d128 != 0) return g_prefill_variant_d128;
  static const int chosen = wgmma_kernel_available() ? 5 : 4;
  return chosen;
}

int prefill_block_m(int head_dim) {
  if (head_dim == 16) return PrefillD16::kBlockM;  // mma.sync only (wgmma kernel: d 64, 128)
  if (head_dim == 32) return PrefillD32::kBlockM;
  const int v = prefill_effective_variant();
  if (v == 3 || v == 5) return 128;  // wgmma: 2 x m64
  if (head_dim == 64) return PrefillD64::kBlockM;
  return v == 2 ? PrefillD128M64::kBlockM : PrefillD128::kBlockM;
}

void set_prefill_variant(int variant) { g_prefill_variant_d128 = variant; }

}  // namespace detail

namespace {

void check_tensor(const char* name, const void* ptr, AttnStrides s) {
  if (!ptr) throw Error(std::string("prefill attention: tensor ") + name + " is null");
  if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0 || s.token % 8 != 0 || s.head % 8 != 0)
    throw Error(std::string("prefill attention: tensor ") + name +
                " must be 16-byte aligned with strides that are multiples of 8 elements");
}

AttnStrides packed_or(AttnStrides s, int heads, int d) {
  if (s.token == 0 && s.head == 0) return AttnStrides{int64_t(heads) * d, d};
  return s;
}

}  // namespace

PrefillAttnPlan prefill_attention_plan(const PrefillAttnShape& shape, const AttnMode* modes,
                                       DeviceArena& arena, cudaStream_t stream) {
  const int Hq = shape.num_heads, Hkv = shape.num_kv_heads, d = shape.head_dim;
  if (shape.n <= 0 || shape.n > (int64_t(1) << 30))
    throw Error("prefill attention: n must be in [1, 2^30], got " + std::to_string(shape.n));
  if (shape.pos0 < 0 || shape.pos0 + shape.n > (int64_t(1) << 30))
    throw Error("prefill attention: pos0 + n must be in [1, 2^30], got pos0 " +
                std::to_string(shape.pos0) + " and n " + std::to_string(shape.n));
  if (Hq <= 0 || Hkv <= 0 || Hq % Hkv != 0)
    throw Error("prefill attention: num_heads must be a positive multiple of num_kv_heads");
  if (d != 16 && d != 32 && d != 64 && d != 128)
    throw Error("prefill attention: head_dim must be 16, 32, 64 or 128 on CUDA, got " + std::to_string(d));
  const SsaOptions& ssa = shape.opt.ssa;
  if (ssa.block <= 0 || ssa.sink_tokens < 0 || ssa.local_tokens <= 0)
    throw Error("prefill attention: SSA block/sink/local sizes must be positive");

  PrefillAttnPlan plan;
  plan.shape = shape;
  plan.block_m = detail::prefill_block_m(d);
  plan.modes.assign(size_t(Hkv), AttnMode::fa);
  if (modes) plan.modes.assign(modes, modes + Hkv);
  const int G = Hq / Hkv;
  const int bm = plan.block_m;
  const int64_t tiles = (shape.n + bm - 1) / bm;

  // Work list, costliest first (keys each item visits), so long FA tiles start early and SSA
  // tiles fill the tail. XA cost is unknown before estimation: counted as FA.
  std::vector<int2> work;
  std::vector<int64_t> cost;
  work.reserve(size_t(tiles * Hq));
  const int64_t ssa_keys = ssa.kept_sink_tokens() + ssa.kept_window_tokens() + bm;
  for (int64_t t = 0; t < tiles; ++t)
    for (int h = 0; h < Hq; ++h) {
      const int64_t causal = shape.pos0 + std::min<int64_t>((t + 1) * bm, shape.n);
      const AttnMode m = plan.modes[size_t(h / G)];
      work.push_back(make_int2(int(t), h));
      cost.push_back(m == AttnMode::ssa ? std::min(causal, ssa_keys) : causal);
    }
  std::vector<size_t> order(work.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return cost[a] > cost[b]; });
  std::vector<int2> sorted(work.size());
  for (size_t i = 0; i < order.size(); ++i) sorted[i] = work[order[i]];
  plan.work_count = int(sorted.size());
  plan.work = arena.alloc_array<int2>(sorted.size());
  plan.modes_dev = arena.alloc_array<uint8_t>(size_t(Hkv));
  std::vector<uint8_t> modes_u8(static_cast<size_t>(Hkv));
  for (int h = 0; h < Hkv; ++h) modes_u8[size_t(h)] = uint8_t(plan.modes[size_t(h)]);

  std::vector<int> xa_heads;
  for (int h = 0; h < Hq; ++h)
    if (plan.modes[size_t(h / G)] == AttnMode::xa) xa_heads.push_back(h);
  plan.xa_head_count = int(xa_heads.size());
  if (!xa_heads.empty()) {
    const XaOptions& xa = shape.opt.xa;
    if (xa.block <= 0 || xa.stride <= 0 || xa.block % xa.stride != 0)
      throw Error("prefill attention: XA block must be a positive multiple of the stride");
    if (shape.pos0 % xa.block != 0)
      throw Error("prefill attention: an XA head in a prefill chunk at position " +
                  std::to_string(shape.pos0) + " needs the chunk to start at a multiple of the XA block (" +
                  std::to_string(xa.block) + ")");
    const int64_t g = xa.block / xa.stride;
    if (g != 2 && g != 4 && g != 8 && g != 16 && g != 32 && g != 64)
      throw Error("prefill attention: CUDA XA estimation supports block/stride of 2, 4, .., 64, got " +
                  std::to_string(g));
    if (!(xa.threshold > 0.0 && xa.threshold <= 1.0))
      throw Error("prefill attention: XA threshold must be in (0, 1]");
    plan.xa_q_blocks = (shape.n + xa.block - 1) / xa.block;
    plan.xa_k_blocks = (shape.pos0 + shape.n + xa.block - 1) / xa.block;
    if (plan.xa_k_blocks > detail::kXaMaxBlocks)
      throw Error("prefill attention: too many XA blocks (" + std::to_string(plan.xa_k_blocks) +
                  " > " + std::to_string(detail::kXaMaxBlocks) + ")");
    const int64_t rows = plan.xa_q_blocks * g;
    const size_t nb2 = size_t(plan.xa_q_blocks) * size_t(plan.xa_k_blocks);
    plan.xa_heads = arena.alloc_array<int>(xa_heads.size());
    plan.xa_rows = rows;
    plan.xa_tiles = (shape.pos0 / xa.stride + rows + 63) / 64;  // columns reach the last row's
    const size_t nxa = xa_heads.size();
    plan.xa_partial = arena.alloc_array<float>(nxa * size_t(rows) * size_t(plan.xa_k_blocks));
    plan.xa_tile_max = arena.alloc_array<float>(nxa * size_t(rows) * size_t(plan.xa_tiles));
    plan.xa_block_scores = arena.alloc_array<float>(size_t(Hq) * nb2);
    plan.xa_mask = arena.alloc_array<uint8_t>(size_t(Hq) * nb2);
    ELASTIC_CUDA_CHECK(cudaMemcpyAsync(plan.xa_heads, xa_heads.data(), xa_heads.size() * sizeof(int),
                                       cudaMemcpyHostToDevice, stream));
  }
  ELASTIC_CUDA_CHECK(cudaMemcpyAsync(plan.work, sorted.data(), sorted.size() * sizeof(int2),
                                     cudaMemcpyHostToDevice, stream));
  ELASTIC_CUDA_CHECK(cudaMemcpyAsync(plan.modes_dev, modes_u8.data(), modes_u8.size(),
                                     cudaMemcpyHostToDevice, stream));
  // The host vectors die here: the plan (not run) may wait for its uploads.
  ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream));
  return plan;
}

detail::PrefillKernelParams detail::make_kernel_params(const PrefillAttnPlan& plan,
                                                       const PrefillAttnParams& p) {
  const PrefillAttnShape& s = plan.shape;
  PrefillKernelParams kp{};
  const AttnStrides qs = packed_or(p.q_stride, s.num_heads, s.head_dim);
  const AttnStrides ks = packed_or(p.k_stride, s.num_kv_heads, s.head_dim);
  const AttnStrides vs = packed_or(p.v_stride, s.num_kv_heads, s.head_dim);
  const AttnStrides os = packed_or(p.out_stride, s.num_heads, s.head_dim);
  check_tensor("q", p.q, qs);
  check_tensor("k", p.k, ks);
  check_tensor("v", p.v, vs);
  check_tensor("out", p.out, os);
  kp.q = p.q;
  kp.k = p.k;
  kp.v = p.v;
  kp.out = p.out;
  kp.out_fp32 = p.out_fp32 ? 1 : 0;
  kp.q_tok = qs.token, kp.q_head = qs.head;
  kp.k_tok = ks.token, kp.k_head = ks.head;
  kp.v_tok = vs.token, kp.v_head = vs.head;
  kp.o_tok = os.token, kp.o_head = os.head;
  kp.n = int(s.n);
  kp.pos0 = int(s.pos0);
  kp.n_keys = int(s.pos0 + s.n);
  kp.num_heads = s.num_heads;
  kp.group = s.num_heads / s.num_kv_heads;
  kp.head_dim = s.head_dim;
  const float scale = p.scale != 0.f ? p.scale : 1.0f / std::sqrt(float(s.head_dim));
  kp.scale_log2 = scale * 1.4426950408889634f;
  kp.modes = plan.modes_dev;
  kp.work = plan.work;
  kp.ssa_block = int(s.opt.ssa.block);
  kp.ssa_sink_blocks = int(s.opt.ssa.sink_blocks());
  kp.ssa_local_blocks = int(s.opt.ssa.local_blocks());
  kp.xa_mask = plan.xa_mask;
  kp.xa_block = int(s.opt.xa.block);
  kp.xa_nqb = int(plan.xa_q_blocks);
  kp.xa_nkb = int(plan.xa_k_blocks);
  kp.xa_stride = int(s.opt.xa.stride);
  // The plan checked pos0 % block == 0 (and block % stride == 0) when any head is XA.
  kp.xa_qb0 = plan.xa_head_count > 0 ? int(s.pos0 / s.opt.xa.block) : 0;
  kp.xa_col0 = plan.xa_head_count > 0 ? int(s.pos0 / s.opt.xa.stride) : 0;
  kp.xa_threshold = float(s.opt.xa.threshold);
  kp.xa_heads = plan.xa_heads;
  kp.xa_rows = int(plan.xa_rows);
  kp.xa_tiles = int(plan.xa_tiles);
  kp.xa_partial = plan.xa_partial;
  kp.xa_tile_max = plan.xa_tile_max;
  kp.xa_block_scores = plan.xa_block_scores;
  const int64_t tiles = (s.pos0 + s.n + 63) / 64;  // key tiles of kBlockN = 64
  kp.bitmap_words = int((tiles + 31) / 32);
  return kp;
}

void prefill_attention_run(const PrefillAttnPlan& plan, const PrefillAttnParams& p,
                           cudaStream_t stream) {
  const detail::PrefillKernelParams kp = detail::make_kernel_params(plan, p);
  ELASTIC_CHECK_MSG(plan.block_m == detail::prefill_block_m(plan.shape.head_dim),
                    "prefill attention: plan made for another tile shape");
  if (plan.xa_head_count > 0) detail::launch_xa_estimate(kp, plan.xa_head_count, stream);
  const int variant = detail::prefill_effective_variant();
  if (plan.shape.head_dim == 16)
    detail::launch_prefill<detail::PrefillD16>(kp, plan.work_count, stream);
  else if (plan.shape.head_dim == 32)
    detail::launch_prefill<detail::PrefillD32>(kp, plan.work_count, stream);
  else if (variant == 3 || variant == 5) {
    ELASTIC_CHECK_MSG(detail::wgmma_kernel_available(), "wgmma kernel needs sm_90a code and device");
    detail::launch_prefill_wgmma(kp, plan.work_count, stream, variant == 3);
  } else if (plan.shape.head_dim == 64)
    detail::launch_prefill<detail::PrefillD64>(kp, plan.work_count, stream);
  else if (variant == 1)
    detail::launch_prefill<detail::PrefillD128N64>(kp, plan.work_count, stream);
  else if (variant == 2)
    detail::launch_prefill<detail::PrefillD128M64>(kp, plan.work_count, stream);
  else
    detail::launch_prefill<detail::PrefillD128>(kp, plan.work_count, stream);
}

namespace detail {

// One thread per 16-byte chunk (8 bf16) of one (position, KV head) row of the output.
__global__ void kv_gather_past_kernel(__nv_bfloat16* k_out, __nv_bfloat16* v_out,
                                      const DeviceKvHead* heads, int kv_heads, int chunks,
                                      int64_t pos0) {
  const int64_t count = pos0 * kv_heads * chunks;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < count;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int c = int(idx % chunks), h = int((idx / chunks) % kv_heads);
    const int64_t pos = idx / (int64_t(chunks) * kv_heads);
    const DeviceKvHead hd = heads[h];
    // A ring holds its sinks and the last window_tokens positions before pos0 (KvHeadView::row).
    const bool held = !hd.ring || pos < hd.sink_tokens || pos >= pos0 - hd.window_tokens;
    int4 kx = make_int4(0, 0, 0, 0), vx = make_int4(0, 0, 0, 0);
    if (held) {
      const int64_t row = (!hd.ring || pos < hd.sink_tokens)
                              ? pos
                              : hd.sink_tokens + (pos - hd.sink_tokens) % hd.window_tokens;
      kx = reinterpret_cast<const int4*>(hd.k)[row * chunks + c];
      vx = reinterpret_cast<const int4*>(hd.v)[row * chunks + c];
    }
    const int64_t at = (pos * kv_heads + h) * chunks + c;
    reinterpret_cast<int4*>(k_out)[at] = kx;
    reinterpret_cast<int4*>(v_out)[at] = vx;
  }
}

}  // namespace detail

void prefill_kv_gather_past(__nv_bfloat16* k_out, __nv_bfloat16* v_out,
                            const DeviceKvHead* heads_dev, int num_kv_heads, int head_dim,
                            int64_t pos0, cudaStream_t stream) {
  ELASTIC_CHECK(k_out && v_out && heads_dev && num_kv_heads > 0 && head_dim % 8 == 0 && pos0 >= 0);
  // 16-byte accesses: rows of head_dim bf16 are 16-byte multiples; buffers come from cudaMalloc.
  ELASTIC_CHECK(reinterpret_cast<uintptr_t>(k_out) % 16 == 0 && reinterpret_cast<uintptr_t>(v_out) % 16 == 0);
  const int chunks = head_dim / 8;
  const int64_t count = pos0 * num_kv_heads * chunks;
  if (count == 0) return;
  constexpr int kThreads = 256;
  const int blocks = int(std::min<int64_t>((count + kThreads - 1) / kThreads, 8192));
  detail::kv_gather_past_kernel<<<blocks, kThreads, 0, stream>>>(k_out, v_out, heads_dev, num_kv_heads,
                                                                 chunks, pos0);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}

void xa_estimate_run(const PrefillAttnPlan& plan, const PrefillAttnParams& p, cudaStream_t stream) {
  if (plan.xa_head_count == 0) return;
  const detail::PrefillKernelParams kp = detail::make_kernel_params(plan, p);
  detail::launch_xa_estimate(kp, plan.xa_head_count, stream);
}

}  // namespace elastic::cuda
