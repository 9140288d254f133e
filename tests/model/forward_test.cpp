// Forward-pass consistency: decode and chunked prefill give the one-shot prefill's logits (dense
// and with SSA heads, whose KV cache is a ring); the routing hook sees the keys after k_norm and
// before RoPE, once per layer per request; the KV cache allocates what the heads keep; the
// loader names the tensor and both shapes on a bad checkpoint.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "elastic/cpu_matmul.h"
#include "elastic/cpu_ops.h"
#include "elastic/error.h"
#include "elastic/model.h"
#include "elastic/safetensors.h"
#include "model_test_util.h"

namespace elastic {
namespace {

using test::fixture_dir;
using test::relative_error;

// Same fp32 model, different summation orders: the decode GEMV (n = 1) and the prefill GEMM
// accumulate the same dot products in different orders, and attention over a cached prefix
// tiles keys differently, so positions agree to fp32 rounding (~1e-6 relative over 3 layers);
// 2e-5 leaves margin, while a wrong position, cache row or RoPE angle gives 1e-2 or more.
constexpr double kOrderTolerance = 2e-5;

std::vector<int64_t> fixture_ids(const std::string& case_name, const std::string& key) {
  WeightStore e = WeightStore::open(fixture_dir("hf/" + case_name + "/expected.safetensors"));
  return e.get(key).to_i64();
}

std::vector<float> one_shot_logits(const Model& m, const std::vector<int64_t>& ids,
                                   RoutingPolicy* routing, const AttnOptions* attn) {
  Request r = request_start(m, routing);
  if (attn) r.attn = *attn;
  PrefillOptions o;
  o.logits = LogitsOutput::all;
  return model_prefill(m, r, ids.data(), static_cast<int64_t>(ids.size()), o);
}

// Routing that records its calls and gives KV head 0 FA, the others SSA.
class HybridRouting final : public RoutingPolicy {
 public:
  explicit HybridRouting(bool all_fa = false) : all_fa_(all_fa) {}
  LayerRoute route(int64_t layer, const float* k_pre_rope, int64_t n, int64_t num_kv_heads,
                   int64_t head_dim) override {
    calls.push_back({layer, n});
    if (layer == 0) first_layer_keys.assign(k_pre_rope, k_pre_rope + n * num_kv_heads * head_dim);
    LayerRoute r;
    r.modes.assign(static_cast<size_t>(num_kv_heads), all_fa_ ? AttnMode::fa : AttnMode::ssa);
    r.modes[0] = AttnMode::fa;
    return r;
  }
  std::vector<std::pair<int64_t, int64_t>> calls;  // (layer, n)
  std::vector<float> first_layer_keys;              // [n, Hkv, d] of layer 0

