// The key step shared by the split-KV decode kernels (attention_decode.cu: one sequence;
// attention_paged.cu: many, through page tables).
#pragma once

namespace elastic::cuda::detail {

// One key step of a warp: the warp's lanes hold 32 / (D / 8) keys, D / 8 lanes per key, 8
// elements of K (kc) and V (vc) per lane. For each of the G <= MG query heads (sq: bf16-rounded
// queries in shared memory), the score of the lane's key (the D / 8 lanes' partial dots summed by
// shuffles; every lane runs the shuffles, so `valid` only gates the update), then the fp32 online
// softmax update of the head's running max m, sum l and accumulator acc in base 2.
template <int D, int MG>
__device__ __forceinline__ void decode_key_step(const float (&sq)[MG][D], int G, int sub,
                                                const float (&kc)[8], const float (&vc)[8],
                                                bool valid, float scale_log2, float (&m)[MG],
                                                float (&l)[MG], float (&acc)[MG][8]) {
  constexpr int kLK = D / 8;  // lanes per key
#pragma unroll
  for (int h = 0; h < MG; ++h) {
    if (h >= G) break;
    const float4 q0 = *reinterpret_cast<const float4*>(&sq[h][sub * 8]);
    const float4 q1 = *reinterpret_cast<const float4*>(&sq[h][sub * 8 + 4]);
    float dot = q0.x * kc[0] + q0.y * kc[1] + q0.z * kc[2] + q0.w * kc[3] + q1.x * kc[4] +
                q1.y * kc[5] + q1.z * kc[6] + q1.w * kc[7];
#pragma unroll
    for (int off = kLK / 2; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
    if (valid) {
      const float x = dot * scale_log2;
      const float m_new = fmaxf(m[h], x);
      const float corr = exp2f(m[h] - m_new), w = exp2f(x - m_new);
      l[h] = l[h] * corr + w;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[h][e] = acc[h][e] * corr + w * vc[e];
      m[h] = m_new;
    }
  }
}

// The empty online-softmax state of a lane group: max -inf, sum 0, accumulator 0.
template <int MG>
__device__ __forceinline__ void decode_state_init(float (&m)[MG], float (&l)[MG],
                                                  float (&acc)[MG][8]) {
#pragma unroll
  for (int h = 0; h < MG; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[h][e] = 0.f;
  }
}

// The end of a split-KV decode CTA of kWarps warps, part 1: the D / 8-lane groups of each warp
// merge by shuffles (lanes with the same `sub` hold the same elements) into wacc[warp][h][:] and
// wstat[warp][h] = (max, sum), then a barrier.
template <int D, int MG, int kWarps>
__device__ __forceinline__ void decode_cta_reduce(int G, const float (&m)[MG], const float (&l)[MG],
                                                  float (&acc)[MG][8], float (*wacc)[MG][D],
                                                  float (*wstat)[MG][2]) {
  constexpr int kLK = D / 8;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int grp = lane / kLK, sub = lane % kLK;
#pragma unroll
  for (int h = 0; h < MG; ++h) {
    if (h >= G) break;
    float mm = m[h];
#pragma unroll
    for (int off = kLK; off < 32; off <<= 1) mm = fmaxf(mm, __shfl_xor_sync(0xffffffffu, mm, off));
    const float f = m[h] == -INFINITY ? 0.f : exp2f(m[h] - mm);
    float lh = l[h] * f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[h][e] *= f;
#pragma unroll
    for (int off = kLK; off < 32; off <<= 1) {
      lh += __shfl_xor_sync(0xffffffffu, lh, off);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[h][e] += __shfl_xor_sync(0xffffffffu, acc[h][e], off);
    }
    if (grp == 0)
#pragma unroll
      for (int e = 0; e < 8; ++e) wacc[warp][h][sub * 8 + e] = acc[h][e];
    if (lane == 0) {
      wstat[warp][h][0] = mm;
      wstat[warp][h][1] = lh;
    }
  }
  __syncthreads();
}

// Part 2, for query head h and element c: the warps' partials rescaled to their common max;
// returns (max, sum) and the accumulator of element c in acc_c ((-inf, 0) and 0 when empty).
template <int D, int MG, int kWarps>
__device__ __forceinline__ float2 decode_warps_merge(float (*wacc)[MG][D], float (*wstat)[MG][2],
                                                     int h, int c, float& acc_c) {
  float mm = -INFINITY;
  for (int w = 0; w < kWarps; ++w) mm = fmaxf(mm, wstat[w][h][0]);
  float sum = 0.f;
  acc_c = 0.f;
  if (mm != -INFINITY)
    for (int w = 0; w < kWarps; ++w) {
      const float f = exp2f(wstat[w][h][0] - mm);
      sum += wstat[w][h][1] * f;
      acc_c += wacc[w][h][c] * f;
    }
  return make_float2(mm, sum);
}

}  // namespace elastic::cuda::detail
