// The serving engine's parts against the single-request reference: the paged pool keeps what the
// request KvCache keeps; attention through page tables equals attention through the contiguous
// cache; a mixed batch (prefills and decodes of several sequences, each with its own routing)
// gives each sequence the logits it gets alone; the engine's greedy outputs of concurrent
// requests equal generate() run on each alone, also when the pool is so small that sequences
// are preempted and recomputed; a cancelled request gives its pages back.
#include "elastic/engine.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "elastic/batch_forward.h"
#include "elastic/error.h"
#include "elastic/kv_cache.h"
#include "elastic/kv_pool.h"
#include "elastic/model.h"
#include "elastic/router.h"
#include "elastic/routing_setup.h"
#include "elastic/sampling.h"
#include "model/model_test_util.h"

namespace elastic {
namespace {

using test::fixture_dir;
using test::relative_error;

// Same fp32 model, different summation orders (a batch's GEMM blocks rows differently from a
// request's GEMV or GEMM; key tiles end at pages): ~1e-6 relative over 3 layers, as in
// forward_test; 2e-5 leaves margin while a wrong position, page row or mode gives 1e-2 or more.
constexpr double kOrderTolerance = 2e-5;

std::string tinystories() { return std::string(ELASTIC_SHARED_DIR) + "/data/tinystories-656k"; }

AttnOptions small_ssa() {
  AttnOptions o;
  o.ssa.block = 8;
  o.ssa.sink_tokens = 8;
  o.ssa.local_tokens = 16;
  o.xa.block = 16;
  o.xa.stride = 4;
  return o;
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

std::vector<float> random_vector(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Scrambles the pool's free list so that a sequence's pages are not in order.
void scramble(KvPool& pool, int64_t layers, int64_t heads, int64_t head_dim, uint64_t seed) {
  std::vector<KvPoolSeq> seqs;
  for (int i = 0; i < 6; ++i) {
    seqs.push_back(pool.make_seq());
    std::vector<AttnMode> modes(static_cast<size_t>(heads), AttnMode::fa);
    for (int64_t l = 0; l < layers; ++l) pool.configure_layer(seqs.back(), l, modes.data(), {});
    const int64_t n = 7 + 5 * i;
    std::vector<float> z(static_cast<size_t>(n * heads * head_dim), 0.f);
    for (int64_t l = 0; l < layers; ++l) pool.append(seqs.back(), l, z.data(), z.data(), 0, n);
  }
  std::mt19937_64 rng(seed);
  std::shuffle(seqs.begin(), seqs.end(), rng);
  for (KvPoolSeq& s : seqs) pool.release(s);
}

TEST(KvPool, HoldsWhatTheRequestCacheHoldsInBoundedPages) {
  const int64_t Hkv = 2, d = 8, page = 4;
  const AttnOptions attn = small_ssa();  // ring: 8 sink + 16 window rows
  KvPool pool(256, page, 1, Hkv, d);
  scramble(pool, 1, Hkv, d, 7);
  KvCache cache(1, Hkv, d);
  KvPoolSeq seq = pool.make_seq();
  const std::vector<AttnMode> modes = {AttnMode::fa, AttnMode::ssa};
  cache.configure_layer(0, modes, attn.ssa);
  pool.configure_layer(seq, 0, modes.data(), attn.ssa);
  int64_t pos = 0;
  for (int64_t n : {13, 1, 1, 30, 1, 9, 1}) {
    const std::vector<float> k = random_vector(size_t(n * Hkv * d), 100 + pos);
    const std::vector<float> v = random_vector(size_t(n * Hkv * d), 200 + pos);
    ASSERT_LE(pool.pages_needed(seq, pos + n), pool.pages_free());
    cache.append(0, k.data(), v.data(), pos, n);
    pool.append(seq, 0, k.data(), v.data(), pos, n);
    pos += n;
    const std::vector<KvHeadView> a = cache.views(0), b = pool.views(seq, 0);
    for (int64_t h = 0; h < Hkv; ++h)
      for (int64_t p = 0; p < pos; ++p) {
        if (a[h].ring && p >= a[h].sink_tokens && p < pos - a[h].window_tokens)
          continue;  // dropped
        const int64_t row = a[h].row(p);
        for (int64_t t = 0; t < d; ++t) {
          ASSERT_EQ(a[h].k_row(row, d)[t], b[h].k_row(b[h].row(p), d)[t])
              << "head " << h << " pos " << p;
          ASSERT_EQ(a[h].v_row(row, d)[t], b[h].v_row(b[h].row(p), d)[t])
              << "head " << h << " pos " << p;
        }
      }
  }
  // FA head: one page per 4 positions; SSA head: (8 + 16) / 4 pages, however long it runs.
  EXPECT_EQ(static_cast<int64_t>(seq.heads[0].pages.size()), (pos + page - 1) / page);
  EXPECT_EQ(static_cast<int64_t>(seq.heads[1].pages.size()), 24 / page);
  // Bytes: every position of the FA head, sink + window rows of the SSA head.
  EXPECT_EQ(pool.seq_bytes(seq), size_t(pos + 24) * 2 * d * sizeof(float));
  EXPECT_EQ(pool.seq_bytes_dense(seq), size_t(2 * pos) * 2 * d * sizeof(float));
  EXPECT_EQ(pool.pages_used(), KvPool::seq_pages(seq));
  pool.release(seq);
  EXPECT_EQ(pool.pages_free(), pool.num_pages());
}

// attention_cpu reading its past through page tables equals reading the contiguous cache: the
// same keys in the same order, so prefill chunks agree exactly; decode splits its key units at
// page ends (other partial sums): fp32 rounding.
TEST(PagedAttention, EqualsTheContiguousCacheInEveryMode) {
  const int64_t Hq = 4, Hkv = 2, d = 16, page = 4, past = 64;
  const AttnOptions attn = small_ssa();
  for (AttnMode mode : {AttnMode::fa, AttnMode::ssa, AttnMode::xa}) {
    const std::vector<AttnMode> modes = {mode, mode == AttnMode::fa ? AttnMode::ssa : AttnMode::fa};
    KvCache cache(1, Hkv, d);
    KvPool pool(512, page, 1, Hkv, d);
    scramble(pool, 1, Hkv, d, 11);
    KvPoolSeq seq = pool.make_seq();
    cache.configure_layer(0, modes, attn.ssa);
    pool.configure_layer(seq, 0, modes.data(), attn.ssa);
    const std::vector<float> k = random_vector(size_t(past * Hkv * d), 1),
                             v = random_vector(size_t(past * Hkv * d), 2);
    cache.append(0, k.data(), v.data(), 0, past);
    pool.append(seq, 0, k.data(), v.data(), 0, past);
    for (int64_t n : {int64_t{32}, int64_t{1}}) {
      const std::vector<float> q = random_vector(size_t(n * Hq * d), 3),
                               kn = random_vector(size_t(n * Hkv * d), 4),
                               vn = random_vector(size_t(n * Hkv * d), 5);
      std::vector<float> out_cache(size_t(n * Hq * d)), out_pool(out_cache.size());
      const std::vector<KvHeadView> vc = cache.views(0), vp = pool.views(seq, 0);
      AttnArgs a;
      a.q = q.data();
      a.k = kn.data();
      a.v = vn.data();
      a.modes = modes.data();
      a.n = n;
      a.pos0 = past;
      a.num_heads = Hq;
      a.num_kv_heads = Hkv;
      a.head_dim = d;
      a.opt = attn;
      a.out = out_cache.data();
      a.past = vc.data();
      attention_cpu(a);
      a.out = out_pool.data();
      a.past = vp.data();
      attention_cpu(a);
      if (n > 1)
        EXPECT_EQ(out_cache, out_pool) << attn_mode_name(mode) << " prefill chunk";
      else
        EXPECT_LT(relative_error(out_pool, out_cache), 1e-6) << attn_mode_name(mode) << " decode";
    }
  }
}

// A request's logits alone: one-shot prefill of the prompt, then one decode row per token.
struct Alone {
  std::vector<std::vector<float>> logits;  // [steps][V]: after the prompt, then after each token
};

Alone run_alone(const Model& m, RoutingPolicy* routing, const AttnOptions& attn,
                const std::vector<int64_t>& prompt, const std::vector<int64_t>& next) {
  Request r = request_start(m, routing);
  r.attn = attn;
  Alone a;
  a.logits.push_back(model_prefill(m, r, prompt.data(), static_cast<int64_t>(prompt.size())));
  for (int64_t t : next) a.logits.push_back(model_prefill(m, r, &t, 1));
  return a;
}

std::vector<int64_t> ids_of(int64_t n, int64_t seed, int64_t vocab) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back((seed * 7919 + i * 104729 + i * i * 31) % vocab);
  return ids;
}

// Three sequences with different routings join and leave one batch: step 0 prefills A and B,
// step 1 decodes A and B and prefills C, then all three decode. Each sequence's logits equal its
// logits alone; its routes equal the ones it gets alone.
void check_mixed_batch(const Model& m, std::vector<RoutingPolicy*> policies,
                       const AttnOptions& attn) {
  const int64_t V = m.config.vocab_size;
  const std::vector<std::vector<int64_t>> prompts = {ids_of(70, 1, V), ids_of(45, 2, V),
                                                     ids_of(33, 3, V)};
  const int64_t decode_steps = 40;  // past the SSA ring (8 + 16) so the rings wrap
  std::vector<std::vector<int64_t>> next(3);
  for (int s = 0; s < 3; ++s) next[s] = ids_of(decode_steps, 10 + s, V);
  KvPool pool(4096, 4, m.config.num_layers, m.config.num_kv_heads, m.config.head_dim);
  scramble(pool, m.config.num_layers, m.config.num_kv_heads, m.config.head_dim, 5);
  std::vector<SeqState> st(3);
  for (int s = 0; s < 3; ++s) {
    st[s].kv = pool.make_seq();
    st[s].routing = policies[s];
  }
  std::vector<std::vector<std::vector<float>>> got(3);
  std::vector<int64_t> fed(3, -1);  // decode tokens fed so far (-1: prompt not yet)
  BatchWorkspace ws;
  for (int step = 0; step < decode_steps + 2; ++step) {
    Batch b;
    std::vector<SeqState*> states;
    std::vector<int> who;
    for (int s = 0; s < 3; ++s) {
      const bool start = (s < 2 && step == 0) || (s == 2 && step == 1);
      if (fed[s] < 0 && !start) continue;
      if (fed[s] >= decode_steps) continue;
      if (fed[s] < 0) {
        b.add(prompts[s].data(), static_cast<int64_t>(prompts[s].size()), 0, s, BatchLogits::last);
      } else {
        b.add(&next[s][size_t(fed[s])], 1, st[s].length, s, BatchLogits::last);
      }
      states.push_back(&st[s]);
      who.push_back(s);
    }
    if (who.empty()) break;
    const std::vector<float>& logits = model_forward_batch(m, b, states.data(), pool, attn, ws);
    ASSERT_EQ(static_cast<int64_t>(logits.size()), static_cast<int64_t>(who.size()) * V);
    for (size_t i = 0; i < who.size(); ++i) {
      got[who[i]].emplace_back(logits.begin() + int64_t(i) * V,
                               logits.begin() + int64_t(i + 1) * V);
      ++fed[who[i]];
    }
  }
  for (int s = 0; s < 3; ++s) {
    const Alone a = run_alone(m, policies[s], attn, prompts[s], next[s]);
    ASSERT_EQ(a.logits.size(), got[s].size());
    for (size_t t = 0; t < a.logits.size(); ++t)
      ASSERT_LT(relative_error(got[s][t], a.logits[t]), kOrderTolerance)
          << "sequence " << s << " step " << t;
  }
  for (int s = 0; s < 3; ++s) pool.release(st[s].kv);
  EXPECT_EQ(pool.pages_free(), pool.num_pages());
}

TEST(BatchForward, MixedBatchGivesEachSequenceItsLogitsAlone) {
  Model m = model_load(fixture_dir("hf/qwen3-tiny"));
  PatternRouting hybrid(AttnMode::fa, AttnMode::ssa, true),
      all_sa(AttnMode::ssa, AttnMode::ssa, false);
  check_mixed_batch(m, {&hybrid, nullptr, &all_sa}, small_ssa());
}

TEST(BatchForward, XaHeadsAndRecomputedChunksMatch) {
  Model m = model_load(fixture_dir("hf/qwen3-tiny"));
  PatternRouting fa_xa(AttnMode::xa, AttnMode::fa, false),
      xa_ssa(AttnMode::xa, AttnMode::ssa, true);
  check_mixed_batch(m, {&fa_xa, &xa_ssa, nullptr}, small_ssa());
}

// --decode-kv full in the batch as in a request alone: SSA heads keep their whole cache and the
// decode rows attend to all of it (the rings of small_ssa wrap within the 40 steps, so bounded
// would differ from the alone-full logits).
TEST(BatchForward, DecodeKvFullKeepsEveryHeadWhole) {
  Model m = model_load(fixture_dir("hf/qwen3-tiny"));
  PatternRouting hybrid(AttnMode::fa, AttnMode::ssa, true),
      all_sa(AttnMode::ssa, AttnMode::ssa, false), xa_ssa(AttnMode::xa, AttnMode::ssa, true);
  AttnOptions full = small_ssa();
  full.decode_kv = DecodeKv::full;
  check_mixed_batch(m, {&hybrid, &all_sa, &xa_ssa}, full);
}

// The Attention Router per sequence, each with its own sparsity bias: the batch routes every
// sequence from its own prompt as a request alone does.
TEST(BatchForward, RouterRoutesEachSequenceFromItsOwnPrompt) {
  const std::string dir = fixture_dir("hf/elastic-qwen3-fa-ssa");
  Model m = model_load(dir);
  RoutingOptions o;
  o.pool_tokens = 16;
  RoutingSetup plain = routing_setup(o, dir);
  o.sparsity_bias = 3.0;
  RoutingSetup biased = routing_setup(o, dir);
  ASSERT_NE(dynamic_cast<RouterRouting*>(plain.policy.get()), nullptr);
  check_mixed_batch(m, {plain.policy.get(), biased.policy.get(), plain.policy.get()}, plain.attn);
  // And the decisions themselves.
  KvPool pool(2048, 8, m.config.num_layers, m.config.num_kv_heads, m.config.head_dim);
  const std::vector<int64_t> p0 = ids_of(120, 4, m.config.vocab_size),
                             p1 = ids_of(90, 5, m.config.vocab_size);
  SeqState a, b;
  a.kv = pool.make_seq();
  b.kv = pool.make_seq();
  a.routing = plain.policy.get();
  b.routing = biased.policy.get();
  Batch batch;
  batch.add(p0.data(), 120, 0, 0, BatchLogits::last);
  batch.add(p1.data(), 90, 0, 1, BatchLogits::last);
  SeqState* states[] = {&a, &b};
  BatchWorkspace ws;
  model_forward_batch(m, batch, states, pool, plain.attn, ws);
  for (auto [st, prompt, setup] : {std::tuple{&a, &p0, &plain}, std::tuple{&b, &p1, &biased}}) {
    Request r = request_start(m, *setup);
    model_prefill(m, r, prompt->data(), static_cast<int64_t>(prompt->size()));
    for (int64_t l = 0; l < m.config.num_layers; ++l) {
      EXPECT_EQ(st->routes[l].modes, r.routes[l].modes) << "layer " << l;
      EXPECT_EQ(st->routes[l].router_logits, r.routes[l].router_logits) << "layer " << l;
    }
  }
}

// generate() on each request alone, greedy.
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

std::vector<int64_t> drain(EngineStream& s) {
  std::vector<int64_t> out;
  while (!s.wait(out, std::chrono::milliseconds(200))) {
  }
  return out;
}

void check_engine_equals_alone(int64_t kv_pages, int64_t max_running, bool expect_preemption,
                               const AttnOptions& attn = small_ssa(),
                               std::vector<std::shared_ptr<RoutingPolicy>> policies = {}) {
  // Preemption case: short prompts admitted together, growing past the pool (dense: every head
  // grows); otherwise mixed routings and prompt lengths.
  const int64_t max_tokens = expect_preemption ? 60 : 48;
  Model m = model_load(tinystories());
  auto hybrid = std::make_shared<PatternRouting>(AttnMode::fa, AttnMode::ssa, true);
  auto all_sa = std::make_shared<PatternRouting>(AttnMode::ssa, AttnMode::ssa, false);
  if (policies.empty() && expect_preemption) policies = {nullptr};
  if (policies.empty()) policies = {nullptr, hybrid, all_sa};
  EngineOptions eo;
  eo.kv_pages = kv_pages;
  eo.page_rows = 4;
  eo.max_running = max_running;
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
  // Drained before the first generate() alone: the engine's thread owns the model's backend
  // while sequences run (engine.h).
  std::vector<std::vector<int64_t>> outputs;
  for (int i = 0; i < N; ++i) outputs.push_back(drain(*streams[size_t(i)]));
  int64_t preempted = 0;
  for (int i = 0; i < N; ++i) {
    const std::vector<int64_t>& got = outputs[size_t(i)];
    const std::vector<int64_t> want = generate_alone(m, policies[size_t(i) % policies.size()].get(),
                                                     attn, prompts[size_t(i)], max_tokens);
    EXPECT_EQ(got, want) << "request " << i;
    EXPECT_NE(streams[size_t(i)]->finish_reason(), FinishReason::error)
        << streams[size_t(i)]->error();
    ASSERT_TRUE(streams[size_t(i)]->report().has_value());
    preempted += streams[size_t(i)]->preemptions();
  }
  const EngineStats st = engine.stats();
  EXPECT_EQ(st.kv_pages_used, 0);
  EXPECT_EQ(st.finished, N);
  if (expect_preemption) {
    EXPECT_GT(preempted, 0);
  }
}

TEST(Engine, ConcurrentGreedyEqualsEachAlone) { check_engine_equals_alone(4096, 64, false); }

// A pool too small for all seven: the latest admitted are preempted and recomputed.
TEST(Engine, PreemptedSequencesContinueAsIfAlone) {
  // Dense requests of <= 18 + 60 positions: 2 layers x 4 heads x 20 pages = 160 pages each at
  // most; the prompts fit together in 200 pages, their growth does not.
  check_engine_equals_alone(200, 64, true);
}

// Recomputes under the rules that differ between the prompt and the decode steps: XA heads
// (prompt block-sparse, decode FA) and --decode-kv full (prompt routed, decode FA over whole
// caches). A recompute fed as one span would run the generated tokens under the prompt's rules.
TEST(Engine, PreemptedXaAndDecodeKvFullContinueAsIfAlone) {
  AttnOptions full = small_ssa();
  full.decode_kv = DecodeKv::full;
  auto xa_ssa = std::make_shared<PatternRouting>(AttnMode::xa, AttnMode::ssa, true);
  auto hybrid = std::make_shared<PatternRouting>(AttnMode::fa, AttnMode::ssa, true);
  check_engine_equals_alone(200, 64, true, small_ssa(), {xa_ssa});
  check_engine_equals_alone(200, 64, true, full, {hybrid});
}

// Records the OpenMP thread count of the thread that routes (the scheduler, inside a step).
class ThreadCountRouting final : public RoutingPolicy {
 public:
  LayerRoute route(int64_t, const float*, int64_t, int64_t hkv, int64_t) override {
    seen = omp_get_max_threads();
    return LayerRoute{std::vector<AttnMode>(static_cast<size_t>(hkv), AttnMode::fa), {}, {}};
  }
  int seen = 0;
};

// The OpenMP thread count the router saw in the prefill step of a prompt of `prompt` tokens.
int scheduler_threads(const Model& m, int64_t option, int64_t batch_option = 0,
                      int64_t prompt = 8) {
  auto probe = std::make_shared<ThreadCountRouting>();
  EngineOptions eo;
  eo.threads = option;
  eo.threads_batch = batch_option;
  Engine engine(m, eo);
  EngineRequest r;
  r.prompt = ids_of(prompt, 1, m.config.vocab_size);
  r.max_tokens = 1;
  r.routing = probe;
  drain(*engine.submit(r));
  return probe->seen;
}

// OpenMP's thread count is per thread: the scheduler must run with the count of the thread that
// made the engine (`elastic serve -t N`), not with OMP_NUM_THREADS or every core. The counts
// below differ from the default (the cores), so a scheduler left at the default fails.
TEST(Engine, StepsRunWithTheCreatorsThreadCount) {
  Model m = model_load(tinystories());
  const int before = omp_get_max_threads();
  const int n = omp_get_num_procs() + 1;
  omp_set_num_threads(n);
  EXPECT_EQ(scheduler_threads(m, 0), n);
  EXPECT_EQ(scheduler_threads(m, n + 2), n + 2);
  omp_set_num_threads(before);
}

// --threads-batch: a step of more than one row (here an 8-token prefill) runs on threads_batch,
// a step of one row (a 1-token prompt, like a decode step) on threads; 0 is threads for both.
TEST(Engine, StepsOfSeveralRowsRunOnTheBatchThreadCount) {
  Model m = model_load(tinystories());
  const int n = omp_get_num_procs() + 1;
  EXPECT_EQ(scheduler_threads(m, n, n + 2, 8), n + 2);
  EXPECT_EQ(scheduler_threads(m, n, n + 2, 1), n);
  EXPECT_EQ(scheduler_threads(m, n, 0, 8), n);
  EngineOptions eo;
  eo.threads_batch = -1;
  EXPECT_THROW(Engine(m, eo), Error);
}

TEST(Engine, CancelGivesThePagesBack) {
  Model m = model_load(tinystories());
  EngineOptions eo;
  eo.kv_pages = 2048;
  Engine engine(m, eo);
  EngineRequest r;
  r.prompt = ids_of(50, 1, m.config.vocab_size);
  r.max_tokens = 400;
  auto s = engine.submit(r);
  ASSERT_NE(s, nullptr);
  std::vector<int64_t> got;
  while (got.size() < 3) s->wait(got, std::chrono::milliseconds(100));
  s->cancel();
  while (!s->wait(got, std::chrono::milliseconds(100))) {
  }
  EXPECT_EQ(s->finish_reason(), FinishReason::cancelled);
  EXPECT_LT(static_cast<int64_t>(got.size()), 400);
  EXPECT_EQ(engine.stats().kv_pages_used, 0);
}

TEST(Engine, RejectsWhatCanNeverRun) {
  Model m = model_load(tinystories());
  EngineOptions eo;
  eo.kv_pages = 16;
  Engine engine(m, eo);
  EngineRequest r;
  r.prompt = ids_of(200, 1, m.config.vocab_size);
  EXPECT_THROW(engine.submit(r), Error);  // more pages than the pool has
  r.prompt = {};
  EXPECT_THROW(engine.submit(r), Error);
  r.prompt = {1, 2, m.config.vocab_size};
  EXPECT_THROW(engine.submit(r), Error);
}

TEST(Batch, RowsCarryPositionSequenceAndLogitsFlags) {
  Batch b;
  const int64_t a[] = {5, 6, 7}, c[] = {9};
  b.add(a, 3, 0);  // training style: no logits
  b.add(c, 1, 41, 17, BatchLogits::last);
  b.add(a, 2, 8, 3, BatchLogits::all);
  batch_validate(b);
  EXPECT_EQ(b.positions(), (std::vector<int64_t>{0, 1, 2, 41, 8, 9}));
  EXPECT_EQ(b.seqs[1].seq_id, 17);
  EXPECT_EQ(b.seqs[0].seq_id, 0);
  EXPECT_EQ(b.logit_rows(), (std::vector<int64_t>{3, 4, 5}));
  b.logits.pop_back();
  EXPECT_THROW(batch_validate(b), Error);
}

}  // namespace
}  // namespace elastic
