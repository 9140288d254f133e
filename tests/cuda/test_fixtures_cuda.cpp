// The engine-core golden fixtures on the CUDA backend in device mode (plain device memory, the
// KV cache resident on the device as the backend's KvStore): every backbone fixture (head dims
// 32 and 64, the legacy-config twins) and the real TinyStories model (head dim 16) against the
// HF float64 logits, for a whole-prompt prefill and for decode token by token from the device
// KV cache; HF's greedy continuations; and an SSA ring that wraps during decode, CUDA against
// the CPU backend. Skipped when no CUDA device is present.
//
// Logits tolerance: the CUDA backend rounds weights and the activations entering every linear
// layer and attention to bf16 (2^-9 relative each) and accumulates in fp32. Over the 2-3 layers
// of these models the measured error of the qwen3-tiny fixture was 4e-3..6e-3 (max-abs /
// max-ref, docs/gpu-notes.md run 5); the bound 3e-2 keeps a 5x margin while a wrong op (RoPE
// variant, bias, GQA mapping, a misplaced KV row) gives errors of 1e-1 and more.
//
// Greedy continuations: bf16 rounding may flip an argmax only where the top two logits are
// closer than the logits error. The test follows HF's ids; at the first step where CUDA's argmax
// differs it requires that HF's token is within 2 x 3e-2 x max|logit| of CUDA's top logit (a
// near-tie, so the flip is rounding, not a bug) and stops comparing that input (the sequences
// legitimately diverge from there). It prints how many tokens matched per input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "fixture_names.h"
#include "cuda_test_util.h"
#include "elastic/cuda/backend_cuda.h"
#include "elastic/cuda/cuda_check.h"
#include "elastic/fileio.h"
#include "elastic/model.h"
#include "elastic/routing.h"
#include "elastic/safetensors.h"
#include <nlohmann/json.hpp>

namespace elastic {
namespace {

constexpr double kLogitsTol = 3e-2;  // max-abs / max-ref, see the header comment

// max |a - b| / max |b| over `count` values.
double max_rel(const float* a, const float* b, size_t count) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    err = std::max(err, std::fabs(double(a[i]) - b[i]));
    ref = std::max(ref, std::fabs(double(b[i])));
  }
  return err / std::max(ref, 1e-30);
}

int64_t argmax(const float* x, int64_t n) { return int64_t(std::max_element(x, x + n) - x); }

std::shared_ptr<Backend> device_backend() { return backend_cuda(CudaBackendOptions{false}); }

void check_case(const std::string& model_dir, const std::string& case_dir, const std::string& label) {
  const nlohmann::json cs = nlohmann::json::parse(read_file(case_dir + "/case.json"));
  const WeightStore expected = WeightStore::open(case_dir + "/expected.safetensors");
  const Model model = model_load(model_dir, device_backend());
  const int64_t V = model.config.vocab_size;
  for (const auto& in : cs["inputs"]) {
    SCOPED_TRACE(label + " " + in["input_ids"].get<std::string>());
    const std::vector<int64_t> ids = expected.get(in["input_ids"]).to_i64();
    const std::vector<float> want = expected.get(in["logits"]).to_f32();
    const int64_t T = int64_t(ids.size());
    ASSERT_EQ(int64_t(want.size()), T * V);

    // Whole prompt in one prefill, logits of every position.
    Request r = request_start(model);
    ASSERT_NE(r.kv_store, nullptr) << "the CUDA backend keeps the KV cache on the device";
    PrefillOptions all;
    all.logits = LogitsOutput::all;
    const double prefill_err = max_rel(model_prefill(model, r, ids.data(), T, all).data(), want.data(), want.size());
    EXPECT_LE(prefill_err, kLogitsTol) << "prefill logits";
    EXPECT_EQ(r.kv_store->length(0), T);

    // Half the prompt, then decode the rest one token at a time from the device KV cache.
    Request dr = request_start(model);
    const int64_t first = std::max<int64_t>(1, T / 2);
    model_prefill(model, dr, ids.data(), first);
    double decode_err = 0;
    for (int64_t t = first; t < T; ++t) {
      const std::vector<float>& got = model_prefill(model, dr, &ids[size_t(t)], 1);
      ASSERT_EQ(int64_t(got.size()), V);
      decode_err = std::max(decode_err, max_rel(got.data(), want.data() + t * V, size_t(V)));
    }
    EXPECT_LE(decode_err, kLogitsTol) << "decode logits";

    // HF greedy continuation, followed token by token.
    const std::vector<int64_t> want_ids = expected.get(in["greedy_ids"]).to_i64();
    Request g = request_start(model);
    std::vector<float> logits = model_prefill(model, g, ids.data(), T);
    size_t matched = 0;
    bool flipped = false;
    for (size_t s = 0; s < want_ids.size(); ++s) {
      const int64_t ours = argmax(logits.data(), V), hf = want_ids[s];
      if (ours != hf) {
        double ref = 0;
        for (float x : logits) ref = std::max(ref, std::fabs(double(x)));
        const double gap = double(logits[size_t(ours)]) - logits[size_t(hf)];
        EXPECT_LE(gap, 2 * kLogitsTol * ref) << "greedy step " << s << ": CUDA chose " << ours << ", HF "
                                             << hf << " (not a near-tie)";
        flipped = true;
        break;
      }
      ++matched;
      if (s + 1 < want_ids.size()) logits = model_prefill(model, g, &hf, 1);
    }
    std::printf("  %-30s T=%4lld prefill %.2e decode %.2e greedy %zu/%zu%s\n", label.c_str(), (long long)T,
                prefill_err, decode_err, matched, want_ids.size(), flipped ? " (near-tie flip)" : "");
  }
}

