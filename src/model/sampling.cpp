// Sampling filters (HF order: temperature, top-k, top-p, min-p), the Backend's default sampler
// and the generation loop.
// Invariant: the candidate list is sorted by decreasing probability (ties: lower id first), so
// each filter keeps a prefix of it and the draw is reproducible for a given seed.
#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <limits>
#include <string>

#include "elastic/backend.h"
#include "elastic/error.h"
#include "elastic/sampling.h"

namespace elastic {

int64_t sample_greedy(const float* logits, int64_t vocab) {
  ELASTIC_CHECK(vocab > 0);
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

std::vector<std::pair<int64_t, float>> sampling_candidates(const float* logits, int64_t vocab,
                                                           const SamplingParams& p) {
  ELASTIC_CHECK(p.temperature > 0.f && vocab > 0);
  // Temperature-scaled softmax over the whole vocabulary (in double for the normaliser).
  const float inv_t = 1.0f / p.temperature;
  float mx = logits[0];
  for (int64_t i = 1; i < vocab; ++i) mx = std::max(mx, logits[i]);
  std::vector<std::pair<int64_t, float>> c(static_cast<size_t>(vocab));
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) {
    const float e = std::exp((logits[i] - mx) * inv_t);
    c[i] = {i, e};
    sum += e;
  }
  auto by_prob = [](const std::pair<int64_t, float>& a, const std::pair<int64_t, float>& b) {
    return a.second > b.second || (a.second == b.second && a.first < b.first);
  };
  // top-k: only the k best need ordering.
  size_t keep = c.size();
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < c.size()) {
    keep = static_cast<size_t>(p.top_k);
    std::partial_sort(c.begin(), c.begin() + keep, c.end(), by_prob);
    c.resize(keep);
    sum = 0.0;
    for (const auto& e : c) sum += e.second;
  } else {
    std::sort(c.begin(), c.end(), by_prob);
  }
  // top-p on the distribution left by top-k: smallest prefix whose mass reaches top_p.
  if (p.top_p < 1.f) {
    double cum = 0.0;
    size_t i = 0;
    for (; i < c.size(); ++i) {
      cum += c[i].second / sum;
      if (cum >= p.top_p) break;
    }
    c.resize(std::min(c.size(), i + 1));
    sum = 0.0;
    for (const auto& e : c) sum += e.second;
  }
  // min-p: relative to the most likely token (ratios survive renormalisation).
  if (p.min_p > 0.f) {
    const float threshold = p.min_p * c[0].second;
    size_t i = 1;
    while (i < c.size() && c[i].second >= threshold) ++i;
    c.resize(i);
    sum = 0.0;
    for (const auto& e : c) sum += e.second;
  }
  for (auto& e : c) e.second = static_cast<float>(e.second / sum);
  return c;
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  if (!(params.temperature >= 0.f) || !std::isfinite(params.temperature))
    throw Error("--temp must be >= 0, got " + std::to_string(params.temperature));
  if (params.top_k < 0) throw Error("--top-k must be >= 0, got " + std::to_string(params.top_k));
  if (!(params.top_p > 0.f && params.top_p <= 1.f))
    throw Error("--top-p must be in (0, 1], got " + std::to_string(params.top_p));
  if (!(params.min_p >= 0.f && params.min_p <= 1.f))
    throw Error("--min-p must be in [0, 1], got " + std::to_string(params.min_p));
}

