// Fused hybrid prefill attention (SPEC §3): one launch over (query tile, query head) work items.
//
// Algorithm (FlashAttention-2 style, mma.sync m16n8k16 bf16 -> fp32): a CTA of kWarps warps owns
// kBlockM = 16 * kWarps query rows of one query head (GQA: KV head = hq / G). It first marks in
// two shared-memory bitmaps which kBlockN-key tiles its rows may see ("visit") and which of those
// need no per-element mask ("full"), from its KV head's mode: FA (causal), SSA (sink blocks +
// local window, block rule) or XA (block mask made by xa_select on the device). It then streams
// the visited K/V tiles through a two-stage cp.async pipeline, computing S = Q K^T on tensor
// cores, the online softmax in fp32 (base 2, scale folded in) and O += P V.
// Invariants: every valid query row sees its own position (FA causal diagonal, SSA own block,
// XA forced diagonal block), so its softmax denominator is > 0; rows >= n and keys >= n are
// zero-filled and masked and never written.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "elastic/cuda/attention_cuda.h"
#include "elastic/cuda/cuda_check.h"
#include "elastic/error.h"
#include "mma.cuh"
#include "prefill_internal.h"

namespace elastic::cuda {
namespace detail {

template <int D, int Warps>
struct PrefillTraits {
  static constexpr int kHeadDim = D;
  static constexpr int kWarps = Warps;
  static constexpr int kThreads = 32 * Warps;
  static constexpr int kBlockM = 16 * Warps;
  static constexpr int kBlockN = 64;
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
  static constexpr int kQElems = kBlockM * D;
  static constexpr int kKvElems = kBlockN * D;
  // Q tile + two stages of K and V.
  static constexpr size_t kTileSmemBytes = size_t(kQElems + 4 * kKvElems) * sizeof(__nv_bfloat16);
  static_assert(D == 64 || D == 128, "head_dim 64 or 128");
  static_assert(kBlockN % 16 == 0 && D % 16 == 0, "mma tiles are 16 wide");
  static_assert((kBlockM * kChunks) % kThreads == 0 && (kBlockN * kChunks) % kThreads == 0,
                "tile loads split evenly over the CTA");
  static_assert(kTileSmemBytes <= 200 * 1024, "fits an sm_90 CTA");
};

// Tile shape choice: 4 warps x 16 rows, 64-key tiles (FlashAttention-2's sm_80 forward shape for
// d <= 128). First measured version, see docs/gpu-notes.md.
constexpr int prefill_warps(int head_dim) { return head_dim <= 128 ? 4 : 4; }

__device__ __forceinline__ bool key_allowed(const PrefillKernelParams& p, int mode, int hq, int qpos,
                                            int kpos) {
  if (kpos > qpos || kpos >= p.n) return false;
  if (mode == int(AttnMode::fa)) return true;
  if (mode == int(AttnMode::ssa)) {
    const int kb = kpos / p.ssa_block, qb = qpos / p.ssa_block;
    return kb < p.ssa_sink_blocks || kb >= qb - p.ssa_local_blocks + 1;
  }
  return p.xa_mask[(size_t(hq) * p.xa_nqb + qpos / p.xa_block) * p.xa_nqb + kpos / p.xa_block] != 0;
}

// Classifies key tile [k0, k0 + bn) for query rows [q0, q_last]: visit = some pair allowed,
// full = every pair allowed (then no element mask is applied).
__device__ __forceinline__ void classify_tile(const PrefillKernelParams& p, int mode, int hq, int q0,
                                              int q_last, int k0, int bn, bool& visit, bool& full) {
  const int k_end = k0 + bn - 1;
  const bool causal_full = k_end <= q0 && k_end < p.n;
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
    const int a0 = q0 / Bx, a1 = q_last / Bx;
    const int b0 = k0 / Bx, b1 = min(k_end, p.n - 1) / Bx;
    bool any = false, all = true;
    for (int a = a0; a <= a1; ++a) {
      const uint8_t* row = p.xa_mask + (size_t(hq) * p.xa_nqb + a) * p.xa_nqb;
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

template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads)
    prefill_attention_kernel(const PrefillKernelParams p) {
  constexpr int D = Traits::kHeadDim, BM = Traits::kBlockM, BN = Traits::kBlockN;
  constexpr int CH = Traits::kChunks, NT = Traits::kThreads;
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
  const int q0 = q_tile * BM;
  const int q_last = min(q0 + BM, p.n) - 1;
  const int tiles = q_last / BN + 1;  // causal tiles 0..tiles-1
  const int words = (tiles + 31) / 32;

  // 1. Tile bitmaps for this (query tile, head).
  for (int base = warp * 32; base < tiles; base += Traits::kWarps * 32) {
    const int t = base + lane;
    bool vis = false, full = false;
    if (t < tiles) classify_tile(p, mode, hq, q0, q_last, t * BN, BN, vis, full);
    const uint32_t vb = __ballot_sync(0xffffffffu, vis), fb = __ballot_sync(0xffffffffu, full);
    if (lane == 0) {
      visit_bits[base / 32] = vb;
      full_bits[base / 32] = fb;
    }
  }
  __syncthreads();
  auto next_tile = [&](int from) -> int {
    int w = from >> 5;
    if (w >= words) return -1;
    uint32_t bits = visit_bits[w] & (0xffffffffu << (from & 31));
    while (bits == 0) {
      if (++w >= words) return -1;
      bits = visit_bits[w];
    }
    return w * 32 + __ffs(bits) - 1;
  };

  const __nv_bfloat16* q_base = p.q + int64_t(hq) * p.q_head;
  const __nv_bfloat16* k_base = p.k + int64_t(hk) * p.k_head;
  const __nv_bfloat16* v_base = p.v + int64_t(hk) * p.v_head;
  auto load_rows = [&](__nv_bfloat16* dst, const __nv_bfloat16* src, int64_t tok_stride, int row0,
                       int rows) {
    for (int i = tid; i < rows * CH; i += NT) {
      const int r = i / CH, c = i % CH, tok = row0 + r;
      const bool ok = tok < p.n;
      cp_async16(dst + swz(r, c, CH), src + int64_t(ok ? tok : 0) * tok_stride + c * 8, ok ? 16 : 0);
    }
  };

  int cur = next_tile(0);
  load_rows(sQ, q_base, p.q_tok, q0, BM);
  if (cur >= 0) {
    load_rows(sK, k_base, p.k_tok, cur * BN, BN);
    load_rows(sV, v_base, p.v_tok, cur * BN, BN);
  }
  cp_async_commit();

  uint32_t qf[D / 16][4];
  float o[D / 8][4];
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  const int g = lane / 4, t4 = lane % 4;
  const int r0 = q0 + warp * 16 + g;  // this thread's rows: r0 and r0 + 8
  bool q_ready = false;
  int buf = 0;

  while (cur >= 0) {
    const int nxt = next_tile(cur + 1);
    if (nxt >= 0) {
      load_rows(sK + (buf ^ 1) * Traits::kKvElems, k_base, p.k_tok, nxt * BN, BN);
      load_rows(sV + (buf ^ 1) * Traits::kKvElems, v_base, p.v_tok, nxt * BN, BN);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (!q_ready) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) load_a_frag(qf[kk], sQ, CH, warp * 16, kk * 16, lane);
      q_ready = true;
    }
    const __nv_bfloat16* Ks = sK + buf * Traits::kKvElems;
    const __nv_bfloat16* Vs = sV + buf * Traits::kKvElems;
    const int k0 = cur * BN;

    // S = Q K^T for this warp's 16 rows x BN keys.
    float s[BN / 8][4];
#pragma unroll
    for (int i = 0; i < BN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int nb = 0; nb < BN / 16; ++nb) {
        uint32_t b[4];
        load_b_frag_nk(b, Ks, CH, nb * 16, kk * 16, lane);
        mma_bf16_16816(s[2 * nb], qf[kk], b[0], b[1]);
        mma_bf16_16816(s[2 * nb + 1], qf[kk], b[2], b[3]);
      }
    }
    const bool full = (full_bits[cur >> 5] >> (cur & 31)) & 1u;
#pragma unroll
    for (int nb = 0; nb < BN / 8; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[nb][e] * p.scale_log2;
        if (!full) {
          const int row = r0 + (e >> 1) * 8, col = k0 + nb * 8 + 2 * t4 + (e & 1);
          if (!key_allowed(p, mode, hq, row, col)) x = -INFINITY;
        }
        s[nb][e] = x;
      }
    }
    // Online softmax (base 2): rows h = 0 (r0) and h = 1 (r0 + 8), reduced over the lane quad.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = row_max[h];
#pragma unroll
      for (int nb = 0; nb < BN / 8; ++nb) mx = fmaxf(mx, fmaxf(s[nb][2 * h], s[nb][2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_use = mx == -INFINITY ? 0.f : mx;  // fully masked so far: keep zeros
      const float corr = exp2f(row_max[h] - m_use);
      row_max[h] = mx;
      row_sum[h] *= corr;
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        o[i][2 * h] *= corr;
        o[i][2 * h + 1] *= corr;
      }
#pragma unroll
      for (int nb = 0; nb < BN / 8; ++nb) {
        const float p0 = exp2f(s[nb][2 * h] - m_use), p1 = exp2f(s[nb][2 * h + 1] - m_use);
        s[nb][2 * h] = p0;
        s[nb][2 * h + 1] = p1;
        row_sum[h] += p0 + p1;
      }
    }
    // O += P V, P as bf16 A fragments straight from the S accumulators.
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      const uint32_t a[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]),
                             pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                             pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int db = 0; db < D / 16; ++db) {
        uint32_t b[4];
        load_b_frag_kn(b, Vs, CH, kk * 16, db * 16, lane);
        mma_bf16_16816(o[2 * db], a, b[0], b[1]);
        mma_bf16_16816(o[2 * db + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // stage `buf` is refilled by the next iteration's prefetch
    cur = nxt;
    buf ^= 1;
  }
  cp_async_wait<0>();

  // Epilogue: normalise and store rows < n.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float l = row_sum[h];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const int row = r0 + h * 8;
    if (row >= p.n) continue;
    const int64_t base = int64_t(row) * p.o_tok + int64_t(hq) * p.o_head;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      const int col = i * 8 + 2 * t4;
      const float x0 = o[i][2 * h] * inv, x1 = o[i][2 * h + 1] * inv;
      if (p.out_fp32) {
        *reinterpret_cast<float2*>(static_cast<float*>(p.out) + base + col) = make_float2(x0, x1);
      } else {
        *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(p.out) + base + col) =
            __floats2bfloat162_rn(x0, x1);
      }
    }
  }
}

