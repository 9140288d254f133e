// libFuzzer target: arbitrary bytes as the body of a request to `elastic serve`. Byte 0 picks
// the endpoint (even: /v1/completions, odd: /v1/chat/completions), the rest is the body.
// api_request_parse must either reject it with ApiError (status 400, a message) or return a
// request whose invariants hold (prompt xor messages, limits in range); any other exception, a
// sanitizer report or a broken invariant is a finding.
#include <cmath>
#include <cstdint>
#include <string_view>

#include "elastic/server.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool chat = data[0] & 1;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  elastic::ApiRequest r;
  try {
    r = elastic::api_request_parse(body, chat);
  } catch (const elastic::ApiError& e) {
    if (e.status != 400 || std::string_view(e.what()).empty()) __builtin_trap();
    return 0;  // clean rejection
  }
  if (r.chat != chat) __builtin_trap();
  if (chat && (r.messages.empty() || r.prompt_text || !r.prompt_ids.empty())) __builtin_trap();
  if (!chat && !r.messages.empty()) __builtin_trap();
  if (!chat && !r.prompt_text == r.prompt_ids.empty()) __builtin_trap();  // exactly one form
  if (!chat && r.prompt_text && r.prompt_text->empty()) __builtin_trap();
  for (int64_t id : r.prompt_ids)
    if (id < 0) __builtin_trap();
  if (r.max_tokens && *r.max_tokens < 1) __builtin_trap();
  if (!(r.temperature >= 0 && r.temperature <= 2)) __builtin_trap();
  if (!(r.top_p > 0 && r.top_p <= 1)) __builtin_trap();
  if (r.stop.size() > 4) __builtin_trap();
  for (const auto& s : r.stop)
    if (s.empty()) __builtin_trap();
  if (r.include_usage && !r.stream) __builtin_trap();
  if (r.sparsity_bias && !std::isfinite(*r.sparsity_bias)) __builtin_trap();
  if (!r.static_assignment.empty() && r.static_assignment != "all-fa" && r.static_assignment != "all-sa")
    __builtin_trap();
  for (const auto& m : r.messages)
    if (m.role != "system" && m.role != "user" && m.role != "assistant") __builtin_trap();
  return 0;
}
