// Next-token sampling and the generation loop.
//
// Filters apply in HF's order: temperature, top-k, top-p, min-p, then a draw from the
// renormalised distribution with a seeded std::mt19937_64 (same seed, same logits -> same
// tokens). temperature 0 is greedy (argmax, first index on ties, as torch.argmax).
//
// Where it runs: the Sampler draws the uniform number u on the host (one per sampled token, none
// for greedy); the filters and the pick run where the logits are (Backend::sample: this file's
// reference on the CPU, kernels on CUDA), so a CUDA generate loop downloads one token id per step
// and picks the CPU's token for the same logits and seed (up to exact ties).
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <utility>
#include <vector>

#include "elastic/model.h"

namespace elastic {

struct SamplingParams {
  float temperature = 0.f;  // 0 = greedy
  int64_t top_k = 0;        // 0 = off; keep the k most likely tokens
  float top_p = 1.f;        // 1 = off; keep the smallest prefix with cumulative prob >= top_p
  float min_p = 0.f;        // 0 = off; drop tokens with prob < min_p * max prob
  uint64_t seed = 0;
};

// argmax over logits: [vocab].
int64_t sample_greedy(const float* logits, int64_t vocab);

// The tokens the filters keep, most likely first, with their renormalised probabilities.
// logits: [vocab]. Requires temperature > 0.
std::vector<std::pair<int64_t, float>> sampling_candidates(const float* logits, int64_t vocab,
                                                           const SamplingParams& params);

// The token at cumulative probability u in [0, 1) of sampling_candidates' list (the first whose
// running sum exceeds u; u within rounding of 1: the last). logits: [vocab], temperature > 0.
int64_t sampling_pick(const float* logits, int64_t vocab, const SamplingParams& params, double u);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Throws elastic::Error when a parameter is out of range.
  // logits: [vocab] host memory.
  int64_t sample(const float* logits, int64_t vocab);
  // logits: [vocab] in `backend`'s memory; the backend filters and picks (Backend::sample), only
  // the id comes back. Same draws, so the same tokens as sample() on the same logits.
  int64_t sample(Backend& backend, const float* logits, int64_t vocab);
  const SamplingParams& params() const { return params_; }

 private:
  double draw();  // u in [0, 1), only for temperature > 0

  SamplingParams params_;
  std::mt19937_64 rng_;
};

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  bool stop_at_eos = true;  // stop after emitting one of the config's eos_token_id
  // Progress of the prompt's prefill: (layers done, layers), after each layer.
  std::function<void(int64_t, int64_t)> on_prefill_layer;
};

struct GenerateStats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double prefill_seconds = 0;  // prompt prefill + first token
  double decode_seconds = 0;   // every later token
  bool stopped_at_eos = false;
};

// Prefills `prompt` into `request` (which may already hold earlier tokens), then samples up to
// max_new_tokens tokens, decoding each one. The logits stay in backend memory (the backend
// samples; one token id per step reaches the host). on_token (may be empty) sees every new token as it
// is produced and may return false to stop. Returns the new tokens (an EOS that stopped the
// loop is included, as HF's generate does).
std::vector<int64_t> generate(const Model& model, Request& request,
                              const std::vector<int64_t>& prompt, const GenerateOptions& options,
                              Sampler& sampler, const std::function<bool(int64_t)>& on_token = {},
                              GenerateStats* stats = nullptr);

}  // namespace elastic
