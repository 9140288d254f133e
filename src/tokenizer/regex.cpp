// PCRE2 wrapper: per-thread match data and JIT stack, so a const Regex is shareable.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/regex.h"

#include <pcre2.h>

#include <cstdint>

#include "elastic/error.h"

namespace elastic::tokenizer_detail {
namespace {

// PCRE2's default match limit (10 million steps) applies per start position, so a pattern that
// backtracks catastrophically, such as (a+)+$, takes minutes on a few KB of text made of runs
// just short of that limit. A legitimate match costs steps in proportion to its length (one
// 200,000-letter word is one \p{L}+ match), so the limit is a floor plus kStepsPerByte times the
// bytes left to match: an exponential blow-up stops at the first start position; what remains
// possible is at worst quadratic, slow on huge texts but not a hang.
constexpr uint32_t kMatchLimitFloor = 100000;
constexpr uint64_t kStepsPerByte = 32;
constexpr uint32_t kDepthLimit = 10000;

uint32_t match_limit(size_t bytes_left) {
  const uint64_t v = kMatchLimitFloor + kStepsPerByte * uint64_t(bytes_left);
  return v > 0xffffffffu ? 0xffffffffu : uint32_t(v);
}

// Per-thread scratch: match data sized for the largest ovector we need (whole match only),
// and a JIT stack larger than the 32 KiB default so long runs of whitespace cannot exhaust it.
struct ThreadScratch {
  pcre2_match_data* match = nullptr;
  pcre2_jit_stack* stack = nullptr;
  pcre2_match_context* context = nullptr;
  ThreadScratch() {
    match = pcre2_match_data_create(1, nullptr);
    stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
    context = pcre2_match_context_create(nullptr);
    ELASTIC_CHECK(match && stack && context);
    pcre2_jit_stack_assign(context, nullptr, stack);
    pcre2_set_depth_limit(context, kDepthLimit);
  }
  ~ThreadScratch() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
    pcre2_match_data_free(match);
  }
};

ThreadScratch& scratch() {
  thread_local ThreadScratch s;
  return s;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  int n = pcre2_get_error_message(code, buf, sizeof buf);
  return n < 0 ? "PCRE2 error " + std::to_string(code) : std::string(reinterpret_cast<char*>(buf));
}

}  // namespace

Regex::Regex(std::string_view pattern, const std::string& where)
    : where_(where),
      pattern_(pattern.size() <= 80 ? std::string(pattern)
                                    : std::string(pattern.substr(0, 77)) + "...") {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                        PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
  if (!code_) {
    throw Error(where + ": invalid regex at offset " + std::to_string(err_offset) + ": " +
                pcre2_message(err));
  }
  jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() { pcre2_code_free(code_); }

void Regex::find_all(std::string_view text, size_t base,
                     std::vector<std::pair<size_t, size_t>>& out) const {
  ThreadScratch& s = scratch();
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    pcre2_set_match_limit(s.context, match_limit(text.size() - pos));
    int rc = jit_ ? pcre2_jit_match(code_, subject, text.size(), pos, 0, s.match, s.context)
                  : pcre2_match(code_, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, s.match,
                                s.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
        rc == PCRE2_ERROR_HEAPLIMIT || rc == PCRE2_ERROR_JIT_STACKLIMIT)
      throw Error(
          where_ + " = '" + pattern_ + "': " + pcre2_message(rc) + " at byte " +
          std::to_string(pos) + " of a " + std::to_string(text.size()) +
          "-byte text (the pattern backtracks catastrophically; fix the tokenizer's regex)");
    if (rc < 0) throw Error(where_ + ": regex match failed: " + pcre2_message(rc));
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.match);
    size_t b = ov[0], e = ov[1];
    if (e > b) {
      out.emplace_back(base + b, base + e);
      pos = e;
    } else {
      // Empty match: step over one UTF-8 character.
      pos = b + 1;
      while (pos < text.size() && (static_cast<uint8_t>(text[pos]) & 0xC0) == 0x80) ++pos;
    }
  }
}

}  // namespace elastic::tokenizer_detail