namespace {

// The unfiltered draw without sorting the vocabulary. The reference (sampling_candidates and a
// scan) orders the tokens by (e desc, id asc), e = exp((l - max) / T) in (0, 1], and returns the
// first whose running sum of p = float(e / sum) exceeds u. Every p >= 2^-29 is a multiple of
// 2^-52 and the running sums stay below 2, so in double they are exact whatever the order: the
// mass of all tokens ahead of some point is exactly the running sum the reference reaches there.
// The tokens are bucketed by the top bits of e's float (exponent and 3 mantissa bits: buckets in
// the order of e), the buckets' masses walked from the top to the one where the sum crosses u,
// and only that bucket's tokens sorted and scanned, so the token is the reference's. Returns -1
// when a token below 2^-29 would enter a sum (u in the last ~V * 2^-29 of the mass), e is not in
// [0, 1] or u is not reached: the caller then runs the reference.
int64_t pick_unfiltered(const float* e, size_t n, double sum, double u) {
  constexpr float kExact = 0x1p-29f;
  constexpr int kShift = 20;
  constexpr uint32_t kOne = 0x3f800000u;  // the bits of 1.0f, the largest e
  constexpr size_t kBuckets = (kOne >> kShift) + 1;
  thread_local std::vector<double> mass(kBuckets);
  thread_local std::vector<uint8_t> tiny(kBuckets);
  std::fill(mass.begin(), mass.end(), 0.0);
  std::fill(tiny.begin(), tiny.end(), uint8_t{0});
  thread_local std::vector<float> p;
  p.resize(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<float>(e[i] / sum);  // vectorised division
  bool bad = false;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t bits = std::bit_cast<uint32_t>(e[i]);
    bad |= bits > kOne;  // NaN or above 1: not a softmax of finite logits
    const size_t b = std::min(bits, kOne) >> kShift;
    // Branch-free: the tiny tokens are interleaved with the others in index order.
    const uint32_t keep = 0u - static_cast<uint32_t>(p[i] >= kExact);
    mass[b] += std::bit_cast<float>(std::bit_cast<uint32_t>(p[i]) & keep);
    tiny[b] |= static_cast<uint8_t>(~keep & 1u);
  }
  if (bad) return -1;
  double base = 0.0;  // the reference's running sum before the current bucket
  size_t b = kBuckets;
  while (b-- > 0) {
    // A bucket's tokens of p >= 2^-29 come first in the reference's order (p grows with e): if
    // u falls beyond their mass, the crossing is among its inexact ones.
    if (u < base + mass[b]) break;
    if (tiny[b]) return -1;
    base += mass[b];
  }
  if (b >= kBuckets) return -1;  // u not reached (within rounding of 1)
  struct Cand {
    float e;
    int32_t id;
  };
  thread_local std::vector<Cand> c;
  c.clear();
  for (size_t i = 0; i < n; ++i)
    if ((std::bit_cast<uint32_t>(e[i]) >> kShift) == b)
      c.push_back({e[i], static_cast<int32_t>(i)});
  std::sort(c.begin(), c.end(),
            [](const Cand& x, const Cand& y) { return x.e > y.e || (x.e == y.e && x.id < y.id); });
  for (const Cand& x : c) {
    const float px = p[static_cast<size_t>(x.id)];
    if (px < kExact) return -1;
    base += px;
    if (u < base) return x.id;
  }
  return -1;
}

}  // namespace

int64_t sampling_pick(const float* logits, int64_t vocab, const SamplingParams& params, double u) {
  if (params.top_k == 0 && params.top_p >= 1.f && params.min_p == 0.f &&
      vocab <= std::numeric_limits<int32_t>::max()) {
    // No filter: the same softmax as sampling_candidates (float e in index order, the double
    // normaliser summed in index order), then pick_unfiltered: O(V) instead of a sort.
    ELASTIC_CHECK(params.temperature > 0.f && vocab > 0);
    const float inv_t = 1.0f / params.temperature;
    // The maximum in 8 independent chains (one chain is bound by vmaxss' latency): the same
    // value as one chain, whatever the order, for logits that are not NaN after the first.
    float m8[8];
    std::fill(m8, m8 + 8, logits[0]);
    int64_t i8 = 1;
    for (; i8 + 8 <= vocab; i8 += 8)
      for (int j = 0; j < 8; ++j) m8[j] = std::max(m8[j], logits[i8 + j]);
    for (; i8 < vocab; ++i8) m8[0] = std::max(m8[0], logits[i8]);
    float mx = m8[0];
    for (int j = 1; j < 8; ++j) mx = std::max(mx, m8[j]);
    thread_local std::vector<float> e;  // per thread: the engine samples sequences side by side
    e.resize(static_cast<size_t>(vocab));
    for (int64_t i = 0; i < vocab; ++i)
      e[static_cast<size_t>(i)] = std::exp((logits[i] - mx) * inv_t);
    // Summed in a loop of its own: across the call to exp the running sum went through memory.
    double sum = 0.0;
    for (float x : e) sum += x;
    const int64_t t = pick_unfiltered(e.data(), e.size(), sum, u);
    if (t >= 0) return t;
  }
  const std::vector<std::pair<int64_t, float>> c = sampling_candidates(logits, vocab, params);
  double cum = 0.0;
  for (const auto& e : c) {
    cum += e.second;
    if (u < cum) return e.first;
  }
  return c.back().first;  // u within rounding of 1
}

