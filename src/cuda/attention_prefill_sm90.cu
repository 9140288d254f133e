// Fused hybrid prefill attention, Hopper path: S = Q K^T on wgmma (sm_90a), P V on mma.sync.
//
// Same work decomposition, tile bitmaps, mask policy, online softmax and chunked-prefill
// positions (query row i at pos0 + i, keys by position) as the mma.sync kernel
// (attention_prefill.cu); what changes is the QK^T product: one warpgroup (4 warps) issues
// wgmma.m64n64k16 with both operands read by the tensor cores straight from shared memory
// (no ldmatrix, no fragment registers), two m64 row blocks per CTA (128 query rows).
// Shared-memory layouts: Q and K tiles are [D/64][rows][64] bf16, 128-byte rows with the
// 128-byte swizzle (16-byte chunk c of row r at chunk c ^ (r % 8)), each 8-row group 1024 bytes,
// tiles 1024-byte aligned: the canonical K-major SW128 layout of the wgmma descriptors (stride
// byte offset 1024; a k16 step advances the start address by 32 bytes inside the 128-byte row).
// V keeps the ldmatrix.trans layout of the mma.sync kernel. Writes by cp.async are made visible
// to the tensor cores' async proxy with fence.proxy.async before the barrier.
// Accumulator layout of wgmma m64nN (per warp w of the warpgroup: rows 16w..16w+15): register
// 4*nb + 2*r + c holds (row g + 8r, column 8nb + 2t + c), g = lane/4, t = lane%4 — the m16n8 C
// layout of mma.sync, so P feeds mma.sync A fragments directly.
#include <cmath>

#include "elastic/cuda/cuda_check.h"
#include "elastic/error.h"
#include "mma.cuh"
#include "prefill_common.cuh"
#include "prefill_internal.h"

