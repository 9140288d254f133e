// Split-KV decode attention for one query token (SPEC §4).
//
// Key set of a KV head at query position pos (the new key already in the cache): FA/XA heads all
// positions 0..pos from the full cache; SSA heads the block rule, [0, min(S*B, pos+1)) then
// [max(S*B, (pos/B - W + 1) * B), pos], each position read from its ring row. The key list of a
// head is cut into splits of `keys_per_split`; a CTA (4 warps) handles one (split, KV head) for
// all G query heads of that KV head: each warp walks keys 32 / (d / 8) at a time, d / 8 lanes
// per key with 16-byte loads of 8 bf16 of K and V each, the next step's loads issued before the
// current step is used, keeping an fp32 online softmax per query head and lane group; the lane
// groups, the warps and then the splits are merged by max/sum rescaling (second kernel).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "decode_common.cuh"
#include "elastic/cuda/attention_cuda.h"
#include "elastic/cuda/cuda_check.h"
#include "elastic/error.h"

namespace elastic::cuda {
namespace detail {

constexpr int kDecodeWarps = 4;
constexpr int kDecodeMaxGroup = 8;
constexpr int kDecodeMaxSplits = 256;
constexpr int kDecodeKeysPerSplit = 256;     // sizes the split partials of a plan
constexpr int kDecodeMinKeysPerSplit = 128;  // a CTA's smallest share (short contexts)

struct DecodeKernelParams {
  const __nv_bfloat16* q;  // [Hq, d]
  void* out;               // [Hq, d]
  int out_fp32;
  const uint8_t* modes;       // [Hkv]
  const DeviceKvHead* heads;  // [Hkv]
  float2* part_stats;         // [Hq, max_splits]
  float* part_acc;            // [Hq, max_splits, d]
  int max_splits, splits, keys_per_split;
  int group;
  int64_t pos;
  float scale_log2;
  int64_t ssa_sink_end;  // S * B
  int64_t ssa_block;
  int64_t ssa_local_blocks;
};

// 8 bf16 (one 16-byte load) widened to fp32.
__device__ __forceinline__ void load8(float (&x)[8], const __nv_bfloat16* src) {
  const uint4 raw = *reinterpret_cast<const uint4*>(src);
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    x[2 * i] = __uint_as_float(w[i] << 16);              // low bf16: element 2i
    x[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);  // high bf16: element 2i + 1
  }
}

// MG: the largest GQA group the instance serves (registers scale with it: G <= MG).
template <int D, int MG>
__global__ void __launch_bounds__(32 * kDecodeWarps)
    decode_split_kernel(const DecodeKernelParams p) {
  // A key is read by kLK lanes, 8 elements (16 bytes of K and of V) each, so a warp reads kKW keys
  // per step; the next step's K and V are loaded before the current step is used (two steps of
  // loads in flight per warp). Each group of kLK lanes keeps its own online softmax; groups,
  // warps and then splits are merged by max/sum rescaling.
  constexpr int kLK = D / 8;
  constexpr int kKW = 32 / kLK;
  __shared__ __align__(16) float sq[MG][D];
  __shared__ float wacc[kDecodeWarps][MG][D];
  __shared__ float wstat[kDecodeWarps][MG][2];
  const int split = blockIdx.x, hk = blockIdx.y;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int grp = lane / kLK, sub = lane % kLK;
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

  // Row of the vk-th key of the head's key list.
  auto row_of = [&](int64_t vk) {
    const int64_t kpos = vk < len1 ? vk : start2 + (vk - len1);
    return (!head.ring || kpos < head.sink_tokens)
               ? kpos
               : head.sink_tokens + (kpos - head.sink_tokens) % head.window_tokens;
  };
  float kv[8], vv[8];
  auto load_step = [&](int64_t base) {
    const int64_t vk = base + grp;
    if (vk < k_end) {
      const int64_t off = row_of(vk) * D + sub * 8;
      load8(kv, head.k + off);
      load8(vv, head.v + off);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) kv[e] = vv[e] = 0.f;
    }
  };

  float m[MG], l[MG], acc[MG][8];
  decode_state_init(m, l, acc);
  constexpr int kStep = kDecodeWarps * kKW;  // keys per step of the whole CTA
  int64_t base = k_begin + int64_t(warp) * kKW;
  if (base < k_end) load_step(base);
  for (; base < k_end; base += kStep) {
    float kc[8], vc[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      kc[e] = kv[e];
      vc[e] = vv[e];
    }
    if (base + kStep < k_end) load_step(base + kStep);  // next step's loads in flight
    const bool valid = base + grp < k_end;              // the same for the kLK lanes of a group
    decode_key_step<D, MG>(sq, G, sub, kc, vc, valid, p.scale_log2, m, l, acc);
  }
  decode_cta_reduce<D, MG, kDecodeWarps>(G, m, l, acc, wacc, wstat);
  // Merge the warps: thread -> (query head h, element c).
  for (int i = tid; i < G * D; i += blockDim.x) {
    const int h = i / D, c = i % D;
    float a;
    const float2 st = decode_warps_merge<D, MG, kDecodeWarps>(wacc, wstat, h, c, a);
    const int hq = hk * G + h;
    p.part_acc[(int64_t(hq) * p.max_splits + split) * D + c] = a;
    if (c == 0) p.part_stats[int64_t(hq) * p.max_splits + split] = st;
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
  if (kp.group <= 2)
    decode_split_kernel<D, 2><<<grid, 32 * kDecodeWarps, 0, stream>>>(kp);
  else if (kp.group <= 4)
    decode_split_kernel<D, 4><<<grid, 32 * kDecodeWarps, 0, stream>>>(kp);
  else
    decode_split_kernel<D, kDecodeMaxGroup><<<grid, 32 * kDecodeWarps, 0, stream>>>(kp);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
  decode_merge_kernel<D><<<num_heads, D, 0, stream>>>(kp);
  ELASTIC_CUDA_CHECK(cudaGetLastError());
}

// Keys an SSA head attends at position pos (the kernel's len1 + len2).
int64_t ssa_decode_keys(const SsaOptions& o, int64_t pos) {
  const int64_t sink_end = o.kept_sink_tokens();
  const int64_t len1 = std::min(sink_end, pos + 1);
  const int64_t start2 = std::max(sink_end, (pos / o.block - o.local_blocks() + 1) * o.block);
  return len1 + std::max<int64_t>(0, pos + 1 - start2);
}

// CTAs of the split kernel that run at once on the device (occupancy x SMs), per instance.
template <int D, int MG>
int ctas_per_wave() {
  static const int n = [] {
    int device = 0, sms = 0, per_sm = 0;
    ELASTIC_CUDA_CHECK(cudaGetDevice(&device));
    ELASTIC_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    ELASTIC_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, decode_split_kernel<D, MG>, 32 * kDecodeWarps, 0));
    return std::max(1, sms * per_sm);
  }();
  return n;
}

