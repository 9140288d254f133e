// CPU-vs-CUDA consistency of attention: the fused hybrid prefill kernel (FA, SSA, XA, hybrids;
// odd lengths; GQA ratios 1/4/8; head dims 16/32/64/128), the XA block masks, split-KV decode over
// full and ring caches, and the raw-attention golden fixtures. The reference is attention_cpu
// (fp32) run on the same bf16-rounded inputs. Skipped when no CUDA device is present.
//
// Tolerances: the kernel rounds the softmax probabilities P to bf16 before P.V (as FlashAttention
// does), a relative error <= 2^-9 per weight; outputs are convex combinations of V rows, so the
// error stays a small multiple of 2^-9 * |V|. Relative L2 error <= 1e-2 (METHOD: bf16 operands
// give 1e-3..1e-2) and max |error| <= 4e-2 on values of order 1; bf16 outputs add one more 2^-9
// rounding. Measured errors are printed so the margin is visible.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "elastic/attention.h"
#include "elastic/cuda/arena.h"
#include "elastic/cuda/attention_cuda.h"
#include "elastic/cuda/cuda_check.h"
#include "elastic/dtype.h"
#include "elastic/error.h"
#include "elastic/safetensors.h"
#include "cuda/prefill_internal.h"

namespace elastic {
namespace {

using cuda::DeviceArena;

constexpr double kRelL2Tol = 1e-2;
constexpr double kMaxAbsTol = 4e-2;

// Random bf16 values (held as fp32 copies that are exactly representable in bf16).
using cuda_test::download;
using cuda_test::random_bf16_values;
using cuda_test::to_bf16;
using cuda_test::upload;

struct ErrorStats {
  double rel_l2 = 0, max_abs = 0;
  bool finite = true;
};

ErrorStats compare(const std::vector<float>& got, const std::vector<float>& want) {
  ErrorStats e;
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) e.finite = false;
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
    e.max_abs = std::max(e.max_abs, std::fabs(d));
  }
  e.rel_l2 = std::sqrt(num / std::max(den, 1e-30));
  return e;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  const ErrorStats e = compare(got, want);
  std::printf("  %-44s rel_l2 %.2e  max_abs %.2e\n", what.c_str(), e.rel_l2, e.max_abs);
  EXPECT_TRUE(e.finite) << what << ": non-finite output";
  EXPECT_LE(e.rel_l2, kRelL2Tol) << what;
  EXPECT_LE(e.max_abs, kMaxAbsTol) << what;
}

struct PrefillCase {
  int64_t n;
  int hq, hkv, d;
  std::vector<AttnMode> modes;  // [hkv]
  AttnOptions opt;
  bool out_bf16 = false;
};

std::string describe(const PrefillCase& c) {
  std::string m;
  for (AttnMode x : c.modes) m += std::string(attn_mode_name(x)) + ",";
  return "n=" + std::to_string(c.n) + " Hq=" + std::to_string(c.hq) + " Hkv=" + std::to_string(c.hkv) +
         " d=" + std::to_string(c.d) + " modes=" + m + (c.out_bf16 ? " out=bf16" : "");
}

