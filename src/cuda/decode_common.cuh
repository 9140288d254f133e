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

}  // namespace elastic::cuda::detail
