// The CUDA backend against the CPU reference backend, op by op on random shapes (odd sizes),
// and the whole qwen3-tiny model (prefill and token-by-token decode) against the HF golden
// logits. Skipped when no CUDA device is present.
//
// Tolerances: elementwise ops are fp32 on both sides (1e-5 relative: summation order and
// expf/rsqrtf ulps); copies are exact. Linear layers round activations and weights to bf16
// (2^-9 relative each) before an fp32-accumulated product: relative L2 <= 1e-2. The whole model
// compounds that over every projection of 2 layers: max-abs / max-ref logits error <= 3e-2
// (the CPU fp32 path reaches 1e-4 on the same fixture).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "elastic/backend.h"
#include "elastic/cpu_ops.h"
#include "elastic/cuda/backend_cuda.h"
#include "elastic/cuda/cuda_check.h"
#include "elastic/dtype.h"
#include "elastic/error.h"
#include "elastic/model.h"
#include "elastic/report.h"
#include "elastic/router.h"
#include "elastic/safetensors.h"
#include <nlohmann/json.hpp>
#include "elastic/fileio.h"

namespace elastic {
namespace {

std::vector<float> randn(size_t n, uint32_t seed, float sigma = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, sigma);
  std::vector<float> x(n);
  for (auto& v : x) v = dist(rng);
  return x;
}

double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Device buffers of one backend, filled from host vectors.
struct Dev {
  Backend& be;
  std::vector<std::shared_ptr<void>> keep;
  float* put(const std::vector<float>& h) {
    keep.push_back(be.alloc(h.size() * sizeof(float)));
    be.upload(keep.back().get(), h.data(), h.size() * sizeof(float));
    return static_cast<float*>(keep.back().get());
  }
  float* make(size_t n) {
    keep.push_back(be.alloc(n * sizeof(float)));
    return static_cast<float*>(keep.back().get());
  }
  std::vector<float> get(const float* p, size_t n) {
    std::vector<float> h(n);
    be.download(h.data(), p, n * sizeof(float));
    return h;
  }
};

void expect_rel(const std::vector<float>& got, const std::vector<float>& want, double tol,
                const char* what) {
  const double e = rel_l2(got, want);
  std::printf("  %-28s rel_l2 %.2e (tol %.0e)\n", what, e, tol);
  EXPECT_LE(e, tol) << what;
}

TEST(CudaBackendOps, ElementwiseNormAndCopiesMatchCpu) {
  REQUIRE_GPU();
  auto cpu = backend_cpu();
  auto gpu = backend_cuda();
  Dev c{*cpu, {}}, g{*gpu, {}};
  const int64_t rows = 37, dim = 201, heads = 3, hd = 64, ffn = 77;

  // embedding: fp32 and bf16 tables, exact.
  {
    const int64_t vocab = 50;
    const std::vector<float> table = randn(size_t(vocab * dim), 1);
    std::vector<uint16_t> table16(table.size());
    for (size_t i = 0; i < table.size(); ++i) table16[i] = f32_to_bf16(table[i]);
    std::vector<int64_t> ids(rows);
    for (int64_t i = 0; i < rows; ++i) ids[size_t(i)] = (i * 7) % vocab;
    for (int pass = 0; pass < 2; ++pass) {
      const void* t = pass == 0 ? static_cast<const void*>(table.data()) : table16.data();
      const DType dt = pass == 0 ? DType::f32 : DType::bf16;
      float* oc = c.make(size_t(rows * dim));
      float* og = g.make(size_t(rows * dim));
      cpu->embedding_forward(oc, ids.data(), rows, t, dt, vocab, dim);
      gpu->embedding_forward(og, ids.data(), rows, t, dt, vocab, dim);
      EXPECT_EQ(g.get(og, size_t(rows * dim)), c.get(oc, size_t(rows * dim))) << "embedding " << pass;
    }
    std::vector<int64_t> bad = {0, vocab};
    EXPECT_THROW(gpu->embedding_forward(g.make(size_t(2 * dim)), bad.data(), 2, table.data(), DType::f32,
                                        vocab, dim),
                 Error);
  }
  // rmsnorm (in place on the CUDA side).
  {
    const std::vector<float> x = randn(size_t(rows * dim), 2), w = randn(size_t(dim), 3);
    float* oc = c.make(size_t(rows * dim));
    cpu->rmsnorm_forward(oc, c.put(x), c.put(w), rows, dim, 1e-6f);
    float* xg = g.put(x);
    gpu->rmsnorm_forward(xg, xg, g.put(w), rows, dim, 1e-6f);
    expect_rel(g.get(xg, x.size()), c.get(oc, x.size()), 1e-5, "rmsnorm");
  }
  // rope.
  {
    const std::vector<float> x = randn(size_t(rows * heads * hd), 4);
    const std::vector<float> cs = randn(size_t(rows * hd / 2), 5), sn = randn(size_t(rows * hd / 2), 6);
    float* xc = c.put(x);
    float* xg = g.put(x);
    cpu->rope_forward(xc, c.put(cs), c.put(sn), rows, heads, hd);
    gpu->rope_forward(xg, g.put(cs), g.put(sn), rows, heads, hd);
    expect_rel(g.get(xg, x.size()), c.get(xc, x.size()), 1e-5, "rope");
  }
  // swiglu.
  {
    const std::vector<float> gu = randn(size_t(rows * 2 * ffn), 7, 2.f);
    float* oc = c.make(size_t(rows * ffn));
    float* og = g.make(size_t(rows * ffn));
    cpu->swiglu_forward(oc, c.put(gu), rows, ffn);
    gpu->swiglu_forward(og, g.put(gu), rows, ffn);
    expect_rel(g.get(og, size_t(rows * ffn)), c.get(oc, size_t(rows * ffn)), 1e-5, "swiglu");
  }
  // qkv split and residual: exact.
  {
    const int64_t qd = 3 * 64, kd = 64;
    const std::vector<float> qkv = randn(size_t(rows * (qd + 2 * kd)), 8);
    float *qc = c.make(size_t(rows * qd)), *kc = c.make(size_t(rows * kd)), *vc = c.make(size_t(rows * kd));
    float *qg = g.make(size_t(rows * qd)), *kg = g.make(size_t(rows * kd)), *vg = g.make(size_t(rows * kd));
    cpu->qkv_split_forward(qc, kc, vc, c.put(qkv), rows, qd, kd);
    gpu->qkv_split_forward(qg, kg, vg, g.put(qkv), rows, qd, kd);
    EXPECT_EQ(g.get(qg, size_t(rows * qd)), c.get(qc, size_t(rows * qd)));
    EXPECT_EQ(g.get(kg, size_t(rows * kd)), c.get(kc, size_t(rows * kd)));
    EXPECT_EQ(g.get(vg, size_t(rows * kd)), c.get(vc, size_t(rows * kd)));
    const std::vector<float> x = randn(1001, 9), dx = randn(1001, 10);
    float* xc = c.put(x);
    float* xg = g.put(x);
    cpu->residual_forward(xc, c.put(dx), 1001);
    gpu->residual_forward(xg, g.put(dx), 1001);
    EXPECT_EQ(g.get(xg, 1001), c.get(xc, 1001));
  }
}

TEST(CudaBackendOps, LinearThroughCublasLtMatchesCpu) {
  REQUIRE_GPU();
  auto cpu = backend_cpu();
  auto gpu = backend_cuda();
  Dev c{*cpu, {}}, g{*gpu, {}};
  for (const auto& [n, out, in] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1, 96, 64}, {37, 200, 136}, {300, 1024, 192}}) {
    const std::vector<float> w = randn(size_t(out * in), 11), x = randn(size_t(n * in), 12),
                             b = randn(size_t(out), 13);
    std::vector<uint16_t> w16(w.size());
    for (size_t i = 0; i < w.size(); ++i) w16[i] = f32_to_bf16(w[i]);
    TensorView tv;
    tv.dtype = DType::bf16;
    tv.shape = {out, in};
    tv.data = w16.data();
    const Linear lc = cpu->linear_prepare(tv), lg = gpu->linear_prepare(tv);
    float* oc = c.make(size_t(n * out));
    float* og = g.make(size_t(n * out));
    cpu->linear_forward(oc, c.put(x), lc, c.put(b), n);
    gpu->linear_forward(og, g.put(x), lg, g.put(b), n);
    const std::string what = "linear n=" + std::to_string(n) + " " + std::to_string(out) + "x" + std::to_string(in);
    expect_rel(g.get(og, size_t(n * out)), c.get(oc, size_t(n * out)), 1e-2, what.c_str());
  }
}