 private:
  bool all_fa_;
};

// Small SSA blocks so a 300-token prompt wraps the ring many times.
AttnOptions small_ssa() {
  AttnOptions o;
  o.ssa.block = 8;
  o.ssa.sink_tokens = 8;
  o.ssa.local_tokens = 16;
  return o;
}

TEST(Forward, DecodeMatchesPrefillAtEveryPosition) {
  Model m = model_load(fixture_dir("hf/qwen3-tiny"));
  const std::vector<int64_t> ids = fixture_ids("qwen3-tiny", "input_ids.37");
  const int64_t V = m.config.vocab_size, T = static_cast<int64_t>(ids.size());
  const std::vector<float> want = one_shot_logits(m, ids, nullptr, nullptr);
  Request r = request_start(m);
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<float>& got = model_prefill(m, r, &ids[t], 1);
    ASSERT_EQ(static_cast<int64_t>(got.size()), V);
    EXPECT_LT(relative_error(got.data(), want.data() + t * V, V), kOrderTolerance) << "position " << t;
  }
  EXPECT_EQ(r.length, T);
}

TEST(Forward, ChunkedPrefillMatchesOneShot) {
  Model m = model_load(fixture_dir("hf/llama3-tiny"));
  const std::vector<int64_t> ids = fixture_ids("llama3-tiny", "input_ids.400");
  const int64_t V = m.config.vocab_size;
  const std::vector<float> want = one_shot_logits(m, ids, nullptr, nullptr);
  Request r = request_start(m);
  PrefillOptions o;
  o.logits = LogitsOutput::all;
  int64_t pos = 0;
  for (int64_t chunk : {1, 63, 128, 208}) {
    const std::vector<float>& got = model_prefill(m, r, ids.data() + pos, chunk, o);
    ASSERT_EQ(static_cast<int64_t>(got.size()), chunk * V);
    EXPECT_LT(relative_error(got.data(), want.data() + pos * V, static_cast<size_t>(chunk * V)),
              kOrderTolerance)
        << "chunk at " << pos;
    pos += chunk;
  }
  ASSERT_EQ(pos, static_cast<int64_t>(ids.size()));
}

// SSA heads keep a ring of sink + window rows; decoding through it must give the same logits
// as the one-shot prefill with the same per-head modes, at every position after the prompt.
TEST(Forward, HybridSsaDecodeThroughRingMatchesOneShot) {
  Model m = model_load(fixture_dir("hf/qwen3-tiny"));
  const std::vector<int64_t> ids = fixture_ids("qwen3-tiny", "input_ids.300");
  const int64_t V = m.config.vocab_size, T = static_cast<int64_t>(ids.size());
  const AttnOptions attn = small_ssa();
  HybridRouting route_all;
  const std::vector<float> want = one_shot_logits(m, ids, &route_all, &attn);
  // The modes matter: all-FA logits differ from the hybrid ones.
  const std::vector<float> dense = one_shot_logits(m, ids, nullptr, nullptr);
  EXPECT_GT(relative_error(dense, want), 1e-3);

  const int64_t prompt = 220;  // > sink + window: the ring has wrapped before decode starts
  HybridRouting routing;
  Request r = request_start(m, &routing);
  r.attn = attn;
  model_prefill(m, r, ids.data(), prompt);
  for (int64_t t = prompt; t < T; ++t) {
    const std::vector<float>& got = model_prefill(m, r, &ids[t], 1);
    EXPECT_LT(relative_error(got.data(), want.data() + t * V, V), kOrderTolerance) << "position " << t;
  }
  // Routed once per layer, at the first prefill, over the whole prompt.
  ASSERT_EQ(static_cast<int64_t>(routing.calls.size()), m.config.num_layers);
  for (int64_t l = 0; l < m.config.num_layers; ++l)
    EXPECT_EQ(routing.calls[l], (std::pair<int64_t, int64_t>{l, prompt}));
  // KV allocation: FA head 0 holds every position (grown in steps during decode), SSA heads
  // exactly sink + window rows.
  const int64_t ring_rows = attn.ssa.kept_sink_tokens() + attn.ssa.kept_window_tokens();
  for (int64_t l = 0; l < m.config.num_layers; ++l) {
    EXPECT_FALSE(r.cache.is_ring(l, 0));
    EXPECT_EQ(r.cache.rows_allocated(l, 0), prompt + kKvGrowRows);
    for (int64_t h = 1; h < m.config.num_kv_heads; ++h) {
      EXPECT_TRUE(r.cache.is_ring(l, h));
      EXPECT_EQ(r.cache.rows_allocated(l, h), ring_rows);
    }
  }
}

TEST(Forward, KvAllocationAfterPrefillIsExact) {
  Model m = model_load(fixture_dir("hf/qwen3-tiny"));
  const std::vector<int64_t> ids = fixture_ids("qwen3-tiny", "input_ids.300");
  const int64_t N = static_cast<int64_t>(ids.size());
  const ModelConfig& c = m.config;
  HybridRouting routing;
  Request r = request_start(m, &routing);
  r.attn = small_ssa();
  model_prefill(m, r, ids.data(), N, PrefillOptions{LogitsOutput::none, nullptr});
  const size_t row_bytes = 2 * sizeof(float) * static_cast<size_t>(c.head_dim);  // K + V
  const int64_t ring = r.attn.ssa.kept_sink_tokens() + r.attn.ssa.kept_window_tokens();
  const size_t per_layer = static_cast<size_t>(N + (c.num_kv_heads - 1) * ring) * row_bytes;
  EXPECT_EQ(r.cache.bytes_allocated(), static_cast<size_t>(c.num_layers) * per_layer);
  EXPECT_EQ(r.cache.bytes_dense_equivalent(),
            static_cast<size_t>(c.num_layers * c.num_kv_heads * N) * row_bytes);
  // Dense request: exactly N rows per head.
  Request d = request_start(m);
  model_prefill(m, d, ids.data(), N, PrefillOptions{LogitsOutput::none, nullptr});
  EXPECT_EQ(d.cache.bytes_allocated(), d.cache.bytes_dense_equivalent());
}

// route() receives layer 0's keys after k_norm and before RoPE: recompute them from the
// weights with the reference ops (embedding -> RMSNorm -> k_proj -> per-head k_norm).
TEST(Forward, RoutingSeesKeysAfterKNormBeforeRope) {
  Model m = model_load(fixture_dir("hf/qwen3-tiny"));
  const ModelConfig& c = m.config;
  const std::vector<int64_t> ids = fixture_ids("qwen3-tiny", "input_ids.37");
  const int64_t n = static_cast<int64_t>(ids.size()), D = c.hidden_size;
  const int64_t kd = c.num_kv_heads * c.head_dim;
  HybridRouting routing(/*all_fa=*/true);
  Request r = request_start(m, &routing);
  model_prefill(m, r, ids.data(), n);
  ASSERT_EQ(static_cast<int64_t>(routing.first_layer_keys.size()), n * kd);

  const LayerWeights& w = m.weights.layers[0];
  const float eps = static_cast<float>(c.rms_norm_eps);
  const int64_t qd = c.num_heads * c.head_dim;
  std::vector<float> x(n * D), xn(n * D), qkv(n * (qd + 2 * kd)), q(n * qd), k(n * kd), v(n * kd);
  embedding_forward(x.data(), ids.data(), n, m.weights.embed_tokens.data, m.weights.embed_tokens.dtype,
                    c.vocab_size, D);
  rmsnorm_forward(xn.data(), x.data(), w.input_norm, n, D, eps);
  m.backend->linear_forward(qkv.data(), xn.data(), w.qkv_proj, w.qkv_bias, n);
  qkv_split_forward(q.data(), k.data(), v.data(), qkv.data(), n, qd, kd);
  rmsnorm_forward(k.data(), k.data(), w.k_norm, n * c.num_kv_heads, c.head_dim, eps);
  // Same ops in the same order: equal up to thread scheduling (none for these sizes).
  EXPECT_LT(relative_error(routing.first_layer_keys, k), 1e-6);
  // ... and not the rotated keys: at position > 0 RoPE changes them.
  std::vector<float> cos(n * c.head_dim / 2), sin(cos.size()), rotated = k;
  rope_table_fill(cos.data(), sin.data(), m.rope, 0, n);
  rope_forward(rotated.data(), cos.data(), sin.data(), n, c.num_kv_heads, c.head_dim);
  EXPECT_GT(relative_error(routing.first_layer_keys, rotated), 1e-2);
}

TEST(KvCache, RingKeepsSinkAndWindowRows) {
  const int64_t d = 4;
  KvCache cache(1, 2, d);
  SsaOptions ssa;
  ssa.block = 2;
  ssa.sink_tokens = 2;
  ssa.local_tokens = 4;
  cache.configure_layer(0, {AttnMode::fa, AttnMode::ssa}, ssa);
  // k row of position p, head h: all entries p * 10 + h; v = -k.
  auto rows = [&](int64_t pos0, int64_t n, std::vector<float>& k, std::vector<float>& v) {
    k.resize(n * 2 * d);
    v.resize(k.size());
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t t = 0; t < d; ++t) {
          k[(i * 2 + h) * d + t] = static_cast<float>((pos0 + i) * 10 + h);
          v[(i * 2 + h) * d + t] = -static_cast<float>((pos0 + i) * 10 + h);
        }
  };
  std::vector<float> k, v;
  rows(0, 11, k, v);  // a chunk longer than the window: only survivors are stored
  cache.append(0, k.data(), v.data(), 0, 11);
  EXPECT_EQ(cache.rows_allocated(0, 0), 11);
  EXPECT_EQ(cache.rows_allocated(0, 1), 6);
  for (int64_t step = 11; step < 20; ++step) {
    rows(step, 1, k, v);
    cache.append(0, k.data(), v.data(), step, 1);
  }
  EXPECT_EQ(cache.length(0), 20);
  EXPECT_EQ(cache.rows_allocated(0, 0), 11 + kKvGrowRows);  // one growth step
  EXPECT_EQ(cache.rows_allocated(0, 1), 6);
  std::vector<KvHeadView> views = cache.views(0);
  for (int64_t p = 0; p < 20; ++p)
    EXPECT_EQ(views[0].k[views[0].row(p) * d], static_cast<float>(p * 10));
  for (int64_t p : {0, 1, 16, 17, 18, 19}) {  // sink positions and the last window
    EXPECT_EQ(views[1].k[views[1].row(p) * d], static_cast<float>(p * 10 + 1)) << p;
    EXPECT_EQ(views[1].v[views[1].row(p) * d + d - 1], -static_cast<float>(p * 10 + 1)) << p;
  }
  EXPECT_EQ(cache.bytes_allocated(), static_cast<size_t>(11 + kKvGrowRows + 6) * 2 * d * sizeof(float));
  EXPECT_EQ(cache.bytes_dense_equivalent(), static_cast<size_t>(20 * 2) * 2 * d * sizeof(float));
}