// The backend's default sampler: the reference above on logits as host memory (the CPU backend).
int64_t Backend::sample(const float* logits, int64_t vocab, const SamplingParams& params, double u) {
  return params.temperature == 0.f ? sample_greedy(logits, vocab) : sampling_pick(logits, vocab, params, u);
}

double Sampler::draw() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

void Backend::argmax_rows(int64_t* out, const float* logits, int64_t rows, int64_t vocab) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = logits + r * vocab;
    out[r] = host_all_finite(row, vocab) ? sample_greedy(row, vocab) : -1;
  }
}

int64_t Sampler::sample(const float* logits, int64_t vocab) {
  if (params_.temperature == 0.f) return sample_greedy(logits, vocab);
  return sampling_pick(logits, vocab, params_, draw());
}

int64_t Sampler::sample(Backend& backend, const float* logits, int64_t vocab) {
  const double u = params_.temperature == 0.f ? 0.0 : draw();
  return backend.sample(logits, vocab, params_, u);
}

std::vector<int64_t> generate(const Model& model, Request& request,
                              const std::vector<int64_t>& prompt, const GenerateOptions& options,
                              Sampler& sampler, const std::function<bool(int64_t)>& on_token,
                              GenerateStats* stats) {
  using clock = std::chrono::steady_clock;
  const ModelConfig& c = model.config;
  if (prompt.empty()) throw Error("generate needs a non-empty prompt");
  if (options.max_new_tokens < 0) throw Error("-n must be >= 0");
  GenerateStats st;
  st.prompt_tokens = static_cast<int64_t>(prompt.size());
  std::vector<int64_t> out;
  auto is_eos = [&](int64_t t) {
    return std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), t) != c.eos_token_ids.end();
  };
  auto t0 = clock::now();
  // The last position's logits stay in backend memory (request.ws.logits: [1, V]).
  PrefillOptions po;
  po.logits = LogitsOutput::last;
  po.logits_to_host = false;
  if (options.max_new_tokens > 0) {
    PrefillOptions first = po;
    first.on_layer = options.on_prefill_layer;
    model_prefill(model, request, prompt.data(), static_cast<int64_t>(prompt.size()), first);
  }
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    if (i > 0) {
      const int64_t prev = out.back();
      model_prefill(model, request, &prev, 1, po);
    }
    const int64_t tok =
        sampler.sample(*model.backend, static_cast<const float*>(request.ws.logits.get()), c.vocab_size);
    out.push_back(tok);
    auto now = clock::now();
    if (i == 0) st.prefill_seconds = std::chrono::duration<double>(now - t0).count();
    else st.decode_seconds = std::chrono::duration<double>(now - t0).count() - st.prefill_seconds;
    const bool keep_going = !on_token || on_token(tok);
    if (options.stop_at_eos && is_eos(tok)) {
      st.stopped_at_eos = true;
      break;
    }
    if (!keep_going) break;
  }
  st.generated_tokens = static_cast<int64_t>(out.size());
  if (stats) *stats = st;
  return out;
}

}  // namespace elastic
