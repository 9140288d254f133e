// What the text-generation commands (generate, chat) share beyond their options: the context
// limit of a request (-c/--ctx-size, checked before any prefill so that an over-long prompt
// fails at once, naming the numbers, instead of running past the model's positions with memory
// growing with the prompt), the prefill progress on stderr, and the timing summary.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cli_options.h"
#include "elastic/config.h"
#include "elastic/sampling.h"
#include "elastic/tokenizer.h"

namespace elastic::cli {

struct ContextOptions {
  int64_t ctx_size = 0;   // -c: positions a request may use; 0 = max_position_embeddings
  bool truncate = false;  // --truncate: drop the start of a prompt that does not fit
};

// -c/--ctx-size N, and with `truncate` the --truncate flag (generate: one prompt to cut).
void context_options_add(CommandLine& cl, ContextOptions& o, bool truncate);

// Positions one request may use: -c, which may not exceed the model's max_position_embeddings
// (RoPE was not trained beyond it); the model's limit without -c; 0 (no limit) when neither
// says. Throws naming both numbers when -c is too large.
int64_t context_size(const ContextOptions& o, const ModelConfig& c);

// Throws unless `held` positions already in the request, `prompt` new prompt tokens and
// `new_tokens` tokens to generate fit in `ctx` positions (0 = no limit). `what` names the
// prompt ("the prompt", "the conversation"); `hint` ends the message with what the user can do.
void context_check(int64_t ctx, int64_t held, int64_t prompt, int64_t new_tokens,
                   const std::string& what, const std::string& hint);

// Positions left for the prompt when `new_tokens` are to be generated (0: no limit); throws,
// naming both numbers, when none are.
int64_t context_room(int64_t ctx, int64_t new_tokens);

// Before a long text is tokenized in full (seconds per MB): when its first part alone, cut at a
// space or newline, encodes to more than `room` tokens plus a margin for the cut, the whole text
// cannot fit, and this throws as context_check does, naming the part's size and token count.
// The part is kTextProbeBytesPerToken bytes per token of room (no token is that long).
constexpr size_t kTextProbeBytesPerToken = 64;
void context_check_text(const Tokenizer& tok, std::string_view text, const EncodeOptions& enc,
                        int64_t room, const std::string& what, const std::string& hint);

// Prompt texts from this size on get a note on stderr before their encoding (~10 s per MB).
constexpr size_t kLongTextBytes = size_t{1} << 20;

// --truncate: keeps the last ctx - new_tokens ids of `prompt` (a note on stderr says how many
// were dropped); throws when not even one prompt token fits.
void context_truncate(std::vector<int64_t>& prompt, int64_t ctx, int64_t new_tokens);

// A callback for GenerateOptions::on_prefill_layer that shows a progress bar (a terminal) or a
// line per tenth of the layers (a log) on stderr, for a prompt of at least kLongPromptTokens
// tokens; empty (no output) for a shorter one.
constexpr int64_t kLongPromptTokens = 256;
std::function<void(int64_t, int64_t)> prefill_progress(int64_t prompt_tokens);

// Prefill and decode speed of a generation, per token and per second.
struct GenerationSpeed {
  double prefill_tokens_per_s = 0, prefill_ms_per_token = 0;
  double decode_tokens_per_s = 0, decode_ms_per_token = 0;
};
// The first generated token belongs to the prefill (GenerateStats), so decode speed counts the
// generated tokens after it.
GenerationSpeed generation_speed(const GenerateStats& st);

}  // namespace elastic::cli
