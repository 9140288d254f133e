// Sampling on the CUDA backend (sampling_cuda.cu, through Backend::sample and
// Sampler::sample(Backend&)) against the CPU sampler (sampling.cpp): the same token for the same
// logits and u / seed in every mode over many draws; exact ties resolved to the first index; the
// generate loop with the device sampler on the backbone fixtures (greedy against HF, sampled
// against the host sampler on the same logits). Skipped when no CUDA device is present.
//
// Exactness: the device computes expf on the GPU (within 2 ulp of glibc's) and sums in another
// order, so its cumulative probabilities differ from the CPU's by ~1e-7 relative at most. A pick
// can then differ only when u, top_p or the min-p threshold lies within that distance of a
// boundary of the candidate list. The test logits have no near-ties (distinct values on a grid of
// spacing 12 / V, >= 1e-4 relative in probability), and draws whose u, top_p or min-p threshold
// lies within 1e-5 of a boundary (CPU side) are skipped and counted; the test requires that at
// most 2 % are skipped, so it cannot pass by skipping. (Worst case: at V = 151936 the flat tail
// puts boundaries ~7e-6 apart, and a 3-ulp expf difference shifts them by <= 4e-7: <= 6 % of those
// draws, a small share of all draws; typical expf errors are far below the bound.)
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "cuda_test_util.h"
#include "elastic/cuda/backend_cuda.h"
#include "elastic/cuda/cuda_check.h"
#include "elastic/fileio.h"
#include "elastic/model.h"
#include "elastic/safetensors.h"
#include "elastic/sampling.h"

