// Internals of the evaluation suite shared by its sources: a portable PRNG, the task templates,
// and word splitting.
//
// EvalRng: std::mt19937_64, whose output sequence the C++ standard fixes, with every derived
// draw done here in integer arithmetic (std:: distributions differ between standard
// libraries), so generated samples are the same on every platform.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "elastic/error.h"

namespace elastic::eval_detail {

// splitmix64 finaliser: a bijective 64-bit mix (seed derivation).
inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// FNV-1a of a string (task names into seeds).
inline uint64_t hash64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Seed of a sub-stream: a, b, c folded through mix64.
inline uint64_t seed_of(uint64_t a, uint64_t b, uint64_t c = 0) {
  return mix64(mix64(mix64(a) ^ b) ^ c);
}

class EvalRng {
 public:
  explicit EvalRng(uint64_t seed) : gen_(seed) {}
  // Uniform in [0, n), n >= 1: rejection of the top partial range of 2^64 (no modulo bias).
  uint64_t below(uint64_t n) {
    ELASTIC_CHECK(n >= 1);
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;  // draws >= limit are rejected
    for (;;) {
      const uint64_t x = gen_();
      if (x < limit) return x % n;
    }
  }
  // Uniform in [lo, hi], lo <= hi.
  int64_t range(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(below(static_cast<uint64_t>(hi - lo) + 1));
  }
  template <class T>
  const T& pick(const std::vector<T>& v) {
    return v[below(v.size())];
  }
  // Fisher-Yates from the back, as in the usual textbook form.
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }
  // k distinct elements of v in random order (k <= v.size()).
  template <class T>
  std::vector<T> sample(const std::vector<T>& v, size_t k) {
    ELASTIC_CHECK(k <= v.size());
    std::vector<T> all = v;
    for (size_t i = 0; i < k; ++i) std::swap(all[i], all[i + below(all.size() - i)]);
    all.resize(k);
    return all;
  }

 private:
  std::mt19937_64 gen_;
};

// Task texts. "{key}", "{value}", "{keys}" and "{n}" are placeholders (template_fill); the
// words of these texts and of the noise sentences are the template words (eval_vocab_words).
struct TaskTemplates {
  const char* instruction;
  const char* statement;  // a needle / statement line, or ""
  const char* question;
};

// The templates of task `name` (a name of eval_tasks()).
const TaskTemplates& task_templates(const std::string& name);
// Every template text of every task.
std::vector<std::string> task_template_texts();

// Replaces "{name}" by its value for each (name, value) pair.
std::string template_fill(std::string text,
                          const std::vector<std::pair<std::string, std::string>>& values);

// Maximal runs of ASCII letters and digits of a text, in order (placeholders included as their
// names when present, so callers strip them first).
std::vector<std::string> text_words(std::string_view text);

}  // namespace elastic::eval_detail
