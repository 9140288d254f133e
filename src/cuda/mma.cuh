// Warp-level tensor-core helpers (sm_80+): cp.async tile loads, ldmatrix, mma.sync m16n8k16 bf16
// with fp32 accumulators, and the XOR swizzle used by every shared-memory tile.
//
// Fragment layouts (PTX ISA, m16n8k16, g = lane / 4, t = lane % 4):
//   A 16x16 row-major: a[0] = (g, 2t..2t+1), a[1] = (g+8, 2t..), a[2] = (g, 2t+8..), a[3] = (g+8, 2t+8..)
//   B 16x8 "col":      b[0] = (k 2t..2t+1, n g), b[1] = (k 2t+8.., n g)
//   C 16x8 fp32:       c[0..1] = (g, 2t..2t+1), c[2..3] = (g+8, 2t..2t+1)
// Tiles in shared memory are rows of D bf16 (D/8 chunks of 16 bytes); chunk c of row r is stored
// at chunk c ^ (r % 8), so the 8 row addresses of one ldmatrix hit 8 distinct bank groups. Rows
// of fewer than 8 chunks (d = 16, 32) XOR with r % chunks, which stays inside the row.
#pragma once

#include <cuda_bf16.h>
#include <cstdint>

namespace elastic::cuda::detail {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Element offset of (row, column col8 * 8) in a swizzled tile with `chunks` (a power of two)
// 16-byte chunks per row.
__device__ __forceinline__ int swz(int row, int col8, int chunks) {
  return row * chunks * 8 + ((col8 ^ (row & (chunks < 8 ? chunks - 1 : 7))) << 3);
}

// 16-byte async copy global -> shared; bytes beyond `src_bytes` (0 or 16) are zero-filled.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
}

// c += a * b, bf16 operands, fp32 accumulate.
__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// Loads a 16-row x 16-column A fragment from a swizzled tile (rows row0.., columns col0..).
__device__ __forceinline__ void load_a_frag(uint32_t (&a)[4], const __nv_bfloat16* tile, int chunks,
                                            int row0, int col0, int lane) {
  const int row = row0 + (lane & 15);
  const int col8 = (col0 >> 3) + (lane >> 4);
  ldmatrix_x4(a, tile + swz(row, col8, chunks));
}

// B fragments for two n8 blocks (rows n0..n0+15 of a [n][k] tile) over k0..k0+15:
// b[0], b[1] for rows n0..n0+7 and b[2], b[3] for rows n0+8..n0+15.
__device__ __forceinline__ void load_b_frag_nk(uint32_t (&b)[4], const __nv_bfloat16* tile,
                                               int chunks, int n0, int k0, int lane) {
  const int row = n0 + (lane & 7) + ((lane >> 4) << 3);
  const int col8 = (k0 >> 3) + ((lane >> 3) & 1);
  ldmatrix_x4(b, tile + swz(row, col8, chunks));
}

// B fragments for two n8 blocks (columns n0..n0+15 of a [k][n] tile) over k rows k0..k0+15.
__device__ __forceinline__ void load_b_frag_kn(uint32_t (&b)[4], const __nv_bfloat16* tile,
                                               int chunks, int k0, int n0, int lane) {
  const int row = k0 + (lane & 7) + (((lane >> 3) & 1) << 3);
  const int col8 = (n0 >> 3) + (lane >> 4);
  ldmatrix_x4_trans(b, tile + swz(row, col8, chunks));
}

// acc[mi] += Q K^T for a warp's MI blocks of 16 query rows (tile rows row0 + 16 mi..) against the
// BN keys of a [BN][D] tile, over D columns; each K fragment feeds MI MMAs. acc[mi][nb]: the C
// fragment of key block nb.
template <int MI, int BN, int D>
__device__ __forceinline__ void warp_qk_mma(float (&acc)[MI][BN / 8][4], const __nv_bfloat16* q,
                                            const __nv_bfloat16* k, int chunks, int row0, int lane) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t a[MI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) load_a_frag(a[mi], q, chunks, row0 + 16 * mi, kk * 16, lane);
#pragma unroll
    for (int nb = 0; nb < BN / 16; ++nb) {
      uint32_t b[4];
      load_b_frag_nk(b, k, chunks, nb * 16, kk * 16, lane);
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        mma_bf16_16816(acc[mi][2 * nb], a[mi], b[0], b[1]);
        mma_bf16_16816(acc[mi][2 * nb + 1], a[mi], b[2], b[3]);
      }
    }
  }
}

}  // namespace elastic::cuda::detail