TEST(CudaBackendOps, AttentionPrefillStatsAndUnsupportedShapes) {
  REQUIRE_GPU();
  auto cpu = backend_cpu();
  auto gpu = backend_cuda();
  Dev c{*cpu, {}}, g{*gpu, {}};
  const int64_t n = 333, Hq = 8, Hkv = 4, d = 64;
  const std::vector<float> q = randn(size_t(n * Hq * d), 21, 1.5f), k = randn(size_t(n * Hkv * d), 22, 1.5f),
                           v = randn(size_t(n * Hkv * d), 23);
  const std::vector<AttnMode> modes = {AttnMode::fa, AttnMode::ssa, AttnMode::xa, AttnMode::ssa};
  AttnOptions o;
  o.ssa.block = 32;
  o.ssa.sink_tokens = 32;
  o.ssa.local_tokens = 96;
  o.xa.block = 32;
  o.xa.stride = 8;
  o.xa.chunk = 32 * 64;
  AttnStats sc, sg;
  auto run = [&](Backend& be, Dev& dv, AttnStats& st) {
    AttnArgs a;
    a.out = dv.make(size_t(n * Hq * d));
    a.q = dv.put(q);
    a.k = dv.put(k);
    a.v = dv.put(v);
    a.modes = modes.data();
    a.n = n;
    a.num_heads = Hq;
    a.num_kv_heads = Hkv;
    a.head_dim = d;
    a.opt = o;
    a.stats = &st;
    be.attention_forward(a);
    return dv.get(a.out, size_t(n * Hq * d));
  };
  // bf16 q/k/v and bf16 P on the device: as test_attention_cuda, rel L2 <= 1e-2.
  expect_rel(run(*gpu, g, sg), run(*cpu, c, sc), 1e-2, "attention hybrid prefill");
  EXPECT_EQ(sg.causal_pairs, sc.causal_pairs);
  EXPECT_EQ(sg.attended_pairs, sc.attended_pairs);
  EXPECT_EQ(sg.xa_q_blocks, sc.xa_q_blocks);
  EXPECT_EQ(sg.xa_mask, sc.xa_mask);
  EXPECT_EQ(sg.xa_estimate_scores, sc.xa_estimate_scores);

  AttnArgs bad;
  bad.n = 4;
  bad.num_heads = 2;
  bad.num_kv_heads = 1;
  bad.head_dim = 48;
  EXPECT_THROW(gpu->attention_forward(bad), Error);  // head_dim 48: unsupported, says so
}