// Runs the case on both paths; compares outputs and (for XA heads) block masks.
void run_prefill_case(const PrefillCase& c, uint32_t seed) {
  SCOPED_TRACE(describe(c));
  std::mt19937 rng(seed);
  const size_t qn = size_t(c.n) * c.hq * c.d, kn = size_t(c.n) * c.hkv * c.d;
  // sigma 1.5 makes the softmax peaky enough that XA keeps only part of the blocks.
  const std::vector<float> q = random_bf16_values(qn, rng, 1.5f), k = random_bf16_values(kn, rng, 1.5f),
                           v = random_bf16_values(kn, rng);

  std::vector<float> want(qn);
  AttnStats stats;
  AttnArgs a;
  a.out = want.data();
  a.q = q.data();
  a.k = k.data();
  a.v = v.data();
  a.modes = c.modes.data();
  a.n = c.n;
  a.num_heads = c.hq;
  a.num_kv_heads = c.hkv;
  a.head_dim = c.d;
  a.opt = c.opt;
  a.stats = &stats;
  attention_cpu(a);

  DeviceArena arena(size_t(512) << 20);
  cuda::PrefillAttnShape shape{c.n, c.hq, c.hkv, c.d, c.opt};
  const cuda::PrefillAttnPlan plan = cuda::prefill_attention_plan(shape, c.modes.data(), arena, nullptr);
  cuda::PrefillAttnParams p;
  p.q = reinterpret_cast<const __nv_bfloat16*>(upload(arena, to_bf16(q)));
  p.k = reinterpret_cast<const __nv_bfloat16*>(upload(arena, to_bf16(k)));
  p.v = reinterpret_cast<const __nv_bfloat16*>(upload(arena, to_bf16(v)));
  p.out_fp32 = !c.out_bf16;
  // Poison the output so unwritten elements show.
  p.out = arena.alloc(qn * 4);
  ELASTIC_CUDA_CHECK(cudaMemset(p.out, 0xff, qn * 4));
  cuda::prefill_attention_run(plan, p, nullptr);
  ELASTIC_CUDA_CHECK(cudaDeviceSynchronize());

  std::vector<float> got(qn);
  if (c.out_bf16) {
    const std::vector<uint16_t> raw = download(static_cast<const uint16_t*>(p.out), qn);
    for (size_t i = 0; i < qn; ++i) got[i] = bf16_to_f32(raw[i]);
  } else {
    got = download(static_cast<const float*>(p.out), qn);
  }
  expect_close(got, want, describe(c));

  if (plan.xa_head_count > 0) {
    const int64_t nb = plan.xa_q_blocks;
    ASSERT_EQ(stats.xa_q_blocks, nb);
    ASSERT_EQ(stats.xa_k_blocks, nb);
    const std::vector<uint8_t> mask = download(plan.xa_mask, size_t(c.hq) * nb * nb);
    for (int h = 0; h < c.hq; ++h) {
      if (c.modes[size_t(h / (c.hq / c.hkv))] != AttnMode::xa) continue;
      int64_t diff = 0, kept = 0;
      for (int64_t qa = 0; qa < nb; ++qa)
        for (int64_t kb = 0; kb <= qa; ++kb) {
          const uint8_t g = mask[(size_t(h) * nb + qa) * nb + kb], w = stats.xa_mask[size_t(h)][size_t(qa * nb + kb)];
          diff += (g != 0) != (w != 0);
          kept += w != 0;
        }
      EXPECT_EQ(diff, 0) << "XA mask of query head " << h << " differs from the CPU's in " << diff
                         << " blocks (CPU keeps " << kept << ")";
    }
  }
}

AttnOptions small_blocks(int64_t block, int64_t sink, int64_t local, int64_t xa_block, int64_t stride) {
  AttnOptions o;
  o.ssa.block = block;
  o.ssa.sink_tokens = sink;
  o.ssa.local_tokens = local;
  o.xa.block = xa_block;
  o.xa.stride = stride;
  o.xa.threshold = 0.9;
  o.xa.chunk = xa_block * 64;
  return o;
}

const AttnMode FA = AttnMode::fa, SSA = AttnMode::ssa, XA = AttnMode::xa;

TEST(CudaPrefillAttention, DenseOddLengthsGqaAndHeadDims) {
  REQUIRE_GPU();
  const AttnOptions o = small_blocks(64, 64, 256, 64, 16);
  run_prefill_case({1, 4, 4, 64, {FA, FA, FA, FA}, o}, 1);
  run_prefill_case({37, 8, 8, 64, {FA, FA, FA, FA, FA, FA, FA, FA}, o}, 2);       // G = 1
  run_prefill_case({333, 8, 2, 128, {FA, FA}, o}, 3);                             // G = 4
  run_prefill_case({517, 8, 1, 64, {FA}, o}, 4);                                  // G = 8
  run_prefill_case({1025, 8, 1, 128, {FA}, o, /*out_bf16=*/true}, 5);
}