namespace elastic {
namespace {

constexpr double kBoundaryGap = 1e-5;  // see the header comment
constexpr double kLogitsTol = 3e-2;    // max-abs / max-ref of bf16 logits (test_fixtures_cuda.cpp)

// [vocab] logits: a random permutation of the grid 12 j / V (j = 0..V-4) and three spikes above
// it (14, 15.5, 17), so the distribution has a peaked head and a long flat tail; all distinct.
std::vector<float> grid_logits(int64_t vocab, uint64_t seed) {
  std::vector<float> values(static_cast<size_t>(vocab));
  for (int64_t j = 0; j < vocab; ++j) values[size_t(j)] = float(12.0 * double(j) / double(vocab));
  const float spikes[3] = {14.f, 15.5f, 17.f};
  for (int s = 0; s < 3 && s < vocab; ++s) values[size_t(vocab - 1 - s)] = spikes[2 - s];
  std::mt19937_64 rng(seed);
  std::shuffle(values.begin(), values.end(), rng);
  return values;
}

// True when u, top_p or the min-p threshold lies within kBoundaryGap of a boundary of the CPU's
// candidate list (a pick that float rounding may legitimately flip).
bool near_boundary(const std::vector<float>& l, const SamplingParams& p, double u) {
  if (p.temperature == 0.f) return false;
  const int64_t V = int64_t(l.size());
  if (p.top_p < 1.f) {
    SamplingParams q = p;
    q.top_p = 1.f;
    q.min_p = 0.f;
    double cum = 0;
    for (const auto& c : sampling_candidates(l.data(), V, q)) {
      cum += c.second;
      if (std::fabs(cum - p.top_p) < kBoundaryGap) return true;
      if (cum > p.top_p + kBoundaryGap) break;
    }
  }
  if (p.min_p > 0.f) {
    SamplingParams q = p;
    q.min_p = 0.f;
    const auto c = sampling_candidates(l.data(), V, q);
    const double threshold = double(p.min_p) * c[0].second;
    for (const auto& e : c)
      if (std::fabs(e.second - threshold) < kBoundaryGap * threshold) return true;
  }
  double cum = 0;
  for (const auto& c : sampling_candidates(l.data(), V, p)) {
    cum += c.second;
    if (std::fabs(cum - u) < kBoundaryGap) return true;
  }
  return false;
}

SamplingParams params(float temperature, int64_t top_k, float top_p, float min_p) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.min_p = min_p;
  return p;
}

const std::vector<std::pair<std::string, SamplingParams>> kModes = {
    {"greedy", params(0.f, 0, 1.f, 0.f)},
    {"temperature 1", params(1.f, 0, 1.f, 0.f)},
    {"temperature 0.7 top-k 50", params(0.7f, 50, 1.f, 0.f)},
    {"top-k 1", params(1.f, 1, 1.f, 0.f)},
    {"top-p 0.9", params(1.f, 0, 0.9f, 0.f)},
    {"temperature 2 top-p 0.5", params(2.f, 0, 0.5f, 0.f)},
    {"min-p 0.05", params(1.f, 0, 1.f, 0.05f)},
    {"temperature 1.5 min-p 0.2", params(1.5f, 0, 1.f, 0.2f)},
    {"all: T 0.8 k 100 p 0.95 min-p 0.02", params(0.8f, 100, 0.95f, 0.02f)},
    {"top-k above vocab", params(1.f, 1 << 30, 1.f, 0.f)},
};

// Backend::sample with an explicit u against the CPU reference, every mode, three vocabulary
// sizes (the largest is Qwen's 151936).
TEST(CudaSampling, SameTokenAsCpuForSameLogitsAndU) {
  REQUIRE_GPU();
  const std::shared_ptr<Backend> gpu = backend_cuda(CudaBackendOptions{false});
  std::mt19937_64 rng(2026);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  int64_t compared = 0, skipped = 0;
  // (vocabulary, logits vectors, draws per vector and mode)
  const std::tuple<int64_t, int, int> sizes[] = {{1000, 4, 60}, {32000, 3, 20}, {151936, 2, 8}};
  for (const auto& [vocab, vectors, draws] : sizes) {
    for (int v = 0; v < vectors; ++v) {
      const std::vector<float> l = grid_logits(vocab, uint64_t(vocab * 10 + v));
      const std::shared_ptr<void> dev = gpu->alloc(l.size() * sizeof(float));
      gpu->upload(dev.get(), l.data(), l.size() * sizeof(float));
      for (const auto& [name, p] : kModes) {
        SCOPED_TRACE(name + " V=" + std::to_string(vocab) + " vector " + std::to_string(v));
        for (int d = 0; d < draws; ++d) {
          const double u = uniform(rng);
          const int64_t want = p.temperature == 0.f ? sample_greedy(l.data(), vocab)
                                                    : sampling_pick(l.data(), vocab, p, u);
          const int64_t got = gpu->sample(static_cast<const float*>(dev.get()), vocab, p, u);
          if (got != want && near_boundary(l, p, u)) {
            ++skipped;
            continue;
          }
          EXPECT_EQ(got, want) << "u = " << u;
          ++compared;
        }
      }
    }
  }
  std::printf("  sampling: %lld draws identical to the CPU, %lld near-boundary draws differed\n",
              (long long)compared, (long long)skipped);
  EXPECT_LE(skipped * 50, compared + skipped);
}

// Sampler::sample(Backend&) draws u from the same seeded generator as the host Sampler: same seed,
// same logits, same tokens, over many seeds.
TEST(CudaSampling, SamplerSameTokensAsCpuOverSeeds) {
  REQUIRE_GPU();
  const std::shared_ptr<Backend> gpu = backend_cuda(CudaBackendOptions{false});
  const int64_t vocab = 32000;
  std::vector<std::vector<float>> logits;
  std::vector<std::shared_ptr<void>> dev;
  for (int s = 0; s < 4; ++s) {
    logits.push_back(grid_logits(vocab, 77 + s));
    dev.push_back(gpu->alloc(size_t(vocab) * sizeof(float)));
    gpu->upload(dev.back().get(), logits.back().data(), size_t(vocab) * sizeof(float));
  }
  int64_t compared = 0, skipped = 0;
  for (const auto& [name, base] : kModes) {
    for (uint64_t seed = 0; seed < 16; ++seed) {
      SamplingParams p = base;
      p.seed = seed;
      Sampler host(p), device(p);
      std::mt19937_64 rng(seed);  // the Sampler's draws, replayed for the boundary check
      for (int step = 0; step < 8; ++step) {
        const std::vector<float>& l = logits[size_t(step % 4)];
        const double u =
            p.temperature == 0.f ? 0.0 : std::uniform_real_distribution<double>(0.0, 1.0)(rng);
        const int64_t want = host.sample(l.data(), vocab);
        const int64_t got =
            device.sample(*gpu, static_cast<const float*>(dev[size_t(step % 4)].get()), vocab);
        if (got != want && near_boundary(l, p, u)) {
          ++skipped;
          continue;
        }
        EXPECT_EQ(got, want) << name << " seed " << seed << " step " << step;
        ++compared;
      }
    }
  }
  std::printf("  sampler over seeds: %lld tokens identical, %lld near-boundary\n",
              (long long)compared, (long long)skipped);
  EXPECT_LE(skipped * 50, compared + skipped);
}

// Exact ties: greedy takes the first index of the maximum (torch.argmax); top-k 1 likewise.
TEST(CudaSampling, ExactTiesResolveToFirstIndex) {
  REQUIRE_GPU();
  const std::shared_ptr<Backend> gpu = backend_cuda(CudaBackendOptions{false});
  const int64_t vocab = 5000;
  std::vector<float> l(size_t(vocab), -1.f);
  l[4999] = l[1234] = l[17] = 3.f;
  const std::shared_ptr<void> dev = gpu->alloc(size_t(vocab) * sizeof(float));
  gpu->upload(dev.get(), l.data(), l.size() * sizeof(float));
  const auto* d = static_cast<const float*>(dev.get());
  EXPECT_EQ(gpu->sample(d, vocab, params(0.f, 0, 1.f, 0.f), 0.0), 17);
  EXPECT_EQ(gpu->sample(d, vocab, params(1.f, 1, 1.f, 0.f), 0.99), 17);
  // The three tied tokens share the mass equally: u picks among them in id order.
  EXPECT_EQ(gpu->sample(d, vocab, params(1.f, 3, 1.f, 0.f), 0.1), 17);
  EXPECT_EQ(gpu->sample(d, vocab, params(1.f, 3, 1.f, 0.f), 0.5), 1234);
  EXPECT_EQ(gpu->sample(d, vocab, params(1.f, 3, 1.f, 0.f), 0.9), 4999);
  std::fill(l.begin(), l.end(), 0.5f);
  gpu->upload(dev.get(), l.data(), l.size() * sizeof(float));
  EXPECT_EQ(gpu->sample(d, vocab, params(0.f, 0, 1.f, 0.f), 0.0), 0);
  EXPECT_EQ(gpu->sample(d, vocab, params(1.f, 0, 1.f, 0.f), 0.0), 0);
  EXPECT_EQ(gpu->sample(d, vocab, params(1.f, 0, 1.f, 0.f), 0.99999),
            sampling_pick(l.data(), vocab, params(1.f, 0, 1.f, 0.f), 0.99999));
}

// Backend::argmax_rows (the serving engine's batched greedy step) against the CPU's, row by row:
// random rows, exact ties, and rows with a NaN or an infinity (-1), at Qwen's vocabulary and at
// an odd small one.
TEST(CudaSampling, ArgmaxRowsEqualsTheCpuRowByRow) {
  REQUIRE_GPU();
  const std::shared_ptr<Backend> gpu = backend_cuda(CudaBackendOptions{false});
  const std::shared_ptr<Backend> cpu = backend_cpu();
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 3.f);
  for (const auto [rows, vocab] : {std::pair<int64_t, int64_t>{64, 151936}, {5, 1031}}) {
    std::vector<float> l(size_t(rows * vocab));
    for (float& x : l) x = nd(rng);
    float* r1 = l.data() + vocab;  // a tie of the maximum at 900 and 1000
    r1[900] = r1[1000] = 100.f;
    l[size_t(2 * vocab + 17)] = std::numeric_limits<float>::quiet_NaN();
    l[size_t(3 * vocab + vocab - 1)] = -std::numeric_limits<float>::infinity();
    const std::shared_ptr<void> dev = gpu->alloc(l.size() * sizeof(float));
    gpu->upload(dev.get(), l.data(), l.size() * sizeof(float));
    std::vector<int64_t> want(static_cast<size_t>(rows)), got(static_cast<size_t>(rows), 99);
    cpu->argmax_rows(want.data(), l.data(), rows, vocab);
    gpu->argmax_rows(got.data(), static_cast<const float*>(dev.get()), rows, vocab);
    EXPECT_EQ(got, want) << rows << " x " << vocab;
    EXPECT_EQ(got[1], 900);
    EXPECT_EQ(got[2], -1);
    EXPECT_EQ(got[3], -1);
  }
}

