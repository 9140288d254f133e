// DuoAttention-like calibration of a static head assignment: the sensitivity of each KV head is
// the drop in the log-probability of the reference completion when that head alone runs the
// sparse mode.
#include <cmath>
#include <cstdio>

#include "elastic/error.h"
#include "elastic/eval.h"
#include "elastic/model.h"
#include "elastic/tokenizer.h"

namespace elastic {

namespace {

std::vector<int64_t> encode_ids(const Tokenizer& tok, const std::string& text, bool add_special) {
  EncodeOptions eo;
  eo.add_special = add_special;
  const std::vector<int32_t> ids = tok.encode(text, eo);
  return {ids.begin(), ids.end()};
}

// log softmax(logits)[target], logits: [V], in double.
double log_prob(const float* logits, int64_t V, int64_t target) {
  double mx = logits[0];
  for (int64_t i = 1; i < V; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  return static_cast<double>(logits[target]) - mx - std::log(sum);
}

// Sum of log p(answer[j] | prompt, answer[:j]) under `policy`: the prompt's prefill gives the
// first answer token's distribution, each answer token's decode step the next one's.
double completion_log_prob(const Model& model, RoutingPolicy& policy, const AttnOptions& attn,
                           const std::vector<int64_t>& prompt, const std::vector<int64_t>& answer) {
  Request req = request_start(model, &policy);
  req.attn = attn;
  PrefillOptions po;
  po.logits = LogitsOutput::last;
  const int64_t V = model.config.vocab_size;
  const std::vector<float>* logits =
      &model_prefill(model, req, prompt.data(), static_cast<int64_t>(prompt.size()), po);
  double total = 0;
  for (size_t j = 0; j < answer.size(); ++j) {
    total += log_prob(logits->data(), V, answer[j]);
    if (j + 1 < answer.size()) logits = &model_prefill(model, req, &answer[j], 1, po);
  }
  return total;
}

}  // namespace

std::vector<std::vector<double>> eval_calibrate(const Model& model, const Tokenizer& tokenizer,
                                                const std::vector<EvalSample>& samples,
                                                const CalibrateOptions& options,
                                                const EvalProgress& progress) {
  const int64_t L = model.config.num_layers, Hkv = model.config.num_kv_heads;
  if (samples.empty()) throw Error("calibrate: no calibration samples");
  std::vector<std::vector<double>> scores(L, std::vector<double>(Hkv, 0.0));
  const int64_t total = static_cast<int64_t>(samples.size()) * (1 + L * Hkv);
  int64_t done = 0;
  auto tick = [&](const std::string& what) {
    ++done;
    if (progress) progress(done, total, what);
  };
  for (const EvalSample& s : samples) {
    // Answer tokens as they follow the prompt: the tail of encode(prompt + completion) when the
    // prompt's tokens are its prefix, else the completion encoded alone.
    const std::vector<int64_t> prompt = encode_ids(tokenizer, s.prompt, options.add_special);
    const std::string completion = eval_sample_completion(s);
    std::vector<int64_t> full = encode_ids(tokenizer, s.prompt + completion, options.add_special);
    std::vector<int64_t> answer;
    if (full.size() > prompt.size() && std::equal(prompt.begin(), prompt.end(), full.begin()))
      answer.assign(full.begin() + static_cast<int64_t>(prompt.size()), full.end());
    else
      answer = encode_ids(tokenizer, completion, false);
    if (prompt.empty() || answer.empty())
      throw Error("calibrate: a sample of task " + s.task + " has an empty prompt or answer");

    StaticRouting all_retrieval(static_assignment_all(L, Hkv, true), options.retrieval_mode,
                                options.sparse_mode);
    const double base = completion_log_prob(model, all_retrieval, options.attn, prompt, answer);
    tick(s.task + " reference");
    for (int64_t l = 0; l < L; ++l)
      for (int64_t h = 0; h < Hkv; ++h) {
        auto a = static_assignment_all(L, Hkv, true);
        a[l][h] = 0;
        StaticRouting one_sparse(std::move(a), options.retrieval_mode, options.sparse_mode);
        const double lp = completion_log_prob(model, one_sparse, options.attn, prompt, answer);
        scores[l][h] += (base - lp) / static_cast<double>(samples.size());
        tick(s.task + " layer " + std::to_string(l) + " head " + std::to_string(h));
      }
  }
  return scores;
}

std::string eval_scores_file_text(const std::vector<std::vector<double>>& scores,
                                  const std::string& comment) {
  std::string out;
  if (!comment.empty()) {  // every comment line behind "# "
    out += "# ";
    for (char ch : comment) {
      out += ch;
      if (ch == '\n') out += "# ";
    }
    out += '\n';
  }
  for (const auto& row : scores) {
    for (size_t h = 0; h < row.size(); ++h) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.9g", row[h]);
      if (h) out += ' ';
      out += buf;
    }
    out += "\n";
  }
  return out;
}

}  // namespace elastic