// Small head dims (the engine-core fixtures: d = 32; tinystories-656k: d = 16) run the mma.sync
// kernel whatever the default; every mode (XA estimation included), odd lengths, G = 1 / 2 / 4 / 8.
TEST(CudaPrefillAttention, SmallHeadDims16And32) {
  REQUIRE_GPU();
  const AttnOptions o = small_blocks(32, 32, 96, 64, 16);
  run_prefill_case({1, 4, 4, 16, {FA, FA, FA, FA}, o}, 71);
  run_prefill_case({77, 8, 4, 16, {FA, SSA, FA, SSA}, o}, 72);   // G = 2
  run_prefill_case({301, 8, 2, 32, {SSA, FA}, o}, 73);           // G = 4
  run_prefill_case({129, 4, 4, 32, {FA, FA, FA, FA}, o, /*out_bf16=*/true}, 74);
  // XA masks at d = 16 / 32 equal the CPU's (run_prefill_case compares them block by block).
  run_prefill_case({700, 4, 1, 16, {XA}, small_blocks(32, 32, 96, 64, 16)}, 75);          // g = 4
  run_prefill_case({333, 8, 2, 32, {XA, XA}, small_blocks(32, 32, 96, 32, 8)}, 76);       // g = 4
  run_prefill_case({1000, 8, 1, 32, {XA}, small_blocks(32, 32, 96, 128, 16)}, 77);        // g = 8, G = 8
  run_prefill_case({517, 8, 4, 16, {FA, XA, SSA, XA}, small_blocks(32, 32, 96, 64, 8)}, 78);  // g = 8, hybrid
  run_prefill_case({90, 2, 2, 32, {XA, XA}, small_blocks(32, 32, 96, 64, 2)}, 79);        // g = 32
}

TEST(CudaPrefillAttention, StreamingSparse) {
  REQUIRE_GPU();
  run_prefill_case({1000, 8, 1, 128, {SSA}, small_blocks(64, 64, 256, 64, 16)}, 11);
  run_prefill_case({777, 4, 2, 64, {SSA, SSA}, small_blocks(32, 32, 96, 64, 16)}, 12);
  run_prefill_case({1500, 4, 4, 128, {SSA, SSA, SSA, SSA}, small_blocks(128, 128, 512, 128, 16)}, 13);
}

TEST(CudaPrefillAttention, XAttentionMasksAndOutputs) {
  REQUIRE_GPU();
  run_prefill_case({700, 4, 1, 64, {XA}, small_blocks(64, 64, 256, 64, 16)}, 21);     // g = 4
  run_prefill_case({1500, 2, 2, 128, {XA, XA}, small_blocks(64, 64, 256, 128, 16)}, 22);  // g = 8
  run_prefill_case({900, 8, 1, 128, {XA}, small_blocks(64, 64, 256, 128, 8)}, 23);    // g = 16
  run_prefill_case({333, 4, 2, 64, {XA, XA}, small_blocks(32, 32, 96, 32, 8)}, 24);   // block 32
}

TEST(CudaPrefillAttention, HybridOneLaunch) {
  REQUIRE_GPU();
  run_prefill_case({901, 16, 4, 128, {FA, SSA, XA, SSA}, small_blocks(64, 64, 256, 64, 16)}, 31);
  run_prefill_case({1234, 32, 8, 64, {SSA, FA, FA, SSA, XA, SSA, FA, SSA}, small_blocks(64, 64, 192, 64, 16)}, 32);
}

// Every kernel variant (tile shapes, the sm_90a wgmma kernel) on the same cases: each must agree
// with the CPU, whichever one the library picks by default.
TEST(CudaPrefillAttention, KernelVariants) {
  REQUIRE_GPU();
  std::vector<int> variants = {1, 2, 4};
  if (cuda::detail::wgmma_kernel_available()) variants.insert(variants.end(), {3, 5});
  for (int variant : variants) {
    SCOPED_TRACE("variant " + std::to_string(variant));
    std::printf("  kernel variant %d\n", variant);
    cuda::detail::set_prefill_variant(variant);
    run_prefill_case({37, 8, 8, 64, {FA, FA, FA, FA, FA, FA, FA, FA}, small_blocks(64, 64, 256, 64, 16)}, 61);
    run_prefill_case({517, 8, 2, 128, {FA, FA}, small_blocks(64, 64, 256, 64, 16)}, 62);
    run_prefill_case({901, 16, 4, 128, {FA, SSA, XA, SSA}, small_blocks(64, 64, 256, 64, 16)}, 63);
    run_prefill_case({777, 8, 2, 64, {SSA, XA}, small_blocks(32, 32, 96, 32, 8)}, 64);
  }
  cuda::detail::set_prefill_variant(0);
}

