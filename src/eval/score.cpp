// RULER's scoring rules (string_match_part / string_match_all) and an exact-match rule.
#include <algorithm>

#include "elastic/eval.h"

namespace elastic {

std::string eval_normalize(std::string_view text) {
  std::string out;
  bool space = false;  // a whitespace run is pending
  for (char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c == 0x7f) {  // control characters (RULER: [\x00-\x1f]), space, DEL
      space = true;
      continue;
    }
    if (space && !out.empty()) out += ' ';
    space = false;
    out += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : ch;
  }
  return out;
}

namespace {

// Without trailing sentence punctuation (and the spaces before it).
std::string strip_final_punctuation(std::string s) {
  while (!s.empty() &&
         (std::string_view(".,:;!?").find(s.back()) != std::string_view::npos || s.back() == ' '))
    s.pop_back();
  return s;
}

}  // namespace

double eval_score(ScoreRule rule, std::string_view prediction,
                  const std::vector<std::string>& answers) {
  if (answers.empty()) return 0.0;
  const std::string pred = eval_normalize(prediction);
  int64_t hits = 0;
  for (const std::string& a : answers) {
    const std::string ref = eval_normalize(a);
    if (ref.empty()) continue;  // never matches (imports reject empty answers)
    const bool hit = rule == ScoreRule::exact
                         ? strip_final_punctuation(pred) == strip_final_punctuation(ref)
                         : pred.find(ref) != std::string::npos;
    hits += hit;
  }
  if (rule == ScoreRule::all_of)
    return static_cast<double>(hits) / static_cast<double>(answers.size());
  return hits > 0 ? 1.0 : 0.0;
}

}  // namespace elastic