namespace elastic::cuda::detail {

template <int D, int Joint>
struct WgmmaPrefillTraits {
  static constexpr int kHeadDim = D;
  static constexpr int kThreads = 128;  // one warpgroup
  static constexpr int kRowBlocks = 2;  // m64 blocks per CTA
  // m64 blocks whose S tiles are live at once: 2 = each V fragment feeds two MMAs (fewer
  // shared-memory reads, more registers); 1 = the blocks run one after the other.
  static constexpr int kJoint = Joint;
  static constexpr int kBlockM = 64 * kRowBlocks;
  static constexpr int kBlockN = 64;
  static constexpr int kHalves = D / 64;  // 128-byte K-major atoms along d
  static constexpr int kQElems = kBlockM * D;
  static constexpr int kKElems = kBlockN * D;
  static constexpr int kVElems = kBlockN * D;
  // 1024 bytes of alignment slack + Q + two stages of K and V.
  static constexpr size_t kTileSmemBytes =
      1024 + size_t(kQElems + 2 * kKElems + 2 * kVElems) * sizeof(__nv_bfloat16);
  static_assert(D == 64 || D == 128, "head_dim 64 or 128");
  static_assert(kRowBlocks % kJoint == 0, "row blocks split evenly into joint groups");
  static_assert((kQElems * 2) % 1024 == 0 && (kKElems * 2) % 1024 == 0, "SW128 atoms stay aligned");
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ELASTIC_HAVE_WGMMA 1
#endif

#ifdef ELASTIC_HAVE_WGMMA
__device__ __forceinline__ uint64_t desc_sw128(const void* smem) {
  const uint32_t addr = smem_addr(smem);
  uint64_t desc = uint64_t((addr & 0x3FFFF) >> 4);  // start address
  desc |= uint64_t(1) << 16;                        // leading byte offset (unused for SW128 K-major)
  desc |= uint64_t(1024 >> 4) << 32;                // stride byte offset: 8 rows x 128 bytes
  desc |= uint64_t(1) << 62;                        // 128-byte swizzle
  return desc;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_wait_all() {
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}

// d[32] (+)= A[64x16] * B[16x64]^T, both K-major in shared memory.
__device__ __forceinline__ void wgmma_m64n64k16(float (&d)[32], uint64_t desc_a, uint64_t desc_b,
                                                int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "%32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}
#endif

template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads)
    prefill_attention_wgmma_kernel(const PrefillKernelParams p) {
#ifdef ELASTIC_HAVE_WGMMA
  constexpr int D = Traits::kHeadDim, BM = Traits::kBlockM, BN = Traits::kBlockN;
  constexpr int MI = Traits::kRowBlocks, MJ = Traits::kJoint, CH = D / 8;
  constexpr int NT = Traits::kThreads;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* base = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(base);
  __nv_bfloat16* sK = sQ + Traits::kQElems;       // 2 stages, wgmma layout
  __nv_bfloat16* sV = sK + 2 * Traits::kKElems;   // 2 stages, ldmatrix layout
  uint32_t* visit_bits = reinterpret_cast<uint32_t*>(sV + 2 * Traits::kVElems);
  uint32_t* full_bits = visit_bits + p.bitmap_words;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int2 item = p.work[blockIdx.x];
  const int q_tile = item.x, hq = item.y, hk = hq / p.group;
  const int mode = p.modes[hk];
  const int q0 = q_tile * BM;                // first query row of the tile
  const int q_last = min(q0 + BM, p.n) - 1;  // last valid query row
  const int pos_first = p.pos0 + q0, pos_last = p.pos0 + q_last;
  const int tiles = pos_last / 64 + 1;
  const int words = (tiles + 31) / 32;

  for (int b = warp * 32; b < tiles; b += 4 * 32) {
    const int t = b + lane;
    bool vis = false, full = false;
    if (t < tiles) classify_tile(p, mode, hq, pos_first, pos_last, t * 64, vis, full);
    const uint32_t vb = __ballot_sync(0xffffffffu, vis), fb = __ballot_sync(0xffffffffu, full);
    if (lane == 0) {
      visit_bits[b / 32] = vb;
      full_bits[b / 32] = fb;
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
  // [HALVES][rows][64] SW128 layout; rows >= limit zero-filled.
  auto load_kmajor = [&](__nv_bfloat16* dst, const __nv_bfloat16* src, int64_t tok_stride, int row0,
                         int rows, int limit) {
    for (int i = tid; i < rows * CH; i += NT) {
      const int r = i / CH, c = i % CH, tok = row0 + r;
      const bool ok = tok < limit;
      __nv_bfloat16* d = dst + (c / 8) * rows * 64 + swz(r, c % 8, 8);
      cp_async16(d, src + int64_t(ok ? tok : 0) * tok_stride + c * 8, ok ? 16 : 0);
    }
  };
  auto load_v = [&](__nv_bfloat16* dst, int row0) {
    for (int i = tid; i < BN * CH; i += NT) {
      const int r = i / CH, c = i % CH, tok = row0 + r;
      const bool ok = tok < p.n_keys;
      cp_async16(dst + swz(r, c, CH), v_base + int64_t(ok ? tok : 0) * p.v_tok + c * 8, ok ? 16 : 0);
    }
  };

  int cur = next_tile(0);
  load_kmajor(sQ, q_base, p.q_tok, q0, BM, p.n);
  if (cur >= 0) {
    load_kmajor(sK, k_base, p.k_tok, cur * BN, BN, p.n_keys);
    load_v(sV, cur * BN);
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
  const int r0 = q0 + 16 * warp + g;  // rows r0 + 64 mi + 8 h
  int buf = 0;

  while (cur >= 0) {
    const int nxt = next_tile(cur + 1);
    if (nxt >= 0) {
      load_kmajor(sK + (buf ^ 1) * Traits::kKElems, k_base, p.k_tok, nxt * BN, BN, p.n_keys);
      load_v(sV + (buf ^ 1) * Traits::kVElems, nxt * BN);
    }
    cp_async_commit();
    cp_async_wait<1>();
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    const __nv_bfloat16* Ks = sK + buf * Traits::kKElems;
    const __nv_bfloat16* Vs = sV + buf * Traits::kVElems;
    const int k0 = cur * BN;

    const bool full = (full_bits[cur >> 5] >> (cur & 31)) & 1u;
#pragma unroll
    for (int part = 0; part < MI / MJ; ++part) {
      float s[MJ][32];
#pragma unroll
      for (int j = 0; j < MJ; ++j)
#pragma unroll
        for (int i = 0; i < 32; ++i) s[j][i] = 0.f;
      wgmma_fence();
#pragma unroll
      for (int j = 0; j < MJ; ++j)
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          const int mi = part * MJ + j;
          const __nv_bfloat16* qa = sQ + (kk / 4) * BM * 64 + mi * 64 * 64 + (kk % 4) * 16;
          const __nv_bfloat16* kb = Ks + (kk / 4) * BN * 64 + (kk % 4) * 16;
          wgmma_m64n64k16(s[j], desc_sw128(qa), desc_sw128(kb), kk > 0 ? 1 : 0);
        }
      wgmma_commit();
      wgmma_wait_all();
      // Keep every accumulator read after the wait (the asm above does not name them).
#pragma unroll
      for (int j = 0; j < MJ; ++j)
#pragma unroll
        for (int i = 0; i < 32; ++i) asm volatile("" : "+f"(s[j][i])::"memory");

      if (!full) {
#pragma unroll
        for (int j = 0; j < MJ; ++j)
#pragma unroll
          for (int h = 0; h < 2; ++h)
            mask_score_row<BN>(p, mode, hq, r0 + 64 * (part * MJ + j) + 8 * h, h, k0, t4,
                               [&](int nb, int c) -> float& { return s[j][4 * nb + c]; });
      }
#pragma unroll
      for (int j = 0; j < MJ; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int mi = part * MJ + j;
          online_softmax_row<BN, D>([&](int nb, int c) -> float& { return s[j][4 * nb + c]; }, h,
                                    p.scale_log2, row_max[mi][h], row_sum[mi][h], o[mi]);
        }
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        uint32_t a[MJ][4];
#pragma unroll
        for (int j = 0; j < MJ; ++j)
          p_a_fragment(a[j], [&](int nb, int c) -> float& { return s[j][4 * nb + c]; }, kk);
#pragma unroll
        for (int db = 0; db < D / 16; ++db) {
          uint32_t b[4];
          load_b_frag_kn(b, Vs, CH, kk * 16, db * 16, lane);
#pragma unroll
          for (int j = 0; j < MJ; ++j) {
            mma_bf16_16816(o[part * MJ + j][2 * db], a[j], b[0], b[1]);
            mma_bf16_16816(o[part * MJ + j][2 * db + 1], a[j], b[2], b[3]);
          }
        }
      }
    }
    __syncthreads();
    cur = nxt;
    buf ^= 1;
  }
  cp_async_wait<0>();

  store_output_rows<MI, D>(p, hq, r0, 64, t4, row_sum, o);  // normalised, rows < n
#else
  __trap();  // built without sm_90a: the host never selects this kernel then
#endif
}

template <int D, int Joint>
void launch_prefill_wgmma_d(const PrefillKernelParams& kp, int work_count, cudaStream_t stream) {
  using Traits = WgmmaPrefillTraits<D, Joint>;
  launch_prefill_kernel(prefill_attention_wgmma_kernel<Traits>, kp, work_count, Traits::kThreads,
                        Traits::kTileSmemBytes, stream);
}

void launch_prefill_wgmma(const PrefillKernelParams& kp, int work_count, cudaStream_t stream,
                          bool joint) {
  if (kp.head_dim == 64)
    launch_prefill_wgmma_d<64, 2>(kp, work_count, stream);  // no spills with both blocks live
  else if (joint)
    launch_prefill_wgmma_d<128, 2>(kp, work_count, stream);
  else
    launch_prefill_wgmma_d<128, 1>(kp, work_count, stream);
}

bool device_has_wgmma() {
  int dev = 0, major = 0, minor = 0;
  ELASTIC_CUDA_CHECK(cudaGetDevice(&dev));
  ELASTIC_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  ELASTIC_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  return major == 9 && minor == 0;
}

}  // namespace elastic::cuda::detail

namespace elastic::cuda::detail {

bool wgmma_kernel_available() {
  if (!device_has_wgmma()) return false;
  cudaFuncAttributes attr{};
  ELASTIC_CUDA_CHECK(
      cudaFuncGetAttributes(&attr, prefill_attention_wgmma_kernel<WgmmaPrefillTraits<128, 1>>));
  return attr.binaryVersion >= 90;  // 80 when only the sm_80 machine code is in the build
}

}  // namespace elastic::cuda::detail