// Small shapes for compute-sanitizer (memcheck / racecheck): every mode, every head dim.
TEST(CudaSanitizerSmall, AllModes) {
  REQUIRE_GPU();
  run_prefill_case({150, 4, 2, 64, {SSA, XA}, small_blocks(32, 32, 64, 32, 8)}, 41);
  run_prefill_case({130, 4, 2, 128, {FA, XA}, small_blocks(64, 64, 64, 64, 16)}, 42);
  run_prefill_case({140, 4, 2, 32, {FA, SSA}, small_blocks(32, 32, 64, 32, 8)}, 44);  // mma.sync d = 32
  run_prefill_case({90, 4, 2, 16, {SSA, FA}, small_blocks(32, 32, 64, 32, 8)}, 45);   // mma.sync d = 16
  run_prefill_case({100, 4, 2, 32, {XA, FA}, small_blocks(32, 32, 64, 32, 8)}, 46);   // XA estimation d = 32
  run_prefill_case({70, 4, 2, 16, {SSA, XA}, small_blocks(32, 32, 64, 32, 8)}, 47);   // XA estimation d = 16
  // Both kernel families whatever the default: mma.sync (4), wgmma with both row blocks live (3).
  std::vector<int> variants = {4};
  if (cuda::detail::wgmma_kernel_available()) variants.push_back(3);
  for (int variant : variants) {
    cuda::detail::set_prefill_variant(variant);
    run_prefill_case({200, 4, 2, 128, {SSA, XA}, small_blocks(64, 64, 64, 64, 16)}, 43);
  }
  cuda::detail::set_prefill_variant(0);
}

// Decode: query at `pos`, the cache holding positions 0..pos (SSA heads as ring buffers).
void run_decode_case(int64_t pos, int hq, int hkv, int d, const std::vector<AttnMode>& modes,
                     const SsaOptions& ssa, uint32_t seed) {
  SCOPED_TRACE("decode pos=" + std::to_string(pos) + " Hq=" + std::to_string(hq) + " Hkv=" +
               std::to_string(hkv) + " d=" + std::to_string(d));
  std::mt19937 rng(seed);
  const int64_t ctx = pos + 1;
  const std::vector<float> q = random_bf16_values(size_t(hq) * d, rng, 1.5f);
  const std::vector<float> k = random_bf16_values(size_t(ctx) * hkv * d, rng, 1.5f);  // [ctx, Hkv, d]
  const std::vector<float> v = random_bf16_values(size_t(ctx) * hkv * d, rng);
  const int64_t sink = ssa.kept_sink_tokens(), window = ssa.kept_window_tokens();

  // Per KV head caches [rows, d]: full heads every position; ring heads through the mapping,
  // written in position order as decode would.
  std::vector<std::vector<float>> kc(static_cast<size_t>(hkv)), vc(static_cast<size_t>(hkv));
  std::vector<KvHeadView> views(static_cast<size_t>(hkv));
  for (int h = 0; h < hkv; ++h) {
    KvHeadView view;
    view.ring = modes[size_t(h)] == AttnMode::ssa;
    view.sink_tokens = sink;
    view.window_tokens = window;
    const int64_t rows = view.ring ? std::min(ctx, sink + window) : ctx;
    kc[size_t(h)].assign(size_t(rows) * d, 0.f);
    vc[size_t(h)].assign(size_t(rows) * d, 0.f);
    for (int64_t p = 0; p < ctx; ++p)
      for (int e = 0; e < d; ++e) {
        kc[size_t(h)][size_t(view.row(p) * d + e)] = k[size_t((p * hkv + h) * d + e)];
        vc[size_t(h)][size_t(view.row(p) * d + e)] = v[size_t((p * hkv + h) * d + e)];
      }
    view.k = kc[size_t(h)].data();
    view.v = vc[size_t(h)].data();
    views[size_t(h)] = view;
  }
  std::vector<float> want(size_t(hq) * d);
  AttnArgs a;
  a.out = want.data();
  a.q = q.data();
  a.k = k.data() + size_t(pos) * hkv * d;  // the new token's k/v
  a.v = v.data() + size_t(pos) * hkv * d;
  a.past = views.data();
  a.modes = modes.data();
  a.n = 1;
  a.pos0 = pos;
  a.num_heads = hq;
  a.num_kv_heads = hkv;
  a.head_dim = d;
  a.opt.ssa = ssa;
  attention_cpu(a);

  DeviceArena arena(size_t(256) << 20);
  std::vector<cuda::DeviceKvHead> heads(static_cast<size_t>(hkv));
  for (int h = 0; h < hkv; ++h) {
    heads[size_t(h)].k = reinterpret_cast<const __nv_bfloat16*>(upload(arena, to_bf16(kc[size_t(h)])));
    heads[size_t(h)].v = reinterpret_cast<const __nv_bfloat16*>(upload(arena, to_bf16(vc[size_t(h)])));
    heads[size_t(h)].ring = views[size_t(h)].ring ? 1 : 0;
    heads[size_t(h)].sink_tokens = sink;
    heads[size_t(h)].window_tokens = window;
  }
  cuda::DecodeAttnShape shape{hq, hkv, d, ctx + 100, ssa};
  const cuda::DecodeAttnPlan plan = cuda::decode_attention_plan(shape, heads.data(), modes.data(), arena, nullptr);
  cuda::DecodeAttnParams p;
  p.q = reinterpret_cast<const __nv_bfloat16*>(upload(arena, to_bf16(q)));
  p.out = arena.alloc(want.size() * 4);
  p.out_fp32 = true;
  p.pos = pos;
  ELASTIC_CUDA_CHECK(cudaMemset(p.out, 0xff, want.size() * 4));
  cuda::decode_attention_run(plan, p, nullptr);
  ELASTIC_CUDA_CHECK(cudaDeviceSynchronize());
  // Decode keeps P in fp32 (no bf16 rounding): errors are fp32 summation only.
  expect_close(download(static_cast<const float*>(p.out), want.size()), want,
               "decode pos=" + std::to_string(pos));
}

