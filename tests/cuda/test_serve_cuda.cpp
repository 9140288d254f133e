// The serving engine on CUDA (batched paged attention, attention_paged.cu) against the CPU
// reference, at two levels:
//   1. model_forward_batch: one schedule of several sequences (whole-prompt prefills joining a
//      running batch, a multi-row chunk at pos0 > 0 whose past is gathered from the pages, decode
//      rows of every sequence in one launch, 40 decode steps so that SSA rings of 80 rows wrap)
//      run with the CPU backend (fp32 host pool) and the CUDA backend (bf16 device pool); every
//      logits row compared, for dense, FA/SSA hybrids, all-SSA and XA/SSA routings, on qwen3-tiny
//      (d = 64, 4 / 2 heads) and llama3-tiny (d = 32, 8 / 2 heads: G = 4), the pools' free lists
//      scrambled so that a head's pages are not in order. The CUDA batch is also compared with
//      the CUDA single-request path (model_prefill with the device KvStore).
//   2. The Engine: greedy outputs of concurrent requests on CUDA equal generate() on CUDA run on
//      each request alone (the loop `elastic generate --backend cuda` runs), also when the pool
//      is so small that sequences are preempted and recomputed.
// Skipped without a CUDA device.
//
// Tolerance (level 1): the CUDA path rounds q, k, v, the GEMM inputs and the attention weights
// to bf16 (the CPU path is fp32 throughout); each CUDA path is within 6e-3 of the float64
// goldens on these fixtures (docs/gpu-notes.md run 8), so CPU and CUDA differ by at most ~1e-2
// in max-abs / max-ref of a logits row; 1.5e-2 keeps a margin (as test_chunked_cuda), while a
// wrong page, ring row, position or mode (attention over other keys) moves logits by 1e-1 or more.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/attention_paged.h"
#include "cuda_test_util.h"
#include "elastic/batch_forward.h"
#include "elastic/cuda/backend_cuda.h"
#include "elastic/engine.h"
#include "elastic/kv_pool.h"
#include "elastic/model.h"
#include "elastic/routing.h"
#include "elastic/sampling.h"

namespace elastic {
namespace {

constexpr double kCpuVsCudaTol = 1.5e-2;

std::string fixture(const std::string& name) {
  return std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/" + name;
}

double max_rel(const float* a, const float* b, size_t count) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < count; ++i) {
    err = std::max(err, std::fabs(double(a[i]) - double(b[i])));
    ref = std::max(ref, std::fabs(double(b[i])));
  }
  return ref > 0 ? err / ref : err;
}

// Heads alternate: even KV heads `a`, odd ones `b` (layer-dependent when `shift`).
class PatternRouting final : public RoutingPolicy {
 public:
  PatternRouting(AttnMode a, AttnMode b, bool shift) : a_(a), b_(b), shift_(shift) {}
  LayerRoute route(int64_t layer, const float*, int64_t, int64_t hkv, int64_t) override {
    LayerRoute r;
    for (int64_t h = 0; h < hkv; ++h)
      r.modes.push_back(((h + (shift_ ? layer : 0)) % 2 == 0) ? a_ : b_);
    return r;
  }

 private:
  AttnMode a_, b_;
  bool shift_;
};

// SSA: block 16, sink 16, window 64 (rings of 80 rows); XA: block 64, stride 16 (large blocks:
// few sit near the selection threshold, so bf16 rounding does not flip one between CPU and CUDA).
AttnOptions small_attn() {
  AttnOptions o;
  o.ssa.block = 16;
  o.ssa.sink_tokens = 16;
  o.ssa.local_tokens = 64;
  o.xa.block = 64;
  o.xa.stride = 16;
  return o;
}

std::vector<int64_t> ids_of(int64_t n, int64_t seed, int64_t vocab) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back((seed * 7919 + i * 104729 + i * i * 31) % vocab);
  return ids;
}

// Takes and gives back pages in a shuffled order, so that later sequences get scattered pages.
void scramble(KvPool& pool, const ModelConfig& c, uint64_t seed) {
  std::vector<KvPoolSeq> seqs;
  std::vector<AttnMode> modes(size_t(c.num_kv_heads), AttnMode::fa);
  for (int i = 0; i < 6; ++i) {
    seqs.push_back(pool.make_seq());
    for (int64_t l = 0; l < c.num_layers; ++l) {
      pool.configure_layer(seqs.back(), l, modes.data(), {});
      pool.reserve(seqs.back(), l, 7 + 5 * i);
    }
  }
  std::mt19937_64 rng(seed);
  std::shuffle(seqs.begin(), seqs.end(), rng);
  for (KvPoolSeq& s : seqs) pool.release(s);
}

