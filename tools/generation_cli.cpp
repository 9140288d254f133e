// Context limit, prefill progress and speed of the text-generation commands (generation_cli.h).
#include "generation_cli.h"

#include <cstdio>
#include <memory>

#include "elastic/error.h"
#include "progress.h"

namespace elastic::cli {

void context_options_add(CommandLine& cl, ContextOptions& o, bool truncate) {
  cl.integer("-c,--ctx-size", o.ctx_size, "N",
             "positions a request may use: prompt + new tokens (default and\n"
             "maximum: the model's max_position_embeddings)",
             {1});
  if (truncate)
    cl.flag("--truncate", o.truncate,
            "drop the start of a prompt that does not fit in the context\n"
            "with -n new tokens (default: an error)");
}

int64_t context_size(const ContextOptions& o, const ModelConfig& c) {
  const int64_t model_max = c.max_position_embeddings;
  if (o.ctx_size > 0 && model_max > 0 && o.ctx_size > model_max)
    throw Error("option --ctx-size: " + std::to_string(o.ctx_size) +
                " positions exceed the model's max_position_embeddings (" +
                std::to_string(model_max) + ")");
  return o.ctx_size > 0 ? o.ctx_size : model_max;
}

namespace {

std::string context_source(int64_t ctx) {
  return std::to_string(ctx) +
         " positions (-c/--ctx-size, at most the model's "
         "max_position_embeddings)";
}

}  // namespace

void context_check(int64_t ctx, int64_t held, int64_t prompt, int64_t new_tokens,
                   const std::string& what, const std::string& hint) {
  if (ctx <= 0 || held + prompt + new_tokens <= ctx) return;
  throw Error(what + " (" + std::to_string(held + prompt) + " tokens) with " +
              std::to_string(new_tokens) + (new_tokens == 1 ? " new token" : " new tokens") +
              " needs " + std::to_string(held + prompt + new_tokens) +
              " positions, but the context holds " + context_source(ctx) + "; " + hint);
}

void context_check_text(const Tokenizer& tok, std::string_view text, const EncodeOptions& enc,
                        int64_t room, const std::string& what, const std::string& hint) {
  // A cut changes the pre-tokenization only around it: a few tokens at most; 64 to spare.
  constexpr int64_t kCutMargin = 64;
  if (room <= 0) return;
  const size_t probe = static_cast<size_t>(room + kCutMargin) * kTextProbeBytesPerToken;
  if (text.size() <= 2 * probe) return;  // short enough to encode whole
  size_t cut = text.find_first_of(" \n", probe);
  if (cut == std::string_view::npos) cut = probe;  // no space: a byte cut (repaired as U+FFFD)
  const int64_t tokens = static_cast<int64_t>(tok.encode(text.substr(0, cut), enc).size());
  if (tokens <= room + kCutMargin) return;
  throw Error(what + " (" + std::to_string(text.size()) + " bytes; its first " +
              std::to_string(cut) + " bytes alone are " + std::to_string(tokens) +
              " tokens) does not fit in the context of " + std::to_string(room) +
              " positions left (-c/--ctx-size, at most the model's max_position_embeddings); " +
              hint);
}

int64_t context_room(int64_t ctx, int64_t new_tokens) {
  if (ctx <= 0) return 0;
  if (new_tokens >= ctx)
    throw Error("-n " + std::to_string(new_tokens) +
                " new tokens leave no room for a prompt in the context of " + context_source(ctx));
  return ctx - new_tokens;
}

void context_truncate(std::vector<int64_t>& prompt, int64_t ctx, int64_t new_tokens) {
  const int64_t n = static_cast<int64_t>(prompt.size());
  if (ctx <= 0 || n + new_tokens <= ctx) return;
  const int64_t keep = context_room(ctx, new_tokens);
  prompt.erase(prompt.begin(), prompt.end() - keep);
  std::fprintf(stderr,
               "generate: --truncate: dropped the first %lld of %lld prompt tokens (context %lld "
               "positions, -n %lld)\n",
               (long long)(n - keep), (long long)n, (long long)ctx, (long long)new_tokens);
}

std::function<void(int64_t, int64_t)> prefill_progress(int64_t prompt_tokens) {
  if (prompt_tokens < kLongPromptTokens) return {};
  auto bar = std::make_shared<ProgressBar>("prefill " + std::to_string(prompt_tokens) + " tokens");
  return [bar](int64_t done, int64_t layers) {
    bar->update(done, layers, "layer " + std::to_string(done) + "/" + std::to_string(layers));
  };
}

GenerationSpeed generation_speed(const GenerateStats& st) {
  GenerationSpeed s;
  if (st.prefill_seconds > 0 && st.prompt_tokens > 0) {
    s.prefill_tokens_per_s = static_cast<double>(st.prompt_tokens) / st.prefill_seconds;
    s.prefill_ms_per_token = 1e3 * st.prefill_seconds / static_cast<double>(st.prompt_tokens);
  }
  const int64_t decoded = st.generated_tokens - 1;
  if (st.decode_seconds > 0 && decoded > 0) {
    s.decode_tokens_per_s = static_cast<double>(decoded) / st.decode_seconds;
    s.decode_ms_per_token = 1e3 * st.decode_seconds / static_cast<double>(decoded);
  }
  return s;
}

}  // namespace elastic::cli