std::vector<float> tensor_f32(const WeightStore& ws, const std::string& name) { return ws.get(name).to_f32(); }

TEST(CudaBackendModel, Qwen3TinyPrefillAndDecodeMatchGoldenLogits) {
  REQUIRE_GPU();
  const std::string dir = std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/qwen3-tiny";
  const Model m = model_load(dir, backend_cuda(CudaBackendOptions{true}));
  const WeightStore e = WeightStore::open(dir + "/expected.safetensors");
  const std::vector<int64_t> ids = e.get("input_ids.37").to_i64();
  const std::vector<float> want = tensor_f32(e, "logits.37");
  const int64_t n = int64_t(ids.size()), V = int64_t(want.size()) / n;
  auto max_rel = [](const float* a, const float* b, size_t count) {
    double err = 0, ref = 0;
    for (size_t i = 0; i < count; ++i) {
      err = std::max(err, std::fabs(double(a[i]) - b[i]));
      ref = std::max(ref, std::fabs(double(b[i])));
    }
    return err / ref;
  };
  {
    Request r = request_start(m);
    PrefillOptions o;
    o.logits = LogitsOutput::all;
    const std::vector<float>& got = model_prefill(m, r, ids.data(), n, o);
    ASSERT_EQ(got.size(), want.size());
    const double err = max_rel(got.data(), want.data(), want.size());
    std::printf("  qwen3-tiny prefill 37: max-abs/max-ref logits error %.2e\n", err);
    EXPECT_LE(err, 3e-2);
  }
  {
    Request r = request_start(m);
    const int64_t first = 20;
    model_prefill(m, r, ids.data(), first);
    double worst = 0;
    for (int64_t t = first; t < n; ++t) {
      const std::vector<float>& got = model_prefill(m, r, &ids[size_t(t)], 1);
      ASSERT_EQ(int64_t(got.size()), V);
      worst = std::max(worst, max_rel(got.data(), want.data() + t * V, size_t(V)));
    }
    std::printf("  qwen3-tiny decode 20..36: worst max-abs/max-ref logits error %.2e\n", worst);
    EXPECT_LE(worst, 3e-2);
  }
}

