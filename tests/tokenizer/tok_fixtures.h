// Shared helpers for the tokenizer tests: fixture lines and llama.cpp vectors.
#pragma once

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "elastic/fileio.h"

namespace tok_test {

inline std::string shared(const std::string& rel) {
  return std::string(ELASTIC_SHARED_DIR) + "/" + rel;
}

struct Line {
  std::string text, decoded;
  std::vector<int32_t> ids, ids_with_special;
};

inline std::vector<Line> read_fixture(const std::string& name) {
  std::string text = elastic::read_file(shared("fixtures/tokenizer/" + name));
  std::vector<Line> out;
  std::istringstream in(text);
  for (std::string s; std::getline(in, s);) {
    if (s.empty()) continue;
    auto j = nlohmann::json::parse(s);
    Line l;
    l.text = j["text"].get<std::string>();
    l.decoded = j["decoded"].get<std::string>();
    l.ids = j["ids"].get<std::vector<int32_t>>();
    if (j.contains("ids_with_special"))
      l.ids_with_special = j["ids_with_special"].get<std::vector<int32_t>>();
    out.push_back(std::move(l));
  }
  return out;
}

struct Vector {
  std::string text;
  std::vector<int32_t> ids;
};

// llama.cpp's ggml-vocab-*.gguf.inp holds the inputs, each followed by
// "\n__ggml_vocab_test__\n"; .out has one line of space-separated ids per input.
inline std::vector<Vector> read_llama_cpp_vectors(const std::string& base) {
  std::string inp = elastic::read_file(base + ".inp");
  std::string out = elastic::read_file(base + ".out");
  const std::string marker = "\n__ggml_vocab_test__\n";
  std::vector<Vector> v;
  for (size_t pos = 0; pos < inp.size();) {
    size_t at = inp.find(marker, pos);
    if (at == std::string::npos) break;
    v.push_back(Vector{inp.substr(pos, at - pos), {}});
    pos = at + marker.size();
  }
  std::istringstream lines(out);
  size_t k = 0;
  for (std::string s; std::getline(lines, s) && k < v.size(); ++k) {
    std::istringstream ids(s);
    for (int32_t id; ids >> id;) v[k].ids.push_back(id);
  }
  return v;
}

}  // namespace tok_test