// Small shapes for compute-sanitizer: the split-KV decode and merge kernels over full and ring
// caches (a ring that wrapped), every head dim, one and several splits.
TEST(CudaSanitizerSmall, Decode) {
  REQUIRE_GPU();
  SsaOptions ssa;
  ssa.block = 32;
  ssa.sink_tokens = 32;
  ssa.local_tokens = 64;
  run_decode_case(0, 4, 2, 16, {FA, SSA}, ssa, 81);
  run_decode_case(300, 4, 2, 32, {SSA, FA}, ssa, 82);
  run_decode_case(600, 8, 1, 64, {SSA}, ssa, 83);
  run_decode_case(700, 8, 2, 128, {FA, SSA}, ssa, 84);
}

TEST(CudaDecodeAttention, FullAndRingCaches) {
  REQUIRE_GPU();
  SsaOptions ssa;
  ssa.block = 64;
  ssa.sink_tokens = 64;
  ssa.local_tokens = 256;
  run_decode_case(0, 8, 2, 128, {FA, SSA}, ssa, 51);
  run_decode_case(130, 8, 2, 64, {SSA, FA}, ssa, 52);
  run_decode_case(999, 32, 8, 128, {FA, SSA, XA, SSA, FA, SSA, SSA, FA}, ssa, 53);
  run_decode_case(5000, 8, 1, 128, {SSA}, ssa, 54);
  run_decode_case(70000, 4, 4, 64, {FA, SSA, FA, FA}, ssa, 55);  // more keys than one split wave
  run_decode_case(777, 8, 4, 16, {FA, SSA, FA, SSA}, ssa, 56);    // d = 16: lanes 16..31 idle
  run_decode_case(401, 8, 2, 32, {SSA, FA}, ssa, 57);
}