// One step of the schedule: which sequences feed which rows.
struct Feed {
  int seq;
  int64_t rows;  // prompt rows (first feed), a chunk, or 1 (decode)
};

// The schedule: A and B prefill; then A decodes while C prefills and B takes a 29-row chunk
// (its past gathered from the pages); then everyone decodes. B's routing must not be XA (its
// chunk starts at a position that is not a multiple of the XA block).
std::vector<std::vector<Feed>> schedule(int64_t decode_steps) {
  std::vector<std::vector<Feed>> steps = {{{0, 150}, {1, 70}}, {{0, 1}, {1, 29}, {2, 64}}};
  for (int64_t t = 0; t < decode_steps; ++t) steps.push_back({{0, 1}, {1, 1}, {2, 1}});
  return steps;
}

// Runs the schedule through model_forward_batch; returns every logits row of every sequence.
std::vector<std::vector<std::vector<float>>> run_batch(
    const Model& m, const std::vector<RoutingPolicy*>& policies, const AttnOptions& attn,
    const std::vector<std::vector<int64_t>>& tokens) {
  const int S = int(policies.size());
  const int64_t V = m.config.vocab_size;
  KvPool pool(4096, 16, m.config.num_layers, m.config.num_kv_heads, m.config.head_dim,
              m.backend.get());
  scramble(pool, m.config, 7);
  std::vector<SeqState> st(static_cast<size_t>(S));
  for (int s = 0; s < S; ++s) {
    st[size_t(s)].kv = pool.make_seq();
    st[size_t(s)].routing = policies[size_t(s)];
  }
  std::vector<std::vector<std::vector<float>>> got(static_cast<size_t>(S));
  std::vector<int64_t> fed(size_t(S), 0);
  BatchWorkspace ws;
  for (const std::vector<Feed>& step : schedule(40)) {
    Batch b;
    std::vector<SeqState*> states;
    for (const Feed& f : step) {
      b.add(tokens[size_t(f.seq)].data() + fed[size_t(f.seq)], f.rows, fed[size_t(f.seq)], f.seq,
            BatchLogits::all);
      states.push_back(&st[size_t(f.seq)]);
    }
    const std::vector<float>& logits = model_forward_batch(m, b, states.data(), pool, attn, ws);
    EXPECT_EQ(int64_t(logits.size()), b.rows() * V);
    int64_t row = 0;
    for (const Feed& f : step) {
      for (int64_t i = 0; i < f.rows; ++i, ++row)
        got[size_t(f.seq)].emplace_back(logits.begin() + row * V, logits.begin() + (row + 1) * V);
      fed[size_t(f.seq)] += f.rows;
    }
  }
  for (int s = 0; s < S; ++s) EXPECT_EQ(st[size_t(s)].length, fed[size_t(s)]);
  for (int s = 0; s < S; ++s) pool.release(st[size_t(s)].kv);
  EXPECT_EQ(pool.pages_free(), pool.num_pages());
  return got;
}

// The same tokens fed to one request per sequence through model_prefill (the device KvStore on
// CUDA): the single-request path, chunk by chunk as the schedule feeds them.
std::vector<std::vector<float>> run_alone(const Model& m, RoutingPolicy* policy,
                                          const AttnOptions& attn,
                                          const std::vector<int64_t>& tokens, int seq) {
  Request r = request_start(m, policy);
  r.attn = attn;
  PrefillOptions all;
  all.logits = LogitsOutput::all;
  const int64_t V = m.config.vocab_size;
  std::vector<std::vector<float>> out;
  for (const std::vector<Feed>& step : schedule(40))
    for (const Feed& f : step) {
      if (f.seq != seq) continue;
      const std::vector<float>& logits = model_prefill(m, r, tokens.data() + r.length, f.rows, all);
      for (int64_t i = 0; i < f.rows; ++i)
        out.emplace_back(logits.begin() + i * V, logits.begin() + (i + 1) * V);
    }
  return out;
}

// A fixture by name, or "synthetic:NAME" (model_synthetic: shapes no fixture has, d = 128 / GQA
// 8 and GQA 1), on `backend`.
Model model_named(const std::string& name, std::shared_ptr<Backend> backend) {
  const std::string prefix = "synthetic:";
  if (name.rfind(prefix, 0) == 0) return model_synthetic(name.substr(prefix.size()), 1, backend);
  return model_load(fixture(name), backend);
}