// The forward's non-finite check on the CUDA backend (Backend::all_finite's device reduction):
// finite buffers pass, one NaN or Inf anywhere fails; a NaN written into one weight of layer 1
// stops the prefill naming layer 1, with the logits on the host and kept on the device (the
// generate loop's path).
TEST(CudaBackendOps, NonFiniteLogitsNameTheLayer) {
  REQUIRE_GPU();
  auto gpu = backend_cuda();
  Dev g{*gpu, {}};
  std::vector<float> h = randn(100003, 7);
  EXPECT_TRUE(gpu->all_finite(g.put(h), int64_t(h.size())));
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    for (size_t at : {size_t(0), size_t(5000), h.size() - 1}) {
      std::vector<float> x = h;
      x[at] = bad;
      EXPECT_FALSE(gpu->all_finite(g.put(x), int64_t(x.size()))) << bad << " at " << at;
      EXPECT_TRUE(gpu->all_finite(g.put(x), int64_t(at))) << "the count bounds the scan";
    }
  }

  const std::string dir = std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/qwen3-tiny";
  auto store = std::make_shared<WeightStore>(WeightStore::open(dir));
  const std::string poisoned = "model.layers.1.self_attn.o_proj.weight";
  auto f32 = std::make_shared<std::vector<float>>(store->get(poisoned).to_f32());
  (*f32)[3] = NAN;
  TensorLookup lookup = [store, f32,
                         poisoned](const std::string& name) -> std::optional<TensorView> {
    if (!store->contains(name)) return std::nullopt;
    TensorView t = store->get(name);
    if (name == poisoned) {
      t.dtype = DType::f32;
      t.data = f32->data();
    }
    return t;
  };
  const Model m = model_build(config_load(dir), lookup, store, dir, gpu);
  const std::vector<int64_t> ids = {1, 2, 3, 4};
  for (bool to_host : {true, false}) {
    Request r = request_start(m);
    PrefillOptions o;
    o.logits_to_host = to_host;
    try {
      model_prefill(m, r, ids.data(), int64_t(ids.size()), o);
      ADD_FAILURE() << "no error with logits_to_host " << to_host;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("the output of layer 1 is not finite"),
                std::string::npos)
          << e.what();
    }
  }
}