const std::vector<std::string> kBackboneCases = {"qwen3-tiny",      "llama3-tiny",
                                                 "qwen2-tiny",      "qwen3-yarn-tiny",
                                                 "llama3-tiny-legacy-config", "qwen3-yarn-tiny-legacy-config"};

class CudaBackboneGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaBackboneGolden, LogitsDecodeGreedyMatchHf) {
  REQUIRE_GPU();
  const std::string dir = std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/" + GetParam();
  check_case(dir, dir, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Hf, CudaBackboneGolden, ::testing::ValuesIn(kBackboneCases),
                         test::FixtureParamName());

TEST(CudaRealModelGolden, TinyStoriesHeadDim16) {
  REQUIRE_GPU();
  check_case(std::string(ELASTIC_SHARED_DIR) + "/data/tinystories-656k",
             std::string(ELASTIC_SHARED_DIR) + "/fixtures/real/tinystories-656k", "tinystories-656k");
}

// FA-SSA on llama3-tiny (d = 32) with a small SSA window, so the device ring buffers wrap during
// decode: CUDA (device KvStore) against the CPU backend (host KvCache), logits of every step.
TEST(CudaKvStore, SsaRingWrapsDuringDecodeLikeCpu) {
  REQUIRE_GPU();
  const std::string dir = std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/llama3-tiny";
  const Model cpu = model_load(dir), gpu = model_load(dir, device_backend());
  const int64_t L = cpu.config.num_layers, Hkv = cpu.config.num_kv_heads, V = cpu.config.vocab_size;
  std::vector<std::vector<uint8_t>> retrieval(size_t(L), std::vector<uint8_t>(size_t(Hkv), 1));
  for (int64_t l = 0; l < L; ++l) retrieval[size_t(l)][size_t(l % Hkv)] = 0;  // one SSA head per layer
  StaticRouting routing(retrieval, AttnMode::fa, AttnMode::ssa);
  std::vector<int64_t> ids(260);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int64_t((i * 7919 + 13) % size_t(V));
  Request rc = request_start(cpu, &routing), rg = request_start(gpu, &routing);
  for (Request* r : {&rc, &rg}) {
    r->attn.ssa.block = 32;
    r->attn.ssa.sink_tokens = 32;
    r->attn.ssa.local_tokens = 64;  // ring of 32 + 64 rows: wraps from position 96 on
  }
  const int64_t prompt = 80;
  const std::vector<float> c0 = model_prefill(cpu, rc, ids.data(), prompt);
  const std::vector<float> g0 = model_prefill(gpu, rg, ids.data(), prompt);
  double worst = max_rel(g0.data(), c0.data(), c0.size());
  for (int64_t t = prompt; t < int64_t(ids.size()); ++t) {
    const std::vector<float> c = model_prefill(cpu, rc, &ids[size_t(t)], 1);
    const std::vector<float>& g = model_prefill(gpu, rg, &ids[size_t(t)], 1);
    worst = std::max(worst, max_rel(g.data(), c.data(), c.size()));
  }
  std::printf("  llama3-tiny FA-SSA ring decode to %zu: worst max-abs/max-ref vs CPU %.2e\n", ids.size(), worst);
  EXPECT_LE(worst, kLogitsTol);
  EXPECT_TRUE(rc.cache.is_ring(0, 0));
  // Ring heads hold sink + window rows, full heads every position (bf16: 2 bytes per value).
  const int64_t d = cpu.config.head_dim, T = int64_t(ids.size());
  const int64_t per_layer_rows = (Hkv - 1) * T + (32 + 64);
  EXPECT_LE(rg.kv_store->bytes_allocated(), size_t(L * per_layer_rows) * 2 * size_t(d) * 2 * 2);
  EXPECT_GE(rg.kv_store->bytes_allocated(), size_t(L * per_layer_rows) * 2 * size_t(d) * 2);
}

}  // namespace
}  // namespace elastic
