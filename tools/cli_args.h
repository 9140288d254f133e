// Small helpers shared by the model commands (logits, generate, bench): option values with
// one-line errors that name the option, token-id lists, thread count.
#pragma once

#include <omp.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "elastic/error.h"
#include "elastic/sampling.h"

namespace elastic::cli {

// Value of option argv[i] (advances i); throws when it is missing.
inline std::string option_value(int argc, char** argv, int& i) {
  const std::string opt = argv[i];
  if (i + 1 >= argc) throw Error("option " + opt + " needs a value");
  return argv[++i];
}

inline int64_t parse_int(const std::string& opt, const std::string& text, int64_t min_value) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || v < min_value)
    throw Error("option " + opt + ": expected an integer >= " + std::to_string(min_value) +
                ", got '" + text + "'");
  return v;
}

inline float parse_float(const std::string& opt, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const float v = std::strtof(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno != 0)
    throw Error("option " + opt + ": expected a number, got '" + text + "'");
  return v;
}

// "1 2 3" or "1,2,3" -> ids.
inline std::vector<int64_t> parse_ids(const std::string& opt, const std::string& text) {
  std::vector<int64_t> ids;
  std::string cur;
  auto flush = [&] {
    if (!cur.empty()) ids.push_back(parse_int(opt, cur, 0));
    cur.clear();
  };
  for (char ch : text) {
    if (ch == ' ' || ch == ',' || ch == '\t' || ch == '\n') flush();
    else cur += ch;
  }
  flush();
  if (ids.empty()) throw Error("option " + opt + ": expected token ids such as \"1 2 3\", got none");
  return ids;
}

// Sampling options shared by generate and chat: --temp --top-k --top-p --min-p --seed. When
// argv[i] is one of them, consumes it and its value (advancing i) and returns true.
inline bool sampling_options_parse(SamplingParams& sp, int argc, char** argv, int& i) {
  const std::string a = argv[i];
  if (a == "--temp") sp.temperature = parse_float(a, option_value(argc, argv, i));
  else if (a == "--top-k") sp.top_k = parse_int(a, option_value(argc, argv, i), 0);
  else if (a == "--top-p") sp.top_p = parse_float(a, option_value(argc, argv, i));
  else if (a == "--min-p") sp.min_p = parse_float(a, option_value(argc, argv, i));
  else if (a == "--seed") sp.seed = static_cast<uint64_t>(parse_int(a, option_value(argc, argv, i), 0));
  else return false;
  return true;
}

// -t N: OpenMP threads for every op (0 = all cores).
inline void set_threads(int64_t threads) {
  if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
}

}  // namespace elastic::cli
