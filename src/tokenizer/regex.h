// A compiled PCRE2 pattern (UTF + UCP, JIT when available) for pre-tokenizer splits.
// Subjects must be valid UTF-8 (the tokenizer repairs its input first), so matching skips
// PCRE2's UTF check.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

struct pcre2_real_code_8;

namespace elastic::tokenizer_detail {

class Regex {
 public:
  // Throws elastic::Error naming `where` and the PCRE2 message when the pattern is invalid.
  Regex(std::string_view pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the [begin, end) byte spans of all non-empty, non-overlapping matches in `text`,
  // left to right, offset by `base`. Throws elastic::Error naming `where` and the pattern when
  // a match exceeds PCRE2's match, depth or JIT stack limit (catastrophic backtracking).
  void find_all(std::string_view text, size_t base,
                std::vector<std::pair<size_t, size_t>>& out) const;

 private:
  pcre2_real_code_8* code_ = nullptr;
  bool jit_ = false;
  std::string where_;
  std::string pattern_;  // for errors; shortened when long
};

}  // namespace elastic::tokenizer_detail