template <int D>
void launch_prefill(const PrefillKernelParams& kp, int work_count, cudaStream_t stream) {
  using Traits = PrefillTraits<D, prefill_warps(D)>;
  const size_t smem = Traits::kTileSmemBytes + 2 * size_t(kp.bitmap_words) * sizeof(uint32_t);
  auto kernel = prefill_attention_kernel<Traits>;
  ELASTIC_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(smem)));
  kernel<<<work_count, Traits::kThreads, smem, stream>>>(kp);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}

int prefill_block_m(int head_dim) { return 16 * prefill_warps(head_dim); }

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
  if (Hq <= 0 || Hkv <= 0 || Hq % Hkv != 0)
    throw Error("prefill attention: num_heads must be a positive multiple of num_kv_heads");
  if (d != 64 && d != 128)
    throw Error("prefill attention: head_dim must be 64 or 128 on CUDA, got " + std::to_string(d));
  const SsaOptions& ssa = shape.opt.ssa;
  if (ssa.block <= 0 || ssa.sink_tokens < 0 || ssa.local_tokens <= 0)
    throw Error("prefill attention: SSA block/sink/local sizes must be positive");

  PrefillAttnPlan plan;
  plan.shape = shape;
  plan.modes.assign(size_t(Hkv), AttnMode::fa);
  if (modes) plan.modes.assign(modes, modes + Hkv);
  const int G = Hq / Hkv;
  const int bm = detail::prefill_block_m(d);
  const int64_t tiles = (shape.n + bm - 1) / bm;

  // Work list, costliest first (keys each item visits), so long FA tiles start early and SSA
  // tiles fill the tail. XA cost is unknown before estimation: counted as FA.
  std::vector<int2> work;
  std::vector<int64_t> cost;
  work.reserve(size_t(tiles * Hq));
  const int64_t ssa_keys = ssa.kept_sink_tokens() + ssa.kept_window_tokens() + bm;
  for (int64_t t = 0; t < tiles; ++t)
    for (int h = 0; h < Hq; ++h) {
      const int64_t causal = std::min<int64_t>((t + 1) * bm, shape.n);
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
    const int64_t g = xa.block / xa.stride;
    if (g != 4 && g != 8 && g != 16)
      throw Error("prefill attention: CUDA XA estimation supports block/stride of 4, 8 or 16, got " +
                  std::to_string(g));
    if (!(xa.threshold > 0.0 && xa.threshold <= 1.0))
      throw Error("prefill attention: XA threshold must be in (0, 1]");
    plan.xa_q_blocks = (shape.n + xa.block - 1) / xa.block;
    if (plan.xa_q_blocks > detail::kXaMaxBlocks)
      throw Error("prefill attention: too many XA blocks (" + std::to_string(plan.xa_q_blocks) +
                  " > " + std::to_string(detail::kXaMaxBlocks) + ")");
    const int64_t rows = plan.xa_q_blocks * g;
    const size_t nb2 = size_t(plan.xa_q_blocks) * size_t(plan.xa_q_blocks);
    plan.xa_heads = arena.alloc_array<int>(xa_heads.size());
    plan.xa_row_stats = arena.alloc_array<float2>(size_t(Hq) * size_t(rows));
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
  kp.xa_stride = int(s.opt.xa.stride);
  kp.xa_threshold = float(s.opt.xa.threshold);
  kp.xa_heads = plan.xa_heads;
  kp.xa_row_stats = plan.xa_row_stats;
  kp.xa_block_scores = plan.xa_block_scores;
  const int64_t tiles = (s.n + 63) / 64;  // key tiles of kBlockN = 64
  kp.bitmap_words = int((tiles + 31) / 32);
  return kp;
}

void prefill_attention_run(const PrefillAttnPlan& plan, const PrefillAttnParams& p,
                           cudaStream_t stream) {
  const detail::PrefillKernelParams kp = detail::make_kernel_params(plan, p);
  if (plan.xa_head_count > 0) detail::launch_xa_estimate(kp, plan.xa_head_count, stream);
  if (plan.shape.head_dim == 64)
    detail::launch_prefill<64>(kp, plan.work_count, stream);
  else
    detail::launch_prefill<128>(kp, plan.work_count, stream);
}

void xa_estimate_run(const PrefillAttnPlan& plan, const PrefillAttnParams& p, cudaStream_t stream) {
  if (plan.xa_head_count == 0) return;
  const detail::PrefillKernelParams kp = detail::make_kernel_params(plan, p);
  detail::launch_xa_estimate(kp, plan.xa_head_count, stream);
}

}  // namespace elastic::cuda
