// Split-KV decode attention for one query token (SPEC §4).
//
// Key set of a KV head at query position pos (the new key already in the cache): FA/XA heads all
// positions 0..pos from the full cache; SSA heads the block rule, [0, min(S*B, pos+1)) then
// [max(S*B, (pos/B - W + 1) * B), pos], each position read from its ring row. The key list of a
// head is cut into splits of `keys_per_split`; a CTA (4 warps) handles one (split, KV head) for
// all G query heads of that KV head: each warp walks keys, one key per iteration with lanes
// holding max(d/32, 1) contiguous elements (d = 16: lanes 16..31 hold none), keeping an fp32 online softmax per query head; the warps and
// then the splits are merged by max/sum rescaling (second kernel).
#include <algorithm>
#include <cmath>
#include <string>

#include "elastic/cuda/attention_cuda.h"
#include "elastic/cuda/cuda_check.h"
#include "elastic/error.h"

namespace elastic::cuda {
namespace detail {

constexpr int kDecodeWarps = 4;
constexpr int kDecodeMaxGroup = 8;
constexpr int kDecodeMaxSplits = 256;
constexpr int kDecodeKeysPerSplit = 256;

struct DecodeKernelParams {
  const __nv_bfloat16* q;  // [Hq, d]
  void* out;               // [Hq, d]
  int out_fp32;
  const uint8_t* modes;      // [Hkv]
  const DeviceKvHead* heads;  // [Hkv]
  float2* part_stats;        // [Hq, max_splits]
  float* part_acc;           // [Hq, max_splits, d]
  int max_splits, splits, keys_per_split;
  int group;
  int64_t pos;
  float scale_log2;
  int64_t ssa_sink_end;  // S * B
  int64_t ssa_block;
  int64_t ssa_local_blocks;
};

template <int D>
__global__ void __launch_bounds__(32 * kDecodeWarps) decode_split_kernel(const DecodeKernelParams p) {
  constexpr int E = D >= 32 ? D / 32 : 1;  // elements per lane
  constexpr int kLanes = D / E;              // lanes holding elements (32, or 16 at d = 16)
  __shared__ float sq[kDecodeMaxGroup][D];
  __shared__ float wacc[kDecodeWarps][kDecodeMaxGroup][D];
  __shared__ float wstat[kDecodeWarps][kDecodeMaxGroup][2];
  const int split = blockIdx.x, hk = blockIdx.y;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int G = p.group;
  for (int i = tid; i < G * D; i += blockDim.x)
    sq[i / D][i % D] = __bfloat162float(p.q[int64_t(hk * G + i / D) * D + i % D]);
  __syncthreads();

  const DeviceKvHead head = p.heads[hk];
  const bool ssa = p.modes[hk] == uint8_t(AttnMode::ssa);
  int64_t len1 = p.pos + 1, start2 = 0, len2 = 0;
  if (ssa) {
    len1 = min(p.ssa_sink_end, p.pos + 1);
    const int64_t lo = (p.pos / p.ssa_block - p.ssa_local_blocks + 1) * p.ssa_block;
    start2 = max(p.ssa_sink_end, lo);
    len2 = max(int64_t(0), p.pos + 1 - start2);
  }
  const int64_t keys = len1 + len2;
  const int64_t k_begin = int64_t(split) * p.keys_per_split;
  const int64_t k_end = min(keys, k_begin + p.keys_per_split);

  float m[kDecodeMaxGroup], l[kDecodeMaxGroup], acc[kDecodeMaxGroup][E];
#pragma unroll
  for (int h = 0; h < kDecodeMaxGroup; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.f;
#pragma unroll
    for (int e = 0; e < E; ++e) acc[h][e] = 0.f;
  }
  for (int64_t vk = k_begin + warp; vk < k_end; vk += kDecodeWarps) {
    const int64_t kpos = vk < len1 ? vk : start2 + (vk - len1);
    const int64_t row = (!head.ring || kpos < head.sink_tokens)
                            ? kpos
                            : head.sink_tokens + (kpos - head.sink_tokens) % head.window_tokens;
    float kv[E], vv[E];
#pragma unroll
    for (int e = 0; e < E; ++e) {
      kv[e] = lane < kLanes ? __bfloat162float(head.k[row * D + lane * E + e]) : 0.f;
      vv[e] = lane < kLanes ? __bfloat162float(head.v[row * D + lane * E + e]) : 0.f;
    }
#pragma unroll
    for (int h = 0; h < kDecodeMaxGroup; ++h) {
      if (h >= G) break;
      float dot = 0.f;
#pragma unroll
      for (int e = 0; e < E; ++e) dot += lane < kLanes ? sq[h][lane * E + e] * kv[e] : 0.f;
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
      const float x = dot * p.scale_log2;
      const float m_new = fmaxf(m[h], x);
      const float corr = exp2f(m[h] - m_new), w = exp2f(x - m_new);
      l[h] = l[h] * corr + w;
#pragma unroll
      for (int e = 0; e < E; ++e) acc[h][e] = acc[h][e] * corr + w * vv[e];
      m[h] = m_new;
    }
  }
#pragma unroll
  for (int h = 0; h < kDecodeMaxGroup; ++h) {
    if (h >= G) break;
    if (lane < kLanes)
#pragma unroll
      for (int e = 0; e < E; ++e) wacc[warp][h][lane * E + e] = acc[h][e];
    if (lane == 0) {
      wstat[warp][h][0] = m[h];
      wstat[warp][h][1] = l[h];
    }
  }
  __syncthreads();
  // Merge the warps: thread -> (query head h, element c).
  for (int i = tid; i < G * D; i += blockDim.x) {
    const int h = i / D, c = i % D;
    float mm = -INFINITY;
    for (int w = 0; w < kDecodeWarps; ++w) mm = fmaxf(mm, wstat[w][h][0]);
    float sum = 0.f, a = 0.f;
    if (mm != -INFINITY)
      for (int w = 0; w < kDecodeWarps; ++w) {
        const float f = exp2f(wstat[w][h][0] - mm);
        sum += wstat[w][h][1] * f;
        a += wacc[w][h][c] * f;
      }
    const int hq = hk * G + h;
    p.part_acc[(int64_t(hq) * p.max_splits + split) * D + c] = a;
    if (c == 0) p.part_stats[int64_t(hq) * p.max_splits + split] = make_float2(mm, sum);
  }
}

template <int D>
__global__ void __launch_bounds__(D) decode_merge_kernel(const DecodeKernelParams p) {
  const int hq = blockIdx.x, c = threadIdx.x;
  const float2* st = p.part_stats + int64_t(hq) * p.max_splits;
  float mm = -INFINITY;
  for (int s = 0; s < p.splits; ++s) mm = fmaxf(mm, st[s].x);
  float sum = 0.f, a = 0.f;
  if (mm != -INFINITY)
    for (int s = 0; s < p.splits; ++s) {
      const float f = exp2f(st[s].x - mm);
      sum += st[s].y * f;
      a += p.part_acc[(int64_t(hq) * p.max_splits + s) * D + c] * f;
    }
  const float x = sum > 0.f ? a / sum : 0.f;
  if (p.out_fp32)
    static_cast<float*>(p.out)[int64_t(hq) * D + c] = x;
  else
    static_cast<__nv_bfloat16*>(p.out)[int64_t(hq) * D + c] = __float2bfloat16(x);
}

template <int D>
void decode_launch(const DecodeKernelParams& kp, dim3 grid, int num_heads, cudaStream_t stream) {
  decode_split_kernel<D><<<grid, 32 * kDecodeWarps, 0, stream>>>(kp);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
  decode_merge_kernel<D><<<num_heads, D, 0, stream>>>(kp);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}

}  // namespace detail

namespace {

void check_decode_shape(const DecodeAttnShape& shape) {
  const int Hq = shape.num_heads, Hkv = shape.num_kv_heads, d = shape.head_dim;
  if (Hq <= 0 || Hkv <= 0 || Hq % Hkv != 0)
    throw Error("decode attention: num_heads must be a positive multiple of num_kv_heads");
  if (Hq / Hkv > detail::kDecodeMaxGroup)
    throw Error("decode attention: at most " + std::to_string(detail::kDecodeMaxGroup) +
                " query heads per KV head on CUDA, got " + std::to_string(Hq / Hkv));
  if (d != 16 && d != 32 && d != 64 && d != 128)
    throw Error("decode attention: head_dim must be 16, 32, 64 or 128 on CUDA, got " + std::to_string(d));
  if (shape.max_positions <= 0) throw Error("decode attention: max_positions must be positive");
}

// Split partials of the plan, from the arena.
void alloc_partials(DecodeAttnPlan& plan, DeviceArena& arena) {
  const DecodeAttnShape& s = plan.shape;
  const int64_t need = (s.max_positions + detail::kDecodeKeysPerSplit - 1) / detail::kDecodeKeysPerSplit;
  plan.max_splits = int(std::min<int64_t>(need, detail::kDecodeMaxSplits));
  plan.part_stats = arena.alloc_array<float2>(size_t(s.num_heads) * size_t(plan.max_splits));
  plan.part_acc = arena.alloc_array<float>(size_t(s.num_heads) * size_t(plan.max_splits) * size_t(s.head_dim));
}

}  // namespace

DecodeAttnPlan decode_attention_plan(const DecodeAttnShape& shape, const DeviceKvHead* heads,
                                     const AttnMode* modes, DeviceArena& arena,
                                     cudaStream_t stream) {
  check_decode_shape(shape);
  const int Hkv = shape.num_kv_heads;
  DecodeAttnPlan plan;
  plan.shape = shape;
  plan.modes.assign(size_t(Hkv), AttnMode::fa);
  if (modes) plan.modes.assign(modes, modes + Hkv);
  std::vector<uint8_t> modes_u8(static_cast<size_t>(Hkv));
  for (int h = 0; h < Hkv; ++h) {
    modes_u8[size_t(h)] = uint8_t(plan.modes[size_t(h)]);
    if (!heads[h].k || !heads[h].v) throw Error("decode attention: KV head " + std::to_string(h) + " has no cache");
    if (heads[h].ring && heads[h].window_tokens <= 0)
      throw Error("decode attention: ring KV head " + std::to_string(h) + " needs window_tokens > 0");
    if (heads[h].ring && plan.modes[size_t(h)] != AttnMode::ssa)
      throw Error("decode attention: KV head " + std::to_string(h) + " is a ring buffer but not SSA");
  }
  plan.modes_dev = arena.alloc_array<uint8_t>(size_t(Hkv));
  plan.heads = arena.alloc_array<DeviceKvHead>(size_t(Hkv));
  alloc_partials(plan, arena);
  ELASTIC_CUDA_CHECK(cudaMemcpyAsync(plan.modes_dev, modes_u8.data(), modes_u8.size(),
                                     cudaMemcpyHostToDevice, stream));
  ELASTIC_CUDA_CHECK(cudaMemcpyAsync(plan.heads, heads, size_t(Hkv) * sizeof(DeviceKvHead),
                                     cudaMemcpyHostToDevice, stream));
  ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream));  // host copies die here
  return plan;
}

