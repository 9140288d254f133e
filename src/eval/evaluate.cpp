// The evaluator: every sample under every routing configuration, greedy decoding, scoring and
// the request's sparsity report.
#include <algorithm>
#include <chrono>
#include <map>

#include "elastic/error.h"
#include "elastic/eval.h"
#include "elastic/model.h"
#include "elastic/report.h"
#include "elastic/sampling.h"
#include "elastic/tokenizer.h"

namespace elastic {

namespace {

// Position of the first newline that follows some non-blank text, or npos.
size_t answer_end(const std::string& text) {
  bool seen = false;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n' && seen) return i;
    if (text[i] != ' ' && text[i] != '\t' && text[i] != '\n' && text[i] != '\r') seen = true;
  }
  return std::string::npos;
}

std::vector<int64_t> encode_ids(const Tokenizer& tok, const std::string& text, bool add_special) {
  EncodeOptions eo;
  eo.add_special = add_special;
  const std::vector<int32_t> ids = tok.encode(text, eo);
  return {ids.begin(), ids.end()};
}

struct Accumulator {
  int64_t n = 0;
  double score = 0, msr = 0, esr = 0, esr_last = 0, prefill = 0;
};

}  // namespace

std::vector<EvalResult> eval_run(const Model& model, const Tokenizer& tokenizer,
                                 const std::vector<EvalSample>& samples,
                                 const std::vector<EvalConfig>& configs, const EvalOptions& options,
                                 const EvalProgress& progress,
                                 std::vector<EvalSampleResult>* per_sample) {
  using clock = std::chrono::steady_clock;
  const ModelConfig& c = model.config;
  const int64_t V = c.vocab_size;
  if (configs.empty()) throw Error("eval: no configurations to run");
  for (const EvalConfig& cfg : configs)
    if (!cfg.policy) throw Error("eval: configuration " + cfg.name + " has no routing policy");
  auto is_eos = [&](int64_t t) {
    return std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), t) != c.eos_token_ids.end();
  };

  // Groups (task, length) in order of first appearance; acc: [group][config].
  std::vector<std::pair<std::string, int64_t>> groups;
  std::map<std::pair<std::string, int64_t>, size_t> group_of;
  for (const EvalSample& s : samples)
    if (group_of.emplace(std::make_pair(s.task, s.length), groups.size()).second)
      groups.push_back({s.task, s.length});
  std::vector<std::vector<Accumulator>> acc(groups.size(),
                                            std::vector<Accumulator>(configs.size()));

  const int64_t total = static_cast<int64_t>(samples.size() * configs.size());
  int64_t done = 0;
  PrefillOptions po;
  po.logits = LogitsOutput::last;
  for (const EvalSample& s : samples) {
    const std::vector<int64_t> ids = encode_ids(tokenizer, s.prompt, options.add_special);
    if (ids.empty()) throw Error("eval: a prompt of task " + s.task + " encodes to no tokens");
    const int64_t n = static_cast<int64_t>(ids.size());
    const int64_t max_new =
        static_cast<int64_t>(encode_ids(tokenizer, eval_sample_completion(s), false).size()) +
        options.answer_margin;
    const size_t g = group_of.at({s.task, s.length});
    for (size_t ci = 0; ci < configs.size(); ++ci) {
      const EvalConfig& cfg = configs[ci];
      Request req = request_start(model, cfg.policy.get());
      req.attn = cfg.attn;
      const auto t0 = clock::now();
      const std::vector<float>* logits = &model_prefill(model, req, ids.data(), n, po);
      const double prefill_s = std::chrono::duration<double>(clock::now() - t0).count();
      const RequestReport rep = report_build(c.num_heads, c.num_kv_heads, c.head_dim, n, req.routes,
                                             req.prefill_stats, req.attn);
      // Greedy decoding: stop at EOS, at a token the tokenizer does not know, or at a newline
      // after some answer text; at most max_new tokens.
      std::vector<int32_t> out;
      std::string text;
      for (int64_t i = 0; i < max_new; ++i) {
        const int64_t tok = sample_greedy(logits->data(), V);
        if (is_eos(tok) || tok >= tokenizer.vocab_size()) break;
        out.push_back(static_cast<int32_t>(tok));
        text = tokenizer.decode(out, /*skip_special=*/true);
        if (answer_end(text) != std::string::npos || i + 1 == max_new) break;
        logits = &model_prefill(model, req, &tok, 1, po);
      }
      text = text.substr(0, answer_end(text));

      EvalSampleResult r;
      r.task = s.task;
      r.config = cfg.name;
      r.length = s.length;
      r.prompt_tokens = n;
      r.prediction = text;
      r.score = eval_score(s.score, text, s.answers);
      r.omega_msr = rep.omega_msr;
      r.omega_esr = rep.omega_esr_all;
      r.omega_esr_last = rep.omega_esr_last;
      r.prefill_s = prefill_s;
      for (const auto& row : rep.decisions) r.decisions.insert(r.decisions.end(), row.begin(), row.end());
      Accumulator& a = acc[g][ci];
      a.n += 1;
      a.score += r.score;
      a.msr += r.omega_msr;
      a.esr += r.omega_esr;
      a.esr_last += r.omega_esr_last;
      a.prefill += r.prefill_s;
      if (per_sample) per_sample->push_back(r);
      ++done;
      if (progress) progress(done, total, s.task + " " + std::to_string(s.length) + " " + cfg.name);
    }
  }

  std::vector<EvalResult> results;
  for (size_t g = 0; g < groups.size(); ++g)
    for (size_t ci = 0; ci < configs.size(); ++ci) {
      const Accumulator& a = acc[g][ci];
      const double inv = a.n > 0 ? 1.0 / static_cast<double>(a.n) : 0.0;
      EvalResult r;
      r.task = groups[g].first;
      r.length = groups[g].second;
      r.config = configs[ci].name;
      r.n = a.n;
      r.accuracy = a.score * inv;
      r.omega_msr = a.msr * inv;
      r.omega_esr = a.esr * inv;
      r.omega_esr_last = a.esr_last * inv;
      r.prefill_s = a.prefill * inv;
      results.push_back(r);
    }
  return results;
}

}  // namespace elastic