TEST(KvCache, FullHeadsGrowByAQuarterOnceLarge) {
  const int64_t d = 2, n = 2000;
  KvCache cache(1, 1, d);
  cache.configure_layer(0, {AttnMode::fa}, SsaOptions{});
  std::vector<float> k(static_cast<size_t>(n * d), 1.f);
  cache.append(0, k.data(), k.data(), 0, n);
  EXPECT_EQ(cache.rows_allocated(0, 0), n);  // exact after prefill
  cache.append(0, k.data(), k.data(), n, 1);
  EXPECT_EQ(cache.rows_allocated(0, 0), n + n / 4);
}

// Loader: a lookup over the fixture with one tensor hidden or replaced.
TensorLookup patched_lookup(std::shared_ptr<WeightStore> store, const std::string& name,
                            std::optional<Shape> fake_shape) {
  return [store, name, fake_shape](const std::string& n) -> std::optional<TensorView> {
    if (!store->contains(n)) return std::nullopt;
    if (n != name) return store->get(n);
    if (!fake_shape) return std::nullopt;
    TensorView t = store->get(n);
    t.shape = *fake_shape;  // same bytes, wrong shape for the config
    return t;
  };
}

std::string load_error(const std::string& dir, const std::string& name, std::optional<Shape> shape) {
  auto store = std::make_shared<WeightStore>(WeightStore::open(dir));
  try {
    model_build(config_load(dir), patched_lookup(store, name, shape), store, dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ModelLoad, MissingTensorIsNamedWithExpectedShape) {
  const std::string msg =
      load_error(fixture_dir("hf/qwen3-tiny"), "model.layers.2.mlp.up_proj.weight", std::nullopt);
  EXPECT_NE(msg.find("'model.layers.2.mlp.up_proj.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[512, 192]"), std::string::npos) << msg;
}

TEST(ModelLoad, WrongShapeNamesTensorExpectedAndActual) {
  const std::string msg = load_error(fixture_dir("hf/qwen3-tiny"), "model.layers.1.self_attn.k_proj.weight",
                                     Shape{192, 128});
  EXPECT_NE(msg.find("'model.layers.1.self_attn.k_proj.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected shape [128, 192]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("got [192, 128]"), std::string::npos) << msg;
}

TEST(ModelLoad, UntiedModelNeedsLmHeadAndQwen2NeedsBias) {
  EXPECT_NE(load_error(fixture_dir("hf/llama3-tiny"), "lm_head.weight", std::nullopt).find("'lm_head.weight'"),
            std::string::npos);
  EXPECT_NE(load_error(fixture_dir("hf/qwen2-tiny"), "model.layers.0.self_attn.q_proj.bias", std::nullopt)
                .find("'model.layers.0.self_attn.q_proj.bias'"),
            std::string::npos);
  EXPECT_NE(load_error(fixture_dir("hf/qwen3-tiny"), "model.layers.0.self_attn.q_norm.weight", std::nullopt)
                .find("expected shape [64]"),
            std::string::npos);
}

TEST(ModelLoad, OutOfRangeTokenIdIsAnError) {
  Model m = model_load(fixture_dir("hf/qwen2-tiny"));
  Request r = request_start(m);
  const int64_t bad[] = {1, m.config.vocab_size};
  EXPECT_THROW(model_prefill(m, r, bad, 2), Error);
}

}  // namespace
}  // namespace elastic