void check_cpu_vs_cuda(const std::string& name, const std::vector<RoutingPolicy*>& policies,
                       const char* label) {
  SCOPED_TRACE(name + " " + label);
  const AttnOptions attn = small_attn();
  const Model cpu = model_named(name, backend_cpu());
  const Model gpu = model_named(name, backend_cuda(CudaBackendOptions{false}));
  const int64_t V = cpu.config.vocab_size;
  std::vector<std::vector<int64_t>> tokens;
  for (int s = 0; s < 3; ++s) tokens.push_back(ids_of(300, 11 + s, V));
  const auto want = run_batch(cpu, policies, attn, tokens);
  const auto got = run_batch(gpu, policies, attn, tokens);
  ASSERT_EQ(want.size(), got.size());
  for (size_t s = 0; s < want.size(); ++s) {
    ASSERT_EQ(want[s].size(), got[s].size());
    double worst = 0, worst_prefill = 0;
    for (size_t t = 0; t < want[s].size(); ++t) {
      const double e = max_rel(got[s][t].data(), want[s][t].data(), size_t(V));
      EXPECT_LE(e, kCpuVsCudaTol) << "sequence " << s << " row " << t;
      worst = std::max(worst, e);
      if (t + 40 < want[s].size()) worst_prefill = std::max(worst_prefill, e);
    }
    const std::vector<std::vector<float>> alone =
        run_alone(gpu, policies[s], attn, tokens[s], int(s));
    ASSERT_EQ(alone.size(), got[s].size());
    double worst_alone = 0;
    for (size_t t = 0; t < alone.size(); ++t) {
      const double e = max_rel(got[s][t].data(), alone[t].data(), size_t(V));
      EXPECT_LE(e, kCpuVsCudaTol) << "sequence " << s << " row " << t
                                  << " (CUDA batch vs CUDA alone)";
      worst_alone = std::max(worst_alone, e);
    }
    std::printf(
        "  %-12s %-8s seq %zu (%zu rows): CUDA batch vs CPU batch max %.2e (prefill rows %.2e), "
        "vs CUDA alone %.2e\n",
        name.c_str(), label, s, want[s].size(), worst, worst_prefill, worst_alone);
  }
}

TEST(CudaServe, BatchForwardMatchesCpuForEveryMode) {
  REQUIRE_GPU();
  PatternRouting hybrid(AttnMode::fa, AttnMode::ssa, true),
      all_sa(AttnMode::ssa, AttnMode::ssa, false);
  PatternRouting xa_ssa(AttnMode::xa, AttnMode::ssa, true),
      fa_xa(AttnMode::fa, AttnMode::xa, false);
  // The decode kernel's versions: the register kernel with two key steps in flight, with the block
  // table read a step ahead, with one step, and the default (the shared-memory ring) last.
  for (auto [depth, prefetch, ring] : {std::tuple{2, false, false}, std::tuple{1, true, false},
                                       std::tuple{1, false, false}, std::tuple{1, false, true}}) {
    cuda::detail::set_paged_decode_depth(depth);
    cuda::detail::set_paged_decode_prefetch(prefetch);
    cuda::detail::set_paged_decode_ring(ring);
    std::printf("  decode %s\n", ring       ? "ring"
                                 : prefetch ? "depth 1, table prefetch"
                                            : (depth == 2 ? "depth 2" : "depth 1"));
    // d 64 GQA 2, d 32 GQA 4, d 128 GQA 8, d 64 GQA 1.
    for (const char* name : {"qwen3-tiny", "llama3-tiny", "synthetic:qwen3-tiny-d128-g8",
                             "synthetic:qwen3-tiny-mha"}) {
      check_cpu_vs_cuda(name, {&hybrid, nullptr, &all_sa}, "fa-ssa");
      check_cpu_vs_cuda(name, {&xa_ssa, &all_sa, &fa_xa}, "xa");  // B (the chunk) is not XA
    }
  }
  // The defaults, for the tests after this one (the loop ends with them).
}

// Small shapes for compute-sanitizer (scripts/gpu-check.sh): the store, gather, decode and merge
// kernels with wrapped rings and scattered pages.
TEST(CudaSanitizerServe, SmallBatch) {
  REQUIRE_GPU();
  PatternRouting hybrid(AttnMode::fa, AttnMode::ssa, true);
  const Model gpu = model_load(fixture("qwen3-tiny"), backend_cuda(CudaBackendOptions{false}));
  std::vector<std::vector<int64_t>> tokens;
  for (int s = 0; s < 3; ++s) tokens.push_back(ids_of(300, 21 + s, gpu.config.vocab_size));
  for (const bool ring : {false, true}) {  // the register kernel, then the default ring
    cuda::detail::set_paged_decode_ring(ring);
    const auto got = run_batch(gpu, {&hybrid, &hybrid, nullptr}, small_attn(), tokens);
    EXPECT_EQ(got[0].size(), size_t(150 + 1 + 40));
  }
}

