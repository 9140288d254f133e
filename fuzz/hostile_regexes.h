// Pre-tokenizer patterns that backtrack catastrophically (exponential or high-degree polynomial
// time on a long non-matching text), for the tokenizer fuzzer's hostile tokenizer and the seed
// replay test: a tokenizer.json naming them must fail with a clear error, never hang.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace elastic::fuzz {

inline const char* const kHostileRegexes[] = {
    "(a+)+$",          // nested quantifiers: 2^n ways to split a run of 'a'
    "(\\w+\\s?)*$",    // the classic word-list pattern
    "(x|xx)+y",        // alternatives that overlap
    "(\\p{L}|\\w)+!",  // classes that overlap
    "(.*a){12}",       // polynomial of degree 12
};

// A tokenizer.json: the TinyStories one (SHARED/data/tinystories-656k) with a Sequence of Split
// pre-tokenizers on the hostile patterns, in order.
inline std::string hostile_tokenizer_json(const std::string& stories_tokenizer_json) {
  nlohmann::json j = nlohmann::json::parse(stories_tokenizer_json);
  nlohmann::json list = nlohmann::json::array();
  for (const char* p : kHostileRegexes)
    list.push_back({{"type", "Split"},
                    {"pattern", {{"Regex", p}}},
                    {"behavior", "Isolated"},
                    {"invert", false}});
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", list}};
  return j.dump();
}

}  // namespace elastic::fuzz