template <int D>
int ctas_per_wave_for_group(int group) {
  if (group <= 2) return ctas_per_wave<D, 2>();
  if (group <= 4) return ctas_per_wave<D, 4>();
  return ctas_per_wave<D, kDecodeMaxGroup>();
}

int decode_ctas_per_wave(int head_dim, int group) {
  switch (head_dim) {
    case 16:
      return ctas_per_wave_for_group<16>(group);
    case 32:
      return ctas_per_wave_for_group<32>(group);
    case 64:
      return ctas_per_wave_for_group<64>(group);
    default:
      return ctas_per_wave_for_group<128>(group);
  }
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
    throw Error("decode attention: head_dim must be 16, 32, 64 or 128 on CUDA, got " +
                std::to_string(d));
  if (shape.max_positions <= 0) throw Error("decode attention: max_positions must be positive");
}

// Split partials of the plan, from the arena.
void alloc_partials(DecodeAttnPlan& plan, DeviceArena& arena) {
  const DecodeAttnShape& s = plan.shape;
  const int64_t need =
      (s.max_positions + detail::kDecodeKeysPerSplit - 1) / detail::kDecodeKeysPerSplit;
  plan.max_splits = int(std::min<int64_t>(need, detail::kDecodeMaxSplits));
  plan.part_stats = arena.alloc_array<float2>(size_t(s.num_heads) * size_t(plan.max_splits));
  plan.part_acc =
      arena.alloc_array<float>(size_t(s.num_heads) * size_t(plan.max_splits) * size_t(s.head_dim));
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
    if (!heads[h].k || !heads[h].v)
      throw Error("decode attention: KV head " + std::to_string(h) + " has no cache");
    if (reinterpret_cast<uintptr_t>(heads[h].k) % 16 ||
        reinterpret_cast<uintptr_t>(heads[h].v) % 16)
      throw Error("decode attention: KV head " + std::to_string(h) + " is not 16-byte aligned");
    if (heads[h].ring && heads[h].window_tokens <= 0)
      throw Error("decode attention: ring KV head " + std::to_string(h) +
                  " needs window_tokens > 0");
    if (heads[h].ring && plan.modes[size_t(h)] != AttnMode::ssa)
      throw Error("decode attention: KV head " + std::to_string(h) +
                  " is a ring buffer but not SSA");
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
  kp.group = s.num_heads / s.num_kv_heads;
  // Split size: the keys of all heads (SSA heads attend fewer) spread over one wave of CTAs,
  // each split at least kDecodeMinKeysPerSplit keys and at most max_splits splits per head.
  // (Fixed 256-key splits left 1.95 waves at 32K: the partial wave cost up to half the time.)
  const int64_t keys = p.pos + 1;  // FA heads see the most keys
  int64_t total_keys = 0;
  for (int h = 0; h < s.num_kv_heads; ++h)
    total_keys +=
        plan.modes[size_t(h)] == AttnMode::ssa ? detail::ssa_decode_keys(s.ssa, p.pos) : keys;
  const int64_t wave = int64_t(detail::decode_ctas_per_wave(s.head_dim, kp.group));
  int64_t per_split =
      std::max<int64_t>(detail::kDecodeMinKeysPerSplit, (total_keys + wave - 1) / wave);
  per_split = std::max<int64_t>(per_split, (keys + plan.max_splits - 1) / plan.max_splits);
  kp.keys_per_split = int(per_split);
  kp.splits = int((keys + per_split - 1) / per_split);
  kp.pos = p.pos;
  const float scale = p.scale != 0.f ? p.scale : 1.0f / std::sqrt(float(s.head_dim));
  kp.scale_log2 = scale * 1.4426950408889634f;
  kp.ssa_sink_end = s.ssa.kept_sink_tokens();
  kp.ssa_block = s.ssa.block;
  kp.ssa_local_blocks = s.ssa.local_blocks();
  const dim3 grid(kp.splits, s.num_kv_heads);
  switch (s.head_dim) {
    case 16:
      detail::decode_launch<16>(kp, grid, s.num_heads, stream);
      break;
    case 32:
      detail::decode_launch<32>(kp, grid, s.num_heads, stream);
      break;
    case 64:
      detail::decode_launch<64>(kp, grid, s.num_heads, stream);
      break;
    default:
      detail::decode_launch<128>(kp, grid, s.num_heads, stream);
      break;
  }
}

}  // namespace elastic::cuda