DecodeAttnPlan decode_attention_plan_resident(const DecodeAttnShape& shape, DeviceKvHead* heads_dev,
                                              uint8_t* modes_dev, const AttnMode* modes,
                                              DeviceArena& arena) {
  check_decode_shape(shape);
  ELASTIC_CHECK(heads_dev != nullptr && modes_dev != nullptr && modes != nullptr);
  DecodeAttnPlan plan;
  plan.shape = shape;
  plan.modes.assign(modes, modes + shape.num_kv_heads);
  plan.modes_dev = modes_dev;
  plan.heads = heads_dev;
  alloc_partials(plan, arena);
  return plan;
}

void decode_attention_run(const DecodeAttnPlan& plan, const DecodeAttnParams& p,
                          cudaStream_t stream) {
  const DecodeAttnShape& s = plan.shape;
  if (p.pos < 0 || p.pos >= s.max_positions)
    throw Error("decode attention: pos " + std::to_string(p.pos) + " outside the plan's [0, " +
                std::to_string(s.max_positions) + ")");
  if (!p.q || !p.out) throw Error("decode attention: q and out must be set");
  detail::DecodeKernelParams kp{};
  kp.q = p.q;
  kp.out = p.out;
  kp.out_fp32 = p.out_fp32 ? 1 : 0;
  kp.modes = plan.modes_dev;
  kp.heads = plan.heads;
  kp.part_stats = plan.part_stats;
  kp.part_acc = plan.part_acc;
  kp.max_splits = plan.max_splits;
  const int64_t keys = p.pos + 1;  // FA heads see the most keys
  kp.keys_per_split = detail::kDecodeKeysPerSplit;
  if ((keys + kp.keys_per_split - 1) / kp.keys_per_split > plan.max_splits)
    kp.keys_per_split = int((keys + plan.max_splits - 1) / plan.max_splits);
  kp.splits = int((keys + kp.keys_per_split - 1) / kp.keys_per_split);
  kp.group = s.num_heads / s.num_kv_heads;
  kp.pos = p.pos;
  const float scale = p.scale != 0.f ? p.scale : 1.0f / std::sqrt(float(s.head_dim));
  kp.scale_log2 = scale * 1.4426950408889634f;
  kp.ssa_sink_end = s.ssa.kept_sink_tokens();
  kp.ssa_block = s.ssa.block;
  kp.ssa_local_blocks = s.ssa.local_blocks();
  const dim3 grid(kp.splits, s.num_kv_heads);
  switch (s.head_dim) {
    case 16: detail::decode_launch<16>(kp, grid, s.num_heads, stream); break;
    case 32: detail::decode_launch<32>(kp, grid, s.num_heads, stream); break;
    case 64: detail::decode_launch<64>(kp, grid, s.num_heads, stream); break;
    default: detail::decode_launch<128>(kp, grid, s.num_heads, stream); break;
  }
}

}  // namespace elastic::cuda