// Qwen's vocabulary (151936): every mode's token equals the CPU's, and the device time per call
// (kernels + 8-byte download) is printed beside the download of the whole logits row it replaces.
TEST(CudaSampling, QwenVocabTiming) {
  REQUIRE_GPU();
  const std::shared_ptr<Backend> gpu = backend_cuda(CudaBackendOptions{false});
  const int64_t vocab = 151936;
  const std::vector<float> l = grid_logits(vocab, 9);
  const std::shared_ptr<void> dev = gpu->alloc(l.size() * sizeof(float));
  gpu->upload(dev.get(), l.data(), l.size() * sizeof(float));
  const auto* d = static_cast<const float*>(dev.get());
  constexpr int kCalls = 50;
  std::vector<float> host(l.size());
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kCalls; ++i) gpu->download(host.data(), d, host.size() * sizeof(float));
  const double download_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
      kCalls;
  std::printf("  sampling V=151936: logits row download %.1f us\n", download_us);
  for (const auto& [name, p] : kModes) {
    const double u = 0.375;
    const int64_t want = p.temperature == 0.f ? sample_greedy(l.data(), vocab)
                                              : sampling_pick(l.data(), vocab, p, u);
    int64_t got = -1;
    t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kCalls; ++i) got = gpu->sample(d, vocab, p, u);
    const double us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
        kCalls;
    if (got != want) {
      EXPECT_TRUE(near_boundary(l, p, u)) << name << ": device " << got << ", CPU " << want;
    }
    std::printf("  sampling V=151936 %-36s %7.1f us per token\n", name.c_str(), us);
  }
}