// --- The Engine ------------------------------------------------------------------------------

std::vector<int64_t> generate_alone(const Model& m, RoutingPolicy* routing, const AttnOptions& attn,
                                    const std::vector<int64_t>& prompt, int64_t max_tokens) {
  Request r = request_start(m, routing);
  r.attn = attn;
  GenerateOptions g;
  g.max_new_tokens = max_tokens;
  Sampler sampler(SamplingParams{});
  std::vector<int64_t> out = generate(m, r, prompt, g, sampler);
  if (!out.empty() && std::find(m.config.eos_token_ids.begin(), m.config.eos_token_ids.end(),
                                out.back()) != m.config.eos_token_ids.end())
    out.pop_back();  // the engine does not emit the stop id
  return out;
}

void check_engine_equals_alone(int64_t kv_pages, bool expect_preemption) {
  const Model m = model_load(std::string(ELASTIC_SHARED_DIR) + "/data/tinystories-656k",
                             backend_cuda(CudaBackendOptions{false}));
  AttnOptions attn;
  attn.ssa.block = 8;
  attn.ssa.sink_tokens = 8;
  attn.ssa.local_tokens = 16;
  auto hybrid = std::make_shared<PatternRouting>(AttnMode::fa, AttnMode::ssa, true);
  auto all_sa = std::make_shared<PatternRouting>(AttnMode::ssa, AttnMode::ssa, false);
  std::vector<std::shared_ptr<RoutingPolicy>> policies = {nullptr, hybrid, all_sa};
  if (expect_preemption) policies = {nullptr};
  const int64_t max_tokens = expect_preemption ? 60 : 48;
  EngineOptions eo;
  eo.kv_pages = kv_pages;
  eo.page_rows = 4;
  eo.max_batch_tokens = 96;
  eo.attn = attn;
  Engine engine(m, eo);
  const int N = 7;
  std::vector<std::vector<int64_t>> prompts;
  std::vector<std::shared_ptr<EngineStream>> streams;
  for (int i = 0; i < N; ++i) {
    prompts.push_back(ids_of(expect_preemption ? 12 + i : 20 + 9 * i, 30 + i, m.config.vocab_size));
    EngineRequest r;
    r.prompt = prompts.back();
    r.max_tokens = max_tokens;
    r.routing = policies[size_t(i) % policies.size()];
    r.stop_ids = m.config.eos_token_ids;
    streams.push_back(engine.submit(r));
    ASSERT_NE(streams.back(), nullptr);
  }
  // Every stream drained before the first generate() alone: the engine's thread owns the model's
  // backend (its stream and workspaces) while sequences run, so a request alone on this thread
  // at the same time would share them (the first device run did that and compared garbage).
  std::vector<std::vector<int64_t>> outputs(N);
  for (int i = 0; i < N; ++i)
    while (!streams[size_t(i)]->wait(outputs[size_t(i)], std::chrono::milliseconds(200))) {
    }
  int64_t preempted = 0;
  for (int i = 0; i < N; ++i) {
    const std::vector<int64_t>& got = outputs[size_t(i)];
    const std::vector<int64_t> want = generate_alone(m, policies[size_t(i) % policies.size()].get(),
                                                     attn, prompts[size_t(i)], max_tokens);
    EXPECT_EQ(got, want) << "request " << i;
    EXPECT_NE(streams[size_t(i)]->finish_reason(), FinishReason::error)
        << streams[size_t(i)]->error();
    preempted += streams[size_t(i)]->preemptions();
  }
  EXPECT_EQ(engine.stats().kv_pages_used, 0);
  if (expect_preemption) {
    EXPECT_GT(preempted, 0);
  }
  std::printf(
      "  engine on CUDA: %d concurrent greedy requests == generate() alone on CUDA (%lld "
      "preemptions)\n",
      N, static_cast<long long>(preempted));
}

TEST(CudaServe, ConcurrentGreedyEqualsEachAlone) {
  REQUIRE_GPU();
  check_engine_equals_alone(4096, false);
}

TEST(CudaServe, PreemptedSequencesContinueAsIfAlone) {
  REQUIRE_GPU();
  check_engine_equals_alone(200, true);
}

}  // namespace
}  // namespace elastic
