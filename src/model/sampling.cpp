// Sampling filters (HF order: temperature, top-k, top-p, min-p), the Backend's default sampler
// and the generation loop.
// Invariant: the candidate list is sorted by decreasing probability (ties: lower id first), so
// each filter keeps a prefix of it and the draw is reproducible for a given seed.
#include <algorithm>
#include <chrono>
#include <cmath>
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

int64_t sampling_pick(const float* logits, int64_t vocab, const SamplingParams& params, double u) {
  if (params.top_k == 0 && params.top_p >= 1.f && params.min_p == 0.f) {
    // No filter: the candidates are the whole vocabulary, and only the prefix of the sorted list
    // up to cumulative probability u is needed. Same softmax, order and sums as
    // sampling_candidates, so the same token, but only the prefix up to u is put in order: the
    // mass of a sampled distribution sits in a few tokens, so this is O(V) instead of
    // O(V log V) per token.
    ELASTIC_CHECK(params.temperature > 0.f && vocab > 0);
    const float inv_t = 1.0f / params.temperature;
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
    // Tokens within a factor 1e-4 of the most likely one (e = 1) come first in the sorted
    // order: split them off with one cheap pass and sort them; the rest, needed only when u
    // falls beyond their mass, follows a chunk at a time.
    const auto likely = std::partition(c.begin(), c.end(), [](const std::pair<int64_t, float>& x) {
      return x.second >= 1e-4f;
    });
    std::sort(c.begin(), likely, by_prob);
    const size_t head = static_cast<size_t>(likely - c.begin());
    constexpr size_t kChunk = 64;
    double cum = 0.0;
    for (size_t begin = 0; begin < c.size();) {
      const size_t end = begin < head ? head : std::min(c.size(), begin + kChunk);
      if (begin >= head) {  // the chunk's members in front (O(remaining)), then in order
        if (end < c.size()) std::nth_element(c.begin() + begin, c.begin() + end - 1, c.end(), by_prob);
        std::sort(c.begin() + begin, c.begin() + end, by_prob);
      }
      for (size_t i = begin; i < end; ++i) {
        cum += static_cast<float>(c[i].second / sum);
        if (u < cum) return c[i].first;
      }
      begin = end;
    }
    return c.back().first;  // u within rounding of 1
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