int64_t argmax(const float* x, int64_t n) { return int64_t(std::max_element(x, x + n) - x); }

// generate() with the device sampler on the backbone fixtures in device mode: greedy tokens equal
// the host argmax of the same model's downloaded logits at every step and follow HF's greedy ids
// up to a near-tie (as test_fixtures_cuda); sampled tokens (T 0.8, top-p 0.9, seed 5) equal the
// host Sampler's on the same downloaded logits.
TEST(CudaSampling, GenerateOnFixturesMatchesHostSampling) {
  REQUIRE_GPU();
  for (const std::string name : {"qwen3-tiny", "llama3-tiny", "qwen2-tiny", "qwen3-yarn-tiny"}) {
    const std::string dir = std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/" + name;
    const nlohmann::json cs = nlohmann::json::parse(read_file(dir + "/case.json"));
    const WeightStore expected = WeightStore::open(dir + "/expected.safetensors");
    const Model model = model_load(dir, backend_cuda(CudaBackendOptions{false}));
    const int64_t V = model.config.vocab_size;
    for (const auto& in : cs["inputs"]) {
      SCOPED_TRACE(name + " " + in["input_ids"].get<std::string>());
      const std::vector<int64_t> ids = expected.get(in["input_ids"]).to_i64();
      const std::vector<int64_t> hf = expected.get(in["greedy_ids"]).to_i64();
      for (const SamplingParams& p : {SamplingParams{}, [] {
                                        SamplingParams s = params(0.8f, 0, 0.9f, 0.f);
                                        s.seed = 5;
                                        return s;
                                      }()}) {
        const bool greedy = p.temperature == 0.f;
        GenerateOptions go;
        go.max_new_tokens = int64_t(hf.size());
        go.stop_at_eos = greedy;  // HF's greedy ids end at EOS
        Request g = request_start(model);
        Sampler dev_sampler(p);
        const std::vector<int64_t> got = generate(model, g, ids, go, dev_sampler);
        // The host loop over the same model: downloaded logits, host sampler.
        Request h = request_start(model);
        Sampler host_sampler(p);
        std::mt19937_64 rng(p.seed);
        std::vector<float> logits = model_prefill(model, h, ids.data(), int64_t(ids.size()));
        size_t hf_matched = 0;
        bool hf_diverged = false;
        for (size_t s = 0; s < got.size(); ++s) {
          const double u = greedy ? 0.0 : std::uniform_real_distribution<double>(0.0, 1.0)(rng);
          const int64_t want = host_sampler.sample(logits.data(), V);
          if (got[s] != want) {
            EXPECT_TRUE(near_boundary(logits, p, u))
                << "step " << s << ": device " << got[s] << ", host " << want;
            break;  // the sequences legitimately diverge after a boundary flip
          }
          if (greedy && !hf_diverged) {
            if (s < hf.size() && want == hf[s]) {
              ++hf_matched;
            } else if (s < hf.size()) {
              double ref = 0;
              for (float x : logits) ref = std::max(ref, std::fabs(double(x)));
              const double gap = double(logits[size_t(want)]) - logits[size_t(hf[s])];
              EXPECT_LE(gap, 2 * kLogitsTol * ref) << "greedy step " << s << ": not a near-tie";
              hf_diverged = true;
            }
            EXPECT_EQ(want, argmax(logits.data(), V));
          }
          if (s + 1 < got.size()) logits = model_prefill(model, h, &want, 1);
        }
        if (greedy) {
          if (!hf_diverged) {
            EXPECT_EQ(got.size(), hf.size());
          }
          std::printf("  %-16s T=%4zu greedy on device: %zu/%zu tokens as HF%s\n", name.c_str(),
                      ids.size(), hf_matched, hf.size(), hf_diverged ? " (near-tie flip)" : "");
        }
      }
    }
  }
}

}  // namespace
}  // namespace elastic