// Golden raw-attention fixtures: q/k/v bf16 in [H, n, d] (strided access), outputs from float64.
void run_fixture(const std::string& name) {
  SCOPED_TRACE(name);
  const std::string dir = std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/" + name;
  WeightStore ws = WeightStore::open(dir + "/expected.safetensors");
  const TensorView tq = ws.get("q"), tk = ws.get("k"), tv = ws.get("v");
  const int hq = int(tq.shape[0]), n = int(tq.shape[1]), d = int(tq.shape[2]), hkv = int(tk.shape[0]);
  // Block options of the fixture (case.json): gqa = 64/64/256, mha-long = 128/128/512.
  const bool gqa = name == "attention-gqa";
  AttnOptions o = gqa ? small_blocks(64, 64, 256, 64, 16) : small_blocks(128, 128, 512, 128, 16);
  const TensorView hm = ws.get("hybrid_modes");
  const int64_t* hybrid_raw = static_cast<const int64_t*>(hm.data);
  DeviceArena arena(size_t(256) << 20);
  auto dev_copy = [&](const TensorView& t) {
    void* p = arena.alloc(size_t(t.numel()) * 2);
    ELASTIC_CUDA_CHECK(cudaMemcpy(p, t.data, size_t(t.numel()) * 2, cudaMemcpyHostToDevice));
    return static_cast<const __nv_bfloat16*>(p);
  };
  cuda::PrefillAttnParams p;
  p.q = dev_copy(tq);
  p.k = dev_copy(tk);
  p.v = dev_copy(tv);
  p.q_stride = {d, int64_t(n) * d};
  p.k_stride = {d, int64_t(n) * d};
  p.v_stride = {d, int64_t(n) * d};
  p.out_stride = {d, int64_t(n) * d};  // [Hq, n, d] like the fixture
  p.out_fp32 = true;
  const size_t on = size_t(hq) * n * d;
  p.out = arena.alloc(on * 4);
  for (const std::string mode : {"fa", "ssa", "xa", "hybrid"}) {
    std::vector<AttnMode> modes(size_t(hkv), mode == "fa" ? FA : mode == "ssa" ? SSA : XA);
    if (mode == "hybrid")
      for (int h = 0; h < hkv; ++h) modes[size_t(h)] = hybrid_raw[h] == 0 ? FA : SSA;
    cuda::PrefillAttnShape shape{n, hq, hkv, d, o};
    const cuda::PrefillAttnPlan plan = cuda::prefill_attention_plan(shape, modes.data(), arena, nullptr);
    ELASTIC_CUDA_CHECK(cudaMemset(p.out, 0xff, on * 4));
    cuda::prefill_attention_run(plan, p, nullptr);
    ELASTIC_CUDA_CHECK(cudaDeviceSynchronize());
    const TensorView te = ws.get("out." + mode);
    const float* e = static_cast<const float*>(te.data);
    expect_close(download(static_cast<const float*>(p.out), on), std::vector<float>(e, e + on),
                 name + " out." + mode);
    if (mode == "xa") {
      const int64_t nb = plan.xa_q_blocks;
      const std::vector<uint8_t> mask = download(plan.xa_mask, size_t(hq) * nb * nb);
      for (int h = 0; h < hq; ++h) {
        const TensorView tb = ws.get("xa_blocks." + std::to_string(h));
        ASSERT_EQ(tb.shape[0], nb);
        const uint8_t* want = static_cast<const uint8_t*>(tb.data);
        int64_t diff = 0;
        for (int64_t qa = 0; qa < nb; ++qa)
          for (int64_t kb = 0; kb <= qa; ++kb)
            diff += (mask[(size_t(h) * nb + qa) * nb + kb] != 0) != (want[qa * nb + kb] != 0);
        EXPECT_EQ(diff, 0) << "xa_blocks." << h;
      }
    }
    arena.reset();  // drop the plan; inputs are re-made below
    p.q = dev_copy(tq);
    p.k = dev_copy(tk);
    p.v = dev_copy(tv);
    p.out = arena.alloc(on * 4);
  }
}

TEST(CudaAttentionFixtures, Gqa) {
  REQUIRE_GPU();
  run_fixture("attention-gqa");
}

TEST(CudaAttentionFixtures, MhaLong) {
  REQUIRE_GPU();
  run_fixture("attention-mha-long");
}

TEST(CudaAttentionPlan, RejectsUnsupportedShapes) {
  REQUIRE_GPU();
  DeviceArena arena(size_t(1) << 20);
  AttnOptions o;
  cuda::PrefillAttnShape bad_d{100, 4, 2, 96, o};
  EXPECT_THROW(cuda::prefill_attention_plan(bad_d, nullptr, arena, nullptr), Error);
  cuda::PrefillAttnShape bad_g{100, 6, 4, 64, o};
  EXPECT_THROW(cuda::prefill_attention_plan(bad_g, nullptr, arena, nullptr), Error);
  o.xa.block = 96;
  o.xa.stride = 16;  // block / stride = 6: the block sums need a power of two
  const std::vector<AttnMode> xa(2, XA);
  cuda::PrefillAttnShape bad_xa{100, 4, 2, 64, o};
  EXPECT_THROW(cuda::prefill_attention_plan(bad_xa, xa.data(), arena, nullptr), Error);
}

}  // namespace
}  // namespace elastic