// The Elastic checkpoints end to end on CUDA (router on the host over the CUDA backend's k, the
// fused attention in the routed modes): router decisions, rho and logits against the float64
// goldens. Router logits and XA masks see bf16-rounded projections (~2e-3 relative), so a
// decision or a block could flip only if its margin were that small: the test asserts exact
// decisions and rho within 1e-6 (exact pair counts) and prints the margins it relies on.
class CudaElasticGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaElasticGolden, RoutingSparsityAndLogits) {
  REQUIRE_GPU();
  const std::string dir = std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/" + GetParam();
  const nlohmann::json cj = nlohmann::json::parse(read_file(dir + "/case.json"));
  const auto& o = cj["options"];
  AttnOptions attn;
  attn.ssa.block = o["block_size"];
  attn.ssa.sink_tokens = o["sink_size"];
  attn.ssa.local_tokens = o["local_window_size"];
  attn.xa.block = o["xa_block_size"];
  attn.xa.stride = o["xa_stride"];
  attn.xa.threshold = o["xa_threshold"];
  RouterOptions ro;
  ro.pool_tokens = o["pool_tokens"];
  ro.sparsity_bias = o["sparsity_bias"];
  ro.retrieval_mode = attn_mode_parse(cj["retrieval_mode"], "retrieval_mode");
  ro.sparse_mode = attn_mode_parse(cj["sparse_mode"], "sparse_mode");

  const WeightStore expected = WeightStore::open(dir + "/expected.safetensors");
  const std::vector<int64_t> ids = expected.get("input_ids").to_i64();
  const Model model = model_load(dir, backend_cuda(CudaBackendOptions{true}));
  const WeightStore store = WeightStore::open(dir);
  RouterRouting routing(router_weights_load(store, model.config), ro);
  Request req = request_start(model, &routing);
  req.attn = attn;
  PrefillOptions po;
  po.logits = LogitsOutput::all;
  const int64_t N = int64_t(ids.size());
  const std::vector<float> logits = model_prefill(model, req, ids.data(), N, po);
  const ModelConfig& mc = model.config;
  const RequestReport r = report_build(mc.num_heads, mc.num_kv_heads, mc.head_dim, N, req.routes,
                                       req.prefill_stats, req.attn);
  const std::vector<int64_t> want_dec = expected.get("decisions").to_i64();
  const std::vector<float> want_router = expected.get("router_logits").to_f32();
  const std::vector<float> want_rho = expected.get("rho").to_f32();
  double min_margin = 1e30, worst_router = 0;
  for (int64_t l = 0; l < mc.num_layers; ++l)
    for (int64_t h = 0; h < mc.num_kv_heads; ++h) {
      EXPECT_EQ(r.decisions[l][h], want_dec[l * mc.num_kv_heads + h]) << "layer " << l << " head " << h;
      const float* w = &want_router[(l * mc.num_kv_heads + h) * 2];
      min_margin = std::min(min_margin, std::fabs(double(w[1]) - w[0]));
      for (int k = 0; k < 2; ++k)
        worst_router = std::max(worst_router, std::fabs(double(r.router_logits[l][2 * h + k]) - w[k]));
    }
  int64_t rho_off = 0;
  for (int64_t l = 0; l < mc.num_layers; ++l)
    for (int64_t h = 0; h < mc.num_heads; ++h) rho_off += std::fabs(r.rho[l][h] - want_rho[l * mc.num_heads + h]) > 1e-6;
  EXPECT_EQ(rho_off, 0) << "query heads whose rho differs from the golden";
  EXPECT_NEAR(r.omega_msr, expected.get("omega_msr").to_f32()[0], 1e-6);
  const std::vector<float> want = expected.get("logits").to_f32();
  ASSERT_EQ(logits.size(), want.size());
  double err = 0, ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::fabs(double(logits[i]) - want[i]));
    ref = std::max(ref, std::fabs(double(want[i])));
  }
  std::printf("  %s: router logits max error %.2e (smallest decision margin %.2e), omega_msr %.4f, "
              "logits max-abs/max-ref %.2e\n",
              GetParam().c_str(), worst_router, min_margin, r.omega_msr, err / ref);
  EXPECT_LE(err / ref, 3e-2);  // bf16 projections, as the qwen3-tiny test
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaElasticGolden,
                         ::testing::Values("elastic-qwen3-fa-ssa", "elastic-qwen3-fa-xa", "elastic-qwen3-xa-ssa",
                                           "elastic-qwen3-fa-ssa-bias"));

}  // namespace
}  // namespace elastic
